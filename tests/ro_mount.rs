//! The read-only mount a replica serves (`libjfs::rofs`), mounted in this
//! process over a volume's tree while records are applied underneath: it
//! refuses every write, shows exactly the tree, shows each record at once
//! after `record_applied`, and never shows one half-applied.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::fuse::threads::Readers;
use libjfs::record::{RenameMode, SpecialKind};
use libjfs::rofs::{Invalidator, ReadOnlyMount};
use libjfs::{NewNode, Node, Op, RelPath, Role, Timestamp, Volume};

/// A volume, its tree mounted read-only, and the gate the mount shares with
/// whoever applies records. Dropping it unmounts, even after a failure.
struct Fixture {
    vol: Volume,
    tree: PathBuf,
    mnt: PathBuf,
    gate: Arc<RwLock<()>>,
    inval: Invalidator,
    mount: Option<ReadOnlyMount>,
    _dir: tempfile::TempDir,
}

fn rel(p: impl AsRef<[u8]>) -> RelPath {
    RelPath::new(p.as_ref()).unwrap()
}

fn node(mode: u32) -> NewNode {
    NewNode {
        mode,
        uid: 0,
        gid: 0,
    }
}

impl Fixture {
    /// Mounts a fresh volume's tree after committing `ops` to it.
    fn new(ops: Vec<Op>) -> Fixture {
        Fixture::with_readers(ops, Readers::Auto)
    }

    /// [`Fixture::new`] with `readers` threads reading the kernel's requests.
    fn with_readers(ops: Vec<Op>, readers: Readers) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut vol = Volume::init(&dir.path().join("vol"), Role::Master).unwrap();
        for op in ops {
            vol.commit(op).unwrap();
        }
        let tree = vol.tree_path();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let gate = Arc::new(RwLock::new(()));
        let mount =
            ReadOnlyMount::mount_with(&tree, &mnt, "jfs-test:ro", gate.clone(), readers).unwrap();
        assert!(common::is_mounted(&mnt));
        Fixture {
            vol,
            tree,
            mnt,
            gate,
            inval: mount.invalidator(),
            mount: Some(mount),
            _dir: dir,
        }
    }

    fn m(&self, p: impl AsRef<[u8]>) -> PathBuf {
        self.mnt.join(OsStr::from_bytes(p.as_ref()))
    }

    fn t(&self, p: impl AsRef<[u8]>) -> PathBuf {
        self.tree.join(OsStr::from_bytes(p.as_ref()))
    }

    /// Applies one record the way the replica's applier does: under the
    /// gate, then tells the mount once the gate is released.
    fn apply(&mut self, op: Op) {
        {
            let _w = self.gate.write().unwrap();
            self.vol.commit(op.clone()).unwrap();
        }
        self.inval.record_applied(&op);
    }

    fn assert_same_as_tree(&self) {
        let diffs = compare_trees(&self.tree, &self.mnt, &CompareOptions::default()).unwrap();
        assert!(
            diffs.is_empty(),
            "the mount differs from the tree:\n{}",
            diffs
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = m.unmount();
        }
        if common::is_mounted(&self.mnt) {
            let _ = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .status();
        }
    }
}

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

const EROFS: i32 = 30;

