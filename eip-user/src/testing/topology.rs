//! The reference topology in namespaces: an outside host, a hypervisor with an external
//! interface and a bridge, and VMs on bridge ports. Used by the netns tests, the benchmarks
//! and the lab. Interface names are fixed inside each namespace (namespaces keep them apart);
//! namespace names are unique per run.

use std::{io, net::Ipv4Addr};

use super::netns::NetNs;

/// The outside host's address, on the external subnet.
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
/// The hypervisor's own address on the external interface.
pub const EXT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The bridge's address: the VMs' gateway.
pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 6, 22);
pub const PRIVATE_PREFIX: u8 = 24;
/// The pool the outside routes to the hypervisor.
pub const POOL: &str = "203.0.113.0/24";

/// In the hypervisor namespace.
pub const EXT_IF: &str = "ext0";
pub const BRIDGE_IF: &str = "br0";
/// In the outside namespace.
pub const WAN_IF: &str = "wan0";
/// In each VM namespace.
pub const VM_IF: &str = "eth0";

/// How the namespaces are named: uniquely per run (tests, benchmarks, so that runs never
/// collide), or `PREFIX-out`, `PREFIX-hv`, `PREFIX-vm1`... (the lab, whose names people type).
#[derive(Clone, Copy, Debug)]
pub enum Naming<'a> {
    Unique,
    Fixed(&'a str),
}

impl Naming<'_> {
    fn create(&self, role: &str, short: &str) -> io::Result<NetNs> {
        match self {
            Naming::Unique => NetNs::new(short),
            Naming::Fixed(prefix) => NetNs::named(format!("{prefix}-{role}")),
        }
    }
}

/// The tests' numbering of VMs: VM `n` has the MAC 52:54:00:00:00:`n`...
pub fn vm_mac(n: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, n]
}

/// ...and, where it has a reservation, the address 192.168.6.(10 + `n`).
pub fn vm_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 6, 10 + n)
}

/// What a VM's bridge port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A veth pair, as a container's (the VM's end left at its defaults: GRO off).
    Veth,
    /// A tap held open by a process that copies frames to the guest, as QEMU holds a VM's.
    Tap,
}

pub struct VmNs {
    /// For a tap port, the copying thread: stopped (and the taps gone) before the namespace.
    pub tap: Option<super::tap::TapLink>,
    pub ns: NetNs,
    /// The VM's bridge port, in the hypervisor namespace.
    pub port: String,
    pub mac: [u8; 6],
    pub kind: PortKind,
}

pub struct Topology {
    // VMs first: dropped (deleted) before the hypervisor, whose bridge they hang on.
    pub vms: Vec<VmNs>,
    pub hv: NetNs,
    pub outside: NetNs,
}

impl Topology {
    /// Builds the namespaces and links. Each VM gets `mac` and, when given, a static address
    /// with the bridge as its gateway (the DHCP tests leave it to a DHCP client).
    pub fn new(vms: &[([u8; 6], Option<Ipv4Addr>)]) -> io::Result<Self> {
        Self::build(Naming::Unique, vms)
    }

    /// As [`Topology::new`], with the namespaces named as `naming` says.
    pub fn build(naming: Naming, vms: &[([u8; 6], Option<Ipv4Addr>)]) -> io::Result<Self> {
        let kinds = vec![PortKind::Veth; vms.len()];
        Self::build_ports(naming, vms, &kinds)
    }

    /// As [`Topology::build`], each VM on a port of the kind `kinds` gives.
    pub fn build_ports(
        naming: Naming,
        vms: &[([u8; 6], Option<Ipv4Addr>)],
        kinds: &[PortKind],
    ) -> io::Result<Self> {
        let outside = naming.create("out", "eipo")?;
        let hv = naming.create("hv", "eiph")?;
        wire(&hv, &outside)?;

        bridge(&hv)?;
        hv.sysctl("net.ipv4.ip_forward", "1")?;
        // The fallback egress path hands the kernel packets whose source is already the EIP,
        // an address of this host: without accept_local they would be dropped as martians.
        hv.sysctl(&format!("net.ipv4.conf.{BRIDGE_IF}.accept_local"), "1")?;

        let mut out = Vec::new();
        for (i, (mac, addr)) in vms.iter().enumerate() {
            let ns = naming.create(&format!("vm{}", i + 1), "eipv")?;
            let port = format!("port{i}");
            let kind = kinds.get(i).copied().unwrap_or(PortKind::Veth);
            // The VM's end is left as its owner would leave it: defaults.
            let tap = match kind {
                PortKind::Veth => {
                    hv.veth(&port, VM_IF, &ns)?;
                    None
                }
                PortKind::Tap => Some(super::tap::TapLink::new(&hv, &port, &ns, VM_IF)?),
            };
            hv.ip(&["link", "set", &port, "master", BRIDGE_IF])?;
            hv.ip(&["link", "set", &port, "up"])?;
            ns.ip(&["link", "set", VM_IF, "address", &crate::model::fmt_mac(*mac)])?;
            ns.ip(&["link", "set", VM_IF, "up"])?;
            if let Some(a) = addr {
                ns.ip(&["addr", "add", &format!("{a}/{PRIVATE_PREFIX}"), "dev", VM_IF])?;
                ns.ip(&["route", "add", "default", "via", &BRIDGE_ADDR.to_string()])?;
            }
            out.push(VmNs {
                tap,
                ns,
                port,
                mac: *mac,
                kind,
            });
        }
        Ok(Topology {
            vms: out,
            hv,
            outside,
        })
    }

