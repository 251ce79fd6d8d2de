//! The real kernel: the pinned dataplane's maps, the aliases on the external interface, and
//! gratuitous ARP.

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
    guests: Option<HashMap<Ipv4Addr, Vm>>,
    /// The socket announcements go out on, opened at the first and kept.
    garp: Option<PacketSocket>,
    /// `eip_port` on each bridge port a VM is behind, by ifindex (dropping a link detaches
    /// the program). Never pinned: when the daemon is gone, the bridge's program does it all.
    port_links: HashMap<u32, aya::programs::tc::SchedClassifierLink>,
    /// Ports `eip_port` could not be attached to, so that is logged once per port.
    port_failed: std::collections::BTreeSet<u32>,
    /// `--no-port-fast-path`: the VMs' outbound traffic goes through the bridge (and its
    /// filters) to `eip_egress`, as it does for a VM whose port is not known.
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
            guests: None,
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

    /// The port flags ([`VM_PORT_FLAGS`]) for a VM behind `port`.
    async fn port_flags(&mut self, port: u32) -> Result<u16, KernelError> {
        if port == 0 {
            return Ok(0);
        }
        let veth = match self.port_kinds.get(&port) {
            Some(v) => *v,
            None => {
                let v = self.nl.is_veth(port).await?.unwrap_or(false);
                self.port_kinds.insert(port, v);
                v
            }
        };
        let trusted = self.fast_path_veth && !self.demoted.contains(&port);
        Ok(if veth && !trusted { VM_PORT_KERNEL } else { 0 })
    }

    /// Reads the redirect drops of the ports XDP redirects to: what a port dropped is counted
    /// (`port_dropped` in `eip stats`), and a veth that drops (its VM end has no NAPI after
    /// all, --fast-path-veth notwithstanding) gets kernel delivery from then on, logged.
    fn watch_port_drops(&mut self, guests: &HashMap<Ipv4Addr, Vm>) -> Result<(), KernelError> {
        let xdp = !self.pins.ext_tc() && self.config.flags & CONFIG_NO_FAST_PATH == 0;
        let ports: std::collections::BTreeSet<u32> = guests
            .values()
            .filter(|vm| xdp && vm.port_ifindex != 0 && vm.flags & VM_PORT_KERNEL == 0)
            .map(|vm| vm.port_ifindex)
            .collect();
        self.drops_seen.retain(|p, _| ports.contains(p));
        let drops = self.dp.port_drops()?;
        for port in ports {
            let now = drops.get(&port).copied().unwrap_or(0);
            let Some(was) = self.drops_seen.insert(port, now) else {
                continue;
            };
            let grew = now.saturating_sub(was);
            if grew == 0 {
                continue;
            }
            self.port_dropped += grew;
            if self.port_kinds.get(&port) == Some(&true) && self.demoted.insert(port) {
                tracing::warn!(
                    port,
                    dropped = grew,
                    "a veth bridge port dropped redirected frames (its VM end has no GRO or XDP): the kernel delivers to it from now on"
                );
            } else {
                tracing::warn!(
                    port,
                    dropped = grew,
                    "a bridge port dropped frames the fast path sent it"
                );
            }
        }
        Ok(())
    }

    /// Re-reads the bridge's forwarding database and points every VM entry at the port its
    /// MAC is on now (0, the kernel path, while unknown), with the port's flags. Returns the
    /// entries changed.
    pub async fn refresh_ports(&mut self) -> Result<usize, KernelError> {
        self.fdb = self.nl.fdb(self.bridge.index).await?;
        let mut guests = match self.guests.take() {
            Some(g) => g,
            None => self.dp.vms()?.into_iter().collect(),
        };
        if let Err(e) = self.watch_port_drops(&guests) {
            self.guests = Some(guests);
            return Err(e);
        }
        let mut changed = 0;
        let mut result = Ok(());
        for (&ip, vm) in guests.iter_mut() {
            let port = self.fdb.get(&vm.mac).copied().unwrap_or(0);
            let port_flags = match self.port_flags(port).await {
                Ok(f) => f,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let flags = vm.flags & !VM_PORT_FLAGS | port_flags;
            if port != vm.port_ifindex || flags != vm.flags {
                tracing::info!(
                    vm = %ip,
                    mac = %Mac(vm.mac),
                    from = vm.port_ifindex,
                    to = port,
                    "VM's bridge port changed"
                );
                say_kernel_port(ip, port, vm.flags, flags);
                if let Err(e) = self.dp.set_guest(ip, vm.mac, port, flags) {
                    result = Err(e.into());
                    break;
                }
                vm.port_ifindex = port;
                vm.flags = flags;
                changed += 1;
            }
        }
        match self.nl.bridge_vlan_filtering(self.bridge.index).await {
            Ok(filtering) => {
                if filtering != self.vlan_filtering {
                    if filtering {
                        tracing::warn!(bridge = %self.bridge.name, "the bridge filters by VLAN: the VMs' traffic goes through it (no program on their ports)");
                    } else {
                        tracing::info!(bridge = %self.bridge.name, "the bridge no longer filters by VLAN");
                    }
                }
                self.vlan_filtering = filtering;
            }
            Err(e) => {
                if result.is_ok() {
                    result = Err(e.into());
                }
            }
        }
        self.follow_port_programs(&guests);
        self.guests = Some(guests);
        result?;
        Ok(changed)
    }

    /// Keeps `eip_port` attached to every bridge port a VM is behind, and to no other: a
    /// port that lost its VMs (or was deleted) lets it go. A port it cannot be attached to
    /// is logged once; its VMs' traffic goes through the bridge, as without it.
    fn follow_port_programs(&mut self, guests: &HashMap<Ipv4Addr, Vm>) {
        let on =
            !self.no_port_fast_path && !self.vlan_filtering && self.config.flags & CONFIG_NO_FAST_PATH == 0;
        let wanted: std::collections::BTreeSet<u32> = guests
            .values()
            .map(|vm| vm.port_ifindex)
            .filter(|&p| on && p != 0)
            .collect();
        self.port_links.retain(|p, _| wanted.contains(p));
        self.port_failed.retain(|p| wanted.contains(p));
        for port in wanted {
            if self.port_links.contains_key(&port) || self.port_failed.contains(&port) {
                continue;
            }
            match self.dp.attach_port(port) {
                Ok(link) => {
                    tracing::info!(
                        port,
                        "attached eip_port (TCX ingress): the VMs' translated traffic leaves before the bridge"
                    );
                    self.port_links.insert(port, link);
                }
                Err(e) => {
                    let cause = std::error::Error::source(&e)
                        .map(|c| c.to_string())
                        .unwrap_or_default();
                    tracing::warn!(port, error = %e, %cause, "eip_port not attached: this port's VMs go through the bridge");
                    self.port_failed.insert(port);
                }
            }
        }
    }

    /// How inbound traffic reaches the VM at `private`, as the dataplane has it now.
    fn path(&self, private: Ipv4Addr) -> Option<&'static str> {
        let vm = self.guests.as_ref()?.get(&private)?;
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
                let flags = flags | self.port_flags(port).await?;
                let before = self
                    .guests
                    .as_ref()
                    .and_then(|g| g.get(&private))
                    .map_or(0, |v| v.flags);
                say_kernel_port(private, port, before, flags);
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
        self.guests = Some(vms.into_iter().collect());
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

/// Logs, once per change, that the kernel delivers to a VM because its port is a veth.
fn say_kernel_port(vm: Ipv4Addr, port: u32, before: u16, after: u16) {
    if after & VM_PORT_KERNEL != 0 && before & VM_PORT_KERNEL == 0 {
        tracing::info!(
            %vm,
            port,
            "the VM's bridge port is a veth: the kernel delivers its inbound traffic (a veth drops redirected frames unless its VM end has GRO on or an XDP program; --fast-path-veth says it does)"
        );
    }
}

/// The host settings routing and the egress fallback need (see the README's Dataplane
/// section): forwarding on, and `accept_local` on the bridge, since the fallback hands the
/// kernel packets whose source is already the EIP, an address of the host.
pub fn host_settings(bridge: &str) -> Result<(), KernelError> {
    for (key, value) in [
        ("/proc/sys/net/ipv4/ip_forward".to_owned(), "1"),
        (format!("/proc/sys/net/ipv4/conf/{bridge}/accept_local"), "1"),
    ] {
        let sysctl = |source| KernelError::Sysctl {
            key: key.clone(),
            source,
        };
        let now = std::fs::read_to_string(&key).map_err(sysctl)?;
        if now.trim() != value {
            std::fs::write(&key, value).map_err(sysctl)?;
            tracing::info!(sysctl = %key, value, "set");
        }
    }
    Ok(())
}

/// The uplink's settings the XDP ingress needs: the NIC's VLAN receive offload off, so that
/// an 802.1Q tag stays in the frame where XDP sees it. A NIC that strips tags into its
/// descriptors hands XDP tagged frames that look untagged: without `--ext-vlan` they would
/// take the EIP path, with it they never would. TC sees the tag either way (in the skb).
/// Best effort: a driver without the setting has nothing to strip.
pub fn uplink_settings(ext: &str, tc: bool) {
    if tc {
        return;
    }
    match rx_vlan_offload_off(ext) {
        Ok(true) => tracing::info!(
            iface = ext,
            "VLAN receive offload turned off: XDP sees 802.1Q tags"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(iface = ext, error = %e, "could not turn VLAN receive offload off: if the NIC strips 802.1Q tags, XDP takes tagged frames for untagged ones")
        }
    }
}

/// ETHTOOL_SFLAGS without ETH_FLAG_RXVLAN (the kernel maps it to NETIF_F_HW_VLAN_CTAG_RX).
/// Returns whether it was on.
fn rx_vlan_offload_off(ext: &str) -> std::io::Result<bool> {
    const ETHTOOL_GFLAGS: u32 = 0x25;
    const ETHTOOL_SFLAGS: u32 = 0x26;
    const ETH_FLAG_RXVLAN: u32 = 1 << 8;
    // SAFETY: a datagram socket for the ioctl, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned here alone.
    let _fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let flags = ethtool_value(fd, ext, ETHTOOL_GFLAGS, 0)?;
    if flags & ETH_FLAG_RXVLAN == 0 {
        return Ok(false);
    }
    ethtool_value(fd, ext, ETHTOOL_SFLAGS, flags & !ETH_FLAG_RXVLAN)?;
    Ok(true)
}

/// One SIOCETHTOOL call with a `struct ethtool_value`; returns its `data` after the call.
fn ethtool_value(fd: libc::c_int, iface: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain data; all-zero is a valid start.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= ifr.ifr_name.len() || name.contains(&0) {
        return Err(std::io::Error::other("not an interface name"));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: SIOCETHTOOL with an ifreq naming the interface and pointing at `value`, which
    // outlives the call.
    if unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr as *mut libc::ifreq) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data)
}
