//! The dataplane's packet fixtures: one row per case, an input frame, the action expected and
//! the exact frame expected out. The in-kernel tests run every row once; the benchmarks run
//! the same rows with `repeat`.
//!
//! The world: a hypervisor whose external interface has MAC [`EXT_MAC`] and whose upstream
//! router has [`ROUTER_MAC`]; a bridge with MAC [`BRIDGE_MAC`]; VM1 bound with a known bridge
//! port (fast path), VM2 bound without one (fallback), VM3 bound and quarantined, VM4 leased
//! but not bound.

use std::net::Ipv4Addr;

use eip_common::{
    builder::{Ipv4, Mac, Transport, ethernet},
    maps::*,
    parse::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
};

use crate::dataplane::{Dataplane, DataplaneError};

pub const EXT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xe1];
pub const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
pub const BRIDGE_MAC: Mac = [0x02, 0, 0, 0, 0, 0xb1];
/// The outside client, reachable through the router (the fixture namespace has the route and
/// a permanent neighbour entry, so the egress FIB lookup resolves).
pub const OUTSIDE: [u8; 4] = [198, 51, 100, 9];
/// On the external subnet but with no neighbour entry: the egress FIB lookup finds the route
/// but not the MAC (NO_NEIGH), so the packet is translated and left to the kernel to resolve.
pub const UNRESOLVED: [u8; 4] = [198, 51, 100, 77];
/// No route at all in the fixture namespace.
pub const UNROUTED: [u8; 4] = [192, 0, 2, 77];

#[derive(Debug, Clone, Copy)]
pub struct Guest {
    pub private: [u8; 4],
    pub mac: Mac,
    pub eip: Option<([u8; 4], u32)>,
    pub flags: u16,
    pub fast_path: bool,
}

pub const VM1: Guest = Guest {
    private: [192, 168, 6, 243],
    mac: [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x88],
    eip: Some(([203, 0, 113, 10], 1)),
    flags: 0,
    fast_path: true,
};
pub const VM2: Guest = Guest {
    private: [192, 168, 6, 244],
    mac: [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x89],
    eip: Some(([203, 0, 113, 11], 2)),
    flags: 0,
    fast_path: false,
};
pub const VM3: Guest = Guest {
    private: [192, 168, 6, 245],
    mac: [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x8a],
    eip: Some(([203, 0, 113, 12], 3)),
    flags: VM_QUARANTINED,
    fast_path: true,
};
/// Leased, not bound, and exempt from anti-spoofing (a VM that routes for others).
pub const VM5: Guest = Guest {
    private: [192, 168, 6, 247],
    mac: [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x8c],
    eip: None,
    flags: VM_NO_ANTISPOOF,
    fast_path: true,
};
pub const VM4: Guest = Guest {
    private: [192, 168, 6, 246],
    mac: [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x8b],
    eip: None,
    flags: 0,
    fast_path: true,
};
/// Bound, behind a port the daemon marked as one that drops redirected frames (a veth).
pub const VM6: Guest = Guest {
    private: [192, 168, 6, 248],
    mac: [0xd0, 0x0d, 0x8e, 0x9f, 0x42, 0x8d],
    eip: Some(([203, 0, 113, 13], 4)),
    flags: VM_PORT_KERNEL,
    fast_path: true,
};
/// The pool the fixture EIPs come from.
pub const POOL: &str = "203.0.113.0/24";
/// An EIP of the pool that is not bound.
pub const UNBOUND_EIP: [u8; 4] = [203, 0, 113, 99];

impl Guest {
    pub fn eip(&self) -> [u8; 4] {
        self.eip.expect("a bound guest").0
    }
}

