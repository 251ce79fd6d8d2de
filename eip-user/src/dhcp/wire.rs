//! DHCP on the wire: a structural check of every datagram before dhcproto decodes it (so a
//! bad option is a counted drop, not a silently shortened option list), and replies encoded
//! as whole Ethernet frames, since a reply to a client without an address yet must go to its
//! hardware address (RFC 2131 4.1) and the kernel's UDP path cannot ARP for it.

use std::net::Ipv4Addr;

use dhcproto::{Decodable, Decoder, Encodable, Encoder, v4};
use eip_common::checksum;

use super::DropReason;

/// The BOOTP header (236 bytes) and the magic cookie.
pub const HEADER: usize = 240;
/// The largest DHCP message taken: a whole UDP payload in a 1500-byte IPv4 packet.
pub const MAX_MESSAGE: usize = 1472;
/// BOOTP relays and old clients expect at least this many bytes (RFC 1542 2.1).
pub const MIN_REPLY: usize = 300;

/// Lengths dhcproto assumes (debug-asserts) rather than checks, for options a client has no
/// business sending malformed.
fn length_ok(code: u8, len: usize) -> bool {
    match code {
        80 => len == 0,        // rapid commit
        81 => len >= 3,        // client FQDN
        94 => len == 3,        // client network interface
        152..=155 => len == 4, // bulk leasequery times
        _ => true,
    }
}

/// Checks the fixed header and walks the options, then decodes with dhcproto. dhcproto stops
/// decoding options at the first one it cannot read and keeps the rest; decoding each option
/// on its own first makes that a drop instead.
pub fn decode(b: &[u8]) -> Result<v4::Message, DropReason> {
    if b.len() > MAX_MESSAGE {
        return Err(DropReason::Oversized);
    }
    if b.len() < HEADER {
        return Err(DropReason::Truncated);
    }
    if b[0] != 1 {
        return Err(DropReason::NotRequest);
    }
    if b[1] != 1 || b[2] != 6 {
        return Err(DropReason::NotEthernet);
    }
    if b[236..240] != v4::MAGIC {
        return Err(DropReason::BadCookie);
    }
    // The code and total length of the run of options ending here: dhcproto joins adjacent
    // options of one code into one value (RFC 3396), so the rules apply to the whole run.
    let mut run: Option<(u8, usize)> = None;
    let mut i = HEADER;
    loop {
        match b.get(i) {
            None => return Err(DropReason::BadOptions),
            Some(0) => {
                run = None;
                i += 1;
            }
            Some(255) => break,
            Some(&code) => {
                let len = *b.get(i + 1).ok_or(DropReason::BadOptions)? as usize;
                let total = match run {
                    Some((c, n)) if c == code => n + len,
                    _ => len,
                };
                if i + 2 + len > b.len() || !length_ok(code, total) {
                    return Err(DropReason::BadOptions);
                }
                run = Some((code, total));
                i += 2 + len;
            }
        }
    }
    let mut opts = Decoder::new(&b[HEADER..]);
    loop {
        match v4::DhcpOption::decode(&mut opts) {
            Ok(v4::DhcpOption::End) => break,
            Ok(_) => {}
            Err(_) => return Err(DropReason::BadOptions),
        }
    }
    let msg = v4::Message::decode(&mut Decoder::new(b)).map_err(|_| DropReason::BadOptions)?;
    if msg.opts().msg_type().is_none() {
        return Err(DropReason::NoMessageType);
    }
    Ok(msg)
}

/// Where a reply goes (RFC 2131 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// In a frame this server builds, on the bridge.
    Link(Link),
    /// To a relay agent's server port (a relay on the bridge's own subnet), through the
    /// kernel's routing and neighbour tables.
    Relay(Ipv4Addr),
}

/// A reply frame's destination on the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// To 255.255.255.255 and ff:ff:ff:ff:ff:ff.
    Broadcast,
    Unicast {
        mac: [u8; 6],
        ip: Ipv4Addr,
    },
}

/// The DHCP payload, padded to [`MIN_REPLY`].
pub fn encode(msg: &v4::Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MIN_REPLY);
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("encoding into a Vec does not fail");
    if buf.len() < MIN_REPLY {
        buf.resize(MIN_REPLY, 0);
    }
    buf
}

/// The reply as an Ethernet frame from the server (`src_mac`, `src_ip`, port 67) to the
/// client's port 68, with the IPv4 and UDP checksums filled in.
pub fn frame(src_mac: [u8; 6], src_ip: Ipv4Addr, to: Link, payload: &[u8]) -> Vec<u8> {
    let (dst_mac, dst_ip) = match to {
        Link::Broadcast => ([0xff; 6], Ipv4Addr::BROADCAST),
        Link::Unicast { mac, ip } => (mac, ip),
    };
    let udp_len = 8 + payload.len() as u16;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len as usize);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0x10]); // IPv4, IHL 5; DSCP low-delay, as dnsmasq and ISC do
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]); // id 0, no fragments
    f.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum below
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&dst_ip.octets());
    let ip_sum = checksum::compute(0, &f[ip_start..ip_start + 20]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let udp_start = f.len();
    f.extend_from_slice(&v4::SERVER_PORT.to_be_bytes());
    f.extend_from_slice(&v4::CLIENT_PORT.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let pseudo = checksum::pseudo_header(src_ip.octets(), dst_ip.octets(), 17, udp_len);
    let udp_sum = match checksum::compute(pseudo, &f[udp_start..]) {
        0 => 0xffff, // a computed zero is sent as all ones (RFC 768)
        s => s,
    };
    f[udp_start + 6..udp_start + 8].copy_from_slice(&udp_sum.to_be_bytes());
    f
}
