//! A replica's side of replication.
//!
//! [`follow`] connects to the server, proves the key, states the replica's
//! position, and then for every batch or sealed segment it receives: checks
//! that it continues the replica's own chain, journals it durably, applies
//! it, and acknowledges. A dropped connection is retried with backoff from
//! wherever the journal is; a refusal that retrying cannot cure (diverged,
//! trimmed history, wrong key) leaves the replica *broken*, with the reason
//! in `VOL/broken`, until an operator acts.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::wire::{self, Message, Refusal, Side, Until, WireError};
use super::{Head, HeadSender};
use crate::format::VolumeId;
use crate::inspect::position_json;
use crate::journal::Entry;
use crate::position::Position;
use crate::record::{Marker, Op, Timestamp};
use crate::volume::{Target, VolumeError};
use crate::Volume;

/// File in the volume that holds why the replica is broken.
pub const BROKEN_FILE: &str = "broken";
/// Setting: the address of the server this replica follows.
pub const SETTING_MASTER: &str = "master";
/// Setting: this replica's id, stable across restarts.
pub const SETTING_REPLICA_ID: &str = "replica_id";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server sends a heartbeat at least every half second; silence this
/// long means the connection is dead.
const SILENCE: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Journaled records are made durable this often while following.
const SYNC_EVERY: Duration = Duration::from_millis(10);
/// The tree and position are made durable this often while following.
const SETTLE_EVERY: Duration = Duration::from_secs(5);

/// What the replica is doing, for status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    CatchingUp,
    Following,
    Pinned,
    /// Applying failed for a reason that may pass (a full disk); retrying.
    Stalled,
    Broken,
    Stopped,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::CatchingUp => "catching-up",
            Phase::Following => "following",
            Phase::Pinned => "pinned",
            Phase::Stalled => "stalled",
            Phase::Broken => "broken",
            Phase::Stopped => "stopped",
        }
    }
}

/// The replica's state as `status` shows it.
#[derive(Clone, Debug)]
pub struct FollowState {
    pub phase: Phase,
    /// Why it is stalled or broken, or the last connection error.
    pub reason: Option<String>,
    pub master: String,
    pub connected: bool,
    /// The server's head as last heard.
    pub master_head: Option<Position>,
    pub last_heard: Option<Timestamp>,
    /// When the replica last had everything the server had.
    pub caught_up_at: Option<Timestamp>,
    /// The position it holds at, once known.
    pub pinned_at: Option<Position>,
    pub until: Option<Target>,
}

impl FollowState {
    pub fn new(master: &str, until: Option<Target>) -> FollowState {
        FollowState {
            phase: Phase::Connecting,
            reason: None,
            master: master.to_owned(),
            connected: false,
            master_head: None,
            last_heard: None,
            caught_up_at: None,
            pinned_at: None,
            until,
        }
    }

    /// Lag behind the server's head as last heard: records and seconds.
    pub fn lag(&self, applied: Position) -> (Option<u64>, f64) {
        let records = self.master_head.map(|h| h.seq.saturating_sub(applied.seq));
        let seconds = match (records, self.caught_up_at) {
            (Some(0), _) => 0.0,
            (_, Some(t)) => seconds_since(t),
            (_, None) => 0.0, // never started
        };
        (records, seconds)
    }

    pub fn to_json(&self, applied: Position) -> Value {
        let (records, seconds) = self.lag(applied);
        json!({
            "state": self.phase.as_str(),
            "reason": self.reason,
            "master": {
                "address": self.master,
                "connected": self.connected,
                "position": self.master_head.map(position_json),
                "last_heard": self.last_heard.map(|t| t.to_rfc3339()),
            },
            "lag": { "records": records, "seconds": seconds },
            "until": self.until.as_ref().map(|t| match t {
                Target::Seq(s) => s.to_string(),
                Target::Snapshot(n) => n.clone(),
            }),
            "pinned_at": self.pinned_at.map(position_json),
        })
    }
}

fn seconds_since(t: Timestamp) -> f64 {
    let now = Timestamp::now();
    ((now.sec - t.sec) as f64 + (now.nsec as f64 - t.nsec as f64) / 1e9).max(0.0)
}

