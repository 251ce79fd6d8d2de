//! The maps (names, types and default sizes from `eip_common::maps`) and their accessors.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
};
use eip_common::maps::*;

#[map]
pub static EIP_DNAT: HashMap<u32, Binding> = HashMap::with_max_entries(DEFAULT_MAX_BINDINGS, 0);
#[map]
pub static EIP_SNAT: HashMap<u32, Binding> = HashMap::with_max_entries(DEFAULT_MAX_BINDINGS, 0);
#[map]
pub static EIP_VMS: HashMap<u32, Vm> = HashMap::with_max_entries(DEFAULT_MAX_VMS, 0);
#[map]
pub static EIP_MACS: HashMap<MacKey, HeldAddress> = HashMap::with_max_entries(DEFAULT_MAX_VMS, 0);
/// One more than the bindings: slot 0 is the sink (see `Binding::slot`).
#[map]
pub static EIP_STATS: PerCpuArray<EipStats> = PerCpuArray::with_max_entries(DEFAULT_MAX_BINDINGS + 1, 0);
#[map]
pub static EIP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);
#[map]
pub static EIP_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_PORTS, 0);
#[map]
pub static EIP_CONFIG: Array<Config> = Array::with_max_entries(1, 0);
#[map]
pub static EIP_PORT_DROPS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(MAX_PORTS, 0);
/// Per CPU, the time-exceeded token bucket: [last refill (ns since boot), tokens]. Not
/// pinned: it is the running program's own, and a new program starts with a full bucket.
#[map]
pub static EIP_ICMP_BUCKET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// One more than the bindings, as the stats.
#[map]
pub static EIP_LIMITS: Array<eip_common::limiter::Limit> =
    Array::with_max_entries(DEFAULT_MAX_BINDINGS + 1, 0);
#[map]
pub static EIP_LIMIT_DROPS: PerCpuArray<EipStats> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_BINDINGS + 1, 0);

#[map]
pub static EIP_UPLINK: Array<Uplink> = Array::with_max_entries(1, 0);

/// The bridge's ifindex, for `eip_port_in`'s route lookup (see `MAP_BRIDGE`).
#[map]
pub static EIP_BRIDGE: Array<u32> = Array::with_max_entries(1, 0);
/// One more than the bindings, as the stats (see `MAP_PORT_LEARN`). One value every CPU
/// shares: it is read per packet and written once a second.
#[map]
pub static EIP_PORT_LEARN: Array<u64> = Array::with_max_entries(DEFAULT_MAX_BINDINGS + 1, 0);

/// Egress's next hops: what `bpf_fib_lookup` said for a binding's traffic to one destination,
/// reused for [`NEXTHOP_LIFE_NS`]. Not pinned: a cache, the running program's own.
#[map]
pub static EIP_NEXTHOPS: LruHashMap<NextHopKey, NextHop> = LruHashMap::with_max_entries(NEXTHOPS, 0);

/// Destinations (per EIP and TOS) whose next hop is kept.
pub const NEXTHOPS: u32 = 65_536;
/// How long a next hop is reused before the FIB is asked again: a changed route, a new
/// gateway MAC or a neighbour gone takes effect within this.
pub const NEXTHOP_LIFE_NS: u64 = 1_000_000_000;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct NextHopKey {
    /// The translated source (policy routing may choose by it) and the destination.
    pub eip: u32,
    pub dst: u32,
    /// The TOS byte, which routing rules may match; zero-padded.
    pub tos: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct NextHop {
    pub ifindex: u32,
    /// The route's MTU: a longer packet asks the FIB again (which answers "fragmentation
    /// needed").
    pub mtu: u32,
    /// Destination and source MAC, as the frame's first 12 bytes.
    pub macs: [u8; 12],
    pub _pad: u32,
    /// When the FIB was asked (ns since boot).
    pub at_ns: u64,
}

/// LPM tries must be created with BPF_F_NO_PREALLOC.
#[map]
pub static EIP_POOLS: LpmTrie<u32, u8> =
    LpmTrie::with_max_entries(MAX_POOLS, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Whether `addr` is in one of the operator's pools.
#[inline(always)]
pub fn in_pool(addr: u32) -> bool {
    EIP_POOLS.get(Key::new(32, addr.to_be())).is_some()
}

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(v) = EIP_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
pub fn count_in(slot: u32, bytes: usize) {
    if let Some(s) = EIP_STATS.get_ptr_mut(slot_index(slot)) {
        // SAFETY: per-CPU, as in `count`.
        unsafe {
            (*s).in_packets += 1;
            (*s).in_bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn count_out(slot: u32, bytes: usize) {
    if let Some(s) = EIP_STATS.get_ptr_mut(slot_index(slot)) {
        // SAFETY: per-CPU, as in `count`.
        unsafe {
            (*s).out_packets += 1;
            (*s).out_bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn config() -> Config {
    EIP_CONFIG.get(0).copied().unwrap_or_default()
}

/// The bridge's ifindex; 0 until the daemon writes it.
#[inline(always)]
pub fn bridge_ifindex() -> u32 {
    EIP_BRIDGE.get(0).copied().unwrap_or(0)
}

/// Whether `eip_port_in` is to hand this packet of the binding at `slot` to the bridge, so the
/// bridge learns the VM's MAC again: once every [`PORT_LEARN_NS`] per binding.
#[inline(always)]
pub fn port_learn_due(slot: u32, now: u64) -> bool {
    let Some(at) = EIP_PORT_LEARN.get_ptr_mut(slot_index(slot)) else {
        return false;
    };
    // SAFETY: a plain u64 every CPU shares; a racing CPU at worst hands one more packet to
    // the bridge.
    unsafe {
        if now.wrapping_sub(*at) < PORT_LEARN_NS {
            return false;
        }
        *at = now;
    }
    true
}

#[inline(always)]
pub fn uplink() -> Uplink {
    EIP_UPLINK.get(0).copied().unwrap_or_default()
}

#[inline(always)]
pub fn dnat(eip: u32) -> Option<Binding> {
    // SAFETY: the value is copied out at once; a concurrent update replaces it whole.
    unsafe { EIP_DNAT.get(eip) }.copied()
}

#[inline(always)]
pub fn snat(private: u32) -> Option<Binding> {
    // SAFETY: as in `dnat`.
    unsafe { EIP_SNAT.get(private) }.copied()
}

#[inline(always)]
pub fn vm(private: u32) -> Option<Vm> {
    // SAFETY: as in `dnat`.
    unsafe { EIP_VMS.get(private) }.copied()
}

#[inline(always)]
pub fn held_address(mac: [u8; 6]) -> Option<HeldAddress> {
    // SAFETY: as in `dnat`.
    unsafe { EIP_MACS.get(MacKey::new(mac)) }.copied()
}

/// Why a rewrite was refused, as a drop counter.
#[inline(always)]
pub fn drop_reason(e: eip_common::RewriteError) -> Counter {
    match e {
        eip_common::RewriteError::UnsupportedProtocol => Counter::DropUntranslatable,
        _ => Counter::DropMalformed,
    }
}
