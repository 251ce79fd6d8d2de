//! The VMs' outbound traffic taken at their bridge ports (`eip_port_in`, TCX ingress on each
//! port a VM is behind), before the bridge: on real interfaces with the real daemon, and
//! around each test a capture outside that fails it if a private source address left the
//! hypervisor.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::{Lab, LeakWatch, OUTSIDE, assert_outside_capture, eip, pings, wait_for};
use eip_user::testing::{
    process::Capture,
    services::{Service, upload},
    topology::{BRIDGE_IF, EXT_IF, PortKind, WAN_IF},
};

/// The VMs' bridge ports the running daemon holds a TCX link on (its `eip_port_in`), as the
/// kernel reports the daemon's descriptors (`/proc/PID/fdinfo`: a link's type and
/// interface); sorted by name.
fn ports_with_the_program(lab: &Lab) -> Vec<String> {
    let ifindexes = tcx_links(lab);
    let mut ports: Vec<String> = lab
        .topo
        .vms
        .iter()
        .filter(|v| {
            let index = lab.topo.hv.ifindex(&v.port).expect("the port's ifindex");
            ifindexes.contains(&index)
        })
        .map(|v| v.port.clone())
        .collect();
    ports.sort();
    ports
}

/// The interfaces (ifindexes) of the TCX links the running daemon holds, as the kernel
/// reports its descriptors; 0 for a link whose interface is gone.
fn tcx_links(lab: &Lab) -> Vec<u32> {
    let Some(daemon) = &lab.daemon else {
        return Vec::new();
    };
    let fdinfo = std::path::PathBuf::from(format!("/proc/{}/fdinfo", daemon.pid()));
    std::fs::read_dir(&fdinfo)
        .expect("the daemon's fdinfo")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|info| info.contains("link_type:\ttcx"))
        .filter_map(|info| {
            let line = info.lines().find(|l| l.starts_with("ifindex:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .collect()
}

/// The translated counters: (the fast path's, those of it taken at a port), summed over
/// the CPUs from the pinned map (so they can be read while no daemon runs).
fn egress_counters(lab: &Lab) -> (u64, u64) {
    use aya::maps::{Map, MapData, PerCpuArray};
    use eip_common::maps::{Counter, MAP_COUNTERS};
    let map = MapData::from_pin(lab.inst.pins().join("maps").join(MAP_COUNTERS)).expect("pinned counters");
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(map)).expect("a per-CPU array");
    let sum = |c: Counter| -> u64 { counters.get(&(c as u32), 0).expect("a counter").iter().sum() };
    (sum(Counter::EgressFastPath), sum(Counter::EgressAtPort))
}

/// Whether the bridge's forwarding database has `vm`'s MAC on its port.
fn bridge_knows(lab: &Lab, vm: u8) -> bool {
    let v = &lab.topo.vms[usize::from(vm) - 1];
    let mac = eip_user::model::fmt_mac(v.mac);
    let out = lab
        .topo
        .hv
        .exec("bridge", &["fdb", "show", "br", BRIDGE_IF])
        .expect("bridge fdb show");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with(&mac) && l.contains(&format!("dev {} ", v.port)))
}

/// A lab with a VM on a veth (its defaults: GRO off) and one on a tap, each bound, both
/// ports learned and the program on them.
fn lab_at_ports(extra: &[&'static str]) -> Lab {
    let lab = Lab::with_ports(&[PortKind::Veth, PortKind::Tap], extra);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    lab.ok(&["bind", "203.0.113.11", "vm2"]);
    // The bridge learns the ports as the VMs talk; the daemon follows within 2 s.
    for n in 1..=2 {
        assert!(pings(lab.vm(n), OUTSIDE, 2), "vm{n} cannot reach the outside");
    }
    lab
}

/// Waits until the program is on every VM's port; returns the ports, sorted by name.
fn wait_for_the_programs(lab: &Lab) -> Vec<String> {
    let mut ports: Vec<String> = lab.topo.vms.iter().map(|v| v.port.clone()).collect();
    ports.sort();
    wait_for(5, "eip_port_in on every VM's port", || {
        ports_with_the_program(lab) == ports
    });
    ports
}

/// On a veth and on a tap, a bound VM's pings and a 1 MiB upload (partial checksums from
/// the VM's offloads) leave translated from its port: each echo request is translated once,
/// all but those a second the bridge gets to learn from at the port, and outside every
/// checksum is right and no private address is seen.
#[test]
fn a_bound_vms_traffic_leaves_at_its_port() {
    let lab = lab_at_ports(&[]);
    // A NIC completes partial checksums on the wire; a veth would hand them over partial,
    // which tcpdump outside cannot check. With tx offload off, ext0 completes them in
    // software, so a wrong update of a partial checksum shows outside.
    lab.topo
        .hv
        .exec("ethtool", &["-K", EXT_IF, "tx", "off"])
        .expect("ext0's tx offload off");
    wait_for_the_programs(&lab);
    let cap = Capture::start(&lab.topo.outside, WAN_IF).expect("capture outside");
    for (n, e) in [(1u8, eip(10)), (2, eip(11))] {
        let (fast, at) = egress_counters(&lab);
        // -i 0.1: ten requests in about a second, so at most two go through the bridge.
        assert!(pings(lab.vm(n), OUTSIDE, 10), "vm{n} ({e})");
        let (fast2, at2) = egress_counters(&lab);
        assert_eq!(fast2 - fast, 10, "vm{n}: each request translated once");
        assert!(at2 - at >= 8, "vm{n}: {} of 10 taken at the port", at2 - at);
    }
    let _sink = Service::sink(&lab.topo.outside, 9000).expect("sink");
    let at = egress_counters(&lab).1;
    let got = upload(lab.vm(1), std::net::SocketAddrV4::new(OUTSIDE, 9000), 1 << 20).expect("1 MiB up");
    assert_eq!(got, 1 << 20, "the sink got all of it");
    assert!(
        egress_counters(&lab).1 > at + 10,
        "the upload was taken at the port"
    );
    let seen = cap.finish().expect("capture");
    assert_outside_capture(
        &seen,
        &[
            "203.0.113.10 > 198.51.100.9: ICMP echo request",
            "203.0.113.11 > 198.51.100.9: ICMP echo request",
        ],
    );
    // The upload's segments, from the EIP: its SYN, and every data segment after it.
    let upload: Vec<&str> = seen
        .lines()
        .filter(|l| l.contains(" > 198.51.100.9.9000: Flags"))
        .collect();
    assert!(
        upload.iter().any(|l| l.contains("Flags [S]")),
        "no SYN to the sink:\n{seen}"
    );
    let from_eip = upload
        .iter()
        .filter(|l| l.trim_start().starts_with("203.0.113.10."))
        .count();
    assert!(
        upload.len() > 10 && from_eip == upload.len(),
        "{from_eip} of {} segments to the sink from the EIP:\n{seen}",
        upload.len()
    );
}

/// The bridge goes on learning each VM's port while the program takes its traffic: with
/// the bridge's ageing cut to 2 s, the VM's MAC never leaves its forwarding database during
/// 6 s of pings (one packet of each binding a second still goes through the bridge), and
/// nearly all of them are still taken at the port.
#[test]
fn the_bridge_keeps_learning_a_vms_port() {
    let lab = lab_at_ports(&[]);
    lab.topo
        .hv
        .ip(&["link", "set", BRIDGE_IF, "type", "bridge", "ageing_time", "200"])
        .expect("bridge ageing 2 s");
    wait_for(5, "eip_port_in on vm1's port", || {
        ports_with_the_program(&lab).contains(&lab.topo.vms[0].port)
    });
    let leaks = LeakWatch::start(&lab);
    let mut ping = lab.vm(1).command("ping");
    ping.args(["-n", "-q", "-i", "0.1", "-w", "7", &OUTSIDE.to_string()])
        .stdout(std::process::Stdio::null());
    let _ping = eip_user::testing::process::Background::spawn(ping, "ping").expect("ping");
    thread::sleep(Duration::from_millis(500));
    let at = egress_counters(&lab).1;
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        assert!(bridge_knows(&lab, 1), "the bridge forgot vm1's port");
        thread::sleep(Duration::from_millis(200));
    }
    let taken = egress_counters(&lab).1 - at;
    assert!(taken >= 40, "only {taken} packets taken at the port in 6 s");
    leaks.assert_none();
}

/// The program on the ports is the running daemon's: kill -9 takes it away, the bridge's
/// pinned program goes on translating (nothing private gets out meanwhile), and the next
/// daemon puts it back.
#[test]
fn the_port_program_goes_with_the_daemon() {
    let mut lab = lab_at_ports(&[]);
    let ports = wait_for_the_programs(&lab);
    let leaks = LeakWatch::start(&lab);
    lab.daemon.take().expect("running").kill9().expect("kill -9");
    // Its links went with its descriptors: the bridge's program translates everything.
    for n in 1..=2 {
        let (fast, at) = egress_counters(&lab);
        assert!(pings(lab.vm(n), OUTSIDE, 3), "vm{n} with no daemon");
        let (fast2, at2) = egress_counters(&lab);
        assert_eq!((fast2 - fast, at2 - at), (3, 0), "vm{n} with no daemon");
    }
    lab.start();
    wait_for(10, "eip_port_in back on both ports", || {
        ports_with_the_program(&lab) == ports
    });
    let at = egress_counters(&lab).1;
    assert!(pings(lab.vm(1), OUTSIDE, 5));
    assert!(egress_counters(&lab).1 > at, "taken at the port again");
    leaks.assert_none();
}

/// `--no-port-fast-path`: nothing is attached to the ports and everything goes through the
/// bridge, translated there.
#[test]
fn no_port_fast_path_leaves_it_all_to_the_bridge() {
    let lab = lab_at_ports(&["--no-port-fast-path"]);
    let leaks = LeakWatch::start(&lab);
    wait_for(5, "the ports to be learned", || {
        lab.list()
            .iter()
            .all(|r| r.path.as_deref().is_some_and(|p| !p.contains("not learned")))
    });
    let (fast, _) = egress_counters(&lab);
    assert!(pings(lab.vm(1), OUTSIDE, 5));
    let (fast2, at2) = egress_counters(&lab);
    assert_eq!((fast2 - fast, at2), (5, 0));
    assert!(ports_with_the_program(&lab).is_empty());
    leaks.assert_none();
}

/// A bridge that filters by VLAN judges its ports' VLANs before the bridge device sees a
/// frame: nothing is taken before it while it does, and the program comes back when it
/// stops.
#[test]
fn a_vlan_filtering_bridge_keeps_its_ports_traffic() {
    let lab = lab_at_ports(&[]);
    let ports = wait_for_the_programs(&lab);
    let leaks = LeakWatch::start(&lab);
    let filtering = |on: &str| {
        lab.topo
            .hv
            .ip(&["link", "set", BRIDGE_IF, "type", "bridge", "vlan_filtering", on])
    };
    if let Err(e) = filtering("1") {
        // The CI machines' kernel has no CONFIG_BRIDGE_VLAN_FILTERING.
        assert!(e.to_string().contains("not supported"), "{e}");
        eprintln!("skipped: this kernel's bridges cannot filter by VLAN (CONFIG_BRIDGE_VLAN_FILTERING)");
        return;
    }
    wait_for(5, "the programs to leave the ports", || {
        ports_with_the_program(&lab).is_empty()
    });
    lab.assert_logged("the bridge filters by VLAN");
    let (fast, at) = egress_counters(&lab);
    assert!(pings(lab.vm(1), OUTSIDE, 5), "vm1 through the filtering bridge");
    let (fast2, at2) = egress_counters(&lab);
    assert_eq!((fast2 - fast, at2 - at), (5, 0));
    filtering("0").expect("vlan_filtering off");
    wait_for(5, "eip_port_in back on both ports", || {
        ports_with_the_program(&lab) == ports
    });
    leaks.assert_none();
}

/// A VM's port deleted and created again (a container restarted, its veth anew, with a new
/// ifindex): the program follows the VM to the new port, the old link goes, and the VM's
/// traffic leaves at the new port.
#[test]
fn the_program_follows_a_port_created_again() {
    use eip_user::testing::topology::{BRIDGE_ADDR, PRIVATE_PREFIX, VM_IF, vm_ip};

    let lab = lab_at_ports(&[]);
    let ports = wait_for_the_programs(&lab);
    let leaks = LeakWatch::start(&lab);
    let (hv, vm, port) = (&lab.topo.hv, lab.vm(1), &lab.topo.vms[0].port);
    let before = hv.ifindex(port).expect("the port's ifindex");
    hv.ip(&["link", "del", port]).expect("delete vm1's port");
    hv.veth(port, VM_IF, vm).expect("vm1's port anew");
    hv.ip(&["link", "set", port, "master", BRIDGE_IF])
        .expect("on the bridge");
    hv.ip(&["link", "set", port, "up"]).expect("up");
    // The VM's end as its owner sets it up again: its MAC, address and gateway.
    let mac = eip_user::model::fmt_mac(lab.topo.vms[0].mac);
    vm.ip(&["link", "set", VM_IF, "address", &mac])
        .expect("the VM's MAC");
    vm.ip(&["link", "set", VM_IF, "up"]).expect("up");
    vm.ip(&[
        "addr",
        "add",
        &format!("{}/{PRIVATE_PREFIX}", vm_ip(1)),
        "dev",
        VM_IF,
    ])
    .expect("the VM's address");
    vm.ip(&["route", "add", "default", "via", &BRIDGE_ADDR.to_string()])
        .expect("the VM's gateway");
    assert_ne!(hv.ifindex(port).expect("the new port's ifindex"), before);
    assert!(pings(vm, OUTSIDE, 3), "vm1 from its new port");
    wait_for(5, "eip_port_in on the new port", || {
        ports_with_the_program(&lab) == ports
    });
    wait_for(5, "the old port's link to be let go", || {
        !tcx_links(&lab).contains(&0)
    });
    let (fast, at) = egress_counters(&lab);
    assert!(pings(vm, OUTSIDE, 10), "vm1 at its new port");
    let (fast2, at2) = egress_counters(&lab);
    assert_eq!(fast2 - fast, 10, "each request translated once");
    assert!(at2 - at >= 8, "{} of 10 taken at the new port", at2 - at);
    leaks.assert_none();
}
