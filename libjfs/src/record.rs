//! Records: one journaled filesystem operation each.
//!
//! A [`Record`] says what changed (`op`), the metadata the change left behind
//! (`mtimes`), and, for destructive operations, what it overwrote (`before`).
//! The byte encoding is postcard (docs/FORMAT.md); [`Record::decode`] validates
//! every field, so a decoded record is safe to hand to the applier. This module
//! does no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::path::{escape_bytes, Node, RelPath};

/// Most bytes one `Write` record carries.
pub const MAX_WRITE: usize = 16 << 20;
/// Largest encoded record.
pub const MAX_RECORD: usize = MAX_WRITE + (64 << 10);
/// Longest xattr name, as on Linux.
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value, as on Linux (`XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 64 << 10;
/// Longest symlink target (`PATH_MAX` less the NUL).
pub const MAX_SYMLINK_TARGET: usize = 4095;
/// Longest snapshot name.
pub const MAX_SNAPSHOT_NAME: usize = 255;
/// Permission bits a mode may carry (rwx for all, setuid, setgid, sticky).
pub const MODE_MASK: u32 = 0o7777;
/// Largest file offset or length (`i64::MAX`, as `off_t`).
pub const MAX_OFFSET: u64 = i64::MAX as u64;
/// Largest sequence number (so that `seq + 1` never overflows).
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Most mtime fix-ups one record carries.
pub const MAX_MTIMES: usize = 8;

/// A wall-clock time with nanoseconds, as in `struct timespec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub const fn new(sec: i64, nsec: u32) -> Timestamp {
        Timestamp { sec, nsec }
    }

    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }

    /// `2026-11-21T05:15:18.599797522Z`; times before 1970 too.
    pub fn to_rfc3339(&self) -> String {
        use std::time::{Duration, UNIX_EPOCH};
        let t = if self.sec >= 0 {
            UNIX_EPOCH + Duration::new(self.sec as u64, self.nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.sec.unsigned_abs())
                + Duration::from_nanos(self.nsec as u64)
        };
        humantime::format_rfc3339_nanos(t).to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.sec, self.nsec)
    }
}

/// Permission bits and owner of a node being created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewNode {
    /// Permission bits only (`mode & 0o7777`); the type comes from the op.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The kind of special file `Mknod` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialKind {
    Fifo,
    Socket,
    CharDevice { rdev: u64 },
    BlockDevice { rdev: u64 },
}

/// `renameat2` flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenameMode {
    /// Replace the target if it exists.
    Replace,
    /// Fail if the target exists.
    NoReplace,
    /// Atomically swap two existing entries.
    Exchange,
}

/// `fallocate` flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FallocateMode {
    /// Allocate and extend the size if the range ends past it.
    Allocate,
    /// Allocate without changing the size.
    KeepSize,
    /// Deallocate the range (always keeps the size).
    PunchHole,
    /// Zero the range, extending the size if needed.
    ZeroRange,
    /// Zero the range without changing the size.
    ZeroRangeKeepSize,
}

/// A named point in the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Marker {
    Snapshot { name: String },
}

/// One filesystem operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// An empty regular file.
    Create {
        path: RelPath,
        node: NewNode,
    },
    Mkdir {
        path: RelPath,
        node: NewNode,
    },
    Mknod {
        path: RelPath,
        kind: SpecialKind,
        node: NewNode,
    },
    Symlink {
        path: RelPath,
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
        uid: u32,
        gid: u32,
    },
    /// A new name `to` for the existing non-directory `from`.
    Link {
        from: RelPath,
        to: RelPath,
    },
    Unlink {
        path: RelPath,
    },
    Rmdir {
        path: RelPath,
    },
    Rename {
        from: RelPath,
        to: RelPath,
        mode: RenameMode,
    },
    Write {
        path: RelPath,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Truncate {
        path: RelPath,
        size: u64,
    },
    Fallocate {
        path: RelPath,
        mode: FallocateMode,
        offset: u64,
        len: u64,
    },
    /// Each `Some` field is set; `None` leaves it as it is.
    SetAttr {
        node: Node,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    },
    SetXattr {
        node: Node,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    RemoveXattr {
        node: Node,
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
    },
    /// `copy_file_range` from `src` to `dst` (distinct files or non-overlapping ranges).
    CopyRange {
        src: RelPath,
        src_offset: u64,
        dst: RelPath,
        dst_offset: u64,
        len: u64,
    },
    Marker(Marker),
    /// Moves attic entry `id` (a node an earlier record removed) back to
    /// `path`, which must not exist: how a rewind undoes a removal.
    Restore {
        id: u64,
        path: RelPath,
    },
}

/// The mtime a node has once the record is applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMtime {
    pub node: Node,
    pub mtime: Timestamp,
}

