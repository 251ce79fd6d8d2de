//! Reservations, the hosts file, quarantine, and the VM table's bound; pools.

use super::*;

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
            Effect::DelVm {
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
        [Effect::SetVm {
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
    assert!(matches!(fx[..], [Effect::SetVm { flags: 0, .. }]));
}

fn line(line: usize, m: u8, a: &str, n: &str) -> HostsLine {
    HostsLine {
        line,
        mac: mac(m),
        name: Some(n.into()),
        ip: ip(a),
    }
}

#[test]
fn the_hosts_file_owns_its_lines() {
    let mut s = pool_only();
    let l = limits();
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
            Effect::DelVm {
                private: ip("192.168.6.11"),
                mac: mac(1)
            },
            Effect::SetVm {
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
        matches!(fx[..], [Effect::DelVm { .. }, Effect::SetVm { .. }]),
        "{fx:?}"
    );
    assert_eq!(s.hosts.len(), 3);
    assert!(s.hosts.contains_key(&mac(4)) && !s.hosts.contains_key(&mac(5)));
}
