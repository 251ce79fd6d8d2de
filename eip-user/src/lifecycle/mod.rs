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
    model::{ByMac, Eip, Host, Lease, Mac, Range, Source, State, Write, is_usable, usable},
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

    /// Refuses one more reservation when `reserved` already fill the room.
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

fn host_label(h: &Host) -> String {
    match &h.name {
        Some(n) => format!("{n} ({})", h.ip),
        None => format!("{} ({})", h.mac, h.ip),
    }
}

fn resolve<'a>(state: &'a State, target: &Target) -> Result<&'a Host, Refusal> {
    match target {
        Target::Ip(ip) => state.host_by_ip(*ip),
        Target::Mac(mac) => state.hosts.get(mac),
        Target::Name(n) => state.host_by_name(n),
    }
    .ok_or_else(|| Refusal::UnknownTarget(target.to_string()))
}

/// A new allocation of `addr`: a usable pool address nobody holds, with a free slot.
fn take(state: &State, limits: &Limits, addr: Ipv4Addr) -> Result<Eip, Refusal> {
    let pool = state.pool_of(addr).ok_or(Refusal::NotInPool(addr))?;
    if !is_usable(pool, addr) {
        return Err(Refusal::NotInPool(addr));
    }
    if state.eips.contains_key(&addr) {
        return Err(Refusal::AlreadyAllocated(addr));
    }
    let slot = state
        .free_slot(limits.max_bindings)
        .ok_or(Refusal::SlotsExhausted(limits.max_bindings))?;
    Ok(Eip {
        addr,
        slot,
        bound: None,
        limit_in: None,
        limit_out: None,
    })
}

pub fn alloc(state: &State, limits: &Limits, want: Option<Ipv4Addr>) -> Result<(Ipv4Addr, Change), Refusal> {
    let addr = match want {
        Some(a) => a,
        None => state
            .pools
            .iter()
            .flat_map(|p| usable(*p))
            .find(|a| !state.eips.contains_key(a))
            .ok_or(Refusal::PoolsExhausted)?,
    };
    let eip = take(state, limits, addr)?;
    Ok((
        addr,
        Change {
            writes: vec![Write::PutEip(eip)],
            message: format!("{addr}"),
        },
    ))
}

pub fn release(state: &State, addr: Ipv4Addr) -> Result<Change, Refusal> {
    let e = state.eips.get(&addr).ok_or(Refusal::NotAllocated(addr))?;
    let was = e.bound.and_then(|m| state.hosts.get(&m)).map(host_label);
    Ok(Change {
        writes: vec![Write::DelEip(addr)],
        message: match was {
            Some(h) => format!("released {addr} (was bound to {h})"),
            None => format!("released {addr}"),
        },
    })
}

pub fn bind(
    state: &State,
    limits: &Limits,
    addr: Ipv4Addr,
    target: &Target,
    no_move: bool,
) -> Result<Change, Refusal> {
    let host = resolve(state, target)?;
    let current = state.eips.get(&addr);
    if let Some(other) = state.eip_of(host.mac).filter(|e| e.addr != addr) {
        return Err(Refusal::HostHasEip {
            host: host_label(host),
            eip: other.addr,
        });
    }
    let eip = match current {
        Some(e) if e.bound == Some(host.mac) => {
            return Ok(Change {
                writes: vec![],
                message: format!("{addr} is already bound to {}", host_label(host)),
            });
        }
        Some(e) => {
            if let (true, Some(owner)) = (no_move, e.bound.and_then(|m| state.hosts.get(&m))) {
                return Err(Refusal::WouldMove {
                    eip: addr,
                    owner: host_label(owner),
                });
            }
            e.clone()
        }
        None => take(state, limits, addr)?,
    };
    let moved_from = eip.bound.and_then(|m| state.hosts.get(&m)).map(host_label);
    Ok(Change {
        writes: vec![Write::PutEip(Eip {
            bound: Some(host.mac),
            ..eip
        })],
        message: match moved_from {
            Some(from) => format!("moved {addr} from {from} to {}", host_label(host)),
            None => format!("bound {addr} to {}", host_label(host)),
        },
    })
}

