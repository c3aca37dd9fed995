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
use crate::volume::VolumeError;

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
    // Records that restore removed nodes (a rewind) take them from an attic:
    // keep one beside the destination while replaying.
    let attic = Scratch::beside(dest)?;
    let mut applier =
        Applier::ephemeral_with_attic(dest, &attic.0, Position::ZERO).map_err(|e| {
            VolumeError::Io {
                context: format!("open {}", dest.display()),
                source: e,
            }
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

/// A directory removed with everything in it when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn beside(dest: &Path) -> Result<Scratch, VolumeError> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = dest.with_file_name(format!(".{name}.attic-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).map_err(|e| VolumeError::Io {
            context: format!("create {}", path.display()),
            source: e,
        })?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// [`materialize_journal`] for the volume at `volume`.
pub fn materialize(
    volume: &Path,
    at: u64,
    dest: &Path,
    progress: impl FnMut(u64),
) -> Result<Position, VolumeError> {
    let journal = crate::volume::read_journal(volume)?;
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
