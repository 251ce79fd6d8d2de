//! Hostile input from the outside, on real interfaces: what the outside cannot genuinely send
//! is refused and counted by reason, and never reaches a VM.

mod common;

use std::net::Ipv4Addr;

use common::{Lab, counter, echo_requests_from, eip};
use eip_user::testing::{
    netns::NetNs,
    process::Capture,
    topology::{BRIDGE_IF, EXT_IF, VM_IF, WAN_IF},
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
        echo_requests_from(&seen, private) + echo_requests_from(&seen, pool),
        0,
        "{seen}"
    );
    assert_eq!(echo_requests_from(&seen, common::OUTSIDE), 2, "{seen}");

    lab.stop();
    lab.extra = vec!["--no-source-filter"];
    lab.start();
    let cap = Capture::start(lab.vm(1), VM_IF).unwrap();
    let _ = ping_from(&lab.topo.outside, private, eip(10));
    let seen = cap.finish().unwrap();
    assert_eq!(
        echo_requests_from(&seen, private),
        2,
        "--no-source-filter: {seen}"
    );
}

/// Every error the API gives is JSON with one sentence: a wrong method, a bad query, an
/// oversized body; and the history comes in pages.
#[test]
fn api_errors_are_json_and_the_history_is_paged() {
    let lab = Lab::new(1);
    for i in 1..=30 {
        lab.ok(&["alloc", &format!("203.0.113.{i}")]);
    }
    let (code, body) = lab.api(&["-X", "PUT", "http://eip/v1/eips"]);
    assert_eq!(code, 405, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("does not take that method"),
        "{body}"
    );
    let (code, body) = lab.api(&["http://eip/v1/history?limit=abc"]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("malformed query"),
        "{body}"
    );
    let (code, body) = lab.api(&["http://eip/v1/history?limit=0"]);
    assert_eq!(code, 400, "{body}");
    let big = lab.inst.dir.join("big.json");
    std::fs::write(&big, format!("{{\"eip\": \"{}\"}}", "x".repeat(3 << 20))).unwrap();
    let (code, body) = lab.api(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("@{}", big.display()),
        "http://eip/v1/alloc",
    ]);
    assert_eq!(code, 413, "{body}");
    assert!(body["error"].is_string(), "{body}");

    // Paging: the newest page by default, older pages with --before.
    let page = |args: &[&str]| -> Vec<u64> {
        let mut a = vec!["history", "--json"];
        a.extend(args);
        let v: Vec<serde_json::Value> = serde_json::from_str(&lab.ok(&a)).unwrap();
        v.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    };
    let all = page(&["--limit", "10000"]);
    assert!(all.len() >= 31, "{all:?}");
    let newest = *all.last().unwrap();
    assert_eq!(page(&["--limit", "3"]), [newest - 2, newest - 1, newest]);
    assert_eq!(
        page(&["--limit", "2", "--before", &(newest - 2).to_string()]),
        [newest - 4, newest - 3]
    );
}

