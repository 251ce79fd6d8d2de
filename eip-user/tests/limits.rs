//! Per-EIP bandwidth limits on real interfaces: iperf3 through the real daemon's dataplane,
//! as an operator would set them up, through the CLI only. Checks of behaviour with generous
//! bounds; the precise figures are the benchmark's (BENCHMARKS.md).

mod common;

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::*;
use eip_user::testing::{iperf, netns::NetNs, process::Background, topology::OUTSIDE_ADDR};
use serde_json::Value;

const MBIT: f64 = 1e6;

fn server(ns: &NetNs, port: u16) -> Background {
    iperf::server(ns, port).expect("iperf3 server")
}

fn client(ns: &NetNs, to: Ipv4Addr, port: u16, secs: u32, args: &[&str]) -> Value {
    iperf::client(ns, None, to, port, secs, args).expect("iperf3")
}

fn goodput(v: &Value) -> f64 {
    iperf::goodput(v).expect("goodput")
}

fn udp_delivered(v: &Value) -> f64 {
    iperf::udp_delivered(v).expect("UDP delivered")
}

fn row(lab: &Lab, addr: Ipv4Addr) -> Value {
    let rows: Value = serde_json::from_str(&lab.ok(&["list", "--json"])).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["eip"] == addr.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{addr} not listed: {rows}"))
}

/// Checks a limited TCP stream: its goodput in 17-21 Mbit/s, and no second after the first
/// below half the limit (a limiter that makes TCP stall misses this).
fn assert_tcp_limited(what: &str, v: &Value) {
    let g = goodput(v) / MBIT;
    let per_second: Vec<f64> = iperf::seconds(v).unwrap().iter().map(|b| b / MBIT).collect();
    assert!(
        (17.0..=21.0).contains(&g),
        "{what}: goodput {g:.1} Mbit/s, seconds {per_second:.1?}"
    );
    eprintln!("{what}: goodput {g:.1} Mbit/s, seconds {per_second:.1?}");
    let slow: Vec<f64> = per_second[1..].iter().copied().filter(|s| *s < 10.0).collect();
    assert!(
        slow.is_empty(),
        "{what}: seconds below 10 Mbit/s {slow:.1?} of {per_second:.1?}"
    );
}

/// One TCP stream for 10 s each way through an EIP limited to 20mbit: 17-21 Mbit/s of
/// goodput, with no second after the first below half the limit; 100 Mbit/s of UDP offered
/// each way delivers at most 21 Mbit/s, and the limit counts what it dropped.
#[test]
fn a_limit_holds_tcp_and_udp_to_its_rate_both_ways() {
    let lab = Lab::new(1);
    let msg = lab.ok(&["bind", "203.0.113.10", "vm1", "--limit", "20mbit"]);
    assert!(msg.contains("limited to 20mbit"), "{msg}");
    let r = row(&lab, eip(10));
    assert_eq!(r["limit_in_bps"], 20_000_000);
    assert_eq!(r["limit_out_bps"], 20_000_000);
    let vm = lab.vm(1);
    let outside = &lab.topo.outside;

    // In: the outside sends to the VM (the VM's client receives, -R).
    let _srv = server(outside, 5201);
    let v = client(vm, OUTSIDE_ADDR, 5201, 10, &["-R"]);
    assert_tcp_limited("in", &v);
    // Out: the VM sends (the outside's client receives).
    let _vm_srv = server(vm, 5202);
    let v = client(outside, eip(10), 5202, 10, &["-R"]);
    assert_tcp_limited("out", &v);

    // UDP at 100 Mbit/s, each way.
    let dropped_before = row(&lab, eip(10))["limit_dropped"].clone();
    let v = client(
        vm,
        OUTSIDE_ADDR,
        5201,
        10,
        &["-R", "-u", "-b", "100M", "-l", "1400"],
    );
    let d_in = udp_delivered(&v) / MBIT;
    let v = client(
        outside,
        eip(10),
        5202,
        10,
        &["-R", "-u", "-b", "100M", "-l", "1400"],
    );
    let d_out = udp_delivered(&v) / MBIT;
    eprintln!("UDP at 100 Mbit/s: {d_in:.1} Mbit/s delivered in, {d_out:.1} out");
    assert!(
        (10.0..=21.0).contains(&d_in),
        "UDP in: {d_in:.1} Mbit/s delivered"
    );
    assert!(
        (10.0..=21.0).contains(&d_out),
        "UDP out: {d_out:.1} Mbit/s delivered"
    );

    // The drops are counted per EIP and direction, in the stats and the metrics.
    let dropped = row(&lab, eip(10))["limit_dropped"].clone();
    for key in ["in_packets", "out_packets", "in_bytes", "out_bytes"] {
        let (a, b) = (
            dropped_before[key].as_u64().unwrap(),
            dropped[key].as_u64().unwrap(),
        );
        assert!(b > a, "{key}: {a} -> {b}");
    }
    let stats = lab.ok(&["stats"]);
    assert!(stats.contains("LIMITED EIP"), "{stats}");
    let metrics = lab
        .topo
        .hv
        .exec("curl", &["-s", "http://127.0.0.1:9477/metrics"])
        .expect("curl");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for dir in ["in", "out"] {
        let line = format!("eip_limit_dropped_packets_total{{eip=\"203.0.113.10\",direction=\"{dir}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} not in\n{metrics}"))
            .parse()
            .unwrap();
        assert!(n > 0, "{line}{n}");
        let rate = format!("eip_limit_bits_per_second{{eip=\"203.0.113.10\",direction=\"{dir}\"}} 20000000");
        assert!(metrics.contains(&rate), "{rate} not in\n{metrics}");
    }
}

