//! Retention end to end: a master with small segments, a replica that
//! stops following, and trims that keep what it needs until forced.

mod common;
#[path = "common/proc.rs"]
mod proc;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_same_tree, is_mounted, ok, run};
use proc::Proc;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

/// `jfs-master mount VOL MNT --listen 127.0.0.1:0`; returns it and its address.
fn mount_master(vol: &Path, mnt: &Path) -> (Proc, String) {
    let mut p = Proc::spawn(
        "jfs-master",
        &[&"mount", &vol, &mnt, &"--listen", &"127.0.0.1:0"],
        Some(mnt),
    );
    let addr = p.wait_for("jfs-master: serving replicas on ", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(mnt) {
        assert!(Instant::now() < deadline, "the master did not mount");
        thread::sleep(Duration::from_millis(20));
    }
    (p, addr)
}

fn unmount(mnt: &Path, mut p: Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(mnt)
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "fusermount3 -u failed");
        thread::sleep(Duration::from_millis(50));
    }
    let st = p.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "jfs-master exited with {st}:\n{}", p.stderr());
    p.stderr()
}

fn follow(rvol: &Path) -> Proc {
    let mut p = Proc::spawn("jfs-replica", &[&"follow", &rvol], None);
    p.wait_for("jfs-replica: following", Duration::from_secs(30));
    p
}

