//! A volume: the directory that holds one copy of the filesystem.
//!
//! ```text
//! VOL/tree/      the plain tree
//! VOL/journal/   segments (see journal.rs)
//! VOL/meta/      sled: format version, volume id, role, position checkpoint, snapshots
//! VOL/attic/     inodes kept for history
//! VOL/applied    the applier's position slot (see applier.rs)
//! VOL/secret     replication key, mode 0600
//! VOL/lock       held (flock) by the one process that has the volume open
//! ```
//!
//! A [`Volume`] ties journal, applier and meta together: it recovers after a
//! crash, commits operations on a master (journal first, then tree), replays
//! journaled records on a replica, and checkpoints positions. It knows nothing
//! of FUSE or the network.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::applier::{read_slot, Applier, ApplyError};
use crate::format::VolumeId;
use crate::journal::{Entry, Journal, JournalConfig, JournalError, Recovery};
use crate::path::Node;
use crate::position::Position;
use crate::record::{implied_mtimes, Marker, Op, Record, SetMtime, Timestamp};

pub const TREE_DIR: &str = "tree";
pub const JOURNAL_DIR: &str = "journal";
pub const META_DIR: &str = "meta";
pub const ATTIC_DIR: &str = "attic";
pub const SLOT_FILE: &str = "applied";
pub const SECRET_FILE: &str = "secret";
pub const LOCK_FILE: &str = "lock";

/// Where a bootstrap builds a replica's new state, inside the volume.
pub const BOOTSTRAP_DIR: &str = "bootstrap.tmp";
/// In [`BOOTSTRAP_DIR`] while a bootstrap swaps the new state in.
const BOOTSTRAP_SWAPPING: &str = "swapping";
/// In a replica built from an image: the seq of the image's position (see
/// [`bootstrapped_at`]).
pub const BOOTSTRAPPED_FILE: &str = "bootstrapped";

/// Version of the volume layout and meta keys.
pub const VOLUME_FORMAT: u32 = 1;

const KEY_FORMAT: &str = "format";
const KEY_ID: &str = "volume_id";
const KEY_ROLE: &str = "role";
const KEY_APPLIED: &str = "applied";
const SNAPSHOTS: &str = "snapshots";
/// The meta tree that holds [`Volume::setting`]s.
pub const SETTINGS_TREE: &str = "settings";
/// Setting: the size at which the active segment is sealed, in bytes.
pub const SETTING_SEGMENT_BYTES: &str = "journal.segment_bytes";
/// Smallest segment size [`SETTING_SEGMENT_BYTES`] may hold.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Which side of replication a volume is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }

    /// The role named `s` (`master`, `replica`).
    pub fn parse(s: &[u8]) -> Option<Role> {
        match s {
            b"master" => Some(Role::Master),
            b"replica" => Some(Role::Replica),
            _ => None,
        }
    }

    /// The command-line tool that acts on volumes of this role.
    pub fn tool(&self) -> &'static str {
        match self {
            Role::Master => "jfs-master",
            Role::Replica => "jfs-replica",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{}: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },
    #[error("volume {} is in use by another process", path.display())]
    InUse { path: PathBuf },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("meta store {}", path.display())]
    Meta {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("{0}")]
    Snapshot(String),
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    #[error("the tree is at {tree} but the journal holds {journal}: {reason}")]
    Mismatch {
        tree: Position,
        journal: Position,
        reason: String,
    },
}

type Result<T> = std::result::Result<T, VolumeError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}

/// An open volume, held exclusively by this process.
pub struct Volume {
    root: PathBuf,
    id: VolumeId,
    role: Role,
    meta: sled::Db,
    journal: Journal,
    applier: Applier,
    recovery: Recovery,
    /// Whether commits capture before-images and keep removed nodes.
    history: bool,
    _lock: File,
}

/// The setting that turns history off (`off`); it is on by default.
pub const SETTING_HISTORY: &str = "history";

/// What a rewind did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewound {
    /// Where the tree was.
    pub from: Position,
    /// The position whose state the tree now has.
    pub to: u64,
    /// Records undone.
    pub undone: u64,
    /// The tree's position now: past `from` on a master, which journals the
    /// undo; `to` itself on a replica, which undoes locally.
    pub now: Position,
}

