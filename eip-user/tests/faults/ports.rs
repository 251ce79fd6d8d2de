//! Every kind of bridge port, and a port that drops the fast path's redirects.

use super::*;

fn path_of(lab: &Lab, e: Ipv4Addr) -> Option<String> {
    lab.list().into_iter().find(|r| r.eip == e).and_then(|r| r.path)
}

/// VMs on every kind of bridge port, left as their owners leave them, reach and are reached
/// through their EIPs: a veth with GRO off (the default), a veth whose VM turned GRO on, and a
/// tap held open as QEMU holds it. The kernel delivers to veths (a veth drops redirected frames
/// unless its VM end has NAPI, which the host cannot see), XDP redirects to the tap; each with
/// its exact counter and shown per VM; with --fast-path-veth the GRO-on veth takes the redirect.
#[test]
fn the_fast_path_delivers_on_every_kind_of_bridge_port() {
    use eip_user::testing::topology::PortKind::{Tap, Veth};
    let mut lab = Lab::with_ports(&[Veth, Veth, Tap], &[]);
    // A deliberate case beside vm1's default (GRO off): vm2's owner turned GRO on, as some
    // do. eip needs neither; the test shows what each gets.
    lab.vm(2).exec("ethtool", &["-K", "eth0", "gro", "on"]).unwrap();
    for (i, vm) in [(10u8, "vm1"), (11, "vm2"), (12, "vm3")] {
        lab.ok(&["bind", &eip(i).to_string(), vm]);
    }
    let leaks = LeakWatch::start(&lab);
    // The ports are learned from the bridge's forwarding database as the VMs talk.
    for n in 1..=3 {
        assert!(
            pings(lab.vm(n), OUTSIDE_ADDR, 3),
            "vm{n} cannot reach the outside"
        );
    }
    wait_for(5, "the ports to be learned", || {
        (10..=12).all(|i| path_of(&lab, eip(i)).is_some_and(|p| !p.contains("not learned")))
    });
    assert_eq!(path_of(&lab, eip(10)).as_deref(), Some("kernel (veth port)"));
    assert_eq!(path_of(&lab, eip(11)).as_deref(), Some("kernel (veth port)"));
    assert_eq!(path_of(&lab, eip(12)).as_deref(), Some("fast"));
    lab.assert_logged("the VM's bridge port is a veth");

    let counters = |lab: &Lab| {
        (
            counter(lab, "ingress_kernel_port"),
            counter(lab, "ingress_fast_path"),
        )
    };
    for (i, via_kernel) in [(10u8, true), (11, true), (12, false)] {
        let (k, f) = counters(&lab);
        assert!(
            pings(&lab.topo.outside, eip(i), 3),
            "{} is not reached: {}",
            eip(i),
            lab.log()
        );
        let (k2, f2) = counters(&lab);
        let expected = if via_kernel { (k + 3, f) } else { (k, f + 3) };
        assert_eq!((k2, f2), expected, "{}'s path counters", eip(i));
    }

    // The operator says the VM ends take redirected frames.
    lab.stop();
    lab.extra = vec!["--fast-path-veth"];
    lab.start();
    assert!(pings(lab.vm(2), OUTSIDE_ADDR, 3));
    let deadline = Instant::now() + Duration::from_secs(5);
    while path_of(&lab, eip(11)).as_deref() != Some("fast") {
        assert!(
            Instant::now() < deadline,
            "vm2 not on the fast path: {:?}\n{}",
            lab.list(),
            lab.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let (_, f) = counters(&lab);
    assert!(
        pings(&lab.topo.outside, eip(11), 3),
        "the GRO-on veth with the redirect"
    );
    assert_eq!(counters(&lab).1, f + 3);
    leaks.assert_none();
}

/// --fast-path-veth with a VM end that has no NAPI after all: what the port drops is counted,
/// and the daemon stops redirecting to it within seconds (kernel delivery), logged.
#[test]
fn a_redirect_the_port_drops_is_counted_and_the_port_gets_kernel_delivery() {
    let lab = Lab::with(1, &["--fast-path-veth"]);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let leaks = LeakWatch::start(&lab);
    let port_dropped = |lab: &Lab| {
        let stats: serde_json::Value = serde_json::from_str(&lab.ok(&["stats", "--json"])).unwrap();
        stats["port_dropped"].as_u64().unwrap()
    };
    // vm1's first frames teach the bridge its port; the replies to them, redirected into a
    // veth whose other end has GRO off, are what the kernel drops.
    let _ = pings(lab.vm(1), OUTSIDE_ADDR, 3);
    let mut c = lab.topo.outside.command("ping");
    c.args(["-n", "-q", "-i", "0.2", "-w", "8"])
        .arg(eip(10).to_string())
        .stdout(std::process::Stdio::null());
    let _flood = Background::spawn(c, "ping").unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while port_dropped(&lab) == 0 {
        let links = lab.topo.hv.exec("ip", &["-s", "-s", "link", "show", "port0"]);
        let vm = lab.vm(1).exec("ip", &["-s", "-s", "link", "show", "eth0"]);
        assert!(
            Instant::now() < deadline,
            "no drops counted: {:?}\n{:?}\n{:?}\n{}",
            links.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
            vm.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
            lab.list(),
            lab.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    wait_for(5, "kernel delivery", || {
        path_of(&lab, eip(10)).as_deref() == Some("kernel (veth port)")
    });
    lab.assert_logged("dropped redirected frames");
    assert!(pings(&lab.topo.outside, eip(10), 3), "{}", lab.log());
    assert!(pings(lab.vm(1), OUTSIDE_ADDR, 3));
    leaks.assert_none();
}
