//! The real kernel: the pinned dataplane's maps, the aliases on the external interface, and
//! gratuitous ARP.

use std::{collections::HashMap, net::Ipv4Addr};

use eip_common::maps::{Config, Counter, EipStats, MAP_DNAT, MAP_SNAT, Vm};

use crate::{
    dataplane::Dataplane,
    ether::PacketSocket,
    garp,
    kernel::{Kernel, KernelError, KernelView, apply_binding},
    lifecycle::Effect,
    netlink::{Link, Netlink},
    pins::{Held, Pins},
    state::Mac,
};

pub struct Live {
    pub dp: Dataplane,
    nl: Netlink,
    ext: Link,
    bridge: Link,
    /// The pins, and our own descriptors of what they hold (see [`Live::upkeep`]).
    pins: Pins,
    held: Held,
    /// What the dataplane's configuration map holds.
    config: Config,
    /// The interfaces found missing at the last upkeep, so that is logged once.
    missing: Vec<String>,
    /// MAC -> bridge port, from the last FDB dump.
    fdb: HashMap<[u8; 6], u32>,
    /// The VM entries as last written or read, so a port refresh compares against memory
    /// instead of reading every entry back from the kernel. `None` until first read.
    guests: Option<HashMap<Ipv4Addr, Vm>>,
    /// The socket announcements go out on, opened at the first and kept.
    garp: Option<PacketSocket>,
}

impl Live {
    pub fn new(
        mut dp: Dataplane,
        nl: Netlink,
        (ext, bridge): (Link, Link),
        pins: Pins,
        config: Config,
    ) -> Result<Self, KernelError> {
        dp.set_config(&config)?;
        let held = pins.hold()?;
        Ok(Live {
            dp,
            nl,
            ext,
            bridge,
            pins,
            held,
            config,
            missing: Vec::new(),
            fdb: HashMap::new(),
            guests: None,
            garp: None,
        })
    }

    /// Once a second: puts back pins removed under the daemon, and follows the external
    /// interface and the bridge when they are deleted and created again (a driver reload, a
    /// bond or bridge re-created): the program is attached to the new interface and the
    /// aliases go back on it. Returns whether the kernel must be reconciled (aliases).
    pub async fn upkeep(&mut self) -> Result<bool, KernelError> {
        let back = self.pins.repair(&self.held)?;
        if !back.is_empty() {
            tracing::warn!(
                pins = %self.pins.root().display(),
                count = back.len(),
                "pins were removed under the daemon; pinned again (the programs stayed attached)"
            );
        }
        let mut reconcile = false;
        for xdp in [true, false] {
            let now = match self.nl.link_opt(&self.link(xdp).name).await? {
                Some(now) => now,
                None => {
                    let name = self.link(xdp).name.clone();
                    if !self.missing.contains(&name) {
                        tracing::error!(iface = %name, "the interface is gone; its traffic stops until it is back");
                        self.missing.push(name);
                    }
                    continue;
                }
            };
            self.missing.retain(|n| *n != now.name);
            let was = self.link(xdp);
            if now.index == was.index && now.mac == was.mac {
                continue;
            }
            if now.index != was.index {
                let (from, kind) = (was.index, if xdp { "XDP" } else { "TC" });
                self.pins.reattach(&mut self.dp, xdp, &now.name)?;
                self.held = self.pins.hold()?;
                tracing::warn!(iface = %now.name, from, to = now.index, "the interface was re-created: {kind} attached again");
            } else {
                tracing::info!(iface = %now.name, mac = %Mac(now.mac), "the interface's MAC changed");
            }
            if xdp {
                self.ext = now;
                // The aliases and announcements go to the new interface.
                reconcile = true;
            } else {
                self.config.bridge_mac = now.mac;
                self.dp.set_config(&self.config)?;
                self.bridge = now;
                self.fdb.clear();
                self.refresh_ports().await?;
            }
        }
        Ok(reconcile)
    }

    fn link(&self, ext: bool) -> &Link {
        if ext { &self.ext } else { &self.bridge }
    }

    /// Whether the bridge is there (a port refresh without it only fails).
    pub fn bridge_present(&self) -> bool {
        !self.missing.contains(&self.bridge.name)
    }

    /// Whether the external interface is there (a reconcile without it only fails).
    pub fn ext_present(&self) -> bool {
        !self.missing.contains(&self.ext.name)
    }

