//! Property tests of the rewrite over random IPv4 datagrams.
//!
//! The oracle is the builder itself: translating a datagram built for `a -> b` must give,
//! byte for byte, the datagram built from scratch for the translated addresses, and every
//! checksum must verify by full recomputation.

use eip_common::{
    builder::{Ipv4, Transport, verify_ipv4, verify_transport},
    parse::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    rewrite::{Field, L4Fix, RewriteError, rewrite},
};
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = [u8; 4]> {
    any::<[u8; 4]>()
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

/// The datagrams a 1:1 NAT translates directly.
fn plain_transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u8>(), payload()).prop_map(
            |(sport, dport, seq, flags, payload)| Transport::Tcp {
                sport,
                dport,
                seq,
                flags,
                payload
            }
        ),
        (any::<u16>(), any::<u16>(), payload(), any::<bool>()).prop_map(
            |(sport, dport, payload, checksum)| Transport::Udp {
                sport,
                dport,
                payload,
                checksum
            }
        ),
        (any::<bool>(), any::<u16>(), any::<u16>(), payload()).prop_map(|(reply, id, seq, payload)| {
            Transport::IcmpEcho {
                reply,
                id,
                seq,
                payload,
            }
        }),
    ]
}

fn options() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), prop::collection::vec(any::<u8>(), 1..=40)]
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![Just(Field::Source), Just(Field::Destination)]
}

fn translated(ip: &Ipv4, field: Field, new: [u8; 4]) -> Ipv4 {
    let mut out = ip.clone();
    match field {
        Field::Source => out.src = new,
        Field::Destination => out.dst = new,
    }
    out
}

/// Offsets a rewrite may change, from its plan.
fn allowed(plan: &eip_common::rewrite::Plan) -> Vec<usize> {
    let mut v: Vec<usize> = (plan.addr_off..plan.addr_off + 4).collect();
    v.extend([plan.ip_csum_off, plan.ip_csum_off + 1]);
    if let L4Fix::Pseudo { csum_off, .. } = plan.l4 {
        v.extend([csum_off, csum_off + 1]);
    }
    if let Some(i) = plan.inner {
        v.extend(i.addr_off..i.addr_off + 4);
        v.extend([
            i.ip_csum_off,
            i.ip_csum_off + 1,
            i.icmp_csum_off,
            i.icmp_csum_off + 1,
        ]);
        if let L4Fix::Pseudo { csum_off, .. } = i.l4 {
            v.extend([csum_off, csum_off + 1]);
        }
    }
    v
}

