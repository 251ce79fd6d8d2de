//! iperf3 between namespaces, for the limits' tests and benchmark: a server for the length of
//! a guard, a bounded client, and the figures of its JSON report.

use std::{
    io,
    net::Ipv4Addr,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;

use super::{netns::NetNs, process::Background};

/// An iperf3 server in `ns` on `port`, until the guard drops.
pub fn server(ns: &NetNs, port: u16) -> io::Result<Background> {
    let mut c = ns.command("iperf3");
    c.args(["-s", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let s = Background::spawn(c, "iperf3 server")?;
    thread::sleep(Duration::from_millis(300));
    Ok(s)
}

/// An iperf3 client in `ns` to `to:port` for `secs` with `args` (`-R`: the client receives),
/// pinned to `cpu` if given, ended after `secs` + 20 s at most. Its JSON report.
pub fn client(
    ns: &NetNs,
    cpu: Option<u32>,
    to: Ipv4Addr,
    port: u16,
    secs: u32,
    args: &[&str],
) -> io::Result<Value> {
    let mut c = Command::new("timeout");
    c.arg((secs + 20).to_string());
    if let Some(cpu) = cpu {
        c.args(["taskset", "-c", &cpu.to_string()]);
    }
    let out = c
        .args(["ip", "netns", "exec", ns.name(), "iperf3", "-J", "-c"])
        .arg(to.to_string())
        .args(["-p", &port.to_string(), "-t", &secs.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        io::Error::other(format!(
            "iperf3's JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })?;
    match v["error"].as_str() {
        Some(e) => Err(io::Error::other(format!("iperf3 to {to}:{port}: {e}"))),
        None => Ok(v),
    }
}

fn number(v: &Value, what: &str) -> io::Result<f64> {
    v.as_f64()
        .ok_or_else(|| io::Error::other(format!("iperf3's report has no {what}")))
}

/// The receiver's goodput of a TCP run, bits per second.
pub fn goodput(v: &Value) -> io::Result<f64> {
    number(&v["end"]["sum_received"]["bits_per_second"], "sum_received")
}

/// The run's seconds as its client measured them (the receiver's, with `-R`), bits per
/// second.
pub fn seconds(v: &Value) -> io::Result<Vec<f64>> {
    v["intervals"]
        .as_array()
        .ok_or_else(|| io::Error::other("iperf3's report has no intervals"))?
        .iter()
        .map(|i| number(&i["sum"]["bits_per_second"], "interval"))
        .collect()
}

/// What a UDP run delivered, bits per second: the bytes sent less the share lost.
pub fn udp_delivered(v: &Value) -> io::Result<f64> {
    let s = &v["end"]["sum"];
    let bytes = number(&s["bytes"], "bytes")?;
    let lost = number(&s["lost_packets"], "lost_packets")?;
    let packets = number(&s["packets"], "packets")?;
    let secs = number(&s["seconds"], "seconds")?;
    let delivered = if packets > 0.0 {
        bytes * (1.0 - lost / packets)
    } else {
        0.0
    };
    Ok(delivered * 8.0 / secs)
}
