//! 1:1 NAT of one IPv4 address, with every checksum it touches kept valid.
//!
//! The work is split in two so that bad input never leaves a half-written frame:
//! [`plan`] reads and validates everything and returns the list of fields to change;
//! [`apply`] writes them. [`rewrite`] does both.

use crate::{
    Packet,
    checksum::{replace16, replace32},
    parse::*,
};

/// Why a frame cannot be rewritten. The dataplane counts these as drop reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RewriteError {
    /// The frame ends inside the Ethernet, IPv4 or transport header.
    Truncated,
    /// The IP version field is not 4.
    BadVersion,
    /// IHL below 5.
    BadHeaderLength,
    /// Total length shorter than the header or longer than the frame.
    BadTotalLength,
    /// Not TCP, UDP or ICMP: a 1:1 NAT of the address alone would leave such a protocol's
    /// own address-bound state (e.g. AH) inconsistent, so the dataplane refuses it.
    UnsupportedProtocol,
    /// An ICMP error whose embedded IPv4 header, or the 8 bytes of original data that
    /// RFC 792 requires after it, is missing or malformed.
    BadIcmpPayload,
}

/// Which address of the IPv4 header is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// SNAT, egress: private source -> elastic IP.
    Source,
    /// DNAT, ingress: elastic IP destination -> private.
    Destination,
}

impl Field {
    #[inline(always)]
    pub const fn offset(self) -> usize {
        match self {
            Field::Source => IP_SRC,
            Field::Destination => IP_DST,
        }
    }

    /// An ICMP error carries the packet it answers, which travelled the other way: the
    /// address to translate inside it is at the opposite position.
    #[inline(always)]
    pub const fn opposite(self) -> Field {
        match self {
            Field::Source => Field::Destination,
            Field::Destination => Field::Source,
        }
    }
}

/// A transport checksum that covers the pseudo-header and so changes with the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Fix {
    /// No such checksum: ICMP, a later fragment, or (embedded) not present in the quote.
    None,
    Pseudo {
        csum_off: usize,
        udp: bool,
    },
}

/// The embedded datagram of an ICMP error (RFC 5508 section 4: translate the embedded IP
/// header and fix the embedded transport checksum, then the ICMP checksum over both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerFix {
    pub icmp_csum_off: usize,
    pub addr_off: usize,
    pub ip_csum_off: usize,
    pub l4: L4Fix,
}

/// Everything [`apply`] changes, as absolute offsets into the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub addr_off: usize,
    pub old: u32,
    pub new: u32,
    pub ip_csum_off: usize,
    pub l4: L4Fix,
    pub inner: Option<InnerFix>,
}

/// ICMP types that quote the offending datagram (RFC 792): destination unreachable, source
/// quench, redirect, time exceeded, parameter problem.
#[inline(always)]
pub const fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// The UDP rules on top of RFC 1624: zero means "no checksum" and stays zero, and a result of
/// zero is sent as 0xffff because zero would mean "none" (RFC 768).
#[inline(always)]
pub const fn l4_update(check: u16, old: u32, new: u32, udp: bool) -> u16 {
    if udp && check == 0 {
        return 0;
    }
    let updated = replace32(check, old, new);
    if udp && updated == 0 { 0xffff } else { updated }
}

/// Where the transport checksum of `proto` sits, requiring the whole fixed header to lie inside
/// `[l4_off, end)`: a transport header split across fragments is refused (RFC 1858).
#[inline(always)]
fn transport_fix(proto: u8, l4_off: usize, end: usize) -> Result<L4Fix, RewriteError> {
    match proto {
        IPPROTO_TCP if l4_off + TCP_MIN_HLEN <= end => Ok(L4Fix::Pseudo {
            csum_off: l4_off + TCP_CSUM,
            udp: false,
        }),
        IPPROTO_UDP if l4_off + UDP_HLEN <= end => Ok(L4Fix::Pseudo {
            csum_off: l4_off + UDP_CSUM,
            udp: true,
        }),
        IPPROTO_ICMP if l4_off + ICMP_HLEN <= end => Ok(L4Fix::None),
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP => Err(RewriteError::Truncated),
        _ => Err(RewriteError::UnsupportedProtocol),
    }
}