/// No ICMP message reaching the outside names a private address, quoted headers included:
/// a TTL that expires at the hypervisor on the way to the EIP, one that expires on the VM's
/// way out, and a VM's own port unreachable.
#[test]
fn icmp_errors_never_reveal_a_private_address() {
    let lab = Lab::new(1);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let icmp = Capture::start_filter(&lab.topo.outside, WAN_IF, "icmp").unwrap();
    // The answer is XDP_TX back out of ext0. A veth delivers such frames to its other end
    // only when an XDP program runs there (it flushes them to that end's NAPI only then),
    // unlike a NIC, which sends them on the wire: the router's end gets a program that
    // passes everything (eip's own ingress with empty maps). The router is not a VM.
    let _router_xdp = {
        let _inside = lab.topo.outside.enter().unwrap();
        let mut dp = eip_user::kernel::dataplane::Dataplane::load(Default::default()).unwrap();
        dp.attach_xdp(WAN_IF).unwrap();
        dp
    };
    let answered = counter(&lab, "ingress_ttl_answered");
    // TTL 1 toward the EIP: it expires at the hypervisor, which answers from the EIP.
    let out = lab
        .topo
        .outside
        .command("ping")
        .args(["-n", "-c", "2", "-i", "0.2", "-W", "1", "-t", "1", "203.0.113.10"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("From 203.0.113.10 icmp_seq=1 Time to live exceeded"),
        "{said}"
    );
    assert_eq!(counter(&lab, "ingress_ttl_answered"), answered + 2);
    // From the VM with TTL 1 and 2: the first expires at the hypervisor, the second
    // reaches the outside.
    for ttl in ["1", "2"] {
        let _ = lab
            .vm(1)
            .command("ping")
            .args(["-n", "-c", "1", "-W", "1", "-t", ttl])
            .arg(common::OUTSIDE.to_string())
            .output();
    }
    // A closed UDP port on the VM, through the EIP: the VM's own port unreachable.
    let _ = lab
        .topo
        .outside
        .command("sh")
        .args(["-c", "echo x | timeout 2 socat - UDP:203.0.113.10:9999"])
        .output();
    let seen = icmp.finish().unwrap();
    common::assert_outside_capture(
        &seen,
        &[
            "udp port 9999 unreachable",
            "203.0.113.10 > 198.51.100.9: ICMP time exceeded in-transit",
            // The quote names the EIP.
            "198.51.100.9 > 203.0.113.10: ICMP echo request",
        ],
    );
}

fn stdout(o: std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// ICMP errors the hypervisor itself sends about packets it was forwarding to a VM (after
/// ingress had rewritten their destination to the VM's private address) leave quoting the
/// EIP: fragmentation needed on a jumbo uplink, host unreachable for a VM that is gone. A
/// router's errors about the VM's traffic reach the VM (a traceroute sees every hop, a
/// fragmentation needed gives it the path MTU). A capture outside finds no private address
/// in any ICMP message, quotes included, and every checksum right.
#[test]
fn the_hosts_and_a_routers_errors_quote_the_eip() {
    let lab = Lab::new(1);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let (hv, out) = (&lab.topo.hv, &lab.topo.outside);
    // A jumbo uplink: the wire and the external interface take 3000 bytes; the bridge and
    // the VM keep their default 1500.
    hv.ip(&["link", "set", EXT_IF, "mtu", "3000"]).unwrap();
    out.ip(&["link", "set", WAN_IF, "mtu", "3000"]).unwrap();
    let _far = common::far_host(&lab);
    let icmp = Capture::start_filter(out, WAN_IF, "icmp").unwrap();
    let translated = counter(&lab, "host_error_translated");

    // Too big for the bridge and not to be fragmented: the host's fragmentation needed.
    let said = stdout(
        out.command("ping")
            .args([
                "-n",
                "-c",
                "1",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                "2000",
                "203.0.113.10",
            ])
            .output()
            .unwrap(),
    );
    assert!(said.contains("Frag needed and DF set (mtu = 1500)"), "{said}");

    // The VM's traceroute to the far host: the hypervisor, the router, the host.
    let said = stdout(
        lab.vm(1)
            .command("traceroute")
            .args(["-n", "-q", "1", "-w", "2", "-m", "4", "198.18.0.2"])
            .output()
            .unwrap(),
    );
    let hops: Vec<&str> = said
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(hops, ["192.168.6.22", "198.51.100.9", "198.18.0.2"], "{said}");
    assert_eq!(counter(&lab, "egress_ttl_to_kernel"), 1);
    // Too big for the far link: the router's fragmentation needed reaches the VM.
    let said = stdout(
        lab.vm(1)
            .command("ping")
            .args(["-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", "198.18.0.2"])
            .output()
            .unwrap(),
    );
    assert!(said.contains("Frag needed and DF set (mtu = 1300)"), "{said}");

    // The VM gone, its EIP still bound: the host's own host unreachable.
    hv.ip(&["link", "del", &lab.topo.vms[0].port]).unwrap();
    hv.ip(&["neigh", "flush", "dev", BRIDGE_IF]).unwrap();
    let said = stdout(
        out.command("ping")
            .args(["-n", "-c", "2", "-i", "1", "-W", "6", "203.0.113.10"])
            .output()
            .unwrap(),
    );
    assert!(said.contains("Destination Host Unreachable"), "{said}");

    let seen = icmp.finish().unwrap();
    common::assert_outside_capture(
        &seen,
        &[
            "ICMP 203.0.113.10 unreachable - need to frag (mtu 1500)",
            "ICMP host 203.0.113.10 unreachable",
        ],
    );
    assert!(
        counter(&lab, "host_error_translated") >= translated + 2,
        "{}",
        lab.log()
    );
}

/// TC ingress (a veth as the external interface) builds no time-exceeded: it hands the
/// translated packet to the kernel, whose answer leaves quoting the EIP.
#[test]
fn a_ttl_that_expires_under_tc_ingress_is_answered_quoting_the_eip() {
    let lab = Lab::with(1, &["--ingress", "tc"]);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let icmp = Capture::start_filter(&lab.topo.outside, WAN_IF, "icmp").unwrap();
    let said = stdout(
        lab.topo
            .outside
            .command("ping")
            .args(["-n", "-c", "2", "-i", "0.2", "-W", "1", "-t", "1", "203.0.113.10"])
            .output()
            .unwrap(),
    );
    assert!(said.contains("Time to live exceeded"), "{said}");
    let seen = icmp.finish().unwrap();
    common::assert_outside_capture(
        &seen,
        &[
            "198.51.100.1 > 198.51.100.9: ICMP time exceeded in-transit",
            // The quote names the EIP.
            "198.51.100.9 > 203.0.113.10: ICMP echo request",
        ],
    );
    assert_eq!(counter(&lab, "ingress_ttl_to_kernel"), 2);
    assert!(counter(&lab, "host_error_translated") >= 2);
}
