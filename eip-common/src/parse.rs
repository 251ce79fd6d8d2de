//! Header parsing from a cursor: each parser validates what it needs and returns the offset
//! of the next header, so XDP, TC and host tests share one parser.

use crate::{Packet, RewriteError};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const IPV4_MIN_HLEN: usize = 20;
/// Offsets inside the IPv4 header.
pub const IP_TTL: usize = 8;
pub const IP_CSUM: usize = 10;
pub const IP_SRC: usize = 12;
pub const IP_DST: usize = 16;
/// Offsets of the checksum inside the transport headers.
pub const TCP_CSUM: usize = 16;
pub const TCP_MIN_HLEN: usize = 20;
pub const UDP_CSUM: usize = 6;
pub const UDP_HLEN: usize = 8;
pub const ICMP_CSUM: usize = 2;
/// Type, code, checksum and the 4-byte rest of header; an error's original datagram follows.
pub const ICMP_HLEN: usize = 8;

/// Where the IPv4 header starts, behind at most one VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthInfo {
    /// The EtherType after the tag, if any.
    pub ethertype: u16,
    /// Whether the frame carries one VLAN tag, kept as it is: rewriting happens behind it.
    pub tagged: bool,
    /// That tag's control information (0 untagged). Two plain fields, not an `Option`: an
    /// `Option`'s undefined payload, spilled by LLVM, fails the verifier ("!read_ok").
    pub tci: u16,
    pub l3_off: usize,
}

#[inline(always)]
pub fn parse_eth<P: Packet + ?Sized>(pkt: &P) -> Result<EthInfo, RewriteError> {
    let ethertype = pkt.u16_at(12).ok_or(RewriteError::Truncated)?;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tci = pkt.u16_at(ETH_HLEN).ok_or(RewriteError::Truncated)?;
        let inner = pkt.u16_at(ETH_HLEN + 2).ok_or(RewriteError::Truncated)?;
        return Ok(EthInfo {
            ethertype: inner,
            tagged: true,
            tci,
            l3_off: ETH_HLEN + VLAN_HLEN,
        });
    }
    Ok(EthInfo {
        ethertype,
        tagged: false,
        tci: 0,
        l3_off: ETH_HLEN,
    })
}

/// The fields of a validated IPv4 header that the dataplane needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    pub l3_off: usize,
    /// Header length in bytes (IHL * 4), options included.
    pub hlen: usize,
    /// Total length from the header; validated to fit the frame.
    pub total_len: usize,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    /// A fragment other than the first carries no transport header.
    pub later_fragment: bool,
}

impl Ipv4Info {
    /// The fields of the 20-byte fixed header at `l3_off`, as they are: validating them is the
    /// caller's (an outer datagram and an ICMP error's quote are judged differently).
    #[inline(always)]
    pub fn decode(l3_off: usize, head: &[u8; IPV4_MIN_HLEN]) -> Self {
        let frag = u16::from_be_bytes([head[6], head[7]]);
        Ipv4Info {
            l3_off,
            hlen: ((head[0] & 0x0f) as usize) * 4,
            total_len: u16::from_be_bytes([head[2], head[3]]) as usize,
            proto: head[9],
            src: u32::from_be_bytes([head[12], head[13], head[14], head[15]]),
            dst: u32::from_be_bytes([head[16], head[17], head[18], head[19]]),
            later_fragment: frag & 0x1fff != 0,
        }
    }

    #[inline(always)]
    pub const fn l4_off(&self) -> usize {
        self.l3_off + self.hlen
    }

    /// One past the last byte of the datagram (trailing Ethernet padding excluded).
    #[inline(always)]
    pub const fn end(&self) -> usize {
        self.l3_off + self.total_len
    }
}

/// Whether the IPv4 header of `ip` sums to 0xffff, its checksum included (RFC 1071). A
/// router checks it before it forwards (RFC 1812 section 5.2.2): a translated header with a
/// bad checksum keeps it bad, and the VM would only drop it later, uncounted.
#[inline(always)]
pub fn ipv4_header_ok<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4Info) -> bool {
    // The fixed header in one read (one bounds check), summed as 16-bit words without
    // folding on the way: 30 words of at most 0xffff stay below 2^21.
    let Some(head) = pkt.load::<IPV4_MIN_HLEN>(ip.l3_off) else {
        return false;
    };
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < IPV4_MIN_HLEN {
        sum += u16::from_be_bytes([head[i], head[i + 1]]) as u32;
        i += 2;
    }
    // Options, a word at a time: at most 10 (IHL 15), a fixed bound the verifier follows.
    let mut off = IPV4_MIN_HLEN;
    while off < 60 {
        if off >= ip.hlen {
            break;
        }
        let Some(w) = pkt.u32_at(ip.l3_off + off) else {
            return false;
        };
        sum += (w >> 16) + (w & 0xffff);
        off += 4;
    }
    crate::checksum::fold(sum) == 0xffff
}

/// Validates the IPv4 header at `l3_off`: version 4, IHL >= 5, header and total length within
/// the frame.
#[inline(always)]
pub fn parse_ipv4<P: Packet + ?Sized>(pkt: &P, l3_off: usize) -> Result<Ipv4Info, RewriteError> {
    let head: [u8; IPV4_MIN_HLEN] = pkt.load(l3_off).ok_or(RewriteError::Truncated)?;
    let ip = Ipv4Info::decode(l3_off, &head);
    if head[0] >> 4 != 4 {
        return Err(RewriteError::BadVersion);
    }
    if ip.hlen < IPV4_MIN_HLEN {
        return Err(RewriteError::BadHeaderLength);
    }
    if ip.total_len < ip.hlen || l3_off + ip.total_len > pkt.len() {
        return Err(RewriteError::BadTotalLength);
    }
    Ok(ip)
}
