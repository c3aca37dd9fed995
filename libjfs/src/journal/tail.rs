//! Reading a journal's newest records while another process appends to it.
//!
//! A [`Tail`] starts at a position that must lie on the journal and hands
//! out what follows, in chunks: a sealed segment that starts exactly there
//! is handed out whole (shipped as the file it is), anything else as the
//! verified bytes of records. It follows the active segment by file offset,
//! through seals and the creation of new active segments, and never reads
//! past a limit: the writer may still retract a record past what it has
//! published.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{
    io_err, list_dir, read_active_header, read_sealed_header, segment_name, JournalError, Sealed,
    SealedFrames, ACTIVE_EXT, SEALED_EXT,
};
use crate::format::{next_frame, FrameStep, SealedHeader, VolumeId, ACTIVE_HEADER_LEN};
use crate::position::Position;
use crate::record::{Marker, Op, Record};
use crate::Journal;

/// Why a tail cannot start at the position asked for.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("position {asked} is past the end of the journal ({head})")]
    Ahead { asked: Position, head: Position },
    #[error("position {asked} is not on this journal, which has {ours} there (diverged)")]
    Diverged { asked: Position, ours: Position },
    #[error("records after {asked_seq} were trimmed; the journal starts at {first_seq}")]
    Trimmed { asked_seq: u64, first_seq: u64 },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What [`Tail::next`] hands out.
#[derive(Debug)]
pub enum Chunk {
    /// A sealed segment file to ship byte for byte.
    Sealed {
        path: PathBuf,
        header: SealedHeader,
        file_bytes: u64,
    },
    /// Records after `prev`, as journaled; `end` is the position after the last.
    Records {
        prev: Position,
        records: Vec<Vec<u8>>,
        end: Position,
        /// The last record is the snapshot marker that was asked to stop at.
        reached_marker: bool,
    },
}

struct Cursor {
    path: PathBuf,
    file: File,
    first_seq: u64,
    offset: u64,
}

/// A reader that follows a journal from a position; see the module docs.
pub struct Tail {
    dir: PathBuf,
    volume_id: VolumeId,
    pos: Position,
    cursor: Option<Cursor>,
    /// A sealed segment entered in the middle, read a record at a time, and
    /// the record read from it that did not fit the last chunk.
    pending: Option<(SealedFrames<'static>, Option<Vec<u8>>)>,
}

impl Tail {
    /// A tail after `from`, which must be a position of the journal in `dir`.
    pub fn new(dir: &Path, volume_id: VolumeId, from: Position) -> Result<Tail, TailError> {
        let journal = Journal::open_read_only(dir, Some(volume_id))?;
        let head = journal.head();
        if from.seq > head.seq {
            return Err(TailError::Ahead { asked: from, head });
        }
        let first = journal.first_seq();
        if from.seq + 1 < first {
            return Err(TailError::Trimmed {
                asked_seq: from.seq,
                first_seq: first,
            });
        }
        let ours = journal.position_at(from.seq)?;
        if ours != from {
            return Err(TailError::Diverged { asked: from, ours });
        }
        Ok(Tail {
            dir: dir.to_owned(),
            volume_id,
            pos: from,
            cursor: None,
            pending: None,
        })
    }

