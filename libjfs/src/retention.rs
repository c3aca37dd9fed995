//! Retention: history bounded by age and size, never removing what a
//! reader still needs.
//!
//! The journal is the volume's history: rewind, materialize and every
//! replica that catches up read it. Without a policy (the default) all of
//! it stays. With one, whole sealed segments go, oldest first, once they
//! are older than `max_age` or do not fit in `max_bytes` with the newer
//! ones; the active segment always stays.
//!
//! **Cursors** hold history back: the volume's own applied position, and
//! each replica the volume's server knows (`VOL/replicas.json`) at the
//! position its journal is durable at. A cursor at `D` needs records
//! `D+1..`, so a segment holding any record after `D` stays. `force`
//! ignores replicas (they will have to bootstrap again), never the
//! volume's own position. A replica whose records are already gone holds
//! nothing back: it cannot be served either way.
//!
//! After the journal is trimmed to start at `F`, the **attic** entries of
//! records before `F` (`VOL/attic/<seq>`) are of no use and are pruned.
//!
//! [`plan`] is the pure decision; [`trim_step`] applies it to an open
//! volume (under its lock, a bounded number of segments at a time, so a
//! mount never waits long); [`prune_attic`] works on the files alone.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};

use crate::journal::{sealed_records, JournalError, SegmentInfo};
use crate::record::{Record, Timestamp};
use crate::volume::{Volume, VolumeError, ATTIC_DIR, JOURNAL_DIR};

/// Setting: the age past which a sealed segment may go, in seconds.
pub const SETTING_MAX_AGE: &str = "retention.max_age_secs";
/// Setting: the bytes the sealed segments may take on disk.
pub const SETTING_MAX_BYTES: &str = "retention.max_bytes";

/// Segments removed by one call of [`trim_step`] on a volume that serves
/// others (a mount): each costs an unlink and a directory sync under the
/// volume's lock.
pub const TRIM_BATCH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{what} {value:?}: {reason}")]
    BadValue {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("segment {}", path.display())]
    Segment {
        path: PathBuf,
        #[source]
        source: JournalError,
    },
}

type Result<T> = std::result::Result<T, RetentionError>;

/// How much history to keep. Neither limit set: everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Policy {
    pub fn keeps_everything(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none()
    }

    /// The policy stored in the volume's settings.
    pub fn load(vol: &Volume) -> Result<Policy> {
        let num = |key: &'static str| -> Result<Option<u64>> {
            match vol.setting(key)? {
                None => Ok(None),
                Some(s) if s.is_empty() => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|_| RetentionError::BadValue {
                    what: key,
                    value: s,
                    reason: "stored setting is not a number".into(),
                }),
            }
        };
        Ok(Policy {
            max_age: num(SETTING_MAX_AGE)?.map(Duration::from_secs),
            max_bytes: num(SETTING_MAX_BYTES)?,
        })
    }

    /// Stores the policy durably in the volume's settings.
    pub fn store(&self, vol: &Volume) -> Result<()> {
        let age = self
            .max_age
            .map_or(String::new(), |d| d.as_secs().to_string());
        let bytes = self.max_bytes.map_or(String::new(), |b| b.to_string());
        vol.set_setting(SETTING_MAX_AGE, &age)?;
        vol.set_setting(SETTING_MAX_BYTES, &bytes)?;
        Ok(())
    }

    /// This policy with the changes asked for on a command line: a value
    /// sets a limit, `none` clears it, `keep_all` clears both first.
    pub fn changed(
        &self,
        max_age: Option<&str>,
        max_size: Option<&str>,
        keep_all: bool,
    ) -> Result<Policy> {
        let mut p = if keep_all { Policy::default() } else { *self };
        if let Some(a) = max_age {
            p.max_age = if is_none(a) {
                None
            } else {
                Some(parse_age(a)?)
            };
        }
        if let Some(s) = max_size {
            p.max_bytes = if is_none(s) {
                None
            } else {
                Some(parse_size(s)?)
            };
        }
        Ok(p)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "max_age_secs": self.max_age.map(|d| d.as_secs()),
            "max_age": self.max_age.map(|d| humantime::format_duration(d).to_string()),
            "max_bytes": self.max_bytes,
            "keeps_everything": self.keeps_everything(),
        })
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.keeps_everything() {
            return f.write_str("keep all history");
        }
        let mut parts = Vec::new();
        if let Some(a) = self.max_age {
            parts.push(format!("max age {}", humantime::format_duration(a)));
        }
        if let Some(b) = self.max_bytes {
            parts.push(format!("max size {}", human_bytes(b)));
        }
        f.write_str(&parts.join(", "))
    }
}

fn is_none(s: &str) -> bool {
    matches!(s, "none" | "off" | "unlimited")
}

/// A duration as humantime reads it: `30d`, `12h`, `1week 2days`.
pub fn parse_age(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| RetentionError::BadValue {
        what: "age",
        value: s.into(),
        reason: format!("{e} (examples: 30d, 12h, 2weeks)"),
    })?;
    if d.is_zero() {
        return Err(RetentionError::BadValue {
            what: "age",
            value: s.into(),
            reason: "must be more than zero".into(),
        });
    }
    Ok(d)
}

/// A size in bytes: `1048576`, `64KiB`, `10GiB` (powers of 1024), `10G` or
/// `10GB` (powers of 1000).
pub fn parse_size(s: &str) -> Result<u64> {
    parse_size::parse_size(s).map_err(|e| RetentionError::BadValue {
        what: "size",
        value: s.into(),
        reason: format!("{e} (examples: 64KiB, 512MiB, 10GiB, 10G)"),
    })
}

/// Bytes for people: `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A past moment for people: `3 days ago`.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let s = (now.sec - then.sec).max(0) as u64;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

// ---------------------------------------------------------------------------
// The decision
// ---------------------------------------------------------------------------

/// A sealed segment as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Size of the file on disk.
    pub bytes: u64,
    /// Time of its last record; `None` when not looked up (treated as new).
    pub last_time: Option<Timestamp>,
}

/// Who holds history back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The volume's own tree: records it has not applied.
    Applied,
    /// A replica this volume serves, as its registry knows it.
    Replica {
        id: String,
        address: String,
        last_seen: Timestamp,
        connected: bool,
    },
}