/// What a record overwrote, so that it can be undone (see `history.rs`).
///
/// With history on (the default), every record but a marker carries at least
/// one; a record without any was journaled with history off and cannot be
/// undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BeforeImage {
    /// Bytes that a write, truncate or punch-hole replaced, at `offset`.
    Bytes {
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The size a file had.
    Size(u64),
    /// Attributes a `SetAttr` (or an ACL change) replaced. `mode` is the
    /// whole `st_mode`, file type bits included.
    Attr {
        mode: u32,
        uid: u32,
        gid: u32,
        atime: Timestamp,
        mtime: Timestamp,
    },
    /// An xattr's previous value, or `None` when it did not exist.
    Xattr {
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        value: Option<serde_bytes::ByteBuf>,
    },
    /// The inode an unlink, rmdir or replacing rename moved to the attic.
    Attic { id: u64 },
    /// The mtime a node had before the record set it.
    Mtime(SetMtime),
    /// The operation changed nothing but mtimes (a rename between two
    /// names of one inode).
    Unchanged,
    /// What a `Restore` brought back: a directory or not.
    Restored { dir: bool },
}

/// Most bytes of file data the before-images of one record carry.
pub const MAX_BEFORE: usize = MAX_WRITE / 2;
/// Most before-images one record carries.
pub const MAX_BEFORE_IMAGES: usize = 1024;

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the journal; starts at 1, no gaps.
    pub seq: u64,
    /// When the master journaled it.
    pub time: Timestamp,
    pub op: Op,
    /// Resulting mtimes of the nodes the op touched, applied after the op.
    pub mtimes: Vec<SetMtime>,
    /// What the record overwrote, for undo (empty with history off).
    pub before: Vec<BeforeImage>,
}

/// The mtimes a local filesystem gives the nodes `op` touches when it runs at
/// `time`: a new node and its directory, the directories of a link, unlink or
/// rename, the file whose contents or allocation change. `SetAttr` sets its own times and
/// xattr changes touch only ctime, which is not replicated.
pub fn implied_mtimes(op: &Op, time: Timestamp) -> Vec<SetMtime> {
    let mut nodes: Vec<Node> = match op {
        Op::Create { path, .. }
        | Op::Mkdir { path, .. }
        | Op::Mknod { path, .. }
        | Op::Symlink { path, .. } => {
            vec![Node::Path(path.clone()), path.parent_node()]
        }
        Op::Link { to, .. } => vec![to.parent_node()],
        Op::Unlink { path } | Op::Rmdir { path } => vec![path.parent_node()],
        Op::Rename { from, to, .. } => vec![from.parent_node(), to.parent_node()],
        Op::Write { path, .. } | Op::Truncate { path, .. } => vec![Node::Path(path.clone())],
        // Linux updates mtime for every fallocate mode, keep-size included.
        Op::Fallocate { path, .. } => vec![Node::Path(path.clone())],
        Op::CopyRange { dst, .. } => vec![Node::Path(dst.clone())],
        Op::Restore { path, .. } => vec![path.parent_node()],
        Op::SetAttr { .. } | Op::SetXattr { .. } | Op::RemoveXattr { .. } | Op::Marker(_) => vec![],
    };
    nodes.dedup();
    nodes
        .into_iter()
        .map(|node| SetMtime { node, mtime: time })
        .collect()
}

/// Why a record was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("record has an invalid path: {0}")]
    Path(#[from] crate::path::PathError),
    #[error("record has {0} trailing bytes")]
    Trailing(usize),
    #[error("record is {0} bytes (the limit is {MAX_RECORD})")]
    TooLarge(usize),
    #[error("record field out of range: {0}")]
    Field(String),
}

fn field(msg: impl Into<String>) -> RecordError {
    RecordError::Field(msg.into())
}

