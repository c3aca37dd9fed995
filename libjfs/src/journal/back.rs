//! Reading a stretch of the journal newest first, as rewinds undo it.
//!
//! Records can only be verified oldest first: each one's chain value hashes
//! the one before. So a [`BackReader`] reads each segment of the stretch
//! once, oldest record first, verifying as [`Journal::read_from`] does and
//! keeping the frames of the stretch with a mark every [`CHUNK`] records.
//! It then decodes them a chunk at a time, from the newest mark back.
//!
//! What it holds at once: one segment's frames of the stretch (at most a
//! segment, 64 MiB by default, the same an active segment's reader holds)
//! and one chunk of decoded records. What it reads: each segment of the
//! stretch once, so that going back over n records costs O(n) and not
//! O(n x segment), as reading every chunk forward from its own start would.

use std::path::{Path, PathBuf};

use super::{
    decode_frame, read_active, Entry, Framed, JournalError, Result, Sealed, SealedFrames, Source,
};
use crate::format::{next_frame, FrameStep, VolumeId, ACTIVE_HEADER_LEN};
use crate::position::Position;
use crate::record::Record;
use crate::Journal;

/// Records decoded at a time.
const CHUNK: u64 = 256;

/// The records `lo ..= hi` of a journal, newest first; see
/// [`Journal::read_back`]. Like [`super::Reader`] it holds no borrow of the
/// journal, which may go on taking records meanwhile.
pub struct BackReader {
    volume_id: VolumeId,
    lo: u64,
    /// The first and last records the journal held when the reader started.
    held_range: (u64, u64),
    /// The next record to hand out; `lo - 1` once all are.
    next: u64,
    /// The segments still to read, oldest first.
    sources: Vec<Source>,
    /// Where the segment read last starts: the one before must end there.
    later_start: Option<Position>,
    held: Option<Held>,
    /// Decoded records of one chunk, oldest first: handed out from the end.
    chunk: Vec<Entry>,
    failed: bool,
}

/// One segment's frames of the stretch.
struct Held {
    path: PathBuf,
    frames: Vec<u8>,
    /// Offset in the segment's (decompressed) body of `frames[0]`, for errors.
    base: u64,
    /// Chunks not yet decoded, oldest first.
    marks: Vec<Mark>,
}

/// Where a chunk starts: offset in [`Held::frames`], the position before its
/// first record, and how many records it has.
struct Mark {
    at: usize,
    before: Position,
    records: u64,
}

impl Journal {
    /// Reads the records `lo ..= hi` newest first, each verified (checksums,
    /// chain, sequence) as [`Journal::read_from`] verifies it. `lo > hi` reads
    /// nothing. See the module's comment for what it holds and reads.
    pub fn read_back(&self, lo: u64, hi: u64) -> Result<BackReader> {
        let first = self.first_seq();
        let missing = |seq| JournalError::NotFound {
            seq,
            first,
            last: self.head.seq,
        };
        if lo <= hi {
            if lo < first.max(1) {
                return Err(missing(lo));
            }
            if hi > self.head.seq {
                return Err(missing(hi));
            }
        }
        let mut sources: Vec<Source> = self
            .sealed
            .iter()
            .filter(|s| s.header.last_seq >= lo && s.header.first_seq <= hi)
            .map(|s| Source::Sealed(s.clone()))
            .collect();
        // An active segment holds the records from its first up to the next
        // one's first, the last one up to the head.
        let actives: Vec<_> = self.retired.iter().chain([&self.active]).collect();
        for (i, a) in actives.iter().enumerate() {
            let last = actives
                .get(i + 1)
                .map_or(self.head.seq, |next| next.header.first_seq - 1);
            if a.header.first_seq <= hi.min(last) && last >= lo {
                sources.push(Source::Active {
                    path: a.path.clone(),
                    header: a.header,
                    len: a.len,
                });
            }
        }
        Ok(BackReader {
            volume_id: self.volume_id,
            lo,
            held_range: (first, self.head.seq),
            next: hi.max(lo - 1),
            sources,
            later_start: None,
            held: None,
            chunk: Vec::new(),
            failed: false,
        })
    }
}

