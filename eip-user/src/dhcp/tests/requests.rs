//! REQUEST in each client state (selecting, init-reboot, renewing, rebinding): acked, stored, or NAKed.

use super::*;

#[test]
fn selecting_our_offer_is_acked_and_stored() {
    let b = client(mac(1), MessageType::Request, selecting(VM1, SERVER));
    let o = ask(&world(), &b);
    assert_eq!(o.writes, [Write::PutLease(lease(mac(1), VM1, NOW))]);
    assert_eq!(o.command, "dhcp: leased 192.168.6.11 to 52:54:00:00:00:01");
    let r = answer(&o);
    assert_eq!(msg_type(r), Some(MessageType::Ack));
    assert_eq!(r.msg.yiaddr(), VM1);
    assert_eq!(r.to, TO_VM1);
    assert_eq!(
        opt(r, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(43_200))
    );
}

#[test]
fn selecting_another_servers_offer_is_ignored_and_frees_ours() {
    let cfg = dynamic();
    let mut offers = Offers::default();
    run(
        &cfg,
        &world(),
        &mut offers,
        NOW,
        &client(mac(7), MessageType::Discover, |_| {}),
    );
    assert_eq!(offers.len(), 1);
    let b = client(
        mac(7),
        MessageType::Request,
        selecting(ip("192.168.6.100"), ip("192.168.6.1")),
    );
    let o = run(&cfg, &world(), &mut offers, NOW, &b);
    assert_eq!(dropped(&o), DropReason::OtherServer);
    assert!(offers.is_empty());
}

#[test]
fn selecting_an_address_that_is_not_the_clients_is_naked_by_broadcast() {
    let b = client(
        mac(1),
        MessageType::Request,
        selecting(ip("192.168.6.12"), SERVER),
    );
    let o = ask(&world(), &b);
    assert!(o.writes.is_empty());
    let r = answer(&o);
    assert_eq!(msg_type(r), Some(MessageType::Nak));
    assert_eq!(r.to, Dest::Link(Link::Broadcast));
    assert_eq!(r.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt(r, OptionCode::AddressLeaseTime), None);
    assert_eq!(
        opt(r, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    // Selecting without the requested address is malformed.
    let b = client(mac(1), MessageType::Request, |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    });
    assert_eq!(dropped(&ask(&world(), &b)), DropReason::BadRequest);
}

#[test]
fn init_reboot_acks_the_right_address_naks_a_wrong_one_and_ignores_strangers() {
    let (cfg, s) = (settings(), world());
    let ok = run(
        &cfg,
        &s,
        &mut Offers::default(),
        NOW,
        &client(mac(1), MessageType::Request, requested(VM1)),
    );
    assert_eq!(answer(&ok).msg.yiaddr(), VM1);
    assert_eq!(ok.writes.len(), 1);
    for wrong in [ip("192.168.6.12"), ip("10.0.0.5")] {
        let o = run(
            &cfg,
            &s,
            &mut Offers::default(),
            NOW,
            &client(mac(1), MessageType::Request, requested(wrong)),
        );
        assert_eq!(msg_type(answer(&o)), Some(MessageType::Nak), "{wrong}");
    }
    let o = run(
        &cfg,
        &s,
        &mut Offers::default(),
        NOW,
        &client(mac(9), MessageType::Request, requested(VM1)),
    );
    assert_eq!(dropped(&o), DropReason::NoRecord);
}

#[test]
fn renewing_is_acked_to_ciaddr_and_extends_the_lease() {
    let mut s = world();
    s.apply(&[Write::PutLease(lease(mac(1), VM1, NOW - 21_600))]);
    let o = ask(&s, &client(mac(1), MessageType::Request, ciaddr(VM1)));
    assert_eq!(o.writes, [Write::PutLease(lease(mac(1), VM1, NOW))]);
    assert_eq!(o.command, "dhcp: renewed 192.168.6.11 to 52:54:00:00:00:01");
    let r = answer(&o);
    assert_eq!(r.msg.ciaddr(), VM1);
    assert_eq!(r.to, TO_VM1);
    // The lease script hears "old".
    let before = s.clone();
    s.apply(&o.writes);
    let ev = lifecycle::lease_events(&before, &s, &o.writes);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].verb, LeaseVerb::Old);
}

#[test]
fn a_repeated_request_within_seconds_is_acked_without_another_write() {
    let mut s = world();
    s.apply(&[Write::PutLease(lease(mac(1), VM1, NOW - 1))]);
    let o = ask(&s, &client(mac(1), MessageType::Request, ciaddr(VM1)));
    assert!(o.writes.is_empty());
    assert_eq!(
        opt(answer(&o), OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(43_200 - 1))
    );
}

#[test]
fn rebinding_an_address_that_is_not_the_clients_is_naked() {
    let b = client(mac(1), MessageType::Request, |m| {
        m.set_ciaddr(ip("192.168.6.50"));
        m.set_flags(Flags::default().set_broadcast());
    });
    let o = ask(&world(), &b);
    assert_eq!(msg_type(answer(&o)), Some(MessageType::Nak));
    assert_eq!(answer(&o).to, Dest::Link(Link::Broadcast));
    // No server id, no requested address, no ciaddr: no state fits.
    let o = ask(&world(), &client(mac(1), MessageType::Request, |_| {}));
    assert_eq!(dropped(&o), DropReason::BadRequest);
}

#[test]
fn a_changed_reservation_naks_the_renewal_then_offers_the_new_address() {
    let l = Limits {
        private: "192.168.6.0/24".parse().unwrap(),
        gateway: SERVER,
        max_bindings: 8,
        max_vms: 1024,
        dynamic: None,
    };
    let mut s = world();
    s.apply(&[Write::PutLease(lease(mac(1), VM1, NOW - 100))]);
    // The hosts file now says .15 for vm1: the old lease ends with the change.
    let line = lifecycle::HostsLine {
        line: 1,
        mac: mac(1),
        name: Some("vm1".into()),
        ip: ip("192.168.6.15"),
    };
    let mut file = s.clone();
    file.hosts = s
        .hosts
        .values()
        .map(|h| Reservation {
            source: Source::File,
            ..h.clone()
        })
        .collect();
    let (change, rejected) = lifecycle::sync_file_hosts(&file, &l, &[line]);
    assert!(rejected.is_empty());
    assert!(
        change.writes.contains(&Write::DelLease(mac(1))),
        "{:?}",
        change.writes
    );
    let before = file.clone();
    file.apply(&change.writes);
    let ev = lifecycle::lease_events(&before, &file, &change.writes);
    assert_eq!((ev[0].verb, ev[0].lease.ip), (LeaseVerb::Del, VM1));
    let o = ask(&file, &client(mac(1), MessageType::Request, ciaddr(VM1)));
    assert_eq!(msg_type(answer(&o)), Some(MessageType::Nak));
    let o = ask(&file, &client(mac(1), MessageType::Discover, |_| {}));
    assert_eq!(answer(&o).msg.yiaddr(), ip("192.168.6.15"));
}