/// A position that needs every record after `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub holder: Holder,
    pub seq: u64,
}

impl Cursor {
    /// How many of the oldest `sealed` segments may go without this cursor
    /// losing a record it needs.
    fn allows(&self, sealed: &[SegmentSummary]) -> usize {
        sealed.iter().take_while(|s| s.last_seq <= self.seq).count()
    }

    fn describe(&self, now: Timestamp) -> String {
        match &self.holder {
            Holder::Applied => format!("the volume's own tree at {}", self.seq),
            Holder::Replica {
                id,
                address,
                last_seen,
                connected,
            } => format!(
                "replica {id} ({address}) at {} ({})",
                self.seq,
                if *connected {
                    "connected".to_owned()
                } else {
                    format!("last seen {}", ago(*last_seen, now))
                }
            ),
        }
    }
}

/// Why a plan keeps what it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No policy: all history stays.
    NoPolicy,
    /// Everything the policy lets go goes (possibly nothing).
    Satisfied,
    /// Cursors keep segments the policy would let go.
    HeldBack,
}

/// What [`plan`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// How many of the oldest sealed segments go.
    pub remove: usize,
    /// How many the policy alone would let go.
    pub wanted: usize,
    /// The journal's first seq once they are gone.
    pub first_seq_after: u64,
    pub reason: Reason,
    /// Cursors that keep segments the policy would let go, most binding first.
    pub held_by: Vec<Cursor>,
    /// Replicas ignored by `force` that lose records they need.
    pub overridden: Vec<Cursor>,
    /// Replicas whose records were gone already: they hold nothing back.
    pub lost: Vec<Cursor>,
}

/// Decides which of the oldest sealed segments go. `sealed` is oldest
/// first; `first_seq` is the journal's first record (the active segment's
/// first when nothing is sealed); `cursors` hold history back (see the
/// module docs).
pub fn plan(
    sealed: &[SegmentSummary],
    first_seq: u64,
    cursors: &[Cursor],
    policy: &Policy,
    force: bool,
    now: Timestamp,
) -> Plan {
    let n = sealed.len();
    let by_age = policy.max_age.map_or(0, |max| {
        sealed
            .iter()
            .take_while(|s| {
                s.last_time
                    .is_some_and(|t| seconds_between(t, now) > max.as_secs_f64())
            })
            .count()
    });
    let by_size = policy.max_bytes.map_or(0, |max| {
        // Keep the newest segments whose total fits.
        let mut total = 0u64;
        let kept = sealed
            .iter()
            .rev()
            .take_while(|s| {
                total = total.saturating_add(s.bytes);
                total <= max
            })
            .count();
        n - kept
    });
    let wanted = by_age.max(by_size);

    let mut remove = wanted;
    let mut held_by = Vec::new();
    let mut overridden = Vec::new();
    let mut lost = Vec::new();
    let mut replicas = Vec::new();
    for c in cursors {
        let is_replica = matches!(c.holder, Holder::Replica { .. });
        if is_replica && c.seq + 1 < first_seq {
            lost.push(c.clone());
            continue;
        }
        let allows = c.allows(sealed);
        if allows >= wanted {
            continue;
        }
        if is_replica && force {
            replicas.push((allows, c.clone()));
            continue;
        }
        remove = remove.min(allows);
        held_by.push((allows, c.clone()));
    }
    held_by.sort_by_key(|(allows, c)| (*allows, c.seq));
    for (allows, c) in replicas {
        if allows < remove {
            overridden.push(c);
        }
    }
    let reason = if policy.keeps_everything() {
        Reason::NoPolicy
    } else if remove < wanted {
        Reason::HeldBack
    } else {
        Reason::Satisfied
    };
    let first_seq_after = match remove {
        0 => first_seq,
        k => sealed[k - 1].last_seq + 1,
    };
    Plan {
        remove,
        wanted,
        first_seq_after,
        reason,
        held_by: held_by.into_iter().map(|(_, c)| c).collect(),
        overridden,
        lost,
    }
}

fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    (b.sec - a.sec) as f64 + (b.nsec as f64 - a.nsec as f64) / 1e9
}

// ---------------------------------------------------------------------------
// Applying it to a volume
// ---------------------------------------------------------------------------

/// What [`trim_step`] is asked to do.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrimOptions {
    /// Ignore replicas' cursors.
    pub force: bool,
    /// Decide and report, remove nothing.
    pub dry_run: bool,
    /// Remove at most this many segments (the rest at the next call).
    pub max_segments: Option<usize>,
}

/// What a trim did (or, dry, would do).
#[derive(Clone, Debug)]
pub struct TrimReport {
    pub dry_run: bool,
    pub policy: Policy,
    pub first_seq_before: u64,
    pub first_seq: u64,
    /// Segments removed (or that would be).
    pub segments: Vec<SegmentInfo>,
    pub plan: Plan,
    /// More segments would go at the next call (the batch was full).
    pub more: bool,
    /// Snapshots this trim puts before the history kept: the volume can no
    /// longer be rewound to them.
    pub snapshots_lost: Vec<(String, u64)>,
    pub now: Timestamp,
}

