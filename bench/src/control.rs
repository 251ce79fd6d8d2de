//! The control plane: what one more binding costs when many are already in place, and what
//! many cost in bulk, for eip and for the kernel NAT peers.
//!
//! - eip: the real daemon (`eip daemon`, its store, the binding maps and the /32 alias) in a
//!   namespace of its own. One bind is timed through the API (a request on the Unix socket,
//!   what an orchestrator sends) and through the CLI (`eip bind`, a process per binding).
//! - iptables (legacy, as the shared-IP setup eip replaces does it): a binding is a DNAT rule and an SNAT rule,
//!   added with two `iptables -A`; in bulk, one `iptables-restore` of all the rules.
//! - nftables: a binding is an element in a DNAT map and one in an SNAT map, added with one
//!   `nft` call; in bulk, one `nft -f` of all the elements.
//!
//! Bindings use the benchmarking range 198.18.0.0/15 (RFC 2544) for EIPs and 10.64.0.0/14 for
//! VMs, inside the namespaces only.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use eip_user::testing::{
    daemon::Instance,
    netns::{self, NetNs},
};

use crate::{daemon::Daemon, figures::Figure};

/// The EIP of binding `i`.
pub fn eip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 1 + i)
}

/// The VM address of binding `i`.
pub fn vm(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + 2 + i)
}

/// The VM MAC of binding `i`.
pub fn vm_mac(i: u32) -> String {
    let b = i.to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

const POOL: &str = "198.18.0.0/15";
const BRIDGE_ADDR: &str = "10.64.0.1/14";

/// What one run measures.
pub struct Plan {
    /// The numbers of bindings in place when single bindings are timed.
    pub sizes: Vec<u32>,
    /// Single bindings timed at each size, per variant.
    pub samples: u32,
    /// Of those, through a process each (`eip bind`, `iptables -A`): these cost milliseconds.
    pub process_samples: u32,
    /// The bulk figure's size.
    pub bulk: u32,
    /// The numbers of bindings at which the daemon's resident set is read.
    pub rss: Vec<u32>,
}

/// Latency percentiles of `samples` (seconds), nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Latencies {
    variant: String,
    bindings: u32,
    ms: Vec<f64>,
}

impl Latencies {
    fn new(variant: &str, bindings: u32) -> Self {
        Latencies {
            variant: variant.into(),
            bindings,
            ms: Vec::new(),
        }
    }

    fn time<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f()?;
        self.ms.push(t.elapsed().as_secs_f64() * 1e3);
        Ok(r)
    }

    /// p50 and p99, each against the same percentile of `baseline` when given.
    fn figures(mut self, baseline: Option<&Latencies>) -> Vec<Figure> {
        self.ms.sort_by(f64::total_cmp);
        let mut out = Vec::new();
        for (metric, p) in [("bind p50", 50.0), ("bind p99", 99.0)] {
            let mut f = Figure::new(
                "control",
                &format!("{} (n={})", self.variant, self.ms.len()),
                Some(self.bindings as u64),
                metric,
                percentile(&self.ms, p),
                "ms",
            );
            if let Some(b) = baseline {
                let mut v = b.ms.clone();
                v.sort_by(f64::total_cmp);
                f = f.against(&b.variant, percentile(&v, p));
            }
            out.push(f);
        }
        out
    }
}

/// A namespace with the interfaces the daemon needs: an external veth and a bridge whose
/// address (10.64.0.1/14) gives the private subnet.
pub(crate) fn hypervisor() -> Result<NetNs> {
    let hv = NetNs::new("eipbc").context("namespace")?;
    hv.ip(&["link", "add", "ext0", "type", "veth", "peer", "name", "wan0"])?;
    hv.ip(&["link", "add", "br0", "type", "bridge"])?;
    hv.ip(&["addr", "add", "198.51.100.1/24", "dev", "ext0"])?;
    hv.ip(&["addr", "add", BRIDGE_ADDR, "dev", "br0"])?;
    for dev in ["ext0", "wan0", "br0"] {
        hv.ip(&["link", "set", dev, "up"])?;
    }
    Ok(hv)
}

/// Runs `cmd` to completion and fails with its stderr unless it succeeds.
fn check(cmd: &mut Command) -> Result<()> {
    netns::check(cmd)?;
    Ok(())
}

/// Feeds `input` to `cmd` on stdin and fails unless it succeeds.
pub(crate) fn feed(cmd: &mut Command, input: &str) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {cmd:?}"))?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The eip daemon with `hosts` reservations, and how many of them are bound.
struct Eip {
    daemon: Daemon,
    bound: u32,
}

