//! The CLI and the socket under abuse: a closed stdout, connections that never finish, a stopped daemon.

use super::*;

/// `eip history | head -1` and friends: a reader that goes away ends the CLI quietly. The
/// reader here is gone before the CLI writes (it starts 0.3 s late), so every write finds
/// the pipe closed: the CLI must end by SIGPIPE (status 141), not panic (101) or finish (0).
#[test]
fn a_closed_stdout_is_a_quiet_exit() {
    let lab = Lab::new(1);
    let leaks = LeakWatch::start(&lab);
    for i in 1..=20 {
        lab.ok(&["alloc", &format!("203.0.113.{i}")]);
    }
    for cmd in ["history", "list --json", "history --json"] {
        let script = format!(
            "{{ sleep 0.3; '{}' {cmd}; }} | true; echo \"status ${{PIPESTATUS[0]}}\"",
            lab.inst.bin.display()
        );
        let out = Command::new("bash")
            .env("EIP_SOCKET", lab.inst.socket())
            .args(["-c", &script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.trim().is_empty(), "{cmd}: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "status 141",
            "{cmd}: 141 is the end by SIGPIPE, as git and ip end"
        );
    }
    leaks.assert_none();
}

/// The daemon's open descriptors.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's soft descriptor limit to `n` (the test holds many connections).
fn set_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// 1,050 connections that never finish their request do not lock the CLI out, and are
/// closed within seconds; a daemon that does not answer at all (SIGSTOP) makes the CLI exit
/// 3 after its timeout instead of hanging.
#[test]
fn the_api_cannot_be_starved() {
    let mut lab = bound_lab(1);
    // The daemon under the common default limit of 1,024 descriptors, as in the report.
    lab.stop();
    set_nofile(1024);
    lab.start();
    set_nofile(4096);
    let leaks = LeakWatch::start(&lab);
    let _talk = chatter(&lab, 1, 30);
    let pid = lab.daemon.as_ref().unwrap().pid();
    let idle = fds(pid);
    let mut held = Vec::new();
    for i in 0..1050 {
        let Ok(mut s) = UnixStream::connect(lab.inst.socket()) else {
            break;
        };
        // Half of them start a request and never end it.
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /v1/eips HTTP/1.1\r\nhost: eip\r\n");
        }
        s.set_nonblocking(true).unwrap();
        held.push(s);
    }
    assert!(held.len() > 1000, "only {} connections opened", held.len());
    let t = Instant::now();
    lab.ok(&["list"]);
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "the CLI waited {:?}",
        t.elapsed()
    );
    wait_for(15, "the idle connections to be closed", || fds(pid) < idle + 20);
    drop(held);

    // SAFETY: kill(2) on the daemon this test started; SIGCONT follows below.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let t = Instant::now();
    let out = lab
        .inst
        .command()
        .unwrap()
        .env("EIP_TIMEOUT", "2")
        .arg("list")
        .output()
        .unwrap();
    let waited = t.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("did not answer within 2 s"), "{err}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    lab.ok(&["list"]);
    assert!(pings(&lab.topo.outside, eip(10), 2));
    leaks.assert_none();
}
