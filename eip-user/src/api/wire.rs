//! What travels on the socket: each request's body and each answer, as JSON.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{Declined, Lease, Mac};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub instance: String,
    pub ext: String,
    pub bridge: String,
    pub private: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub pins: String,
    /// How the daemon found the dataplane: fresh, adopted or upgraded.
    pub dataplane: String,
    pub version: String,
    /// The DHCP server's settings, when it runs.
    pub dhcp: Option<DhcpStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DhcpStatus {
    pub lease_time: u32,
    /// The dynamic range, or none (reservations only).
    pub range: Option<String>,
}

/// The DHCP leases and declined addresses, with the daemon's clock to read expiries against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Leases {
    /// Seconds since the Unix epoch.
    pub now: u64,
    pub leases: Vec<LeaseRow>,
    pub declined: Vec<Declined>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRow {
    #[serde(flatten)]
    pub lease: Lease,
    /// Whether the address is the MAC's reservation (else it came from the dynamic range).
    pub reserved: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EipState {
    Allocated,
    Bound,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EipRow {
    pub eip: Ipv4Addr,
    pub state: EipState,
    pub private: Option<Ipv4Addr>,
    pub mac: Option<Mac>,
    pub name: Option<String>,
    pub in_packets: u64,
    pub in_bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
    /// How inbound traffic reaches the VM: "fast" (XDP redirect to its port) or "kernel
    /// (why)"; none while unbound.
    #[serde(default)]
    pub path: Option<String>,
    /// The bandwidth limit toward the VM, bits per second (none: no limit), and its burst.
    #[serde(default)]
    pub limit_in_bps: Option<u64>,
    #[serde(default)]
    pub burst_in_bytes: Option<u64>,
    /// ...and from the VM.
    #[serde(default)]
    pub limit_out_bps: Option<u64>,
    #[serde(default)]
    pub burst_out_bytes: Option<u64>,
    /// What the limit dropped, by direction.
    #[serde(default)]
    pub limit_dropped: LimitDropped,
}

/// Packets and bytes a limit dropped, by direction.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitDropped {
    pub in_packets: u64,
    pub in_bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolRow {
    pub cidr: Ipv4Net,
    pub usable: u64,
    pub allocated: usize,
    pub bound: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub eips: Vec<EipRow>,
    /// Dataplane counters by name (drops by reason among them).
    pub counters: Vec<(String, u64)>,
    /// Packets the leak guard dropped: they would have left the external interface with a
    /// VM's private source (`None`: no guard, nftables missing).
    #[serde(default)]
    pub guard_dropped: Option<u64>,
    /// Frames the bridge ports the fast path redirects to dropped (a veth whose VM end has
    /// no NAPI drops what is redirected to it).
    #[serde(default)]
    pub port_dropped: u64,
    /// The bridge ports (ifindexes) where `eip_port_in` takes the VMs' outbound traffic before
    /// the bridge (see `--no-port-fast-path`).
    #[serde(default)]
    pub port_programs: Vec<u32>,
    /// The DHCP server's counters, when it runs.
    pub dhcp: Option<crate::dhcp::Counts>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AllocReq {
    pub eip: Option<Ipv4Addr>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BindReq {
    pub eip: Ipv4Addr,
    pub target: String,
    #[serde(default)]
    pub no_move: bool,
    /// A RATE to limit the EIP to, both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The SIZE of the limit's burst (default: see `eip_common::limiter::default_burst`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<String>,
}

/// `eip limit`: each direction a RATE, `none` (no limit) or absent (unchanged).
#[derive(Debug, Serialize, Deserialize)]
pub struct LimitReq {
    pub eip: Ipv4Addr,
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<String>,
    #[serde(rename = "out", default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EipReq {
    pub eip: Ipv4Addr,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HostReq {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolReq {
    pub cidr: Ipv4Net,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QuarantineReq {
    pub target: String,
    pub on: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShutdownReq {
    #[serde(default)]
    pub teardown: bool,
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// Entries in the page: [`HISTORY_PAGE`] by default, [`HISTORY_PAGE_MAX`] at most.
    pub limit: Option<usize>,
    /// Only entries with a lower sequence number (the page before one already seen).
    pub before: Option<u64>,
}

/// A history page's default length, and its longest: one reply never holds the whole
/// history (100,000 entries are tens of megabytes).
pub const HISTORY_PAGE: usize = 100;
pub const HISTORY_PAGE_MAX: usize = 10_000;