fn assert_only_allowed_changed(
    before: &[u8],
    after: &[u8],
    plan: &eip_common::rewrite::Plan,
) -> Result<(), TestCaseError> {
    let ok = allowed(plan);
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        prop_assert!(
            a == b || ok.contains(&i),
            "byte {i} changed ({a:#04x} -> {b:#04x}) outside the plan {plan:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The header check accepts every header the builder makes, options included, and
    /// refuses it with any single bit of it flipped (one's-complement sums catch every
    /// single-bit error).
    #[test]
    fn the_header_checksum_check(src in addr(), dst in addr(), t in plain_transport(), opts in options(), bit in 0usize..480) {
        let ip = Ipv4::new(src, dst, t).with_options(&opts);
        let mut buf = ip.bytes();
        let info = eip_common::parse::parse_ipv4(&buf[..], 0).expect("valid datagram");
        prop_assert!(eip_common::parse::ipv4_header_ok(&buf[..], &info));
        let bit = bit % (info.hlen * 8);
        // The length fields are not flipped: a header that no longer parses is refused
        // before the check.
        prop_assume!(!(bit / 8 == 0 || (2..4).contains(&(bit / 8))));
        buf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!eip_common::parse::ipv4_header_ok(&buf[..], &info));
    }

    #[test]
    fn whole_datagrams(src in addr(), dst in addr(), new in addr(), t in plain_transport(), opts in options(), f in field()) {
        let ip = Ipv4::new(src, dst, t).with_options(&opts);
        let before = ip.bytes();
        let mut buf = before.clone();
        let plan = rewrite(&mut buf[..], 0, f, u32::from_be_bytes(new)).expect("valid datagram");
        prop_assert_eq!(&buf, &translated(&ip, f, new).bytes(), "not the datagram built for the new address");
        verify_ipv4(&buf, 0).map_err(TestCaseError::fail)?;
        assert_only_allowed_changed(&before, &buf, &plan)?;
    }

    #[test]
    fn fragments(src in addr(), dst in addr(), new in addr(), t in plain_transport(), first in 8usize..72, f in field()) {
        let ip = Ipv4::new(src, dst, t);
        let (mut a, mut b) = ip.fragments(first);
        let (ea, eb) = translated(&ip, f, new).fragments(first);
        let pa = rewrite(&mut a[..], 0, f, u32::from_be_bytes(new));
        let pb = rewrite(&mut b[..], 0, f, u32::from_be_bytes(new)).expect("a later fragment is always translatable");
        prop_assert_eq!(pb.l4, L4Fix::None, "a later fragment has no transport header to fix");
        if let Err(e) = pa {
            // A first fragment too short to hold the transport header is refused (RFC 1858):
            // the datagram is dropped, so the later fragment's data (which then holds the
            // transport checksum) is left alone and only its IP header is translated.
            prop_assert_eq!(e, RewriteError::Truncated);
            prop_assert!(ip.transport.proto() == IPPROTO_TCP && a.len() - 20 < 20);
            prop_assert_eq!(&b[..20], &eb[..20]);
            prop_assert_eq!(&b[20..], &ip.fragments(first).1[20..]);
        } else {
            prop_assert_eq!(&a, &ea);
            prop_assert_eq!(&b, &eb);
            // Reassembled, the transport checksum verifies for the new addresses.
            let mut l4 = a[20..].to_vec();
            l4.extend_from_slice(&b[20..]);
            let nip = translated(&ip, f, new);
            verify_transport(ip.transport.proto(), nip.src, nip.dst, &l4).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn icmp_errors(
        outside in addr(), eip in addr(), private in addr(), peer in addr(),
        quoted in prop_oneof![
            (any::<u16>(), any::<u16>(), any::<u32>(), payload()).prop_map(|(sport, dport, seq, payload)| Transport::Tcp { sport, dport, seq, flags: 0x18, payload }),
            (any::<u16>(), any::<u16>(), payload(), any::<bool>()).prop_map(|(sport, dport, payload, checksum)| Transport::Udp { sport, dport, payload, checksum }),
            (any::<u16>(), any::<u16>()).prop_map(|(id, seq)| Transport::IcmpEcho { reply: false, id, seq, payload: vec![0; 8] }),
        ],
        kind in prop_oneof![Just((3u8, 3u8, 0u32)), Just((3, 4, 1400)), Just((11, 0, 0)), Just((12, 0, 0x1400_0000))],
        keep in prop_oneof![Just(None), (0usize..40).prop_map(Some)],
        opts in options(),
    ) {
        // Ingress: a router answers a packet the VM sent (after SNAT: EIP -> peer); the error
        // goes to the EIP, and both the outer destination and the quoted source become private.
        let original = Ipv4::new(eip, peer, quoted.clone()).with_options(&opts);
        let original_private = Ipv4::new(private, peer, quoted).with_options(&opts);
        let cut = |d: Vec<u8>| {
            let hl = ((d[0] & 0x0f) as usize) * 4;
            match keep { Some(k) => d[..(hl + 8 + k).min(d.len())].to_vec(), None => d }
        };
        let (icmp_type, code, rest) = kind;
        let err = |quote| Ipv4::new(outside, eip, Transport::IcmpError { icmp_type, code, rest, quote });
        let before = err(cut(original.bytes())).bytes();
        let mut buf = before.clone();
        let plan = rewrite(&mut buf[..], 0, Field::Destination, u32::from_be_bytes(private)).expect("valid ICMP error");
        prop_assert!(plan.inner.is_some() || eip == private);
        let mut quote = cut(original_private.bytes());
        // A quote that ends inside the embedded TCP checksum cannot have it fixed: the half
        // that is there stays as it was.
        let tcp_csum = opts.len().div_ceil(4) * 4 + 20 + 16;
        if matches!(original.transport, Transport::Tcp { .. }) && quote.len() == tcp_csum + 1 {
            quote[tcp_csum] = cut(original.bytes())[tcp_csum];
        }
        let mut expected = err(quote);
        expected.dst = private;
        prop_assert_eq!(&buf, &expected.bytes());
        verify_ipv4(&buf, 0).map_err(TestCaseError::fail)?;
        assert_only_allowed_changed(&before, &buf, &plan)?;

        // Egress: the VM answers a packet from outside (peer -> private) with an error; the
        // outer source and the quoted destination become the EIP.
        let quote_in = cut(Ipv4::new(peer, private, original.transport.clone()).bytes());
        let mut buf = Ipv4::new(private, peer, Transport::IcmpError { icmp_type, code, rest, quote: quote_in }).bytes();
        rewrite(&mut buf[..], 0, Field::Source, u32::from_be_bytes(eip)).expect("valid ICMP error");
        let mut quote_out = cut(Ipv4::new(peer, eip, original.transport.clone()).bytes());
        // (This quote has no options: its TCP checksum is at 20 + 16.)
        if matches!(original.transport, Transport::Tcp { .. }) && quote_out.len() == 37 {
            quote_out[36] = cut(Ipv4::new(peer, private, original.transport.clone()).bytes())[36];
        }
        prop_assert_eq!(&buf, &Ipv4::new(eip, peer, Transport::IcmpError { icmp_type, code, rest, quote: quote_out }).bytes());
    }

    /// Arbitrary bytes: never a panic, and a refusal leaves the buffer as it was.
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128), new in addr(), f in field()) {
        let mut buf = bytes.clone();
        if rewrite(&mut buf[..], 0, f, u32::from_be_bytes(new)).is_err() {
            prop_assert_eq!(buf, bytes);
        }
    }

    /// Headers that look valid with random contents behind them: same guarantee.
    #[test]
    fn fuzzed_valid_prefix(t in plain_transport(), mutate in prop::collection::vec((0usize..80, any::<u8>()), 1..6), new in addr()) {
        let mut bytes = Ipv4::new([192, 0, 2, 1], [203, 0, 113, 7], t).bytes();
        for (at, v) in mutate {
            if let Some(b) = bytes.get_mut(at) { *b = v; }
        }
        let mut buf = bytes.clone();
        match rewrite(&mut buf[..], 0, Field::Destination, u32::from_be_bytes(new)) {
            Err(_) => prop_assert_eq!(buf, bytes),
            Ok(plan) => assert_only_allowed_changed(&bytes, &buf, &plan)?,
        }
    }
}

