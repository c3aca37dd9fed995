mod common;

// The hard cases of a real filesystem, through `jfs-master mount`: open
// handles that outlive their names, concurrent appends, mmap, truncate,
// copy_file_range, fallocate, ACLs and xattrs, long and non-UTF-8 names, a
// huge directory, and metadata. Each test checks what a local filesystem
// would show on the mount itself, then unmounts cleanly and checks the
// invariant: replaying the journal rebuilds exactly `VOL/tree`. The tests
// of long requests (large reads and writes, truncate, copies, allocations,
// concurrent writers) run with one thread reading requests, the others
// with several (see `common::ONE_READER`).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{mounted, mounted_with, ONE_READER};
use rustix::io::Errno;

/// The invariant: the journal, replayed from empty to its head into a fresh
/// directory, gives exactly `VOL/tree`. Returns the replayed tree.
fn assert_replays(vol: &Path, dir: &Path) -> PathBuf {
    let head = libjfs::inspect::VolumeStatus::read(vol).unwrap().head.seq;
    let dest = dir.join("replayed");
    libjfs::materialize::materialize(vol, head, &dest, |_| {}).unwrap();
    let diffs =
        libjfs::compare::compare_trees(&vol.join("tree"), &dest, &Default::default()).unwrap();
    assert!(
        diffs.is_empty(),
        "replaying the journal to {head} does not give VOL/tree: {diffs:#?}"
    );
    dest
}

fn errno_of(e: &std::io::Error) -> Option<Errno> {
    e.raw_os_error().map(Errno::from_raw_os_error)
}

/// Asserts `r` failed with `want`.
#[track_caller]
fn assert_errno<T: std::fmt::Debug>(r: std::io::Result<T>, want: Errno) {
    match r {
        Ok(v) => panic!("expected {want:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(errno_of(&e), Some(want), "{e}"),
    }
}

fn read_at(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    buf
}

/// Runs a command and expects success; returns stdout.
fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn names_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

// ---- 1. writes through a handle whose name changed --------------------------

#[test]
fn writes_follow_a_handle_through_rename_link_and_unlink() {
    let (dir, vol, mnt, m) = mounted();
    fs::create_dir(mnt.join("a")).unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(mnt.join("a/f"))
        .unwrap();
    f.write_all(b"one").unwrap();

    // Renamed: the handle writes to the new name.
    fs::rename(mnt.join("a/f"), mnt.join("a/g")).unwrap();
    f.write_all(b" two").unwrap();
    assert_eq!(fs::read(mnt.join("a/g")).unwrap(), b"one two");
    assert!(!mnt.join("a/f").exists());

    // Its parent renamed: the handle still writes to the file.
    fs::rename(mnt.join("a"), mnt.join("b")).unwrap();
    f.write_all(b" three").unwrap();
    assert_eq!(fs::read(mnt.join("b/g")).unwrap(), b"one two three");

    // Hard-linked, then the original name unlinked: writes reach the link.
    fs::hard_link(mnt.join("b/g"), mnt.join("h")).unwrap();
    assert_eq!(fs::metadata(mnt.join("h")).unwrap().nlink(), 2);
    fs::remove_file(mnt.join("b/g")).unwrap();
    f.write_all(b" four").unwrap();
    assert_eq!(fs::read(mnt.join("h")).unwrap(), b"one two three four");
    assert_eq!(fs::metadata(mnt.join("h")).unwrap().nlink(), 1);
    assert_eq!(fs::read(vol.join("tree/h")).unwrap(), b"one two three four");

    // Unlinked while open: the handle keeps working, the file is gone.
    fs::remove_file(mnt.join("h")).unwrap();
    f.write_all(b" five").unwrap();
    f.write_all_at(b"ONE", 0).unwrap();
    assert_eq!(read_at(&f, 0, 100), b"ONE two three four five");
    assert_eq!(f.metadata().unwrap().len(), 23);
    assert!(!mnt.join("h").exists());
    assert!(
        names_in(&mnt).iter().all(|n| n == b"b"),
        "{:?}",
        names_in(&mnt)
    );
    assert!(names_in(&mnt.join("b")).is_empty());
    drop(f);
    assert!(!vol.join("tree/h").exists());
    assert!(!vol.join("tree/b/g").exists());

    m.unmount();
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(names_in(&replayed), vec![b"b".to_vec()]);
}

// ---- 2. rename over an open file --------------------------------------------

#[test]
fn rename_over_an_open_file_keeps_the_old_data_on_its_handle() {
    let (dir, vol, mnt, m) = mounted();
    fs::write(mnt.join("old"), b"old data").unwrap();
    fs::write(mnt.join("new"), b"new data, longer").unwrap();
    let reader = File::open(mnt.join("old")).unwrap();
    let writer = OpenOptions::new()
        .write(true)
        .open(mnt.join("old"))
        .unwrap();
    let new_writer = OpenOptions::new()
        .write(true)
        .open(mnt.join("new"))
        .unwrap();
    assert_eq!(read_at(&reader, 0, 100), b"old data");

    fs::rename(mnt.join("new"), mnt.join("old")).unwrap();
    assert!(!mnt.join("new").exists());
    assert_eq!(fs::read(mnt.join("old")).unwrap(), b"new data, longer");
    // The replaced file lives on behind its handles.
    assert_eq!(read_at(&reader, 0, 100), b"old data");
    assert_eq!(reader.metadata().unwrap().len(), 8);
    writer.write_all_at(b"OLD", 0).unwrap();
    assert_eq!(read_at(&reader, 0, 100), b"OLD data");
    // ... and writes to it do not touch the new file under its old name.
    assert_eq!(fs::read(mnt.join("old")).unwrap(), b"new data, longer");
    assert_eq!(fs::read(vol.join("tree/old")).unwrap(), b"new data, longer");
    // A handle opened on the new file writes to it under its new name.
    new_writer.write_all_at(b"NEW", 0).unwrap();
    assert_eq!(fs::read(mnt.join("old")).unwrap(), b"NEW data, longer");
    assert_eq!(read_at(&reader, 0, 100), b"OLD data");
    drop((reader, writer, new_writer));
    assert_eq!(fs::read(mnt.join("old")).unwrap(), b"NEW data, longer");

    m.unmount();
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(fs::read(replayed.join("old")).unwrap(), b"NEW data, longer");
}

/// renameat2 RENAME_EXCHANGE and RENAME_NOREPLACE, with handles open on both
/// sides of the exchange.
#[test]
fn rename_exchange_and_noreplace_with_open_handles() {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let (dir, vol, mnt, m) = mounted();
    fs::create_dir(mnt.join("d")).unwrap();
    fs::write(mnt.join("d/x"), b"xxxx").unwrap();
    fs::write(mnt.join("y"), b"yyyy").unwrap();
    let hx = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("d/x"))
        .unwrap();
    let hy = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("y"))
        .unwrap();

    renameat_with(
        CWD,
        mnt.join("d/x"),
        CWD,
        mnt.join("y"),
        RenameFlags::EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(mnt.join("y")).unwrap(), b"xxxx");
    assert_eq!(fs::read(mnt.join("d/x")).unwrap(), b"yyyy");
    hx.write_all_at(b"X", 0).unwrap();
    hy.write_all_at(b"Y", 0).unwrap();
    assert_eq!(fs::read(mnt.join("y")).unwrap(), b"Xxxx");
    assert_eq!(fs::read(mnt.join("d/x")).unwrap(), b"Yyyy");

    // A file and a directory exchanged.
    fs::create_dir(mnt.join("e")).unwrap();
    fs::write(mnt.join("e/inner"), b"in").unwrap();
    renameat_with(
        CWD,
        mnt.join("e"),
        CWD,
        mnt.join("d/x"),
        RenameFlags::EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(mnt.join("d/x/inner")).unwrap(), b"in");
    assert_eq!(fs::read(mnt.join("e")).unwrap(), b"Yyyy");
    hy.write_all_at(b"!", 3).unwrap();
    assert_eq!(fs::read(mnt.join("e")).unwrap(), b"Yyy!");

    // NOREPLACE onto an existing name is EEXIST and changes nothing.
    assert_eq!(
        renameat_with(
            CWD,
            mnt.join("y"),
            CWD,
            mnt.join("e"),
            RenameFlags::NOREPLACE
        ),
        Err(Errno::EXIST)
    );
    renameat_with(
        CWD,
        mnt.join("y"),
        CWD,
        mnt.join("z"),
        RenameFlags::NOREPLACE,
    )
    .unwrap();
    hx.write_all_at(b"Z", 3).unwrap();
    assert_eq!(fs::read(mnt.join("z")).unwrap(), b"XxxZ");
    drop((hx, hy));

    m.unmount();
    assert_replays(&vol, dir.path());
}

