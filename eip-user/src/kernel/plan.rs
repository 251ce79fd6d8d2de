//! The one effect planner: what the kernel must do to go from one [`KernelView`] to another,
//! in the order it must run ([`plan`]). A change the engine just committed ([`effects`]) is
//! planned from the view the state asked for before it to the one it asks for after, both
//! over the records the change touched only, so a change costs the same with 10 or 100,000
//! bindings; reconciliation ([`reconcile`]) from the view the kernel reports to the one the
//! state asks for. A change adds the one thing no view can show: a new allocation's counters
//! start from zero.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::Ipv4Net;

use super::KernelView;
use crate::model::{Eip, Mac, RateLimit, State, Write};

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
    /// A reverse entry no binding owns (found by reconciliation).
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
pub fn effects(before: &State, after: &State, writes: &[Write]) -> Vec<Effect> {
    let touched = Touched::of(before, after, writes);
    let now = KernelView::desired_over(before, &touched);
    let want = KernelView::desired_over(after, &touched);
    let eips: Vec<&Eip> = touched.eips.iter().filter_map(|a| after.eips.get(a)).collect();
    let mut out = plan(&now, &want, &eips);
    for e in eips {
        if !before.eips.contains_key(&e.addr) {
            out.push(Effect::ResetStats { slot: e.slot });
        }
    }
    in_order(out)
}

/// The effects that take the kernel from `view` to what `state` asks for, each one a
/// correction the daemon logs.
pub fn reconcile(state: &State, view: &KernelView) -> Vec<Effect> {
    let want = KernelView::desired(state);
    let eips: Vec<&Eip> = want.dnat.keys().filter_map(|a| state.eips.get(a)).collect();
    in_order(plan(view, &want, &eips))
}

/// The records a change touched: the MACs of its reservations and leases, its EIPs and those
/// bound to its MACs (before or after), and its pools.
#[derive(Default)]
pub(super) struct Touched {
    pub(super) macs: BTreeSet<Mac>,
    pub(super) eips: BTreeSet<Ipv4Addr>,
    pub(super) pools: BTreeSet<Ipv4Net>,
}

impl Touched {
    fn of(before: &State, after: &State, writes: &[Write]) -> Touched {
        let mut t = Touched::default();
        for w in writes {
            match w {
                Write::PutPool(n) | Write::DelPool(n) => {
                    t.pools.insert(*n);
                }
                Write::PutReservation(r) => {
                    t.macs.insert(r.mac);
                }
                Write::PutLease(l) => {
                    t.macs.insert(l.mac);
                }
                Write::DelReservation(m) | Write::DelLease(m) => {
                    t.macs.insert(*m);
                }
                Write::PutEip(e) => {
                    t.eips.insert(e.addr);
                }
                Write::DelEip(a) => {
                    t.eips.insert(*a);
                }
                Write::PutDeclined(_) | Write::DelDeclined(_) => {}
            }
        }
        for s in [before, after] {
            let bound = s
                .eips
                .values()
                .filter(|e| e.bound.is_some_and(|m| t.macs.contains(&m)));
            t.eips.extend(bound.map(|e| e.addr).collect::<Vec<_>>());
        }
        t
    }
}

/// The planner: the effects that take the kernel from `now` to `want`. `eips` are the EIPs
/// whose limits `want` holds.
///
/// Order (see [`in_order`]): unbinds first (inbound stops before the alias goes), then VM
/// entries (removed, then added, so two reservations may swap addresses and a full VM table
/// takes a new entry in the place of one that goes), then binds, then aliases and
/// announcements, so the router is told only once the EIP is served.
fn plan(now: &KernelView, want: &KernelView, eips: &[&Eip]) -> Vec<Effect> {
    let mut out = Vec::new();
    // Entries pairing a MAC and an address that `want` does not pair go (flags alone are
    // fixed by SetVm overwriting).
    for (mac, (ip, _)) in &now.macs {
        if want.macs.get(mac).map(|w| w.0) != Some(*ip) {
            out.push(Effect::DelVm {
                private: *ip,
                mac: *mac,
            });
        }
    }
    for (ip, (mac, _)) in &now.vms {
        if want.vms.get(ip).map(|w| w.0) != Some(*mac) {
            out.push(Effect::DelVm {
                private: *ip,
                mac: *mac,
            });
        }
    }
    for (mac, (ip, flags)) in &want.macs {
        if now.macs.get(mac) != Some(&(*ip, *flags)) || now.vms.get(ip) != Some(&(*mac, *flags)) {
            out.push(Effect::SetVm {
                private: *ip,
                mac: *mac,
                flags: *flags,
            });
        }
    }
    // Reverse entries whose removal a binding effect already carries: an Unbind's (the entry
    // names its EIP) and a move's (the address the EIP leaves, removed last).
    let mut carried = BTreeSet::new();
    for (eip, (private, _)) in &now.dnat {
        if !want.dnat.contains_key(eip) {
            out.push(Effect::Unbind {
                eip: *eip,
                private: *private,
            });
            if now.snat.get(private).is_some_and(|s| s.0 == *eip) {
                carried.insert(*private);
            }
        }
    }
    for (eip, &(private, slot)) in &want.dnat {
        let was = now.dnat.get(eip).map(|w| w.0);
        if now.dnat.get(eip) != Some(&(private, slot)) || now.snat.get(&private) != Some(&(*eip, slot)) {
            let previous = was.filter(|p| *p != private && !want.snat.contains_key(p));
            carried.extend(previous);
            out.push(Effect::Bind {
                eip: *eip,
                slot,
                private,
                previous,
            });
        }
        // A move: the router learns the new owner at once.
        if was.is_some_and(|p| p != private) {
            out.push(Effect::Announce(*eip));
        }
    }
    for private in now.snat.keys() {
        if !want.snat.contains_key(private) && !carried.contains(private) {
            out.push(Effect::ForgetSnat { private: *private });
        }
    }
    for e in eips {
        if let Some(l) = want.limits.get(&e.slot)
            && now.limits.get(&e.slot) != Some(l)
        {
            out.push(Effect::set_limit(e));
        }
    }
    for eip in now.aliases.difference(&want.aliases) {
        out.push(Effect::DelAlias(*eip));
    }
    for eip in want.aliases.difference(&now.aliases) {
        out.push(Effect::AddAlias(*eip));
        out.push(Effect::Announce(*eip));
    }
    for pool in now.pools.difference(&want.pools) {
        out.push(Effect::DelPool(*pool));
    }
    for pool in want.pools.difference(&now.pools) {
        out.push(Effect::AddPool(*pool));
    }
    out
}

/// Sorts effects into the order they must run in, without duplicates.
fn in_order(mut out: Vec<Effect>) -> Vec<Effect> {
    out.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}
