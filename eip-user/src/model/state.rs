//! What the daemon owns: pools, reservations and elastic IPs, as plain data.
//!
//! A change is a list of [`Write`]s. The store commits exactly these writes (with the history
//! entry) and the in-memory [`State`] applies the same list, so the two cannot drift; the kernel
//! follows from the difference (see `kernel::plan::effects`).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::Ipv4Addr,
    ops::Deref,
    str::FromStr,
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use crate::model::rate::RateLimit;

/// A MAC address; parsed from `aa:bb:cc:dd:ee:ff` (or `-` separators), shown lower-case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let bad = || BadMac(s.to_owned());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_mac(self.0))
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TryFrom<String> for Mac {
    type Error = BadMac;
    fn try_from(s: String) -> Result<Self, BadMac> {
        s.parse()
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

/// Where a reservation came from: the hosts file owns its lines (a line removed there is a
/// reservation deleted), the CLI owns the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Cli,
    File,
}

/// A reservation: this MAC always gets this private address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub mac: Mac,
    pub name: Option<String>,
    pub ip: Ipv4Addr,
    pub source: Source,
    #[serde(default)]
    pub quarantined: bool,
}

/// An allocated elastic IP. `slot` indexes its per-CPU counters in the dataplane and stays
/// with the address from allocation to release, so moves keep the counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eip {
    pub addr: Ipv4Addr,
    pub slot: u32,
    /// The reservation (by MAC) it is bound to.
    pub bound: Option<Mac>,
    /// Its bandwidth limit toward the VM, if any. A limit belongs to the EIP: it stays when
    /// the EIP moves and while it is unbound. (Absent from records of versions before
    /// limits, and from records of unlimited EIPs.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_in: Option<RateLimit>,
    /// ...and from the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_out: Option<RateLimit>,
}

/// A DHCP lease: `mac` holds `ip` until `expires` (seconds since the Unix epoch, wall clock, so
/// it means the same after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// When the lease was last granted or renewed.
    pub granted: u64,
    pub expires: u64,
    /// The reservation's name, else the name the client sent (if it is a valid host name).
    pub hostname: Option<String>,
}

/// An address a client declined (RFC 2131 DHCPDECLINE: something else answers on it). It is
/// not offered again until the back-off has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declined {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub at: u64,
}

/// The addresses `--dhcp-range` hands out to MACs without a reservation, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Range {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    /// How many addresses it holds (at least one).
    pub fn size(&self) -> u32 {
        (self.end.to_bits() - self.start.to_bits()).saturating_add(1)
    }

    /// The `i`-th address, wrapping around.
    pub fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.start.to_bits() + i % self.size())
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for Range {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').ok_or_else(|| {
            format!("{s:?} is not a range (expected START-END, like 192.168.6.100-192.168.6.199)")
        })?;
        let start: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let end: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not an IPv4 address"))?;
        if start > end {
            return Err(format!("the range {s} ends before it starts"));
        }
        Ok(Range { start, end })
    }
}

/// One record written to (or removed from) the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    PutPool(Ipv4Net),
    DelPool(Ipv4Net),
    PutHost(Host),
    DelHost(Mac),
    PutEip(Eip),
    DelEip(Ipv4Addr),
    PutLease(Lease),
    DelLease(Mac),
    PutDeclined(Declined),
    DelDeclined(Ipv4Addr),
}

/// What the kernel must hold for one bound EIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub private: Ipv4Addr,
    /// The binding maps' slot value: the EIP's slot, with
    /// [`eip_common::maps::SLOT_LIMITED`] when it has a limit either way.
    pub slot: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub pools: BTreeSet<Ipv4Net>,
    pub hosts: ByMac<Host>,
    pub eips: Eips,
    pub leases: ByMac<Lease>,
    pub declined: BTreeMap<Ipv4Addr, Declined>,
}

/// A record of a MAC and the private address it holds.
pub trait Addressed: Clone {
    fn mac(&self) -> Mac;
    fn ip(&self) -> Ipv4Addr;
}

