use super::*;
use crate::{
    kernel::plan::{Effect, effects},
    model::rate::{LimitChange, RateLimit},
    testing::control::{ip, limits, mac, name},
};

/// A pool 203.0.113.0/29 and nothing else.
fn pool_only() -> State {
    let mut s = State::default();
    let c = pool_add(&s, &limits(), "203.0.113.0/29".parse().unwrap(), &[]).unwrap();
    s.apply(&c.writes);
    s
}

/// A pool 203.0.113.0/29 and reservations vm1..vm3 (192.168.6.11..13).
fn world() -> State {
    let mut s = pool_only();
    let l = limits();
    for n in 1..=3u8 {
        let c = host_add(
            &s,
            &l,
            mac(n),
            Ipv4Addr::new(192, 168, 6, 10 + n),
            Some(format!("vm{n}")),
        )
        .unwrap();
        s.apply(&c.writes);
    }
    s
}

/// Applies a change and returns the effects it needs.
fn step(s: &mut State, f: impl FnOnce(&State) -> Result<Change, Refusal>) -> Vec<Effect> {
    let c = f(s).unwrap();
    let before = s.clone();
    s.apply(&c.writes);
    effects(&before, s, &c.writes)
}

#[test]
fn targets_parse_as_ip_then_mac_then_name() {
    assert_eq!(
        "192.168.6.11".parse::<Target>().unwrap(),
        Target::Ip(ip("192.168.6.11"))
    );
    assert_eq!(
        "52:54:00:00:00:01".parse::<Target>().unwrap(),
        Target::Mac(mac(1))
    );
    assert_eq!("web-1.lab".parse::<Target>().unwrap(), name("web-1.lab"));
    for bad in ["", "-x", "a b", "x_y", "a..b", "ü"] {
        assert_eq!(
            bad.parse::<Target>(),
            Err(Refusal::BadTarget(bad.into())),
            "{bad:?}"
        );
    }
}

mod eips;
mod limits;
mod reservations;
