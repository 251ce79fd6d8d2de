//! Throughput on real interfaces: the reference topology in namespaces (outside, hypervisor
//! with ext0 and br0, one VM on a bridge port), rebuilt for every variant so that no
//! connection-tracking state or rule survives from one to the next.
//!
//! - 64-byte UDP frames from outside to the VM's EIP (ingress) and from the VM to outside
//!   (egress), one flow ("established") or a new source port every frame ("new flows"). The
//!   generator is XDP live frames (BPF_PROG_TEST_RUN with `BPF_F_TEST_XDP_LIVE_FRAMES`): a
//!   program on the sender's veth returns `XDP_TX`, so the kernel transmits the frame itself,
//!   open loop. It runs pinned to CPU 0, the tester's core; the hypervisor's veths run their
//!   NAPI in threads pinned to CPU 1, the core under test. Packets are counted where they
//!   arrive (`Ip.InDelivers` of the receiving namespace, whose stack runs on the core under
//!   test, where the hypervisor's transmit wakes it), not where they are sent.
//! - The same one-flow UDP into an XDP sink: the receiving interface runs a program that
//!   drops every frame, counted by the driver (`xdp_drops`), as a tester's port counts and
//!   discards in RFC 2544 ([`Sink`]). That figure is the hypervisor's forwarding alone,
//!   without the receiver's own stack (about 1 us a packet, which compresses every other
//!   ratio toward 1). The generator's own rate is reported beside every UDP figure. A run
//!   fails where the generator sent less than 1.2x what arrived, or the sink's veth refused
//!   frames: the figure would be the tester's, not the hypervisor's.
//! - TCP with iperf3, both directions: with wire-size segments (the sender's TSO and GSO off,
//!   as frames arrive from a physical NIC, with the receiving side's GRO on, as a NIC driver
//!   does it), and with the 64 KB GSO super-frames a veth hands over as they are. The median
//!   of as many runs as the UDP figures.
//!
//! Variants: eip's fast path, with the VMs' traffic taken at their ports (the default) and
//! through the bridge (`--no-port-fast-path`, the way out only), and its fallback (the real daemon, `--no-fast-path` for the
//! latter), iptables DNAT/SNAT rules with N - 1 other bindings' rules ahead (as the
//! shared-IP setup eip replaces has them), through iptables-legacy and through iptables-nft, an nftables map with N
//! entries, and plain routing without NAT.
//!
//! With `EIP_BENCH_DEBUG` set, each UDP run prints the interfaces' counters and the
//! hypervisor's conntrack count (where the frames went, whether new flows were new). With
//! `EIP_BENCH_PROFILE=DIR`, each UDP run is profiled (`perf record -a -g`, both CPUs) into
//! DIR, one file per run, named after it.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use eip_common::builder::{Ipv4, Transport, ethernet};
use eip_user::testing::{
    daemon::Instance,
    netns::NetNs,
    process::Background,
    topology::{self, BRIDGE_ADDR, BRIDGE_IF, EXT_ADDR, EXT_IF, OUTSIDE_ADDR, Topology, VM_IF, WAN_IF},
};

use crate::{bpf, daemon::Daemon, figures::Figure};

pub mod alternated;

/// The measured binding: the VM's EIP (in the topology's pool).
const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const UDP_PORT: u16 = 9;
/// Frames per test-run call of the generator.
const CHUNK: u32 = 1_000_000;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// The tester's core: the generator.
const TESTER_CPU: usize = 0;
/// The core under test: the hypervisor's veths' NAPI, and the receiver's (its stack, or the
/// sink), which runs where the hypervisor's transmit wakes it.
const HYPERVISOR_CPU: usize = 1;

pub struct Plan {
    /// Bindings in place (the measured one included) for the NAT variants.
    pub sizes: Vec<u32>,
    /// How long each UDP run sends.
    pub udp: Duration,
    /// How long each iperf3 run lasts (whole seconds).
    pub tcp_secs: u32,
    /// UDP and TCP runs per figure (the median is reported).
    pub reps: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Routing,
    Iptables,
    IptablesNft,
    Nft,
    EipFast,
    EipTc,
    /// The fast path with the VMs' traffic taken at the bridge, not at their ports
    /// (`--no-port-fast-path`): the way out before `eip_port_in`, measured beside it.
    EipBridge,
    EipFallback,
}

