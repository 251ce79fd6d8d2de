//! The kernel in memory: the same effects and view as the real one, for the engine's tests
//! and property tests without root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use eip_common::{
    limiter::Limit,
    maps::{Counter, EipStats, slot_index},
};
use ipnet::Ipv4Net;

use super::{Kernel, KernelError, KernelView, apply_binding, dataplane::update::MemMaps, plan::Effect};
use crate::model::{Mac, rate::dataplane_limit};

/// The kernel in memory. `fail_on` makes the n-th effect fail, to test what a failure leaves.
#[derive(Debug, Default)]
pub struct MemKernel {
    pub maps: MemMaps,
    pub vms: BTreeMap<Ipv4Addr, (Mac, u16)>,
    pub macs: BTreeMap<Mac, (Ipv4Addr, u16)>,
    pub aliases: BTreeSet<Ipv4Addr>,
    pub pools: BTreeSet<Ipv4Net>,
    pub limits: BTreeMap<u32, Limit>,
    pub announced: Vec<Ipv4Addr>,
    pub resets: Vec<u32>,
    pub applied: usize,
    pub fail_on: Option<usize>,
    pub vm_capacity: Option<usize>,
}

impl Kernel for MemKernel {
    async fn apply(&mut self, effect: &Effect) -> Result<(), KernelError> {
        self.applied += 1;
        if self.fail_on == Some(self.applied) {
            return Err(KernelError::Injected);
        }
        match *effect {
            Effect::ResetStats { slot } => self.resets.push(slot),
            Effect::SetLimit {
                slot,
                inbound,
                outbound,
            } => {
                self.limits.insert(slot, dataplane_limit(inbound, outbound));
            }
            Effect::DelVm { private, mac } => {
                if self.vms.get(&private).is_some_and(|v| v.0 == mac) {
                    self.vms.remove(&private);
                }
                if self.macs.get(&mac).is_some_and(|m| m.0 == private) {
                    self.macs.remove(&mac);
                }
            }
            Effect::SetVm { private, mac, flags } => {
                if let Some(cap) = self.vm_capacity
                    && (self.vms.len() >= cap && !self.vms.contains_key(&private)
                        || self.macs.len() >= cap && !self.macs.contains_key(&mac))
                {
                    return Err(KernelError::VmTableFull(cap));
                }
                self.vms.insert(private, (mac, flags));
                self.macs.insert(mac, (private, flags));
            }
            Effect::AddAlias(eip) => {
                self.aliases.insert(eip);
            }
            Effect::DelAlias(eip) => {
                self.aliases.remove(&eip);
            }
            Effect::Announce(eip) => self.announced.push(eip),
            Effect::AddPool(p) => {
                self.pools.insert(p);
            }
            Effect::DelPool(p) => {
                self.pools.remove(&p);
            }
            Effect::Bind { .. } | Effect::Unbind { .. } | Effect::ForgetSnat { .. } => {
                apply_binding(&mut self.maps, effect)?
            }
        }
        Ok(())
    }

    async fn view(&mut self) -> Result<KernelView, KernelError> {
        let pair = |b: &eip_common::maps::Binding| (Ipv4Addr::from_bits(b.addr), b.slot);
        Ok(KernelView {
            dnat: self.maps.dnat.iter().map(|(k, b)| (*k, pair(b))).collect(),
            snat: self.maps.snat.iter().map(|(k, b)| (*k, pair(b))).collect(),
            vms: self.vms.clone(),
            macs: self.macs.clone(),
            aliases: self.aliases.clone(),
            pools: self.pools.clone(),
            limits: self
                .maps
                .dnat
                .values()
                .map(|b| slot_index(b.slot))
                .map(|s| (s, self.limits.get(&s).copied().unwrap_or_default()))
                .collect(),
        })
    }

    fn eip_stats(&self, _slot: u32) -> Result<EipStats, KernelError> {
        Ok(EipStats::default())
    }

    fn counters(&self) -> Result<Vec<(Counter, u64)>, KernelError> {
        Ok(Counter::ALL.iter().map(|c| (*c, 0)).collect())
    }
}
