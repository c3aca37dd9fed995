//! The journal: an append-only, chained sequence of records in segment files.
//!
//! This module owns the files in `VOL/journal/`: one active segment that
//! records are appended to, and sealed segments, each immutable, compressed
//! and checksummed. It appends, seals, recovers after a crash (cutting off a
//! torn tail, and only a torn tail) and reads from any position. It never
//! touches the tree.
//!
//! File names carry the first sequence number of the segment, zero-padded so
//! that they sort: `00000000000000000001.seg` (sealed), `....active`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::format::{
    encode_frame, finish_frame, next_frame, read_frame, ActiveHeader, BodyHasher, BodySum,
    Compression, FrameStep, HeaderError, ReadFrameError, SealedHeader, VolumeId, ACTIVE_HEADER_LEN,
    FORMAT_VERSION, FRAME_HEADER_LEN, SEALED_HEADER_LEN,
};
use crate::position::{Chain, Position};
use crate::record::{Record, RecordError};

mod back;
mod tail;
pub use back::BackReader;
pub use tail::{Chunk, Tail, TailError};

const SEALED_EXT: &str = "seg";
const ACTIVE_EXT: &str = "active";
const TMP_EXT: &str = "tmp";

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("segment {}: {reason} at offset {offset}", segment.display())]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("segment {}", segment.display())]
    Header {
        segment: PathBuf,
        #[source]
        source: HeaderError,
    },
    #[error("segment {} belongs to volume {found}, not to volume {expected}", segment.display())]
    WrongVolume {
        segment: PathBuf,
        expected: VolumeId,
        found: VolumeId,
    },
    #[error("journal {}: {reason}", dir.display())]
    Layout { dir: PathBuf, reason: String },
    #[error("record {seq} does not follow the journal head {head}")]
    OutOfOrder { seq: u64, head: u64 },
    #[error("record {seq} is not in the journal (it holds {first} to {last})")]
    NotFound { seq: u64, first: u64, last: u64 },
    #[error("record {seq}")]
    Record {
        seq: u64,
        #[source]
        source: RecordError,
    },
    #[error("the journal is open read-only")]
    ReadOnly,
    #[error("segment {} was removed (history trimmed) while it was being read", segment.display())]
    Trimmed { segment: PathBuf },
}

type Result<T> = std::result::Result<T, JournalError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> JournalError {
    let context = context.into();
    move |source| JournalError::Io { context, source }
}

/// Tunables of a journal.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The active segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// zstd level for sealed segments; `None` stores them uncompressed.
    pub zstd_level: Option<i32>,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            segment_bytes: 64 << 20,
            zstd_level: Some(3),
        }
    }
}

/// One segment, as listed by [`Journal::segments`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub sealed: bool,
    pub first_seq: u64,
    /// Last record held; `first_seq - 1` for an empty active segment.
    pub last_seq: u64,
    /// Size of the file on disk.
    pub file_bytes: u64,
}

/// What [`Journal::open`] had to repair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// A torn tail that was cut off: segment, offset of the cut, bytes removed, why.
    pub torn_tail: Option<(PathBuf, u64, u64, &'static str)>,
    /// Leftovers of an interrupted seal or create that were removed.
    pub removed: Vec<PathBuf>,
}

/// A record read back from the journal, with its verified position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position after this record.
    pub position: Position,
    /// Chain value before this record.
    pub prev_chain: Chain,
    pub record: Record,
}

#[derive(Clone, Debug)]
struct Sealed {
    path: PathBuf,
    header: SealedHeader,
    file_bytes: u64,
}

struct Active {
    path: PathBuf,
    file: File,
    header: ActiveHeader,
    /// File length: header plus whole frames.
    len: u64,
}

/// A sync of the journal started with [`Journal::start_sync`].
#[must_use = "the records are durable only once `wait` returns"]
pub struct JournalSync {
    files: Vec<(PathBuf, File)>,
}

impl JournalSync {
    /// Makes the records appended before the sync started durable.
    pub fn wait(self) -> Result<()> {
        for (path, file) in self.files {
            file.sync_data()
                .map_err(io_err(format!("sync {}", path.display())))?;
        }
        Ok(())
    }
}

/// An open journal. Appending needs `&mut`; reading works on a snapshot.
pub struct Journal {
    dir: PathBuf,
    volume_id: VolumeId,
    config: JournalConfig,
    sealed: Vec<Sealed>,
    active: Active,
    head: Position,
    read_only: bool,
    frame_buf: Vec<u8>,
    /// Active length and head before the last append, while it can be retracted.
    before_last: Option<(u64, Position)>,
    /// The previous active segment, full and taking no more records, while
    /// `sealing` turns it into a sealed segment; see [`Journal::seal_if_full`].
    retired: Option<Active>,
    /// The thread sealing `retired`.
    sealing: Option<JoinHandle<Result<Sealed>>>,
    /// After a failed attempt to seal or to start a segment (a full disk),
    /// when to try again; until then appends go on in the full segment.
    retry_at: Option<Instant>,
}

/// How long appends go on in a full segment after sealing it failed.
const SEAL_RETRY: Duration = Duration::from_secs(10);

fn segment_name(first_seq: u64, ext: &str) -> String {
    format!("{first_seq:020}.{ext}")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("sync directory {}", dir.display())))
}

/// Writes `bytes` to `dir/name` through a temporary file, durably.
fn write_atomic(dir: &Path, name: &str, bytes: &[&[u8]]) -> Result<PathBuf> {
    let tmp = write_tmp(dir, name, bytes)?;
    rename_in(dir, &tmp, name)
}

/// Writes `bytes` durably to a temporary file for `dir/name`, which
/// [`Journal::open`] removes if a crash leaves it.
fn write_tmp(dir: &Path, name: &str, bytes: &[&[u8]]) -> Result<PathBuf> {
    let tmp = dir.join(format!("{name}.{TMP_EXT}"));
    let ctx = format!("write {}", tmp.display());
    let written = File::create(&tmp).and_then(|mut f| {
        for b in bytes {
            io::Write::write_all(&mut f, b)?;
        }
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(ctx)(e));
    }
    Ok(tmp)
}

/// Renames the temporary file `tmp` to `dir/name`, durably.
fn rename_in(dir: &Path, tmp: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    fs::rename(tmp, &path).map_err(io_err(format!("rename {}", tmp.display())))?;
    sync_dir(dir)?;
    Ok(path)
}

impl Journal {
    /// Creates an empty journal in `dir` (created if missing; must hold no segments).
    pub fn create(dir: &Path, volume_id: VolumeId, config: JournalConfig) -> Result<Journal> {
        Journal::create_after(dir, volume_id, config, Position::ZERO)
    }

    /// Creates an empty journal whose first record will be `start.seq + 1`,
    /// continuing the chain at `start`: the journal of a replica whose tree
    /// was built from an image at `start`. Its active segment's header
    /// carries `start`, so the journal reads as one whose older history was
    /// trimmed.
    pub fn create_after(
        dir: &Path,
        volume_id: VolumeId,
        config: JournalConfig,
        start: Position,
    ) -> Result<Journal> {
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let listing = list_dir(dir)?;
        if !listing.sealed.is_empty() || !listing.active.is_empty() {
            return Err(JournalError::Layout {
                dir: dir.to_owned(),
                reason: "already holds segments".into(),
            });
        }
        let header = ActiveHeader {
            volume_id,
            first_seq: start.seq + 1,
            prev_chain: start.chain,
        };
        let active = create_active(dir, header, config.segment_bytes)?;
        Ok(Journal {
            dir: dir.to_owned(),
            volume_id,
            config,
            sealed: Vec::new(),
            active,
            head: start,
            read_only: false,
            frame_buf: Vec::new(),
            before_last: None,
            retired: None,
            sealing: None,
            retry_at: None,
        })
    }

