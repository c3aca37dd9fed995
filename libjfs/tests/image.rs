//! Images: a round trip keeps everything invariant 2 names, tree and attic;
//! damaged, truncated and foreign images are refused and change nothing.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::image::{self, ImageError, ImageHeader};
use libjfs::volume::ATTIC_DIR;
use libjfs::{NewNode, Op, Position, RelPath, Role, Volume, VolumeId};
use rustix::fs::{AtFlags, FileType, Timespec, Timestamps, XattrFlags, CWD};

fn at(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel))
}

fn write(root: &Path, rel: &[u8], data: &[u8]) {
    std::fs::write(at(root, rel), data).unwrap();
}

fn mkdir(root: &Path, rel: &[u8]) {
    std::fs::create_dir(at(root, rel)).unwrap();
}

fn xattr(root: &Path, rel: &[u8], name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(at(root, rel), name, value, XattrFlags::empty()).unwrap();
}

fn mtime(root: &Path, rel: &[u8], sec: i64, nsec: i64) {
    let t = Timestamps {
        last_access: Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        },
    };
    rustix::fs::utimensat(CWD, at(root, rel), &t, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// A POSIX ACL as the kernel stores it in `system.posix_acl_*`.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const NO_ID: u32 = u32::MAX;

/// A tree with every kind of node, and an attic with entries that share
/// inodes with it.
fn build(tree: &Path, attic: &Path) {
    mkdir(tree, b"d");
    mkdir(tree, b"d/e");
    mkdir(tree, b"d/e/empty");
    write(tree, b"d/file", b"hello\n");
    write(tree, b"empty", b"");
    write(tree, b"setuid", b"#!/bin/sh\n");
    std::fs::set_permissions(at(tree, b"setuid"), PermissionsExt::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(at(tree, b"d/e"), PermissionsExt::from_mode(0o1777)).unwrap();
    write(tree, b"none", b"x");
    std::fs::set_permissions(at(tree, b"none"), PermissionsExt::from_mode(0o000)).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(tree, b"big", &big);

    // Holes: inside, leading, trailing, and a file that is all hole.
    let mut f = File::create(at(tree, b"sparse")).unwrap();
    f.set_len(5 << 20).unwrap();
    f.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"island").unwrap();
    f.seek(std::io::SeekFrom::Start(3 << 20)).unwrap();
    f.write_all(&[0u8; 8192]).unwrap(); // written zeros are data, not a hole
    drop(f);
    File::create(at(tree, b"hole-only"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();

    std::os::unix::fs::symlink("d/file", at(tree, b"link")).unwrap();
    std::os::unix::fs::symlink(
        std::ffi::OsStr::from_bytes(b"nowhere/\xff"),
        at(tree, b"dangling"),
    )
    .unwrap();
    let mk = |rel: &[u8], ft: FileType, dev: u64| {
        rustix::fs::mknodat(
            CWD,
            at(tree, rel),
            ft,
            rustix::fs::Mode::from_raw_mode(0o640),
            dev,
        )
        .unwrap()
    };
    mk(b"fifo", FileType::Fifo, 0);
    mk(
        b"null",
        FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    mk(b"loop", FileType::BlockDevice, rustix::fs::makedev(7, 0));
    drop(std::os::unix::net::UnixListener::bind(at(tree, b"socket")).unwrap());

    write(tree, b"h1", b"linked\n");
    std::fs::hard_link(at(tree, b"h1"), at(tree, b"d/h2")).unwrap();
    std::fs::hard_link(at(tree, b"h1"), at(tree, b"d/e/h3")).unwrap();
    std::fs::hard_link(at(tree, b"fifo"), at(tree, b"d/fifo2")).unwrap();

    xattr(tree, b"d/file", "user.x", b"file value");
    xattr(tree, b"d", "user.x", b"dir value");
    xattr(tree, b"", "user.root", b"root value");
    xattr(tree, b"h1", "user.empty", b"");
    xattr(tree, b"big", "user.big", &[7u8; 3000]);
    // An access ACL on a file and a default ACL on a directory.
    let access = acl(&[
        (0x01, 6, NO_ID),
        (0x02, 4, 1234),
        (0x04, 4, NO_ID),
        (0x10, 4, NO_ID),
        (0x20, 0, NO_ID),
    ]);
    xattr(tree, b"d/file", "system.posix_acl_access", &access);
    let default = acl(&[
        (0x01, 7, NO_ID),
        (0x04, 5, NO_ID),
        (0x08, 5, 4321),
        (0x10, 5, NO_ID),
        (0x20, 0, NO_ID),
    ]);
    xattr(tree, b"d/e", "system.posix_acl_default", &default);

    // Names that are not UTF-8, hold a newline, or are as long as allowed.
    write(tree, b"caf\xe9", b"latin-1\n");
    write(tree, b"new\nline", b"nl\n");
    let long = vec![b'n'; 255];
    write(tree, &long, b"long name\n");
    // Deep directories.
    let mut deep = b"deep".to_vec();
    mkdir(tree, &deep);
    for i in 0..60 {
        deep.extend_from_slice(format!("/{i}").as_bytes());
        mkdir(tree, &deep);
    }
    let mut leaf = deep.clone();
    leaf.extend_from_slice(b"/leaf");
    write(tree, &leaf, b"at the bottom\n");

    std::os::unix::fs::lchown(at(tree, b"d/file"), Some(1000), Some(1001)).unwrap();
    std::os::unix::fs::lchown(at(tree, b"link"), Some(1002), Some(1003)).unwrap();
    std::os::unix::fs::lchown(at(tree, b"d"), Some(7), Some(8)).unwrap();

    // The attic: an unlinked file, a removed directory, and a name of an
    // inode the tree still has (a link unlinked from a group).
    write(attic, b"17", b"removed at 17\n");
    mkdir(attic, b"23");
    std::fs::hard_link(at(tree, b"h1"), at(attic, b"30")).unwrap();
    xattr(attic, b"17", "user.a", b"attic");

    // Mtimes last, directories after their contents.
    for (rel, sec) in [
        (&b"d/file"[..], 1_600_000_001),
        (b"link", 1_600_000_002),
        (b"sparse", 1_600_000_003),
        (b"d/e/empty", 1_600_000_004),
        (b"d/e", 1_600_000_005),
        (b"d", 1_600_000_006),
        (b"", 1_600_000_007),
    ] {
        mtime(tree, rel, sec, 123_456_789);
    }
    mtime(attic, b"23", 1_500_000_000, 1);
}

fn volume_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    let (tree, attic) = (dir.join("tree"), dir.join("attic"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::create_dir_all(&attic).unwrap();
    (tree, attic)
}

fn position(seq: u64) -> Position {
    Position {
        seq,
        chain: [seq as u8; 32],
    }
}

fn image_of(tree: &Path, attic: &Path, volume: VolumeId, seq: u64) -> Vec<u8> {
    let header = ImageHeader {
        volume,
        position: position(seq),
    };
    image::write_image(Vec::new(), header, tree, attic, &mut |_| {})
        .unwrap()
        .0
}

fn same(left: &Path, right: &Path) {
    let diffs = compare_trees(left, right, &CompareOptions::default()).unwrap();
    assert!(
        diffs.is_empty(),
        "{} and {} differ:\n{}",
        left.display(),
        right.display(),
        diffs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn round_trip_keeps_every_kind_of_node_in_tree_and_attic() {
    let src = tempfile::tempdir().unwrap();
    let (tree, attic) = volume_dirs(src.path());
    build(&tree, &attic);
    let id = VolumeId([5; 16]);
    let bytes = image_of(&tree, &attic, id, 4242);
    let measured = image::measure(&tree, &attic).unwrap();
    assert!(measured.data_bytes >= 3_000_000);

    let dst = tempfile::tempdir().unwrap();
    let (dtree, dattic) = volume_dirs(dst.path());
    let mut last = 0;
    let header =
        image::read_image(bytes.as_slice(), Some(id), dst.path(), &mut |n| last = n).unwrap();
    assert_eq!(header.volume, id);
    assert_eq!(header.position, position(4242));
    assert_eq!(last, bytes.len() as u64, "progress reaches the whole image");
    same(&tree, &dtree);
    same(&attic, &dattic);
    // The hardlink group spans tree and attic.
    let ino = |p: PathBuf| std::fs::symlink_metadata(p).unwrap().ino();
    assert_eq!(ino(dtree.join("h1")), ino(dattic.join("30")));
    assert_ne!(ino(dtree.join("h1")), ino(dattic.join("17")));
    // Holes stay holes: the all-hole file allocates nothing.
    assert_eq!(
        std::fs::metadata(dtree.join("hole-only")).unwrap().blocks(),
        0
    );
    // The image is compressed: the 5 MiB sparse file and 3 MB of pattern
    // take far less.
    assert!(bytes.len() < 1 << 20, "image of {} bytes", bytes.len());
}

/// A small replica volume and an image of another state of its volume.
fn replica_and_image() -> (tempfile::TempDir, PathBuf, Vec<u8>, VolumeId) {
    let dir = tempfile::tempdir().unwrap();
    let master_path = dir.path().join("master");
    let mut master = Volume::init(&master_path, Role::Master).unwrap();
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let p = |s: &str| RelPath::new(s).unwrap();
    master
        .commit(Op::Mkdir {
            path: p("d"),
            node: NewNode {
                mode: 0o755,
                ..node
            },
        })
        .unwrap();
    for i in 0..3 {
        let path = p(&format!("d/f{i}"));
        master
            .commit(Op::Create {
                path: path.clone(),
                node,
            })
            .unwrap();
        master
            .commit(Op::Write {
                path,
                offset: 0,
                data: format!("file {i}\n").into_bytes(),
            })
            .unwrap();
    }
    master
        .commit(Op::Symlink {
            path: p("l"),
            target: b"d/f0".to_vec(),
            uid: 0,
            gid: 0,
        })
        .unwrap();
    let id = master.id();
    let (bytes, header, _) = image::write_volume(&master, Vec::new(), &mut |_| {}).unwrap();
    assert_eq!(header.position, master.applied());
    let secret = std::fs::read(master_path.join("secret")).unwrap();
    drop(master);
    let replica_path = dir.path().join("replica");
    drop(Volume::init_with(&replica_path, Role::Replica, id, secret.trim_ascii_end()).unwrap());
    std::fs::write(replica_path.join("tree/old"), b"the replica's old state\n").unwrap();
    (dir, replica_path, bytes, id)
}

/// Everything a failed bootstrap must leave as it was.
fn snapshot_of(vol: &Path) -> (Vec<(PathBuf, Vec<u8>)>, Position) {
    let mut files = Vec::new();
    for sub in ["journal", "applied", "tree/old"] {
        let p = vol.join(sub);
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap().path();
                files.push((e.clone(), std::fs::read(&e).unwrap()));
            }
        } else {
            files.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    files.sort();
    let pos = libjfs::volume::peek_applied(vol).unwrap().unwrap();
    (files, pos)
}

#[test]
fn bootstrap_replaces_the_replica_state_and_continues_the_chain() {
    let (dir, replica, bytes, id) = replica_and_image();
    let (v, header) = image::bootstrap(&replica, bytes.as_slice(), &mut |_| {}).unwrap();
    assert_eq!(v.id(), id);
    assert_eq!(v.applied(), header.position);
    assert_eq!(v.head(), header.position);
    assert_eq!(v.journal().first_seq(), header.position.seq + 1);
    assert!(!replica.join("tree/old").exists());
    assert!(!replica.join(libjfs::volume::BOOTSTRAP_DIR).exists());
    drop(v);

    // The master goes on; the replica journals and applies what follows.
    let master_path = dir.path().join("master");
    let mut master = Volume::open(&master_path).unwrap();
    master
        .commit(Op::Write {
            path: RelPath::new("d/f1").unwrap(),
            offset: 100,
            data: b"later".to_vec(),
        })
        .unwrap();
    let later: Vec<Vec<u8>> = master
        .journal()
        .read_from(header.position.seq + 1)
        .unwrap()
        .map(|e| e.unwrap().record.encode().unwrap())
        .collect();
    let mut v = Volume::open(&replica).unwrap();
    v.receive(&later).unwrap();
    v.replay(None, |_| {}).unwrap();
    assert_eq!(v.head(), master.head());
    assert_eq!(v.applied(), master.applied());
    same(&master.tree_path(), &v.tree_path());
    v.sync().unwrap();
    drop(v);
    // Reopened, it is where it was.
    let v = Volume::open(&replica).unwrap();
    assert_eq!(v.applied(), master.applied());
}

#[test]
fn a_damaged_or_truncated_image_is_refused_and_changes_nothing() {
    let (_dir, replica, bytes, _) = replica_and_image();
    let before = snapshot_of(&replica);
    let scratch = tempfile::tempdir().unwrap();
    let attempt = |img: &[u8]| -> Result<ImageHeader, ImageError> {
        let d = scratch.path().join("try");
        let _ = std::fs::remove_dir_all(&d);
        volume_dirs(&d);
        image::read_image(img, None, &d, &mut |_| {})
    };
    attempt(&bytes).unwrap();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 1 << (i % 8);
        assert!(
            attempt(&bad).is_err(),
            "a flipped bit in byte {i} went unnoticed"
        );
    }
    for len in 0..bytes.len() {
        match attempt(&bytes[..len]) {
            Err(ImageError::Truncated { .. }) | Err(ImageError::Header(_)) => {}
            Err(ImageError::Read { .. }) => {} // zstd: the compressed stream ends early
            other => panic!("truncated to {len} bytes: {other:?}"),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(
        attempt(&longer).is_err(),
        "a byte after the end went unnoticed"
    );

    // Through a real bootstrap: some of each, and the volume stays as it was.
    for i in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert!(image::bootstrap(&replica, bad.as_slice(), &mut |_| {}).is_err());
        assert!(image::bootstrap(&replica, &bytes[..i], &mut |_| {}).is_err());
        assert_eq!(snapshot_of(&replica), before, "after byte {i}");
        assert!(!replica.join(libjfs::volume::BOOTSTRAP_DIR).exists());
    }
    Volume::open(&replica).unwrap();
}

#[test]
fn an_image_of_another_volume_or_a_master_is_refused() {
    let (dir, replica, _, _) = replica_and_image();
    let before = snapshot_of(&replica);
    let other = tempfile::tempdir().unwrap();
    let (tree, attic) = volume_dirs(other.path());
    write(&tree, b"x", b"x");
    let foreign = image_of(&tree, &attic, VolumeId([9; 16]), 3);
    match image::bootstrap(&replica, foreign.as_slice(), &mut |_| {}) {
        Err(ImageError::WrongVolume { found, .. }) => assert_eq!(found, VolumeId([9; 16])),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a foreign image was taken"),
    }
    assert_eq!(snapshot_of(&replica), before);
    // A master is not rebuilt from an image.
    let master = dir.path().join("master");
    let img = {
        let v = Volume::open(&master).unwrap();
        image::write_volume(&v, Vec::new(), &mut |_| {}).unwrap().0
    };
    let err = image::bootstrap(&master, img.as_slice(), &mut |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("master"), "{err}");
    // Nor a volume another process holds.
    let held = Volume::open(&replica).unwrap();
    let err = image::bootstrap(&replica, img.as_slice(), &mut |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
    drop(held);
}

#[test]
fn image_items_may_not_leave_tree_and_attic() {
    // Hand-made images whose single op reaches outside: refused, nothing made.
    let dir = tempfile::tempdir().unwrap();
    for op in [
        Op::Create {
            path: RelPath::new("meta/x").unwrap(),
            node: NewNode {
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        },
        Op::Unlink {
            path: RelPath::new("tree/x").unwrap(),
        },
    ] {
        let img = hand_made(&[op]);
        let d = dir.path().join("t");
        let _ = std::fs::remove_dir_all(&d);
        volume_dirs(&d);
        let err = image::read_image(img.as_slice(), None, &d, &mut |_| {}).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
        assert!(!d.join("meta").exists());
    }
    // A symlink planted on the way is not followed.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let img = hand_made(&[
        Op::Symlink {
            path: RelPath::new("tree/s").unwrap(),
            target: outside.as_os_str().as_bytes().to_vec(),
            uid: 0,
            gid: 0,
        },
        Op::Create {
            path: RelPath::new("tree/s/evil").unwrap(),
            node: NewNode {
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        },
    ]);
    let d = dir.path().join("t2");
    volume_dirs(&d);
    let err = image::read_image(img.as_slice(), None, &d, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImageError::Apply { .. }), "{err}");
    assert!(!outside.join("evil").exists());
}

/// An image holding exactly `ops`, built the way the writer frames items.
fn hand_made(ops: &[Op]) -> Vec<u8> {
    use sha2::Digest;
    #[derive(serde::Serialize)]
    enum Item<'a> {
        Op(&'a Op),
        End { items: u64, sha256: [u8; 32] },
    }
    let header = ImageHeader {
        volume: VolumeId([1; 16]),
        position: position(1),
    }
    .encode();
    let mut sha = sha2::Sha256::new();
    sha.update(header);
    let mut raw = Vec::new();
    for op in ops {
        let mut f = Vec::new();
        libjfs::format::encode_frame(&postcard::to_stdvec(&Item::Op(op)).unwrap(), &mut f);
        sha.update(&f);
        raw.extend_from_slice(&f);
    }
    let end = Item::End {
        items: ops.len() as u64,
        sha256: sha.finalize().into(),
    };
    libjfs::format::encode_frame(&postcard::to_stdvec(&end).unwrap(), &mut raw);
    let mut out = header.to_vec();
    out.extend_from_slice(&zstd::encode_all(raw.as_slice(), 1).unwrap());
    out
}

#[test]
fn an_image_file_is_whole_or_absent() {
    let (dir, _, _, _) = replica_and_image();
    let v = Volume::open(&dir.path().join("master")).unwrap();
    let dest = dir.path().join("master.img");
    let (header, stats) = image::write_volume_file(&v, &dest, &mut |_| {}).unwrap();
    assert_eq!(header.position, v.applied());
    assert!(stats.nodes >= 6, "{stats:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(v.path().join(ATTIC_DIR).is_dir());
    // Into a directory that does not exist: an error, no file.
    let bad = dir.path().join("missing/master.img");
    assert!(image::write_volume_file(&v, &bad, &mut |_| {}).is_err());
}

/// A server over `vol` (held in a mutex, as a following replica holds its
/// own), giving images when `images` is set.
fn serve(
    vol: &Arc<Mutex<Volume>>,
    images: bool,
) -> (
    libjfs::ship::server::Server,
    tokio::sync::watch::Sender<libjfs::ship::Head>,
) {
    use libjfs::ship::server::{Server, ServerConfig};
    let v = vol.lock().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(libjfs::ship::Head::of(&v));
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".into(),
        journal_dir: v.path().join(libjfs::volume::JOURNAL_DIR),
        volume_id: v.id(),
        key: libjfs::ship::read_key(&v.path().join(libjfs::volume::SECRET_FILE)).unwrap(),
        head: rx,
        registry_file: None,
        log_name: "test-server",
    };
    drop(v);
    let server = if images {
        Server::start_with_images(cfg, Arc::new(image::LockedVolume(vol.clone()))).unwrap()
    } else {
        Server::start(cfg).unwrap()
    };
    (server, tx)
}

#[test]
fn a_replica_is_bootstrapped_over_the_wire_only_by_a_server_that_gives_images() {
    use libjfs::ship::bootstrap::bootstrap_from;
    let (dir, replica, _, _) = replica_and_image();
    let source = Arc::new(Mutex::new(
        Volume::open(&dir.path().join("master")).unwrap(),
    ));
    let (plain, _h1) = serve(&source, false);
    let (giving, _h2) = serve(&source, true);
    let before = snapshot_of(&replica);

    // A server without images refuses, and the replica stays as it was.
    let err = bootstrap_from(&replica, &plain.local_addr().to_string(), &mut |_| {})
        .err()
        .unwrap();
    let text = anyhow_chain(&err);
    assert!(text.contains("no image here"), "{text}");
    assert_eq!(snapshot_of(&replica), before);

    // A replica holding another key is refused before any image is written.
    let stranger = dir.path().join("stranger");
    let id = source.lock().unwrap().id();
    drop(Volume::init_with(&stranger, Role::Replica, id, b"0123456789abcdef0123").unwrap());
    let err = bootstrap_from(&stranger, &giving.local_addr().to_string(), &mut |_| {})
        .err()
        .unwrap();
    assert!(
        anyhow_chain(&err).contains("wrong key"),
        "{}",
        anyhow_chain(&err)
    );

    // From the server that gives images: the replica gets its tree and position.
    let mut seen = 0;
    let (v, header) = bootstrap_from(&replica, &giving.local_addr().to_string(), &mut |n| {
        seen = n
    })
    .unwrap();
    let src = source.lock().unwrap();
    assert_eq!(header.position, src.applied());
    assert_eq!(v.head(), src.applied());
    assert!(seen > 0);
    same(&src.tree_path(), &v.tree_path());
}

/// An error and its causes on one line.
fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(x) = c {
        s.push_str(": ");
        s.push_str(&x.to_string());
        c = x.source();
    }
    s
}

#[test]
fn a_bootstrap_stopped_while_swapping_is_refused_on_open_and_mended_by_another() {
    let (_dir, replica, bytes, _) = replica_and_image();
    // What a crash between the exchanges leaves: the mark in the staging directory.
    let staging = replica.join(libjfs::volume::BOOTSTRAP_DIR);
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("swapping"), b"").unwrap();
    let err = Volume::open(&replica).err().unwrap().to_string();
    assert!(err.contains("jfs-replica bootstrap again"), "{err}");
    let (v, header) = image::bootstrap(&replica, bytes.as_slice(), &mut |_| {}).unwrap();
    assert_eq!(v.applied(), header.position);
    drop(v);
    assert!(!staging.exists());
    Volume::open(&replica).unwrap();
}

#[test]
fn retention_keeps_the_attic_entries_an_image_brought() {
    let (_dir, replica, bytes, _) = replica_and_image();
    let (v, header) = image::bootstrap(&replica, bytes.as_slice(), &mut |_| {}).unwrap();
    drop(v);
    let p = header.position.seq;
    assert_eq!(libjfs::volume::bootstrapped_at(&replica), Some(p));
    // One entry from before the image's position, one the replica made after it.
    let attic = replica.join(ATTIC_DIR);
    std::fs::write(attic.join((p - 1).to_string()), b"from the image").unwrap();
    std::fs::write(attic.join((p + 1).to_string()), b"made here").unwrap();
    let report = libjfs::retention::prune_attic(&replica, p + 5, false).unwrap();
    assert_eq!(report.entries, 1, "{report:?}");
    assert!(attic.join((p - 1).to_string()).exists());
    assert!(!attic.join((p + 1).to_string()).exists());
}
