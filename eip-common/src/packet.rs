//! Bounds-checked access to a frame, so that one rewrite routine serves the eBPF programs
//! (packet pointers checked against `data_end`) and the host (`&mut [u8]`).

/// A frame that can be read and written at byte offsets. Every access is bounds-checked by
/// the implementation and returns `None` past the end, never panics.
pub trait Packet {
    /// Bytes in the frame. Used for length validation only; accesses check their own bounds
    /// (in eBPF the verifier needs the check next to the pointer use).
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;

    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()>;

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.load::<1>(off).map(|b| b[0])
    }

    #[inline(always)]
    fn u16_at(&self, off: usize) -> Option<u16> {
        self.load::<2>(off).map(u16::from_be_bytes)
    }

    #[inline(always)]
    fn u32_at(&self, off: usize) -> Option<u32> {
        self.load::<4>(off).map(u32::from_be_bytes)
    }

    /// Writes the Ethernet header's addresses: `dst`, then `src`, one 12-byte store.
    #[inline(always)]
    fn set_eth_addrs(&mut self, dst: [u8; 6], src: [u8; 6]) -> Option<()> {
        self.store(0, eth_addrs(dst, src))
    }

    /// Replaces the IPv4 address `old` by `new` inside the transport checksum at `off`, a
    /// checksum that covers the pseudo-header. `udp` applies UDP's rules: a zero checksum
    /// means "none" and stays zero, and a computed zero is sent as 0xffff (RFC 768).
    ///
    /// The default is the RFC 1624 update of a complete checksum. The TC program overrides
    /// it with `bpf_l4_csum_replace`, which also handles the partial checksums
    /// (CHECKSUM_PARTIAL) that a VM's offloading NIC hands to the bridge.
    #[inline(always)]
    fn l4_pseudo_replace32(&mut self, off: usize, old: u32, new: u32, udp: bool) -> Option<()> {
        let check = self.u16_at(off)?;
        self.store(off, crate::rewrite::l4_update(check, old, new, udp).to_be_bytes())
    }

    /// Replaces `old` by `new` inside the IPv4 header checksum at `off`. The default is the
    /// RFC 1624 update; TC uses `bpf_l3_csum_replace`.
    #[inline(always)]
    fn l3_replace32(&mut self, off: usize, old: u32, new: u32) -> Option<()> {
        let check = self.u16_at(off)?;
        self.store(off, crate::checksum::replace32(check, old, new).to_be_bytes())
    }

    /// As [`Packet::l3_replace32`] for one 16-bit word.
    #[inline(always)]
    fn l3_replace16(&mut self, off: usize, old: u16, new: u16) -> Option<()> {
        let check = self.u16_at(off)?;
        self.store(off, crate::checksum::replace16(check, old, new).to_be_bytes())
    }
}

/// The first 12 bytes of an Ethernet header: `dst`, then `src`.
#[inline(always)]
pub fn eth_addrs(dst: [u8; 6], src: [u8; 6]) -> [u8; 12] {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&dst);
    macs[6..].copy_from_slice(&src);
    macs
}

/// A host buffer; also what the tests and benchmarks use.
impl Packet for [u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }

    #[inline(always)]
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()> {
        self.get_mut(off..off.checked_add(N)?)?.copy_from_slice(&bytes);
        Some(())
    }
}