/// eip's variants, each measured against the best kernel NAT.
const EIP_KINDS: [Kind; 4] = [Kind::EipFast, Kind::EipTc, Kind::EipBridge, Kind::EipFallback];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Routing => "plain routing (no NAT)",
            Kind::Iptables => "iptables-legacy DNAT/SNAT",
            Kind::IptablesNft => "iptables-nft DNAT/SNAT",
            Kind::Nft => "nftables map",
            Kind::EipFast => "eip fast path",
            Kind::EipTc => "eip fast path, TC ingress",
            Kind::EipBridge => "eip fast path, out through the bridge",
            Kind::EipFallback => "eip fallback",
        }
    }
}

/// Filler binding `i`: an EIP in the benchmarking range and a VM address in the bridge's
/// widened subnet (192.168.0.0/16), neither ever in a frame.
fn filler(i: u32) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i),
        Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 16, 1)) + i),
    )
}

fn filler_mac(i: u32) -> String {
    let b = i.to_be_bytes();
    format!("02:01:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn vm_addr() -> Ipv4Addr {
    topology::vm_ip(1)
}

fn frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let ip = Ipv4::new(
        src.octets(),
        dst.octets(),
        Transport::Udp {
            sport: 40_000,
            dport: UDP_PORT,
            payload: vec![0; 18],
            checksum: false,
        },
    );
    ethernet(dst_mac, src_mac, None, 0x0800, &ip.bytes())
}

/// The generator's program. A live frame's page comes back from the receiver to be sent
/// again as the receiver left it: forwarded (TTL, MAC addresses) and translated (addresses,
/// checksums). So the program writes the frame's headers (its first 44 bytes) on every send.
/// With `new_flows` it then writes a random number over both UDP ports: a new flow almost
/// every send (the UDP checksum is zero, so nothing else changes).
fn generator(frame: &[u8], new_flows: bool) -> Result<std::os::fd::OwnedFd> {
    const XDP_TX: i32 = 3;
    const XDP_DROP: i32 = 1;
    const HEADERS: usize = 44;
    const GET_PRANDOM_U32: i32 = 7;
    if frame.len() < 60 {
        bail!("the generator's frame is {} bytes, not 60", frame.len());
    }
    let mut body = Vec::new();
    for off in (0..HEADERS).step_by(4) {
        let word = u32::from_le_bytes([frame[off], frame[off + 1], frame[off + 2], frame[off + 3]]);
        body.push(bpf::insn(0x62, 2, 0, off as i16, word as i32)); // *(u32 *)(r2 + off) = word
    }
    if new_flows {
        body.push(bpf::insn(0x63, 2, 7, 34, 0)); // *(u32 *)(r2 + 34) = r7: both ports
    }
    body.extend([bpf::mov_r0(XDP_TX), bpf::EXIT]);
    let mut insns = vec![bpf::insn(0xbf, 6, 1, 0, 0)]; // r6 = ctx
    if new_flows {
        insns.extend([
            bpf::insn(0x85, 0, 0, 0, GET_PRANDOM_U32), // r0 = bpf_get_prandom_u32()
            bpf::insn(0xbf, 7, 0, 0, 0),               // r7 = r0
        ]);
    }
    insns.extend([
        bpf::insn(0x61, 2, 6, 0, 0),  // r2 = ctx->data
        bpf::insn(0x61, 3, 6, 4, 0),  // r3 = ctx->data_end
        bpf::insn(0xbf, 4, 2, 0, 0),  // r4 = r2
        bpf::insn(0x07, 4, 0, 0, 60), // r4 += 60
        // if r4 > r3: skip the body, drop
        bpf::insn(0x2d, 4, 3, body.len() as i16, 0),
    ]);
    insns.extend(body);
    insns.extend([bpf::mov_r0(XDP_DROP), bpf::EXIT]);
    bpf::load(bpf::PROG_TYPE_XDP, &insns)
}

