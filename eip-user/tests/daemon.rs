//! The real daemon and CLI in namespaces: binds by name, MAC and IP; traffic follows a move
//! and never reaches the old VM; aliases and gratuitous ARP on the external side; every
//! refusal of the CLI; restart with traffic flowing; kill -9 in a burst of binds.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

mod common;

use common::{BIN, Lab, counter, echo_requests_from, eip, pings};
use eip_common::maps::{MAP_DNAT, MAP_SNAT, MAP_VMS};
use eip_user::{
    api::{BindReq, Done, EipRow, EipState},
    cli::client::Client,
    kernel::pins::Pins,
    testing::{
        lab::daemon_args,
        process::Capture,
        services::{Service, Stream},
        topology::{vm_mac as mac, *},
    },
};

#[test]
fn lifecycle_on_real_interfaces() {
    let lab = Lab::new(2);
    let arp = Capture::start_filter(&lab.topo.outside, WAN_IF, "arp").unwrap();

    // By name: allocates and binds, the alias appears, traffic reaches vm1.
    let said = lab.ok(&["bind", "203.0.113.10", "vm1"]);
    assert_eq!(said.trim(), "bound 203.0.113.10 to vm1 (192.168.6.11)");
    assert_eq!(lab.aliases(), [eip(10)]);
    let cap1 = Capture::start(lab.vm(1), VM_IF).unwrap();
    assert!(pings(&lab.topo.outside, eip(10), 3), "{}", lab.log());
    assert_eq!(echo_requests_from(&cap1.finish().unwrap(), OUTSIDE_ADDR), 3);

    // By MAC: a move. From then on nothing reaches vm1; vm2 gets it all.
    let cap1 = Capture::start(lab.vm(1), VM_IF).unwrap();
    let cap2 = Capture::start(lab.vm(2), VM_IF).unwrap();
    let said = lab.ok(&["bind", "203.0.113.10", "52:54:00:00:00:02"]);
    assert_eq!(
        said.trim(),
        "moved 203.0.113.10 from vm1 (192.168.6.11) to vm2 (192.168.6.12)"
    );
    assert!(pings(&lab.topo.outside, eip(10), 3));
    assert_eq!(
        echo_requests_from(&cap1.finish().unwrap(), OUTSIDE_ADDR),
        0,
        "the old VM got traffic after the move"
    );
    assert_eq!(echo_requests_from(&cap2.finish().unwrap(), OUTSIDE_ADDR), 3);
    assert_eq!(lab.aliases(), [eip(10)], "a move keeps the one alias");

    // By private IP.
    lab.ok(&["bind", "203.0.113.11", "192.168.6.11"]);
    assert!(pings(&lab.topo.outside, eip(11), 2));
    let mut aliases = lab.aliases();
    aliases.sort();
    assert_eq!(aliases, [eip(10), eip(11)]);

    let arp = arp.finish().unwrap();
    let garps = |a: &str| arp.matches(&format!("Request who-has {a} tell {a}")).count();
    assert_eq!(
        garps("203.0.113.10"),
        2,
        "one announcement on bind, one on move:\n{arp}"
    );
    assert_eq!(garps("203.0.113.11"), 1, "{arp}");

    let rows = lab.list();
    let row = rows.iter().find(|r| r.eip == eip(10)).expect("listed");
    assert_eq!(row.state, EipState::Bound);
    assert_eq!(row.private, Some(vm_ip(2)));
    assert_eq!(row.name.as_deref(), Some("vm2"));
    assert_eq!(row.mac.map(|m| m.0), Some(mac(2)));
    // 6 echoes in, 6 replies out, all through the dataplane (the counters stay with the
    // address across the move), 84 bytes each: the IPv4 datagram (header 20, ICMP 8, ping's
    // 56 bytes of data), as the dataplane counts.
    assert_eq!(
        (row.in_packets, row.in_bytes, row.out_packets, row.out_bytes),
        (6, 6 * 84, 6, 6 * 84),
        "{row:?}"
    );

    // The same counters as Prometheus metrics.
    let metrics = lab
        .topo
        .hv
        .exec("curl", &["-sS", "http://127.0.0.1:9477/metrics"])
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log()));
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let sample = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert_eq!(
        sample("eip_packets_total{eip=\"203.0.113.10\",direction=\"in\"}"),
        row.in_packets
    );
    assert_eq!(sample("eip_bindings"), 2);
    assert_eq!(sample("eip_reservations"), 2);
    assert!(
        metrics.contains("eip_dataplane_packets_total{counter=\"drop_spoofed\"} 0"),
        "{metrics}"
    );

    // Unbind: the alias goes, traffic stops, the address stays allocated.
    lab.ok(&["unbind", "203.0.113.10"]);
    assert_eq!(lab.aliases(), [eip(11)]);
    assert!(!pings(&lab.topo.outside, eip(10), 1));
    let row = lab
        .list()
        .into_iter()
        .find(|r| r.eip == eip(10))
        .expect("still allocated");
    assert_eq!(row.state, EipState::Allocated);

    // Release returns it to the pool: the next alloc may hand it out again.
    lab.ok(&["release", "203.0.113.10"]);
    assert!(lab.list().iter().all(|r| r.eip != eip(10)));
    assert_eq!(lab.ok(&["alloc"]).trim(), "203.0.113.1");
    assert_eq!(lab.ok(&["alloc", "203.0.113.10"]).trim(), "203.0.113.10");

    // A reservation deleted (here: its hosts-file line) recycles its EIP.
    std::fs::write(&lab.hosts, "52:54:00:00:00:02,vm2,192.168.6.12\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.list().iter().any(|r| r.eip == eip(11)) {
        assert!(
            Instant::now() < deadline,
            "the EIP of a deleted reservation was not recycled"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lab.aliases(), Vec::<Ipv4Addr>::new());
    let history = lab.ok(&["history", "--json"]);
    assert!(history.contains("hosts file"), "{history}");

    // Quarantine: the VM's traffic is dropped (and counted), then allowed again.
    lab.ok(&["bind", "203.0.113.12", "vm2"]);
    assert!(pings(&lab.topo.outside, eip(12), 1));
    lab.ok(&["quarantine", "vm2"]);
    assert!(!pings(&lab.topo.outside, eip(12), 2));
    lab.ok(&["unquarantine", "vm2"]);
    assert!(pings(&lab.topo.outside, eip(12), 2));
    let quarantined = counter(&lab, "drop_quarantined");
    assert!(quarantined >= 2, "{quarantined} quarantined drops");
}

