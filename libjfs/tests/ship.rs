//! Shipping without FUSE or other processes: a server over a master volume
//! and followers in this process, on loopback.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::journal::{Chunk, Tail, TailError};
use libjfs::ship::follower::{self, FollowConfig, FollowError, FollowState, Hooks, Phase};
use libjfs::ship::server::{Server, ServerConfig};
use libjfs::ship::{Head, HeadSender};
use libjfs::volume::{Target, JOURNAL_DIR, SECRET_FILE};
use libjfs::{JournalConfig, NewNode, Op, Position, RelPath, Role, Volume};
use tokio::sync::watch;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

const NODE: NewNode = NewNode {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

/// A master volume with small segments (so they seal often), its server,
/// and the head the server ships.
struct Master {
    vol: Volume,
    head: HeadSender,
    server: Server,
    path: PathBuf,
    files: usize,
}

impl Master {
    fn new(dir: &Path) -> Master {
        let path = dir.join("master");
        Volume::init(&path, Role::Master).unwrap();
        let vol = Volume::open_with(
            &path,
            JournalConfig {
                segment_bytes: 16 << 10,
                zstd_level: Some(1),
            },
        )
        .unwrap();
        let (head, rx) = watch::channel(Head::of(&vol));
        let server = Server::start(ServerConfig {
            listen: "127.0.0.1:0".into(),
            journal_dir: path.join(JOURNAL_DIR),
            volume_id: vol.id(),
            key: libjfs::ship::read_key(&path.join(SECRET_FILE)).unwrap(),
            head: rx,
            registry_file: None,
            log_name: "test-master",
        })
        .unwrap();
        Master {
            vol,
            head,
            server,
            path,
            files: 0,
        }
    }

    fn commit(&mut self, op: Op) {
        self.vol.commit(op).unwrap();
        self.head.send_replace(Head::of(&self.vol));
    }

    /// `n` new files of a few hundred bytes each, some renamed and removed.
    fn work(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.files;
            self.files += 1;
            let name = p(&format!("f{i}"));
            self.commit(Op::Create {
                path: name.clone(),
                node: NODE,
            });
            self.commit(Op::Write {
                path: name.clone(),
                offset: 0,
                data: format!("file {i} ").repeat(40).into_bytes(),
            });
            if i % 7 == 3 {
                self.commit(Op::Rename {
                    from: name,
                    to: p(&format!("r{i}")),
                    mode: libjfs::record::RenameMode::Replace,
                });
            } else if i % 11 == 5 {
                self.commit(Op::Unlink { path: name });
            }
        }
    }

    fn key(&self) -> Vec<u8> {
        libjfs::ship::read_key(&self.path.join(SECRET_FILE)).unwrap()
    }
}

/// A replica volume following the master on a thread of its own.
struct Follower {
    vol: Arc<Mutex<Volume>>,
    state: Arc<Mutex<FollowState>>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<Result<(), FollowError>>>,
}

