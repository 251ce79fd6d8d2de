//! DHCP: leases per second and DISCOVER-to-ACK latency under load, with `perfdhcp` (Kea's
//! load generator) in a client namespace on the bridge, against eip's responder with a
//! dynamic range and, on the same kind of bridge, dnsmasq.
//!
//! perfdhcp offers `rate` new clients per second (random MACs out of 60,000) for `secs`
//! seconds; a lease is a completed exchange (an ACK received for a REQUEST). The latency is
//! perfdhcp's average DISCOVER-OFFER delay plus its average REQUEST-ACK delay.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context, Result, bail};
use eip_user::testing::{daemon::Instance, netns::NetNs, process::Background};

use crate::figures::Figure;

const RANGE: (&str, &str) = ("10.64.1.0", "10.64.250.255");

pub struct Plan {
    /// New clients offered per second.
    pub rate: u32,
    pub secs: u32,
}

/// A server namespace with ext0 and br0 (10.64.0.1/14) and a client namespace on one of the
/// bridge's ports.
struct Bed {
    client: NetNs,
    server: NetNs,
}

impl Bed {
    fn new() -> Result<Bed> {
        let server = crate::control::hypervisor()?;
        let client = NetNs::new("eipdc")?;
        server.veth("p0", "eth0", &client)?;
        server.ip(&["link", "set", "p0", "master", "br0"])?;
        server.ip(&["link", "set", "p0", "up"])?;
        // perfdhcp sends from an interface with an address.
        client.ip(&["addr", "add", "10.64.0.5/14", "dev", "eth0"])?;
        client.ip(&["link", "set", "eth0", "up"])?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Bed { client, server })
    }

    /// Runs perfdhcp to completion: leases per second and DISCOVER-to-ACK latency in ms.
    fn perfdhcp(&self, plan: &Plan) -> Result<(f64, f64)> {
        let out = self
            .client
            .command("timeout")
            .args([&(plan.secs + 30).to_string(), "perfdhcp", "-4", "-l", "eth0"])
            .args([
                "-r",
                &plan.rate.to_string(),
                "-R",
                "60000",
                "-p",
                &plan.secs.to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .context("run perfdhcp")?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse(&text, plan.secs).with_context(|| format!("perfdhcp said: {text}"))
    }
}

/// From perfdhcp's report: REQUEST-ACK received per second, and the two exchanges' average
/// delays added.
fn parse(text: &str, secs: u32) -> Result<(f64, f64)> {
    let section = |name: &str| -> Result<&str> {
        let start = text
            .find(&format!("***Statistics for: {name}***"))
            .with_context(|| format!("no {name} statistics"))?;
        let rest = &text[start + 1..];
        Ok(&rest[..rest.find("***Statistics for").unwrap_or(rest.len())])
    };
    let field = |sec: &str, key: &str| -> Result<f64> {
        sec.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("ms").trim().parse().ok())
            .with_context(|| format!("no {key:?}"))
    };
    let (do_, ra) = (section("DISCOVER-OFFER")?, section("REQUEST-ACK")?);
    let acks = field(ra, "received packets:")?;
    if acks == 0.0 {
        bail!("no lease was granted");
    }
    Ok((
        acks / secs as f64,
        field(do_, "avg delay:")? + field(ra, "avg delay:")?,
    ))
}

/// Runs the DHCP family. `bin` is the `eip` binary.
pub fn run(bin: &Path, plan: &Plan, say: &dyn Fn(&str)) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    let offered = format!("{}/s offered for {} s", plan.rate, plan.secs);

    say("dhcp: dnsmasq");
    let bed = Bed::new()?;
    let dir = tempdir("eipdm")?;
    let mut c = bed.server.command("dnsmasq");
    c.args([
        "--no-daemon",
        "--no-ping",
        "--port=0",
        "--interface=br0",
        "--bind-interfaces",
    ])
    .arg(format!("--dhcp-range={},{},12h", RANGE.0, RANGE.1))
    .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
    .arg(format!("--pid-file={}", dir.join("pid").display()))
    .arg("--dhcp-lease-max=100000")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let dnsmasq = Background::spawn(c, "dnsmasq")?;
    std::thread::sleep(Duration::from_millis(500));
    let peer = bed.perfdhcp(plan);
    let _ = dnsmasq.terminate_and_wait(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    let (peer_rate, peer_ms) = peer.context("dnsmasq")?;
    drop(bed);

    say("dhcp: eip");
    let bed = Bed::new()?;
    let inst = Instance::new(bin, &bed.server)?;
    let range = format!("{}-{}", RANGE.0, RANGE.1);
    let daemon = inst.start_logging(
        &[
            "--ext",
            "ext0",
            "--bridge",
            "br0",
            "--pool",
            "203.0.113.0/24",
            "--dhcp-range",
            &range,
            "--max-vms",
            "131072",
        ],
        "warn",
        Duration::from_secs(60),
    )?;
    let ours = bed.perfdhcp(plan);
    let status = daemon.terminate_and_wait(Duration::from_secs(30))?;
    let (rate, ms) = ours.context("eip")?;
    if !status.success() {
        bail!("the daemon exited {status}: {}", inst.log_text());
    }

    out.push(
        Figure::new(
            "dhcp",
            &format!("eip responder ({offered})"),
            None,
            "leases/s",
            rate,
            "1/s",
        )
        .against("dnsmasq", peer_rate),
    );
    out.push(
        Figure::new(
            "dhcp",
            &format!("eip responder ({offered})"),
            None,
            "DISCOVER-ACK",
            ms,
            "ms",
        )
        .against("dnsmasq", peer_ms),
    );
    out.push(Figure::new(
        "dhcp",
        &format!("dnsmasq ({offered})"),
        None,
        "leases/s",
        peer_rate,
        "1/s",
    ));
    out.push(Figure::new(
        "dhcp",
        &format!("dnsmasq ({offered})"),
        None,
        "DISCOVER-ACK",
        peer_ms,
        "ms",
    ));
    Ok(out)
}

fn tempdir(prefix: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(eip_user::testing::netns::unique(prefix));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
