mod common;

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

/// Commits `op` on a master with history on and expects a refusal that
/// changed nothing: the journal is where it was, the tree equals the journal
/// materialized there, and the record's attic entry was not left behind (the
/// next record gets the same seq, and a removal would find its entry taken).
fn expect_refused_unchanged(
    vol: &mut Volume,
    vol_path: &std::path::Path,
    dest: &std::path::Path,
    op: Op,
) {
    use libjfs::record::implied_mtimes;
    use libjfs::Timestamp;
    let head = vol.head();
    let what = op.to_string();
    let time = Timestamp::new(1_800_000_000 + head.seq as i64, 0);
    let mtimes = implied_mtimes(&op, time);
    let err = vol.commit_with(time, op, mtimes).unwrap_err();
    assert!(
        matches!(&err, libjfs::VolumeError::Apply(e) if e.is_refusal()),
        "{what}: {err:?}"
    );
    assert_eq!(vol.head(), head, "{what}: the refused record was retracted");
    let entry = vol.attic_path().join((head.seq + 1).to_string());
    assert!(
        std::fs::symlink_metadata(&entry).is_err(),
        "{what}: left attic entry {} behind",
        head.seq + 1
    );
    let _ = std::fs::remove_dir_all(dest);
    materialize(vol_path, head.seq, dest, |_| {}).unwrap();
    let diffs = compare_trees(&vol.tree_path(), dest, &CompareOptions::default()).unwrap();
    assert!(
        diffs.is_empty(),
        "{what}: the refusal changed the tree: {diffs:?}"
    );
}

/// A replacing rename keeps the node it replaces in the attic, under the
/// record's seq. A rename that is refused (no source, a file over a
/// directory, a directory over a file or into itself) must not leave that
/// entry, nor move a replaced directory away: the refused record is
/// retracted, its seq goes to the next record, and a removal with that seq
/// would be refused for an attic entry that "already exists".
#[test]
fn a_refused_replacing_rename_leaves_nothing_in_the_attic() {
    let dir = tempfile::tempdir().unwrap();
    let vol_path = dir.path().join("vol");
    let dest = dir.path().join("expect");
    let mut vol = Volume::init(&vol_path, Role::Master).unwrap();
    assert!(vol.history());
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let dir_node = NewNode {
        mode: 0o755,
        ..node
    };
    for op in [
        Op::Create { path: p("f"), node },
        Op::Write {
            path: p("f"),
            offset: 0,
            data: b"kept".to_vec(),
        },
        Op::Mkdir {
            path: p("d"),
            node: dir_node,
        },
        Op::Mkdir {
            path: p("d/sub"),
            node: dir_node,
        },
        Op::Mkdir {
            path: p("empty"),
            node: dir_node,
        },
    ] {
        vol.commit(op).unwrap();
    }
    let rename = |from: &str, to: &str| Op::Rename {
        from: p(from),
        to: p(to),
        mode: RenameMode::Replace,
    };
    let refused = [
        rename("missing", "f"),
        rename("d", "f"),
        rename("f", "empty"),
        rename("missing", "empty"),
        rename("d", "d/sub"),
        rename("empty", "d"),
    ];
    for (i, op) in refused.into_iter().enumerate() {
        let scratch = p(&format!("scratch{i}"));
        vol.commit(Op::Create {
            path: scratch.clone(),
            node,
        })
        .unwrap();
        expect_refused_unchanged(&mut vol, &vol_path, &dest, op);
        // The next record takes the refused one's seq, and its attic entry.
        vol.commit(Op::Unlink { path: scratch }).unwrap();
    }
    // What the refusals left in place can still be replaced and removed.
    vol.commit(Op::Create { path: p("g"), node }).unwrap();
    vol.commit(rename("g", "f")).unwrap();
    vol.commit(Op::Rmdir { path: p("d/sub") }).unwrap();
    vol.commit(rename("d", "empty")).unwrap();
    let head = vol.head();
    let _ = std::fs::remove_dir_all(&dest);
    materialize(&vol_path, head.seq, &dest, |_| {}).unwrap();
    let diffs = compare_trees(&vol.tree_path(), &dest, &CompareOptions::default()).unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
}