impl Follower {
    fn start(path: &Path, master: &Master, key: Vec<u8>, until: Option<Target>) -> Follower {
        if !path.exists() {
            let id = master.vol.id();
            Volume::init_with(path, Role::Replica, id, &key).unwrap();
        }
        let vol = Arc::new(Mutex::new(Volume::open(path).unwrap()));
        let addr = master.server.local_addr().to_string();
        let state = Arc::new(Mutex::new(FollowState::new(&addr, until.clone())));
        let (stop, stop_rx) = watch::channel(false);
        let cfg = FollowConfig {
            master: addr,
            key,
            replica_id: "test".into(),
            until,
            listen: None,
            pin: None,
        };
        let thread = {
            let (vol, state) = (vol.clone(), state.clone());
            std::thread::spawn(move || follower::follow(vol, cfg, Hooks::default(), state, stop_rx))
        };
        Follower {
            vol,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn applied(&self) -> Position {
        self.vol.lock().unwrap().applied()
    }

    fn wait_for(&self, pos: Position) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.applied() != pos {
            let s = self.state.lock().unwrap().clone();
            assert!(
                Instant::now() < deadline,
                "replica at {} never reached {pos}: {:?} {:?}",
                self.applied(),
                s.phase,
                s.reason
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The state is told after the position moves: wait for it too.
    fn wait_phase(&self, phase: Phase) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.lock().unwrap().phase != phase {
            assert!(
                Instant::now() < deadline,
                "still {:?}, not {phase:?}",
                self.state.lock().unwrap().phase
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) -> Result<(), FollowError> {
        let _ = self.stop.send(true);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn same_trees(a: &Path, b: &Path) {
    let diffs = compare_trees(a, b, &CompareOptions::default()).unwrap();
    assert!(diffs.is_empty(), "trees differ: {diffs:#?}");
}

#[test]
fn a_replica_catches_up_through_sealed_segments_then_follows_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Master::new(dir.path());
    m.work(200);
    assert!(
        m.vol
            .journal()
            .segments()
            .iter()
            .filter(|s| s.sealed)
            .count()
            > 3,
        "the test needs sealed segments to ship"
    );
    let r = Follower::start(&dir.path().join("replica"), &m, m.key(), None);
    r.wait_for(m.vol.head());
    // Live: every change arrives while it follows, across more seals.
    for _ in 0..5 {
        m.work(20);
        r.wait_for(m.vol.head());
    }
    r.wait_phase(Phase::Following);
    same_trees(&m.path.join("tree"), &r.vol.lock().unwrap().tree_path());
    // The replica's journal is the master's, record for record.
    let ours: Vec<_> = r
        .vol
        .lock()
        .unwrap()
        .journal()
        .read_from(1)
        .unwrap()
        .map(|e| e.unwrap().position)
        .collect();
    let theirs: Vec<_> = m
        .vol
        .journal()
        .read_from(1)
        .unwrap()
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(ours, theirs);
    r.finish().unwrap();
}

#[test]
fn a_restarted_replica_resumes_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Master::new(dir.path());
    let rpath = dir.path().join("replica");
    m.work(50);
    let r = Follower::start(&rpath, &m, m.key(), None);
    r.wait_for(m.vol.head());
    let before = r.applied();
    r.finish().unwrap();
    m.work(50);
    let r = Follower::start(&rpath, &m, m.key(), None);
    r.wait_for(m.vol.head());
    assert!(before.seq < m.vol.head().seq);
    same_trees(&m.path.join("tree"), &r.vol.lock().unwrap().tree_path());
    // The server knows the replica by its id, with what it acknowledged.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = m.server.replicas();
        let me = &list[0];
        if me["acked"]["seq"] == m.vol.head().seq {
            assert_eq!(me["id"], "test");
            assert_eq!(me["connected"], true);
            assert_eq!(me["lag"]["records"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "never acknowledged: {list}");
        std::thread::sleep(Duration::from_millis(10));
    }
    r.finish().unwrap();
}

#[test]
fn pinned_at_a_snapshot_it_holds_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Master::new(dir.path());
    m.work(30);
    let v1 = m.vol.create_snapshot("v1").unwrap();
    m.head.send_replace(Head::of(&m.vol));
    m.work(30);
    let r = Follower::start(
        &dir.path().join("replica"),
        &m,
        m.key(),
        Some(Target::Snapshot("v1".into())),
    );
    r.wait_for(v1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.applied(), v1, "it went past the pin");
    assert_eq!(
        r.vol.lock().unwrap().head(),
        v1,
        "it journaled past the pin"
    );
    r.wait_phase(Phase::Pinned);
    r.finish().unwrap();
}

#[test]
fn a_wrong_key_breaks_the_replica_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Master::new(dir.path());
    m.work(10);
    let r = Follower::start(
        &dir.path().join("replica"),
        &m,
        b"0123456789abcdef0123456789abcdef".to_vec(),
        None,
    );
    let vol = r.vol.clone();
    let err = r.thread_result();
    assert!(err.contains("wrong key"), "{err}");
    assert!(dir.path().join("replica/broken").exists());
    assert_eq!(vol.lock().unwrap().applied(), Position::ZERO);
}

#[test]
fn a_diverged_replica_is_refused_and_broken() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Master::new(dir.path());
    let rpath = dir.path().join("replica");
    m.work(10);
    let r = Follower::start(&rpath, &m, m.key(), None);
    r.wait_for(m.vol.head());
    r.finish().unwrap();
    // The replica's journal gets a record the master never had.
    {
        let mut v = Volume::open(&rpath).unwrap();
        v.commit(Op::Mkdir {
            path: p("intruder"),
            node: NewNode {
                mode: 0o755,
                ..NODE
            },
        })
        .unwrap();
        v.sync().unwrap();
    }
    m.work(5);
    let before = Volume::open(&rpath).unwrap().applied();
    let r = Follower::start(&rpath, &m, m.key(), None);
    let vol = r.vol.clone();
    let err = r.thread_result();
    assert!(err.contains("diverged"), "{err}");
    assert_eq!(vol.lock().unwrap().applied(), before, "the tree moved");
    assert!(rpath.join("broken").exists());
}

trait ThreadResult {
    fn thread_result(self) -> String;
}

impl ThreadResult for Follower {
    /// Waits for the follower to end on its own; returns its error text.
    fn thread_result(mut self) -> String {
        let t = self.thread.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "the follower kept going");
            std::thread::sleep(Duration::from_millis(10));
        }
        match t.join().unwrap() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("the follower ended without an error"),
        }
    }
}

