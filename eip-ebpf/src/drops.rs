//! Counts what the kernel drops when an XDP program redirects a frame to an interface that
//! cannot take it: the `xdp:xdp_redirect_err` tracepoint fires once per such frame. A veth
//! whose other end has no NAPI refuses every redirected frame (-EOPNOTSUPP: no
//! NETDEV_XDP_ACT_NDO_XMIT), and no counter of the interface moves, so this is the only place
//! such a drop shows. The daemon reads the counts per bridge port (summed over the CPUs),
//! reports them and stops redirecting to a port that drops.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::maps::EIP_PORT_DROPS;

/// Offsets in the tracepoint's record (`/sys/kernel/tracing/events/xdp/xdp_redirect_err/format`):
/// after the 8-byte common header, prog_id, act, ifindex, err, to_ifindex, map_id, map_index.
const ERR: usize = 20;
const TO_IFINDEX: usize = 24;

#[tracepoint]
pub fn eip_redir_err(ctx: TracePointContext) -> u32 {
    // SAFETY: reads of two `int` fields at their offsets in the record.
    let err: i32 = unsafe { ctx.read_at(ERR) }.unwrap_or(0);
    if err >= 0 {
        return 0;
    }
    // SAFETY: as above.
    let to: i32 = unsafe { ctx.read_at(TO_IFINDEX) }.unwrap_or(0);
    let key = to as u32;
    match EIP_PORT_DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of the value: no other writer while this program runs here.
        Some(v) => unsafe { *v += 1 },
        None => {
            let _ = EIP_PORT_DROPS.insert(key, 1u64, 0);
        }
    }
    0
}