fn tcp() -> Ipv4 {
    Ipv4::new(
        [198, 51, 100, 9],
        [203, 0, 113, 7],
        Transport::Tcp {
            sport: 40000,
            dport: 80,
            seq: 1,
            flags: 0x02,
            payload: b"GET /".to_vec(),
        },
    )
}

const NEW: u32 = u32::from_be_bytes([192, 168, 6, 243]);

fn refused(mut buf: Vec<u8>, expected: RewriteError) {
    let before = buf.clone();
    assert_eq!(
        rewrite(&mut buf[..], 0, Field::Destination, NEW).map(|_| ()),
        Err(expected)
    );
    assert_eq!(buf, before, "a refused rewrite must leave the buffer untouched");
}

#[test]
fn every_truncation_is_refused() {
    for t in [
        tcp().transport,
        Transport::Udp {
            sport: 1,
            dport: 2,
            payload: vec![7; 9],
            checksum: true,
        },
    ] {
        let full = Ipv4::new([198, 51, 100, 9], [203, 0, 113, 7], t)
            .with_options(&[1, 1, 1, 0])
            .bytes();
        for cut in 0..full.len() {
            let expected = if cut < 20 {
                RewriteError::Truncated
            } else {
                RewriteError::BadTotalLength
            };
            refused(full[..cut].to_vec(), expected);
        }
    }
}

#[test]
fn truncated_transport_header_is_refused() {
    // Total length consistent with the buffer but too short for the transport header.
    for (proto, len) in [(IPPROTO_TCP, 19), (IPPROTO_UDP, 7), (IPPROTO_ICMP, 7)] {
        let mut d = Ipv4::new(
            [198, 51, 100, 9],
            [203, 0, 113, 7],
            Transport::Raw {
                proto,
                bytes: vec![0; len],
            },
        )
        .bytes();
        d[9] = proto;
        refused(d, RewriteError::Truncated);
    }
}

#[test]
fn bad_ihl_and_version_are_refused() {
    for ihl in 0..5u8 {
        let mut d = tcp().bytes();
        d[0] = 0x40 | ihl;
        refused(d, RewriteError::BadHeaderLength);
    }
    let mut d = tcp().bytes();
    d[0] = 0x65;
    refused(d, RewriteError::BadVersion);
}

#[test]
fn total_length_beyond_buffer_or_below_header_is_refused() {
    let mut d = tcp().bytes();
    let too_long = (d.len() + 1) as u16;
    d[2..4].copy_from_slice(&too_long.to_be_bytes());
    refused(d, RewriteError::BadTotalLength);
    let mut d = tcp().bytes();
    d[2..4].copy_from_slice(&19u16.to_be_bytes());
    refused(d, RewriteError::BadTotalLength);
}

#[test]
fn trailing_padding_is_left_alone() {
    // Ethernet pads short frames to 60 bytes; the padding is not part of the datagram.
    let ip = Ipv4::new(
        [198, 51, 100, 9],
        [203, 0, 113, 7],
        Transport::Udp {
            sport: 5,
            dport: 6,
            payload: vec![],
            checksum: true,
        },
    );
    let mut buf = ip.bytes();
    buf.extend_from_slice(&[0xee; 18]);
    rewrite(&mut buf[..], 0, Field::Destination, NEW).unwrap();
    assert_eq!(&buf[28..], &[0xee; 18]);
    verify_ipv4(&buf, 0).unwrap();
}

