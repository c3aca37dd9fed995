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
//! Slot layout (72 bytes, little endian): magic `JFSPOSN\0` (8), applied seq
//! (8), applied chain (32), in-flight seq or 0 (8), fingerprint (8),
//! crc32c of the previous 64 bytes (4), zero (4).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
}

/// What the slot says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub applied: Position,
    /// A record that may be partly applied: (seq, fingerprint).
    pub in_flight: Option<(u64, u64)>,
}

impl SlotState {
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(&SLOT_MAGIC);
        b[8..16].copy_from_slice(&self.applied.seq.to_le_bytes());
        b[16..48].copy_from_slice(&self.applied.chain);
        let (seq, fp) = self.in_flight.unwrap_or((0, 0));
        b[48..56].copy_from_slice(&seq.to_le_bytes());
        b[56..64].copy_from_slice(&fp.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..64]);
        b[64..68].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<SlotState> {
        if b.len() != SLOT_LEN || b[0..8] != SLOT_MAGIC {
            return None;
        }
        if crc32c::crc32c(&b[0..64]).to_le_bytes() != b[64..68] || b[68..72] != [0; 4] {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let applied = Position {
            seq: u64_at(8),
            chain: b[16..48].try_into().unwrap(),
        };
        let in_flight = match u64_at(48) {
            0 => None,
            seq if seq == applied.seq + 1 => Some((seq, u64_at(56))),
            _ => return None,
        };
        Some(SlotState { applied, in_flight })
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
}

impl Applier {
    /// An applier whose position lives in memory only (a throwaway tree).
    pub fn ephemeral(tree: &Path, start: Position) -> std::io::Result<Applier> {
        Ok(Applier {
            tree: Tree::open(tree)?,
            slot: None,
            applied: start,
            redo: None,
        })
    }

    /// Opens the tree with its durable position slot. A missing slot starts
    /// at `start`; a damaged one is an error (the tree's state is unknown).
    pub fn open(tree: &Path, slot_path: &Path, start: Position) -> Result<Applier, ApplyError> {
        let state = read_slot(slot_path)?.unwrap_or(SlotState {
            applied: start,
            in_flight: None,
        });
        let tree = Tree::open(tree).map_err(|e| ApplyError::Slot {
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

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Applies `entry`, which must continue the applied position.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), ApplyError> {
        let seq = entry.record.seq;
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
                let refused = matches!(source, TreeError::Refused { .. });
                if refused && redo.is_none() {
                    // Nothing changed: the record is simply not applied.
                    if let Some(slot) = &self.slot {
                        slot.write(&SlotState {
                            applied: self.applied,
                            in_flight: None,
                        })?;
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
        })?;
        slot.sync()?;
        Ok(self.applied)
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
        };
        let b = s.encode();
        assert_eq!(SlotState::decode(&b), Some(s));
        for bit in 0..SLOT_LEN * 8 {
            let mut d = b;
            d[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(SlotState::decode(&d), None, "bit {bit}");
        }
        let none = SlotState {
            applied: Position::ZERO,
            in_flight: None,
        };
        assert_eq!(SlotState::decode(&none.encode()), Some(none));
    }
}
