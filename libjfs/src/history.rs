//! History: what a record overwrote, and how to undo it.
//!
//! With history on, a record carries *before-images* ([`BeforeImage`]): the
//! bytes a write, truncate, punch-hole or copy replaced and the size the file
//! had; old attributes and xattr values; the mtimes of the nodes it touched;
//! and, for a node that an unlink, rmdir or replacing rename removes, the
//! attic entry it was moved to instead of being freed (`VOL/attic/<seq>`).
//!
//! - [`capture`] reads them from the tree just before the record is applied.
//! - [`split`] cuts an operation whose before-images would not fit one
//!   record into several that do (each a valid state of the file).
//! - [`inverse`] turns a record into the [`Step`]s that undo it, from the
//!   record alone. A master journals the steps as new records (a rewind is
//!   a change like any other); a replica applies them to its tree alone.
//!
//! The undo is exact for everything invariant 2 lists: a file's holes come
//! back as holes because a before-image holds only the data extents of the
//! range and the undo punches the range before writing them back.

use std::os::unix::fs::FileExt;

use rustix::fs::FileType;

use crate::path::{Node, RelPath};
use crate::record::{
    BeforeImage, FallocateMode, Op, Record, RenameMode, SetMtime, Timestamp, MAX_BEFORE,
    MAX_BEFORE_IMAGES,
};
use crate::tree::{Tree, TreeError};

/// One operation of an undo, with the mtimes it leaves behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub op: Op,
    pub mtimes: Vec<SetMtime>,
    /// The attic entry a removal goes to when the undo is applied without
    /// being journaled (the undo of a `Restore` puts the node back where it
    /// was). A journaled undo takes a fresh entry instead, and later steps
    /// of the same rewind restore from that one.
    pub attic: Option<u64>,
}

impl Step {
    /// The step as a record for [`Tree::apply`] (sequence and time unused).
    pub fn to_record(&self, seq: u64) -> Record {
        Record {
            seq,
            time: Timestamp::new(0, 0),
            op: self.op.clone(),
            mtimes: self.mtimes.clone(),
            before: self
                .attic
                .map(|id| vec![BeforeImage::Attic { id }])
                .unwrap_or_default(),
        }
    }
}

/// Why a record cannot be undone.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("record {seq} ({op}) was journaled with history off and cannot be undone")]
    NoHistory { seq: u64, op: &'static str },
    #[error("record {seq} ({op}) cannot be undone: its before-images lack {what}")]
    Incomplete {
        seq: u64,
        op: &'static str,
        what: &'static str,
    },
}

type Result<T> = std::result::Result<T, TreeError>;

/// Before-images cover whole blocks of this size around the range an
/// operation changes, and the undo punches whole blocks: a hole comes back
/// as a hole, not as an allocated block of zeros.
pub const BLOCK: u64 = 4096;

/// The range of a file whose old contents a change to `start..end` needs:
/// whole blocks, clipped to the old size `size`.
fn block_range(start: u64, end: u64, size: u64) -> (u64, u64) {
    let lo = start - start % BLOCK;
    let hi = end.div_ceil(BLOCK).saturating_mul(BLOCK);
    (lo.min(size), hi.min(size))
}

fn mtime_of(st: &rustix::fs::Stat) -> Timestamp {
    Timestamp::new(st.st_mtime, st.st_mtime_nsec as u32)
}

fn atime_of(st: &rustix::fs::Stat) -> Timestamp {
    Timestamp::new(st.st_atime, st.st_atime_nsec as u32)
}

fn tree_err(path: &RelPath, what: &str, e: std::io::Error) -> TreeError {
    TreeError::Io {
        context: format!("{what} {path}"),
        source: e,
    }
}

