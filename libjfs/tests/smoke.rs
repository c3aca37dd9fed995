use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::materialize::materialize;
use libjfs::record::{RenameMode, SpecialKind};
use libjfs::{NewNode, Node, Op, RelPath, Role, Volume};

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

#[test]
fn commit_reopen_materialize() {
    let dir = tempfile::tempdir().unwrap();
    let vol_path = dir.path().join("vol");
    let node = NewNode {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
    };
    {
        let mut vol = Volume::init(&vol_path, Role::Master).unwrap();
        vol.commit(Op::Mkdir {
            path: p("d"),
            node: NewNode {
                mode: 0o755,
                ..node
            },
        })
        .unwrap();
        vol.commit(Op::Create {
            path: p("d/f"),
            node,
        })
        .unwrap();
        vol.commit(Op::Write {
            path: p("d/f"),
            offset: 0,
            data: b"hello".to_vec(),
        })
        .unwrap();
        vol.commit(Op::Write {
            path: p("d/f"),
            offset: 1 << 20,
            data: b"sparse".to_vec(),
        })
        .unwrap();
        vol.commit(Op::Link {
            from: p("d/f"),
            to: p("g"),
        })
        .unwrap();
        vol.commit(Op::Symlink {
            path: p("l"),
            target: b"d/f".to_vec(),
            uid: 5,
            gid: 6,
        })
        .unwrap();
        vol.commit(Op::Mknod {
            path: p("fifo"),
            kind: SpecialKind::Fifo,
            node,
        })
        .unwrap();
        vol.commit(Op::SetXattr {
            node: Node::Path(p("g")),
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        })
        .unwrap();
        vol.commit(Op::Create { path: p("x"), node }).unwrap();
        vol.commit(Op::Rename {
            from: p("x"),
            to: p("d/f"),
            mode: RenameMode::Replace,
        })
        .unwrap();
        // A refused record is retracted: the journal does not keep it.
        let head = vol.head();
        assert!(vol.commit(Op::Unlink { path: p("missing") }).is_err());
        assert_eq!(vol.head(), head);
        vol.close().unwrap();
    }
    let vol = Volume::open(&vol_path).unwrap();
    let head = vol.head();
    assert_eq!(vol.applied(), head);
    let dest = dir.path().join("copy");
    materialize(&vol_path, head.seq, &dest, |_| {}).unwrap();
    let diffs = compare_trees(&vol.tree_path(), &dest, &CompareOptions::default()).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert!(matches!(
        Volume::open(&vol_path),
        Err(libjfs::VolumeError::InUse { .. })
    ));
}

/// The mtimes a record carries are the ones the tree ends with, for the
/// file a data op writes (set on its open handle) and for other nodes.
#[test]
fn records_leave_exactly_their_mtimes() {
    use libjfs::record::{FallocateMode, SetMtime};
    use libjfs::{Record, Timestamp};
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let tree = libjfs::tree::Tree::open(dir.path()).unwrap();
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let ops = vec![
        Op::Create { path: p("a"), node },
        Op::Create { path: p("b"), node },
        Op::Write {
            path: p("a"),
            offset: 0,
            data: b"hello world".to_vec(),
        },
        Op::Truncate {
            path: p("a"),
            size: 5,
        },
        Op::Fallocate {
            path: p("a"),
            mode: FallocateMode::KeepSize,
            offset: 0,
            len: 4096,
        },
        Op::CopyRange {
            src: p("a"),
            src_offset: 0,
            dst: p("b"),
            dst_offset: 0,
            len: 5,
        },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let file = Timestamp::new(1_000_000 + i as i64, 123_456_789 - i as u32);
        let root = Timestamp::new(2_000_000 + i as i64, 7);
        let target = match &op {
            Op::CopyRange { dst, .. } => dst.clone(),
            Op::Create { path, .. }
            | Op::Write { path, .. }
            | Op::Truncate { path, .. }
            | Op::Fallocate { path, .. } => path.clone(),
            _ => unreachable!(),
        };
        let mtimes = vec![
            SetMtime {
                node: Node::Path(target.clone()),
                mtime: file,
            },
            SetMtime {
                node: Node::Root,
                mtime: root,
            },
        ];
        let record = Record {
            seq: i as u64 + 1,
            time: file,
            op,
            mtimes,
            before: vec![],
        };
        tree.apply(&record, None).unwrap();
        let md = std::fs::metadata(dir.path().join(target.as_path())).unwrap();
        assert_eq!(
            (md.mtime(), md.mtime_nsec() as u32),
            (file.sec, file.nsec),
            "{}",
            record.op
        );
        let md = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(
            (md.mtime(), md.mtime_nsec() as u32),
            (root.sec, root.nsec),
            "{}",
            record.op
        );
    }
}

