//! One test per row of the server's state machine, the wire checks, and arbitrary bytes.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, MessageType, OptionCode};

use super::{
    DropReason, Settings,
    handler::{Offers, Outcome, Reply, Verdict, handle},
    wire::{self, Dest, Link},
};
use crate::{
    lifecycle::{self, DECLINE_BACKOFF, LeaseVerb, Limits},
    model::{Host, Lease, Mac, Range, Source, State, Write},
};

const NOW: u64 = 1_800_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 6, 22);
const VM1: Ipv4Addr = Ipv4Addr::new(192, 168, 6, 11);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac(n: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0, 0, n])
}

fn settings() -> Settings {
    Settings {
        server: SERVER,
        net: "192.168.6.0/24".parse().unwrap(),
        lease_time: 43_200,
        dns: vec![ip("198.51.100.53")],
        domain: Some("lab.example".into()),
        mtu: Some(1450),
        range: None,
    }
}

fn dynamic() -> Settings {
    Settings {
        range: Some("192.168.6.100-192.168.6.101".parse().unwrap()),
        ..settings()
    }
}

/// vm1 (mac 1) reserved at .11.
fn world() -> State {
    let mut s = State::default();
    s.apply(&[Write::PutHost(Host {
        mac: mac(1),
        name: Some("vm1".into()),
        ip: VM1,
        source: Source::Cli,
        quarantined: false,
    })]);
    s
}

fn lease(m: Mac, a: Ipv4Addr, granted: u64) -> Lease {
    Lease {
        mac: m,
        ip: a,
        granted,
        expires: granted + 43_200,
        hostname: Some("vm1".into()).filter(|_| m == mac(1)),
    }
}

/// A client message as a client would encode it.
fn client(m: Mac, t: MessageType, edit: impl FnOnce(&mut v4::Message)) -> Vec<u8> {
    let mut msg = v4::Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &m.0,
    );
    msg.opts_mut().insert(DhcpOption::MessageType(t));
    edit(&mut msg);
    let mut buf = Vec::new();
    dhcproto::Encodable::encode(&msg, &mut dhcproto::Encoder::new(&mut buf)).unwrap();
    buf
}

fn requested(a: Ipv4Addr) -> impl FnOnce(&mut v4::Message) {
    move |m| {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
    }
}

fn selecting(a: Ipv4Addr, server: Ipv4Addr) -> impl FnOnce(&mut v4::Message) {
    move |m| {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    }
}

fn ciaddr(a: Ipv4Addr) -> impl FnOnce(&mut v4::Message) {
    move |m| {
        m.set_ciaddr(a);
    }
}

fn run(cfg: &Settings, s: &State, offers: &mut Offers, now: u64, bytes: &[u8]) -> Outcome {
    handle(cfg, s, offers, now, bytes)
}

/// The default settings, no offers outstanding, at `NOW`.
fn ask(s: &State, bytes: &[u8]) -> Outcome {
    run(&settings(), s, &mut Offers::default(), NOW, bytes)
}

fn answer(o: &Outcome) -> &Reply {
    match &o.verdict {
        Verdict::Answer(r) => r,
        v => panic!("expected an answer, got {v:?}"),
    }
}

fn dropped(o: &Outcome) -> DropReason {
    match o.verdict {
        Verdict::Drop(d) => d,
        ref v => panic!("expected a drop, got {v:?}"),
    }
}

fn opt(r: &Reply, code: OptionCode) -> Option<&DhcpOption> {
    r.msg.opts().get(code)
}

fn msg_type(r: &Reply) -> Option<MessageType> {
    r.msg.opts().msg_type()
}

/// Unicast to vm1's MAC and reserved address.
const TO_VM1: Dest = Dest::Link(Link::Unicast {
    mac: [0x52, 0x54, 0, 0, 0, 1],
    ip: VM1,
});

