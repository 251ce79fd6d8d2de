//! `--ext-vlan` on real interfaces: the external interface is a trunk and the EIPs' network
//! is one VLAN of it. Its frames reach the VM untagged, the VM's traffic leaves tagged, and
//! a frame on the untagged network is not for the EIP path.

mod common;

use common::{Lab, counter, daemon_exits, eip, pings};
use eip_user::testing::{
    process::Capture,
    topology::{EXT_IF, VM_IF, WAN_IF},
};

const VID: &str = "5";

/// Whether this kernel has 802.1Q VLAN interfaces (CONFIG_VLAN_8021Q): the CI machines'
/// kernel does not, and without them no host can have the VLAN interface `--ext-vlan`
/// needs. The dataplane's side is tested on every kernel by the fixture rows (packets.rs).
fn kernel_has_vlans(lab: &Lab) -> bool {
    let probe = lab
        .topo
        .hv
        .command("ip")
        .args([
            "link",
            "add",
            "link",
            EXT_IF,
            "name",
            "eipvlanprobe",
            "type",
            "vlan",
            "id",
            "9",
        ])
        .output()
        .unwrap();
    if probe.status.success() {
        lab.topo.hv.ip(&["link", "del", "eipvlanprobe"]).unwrap();
    }
    probe.status.success()
}

/// Moves the lab's external network onto VLAN 5 of the wire: the addresses go to a VLAN
/// interface on each end, as a trunked uplink has them.
fn trunk(lab: &Lab) {
    let (hv, out) = (&lab.topo.hv, &lab.topo.outside);
    // The outside's end puts the tags in the frames, as on a wire (a veth would otherwise
    // hand them over beside the frame, where no NIC's XDP sees them). The outside is the
    // wire's far end, not a VM.
    out.exec("ethtool", &["-K", WAN_IF, "txvlan", "off"]).unwrap();
    for (ns, dev, addr) in [(hv, EXT_IF, "198.51.100.1/24"), (out, WAN_IF, "198.51.100.9/24")] {
        let vlan = format!("{dev}.{VID}");
        ns.ip(&["addr", "flush", "dev", dev]).unwrap();
        ns.ip(&[
            "link", "add", "link", dev, "name", &vlan, "type", "vlan", "id", VID,
        ])
        .unwrap();
        ns.ip(&["addr", "add", addr, "dev", &vlan]).unwrap();
        ns.ip(&["link", "set", &vlan, "up"]).unwrap();
    }
    out.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.1"])
        .unwrap();
}

#[test]
fn the_eips_vlan_reaches_the_vm_untagged_and_leaves_tagged() {
    let mut lab = Lab::new(1);
    if !kernel_has_vlans(&lab) {
        eprintln!("skipped: this kernel has no 802.1Q VLAN interfaces (CONFIG_VLAN_8021Q)");
        return;
    }
    lab.stop();
    trunk(&lab);
    lab.extra = vec!["--ext-vlan", VID];
    lab.start();
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let (hv, out) = (&lab.topo.hv, &lab.topo.outside);
    let on_vlan = hv
        .ip(&["-4", "-o", "addr", "show", "dev", &format!("{EXT_IF}.{VID}")])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&on_vlan.stdout).contains("203.0.113.10/32"),
        "the alias is on the VLAN interface: {}",
        lab.log()
    );
    let tagged_at_vm = Capture::start_filter(lab.vm(1), VM_IF, "vlan").unwrap();
    let at_vm = Capture::start(lab.vm(1), VM_IF).unwrap();
    let outside = Capture::start_filter(out, WAN_IF, &format!("vlan {VID}")).unwrap();
    assert!(pings(out, eip(10), 3), "{}", lab.log());
    assert!(pings(lab.vm(1), common::OUTSIDE, 3), "{}", lab.log());

    // Not the EIPs' network: an untagged frame to the EIP, sent straight to the external
    // interface's MAC.
    let other = counter(&lab, "ingress_other_vlan");
    let mac = eip_user::model::fmt_mac(hv.mac(EXT_IF).unwrap());
    out.ip(&["route", "add", "203.0.113.10/32", "dev", WAN_IF])
        .unwrap();
    out.ip(&[
        "neigh",
        "replace",
        "203.0.113.10",
        "lladdr",
        &mac,
        "dev",
        WAN_IF,
        "nud",
        "permanent",
    ])
    .unwrap();
    let _ = out
        .command("ping")
        .args(["-n", "-c", "2", "-i", "0.2", "-W", "1", "203.0.113.10"])
        .output()
        .unwrap();
    assert!(counter(&lab, "ingress_other_vlan") >= other + 2, "{}", lab.log());

    let tagged = tagged_at_vm.finish().unwrap();
    assert_eq!(tagged.trim(), "", "tagged frames reached the VM:\n{tagged}");
    let seen = at_vm.finish().unwrap();
    let requests = seen
        .lines()
        .filter(|l| l.contains("> 192.168.6.11: ICMP echo request"))
        .count();
    assert_eq!(requests, 3, "only the VLAN's echo requests reach the VM:\n{seen}");
    let seen = outside.finish().unwrap();
    common::assert_outside_capture(
        &seen,
        &[
            "203.0.113.10 > 198.51.100.9: ICMP echo reply",
            "203.0.113.10 > 198.51.100.9: ICMP echo request",
        ],
    );
}

/// `--ext-vlan` names a VLAN the external interface has no interface for: refused with one
/// sentence that says what to create.
#[test]
fn an_ext_vlan_without_its_interface_is_refused() {
    let mut lab = Lab::new(1);
    lab.stop();
    let (status, log) = daemon_exits(&lab, &["--ext-vlan".as_ref(), "7".as_ref()]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("--ext-vlan 7: {EXT_IF} has no VLAN interface with ID 7")),
        "{log}"
    );
    assert_eq!(log.lines().filter(|l| l.contains("ERROR")).count(), 1, "{log}");
}