    /// Deletes the external interface, and with it the outside's end, as a driver reload or
    /// a rebuilt lab does.
    pub fn del_ext(&self) -> io::Result<()> {
        self.hv.ip(&["link", "del", EXT_IF]).map(drop)
    }

    /// Creates the external interface and the outside's end again, as [`Topology::new`] did.
    pub fn add_ext(&self) -> io::Result<()> {
        wire(&self.hv, &self.outside)
    }

    /// Deletes the bridge and creates it again with its address, its ports re-attached, as a
    /// rebuilt bridge (or a network service restarted) leaves it: the new bridge has the
    /// defaults, and a new index and MAC.
    pub fn recreate_bridge(&self) -> io::Result<()> {
        self.hv.ip(&["link", "del", BRIDGE_IF])?;
        bridge(&self.hv)?;
        for vm in &self.vms {
            self.hv.ip(&["link", "set", &vm.port, "master", BRIDGE_IF])?;
        }
        Ok(())
    }

    /// Every namespace's name, the outside's first.
    pub fn names(&self) -> Vec<String> {
        [&self.outside, &self.hv]
            .into_iter()
            .chain(self.vms.iter().map(|v| &v.ns))
            .map(|n| n.name().to_owned())
            .collect()
    }

    /// The /32 addresses on the hypervisor's external interface: the daemon's EIP aliases.
    /// (Read from `ip -j`: iproute2 6.1 does not print an address's protocol.)
    pub fn aliases(&self) -> io::Result<Vec<Ipv4Addr>> {
        let out = self.hv.ip(&["-j", "-4", "addr", "show", "dev", EXT_IF])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(io::Error::other)?;
        let mut found = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if a["prefixlen"] == 32
                    && let Some(addr) = a["local"].as_str().and_then(|s| s.parse().ok())
                {
                    found.push(addr);
                }
            }
        }
        Ok(found)
    }

    pub fn bridge_mac(&self) -> io::Result<[u8; 6]> {
        self.hv.mac(BRIDGE_IF)
    }
}

/// The link between the hypervisor's external interface and the outside, with their
/// addresses and the outside's route to the pool.
fn wire(hv: &NetNs, outside: &NetNs) -> io::Result<()> {
    hv.veth(EXT_IF, WAN_IF, outside)?;
    hv.ip(&["addr", "add", &format!("{EXT_ADDR}/24"), "dev", EXT_IF])?;
    hv.ip(&["link", "set", EXT_IF, "up"])?;
    outside.ip(&["addr", "add", &format!("{OUTSIDE_ADDR}/24"), "dev", WAN_IF])?;
    outside.ip(&["link", "set", WAN_IF, "up"])?;
    outside.ip(&["route", "add", POOL, "via", &EXT_ADDR.to_string()])?;
    // A wire delivers complete checksums; a veth would hand over partial ones (checksum
    // offload). With tx offload off, the outside behaves like a host on a real wire.
    outside.exec("ethtool", &["-K", WAN_IF, "tx", "off"])?;
    Ok(())
}

/// The bridge with its address, up.
fn bridge(hv: &NetNs) -> io::Result<()> {
    hv.ip(&["link", "add", BRIDGE_IF, "type", "bridge"])?;
    hv.ip(&[
        "addr",
        "add",
        &format!("{BRIDGE_ADDR}/{PRIVATE_PREFIX}"),
        "dev",
        BRIDGE_IF,
    ])?;
    hv.ip(&["link", "set", BRIDGE_IF, "up"])?;
    Ok(())
}