/// A target given as `SEQ` or `SNAPSHOT` on the command line.
pub fn parse_target(s: &str) -> Target {
    match s.parse::<u64>() {
        Ok(seq) => Target::Seq(seq),
        Err(_) => Target::Snapshot(s.to_owned()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Seq(u64),
    Snapshot(String),
}

impl Volume {
    /// Creates a new volume at `path` (which must not exist or be an empty
    /// directory) with a fresh id and secret. A master's journal starts with a
    /// record that gives the tree root its mode, owner and mtime.
    pub fn init(path: &Path, role: Role) -> Result<Volume> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| VolumeError::Io {
            context: "read the kernel's random source".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Volume::init_with(
            path,
            role,
            VolumeId::random(),
            hex::encode(secret).as_bytes(),
        )
    }

    /// Creates a volume with a given id and secret (a replica of an existing volume).
    pub fn init_with(path: &Path, role: Role, id: VolumeId, secret: &[u8]) -> Result<Volume> {
        let layout = |reason: &str| VolumeError::Layout {
            path: path.to_owned(),
            reason: reason.into(),
        };
        match fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(layout("exists and is not empty"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        }
        // Build beside the target and rename, so a crash leaves no half volume.
        let name = path.file_name().ok_or_else(|| layout("has no file name"))?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = parent.join(format!(
            ".{}.init-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        build_volume(&tmp, role, id, secret)?;
        fs::rename(&tmp, path).map_err(io_err(format!(
            "rename {} to {}",
            tmp.display(),
            path.display()
        )))?;
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync parent directory"))?;
        Volume::open(path)
    }

    /// Opens a volume and recovers it: the journal's torn tail is cut off and a
    /// record that a crash left half applied is completed.
    /// The journal's segment size is the volume's setting
    /// ([`SETTING_SEGMENT_BYTES`]), 64 MiB if unset.
    pub fn open(path: &Path) -> Result<Volume> {
        Volume::open_inner(path, None)
    }

    /// [`Volume::open`] with a journal configuration chosen by the caller.
    pub fn open_with(path: &Path, config: JournalConfig) -> Result<Volume> {
        Volume::open_inner(path, Some(config))
    }

    fn open_inner(path: &Path, config: Option<JournalConfig>) -> Result<Volume> {
        let lock = lock_volume(path)?;
        let swapping = path.join(BOOTSTRAP_DIR).join(BOOTSTRAP_SWAPPING);
        if swapping.exists() {
            return Err(VolumeError::Layout {
                path: path.to_owned(),
                reason: format!(
                    "a bootstrap stopped while it replaced the tree and journal ({} exists); \
                     run jfs-replica bootstrap again",
                    swapping.display()
                ),
            });
        }
        let meta_path = path.join(META_DIR);
        let meta = open_meta(&meta_path)?;
        let (id, role) = read_identity(&meta, &meta_path)?;
        let config = match config {
            Some(c) => c,
            None => configured_journal(&meta, &meta_path)?,
        };
        let (journal, recovery) = Journal::open(&path.join(JOURNAL_DIR), id, config)?;
        let checkpoint = meta_position(&meta, &meta_path, KEY_APPLIED)?.unwrap_or(Position::ZERO);
        let attic = path.join(ATTIC_DIR);
        fs::create_dir_all(&attic).map_err(io_err(format!("create {}", attic.display())))?;
        let applier = Applier::open(
            &path.join(TREE_DIR),
            &attic,
            &path.join(SLOT_FILE),
            checkpoint,
        )?;
        let mut vol = Volume {
            root: path.to_owned(),
            id,
            role,
            meta,
            journal,
            applier,
            recovery,
            history: true,
            _lock: lock,
        };
        vol.history = vol.setting(SETTING_HISTORY)?.as_deref() != Some("off");
        vol.check_positions(checkpoint)?;
        vol.finish_in_flight()?;
        Ok(vol)
    }

    /// The tree must sit on the journal's history, at or behind its head.
    fn check_positions(&self, checkpoint: Position) -> Result<()> {
        let tree = self.applier.applied();
        let head = self.journal.head();
        let mismatch = |reason: &str| VolumeError::Mismatch {
            tree,
            journal: head,
            reason: reason.into(),
        };
        if tree.seq < checkpoint.seq {
            return Err(mismatch(
                "the position slot is behind the checkpoint in meta",
            ));
        }
        if tree.seq > head.seq {
            return Err(mismatch("the tree is ahead of the journal"));
        }
        if tree.seq >= self.journal.first_seq().saturating_sub(1)
            && self.journal.position_at(tree.seq)? != tree
        {
            return Err(mismatch("the tree's chain is not the journal's (diverged)"));
        }
        Ok(())
    }

    fn finish_in_flight(&mut self) -> Result<()> {
        if let Some(seq) = self.applier.undoing() {
            let entry = self.entry(seq)?;
            let steps = crate::history::inverse(&entry.record)?;
            self.applier.unapply(&entry, &steps)?;
        }
        if let Some(seq) = self.applier.in_flight() {
            if seq <= self.journal.head().seq {
                let entry = self
                    .journal
                    .read_from(seq)?
                    .next()
                    .transpose()?
                    .expect("seq is below the head");
                self.applier.apply(&entry)?;
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The seq a `SEQ` or snapshot-name target names: a master's snapshot
    /// list, or else the latest marker of that name in the journal.
    pub fn resolve(&self, target: &Target) -> Result<u64> {
        if let Target::Snapshot(name) = target {
            if let Some(p) = self.snapshot(name)? {
                return Ok(p.seq);
            }
        }
        crate::inspect::resolve_target(&self.journal, target)
    }

    /// Where removed nodes are kept while history needs them.
    pub fn attic_path(&self) -> PathBuf {
        self.root.join(ATTIC_DIR)
    }

    /// Whether commits keep history (before-images and the attic).
    pub fn history(&self) -> bool {
        self.history
    }

    /// Turns history on or off for the commits that follow (kept in meta).
    /// Records journaled with history off cannot be rewound past.
    pub fn set_history(&mut self, on: bool) -> Result<()> {
        self.set_setting(SETTING_HISTORY, if on { "on" } else { "off" })?;
        self.history = on;
        Ok(())
    }

    pub fn tree_path(&self) -> PathBuf {
        self.root.join(TREE_DIR)
    }

    pub fn id(&self) -> VolumeId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// What opening had to repair in the journal.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// Position of the tree.
    pub fn applied(&self) -> Position {
        self.applier.applied()
    }

    /// Position of the journal.
    pub fn head(&self) -> Position {
        self.journal.head()
    }

    /// Journals `op` with the mtimes a local filesystem would give, then
    /// applies it to the tree. See [`Volume::commit_with`].
    pub fn commit(&mut self, op: Op) -> Result<Position> {
        let time = Timestamp::now();
        let mtimes = implied_mtimes(&op, time);
        self.commit_with(time, op, mtimes)
    }

    /// Journals a record and applies it (the journal is the write-ahead log).
    /// A record the tree refuses is retracted from the journal, so the journal
    /// never holds an operation that failed.
    ///
    /// With history on, the record carries what it overwrites, and an
    /// operation whose before-images would not fit one record is journaled
    /// as several (see [`crate::history::split`]). Returns the last position.
    pub fn commit_with(
        &mut self,
        time: Timestamp,
        op: Op,
        mtimes: Vec<SetMtime>,
    ) -> Result<Position> {
        if self.applier.applied() != self.journal.head() {
            return Err(VolumeError::Mismatch {
                tree: self.applier.applied(),
                journal: self.journal.head(),
                reason: "records are journaled but not applied; replay them first".into(),
            });
        }
        if !self.history {
            return self.commit_one(time, op, mtimes, Vec::new());
        }
        let seq = self.journal.head().seq + 1;
        let tree_err = |op: &Op, source| {
            VolumeError::Apply(ApplyError::Tree {
                seq,
                op: op.name(),
                source,
            })
        };
        let pieces = match crate::history::split(self.applier.tree(), &op) {
            Ok(Some(pieces)) => pieces,
            Ok(None) => vec![op],
            Err(e) => return Err(tree_err(&op, e)),
        };
        let mut position = self.journal.head();
        for op in pieces {
            let seq = self.journal.head().seq + 1;
            let before = crate::history::capture(self.applier.tree(), &op, &mtimes, seq)
                .map_err(|e| tree_err(&op, e))?;
            position = self.commit_one(time, op, mtimes.clone(), before)?;
        }
        Ok(position)
    }

    fn commit_one(
        &mut self,
        time: Timestamp,
        op: Op,
        mtimes: Vec<SetMtime>,
        before: Vec<crate::record::BeforeImage>,
    ) -> Result<Position> {
        let record = Record {
            seq: self.journal.head().seq + 1,
            time,
            op,
            mtimes,
            before,
        };
        let prev_chain = self.journal.head().chain;
        let position = self.journal.append(&record)?;
        let entry = crate::journal::Entry {
            position,
            prev_chain,
            record,
        };
        if let Err(e) = self.applier.apply(&entry) {
            if e.changed_nothing() {
                self.journal.retract_last()?;
            }
            return Err(e.into());
        }
        // The record is journaled and applied, whatever happens next: a
        // segment that cannot be sealed or started now (a full disk) is
        // tried again later, and appends go on in the full one meanwhile.
        if let Err(e) = self.journal.seal_if_full() {
            let e = crate::ship::follower::with_causes(&e);
            eprintln!("jfs: {e}; the journal goes on in its current segment");
        }
        Ok(position)
    }

    /// The journaled entry `seq`.
    fn entry(&self, seq: u64) -> Result<Entry> {
        self.journal
            .read_from(seq)?
            .next()
            .transpose()?
            .filter(|e| e.record.seq == seq)
            .ok_or_else(|| VolumeError::Snapshot(format!("record {seq} is not in the journal")))
    }

    /// Checks that the tree can go back from `from` to `to`: on the journal,
    /// not ahead of the tree, within the history held, and every record
    /// after `to` can be undone (so nothing stops half way).
    fn check_rewind(&self, from: u64, to: u64) -> Result<()> {
        if to > from {
            return Err(VolumeError::Snapshot(format!(
                "position {to} is ahead of the tree (at {from}); rewind only goes back"
            )));
        }
        let first = self.journal.first_seq();
        if to + 1 < first.max(2) {
            return Err(VolumeError::Snapshot(format!(
                "position {to} is before the history this volume holds (it can go back to {})",
                first.max(2) - 1
            )));
        }
        for e in self.journal.read_from(to + 1)? {
            let e = e?;
            if e.record.seq > from {
                break;
            }
            crate::history::inverse(&e.record)?;
        }
        Ok(())
    }

    /// Brings the tree back to its state at position `to` by journaling and
    /// applying the undo of every record after it, last first (a master's
    /// rewind: replicas follow it like any other change, and it can itself
    /// be rewound). The cost grows with what is undone, not with the tree.
    /// `each` is told every operation applied. Fails before changing
    /// anything if some record cannot be undone.
    pub fn rewind(&mut self, to: u64, mut each: impl FnMut(&Op)) -> Result<Rewound> {
        let from = self.applier.applied();
        if from != self.journal.head() {
            return Err(VolumeError::Mismatch {
                tree: from,
                journal: self.journal.head(),
                reason: "records are journaled but not applied; replay them first".into(),
            });
        }
        self.check_rewind(from.seq, to)?;
        // Journaled removals take fresh attic entries (named by their own
        // seq, so retention can tell when an entry is out of reach). When
        // this rewind removes a node again that a restore took out of entry
        // `id`, undoing the record that first removed it restores from the
        // new entry: `moved` maps the one to the other.
        let mut moved: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        let mut undone = 0;
        for e in self.journal.read_back(to + 1, from.seq)? {
            let e = e?;
            for mut step in crate::history::inverse(&e.record)? {
                if let Op::Restore { id, .. } = &mut step.op {
                    if let Some(now) = moved.remove(id) {
                        *id = now;
                    }
                }
                let position = self.commit_with(Timestamp::now(), step.op.clone(), step.mtimes)?;
                if let Some(old) = step.attic {
                    moved.insert(old, position.seq);
                }
                each(&step.op);
            }
            undone += 1;
        }
        Ok(Rewound {
            from,
            to,
            undone,
            now: self.applier.applied(),
        })
    }

    /// Takes this volume's tree alone back to position `to`, undoing the
    /// records after it without journaling anything (a replica's rewind; the
    /// journal keeps them, so a later replay moves the tree forward again).
    /// The whole rewind holds `gate` for writing, so readers see the old
    /// state or the new one, never a mixture. `each` is told every
    /// operation applied, after the gate is released.
    pub fn rewind_tree(
        &mut self,
        to: u64,
        gate: Option<&std::sync::RwLock<()>>,
        mut each: impl FnMut(&Op),
    ) -> Result<Rewound> {
        let from = self.applier.applied();
        self.check_rewind(from.seq, to)?;
        // The checkpoint may not be ahead of the slot, which now goes back.
        self.put_position(KEY_APPLIED, self.journal.position_at(to)?)?;
        self.meta.flush().map_err(|source| VolumeError::Meta {
            path: self.root.join(META_DIR),
            source,
        })?;
        let held = gate.map(|g| g.write().unwrap_or_else(|p| p.into_inner()));
        let mut touched = Vec::new();
        let mut undone = 0;
        let result = (|| {
            for e in self.journal.read_back(to + 1, from.seq)? {
                let e = e?;
                let steps = crate::history::inverse(&e.record)?;
                self.applier.unapply(&e, &steps)?;
                touched.extend(steps.into_iter().map(|s| s.op));
                undone += 1;
            }
            Ok::<(), VolumeError>(())
        })();
        drop(held);
        for op in &touched {
            each(op);
        }
        result?;
        Ok(Rewound {
            from,
            to,
            undone,
            now: self.applier.applied(),
        })
    }

    /// Applies journaled records that the tree does not have yet, up to
    /// `until` (or the journal's head). `progress` is told each applied seq.
    pub fn replay(
        &mut self,
        until: Option<u64>,
        mut progress: impl FnMut(u64),
    ) -> Result<Position> {
        self.replay_gated(until, None, |e| progress(e.record.seq))
    }

    /// [`Volume::replay`] for a tree that others read while it changes:
    /// each record is applied holding `gate` for writing, and `applied` is
    /// told each entry after the gate is released.
    pub fn replay_gated(
        &mut self,
        until: Option<u64>,
        gate: Option<&std::sync::RwLock<()>>,
        mut applied: impl FnMut(&Entry),
    ) -> Result<Position> {
        let end = until.unwrap_or(u64::MAX).min(self.journal.head().seq);
        let from = self.applier.applied().seq + 1;
        if from > end {
            return Ok(self.applier.applied());
        }
        for entry in self.journal.read_from(from)? {
            let entry = entry?;
            if entry.record.seq > end {
                break;
            }
            self.apply_gated(&entry, gate)?;
            applied(&entry);
        }
        Ok(self.applier.applied())
    }

    /// Applies one entry holding `gate` for writing, if there is one.
    fn apply_gated(&mut self, entry: &Entry, gate: Option<&std::sync::RwLock<()>>) -> Result<()> {
        let _held = gate.map(|g| g.write().unwrap_or_else(|p| p.into_inner()));
        Ok(self.applier.apply(entry)?)
    }

    /// Journals records received from the volume's master (or an upstream
    /// replica), exactly as they were journaled there. They must continue
    /// this journal's head. They are durable after [`Journal::sync`], and
    /// nothing is applied: [`Volume::replay_gated`] does that, after the sync.
    /// On an error, the records before the failing one stay journaled.
    ///
    /// Returns the journaled entries, for [`Volume::apply_received`].
    pub fn receive(&mut self, records: &[Vec<u8>]) -> Result<Vec<Entry>> {
        let mut entries = Vec::with_capacity(records.len());
        for bytes in records {
            let prev_chain = self.journal.head().chain;
            let (position, record) = self.journal.append_encoded(bytes)?;
            entries.push(Entry {
                position,
                prev_chain,
                record,
            });
        }
        self.journal.seal_if_full()?;
        Ok(entries)
    }

    /// Journals a sealed segment received as a file; see [`Journal::install_sealed`].
    pub fn receive_sealed(&mut self, bytes: &[u8]) -> Result<Vec<Entry>> {
        Ok(self.journal.install_sealed(bytes)?.1)
    }

    /// Brings the tree up to the journal's head (or `until`), as
    /// [`Volume::replay_gated`] does, taking the entries just received from
    /// `received` (the journal holds them) instead of reading them back.
    /// Anything the tree lacks before them (an earlier failure) is read
    /// from the journal.
    pub fn apply_received(
        &mut self,
        received: &[Entry],
        until: Option<u64>,
        gate: Option<&std::sync::RwLock<()>>,
        mut applied: impl FnMut(&Entry),
    ) -> Result<Position> {
        let end = until.unwrap_or(u64::MAX).min(self.journal.head().seq);
        let in_memory = received.first().map_or(u64::MAX, |e| e.record.seq);
        if self.applier.applied().seq + 1 < in_memory {
            self.replay_gated(Some(end.min(in_memory - 1)), gate, &mut applied)?;
        }
        for entry in received {
            let seq = entry.record.seq;
            if seq <= self.applier.applied().seq {
                continue;
            }
            if seq > end {
                break;
            }
            self.apply_gated(entry, gate)?;
            applied(entry);
        }
        Ok(self.applier.applied())
    }

    /// A setting kept in the volume's meta database (`None` if unset).
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        let v = self
            .settings()?
            .get(key)
            .map_err(|source| VolumeError::Meta {
                path: self.root.join(META_DIR),
                source,
            })?;
        Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Stores a setting durably.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let meta_err = |source| VolumeError::Meta {
            path: self.root.join(META_DIR),
            source,
        };
        self.settings()?
            .insert(key, value.as_bytes())
            .map_err(meta_err)?;
        self.meta.flush().map_err(meta_err)?;
        Ok(())
    }

    fn settings(&self) -> Result<sled::Tree> {
        self.meta
            .open_tree(SETTINGS_TREE)
            .map_err(|source| VolumeError::Meta {
                path: self.root.join(META_DIR),
                source,
            })
    }

    /// Makes journal, tree and position durable and checkpoints the position in meta.
    pub fn sync(&mut self) -> Result<Position> {
        self.journal.sync()?;
        let applied = self.applier.settle()?;
        self.put_position(KEY_APPLIED, applied)?;
        self.meta.flush().map_err(|source| VolumeError::Meta {
            path: self.root.join(META_DIR),
            source,
        })?;
        Ok(applied)
    }

    /// Syncs, then seals the active segment (where there is room for the
    /// sealed copy): what a clean stop does.
    pub fn close(mut self) -> Result<Position> {
        self.sync()?;
        // Every record is durable now: a seal that fails (a full disk)
        // leaves the segment active, as a stop without a seal would, and
        // the next open takes it up again.
        if let Err(e) = self.journal.seal() {
            let e = crate::ship::follower::with_causes(&e);
            eprintln!("jfs: the last journal segment stays active: {e}");
        }
        self.sync()
    }

    fn put_position(&self, key: &str, pos: Position) -> Result<()> {
        let bytes = postcard::to_stdvec(&pos).expect("a position always encodes");
        self.meta
            .insert(key, bytes)
            .map_err(|source| VolumeError::Meta {
                path: self.root.join(META_DIR),
                source,
            })?;
        Ok(())
    }

    fn snapshots(&self) -> Result<sled::Tree> {
        self.meta
            .open_tree(SNAPSHOTS)
            .map_err(|source| VolumeError::Meta {
                path: self.root.join(META_DIR),
                source,
            })
    }

    /// Names the current position: journals a snapshot marker and records the name.
    pub fn create_snapshot(&mut self, name: &str) -> Result<Position> {
        if self.role == Role::Replica {
            return Err(VolumeError::Snapshot(
                "a replica takes its snapshots from its master; create it there".into(),
            ));
        }
        crate::record::check_snapshot_name(name)
            .map_err(|e| VolumeError::Snapshot(e.to_string()))?;
        if self.snapshot(name)?.is_some() {
            return Err(VolumeError::Snapshot(format!(
                "snapshot {name:?} already exists"
            )));
        }
        let pos = self.commit(Op::Marker(Marker::Snapshot {
            name: name.to_owned(),
        }))?;
        self.snapshots()?
            .insert(
                name.as_bytes(),
                postcard::to_stdvec(&pos).expect("a position always encodes"),
            )
            .map_err(|source| VolumeError::Meta {
                path: self.root.join(META_DIR),
                source,
            })?;
        self.sync()?;
        Ok(pos)
    }

    pub fn snapshot(&self, name: &str) -> Result<Option<Position>> {
        let v = self
            .snapshots()?
            .get(name.as_bytes())
            .map_err(|source| VolumeError::Meta {
                path: self.root.join(META_DIR),
                source,
            })?;
        Ok(v.and_then(|b| postcard::from_bytes(&b).ok()))
    }

    /// Every snapshot, in position order.
    pub fn list_snapshots(&self) -> Result<Vec<(String, Position)>> {
        let mut v = Vec::new();
        for item in self.snapshots()?.iter() {
            let (k, b) = item.map_err(|source| VolumeError::Meta {
                path: self.root.join(META_DIR),
                source,
            })?;
            if let Ok(pos) = postcard::from_bytes::<Position>(&b) {
                v.push((String::from_utf8_lossy(&k).into_owned(), pos));
            }
        }
        v.sort_by_key(|(_, p)| p.seq);
        Ok(v)
    }

    /// Forgets a snapshot name (the marker stays in the journal).
    pub fn delete_snapshot(&mut self, name: &str) -> Result<()> {
        let removed = self
            .snapshots()?
            .remove(name.as_bytes())
            .map_err(|source| VolumeError::Meta {
                path: self.root.join(META_DIR),
                source,
            })?;
        if removed.is_none() {
            return Err(VolumeError::Snapshot(format!("no snapshot named {name:?}")));
        }
        self.sync()?;
        Ok(())
    }
}

/// A replica volume held (locked) while a bootstrap builds its new tree and
/// attic in `VOL/bootstrap.tmp/`. [`Bootstrap::install`] swaps them in with
/// a journal that starts right after the image's position; dropping it
/// unfinished removes what was built and leaves the volume as it was.
///
/// The replica keeps its id, key, settings (master address, replica id) and
/// meta; tree, attic, journal, position slot and checkpoint are replaced.
pub struct Bootstrap {
    root: PathBuf,
    id: VolumeId,
    staging: PathBuf,
    lock: Option<File>,
}

impl Bootstrap {
    /// Locks the replica volume at `path` (refused while a process has it
    /// open) and makes an empty staging directory in it.
    pub fn begin(path: &Path) -> Result<Bootstrap> {
        let lock = lock_volume(path)?;
        let meta_path = path.join(META_DIR);
        let (id, role) = read_identity(&open_meta(&meta_path)?, &meta_path)?;
        if role != Role::Replica {
            return Err(VolumeError::Layout {
                path: path.to_owned(),
                reason: "is a master volume; only a replica is built from an image".into(),
            });
        }
        let staging = path.join(BOOTSTRAP_DIR);
        match fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("remove {}", staging.display()))(e)),
        }
        for sub in ["", TREE_DIR, ATTIC_DIR] {
            fs::create_dir(staging.join(sub))
                .map_err(io_err(format!("create {}", staging.join(sub).display())))?;
        }
        Ok(Bootstrap {
            root: path.to_owned(),
            id,
            staging,
            lock: Some(lock),
        })
    }

    pub fn volume_id(&self) -> VolumeId {
        self.id
    }

    /// The volume being rebuilt.
    pub fn volume_path(&self) -> &Path {
        &self.root
    }

    /// The staging directory: the new state goes to its `tree/` and `attic/`.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Makes the staged tree and attic the volume's, at position `at`: a
    /// journal that continues `at` and a position slot at `at` are made
    /// beside them and synced, then tree, attic, journal and slot are
    /// exchanged with the volume's one by one, and the checkpoint in meta
    /// is set. A crash in between leaves a mark that makes
    /// [`Volume::open`] refuse the volume until a bootstrap runs again.
    pub fn install(mut self, at: Position) -> Result<Volume> {
        let s = self.staging.clone();
        let journal =
            Journal::create_after(&s.join(JOURNAL_DIR), self.id, JournalConfig::default(), at)?;
        journal.sync()?;
        drop(journal);
        let mut applier = Applier::open(
            &s.join(TREE_DIR),
            &s.join(ATTIC_DIR),
            &s.join(SLOT_FILE),
            at,
        )?;
        applier.settle()?;
        drop(applier);
        let mark = s.join(BOOTSTRAP_SWAPPING);
        File::create(&mark)
            .and_then(|f| f.sync_all())
            .map_err(io_err(format!("create {}", mark.display())))?;
        sync_dir(&s)?;
        for name in [TREE_DIR, ATTIC_DIR, JOURNAL_DIR, SLOT_FILE] {
            exchange(&s.join(name), &self.root.join(name))?;
        }
        sync_dir(&self.root)?;
        let meta_path = self.root.join(META_DIR);
        let meta = open_meta(&meta_path)?;
        let meta_err = |source| VolumeError::Meta {
            path: meta_path.clone(),
            source,
        };
        meta.insert(
            KEY_APPLIED,
            postcard::to_stdvec(&at).expect("a position always encodes"),
        )
        .map_err(meta_err)?;
        meta.flush().map_err(meta_err)?;
        drop(meta);
        let stamp = self.root.join(BOOTSTRAPPED_FILE);
        let tmp = stamp.with_extension("tmp");
        fs::write(&tmp, format!("{}\n", at.seq))
            .and_then(|_| File::open(&tmp)?.sync_all())
            .and_then(|_| fs::rename(&tmp, &stamp))
            .map_err(io_err(format!("write {}", stamp.display())))?;
        sync_dir(&self.root)?;
        fs::remove_file(&mark).map_err(io_err(format!("remove {}", mark.display())))?;
        sync_dir(&s)?;
        // What is left in the staging directory is the old state.
        fs::remove_dir_all(&s).map_err(io_err(format!("remove {}", s.display())))?;
        self.lock = None;
        Volume::open(&self.root)
    }
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        // Unfinished: remove what was built, unless the swap had begun (then
        // the staging directory holds half of the volume's state).
        if self.lock.is_some() && !self.staging.join(BOOTSTRAP_SWAPPING).exists() {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// The seq of the image a replica volume was last built from, if it was.
/// Its attic holds entries of its source up to there: its own journal
/// starts after them, but its master's history may still hold the records
/// that made them, and a rewind on the master brings them back, so
/// retention keeps them (see `retention::prune_attic`).
pub fn bootstrapped_at(volume: &Path) -> Option<u64> {
    fs::read_to_string(volume.join(BOOTSTRAPPED_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Exchanges `staged` with `target` atomically (renames it when `target` is missing).
fn exchange(staged: &Path, target: &Path) -> Result<()> {
    let flags = if target.symlink_metadata().is_ok() {
        rustix::fs::RenameFlags::EXCHANGE
    } else {
        rustix::fs::RenameFlags::NOREPLACE
    };
    rustix::fs::renameat_with(rustix::fs::CWD, staged, rustix::fs::CWD, target, flags).map_err(
        |e| {
            io_err(format!(
                "exchange {} with {}",
                staged.display(),
                target.display()
            ))(e.into())
        },
    )
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("sync directory {}", dir.display())))
}

/// The journal configuration the volume's settings ask for.
fn configured_journal(meta: &sled::Db, meta_path: &Path) -> Result<JournalConfig> {
    let mut config = JournalConfig::default();
    let meta_err = |source| VolumeError::Meta {
        path: meta_path.to_owned(),
        source,
    };
    let stored = meta
        .open_tree(SETTINGS_TREE)
        .map_err(meta_err)?
        .get(SETTING_SEGMENT_BYTES)
        .map_err(meta_err)?;
    if let Some(v) = stored.filter(|v| !v.is_empty()) {
        let text = String::from_utf8_lossy(&v);
        config.segment_bytes = text
            .parse::<u64>()
            .ok()
            .filter(|b| *b >= MIN_SEGMENT_BYTES)
            .ok_or_else(|| VolumeError::Layout {
                path: meta_path.to_owned(),
                reason: format!("setting {SETTING_SEGMENT_BYTES} is {text:?}, not a size of at least {MIN_SEGMENT_BYTES} bytes"),
            })?;
    }
    Ok(config)
}

/// Refuses, before anything is read or created there, a path that is not a
/// volume's directory: missing, not a directory, or without a volume's meta.
pub fn check_volume_dir(path: &Path) -> Result<()> {
    let not = |reason: &str| {
        Err(VolumeError::Layout {
            path: path.to_owned(),
            reason: reason.into(),
        })
    };
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => not("does not exist"),
        Err(e) => Err(io_err(format!("stat {}", path.display()))(e)),
        Ok(md) if !md.is_dir() => not("is not a directory, so not a jfs volume"),
        Ok(_) if !path.join(META_DIR).is_dir() => {
            not("is not a jfs volume (it has no meta directory)")
        }
        Ok(_) => Ok(()),
    }
}

/// The journal of the volume at `path`, opened to read while another
/// process may be writing it; a path that is not a volume is refused first.
pub fn read_journal(path: &Path) -> Result<Journal> {
    check_volume_dir(path)?;
    Ok(Journal::open_read_only(&path.join(JOURNAL_DIR), None)?)
}

/// Whether `path` is `dir` or lies below it, through symlinks. A path that
/// does not exist yet counts where it would be made (in its parent); `false`
/// when neither can be resolved.
pub fn lies_inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let resolved = path.canonicalize().ok().or_else(|| {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(path.file_name()?))
    });
    resolved.is_some_and(|p| p.starts_with(dir))
}

fn lock_volume(path: &Path) -> Result<File> {
    check_volume_dir(path)?;
    let lock_path = path.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err(format!("open {}", lock_path.display())))?;
    // A process that forks holds a copy of every open file until the child
    // execs, this lock included; a lock that frees up within a moment was
    // such a copy, not a process using the volume.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(VolumeError::InUse {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(io_err(format!("lock {}", lock_path.display()))(e.into())),
        }
    }
}

fn build_volume(dir: &Path, role: Role, id: VolumeId, secret: &[u8]) -> Result<()> {
    for sub in ["", TREE_DIR, ATTIC_DIR] {
        fs::create_dir_all(dir.join(sub))
            .map_err(io_err(format!("create {}", dir.join(sub).display())))?;
    }
    fs::set_permissions(dir.join(TREE_DIR), fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod tree"))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(SECRET_FILE))
        .map_err(io_err("create secret"))?;
    f.write_all(secret)
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(io_err("write secret"))?;
    File::create(dir.join(LOCK_FILE)).map_err(io_err("create lock file"))?;

    let meta_path = dir.join(META_DIR);
    let meta = open_meta(&meta_path)?;
    let put = |k: &str, v: &[u8]| {
        meta.insert(k, v)
            .map(|_| ())
            .map_err(|source| VolumeError::Meta {
                path: meta_path.clone(),
                source,
            })
    };
    put(KEY_FORMAT, &VOLUME_FORMAT.to_le_bytes())?;
    put(KEY_ID, &id.0)?;
    put(KEY_ROLE, role.as_str().as_bytes())?;
    let mut journal = Journal::create(&dir.join(JOURNAL_DIR), id, JournalConfig::default())?;
    if role == Role::Master {
        // Record 1 gives the root the metadata it has now, so that replaying
        // the journal alone rebuilds the tree exactly.
        let st = fs::metadata(dir.join(TREE_DIR)).map_err(io_err("stat tree"))?;
        use std::os::unix::fs::MetadataExt;
        let time = Timestamp::now();
        let op = Op::SetAttr {
            node: Node::Root,
            mode: Some(st.mode() & 0o7777),
            uid: Some(st.uid()),
            gid: Some(st.gid()),
            atime: None,
            mtime: Some(time),
        };
        let record = Record {
            seq: 1,
            time,
            op,
            mtimes: Vec::new(),
            before: Vec::new(),
        };
        let position = journal.append(&record)?;
        journal.sync()?;
        let mut applier = Applier::open(
            &dir.join(TREE_DIR),
            &dir.join(ATTIC_DIR),
            &dir.join(SLOT_FILE),
            Position::ZERO,
        )?;
        applier.apply(&crate::journal::Entry {
            position,
            prev_chain: Position::ZERO.chain,
            record,
        })?;
        applier.settle()?;
        put(
            KEY_APPLIED,
            &postcard::to_stdvec(&position).expect("a position always encodes"),
        )?;
    }
    meta.flush().map_err(|source| VolumeError::Meta {
        path: meta_path.clone(),
        source,
    })?;
    Ok(())
}

/// Opens the sled store. sled releases its file lock asynchronously after the
/// last handle is dropped, so a volume closed and reopened in one process can
/// find it still held for a moment. The caller holds `VOL/lock`, so no other
/// process can hold sled's lock: waiting briefly is safe.
fn open_meta(meta_path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(meta_path).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(source) => {
                return Err(VolumeError::Meta {
                    path: meta_path.to_owned(),
                    source,
                })
            }
        }
    }
}