#[test]
fn the_tail_follows_seals_and_never_passes_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Master::new(dir.path());
    m.work(5);
    let jdir = m.path.join(JOURNAL_DIR);
    let mut tail = Tail::new(&jdir, m.vol.id(), Position::ZERO).unwrap();
    let mut got = Vec::new();
    for round in 0..40 {
        m.work(3);
        // A limit below the head: nothing past it comes out.
        let limit = m.vol.head().seq - (round % 3);
        while let Some(chunk) = tail.next(limit, 4096, None).unwrap() {
            match chunk {
                Chunk::Records {
                    prev, records, end, ..
                } => {
                    let mut at = prev;
                    for r in &records {
                        at = at.next(r);
                        got.push(at);
                    }
                    assert_eq!(at, end);
                }
                Chunk::Sealed { path, header, .. } => {
                    let (_, records) = libjfs::journal::sealed_records(&path, m.vol.id()).unwrap();
                    let mut at = header.start();
                    for r in &records {
                        at = at.next(r);
                        got.push(at);
                    }
                }
            }
            assert!(tail.position().seq <= limit);
        }
        assert_eq!(tail.position().seq, limit);
    }
    let want: Vec<_> = m
        .vol
        .journal()
        .read_from(1)
        .unwrap()
        .map(|e| e.unwrap().position)
        .take(got.len())
        .collect();
    assert_eq!(got, want);
    // A tail that starts later, where a sealed segment begins, gets it whole
    // (once the seal, which runs on a thread of its own, is done).
    m.vol.journal_mut().seal().unwrap();
    let seg = m.vol.journal().segments()[1].clone();
    let start = m.vol.journal().position_at(seg.first_seq - 1).unwrap();
    let mut tail = Tail::new(&jdir, m.vol.id(), start).unwrap();
    match tail.next(u64::MAX, 4096, None).unwrap() {
        Some(Chunk::Sealed { header, .. }) => assert_eq!(header.first_seq, seg.first_seq),
        other => panic!("expected a whole segment, got {other:?}"),
    }
}

#[test]
fn a_tail_that_starts_inside_a_sealed_segment_reads_it_in_small_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Master::new(dir.path());
    m.work(60);
    // Segments are sealed on a thread of their own: wait for the seals,
    // then leave some records in the active segment.
    m.vol.journal_mut().seal().unwrap();
    m.work(10);
    let jdir = m.path.join(JOURNAL_DIR);
    let segments = m.vol.journal().segments();
    let seg = segments
        .iter()
        .find(|s| s.sealed && s.last_seq - s.first_seq >= 20)
        .expect("a sealed segment of 20 records or more")
        .clone();
    let all: Vec<(Position, Vec<u8>)> = {
        let j = m.vol.journal();
        let mut at = Position::ZERO;
        j.read_from(1)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let bytes = e.record.encode().unwrap();
                at = at.next(&bytes);
                assert_eq!(at, e.position);
                (e.position, bytes)
            })
            .collect()
    };
    let pos = |seq: u64| {
        if seq == 0 {
            Position::ZERO
        } else {
            all[seq as usize - 1].0
        }
    };
    // Start five records into the segment; stop ten records later, then go on.
    let start = seg.first_seq + 4;
    let limit = start + 10;
    let mut tail = Tail::new(&jdir, m.vol.id(), pos(start)).unwrap();
    let mut got = Vec::new();
    let mut chunks = 0;
    for limit in [limit, m.vol.head().seq] {
        while let Some(chunk) = tail.next(limit, 1024, None).unwrap() {
            chunks += 1;
            match chunk {
                Chunk::Records {
                    prev, records, end, ..
                } => {
                    assert_eq!(prev, pos(start + got.len() as u64));
                    // Inside the sealed segment a chunk never passes the
                    // size asked for (the active one may end a record past it).
                    let bytes: usize = records.iter().map(Vec::len).sum();
                    if end.seq <= seg.last_seq {
                        assert!(
                            records.len() == 1 || bytes <= 1024,
                            "{bytes} bytes in a chunk"
                        );
                    }
                    got.extend(records);
                    assert_eq!(end, pos(start + got.len() as u64));
                }
                Chunk::Sealed { path, .. } => {
                    let (_, records) = libjfs::journal::sealed_records(&path, m.vol.id()).unwrap();
                    got.extend(records);
                }
            }
            assert!(tail.position().seq <= limit);
        }
        assert_eq!(tail.position(), pos(limit));
    }
    let want: Vec<Vec<u8>> = all[start as usize..]
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the records differ from the journal's");
    assert!(chunks > 3, "{chunks} chunks");
}

#[test]
fn a_tail_refuses_positions_off_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Master::new(dir.path());
    m.work(10);
    let jdir = m.path.join(JOURNAL_DIR);
    let head = m.vol.head();
    let ahead = Position {
        seq: head.seq + 1,
        chain: head.chain,
    };
    assert!(matches!(
        Tail::new(&jdir, m.vol.id(), ahead),
        Err(TailError::Ahead { .. })
    ));
    let other = Position {
        seq: 5,
        chain: [0xAB; 32],
    };
    assert!(matches!(
        Tail::new(&jdir, m.vol.id(), other),
        Err(TailError::Diverged { .. })
    ));
}
