//! The real kernel: the pinned dataplane's maps, the aliases on the external interface, and
//! gratuitous ARP.

mod ports;

use ports::say_kernel_port;

use crate::kernel::settings::{host_settings, uplink_settings};

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
};

use eip_common::maps::{
    CONFIG_NO_FAST_PATH, Config, Counter, EipStats, MAP_DNAT, MAP_SNAT, VM_PORT_FLAGS, VM_PORT_KERNEL, Vm,
};

use crate::{
    kernel::dataplane::Dataplane,
    kernel::ether::PacketSocket,
    kernel::garp,
    kernel::netlink::{Link, Netlink},
    kernel::pins::{Held, Pins},
    kernel::plan::Effect,
    kernel::{Kernel, KernelError, KernelView, apply_binding},
    model::Mac,
};

pub struct Live {
    pub dp: Dataplane,
    nl: Netlink,
    ext: Link,
    /// `--ext-vlan`: the VLAN interface on `ext` that holds the EIPs' network. The aliases and
    /// announcements go there; the programs stay on `ext`, the device the frames arrive on.
    public: Option<Link>,
    bridge: Link,
    /// The pins, and our own descriptors of what they hold (see [`Live::upkeep`]).
    pins: Pins,
    held: Held,
    /// What the dataplane's configuration map holds.
    config: Config,
    /// The interfaces found missing at the last upkeep, so that is logged once.
    missing: Vec<String>,
    /// Bridge ports by ifindex: whether the kernel must deliver to them (a veth) rather than
    /// the XDP redirect. Ifindexes are not reused while the daemon runs... unless a port is
    /// re-created, which gets a new one.
    port_kinds: HashMap<u32, bool>,
    /// `--fast-path-veth`: the operator says the VM ends of veth ports take redirected frames.
    pub fast_path_veth: bool,
    /// Per port the fast path redirects to: its count in `EIP_PORT_DROPS` when last read.
    drops_seen: HashMap<u32, u64>,
    /// Frames the ports the fast path redirects to dropped since the daemon started.
    port_dropped: u64,
    /// Veth ports seen dropping redirected frames: kernel delivery from then on.
    demoted: std::collections::BTreeSet<u32>,
    /// MAC -> bridge port, from the last FDB dump.
    fdb: HashMap<[u8; 6], u32>,
    /// The VM entries as last written or read, so a port refresh compares against memory
    /// instead of reading every entry back from the kernel. `None` until first read.
    vm_entries: Option<HashMap<Ipv4Addr, Vm>>,
    /// The socket announcements go out on, opened at the first and kept.
    garp: Option<PacketSocket>,
    /// `eip_port_in` on each bridge port a VM is behind, by ifindex (dropping a link detaches
    /// the program). Never pinned: when the daemon is gone, the bridge's program does it all.
    port_links: HashMap<u32, aya::programs::tc::SchedClassifierLink>,
    /// Ports `eip_port_in` could not be attached to, so that is logged once per port.
    port_failed: std::collections::BTreeSet<u32>,
    /// `--no-port-fast-path`: the VMs' outbound traffic goes through the bridge (and its
    /// filters) to `eip_bridge_in`, as it does for a VM whose port is not known.
    pub no_port_fast_path: bool,
    /// The bridge filters by VLAN, as last seen: its ports' VLANs are the bridge's to judge,
    /// so nothing is taken before it.
    vlan_filtering: bool,
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
        dp.set_bridge_ifindex(bridge.index)?;
        if let Err(e) = dp.count_port_drops() {
            tracing::warn!(
                error = %e,
                "frames a bridge port drops on redirect will not be seen (is tracefs mounted? mount -t tracefs tracefs /sys/kernel/tracing)"
            );
        }
        let held = pins.hold()?;
        Ok(Live {
            dp,
            nl,
            ext,
            public: None,
            bridge,
            pins,
            held,
            config,
            missing: Vec::new(),
            port_kinds: HashMap::new(),
            fast_path_veth: false,
            drops_seen: HashMap::new(),
            port_dropped: 0,
            demoted: Default::default(),
            fdb: HashMap::new(),
            vm_entries: None,
            garp: None,
            port_links: HashMap::new(),
            port_failed: Default::default(),
            no_port_fast_path: false,
            vlan_filtering: false,
        })
    }

    /// Once a second: puts back pins removed under the daemon, and follows the external
    /// interface and the bridge when they are deleted and created again (a driver reload, a
    /// bond or bridge re-created): the program is attached to the new interface and the
    /// aliases go back on it. Returns whether the kernel must be reconciled (aliases).
    async fn keep_up(&mut self) -> Result<bool, KernelError> {
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
                let kind = match (xdp, self.pins.ext_tc()) {
                    (true, false) => "XDP",
                    (true, true) => "TC ingress",
                    (false, _) => "TC",
                };
                let from = was.index;
                self.pins.reattach(&mut self.dp, xdp, &now.name)?;
                self.held = self.pins.hold()?;
                tracing::warn!(iface = %now.name, from, to = now.index, "the interface was re-created: {kind} attached again");
            } else {
                tracing::info!(iface = %now.name, mac = %Mac(now.mac), "the interface's MAC changed");
            }
            if xdp {
                // A new NIC has the defaults again.
                uplink_settings(&now.name, self.pins.ext_tc());
                self.ext = now;
                // The aliases and announcements go to the new interface.
                reconcile = true;
            } else {
                self.config.bridge_mac = now.mac;
                self.dp.set_config(&self.config)?;
                self.dp.set_bridge_ifindex(now.index)?;
                // A new bridge has the defaults again.
                if let Err(e) = host_settings(&now.name) {
                    tracing::warn!(error = %e, "the new bridge's settings");
                }
                self.bridge = now;
                self.fdb.clear();
                self.refresh_ports().await?;
            }
        }
        Ok(self.follow_public().await? || reconcile)
    }

    /// `--ext-vlan`: the aliases and announcements go on `vlan`, a VLAN interface on the
    /// external interface.
    pub fn set_public(&mut self, vlan: Link) {
        self.public = Some(vlan);
    }

    /// Where the EIPs' aliases live and their announcements go out.
    fn addr_link(&self) -> &Link {
        self.public.as_ref().unwrap_or(&self.ext)
    }

    /// Follows `--ext-vlan`'s interface when it is deleted and created again (with its
    /// parent, or alone). Returns whether the aliases must go back on it.
    async fn follow_public(&mut self) -> Result<bool, KernelError> {
        let Some(was) = self.public.clone() else {
            return Ok(false);
        };
        match self.nl.link_opt(&was.name).await? {
            None => {
                if !self.missing.contains(&was.name) {
                    tracing::error!(iface = %was.name, "the EIPs' VLAN interface is gone; the EIPs are not announced until it is back");
                    self.missing.push(was.name);
                }
                Ok(false)
            }
            Some(now) => {
                let back = self.missing.contains(&now.name);
                self.missing.retain(|n| *n != now.name);
                let changed = now.index != was.index || now.mac != was.mac;
                if changed {
                    tracing::warn!(iface = %now.name, from = was.index, to = now.index, "the EIPs' VLAN interface was re-created: the aliases go back on it");
                }
                self.public = Some(now);
                Ok(changed || back)
            }
        }
    }

    fn link(&self, ext: bool) -> &Link {
        if ext { &self.ext } else { &self.bridge }
    }

    /// Whether the bridge is there (a port refresh without it only fails).
    fn bridge_present(&self) -> bool {
        !self.missing.contains(&self.bridge.name)
    }

    /// Whether the external interface is there (a reconcile without it only fails).
    fn ext_present(&self) -> bool {
        !self.missing.contains(&self.ext.name) && !self.missing.contains(&self.addr_link().name)
    }

    /// How inbound traffic reaches the VM at `private`, as the dataplane has it now.
    fn path(&self, private: Ipv4Addr) -> Option<&'static str> {
        let vm = self.vm_entries.as_ref()?.get(&private)?;
        Some(if self.config.flags & CONFIG_NO_FAST_PATH != 0 {
            "kernel (--no-fast-path)"
        } else if vm.port_ifindex == 0 {
            "kernel (port not learned yet)"
        } else if vm.flags & VM_PORT_KERNEL != 0 && !self.pins.ext_tc() {
            "kernel (veth port)"
        } else {
            "fast"
        })
    }
}

