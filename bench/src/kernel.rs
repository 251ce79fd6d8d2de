//! The programs' cost per packet in the kernel, with BPF_PROG_TEST_RUN and `repeat`, beside
//! the floor: a program that only returns (`XDP_PASS`, `XDP_DROP`, `TC_ACT_OK`), loaded from
//! two raw instructions and run the same way in the same rounds.
//!
//! A test run repeats the program on one buffer, so whatever the program writes, the next
//! repetition sees. The measured frames use a self-mapped binding (EIP == private address):
//! every repetition does the whole translation (anti-spoofing and binding lookups, checksum
//! updates, the fast path's FIB lookup, MAC rewrite and redirect) and leaves the frame as it
//! was, except the TTL, which the fast path
//! decrements. So each call repeats 200 times on a frame sent with TTL 255, and the figure is
//! the median, over rounds, of the kernel's own per-repetition time.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use aya::programs::ProgramFd;
use eip_common::{
    builder::{Ipv4, Transport},
    limiter::{self, Limit, Policer},
    maps::SLOT_LIMITED,
};
use eip_user::{
    kernel::dataplane::{
        Dataplane, Sizes,
        update::{bind_ops, execute},
    },
    testing::{
        fixtures::{self, FixtureVm},
        netns::NetNs,
    },
};

use crate::{bpf, figures::Figure};

const REPEAT: u32 = 200;

/// A VM whose binding maps its address to itself, and whose MAC is the external interface's:
/// the egress fast path rewrites the source MAC to that one, so the anti-spoofing lookup of
/// the next repetition finds the same lease.
const SELF_MAPPED: FixtureVm = FixtureVm {
    private: [203, 0, 113, 200],
    mac: fixtures::EXT_MAC,
    eip: Some(([203, 0, 113, 200], 6)),
    flags: 0,
    fast_path: true,
};

/// One test run of `repeat` repetitions: the program's return value and the kernel's time per
/// repetition in ns.
fn test_run(fd: i32, data: &[u8], repeat: u32, ifindex: Option<u32>) -> Result<(u32, u32)> {
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = [0u8; 128];
    // `struct __sk_buff` (192 bytes) with only `ifindex` (offset 40) set: the skb comes from
    // that interface, as a frame a bridge port received.
    let mut skb = [0u8; 192];
    if let Some(i) = ifindex {
        skb[40..44].copy_from_slice(&i.to_ne_bytes());
        bpf::put32(&mut attr, 40, skb.len() as u32);
        bpf::put64(&mut attr, 48, skb.as_ptr() as u64);
    }
    bpf::put32(&mut attr, 0, fd as u32);
    bpf::put32(&mut attr, 8, data.len() as u32);
    bpf::put32(&mut attr, 12, out.len() as u32);
    bpf::put64(&mut attr, 16, data.as_ptr() as u64);
    bpf::put64(&mut attr, 24, out.as_mut_ptr() as u64);
    bpf::put32(&mut attr, 32, repeat);
    bpf::bpf(bpf::BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    Ok((bpf::get32(&attr, 4), bpf::get32(&attr, 36)))
}

/// `r0 = action; exit`, loaded as a program of `prog_type`.
fn floor(prog_type: u32, action: i32) -> Result<OwnedFd> {
    bpf::load(prog_type, &[bpf::mov_r0(action), bpf::EXIT])
}

struct Case {
    name: String,
    /// The program's descriptor (eip's, or a floor's).
    fd: i32,
    frame: Vec<u8>,
    expect: u32,
    /// The floor it is compared with.
    floor: Option<&'static str>,
    /// The self-mapped binding's limit while this case runs (none: no limit).
    limit: Limit,
    /// The interface the skb comes from (`eip_port_in`'s cases: the VM's port).
    ifindex: Option<u32>,
    samples: Vec<u32>,
}

/// A limit every repetition passes: 100gbit with a burst far beyond what the runs send, so
/// the row is the cost of a limited EIP's conforming packet (the clock and the atomic add).
fn passing_limit() -> Limit {
    let p = Policer::new(limiter::MAX_RATE_BPS, limiter::MAX_BURST_BYTES);
    Limit {
        inbound: p,
        outbound: p,
    }
}

/// A limit every repetition after the first exceeds: the cost of a drop by the limit.
fn exceeded_limit() -> Limit {
    let p = Policer::new(limiter::MIN_RATE_BPS, 1);
    Limit {
        inbound: p,
        outbound: p,
    }
}

fn frames() -> Vec<(&'static str, Transport)> {
    vec![
        ("TCP", fixtures::tcp(40000, 80)),
        ("UDP", fixtures::udp(5353, 53, true)),
        ("ICMP echo", fixtures::echo(false)),
    ]
}

fn median(v: &mut [u32]) -> f64 {
    v.sort_unstable();
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2] as f64,
        n => (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0,
    }
}

