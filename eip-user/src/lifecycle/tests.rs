use super::*;
use crate::{
    engine::Engine,
    kernel::{Kernel, KernelView, MemKernel},
    model::rate::{LimitChange, RateLimit},
    store::Store,
};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac(n: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0, 0, n])
}

fn limits() -> Limits {
    Limits {
        private: "192.168.6.0/24".parse().unwrap(),
        gateway: ip("192.168.6.22"),
        max_bindings: 8,
        max_vms: 1024,
        dynamic: None,
    }
}

/// A pool 203.0.113.0/29 and reservations vm1..vm3 (192.168.6.11..13).
fn world() -> State {
    let mut s = State::default();
    let l = limits();
    s.apply(
        &pool_add(&s, &l, "203.0.113.0/29".parse().unwrap(), &[])
            .unwrap()
            .writes,
    );
    for n in 1..=3u8 {
        let c = host_add(
            &s,
            &l,
            mac(n),
            Ipv4Addr::new(192, 168, 6, 10 + n),
            Some(format!("vm{n}")),
        )
        .unwrap();
        s.apply(&c.writes);
    }
    s
}

/// Applies a change and returns the effects it needs.
fn step(s: &mut State, f: impl FnOnce(&State) -> Result<Change, Refusal>) -> Vec<Effect> {
    let c = f(s).unwrap();
    let before = s.clone();
    s.apply(&c.writes);
    effects(&before, s, &c.writes)
}

fn name(n: &str) -> Target {
    Target::Name(n.into())
}

#[test]
fn targets_parse_as_ip_then_mac_then_name() {
    assert_eq!(
        "192.168.6.11".parse::<Target>().unwrap(),
        Target::Ip(ip("192.168.6.11"))
    );
    assert_eq!(
        "52:54:00:00:00:01".parse::<Target>().unwrap(),
        Target::Mac(mac(1))
    );
    assert_eq!("web-1.lab".parse::<Target>().unwrap(), name("web-1.lab"));
    for bad in ["", "-x", "a b", "x_y", "a..b", "ü"] {
        assert_eq!(
            bad.parse::<Target>(),
            Err(Refusal::BadTarget(bad.into())),
            "{bad:?}"
        );
    }
}

#[test]
fn alloc_takes_the_lowest_free_usable_address() {
    let mut s = world();
    let l = limits();
    let (a, c) = alloc(&s, &l, None).unwrap();
    assert_eq!(a, ip("203.0.113.1"), "the network address is not handed out");
    assert_eq!(
        step(&mut s, |_| Ok(c)),
        [
            Effect::ResetStats { slot: 1 },
            // The slot may hold a released EIP's limit.
            Effect::SetLimit {
                slot: 1,
                inbound: None,
                outbound: None
            }
        ]
    );
    assert_eq!(alloc(&s, &l, None).unwrap().0, ip("203.0.113.2"));
    assert_eq!(
        alloc(&s, &l, Some(ip("203.0.113.1"))),
        Err(Refusal::AlreadyAllocated(ip("203.0.113.1")))
    );
    assert_eq!(
        alloc(&s, &l, Some(ip("203.0.113.7"))),
        Err(Refusal::NotInPool(ip("203.0.113.7")))
    );
    assert_eq!(
        alloc(&s, &l, Some(ip("198.51.100.1"))),
        Err(Refusal::NotInPool(ip("198.51.100.1")))
    );
    for _ in 2..=6 {
        let (_, c) = alloc(&s, &l, None).unwrap();
        s.apply(&c.writes);
    }
    assert_eq!(alloc(&s, &l, None), Err(Refusal::PoolsExhausted));
}

#[test]
fn slots_run_out_before_addresses_do() {
    let mut s = world();
    let l = Limits {
        max_bindings: 2,
        max_vms: 1024,
        ..limits()
    };
    for _ in 0..2 {
        let (_, c) = alloc(&s, &l, None).unwrap();
        s.apply(&c.writes);
    }
    assert_eq!(alloc(&s, &l, None), Err(Refusal::SlotsExhausted(2)));
}

