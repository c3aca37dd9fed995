mod common;

// A local filesystem that refuses a change (the disk is full, the inode
// table is full, the file would grow past what it allows) leaves nothing
// behind, tells the caller why, and goes on working. So must the mount:
// a refused change is not journaled, the caller gets the filesystem's
// errno (not EIO), and every later operation works as before. Each test
// fills something up through a real `jfs-master mount`, checks that, then
// unmounts cleanly and checks the invariant: replaying the journal to its
// head rebuilds exactly `VOL/tree`, and the tree is at the journal's head.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::tmpfs::Tmpfs;
use common::{assert_same_tree, mounted, ok, MountedMaster};
use rustix::io::Errno;
use serde_json::Value;

/// `len` bytes that do not compress, the same for the same `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// Creates `path` and writes `data` to it, durably: the first error of
/// create, write or fsync.
fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Asserts that `e` is `want`, and says so plainly when it is EIO instead.
#[track_caller]
fn assert_errno(e: &std::io::Error, want: Errno, what: &str) {
    let got = e.raw_os_error().map(Errno::from_raw_os_error);
    assert_eq!(
        got,
        Some(want),
        "{what}: expected {want:?} (errno {}), got {e} (errno {:?})",
        want.raw_os_error(),
        e.raw_os_error()
    );
}

/// What a refused change must not cost: through the mount, a new file can
/// be created, written and read back, and a directory made.
fn assert_keeps_working(mnt: &Path, tag: &str) {
    let f = mnt.join(format!("{tag}-after"));
    fs::write(&f, b"written after the refusal\n")
        .unwrap_or_else(|e| panic!("create and write {}: {e}", f.display()));
    assert_eq!(fs::read(&f).unwrap(), b"written after the refusal\n");
    let d = mnt.join(format!("{tag}-dir"));
    fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    assert!(d.is_dir());
}

/// `jfs-master status VOL --json`.
fn status(vol: &Path) -> Value {
    serde_json::from_str(&ok("jfs-master", &[&"status", &vol, &"--json"])).unwrap()
}

/// The invariant, on an unmounted volume: the tree is at the journal's
/// head, and `jfs-replica materialize` of the journal to that head into a
/// fresh directory gives exactly `VOL/tree`.
fn assert_replays(vol: &Path, dir: &Path) {
    let s = status(vol);
    let head = &s["journal"]["head"];
    assert!(head["seq"].is_u64(), "no journal head in the status: {s}");
    assert_eq!(
        &s["position"], head,
        "the tree is not at the journal's head: {s}"
    );
    let dest = dir.join("replayed");
    let _ = fs::remove_dir_all(&dest);
    let at = head["seq"].as_u64().unwrap().to_string();
    ok("jfs-replica", &[&"materialize", &"--at", &at, &vol, &dest]);
    assert_same_tree(&vol.join("tree"), &dest);
}