/// How to follow.
pub struct FollowConfig {
    pub master: String,
    pub key: Vec<u8>,
    pub replica_id: String,
    pub until: Option<Target>,
    /// Where this replica serves others, told to the server for its status.
    pub listen: Option<String>,
    /// A pin that can move while following (see [`repin`]); it replaces
    /// `until` from the start.
    pub pin: Option<watch::Receiver<Option<Target>>>,
}

/// Told each operation once it is applied (or undone).
pub type OnApplied = Box<dyn FnMut(&Op) + Send>;

/// Who else must know when records land.
#[derive(Default)]
pub struct Hooks {
    /// Held for writing while a record is applied (the read-only mount reads under it).
    pub gate: Option<Arc<RwLock<()>>>,
    /// Told each applied operation, after the gate is released.
    pub applied: Option<OnApplied>,
    /// Receives the new head after each applied chunk (for replicas of this replica).
    pub head: Option<HeadSender>,
}

/// Why following ended for good.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("broken: {0}")]
    Broken(String),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("{0}")]
    Setup(String),
}

/// What ended one connection.
enum End {
    /// Asked to stop.
    Stopped,
    /// Worth retrying: the connection dropped, the disk was full, ...
    Retry(String),
    /// Not worth retrying.
    Fatal(String),
    /// The pin moved: connect again at once with the new one.
    Repin,
}

impl From<WireError> for End {
    fn from(e: WireError) -> End {
        End::Retry(e.to_string())
    }
}

