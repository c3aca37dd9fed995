//! Serves a volume's journal to replicas.
//!
//! One task per connection, on a small tokio runtime of its own. A
//! connection proves the key, states its position, and is then sent sealed
//! segments as they are and the live tail in compressed batches, read from
//! the journal files. The side that commits only publishes its [`Head`];
//! a slow or dead replica holds one chunk in memory and its own task.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::wire::{self, Message, Refusal, Side, Until, WireError};
use super::Head;
use crate::format::VolumeId;
use crate::image::ImageSource;
use crate::inspect::position_json;
use crate::journal::{Chunk, Tail, TailError};
use crate::position::Position;
use crate::record::Timestamp;

/// File in the volume where a server keeps what it knows of its replicas.
pub const REGISTRY_FILE: &str = "replicas.json";
/// How long a handshake step may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A replica that takes no bytes for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A replica that sends nothing (acks come with every heartbeat) for this long is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections get a heartbeat this often.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Records per batch stop near this many bytes.
const BATCH_BYTES: usize = 4 << 20;
/// Sealed segments travel in chunks of this size.
const SEGMENT_CHUNK: usize = 1 << 20;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;

/// What a server needs to know.
pub struct ServerConfig {
    /// `HOST:PORT` to listen on (port 0 picks one).
    pub listen: String,
    pub journal_dir: PathBuf,
    pub volume_id: VolumeId,
    pub key: Vec<u8>,
    pub head: watch::Receiver<Head>,
    /// Where replica cursors are kept across restarts (a JSON file).
    pub registry_file: Option<PathBuf>,
    /// Prefix of log lines: `jfs-master`, `jfs-replica`.
    pub log_name: &'static str,
}

/// A replica as the server knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub id: String,
    pub address: String,
    pub listen: Option<String>,
    pub connected: bool,
    pub acked: Position,
    /// Where the replica's journal is durable (what it keeps after a power cut).
    #[serde(default)]
    pub durable: Option<Position>,
    pub last_seen: Timestamp,
}

impl ReplicaInfo {
    /// As status shows it, with its lag as the caller knows it.
    pub fn to_json(&self, lag: Value) -> Value {
        json!({
            "id": self.id,
            "address": self.address,
            "listen": self.listen,
            "connected": self.connected,
            "acked": position_json(self.acked),
            "durable": self.durable.map(position_json),
            "last_seen": self.last_seen.to_rfc3339(),
            "lag": lag,
        })
    }
}