#[test]
fn a_full_disk_gives_enospc_and_the_master_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "48m");
    let vol = disk.path().join("vol");
    let mnt = dir.path().join("mnt");
    // Without history a removed file goes away instead of to the attic, so
    // removing files frees room.
    ok("jfs-master", &[&"init", &vol, &"--no-history"]);
    fs::create_dir(&mnt).unwrap();
    let m = MountedMaster::start(&vol, &mnt, &[]);

    // Each MiB written takes a MiB of journal and a MiB of tree, so 48 MiB
    // fill up after about 24 files; 200 means the disk never filled.
    const MIB: usize = 1 << 20;
    let mut written: Vec<PathBuf> = Vec::new();
    let mut refused = None;
    for i in 0..200u64 {
        let f = mnt.join(format!("f{i}"));
        match write_new(&f, &noise(i, MIB)) {
            Ok(()) => written.push(f),
            Err(e) => {
                refused = Some((f, e));
                break;
            }
        }
    }
    let (f, e) = refused.expect("200 MiB of writes fit on a 48 MiB tmpfs");
    assert_errno(&e, Errno::NOSPC, &format!("writing {}", f.display()));
    assert!(
        written.len() >= 3,
        "the disk filled after {} files",
        written.len()
    );

    // The disk is still full: another write is refused the same way (or
    // fits in what the refusal left), never with EIO.
    let again = mnt.join("again");
    if let Err(e) = write_new(&again, &noise(1000, MIB)) {
        assert_errno(&e, Errno::NOSPC, "writing again on the full disk");
    }

    // Removing files works and makes room for new ones.
    for f in &written[..2] {
        fs::remove_file(f).unwrap_or_else(|e| panic!("rm {}: {e}", f.display()));
        assert!(!f.exists());
    }
    assert_keeps_working(&mnt, "small");
    assert_eq!(fs::read(&written[2]).unwrap(), noise(2, MIB));
    assert_same_tree(&mnt, &vol.join("tree"));

    // Unmounting seals the journal's active segment into a copy written
    // beside it; noise does not compress, so that copy needs about as much
    // room as the segment holds, and there is none. The stop is clean all
    // the same: every record is durable, the segment stays active.
    m.unmount();
    assert_replays(&vol, dir.path());
    // With room, the volume mounts again and goes on.
    disk.resize("256m");
    let m = MountedMaster::start(&vol, &mnt, &[]);
    assert_keeps_working(&mnt, "roomy");
    m.unmount();
    assert_replays(&vol, dir.path());
}

#[test]
fn a_full_inode_table_gives_enospc_on_create() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount_with(&dir.path().join("disk"), "size=64m,nr_inodes=200");
    let vol = disk.path().join("vol");
    let mnt = dir.path().join("mnt");
    ok("jfs-master", &[&"init", &vol, &"--no-history"]);
    fs::create_dir(&mnt).unwrap();
    let m = MountedMaster::start(&vol, &mnt, &[]);

    // The volume's own files take some of the 200 inodes; 1000 creates
    // mean the table never filled.
    let mut created: Vec<PathBuf> = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        let f = mnt.join(format!("e{i}"));
        match File::create_new(&f) {
            Ok(_) => created.push(f),
            Err(e) => {
                refused = Some((f, e));
                break;
            }
        }
    }
    let (f, e) = refused.expect("1000 files fit in an inode table of 200");
    assert_errno(&e, Errno::NOSPC, &format!("creating {}", f.display()));
    assert!(!f.exists(), "a refused create left {}", f.display());
    assert!(!created.is_empty(), "no file could be created at all");

    // Removing a file frees an inode, and a create takes it.
    fs::remove_file(&created[0]).unwrap_or_else(|e| panic!("rm {}: {e}", created[0].display()));
    let new = mnt.join("new");
    fs::write(&new, b"one more\n").unwrap_or_else(|e| panic!("create {}: {e}", new.display()));
    assert_eq!(fs::read(&new).unwrap(), b"one more\n");
    assert!(created[1..].iter().all(|f| f.exists()));
    assert_same_tree(&mnt, &vol.join("tree"));

    // Sealing the journal at unmount needs an inode for the sealed copy,
    // and there is none: the stop is clean all the same.
    m.unmount();
    assert_replays(&vol, dir.path());
    disk.remount("nr_inodes=1000");
    let m = MountedMaster::start(&vol, &mnt, &[]);
    assert_keeps_working(&mnt, "roomy");
    m.unmount();
    assert_replays(&vol, dir.path());
}

