//! RELEASE, DECLINE, INFORM, and what is dropped, by reason.

use super::*;

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