    /// Position after the last record handed out.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next chunk of records with `seq <= limit`, or `None` when there is
    /// none yet. Record chunks stop near `max_bytes`. With `stop_at`, no
    /// sealed segment is handed out whole, and a chunk ends after the snapshot
    /// marker of that name.
    pub fn next(
        &mut self,
        limit: u64,
        max_bytes: usize,
        stop_at: Option<&str>,
    ) -> Result<Option<Chunk>, JournalError> {
        loop {
            if self.pos.seq >= limit {
                return Ok(None);
            }
            if let Some((frames, held)) = &mut self.pending {
                let prev = self.pos;
                let mut taken = Vec::new();
                let mut size = 0;
                let mut reached = false;
                while self.pos.seq < limit && !reached {
                    let r = match held.take() {
                        Some(r) => r,
                        None => match frames.next_record()? {
                            Some(r) => r.to_vec(),
                            None => break,
                        },
                    };
                    if size > 0 && size + r.len() > max_bytes {
                        *held = Some(r);
                        break;
                    }
                    size += r.len();
                    self.pos = self.pos.next(&r);
                    reached = stop_at.is_some_and(|name| is_marker(&r, name));
                    taken.push(r);
                }
                if taken.is_empty() {
                    // The segment is done: on to the next one.
                    self.pending = None;
                    continue;
                }
                return Ok(Some(Chunk::Records {
                    prev,
                    records: taken,
                    end: self.pos,
                    reached_marker: reached,
                }));
            }
            if self.cursor.is_some() {
                let (records, reached) = self.read_active(limit, max_bytes, stop_at)?;
                if !records.is_empty() {
                    let prev = self.pos;
                    for r in &records {
                        self.pos = self.pos.next(r);
                    }
                    return Ok(Some(Chunk::Records {
                        prev,
                        records,
                        end: self.pos,
                        reached_marker: reached,
                    }));
                }
                if !self.cursor_is_stale() {
                    return Ok(None);
                }
                self.cursor = None;
            }
            match self.locate(limit, stop_at.is_none())? {
                Locate::NotYet => return Ok(None),
                Locate::Whole(chunk) => return Ok(Some(chunk)),
                Locate::Positioned => {}
            }
        }
    }