/// The redo form of a replacing rename completes it from any state a crash
/// left (before the attic step, after it, after the rename) and refuses
/// nothing; in particular a directory that already replaced another is not
/// mistaken for the directory it replaced.
#[test]
fn the_redo_of_a_replacing_rename_completes_it_from_any_step() {
    use libjfs::record::BeforeImage;
    use libjfs::tree::Tree;
    use libjfs::{Record, Timestamp};
    use std::os::unix::fs::MetadataExt;
    let record = |seq: u64| Record {
        seq,
        time: Timestamp::new(1_700_000_000, 0),
        op: Op::Rename {
            from: p("a"),
            to: p("b"),
            mode: RenameMode::Replace,
        },
        mtimes: vec![],
        before: vec![BeforeImage::Attic { id: seq }],
    };
    for dirs in [false, true] {
        // 0: nothing done, 1: the replaced node is in the attic, 2: renamed.
        for step in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (root, attic) = (dir.path().join("tree"), dir.path().join("attic"));
            std::fs::create_dir(&root).unwrap();
            std::fs::create_dir(&attic).unwrap();
            let (a, b, kept) = (root.join("a"), root.join("b"), attic.join("7"));
            if dirs {
                std::fs::create_dir(&a).unwrap();
                std::fs::write(a.join("inside"), b"x").unwrap();
                std::fs::create_dir(&b).unwrap();
            } else {
                std::fs::write(&a, b"new").unwrap();
                std::fs::write(&b, b"old").unwrap();
            }
            let (src, old) = (
                std::fs::symlink_metadata(&a).unwrap().ino(),
                std::fs::symlink_metadata(&b).unwrap().ino(),
            );
            if step >= 1 {
                if dirs {
                    std::fs::rename(&b, &kept).unwrap();
                } else {
                    std::fs::hard_link(&b, &kept).unwrap();
                }
            }
            if step >= 2 {
                std::fs::rename(&a, &b).unwrap();
            }
            let tree = Tree::open_with_attic(&root, &attic).unwrap();
            tree.apply(&record(7), Some(0))
                .unwrap_or_else(|e| panic!("dirs {dirs}, step {step}: {e}"));
            assert!(std::fs::symlink_metadata(&a).is_err());
            assert_eq!(std::fs::symlink_metadata(&b).unwrap().ino(), src);
            assert_eq!(std::fs::symlink_metadata(&kept).unwrap().ino(), old);
        }
    }
}

/// A set-attr that changes the owner and the mode of a symlink is refused
/// (a symlink has no mode of its own) before the owner changes.
#[test]
fn a_refused_mode_change_on_a_symlink_leaves_its_owner() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let vol_path = dir.path().join("vol");
    let dest = dir.path().join("expect");
    let mut vol = Volume::init(&vol_path, Role::Master).unwrap();
    vol.commit(Op::Symlink {
        path: p("l"),
        target: b"nowhere".to_vec(),
        uid: 0,
        gid: 0,
    })
    .unwrap();
    expect_refused_unchanged(
        &mut vol,
        &vol_path,
        &dest,
        Op::SetAttr {
            node: Node::Path(p("l")),
            mode: Some(0o600),
            uid: Some(5),
            gid: Some(6),
            atime: None,
            mtime: None,
        },
    );
    let md = std::fs::symlink_metadata(vol.tree_path().join("l")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
}

