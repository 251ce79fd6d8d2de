//! The pools EIPs are taken from: added only where no address is the host's or private.

use super::*;

/// Adds pool `net`, refused when it overlaps another pool, the bridge subnet, a range that is
/// never public, or an address or subnet of the host's interfaces (`host`, the daemon's EIP
/// aliases left out): binding such an address would take it from the host, the hypervisor's
/// own uplink included.
pub fn pool_add(state: &State, limits: &Limits, net: Ipv4Net, host: &[Ipv4Net]) -> Result<Change, Refusal> {
    let net = net.trunc();
    if let Some(existing) = state
        .pools
        .iter()
        .find(|p| p.contains(&net.network()) || net.contains(&p.network()))
    {
        return Err(Refusal::PoolOverlaps {
            new: net,
            existing: *existing,
        });
    }
    if overlaps(net, limits.private) {
        return Err(Refusal::PoolIsPrivate(net));
    }
    for (range, what) in NOT_PUBLIC {
        let range: Ipv4Net = range.parse().expect("a valid constant range");
        if overlaps(net, range) {
            return Err(Refusal::PoolNotPublic {
                pool: net,
                range,
                what,
            });
        }
    }
    if let Some(h) = host.iter().find(|h| overlaps(net, h.trunc())) {
        return Err(Refusal::PoolOnHost { pool: net, net: *h });
    }
    Ok(Change {
        writes: vec![Write::PutPool(net)],
        message: format!("added pool {net}"),
    })
}

/// Ranges a pool may never overlap: no address in them is a public one (RFC 6890).
const NOT_PUBLIC: [(&str, &str); 5] = [
    ("0.0.0.0/8", "this network"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
];

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Deleting a pool releases its allocated (unbound) addresses with it.
pub fn pool_del(state: &State, net: Ipv4Net) -> Result<Change, Refusal> {
    let net = net.trunc();
    if !state.pools.contains(&net) {
        return Err(Refusal::NoSuchPool(net));
    }
    let inside: Vec<&Eip> = state.eips.values().filter(|e| net.contains(&e.addr)).collect();
    if let Some(e) = inside.iter().find(|e| e.bound.is_some()) {
        return Err(Refusal::PoolInUse {
            pool: net,
            eip: e.addr,
        });
    }
    let mut writes: Vec<Write> = inside.iter().map(|e| Write::DelEip(e.addr)).collect();
    writes.push(Write::DelPool(net));
    Ok(Change {
        message: format!(
            "deleted pool {net} ({} allocated addresses released)",
            inside.len()
        ),
        writes,
    })
}