/// The replicas a server of `volume` knew when it last ran (from its
/// registry file), for status while nothing serves: none connected, lag
/// known in records only.
pub fn known_replicas(volume: &std::path::Path, head_seq: u64) -> Value {
    let known = std::fs::read(volume.join(REGISTRY_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<ReplicaInfo>>(&b).ok())
        .unwrap_or_default();
    known
        .into_iter()
        .map(|mut r| {
            r.connected = false;
            let behind = head_seq.saturating_sub(r.acked.seq);
            r.to_json(json!({ "records": behind, "bytes": null, "seconds": null }))
        })
        .collect()
}

struct Shared {
    cfg: ServerConfig,
    /// Writes images for `ImageRequest`; `None` refuses them.
    images: Option<Arc<dyn ImageSource>>,
    replicas: Mutex<BTreeMap<String, ReplicaInfo>>,
    /// (seq, bytes, time) of recent heads, oldest first: for lag in bytes and seconds.
    samples: Mutex<VecDeque<(u64, u64, Timestamp)>>,
}

/// A running server; dropping it stops it and closes every connection.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds and starts serving in the background. Asked for an image, it
    /// answers that it has none (see [`Server::start_with_images`]).
    pub fn start(cfg: ServerConfig) -> std::io::Result<Server> {
        Server::start_inner(cfg, None)
    }

    /// [`Server::start`], and answers `ImageRequest`s with images that
    /// `images` writes (a following replica's volume, held still while it
    /// is written): how replicas are bootstrapped from this one.
    pub fn start_with_images(
        cfg: ServerConfig,
        images: Arc<dyn ImageSource>,
    ) -> std::io::Result<Server> {
        Server::start_inner(cfg, Some(images))
    }

    fn start_inner(
        cfg: ServerConfig,
        images: Option<Arc<dyn ImageSource>>,
    ) -> std::io::Result<Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("jfs-ship")
            .enable_all()
            .build()?;
        let listener = runtime
            .block_on(TcpListener::bind(&cfg.listen))
            .map_err(|e| std::io::Error::new(e.kind(), format!("listen on {}: {e}", cfg.listen)))?;
        let addr = listener.local_addr()?;
        let replicas = cfg
            .registry_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice::<Vec<ReplicaInfo>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|mut r| {
                r.connected = false;
                (r.id.clone(), r)
            })
            .collect();
        let shared = Arc::new(Shared {
            cfg,
            images,
            replicas: Mutex::new(replicas),
            samples: Mutex::new(VecDeque::new()),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("jfs-ship".into())
                .spawn(move || {
                    let s = shared.clone();
                    runtime.block_on(async move {
                        let shared = s;
                        tokio::select! {
                            _ = accept_loop(shared.clone(), listener) => {}
                            _ = sample_heads(shared.clone()) => {}
                            _ = save_registry_every(shared.clone(), Duration::from_secs(2)) => {}
                            _ = stop_rx => {}
                        }
                    });
                    runtime.shutdown_timeout(Duration::from_secs(1));
                    shared.save_registry();
                })?
        };
        Ok(Server {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every replica known, with its acknowledged position and lag.
    pub fn replicas(&self) -> Value {
        self.shared.replicas_json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn log(&self, what: std::fmt::Arguments) {
        eprintln!("{}: {what}", self.cfg.log_name);
    }

    fn head(&self) -> Head {
        *self.cfg.head.borrow()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut ReplicaInfo)) {
        let mut map = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get_mut(id) {
            f(r);
        }
    }

    fn save_registry(&self) {
        let Some(file) = &self.cfg.registry_file else {
            return;
        };
        let list: Vec<ReplicaInfo> = self
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let tmp = file.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&list).expect("replica info encodes");
        if std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, file))
            .is_err()
        {
            // Status only; the next save tries again.
        }
    }

    fn replicas_json(&self) -> Value {
        let head = self.head();
        let now = Timestamp::now();
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let map = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        let list: Vec<Value> = map
            .values()
            .map(|r| {
                let behind = head.position.seq.saturating_sub(r.acked.seq);
                // Bytes: the newest sample at or before the ack; seconds:
                // since the head first passed the ack.
                let at = samples.iter().rev().find(|s| s.0 <= r.acked.seq);
                let bytes = if behind == 0 {
                    0
                } else {
                    head.bytes.saturating_sub(at.map_or(0, |s| s.1))
                };
                let passed = samples.iter().find(|s| s.0 > r.acked.seq);
                let seconds = match passed {
                    _ if behind == 0 => 0.0,
                    Some(s) => seconds_between(s.2, now),
                    None => seconds_between(head.time, now),
                };
                r.to_json(json!({ "records": behind, "bytes": bytes, "seconds": seconds }))
            })
            .collect();
        Value::Array(list)
    }
}

fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    let d = (b.sec - a.sec) as f64 + (b.nsec as f64 - a.nsec as f64) / 1e9;
    d.max(0.0)
}

