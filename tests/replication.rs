//! Replication end to end: real `jfs-master` and `jfs-replica` processes,
//! real FUSE mounts, real TCP on loopback, and a proxy in between that cuts,
//! stalls and damages the stream. Every replica must end with the master's
//! journal and tree, or refuse to go on, with its tree left as it was.

mod common;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/proxy.rs"]
mod proxy;

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::tmpfs::Tmpfs;
use common::{assert_same_tree, is_mounted, ok, real_sources, run};
use libjfs::compare::{compare_trees, CompareOptions};
use proc::Proc;
use proxy::Proxy;
use serde_json::Value;

/// How long a replica may take to catch up after the writes stop.
const CONVERGE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Processes

/// `jfs-master mount VOL MNT --listen 127.0.0.1:0`, mounted and serving.
struct Master {
    p: Proc,
    mnt: PathBuf,
    addr: SocketAddr,
}

impl Master {
    fn start(vol: &Path, mnt: &Path, extra: &[&str]) -> Master {
        let mut args: Vec<&dyn AsRef<OsStr>> =
            vec![&"mount", &vol, &mnt, &"--listen", &"127.0.0.1:0"];
        for e in extra {
            args.push(e);
        }
        let mut p = Proc::spawn("jfs-master", &args, Some(mnt));
        let addr = p
            .wait_for("jfs-master: serving replicas on ", Duration::from_secs(30))
            .parse()
            .expect("the master prints its address");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(mnt) {
            assert!(Instant::now() < deadline, "the master did not mount");
            thread::sleep(Duration::from_millis(20));
        }
        Master {
            p,
            mnt: mnt.to_owned(),
            addr,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Unmounts as an admin would and expects a clean exit; returns stderr.
    fn unmount(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("busy") && Instant::now() < deadline,
                "fusermount3 -u {}: {err}",
                self.mnt.display()
            );
            thread::sleep(Duration::from_millis(50));
        }
        let st = self.p.wait_exit(Duration::from_secs(60));
        let err = self.p.stderr();
        assert!(st.success(), "jfs-master exited with {st}:\n{err}");
        err
    }
}

/// `jfs-replica follow RVOL [--mount MNT] [extra...]`, once it follows.
fn follow(rvol: &Path, mnt: Option<&Path>, extra: &[&str]) -> Proc {
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"follow", &rvol];
    if let Some(m) = &mnt {
        args.push(&"--mount");
        args.push(m);
    }
    for e in extra {
        args.push(e);
    }
    let mut p = Proc::spawn("jfs-replica", &args, mnt);
    p.wait_for("jfs-replica: following", Duration::from_secs(30));
    if let Some(m) = mnt {
        assert!(
            is_mounted(m),
            "follow --mount did not mount {}",
            m.display()
        );
    }
    p
}

fn init_replica(rvol: &Path, master: &str, master_vol: &Path) {
    ok(
        "jfs-replica",
        &[
            &"init",
            &rvol,
            &"--master",
            &master,
            &"--secret-file",
            &master_vol.join("secret"),
        ],
    );
}

// ---------------------------------------------------------------------------
// Status and comparisons

/// `jfs-replica status RVOL --json [extra]`: exit code and the JSON.
fn replica_status(rvol: &Path, extra: &[&str]) -> (i32, Value) {
    status("jfs-replica", rvol, extra)
}

/// `jfs-master status VOL --json [extra]`: exit code and the JSON.
fn master_status(vol: &Path, extra: &[&str]) -> (i32, Value) {
    status("jfs-master", vol, extra)
}

