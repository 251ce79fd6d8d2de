//! The lab: the reference setup (one hypervisor, two VMs, an outside host) in network
//! namespaces, run by `cargo xtask run` for people to try and by the end-to-end test. An outside host, a hypervisor (external veth `ext0`,
//! bridge `br0`) running the real `eip daemon`, and two VMs on bridge ports whose interfaces a
//! real DHCP client configures from the daemon's reservations (vm-001 with busybox udhcpc,
//! vm-002 with ISC dhclient). Every VM and the outside run a "who am I" HTTP server; every VM
//! runs a UDP echo.
//!
//! Everything the lab creates goes when it drops, in order: servers, DHCP clients, the daemon,
//! the instance (pins, aliases, files), the namespaces. [`Lab::close`] does the same and says
//! what, if anything, was left behind.

use std::{
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    clients::{Dhclient, udhcpc},
    daemon::Instance,
    netns::NetNs,
    process::Background,
    services::{Heard, Service},
    topology::{BRIDGE_IF, EXT_IF, Naming, POOL, PRIVATE_PREFIX, Topology, VM_IF},
};

/// Which DHCP client a VM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Udhcpc,
    Dhclient,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Client::Udhcpc => "busybox udhcpc",
            Client::Dhclient => "ISC dhclient",
        })
    }
}

/// A VM of the lab and its reservation.
pub struct LabVm {
    pub name: &'static str,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub client: Client,
}

/// The reference setup's two VMs.
pub const LAB_VMS: [LabVm; 2] = [
    LabVm {
        name: "vm-001",
        mac: [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x88],
        ip: Ipv4Addr::new(192, 168, 6, 243),
        client: Client::Udhcpc,
    },
    LabVm {
        name: "vm-002",
        mac: [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x89],
        ip: Ipv4Addr::new(192, 168, 6, 244),
        client: Client::Dhclient,
    },
];

/// The "who am I" HTTP servers' port (VMs and outside) and the VMs' UDP echo port.
pub const HTTP_PORT: u16 = 80;
pub const ECHO_PORT: u16 = 7;

/// The hosts file's lines for `guests`.
pub fn hosts_lines<'a>(guests: impl IntoIterator<Item = &'a LabVm>) -> String {
    guests
        .into_iter()
        .map(|g| format!("{},{},{}\n", crate::model::fmt_mac(g.mac), g.name, g.ip))
        .collect()
}

/// `eip daemon`'s arguments in the reference topology, with the hosts file `hosts`.
pub fn daemon_args(hosts: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["--ext", EXT_IF, "--bridge", BRIDGE_IF, "--pool", POOL, "--hosts"]
        .map(String::from)
        .to_vec();
    args.push(hosts.to_string_lossy().into_owned());
    args
}

pub struct Lab {
    // Dropped in this order: servers, clients, daemon, instance, namespaces.
    services: Vec<Service>,
    clients: Vec<Background>,
    daemon: Option<Background>,
    pub inst: Instance,
    pub topo: Topology,
    /// What each VM's UDP echo heard, by VM.
    pub heard: Vec<Arc<Heard>>,
    pub hosts: PathBuf,
    args: Vec<String>,
}

impl Lab {
    /// Builds the namespaces, starts the daemon with a hosts file holding [`LAB_VMS`], starts
    /// the VMs' DHCP clients and waits (at most 30 s) until each VM has its address, then
    /// starts the servers. `fixed` is `None` for tests (unique names, files in the temp dir);
    /// the lab people type commands into gives its prefix and its files' directory. `progress`
    /// hears one line per step.
    pub fn start(bin: &Path, fixed: Option<(&str, PathBuf)>, progress: &dyn Fn(&str)) -> io::Result<Lab> {
        progress("namespaces: outside, hypervisor (ext0, br0), vm1, vm2");
        let vms: Vec<_> = LAB_VMS.iter().map(|g| (g.mac, None)).collect();
        let naming = fixed
            .as_ref()
            .map_or(Naming::Unique, |(prefix, _)| Naming::Fixed(prefix));
        let topo = Topology::build(naming, &vms)?;
        // A NIC on a wire hands over complete checksums; a veth with tx offload would pass
        // partial ones to the outside, where tcpdump cannot check them.
        topo.hv.exec("ethtool", &["-K", EXT_IF, "tx", "off"])?;
        let inst = match fixed {
            Some((prefix, dir)) => Instance::at(bin, &topo.hv, prefix.to_owned(), dir)?,
            None => Instance::new(bin, &topo.hv)?,
        };
        let hosts = inst.dir.join("hosts");
        std::fs::write(&hosts, hosts_lines(&LAB_VMS))?;
        let args = daemon_args(&hosts);
        let mut lab = Lab {
            services: Vec::new(),
            clients: Vec::new(),
            daemon: None,
            inst,
            topo,
            heard: Vec::new(),
            hosts,
            args,
        };
        progress(&format!(
            "eip daemon (instance {}, files in {})",
            lab.inst.name,
            lab.inst.dir.display()
        ));
        lab.start_daemon()?;

        for (i, g) in LAB_VMS.iter().enumerate() {
            let ns = &lab.topo.vms[i].ns;
            let client = match g.client {
                Client::Udhcpc => udhcpc(ns, &lab.inst.dir, g.name)?,
                Client::Dhclient => Dhclient::new(&lab.inst.dir, g.name)?.spawn(ns)?,
            };
            lab.clients.push(client);
        }
        let started = Instant::now();
        for (i, g) in LAB_VMS.iter().enumerate() {
            lab.wait_for_address(i, Duration::from_secs(30))?;
            progress(&format!(
                "{} got {} from the daemon's DHCP ({}, {:.1} s after it started)",
                g.name,
                g.ip,
                g.client,
                started.elapsed().as_secs_f64()
            ));
        }

        lab.services
            .push(Service::whoami(&lab.topo.outside, "outside", HTTP_PORT)?);
        for (i, g) in LAB_VMS.iter().enumerate() {
            let heard = Arc::new(Heard::default());
            let ns = &lab.topo.vms[i].ns;
            lab.services.push(Service::whoami(ns, g.name, HTTP_PORT)?);
            lab.services
                .push(Service::udp_echo(ns, g.name, ECHO_PORT, heard.clone())?);
            lab.heard.push(heard);
        }
        Ok(lab)
    }