#[test]
fn bind_allocates_and_announces() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    for target in [name("vm1"), Target::Mac(mac(1)), Target::Ip(ip("192.168.6.11"))] {
        let mut s = s.clone();
        let fx = step(&mut s, |s| bind(s, &l, e, &target, false));
        assert_eq!(
            fx,
            [
                Effect::ResetStats { slot: 1 },
                Effect::SetLimit {
                    slot: 1,
                    inbound: None,
                    outbound: None
                },
                Effect::Bind {
                    eip: e,
                    slot: 1,
                    private: ip("192.168.6.11"),
                    previous: None
                },
                Effect::AddAlias(e),
                Effect::Announce(e),
            ],
            "{target}"
        );
    }
    step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    // Binding again to the same VM is a no-op, not an error.
    assert!(bind(&s, &l, e, &name("vm1"), false).unwrap().writes.is_empty());
    assert_eq!(
        bind(&s, &l, e, &name("nope"), false),
        Err(Refusal::UnknownTarget("nope".into()))
    );
    assert_eq!(
        bind(&s, &l, ip("203.0.113.4"), &name("vm1"), false),
        Err(Refusal::HostHasEip {
            host: "vm1 (192.168.6.11)".into(),
            eip: e
        })
    );
}

#[test]
fn a_move_flips_the_forward_entry_and_announces_without_a_new_alias() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    assert_eq!(
        bind(&s, &l, e, &name("vm2"), true),
        Err(Refusal::WouldMove {
            eip: e,
            owner: "vm1 (192.168.6.11)".into()
        })
    );
    let fx = step(&mut s, |s| bind(s, &l, e, &name("vm2"), false));
    assert_eq!(
        fx,
        [
            Effect::Bind {
                eip: e,
                slot: 1,
                private: ip("192.168.6.12"),
                previous: Some(ip("192.168.6.11"))
            },
            Effect::Announce(e),
        ]
    );
    assert_eq!(s.eips[&e].slot, 1, "counters stay with the address");
}

#[test]
fn unbind_and_release() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    assert_eq!(unbind(&s, e), Err(Refusal::NotAllocated(e)));
    step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    let fx = step(&mut s, |s| unbind(s, e));
    assert_eq!(
        fx,
        [
            Effect::Unbind {
                eip: e,
                private: ip("192.168.6.11")
            },
            Effect::DelAlias(e)
        ]
    );
    assert!(s.eips.contains_key(&e), "unbind keeps the allocation");
    assert_eq!(unbind(&s, e), Err(Refusal::NotBound(e)));
    step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    let fx = step(&mut s, |s| release(s, e));
    assert_eq!(fx.len(), 2, "{fx:?}");
    assert!(!s.eips.contains_key(&e));
    assert_eq!(release(&s, e), Err(Refusal::NotAllocated(e)));
}

#[test]
fn deleting_a_reservation_recycles_its_eip() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    step(&mut s, |s| bind(s, &l, e, &name("vm2"), false));
    let c = host_del(&s, &limits(), "vm2").unwrap();
    assert!(
        c.message.contains("203.0.113.3 returned to the pool"),
        "{}",
        c.message
    );
    let fx = step(&mut s, |_| Ok(c));
    assert_eq!(
        fx,
        [
            Effect::Unbind {
                eip: e,
                private: ip("192.168.6.12")
            },
            Effect::DelAlias(e),
            Effect::DelGuest {
                private: ip("192.168.6.12"),
                mac: mac(2)
            },
        ]
    );
    assert!(!s.eips.contains_key(&e));
    assert_eq!(
        host_del(&s, &limits(), "vm2"),
        Err(Refusal::UnknownTarget("vm2".into()))
    );
}

#[test]
fn reservations_are_checked() {
    let s = world();
    let l = limits();
    let add = |m: u8, a: &str, n: Option<&str>| host_add(&s, &l, mac(m), ip(a), n.map(String::from));
    assert_eq!(add(1, "192.168.6.50", None), Err(Refusal::MacTaken(mac(1))));
    assert_eq!(
        add(9, "192.168.7.1", None),
        Err(Refusal::OutsideSubnet {
            ip: ip("192.168.7.1"),
            net: l.private
        })
    );
    for reserved in ["192.168.6.22", "192.168.6.0", "192.168.6.255"] {
        assert_eq!(add(9, reserved, None), Err(Refusal::ReservedIp(ip(reserved))));
    }
    assert!(matches!(
        add(9, "192.168.6.11", None),
        Err(Refusal::IpTaken { .. })
    ));
    assert_eq!(
        add(9, "192.168.6.50", Some("vm1")),
        Err(Refusal::NameTaken("vm1".into()))
    );
    assert_eq!(
        add(9, "192.168.6.50", Some("a b")),
        Err(Refusal::BadName("a b".into()))
    );
    for group in [
        [0xff; 6],
        [0x01, 0x00, 0x5e, 0, 0, 1],
        [0x33, 0x33, 0, 0, 0, 1],
        [0; 6],
    ] {
        assert_eq!(
            host_add(&s, &l, Mac(group), ip("192.168.6.50"), None),
            Err(Refusal::NotUnicastMac(Mac(group)))
        );
    }
    assert!(add(9, "192.168.6.50", Some("vm9")).is_ok());
}