impl TrimReport {
    pub fn records(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.last_seq + 1 - s.first_seq)
            .sum()
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.file_bytes).sum()
    }

    /// Lines for people: what held history back, what force costs.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        match self.plan.reason {
            Reason::NoPolicy => notes.push(
                "no retention policy: all history is kept (set one with `retention VOL --max-age AGE --max-size SIZE`)"
                    .to_owned(),
            ),
            Reason::Satisfied => {}
            Reason::HeldBack => {
                for c in &self.plan.held_by {
                    let mut line = format!(
                        "{} holds back {}..",
                        c.describe(self.now),
                        c.seq + 1
                    );
                    if matches!(c.holder, Holder::Replica { .. }) {
                        line.push_str(
                            "; use --force to trim anyway; that replica will have to re-bootstrap (jfs-replica bootstrap VOL --from ADDR)",
                        );
                    }
                    notes.push(line);
                }
            }
        }
        for c in &self.plan.overridden {
            notes.push(format!(
                "{}: {} past its position; it will have to re-bootstrap (jfs-replica bootstrap VOL --from ADDR)",
                c.describe(self.now),
                if self.dry_run { "would be trimmed" } else { "trimmed" }
            ));
        }
        for c in &self.plan.lost {
            notes.push(format!(
                "{}: its records were trimmed before; it has to re-bootstrap (jfs-replica bootstrap VOL --from ADDR)",
                c.describe(self.now)
            ));
        }
        for (name, seq) in &self.snapshots_lost {
            notes.push(format!(
                "snapshot {name} (at {seq}) {} before the history kept: the volume can no longer be rewound to it",
                if self.dry_run { "would be" } else { "is now" }
            ));
        }
        notes
    }

    pub fn to_json(&self) -> Value {
        json!({
            "dry_run": self.dry_run,
            "policy": self.policy.to_json(),
            "first_seq_before": self.first_seq_before,
            "first_seq": self.first_seq,
            "segments": self.segments.len(),
            "records": self.records(),
            "bytes": self.bytes(),
            "removed": self.segments.iter().map(|s| json!({
                "path": s.path.display().to_string(),
                "first_seq": s.first_seq,
                "last_seq": s.last_seq,
                "bytes": s.file_bytes,
            })).collect::<Vec<_>>(),
            "reason": match self.plan.reason {
                Reason::NoPolicy => "no-policy",
                Reason::Satisfied => "policy-satisfied",
                Reason::HeldBack => "held-back",
            },
            "held_by": self.plan.held_by.iter().map(cursor_json).collect::<Vec<_>>(),
            "overridden": self.plan.overridden.iter().map(cursor_json).collect::<Vec<_>>(),
            "lost": self.plan.lost.iter().map(cursor_json).collect::<Vec<_>>(),
            "more": self.more,
            "snapshots_lost": self.snapshots_lost.iter().map(|(n, seq)| json!({"name": n, "seq": seq})).collect::<Vec<_>>(),
            "notes": self.notes(),
        })
    }
}

fn cursor_json(c: &Cursor) -> Value {
    match &c.holder {
        Holder::Applied => json!({ "holder": "applied", "seq": c.seq }),
        Holder::Replica {
            id,
            address,
            last_seen,
            connected,
        } => json!({
            "holder": "replica",
            "id": id,
            "address": address,
            "last_seen": last_seen.to_rfc3339(),
            "connected": connected,
            "seq": c.seq,
        }),
    }
}

/// The cursors of the replicas in `VOL/replicas.json`: where each one's
/// journal is durable (what it keeps after a power cut), or where it said
/// it was when that is not known yet.
pub fn replica_cursors(volume: &Path) -> Result<Vec<Cursor>> {
    let file = volume.join(crate::ship::server::REGISTRY_FILE);
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RetentionError::Io {
                context: format!("read {}", file.display()),
                source,
            })
        }
    };
    // Unreadable cursors must not let history go: refuse rather than guess.
    let list: Vec<crate::ship::server::ReplicaInfo> =
        serde_json::from_slice(&bytes).map_err(|e| RetentionError::BadValue {
            what: "replica registry",
            value: file.display().to_string(),
            reason: format!("does not decode: {e}"),
        })?;
    Ok(list
        .into_iter()
        .map(|r| {
            let seq = r.durable.map_or(r.acked.seq, |d| d.seq.min(r.acked.seq));
            Cursor {
                holder: Holder::Replica {
                    id: r.id,
                    address: r.address,
                    last_seen: r.last_seen,
                    connected: r.connected,
                },
                seq,
            }
        })
        .collect())
}

/// Times of the last record of sealed segments, by path and first seq:
/// a sealed segment never changes, so each is read once per process.
fn time_cache() -> &'static Mutex<HashMap<(PathBuf, u64), Timestamp>> {
    static CACHE: OnceLock<Mutex<HashMap<(PathBuf, u64), Timestamp>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn last_record_time(volume_id: crate::VolumeId, s: &SegmentInfo) -> Result<Timestamp> {
    let key = (s.path.clone(), s.first_seq);
    if let Some(t) = time_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return Ok(*t);
    }
    let (_, records) = sealed_records(&s.path, volume_id)?;
    let last = records.last().ok_or_else(|| JournalError::Corrupt {
        segment: s.path.clone(),
        offset: 0,
        reason: "sealed segment holds no record".into(),
    })?;
    let time = Record::decode(last)
        .map_err(|source| JournalError::Record {
            seq: s.last_seq,
            source,
        })?
        .time;
    time_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, time);
    Ok(time)
}

/// Reads, without any lock, the times of the oldest sealed segments of
/// the volume at `volume` that an age limit of `max_age` could let go, so
/// that [`trim_step`] in this process finds them known and holds the
/// volume's lock only briefly.
pub fn warm_segment_times(volume: &Path, max_age: Duration) -> Result<()> {
    // The sealed files by name, oldest first: opening the journal would
    // read the whole active segment each time.
    let dir = volume.join(JOURNAL_DIR);
    let mut sealed: Vec<(u64, PathBuf)> = fs::read_dir(&dir)
        .map_err(|source| RetentionError::Io {
            context: format!("list {}", dir.display()),
            source,
        })?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let first = name.to_str()?.strip_suffix(".seg")?.parse().ok()?;
            Some((first, e.path()))
        })
        .collect();
    sealed.sort();
    let now = Timestamp::now();
    for (first_seq, path) in sealed {
        let key = (path, first_seq);
        let cached = time_cache()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let t = match cached {
            Some(t) => t,
            None => {
                let bytes = match fs::read(&key.0) {
                    Ok(b) => b,
                    // Trimmed meanwhile: the next one.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(RetentionError::Io {
                            context: format!("read {}", key.0.display()),
                            source,
                        })
                    }
                };
                let contents = crate::journal::decode_segment(&bytes).map_err(|source| {
                    RetentionError::Segment {
                        path: key.0.clone(),
                        source,
                    }
                })?;
                let Some(last) = contents.entries.last() else {
                    continue;
                };
                let t = last.record.time;
                time_cache()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, t);
                t
            }
        };
        if seconds_between(t, now) <= max_age.as_secs_f64() {
            break;
        }
    }
    Ok(())
}