fn status(bin: &str, vol: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"status", &vol, &"--json"];
    for e in extra {
        args.push(e);
    }
    let out = run(bin, &args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{bin} status {}: {e}: {}{}",
            vol.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// The master's journal head as status shows it: (seq, chain).
fn master_head(vol: &Path) -> (u64, String) {
    let (_, s) = master_status(vol, &[]);
    pos(&s["journal"]["head"])
}

fn pos(v: &Value) -> (u64, String) {
    (
        v["seq"].as_u64().unwrap_or(0),
        v["chain"].as_str().unwrap_or("").to_owned(),
    )
}

/// Polls until every replica's tree is at the master's head; returns it.
fn wait_converged(master_vol: &Path, replicas: &[&Path], timeout: Duration) -> (u64, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let head = master_head(master_vol);
        let statuses: Vec<Value> = replicas.iter().map(|r| replica_status(r, &[]).1).collect();
        if statuses.iter().all(|s| pos(&s["position"]) == head) {
            return head;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not reach the master's head {head:?} within {timeout:?}:\n{}",
            statuses
                .iter()
                .map(|s| format!("{} {}", s["position"], s["replication"]))
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Polls until the replica's state is `state`; returns the status.
fn wait_state(rvol: &Path, state: &str, timeout: Duration) -> (i32, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, s) = replica_status(rvol, &[]);
        if s["replication"]["state"] == state {
            return (code, s);
        }
        assert!(
            Instant::now() < deadline,
            "{} is not {state} after {timeout:?}: {s}",
            rvol.display()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The journals hold the same records: `jfs-master log --json` of both.
fn assert_same_journal(master_vol: &Path, rvol: &Path) {
    let a = ok("jfs-master", &[&"log", &master_vol, &"--json"]);
    let b = ok("jfs-master", &[&"log", &rvol, &"--json"]);
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    if let Some(i) = (0..la.len().min(lb.len())).find(|&i| la[i] != lb[i]) {
        panic!(
            "journals differ at line {}:\nmaster:  {}\nreplica: {}",
            i + 1,
            la[i],
            lb[i]
        );
    }
    assert_eq!(
        la.len(),
        lb.len(),
        "the master's journal has {} records, the replica's {}",
        la.len(),
        lb.len()
    );
}

/// Copies a tree aside with cp -a (to check later that it did not change).
fn copy_aside(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// `n` files of `size` pseudo-random (incompressible) bytes in `dir`.
fn write_files(dir: &Path, prefix: &str, n: usize, size: usize, seed: u64) {
    let mut x = seed | 1;
    for i in 0..n {
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.truncate(size);
        fs::write(dir.join(format!("{prefix}{i}")), &data).unwrap();
    }
}

/// A fresh master volume and an empty mount point in `dir`.
fn master_volume(dir: &Path) -> (PathBuf, PathBuf) {
    let vol = dir.join("master");
    let mnt = dir.join("master-mnt");
    ok("jfs-master", &[&"init", &vol]);
    fs::create_dir(&mnt).unwrap();
    (vol, mnt)
}

/// A mounted master volume holding the file `a`, and a replica of it made
/// with `init` (not following yet), in `dir`.
fn master_and_replica(dir: &Path) -> (PathBuf, PathBuf, Master, PathBuf) {
    let (vol, mnt) = master_volume(dir);
    let master = Master::start(&vol, &mnt, &[]);
    fs::write(mnt.join("a"), b"a").unwrap();
    let rvol = dir.join("replica");
    init_replica(&rvol, &master.addr(), &vol);
    (vol, mnt, master, rvol)
}

fn erofs<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) {
    match r {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) => {}
        other => panic!("{what}: expected EROFS, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn a_real_workload_reaches_a_replica_and_a_replica_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let master = Master::start(&vol, &mnt, &["--sync", "interval:50"]);
    let (ra, rb) = (dir.path().join("a"), dir.path().join("b"));
    let (ma, mb) = (dir.path().join("a-mnt"), dir.path().join("b-mnt"));
    fs::create_dir(&ma).unwrap();
    fs::create_dir(&mb).unwrap();

    init_replica(&ra, &master.addr(), &vol);
    let mut a = follow(&ra, Some(&ma), &["--listen", "127.0.0.1:0"]);
    let a_addr = a.wait_for("jfs-replica: serving replicas on ", Duration::from_secs(5));
    init_replica(&rb, &a_addr, &vol);
    let b = follow(&rb, Some(&mb), &[]);

    // A real source tree, copied while both replicas follow.
    let t = Instant::now();
    let sources = real_sources(2500);
    fs::create_dir(mnt.join("src")).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .args(&sources)
        .arg(mnt.join("src"))
        .status()
        .unwrap();
    assert!(st.success(), "cp -a onto the master's mount failed");
    eprintln!("cp -a of {} crates: {:?}", sources.len(), t.elapsed());

    // Then everything else people do to a tree.
    common::everyday_edits(&mnt.join("src"), 50);
    rustix::fs::setxattr(
        mnt.join("src/hardlink"),
        "user.origin",
        b"registry",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        mnt.join("src"),
        "user.dir",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();

    let head = wait_converged(&vol, &[&ra, &rb], CONVERGE);
    eprintln!("both replicas at {head:?} after {:?}", t.elapsed());
    let tree = vol.join("tree");
    assert_same_tree(&tree, &ra.join("tree"));
    assert_same_tree(&tree, &rb.join("tree"));
    // What the read-only mounts show is the same tree.
    assert_same_tree(&tree, &ma);
    assert_same_tree(&tree, &mb);
    assert_eq!(
        fs::read(mb.join("src/deep/c-moved/d/e/f/g")).unwrap(),
        b"deep\n"
    );

    // Nothing can change the replicas' mounts.
    for m in [&ma, &mb] {
        erofs("write", fs::write(m.join("new"), b"x"));
        erofs(
            "overwrite",
            fs::OpenOptions::new()
                .write(true)
                .open(m.join("src/shrink")),
        );
        erofs("mkdir", fs::create_dir(m.join("newdir")));
        erofs("unlink", fs::remove_file(m.join("src/hardlink")));
        erofs(
            "chmod",
            fs::set_permissions(
                m.join("src/hardlink"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            ),
        );
        erofs("rename", fs::rename(m.join("src/shrink"), m.join("moved")));
    }

    // The master sees replica A, connected and caught up; A sees B.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, s) = master_status(&vol, &["--max-lag-records", "0"]);
        let replicas = s["replicas"].as_array().cloned().unwrap_or_default();
        let good = replicas.len() == 1
            && replicas[0]["connected"] == true
            && replicas[0]["lag"]["records"] == 0
            && pos(&replicas[0]["acked"]) == head;
        if good {
            assert_eq!(code, 0, "status exits 0 with every replica caught up");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the master does not list replica A caught up: {}",
            s["replicas"]
        );
        thread::sleep(Duration::from_millis(200));
    }
    let (code, s) = replica_status(&ra, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["replication"]["state"], "following", "{s}");
    assert_eq!(s["replication"]["lag"]["records"], 0, "{s}");
    let served = s["replicas"].as_array().cloned().unwrap_or_default();
    assert_eq!(served.len(), 1, "A serves B: {s}");
    assert_eq!(served[0]["connected"], true, "{s}");

    let mut b = b;
    assert!(b.stop().success(), "{}", b.stderr());
    assert!(a.stop().success(), "{}", a.stderr());
    assert!(!is_mounted(&ma) && !is_mounted(&mb), "SIGTERM unmounts");
    master.unmount();
    ok("jfs-replica", &[&"verify", &ra]);
    ok("jfs-replica", &[&"verify", &rb]);
    assert_same_journal(&vol, &ra);
    assert_same_journal(&vol, &rb);
}

/// A shell workload on the master's mount that runs until `stop` exists.
struct Workload {
    child: Option<Child>,
    stop: PathBuf,
}

impl Workload {
    /// Copies, edits, renames and removes trees of this repository's sources.
    fn start(mnt: &Path, tag: &str, stop: &Path) -> Workload {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("libjfs/src");
        let script = format!(
            r#"
            cd '{mnt}'
            n=0
            while [ ! -e '{stop}' ]; do
                cp -a '{src}' {tag}-r$n
                echo "{tag} $n" > {tag}-f$n
                chmod 600 {tag}-f$n
                if [ $n -gt 0 ]; then
                    rm -rf {tag}-r$((n-1))/journal
                    mv {tag}-r$((n-1)) {tag}-old$((n-1))
                    ln {tag}-f$((n-1)) {tag}-link$((n-1))
                    rm {tag}-f$((n-1))
                fi
                [ $n -gt 2 ] && rm -rf {tag}-old$((n-3))
                n=$((n+1))
            done
            "#,
            mnt = mnt.display(),
            src = src.display(),
            stop = stop.display(),
        );
        let child = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Workload {
            child: Some(child),
            stop: stop.to_owned(),
        }
    }

    /// Asks it to stop after the current round and expects it succeeded.
    fn finish(mut self) {
        fs::write(&self.stop, b"").unwrap();
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the workload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn kills_cuts_stalls_and_a_master_restart_neither_lose_nor_repeat_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let master = Master::start(&vol, &mnt, &["--sync", "interval:20"]);
    let proxy = Proxy::start(master.addr);
    let rvol = dir.path().join("replica");
    init_replica(&rvol, &proxy.addr().to_string(), &vol);
    let mut replica = follow(&rvol, None, &[]);
    let pause = |ms| thread::sleep(Duration::from_millis(ms));
    let mut kills = 0;
    let mut cuts = 0;

    let work = Workload::start(&mnt, "one", &dir.path().join("stop-one"));
    for _ in 0..3 {
        pause(700);
        replica.kill9();
        kills += 1;
        pause(100);
        replica = follow(&rvol, None, &[]);
        pause(500);
        proxy.cut();
        cuts += 1;
    }
    pause(500);
    proxy.stall(true);
    pause(3000);
    proxy.stall(false);
    pause(700);
    proxy.cut();
    cuts += 1;
    pause(500);
    work.finish();

    // The master goes away and comes back on another port.
    master.unmount();
    let master = Master::start(&vol, &mnt, &["--sync", "interval:20"]);
    proxy.set_upstream(master.addr);
    proxy.cut();
    let work = Workload::start(&mnt, "two", &dir.path().join("stop-two"));
    for _ in 0..3 {
        pause(600);
        replica.kill9();
        kills += 1;
        replica = follow(&rvol, None, &[]);
        pause(400);
        proxy.cut();
        cuts += 1;
    }
    pause(500);
    work.finish();

    let head = wait_converged(&vol, &[&rvol], CONVERGE);
    eprintln!(
        "{kills} kills, {cuts} cuts, {} connections; converged at {head:?}",
        proxy.accepted()
    );
    assert!(
        proxy.accepted() > kills + cuts,
        "the replica reconnected after each kill and cut"
    );
    let st = replica.stop();
    assert!(st.success(), "{st}: {}", replica.stderr());
    master.unmount();
    assert_same_tree(&vol.join("tree"), &rvol.join("tree"));
    ok("jfs-replica", &[&"verify", &rvol]);
    assert_same_journal(&vol, &rvol);
}

#[test]
fn a_flipped_bit_on_the_wire_is_caught_and_the_replica_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let master = Master::start(&vol, &mnt, &[]);
    let proxy = Proxy::start(master.addr);
    let rvol = dir.path().join("replica");
    init_replica(&rvol, &proxy.addr().to_string(), &vol);
    let mut replica = follow(&rvol, None, &[]);
    write_files(&mnt, "before", 5, 64 << 10, 1);
    wait_converged(&vol, &[&rvol], CONVERGE);

    // Batches of these records are far larger than a heartbeat.
    proxy.flip_next_bit(4096);
    write_files(&mnt, "during", 8, 64 << 10, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.flipped() == 0 {
        assert!(Instant::now() < deadline, "no batch went through the proxy");
        thread::sleep(Duration::from_millis(20));
    }
    let said = replica.wait_for("damaged", Duration::from_secs(20));
    assert!(said.contains("checksum"), "{}", replica.stderr());

    // Hold the stream and look at the tree: it is its journal, replayed.
    proxy.stall(true);
    thread::sleep(Duration::from_millis(500));
    let (_, s) = replica_status(&rvol, &[]);
    let at = pos(&s["position"]);
    let dest = dir.path().join("materialized");
    ok(
        "jfs-replica",
        &[&"materialize", &rvol, &"--at", &at.0.to_string(), &dest],
    );
    assert_same_tree(&dest, &rvol.join("tree"));
    assert_eq!(pos(&replica_status(&rvol, &[]).1["position"]), at);
    proxy.stall(false);

    write_files(&mnt, "after", 3, 64 << 10, 3);
    wait_converged(&vol, &[&rvol], CONVERGE);
    assert!(proxy.accepted() >= 2, "the replica reconnected");
    assert_eq!(proxy.flipped(), 1);
    let st = replica.stop();
    assert!(st.success(), "{st}: {}", replica.stderr());
    master.unmount();
    ok("jfs-replica", &[&"verify", &rvol]);
    assert_same_tree(&vol.join("tree"), &rvol.join("tree"));
    assert_same_journal(&vol, &rvol);
}

#[test]
fn a_wrong_key_is_refused_and_breaks_the_replica_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let mut master = Master::start(&vol, &mnt, &[]);
    fs::write(mnt.join("file"), b"one").unwrap();
    let wrong = dir.path().join("wrong-secret");
    fs::write(&wrong, b"0123456789abcdef0123456789abcdef\n").unwrap();
    let rvol = dir.path().join("replica");

    let out = run(
        "jfs-replica",
        &[
            &"init",
            &rvol,
            &"--master",
            &master.addr(),
            &"--secret-file",
            &wrong,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "init with a wrong key succeeded");
    assert!(err.contains("wrong key"), "{err}");
    assert!(!rvol.exists(), "a refused init left {}", rvol.display());
    let logged = master.p.wait_for("wrong key", Duration::from_secs(10));
    assert!(logged.contains("key"), "{}", master.p.stderr());

    // A replica that had the key, and then another one.
    init_replica(&rvol, &master.addr(), &vol);
    let mut replica = follow(&rvol, None, &[]);
    wait_converged(&vol, &[&rvol], CONVERGE);
    assert!(replica.stop().success());
    let before = dir.path().join("before");
    copy_aside(&rvol.join("tree"), &before);
    fs::copy(&wrong, rvol.join("secret")).unwrap();
    fs::write(mnt.join("file2"), b"two").unwrap();

    let mut replica = follow(&rvol, None, &[]);
    let st = replica.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(3), "{}", replica.stderr());
    assert!(
        replica.stderr().contains("wrong key"),
        "{}",
        replica.stderr()
    );
    let (code, s) = replica_status(&rvol, &[]);
    assert_eq!(code, 3, "{s}");
    assert_eq!(s["replication"]["state"], "broken", "{s}");
    let reason = s["replication"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("key"), "{s}");
    assert_same_tree(&before, &rvol.join("tree"));
    master.unmount();
}

#[test]
fn a_replica_with_a_record_the_master_lacks_is_diverged_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let master = Master::start(&vol, &mnt, &[]);
    write_files(&mnt, "f", 3, 1000, 4);
    let rvol = dir.path().join("replica");
    init_replica(&rvol, &master.addr(), &vol);
    let mut replica = follow(&rvol, None, &[]);
    let head = wait_converged(&vol, &[&rvol], CONVERGE);
    assert!(replica.stop().success());

    // A record of the replica's own, at the seq the master uses next.
    let mut v = libjfs::Volume::open(&rvol).unwrap();
    let own = v
        .commit(libjfs::Op::Mkdir {
            path: libjfs::RelPath::new(b"replica-only").unwrap(),
            node: libjfs::NewNode {
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        })
        .unwrap();
    v.close().unwrap();
    assert_eq!(own.seq, head.0 + 1);
    let before = dir.path().join("before");
    copy_aside(&rvol.join("tree"), &before);
    write_files(&mnt, "g", 3, 1000, 5);
    assert!(master_head(&vol).0 > own.seq);

    let mut replica = follow(&rvol, None, &[]);
    let st = replica.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(3), "{}", replica.stderr());
    assert!(
        replica.stderr().contains("diverged"),
        "{}",
        replica.stderr()
    );
    let (code, s) = replica_status(&rvol, &[]);
    assert_eq!(code, 3, "{s}");
    assert_eq!(s["replication"]["state"], "broken", "{s}");
    let reason = s["replication"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("diverged"), "{s}");
    assert_eq!(pos(&s["position"]).0, own.seq, "{s}");
    assert_same_tree(&before, &rvol.join("tree"));
    master.unmount();
}

#[test]
fn a_full_disk_stalls_the_replica_until_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let master = Master::start(&vol, &mnt, &["--sync", "interval:50"]);
    let small = Tmpfs::mount(&dir.path().join("small"), "16m");
    let rvol = small.path().join("replica");
    init_replica(&rvol, &master.addr(), &vol);
    let mut replica = follow(&rvol, None, &[]);

    write_files(&mnt, "big", 40, 1 << 20, 6);
    let (code, s) = wait_state(&rvol, "stalled", Duration::from_secs(60));
    assert_eq!(code, 4, "a stalled replica's status exits 4: {s}");
    let reason = s["replication"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("No space left on device"), "{s}");
    eprintln!("stalled: {reason}");
    assert!(
        s["replication"]["lag"]["records"].as_u64().unwrap_or(0) > 0,
        "a stalled replica lags: {s}"
    );
    thread::sleep(Duration::from_secs(1));
    assert!(replica.running(), "{}", replica.stderr());

    small.resize("256m");
    wait_converged(&vol, &[&rvol], CONVERGE);
    let (code, s) = replica_status(&rvol, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["replication"]["state"], "following", "{s}");
    let st = replica.stop();
    assert!(st.success(), "{st}: {}", replica.stderr());
    master.unmount();
    assert_same_tree(&vol.join("tree"), &rvol.join("tree"));
    ok("jfs-replica", &[&"verify", &rvol]);
    assert_same_journal(&vol, &rvol);
}

#[test]
fn a_replica_pinned_at_a_snapshot_holds_there_and_catches_up_when_released() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let master = Master::start(&vol, &mnt, &[]);
    write_files(&mnt, "v1-", 5, 3000, 7);
    fs::create_dir(mnt.join("dir")).unwrap();
    ok("jfs-master", &[&"snapshot", &vol, &"create", &"v1"]);
    let list = ok("jfs-master", &[&"snapshot", &vol, &"list"]);
    let mut fields = list.lines().next().unwrap().split('\t').skip(1);
    let v1 = (
        fields.next().unwrap().parse::<u64>().unwrap(),
        fields.next().unwrap().to_owned(),
    );
    write_files(&mnt, "v2-", 5, 3000, 8);
    fs::remove_file(mnt.join("v1-0")).unwrap();
    fs::rename(mnt.join("dir"), mnt.join("dir2")).unwrap();

    let rvol = dir.path().join("replica");
    let rmnt = dir.path().join("replica-mnt");
    fs::create_dir(&rmnt).unwrap();
    init_replica(&rvol, &master.addr(), &vol);
    let mut replica = follow(&rvol, Some(&rmnt), &["--until", "v1"]);
    let (code, s) = wait_state(&rvol, "pinned", Duration::from_secs(60));
    assert_eq!(code, 0, "{s}");
    assert_eq!(pos(&s["position"]), v1, "{s}");
    assert_eq!(pos(&s["replication"]["pinned_at"]), v1, "{s}");
    let at_v1 = dir.path().join("v1");
    ok(
        "jfs-replica",
        &[&"materialize", &vol, &"--at", &"v1", &at_v1],
    );
    assert_same_tree(&at_v1, &rvol.join("tree"));
    assert_same_tree(&at_v1, &rmnt);
    // It holds there while the master moves on.
    fs::write(mnt.join("later"), b"later").unwrap();
    thread::sleep(Duration::from_secs(1));
    let (_, s) = replica_status(&rvol, &[]);
    assert_eq!(s["replication"]["state"], "pinned", "{s}");
    assert_eq!(pos(&s["position"]), v1, "{s}");
    let st = replica.stop();
    assert!(st.success(), "{st}: {}", replica.stderr());
    assert!(!is_mounted(&rmnt));

    // Released, it catches up.
    let mut replica = follow(&rvol, Some(&rmnt), &[]);
    wait_converged(&vol, &[&rvol], CONVERGE);
    assert_same_tree(&vol.join("tree"), &rvol.join("tree"));
    assert_same_tree(&vol.join("tree"), &rmnt);
    let st = replica.stop();
    assert!(st.success(), "{st}: {}", replica.stderr());
    master.unmount();
    ok("jfs-replica", &[&"verify", &rvol]);
}

/// A pin at a snapshot nobody has made yet (a roll-out prepared ahead)
/// holds the tree where it is, says so, and moves once the snapshot is made.
#[test]
fn a_pin_at_a_snapshot_not_made_yet_holds_until_it_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt, master, rvol) = master_and_replica(dir.path());
    let mut replica = follow(&rvol, None, &["--until", "next"]);
    replica.wait_for("until snapshot next arrives", Duration::from_secs(10));
    let (code, s) = wait_state(&rvol, "pinned", Duration::from_secs(30));
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["replication"]["until"], "next", "{s}");
    assert_eq!(s["position"]["seq"], 0, "the tree moved: {s}");
    assert!(!rvol.join("tree/a").exists());
    // Everything the master has is journaled meanwhile.
    let head = master_head(&vol);
    let (_, s) = replica_status(&rvol, &[]);
    assert_eq!(pos(&s["journal"]["head"]), head, "{s}");

    ok("jfs-master", &[&"snapshot", &vol, &"create", &"next"]);
    fs::write(mnt.join("b"), b"b").unwrap();
    let at = snapshot_position(&vol, "next");
    wait_position(&rvol, &at, Duration::from_secs(30));
    assert_eq!(fs::read(rvol.join("tree/a")).unwrap(), b"a");
    assert!(!rvol.join("tree/b").exists(), "it went past the pin");
    assert!(replica.stop().success(), "{}", replica.stderr());
    master.unmount();
}

