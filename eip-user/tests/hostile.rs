//! Hostile input from the outside, on real interfaces: what the outside cannot genuinely send
//! is refused and counted by reason, and never reaches a VM.

mod common;

use std::net::Ipv4Addr;

use common::{Lab, counter, eip};
use eip_user::testing::{
    netns::NetNs,
    process::Capture,
    topology::{VM_IF, WAN_IF},
};

/// Echo requests from `from` to `to`, sent by the outside (which holds `from` as an address
/// of its own for this): whether any came back.
fn ping_from(outside: &NetNs, from: Ipv4Addr, to: Ipv4Addr) -> bool {
    outside
        .command("ping")
        .args(["-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-I"])
        .arg(from.to_string())
        .arg(to.to_string())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Echo requests from `src` seen in a capture.
fn requests_from(capture: &str, src: Ipv4Addr) -> usize {
    capture
        .lines()
        .filter(|l| l.contains(&format!("{src} >")) && l.contains("ICMP echo request"))
        .count()
}

/// Sources no host outside has: the VMs' own subnet and an address of the pool. Dropped and
/// counted in the dataplane, never delivered; an ordinary source passes; and
/// --no-source-filter lets them through for the setups that need it.
#[test]
fn sources_the_outside_cannot_have_are_dropped_and_counted() {
    let mut lab = Lab::new(1);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let (private, pool) = (Ipv4Addr::new(192, 168, 6, 200), eip(11));
    for a in [private, pool] {
        lab.topo
            .outside
            .ip(&["addr", "add", &format!("{a}/32"), "dev", WAN_IF])
            .unwrap();
    }
    let cap = Capture::start(lab.vm(1), VM_IF).unwrap();
    let before = (
        counter(&lab, "drop_src_bridge_subnet"),
        counter(&lab, "drop_src_pool"),
    );
    assert!(!ping_from(&lab.topo.outside, private, eip(10)));
    assert!(!ping_from(&lab.topo.outside, pool, eip(10)));
    let after = (
        counter(&lab, "drop_src_bridge_subnet"),
        counter(&lab, "drop_src_pool"),
    );
    assert_eq!(after, (before.0 + 2, before.1 + 2), "{}", lab.log());
    assert!(
        ping_from(&lab.topo.outside, common::OUTSIDE, eip(10)),
        "an ordinary source"
    );
    let seen = cap.finish().unwrap();
    assert_eq!(
        requests_from(&seen, private) + requests_from(&seen, pool),
        0,
        "{seen}"
    );
    assert_eq!(requests_from(&seen, common::OUTSIDE), 2, "{seen}");

    lab.stop();
    lab.extra = vec!["--no-source-filter"];
    lab.start();
    let cap = Capture::start(lab.vm(1), VM_IF).unwrap();
    let _ = ping_from(&lab.topo.outside, private, eip(10));
    let seen = cap.finish().unwrap();
    assert_eq!(requests_from(&seen, private), 2, "--no-source-filter: {seen}");
}