/// [`bind`], and the EIP limited to `limit` both ways (`eip bind --limit`).
pub fn bind_limited(
    state: &State,
    limits: &Limits,
    addr: Ipv4Addr,
    target: &Target,
    no_move: bool,
    limit: RateLimit,
) -> Result<Change, Refusal> {
    let mut change = bind(state, limits, addr, target, no_move)?;
    let mut eip = match change.writes.pop() {
        Some(Write::PutEip(e)) => e,
        // Already bound there: the record as it is.
        _ => state
            .eips
            .get(&addr)
            .cloned()
            .ok_or(Refusal::NotAllocated(addr))?,
    };
    eip.limit_in = Some(limit);
    eip.limit_out = Some(limit);
    if state.eips.get(&addr) != Some(&eip) {
        change.message += &format!(", limited to {}", describe_limit(&eip));
        change.writes.push(Write::PutEip(eip));
    }
    Ok(change)
}

/// Sets, changes or removes an EIP's limit, each way on its own (`eip limit`). A pool
/// address not allocated yet is allocated with it, as `bind` allocates.
pub fn limit(
    state: &State,
    limits: &Limits,
    addr: Ipv4Addr,
    inbound: LimitChange,
    outbound: LimitChange,
) -> Result<Change, Refusal> {
    let (eip, new) = match state.eips.get(&addr) {
        Some(e) => (e.clone(), false),
        None => (take(state, limits, addr)?, true),
    };
    let next = Eip {
        limit_in: inbound.apply(eip.limit_in),
        limit_out: outbound.apply(eip.limit_out),
        ..eip.clone()
    };
    let limit = describe_limit(&next);
    if !new && next == eip {
        return Ok(Change {
            writes: vec![],
            message: format!("{addr} already has {limit}"),
        });
    }
    let message = match (next.limit_in, next.limit_out) {
        (None, None) => format!("{addr} has no limit"),
        _ => format!("limited {addr} to {limit}"),
    };
    Ok(Change {
        writes: vec![Write::PutEip(next)],
        message: if new {
            format!("allocated {addr}; {message}")
        } else {
            message
        },
    })
}

/// An EIP's limit in words: "20mbit (burst 128kb) both ways", "in ..., out ...", "no limit".
pub fn describe_limit(e: &Eip) -> String {
    let show = |l: Option<RateLimit>| l.map_or_else(|| "no limit".to_owned(), |l| l.to_string());
    match (e.limit_in, e.limit_out) {
        (None, None) => "no limit".into(),
        (a, b) if a == b => format!("{} both ways", show(a)),
        (a, b) => format!("in {}, out {}", show(a), show(b)),
    }
}

pub fn unbind(state: &State, addr: Ipv4Addr) -> Result<Change, Refusal> {
    let e = state.eips.get(&addr).ok_or(Refusal::NotAllocated(addr))?;
    if e.bound.is_none() {
        return Err(Refusal::NotBound(addr));
    }
    Ok(Change {
        writes: vec![Write::PutEip(Eip {
            bound: None,
            ..e.clone()
        })],
        message: format!("unbound {addr}"),
    })
}

/// Who holds an address or a name: what a reservation is checked against.
trait Holders {
    fn ip_holder(&self, ip: Ipv4Addr) -> Option<Mac>;
    fn name_holder(&self, name: &str) -> Option<Mac>;
}

impl Holders for State {
    fn ip_holder(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.host_by_ip(ip).map(|h| h.mac)
    }

    fn name_holder(&self, name: &str) -> Option<Mac> {
        self.host_by_name(name).map(|h| h.mac)
    }
}

/// The reservations a hosts-file sync builds up, indexed by name too, so that a file of N
/// lines is checked in N log N steps rather than N².
struct Building {
    hosts: ByMac<Host>,
    by_name: HashMap<String, Mac>,
}

impl Building {
    fn new(hosts: impl Iterator<Item = Host>) -> Self {
        let mut b = Building {
            hosts: ByMac::default(),
            by_name: HashMap::new(),
        };
        hosts.for_each(|h| b.insert(h));
        b
    }

    fn insert(&mut self, h: Host) {
        if let Some(n) = &h.name {
            self.by_name.insert(n.clone(), h.mac);
        }
        self.hosts.insert(h);
    }
}

impl Holders for Building {
    fn ip_holder(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.hosts.at(ip).next().map(|h| h.mac)
    }

    fn name_holder(&self, name: &str) -> Option<Mac> {
        self.by_name.get(name).copied()
    }
}