/// Sends `frame` out of `ifindex` in `ns` for about `how_long`, from CPU 0. Returns frames
/// sent and the time it took.
fn send(
    ns: &NetNs,
    ifindex: u32,
    frame: &[u8],
    new_flows: bool,
    how_long: Duration,
) -> Result<(u64, Duration)> {
    let prog = generator(frame, new_flows)?;
    let name = ns.name().to_owned();
    let frame = frame.to_vec();
    std::thread::scope(|s| {
        s.spawn(move || -> Result<(u64, Duration)> {
            let _inside = eip_user::testing::netns::enter_by_name(&name)?;
            pin_self(TESTER_CPU)?;
            // xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
            // The kernel wants data_end to be the frame's length.
            let mut ctx = [0u32; 6];
            ctx[1] = frame.len() as u32;
            ctx[3] = ifindex;
            let started = Instant::now();
            let mut sent = 0u64;
            // Bounded by time and by count (a slow generator still stops).
            while started.elapsed() < how_long && sent < 100 * CHUNK as u64 {
                let mut attr = [0u8; 128];
                use std::os::fd::AsRawFd;
                bpf::put32(&mut attr, 0, prog.as_raw_fd() as u32);
                bpf::put32(&mut attr, 8, frame.len() as u32);
                bpf::put64(&mut attr, 16, frame.as_ptr() as u64);
                bpf::put32(&mut attr, 32, CHUNK);
                bpf::put32(&mut attr, 40, std::mem::size_of_val(&ctx) as u32);
                bpf::put64(&mut attr, 48, ctx.as_ptr() as u64);
                bpf::put32(&mut attr, 64, BPF_F_TEST_XDP_LIVE_FRAMES);
                bpf::bpf(bpf::BPF_PROG_TEST_RUN, &mut attr).context("XDP live frames")?;
                sent += CHUNK as u64;
            }
            Ok((sent, started.elapsed()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    })
}

fn pin(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

fn pin_self(cpu: usize) -> Result<()> {
    pin(0, cpu)
}

/// The kernel threads running NAPI (`napi/DEV-ID`), by PID.
fn napi_threads() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm"))
            && comm.starts_with("napi/")
        {
            out.insert(pid);
        }
    }
    out
}

/// Gives `dev` in `ns` threaded NAPI (GRO on, which XDP_TX into a veth needs) on the core
/// under test.
fn threaded_napi(ns: &NetNs, dev: &str) -> Result<()> {
    ns.exec("ethtool", &["-K", dev, "gro", "off"])?;
    ns.exec("ethtool", &["-K", dev, "gro", "on"])?;
    let before = napi_threads();
    ns.exec("sh", &["-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")])?;
    let new: Vec<i32> = napi_threads().difference(&before).copied().collect();
    if new.is_empty() {
        bail!("{dev}: no NAPI thread appeared");
    }
    for pid in new {
        pin(pid, HYPERVISOR_CPU)?;
    }
    Ok(())
}

/// A counter of `dev` in `ns` (`/sys/class/net/DEV/statistics/NAME`).
fn link_stat(ns: &NetNs, dev: &str, name: &str) -> Result<u64> {
    let out = ns.exec("cat", &[&format!("/sys/class/net/{dev}/statistics/{name}")])?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("{dev}'s {name}"))
}

/// `Ip.InDelivers` of `ns`.
fn delivered(ns: &NetNs) -> Result<u64> {
    let out = ns.exec("cat", &["/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().context("Ip: header")?, ip.next().context("Ip: values")?);
    let i = names
        .split_whitespace()
        .position(|n| n == "InDelivers")
        .context("InDelivers")?;
    values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .context("InDelivers value")
}

/// The topology for one variant, with its daemon if it has one.
struct Bed {
    daemon: Option<Daemon>,
    topo: Topology,
}

impl Bed {
    fn new() -> Result<Bed> {
        let topo = Topology::new(&[(topology::vm_mac(1), Some(vm_addr()))]).context("topology")?;
        // Room for the fillers' VM addresses: the same gateway, a /16.
        let (hv, vm) = (&topo.hv, &topo.vms[0].ns);
        hv.ip(&["addr", "del", &format!("{BRIDGE_ADDR}/24"), "dev", BRIDGE_IF])?;
        hv.ip(&["addr", "add", &format!("{BRIDGE_ADDR}/16"), "dev", BRIDGE_IF])?;
        // Bridged frames are not filtered by iptables (nothing here is), if the module is in.
        let _ = hv.sysctl("net.bridge.bridge-nf-call-iptables", "0");
        // The receivers answer nothing: UDP to a closed port, with ICMP errors rate-limited
        // away.
        for ns in [&topo.outside, vm] {
            ns.sysctl("net.ipv4.icmp_msgs_per_sec", "0")?;
        }
        threaded_napi(hv, EXT_IF)?;
        threaded_napi(hv, &topo.vms[0].port)?;
        // The receiver is a tester's port, not a user's VM: GRO on gives its veth end the NAPI
        // that redirected frames need (the daemon runs with --fast-path-veth to match).
        vm.exec("ethtool", &["-K", VM_IF, "gro", "on"])?;
        Ok(Bed { daemon: None, topo })
    }

    fn routing(&self) -> Result<()> {
        // The outside reaches the VM subnet through the hypervisor.
        self.topo
            .outside
            .ip(&["route", "add", "192.168.0.0/16", "via", &EXT_ADDR.to_string()])?;
        Ok(())
    }

    /// DNAT/SNAT rules, one pair per binding, through `restore` (iptables-legacy-restore or
    /// iptables-nft-restore).
    fn iptables(&self, n: u32, restore: &str) -> Result<()> {
        let mut text = String::from("*nat\n");
        let mut rule = |eip: Ipv4Addr, vm: Ipv4Addr| {
            let _ = writeln!(text, "-A PREROUTING -d {eip}/32 -j DNAT --to-destination {vm}");
            let _ = writeln!(text, "-A POSTROUTING -s {vm}/32 -j SNAT --to-source {eip}");
        };
        for i in 0..n.saturating_sub(1) {
            let (e, v) = filler(i);
            rule(e, v);
        }
        rule(EIP, vm_addr());
        text += "COMMIT\n";
        feed(&self.topo.hv, restore, &[], &text)
    }

    fn nft(&self, n: u32) -> Result<()> {
        let mut dnat = Vec::new();
        let mut snat = Vec::new();
        for i in 0..n.saturating_sub(1) {
            let (e, v) = filler(i);
            dnat.push(format!("{e} : {v}"));
            snat.push(format!("{v} : {e}"));
        }
        dnat.push(format!("{EIP} : {}", vm_addr()));
        snat.push(format!("{} : {EIP}", vm_addr()));
        let text = format!(
            "table ip eipbench {{
  map to_vm {{ type ipv4_addr : ipv4_addr; elements = {{ {} }} }}
  map to_eip {{ type ipv4_addr : ipv4_addr; elements = {{ {} }} }}
  chain pre {{ type nat hook prerouting priority dstnat; dnat to ip daddr map @to_vm; }}
  chain post {{ type nat hook postrouting priority srcnat; snat to ip saddr map @to_eip; }}
}}
",
            dnat.join(", "),
            snat.join(", ")
        );
        feed(&self.topo.hv, "nft", &["-f", "-"], &text)
    }

    /// Starts the daemon (reservations for the VM and the fillers) and binds `n` EIPs, the
    /// measured one last; or, when it runs, restarts it as `kind` says and keeps its state.
    fn eip(&mut self, bin: &Path, n: u32, kind: Kind) -> Result<()> {
        let (inst, fresh) = match self.daemon.take() {
            Some(d) => (d.stop()?, false),
            None => (Instance::new(bin, &self.topo.hv)?, true),
        };
        let mut hosts = format!(
            "{},vm1,{}\n",
            eip_user::model::fmt_mac(topology::vm_mac(1)),
            vm_addr()
        );
        for i in 0..n.saturating_sub(1) {
            let _ = writeln!(hosts, "{},f{i},{}", filler_mac(i), filler(i).1);
        }
        let mut args = vec![
            "--ext",
            EXT_IF,
            "--bridge",
            BRIDGE_IF,
            "--pool",
            topology::POOL,
            "--pool",
            "198.18.0.0/15",
            "--no-dhcp",
            // XDP, as on a NIC (on the external veth the default would be the TC ingress);
            // or TC, after the receiving NIC's GRO.
            "--ingress",
            if kind == Kind::EipTc { "tc" } else { "xdp" },
        ];
        args.push(if kind == Kind::EipFallback {
            "--no-fast-path"
        } else {
            "--fast-path-veth"
        });
        if kind == Kind::EipBridge {
            args.push("--no-port-fast-path");
        }
        let daemon = Daemon::start(inst, &hosts, &args, "warn", Duration::from_secs(60))?;
        if fresh {
            for i in 0..n.saturating_sub(1) {
                daemon.bind(filler(i).0, &filler_mac(i), false)?;
            }
            daemon.bind(EIP, "vm1", false)?;
        }
        if matches!(kind, Kind::EipFast | Kind::EipTc) {
            // The bridge learns the VM's port from its first packet; the daemon puts its
            // program there within 2 s.
            let vm = &self.topo.vms[0].ns;
            let deadline = Instant::now() + Duration::from_secs(10);
            while daemon.port_programs()?.is_empty() {
                if Instant::now() > deadline {
                    bail!("no program on the VM's bridge port after 10 s");
                }
                let _ = vm.exec("ping", &["-c", "1", "-W", "1", &OUTSIDE_ADDR.to_string()]);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        self.daemon = Some(daemon);
        Ok(())
    }

    /// The daemon's dataplane counter `name` (0 without a daemon).
    fn counter(&self, name: &str) -> Result<u64> {
        self.daemon.as_ref().map_or(Ok(0), |d| d.counter(name))
    }

    fn stop(mut self) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop()?;
        }
        Ok(())
    }
}

fn feed(ns: &NetNs, program: &str, args: &[&str], input: &str) -> Result<()> {
    crate::control::feed(ns.command(program).args(args), input)
}

/// One UDP run: frames per second delivered at the receiver (or dropped by its sink), and the
/// generator's rate.
struct Udp {
    delivered_pps: f64,
    sent_pps: f64,
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;

/// The tester's receiving port of the XDP sink rows, which counts and discards as RFC 2544's
/// tester does: a program that drops every frame, on the receiving veth. Its NAPI runs in
/// softirq where the hypervisor's transmit wakes it, on the core under test. (A thread of
/// its own on the tester's core, above the generator, was tried: over 7 alternated rounds it
/// moved no variant by more than this machine's noise, and it made the core under test wake
/// that thread whenever the sink had emptied its ring, which a slower variant does more
/// often.) Detached when dropped.
struct Sink<'a> {
    ns: &'a NetNs,
    dev: &'a str,
    _link: std::os::fd::OwnedFd,
}

impl<'a> Sink<'a> {
    fn attach(ns: &'a NetNs, dev: &'a str) -> Result<Self> {
        Ok(Sink {
            ns,
            dev,
            _link: drop_all(ns, dev)?,
        })
    }

    /// Frames dropped by the sink's program (the driver's `xdp_drops`, every queue).
    fn sunk(&self) -> Result<u64> {
        let out = self.ns.exec("ethtool", &["-S", self.dev])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().split_once(": "))
            .filter(|(k, _)| k.ends_with("xdp_drops"))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum())
    }

    /// Frames that reached the sink's veth and found its ring full.
    fn refused(&self) -> Result<u64> {
        link_stat(self.ns, self.dev, "rx_dropped")
    }
}

