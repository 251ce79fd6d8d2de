//! TC ingress on the bridge device: what the VMs route through their gateway. Packets from a
//! bound private address get their source rewritten to the EIP (1:1 SNAT) and go straight out
//! of the external interface (FIB lookup + redirect), or to the kernel's forwarding when the
//! lookup does not resolve. A packet to another VM's EIP is translated both ways (hairpin).
//! Anti-spoofing and quarantine are enforced here, where the VMs' packets enter the host.
//!
//! `eip_port_in` is the same program on each VM's bridge port (TCX ingress), before the bridge:
//! it takes only the fast path and leaves everything else, untouched, to `eip_bridge_in`.

use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK,
        TC_ACT_SHOT, bpf_fib_lookup,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect},
    macros::classifier,
    programs::TcContext,
};
use eip_common::{
    Packet,
    maps::{
        Binding, CONFIG_ANTISPOOF, CONFIG_NO_FAST_PATH, Config, Counter, HeldAddress, VM_NO_ANTISPOOF,
        VM_QUARANTINED, Vm,
    },
    packet::eth_addrs,
    parse::{ETH_P_IP, IP_SRC, IP_TTL, IPPROTO_TCP, IPPROTO_UDP, Ipv4Info, parse_eth, parse_ipv4},
    rewrite::{Field, apply, decrement_ttl, plan},
};

use crate::{
    frame::{TcFrame, pull_headers},
    limit::{Way, admit_len},
    maps::*,
};

/// Enough of the frame to hold every header the rewrite touches: Ethernet with a VLAN tag,
/// IPv4 with options, ICMP, a quoted IPv4 header with options and its transport checksum.
const PULL_LEN: u32 = 192;
const AF_INET: u8 = 2;
const DHCP_SERVER_PORT: u16 = 67;

#[classifier]
pub fn eip_bridge_in(ctx: TcContext) -> i32 {
    finish(try_egress::<false>(&ctx))
}

/// TCX ingress on a VM's bridge port: the fast path of [`eip_bridge_in`] before the bridge.
/// Only a frame the bridge would hand its own device (to the bridge's MAC, untagged) from the
/// VM the maps put behind this very port, translated and sent out of the interface the FIB
/// names, is taken here; anything else goes on to the bridge untouched (and, through it, to
/// `eip_bridge_in`, which judges, counts and drops it there). That includes one packet of each
/// binding every [`PORT_LEARN_NS`], so the bridge goes on learning the VM's MAC on this port.
#[classifier]
pub fn eip_port_in(ctx: TcContext) -> i32 {
    finish(try_egress::<true>(&ctx))
}

#[inline(always)]
fn finish(r: Result<i32, Counter>) -> i32 {
    match r {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            TC_ACT_SHOT
        }
    }
}

/// At the bridge (`AT_PORT` false), `reason`: the packet is dropped and counted. At a port,
/// the packet goes on to the bridge untouched, where `eip_bridge_in` does that.
#[inline(always)]
fn refuse<const AT_PORT: bool>(reason: Counter) -> Result<i32, Counter> {
    if AT_PORT { Ok(TC_ACT_OK) } else { Err(reason) }
}