/// Follows the server until `stop` turns true (`Ok`) or the replica breaks.
pub fn follow(
    vol: Arc<Mutex<Volume>>,
    mut cfg: FollowConfig,
    mut hooks: Hooks,
    state: Arc<Mutex<FollowState>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), FollowError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FollowError::Setup(format!("start the network runtime: {e}")))?;
    let root = {
        let v = lock(&vol);
        // Until it hears otherwise, the replica is as fresh as its newest record.
        let newest = match v.applied().seq {
            0 => None,
            seq => v
                .journal()
                .read_from(seq)
                .ok()
                .and_then(|mut r| r.next())
                .and_then(|e| e.ok())
                .map(|e| e.record.time),
        };
        set(&state, |s| {
            s.caught_up_at
                .get_or_insert(newest.unwrap_or_else(Timestamp::now));
        });
        v.path().to_owned()
    };
    let mut pin = cfg.pin.take();
    let result = runtime.block_on(async {
        let mut backoff = BACKOFF_MIN;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            set(&state, |s| {
                s.connected = false;
                if s.phase != Phase::Stalled {
                    s.phase = Phase::Connecting;
                }
            });
            let mut progressed = false;
            let until = match &mut pin {
                Some(pin) => pin.borrow_and_update().clone(),
                None => cfg.until.clone(),
            };
            set(&state, |s| {
                if s.until != until {
                    s.until = until.clone();
                    s.pinned_at = None;
                }
            });
            match session(
                &vol,
                &cfg,
                &until,
                pin.as_mut(),
                &mut hooks,
                &state,
                &mut stop,
                &mut progressed,
            )
            .await
            {
                End::Stopped => return Ok(()),
                End::Repin => continue,
                End::Fatal(reason) => return Err(FollowError::Broken(reason)),
                End::Retry(reason) => {
                    eprintln!("jfs-replica: {reason}; retrying in {backoff:?}");
                    set(&state, |s| {
                        s.connected = false;
                        // A stall keeps its own reason (set with the phase).
                        if s.phase != Phase::Stalled {
                            s.reason = Some(reason);
                        }
                    });
                }
            }
            if progressed {
                backoff = BACKOFF_MIN;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    let mut v = lock(&vol);
    let synced = v.sync();
    drop(v);
    match &result {
        Err(FollowError::Broken(reason)) => {
            let _ = std::fs::write(root.join(BROKEN_FILE), format!("{reason}\n"));
            set(&state, |s| {
                s.phase = Phase::Broken;
                s.reason = Some(reason.clone());
                s.connected = false;
            });
        }
        _ => set(&state, |s| {
            s.phase = Phase::Stopped;
            s.connected = false;
        }),
    }
    synced?;
    result
}

fn lock(vol: &Mutex<Volume>) -> std::sync::MutexGuard<'_, Volume> {
    vol.lock().unwrap_or_else(|p| p.into_inner())
}

fn set(state: &Mutex<FollowState>, f: impl FnOnce(&mut FollowState)) {
    f(&mut state.lock().unwrap_or_else(|p| p.into_inner()));
}

/// What a refusal means for the replica: only `Busy` is worth retrying.
/// The text is the reason as an operator should read it.
fn refused(server: &str, reason: Refusal, detail: &str) -> End {
    let hint = match reason {
        Refusal::WrongKey => " (VOL/secret is not the key of the volume the server serves)",
        Refusal::Diverged => " (this replica's journal is not the server's history)",
        Refusal::Trimmed => {
            " (history trimmed: the server no longer holds the records this replica needs; \
             rebuild it from a replica that follows with --listen: \
             jfs-replica bootstrap VOL --from ADDR, or from an image: --image FILE)"
        }
        _ => "",
    };
    let text = format!("refused by {server}: {}: {detail}{hint}", reason.as_str());
    if reason == Refusal::Busy {
        End::Retry(text)
    } else {
        End::Fatal(text)
    }
}

/// Connects and proves the key both ways. Returns the halves, the volume the
/// server serves and its head.
async fn handshake(
    server: &str,
    key: &[u8],
    volume: Option<VolumeId>,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, VolumeId, Position), End> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| {
            End::Retry(format!(
                "connect to {server}: no answer within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| End::Retry(format!("connect to {server}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let nonce = wire::nonce();
    wire::write(
        &mut wr,
        &Message::Hello {
            version: wire::PROTOCOL_VERSION,
            volume,
            nonce,
        },
    )
    .await?;
    let refused = |m: Message| match m {
        Message::Refused { reason, detail } => refused(server, reason, &detail),
        other => End::Retry(format!(
            "{server} sent {} during the handshake",
            super::server::variant(&other)
        )),
    };
    let (served, server_nonce) = match wire::read_within(&mut rd, SILENCE).await? {
        Message::Challenge { volume, nonce } => (volume, nonce),
        other => return Err(refused(other)),
    };
    if volume.is_some_and(|v| v != served) {
        return Err(End::Fatal(format!(
            "{server} serves volume {served}, not this replica's {}",
            volume.expect("checked")
        )));
    }
    let mac = wire::proof(key, Side::Replica, served, &nonce, &server_nonce);
    wire::write(&mut wr, &Message::Proof { mac }).await?;
    let (mac, head) = match wire::read_within(&mut rd, SILENCE).await? {
        Message::Welcome { mac, head } => (mac, head),
        other => return Err(refused(other)),
    };
    if !wire::check_proof(key, Side::Server, served, &nonce, &server_nonce, &mac) {
        return Err(End::Fatal(format!(
            "{server} failed to prove it holds the volume's key; not following it"
        )));
    }
    Ok((rd, wr, served, head))
}

/// Connects to `server` and proves the key both ways, as every
/// conversation starts. Returns the halves, the volume served and its head.
pub(super) async fn connect(
    server: &str,
    key: &[u8],
    volume: Option<VolumeId>,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, VolumeId, Position), String> {
    handshake(server, key, volume).await.map_err(|e| match e {
        End::Retry(e) | End::Fatal(e) => e,
        End::Stopped | End::Repin => "stopped".into(),
    })
}

/// Asks `server` which volume it serves, proving both sides hold `key`.
/// What `jfs-replica init` does before it creates the volume.
pub fn join(server: &str, key: &[u8]) -> Result<(VolumeId, Position), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        match handshake(server, key, None).await {
            Ok((_rd, mut wr, volume, head)) => {
                let _ = wire::write(&mut wr, &Message::Bye).await;
                Ok((volume, head))
            }
            Err(End::Retry(e) | End::Fatal(e)) => Err(e),
            Err(End::Stopped | End::Repin) => Err("stopped".into()),
        }
    })
}

/// The server holds at least `at`. Noted before applying, so that a replica
/// that stalls applying still shows how far behind it is.
fn saw(state: &Mutex<FollowState>, at: Position) {
    set(state, |s| {
        if s.master_head.is_none_or(|h| h.seq < at.seq) {
            s.master_head = Some(at);
        }
    });
}

/// Creates a replica volume at `path` of the volume `server` serves, after
/// both sides proved they hold `key`; it remembers the server and gets an
/// id of its own. Returns the volume, its id and the server's head.
pub fn init_replica(
    path: &Path,
    server: &str,
    key: &[u8],
) -> Result<(Volume, String, Position), FollowError> {
    let (volume, head) = join(server, key).map_err(FollowError::Setup)?;
    let v = Volume::init_with(path, crate::Role::Replica, volume, key)?;
    let id = hex::encode(&wire::nonce()[..8]);
    v.set_setting(SETTING_MASTER, server)?;
    v.set_setting(SETTING_REPLICA_ID, &id)?;
    Ok((v, id, head))
}

