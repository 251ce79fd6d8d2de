//! The benchmarks' shared code: the baselines the criterion benches compare eip's
//! incremental rewrite against (here), and the dataplane benchmarks `eip-bench` runs
//! (`kernel`), with their figures (`figures`).

pub mod bpf;
pub mod control;
pub mod daemon;
pub mod dhcp;
pub mod figures;
pub mod kernel;
pub mod limits;
pub mod memory;
pub mod plot;
pub mod report;
pub mod throughput;

use eip_common::{
    checksum::{compute, pseudo_header},
    parse::{IPPROTO_TCP, IPPROTO_UDP, TCP_CSUM, UDP_CSUM},
};

/// Translates the destination and recomputes the IPv4 and transport checksums over the whole
/// datagram: what a NAT without RFC 1624 would do. It validates nothing, and it does not
/// translate an ICMP error's quoted datagram (so it is no baseline for those).
pub fn full_recompute_dst(ip: &mut [u8], new: [u8; 4]) {
    let hlen = ((ip[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    ip[16..20].copy_from_slice(&new);
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = compute(0, &ip[..hlen]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let proto = ip[9];
    let off = match proto {
        IPPROTO_TCP => TCP_CSUM,
        IPPROTO_UDP => UDP_CSUM,
        _ => return,
    };
    let (src, dst) = ([ip[12], ip[13], ip[14], ip[15]], new);
    let l4 = &mut ip[hlen..total];
    l4[off..off + 2].copy_from_slice(&[0, 0]);
    let c = compute(pseudo_header(src, dst, proto, l4.len() as u16), l4);
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use eip_common::{
        builder::{Ipv4, Transport},
        rewrite::{Field, rewrite},
    };

    /// The baseline computes the same bytes as the incremental rewrite, so the benchmark
    /// compares like with like.
    #[test]
    fn baseline_agrees_with_incremental() {
        for t in [
            Transport::Tcp {
                sport: 1,
                dport: 2,
                seq: 3,
                flags: 0x10,
                payload: vec![9; 33],
            },
            Transport::Udp {
                sport: 1,
                dport: 2,
                payload: vec![9; 33],
                checksum: true,
            },
            Transport::IcmpEcho {
                reply: false,
                id: 1,
                seq: 2,
                payload: vec![7; 20],
            },
        ] {
            let d = Ipv4::new([198, 51, 100, 9], [203, 0, 113, 7], t).bytes();
            let (mut a, mut b) = (d.clone(), d);
            rewrite(
                &mut a[..],
                0,
                Field::Destination,
                u32::from_be_bytes([192, 168, 6, 243]),
            )
            .unwrap();
            super::full_recompute_dst(&mut b, [192, 168, 6, 243]);
            assert_eq!(a, b);
        }
    }
}
