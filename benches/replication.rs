//! Benchmark of replication over TCP: `cargo bench --bench replication`.
//!
//! A plain binary (no criterion) that runs the real `jfs-master` and
//! `jfs-replica` on loopback and prints each figure beside its baseline and
//! its aim:
//!
//! 1. **Lag at a steady rate**: 4 KiB files written on the master's mount
//!    (`std::fs::write`, a new file each, a sequence number in it) at 200/s
//!    for 10 s, with the master's `--sync interval:5` and then its default
//!    `--sync fsync`. A thread watches the replica's `RVOL/tree` (inotify
//!    wakes it; it then reads the files in order) and takes, per write, the
//!    time from the return of the write+close on the master to the moment
//!    the replica's tree holds the file's whole content.
//! 2. **Lag in a burst**: 2,000 such writes as fast as they go; the same
//!    per-write lag, and the time until the last one is visible.
//! 3. **Catch-up**: the replica is stopped (SIGTERM), 20,000 files are
//!    written on the master, and the replica is started again: the time from
//!    its start to its position reaching the master's head, in records/s and
//!    MB/s. Then a new replica joins the volume cold and fetches all of it
//!    (sealed segments travel as they are).
//! 4. **rsync loop vs jfs**: a tree of 100,000 4 KiB files (in 100
//!    directories) made on the master, and the same tree in a plain
//!    directory copied by rsync to two others. Then 2 KiB are overwritten in
//!    each of 100 files, on both. jfs: the time from the start of the
//!    changes to the replica reaching the master's head, and the bytes both
//!    ways between them, counted by a TCP proxy in this process. rsync:
//!    `rsync -a --delete --stats SRC/ DST/` (local, so whole files), then
//!    the same with `--no-whole-file` (the delta algorithm) to the second
//!    copy, and once more with nothing to do; bytes are rsync's own "Total
//!    bytes sent" + "received".
//!
//! The lag replica connects to the master directly; from the catch-up on,
//! replicas go through the counting proxy (one more hop, two more thread
//! wakeups per message).
//!
//! Environment: `JFS_BENCH_SCALE` (float, default 1.0) scales the steady
//! run's length, the burst, the catch-up's files and the tree (the 100
//! changed files stay 100 unless the tree is smaller); `JFS_BENCH_DIR`
//! (default `/var/tmp`) is where the scratch directory goes;
//! `JFS_BENCH_WAKE_HERE=Y` or `N` sets the kernel's FUSE `wake_here` for
//! the run (see docs/PERFORMANCE.md). Needs FUSE
//! (root or fusermount3) and `rsync` for section 4 (skipped without it).
//! MB is 10^6 bytes, KiB 2^10.

mod common;

use common::{loadavg, mb, secs};
use libjfs::mounts::unescape as unescape_mount;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use libjfs::admin::Request;
use serde_json::Value;

const KIB: usize = 1 << 10;
/// Size of every file written.
const FILE: usize = 4 * KIB;
/// The pseudo-random buffer the files are cut from.
const PATTERN_BYTES: usize = 16 << 20;
/// Files changed in the rsync comparison, and how much of each.
const CHANGED_FILES: usize = 100;
const CHANGE_BYTES: usize = 2 * KIB;
const CHANGE_OFFSET: u64 = KIB as u64;
/// Aims, from the issue.
const AIM_LAG_P99_MS: f64 = 10.0;
const AIM_RSYNC_RATIO: f64 = 100.0;

// ---------------------------------------------------------------- main

