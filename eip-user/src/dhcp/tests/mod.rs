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
    model::{Lease, Mac, Range, Reservation, Source, State, Write},
    testing::control::{ip, mac},
};

const NOW: u64 = 1_800_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 6, 22);
const VM1: Ipv4Addr = Ipv4Addr::new(192, 168, 6, 11);

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
    s.apply(&[Write::PutReservation(Reservation {
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

mod arbitrary;
mod frames;
mod offers;
mod others;
mod requests;
