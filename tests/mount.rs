//! The master's FUSE mount with real processes: a real workload and
//! stress-ng replay to the same tree (and a rewind over stress-ng's records
//! gives its tree back), stops are clean, bad mount points and second mounts are
//! refused, and a kill -9 at any moment is recovered by mounting again.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fails, ok, real_sources, MountedMaster};
use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::inspect::VolumeStatus;

fn init(dir: &Path) -> (PathBuf, PathBuf) {
    let vol = dir.join("vol");
    let mnt = dir.join("mnt");
    ok("jfs-master", &[&"init", &vol]);
    fs::create_dir(&mnt).unwrap();
    (vol, mnt)
}

/// VOL/tree equals the journal replayed into a fresh directory.
fn assert_replays(vol: &Path, scratch: &Path) {
    let head = VolumeStatus::read(vol).unwrap().head;
    let dest = scratch.join(format!("replayed-{}", head.seq));
    libjfs::materialize::materialize(vol, head.seq, &dest, |_| {}).unwrap();
    let diffs = compare_trees(&vol.join("tree"), &dest, &CompareOptions::default()).unwrap();
    assert!(
        diffs.is_empty(),
        "VOL/tree differs from the journal replayed to {head}:\n{}",
        diffs
            .iter()
            .take(30)
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn a_real_workload_replays_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = init(dir.path());
    let m = MountedMaster::start(&vol, &mnt, &[]);
    let sources = real_sources(3000);

    // Copy a real source tree of thousands of files with cp -a.
    let t = Instant::now();
    fs::create_dir(mnt.join("src")).unwrap();
    let mut cp = Command::new("cp");
    cp.arg("-a").args(&sources).arg(mnt.join("src"));
    assert!(
        cp.status().unwrap().success(),
        "cp -a onto the mount failed"
    );
    eprintln!("cp -a of {} crates took {:?}", sources.len(), t.elapsed());

    // The copy on the mount is what cp -a makes on a local filesystem.
    let first = sources[0].file_name().unwrap();
    let diffs = compare_trees(
        &sources[0],
        &mnt.join("src").join(first),
        &CompareOptions::default(),
    )
    .unwrap();
    assert!(
        diffs.is_empty(),
        "cp -a onto the mount differs from the source: {diffs:#?}"
    );

    // Then everything else people do to a tree.
    common::everyday_edits(&mnt.join("src"), 100);
    for (name, value) in [
        (&b"user.origin"[..], &b"registry"[..]),
        (b"user.empty", b""),
    ] {
        rustix::fs::setxattr(
            mnt.join("src/hardlink"),
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    rustix::fs::setxattr(
        mnt.join("src"),
        "user.dir",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::removexattr(mnt.join("src/hardlink"), "user.empty").unwrap();

    let err = m.unmount();
    assert!(err.contains("journal synced and sealed"), "{err}");
    assert_replays(&vol, dir.path());
    ok("jfs-replica", &[&"verify", &vol]);
}

#[test]
fn bad_mount_points_and_second_mounts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = init(dir.path());
    let err = fails(
        "jfs-master",
        &[&"mount", &vol, &dir.path().join("missing")],
        1,
    );
    assert!(err.contains("does not exist"), "{err}");
    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    let err = fails("jfs-master", &[&"mount", &vol, &full], 1);
    assert!(err.contains("not empty"), "{err}");
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = fails("jfs-master", &[&"mount", &vol, &file], 1);
    assert!(err.contains("not a directory"), "{err}");
    let err = fails(
        "jfs-master",
        &[&"mount", &vol, &mnt, &"--sync", &"sometimes"],
        2,
    );
    assert!(err.contains("unknown sync policy"), "{err}");
    // Inside the volume the mount would hide from the server the files it
    // serves (over VOL/tree it hung): the empty tree, a directory in it, the
    // attic.
    fs::create_dir(vol.join("tree/sub")).unwrap();
    for inside in [vol.join("tree"), vol.join("tree/sub"), vol.join("attic")] {
        let err = fails("jfs-master", &[&"mount", &vol, &inside], 1);
        assert!(err.contains("is inside the volume"), "{err}");
        assert!(!common::is_mounted(&inside));
    }
    fs::remove_dir(vol.join("tree/sub")).unwrap();

    let m = MountedMaster::start(&vol, &mnt, &[]);
    // The same volume a second time, elsewhere.
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let err = fails("jfs-master", &[&"mount", &vol, &other], 1);
    assert!(err.contains("in use by another process"), "{err}");
    // Another volume onto a busy mount point.
    let vol2 = dir.path().join("vol2");
    ok("jfs-master", &[&"init", &vol2]);
    let err = fails("jfs-master", &[&"mount", &vol2, &mnt], 1);
    assert!(err.contains("busy") || err.contains("not empty"), "{err}");
    // Status works on the mounted volume.
    let status: serde_json::Value =
        serde_json::from_str(&ok("jfs-master", &[&"status", &vol, &"--json"])).unwrap();
    assert_eq!(status["position"]["seq"], 1);
    m.unmount();
}

#[test]
fn sigterm_sigint_and_sighup_stop_cleanly_with_the_journal_sealed() {
    use rustix::process::Signal;
    for signal in [Signal::TERM, Signal::INT, Signal::HUP] {
        let dir = tempfile::tempdir().unwrap();
        let (vol, mnt) = init(dir.path());
        let mut m = MountedMaster::start(&vol, &mnt, &["--sync", "interval:20"]);
        fs::write(mnt.join("f"), b"data").unwrap();
        fs::create_dir(mnt.join("d")).unwrap();
        let (status, err) = m.stop_with(signal);
        assert!(status.success(), "{signal:?}: exit {status}: {err}");
        assert!(
            err.contains("journal synced and sealed at 4:"),
            "{signal:?}: {err}"
        );
        assert!(!common::is_mounted(&mnt), "{signal:?}: still mounted");
        let s = VolumeStatus::read(&vol).unwrap();
        assert_eq!(s.head.seq, 4);
        assert_eq!(s.applied.unwrap(), s.head);
        assert_eq!(
            s.sealed_segments,
            s.segments - 1,
            "the records are all in sealed segments"
        );
        let journal = libjfs::Journal::open_read_only(&vol.join("journal"), None).unwrap();
        let active = journal.segments().pop().unwrap();
        assert!(
            !active.sealed && active.last_seq < active.first_seq,
            "the active segment is empty"
        );
        assert_replays(&vol, dir.path());
    }
}

#[test]
fn kill_9_during_a_workload_recovers_on_the_next_mount() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = init(dir.path());
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("libjfs");
    let acked = dir.path().join("acked.log");
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for round in 0..20 {
        let mut m = MountedMaster::start(&vol, &mnt, &[]);
        // Churn: copy, edit and remove trees; and files acknowledged by fsync,
        // logged outside the mount only once `sync FILE` (fsync) returned.
        let script = format!(
            r#"
            cd '{mnt}'
            n=0
            while true; do
                cp -a '{src}' r{round}-$n
                echo "round {round} file $n" > acked-{round}-$n &&
                    sync acked-{round}-$n &&
                    echo acked-{round}-$n >> '{acked}'
                [ $n -gt 0 ] && rm -rf r{round}-$((n-1)) && mv acked-{round}-$((n-1)) old-{round}-$((n-1))
                n=$((n+1))
            done
            "#,
            mnt = mnt.display(),
            src = src.display(),
            acked = acked.display(),
        );
        let mut work = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100 + next() % 900));
        let (status, _) = m.stop_with(rustix::process::Signal::KILL);
        assert!(status.code().is_none(), "jfs-master was not killed");
        let _ = work.kill();
        let _ = work.wait();
        drop(m); // unmounts the dead mount

        // Mounting again replays what the journal holds beyond the tree.
        let m = MountedMaster::start(&vol, &mnt, &[]);
        for name in fs::read_to_string(&acked).unwrap_or_default().lines() {
            let (r, n) = name.trim_start_matches("acked-").split_once('-').unwrap();
            let content = format!("round {r} file {n}\n");
            let renamed = mnt.join(format!("old-{r}-{n}"));
            let got = fs::read_to_string(mnt.join(name)).or_else(|_| fs::read_to_string(&renamed));
            assert_eq!(
                got.ok().as_deref(),
                Some(content.as_str()),
                "round {round}: fsync'd {name} was lost"
            );
        }
        m.unmount();
        assert_replays(&vol, dir.path());
    }
    let s = VolumeStatus::read(&vol).unwrap();
    eprintln!(
        "20 kill -9 rounds; journal at {}, {} bytes",
        s.head, s.journal_bytes
    );
}

