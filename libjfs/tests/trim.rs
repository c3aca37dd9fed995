//! Trimming the journal: whole sealed segments before a sequence number go,
//! oldest first; everything that reads a journal copes with one that starts
//! past record 1.

use std::path::{Path, PathBuf};

use libjfs::journal::{Journal, JournalConfig, JournalError, Tail, TailError};
use libjfs::record::Marker;
use libjfs::{Op, Position, Record, Timestamp, VolumeId};

const VOL: VolumeId = VolumeId([0x33; 16]);

fn record(seq: u64) -> Record {
    Record {
        seq,
        time: Timestamp::new(1_700_000_000 + seq as i64, 0),
        op: Op::Marker(Marker::Snapshot {
            name: format!("s{seq}"),
        }),
        mtimes: vec![],
        before: vec![],
    }
}

/// A journal of `segments` sealed segments of 10 records each (1..=10,
/// 11..=20, ...) and `active` more records in the active segment.
fn journal(dir: &Path, segments: u64, active: u64) -> (Journal, Vec<Position>) {
    let config = JournalConfig {
        segment_bytes: 1 << 30,
        zstd_level: Some(3),
    };
    let mut j = Journal::create(dir, VOL, config).unwrap();
    let mut positions = vec![Position::ZERO];
    let mut seq = 0;
    for _ in 0..segments {
        for _ in 0..10 {
            seq += 1;
            positions.push(j.append(&record(seq)).unwrap());
        }
        j.seal().unwrap();
    }
    for _ in 0..active {
        seq += 1;
        positions.push(j.append(&record(seq)).unwrap());
    }
    j.sync().unwrap();
    (j, positions)
}

fn sealed_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn seqs(j: &Journal, from: u64) -> Vec<u64> {
    j.read_from(from)
        .unwrap()
        .map(|e| e.unwrap().record.seq)
        .collect()
}

#[test]
fn trim_removes_whole_sealed_segments_before_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, positions) = journal(dir.path(), 4, 5);
    assert_eq!(j.first_seq(), 1);

    // 25 lies in the third segment (21..=30): the first two go.
    let removed = j.trim_before(25).unwrap();
    assert_eq!(
        removed
            .iter()
            .map(|s| (s.first_seq, s.last_seq))
            .collect::<Vec<_>>(),
        vec![(1, 10), (11, 20)]
    );
    assert!(removed.iter().all(|s| !s.path.exists() && s.file_bytes > 0));
    assert_eq!(j.first_seq(), 21);
    assert_eq!(sealed_files(dir.path()).len(), 2);
    assert_eq!(seqs(&j, 21), (21..=45).collect::<Vec<_>>());
    assert!(matches!(
        j.read_from(20),
        Err(JournalError::NotFound {
            seq: 20,
            first: 21,
            ..
        })
    ));
    assert_eq!(j.position_at(20).unwrap(), positions[20]);
    assert_eq!(j.position_at(33).unwrap(), positions[33]);
    assert!(j.position_at(19).is_err());

    // Nothing to do: the same bound again, or one inside the first segment.
    assert!(j.trim_before(21).unwrap().is_empty());
    assert!(j.trim_before(30).unwrap().is_empty());

    // Appending goes on; reopening sees the same journal.
    let head = j.append(&record(46)).unwrap();
    j.sync().unwrap();
    drop(j);
    let (j, recovery) = Journal::open(dir.path(), VOL, JournalConfig::default()).unwrap();
    assert_eq!(recovery, Default::default());
    assert_eq!((j.first_seq(), j.head()), (21, head));
    assert_eq!(seqs(&j, 21), (21..=46).collect::<Vec<_>>());
    let ro = Journal::open_read_only(dir.path(), None).unwrap();
    assert_eq!((ro.first_seq(), ro.head()), (21, head));
    assert!(matches!(
        Journal::open_read_only(dir.path(), None)
            .unwrap()
            .trim_before(40),
        Err(JournalError::ReadOnly)
    ));
}

#[test]
fn the_active_segment_and_unsealed_records_always_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, positions) = journal(dir.path(), 3, 4);
    let removed = j.trim_before(u64::MAX).unwrap();
    assert_eq!(removed.len(), 3);
    assert!(sealed_files(dir.path()).is_empty());
    assert_eq!(j.first_seq(), 31);
    assert_eq!(seqs(&j, 31), vec![31, 32, 33, 34]);
    // The start of the active segment is still a position of the journal.
    assert_eq!(j.position_at(30).unwrap(), positions[30]);

    // A journal that is only an empty active segment, after a seal and a trim.
    j.seal().unwrap();
    assert_eq!(j.trim_before(u64::MAX).unwrap().len(), 1);
    assert_eq!((j.first_seq(), j.head()), (35, positions[34]));
    assert_eq!(j.position_at(34).unwrap(), positions[34]);
    assert_eq!(seqs(&j, 35), Vec::<u64>::new());
    drop(j);
    let (mut j, _) = Journal::open(dir.path(), VOL, JournalConfig::default()).unwrap();
    assert_eq!((j.first_seq(), j.head()), (35, positions[34]));
    j.append(&record(35)).unwrap();
    assert_eq!(seqs(&j, 35), vec![35]);
    let ro = Journal::open_read_only(dir.path(), None).unwrap();
    assert_eq!((ro.first_seq(), ro.head().seq), (35, 35));
}

