//! XDP on the external interface: packets to a bound EIP get their destination rewritten to
//! the VM's private address (1:1 DNAT) and go straight to the VM's bridge port, or to the
//! kernel's forwarding when the port is not known yet. Everything else passes untouched.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use eip_common::{
    Packet,
    maps::{CONFIG_NO_FAST_PATH, Counter, VM_PORT_KERNEL, VM_QUARANTINED},
    parse::{ETH_P_IP, IP_DST, parse_eth, parse_ipv4},
    rewrite::{Field, apply, decrement_ttl, plan},
};

use crate::{frame::XdpFrame, maps::*};

#[xdp]
pub fn eip_ingress(ctx: XdpContext) -> u32 {
    match try_ingress(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn try_ingress(ctx: &XdpContext) -> Result<u32, Counter> {
    let mut pkt = XdpFrame(ctx);
    let Ok(eth) = parse_eth(&pkt) else {
        return Ok(xdp_action::XDP_PASS);
    };
    if eth.ethertype != ETH_P_IP {
        return Ok(xdp_action::XDP_PASS);
    }
    let ip = match parse_ipv4(&pkt, eth.l3_off) {
        Ok(ip) => ip,
        // Malformed: dropped if it is addressed to a bound EIP (it must never reach the
        // host's own stack through the EIP alias), left to the kernel otherwise.
        Err(_) => {
            return match pkt.u32_at(eth.l3_off + IP_DST).and_then(dnat) {
                Some(_) => Err(Counter::DropMalformed),
                None => Ok(xdp_action::XDP_PASS),
            };
        }
    };
    let Some(binding) = dnat(ip.dst) else {
        return Ok(xdp_action::XDP_PASS);
    };
    let vm = vm(binding.addr).unwrap_or_default();
    if vm.flags & VM_QUARANTINED != 0 {
        return Err(Counter::DropQuarantined);
    }
    let plan = plan(&pkt, &ip, Field::Destination, binding.addr).map_err(drop_reason)?;
    apply(&mut pkt, &plan).map_err(drop_reason)?;
    count_in(binding.slot, ip.total_len);

    let cfg = config();
    let port = vm.port_ifindex;
    if cfg.flags & CONFIG_NO_FAST_PATH != 0 || port == 0 {
        count(Counter::IngressFallback);
        return Ok(xdp_action::XDP_PASS);
    }
    // A port that would drop redirected frames (a veth whose VM end has no NAPI): the
    // kernel's bridge delivers them as skbs.
    if vm.flags & VM_PORT_KERNEL != 0 {
        count(Counter::IngressKernelPort);
        return Ok(xdp_action::XDP_PASS);
    }
    // An expiring TTL goes to the kernel, which answers it with time-exceeded.
    if !decrement_ttl(&mut pkt, ip.l3_off).map_err(drop_reason)? {
        count(Counter::IngressFallback);
        return Ok(xdp_action::XDP_PASS);
    }
    // Routed to the VM: from the bridge's MAC to the VM's.
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&vm.mac);
    macs[6..].copy_from_slice(&cfg.bridge_mac);
    pkt.store(0, macs).ok_or(Counter::DropMalformed)?;
    count(Counter::IngressFastPath);
    Ok(EIP_PORTS.redirect(port, 0).unwrap_or(xdp_action::XDP_ABORTED))
}