/// The seq a target names in the replica's own journal, if it is there yet.
fn resolve(vol: &Volume, target: &Target) -> Option<u64> {
    crate::inspect::resolve_target(vol.journal(), target).ok()
}

#[allow(clippy::too_many_arguments)]
async fn session(
    vol: &Arc<Mutex<Volume>>,
    cfg: &FollowConfig,
    until_target: &Option<Target>,
    mut pin: Option<&mut watch::Receiver<Option<Target>>>,
    hooks: &mut Hooks,
    state: &Arc<Mutex<FollowState>>,
    stop: &mut watch::Receiver<bool>,
    progressed: &mut bool,
) -> End {
    // Records journaled but not applied (a crash, a full disk) go first.
    let (id, from, mut until_seq) = {
        let mut v = lock(vol);
        let until_seq = until_target.as_ref().map(|t| resolve(&v, t));
        // What the journal holds came from the server, which holds it still.
        saw(state, v.head());
        // Nothing is applied before it is durable in the journal.
        let durable = v.journal().sync().map_err(VolumeError::from);
        if let Err(e) = durable.and_then(|_| apply(&mut v, hooks, until_seq, &[])) {
            return stalled_or_broken(state, e);
        }
        (v.id(), v.head(), until_seq)
    };
    let (mut rd, mut wr, _, head) = match handshake(&cfg.master, &cfg.key, Some(id)).await {
        Ok(h) => h,
        Err(e) => return e,
    };
    let until = match (until_target, until_seq) {
        (None, _) => Until::Head,
        (Some(_), Some(Some(seq))) => Until::Seq(seq),
        (Some(Target::Seq(s)), _) => Until::Seq(*s),
        (Some(Target::Snapshot(n)), _) => Until::Snapshot(n.clone()),
    };
    if let Err(e) = wire::write(
        &mut wr,
        &Message::Follow {
            from,
            until,
            replica: cfg.replica_id.clone(),
            listen: cfg.listen.clone(),
        },
    )
    .await
    {
        return e.into();
    }
    let root = lock(vol).path().to_owned();
    set(state, |s| {
        s.connected = true;
        s.master_head = Some(head);
        s.last_heard = Some(Timestamp::now());
    });
    saw(state, from);
    // A task reads the connection ahead, so that what arrives while the
    // replica syncs and applies is taken in the next round as one group:
    // one fdatasync and one ack however many batches it holds.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let budget = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD));
    let _reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            let item = match wire::read_within(&mut rd, SILENCE).await {
                Ok(Message::Segment {
                    first_seq,
                    last_seq,
                    bytes,
                }) => read_segment(&mut rd, bytes)
                    .await
                    .map(|bytes| Incoming::Segment {
                        first_seq,
                        last_seq,
                        bytes,
                    }),
                Ok(m) => Ok(Incoming::Msg(m)),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            // Read ahead no further than the budget; the permit travels
            // with the item and returns when the item is taken.
            let cost = item.as_ref().map_or(0, Incoming::size).clamp(1, READ_AHEAD);
            let Ok(permit) = budget.clone().acquire_many_owned(cost as u32).await else {
                return;
            };
            if tx.send((item, permit)).is_err() || failed {
                return;
            }
        }
    }));
    let mut first = true;
    let mut settle = tokio::time::interval(SETTLE_EVERY);
    settle.reset();
    // Records are applied as soon as they are journaled (in the page cache)
    // and made durable together a moment later, as the master's interval
    // policy does: one fdatasync per interval however many records came.
    let mut durable = lock(vol).head();
    let mut flush = tokio::time::interval(SYNC_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let dirty = lock(vol).head() != durable;
        let item = tokio::select! {
            item = rx.recv() => match item {
                Some((Ok(item), _permit)) => item,
                Some((Err(e), _)) => return End::Retry(format!("from {}: {e}", cfg.master)),
                None => return End::Retry(format!("{} closed the connection", cfg.master)),
            },
            _ = stop.changed() => {
                let _ = wire::write(&mut wr, &Message::Bye).await;
                return End::Stopped;
            }
            _ = async { pin.as_mut().expect("guarded").changed().await }, if pin.is_some() => {
                let _ = wire::write(&mut wr, &Message::Bye).await;
                return End::Repin;
            }
            _ = settle.tick() => {
                let mut v = lock(vol);
                if let Err(e) = v.sync() {
                    return stalled_or_broken(state, e);
                }
                durable = v.head();
                continue;
            }
            _ = flush.tick(), if dirty => {
                let (applied, head) = {
                    let v = lock(vol);
                    if let Err(e) = v.journal().sync() {
                        return stalled_or_broken(state, e.into());
                    }
                    (v.applied(), v.head())
                };
                durable = head;
                if let Err(e) = wire::write(&mut wr, &Message::Ack { applied, durable }).await {
                    return End::Retry(format!("to {}: {e}", cfg.master));
                }
                continue;
            }
        };
        if first && !matches!(item, Incoming::Msg(Message::Refused { .. })) {
            // The server accepted our position: whatever broke us before is mended.
            let _ = std::fs::remove_file(root.join(BROKEN_FILE));
            first = false;
            *progressed = true;
        }
        let mut group = vec![item];
        let mut size = group[0].size();
        let mut after = None;
        while size < GROUP_BYTES {
            match rx.try_recv() {
                Ok((Ok(item), _permit)) => {
                    size += item.size();
                    group.push(item);
                }
                Ok((Err(e), _)) => {
                    after = Some(End::Retry(format!("from {}: {e}", cfg.master)));
                    break;
                }
                Err(_) => break,
            }
        }

        let (applied, journaled) = {
            let mut v = lock(vol);
            let mut seen: Option<Position> = None;
            let mut received = Vec::new();
            for item in group {
                let end = match item {
                    Incoming::Msg(Message::Batch {
                        prev,
                        end,
                        count,
                        raw_len,
                        body,
                    }) => {
                        let records = match wire::unbatch(prev, end, count, raw_len, &body) {
                            Ok(r) => r,
                            Err(e) => {
                                after = Some(End::Retry(format!("from {}: {e}", cfg.master)));
                                break;
                            }
                        };
                        if v.head() != prev {
                            after = Some(End::Retry(format!(
                                "{} sent records after {prev}, but this journal ends at {}",
                                cfg.master,
                                v.head()
                            )));
                            break;
                        }
                        // The server holds them, whether or not they fit here.
                        saw(state, end);
                        let marker = pin_in(&records, until_target.as_ref());
                        match v.receive(&records) {
                            Ok(entries) => received.extend(entries),
                            Err(e) => {
                                after = Some(stalled_or_broken(state, e));
                                break;
                            }
                        }
                        if let Some(seq) = marker {
                            until_seq = Some(Some(seq));
                        }
                        end
                    }
                    Incoming::Segment {
                        first_seq,
                        last_seq,
                        bytes,
                    } => match v.receive_sealed(&bytes) {
                        Ok(entries) => {
                            received.extend(entries);
                            if let Some(Target::Snapshot(_)) = until_target {
                                until_seq = until_target.as_ref().map(|t| resolve(&v, t));
                            }
                            v.head()
                        }
                        Err(VolumeError::Journal(e))
                            if !matches!(e, crate::JournalError::Io { .. }) =>
                        {
                            // Damaged in transit or not continuing this journal.
                            after = Some(End::Retry(format!(
                                "segment {first_seq}-{last_seq} from {} refused: {}",
                                cfg.master,
                                with_causes(&e)
                            )));
                            break;
                        }
                        Err(e) => {
                            after = Some(stalled_or_broken(state, e));
                            break;
                        }
                    },
                    Incoming::Msg(Message::Heartbeat { head, .. }) => head,
                    Incoming::Msg(Message::Pinned { at }) => {
                        until_seq = Some(Some(at.seq));
                        set(state, |s| s.pinned_at = Some(at));
                        at
                    }
                    Incoming::Msg(Message::Bye) => {
                        after = Some(End::Retry(format!("{} is shutting down", cfg.master)));
                        break;
                    }
                    Incoming::Msg(Message::Refused { reason, detail }) => {
                        after = Some(refused(&cfg.master, reason, &detail));
                        break;
                    }
                    Incoming::Msg(other) => {
                        after = Some(End::Retry(format!(
                            "{} sent an unexpected {}",
                            cfg.master,
                            super::server::variant(&other)
                        )));
                        break;
                    }
                };
                if seen.is_none_or(|s| end.seq > s.seq) {
                    seen = Some(end);
                }
            }
            // A group that failed part way may have journaled more than
            // `seen` says: the journal counts too.
            if let Some(end) = seen {
                saw(state, end);
            }
            saw(state, v.head());
            if pin
                .as_ref()
                .is_some_and(|p| p.has_changed().unwrap_or(false))
            {
                // The pin moved: what was journaled is applied under the new one.
                return End::Repin;
            }
            // Whatever the group journaled is applied, also when the group
            // ended early; it becomes durable at the next flush.
            let applied = apply(&mut v, hooks, until_seq, &received);
            let applied = match applied {
                Ok(p) => p,
                Err(e) => return stalled_or_broken(state, e),
            };
            if let Some(tx) = &hooks.head {
                tx.send_if_modified(|h| {
                    let new = Head::of(&v);
                    let changed = h.position != new.position;
                    *h = new;
                    changed
                });
            }
            (applied, v.head())
        };
        if let Some(end) = after {
            return end;
        }
        set(state, |s| {
            let head = s.master_head.unwrap_or(applied);
            s.last_heard = Some(Timestamp::now());
            s.reason = None;
            // Held at the pin; or, for a snapshot its master does not hold
            // either (all it has is journaled here), where it is until the
            // snapshot is made.
            let pinned = match until_seq {
                Some(Some(u)) => applied.seq >= u,
                Some(None) => journaled.seq >= head.seq,
                None => false,
            };
            if pinned {
                s.pinned_at.get_or_insert(applied);
            }
            s.phase = if pinned {
                Phase::Pinned
            } else if applied.seq >= head.seq {
                Phase::Following
            } else {
                Phase::CatchingUp
            };
            if applied.seq >= head.seq || pinned {
                s.caught_up_at = Some(Timestamp::now());
            }
        });
        if let Err(e) = wire::write(&mut wr, &Message::Ack { applied, durable }).await {
            return End::Retry(format!("to {}: {e}", cfg.master));
        }
    }
}