    /// Re-reads the bridge's forwarding database and points every VM entry at the port its
    /// MAC is on now (0, the kernel path, while unknown). Returns the entries changed.
    pub async fn refresh_ports(&mut self) -> Result<usize, KernelError> {
        self.fdb = self.nl.fdb(self.bridge.index).await?;
        let mut guests = match self.guests.take() {
            Some(g) => g,
            None => self.dp.vms()?.into_iter().collect(),
        };
        let mut changed = 0;
        let mut result = Ok(());
        for (&ip, vm) in guests.iter_mut() {
            let port = self.fdb.get(&vm.mac).copied().unwrap_or(0);
            if port != vm.port_ifindex {
                tracing::info!(
                    vm = %ip,
                    mac = %Mac(vm.mac),
                    from = vm.port_ifindex,
                    to = port,
                    "VM's bridge port changed"
                );
                if let Err(e) = self.dp.set_guest(ip, vm.mac, port, vm.flags) {
                    result = Err(e);
                    break;
                }
                vm.port_ifindex = port;
                changed += 1;
            }
        }
        self.guests = Some(guests);
        result?;
        Ok(changed)
    }

    /// Makes sure the VM entry of `mac` points at its bridge port: a DHCP client that just
    /// got its lease has just been learned by the bridge.
    pub async fn learn_port(&mut self, mac: [u8; 6]) -> Result<(), KernelError> {
        if !self.fdb.contains_key(&mac) {
            self.refresh_ports().await?;
        }
        Ok(())
    }
}

impl Kernel for Live {
    async fn apply(&mut self, effect: &Effect) -> Result<(), KernelError> {
        match *effect {
            Effect::ResetStats { slot } => self.dp.reset_stats(slot)?,
            Effect::Bind { .. } | Effect::Unbind { .. } | Effect::ForgetSnat { .. } => {
                apply_binding(&mut self.dp, effect)?
            }
            Effect::DelGuest { private, mac } => {
                self.dp.del_guest(private, mac.0)?;
                if let Some(g) = &mut self.guests
                    && g.get(&private).is_some_and(|vm| vm.mac == mac.0)
                {
                    g.remove(&private);
                }
            }
            Effect::SetGuest { private, mac, flags } => {
                let port = self.fdb.get(&mac.0).copied().unwrap_or(0);
                self.dp.set_guest(private, mac.0, port, flags)?;
                if let Some(g) = &mut self.guests {
                    g.insert(
                        private,
                        Vm {
                            port_ifindex: port,
                            mac: mac.0,
                            flags,
                        },
                    );
                }
            }
            Effect::AddAlias(eip) => self.nl.add_alias(self.ext.index, eip).await?,
            Effect::DelAlias(eip) => self.nl.del_alias(self.ext.index, eip).await?,
            Effect::Announce(eip) => {
                let sent = match &self.garp {
                    Some(s) => Ok(s),
                    None => PacketSocket::open().map(|s| &*self.garp.insert(s)),
                }
                .and_then(|s| garp::announce(s, self.ext.index, self.ext.mac, eip));
                sent.map_err(|source| KernelError::Announce {
                    eip,
                    iface: self.ext.name.clone(),
                    source,
                })?
            }
        }
        Ok(())
    }

    async fn view(&mut self) -> Result<KernelView, KernelError> {
        let pairs = |v: Vec<(Ipv4Addr, eip_common::maps::Binding)>| {
            v.into_iter()
                .map(|(k, b)| (k, (Ipv4Addr::from_bits(b.addr), b.slot)))
                .collect()
        };
        let vms = self.dp.vms()?;
        let view = KernelView {
            dnat: pairs(self.dp.binding_entries(MAP_DNAT)?),
            snat: pairs(self.dp.binding_entries(MAP_SNAT)?),
            vms: vms
                .iter()
                .map(|(ip, vm)| (*ip, (Mac(vm.mac), vm.flags)))
                .collect(),
            macs: self
                .dp
                .leases()?
                .into_iter()
                .map(|(mac, l)| (Mac(mac), (Ipv4Addr::from_bits(l.addr), l.flags)))
                .collect(),
            aliases: self.nl.aliases(self.ext.index).await?,
        };
        self.guests = Some(vms.into_iter().collect());
        Ok(view)
    }

    fn eip_stats(&self, slot: u32) -> Result<EipStats, KernelError> {
        Ok(self.dp.stats(slot)?)
    }

    fn counters(&self) -> Result<Vec<(Counter, u64)>, KernelError> {
        Ok(self.dp.counters()?)
    }
}
