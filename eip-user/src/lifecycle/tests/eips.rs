//! alloc, bind, move, unbind, release: the writes and the kernel work each makes.

use super::*;

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

/// One planner: a kernel that still has the EIP on the VM it left is repaired the way the
/// move itself is applied (the binding rewritten, the old VM's reverse entry removed last,
/// the router told), not by removing the old reverse entry first.
#[test]
fn a_reconcile_repairs_a_missed_move_as_the_move_does() {
    let mut s = world();
    let l = limits();
    let e = ip("203.0.113.3");
    step(&mut s, |s| bind(s, &l, e, &name("vm1"), false));
    let kernel = crate::kernel::KernelView::desired(&s);
    let moved = step(&mut s, |s| bind(s, &l, e, &name("vm2"), false));
    let slot = s.bound(e).unwrap().slot;
    let expected = [
        Effect::Bind {
            eip: e,
            slot,
            private: ip("192.168.6.12"),
            previous: Some(ip("192.168.6.11")),
        },
        Effect::Announce(e),
    ];
    assert_eq!(moved, expected);
    assert_eq!(crate::kernel::plan::reconcile(&s, &kernel), expected);
}