fn read_identity(meta: &sled::Db, meta_path: &Path) -> Result<(VolumeId, Role)> {
    let get = |k: &str| {
        meta.get(k)
            .map_err(|source| VolumeError::Meta {
                path: meta_path.to_owned(),
                source,
            })?
            .ok_or_else(|| VolumeError::Layout {
                path: meta_path.to_owned(),
                reason: format!("has no {k}: is this a jfs volume?"),
            })
    };
    let format = get(KEY_FORMAT)?;
    if format.as_ref() != VOLUME_FORMAT.to_le_bytes() {
        return Err(VolumeError::Layout {
            path: meta_path.to_owned(),
            reason: format!(
                "volume format {format:?} is not supported (this build reads {VOLUME_FORMAT})"
            ),
        });
    }
    let id = VolumeId(
        get(KEY_ID)?
            .as_ref()
            .try_into()
            .map_err(|_| VolumeError::Layout {
                path: meta_path.to_owned(),
                reason: "volume id is not 16 bytes".into(),
            })?,
    );
    let role = get(KEY_ROLE)?;
    let role = Role::parse(&role).ok_or_else(|| VolumeError::Layout {
        path: meta_path.to_owned(),
        reason: format!("unknown role {:?}", String::from_utf8_lossy(&role)),
    })?;
    Ok((id, role))
}