    /// Starts the daemon and waits until it answers.
    pub fn start_daemon(&mut self) -> io::Result<()> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.daemon = Some(self.inst.start(&args)?);
        Ok(())
    }

    /// Stops the daemon with SIGTERM; an error unless it exits 0 within 20 s.
    pub fn stop_daemon(&mut self) -> io::Result<()> {
        let Some(d) = self.daemon.take() else {
            return Ok(());
        };
        let status = d.terminate_and_wait(Duration::from_secs(20))?;
        if !status.success() {
            return Err(io::Error::other(format!("the daemon exited with {status}")));
        }
        Ok(())
    }

    /// The daemon's exit status, if it has exited.
    pub fn daemon_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.daemon.as_mut().and_then(|d| d.try_wait().ok().flatten())
    }

    /// Runs the CLI; its stdout, or an error with its stderr.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        self.inst.try_ok(args)
    }

    /// VM `i`'s namespace, in [`LAB_VMS`] order.
    pub fn vm(&self, i: usize) -> &NetNs {
        &self.topo.vms[i].ns
    }

    /// The IPv4 addresses on VM `i`'s interface, `a.b.c.d/len` each.
    pub fn vm_addrs(&self, i: usize) -> io::Result<Vec<String>> {
        let out = self.vm(i).ip(&["-4", "-o", "addr", "show", "dev", VM_IF])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|&x| x == "inet").and_then(|_| w.next()).map(String::from)
            })
            .collect())
    }

    fn wait_for_address(&self, i: usize, limit: Duration) -> io::Result<()> {
        let want = format!("{}/{PRIVATE_PREFIX}", LAB_VMS[i].ip);
        let deadline = Instant::now() + limit;
        while !self.vm_addrs(i)?.contains(&want) {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{} did not get {want} by DHCP within {limit:?}; the daemon's log:\n{}",
                    LAB_VMS[i].name,
                    self.inst.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The PIDs of the processes the lab runs (DHCP clients, daemon).
    pub fn pids(&self) -> Vec<u32> {
        self.clients
            .iter()
            .chain(self.daemon.iter())
            .map(Background::pid)
            .collect()
    }

    /// Removes everything, as dropping does, then looks: one line per namespace, pin
    /// directory, file, alias or process still there (none, when all went well).
    pub fn close(self) -> Vec<String> {
        let pids = self.pids();
        let Lab {
            services,
            clients,
            mut daemon,
            inst,
            topo,
            ..
        } = self;
        let mut left = Vec::new();
        drop(services);
        drop(clients);
        if let Some(d) = daemon.take() {
            match d.terminate_and_wait(Duration::from_secs(20)) {
                Ok(s) if s.success() => {}
                other => left.push(format!("the daemon did not stop cleanly: {other:?}")),
            }
        }
        let (pins, dir) = (inst.pins(), inst.dir.clone());
        drop(inst);
        match topo.aliases() {
            Ok(aliases) => left.extend(aliases.iter().map(|a| format!("alias {a}/32 on {EXT_IF}"))),
            Err(e) => left.push(format!("cannot list {EXT_IF}'s addresses: {e}")),
        }
        let names = topo.names();
        drop(topo);
        let listed = super::netns::run("ip", &["netns", "list"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for name in names {
            if listed.lines().any(|l| l.split_whitespace().next() == Some(&name)) {
                left.push(format!("namespace {name}"));
            }
        }
        for path in [pins, dir] {
            if path.exists() {
                left.push(format!("{}", path.display()));
            }
        }
        for pid in pids {
            if Path::new(&format!("/proc/{pid}")).exists() {
                left.push(format!("process {pid}"));
            }
        }
        left
    }
}
