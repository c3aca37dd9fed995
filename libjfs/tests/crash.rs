//! Crash test: a child process replaying a long journal into a tree is killed
//! with SIGKILL at random moments. After every kill, reopening the volume
//! (which completes the record that was in flight) must leave a tree equal to
//! the journal materialized at the position the volume reports: nothing lost,
//! nothing applied twice.
//!
//! The child is this test binary itself, started with `CHILD_ENV` set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::materialize::materialize;
use libjfs::record::{FallocateMode, RenameMode, SpecialKind};
use libjfs::volume::JOURNAL_DIR;
use libjfs::{NewNode, Node, Op, RelPath, Role, Timestamp, Volume};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "JFS_CRASH_CHILD_VOLUME";
/// With it, the child takes the tree back to this seq instead.
const REWIND_ENV: &str = "JFS_CRASH_CHILD_REWIND_TO";
const ROUNDS: usize = 50;
const RECORDS: usize = 4000;

/// Runs only as the child: replays the volume to the end of its journal.
#[test]
fn crash_child() {
    let Ok(vol) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut v = Volume::open(Path::new(&vol)).expect("child: open volume");
    match std::env::var(REWIND_ENV) {
        Ok(to) => {
            v.rewind_tree(to.parse().unwrap(), None, |_| {})
                .expect("child: rewind");
        }
        Err(_) => {
            v.replay(None, |_| {}).expect("child: replay");
        }
    }
    v.sync().expect("child: sync");
}

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// Builds a master volume with a long journal of every kind of operation.
/// Operations are tried at random; one the tree refuses is retracted by
/// `commit`, so only valid ones stay in the journal.
fn build_master(path: &Path, seed: u64) -> Volume {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut vol = Volume::init(path, Role::Master).unwrap();
    let mut dirs: Vec<String> = vec![String::new()];
    let mut files: Vec<String> = Vec::new();
    let mut n = 0usize;
    let node = |mode| NewNode {
        mode,
        uid: 1000,
        gid: 100,
    };
    let mut time = 1_700_000_000i64;
    while (vol.head().seq as usize) < RECORDS {
        n += 1;
        time += 1;
        let dir = dirs[rng.random_range(0..dirs.len())].clone();
        let fresh = if dir.is_empty() {
            format!("n{n}")
        } else {
            format!("{dir}/n{n}")
        };
        let pick = |rng: &mut StdRng, v: &Vec<String>| {
            (!v.is_empty()).then(|| v[rng.random_range(0..v.len())].clone())
        };
        let file = pick(&mut rng, &files);
        let op = match rng.random_range(0..100) {
            0..=14 => Op::Create {
                path: p(&fresh),
                node: node(0o644),
            },
            15..=19 => Op::Mkdir {
                path: p(&fresh),
                node: node(0o755),
            },
            20..=44 => match file {
                Some(f) => {
                    let len = [1usize, 100, 4096, 70_000][rng.random_range(0..4)];
                    let offset = rng.random_range(0..200_000u64);
                    let data = (0..len).map(|i| (i as u64 * 31 + n as u64) as u8).collect();
                    Op::Write {
                        path: p(&f),
                        offset,
                        data,
                    }
                }
                None => continue,
            },
            45..=49 => match file {
                Some(f) => Op::Truncate {
                    path: p(&f),
                    size: rng.random_range(0..150_000),
                },
                None => continue,
            },
            50..=54 => match (file, pick(&mut rng, &files)) {
                (Some(a), Some(b)) if a != b => Op::Rename {
                    from: p(&a),
                    to: p(&b),
                    mode: RenameMode::Replace,
                },
                _ => continue,
            },
            55..=59 => match (file, pick(&mut rng, &files)) {
                (Some(a), Some(b)) if a != b => Op::Rename {
                    from: p(&a),
                    to: p(&b),
                    mode: RenameMode::Exchange,
                },
                _ => continue,
            },
            60..=64 => match file {
                Some(f) => Op::Rename {
                    from: p(&f),
                    to: p(&fresh),
                    mode: RenameMode::NoReplace,
                },
                None => continue,
            },
            65..=69 => match file {
                Some(f) => Op::Link {
                    from: p(&f),
                    to: p(&fresh),
                },
                None => continue,
            },
            70..=76 => match file {
                Some(f) => Op::Unlink { path: p(&f) },
                None => continue,
            },
            77..=78 => match dirs.len() {
                1 => continue,
                len => Op::Rmdir {
                    path: p(&dirs[rng.random_range(1..len)]),
                },
            },
            79..=82 => Op::SetAttr {
                node: match file {
                    Some(f) => Node::Path(p(&f)),
                    None => Node::Root,
                },
                mode: Some(rng.random_range(0..0o7777)),
                uid: Some(rng.random_range(0..5)),
                gid: None,
                atime: None,
                mtime: Some(Timestamp::new(time, rng.random_range(0..1_000_000_000))),
            },
            83..=86 => match file {
                Some(f) => Op::SetXattr {
                    node: Node::Path(p(&f)),
                    name: format!("user.k{}", rng.random_range(0..3)).into_bytes(),
                    value: vec![n as u8; rng.random_range(0..300)],
                },
                None => continue,
            },
            87..=88 => match file {
                Some(f) => Op::RemoveXattr {
                    node: Node::Path(p(&f)),
                    name: b"user.k0".to_vec(),
                },
                None => continue,
            },
            89..=91 => match file {
                Some(f) => Op::Fallocate {
                    path: p(&f),
                    mode: FallocateMode::PunchHole,
                    offset: 4096,
                    len: 8192,
                },
                None => continue,
            },
            92..=94 => match (file, pick(&mut rng, &files)) {
                (Some(a), Some(b)) if a != b => Op::CopyRange {
                    src: p(&a),
                    src_offset: 0,
                    dst: p(&b),
                    dst_offset: 100,
                    len: 1000,
                },
                _ => continue,
            },
            95..=96 => Op::Symlink {
                path: p(&fresh),
                target: b"../somewhere".to_vec(),
                uid: 3,
                gid: 4,
            },
            _ => Op::Mknod {
                path: p(&fresh),
                kind: SpecialKind::Fifo,
                node: node(0o600),
            },
        };
        let mtimes = libjfs::record::implied_mtimes(&op, Timestamp::new(time, n as u32));
        if let Err(e) = vol.commit_with(Timestamp::new(time, 0), op.clone(), mtimes) {
            // Refused (the tree did not fit the op) and retracted: try another.
            assert!(
                matches!(&e, libjfs::VolumeError::Apply(a) if a.is_refusal()),
                "{op} failed: {e:?}"
            );
            continue;
        }
        match op {
            Op::Create { .. } => files.push(fresh),
            Op::Mkdir { .. } => dirs.push(fresh),
            Op::Rename {
                from,
                to,
                mode: RenameMode::Replace,
            } => {
                let (from, to) = (lossy(&from), lossy(&to));
                files.retain(|f| *f != from && *f != to);
                files.push(to);
            }
            Op::Rename {
                from,
                to,
                mode: RenameMode::NoReplace,
            } => {
                files.retain(|f| *f != lossy(&from));
                files.push(lossy(&to));
            }
            Op::Link { .. } => files.push(fresh),
            Op::Unlink { path } => files.retain(|f| *f != lossy(&path)),
            Op::Rmdir { path } => dirs.retain(|d| *d != lossy(&path)),
            _ => {}
        }
    }
    vol.sync().unwrap();
    vol
}