/// Fills the maps up to `n` bindings with others' (addresses that never appear in a frame:
/// 240.0.0.0/4, reserved), each with its own counter slot.
fn fill(dp: &mut Dataplane, from: u64, to: u64) -> Result<()> {
    for i in from..to {
        let eip = Ipv4Addr::from(0xf000_0000u32 + i as u32);
        let private = Ipv4Addr::from(0xf800_0000u32 + i as u32);
        execute(dp, &bind_ops(eip, 100 + i as u32, private, None))
            .with_context(|| format!("filler binding {i}"))?;
    }
    Ok(())
}

/// Measures at each size in `sizes` (bindings in the maps), `rounds` rounds each.
pub fn run(sizes: &[u64], rounds: usize, say: &dyn Fn(&str)) -> Result<Vec<Figure>> {
    let capacity = sizes.iter().copied().max().unwrap_or(1).max(65_536) as u32 + 1024;
    let ns = NetNs::new("eipbk").context("namespace")?;
    let port = fixtures::namespace(&ns).context("fixture namespace")?;
    let _inside = ns.enter().context("enter the namespace")?;
    let mut dp = Dataplane::load(Sizes {
        bindings: capacity,
        ..Default::default()
    })
    .context("load the dataplane")?;
    fixtures::install(&mut dp, port).map_err(|e| anyhow::anyhow!("{e}"))?;
    let g = SELF_MAPPED;
    let addr = Ipv4Addr::from(g.private);
    dp.set_vm(addr, g.mac, port, 0)?;
    execute(&mut dp, &bind_ops(addr, 6, addr, None))?;
    // A private address bound to itself, so that the external egress program's quote
    // rewrite leaves the frame as it found it, run after run.
    let quoted_private = Ipv4Addr::new(192, 168, 6, 200);
    execute(&mut dp, &bind_ops(quoted_private, 7, quoted_private, None))?;
    // The fixture world holds 4 bindings and the two self-mapped ones: 6.
    let mut filled = 6u64;

    let xdp_pass = floor(bpf::PROG_TYPE_XDP, 2)?;
    let xdp_drop = floor(bpf::PROG_TYPE_XDP, 1)?;
    let tc_ok = floor(bpf::PROG_TYPE_SCHED_CLS, 0)?;
    let ingress = raw(dp.ext_xdp()?.fd()?)?;
    let egress = raw(dp.bridge_in()?.fd()?)?;
    let ext_egress = raw(dp.ext_tc_out()?.fd()?)?;
    let at_port = raw(dp.port_in()?.fd()?)?;
    // The fixture rows' routes are looked up as from loopback, the test run's own device.
    dp.set_bridge_ifindex(1)?;
    // A test run repeats on one buffer. `eip_port_in` takes only frames to the bridge's MAC and
    // sends them to the router's, so here the bridge's MAC is the router's: every repetition
    // is taken. (Nothing else measured here looks at it: ingress writes it as the source of
    // what it sends the VM, the router's MAC again for the frames from outside.)
    dp.set_config(&eip_common::maps::Config {
        bridge_mac: fixtures::ROUTER_MAC,
        ..fixtures::config()
    })?;

    let mut out = Vec::new();
    for &n in sizes {
        if n > filled {
            say(&format!("kernel: filling the maps to {n} bindings"));
            fill(&mut dp, filled, n)?;
            filled = n;
        }
        let mut cases = vec![
            case(
                "XDP_PASS",
                xdp_pass.as_raw_fd(),
                frame_in(&fixtures::tcp(40000, 80)),
                2,
                None,
            ),
            case(
                "XDP_DROP",
                xdp_drop.as_raw_fd(),
                frame_in(&fixtures::tcp(40000, 80)),
                1,
                None,
            ),
            case(
                "TC_ACT_OK",
                tc_ok.as_raw_fd(),
                frame_out(&fixtures::tcp(40000, 80)),
                0,
                None,
            ),
        ];
        for (name, t) in frames() {
            cases.push(case(
                &format!("ingress {name}"),
                ingress,
                frame_in(&t),
                fixtures::XDP_REDIRECT,
                Some("XDP_PASS"),
            ));
            cases.push(case(
                &format!("egress {name}"),
                egress,
                frame_out(&t),
                fixtures::TC_ACT_REDIRECT,
                Some("TC_ACT_OK"),
            ));
            // The same packet taken at the VM's bridge port, before the bridge.
            let mut to_router = frame_out(&t);
            to_router[..6].copy_from_slice(&fixtures::ROUTER_MAC);
            let mut at = case(
                &format!("egress at the port {name}"),
                at_port,
                to_router,
                fixtures::TC_ACT_REDIRECT,
                Some("TC_ACT_OK"),
            );
            at.ifindex = Some(port);
            cases.push(at);
        }
        // The breakdown: the same programs stopping early, without rewriting anything.
        let tcp = fixtures::tcp(40000, 80);
        cases.push(case(
            "ingress TCP, not an EIP (parse, one lookup)",
            ingress,
            fixtures::from_outside(&with_ttl(Ipv4::new(
                fixtures::OUTSIDE,
                fixtures::UNBOUND_EIP,
                tcp.clone(),
            ))),
            fixtures::XDP_PASS,
            Some("XDP_PASS"),
        ));
        // The new checks, as the drops they make: the header checksum over the IPv4 header,
        // and the source filter (classes, the bridge subnet, then the pools' trie).
        let mut bad = fixtures::from_outside(&with_ttl(Ipv4::new(fixtures::OUTSIDE, g.private, tcp.clone())));
        bad[14 + 10] ^= 0x5a;
        cases.push(case(
            "ingress TCP, bad IPv4 header checksum (dropped)",
            ingress,
            bad,
            fixtures::XDP_DROP,
            Some("XDP_DROP"),
        ));
        cases.push(case(
            "ingress TCP, from a pool address (dropped after every source check)",
            ingress,
            fixtures::from_outside(&with_ttl(Ipv4::new([203, 0, 113, 77], g.private, tcp.clone()))),
            fixtures::XDP_DROP,
            Some("XDP_DROP"),
        ));
        cases.push(case(
            "egress TCP, to the VM subnet (no rewrite, no FIB)",
            egress,
            fixtures::from_vm(
                &SELF_MAPPED,
                &with_ttl(Ipv4::new(SELF_MAPPED.private, [192, 168, 6, 1], tcp)),
            ),
            fixtures::TC_ACT_OK,
            Some("TC_ACT_OK"),
        ));
        // What the external interface's egress program adds to everything the host sends
        // there, the egress fast path's frames included; and its one rewrite.
        cases.push(case(
            "ext egress: the fast path's TCP out (two reads, passed)",
            ext_egress,
            fixtures::from_outside(&with_ttl(Ipv4::new(
                SELF_MAPPED.private,
                fixtures::OUTSIDE,
                fixtures::tcp(40000, 80),
            ))),
            fixtures::TC_ACT_OK,
            Some("TC_ACT_OK"),
        ));
        let quoted = Ipv4::new(
            fixtures::OUTSIDE,
            quoted_private.octets(),
            fixtures::udp(5353, 53, true),
        );
        cases.push(case(
            "ext egress: the host's fragmentation needed, quote translated",
            ext_egress,
            fixtures::from_outside(&Ipv4::new(
                [198, 51, 100, 1],
                fixtures::OUTSIDE,
                Transport::IcmpError {
                    icmp_type: 3,
                    code: 4,
                    rest: 1500,
                    quote: quoted.bytes(),
                },
            )),
            fixtures::TC_ACT_OK,
            Some("TC_ACT_OK"),
        ));
        // The limits' cost, on the self-mapped binding: limited and passing (the lookup, the
        // clock and the atomic add), and over its limit (dropped and counted). The unlimited
        // rows above pay only a bit test of the binding's slot.
        for (name, t) in frames().into_iter().take(1) {
            for (way, fd, frame, pass, drop, floor) in [
                (
                    "ingress",
                    ingress,
                    frame_in(&t),
                    fixtures::XDP_REDIRECT,
                    fixtures::XDP_DROP,
                    "XDP_PASS",
                ),
                (
                    "egress",
                    egress,
                    frame_out(&t),
                    fixtures::TC_ACT_REDIRECT,
                    fixtures::TC_ACT_SHOT,
                    "TC_ACT_OK",
                ),
            ] {
                let mut limited = case(
                    &format!("{way} {name}, limited (passes)"),
                    fd,
                    frame.clone(),
                    pass,
                    Some(floor),
                );
                limited.limit = passing_limit();
                cases.push(limited);
                let mut over = case(
                    &format!("{way} {name}, over its limit (dropped)"),
                    fd,
                    frame,
                    drop,
                    Some(floor),
                );
                over.limit = exceeded_limit();
                cases.push(over);
            }
        }
        // Rounds interleave the cases, so that a noisy moment hits them all alike. The first
        // three are a warm-up (caches, the CPU's clock) and are not counted.
        let mut in_map = Limit::default();
        dp.set_limit(6, &in_map)?;
        for round in 0..rounds + 3 {
            // The binding handed the bridge a packet just now, so for a second `eip_port_in`
            // takes every one (a round takes milliseconds).
            dp.set_port_learned(8, Duration::ZERO)?;
            for c in &mut cases {
                // Written only when it changes (the limited cases come last, together), so
                // that no map update runs between the other cases: the first repetitions
                // after one would pay its cold caches. Neither limit needs its timeline
                // restarted: the passing one never fills, the exceeded one never empties.
                if c.limit != in_map {
                    dp.set_limit(6, &c.limit)?;
                    // Marked limited (both ways, as the daemon marks a limited EIP), or not.
                    let mark = if c.limit == Limit::default() {
                        0
                    } else {
                        SLOT_LIMITED
                    };
                    execute(&mut dp, &bind_ops(addr, 6 | mark, addr, None))?;
                    in_map = c.limit;
                }
                let (rc, ns) = test_run(c.fd, &c.frame, REPEAT, c.ifindex)?;
                if rc != c.expect {
                    let counters: Vec<String> = dp
                        .counters()?
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(c, n)| format!("{}={n}", c.name()))
                        .collect();
                    bail!(
                        "{}: the program returned {rc}, not {} (the frame took another path; counters: {})",
                        c.name,
                        c.expect,
                        counters.join(" ")
                    );
                }
                if round >= 3 {
                    c.samples.push(ns);
                }
            }
        }
        let mut medians = Vec::new();
        for c in &mut cases {
            medians.push((c.name.clone(), median(&mut c.samples)));
        }
        let of = |name: &str| medians.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v);
        for (c, (name, v)) in cases.iter().zip(&medians) {
            let mut f = Figure::new("kernel", name, Some(n), "cost", *v, "ns/pkt");
            if let Some(base) = c.floor {
                f = f.against(base, of(base));
            } else if name == "XDP_DROP" {
                f = f.against("XDP_PASS", of("XDP_PASS"));
            }
            out.push(f);
        }
        say(&format!("kernel: {n} bindings measured"));
    }
    Ok(out)
}

fn raw(fd: &ProgramFd) -> Result<i32> {
    Ok(fd.as_fd().as_raw_fd())
}

fn case(name: &str, fd: i32, frame: Vec<u8>, expect: u32, floor: Option<&'static str>) -> Case {
    Case {
        name: name.into(),
        fd,
        frame,
        expect,
        floor,
        limit: Limit::default(),
        ifindex: None,
        samples: Vec::new(),
    }
}

fn with_ttl(ip: Ipv4) -> Ipv4 {
    Ipv4 { ttl: 255, ..ip }
}

/// From outside to the self-mapped EIP.
fn frame_in(t: &Transport) -> Vec<u8> {
    fixtures::from_outside(&with_ttl(Ipv4::new(
        fixtures::OUTSIDE,
        SELF_MAPPED.private,
        t.clone(),
    )))
}

/// From the self-mapped VM to outside.
fn frame_out(t: &Transport) -> Vec<u8> {
    fixtures::from_vm(
        &SELF_MAPPED,
        &with_ttl(Ipv4::new(SELF_MAPPED.private, fixtures::OUTSIDE, t.clone())),
    )
}