/// Attaches a program that drops every frame to `dev` in `ns` (the link lives as long as the
/// returned descriptor).
fn drop_all(ns: &NetNs, dev: &str) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    const XDP_DROP: i32 = 1;
    let prog = bpf::load(bpf::PROG_TYPE_XDP, &[bpf::mov_r0(XDP_DROP), bpf::EXIT])?;
    let ifindex = ns.ifindex(dev)?;
    let name = ns.name().to_owned();
    std::thread::scope(|s| {
        s.spawn(move || -> Result<std::os::fd::OwnedFd> {
            let _inside = eip_user::testing::netns::enter_by_name(&name)?;
            let mut attr = [0u8; 128];
            bpf::put32(&mut attr, 0, prog.as_raw_fd() as u32);
            bpf::put32(&mut attr, 4, ifindex);
            bpf::put32(&mut attr, 8, BPF_XDP);
            let fd = bpf::bpf(BPF_LINK_CREATE, &mut attr).context("attach the XDP sink")?;
            // SAFETY: the kernel just returned this descriptor to us.
            Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the sink thread panicked"))?
    })
}

/// `perf record` of both CPUs for the run, when `EIP_BENCH_PROFILE` names a directory.
fn profile(
    kind: Kind,
    ingress: bool,
    new_flows: bool,
    sink: bool,
    how_long: Duration,
) -> Result<Option<Background>> {
    let Some(dir) = std::env::var_os("EIP_BENCH_PROFILE") else {
        return Ok(None);
    };
    let name: String = format!(
        "{}-{}-{}{}",
        kind.name(),
        if ingress { "in" } else { "out" },
        if new_flows { "new" } else { "one" },
        if sink { "-sink" } else { "" }
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '_'
        }
    })
    .collect();
    let out = Path::new(&dir).join(format!("{name}.data"));
    let mut c = Command::new("perf");
    c.args(["record", "-a", "-g", "-q", "-o"])
        .arg(&out)
        .args(["--", "sleep", &format!("{:.1}", how_long.as_secs_f64())])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(Some(Background::spawn(c, "perf record")?))
}