#[test]
fn status_and_snapshots_work_while_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = init(dir.path());
    let m = MountedMaster::start(&vol, &mnt, &["--sync", "interval:50"]);
    fs::write(mnt.join("release"), b"v1").unwrap();
    let out = ok("jfs-master", &[&"snapshot", &vol, &"create", &"v1"]);
    assert!(out.starts_with("snapshot v1 at 4:"), "{out}");
    let err = fails("jfs-master", &[&"snapshot", &vol, &"create", &"v1"], 1);
    assert!(err.contains("already exists"), "{err}");
    fs::write(mnt.join("release"), b"v2").unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&ok("jfs-master", &[&"status", &vol, &"--json"])).unwrap();
    assert_eq!(status["sync"], "interval:50");
    assert_eq!(
        status["mountpoint"],
        mnt.canonicalize().unwrap().display().to_string()
    );
    // genesis, create, write, snapshot, then O_TRUNC's truncate and the write.
    assert_eq!(status["position"]["seq"], 6);
    assert_eq!(status["position"], status["journal"]["head"]);
    let list = ok("jfs-master", &[&"snapshot", &vol, &"list"]);
    assert!(list.starts_with("v1\t4\t"), "{list}");
    // The snapshot is a journal marker: materialize reads it from the live volume.
    ok(
        "jfs-replica",
        &[&"materialize", &vol, &"--at", &"v1", &dir.path().join("v1")],
    );
    assert_eq!(fs::read(dir.path().join("v1/release")).unwrap(), b"v1");
    m.unmount();
    // Unmounted, the same commands read the volume directly.
    let status: serde_json::Value =
        serde_json::from_str(&ok("jfs-master", &[&"status", &vol, &"--json"])).unwrap();
    assert!(status.get("mountpoint").is_none());
    ok("jfs-master", &[&"snapshot", &vol, &"delete", &"v1"]);
    assert_eq!(ok("jfs-master", &[&"snapshot", &vol, &"list"]), "");
}