fn meta_position(meta: &sled::Db, meta_path: &Path, key: &str) -> Result<Option<Position>> {
    let Some(b) = meta.get(key).map_err(|source| VolumeError::Meta {
        path: meta_path.to_owned(),
        source,
    })?
    else {
        return Ok(None);
    };
    postcard::from_bytes(&b)
        .map(Some)
        .map_err(|e| VolumeError::Layout {
            path: meta_path.to_owned(),
            reason: format!("{key} does not decode: {e}"),
        })
}

/// The volume's role, read only when no process has the volume open:
/// `None` when one does (its meta is theirs then). Holds the volume's lock
/// for the read, without waiting for it.
pub fn peek_role(path: &Path) -> Result<Option<Role>> {
    check_volume_dir(path)?;
    let lock_path = path.join(LOCK_FILE);
    let meta_path = path.join(META_DIR);
    let lock = File::open(&lock_path).map_err(io_err(format!("open {}", lock_path.display())))?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(io_err(format!("lock {}", lock_path.display()))(e.into())),
    }
    let meta = open_meta(&meta_path)?;
    Ok(Some(read_identity(&meta, &meta_path)?.1))
}

/// The volume's position as its files say, without taking the volume's lock
/// (for status while another process has it open).
pub fn peek_applied(path: &Path) -> Result<Option<Position>> {
    Ok(read_slot(&path.join(SLOT_FILE))?.map(|s| s.applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lies_inside_resolves_links_and_paths_not_made_yet() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        fs::create_dir_all(vol.join("tree")).unwrap();
        fs::create_dir(dir.path().join("vol2")).unwrap();
        std::os::unix::fs::symlink(vol.join("tree"), dir.path().join("link")).unwrap();
        assert!(lies_inside(&vol, &vol));
        assert!(lies_inside(&vol.join("tree"), &vol));
        assert!(lies_inside(&vol.join("tree/not-yet"), &vol));
        assert!(lies_inside(&dir.path().join("link/not-yet"), &vol));
        // A sibling whose name starts the same is not inside.
        assert!(!lies_inside(&dir.path().join("vol2"), &vol));
        assert!(!lies_inside(&dir.path().join("vol2/x"), &vol));
        assert!(!lies_inside(&dir.path().join("missing/x"), &vol));
        assert!(!lies_inside(&vol, &dir.path().join("missing")));
    }
}