#[test]
fn a_crash_between_removals_leaves_a_journal_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (j, positions) = journal(dir.path(), 4, 2);
    drop(j);
    // Oldest first: a crash after the first removal leaves 11.. behind.
    let files = sealed_files(dir.path());
    std::fs::remove_file(&files[0]).unwrap();
    let (mut j, recovery) = Journal::open(dir.path(), VOL, JournalConfig::default()).unwrap();
    assert_eq!(recovery, Default::default());
    assert_eq!((j.first_seq(), j.head()), (11, positions[42]));
    assert_eq!(seqs(&j, 11), (11..=42).collect::<Vec<_>>());
    // The trim that was interrupted can be asked again.
    let removed = j.trim_before(31).unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(j.first_seq(), 31);

    // Removed behind the journal's back (an attempt that failed after the
    // removal): trimming again still succeeds and the journal agrees.
    std::fs::remove_file(&sealed_files(dir.path())[0]).unwrap();
    assert_eq!(j.trim_before(41).unwrap().len(), 1);
    assert_eq!(j.first_seq(), 41);

    // Removing a segment from the middle is damage, not a trim.
    drop(j);
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = journal(dir.path(), 3, 0);
    drop(j);
    std::fs::remove_file(&sealed_files(dir.path())[1]).unwrap();
    let err = Journal::open(dir.path(), VOL, JournalConfig::default())
        .err()
        .expect("a gap is refused");
    assert!(
        err.to_string().contains("the one before ends at 10"),
        "{err}"
    );
}

#[test]
fn a_reader_opened_before_a_trim_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = journal(dir.path(), 3, 1);
    let reader_view = Journal::open_read_only(dir.path(), Some(VOL)).unwrap();
    j.trim_before(15).unwrap();
    let err = reader_view
        .read_from(1)
        .unwrap()
        .find_map(|e| e.err())
        .expect("the first segment is gone");
    assert!(matches!(err, JournalError::Trimmed { .. }), "{err}");
    assert!(err.to_string().contains("trimmed"), "{err}");
}

#[test]
fn a_tail_refuses_positions_that_were_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, positions) = journal(dir.path(), 4, 3);
    j.trim_before(21).unwrap();
    // Needs 11..: gone.
    match Tail::new(dir.path(), VOL, positions[10]) {
        Err(TailError::Trimmed {
            asked_seq: 10,
            first_seq: 21,
        }) => {}
        Err(e) => panic!("expected Trimmed, got {e}"),
        Ok(_) => panic!("expected Trimmed, got a tail"),
    }
    match Tail::new(dir.path(), VOL, Position::ZERO) {
        Err(TailError::Trimmed { asked_seq: 0, .. }) => {}
        Err(e) => panic!("expected Trimmed, got {e}"),
        Ok(_) => panic!("expected Trimmed, got a tail"),
    }
    // Needs 21..: served, the first sealed segment whole.
    let mut tail = Tail::new(dir.path(), VOL, positions[20]).unwrap();
    let mut got = vec![];
    while let Some(chunk) = tail.next(u64::MAX, 1 << 20, None).unwrap() {
        match chunk {
            libjfs::journal::Chunk::Sealed { header, .. } => {
                got.extend(header.first_seq..=header.last_seq)
            }
            libjfs::journal::Chunk::Records { prev, records, .. } => {
                got.extend((prev.seq + 1)..=(prev.seq + records.len() as u64))
            }
        }
    }
    assert_eq!(got, (21..=43).collect::<Vec<_>>());
    assert_eq!(tail.position(), positions[43]);
    // In the middle of a retained segment: served too.
    let mut tail = Tail::new(dir.path(), VOL, positions[25]).unwrap();
    assert!(tail.next(u64::MAX, 1 << 20, None).unwrap().is_some());

    // Everything sealed trimmed: a tail at the active segment's start works.
    j.trim_before(u64::MAX).unwrap();
    assert_eq!(j.first_seq(), 41);
    let mut tail = Tail::new(dir.path(), VOL, positions[40]).unwrap();
    match tail.next(u64::MAX, 1 << 20, None).unwrap() {
        Some(libjfs::journal::Chunk::Records { records, end, .. }) => {
            assert_eq!((records.len(), end), (3, positions[43]))
        }
        other => panic!("expected records, got {other:?}"),
    }
    assert!(matches!(
        Tail::new(dir.path(), VOL, positions[39]),
        Err(TailError::Trimmed { .. })
    ));
}

