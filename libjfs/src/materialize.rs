//! Materialize: the tree as it was at a position, rebuilt from the journal
//! into a fresh directory.
//!
//! Reads the journal without taking the volume's lock or changing any of its
//! files, so it works on a volume that a master or replica has open.

use std::fs;
use std::path::Path;

use crate::applier::Applier;
use crate::journal::Journal;
use crate::position::Position;
use crate::volume::{VolumeError, JOURNAL_DIR};

/// Replays records `1..=at` of the journal in `journal_dir` into `dest`, which
/// must not exist or be an empty directory. `progress` is told each applied seq.
pub fn materialize_journal(
    journal: &Journal,
    at: u64,
    dest: &Path,
    mut progress: impl FnMut(u64),
) -> Result<Position, VolumeError> {
    let head = journal.head();
    if at > head.seq {
        return Err(VolumeError::Snapshot(format!(
            "position {at} is past the end of the journal ({})",
            head.seq
        )));
    }
    if journal.first_seq() > 1 {
        return Err(VolumeError::Snapshot(format!(
            "the journal starts at {} (older records were trimmed); it cannot rebuild a tree from empty",
            journal.first_seq()
        )));
    }
    prepare_dest(dest)?;
    let mut applier = Applier::ephemeral(dest, Position::ZERO).map_err(|e| VolumeError::Io {
        context: format!("open {}", dest.display()),
        source: e,
    })?;
    if at > 0 {
        for entry in journal.read_from(1)? {
            let entry = entry?;
            if entry.record.seq > at {
                break;
            }
            applier.apply(&entry)?;
            progress(entry.record.seq);
        }
    }
    Ok(applier.applied())
}

/// [`materialize_journal`] for the volume at `volume`.
pub fn materialize(
    volume: &Path,
    at: u64,
    dest: &Path,
    progress: impl FnMut(u64),
) -> Result<Position, VolumeError> {
    let journal = Journal::open_read_only(&volume.join(JOURNAL_DIR), None)?;
    materialize_journal(&journal, at, dest, progress)
}

fn prepare_dest(dest: &Path) -> Result<(), VolumeError> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(VolumeError::Layout {
                    path: dest.to_owned(),
                    reason: "exists and is not empty".into(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(dest).map_err(|e| VolumeError::Io {
                context: format!("create {}", dest.display()),
                source: e,
            })
        }
        Err(e) => Err(VolumeError::Io {
            context: format!("read {}", dest.display()),
            source: e,
        }),
    }
}