    /// Opens a journal for appending, repairing what a crash can leave: a torn
    /// tail of the active segment, a temporary file, an active segment that was
    /// already sealed. Any other damage is an error naming segment and offset.
    pub fn open(
        dir: &Path,
        volume_id: VolumeId,
        config: JournalConfig,
    ) -> Result<(Journal, Recovery)> {
        Journal::open_inner(dir, volume_id, config, false)
    }

    /// Opens a journal without changing any file: a torn tail is simply where
    /// reading stops. For readers of a volume another process may be writing.
    /// Without a `volume_id`, the first segment's is taken and all must agree.
    pub fn open_read_only(dir: &Path, volume_id: Option<VolumeId>) -> Result<Journal> {
        // A writer may remove a file between the listing and the reading of
        // it (a trim, the old active segment after a seal): list again.
        let mut attempts = 0;
        loop {
            match Journal::open_read_only_once(dir, volume_id) {
                Err(JournalError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && attempts < 5 =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    fn open_read_only_once(dir: &Path, volume_id: Option<VolumeId>) -> Result<Journal> {
        let volume_id = match volume_id {
            Some(id) => id,
            None => {
                let listing = list_dir(dir)?;
                if let Some(p) = listing.sealed.first() {
                    read_sealed_header(p)?.0.volume_id
                } else if let Some(p) = listing.active.first() {
                    read_active_header(p)?.volume_id
                } else {
                    return Err(JournalError::Layout {
                        dir: dir.to_owned(),
                        reason: "holds no segments (is this a jfs volume?)".into(),
                    });
                }
            }
        };
        Ok(Journal::open_inner(dir, volume_id, JournalConfig::default(), true)?.0)
    }

    fn open_inner(
        dir: &Path,
        volume_id: VolumeId,
        config: JournalConfig,
        read_only: bool,
    ) -> Result<(Journal, Recovery)> {
        let mut recovery = Recovery::default();
        let listing = list_dir(dir)?;
        if !read_only {
            for tmp in listing.tmp {
                fs::remove_file(&tmp).map_err(io_err(format!("remove {}", tmp.display())))?;
                recovery.removed.push(tmp);
            }
        }
        let layout = |reason: String| JournalError::Layout {
            dir: dir.to_owned(),
            reason,
        };

        // Sealed segments: each header valid, of this volume, and chained to the one before.
        let mut sealed = Vec::with_capacity(listing.sealed.len());
        let mut head = Position::ZERO;
        for path in listing.sealed {
            let (header, file_bytes) = read_sealed_header(&path)?;
            check_volume(&path, volume_id, header.volume_id)?;
            if file_bytes != SEALED_HEADER_LEN as u64 + header.body_len {
                return Err(JournalError::Corrupt {
                    segment: path,
                    offset: file_bytes,
                    reason: format!(
                        "file is {file_bytes} bytes but its header describes {}",
                        SEALED_HEADER_LEN as u64 + header.body_len
                    ),
                });
            }
            // The first segment may start after 1 when older history was trimmed.
            if !sealed.is_empty() && header.start() != head {
                return Err(layout(format!(
                    "segment {} starts at {} but the one before ends at {}",
                    path.display(),
                    header.start(),
                    head
                )));
            }
            head = header.end();
            sealed.push(Sealed {
                path,
                header,
                file_bytes,
            });
        }

        // Active segments: one that a seal already copied is a leftover. Of
        // the others, the newest takes appends, and one before it is a full
        // segment whose sealing was interrupted (see `Journal::seal_if_full`).
        let mut actives: Vec<(PathBuf, ActiveHeader)> = Vec::new();
        for path in listing.active {
            let header = read_active_header(&path)?;
            check_volume(&path, volume_id, header.volume_id)?;
            let covered = sealed
                .iter()
                .any(|s| s.header.first_seq == header.first_seq);
            if covered {
                if !read_only {
                    fs::remove_file(&path).map_err(io_err(format!("remove {}", path.display())))?;
                    recovery.removed.push(path);
                }
                continue;
            }
            if actives.len() == 2 {
                return Err(layout(format!(
                    "three active segments, the third {}",
                    path.display()
                )));
            }
            actives.push((path, header));
        }
        // An active segment must start where the sealed ones end.
        let continues = |path: &Path, header: &ActiveHeader, head: Position| {
            if !sealed.is_empty() && header.start() != head {
                return Err(layout(format!(
                    "active segment {} starts at {} but the sealed ones end at {}",
                    path.display(),
                    header.start(),
                    head
                )));
            }
            Ok(())
        };
        let mut retired = None;
        if actives.len() == 2 {
            let (path, header) = actives.remove(0);
            continues(&path, &header, head)?;
            let (len, end, torn) = scan_active(&path, header)?;
            let end = end.unwrap_or(header.start());
            if torn.is_none() && end == actives[0].1.start() {
                head = end;
                retired = Some((path, header, len));
            } else {
                // The full segment lost its tail: the system stopped before
                // it was written back. Nothing in the next one was ever made
                // durable, since `sync` writes the full one back first, so
                // the next one goes and this one takes appends again.
                let (newer, _) = actives.pop().expect("two actives");
                if !read_only {
                    fs::remove_file(&newer)
                        .map_err(io_err(format!("remove {}", newer.display())))?;
                    recovery.removed.push(newer);
                }
                actives.push((path, header));
            }
        }
        let active = actives.pop();
        let active = match active {
            Some((path, header)) => {
                continues(&path, &header, head)?;
                head = header.start();
                let (len, end, torn) = scan_active(&path, header)?;
                head = end.unwrap_or(head);
                let file = OpenOptions::new()
                    .read(true)
                    .write(!read_only)
                    .open(&path)
                    .map_err(io_err(format!("open {}", path.display())))?;
                if !read_only {
                    reserve(&file, config.segment_bytes);
                }
                if let Some((offset, reason)) = torn {
                    let file_len = file
                        .metadata()
                        .map_err(io_err("stat active segment"))?
                        .len();
                    if !read_only {
                        file.set_len(offset)
                            .map_err(io_err(format!("truncate {}", path.display())))?;
                        file.sync_all()
                            .map_err(io_err(format!("sync {}", path.display())))?;
                    }
                    recovery.torn_tail = Some((path.clone(), offset, file_len - offset, reason));
                }
                Active {
                    path,
                    file,
                    header,
                    len,
                }
            }
            None if sealed.is_empty() => {
                return Err(layout("holds no segments (is this a jfs volume?)".into()));
            }
            None if read_only => {
                return Err(layout("has no active segment".into()));
            }
            None => {
                // A crash between sealing and creating the next active segment.
                let header = ActiveHeader {
                    volume_id,
                    first_seq: head.seq + 1,
                    prev_chain: head.chain,
                };
                create_active(dir, header, config.segment_bytes)?
            }
        };
        let mut journal = Journal {
            dir: dir.to_owned(),
            volume_id,
            config,
            sealed,
            active,
            head,
            read_only,
            frame_buf: Vec::new(),
            before_last: None,
            retired: None,
            sealing: None,
            retry_at: None,
        };
        if let Some((path, header, len)) = retired {
            let file = File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
            journal.retired = Some(Active {
                path,
                file,
                header,
                len,
            });
            if !read_only {
                journal.finish_retired(true)?;
            }
        }
        Ok((journal, recovery))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn volume_id(&self) -> VolumeId {
        self.volume_id
    }

    /// Position after the last record.
    pub fn head(&self) -> Position {
        self.head
    }

    /// Sequence number of the oldest record still held.
    pub fn first_seq(&self) -> u64 {
        match (self.sealed.first(), &self.retired) {
            (Some(s), _) => s.header.first_seq,
            (None, Some(r)) => r.header.first_seq,
            (None, None) => self.active.header.first_seq,
        }
    }

    /// Appends `record`, whose `seq` must be `head().seq + 1`. The bytes are in
    /// the file (not yet durable: see [`Journal::sync`]) when this returns; on
    /// failure nothing of the record stays in the file.
    pub fn append(&mut self, record: &Record) -> Result<Position> {
        // Encoded straight into the frame: a write's data is not copied
        // once more on its way to the file.
        self.frame_buf.clear();
        self.frame_buf.resize(FRAME_HEADER_LEN, 0);
        record
            .encode_into(&mut self.frame_buf)
            .map_err(|source| JournalError::Record {
                seq: record.seq,
                source,
            })?;
        finish_frame(&mut self.frame_buf);
        self.append_frame(record.seq)
    }

    /// Appends a record received as bytes (from another journal): it is
    /// decoded and validated, and the exact bytes are kept so chains agree.
    pub fn append_encoded(&mut self, bytes: &[u8]) -> Result<(Position, Record)> {
        let record = Record::decode(bytes).map_err(|source| JournalError::Record {
            seq: self.head.seq + 1,
            source,
        })?;
        self.frame_buf.clear();
        encode_frame(bytes, &mut self.frame_buf);
        let pos = self.append_frame(record.seq)?;
        Ok((pos, record))
    }

    /// Appends the frame in `frame_buf`, which holds record `seq`.
    fn append_frame(&mut self, seq: u64) -> Result<Position> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        if seq != self.head.seq + 1 {
            return Err(JournalError::OutOfOrder {
                seq,
                head: self.head.seq,
            });
        }
        if let Err(e) = self
            .active
            .file
            .write_all_at(&self.frame_buf, self.active.len)
        {
            // Leave no partial frame behind. If even this fails, reopening
            // treats what is left as a torn tail.
            let _ = self.active.file.set_len(self.active.len);
            // Cutting back also gave the reserve back.
            reserve(&self.active.file, self.config.segment_bytes);
            return Err(JournalError::Io {
                context: format!("append record {seq}"),
                source: e,
            });
        }
        self.before_last = Some((self.active.len, self.head));
        self.active.len += self.frame_buf.len() as u64;
        self.head = self.head.next(&self.frame_buf[FRAME_HEADER_LEN..]);
        Ok(self.head)
    }

    /// Removes the record appended last, which nobody may have read yet: the
    /// master retracts a record whose operation its tree refused. Only the
    /// latest append can be retracted, and not once it is sealed.
    pub fn retract_last(&mut self) -> Result<()> {
        let Some((len, head)) = self.before_last.take() else {
            return Err(JournalError::Layout {
                dir: self.dir.clone(),
                reason: "no record to retract".into(),
            });
        };
        self.active
            .file
            .set_len(len)
            .map_err(io_err(format!("truncate {}", self.active.path.display())))?;
        reserve(&self.active.file, self.config.segment_bytes);
        self.active.len = len;
        self.head = head;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<()> {
        for seg in self.to_sync() {
            seg.file
                .sync_data()
                .map_err(io_err(format!("sync {}", seg.path.display())))?;
        }
        Ok(())
    }

    /// The segment files a sync flushes, in the order it must: the full
    /// segment first, as recovery relies on (see `open`). None when the
    /// journal is read-only.
    fn to_sync(&self) -> impl Iterator<Item = &Active> {
        let segments = (!self.read_only).then(|| self.retired.iter().chain([&self.active]));
        segments.into_iter().flatten()
    }

    /// [`Journal::sync`] in two steps: this takes its own descriptors of the
    /// files to sync, and [`JournalSync::wait`] syncs them without the
    /// journal, so appends go on meanwhile. Every record appended before
    /// this call is durable once `wait` returns. A segment sealed and
    /// removed in between was synced in its sealed copy first, so syncing
    /// the removed file costs nothing and loses nothing.
    pub fn start_sync(&self) -> Result<JournalSync> {
        let files = self
            .to_sync()
            .map(|seg| {
                let file = seg
                    .file
                    .try_clone()
                    .map_err(io_err(format!("duplicate {}", seg.path.display())))?;
                Ok((seg.path.clone(), file))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(JournalSync { files })
    }

    /// True when the active segment has reached the configured size.
    pub fn is_full(&self) -> bool {
        self.active.len >= self.config.segment_bytes
    }

    /// Called after appends: moves a full active segment aside and seals it
    /// on a thread of its own, so the append that fills a segment does not
    /// wait for compressing, hashing and writing it. Appends go on in a new
    /// active segment meanwhile; readers read the full one until its sealed
    /// copy is in place. One segment is sealed at a time: when the next one
    /// fills first, this waits for that seal.
    ///
    /// Returns the segment whose sealing finished, if one did. When that
    /// fails (a full disk), appends go on in the full segment, and the
    /// next try is `SEAL_RETRY` later, so that each append does not
    /// pay for a seal that cannot succeed.
    pub fn seal_if_full(&mut self) -> Result<Option<SegmentInfo>> {
        // A failed background seal is retried, and reported, below or by `seal`.
        let mut done = self.finish_retired(false).unwrap_or(None);
        if !self.is_full() || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(done);
        }
        let rolled = self.finish_retired(true).and_then(|info| {
            done = info.or(done.take());
            self.retire_active()
        });
        self.retry_at = rolled.is_err().then(|| Instant::now() + SEAL_RETRY);
        rolled.map(|()| done)
    }

    /// Seals the active segment (if it holds any record) into an immutable,
    /// compressed, checksummed file and starts a new active segment, after
    /// finishing a seal begun by [`Journal::seal_if_full`].
    ///
    /// It goes as for a full segment: the next active segment is started
    /// first, so that the journal has one at every moment, even to a
    /// read-only reader after a crash. Crash-safe in every step: the sealed
    /// file appears whole (written to a temporary name, synced, renamed),
    /// and until the old active file is removed, [`Journal::open`]
    /// recognizes it as already sealed. When sealing fails (a full disk),
    /// the segment stays active, as it was.
    pub fn seal(&mut self) -> Result<Option<SegmentInfo>> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        self.finish_retired(true)?;
        if self.head.seq == self.active.header.start().seq {
            return Ok(None);
        }
        self.retire_active()?;
        match self.finish_retired(true) {
            Ok(info) => Ok(info),
            Err(e) => {
                self.unretire();
                Err(e)
            }
        }
    }

    /// Makes the retired segment, whose seal failed, the active one again
    /// while the segment started after it holds nothing yet.
    fn unretire(&mut self) {
        if self.head != self.active.header.start() || self.sealing.is_some() {
            return;
        }
        let Some(retired) = self.retired.take() else {
            return;
        };
        let empty = std::mem::replace(&mut self.active, retired);
        drop(empty.file);
        let _ = fs::remove_file(&empty.path);
        let _ = sync_dir(&self.dir);
    }

    /// What sealing `seg`, which ends at the head or at the active segment's
    /// start, takes; it can move to another thread.
    fn to_seal(&self, seg: &Active) -> Result<ToSeal> {
        let end = if seg.path == self.active.path {
            self.head
        } else {
            self.active.header.start()
        };
        Ok(ToSeal {
            dir: self.dir.clone(),
            volume_id: self.volume_id,
            zstd_level: self.config.zstd_level,
            file: seg
                .file
                .try_clone()
                .map_err(io_err(format!("open {}", seg.path.display())))?,
            path: seg.path.clone(),
            header: seg.header,
            len: seg.len,
            end,
        })
    }

    /// Starts a new active segment after the head and seals the old one on
    /// a thread (or here, if no thread can be started).
    fn retire_active(&mut self) -> Result<()> {
        debug_assert!(self.retired.is_none());
        if self.head.seq == self.active.header.start().seq {
            return Ok(());
        }
        let next = ActiveHeader {
            volume_id: self.volume_id,
            first_seq: self.head.seq + 1,
            prev_chain: self.head.chain,
        };
        let old = std::mem::replace(
            &mut self.active,
            create_active(&self.dir, next, self.config.segment_bytes)?,
        );
        self.before_last = None;
        let job = self.to_seal(&old)?;
        self.retired = Some(old);
        let thread = std::thread::Builder::new()
            .name("jfs-seal".into())
            .spawn(move || job.write());
        match thread {
            Ok(handle) => self.sealing = Some(handle),
            Err(_) => {
                self.finish_retired(true)?;
            }
        }
        Ok(())
    }

    /// Puts the sealed copy of the retired segment in its place, once the
    /// thread sealing it is done (or, with `wait`, after waiting for it; a
    /// seal that failed is tried again here). Returns the sealed segment.
    fn finish_retired(&mut self, wait: bool) -> Result<Option<SegmentInfo>> {
        let Some(retired) = &self.retired else {
            return Ok(None);
        };
        let sealed = match self.sealing.take() {
            Some(handle) if wait || handle.is_finished() => handle.join().unwrap_or_else(|_| {
                Err(JournalError::Layout {
                    dir: self.dir.clone(),
                    reason: format!("sealing {} failed (panic)", retired.path.display()),
                })
            }),
            Some(handle) => {
                self.sealing = Some(handle);
                return Ok(None);
            }
            None if wait => self.to_seal(retired)?.write(),
            None => return Ok(None),
        }?;
        let old = self.retired.take().expect("a retired segment");
        let info = SegmentInfo {
            path: sealed.path.clone(),
            sealed: true,
            first_seq: sealed.header.first_seq,
            last_seq: sealed.header.last_seq,
            file_bytes: sealed.file_bytes,
        };
        self.sealed.push(sealed);
        drop(old.file);
        fs::remove_file(&old.path).map_err(io_err(format!("remove {}", old.path.display())))?;
        sync_dir(&self.dir)?;
        Ok(Some(info))
    }

    /// Writes a sealed segment file that ends the journal at
    /// `header.end()`, and starts the next active segment. The order keeps
    /// every crash readable, by writers and readers alike: the file is
    /// written under a temporary name, the next active segment is created,
    /// and only then is the file renamed in. A crash before the rename
    /// leaves the journal as it was: a new active segment that does not
    /// continue the old, empty one, which [`Journal::open`] removes. After
    /// it, the old active segment is covered by the sealed one, and goes.
    /// (Renaming first would leave, for a while, no active segment, which
    /// only a writer can repair.)
    fn add_sealed(&mut self, header: SealedHeader, bytes: &[&[u8]]) -> Result<SegmentInfo> {
        let name = segment_name(header.first_seq, SEALED_EXT);
        let tmp = write_tmp(&self.dir, &name, bytes)?;
        let next = ActiveHeader {
            volume_id: self.volume_id,
            first_seq: header.last_seq + 1,
            prev_chain: header.last_chain,
        };
        let next = create_active(&self.dir, next, self.config.segment_bytes).and_then(|next| {
            match rename_in(&self.dir, &tmp, &name) {
                Ok(path) => Ok((path, next)),
                Err(e) => {
                    let _ = fs::remove_file(&next.path);
                    Err(e)
                }
            }
        });
        let (path, next) = match next {
            Ok(done) => done,
            Err(e) => {
                // The journal stays as it was: the old segment takes appends.
                let _ = fs::remove_file(&tmp);
                let _ = sync_dir(&self.dir);
                return Err(e);
            }
        };
        let file_bytes = bytes.iter().map(|b| b.len() as u64).sum();
        let info = SegmentInfo {
            path: path.clone(),
            sealed: true,
            first_seq: header.first_seq,
            last_seq: header.last_seq,
            file_bytes,
        };
        self.sealed.push(Sealed {
            path,
            header,
            file_bytes,
        });
        self.head = header.end();
        self.before_last = None;
        let old = std::mem::replace(&mut self.active, next);
        fs::remove_file(&old.path).map_err(io_err(format!("remove {}", old.path.display())))?;
        sync_dir(&self.dir)?;
        Ok(info)
    }

    /// Every segment, oldest first; the active one last.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let mut v: Vec<SegmentInfo> = self
            .sealed
            .iter()
            .map(|s| SegmentInfo {
                path: s.path.clone(),
                sealed: true,
                first_seq: s.header.first_seq,
                last_seq: s.header.last_seq,
                file_bytes: s.file_bytes,
            })
            .collect();
        if let Some(r) = &self.retired {
            v.push(SegmentInfo {
                path: r.path.clone(),
                sealed: false,
                first_seq: r.header.first_seq,
                last_seq: self.active.header.first_seq - 1,
                file_bytes: r.len,
            });
        }
        v.push(SegmentInfo {
            path: self.active.path.clone(),
            sealed: false,
            first_seq: self.active.header.first_seq,
            last_seq: self.head.seq,
            file_bytes: self.active.len,
        });
        v
    }

    /// Bytes of record frames the journal holds, uncompressed: what it would
    /// take to ship them all.
    pub fn raw_bytes(&self) -> u64 {
        let sealed: u64 = self.sealed.iter().map(|s| s.header.raw_len).sum();
        let active: u64 = self
            .retired
            .iter()
            .chain([&self.active])
            .map(|a| a.len - ACTIVE_HEADER_LEN as u64)
            .sum();
        sealed + active
    }

    /// Adds a sealed segment received from another journal of this volume,
    /// byte for byte, after verifying all of it: header, checksum, every
    /// record, and that it continues this journal's head. Records in the
    /// active segment are sealed first, so the segment becomes the newest.
    pub fn install_sealed(&mut self, bytes: &[u8]) -> Result<(SegmentInfo, Vec<Entry>)> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        let path = Path::new("<received segment>");
        let header = SealedHeader::decode(bytes).map_err(|source| JournalError::Header {
            segment: path.to_owned(),
            source,
        })?;
        check_volume(path, self.volume_id, header.volume_id)?;
        if header.start() != self.head {
            return Err(JournalError::Layout {
                dir: self.dir.clone(),
                reason: format!(
                    "received segment starts at {} but the journal ends at {}",
                    header.start(),
                    self.head
                ),
            });
        }
        let mut frames = SealedFrames::from_bytes(path, header, bytes)?;
        let mut entries = Vec::new();
        while let Some(e) = frames.next_entry()? {
            entries.push(e);
        }
        self.seal()?;
        // An empty active segment of the same first seq is now covered: open
        // would remove it, and so does this.
        let info = self.add_sealed(header, &[bytes])?;
        Ok((info, entries))
    }

    /// Removes the sealed segments all of whose records are before `seq`,
    /// oldest first, and returns them. The active segment always stays, so
    /// does every record not yet sealed (and so not known to be durable).
    ///
    /// Crash-safe: each file is removed and the directory synced before the
    /// next one, so whatever a crash leaves is a journal that starts at a
    /// segment boundary, which [`Journal::open`] accepts. A reader that
    /// opened the journal before may find a segment gone; it gets
    /// [`JournalError::Trimmed`].
    pub fn trim_before(&mut self, seq: u64) -> Result<Vec<SegmentInfo>> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        let n = self
            .sealed
            .iter()
            .take_while(|s| s.header.last_seq < seq)
            .count();
        let mut removed = Vec::with_capacity(n);
        for _ in 0..n {
            let s = &self.sealed[0];
            match fs::remove_file(&s.path) {
                Ok(()) => {}
                // Removed by an earlier attempt that failed before syncing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(JournalError::Io {
                        context: format!("remove {}", s.path.display()),
                        source: e,
                    })
                }
            }
            sync_dir(&self.dir)?;
            let s = self.sealed.remove(0);
            removed.push(SegmentInfo {
                path: s.path,
                sealed: true,
                first_seq: s.header.first_seq,
                last_seq: s.header.last_seq,
                file_bytes: s.file_bytes,
            });
        }
        Ok(removed)
    }

    /// Bytes the journal takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments().iter().map(|s| s.file_bytes).sum()
    }

    /// Reads records with `seq >= from`, in order, each verified (checksums,
    /// chain, sequence) before it is returned.
    pub fn read_from(&self, from: u64) -> Result<Reader> {
        let first = self.first_seq();
        if from < first.max(1) || from > self.head.seq + 1 {
            return Err(JournalError::NotFound {
                seq: from,
                first,
                last: self.head.seq,
            });
        }
        let mut sources: VecDeque<Source> = self
            .sealed
            .iter()
            .filter(|s| s.header.last_seq >= from)
            .map(|s| Source::Sealed(s.clone()))
            .collect();
        let retired = self
            .retired
            .iter()
            .filter(|_| self.active.header.first_seq > from);
        for a in retired.chain([&self.active]) {
            sources.push_back(Source::Active {
                path: a.path.clone(),
                header: a.header,
                len: a.len,
            });
        }
        Ok(Reader {
            volume_id: self.volume_id,
            from,
            sources,
            current: None,
            done: false,
        })
    }

    /// The position after record `seq` (`seq` 0 is the start of the journal).
    pub fn position_at(&self, seq: u64) -> Result<Position> {
        if seq == self.head.seq {
            return Ok(self.head);
        }
        if seq == 0 {
            return Ok(Position::ZERO);
        }
        if let Some(s) = self.sealed.iter().find(|s| s.header.first_seq == seq + 1) {
            return Ok(s.header.start());
        }
        if let Some(a) = self
            .retired
            .iter()
            .chain([&self.active])
            .find(|a| a.header.first_seq == seq + 1)
        {
            return Ok(a.header.start());
        }
        match self.read_from(seq)?.next() {
            Some(Ok(e)) if e.position.seq == seq => Ok(e.position),
            Some(Err(e)) => Err(e),
            _ => Err(JournalError::NotFound {
                seq,
                first: self.first_seq(),
                last: self.head.seq,
            }),
        }
    }
}