#[inline(always)]
fn try_egress<const AT_PORT: bool>(ctx: &TcContext) -> Result<i32, Counter> {
    // Headers must be in the linear area for direct access.
    pull_headers(ctx, PULL_LEN);
    let mut pkt = TcFrame(ctx);
    let Ok(eth) = parse_eth(&pkt) else {
        return Ok(TC_ACT_OK);
    };
    let Some(src_mac) = pkt.load::<6>(6) else {
        return Ok(TC_ACT_OK);
    };
    let cfg = config();
    if AT_PORT {
        // Only what the bridge would hand its own device, untagged (a tag the kernel took
        // off into the skb is the bridge's VLAN business), while the fast path is on.
        // SAFETY: reading a field of the context the program was given.
        let tagged = eth.tagged || unsafe { (*ctx.skb.skb).vlan_present } != 0;
        if tagged
            || eth.ethertype != ETH_P_IP
            || cfg.flags & CONFIG_NO_FAST_PATH != 0
            || pkt.load::<6>(0) != Some(cfg.bridge_mac)
        {
            return Ok(TC_ACT_OK);
        }
    }
    // Plain values rather than `Option`s here: an `Option`'s undefined payload, spilled by
    // LLVM, fails the verifier ("!read_ok").
    // At a port the MAC's held address is not looked up: the VM entry of the source address,
    // checked below, must name this MAC and this port and no quarantine, which says as much in
    // one lookup (the daemon writes the two entries as a pair); anything else goes to the
    // bridge, whose program looks the MAC up.
    let (holds, held) = match if AT_PORT { None } else { held_address(src_mac) } {
        Some(l) => (true, l),
        None => (false, HeldAddress::default()),
    };
    let quarantined = held.flags & VM_QUARANTINED != 0;
    if eth.ethertype != ETH_P_IP {
        return if quarantined {
            Err(Counter::DropQuarantined)
        } else {
            Ok(TC_ACT_OK)
        };
    }
    let ip = match parse_ipv4(&pkt, eth.l3_off) {
        Ok(ip) => ip,
        Err(_) if quarantined => return refuse::<AT_PORT>(Counter::DropQuarantined),
        // Malformed from a bound address: dropped rather than forwarded untranslated, which
        // would leak the private address. Others are the kernel's to judge.
        Err(_) => {
            return match pkt.u32_at(eth.l3_off + IP_SRC).and_then(snat) {
                Some(_) => refuse::<AT_PORT>(Counter::DropMalformed),
                None => Ok(TC_ACT_OK),
            };
        }
    };

    // DHCP to this host's server passes untouched, whatever its source: a client renewing an
    // address it no longer holds (its reservation changed) must reach the server to be told
    // so, and a quarantined VM still gets its address. Only to the bridge subnet or the
    // broadcast address, which are never translated, so this opens no way out.
    if is_dhcp_to_server(&pkt, &ip, &cfg) {
        return Ok(TC_ACT_OK);
    }
    if quarantined {
        return refuse::<AT_PORT>(Counter::DropQuarantined);
    }
    let (bound, binding) = match snat(ip.src) {
        Some(b) => (true, b),
        None => (false, Binding::default()),
    };
    if !AT_PORT && cfg.flags & CONFIG_ANTISPOOF != 0 {
        let spoofed = if holds {
            // 0.0.0.0 is a DHCP client that has no address yet.
            held.flags & VM_NO_ANTISPOOF == 0 && ip.src != held.addr && ip.src != 0
        } else {
            // A MAC that holds no address must not use a bound address.
            bound
        };
        if spoofed {
            return refuse::<AT_PORT>(Counter::DropSpoofed);
        }
    }
    if !bound {
        return Ok(TC_ACT_OK);
    }
    // The coarse clock (a tick's resolution) is enough for a second's life, and cheaper.
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if AT_PORT {
        // Only the VM the maps put behind this port, with the MAC they name: a VM that moved
        // ports, or one whose port is not known (0), goes through the bridge, which learns
        // where it is now, and the daemon follows.
        let (found, v) = match vm(ip.src) {
            Some(v) => (true, v),
            None => (false, Vm::default()),
        };
        // SAFETY: reading a field of the context the program was given.
        let port = unsafe { (*ctx.skb.skb).ifindex };
        if !found
            || v.port_ifindex != port
            || v.mac != src_mac
            || v.flags & VM_QUARANTINED != 0
            || port_learn_due(binding.slot, now)
        {
            return Ok(TC_ACT_OK);
        }
    }
    // A TTL that runs out here: the kernel answers the VM, which it can do only while the
    // source is still the VM's own. Passed untranslated; the kernel does not forward it.
    if pkt.u8_at(ip.l3_off + IP_TTL).is_none_or(|ttl| ttl <= 1) {
        if !AT_PORT {
            count(Counter::EgressTtlToKernel);
        }
        return Ok(TC_ACT_OK);
    }
    if cfg.is_private(ip.dst) {
        // To the VMs' own subnet, the gateway included: not NAT traffic. (No pool overlaps
        // it, so no EIP is there.)
        return Ok(TC_ACT_OK);
    }
    let query = HopQuery::new(ctx, &pkt, &ip, binding.addr, now);
    // A next hop kept from the last second means its destination was no EIP then (a hairpin
    // is never kept): the hairpin lookup is skipped with the FIB's. An EIP bound since then
    // is reached through the router meanwhile, which sends it back.
    let (rc, hop) = match query.cached() {
        Some(hop) => (BPF_FIB_LKUP_RET_SUCCESS as i64, hop),
        None => {
            if let Some(peer) = dnat(ip.dst) {
                if AT_PORT {
                    // The bridge's program turns it round.
                    return Ok(TC_ACT_OK);
                }
                return hairpin(
                    &mut pkt,
                    &ip,
                    binding.addr,
                    binding.slot,
                    peer.addr,
                    peer.slot,
                    &cfg,
                );
            }
            // At a port, the route is looked up as for a packet the bridge device received
            // (policy routing by input interface sees what it would have seen).
            let iif = if AT_PORT {
                bridge_ifindex()
            } else {
                // SAFETY: reading the skb's ifindex from the context the program was given.
                unsafe { (*ctx.skb.skb).ifindex }
            };
            query.ask_fib(ctx, &ip, iif)
        }
    };
    if AT_PORT && rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // For the host, no route, too big, a neighbour not resolved: the bridge's program
        // hands it to the kernel as it must.
        return Ok(TC_ACT_OK);
    }
    let plan = match plan(&pkt, &ip, Field::Source, binding.addr) {
        Ok(p) => p,
        Err(e) => return refuse::<AT_PORT>(drop_reason(e)),
    };
    if rc == BPF_FIB_LKUP_RET_NOT_FWDED as i64 {
        // For the host itself (any of its addresses), or no route at all: the host must see,
        // and answer, the VM's own address (an "unreachable" included).
        return Ok(TC_ACT_OK);
    }
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 && dont_fragment(&pkt, &ip) {
        // Too big for the way out and not to be fragmented: the kernel must answer the VM
        // with "fragmentation needed", which it can only do while the source is still the
        // VM's own address. Passed untranslated; the kernel does not forward it.
        return Ok(TC_ACT_OK);
    }
    // Over the EIP's outbound limit: dropped, never sent untranslated. Judged only for
    // what leaves translated (not for the host's own addresses, above).
    if !admit_len(binding.slot, Way::Out, ip.total_len) {
        return Err(Counter::DropLimitOut);
    }
    apply(&mut pkt, &plan).map_err(drop_reason)?;
    count_out(binding.slot, ip.total_len);

    if cfg.flags & CONFIG_NO_FAST_PATH == 0
        && rc == BPF_FIB_LKUP_RET_SUCCESS as i64
        && decrement_ttl(&mut pkt, ip.l3_off).map_err(drop_reason)?
    {
        pkt.store(0, hop.macs).ok_or(Counter::DropMalformed)?;
        count(Counter::EgressFastPath);
        if AT_PORT {
            count(Counter::EgressAtPort);
        }
        // SAFETY: a plain helper call; the ifindex comes from the kernel's FIB.
        return Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as i32);
    }
    // At a port only after the checks above (TTL above 1, the fast path on, the FIB's
    // success), so never: a translated packet passed to the bridge would be dropped there
    // as spoofed, never sent.
    count(Counter::EgressFallback);
    Ok(TC_ACT_OK)
}

