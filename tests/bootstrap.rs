//! Re-bootstrap end to end: a master with small segments trims its early
//! history; a new replica is built from an image another replica streams
//! while the master keeps writing, and a replica refused for trimmed
//! history is rebuilt from an image file. Both then follow the master and
//! end with its tree and journal.

mod common;
#[path = "common/proc.rs"]
mod proc;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_same_tree, is_mounted, ok, run};
use proc::Proc;
use serde_json::Value;

/// `jfs-replica follow RVOL [extra]`, once it follows.
fn follow(rvol: &Path, extra: &[&str]) -> Proc {
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"follow", &rvol];
    for e in extra {
        args.push(e);
    }
    let mut p = Proc::spawn("jfs-replica", &args, None);
    p.wait_for("jfs-replica: following", Duration::from_secs(30));
    p
}

fn status(bin: &str, vol: &Path) -> (i32, Value) {
    let out = run(bin, &[&"status", &vol, &"--json"]);
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

fn pos(v: &Value) -> (u64, String) {
    (
        v["seq"].as_u64().unwrap_or(0),
        v["chain"].as_str().unwrap_or("").to_owned(),
    )
}

fn master_head(vol: &Path) -> (u64, String) {
    pos(&status("jfs-master", vol).1["journal"]["head"])
}

/// Polls until every replica's tree is at the master's head; returns it.
fn wait_converged(master: &Path, replicas: &[&Path], timeout: Duration) -> (u64, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let head = master_head(master);
        let st: Vec<Value> = replicas
            .iter()
            .map(|r| status("jfs-replica", r).1)
            .collect();
        if st.iter().all(|s| pos(&s["position"]) == head) {
            return head;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not reach {head:?}:\n{}",
            st.iter()
                .map(|s| format!("{} {}", s["position"], s["replication"]))
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The replica's journal holds exactly the master's records from where it starts.
fn assert_journal_continues_master(master: &Path, rvol: &Path) -> u64 {
    let first = status("jfs-replica", rvol).1["journal"]["first_seq"]
        .as_u64()
        .unwrap();
    let from = first.to_string();
    let a = ok(
        "jfs-master",
        &[&"log", &master, &"--from", &from, &"--json"],
    );
    let b = ok("jfs-master", &[&"log", &rvol, &"--json"]);
    assert!(!b.is_empty(), "the replica's journal is empty");
    assert_eq!(
        a.lines().count(),
        b.lines().count(),
        "the replica's journal from {first} is not the master's"
    );
    for (x, y) in a.lines().zip(b.lines()) {
        assert_eq!(x, y, "the replica's journal differs from the master's");
    }
    first
}

/// `n` files of incompressible bytes, so that segments fill.
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
        fs::write(dir.join(format!("{prefix}{i}")), &data).unwrap();
    }
}

/// Keeps changing files through the master's mount until dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl Writer {
    fn start(mnt: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, dir) = (stop.clone(), mnt.join("busy"));
        fs::create_dir_all(&dir).unwrap();
        let thread = thread::spawn(move || {
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                let f = dir.join(format!("w{}", n % 25));
                fs::write(&f, format!("round {n}\n").repeat(50 + n % 200)).unwrap();
                if n % 7 == 0 {
                    let _ = fs::rename(&f, dir.join(format!("moved{}", n % 5)));
                }
                if n % 11 == 0 {
                    let _ = fs::remove_file(dir.join(format!("w{}", (n + 3) % 25)));
                }
                n += 1;
                thread::sleep(Duration::from_millis(5));
            }
            n
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops writing; returns how many rounds were written.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn replicas_whose_history_was_trimmed_are_rebuilt_from_images() {
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("{:6.1}s {what}", t0.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mvol, mnt) = (d.join("master"), d.join("mnt"));
    ok("jfs-master", &[&"init", &mvol, &"--segment-size", &"64KiB"]);
    fs::create_dir(&mnt).unwrap();
    let mut master = Proc::spawn(
        "jfs-master",
        &[&"mount", &mvol, &mnt, &"--listen", &"127.0.0.1:0"],
        Some(&mnt),
    );
    let maddr = master.wait_for("jfs-master: serving replicas on ", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(&mnt) {
        assert!(Instant::now() < deadline, "the master did not mount");
        thread::sleep(Duration::from_millis(20));
    }
    let secret = mvol.join("secret");
    let init = |rvol: &Path, extra: &[&dyn AsRef<OsStr>]| {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![
            &"init",
            &rvol,
            &"--master",
            &maddr,
            &"--secret-file",
            &secret,
        ];
        args.extend_from_slice(extra);
        ok("jfs-replica", &args)
    };

    // B follows the beginning only; A follows all along and serves others.
    let (avol, bvol, cvol) = (d.join("a"), d.join("b"), d.join("c"));
    init(&avol, &[]);
    init(&bvol, &[]);
    let mut a = follow(&avol, &["--listen", "127.0.0.1:0"]);
    let aaddr = a.wait_for("jfs-replica: serving replicas on ", Duration::from_secs(10));
    let mut b = follow(&bvol, &[]);
    fs::create_dir(mnt.join("first")).unwrap();
    wait_converged(&mvol, &[&avol, &bvol], Duration::from_secs(30));
    b.stop();

    phase("followers started");
    // Every kind of node, and enough bytes to seal many segments.
    common::sh(&format!(
        "cd '{}' && mkdir -p d/e && echo hi > d/f && ln d/f d/e/g && ln -s d/f link \
         && mkfifo fifo && setfacl -m u:1234:r d/f \
         && truncate -s 1M sparse && echo end >> sparse && chown 7:8 d/e && chmod 4755 d/f",
        mnt.display()
    ));
    rustix::fs::lsetxattr(
        mnt.join("d/f"),
        "user.x",
        b"yes",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    write_files(&mnt, "data", 40, 24 << 10, 7);
    wait_converged(&mvol, &[&avol], Duration::from_secs(60));
    let sealed = status("jfs-master", &mvol).1["journal"]["sealed_segments"]
        .as_u64()
        .unwrap();
    assert!(sealed >= 10, "only {sealed} sealed segments");

    phase("written");
    // Trim: B's cursor holds history back until forced.
    ok(
        "jfs-master",
        &[&"retention", &mvol, &"--max-size", &"128KiB"],
    );
    ok("jfs-master", &[&"trim", &mvol, &"--force"]);
    let first = status("jfs-master", &mvol).1["journal"]["first_seq"]
        .as_u64()
        .unwrap();
    let b_at = pos(&status("jfs-replica", &bvol).1["position"]).0;
    assert!(
        first > b_at + 1,
        "the master still holds {first}, B is at {b_at}"
    );
    // Keep what is left, for the rewind below.
    ok("jfs-master", &[&"retention", &mvol, &"--keep-all"]);

    // Removed nodes go to the attic: a rewind before their removal brings
    // them back from there, on every node. The image must carry them.
    let before_removal = master_head(&mvol).0;
    fs::remove_file(mnt.join("data0")).unwrap();
    fs::remove_file(mnt.join("d/e/g")).unwrap();

    phase("trimmed");
    // C joins while the master is busy: its tree comes from A's image.
    let writer = Writer::start(&mnt);
    thread::sleep(Duration::from_millis(300));
    let out = init(&cvol, &[&"--from", &aaddr]);
    assert!(out.contains("bootstrapped"), "{out}");
    let c_first = status("jfs-replica", &cvol).1["journal"]["first_seq"]
        .as_u64()
        .unwrap();
    assert!(c_first > first, "C starts at {c_first}, before the image");
    phase("C bootstrapped");
    let mut c = follow(&cvol, &[]);
    thread::sleep(Duration::from_millis(500));
    let rounds = writer.finish();
    assert!(rounds > 10, "the writer wrote only {rounds} rounds");
    wait_converged(&mvol, &[&avol, &cvol], Duration::from_secs(60));
    assert_same_tree(&mvol.join("tree"), &cvol.join("tree"));
    assert_journal_continues_master(&mvol, &cvol);
    let attic_entries = fs::read_dir(cvol.join("attic")).unwrap().count();
    assert!(
        attic_entries >= 2,
        "C's attic holds {attic_entries} entries"
    );

    // The master rewinds to before the removals; C restores them from the
    // attic its image gave it.
    ok(
        "jfs-master",
        &[&"rewind", &mvol, &"--to", &before_removal.to_string()],
    );
    assert!(mnt.join("data0").exists() && mnt.join("d/e/g").exists());
    wait_converged(&mvol, &[&avol, &cvol], Duration::from_secs(60));
    assert_same_tree(&mvol.join("tree"), &cvol.join("tree"));
    phase("rewound");

    phase("C converged");
    // B is refused for trimmed history, and says how to mend it.
    let mut b = Proc::spawn("jfs-replica", &[&"follow", &bvol], None);
    let st = b.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(3), "{}", b.stderr());
    assert!(
        b.stderr().contains("jfs-replica bootstrap"),
        "{}",
        b.stderr()
    );
    assert_eq!(
        status("jfs-replica", &bvol).1["replication"]["state"],
        "broken"
    );
    // The master's mount gives no images; B stays as it was.
    let out = run("jfs-replica", &[&"bootstrap", &bvol, &"--from", &maddr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no image here"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pos(&status("jfs-replica", &bvol).1["position"]).0, b_at);

    phase("B refused");
    // An image file of A, written by A's running process; B is rebuilt from it.
    let img = d.join("a.jfsimg");
    let out = ok("jfs-replica", &[&"image", &avol, &img]);
    assert!(out.contains("image of"), "{out}");
    // A volume whose follower runs is not rebuilt under it.
    let out = run("jfs-replica", &[&"bootstrap", &avol, &"--image", &img]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ok("jfs-replica", &[&"bootstrap", &bvol, &"--image", &img]);
    assert!(out.contains("bootstrapped"), "{out}");
    assert_eq!(
        status("jfs-replica", &bvol).1["replication"]["state"],
        "stopped"
    );
    phase("B bootstrapped");
    let mut b = follow(&bvol, &[]);
    fs::write(mnt.join("after"), b"written after the bootstrap\n").unwrap();
    wait_converged(&mvol, &[&avol, &bvol, &cvol], Duration::from_secs(60));
    assert_same_tree(&mvol.join("tree"), &bvol.join("tree"));
    assert_same_tree(&mvol.join("tree"), &cvol.join("tree"));
    assert_journal_continues_master(&mvol, &bvol);

    phase("all converged");
    for p in [&mut a, &mut b, &mut c] {
        p.stop();
    }
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = master.wait_exit(Duration::from_secs(60));
    assert!(
        st.success(),
        "jfs-master exited with {st}:\n{}",
        master.stderr()
    );
    phase("stopped");
}