fn udp(
    bed: &Bed,
    kind: Kind,
    ingress: bool,
    new_flows: bool,
    how_long: Duration,
    into_sink: bool,
) -> Result<Udp> {
    let t = &bed.topo;
    let vm = &t.vms[0].ns;
    // The sender and its veth, the receiver and its veth, the hypervisor's veth toward the
    // receiver, the frame.
    let (sender, dev, receiver, receiver_dev, hv_dev, f) = if ingress {
        let dst = if kind == Kind::Routing { vm_addr() } else { EIP };
        let f = frame(t.hv.mac(EXT_IF)?, t.outside.mac(WAN_IF)?, OUTSIDE_ADDR, dst);
        (&t.outside, WAN_IF, vm, VM_IF, t.vms[0].port.as_str(), f)
    } else {
        let f = frame(t.hv.mac(BRIDGE_IF)?, topology::vm_mac(1), vm_addr(), OUTSIDE_ADDR);
        (vm, VM_IF, &t.outside, WAN_IF, EXT_IF, f)
    };
    // The receiver's and the generator's neighbours: a first frame through the normal path.
    let warm = if ingress {
        (&t.outside, if kind == Kind::Routing { vm_addr() } else { EIP })
    } else {
        (vm, OUTSIDE_ADDR)
    };
    let _ = warm.0.exec("ping", &["-c", "1", "-W", "1", &warm.1.to_string()]);
    let ifindex = sender.ifindex(dev)?;
    // After the warm-up: a sink answers no ARP.
    let sink = if into_sink {
        Some(Sink::attach(receiver, receiver_dev)?)
    } else {
        None
    };
    let count = || match &sink {
        Some(s) => s.sunk(),
        None => delivered(receiver),
    };
    // Frames the sink's veth refused (its ring full), as each end counts them.
    let refused = || -> Result<(u64, u64)> {
        match &sink {
            Some(s) => Ok((s.refused()?, link_stat(&t.hv, hv_dev, "tx_dropped")?)),
            None => Ok((0, 0)),
        }
    };
    let before = count()?;
    let refused_before = refused()?;
    let profile = profile(kind, ingress, new_flows, into_sink, how_long)?;
    let (sent, took) = send(sender, ifindex, &f, new_flows, how_long)?;
    if let Some(mut p) = profile {
        // It ends by itself with its `sleep`; bounded in any case.
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if p.try_wait()?.is_none() {
            let _ = p.interrupt_and_wait(Duration::from_secs(10));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let got = count()? - before;
    let refused_after = refused()?;
    drop(sink);
    // A tester's port that could not keep up would make this its own figure, not the
    // hypervisor's.
    let lost = (refused_after.0.saturating_sub(refused_before.0))
        .max(refused_after.1.saturating_sub(refused_before.1));
    // Nor may the generator be: it offers more than the hypervisor forwards, or the figure
    // is the generator's.
    if (sent as f64) < 1.2 * got as f64 {
        bail!(
            "{}: the generator sent {sent} frames and {got} arrived: the generator, not the \
             hypervisor, was the limit",
            kind.name()
        );
    }
    if lost > got / 100 {
        bail!(
            "{}: the sink's veth refused {lost} frames beside the {got} it took: the tester, not \
             the hypervisor, was the limit",
            kind.name()
        );
    }
    if std::env::var_os("EIP_BENCH_DEBUG").is_some() {
        for ns in [&t.hv, receiver, sender] {
            let o = ns.ip(&["-s", "-s", "link"])?;
            eprintln!("--- {}\n{}", ns.name(), String::from_utf8_lossy(&o.stdout));
        }
        let ct = t.hv.exec("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"]);
        let ct = ct
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        eprintln!("sent {sent} delivered {got} conntrack entries {ct}");
    }
    Ok(Udp {
        delivered_pps: got as f64 / took.as_secs_f64(),
        sent_pps: sent as f64 / took.as_secs_f64(),
    })
}

/// One iperf3 run: the receiver's goodput in Gbit/s. `wire`: the sender's TSO and GSO off,
/// so it sends segments of the MTU, as frames come from a physical NIC.
fn tcp(bed: &Bed, kind: Kind, ingress: bool, secs: u32, wire: bool) -> Result<f64> {
    let t = &bed.topo;
    let vm = &t.vms[0].ns;
    let (server, client, client_dev, to) = if ingress {
        let to = if kind == Kind::Routing { vm_addr() } else { EIP };
        (vm, &t.outside, WAN_IF, to)
    } else {
        (&t.outside, vm, VM_IF, OUTSIDE_ADDR)
    };
    let offloads = if wire { "off" } else { "on" };
    // The tester's sending port (not a user's VM: the bench's VM is the tester's).
    client.exec("ethtool", &["-K", client_dev, "tso", offloads, "gso", offloads])?;
    let goodput = iperf3(server, client, to, secs);
    client.exec("ethtool", &["-K", client_dev, "tso", "on", "gso", "on"])?;
    goodput
}

fn iperf3(server: &NetNs, client: &NetNs, to: Ipv4Addr, secs: u32) -> Result<f64> {
    let mut srv = server.command("iperf3");
    srv.args(["-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let srv = Background::spawn(srv, "iperf3 server")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("timeout")
        .args([
            &(secs + 15).to_string(),
            "ip",
            "netns",
            "exec",
            client.name(),
            "iperf3",
            "-c",
        ])
        .arg(to.to_string())
        .args(["-p", "5201", "-t", &secs.to_string(), "-J"])
        .stdin(Stdio::null())
        .output()?;
    let _ = srv.terminate_and_wait(Duration::from_secs(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3's JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 to {to}: {e}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3: no sum_received")
}

/// The median of `plan.reps` UDP runs, and how many there were.
fn udp_median(
    bed: &Bed,
    kind: Kind,
    ingress: bool,
    new_flows: bool,
    plan: &Plan,
    sink: bool,
) -> Result<(Udp, usize)> {
    let mut runs = Vec::new();
    for _ in 0..plan.reps.max(1) {
        runs.push(udp(bed, kind, ingress, new_flows, plan.udp, sink)?);
    }
    runs.sort_by(|a, b| a.delivered_pps.total_cmp(&b.delivered_pps));
    let n = runs.len();
    Ok((runs.swap_remove(n / 2), n))
}

/// A UDP run's figures: what arrived (as `metric`) and what the generator sent.
fn push_udp(out: &mut Vec<Figure>, variant: &str, bindings: Option<u64>, metric: &str, r: &Udp) {
    for (metric, pps) in [(metric, r.delivered_pps), ("sent (generator)", r.sent_pps)] {
        out.push(Figure::new(
            "throughput",
            variant,
            bindings,
            metric,
            pps / 1e3,
            "kpps",
        ));
    }
}

/// Every measurement of one variant at `n` bindings.
fn measure(bed: &Bed, kind: Kind, n: Option<u32>, plan: &Plan, out: &mut Vec<Figure>) -> Result<()> {
    let bindings = n.map(u64::from);
    // Taking the VMs' traffic at their ports changes nothing on the way in.
    let directions: &[bool] = if kind == Kind::EipBridge {
        &[false]
    } else {
        &[true, false]
    };
    for &ingress in directions {
        let dir = if ingress { "outside to VM" } else { "VM to outside" };
        for new_flows in [false, true] {
            let flows = if new_flows {
                "new flow per packet"
            } else {
                "one flow"
            };
            let (fast, fallback) = if ingress {
                ("ingress_fast_path", "ingress_fallback")
            } else {
                ("egress_fast_path", "egress_fallback")
            };
            let at_port = "egress_at_port";
            let (f0, b0, p0) = (bed.counter(fast)?, bed.counter(fallback)?, bed.counter(at_port)?);
            let (r, reps) = udp_median(bed, kind, ingress, new_flows, plan, false)?;
            // The variant took the path it names: a figure from the other path would mislead.
            let (f1, b1, p1) = (
                bed.counter(fast)? - f0,
                bed.counter(fallback)? - b0,
                bed.counter(at_port)? - p0,
            );
            let half = (r.delivered_pps * plan.udp.as_secs_f64() / 2.0) as u64 * reps as u64;
            match kind {
                Kind::EipFast | Kind::EipTc | Kind::EipBridge if f1 < half => {
                    bail!("{dir}: {f1} fast-path packets, {b1} fallback")
                }
                Kind::EipFast | Kind::EipTc if !ingress && p1 < half => {
                    bail!("{dir}: {p1} of {f1} fast-path packets taken at the port")
                }
                Kind::EipBridge if p1 > 0 => {
                    bail!("{dir}: {p1} packets taken at the port with --no-port-fast-path")
                }
                Kind::EipFallback if b1 < half || f1 > 0 => {
                    bail!("{dir}: {f1} fast-path packets, {b1} fallback")
                }
                _ => {}
            }
            let variant = format!("{}: UDP 64 B, {dir}, {flows}", kind.name());
            push_udp(out, &variant, bindings, "delivered", &r);
        }
        // The hypervisor alone: one flow into the sink.
        let (r, _) = udp_median(bed, kind, ingress, false, plan, true)?;
        let variant = format!("{}: UDP 64 B, {dir}, one flow, XDP sink", kind.name());
        push_udp(out, &variant, bindings, "forwarded", &r);
        for (wire, how) in [(true, "wire-size segments"), (false, "GSO super-frames")] {
            // One stream's goodput swings by a fifth from run to run: the median of as many
            // runs as the UDP figures take.
            let mut runs = Vec::new();
            for _ in 0..plan.reps.max(1) {
                runs.push(tcp(bed, kind, ingress, plan.tcp_secs, wire)?);
            }
            runs.sort_by(f64::total_cmp);
            let gbps = runs[runs.len() / 2];
            out.push(Figure::new(
                "throughput",
                &format!("{}: TCP (iperf3), {dir}, {how}", kind.name()),
                bindings,
                "goodput",
                gbps,
                "Gbit/s",
            ));
        }
    }
    Ok(())
}

/// Runs the throughput family. `bin` is the `eip` binary.
pub fn run(bin: &Path, plan: &Plan, say: &dyn Fn(&str)) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for &n in &plan.sizes {
        say(&format!("throughput: iptables-legacy, {n} bindings"));
        let bed = Bed::new()?;
        bed.iptables(n, "iptables-legacy-restore")?;
        measure(&bed, Kind::Iptables, Some(n), plan, &mut out)?;
        bed.stop()?;

        say(&format!("throughput: iptables-nft, {n} bindings"));
        let bed = Bed::new()?;
        bed.iptables(n, "iptables-nft-restore")?;
        measure(&bed, Kind::IptablesNft, Some(n), plan, &mut out)?;
        bed.stop()?;

        say(&format!("throughput: nftables, {n} bindings"));
        let bed = Bed::new()?;
        bed.nft(n)?;
        measure(&bed, Kind::Nft, Some(n), plan, &mut out)?;
        bed.stop()?;

        // Plain routing does not depend on N: it is measured again at every size, right
        // before eip, so that eip's ratio to it comes from the same minutes (this VM drifts).
        say(&format!("throughput: plain routing, beside {n} bindings"));
        let bed = Bed::new()?;
        bed.routing()?;
        measure(&bed, Kind::Routing, Some(n), plan, &mut out)?;
        bed.stop()?;

        say(&format!("throughput: eip, {n} bindings"));
        let mut bed = Bed::new()?;
        for kind in EIP_KINDS {
            bed.eip(bin, n, kind)?;
            measure(&bed, kind, Some(n), plan, &mut out)?;
        }
        bed.stop()?;
    }
    Ok(ratios(out))
}

/// Each kernel NAT's figure against plain routing's in the same direction and flow shape, and
/// eip's against the best kernel NAT's at the same size.
fn ratios(mut out: Vec<Figure>) -> Vec<Figure> {
    let value = |fs: &[Figure], variant: &str, bindings: Option<u64>, metric: &str| {
        fs.iter()
            .find(|f| f.variant == variant && f.bindings == bindings && f.metric == metric)
            .map(|f| f.value)
    };
    let snapshot = out.clone();
    for f in out.iter_mut() {
        let Some((kind, rest)) = f.variant.split_once(": ") else {
            continue;
        };
        let kernel_nat = [Kind::Iptables, Kind::IptablesNft, Kind::Nft];
        if EIP_KINDS.iter().any(|k| k.name() == kind) {
            // Against the best of the kernel's NATs at the same size, in this run.
            let best = kernel_nat
                .iter()
                .filter_map(|k| {
                    let base = format!("{}: {rest}", k.name());
                    value(&snapshot, &base, f.bindings, &f.metric).map(|v| (base, v))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((base, v)) = best {
                *f = f.clone().against(&base, v);
            }
        } else if kernel_nat.iter().any(|k| k.name() == kind) {
            let base = format!("{}: {rest}", Kind::Routing.name());
            if let Some(v) = value(&snapshot, &base, f.bindings, &f.metric) {
                *f = f.clone().against(&base, v);
            }
        }
    }
    out
}