/// A replica writing an image holds its volume (nothing is applied
/// meanwhile), but its status still answers, with the figures the image
/// is taken at. The image goes to a FIFO that nothing reads until the test
/// lets it go, so that it holds the volume for as long as the test needs.
#[test]
fn status_answers_while_an_image_holds_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, _mnt, master, rvol) = master_and_replica(dir.path());
    let mut replica = follow(&rvol, None, &[]);
    let head = wait_converged(&vol, &[&rvol], CONVERGE);
    let img = dir.path().join("img");
    let fifo = libjfs::image::partial_path(&img);
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success(), "mkfifo {}", fifo.display());
    let mut image = Proc::spawn("jfs-replica", &[&"image", &rvol, &img], None);

    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let (code, s) = replica_status(&rvol, &[]);
        assert_eq!(code, 0, "{s}");
        if s["busy"].is_object() {
            break s;
        }
        assert!(Instant::now() < deadline, "status never said busy: {s}");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(s["busy"]["task"], "writing an image", "{s}");
    assert_eq!(pos(&s["position"]), head, "{s}");
    assert_eq!(pos(&s["journal"]["head"]), head, "{s}");
    assert_eq!(s["replication"]["state"], "following", "{s}");

    // Let the image go (it then fails: a FIFO cannot be synced); status
    // comes from the volume again.
    let drained = thread::spawn(move || fs::read(&fifo).unwrap().len());
    let st = image.wait_exit(Duration::from_secs(60));
    assert!(drained.join().unwrap() > 0, "the image wrote nothing");
    assert!(!st.success(), "an image into a FIFO cannot be synced");
    let (_, s) = replica_status(&rvol, &[]);
    assert!(s["busy"].is_null(), "{s}");
    assert_eq!(pos(&s["position"]), head, "{s}");
    assert!(replica.stop().success(), "{}", replica.stderr());
    master.unmount();
}

