//! Sending whole Ethernet frames out of one interface (AF_PACKET): gratuitous ARP, and DHCP
//! replies to clients that have no address yet.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    pub fn open() -> io::Result<PacketSocket> {
        // SAFETY: a plain socket(2) call; the fd is owned below. Protocol 0: send only.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        Ok(PacketSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `frame` (destination MAC, source MAC, EtherType, payload) out of `ifindex`.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than its header",
            ));
        }
        // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        sa.sll_ifindex = ifindex as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and address are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