impl Drop for Journal {
    /// A seal still running finishes first, so no thread writes in the
    /// journal's directory once it is closed; the old active file it leaves
    /// is removed by the next [`Journal::open`].
    fn drop(&mut self) {
        if let Some(handle) = self.sealing.take() {
            let _ = handle.join();
        }
    }
}

/// One active segment to seal, with all it takes: see [`Journal::seal`].
struct ToSeal {
    dir: PathBuf,
    volume_id: VolumeId,
    zstd_level: Option<i32>,
    file: File,
    path: PathBuf,
    header: ActiveHeader,
    /// File length: header plus whole frames.
    len: u64,
    /// Position after the last record.
    end: Position,
}

impl ToSeal {
    /// Writes the sealed file beside the active one, durably, reading the
    /// active one a MiB at a time: memory stays small whatever the segment
    /// size. The body is zstd-compressed unless compression does not pay
    /// (already compressed or random data, judged on the first MiB, or a
    /// body no smaller than the frames), in which case the frames are
    /// stored as they are. Written with `O_DIRECT` where the filesystem has
    /// it: from memory to the disk, without a copy in the page cache that
    /// nobody would read soon.
    fn write(self) -> Result<Sealed> {
        let level = self
            .zstd_level
            .filter(|&level| self.worth_compressing(level));
        let tmp = self.dir.join(format!(
            "{}.{TMP_EXT}",
            segment_name(self.header.first_seq, SEALED_EXT)
        ));
        let attempt = |direct| -> io::Result<(SealedHeader, u64)> {
            if let Some(level) = level {
                let (header, len) = self.write_to(&tmp, direct, Some(level))?;
                if header.body_len < header.raw_len {
                    return Ok((header, len));
                }
            }
            self.write_to(&tmp, direct, None)
        };
        let (header, file_bytes) = match attempt(true) {
            // No O_DIRECT here, or not for these sizes: an ordinary write.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                attempt(false)
            }
            r => r,
        }
        .map_err(|e| {
            // A copy cut short (a full disk) gives its room back at once.
            let _ = fs::remove_file(&tmp);
            io_err(format!("write {}", tmp.display()))(e)
        })?;
        let path = self.dir.join(segment_name(header.first_seq, SEALED_EXT));
        fs::rename(&tmp, &path).map_err(io_err(format!("rename {}", tmp.display())))?;
        sync_dir(&self.dir)?;
        Ok(Sealed {
            path,
            header,
            file_bytes,
        })
    }

    /// Whether zstd shrinks the first MiB of frames by a tenth.
    fn worth_compressing(&self, level: i32) -> bool {
        let raw_len = self.len - ACTIVE_HEADER_LEN as u64;
        let mut sample = vec![0u8; raw_len.min(CHUNK as u64) as usize];
        self.file
            .read_exact_at(&mut sample, ACTIVE_HEADER_LEN as u64)
            .is_ok()
            && zstd::bulk::compress(&sample, level).is_ok_and(|c| c.len() * 10 < sample.len() * 9)
    }

    /// Fills `buf` from the segment's frames, `at` bytes after the first.
    /// A failure names the segment and keeps its kind, but not its errno:
    /// only errors of the copy's writes carry one to [`ToSeal::write`].
    fn read_frames_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.file
            .read_exact_at(buf, ACTIVE_HEADER_LEN as u64 + at)
            .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", self.path.display())))
    }

    /// Writes the sealed file to `tmp`, synced; returns its header and length.
    fn write_to(
        &self,
        tmp: &Path,
        direct: bool,
        level: Option<i32>,
    ) -> io::Result<(SealedHeader, u64)> {
        let start = self.header.start();
        let raw_len = self.len - ACTIVE_HEADER_LEN as u64;
        let mut out = BodyWriter::create(tmp, direct)?;
        let frames = |sink: &mut dyn io::Write| -> io::Result<()> {
            let mut chunk = vec![0u8; CHUNK];
            let mut done = 0;
            while done < raw_len {
                let n = (raw_len - done).min(CHUNK as u64) as usize;
                self.read_frames_at(&mut chunk[..n], done)?;
                sink.write_all(&chunk[..n])?;
                done += n as u64;
            }
            Ok(())
        };
        let compression = match level {
            Some(level) => {
                let mut zstd = zstd::stream::write::Encoder::new(&mut out, level)?;
                // As a one-shot compression of the whole would: the same bytes.
                zstd.set_pledged_src_size(Some(raw_len))?;
                zstd.include_contentsize(true)?;
                frames(&mut zstd)?;
                zstd.finish()?;
                Compression::Zstd
            }
            None => {
                // Stored: read straight into the writer's buffer.
                out.read_from(raw_len, |buf, at| self.read_frames_at(buf, at))?;
                Compression::None
            }
        };
        let (body_len, body_sum) = out.body();
        let header = SealedHeader {
            volume_id: self.volume_id,
            compression,
            first_seq: start.seq + 1,
            last_seq: self.end.seq,
            prev_chain: start.chain,
            last_chain: self.end.chain,
            raw_len,
            body_len,
            body_sum,
        };
        let len = out.finish(&header.encode())?;
        Ok((header, len))
    }
}

