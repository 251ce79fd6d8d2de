//! The kernel as the engine sees it: the [`Kernel`] trait (effects to apply, a view to
//! reconcile against), the one effect planner ([`plan`]), and two kernels: the real one
//! ([`live::Live`]: the pinned [`dataplane`]'s maps, [`netlink`], [`garp`], with [`pins`],
//! [`bpffs`], the leak [`guard`], the host's [`settings`] and [`teardown`]) and [`MemKernel`],
//! the same state in memory for tests without root. Imports only [`crate::model`].

pub mod bpffs;
pub mod dataplane;
pub mod ether;
pub mod garp;
pub mod guard;
pub mod live;
mod mem;
pub mod netlink;
pub mod pins;
pub mod plan;
pub mod settings;
pub mod teardown;

pub use mem::MemKernel;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use eip_common::{
    limiter::Limit,
    maps::{Counter, EipStats, slot_index},
};
use ipnet::Ipv4Net;

use crate::{
    kernel::dataplane::update::{BindingMaps, bind_ops, execute, unbind_ops},
    kernel::plan::Effect,
    model::rate::dataplane_limit,
    model::{Bound, Eip, Mac, State},
};

/// What the kernel holds now, as far as the daemon owns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// EIP -> (private, slot): the forward (DNAT) map.
    pub dnat: BTreeMap<Ipv4Addr, (Ipv4Addr, u32)>,
    /// private -> (EIP, slot): the reverse (SNAT) map.
    pub snat: BTreeMap<Ipv4Addr, (Ipv4Addr, u32)>,
    /// private -> (MAC, flags): the VM entries.
    pub vms: BTreeMap<Ipv4Addr, (Mac, u16)>,
    /// MAC -> (private, flags): the anti-spoofing entries.
    pub macs: BTreeMap<Mac, (Ipv4Addr, u16)>,
    /// The /32 aliases this daemon put on the external interface.
    pub aliases: BTreeSet<Ipv4Addr>,
    /// The pools, whose addresses ingress refuses as sources from outside.
    pub pools: BTreeSet<Ipv4Net>,
    /// Slot (index) -> limit, for the slots of the forward entries (the ones traffic uses),
    /// with the timelines left out.
    pub limits: BTreeMap<u32, Limit>,
}

impl KernelView {
    /// The view a state asks for: every VM entry, every binding, and its slot's limit.
    pub fn desired(state: &State) -> KernelView {
        let mut v = KernelView {
            pools: state.pools.iter().copied().collect(),
            ..KernelView::default()
        };
        for (mac, vm) in state.vms() {
            v.add_vm(mac, vm);
        }
        for (eip, b) in state.bindings() {
            v.add_binding(eip, b);
            if let Some(e) = state.eips.get(&eip) {
                v.limits.insert(slot_index(b.slot), limit_of(e));
            }
        }
        v
    }

    /// The part of that view a change touched: its MACs' VM entries, its EIPs' bindings, its
    /// pools, and the limit of every EIP it touched, bound or not (a new allocation's slot
    /// gets its limit before any binding uses it).
    fn desired_over(state: &State, t: &plan::Touched) -> KernelView {
        let mut v = KernelView {
            pools: t
                .pools
                .iter()
                .filter(|p| state.pools.contains(p))
                .copied()
                .collect(),
            ..KernelView::default()
        };
        for &mac in &t.macs {
            if let Some(vm) = state.vm(mac) {
                v.add_vm(mac, vm);
            }
        }
        for &eip in &t.eips {
            if let Some(b) = state.bound(eip) {
                v.add_binding(eip, b);
            }
            if let Some(e) = state.eips.get(&eip) {
                v.limits.insert(e.slot, limit_of(e));
            }
        }
        v
    }

    fn add_vm(&mut self, mac: Mac, (ip, flags): (Ipv4Addr, u16)) {
        self.vms.insert(ip, (mac, flags));
        self.macs.insert(mac, (ip, flags));
    }

    fn add_binding(&mut self, eip: Ipv4Addr, b: Bound) {
        self.dnat.insert(eip, (b.private, b.slot));
        self.snat.insert(b.private, (eip, b.slot));
        self.aliases.insert(eip);
    }
}

/// The dataplane's form of an EIP's limit (timelines idle).
pub fn limit_of(e: &Eip) -> Limit {
    dataplane_limit(e.limit_in, e.limit_out)
}

