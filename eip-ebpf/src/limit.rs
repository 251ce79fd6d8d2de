//! Per-EIP bandwidth limits: eip-common's policer ([`eip_common::limiter`]) over the limit
//! the daemon wrote for the binding's slot. An EIP without a limit pays a bit test of its
//! binding's slot ([`SLOT_LIMITED`]); only a limited one looks its limit up and reads the
//! clock.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::bpf_ktime_get_ns;
use eip_common::{
    limiter::{Policer, Timeline, admit},
    maps::{SLOT_LIMITED, slot_index},
};

use crate::maps::{EIP_LIMIT_DROPS, EIP_LIMITS};

/// A timeline in the map value, which every CPU shares: plain loads and stores (a `u64` is
/// read and written whole), and the charge as one atomic add (BPF_ATOMIC | BPF_ADD).
struct Shared(*mut u64);

impl Timeline for Shared {
    #[inline(always)]
    fn load(&self) -> u64 {
        // SAFETY: a pointer into a map value, valid while the program runs.
        unsafe { core::ptr::read_volatile(self.0) }
    }

    #[inline(always)]
    fn store(&self, v: u64) {
        // SAFETY: as in `load`.
        unsafe { core::ptr::write_volatile(self.0, v) }
    }

    #[inline(always)]
    fn add(&self, v: u64) {
        // SAFETY: as in `load`; the old value is not used, so this is the plain atomic add
        // every BPF CPU version has.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(self.0, v);
        }
    }
}

/// Which way a packet goes through its EIP.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Toward the VM.
    In,
    /// From the VM.
    Out,
}

/// Whether `len` bytes through the EIP of `slot` (a binding's, [`SLOT_LIMITED`] included)
/// pass its limit that `way`. Counts what it drops.
#[inline(always)]
pub fn admit_len(slot: u32, way: Way, len: usize) -> bool {
    slot & SLOT_LIMITED == 0 || limited(slot_index(slot), way, len)
}

/// The limited EIP's part: a BPF-to-BPF call of its own, so that the fast path of an
/// unlimited EIP keeps the registers it had before limits (inlined, this body made LLVM
/// spill around it: +10 ns on egress ICMP).
#[inline(never)]
fn limited(slot: u32, way: Way, len: usize) -> bool {
    let Some(limit) = EIP_LIMITS.get_ptr_mut(slot) else {
        return true;
    };
    // SAFETY: a pointer to the slot's map value, valid while the program runs; the policer
    // is copied out field by field and only its timeline is written (see `Shared`).
    let policer = unsafe {
        match way {
            Way::In => &raw mut (*limit).inbound,
            Way::Out => &raw mut (*limit).outbound,
        }
    };
    // SAFETY: as above.
    let p: Policer = unsafe { *policer };
    // Limited the other way only.
    if !p.is_limited() {
        return true;
    }
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: as above.
    if admit(
        &Shared(unsafe { &raw mut (*policer).tat_ns }),
        &p,
        now,
        len as u64,
    ) {
        return true;
    }
    if let Some(d) = EIP_LIMIT_DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU: no other writer while this program runs on this CPU.
        unsafe {
            match way {
                Way::In => {
                    (*d).in_packets += 1;
                    (*d).in_bytes += len as u64;
                }
                Way::Out => {
                    (*d).out_packets += 1;
                    (*d).out_bytes += len as u64;
                }
            }
        }
    }
    false
}