#[test]
fn pools_do_not_overlap_and_are_not_deleted_while_bound() {
    let mut s = world();
    let l = limits();
    let p = |c: &str| c.parse::<Ipv4Net>().unwrap();
    assert!(matches!(
        pool_add(&s, &l, p("203.0.113.0/24"), &[]),
        Err(Refusal::PoolOverlaps { .. })
    ));
    assert!(matches!(
        pool_add(&s, &l, p("203.0.113.4/30"), &[]),
        Err(Refusal::PoolOverlaps { .. })
    ));
    assert_eq!(
        pool_add(&s, &l, p("192.168.0.0/16"), &[]),
        Err(Refusal::PoolIsPrivate(p("192.168.0.0/16")))
    );
    for (pool, range) in [
        ("127.0.0.0/24", "127.0.0.0/8"),
        ("0.0.0.0/16", "0.0.0.0/8"),
        ("169.254.0.0/24", "169.254.0.0/16"),
        ("239.1.0.0/16", "224.0.0.0/4"),
        ("255.255.255.255/32", "240.0.0.0/4"),
    ] {
        assert!(
            matches!(pool_add(&s, &l, p(pool), &[]), Err(Refusal::PoolNotPublic { range: r, .. }) if r == p(range)),
            "{pool}"
        );
    }
    // The host's addresses: its uplink's subnet, and a single address of its.
    let host = [p("198.51.100.1/24"), p("192.0.2.7/32")];
    assert_eq!(
        pool_add(&s, &l, p("198.51.100.128/25"), &host),
        Err(Refusal::PoolOnHost {
            pool: p("198.51.100.128/25"),
            net: p("198.51.100.1/24")
        })
    );
    assert!(pool_add(&s, &l, p("192.0.2.0/24"), &host).is_err());
    assert!(pool_add(&s, &l, p("10.9.0.0/24"), &host).is_ok());
    assert_eq!(
        pool_del(&s, p("198.51.100.0/24")),
        Err(Refusal::NoSuchPool(p("198.51.100.0/24")))
    );
    step(&mut s, |s| bind(s, &l, ip("203.0.113.3"), &name("vm1"), false));
    step(&mut s, |s| alloc(s, &l, Some(ip("203.0.113.4"))).map(|(_, c)| c));
    assert_eq!(
        pool_del(&s, p("203.0.113.0/29")),
        Err(Refusal::PoolInUse {
            pool: p("203.0.113.0/29"),
            eip: ip("203.0.113.3")
        })
    );
    step(&mut s, |s| unbind(s, ip("203.0.113.3")));
    step(&mut s, |s| pool_del(s, p("203.0.113.0/29")));
    assert!(s.eips.is_empty() && s.pools.is_empty());
}

#[test]
fn quarantine_sets_the_guest_flags() {
    let mut s = world();
    let fx = step(&mut s, |s| quarantine(s, &name("vm3"), true));
    assert_eq!(
        fx,
        [Effect::SetGuest {
            private: ip("192.168.6.13"),
            mac: mac(3),
            flags: eip_common::maps::VM_QUARANTINED
        }]
    );
    assert!(matches!(
        quarantine(&s, &name("vm3"), true),
        Err(Refusal::AlreadyQuarantined(_))
    ));
    let fx = step(&mut s, |s| quarantine(s, &name("vm3"), false));
    assert!(matches!(fx[..], [Effect::SetGuest { flags: 0, .. }]));
}

fn line(line: usize, m: u8, a: &str, n: &str) -> FileHost {
    FileHost {
        line,
        mac: mac(m),
        name: Some(n.into()),
        ip: ip(a),
    }
}

