//! The RFC 2131 server state machine as a pure function: a client message, the state, the
//! time and the offers outstanding in, a [`Outcome`] out. Nothing here touches a socket or
//! the store, so every row of the state machine is a unit test.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    net::Ipv4Addr,
};

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};

use super::{
    DropReason, Settings,
    wire::{self, Dest, Link},
};
use crate::{
    lifecycle::{DECLINE_BACKOFF, valid_name},
    model::{Declined, Lease, Mac, State, Write},
};

/// How long an offered dynamic address is held for the client it was offered to.
pub const OFFER_HOLD: u64 = 60;

/// Dynamic addresses offered and not yet requested, so two clients are not offered one
/// address. At most one per address of the range, so a flood of DISCOVERs cannot grow it
/// past the range's size; when every free address is held, the oldest offer gives way.
#[derive(Debug, Default)]
pub struct Offers {
    by_ip: HashMap<Ipv4Addr, (Mac, u64)>,
    by_mac: HashMap<Mac, Ipv4Addr>,
}

impl Offers {
    fn hold(&mut self, ip: Ipv4Addr, mac: Mac, now: u64) {
        self.forget(mac);
        if let Some((other, _)) = self.by_ip.insert(ip, (mac, now + OFFER_HOLD)) {
            self.by_mac.remove(&other);
        }
        self.by_mac.insert(mac, ip);
    }

    fn forget(&mut self, mac: Mac) {
        if let Some(ip) = self.by_mac.remove(&mac) {
            self.by_ip.remove(&ip);
        }
    }

    /// Until when `ip` is held for another MAC than `mac`.
    fn held_for_other(&self, ip: Ipv4Addr, mac: Mac, now: u64) -> Option<u64> {
        self.by_ip
            .get(&ip)
            .filter(|(m, until)| *m != mac && *until > now)
            .map(|(_, until)| *until)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// What to send, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub msg: v4::Message,
    pub to: Dest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Answer(Reply),
    /// Handled, and the protocol wants no answer (RELEASE, DECLINE).
    Quiet,
    Drop(DropReason),
}

/// A message's outcome: the records to commit before answering, what the history calls them,
/// and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The message type, as counted (`discover`, `request`...), once it decoded.
    pub kind: Option<&'static str>,
    pub mac: Option<Mac>,
    pub writes: Vec<Write>,
    pub command: String,
    pub verdict: Verdict,
}

impl Outcome {
    fn verdict(verdict: Verdict) -> Outcome {
        Outcome {
            kind: None,
            mac: None,
            writes: vec![],
            command: String::new(),
            verdict,
        }
    }

    fn drop(why: DropReason) -> Outcome {
        Outcome::verdict(Verdict::Drop(why))
    }

    fn answer(reply: Reply) -> Outcome {
        Outcome::verdict(Verdict::Answer(reply))
    }

    /// `self`, with records to commit first (named `command` in the history).
    fn writing(self, writes: Vec<Write>, command: String) -> Outcome {
        Outcome {
            writes,
            command,
            ..self
        }
    }
}

/// Handles one datagram received on the bridge.
pub fn handle(cfg: &Settings, state: &State, offers: &mut Offers, now: u64, bytes: &[u8]) -> Outcome {
    match wire::decode(bytes) {
        Ok(msg) => handle_message(cfg, state, offers, now, &msg),
        Err(why) => Outcome::drop(why),
    }
}

fn kind_of(t: MessageType) -> Option<&'static str> {
    match t {
        MessageType::Discover => Some("discover"),
        MessageType::Request => Some("request"),
        MessageType::Decline => Some("decline"),
        MessageType::Release => Some("release"),
        MessageType::Inform => Some("inform"),
        _ => None,
    }
}

pub fn handle_message(
    cfg: &Settings,
    state: &State,
    offers: &mut Offers,
    now: u64,
    msg: &v4::Message,
) -> Outcome {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let t = msg.opts().msg_type();
    let c = Client {
        cfg,
        state,
        now,
        msg,
        mac: Mac(mac),
    };
    let mut out = match t {
        _ if t.and_then(kind_of).is_none() => Outcome::drop(DropReason::NotClientMessage),
        // A relay on the bridge's own subnet is served as the bridge is (perfdhcp, for one,
        // always sends as a relay); one elsewhere would want another subnet's addresses.
        _ if !msg.giaddr().is_unspecified() && !cfg.net.contains(&msg.giaddr()) => {
            Outcome::drop(DropReason::Relayed)
        }
        Some(MessageType::Discover) => c.discover(offers),
        Some(MessageType::Request) => c.request(offers),
        Some(MessageType::Decline) => c.decline(),
        Some(MessageType::Release) => c.release(),
        _ => c.inform(),
    };
    out.kind = t.and_then(kind_of);
    out.mac = Some(Mac(mac));
    out
}

