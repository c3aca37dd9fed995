//! Benchmark of the master's FUSE mount: `cargo bench --bench mount`.
//!
//! A plain binary (no criterion) that runs the same six operations, in one
//! run, on three targets on the same disk and prints one table with each
//! figure beside the plain disk's:
//!
//! - plain: a directory on the disk;
//! - bindfs: `bindfs SRC MNT` over a directory on the same disk, a generic
//!   FUSE passthrough (Debian's `bindfs` package; skipped when absent);
//! - jfs: `jfs-master mount VOL MNT` of a fresh volume on the same disk, with
//!   the default `--sync fsync`.
//!
//! The operations, each timed on its own:
//!
//! 1. sequential write of a 1 GiB file: 1 MiB `write(2)`s from a buffer of
//!    pseudo-random (incompressible) bytes in memory, then `fsync` of the
//!    file and `sync(2)`;
//! 2. sequential read of it, 1 MiB `read(2)`s, after `sync(2)` and
//!    `echo 3 > /proc/sys/vm/drop_caches` (untimed; no remount), and again
//!    warm: one untimed read, then a timed one through a new open;
//! 3. create+write+close of 20,000 4 KiB files in one directory
//!    (`std::fs::write`), then `fsync` of the directory and `sync(2)`;
//! 4. `cp -a` of a real source tree (crates from `~/.cargo/registry/src`,
//!    read into the page cache just before), then `fsync` of the destination
//!    directory and `sync(2)`;
//! 5. `rm -rf` of that copy, then `fsync` of its parent and `sync(2)`.
//!
//! Every write-type operation ends with `fsync` of what it wrote and one
//! `sync(2)`, both inside the timing: on jfs `fsync` makes the journal
//! durable and `sync(2)` writes VOL/tree back (FUSE does not pass `syncfs` to
//! the server), so every target ends each operation with its bytes on disk.
//!
//! Operations run one at a time on all targets (plain, bindfs, jfs, always
//! in that order, then plain once more) before the next operation starts:
//! every create happens before any delete, because ext4 creates inodes
//! several times slower for a few minutes after many were deleted. Nothing
//! is deleted before step 5. The ratios are to the faster of the plain
//! disk's two runs, so that a machine that slowed down during an operation
//! does not make the FUSE targets look better than they are. (Not for the
//! read: the virtio host caches what the guest read, so a second plain
//! read would be warm there.)
//!
//! Environment: `JFS_BENCH_SCALE` (float, default 1.0) scales the 1 GiB, the
//! 20,000 files and the ~5,000 files of the tree; `JFS_BENCH_DIR` (default
//! `/var/tmp`) is where the scratch directory goes; `JFS_BENCH_WAKE_HERE=Y`
//! or `N` sets the kernel's FUSE `wake_here` for the run (see
//! docs/PERFORMANCE.md), which otherwise stays as the machine has it. Needs root (drop_caches,
//! FUSE mounts). MB is 10^6 bytes, MiB 2^20.

mod common;

use common::{loadavg, mb, secs};
use libjfs::mounts::unescape as unescape_mount;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The pseudo-random buffer the large file and the small files are cut from.
const PATTERN_BYTES: usize = 64 * MIB;
/// Files of the source tree copied by `cp -a`, at scale 1.
const TREE_FILES: usize = 5_000;

// ---------------------------------------------------------------- main