/// A rename refused for a reason only the rename itself finds (here: its
/// source sits in an append-only directory) gives back what the attic step
/// took: the replaced file's attic link goes, a replaced directory returns.
#[test]
fn a_rename_refused_after_the_attic_step_gives_the_replaced_node_back() {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    struct AppendOnly(std::fs::File);
    impl Drop for AppendOnly {
        fn drop(&mut self) {
            let flags = ioctl_getflags(&self.0).unwrap();
            ioctl_setflags(&self.0, flags - IFlags::APPEND).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let vol_path = dir.path().join("vol");
    let dest = dir.path().join("expect");
    let mut vol = Volume::init(&vol_path, Role::Master).unwrap();
    let node = NewNode {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    for op in [
        Op::Mkdir {
            path: p("ro"),
            node,
        },
        Op::Create {
            path: p("ro/f"),
            node,
        },
        Op::Mkdir {
            path: p("ro/d"),
            node,
        },
        Op::Create { path: p("f"), node },
        Op::Mkdir { path: p("e"), node },
    ] {
        vol.commit(op).unwrap();
    }
    let ro = std::fs::File::open(vol.tree_path().join("ro")).unwrap();
    let flags = ioctl_getflags(&ro).unwrap();
    if let Err(e) = ioctl_setflags(&ro, flags | IFlags::APPEND) {
        eprintln!("skipped: cannot make a directory append-only here: {e}");
        return;
    }
    let guard = AppendOnly(ro);
    for (i, (from, to)) in [("ro/f", "f"), ("ro/d", "e")].into_iter().enumerate() {
        let scratch = p(&format!("scratch{i}"));
        vol.commit(Op::Create {
            path: scratch.clone(),
            node,
        })
        .unwrap();
        let op = Op::Rename {
            from: p(from),
            to: p(to),
            mode: RenameMode::Replace,
        };
        expect_refused_unchanged(&mut vol, &vol_path, &dest, op);
        vol.commit(Op::Unlink { path: scratch }).unwrap();
    }
    drop(guard);
}

/// A directory cannot move inside itself. That is a refusal (nothing
/// changed, the record is retracted), with history on or off and in every
/// rename mode, not an I/O error that would leave the master with a
/// journaled record it cannot apply.
#[test]
fn a_directory_moved_inside_itself_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vol_path = dir.path().join("vol");
    let dest = dir.path().join("expect");
    let mut vol = Volume::init(&vol_path, Role::Master).unwrap();
    let node = NewNode {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    for path in ["d", "d/sub", "d/sub/empty"] {
        vol.commit(Op::Mkdir {
            path: p(path),
            node,
        })
        .unwrap();
    }
    let rename = |from: &str, to: &str, mode| Op::Rename {
        from: p(from),
        to: p(to),
        mode,
    };
    for history in [true, false] {
        vol.set_history(history).unwrap();
        for op in [
            rename("d", "d/sub/empty", RenameMode::Replace),
            rename("d", "d/sub/new", RenameMode::Replace),
            rename("d", "d/sub/new", RenameMode::NoReplace),
            rename("d", "d/sub", RenameMode::Exchange),
            rename("d/sub", "d", RenameMode::Exchange),
        ] {
            expect_refused_unchanged(&mut vol, &vol_path, &dest, op);
            // The volume goes on.
            vol.commit(Op::Mkdir {
                path: p("d/x"),
                node,
            })
            .unwrap();
            vol.commit(Op::Rmdir { path: p("d/x") }).unwrap();
        }
    }
}

/// The errno a failed commit (or seal) gives its caller.
fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    use std::error::Error;
    let mut cause: Option<&dyn Error> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        if let Some(libjfs::tree::TreeError::Unchanged { errno, .. }) = c.downcast_ref() {
            return Some(errno.raw_os_error());
        }
        cause = c.source();
    }
    None
}

const FILE: NewNode = NewNode {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

/// A volume without history at `dir`/small/vol, on a tmpfs mounted there
/// with `options`, whose segments of `segment_bytes` are stored as they are.
fn volume_on_small_disk(
    dir: &std::path::Path,
    options: &str,
    segment_bytes: u64,
) -> (common::Tmpfs, std::path::PathBuf, Volume) {
    let disk = common::Tmpfs::mount(&dir.join("small"), options);
    let vol_path = disk.path().join("vol");
    Volume::init(&vol_path, Role::Master)
        .unwrap()
        .set_history(false)
        .unwrap();
    let config = libjfs::JournalConfig {
        segment_bytes,
        zstd_level: None,
    };
    let vol = Volume::open_with(&vol_path, config).unwrap();
    (disk, vol_path, vol)
}

/// A full disk: a write that finds no room is taken back and answered with
/// ENOSPC, whether the journal or the tree ran out, and the volume goes
/// on: removals give room back, and the journal still replays to the tree.
/// Segments of 256 KiB roll over (and fail to seal) while the disk is full.
#[test]
fn a_full_disk_takes_the_write_back_and_the_volume_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_disk, vol_path, mut vol) = volume_on_small_disk(dir.path(), "size=6m", 256 << 10);
    let node = FILE;
    // Bytes that do not compress, 200 KiB a file.
    let mut noise = common::Noise::new();
    let mut files = 0;
    let err = loop {
        assert!(files < 100, "6 MiB took {files} files of 200 KiB");
        let path = p(&format!("f{files}"));
        vol.commit(Op::Create {
            path: path.clone(),
            node,
        })
        .unwrap();
        let head = vol.head();
        let data = noise.bytes(200 << 10);
        match vol.commit(Op::Write {
            path,
            offset: 0,
            data,
        }) {
            Ok(_) => files += 1,
            Err(e) => {
                assert_eq!(vol.head(), head, "the failed write was taken back");
                break e;
            }
        }
    };
    assert_eq!(errno_of(&err), Some(libc_enospc()), "{err:?}");
    assert!(files >= 5, "only {files} files fit");
    // Removals need records too, and free the room.
    for i in 0..3 {
        vol.commit(Op::Unlink {
            path: p(&format!("f{i}")),
        })
        .unwrap();
    }
    vol.commit(Op::Write {
        path: p(&format!("f{files}")),
        offset: 0,
        data: b"fits now".to_vec(),
    })
    .unwrap();
    vol.sync().unwrap();
    let head = vol.head();
    let dest = dir.path().join("expect");
    materialize(&vol_path, head.seq, &dest, |_| {}).unwrap();
    let diffs = compare_trees(&vol.tree_path(), &dest, &CompareOptions::default()).unwrap();
    assert!(diffs.is_empty(), "the tree left the journal: {diffs:?}");
}