fn sample_tree() -> Vec<Op> {
    let mut ops = vec![
        Op::Mkdir {
            path: rel("dir"),
            node: node(0o755),
        },
        Op::Mkdir {
            path: rel("dir/sub"),
            node: NewNode {
                mode: 0o1770,
                uid: 1234,
                gid: 99,
            },
        },
        Op::Create {
            path: rel("dir/file"),
            node: node(0o644),
        },
        Op::Write {
            path: rel("dir/file"),
            offset: 0,
            data: b"hello, replica\n".to_vec(),
        },
        Op::Create {
            path: rel(b"caf\xe9-\xff\x01"),
            node: NewNode {
                mode: 0o4711,
                uid: 1000,
                gid: 1000,
            },
        },
        Op::Write {
            path: rel(b"caf\xe9-\xff\x01"),
            offset: 0,
            data: vec![7; 10000],
        },
        Op::Link {
            from: rel("dir/file"),
            to: rel("dir/sub/hardlink"),
        },
        Op::Symlink {
            path: rel("abs-link"),
            target: b"/etc/passwd".to_vec(),
            uid: 0,
            gid: 0,
        },
        Op::Symlink {
            path: rel("dir/rel-link"),
            target: b"../nowhere/\xfe".to_vec(),
            uid: 5,
            gid: 6,
        },
        Op::Create {
            path: rel("sparse"),
            node: node(0o600),
        },
        Op::Truncate {
            path: rel("sparse"),
            size: 16 << 20,
        },
        Op::Write {
            path: rel("sparse"),
            offset: 8 << 20,
            data: vec![0xab; 8192],
        },
        Op::Mknod {
            path: rel("fifo"),
            kind: SpecialKind::Fifo,
            node: node(0o640),
        },
        Op::SetXattr {
            node: Node::Path(rel("dir/file")),
            name: b"user.color".to_vec(),
            value: b"blue".to_vec(),
        },
        Op::SetXattr {
            node: Node::Path(rel("dir")),
            name: b"user.big".to_vec(),
            value: vec![b'x'; 3000],
        },
        Op::SetAttr {
            node: Node::Path(rel("dir/file")),
            mode: None,
            uid: None,
            gid: None,
            atime: None,
            mtime: Some(Timestamp::new(1_234_567_890, 123_456_789)),
        },
        Op::SetAttr {
            node: Node::Path(rel("sparse")),
            mode: None,
            uid: None,
            gid: None,
            atime: None,
            mtime: Some(Timestamp::new(-86_400 * 400, 5)),
        },
    ];
    // An ACL that gives user 1000 read access (version 2: user::rw-,
    // user:1000:r--, group::r--, mask::r--, other::---).
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    ops.push(Op::SetXattr {
        node: Node::Path(rel("dir/file")),
        name: b"system.posix_acl_access".to_vec(),
        value: acl,
    });
    ops
}

#[test]
fn every_write_is_refused_with_erofs() {
    let f = Fixture::new(sample_tree());
    let file = f.m("dir/file");
    let dir = f.m("dir");
    assert_eq!(errno_of(File::create(f.m("new"))), Some(EROFS), "create");
    assert_eq!(
        errno_of(fs::OpenOptions::new().write(true).open(&file)),
        Some(EROFS),
        "open O_WRONLY"
    );
    assert_eq!(
        errno_of(fs::OpenOptions::new().read(true).write(true).open(&file)),
        Some(EROFS),
        "open O_RDWR"
    );
    assert_eq!(
        errno_of(fs::create_dir(f.m("newdir"))),
        Some(EROFS),
        "mkdir"
    );
    assert_eq!(errno_of(fs::remove_file(&file)), Some(EROFS), "unlink");
    assert_eq!(
        errno_of(fs::remove_dir(f.m("dir/sub"))),
        Some(EROFS),
        "rmdir"
    );
    assert_eq!(
        errno_of(fs::rename(&file, f.m("dir/renamed"))),
        Some(EROFS),
        "rename"
    );
    assert_eq!(
        errno_of(fs::hard_link(&file, f.m("dir/link2"))),
        Some(EROFS),
        "link"
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", f.m("newlink"))),
        Some(EROFS),
        "symlink"
    );
    assert_eq!(
        errno_of(fs::set_permissions(
            &file,
            fs::Permissions::from_mode(0o777)
        )),
        Some(EROFS),
        "chmod"
    );
    assert_eq!(
        errno_of(std::os::unix::fs::chown(&file, Some(1), Some(1))),
        Some(EROFS),
        "chown"
    );
    assert_eq!(
        errno_of(std::os::unix::fs::lchown(f.m("abs-link"), Some(1), Some(1))),
        Some(EROFS),
        "lchown"
    );
    let out = std::process::Command::new("truncate")
        .args(["-s", "0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "truncate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        },
    };
    assert_eq!(
        rustix::fs::utimensat(rustix::fs::CWD, &file, &now, rustix::fs::AtFlags::empty()),
        Err(rustix::io::Errno::ROFS),
        "utimes"
    );
    assert_eq!(
        rustix::fs::setxattr(&file, "user.new", b"v", rustix::fs::XattrFlags::empty()),
        Err(rustix::io::Errno::ROFS),
        "setxattr"
    );
    assert_eq!(
        rustix::fs::removexattr(&file, "user.color"),
        Err(rustix::io::Errno::ROFS),
        "removexattr"
    );
    assert_eq!(
        rustix::fs::mknodat(
            rustix::fs::CWD,
            f.m("newfifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0
        ),
        Err(rustix::io::Errno::ROFS),
        "mknod fifo"
    );
    assert_eq!(
        rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK),
        Err(rustix::io::Errno::ROFS),
        "access W_OK"
    );
    // Nothing changed.
    f.assert_same_as_tree();
}