/// A replica whose tree was changed behind its journal's back (a file
/// removed by hand) stops at the first record the tree refuses: broken, at
/// the position before it, with the reason and what to do, and nothing of
/// that record or any later one applied.
#[test]
fn a_tree_changed_behind_the_journal_breaks_the_replica_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt, master, rvol) = master_and_replica(dir.path());
    fs::write(mnt.join("b"), b"b").unwrap();
    let mut replica = follow(&rvol, None, &[]);
    let before = wait_converged(&vol, &[&rvol], CONVERGE);
    assert!(replica.stop().success(), "{}", replica.stderr());

    fs::remove_file(rvol.join("tree/a")).unwrap();
    fs::write(mnt.join("a"), b"changed").unwrap();
    fs::write(mnt.join("b"), b"changed too").unwrap();
    let out = run("jfs-replica", &[&"follow", &rvol]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("is broken at") && err.contains("the tree refused a record"),
        "{err}"
    );
    assert!(
        err.contains("jfs-replica verify") && err.contains("jfs-replica bootstrap"),
        "{err}"
    );
    let (code, s) = replica_status(&rvol, &[]);
    assert_eq!(code, 3, "{s}");
    assert_eq!(s["replication"]["state"], "broken", "{s}");
    assert_eq!(pos(&s["position"]), before, "{s}");
    assert!(
        !rvol.join("tree/a").exists(),
        "the refused record was applied"
    );
    assert_eq!(
        fs::read(rvol.join("tree/b")).unwrap(),
        b"b",
        "a later record was applied"
    );
    let out = run("jfs-replica", &[&"verify", &rvol]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a: only in"));
    master.unmount();
}

