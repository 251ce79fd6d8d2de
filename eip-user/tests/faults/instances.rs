//! A second daemon, a state file that is not a store, stale pinned bindings after a restart.

use super::*;

/// A second daemon on the lab's instance with its own state directory and socket.
fn second_daemon(lab: &Lab) -> (std::process::ExitStatus, String) {
    let dir = lab.inst.dir.join("second");
    daemon_exits(
        lab,
        &[
            "--state-dir".as_ref(),
            dir.join("state").as_os_str(),
            "--socket".as_ref(),
            dir.join("sock").as_os_str(),
        ],
    )
}

#[test]
fn a_second_daemon_on_the_instance_is_refused_and_touches_nothing() {
    let lab = bound_lab(2);
    let leaks = LeakWatch::start(&lab);
    let _talk = chatter(&lab, 1, 10);
    let maps = |name| lab.inst.pinned().bindings(name).unwrap();
    let (dnat, snat) = (maps(MAP_DNAT), maps(MAP_SNAT));
    let (status, log) = second_daemon(&lab);
    assert_eq!(status.code(), Some(1), "{log}");
    let pid = lab.daemon.as_ref().unwrap().pid();
    assert!(
        log.contains(&format!(
            "another eip daemon (pid {pid}) runs instance {}",
            lab.inst.name
        )),
        "{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "one sentence: {log}"
    );
    assert_eq!((maps(MAP_DNAT), maps(MAP_SNAT)), (dnat, snat));
    assert_eq!(bound(&lab), [(eip(10), Some(vm_ip(1)))]);
    assert_eq!(lab.aliases(), [eip(10)]);
    assert!(pings(&lab.topo.outside, eip(10), 2));
    leaks.assert_none();
}

#[test]
fn a_state_file_that_is_not_a_store_is_refused_and_the_dataplane_keeps_forwarding() {
    let mut lab = bound_lab(1);
    lab.stop();
    let file = lab.inst.state_dir().join(eip_user::store::Store::FILE);
    let saved = std::fs::read(&file).unwrap();
    let leaks = LeakWatch::start(&lab);
    let _talk = chatter(&lab, 1, 10);
    for content in [&b""[..], b"# not a database\n"] {
        std::fs::write(&file, content).unwrap();
        let state = lab.inst.state_dir();
        let (status, err) = daemon_exits(&lab, &["--state-dir".as_ref(), state.as_os_str()]);
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("is not an eip state database"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), content, "the file was touched");
        let dnat = lab.inst.pinned().bindings(MAP_DNAT).unwrap();
        assert_eq!(
            dnat.keys().copied().collect::<Vec<_>>(),
            [eip(10)],
            "the binding was wiped"
        );
        assert!(
            pings(&lab.topo.outside, eip(10), 2),
            "the dataplane stopped forwarding"
        );
    }
    std::fs::write(&file, saved).unwrap();
    lab.start();
    assert_eq!(bound(&lab), [(eip(10), Some(vm_ip(1)))]);
    leaks.assert_none();
}

/// A binding in the pinned maps that the store does not have (a kill -9 between the
/// kernel's write and the next reconcile, or a hand-written bpftool entry): the next start
/// removes it, without failing on an entry an earlier correction already took.
#[test]
fn a_restart_over_stale_pinned_bindings_converges() {
    let mut lab = bound_lab(3);
    let leaks = LeakWatch::start(&lab);
    for kill in [false, true] {
        let d = lab.daemon.take().unwrap();
        if kill {
            d.kill9().unwrap();
        } else {
            lab.inst.stop(d);
        }
        let pins = lab.inst.pinned();
        let stale = Binding {
            addr: vm_ip(2).to_bits(),
            slot: 7,
        };
        pins.put_binding(MAP_DNAT, eip(20), stale).unwrap();
        pins.put_binding(
            MAP_SNAT,
            vm_ip(2),
            Binding {
                addr: eip(20).to_bits(),
                slot: 7,
            },
        )
        .unwrap();
        // A reverse entry of a VM with no forward entry at all.
        pins.put_binding(
            MAP_SNAT,
            vm_ip(3),
            Binding {
                addr: eip(21).to_bits(),
                slot: 8,
            },
        )
        .unwrap();
        lab.start();
        let dnat = pins.bindings(MAP_DNAT).unwrap();
        let snat = pins.bindings(MAP_SNAT).unwrap();
        assert_eq!(
            dnat.keys().copied().collect::<Vec<_>>(),
            [eip(10)],
            "{}",
            lab.log()
        );
        assert_eq!(
            snat.keys().copied().collect::<Vec<_>>(),
            [vm_ip(1)],
            "{}",
            lab.log()
        );
        assert!(pings(&lab.topo.outside, eip(10), 2));
    }
    leaks.assert_none();
}
