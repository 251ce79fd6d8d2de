//! Gratuitous ARP: tells the segment that an EIP now lives behind this host's MAC, so the
//! upstream router updates its ARP cache at once instead of when the entry expires.

use std::{io, net::Ipv4Addr};

use crate::kernel::ether::PacketSocket;

/// The frame RFC 5227 calls an ARP announcement: a broadcast request whose sender and target
/// protocol addresses are both the announced address.
pub fn announcement(mac: [u8; 6], addr: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    // Target hardware address stays zero.
    f[38..42].copy_from_slice(&addr.octets());
    f
}

/// Sends the announcement of `addr` out of interface `ifindex` (whose MAC is `mac`) on
/// `socket`. The socket is the caller's to keep: closing a packet socket waits for an RCU
/// grace period (about 10 ms here), which a socket per announcement added to every bind.
pub fn announce(socket: &PacketSocket, ifindex: u32, mac: [u8; 6], addr: Ipv4Addr) -> io::Result<()> {
    socket.send(ifindex, &announcement(mac, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_is_an_rfc5227_request() {
        let f = announcement([2, 0, 0, 0, 0, 1], Ipv4Addr::new(203, 0, 113, 5));
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, // Ethernet
            0, 1, 0x08, 0x00, 6, 4, 0, 1, // ARP request
            2, 0, 0, 0, 0, 1, 203, 0, 113, 5, // sender
            0, 0, 0, 0, 0, 0, 203, 0, 113, 5, // target
        ];
        assert_eq!(f, expected);
    }
}