async fn sample_heads(shared: Arc<Shared>) {
    let mut rx = shared.cfg.head.clone();
    loop {
        let h = *rx.borrow_and_update();
        {
            let mut s = shared.samples.lock().unwrap_or_else(|p| p.into_inner());
            if s.back().is_none_or(|b| b.0 != h.position.seq) {
                s.push_back((h.position.seq, h.bytes, h.time));
                if s.len() > 100_000 {
                    s.pop_front();
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
        // Coalesce bursts: one sample per millisecond is plenty.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn save_registry_every(shared: Arc<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || s.save_registry()).await;
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                shared.log(format_args!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let slot = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(_slot) = slot else {
                let (_, mut wr) = stream.into_split();
                let _ = refuse(&mut wr, Refusal::Busy, "too many connections".into()).await;
                return;
            };
            let mut id = None;
            if let Err(e) = converse(&shared, stream, peer, &mut id).await {
                match &id {
                    Some(id) => shared.log(format_args!("replica {id} at {peer}: {e}")),
                    None => shared.log(format_args!("connection from {peer}: {e}")),
                }
            }
            if let Some(id) = id {
                shared.update(&id, |r| r.connected = false);
                shared.save_registry();
            }
        });
    }
}

/// Why a conversation ended early.
#[derive(Debug, thiserror::Error)]
enum ConvError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Local(String),
}

async fn refuse(wr: &mut OwnedWriteHalf, reason: Refusal, detail: String) -> ConvError {
    let msg = format!("{}: {detail}", reason.as_str());
    let _ = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        wire::write(wr, &Message::Refused { reason, detail }),
    )
    .await;
    ConvError::Refused(msg)
}

async fn send(wr: &mut OwnedWriteHalf, msg: &Message) -> Result<(), ConvError> {
    match tokio::time::timeout(WRITE_TIMEOUT, wire::write(wr, msg)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ConvError::Local(format!(
            "the replica took no bytes for {WRITE_TIMEOUT:?}; dropped"
        ))),
    }
}

async fn converse(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    id_out: &mut Option<String>,
) -> Result<(), ConvError> {
    let cfg = &shared.cfg;
    let (mut rd, mut wr) = stream.into_split();
    let Message::Hello {
        version,
        volume,
        nonce: replica_nonce,
    } = wire::read_within(&mut rd, HANDSHAKE_TIMEOUT).await?
    else {
        return Err(refuse(&mut wr, Refusal::Protocol, "expected Hello".into()).await);
    };
    if version != wire::PROTOCOL_VERSION {
        let detail = format!(
            "the replica speaks version {version}, this server {}",
            wire::PROTOCOL_VERSION
        );
        return Err(refuse(&mut wr, Refusal::Version, detail).await);
    }
    if let Some(v) = volume.filter(|v| *v != cfg.volume_id) {
        let detail = format!("this server serves volume {}, not {v}", cfg.volume_id);
        return Err(refuse(&mut wr, Refusal::UnknownVolume, detail).await);
    }
    let server_nonce = wire::nonce();
    send(
        &mut wr,
        &Message::Challenge {
            volume: cfg.volume_id,
            nonce: server_nonce,
        },
    )
    .await?;
    let Message::Proof { mac } = wire::read_within(&mut rd, HANDSHAKE_TIMEOUT).await? else {
        return Err(refuse(&mut wr, Refusal::Protocol, "expected Proof".into()).await);
    };
    if !wire::check_proof(
        &cfg.key,
        Side::Replica,
        cfg.volume_id,
        &replica_nonce,
        &server_nonce,
        &mac,
    ) {
        let detail = "the replica does not hold this volume's key".to_string();
        return Err(refuse(&mut wr, Refusal::WrongKey, detail).await);
    }
    let head = shared.head();
    let mac = wire::proof(
        &cfg.key,
        Side::Server,
        cfg.volume_id,
        &replica_nonce,
        &server_nonce,
    );
    send(
        &mut wr,
        &Message::Welcome {
            mac,
            head: head.position,
        },
    )
    .await?;
    let (from, until, id, listen) = match wire::read_within(&mut rd, HANDSHAKE_TIMEOUT).await? {
        Message::Bye => return Ok(()),
        Message::ImageRequest => return serve_image(shared, &mut wr, peer).await,
        Message::Follow {
            from,
            until,
            replica,
            listen,
        } => (from, until, replica, listen),
        other => {
            let detail = format!("expected Follow, got {}", variant(&other));
            return Err(refuse(&mut wr, Refusal::Protocol, detail).await);
        }
    };
    if id.is_empty() || id.len() > 64 {
        return Err(refuse(&mut wr, Refusal::Protocol, "bad replica id".into()).await);
    }
    let tail = {
        let (dir, vid) = (cfg.journal_dir.clone(), cfg.volume_id);
        tokio::task::spawn_blocking(move || Tail::new(&dir, vid, from))
            .await
            .map_err(|e| ConvError::Local(e.to_string()))?
    };
    let tail = match tail {
        Ok(t) => t,
        Err(e) => {
            let reason = match &e {
                TailError::Ahead { .. } => Refusal::Ahead,
                TailError::Diverged { .. } => Refusal::Diverged,
                TailError::Trimmed { .. }
                | TailError::Journal(crate::JournalError::NotFound { .. }) => Refusal::Trimmed,
                TailError::Journal(_) => {
                    shared.log(format_args!("cannot read the journal: {e}"));
                    Refusal::Busy
                }
            };
            return Err(refuse(&mut wr, reason, e.to_string()).await);
        }
    };
    {
        let mut map = shared.replicas.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            id.clone(),
            ReplicaInfo {
                id: id.clone(),
                address: peer.to_string(),
                listen,
                connected: true,
                acked: from,
                durable: None,
                last_seen: Timestamp::now(),
            },
        );
    }
    *id_out = Some(id.clone());
    shared.save_registry();
    shared.log(format_args!(
        "replica {id} at {peer} follows from {from} (head {})",
        head.position
    ));

    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel();
    let acks = {
        let shared = shared.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let r = read_acks(&shared, &id, &mut rd).await;
            let _ = closed_tx.send(r);
        })
    };
    let result = stream_to(shared, &mut wr, tail, until, &mut closed_rx).await;
    acks.abort();
    result
}