#[test]
fn the_hosts_file_owns_its_lines() {
    let mut s = State::default();
    let l = limits();
    s.apply(
        &pool_add(&s, &l, "203.0.113.0/29".parse().unwrap(), &[])
            .unwrap()
            .writes,
    );
    s.apply(
        &host_add(&s, &l, mac(9), ip("192.168.6.90"), Some("cli".into()))
            .unwrap()
            .writes,
    );
    let lines = [
        line(1, 1, "192.168.6.11", "a"),
        line(2, 2, "192.168.6.90", "b"), // the CLI reservation's address
        line(3, 9, "192.168.6.91", "c"), // the CLI reservation's MAC
        line(4, 3, "192.168.6.13", "a"), // a name line 1 took
        line(5, 4, "10.0.0.1", "d"),     // outside the subnet
        line(6, 5, "192.168.6.15", "e"),
    ];
    let (c, rejected) = sync_file_hosts(&s, &l, &lines);
    assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3, 4, 5]);
    step(&mut s, |_| Ok(c));
    assert_eq!(s.hosts.len(), 3);
    assert_eq!(s.hosts[&mac(9)].source, Source::Cli);
    assert_eq!(host_del(&s, &limits(), "a"), Err(Refusal::FromFile(mac(1))));

    let e = ip("203.0.113.1");
    step(&mut s, |s| bind(s, &l, e, &name("a"), false));
    // The reserved address of `a` changes: its EIP follows, the old reverse entry goes last.
    let (c, rejected) = sync_file_hosts(
        &s,
        &l,
        &[line(1, 1, "192.168.6.21", "a"), line(2, 5, "192.168.6.15", "e")],
    );
    assert!(rejected.is_empty());
    let fx = step(&mut s, |_| Ok(c));
    assert_eq!(
        fx,
        [
            Effect::DelGuest {
                private: ip("192.168.6.11"),
                mac: mac(1)
            },
            Effect::SetGuest {
                private: ip("192.168.6.21"),
                mac: mac(1),
                flags: 0
            },
            Effect::Bind {
                eip: e,
                slot: 1,
                private: ip("192.168.6.21"),
                previous: Some(ip("192.168.6.11"))
            },
            Effect::Announce(e),
        ]
    );
    // Line `a` removed: the reservation goes and its EIP is recycled.
    let (c, _) = sync_file_hosts(&s, &l, &[line(2, 5, "192.168.6.15", "e")]);
    step(&mut s, |_| Ok(c));
    assert!(!s.hosts.contains_key(&mac(1)));
    assert!(s.eips.is_empty());
    // The same file again changes nothing.
    let (c, _) = sync_file_hosts(&s, &l, &[line(2, 5, "192.168.6.15", "e")]);
    assert!(c.writes.is_empty());
}

#[test]
fn the_vm_table_bounds_reservations() {
    // Seven entries, four kept for the range's leases: room for three reservations.
    let l = Limits {
        max_vms: 7,
        dynamic: Some(crate::model::Range {
            start: ip("192.168.6.200"),
            end: ip("192.168.6.203"),
        }),
        ..limits()
    };
    assert_eq!(l.reservation_room(), 3);
    let mut s = world();
    let full = Refusal::VmTableFull { capacity: 7, kept: 4 };
    assert_eq!(
        host_add(&s, &l, mac(4), ip("192.168.6.14"), None),
        Err(full.clone())
    );
    assert_eq!(
        full.to_string(),
        "the VM table is full: 7 entries (--max-vms), 4 of them kept for the dynamic range's leases"
    );
    // One CLI reservation goes: a file takes its room, one line of a new MAC at a time, and a
    // reservation the file already owned keeps its place wherever its line moves.
    step(&mut s, |s| host_del(s, &l, "vm3"));
    let (c, rejected) = sync_file_hosts(&s, &l, &[line(1, 5, "192.168.6.15", "e")]);
    assert!(rejected.is_empty());
    step(&mut s, |_| Ok(c));
    assert_eq!(s.hosts.len(), 3);
    let lines = [
        line(1, 6, "192.168.6.16", "f"),
        line(2, 5, "192.168.6.15", "e"),
        line(3, 7, "192.168.6.17", "g"),
    ];
    let (c, rejected) = sync_file_hosts(&s, &l, &lines);
    assert_eq!(rejected, [(1, full.clone()), (3, full.clone())]);
    assert!(c.writes.is_empty(), "{:?}", c.writes);
    // Line `e` goes and `d` takes its room in the same change: the kernel removes first,
    // though `d`'s MAC comes first.
    let (c, rejected) = sync_file_hosts(&s, &l, &[line(1, 4, "192.168.6.14", "d")]);
    assert!(rejected.is_empty());
    let fx = step(&mut s, |_| Ok(c));
    assert!(
        matches!(fx[..], [Effect::DelGuest { .. }, Effect::SetGuest { .. }]),
        "{fx:?}"
    );
    assert_eq!(s.hosts.len(), 3);
    assert!(s.hosts.contains_key(&mac(4)) && !s.hosts.contains_key(&mac(5)));
}

