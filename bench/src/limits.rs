//! Per-EIP bandwidth limits on real interfaces, through the real daemon: how closely one TCP
//! stream and offered UDP keep to a 20mbit limit each way, the same from two CPUs at once,
//! what an unlimited neighbour keeps while a limited one is saturated, and how the burst
//! shapes TCP's goodput. iperf3 between the namespaces, as in `tests/limits.rs`, but as
//! figures; the in-kernel cost of a limit is the `kernel` family's.

use std::{net::Ipv4Addr, path::Path, thread, time::Duration};

use anyhow::{Context, Result};
use eip_user::testing::{
    daemon::Instance,
    iperf,
    topology::{self, BRIDGE_IF, EXT_IF, OUTSIDE_ADDR, Topology},
};

use crate::{daemon::Daemon, figures::Figure};

const LIMITED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const RATE: &str = "20mbit";
const RATE_MBIT: f64 = 20.0;
const UDP: [&str; 6] = ["-u", "-b", "100M", "-l", "1400", "-R"];

pub struct Plan {
    /// Each TCP and UDP run's length (whole seconds).
    pub secs: u32,
    /// The bursts TCP is measured with besides the default (none: skip the sweep).
    pub bursts: Vec<&'static str>,
}

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

fn figure(variant: &str, metric: &str, value: f64, unit: &str) -> Figure {
    Figure::new("limits", variant, None, metric, value, unit)
}

