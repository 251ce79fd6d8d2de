//! The one effect planner: what the kernel must do, in the order it must run, both for a
//! change the engine just committed ([`effects`]: from the state before to the state after,
//! looking only at the records the change wrote) and for reconciliation ([`reconcile`]: from
//! what the kernel holds to what the state asks for). Both sort through [`in_order`], so a
//! change and a repair run their effects in the same order.

use std::{collections::BTreeSet, net::Ipv4Addr};

use eip_common::maps::slot_index;
use ipnet::Ipv4Net;

use super::{KernelView, limit_of};
use crate::model::{Bound, Eip, Mac, RateLimit, State, Write};

/// Kernel work, in the order it must run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// A pool's addresses become sources ingress refuses from outside (before any of them
    /// can be bound).
    AddPool(Ipv4Net),
    /// A new allocation starts its counters from zero (the slot may have served another EIP).
    ResetStats {
        slot: u32,
    },
    /// The slot's bandwidth limit, both ways (`None`: none that way). Written for every new
    /// allocation too (the slot may hold another EIP's), before any binding uses the slot.
    SetLimit {
        slot: u32,
        inbound: Option<RateLimit>,
        outbound: Option<RateLimit>,
    },
    /// Inbound translation stops, then outbound (if the reverse entry still names this EIP).
    Unbind {
        eip: Ipv4Addr,
        private: Ipv4Addr,
    },
    /// A reverse entry no binding owns (reconcile only).
    ForgetSnat {
        private: Ipv4Addr,
    },
    DelAlias(Ipv4Addr),
    /// Removes the VM entry of `private` if it names `mac`, and the MAC's entry if it names
    /// `private`: an entry another reservation took over is left alone.
    DelVm {
        private: Ipv4Addr,
        mac: Mac,
    },
    SetVm {
        private: Ipv4Addr,
        mac: Mac,
        flags: u16,
    },
    /// `previous`: the private address the EIP leaves (a move), whose reverse entry goes last.
    Bind {
        eip: Ipv4Addr,
        slot: u32,
        private: Ipv4Addr,
        previous: Option<Ipv4Addr>,
    },
    AddAlias(Ipv4Addr),
    /// Gratuitous ARP, so the upstream router learns the (new) owner at once.
    Announce(Ipv4Addr),
    /// A deleted pool's addresses are ordinary sources again.
    DelPool(Ipv4Net),
}

impl Effect {
    /// The [`Effect::SetLimit`] that gives `e`'s slot its limit.
    pub fn set_limit(e: &Eip) -> Effect {
        Effect::SetLimit {
            slot: e.slot,
            inbound: e.limit_in,
            outbound: e.limit_out,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Effect::AddPool(_) | Effect::ResetStats { .. } | Effect::SetLimit { .. } => 0,
            Effect::Unbind { .. } | Effect::ForgetSnat { .. } => 1,
            Effect::DelAlias(_) => 2,
            Effect::DelVm { .. } => 3,
            Effect::SetVm { .. } => 4,
            Effect::Bind { .. } => 5,
            Effect::AddAlias(_) => 6,
            Effect::Announce(_) => 7,
            Effect::DelPool(_) => 8,
        }
    }
}