/// Random command sequences through the engine (store + in-memory kernel): after every
/// command the kernel holds exactly what the state asks for, and the store reloads to the
/// same state.
mod sequences {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(Option<u8>),
        Bind(u8, u8, bool),
        Unbind(u8),
        Release(u8),
        HostAdd(u8, u8),
        HostDel(u8),
        Quarantine(u8, bool),
        File(Vec<(u8, u8)>),
        /// A DHCP client (MAC) asks for an address (INIT-REBOOT) through the real handler.
        Dhcp(u8, u8),
        /// The DHCP client lets its lease go.
        DhcpRelease(u8),
        /// The clock moves on this many seconds and leases expire.
        Expire(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let e = 0u8..8;
        let m = 1u8..8;
        prop_oneof![
            proptest::option::of(e.clone()).prop_map(Op::Alloc),
            (e.clone(), m.clone(), any::<bool>()).prop_map(|(a, b, c)| Op::Bind(a, b, c)),
            e.clone().prop_map(Op::Unbind),
            e.prop_map(Op::Release),
            (m.clone(), 10u8..16).prop_map(|(a, b)| Op::HostAdd(a, b)),
            m.clone().prop_map(Op::HostDel),
            (m.clone(), any::<bool>()).prop_map(|(a, b)| Op::Quarantine(a, b)),
            proptest::collection::vec((m.clone(), 10u8..16), 0..6).prop_map(Op::File),
            (m.clone(), 10u8..16).prop_map(|(a, b)| Op::Dhcp(a, b)),
            m.prop_map(Op::DhcpRelease),
            (0u16..3000).prop_map(Op::Expire),
        ]
    }

    /// A client message of type `t` from `mac(m)` with `requested` (or ciaddr for a release).
    fn dhcp(m: u8, t: dhcproto::v4::MessageType, addr: Ipv4Addr) -> Vec<u8> {
        use dhcproto::v4::{DhcpOption, Message, MessageType};
        let release = t == MessageType::Release;
        let ciaddr = if release { addr } else { Ipv4Addr::UNSPECIFIED };
        let u = Ipv4Addr::UNSPECIFIED;
        let mut msg = Message::new_with_id(7, ciaddr, u, u, u, &mac(m).0);
        msg.opts_mut().insert(DhcpOption::MessageType(t));
        if !release {
            msg.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        }
        let mut buf = Vec::new();
        dhcproto::Encodable::encode(&msg, &mut dhcproto::Encoder::new(&mut buf)).unwrap();
        buf
    }