/// The before-images of `op`, read from `tree` just before it is applied as
/// record `seq` with `mtimes`.
pub fn capture(tree: &Tree, op: &Op, mtimes: &[SetMtime], seq: u64) -> Result<Vec<BeforeImage>> {
    // A file operation stats the file anyway; its mtime comes with it.
    let mut content = Vec::new();
    let file = match op {
        Op::Write { path, offset, data } => {
            file_range(tree, path, *offset, data.len() as u64, &mut content)?.map(|t| (path, t))
        }
        Op::Truncate { path, size } => {
            file_range(tree, path, *size, u64::MAX, &mut content)?.map(|t| (path, t))
        }
        Op::Fallocate {
            path, offset, len, ..
        } => file_range(tree, path, *offset, *len, &mut content)?.map(|t| (path, t)),
        Op::CopyRange {
            dst,
            dst_offset,
            len,
            ..
        } => file_range(tree, dst, *dst_offset, *len, &mut content)?.map(|t| (dst, t)),
        _ => None,
    };
    let mut before = Vec::new();
    for m in mtimes {
        let mtime = match (&m.node, file) {
            (Node::Path(p), Some((path, t))) if p == path => Some(t),
            _ => tree.lstat(&m.node)?.map(|st| mtime_of(&st)),
        };
        if let Some(mtime) = mtime {
            before.push(BeforeImage::Mtime(SetMtime {
                node: m.node.clone(),
                mtime,
            }));
        }
    }
    before.append(&mut content);
    match op {
        Op::Create { .. }
        | Op::Mkdir { .. }
        | Op::Mknod { .. }
        | Op::Symlink { .. }
        | Op::Link { .. }
        | Op::Marker(_) => {}
        Op::Unlink { .. } | Op::Rmdir { .. } => before.push(BeforeImage::Attic { id: seq }),
        Op::Rename { from, to, mode } => {
            if *mode == RenameMode::Replace {
                let from_st = tree.lstat(&Node::Path(from.clone()))?;
                match (from_st, tree.lstat(&Node::Path(to.clone()))?) {
                    (Some(a), Some(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) => {
                        before.push(BeforeImage::Unchanged)
                    }
                    (_, Some(_)) => before.push(BeforeImage::Attic { id: seq }),
                    _ => {}
                }
            }
        }
        Op::Write { .. } | Op::Truncate { .. } | Op::Fallocate { .. } | Op::CopyRange { .. } => {}
        Op::SetAttr { node, .. } => {
            if let Some(st) = tree.lstat(node)? {
                before.push(attr(&st));
            }
        }
        Op::SetXattr { node, name, .. } | Op::RemoveXattr { node, name } => {
            if let Some(st) = tree.lstat(node)? {
                before.push(BeforeImage::Xattr {
                    name: name.clone(),
                    value: tree.xattr(node, name)?.map(serde_bytes::ByteBuf::from),
                });
                // Setting an access ACL also sets the group bits of the mode.
                if name.starts_with(b"system.posix_acl") {
                    before.push(attr(&st));
                }
            }
        }
        Op::Restore { id, .. } => {
            if let Some(st) = tree.attic_lstat(*id)? {
                let dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                before.push(BeforeImage::Restored { dir });
            }
        }
    }
    Ok(before)
}

fn attr(st: &rustix::fs::Stat) -> BeforeImage {
    BeforeImage::Attr {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        atime: atime_of(st),
        mtime: mtime_of(st),
    }
}

/// The size of `path` and its data within `offset .. offset + len` (clipped
/// to the size), as before-images. A missing file captures nothing: the
/// record will be refused.
/// Returns the file's mtime, or `None` when it is not there to read.
///
/// The file is only opened when there are old bytes to read: a change that
/// starts past the block the old size ends in (such as the first write to
/// a new file) costs one `lstat`.
fn file_range(
    tree: &Tree,
    path: &RelPath,
    offset: u64,
    len: u64,
    before: &mut Vec<BeforeImage>,
) -> Result<Option<Timestamp>> {
    let Some(st) = stat_regular(tree, path)? else {
        return Ok(None);
    };
    let mtime = mtime_of(&st);
    let size = st.st_size as u64;
    let (offset, end) = block_range(offset, offset.saturating_add(len), size);
    if offset >= end {
        before.push(BeforeImage::Size(size));
        return Ok(Some(mtime));
    }
    let Some(file) = open_existing(tree, path)? else {
        return Ok(None);
    };
    before.push(BeforeImage::Size(size));
    let extents = crate::compare::data_extents_between(&file, offset, end)
        .map_err(|e| tree_err(path, "seek data", e.into()))?;
    for (start, stop) in extents {
        let mut data = vec![0u8; (stop - start) as usize];
        file.read_exact_at(&mut data, start)
            .map_err(|e| tree_err(path, "read", e))?;
        before.push(BeforeImage::Bytes {
            offset: start,
            data,
        });
    }
    Ok(Some(mtime))
}

/// `lstat` of the regular file at `path`, `None` if there is none (the
/// record will be refused when it is applied).
fn stat_regular(tree: &Tree, path: &RelPath) -> Result<Option<rustix::fs::Stat>> {
    match tree.lstat(&Node::Path(path.clone())) {
        Ok(Some(st)) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
            Ok(Some(st))
        }
        Ok(_) | Err(TreeError::Refused { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The regular file at `path`, `None` if there is none (the record will be
/// refused when it is applied).
fn open_existing(tree: &Tree, path: &RelPath) -> Result<Option<std::fs::File>> {
    match tree.open_file(path) {
        Ok(f) => Ok(Some(f)),
        Err(TreeError::Refused { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Cuts `op` into operations, applied in order with the same effect, whose
/// before-images each fit one record ([`MAX_BEFORE`] bytes of data and
/// [`MAX_BEFORE_IMAGES`] images). `None`, for most operations: keep it whole
/// (no copy of the operation's data is made).
pub fn split(tree: &Tree, op: &Op) -> Result<Option<Vec<Op>>> {
    let (path, offset, len) = match op {
        // Too short to need cutting, whatever it overwrites: no I/O.
        Op::Write { data, .. } if data.len() as u64 + 2 * BLOCK <= MAX_BEFORE as u64 => {
            return Ok(None)
        }
        Op::Write { path, offset, data } => (path, *offset, data.len() as u64),
        Op::Truncate { path, size } => (path, *size, u64::MAX),
        Op::Fallocate {
            path, offset, len, ..
        } => (path, *offset, *len),
        Op::CopyRange {
            dst,
            dst_offset,
            len,
            ..
        } => (dst, *dst_offset, *len),
        _ => return Ok(None),
    };
    let Some(st) = stat_regular(tree, path)? else {
        return Ok(None);
    };
    let (lo, end) = block_range(offset, offset.saturating_add(len), st.st_size as u64);
    if lo >= end {
        return Ok(None);
    }
    let Some(file) = open_existing(tree, path)? else {
        return Ok(None);
    };
    let extents = crate::compare::data_extents_between(&file, lo, end)
        .map_err(|e| tree_err(path, "seek data", e.into()))?;
    let mut cuts = cut_points(&extents);
    if let Op::Write { .. } = op {
        // The data a piece writes counts against the record too.
        cuts.extend(
            (1..)
                .map(|i| offset + i * MAX_BEFORE as u64)
                .take_while(|&c| c < offset + len),
        );
        cuts.sort_unstable();
        cuts.dedup();
    }
    cuts.retain(|&c| c > offset && c < offset.saturating_add(len));
    if cuts.is_empty() {
        return Ok(None);
    }
    let mut bounds = vec![offset];
    bounds.extend(cuts);
    bounds.push(offset.saturating_add(len));
    let pieces = bounds.windows(2).map(|w| (w[0], w[1]));
    Ok(Some(match op {
        Op::Write { path, data, .. } => pieces
            .map(|(a, b)| Op::Write {
                path: path.clone(),
                offset: a,
                data: data[(a - offset) as usize..(b - offset) as usize].to_vec(),
            })
            .collect(),
        // Shrink from the end, one budget at a time.
        Op::Truncate { path, .. } => {
            let mut sizes: Vec<u64> = bounds[..bounds.len() - 1].to_vec();
            sizes.reverse();
            sizes
                .into_iter()
                .map(|size| Op::Truncate {
                    path: path.clone(),
                    size,
                })
                .collect()
        }
        Op::Fallocate { path, mode, .. } => pieces
            .map(|(a, b)| Op::Fallocate {
                path: path.clone(),
                mode: *mode,
                offset: a,
                len: b - a,
            })
            .collect(),
        Op::CopyRange {
            src,
            src_offset,
            dst,
            ..
        } => pieces
            .map(|(a, b)| Op::CopyRange {
                src: src.clone(),
                src_offset: src_offset + (a - offset),
                dst: dst.clone(),
                dst_offset: a,
                len: b - a,
            })
            .collect(),
        _ => unreachable!("only file operations are split"),
    }))
}

/// Offsets to cut at so that each piece holds at most [`MAX_BEFORE`] bytes
/// of data in few enough extents.
fn cut_points(extents: &[(u64, u64)]) -> Vec<u64> {
    let budget = MAX_BEFORE as u64;
    let max_extents = MAX_BEFORE_IMAGES - 16;
    let (mut cuts, mut bytes, mut count) = (Vec::new(), 0u64, 0usize);
    for &(start, end) in extents {
        let mut s = start;
        while s < end {
            if bytes == budget || count == max_extents {
                cuts.push(s);
                bytes = 0;
                count = 0;
            }
            let take = (end - s).min(budget - bytes);
            bytes += take;
            count += 1;
            s += take;
        }
    }
    cuts
}

/// The steps that undo `record`, in order, from its before-images alone.
/// Markers undo to nothing.
pub fn inverse(record: &Record) -> std::result::Result<Vec<Step>, HistoryError> {
    let op = &record.op;
    if record.before.is_empty() && !matches!(op, Op::Marker(_)) {
        return Err(HistoryError::NoHistory {
            seq: record.seq,
            op: op.name(),
        });
    }
    let lacks = |what| HistoryError::Incomplete {
        seq: record.seq,
        op: op.name(),
        what,
    };
    let olds: Vec<SetMtime> = record
        .before
        .iter()
        .filter_map(|b| match b {
            BeforeImage::Mtime(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    let attic = record.before.iter().find_map(|b| match b {
        BeforeImage::Attic { id } => Some(*id),
        _ => None,
    });
    let size = record.before.iter().find_map(|b| match b {
        BeforeImage::Size(s) => Some(*s),
        _ => None,
    });
    let old_attr = record.before.iter().find_map(|b| match b {
        BeforeImage::Attr {
            mode,
            uid,
            gid,
            atime,
            mtime,
        } => Some((*mode, *uid, *gid, *atime, *mtime)),
        _ => None,
    });
    let step = |op: Op| Step {
        op,
        mtimes: olds.clone(),
        attic: None,
    };
    let ops: Vec<Step> = match op {
        Op::Create { path, .. } | Op::Mknod { path, .. } | Op::Symlink { path, .. } => {
            vec![step(Op::Unlink { path: path.clone() })]
        }
        Op::Link { to, .. } => vec![step(Op::Unlink { path: to.clone() })],
        Op::Mkdir { path, .. } => vec![step(Op::Rmdir { path: path.clone() })],
        Op::Unlink { path } | Op::Rmdir { path } => vec![step(Op::Restore {
            id: attic.ok_or_else(|| lacks("the attic entry"))?,
            path: path.clone(),
        })],
        Op::Restore { id, path } => {
            let dir = record
                .before
                .iter()
                .find_map(|b| match b {
                    BeforeImage::Restored { dir } => Some(*dir),
                    _ => None,
                })
                .ok_or_else(|| lacks("the kind of node restored"))?;
            let path = path.clone();
            vec![Step {
                op: if dir {
                    Op::Rmdir { path }
                } else {
                    Op::Unlink { path }
                },
                mtimes: olds.clone(),
                attic: Some(*id),
            }]
        }
        Op::Rename { from, to, mode } => match mode {
            _ if record.before.contains(&BeforeImage::Unchanged) => mtime_steps(&olds),
            RenameMode::Exchange => vec![step(Op::Rename {
                from: from.clone(),
                to: to.clone(),
                mode: RenameMode::Exchange,
            })],
            RenameMode::Replace | RenameMode::NoReplace => {
                let mut steps = vec![step(Op::Rename {
                    from: to.clone(),
                    to: from.clone(),
                    mode: RenameMode::NoReplace,
                })];
                if let Some(id) = attic {
                    steps.push(step(Op::Restore {
                        id,
                        path: to.clone(),
                    }));
                }
                steps
            }
        },
        Op::Write { path, offset, data } => {
            let old = size.ok_or_else(|| lacks("the old size"))?;
            let len = data.len() as u64;
            let grows = len > 0 && offset + len > old;
            content_steps(record, path, old, *offset, offset + len, grows, &step)
        }
        Op::Truncate { path, size: new } => {
            let old = size.ok_or_else(|| lacks("the old size"))?;
            content_steps(record, path, old, *new, old, *new != old, &step)
        }
        Op::Fallocate {
            path,
            mode,
            offset,
            len,
        } => {
            let old = size.ok_or_else(|| lacks("the old size"))?;
            let grows = matches!(mode, FallocateMode::Allocate | FallocateMode::ZeroRange)
                && offset + len > old;
            content_steps(record, path, old, *offset, offset + len, grows, &step)
        }
        Op::CopyRange {
            dst,
            dst_offset,
            len,
            ..
        } => {
            let old = size.ok_or_else(|| lacks("the old size"))?;
            let grows = *len > 0 && dst_offset + len > old;
            content_steps(
                record,
                dst,
                old,
                *dst_offset,
                dst_offset + len,
                grows,
                &step,
            )
        }
        Op::SetAttr {
            node,
            mode,
            uid,
            gid,
            atime,
            mtime,
        } => {
            let (o_mode, o_uid, o_gid, o_atime, o_mtime) =
                old_attr.ok_or_else(|| lacks("the old attributes"))?;
            let symlink = FileType::from_raw_mode(o_mode) == FileType::Symlink;
            // A chown clears setuid and setgid: give the mode back too.
            let mode_changed = mode.is_some() || uid.is_some() || gid.is_some();
            vec![step(Op::SetAttr {
                node: node.clone(),
                mode: (mode_changed && !symlink).then_some(o_mode & crate::record::MODE_MASK),
                uid: uid.map(|_| o_uid),
                gid: gid.map(|_| o_gid),
                atime: atime.map(|_| o_atime),
                mtime: mtime.map(|_| o_mtime),
            })]
        }
        Op::SetXattr { node, name, .. } | Op::RemoveXattr { node, name } => {
            let old = record
                .before
                .iter()
                .find_map(|b| match b {
                    BeforeImage::Xattr { name: n, value } if n == name => Some(value),
                    _ => None,
                })
                .ok_or_else(|| lacks("the old xattr value"))?;
            let mut steps = vec![step(match old {
                Some(value) => Op::SetXattr {
                    node: node.clone(),
                    name: name.clone(),
                    value: value.to_vec(),
                },
                None => Op::RemoveXattr {
                    node: node.clone(),
                    name: name.clone(),
                },
            })];
            if let Some((o_mode, ..)) = old_attr {
                if FileType::from_raw_mode(o_mode) != FileType::Symlink {
                    steps.push(step(Op::SetAttr {
                        node: node.clone(),
                        mode: Some(o_mode & crate::record::MODE_MASK),
                        uid: None,
                        gid: None,
                        atime: None,
                        mtime: None,
                    }));
                }
            }
            steps
        }
        Op::Marker(_) => vec![],
    };
    if ops.is_empty() {
        // Nothing to put back but mtimes (a change the operation did not make
        // visible, such as an allocation past the end of a file).
        return Ok(mtime_steps(&olds));
    }
    Ok(ops)
}

/// Steps that only set mtimes back.
fn mtime_steps(olds: &[SetMtime]) -> Vec<Step> {
    olds.iter()
        .map(|m| Step {
            op: Op::SetAttr {
                node: m.node.clone(),
                mode: None,
                uid: None,
                gid: None,
                atime: None,
                mtime: Some(m.mtime),
            },
            mtimes: Vec::new(),
            attic: None,
        })
        .collect()
}

/// The data before-images of a record, in offset order.
fn extents(record: &Record) -> impl Iterator<Item = (u64, &[u8])> {
    record.before.iter().filter_map(|b| match b {
        BeforeImage::Bytes { offset, data } => Some((*offset, data.as_slice())),
        _ => None,
    })
}

/// Undoes a change to `start..end` of a file that was `old` bytes long:
/// back to the old size, then the old contents of the range, holes included.
fn content_steps(
    record: &Record,
    path: &RelPath,
    old: u64,
    start: u64,
    end: u64,
    grew: bool,
    step: &dyn Fn(Op) -> Step,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if grew {
        steps.push(step(Op::Truncate {
            path: path.clone(),
            size: old,
        }));
    }
    let (lo, hi) = block_range(start, end, old);
    if lo < hi {
        // One extent over the whole range has no hole to bring back.
        let mut covered = lo;
        let mut whole = true;
        for (offset, data) in extents(record) {
            whole &= offset == covered;
            covered = offset + data.len() as u64;
        }
        if !(whole && covered == hi) {
            // Whole blocks, also the one the old size ends in: a filesystem
            // keeps a partly punched block allocated.
            steps.push(step(Op::Fallocate {
                path: path.clone(),
                mode: FallocateMode::PunchHole,
                offset: lo,
                len: hi.div_ceil(BLOCK) * BLOCK - lo,
            }));
        }
        for (offset, data) in extents(record) {
            steps.push(step(Op::Write {
                path: path.clone(),
                offset,
                data: data.to_vec(),
            }));
        }
    }
    steps
}

/// Replaces attic entry `id`, a regular file, by a copy of itself: contents
/// with holes, mode, owner, xattrs and mtime. A master does this when the
/// node it removed is still open, so that writes through the open handle
/// (which are not journaled) change the original inode and not the history.
pub fn detach_attic_entry(attic: &std::path::Path, id: u64) -> std::io::Result<()> {
    use rustix::fs::{self as rfs, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags, UTIME_OMIT};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = attic.join(id.to_string());
    let src = std::fs::File::open(&path)?;
    let md = src.metadata()?;
    if !md.is_file() {
        return Ok(());
    }
    let tmp = attic.join(format!(".{id}.copy"));
    let _ = std::fs::remove_file(&tmp);
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let result = (|| -> std::io::Result<()> {
        for (start, end) in crate::compare::data_extents_between(&src, 0, md.len())? {
            let (mut off_in, mut off_out) = (start, start);
            while off_in < end {
                let want = (end - off_in).min(1 << 30) as usize;
                let n =
                    rfs::copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), want)?;
                if n == 0 {
                    break;
                }
            }
        }
        dst.set_len(md.len())?;
        let mut names = vec![0u8; 64 << 10];
        let n = rfs::flistxattr(&src, &mut names[..])?;
        for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = std::ffi::CString::new(name).expect("split on NUL");
            let mut value = vec![0u8; crate::record::MAX_XATTR_VALUE];
            let len = rfs::fgetxattr(&src, name.as_c_str(), &mut value[..])?;
            rfs::fsetxattr(&dst, name.as_c_str(), &value[..len], XattrFlags::empty())?;
        }
        rfs::fchown(
            &dst,
            Some(Uid::from_raw(md.uid())),
            Some(Gid::from_raw(md.gid())),
        )?;
        rfs::fchmod(&dst, Mode::from_raw_mode(md.mode() & 0o7777))?;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: md.mtime(),
                tv_nsec: md.mtime_nsec() as _,
            },
        };
        rfs::futimens(&dst, &times)?;
        std::fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_points_keep_each_piece_within_budget() {
        let b = MAX_BEFORE as u64;
        assert!(cut_points(&[(0, b)]).is_empty());
        assert_eq!(cut_points(&[(0, b + 1)]), vec![b]);
        assert_eq!(cut_points(&[(0, 10), (20, 20 + b)]), vec![20 + b - 10]);
        let many: Vec<(u64, u64)> = (0..5000).map(|i| (i * 8192, i * 8192 + 4096)).collect();
        let cuts = cut_points(&many);
        assert_eq!(cuts.len(), 5000 / (MAX_BEFORE_IMAGES - 16));
    }

    #[test]
    fn a_file_operation_captures_old_bytes_only_where_it_changes_them() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        std::fs::write(dir.path().join("f"), &old).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let path = |s: &str| RelPath::new(s).unwrap();
        let mtime = |s: &str| {
            let md = std::fs::symlink_metadata(dir.path().join(s)).unwrap();
            BeforeImage::Mtime(SetMtime {
                node: Node::Path(path(s)),
                mtime: Timestamp::new(md.mtime(), md.mtime_nsec() as u32),
            })
        };
        let capture_write = |p: &str, offset: u64, len: usize| {
            let op = Op::Write {
                path: path(p),
                offset,
                data: vec![7; len],
            };
            let mtimes = [SetMtime {
                node: Node::Path(path(p)),
                mtime: Timestamp::new(1, 0),
            }];
            capture(&tree, &op, &mtimes, 9).unwrap()
        };
        let size = BeforeImage::Size(5000);
        let bytes = |offset: usize, end: usize| BeforeImage::Bytes {
            offset: offset as u64,
            data: old[offset..end].to_vec(),
        };
        // Past the block the old size ends in: nothing to read back.
        assert_eq!(capture_write("f", 8192, 10), [mtime("f"), size.clone()]);
        assert_eq!(capture_write("f", 9000, 10), [mtime("f"), size.clone()]);
        // Over old bytes or in the last block: the whole blocks around them,
        // clipped to the size.
        assert_eq!(
            capture_write("f", 5000, 10),
            [mtime("f"), size.clone(), bytes(4096, 5000)]
        );
        assert_eq!(
            capture_write("f", 100, 10),
            [mtime("f"), size.clone(), bytes(0, 4096)]
        );
        assert_eq!(
            capture_write("f", 4990, 20),
            [mtime("f"), size.clone(), bytes(4096, 5000)]
        );
        // A truncate that grows the file reads nothing; one that shrinks it, the tail.
        let truncate = |new: u64| {
            let op = Op::Truncate {
                path: path("f"),
                size: new,
            };
            capture(&tree, &op, &[], 9).unwrap()
        };
        assert_eq!(truncate(8192), [BeforeImage::Size(5000)]);
        assert_eq!(truncate(6000), [size.clone(), bytes(4096, 5000)]);
        assert_eq!(truncate(4500), [size.clone(), bytes(4096, 5000)]);
        // No regular file there: no content images (the record will be refused).
        assert_eq!(capture_write("missing", 0, 10), []);
        assert_eq!(capture_write("d", 0, 10), [mtime("d")]);
    }

    #[test]
    fn a_record_without_history_cannot_be_undone() {
        let r = Record {
            seq: 4,
            time: Timestamp::new(1, 0),
            op: Op::Unlink {
                path: RelPath::new(b"a").unwrap(),
            },
            mtimes: vec![],
            before: vec![],
        };
        assert!(matches!(
            inverse(&r),
            Err(HistoryError::NoHistory { seq: 4, .. })
        ));
    }
}