/// Checks a reservation against the subnet and the other reservations (a record of the
/// same MAC is the one it replaces).
fn check_host(others: &impl Holders, limits: &Limits, host: &Host) -> Result<(), Refusal> {
    // The group bit, or nothing at all: no NIC sends from such an address.
    if host.mac.0 == [0; 6] || host.mac.0[0] & 1 != 0 {
        return Err(Refusal::NotUnicastMac(host.mac));
    }
    let net = limits.private;
    if !net.contains(&host.ip) {
        return Err(Refusal::OutsideSubnet { ip: host.ip, net });
    }
    if host.ip == limits.gateway || host.ip == net.network() || host.ip == net.broadcast() {
        return Err(Refusal::ReservedIp(host.ip));
    }
    if let Some(owner) = others.ip_holder(host.ip).filter(|o| *o != host.mac) {
        return Err(Refusal::IpTaken {
            ip: host.ip,
            owner: owner.to_string(),
        });
    }
    if let Some(name) = &host.name {
        if !valid_name(name) {
            return Err(Refusal::BadName(name.clone()));
        }
        if others.name_holder(name).is_some_and(|o| o != host.mac) {
            return Err(Refusal::NameTaken(name.clone()));
        }
    }
    Ok(())
}

pub fn host_add(
    state: &State,
    limits: &Limits,
    mac: Mac,
    ip: Ipv4Addr,
    name: Option<String>,
) -> Result<Change, Refusal> {
    if state.hosts.contains_key(&mac) {
        return Err(Refusal::MacTaken(mac));
    }
    let host = Host {
        mac,
        name,
        ip,
        source: Source::Cli,
        quarantined: false,
    };
    check_host(state, limits, &host)?;
    limits.check_room(state.hosts.len())?;
    Ok(Change {
        message: format!("reserved {ip} for {mac}"),
        writes: with_stale_leases(state, limits, vec![Write::PutHost(host)]),
    })
}

/// The leases a state no longer backs: a reserved MAC's lease of another address (its
/// reservation changed), and a lease of an address that is neither the MAC's reservation nor
/// a free address of the dynamic range. Such a client is NAKed on its next renewal.
pub fn stale_leases(state: &State, limits: &Limits) -> Vec<Write> {
    let reserved: BTreeSet<Ipv4Addr> = state.hosts.values().map(|h| h.ip).collect();
    state
        .leases
        .values()
        .filter(|l| match state.hosts.get(&l.mac) {
            Some(h) => h.ip != l.ip,
            None => !limits.dynamic.is_some_and(|r| r.contains(l.ip)) || reserved.contains(&l.ip),
        })
        .map(|l| Write::DelLease(l.mac))
        .collect()
}

/// `writes`, then the lease deletions the state after them calls for.
fn with_stale_leases(state: &State, limits: &Limits, mut writes: Vec<Write>) -> Vec<Write> {
    let mut next = state.clone();
    next.apply(&writes);
    writes.extend(stale_leases(&next, limits));
    writes
}

/// Deleting a reservation recycles its EIP: unbound and returned to the pool.
fn del_host_writes(state: &State, mac: Mac) -> Vec<Write> {
    let mut writes = vec![Write::DelHost(mac)];
    if let Some(e) = state.eip_of(mac) {
        writes.push(Write::DelEip(e.addr));
    }
    writes
}

pub fn host_del(state: &State, limits: &Limits, key: &str) -> Result<Change, Refusal> {
    let target = match key.parse::<Mac>() {
        Ok(mac) => Target::Mac(mac),
        Err(_) if valid_name(key) => Target::Name(key.to_owned()),
        Err(_) => return Err(Refusal::BadTarget(key.to_owned())),
    };
    let host = resolve(state, &target)?;
    if host.source == Source::File {
        return Err(Refusal::FromFile(host.mac));
    }
    let writes = with_stale_leases(state, limits, del_host_writes(state, host.mac));
    let mut message = format!("deleted the reservation of {}", host_label(host));
    if let Some(e) = state.eip_of(host.mac) {
        message += &format!("; {} returned to the pool", e.addr);
    }
    Ok(Change { writes, message })
}

/// One hosts-file line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHost {
    pub line: usize,
    pub mac: Mac,
    pub name: Option<String>,
    pub ip: Ipv4Addr,
}

/// Makes the file-owned reservations equal to the file's valid lines. A line that conflicts
/// (with the subnet, a CLI reservation, an earlier line) is skipped and reported; the rest
/// applies. Reservations no longer in the file are deleted and their EIPs recycled.
///
/// When the VM table has no room left, the lines of new MACs are skipped, wherever they are
/// in the file: a reservation that already exists keeps its place (and its EIP).
pub fn sync_file_hosts(
    state: &State,
    limits: &Limits,
    lines: &[FileHost],
) -> (Change, Vec<(usize, Refusal)>) {
    sync_file_hosts_holding(state, limits, lines, &BTreeSet::new())
}

