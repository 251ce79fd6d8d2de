//! Following the hosts file: it is applied once it has stopped changing, the reservations gone
//! from it are deleted only once it has stayed unchanged for a while longer, and a change that
//! would delete most of them at once is held until the operator confirms it with SIGHUP.
//! Editors, `cat new > file` and configuration tools rewrite the file in place; what is read
//! in between is not what they meant, and a reservation deleted on such a read releases its EIP
//! for good.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Instant,
};

use tokio::sync::Mutex;

use crate::{
    daemon::hostsfile::{self, Apply, DELETE_SETTLE, Watch},
    engine::Engine,
    kernel::Kernel,
    lifecycle,
    model::Source,
};

/// At most this many bad lines are logged one by one; the rest are counted in one line.
const BAD_LINES_LOGGED: usize = 10;

pub struct Follower {
    path: PathBuf,
    watch: Watch,
    /// The content whose held mass deletion was last warned about.
    warned: Option<u64>,
}

impl Follower {
    /// Reads and applies the file as the daemon starts. Its deletions wait like any other's:
    /// the file may be in the middle of a rewrite as the daemon starts.
    pub async fn start<K: Kernel>(path: &Path, engine: &Mutex<Engine<K>>) -> Follower {
        let mut f = Follower {
            path: path.to_owned(),
            watch: Watch::applied(None, Instant::now(), true),
            warned: None,
        };
        let (digest, held) = f.apply(engine, Apply::HoldDeletions, "start").await;
        f.watch = Watch::applied(digest, Instant::now(), !held);
        f
    }

    /// SIGHUP: the operator says the file is as meant; all of it applies at once.
    pub async fn confirm<K: Kernel>(&mut self, engine: &Mutex<Engine<K>>) {
        let (digest, _) = self.apply(engine, Apply::Confirmed, "SIGHUP").await;
        self.watch = Watch::applied(digest, Instant::now(), true);
    }

    /// Once a second: applies the file when it has settled. Returns whether it did.
    pub async fn tick<K: Kernel>(&mut self, engine: &Mutex<Engine<K>>) -> bool {
        let digest = std::fs::read(&self.path).ok().map(|b| hostsfile::digest(&b));
        let Some(mode) = self.watch.tick(digest, Instant::now()) else {
            return false;
        };
        if let (_, false) = self.apply(engine, mode, "changed").await {
            self.watch.nothing_held();
        }
        true
    }

    /// Reads the file and applies it in `mode`. Returns the digest of what was read, and
    /// whether deletions are held.
    async fn apply<K: Kernel>(
        &mut self,
        engine: &Mutex<Engine<K>>,
        mode: Apply,
        why: &str,
    ) -> (Option<u64>, bool) {
        let file = self.path.display().to_string();
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%file, error = %e, "cannot read the hosts file; reservations unchanged");
                return (None, false);
            }
        };
        let digest = hostsfile::digest(&bytes);
        let (lines, bad) = hostsfile::parse_bytes(&bytes);
        for b in bad.iter().take(BAD_LINES_LOGGED) {
            tracing::warn!(%file, line = b.line, "skipped: {}", b.reason);
        }
        if bad.len() > BAD_LINES_LOGGED {
            tracing::warn!(%file, skipped = bad.len() - BAD_LINES_LOGGED, "more bad lines skipped");
        }
        let mut en = engine.lock().await;
        let gone = lifecycle::gone_from_file(en.state(), &lines);
        let owned = en
            .state()
            .hosts
            .values()
            .filter(|h| h.source == Source::File)
            .count();
        let hold: BTreeSet<_> = match mode {
            Apply::Confirmed => BTreeSet::new(),
            Apply::HoldDeletions => {
                if !gone.is_empty() {
                    tracing::info!(
                        %file,
                        reservations = gone.len(),
                        "gone from the hosts file; deleted once it has been unchanged for {} s",
                        DELETE_SETTLE.as_secs()
                    );
                }
                gone
            }
            Apply::All if hostsfile::suspicious(gone.len(), owned, lines.len()) => {
                if self.warned != Some(digest) {
                    self.warned = Some(digest);
                    tracing::warn!(
                        %file,
                        deleting = gone.len(),
                        of = owned,
                        "the hosts file would delete most of its reservations at once; held as a file caught half-written: send SIGHUP to the daemon to confirm"
                    );
                }
                gone
            }
            Apply::All => BTreeSet::new(),
        };
        let held = !hold.is_empty();
        let (change, rejected) = lifecycle::sync_file_hosts_holding(en.state(), en.limits(), &lines, &hold);
        for (line, r) in rejected.iter().take(BAD_LINES_LOGGED) {
            tracing::warn!(%file, line, "skipped: {r}");
        }
        if rejected.len() > BAD_LINES_LOGGED {
            tracing::warn!(%file, skipped = rejected.len() - BAD_LINES_LOGGED, "more lines skipped");
        }
        let command = format!("hosts file {file} ({why})");
        if let Err(e) = en.run(&command, Ok(change)).await {
            tracing::error!(error = %crate::error_chain(&e), "hosts file reload");
        }
        (Some(digest), held)
    }
}
