//! A full disk under the store.

use super::*;

/// A small tmpfs over the instance's state directory, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a daemon still holding the store (a failed test) must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The state's disk fills up: changes are refused with the reason (and logged), and once
/// there is room again the daemon takes changes without a restart; nothing acknowledged is
/// lost.
#[test]
fn a_full_disk_refuses_changes_and_the_daemon_recovers_on_its_own() {
    let mut lab = bound_lab(2);
    lab.stop();
    let state = lab.inst.state_dir();
    let file = state.join(eip_user::store::Store::FILE);
    let saved = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&state)
            .status()
            .unwrap()
            .success()
    );
    let _fs = Tmpfs(state.clone());
    std::fs::write(&file, saved).unwrap();
    lab.start();
    let leaks = LeakWatch::start(&lab);
    let _talk = chatter(&lab, 1, 20);

    let filler = state.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 65536]).is_ok() {}
    drop(f);
    let mut refused = None;
    let mut acked = vec![eip(10)];
    for i in 20..120u8 {
        let out = lab.cli(&["alloc", &eip(i).to_string()]);
        if out.status.success() {
            acked.push(eip(i));
        } else {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let refused = refused.expect("the disk never filled");
    assert!(refused.contains("No space left on device"), "{refused}");
    lab.assert_logged("not saved; nothing changed");
    assert!(
        pings(&lab.topo.outside, eip(10), 1),
        "traffic stops with a full disk"
    );

    std::fs::remove_file(&filler).unwrap();
    lab.ok(&["bind", "203.0.113.11", "vm2"]);
    acked.push(eip(11));
    assert!(pings(&lab.topo.outside, eip(11), 2));
    lab.stop();
    lab.start();
    let have: Vec<Ipv4Addr> = lab.list().into_iter().map(|r| r.eip).collect();
    for a in &acked {
        assert!(have.contains(a), "acknowledged {a} lost: {have:?}");
    }
    leaks.assert_none();
    lab.stop();
}
