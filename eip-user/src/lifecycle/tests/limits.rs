//! An EIP's bandwidth limit: set with bind or on its own, planned before the binding takes traffic.

use super::*;

fn rate_limit(bps: u64) -> RateLimit {
    RateLimit {
        rate_bps: bps,
        burst_bytes: None,
    }
}

#[test]
fn a_limit_belongs_to_the_eip() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    let slot = s.eips[&e].slot;
    let set = |inbound, outbound| Effect::SetLimit {
        slot,
        inbound,
        outbound,
    };
    // The binding marked limited (SLOT_LIMITED) or not, in place.
    let marked = |limited: bool, private: &str| Effect::Bind {
        eip: e,
        slot: slot
            | if limited {
                eip_common::maps::SLOT_LIMITED
            } else {
                0
            },
        private: ip(private),
        previous: None,
    };
    let twenty = rate_limit(20_000_000);
    let fx = step(&mut s, |s| {
        limit(s, &l, e, LimitChange::Set(twenty), LimitChange::Set(twenty))
    });
    // The limit first, then the mark.
    assert_eq!(
        fx,
        [set(Some(twenty), Some(twenty)), marked(true, "192.168.6.11")]
    );
    // One way on its own: the mark stays; the same limit again changes nothing.
    let five = rate_limit(5_000_000);
    let fx = step(&mut s, |s| {
        limit(s, &l, e, LimitChange::Keep, LimitChange::Set(five))
    });
    assert_eq!(fx, [set(Some(twenty), Some(five))]);
    let again = limit(&s, &l, e, LimitChange::Keep, LimitChange::Set(five)).unwrap();
    assert!(again.writes.is_empty(), "{}", again.message);
    // A move and an unbind keep it, and touch no limit; the moved binding is marked.
    let fx = step(&mut s, |s| bind(s, &l, e, &name("vm2"), false));
    assert!(!fx.iter().any(|f| matches!(f, Effect::SetLimit { .. })), "{fx:?}");
    assert!(
        fx.iter().any(
            |f| matches!(f, Effect::Bind { slot: s, .. } if *s == slot | eip_common::maps::SLOT_LIMITED)
        ),
        "{fx:?}"
    );
    step(&mut s, |s| unbind(s, e));
    assert_eq!(
        (s.eips[&e].limit_in, s.eips[&e].limit_out),
        (Some(twenty), Some(five))
    );
    // Removed both ways while unbound: only the slot's limit; bound again, unmarked.
    let fx = step(&mut s, |s| {
        limit(s, &l, e, LimitChange::Remove, LimitChange::Remove)
    });
    assert_eq!(fx, [set(None, None)]);
    let fx = step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    assert!(fx.contains(&marked(false, "192.168.6.11")), "{fx:?}");
}

#[test]
fn a_limit_on_a_free_pool_address_allocates_it_and_outside_the_pools_is_refused() {
    let mut s = world();
    let l = limits();
    let ten = LimitChange::Set(rate_limit(10_000_000));
    let c = limit(&s, &l, ip("203.0.113.4"), ten, ten).unwrap();
    assert!(
        c.message.starts_with("allocated 203.0.113.4; limited"),
        "{}",
        c.message
    );
    s.apply(&c.writes);
    assert_eq!(s.eips[&ip("203.0.113.4")].limit_in, Some(rate_limit(10_000_000)));
    assert_eq!(
        limit(&s, &l, ip("198.51.100.1"), ten, ten),
        Err(Refusal::NotInPool(ip("198.51.100.1")))
    );
}

#[test]
fn bind_with_a_limit_binds_and_limits_in_one_change() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    let twenty = rate_limit(20_000_000);
    let c = bind_limited(&s, &l, e, &name("vm1"), false, twenty).unwrap();
    assert_eq!(c.writes.len(), 1, "{:?}", c.writes);
    assert!(c.message.contains("limited to 20mbit"), "{}", c.message);
    let before = s.clone();
    s.apply(&c.writes);
    let fx = effects(&before, &s, &c.writes);
    // The limit is in place before the binding takes traffic.
    let set = fx
        .iter()
        .position(|f| matches!(f, Effect::SetLimit { inbound: Some(_), .. }));
    let bind_at = fx.iter().position(|f| matches!(f, Effect::Bind { .. }));
    assert!(set.unwrap() < bind_at.unwrap(), "{fx:?}");
    // Already bound there: only the limit is written.
    let c = bind_limited(&s, &l, e, &name("vm1"), false, rate_limit(1_000_000)).unwrap();
    assert_eq!(c.writes.len(), 1);
    s.apply(&c.writes);
    assert_eq!(s.eips[&e].limit_out, Some(rate_limit(1_000_000)));
}
