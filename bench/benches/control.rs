//! The control plane's hot paths on the host, at several numbers of reservations, leases and
//! bindings: answering a DHCP DISCOVER (a reserved MAC, and a new client of the dynamic
//! range), planning one bind, and a reconcile pass that finds nothing to correct (what the
//! daemon runs after a failed kernel update and at every start).

use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use dhcproto::{
    Encodable, Encoder,
    v4::{self, DhcpOption, MessageType},
};
use eip_user::{
    dhcp::{Settings, handler},
    kernel::{KernelView, plan::reconcile},
    lifecycle::{self, Limits, Target},
    model::{Eip, Lease, Mac, Range, Reservation, Source, State},
};

const SIZES: [u32; 3] = [1, 1_000, 10_000];

fn mac(i: u32) -> Mac {
    let b = i.to_be_bytes();
    Mac([2, 0, b[0], b[1], b[2], b[3]])
}

fn private(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 2)) + i)
}

fn eip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i)
}

/// `hosts` reservations, the first `bound` of them with an EIP.
fn world(hosts: u32, bound: u32) -> State {
    let mut s = State::default();
    s.pools.insert("198.18.0.0/15".parse().expect("a CIDR"));
    for i in 0..hosts {
        s.hosts.insert(Reservation {
            mac: mac(i),
            name: Some(format!("vm{i}")),
            ip: private(i),
            source: Source::File,
            quarantined: false,
        });
    }
    for i in 0..bound {
        s.eips.insert(Eip {
            addr: eip(i),
            slot: i + 1,
            bound: Some(mac(i)),
            limit_in: None,
            limit_out: None,
        });
    }
    s
}

fn limits() -> Limits {
    Limits {
        private: "10.64.0.0/14".parse().expect("a CIDR"),
        gateway: Ipv4Addr::new(10, 64, 0, 1),
        max_bindings: 1 << 20,
        max_vms: 1 << 20,
        dynamic: None,
    }
}

fn discover(m: Mac) -> Vec<u8> {
    let u = Ipv4Addr::UNSPECIFIED;
    let mut msg = v4::Message::new_with_id(0x1234_5678, u, u, u, u, &m.0);
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    let mut buf = Vec::new();
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("encode a DISCOVER");
    buf
}

fn dhcp(c: &mut Criterion) {
    let cfg = Settings {
        server: Ipv4Addr::new(10, 64, 0, 1),
        net: "10.64.0.0/14".parse().expect("a CIDR"),
        lease_time: 3600,
        dns: vec![],
        domain: None,
        mtu: None,
        range: None,
    };
    let mut g = c.benchmark_group("dhcp discover (reserved MAC)");
    for n in SIZES {
        let state = world(n, 0);
        let msg = discover(mac(n / 2));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut offers = handler::Offers::default();
            b.iter(|| handler::handle(&cfg, &state, &mut offers, 1_000_000, black_box(&msg)))
        });
    }
    g.finish();
    // 131,072 dynamic addresses; n of them leased, spread over the range as clients' MACs
    // spread their starting points.
    let range = Range {
        start: Ipv4Addr::new(10, 65, 0, 0),
        end: Ipv4Addr::new(10, 66, 255, 255),
    };
    let cfg = Settings {
        range: Some(range),
        ..cfg
    };
    let mut g = c.benchmark_group("dhcp discover (new client, n leases)");
    for n in SIZES {
        let mut state = world(0, 0);
        for i in 0..n {
            state.leases.insert(Lease {
                mac: mac(i),
                ip: range.nth(i.wrapping_mul(7_919)),
                granted: 0,
                expires: 2_000_000,
                hostname: None,
            });
        }
        let msg = discover(mac(n + 1));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut offers = handler::Offers::default();
            b.iter(|| handler::handle(&cfg, &state, &mut offers, 1_000_000, black_box(&msg)))
        });
    }
    g.finish();
}

fn planning(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan one bind");
    for n in SIZES {
        // n bound, one more reservation to bind.
        let state = world(n + 1, n);
        let target = Target::Mac(mac(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| lifecycle::bind(&state, &limits(), eip(n), black_box(&target), false))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("reconcile, nothing to correct");
    for n in SIZES {
        let state = world(n, n);
        let view = KernelView::desired(&state);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| reconcile(black_box(&state), &view))
        });
    }
    g.finish();
}

criterion_group!(benches, dhcp, planning);
criterion_main!(benches);