// ---- 3. O_APPEND from two processes -----------------------------------------

#[test]
fn concurrent_appends_from_two_processes_interleave_whole_lines() {
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    // The file exists first, so the test is about O_APPEND, not about two
    // concurrent O_CREATs (see concurrent_o_creat_of_one_new_name_never_fails).
    File::create(mnt.join("f")).unwrap();
    let writer = |letter: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "i=0; while [ $i -lt 500 ]; do echo \"{letter} $i\" >> f || exit 1; i=$((i+1)); done"
            ))
            .current_dir(&mnt)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (writer("A"), writer("B"));
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());

    let text = String::from_utf8(fs::read(mnt.join("f")).unwrap()).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1000, "{text}");
    let (mut next_a, mut next_b) = (0, 0);
    for l in &lines {
        match l.split_once(' ') {
            Some(("A", n)) if n.parse() == Ok(next_a) => next_a += 1,
            Some(("B", n)) if n.parse() == Ok(next_b) => next_b += 1,
            _ => panic!("torn or out-of-order line {l:?} in:\n{text}"),
        }
    }
    assert_eq!((next_a, next_b), (500, 500));
    assert_eq!(fs::read_to_string(vol.join("tree/f")).unwrap(), text);

    m.unmount();
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(fs::read_to_string(replayed.join("f")).unwrap(), text);
}

/// Several processes opening one new name with O_CREAT (no O_EXCL) at once:
/// on a local filesystem every open succeeds.
#[test]
fn concurrent_o_creat_of_one_new_name_never_fails() {
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    const THREADS: usize = 4;
    const NAMES: usize = 200;
    let barrier = std::sync::Barrier::new(THREADS);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (barrier, failures, mnt) = (&barrier, &failures, &mnt);
            s.spawn(move || {
                for i in 0..NAMES {
                    barrier.wait();
                    let r = OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(mnt.join(format!("n{i}")));
                    match r {
                        Ok(mut f) => f.write_all(format!("{t}\n").as_bytes()).unwrap(),
                        Err(e) => failures.lock().unwrap().push(format!("n{i}: {e}")),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} opens with O_CREAT failed: {:?}",
        failures.len(),
        THREADS * NAMES,
        &failures[..failures.len().min(10)]
    );
    for i in 0..NAMES {
        let text = fs::read_to_string(mnt.join(format!("n{i}"))).unwrap();
        assert_eq!(text.lines().count(), THREADS, "n{i}: {text:?}");
    }
    m.unmount();
    assert_replays(&vol, dir.path());
}

/// The mount serves handles opened for writing only without its page
/// cache. A reader that has the file cached, read or mapped, must still
/// see every byte such a handle writes, appends included.
#[test]
fn readers_see_what_write_only_handles_write() {
    use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    const LEN: usize = 64 << 10;
    let f = mnt.join("f");
    fs::write(&f, vec![1u8; LEN]).unwrap();
    let reader = File::open(&f).unwrap();
    let mut seen = vec![0u8; LEN];
    reader.read_exact_at(&mut seen, 0).unwrap();
    assert!(seen.iter().all(|&b| b == 1));

    // SAFETY: a fresh read-only shared mapping of the file's LEN bytes,
    // read only through the slice below and unmapped before the file closes.
    unsafe {
        let ptr = mmap(
            std::ptr::null_mut(),
            LEN,
            ProtFlags::READ,
            MapFlags::SHARED,
            &reader,
            0,
        )
        .unwrap();
        let map = std::slice::from_raw_parts(ptr.cast::<u8>(), LEN);
        assert_eq!(map[8192], 1);

        let writer = OpenOptions::new().write(true).open(&f).unwrap();
        writer.write_all_at(&[2u8; 4096], 8192).unwrap();
        let mut want = vec![1u8; LEN];
        want[8192..12288].fill(2);
        reader.read_exact_at(&mut seen, 0).unwrap();
        assert!(seen == want, "a read after the write found old bytes");
        assert!(map == &want[..], "the mapping kept old bytes");
        munmap(ptr, LEN).unwrap();
    }

    let mut appender = OpenOptions::new().append(true).open(&f).unwrap();
    appender.write_all(b"tail").unwrap();
    assert_eq!(reader.metadata().unwrap().len(), LEN as u64 + 4);
    let mut tail = [0u8; 4];
    reader.read_exact_at(&mut tail, LEN as u64).unwrap();
    assert_eq!(&tail, b"tail");
    drop((reader, appender));
    assert_eq!(fs::read(&f).unwrap(), fs::read(vol.join("tree/f")).unwrap());
    m.unmount();
    assert_replays(&vol, dir.path());
}

/// A write clears setuid, and setgid where group execute is set, unless
/// the writer holds CAP_FSETID, and drops a file capability, as on a local
/// filesystem: through handles opened for writing only (which the server
/// serves without the page cache, so it does this itself) and for reading
/// and writing (where the kernel does it).
#[test]
fn writes_remove_privileges_as_on_a_local_filesystem() {
    use rustix::fs::{getxattr, setxattr, XattrFlags};
    use std::os::unix::process::CommandExt;
    const CAPABILITY: &str = "security.capability";
    // What setcap cap_net_raw+ep writes: revision 2 with the effective
    // bit, then the permitted and inheritable sets, low and high words.
    let mut cap = [0u8; 20];
    cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());

    let (dir, vol, mnt, m) = mounted();
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let local = local_beside(dir.path());
    fs::set_permissions(&local, fs::Permissions::from_mode(0o777)).unwrap();
    // name, mode, writer's uid (0: root), how the file is opened
    let cases: [(&str, u32, u32, &str); 7] = [
        ("wo-suid", 0o4755, 1234, "printf x >> \"$1\""),
        ("wo-sgid-gx", 0o2775, 1234, "printf x >> \"$1\""),
        ("wo-sgid", 0o2765, 1234, "printf x >> \"$1\""),
        ("rw-both", 0o6775, 1234, "exec 3<>\"$1\"; printf y >&3"),
        ("wo-root", 0o6775, 0, "printf x >> \"$1\""),
        ("wo-cap", 0o755, 0, "printf x >> \"$1\""),
        ("rw-cap", 0o755, 0, "exec 3<>\"$1\"; printf y >&3"),
    ];
    let mut results = Vec::new();
    for root in [&local, &mnt] {
        let mut got = Vec::new();
        for (name, mode, uid, script) in cases {
            let f = root.join(name);
            fs::write(&f, b"data\n").unwrap();
            std::os::unix::fs::chown(&f, Some(1234), Some(1234)).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
            if name.ends_with("cap") {
                setxattr(&f, CAPABILITY, &cap, XattrFlags::empty()).unwrap();
                let read = getxattr(&f, CAPABILITY, &mut [0u8; 64][..]);
                assert_eq!(read, Ok(cap.len()), "{name}: the capability reads back");
            }
            let mut cmd = Command::new("sh");
            cmd.arg("-ec").arg(script).arg("sh").arg(&f);
            if uid != 0 {
                cmd.uid(uid).gid(uid);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{name} in {}: {out:?}",
                root.display()
            );
            let mode = fs::metadata(&f).unwrap().mode() & 0o7777;
            let has_cap = getxattr(&f, CAPABILITY, &mut [0u8; 64][..]).is_ok();
            got.push((name, format!("{mode:o}"), has_cap));
        }
        results.push(got);
    }
    let local_modes: Vec<&str> = results[0].iter().map(|(_, m, _)| m.as_str()).collect();
    assert_eq!(
        local_modes,
        ["755", "775", "2765", "775", "6775", "755", "755"],
        "on the local filesystem"
    );
    assert!(
        results[0].iter().all(|(_, _, cap)| !cap),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1], results[0], "on the mount");
    m.unmount();
    assert_replays(&vol, dir.path());
}

