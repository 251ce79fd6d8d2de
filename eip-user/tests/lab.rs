//! `eip-lab`, what `cargo xtask run` starts, run as a person would: it says when it is ready,
//! every command of its "try this" block works as printed, Ctrl-C removes everything, and a
//! lab killed with SIGKILL is cleaned up by the next one. (Under its own prefix and directory,
//! so that it never touches a lab someone is running.)

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use eip_user::testing::{netns::unique, process::Background};

const LAB: &str = env!("CARGO_BIN_EXE_eip-lab");

fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(String::from)
        .collect()
}

/// A running lab: its stdout lines (the "try this" block) arrive on `lines`; stderr goes to a
/// file.
struct Running {
    proc: Background,
    lines: mpsc::Receiver<String>,
    stderr: std::path::PathBuf,
}

fn start(prefix: &str, dir: &Path) -> Running {
    let stderr = dir.with_extension("err");
    let mut c = Command::new(LAB);
    c.args(["--prefix", prefix, "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let mut proc = Background::spawn(c, "eip-lab").expect("start eip-lab");
    let out = proc.take_stdout().expect("stdout");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Running { proc, lines, stderr }
}

impl Running {
    /// The "try this" block, once the lab says it is ready (at most 60 s).
    fn ready(&self) -> Vec<String> {
        let mut block = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => {
                    let done = l.starts_with("Ctrl-C stops the lab");
                    block.push(l);
                    if done {
                        return block;
                    }
                }
                Err(e) => panic!("the lab was not ready ({e}): {}", self.log()),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

fn sh(line: &str) -> String {
    let out = Command::new("timeout")
        .args(["20", "sh", "-c", line])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{line}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_lab_works_as_printed_and_cleans_up_after_itself_and_a_crashed_one() {
    let prefix = unique("eipt");
    let dir = std::env::temp_dir().join(&prefix);
    let pins = Path::new(eip_user::kernel::pins::BPFFS).join("eip").join(&prefix);

    // A first lab, killed with SIGKILL once ready: it leaves its namespaces, the processes in
    // them, its pins and files.
    let first = start(&prefix, &dir);
    let block = first.ready();
    assert!(
        block.iter().any(|l| l.starts_with("eip lab ready in")),
        "{block:#?}"
    );
    first.proc.kill9().unwrap();
    assert_eq!(namespaces(&prefix).len(), 4);
    assert!(pins.exists() && dir.exists());

    // The next one removes what the first left, then starts.
    let second = start(&prefix, &dir);
    let block = second.ready();
    let log = second.log();
    for ns in ["out", "hv", "vm1", "vm2"] {
        assert!(
            log.contains(&format!(
                "removing namespace {prefix}-{ns}, left by an earlier lab"
            )),
            "{log}"
        );
    }
    assert!(
        log.contains("(pid "),
        "the earlier lab's daemon and DHCP clients: {log}"
    );
    assert!(log.contains("vm-001 got 192.168.6.243"), "{log}");

    // Every command of the block, as printed (except `watch`, which never ends).
    let commands: Vec<&str> = block
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("ip netns exec") || l.contains(" --socket "))
        .filter(|l| !l.starts_with("watch"))
        .collect();
    assert_eq!(commands.len(), 7, "{block:#?}");
    let outputs: Vec<String> = commands.iter().map(|c| sh(c)).collect();
    let expect = [
        (0, "3 received"),
        (1, "vm-001 192.168.6.243:80 sees you as 198.51.100.9:"),
        (2, "outside 198.51.100.9:80 sees you as 203.0.113.10:"),
        (3, "203.0.113.10 bound 192.168.6.243 d0:0d:8e:9f:42:88 vm-001"),
        // After the move.
        (6, "vm-002 192.168.6.244:80 sees you as 198.51.100.9:"),
    ];
    for (i, want) in expect {
        // Columns are padded with runs of spaces: compare words.
        let words = outputs[i].split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains(want),
            "`{}` printed {:?}, want {want:?}",
            commands[i],
            outputs[i]
        );
    }

    // Ctrl-C.
    let Running { proc, stderr, .. } = second;
    let status = proc.interrupt_and_wait(Duration::from_secs(30)).unwrap();
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("removed everything it created"), "{log}");
    assert_eq!(namespaces(&prefix), Vec::<String>::new());
    assert!(!pins.exists() && !dir.exists());
}