#[test]
fn no_fast_path_hands_every_translated_packet_to_the_kernel() {
    // A tap port, as QEMU's: one the fast path redirects to.
    let mut lab = Lab::with_ports(&[PortKind::Tap], &[]);
    lab.stop();
    lab.extra.push("--no-fast-path");
    lab.start();
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    assert!(pings(&lab.topo.outside, eip(10), 3), "{}", lab.log());
    let path = |lab: &Lab| {
        [
            "ingress_fast_path",
            "ingress_fallback",
            "egress_fast_path",
            "egress_fallback",
        ]
        .map(|c| counter(lab, c))
    };
    // Three echo requests in, three replies out, none redirected.
    assert_eq!(path(&lab), [0, 3, 0, 3]);
    // The flag is the daemon's setting, not the pinned maps': a start without it redirects.
    lab.stop();
    lab.extra.clear();
    lab.start();
    assert!(pings(&lab.topo.outside, eip(10), 3), "{}", lab.log());
    let [fast_in, slow_in, fast_out, slow_out] = path(&lab);
    assert_eq!((slow_in, slow_out), (3, 3), "the fallback counts no more");
    assert_eq!((fast_in, fast_out), (3, 3), "all six through the fast path");
}

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
    let out = {
        use std::os::unix::process::CommandExt;
        // Not in the namespace: setns needs the privileges this drops, and a socket is a path.
        std::process::Command::new(BIN)
            .arg("list")
            .env("EIP_SOCKET", lab.inst.socket())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));

    // A malformed request gets an error and the daemon goes on.
    let raw = lab
        .topo
        .hv
        .exec(
            "curl",
            &[
                "-s",
                "--unix-socket",
                lab.inst.socket().to_str().unwrap(),
                "-H",
                "content-type: application/json",
                "-d",
                "{\"eip\": 12",
                "http://eip/v1/bind",
            ],
        )
        .unwrap();
    assert!(String::from_utf8_lossy(&raw.stdout).contains("\"error\":\"malformed request"));
    assert_eq!(snapshot(&lab), before);
}