/// What the reader task hands on: a message, or a whole sealed segment.
enum Incoming {
    Msg(Message),
    Segment {
        first_seq: u64,
        last_seq: u64,
        bytes: Vec<u8>,
    },
}

impl Incoming {
    fn size(&self) -> usize {
        match self {
            Incoming::Msg(Message::Batch { raw_len, .. }) => *raw_len as usize,
            Incoming::Msg(_) => 64,
            Incoming::Segment { bytes, .. } => bytes.len(),
        }
    }
}

/// Bytes of messages read ahead, at most.
const READ_AHEAD: usize = 64 << 20;
/// A group taken at once stops growing past this many bytes.
const GROUP_BYTES: usize = 16 << 20;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The seq of the snapshot marker a pin by name waits for, if it is among `records`.
fn pin_in(records: &[Vec<u8>], until: Option<&Target>) -> Option<u64> {
    let Some(Target::Snapshot(name)) = until else {
        return None;
    };
    records.iter().find_map(|r| match crate::Record::decode(r) {
        Ok(rec) if matches!(&rec.op, Op::Marker(Marker::Snapshot { name: n }) if n == name) => {
            Some(rec.seq)
        }
        _ => None,
    })
}

async fn read_segment(rd: &mut OwnedReadHalf, bytes: u64) -> Result<Vec<u8>, WireError> {
    let cap = crate::format::MAX_SEGMENT_RAW + crate::format::SEALED_HEADER_LEN as u64;
    if bytes > cap {
        return Err(WireError::Corrupt(format!(
            "segment of {bytes} bytes announced"
        )));
    }
    let mut buf = Vec::with_capacity(bytes as usize);
    while (buf.len() as u64) < bytes {
        match wire::read_within(rd, SILENCE).await? {
            Message::SegmentChunk(c) if buf.len() as u64 + c.len() as u64 <= bytes => {
                buf.extend_from_slice(&c)
            }
            Message::SegmentChunk(_) => {
                return Err(WireError::Corrupt("segment longer than announced".into()))
            }
            other => {
                return Err(WireError::Unexpected(format!(
                    "{} inside a segment",
                    super::server::variant(&other)
                )))
            }
        }
    }
    Ok(buf)
}