impl BackReader {
    fn step(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(entry) = self.chunk.pop() {
                self.next = entry.record.seq - 1;
                return Ok(Some(entry));
            }
            if self.next < self.lo {
                return Ok(None);
            }
            if let Some(held) = &mut self.held {
                if let Some(mark) = held.marks.pop() {
                    self.chunk = held.decode(&mark)?;
                    continue;
                }
                self.held = None;
            }
            let Some(source) = self.sources.pop() else {
                let (first, last) = self.held_range;
                return Err(JournalError::NotFound {
                    seq: self.next,
                    first,
                    last,
                });
            };
            self.held = Some(self.read(source)?);
        }
    }

    /// Reads `source`'s records from `lo` up to `next`, verifying them, and
    /// checks that `next` is its last one read and that it ends where the
    /// segment read before it starts.
    fn read(&mut self, source: Source) -> Result<Held> {
        let (held, start, end) = match source {
            Source::Sealed(s) => self.read_sealed(&s)?,
            Source::Active { path, header, len } => match read_active(&path, header, len)? {
                Ok(buf) => self.read_active(&path, buf, header.start())?,
                Err(sealed) => self.read_sealed(&sealed)?,
            },
        };
        let corrupt = |reason: String| JournalError::Corrupt {
            segment: held.path.clone(),
            offset: 0,
            reason,
        };
        if end.seq != self.next {
            return Err(corrupt(format!(
                "the segment ends at record {} where record {} was expected",
                end.seq, self.next
            )));
        }
        if let Some(later) = self.later_start {
            if later != end {
                return Err(corrupt(format!(
                    "the segment ends at {end}, the next one starts at {later}"
                )));
            }
        }
        self.later_start = Some(start);
        Ok(held)
    }

    /// An active segment's frames (`buf`, the whole file): returns them with
    /// the marks of the stretch, the segment's start and the position after
    /// its last record read.
    fn read_active(
        &self,
        path: &Path,
        buf: Vec<u8>,
        start: Position,
    ) -> Result<(Held, Position, Position)> {
        let mut marks = Vec::new();
        let (mut at, mut pos) = (ACTIVE_HEADER_LEN, start);
        let corrupt = |at: usize, reason: String| JournalError::Corrupt {
            segment: path.to_owned(),
            offset: at as u64,
            reason,
        };
        while pos.seq < self.next {
            let (payload, next) = match next_frame(&buf, at) {
                FrameStep::Frame { payload, next } => (payload, next),
                FrameStep::Corrupt(reason) => return Err(corrupt(at, reason)),
                FrameStep::End | FrameStep::Torn(_) => break,
            };
            let bytes = &buf[payload];
            match Record::peek_seq(bytes) {
                Some(seq) if seq == pos.seq + 1 => {}
                Some(seq) => {
                    let want = pos.seq + 1;
                    return Err(corrupt(
                        at,
                        format!("record seq {seq} where {want} was expected"),
                    ));
                }
                None => return Err(corrupt(at, "record does not decode".into())),
            }
            if pos.seq + 1 >= self.lo {
                mark(&mut marks, at, pos);
            }
            pos = pos.next(bytes);
            at = next;
        }
        let held = Held {
            path: path.to_owned(),
            frames: buf,
            base: 0,
            marks,
        };
        Ok((held, start, pos))
    }

    /// A sealed segment's frames of the stretch, copied out of its body as
    /// it is decompressed; returns as [`BackReader::read_active`] does.
    fn read_sealed(&self, s: &Sealed) -> Result<(Held, Position, Position)> {
        let mut frames = SealedFrames::open(s, self.volume_id)?;
        let start = frames.pos;
        let mut marks = Vec::new();
        let mut copied = Vec::new();
        let mut base = None;
        while frames.pos.seq < self.next {
            let (before, raw_at) = (frames.pos, frames.raw_at);
            if frames.next_record()?.is_none() {
                break;
            }
            if frames.pos.seq >= self.lo {
                base.get_or_insert(raw_at);
                mark(&mut marks, copied.len(), before);
                copied.extend_from_slice(&frames.frame);
            }
        }
        let held = Held {
            path: s.path.clone(),
            frames: copied,
            base: base.unwrap_or(0),
            marks,
        };
        Ok((held, start, frames.pos))
    }
}

impl Iterator for BackReader {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(entry) => entry.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Counts the record that starts at `at`, after `before`, into the last
/// chunk of `marks`, or starts a new chunk with it.
fn mark(marks: &mut Vec<Mark>, at: usize, before: Position) {
    match marks.last_mut() {
        Some(m) if m.records < CHUNK => m.records += 1,
        _ => marks.push(Mark {
            at,
            before,
            records: 1,
        }),
    }
}

impl Held {
    /// The records of the chunk `mark`, oldest first.
    fn decode(&self, mark: &Mark) -> Result<Vec<Entry>> {
        let mut entries = Vec::with_capacity(mark.records as usize);
        let (mut at, mut pos) = (mark.at, mark.before);
        for _ in 0..mark.records {
            match decode_frame(&self.path, &self.frames, at, pos) {
                Ok(Framed::Entry(entry, next)) => {
                    pos = entry.position;
                    at = next;
                    entries.push(entry);
                }
                Ok(Framed::End | Framed::Torn(_)) => {
                    return Err(JournalError::Corrupt {
                        segment: self.path.clone(),
                        offset: self.base + at as u64,
                        reason: "a record read a moment ago is gone".into(),
                    })
                }
                Err(JournalError::Corrupt {
                    segment,
                    offset,
                    reason,
                }) => {
                    return Err(JournalError::Corrupt {
                        segment,
                        offset: self.base + offset,
                        reason,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(entries)
    }
}