/// Waits until the flow's answer count grows by `n` (at most 5 s).
fn flows(flow: &Stream, n: usize) -> bool {
    let start = flow.answered();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if flow.answered() >= start + n {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

fn without_counters(rows: Vec<EipRow>) -> Vec<EipRow> {
    rows.into_iter()
        .map(|r| EipRow {
            in_packets: 0,
            in_bytes: 0,
            out_packets: 0,
            out_bytes: 0,
            ..r
        })
        .collect()
}

#[test]
fn a_restart_keeps_traffic_flowing_and_the_state() {
    let mut lab = Lab::new(1);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let _echo = Service::udp_echo(lab.vm(1), "vm1", 7000, Default::default()).expect("echo");
    let flow = Stream::start(
        &lab.topo.outside,
        SocketAddrV4::new(eip(10), 7000),
        Duration::from_millis(10),
    )
    .expect("stream");
    assert!(flows(&flow, 20), "no UDP through the EIP: {}", lab.log());
    let before = without_counters(lab.list());

    lab.stop();
    assert!(lab.log().contains("the dataplane keeps forwarding"));
    assert!(flows(&flow, 50), "traffic stopped with the daemon");
    assert_eq!(
        lab.aliases(),
        [eip(10)],
        "the alias stays while the daemon is stopped"
    );

    lab.start();
    assert!(lab.ok(&["list"]).contains("203.0.113.10"));
    assert_eq!(without_counters(lab.list()), before);
    assert!(
        lab.log().contains("adopted the pinned XDP program"),
        "{}",
        lab.log()
    );
    assert!(flows(&flow, 50), "traffic stopped after the restart");
    let status: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
        &lab.topo
            .hv
            .exec(
                "curl",
                &[
                    "-s",
                    "--unix-socket",
                    lab.inst.socket().to_str().unwrap(),
                    "http://eip/v1/status",
                ],
            )
            .unwrap()
            .stdout,
    ))
    .unwrap();
    assert_eq!(status["dataplane"], "adopted");

    // An older program under the XDP link (stood in for by another program pinned where the
    // ingress program should be): the next daemon swaps its own in with the traffic flowing.
    lab.stop();
    let progs = Pins::new(&lab.inst.name).unwrap().root().join("progs");
    std::fs::remove_file(progs.join("eip_ext_xdp")).unwrap();
    let pinned = progs.join("eip_bridge_in");
    let out = std::process::Command::new("bpftool")
        .args(["prog", "pin", "pinned"])
        .arg(&pinned)
        .arg(progs.join("eip_ext_xdp"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lab.start();
    assert!(
        lab.log()
            .contains("replaced the pinned XDP program with this version's"),
        "{}",
        lab.log()
    );
    assert!(flows(&flow, 50), "traffic stopped after the upgrade");
    assert!(lab.log().contains("started=Upgraded"), "{}", lab.log());
    assert_eq!(without_counters(lab.list()), before);

    // A version that named its programs otherwise (before they were named by their attach
    // point) left them pinned under its names, none under this version's: the next daemon
    // swaps every link to its own program with the traffic flowing, and unpins the old names.
    lab.stop();
    for (now, then) in [
        ("eip_ext_xdp", "eip_ingress"),
        ("eip_bridge_in", "eip_egress"),
        ("eip_ext_tc_out", "eip_ext_egress"),
    ] {
        std::fs::rename(progs.join(now), progs.join(then)).unwrap();
    }
    let from = lab.log().len();
    lab.start();
    let log = lab.log()[from..].to_owned();
    for kind in ["XDP", "TC", "TC egress"] {
        assert!(
            log.contains(&format!("replaced the pinned {kind} program with this version's")),
            "{kind}: {log}"
        );
    }
    assert!(log.contains("started=Upgraded"), "{log}");
    let mut pinned: Vec<String> = std::fs::read_dir(&progs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pinned.sort();
    assert_eq!(pinned, ["eip_bridge_in", "eip_ext_tc_out", "eip_ext_xdp"]);
    assert!(
        flows(&flow, 50),
        "traffic stopped after the upgrade from the old names"
    );
    assert_eq!(without_counters(lab.list()), before);
    drop(flow);
    lab.stop();
}

#[test]
fn kill_9_in_a_burst_of_binds_loses_nothing_committed() {
    const HOSTS: u32 = 150;
    let mut lab = Lab::new(1);
    // 150 reservations (no VMs behind them needed: the maps and aliases are what is checked).
    let text: String = (0..HOSTS)
        .map(|i| {
            format!(
                "02:00:00:00:{:02x}:{:02x},h{i},192.168.6.{}\n",
                i / 256,
                i % 256,
                30 + i
            )
        })
        .collect();
    std::fs::write(&lab.hosts, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.ok(&["host", "list"]).contains("h149") {
        assert!(Instant::now() < deadline, "hosts file not loaded");
        thread::sleep(Duration::from_millis(100));
    }
    let history_before =
        serde_json::from_str::<Vec<serde_json::Value>>(&lab.ok(&["history", "--json", "--limit", "10000"]))
            .unwrap()
            .len();

    // The burst runs in its own thread and counts the changes the daemon acknowledged.
    let socket = lab.inst.socket();
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (a, s) = (acked.clone(), sent.clone());
    let burst = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Client::new(&socket);
            for k in 0..1000u32 {
                let req = BindReq {
                    eip: Ipv4Addr::new(203, 0, 113, (1 + k % 120) as u8),
                    target: format!("h{}", (k * 13) % HOSTS),
                    no_move: false,
                    limit: None,
                    burst: None,
                };
                s.fetch_add(1, Ordering::Relaxed);
                match c.post::<_, Done>("/v1/bind", &req).await {
                    Ok(d) if d.message.starts_with("bound") || d.message.starts_with("moved") => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(eip_user::cli::client::ClientError::Refused(_)) => {}
                    Err(_) => return, // the daemon is gone
                }
            }
        });
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent.load(Ordering::Relaxed) < 300 {
        assert!(
            Instant::now() < deadline && !burst.is_finished(),
            "the burst stalled"
        );
        thread::sleep(Duration::from_millis(5));
    }
    lab.daemon.take().unwrap().kill9().unwrap();
    burst.join().unwrap();
    let acked = acked.load(Ordering::Relaxed);
    assert!(
        sent.load(Ordering::Relaxed) < 1000,
        "the kill came after the burst"
    );

    lab.start();
    let history =
        serde_json::from_str::<Vec<serde_json::Value>>(&lab.ok(&["history", "--json", "--limit", "10000"]))
            .unwrap();
    assert!(
        (history.len() - history_before) as u64 >= acked,
        "{acked} acknowledged changes, {} in the history",
        history.len() - history_before
    );
    // Store and kernel agree: the maps and the aliases are exactly the bound rows.
    let rows = lab.list();
    let bound: BTreeMap<Ipv4Addr, Ipv4Addr> = rows
        .iter()
        .filter(|r| r.state == EipState::Bound)
        .map(|r| (r.eip, r.private.unwrap()))
        .collect();
    assert!(!bound.is_empty());
    let pins = Pins::new(&lab.inst.name).unwrap();
    let dnat: BTreeMap<Ipv4Addr, Ipv4Addr> = pins
        .bindings(MAP_DNAT)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let snat: BTreeMap<Ipv4Addr, Ipv4Addr> = pins
        .bindings(MAP_SNAT)
        .unwrap()
        .into_iter()
        .map(|(p, v)| (v.0, p))
        .collect();
    assert_eq!(dnat, bound);
    assert_eq!(snat, bound);
    let mut aliases = lab.aliases();
    aliases.sort();
    assert_eq!(aliases, bound.keys().copied().collect::<Vec<_>>());
    lab.stop();
}

#[test]
fn teardown_removes_the_dataplane_pins_and_aliases() {
    let mut lab = Lab::new(1);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let pins = Pins::new(&lab.inst.name).unwrap();
    assert!(pins.exists());
    // With a daemon: it stops and removes everything.
    lab.ok(&["teardown"]);
    let status = lab
        .daemon
        .take()
        .unwrap()
        .terminate_and_wait(Duration::from_secs(15))
        .unwrap();
    assert!(status.success());
    assert!(!pins.exists(), "pins left behind");
    assert!(lab.aliases().is_empty());
    assert!(!pings(&lab.topo.outside, eip(10), 1));
    let xdp = lab.topo.hv.ip(&["link", "show", EXT_IF]).unwrap();
    assert!(
        !String::from_utf8_lossy(&xdp.stdout).contains("xdp"),
        "XDP still attached"
    );

    // Without a daemon: start, stop (the dataplane stays), then tear down offline. This
    // daemon opens its socket to a group, whose members may use the CLI.
    lab.extra = vec!["--socket-group", "nogroup"];
    lab.start();
    assert!(
        pings(&lab.topo.outside, eip(10), 1),
        "the store rebuilt the dataplane"
    );
    let mode = std::fs::metadata(lab.inst.socket()).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o660);
    let out = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(BIN)
            .arg("list")
            .env("EIP_SOCKET", lab.inst.socket())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("203.0.113.10"));
    lab.stop();
    assert!(pings(&lab.topo.outside, eip(10), 1));
    let said = lab.ok(&["teardown", "--instance", &lab.inst.name]);
    assert!(said.contains("1 aliases"), "{said}");
    assert!(!pins.exists());
    assert!(lab.aliases().is_empty());
}