/// Brings the tree up to the journal, taking what was just `received`
/// from memory; see [`Volume::apply_received`]. A pinned replica
/// (`pin = Some(..)`) moves only once its journal reaches the pin, and then
/// all the way in one hold of the gate, so that readers see the tree at the
/// old pin or at the new one, never between; a pin by a snapshot name not
/// yet seen (`Some(None)`) holds the tree where it is.
fn apply(
    v: &mut Volume,
    hooks: &mut Hooks,
    pin: Option<Option<u64>>,
    received: &[Entry],
) -> Result<Position, VolumeError> {
    let gate = hooks.gate.clone();
    let applied = &mut hooks.applied;
    let tell = |ops: &[Op], applied: &mut Option<OnApplied>| {
        if let Some(f) = applied {
            ops.iter().for_each(f);
        }
    };
    match pin {
        None => v.apply_received(received, None, gate.as_deref(), |e| {
            if let Some(f) = applied {
                f(&e.record.op)
            }
        }),
        Some(Some(until)) if v.head().seq >= until && v.applied().seq < until => {
            let mut ops = Vec::new();
            let held = gate
                .as_deref()
                .map(|g| g.write().unwrap_or_else(|p| p.into_inner()));
            let r = v.apply_received(received, Some(until), None, |e| {
                ops.push(crate::inspect::paths_only(&e.record.op))
            });
            drop(held);
            tell(&ops, applied);
            r
        }
        Some(_) => Ok(v.applied()),
    }
}