impl Addressed for Host {
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
                Write::PutHost(h) => {
                    self.hosts.insert(h.clone());
                }
                Write::DelHost(mac) => {
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

    pub fn host_by_ip(&self, ip: Ipv4Addr) -> Option<&Host> {
        self.hosts.at(ip).next()
    }

    pub fn host_by_name(&self, name: &str) -> Option<&Host> {
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
    pub fn guest(&self, mac: Mac) -> Option<(Ipv4Addr, u16)> {
        match self.hosts.get(&mac) {
            Some(h) => Some((h.ip, State::guest_flags(h))),
            None => self.leases.get(&mac).map(|l| (l.ip, 0)),
        }
    }

    /// Every VM entry the dataplane holds, by MAC.
    pub fn guests(&self) -> BTreeMap<Mac, (Ipv4Addr, u16)> {
        self.hosts
            .keys()
            .chain(self.leases.keys())
            .filter_map(|m| self.guest(*m).map(|g| (*m, g)))
            .collect()
    }

    pub fn lease_by_ip(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.at(ip).next()
    }

    /// The dataplane flags of a reservation's VM entry.
    pub fn guest_flags(host: &Host) -> u16 {
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

/// The allocated EIPs by address, read as a map, with the indexes a bind needs so that its
/// cost does not grow with the number of EIPs: the EIP bound to each MAC, and the free
/// statistics slots.
#[derive(Debug, Clone, Default)]
pub struct Eips {
    map: BTreeMap<Ipv4Addr, Eip>,
    by_mac: HashMap<Mac, Ipv4Addr>,
    /// How many EIPs use each slot (one, unless a store was edited by hand).
    slots: BTreeMap<u32, u32>,
    /// The unused slots below the highest used one.
    holes: Gaps,
}

/// A set of slots kept as disjoint ranges (start -> end, exclusive; adjacent ones merged), so
/// a gap costs one entry however wide it is: an excerpt of the state holding one EIP of slot
/// 100,000 must not list the 99,999 below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Gaps(BTreeMap<u32, u32>);

impl Gaps {
    /// Adds `a..b`, which holds no slot of the set.
    fn add(&mut self, mut a: u32, mut b: u32) {
        if a >= b {
            return;
        }
        if let Some((&s, &e)) = self.0.range(..a).next_back()
            && e == a
        {
            self.0.remove(&s);
            a = s;
        }
        if let Some(e) = self.0.remove(&b) {
            b = e;
        }
        self.0.insert(a, b);
    }

    fn remove(&mut self, x: u32) {
        if let Some((&s, &e)) = self.0.range(..=x).next_back()
            && x < e
        {
            self.0.remove(&s);
            self.add(s, x);
            self.add(x + 1, e);
        }
    }

    /// Drops every slot at or above `x`.
    fn truncate(&mut self, x: u32) {
        self.0.split_off(&x);
        if let Some((_, e)) = self.0.range_mut(..x).next_back() {
            *e = (*e).min(x);
        }
    }

    /// The lowest slot of the set at or above `x`.
    fn first_from(&self, x: u32) -> Option<u32> {
        match self.0.range(..=x).next_back() {
            Some((_, &e)) if x < e => Some(x),
            _ => self.0.range(x..).next().map(|(&s, _)| s),
        }
    }

    #[cfg(test)]
    fn slots(&self) -> BTreeSet<u32> {
        self.0.iter().flat_map(|(&s, &e)| s..e).collect()
    }
}

impl PartialEq for Eips {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl Eq for Eips {}

impl Deref for Eips {
    type Target = BTreeMap<Ipv4Addr, Eip>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Eips {
    /// Adds `e`, or replaces the EIP of the same address.
    pub fn insert(&mut self, e: Eip) -> Option<Eip> {
        let old = self.remove(&e.addr);
        if let Some(mac) = e.bound {
            self.by_mac.insert(mac, e.addr);
        }
        let high = self.high();
        if e.slot > high {
            self.holes.add(high + 1, e.slot);
        }
        self.holes.remove(e.slot);
        *self.slots.entry(e.slot).or_default() += 1;
        self.map.insert(e.addr, e);
        old
    }

    pub fn remove(&mut self, addr: &Ipv4Addr) -> Option<Eip> {
        let e = self.map.remove(addr)?;
        if let Some(mac) = e.bound
            && self.by_mac.get(&mac) == Some(addr)
        {
            self.by_mac.remove(&mac);
        }
        if let Some(n) = self.slots.get_mut(&e.slot) {
            *n -= 1;
            if *n == 0 {
                self.slots.remove(&e.slot);
                if e.slot < self.high() {
                    self.holes.add(e.slot, e.slot + 1);
                } else {
                    // The highest slot went: the holes just below it are above the new high.
                    self.holes.truncate(self.high());
                }
            }
        }
        Some(e)
    }

    pub fn clear(&mut self) {
        *self = Eips::default();
    }

    /// The EIP bound to `mac`, if any.
    pub fn bound_to(&self, mac: Mac) -> Option<&Eip> {
        self.by_mac.get(&mac).and_then(|a| self.map.get(a))
    }

    fn high(&self) -> u32 {
        self.slots.last_key_value().map_or(0, |(&s, _)| s)
    }

    /// The lowest slot in 1..=`max` no EIP uses.
    pub fn free_slot(&self, max: u32) -> Option<u32> {
        // Slot 0 is never used, so the first hole at or above 1 is the lowest free slot.
        let slot = match self.holes.first_from(1) {
            Some(h) => h,
            None => self.high() + 1,
        };
        (slot <= max).then_some(slot)
    }
}

/// The addresses of a pool that can be handed out: all of them, but the network and broadcast
/// addresses of a pool wider than /31 (a routed block's first and last address are often
/// unusable upstream, and an on-link one's always are).
pub fn usable(net: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    // ipnet's `hosts` is exactly this rule.
    net.hosts()
}

/// Whether `addr` is one of [`usable`]'s addresses, without walking the pool.
pub fn is_usable(net: Ipv4Net, addr: Ipv4Addr) -> bool {
    net.contains(&addr) && (net.prefix_len() >= 31 || (addr != net.network() && addr != net.broadcast()))
}

/// A MAC as `ip link` writes it: `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The indexes answer what a walk over every EIP answers, after any sequence of
        /// inserts, replacements and removals (addresses and slots drawn from small ranges so
        /// that they collide).
        #[test]
        fn eip_indexes_agree_with_a_walk(
            ops in prop::collection::vec((any::<bool>(), 0u8..24, 1u32..20, prop::option::of(0u8..8)), 0..80)
        ) {
            let mut eips = Eips::default();
            for (put, a, slot, mac) in ops {
                let addr = Ipv4Addr::new(203, 0, 113, a);
                let bound = mac.map(|m| Mac([2, 0, 0, 0, 0, m]));
                if put {
                    // Keep the invariants the lifecycle keeps: one EIP per MAC, one per slot.
                    let taken = eips.values().any(|e| {
                        e.addr != addr && (e.slot == slot || (bound.is_some() && e.bound == bound))
                    });
                    if !taken {
                        eips.insert(Eip {
                            addr,
                            slot,
                            bound,
                            limit_in: None,
                            limit_out: None,
                        });
                    }
                } else {
                    eips.remove(&addr);
                }
                let used: BTreeSet<u32> = eips.values().map(|e| e.slot).collect();
                // The holes are exactly the unused slots below the highest used one.
                let high = used.last().copied().unwrap_or(0);
                let holes: BTreeSet<u32> = (1..high).filter(|s| !used.contains(s)).collect();
                prop_assert_eq!(&eips.holes.slots(), &holes);
                // The ranges are disjoint and not adjacent: one entry per gap.
                let ranges: Vec<(u32, u32)> = eips.holes.0.iter().map(|(&s, &e)| (s, e)).collect();
                prop_assert!(ranges.iter().all(|(s, e)| s < e));
                prop_assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "{:?}", ranges);
                for max in [0, 5, 19, 40] {
                    prop_assert_eq!(eips.free_slot(max), (1..=max).find(|s| !used.contains(s)));
                }
                for m in 0..8 {
                    let mac = Mac([2, 0, 0, 0, 0, m]);
                    prop_assert_eq!(eips.bound_to(mac), eips.values().find(|e| e.bound == Some(mac)));
                }
            }
        }

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

    #[test]
    fn a_wide_gap_is_one_entry() {
        // What an excerpt of the state holds when a bind takes slot 100,000: the cost of
        // keeping the gap below it must not grow with its width.
        let mut eips = Eips::default();
        let addr = Ipv4Addr::new(198, 18, 0, 1);
        eips.insert(Eip {
            addr,
            slot: 100_000,
            bound: None,
            limit_in: None,
            limit_out: None,
        });
        assert_eq!(eips.holes.0.len(), 1);
        assert_eq!(eips.free_slot(200_000), Some(1));
        eips.remove(&addr);
        assert!(eips.holes.0.is_empty());
    }

    #[test]
    fn macs_parse_and_print() {
        let m: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
        assert_eq!("52-54-00-ab-cd-01".parse::<Mac>().unwrap(), m);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "5:54:00:ab:cd:01",
            "zz:54:00:ab:cd:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn usable_addresses_skip_network_and_broadcast() {
        let net: Ipv4Net = "203.0.113.0/30".parse().unwrap();
        let v: Vec<_> = usable(net).collect();
        assert_eq!(
            v,
            [
                "203.0.113.1".parse::<Ipv4Addr>().unwrap(),
                "203.0.113.2".parse().unwrap()
            ]
        );
        let one: Ipv4Net = "203.0.113.7/32".parse().unwrap();
        assert_eq!(
            usable(one).collect::<Vec<_>>(),
            ["203.0.113.7".parse::<Ipv4Addr>().unwrap()]
        );
        for net in [
            net,
            one,
            "203.0.113.6/31".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
        ] {
            for last in 0..=255u8 {
                let a = Ipv4Addr::new(203, 0, 113, last);
                assert_eq!(is_usable(net, a), usable(net).any(|u| u == a), "{net} {a}");
            }
        }
    }
}