fn main() -> Result<()> {
    let scale = common::scale()?;
    let scaled = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    let base = common::bench_base();
    let t = Instant::now();
    let [jfs_master] = common::build_binaries(["jfs-master"])?;
    let build_time = t.elapsed();
    let started = Instant::now();

    let dir = base.join(format!("jfs-mount-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // Declared before the mounts: dropped after them, it removes everything.
    let _scratch = Scratch(dir.clone());
    // Also before the mounts: they read it when they start.
    let wake_here = common::WakeHere::from_env()?;

    print_machine(&dir, scale)?;
    println!("fuse wake_here: {}", wake_here.describe());
    println!(
        "binaries:      cargo build --release --workspace --bins took {:.1} s (not in the total below)",
        secs(build_time)
    );
    let big_mib = scaled(1024);
    let small_files = scaled(20_000);
    let tree = pick_tree(scaled(TREE_FILES))?;
    println!(
        "source tree:   {} crates from {} ({} .. {}): {} files, {} dirs, {} symlinks, {:.1} MB",
        tree.crates.len(),
        tree.root.display(),
        name_of(&tree.crates[0]),
        name_of(tree.crates.last().expect("at least one crate")),
        tree.count.files,
        tree.count.dirs,
        tree.count.symlinks,
        mb(tree.count.bytes)
    );
    let disk = DiskStats::for_dir(&dir);
    if disk.is_none() {
        println!(
            "disk writes:   not measured (the device of {} is not in /proc/diskstats)",
            dir.display()
        );
    }

    // The targets, all mounted for the whole run.
    let plain = dir.join("plain");
    fs::create_dir(&plain)?;
    let mut targets = vec![Target {
        name: "plain",
        dir: plain,
        server: None,
        status: None,
    }];
    match bindfs_version() {
        Some(version) => {
            let src = dir.join("bindfs-backing");
            let mnt = dir.join("bindfs-mnt");
            fs::create_dir(&src)?;
            fs::create_dir(&mnt)?;
            let mut cmd = Command::new("bindfs");
            cmd.arg("-f").arg(&src).arg(&mnt);
            let m = Mount::start("bindfs", cmd, &mnt, &dir.join("bindfs.log"))?;
            println!(
                "bindfs:        {version}, `bindfs -f {} {}` (default options: single-threaded; -f keeps it in the foreground)",
                src.display(),
                mnt.display()
            );
            targets.push(Target {
                name: "bindfs",
                dir: mnt,
                server: Some(m),
                status: None,
            });
        }
        None => {
            println!("bindfs:        not installed (or `bindfs --version` fails): column skipped; apt-get install bindfs");
        }
    }
    let vol = dir.join("vol");
    let jfs_mnt = dir.join("jfs-mnt");
    run_ok(Command::new(&jfs_master).arg("init").arg(&vol))?;
    fs::create_dir(&jfs_mnt)?;
    let mut cmd = Command::new(&jfs_master);
    cmd.arg("mount").arg(&vol).arg(&jfs_mnt);
    let m = Mount::start("jfs", cmd, &jfs_mnt, &dir.join("jfs-master.log"))?;
    println!(
        "jfs:           `{} mount {} {}` (default --sync fsync)",
        jfs_master.display(),
        vol.display(),
        jfs_mnt.display()
    );
    targets.push(Target {
        name: "jfs",
        dir: jfs_mnt,
        server: Some(m),
        status: Some((jfs_master.clone(), vol.clone())),
    });
    println!("load average:  {} before the operations", loadavg());
    println!();

    let pattern = pattern(PATTERN_BYTES);
    let plain = &targets[0];
    let mut rows: Vec<Row> = Vec::new();
    let can_drop = drop_caches().is_ok();
    if !can_drop {
        println!(
            "WARNING: cannot write /proc/sys/vm/drop_caches (not root?): reads below are WARM"
        );
    }

    // 1. Sequential write.
    let big_bytes = (big_mib * MIB) as u64;
    let mut row = Row::new(
        format!("seq write {big_mib} MiB"),
        "write",
        "MB/s",
        big_bytes as f64 / 1e6,
        Some(2.0),
    );
    for t in &targets {
        let path = t.dir.join("big");
        row.push(measure(t, disk.as_ref(), || {
            seq_write(&path, &pattern, big_mib)
        })?);
    }
    let again = plain.dir.join("big-again");
    row.plain_again = Some(measure(plain, disk.as_ref(), || {
        seq_write(&again, &pattern, big_mib)
    })?);
    rows.push(row);

    // 2. Sequential read, cold.
    let mut row = Row::new(
        format!("seq read {big_mib} MiB, cold"),
        "read",
        "MB/s",
        big_bytes as f64 / 1e6,
        Some(1.1),
    );
    for t in &targets {
        let path = t.dir.join("big");
        rustix::fs::sync();
        if can_drop {
            drop_caches()?;
        }
        row.push(measure(t, disk.as_ref(), || {
            seq_read(&path, &pattern, big_bytes)
        })?);
    }
    // No second plain read: the virtio host caches what the guest wrote or
    // read lately, so a second cold read, of either plain file, is warm there.
    rows.push(row);

    // 2b. The same read again, warm: after one untimed read, through a new
    // open, as a second `cat` of a file would.
    let mut row = Row::new(
        format!("seq read {big_mib} MiB, warm"),
        "read again",
        "MB/s",
        big_bytes as f64 / 1e6,
        Some(1.1),
    );
    for t in &targets {
        let path = t.dir.join("big");
        seq_read(&path, &pattern, big_bytes)?;
        row.push(measure(t, disk.as_ref(), || {
            seq_read(&path, &pattern, big_bytes)
        })?);
    }
    rows.push(row);

    // 3. Small files.
    let mut row = Row::new(
        format!("{small_files} x 4 KiB files"),
        "small files",
        "files/s",
        small_files as f64,
        Some(3.0),
    );
    for t in &targets {
        let d = t.dir.join("small");
        fs::create_dir(&d)?;
        row.push(measure(t, disk.as_ref(), || {
            small_files_run(&d, &pattern, small_files)
        })?);
        let n = fs::read_dir(&d)?.count();
        ensure!(
            n == small_files,
            "{}: {n} small files, not {small_files}",
            t.name
        );
    }
    let again = plain.dir.join("small-again");
    fs::create_dir(&again)?;
    row.plain_again = Some(measure(plain, disk.as_ref(), || {
        small_files_run(&again, &pattern, small_files)
    })?);
    rows.push(row);

    // 4. cp -a of the source tree, read into the page cache first.
    let warmed = tree.warm()?;
    assert_eq!(warmed, tree.count.bytes, "the source tree changed");
    let mut row = Row::new(
        format!("cp -a tree ({} files)", tree.count.files),
        "cp -a",
        "files/s",
        tree.count.files as f64,
        Some(3.0),
    );
    for t in &targets {
        let d = t.dir.join("tree");
        fs::create_dir(&d)?;
        row.push(measure(t, disk.as_ref(), || cp_tree(&tree, &d))?);
        let copied = count_tree(&d)?;
        ensure!(
            copied == tree.count,
            "{}: cp -a gave {copied:?}, the source has {:?}",
            t.name,
            tree.count
        );
    }
    let again = plain.dir.join("tree-again");
    fs::create_dir(&again)?;
    row.plain_again = Some(measure(plain, disk.as_ref(), || cp_tree(&tree, &again))?);
    rows.push(row);

    // 4a. Walking the copy again later (a build's stats, `git status`,
    // `find`): every directory listed and every entry stat-ed, once
    // untimed, then after a pause longer than a second.
    let rounds = 3;
    let entries = tree.count.files + tree.count.dirs + tree.count.symlinks;
    let mut row = Row::new(
        format!("walk tree again x {rounds}"),
        "walk",
        "stats/s",
        (entries * rounds) as f64,
        None,
    );
    for t in &targets {
        let d = t.dir.join("tree");
        row.push(measure(t, disk.as_ref(), || walk_again(&d, rounds))?);
    }
    row.plain_again = Some(measure(plain, disk.as_ref(), || {
        walk_again(&plain.dir.join("tree-again"), rounds)
    })?);
    rows.push(row);

    // 4b. Looking up names that do not exist, each several times: what a
    // search path or a build probing for files does.
    let (names, rounds) = ((small_files / 10).max(1), 10);
    let mut row = Row::new(
        format!("stat {names} missing x {rounds}"),
        "missing",
        "stats/s",
        (names * rounds) as f64,
        None,
    );
    for t in &targets {
        let d = t.dir.join("missing");
        fs::create_dir(&d)?;
        row.push(measure(t, disk.as_ref(), || {
            missing_names(&d, names, rounds)
        })?);
    }
    let again = plain.dir.join("missing-again");
    fs::create_dir(&again)?;
    row.plain_again = Some(measure(plain, disk.as_ref(), || {
        missing_names(&again, names, rounds)
    })?);
    rows.push(row);

    // 5. rm -rf of the copy.
    let mut row = Row::new(
        format!("rm -rf tree ({} files)", tree.count.files),
        "rm -rf",
        "files/s",
        tree.count.files as f64,
        Some(3.0),
    );
    for t in &targets {
        let d = t.dir.join("tree");
        row.push(measure(t, disk.as_ref(), || rm_tree(&d))?);
        ensure!(!d.exists(), "{}: {} still exists", t.name, d.display());
    }
    let again = plain.dir.join("tree-again");
    row.plain_again = Some(measure(plain, disk.as_ref(), || rm_tree(&again))?);
    rows.push(row);

    print_table(&targets, &rows);
    println!();
    print_details(&targets, &rows, disk.is_some());
    println!();

    // The journal, after a clean unmount (which syncs and seals it).
    let mut jfs = targets.pop().expect("jfs is the last target");
    let server = jfs.server.as_mut().expect("jfs has a server");
    let t = Instant::now();
    let (status, log) = server.unmount()?;
    let unmount = t.elapsed();
    ensure!(status.success(), "jfs-master exited with {status}:\n{log}");
    ensure!(
        log.contains("journal synced and sealed"),
        "jfs-master did not seal the journal:\n{log}"
    );
    print_journal(&jfs_master, &vol, unmount, big_bytes, small_files, &tree)?;
    drop(targets);
    drop(jfs);

    println!();
    println!(
        "total bench time {:.1} s (JFS_BENCH_SCALE={scale}); load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    println!("(cleaning up {} now)", dir.display());
    Ok(())
}

// ---------------------------------------------------------------- targets and mounts

struct Target {
    name: &'static str,
    /// Where the operations run.
    dir: PathBuf,
    /// The FUSE server, for the mounted targets.
    server: Option<Mount>,
    /// jfs-master and the volume, for jfs.
    status: Option<(PathBuf, PathBuf)>,
}

impl Target {
    /// The journal's head seq, asked through the admin socket (jfs only).
    fn journal_head(&self) -> Option<u64> {
        let (bin, vol) = self.status.as_ref()?;
        let out = Command::new(bin)
            .arg("status")
            .arg(vol)
            .arg("--json")
            .output()
            .ok()?;
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        s["journal"]["head"]["seq"].as_u64()
    }
}

/// A FUSE server run in the foreground by this process. Dropping it
/// unmounts (lazily if it must) and reaps the process, however the bench ends.
struct Mount {
    name: &'static str,
    mnt: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mount {
    /// Spawns `cmd` (stdout and stderr to `log`) and waits until `mnt` is a mount point.
    fn start(name: &'static str, mut cmd: Command, mnt: &Path, log: &Path) -> Result<Mount> {
        let out = File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {cmd:?}"))?;
        let mut m = Mount {
            name,
            mnt: mnt.to_owned(),
            log: log.to_owned(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(mnt) {
            if let Some(status) = m.child.as_mut().expect("running").try_wait()? {
                m.child = None;
                bail!(
                    "{name} exited with {status} before mounting:\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "{name}: {} was not mounted within 20 s",
                mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    /// User + system CPU seconds the server has used so far (all threads).
    fn cpu(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces), from field 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on Linux, whatever the kernel's HZ.
        Some(ticks as f64 / 100.0)
    }

    /// `fusermount3 -u`, then waits for the server; returns its status and log.
    fn unmount(&mut self) -> Result<(ExitStatus, String)> {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .status()
            .context("run fusermount3")?;
        ensure!(st.success(), "fusermount3 -u {} failed", self.mnt.display());
        let status = self.child.take().expect("running").wait()?;
        Ok((status, fs::read_to_string(&self.log).unwrap_or_default()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("{}: unmounting {} lazily", self.name, self.mnt.display());
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&self.mnt)
                    .status();
            }
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Ok(None) => {
                        eprintln!("{}: server did not exit, killing it", self.name);
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
    }
}

/// Removes the scratch directory however the run ends, after unmounting
/// anything still mounted below it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let canon = self.0.canonicalize().unwrap_or_else(|_| self.0.clone());
        for (_, mp, _, _) in mounts() {
            if mp.starts_with(&canon) {
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&mp)
                    .status();
            }
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// True when `path` is a mount point (as /proc/self/mounts lists it).
fn is_mounted(path: &Path) -> bool {
    let want = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts().iter().any(|(_, mp, _, _)| *mp == want)
}

/// (device, mount point, type, options) of every mount.
fn mounts() -> Vec<(String, PathBuf, String, String)> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| {
                (
                    f[0].to_owned(),
                    unescape_mount(f[1]),
                    f[2].to_owned(),
                    f[3].to_owned(),
                )
            })
        })
        .collect()
}

fn bindfs_version() -> Option<String> {
    let out = Command::new("bindfs").arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("bindfs")
            .trim()
            .to_owned()
    })
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

// ---------------------------------------------------------------- measuring

/// One operation on one target.
#[derive(Clone, Copy, Default)]
struct Run {
    elapsed: Duration,
    /// The final fsync + sync(2), part of `elapsed`.
    sync: Duration,
    /// CPU seconds of the FUSE server during the operation.
    server_cpu: Option<f64>,
    /// Bytes the disk was asked to write during the operation (machine-wide).
    disk_written: Option<u64>,
    /// Records jfs journaled during the operation.
    records: Option<u64>,
}

/// Times `op` on `t` after writing back everything dirty (untimed); `op`
/// returns its own (elapsed, sync part).
fn measure(
    t: &Target,
    disk: Option<&DiskStats>,
    op: impl FnOnce() -> Result<(Duration, Duration)>,
) -> Result<Run> {
    let head0 = t.journal_head();
    rustix::fs::sync();
    let cpu0 = t.server.as_ref().and_then(Mount::cpu);
    let disk0 = disk.and_then(DiskStats::written);
    let (elapsed, sync) = op().with_context(|| format!("on {}", t.name))?;
    let cpu1 = t.server.as_ref().and_then(Mount::cpu);
    let disk1 = disk.and_then(DiskStats::written);
    let head1 = t.journal_head();
    Ok(Run {
        records: head0.zip(head1).map(|(a, b)| b - a),
        elapsed,
        sync,
        server_cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
        disk_written: disk0.zip(disk1).map(|(a, b)| b.saturating_sub(a)),
    })
}

/// `fsync` of `path` (a file or directory), then `sync(2)`.
fn fsync_and_sync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync {}", path.display()))?;
    rustix::fs::sync();
    Ok(())
}

fn seq_write(path: &Path, pattern: &[u8], mib: usize) -> Result<(Duration, Duration)> {
    let start = Instant::now();
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    for i in 0..mib {
        f.write_all(chunk(pattern, MIB, i))
            .with_context(|| format!("write {}", path.display()))?;
    }
    let s = Instant::now();
    f.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    drop(f);
    rustix::fs::sync();
    Ok((start.elapsed(), s.elapsed()))
}

/// Reads the file with 1 MiB reads; checks its length and 64 bytes of every
/// MiB against what was written (negligible next to the reads).
fn seq_read(path: &Path, pattern: &[u8], len: u64) -> Result<(Duration, Duration)> {
    let mut buf = vec![0u8; MIB];
    let start = Instant::now();
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut total = 0u64;
    let mut i = 0;
    loop {
        let mut got = 0;
        while got < MIB {
            match f.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            }
        }
        if got == 0 {
            break;
        }
        total += got as u64;
        let at = (i * 4099) % (MIB - 64);
        ensure!(
            got == MIB && buf[at..at + 64] == chunk(pattern, MIB, i)[at..at + 64],
            "{}: MiB {i} differs from what was written",
            path.display()
        );
        i += 1;
    }
    let elapsed = start.elapsed();
    ensure!(
        total == len,
        "{}: read {total} bytes, wrote {len}",
        path.display()
    );
    Ok((elapsed, Duration::ZERO))
}

fn small_files_run(dir: &Path, pattern: &[u8], n: usize) -> Result<(Duration, Duration)> {
    let start = Instant::now();
    for i in 0..n {
        let p = dir.join(format!("f{i:05}"));
        fs::write(&p, chunk(pattern, 4 * KIB, i))
            .with_context(|| format!("write {}", p.display()))?;
    }
    let s = Instant::now();
    fsync_and_sync(dir)?;
    Ok((start.elapsed(), s.elapsed()))
}

/// Lists every directory under `dir` and stats every entry: once, then,
/// after 1.5 s, `rounds` times timed. Fails unless each walk sees the same.
fn walk_again(dir: &Path, rounds: usize) -> Result<(Duration, Duration)> {
    fn walk(dir: &Path) -> Result<usize> {
        let mut seen = 0;
        for e in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
            let path = e?.path();
            let meta = fs::symlink_metadata(&path)?;
            seen += 1;
            if meta.is_dir() {
                seen += walk(&path)?;
            }
        }
        Ok(seen)
    }
    let first = walk(dir)?;
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    for _ in 0..rounds {
        let seen = walk(dir)?;
        ensure!(
            seen == first,
            "{}: walked {first} entries, then {seen}",
            dir.display()
        );
    }
    Ok((start.elapsed(), Duration::ZERO))
}

/// `stat` of `names` names that do not exist in `dir`, `rounds` times over.
fn missing_names(dir: &Path, names: usize, rounds: usize) -> Result<(Duration, Duration)> {
    let paths: Vec<PathBuf> = (0..names).map(|i| dir.join(format!("m{i:05}"))).collect();
    let start = Instant::now();
    for _ in 0..rounds {
        for p in &paths {
            match fs::symlink_metadata(p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => bail!("{}: {r:?}, expected not found", p.display()),
            }
        }
    }
    Ok((start.elapsed(), Duration::ZERO))
}

fn cp_tree(tree: &Tree, dest: &Path) -> Result<(Duration, Duration)> {
    let start = Instant::now();
    let st = Command::new("cp")
        .arg("-a")
        .args(&tree.crates)
        .arg(dest)
        .status()
        .context("run cp")?;
    ensure!(st.success(), "cp -a to {} failed: {st}", dest.display());
    let s = Instant::now();
    fsync_and_sync(dest)?;
    Ok((start.elapsed(), s.elapsed()))
}

fn rm_tree(dir: &Path) -> Result<(Duration, Duration)> {
    let parent = dir.parent().expect("has a parent");
    let start = Instant::now();
    let st = Command::new("rm")
        .arg("-rf")
        .arg(dir)
        .status()
        .context("run rm")?;
    ensure!(st.success(), "rm -rf {} failed: {st}", dir.display());
    let s = Instant::now();
    fsync_and_sync(parent)?;
    Ok((start.elapsed(), s.elapsed()))
}

fn drop_caches() -> io::Result<()> {
    fs::write("/proc/sys/vm/drop_caches", "3")
}

/// Sectors written, from /proc/diskstats, of the device holding the bench dir.
struct DiskStats {
    major: u64,
    minor: u64,
    name: String,
}

impl DiskStats {
    fn for_dir(dir: &Path) -> Option<DiskStats> {
        let dev = fs::metadata(dir).ok()?.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let mut d = DiskStats {
            major,
            minor,
            name: String::new(),
        };
        d.name = d.line()?.2;
        Some(d)
    }

    fn line(&self) -> Option<(u64, u64, String, u64)> {
        fs::read_to_string("/proc/diskstats")
            .ok()?
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (ma, mi) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
                (ma == self.major && mi == self.minor)
                    .then(|| Some((ma, mi, f.get(2)?.to_string(), f.get(9)?.parse().ok()?)))?
            })
    }

    /// Bytes written to the device since boot.
    fn written(&self) -> Option<u64> {
        Some(self.line()?.3 * 512)
    }
}