/// Applies the volume's policy now: decides ([`plan`]) and removes the
/// segments that go, at most `opts.max_segments` of them. Attic entries
/// are left to [`prune_attic`], which needs no lock.
pub fn trim_step(vol: &mut Volume, opts: TrimOptions) -> Result<TrimReport> {
    let policy = Policy::load(vol)?;
    trim_with(vol, &policy, opts, Timestamp::now())
}

/// [`trim_step`] with a given policy and time.
pub fn trim_with(
    vol: &mut Volume,
    policy: &Policy,
    opts: TrimOptions,
    now: Timestamp,
) -> Result<TrimReport> {
    let sealed: Vec<SegmentInfo> = vol
        .journal()
        .segments()
        .into_iter()
        .filter(|s| s.sealed)
        .collect();
    let first_seq_before = vol.journal().first_seq();
    let mut cursors = vec![Cursor {
        holder: Holder::Applied,
        seq: vol.applied().seq,
    }];
    cursors.extend(replica_cursors(vol.path())?);

    // Times are read only where the age limit could use them: oldest first,
    // up to the first segment that is new enough (or past the batch).
    let limit = opts.max_segments.unwrap_or(usize::MAX);
    let mut summaries = Vec::with_capacity(sealed.len());
    let mut look = policy.max_age.is_some();
    for (i, s) in sealed.iter().enumerate() {
        let last_time = if look && i <= limit {
            let t = last_record_time(vol.id(), s)?;
            if policy
                .max_age
                .is_some_and(|max| seconds_between(t, now) <= max.as_secs_f64())
            {
                look = false;
            }
            Some(t)
        } else {
            None
        };
        summaries.push(SegmentSummary {
            first_seq: s.first_seq,
            last_seq: s.last_seq,
            bytes: s.file_bytes,
            last_time,
        });
    }
    let mut plan = plan(
        &summaries,
        first_seq_before,
        &cursors,
        policy,
        opts.force,
        now,
    );
    let take = plan.remove.min(limit);
    let more = take < plan.remove;
    let segments = if opts.dry_run {
        sealed[..plan.remove].to_vec()
    } else if take > 0 {
        let before = sealed[take - 1].last_seq + 1;
        vol.journal_mut().trim_before(before)?
    } else {
        Vec::new()
    };
    if !opts.dry_run {
        plan.first_seq_after = vol.journal().first_seq();
    }
    // A snapshot at P can be rewound to while record P+1 is held.
    let snapshots_lost = vol
        .list_snapshots()?
        .into_iter()
        .map(|(name, pos)| (name, pos.seq))
        .filter(|(_, seq)| seq + 1 >= first_seq_before && seq + 1 < plan.first_seq_after)
        .collect();
    Ok(TrimReport {
        dry_run: opts.dry_run,
        policy: *policy,
        first_seq_before,
        first_seq: plan.first_seq_after,
        segments,
        plan,
        more: more && !opts.dry_run,
        snapshots_lost,
        now,
    })
}

// ---------------------------------------------------------------------------
// The attic
// ---------------------------------------------------------------------------

/// What [`prune_attic`] removed (or, dry, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AtticReport {
    pub entries: u64,
    pub bytes: u64,
    /// Names that are not a record's seq: left alone.
    pub foreign: Vec<String>,
    /// Entries that could not be removed, and why.
    pub failed: Vec<(String, String)>,
    /// Why nothing was looked at, when nothing was.
    pub held: Option<String>,
}

impl AtticReport {
    pub fn to_json(&self) -> Value {
        json!({
            "entries": self.entries,
            "bytes": self.bytes,
            "foreign": self.foreign,
            "failed": self.failed.iter().map(|(n, e)| json!({"name": n, "error": e})).collect::<Vec<_>>(),
            "held": self.held,
        })
    }
}

/// Bytes an entry takes on disk (allocated blocks).
fn disk_usage(md: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    md.blocks() * 512
}

/// Removes every `VOL/attic/<seq>` with `seq < first_seq`: the records
/// that put them there are no longer in the journal, so nothing can bring
/// them back. On a replica built from an image, the entries up to the
/// image's position are kept ([`crate::volume::bootstrapped_at`]). One entry at a time and never following a symlink; a
/// directory there is an empty one (an rmdir'ed directory) and is removed
/// as such, never recursively. Names that are not decimal are reported and
/// left alone. Needs no lock: nothing else touches entries that old.
///
/// Every entry is named by the record that made it, except on a replica
/// whose tree was taken back alone (`jfs-replica rewind`): undoing a restore
/// there puts the node back under its old name, which a record the tree has
/// not applied again may need. While such a tree is behind its journal, the
/// attic is left as it is.
pub fn prune_attic(volume: &Path, first_seq: u64, dry_run: bool) -> Result<AtticReport> {
    // A replica built from an image keeps the entries that came with it:
    // its own journal starts after them, but its master may still rewind
    // to before them.
    let from_image = crate::volume::bootstrapped_at(volume).unwrap_or(0);
    let dir = volume.join(ATTIC_DIR);
    let mut report = AtticReport::default();
    let applied = crate::applier::read_slot(&volume.join(crate::volume::SLOT_FILE))
        .ok()
        .flatten()
        .map(|s| s.applied.seq);
    let head = crate::Journal::open_read_only(&volume.join(crate::volume::JOURNAL_DIR), None)
        .map(|j| j.head().seq)
        .ok();
    if let (Some(applied), Some(head)) = (applied, head) {
        if applied < head {
            report.held = Some(format!(
                "the tree is at {applied}, behind its journal ({head}): the attic is kept until it catches up"
            ));
            return Ok(report);
        }
    }
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(source) => {
            return Err(RetentionError::Io {
                context: format!("list {}", dir.display()),
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| RetentionError::Io {
            context: format!("list {}", dir.display()),
            source,
        })?;
        let name = entry.file_name();
        let shown = name.to_string_lossy().into_owned();
        let seq = match name
            .to_str()
            .filter(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(s) => match s.parse::<u64>() {
                Ok(seq) => seq,
                Err(_) => {
                    report.foreign.push(shown);
                    continue;
                }
            },
            None => {
                report.foreign.push(shown);
                continue;
            }
        };
        if seq >= first_seq || seq <= from_image {
            continue;
        }
        let path = entry.path();
        // symlink_metadata: the entry itself, never what a symlink names.
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                report.failed.push((shown, e.to_string()));
                continue;
            }
        };
        if !dry_run {
            let removed = if md.is_dir() {
                fs::remove_dir(&path)
            } else {
                fs::remove_file(&path)
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    report.failed.push((shown, e.to_string()));
                    continue;
                }
            }
        }
        report.entries += 1;
        report.bytes += disk_usage(&md);
    }
    report.foreign.sort();
    if !dry_run && report.entries > 0 {
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| RetentionError::Io {
                context: format!("sync {}", dir.display()),
                source,
            })?;
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