/// The fsx file-system exerciser (crates.io `fsx`, installed by .ci/run).
fn fsx_binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("fsx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    candidates
        .into_iter()
        .chain([home.join("bin/fsx")])
        .find(|p| p.is_file())
        .expect(
            "fsx is not installed: cargo install fsx --version 0.3.2 --locked (.ci/run does this)",
        )
}

/// fsx on a fresh mount with `readers` threads reading requests, then the
/// journal must replay to the same tree.
fn fsx_on_a_mount_with(readers: &str) {
    let fsx = fsx_binary();
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = init(dir.path());
    let m = MountedMaster::start(&vol, &mnt, &["--fuse-readers", readers]);
    let t = Instant::now();
    let out = Command::new(&fsx)
        .args(["-N", "100000", "-S", "20261121", "-P"])
        .arg(dir.path())
        .arg(mnt.join("fsxfile"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("All operations completed A-OK!"),
        "fsx failed with --fuse-readers {readers}:\n{text}"
    );
    eprintln!(
        "fsx: 100000 operations with --fuse-readers {readers} in {:?}",
        t.elapsed()
    );
    m.unmount();
    assert_replays(&vol, dir.path());
}

#[test]
fn fsx_runs_clean_and_the_journal_replays_to_the_same_file() {
    fsx_on_a_mount_with("8");
}

/// One reader hands fsx's large reads and writes, truncates, copies and
/// allocations to workers, and answers the rest itself.
#[test]
fn fsx_runs_clean_with_one_reader_handing_long_requests_on() {
    fsx_on_a_mount_with("1");
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let t = t.unwrap().path();
            fs::read_to_string(t.join("comm"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_threads_that_answer_the_kernel_are_as_asked_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = init(dir.path());
    let count =
        |names: &[String], prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    for (readers, want_readers, want_workers, text) in [
        (
            "1",
            1,
            8,
            "threads  1 reading requests, 8 running long ones",
        ),
        ("3", 3, 0, "threads  3 reading and answering requests"),
    ] {
        let m = MountedMaster::start(&vol, &mnt, &["--fuse-readers", readers]);
        let status: serde_json::Value =
            serde_json::from_str(&ok("jfs-master", &[&"status", &vol, &"--json"])).unwrap();
        assert_eq!(
            status["fuse_threads"],
            serde_json::json!({"readers": want_readers, "workers": want_workers}),
            "--fuse-readers {readers}"
        );
        let out = ok("jfs-master", &[&"status", &vol]);
        assert!(out.contains(text), "--fuse-readers {readers}:\n{out}");
        // What runs is what status says.
        let names = thread_names(m.child.as_ref().unwrap().id());
        assert_eq!(count(&names, "fuser-"), want_readers, "{names:?}");
        assert_eq!(count(&names, "jfs-long-"), want_workers, "{names:?}");
        m.unmount();
    }
    // auto follows the kernel's setting.
    let m = MountedMaster::start(&vol, &mnt, &[]);
    let status: serde_json::Value =
        serde_json::from_str(&ok("jfs-master", &[&"status", &vol, &"--json"])).unwrap();
    let one = libjfs::fuse::threads::wakes_here() == Some(true);
    assert_eq!(
        status["fuse_threads"]["readers"],
        if one { 1 } else { 8 },
        "wake_here {:?}",
        libjfs::fuse::threads::wakes_here()
    );
    let err = m.unmount();
    if libjfs::fuse::threads::wakes_here().is_some() {
        assert!(
            err.contains("wake_here"),
            "the mount says nothing of the setting:\n{err}"
        );
    }
    // A number that is not one is refused before anything is mounted.
    for bad in ["0", "many", "257"] {
        let err = fails(
            "jfs-master",
            &[&"mount", &vol, &mnt, &"--fuse-readers", &bad],
            2,
        );
        assert!(err.contains("not a number of threads"), "{bad}: {err}");
        assert!(!common::is_mounted(&mnt));
        let err = fails(
            "jfs-replica",
            &[&"follow", &vol, &"--mount", &mnt, &"--fuse-readers", &bad],
            2,
        );
        assert!(err.contains("not a number of threads"), "{bad}: {err}");
    }
}

/// stress-ng's file-system stressors (Debian's `stress-ng`, installed by
/// .ci/run), one process each, all at once.
const STRESSORS: [&str; 17] = [
    "dentry",
    "dir",
    "rename",
    "link",
    "symlink",
    "chmod",
    "chown",
    "utime",
    "xattr",
    "fallocate",
    "fpunch",
    "hdd",
    "copy-file",
    "filename",
    "mknod",
    "seek",
    "sync-file",
];

#[test]
fn stress_ng_runs_clean_and_a_rewind_over_its_records_gives_the_tree_back() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = init(dir.path());
    // Seventeen processes at once on one reader: what it hands to workers
    // and what it answers itself interleave.
    let m = MountedMaster::start(&vol, &mnt, common::ONE_READER);
    let work = mnt.join("stress");
    fs::create_dir(&work).unwrap();
    let mut cmd = Command::new("stress-ng");
    for s in STRESSORS {
        cmd.arg(format!("--{s}")).arg("1");
    }
    let t = Instant::now();
    let out = cmd
        // Files of bounded size, whatever the machine's speed: by default
        // hdd and fallocate write up to 1 GB each and copy-file 256 MB.
        .args(["--hdd-bytes", "128M", "--fallocate-bytes", "64M"])
        .args(["--copy-file-bytes", "128M", "--sync-file-bytes", "64M"])
        .args(["--timeout", "15", "--verify", "--temp-path"])
        .arg(&work)
        .current_dir(&work)
        .output()
        .expect("stress-ng is not installed: apt-get install stress-ng (.ci/run does this)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stress-ng failed:\n{text}");
    let head = VolumeStatus::read(&vol).unwrap().head.seq;
    eprintln!("stress-ng: {head} records in {:?}", t.elapsed());
    assert!(
        head > 1000,
        "stress-ng journaled only {head} records:\n{text}"
    );

    // Its files come and go; halfway through, the tree was full of them.
    // Undoing the second half, mounted, must give that tree back exactly.
    let half = head / 2;
    let t = Instant::now();
    ok("jfs-master", &[&"rewind", &"--to", &half.to_string(), &vol]);
    eprintln!("rewind of {} records: {:?}", head - half, t.elapsed());
    m.unmount();
    let at_half = dir.path().join("at-half");
    libjfs::materialize::materialize(&vol, half, &at_half, |_| {}).unwrap();
    common::assert_same_tree(&vol.join("tree"), &at_half);
    assert!(
        common::walk_count(&at_half) > 10,
        "nothing to compare at {half}"
    );
    assert_replays(&vol, dir.path());
}

const LOCK_PROBE_ENV: &str = "JFS_LOCK_PROBE_FILE";

/// Runs only as a child: tries a POSIX write lock and exits 0 if it got it,
/// 3 if another process holds one.
#[test]
fn lock_probe_child() {
    let Ok(path) = std::env::var(LOCK_PROBE_ENV) else {
        return;
    };
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    match rustix::fs::fcntl_lock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => std::process::exit(0),
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::ACCESS) => std::process::exit(3),
        Err(e) => panic!("lock probe: {e}"),
    }
}

