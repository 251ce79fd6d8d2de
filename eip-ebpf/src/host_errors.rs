//! TC egress on the external interface: the host's own ICMP errors about packets it was
//! forwarding to a VM. Ingress rewrote such a packet's destination from the EIP to the VM's
//! private address before the kernel saw it, so when the kernel cannot deliver it (the VM is
//! gone: host unreachable; too big for the bridge: fragmentation needed; a TTL that runs out
//! in its forwarding) its error quotes the private address. Here the quote gets the EIP back
//! (RFC 5508 section 4), and an outer source from the bridge subnet becomes the EIP. Any other
//! error that would carry a bridge-subnet address out is dropped and counted.
//!
//! Everything else leaves untouched, after two byte reads: this runs on every frame the
//! external interface sends, the fast path's own included.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use eip_common::{
    Packet,
    maps::Counter,
    parse::{ETH_P_IP, IP_SRC, IPPROTO_ICMP, parse_eth, parse_ipv4},
    rewrite::{apply_quote, plan_quoted_destination, quoted},
};

use crate::{
    frame::{TcFrame, pull_headers},
    maps::*,
};

/// Ethernet, IPv4 with options, ICMP, the quoted IPv4 header with options and its transport
/// checksum.
const PULL_LEN: u32 = 14 + 60 + 8 + 60 + 8;

#[classifier]
pub fn eip_ext_tc_out(ctx: TcContext) -> i32 {
    match host_error(&ctx) {
        Ok(()) => TC_ACT_OK,
        Err(reason) => {
            count(reason);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn host_error(ctx: &TcContext) -> Result<(), Counter> {
    // The frames this interface sends carry their VLAN tag, if any, in the skb: the IPv4
    // header follows the Ethernet one.
    let (ethertype, proto) = {
        let pkt = TcFrame(ctx);
        (pkt.u16_at(12), pkt.u8_at(14 + 9))
    };
    if ethertype != Some(ETH_P_IP) || proto.is_some_and(|p| p != IPPROTO_ICMP) {
        return Ok(());
    }
    // Headers must be in the linear area for direct access.
    pull_headers(ctx, PULL_LEN);
    let mut pkt = TcFrame(ctx);
    let Ok(eth) = parse_eth(&pkt) else {
        return Ok(());
    };
    if eth.ethertype != ETH_P_IP {
        return Ok(());
    }
    let Ok(ip) = parse_ipv4(&pkt, eth.l3_off) else {
        return Ok(());
    };
    let cfg = config();
    let quote = match quoted(&pkt, &ip) {
        Ok(Some(q)) => q,
        Ok(None) => return Ok(()),
        // An error whose quote cannot be read: it cannot be translated, so it must not carry
        // a private address out in its visible part.
        Err(_) if cfg.is_private(ip.src) => return Err(Counter::DropPrivateQuote),
        Err(_) => return Ok(()),
    };
    if cfg.is_private(quote.src) {
        // About a VM's packet that left untranslated: only the VM's side sees those.
        return Err(Counter::DropPrivateQuote);
    }
    if !cfg.is_private(quote.dst) {
        return if cfg.is_private(ip.src) {
            Err(Counter::DropPrivateQuote)
        } else {
            Ok(())
        };
    }
    let binding = snat(quote.dst).ok_or(Counter::DropPrivateQuote)?;
    let fix = plan_quoted_destination(&pkt, &ip, quote.dst)
        .map_err(|_| Counter::DropPrivateQuote)?
        .ok_or(Counter::DropPrivateQuote)?;
    apply_quote(&mut pkt, &fix, quote.dst, binding.addr).map_err(|_| Counter::DropPrivateQuote)?;
    if cfg.is_private(ip.src) {
        // ICMP's checksum has no pseudo-header: only the IPv4 header's changes.
        let off = ip.l3_off + IP_SRC;
        pkt.store(off, binding.addr.to_be_bytes())
            .ok_or(Counter::DropPrivateQuote)?;
        pkt.l3_replace32(ip.l3_off + 10, ip.src, binding.addr)
            .ok_or(Counter::DropPrivateQuote)?;
    }
    count(Counter::HostErrorTranslated);
    Ok(())
}