/// History and attic as the files show them, without any lock: first
/// retained seq, bytes of sealed segments, attic entries and bytes.
pub fn usage_json(volume: &Path) -> Value {
    let journal = volume.join(JOURNAL_DIR);
    let mut sealed = 0u64;
    let mut sealed_bytes = 0u64;
    let mut first: Option<u64> = None;
    for e in fs::read_dir(&journal).into_iter().flatten().flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(seq) = stem.parse::<u64>() else {
            continue;
        };
        if ext == "seg" || ext == "active" {
            first = Some(first.map_or(seq, |f| f.min(seq)));
        }
        if ext == "seg" {
            if let Ok(md) = e.metadata() {
                sealed += 1;
                sealed_bytes += md.len();
            }
        }
    }
    let (mut entries, mut bytes) = (0u64, 0u64);
    for e in fs::read_dir(volume.join(ATTIC_DIR))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(md) = fs::symlink_metadata(e.path()) {
            entries += 1;
            bytes += disk_usage(&md);
        }
    }
    json!({
        "first_seq": first,
        "history_segments": sealed,
        "history_bytes": sealed_bytes,
        "attic_entries": entries,
        "attic_bytes": bytes,
    })
}

/// The policy of a volume another process may hold: read from its meta
/// only when nobody holds the volume (`None` otherwise).
pub fn peek_policy(volume: &Path) -> Option<Policy> {
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(volume.join(crate::volume::LOCK_FILE))
        .ok()?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    let db = sled::Config::new()
        .path(volume.join(crate::volume::META_DIR))
        .open()
        .ok()?;
    let tree = db.open_tree(crate::volume::SETTINGS_TREE).ok()?;
    let num = |k: &str| -> Option<u64> {
        let v = tree.get(k).ok()??;
        std::str::from_utf8(&v).ok()?.parse().ok()
    };
    Some(Policy {
        max_age: num(SETTING_MAX_AGE).map(Duration::from_secs),
        max_bytes: num(SETTING_MAX_BYTES),
    })
}

/// `{"policy": ...}` for a volume's status (the asker adds [`usage_json`]).
pub fn policy_json(vol: &Volume) -> Value {
    match Policy::load(vol) {
        Ok(p) => json!({ "policy": p.to_json() }),
        Err(e) => json!({ "policy": null, "error": e.to_string() }),
    }
}

/// A policy as [`Policy::to_json`] gives it, for people; `null` is a
/// policy that could not be read (the volume is in use).
pub fn policy_text(p: &Value) -> String {
    if p.is_null() {
        return "unknown (the volume is in use)".into();
    }
    Policy {
        max_age: p["max_age_secs"].as_u64().map(Duration::from_secs),
        max_bytes: p["max_bytes"].as_u64(),
    }
    .to_string()
}

/// Shows (no change asked) or changes the volume's policy; answers the
/// policy in force after.
pub fn set_policy(
    vol: &Volume,
    max_age: Option<&str>,
    max_size: Option<&str>,
    keep_all: bool,
) -> Result<Value> {
    let old = Policy::load(vol)?;
    let new = old.changed(max_age, max_size, keep_all)?;
    if new != old {
        new.store(vol)?;
    }
    Ok(json!({
        "policy": new.to_json(),
        "text": new.to_string(),
        "changed": new != old,
    }))
}

// ---------------------------------------------------------------------------
// Driving a trim from outside the volume's lock
// ---------------------------------------------------------------------------

/// Trims the volume at `volume` through `ask` (the admin socket of the
/// process that holds it, or [`answer_with`](crate::admin::answer_with) on
/// a volume opened here): [`Request::Trim`](crate::admin::Request::Trim)
/// in batches until nothing more goes, then prunes the attic here, outside
/// the volume's lock. Answers the sum: the last report with the counts of
/// all, and `attic`.
pub fn trim_via(
    volume: &Path,
    force: bool,
    dry_run: bool,
    mut ask: impl FnMut(crate::admin::Request) -> std::result::Result<Value, String>,
) -> std::result::Result<Value, String> {
    let mut total: Option<Value> = None;
    loop {
        let r = ask(crate::admin::Request::Trim { force, dry_run })?;
        let more = r["more"] == true;
        total = Some(match total {
            None => r,
            Some(mut t) => {
                for k in ["segments", "records", "bytes"] {
                    t[k] = (t[k].as_u64().unwrap_or(0) + r[k].as_u64().unwrap_or(0)).into();
                }
                let mut removed = t["removed"].as_array().cloned().unwrap_or_default();
                removed.extend(r["removed"].as_array().cloned().unwrap_or_default());
                t["removed"] = removed.into();
                let mut notes: Vec<Value> = t["notes"].as_array().cloned().unwrap_or_default();
                for n in r["notes"].as_array().into_iter().flatten() {
                    if !notes.contains(n) {
                        notes.push(n.clone());
                    }
                }
                t["notes"] = notes.into();
                for k in ["first_seq", "reason", "held_by", "lost", "more"] {
                    t[k] = r[k].clone();
                }
                let mut over = t["overridden"].as_array().cloned().unwrap_or_default();
                for o in r["overridden"].as_array().into_iter().flatten() {
                    if !over.iter().any(|x| x["id"] == o["id"]) {
                        over.push(o.clone());
                    }
                }
                t["overridden"] = over.into();
                let mut snaps = t["snapshots_lost"].as_array().cloned().unwrap_or_default();
                snaps.extend(r["snapshots_lost"].as_array().cloned().unwrap_or_default());
                t["snapshots_lost"] = snaps.into();
                t
            }
        });
        // A batch that removed nothing ends the loop too: no progress.
        if !more || total.as_ref().is_some_and(|t| t["segments"] == 0) {
            break;
        }
    }
    let mut total = total.expect("asked at least once");
    let first = total["first_seq"].as_u64().unwrap_or(0);
    let attic = prune_attic(volume, first, dry_run).map_err(|e| e.to_string())?;
    total["attic"] = attic.to_json();
    Ok(total)
}