impl Eip {
    fn start(bin: &Path, hv: &NetNs, hosts: u32, capacity: u32) -> Result<Eip> {
        let inst = Instance::new(bin, hv).context("daemon instance")?;
        let mut text = String::with_capacity(hosts as usize * 40);
        for i in 0..hosts {
            let _ = writeln!(text, "{},vm{i},{}", vm_mac(i), vm(i));
        }
        let capacity = capacity.to_string();
        let args = [
            "--ext",
            "ext0",
            "--bridge",
            "br0",
            "--pool",
            POOL,
            "--max-bindings",
            &capacity,
            "--max-vms",
            &capacity,
            "--no-dhcp",
        ];
        let daemon = Daemon::start(inst, &text, &args, "info", Duration::from_secs(300))?;
        Ok(Eip { daemon, bound: 0 })
    }

    fn bind(&self, i: u32) -> Result<()> {
        self.daemon.bind(eip(i), &vm_mac(i), true)
    }

    fn release(&self, i: u32) -> Result<()> {
        self.daemon.release(eip(i))
    }

    /// Binds `from..to` one request after another; returns the wall time.
    fn bind_range(&mut self, from: u32, to: u32) -> Result<Duration> {
        let t = Instant::now();
        for i in from..to {
            self.bind(i)?;
        }
        self.bound = self.bound.max(to);
        Ok(t.elapsed())
    }
}

/// The rules of binding `i`, as `iptables-restore` lines (without the `-A` command's name).
fn iptables_rules(i: u32) -> [String; 2] {
    [
        format!("PREROUTING -d {}/32 -j DNAT --to-destination {}", eip(i), vm(i)),
        format!("POSTROUTING -s {}/32 -j SNAT --to-source {}", vm(i), eip(i)),
    ]
}

fn iptables_restore(hv: &NetNs, from: u32, to: u32) -> Result<Duration> {
    let mut text = String::from("*nat\n");
    for i in from..to {
        for r in iptables_rules(i) {
            let _ = writeln!(text, "-A {r}");
        }
    }
    text += "COMMIT\n";
    let t = Instant::now();
    feed(
        Command::new("ip").args(["netns", "exec", hv.name(), "iptables-legacy-restore", "--noflush"]),
        &text,
    )?;
    Ok(t.elapsed())
}

fn iptables_add(hv: &NetNs, i: u32) -> Result<()> {
    for r in iptables_rules(i) {
        let mut c = hv.command("iptables-legacy");
        c.args(["-t", "nat", "-A"]).args(r.split(' '));
        check(&mut c)?;
    }
    Ok(())
}

const NFT_TABLE: &str = "table ip eipbench {
  map to_vm { type ipv4_addr : ipv4_addr; }
  map to_eip { type ipv4_addr : ipv4_addr; }
  chain pre { type nat hook prerouting priority dstnat; dnat to ip daddr map @to_vm; }
  chain post { type nat hook postrouting priority srcnat; snat to ip saddr map @to_eip; }
}
";

fn nft_elements(from: u32, to: u32) -> String {
    let list = |f: &dyn Fn(u32) -> String| (from..to).map(f).collect::<Vec<_>>().join(", ");
    format!(
        "add element ip eipbench to_vm {{ {} }}\nadd element ip eipbench to_eip {{ {} }}\n",
        list(&|i| format!("{} : {}", eip(i), vm(i))),
        list(&|i| format!("{} : {}", vm(i), eip(i))),
    )
}

fn nft_file(hv: &NetNs, text: &str) -> Result<Duration> {
    let t = Instant::now();
    feed(
        Command::new("ip").args(["netns", "exec", hv.name(), "nft", "-f", "-"]),
        text,
    )?;
    Ok(t.elapsed())
}

fn nft_add(hv: &NetNs, i: u32) -> Result<()> {
    let mut c = hv.command("nft");
    c.arg(nft_elements(i, i + 1).replace('\n', ";"));
    check(&mut c)
}

/// The wall time (ms) of `n` bindings made in bulk by `variant`.
fn bulk(variant: &str, n: u32, ms: f64) -> Figure {
    Figure::new("control", variant, Some(n as u64), "bulk", ms, "ms")
}