fn codes(r: &Reply) -> Vec<u8> {
    r.msg.opts().iter().map(|(c, _)| u8::from(*c)).collect()
}

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
    let line = lifecycle::FileHost {
        line: 1,
        mac: mac(1),
        name: Some("vm1".into()),
        ip: ip("192.168.6.15"),
    };
    let mut file = s.clone();
    file.hosts = s
        .hosts
        .values()
        .map(|h| Host {
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

#[test]
fn release_ends_the_lease_and_only_the_clients_own() {
    let mut s = world();
    s.apply(&[Write::PutLease(lease(mac(1), VM1, NOW - 100))]);
    let o = ask(&s, &client(mac(1), MessageType::Release, ciaddr(VM1)));
    assert_eq!(o.verdict, Verdict::Quiet);
    assert_eq!(o.writes, [Write::DelLease(mac(1))]);
    // Another MAC cannot release vm1's lease.
    let o = ask(&s, &client(mac(2), MessageType::Release, ciaddr(VM1)));
    assert_eq!(dropped(&o), DropReason::BadRequest);
    assert!(o.writes.is_empty());
}

#[test]
fn decline_marks_the_address_unusable_until_the_back_off_passes() {
    let mut s = world();
    s.apply(&[Write::PutLease(lease(mac(1), VM1, NOW - 5))]);
    let b = client(mac(1), MessageType::Decline, selecting(VM1, SERVER));
    let o = ask(&s, &b);
    assert_eq!(o.verdict, Verdict::Quiet);
    assert_eq!(
        o.writes,
        [
            Write::DelLease(mac(1)),
            Write::PutDeclined(crate::model::Declined {
                ip: VM1,
                mac: mac(1),
                at: NOW
            })
        ]
    );
    s.apply(&o.writes);
    let disc = client(mac(1), MessageType::Discover, |_| {});
    assert_eq!(
        dropped(&run(&settings(), &s, &mut Offers::default(), NOW + 1, &disc)),
        DropReason::AddressDeclined
    );
    let later = NOW + DECLINE_BACKOFF;
    let expire = lifecycle::expire(&s, later);
    assert_eq!(expire.writes, [Write::DelDeclined(VM1)]);
    s.apply(&expire.writes);
    assert_eq!(
        answer(&run(&settings(), &s, &mut Offers::default(), later, &disc))
            .msg
            .yiaddr(),
        VM1
    );
    // A client cannot decline someone else's address.
    let b = client(mac(2), MessageType::Decline, selecting(VM1, SERVER));
    assert_eq!(
        dropped(&run(&settings(), &s, &mut Offers::default(), later, &b)),
        DropReason::BadRequest
    );
}

#[test]
fn inform_is_acked_without_a_lease_to_ciaddr() {
    let b = client(mac(5), MessageType::Inform, ciaddr(ip("192.168.6.77")));
    let o = ask(&world(), &b);
    assert!(o.writes.is_empty());
    let r = answer(&o);
    assert_eq!(msg_type(r), Some(MessageType::Ack));
    assert_eq!(r.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt(r, OptionCode::AddressLeaseTime), None);
    assert_eq!(
        opt(r, OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        r.to,
        Dest::Link(Link::Unicast {
            mac: mac(5).0,
            ip: ip("192.168.6.77")
        })
    );
    let b = client(mac(5), MessageType::Inform, ciaddr(ip("10.1.1.1")));
    assert_eq!(dropped(&ask(&world(), &b)), DropReason::BadRequest);
}

#[test]
fn the_client_identifier_is_echoed() {
    let b = client(mac(1), MessageType::Discover, |m| {
        m.opts_mut()
            .insert(DhcpOption::ClientIdentifier(vec![1, 0x52, 0x54, 0, 0, 0, 1]));
    });
    let o = ask(&world(), &b);
    assert_eq!(
        opt(answer(&o), OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(vec![1, 0x52, 0x54, 0, 0, 0, 1]))
    );
}

#[test]
fn relayed_and_server_messages_are_dropped() {
    let b = client(mac(1), MessageType::Discover, |m| {
        m.set_giaddr(ip("10.0.0.1"));
    });
    assert_eq!(dropped(&ask(&world(), &b)), DropReason::Relayed);
    // A relay on the bridge's subnet is answered, at its server port.
    let b = client(mac(1), MessageType::Discover, |m| {
        m.set_giaddr(ip("192.168.6.5"));
    });
    let o = ask(&world(), &b);
    assert_eq!(answer(&o).to, Dest::Relay(ip("192.168.6.5")));
    assert_eq!(answer(&o).msg.giaddr(), ip("192.168.6.5"));
    assert_eq!(answer(&o).msg.yiaddr(), VM1);
    let b = client(mac(1), MessageType::Offer, |_| {});
    assert_eq!(dropped(&ask(&world(), &b)), DropReason::NotClientMessage);
}

#[test]
fn malformed_datagrams_are_dropped_by_reason() {
    let good = client(mac(1), MessageType::Discover, requested(VM1));
    let end = good.iter().rposition(|b| *b == 255).unwrap();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let rows: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::Truncated),
        ("header only", good[..239].to_vec(), DropReason::Truncated),
        (
            "oversized",
            with(&|b| b.resize(wire::MAX_MESSAGE + 1, 0)),
            DropReason::Oversized,
        ),
        ("a reply", with(&|b| b[0] = 2), DropReason::NotRequest),
        ("unknown op", with(&|b| b[0] = 7), DropReason::NotRequest),
        ("not ethernet", with(&|b| b[1] = 6), DropReason::NotEthernet),
        ("hlen 16", with(&|b| b[2] = 16), DropReason::NotEthernet),
        ("bad cookie", with(&|b| b[236] = 0), DropReason::BadCookie),
        ("no end", with(&|b| b.truncate(end)), DropReason::BadOptions),
        (
            "option past the end",
            with(&|b| {
                b.truncate(end);
                b.extend_from_slice(&[12, 40, b'x']);
            }),
            DropReason::BadOptions,
        ),
        (
            "requested address of 3 bytes",
            with(&|b| {
                b.truncate(end);
                b.extend_from_slice(&[50, 3, 1, 2, 3, 255]);
            }),
            DropReason::BadOptions,
        ),
        (
            // Two pieces of one option are one value (RFC 3396): 8 bytes where 4 belong.
            "a fixed-length option split in two",
            with(&|b| {
                b.truncate(end);
                b.extend_from_slice(&[152, 4, 0, 0, 0, 1, 152, 4, 0, 0, 0, 2, 255]);
            }),
            DropReason::BadOptions,
        ),
        ("no options", with(&|b| b.truncate(240)), DropReason::BadOptions),
        (
            "no message type",
            with(&|b| {
                b.truncate(240);
                b.push(255);
            }),
            DropReason::NoMessageType,
        ),
    ];
    for (name, bytes, why) in rows {
        let o = ask(&world(), &bytes);
        assert_eq!(o.verdict, Verdict::Drop(why), "{name}");
        assert!(o.writes.is_empty(), "{name}");
    }
}

#[test]
fn a_reply_frame_is_exact_to_the_byte() {
    let bridge = [2, 0, 0, 0, 0, 0x22];
    let payload = [0u8; 300];
    let f = wire::frame(
        bridge,
        SERVER,
        Link::Unicast {
            mac: mac(1).0,
            ip: VM1,
        },
        &payload,
    );
    // Worked out by hand: Ethernet; IPv4 (TOS 0x10, length 328, no id or fragments, TTL 64,
    // UDP, checksum 0xec23); UDP 67 -> 68, length 308, checksum 0x6f8d over the pseudo-header.
    #[rustfmt::skip]
    let header: [u8; 42] = [
        0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x22, 0x08, 0x00,
        0x45, 0x10, 0x01, 0x48, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0xec, 0x23,
        0xc0, 0xa8, 0x06, 0x16, 0xc0, 0xa8, 0x06, 0x0b,
        0x00, 0x43, 0x00, 0x44, 0x01, 0x34, 0x6f, 0x8d,
    ];
    let mut expected = header.to_vec();
    expected.extend_from_slice(&payload);
    assert_eq!(f, expected, "{}", eip_common::builder::diff(&expected, &f));
    // Broadcast: only the destinations and the checksums differ.
    let b = wire::frame(bridge, SERVER, Link::Broadcast, &payload);
    assert_eq!(&b[0..6], &[0xff; 6]);
    assert_eq!(&b[30..34], &[255; 4]);
    eip_common::builder::verify_ipv4(&b, 14).unwrap();
    eip_common::builder::verify_transport(17, SERVER.octets(), [255; 4], &b[34..]).unwrap();
}

#[test]
fn a_reply_is_padded_and_decodes_as_meant() {
    let o = ask(&world(), &client(mac(1), MessageType::Discover, |_| {}));
    let r = answer(&o);
    let payload = wire::encode(&r.msg);
    assert!(payload.len() >= wire::MIN_REPLY);
    let back: v4::Message = dhcproto::Decodable::decode(&mut dhcproto::Decoder::new(&payload)).unwrap();
    assert_eq!(back, r.msg);
}

#[test]
fn the_lease_script_gets_dnsmasq_arguments() {
    let l = lease(mac(1), VM1, NOW);
    let ev = |verb| lifecycle::LeaseEvent {
        verb,
        lease: l.clone(),
    };
    assert_eq!(
        super::script::args(&ev(LeaseVerb::Add)),
        ["add", "52:54:00:00:00:01", "192.168.6.11", "vm1"]
    );
    assert_eq!(super::script::args(&ev(LeaseVerb::Old))[0], "old");
    let anonymous = lifecycle::LeaseEvent {
        verb: LeaseVerb::Del,
        lease: Lease {
            hostname: None,
            ..l.clone()
        },
    };
    assert_eq!(
        super::script::args(&anonymous),
        ["del", "52:54:00:00:00:01", "192.168.6.11"]
    );
}

#[test]
fn leases_expire_and_dynamic_leases_feed_the_dataplane() {
    let mut s = world();
    let dyn_mac = mac(7);
    s.apply(&[
        Write::PutLease(lease(mac(1), VM1, NOW)),
        Write::PutLease(lease(dyn_mac, ip("192.168.6.100"), NOW - 40_000)),
    ]);
    // A dynamic lease is a VM entry (fast path and anti-spoofing) like a reservation.
    assert_eq!(s.guest(dyn_mac), Some((ip("192.168.6.100"), 0)));
    let e = lifecycle::expire(&s, NOW + 3_200);
    assert_eq!(e.writes, [Write::DelLease(dyn_mac)]);
    let before = s.clone();
    s.apply(&e.writes);
    assert_eq!(
        crate::kernel::plan::effects(&before, &s, &e.writes),
        [crate::kernel::plan::Effect::DelGuest {
            private: ip("192.168.6.100"),
            mac: dyn_mac
        }]
    );
    assert_eq!(s.guest(dyn_mac), None);
    // The reservation's entry does not depend on its lease.
    assert_eq!(s.guest(mac(1)), Some((VM1, 0)));
}

#[test]
fn a_reservation_takes_its_address_back_from_a_dynamic_lease() {
    let l = Limits {
        private: "192.168.6.0/24".parse().unwrap(),
        gateway: SERVER,
        max_bindings: 8,
        max_vms: 1024,
        dynamic: Some(Range {
            start: ip("192.168.6.100"),
            end: ip("192.168.6.101"),
        }),
    };
    let mut s = world();
    s.apply(&[Write::PutLease(lease(mac(7), ip("192.168.6.100"), NOW))]);
    let c = lifecycle::host_add(&s, &l, mac(8), ip("192.168.6.100"), None).unwrap();
    assert!(c.writes.contains(&Write::DelLease(mac(7))), "{:?}", c.writes);
    // The dynamic client itself made a reservation of its lease: the lease stays.
    let c = lifecycle::host_add(&s, &l, mac(7), ip("192.168.6.100"), None).unwrap();
    assert_eq!(c.writes.len(), 1);
}

mod arbitrary {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Any bytes at all: no panic, no writes unless a whole client message decoded.
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let o = run(&dynamic(), &world(), &mut Offers::default(), NOW, &bytes);
            if matches!(o.verdict, Verdict::Drop(_)) {
                prop_assert!(o.writes.is_empty());
            }
        }

        /// A valid header with arbitrary options: raw bytes (the walk), and well-framed
        /// options of any code and content, repeated codes among them (dhcproto's typed
        /// decoders and the state machine).
        #[test]
        fn a_valid_header_with_any_options(
            t in 1u8..20,
            opts in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                proptest::collection::vec(
                    (
                        prop_oneof![1u8..254, Just(50u8), Just(54u8), Just(60u8), Just(61u8), Just(152u8), Just(152u8)],
                        proptest::collection::vec(any::<u8>(), 0..6),
                    ),
                    0..8,
                )
                .prop_map(|framed| {
                    framed
                        .into_iter()
                        .flat_map(|(code, data)| [code, data.len() as u8].into_iter().chain(data))
                        .collect()
                }),
            ],
            ci in any::<u32>(),
            flags in any::<u16>(),
        ) {
            let mut b = client(mac(1), MessageType::Discover, |m| {
                m.set_ciaddr(Ipv4Addr::from_bits(ci));
                m.set_flags(Flags::new(flags));
            });
            b.truncate(240);
            b.extend_from_slice(&[53, 1, t]);
            b.extend_from_slice(&opts);
            b.push(255);
            let mut offers = Offers::default();
            let o = run(&dynamic(), &world(), &mut offers, NOW, &b);
            if let Verdict::Answer(r) = &o.verdict {
                // Whatever is answered goes to the client, or is broadcast on the bridge.
                match r.to {
                    Dest::Link(Link::Broadcast) => {}
                    Dest::Link(Link::Unicast { mac: m, .. }) => prop_assert_eq!(m, mac(1).0),
                    // These messages carry no giaddr.
                    Dest::Relay(r) => prop_assert!(false, "sent to a relay {r}"),
                }
                if let Dest::Link(to) = r.to {
                    let _ = wire::frame([2; 6], SERVER, to, &wire::encode(&r.msg));
                }
            }
        }
    }
}