/// The file-owned reservations that `lines` no longer hold: what a sync would delete.
pub fn gone_from_file(state: &State, lines: &[FileHost]) -> BTreeSet<Mac> {
    let in_file: BTreeSet<Mac> = lines.iter().map(|l| l.mac).collect();
    state
        .hosts
        .values()
        .filter(|h| h.source == Source::File && !in_file.contains(&h.mac))
        .map(|h| h.mac)
        .collect()
}

/// [`sync_file_hosts`], keeping the file's reservations of `hold` although their lines are
/// gone (the file may be half-written): they stay as they are, and no line may take their
/// address or name meanwhile.
pub fn sync_file_hosts_holding(
    state: &State,
    limits: &Limits,
    lines: &[FileHost],
    hold: &BTreeSet<Mac>,
) -> (Change, Vec<(usize, Refusal)>) {
    let mut writes = Vec::new();
    let mut rejected = Vec::new();
    let mut in_file = BTreeSet::new();
    // Leave the file's old records out, so a line may take an address another line gave up.
    let (old, cli): (Vec<Host>, Vec<Host>) = state
        .hosts
        .values()
        .cloned()
        .partition(|h| h.source == Source::File && !hold.contains(&h.mac));
    let mut next = Building::new(cli.into_iter());
    let from_file = |m: &Mac| state.hosts.get(m).is_some_and(|h| h.source == Source::File);
    let kept: BTreeSet<Mac> = lines.iter().map(|l| l.mac).filter(|m| from_file(m)).collect();
    // The reservations new MACs may still take: the room, less the CLI's and the kept ones.
    let mut room_for_new = (limits.reservation_room() as usize).saturating_sub(next.hosts.len() + kept.len());
    for l in lines {
        let quarantined = state.hosts.get(&l.mac).is_some_and(|h| h.quarantined);
        let host = Host {
            mac: l.mac,
            name: l.name.clone(),
            ip: l.ip,
            source: Source::File,
            quarantined,
        };
        let owned_by_cli = next.hosts.get(&l.mac).is_some_and(|h| h.source == Source::Cli);
        let new = !kept.contains(&l.mac);
        let check = if owned_by_cli || in_file.contains(&l.mac) {
            Err(Refusal::MacTaken(l.mac))
        } else if new && room_for_new == 0 {
            Err(limits.vm_table_full())
        } else {
            check_host(&next, limits, &host)
        };
        match check {
            Ok(()) => {
                if new {
                    room_for_new -= 1;
                }
                in_file.insert(l.mac);
                next.insert(host);
            }
            Err(r) => rejected.push((l.line, r)),
        }
    }
    for h in &old {
        match next.hosts.get(&h.mac) {
            None => writes.extend(del_host_writes(state, h.mac)),
            // A VM whose reserved address changed keeps its EIP: the binding follows the
            // reservation (see `effects`).
            Some(n) if n != h => writes.push(Write::PutHost(n.clone())),
            Some(_) => {}
        }
    }
    for mac in &in_file {
        if !from_file(mac) {
            writes.push(Write::PutHost(next.hosts[mac].clone()));
        }
    }
    let writes = with_stale_leases(state, limits, writes);
    let message = format!(
        "hosts file: {} reservations, {} lines skipped",
        in_file.len(),
        rejected.len()
    );
    (Change { writes, message }, rejected)
}

/// Adds pool `net`, refused when it overlaps another pool, the bridge subnet, a range that is
/// never public, or an address or subnet of the host's interfaces (`host`, the daemon's EIP
/// aliases left out): binding such an address would take it from the host, the hypervisor's
/// own uplink included.
pub fn pool_add(state: &State, limits: &Limits, net: Ipv4Net, host: &[Ipv4Net]) -> Result<Change, Refusal> {
    let net = net.trunc();
    if let Some(existing) = state
        .pools
        .iter()
        .find(|p| p.contains(&net.network()) || net.contains(&p.network()))
    {
        return Err(Refusal::PoolOverlaps {
            new: net,
            existing: *existing,
        });
    }
    if overlaps(net, limits.private) {
        return Err(Refusal::PoolIsPrivate(net));
    }
    for (range, what) in NOT_PUBLIC {
        let range: Ipv4Net = range.parse().expect("a valid constant range");
        if overlaps(net, range) {
            return Err(Refusal::PoolNotPublic {
                pool: net,
                range,
                what,
            });
        }
    }
    if let Some(h) = host.iter().find(|h| overlaps(net, h.trunc())) {
        return Err(Refusal::PoolOnHost { pool: net, net: *h });
    }
    Ok(Change {
        writes: vec![Write::PutPool(net)],
        message: format!("added pool {net}"),
    })
}