/// Reads and writes of sealing go a MiB at a time.
const CHUNK: usize = 1 << 20;

/// Block size that `O_DIRECT` writes are aligned to, in memory and on disk.
const DIRECT_ALIGN: usize = 4096;

/// Zeroed bytes that start on a [`DIRECT_ALIGN`] boundary in memory.
struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn zeroed(len: usize) -> AlignedBuf {
        let buf = vec![0u8; len + DIRECT_ALIGN];
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf { buf, start, len }
    }

    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// The body of a sealed file, written after room for its header, in whole
/// blocks from an aligned buffer (so `O_DIRECT` can take them), hashed on
/// the way. [`BodyWriter::finish`] puts the header in front.
struct BodyWriter {
    file: File,
    buf: AlignedBuf,
    /// Bytes of `buf` in use; the file's first bytes are the header's room.
    fill: usize,
    /// File offset of `buf`.
    offset: u64,
    /// The file's first block as written, to put the header in at the end.
    first: Option<AlignedBuf>,
    body_len: u64,
    sum: BodyHasher,
}

impl BodyWriter {
    fn create(path: &Path, direct: bool) -> io::Result<BodyWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = if direct {
            rustix::fs::OFlags::DIRECT.bits() as i32
        } else {
            0
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(path)?;
        Ok(BodyWriter {
            file,
            buf: AlignedBuf::zeroed(CHUNK),
            fill: SEALED_HEADER_LEN,
            offset: 0,
            first: None,
            body_len: 0,
            sum: BodyHasher::new(FORMAT_VERSION),
        })
    }

