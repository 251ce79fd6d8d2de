//! Frame builder and full-recompute verifier for tests and benchmarks (feature `builder`).
//!
//! Frames are built field by field with correct checksums, so a test states its input in
//! terms an operator reads (addresses, ports) and checks output by recomputing everything.

use alloc::{format, string::String, vec, vec::Vec};

use crate::{checksum, parse::*};

pub type Mac = [u8; 6];

/// A transport payload of an IPv4 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        flags: u8,
        payload: Vec<u8>,
    },
    /// `checksum: false` sends 0, "no checksum" (RFC 768).
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        checksum: bool,
    },
    IcmpEcho {
        reply: bool,
        id: u16,
        seq: u16,
        payload: Vec<u8>,
    },
    /// An ICMP error quoting `quote` (usually the start of an IPv4 datagram); `rest` is the
    /// 4-byte field after the checksum (next-hop MTU for "fragmentation needed").
    IcmpError {
        icmp_type: u8,
        code: u8,
        rest: u32,
        quote: Vec<u8>,
    },
    /// Any other protocol number, bytes as given.
    Raw { proto: u8, bytes: Vec<u8> },
}

impl Transport {
    pub fn proto(&self) -> u8 {
        match self {
            Transport::Tcp { .. } => IPPROTO_TCP,
            Transport::Udp { .. } => IPPROTO_UDP,
            Transport::IcmpEcho { .. } | Transport::IcmpError { .. } => IPPROTO_ICMP,
            Transport::Raw { proto, .. } => *proto,
        }
    }

    /// The transport bytes with their checksum computed for `src` -> `dst`.
    pub fn bytes(&self, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let (mut b, csum_off) = match self {
            Transport::Tcp {
                sport,
                dport,
                seq,
                flags,
                payload,
            } => {
                let mut b = Vec::with_capacity(20 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes()); // ack
                b.extend_from_slice(&[5 << 4, *flags]);
                b.extend_from_slice(&64240u16.to_be_bytes()); // window
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                b.extend_from_slice(payload);
                (b, Some(TCP_CSUM))
            }
            Transport::Udp {
                sport,
                dport,
                payload,
                checksum,
            } => {
                let mut b = Vec::with_capacity(8 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                (b, checksum.then_some(UDP_CSUM))
            }
            Transport::IcmpEcho {
                reply,
                id,
                seq,
                payload,
            } => {
                let mut b = vec![if *reply { 0 } else { 8 }, 0, 0, 0];
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(payload);
                let c = checksum::compute(0, &b);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                return b;
            }
            Transport::IcmpError {
                icmp_type,
                code,
                rest,
                quote,
            } => {
                let mut b = vec![*icmp_type, *code, 0, 0];
                b.extend_from_slice(&rest.to_be_bytes());
                b.extend_from_slice(quote);
                let c = checksum::compute(0, &b);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                return b;
            }
            Transport::Raw { bytes, .. } => return bytes.clone(),
        };
        if let Some(off) = csum_off {
            let ph = checksum::pseudo_header(src, dst, self.proto(), b.len() as u16);
            let mut c = checksum::compute(ph, &b);
            if c == 0 && matches!(self, Transport::Udp { .. }) {
                c = 0xffff;
            }
            b[off..off + 2].copy_from_slice(&c.to_be_bytes());
        }
        b
    }
}

/// An IPv4 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub id: u16,
    pub dont_fragment: bool,
    /// Raw option bytes, padded with zeros (end of options) to a multiple of 4.
    pub options: Vec<u8>,
    pub transport: Transport,
}

impl Ipv4 {
    pub fn new(src: [u8; 4], dst: [u8; 4], transport: Transport) -> Self {
        Ipv4 {
            src,
            dst,
            ttl: 64,
            id: 0x1c46,
            dont_fragment: true,
            options: Vec::new(),
            transport,
        }
    }