impl Record {
    /// Encodes the record; the result is what the journal frames and chains.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut bytes = Vec::new();
        self.encode_into(&mut bytes)?;
        Ok(bytes)
    }

    /// Appends the record's encoding (what [`Record::encode`] returns) to
    /// `out`, which is left as it was on error: the journal encodes straight
    /// into the frame it writes, without a copy of the record in between.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.validate()?;
        let start = out.len();
        let encoded = match postcard::to_io(self, &mut *out).map(drop) {
            Err(e) => Err(RecordError::from(e)),
            Ok(()) => match out.len() - start {
                len if len > MAX_RECORD => Err(RecordError::TooLarge(len)),
                _ => Ok(()),
            },
        };
        if encoded.is_err() {
            out.truncate(start);
        }
        encoded
    }

    /// The sequence number of an encoded record (its first field), without
    /// decoding the rest: for readers that only need to know where they are.
    pub fn peek_seq(bytes: &[u8]) -> Option<u64> {
        postcard::take_from_bytes::<u64>(bytes)
            .ok()
            .map(|(seq, _)| seq)
    }

    /// Decodes and validates one record; every byte must be used.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        if bytes.len() > MAX_RECORD {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        crate::path::take_decode_error();
        let (record, rest): (Record, _) = postcard::take_from_bytes(bytes).map_err(|e| {
            match crate::path::take_decode_error() {
                Some(path_error) => RecordError::Path(path_error),
                None => RecordError::Decode(e),
            }
        })?;
        if !rest.is_empty() {
            return Err(RecordError::Trailing(rest.len()));
        }
        record.validate()?;
        Ok(record)
    }

    /// Checks every field against its range. Paths are valid by construction.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.seq == 0 || self.seq > MAX_SEQ {
            return Err(field(format!(
                "seq {} (sequence numbers run from 1 to 2^63-1)",
                self.seq
            )));
        }
        check_time(&self.time)?;
        if self.mtimes.len() > MAX_MTIMES {
            return Err(field(format!(
                "{} mtimes (the limit is {MAX_MTIMES})",
                self.mtimes.len()
            )));
        }
        for m in &self.mtimes {
            check_time(&m.mtime)?;
        }
        self.op.validate()?;
        self.validate_before()
    }

    fn validate_before(&self) -> Result<(), RecordError> {
        if self.before.len() > MAX_BEFORE_IMAGES {
            return Err(field(format!(
                "{} before-images (the limit is {MAX_BEFORE_IMAGES})",
                self.before.len()
            )));
        }
        let mut bytes = 0usize;
        for b in &self.before {
            match b {
                BeforeImage::Bytes { offset, data } => {
                    bytes += data.len();
                    check_range("before-image", *offset, data.len() as u64)?;
                }
                BeforeImage::Size(size) => check_range("before-image size", *size, 0)?,
                BeforeImage::Attr {
                    mode, atime, mtime, ..
                } => {
                    if mode & !(MODE_MASK | 0o170000) != 0 {
                        return Err(field(format!("before-image mode {mode:o}")));
                    }
                    check_time(atime)?;
                    check_time(mtime)?;
                }
                BeforeImage::Xattr { name, value } => {
                    check_xattr_name(name)?;
                    if value.as_ref().is_some_and(|v| v.len() > MAX_XATTR_VALUE) {
                        return Err(field("before-image xattr value too large"));
                    }
                }
                BeforeImage::Mtime(m) => check_time(&m.mtime)?,
                BeforeImage::Attic { .. }
                | BeforeImage::Unchanged
                | BeforeImage::Restored { .. } => {}
            }
        }
        if bytes > MAX_BEFORE {
            return Err(field(format!(
                "before-images of {bytes} bytes (the limit is {MAX_BEFORE})"
            )));
        }
        Ok(())
    }
}

fn check_time(t: &Timestamp) -> Result<(), RecordError> {
    if t.nsec >= 1_000_000_000 {
        return Err(field(format!(
            "nanoseconds {} (must be below 10^9)",
            t.nsec
        )));
    }
    Ok(())
}

fn check_mode(mode: u32) -> Result<(), RecordError> {
    if mode & !MODE_MASK != 0 {
        return Err(field(format!("mode {mode:o} has bits outside 7777")));
    }
    Ok(())
}

fn check_range(what: &str, offset: u64, len: u64) -> Result<(), RecordError> {
    match offset.checked_add(len) {
        Some(end) if end <= MAX_OFFSET => Ok(()),
        _ => Err(field(format!(
            "{what} range {offset}+{len} passes the largest file offset"
        ))),
    }
}