// ---------------------------------------------------------------- data

/// Pseudo-random bytes (xorshift64*): incompressible to zstd.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v
}

/// The `i`-th chunk of `size` bytes of the pattern, wrapping around.
fn chunk(pattern: &[u8], size: usize, i: usize) -> &[u8] {
    let off = (i * size) % pattern.len();
    &pattern[off..off + size]
}

// ---------------------------------------------------------------- the source tree

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    files: usize,
    dirs: usize,
    symlinks: usize,
    /// Bytes of regular files.
    bytes: u64,
}

struct Tree {
    root: PathBuf,
    /// Crate directories, copied by one `cp -a`.
    crates: Vec<PathBuf>,
    /// Everything under the crates, the crate directories included.
    count: Count,
}

impl Tree {
    /// Reads every file, so that `cp -a` reads from the page cache; returns the bytes read.
    fn warm(&self) -> Result<u64> {
        fn walk(p: &Path, bytes: &mut u64, buf: &mut [u8]) -> Result<()> {
            for e in fs::read_dir(p)? {
                let e = e?;
                let ft = e.file_type()?;
                if ft.is_dir() {
                    walk(&e.path(), bytes, buf)?;
                } else if ft.is_file() {
                    let mut f = File::open(e.path())?;
                    loop {
                        let n = f.read(buf)?;
                        if n == 0 {
                            break;
                        }
                        *bytes += n as u64;
                    }
                }
            }
            Ok(())
        }
        let mut bytes = 0;
        let mut buf = vec![0u8; MIB];
        for c in &self.crates {
            walk(c, &mut bytes, &mut buf)?;
        }
        Ok(bytes)
    }
}

