//! The DHCPv4 server on the bridge: fixed addresses from reservations, optional dynamic
//! leases from `--dhcp-range`, leases kept in the daemon's store.
//!
//! - [`wire`]: checks a datagram before dhcproto decodes it, encodes replies as frames;
//! - [`handler`]: the RFC 2131 state machine as a pure function of the state and the clock,
//!   returning the reply, where it goes, and the lease records to commit first;
//! - [`service`]: the socket on the bridge, the commit, the send, the counters;
//! - [`script`]: runs `--lease-script` for each lease event, off the DHCP path.

pub mod handler;
pub mod script;
pub mod service;
pub mod wire;

#[cfg(test)]
mod tests;

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicU64, Ordering},
};

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::model::Range;

/// What the server hands out besides addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The bridge's address: the server identifier and the router.
    pub server: Ipv4Addr,
    /// The bridge's subnet, for the mask and the broadcast address.
    pub net: Ipv4Net,
    pub lease_time: u32,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub range: Option<Range>,
}

/// Why a datagram got no answer. Each has a counter (`eip stats`, `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a BOOTP header and the magic cookie.
    Truncated,
    /// Longer than [`wire::MAX_MESSAGE`].
    Oversized,
    /// A BOOTREPLY (op 2) or an unknown op.
    NotRequest,
    /// Not Ethernet (htype 1, hlen 6).
    NotEthernet,
    BadCookie,
    /// An option runs past the end, has a length its type forbids, or there is no end mark.
    BadOptions,
    NoMessageType,
    /// A message only servers send (OFFER, ACK, NAK...) or an unknown type.
    NotClientMessage,
    /// Came through a relay (giaddr set) outside the bridge's subnet: this server serves its
    /// own bridge only.
    Relayed,
    /// No reservation and no dynamic range (logged once a minute per MAC).
    UnknownMac,
    /// The dynamic range has no address left.
    RangeFull,
    /// The reserved address was declined recently (see `DECLINE_BACKOFF`).
    AddressDeclined,
    /// A REQUEST, DECLINE or RELEASE for another server.
    OtherServer,
    /// An INIT-REBOOT REQUEST from a client this server has no record of (RFC 2131 4.3.2:
    /// stay silent).
    NoRecord,
    /// A REQUEST without the fields its state needs, or a DECLINE or RELEASE of an address
    /// that is not the client's.
    BadRequest,
    /// The lease could not be stored; the client retries.
    StoreFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 16] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::NotRequest,
        DropReason::NotEthernet,
        DropReason::BadCookie,
        DropReason::BadOptions,
        DropReason::NoMessageType,
        DropReason::NotClientMessage,
        DropReason::Relayed,
        DropReason::UnknownMac,
        DropReason::RangeFull,
        DropReason::AddressDeclined,
        DropReason::OtherServer,
        DropReason::NoRecord,
        DropReason::BadRequest,
        DropReason::StoreFailed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::NotRequest => "not_request",
            DropReason::NotEthernet => "not_ethernet",
            DropReason::BadCookie => "bad_cookie",
            DropReason::BadOptions => "bad_options",
            DropReason::NoMessageType => "no_message_type",
            DropReason::NotClientMessage => "not_client_message",
            DropReason::Relayed => "relayed",
            DropReason::UnknownMac => "unknown_mac",
            DropReason::RangeFull => "range_full",
            DropReason::AddressDeclined => "address_declined",
            DropReason::OtherServer => "other_server",
            DropReason::NoRecord => "no_record",
            DropReason::BadRequest => "bad_request",
            DropReason::StoreFailed => "store_failed",
        }
    }
}

/// Message kinds as counted: what clients sent, what the server answered.
pub const RECEIVED: [&str; 5] = ["discover", "request", "decline", "release", "inform"];
pub const SENT: [&str; 3] = ["offer", "ack", "nak"];

/// The server's counters, shared with the API and the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    received: [AtomicU64; RECEIVED.len()],
    sent: [AtomicU64; SENT.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
}

/// A snapshot of [`Stats`], by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    pub received: Vec<(String, u64)>,
    pub sent: Vec<(String, u64)>,
    pub dropped: Vec<(String, u64)>,
}

impl Stats {
    pub fn received(&self, kind: &str) {
        if let Some(i) = RECEIVED.iter().position(|k| *k == kind) {
            self.received[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn sent(&self, kind: &str) {
        if let Some(i) = SENT.iter().position(|k| *k == kind) {
            self.sent[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self, why: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|d| *d == why) {
            self.dropped[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> Counts {
        let read = |names: &mut dyn Iterator<Item = &'static str>, values: &[AtomicU64]| {
            names
                .zip(values)
                .map(|(n, v)| (n.to_owned(), v.load(Ordering::Relaxed)))
                .collect()
        };
        Counts {
            received: read(&mut RECEIVED.iter().copied(), &self.received),
            sent: read(&mut SENT.iter().copied(), &self.sent),
            dropped: read(&mut DropReason::ALL.iter().map(|d| d.name()), &self.dropped),
        }
    }
}

/// Seconds since the Unix epoch: lease times are wall-clock times, so they survive restarts.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The shortest `--lease-time` taken: clients renew at half of it.
pub const MIN_LEASE_TIME: u64 = 4;