#[test]
fn status_exit_codes_tell_stopped_and_lagging_replicas_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt, master, rvol) = master_and_replica(dir.path());
    let (code, s) = replica_status(&rvol, &[]);
    assert_eq!(code, 5, "nothing follows yet: {s}");
    assert_eq!(s["replication"]["state"], "stopped", "{s}");

    let mut replica = follow(&rvol, None, &[]);
    let head = wait_converged(&vol, &[&rvol], CONVERGE);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pos(&master_status(&vol, &[]).1["replicas"][0]["acked"]) != head {
        assert!(Instant::now() < deadline, "the master never got the ack");
        thread::sleep(Duration::from_millis(100));
    }
    let (code, s) = master_status(&vol, &["--max-lag-records", "0"]);
    assert_eq!(code, 0, "{s}");
    let (code, s) = replica_status(&rvol, &["--max-lag-records", "0"]);
    assert_eq!(code, 0, "{s}");
    assert!(replica.stop().success());

    let (code, s) = replica_status(&rvol, &[]);
    assert_eq!(code, 5, "a stopped replica: {s}");
    fs::write(mnt.join("b"), b"b").unwrap();
    let (code, s) = master_status(&vol, &["--max-lag-records", "0"]);
    assert_eq!(code, 4, "the replica lacks a record: {s}");
    let r = &s["replicas"][0];
    assert_eq!(r["connected"], false, "{s}");
    assert!(r["lag"]["records"].as_u64().unwrap() > 0, "{s}");
    let (code, _) = master_status(&vol, &["--max-lag-records", "100"]);
    assert_eq!(code, 0);
    master.unmount();
}