/// Validates the quoted datagram of an ICMP error whose ICMP header is at `icmp_off`.
///
/// The embedded address is translated only when it is the one being translated outside
/// (`old`); an error quoting some other flow is passed with its quote untouched.
#[inline(always)]
fn plan_inner<P: Packet + ?Sized>(
    pkt: &P,
    icmp_off: usize,
    end: usize,
    field: Field,
    old: u32,
) -> Result<Option<InnerFix>, RewriteError> {
    let l3 = icmp_off + ICMP_HLEN;
    let inner = parse_quoted_ipv4(pkt, l3, end)?;
    let addr = match field.opposite() {
        Field::Source => inner.src,
        Field::Destination => inner.dst,
    };
    if addr != old {
        return Ok(None);
    }
    let addr_off = l3 + field.opposite().offset();
    let l4_off = l3 + inner.hlen;
    // The quote is only guaranteed to hold 8 bytes of the original transport header (RFC 792),
    // so TCP's checksum at offset 16 may be cut off; then there is nothing to fix.
    let l4 = match inner.proto {
        _ if inner.later_fragment => L4Fix::None,
        IPPROTO_TCP if l4_off + TCP_CSUM + 2 <= end => L4Fix::Pseudo {
            csum_off: l4_off + TCP_CSUM,
            udp: false,
        },
        IPPROTO_UDP => L4Fix::Pseudo {
            csum_off: l4_off + UDP_CSUM,
            udp: true,
        },
        _ => L4Fix::None,
    };
    Ok(Some(InnerFix {
        icmp_csum_off: icmp_off + ICMP_CSUM,
        addr_off,
        ip_csum_off: l3 + IP_CSUM,
        l4,
    }))
}

/// A quoted header: the total length field describes the original datagram, not the quote,
/// so only the header itself and the 8 bytes after it must be present.
#[inline(always)]
fn parse_quoted_ipv4<P: Packet + ?Sized>(pkt: &P, l3: usize, end: usize) -> Result<Ipv4Info, RewriteError> {
    let bad = RewriteError::BadIcmpPayload;
    let head: [u8; IPV4_MIN_HLEN] = pkt.load(l3).ok_or(bad)?;
    let quoted = Ipv4Info::decode(l3, &head);
    if head[0] >> 4 != 4 || quoted.hlen < IPV4_MIN_HLEN || l3 + quoted.hlen + 8 > end {
        return Err(bad);
    }
    Ok(quoted)
}

/// Decides what translating `field` of the datagram `ip` to `new` changes. Reads only.
#[inline(always)]
pub fn plan<P: Packet + ?Sized>(
    pkt: &P,
    ip: &Ipv4Info,
    field: Field,
    new: u32,
) -> Result<Plan, RewriteError> {
    let old = match field {
        Field::Source => ip.src,
        Field::Destination => ip.dst,
    };
    let l4_off = ip.l4_off();
    let end = ip.end();
    let mut plan = Plan {
        addr_off: ip.l3_off + field.offset(),
        old,
        new,
        ip_csum_off: ip.l3_off + IP_CSUM,
        l4: L4Fix::None,
        inner: None,
    };
    if ip.later_fragment {
        // No transport header here; the protocol is still checked so that a fragmented
        // unsupported protocol is refused like an unfragmented one.
        return match ip.proto {
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP => Ok(plan),
            _ => Err(RewriteError::UnsupportedProtocol),
        };
    }
    plan.l4 = transport_fix(ip.proto, l4_off, end)?;
    if ip.proto == IPPROTO_ICMP {
        let icmp_type = pkt.u8_at(l4_off).ok_or(RewriteError::Truncated)?;
        if is_icmp_error(icmp_type) {
            plan.inner = plan_inner(pkt, l4_off, end, field, old)?;
        }
    }
    Ok(plan)
}

/// Writes a plan made by [`plan`] on the same frame.
#[inline(always)]
pub fn apply<P: Packet + ?Sized>(pkt: &mut P, plan: &Plan) -> Result<(), RewriteError> {
    let t = RewriteError::Truncated;
    let (old, new) = (plan.old, plan.new);
    pkt.store(plan.addr_off, new.to_be_bytes()).ok_or(t)?;
    pkt.l3_replace32(plan.ip_csum_off, old, new).ok_or(t)?;
    if let L4Fix::Pseudo { csum_off, udp } = plan.l4 {
        pkt.l4_pseudo_replace32(csum_off, old, new, udp).ok_or(t)?;
    }
    if let Some(inner) = plan.inner {
        apply_quote(pkt, &inner, old, new)?;
    }
    Ok(())
}