/// UDP from two senders pinned to the two CPUs at once, toward one VM limited to 20mbit:
/// the limit is the EIP's, not each CPU's.
#[test]
fn traffic_on_both_cpus_gets_one_limit() {
    let lab = Lab::new(1);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    // A small burst: UDP shows the rate alone (TCP needs the default's, see the test above).
    lab.ok(&["limit", "203.0.113.10", "20mbit", "--burst", "64kb"]);
    let vm = lab.vm(1);
    let _a = server(vm, 5201);
    let _b = server(vm, 5202);
    let before = row(&lab, eip(10));
    let secs = 5;
    let runs: Vec<Value> = thread::scope(|s| {
        let flows: Vec<_> = [(0, 5201), (1, 5202)]
            .into_iter()
            .map(|(cpu, port)| {
                let outside = &lab.topo.outside;
                s.spawn(move || {
                    iperf::client(
                        outside,
                        Some(cpu),
                        eip(10),
                        port,
                        secs,
                        &["-u", "-b", "60M", "-l", "1400"],
                    )
                    .expect("iperf3")
                })
            })
            .collect();
        flows.into_iter().map(|f| f.join().unwrap()).collect()
    });
    let after = row(&lab, eip(10));
    let delivered: f64 = runs.iter().map(udp_delivered).sum::<f64>() / MBIT;
    assert!(
        delivered <= 21.0,
        "two CPUs got {delivered:.1} Mbit/s through a 20mbit limit"
    );
    // Both flows were offered, and the limit dropped from both CPUs' traffic.
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    let passed_mbit = delta("in_bytes") as f64 * 8.0 / secs as f64 / MBIT;
    assert!(passed_mbit <= 21.0 * 1.1, "{passed_mbit:.1} Mbit/s translated");
    assert!(delivered >= 10.0, "only {delivered:.1} Mbit/s delivered");
    let dropped = after["limit_dropped"]["in_packets"].as_u64().unwrap();
    assert!(dropped > 0);
    // Both CPUs translated for the EIP: without that, a limit per CPU would pass too.
    let per_cpu = translated_per_cpu(&lab, eip(10));
    assert!(
        per_cpu.iter().filter(|n| **n > 0).count() >= 2,
        "packets translated per CPU: {per_cpu:?}"
    );
}