    fn eip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, n)
    }

    fn priv_ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 6, n)
    }

    /// The lifecycle of one property case: an engine on a fresh store with a pool, the DHCP
    /// settings and the clock that the ops run against.
    struct World {
        en: Engine<MemKernel>,
        l: Limits,
        cfg: crate::dhcp::Settings,
        offers: crate::dhcp::handler::Offers,
        now: u64,
        _dir: tempfile::TempDir,
    }

    impl World {
        async fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            // Dynamic leases from .13-.15, inside the addresses reservations take too.
            let range = crate::model::Range {
                start: priv_ip(13),
                end: priv_ip(15),
            };
            // Room for two reservations beside the range's three leases: the seven
            // MACs do not all fit, and the kernel's VM table is as small as that.
            let l = Limits {
                dynamic: Some(range),
                max_vms: 5,
                ..limits()
            };
            let cfg = crate::dhcp::Settings {
                server: l.gateway,
                net: l.private,
                lease_time: 1000,
                dns: vec![],
                domain: None,
                mtu: None,
                range: Some(range),
            };
            let kernel = MemKernel {
                vm_capacity: Some(5),
                ..MemKernel::default()
            };
            let mut en = Engine::new(Store::open(dir.path()).unwrap(), kernel, l).unwrap();
            let c = pool_add(en.state(), &l, "203.0.113.0/29".parse().unwrap(), &[]);
            en.run("pool", c).await.unwrap();
            World {
                en,
                l,
                cfg,
                offers: Default::default(),
                now: 1_800_000_000,
                _dir: dir,
            }
        }

        /// The change `op` asks of the current state.
        fn change(&mut self, op: &Op) -> Result<Change, Refusal> {
            let (s, l) = (self.en.state().clone(), self.l);
            match op {
                Op::Alloc(a) => alloc(&s, &l, a.map(eip)).map(|(_, c)| c),
                Op::Bind(a, m, no_move) => bind(&s, &l, eip(*a), &Target::Mac(mac(*m)), *no_move),
                Op::Unbind(a) => unbind(&s, eip(*a)),
                Op::Release(a) => release(&s, eip(*a)),
                Op::HostAdd(m, a) => host_add(&s, &l, mac(*m), priv_ip(*a), None),
                Op::HostDel(m) => host_del(&s, &l, &mac(*m).to_string()),
                Op::Quarantine(m, on) => quarantine(&s, &Target::Mac(mac(*m)), *on),
                Op::File(lines) => {
                    let lines: Vec<FileHost> = lines
                        .iter()
                        .enumerate()
                        .map(|(i, (m, a))| FileHost {
                            line: i + 1,
                            mac: mac(*m),
                            name: None,
                            ip: priv_ip(*a),
                        })
                        .collect();
                    Ok(sync_file_hosts(&s, &l, &lines).0)
                }
                Op::Dhcp(m, a) | Op::DhcpRelease(m @ a) => {
                    let (t, addr) = match op {
                        Op::Dhcp(..) => (dhcproto::v4::MessageType::Request, priv_ip(*a)),
                        _ => (
                            dhcproto::v4::MessageType::Release,
                            s.leases.get(&mac(*m)).map_or(priv_ip(10), |l| l.ip),
                        ),
                    };
                    let o = crate::dhcp::handler::handle(
                        &self.cfg,
                        &s,
                        &mut self.offers,
                        self.now,
                        &dhcp(*m, t, addr),
                    );
                    Ok(Change {
                        writes: o.writes,
                        message: o.command,
                    })
                }
                Op::Expire(secs) => {
                    self.now += u64::from(*secs);
                    Ok(expire(&s, self.now))
                }
            }
        }

        /// Runs `op`; a refusal is fine (and changes nothing), any other failure is not.
        async fn run(&mut self, op: &Op) -> bool {
            let c = self.change(op);
            let refused = c.is_err();
            self.en
                .run("op", c)
                .await
                .map(|_| ())
                .or_else(|e| match e {
                    crate::engine::EngineError::Refused(_) => Ok(()),
                    other => Err(other),
                })
                .unwrap();
            refused
        }
    }

    /// Kernel entries in the daemon's maps that no store asked for, or that a store asked
    /// for once: what a kill -9, a bpftool write or another daemon leaves behind.
    #[derive(Debug, Clone)]
    struct Debris {
        dnat: Vec<(u8, u8, u32)>,
        snat: Vec<(u8, u8, u32)>,
        vms: Vec<(u8, u8, u16)>,
        macs: Vec<(u8, u8, u16)>,
        aliases: Vec<u8>,
        /// Pools in the trie: 203.0.113.0/29 (the state's) or 198.18.N.0/24 (foreign).
        pools: Vec<u8>,
        /// Start from the kernel the state asks for (then overwrite), or from an empty one.
        from_desired: bool,
    }

    fn debris() -> impl Strategy<Value = Debris> {
        let e = 0u8..8;
        let p = 10u8..16;
        let m = 1u8..8;
        fn few<S: Strategy>(s: S) -> proptest::collection::VecStrategy<S> {
            proptest::collection::vec(s, 0..4)
        }
        (
            few((e.clone(), p.clone(), 0u32..8)),
            few((p.clone(), e.clone(), 0u32..8)),
            few((p.clone(), m.clone(), 0u16..2)),
            few((m, p, 0u16..2)),
            few(e),
            few(0u8..3),
            any::<bool>(),
        )
            .prop_map(|(dnat, snat, vms, macs, aliases, pools, from_desired)| Debris {
                dnat,
                snat,
                vms,
                macs,
                aliases,
                pools,
                from_desired,
            })
    }

    /// Writes `d` into the in-memory kernel.
    fn scatter(k: &mut MemKernel, d: &Debris) {
        use eip_common::maps::Binding;
        let bind = |a: Ipv4Addr, slot| Binding {
            addr: a.to_bits(),
            slot,
        };
        if !d.from_desired {
            k.maps.dnat.clear();
            k.maps.snat.clear();
            k.vms.clear();
            k.macs.clear();
            k.aliases.clear();
            k.pools.clear();
        }
        for &(e, p, slot) in &d.dnat {
            k.maps.dnat.insert(eip(e), bind(priv_ip(p), slot));
        }
        for &(p, e, slot) in &d.snat {
            k.maps.snat.insert(priv_ip(p), bind(eip(e), slot));
        }
        for &(p, m, f) in &d.vms {
            k.vms.insert(priv_ip(p), (mac(m), f));
        }
        for &(m, p, f) in &d.macs {
            k.macs.insert(mac(m), (priv_ip(p), f));
        }
        k.aliases.extend(d.aliases.iter().map(|e| eip(*e)));
        k.pools.extend(d.pools.iter().map(|&n| match n {
            0 => "203.0.113.0/29".parse::<ipnet::Ipv4Net>().unwrap(),
            n => format!("198.18.{n}.0/24").parse().unwrap(),
        }));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn kernel_and_store_follow_the_state(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut w = World::new().await;
                for op in ops {
                    let s = w.en.state().clone();
                    let refused = w.run(&op).await;
                    let en = &mut w.en;
                    if refused {
                        prop_assert_eq!(en.state(), &s, "a refusal changed the state: {:?}", op);
                    }
                    let view = en.kernel.view().await.unwrap();
                    prop_assert_eq!(&view, &KernelView::desired(en.state()), "after {:?}", op);
                    prop_assert_eq!(&en.store().load().unwrap(), en.state());
                    // One EIP per VM, one VM per EIP.
                    let bound: Vec<Mac> = en.state().eips.values().filter_map(|e| e.bound).collect();
                    let mut dedup = bound.clone();
                    dedup.sort();
                    dedup.dedup();
                    prop_assert_eq!(bound.len(), dedup.len());
                    // Every lease is backed: its MAC's reservation, or a dynamic address in the
                    // range that nobody has reserved.
                    prop_assert!(stale_leases(en.state(), &w.l).is_empty(), "after {:?}: {:?}", op, en.state().leases);
                    let mut ips: Vec<Ipv4Addr> = en.state().guests().values().map(|g| g.0).collect();
                    let n = ips.len();
                    ips.sort();
                    ips.dedup();
                    prop_assert_eq!(n, ips.len(), "two VM entries claim one address");
                }
                Ok(())
            })?;
        }

        /// From any kernel (stale, missing and foreign entries in every map, aliases missing
        /// or extra) one reconcile pass makes it what the store asks for, without failing on
        /// an entry that is already gone (the in-memory maps refuse a delete of a missing key,
        /// as the kernel does); a second pass finds nothing to do.
        #[test]
        fn reconcile_converges_in_one_pass_from_any_kernel(
            ops in proptest::collection::vec(op(), 0..25),
            d in debris(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut w = World::new().await;
                for op in &ops {
                    w.run(op).await;
                }
                let desired = KernelView::desired(w.en.state());
                w.en.kernel.vm_capacity = None;
                scatter(&mut w.en.kernel, &d);
                w.en.reconcile().await.map_err(|e| TestCaseError::fail(format!("reconcile failed: {e}")))?;
                prop_assert_eq!(&w.en.kernel.view().await.unwrap(), &desired);
                prop_assert_eq!(w.en.reconcile().await.unwrap(), 0, "the second pass changed something");
                Ok(())
            })?;
        }
    }
}