/// Ranges a pool may never overlap: no address in them is a public one (RFC 6890).
const NOT_PUBLIC: [(&str, &str); 5] = [
    ("0.0.0.0/8", "this network"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
];

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Deleting a pool releases its allocated (unbound) addresses with it.
pub fn pool_del(state: &State, net: Ipv4Net) -> Result<Change, Refusal> {
    let net = net.trunc();
    if !state.pools.contains(&net) {
        return Err(Refusal::NoSuchPool(net));
    }
    let inside: Vec<&Eip> = state.eips.values().filter(|e| net.contains(&e.addr)).collect();
    if let Some(e) = inside.iter().find(|e| e.bound.is_some()) {
        return Err(Refusal::PoolInUse {
            pool: net,
            eip: e.addr,
        });
    }
    let mut writes: Vec<Write> = inside.iter().map(|e| Write::DelEip(e.addr)).collect();
    writes.push(Write::DelPool(net));
    Ok(Change {
        message: format!(
            "deleted pool {net} ({} allocated addresses released)",
            inside.len()
        ),
        writes,
    })
}

pub fn quarantine(state: &State, target: &Target, on: bool) -> Result<Change, Refusal> {
    let host = resolve(state, target)?;
    match (host.quarantined, on) {
        (true, true) => return Err(Refusal::AlreadyQuarantined(host_label(host))),
        (false, false) => return Err(Refusal::NotQuarantined(host_label(host))),
        _ => {}
    }
    Ok(Change {
        writes: vec![Write::PutHost(Host {
            quarantined: on,
            ..host.clone()
        })],
        message: format!(
            "{} {}",
            if on {
                "quarantined"
            } else {
                "released from quarantine"
            },
            host_label(host)
        ),
    })
}

/// How long a declined address stays out of offers (dnsmasq's DECLINE_BACKOFF).
pub const DECLINE_BACKOFF: u64 = 600;

/// What time ends: leases past their expiry, and declined addresses past the back-off.
pub fn expire(state: &State, now: u64) -> Change {
    let leases: Vec<&Lease> = state.leases.values().filter(|l| l.expires <= now).collect();
    let declined: Vec<Ipv4Addr> = state
        .declined
        .values()
        .filter(|d| d.at.saturating_add(DECLINE_BACKOFF) <= now)
        .map(|d| d.ip)
        .collect();
    let mut parts = Vec::new();
    if !leases.is_empty() {
        let list: Vec<String> = leases.iter().map(|l| format!("{} ({})", l.ip, l.mac)).collect();
        parts.push(format!("leases expired: {}", list.join(", ")));
    }
    if !declined.is_empty() {
        let list: Vec<String> = declined.iter().map(Ipv4Addr::to_string).collect();
        parts.push(format!("declined addresses usable again: {}", list.join(", ")));
    }
    Change {
        writes: leases
            .iter()
            .map(|l| Write::DelLease(l.mac))
            .chain(declined.into_iter().map(Write::DelDeclined))
            .collect(),
        message: parts.join("; "),
    }
}

/// What a lease script is told (dnsmasq's `--dhcp-script` verbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseVerb {
    Add,
    Old,
    Del,
}

impl LeaseVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseVerb::Add => "add",
            LeaseVerb::Old => "old",
            LeaseVerb::Del => "del",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEvent {
    pub verb: LeaseVerb,
    pub lease: Lease,
}

/// The lease events a change makes, from the leases it touched: a new lease is `add`, a
/// renewal of the same address `old`, an ended one `del` (an address change is `del`, `add`).
pub fn lease_events(before: &State, after: &State, writes: &[Write]) -> Vec<LeaseEvent> {
    let macs: BTreeSet<Mac> = writes
        .iter()
        .filter_map(|w| match w {
            Write::PutLease(l) => Some(l.mac),
            Write::DelLease(m) => Some(*m),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for mac in macs {
        let (l0, l1) = (before.leases.get(&mac), after.leases.get(&mac));
        let event = |verb, l: &Lease| LeaseEvent {
            verb,
            lease: l.clone(),
        };
        match (l0, l1) {
            (Some(a), Some(b)) if a.ip == b.ip => out.push(event(LeaseVerb::Old, b)),
            (a, b) => {
                out.extend(a.map(|a| event(LeaseVerb::Del, a)));
                out.extend(b.map(|b| event(LeaseVerb::Add, b)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
