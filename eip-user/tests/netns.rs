//! The dataplane attached to real interfaces in namespaces (no daemon: one binding written
//! straight into the maps): ping, TCP and UDP both ways, the VM sees the client's real
//! address, the outside sees the EIP, and tcpdump -vv finds no bad checksum on either side.
//! Once with the fast path (XDP_REDIRECT, FIB + bpf_redirect), once with the fallback (the
//! kernel forwards what the programs translated).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use eip_common::maps::*;
use eip_user::{
    kernel::{
        dataplane::update::{bind_ops, execute},
        pins::Pins,
    },
    testing::{
        process::{Background, Capture, bad_checksums, retry},
        services::{Service, upload},
        topology::*,
    },
};

const VM_MAC: [u8; 6] = [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x88];
const VM_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 6, 243);
const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// A server that answers every connection or datagram with the peer's address, as it sees it.
fn peer_echo(ns: &eip_user::testing::netns::NetNs, listen: &str) -> Background {
    let mut c = ns.command("socat");
    c.args(["-T", "5", listen, "SYSTEM:echo $SOCAT_PEERADDR"]);
    Background::spawn(c, "socat server").expect("start socat")
}

/// Connects (with retries while the server starts) and returns what the server said.
fn ask(ns: &eip_user::testing::netns::NetNs, target: &str) -> Option<String> {
    // While the server starts, connecting fails at once; a lost packet costs the timeout.
    retry(15, Duration::from_millis(100), || {
        let out = ns
            .command("sh")
            .args(["-c", &format!("echo hi | timeout 2 socat -t 1 - {target}")])
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !s.is_empty()).then_some(s)
    })
}

/// Removes the pins (and so detaches the programs) when dropped.
struct Unpin(Pins);

impl Drop for Unpin {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove() {
            eprintln!("unpin {}: {e}", self.0.root().display());
        }
    }
}

