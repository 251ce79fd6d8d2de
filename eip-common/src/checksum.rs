//! Internet checksum arithmetic (RFC 1071) and incremental update (RFC 1624).
//!
//! Values are the 16-bit words as they appear on the wire, read big-endian. One's-complement
//! sums do not depend on byte order as long as every word is read the same way, so the
//! checksum fields are read and written with the same convention.

/// Folds a 32-bit one's-complement accumulator into 16 bits (not inverted).
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Adds the two 16-bit halves of `v` to a one's-complement accumulator.
#[inline(always)]
pub const fn add32(acc: u32, v: u32) -> u32 {
    // Two additions of at most 0xffff each cannot overflow an accumulator that was folded
    // below 2^17 first.
    let acc = fold(acc) as u32;
    acc + (v >> 16) + (v & 0xffff)
}

/// RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')` for one 16-bit word `m` -> `m'`.
///
/// Equation 3, not equation 2: equation 2 gives 0xffff where a full recomputation gives
/// 0x0000 (the RFC's section 4 example). The UDP "0 means no checksum" rule is the
/// caller's: see `rewrite`.
#[inline(always)]
pub const fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32) + (!old as u32 & 0xffff) + new as u32;
    !fold(sum)
}

/// RFC 1624 update for a 32-bit field (an IPv4 address): both halves at once.
#[inline(always)]
pub const fn replace32(check: u16, old: u32, new: u32) -> u16 {
    let mut sum = !check as u32;
    sum = add32(sum, !old);
    sum = add32(sum, new);
    !fold(sum)
}

/// Full checksum of `data` (RFC 1071), with `initial` an already-summed prefix such as a
/// pseudo-header. Returns the value to store in the checksum field.
///
/// The eBPF programs update checksums incrementally; they compute one only for a header they
/// write whole (the time-exceeded ingress answers with).
pub fn compute(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The one's-complement sum of the IPv4 pseudo-header used by TCP and UDP.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    let w = |b: [u8; 4]| u16::from_be_bytes([b[0], b[1]]) as u32 + u16::from_be_bytes([b[2], b[3]]) as u32;
    w(src) + w(dst) + proto as u32 + l4_len as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(replace16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn replace_matches_recompute() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 192, 0, 2, 1, 203, 0,
            113, 7,
        ];
        let c = compute(0, &hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        let old = u32::from_be_bytes([203, 0, 113, 7]);
        let new = u32::from_be_bytes([192, 168, 6, 243]);
        hdr[16..20].copy_from_slice(&new.to_be_bytes());
        let inc = replace32(c, old, new);
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc, compute(0, &hdr));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(compute(0, &[0x01]), !0x0100);
    }
}