    pub fn with_options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        while !self.options.len().is_multiple_of(4) {
            self.options.push(0);
        }
        self
    }

    fn header(&self, payload_len: usize, frag_offset_units: u16, more_fragments: bool) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        let mut h = Vec::with_capacity(hlen);
        h.push(0x40 | (hlen / 4) as u8);
        h.push(0);
        h.extend_from_slice(&((hlen + payload_len) as u16).to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        let flags = if self.dont_fragment { 0x4000 } else { 0 } | if more_fragments { 0x2000 } else { 0 };
        h.extend_from_slice(&(flags | frag_offset_units).to_be_bytes());
        h.push(self.ttl);
        h.push(self.transport.proto());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src);
        h.extend_from_slice(&self.dst);
        h.extend_from_slice(&self.options);
        let c = checksum::compute(0, &h);
        h[IP_CSUM..IP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// The whole datagram.
    pub fn bytes(&self) -> Vec<u8> {
        let payload = self.transport.bytes(self.src, self.dst);
        let mut b = self.header(payload.len(), 0, false);
        b.extend_from_slice(&payload);
        b
    }

    /// The datagram split in two fragments, the first carrying `first_len` bytes of the
    /// transport data (rounded down to a multiple of 8, as fragment offsets require).
    pub fn fragments(&self, first_len: usize) -> (Vec<u8>, Vec<u8>) {
        let payload = self.transport.bytes(self.src, self.dst);
        let split = (first_len.min(payload.len()) / 8) * 8;
        let mut me = self.clone();
        me.dont_fragment = false;
        let mut first = me.header(split, 0, true);
        first.extend_from_slice(&payload[..split]);
        let mut second = me.header(payload.len() - split, (split / 8) as u16, false);
        second.extend_from_slice(&payload[split..]);
        (first, second)
    }
}

/// An Ethernet frame around `l3`, with one 802.1Q tag when `vlan` is given.
pub fn ethernet(dst: Mac, src: Mac, vlan: Option<u16>, ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + l3.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// Recomputes every checksum of the IPv4 datagram at `l3` in full and reports the first
/// that is wrong: the IPv4 header, the transport checksum (for a whole datagram), and for an
/// ICMP error the embedded header's checksum and the embedded transport checksum when the quote
/// holds the whole original datagram.
pub fn verify_ipv4(frame: &[u8], l3: usize) -> Result<(), String> {
    let ip = &frame[l3..];
    let hlen = ((ip[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if checksum::compute(0, &ip[..hlen]) != 0 {
        return Err(format!(
            "IPv4 header checksum wrong: {:#06x}",
            u16::from_be_bytes([ip[10], ip[11]])
        ));
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 {
        return Ok(()); // a fragment: the transport checksum covers the reassembled datagram
    }
    verify_transport(
        ip[9],
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
        &ip[hlen..total],
    )
}

/// Verifies the transport checksum of `l4` sent from `src` to `dst`.
pub fn verify_transport(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Result<(), String> {
    let ph = checksum::pseudo_header(src, dst, proto, l4.len() as u16);
    match proto {
        IPPROTO_TCP if checksum::compute(ph, l4) != 0 => Err(String::from("TCP checksum wrong")),
        IPPROTO_UDP => {
            let c = u16::from_be_bytes([l4[6], l4[7]]);
            if c != 0 && checksum::compute(ph, l4) != 0 {
                Err(String::from("UDP checksum wrong"))
            } else {
                Ok(())
            }
        }
        IPPROTO_ICMP => {
            if checksum::compute(0, l4) != 0 {
                return Err(String::from("ICMP checksum wrong"));
            }
            if crate::rewrite::is_icmp_error(l4[0]) && l4.len() >= 28 {
                let q = &l4[8..];
                let qh = ((q[0] & 0x0f) as usize) * 4;
                if q.len() >= qh && checksum::compute(0, &q[..qh]) != 0 {
                    return Err(String::from("embedded IPv4 header checksum wrong"));
                }
                let qtotal = u16::from_be_bytes([q[2], q[3]]) as usize;
                // Only a complete quote lets the embedded transport checksum be recomputed.
                if q.len() >= qtotal && qtotal > qh && u16::from_be_bytes([q[6], q[7]]) & 0x3fff == 0 {
                    return verify_transport(
                        q[9],
                        q[12..16].try_into().unwrap(),
                        q[16..20].try_into().unwrap(),
                        &q[qh..qtotal],
                    )
                    .map_err(|e| format!("embedded {e}"));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Hex of both frames and the first differing offset, for assertion messages.
pub fn diff(expected: &[u8], actual: &[u8]) -> String {
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
    format!(
        "first difference at byte {first} (lengths {} and {})\nexpected: {}\nactual:   {}",
        expected.len(),
        actual.len(),
        hex(expected),
        hex(actual)
    )
}
