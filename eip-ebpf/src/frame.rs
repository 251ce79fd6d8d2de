//! `eip_common::Packet` over the programs' packet pointers. Every access compares the pointer
//! it is about to use with `data_end` right before using it, which is what the verifier
//! needs to see.

use core::ptr;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::{TcContext, XdpContext},
};
use eip_common::Packet;

/// `data_end`, hidden from LLVM. Without this, LLVM proves some bounds checks redundant
/// (a read inside a header already checked whole) and deletes them; the verifier tracks the
/// earlier check on a differently-built pointer and cannot follow, so it rejects the read.
/// A spilled `pkt_end` keeps its type for the verifier, so the check stays valid.
#[inline(always)]
fn opaque(end: usize) -> usize {
    // SAFETY: a read of a local just written.
    unsafe { ptr::read_volatile(&end) }
}

#[inline(always)]
fn load<const N: usize>(start: usize, end: usize, off: usize) -> Option<[u8; N]> {
    let p = start + off;
    if p + N > opaque(end) {
        return None;
    }
    // SAFETY: [p, p + N) lies inside the packet, checked just above.
    Some(unsafe { ptr::read_unaligned(p as *const [u8; N]) })
}

#[inline(always)]
fn store<const N: usize>(start: usize, end: usize, off: usize, bytes: [u8; N]) -> Option<()> {
    let p = start + off;
    if p + N > opaque(end) {
        return None;
    }
    // SAFETY: as in `load`.
    unsafe { ptr::write_unaligned(p as *mut [u8; N], bytes) };
    Some(())
}

/// One byte, read through the 2-byte window that ends at it. A 1-byte bounds check
/// `p + 1 > data_end` is folded by LLVM into `p >= data_end`, from which the verifier learns no
/// packet range (and rejects the read); a 2-byte check keeps its shape. Every single byte the
/// rewrite reads has a header byte before it.
#[inline(always)]
fn byte(start: usize, end: usize, off: usize) -> Option<u8> {
    load::<2>(start, end, off.checked_sub(1)?).map(|w| w[1])
}

/// The frame's length, hidden from LLVM's range analysis. The rewrite validates lengths with
/// it (total length against the frame); if LLVM could relate it to `data_end - data`, it would
/// delete later pointer bounds checks as redundant, and the verifier, which only learns
/// ranges from pointer comparisons, would reject the reads they guarded.
#[inline(always)]
fn opaque_len(start: usize, end: usize) -> usize {
    opaque(end - start)
}

/// The accessors both frames share: direct packet access between `data` and `data_end`.
macro_rules! direct_access {
    () => {
        #[inline(always)]
        fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
            load(self.0.data(), self.0.data_end(), off)
        }

        #[inline(always)]
        fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()> {
            store(self.0.data(), self.0.data_end(), off, bytes)
        }

        #[inline(always)]
        fn u8_at(&self, off: usize) -> Option<u8> {
            byte(self.0.data(), self.0.data_end(), off)
        }
    };
}

pub struct XdpFrame<'a>(pub &'a XdpContext);

impl Packet for XdpFrame<'_> {
    direct_access!();

    /// An XDP frame is linear (the program does not take multi-buffer frames).
    #[inline(always)]
    fn len(&self) -> usize {
        opaque_len(self.0.data(), self.0.data_end())
    }
}

/// An skb. The transport checksums go through the kernel's helper: a VM's packets reach the
/// bridge with CHECKSUM_PARTIAL (the field holds the pseudo-header sum, completed at
/// transmit), which only `bpf_l4_csum_replace` with `BPF_F_PSEUDO_HDR` updates correctly, and
/// which also keeps `skb->csum` right for CHECKSUM_COMPLETE. The IPv4 header checksum is
/// always complete in the header, and an update of it with the words it covers leaves the
/// header's sum (and so `skb->csum`) as it was: the plain RFC 1624 update of the `Packet`
/// default does what `bpf_l3_csum_replace` does, without a helper call.
/// (The verifier unclones a cloned skb before the program's first direct write.)
pub struct TcFrame<'a>(pub &'a TcContext);

impl Packet for TcFrame<'_> {
    direct_access!();

    /// The whole skb, `skb->len`, not the linear area: a VM's bulk TCP arrives as GSO
    /// super-frames, and even a plain 1,500-byte frame may carry its payload in page
    /// fragments. Only the headers need to be linear (the program pulls them in); the lengths
    /// in them are checked against the real packet.
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn l4_pseudo_replace32(&mut self, off: usize, old: u32, new: u32, udp: bool) -> Option<()> {
        // The helper wants the values as they are in the packet (network order); with
        // BPF_F_MARK_MANGLED_0 it leaves a zero UDP checksum alone and turns a computed zero
        // into 0xffff (RFC 768).
        let mut flags = (BPF_F_PSEUDO_HDR as u64) | 4;
        if udp {
            flags |= BPF_F_MARK_MANGLED_0 as u64;
        }
        self.0
            .l4_csum_replace(off, old.to_be() as u64, new.to_be() as u64, flags)
            .ok()
    }
}

/// Makes the first `want` bytes (or the whole skb, if shorter) linear, for direct access,
/// unless they are already: most skbs come with their headers linear, and the helper call is
/// a cost on every packet. A failure leaves what is there (the accesses check their bounds).
/// The verifier unclones a cloned skb before the program writes to it, either way.
#[inline(always)]
pub fn pull_headers(ctx: &TcContext, want: u32) {
    let len = ctx.len();
    let want = if len < want { len } else { want };
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < want {
        let _ = ctx.pull_data(want);
    }
}