fn check_xattr_name(name: &[u8]) -> Result<(), RecordError> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
        return Err(field(format!("xattr name \"{}\"", escape_bytes(name))));
    }
    Ok(())
}

/// Snapshot names: 1 to 255 bytes of `[A-Za-z0-9._-]`, not all digits (those
/// read as a sequence number), not starting with `-` or `.`.
pub fn check_snapshot_name(name: &str) -> Result<(), RecordError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SNAPSHOT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.bytes().all(|b| b.is_ascii_digit())
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(field(format!(
            "snapshot name {name:?} (use 1-255 of A-Z a-z 0-9 . _ -, not all digits, not starting with - or .)"
        )))
    }
}

impl Op {
    pub fn validate(&self) -> Result<(), RecordError> {
        match self {
            Op::Create { node, .. } | Op::Mkdir { node, .. } => check_mode(node.mode),
            Op::Mknod { node, .. } => check_mode(node.mode),
            Op::Symlink { target, .. } => {
                if target.is_empty() || target.len() > MAX_SYMLINK_TARGET || target.contains(&0) {
                    return Err(field(format!(
                        "symlink target of {} bytes (must be 1-{MAX_SYMLINK_TARGET}, no NUL)",
                        target.len()
                    )));
                }
                Ok(())
            }
            Op::Link { from, to } | Op::Rename { from, to, .. } => {
                if from == to {
                    return Err(field("source and target are the same path"));
                }
                Ok(())
            }
            Op::Unlink { .. } | Op::Rmdir { .. } => Ok(()),
            Op::Write { offset, data, .. } => {
                if data.len() > MAX_WRITE {
                    return Err(field(format!(
                        "write of {} bytes (the limit is {MAX_WRITE})",
                        data.len()
                    )));
                }
                check_range("write", *offset, data.len() as u64)
            }
            Op::Truncate { size, .. } => check_range("truncate", *size, 0),
            Op::Fallocate { offset, len, .. } => {
                if *len == 0 {
                    return Err(field("fallocate of length 0"));
                }
                check_range("fallocate", *offset, *len)
            }
            Op::SetAttr {
                mode, atime, mtime, ..
            } => {
                if let Some(m) = mode {
                    check_mode(*m)?;
                }
                for t in [atime, mtime].into_iter().flatten() {
                    check_time(t)?;
                }
                Ok(())
            }
            Op::SetXattr { name, value, .. } => {
                check_xattr_name(name)?;
                if value.len() > MAX_XATTR_VALUE {
                    return Err(field(format!("xattr value of {} bytes", value.len())));
                }
                Ok(())
            }
            Op::RemoveXattr { name, .. } => check_xattr_name(name),
            Op::CopyRange {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
            } => {
                check_range("copy source", *src_offset, *len)?;
                check_range("copy target", *dst_offset, *len)?;
                if src == dst && src_offset.max(dst_offset) - src_offset.min(dst_offset) < *len {
                    return Err(field("copy ranges overlap within one file"));
                }
                Ok(())
            }
            Op::Marker(Marker::Snapshot { name }) => check_snapshot_name(name),
            Op::Restore { .. } => Ok(()),
        }
    }

    /// A short lowercase name for the operation, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Mkdir { .. } => "mkdir",
            Op::Mknod { .. } => "mknod",
            Op::Symlink { .. } => "symlink",
            Op::Link { .. } => "link",
            Op::Unlink { .. } => "unlink",
            Op::Rmdir { .. } => "rmdir",
            Op::Rename { .. } => "rename",
            Op::Write { .. } => "write",
            Op::Truncate { .. } => "truncate",
            Op::Fallocate { .. } => "fallocate",
            Op::SetAttr { .. } => "setattr",
            Op::SetXattr { .. } => "setxattr",
            Op::RemoveXattr { .. } => "removexattr",
            Op::CopyRange { .. } => "copy-range",
            Op::Marker(_) => "marker",
            Op::Restore { .. } => "restore",
        }
    }
}

