//! The order of writes to the binding maps, so that no packet ever meets a half-made binding.
//!
//! Planning is pure (a list of [`MapOp`]) and executing it goes through [`BindingMaps`], which
//! the BPF maps and an in-memory stand-in both implement; so the order is tested without a
//! kernel, and the daemon's lifecycle calls the same code.

use std::{collections::HashMap, net::Ipv4Addr};

use eip_common::maps::Binding;

/// One write to the binding maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOp {
    /// private -> EIP: the VM's packets leave as the EIP (egress, the reverse entry).
    PutSnat {
        private: Ipv4Addr,
        eip: Ipv4Addr,
        slot: u32,
    },
    /// EIP -> private: the EIP's packets go to the VM (ingress, the forward entry).
    PutDnat {
        eip: Ipv4Addr,
        private: Ipv4Addr,
        slot: u32,
    },
    DelSnat {
        private: Ipv4Addr,
    },
    DelDnat {
        eip: Ipv4Addr,
    },
}

/// Binds `eip` (statistics slot `slot`) to `private`; `previous` is the private address the EIP
/// is bound to now, if any (a move).
///
/// 1. The new VM's reverse entry first: it may send as the EIP, while nothing arrives for it
///    yet, so no packet is misdirected.
/// 2. The forward entry flips in one map update: every packet to the EIP after it goes to the
///    new VM, none to the old one.
/// 3. The old VM's reverse entry goes last: until then its replies in flight still leave as
///    the EIP instead of leaking its private address.
pub fn bind_ops(eip: Ipv4Addr, slot: u32, private: Ipv4Addr, previous: Option<Ipv4Addr>) -> Vec<MapOp> {
    let mut ops = vec![
        MapOp::PutSnat { private, eip, slot },
        MapOp::PutDnat { eip, private, slot },
    ];
    if let Some(old) = previous.filter(|old| *old != private) {
        ops.push(MapOp::DelSnat { private: old });
    }
    ops
}

/// Unbinds `eip` from `private`: inbound translation stops first, then outbound.
pub fn unbind_ops(eip: Ipv4Addr, private: Ipv4Addr) -> Vec<MapOp> {
    vec![MapOp::DelDnat { eip }, MapOp::DelSnat { private }]
}

/// The two binding maps, as the update executor sees them.
pub trait BindingMaps {
    type Error: std::error::Error + Send + Sync + 'static;
    fn snat(&self, private: Ipv4Addr) -> Result<Option<Binding>, Self::Error>;
    fn dnat(&self, eip: Ipv4Addr) -> Result<Option<Binding>, Self::Error>;
    fn put_snat(&mut self, private: Ipv4Addr, value: Binding) -> Result<(), Self::Error>;
    fn put_dnat(&mut self, eip: Ipv4Addr, value: Binding) -> Result<(), Self::Error>;
    fn del_snat(&mut self, private: Ipv4Addr) -> Result<(), Self::Error>;
    fn del_dnat(&mut self, eip: Ipv4Addr) -> Result<(), Self::Error>;
}