/// A VM to another VM's EIP: the source becomes the sender's EIP and the destination the
/// receiver's private address, so the receiver sees (and answers) the sender's EIP.
#[inline(always)]
fn hairpin(
    pkt: &mut TcFrame,
    ip: &Ipv4Info,
    eip: u32,
    slot: u32,
    peer_private: u32,
    peer_slot: u32,
    cfg: &eip_common::maps::Config,
) -> Result<i32, Counter> {
    let peer: Vm = vm(peer_private).unwrap_or_default();
    if peer.flags & VM_QUARANTINED != 0 {
        return Err(Counter::DropQuarantined);
    }
    // The sender's outbound limit, then the receiver's inbound one.
    if !admit_len(slot, Way::Out, ip.total_len) {
        return Err(Counter::DropLimitOut);
    }
    if !admit_len(peer_slot, Way::In, ip.total_len) {
        return Err(Counter::DropLimitIn);
    }
    let first = plan(pkt, ip, Field::Source, eip).map_err(drop_reason)?;
    apply(pkt, &first).map_err(drop_reason)?;
    let translated = Ipv4Info { src: eip, ..*ip };
    let second = plan(pkt, &translated, Field::Destination, peer_private).map_err(drop_reason)?;
    apply(pkt, &second).map_err(drop_reason)?;
    count_out(slot, ip.total_len);
    count_in(peer_slot, ip.total_len);
    count(Counter::Hairpin);
    if cfg.flags & CONFIG_NO_FAST_PATH == 0
        && peer.port_ifindex != 0
        && decrement_ttl(pkt, ip.l3_off).map_err(drop_reason)?
    {
        pkt.set_eth_addrs(peer.mac, cfg.bridge_mac)
            .ok_or(Counter::DropMalformed)?;
        // SAFETY: a plain helper call.
        return Ok(unsafe { bpf_redirect(peer.port_ifindex, 0) } as i32);
    }
    // The kernel routes it back out of the bridge.
    Ok(TC_ACT_OK)
}