/// The lines `trim` prints for a report from [`trim_via`].
pub fn describe_trim(r: &Value) -> Vec<String> {
    let dry = r["dry_run"] == true;
    let mut lines = Vec::new();
    let n = r["segments"].as_u64().unwrap_or(0);
    if n == 0 {
        lines.push(format!(
            "{} no segment; history starts at {}",
            if dry { "would remove" } else { "removed" },
            r["first_seq"]
        ));
    } else {
        let removed = r["removed"].as_array().cloned().unwrap_or_default();
        let from = removed
            .first()
            .map_or(Value::Null, |s| s["first_seq"].clone());
        let to = removed
            .last()
            .map_or(Value::Null, |s| s["last_seq"].clone());
        lines.push(format!(
            "{} {n} segments: records {from} to {to} ({} records, {}); history now starts at {}",
            if dry { "would remove" } else { "removed" },
            r["records"],
            human_bytes(r["bytes"].as_u64().unwrap_or(0)),
            r["first_seq"]
        ));
    }
    let a = &r["attic"];
    if a.is_object() {
        lines.push(format!(
            "{} {} attic entries ({})",
            if dry { "would remove" } else { "removed" },
            a["entries"],
            human_bytes(a["bytes"].as_u64().unwrap_or(0))
        ));
        for f in a["foreign"].as_array().into_iter().flatten() {
            lines.push(format!(
                "attic entry {} is not a record's seq; left alone",
                f.as_str().unwrap_or("?")
            ));
        }
        for f in a["failed"].as_array().into_iter().flatten() {
            lines.push(format!(
                "attic entry {} could not be removed: {}",
                f["name"].as_str().unwrap_or("?"),
                f["error"].as_str().unwrap_or("?")
            ));
        }
    }
    for n in r["notes"].as_array().into_iter().flatten() {
        lines.push(n.as_str().unwrap_or("").to_owned());
    }
    lines
}

/// How often a running volume applies its policy by itself.
pub const AUTO_TRIM_EVERY: Duration = Duration::from_secs(60);
/// How soon it tries again when replicas held history back.
const HELD_BACK_RETRY: Duration = Duration::from_secs(5);

/// Applies the policy of the volume at `volume` every `every`, and soon
/// after each new sealed segment, through `ask` (see [`trim_via`]), until
/// `stop`. Says on stderr, prefixed by `log_name`, what it removed, what
/// holds history back (when that changes) and what failed.
pub fn auto_trim(
    volume: PathBuf,
    every: Duration,
    log_name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut ask: impl FnMut(crate::admin::Request) -> std::result::Result<Value, String> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let tick = Duration::from_millis(500).min(every);
        // The first run comes at once: a volume opened after a while may
        // have history to let go.
        let mut last_run = std::time::Instant::now()
            .checked_sub(every)
            .unwrap_or_else(std::time::Instant::now);
        let mut seen_sealed = newest_sealed(&volume);
        let mut last_holders = Value::Null;
        // After a run that replicas held back, the next one comes sooner:
        // their positions (saved every few seconds) move on.
        let mut wait = every;
        let mut last_error = String::new();
        let mut pruned_to = 0u64;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            let sealed = newest_sealed(&volume);
            if last_run.elapsed() < wait && sealed == seen_sealed {
                continue;
            }
            seen_sealed = sealed;
            last_run = std::time::Instant::now();
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // Segment times are read here, outside the volume's lock.
            let max_age = ask(crate::admin::Request::Retention {
                max_age: None,
                max_size: None,
                keep_all: false,
            })
            .ok()
            .and_then(|r| r["policy"]["max_age_secs"].as_u64());
            if let Some(secs) = max_age {
                if let Err(e) = warm_segment_times(&volume, Duration::from_secs(secs)) {
                    eprintln!("{log_name}: retention: {e}");
                }
            }
            // Trim the journal in batches through `ask`; the attic only
            // when history moved.
            let mut report = None;
            let mut result = Ok(());
            let (mut segments, mut records, mut bytes) = (0, 0, 0);
            loop {
                match ask(crate::admin::Request::Trim {
                    force: false,
                    dry_run: false,
                }) {
                    Ok(r) => {
                        let more = r["more"] == true && r["segments"] != 0;
                        segments += r["segments"].as_u64().unwrap_or(0);
                        records += r["records"].as_u64().unwrap_or(0);
                        bytes += r["bytes"].as_u64().unwrap_or(0);
                        report = Some(r);
                        if !more || stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if let Err(e) = result {
                if e != last_error {
                    eprintln!("{log_name}: retention: {e}");
                    last_error = e;
                }
                continue;
            }
            last_error.clear();
            let Some(r) = report else { continue };
            let first = r["first_seq"].as_u64().unwrap_or(0);
            if segments > 0 {
                eprintln!(
                    "{log_name}: retention: removed {segments} segments ({records} records, {}); history now starts at {first}",
                    human_bytes(bytes)
                );
            }
            if first > pruned_to {
                match prune_attic(&volume, first, false) {
                    // A tree behind its journal: try again next time.
                    Ok(a) if a.held.is_some() => continue,
                    Ok(a) if a.entries > 0 => eprintln!(
                        "{log_name}: retention: removed {} attic entries ({})",
                        a.entries,
                        human_bytes(a.bytes)
                    ),
                    Ok(_) => {}
                    Err(e) => eprintln!("{log_name}: retention: {e}"),
                }
                pruned_to = first;
            }
            wait = if r["reason"] == "held-back" {
                HELD_BACK_RETRY.min(every)
            } else {
                every
            };
            // A connected replica holding history back for a moment is
            // normal; one that is away is worth saying, again only when who
            // it is changes (not each time a position or a time moves).
            let away: Vec<Value> = ["held_by", "lost"]
                .iter()
                .flat_map(|k| r[*k].as_array().cloned().unwrap_or_default())
                .filter(|c| c["connected"] != true)
                .map(|c| json!([c["holder"], c["id"]]))
                .collect();
            let away = Value::from(away);
            if away != last_holders {
                for n in r["notes"].as_array().into_iter().flatten() {
                    let n = n.as_str().unwrap_or("");
                    if !n.contains("(connected)") && !n.starts_with("no retention policy") {
                        eprintln!("{log_name}: retention: {n}");
                    }
                }
            }
            last_holders = away;
        }
    })
}

