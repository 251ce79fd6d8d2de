//! The records the store keeps (reservations, EIPs, leases, declined addresses), the ranges
//! the DHCP settings name, and the [`Write`]s a change is made of.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{Mac, RateLimit};

/// Where a reservation came from: the hosts file owns its lines (a line removed there is a
/// reservation deleted), the CLI owns the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Cli,
    File,
}

/// A reservation: this MAC always gets this private address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub mac: Mac,
    pub name: Option<String>,
    pub ip: Ipv4Addr,
    pub source: Source,
    #[serde(default)]
    pub quarantined: bool,
}

/// An allocated elastic IP. `slot` indexes its per-CPU counters in the dataplane and stays
/// with the address from allocation to release, so moves keep the counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eip {
    pub addr: Ipv4Addr,
    pub slot: u32,
    /// The reservation (by MAC) it is bound to.
    pub bound: Option<Mac>,
    /// Its bandwidth limit toward the VM, if any. A limit belongs to the EIP: it stays when
    /// the EIP moves and while it is unbound. (Absent from records of versions before
    /// limits, and from records of unlimited EIPs.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_in: Option<RateLimit>,
    /// ...and from the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_out: Option<RateLimit>,
}

/// A DHCP lease: `mac` holds `ip` until `expires` (seconds since the Unix epoch, wall clock, so
/// it means the same after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// When the lease was last granted or renewed.
    pub granted: u64,
    pub expires: u64,
    /// The reservation's name, else the name the client sent (if it is a valid host name).
    pub hostname: Option<String>,
}

/// An address a client declined (RFC 2131 DHCPDECLINE: something else answers on it). It is
/// not offered again until the back-off has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declined {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub at: u64,
}

/// The addresses `--dhcp-range` hands out to MACs without a reservation, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Range {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    /// How many addresses it holds (at least one).
    pub fn size(&self) -> u32 {
        (self.end.to_bits() - self.start.to_bits()).saturating_add(1)
    }

    /// The `i`-th address, wrapping around.
    pub fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.start.to_bits() + i % self.size())
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for Range {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').ok_or_else(|| {
            format!("{s:?} is not a range (expected START-END, like 192.168.6.100-192.168.6.199)")
        })?;
        let start: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let end: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not an IPv4 address"))?;
        if start > end {
            return Err(format!("the range {s} ends before it starts"));
        }
        Ok(Range { start, end })
    }
}

/// One record written to (or removed from) the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    PutPool(Ipv4Net),
    DelPool(Ipv4Net),
    PutReservation(Reservation),
    DelReservation(Mac),
    PutEip(Eip),
    DelEip(Ipv4Addr),
    PutLease(Lease),
    DelLease(Mac),
    PutDeclined(Declined),
    DelDeclined(Ipv4Addr),
}

/// What the kernel must hold for one bound EIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub private: Ipv4Addr,
    /// The binding maps' slot value: the EIP's slot, with
    /// [`eip_common::maps::SLOT_LIMITED`] when it has a limit either way.
    pub slot: u32,
}
