//! What time ends (leases, declines), and what a lease script is told.

use super::*;

/// How long a declined address stays out of offers (dnsmasq's DECLINE_BACKOFF).
pub const DECLINE_BACKOFF: u64 = 600;

/// What time ends: leases past their expiry, and declined addresses past the back-off.
pub fn expire(state: &State, now: u64) -> Change {
    let leases: Vec<&Lease> = state.leases.values().filter(|l| l.expires <= now).collect();
    let declined: Vec<Ipv4Addr> = state
        .declined
        .values()
        .filter(|d| d.at.saturating_add(DECLINE_BACKOFF) <= now)
        .map(|d| d.ip)
        .collect();
    let mut parts = Vec::new();
    if !leases.is_empty() {
        let list: Vec<String> = leases.iter().map(|l| format!("{} ({})", l.ip, l.mac)).collect();
        parts.push(format!("leases expired: {}", list.join(", ")));
    }
    if !declined.is_empty() {
        let list: Vec<String> = declined.iter().map(Ipv4Addr::to_string).collect();
        parts.push(format!("declined addresses usable again: {}", list.join(", ")));
    }
    Change {
        writes: leases
            .iter()
            .map(|l| Write::DelLease(l.mac))
            .chain(declined.into_iter().map(Write::DelDeclined))
            .collect(),
        message: parts.join("; "),
    }
}

/// What a lease script is told (dnsmasq's `--dhcp-script` verbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseVerb {
    Add,
    Old,
    Del,
}

impl LeaseVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseVerb::Add => "add",
            LeaseVerb::Old => "old",
            LeaseVerb::Del => "del",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEvent {
    pub verb: LeaseVerb,
    pub lease: Lease,
}

/// The lease events a change makes, from the leases it touched: a new lease is `add`, a
/// renewal of the same address `old`, an ended one `del` (an address change is `del`, `add`).
pub fn lease_events(before: &State, after: &State, writes: &[Write]) -> Vec<LeaseEvent> {
    let macs: BTreeSet<Mac> = writes
        .iter()
        .filter_map(|w| match w {
            Write::PutLease(l) => Some(l.mac),
            Write::DelLease(m) => Some(*m),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for mac in macs {
        let (l0, l1) = (before.leases.get(&mac), after.leases.get(&mac));
        let event = |verb, l: &Lease| LeaseEvent {
            verb,
            lease: l.clone(),
        };
        match (l0, l1) {
            (Some(a), Some(b)) if a.ip == b.ip => out.push(event(LeaseVerb::Old, b)),
            (a, b) => {
                out.extend(a.map(|a| event(LeaseVerb::Del, a)));
                out.extend(b.map(|b| event(LeaseVerb::Add, b)));
            }
        }
    }
    out
}