async fn read_acks(shared: &Shared, id: &str, rd: &mut OwnedReadHalf) -> Result<(), ConvError> {
    loop {
        match wire::read_within(rd, READ_TIMEOUT).await? {
            Message::Ack { applied, durable } => shared.update(id, |r| {
                r.acked = applied;
                r.durable = Some(durable);
                r.last_seen = Timestamp::now();
            }),
            Message::Bye => return Ok(()),
            other => {
                return Err(ConvError::Local(format!(
                    "unexpected {} from the replica",
                    variant(&other)
                )))
            }
        }
    }
}

async fn stream_to(
    shared: &Arc<Shared>,
    wr: &mut OwnedWriteHalf,
    mut tail: Tail,
    until: Until,
    closed: &mut tokio::sync::oneshot::Receiver<Result<(), ConvError>>,
) -> Result<(), ConvError> {
    let mut head_rx = shared.cfg.head.clone();
    let (mut until_seq, mut stop_at) = match until {
        Until::Head => (u64::MAX, None),
        Until::Seq(s) => (s, None),
        Until::Snapshot(name) => (u64::MAX, Some(name)),
    };
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        // Ship everything there is up to the published head.
        loop {
            let limit = head_rx.borrow_and_update().position.seq.min(until_seq);
            let stop = stop_at.clone();
            let (t, chunk) = tokio::task::spawn_blocking(move || {
                let c = tail.next(limit, BATCH_BYTES, stop.as_deref());
                (tail, c)
            })
            .await
            .map_err(|e| ConvError::Local(e.to_string()))?;
            tail = t;
            let chunk = chunk.map_err(|e| {
                shared.log(format_args!("reading the journal to ship it: {e}"));
                ConvError::Local(e.to_string())
            })?;
            match chunk {
                None => break,
                Some(Chunk::Sealed {
                    path,
                    header,
                    file_bytes,
                }) => {
                    send(
                        wr,
                        &Message::Segment {
                            first_seq: header.first_seq,
                            last_seq: header.last_seq,
                            bytes: file_bytes,
                        },
                    )
                    .await?;
                    send_file(wr, &path, file_bytes).await?;
                }
                Some(Chunk::Records {
                    prev,
                    records,
                    end,
                    reached_marker,
                }) => {
                    send(wr, &wire::batch(prev, end, &records)).await?;
                    if reached_marker {
                        send(wr, &Message::Pinned { at: end }).await?;
                        until_seq = end.seq;
                        stop_at = None;
                    }
                }
            }
            heartbeat.reset();
        }
        tokio::select! {
            changed = head_rx.changed() => {
                if changed.is_err() {
                    let _ = send(wr, &Message::Bye).await;
                    return Ok(());
                }
            }
            _ = heartbeat.tick() => {
                let head = shared.head();
                send(wr, &Message::Heartbeat { head: head.position, time: Timestamp::now() }).await?;
            }
            r = &mut *closed => {
                return r.unwrap_or(Ok(()));
            }
        }
    }
}