/// Crate directories of the cargo registry sources, in path order, until
/// they hold at least `files` files.
fn pick_tree(files: usize) -> Result<Tree> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let root = home.join("registry/src");
    let mut crates: Vec<PathBuf> = Vec::new();
    for index in fs::read_dir(&root)
        .with_context(|| format!("read {} (built once the workspace is)", root.display()))?
    {
        let index = index?.path();
        if index.is_dir() {
            for c in fs::read_dir(&index)? {
                let c = c?;
                if c.file_type()?.is_dir() {
                    crates.push(c.path());
                }
            }
        }
    }
    crates.sort();
    let mut picked = Vec::new();
    let mut count = Count::default();
    for c in crates {
        if count.files >= files {
            break;
        }
        let n = count_tree(&c)?;
        count.files += n.files;
        count.dirs += n.dirs + 1;
        count.symlinks += n.symlinks;
        count.bytes += n.bytes;
        picked.push(c);
    }
    ensure!(
        count.files >= files,
        "only {} files in {}",
        count.files,
        root.display()
    );
    Ok(Tree {
        root,
        crates: picked,
        count,
    })
}

/// What lies below `dir` (not counting `dir` itself).
fn count_tree(dir: &Path) -> Result<Count> {
    let mut c = Count::default();
    for e in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        let md = e.metadata()?;
        if md.is_dir() {
            let sub = count_tree(&e.path())?;
            c.files += sub.files;
            c.dirs += sub.dirs + 1;
            c.symlinks += sub.symlinks;
            c.bytes += sub.bytes;
        } else if md.is_symlink() {
            c.symlinks += 1;
        } else if md.is_file() {
            c.files += 1;
            c.bytes += md.len();
        }
    }
    Ok(c)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- reporting