/// Runs the control-plane family. `bin` is the `eip` binary.
pub fn run(bin: &Path, plan: &Plan, say: &dyn Fn(&str)) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    let largest = plan.sizes.iter().copied().max().unwrap_or(0);
    // The timed bindings sit above every size's fill.
    let probe = |k: u32| largest.max(plan.bulk) + k;
    let hosts = probe(plan.samples.max(plan.process_samples));

    // The peers first, each in a fresh namespace.
    let mut iptables = Vec::new();
    let mut nft = Vec::new();
    let restore = format!("iptables-restore, {} rules", 2 * plan.bulk);
    let restore_ms;
    {
        let hv = hypervisor()?;
        restore_ms = iptables_restore(&hv, 0, plan.bulk)?.as_secs_f64() * 1e3;
        out.push(bulk(&restore, plan.bulk, restore_ms));
        for &n in &plan.sizes {
            say(&format!("control: iptables -A at {n} bindings"));
            check(hv.command("iptables-legacy").args(["-t", "nat", "-F"]))?;
            iptables_restore(&hv, 0, n)?;
            let mut l = Latencies::new("iptables-legacy -A, 2 rules", n);
            for k in 0..plan.process_samples {
                l.time(|| iptables_add(&hv, probe(k)))?;
            }
            iptables.push(l);
        }
    }
    {
        let hv = hypervisor()?;
        nft_file(&hv, NFT_TABLE)?;
        let wall = nft_file(&hv, &nft_elements(0, plan.bulk))?;
        out.push(bulk(
            &format!("nft -f, 2 x {} map elements", plan.bulk),
            plan.bulk,
            wall.as_secs_f64() * 1e3,
        ));
        check(
            hv.command("nft")
                .args(["flush", "map", "ip", "eipbench", "to_vm"]),
        )?;
        check(
            hv.command("nft")
                .args(["flush", "map", "ip", "eipbench", "to_eip"]),
        )?;
        let mut filled = 0;
        for &n in &plan.sizes {
            say(&format!("control: nft add element at {n} bindings"));
            if n > filled {
                nft_file(&hv, &nft_elements(filled, n))?;
                filled = n;
            }
            let mut l = Latencies::new("nft add element, 2 maps", n);
            for k in 0..plan.samples {
                l.time(|| nft_add(&hv, probe(k)))?;
            }
            nft_file(
                &hv,
                &nft_elements(probe(0), probe(plan.samples)).replace("add element", "delete element"),
            )?;
            nft.push(l);
        }
    }

    say(&format!("control: eip daemon with {hosts} reservations"));
    let hv = hypervisor()?;
    let mut daemon = Eip::start(bin, &hv, hosts, hosts.max(65_536))?;
    // Every size something is measured at, in order; the bulk figure is the wall time of
    // the binds from none up to `plan.bulk`, without the pauses to read the RSS.
    let points: std::collections::BTreeSet<u32> = plan
        .sizes
        .iter()
        .chain(&plan.rss)
        .copied()
        .chain([0, plan.bulk])
        .collect();
    let mut bulk_time = Duration::ZERO;
    let rss_empty = daemon.daemon.rss_kb()?;
    for n in points {
        if n > daemon.bound {
            say(&format!("control: eip, binding up to {n}"));
            let wall = daemon.bind_range(daemon.bound, n)?;
            if n <= plan.bulk {
                bulk_time += wall;
            }
        }
        if n == plan.bulk {
            out.push(
                bulk(
                    &format!("eip bind x {} (API, one after another)", plan.bulk),
                    plan.bulk,
                    bulk_time.as_secs_f64() * 1e3,
                )
                .against(&restore, restore_ms),
            );
        }
        if plan.rss.contains(&n) {
            out.push(
                Figure::new(
                    "memory",
                    &format!("eip daemon RSS ({hosts} reservations)"),
                    Some(n as u64),
                    "RSS",
                    daemon.daemon.rss_kb()? as f64 / 1024.0,
                    "MiB",
                )
                .against("none bound", rss_empty as f64 / 1024.0),
            );
        }
        let Some(idx) = plan.sizes.iter().position(|&s| s == n) else {
            continue;
        };
        say(&format!("control: eip bind at {n} bindings"));
        let mut api = Latencies::new("eip bind (API)", n);
        for k in 0..plan.samples {
            api.time(|| daemon.bind(probe(k)))?;
        }
        for k in 0..plan.samples {
            daemon.release(probe(k))?;
        }
        let mut cli = Latencies::new("eip bind (CLI process)", n);
        for k in 0..plan.process_samples {
            let (a, m) = (eip(probe(k)).to_string(), vm_mac(probe(k)));
            cli.time(|| {
                let o = daemon.daemon.inst.cli(&["bind", &a, &m])?;
                if !o.status.success() {
                    bail!("eip bind {a} {m}: {}", String::from_utf8_lossy(&o.stderr).trim());
                }
                Ok(())
            })?;
        }
        for k in 0..plan.process_samples {
            daemon.release(probe(k))?;
        }
        out.extend(api.figures(Some(&nft[idx])));
        out.extend(cli.figures(Some(&iptables[idx])));
    }
    for l in iptables.into_iter().chain(nft) {
        out.extend(l.figures(None));
    }
    daemon.daemon.stop()?;
    Ok(out)
}
