//! Reservations (`eip host`, and the hosts file's lines), and quarantine: what a VM is
//! known by, and whether its traffic may pass.

use super::*;

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
    hosts: ByMac<Reservation>,
    by_name: HashMap<String, Mac>,
}

impl Building {
    fn new(hosts: impl Iterator<Item = Reservation>) -> Self {
        let mut b = Building {
            hosts: ByMac::default(),
            by_name: HashMap::new(),
        };
        hosts.for_each(|h| b.insert(h));
        b
    }

    fn insert(&mut self, h: Reservation) {
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
fn check_host(others: &impl Holders, limits: &Limits, host: &Reservation) -> Result<(), Refusal> {
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
    let host = Reservation {
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
        writes: with_stale_leases(state, limits, vec![Write::PutReservation(host)]),
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
    let mut writes = vec![Write::DelReservation(mac)];
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
pub struct HostsLine {
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
    lines: &[HostsLine],
) -> (Change, Vec<(usize, Refusal)>) {
    sync_file_hosts_holding(state, limits, lines, &BTreeSet::new())
}

/// The file-owned reservations that `lines` no longer hold: what a sync would delete.
pub fn gone_from_file(state: &State, lines: &[HostsLine]) -> BTreeSet<Mac> {
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
    lines: &[HostsLine],
    hold: &BTreeSet<Mac>,
) -> (Change, Vec<(usize, Refusal)>) {
    let mut writes = Vec::new();
    let mut rejected = Vec::new();
    let mut in_file = BTreeSet::new();
    // Leave the file's old records out, so a line may take an address another line gave up.
    let (old, cli): (Vec<Reservation>, Vec<Reservation>) = state
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
        let host = Reservation {
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
            Some(n) if n != h => writes.push(Write::PutReservation(n.clone())),
            Some(_) => {}
        }
    }
    for mac in &in_file {
        if !from_file(mac) {
            writes.push(Write::PutReservation(next.hosts[mac].clone()));
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

pub fn quarantine(state: &State, target: &Target, on: bool) -> Result<Change, Refusal> {
    let host = resolve(state, target)?;
    match (host.quarantined, on) {
        (true, true) => return Err(Refusal::AlreadyQuarantined(host_label(host))),
        (false, false) => return Err(Refusal::NotQuarantined(host_label(host))),
        _ => {}
    }
    Ok(Change {
        writes: vec![Write::PutReservation(Reservation {
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