struct Row {
    name: String,
    /// A name of a word or two, for the line about the plain disk's runs.
    short: &'static str,
    unit: &'static str,
    /// MB or files: the numerator of the rate.
    amount: f64,
    /// The aim for jfs, as a ratio to the plain disk, where there is one.
    aim: Option<f64>,
    /// One per target, in target order.
    runs: Vec<Run>,
    /// The plain disk once more, after the FUSE targets: how much the
    /// machine drifted during the operation.
    plain_again: Option<Run>,
}

impl Row {
    fn new(
        name: String,
        short: &'static str,
        unit: &'static str,
        amount: f64,
        aim: Option<f64>,
    ) -> Row {
        Row {
            name,
            short,
            unit,
            amount,
            aim,
            runs: Vec::new(),
            plain_again: None,
        }
    }

    fn push(&mut self, r: Run) {
        self.runs.push(r);
    }

    /// The baseline: the faster of the plain disk's two runs, so that a
    /// plain run slowed by the machine never flatters the others.
    fn plain_secs(&self) -> f64 {
        let first = secs(self.runs[0].elapsed);
        self.plain_again
            .as_ref()
            .map_or(first, |r| first.min(secs(r.elapsed)))
    }
}

fn print_machine(dir: &Path, scale: f64) -> Result<()> {
    let (nproc, kernel, cpu, mem) = common::machine();
    let canon = fs::canonicalize(dir)?;
    let mount = mounts()
        .into_iter()
        .filter(|(_, mp, _, _)| canon.starts_with(mp))
        .max_by_key(|(_, mp, _, _)| mp.as_os_str().len());
    println!("== jfs mount benchmark");
    let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_owned());
    let mut idle =
        read("/sys/devices/system/cpu/cpuidle/current_driver").unwrap_or_else(|_| "?".into());
    // How long an idle vCPU polls before it halts, where the guest's
    // haltpoll driver decides (0: it halts at once).
    if let Ok(ns) = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        idle = format!("{idle}, guest_halt_poll_ns {ns}");
    }
    println!(
        "machine:       nproc {nproc}, kernel {}, cpu {cpu}, memory {mem}, cpuidle driver {idle}",
        kernel.trim()
    );
    println!("               (unless fuse wake_here is Y, FUSE requests wake the other process on another CPU:");
    println!("               in a VM whose idle vCPUs halt at once, each wakeup is slow, and FUSE figures are");
    println!("               worse on an idle machine than a busy one; see docs/PERFORMANCE.md)");
    match mount {
        Some((dev, mp, fstype, opts)) => println!(
            "bench dir:     {} on {dev} ({fstype}, mounted at {}, {opts})",
            canon.display(),
            mp.display()
        ),
        None => println!(
            "bench dir:     {} (filesystem not found in /proc/mounts)",
            canon.display()
        ),
    }
    println!(
        "build:         {} profile, JFS_BENCH_SCALE={scale}",
        if cfg!(debug_assertions) {
            "debug (numbers are meaningless)"
        } else {
            "release"
        }
    );
    println!(
        "load average:  {} at the start (other work on the machine disturbs the figures)",
        loadavg()
    );
    Ok(())
}

