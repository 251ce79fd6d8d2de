//! Restarts and upgrades with traffic flowing, kill -9 in a burst of binds, teardown.

use super::*;

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
    lab.assert_logged("adopted the pinned XDP program");
    assert!(flows(&flow, 50), "traffic stopped after the restart");
    let (code, status) = lab.api(&["http://eip/v1/status"]);
    assert_eq!(code, 200, "{status}");
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
    lab.assert_logged("started=Upgraded");
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
    let out = lab.cli_as_nobody(&["list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("203.0.113.10"));
    lab.stop();
    assert!(pings(&lab.topo.outside, eip(10), 1));
    let said = lab.ok(&["teardown", "--instance", &lab.inst.name]);
    assert!(said.contains("1 aliases"), "{said}");
    assert!(!pins.exists());
    assert!(lab.aliases().is_empty());
}