fn lossy(p: &RelPath) -> String {
    String::from_utf8_lossy(p.as_bytes()).into_owned()
}

/// A replica volume holding a copy of `master`'s journal and an empty tree.
fn fresh_replica(master: &Path, path: &Path, id: libjfs::VolumeId) -> PathBuf {
    drop(Volume::init_with(path, Role::Replica, id, b"secret").unwrap());
    let jdir = path.join(JOURNAL_DIR);
    for e in std::fs::read_dir(&jdir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for e in std::fs::read_dir(master.join(JOURNAL_DIR)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), jdir.join(e.file_name())).unwrap();
    }
    path.to_owned()
}

fn spawn_child(vol: &Path) -> std::process::Child {
    spawn_child_with(vol, None)
}

fn spawn_child_with(vol: &Path, rewind_to: Option<u64>) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if let Some(to) = rewind_to {
        cmd.env(REWIND_ENV, to.to_string());
    }
    cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, vol)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills the child if the test fails half-way.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn kill_9_while_applying_never_loses_or_doubles_a_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let master_path = dir.path().join("master");
    let master = build_master(&master_path, 7);
    let head = master.head();
    let id = master.id();
    drop(master);

    // How long an uninterrupted replay takes, to spread the kills over it.
    let calib = fresh_replica(&master_path, &dir.path().join("calib"), id);
    let t = Instant::now();
    let out = spawn_child(&calib).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = t.elapsed();
    eprintln!(
        "{} records; an uninterrupted replay takes {full:?}",
        head.seq
    );
    assert_eq!(Volume::open(&calib).unwrap().applied(), head);

    let mut rng = StdRng::seed_from_u64(42);
    let mut replica_no = 0;
    let mut replica = fresh_replica(&master_path, &dir.path().join("r0"), id);
    let mut killed_mid_run = 0;
    let mut round = 0;
    while killed_mid_run < ROUNDS {
        round += 1;
        assert!(
            round < ROUNDS * 4,
            "too few kills landed while the child was running"
        );
        let mut child = KillOnDrop(Some(spawn_child(&replica)));
        let wait = Duration::from_micros(rng.random_range(0..full.as_micros().max(1000) as u64));
        std::thread::sleep(wait);
        let c = child.0.as_mut().unwrap();
        if c.try_wait().unwrap().is_none() {
            c.kill().unwrap();
            killed_mid_run += 1;
        }
        let c = child.0.take().unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success() || out.status.code().is_none(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Reopening completes the record in flight; the tree must then be
        // exactly the journal replayed to the reported position.
        let applied = Volume::open(&replica).unwrap().applied();
        let expect = dir.path().join(format!("expect-{round}"));
        materialize(&master_path, applied.seq, &expect, |_| {}).unwrap();
        // Before record 1 (which sets the root) the root's mtime is just when
        // each directory was made.
        let opts = CompareOptions {
            ignore_root_mtime: applied.seq == 0,
            ..CompareOptions::default()
        };
        let diffs = compare_trees(&replica.join("tree"), &expect, &opts).unwrap();
        assert!(
            diffs.is_empty(),
            "round {round}: after a kill at {applied} the tree differs:\n{}",
            diffs
                .iter()
                .take(20)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::fs::remove_dir_all(&expect).unwrap();

        if applied == head {
            // This replica is done; start over so kills keep landing mid-journal.
            std::fs::remove_dir_all(&replica).unwrap();
            replica_no += 1;
            replica = fresh_replica(&master_path, &dir.path().join(format!("r{replica_no}")), id);
        }
    }
    // And finishing after all those kills reaches the master's tree exactly.
    let mut v = Volume::open(&replica).unwrap();
    v.replay(None, |_| {}).unwrap();
    assert_eq!(v.applied(), head);
    let diffs = compare_trees(
        &v.tree_path(),
        &master_path.join("tree"),
        &CompareOptions::default(),
    )
    .unwrap();
    assert!(
        diffs.is_empty(),
        "final tree differs from the master's: {diffs:#?}"
    );
    eprintln!("{killed_mid_run} kills mid-replay over {round} rounds ({replica_no} replicas finished); full replay {full:?}");
}

/// A replica's rewind killed at random moments: reopening finishes the undo
/// step in flight, and the tree is then the journal at the position it reports.
#[test]
fn kill_9_while_a_replica_rewinds_never_leaves_it_between_records() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    const KILLS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let master_path = dir.path().join("master");
    let master = build_master(&master_path, 11);
    let head = master.head();
    let id = master.id();
    drop(master);
    let to = head.seq / 4;
    let replica = fresh_replica(&master_path, &dir.path().join("r"), id);
    let forward = |replica: &Path| {
        let mut v = Volume::open(replica).unwrap();
        v.replay(None, |_| {}).unwrap();
        v.sync().unwrap();
    };
    forward(&replica);
    let t = Instant::now();
    let out = spawn_child_with(&replica, Some(to))
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = t.elapsed();
    assert_eq!(Volume::open(&replica).unwrap().applied().seq, to);
    forward(&replica);

    let mut rng = StdRng::seed_from_u64(5);
    let (mut kills, mut round) = (0, 0);
    while kills < KILLS {
        round += 1;
        assert!(
            round < KILLS * 4,
            "too few kills landed while the child rewound"
        );
        let mut child = KillOnDrop(Some(spawn_child_with(&replica, Some(to))));
        std::thread::sleep(Duration::from_micros(
            rng.random_range(0..full.as_micros().max(1000) as u64),
        ));
        let c = child.0.as_mut().unwrap();
        if c.try_wait().unwrap().is_none() {
            c.kill().unwrap();
            kills += 1;
        }
        let out = child.0.take().unwrap().wait_with_output().unwrap();
        assert!(
            out.status.success() || out.status.code().is_none(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Reopening completes the undo step in flight: the tree is then
        // exactly the journal at the position the volume reports.
        let applied = Volume::open(&replica).unwrap().applied();
        assert!((to..=head.seq).contains(&applied.seq), "{applied}");
        let expect = dir.path().join(format!("expect-{round}"));
        materialize(&master_path, applied.seq, &expect, |_| {}).unwrap();
        let diffs =
            compare_trees(&replica.join("tree"), &expect, &CompareOptions::default()).unwrap();
        assert!(
            diffs.is_empty(),
            "round {round}: after a kill mid-rewind at {applied} the tree differs:\n{}",
            diffs
                .iter()
                .take(20)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::fs::remove_dir_all(&expect).unwrap();
        if applied.seq == to {
            forward(&replica);
        }
    }
    eprintln!("{kills} kills mid-rewind over {round} rounds; a whole rewind takes {full:?}");
}
