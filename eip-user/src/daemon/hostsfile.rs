//! The hosts file: dnsmasq's `--dhcp-hostsfile` line format,
//! `mac,name,ip`, with `#` comments and blank lines. The name may be empty (`mac,,ip`).

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use crate::{
    lifecycle::{HostsLine, valid_name},
    model::Mac,
};

/// A line that does not parse, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// Parses the whole text: the good lines, and the bad ones with their numbers (1-based).
pub fn parse(text: &str) -> (Vec<HostsLine>, Vec<BadLine>) {
    parse_bytes(text.as_bytes())
}

/// As [`parse`], for the file's raw bytes: a line that is not UTF-8 is one bad line, not a
/// file that cannot be read.
pub fn parse_bytes(bytes: &[u8]) -> (Vec<HostsLine>, Vec<BadLine>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let Ok(raw) = std::str::from_utf8(raw) else {
            bad.push(BadLine {
                line,
                reason: "not valid UTF-8".into(),
            });
            continue;
        };
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_line(content) {
            Ok((mac, name, ip)) => good.push(HostsLine { line, mac, name, ip }),
            Err(reason) => bad.push(BadLine { line, reason }),
        }
    }
    (good, bad)
}

fn parse_line(content: &str) -> Result<(Mac, Option<String>, Ipv4Addr), String> {
    let fields: Vec<&str> = content.split(',').map(str::trim).collect();
    let [mac, name, ip] = fields[..] else {
        return Err(format!("expected mac,name,ip but found {} fields", fields.len()));
    };
    let mac: Mac = mac.parse().map_err(|e: crate::model::BadMac| e.to_string())?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let name = match name {
        "" => None,
        n if valid_name(n) => Some(n.to_owned()),
        n => return Err(format!("{n:?} is not a valid host name")),
    };
    Ok((mac, name, ip))
}

/// How long the file must stay unchanged before it is applied: an editor's save or
/// `cat new > file` is a truncate and then writes, and the file read between them is half of
/// itself.
pub const SETTLE: Duration = Duration::from_secs(1);

/// How long the file must stay unchanged before the reservations gone from it are deleted.
/// A deletion releases an EIP for good, so a tool that writes the file in two steps a few
/// seconds apart must not delete what its second step puts back.
pub const DELETE_SETTLE: Duration = Duration::from_secs(5);

/// What to do with the file now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Apply its additions and changes; keep the reservations gone from it for now.
    HoldDeletions,
    /// Apply all of it (deletions that look like a half-written file are still held).
    All,
    /// The operator says the file is as meant (SIGHUP, start): all of it, mass deletions too.
    Confirmed,
}

/// Follows the file's content from tick to tick and says when it is settled enough to apply.
/// Pure: the daemon hands it a digest of the content and the time.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The digest last seen (`None`: unreadable) and since when it has been unchanged.
    seen: Option<u64>,
    since: Instant,
    /// The digest last applied, and whether its deletions were applied too.
    applied: Option<u64>,
    deletions_done: bool,
}

impl Watch {
    /// A watch over content `digest` that was applied at `now` with its deletions held.
    pub fn applied(digest: Option<u64>, now: Instant, deletions_done: bool) -> Watch {
        Watch {
            seen: digest,
            since: now,
            applied: digest,
            deletions_done,
        }
    }

    /// The content seen at `now`: what, if anything, to apply.
    pub fn tick(&mut self, digest: Option<u64>, now: Instant) -> Option<Apply> {
        if digest != self.seen {
            self.seen = digest;
            self.since = now;
            return None;
        }
        // An unreadable (or vanished) file changes nothing.
        digest?;
        let stable = now.saturating_duration_since(self.since);
        if stable < SETTLE {
            return None;
        }
        let delete = stable >= DELETE_SETTLE;
        if digest != self.applied {
            self.applied = digest;
            self.deletions_done = delete;
            return Some(if delete { Apply::All } else { Apply::HoldDeletions });
        }
        if delete && !self.deletions_done {
            self.deletions_done = true;
            return Some(Apply::All);
        }
        None
    }

    /// The applied content had nothing to delete: no later pass is needed for it.
    pub fn nothing_held(&mut self) {
        self.deletions_done = true;
    }
}