/// Each tool refuses, naming the other, the commands it would otherwise run
/// on a volume of the other role: `jfs-replica rewind`, meant for one front
/// end, rewound a master given its volume (and so every replica), and
/// `jfs-master status` called a replica a master. Served or not, nothing
/// changes.
#[test]
fn each_tool_refuses_the_other_roles_volumes_served_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt, master, rvol) = master_and_replica(dir.path());
    fs::write(mnt.join("b"), b"b").unwrap();
    let head = master_head(&vol);

    let refused = |tool: &str, cmd: &[&str], vol: &Path, other: &str| {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&cmd[0], &vol];
        for a in &cmd[1..] {
            args.push(a);
        }
        let err = common::fails(tool, &args, 1);
        let want = format!("use `{other} {} {}`", cmd[0], vol.display());
        assert!(err.contains(&want), "{tool} {cmd:?}: {err}");
    };
    let both_ways = |when: &str| {
        eprintln!("{when}");
        for cmd in [
            &["status"][..],
            &["rewind", "--to", "1"],
            &["trim", "--dry-run"],
            &["retention", "--max-age", "1d"],
        ] {
            refused("jfs-master", cmd, &rvol, "jfs-replica");
            refused("jfs-replica", cmd, &vol, "jfs-master");
        }
    };
    // The master mounted (its socket answers), the replica not followed.
    both_ways("master served, replica not");
    assert_eq!(master_head(&vol), head, "the master's journal changed");
    assert_eq!(fs::read(mnt.join("b")).unwrap(), b"b");
    let (code, s) = replica_status(&rvol, &[]);
    assert_eq!(code, 5, "{s}");
    assert_eq!(s["role"], "replica", "{s}");

    // The replica followed, the master unmounted.
    let mut replica = follow(&rvol, None, &[]);
    wait_converged(&vol, &[&rvol], CONVERGE);
    master.unmount();
    both_ways("replica served, master not");
    assert_eq!(fs::read(rvol.join("tree/b")).unwrap(), b"b");
    let (_, s) = replica_status(&rvol, &[]);
    assert_eq!(pos(&s["position"]), head, "the replica moved: {s}");
    assert_eq!(s["retention"]["policy_text"], "keep all history", "{s}");
    // A closed terminal (SIGHUP) stops a replica as cleanly as SIGTERM.
    replica.signal(rustix::process::Signal::HUP);
    let st = replica.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "{st}: {}", replica.stderr());
    let (code, s) = master_status(&vol, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["role"], "master", "{s}");
    assert_eq!(pos(&s["journal"]["head"]), head, "{s}");
    assert_eq!(s["retention"]["policy_text"], "keep all history", "{s}");
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// The kinds of resident memory of a process, as /proc/PID/status gives them.
fn rss_parts(pid: u32) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let parts: Vec<&str> = status.lines().filter(|l| l.starts_with("Rss")).collect();
    parts.join(", ")
}