/// Moves a following replica's pin (`None`: follow the head again). A
/// target behind the tree takes the tree back first, in one hold of `gate`
/// ([`Volume::rewind_tree`]); `undone` is told each operation applied.
/// The follower then connects again with the new pin.
pub fn repin(
    vol: &Mutex<Volume>,
    gate: Option<&RwLock<()>>,
    target: Option<Target>,
    pin: &watch::Sender<Option<Target>>,
    undone: impl FnMut(&Op),
) -> Result<Value, VolumeError> {
    let mut v = lock(vol);
    let mut answer = serde_json::json!({});
    if let Some(t) = &target {
        // A snapshot this journal does not hold yet lies ahead: the server
        // finds it.
        let seq = match (t, v.resolve(t)) {
            (Target::Snapshot(_), Err(VolumeError::Snapshot(_))) => None,
            (_, r) => Some(r?),
        };
        if let Some(seq) = seq.filter(|&s| s < v.applied().seq) {
            let r = v.rewind_tree(seq, gate, undone)?;
            answer["undone"] = r.undone.into();
        }
        answer["pin"] = seq.into();
    }
    answer["position"] = crate::inspect::position_json(v.applied());
    // Told while the volume is held: the follower checks for a new pin under
    // the same lock before it applies anything, so it never applies toward
    // the old one after the rewind.
    pin.send_replace(target);
    drop(v);
    Ok(answer)
}

/// How the reason of a replica broken by its own tree begins: the tree is
/// not what its journal says (changed behind the journal's back).
pub const TREE_REFUSED: &str = "the tree refused a record";

/// A failure to journal or apply: a full disk or an I/O error may pass and
/// is retried; a record the tree refuses means the tree is not what the
/// journal says, and the replica is broken.
fn stalled_or_broken(state: &Mutex<FollowState>, e: VolumeError) -> End {
    let text = with_causes(&e);
    let refused = matches!(&e, VolumeError::Apply(a) if a.is_refusal())
        || matches!(&e, VolumeError::Mismatch { .. })
        || matches!(&e, VolumeError::Apply(crate::ApplyError::Diverged { .. }));
    if refused {
        return End::Fatal(format!("{TREE_REFUSED}: {text}"));
    }
    set(state, |s| {
        s.phase = Phase::Stalled;
        s.reason = Some(text.clone());
    });
    End::Retry(format!("stalled: {text}"))
}

/// An error and its causes on one line, `a: b: c`: the cause is often what
/// the operator needs ("No space left on device"), and `{:#}` shows it only
/// for anyhow errors.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Status of a replica volume that no process follows: from its files.
pub fn idle_state_json(volume: &Path) -> Value {
    let broken = std::fs::read_to_string(volume.join(BROKEN_FILE)).ok();
    json!({
        "state": if broken.is_some() { "broken" } else { "stopped" },
        "reason": broken.map(|b| b.trim_end().to_owned()),
    })
}
