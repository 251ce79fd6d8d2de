//! The external interface: packets to a bound EIP get their destination rewritten to the VM's
//! private address (1:1 DNAT) and go straight to the VM's bridge port, or to the kernel's
//! forwarding when the port is not known yet or cannot take them. Everything else passes
//! untouched.
//!
//! Two entry points share one decision ([`decide`]):
//! - `eip_ext_xdp`, XDP: the fast one, on a NIC.
//! - `eip_ext_tc_in`, TC ingress: on a veth. A veth hands over what its peer sent with
//!   partial checksums (the sender's checksum offload), which XDP cannot see and so cannot
//!   update; TC knows the skb's checksum state and its helpers update partial checksums
//!   right. Its redirect also sends an skb, which a veth bridge port always takes.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::{bpf_ktime_get_ns, bpf_redirect, bpf_skb_vlan_pop, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use eip_common::{
    Packet,
    checksum::{compute, fold},
    maps::{
        CONFIG_NO_FAST_PATH, CONFIG_NO_SOURCE_FILTER, Counter, VM_PORT_KERNEL, VM_QUARANTINED, bogus_source,
    },
    parse::{
        ETH_HLEN, ETH_P_IP, IP_DST, IPV4_MIN_HLEN, Ipv4Info, VLAN_HLEN, ipv4_header_ok, parse_eth, parse_ipv4,
    },
    rewrite::{Field, apply, decrement_ttl, plan},
};

use crate::{
    frame::{TcFrame, XdpFrame, pull_headers},
    limit::{Way, admit_len},
    maps::*,
};

/// Enough of the frame for every header the rewrite touches (as in egress).
const PULL_LEN: u32 = 192;

/// What to do with a packet from outside.
enum Verdict {
    /// Not ours (or ours, translated, for the kernel to forward).
    Pass,
    /// Translated and addressed to the VM: out of this bridge port, without the VLAN tag it
    /// came with (`untag`, `--ext-vlan`).
    Redirect { port: u32, untag: bool },
    /// To an EIP with a TTL that runs out here (XDP); nothing rewritten.
    Expired(Ipv4Info),
}

#[xdp]
pub fn eip_ext_xdp(ctx: XdpContext) -> u32 {
    let mut pkt = XdpFrame(&ctx);
    match decide(&mut pkt, true, 0) {
        Ok(Verdict::Pass) => xdp_action::XDP_PASS,
        Ok(Verdict::Redirect { port, untag }) => {
            if untag && untag_xdp(&ctx).is_none() {
                count(Counter::DropMalformed);
                return xdp_action::XDP_DROP;
            }
            EIP_PORTS.redirect(port, 0).unwrap_or(xdp_action::XDP_ABORTED)
        }
        Ok(Verdict::Expired(ip)) => {
            let answer = if ip.l3_off == ETH_HLEN {
                time_exceeded::<ETH_HLEN>(&ctx, &ip)
            } else {
                time_exceeded::<{ ETH_HLEN + VLAN_HLEN }>(&ctx, &ip)
            };
            match answer {
                Ok(action) => {
                    count(Counter::IngressTtlAnswered);
                    action
                }
                Err(reason) => {
                    count(reason);
                    xdp_action::XDP_DROP
                }
            }
        }
        Err(reason) => {
            count(reason);
            xdp_action::XDP_DROP
        }
    }
}

/// The time-exceeded rate per CPU: a token a millisecond, bursts of 100, as the kernel
/// limits its own ICMP errors (net.ipv4.icmp_ratelimit, icmp_msgs_burst).
const ICMP_EVERY_NS: u64 = 1_000_000;
const ICMP_BURST: u64 = 100;

/// Bytes the time-exceeded puts before the quoted packet: an IPv4 header and ICMP's 8.
const ICMP_ERROR_HEAD: usize = IPV4_MIN_HLEN + 8;

/// Takes the frame's 802.1Q tag off: the MACs move 4 bytes on, over it, and the frame starts
/// there.
#[inline(always)]
fn untag_xdp(ctx: &XdpContext) -> Option<()> {
    let mut pkt = XdpFrame(ctx);
    let macs: [u8; 12] = pkt.load(0)?;
    pkt.store(VLAN_HLEN, macs)?;
    // SAFETY: a helper call on the program's own context; the redirect reads no pointer.
    (unsafe { bpf_xdp_adjust_head(ctx.ctx, VLAN_HLEN as i32) } == 0).then_some(())
}

