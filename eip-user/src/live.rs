//! The real kernel: the pinned dataplane's maps, the aliases on the external interface, and
//! gratuitous ARP.

use std::{collections::HashMap, net::Ipv4Addr};

use eip_common::maps::{Counter, EipStats, MAP_DNAT, MAP_SNAT, Vm};

use crate::{
    dataplane::Dataplane,
    ether::PacketSocket,
    garp,
    kernel::{Kernel, KernelError, KernelView, apply_binding},
    lifecycle::Effect,
    netlink::{Link, Netlink},
    state::Mac,
};

pub struct Live {
    pub dp: Dataplane,
    nl: Netlink,
    ext: Link,
    bridge: Link,
    /// MAC -> bridge port, from the last FDB dump.
    fdb: HashMap<[u8; 6], u32>,
    /// The VM entries as last written or read, so a port refresh compares against memory
    /// instead of reading every entry back from the kernel. `None` until first read.
    guests: Option<HashMap<Ipv4Addr, Vm>>,
    /// The socket announcements go out on, opened at the first and kept.
    garp: Option<PacketSocket>,
}

impl Live {
    pub fn new(dp: Dataplane, nl: Netlink, ext: Link, bridge: Link) -> Self {
        Live {
            dp,
            nl,
            ext,
            bridge,
            fdb: HashMap::new(),
            guests: None,
            garp: None,
        }
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