/// A digest of the file's content.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Whether deleting `deleting` of the `owned` reservations the file had, leaving it `lines`
/// valid lines, looks like a file caught half-written rather than an edit: more than half
/// of them at once (two or more), or every one (an empty file).
pub fn suspicious(deleting: usize, owned: usize, lines: usize) -> bool {
    deleting >= 2 && deleting * 2 > owned || deleting >= 1 && lines == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_apply_and_bad_ones_are_reported_by_number() {
        let text = "\
# the reference setup's two VMs
52:54:00:00:00:01,vm1,192.168.6.11
  52:54:00:00:00:02 , vm2 , 192.168.6.12   # trailing comment

52:54:00:00:00:03,,192.168.6.13
nonsense
52:54:00:00:00:04,vm4,192.168.6.300
52:54:00:00:00:05,bad name,192.168.6.15
zz:54:00:00:00:06,vm6,192.168.6.16
52:54:00:00:00:07,vm7
";
        let (good, bad) = parse(text);
        assert_eq!(
            good.iter()
                .map(|g| (g.line, g.name.as_deref(), g.ip.octets()[3]))
                .collect::<Vec<_>>(),
            [(2, Some("vm1"), 11), (3, Some("vm2"), 12), (5, None, 13)]
        );
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);
        assert!(
            bad[0].reason.contains("3 fields") || bad[0].reason.contains("1 fields"),
            "{:?}",
            bad[0]
        );
        assert!(bad[1].reason.contains("192.168.6.300"));
        assert!(bad[3].reason.contains("MAC"));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_skipped_and_the_rest_applies() {
        let bytes = b"52:54:00:00:00:01,vm1,192.168.6.11\n52:54:00:00:00:02,v\xffm,192.168.6.12\n52:54:00:00:00:03,vm3,192.168.6.13\n";
        let (good, bad) = parse_bytes(bytes);
        assert_eq!(good.iter().map(|g| g.line).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(
            bad,
            [BadLine {
                line: 2,
                reason: "not valid UTF-8".into()
            }]
        );
    }

    #[test]
    fn crlf_lines_parse() {
        let (good, bad) = parse("52:54:00:00:00:01,vm1,192.168.6.11\r\n");
        assert_eq!((good.len(), bad.len()), (1, 0));
    }

    const T: Duration = Duration::from_millis(1000);

    /// One tick a second, as the daemon runs it: (digest seen, what the watch says).
    fn run(w: &mut Watch, t0: Instant, seen: &[Option<u64>]) -> Vec<Option<Apply>> {
        seen.iter()
            .enumerate()
            .map(|(i, d)| w.tick(*d, t0 + T * (i as u32 + 1)))
            .collect()
    }

    #[test]
    fn a_file_is_applied_once_it_has_stopped_changing() {
        let t0 = Instant::now();
        let mut w = Watch::applied(Some(1), t0, true);
        // Truncated (2), half written (3), whole (4): only the whole file is applied, a
        // second after it was last seen changing; its deletions after five seconds.
        let says = run(
            &mut w,
            t0,
            &[
                Some(2),
                Some(3),
                Some(4),
                Some(4),
                Some(4),
                Some(4),
                Some(4),
                Some(4),
                Some(4),
            ],
        );
        use Apply::*;
        assert_eq!(
            says,
            [
                None,
                None,
                None,
                Some(HoldDeletions),
                None,
                None,
                None,
                Some(All),
                None
            ]
        );
    }

    #[test]
    fn a_rewrite_in_two_steps_a_second_and_a_half_apart_deletes_nothing() {
        // `head -1 H.orig > H; sleep 1.5; tail -n +2 H.orig >> H`, seen at whole seconds: the
        // first half is applied (its additions) but its deletions are held, and the whole
        // file is back (the original digest) before they would go.
        let t0 = Instant::now();
        let mut w = Watch::applied(Some(1), t0, true);
        let says = run(
            &mut w,
            t0,
            &[
                Some(2),
                Some(2),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
            ],
        );
        use Apply::*;
        assert_eq!(
            says,
            [
                None,
                Some(HoldDeletions),
                None,
                Some(HoldDeletions),
                None,
                None,
                None,
                Some(All)
            ],
            "All only for the whole file, five seconds after it was back"
        );
    }

    #[test]
    fn an_unreadable_file_changes_nothing() {
        let t0 = Instant::now();
        let mut w = Watch::applied(Some(1), t0, true);
        assert_eq!(run(&mut w, t0, &[None; 8]), [None; 8]);
    }

    #[test]
    fn mass_deletions_and_an_emptied_file_are_suspicious() {
        assert!(!suspicious(1, 10, 9));
        assert!(!suspicious(5, 10, 5));
        assert!(suspicious(6, 10, 4));
        assert!(suspicious(1, 1, 0), "the only reservation, the file empty");
        assert!(!suspicious(1, 2, 1));
        assert!(!suspicious(0, 0, 0));
    }
}
