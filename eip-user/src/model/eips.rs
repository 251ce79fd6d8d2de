//! The elastic IPs, indexed by address, by slot and by the VM they are bound to.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    ops::Deref,
};

use super::{Eip, Mac};

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
    fn slots(&self) -> std::collections::BTreeSet<u32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use std::collections::BTreeSet;

    use crate::model::Eip;

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
}