/// `BIN status VOL --json`: exit code and the JSON.
fn status(bin: &str, vol: &Path) -> (i32, Value) {
    let out = run(bin, &[&"status", &vol, &"--json"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{bin} status {}: {e}: {}",
            vol.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap()
}

/// Polls until the replica's tree is at the master's head; returns that seq.
fn wait_converged(vol: &Path, rvol: &Path) -> u64 {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let head = status("jfs-master", vol).1["journal"]["head"].clone();
        let r = status("jfs-replica", rvol).1;
        if r["position"] == head {
            return seq(&head);
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not reach {head}: {r}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls until the master's registry file holds a durable position of
/// `seq` for its only replica (the server saves it every two seconds).
fn wait_registry(vol: &Path, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let known: Value = fs::read(vol.join("replicas.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if known[0]["durable"]["seq"] == seq {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the registry does not hold {seq}: {known}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `n` files of `size` incompressible bytes in `dir`.
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

fn sealed_count(vol: &Path) -> usize {
    fs::read_dir(vol.join("journal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

fn first_seq(bin: &str, vol: &Path) -> u64 {
    let (_, s) = status(bin, vol);
    s["journal"]["first_seq"].as_u64().unwrap()
}

/// The decimal names in `VOL/attic`, in order.
fn attic_ids(vol: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = fs::read_dir(vol.join("attic"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    ids.sort();
    ids
}

fn trim(bin: &str, vol: &Path, extra: &[&str]) -> String {
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"trim", &vol];
    for e in extra {
        args.push(e);
    }
    let out = ok(bin, &args);
    eprintln!("$ {bin} trim {} {}\n{out}", vol.display(), extra.join(" "));
    out
}

#[test]
fn trims_keep_what_a_stopped_replica_needs_until_forced() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("master");
    let mnt = dir.path().join("master-mnt");
    let ra = dir.path().join("a");
    fs::create_dir(&mnt).unwrap();
    let out = ok("jfs-master", &[&"init", &vol, &"--segment-size", &"64KiB"]);
    assert!(out.contains("65536"), "{out}");
    let (master, addr) = mount_master(&vol, &mnt);

    // History from before the replica joined: about ten sealed segments.
    write_files(&mnt, "early", 30, 20_000, 1);
    let sealed = sealed_count(&vol);
    assert!(sealed >= 5, "64 KiB segments were sealed: {sealed}");

    ok(
        "jfs-replica",
        &[
            &"init",
            &ra,
            &"--master",
            &addr,
            &"--secret-file",
            &vol.join("secret"),
        ],
    );
    let mut a = follow(&ra);
    let a_at = wait_converged(&vol, &ra);
    wait_registry(&vol, a_at);
    assert!(a.stop().success(), "{}", a.stderr());

    // Much more history while A is stopped.
    write_files(&mnt, "late", 60, 20_000, 2);
    let (_, s) = status("jfs-master", &vol);
    let head = seq(&s["journal"]["head"]);
    assert!(head > a_at + 60, "A is behind: {a_at} of {head}");
    assert_eq!(s["retention"]["first_seq"], 1, "{s}");
    assert_eq!(s["retention"]["policy"]["keeps_everything"], true, "{s}");
    let before_bytes = s["retention"]["history_bytes"].as_u64().unwrap();

    // A small size limit: everything before A's position may go, nothing after.
    let out = ok(
        "jfs-master",
        &[&"retention", &vol, &"--max-size", &"128KiB"],
    );
    assert!(out.contains("max size 128.0 KiB"), "{out}");
    let dry = trim("jfs-master", &vol, &["--dry-run", "--json"]);
    let dry: Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(dry["dry_run"], true, "{dry}");
    let out = trim("jfs-master", &vol, &[]);
    let first = first_seq("jfs-master", &vol);
    assert!(
        first > 1,
        "history from before A's position was trimmed: {out}"
    );
    assert!(
        first <= a_at + 1,
        "A needs {}.. but history starts at {first}: {out}",
        a_at + 1
    );
    assert!(
        out.contains(&format!("holds back {}..", a_at + 1)) && out.contains("--force"),
        "the trim names the replica that holds history back: {out}"
    );
    let (_, s) = status("jfs-master", &vol);
    assert!(s["retention"]["history_bytes"].as_u64().unwrap() < before_bytes);
    // Records A needs are all there: the log reads from A's position on.
    let log = ok(
        "jfs-master",
        &[&"log", &vol, &"--from", &(a_at + 1).to_string()],
    );
    assert_eq!(log.lines().count() as u64, head - a_at);

    // A resumes and ends identical to the master.
    let mut a = follow(&ra);
    let at = wait_converged(&vol, &ra);
    assert_eq!(at, head);
    assert_same_tree(&vol.join("tree"), &ra.join("tree"));
    // While it follows, trim and status go through it.
    let out = trim("jfs-replica", &ra, &["--dry-run"]);
    assert!(out.contains("no retention policy"), "{out}");
    let (_, rs) = status("jfs-replica", &ra);
    assert_eq!(rs["retention"]["policy"]["keeps_everything"], true, "{rs}");
    assert_eq!(rs["retention"]["first_seq"], 1, "{rs}");
    wait_registry(&vol, at);
    assert!(a.stop().success(), "{}", a.stderr());

    // The replica trims its own journal, never past what it applied.
    ok(
        "jfs-replica",
        &[&"retention", &ra, &"--max-size", &"128KiB"],
    );
    let out = trim("jfs-replica", &ra, &[]);
    let rfirst = first_seq("jfs-replica", &ra);
    assert!(rfirst > 1 && rfirst <= at + 1, "{rfirst}: {out}");
    let (_, rs) = status("jfs-replica", &ra);
    assert_eq!(seq(&rs["position"]), at, "{rs}");
    assert_eq!(rs["retention"]["first_seq"], rfirst, "{rs}");

    // A falls behind again; a trim holds, a forced one does not.
    write_files(&mnt, "later", 30, 20_000, 3);
    let out = trim("jfs-master", &vol, &[]);
    assert!(first_seq("jfs-master", &vol) <= at + 1, "{out}");
    let out = trim("jfs-master", &vol, &["--force"]);
    let forced_first = first_seq("jfs-master", &vol);
    assert!(
        forced_first > at + 1,
        "--force trims what A needs ({}..), history starts at {forced_first}: {out}",
        at + 1
    );
    assert!(
        out.contains("re-bootstrap") && out.contains(&format!("at {at}")),
        "the forced trim names the replica it costs: {out}"
    );

    // A's next follow is refused for good, and says what to do.
    let mut a = follow(&ra);
    let st = a.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(3), "{}", a.stderr());
    let err = a.stderr();
    assert!(
        err.contains("history trimmed") && err.contains("jfs-replica bootstrap"),
        "{err}"
    );
    let broken = fs::read_to_string(ra.join("broken")).unwrap();
    assert!(broken.contains("history trimmed"), "{broken}");
    let (code, rs) = status("jfs-replica", &ra);
    assert_eq!(code, 3, "{rs}");

    // A replica whose records are gone holds nothing back any more.
    let out = trim("jfs-master", &vol, &["--dry-run"]);
    assert!(out.contains("has to re-bootstrap"), "{out}");
    assert!(!out.contains("holds back"), "{out}");

    let err = unmount(&mnt, master);
    assert!(err.contains("unmounted"), "{err}");
}

#[test]
fn without_a_policy_trim_removes_nothing_and_with_one_it_prunes_the_attic() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("master");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    ok("jfs-master", &[&"init", &vol, &"--segment-size", &"64KiB"]);
    let (master, _) = mount_master(&vol, &mnt);
    write_files(&mnt, "f", 20, 20_000, 4);
    // Removed nodes go to the attic, named by the seq of the removing record.
    fs::remove_file(mnt.join("f0")).unwrap();
    fs::create_dir(mnt.join("d")).unwrap();
    fs::remove_dir(mnt.join("d")).unwrap();
    std::os::unix::fs::symlink("f1", mnt.join("s")).unwrap();
    fs::remove_file(mnt.join("s")).unwrap();
    fs::rename(mnt.join("f2"), mnt.join("f1")).unwrap();
    let early = attic_ids(&vol);
    assert!(early.len() >= 4, "{early:?}");
    write_files(&mnt, "g", 10, 20_000, 5);
    fs::remove_file(mnt.join("g9")).unwrap();
    let late = *attic_ids(&vol).last().unwrap();
    // Through the mount: nothing goes without a policy.
    let out = trim("jfs-master", &vol, &[]);
    assert!(out.contains("removed no segment"), "{out}");
    assert!(out.contains("no retention policy"), "{out}");
    assert_eq!(first_seq("jfs-master", &vol), 1);
    unmount(&mnt, master);
    let sealed = sealed_count(&vol);
    assert!(sealed >= 5, "{sealed} sealed segments");

    // Unmounted: the same, the volume opened directly.
    let out = trim("jfs-master", &vol, &["--force"]);
    assert!(out.contains("removed no segment"), "{out}");
    assert_eq!(sealed_count(&vol), sealed);
    let out = ok("jfs-master", &[&"status", &vol]);
    assert!(out.contains("retention keep all history"), "{out}");

    // Attic entries of records that go are pruned with them; later ones,
    // and names that are no record's seq, stay.
    let attic = vol.join("attic");
    fs::write(attic.join("3"), b"old").unwrap();
    fs::create_dir(attic.join("4")).unwrap();
    let head = first_seq("jfs-master", &vol)
        + status("jfs-master", &vol).1["journal"]["records"]
            .as_u64()
            .unwrap()
        - 1;
    fs::write(attic.join(head.to_string()), b"new").unwrap();
    fs::write(attic.join("stray"), b"?").unwrap();

    ok(
        "jfs-master",
        &[
            &"retention",
            &vol,
            &"--max-size",
            &"100KiB",
            &"--max-age",
            &"30d",
        ],
    );
    let out = ok("jfs-master", &[&"retention", &vol]);
    assert!(out.contains("max age 30days, max size 100.0 KiB"), "{out}");
    let dry = trim("jfs-master", &vol, &["--dry-run"]);
    assert!(dry.contains("would remove"), "{dry}");
    assert_eq!(sealed_count(&vol), sealed, "a dry run removes nothing");
    assert!(attic.join("3").exists());
    let before = attic_ids(&vol);
    let report: Value = serde_json::from_str(&trim("jfs-master", &vol, &["--json"])).unwrap();
    assert!(report["segments"].as_u64().unwrap() > 0, "{report}");
    let first = report["first_seq"].as_u64().unwrap();
    assert!(
        early.iter().all(|id| *id < first) && late >= first,
        "the early removals' records went, the late one's stayed: {first} {early:?} {late}"
    );
    let gone = before.iter().filter(|id| **id < first).count();
    assert_eq!(report["attic"]["entries"], gone as u64, "{report}");
    assert_eq!(report["attic"]["foreign"][0], "stray", "{report}");
    assert!(!attic.join("3").exists() && !attic.join("4").exists());
    assert!(attic_ids(&vol).iter().all(|id| *id >= first));
    assert!(attic.join(late.to_string()).exists());
    assert!(attic.join(head.to_string()).exists() && attic.join("stray").exists());
    let (_, s) = status("jfs-master", &vol);
    assert_eq!(
        s["retention"]["attic_entries"],
        (before.len() - gone + 1) as u64,
        "{s}"
    );
    assert!(
        s["retention"]["history_bytes"].as_u64().unwrap() <= 100 * 1024,
        "{s}"
    );
    assert_eq!(
        s["retention"]["first_seq"], s["journal"]["first_seq"],
        "{s}"
    );

    // The trimmed volume mounts again and keeps journaling.
    let (master, _) = mount_master(&vol, &mnt);
    fs::write(mnt.join("after"), b"x").unwrap();
    unmount(&mnt, master);
    let log = ok("jfs-master", &[&"log", &vol]);
    assert!(log.contains("after"), "{log}");
}