fn main() -> Result<()> {
    let scale = common::scale()?;
    let scaled = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    let base = common::bench_base();
    let t = Instant::now();
    let bins = build_binaries()?;
    let build_time = t.elapsed();
    let started = Instant::now();

    let dir = base.join(format!("jfs-repl-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // Declared before the processes: dropped after them, it removes everything.
    let _scratch = Scratch(dir.clone());
    let wake = dir.join("wake");
    fs::create_dir(&wake)?;
    // Before the mounts, which read it when they start.
    let wake_here = common::WakeHere::from_env()?;

    let (nproc, kernel, cpu, mem) = common::machine();
    println!("== jfs replication benchmark (loopback)");
    println!(
        "machine:       nproc {nproc}, kernel {}, cpu {cpu}, memory {mem}",
        kernel.trim()
    );
    println!(
        "build:         {} profile, JFS_BENCH_SCALE={scale}; binaries built in {:.1} s (not in the total)",
        if cfg!(debug_assertions) {
            "debug (numbers are meaningless)"
        } else {
            "release"
        },
        secs(build_time)
    );
    println!("bench dir:     {}", dir.display());
    println!("fuse wake_here: {}", wake_here.describe());
    println!("load average:  {} at the start", loadavg());
    let rsync = rsync_version();
    match &rsync {
        Some(v) => println!("rsync:         {v}"),
        None => println!(
            "rsync:         not installed: the rsync rows are skipped (apt-get install rsync)"
        ),
    }
    println!();

    let pattern = Arc::new(pattern(PATTERN_BYTES));
    let steady_n = scaled(2_000);
    let burst_n = scaled(2_000);
    let catchup_n = scaled(20_000);
    let tree_n = scaled(100_000);
    let rate = 200.0;

    let vol = dir.join("vol");
    let mnt = dir.join("mnt");
    let rvol = dir.join("rvol");
    fs::create_dir(&mnt)?;
    run_ok(Command::new(&bins.master).arg("init").arg(&vol))?;
    let mut rows: Vec<Row> = Vec::new();

    // 1 and 2, with --sync interval:5, then with the default --sync fsync.
    let mut master = Master::start(&bins, &vol, &mnt, "interval:5", &dir)?;
    run_ok(
        Command::new(&bins.replica)
            .arg("init")
            .arg(&rvol)
            .arg("--master")
            .arg(master.addr.to_string())
            .arg("--secret-file")
            .arg(vol.join("secret")),
    )?;
    let mut replica = Replica::start(&bins, &rvol, None, &dir, "replica")?;
    replica.wait_for(master.head()?, Duration::from_secs(30))?;
    let env = LagEnv {
        mnt: mnt.clone(),
        rtree: rvol.join("tree"),
        wake: wake.clone(),
        pattern: pattern.clone(),
    };
    let mut lag_rows = Vec::new();
    for policy in ["interval:5", "fsync"] {
        if policy != master.policy {
            replica.stop()?;
            master.stop()?;
            master = Master::start(&bins, &vol, &mnt, policy, &dir)?;
            replica = Replica::start(&bins, &rvol, Some(master.addr.to_string()), &dir, "replica")?;
            replica.wait_for(master.head()?, Duration::from_secs(30))?;
        }
        let steady = env.run(
            &format!("steady-{}", policy.replace(':', "")),
            steady_n,
            Some(Duration::from_secs_f64(1.0 / rate)),
        )?;
        let burst = env.run(&format!("burst-{}", policy.replace(':', "")), burst_n, None)?;
        lag_rows.push((policy, steady, burst));
    }
    print_lag(&lag_rows, rate);

    // 3. Catch-up, through the counting proxy.
    let proxy = Proxy::start(master.addr)?;
    let before = replica.seq()?;
    replica.stop()?;
    let cdir = mnt.join("catchup");
    fs::create_dir(&cdir)?;
    let t = Instant::now();
    for i in 0..catchup_n {
        fs::write(cdir.join(format!("c{i:06}")), chunk(&pattern, FILE, i))?;
    }
    let wrote = t.elapsed();
    let mstat = master.status()?;
    let head = mstat["journal"]["head"]["seq"].as_u64().context("head")?;
    rustix::fs::sync();
    let wire0 = proxy.bytes();
    let t = Instant::now();
    replica = Replica::start(&bins, &rvol, Some(proxy.addr.to_string()), &dir, "replica")?;
    replica.wait_for(head, Duration::from_secs(600))?;
    let catchup = Transfer {
        records: head - before,
        elapsed: t.elapsed(),
        wire: proxy.bytes() - wire0,
    };
    ensure!(
        fs::read(
            rvol.join("tree/catchup")
                .join(format!("c{:06}", catchup_n - 1))
        )? == chunk(&pattern, FILE, catchup_n - 1),
        "the replica's last catch-up file differs from the master's"
    );
    // A new replica, from nothing.
    let rvol2 = dir.join("rvol-cold");
    let wire0 = proxy.bytes();
    run_ok(
        Command::new(&bins.replica)
            .arg("init")
            .arg(&rvol2)
            .arg("--master")
            .arg(proxy.addr.to_string())
            .arg("--secret-file")
            .arg(vol.join("secret")),
    )?;
    rustix::fs::sync();
    let t = Instant::now();
    let mut cold_replica = Replica::start(&bins, &rvol2, None, &dir, "replica-cold")?;
    cold_replica.wait_for(head, Duration::from_secs(600))?;
    let cold = Transfer {
        records: head,
        elapsed: t.elapsed(),
        wire: proxy.bytes() - wire0,
    };
    let cold_journal = status_of(&rvol2)?["journal"].clone();
    cold_replica.stop()?;
    drop(cold_replica);
    print_catchup(
        catchup_n,
        wrote,
        &mstat["journal"],
        &catchup,
        &cold,
        &cold_journal,
    );

    // 4. rsync loop vs jfs.
    let cmp = compare_rsync(
        &dir,
        &mnt,
        &rvol,
        &master,
        &replica,
        &proxy,
        &pattern,
        tree_n,
        rsync.is_some(),
    )?;
    print_rsync(&cmp);

    // 5. Reads on the replica's read-only mount, beside its plain tree.
    let data = pattern.repeat(((scaled(512) << 20) / PATTERN_BYTES).max(1));
    let big = data.len();
    fs::write(mnt.join("big"), &data)?;
    drop(data);
    let head = master.head()?;
    replica.wait_for(head, Duration::from_secs(600))?;
    replica.stop()?;
    let rmnt = dir.join("rmnt");
    fs::create_dir(&rmnt)?;
    replica = Replica::start_mounted(&bins, &rvol, Some(proxy.addr.to_string()), &rmnt, &dir)?;
    replica.wait_for(head, Duration::from_secs(60))?;
    let plain = rvol.join("tree/big");
    let through = rmnt.join("big");
    let cold_plain = read_all(&plain, true)?;
    let warm_plain = read_all(&plain, false)?;
    let cold_mount = read_all(&through, true)?;
    let warm_mount = read_all(&through, false)?;
    println!(
        "== Reads of a {} MiB file on the replica: its plain tree, and its read-only mount",
        big >> 20
    );
    println!("   (cold: after dropping the page cache; 1 MiB reads)");
    for (what, plain, mount) in [
        ("cold", cold_plain, cold_mount),
        ("warm", warm_plain, warm_mount),
    ] {
        println!(
            "   {what}: plain {:>8.0} MB/s   mount {:>8.0} MB/s   ratio {:.2}x",
            mb(big as u64) / secs(plain),
            mb(big as u64) / secs(mount),
            secs(mount) / secs(plain)
        );
        rows.push(Row {
            name: format!("read-only mount, {what} read of {} MiB", big >> 20),
            jfs: format!("{:.0} MB/s", mb(big as u64) / secs(mount)),
            baseline: format!(
                "plain tree {:.0} MB/s ({:.2}x)",
                mb(big as u64) / secs(plain),
                secs(mount) / secs(plain)
            ),
            aim: "-".into(),
        });
    }
    println!();

    // The summary table.
    for (policy, steady, burst) in &lag_rows {
        rows.push(Row::lag(
            format!("lag p99, {rate:.0} writes/s, --sync {policy}"),
            steady,
        ));
        rows.push(Row::lag(
            format!("lag p99, burst of {burst_n}, --sync {policy}"),
            burst,
        ));
    }
    rows.push(Row {
        name: format!("catch-up after {} records offline", catchup.records),
        jfs: format!(
            "{:.0} rec/s, {:.1} MB/s",
            catchup.records as f64 / secs(catchup.elapsed),
            mb(catchup.wire) / secs(catchup.elapsed)
        ),
        baseline: cmp.rsync_initial.map_or("-".into(), |(d, files, bytes)| {
            format!(
                "rsync copy {:.0} files/s, {:.1} MB/s",
                files as f64 / secs(d),
                mb(bytes) / secs(d)
            )
        }),
        aim: "-".into(),
    });
    rows.push(Row {
        name: format!("cold replica, {} records", cold.records),
        jfs: format!(
            "{:.0} rec/s, {:.1} MB/s",
            cold.records as f64 / secs(cold.elapsed),
            mb(cold.wire) / secs(cold.elapsed)
        ),
        baseline: "(same rsync copy)".into(),
        aim: "-".into(),
    });
    if let Some(r) = &cmp.rsync_whole {
        let ratio = secs(r.elapsed) / secs(cmp.jfs.elapsed);
        rows.push(Row {
            name: format!("{CHANGED_FILES} changed files of {tree_n}: time"),
            jfs: format!("{:.3} s", secs(cmp.jfs.elapsed)),
            baseline: format!("rsync {:.3} s ({:.1}x jfs)", secs(r.elapsed), ratio),
            aim: format!(
                ">= {AIM_RSYNC_RATIO:.0}x: {}",
                if ratio >= AIM_RSYNC_RATIO {
                    "met"
                } else {
                    "MISSED"
                }
            ),
        });
        // rsync starts once the change is complete on the source; so does
        // this count: from the last change's return to the replica at head.
        let after = cmp.jfs.elapsed.saturating_sub(cmp.jfs_changes);
        let ratio = secs(r.elapsed) / secs(after).max(1e-6);
        rows.push(Row {
            name: "  counted from the end of the change".into(),
            jfs: format!("{:.4} s", secs(after)),
            baseline: format!("rsync {:.3} s ({:.0}x jfs)", secs(r.elapsed), ratio),
            aim: format!(
                ">= {AIM_RSYNC_RATIO:.0}x: {}",
                if ratio >= AIM_RSYNC_RATIO {
                    "met"
                } else {
                    "MISSED"
                }
            ),
        });
        let changed = (CHANGED_FILES.min(tree_n) * CHANGE_BYTES) as u64;
        rows.push(Row {
            name: "  bytes on the wire / bytes changed".into(),
            jfs: format!("{:.2}x", cmp.jfs.wire as f64 / changed as f64),
            baseline: format!(
                "rsync {:.1}x (delta {:.1}x)",
                r.bytes as f64 / changed as f64,
                cmp.rsync_delta
                    .as_ref()
                    .map_or(f64::NAN, |d| d.bytes as f64 / changed as f64)
            ),
            aim: "close to 1x".into(),
        });
    }
    print_table(&rows);

    drop(replica);
    drop(master);
    drop(proxy);
    println!();
    println!(
        "total bench time {:.1} s (JFS_BENCH_SCALE={scale}); load average at the end {}",
        secs(started.elapsed()),
        loadavg()
    );
    println!("(cleaning up {} now)", dir.display());
    Ok(())
}

// ---------------------------------------------------------------- the processes

struct Bins {
    master: PathBuf,
    replica: PathBuf,
}

fn build_binaries() -> Result<Bins> {
    let [master, replica] = common::build_binaries(["jfs-master", "jfs-replica"])?;
    Ok(Bins { master, replica })
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Status through the volume's admin socket (what `status --json` prints).
fn status_of(vol: &Path) -> Result<Value> {
    libjfs::admin::request(vol, &Request::Status)
        .map_err(|e| anyhow!("status of {}: {e}", vol.display()))
}

/// Sends SIGTERM and waits up to `grace`, then kills.
fn terminate(child: &mut Child, grace: Duration) -> Result<std::process::ExitStatus> {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Ok(child.wait()?);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `jfs-master mount VOL MNT --listen 127.0.0.1:0 --sync POLICY`.
struct Master {
    child: Option<Child>,
    vol: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    policy: String,
}

impl Master {
    fn start(bins: &Bins, vol: &Path, mnt: &Path, policy: &str, dir: &Path) -> Result<Master> {
        let log = dir.join(format!("master-{}.log", policy.replace(':', "")));
        let out = File::create(&log)?;
        let child = Command::new(&bins.master)
            .arg("mount")
            .arg(vol)
            .arg(mnt)
            .args(["--listen", "127.0.0.1:0", "--sync", policy])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start jfs-master mount")?;
        let mut m = Master {
            child: Some(child),
            vol: vol.to_owned(),
            mnt: mnt.to_owned(),
            log: log.clone(),
            addr: "127.0.0.1:0".parse().expect("an address"),
            policy: policy.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let addr = text
                .lines()
                .find_map(|l| l.split("serving replicas on ").nth(1))
                .map(|a| a.trim().parse::<SocketAddr>());
            if let (Some(a), true) = (addr, is_mounted(mnt)) {
                m.addr = a.context("parse the listening address")?;
                return Ok(m);
            }
            if let Some(s) = m.child.as_mut().expect("running").try_wait()? {
                m.child = None;
                bail!("jfs-master exited with {s} before serving:\n{text}");
            }
            ensure!(
                Instant::now() < deadline,
                "jfs-master did not mount and listen within 20 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn status(&self) -> Result<Value> {
        status_of(&self.vol)
    }

    fn head(&self) -> Result<u64> {
        self.status()?["journal"]["head"]["seq"]
            .as_u64()
            .context("no journal.head.seq in the master's status")
    }

    /// SIGTERM: unmounts, syncs and seals the journal.
    fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let s = terminate(&mut c, Duration::from_secs(30))?;
            ensure!(
                s.success(),
                "jfs-master exited with {s}:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // Only when still running: after `stop`, the mount point may hold a
        // new master's mount.
        if let Some(mut c) = self.child.take() {
            let _ = terminate(&mut c, Duration::from_secs(10));
            if is_mounted(&self.mnt) {
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&self.mnt)
                    .status();
            }
        }
    }
}

/// `jfs-replica follow RVOL [--master ADDR]`.
struct Replica {
    child: Option<Child>,
    vol: PathBuf,
    log: PathBuf,
}

impl Replica {
    fn start(
        bins: &Bins,
        vol: &Path,
        master: Option<String>,
        dir: &Path,
        name: &str,
    ) -> Result<Replica> {
        Replica::spawn(bins, vol, master, None, dir, name)
    }

    /// Follows with the tree served read-only at `mnt`.
    fn start_mounted(
        bins: &Bins,
        vol: &Path,
        master: Option<String>,
        mnt: &Path,
        dir: &Path,
    ) -> Result<Replica> {
        Replica::spawn(bins, vol, master, Some(mnt), dir, "replica-mounted")
    }

    fn spawn(
        bins: &Bins,
        vol: &Path,
        master: Option<String>,
        mnt: Option<&Path>,
        dir: &Path,
        name: &str,
    ) -> Result<Replica> {
        let log = dir.join(format!("{name}.log"));
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(&bins.replica);
        cmd.arg("follow").arg(vol);
        if let Some(m) = master {
            cmd.arg("--master").arg(m);
        }
        if let Some(m) = mnt {
            cmd.arg("--mount").arg(m);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start jfs-replica follow")?;
        let replica = Replica {
            child: Some(child),
            vol: vol.to_owned(),
            log,
        };
        if let Some(m) = mnt {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !is_mounted(m) {
                ensure!(
                    Instant::now() < deadline,
                    "the replica did not mount {}",
                    m.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(replica)
    }

    fn seq(&self) -> Result<u64> {
        status_of(&self.vol)?["position"]["seq"]
            .as_u64()
            .context("no position.seq in the replica's status")
    }

    /// Polls the admin socket until the replica's tree is at `seq` or beyond.
    fn wait_for(&mut self, seq: u64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(s) = status_of(&self.vol) {
                if s["position"]["seq"].as_u64().is_some_and(|p| p >= seq) {
                    return Ok(());
                }
                ensure!(
                    s["replication"]["state"] != "broken",
                    "the replica broke: {}",
                    s["replication"]["reason"]
                );
            }
            if let Some(s) = self.child.as_mut().expect("running").try_wait()? {
                self.child = None;
                bail!(
                    "jfs-replica exited with {s}:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "the replica did not reach {seq} within {limit:?}:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let s = terminate(&mut c, Duration::from_secs(30))?;
            ensure!(
                s.success(),
                "jfs-replica exited with {s}:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = terminate(&mut c, Duration::from_secs(10));
        }
    }
}

/// A TCP proxy on 127.0.0.1 that counts the bytes it forwards both ways.
struct Proxy {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (bytes, stop) = (bytes.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(down) = conn else { continue };
                    let Ok(up) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    for (from, to) in [
                        (down.try_clone(), up.try_clone()),
                        (up.try_clone(), down.try_clone()),
                    ] {
                        if let (Ok(from), Ok(to)) = (from, to) {
                            let bytes = bytes.clone();
                            std::thread::spawn(move || pump(from, to, &bytes));
                        }
                    }
                }
            })
        };
        Ok(Proxy {
            addr,
            bytes,
            stop,
            accept: Some(accept),
        })
    }

    /// Bytes forwarded so far, both ways.
    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, bytes: &AtomicU64) {
    let mut buf = vec![0u8; 256 * KIB];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The scratch directory: unmounts what is left under it and removes it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let canon = self.0.canonicalize().unwrap_or_else(|_| self.0.clone());
        for mp in mounts() {
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

fn mounts() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(unescape_mount))
        .collect()
}

fn is_mounted(path: &Path) -> bool {
    let want = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts().contains(&want)
}

// ---------------------------------------------------------------- lag

struct LagEnv {
    mnt: PathBuf,
    /// The replica's tree.
    rtree: PathBuf,
    /// A directory the watcher also watches, to be woken when it must give up.
    wake: PathBuf,
    pattern: Arc<Vec<u8>>,
}

/// The content of lag file `i`: its name and number, then pattern bytes.
fn lag_content(pattern: &[u8], tag: &str, i: usize) -> Vec<u8> {
    let mut v = format!("{tag} {i:08}\n").into_bytes();
    v.extend_from_slice(&chunk(pattern, FILE, i)[v.len()..]);
    v
}

fn lag_name(i: usize) -> String {
    format!("f{i:06}")
}

struct Lag {
    n: usize,
    /// Per write, visible on the replica minus returned on the master, in
    /// seconds (negative when the replica had it before close returned).
    lags: Vec<f64>,
    /// Per write, how long the write+close took on the master.
    write_times: Vec<f64>,
    /// Per write, when it returned, in seconds from the first write's start.
    at: Vec<f64>,
    /// From the first write's start to the last write's return.
    writing: Duration,
    /// From the first write's start to the last write visible on the replica.
    until_last: Duration,
}

impl LagEnv {
    /// Writes `n` files into a new directory `tag` on the master, one every
    /// `period` (or back to back), and times when each shows on the replica.
    fn run(&self, tag: &str, n: usize, period: Option<Duration>) -> Result<Lag> {
        let mdir = self.mnt.join(tag);
        let rdir = self.rtree.join(tag);
        fs::create_dir(&mdir)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !rdir.is_dir() {
            ensure!(
                Instant::now() < deadline,
                "{} did not appear on the replica",
                rdir.display()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Start with nothing dirty on the disk (untimed), as every case does.
        rustix::fs::sync();
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (rdir, wake, pattern, tag) = (
                rdir.clone(),
                self.wake.clone(),
                self.pattern.clone(),
                tag.to_owned(),
            );
            let (stop, ready) = (stop.clone(), ready.clone());
            std::thread::spawn(move || watch(&rdir, &wake, &tag, n, &pattern, &stop, &ready))
        };
        while !ready.load(Ordering::SeqCst) && !watcher.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let contents: Vec<Vec<u8>> = (0..n).map(|i| lag_content(&self.pattern, tag, i)).collect();
        let mut starts = Vec::with_capacity(n);
        let mut returns = Vec::with_capacity(n);
        let t0 = Instant::now();
        for (i, c) in contents.iter().enumerate() {
            if let Some(p) = period {
                let at = t0 + p * i as u32;
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
            }
            let s = Instant::now();
            fs::write(mdir.join(lag_name(i)), c)?;
            starts.push(s);
            returns.push(Instant::now());
        }
        let writing = returns[n - 1] - t0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !watcher.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !watcher.is_finished() {
            stop.store(true, Ordering::SeqCst);
            fs::write(self.wake.join("wake"), b"wake")?;
        }
        let seen = watcher
            .join()
            .map_err(|_| anyhow!("the watcher panicked"))??;
        ensure!(
            seen.len() == n,
            "{tag}: only {} of {n} writes showed on the replica within 60 s",
            seen.len()
        );
        let lags = seen
            .iter()
            .zip(&returns)
            .map(|(v, r)| {
                if v >= r {
                    secs(*v - *r)
                } else {
                    -secs(*r - *v)
                }
            })
            .collect();
        let write_times = starts
            .iter()
            .zip(&returns)
            .map(|(s, r)| secs(*r - *s))
            .collect();
        Ok(Lag {
            n,
            lags,
            write_times,
            at: returns.iter().map(|r| secs(*r - t0)).collect(),
            writing,
            until_last: seen[n - 1] - t0,
        })
    }
}

/// Watches `dir` (the replica's) until files 0..n hold their whole content,
/// in order; returns when each was first seen so. inotify wakes it on any
/// change in `dir` or `wake`; it never spins.
fn watch(
    dir: &Path,
    wake: &Path,
    tag: &str,
    n: usize,
    pattern: &[u8],
    stop: &AtomicBool,
    ready: &AtomicBool,
) -> Result<Vec<Instant>> {
    use rustix::fs::inotify;
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
    let flags = inotify::WatchFlags::CREATE
        | inotify::WatchFlags::MODIFY
        | inotify::WatchFlags::CLOSE_WRITE
        | inotify::WatchFlags::MOVED_TO;
    inotify::add_watch(&fd, dir, flags)?;
    inotify::add_watch(&fd, wake, flags)?;
    ready.store(true, Ordering::SeqCst);
    let mut seen = Vec::with_capacity(n);
    let mut want = lag_content(pattern, tag, 0);
    let mut buf = vec![0u8; 64 * KIB];
    let mut got = Vec::with_capacity(FILE + 1);
    while seen.len() < n {
        let i = seen.len();
        got.clear();
        let whole = File::open(dir.join(lag_name(i)))
            .and_then(|mut f| f.read_to_end(&mut got))
            .is_ok_and(|_| got == want);
        if whole {
            seen.push(Instant::now());
            if i + 1 < n {
                want = lag_content(pattern, tag, i + 1);
            }
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        rustix::io::read(&fd, &mut buf[..])?;
    }
    Ok(seen)
}

/// Runs of consecutive writes more than 10 ms late: when each began (s from
/// the start), how many writes, the worst lag; at most eight.
fn episodes(l: &Lag) -> String {
    let mut out: Vec<(f64, usize, f64)> = Vec::new();
    let mut prev_late = false;
    for (lag, at) in l.lags.iter().zip(&l.at) {
        let late = *lag > 0.010;
        if late {
            match out.last_mut() {
                Some(e) if prev_late => {
                    e.1 += 1;
                    e.2 = e.2.max(*lag);
                }
                _ => out.push((*at, 1, *lag)),
            }
        }
        prev_late = late;
    }
    if out.is_empty() {
        return "none".into();
    }
    let n = out.len();
    let mut s: Vec<String> = out
        .iter()
        .take(8)
        .map(|(at, k, max)| format!("t={at:.2}s x{k} max {:.0}ms", ms(*max)))
        .collect();
    if n > 8 {
        s.push(format!("... {} more", n - 8));
    }
    s.join(", ")
}

/// The value at fraction `p` of sorted `v`.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn ms(s: f64) -> f64 {
    s * 1e3
}

fn print_lag(rows: &[(&str, Lag, Lag)], rate: f64) {
    println!("== Lag: from the return of write+close of a 4 KiB file on the master to its whole content in the");
    println!("   replica's RVOL/tree (seen by an inotify-woken reader). \"write\" is write+close on the master's");
    println!("   mount. Replica connected to the master directly. Times in ms.");
    println!(
        "   {:<34} {:>6} {:>8} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>12}",
        "case",
        "writes",
        "lag p50",
        "lag p99",
        "lag max",
        ">10ms",
        "neg",
        "write p50",
        "write p99",
        "last seen s"
    );
    for (policy, steady, burst) in rows {
        for (name, l) in [
            (format!("steady {rate:.0}/s, --sync {policy}"), steady),
            (format!("burst, --sync {policy}"), burst),
        ] {
            let neg = l.lags.iter().filter(|x| **x < 0.0).count();
            let over = l.lags.iter().filter(|x| **x > 0.010).count();
            println!(
                "   {:<34} {:>6} {:>8.3} {:>8.3} {:>8.3} {:>6} {:>6} {:>9.3} {:>9.3} {:>12.3}",
                name,
                l.n,
                ms(pct(&l.lags, 0.5)),
                ms(pct(&l.lags, 0.99)),
                ms(pct(&l.lags, 1.0)),
                over,
                neg,
                ms(pct(&l.write_times, 0.5)),
                ms(pct(&l.write_times, 0.99)),
                secs(l.until_last),
            );
        }
        println!(
            "   {:<34} steady: writes over 10 ms late, in runs: {}",
            "",
            episodes(steady)
        );
        println!(
            "   {:<34} burst: {:.0} writes/s; last visible {:.1} ms after the last write returned",
            "",
            burst.n as f64 / secs(burst.writing),
            ms(secs(burst.until_last) - secs(burst.writing))
        );
    }
    println!("   (\"neg\": writes the replica showed before write+close returned on the master; \"last seen s\":");
    println!("   from the first write to the last one visible on the replica)");
    println!();
}

// ---------------------------------------------------------------- catch-up

struct Transfer {
    records: u64,
    elapsed: Duration,
    /// Bytes through the proxy, both ways.
    wire: u64,
}

fn print_catchup(
    files: usize,
    wrote: Duration,
    journal: &Value,
    catchup: &Transfer,
    cold: &Transfer,
    cold_journal: &Value,
) {
    println!("== Catch-up through the counting proxy; time from starting `jfs-replica follow` (process start");
    println!(
        "   included) to its position at the master's head, polled every 2 ms on the admin socket"
    );
    println!(
        "   {files} files of 4 KiB written on the master while the replica was stopped, in {:.2} s",
        secs(wrote)
    );
    println!(
        "   master journal then: {} records, {} segments ({} sealed), {:.1} MB",
        journal["records"],
        journal["segments"],
        journal["sealed_segments"],
        mb(journal["bytes"].as_u64().unwrap_or(0))
    );
    println!(
        "   {:<40} {:>8} {:>8} {:>10} {:>9} {:>8}",
        "case", "records", "s", "records/s", "wire MB", "MB/s"
    );
    for (name, t) in [
        ("restarted replica, behind", catchup),
        ("new replica, from nothing", cold),
    ] {
        println!(
            "   {:<40} {:>8} {:>8.3} {:>10.0} {:>9.1} {:>8.1}",
            name,
            t.records,
            secs(t.elapsed),
            t.records as f64 / secs(t.elapsed),
            mb(t.wire),
            mb(t.wire) / secs(t.elapsed)
        );
    }
    println!(
        "   the new replica's journal: {} segments ({} sealed, received as files), {:.1} MB",
        cold_journal["segments"],
        cold_journal["sealed_segments"],
        mb(cold_journal["bytes"].as_u64().unwrap_or(0))
    );
    println!();
}

// ---------------------------------------------------------------- rsync

struct Rsync {
    elapsed: Duration,
    /// Total bytes sent + received, as rsync --stats reports them.
    bytes: u64,
    /// What --stats says, the lines that matter.
    stats: String,
}

struct Compare {
    files: usize,
    changed: usize,
    /// Creating the tree on the master, and the replica having it all.
    jfs_create: Duration,
    jfs_initial: Transfer,
    /// rsync's first copy of the plain tree: time, files, bytes of files.
    rsync_initial: Option<(Duration, usize, u64)>,
    /// The changes on the master, and the replica having them.
    jfs_changes: Duration,
    jfs: Transfer,
    rsync_whole: Option<Rsync>,
    rsync_delta: Option<Rsync>,
    rsync_noop: Option<Rsync>,
}

fn tree_path(i: usize) -> String {
    format!("d{:03}/f{i:06}", i / 1000)
}

fn change_content(pattern: &[u8], i: usize) -> Vec<u8> {
    let mut v = format!("changed {i:06}\n").into_bytes();
    v.extend_from_slice(&chunk(pattern, CHANGE_BYTES, 7919 + i)[v.len()..]);
    v
}

#[allow(clippy::too_many_arguments)]
fn compare_rsync(
    dir: &Path,
    mnt: &Path,
    rvol: &Path,
    master: &Master,
    replica: &Replica,
    proxy: &Proxy,
    pattern: &[u8],
    files: usize,
    have_rsync: bool,
) -> Result<Compare> {
    let make = |root: &Path| -> Result<()> {
        for i in 0..files {
            let p = root.join(tree_path(i));
            if i % 1000 == 0 {
                fs::create_dir_all(p.parent().expect("has a parent"))?;
            }
            fs::write(&p, chunk(pattern, FILE, 3 * i + 1))?;
        }
        Ok(())
    };
    let changed_idx: Vec<usize> = {
        let k = CHANGED_FILES.min(files);
        (0..k).map(|j| j * files / k).collect()
    };
    let change = |root: &Path| -> Result<()> {
        for &i in &changed_idx {
            let f = OpenOptions::new()
                .write(true)
                .open(root.join(tree_path(i)))?;
            f.write_all_at(&change_content(pattern, i), CHANGE_OFFSET)?;
        }
        Ok(())
    };

    // The tree on the master; the replica follows through the proxy.
    let mtree = mnt.join("tree");
    fs::create_dir(&mtree)?;
    let seq0 = replica.seq()?;
    let wire0 = proxy.bytes();
    let t = Instant::now();
    make(&mtree)?;
    let jfs_create = t.elapsed();
    let head = master.head()?;
    let wait = |seq: u64| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(900);
        while replica.seq()? < seq {
            ensure!(Instant::now() < deadline, "the replica did not reach {seq}");
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    };
    wait(head)?;
    let jfs_initial = Transfer {
        records: head - seq0,
        elapsed: t.elapsed(),
        wire: proxy.bytes() - wire0,
    };

    // The same tree in a plain directory, and rsync's copies of it.
    let src = dir.join("plain-src");
    let dst = dir.join("plain-dst");
    let dst2 = dir.join("plain-dst-delta");
    make(&src)?;
    let mut rsync_initial = None;
    if have_rsync {
        let r = rsync(&src, &dst, &[])?;
        rsync_initial = Some((r.elapsed, files, (files * FILE) as u64));
        rsync(&src, &dst2, &[])?;
    }

    // The change, on the master, after writing back everything dirty (untimed).
    rustix::fs::sync();
    let seq0 = replica.seq()?;
    let wire0 = proxy.bytes();
    let t = Instant::now();
    change(&mtree)?;
    let jfs_changes = t.elapsed();
    let head = master.head()?;
    wait(head)?;
    let jfs = Transfer {
        records: head - seq0,
        elapsed: t.elapsed(),
        wire: proxy.bytes() - wire0,
    };
    for &i in &changed_idx {
        let want = fs::read(mtree.join(tree_path(i)))?;
        ensure!(
            fs::read(rvol.join("tree/tree").join(tree_path(i)))? == want,
            "changed file {i} differs on the replica"
        );
    }

    // The change, in the plain tree, and rsync.
    change(&src)?;
    rustix::fs::sync();
    let (mut rsync_whole, mut rsync_delta, mut rsync_noop) = (None, None, None);
    if have_rsync {
        rsync_whole = Some(rsync(&src, &dst, &[])?);
        rsync_delta = Some(rsync(&src, &dst2, &["--no-whole-file"])?);
        rsync_noop = Some(rsync(&src, &dst, &[])?);
        let i = changed_idx[changed_idx.len() / 2];
        ensure!(
            fs::read(dst.join(tree_path(i)))? == fs::read(src.join(tree_path(i)))?
                && fs::read(dst2.join(tree_path(i)))? == fs::read(src.join(tree_path(i)))?,
            "rsync did not carry the change of file {i}"
        );
    }
    Ok(Compare {
        files,
        changed: changed_idx.len(),
        jfs_create,
        jfs_initial,
        rsync_initial,
        jfs_changes,
        jfs,
        rsync_whole,
        rsync_delta,
        rsync_noop,
    })
}

fn rsync_version() -> Option<String> {
    let out = Command::new("rsync").arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("rsync")
            .trim()
            .to_owned()
    })
}

/// `rsync -a --delete --stats EXTRA SRC/ DST/`, timed.
fn rsync(src: &Path, dst: &Path, extra: &[&str]) -> Result<Rsync> {
    let mut s = src.as_os_str().to_owned();
    s.push("/");
    let mut d = dst.as_os_str().to_owned();
    d.push("/");
    let t = Instant::now();
    let out = run_ok(
        Command::new("rsync")
            .args(["-a", "--delete", "--stats"])
            .args(extra)
            .arg(&s)
            .arg(&d),
    )?;
    let elapsed = t.elapsed();
    let field = |key: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .map(|v| v.replace(',', ""))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let bytes = field("Total bytes sent:") + field("Total bytes received:");
    let stats = out
        .lines()
        .filter(|l| {
            [
                "Number of regular files transferred",
                "Literal data",
                "Matched data",
                "File list size",
                "Total bytes",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Rsync {
        elapsed,
        bytes,
        stats,
    })
}

fn print_rsync(c: &Compare) {
    let changed = (c.changed * CHANGE_BYTES) as u64;
    println!(
        "== The rsync loop vs jfs: a tree of {} files of 4 KiB in {} directories; {} files changed by",
        c.files,
        c.files.div_ceil(1000),
        c.changed
    );
    println!(
        "   overwriting {} bytes at offset {} of each ({:.1} KB changed in all). rsync runs on plain",
        CHANGE_BYTES,
        CHANGE_OFFSET,
        changed as f64 / 1e3
    );
    println!("   directories on the same disk with a warm page cache; jfs bytes are counted by the proxy");
    println!("   between replica and master, both ways (heartbeats and acks included). sync(2) before each");
    println!("   timed step, untimed.");
    println!(
        "   initial tree: jfs {:.2} s to write it through the master's mount, {:.2} s until the replica had",
        secs(c.jfs_create),
        secs(c.jfs_initial.elapsed)
    );
    println!(
        "   all {} records ({:.1} MB on the wire)",
        c.jfs_initial.records,
        mb(c.jfs_initial.wire)
    );
    if let Some((d, _, _)) = c.rsync_initial {
        println!("   rsync's first copy of the plain tree: {:.2} s", secs(d));
    }
    println!(
        "   {:<44} {:>9} {:>12} {:>12}",
        "the change", "s", "wire bytes", "x changed"
    );
    println!(
        "   {:<44} {:>9.4} {:>12} {:>12.2}",
        format!("jfs: change + replica at head ({} records)", c.jfs.records),
        secs(c.jfs.elapsed),
        c.jfs.wire,
        c.jfs.wire as f64 / changed as f64
    );
    println!(
        "   {:<44} {:>9.4}",
        "  of which the changes on the master's mount",
        secs(c.jfs_changes)
    );
    for (name, r) in [
        ("rsync -a --delete (local: whole files)", &c.rsync_whole),
        ("rsync -a --delete --no-whole-file", &c.rsync_delta),
        ("rsync -a --delete, nothing to do", &c.rsync_noop),
    ] {
        match r {
            Some(r) => {
                println!(
                    "   {:<44} {:>9.4} {:>12} {:>12.2}   ({:.1}x jfs time)",
                    name,
                    secs(r.elapsed),
                    r.bytes,
                    r.bytes as f64 / changed as f64,
                    secs(r.elapsed) / secs(c.jfs.elapsed)
                );
                println!("      {}", r.stats);
            }
            None => println!("   {name:<44} skipped: rsync is not installed"),
        }
    }
    println!();
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
    let off = (i * size) % (pattern.len() - size);
    &pattern[off..off + size]
}

// ---------------------------------------------------------------- the table

struct Row {
    name: String,
    jfs: String,
    baseline: String,
    aim: String,
}

impl Row {
    fn lag(name: String, l: &Lag) -> Row {
        let p99 = ms(pct(&l.lags, 0.99));
        Row {
            name,
            jfs: format!("{p99:.3} ms (p50 {:.3})", ms(pct(&l.lags, 0.5))),
            baseline: format!("write+close p99 {:.3} ms", ms(pct(&l.write_times, 0.99))),
            aim: format!(
                "< {AIM_LAG_P99_MS:.0} ms: {}",
                if p99 < AIM_LAG_P99_MS {
                    "met"
                } else {
                    "MISSED"
                }
            ),
        }
    }
}

fn print_table(rows: &[Row]) {
    let (nproc, kernel, cpu, _) = common::machine();
    println!(
        "== Summary (nproc {nproc}, kernel {}, {cpu}; loopback)",
        kernel.trim()
    );
    println!(
        "   {:<44} | {:<28} | {:<36} | aim",
        "figure", "jfs", "beside"
    );
    for r in rows {
        println!(
            "   {:<44} | {:<28} | {:<36} | {}",
            r.name, r.jfs, r.baseline, r.aim
        );
    }
}

/// Reads a whole file in 1 MiB reads; `cold` drops the page cache first.
fn read_all(path: &Path, cold: bool) -> Result<Duration> {
    use std::io::Read;
    if cold {
        rustix::fs::sync();
        fs::write("/proc/sys/vm/drop_caches", "3").context("drop the page cache (needs root)")?;
    }
    let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    while f.read(&mut buf)? > 0 {}
    Ok(t.elapsed())
}