#[test]
fn unsupported_protocols_are_refused_whole_or_fragmented() {
    let gre = Ipv4::new(
        [198, 51, 100, 9],
        [203, 0, 113, 7],
        Transport::Raw {
            proto: 47,
            bytes: vec![0; 24],
        },
    );
    refused(gre.bytes(), RewriteError::UnsupportedProtocol);
    let (a, b) = gre.fragments(8);
    refused(a, RewriteError::UnsupportedProtocol);
    refused(b, RewriteError::UnsupportedProtocol);
}

fn icmp_error(quote: Vec<u8>) -> Vec<u8> {
    Ipv4::new(
        [198, 51, 100, 1],
        [203, 0, 113, 7],
        Transport::IcmpError {
            icmp_type: 3,
            code: 3,
            rest: 0,
            quote,
        },
    )
    .bytes()
}

#[test]
fn icmp_error_with_bad_quote_is_refused() {
    let q = Ipv4::new(
        [203, 0, 113, 7],
        [198, 51, 100, 9],
        Transport::Udp {
            sport: 5,
            dport: 6,
            payload: vec![1; 8],
            checksum: true,
        },
    )
    .bytes();
    // Shorter than the quoted header plus the 8 bytes RFC 792 requires.
    for keep in [0, 10, 19, 20, 27] {
        refused(icmp_error(q[..keep].to_vec()), RewriteError::BadIcmpPayload);
    }
    let mut bad_ihl = q.clone();
    bad_ihl[0] = 0x44;
    refused(icmp_error(bad_ihl), RewriteError::BadIcmpPayload);
    let mut v6 = q.clone();
    v6[0] = 0x65;
    refused(icmp_error(v6), RewriteError::BadIcmpPayload);
}

#[test]
fn icmp_error_quoting_another_address_keeps_its_quote() {
    let q = Ipv4::new(
        [203, 0, 113, 99],
        [198, 51, 100, 9],
        Transport::Udp {
            sport: 5,
            dport: 6,
            payload: vec![1; 8],
            checksum: true,
        },
    )
    .bytes();
    let before = icmp_error(q);
    let mut buf = before.clone();
    let plan = rewrite(&mut buf[..], 0, Field::Destination, NEW).unwrap();
    assert_eq!(plan.inner, None);
    assert_eq!(&buf[20..], &before[20..], "the ICMP message itself is unchanged");
    verify_ipv4(&buf, 0).unwrap();
}

#[test]
fn udp_without_checksum_stays_without() {
    let ip = Ipv4::new(
        [198, 51, 100, 9],
        [203, 0, 113, 7],
        Transport::Udp {
            sport: 53,
            dport: 5353,
            payload: b"x".to_vec(),
            checksum: false,
        },
    );
    let mut buf = ip.bytes();
    rewrite(&mut buf[..], 0, Field::Destination, NEW).unwrap();
    assert_eq!(&buf[26..28], &[0, 0]);
}

#[test]
fn udp_checksum_that_becomes_zero_is_sent_as_ffff() {
    // Search a payload word that makes the translated checksum compute to zero.
    let new = [192, 168, 6, 243];
    for w in 0..=u16::MAX {
        let ip = Ipv4::new(
            [198, 51, 100, 9],
            [203, 0, 113, 7],
            Transport::Udp {
                sport: 1000,
                dport: 2000,
                payload: w.to_be_bytes().to_vec(),
                checksum: true,
            },
        );
        let mut translated = ip.clone();
        translated.dst = new;
        let ph = eip_common::checksum::pseudo_header(translated.src, translated.dst, IPPROTO_UDP, 10);
        let mut l4 = translated.transport.bytes(translated.src, translated.dst);
        l4[6..8].copy_from_slice(&[0, 0]);
        if eip_common::checksum::compute(ph, &l4) != 0 {
            continue;
        }
        let mut buf = ip.bytes();
        rewrite(&mut buf[..], 0, Field::Destination, u32::from_be_bytes(new)).unwrap();
        assert_eq!(&buf[26..28], &[0xff, 0xff]);
        verify_ipv4(&buf, 0).unwrap();
        return;
    }
    panic!("no payload gives a zero checksum");
}

#[test]
fn ttl_is_decremented_with_the_checksum_fixed() {
    let mut ip = tcp();
    ip.ttl = 64;
    let mut buf = ip.bytes();
    assert_eq!(eip_common::rewrite::decrement_ttl(&mut buf[..], 0), Ok(true));
    ip.ttl = 63;
    assert_eq!(buf, ip.bytes());
    for ttl in [0, 1] {
        ip.ttl = ttl;
        let before = ip.bytes();
        let mut buf = before.clone();
        assert_eq!(eip_common::rewrite::decrement_ttl(&mut buf[..], 0), Ok(false));
        assert_eq!(buf, before, "an expiring TTL is left for the kernel to answer");
    }
}