fn rate_limit(bps: u64) -> RateLimit {
    RateLimit {
        rate_bps: bps,
        burst_bytes: None,
    }
}

#[test]
fn a_limit_belongs_to_the_eip() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    let slot = s.eips[&e].slot;
    let set = |inbound, outbound| Effect::SetLimit {
        slot,
        inbound,
        outbound,
    };
    // The binding marked limited (SLOT_LIMITED) or not, in place.
    let marked = |limited: bool, private: &str| Effect::Bind {
        eip: e,
        slot: slot
            | if limited {
                eip_common::maps::SLOT_LIMITED
            } else {
                0
            },
        private: ip(private),
        previous: None,
    };
    let twenty = rate_limit(20_000_000);
    let fx = step(&mut s, |s| {
        limit(s, &l, e, LimitChange::Set(twenty), LimitChange::Set(twenty))
    });
    // The limit first, then the mark.
    assert_eq!(
        fx,
        [set(Some(twenty), Some(twenty)), marked(true, "192.168.6.11")]
    );
    // One way on its own: the mark stays; the same limit again changes nothing.
    let five = rate_limit(5_000_000);
    let fx = step(&mut s, |s| {
        limit(s, &l, e, LimitChange::Keep, LimitChange::Set(five))
    });
    assert_eq!(fx, [set(Some(twenty), Some(five))]);
    let again = limit(&s, &l, e, LimitChange::Keep, LimitChange::Set(five)).unwrap();
    assert!(again.writes.is_empty(), "{}", again.message);
    // A move and an unbind keep it, and touch no limit; the moved binding is marked.
    let fx = step(&mut s, |s| bind(s, &l, e, &name("vm2"), false));
    assert!(!fx.iter().any(|f| matches!(f, Effect::SetLimit { .. })), "{fx:?}");
    assert!(
        fx.iter().any(
            |f| matches!(f, Effect::Bind { slot: s, .. } if *s == slot | eip_common::maps::SLOT_LIMITED)
        ),
        "{fx:?}"
    );
    step(&mut s, |s| unbind(s, e));
    assert_eq!(
        (s.eips[&e].limit_in, s.eips[&e].limit_out),
        (Some(twenty), Some(five))
    );
    // Removed both ways while unbound: only the slot's limit; bound again, unmarked.
    let fx = step(&mut s, |s| {
        limit(s, &l, e, LimitChange::Remove, LimitChange::Remove)
    });
    assert_eq!(fx, [set(None, None)]);
    let fx = step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    assert!(fx.contains(&marked(false, "192.168.6.11")), "{fx:?}");
}