fn print_table(targets: &[Target], rows: &[Row]) {
    println!("== Time of each operation (s), rate, and ratio to the plain disk in this run (x plain = time / plain time)");
    println!("   Write-type operations include a final fsync and sync(2); reads are after drop_caches (untimed).");
    println!("   Each operation runs on every target (in the order shown), then on the plain disk again, before");
    println!("   the next operation starts, so every create comes before any delete: ext4 creates inodes several");
    println!("   times slower for a few minutes after many were deleted on the same filesystem (by anyone: leave");
    println!("   5 minutes between runs, and note that at scale 1 this bench deletes ~80,000 files and ~5.6 GB");
    println!("   when it cleans up).");
    let mut head = format!("   {:<28} {:>7}", "operation", "unit");
    for t in targets {
        if t.name == "plain" {
            head += &format!(" | {:>8} {:>9}", "plain s", "rate");
        } else {
            head += &format!(
                " | {:>8} {:>7} {:>9}",
                format!("{} s", t.name),
                "x plain",
                "rate"
            );
        }
    }
    head += &format!(" | {:>6} {}", "aim", "jfs");
    println!("{head}");
    for r in rows {
        let plain = r.plain_secs();
        let mut line = format!("   {:<28} {:>7}", r.name, r.unit);
        for (t, run) in targets.iter().zip(&r.runs) {
            if t.name == "plain" {
                line += &format!(" | {:>8.3} {:>9.1}", plain, r.amount / plain);
            } else {
                let s = secs(run.elapsed);
                line += &format!(" | {:>8.3} {:>7.2} {:>9.1}", s, s / plain, r.amount / s);
            }
        }
        let jfs = secs(r.runs.last().expect("jfs ran").elapsed) / plain;
        line += &match r.aim {
            Some(aim) => format!(
                " | {:>5}x {}",
                aim,
                if jfs <= aim { "met" } else { "MISSED" }
            ),
            None => format!(" | {:>6} -", "none"),
        };
        println!("{line}");
    }
    println!("   The plain disk runs each operation twice, first and again after the FUSE targets (but the read,");
    println!("   which the virtio host would serve from its cache the second time); the table takes the faster");
    println!("   (s, first / again), so that a machine that slowed down does not flatter jfs:");
    let both: Vec<String> = rows
        .iter()
        .map(|r| {
            let again = r
                .plain_again
                .as_ref()
                .map_or("-".into(), |a| format!("{:.3}", secs(a.elapsed)));
            format!("{} {:.3} / {again}", r.short, secs(r.runs[0].elapsed))
        })
        .collect();
    println!("   {}", both.join("; "));
}