impl Kernel for Live {
    async fn upkeep(&mut self) -> Result<bool, KernelError> {
        self.keep_up().await
    }

    fn ready(&self) -> bool {
        self.ext_present()
    }

    async fn follow_ports(&mut self) -> Result<(), KernelError> {
        if self.bridge_present() {
            self.refresh_ports().await?;
        }
        Ok(())
    }

    /// Makes sure the VM entry of `mac` points at its bridge port.
    async fn learn_port(&mut self, mac: Mac) -> Result<(), KernelError> {
        if !self.fdb.contains_key(&mac.0) {
            self.refresh_ports().await?;
        }
        Ok(())
    }

    fn bridge(&self) -> Option<&Link> {
        Some(&self.bridge)
    }

    async fn apply(&mut self, effect: &Effect) -> Result<(), KernelError> {
        match *effect {
            Effect::ResetStats { slot } => self.dp.reset_stats(slot)?,
            Effect::SetLimit {
                slot,
                inbound,
                outbound,
            } => self
                .dp
                .set_limit(slot, &crate::model::rate::dataplane_limit(inbound, outbound))?,
            Effect::Bind { .. } | Effect::Unbind { .. } | Effect::ForgetSnat { .. } => {
                apply_binding(&mut self.dp, effect)?
            }
            Effect::DelVm { private, mac } => {
                self.dp.del_vm(private, mac.0)?;
                if let Some(g) = &mut self.vm_entries
                    && g.get(&private).is_some_and(|vm| vm.mac == mac.0)
                {
                    g.remove(&private);
                }
            }
            Effect::SetVm { private, mac, flags } => {
                let port = self.fdb.get(&mac.0).copied().unwrap_or(0);
                let flags = flags | self.port_flags(port).await?;
                let before = self
                    .vm_entries
                    .as_ref()
                    .and_then(|g| g.get(&private))
                    .map_or(0, |v| v.flags);
                say_kernel_port(private, port, before, flags);
                self.dp.set_vm(private, mac.0, port, flags)?;
                if let Some(g) = &mut self.vm_entries {
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
            Effect::AddPool(p) => self.dp.set_pool(p)?,
            Effect::DelPool(p) => self.dp.del_pool(p)?,
            Effect::AddAlias(eip) => self.nl.add_alias(self.addr_link().index, eip).await?,
            Effect::DelAlias(eip) => self.nl.del_alias(self.addr_link().index, eip).await?,
            Effect::Announce(eip) => {
                let link = self.addr_link().clone();
                let sent = match &self.garp {
                    Some(s) => Ok(s),
                    None => PacketSocket::open().map(|s| &*self.garp.insert(s)),
                }
                .and_then(|s| garp::announce(s, link.index, link.mac, eip));
                sent.map_err(|source| KernelError::Announce {
                    eip,
                    iface: link.name.clone(),
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
        let dnat: BTreeMap<Ipv4Addr, (Ipv4Addr, u32)> = pairs(self.dp.binding_entries(MAP_DNAT)?);
        let limits = dnat
            .values()
            .map(|(_, slot)| eip_common::maps::slot_index(*slot))
            .map(|slot| Ok((slot, crate::kernel::without_timelines(self.dp.limit(slot)?))))
            .collect::<Result<_, KernelError>>()?;
        let view = KernelView {
            dnat,
            snat: pairs(self.dp.binding_entries(MAP_SNAT)?),
            // The port's flags are this adapter's, not the state's.
            vms: vms
                .iter()
                .map(|(ip, vm)| (*ip, (Mac(vm.mac), vm.flags & !VM_PORT_FLAGS)))
                .collect(),
            macs: self
                .dp
                .held_addresses()?
                .into_iter()
                .map(|(mac, l)| (Mac(mac), (Ipv4Addr::from_bits(l.addr), l.flags & !VM_PORT_FLAGS)))
                .collect(),
            aliases: self.nl.aliases(self.addr_link().index).await?,
            pools: self.dp.pools()?,
            limits,
        };
        self.vm_entries = Some(vms.into_iter().collect());
        Ok(view)
    }

    fn eip_stats(&self, slot: u32) -> Result<EipStats, KernelError> {
        Ok(self.dp.stats(slot)?)
    }

    fn limit_drops(&self, slot: u32) -> Result<EipStats, KernelError> {
        Ok(self.dp.limit_drops(slot)?)
    }

    fn path_of(&self, private: Ipv4Addr) -> Option<&'static str> {
        self.path(private)
    }

    async fn host_nets(&mut self) -> Result<Vec<ipnet::Ipv4Net>, KernelError> {
        Ok(self.nl.host_nets().await?)
    }

    fn guard_dropped(&self) -> Option<u64> {
        crate::kernel::guard::dropped(self.pins.instance())
    }

    fn port_dropped(&self) -> u64 {
        self.port_dropped
    }

    fn port_programs(&self) -> Vec<u32> {
        let mut ports: Vec<u32> = self.port_links.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    fn counters(&self) -> Result<Vec<(Counter, u64)>, KernelError> {
        Ok(self.dp.counters()?)
    }
}