/// The pinned VM table's size and how many entries it holds.
fn vm_table(lab: &Lab) -> (u32, usize) {
    use aya::maps::{HashMap, Map, MapData};
    let path = Pins::new(&lab.inst.name).unwrap().maps().join(MAP_VMS);
    let data = MapData::from_pin(&path).expect("the pinned VM table");
    let size = data.info().unwrap().max_entries();
    let map: HashMap<MapData, u32, eip_common::maps::Vm> = HashMap::try_from(Map::HashMap(data)).unwrap();
    (size, map.keys().count())
}

#[test]
fn the_vm_table_takes_what_max_vms_allows() {
    // Four entries, two kept for the dynamic range's leases: room for two of three lines.
    const TWO: &str = "192.168.6.200-192.168.6.201";
    let mut lab = Lab::with(3, &["--max-vms", "4", "--dhcp-range", TWO]);
    let full = "the VM table is full: 4 entries (--max-vms), 2 of them kept for the dynamic range's leases";
    let log = lab.log();
    assert!(log.contains(&format!("skipped: {full}")), "{log}");
    let hosts: Vec<serde_json::Value> = serde_json::from_str(&lab.ok(&["host", "list", "--json"])).unwrap();
    let names: Vec<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
    assert_eq!(names, ["vm1", "vm2"]);
    assert_eq!(vm_table(&lab), (4, 2));
    let out = lab.cli(&["host", "add", "52:54:00:00:00:09", "192.168.6.99"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {full}")
    );
    lab.ok(&["bind", "203.0.113.10", "vm2"]);
    assert!(pings(&lab.topo.outside, eip(10), 1), "{}", lab.log());

    // A larger range at the next start leaves room for one reservation of the two: the
    // daemon refuses to start, and the dataplane keeps serving what it had.
    lab.stop();
    let mut owned = daemon_args(&lab.hosts);
    owned.extend(["--max-vms", "4", "--dhcp-range", "192.168.6.200-192.168.6.202"].map(String::from));
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let err = lab
        .inst
        .start(&args)
        .err()
        .expect("a start with too small a VM table");
    assert!(
        err.to_string().contains(
            "a VM table of 4 entries (--max-vms) is too small: the store holds 2 reservations and 3 entries are kept for the dynamic range's leases"
        ),
        "{err}"
    );
    assert!(pings(&lab.topo.outside, eip(10), 1));

    // A start asking for a smaller table keeps the pinned one's four entries, and says so.
    lab.extra = vec!["--max-vms", "2", "--dhcp-range", TWO];
    lab.start();
    assert!(
        lab.log()
            .contains("the pinned maps keep the sizes they were created with")
    );
    assert_eq!(vm_table(&lab), (4, 2));
    assert_eq!(lab.list().len(), 1);
}