/// The kernel sees at once what a write took away: a direct write's
/// setuid and setgid are dropped by the server, and the kernel, which
/// caches the file's mode, must be told. Otherwise it would go on running
/// the changed file setuid root for as long as it caches attributes.
#[test]
fn a_setuid_file_changed_by_a_user_runs_as_that_user_at_once() {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    use std::os::unix::process::CommandExt;
    let (dir, vol, mnt, m) = mounted();
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let local = local_beside(dir.path());
    for root in [&local, &mnt] {
        // Root's, setuid and setgid, and anyone may write it.
        let id = root.join("id");
        fs::copy("/usr/bin/id", &id).unwrap();
        fs::set_permissions(&id, fs::Permissions::from_mode(0o6777)).unwrap();
        let as_user = |script: &str| {
            let out = Command::new("sh")
                .arg("-ec")
                .arg(script)
                .arg("sh")
                .arg(&id)
                .uid(1234)
                .gid(1234)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}: {out:?}", root.display());
            String::from_utf8(out.stdout).unwrap()
        };
        // Appended to (a write-only handle, a direct write), then run.
        let ran = as_user("printf x >> \"$1\"; \"$1\" -u; \"$1\" -g");
        assert_eq!(ran, "1234\n1234\n", "in {}", root.display());
        // The mode as the kernel holds it (a mode-only statx asks no one).
        let st = statx(CWD, &id, AtFlags::empty(), StatxFlags::MODE).unwrap();
        assert_eq!(st.stx_mode & 0o7777, 0o777, "in {}", root.display());
    }
    m.unmount();
    assert_replays(&vol, dir.path());
}

// ---- 4. mmap ----------------------------------------------------------------

#[test]
fn shared_mmap_writes_reach_the_journal() {
    use rustix::mm::{mmap, msync, munmap, MapFlags, MsyncFlags, ProtFlags};
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    const LEN: usize = 3 * 4096 + 100;
    let mut expected: Vec<u8> = (0..LEN).map(|i| b'a' + (i % 26) as u8).collect();
    fs::write(mnt.join("m"), &expected).unwrap();

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("m"))
        .unwrap();
    // SAFETY: a fresh shared mapping of LEN bytes of a file of LEN bytes,
    // used only through the slice below and unmapped before the file closes.
    unsafe {
        let ptr = mmap(
            std::ptr::null_mut(),
            LEN,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &f,
            0,
        )
        .unwrap();
        let map = std::slice::from_raw_parts_mut(ptr.cast::<u8>(), LEN);
        assert_eq!(&map[..26], b"abcdefghijklmnopqrstuvwxyz");
        map[10..20].fill(b'M');
        map[4090..4110].fill(b'N'); // across a page boundary
        map[LEN - 5..].copy_from_slice(b"<END>");
        msync(ptr, LEN, MsyncFlags::SYNC).unwrap();
        munmap(ptr, LEN).unwrap();
    }
    drop(f);
    expected[10..20].fill(b'M');
    expected[4090..4110].fill(b'N');
    expected[LEN - 5..].copy_from_slice(b"<END>");

    assert_eq!(fs::read(mnt.join("m")).unwrap(), expected);
    assert_eq!(fs::read(vol.join("tree/m")).unwrap(), expected);

    // Without msync: munmap and close must not lose the data either.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("m"))
        .unwrap();
    // SAFETY: as above.
    unsafe {
        let ptr = mmap(
            std::ptr::null_mut(),
            LEN,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &f,
            0,
        )
        .unwrap();
        let map = std::slice::from_raw_parts_mut(ptr.cast::<u8>(), LEN);
        map[8000..8010].fill(b'Q');
        munmap(ptr, LEN).unwrap();
    }
    drop(f);
    expected[8000..8010].fill(b'Q');
    assert_eq!(fs::read(mnt.join("m")).unwrap(), expected);

    m.unmount();
    assert_eq!(fs::read(vol.join("tree/m")).unwrap(), expected);
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(fs::read(replayed.join("m")).unwrap(), expected);
}

// ---- 5. truncate while open -------------------------------------------------

#[test]
fn truncate_down_and_up_while_open() {
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(mnt.join("t"), &data).unwrap();
    let h = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("t"))
        .unwrap();

    // ftruncate down, then up: the new tail reads as zeros.
    h.set_len(100).unwrap();
    assert_eq!(fs::read(mnt.join("t")).unwrap(), &data[..100]);
    h.set_len(5000).unwrap();
    let mut want = data[..100].to_vec();
    want.resize(5000, 0);
    assert_eq!(fs::read(mnt.join("t")).unwrap(), want);
    h.write_all_at(b"tail", 4000).unwrap();
    want[4000..4004].copy_from_slice(b"tail");
    assert_eq!(read_at(&h, 0, 10_000), want);

    // truncate(2) by path while another handle is open: that handle sees it.
    let other = File::open(mnt.join("t")).unwrap();
    assert_eq!(read_at(&other, 0, 10_000), want);
    sh(Command::new("truncate")
        .arg("-s")
        .arg("50")
        .arg(mnt.join("t")));
    assert_eq!(other.metadata().unwrap().len(), 50);
    assert_eq!(read_at(&other, 0, 10_000), &data[..50]);
    sh(Command::new("truncate")
        .arg("-s")
        .arg("20000")
        .arg(mnt.join("t")));
    want = data[..50].to_vec();
    want.resize(20_000, 0);
    assert_eq!(read_at(&other, 0, 30_000), want);
    assert_eq!(h.metadata().unwrap().len(), 20_000);
    // Writing through the first handle after both truncates.
    h.write_all_at(b"end", 19_997).unwrap();
    want[19_997..].copy_from_slice(b"end");
    assert_eq!(read_at(&other, 0, 30_000), want);
    drop((h, other));
    assert_eq!(fs::read(vol.join("tree/t")).unwrap(), want);

    m.unmount();
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(fs::read(replayed.join("t")).unwrap(), want);
}

// ---- 6. copy_file_range -----------------------------------------------------

#[test]
fn copy_file_range_between_files_on_the_mount() {
    use rustix::fs::copy_file_range;
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    let src_data = b"0123456789abcdefghij"; // 20 bytes
    fs::write(mnt.join("src"), src_data).unwrap();
    fs::write(mnt.join("dst"), b"DESTINATION").unwrap();
    let src = File::open(mnt.join("src")).unwrap();
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("dst"))
        .unwrap();

    // A range inside the source, over the start of the destination.
    let (mut off_in, mut off_out) = (2u64, 0u64);
    let n = copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), 10).unwrap();
    assert_eq!((n, off_in, off_out), (10, 12, 10));
    let mut want = b"23456789abN".to_vec();
    assert_eq!(fs::read(mnt.join("dst")).unwrap(), want);

    // A range running past the source's end: a short copy that extends dst.
    let (mut off_in, mut off_out) = (15u64, 8u64);
    let n = copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), 100).unwrap();
    assert_eq!((n, off_in, off_out), (5, 20, 13));
    want.truncate(8);
    want.extend_from_slice(b"fghij");
    assert_eq!(fs::read(mnt.join("dst")).unwrap(), want);

    // Starting at the source's end: nothing to copy.
    let (mut off_in, mut off_out) = (20u64, 0u64);
    let n = copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), 100).unwrap();
    assert_eq!(n, 0);
    assert_eq!(fs::read(mnt.join("dst")).unwrap(), want);

    // To an offset past the destination's end: the gap reads as zeros.
    let (mut off_in, mut off_out) = (0u64, 10_000u64);
    let n = copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), 20).unwrap();
    assert_eq!(n, 20);
    want.resize(10_000, 0);
    want.extend_from_slice(src_data);
    assert_eq!(fs::read(mnt.join("dst")).unwrap(), want);
    assert_eq!(read_at(&dst, 0, 20_000), want);

    // Into a new, empty file, with the files' own offsets.
    let mut src2 = File::open(mnt.join("src")).unwrap();
    let mut buf = [0u8; 4];
    src2.read_exact(&mut buf).unwrap();
    let empty = File::create(mnt.join("copy")).unwrap();
    let n = copy_file_range(&src2, None, &empty, None, 1000).unwrap();
    assert_eq!(n, 16);
    assert_eq!(fs::read(mnt.join("copy")).unwrap(), &src_data[4..]);
    drop((src, dst, src2, empty));
    assert_eq!(fs::read(mnt.join("src")).unwrap(), src_data);
    assert_eq!(fs::read(vol.join("tree/dst")).unwrap(), want);

    m.unmount();
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(fs::read(replayed.join("dst")).unwrap(), want);
    assert_eq!(fs::read(replayed.join("copy")).unwrap(), &src_data[4..]);
}

// ---- 7. fallocate and punch-hole --------------------------------------------

