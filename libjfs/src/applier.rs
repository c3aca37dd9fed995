//! The applier: the one piece of code that applies journal entries to a tree.
//!
//! It checks that each entry continues its position (sequence and chain),
//! applies it through [`Tree`], and keeps its position durable against a
//! crash at any instant with a small *position slot* file:
//!
//! - Before a record is applied, one `pwrite` stores "applied up to P, record
//!   P+1 in flight" (plus a fingerprint the redo may need). The page cache
//!   keeps it through a `kill -9`; it costs about a microsecond.
//! - After a restart, a slot with a record in flight means that record may be
//!   partly or wholly applied: it is applied again in its *redo* form, which
//!   completes it without doing it twice. So no record is lost or doubled.
//! - [`Applier::settle`] syncs the tree's filesystem and then the slot, so the
//!   position survives a power cut too; the volume also checkpoints it in sled.
//!
//! Undoing a record ([`Applier::unapply`], a replica's local rewind) works the
//! same way, one undo step at a time: the slot names the record being undone
//! and the step in flight, which is redone after a crash.
//!
//! Slot layout (72 bytes, little endian): magic `JFSPOSN\0` (8), applied seq
//! (8), applied chain (32), in-flight seq or 0 (8), fingerprint (8),
//! crc32c of the previous 64 bytes (4), undo step + 1 or 0 (4). With an undo
//! step, the in-flight seq is the applied one (the record being undone).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::history::Step;
use crate::journal::Entry;
use crate::position::Position;
use crate::tree::{Tree, TreeError};

const SLOT_MAGIC: [u8; 8] = *b"JFSPOSN\0";
const SLOT_LEN: usize = 72;

/// Why an entry was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("record {seq} ({op})")]
    Tree {
        seq: u64,
        op: &'static str,
        #[source]
        source: TreeError,
    },
    #[error("record {seq} does not follow the applied position {applied}")]
    OutOfOrder { seq: u64, applied: Position },
    #[error("record {seq} continues another history than the applied position {applied}: the journals diverged")]
    Diverged { seq: u64, applied: Position },
    #[error("position slot {}: {reason}", path.display())]
    Slot { path: PathBuf, reason: String },
}

impl ApplyError {
    /// True when the record was refused and the tree was left unchanged.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ApplyError::Tree {
                source: TreeError::Refused { .. },
                ..
            }
        )
    }

    /// True when the tree was left as it was: the record was refused, or
    /// the system could not apply it (no room, say) and changed nothing.
    pub fn changed_nothing(&self) -> bool {
        matches!(self, ApplyError::Tree { source, .. } if source.changed_nothing())
    }
}

/// What the slot says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub applied: Position,
    /// A record that may be partly applied: (seq, fingerprint).
    pub in_flight: Option<(u64, u64)>,
    /// A record being undone and the undo step that may be partly applied.
    /// (seq, step, fingerprint of that step for its redo).
    pub undoing: Option<(u64, u32, u64)>,
}

impl SlotState {
    /// At `applied`, nothing in flight.
    fn at(applied: Position) -> SlotState {
        SlotState {
            applied,
            in_flight: None,
            undoing: None,
        }
    }

    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(&SLOT_MAGIC);
        b[8..16].copy_from_slice(&self.applied.seq.to_le_bytes());
        b[16..48].copy_from_slice(&self.applied.chain);
        let (seq, fp) = self.in_flight.unwrap_or((0, 0));
        let (seq, fp, step) = match self.undoing {
            Some((seq, step, fp)) => (seq, fp, step + 1),
            None => (seq, fp, 0),
        };
        b[48..56].copy_from_slice(&seq.to_le_bytes());
        b[56..64].copy_from_slice(&fp.to_le_bytes());
        b[68..72].copy_from_slice(&step.to_le_bytes());
        let crc = slot_crc(&b);
        b[64..68].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<SlotState> {
        if b.len() != SLOT_LEN || b[0..8] != SLOT_MAGIC {
            return None;
        }
        if slot_crc(b).to_le_bytes() != b[64..68] {
            return None;
        }
        let step = u32::from_le_bytes(b[68..72].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let applied = Position {
            seq: u64_at(8),
            chain: b[16..48].try_into().unwrap(),
        };
        if step != 0 {
            if u64_at(48) != applied.seq || applied.seq == 0 {
                return None;
            }
            return Some(SlotState {
                applied,
                in_flight: None,
                undoing: Some((applied.seq, step - 1, u64_at(56))),
            });
        }
        let in_flight = match u64_at(48) {
            0 => None,
            seq if seq == applied.seq + 1 => Some((seq, u64_at(56))),
            _ => return None,
        };
        Some(SlotState {
            applied,
            in_flight,
            undoing: None,
        })
    }
}

/// crc32c of the first 64 bytes, and of the undo step when there is one
/// (slots without one keep the checksum they always had).
fn slot_crc(b: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&b[0..64]);
    if b[68..72] == [0; 4] {
        crc
    } else {
        crc32c::crc32c_append(crc, &b[68..72])
    }
}

