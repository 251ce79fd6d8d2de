//! DISCOVER: what is offered, to whom, with which options, how it is sent.

use super::*;

#[test]
fn discover_from_a_reserved_mac_is_offered_its_address_with_every_option() {
    let o = ask(&world(), &client(mac(1), MessageType::Discover, |_| {}));
    assert_eq!(o.kind, Some("discover"));
    assert!(o.writes.is_empty(), "an offer stores nothing");
    let r = answer(&o);
    assert_eq!(r.msg.opcode(), v4::Opcode::BootReply);
    assert_eq!(r.msg.xid(), 0x1234_5678);
    assert_eq!(r.msg.yiaddr(), VM1);
    assert_eq!(r.msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(&r.msg.chaddr()[..6], &mac(1).0);
    // Broadcast flag clear, no ciaddr: unicast to the offered address and the client's MAC.
    assert_eq!(r.to, TO_VM1);
    assert_eq!(msg_type(r), Some(MessageType::Offer));
    assert_eq!(
        opt(r, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(r, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(43_200))
    );
    assert_eq!(opt(r, OptionCode::Renewal), Some(&DhcpOption::Renewal(21_600)));
    assert_eq!(
        opt(r, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(37_800))
    );
    assert_eq!(
        opt(r, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(ip("255.255.255.0")))
    );
    assert_eq!(
        opt(r, OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        opt(r, OptionCode::BroadcastAddr),
        Some(&DhcpOption::BroadcastAddr(ip("192.168.6.255")))
    );
    assert_eq!(
        opt(r, OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![ip("198.51.100.53")]))
    );
    assert_eq!(
        opt(r, OptionCode::DomainName),
        Some(&DhcpOption::DomainName("lab.example".into()))
    );
    assert_eq!(
        opt(r, OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(1450))
    );
    assert_eq!(
        opt(r, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("vm1".into()))
    );
}

#[test]
fn the_parameter_request_list_is_honoured_and_dns_is_never_assumed() {
    let prl = |m: &mut v4::Message| {
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
        ]));
    };
    let o = ask(&world(), &client(mac(1), MessageType::Discover, prl));
    // Type, server id, lease times always; then only what was asked for.
    assert_eq!(codes(answer(&o)), [1, 3, 51, 53, 54, 58, 59]);
    let none = Settings {
        dns: vec![],
        domain: None,
        mtu: None,
        ..settings()
    };
    let o = run(
        &none,
        &world(),
        &mut Offers::default(),
        NOW,
        &client(mac(1), MessageType::Discover, |_| {}),
    );
    assert_eq!(codes(answer(&o)), [1, 3, 12, 28, 51, 53, 54, 58, 59]);
}

#[test]
fn the_broadcast_flag_makes_the_offer_broadcast() {
    let b = client(mac(1), MessageType::Discover, |m| {
        m.set_flags(Flags::default().set_broadcast());
    });
    let o = ask(&world(), &b);
    assert_eq!(answer(&o).to, Dest::Link(Link::Broadcast));
    assert!(answer(&o).msg.flags().broadcast());
}

#[test]
fn an_unknown_mac_gets_nothing_without_a_range() {
    let o = ask(&world(), &client(mac(9), MessageType::Discover, |_| {}));
    assert_eq!(dropped(&o), DropReason::UnknownMac);
    assert_eq!(o.mac, Some(mac(9)));
    assert!(o.writes.is_empty());
}

/// The address offered to `mac(n)`'s DISCOVER.
fn offered(cfg: &Settings, s: &State, offers: &mut Offers, now: u64, n: u8) -> Ipv4Addr {
    answer(&run(
        cfg,
        s,
        offers,
        now,
        &client(mac(n), MessageType::Discover, |_| {}),
    ))
    .msg
    .yiaddr()
}

#[test]
fn the_range_offers_each_unknown_mac_its_own_address_and_holds_it() {
    let cfg = dynamic();
    let s = world();
    let mut offers = Offers::default();
    let a = offered(&cfg, &s, &mut offers, NOW, 7);
    let b = offered(&cfg, &s, &mut offers, NOW, 8);
    assert!(cfg.range.unwrap().contains(a) && cfg.range.unwrap().contains(b));
    assert_ne!(a, b, "one address is not offered to two clients");
    // Asked again, a client is offered the same address.
    let again = offered(&cfg, &s, &mut offers, NOW, 7);
    assert_eq!(again, a);
    // A third client: both addresses are held, so the oldest offer gives way.
    let c = offered(&cfg, &s, &mut offers, NOW + 1, 6);
    assert!(c == a || c == b);
    assert!(offers.len() <= 2, "offers never outgrow the range");
    // With both addresses leased, the range is full.
    let mut full = s.clone();
    full.apply(&[
        Write::PutLease(lease(mac(7), a, NOW)),
        Write::PutLease(lease(mac(8), b, NOW)),
    ]);
    let o = run(
        &cfg,
        &full,
        &mut Offers::default(),
        NOW,
        &client(mac(6), MessageType::Discover, |_| {}),
    );
    assert_eq!(dropped(&o), DropReason::RangeFull);
}