#[test]
fn fallocate_keep_size_and_punch_hole() {
    use rustix::fs::{fallocate, FallocateFlags};
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    const MIB: u64 = 1 << 20;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(mnt.join("f"))
        .unwrap();

    // Plain allocation grows the file; it reads as zeros.
    fallocate(&f, FallocateFlags::empty(), 0, MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), MIB);
    assert!(read_at(&f, 0, MIB as usize).iter().all(|&b| b == 0));

    let data: Vec<u8> = (0..MIB as usize).map(|i| (i % 253) as u8 + 1).collect();
    f.write_all_at(&data, 0).unwrap();

    // KEEP_SIZE past the end leaves the size alone.
    fallocate(&f, FallocateFlags::KEEP_SIZE, MIB, MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), MIB);
    assert_eq!(fs::metadata(mnt.join("f")).unwrap().len(), MIB);

    // Punching a hole zeroes the range, keeps the size and the rest.
    fallocate(
        &f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        64 << 10,
        128 << 10,
    )
    .unwrap();
    let mut want = data.clone();
    want[64 << 10..192 << 10].fill(0);
    assert_eq!(f.metadata().unwrap().len(), MIB);
    assert_eq!(read_at(&f, 0, 2 * MIB as usize), want);
    assert_eq!(fs::read(mnt.join("f")).unwrap(), want);
    // An unaligned punch, too: partial blocks are zeroed.
    fallocate(
        &f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        500_000,
        10_001,
    )
    .unwrap();
    want[500_000..510_001].fill(0);
    assert_eq!(fs::read(mnt.join("f")).unwrap(), want);

    // KEEP_SIZE on an empty file, then a write after a gap: a sparse file.
    let g = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(mnt.join("g"))
        .unwrap();
    fallocate(&g, FallocateFlags::KEEP_SIZE, 0, 4 * MIB).unwrap();
    assert_eq!(g.metadata().unwrap().len(), 0);
    g.write_all_at(b"x", 3 * MIB).unwrap();
    assert_eq!(g.metadata().unwrap().len(), 3 * MIB + 1);
    // Its holes show through the mount (as cp, tar and backup tools look
    // for them), where the tree's copy has them.
    {
        use rustix::fs::{seek, SeekFrom};
        let tree = File::open(vol.join("tree/g")).unwrap();
        for at in [0, MIB, 3 * MIB - 1, 3 * MIB] {
            for whence in [SeekFrom::Data(at), SeekFrom::Hole(at)] {
                let through = seek(&g, whence);
                assert_eq!(through, seek(&tree, whence), "{whence:?}");
            }
        }
        assert_eq!(seek(&g, SeekFrom::Hole(0)), Ok(0), "the hole at 0");
        assert_eq!(
            seek(&g, SeekFrom::Data(0)),
            Ok(3 * MIB),
            "the data at 3 MiB"
        );
    }
    drop((f, g));
    assert_eq!(fs::read(vol.join("tree/f")).unwrap(), want);

    m.unmount();
    // compare_trees checks the hole maps of VOL/tree and the replay.
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(fs::read(replayed.join("f")).unwrap(), want);
}

// ---- 8. ACLs and xattrs -----------------------------------------------------

/// `setfacl`/`getfacl` must exist: the test does not skip silently.
fn require_acl_tools() {
    for tool in ["setfacl", "getfacl"] {
        match Command::new(tool).arg("--version").output() {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{tool} is not installed: install the acl package (apt-get install acl) to run this test"
            ),
            Err(e) => panic!("run {tool}: {e}"),
        }
    }
}

fn getfacl(path: &Path) -> String {
    sh(Command::new("getfacl").arg("-n").arg("-p").arg(path))
}

#[test]
fn posix_acls_and_user_xattrs() {
    use rustix::fs::{getxattr, listxattr, removexattr, setxattr, XattrFlags};
    require_acl_tools();
    let (dir, vol, mnt, m) = mounted();
    let file = mnt.join("file");
    let d = mnt.join("dir");
    fs::write(&file, b"acl").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();

    sh(Command::new("setfacl").args(["-m", "u:1234:rw"]).arg(&file));
    sh(Command::new("setfacl")
        .args(["-d", "-m", "g:50:rx"])
        .arg(&d));
    let acl = getfacl(&file);
    assert!(acl.contains("\nuser:1234:rw-\n"), "{acl}");
    assert!(acl.contains("\nmask::rw-\n"), "{acl}");
    let dacl = getfacl(&d);
    assert!(dacl.contains("\ndefault:group:50:r-x\n"), "{dacl}");
    assert!(dacl.contains("\ndefault:user::rwx\n"), "{dacl}");
    // The ACLs are the system.posix_acl_* xattrs, on the mount and in the tree.
    let mut buf = vec![0u8; 4096];
    let n = getxattr(&file, "system.posix_acl_access", &mut buf[..]).unwrap();
    assert!(n > 0);
    let n = getxattr(&d, "system.posix_acl_default", &mut buf[..]).unwrap();
    assert!(n > 0);
    let tree_acl = getfacl(&vol.join("tree/file"));
    assert!(tree_acl.contains("\nuser:1234:rw-\n"), "{tree_acl}");

    // Plain user xattrs.
    setxattr(&file, "user.color", b"blue", XattrFlags::empty()).unwrap();
    setxattr(&d, "user.empty", b"", XattrFlags::empty()).unwrap();
    let big = vec![b'v'; 3000];
    setxattr(&file, "user.big", &big, XattrFlags::CREATE).unwrap();
    let n = getxattr(&file, "user.color", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"blue");
    let n = getxattr(&file, "user.big", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], &big[..]);
    assert_eq!(getxattr(&d, "user.empty", &mut buf[..]).unwrap(), 0);
    // A buffer too small is ERANGE.
    assert_eq!(
        getxattr(&file, "user.color", &mut buf[..2]).unwrap_err(),
        Errno::RANGE
    );
    let n = listxattr(&file, &mut buf[..]).unwrap();
    // (security.* names, e.g. SELinux labels, depend on the host.)
    let mut listed: Vec<&[u8]> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty() && !s.starts_with(b"security."))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [&b"system.posix_acl_access"[..], b"user.big", b"user.color"]
    );
    // CREATE on an existing name is EEXIST; REPLACE on a missing one ENODATA.
    assert_eq!(
        setxattr(&file, "user.color", b"red", XattrFlags::CREATE).unwrap_err(),
        Errno::EXIST
    );
    assert_eq!(
        setxattr(&file, "user.nosuch", b"x", XattrFlags::REPLACE).unwrap_err(),
        Errno::NODATA
    );
    setxattr(&file, "user.color", b"green", XattrFlags::REPLACE).unwrap();
    let n = getxattr(&file, "user.color", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"green");
    removexattr(&file, "user.big").unwrap();
    assert_eq!(
        getxattr(&file, "user.big", &mut buf[..]).unwrap_err(),
        Errno::NODATA
    );
    assert_eq!(removexattr(&file, "user.big").unwrap_err(), Errno::NODATA);
    let n = listxattr(&file, &mut buf[..]).unwrap();
    assert!(!buf[..n].windows(8).any(|w| w == b"user.big"));

    // Removing the whole access ACL.
    sh(Command::new("setfacl").arg("-b").arg(&file));
    let acl = getfacl(&file);
    assert!(!acl.contains("user:1234"), "{acl}");

    m.unmount();
    // compare_trees compares every xattr, the ACLs included.
    let replayed = assert_replays(&vol, dir.path());
    let dacl = getfacl(&replayed.join("dir"));
    assert!(dacl.contains("\ndefault:group:50:r-x\n"), "{dacl}");
}

/// ACLs and modes interact on the mount as on a local filesystem: the same
/// steps in a local directory give the same `getfacl` output and modes. A
/// file created in a directory with a default ACL inherits it; setting an
/// access ACL changes the group bits; chmod changes the ACL's mask.
#[test]
fn acls_and_modes_interact_as_on_a_local_filesystem() {
    require_acl_tools();
    let (dir, vol, mnt, m) = mounted();
    let local = local_beside(dir.path());
    let mut results = Vec::new();
    for root in [&local, &mnt] {
        let d = root.join("dir");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        sh(Command::new("setfacl")
            .args(["-d", "-m", "g:50:rx"])
            .arg(&d));
        fs::write(d.join("new"), b"x").unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        let acl = |p: &Path| getfacl(p).replace(root.to_str().unwrap(), "ROOT");
        let mut seen = vec![
            (acl(&d.join("new")), mode(&d.join("new"))),
            (acl(&d.join("sub")), mode(&d.join("sub"))),
        ];
        // An access ACL sets the group bits to its mask; chmod sets the mask.
        let f = root.join("f");
        fs::write(&f, b"").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        sh(Command::new("setfacl").args(["-m", "u:1234:rw"]).arg(&f));
        seen.push((acl(&f), mode(&f)));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o604)).unwrap();
        seen.push((acl(&f), mode(&f)));
        // A default ACL more open than the caller's umask stands in its
        // place; without one the umask applies. Made by a shell with a
        // umask of its own, whatever this process's is.
        let open = root.join("open");
        fs::create_dir(&open).unwrap();
        sh(Command::new("setfacl")
            .args(["-d", "-m", "u::rwx,g::rwx,o::rwx"])
            .arg(&open));
        let plain = root.join("plain");
        fs::create_dir(&plain).unwrap();
        for (d, umask) in [(&open, "022"), (&plain, "027")] {
            sh(Command::new("sh")
                .arg("-ec")
                .arg(format!(
                    "umask {umask}; cd \"$1\"; echo x > f; mkdir d; mknod p p"
                ))
                .arg("sh")
                .arg(d));
            for name in ["f", "d", "p"] {
                let p = d.join(name);
                seen.push((acl(&p), mode(&p)));
            }
        }
        results.push(seen);
    }
    assert_eq!(results[0], results[1], "local filesystem, then the mount");
    m.unmount();
    assert_replays(&vol, dir.path());
}