    /// Writes the whole blocks of `buf` and keeps the rest.
    fn flush_blocks(&mut self) -> io::Result<()> {
        let whole = self.fill / DIRECT_ALIGN * DIRECT_ALIGN;
        if whole == 0 {
            return Ok(());
        }
        if self.offset == 0 {
            let mut first = AlignedBuf::zeroed(DIRECT_ALIGN);
            first
                .as_mut()
                .copy_from_slice(&self.buf.as_ref()[..DIRECT_ALIGN]);
            self.first = Some(first);
        }
        self.file
            .write_all_at(&self.buf.as_ref()[..whole], self.offset)?;
        self.offset += whole as u64;
        let rest = self.fill - whole;
        self.buf.as_mut().copy_within(whole..self.fill, 0);
        self.fill = rest;
        Ok(())
    }

    /// Adds `len` bytes, as writing them would, but has `read(buf, at)`
    /// fill them in (`at` counts from the first) straight into the buffer
    /// that goes to the disk: no copy between. Errors of `read` and of the
    /// writes come back as they are.
    fn read_from(
        &mut self,
        len: u64,
        mut read: impl FnMut(&mut [u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut at = 0;
        while at < len {
            let n = ((CHUNK - self.fill) as u64).min(len - at) as usize;
            let room = &mut self.buf.as_mut()[self.fill..self.fill + n];
            read(room, at)?;
            self.sum.update(room);
            self.fill += n;
            self.body_len += n as u64;
            if self.fill == CHUNK {
                self.flush_blocks()?;
            }
            at += n as u64;
        }
        Ok(())
    }

    fn body(&self) -> (u64, BodySum) {
        (self.body_len, self.sum.clone().finish())
    }

    /// Writes what is left (the last block padded with zeros, then cut
    /// back), the header into the first block, and syncs. Returns the
    /// file's length.
    fn finish(mut self, header: &[u8]) -> io::Result<u64> {
        let len = SEALED_HEADER_LEN as u64 + self.body_len;
        let padded = self.fill.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        if self.offset == 0 {
            self.buf.as_mut()[..header.len()].copy_from_slice(header);
        }
        self.file
            .write_all_at(&self.buf.as_ref()[..padded], self.offset)?;
        if let Some(mut first) = self.first.take() {
            first.as_mut()[..header.len()].copy_from_slice(header);
            self.file.write_all_at(first.as_ref(), 0)?;
        }
        self.file.set_len(len)?;
        self.file.sync_all()?;
        Ok(len)
    }
}

impl io::Write for BodyWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.fill);
        self.buf.as_mut()[self.fill..self.fill + n].copy_from_slice(&bytes[..n]);
        self.sum.update(&bytes[..n]);
        self.fill += n;
        self.body_len += n as u64;
        if self.fill == CHUNK {
            self.flush_blocks()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn check_volume(path: &Path, expected: VolumeId, found: VolumeId) -> Result<()> {
    if expected != found {
        return Err(JournalError::WrongVolume {
            segment: path.to_owned(),
            expected,
            found,
        });
    }
    Ok(())
}

#[derive(Default)]
struct Listing {
    sealed: Vec<PathBuf>,
    active: Vec<PathBuf>,
    tmp: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<Listing> {
    let mut l = Listing::default();
    let ctx = format!("list {}", dir.display());
    for entry in fs::read_dir(dir).map_err(io_err(&ctx))? {
        let path = entry.map_err(io_err(&ctx))?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        let stem_ok = path
            .file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()));
        match ext {
            Some(TMP_EXT) => l.tmp.push(path),
            Some(SEALED_EXT) if stem_ok => l.sealed.push(path),
            Some(ACTIVE_EXT) if stem_ok => l.active.push(path),
            _ => {
                return Err(JournalError::Layout {
                    dir: dir.to_owned(),
                    reason: format!("unexpected file {}", path.display()),
                })
            }
        }
    }
    l.sealed.sort();
    l.active.sort();
    Ok(l)
}

fn create_active(dir: &Path, header: ActiveHeader, segment_bytes: u64) -> Result<Active> {
    let name = segment_name(header.first_seq, ACTIVE_EXT);
    let path = write_atomic(dir, &name, &[&header.encode()])?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {}", path.display())))?;
    reserve(&file, segment_bytes);
    Ok(Active {
        path,
        file,
        header,
        len: ACTIVE_HEADER_LEN as u64,
    })
}

/// Sets the disk space of a whole segment aside for the active segment's
/// appends, without changing its length: when the disk fills up, records
/// still fit, among them the removals that give room back. Where the
/// space is not there (or the filesystem cannot set it aside) appends go
/// on without, as they would anyway.
fn reserve(file: &File, segment_bytes: u64) {
    let _ = rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::KEEP_SIZE,
        0,
        segment_bytes,
    );
}