fn print_details(targets: &[Target], rows: &[Row], disk: bool) {
    println!("== Where the time goes: \"sync s\" is the final fsync + sync(2) inside each time above; \"cpu s\" is");
    println!("   the FUSE server's user+system CPU during the operation (/proc/PID/stat; kernel time spent on the");
    println!("   caller's side is not in it); \"disk MB\" is what the disk was asked to write during the operation");
    println!(
        "   (/proc/diskstats, machine-wide{}); \"records\" is how many records jfs journaled.",
        if disk { "" } else { "; not available here" }
    );
    let mut head = format!("   {:<28}", "operation");
    for t in targets {
        if t.server.is_some() {
            head += &format!(
                " | {:>13} {:>7} {:>8}",
                format!("{} sync s", t.name),
                "cpu s",
                "disk MB"
            );
            if t.status.is_some() {
                head += &format!(" {:>8}", "records");
            }
        } else {
            head += &format!(" | {:>13} {:>8}", format!("{} sync s", t.name), "disk MB");
        }
    }
    println!("{head}");
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    for r in rows {
        let mut line = format!("   {:<28}", r.name);
        for (t, run) in targets.iter().zip(&r.runs) {
            let disk = opt(run.disk_written.map(mb), 1);
            if t.server.is_some() {
                line += &format!(
                    " | {:>13.3} {:>7} {:>8}",
                    secs(run.sync),
                    opt(run.server_cpu, 2),
                    disk
                );
                if t.status.is_some() {
                    line += &format!(" {:>8}", opt(run.records.map(|r| r as f64), 0));
                }
            } else {
                line += &format!(" | {:>13.3} {:>8}", secs(run.sync), disk);
            }
        }
        println!("{line}");
    }
}

