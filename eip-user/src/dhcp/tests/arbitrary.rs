//! Arbitrary datagrams: the handler answers or drops each, never panics, never stores what it must not.

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