fn read_prefix(path: &Path, n: usize) -> Result<(Vec<u8>, u64)> {
    let ctx = format!("read {}", path.display());
    let f = File::open(path).map_err(io_err(&ctx))?;
    let len = f.metadata().map_err(io_err(&ctx))?.len();
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64)
        .read_to_end(&mut buf)
        .map_err(io_err(&ctx))?;
    Ok((buf, len))
}

fn read_sealed_header(path: &Path) -> Result<(SealedHeader, u64)> {
    let (buf, len) = read_prefix(path, SEALED_HEADER_LEN)?;
    let header = SealedHeader::decode(&buf).map_err(|source| JournalError::Header {
        segment: path.to_owned(),
        source,
    })?;
    Ok((header, len))
}

fn read_active_header(path: &Path) -> Result<ActiveHeader> {
    let (buf, _) = read_prefix(path, ACTIVE_HEADER_LEN)?;
    ActiveHeader::decode(&buf).map_err(|source| JournalError::Header {
        segment: path.to_owned(),
        source,
    })
}

/// Walks the frames of an active segment, verifying each record and the chain.
/// Returns the length up to the last whole record, the position there (if any
/// record), and the torn tail (offset, reason) if there is one.
#[allow(clippy::type_complexity)]
fn scan_active(
    path: &Path,
    header: ActiveHeader,
) -> Result<(u64, Option<Position>, Option<(u64, &'static str)>)> {
    let buf = fs::read(path).map_err(io_err(format!("read {}", path.display())))?;
    let mut walker = FrameWalker::new(path, buf, ACTIVE_HEADER_LEN, header.start());
    let mut last = None;
    while let Some(entry) = walker.next_entry()? {
        last = Some(entry.position);
    }
    let torn = walker.torn.map(|reason| (walker.at as u64, reason));
    Ok((walker.at as u64, last, torn))
}

/// Decodes and verifies the frames of an active segment one after another
/// from a buffer; a torn tail is where they end. (Sealed bodies, in which
/// every defect is damage, are read by [`SealedFrames`].)
struct FrameWalker {
    path: PathBuf,
    buf: Vec<u8>,
    at: usize,
    pos: Position,
    torn: Option<&'static str>,
}

impl FrameWalker {
    fn new(path: &Path, buf: Vec<u8>, at: usize, start: Position) -> FrameWalker {
        FrameWalker {
            path: path.to_owned(),
            buf,
            at,
            pos: start,
            torn: None,
        }
    }

    fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.torn.is_some() {
            return Ok(None);
        }
        match decode_frame(&self.path, &self.buf, self.at, self.pos)? {
            Framed::Entry(entry, next) => {
                self.pos = entry.position;
                self.at = next;
                Ok(Some(entry))
            }
            Framed::End => Ok(None),
            Framed::Torn(reason) => {
                self.torn = Some(reason);
                Ok(None)
            }
        }
    }
}