#[test]
fn permissions_other_users_and_locks_behave_as_on_a_local_filesystem() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::env::var(LOCK_PROBE_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (vol, mnt) = init(dir.path());
    let m = MountedMaster::start(&vol, &mnt, &[]);
    fs::create_dir(mnt.join("shared")).unwrap();
    fs::set_permissions(mnt.join("shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(mnt.join("private")).unwrap();
    fs::set_permissions(mnt.join("private"), fs::Permissions::from_mode(0o700)).unwrap();

    // Another user can use the mount, and the kernel checks permissions.
    let as_nobody = |script: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("setpriv (util-linux)")
    };
    let out = as_nobody(&format!("echo mine > '{}/shared/theirs'", mnt.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = fs::metadata(mnt.join("shared/theirs")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (65534, 65534),
        "a new file belongs to its creator"
    );
    let out = as_nobody(&format!("echo no > '{}/private/x'", mnt.display()));
    assert!(
        !out.status.success(),
        "nobody wrote into root's 0700 directory"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = as_nobody(&format!("rm '{}/shared/theirs'", mnt.display()));
    assert!(
        out.status.success(),
        "the owner may remove its file from a sticky directory"
    );

    // flock and POSIX locks work between processes on the master.
    let file = mnt.join("lockme");
    fs::write(&file, b"x").unwrap();
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let st = Command::new("flock")
        .args(["-n"])
        .arg(&file)
        .arg("true")
        .status()
        .expect("flock (util-linux)");
    assert!(!st.success(), "flock -n got a lock another process holds");
    rustix::fs::flock(&held, rustix::fs::FlockOperation::Unlock).unwrap();
    assert!(Command::new("flock")
        .args(["-n"])
        .arg(&file)
        .arg("true")
        .status()
        .unwrap()
        .success());
    let probe = |expect: i32| {
        let st = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock_probe_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(LOCK_PROBE_ENV, &file)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(expect));
    };
    rustix::fs::fcntl_lock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    probe(3);
    rustix::fs::fcntl_lock(&held, rustix::fs::FlockOperation::NonBlockingUnlock).unwrap();
    probe(0);
    drop(held);

    // Other users cannot administer the volume: the admin socket is root's
    // (0600), and even with its mode loosened the server answers only root.
    let jfs = common::bin("jfs-master");
    let out = as_nobody(&format!("'{}' status '{}'", jfs.display(), vol.display()));
    assert!(!out.status.success(), "nobody read the status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    let socket = vol.join(libjfs::admin::SOCKET);
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&format!(
        "'{}' snapshot '{}' create theirs",
        jfs.display(),
        vol.display()
    ));
    assert!(!out.status.success(), "nobody created a snapshot");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 65534 may not administer this volume"),
        "{err}"
    );
    let list = common::ok("jfs-master", &[&"snapshot", &vol, &"list"]);
    assert!(!list.contains("theirs"), "{list}");
    // A client slow to send its request still reads why it was refused
    // (the server used to answer and close at once, and such a client's
    // write then failed with EPIPE).
    let out = as_nobody(&format!(
        "python3 -c 'import socket, time; s = socket.socket(socket.AF_UNIX); \
         s.connect(\"{}\"); time.sleep(0.3); s.sendall(b\"status\\n\"); \
         print(s.makefile().readline())'",
        socket.display()
    ));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("uid 65534 may not administer this volume"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    m.unmount();
    assert_replays(&vol, dir.path());
}