#[test]
fn a_write_past_the_largest_file_gives_the_local_errno() {
    let (dir, vol, mnt, m) = mounted();
    // A plain file on the filesystem that holds VOL/tree says what it
    // allows: the mount must answer the same.
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).unwrap();

    // 2^63 - 10: offset + length overflows, which the kernel refuses
    // itself. 2^44 (16 TiB): past what ext4 allows (EFBIG there), which
    // only the filesystem under VOL/tree can refuse.
    for (i, offset) in [(1u64 << 63) - 10, 1u64 << 44].into_iter().enumerate() {
        let name = format!("far{i}");
        let data = noise(i as u64, 100);
        let pwrite = |path: &Path| -> Result<usize, Option<i32>> {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            f.write_at(&data, offset).map_err(|e| e.raw_os_error())
        };
        let local = pwrite(&plain.join(&name));
        let through = pwrite(&mnt.join(&name));
        assert_eq!(
            through, local,
            "pwrite of 100 bytes at {offset}: the mount answers {through:?}, \
             a local file {local:?} (Err holds the errno)"
        );
        assert_eq!(
            fs::metadata(mnt.join(&name)).unwrap().len(),
            fs::metadata(plain.join(&name)).unwrap().len(),
            "size after the pwrite at {offset}"
        );
        // Gone again, so that no test reads a 16 TiB sparse file.
        fs::remove_file(mnt.join(&name)).unwrap_or_else(|e| panic!("rm {name}: {e}"));
        assert_keeps_working(&mnt, &name);
    }
    assert_same_tree(&mnt, &vol.join("tree"));

    m.unmount();
    assert_replays(&vol, dir.path());
}

#[test]
fn a_write_into_the_holes_of_a_file_on_a_full_disk_is_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "128m");
    let vol = disk.path().join("vol");
    let mnt = dir.path().join("mnt");
    // With history (the default), each record holds the old contents of
    // what it overwrites; that is what the refusal puts back.
    ok("jfs-master", &[&"init", &vol]);
    fs::create_dir(&mnt).unwrap();
    // Room the test gives back later, from outside the volume.
    let spare = disk.path().join("spare");
    fs::write(&spare, noise(99, 1 << 20)).unwrap();
    let m = MountedMaster::start(&vol, &mnt, &[]);

    // 4 KiB of data, a hole of 8 MiB, 4 KiB of data.
    const MIB: usize = 1 << 20;
    let sparse = mnt.join("sparse");
    let first = noise(1, 4096);
    let last = noise(2, 4096);
    {
        let f = File::create(&sparse).unwrap();
        f.write_all_at(&first, 0).unwrap();
        f.write_all_at(&last, 8 << 20).unwrap();
        f.sync_all().unwrap();
    }
    let old = fs::read(&sparse).unwrap();

    // Fill the disk. The journal's active segment set its room aside when
    // it started, so it is the tree that runs out.
    let mut filled = false;
    for i in 0..200u64 {
        if let Err(e) = write_new(&mnt.join(format!("fill{i}")), &noise(i, MIB)) {
            assert_errno(&e, Errno::NOSPC, "filling the disk");
            filled = true;
            break;
        }
    }
    assert!(filled, "200 MiB of writes fit on a 128 MiB tmpfs");
    // Leave 256 KiB, so that a write into the hole gets part way.
    fs::OpenOptions::new()
        .write(true)
        .open(&spare)
        .unwrap()
        .set_len((MIB - (256 << 10)) as u64)
        .unwrap();

    let f = OpenOptions::new().write(true).open(&sparse).unwrap();
    let e = f
        .write_all_at(&noise(3, MIB), 1 << 20)
        .and_then(|()| f.sync_all())
        .expect_err("1 MiB fits in 256 KiB");
    assert_errno(&e, Errno::NOSPC, "writing into the hole");
    drop(f);
    assert!(
        fs::read(&sparse).unwrap() == old,
        "the refused write left part of itself in the file"
    );
    // The hole is a hole again: the room the write took is free.
    assert!(
        fs::metadata(vol.join("tree/sparse")).unwrap().blocks() <= 64,
        "the file holds {} blocks of 512 bytes",
        fs::metadata(vol.join("tree/sparse")).unwrap().blocks()
    );
    assert_keeps_working(&mnt, "hole");
    assert_same_tree(&mnt, &vol.join("tree"));

    m.unmount();
    assert_replays(&vol, dir.path());
}