#[test]
fn a_stalled_replica_neither_blocks_the_master_nor_grows_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let master = Master::start(&vol, &mnt, &["--sync", "interval:5"]);
    let pid = master.p.id();
    let proxy = Proxy::start(master.addr);
    let rvol = dir.path().join("replica");
    init_replica(&rvol, &proxy.addr().to_string(), &vol);
    let mut replica = follow(&rvol, None, &[]);
    write_files(&mnt, "warm", 4, 1 << 20, 1);
    wait_converged(&vol, &[&rvol], CONVERGE);
    let before = rss(pid);

    // The replica takes no more bytes; the master goes on writing 384 MiB.
    // Holding that backlog would show as hundreds of MiB. Growth that does
    // not depend on it moved between 20 and 110 MiB across runs here, for
    // 192 and 384 MiB written alike (in one run, one thread's malloc arena
    // held 48 MiB of it).
    proxy.stall(true);
    write_files(&mnt, "big", 96, 4 << 20, 2);
    let after = rss(pid);
    assert!(
        after < before + (192 << 20),
        "the master grew from {before} to {after} bytes while a replica stalled: {}",
        rss_parts(pid)
    );
    let (_, s) = master_status(&vol, &[]);
    let lag = &s["replicas"][0]["lag"];
    assert!(lag["records"].as_u64().unwrap() > 0, "{s}");
    assert!(lag["bytes"].as_u64().unwrap() >= 100 << 20, "{s}");

    // Released, it catches up with everything.
    proxy.stall(false);
    wait_converged(&vol, &[&rvol], CONVERGE);
    let st = replica.stop();
    assert!(st.success(), "{st}: {}", replica.stderr());
    master.unmount();
    assert_same_tree(&vol.join("tree"), &rvol.join("tree"));
    assert_same_journal(&vol, &rvol);
}

// ---------------------------------------------------------------------------
// History: staged roll-out, rewinds

/// Files `app/f0..n` holding `tag` and their index, 8 KiB each.
fn write_release(mnt: &Path, tag: &str, n: usize) {
    fs::create_dir_all(mnt.join("app")).unwrap();
    for i in 0..n {
        let line = format!("{tag}:{i}\n");
        fs::write(
            mnt.join(format!("app/f{i}")),
            line.repeat(8192 / line.len()),
        )
        .unwrap();
    }
}

/// Reads the release files of a mount in a loop until stopped, and records
/// anything a reader must never see: a file that is not wholly one release,
/// or, once `to` was seen anywhere, `from` anywhere again (the tree moved
/// release by release, not at once).
struct ReleaseReader {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<(Vec<String>, usize)>>,
}

impl ReleaseReader {
    fn start(mnt: &Path, n: usize, from: &'static str, to: &'static str) -> ReleaseReader {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, mnt) = (stop.clone(), mnt.to_owned());
        let thread = thread::spawn(move || {
            let (mut bad, mut reads, mut moved) = (Vec::new(), 0usize, false);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..n {
                    let Ok(data) = fs::read(mnt.join(format!("app/f{i}"))) else {
                        continue;
                    };
                    reads += 1;
                    let text = String::from_utf8_lossy(&data);
                    let tag = text.split(':').next().unwrap_or("").to_owned();
                    let line = format!("{tag}:{i}\n");
                    if text != line.repeat(8192 / line.len()) {
                        bad.push(format!(
                            "app/f{i} is not one release: {:?}",
                            &text[..40.min(text.len())]
                        ));
                    } else if tag == to {
                        moved = true;
                    } else if tag == from && moved {
                        bad.push(format!("app/f{i} is {from} after {to} was seen"));
                    }
                    if bad.len() > 20 {
                        return (bad, reads);
                    }
                }
            }
            (bad, reads)
        });
        ReleaseReader {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Vec<String>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for ReleaseReader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the replica's tree is at `want`.
fn wait_position(rvol: &Path, want: &(u64, String), timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, s) = replica_status(rvol, &[]);
        if pos(&s["position"]) == *want {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} is not at {want:?} after {timeout:?}: {s}",
            rvol.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn snapshot_position(vol: &Path, name: &str) -> (u64, String) {
    let list = ok("jfs-master", &[&"snapshot", &vol, &"list"]);
    let line = list
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("no snapshot {name}: {list}"));
    let mut fields = line.split('\t').skip(1);
    (
        fields.next().unwrap().parse().unwrap(),
        fields.next().unwrap().to_owned(),
    )
}

