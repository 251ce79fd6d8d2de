//! The lifecycle on real interfaces (bind, move, unbind, release; aliases and gratuitous ARP), and --no-fast-path.

use super::*;

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
