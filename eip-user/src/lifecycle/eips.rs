//! The verbs of an elastic IP: alloc, bind (and move), limit, unbind, release.

use super::*;

/// A new allocation of `addr`: a usable pool address nobody holds, with a free slot.
fn take(state: &State, limits: &Limits, addr: Ipv4Addr) -> Result<Eip, Refusal> {
    let pool = state.pool_of(addr).ok_or(Refusal::NotInPool(addr))?;
    if !is_usable(pool, addr) {
        return Err(Refusal::NotInPool(addr));
    }
    if state.eips.contains_key(&addr) {
        return Err(Refusal::AlreadyAllocated(addr));
    }
    let slot = state
        .free_slot(limits.max_bindings)
        .ok_or(Refusal::SlotsExhausted(limits.max_bindings))?;
    Ok(Eip {
        addr,
        slot,
        bound: None,
        limit_in: None,
        limit_out: None,
    })
}

pub fn alloc(state: &State, limits: &Limits, want: Option<Ipv4Addr>) -> Result<(Ipv4Addr, Change), Refusal> {
    let addr = match want {
        Some(a) => a,
        None => state
            .pools
            .iter()
            .flat_map(|p| usable(*p))
            .find(|a| !state.eips.contains_key(a))
            .ok_or(Refusal::PoolsExhausted)?,
    };
    let eip = take(state, limits, addr)?;
    Ok((
        addr,
        Change {
            writes: vec![Write::PutEip(eip)],
            message: format!("{addr}"),
        },
    ))
}

pub fn release(state: &State, addr: Ipv4Addr) -> Result<Change, Refusal> {
    let e = state.eips.get(&addr).ok_or(Refusal::NotAllocated(addr))?;
    let was = e.bound.and_then(|m| state.hosts.get(&m)).map(host_label);
    Ok(Change {
        writes: vec![Write::DelEip(addr)],
        message: match was {
            Some(h) => format!("released {addr} (was bound to {h})"),
            None => format!("released {addr}"),
        },
    })
}

pub fn bind(
    state: &State,
    limits: &Limits,
    addr: Ipv4Addr,
    target: &Target,
    no_move: bool,
) -> Result<Change, Refusal> {
    let host = resolve(state, target)?;
    let current = state.eips.get(&addr);
    if let Some(other) = state.eip_of(host.mac).filter(|e| e.addr != addr) {
        return Err(Refusal::HostHasEip {
            host: host_label(host),
            eip: other.addr,
        });
    }
    let eip = match current {
        Some(e) if e.bound == Some(host.mac) => {
            return Ok(Change {
                writes: vec![],
                message: format!("{addr} is already bound to {}", host_label(host)),
            });
        }
        Some(e) => {
            if let (true, Some(owner)) = (no_move, e.bound.and_then(|m| state.hosts.get(&m))) {
                return Err(Refusal::WouldMove {
                    eip: addr,
                    owner: host_label(owner),
                });
            }
            e.clone()
        }
        None => take(state, limits, addr)?,
    };
    let moved_from = eip.bound.and_then(|m| state.hosts.get(&m)).map(host_label);
    Ok(Change {
        writes: vec![Write::PutEip(Eip {
            bound: Some(host.mac),
            ..eip
        })],
        message: match moved_from {
            Some(from) => format!("moved {addr} from {from} to {}", host_label(host)),
            None => format!("bound {addr} to {}", host_label(host)),
        },
    })
}

/// [`bind`], and the EIP limited to `limit` both ways (`eip bind --limit`).
pub fn bind_limited(
    state: &State,
    limits: &Limits,
    addr: Ipv4Addr,
    target: &Target,
    no_move: bool,
    limit: RateLimit,
) -> Result<Change, Refusal> {
    let mut change = bind(state, limits, addr, target, no_move)?;
    let mut eip = match change.writes.pop() {
        Some(Write::PutEip(e)) => e,
        // Already bound there: the record as it is.
        _ => state
            .eips
            .get(&addr)
            .cloned()
            .ok_or(Refusal::NotAllocated(addr))?,
    };
    eip.limit_in = Some(limit);
    eip.limit_out = Some(limit);
    if state.eips.get(&addr) != Some(&eip) {
        change.message += &format!(", limited to {}", describe_limit(&eip));
        change.writes.push(Write::PutEip(eip));
    }
    Ok(change)
}

/// Sets, changes or removes an EIP's limit, each way on its own (`eip limit`). A pool
/// address not allocated yet is allocated with it, as `bind` allocates.
pub fn limit(
    state: &State,
    limits: &Limits,
    addr: Ipv4Addr,
    inbound: LimitChange,
    outbound: LimitChange,
) -> Result<Change, Refusal> {
    let (eip, new) = match state.eips.get(&addr) {
        Some(e) => (e.clone(), false),
        None => (take(state, limits, addr)?, true),
    };
    let next = Eip {
        limit_in: inbound.apply(eip.limit_in),
        limit_out: outbound.apply(eip.limit_out),
        ..eip.clone()
    };
    let limit = describe_limit(&next);
    if !new && next == eip {
        return Ok(Change {
            writes: vec![],
            message: format!("{addr} already has {limit}"),
        });
    }
    let message = match (next.limit_in, next.limit_out) {
        (None, None) => format!("{addr} has no limit"),
        _ => format!("limited {addr} to {limit}"),
    };
    Ok(Change {
        writes: vec![Write::PutEip(next)],
        message: if new {
            format!("allocated {addr}; {message}")
        } else {
            message
        },
    })
}

/// An EIP's limit in words: "20mbit (burst 128kb) both ways", "in ..., out ...", "no limit".
pub fn describe_limit(e: &Eip) -> String {
    let show = |l: Option<RateLimit>| l.map_or_else(|| "no limit".to_owned(), |l| l.to_string());
    match (e.limit_in, e.limit_out) {
        (None, None) => "no limit".into(),
        (a, b) if a == b => format!("{} both ways", show(a)),
        (a, b) => format!("in {}, out {}", show(a), show(b)),
    }
}

pub fn unbind(state: &State, addr: Ipv4Addr) -> Result<Change, Refusal> {
    let e = state.eips.get(&addr).ok_or(Refusal::NotAllocated(addr))?;
    if e.bound.is_none() {
        return Err(Refusal::NotBound(addr));
    }
    Ok(Change {
        writes: vec![Write::PutEip(Eip {
            bound: None,
            ..e.clone()
        })],
        message: format!("unbound {addr}"),
    })
}