async fn send_file(
    wr: &mut OwnedWriteHalf,
    path: &std::path::Path,
    bytes: u64,
) -> Result<(), ConvError> {
    let local = |e: std::io::Error| ConvError::Local(format!("read {}: {e}", path.display()));
    let mut f = tokio::fs::File::open(path).await.map_err(local)?;
    let mut left = bytes;
    while left > 0 {
        let mut buf = vec![0u8; SEGMENT_CHUNK.min(left as usize)];
        f.read_exact(&mut buf).await.map_err(local)?;
        left -= buf.len() as u64;
        send(wr, &Message::SegmentChunk(buf)).await?;
    }
    Ok(())
}

/// Streams an image in `ImageChunk`s, then `ImageEnd`. The image is written
/// on a blocking thread into a channel of a few chunks, so at most those
/// are in memory; a replica that goes away ends the writing (and whatever
/// the source holds still while it writes).
async fn serve_image(
    shared: &Arc<Shared>,
    wr: &mut OwnedWriteHalf,
    peer: SocketAddr,
) -> Result<(), ConvError> {
    let Some(source) = shared.images.clone() else {
        let detail = "this server does not give images (a master's tree changes under its \
                      writers); bootstrap from a replica that follows with --listen"
            .to_string();
        return Err(refuse(wr, Refusal::NoImage, detail).await);
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(SEGMENT_CHUNK),
        };
        let header = source.write_image(&mut out)?;
        std::io::Write::flush(&mut out).map_err(|source| crate::image::ImageError::Io {
            context: "send the image".into(),
            source,
        })?;
        Ok::<_, crate::image::ImageError>(header)
    });
    let mut bytes = 0u64;
    while let Some(chunk) = rx.recv().await {
        bytes += chunk.len() as u64;
        send(wr, &Message::ImageChunk(chunk)).await?;
    }
    match writer.await {
        Ok(Ok(header)) => {
            send(wr, &Message::ImageEnd { bytes }).await?;
            shared.log(format_args!(
                "sent {peer} an image at {} ({bytes} bytes)",
                header.position
            ));
            Ok(())
        }
        Ok(Err(e)) => {
            shared.log(format_args!("writing an image for {peer}: {e}"));
            let detail = format!("writing the image failed: {e}");
            Err(refuse(wr, Refusal::Busy, detail).await)
        }
        Err(e) => Err(ConvError::Local(format!("image writer: {e}"))),
    }
}

/// Cuts what is written into chunks and hands them to the connection.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(SEGMENT_CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the replica asking for the image went away",
            )
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(SEGMENT_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SEGMENT_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A message's name, for errors.
pub fn variant(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "Hello",
        Message::Challenge { .. } => "Challenge",
        Message::Proof { .. } => "Proof",
        Message::Welcome { .. } => "Welcome",
        Message::Follow { .. } => "Follow",
        Message::Segment { .. } => "Segment",
        Message::SegmentChunk(_) => "SegmentChunk",
        Message::Batch { .. } => "Batch",
        Message::Heartbeat { .. } => "Heartbeat",
        Message::Pinned { .. } => "Pinned",
        Message::Refused { .. } => "Refused",
        Message::Ack { .. } => "Ack",
        Message::Bye => "Bye",
        Message::ImageRequest => "ImageRequest",
        Message::ImageChunk(_) => "ImageChunk",
        Message::ImageEnd { .. } => "ImageEnd",
    }
}
