//! Pins removed, interfaces and bridges created again, a daemon in `ip netns exec`.

use super::*;

/// Every pin of the instance is there.
fn pinned_whole(lab: &Lab) -> bool {
    let root = lab.inst.pins();
    [
        "links/xdp",
        "links/tc",
        "progs/eip_ext_xdp",
        "progs/eip_bridge_in",
        "maps/EIP_DNAT",
        "maps/EIP_SNAT",
    ]
    .iter()
    .all(|p| root.join(p).exists())
}

/// `rm -rf` of the instance's pins under a running daemon: nothing detaches (the daemon
/// holds the links), the pins are back within a second or two and logged, and so the
/// dataplane outlives a kill -9 right after.
#[test]
fn pins_removed_under_a_running_daemon_are_put_back() {
    let mut lab = bound_lab(1);
    let leaks = LeakWatch::start(&lab);
    let _talk = chatter(&lab, 1, 15);
    std::fs::remove_dir_all(lab.inst.pins()).unwrap();
    assert!(pings(&lab.topo.outside, eip(10), 2), "the programs detached");
    wait_for(5, "the pins to be put back", || pinned_whole(&lab));
    lab.assert_logged("pinned again");
    lab.daemon.take().unwrap().kill9().unwrap();
    assert!(
        pings(&lab.topo.outside, eip(10), 2),
        "the dataplane died with the daemon"
    );
    lab.start();
    lab.assert_logged("adopted the pinned XDP program");
    assert!(pings(&lab.topo.outside, eip(10), 2));
    leaks.assert_none();
}

/// The external interface deleted and created again: the program is attached to the new one
/// and the aliases go back on it within seconds, without a flood of errors meanwhile; a
/// daemon that was down meanwhile does not adopt the defunct link either.
#[test]
fn an_external_interface_created_again_is_followed() {
    let mut lab = bound_lab(1);
    lab.topo.del_ext().unwrap();
    thread::sleep(Duration::from_secs(3));
    let log = lab.log();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    assert!(errors <= 2, "{errors} errors while the interface was gone: {log}");
    lab.topo.add_ext().unwrap();
    let leaks = LeakWatch::start(&lab);
    let _talk = chatter(&lab, 1, 20);
    wait_for(5, "traffic through the re-created interface", || {
        pings(&lab.topo.outside, eip(10), 1)
    });
    assert!(
        lab.log()
            .contains("the interface was re-created: XDP attached again"),
        "{}",
        lab.log()
    );
    wait_for(3, "the alias on the new interface", || lab.aliases() == [eip(10)]);

    // Down while it is re-created: the next start attaches anew.
    lab.stop();
    lab.topo.del_ext().unwrap();
    lab.topo.add_ext().unwrap();
    lab.start();
    lab.assert_logged("attaching anew");
    wait_for(5, "traffic after a restart", || {
        pings(&lab.topo.outside, eip(10), 1)
    });
    assert_eq!(lab.aliases(), [eip(10)]);
    drop(_talk);
    // The capture's interface went with the second re-creation; what it saw before counts.
    leaks.assert_none();
}

/// `ip netns exec NS eip daemon` mounts a private /sys; the pins still go on the host's
/// bpffs, so the dataplane outlives the daemon (kill -9) and the next daemon adopts it.
#[test]
fn a_daemon_started_with_ip_netns_exec_pins_where_they_outlive_it() {
    let mut lab = Lab::new(1);
    lab.stop();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", lab.topo.hv.name()])
        .arg(&lab.inst.bin)
        .env("EIP_SOCKET", lab.inst.socket())
        .args(["daemon", "--instance", &lab.inst.name, "--ingress", "xdp"])
        .arg("--state-dir")
        .arg(lab.inst.state_dir())
        .args(daemon_args(&lab.hosts))
        .stderr(std::fs::File::create(lab.inst.dir.join("netns-exec.log")).unwrap());
    let mut daemon = Background::spawn(c, "eip daemon under ip netns exec").unwrap();
    let log = || std::fs::read_to_string(lab.inst.dir.join("netns-exec.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lab.cli(&["pool", "list"]).status.success() {
        let exited = daemon.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "{exited:?}: {}",
            log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    assert!(pinned_whole(&lab), "no pins on the host's bpffs: {}", log());
    assert!(log().contains("pinning on its starter's"), "{}", log());
    let leaks = LeakWatch::start(&lab);
    let _talk = chatter(&lab, 1, 10);
    daemon.kill9().unwrap();
    assert!(pinned_whole(&lab));
    assert!(
        pings(&lab.topo.outside, eip(10), 3),
        "the dataplane died with the daemon"
    );
    lab.start();
    lab.assert_logged("adopted the pinned XDP program");
    leaks.assert_none();
}

/// The bridge deleted and created again (a new index and MAC, its ports re-attached): egress
/// is attached to it again, the fast path sends from its MAC, and the DHCP server answers on
/// it, within seconds.
#[test]
fn a_bridge_created_again_is_followed() {
    let lab = bound_lab(1);
    let leaks = LeakWatch::start(&lab);
    lab.topo.recreate_bridge().unwrap();
    let _talk = chatter(&lab, 1, 20);
    wait_for(6, "egress on the new bridge", || {
        lab.log()
            .contains("the interface was re-created: TC attached again")
    });
    wait_for(6, "traffic through the new bridge", || {
        pings(&lab.topo.outside, eip(10), 1)
    });
    assert!(pings(lab.vm(1), OUTSIDE_ADDR, 3));
    wait_for(6, "the DHCP server on the new bridge", || {
        lab.log()
            .contains("DHCP server listening on the bridge created again")
    });
    let dir = lab.inst.dir.join("dhcp");
    std::fs::create_dir_all(&dir).unwrap();
    let _client = eip_user::testing::clients::udhcpc(lab.vm(1), &dir, "vm1").unwrap();
    wait_for(15, "a lease from the new bridge's server", || {
        std::fs::read_to_string(dir.join("vm1.log")).is_ok_and(|l| l.contains("bound ip=192.168.6.11"))
    });
    leaks.assert_none();
}