#[test]
fn the_mount_shows_the_tree() {
    let f = Fixture::new(sample_tree());
    f.assert_same_as_tree();

    // Hard links share an inode number through the mount, as in the tree.
    let a = fs::metadata(f.m("dir/file")).unwrap();
    let b = fs::metadata(f.m("dir/sub/hardlink")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), fs::metadata(f.t("dir/file")).unwrap().ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        a.mtime_nsec(),
        123_456_789,
        "nanosecond mtimes come through"
    );
    let sparse = fs::metadata(f.m("sparse")).unwrap();
    assert_eq!(sparse.mtime(), -86_400 * 400, "times before 1970 too");
    // Sparse files read as zeros around their data.
    let data = fs::read(f.m("sparse")).unwrap();
    assert_eq!(data.len(), 16 << 20);
    assert!(data[..8 << 20].iter().all(|&b| b == 0));
    assert!(data[8 << 20..(8 << 20) + 8192].iter().all(|&b| b == 0xab));
    // Symlinks are not followed.
    assert_eq!(
        fs::read_link(f.m("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(fs::symlink_metadata(f.m("abs-link"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Non-UTF-8 names are listed and opened.
    let names: Vec<Vec<u8>> = fs::read_dir(&f.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert!(names.contains(&b"caf\xe9-\xff\x01".to_vec()), "{names:?}");
    assert_eq!(fs::read(f.m(b"caf\xe9-\xff\x01")).unwrap(), vec![7; 10000]);
    // The ACL is enforced by the kernel: user 1000 may read, user 1001 not.
    let as_user = |uid: u32| {
        std::process::Command::new("setpriv")
            .args([
                format!("--reuid={uid}"),
                "--regid=1000".into(),
                "--clear-groups".into(),
                "cat".into(),
            ])
            .arg(f.m("dir/file"))
            .output()
            .unwrap()
    };
    let ok = as_user(1000);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(ok.stdout, b"hello, replica\n");
    assert!(!as_user(1001).status.success());
    // statfs answers.
    let st = rustix::fs::statvfs(&f.mnt).unwrap();
    assert!(st.f_blocks > 0);
    // Sequential reads get the mount's read-ahead, not the kernel's 128 KiB.
    assert_eq!(common::read_ahead_kb(&f.mnt), libjfs::mounts::READ_AHEAD_KB);
}

#[test]
fn records_applied_underneath_show_at_once() {
    let mut f = Fixture::new(sample_tree());
    // An open file that was read before reads the rewritten bytes.
    let open = File::open(f.m("dir/file")).unwrap();
    let mut buf = vec![0u8; 100];
    let n = open.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"hello, replica\n");
    f.apply(Op::Write {
        path: rel("dir/file"),
        offset: 0,
        data: b"HELLO".to_vec(),
    });
    let n = open.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"HELLO, replica\n");
    f.apply(Op::Truncate {
        path: rel("dir/file"),
        size: 3,
    });
    let n = open.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"HEL");
    assert_eq!(fs::metadata(f.m("dir/file")).unwrap().len(), 3);
    // The other name of the hard link too.
    assert_eq!(fs::read(f.m("dir/sub/hardlink")).unwrap(), b"HEL");
    drop(open);

    // Rename: the old name is gone, the new one has the content.
    f.apply(Op::Rename {
        from: rel("dir/file"),
        to: rel("dir/moved"),
        mode: RenameMode::Replace,
    });
    assert_eq!(
        fs::metadata(f.m("dir/file")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(fs::read(f.m("dir/moved")).unwrap(), b"HEL");

    // Unlink, and a new file under the old name.
    f.apply(Op::Unlink {
        path: rel("dir/moved"),
    });
    assert_eq!(
        fs::metadata(f.m("dir/moved")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    f.apply(Op::Create {
        path: rel("dir/file"),
        node: node(0o600),
    });
    f.apply(Op::Write {
        path: rel("dir/file"),
        offset: 0,
        data: b"a new file".to_vec(),
    });
    assert_eq!(fs::read(f.m("dir/file")).unwrap(), b"a new file");
    assert_eq!(
        fs::metadata(f.m("dir/file")).unwrap().ino(),
        fs::metadata(f.t("dir/file")).unwrap().ino()
    );

    // Directory listings follow.
    let list = |f: &Fixture| {
        let mut v: Vec<String> = fs::read_dir(f.m("dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(list(&f), ["file", "rel-link", "sub"]);
    f.apply(Op::Mkdir {
        path: rel("dir/later"),
        node: node(0o700),
    });
    assert_eq!(list(&f), ["file", "later", "rel-link", "sub"]);
    f.apply(Op::Rmdir {
        path: rel("dir/later"),
    });
    assert_eq!(list(&f), ["file", "rel-link", "sub"]);

    // Mode, owner and mtime changes are seen by stat.
    f.apply(Op::SetAttr {
        node: Node::Path(rel("dir/file")),
        mode: Some(0o640),
        uid: Some(42),
        gid: Some(43),
        atime: None,
        mtime: Some(Timestamp::new(1_000_000_000, 999)),
    });
    let md = fs::metadata(f.m("dir/file")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (42, 43));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 999));
    f.apply(Op::SetAttr {
        node: Node::Root,
        mode: Some(0o711),
        uid: None,
        gid: None,
        atime: None,
        mtime: None,
    });
    assert_eq!(fs::metadata(&f.mnt).unwrap().mode() & 0o7777, 0o711);
    // Xattrs.
    f.apply(Op::SetXattr {
        node: Node::Path(rel("dir/file")),
        name: b"user.k".to_vec(),
        value: b"v1".to_vec(),
    });
    let mut v = [0u8; 16];
    let n = rustix::fs::getxattr(f.m("dir/file"), "user.k", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"v1");
    f.apply(Op::RemoveXattr {
        node: Node::Path(rel("dir/file")),
        name: b"user.k".to_vec(),
    });
    assert!(rustix::fs::getxattr(f.m("dir/file"), "user.k", &mut v[..]).is_err());

    f.assert_same_as_tree();
}

/// With several threads reading requests, each answers its reads; with
/// one, reads of 64 KiB go to workers. Either way a read is answered whole
/// under the gate.
#[test]
fn a_read_never_sees_a_record_half_applied() {
    for readers in [Readers::Count(4), Readers::Count(1)] {
        a_read_never_sees_a_record_half_applied_with(readers);
    }
}

fn a_read_never_sees_a_record_half_applied_with(readers: Readers) {
    const SIZE: usize = 64 << 10;
    let mut f = Fixture::with_readers(
        vec![
            Op::Create {
                path: rel("f"),
                node: node(0o644),
            },
            Op::Write {
                path: rel("f"),
                offset: 0,
                data: vec![0; SIZE],
            },
        ],
        readers,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, path) = (stop.clone(), reads.clone(), f.m("f"));
        std::thread::spawn(move || {
            let file = File::open(path).unwrap();
            let mut buf = vec![0u8; SIZE];
            while !stop.load(Ordering::Relaxed) {
                let n = file.read_at(&mut buf, 0).unwrap();
                assert_eq!(n, SIZE, "short read");
                let first = buf[0];
                if let Some(i) = buf.iter().position(|&b| b != first) {
                    panic!("read mixes {first} and {} (at {i})", buf[i]);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..500u32 {
        f.apply(Op::Write {
            path: rel("f"),
            offset: 0,
            data: vec![(i % 251) as u8 + 1; SIZE],
        });
    }
    // Let the reader see the last state a few times.
    let seen = reads.load(Ordering::Relaxed);
    while reads.load(Ordering::Relaxed) < seen + 3 && !reader.is_finished() {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw a half-applied record");
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(
        fs::read(f.m("f")).unwrap(),
        vec![(499 % 251) as u8 + 1; SIZE]
    );
}

#[test]
fn a_deleted_inode_is_not_served_for_a_new_file() {
    let mut f = Fixture::new(vec![]);
    for round in 0..50u32 {
        let name = "victim";
        let content = format!("round {round}").into_bytes();
        f.apply(Op::Create {
            path: rel(name),
            node: node(0o600 + (round % 2) * 0o044),
        });
        f.apply(Op::Write {
            path: rel(name),
            offset: 0,
            data: content.clone(),
        });
        // The kernel looks it up and reads it.
        let md = fs::metadata(f.m(name)).unwrap();
        assert_eq!(md.ino(), fs::metadata(f.t(name)).unwrap().ino());
        assert_eq!(md.mode() & 0o777, 0o600 + (round % 2) * 0o044);
        assert_eq!(fs::read(f.m(name)).unwrap(), content);
        f.apply(Op::Unlink { path: rel(name) });
        assert_eq!(
            fs::metadata(f.m(name)).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // Something else gets a file in between, to move inode numbers around.
        f.apply(Op::Create {
            path: rel(format!("other{round}")),
            node: node(0o644),
        });
        f.apply(Op::Unlink {
            path: rel(format!("other{round}")),
        });
    }
    // Also a name that turns from a file into a directory.
    f.apply(Op::Create {
        path: rel("x"),
        node: node(0o644),
    });
    assert!(fs::metadata(f.m("x")).unwrap().is_file());
    f.apply(Op::Unlink { path: rel("x") });
    f.apply(Op::Mkdir {
        path: rel("x"),
        node: node(0o755),
    });
    assert!(fs::metadata(f.m("x")).unwrap().is_dir());
    f.assert_same_as_tree();
}

#[test]
fn mount_points_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let gate = Arc::new(RwLock::new(()));
    let missing = ReadOnlyMount::mount(&tree, &dir.path().join("nope"), "x", gate.clone());
    assert!(missing
        .err()
        .unwrap()
        .to_string()
        .contains("does not exist"));
    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("f"), b"").unwrap();
    let e = ReadOnlyMount::mount(&tree, &full, "x", gate.clone()).err();
    assert!(e.unwrap().to_string().contains("not empty"));
    // Over the tree it serves, or a directory in it.
    fs::create_dir(tree.join("sub")).unwrap();
    for inside in [tree.clone(), tree.join("sub")] {
        let e = ReadOnlyMount::mount(&tree, &inside, "x", gate.clone()).err();
        assert!(e.unwrap().to_string().contains("is inside the volume"));
        assert!(!common::is_mounted(&inside));
    }
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = ReadOnlyMount::mount(&tree, &mnt, "x", gate.clone()).unwrap();
    let again = ReadOnlyMount::mount(&tree, &mnt, "x", gate.clone()).err();
    assert!(again.unwrap().to_string().contains("busy"));
    m.unmount().unwrap();
    assert!(!common::is_mounted(&mnt));
    // Dropping unmounts too.
    let m = ReadOnlyMount::mount(&tree, &mnt, "x", gate).unwrap();
    assert!(common::is_mounted(&mnt));
    drop(m);
    assert!(!common::is_mounted(&mnt));
}