/// `l` as a view compares it: without the timelines, which only the programs write.
pub fn without_timelines(mut l: Limit) -> Limit {
    l.inbound.tat_ns = 0;
    l.outbound.tat_ns = 0;
    l
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Dataplane(#[from] crate::kernel::dataplane::DataplaneError),
    #[error(transparent)]
    Update(#[from] crate::kernel::dataplane::UpdateError),
    #[error(transparent)]
    Netlink(#[from] crate::kernel::netlink::NetlinkError),
    #[error(transparent)]
    Pins(#[from] crate::kernel::pins::PinError),
    #[error("sysctl {key}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gratuitous ARP for {eip} on {iface}")]
    Announce {
        eip: Ipv4Addr,
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("injected failure")]
    Injected,
    /// The in-memory kernel's VM table is full (the real one fails with E2BIG).
    #[error("the VM table is full ({0} entries)")]
    VmTableFull(usize),
}

/// The kernel side of the lifecycle. The futures are `Send` so the daemon's request handlers
/// (which hold the engine across them) run on any worker thread.
pub trait Kernel: Send + 'static {
    fn apply(&mut self, effect: &Effect) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn view(&mut self) -> impl Future<Output = Result<KernelView, KernelError>> + Send;
    fn eip_stats(&self, slot: u32) -> Result<EipStats, KernelError>;
    /// What a slot's limit dropped, by direction.
    fn limit_drops(&self, _slot: u32) -> Result<EipStats, KernelError> {
        Ok(EipStats::default())
    }
    fn counters(&self) -> Result<Vec<(Counter, u64)>, KernelError>;
    /// How inbound traffic reaches the VM at `private` ("fast", or "kernel (why)"), when the
    /// kernel knows the VM.
    fn path_of(&self, _private: Ipv4Addr) -> Option<&'static str> {
        None
    }
    /// The IPv4 addresses (with their subnets) of the host's interfaces, the daemon's own
    /// aliases left out: what a pool must not overlap.
    fn host_nets(&mut self) -> impl Future<Output = Result<Vec<Ipv4Net>, KernelError>> + Send {
        async { Ok(Vec::new()) }
    }
    /// Packets the leak guard dropped (see [`crate::kernel::guard`]), when there is one.
    fn guard_dropped(&self) -> Option<u64> {
        None
    }
    /// Frames the bridge ports the fast path redirects to dropped (their transmit drops).
    fn port_dropped(&self) -> u64 {
        0
    }
    /// The bridge ports (ifindexes) the VMs' outbound traffic is taken at, before the bridge.
    fn port_programs(&self) -> Vec<u32> {
        Vec::new()
    }
    /// Once a second: whatever keeps the kernel side whole (pins put back, interfaces that
    /// were created again followed). Returns whether the kernel must be reconciled.
    fn upkeep(&mut self) -> impl Future<Output = Result<bool, KernelError>> + Send {
        async { Ok(false) }
    }
    /// Whether a reconcile can succeed now (the interfaces it writes to are there).
    fn ready(&self) -> bool {
        true
    }
    /// Every other second: follows which bridge port each VM is behind.
    fn follow_ports(&mut self) -> impl Future<Output = Result<(), KernelError>> + Send {
        async { Ok(()) }
    }
    /// A DHCP client with `mac` just got its lease: the bridge has just learned its port.
    fn learn_port(&mut self, _mac: Mac) -> impl Future<Output = Result<(), KernelError>> + Send {
        async { Ok(()) }
    }
    /// The bridge the VMs are on, as last seen (its index changes when it is created again).
    fn bridge(&self) -> Option<&netlink::Link> {
        None
    }
}

/// Applies binding effects to any [`BindingMaps`] in the dataplane's write order.
pub fn apply_binding<M: BindingMaps>(
    maps: &mut M,
    effect: &Effect,
) -> Result<(), crate::kernel::dataplane::UpdateError> {
    match *effect {
        Effect::Bind {
            eip,
            slot,
            private,
            previous,
        } => execute(maps, &bind_ops(eip, slot, private, previous)),
        Effect::Unbind { eip, private } => {
            // Only the reverse entry that still names this EIP belongs to it.
            let ops = unbind_ops(eip, private);
            let own = maps
                .snat(private)
                .ok()
                .flatten()
                .is_some_and(|b| b.addr == eip.to_bits());
            execute(maps, if own { &ops } else { &ops[..1] })
        }
        Effect::ForgetSnat { private } => {
            execute(maps, &[crate::kernel::dataplane::MapOp::DelSnat { private }])
        }
        _ => Ok(()),
    }
}
