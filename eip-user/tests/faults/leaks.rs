//! The leak guard, and a veth as the external interface with the sender's default offloads.

use super::*;

fn guard_dropped(lab: &Lab) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&lab.ok(&["stats", "--json"])).unwrap();
    stats["guard_dropped"]
        .as_u64()
        .expect("a leak guard is installed")
}

/// What nothing translated never leaves: a VM without an EIP, and a bound VM while its
/// egress program is gone (its link unpinned while no daemon held it). The guard counts what
/// it kept in; the next daemon attaches egress again.
#[test]
fn untranslated_packets_never_leave_with_a_private_source() {
    let mut lab = bound_lab(2);
    let leaks = LeakWatch::start(&lab);
    let before = guard_dropped(&lab);
    assert!(!pings(lab.vm(2), OUTSIDE_ADDR, 3), "vm2 has no EIP");
    assert!(
        guard_dropped(&lab) >= before + 3,
        "the guard did not count vm2's pings"
    );

    lab.stop();
    std::fs::remove_file(lab.inst.pins().join("links/tc")).unwrap();
    let (k, out) = (guard_dropped_offline(&lab), lab.vm(1));
    assert!(!pings(out, OUTSIDE_ADDR, 3), "vm1 got out with no egress program");
    assert!(guard_dropped_offline(&lab) >= k + 3);
    lab.start();
    assert!(
        pings(lab.vm(1), OUTSIDE_ADDR, 3),
        "egress is attached again: {}",
        lab.log()
    );
    leaks.assert_none();
}

/// The guard's counter read with nft, for when no daemon runs.
fn guard_dropped_offline(lab: &Lab) -> u64 {
    let _inside = lab.topo.hv.enter().unwrap();
    eip_user::kernel::guard::dropped(&lab.inst.name).expect("the guard's counter")
}

/// A veth as the external interface with the sender beyond it at its defaults (checksum
/// offload on): its TCP and UDP arrive with partial checksums. Ingress runs as TC there (the
/// default, --ingress auto), completes them, and the VM takes every segment.
#[test]
fn a_veth_as_the_external_interface_works_with_the_senders_default_offloads() {
    use eip_user::testing::services::{Service, http_get};
    use std::net::SocketAddrV4;
    let lab = Lab::with(1, &["--ingress", "auto"]);
    lab.topo
        .outside
        .exec("ethtool", &["-K", WAN_IF, "tx", "on"])
        .unwrap();
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    lab.assert_logged("ingress runs as TC there");
    let leaks = LeakWatch::start(&lab);
    let cap = Capture::start(lab.vm(1), "eth0").unwrap();
    let _web = Service::whoami(lab.vm(1), "vm1", 80).unwrap();
    let fast = counter(&lab, "ingress_fast_path");
    for _ in 0..3 {
        let (body, _) = http_get(&lab.topo.outside, SocketAddrV4::new(eip(10), 80))
            .unwrap_or_else(|e| panic!("TCP through the EIP: {e}\n{}", lab.log()));
        assert!(body.contains(&format!("sees you as {OUTSIDE_ADDR}")), "{body}");
    }
    assert!(
        counter(&lab, "ingress_fast_path") > fast,
        "not through the TC ingress"
    );
    // The segments reach the VM still partial (a veth completes nothing), and tcpdump calls
    // a partial checksum incorrect; the VM's stack trusts it. What the rewrite must leave is
    // the pseudo-header sum of the translated addresses, which whatever completes the
    // checksum later (a NIC) adds the rest to. Checked on the SYNs, whose TCP header is 40
    // bytes (Linux's options: MSS, SACK, timestamps, window scale).
    let seen = cap.finish().unwrap();
    let partial = {
        let words = |a: Ipv4Addr| {
            let o = a.octets();
            [
                u32::from(u16::from_be_bytes([o[0], o[1]])),
                u32::from(u16::from_be_bytes([o[2], o[3]])),
            ]
        };
        let mut sum: u32 = words(OUTSIDE_ADDR).iter().chain(&words(vm_ip(1))).sum::<u32>() + 6 + 40;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        format!("cksum {sum:#06x} (incorrect")
    };
    let syns: Vec<&str> = seen.lines().filter(|l| l.contains("Flags [S],")).collect();
    assert_eq!(syns.len(), 3, "{seen}");
    for l in &syns {
        assert!(
            l.contains(&partial) || !l.contains("incorrect"),
            "expected {partial}: {l}"
        );
    }

    assert!(pings(&lab.topo.outside, eip(10), 2));
    leaks.assert_none();
}
