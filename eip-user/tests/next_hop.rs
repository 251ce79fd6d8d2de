//! Egress keeps each binding's next hop for a second instead of asking the FIB for every
//! packet. A changed route, a new gateway MAC and a neighbour gone each take effect within
//! that second: traffic follows, on real interfaces.

mod common;

use std::{net::Ipv4Addr, thread, time::Duration};

use common::{Lab, counter, echo_requests_from, eip, far_host, pings};
use eip_user::testing::{
    process::Capture,
    topology::{EXT_IF, WAN_IF},
};

const FAR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// A second router on the external subnet: a macvlan of the outside's end, with a MAC of its
/// own.
const ROUTER2: &str = "198.51.100.7";
const ROUTER2_IF: &str = "wan1";

/// Longer than a next hop lives.
fn past_a_next_hops_life() {
    thread::sleep(Duration::from_millis(1_300));
}

/// Echo requests from the EIP to the far host that reach `ROUTER2_IF` while the VM pings it
/// three times (all answered).
fn via_router2(lab: &Lab) -> usize {
    let cap = Capture::start(&lab.topo.outside, ROUTER2_IF).unwrap();
    assert!(pings(lab.vm(1), FAR, 3), "{}", lab.log());
    let seen = cap.finish().unwrap();
    echo_requests_from(&seen, eip(10))
}

#[test]
fn the_way_out_follows_a_changed_route_a_new_gateway_mac_and_a_neighbour_gone() {
    let lab = Lab::new(1);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let (hv, out) = (&lab.topo.hv, &lab.topo.outside);
    let _far = far_host(&lab);
    out.ip(&[
        "link", "add", ROUTER2_IF, "link", WAN_IF, "type", "macvlan", "mode", "bridge",
    ])
    .unwrap();
    out.ip(&["addr", "add", &format!("{ROUTER2}/24"), "dev", ROUTER2_IF])
        .unwrap();
    out.ip(&["link", "set", ROUTER2_IF, "up"]).unwrap();
    let mac = |ns: &eip_user::testing::netns::NetNs, dev| eip_user::model::fmt_mac(ns.mac(dev).unwrap());
    // The outside answers ARP for all its addresses from either interface: the hypervisor
    // is told the second router's MAC, as a router's own ARP reply would tell it.
    let neigh = |addr: &str| {
        hv.ip(&[
            "neigh",
            "replace",
            ROUTER2,
            "lladdr",
            addr,
            "dev",
            EXT_IF,
            "nud",
            "permanent",
        ])
        .unwrap();
    };
    neigh(&mac(out, ROUTER2_IF));

    // The first packet also resolves the first router's MAC (the kernel's forwarding).
    assert!(pings(lab.vm(1), FAR, 1), "{}", lab.log());
    let fast = counter(&lab, "egress_fast_path");
    assert!(pings(lab.vm(1), FAR, 3), "{}", lab.log());
    assert!(counter(&lab, "egress_fast_path") >= fast + 3);
    assert_eq!(via_router2(&lab), 0, "still through the first router");

    // The route changes: through the second router.
    hv.ip(&["route", "replace", "198.18.0.0/24", "via", ROUTER2])
        .unwrap();
    past_a_next_hops_life();
    assert_eq!(via_router2(&lab), 3, "the changed route");

    // The second router's MAC changes, and the hypervisor's neighbour entry with it.
    out.ip(&["link", "set", ROUTER2_IF, "address", "02:00:00:00:07:07"])
        .unwrap();
    neigh("02:00:00:00:07:07");
    past_a_next_hops_life();
    assert_eq!(via_router2(&lab), 3, "the new MAC");

    // The neighbour goes: the FIB has no MAC for it, so the kernel forwards (and resolves it
    // again by ARP) until it has.
    hv.ip(&["neigh", "del", ROUTER2, "dev", EXT_IF]).unwrap();
    past_a_next_hops_life();
    let fallback = counter(&lab, "egress_fallback");
    assert!(pings(lab.vm(1), FAR, 3), "{}", lab.log());
    assert!(
        counter(&lab, "egress_fallback") > fallback,
        "a next hop whose neighbour is gone was used: {}",
        lab.log()
    );
}