/// Setting a file's access ACL drops its setgid bit when the caller is
/// neither in the file's group nor holds CAP_FSETID, as on a local
/// filesystem (the fix of CVE-2016-7097); a member or root keeps it.
#[test]
fn an_acl_set_from_outside_the_group_drops_setgid() {
    require_acl_tools();
    let (dir, vol, mnt, m) = mounted();
    let local = local_beside(dir.path());
    let mut results = Vec::new();
    for root in [&local, &mnt] {
        let mut modes = Vec::new();
        // Who sets the ACL: setpriv's identity options, or none for root.
        for (name, who) in [
            (
                "outsider",
                &["--reuid=1001", "--regid=1001", "--clear-groups"][..],
            ),
            (
                "member",
                &["--reuid=1001", "--regid=1001", "--groups=77"][..],
            ),
            ("root", &[][..]),
        ] {
            let f = root.join(name);
            fs::write(&f, b"x").unwrap();
            std::os::unix::fs::chown(&f, Some(1001), Some(77)).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o2775)).unwrap();
            let out = Command::new("setpriv")
                .args(who)
                .args(["setfacl", "-m", "u:1002:r"])
                .arg(&f)
                .output()
                .expect("setpriv (util-linux)");
            assert!(
                out.status.success(),
                "{name} in {}: {out:?}",
                root.display()
            );
            modes.push((name, fs::metadata(&f).unwrap().mode() & 0o7777));
        }
        results.push(modes);
    }
    assert_eq!(
        results[0],
        [("outsider", 0o775), ("member", 0o2775), ("root", 0o2775)],
        "on the local filesystem"
    );
    assert_eq!(results[1], results[0], "on the mount");
    m.unmount();
    assert_replays(&vol, dir.path());
}

// ---- 9. name lengths ----------------------------------------------------------

#[test]
fn names_of_255_bytes_work_and_256_is_enametoolong() {
    let (dir, vol, mnt, m) = mounted();
    let n255 = "f".repeat(255);
    let d255 = "d".repeat(255);
    let n256 = "x".repeat(256);

    fs::write(mnt.join(&n255), b"long").unwrap();
    assert_eq!(fs::read(mnt.join(&n255)).unwrap(), b"long");
    fs::create_dir(mnt.join(&d255)).unwrap();
    fs::write(mnt.join(&d255).join(&n255), b"deeper").unwrap();
    std::os::unix::fs::symlink(&n255, mnt.join(&d255).join("s".repeat(255))).unwrap();
    fs::rename(mnt.join(&n255), mnt.join(&d255).join("r".repeat(255))).unwrap();
    fs::hard_link(
        mnt.join(&d255).join("r".repeat(255)),
        mnt.join("h".repeat(255)),
    )
    .unwrap();
    assert_eq!(
        names_in(&mnt.join(&d255)),
        vec![
            n255.clone().into_bytes(),
            "r".repeat(255).into_bytes(),
            "s".repeat(255).into_bytes()
        ]
    );
    assert_eq!(
        fs::read_link(mnt.join(&d255).join("s".repeat(255))).unwrap(),
        Path::new(&n255)
    );

    assert_errno(File::create(mnt.join(&n256)), Errno::NAMETOOLONG);
    assert_errno(fs::create_dir(mnt.join(&n256)), Errno::NAMETOOLONG);
    assert_errno(fs::metadata(mnt.join(&n256)), Errno::NAMETOOLONG);
    assert_errno(
        std::os::unix::fs::symlink("t", mnt.join(&n256)),
        Errno::NAMETOOLONG,
    );
    assert_errno(
        fs::rename(mnt.join("h".repeat(255)), mnt.join(&n256)),
        Errno::NAMETOOLONG,
    );
    assert_errno(
        fs::hard_link(mnt.join("h".repeat(255)), mnt.join(&d255).join(&n256)),
        Errno::NAMETOOLONG,
    );
    assert_eq!(
        rustix::fs::mknodat(
            rustix::fs::CWD,
            mnt.join(&n256),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0
        ),
        Err(Errno::NAMETOOLONG)
    );
    assert!(
        mnt.join("h".repeat(255)).exists(),
        "a failed rename lost the source"
    );
    assert!(!vol.join("tree").join(&n256).exists());

    m.unmount();
    assert_replays(&vol, dir.path());
}

// ---- 10. non-UTF-8 names ------------------------------------------------------

