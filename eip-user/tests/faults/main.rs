//! The faults a hypervisor sees in a normal month, each on real interfaces in namespaces with
//! the real daemon, and around each a capture on the upstream side that fails the test if a
//! packet with a VM's private source address left the hypervisor.

#[path = "../common/mod.rs"]
mod common;

use std::{
    io::Write,
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{Lab, LeakWatch, counter, daemon_exits, eip, pings, wait_for};
use eip_common::maps::{Binding, MAP_DNAT, MAP_SNAT};
use eip_user::testing::{
    lab::daemon_args,
    process::{Background, Capture},
    topology::{OUTSIDE_ADDR, WAN_IF, vm_ip},
};

/// `n` VMs, 203.0.113.10 bound to vm1.
fn bound_lab(n: u8) -> Lab {
    let lab = Lab::new(n);
    lab.ok(&["bind", "203.0.113.10", "vm1"]);
    lab
}

/// A VM that keeps talking to the outside (5 pings a second for at most `secs`), so that a
/// fault that lets its private address out shows in the capture.
fn chatter(lab: &Lab, vm: u8, secs: u32) -> Background {
    let mut c = lab.vm(vm).command("ping");
    c.args(["-n", "-q", "-i", "0.2", "-w", &secs.to_string()])
        .arg(OUTSIDE_ADDR.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Background::spawn(c, "ping").expect("ping")
}

fn reservations(lab: &Lab) -> Vec<String> {
    let hosts: serde_json::Value = serde_json::from_str(&lab.ok(&["host", "list", "--json"])).unwrap();
    let mut names: Vec<String> = hosts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn bound(lab: &Lab) -> Vec<(Ipv4Addr, Option<Ipv4Addr>)> {
    lab.list().into_iter().map(|r| (r.eip, r.private)).collect()
}

mod api;
mod disk;
mod hosts_file;
mod instances;
mod interfaces;
mod leaks;
mod ports;
