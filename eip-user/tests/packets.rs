//! Every fixture row through the real programs in the kernel (BPF_PROG_TEST_RUN), in a
//! namespace of its own: the action, the whole output frame byte for byte, the checksums by
//! full recomputation, and the counter the row must move.
//!
//! BPF_PROG_TEST_RUN builds skbs whose checksums are complete, so the TC program's handling
//! of partial checksums (CHECKSUM_PARTIAL from a VM's offloading NIC) is exercised by the
//! real-interface test in netns.rs, not here.

use aya::programs::{TestRun, TestRunOptions};
use eip_common::{
    builder::{diff, verify_ipv4},
    maps::Counter,
    parse::{ETH_P_IP, parse_eth},
};
use eip_user::testing::{
    fixtures::{self, Prog, Row},
    netns::NetNs,
};

/// The fixture namespace, entered by this thread until it drops (the guard leaves the
/// namespace before the namespace is deleted).
struct Fixture {
    _inside: eip_user::testing::netns::Entered,
    _ns: NetNs,
    port: u32,
}

impl Fixture {
    fn new() -> Self {
        let ns = NetNs::new("eipfx").expect("create the fixture namespace");
        let port = fixtures::namespace(&ns).expect("set up the fixture namespace");
        let inside = ns.enter().expect("enter the fixture namespace");
        Fixture {
            _inside: inside,
            _ns: ns,
            port,
        }
    }
}

