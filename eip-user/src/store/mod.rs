//! Durable state in redb: one ACID write transaction per change, holding the records it writes
//! and its history entry, committed (fsync) before the kernel is touched.
//!
//! Why redb: pure Rust (no C toolchain, no second build system), a single file with a process
//! lock (a second daemon on the same directory is refused), copy-on-write B-trees that are
//! crash-safe by construction, and typed tables that fit this small key/value state. SQL would
//! buy nothing here: every query is by key or a full scan.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::model::{Declined, Eip, Lease, Mac, Reservation, State, Write};

const POOLS: TableDefinition<&str, ()> = TableDefinition::new("pools");
const HOSTS: TableDefinition<&str, &str> = TableDefinition::new("hosts");
const EIPS: TableDefinition<u32, &str> = TableDefinition::new("eips");
const LEASES: TableDefinition<&str, &str> = TableDefinition::new("leases");
const DECLINED: TableDefinition<u32, &str> = TableDefinition::new("declined");
const HISTORY: TableDefinition<u64, &str> = TableDefinition::new("history");

/// One record as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Record {
    Pool(Ipv4Net),
    /// A reservation (`host` in the history, as `eip host` names it).
    #[serde(rename = "host")]
    Reservation(Reservation),
    Eip(Eip),
    Lease(Lease),
    Declined(Declined),
}

