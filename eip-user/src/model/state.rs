//! What the daemon owns: pools, reservations and elastic IPs, as plain data.
//!
//! A change is a list of [`Write`]s. The store commits exactly these writes (with the history
//! entry) and the in-memory [`State`] applies the same list, so the two cannot drift; the kernel
//! follows from the difference (see `kernel::plan::effects`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    ops::Deref,
};

use ipnet::Ipv4Net;

use super::{Bound, Declined, Eip, Eips, Lease, Mac, Reservation, Write};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub pools: BTreeSet<Ipv4Net>,
    pub hosts: ByMac<Reservation>,
    pub eips: Eips,
    pub leases: ByMac<Lease>,
    pub declined: BTreeMap<Ipv4Addr, Declined>,
}

/// A record of a MAC and the private address it holds.
pub trait Addressed: Clone {
    fn mac(&self) -> Mac;
    fn ip(&self) -> Ipv4Addr;
}

impl Addressed for Reservation {
    fn mac(&self) -> Mac {
        self.mac
    }
    fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

impl Addressed for Lease {
    fn mac(&self) -> Mac {
        self.mac
    }
    fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// Reservations or leases by MAC, read as a map, with an index by address: what holds an
/// address is a lookup, not a walk (the DHCP responder asks it for every dynamic client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByMac<T> {
    map: BTreeMap<Mac, T>,
    /// (address, MAC) of every record.
    by_ip: BTreeSet<(Ipv4Addr, Mac)>,
}

impl<T> Default for ByMac<T> {
    fn default() -> Self {
        ByMac {
            map: BTreeMap::new(),
            by_ip: BTreeSet::new(),
        }
    }
}

impl<T> Deref for ByMac<T> {
    type Target = BTreeMap<Mac, T>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<T: Addressed> ByMac<T> {
    /// Adds `r`, or replaces the record of its MAC.
    pub fn insert(&mut self, r: T) {
        self.remove(&r.mac());
        self.by_ip.insert((r.ip(), r.mac()));
        self.map.insert(r.mac(), r);
    }

    pub fn remove(&mut self, mac: &Mac) -> Option<T> {
        let r = self.map.remove(mac)?;
        self.by_ip.remove(&(r.ip(), *mac));
        Some(r)
    }

    /// The records holding `ip`, by MAC.
    pub fn at(&self, ip: Ipv4Addr) -> impl Iterator<Item = &T> {
        self.by_ip
            .range((ip, Mac([0; 6]))..=(ip, Mac([0xff; 6])))
            .filter_map(|(_, m)| self.map.get(m))
    }
}

impl<T: Addressed> FromIterator<T> for ByMac<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut out = ByMac::default();
        iter.into_iter().for_each(|r| out.insert(r));
        out
    }
}

impl State {
    pub fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::PutPool(net) => {
                    self.pools.insert(*net);
                }
                Write::DelPool(net) => {
                    self.pools.remove(net);
                }
                Write::PutReservation(h) => {
                    self.hosts.insert(h.clone());
                }
                Write::DelReservation(mac) => {
                    self.hosts.remove(mac);
                }
                Write::PutEip(e) => {
                    self.eips.insert(e.clone());
                }
                Write::DelEip(a) => {
                    self.eips.remove(a);
                }
                Write::PutLease(l) => {
                    self.leases.insert(l.clone());
                }
                Write::DelLease(m) => {
                    self.leases.remove(m);
                }
                Write::PutDeclined(d) => {
                    self.declined.insert(d.ip, d.clone());
                }
                Write::DelDeclined(a) => {
                    self.declined.remove(a);
                }
            }
        }
    }

    pub fn pool_of(&self, addr: Ipv4Addr) -> Option<Ipv4Net> {
        self.pools.iter().find(|p| p.contains(&addr)).copied()
    }

    /// The EIP bound to a reservation, if any (at most one: 1:1 NAT).
    pub fn eip_of(&self, mac: Mac) -> Option<&Eip> {
        self.eips.bound_to(mac)
    }

    pub fn host_by_ip(&self, ip: Ipv4Addr) -> Option<&Reservation> {
        self.hosts.at(ip).next()
    }

    pub fn host_by_name(&self, name: &str) -> Option<&Reservation> {
        self.hosts.values().find(|h| h.name.as_deref() == Some(name))
    }

    /// What the binding maps must hold for `eip`: bound to a reservation that exists.
    pub fn bound(&self, eip: Ipv4Addr) -> Option<Bound> {
        let e = self.eips.get(&eip)?;
        let host = self.hosts.get(&e.bound?)?;
        let limited = e.limit_in.is_some() || e.limit_out.is_some();
        Some(Bound {
            private: host.ip,
            slot: e.slot
                | if limited {
                    eip_common::maps::SLOT_LIMITED
                } else {
                    0
                },
        })
    }

    pub fn bindings(&self) -> BTreeMap<Ipv4Addr, Bound> {
        self.eips
            .keys()
            .filter_map(|&a| self.bound(a).map(|b| (a, b)))
            .collect()
    }

    /// The VM entry (address and flags) the dataplane holds for `mac`: its reservation, or else
    /// its dynamic lease. The lifecycle keeps a dynamic lease off other MACs' reserved
    /// addresses (see `lifecycle::stale_leases`), so no two MACs claim one address.
    pub fn vm(&self, mac: Mac) -> Option<(Ipv4Addr, u16)> {
        match self.hosts.get(&mac) {
            Some(h) => Some((h.ip, State::vm_flags(h))),
            None => self.leases.get(&mac).map(|l| (l.ip, 0)),
        }
    }

    /// Every VM entry the dataplane holds, by MAC.
    pub fn vms(&self) -> BTreeMap<Mac, (Ipv4Addr, u16)> {
        self.hosts
            .keys()
            .chain(self.leases.keys())
            .filter_map(|m| self.vm(*m).map(|g| (*m, g)))
            .collect()
    }

    /// The dataplane flags of a reservation's VM entry.
    pub fn vm_flags(host: &Reservation) -> u16 {
        if host.quarantined {
            eip_common::maps::VM_QUARANTINED
        } else {
            0
        }
    }

    /// The lowest statistics slot no allocated EIP uses (slot 0 is the dataplane's sink).
    pub fn free_slot(&self, max: u32) -> Option<u32> {
        self.eips.free_slot(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What holds an address is what a walk over the records finds, after any sequence of
        /// inserts, replacements (a MAC moving to another address) and removals; two MACs may
        /// hold one address, as a corrupt store could have it.
        #[test]
        fn address_index_agrees_with_a_walk(
            ops in prop::collection::vec((any::<bool>(), 0u8..8, 0u8..6), 0..80)
        ) {
            let mut leases = ByMac::<Lease>::default();
            for (put, m, a) in ops {
                let mac = Mac([2, 0, 0, 0, 0, m]);
                if put {
                    leases.insert(Lease {
                        mac,
                        ip: Ipv4Addr::new(10, 0, 0, a),
                        granted: 0,
                        expires: 1,
                        hostname: None,
                    });
                } else {
                    leases.remove(&mac);
                }
                for a in 0..6 {
                    let ip = Ipv4Addr::new(10, 0, 0, a);
                    let walked: Vec<&Lease> = leases.values().filter(|l| l.ip == ip).collect();
                    prop_assert_eq!(leases.at(ip).collect::<Vec<_>>(), walked);
                }
                prop_assert_eq!(leases.by_ip.len(), leases.len());
            }
        }
    }
}