#[derive(Debug, thiserror::Error)]
#[error("map update {op:?} failed{}", if *.rolled_back { " (earlier writes rolled back)" } else { " and rolling back the earlier writes failed too" })]
pub struct UpdateError {
    pub op: MapOp,
    pub rolled_back: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What a key held before an op, to put it back on failure.
enum Prior {
    Snat(Ipv4Addr, Option<Binding>),
    Dnat(Ipv4Addr, Option<Binding>),
}

fn restore<M: BindingMaps>(maps: &mut M, prior: &Prior) -> Result<(), M::Error> {
    match *prior {
        Prior::Snat(k, Some(v)) => maps.put_snat(k, v),
        Prior::Snat(k, None) if maps.snat(k)?.is_some() => maps.del_snat(k),
        Prior::Dnat(k, Some(v)) => maps.put_dnat(k, v),
        Prior::Dnat(k, None) if maps.dnat(k)?.is_some() => maps.del_dnat(k),
        Prior::Snat(..) | Prior::Dnat(..) => Ok(()),
    }
}

/// Applies `ops` in order. If one fails, the ones before it are undone in reverse order, so the
/// maps are as they were (the Cilium way: a failed NAT update leaves no half binding).
pub fn execute<M: BindingMaps>(maps: &mut M, ops: &[MapOp]) -> Result<(), UpdateError> {
    let mut done: Vec<Prior> = Vec::with_capacity(ops.len());
    for op in ops {
        let step = (|| -> Result<Prior, M::Error> {
            Ok(match *op {
                MapOp::PutSnat { private, eip, slot } => {
                    let prior = Prior::Snat(private, maps.snat(private)?);
                    maps.put_snat(
                        private,
                        Binding {
                            addr: eip.to_bits(),
                            slot,
                        },
                    )?;
                    prior
                }
                MapOp::PutDnat { eip, private, slot } => {
                    let prior = Prior::Dnat(eip, maps.dnat(eip)?);
                    maps.put_dnat(
                        eip,
                        Binding {
                            addr: private.to_bits(),
                            slot,
                        },
                    )?;
                    prior
                }
                // A key that is already gone is left alone: a delete is idempotent, so a plan
                // (a reconcile's, say) may name an entry an earlier op of it removed.
                MapOp::DelSnat { private } => {
                    let prior = maps.snat(private)?;
                    if prior.is_some() {
                        maps.del_snat(private)?;
                    }
                    Prior::Snat(private, prior)
                }
                MapOp::DelDnat { eip } => {
                    let prior = maps.dnat(eip)?;
                    if prior.is_some() {
                        maps.del_dnat(eip)?;
                    }
                    Prior::Dnat(eip, prior)
                }
            })
        })();
        match step {
            Ok(prior) => done.push(prior),
            Err(e) => {
                let rolled_back = done.iter().rev().all(|p| restore(maps, p).is_ok());
                return Err(UpdateError {
                    op: *op,
                    rolled_back,
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(())
}

/// The binding maps in memory: for the lifecycle's tests and benchmarks, and to check the
/// order of writes (every op is logged).
#[derive(Debug, Default)]
pub struct MemMaps {
    pub snat: HashMap<Ipv4Addr, Binding>,
    pub dnat: HashMap<Ipv4Addr, Binding>,
    /// Write number at which to fail, to test rollback.
    pub fail_at: Option<usize>,
    pub writes: usize,
}

/// Why an in-memory map write failed.
#[derive(Debug, thiserror::Error)]
pub enum MemMapError {
    #[error("injected failure")]
    Injected,
    /// What the kernel answers (ENOENT) to a delete of a key that is not there.
    #[error("no such key {0}")]
    Missing(Ipv4Addr),
}

impl MemMaps {
    fn write(&mut self) -> Result<(), MemMapError> {
        self.writes += 1;
        if self.fail_at == Some(self.writes) {
            Err(MemMapError::Injected)
        } else {
            Ok(())
        }
    }
}

impl BindingMaps for MemMaps {
    type Error = MemMapError;
    fn snat(&self, private: Ipv4Addr) -> Result<Option<Binding>, MemMapError> {
        Ok(self.snat.get(&private).copied())
    }
    fn dnat(&self, eip: Ipv4Addr) -> Result<Option<Binding>, MemMapError> {
        Ok(self.dnat.get(&eip).copied())
    }
    fn put_snat(&mut self, private: Ipv4Addr, value: Binding) -> Result<(), MemMapError> {
        self.write()?;
        self.snat.insert(private, value);
        Ok(())
    }
    fn put_dnat(&mut self, eip: Ipv4Addr, value: Binding) -> Result<(), MemMapError> {
        self.write()?;
        self.dnat.insert(eip, value);
        Ok(())
    }
    fn del_snat(&mut self, private: Ipv4Addr) -> Result<(), MemMapError> {
        self.write()?;
        self.snat
            .remove(&private)
            .map(drop)
            .ok_or(MemMapError::Missing(private))
    }
    fn del_dnat(&mut self, eip: Ipv4Addr) -> Result<(), MemMapError> {
        self.write()?;
        self.dnat.remove(&eip).map(drop).ok_or(MemMapError::Missing(eip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    const VM1: Ipv4Addr = Ipv4Addr::new(192, 168, 6, 243);
    const VM2: Ipv4Addr = Ipv4Addr::new(192, 168, 6, 244);

    /// Where a packet to the EIP would go after each write of a move from VM1 to VM2: the
    /// old VM, the new VM or nowhere; and whether each VM's packets leave as the EIP.
    #[test]
    fn a_move_never_sends_the_eip_to_the_old_vm_after_the_flip() {
        let mut maps = MemMaps::default();
        execute(&mut maps, &bind_ops(EIP, 1, VM1, None)).unwrap();
        let ops = bind_ops(EIP, 1, VM2, Some(VM1));
        assert_eq!(
            ops,
            vec![
                MapOp::PutSnat {
                    private: VM2,
                    eip: EIP,
                    slot: 1
                },
                MapOp::PutDnat {
                    eip: EIP,
                    private: VM2,
                    slot: 1
                },
                MapOp::DelSnat { private: VM1 },
            ]
        );
        let mut seen_new = false;
        for op in &ops {
            execute(&mut maps, std::slice::from_ref(op)).unwrap();
            let to = maps.dnat[&EIP].addr;
            // The forward entry always points at a VM whose reverse entry exists: a reply
            // from whichever VM receives the EIP's traffic leaves as the EIP.
            assert!(maps.snat.contains_key(&Ipv4Addr::from_bits(to)), "after {op:?}");
            seen_new |= to == VM2.to_bits();
            assert!(
                !(seen_new && to == VM1.to_bits()),
                "back to the old VM after {op:?}"
            );
        }
        assert_eq!(maps.dnat.len(), 1);
        assert_eq!(maps.snat.keys().collect::<Vec<_>>(), vec![&VM2]);
    }

    #[test]
    fn rebinding_to_the_same_vm_keeps_its_reverse_entry() {
        assert_eq!(bind_ops(EIP, 1, VM1, Some(VM1)).len(), 2);
    }

    #[test]
    fn a_failed_write_rolls_back_the_earlier_ones() {
        for fail_at in 1..=3 {
            let mut maps = MemMaps::default();
            execute(&mut maps, &bind_ops(EIP, 1, VM1, None)).unwrap();
            let (snat, dnat) = (maps.snat.clone(), maps.dnat.clone());
            maps.fail_at = Some(maps.writes + fail_at);
            let err = execute(&mut maps, &bind_ops(EIP, 1, VM2, Some(VM1))).unwrap_err();
            assert!(err.rolled_back);
            assert_eq!(
                (maps.snat.clone(), maps.dnat.clone()),
                (snat, dnat),
                "failing write {fail_at}"
            );
        }
    }

    #[test]
    fn unbind_removes_both_entries() {
        let mut maps = MemMaps::default();
        execute(&mut maps, &bind_ops(EIP, 1, VM1, None)).unwrap();
        execute(&mut maps, &unbind_ops(EIP, VM1)).unwrap();
        assert!(maps.snat.is_empty() && maps.dnat.is_empty());
    }
}