/// Turns the frame in place into an ICMP time-exceeded (RFC 792) back to the sender, from the
/// EIP it addressed, quoting the packet's IPv4 header and 8 bytes as they arrived: the quote
/// names the EIP, never the VM behind it (RFC 5508 section 4), which a time-exceeded from the
/// kernel's forwarding of the translated packet would. At most one a millisecond per CPU,
/// with bursts, as the kernel limits its own; past that, the packet is dropped and counted.
/// `L2`: the Ethernet header's length, its VLAN tag included, which the answer keeps.
#[inline(always)]
fn time_exceeded<const L2: usize>(ctx: &XdpContext, ip: &Ipv4Info) -> Result<u32, Counter> {
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let bucket = EIP_ICMP_BUCKET.get_ptr_mut(0).ok_or(Counter::DropTtlExpired)?;
    // SAFETY: this CPU's slot: no other writer while this program runs here.
    unsafe {
        let [last, tokens] = *bucket;
        let refill = now.wrapping_sub(last) / ICMP_EVERY_NS;
        let tokens = if refill >= ICMP_BURST {
            ICMP_BURST
        } else {
            (tokens + refill).min(ICMP_BURST)
        };
        if tokens == 0 {
            return Err(Counter::DropTtlExpired);
        }
        *bucket = [if refill > 0 { now } else { last }, tokens - 1];
    }
    let quote = ip.hlen + 8;
    if ip.total_len < quote || ip.l3_off != L2 {
        return Err(Counter::DropTtlExpired);
    }
    let l2: [u8; L2] = XdpFrame(ctx).load(0).ok_or(Counter::DropMalformed)?;
    let old_len = ctx.data_end() - ctx.data();
    // Room in front for the new IPv4 and ICMP headers; the old packet's own IPv4 header then
    // starts right after them, where the quote goes.
    // SAFETY: helper calls on the program's own context; every access after them re-reads
    // the packet pointers.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ICMP_ERROR_HEAD as i32)) } != 0 {
        return Err(Counter::DropTtlExpired);
    }
    let keep = L2 + ICMP_ERROR_HEAD + quote;
    let delta = keep as i32 - (old_len + ICMP_ERROR_HEAD) as i32;
    // SAFETY: as above.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(Counter::DropTtlExpired);
    }
    let mut pkt = XdpFrame(ctx);
    // Back the way it came: the MACs swapped, the tag (if any) and EtherType kept.
    let mut eth = l2;
    eth[..6].copy_from_slice(&l2[6..12]);
    eth[6..12].copy_from_slice(&l2[..6]);
    pkt.store(0, eth).ok_or(Counter::DropMalformed)?;
    let mut iph = [0u8; IPV4_MIN_HLEN];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&((ICMP_ERROR_HEAD + quote) as u16).to_be_bytes());
    iph[8] = 64;
    iph[9] = 1;
    iph[12..16].copy_from_slice(&ip.dst.to_be_bytes());
    iph[16..20].copy_from_slice(&ip.src.to_be_bytes());
    let csum = compute(0, &iph);
    iph[10..12].copy_from_slice(&csum.to_be_bytes());
    pkt.store(L2, iph).ok_or(Counter::DropMalformed)?;
    let icmp_off = L2 + IPV4_MIN_HLEN;
    pkt.store(icmp_off, [11u8, 0, 0, 0, 0, 0, 0, 0])
        .ok_or(Counter::DropMalformed)?;
    // The ICMP checksum over its header and the quote: at most 8 + 60 + 8 bytes.
    let mut sum = 0u32;
    let mut w = 0;
    while w < 38 {
        if w * 2 >= 8 + quote {
            break;
        }
        sum += u32::from(pkt.u16_at(icmp_off + w * 2).ok_or(Counter::DropMalformed)?);
        w += 1;
    }
    pkt.store(icmp_off + 2, (!fold(sum)).to_be_bytes())
        .ok_or(Counter::DropMalformed)?;
    Ok(xdp_action::XDP_TX)
}

#[classifier]
pub fn eip_ext_tc_in(ctx: TcContext) -> i32 {
    // Headers must be in the linear area for direct access.
    pull_headers(&ctx, PULL_LEN);
    // The kernel takes a received frame's VLAN tag into the skb before TC sees it.
    // SAFETY: reading fields of the context the program was given.
    let (present, tci) = unsafe { ((*ctx.skb.skb).vlan_present, (*ctx.skb.skb).vlan_tci) };
    let skb_tag = if present != 0 {
        SKB_TAGGED | (tci & 0xffff)
    } else {
        0
    };
    let mut pkt = TcFrame(&ctx);
    match decide(&mut pkt, false, skb_tag) {
        Ok(Verdict::Pass) => TC_ACT_OK,
        Ok(Verdict::Redirect { port, untag }) => {
            // In the skb or still in the frame, the helper takes the tag off.
            // SAFETY: a helper call on the program's own context.
            if untag && unsafe { bpf_skb_vlan_pop(ctx.skb.skb as *mut _) } != 0 {
                count(Counter::DropMalformed);
                return TC_ACT_SHOT;
            }
            // SAFETY: a plain helper call; the port is one the daemon wrote.
            unsafe { bpf_redirect(port, 0) as i32 }
        }
        // Not made by TC's decision (see `decide`).
        Ok(Verdict::Expired(_)) => TC_ACT_SHOT,
        Err(reason) => {
            count(reason);
            TC_ACT_SHOT
        }
    }
}

