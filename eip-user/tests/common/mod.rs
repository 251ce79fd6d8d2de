//! What the daemon's tests share: a hypervisor lab with the real daemon, and small probes.

#![allow(dead_code)]

use std::{net::Ipv4Addr, process::Output};

use eip_user::{
    api::EipRow,
    testing::{
        daemon::Instance,
        lab::daemon_args,
        netns::NetNs,
        process::{Background, Capture},
        topology::{vm_mac as mac, *},
    },
};

pub const BIN: &str = env!("CARGO_BIN_EXE_eip");

/// The outside host's own address.
pub const OUTSIDE: Ipv4Addr = OUTSIDE_ADDR;

pub fn eip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, last)
}

/// `n` VMs with static addresses (.11, .12, ...), a hosts file naming them vm1, vm2, ...,
/// and a started daemon.
pub struct Lab {
    pub daemon: Option<Background>,
    /// More daemon arguments for the next start.
    pub extra: Vec<&'static str>,
    pub inst: Instance,
    pub topo: Topology,
    pub hosts: std::path::PathBuf,
}

impl Lab {
    pub fn new(n: u8) -> Lab {
        Lab::with(n, &[])
    }

    /// As [`Lab::new`], with `extra` daemon arguments from the first start.
    pub fn with(n: u8, extra: &[&'static str]) -> Lab {
        Lab::with_ports(&vec![PortKind::Veth; usize::from(n)], extra)
    }

    /// A VM on a port of each kind of `kinds`, and `extra` daemon arguments.
    pub fn with_ports(kinds: &[PortKind], extra: &[&'static str]) -> Lab {
        let n = kinds.len() as u8;
        let vms: Vec<_> = (1..=n).map(|i| (mac(i), Some(vm_ip(i)))).collect();
        let topo = Topology::build_ports(Naming::Unique, &vms, kinds).expect("topology");
        let inst = Instance::new(std::path::Path::new(BIN), &topo.hv).expect("instance");
        let hosts = inst.dir.join("hosts");
        let text: String = (1..=n)
            .map(|i| format!("{},vm{i},{}\n", eip_user::model::fmt_mac(mac(i)), vm_ip(i)))
            .collect();
        std::fs::write(&hosts, format!("# test reservations\n{text}")).unwrap();
        let mut lab = Lab {
            daemon: None,
            extra: extra.to_vec(),
            inst,
            topo,
            hosts,
        };
        lab.start();
        lab
    }

    pub fn start(&mut self) {
        // Loopback is per namespace, so every lab can use the same metrics port.
        let mut owned = daemon_args(&self.hosts);
        // XDP, as on a NIC (the outside's checksums are complete, as from a wire): the path
        // production takes. The lab and the end-to-end test run the default (TC on a veth).
        owned.extend(["--metrics".into(), "127.0.0.1:9477".into()]);
        if !self.extra.contains(&"--ingress") {
            owned.extend(["--ingress".into(), "xdp".into()]);
        }
        let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
        args.extend(&self.extra);
        self.daemon = Some(self.inst.start(&args).expect("daemon"));
    }

    pub fn stop(&mut self) {
        self.inst.stop(self.daemon.take().expect("running"));
    }

    pub fn log(&self) -> String {
        self.inst.log_text()
    }

    /// Fails, showing the daemon's log, unless the log has `text`.
    #[track_caller]
    pub fn assert_logged(&self, text: &str) {
        let log = self.log();
        assert!(log.contains(text), "no {text:?} in the daemon's log:\n{log}");
    }

    /// `eip ARGS` as an unprivileged user (nobody) against this daemon's socket. Not in the
    /// namespace: setns needs the privileges this drops, and a socket is a path.
    pub fn cli_as_nobody(&self, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(BIN)
            .args(args)
            .env("EIP_SOCKET", self.inst.socket())
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run eip as nobody")
    }

    /// A request to the daemon's API (curl on its socket; `args` name the method, body and
    /// URL): the status code and the body, which is JSON, every error included.
    #[track_caller]
    pub fn api(&self, args: &[&str]) -> (u16, serde_json::Value) {
        let out = self
            .topo
            .hv
            .command("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(self.inst.socket())
            .args(args)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?} ({code})"));
        (code.trim().parse().expect("an HTTP status"), json)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.inst.cli(args).expect("run eip")
    }

    /// Runs the CLI and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.inst.ok(args)
    }

    pub fn list(&self) -> Vec<EipRow> {
        serde_json::from_str(&self.ok(&["list", "--json"])).expect("list --json")
    }

    /// The /32 addresses on the external interface.
    pub fn aliases(&self) -> Vec<Ipv4Addr> {
        self.topo.aliases().expect("ext0's addresses")
    }

    pub fn vm(&self, n: u8) -> &NetNs {
        &self.topo.vms[usize::from(n) - 1].ns
    }
}

/// Pings `addr` `count` times from `from`: whether any echo came back.
pub fn pings(from: &NetNs, addr: Ipv4Addr, count: u32) -> bool {
    from.command("ping")
        .args(["-n", "-q", "-c", &count.to_string(), "-i", "0.1", "-W", "1"])
        .arg(addr.to_string())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Echo requests from `src` in a capture.
pub fn echo_requests_from(capture: &str, src: Ipv4Addr) -> usize {
    capture
        .lines()
        .filter(|l| l.contains(&format!("{src} >")) && l.contains("ICMP echo request"))
        .count()
}

/// The dataplane counter `name`, from `eip stats`.
pub fn counter(lab: &Lab, name: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&lab.ok(&["stats", "--json"])).unwrap();
    stats["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c[0] == name)
        .map_or(0, |c| c[1].as_u64().unwrap())
}

/// Runs one more daemon on the lab's instance with `args` (its own log file); returns its
/// exit status and log, or panics if it is still running after 10 s.
pub fn daemon_exits(lab: &Lab, args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    let dir = lab.inst.dir.join("other");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    let mut c = lab.inst.command().unwrap();
    c.arg("daemon")
        .args(["--instance", &lab.inst.name])
        .args(args)
        .args(daemon_args(&lab.hosts))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut d = Background::spawn(c, "another eip daemon").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = d.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon kept running: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap())
}

/// The far host beyond the outside router, on a link of MTU 1300: 198.18.0.2, routed by the
/// hypervisor through the outside. Returns its namespace.
pub fn far_host(lab: &Lab) -> NetNs {
    let (hv, out) = (&lab.topo.hv, &lab.topo.outside);
    let far = NetNs::new("eipf").unwrap();
    out.veth("far0", "eth0", &far).unwrap();
    for (ns, dev, addr) in [(out, "far0", "198.18.0.1/24"), (&far, "eth0", "198.18.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", dev]).unwrap();
        ns.ip(&["link", "set", dev, "mtu", "1300", "up"]).unwrap();
    }
    far.ip(&["route", "add", "default", "via", "198.18.0.1"]).unwrap();
    out.sysctl("net.ipv4.ip_forward", "1").unwrap();
    hv.ip(&["route", "add", "198.18.0.0/24", "via", &OUTSIDE.to_string()])
        .unwrap();
    far
}

/// A capture taken outside the hypervisor: no address of the VMs' subnet anywhere in it
/// (quoted headers included), every line of `expected` in it, and every checksum right.
pub fn assert_outside_capture(seen: &str, expected: &[&str]) {
    assert!(
        !seen.contains("192.168.6."),
        "a private address left the host:\n{seen}"
    );
    for line in expected {
        assert!(seen.contains(line), "{line:?} not seen:\n{seen}");
    }
    let bad = eip_user::testing::process::bad_checksums(seen);
    assert!(bad.is_empty(), "bad checksums {bad:?}:\n{seen}");
}

/// Waits until `f` holds, at most `secs`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Packets from the bridge subnet seen by the outside: a VM's private address leaked.
pub struct LeakWatch(Capture);

impl LeakWatch {
    pub fn start(lab: &Lab) -> LeakWatch {
        LeakWatch(
            Capture::start_filter(&lab.topo.outside, WAN_IF, "src net 192.168.6.0/24").expect("capture"),
        )
    }

    pub fn assert_none(self) {
        let seen = self.0.finish().expect("capture");
        assert!(
            seen.trim().is_empty(),
            "private source addresses reached the outside:\n{seen}"
        );
    }
}
