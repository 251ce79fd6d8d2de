//! The reply frames, byte for byte; the lease script's arguments; leases' expiry.

use super::*;

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
        crate::dhcp::script::args(&ev(LeaseVerb::Add)),
        ["add", "52:54:00:00:00:01", "192.168.6.11", "vm1"]
    );
    assert_eq!(crate::dhcp::script::args(&ev(LeaseVerb::Old))[0], "old");
    let anonymous = lifecycle::LeaseEvent {
        verb: LeaseVerb::Del,
        lease: Lease {
            hostname: None,
            ..l.clone()
        },
    };
    assert_eq!(
        crate::dhcp::script::args(&anonymous),
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
    assert_eq!(s.vm(dyn_mac), Some((ip("192.168.6.100"), 0)));
    let e = lifecycle::expire(&s, NOW + 3_200);
    assert_eq!(e.writes, [Write::DelLease(dyn_mac)]);
    let before = s.clone();
    s.apply(&e.writes);
    assert_eq!(
        crate::kernel::plan::effects(&before, &s, &e.writes),
        [crate::kernel::plan::Effect::DelVm {
            private: ip("192.168.6.100"),
            mac: dyn_mac
        }]
    );
    assert_eq!(s.vm(dyn_mac), None);
    // The reservation's entry does not depend on its lease.
    assert_eq!(s.vm(mac(1)), Some((VM1, 0)));
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