#[test]
fn non_utf8_names_and_symlink_targets() {
    let (dir, vol, mnt, m) = mounted();
    let cafe = OsStr::from_bytes(b"caf\xe9");
    let ff = OsStr::from_bytes(b"\xff\xfe");

    fs::write(mnt.join(cafe), b"latin-1").unwrap();
    fs::create_dir(mnt.join(ff)).unwrap();
    fs::write(mnt.join(ff).join(cafe), b"inside").unwrap();
    std::os::unix::fs::symlink(cafe, mnt.join("link1")).unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"\xff\xfe/caf\xe9"),
        mnt.join(ff).join(ff),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"../\x80\x81 dangling"),
        mnt.join("link2"),
    )
    .unwrap();

    assert_eq!(fs::read(mnt.join(cafe)).unwrap(), b"latin-1");
    assert_eq!(fs::read(mnt.join("link1")).unwrap(), b"latin-1");
    assert_eq!(
        fs::read_link(mnt.join(ff).join(ff))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"\xff\xfe/caf\xe9"
    );
    assert_eq!(
        fs::read_link(mnt.join("link2"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"../\x80\x81 dangling"
    );
    assert_eq!(
        names_in(&mnt),
        vec![
            b"caf\xe9".to_vec(),
            b"link1".to_vec(),
            b"link2".to_vec(),
            b"\xff\xfe".to_vec()
        ]
    );
    assert_eq!(
        names_in(&mnt.join(ff)),
        vec![b"caf\xe9".to_vec(), b"\xff\xfe".to_vec()]
    );
    // Renames between non-UTF-8 names.
    let renamed = OsStr::from_bytes(b"\xc3\x28");
    fs::rename(mnt.join(ff).join(cafe), mnt.join(renamed)).unwrap();
    assert_eq!(fs::read(mnt.join(renamed)).unwrap(), b"inside");
    assert_eq!(fs::read(vol.join("tree").join(renamed)).unwrap(), b"inside");

    m.unmount();
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(
        fs::read_link(replayed.join(ff).join(ff))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"\xff\xfe/caf\xe9"
    );
}

// ---- 11. a huge directory -----------------------------------------------------

#[test]
fn directory_with_100000_entries() {
    const N: usize = 100_000;
    let (dir, vol, mnt, m) = mounted();
    let big = mnt.join("big");
    fs::create_dir(&big).unwrap();
    let start = Instant::now();
    for i in 0..N {
        File::create(big.join(format!("e{i}"))).unwrap();
    }
    let created = start.elapsed();
    eprintln!("created {N} files on the mount in {created:.2?}");

    let start = Instant::now();
    let mut names: Vec<Vec<u8>> = fs::read_dir(&big)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    eprintln!("listed them in {:.2?}", start.elapsed());
    assert_eq!(names.len(), N);
    names.sort();
    let mut want: Vec<Vec<u8>> = (0..N).map(|i| format!("e{i}").into_bytes()).collect();
    want.sort();
    assert!(
        names == want,
        "read_dir does not list exactly e0..e{}",
        N - 1
    );

    let start = Instant::now();
    m.unmount();
    eprintln!("unmounted in {:.2?}", start.elapsed());
    let start = Instant::now();
    assert_replays(&vol, dir.path());
    eprintln!("replayed and compared in {:.2?}", start.elapsed());
}

// ---- 12. metadata -------------------------------------------------------------

fn mtime_of(p: &Path) -> (i64, i64) {
    let md = fs::symlink_metadata(p).unwrap();
    (md.mtime(), md.mtime_nsec())
}

#[test]
fn chmod_chown_utimes_setuid_fifo_and_symlink() {
    use std::os::unix::fs::{chown, lchown, symlink};
    let (dir, vol, mnt, m) = mounted();
    let d = mnt.join("d");
    fs::create_dir(&d).unwrap();
    let f = d.join("f");
    fs::write(&f, b"meta").unwrap();

    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o640);
    chown(&f, Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    chown(&f, None, Some(42)).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 42));

    // setuid and setgid on a file, setgid and sticky on directories.
    let suid = d.join("suid");
    fs::write(&suid, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(fs::metadata(&suid).unwrap().mode() & 0o7777, 0o4755);
    let sgid = d.join("sgid");
    fs::write(&sgid, b"").unwrap();
    fs::set_permissions(&sgid, fs::Permissions::from_mode(0o2711)).unwrap();
    assert_eq!(fs::metadata(&sgid).unwrap().mode() & 0o7777, 0o2711);
    // chown of a regular file clears setuid, as on any Linux filesystem.
    let cleared = d.join("cleared");
    fs::write(&cleared, b"").unwrap();
    fs::set_permissions(&cleared, fs::Permissions::from_mode(0o4755)).unwrap();
    chown(&cleared, Some(7), None).unwrap();
    assert_eq!(fs::metadata(&cleared).unwrap().mode() & 0o7777, 0o755);
    let sticky = mnt.join("tmp");
    fs::create_dir(&sticky).unwrap();
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
    assert_eq!(fs::metadata(&sticky).unwrap().mode() & 0o7777, 0o1777);
    let g = mnt.join("g");
    fs::create_dir(&g).unwrap();
    chown(&g, None, Some(99)).unwrap();
    fs::set_permissions(&g, fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(g.join("inherits"), b"").unwrap();
    fs::create_dir(g.join("subdir")).unwrap();
    assert_eq!(fs::metadata(g.join("inherits")).unwrap().gid(), 99);
    let sub = fs::metadata(g.join("subdir")).unwrap();
    assert_eq!((sub.gid(), sub.mode() & 0o2000), (99, 0o2000));

    // A fifo, and symlinks (one chowned without following).
    sh(Command::new("mkfifo")
        .args(["-m", "0620"])
        .arg(d.join("fifo")));
    let md = fs::symlink_metadata(d.join("fifo")).unwrap();
    assert!(md.file_type().is_fifo());
    assert_eq!(md.mode() & 0o7777, 0o620);
    symlink("f", d.join("link")).unwrap();
    symlink("/nowhere/at/all", d.join("dangling")).unwrap();
    lchown(d.join("link"), Some(55), Some(66)).unwrap();
    let md = fs::symlink_metadata(d.join("link")).unwrap();
    assert!(md.file_type().is_symlink());
    assert_eq!((md.uid(), md.gid()), (55, 66));
    assert_eq!(fs::read_link(d.join("link")).unwrap(), Path::new("f"));
    assert_eq!(fs::read(d.join("link")).unwrap(), b"meta");
    // The target's owner is untouched.
    assert_eq!(fs::metadata(&f).unwrap().uid(), 1234);

    // Times: File::set_times with nanoseconds, touch -d, and a directory's
    // times set last (creating entries in it would change them).
    let t1 = UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_times(
            fs::FileTimes::new()
                .set_modified(t1)
                .set_accessed(UNIX_EPOCH + Duration::from_secs(5)),
        )
        .unwrap();
    assert_eq!(mtime_of(&f), (1_000_000_000, 123_456_789));
    assert_eq!(fs::metadata(&f).unwrap().atime(), 5);
    sh(Command::new("touch")
        .args(["-m", "-d", "@981173106.987654321"])
        .arg(&suid));
    assert_eq!(mtime_of(&suid), (981_173_106, 987_654_321));
    // Before the epoch, in whole seconds (with nanoseconds: see
    // pre_epoch_mtime_with_nanoseconds).
    sh(Command::new("touch")
        .args(["-m", "-d", "@-86400"])
        .arg(&sgid));
    assert_eq!(mtime_of(&sgid), (-86_400, 0));
    sh(Command::new("touch")
        .args(["-h", "-m", "-d", "@1234567890"])
        .arg(d.join("link")));
    assert_eq!(mtime_of(&d.join("link")), (1_234_567_890, 0));
    let before = SystemTime::now();
    sh(Command::new("touch").arg(d.join("fifo")));
    assert!(
        fs::symlink_metadata(d.join("fifo"))
            .unwrap()
            .modified()
            .unwrap()
            >= before - Duration::from_secs(1)
    );
    sh(Command::new("touch").args(["-d", "@1500000000.25"]).arg(&d));
    assert_eq!(mtime_of(&d), (1_500_000_000, 250_000_000));
    // The tree has what the mount shows.
    assert_eq!(
        mtime_of(&vol.join("tree/d/f")),
        (1_000_000_000, 123_456_789)
    );
    assert_eq!(
        fs::metadata(vol.join("tree/d/suid")).unwrap().mode() & 0o7777,
        0o4755
    );

    m.unmount();
    let replayed = assert_replays(&vol, dir.path());
    assert_eq!(mtime_of(&replayed.join("d")), (1_500_000_000, 250_000_000));
    assert!(fs::symlink_metadata(replayed.join("d/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

/// A time before the epoch with a fractional second, e.g. -86400.5 s, which
/// is (sec -86401, nsec 500000000) as the kernel gives it.
#[test]
fn pre_epoch_mtime_with_nanoseconds() {
    let (dir, vol, mnt, m) = mounted();
    let f = mnt.join("old");
    fs::write(&f, b"").unwrap();
    sh(Command::new("touch")
        .args(["-m", "-d", "@-86400.5"])
        .arg(&f));
    // What the same command gives on a local filesystem.
    let local = dir.path().join("local");
    fs::write(&local, b"").unwrap();
    sh(Command::new("touch")
        .args(["-m", "-d", "@-86400.5"])
        .arg(&local));
    assert_eq!(mtime_of(&local), (-86_401, 500_000_000));
    assert_eq!(mtime_of(&f), (-86_401, 500_000_000), "on the mount");
    assert_eq!(
        mtime_of(&vol.join("tree/old")),
        (-86_401, 500_000_000),
        "in VOL/tree"
    );
    // Through File::set_times: 1.25 s before the epoch.
    let g = mnt.join("older");
    File::create(&g)
        .unwrap()
        .set_modified(UNIX_EPOCH - Duration::from_millis(1250))
        .unwrap();
    assert_eq!(mtime_of(&g), (-2, 750_000_000));
    m.unmount();
    assert_replays(&vol, dir.path());
}

// ---- beyond the list: what a local filesystem also does ----------------------

/// Operations through the descriptor of a file that was unlinked while open:
/// a local filesystem accepts them all (the file still exists until closed).
#[test]
fn fd_operations_on_an_unlinked_open_file() {
    use rustix::fs::{
        copy_file_range, fallocate, fgetxattr, fsetxattr, FallocateFlags, XattrFlags,
    };
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    let local = local_beside(dir.path());
    let mut results = Vec::new();
    for root in [&local, &mnt] {
        let path = root.join("f");
        fs::write(&path, b"data").unwrap();
        fs::write(root.join("src"), b"copied").unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let src = File::open(root.join("src")).unwrap();
        fs::remove_file(&path).unwrap();
        let mut r: Vec<(&str, Result<(), String>)> = Vec::new();
        let e = |x: std::io::Error| x.to_string();
        r.push((
            "fchmod",
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(e),
        ));
        r.push((
            "fchown",
            std::os::unix::fs::fchown(&f, Some(3), Some(4)).map_err(e),
        ));
        r.push((
            "futimens",
            f.set_modified(UNIX_EPOCH + Duration::from_secs(1_000))
                .map_err(e),
        ));
        let md = f.metadata().unwrap();
        let meta = (md.mode() & 0o7777, md.uid(), md.gid(), md.mtime());
        r.push((
            "fstat after fchmod, fchown, futimens",
            if meta == (0o600, 3, 4, 1_000) {
                Ok(())
            } else {
                Err(format!("{meta:?}"))
            },
        ));
        r.push(("ftruncate", f.set_len(10).map_err(e)));
        r.push((
            "fallocate",
            fallocate(&f, FallocateFlags::empty(), 0, 8192).map_err(|x| x.to_string()),
        ));
        r.push((
            "fsetxattr",
            fsetxattr(&f, "user.k", b"v", XattrFlags::empty()).map_err(|x| x.to_string()),
        ));
        let mut buf = [0u8; 16];
        r.push((
            "fgetxattr",
            fgetxattr(&f, "user.k", &mut buf[..])
                .map(|_| ())
                .map_err(|x| x.to_string()),
        ));
        r.push((
            "copy_file_range",
            copy_file_range(&src, Some(&mut 0), &f, Some(&mut 0), 6)
                .map(|_| ())
                .map_err(|x| x.to_string()),
        ));
        let mut want = b"copied\0\0".to_vec();
        want.resize(8192, 0);
        r.push((
            "contents",
            if read_at(&f, 0, 10_000) == want {
                Ok(())
            } else {
                Err(format!("{:?}", &read_at(&f, 0, 10_000)[..10]))
            },
        ));
        results.push(r);
    }
    assert_eq!(results[0], results[1], "local filesystem, then the mount");
    m.unmount();
    assert_replays(&vol, dir.path());
}

/// fallocate FALLOC_FL_ZERO_RANGE, with and without KEEP_SIZE, past the end
/// of the file: sizes and contents as on a local filesystem.
#[test]
fn fallocate_zero_range_as_on_a_local_filesystem() {
    use rustix::fs::{fallocate, FallocateFlags};
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    let local = local_beside(dir.path());
    let mut results = Vec::new();
    for root in [&local, &mnt] {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 250) as u8 + 1).collect();
        let mut seen = Vec::new();
        for (name, flags) in [
            ("zero", FallocateFlags::ZERO_RANGE),
            (
                "zero-keep",
                FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
            ),
        ] {
            let p = root.join(name);
            fs::write(&p, &data).unwrap();
            let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
            // Inside the file, then across its end.
            fallocate(&f, flags, 1000, 5000).unwrap();
            fallocate(&f, flags, 90_000, 50_000).unwrap();
            drop(f);
            seen.push((name, fs::read(&p).unwrap()));
        }
        results.push(seen);
    }
    for (l, r) in results[0].iter().zip(&results[1]) {
        assert_eq!(l.0, r.0);
        assert!(
            l.1 == r.1,
            "{}: local size {}, mount size {} (first difference at {:?})",
            l.0,
            l.1.len(),
            r.1.len(),
            l.1.iter().zip(&r.1).position(|(a, b)| a != b)
        );
    }
    m.unmount();
    assert_replays(&vol, dir.path());
}

/// ACLs decide access on the mount as on a local filesystem: a named user
/// entry grants access the mode bits alone would not, and one with no
/// permissions denies access the other bits would grant.
#[test]
fn acl_entries_decide_access_as_on_a_local_filesystem() {
    use std::os::unix::process::CommandExt;
    require_acl_tools();
    let (dir, vol, mnt, m) = mounted();
    // Let an unprivileged user reach both roots.
    let local = local_beside(dir.path());
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o755)).unwrap();
    let mut results = Vec::new();
    for root in [&local, &mnt] {
        let granted = root.join("granted");
        fs::write(&granted, b"secret\n").unwrap();
        fs::set_permissions(&granted, fs::Permissions::from_mode(0o600)).unwrap();
        sh(Command::new("setfacl")
            .args(["-m", "u:1234:r"])
            .arg(&granted));
        let denied = root.join("denied");
        fs::write(&denied, b"public\n").unwrap();
        fs::set_permissions(&denied, fs::Permissions::from_mode(0o644)).unwrap();
        sh(Command::new("setfacl")
            .args(["-m", "u:1234:-"])
            .arg(&denied));
        let can_read = |p: &Path| {
            Command::new("cat")
                .arg(p)
                .uid(1234)
                .gid(1234)
                .output()
                .unwrap()
                .status
                .success()
        };
        results.push((can_read(&granted), can_read(&denied)));
    }
    assert_eq!(results[0], (true, false), "on the local filesystem");
    assert_eq!(
        results[1], results[0],
        "on the mount (granted, denied readable)"
    );
    m.unmount();
    assert_replays(&vol, dir.path());
}

/// Unlinking stays cheap when the kernel knows many inodes: with the 100,000
/// files of a big directory looked up, unlinking 2,000 other files must not
/// take much longer than on a fresh mount (about 0.2 s here).
#[test]
fn unlink_cost_does_not_grow_with_known_inodes() {
    const N: usize = 100_000;
    let (dir, vol, mnt, m) = mounted();
    fs::create_dir(mnt.join("big")).unwrap();
    for i in 0..N {
        File::create(mnt.join(format!("big/e{i}"))).unwrap();
    }
    fs::create_dir(mnt.join("small")).unwrap();
    for i in 0..2000 {
        File::create(mnt.join(format!("small/e{i}"))).unwrap();
    }
    let start = Instant::now();
    for i in 0..2000 {
        fs::remove_file(mnt.join(format!("small/e{i}"))).unwrap();
    }
    let took = start.elapsed();
    eprintln!("unlinked 2000 files with {N} inodes known in {took:.2?}");
    assert!(took < Duration::from_secs(3), "{took:.2?}");
    m.unmount();
    assert_replays(&vol, dir.path());
}

#[test]
fn sequential_reads_use_the_mounts_read_ahead() {
    let (dir, vol, mnt, m) = mounted_with(ONE_READER);
    assert_eq!(common::read_ahead_kb(&mnt), libjfs::mounts::READ_AHEAD_KB);
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(mnt.join("big"), &data).unwrap();
    assert_eq!(fs::read(mnt.join("big")).unwrap(), data);
    m.unmount();
    assert_replays(&vol, dir.path());
}

#[test]
fn a_rewind_while_mounted_drops_what_the_kernel_cached() {
    let (dir, vol, mnt, m) = mounted();
    let f = mnt.join("page");
    fs::write(&f, vec![1u8; 256 << 10]).unwrap();
    common::ok("jfs-master", &[&"snapshot", &vol, &"create", &"ones"]);
    let rw = OpenOptions::new().read(true).write(true).open(&f).unwrap();
    rw.write_all_at(&[2u8; 8192], 4096).unwrap();
    drop(rw);
    // Cached by the kernel, and kept there across opens.
    let twos = fs::read(&f).unwrap();
    assert_eq!(&twos[4096..12288], &[2u8; 8192][..]);
    let probe = File::open(&f).unwrap();
    assert!(libjfs::treeread::cached_pages(&probe, 0, 0).unwrap() > 0);
    // Held open through the rewind, so the kernel keeps the inode and its
    // pages: they must be dropped, for this handle and for new ones.
    common::ok("jfs-master", &[&"rewind", &"--to", &"ones", &vol]);
    let mut page = vec![0u8; 8192];
    probe.read_exact_at(&mut page, 4096).unwrap();
    assert!(
        page.iter().all(|&b| b == 1),
        "an open handle read stale pages"
    );
    drop(probe);
    let now = fs::read(&f).unwrap();
    assert!(
        now.len() == 256 << 10 && now.iter().all(|&b| b == 1),
        "a new open read stale pages"
    );
    m.unmount();
    assert_replays(&vol, dir.path());
}

/// A plain directory beside the mount, to hold a test's steps against a
/// local filesystem, in a parent that every user can reach.
fn local_beside(dir: &Path) -> PathBuf {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let local = dir.join("local");
    fs::create_dir(&local).unwrap();
    local
}

/// The names in directory `d`, sorted, as a program lists them.
fn listing(d: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_walked_tree_is_served_from_the_kernels_cache_until_it_changes() {
    let (_dir, vol, mnt, m) = mounted();
    fs::create_dir(mnt.join("d")).unwrap();
    fs::write(mnt.join("d/a"), b"a").unwrap();
    // Listed twice: the first listing leaves the directory's atime to be
    // asked for again, and the answer would carry the mtime of the change
    // made behind the mount's back below, which makes the kernel drop the
    // listing (as it should).
    assert_eq!(listing(&mnt.join("d")), ["a"]);
    assert_eq!(listing(&mnt.join("d")), ["a"]);
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&mnt.join("d/a")), 0o644);
    // Changes made behind the mount's back (which nothing should do) show
    // what the kernel kept: past the second it used to keep anything, the
    // listing and the attributes are still its own.
    fs::write(vol.join("tree/d/behind"), b"behind").unwrap();
    fs::set_permissions(vol.join("tree/d/a"), fs::Permissions::from_mode(0o600)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(listing(&mnt.join("d")), ["a"], "the listing was read again");
    assert_eq!(
        mode(&mnt.join("d/a")),
        0o644,
        "the attributes were read again"
    );
    // A change through the mount makes the kernel read the directory again.
    fs::write(mnt.join("d/b"), b"b").unwrap();
    assert_eq!(listing(&mnt.join("d")), ["a", "b", "behind"]);
    fs::set_permissions(mnt.join("d/a"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(mode(&mnt.join("d/a")), 0o640);
    m.unmount();
}

#[test]
fn names_a_listing_brings_work_without_a_lookup() {
    let (dir, vol, mnt, m) = mounted();
    fs::create_dir(mnt.join("d")).unwrap();
    for i in 0..100 {
        fs::write(mnt.join(format!("d/f{i:03}")), format!("{i}")).unwrap();
    }
    fs::set_permissions(mnt.join("d/f007"), fs::Permissions::from_mode(0o600)).unwrap();
    m.unmount();
    // A fresh mount knows no names: the listing brings them, with their
    // attributes, and the kernel then uses them without looking them up.
    let m = common::MountedMaster::start(&vol, &mnt, &[]);
    let entries: Vec<_> = fs::read_dir(mnt.join("d"))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(entries.len(), 100);
    for e in &entries {
        let meta = e.metadata().unwrap();
        let tree = fs::symlink_metadata(vol.join("tree/d").join(e.file_name())).unwrap();
        assert_eq!(
            (meta.ino(), meta.mode(), meta.len()),
            (tree.ino(), tree.mode(), tree.len())
        );
        assert_eq!(e.ino(), tree.ino());
    }
    drop(entries); // they hold the directory open
    assert_eq!(fs::read_to_string(mnt.join("d/f042")).unwrap(), "42");
    fs::write(mnt.join("d/f043"), b"changed").unwrap();
    fs::rename(mnt.join("d/f044"), mnt.join("d/moved")).unwrap();
    fs::remove_file(mnt.join("d/f045")).unwrap();
    assert_eq!(
        fs::metadata(mnt.join("d/f007"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    m.unmount();
    assert_eq!(fs::read(vol.join("tree/d/f043")).unwrap(), b"changed");
    assert_eq!(fs::read(vol.join("tree/d/moved")).unwrap(), b"44");
    assert!(!vol.join("tree/d/f045").exists());
    assert_replays(&vol, dir.path());
}

#[test]
fn a_rewind_drops_cached_listings_attributes_and_acls() {
    require_acl_tools();
    let (dir, vol, mnt, m) = mounted();
    let d = mnt.join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("a"), b"a").unwrap();
    fs::write(d.join("b"), b"b").unwrap();
    common::ok("jfs-master", &[&"snapshot", &vol, &"create", &"before"]);
    fs::set_permissions(d.join("a"), fs::Permissions::from_mode(0o600)).unwrap();
    sh(Command::new("setfacl")
        .args(["-m", "u:1234:r"])
        .arg(d.join("a")));
    fs::remove_file(d.join("b")).unwrap();
    fs::write(d.join("c"), b"c").unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    fs::write(d.join("sub/x"), b"x").unwrap();
    // Everything the kernel caches of them, read once.
    assert_eq!(listing(&d), ["a", "c", "sub"]);
    assert_eq!(listing(&d.join("sub")), ["x"]);
    assert!(getfacl(&d.join("a")).contains("\nuser:1234:r--\n"));
    let a = fs::metadata(d.join("a")).unwrap();
    assert_eq!(
        a.permissions().mode() & 0o7777,
        0o640,
        "the mask shows as group bits"
    );
    assert!(fs::metadata(d.join("b")).is_err());
    common::ok("jfs-master", &[&"rewind", &"--to", &"before", &vol]);
    assert_eq!(listing(&d), ["a", "b"]);
    let a = fs::metadata(d.join("a")).unwrap();
    assert_eq!(a.permissions().mode() & 0o7777, 0o644);
    let acl = getfacl(&d.join("a"));
    assert!(!acl.contains("user:1234"), "{acl}");
    assert_eq!(fs::read(d.join("b")).unwrap(), b"b");
    assert!(fs::metadata(d.join("c")).is_err());
    assert!(fs::metadata(d.join("sub")).is_err());
    m.unmount();
    assert_replays(&vol, dir.path());
}

#[test]
fn a_missing_name_is_cached_as_missing() {
    let (_dir, vol, mnt, m) = mounted();
    fs::create_dir(mnt.join("d")).unwrap();
    // A file made behind the mount's back right after a miss stays unseen
    // while the miss is cached (far longer than the time between the two
    // lookups here; an attempt that took longer than the half second the
    // test allows proves nothing and is made again).
    let mut cached = false;
    for i in 0..5 {
        let (name, behind) = (
            mnt.join(format!("d/m{i}")),
            vol.join(format!("tree/d/m{i}")),
        );
        let started = Instant::now();
        assert_eq!(
            fs::metadata(&name).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        fs::write(&behind, b"behind").unwrap();
        let seen = fs::metadata(&name).is_ok();
        fs::remove_file(&behind).unwrap();
        if !seen {
            cached = true;
            break;
        }
        assert!(
            started.elapsed() > Duration::from_millis(500),
            "the miss was not cached"
        );
    }
    assert!(
        cached,
        "every attempt took longer than the cache keeps a miss"
    );
    m.unmount();
}

#[test]
fn names_cached_as_missing_appear_when_made_or_rewound() {
    let (dir, vol, mnt, m) = mounted();
    fs::write(mnt.join("kept"), b"kept").unwrap();
    common::ok("jfs-master", &[&"snapshot", &vol, &"create", &"with"]);
    fs::remove_file(mnt.join("kept")).unwrap();
    // Each kind of new name, each looked up (and found missing) first.
    let missing = |name: &str| {
        assert_eq!(
            fs::symlink_metadata(mnt.join(name)).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        )
    };
    for name in ["f", "dir", "link", "hard", "moved", "kept"] {
        missing(name);
    }
    fs::write(mnt.join("f"), b"f").unwrap();
    fs::create_dir(mnt.join("dir")).unwrap();
    std::os::unix::fs::symlink("f", mnt.join("link")).unwrap();
    fs::hard_link(mnt.join("f"), mnt.join("hard")).unwrap();
    fs::write(mnt.join("tmp"), b"moved").unwrap();
    fs::rename(mnt.join("tmp"), mnt.join("moved")).unwrap();
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"f");
    assert!(fs::metadata(mnt.join("dir")).unwrap().is_dir());
    assert_eq!(fs::read_link(mnt.join("link")).unwrap(), Path::new("f"));
    assert_eq!(fs::read(mnt.join("hard")).unwrap(), b"f");
    assert_eq!(fs::read(mnt.join("moved")).unwrap(), b"moved");
    // A rewind brings back a name the kernel holds as missing.
    missing("kept");
    common::ok("jfs-master", &[&"rewind", &"--to", &"with", &vol]);
    assert_eq!(fs::read(mnt.join("kept")).unwrap(), b"kept");
    missing("f");
    m.unmount();
    assert_replays(&vol, dir.path());
}

#[test]
fn cold_large_files_are_read_around_the_trees_page_cache() {
    let (dir, vol, mnt, m) = mounted();
    let data: Vec<u8> = (0..8u64 << 20)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    fs::write(mnt.join("big"), &data).unwrap();
    fs::File::open(mnt.join("big")).unwrap().sync_all().unwrap();
    // Drop the file from both page caches: the tree's and the mount's.
    let tree = fs::File::open(vol.join("tree/big")).unwrap();
    tree.sync_all().unwrap();
    for f in [&tree, &fs::File::open(mnt.join("big")).unwrap()] {
        rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }
    let pages = data.len() as u64 / 4096;
    assert_eq!(libjfs::treeread::cached_pages(&tree, 0, 0), Some(0));
    assert_eq!(fs::read(mnt.join("big")).unwrap(), data);
    // The kernel's read-ahead asked for large pieces, which the server
    // read with direct I/O: the tree's page cache holds next to nothing.
    let cached = libjfs::treeread::cached_pages(&tree, 0, 0).unwrap();
    assert!(cached < pages / 4, "{cached} of {pages} pages cached");
    // Again with the tree caching the first MiB (as after a write): that
    // piece comes from its cache, the rest around it.
    let mut start = vec![0u8; 1 << 20];
    fs::File::open(vol.join("tree/big"))
        .unwrap()
        .read_exact(&mut start)
        .unwrap();
    rustix::fs::fadvise(
        fs::File::open(mnt.join("big")).unwrap(),
        0,
        None,
        rustix::fs::Advice::DontNeed,
    )
    .unwrap();
    assert_eq!(fs::read(mnt.join("big")).unwrap(), data);
    m.unmount();
    assert_replays(&vol, dir.path());
}