/// A datagram length every IPv4 link in use carries (RFC 791's 576 bytes, which every host
/// must accept): only packets this short use a kept next hop.
const ALWAYS_FITS: u16 = 576;

/// The next hop of a translated packet (source = EIP), as [`EIP_NEXTHOPS`] keeps it: what
/// `bpf_fib_lookup` said, reused for [`NEXTHOP_LIFE_NS`] by packets of at most
/// [`ALWAYS_FITS`] bytes. The route and neighbour lookups are most of a small packet's
/// egress cost, and a binding's traffic mostly goes through one gateway.
struct HopQuery {
    key: NextHopKey,
    /// The length the MTU is judged by ([`mtu_len`]).
    len: u16,
    tos: u8,
    now: u64,
}

impl HopQuery {
    #[inline(always)]
    fn new(ctx: &TcContext, pkt: &TcFrame, ip: &Ipv4Info, eip: u32, now: u64) -> Self {
        let tos = pkt.u8_at(ip.l3_off + 1).unwrap_or(0);
        HopQuery {
            key: NextHopKey {
                eip,
                dst: ip.dst,
                tos: tos as u32,
            },
            len: mtu_len(ctx, pkt, ip),
            tos,
            now,
        }
    }

    /// The kept next hop, if it is young enough and the packet is short: a packet longer
    /// than [`ALWAYS_FITS`] (a GSO super-frame counts by its segments) always asks the FIB,
    /// which judges it against the route's and the interface's MTU of the moment. A kept
    /// MTU could be a second old, and a packet too big for the interface is dropped in
    /// silence at a veth (which checks its peer's MTU, not its own), where the FIB answers
    /// "fragmentation needed" and the kernel tells the VM. Bulk traffic comes as GSO
    /// super-frames, one lookup each; the per-packet cost the cache saves is small packets'.
    #[inline(always)]
    fn cached(&self) -> Option<NextHop> {
        if self.len > ALWAYS_FITS {
            return None;
        }
        // SAFETY: the value is copied out at once; an update replaces it whole.
        let hop = unsafe { EIP_NEXTHOPS.get(self.key) }.copied()?;
        (self.now.wrapping_sub(hop.at_ns) < NEXTHOP_LIFE_NS && u32::from(self.len) <= hop.mtu).then_some(hop)
    }