/// A seal that finds no room for its copy fails with the system's own
/// error, named as the write it is. A segment zstd cannot shrink is read
/// straight into the buffer that goes to the disk, and a failed write of
/// that buffer must not pass for a failed read: the seal tells errors
/// apart by their errno (it writes again without `O_DIRECT` on EINVAL).
#[test]
fn a_seal_without_room_fails_with_the_write_errno() {
    let dir = tempfile::tempdir().unwrap();
    // Segments that fill only when sealed by hand.
    let (disk, _, mut vol) = volume_on_small_disk(dir.path(), "size=8m", 1 << 30);
    vol.commit(Op::Create {
        path: p("f"),
        node: FILE,
    })
    .unwrap();
    let mut noise = common::Noise::new();
    for i in 0..2u64 {
        vol.commit(Op::Write {
            path: p("f"),
            offset: i << 20,
            data: noise.bytes(1 << 20),
        })
        .unwrap();
    }
    vol.sync().unwrap();
    // Leave 256 KiB: room for a new active segment, not for a 2 MiB copy.
    let filler = disk.fill("filler", 256 << 10);

    let err = vol
        .journal_mut()
        .seal()
        .expect_err("a 2 MiB copy fits in 256 KiB");
    assert_eq!(errno_of(&err), Some(libc_enospc()), "{err:#?}");
    let mut message = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        message += &format!(": {c}");
        cause = c.source();
    }
    assert!(
        !message.contains("read "),
        "a failed write told as a read: {message}"
    );
    // The segment stays active, and seals once there is room.
    std::fs::remove_file(&filler).unwrap();
    vol.journal_mut()
        .seal()
        .unwrap()
        .expect("a segment to seal");
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// A volume whose disk has no byte left (another file took it): writes are
/// refused with nothing journaled, syncs of what was journaled go on, and
/// once there is room the volume opens as it was.
#[test]
fn a_volume_on_a_disk_with_no_room_left_refuses_writes_and_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let disk = common::Tmpfs::mount(&dir.path().join("small"), "size=8m");
    let small = disk.path().to_owned();
    let vol_path = small.join("vol");
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut vol = Volume::init(&vol_path, Role::Master).unwrap();
    vol.commit(Op::Create { path: p("a"), node }).unwrap();
    vol.sync().unwrap();
    // Everything else the disk holds goes to a file beside the volume.
    let filler = disk.fill("filler", 0);
    let mut failures = 0;
    for i in 0..50 {
        let path = p(&format!("n{i}"));
        let created = vol
            .commit(Op::Create {
                path: path.clone(),
                node,
            })
            .and_then(|_| {
                vol.commit(Op::Write {
                    path,
                    offset: 0,
                    data: vec![2; 16 << 10],
                })
            });
        let synced = vol.sync();
        if created.is_err() || synced.is_err() {
            failures += 1;
        }
    }
    assert!(failures > 0, "the disk never ran out of room");
    let head = vol.head();
    drop(vol);
    std::fs::remove_file(&filler).unwrap();
    let vol =
        Volume::open(&vol_path).unwrap_or_else(|e| panic!("after {failures} failures: {e:?}"));
    assert_eq!(vol.head(), head);
    assert_eq!(vol.applied(), head);
}
