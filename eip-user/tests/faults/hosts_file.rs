//! The hosts file rewritten in place, and a mass deletion confirmed by SIGHUP.

use super::*;

/// Editors, `cat new > file` and configuration tools rewrite the hosts file in place. What
/// is read in between is not the file, and nothing read then may release an EIP.
#[test]
fn a_hosts_file_rewritten_in_place_releases_nothing() {
    let lab = bound_lab(6);
    lab.ok(&["bind", "203.0.113.11", "vm6"]);
    let all: Vec<String> = (1..=6).map(|i| format!("vm{i}")).collect();
    let before = bound(&lab);
    let original = std::fs::read(&lab.hosts).unwrap();
    let leaks = LeakWatch::start(&lab);
    let _talk = chatter(&lab, 1, 45);
    let _talk6 = chatter(&lab, 6, 45);

    // Two writes 1.5 s apart: the first line, then the rest.
    let lines: Vec<&[u8]> = original.split_inclusive(|b| *b == b'\n').collect();
    std::fs::write(&lab.hosts, lines[..2].concat()).unwrap();
    thread::sleep(Duration::from_millis(1500));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&lab.hosts)
        .unwrap()
        .write_all(&lines[2..].concat())
        .unwrap();
    thread::sleep(Duration::from_secs(7));
    assert_eq!(reservations(&lab), all, "{}", lab.log());
    assert_eq!(bound(&lab), before);

    // Forty fast truncate-and-write cycles.
    for _ in 0..40 {
        let f = std::fs::File::create(&lab.hosts).unwrap();
        thread::sleep(Duration::from_millis(15));
        (&f).write_all(&original).unwrap();
        drop(f);
        thread::sleep(Duration::from_millis(25));
    }
    thread::sleep(Duration::from_secs(7));
    assert_eq!(reservations(&lab), all, "{}", lab.log());
    assert_eq!(bound(&lab), before);
    assert!(pings(&lab.topo.outside, eip(10), 2));

    // Emptied and left so: most of the reservations at once is held until SIGHUP says so.
    std::fs::write(&lab.hosts, "").unwrap();
    thread::sleep(Duration::from_secs(7));
    assert_eq!(reservations(&lab), all);
    assert_eq!(bound(&lab), before);
    lab.assert_logged("send SIGHUP to the daemon to confirm");
    std::fs::write(&lab.hosts, &original).unwrap();
    thread::sleep(Duration::from_secs(7));
    assert_eq!(bound(&lab), before);

    // A line that is not UTF-8 is skipped with its number and the rest applies: vm2's line
    // (line 3) goes bad, a seventh reservation is added after it.
    let mut text = original.clone();
    let at = text.windows(3).position(|w| w == b"vm2").unwrap();
    text[at + 1] = 0xff;
    text.extend_from_slice(b"52:54:00:00:00:07,vm7,192.168.6.17\n");
    std::fs::write(&lab.hosts, &text).unwrap();
    wait_for(10, "vm7's reservation", || {
        reservations(&lab).contains(&"vm7".to_owned())
    });
    wait_for(10, "vm2's reservation to go", || {
        !reservations(&lab).contains(&"vm2".to_owned())
    });
    lab.assert_logged("line=3");
    lab.assert_logged("not valid UTF-8");
    assert_eq!(bound(&lab), before, "vm2 had no EIP; the others keep theirs");
    leaks.assert_none();
}

/// SIGHUP confirms a file that deletes most reservations at once.
#[test]
fn sighup_confirms_a_mass_deletion() {
    let lab = bound_lab(3);
    let leaks = LeakWatch::start(&lab);
    std::fs::write(&lab.hosts, "52:54:00:00:00:03,vm3,192.168.6.13\n").unwrap();
    thread::sleep(Duration::from_secs(7));
    assert_eq!(reservations(&lab), ["vm1", "vm2", "vm3"]);
    let pid = lab.daemon.as_ref().unwrap().pid();
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    wait_for(5, "the confirmed deletion", || reservations(&lab) == ["vm3"]);
    assert!(
        lab.list().is_empty(),
        "vm1's EIP is released with its reservation"
    );
    assert!(!pings(&lab.topo.outside, eip(10), 1));
    leaks.assert_none();
}