/// Packets the EIP translated toward its VM, per CPU, read from the daemon's pinned maps.
fn translated_per_cpu(lab: &Lab, addr: Ipv4Addr) -> Vec<u64> {
    use aya::maps::{HashMap, Map, MapData, PerCpuArray};
    use eip_common::maps::{Binding, EipStats, MAP_DNAT, MAP_STATS, slot_index};
    let maps = lab.inst.pins().join("maps");
    let dnat = MapData::from_pin(maps.join(MAP_DNAT)).expect("pinned DNAT map");
    let dnat: HashMap<_, u32, Binding> = HashMap::try_from(Map::HashMap(dnat)).unwrap();
    let slot = slot_index(dnat.get(&addr.to_bits(), 0).expect("the EIP's binding").slot);
    let stats = MapData::from_pin(maps.join(MAP_STATS)).expect("pinned stats map");
    let stats: PerCpuArray<_, EipStats> = PerCpuArray::try_from(Map::PerCpuArray(stats)).unwrap();
    stats
        .get(&slot, 0)
        .expect("the slot's counters")
        .iter()
        .map(|s| s.in_packets)
        .collect()
}

/// An unlimited EIP keeps its throughput while a limited neighbour on the same host is
/// saturated (generous bound here; the benchmark has the figure).
#[test]
fn an_unlimited_neighbour_does_not_pay() {
    let lab = Lab::new(2);
    lab.ok(&["bind", "203.0.113.10", "vm1", "--limit", "20mbit"]);
    lab.ok(&["bind", "203.0.113.11", "vm2"]);
    let outside = &lab.topo.outside;
    let _srv2 = server(lab.vm(2), 5202);
    let alone = goodput(&client(outside, eip(11), 5202, 3, &[]));
    let _srv1 = server(lab.vm(1), 5201);
    let mut c = Command::new("timeout");
    c.args([
        "15",
        "ip",
        "netns",
        "exec",
        outside.name(),
        "iperf3",
        "-c",
        "203.0.113.10",
    ])
    .args(["-p", "5201", "-t", "6", "-u", "-b", "100M", "-l", "1400"])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _flood = Background::spawn(c, "iperf3 flood").unwrap();
    thread::sleep(Duration::from_millis(500));
    let beside = goodput(&client(outside, eip(11), 5202, 3, &[]));
    assert!(
        beside >= 0.7 * alone,
        "the unlimited EIP got {:.2} Gbit/s beside a saturated limit, {:.2} alone",
        beside / 1e9,
        alone / 1e9
    );
    let dropped = row(&lab, eip(10))["limit_dropped"]["in_packets"]
        .as_u64()
        .unwrap();
    assert!(dropped > 0, "the neighbour's limit was not saturated");
}

/// A limit belongs to the EIP: it stays when the EIP moves, while it is unbound, and across
/// a restart of the daemon; it is in the history; removing it frees the traffic.
#[test]
fn a_limit_stays_with_the_eip() {
    let mut lab = Lab::new(2);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    let msg = lab.ok(&[
        "limit",
        "203.0.113.10",
        "--in",
        "20mbit",
        "--out",
        "5mbit",
        "--burst",
        "64kb",
    ]);
    assert!(
        msg.contains("in 20mbit (burst 64kb), out 5mbit (burst 64kb)"),
        "{msg}"
    );
    let r = row(&lab, eip(10));
    assert_eq!(
        (r["limit_in_bps"].as_u64(), r["limit_out_bps"].as_u64()),
        (Some(20_000_000), Some(5_000_000))
    );
    assert_eq!(r["burst_in_bytes"], 65_536);
    // One direction on its own: the other keeps its limit.
    lab.ok(&["limit", "203.0.113.10", "--out", "10mbit"]);
    let r = row(&lab, eip(10));
    assert_eq!(
        (r["limit_in_bps"].as_u64(), r["limit_out_bps"].as_u64()),
        (Some(20_000_000), Some(10_000_000))
    );
    // Moved, unbound, bound again: the limit stays.
    lab.ok(&["bind", "203.0.113.10", "vm2"]);
    lab.ok(&["unbind", "203.0.113.10"]);
    assert_eq!(row(&lab, eip(10))["limit_out_bps"], 10_000_000);
    lab.ok(&["bind", "203.0.113.10", "vm2"]);
    let list = lab.ok(&["list"]);
    assert!(list.contains("20mbit") && list.contains("10mbit"), "{list}");

    lab.stop();
    lab.start();
    let r = row(&lab, eip(10));
    assert_eq!(
        (r["limit_in_bps"].as_u64(), r["limit_out_bps"].as_u64()),
        (Some(20_000_000), Some(10_000_000))
    );
    // Still enforced by the dataplane after the restart: UDP at 100 Mbit/s gets ~20.
    let _srv = server(lab.vm(2), 5201);
    let d = udp_to_eip10(&lab, 3);
    assert!(d <= 21.0, "after a restart: {d:.1} Mbit/s through 20mbit");

    let history = lab.ok(&["history"]);
    assert!(
        history.contains("limit 203.0.113.10 --in 20mbit --out 5mbit --burst 64kb"),
        "{history}"
    );
    assert!(history.contains("limit 203.0.113.10 --out 10mbit"), "{history}");

    // Removed: the traffic is free again.
    lab.ok(&["limit", "203.0.113.10", "none"]);
    let r = row(&lab, eip(10));
    assert!(r["limit_in_bps"].is_null() && r["limit_out_bps"].is_null(), "{r}");
    let d = udp_to_eip10(&lab, 2);
    assert!(d > 40.0, "with no limit: {d:.1} Mbit/s");
}