struct Client<'a> {
    cfg: &'a Settings,
    state: &'a State,
    now: u64,
    msg: &'a v4::Message,
    mac: Mac,
}

impl Client<'_> {
    fn opt_ip(&self, code: OptionCode) -> Option<Ipv4Addr> {
        match self.msg.opts().get(code)? {
            DhcpOption::RequestedIpAddress(ip) | DhcpOption::ServerIdentifier(ip) => Some(*ip),
            _ => None,
        }
    }

    fn requested(&self) -> Option<Ipv4Addr> {
        self.opt_ip(OptionCode::RequestedIpAddress)
    }

    /// The server identifier names another server.
    fn for_other_server(&self) -> bool {
        self.opt_ip(OptionCode::ServerIdentifier)
            .is_some_and(|s| s != self.cfg.server)
    }

    fn declined(&self, ip: Ipv4Addr) -> bool {
        self.state
            .declined
            .get(&ip)
            .is_some_and(|d| d.at.saturating_add(DECLINE_BACKOFF) > self.now)
    }

    /// Whether `ip` may be this client's dynamic address: in the range (which the daemon
    /// checked lies among the subnet's hosts), not the server's, nobody's reservation, no
    /// other MAC's lease, not declined.
    fn dynamic_ok(&self, ip: Ipv4Addr) -> bool {
        self.cfg.range.is_some_and(|r| r.contains(ip))
            && ip != self.cfg.server
            && !self.taken(ip)
            && !self.declined(ip)
    }

    /// Whether a reservation or another MAC's lease holds `ip`.
    fn taken(&self, ip: Ipv4Addr) -> bool {
        self.state.host_by_ip(ip).is_some() || self.state.leases.at(ip).any(|l| l.mac != self.mac)
    }

    /// Whether `ip` is this client's to use: its reservation, or (without one) a dynamic
    /// address it may hold.
    fn owns(&self, ip: Ipv4Addr) -> bool {
        match self.state.hosts.get(&self.mac) {
            Some(h) => h.ip == ip,
            None => self.dynamic_ok(ip),
        }
    }

    /// The address to offer: the reservation; else the client's lease, the address it asks
    /// for, or a free one of the range, starting at a point its MAC picks (so a client tends
    /// to get the same address back).
    fn address(&self, offers: &Offers) -> Result<Ipv4Addr, DropReason> {
        if let Some(h) = self.state.hosts.get(&self.mac) {
            return if self.declined(h.ip) {
                Err(DropReason::AddressDeclined)
            } else {
                Ok(h.ip)
            };
        }
        let Some(range) = self.cfg.range else {
            return Err(DropReason::UnknownMac);
        };
        let free = |ip: Ipv4Addr| self.dynamic_ok(ip);
        let known = self.state.leases.get(&self.mac).map(|l| l.ip);
        for ip in known.into_iter().chain(self.requested()) {
            if free(ip) && offers.held_for_other(ip, self.mac, self.now).is_none() {
                return Ok(ip);
            }
        }
        let mut h = DefaultHasher::new();
        self.mac.hash(&mut h);
        let start = h.finish() as u32;
        // The free address held the shortest, should every free one be held.
        let mut oldest: Option<(u64, Ipv4Addr)> = None;
        for i in 0..range.size() {
            let ip = range.nth(start.wrapping_add(i));
            if !free(ip) {
                continue;
            }
            match offers.held_for_other(ip, self.mac, self.now) {
                None => return Ok(ip),
                Some(until) => {
                    if oldest.is_none_or(|(u, _)| until < u) {
                        oldest = Some((until, ip));
                    }
                }
            }
        }
        oldest.map(|(_, ip)| ip).ok_or(DropReason::RangeFull)
    }

    fn discover(&self, offers: &mut Offers) -> Outcome {
        match self.address(offers) {
            Ok(ip) => {
                if !self.state.hosts.contains_key(&self.mac) {
                    offers.hold(ip, self.mac, self.now);
                }
                Outcome::answer(self.reply(MessageType::Offer, ip, Some(self.cfg.lease_time)))
            }
            Err(why) => Outcome::drop(why),
        }
    }

    /// RFC 2131 4.3.2: the client's state follows from the server identifier, the requested
    /// address and ciaddr.
    fn request(&self, offers: &mut Offers) -> Outcome {
        let ciaddr = self.msg.ciaddr();
        if self.opt_ip(OptionCode::ServerIdentifier).is_some() {
            // SELECTING: the client picked an offer.
            if self.for_other_server() {
                offers.forget(self.mac);
                return Outcome::drop(DropReason::OtherServer);
            }
            match self.requested() {
                Some(ip) => self.decide(offers, ip),
                None => Outcome::drop(DropReason::BadRequest),
            }
        } else if let Some(ip) = self.requested() {
            // INIT-REBOOT: the client remembers an address.
            let known = self.state.hosts.contains_key(&self.mac) || self.state.leases.contains_key(&self.mac);
            if !self.cfg.net.contains(&ip) {
                self.nak("the address is not on this network")
            } else if !known && self.cfg.range.is_none() {
                Outcome::drop(DropReason::NoRecord)
            } else {
                self.decide(offers, ip)
            }
        } else if !ciaddr.is_unspecified() {
            // RENEWING (unicast) or REBINDING (broadcast): the same answer either way.
            self.decide(offers, ciaddr)
        } else {
            Outcome::drop(DropReason::BadRequest)
        }
    }

    fn decide(&self, offers: &mut Offers, ip: Ipv4Addr) -> Outcome {
        if !self.owns(ip) {
            return self.nak("the address is not yours");
        }
        offers.forget(self.mac);
        let hostname = self.hostname();
        let old = self.state.leases.get(&self.mac).filter(|l| l.ip == ip);
        // A client repeating a request within seconds (lost ACK, a retransmission) gets the
        // lease it has, without another durable write.
        let coalesce = 2;
        let (writes, command, secs) = match old {
            Some(l) if self.now.saturating_sub(l.granted) < coalesce && l.hostname == hostname => {
                (vec![], String::new(), l.expires.saturating_sub(self.now) as u32)
            }
            _ => {
                let lease = Lease {
                    mac: self.mac,
                    ip,
                    granted: self.now,
                    expires: self.now + u64::from(self.cfg.lease_time),
                    hostname,
                };
                let verb = if old.is_some() { "renewed" } else { "leased" };
                (
                    vec![Write::PutLease(lease)],
                    format!("dhcp: {verb} {ip} to {}", self.mac),
                    self.cfg.lease_time,
                )
            }
        };
        Outcome::answer(self.reply(MessageType::Ack, ip, Some(secs))).writing(writes, command)
    }

    fn decline(&self) -> Outcome {
        if self.for_other_server() {
            return Outcome::drop(DropReason::OtherServer);
        }
        let Some(ip) = self.requested() else {
            return Outcome::drop(DropReason::BadRequest);
        };
        let leased = self.state.leases.get(&self.mac).is_some_and(|l| l.ip == ip);
        let reserved = self.state.hosts.get(&self.mac).is_some_and(|h| h.ip == ip);
        // Only the address this server gave the client: a client cannot take others' away.
        if !leased && !reserved && !self.dynamic_ok(ip) {
            return Outcome::drop(DropReason::BadRequest);
        }
        let mut writes = Vec::new();
        if leased {
            writes.push(Write::DelLease(self.mac));
        }
        writes.push(Write::PutDeclined(Declined {
            ip,
            mac: self.mac,
            at: self.now,
        }));
        Outcome::verdict(Verdict::Quiet).writing(
            writes,
            format!("dhcp: {} declined {ip} (another host answers on it)", self.mac),
        )
    }

    fn release(&self) -> Outcome {
        if self.for_other_server() {
            return Outcome::drop(DropReason::OtherServer);
        }
        let ip = self.msg.ciaddr();
        if self.state.leases.get(&self.mac).is_none_or(|l| l.ip != ip) {
            return Outcome::drop(DropReason::BadRequest);
        }
        Outcome::verdict(Verdict::Quiet).writing(
            vec![Write::DelLease(self.mac)],
            format!("dhcp: {} released {ip}", self.mac),
        )
    }

    /// DHCPINFORM: the client has an address and wants the rest; no lease (RFC 2131 3.4).
    /// The ACK goes to ciaddr, as every ACK to a client with one does.
    fn inform(&self) -> Outcome {
        let ciaddr = self.msg.ciaddr();
        if !self.cfg.net.contains(&ciaddr) || ciaddr.is_unspecified() {
            return Outcome::drop(DropReason::BadRequest);
        }
        Outcome::answer(self.reply(MessageType::Ack, Ipv4Addr::UNSPECIFIED, None))
    }

    /// A reply's fixed fields (RFC 2131 table 3) and the options every reply carries: its
    /// type, the server identifier, and the client identifier echoed (RFC 6842).
    fn header(&self, t: MessageType, ciaddr: Ipv4Addr, yiaddr: Ipv4Addr) -> v4::Message {
        let req = self.msg;
        let mut m = v4::Message::new_with_id(
            req.xid(),
            ciaddr,
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            req.giaddr(),
            &self.mac.0,
        );
        m.set_opcode(v4::Opcode::BootReply).set_flags(req.flags());
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(t));
        o.insert(DhcpOption::ServerIdentifier(self.cfg.server));
        if let Some(DhcpOption::ClientIdentifier(id)) = req.opts().get(OptionCode::ClientIdentifier) {
            o.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        m
    }

    /// The name the lease carries: the reservation's, else the client's if it is valid.
    fn hostname(&self) -> Option<String> {
        if let Some(h) = self.state.hosts.get(&self.mac) {
            return h.name.clone();
        }
        match self.msg.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(n)) if valid_name(n) => Some(n.clone()),
            _ => None,
        }
    }

    /// An OFFER or ACK: the header, the lease times, then the options the client's
    /// parameter request list asks for (all of them if it sent none).
    fn reply(&self, t: MessageType, yiaddr: Ipv4Addr, lease: Option<u32>) -> Reply {
        let req = self.msg;
        let ciaddr = if t == MessageType::Ack {
            req.ciaddr()
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let mut m = self.header(t, ciaddr, yiaddr);
        let o = m.opts_mut();
        if let Some(secs) = lease {
            o.insert(DhcpOption::AddressLeaseTime(secs));
            o.insert(DhcpOption::Renewal(secs / 2));
            o.insert(DhcpOption::Rebinding((u64::from(secs) * 7 / 8) as u32));
        }
        let asked: Option<&Vec<OptionCode>> = match req.opts().get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(list)) => Some(list),
            _ => None,
        };
        let wants = |code| asked.is_none_or(|l| l.contains(&code));
        let cfg = self.cfg;
        let mut offer = |opt: DhcpOption| {
            if wants(OptionCode::from(&opt)) {
                o.insert(opt);
            }
        };
        offer(DhcpOption::SubnetMask(cfg.net.netmask()));
        offer(DhcpOption::Router(vec![cfg.server]));
        offer(DhcpOption::BroadcastAddr(cfg.net.broadcast()));
        if !cfg.dns.is_empty() {
            offer(DhcpOption::DomainNameServer(cfg.dns.clone()));
        }
        if let Some(d) = &cfg.domain {
            offer(DhcpOption::DomainName(d.clone()));
        }
        if let Some(mtu) = cfg.mtu {
            offer(DhcpOption::InterfaceMtu(mtu));
        }
        if !yiaddr.is_unspecified()
            && let Some(name) = self.state.hosts.get(&self.mac).and_then(|h| h.name.clone())
        {
            offer(DhcpOption::Hostname(name));
        }
        let to = if !req.giaddr().is_unspecified() {
            Dest::Relay(req.giaddr())
        } else if !ciaddr.is_unspecified() {
            Dest::Link(Link::Unicast {
                mac: self.mac.0,
                ip: ciaddr,
            })
        } else if req.flags().broadcast() {
            Dest::Link(Link::Broadcast)
        } else {
            Dest::Link(Link::Unicast {
                mac: self.mac.0,
                ip: yiaddr,
            })
        };
        Reply { msg: m, to }
    }

    /// A NAK is broadcast (RFC 2131 4.1): the client may have no usable address. Through a
    /// relay it goes to the relay, which broadcasts it (the header keeps giaddr).
    fn nak(&self, why: &str) -> Outcome {
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let mut m = self.header(MessageType::Nak, unspecified, unspecified);
        m.opts_mut().insert(DhcpOption::Message(why.to_owned()));
        let giaddr = self.msg.giaddr();
        Outcome::answer(Reply {
            msg: m,
            to: if giaddr.is_unspecified() {
                Dest::Link(Link::Broadcast)
            } else {
                Dest::Relay(giaddr)
            },
        })
    }
}