fn check(fast_path: bool) {
    // The VM's NIC is a tap held by a process, as QEMU holds it: it takes redirected frames
    // as it is.
    let topo = Topology::build_ports(Naming::Unique, &[(VM_MAC, Some(VM_ADDR))], &[PortKind::Tap])
        .expect("build the topology");
    let vm = &topo.vms[0];
    // Egress packets from the VM may be CHECKSUM_PARTIAL; with tx offload off on the external
    // interface the kernel completes them in software on the way out, so a wrong update of a
    // partial checksum by the TC program shows as a bad checksum outside.
    topo.hv.exec("ethtool", &["-K", EXT_IF, "tx", "off"]).unwrap();
    topo.hv
        .ip(&["addr", "add", &format!("{EIP}/32"), "dev", EXT_IF])
        .unwrap();
    let port = topo.hv.ifindex(&vm.port).unwrap();

    // Loading, attaching and the devmap all resolve interfaces in the calling thread's
    // namespace: the whole setup happens inside the hypervisor's.
    let _inside = topo.hv.enter().expect("enter the hypervisor namespace");
    // Started the way the daemon starts it: pinned, TCX on the bridge and on the external
    // interface's egress, XDP on its ingress. Unpinned when the test ends, failed or not.
    let pins =
        Unpin(Pins::new(&format!("netns-{}-{fast_path}", std::process::id())).expect("an instance name"));
    let (mut dp, _) = pins
        .0
        .start(Default::default(), EXT_IF, BRIDGE_IF)
        .expect("start the dataplane as the daemon does");
    let flags = CONFIG_ANTISPOOF | if fast_path { 0 } else { CONFIG_NO_FAST_PATH };
    dp.set_config(&Config {
        bridge_mac: topo.bridge_mac().unwrap(),
        flags,
        private_net: BRIDGE_ADDR.to_bits() & 0xffff_ff00,
        private_mask: 0xffff_ff00,
    })
    .unwrap();
    dp.set_vm(VM_ADDR, VM_MAC, port, 0).unwrap();
    execute(&mut dp, &bind_ops(EIP, 1, VM_ADDR, None)).unwrap();

    let cap_out = Capture::start(&topo.outside, WAN_IF).unwrap();
    let cap_vm = Capture::start(&vm.ns, VM_IF).unwrap();

    // Outside -> EIP.
    let ping = topo
        .outside
        .exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", &EIP.to_string()]);
    assert!(
        ping.is_ok(),
        "ping from outside to the EIP: {ping:?}\ncounters: {:?}",
        dp.counters()
    );
    let _tcp = peer_echo(&vm.ns, "TCP-LISTEN:8080,reuseaddr,fork");
    let _udp = peer_echo(&vm.ns, "UDP-RECVFROM:9000,fork");
    assert_eq!(
        ask(&topo.outside, &format!("TCP:{EIP}:8080")).as_deref(),
        Some("198.51.100.9"),
        "TCP: the VM sees the client"
    );
    assert_eq!(
        ask(&topo.outside, &format!("UDP:{EIP}:9000")).as_deref(),
        Some("198.51.100.9"),
        "UDP: the VM sees the client"
    );

    // VM -> outside.
    let ping = vm.ns.exec(
        "ping",
        &["-c", "3", "-i", "0.2", "-W", "2", &OUTSIDE_ADDR.to_string()],
    );
    assert!(
        ping.is_ok(),
        "ping from the VM to outside: {ping:?}\ncounters: {:?}",
        dp.counters()
    );
    let _otcp = peer_echo(&topo.outside, "TCP-LISTEN:8081,reuseaddr,fork");
    let _oudp = peer_echo(&topo.outside, "UDP-RECVFROM:9001,fork");
    assert_eq!(
        ask(&vm.ns, &format!("TCP:{OUTSIDE_ADDR}:8081")).as_deref(),
        Some("203.0.113.10"),
        "TCP: outside sees the EIP"
    );
    assert_eq!(
        ask(&vm.ns, &format!("UDP:{OUTSIDE_ADDR}:9001")).as_deref(),
        Some("203.0.113.10"),
        "UDP: outside sees the EIP"
    );

    let outside_saw = cap_out.finish().unwrap();
    let vm_saw = cap_vm.finish().unwrap();
    assert!(
        outside_saw.contains("203.0.113.10."),
        "outside captured traffic from the EIP:\n{outside_saw}"
    );
    assert!(
        !outside_saw.contains("192.168.6."),
        "the private address leaked outside:\n{outside_saw}"
    );
    assert!(
        vm_saw.contains("198.51.100.9."),
        "the VM captured traffic from the client:\n{vm_saw}"
    );
    assert!(
        !vm_saw.contains("203.0.113.10"),
        "the VM saw its EIP un-translated:\n{vm_saw}"
    );
    assert_eq!(
        bad_checksums(&outside_saw),
        Vec::<&str>::new(),
        "bad checksums outside"
    );
    assert_eq!(
        bad_checksums(&vm_saw),
        Vec::<&str>::new(),
        "bad checksums in the VM"
    );

    // Bulk both ways, after the captures: the VM's veth aggregates what it receives (GRO), and
    // tcpdump cannot check an aggregate's checksum. The receiving TCP checks every segment's.
    // A VM's TCP reaches the bridge as GSO super-frames whose payload is not in the linear
    // area; the outside's arrives one frame per segment.
    let _sink_out = Service::sink(&topo.outside, 9100).unwrap();
    let _sink_vm = Service::sink(&vm.ns, 9101).unwrap();
    let mib = 1 << 20;
    assert_eq!(
        upload(&vm.ns, SocketAddrV4::new(OUTSIDE_ADDR, 9100), mib).expect("1 MiB from the VM"),
        mib as u64
    );
    assert_eq!(
        upload(&topo.outside, SocketAddrV4::new(EIP, 9101), mib).expect("1 MiB to the EIP"),
        mib as u64
    );

    let counters: std::collections::HashMap<Counter, u64> = dp.counters().unwrap().into_iter().collect();
    let (fast, slow) = (
        counters[&Counter::IngressFastPath] + counters[&Counter::EgressFastPath],
        counters[&Counter::IngressFallback] + counters[&Counter::EgressFallback],
    );
    if fast_path {
        assert!(
            counters[&Counter::IngressFastPath] > 0 && counters[&Counter::EgressFastPath] > 0,
            "{counters:?}"
        );
    } else {
        assert_eq!(fast, 0, "{counters:?}");
        assert!(slow > 0, "{counters:?}");
    }
    for drop in [
        Counter::DropMalformed,
        Counter::DropSpoofed,
        Counter::DropQuarantined,
        Counter::DropUntranslatable,
    ] {
        assert_eq!(counters[&drop], 0, "{counters:?}");
    }
    let s = dp.stats(1).unwrap();
    assert!(s.in_packets >= 7 && s.out_packets >= 7, "{s:?}");
}

#[test]
fn traffic_through_the_fast_path() {
    check(true);
}

#[test]
fn traffic_through_the_kernel_fallback() {
    check(false);
}