/// One line per op for humans: `write a/b off=0 len=4096`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            Op::Create { path, node } | Op::Mkdir { path, node } => {
                write!(
                    f,
                    "{name} {path} mode={:04o} uid={} gid={}",
                    node.mode, node.uid, node.gid
                )
            }
            Op::Mknod { path, kind, node } => write!(
                f,
                "{name} {path} {kind:?} mode={:04o} uid={} gid={}",
                node.mode, node.uid, node.gid
            ),
            Op::Symlink {
                path,
                target,
                uid,
                gid,
            } => {
                write!(
                    f,
                    "{name} {path} -> {} uid={uid} gid={gid}",
                    escape_bytes(target)
                )
            }
            Op::Link { from, to } => write!(f, "{name} {from} => {to}"),
            Op::Unlink { path } | Op::Rmdir { path } => write!(f, "{name} {path}"),
            Op::Rename { from, to, mode } => write!(f, "{name} {from} => {to} {mode:?}"),
            Op::Write { path, offset, data } => {
                write!(f, "{name} {path} off={offset} len={}", data.len())
            }
            Op::Truncate { path, size } => write!(f, "{name} {path} size={size}"),
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                write!(f, "{name} {path} {mode:?} off={offset} len={len}")
            }
            Op::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime,
            } => {
                write!(f, "{name} {node}")?;
                if let Some(m) = mode {
                    write!(f, " mode={m:04o}")?;
                }
                if let Some(u) = uid {
                    write!(f, " uid={u}")?;
                }
                if let Some(g) = gid {
                    write!(f, " gid={g}")?;
                }
                if let Some(t) = atime {
                    write!(f, " atime={t}")?;
                }
                if let Some(t) = mtime {
                    write!(f, " mtime={t}")?;
                }
                Ok(())
            }
            Op::SetXattr {
                node,
                name: n,
                value,
            } => {
                write!(f, "{name} {node} {} len={}", escape_bytes(n), value.len())
            }
            Op::RemoveXattr { node, name: n } => write!(f, "{name} {node} {}", escape_bytes(n)),
            Op::CopyRange {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
            } => write!(
                f,
                "{name} {src} off={src_offset} => {dst} off={dst_offset} len={len}"
            ),
            Op::Marker(Marker::Snapshot { name: n }) => write!(f, "snapshot {n}"),
            Op::Restore { id, path } => write!(f, "{name} attic/{id} => {path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peek_seq_reads_the_seq_of_an_encoded_record() {
        for seq in [1, 127, 128, 300_000, super::MAX_SEQ] {
            let r = super::Record {
                seq,
                time: super::Timestamp::new(1, 2),
                op: super::Op::Marker(super::Marker::Snapshot { name: "v1".into() }),
                mtimes: Vec::new(),
                before: Vec::new(),
            };
            assert_eq!(super::Record::peek_seq(&r.encode().unwrap()), Some(seq));
        }
        assert_eq!(super::Record::peek_seq(&[]), None);
    }

    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn rec(op: Op) -> Record {
        Record {
            seq: 1,
            time: Timestamp::new(1, 2),
            op,
            mtimes: vec![],
            before: vec![],
        }
    }

    #[test]
    fn encode_into_appends_the_encoding_and_nothing_on_error() {
        let r = rec(Op::Write {
            path: p("a"),
            offset: 3,
            data: vec![7; 5000],
        });
        let mut out = b"head".to_vec();
        r.encode_into(&mut out).unwrap();
        assert_eq!(&out[..4], b"head");
        assert_eq!(out[4..], r.encode().unwrap());
        // Over MAX_RECORD (a whole write and a large before-image): refused
        // after encoding, and what was written is taken back.
        let mut big = rec(Op::Write {
            path: p("a"),
            offset: 0,
            data: vec![1; MAX_WRITE],
        });
        big.before.push(BeforeImage::Bytes {
            offset: 0,
            data: vec![2; 1 << 20],
        });
        let mut out = b"head".to_vec();
        assert!(matches!(
            big.encode_into(&mut out),
            Err(RecordError::TooLarge(n)) if n > MAX_RECORD
        ));
        assert_eq!(out, b"head");
        // Refused before encoding: also nothing.
        let bad = rec(Op::SetXattr {
            node: Node::Root,
            name: Vec::new(),
            value: Vec::new(),
        });
        assert!(bad.encode_into(&mut out).is_err());
        assert_eq!(out, b"head");
    }

    #[test]
    fn round_trips() {
        let node = NewNode {
            mode: 0o644,
            uid: 1,
            gid: 2,
        };
        let ops = vec![
            Op::Create { path: p("a"), node },
            Op::Mknod {
                path: p("d"),
                kind: SpecialKind::CharDevice { rdev: 0x0501 },
                node,
            },
            Op::Symlink {
                path: p("l"),
                target: b"../x".to_vec(),
                uid: 0,
                gid: 0,
            },
            Op::Rename {
                from: p("a"),
                to: p("b/c"),
                mode: RenameMode::Exchange,
            },
            Op::Write {
                path: p("caf\u{e9}"),
                offset: 7,
                data: vec![1, 2, 3],
            },
            Op::SetAttr {
                node: Node::Root,
                mode: Some(0o755),
                uid: None,
                gid: Some(5),
                atime: None,
                mtime: Some(Timestamp::new(-5, 999_999_999)),
            },
            Op::SetXattr {
                node: Node::Path(p("a")),
                name: b"user.k".to_vec(),
                value: vec![0; 10],
            },
            Op::Marker(Marker::Snapshot { name: "v42".into() }),
        ];
        for op in ops {
            let mut r = rec(op);
            r.mtimes.push(SetMtime {
                node: Node::Root,
                mtime: Timestamp::new(3, 4),
            });
            r.before.push(BeforeImage::Size(9));
            let bytes = r.encode().unwrap();
            assert_eq!(Record::decode(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn refuses_out_of_range_fields() {
        let bad = vec![
            Op::Create {
                path: p("a"),
                node: NewNode {
                    mode: 0o100644,
                    uid: 0,
                    gid: 0,
                },
            },
            Op::Symlink {
                path: p("l"),
                target: vec![],
                uid: 0,
                gid: 0,
            },
            Op::Symlink {
                path: p("l"),
                target: b"a\0b".to_vec(),
                uid: 0,
                gid: 0,
            },
            Op::Write {
                path: p("a"),
                offset: u64::MAX - 1,
                data: vec![1, 2],
            },
            Op::Truncate {
                path: p("a"),
                size: u64::MAX,
            },
            Op::Fallocate {
                path: p("a"),
                mode: FallocateMode::PunchHole,
                offset: 0,
                len: 0,
            },
            Op::SetXattr {
                node: Node::Root,
                name: vec![],
                value: vec![],
            },
            Op::SetXattr {
                node: Node::Root,
                name: b"user.x".to_vec(),
                value: vec![0; MAX_XATTR_VALUE + 1],
            },
            Op::Rename {
                from: p("a"),
                to: p("a"),
                mode: RenameMode::Replace,
            },
            Op::CopyRange {
                src: p("a"),
                src_offset: 0,
                dst: p("a"),
                dst_offset: 10,
                len: 20,
            },
            Op::Marker(Marker::Snapshot { name: "123".into() }),
            Op::Marker(Marker::Snapshot { name: "a/b".into() }),
        ];
        for op in bad {
            assert!(rec(op.clone()).encode().is_err(), "{op:?} was accepted");
        }
        let mut r = rec(Op::Unlink { path: p("a") });
        r.time.nsec = 1_000_000_000;
        assert!(r.encode().is_err());
        r.time.nsec = 0;
        r.seq = 0;
        assert!(r.encode().is_err());
    }

    #[test]
    fn decode_revalidates_and_refuses_trailing_bytes() {
        let r = rec(Op::Unlink { path: p("a") });
        let mut bytes = r.encode().unwrap();
        bytes.push(0);
        assert!(matches!(
            Record::decode(&bytes),
            Err(RecordError::Trailing(1))
        ));
        // Encode a record with a bad mode bypassing `encode`'s validation.
        let evil = rec(Op::Mkdir {
            path: p("a"),
            node: NewNode {
                mode: 0o170000,
                uid: 0,
                gid: 0,
            },
        });
        let bytes = postcard::to_stdvec(&evil).unwrap();
        assert!(matches!(Record::decode(&bytes), Err(RecordError::Field(_))));
    }

    #[test]
    fn snapshot_names() {
        for ok in ["v42", "release-2026.11", "a", "0a"] {
            check_snapshot_name(ok).unwrap();
        }
        for bad in ["", "42", "-x", ".x", "a b", "é", &"x".repeat(256)] {
            assert!(check_snapshot_name(bad).is_err(), "{bad:?}");
        }
    }
}