    /// Finds the segment holding the record after `pos`: a sealed one that
    /// starts there is handed out whole (when `whole_ok` and within `limit`);
    /// one entered in the middle is read a record at a time; an active one
    /// gets a cursor.
    fn locate(&mut self, limit: u64, whole_ok: bool) -> Result<Locate, JournalError> {
        let want = self.pos.seq + 1;
        let listing = list_dir(&self.dir)?;
        let mut first_held = None;
        for path in &listing.sealed {
            let (header, file_bytes) = match read_sealed_header(path) {
                // Trimmed since the listing: older than anything still held.
                Err(JournalError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
                r => r?,
            };
            super::check_volume(path, self.volume_id, header.volume_id)?;
            first_held.get_or_insert(header.first_seq);
            if !(header.first_seq..=header.last_seq).contains(&want) {
                continue;
            }
            if header.first_seq == want {
                if header.start() != self.pos {
                    return Err(self.off_chain(path, header.start()));
                }
                if whole_ok && header.last_seq <= limit {
                    self.pos = header.end();
                    return Ok(Locate::Whole(Chunk::Sealed {
                        path: path.clone(),
                        header,
                        file_bytes,
                    }));
                }
            }
            let sealed = Sealed {
                path: path.clone(),
                header,
                file_bytes,
            };
            let mut frames = SealedFrames::open(&sealed, self.volume_id)?;
            while frames.pos.seq < self.pos.seq && frames.next_record()?.is_some() {}
            if frames.pos != self.pos {
                return Err(self.off_chain(path, frames.pos));
            }
            self.pending = Some((frames, None));
            return Ok(Locate::Positioned);
        }
        // The active segment: the newest one starting at or before `want`.
        let mut chosen = None;
        for path in &listing.active {
            let header = read_active_header(path)?;
            super::check_volume(path, self.volume_id, header.volume_id)?;
            first_held.get_or_insert(header.first_seq);
            if header.first_seq <= want {
                chosen = Some((path.clone(), header));
            }
        }
        let Some((path, header)) = chosen else {
            if first_held.is_some_and(|f| want < f) {
                return Err(JournalError::NotFound {
                    seq: want,
                    first: first_held.unwrap_or(0),
                    last: self.pos.seq,
                });
            }
            return Ok(Locate::NotYet);
        };
        let file = File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
        let mut cursor = Cursor {
            path,
            file,
            first_seq: header.first_seq,
            offset: ACTIVE_HEADER_LEN as u64,
        };
        // Walk to `pos` through the records this side already has.
        let mut at = header.start();
        while at.seq < self.pos.seq {
            let (records, _) = read_frames(
                &mut cursor,
                at.seq + 1,
                self.pos.seq - at.seq,
                1 << 20,
                None,
            )?;
            if records.is_empty() {
                // The active segment ends before pos: it was being replaced.
                return Ok(Locate::NotYet);
            }
            for r in &records {
                at = at.next(r);
            }
        }
        if at != self.pos {
            return Err(self.off_chain(&cursor.path, at));
        }
        self.cursor = Some(cursor);
        Ok(Locate::Positioned)
    }

    fn off_chain(&self, path: &Path, found: Position) -> JournalError {
        JournalError::Corrupt {
            segment: path.to_owned(),
            offset: 0,
            reason: format!(
                "holds {found} where the tail is at {} (the journal changed under the reader)",
                self.pos
            ),
        }
    }

    /// Whole records from the cursor, up to `limit` and about `max_bytes`.
    fn read_active(
        &mut self,
        limit: u64,
        max_bytes: usize,
        stop_at: Option<&str>,
    ) -> Result<(Vec<Vec<u8>>, bool), JournalError> {
        let cursor = self.cursor.as_mut().expect("a cursor");
        read_frames(
            cursor,
            self.pos.seq + 1,
            limit - self.pos.seq,
            max_bytes,
            stop_at,
        )
    }

    /// The cursor's segment will get no more records: it was sealed, or a
    /// newer active segment starts where the tail is.
    fn cursor_is_stale(&self) -> bool {
        let Some(c) = &self.cursor else { return true };
        let sealed = self.dir.join(segment_name(c.first_seq, SEALED_EXT));
        let newer = self.dir.join(segment_name(self.pos.seq + 1, ACTIVE_EXT));
        !c.path.exists() || sealed.exists() || (newer != c.path && newer.exists())
    }
}

enum Locate {
    NotYet,
    Whole(Chunk),
    Positioned,
}

fn is_marker(record: &[u8], name: &str) -> bool {
    matches!(
        Record::decode(record).map(|r| r.op),
        Ok(Op::Marker(Marker::Snapshot { name: n })) if n == name
    )
}

/// Reads up to `count` whole frames from the cursor's offset on, the first
/// holding record `first_seq`, stopping near `max_bytes` and after the
/// snapshot marker `stop_at`. A torn or unfinished frame is where reading
/// stops; damage, or a record out of sequence, is an error. (The chain of
/// what follows is the writer's; the replica checks it.)
fn read_frames(
    cursor: &mut Cursor,
    first_seq: u64,
    count: u64,
    max_bytes: usize,
    stop_at: Option<&str>,
) -> Result<(Vec<Vec<u8>>, bool), JournalError> {
    let ctx = || format!("read {}", cursor.path.display());
    let len = cursor.file.metadata().map_err(io_err(ctx()))?.len();
    let available = len.saturating_sub(cursor.offset) as usize;
    let mut want = available.min(max_bytes.max(1 << 16));
    loop {
        let mut buf = vec![0u8; want];
        let n = read_full_at(&cursor.file, &mut buf, cursor.offset).map_err(io_err(ctx()))?;
        buf.truncate(n);
        let mut at = 0;
        let mut records = Vec::new();
        let mut reached = false;
        while (records.len() as u64) < count && at < max_bytes.max(1) && !reached {
            match next_frame(&buf, at) {
                FrameStep::Frame { payload, next } => {
                    let r = buf[payload].to_vec();
                    let want_seq = first_seq + records.len() as u64;
                    if Record::peek_seq(&r) != Some(want_seq) {
                        return Err(JournalError::Corrupt {
                            segment: cursor.path.clone(),
                            offset: cursor.offset + at as u64,
                            reason: format!("the record there is not record {want_seq}"),
                        });
                    }
                    reached = stop_at.is_some_and(|name| is_marker(&r, name));
                    records.push(r);
                    at = next;
                }
                FrameStep::End | FrameStep::Torn(_) => break,
                FrameStep::Corrupt(reason) => {
                    return Err(JournalError::Corrupt {
                        segment: cursor.path.clone(),
                        offset: cursor.offset + at as u64,
                        reason,
                    })
                }
            }
        }
        if records.is_empty() && n == want && want < available {
            // One frame larger than the buffer: read it whole.
            want = available;
            continue;
        }
        cursor.offset += at as u64;
        return Ok((records, reached));
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}