pub fn run(bin: &Path, plan: &Plan, say: &dyn Fn(&str)) -> Result<Vec<Figure>> {
    let vms = [
        (topology::vm_mac(1), Some(topology::vm_ip(1))),
        (topology::vm_mac(2), Some(topology::vm_ip(2))),
    ];
    let topo = Topology::new(&vms).context("topology")?;
    let inst = Instance::new(bin, &topo.hv)?;
    let hosts: String = (1..=2u8)
        .map(|i| {
            format!(
                "{},vm{i},{}\n",
                eip_user::model::fmt_mac(topology::vm_mac(i)),
                topology::vm_ip(i)
            )
        })
        .collect();
    // As the tests run it: XDP on the external veth, the kernel delivering to veth ports.
    let args = [
        "--ext",
        EXT_IF,
        "--bridge",
        BRIDGE_IF,
        "--pool",
        topology::POOL,
        "--no-dhcp",
        "--ingress",
        "xdp",
    ];
    let daemon = Daemon::start(inst, &hosts, &args, "warn", Duration::from_secs(60))?;
    daemon.bind(LIMITED, "vm1", false)?;
    daemon.bind(NEIGHBOUR, "vm2", false)?;
    let (outside, vm1, vm2) = (&topo.outside, &topo.vms[0].ns, &topo.vms[1].ns);
    let _out_srv = iperf::server(outside, 5201)?;
    let _vm1_srv = iperf::server(vm1, 5202)?;
    let _vm2_srv = iperf::server(vm2, 5203)?;
    // Each run its own server: one that just served a UDP run may still be busy with it.
    let _vm1_cpu0 = iperf::server(vm1, 5204)?;
    let _vm1_cpu1 = iperf::server(vm1, 5205)?;
    let _vm1_flood = iperf::server(vm1, 5206)?;
    let secs = plan.secs;
    let mut out = Vec::new();

    // The neighbour alone, with no limit anywhere.
    let alone = iperf::goodput(&iperf::client(outside, None, NEIGHBOUR, 5203, secs, &[])?)?;
    daemon.limit(LIMITED, Some(RATE), Some(RATE), None)?;

    // One TCP stream each way; the client receives (-R) and measures each second.
    for (way, ns, to, port) in [("in", vm1, OUTSIDE_ADDR, 5201), ("out", outside, LIMITED, 5202)] {
        let v = iperf::client(ns, None, to, port, secs, &["-R"])?;
        let goodput = mbit(iperf::goodput(&v)?);
        let slowest = iperf::seconds(&v)?
            .iter()
            .skip(1)
            .map(|b| mbit(*b))
            .fold(f64::INFINITY, f64::min);
        out.push(
            figure(
                &format!("TCP {way}, {RATE}, default burst"),
                "goodput",
                goodput,
                "Mbit/s",
            )
            .against("limit", RATE_MBIT),
        );
        out.push(
            figure(
                &format!("TCP {way}, {RATE}: slowest second after the first"),
                "goodput",
                slowest,
                "Mbit/s",
            )
            .against("limit", RATE_MBIT),
        );
        say(&format!(
            "limits: TCP {way} {goodput:.1} Mbit/s, slowest second {slowest:.1}"
        ));
    }
    // 100 Mbit/s of UDP offered each way.
    for (way, ns, to, port) in [("in", vm1, OUTSIDE_ADDR, 5201), ("out", outside, LIMITED, 5202)] {
        let v = iperf::client(ns, None, to, port, secs, &UDP)?;
        let delivered = mbit(iperf::udp_delivered(&v)?);
        out.push(
            figure(
                &format!("UDP {way}, 100 Mbit/s offered to {RATE}"),
                "delivered",
                delivered,
                "Mbit/s",
            )
            .against("limit", RATE_MBIT),
        );
    }
    // Two senders at once, pinned to the two CPUs, toward the VM.
    let delivered: f64 = thread::scope(|s| {
        let flows: Vec<_> = [(0u32, 5204), (1, 5205)]
            .into_iter()
            .map(|(cpu, port)| {
                s.spawn(move || {
                    iperf::client(
                        outside,
                        Some(cpu),
                        LIMITED,
                        port,
                        secs,
                        &["-u", "-b", "60M", "-l", "1400"],
                    )
                    .and_then(|v| iperf::udp_delivered(&v))
                })
            })
            .collect();
        flows
            .into_iter()
            .map(|f| {
                f.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("iperf3 thread")))
            })
            .sum::<std::io::Result<f64>>()
    })
    .context("two CPUs")?;
    out.push(
        figure(
            "UDP in from two CPUs at once, 2 x 60 Mbit/s",
            "delivered",
            mbit(delivered),
            "Mbit/s",
        )
        .against("limit", RATE_MBIT),
    );

    // The neighbour beside the limited EIP saturated by UDP.
    let flood = thread::scope(|s| {
        let f = s.spawn(|| {
            iperf::client(
                outside,
                None,
                LIMITED,
                5206,
                secs + 2,
                &["-u", "-b", "100M", "-l", "1400"],
            )
        });
        thread::sleep(Duration::from_secs(1));
        let beside =
            iperf::client(outside, None, NEIGHBOUR, 5203, secs, &[]).and_then(|v| iperf::goodput(&v));
        let _ = f.join();
        beside
    })?;
    let dropped = daemon
        .eips()?
        .iter()
        .find(|r| r.eip == LIMITED)
        .map_or(0, |r| r.limit_dropped.in_packets);
    out.push(figure(
        "TCP to an unlimited EIP, no limit anywhere",
        "goodput",
        alone / 1e9,
        "Gbit/s",
    ));
    out.push(
        figure(
            "TCP to an unlimited EIP, beside a saturated 20mbit one",
            "goodput",
            flood / 1e9,
            "Gbit/s",
        )
        .against("no limit anywhere", alone / 1e9),
    );
    say(&format!(
        "limits: neighbour {:.2} Gbit/s alone, {:.2} beside ({dropped} dropped by the limit)",
        alone / 1e9,
        flood / 1e9
    ));

    // The burst: TCP in with others than the default.
    for burst in &plan.bursts {
        daemon.limit(LIMITED, Some(RATE), Some(RATE), Some(burst))?;
        let v = iperf::client(vm1, None, OUTSIDE_ADDR, 5201, secs, &["-R"])?;
        let goodput = mbit(iperf::goodput(&v)?);
        out.push(
            figure(
                &format!("TCP in, {RATE}, burst {burst}"),
                "goodput",
                goodput,
                "Mbit/s",
            )
            .against("limit", RATE_MBIT),
        );
        say(&format!("limits: burst {burst}: TCP in {goodput:.1} Mbit/s"));
    }
    daemon.stop()?;
    Ok(out)
}