fn run(dp: &mut eip_user::kernel::dataplane::Dataplane, row: &Row) -> Result<(u32, Vec<u8>), String> {
    let mut out = vec![0u8; row.input.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(&row.input),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let result = match row.prog {
        Prog::ExtXdp => dp.ext_xdp().map_err(|e| e.to_string())?.test_run(opts),
        Prog::ExtTcIn => dp.ext_tc_in().map_err(|e| e.to_string())?.test_run(opts),
        Prog::BridgeIn => dp.bridge_in().map_err(|e| e.to_string())?.test_run(opts),
        Prog::ExtTcOut => dp.ext_tc_out().map_err(|e| e.to_string())?.test_run(opts),
    }
    .map_err(|e| format!("test_run failed: {e}"))?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

fn check(dp: &mut eip_user::kernel::dataplane::Dataplane, row: &Row) -> Result<(), String> {
    let before = dp.counters().map_err(|e| e.to_string())?;
    let (action, out) = run(dp, row)?;
    let after = dp.counters().map_err(|e| e.to_string())?;
    if action != row.action {
        return Err(format!("action {action}, expected {}", row.action));
    }
    if out != row.output {
        return Err(format!("output frame differs: {}", diff(&row.output, &out)));
    }
    if let Ok(eth) = parse_eth(&out[..])
        && eth.ethertype == ETH_P_IP
        && out.len() >= eth.l3_off + 20
        && row
            .counter
            .is_none_or(|c| !matches!(c, Counter::DropMalformed | Counter::DropBadIpChecksum))
    {
        verify_ipv4(&out, eth.l3_off).map_err(|e| format!("output: {e}"))?;
    }
    for ((c, b), (_, a)) in before.iter().zip(&after) {
        let expected = u64::from(row.counter == Some(*c));
        if a - b != expected {
            return Err(format!(
                "counter {} moved by {}, expected {expected}",
                c.name(),
                a - b
            ));
        }
    }
    Ok(())
}

/// Runs every row; fails with each row that failed and why.
fn all_rows_pass(rows: &[Row]) {
    rows_pass_with(rows, None)
}

/// As [`all_rows_pass`], with the uplink's VLAN set (`--ext-vlan`).
fn rows_pass_with(rows: &[Row], vlan: Option<u16>) {
    let f = Fixture::new();
    let mut dp = fixtures::dataplane(f.port).expect("load the dataplane and write the fixture world");
    if let Some(vlan) = vlan {
        dp.set_uplink(&eip_common::maps::Uplink {
            vlan,
            ..Default::default()
        })
        .expect("write the uplink");
    }
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|row| check(&mut dp, row).err().map(|e| format!("{}: {e}", row.name)))
        .collect();
    for row in rows {
        println!("row: {}", row.name);
    }
    assert_rows_passed(&failures, rows.len());
}

/// Fails with each row that failed and why.
fn assert_rows_passed(failures: &[String], rows: usize) {
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_row_in_the_kernel() {
    all_rows_pass(&fixtures::rows());
}

/// Every ingress row through the TC ingress (a veth as the external interface): the same
/// bytes and counters, with TC's actions; the port that drops XDP redirects takes TC's.
#[test]
fn every_ingress_row_through_the_tc_ingress() {
    let rows = fixtures::tc_ingress_rows();
    assert!(rows.len() > 20, "{} rows", rows.len());
    all_rows_pass(&rows);
}

/// `--ext-vlan`: through XDP and through the TC ingress, the EIPs' VLAN is translated and
/// reaches the VM untagged; untagged frames and other VLANs are left alone.
#[test]
fn every_vlan_row_in_the_kernel() {
    let mut rows = fixtures::vlan_rows(false);
    rows.extend(fixtures::vlan_rows(true));
    rows_pass_with(&rows, Some(fixtures::EXT_VLAN));
}

/// The per-binding counters count what was translated, in each direction.
#[test]
fn per_eip_counters_count_translated_packets() {
    let f = Fixture::new();
    let mut dp = fixtures::dataplane(f.port).expect("load the dataplane");
    let rows = fixtures::rows();
    let ingress = rows.iter().find(|r| r.name == "ingress TCP").unwrap();
    let egress = rows.iter().find(|r| r.name == "egress UDP").unwrap();
    for _ in 0..3 {
        run(&mut dp, ingress).unwrap();
    }
    run(&mut dp, egress).unwrap();
    let slot = fixtures::VM1.eip.unwrap().1;
    let s = dp.stats(slot).unwrap();
    let l3 = |f: &[u8]| (f.len() - 14) as u64;
    assert_eq!((s.in_packets, s.in_bytes), (3, 3 * l3(&ingress.input)));
    assert_eq!((s.out_packets, s.out_bytes), (1, l3(&egress.input)));
    assert_eq!(
        dp.stats(0).unwrap(),
        Default::default(),
        "slot 0 is never counted into"
    );
}

/// A million bindings load, and the last one written translates like the first. The rows'
/// bindings are the fixture world's; the million are written around them.
#[test]
fn a_million_bindings_load_and_translate() {
    use std::net::Ipv4Addr;

    use eip_user::kernel::dataplane::{BindingMaps, Dataplane, Sizes};

    const N: u32 = 1_000_000;
    let f = Fixture::new();
    let mut dp = Dataplane::load(Sizes {
        bindings: N,
        vms: 4096,
    })
    .expect("load with a million-binding maps");
    fixtures::install(&mut dp, f.port).expect("write the fixture world");
    // EIPs from 100.64.0.0 up, private addresses from 10.0.0.0 up: outside every fixture range.
    for i in 0..N - 4 {
        let (eip, private) = (
            Ipv4Addr::from_bits(0x6440_0000 + i),
            Ipv4Addr::from_bits(0x0a00_0000 + i),
        );
        let b = eip_common::maps::Binding {
            addr: private.to_bits(),
            slot: 4 + i,
        };
        dp.put_snat(
            private,
            eip_common::maps::Binding {
                addr: eip.to_bits(),
                slot: 4 + i,
            },
        )
        .expect("snat");
        dp.put_dnat(eip, b).expect("dnat");
    }
    for row in fixtures::rows()
        .iter()
        .filter(|r| r.name == "ingress TCP" || r.name == "egress TCP")
    {
        check(&mut dp, row).unwrap_or_else(|e| panic!("{} with a million bindings: {e}", row.name));
    }
    let last = Ipv4Addr::from_bits(0x6440_0000 + N - 5);
    assert!(dp.dnat(last).unwrap().is_some(), "the last binding is there");
}

/// `struct __sk_buff`'s size and its `ifindex` field's offset (uapi/linux/bpf.h): a test
/// run's skb comes from the interface named there.
const SKB_CTX_LEN: usize = 192;
const SKB_IFINDEX: usize = 40;

/// What a program did to a frame: its action, the frame, and the counters that moved (by
/// how much).
type Outcome = (u32, Vec<u8>, Vec<(Counter, u64)>);

/// `eip_port_in` on `input`, as received on the interface `port`.
fn run_port(
    dp: &mut eip_user::kernel::dataplane::Dataplane,
    input: &[u8],
    port: u32,
) -> Result<Outcome, String> {
    let mut ctx = [0u8; SKB_CTX_LEN];
    ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&port.to_ne_bytes());
    let mut out = vec![0u8; input.len() + 256];
    let before = dp.counters().map_err(|e| e.to_string())?;
    let result = dp
        .port_in()
        .map_err(|e| e.to_string())?
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .map_err(|e| format!("test_run failed: {e}"))?;
    let after = dp.counters().map_err(|e| e.to_string())?;
    out.truncate(result.data_size_out as usize);
    let moved = before
        .iter()
        .zip(&after)
        .filter(|((_, b), (_, a))| a != b)
        .map(|((c, b), (_, a))| (*c, a - b))
        .collect();
    Ok((result.return_value, out, moved))
}

/// Every egress row through `eip_port_in`, run as on VM1's bridge port (the skb's ifindex is
/// the port the maps put VM1 behind): a row that `eip_bridge_in` sends out itself (its fast
/// path, untagged) comes out the same, byte for byte, counted as the fast path and as
/// taken at the port; every other row (another VM, a tag, a hairpin, a drop, anything for
/// the kernel) goes on to the bridge untouched, with no counter moved, for `eip_bridge_in` to
/// judge there.
#[test]
fn every_egress_row_through_the_port_program() {
    use std::time::Duration;

    let f = Fixture::new();
    let mut dp = fixtures::dataplane(f.port).expect("load the dataplane and write the fixture world");
    // The fixture rows' routes are looked up as from loopback, the test run's own device.
    dp.set_bridge_ifindex(1).expect("write the bridge's ifindex");
    let rows = fixtures::egress_rows();
    let mut taken = 0;
    let mut failures = Vec::new();
    for row in &rows {
        dp.set_port_learned(8, Duration::ZERO)
            .expect("mark the bindings learned");
        let untagged = parse_eth(&row.input[..]).is_ok_and(|e| !e.tagged);
        let (action, output, moved) = if row.counter == Some(Counter::EgressFastPath) && untagged {
            taken += 1;
            (
                row.action,
                &row.output,
                vec![(Counter::EgressFastPath, 1), (Counter::EgressAtPort, 1)],
            )
        } else {
            (fixtures::TC_ACT_OK, &row.input, vec![])
        };
        match run_port(&mut dp, &row.input, f.port) {
            Err(e) => failures.push(format!("{}: {e}", row.name)),
            Ok((a, out, m)) => {
                if (a, &out, &m) != (action, output, &moved) {
                    failures.push(format!(
                        "{}: action {a} (expected {action}), counters {m:?} (expected {moved:?}), frame: {}",
                        row.name,
                        diff(output, &out)
                    ));
                }
            }
        }
    }
    assert!(taken >= 6, "only {taken} rows are the fast path's");
    assert_rows_passed(&failures, rows.len());
}

/// `eip_port_in` takes a VM's packet only on the port the maps put it behind, and hands one
/// packet of each binding a second to the bridge, which then goes on learning the VM's MAC
/// on its port.
#[test]
fn the_port_program_leaves_the_bridge_its_learning() {
    use std::time::Duration;

    let f = Fixture::new();
    let mut dp = fixtures::dataplane(f.port).expect("load the dataplane and write the fixture world");
    dp.set_bridge_ifindex(1).expect("write the bridge's ifindex");
    let rows = fixtures::egress_rows();
    let row = rows
        .iter()
        .find(|r| r.name == "egress UDP")
        .expect("the egress UDP row");
    let fast = vec![(Counter::EgressFastPath, 1), (Counter::EgressAtPort, 1)];

    // Not learned for over a second: the first packet goes to the bridge untouched, the
    // next ones are taken.
    dp.set_port_learned(8, Duration::from_secs(2))
        .expect("mark the bindings learned long ago");
    let first = run_port(&mut dp, &row.input, f.port).expect("run");
    assert_eq!(
        first,
        (fixtures::TC_ACT_OK, row.input.clone(), vec![]),
        "the first packet in a second"
    );
    for n in 0..3 {
        let next = run_port(&mut dp, &row.input, f.port).expect("run");
        assert_eq!(
            next,
            (row.action, row.output.clone(), fast.clone()),
            "packet {} after it",
            n + 1
        );
    }

    // The same frame on another interface (loopback, not VM1's port): the bridge's.
    dp.set_port_learned(8, Duration::ZERO)
        .expect("mark the bindings learned");
    let elsewhere = run_port(&mut dp, &row.input, 1).expect("run");
    assert_eq!(
        elsewhere,
        (fixtures::TC_ACT_OK, row.input.clone(), vec![]),
        "on another port"
    );
}