#[test]
fn history_off_journals_no_before_images_and_a_rewind_past_it_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut vol = Volume::init(&dir.path().join("vol"), Role::Master).unwrap();
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    vol.commit(Op::Create {
        path: p("kept"),
        node,
    })
    .unwrap();
    let before_off = vol.head();
    vol.set_history(false).unwrap();
    assert!(!vol.history());
    vol.commit(Op::Create { path: p("a"), node }).unwrap();
    vol.commit(Op::Write {
        path: p("a"),
        offset: 0,
        data: b"no history".to_vec(),
    })
    .unwrap();
    vol.commit(Op::Unlink { path: p("kept") }).unwrap();
    let last = vol
        .journal()
        .read_from(vol.head().seq)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert!(last.record.before.is_empty());
    assert!(std::fs::read_dir(vol.attic_path())
        .unwrap()
        .next()
        .is_none());
    let head = vol.head();
    let err = vol.rewind(before_off.seq, |_| {}).unwrap_err();
    assert!(err.to_string().contains("history off"), "{err}");
    assert_eq!(vol.head(), head, "a refused rewind journals nothing");
    assert!(!vol.tree_path().join("kept").exists());
    // Back on: what follows can be undone again.
    vol.set_history(true).unwrap();
    vol.commit(Op::Create { path: p("b"), node }).unwrap();
    vol.rewind(head.seq, |_| {}).unwrap();
    assert!(!vol.tree_path().join("b").exists());
}

/// A copy from a source shorter than the range is refused, and a refusal
/// changes nothing: the kernel would copy what there is and stamp the
/// target's mtime, which the retracted record does not carry. A later
/// record's before-image would then hold that stray mtime, and a replica
/// rewound to just before it would show it.
#[test]
fn a_copy_from_a_short_source_is_refused_without_touching_the_target() {
    use libjfs::record::implied_mtimes;
    use libjfs::Timestamp;
    let dir = tempfile::tempdir().unwrap();
    let vol_path = dir.path().join("vol");
    let mut vol = Volume::init(&vol_path, Role::Master).unwrap();
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut time = Timestamp::new(1_700_000_000, 0);
    let mut commit = |vol: &mut Volume, op: Op| {
        time = Timestamp::new(time.sec + 1, 0);
        let mtimes = implied_mtimes(&op, time);
        vol.commit_with(time, op, mtimes)
    };
    for op in [
        Op::Create { path: p("a"), node },
        Op::Create { path: p("b"), node },
        Op::Write {
            path: p("a"),
            offset: 0,
            data: vec![0; 227],
        },
        Op::Write {
            path: p("b"),
            offset: 0,
            data: vec![0; 4096],
        },
    ] {
        commit(&mut vol, op).unwrap();
    }
    let head = vol.head();
    let err = commit(
        &mut vol,
        Op::CopyRange {
            src: p("a"),
            src_offset: 0,
            dst: p("b"),
            dst_offset: 100,
            len: 1000,
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, libjfs::VolumeError::Apply(e) if e.is_refusal()),
        "{err:?}"
    );
    assert!(err.to_string().contains("copy-range"), "{err}");
    assert_eq!(vol.head(), head, "the refused record was retracted");
    let expect = dir.path().join("expect");
    materialize(&vol_path, head.seq, &expect, |_| {}).unwrap();
    let diffs = compare_trees(&vol.tree_path(), &expect, &CompareOptions::default()).unwrap();
    assert!(diffs.is_empty(), "the refusal changed the tree: {diffs:?}");
}