/// Name of the newest sealed segment file, a cheap sign that one was sealed.
fn newest_sealed(volume: &Path) -> Option<std::ffi::OsString> {
    fs::read_dir(volume.join(JOURNAL_DIR))
        .ok()?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".seg"))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86400;

    fn now() -> Timestamp {
        Timestamp::new(1_800_000_000, 0)
    }

    /// Segments of 100 records and 1000 bytes each, one a day, the newest
    /// ending a day ago: 1..=100 (ten days old), ..., 901..=1000.
    fn segments(n: u64) -> Vec<SegmentSummary> {
        (0..n)
            .map(|i| SegmentSummary {
                first_seq: i * 100 + 1,
                last_seq: (i + 1) * 100,
                bytes: 1000,
                last_time: Some(Timestamp::new(now().sec - (n - i) as i64 * DAY, 0)),
            })
            .collect()
    }

    fn applied(seq: u64) -> Cursor {
        Cursor {
            holder: Holder::Applied,
            seq,
        }
    }

    fn replica(id: &str, seq: u64) -> Cursor {
        Cursor {
            holder: Holder::Replica {
                id: id.into(),
                address: "127.0.0.1:4000".into(),
                last_seen: Timestamp::new(now().sec - 3 * DAY, 0),
                connected: false,
            },
            seq,
        }
    }

    fn age(days: u64) -> Policy {
        Policy {
            max_age: Some(Duration::from_secs(days * 86400)),
            max_bytes: None,
        }
    }

    fn size(bytes: u64) -> Policy {
        Policy {
            max_age: None,
            max_bytes: Some(bytes),
        }
    }

    #[test]
    fn no_policy_keeps_everything() {
        let p = plan(
            &segments(10),
            1,
            &[applied(1050)],
            &Policy::default(),
            true,
            now(),
        );
        assert_eq!((p.remove, p.wanted, p.first_seq_after), (0, 0, 1));
        assert_eq!(p.reason, Reason::NoPolicy);
    }

    #[test]
    fn age_lets_go_segments_whose_last_record_is_older() {
        // Last records 10, 9, ..., 1 days old: older than 3.5 days are the first 7.
        let mut policy = age(3);
        policy.max_age = Some(Duration::from_secs(3 * 86400 + 43200));
        let p = plan(&segments(10), 1, &[applied(1000)], &policy, false, now());
        assert_eq!((p.remove, p.first_seq_after), (7, 701));
        assert_eq!(p.reason, Reason::Satisfied);
        // Exactly max_age old stays.
        let p = plan(&segments(10), 1, &[applied(1000)], &age(3), false, now());
        assert_eq!(p.remove, 7);
        let p = plan(&segments(10), 1, &[applied(1000)], &age(4), false, now());
        assert_eq!(p.remove, 6);
        // A time not looked up counts as new, and so does all after it.
        let mut segs = segments(10);
        segs[2].last_time = None;
        let p = plan(&segs, 1, &[applied(1000)], &age(3), false, now());
        assert_eq!(p.remove, 2);
    }

    #[test]
    fn size_keeps_the_newest_segments_that_fit() {
        let p = plan(
            &segments(10),
            1,
            &[applied(1000)],
            &size(3500),
            false,
            now(),
        );
        assert_eq!((p.remove, p.first_seq_after), (7, 701));
        let p = plan(
            &segments(10),
            1,
            &[applied(1000)],
            &size(3000),
            false,
            now(),
        );
        assert_eq!(p.remove, 7);
        let p = plan(&segments(10), 1, &[applied(1000)], &size(999), false, now());
        assert_eq!((p.remove, p.first_seq_after), (10, 1001));
        let p = plan(
            &segments(10),
            1,
            &[applied(1000)],
            &size(1 << 40),
            false,
            now(),
        );
        assert_eq!((p.remove, p.reason), (0, Reason::Satisfied));
        // Either limit trims: the one that lets more go wins.
        let both = Policy {
            max_age: Some(Duration::from_secs(8 * 86400 + 1)),
            max_bytes: Some(5000),
        };
        let p = plan(&segments(10), 1, &[applied(1000)], &both, false, now());
        assert_eq!(p.remove, 5);
    }

    #[test]
    fn a_cursor_keeps_every_segment_with_a_record_after_it() {
        // Needs 451..: the segment 401..=500 stays.
        let p = plan(
            &segments(10),
            1,
            &[applied(1000), replica("r-3f2a", 450)],
            &size(1000),
            false,
            now(),
        );
        assert_eq!((p.remove, p.wanted, p.first_seq_after), (4, 9, 401));
        assert_eq!(p.reason, Reason::HeldBack);
        assert_eq!(p.held_by, vec![replica("r-3f2a", 450)]);
        // At the last record of a segment: that segment may go.
        let p = plan(
            &segments(10),
            1,
            &[applied(1000), replica("r", 500)],
            &size(1000),
            false,
            now(),
        );
        assert_eq!(p.remove, 5);
        // The most binding cursor comes first.
        let p = plan(
            &segments(10),
            1,
            &[applied(1000), replica("b", 750), replica("a", 250)],
            &size(0),
            false,
            now(),
        );
        assert_eq!(p.remove, 2);
        assert_eq!(
            p.held_by.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![250, 750]
        );
        // A cursor that allows what the policy wants is not named.
        let p = plan(
            &segments(10),
            1,
            &[applied(1000), replica("a", 950)],
            &size(3000),
            false,
            now(),
        );
        assert_eq!((p.remove, p.reason), (7, Reason::Satisfied));
        assert!(p.held_by.is_empty());
    }

    #[test]
    fn the_volume_keeps_what_it_has_not_applied() {
        let p = plan(&segments(10), 1, &[applied(120)], &size(0), true, now());
        assert_eq!((p.remove, p.first_seq_after), (1, 101));
        assert_eq!(p.held_by, vec![applied(120)]);
        assert!(p.overridden.is_empty());
    }

    #[test]
    fn force_ignores_replicas_and_names_those_it_costs() {
        let cursors = [applied(1000), replica("a", 450), replica("b", 950)];
        let p = plan(&segments(10), 1, &cursors, &size(2000), true, now());
        assert_eq!((p.remove, p.first_seq_after), (8, 801));
        assert_eq!(p.reason, Reason::Satisfied);
        assert!(p.held_by.is_empty());
        assert_eq!(p.overridden, vec![replica("a", 450)]);
        // Force with nothing to gain costs nothing.
        let p = plan(&segments(10), 1, &cursors, &Policy::default(), true, now());
        assert_eq!(p.remove, 0);
        assert!(p.overridden.is_empty());
    }

    #[test]
    fn a_replica_whose_records_are_gone_holds_nothing_back() {
        let segs: Vec<_> = segments(10).into_iter().skip(3).collect();
        let p = plan(
            &segs,
            301,
            &[applied(1000), replica("old", 120), replica("edge", 300)],
            &size(1000),
            false,
            now(),
        );
        // "edge" needs 301..: still there, so it holds.
        assert_eq!((p.remove, p.first_seq_after), (0, 301));
        assert_eq!(p.lost, vec![replica("old", 120)]);
        assert_eq!(p.held_by, vec![replica("edge", 300)]);
    }

    #[test]
    fn nothing_to_do() {
        let p = plan(&[], 57, &[applied(60)], &size(0), false, now());
        assert_eq!((p.remove, p.wanted, p.first_seq_after), (0, 0, 57));
        assert_eq!(p.reason, Reason::Satisfied);
    }

    #[test]
    fn sizes_and_ages_parse() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("10G").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("1M").unwrap(), 1_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert!(parse_age("0s").is_err());
        assert!(parse_age("soon").is_err());
        let p = Policy::default()
            .changed(Some("30d"), Some("10GiB"), false)
            .unwrap();
        assert_eq!(
            p,
            Policy {
                max_age: Some(Duration::from_secs(30 * 86400)),
                max_bytes: Some(10 << 30)
            }
        );
        assert_eq!(p.to_string(), "max age 30days, max size 10.0 GiB");
        let q = p.changed(Some("none"), None, false).unwrap();
        assert_eq!((q.max_age, q.max_bytes), (None, Some(10 << 30)));
        assert!(p.changed(None, None, true).unwrap().keeps_everything());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(
            ago(Timestamp::new(now().sec - 3 * DAY, 0), now()),
            "3 days ago"
        );
    }

    #[test]
    fn attic_pruning_removes_entries_of_trimmed_records_only() {
        let vol = tempfile::tempdir().unwrap();
        let attic = vol.path().join(ATTIC_DIR);
        fs::create_dir(&attic).unwrap();
        fs::write(attic.join("5"), vec![7u8; 10_000]).unwrap();
        fs::create_dir(attic.join("9")).unwrap();
        // A symlink to something outside: removed itself, the target stays.
        let outside = vol.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, attic.join("11")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            attic.join("12"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // Needed still: at or after the first seq.
        fs::write(attic.join("20"), b"x").unwrap();
        fs::create_dir(attic.join("21")).unwrap();
        // Not a record's seq.
        fs::write(attic.join("notes.txt"), b"?").unwrap();
        fs::write(attic.join("7.tmp"), b"?").unwrap();
        // A directory that is not empty is not removed, nor what it holds.
        fs::create_dir(attic.join("3")).unwrap();
        fs::write(attic.join("3/inner"), b"i").unwrap();

        let dry = prune_attic(vol.path(), 20, true).unwrap();
        assert_eq!(dry.entries, 5);
        assert!(dry.bytes >= 10_000);
        assert!(attic.join("5").exists());

        let r = prune_attic(vol.path(), 20, false).unwrap();
        assert_eq!(r.entries, 4);
        assert_eq!(
            r.bytes,
            dry.bytes - disk_usage(&fs::metadata(attic.join("3")).unwrap())
        );
        assert_eq!(r.foreign, vec!["7.tmp".to_owned(), "notes.txt".to_owned()]);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, "3");
        let mut left: Vec<String> = fs::read_dir(&attic)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["20", "21", "3", "7.tmp", "notes.txt"]);
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert!(attic.join("3/inner").exists());

        // Again: nothing more to do. No attic at all: nothing either.
        let again = prune_attic(vol.path(), 20, false).unwrap();
        assert_eq!((again.entries, again.bytes), (0, 0));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            prune_attic(empty.path(), 100, false).unwrap(),
            AtticReport::default()
        );
    }

    #[test]
    fn a_tree_taken_back_keeps_its_attic() {
        let dir = tempfile::tempdir().unwrap();
        let mut vol = crate::Volume::init(&dir.path().join("v"), crate::Role::Master).unwrap();
        let a = crate::RelPath::new("a").unwrap();
        let node = crate::NewNode {
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        vol.commit(crate::Op::Create {
            path: a.clone(),
            node,
        })
        .unwrap();
        let removed = vol.commit(crate::Op::Unlink { path: a }).unwrap();
        vol.commit(crate::Op::Mkdir {
            path: crate::RelPath::new("d").unwrap(),
            node,
        })
        .unwrap();
        vol.rewind_tree(removed.seq, None, |_| {}).unwrap();
        vol.sync().unwrap();
        let entry = vol.attic_path().join(removed.seq.to_string());
        assert!(entry.exists());
        let r = prune_attic(vol.path(), 100, false).unwrap();
        assert!(r.held.is_some(), "{r:?}");
        assert!(entry.exists());
        vol.replay(None, |_| {}).unwrap();
        vol.sync().unwrap();
        let r = prune_attic(vol.path(), 100, false).unwrap();
        assert_eq!((r.entries, r.held), (1, None));
        assert!(!entry.exists());
    }
}
