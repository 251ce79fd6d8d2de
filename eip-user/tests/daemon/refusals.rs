//! Every refusal of the CLI: one sentence, nothing changed.

use super::*;

/// The state as the CLI shows it, to check that a refusal changed nothing.
fn snapshot(lab: &Lab) -> String {
    ["list", "host list", "pool list", "history"]
        .iter()
        .map(|c| {
            let mut args: Vec<&str> = c.split(' ').collect();
            args.push("--json");
            lab.ok(&args)
        })
        .collect()
}

#[test]
fn every_refusal_is_one_sentence_and_changes_nothing() {
    let lab = Lab::new(2);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    lab.ok(&["alloc", "203.0.113.20"]);
    let cases: &[(&[&str], u8, &str)] = &[
        (&["bind", "300.1.1.1", "vm1"], 2, "invalid value '300.1.1.1'"),
        (&["bind", "192.0.2.1", "vm2"], 1, "192.0.2.1 is not in any pool"),
        (
            &["bind", "203.0.113.11", "nosuch"],
            1,
            "no reservation matches nosuch",
        ),
        (
            &["bind", "203.0.113.11", "bad name!"],
            1,
            "is not a host name, MAC or IPv4 address",
        ),
        (
            &["bind", "203.0.113.11", "vm1"],
            1,
            "vm1 (192.168.6.11) already has 203.0.113.10 bound",
        ),
        (
            &["bind", "203.0.113.10", "vm2", "--no-move"],
            1,
            "203.0.113.10 is bound to vm1 (192.168.6.11); refusing to move it",
        ),
        (&["unbind", "203.0.113.20"], 1, "203.0.113.20 is not bound"),
        (&["unbind", "203.0.113.30"], 1, "203.0.113.30 is not allocated"),
        (&["release", "203.0.113.30"], 1, "203.0.113.30 is not allocated"),
        (&["alloc", "203.0.113.20"], 1, "203.0.113.20 is already allocated"),
        (&["alloc", "203.0.113.0"], 1, "203.0.113.0 is not in any pool"),
        (
            &["host", "add", "52:54:00:00:00:09", "10.0.0.1"],
            1,
            "10.0.0.1 is outside the bridge subnet 192.168.6.0/24",
        ),
        (
            &["host", "add", "52:54:00:00:00:09", "192.168.6.11"],
            1,
            "192.168.6.11 is already reserved",
        ),
        (
            &["host", "add", "52:54:00:00:00:09", "192.168.6.22"],
            1,
            "192.168.6.22 is the bridge's own",
        ),
        (
            &["host", "add", "zz:54:00:00:00:09", "192.168.6.40"],
            2,
            "invalid value 'zz:54:00:00:00:09'",
        ),
        (&["host", "del", "vm1"], 1, "comes from the hosts file"),
        (&["host", "del", "nosuch"], 1, "no reservation matches nosuch"),
        (&["pool", "add", "203.0.113.128/25"], 1, "overlaps 203.0.113.0/24"),
        (
            &["pool", "add", "192.168.0.0/16"],
            1,
            "overlaps the bridge subnet",
        ),
        // The host's own uplink subnet: binding the host's address would take it off the
        // network.
        (
            &["pool", "add", "198.51.100.0/24"],
            1,
            "overlaps 198.51.100.1/24, an address of this host's interfaces",
        ),
        (
            &["pool", "add", "127.0.0.0/8"],
            1,
            "overlaps 127.0.0.0/8 (loopback)",
        ),
        (
            &["pool", "add", "0.0.0.0/8"],
            1,
            "overlaps 0.0.0.0/8 (this network)",
        ),
        (
            &["pool", "add", "169.254.10.0/24"],
            1,
            "overlaps 169.254.0.0/16 (link-local)",
        ),
        (
            &["pool", "add", "224.0.0.0/24"],
            1,
            "overlaps 224.0.0.0/4 (multicast)",
        ),
        (
            &["pool", "add", "250.0.0.0/8"],
            1,
            "overlaps 240.0.0.0/4 (reserved)",
        ),
        (
            &["host", "add", "ff:ff:ff:ff:ff:ff", "192.168.6.40"],
            1,
            "ff:ff:ff:ff:ff:ff is not a unicast MAC",
        ),
        (
            &["host", "add", "01:00:5e:00:00:01", "192.168.6.40"],
            1,
            "01:00:5e:00:00:01 is not a unicast MAC",
        ),
        (
            &["host", "add", "00:00:00:00:00:00", "192.168.6.40"],
            1,
            "00:00:00:00:00:00 is not a unicast MAC",
        ),
        (
            &["host", "add", "52:54:00:00:00:09", "192.168.6.0"],
            1,
            "192.168.6.0",
        ),
        (
            &["host", "add", "52:54:00:00:00:09", "192.168.6.255"],
            1,
            "192.168.6.255",
        ),
        (
            &["pool", "del", "203.0.113.0/24"],
            1,
            "still has 203.0.113.10 bound",
        ),
        (
            &["pool", "del", "198.51.100.0/24"],
            1,
            "pool 198.51.100.0/24 does not exist",
        ),
        (&["quarantine", "nosuch"], 1, "no reservation matches nosuch"),
        (&["unquarantine", "vm1"], 1, "is not quarantined"),
    ];
    let before = snapshot(&lab);
    for (args, code, message) in cases {
        let out = lab.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(*code)),
            "eip {args:?}: {stderr}"
        );
        assert!(
            stderr.contains(message),
            "eip {args:?}: {stderr:?} lacks {message:?}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "eip {args:?}: not one line: {stderr}"
        );
        assert_eq!(snapshot(&lab), before, "eip {args:?} changed something");
    }

    // The daemon is not running (another socket), and permission denied (not root).
    let out = lab
        .inst
        .command()
        .unwrap()
        .args(["--socket", "/nonexistent/eip.sock", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the eip daemon is not running"));
    let out = lab.cli_as_nobody(&["list"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));

    // A malformed request gets an error and the daemon goes on.
    let (code, body) = lab.api(&[
        "-H",
        "content-type: application/json",
        "-d",
        "{\"eip\": 12",
        "http://eip/v1/bind",
    ]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("malformed request")),
        "{body}"
    );
    assert_eq!(snapshot(&lab), before);
}
