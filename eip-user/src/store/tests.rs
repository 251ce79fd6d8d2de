use super::*;
use crate::model::Source;

fn host() -> Reservation {
    Reservation {
        mac: "52:54:00:00:00:01".parse().unwrap(),
        name: Some("vm1".into()),
        ip: "192.168.6.10".parse().unwrap(),
        source: Source::Cli,
        quarantined: false,
    }
}

#[test]
fn commits_survive_reopening_and_history_is_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let eip = Eip {
        addr: "203.0.113.5".parse().unwrap(),
        slot: 1,
        bound: Some(host().mac),
        limit_in: None,
        limit_out: None,
    };
    let writes = vec![
        Write::PutPool("203.0.113.0/24".parse().unwrap()),
        Write::PutReservation(host()),
        Write::PutEip(eip.clone()),
    ];
    let mut expected = State::default();
    expected.apply(&writes);
    {
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store
                .commit(&writes, "first", vec![], records(&expected))
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .commit(
                    &[Write::DelEip(eip.addr)],
                    "second",
                    vec![Record::Eip(eip)],
                    vec![]
                )
                .unwrap(),
            2
        );
    }
    expected.eips.clear();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), expected);
    let h = store.history(None).unwrap();
    assert_eq!(
        h.iter().map(|e| e.command.as_str()).collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert_eq!(store.history(Some(1)).unwrap()[0].seq, 2);
    assert_eq!(store.commit(&[], "third", vec![], vec![]).unwrap(), 3);
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().expect("second open must fail");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

#[test]
fn a_file_that_is_not_a_store_is_refused_and_left_as_it_is() {
    for (what, content) in [
        ("zero-length", &b""[..]),
        ("short", &b"not a database"[..]),
        ("foreign", &[0x42u8; 8192][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Store::FILE);
        std::fs::write(&path, content).unwrap();
        let err = Store::open(dir.path())
            .err()
            .unwrap_or_else(|| panic!("{what} file opened"));
        assert!(matches!(err, StoreError::NotAStore { .. }), "{what}: {err:?}");
        assert!(err.to_string().contains("is not an eip state database"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            content,
            "{what}: the file was touched"
        );
    }
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs (needs root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

/// A full disk refuses changes with the OS's reason; once there is room again the store
/// takes changes without a restart (it re-opens redb, which refuses every write after a
/// failed one), and everything acknowledged before, during and after is there.
#[test]
fn a_full_disk_refuses_changes_and_the_store_recovers_when_space_is_back() {
    let fs = Tmpfs::new("8m");
    let dir = fs.0.path().join("state");
    let mut store = Store::open(&dir).unwrap();
    let mut acked = Vec::new();
    let commit = |store: &mut Store, n: usize| {
        let pool: Ipv4Net = format!("10.{}.{}.0/24", n / 256, n % 256).parse().unwrap();
        let big = "x".repeat(64 << 10);
        store
            .commit(&[Write::PutPool(pool)], &format!("{n} {big}"), vec![], vec![])
            .map(|_| pool)
    };
    for n in 0..4 {
        acked.push(commit(&mut store, n).unwrap());
    }
    // Fill what is left.
    let filler = fs.0.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let mut failures = 0;
    for n in 4..400 {
        match commit(&mut store, n) {
            Ok(p) => acked.push(p),
            Err(e) => {
                failures += 1;
                assert!(
                    matches!(
                        e,
                        StoreError::Db { .. } | StoreError::Open { .. } | StoreError::Closed { .. }
                    ),
                    "{e}"
                );
                if failures == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(failures, 3, "the disk never filled");
    std::fs::remove_file(&filler).unwrap();
    for n in 1000..1003 {
        acked.push(commit(&mut store, n).expect("a commit once space is back"));
    }
    drop(store);
    let state = Store::open(&dir).unwrap().load().unwrap();
    for p in &acked {
        assert!(state.pools.contains(p), "acknowledged {p} lost");
    }
}

#[test]
fn the_history_pages_and_keeps_the_newest_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.set_history_keep(5);
    for n in 1..=20u64 {
        assert_eq!(store.commit(&[], &format!("c{n}"), vec![], vec![]).unwrap(), n);
    }
    let seqs = |v: Vec<Entry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.history(None).unwrap()), [16, 17, 18, 19, 20]);
    assert_eq!(seqs(store.history_page(Some(2), None).unwrap()), [19, 20]);
    assert_eq!(seqs(store.history_page(Some(2), Some(19)).unwrap()), [17, 18]);
    assert_eq!(seqs(store.history_page(Some(10), Some(17)).unwrap()), [16]);
    drop(store);
    // Sequence numbers go on after a restart, past the pruned ones.
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.commit(&[], "c21", vec![], vec![]).unwrap(), 21);
}

#[test]
fn a_corrupt_record_is_refused_by_table_and_key() {
    // A store with one unreadable row in `table`: the key load names.
    let bad = |table: &str| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        match table {
            "eips" => {
                let mut t = txn.open_table(EIPS).unwrap();
                t.insert(u32::from(Ipv4Addr::new(203, 0, 113, 10)), "{not json")
                    .unwrap();
            }
            "declined" => {
                let mut t = txn.open_table(DECLINED).unwrap();
                t.insert(u32::from(Ipv4Addr::new(192, 168, 6, 9)), "1").unwrap();
            }
            "leases" => {
                let mut t = txn.open_table(LEASES).unwrap();
                t.insert("52:54:00:00:00:07", "null").unwrap();
            }
            _ => {
                let mut t = txn.open_table(HOSTS).unwrap();
                t.insert("52:54:00:00:00:09", "[]").unwrap();
            }
        }
        txn.commit().unwrap();
        match store.load() {
            Err(StoreError::Corrupt { key, .. }) => key,
            other => panic!("{table}: {other:?}"),
        }
    };
    assert_eq!(bad("hosts"), "host 52:54:00:00:00:09");
    assert_eq!(bad("eips"), "eip 203.0.113.10");
    assert_eq!(bad("leases"), "lease 52:54:00:00:00:07");
    assert_eq!(bad("declined"), "declined 192.168.6.9");
}