/// 100 Mbit/s of UDP from outside to 203.0.113.10 port 5201 for `secs`: Mbit/s delivered.
fn udp_to_eip10(lab: &Lab, secs: u32) -> f64 {
    let v = client(
        &lab.topo.outside,
        eip(10),
        5201,
        secs,
        &["-u", "-b", "100M", "-l", "1400"],
    );
    udp_delivered(&v) / MBIT
}

/// Every refusal of `eip limit` and `eip bind --limit`: exit code 1, one sentence, and
/// nothing changed (the list and the history as they were).
#[test]
fn every_limit_refusal_is_one_sentence_and_changes_nothing() {
    let lab = Lab::new(2);
    lab.ok(&["bind", "203.0.113.10", "vm1", "--limit", "20mbit"]);
    let before = (lab.ok(&["list", "--json"]), lab.ok(&["history", "--json"]));
    for (args, says) in [
        (
            &["limit", "203.0.113.10", "20mbits"][..],
            "\"20mbits\" is not a rate",
        ),
        (&["limit", "203.0.113.10", "20"], "\"20\" is not a rate"),
        (
            &["limit", "203.0.113.10", "0"],
            "a rate of 0 would drop everything",
        ),
        (
            &["limit", "203.0.113.10", "0mbit"],
            "a rate of 0 would drop everything",
        ),
        (
            &["limit", "203.0.113.10", "101gbit"],
            "101gbit is above the highest limit, 100gbit",
        ),
        (
            &["limit", "203.0.113.10", "--in", "1mbit", "--out", "200gbit"],
            "200gbit is above",
        ),
        (
            &["limit", "203.0.113.10", "10mbit", "--burst", "lots"],
            "\"lots\" is not a size",
        ),
        (
            &["limit", "203.0.113.10", "10mbit", "--burst", "0kb"],
            "a burst of 0",
        ),
        (
            &["limit", "198.51.100.77", "10mbit"],
            "198.51.100.77 is not in any pool",
        ),
        (
            &["bind", "198.51.100.77", "vm2", "--limit", "10mbit"],
            "198.51.100.77 is not in any pool",
        ),
        (
            &["bind", "203.0.113.11", "vm2", "--limit", "fast"],
            "\"fast\" is not a rate",
        ),
    ] {
        let out = lab.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Usage errors are clap's (exit 2): no rate at all, a rate and --in together.
    for args in [
        &["limit", "203.0.113.10"][..],
        &["limit", "203.0.113.10", "10mbit", "--in", "5mbit"],
    ] {
        assert_eq!(lab.cli(args).status.code(), Some(2), "{args:?}");
    }
    assert_eq!(
        before,
        (lab.ok(&["list", "--json"]), lab.ok(&["history", "--json"]))
    );
}
