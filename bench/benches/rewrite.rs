//! ns per rewrite: eip's incremental update (RFC 1624) beside a full checksum recomputation,
//! on the same datagrams.

use std::hint::black_box;

use bench::full_recompute_dst;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eip_common::{
    builder::{Ipv4, Transport},
    rewrite::{Field, rewrite},
};

const OUTSIDE: [u8; 4] = [198, 51, 100, 9];
const EIP: [u8; 4] = [203, 0, 113, 7];
const PRIVATE: [u8; 4] = [192, 168, 6, 243];

fn datagrams() -> Vec<(&'static str, Vec<u8>)> {
    let tcp = |len| Transport::Tcp {
        sport: 40000,
        dport: 80,
        seq: 1,
        flags: 0x18,
        payload: vec![0xab; len],
    };
    let quote = Ipv4::new(
        EIP,
        OUTSIDE,
        Transport::Udp {
            sport: 5000,
            dport: 53,
            payload: vec![1; 32],
            checksum: true,
        },
    )
    .bytes();
    vec![
        ("tcp-64B", Ipv4::new(OUTSIDE, EIP, tcp(24)).bytes()),
        ("tcp-1500B", Ipv4::new(OUTSIDE, EIP, tcp(1460)).bytes()),
        (
            "udp-64B",
            Ipv4::new(
                OUTSIDE,
                EIP,
                Transport::Udp {
                    sport: 53,
                    dport: 5000,
                    payload: vec![7; 36],
                    checksum: true,
                },
            )
            .bytes(),
        ),
        (
            "icmp-echo",
            Ipv4::new(
                OUTSIDE,
                EIP,
                Transport::IcmpEcho {
                    reply: false,
                    id: 1,
                    seq: 1,
                    payload: vec![0; 56],
                },
            )
            .bytes(),
        ),
        (
            "icmp-port-unreachable",
            Ipv4::new(
                OUTSIDE,
                EIP,
                Transport::IcmpError {
                    icmp_type: 3,
                    code: 3,
                    rest: 0,
                    quote,
                },
            )
            .bytes(),
        ),
    ]
}

fn bench_rewrite(c: &mut Criterion) {
    let new = u32::from_be_bytes(PRIVATE);
    let mut group = c.benchmark_group("dnat");
    for (name, datagram) in datagrams() {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("incremental", name), &datagram, |b, d| {
            let mut buf = d.clone();
            b.iter(|| {
                buf.copy_from_slice(d);
                black_box(rewrite(black_box(&mut buf[..]), 0, Field::Destination, new)).ok()
            })
        });
        if name == "icmp-port-unreachable" {
            // The baseline does not translate the quoted datagram (it would need the same
            // parsing the incremental rewrite does), so it has no honest figure here.
            continue;
        }
        group.bench_with_input(BenchmarkId::new("full-recompute", name), &datagram, |b, d| {
            let mut buf = d.clone();
            b.iter(|| {
                buf.copy_from_slice(d);
                full_recompute_dst(black_box(&mut buf[..]), PRIVATE);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_rewrite);
criterion_main!(benches);