/// What [`decode_frame`] found. Matched as soon as it is returned, never
/// kept, so the size of the record variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Framed {
    /// The record and where the next frame starts.
    Entry(Entry, usize),
    End,
    Torn(&'static str),
}

/// Decodes the frame at `at` of `buf` (frames of the segment file `path`)
/// as the record after `pos`, checking its checksums and sequence number.
fn decode_frame(path: &Path, buf: &[u8], at: usize, pos: Position) -> Result<Framed> {
    let corrupt = |reason: String| JournalError::Corrupt {
        segment: path.to_owned(),
        offset: at as u64,
        reason,
    };
    match next_frame(buf, at) {
        FrameStep::End => Ok(Framed::End),
        FrameStep::Torn(reason) => Ok(Framed::Torn(reason)),
        FrameStep::Corrupt(reason) => Err(corrupt(reason)),
        FrameStep::Frame { payload, next } => {
            let bytes = &buf[payload];
            let record = Record::decode(bytes)
                .map_err(|e| corrupt(format!("record does not decode: {e}")))?;
            if record.seq != pos.seq + 1 {
                return Err(corrupt(format!(
                    "record seq {} where {} was expected",
                    record.seq,
                    pos.seq + 1
                )));
            }
            let entry = Entry {
                position: pos.next(bytes),
                prev_chain: pos.chain,
                record,
            };
            Ok(Framed::Entry(entry, next))
        }
    }
}

#[derive(Clone)]
enum Source {
    Sealed(Sealed),
    Active {
        path: PathBuf,
        header: ActiveHeader,
        len: u64,
    },
}

/// Checks that the sealed body of `path` read from `body` has the length
/// and checksum that `header` gives; returns the length.
fn check_body(path: &Path, header: &SealedHeader, mut body: impl Read) -> Result<u64> {
    let mut sum = BodyHasher::new(header.body_sum.version());
    let body_len =
        io::copy(&mut body, &mut sum).map_err(io_err(format!("read {}", path.display())))?;
    let corrupt = |offset: u64, reason: String| JournalError::Corrupt {
        segment: path.to_owned(),
        offset,
        reason,
    };
    if body_len != header.body_len {
        return Err(corrupt(
            SEALED_HEADER_LEN as u64 + body_len,
            format!(
                "body is {body_len} bytes but the header says {}",
                header.body_len
            ),
        ));
    }
    if sum.finish() != header.body_sum {
        return Err(corrupt(
            SEALED_HEADER_LEN as u64,
            "body checksum mismatch".into(),
        ));
    }
    Ok(body_len)
}

/// The records of one sealed segment, read a record at a time: every
/// reader of a sealed body goes through here. The body's length and
/// checksum are checked first, in a pass that holds a MiB at a time; the
/// body is then decompressed as its frames are read. So a reader holds one
/// record and its buffers, not the segment (64 MiB by default, once
/// compressed and again decompressed). Reading a file, both passes read the
/// same open file, which a trim may unlink but cannot change.
struct SealedFrames<'a> {
    path: PathBuf,
    header: SealedHeader,
    body: Box<dyn Read + Send + 'a>,
    /// Decompressed bytes read so far: where the next frame starts.
    raw_at: u64,
    /// The position after the last record read.
    pos: Position,
    frame: Vec<u8>,
    done: bool,
}

impl SealedFrames<'static> {
    /// The records of the sealed segment file `s`.
    fn open(s: &Sealed, volume_id: VolumeId) -> Result<SealedFrames<'static>> {
        check_volume(&s.path, volume_id, s.header.volume_id)?;
        let ctx = || format!("read {}", s.path.display());
        let mut file = match File::open(&s.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(JournalError::Trimmed {
                    segment: s.path.clone(),
                })
            }
            Err(e) => return Err(io_err(ctx())(e)),
        };
        let mut header = [0u8; SEALED_HEADER_LEN];
        let same = match file.read_exact(&mut header) {
            Ok(()) => SealedHeader::decode(&header).ok() == Some(s.header),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(io_err(ctx())(e)),
        };
        if !same {
            return Err(JournalError::Corrupt {
                segment: s.path.clone(),
                offset: 0,
                reason: "header changed since the journal was opened".into(),
            });
        }
        let body_len = check_body(
            &s.path,
            &s.header,
            io::BufReader::with_capacity(1 << 20, &file),
        )?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(SEALED_HEADER_LEN as u64))
            .map_err(io_err(ctx()))?;
        SealedFrames::new(&s.path, s.header, file.take(body_len))
    }
}

impl<'a> SealedFrames<'a> {
    /// The records of a sealed segment held in memory (`bytes`, the whole
    /// file), for one received from another journal.
    fn from_bytes(path: &Path, header: SealedHeader, bytes: &'a [u8]) -> Result<SealedFrames<'a>> {
        let body = &bytes[SEALED_HEADER_LEN.min(bytes.len())..];
        check_body(path, &header, body)?;
        SealedFrames::new(path, header, body)
    }

    /// Reads the frames of `stored`, a body already checked against
    /// `header`, decompressing as it goes.
    fn new(path: &Path, header: SealedHeader, stored: impl Read + Send + 'a) -> Result<Self> {
        let stored = io::BufReader::with_capacity(1 << 16, stored);
        // One byte past the declared length is let through, so that a body
        // that decompresses to more shows.
        let raw_cap = header.raw_len + 1;
        let body: Box<dyn Read + Send + 'a> = match header.compression {
            Compression::None => Box::new(stored.take(raw_cap)),
            Compression::Zstd => {
                let decoder = zstd::stream::read::Decoder::with_buffer(stored)
                    .map_err(io_err(format!("decompress {}", path.display())))?;
                Box::new(io::BufReader::with_capacity(1 << 16, decoder.take(raw_cap)))
            }
        };
        Ok(SealedFrames {
            path: path.to_owned(),
            header,
            body,
            raw_at: 0,
            pos: header.start(),
            frame: Vec::new(),
            done: false,
        })
    }