    /// Asks the FIB, as for a packet received on `iif`: its return code, and on success the
    /// next hop, which is kept.
    #[inline(always)]
    fn ask_fib(&self, ctx: &TcContext, ip: &Ipv4Info, iif: u32) -> (i64, NextHop) {
        let (rc, fib) = lookup(ctx, ip, self.key.eip, self.len, self.tos, iif);
        let hop = NextHop {
            ifindex: fib.ifindex,
            // SAFETY: on success the kernel writes the route's MTU over the length it was
            // given.
            mtu: u32::from(unsafe { fib.__bindgen_anon_1.mtu_result }),
            macs: eth_addrs(fib.dmac, fib.smac),
            _pad: 0,
            at_ns: self.now,
        };
        if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
            let _ = EIP_NEXTHOPS.insert(self.key, hop, 0);
        }
        (rc, hop)
    }
}

/// The kernel's route for the translated packet (source = EIP): the return code and the
/// filled-in parameters (egress ifindex, MACs, MTU).
#[inline(always)]
fn lookup(ctx: &TcContext, ip: &Ipv4Info, eip: u32, len: u16, tos: u8, iif: u32) -> (i64, bpf_fib_lookup) {
    // SAFETY: bpf_fib_lookup is plain data; all-zero is its documented initial state.
    let mut p: bpf_fib_lookup = unsafe { mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = ip.proto;
    p.__bindgen_anon_1.tot_len = len;
    p.__bindgen_anon_2.tos = tos;
    p.ifindex = iif;
    p.__bindgen_anon_3.ipv4_src = eip.to_be();
    p.__bindgen_anon_4.ipv4_dst = ip.dst.to_be();
    // SAFETY: the context pointer and a parameter struct of the size passed.
    let rc = unsafe { fib_lookup(ctx.as_ptr(), &mut p, mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    (rc, p)
}

/// The length the kernel's forwarding would hold against the egress MTU, so that the lookup's
/// "fragmentation needed" agrees with what the kernel does with a packet passed to it
/// untranslated: the IP length, or for a GSO super-frame (a VM's TSO), the length of each
/// segment it will be cut into, network and transport headers plus `gso_size`
/// (`skb_gso_network_seglen`).
#[inline(always)]
fn mtu_len(ctx: &TcContext, pkt: &TcFrame, ip: &Ipv4Info) -> u16 {
    // SAFETY: reading a field of the context the program was given.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size } as usize;
    if gso_size == 0 {
        return ip.total_len as u16;
    }
    let l4_hlen = match ip.proto {
        IPPROTO_TCP => pkt
            .u8_at(ip.l4_off() + 12)
            .map_or(20, |b| ((b >> 4) as usize) * 4),
        _ => 8,
    };
    (ip.hlen + l4_hlen + gso_size) as u16
}

#[inline(always)]
fn dont_fragment(pkt: &TcFrame, ip: &Ipv4Info) -> bool {
    pkt.u8_at(ip.l3_off + 6).is_some_and(|b| b & 0x40 != 0)
}

/// A DHCP client's message to this host's server: UDP to port 67 of the bridge subnet or of
/// the broadcast address.
#[inline(always)]
fn is_dhcp_to_server(pkt: &TcFrame, ip: &Ipv4Info, cfg: &Config) -> bool {
    ip.proto == IPPROTO_UDP
        && !ip.later_fragment
        && (ip.dst == u32::MAX || cfg.is_private(ip.dst))
        && pkt.u16_at(ip.l4_off() + 2) == Some(DHCP_SERVER_PORT)
}