/// [`decide`]'s `skb_tag` when the skb holds a tag (the TCI in the low 16 bits). A plain
/// integer rather than an `Option`: an undefined payload register, spilled, fails the
/// verifier ("!read_ok").
const SKB_TAGGED: u32 = 1 << 16;

/// The decision, for either frame. `xdp`: the redirect is an XDP one, which a port marked
/// [`VM_PORT_KERNEL`] would drop. `skb_tag`: TC's, the VLAN tag the kernel took into the skb
/// ([`SKB_TAGGED`] with the TCI), or 0.
#[inline(always)]
fn decide<P: Packet>(pkt: &mut P, xdp: bool, skb_tag: u32) -> Result<Verdict, Counter> {
    let Ok(eth) = parse_eth(pkt) else {
        return Ok(Verdict::Pass);
    };
    if eth.ethertype != ETH_P_IP {
        return Ok(Verdict::Pass);
    }
    let ip = match parse_ipv4(pkt, eth.l3_off) {
        Ok(ip) => ip,
        // Malformed: dropped if it is addressed to a bound EIP (it must never reach the
        // host's own stack through the EIP alias), left to the kernel otherwise.
        Err(_) => {
            return match pkt.u32_at(eth.l3_off + IP_DST).and_then(dnat) {
                Some(_) => Err(Counter::DropMalformed),
                None => Ok(Verdict::Pass),
            };
        }
    };
    let Some(binding) = dnat(ip.dst) else {
        return Ok(Verdict::Pass);
    };
    // The EIPs live on one network of the uplink: the untagged one, or the VLAN that
    // `--ext-vlan` names. A frame of another belongs to some other network (and redirected
    // as it is, a tagged one would reach an untagged VM port still tagged).
    let (tagged, tci) = if eth.tagged {
        (true, eth.tci)
    } else {
        (skb_tag & SKB_TAGGED != 0, skb_tag as u16)
    };
    if !uplink().on_vlan(tagged, tci) {
        count(Counter::IngressOtherVlan);
        return Ok(Verdict::Pass);
    }
    // Checked before anything is rewritten: an incremental update would carry a wrong
    // checksum over to the VM.
    if !ipv4_header_ok(pkt, &ip) {
        return Err(Counter::DropBadIpChecksum);
    }
    let cfg = config();
    // Sources no host outside can have: a VM's own address (which would also let the
    // outside pose as the VM to its neighbours), an EIP, loopback and the other bogons.
    if cfg.flags & CONFIG_NO_SOURCE_FILTER == 0 {
        if let Some(why) = bogus_source(ip.src) {
            return Err(why);
        }
        if cfg.is_private(ip.src) {
            return Err(Counter::DropSrcBridgeSubnet);
        }
        if in_pool(ip.src) {
            return Err(Counter::DropSrcPool);
        }
    }
    let vm = vm(binding.addr).unwrap_or_default();
    if vm.flags & VM_QUARANTINED != 0 {
        return Err(Counter::DropQuarantined);
    }
    // Over the EIP's inbound limit: dropped before any work is spent on it.
    if !admit_len(binding.slot, Way::In, ip.total_len) {
        return Err(Counter::DropLimitIn);
    }
    // A TTL that runs out here. XDP answers it before anything is rewritten, quoting the
    // packet as it came. TC builds no answer on an skb: the kernel's forwarding answers the
    // translated packet, and its time-exceeded gets the EIP back in its quote on the way out
    // (`eip_ext_tc_out`).
    let expires = pkt.u8_at(ip.l3_off + 8).is_none_or(|ttl| ttl <= 1);
    if expires && xdp {
        return Ok(Verdict::Expired(ip));
    }
    let plan = plan(pkt, &ip, Field::Destination, binding.addr).map_err(drop_reason)?;
    apply(pkt, &plan).map_err(drop_reason)?;
    count_in(binding.slot, ip.total_len);
    if expires {
        count(Counter::IngressTtlToKernel);
        return Ok(Verdict::Pass);
    }

    let port = vm.port_ifindex;
    if cfg.flags & CONFIG_NO_FAST_PATH != 0 || port == 0 {
        count(Counter::IngressFallback);
        return Ok(Verdict::Pass);
    }
    // A port that would drop redirected frames (a veth whose VM end has no NAPI): the
    // kernel's bridge delivers them as skbs. TC's redirect is an skb already.
    if xdp && vm.flags & VM_PORT_KERNEL != 0 {
        count(Counter::IngressKernelPort);
        return Ok(Verdict::Pass);
    }
    // The TTL is above 1 (checked before the rewrite).
    if !decrement_ttl(pkt, ip.l3_off).map_err(drop_reason)? {
        return Err(Counter::DropTtlExpired);
    }
    // Routed to the VM: from the bridge's MAC to the VM's.
    pkt.set_eth_addrs(vm.mac, cfg.bridge_mac)
        .ok_or(Counter::DropMalformed)?;
    count(Counter::IngressFastPath);
    Ok(Verdict::Redirect { port, untag: tagged })
}