    fn corrupt(&self, offset: u64, reason: String) -> JournalError {
        JournalError::Corrupt {
            segment: self.path.clone(),
            offset,
            reason,
        }
    }

    /// The next record's bytes, or `None` after the last, once the body is
    /// known to end where the header says.
    fn next_record(&mut self) -> Result<Option<&[u8]>> {
        if self.done {
            return Ok(None);
        }
        let at = self.raw_at;
        let length_differs = || "decompressed length differs from the header".to_string();
        if at == self.header.raw_len {
            let mut one = [0u8; 1];
            if !matches!(self.body.read(&mut one), Ok(0)) {
                return Err(self.corrupt(at, length_differs()));
            }
            if self.pos != self.header.end() {
                return Err(self.corrupt(
                    at,
                    format!(
                        "body ends at {} but the header says {}",
                        self.pos,
                        self.header.end()
                    ),
                ));
            }
            self.done = true;
            return Ok(None);
        }
        match read_frame(&mut self.body, &mut self.frame) {
            Ok(true) => {}
            Ok(false) => return Err(self.corrupt(at, length_differs())),
            Err(ReadFrameError::CutShort) => {
                return Err(self.corrupt(at, "frame runs past the end".into()))
            }
            Err(ReadFrameError::Corrupt(reason)) => return Err(self.corrupt(at, reason)),
            Err(ReadFrameError::Io(e)) => {
                return Err(self.corrupt(at, format!("body does not decompress: {e}")))
            }
        }
        self.raw_at += self.frame.len() as u64;
        if self.raw_at > self.header.raw_len {
            return Err(self.corrupt(at, length_differs()));
        }
        let payload = &self.frame[FRAME_HEADER_LEN..];
        let want = self.pos.seq + 1;
        match Record::peek_seq(payload) {
            Some(seq) if seq == want => {}
            Some(seq) => {
                return Err(self.corrupt(at, format!("record seq {seq} where {want} was expected")))
            }
            None => return Err(self.corrupt(at, "record does not decode".into())),
        }
        self.pos = self.pos.next(payload);
        Ok(Some(&self.frame[FRAME_HEADER_LEN..]))
    }

    /// The next record, decoded.
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let prev_chain = self.pos.chain;
        let at = self.raw_at;
        let Some(bytes) = self.next_record()? else {
            return Ok(None);
        };
        let record = Record::decode(bytes);
        let record =
            record.map_err(|e| self.corrupt(at, format!("record does not decode: {e}")))?;
        Ok(Some(Entry {
            position: self.pos,
            prev_chain,
            record,
        }))
    }
}

/// What [`decode_segment`] found in one segment file.
#[derive(Debug)]
pub struct SegmentContents {
    pub sealed: bool,
    pub volume_id: VolumeId,
    pub entries: Vec<Entry>,
    /// For an active segment: the torn tail after the last whole record, if any.
    pub torn_tail: Option<(u64, &'static str)>,
}

/// Decodes and verifies a whole segment file (active or sealed) held in
/// memory: headers, checksums, every record and the chain. Pure; for tools,
/// tests and fuzzing.
pub fn decode_segment(bytes: &[u8]) -> Result<SegmentContents> {
    let path = Path::new("<memory>");
    let header_err = |source| JournalError::Header {
        segment: path.to_owned(),
        source,
    };
    let mut entries = Vec::new();
    if bytes.starts_with(&crate::format::SEALED_MAGIC) {
        let header = SealedHeader::decode(bytes).map_err(header_err)?;
        let mut frames = SealedFrames::from_bytes(path, header, bytes)?;
        while let Some(e) = frames.next_entry()? {
            entries.push(e);
        }
        return Ok(SegmentContents {
            sealed: true,
            volume_id: header.volume_id,
            entries,
            torn_tail: None,
        });
    }
    let header = ActiveHeader::decode(bytes).map_err(header_err)?;
    let mut walker = FrameWalker::new(path, bytes.to_vec(), ACTIVE_HEADER_LEN, header.start());
    while let Some(e) = walker.next_entry()? {
        entries.push(e);
    }
    Ok(SegmentContents {
        sealed: false,
        volume_id: header.volume_id,
        entries,
        torn_tail: walker.torn.map(|r| (walker.at as u64, r)),
    })
}

/// The records of one sealed segment file, as the exact bytes that were
/// journaled, after verifying its checksum and chain.
pub fn sealed_records(path: &Path, volume_id: VolumeId) -> Result<(SealedHeader, Vec<Vec<u8>>)> {
    let (header, file_bytes) = read_sealed_header(path)?;
    let mut frames = SealedFrames::open(
        &Sealed {
            path: path.to_owned(),
            header,
            file_bytes,
        },
        volume_id,
    )?;
    let mut records = Vec::with_capacity((header.last_seq + 1 - header.first_seq) as usize);
    while let Some(r) = frames.next_record()? {
        records.push(r.to_vec());
    }
    Ok((header, records))
}

/// Iterator over journal entries; see [`Journal::read_from`].
pub struct Reader {
    volume_id: VolumeId,
    from: u64,
    sources: VecDeque<Source>,
    current: Option<Frames<'static>>,
    done: bool,
}

/// The segment a [`Reader`] is in.
enum Frames<'a> {
    Sealed(SealedFrames<'a>),
    /// An active segment's records up to its length when the journal was
    /// read (an active segment is smaller than a sealed one's raw body).
    Active(FrameWalker),
}

impl Reader {
    fn step(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(frames) = &mut self.current {
                let next = match frames {
                    Frames::Sealed(f) => f.next_entry()?,
                    Frames::Active(w) => w.next_entry()?,
                };
                match next {
                    Some(e) if e.record.seq < self.from => continue,
                    Some(e) => return Ok(Some(e)),
                    None => self.current = None,
                }
            }
            let Some(source) = self.sources.pop_front() else {
                return Ok(None);
            };
            self.current = Some(match source {
                Source::Sealed(s) => Frames::Sealed(SealedFrames::open(&s, self.volume_id)?),
                Source::Active { path, header, len } => match read_active(&path, header, len)? {
                    Ok(buf) => Frames::Active(FrameWalker::new(
                        &path,
                        buf,
                        ACTIVE_HEADER_LEN,
                        header.start(),
                    )),
                    Err(sealed) => {
                        self.sources.push_front(Source::Sealed(sealed));
                        continue;
                    }
                },
            });
        }
    }
}

/// The first `len` bytes of the active segment `path`, which the journal
/// listed with `header`; or, when it has been sealed since (the same
/// records), the sealed segment to read instead.
fn read_active(
    path: &Path,
    header: ActiveHeader,
    len: u64,
) -> Result<std::result::Result<Vec<u8>, Sealed>> {
    let ctx = format!("read {}", path.display());
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let sealed = path.with_extension(SEALED_EXT);
            let (header, file_bytes) = read_sealed_header(&sealed)?;
            return Ok(Err(Sealed {
                path: sealed,
                header,
                file_bytes,
            }));
        }
        Err(e) => return Err(io_err(&ctx)(e)),
    };
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0).map_err(io_err(&ctx))?;
    if ActiveHeader::decode(&buf).ok() != Some(header) {
        return Err(JournalError::Corrupt {
            segment: path.to_owned(),
            offset: 0,
            reason: "header changed since the journal was opened".into(),
        });
    }
    Ok(Ok(buf))
}

impl Iterator for Reader {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