/// Bytes on disk (allocated blocks) under `dir`, and the apparent size.
fn du(dir: &Path) -> Result<(u64, u64)> {
    let (mut alloc, mut apparent) = (0, 0);
    for e in fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        alloc += md.blocks() * 512;
        if md.is_dir() {
            let (a, b) = du(&e.path())?;
            alloc += a;
            apparent += b;
        } else {
            apparent += md.len();
        }
    }
    Ok((alloc, apparent))
}

fn print_journal(
    jfs_master: &Path,
    vol: &Path,
    unmount: Duration,
    big_bytes: u64,
    small_files: usize,
    tree: &Tree,
) -> Result<()> {
    let out = Command::new(jfs_master)
        .arg("status")
        .arg(vol)
        .arg("--json")
        .output()?;
    ensure!(out.status.success(), "jfs-master status failed");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let j = &s["journal"];
    let (alloc, apparent) = du(&vol.join("journal"))?;
    let payload = big_bytes + (small_files * 4 * KIB) as u64 + tree.count.bytes;
    println!("== The jfs journal after the run (clean unmount, which synced and sealed it, took {:.2} s)", secs(unmount));
    println!(
        "   {} records (seq {} .. {}), {} segments ({} sealed), {:.1} MB on disk ({:.1} MB apparent)",
        j["records"],
        j["first_seq"],
        j["head"]["seq"],
        j["segments"],
        j["sealed_segments"],
        mb(alloc),
        mb(apparent)
    );
    println!(
        "   file contents written through the mount: {:.1} MB (the large file is pseudo-random, incompressible;",
        mb(payload)
    );
    println!("   the tree's sources compress about 10x); the rm -rf'd tree stays in the journal");
    Ok(())
}