/// Writes the quote's part of a plan: the quoted address, the quoted IPv4 and transport
/// checksums, and the ICMP checksum over them.
#[inline(always)]
pub fn apply_quote<P: Packet + ?Sized>(
    pkt: &mut P,
    inner: &InnerFix,
    old: u32,
    new: u32,
) -> Result<(), RewriteError> {
    let t = RewriteError::Truncated;
    // The ICMP checksum covers the quote as plain data, so each word changed inside it
    // (address, embedded IP checksum, embedded transport checksum) is folded into it.
    let mut icmp = pkt.u16_at(inner.icmp_csum_off).ok_or(t)?;
    icmp = replace32(icmp, old, new);
    let ip_old = pkt.u16_at(inner.ip_csum_off).ok_or(t)?;
    let ip_new = replace32(ip_old, old, new);
    icmp = replace16(icmp, ip_old, ip_new);
    pkt.store(inner.addr_off, new.to_be_bytes()).ok_or(t)?;
    pkt.store(inner.ip_csum_off, ip_new.to_be_bytes()).ok_or(t)?;
    if let L4Fix::Pseudo { csum_off, udp } = inner.l4 {
        let l4_old = pkt.u16_at(csum_off).ok_or(t)?;
        let l4_new = l4_update(l4_old, old, new, udp);
        icmp = replace16(icmp, l4_old, l4_new);
        pkt.store(csum_off, l4_new.to_be_bytes()).ok_or(t)?;
    }
    pkt.store(inner.icmp_csum_off, icmp.to_be_bytes()).ok_or(t)?;
    Ok(())
}

/// The datagram quoted by `ip` when `ip` is an ICMP error (whole or a first fragment), with
/// the offset of its ICMP header: `None` for anything else.
#[inline(always)]
pub fn quoted<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4Info) -> Result<Option<Ipv4Info>, RewriteError> {
    if ip.proto != IPPROTO_ICMP || ip.later_fragment {
        return Ok(None);
    }
    let icmp_type = pkt.u8_at(ip.l4_off()).ok_or(RewriteError::Truncated)?;
    if !is_icmp_error(icmp_type) {
        return Ok(None);
    }
    parse_quoted_ipv4(pkt, ip.l4_off() + ICMP_HLEN, ip.end()).map(Some)
}

/// The host's own ICMP error about a packet it was forwarding to a VM (its quote holds the
/// VM's private address as destination, where the packet came in addressed to the EIP):
/// what turning the quoted destination `private` back into `eip` changes. The outer header
/// is the host's and stays (RFC 5508 section 4.1, the quote translated as the packet it
/// answers was before the NAT).
#[inline(always)]
pub fn plan_quoted_destination<P: Packet + ?Sized>(
    pkt: &P,
    ip: &Ipv4Info,
    private: u32,
) -> Result<Option<InnerFix>, RewriteError> {
    // `Field::Source` translates the quote's destination (the quote travelled the other way).
    plan_inner(pkt, ip.l4_off(), ip.end(), Field::Source, private)
}

/// Parses the IPv4 header at `l3_off`, then plans and applies the translation of `field` to
/// `new`. On error the frame is unchanged.
#[inline(always)]
pub fn rewrite<P: Packet + ?Sized>(
    pkt: &mut P,
    l3_off: usize,
    field: Field,
    new: u32,
) -> Result<Plan, RewriteError> {
    let ip = parse_ipv4(pkt, l3_off)?;
    let plan = plan(pkt, &ip, field, new)?;
    apply(pkt, &plan)?;
    Ok(plan)
}

/// Forwarding is routing: the fast path decrements the TTL as the kernel would and fixes the
/// header checksum. Returns `false`, changing nothing, when the TTL would expire: such a
/// packet goes to the kernel, which sends the ICMP time-exceeded.
#[inline(always)]
pub fn decrement_ttl<P: Packet + ?Sized>(pkt: &mut P, l3_off: usize) -> Result<bool, RewriteError> {
    let t = RewriteError::Truncated;
    // TTL and protocol share the 16-bit word at offset 8.
    let word = pkt.u16_at(l3_off + IP_TTL).ok_or(t)?;
    if word >> 8 <= 1 {
        return Ok(false);
    }
    let new = word - 0x0100;
    pkt.store(l3_off + IP_TTL, new.to_be_bytes()).ok_or(t)?;
    pkt.l3_replace16(l3_off + IP_CSUM, word, new).ok_or(t)?;
    Ok(true)
}