/// Writes the world into the maps; `port` is the ifindex of the bridge port VM1 and VM3 sit
/// behind (it must exist in the namespace, as the devmap checks).
pub fn install(dp: &mut Dataplane, port: u32) -> Result<(), Box<dyn std::error::Error>> {
    dp.set_config(&Config {
        bridge_mac: BRIDGE_MAC,
        flags: CONFIG_ANTISPOOF,
        private_net: Ipv4Addr::new(192, 168, 6, 0).to_bits(),
        private_mask: 0xffff_ff00,
    })?;
    dp.set_pool(POOL.parse().expect("the fixture pool"))?;
    for g in [VM1, VM2, VM3, VM4, VM5, VM6] {
        let private = Ipv4Addr::from(g.private);
        dp.set_guest(private, g.mac, if g.fast_path { port } else { 0 }, g.flags)?;
        if let Some((eip, slot)) = g.eip {
            dp.bind(Ipv4Addr::from(eip), slot, private, None)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    /// XDP on the external interface.
    Ingress,
    /// TC ingress on the external interface (a veth).
    IngressTc,
    /// TC on the bridge.
    Egress,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub struct Row {
    pub name: &'static str,
    pub prog: Prog,
    pub input: Vec<u8>,
    pub action: u32,
    pub output: Vec<u8>,
    /// The counter this packet must add one to.
    pub counter: Option<Counter>,
}

fn row(
    name: &'static str,
    prog: Prog,
    input: Vec<u8>,
    action: u32,
    output: Vec<u8>,
    counter: Option<Counter>,
) -> Row {
    Row {
        name,
        prog,
        input,
        action,
        output,
        counter,
    }
}

/// A frame from the router to the external interface.
pub fn from_outside(ip: &Ipv4) -> Vec<u8> {
    ethernet(EXT_MAC, ROUTER_MAC, None, ETH_P_IP, &ip.bytes())
}

/// A frame from a VM to its gateway.
pub fn from_vm(g: &Guest, ip: &Ipv4) -> Vec<u8> {
    ethernet(BRIDGE_MAC, g.mac, None, ETH_P_IP, &ip.bytes())
}

fn routed(ip: &Ipv4) -> Ipv4 {
    Ipv4 {
        ttl: ip.ttl - 1,
        ..ip.clone()
    }
}

/// What the fast path sends to a VM: routed (TTL - 1), from the bridge's MAC.
fn to_vm(g: &Guest, ip: &Ipv4) -> Vec<u8> {
    ethernet(g.mac, BRIDGE_MAC, None, ETH_P_IP, &routed(ip).bytes())
}

/// What the egress fast path sends out: routed, from the external MAC to the router's.
fn to_router(ip: &Ipv4) -> Vec<u8> {
    ethernet(ROUTER_MAC, EXT_MAC, None, ETH_P_IP, &routed(ip).bytes())
}

pub fn tcp(sport: u16, dport: u16) -> Transport {
    Transport::Tcp {
        sport,
        dport,
        seq: 0x01020304,
        flags: 0x18,
        payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
    }
}

pub fn udp(sport: u16, dport: u16, checksum: bool) -> Transport {
    Transport::Udp {
        sport,
        dport,
        payload: b"eip fixture".to_vec(),
        checksum,
    }
}

pub fn echo(reply: bool) -> Transport {
    Transport::IcmpEcho {
        reply,
        id: 0x4242,
        seq: 7,
        payload: vec![0x5a; 32],
    }
}

/// An ICMP error from `from` to `to`, quoting the first 28 bytes + `extra` of `quoted`.
fn icmp_error(
    from: [u8; 4],
    to: [u8; 4],
    icmp_type: u8,
    code: u8,
    rest: u32,
    quoted: &Ipv4,
    extra: usize,
) -> Ipv4 {
    let q = quoted.bytes();
    let keep = (28 + extra).min(q.len());
    Ipv4::new(
        from,
        to,
        Transport::IcmpError {
            icmp_type,
            code,
            rest,
            quote: q[..keep].to_vec(),
        },
    )
}

/// Rewrites `ip`'s destination, as ingress does.
fn dnat(ip: &Ipv4, private: [u8; 4]) -> Ipv4 {
    Ipv4 {
        dst: private,
        ..ip.clone()
    }
}

fn snat(ip: &Ipv4, eip: [u8; 4]) -> Ipv4 {
    Ipv4 {
        src: eip,
        ..ip.clone()
    }
}

/// What XDP sends back for a packet whose TTL runs out at the hypervisor: a time-exceeded
/// from the EIP it addressed, quoting its header and 8 bytes as they arrived (the EIP, not
/// the VM), to the router it came from.
fn time_exceeded(expired: &Ipv4) -> Vec<u8> {
    let b = expired.bytes();
    let hlen = usize::from(b[0] & 0x0f) * 4;
    let icmp = Ipv4 {
        ttl: 64,
        id: 0,
        dont_fragment: false,
        ..Ipv4::new(
            expired.dst,
            expired.src,
            Transport::IcmpError {
                icmp_type: 11,
                code: 0,
                rest: 0,
                quote: b[..hlen + 8].to_vec(),
            },
        )
    };
    ethernet(ROUTER_MAC, EXT_MAC, None, ETH_P_IP, &icmp.bytes())
}

/// A datagram from outside to VM1's EIP, translated and redirected to VM1's port.
fn to_vm1(name: &'static str, ip: Ipv4) -> Row {
    row(
        name,
        Prog::Ingress,
        from_outside(&ip),
        XDP_REDIRECT,
        to_vm(&VM1, &dnat(&ip, VM1.private)),
        Some(Counter::IngressFastPath),
    )
}

/// The TTL 1 row: XDP answers it (XDP_TX); TC, which builds no answer on an skb, drops it.
pub const TTL_ROW: &str =
    "ingress TTL 1: answered with a time-exceeded from the EIP, quoting the packet as it came";

/// The row XDP hands to the kernel and TC ingress redirects (its redirect is an skb).
pub const KERNEL_PORT_ROW: &str =
    "ingress to a VM on a port that drops redirected frames: translated, passed to the kernel";

pub fn ingress_rows() -> Vec<Row> {
    use Counter::*;
    use Prog::Ingress as I;
    let eip1 = VM1.eip();
    let mut rows = Vec::new();
    for (name, t) in [
        ("ingress TCP", tcp(40000, 80)),
        ("ingress UDP", udp(5353, 53, true)),
        ("ingress UDP without checksum", udp(5353, 53, false)),
        ("ingress ICMP echo request", echo(false)),
        ("ingress ICMP echo reply", echo(true)),
    ] {
        rows.push(to_vm1(name, Ipv4::new(OUTSIDE, eip1, t)));
    }

    // ICMP errors from outside about packets VM1 sent (as its EIP): the quoted source becomes
    // the private address again, so the VM's socket sees the error.
    let sent_udp = Ipv4::new(eip1, OUTSIDE, udp(34567, 9, true));
    let sent_tcp = Ipv4::new(eip1, OUTSIDE, tcp(34568, 443));
    for (name, icmp_type, code, rest, sent, extra) in [
        (
            "ingress ICMP port unreachable quoting UDP",
            3u8,
            3u8,
            0u32,
            &sent_udp,
            11usize,
        ),
        (
            "ingress ICMP fragmentation needed quoting TCP",
            3,
            4,
            1280,
            &sent_tcp,
            12,
        ),
        (
            "ingress ICMP time exceeded quoting TCP, 8-byte quote",
            11,
            0,
            0,
            &sent_tcp,
            0,
        ),
    ] {
        let err = icmp_error(OUTSIDE, eip1, icmp_type, code, rest, sent, extra);
        let sent_private = Ipv4 {
            src: VM1.private,
            ..sent.clone()
        };
        let expected = icmp_error(OUTSIDE, VM1.private, icmp_type, code, rest, &sent_private, extra);
        rows.push(row(
            name,
            I,
            from_outside(&err),
            XDP_REDIRECT,
            to_vm(&VM1, &expected),
            Some(IngressFastPath),
        ));
    }

    let big = Ipv4::new(
        OUTSIDE,
        eip1,
        Transport::Udp {
            sport: 1,
            dport: 2,
            payload: vec![0x33; 64],
            checksum: true,
        },
    );
    let (first, later) = big.fragments(32);
    let (efirst, elater) = dnat(&big, VM1.private).fragments(32);
    let frame = |b: &[u8]| ethernet(EXT_MAC, ROUTER_MAC, None, ETH_P_IP, b);
    let routed_frame = |mut b: Vec<u8>| {
        // TTL - 1 and the header checksum, by hand: the fragments are raw bytes.
        b[8] -= 1;
        b[10..12].copy_from_slice(&[0, 0]);
        let c = eip_common::checksum::compute(0, &b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        ethernet(VM1.mac, BRIDGE_MAC, None, ETH_P_IP, &b)
    };
    rows.push(row(
        "ingress first fragment",
        I,
        frame(&first),
        XDP_REDIRECT,
        routed_frame(efirst),
        Some(IngressFastPath),
    ));
    rows.push(row(
        "ingress later fragment",
        I,
        frame(&later),
        XDP_REDIRECT,
        routed_frame(elater),
        Some(IngressFastPath),
    ));

    let opts = Ipv4::new(OUTSIDE, eip1, tcp(40001, 22)).with_options(&[0x94, 0x04, 0, 0, 1, 1, 1, 0]);
    rows.push(row(
        "ingress IP options",
        I,
        from_outside(&opts),
        XDP_REDIRECT,
        to_vm(&VM1, &dnat(&opts, VM1.private)),
        Some(IngressFastPath),
    ));

    let v = Ipv4::new(OUTSIDE, eip1, udp(7, 7, true));
    let tagged = ethernet(EXT_MAC, ROUTER_MAC, Some(0x0064), ETH_P_IP, &v.bytes());
    rows.push(row(
        "ingress VLAN-tagged to an EIP on the untagged uplink: left to the kernel untouched",
        I,
        tagged.clone(),
        XDP_PASS,
        tagged,
        Some(IngressOtherVlan),
    ));

    let to2 = Ipv4::new(OUTSIDE, VM2.eip(), tcp(40002, 80));
    rows.push(row(
        "ingress fallback: no bridge port known, translated and passed to the kernel",
        I,
        from_outside(&to2),
        XDP_PASS,
        from_outside(&dnat(&to2, VM2.private)),
        Some(IngressFallback),
    ));
    // Sources no host outside can genuinely have, each dropped untouched with its reason.
    for (name, src, why) in [
        (
            "ingress from the bridge subnet",
            [192, 168, 6, 50],
            DropSrcBridgeSubnet,
        ),
        (
            "ingress from a VM's own private address",
            VM1.private,
            DropSrcBridgeSubnet,
        ),
        ("ingress from a pool address", [203, 0, 113, 77], DropSrcPool),
        ("ingress from a bound EIP", VM2.eip(), DropSrcPool),
        ("ingress from loopback", [127, 0, 0, 1], DropSrcLoopback),
        ("ingress from 0.0.0.0/8", [0, 1, 2, 3], DropSrcZeroNet),
        ("ingress from multicast", [224, 0, 0, 5], DropSrcMulticast),
        (
            "ingress from the limited broadcast",
            [255, 255, 255, 255],
            DropSrcBroadcast,
        ),
        ("ingress from 240.0.0.0/4", [240, 0, 0, 1], DropSrcReserved),
    ] {
        let f = from_outside(&Ipv4::new(src, eip1, tcp(40008, 80)));
        rows.push(row(name, I, f.clone(), XDP_DROP, f, Some(why)));
    }
    // A test net and a public address are ordinary sources.
    for (name, src) in [
        ("ingress from TEST-NET-1", [192, 0, 2, 1]),
        ("ingress from a public address", [8, 8, 8, 8]),
    ] {
        rows.push(to_vm1(name, Ipv4::new(src, eip1, tcp(40009, 80))));
    }
    // RFC 1812 5.2.2: a header whose checksum is wrong is dropped before any rewrite.
    let mut bad = from_outside(&Ipv4::new(OUTSIDE, eip1, tcp(40007, 80)));
    bad[14 + 10] ^= 0x5a;
    rows.push(row(
        "ingress IPv4 header checksum wrong: dropped untouched",
        I,
        bad.clone(),
        XDP_DROP,
        bad,
        Some(DropBadIpChecksum),
    ));
    let to6 = Ipv4::new(OUTSIDE, VM6.eip(), tcp(40006, 80));
    rows.push(row(
        KERNEL_PORT_ROW,
        I,
        from_outside(&to6),
        XDP_PASS,
        from_outside(&dnat(&to6, VM6.private)),
        Some(IngressKernelPort),
    ));
    let ttl1 = Ipv4 {
        ttl: 1,
        ..Ipv4::new(OUTSIDE, eip1, udp(9, 9, true))
    };
    rows.push(row(
        TTL_ROW,
        I,
        from_outside(&ttl1),
        XDP_TX,
        time_exceeded(&ttl1),
        Some(IngressTtlAnswered),
    ));
    let ttl1_opts = Ipv4 {
        ttl: 0,
        ..Ipv4::new(OUTSIDE, eip1, tcp(40010, 443)).with_options(&[0x94, 0x04, 0, 0])
    };
    rows.push(row(
        "ingress TTL 0 with IP options: a time-exceeded quoting the header with its options",
        I,
        from_outside(&ttl1_opts),
        XDP_TX,
        time_exceeded(&ttl1_opts),
        Some(IngressTtlAnswered),
    ));

    let q = from_outside(&Ipv4::new(OUTSIDE, VM3.eip(), tcp(40003, 80)));
    rows.push(row(
        "ingress to a quarantined VM",
        I,
        q.clone(),
        XDP_DROP,
        q,
        Some(DropQuarantined),
    ));

    for (name, f) in [
        (
            "ingress to an unbound EIP",
            from_outside(&Ipv4::new(OUTSIDE, UNBOUND_EIP, tcp(1, 2))),
        ),
        (
            "ingress to the host itself",
            from_outside(&Ipv4::new(OUTSIDE, [198, 51, 100, 1], tcp(1, 22))),
        ),
        (
            "ingress ARP",
            ethernet(
                [0xff; 6],
                ROUTER_MAC,
                None,
                ETH_P_ARP,
                &[
                    0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0x99, 198, 51, 100, 9, 0, 0, 0, 0, 0, 0, 203, 0,
                    113, 10,
                ],
            ),
        ),
        (
            "ingress IPv6",
            ethernet(
                EXT_MAC,
                ROUTER_MAC,
                None,
                ETH_P_IPV6,
                &[
                    0x60, 0, 0, 0, 0, 0, 59, 64, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xfe,
                    0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
                ],
            ),
        ),
        (
            "ingress truncated VLAN header",
            ethernet(EXT_MAC, ROUTER_MAC, None, 0x8100, &[]),
        ),
        // Cut before the destination address: nothing says it is for an EIP, so the kernel,
        // which drops it as malformed, is the judge.
        (
            "ingress IPv4 header cut before the destination",
            from_outside(&Ipv4::new(OUTSIDE, eip1, tcp(1, 2)))[..14 + 19].to_vec(),
        ),
    ] {
        rows.push(row(name, I, f.clone(), XDP_PASS, f, None));
    }

    // Malformed, to a bound EIP: dropped and counted, never handed to the host's stack.
    let good = from_outside(&Ipv4::new(OUTSIDE, eip1, tcp(40004, 80)));
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut too_long = good.clone();
    let tl = u16::from_be_bytes([too_long[16], too_long[17]]) + 1;
    too_long[16..18].copy_from_slice(&tl.to_be_bytes());
    let mut short_tcp = from_outside(&Ipv4::new(
        OUTSIDE,
        eip1,
        Transport::Raw {
            proto: 6,
            bytes: vec![0; 12],
        },
    ));
    short_tcp.truncate(14 + 20 + 12);
    let mut cut_options = from_outside(&Ipv4::new(OUTSIDE, eip1, tcp(40005, 80)).with_options(&[1; 8]));
    cut_options.truncate(14 + 24);
    let gre = from_outside(&Ipv4::new(
        OUTSIDE,
        eip1,
        Transport::Raw {
            proto: 47,
            bytes: vec![0; 24],
        },
    ));
    for (name, f, c) in [
        ("ingress malformed: IHL < 5", bad_ihl, DropMalformed),
        (
            "ingress malformed: total length beyond the frame",
            too_long,
            DropMalformed,
        ),
        (
            "ingress malformed: truncated TCP header",
            short_tcp,
            DropMalformed,
        ),
        (
            "ingress malformed: IPv4 header cut inside its options",
            cut_options,
            DropMalformed,
        ),
        ("ingress untranslatable: GRE", gre, DropUntranslatable),
    ] {
        rows.push(row(name, I, f.clone(), XDP_DROP, f, Some(c)));
    }
    rows
}

pub fn egress_rows() -> Vec<Row> {
    use Counter::*;
    use Prog::Egress as E;
    let eip1 = VM1.eip();
    let mut rows = Vec::new();
    for (name, t) in [
        ("egress TCP", tcp(34000, 443)),
        ("egress UDP", udp(34001, 53, true)),
        ("egress UDP without checksum", udp(34002, 53, false)),
        ("egress ICMP echo request", echo(false)),
        ("egress ICMP echo reply", echo(true)),
    ] {
        let ip = Ipv4::new(VM1.private, OUTSIDE, t);
        rows.push(row(
            name,
            E,
            from_vm(&VM1, &ip),
            TC_ACT_REDIRECT,
            to_router(&snat(&ip, eip1)),
            Some(EgressFastPath),
        ));
    }

    // VM1 answers an outside packet with an ICMP error: the quoted destination (VM1's private
    // address) becomes the EIP, so the outside sender's socket matches it.
    let got = Ipv4::new(OUTSIDE, VM1.private, udp(40000, 9, true));
    let err = icmp_error(VM1.private, OUTSIDE, 3, 3, 0, &got, 11);
    let got_public = Ipv4 {
        dst: eip1,
        ..got.clone()
    };
    let expected = icmp_error(eip1, OUTSIDE, 3, 3, 0, &got_public, 11);
    rows.push(row(
        "egress ICMP port unreachable quoting UDP",
        E,
        from_vm(&VM1, &err),
        TC_ACT_REDIRECT,
        to_router(&expected),
        Some(EgressFastPath),
    ));

    let opts = Ipv4::new(VM1.private, OUTSIDE, tcp(34003, 22)).with_options(&[1, 1, 1, 0]);
    rows.push(row(
        "egress IP options",
        E,
        from_vm(&VM1, &opts),
        TC_ACT_REDIRECT,
        to_router(&snat(&opts, eip1)),
        Some(EgressFastPath),
    ));

    let far = Ipv4::new(VM1.private, UNRESOLVED, tcp(34004, 80));
    rows.push(row(
        "egress fallback: next hop not resolved, translated and passed to the kernel",
        E,
        from_vm(&VM1, &far),
        TC_ACT_OK,
        from_vm(&VM1, &snat(&far, eip1)),
        Some(EgressFallback),
    ));

    // Hairpin: VM2 to VM1's EIP comes back to the bridge with VM2's EIP as its source, so VM1
    // answers VM2's EIP (and that answer is translated the same way).
    let h = Ipv4::new(VM2.private, eip1, tcp(34005, 80));
    let translated = Ipv4 {
        src: VM2.eip(),
        dst: VM1.private,
        ..h.clone()
    };
    rows.push(row(
        "egress hairpin to a VM with a known port",
        E,
        from_vm(&VM2, &h),
        TC_ACT_REDIRECT,
        to_vm(&VM1, &translated),
        Some(Hairpin),
    ));
    let h2 = Ipv4::new(VM1.private, VM2.eip(), udp(34006, 53, true));
    let translated2 = Ipv4 {
        src: eip1,
        dst: VM2.private,
        ..h2.clone()
    };
    rows.push(row(
        "egress hairpin to a VM without a known port",
        E,
        from_vm(&VM1, &h2),
        TC_ACT_OK,
        from_vm(&VM1, &translated2),
        Some(Hairpin),
    ));

    let v = Ipv4::new(VM1.private, OUTSIDE, udp(34007, 53, true));
    rows.push(row(
        "egress VLAN-tagged (tag kept)",
        E,
        ethernet(BRIDGE_MAC, VM1.mac, Some(0x0064), ETH_P_IP, &v.bytes()),
        TC_ACT_REDIRECT,
        ethernet(
            ROUTER_MAC,
            EXT_MAC,
            Some(0x0064),
            ETH_P_IP,
            &routed(&snat(&v, eip1)).bytes(),
        ),
        Some(EgressFastPath),
    ));

    let spoof = from_vm(&VM1, &Ipv4::new([192, 168, 6, 250], OUTSIDE, tcp(1, 2)));
    rows.push(row(
        "egress spoofed source",
        E,
        spoof.clone(),
        TC_ACT_SHOT,
        spoof,
        Some(DropSpoofed),
    ));
    let stranger = ethernet(
        BRIDGE_MAC,
        [0x02, 0xba, 0xd0, 0, 0, 1],
        None,
        ETH_P_IP,
        &Ipv4::new(VM1.private, OUTSIDE, tcp(1, 2)).bytes(),
    );
    rows.push(row(
        "egress bound address from an unknown MAC",
        E,
        stranger.clone(),
        TC_ACT_SHOT,
        stranger,
        Some(DropSpoofed),
    ));

    let quarantined = from_vm(&VM3, &Ipv4::new(VM3.private, OUTSIDE, tcp(1, 2)));
    rows.push(row(
        "egress from a quarantined VM",
        E,
        quarantined.clone(),
        TC_ACT_SHOT,
        quarantined,
        Some(DropQuarantined),
    ));
    let dhcp = ethernet(
        [0xff; 6],
        VM3.mac,
        None,
        ETH_P_IP,
        &Ipv4::new([0; 4], [255; 4], udp(68, 67, true)).bytes(),
    );
    rows.push(row(
        "egress DHCP from a quarantined VM passes",
        E,
        dhcp.clone(),
        TC_ACT_OK,
        dhcp,
        None,
    ));
    // A renewal from an address the MAC no longer holds (its reservation changed) reaches
    // the server, which NAKs it; the same source to port 67 of an outside host is a spoof.
    let stale = Ipv4::new([192, 168, 6, 250], [192, 168, 6, 22], udp(68, 67, true));
    let renewal = from_vm(&VM1, &stale);
    rows.push(row(
        "egress DHCP renewal from a stale address passes",
        E,
        renewal.clone(),
        TC_ACT_OK,
        renewal,
        None,
    ));
    let out = from_vm(&VM1, &Ipv4::new([192, 168, 6, 250], OUTSIDE, udp(68, 67, true)));
    rows.push(row(
        "egress spoofed source to an outside port 67",
        E,
        out.clone(),
        TC_ACT_SHOT,
        out,
        Some(DropSpoofed),
    ));
    let q_out = from_vm(&VM3, &Ipv4::new(VM3.private, OUTSIDE, udp(68, 67, true)));
    rows.push(row(
        "egress from a quarantined VM to an outside port 67",
        E,
        q_out.clone(),
        TC_ACT_SHOT,
        q_out,
        Some(DropQuarantined),
    ));
    let q_arp = ethernet([0xff; 6], VM3.mac, None, ETH_P_ARP, &[0; 28]);
    rows.push(row(
        "egress ARP from a quarantined VM",
        E,
        q_arp.clone(),
        TC_ACT_SHOT,
        q_arp,
        Some(DropQuarantined),
    ));

    for (name, f) in [
        (
            "egress from an unbound VM",
            from_vm(&VM4, &Ipv4::new(VM4.private, OUTSIDE, tcp(1, 2))),
        ),
        (
            "egress foreign source from a VM exempt from anti-spoofing",
            from_vm(&VM5, &Ipv4::new([10, 0, 0, 5], OUTSIDE, tcp(1, 2))),
        ),
        (
            "egress to the gateway",
            from_vm(&VM1, &Ipv4::new(VM1.private, [192, 168, 6, 22], tcp(1, 22))),
        ),
        (
            "egress to another VM's private address",
            from_vm(&VM1, &Ipv4::new(VM1.private, VM2.private, tcp(1, 22))),
        ),
        // The kernel answers the VM (net unreachable), which needs the VM's own address.
        (
            "egress with no route",
            from_vm(&VM1, &Ipv4::new(VM1.private, UNROUTED, tcp(1, 22))),
        ),
        (
            "egress to the host's external address",
            from_vm(&VM1, &Ipv4::new(VM1.private, [198, 51, 100, 1], tcp(1, 22))),
        ),
        (
            "egress ARP",
            ethernet([0xff; 6], VM1.mac, None, ETH_P_ARP, &[0; 28]),
        ),
        (
            "egress DHCP discover",
            ethernet(
                [0xff; 6],
                VM1.mac,
                None,
                ETH_P_IP,
                &Ipv4::new([0; 4], [255; 4], udp(68, 67, true)).bytes(),
            ),
        ),
    ] {
        rows.push(row(name, E, f.clone(), TC_ACT_OK, f, None));
    }

    let mut short = from_vm(
        &VM1,
        &Ipv4::new(
            VM1.private,
            OUTSIDE,
            Transport::Raw {
                proto: 17,
                bytes: vec![0; 6],
            },
        ),
    );
    short.truncate(14 + 20 + 6);
    rows.push(row(
        "egress malformed from a bound address: truncated UDP header",
        E,
        short.clone(),
        TC_ACT_SHOT,
        short,
        Some(DropMalformed),
    ));
    let esp = from_vm(
        &VM1,
        &Ipv4::new(
            VM1.private,
            OUTSIDE,
            Transport::Raw {
                proto: 50,
                bytes: vec![0; 24],
            },
        ),
    );
    rows.push(row(
        "egress untranslatable from a bound address: ESP",
        E,
        esp.clone(),
        TC_ACT_SHOT,
        esp,
        Some(DropUntranslatable),
    ));
    rows
}

pub fn rows() -> Vec<Row> {
    let mut r = ingress_rows();
    r.extend(egress_rows());
    r
}

/// The ingress rows as the TC ingress must handle them: the same frames and counters, TC's
/// actions; the port that drops XDP redirects gets TC's redirect (an skb), as the fast path.
///
/// BPF_PROG_TEST_RUN refuses an skb of IPv4 whose header is shorter than 20 bytes, so the rows
/// that cut it shorter are left out here; the program's own parse refuses them the same way in
/// both hooks (they share `decide`).
pub fn tc_ingress_rows() -> Vec<Row> {
    ingress_rows()
        .into_iter()
        .filter(|r| r.input.len() >= 14 + 20)
        .map(|mut r| {
            r.prog = Prog::IngressTc;
            if r.action == XDP_TX {
                r.output = r.input.clone();
                r.counter = Some(Counter::DropTtlExpired);
            }
            r.action = match r.action {
                XDP_PASS => TC_ACT_OK,
                XDP_REDIRECT => TC_ACT_REDIRECT,
                _ => TC_ACT_SHOT,
            };
            if r.name == KERNEL_PORT_ROW {
                let to6 = Ipv4::new(OUTSIDE, VM6.eip(), tcp(40006, 80));
                r.action = TC_ACT_REDIRECT;
                r.output = to_vm(&VM6, &dnat(&to6, VM6.private));
                r.counter = Some(Counter::IngressFastPath);
            }
            r
        })
        .collect()
}

/// Builds the fixture namespace: a veth pair `ext`/`port` with the route to [`OUTSIDE`] and a
/// permanent neighbour entry for it on `ext` (MAC [`EXT_MAC`]), forwarding on. Returns the
/// ifindex of `port`, VM1's bridge port.
pub fn namespace(ns: &super::netns::NetNs) -> std::io::Result<u32> {
    let mac = crate::dataplane::fmt_mac;
    ns.ip(&[
        "link",
        "add",
        "ext",
        "address",
        &mac(EXT_MAC),
        "type",
        "veth",
        "peer",
        "name",
        "port",
    ])?;
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "ext"])?;
    ns.ip(&["link", "set", "ext", "up"])?;
    ns.ip(&["link", "set", "port", "up"])?;
    ns.ip(&[
        "neigh",
        "replace",
        "198.51.100.9",
        "lladdr",
        &mac(ROUTER_MAC),
        "dev",
        "ext",
        "nud",
        "permanent",
    ])?;
    ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
    ns.sysctl("net.ipv4.conf.lo.forwarding", "1")?;
    ns.ifindex("port")
}

/// Loads the dataplane and writes the world into it (call inside the fixture namespace).
pub fn dataplane(port: u32) -> Result<Dataplane, Box<dyn std::error::Error>> {
    let mut dp = Dataplane::load(Default::default())
        .map_err(|e: DataplaneError| Box::new(e) as Box<dyn std::error::Error>)?;
    install(&mut dp, port)?;
    Ok(dp)
}
