//! The elastic-IP lifecycle as pure functions: each operator verb checks the state and returns
//! the writes that carry it out, or a [`Refusal`] that changes nothing. The kernel work a
//! change needs is planned from the writes by `kernel::plan`, so the whole lifecycle is tested
//! without a kernel.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    model::rate::{LimitChange, RateError, RateLimit},
    model::{ByMac, Eip, Lease, Mac, Range, Reservation, Source, State, Write, is_usable, usable},
};

/// What reservations, leases and pools must fit: the bridge's subnet and address, the number
/// of statistics slots (the dataplane's binding capacity), the size of the dataplane's VM
/// table, and the DHCP dynamic range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub private: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// `--max-bindings`: the dataplane's binding capacity (its statistics slots).
    pub max_bindings: u32,
    /// `--max-vms`: VM table entries, one per reservation and one per dynamic lease.
    pub max_vms: u32,
    pub dynamic: Option<Range>,
}

impl Limits {
    /// The VM table entries kept for dynamic leases: one per address of the range, so a lease
    /// never finds the table full.
    pub fn kept_for_leases(&self) -> u32 {
        self.dynamic.map_or(0, |r| r.size())
    }

    /// How many reservations the VM table has room for.
    pub fn reservation_room(&self) -> u32 {
        self.max_vms.saturating_sub(self.kept_for_leases())
    }

    fn vm_table_full(&self) -> Refusal {
        Refusal::VmTableFull {
            capacity: self.max_vms,
            kept: self.kept_for_leases(),
        }
    }

    /// Whether `reserved` reservations fit the VM table beside the dynamic range's share.
    pub fn fits(&self, reserved: usize) -> bool {
        reserved as u64 <= u64::from(self.reservation_room())
    }

    /// Room for one more reservation beside `reserved`.
    fn check_room(&self, reserved: usize) -> Result<(), Refusal> {
        if !self.fits(reserved + 1) {
            return Err(self.vm_table_full());
        }
        Ok(())
    }
}

/// A VM as the operator names it: a reservation's host name, MAC or private IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    Ip(Ipv4Addr),
    Mac(Mac),
    Name(String),
}

impl FromStr for Target {
    type Err = Refusal;
    fn from_str(s: &str) -> Result<Self, Refusal> {
        if let Ok(ip) = s.parse() {
            Ok(Target::Ip(ip))
        } else if let Ok(mac) = s.parse() {
            Ok(Target::Mac(mac))
        } else if valid_name(s) {
            Ok(Target::Name(s.to_owned()))
        } else {
            Err(Refusal::BadTarget(s.to_owned()))
        }
    }
}

impl TryFrom<String> for Target {
    type Error = Refusal;
    fn try_from(s: String) -> Result<Self, Refusal> {
        s.parse()
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(ip) => write!(f, "{ip}"),
            Target::Mac(mac) => write!(f, "{mac}"),
            Target::Name(n) => f.write_str(n),
        }
    }
}

/// A host name as DHCP and DNS take it: labels of letters, digits and inner hyphens.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.parse::<Ipv4Addr>().is_err()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Why a command was refused. Each message is the one sentence the CLI prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    #[error("{0} is not in any pool")]
    NotInPool(Ipv4Addr),
    #[error("{0:?} is not a host name, MAC or IPv4 address")]
    BadTarget(String),
    #[error("no reservation matches {0}")]
    UnknownTarget(String),
    #[error("{0} is already allocated")]
    AlreadyAllocated(Ipv4Addr),
    #[error("{0} is not allocated")]
    NotAllocated(Ipv4Addr),
    #[error("{0} is not bound")]
    NotBound(Ipv4Addr),
    #[error("{eip} is bound to {owner}; refusing to move it (--no-move)")]
    WouldMove { eip: Ipv4Addr, owner: String },
    #[error("{host} already has {eip} bound; unbind it first (one elastic IP per VM)")]
    HostHasEip { host: String, eip: Ipv4Addr },
    #[error("no free address left in the pools")]
    PoolsExhausted,
    #[error("all {0} binding slots of the dataplane are in use")]
    SlotsExhausted(u32),
    #[error(
        "the VM table is full: {capacity} entries (--max-vms), {kept} of them kept for the dynamic range's leases"
    )]
    VmTableFull { capacity: u32, kept: u32 },
    #[error("{ip} is outside the bridge subnet {net}")]
    OutsideSubnet { ip: Ipv4Addr, net: Ipv4Net },
    #[error("{0} is the bridge's own, network or broadcast address")]
    ReservedIp(Ipv4Addr),
    #[error("{ip} is already reserved for {owner}")]
    IpTaken { ip: Ipv4Addr, owner: String },
    #[error("{0} already has a reservation; delete it first")]
    MacTaken(Mac),
    #[error("the name {0} is already used by another reservation")]
    NameTaken(String),
    #[error("{0:?} is not a valid host name (letters, digits, inner hyphens, dots)")]
    BadName(String),
    #[error("{0} comes from the hosts file; change it there")]
    FromFile(Mac),
    #[error("pool {new} overlaps {existing}")]
    PoolOverlaps { new: Ipv4Net, existing: Ipv4Net },
    #[error("pool {0} overlaps the bridge subnet")]
    PoolIsPrivate(Ipv4Net),
    #[error("pool {pool} overlaps {range} ({what}), which is never a public address")]
    PoolNotPublic {
        pool: Ipv4Net,
        range: Ipv4Net,
        what: &'static str,
    },
    #[error(
        "pool {pool} overlaps {net}, an address of this host's interfaces; binding it would take the host's own address"
    )]
    PoolOnHost { pool: Ipv4Net, net: Ipv4Net },
    #[error("{0} is not a unicast MAC (multicast, broadcast or all zero); a VM's NIC has a unicast one")]
    NotUnicastMac(Mac),
    #[error("pool {0} does not exist")]
    NoSuchPool(Ipv4Net),
    #[error("pool {pool} still has {eip} bound; unbind it first")]
    PoolInUse { pool: Ipv4Net, eip: Ipv4Addr },
    #[error("{0} is already quarantined")]
    AlreadyQuarantined(String),
    #[error("{0} is not quarantined")]
    NotQuarantined(String),
    #[error(transparent)]
    Rate(#[from] RateError),
}

/// A verb's outcome: what to write, and what to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    pub writes: Vec<Write>,
    pub message: String,
}

fn host_label(h: &Reservation) -> String {
    match &h.name {
        Some(n) => format!("{n} ({})", h.ip),
        None => format!("{} ({})", h.mac, h.ip),
    }
}

fn resolve<'a>(state: &'a State, target: &Target) -> Result<&'a Reservation, Refusal> {
    match target {
        Target::Ip(ip) => state.host_by_ip(*ip),
        Target::Mac(mac) => state.hosts.get(mac),
        Target::Name(n) => state.host_by_name(n),
    }
    .ok_or_else(|| Refusal::UnknownTarget(target.to_string()))
}

mod eips;
mod leases;
mod pools;
mod reservations;

pub use eips::*;
pub use leases::*;
pub use pools::*;
pub use reservations::*;

#[cfg(test)]
mod tests;