/// The kernel work that takes the dataplane from `before` to `after`, looking only at the
/// records `writes` touched (and the EIPs bound to touched reservations).
///
/// Order: unbinds first (inbound stops before the alias goes), then guests (removed, then
/// added, so two reservations may swap addresses), then binds, then aliases and announcements,
/// so the router is told only once the EIP is served.
pub fn effects(before: &State, after: &State, writes: &[Write]) -> Vec<Effect> {
    let mut macs = BTreeSet::new();
    let mut eips = BTreeSet::new();
    let mut out = Vec::new();
    for w in writes {
        match w {
            Write::PutPool(n) if !before.pools.contains(n) => out.push(Effect::AddPool(*n)),
            Write::DelPool(n) if before.pools.contains(n) && !after.pools.contains(n) => {
                out.push(Effect::DelPool(*n))
            }
            Write::PutReservation(h) => {
                macs.insert(h.mac);
            }
            Write::DelReservation(m) => {
                macs.insert(*m);
            }
            Write::PutLease(l) => {
                macs.insert(l.mac);
            }
            Write::DelLease(m) => {
                macs.insert(*m);
            }
            Write::PutEip(e) => {
                eips.insert(e.addr);
            }
            Write::DelEip(a) => {
                eips.insert(*a);
            }
            Write::PutPool(_) | Write::DelPool(_) | Write::PutDeclined(_) | Write::DelDeclined(_) => {}
        }
    }
    for s in [before, after] {
        eips.extend(
            s.eips
                .values()
                .filter(|e| e.bound.is_some_and(|m| macs.contains(&m)))
                .map(|e| e.addr),
        );
    }
    let guests: Vec<_> = macs
        .iter()
        .map(|m| (*m, before.vm(*m), after.vm(*m)))
        .filter(|(_, g0, g1)| g0 != g1)
        .collect();
    // Every removal before any addition: a full VM table takes a new guest in the place of
    // one that goes in the same change.
    for (mac, g0, g1) in &guests {
        if let Some((ip0, _)) = g0.filter(|g0| g1.is_none_or(|g1| g1.0 != g0.0)) {
            out.push(Effect::DelVm {
                private: ip0,
                mac: *mac,
            });
        }
    }
    for (mac, _, g1) in &guests {
        if let Some((ip1, flags)) = *g1 {
            out.push(Effect::SetVm {
                private: ip1,
                mac: *mac,
                flags,
            });
        }
    }
    // Private addresses some touched EIP still maps to afterwards: a move must not delete
    // their reverse entries.
    let kept: BTreeSet<Ipv4Addr> = eips
        .iter()
        .filter_map(|a| after.bound(*a))
        .map(|b| b.private)
        .collect();
    for &eip in &eips {
        let (b0, b1): (Option<Bound>, Option<Bound>) = (before.bound(eip), after.bound(eip));
        let e0 = before.eips.get(&eip);
        if let Some(e) = after.eips.get(&eip) {
            if e0.is_none() {
                out.push(Effect::ResetStats { slot: e.slot });
            }
            if e0.is_none_or(|e0| (e0.limit_in, e0.limit_out) != (e.limit_in, e.limit_out)) {
                out.push(Effect::set_limit(e));
            }
        }
        if b0 == b1 {
            continue;
        }
        match (b0, b1) {
            (Some(b0), None) => {
                out.push(Effect::Unbind {
                    eip,
                    private: b0.private,
                });
                out.push(Effect::DelAlias(eip));
            }
            (b0, Some(b1)) => {
                out.push(Effect::Bind {
                    eip,
                    slot: b1.slot,
                    private: b1.private,
                    previous: b0.map(|b| b.private).filter(|p| !kept.contains(p)),
                });
                if b0.is_none() {
                    out.push(Effect::AddAlias(eip));
                }
                if b0.is_none_or(|b0| b0.private != b1.private) {
                    out.push(Effect::Announce(eip));
                }
            }
            (None, None) => {}
        }
    }
    in_order(out)
}

/// Sorts effects into the order they must run in, without duplicates.
fn in_order(mut out: Vec<Effect>) -> Vec<Effect> {
    out.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// The effects that take the kernel from `view` to what `state` asks for, each one a
/// correction the daemon logs.
pub fn reconcile(state: &State, view: &KernelView) -> Vec<Effect> {
    let want = KernelView::desired(state);
    let mut out = Vec::new();
    // Entries pairing a MAC and an address the state does not pair go (flags alone are fixed
    // by SetVm overwriting).
    for (mac, (ip, _)) in &view.macs {
        if want.macs.get(mac).map(|w| w.0) != Some(*ip) {
            out.push(Effect::DelVm {
                private: *ip,
                mac: *mac,
            });
        }
    }
    for (ip, (mac, _)) in &view.vms {
        if want.vms.get(ip).map(|w| w.0) != Some(*mac) {
            out.push(Effect::DelVm {
                private: *ip,
                mac: *mac,
            });
        }
    }
    for (mac, (ip, flags)) in &want.macs {
        if view.macs.get(mac) != Some(&(*ip, *flags)) || view.vms.get(ip) != Some(&(*mac, *flags)) {
            out.push(Effect::SetVm {
                private: *ip,
                mac: *mac,
                flags: *flags,
            });
        }
    }
    for (eip, (private, _)) in &view.dnat {
        if !want.dnat.contains_key(eip) {
            out.push(Effect::Unbind {
                eip: *eip,
                private: *private,
            });
        }
    }
    for (eip, &(private, slot)) in &want.dnat {
        if view.dnat.get(eip) != Some(&(private, slot)) || view.snat.get(&private) != Some(&(*eip, slot)) {
            out.push(Effect::Bind {
                eip: *eip,
                slot,
                private,
                previous: None,
            });
        }
    }
    for (eip, b) in state.bindings() {
        if let Some(e) = state.eips.get(&eip)
            && view.limits.get(&slot_index(b.slot)) != Some(&limit_of(e))
        {
            out.push(Effect::set_limit(e));
        }
    }
    for private in view.snat.keys() {
        if !want.snat.contains_key(private) {
            out.push(Effect::ForgetSnat { private: *private });
        }
    }
    for eip in view.aliases.difference(&want.aliases) {
        out.push(Effect::DelAlias(*eip));
    }
    for eip in want.aliases.difference(&view.aliases) {
        out.push(Effect::AddAlias(*eip));
        out.push(Effect::Announce(*eip));
    }
    for pool in view.pools.difference(&want.pools) {
        out.push(Effect::DelPool(*pool));
    }
    for pool in want.pools.difference(&view.pools) {
        out.push(Effect::AddPool(*pool));
    }
    in_order(out)
}