#[test]
fn a_staged_roll_out_moves_replicas_at_once_and_rewinds_put_them_back() {
    const FILES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (vol, mnt) = master_volume(dir.path());
    let master = Master::start(&vol, &mnt, &[]);
    write_release(&mnt, "v1", FILES);
    fs::write(mnt.join("app/only-in-v1"), b"old").unwrap();
    ok("jfs-master", &[&"snapshot", &vol, &"create", &"v1"]);
    write_release(&mnt, "v2", FILES);
    fs::remove_file(mnt.join("app/only-in-v1")).unwrap();
    fs::write(mnt.join("app/only-in-v2"), b"new").unwrap();
    ok("jfs-master", &[&"snapshot", &vol, &"create", &"v2"]);
    fs::write(mnt.join("app/after-v2"), b"later").unwrap();
    let (v1, v2) = (snapshot_position(&vol, "v1"), snapshot_position(&vol, "v2"));
    let (at_v1, at_v2) = (dir.path().join("at-v1"), dir.path().join("at-v2"));
    ok(
        "jfs-replica",
        &[&"materialize", &vol, &"--at", &"v1", &at_v1],
    );
    ok(
        "jfs-replica",
        &[&"materialize", &vol, &"--at", &"v2", &at_v2],
    );

    // Two front ends, pinned at v1.
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let rvol = dir.path().join(format!("replica-{name}"));
        let rmnt = dir.path().join(format!("replica-{name}-mnt"));
        fs::create_dir(&rmnt).unwrap();
        init_replica(&rvol, &master.addr(), &vol);
        let p = follow(&rvol, Some(&rmnt), &["--until", "v1"]);
        replicas.push((rvol, rmnt, p));
    }
    for (rvol, rmnt, _) in &replicas {
        wait_position(rvol, &v1, CONVERGE);
        assert_same_tree(&at_v1, rmnt);
    }

    // Roll out v2: each front end moves at once, whatever its readers do.
    let readers: Vec<ReleaseReader> = replicas
        .iter()
        .map(|(_, rmnt, _)| ReleaseReader::start(rmnt, FILES, "v1", "v2"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    for (rvol, _, _) in &replicas {
        let out = ok("jfs-replica", &[&"follow", rvol, &"--until", &"v2"]);
        assert!(out.contains("holds") && out.contains("v2"), "{out}");
    }
    for (rvol, rmnt, _) in &replicas {
        wait_position(rvol, &v2, CONVERGE);
        let (code, s) = wait_state(rvol, "pinned", Duration::from_secs(10));
        assert_eq!((code, pos(&s["position"])), (0, v2.clone()), "{s}");
        assert_same_tree(&at_v2, rmnt);
        assert_same_tree(&at_v2, &rvol.join("tree"));
    }
    thread::sleep(Duration::from_millis(300));
    for r in readers {
        let (bad, reads) = r.finish();
        assert!(
            bad.is_empty(),
            "readers saw a mixture during the roll-out:\n{}",
            bad.join("\n")
        );
        assert!(
            reads > FILES,
            "the readers read too little to tell ({reads})"
        );
    }

    // Roll back: each front end alone, at once.
    let readers: Vec<ReleaseReader> = replicas
        .iter()
        .map(|(_, rmnt, _)| ReleaseReader::start(rmnt, FILES, "v2", "v1"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    for (rvol, _, _) in &replicas {
        let out = ok("jfs-replica", &[&"rewind", rvol, &"--to", &"v1"]);
        assert!(out.contains(&format!("is at {}", v1.0)), "{out}");
    }
    for (rvol, rmnt, _) in &replicas {
        wait_position(rvol, &v1, Duration::from_secs(10));
        let (code, s) = wait_state(rvol, "pinned", Duration::from_secs(10));
        assert_eq!((code, pos(&s["position"])), (0, v1.clone()), "{s}");
        assert_same_tree(&at_v1, rmnt);
    }
    thread::sleep(Duration::from_millis(300));
    for r in readers {
        let (bad, _) = r.finish();
        assert!(
            bad.is_empty(),
            "readers saw a mixture during the roll-back:\n{}",
            bad.join("\n")
        );
    }

    // The master itself goes back to v1 while mounted: an open file and the
    // kernel's caches follow, and replicas follow the rewind as they follow
    // any change.
    let held = fs::File::open(mnt.join("app/f0")).unwrap();
    assert!(fs::read_to_string(mnt.join("app/f1"))
        .unwrap()
        .starts_with("v2:1"));
    let before_rewind = master_head(&vol).0.to_string();
    let mut doomed = fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("app/after-v2"))
        .unwrap();
    let out = ok("jfs-master", &[&"rewind", &vol, &"--to", &"v1"]);
    assert!(out.contains("rewound"), "{out}");
    assert_same_tree(&at_v1, &vol.join("tree"));
    assert_same_tree(&at_v1, &mnt);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &held, &mut text).unwrap();
    assert!(
        text.starts_with("v1:0"),
        "an open file reads {:?}",
        &text[..10]
    );
    assert!(fs::read_to_string(mnt.join("app/f1"))
        .unwrap()
        .starts_with("v1:1"));
    assert!(!mnt.join("app/after-v2").exists());
    // A file the rewind removed while it was open still takes writes, which
    // are no part of the tree and change no history.
    std::io::Write::write_all(&mut doomed, b"written after its removal").unwrap();
    drop(doomed);
    // And the rewind can itself be rewound.
    let undo_to = master_head(&vol);
    fs::write(mnt.join("app/f1"), b"edited after the rewind").unwrap();
    let (head, _) = master_head(&vol);
    ok("jfs-master", &[&"rewind", &vol, &"--to", &before_rewind]);
    let at_later = dir.path().join("at-later");
    ok(
        "jfs-replica",
        &[&"materialize", &vol, &"--at", &before_rewind, &at_later],
    );
    assert_same_tree(&at_later, &vol.join("tree"));
    assert_eq!(fs::read(mnt.join("app/after-v2")).unwrap(), b"later");
    assert!(head > undo_to.0);

    // Released, the front ends follow the master through both rewinds.
    for (rvol, _, _) in &replicas {
        let out = ok("jfs-replica", &[&"follow", rvol]);
        assert!(out.contains("follows"), "{out}");
    }
    let paths: Vec<&Path> = replicas.iter().map(|(r, _, _)| r.as_path()).collect();
    wait_converged(&vol, &paths, CONVERGE);
    for (rvol, rmnt, _) in &replicas {
        assert_same_tree(&vol.join("tree"), &rvol.join("tree"));
        assert_same_tree(&vol.join("tree"), rmnt);
        let opts = CompareOptions {
            ignore_root_mtime: true,
            ..CompareOptions::default()
        };
        let diffs = compare_trees(&vol.join("attic"), &rvol.join("attic"), &opts).unwrap();
        assert!(diffs.is_empty(), "the attics differ: {diffs:?}");
    }
    drop(held);
    for (_, _, mut p) in replicas {
        let st = p.stop();
        assert!(st.success(), "{st}: {}", p.stderr());
    }
    master.unmount();
}