struct Slot {
    path: PathBuf,
    file: File,
}

impl Slot {
    fn err(&self, reason: impl std::fmt::Display) -> ApplyError {
        ApplyError::Slot {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn write(&self, state: &SlotState) -> Result<(), ApplyError> {
        self.file
            .write_all_at(&state.encode(), 0)
            .map_err(|e| self.err(e))
    }

    fn sync(&self) -> Result<(), ApplyError> {
        self.file.sync_data().map_err(|e| self.err(e))
    }
}

/// Reads a position slot without opening the tree (for status and checks).
pub fn read_slot(path: &Path) -> Result<Option<SlotState>, ApplyError> {
    let err = |reason: String| ApplyError::Slot {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read(path) {
        Ok(b) => SlotState::decode(&b).map(Some).ok_or_else(|| {
            err(
                "damaged: the tree's position is unknown; verify the tree or materialize it again"
                    .into(),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Applies entries to a tree, in order, exactly once.
pub struct Applier {
    tree: Tree,
    slot: Option<Slot>,
    applied: Position,
    /// The record a crash left in flight, to be applied in redo form.
    redo: Option<(u64, u64)>,
    /// The undo a crash left in flight: (record, step), redone from that step.
    undo_redo: Option<(u64, u32, u64)>,
}

impl Applier {
    /// An applier whose position lives in memory only (a throwaway tree).
    pub fn ephemeral(tree: &Path, start: Position) -> std::io::Result<Applier> {
        Ok(Applier {
            tree: Tree::open(tree)?,
            slot: None,
            applied: start,
            redo: None,
            undo_redo: None,
        })
    }

    /// [`Applier::ephemeral`] with an attic for removed nodes, which the
    /// records that restore them need.
    pub fn ephemeral_with_attic(
        tree: &Path,
        attic: &Path,
        start: Position,
    ) -> std::io::Result<Applier> {
        let mut a = Applier::ephemeral(tree, start)?;
        a.tree = Tree::open_with_attic(tree, attic)?;
        Ok(a)
    }

    /// Opens the tree with its durable position slot. A missing slot starts
    /// at `start`; a damaged one is an error (the tree's state is unknown).
    pub fn open(
        tree: &Path,
        attic: &Path,
        slot_path: &Path,
        start: Position,
    ) -> Result<Applier, ApplyError> {
        let state = read_slot(slot_path)?.unwrap_or(SlotState::at(start));
        let tree = Tree::open_with_attic(tree, attic).map_err(|e| ApplyError::Slot {
            path: slot_path.to_owned(),
            reason: e.to_string(),
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(slot_path)
            .map_err(|e| ApplyError::Slot {
                path: slot_path.to_owned(),
                reason: e.to_string(),
            })?;
        let slot = Slot {
            path: slot_path.to_owned(),
            file,
        };
        slot.write(&state)?;
        Ok(Applier {
            tree,
            slot: Some(slot),
            applied: state.applied,
            redo: state.in_flight,
            undo_redo: state.undoing,
        })
    }

    /// Position after the last record known to be wholly applied.
    pub fn applied(&self) -> Position {
        self.applied
    }

    /// The record a crash left in flight, which the next [`Applier::apply`] must receive.
    pub fn in_flight(&self) -> Option<u64> {
        self.redo.map(|(seq, _)| seq)
    }

    /// The record a crash left half undone, which the next
    /// [`Applier::unapply`] must receive.
    pub fn undoing(&self) -> Option<u64> {
        self.undo_redo.map(|(seq, _, _)| seq)
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Applies `entry`, which must continue the applied position.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), ApplyError> {
        let seq = entry.record.seq;
        if let Some((undoing, _, _)) = self.undo_redo {
            return Err(ApplyError::Slot {
                path: self
                    .slot
                    .as_ref()
                    .map(|s| s.path.clone())
                    .unwrap_or_default(),
                reason: format!("record {undoing} is half undone; finish the rewind first"),
            });
        }
        if seq != self.applied.seq + 1 {
            return Err(ApplyError::OutOfOrder {
                seq,
                applied: self.applied,
            });
        }
        if entry.prev_chain != self.applied.chain {
            return Err(ApplyError::Diverged {
                seq,
                applied: self.applied,
            });
        }
        let redo = self.redo.filter(|&(s, _)| s == seq).map(|(_, fp)| fp);
        let fingerprint = redo.unwrap_or_else(|| self.tree.fingerprint(&entry.record.op));
        let in_flight = SlotState {
            applied: self.applied,
            in_flight: Some((seq, fingerprint)),
            undoing: None,
        };
        if let Some(slot) = &self.slot {
            slot.write(&in_flight)?;
        }
        match self.tree.apply(&entry.record, redo) {
            Ok(()) => {
                // The slot still names this record as in flight; that is safe (its
                // redo form is a no-op on a complete record) and saves a write.
                self.applied = entry.position;
                self.redo = None;
                Ok(())
            }
            Err(source) => {
                if source.changed_nothing() && redo.is_none() {
                    // Nothing changed: the record is simply not applied.
                    if let Some(slot) = &self.slot {
                        slot.write(&SlotState::at(self.applied))?;
                    }
                } else {
                    // Possibly half done: whoever retries must use the redo form.
                    self.redo = Some((seq, fingerprint));
                }
                Err(ApplyError::Tree {
                    seq,
                    op: entry.record.op.name(),
                    source,
                })
            }
        }
    }

    /// Makes the tree and the applied position durable, and returns it.
    pub fn settle(&mut self) -> Result<Position, ApplyError> {
        let Some(slot) = &self.slot else {
            return Ok(self.applied);
        };
        self.tree
            .sync()
            .map_err(|e| slot.err(format!("sync tree: {e}")))?;
        slot.write(&SlotState {
            applied: self.applied,
            in_flight: self.redo,
            undoing: self.undo_redo,
        })?;
        slot.sync()?;
        Ok(self.applied)
    }

    /// Undoes `entry`, the last applied record, with `steps` (its
    /// [`inverse`](crate::history::inverse)), leaving the tree at the
    /// position before it. Each step is in the slot while it runs, so a
    /// crash is completed by calling this again with the same entry.
    pub fn unapply(&mut self, entry: &Entry, steps: &[Step]) -> Result<(), ApplyError> {
        let seq = entry.record.seq;
        if self.applied != entry.position {
            return Err(ApplyError::OutOfOrder {
                seq,
                applied: self.applied,
            });
        }
        if self.redo.is_some() {
            return Err(ApplyError::Slot {
                path: self
                    .slot
                    .as_ref()
                    .map(|s| s.path.clone())
                    .unwrap_or_default(),
                reason: format!("record {} is half applied; replay it first", seq + 1),
            });
        }
        let resume = self
            .undo_redo
            .filter(|&(s, _, _)| s == seq)
            .map(|(_, k, fp)| (k, fp));
        for (k, step) in steps.iter().enumerate() {
            let k = k as u32;
            if resume.is_some_and(|(r, _)| k < r) {
                continue;
            }
            // As for records: the redo form of a step (an exchange) needs to
            // know what was there before it.
            let redo = resume.filter(|&(r, _)| r == k).map(|(_, fp)| fp);
            let fingerprint = redo.unwrap_or_else(|| self.tree.fingerprint(&step.op));
            if let Some(slot) = &self.slot {
                slot.write(&SlotState {
                    applied: self.applied,
                    in_flight: None,
                    undoing: Some((seq, k, fingerprint)),
                })?;
            }
            self.undo_redo = Some((seq, k, fingerprint));
            self.tree
                .apply(&step.to_record(seq), redo)
                .map_err(|source| ApplyError::Tree {
                    seq,
                    op: step.op.name(),
                    source,
                })?;
        }
        self.applied = Position {
            seq: seq - 1,
            chain: entry.prev_chain,
        };
        self.undo_redo = None;
        if let Some(slot) = &self.slot {
            slot.write(&SlotState::at(self.applied))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips_and_detects_damage() {
        let s = SlotState {
            applied: Position {
                seq: 7,
                chain: [3; 32],
            },
            in_flight: Some((8, 99)),
            undoing: None,
        };
        let b = s.encode();
        assert_eq!(SlotState::decode(&b), Some(s));
        let undo = SlotState {
            applied: s.applied,
            in_flight: None,
            undoing: Some((7, 3, 99)),
        };
        assert_eq!(SlotState::decode(&undo.encode()), Some(undo));
        for b in [b, undo.encode()] {
            for bit in 0..SLOT_LEN * 8 {
                let mut d = b;
                d[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(SlotState::decode(&d), None, "bit {bit}");
            }
        }
        let none = SlotState::at(Position::ZERO);
        assert_eq!(SlotState::decode(&none.encode()), Some(none));
    }
}