/// One audit-log entry: what the command touched, as it was and as it became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub command: String,
    pub before: Vec<Record>,
    pub after: Vec<Record>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the state database {path} (is another daemon using it?)")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("state database {path}: {what}")]
    Db {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{path} is not an eip state database ({why}); move it away to start an empty store, or put the right file back"
    )]
    NotAStore { path: PathBuf, why: String },
    #[error("state database {path} is closed after a failed write and could not be re-opened yet")]
    Closed { path: PathBuf },
    #[error("state database {path}: record {key} is corrupt")]
    Corrupt {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Store {
    /// `None` after a failed write closed it, until the next write re-opens it.
    db: Option<Database>,
    /// History entries kept (the oldest go first).
    keep: u64,
    path: PathBuf,
    next_seq: u64,
    /// A write failed (a full disk, an I/O error): redb refuses every later one until the
    /// database is re-opened, so the next write re-opens it first.
    reopen: bool,
}

impl Store {
    pub const FILE: &'static str = "eip.redb";
    /// History entries kept unless told otherwise: months of a busy hypervisor's changes,
    /// some tens of megabytes at most.
    pub const DEFAULT_HISTORY: u64 = 100_000;
    const PRUNE_PER_COMMIT: usize = 16;

    /// Keeps at most `keep` history entries (at least one).
    pub fn set_history_keep(&mut self, keep: u64) {
        self.keep = keep.max(1);
    }
    const CACHE_BYTES: usize = 4 << 20;

    /// Opens the store in `dir`, or creates it when the file is missing. A file that is there
    /// but is not a store (zero-length, another program's) is refused: creating a new store
    /// over it would start the daemon with no bindings and wipe them from the kernel.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(Self::FILE);
        let db = Self::open_db(&path)?;
        let mut store = Store {
            db: Some(db),
            keep: Self::DEFAULT_HISTORY,
            path,
            next_seq: 1,
            reopen: false,
        };
        // Create the tables, so reads of a fresh store find them.
        let txn = store.db()?.begin_write().map_err(store.err("begin"))?;
        {
            txn.open_table(POOLS).map_err(store.err("open pools"))?;
            txn.open_table(HOSTS).map_err(store.err("open hosts"))?;
            txn.open_table(EIPS).map_err(store.err("open eips"))?;
            txn.open_table(LEASES).map_err(store.err("open leases"))?;
            txn.open_table(DECLINED).map_err(store.err("open declined"))?;
            let history = txn.open_table(HISTORY).map_err(store.err("open history"))?;
            if let Some((k, _)) = history.last().map_err(store.err("read history"))? {
                store.next_seq = k.value() + 1;
            }
        }
        txn.commit().map_err(store.err("commit"))?;
        Ok(store)
    }

    fn open_db(path: &Path) -> Result<Database, StoreError> {
        // The daemon keeps the whole state in memory and reads the store only when it starts,
        // so redb's page cache (1 GiB by default, filled by every page a commit writes) only
        // grows the resident set.
        let mut builder = Database::builder();
        builder.set_cache_size(Self::CACHE_BYTES);
        let opened = match std::fs::metadata(path) {
            Ok(m) if m.len() == 0 => {
                return Err(StoreError::NotAStore {
                    path: path.to_owned(),
                    why: "it is empty (zero bytes)".into(),
                });
            }
            Ok(_) => builder.open(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => builder.create(path),
            Err(source) => {
                return Err(StoreError::Dir {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        opened.map_err(|source| match source {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => StoreError::NotAStore {
                path: path.to_owned(),
                why,
            },
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) =>
            {
                StoreError::NotAStore {
                    path: path.to_owned(),
                    why: e.to_string(),
                }
            }
            source => StoreError::Open {
                path: path.to_owned(),
                source,
            },
        })
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Closed {
            path: self.path.clone(),
        })
    }

    /// After a failed write: closes the database and opens it again, which clears redb's
    /// failed state (and repairs the file if it must) once the disk has room again.
    fn recover(&mut self) -> Result<(), StoreError> {
        if !self.reopen {
            return Ok(());
        }
        self.db = None;
        let db = Self::open_db(&self.path)?;
        self.db = Some(db);
        self.reopen = false;
        tracing::info!(path = %self.path.display(), "state database re-opened after the failed write");
        Ok(())
    }

    fn err<E: std::error::Error + Send + Sync + 'static>(
        &self,
        what: &'static str,
    ) -> impl Fn(E) -> StoreError {
        let path = self.path.clone();
        move |e| StoreError::Db {
            path: path.clone(),
            what,
            source: Box::new(e),
        }
    }

    fn corrupt(&self, key: String) -> impl FnOnce(serde_json::Error) -> StoreError {
        let path = self.path.clone();
        move |source| StoreError::Corrupt { path, key, source }
    }

    /// Everything but the history.
    pub fn load(&self) -> Result<State, StoreError> {
        let txn = self.db()?.begin_read().map_err(self.err("begin read"))?;
        let mut state = State::default();
        let pools = txn.open_table(POOLS).map_err(self.err("open pools"))?;
        for row in pools.iter().map_err(self.err("read pools"))? {
            let (k, _) = row.map_err(self.err("read pools"))?;
            let net: Ipv4Net = k.value().parse().map_err(|_| StoreError::Db {
                path: self.path.clone(),
                what: "bad pool key",
                source: format!("{:?}", k.value()).into(),
            })?;
            state.pools.insert(net);
        }
        for h in self
            .records::<_, Reservation>(&txn, HOSTS, ("open hosts", "read hosts"), |k| format!("host {k}"))?
        {
            state.hosts.insert(h);
        }
        for e in self.records::<_, Eip>(&txn, EIPS, ("open eips", "read eips"), |k| {
            format!("eip {}", Ipv4Addr::from_bits(k))
        })? {
            state.eips.insert(e);
        }
        for l in self.records::<_, Lease>(&txn, LEASES, ("open leases", "read leases"), |k| {
            format!("lease {k}")
        })? {
            state.leases.insert(l);
        }
        for d in self.records::<_, Declined>(&txn, DECLINED, ("open declined", "read declined"), |k| {
            format!("declined {}", Ipv4Addr::from_bits(k))
        })? {
            state.declined.insert(d.ip, d);
        }
        Ok(state)
    }

    /// Every record of a table of JSON values; `name` says which key a corrupt one is under.
    fn records<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
        &self,
        txn: &redb::ReadTransaction,
        table: TableDefinition<K, &str>,
        (open, read): (&'static str, &'static str),
        name: impl Fn(K::SelfType<'_>) -> String,
    ) -> Result<Vec<T>, StoreError> {
        let table = txn.open_table(table).map_err(self.err(open))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(self.err(read))? {
            let (k, v) = row.map_err(self.err(read))?;
            out.push(serde_json::from_str(v.value()).map_err(self.corrupt(name(k.value())))?);
        }
        Ok(out)
    }

    /// Commits `writes` and their history entry in one durable transaction, and returns the
    /// entry's sequence number.
    pub fn commit(
        &mut self,
        writes: &[Write],
        command: &str,
        before: Vec<Record>,
        after: Vec<Record>,
    ) -> Result<u64, StoreError> {
        self.recover()?;
        let r = self.write(writes, command, before, after);
        if r.is_err() {
            self.reopen = true;
        }
        r
    }

    fn write(
        &mut self,
        writes: &[Write],
        command: &str,
        before: Vec<Record>,
        after: Vec<Record>,
    ) -> Result<u64, StoreError> {
        let entry = Entry {
            seq: self.next_seq,
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            command: command.to_owned(),
            before,
            after,
        };
        let txn = self.db()?.begin_write().map_err(self.err("begin"))?;
        {
            let mut pools = txn.open_table(POOLS).map_err(self.err("open pools"))?;
            let mut hosts = txn.open_table(HOSTS).map_err(self.err("open hosts"))?;
            let mut eips = txn.open_table(EIPS).map_err(self.err("open eips"))?;
            let mut leases = txn.open_table(LEASES).map_err(self.err("open leases"))?;
            let mut declined = txn.open_table(DECLINED).map_err(self.err("open declined"))?;
            for w in writes {
                match w {
                    Write::PutPool(net) => {
                        pools
                            .insert(net.to_string().as_str(), ())
                            .map_err(self.err("write pool"))?;
                    }
                    Write::DelPool(net) => {
                        pools
                            .remove(net.to_string().as_str())
                            .map_err(self.err("delete pool"))?;
                    }
                    Write::PutReservation(h) => {
                        hosts
                            .insert(h.mac.to_string().as_str(), json(h).as_str())
                            .map_err(self.err("write host"))?;
                    }
                    Write::DelReservation(mac) => {
                        hosts
                            .remove(mac.to_string().as_str())
                            .map_err(self.err("delete host"))?;
                    }
                    Write::PutEip(e) => {
                        eips.insert(e.addr.to_bits(), json(e).as_str())
                            .map_err(self.err("write eip"))?;
                    }
                    Write::DelEip(a) => {
                        eips.remove(a.to_bits()).map_err(self.err("delete eip"))?;
                    }
                    Write::PutLease(l) => {
                        leases
                            .insert(l.mac.to_string().as_str(), json(l).as_str())
                            .map_err(self.err("write lease"))?;
                    }
                    Write::DelLease(mac) => {
                        leases
                            .remove(mac.to_string().as_str())
                            .map_err(self.err("delete lease"))?;
                    }
                    Write::PutDeclined(d) => {
                        declined
                            .insert(d.ip.to_bits(), json(d).as_str())
                            .map_err(self.err("write declined"))?;
                    }
                    Write::DelDeclined(a) => {
                        declined
                            .remove(a.to_bits())
                            .map_err(self.err("delete declined"))?;
                    }
                }
            }
            let mut history = txn.open_table(HISTORY).map_err(self.err("open history"))?;
            history
                .insert(entry.seq, json(&entry).as_str())
                .map_err(self.err("write history"))?;
            // Retention: the oldest entries go once there are more than `keep`, a few per
            // commit so that lowering the setting never makes one commit long.
            for _ in 0..Self::PRUNE_PER_COMMIT {
                let first = history
                    .first()
                    .map_err(self.err("read history"))?
                    .map(|(k, _)| k.value());
                match first {
                    Some(first) if entry.seq - first >= self.keep => {
                        history.remove(first).map_err(self.err("prune history"))?;
                    }
                    _ => break,
                }
            }
        }
        txn.commit().map_err(self.err("commit"))?;
        self.next_seq += 1;
        Ok(entry.seq)
    }

    /// The history, oldest first; `limit` keeps the newest entries only.
    pub fn history(&self, limit: Option<usize>) -> Result<Vec<Entry>, StoreError> {
        self.history_page(limit, None)
    }

    /// A page of the history, oldest first: the newest `limit` entries before sequence number
    /// `before` (all of them, or up to the newest, when a bound is `None`).
    pub fn history_page(&self, limit: Option<usize>, before: Option<u64>) -> Result<Vec<Entry>, StoreError> {
        let txn = self.db()?.begin_read().map_err(self.err("begin read"))?;
        let table = txn.open_table(HISTORY).map_err(self.err("open history"))?;
        let mut out = Vec::new();
        let rows = table
            .range(..before.unwrap_or(u64::MAX))
            .map_err(self.err("read history"))?;
        for row in rows.rev() {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let (k, v) = row.map_err(self.err("read history"))?;
            out.push(
                serde_json::from_str(v.value()).map_err(self.corrupt(format!("history {}", k.value())))?,
            );
        }
        out.reverse();
        Ok(out)
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain records (no maps with non-string keys, no floats) serialize")
}

/// The records a change touches, as `state` holds them: for the history, and (as a partial
/// state) for computing the change's kernel effects without copying the whole state. The
/// excerpt with the writes applied is the same excerpt of the state after them.
pub fn excerpt(state: &State, writes: &[Write]) -> State {
    let mut out = State::default();
    let mut macs: Vec<Mac> = Vec::new();
    for w in writes {
        match w {
            Write::PutPool(n) | Write::DelPool(n) => {
                if state.pools.contains(n) {
                    out.pools.insert(*n);
                }
            }
            Write::PutReservation(h) => macs.push(h.mac),
            Write::DelReservation(m) => macs.push(*m),
            Write::PutLease(l) => macs.push(l.mac),
            Write::DelLease(m) => macs.push(*m),
            Write::PutDeclined(d) => {
                if let Some(d) = state.declined.get(&d.ip) {
                    out.declined.insert(d.ip, d.clone());
                }
            }
            Write::DelDeclined(a) => {
                if let Some(d) = state.declined.get(a) {
                    out.declined.insert(d.ip, d.clone());
                }
            }
            Write::PutEip(e) => {
                if let Some(e) = state.eips.get(&e.addr) {
                    out.eips.insert(e.clone());
                }
            }
            Write::DelEip(a) => {
                if let Some(e) = state.eips.get(a) {
                    out.eips.insert(e.clone());
                }
            }
        }
    }
    for m in &macs {
        if let Some(h) = state.hosts.get(m) {
            out.hosts.insert(h.clone());
        }
        if let Some(l) = state.leases.get(m) {
            out.leases.insert(l.clone());
        }
        if let Some(e) = state.eip_of(*m) {
            out.eips.insert(e.clone());
        }
    }
    // The reservations the touched EIPs are bound to, before and after the writes, so
    // `bound()` resolves in the excerpt and in the excerpt with the writes applied.
    let written = writes.iter().filter_map(|w| match w {
        Write::PutEip(e) => e.bound,
        _ => None,
    });
    let owners: Vec<Mac> = out.eips.values().filter_map(|e| e.bound).chain(written).collect();
    for m in owners {
        if let Some(h) = state.hosts.get(&m) {
            out.hosts.insert(h.clone());
        }
    }
    out
}

/// The records of an excerpt, for the history.
pub fn records(s: &State) -> Vec<Record> {
    s.pools
        .iter()
        .map(|p| Record::Pool(*p))
        .chain(s.hosts.values().map(|h| Record::Reservation(h.clone())))
        .chain(s.eips.values().map(|e| Record::Eip(e.clone())))
        .chain(s.leases.values().map(|l| Record::Lease(l.clone())))
        .chain(s.declined.values().map(|d| Record::Declined(d.clone())))
        .collect()
}

#[cfg(test)]
mod tests;
