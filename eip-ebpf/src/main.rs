//! The eip dataplane: `eip_ext_xdp` (XDP, external interface, DNAT) and `eip_bridge_in` (TC
//! ingress on the bridge, SNAT). The rewrite itself is eip-common's; these programs parse,
//! look up, call it, and forward.
#![no_std]
#![no_main]
// The timeline's atomic add (`limit`): core's atomics offer no fetch-add on a target
// without compare-and-swap, but BPF has the add itself.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod drops;
mod egress;
mod frame;
mod host_errors;
mod ingress;
mod limit;
mod maps;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called.
    loop {}
}

/// GPL-compatible: bpf_fib_lookup and the redirect helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