#[test]
fn a_limit_on_a_free_pool_address_allocates_it_and_outside_the_pools_is_refused() {
    let mut s = world();
    let l = limits();
    let ten = LimitChange::Set(rate_limit(10_000_000));
    let c = limit(&s, &l, ip("203.0.113.4"), ten, ten).unwrap();
    assert!(
        c.message.starts_with("allocated 203.0.113.4; limited"),
        "{}",
        c.message
    );
    s.apply(&c.writes);
    assert_eq!(s.eips[&ip("203.0.113.4")].limit_in, Some(rate_limit(10_000_000)));
    assert_eq!(
        limit(&s, &l, ip("198.51.100.1"), ten, ten),
        Err(Refusal::NotInPool(ip("198.51.100.1")))
    );
}

#[test]
fn bind_with_a_limit_binds_and_limits_in_one_change() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    let twenty = rate_limit(20_000_000);
    let c = bind_limited(&s, &l, e, &name("vm1"), false, twenty).unwrap();
    assert_eq!(c.writes.len(), 1, "{:?}", c.writes);
    assert!(c.message.contains("limited to 20mbit"), "{}", c.message);
    let before = s.clone();
    s.apply(&c.writes);
    let fx = effects(&before, &s, &c.writes);
    // The limit is in place before the binding takes traffic.
    let set = fx
        .iter()
        .position(|f| matches!(f, Effect::SetLimit { inbound: Some(_), .. }));
    let bind_at = fx.iter().position(|f| matches!(f, Effect::Bind { .. }));
    assert!(set.unwrap() < bind_at.unwrap(), "{fx:?}");
    // Already bound there: only the limit is written.
    let c = bind_limited(&s, &l, e, &name("vm1"), false, rate_limit(1_000_000)).unwrap();
    assert_eq!(c.writes.len(), 1);
    s.apply(&c.writes);
    assert_eq!(s.eips[&e].limit_out, Some(rate_limit(1_000_000)));
}

#[tokio::test]
async fn reconcile_puts_back_a_limit_the_kernel_lost() {
    let dir = tempfile::tempdir().unwrap();
    let l = limits();
    let mut en = Engine::new(Store::open(dir.path()).unwrap(), MemKernel::default(), l).unwrap();
    let c = pool_add(en.state(), &l, "203.0.113.0/29".parse().unwrap(), &[]);
    en.run("pool add", c).await.unwrap();
    let c = host_add(en.state(), &l, mac(1), ip("192.168.6.11"), Some("vm1".into()));
    en.run("host add", c).await.unwrap();
    let twenty = rate_limit(20_000_000);
    let c = bind_limited(en.state(), &l, ip("203.0.113.3"), &name("vm1"), false, twenty);
    en.run("bind", c).await.unwrap();
    assert_eq!(en.kernel.view().await.unwrap(), KernelView::desired(en.state()));
    // The slot's limit gone from the kernel (a map re-created, say): put back in one pass.
    en.kernel.limits.clear();
    assert_eq!(en.reconcile().await.unwrap(), 1);
    assert_eq!(en.kernel.view().await.unwrap(), KernelView::desired(en.state()));
    assert!(en.kernel.limits.values().all(|l| l.inbound.is_limited()));
}