#[test]
fn materialize_refuses_a_trimmed_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = journal(dir.path(), 2, 1);
    j.trim_before(11).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = libjfs::materialize::materialize_journal(&j, 15, &dest.path().join("t"), |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("trimmed"), "{err}");
}

// ---------------------------------------------------------------------------
// Retention on a volume

mod volume {
    use std::time::Duration;

    use libjfs::retention::{trim_with, Holder, Policy, Reason, TrimOptions};
    use libjfs::ship::server::{ReplicaInfo, REGISTRY_FILE};
    use libjfs::volume::SETTING_SEGMENT_BYTES;
    use libjfs::{NewNode, Op, RelPath, Role, Timestamp, Volume};

    /// A master volume with 4 KiB segments and `files` files of 3000 bytes.
    fn volume(dir: &std::path::Path, files: usize) -> Volume {
        let path = dir.join("vol");
        let v = Volume::init(&path, Role::Master).unwrap();
        v.set_setting(SETTING_SEGMENT_BYTES, "4096").unwrap();
        drop(v);
        let mut v = Volume::open(&path).unwrap();
        for i in 0..files {
            let p = RelPath::new(format!("f{i}")).unwrap();
            v.commit(Op::Create {
                path: p.clone(),
                node: NewNode {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            })
            .unwrap();
            let data: Vec<u8> = (0..3000u32)
                .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i as u32) >> 13) as u8)
                .collect();
            v.commit(Op::Write {
                path: p,
                offset: 0,
                data,
            })
            .unwrap();
        }
        v.sync().unwrap();
        v
    }

    fn register(v: &Volume, id: &str, seq: u64) {
        let pos = v.journal().position_at(seq).unwrap();
        let list = vec![ReplicaInfo {
            id: id.into(),
            address: "127.0.0.1:9".into(),
            listen: None,
            connected: false,
            acked: pos,
            durable: Some(pos),
            last_seen: Timestamp::now(),
        }];
        std::fs::write(
            v.path().join(REGISTRY_FILE),
            serde_json::to_vec(&list).unwrap(),
        )
        .unwrap();
    }

    fn sealed(v: &Volume) -> Vec<libjfs::journal::SegmentInfo> {
        v.journal()
            .segments()
            .into_iter()
            .filter(|s| s.sealed)
            .collect()
    }

    #[test]
    fn the_segment_size_setting_is_used_and_trims_go_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = volume(dir.path(), 60);
        let segs = sealed(&v);
        // The newest full segment may still be being sealed.
        let full = v.journal().segments().len() - 1;
        assert!(full >= 30, "4 KiB segments: {full}");
        assert!(segs.iter().all(|s| s.file_bytes < 8192), "{segs:?}");
        let head = v.head().seq;
        register(&v, "r1", 61);
        let policy = Policy {
            max_age: None,
            max_bytes: Some(10_000),
        };
        let opts = TrimOptions {
            max_segments: Some(3),
            ..TrimOptions::default()
        };
        let r = trim_with(&mut v, &policy, opts, Timestamp::now()).unwrap();
        assert_eq!(r.segments.len(), 3);
        assert!(r.more);
        let mut rounds = 1;
        while trim_with(&mut v, &policy, opts, Timestamp::now())
            .unwrap()
            .more
        {
            rounds += 1;
        }
        assert!(rounds > 2);
        // Held at the replica: the segment holding 62 stays.
        let first = v.journal().first_seq();
        assert!(first > 1 && first <= 62, "{first}");
        let r = trim_with(&mut v, &policy, opts, Timestamp::now()).unwrap();
        assert!(r.segments.is_empty());
        assert_eq!(r.plan.reason, Reason::HeldBack);
        assert!(matches!(&r.plan.held_by[0].holder, Holder::Replica { id, .. } if id == "r1"));
        assert!(r.notes()[0].contains("holds back 62.."), "{:?}", r.notes());

        // Dry, forced: says what it would cost, removes nothing.
        let dry = TrimOptions {
            force: true,
            dry_run: true,
            max_segments: None,
        };
        let r = trim_with(&mut v, &policy, dry, Timestamp::now()).unwrap();
        assert!(!r.segments.is_empty());
        assert_eq!(r.plan.overridden.len(), 1);
        assert_eq!(v.journal().first_seq(), first);

        // The trimmed volume reopens, replays nothing, and goes on.
        let path = v.path().to_owned();
        drop(v);
        let mut v = Volume::open(&path).unwrap();
        assert_eq!((v.journal().first_seq(), v.head().seq), (first, head));
        assert_eq!(v.applied().seq, head);
        v.commit(Op::Mkdir {
            path: RelPath::new("after").unwrap(),
            node: NewNode {
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        })
        .unwrap();
        let r = v.journal().read_from(first).unwrap().count() as u64;
        assert_eq!(r, head + 2 - first);
    }

    #[test]
    fn a_trim_says_which_snapshots_it_puts_out_of_reach() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = volume(dir.path(), 10);
        let early = v.create_snapshot("early").unwrap();
        let path = v.path().to_owned();
        drop(v);
        let mut v = volume_more(&path, 20);
        let late = v.create_snapshot("late").unwrap();
        let policy = Policy {
            max_age: None,
            max_bytes: Some(5000),
        };
        let dry = TrimOptions {
            dry_run: true,
            ..TrimOptions::default()
        };
        let r = trim_with(&mut v, &policy, dry, Timestamp::now()).unwrap();
        assert_eq!(r.snapshots_lost, vec![("early".to_owned(), early.seq)]);
        assert!(
            r.notes().iter().any(|n| n.contains("snapshot early")),
            "{:?}",
            r.notes()
        );
        let r = trim_with(&mut v, &policy, TrimOptions::default(), Timestamp::now()).unwrap();
        assert_eq!(r.snapshots_lost, vec![("early".to_owned(), early.seq)]);
        assert!(v.journal().first_seq() <= late.seq + 1);
        // Said once: the next trim has nothing more to report.
        let r = trim_with(&mut v, &policy, TrimOptions::default(), Timestamp::now()).unwrap();
        assert!(r.snapshots_lost.is_empty());
    }

    /// Opens the volume at `path` again and adds `files` files.
    fn volume_more(path: &std::path::Path, files: usize) -> Volume {
        let mut v = Volume::open(path).unwrap();
        for i in 0..files {
            let p = RelPath::new(format!("more{i}")).unwrap();
            v.commit(Op::Create {
                path: p.clone(),
                node: NewNode {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            })
            .unwrap();
            v.commit(Op::Write {
                path: p,
                offset: 0,
                data: (0..3000u32).map(|j| (j * 7 + i as u32) as u8).collect(),
            })
            .unwrap();
        }
        v.sync().unwrap();
        v
    }

    #[test]
    fn a_tree_taken_back_keeps_the_records_it_no_longer_has_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = volume(dir.path(), 60);
        let head = v.head();
        // Back to 31 without journaling (a replica's rewind): 32.. are
        // journaled but not applied, so they must stay.
        v.rewind_tree(31, None, |_| {}).unwrap();
        assert_eq!(v.applied().seq, 31);
        let policy = Policy {
            max_age: None,
            max_bytes: Some(0),
        };
        let r = trim_with(&mut v, &policy, TrimOptions::default(), Timestamp::now()).unwrap();
        let first = v.journal().first_seq();
        assert!(first > 1 && first <= 32, "{first}");
        assert_eq!(r.plan.reason, Reason::HeldBack);
        assert_eq!(r.plan.held_by[0].holder, Holder::Applied);
        // Even forced.
        let forced = TrimOptions {
            force: true,
            ..TrimOptions::default()
        };
        trim_with(&mut v, &policy, forced, Timestamp::now()).unwrap();
        assert_eq!(v.journal().first_seq(), first);
        // And the tree goes forward again from the journal.
        assert_eq!(v.replay(None, |_| {}).unwrap(), head);
    }

    #[test]
    fn age_goes_by_the_time_of_each_segments_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = volume(dir.path(), 30);
        let segs = sealed(&v);
        let n = segs.len();
        let policy = Policy {
            max_age: Some(Duration::from_secs(3600)),
            max_bytes: None,
        };
        // Times read ahead, outside the lock, are the ones the trim uses.
        libjfs::retention::warm_segment_times(v.path(), Duration::from_secs(3600)).unwrap();
        // Now: nothing is an hour old.
        let r = trim_with(&mut v, &policy, TrimOptions::default(), Timestamp::now()).unwrap();
        assert!(r.segments.is_empty());
        assert_eq!(r.plan.reason, Reason::Satisfied);
        // Two hours on: every sealed segment; the active one stays.
        let later = Timestamp::new(Timestamp::now().sec + 7200, 0);
        let r = trim_with(&mut v, &policy, TrimOptions::default(), later).unwrap();
        assert_eq!(r.segments.len(), n);
        assert!(sealed(&v).is_empty());
        assert_eq!(v.journal().first_seq(), segs[n - 1].last_seq + 1);
    }
}
