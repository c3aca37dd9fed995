//! The master's filesystem, without FUSE: inode-addressed operations over
//! `VOL/tree` that journal every mutation before it reaches the tree.
//!
//! [`MasterFs`] is what a FUSE adapter calls. Each method takes inode numbers
//! and names as the kernel gives them and returns attributes or an errno.
//! Reads go straight to the backing tree; every mutation becomes a record
//! through [`Volume::commit_with`], which journals it and then applies it
//! with the same applier replicas use (invariant 1).
//!
//! Records address nodes by path, so this module keeps, for every inode the
//! kernel knows, the names it was looked up under: a directory has exactly
//! one, a file one per known hard link. An inode is numbered as in the
//! backing filesystem (hard links share a number, as the kernel requires),
//! except the root, which is inode 1.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::compare::FileKind;
use crate::path::{Node, RelPath};
use crate::record::{
    implied_mtimes, FallocateMode, NewNode, Op, RenameMode, SpecialKind, Timestamp,
};
use crate::tree::TreeError;
use crate::treeread::{read_reusing, DirectFile};
use crate::volume::{Volume, VolumeError};
use crate::ApplyError;

/// The root's inode number, as FUSE wants it.
pub const ROOT_INO: u64 = 1;

pub type Result<T> = std::result::Result<T, Errno>;

/// What `stat` says about a node, with the FUSE inode number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

/// One directory entry, as `readdir` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

#[derive(Default)]
struct Inode {
    /// Known names: (parent inode, name). A directory has one.
    names: Vec<(u64, Vec<u8>)>,
    /// Lookups the kernel holds (see FUSE `forget`).
    lookups: u64,
    /// Directories stay in the table once known: other entries name them as
    /// their parent.
    dir: bool,
}

/// An open file of the mount. The table's lock is held only to look a
/// handle up: whoever uses the file takes its own reference and lets go of
/// the lock first, so a long read never holds up an open or a release.
struct Handle {
    ino: u64,
    file: Arc<File>,
    behind: WriteBehind,
    /// The file for large reads of what the tree does not cache.
    direct: Arc<DirectFile>,
}

/// Start the tree's writeback of a handle's sequential writes every this
/// many bytes (see [`WriteBehind`]).
const WRITE_BEHIND_BYTES: u64 = 8 << 20;

/// Starts the tree's writeback of what a handle writes in sequence, a
/// little behind the writes, instead of leaving it all to the final fsync.
/// The tree's copy of the data is not what makes it durable (the journal
/// is), so nothing waits for it; but a file written through the mount
/// goes to the disk twice, the journal while the file is written and the
/// tree at the end, and the disk can take the tree's part while the server
/// is busy with the journal's. Writes of 128 KiB and more start their own
/// writeback (the tree writes them uncached, where its filesystem can), so
/// this matters for a file written in smaller pieces; for the larger ones
/// its call every [`WRITE_BEHIND_BYTES`] finds their writeback started.
/// Writes that jump about (a database's pages) are left to the kernel as
/// before.
///
/// The kernel sends the pieces of one large write at once, so they can
/// arrive out of order: a write belongs to the run unless it starts more
/// than [`WRITE_BEHIND_GAP`] after its end or ends more than that before
/// its start.
#[derive(Default)]
struct WriteBehind {
    /// The run not yet written back: from, end.
    run: Mutex<(u64, u64)>,
}

/// See [`WriteBehind`].
const WRITE_BEHIND_GAP: u64 = 1 << 20;

impl WriteBehind {
    /// Notes a write of `len` bytes at `offset`; returns the range to start
    /// writing back when a run has grown to [`WRITE_BEHIND_BYTES`].
    fn wrote(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let mut run = self.run.lock().unwrap_or_else(|p| p.into_inner());
        let (from, end) = *run;
        let write_end = offset.saturating_add(len);
        if offset > end.saturating_add(WRITE_BEHIND_GAP)
            || write_end.saturating_add(WRITE_BEHIND_GAP) < from
        {
            *run = (offset, write_end);
            return None;
        }
        let end = end.max(write_end);
        if end - from >= WRITE_BEHIND_BYTES {
            *run = (end, end);
            Some((from, end - from))
        } else {
            *run = (from, end);
            None
        }
    }
}

/// Starts writing back `len` bytes of `file` at `offset`, without waiting
/// for them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Best effort: an
/// error leaves the pages to the kernel's own writeback.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call (`file`
    // is borrowed), and the call touches no memory of this process.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Directories (inode numbers) seen to have no default ACL, so that
/// creating in them need not ask again ([`MasterFs::new_node`]).
///
/// A directory gets or loses its default ACL only by a record that sets or
/// removes `system.posix_acl_default`, or by a rewind; an inode number is
/// only freed, and so can come back as a new directory (which may inherit
/// a default ACL), after an rmdir or a rename. All of these drop the whole
/// set ([`MasterFs::forget_acls`]), as does anything done to the volume
/// directly ([`MasterFs::with_volume`]).
#[derive(Default)]
struct NoDefaultAcl {
    dirs: HashSet<u64>,
    /// Counts the drops: an answer read before a drop is not kept after it.
    generation: u64,
}

/// More directories than this and the set starts again.
const MAX_NO_ACL_DIRS: usize = 4096;

const DEFAULT_ACL: &[u8] = b"system.posix_acl_default";

/// See [`MasterFs::locate`].
enum Located {
    Path(RelPath),
    Detached(Arc<File>),
}

/// The master's filesystem over an open volume.
pub struct MasterFs {
    vol: Mutex<Volume>,
    tree: PathBuf,
    /// The tree's root directory (`O_PATH`). Lookups and new handles find
    /// nodes from it by their relative paths, without resolving the
    /// tree's own path each time.
    root: OwnedFd,
    root_backing_ino: u64,
    inodes: RwLock<HashMap<u64, Inode>>,
    handles: RwLock<HashMap<u64, Handle>>,
    no_default_acl: Mutex<NoDefaultAcl>,
    next_fh: AtomicU64,
    /// Whether `fsync` waits for the journal to be durable.
    fsync_waits: bool,
    /// Told the new head after every change, for the replication server.
    head: Option<crate::ship::HeadSender>,
}

pub(crate) fn errno_of(e: &io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

/// The errno a failed commit means to the caller.
fn commit_errno(e: &VolumeError) -> Errno {
    match e {
        VolumeError::Apply(ApplyError::Tree {
            source: TreeError::Refused { errno, .. } | TreeError::Unchanged { errno, .. },
            ..
        }) => *errno,
        VolumeError::Apply(ApplyError::Tree {
            source: TreeError::Io { source, .. },
            ..
        }) => errno_of(source),
        VolumeError::Journal(crate::JournalError::Io { source, .. }) => errno_of(source),
        _ => Errno::IO,
    }
}

fn name_ok(name: &[u8]) -> Result<()> {
    if name.len() > crate::path::MAX_NAME {
        return Err(Errno::NAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// The permission bits a POSIX ACL xattr value stands for: owner, mask (or
/// owning group when there is no mask), other. Version 2 layout: a u32
/// version, then (u16 tag, u16 perm, u32 id) entries.
fn acl_mode(acl: &[u8]) -> Option<u32> {
    if acl.len() < 4
        || u32::from_le_bytes(acl[0..4].try_into().ok()?) != 2
        || !(acl.len() - 4).is_multiple_of(8)
    {
        return None;
    }
    let (mut user, mut group, mut mask, mut other) = (0, 0, None, 0);
    for e in acl[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]) as u32 & 0o7;
        match tag {
            0x01 => user = perm,
            0x04 => group = perm,
            0x10 => mask = Some(perm),
            0x20 => other = perm,
            _ => {}
        }
    }
    Some(0o7000 | user << 6 | mask.unwrap_or(group) << 3 | other)
}

/// What [`MasterFs::write`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The bytes written.
    pub len: u32,
    /// Whether the write dropped the file's setuid or setgid bit first:
    /// the kernel, which leaves that to the server for direct writes, must
    /// then be told that its copy of the mode is out of date.
    pub mode_changed: bool,
}

/// Who asks: the caller's ids, for ownership of what it creates.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl MasterFs {
    /// Serves `vol`, which must have its tree at the journal's head; `fsync`
    /// waits for the journal to be durable.
    pub fn new(vol: Volume) -> io::Result<MasterFs> {
        MasterFs::with_policy(vol, true)
    }

    /// With `fsync_waits` false, `fsync` returns at once and the caller makes
    /// the journal durable on its own schedule ([`MasterFs::sync_journal`]).
    pub fn with_policy(vol: Volume, fsync_waits: bool) -> io::Result<MasterFs> {
        let tree = vol.tree_path();
        let root = rustix::fs::open(
            &tree,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let root_backing_ino = rustix::fs::fstat(&root)?.st_ino;
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT_INO,
            Inode {
                names: Vec::new(),
                lookups: 1,
                dir: true,
            },
        );
        Ok(MasterFs {
            vol: Mutex::new(vol),
            tree,
            root,
            root_backing_ino,
            inodes: RwLock::new(inodes),
            handles: RwLock::new(HashMap::new()),
            no_default_acl: Mutex::new(NoDefaultAcl::default()),
            next_fh: AtomicU64::new(1),
            fsync_waits,
            head: None,
        })
    }

    /// From now on, every new head is published to the returned receiver
    /// (the replication server's view). Without a call, nothing is.
    pub fn publish_heads(&mut self) -> tokio::sync::watch::Receiver<crate::ship::Head> {
        let head = self.with_volume(|v| crate::ship::Head::of(v));
        let (tx, rx) = tokio::sync::watch::channel(head);
        self.head = Some(tx);
        rx
    }

    fn publish(&self, vol: &Volume) {
        if let Some(tx) = &self.head {
            tx.send_if_modified(|h| {
                if h.position == vol.applied() {
                    return false;
                }
                *h = crate::ship::Head::of(vol);
                true
            });
        }
    }

    /// Rewinds the tree to position `to` ([`Volume::rewind`]) while mounted,
    /// with no other change in between, and brings the table of names the
    /// kernel knows in line with it. Returns what was done and every node
    /// the undo touched, whose kernel caches the caller drops.
    pub fn rewind(
        &self,
        to: &crate::volume::Target,
    ) -> std::result::Result<(crate::volume::Rewound, Vec<RelPath>), VolumeError> {
        let mut touched = Vec::new();
        let r = {
            let mut vol = self.vol.lock().unwrap_or_else(|p| p.into_inner());
            let seq = vol.resolve(to)?;
            let from = vol.head().seq;
            let r = vol.rewind(seq, |op| {
                for n in crate::inspect::op_paths(op) {
                    if let Node::Path(p) = n {
                        touched.push(p);
                    }
                }
            });
            // A node the rewind removed that is still open here: its attic
            // entry becomes a copy, as for an unlink (see `commit_keeping`).
            if vol.history() {
                self.detach_open_attic_entries(&vol.attic_path(), from);
            }
            self.publish(&vol);
            r
        };
        self.forget_acls();
        touched.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        touched.dedup();
        self.refresh_names(&touched);
        r.map(|r| (r, touched))
    }

    /// Gives every attic entry made after record `after` whose inode is open
    /// here a copy of its own (the open handle keeps the original).
    fn detach_open_attic_entries(&self, attic: &std::path::Path, after: u64) {
        let open: std::collections::HashSet<u64> = {
            let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
            handles.values().map(|h| h.ino).collect()
        };
        if open.is_empty() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(attic) else {
            return;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
            let Some(id) = id.filter(|&id| id > after) else {
                continue;
            };
            if e.ino() != 0 && open.contains(&self.fuse_ino(e.ino())) {
                if let Err(err) = crate::history::detach_attic_entry(attic, id) {
                    eprintln!("jfs: keep attic entry {id} apart from its open file: {err}");
                }
            }
        }
    }

    /// The backing inode now at `path` and at its parent, if they exist.
    pub fn inodes_at(&self, path: &RelPath) -> (Option<u64>, Option<u64>) {
        let parent = self.stat_path(path.parent().as_ref()).ok().map(|a| a.ino);
        let node = self.stat_path(Some(path)).ok().map(|a| a.ino);
        (parent, node)
    }

    /// After the tree changed under the table (a rewind), each `(parent,
    /// name)` of `paths` names what is there now: stale names go, and an
    /// inode the table knows gets its name back.
    fn refresh_names(&self, paths: &[RelPath]) {
        let now: Vec<(u64, Vec<u8>, Option<u64>)> = paths
            .iter()
            .filter_map(|p| {
                let (parent, node) = self.inodes_at(p);
                parent.map(|parent| (parent, p.file_name().to_vec(), node))
            })
            .collect();
        let mut inodes = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        for (ino, node) in inodes.iter_mut() {
            node.names.retain(|(parent, name)| {
                !now.iter()
                    .any(|(p, n, at)| p == parent && n == name && *at != Some(*ino))
            });
        }
        for (parent, name, at) in now {
            if let Some(node) = at.and_then(|ino| inodes.get_mut(&ino)) {
                if !node.names.iter().any(|(p, n)| *p == parent && *n == name) {
                    node.names.push((parent, name));
                }
            }
        }
    }

    /// Gives the volume back (to sync and close it).
    pub fn into_volume(self) -> Volume {
        self.vol.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the volume (status, snapshots). Whatever `f` changes
    /// in the tree is not seen by the table of names the kernel knows.
    pub fn with_volume<T>(&self, f: impl FnOnce(&mut Volume) -> T) -> T {
        let mut v = self.vol.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut v);
        self.publish(&v);
        drop(v);
        self.forget_acls();
        out
    }

    /// Drops what is known of directories' default ACLs.
    fn forget_acls(&self) {
        let mut known = self
            .no_default_acl
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        known.dirs.clear();
        known.generation += 1;
    }

    fn fuse_ino(&self, backing: u64) -> u64 {
        if backing == self.root_backing_ino {
            ROOT_INO
        } else {
            backing
        }
    }

    /// A current path of `ino`: `None` for the root, `Err(ENOENT)` when it has
    /// no known name (removed, or never looked up).
    fn path_of(&self, ino: u64) -> Result<Option<RelPath>> {
        let inodes = self.inodes.read().unwrap_or_else(|p| p.into_inner());
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let node = inodes.get(&cur).ok_or(Errno::NOENT)?;
            let (parent, name) = node.names.first().ok_or(Errno::NOENT)?;
            parts.push(name);
            cur = *parent;
            if parts.len() > 2048 {
                return Err(Errno::LOOP);
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        parts.reverse();
        RelPath::new(parts.join(&b'/'))
            .map(Some)
            .map_err(|_| Errno::NAMETOOLONG)
    }

    /// Where an open or known inode is: a path in the tree, or, for a file
    /// unlinked while open (no links left), only its handle. An inode whose
    /// known names are gone but which still has links (a hard link the
    /// kernel never looked up) is found by walking the tree, so its changes
    /// are journaled like any other.
    fn locate(&self, ino: u64) -> Result<Located> {
        match self.path_of(ino) {
            Ok(Some(p)) => return Ok(Located::Path(p)),
            Ok(None) => return Err(Errno::ISDIR),
            Err(_) => {}
        }
        let file = self.handle_file_for(ino).ok_or(Errno::NOENT)?;
        let md = file.metadata().map_err(|e| errno_of(&e))?;
        if md.nlink() == 0 {
            return Ok(Located::Detached(file));
        }
        match self.find_in_tree(md.ino()) {
            Some(path) => {
                self.remember_path(&path);
                Ok(Located::Path(path))
            }
            // Its last name is gone; only history (the attic) links it.
            None => Ok(Located::Detached(file)),
        }
    }

    /// The path of the node with backing inode `backing`, by walking the tree.
    fn find_in_tree(&self, backing: u64) -> Option<RelPath> {
        let mut stack: Vec<(PathBuf, Option<RelPath>)> = vec![(self.tree.clone(), None)];
        while let Some((dir, rel)) = stack.pop() {
            for e in std::fs::read_dir(&dir).ok()?.flatten() {
                let name = e.file_name();
                let child = match &rel {
                    None => RelPath::new(name.as_bytes()).ok()?,
                    Some(r) => r.join(name.as_bytes()).ok()?,
                };
                if e.ino() == backing {
                    return Some(child);
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), Some(child)));
                }
            }
        }
        None
    }

    /// Records every component of `path` as a known name (without a kernel lookup).
    fn remember_path(&self, path: &RelPath) {
        let mut parent = ROOT_INO;
        let mut cur: Option<RelPath> = None;
        for name in path.as_bytes().split(|&b| b == b'/') {
            let next = match &cur {
                None => RelPath::new(name),
                Some(c) => c.join(name),
            };
            let Ok(next) = next else { return };
            let Ok(attr) = self.stat_path(Some(&next)) else {
                return;
            };
            let mut inodes = self.inodes.write().unwrap_or_else(|p| p.into_inner());
            let node = inodes.entry(attr.ino).or_default();
            node.dir = attr.kind == FileKind::Directory;
            if !node.names.iter().any(|(p, n)| *p == parent && n == name) {
                node.names.push((parent, name.to_vec()));
            }
            parent = attr.ino;
            cur = Some(next);
        }
    }

    fn node_of(&self, ino: u64) -> Result<Node> {
        Ok(match self.path_of(ino)? {
            None => Node::Root,
            Some(p) => Node::Path(p),
        })
    }

    fn child_path(&self, parent: u64, name: &[u8]) -> Result<RelPath> {
        name_ok(name)?;
        match self.path_of(parent)? {
            None => RelPath::new(name),
            Some(p) => p.join(name),
        }
        .map_err(|_| Errno::NAMETOOLONG)
    }

    fn backing(&self, path: Option<&RelPath>) -> PathBuf {
        match path {
            None => self.tree.clone(),
            Some(p) => self.tree.join(p.as_path()),
        }
    }

    /// `lstat` of `path` (the root for `None`): a symlink at the end is not followed.
    fn stat_path(&self, path: Option<&RelPath>) -> Result<Attr> {
        let st = match path {
            None => rustix::fs::fstat(&self.root)?,
            Some(p) => rustix::fs::statat(&self.root, p.as_bytes(), AtFlags::SYMLINK_NOFOLLOW)?,
        };
        Ok(self.attr_of(&st))
    }

    /// Opens `path` (the root for `None`) with `flags`, never through a
    /// symlink at the end.
    fn open_path(&self, path: Option<&RelPath>, flags: OFlags) -> Result<File> {
        let rel: &[u8] = path.map_or(b".", |p| p.as_bytes());
        let fd = rustix::fs::openat(
            &self.root,
            rel,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    fn attr_of(&self, st: &rustix::fs::Stat) -> Attr {
        Attr {
            ino: self.fuse_ino(st.st_ino),
            kind: FileKind::from_raw(rustix::fs::FileType::from_raw_mode(st.st_mode)),
            perm: st.st_mode & 0o7777,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            blksize: st.st_blksize as u32,
            atime: Timestamp::new(st.st_atime, st.st_atime_nsec as u32),
            mtime: Timestamp::new(st.st_mtime, st.st_mtime_nsec as u32),
            ctime: Timestamp::new(st.st_ctime, st.st_ctime_nsec as u32),
        }
    }

    /// Records that `attr`'s inode is known as `name` in `parent`, and
    /// counts a lookup (one the kernel made, or an entry it took from a
    /// `readdirplus`).
    pub(crate) fn remember(&self, attr: &Attr, parent: u64, name: &[u8]) {
        let mut inodes = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        let node = inodes.entry(attr.ino).or_default();
        node.dir = attr.kind == FileKind::Directory;
        if !node.names.iter().any(|(p, n)| *p == parent && n == name) {
            node.names.push((parent, name.to_vec()));
        }
        node.lookups += 1;
    }

    fn forget_name(&self, ino: u64, parent: u64, name: &[u8]) {
        let mut inodes = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(node) = inodes.get_mut(&ino) {
            node.names.retain(|(p, n)| !(*p == parent && n == name));
        }
    }

    fn commit(&self, op: Op) -> Result<()> {
        self.commit_keeping(op, None)
    }

    /// Commits `op`. With history on, a removal moves the node to the attic;
    /// when `open` (an inode the op removes) is still open here, the attic
    /// gets a copy instead, so writes through the open handle do not change
    /// history.
    fn commit_keeping(&self, op: Op, open: Option<u64>) -> Result<()> {
        let time = Timestamp::now();
        let mtimes = implied_mtimes(&op, time);
        // See `NoDefaultAcl`; dropped after the change (done or not), so
        // that no answer read before it survives.
        let acls_change = match &op {
            Op::Rmdir { .. } | Op::Rename { .. } | Op::Restore { .. } => true,
            Op::SetXattr { name, .. } | Op::RemoveXattr { name, .. } => name == DEFAULT_ACL,
            _ => false,
        };
        let mut vol = self.vol.lock().unwrap_or_else(|p| p.into_inner());
        let r = vol.commit_with(time, op, mtimes);
        if acls_change {
            self.forget_acls();
        }
        if let (Ok(pos), Some(ino)) = (&r, open) {
            if vol.history() && self.is_open(ino) {
                let attic = vol.attic_path();
                if attic.join(pos.seq.to_string()).exists() {
                    if let Err(e) = crate::history::detach_attic_entry(&attic, pos.seq) {
                        eprintln!(
                            "jfs: keep attic entry {} apart from its open file: {e}",
                            pos.seq
                        );
                    }
                }
            }
        }
        if r.is_ok() {
            self.publish(&vol);
        }
        r.map(|_| ()).map_err(|e| {
            let errno = commit_errno(&e);
            if errno == Errno::IO {
                eprintln!("jfs: {e:#}");
            }
            errno
        })
    }

    // ---- lookups and reads ------------------------------------------------

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let path = self.child_path(parent, name)?;
        let attr = self.stat_path(Some(&path))?;
        self.remember(&attr, parent, name);
        Ok(attr)
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut inodes = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(node) = inodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            // A directory stays while it has a name: entries below name it.
            if node.lookups == 0 && (!node.dir || node.names.is_empty()) {
                inodes.remove(&ino);
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        if let Some(file) = self.handle_file_for(ino) {
            return Ok(self.attr_of(&rustix::fs::fstat(&*file)?));
        }
        let path = self.path_of(ino)?;
        self.stat_path(path.as_ref())
    }

    /// Whether a handle of `ino` is open (without duplicating its descriptor).
    fn is_open(&self, ino: u64) -> bool {
        let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
        handles.values().any(|h| h.ino == ino)
    }

    /// The file of an open handle of `ino`, if there is one.
    fn handle_file_for(&self, ino: u64) -> Option<Arc<File>> {
        let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
        handles
            .values()
            .find(|h| h.ino == ino)
            .map(|h| Arc::clone(&h.file))
    }

    /// What `f` takes of handle `fh`, under the handles' lock.
    fn with_handle<R>(&self, fh: u64, f: impl FnOnce(&Handle) -> R) -> Result<R> {
        let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
        handles.get(&fh).map(f).ok_or(Errno::BADF)
    }

    /// The file of handle `fh`.
    fn handle_file(&self, fh: u64) -> Result<Arc<File>> {
        self.with_handle(fh, |h| Arc::clone(&h.file))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let path = self.path_of(ino)?;
        let rel: &[u8] = path.as_ref().map_or(b".", |p| p.as_bytes());
        Ok(rustix::fs::readlinkat(&self.root, rel, Vec::new())?.into_bytes())
    }

    pub fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        let path = self.path_of(ino)?;
        // The handle serves reads (and writes to a file no longer in the tree);
        // writes to the tree go through the journal.
        let access = if flags & libc_o::ACCMODE == libc_o::RDONLY {
            OFlags::RDONLY
        } else {
            OFlags::RDWR
        };
        let file = self.open_path(path.as_ref(), access)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                fh,
                Handle {
                    ino,
                    file: Arc::new(file),
                    behind: WriteBehind::default(),
                    direct: Arc::default(),
                },
            );
        Ok(fh)
    }

    /// Reads up to `size` bytes at `offset` and hands them to `f`; see
    /// [`read_reusing`] (large reads of what the tree does not cache go
    /// around its page cache).
    pub fn read_with<T>(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        f: impl FnOnce(Result<&[u8]>) -> T,
    ) -> T {
        match self.with_handle(fh, |h| (Arc::clone(&h.file), Arc::clone(&h.direct))) {
            Ok((file, direct)) => read_reusing(&file, Some(&direct), offset, size, f),
            Err(e) => f(Err(e)),
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.read_with(fh, offset, size, |r| r.map(<[u8]>::to_vec))
    }

    /// `SEEK_DATA` / `SEEK_HOLE` on an open file: where the tree's copy has
    /// data and holes.
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        seek_data_or_hole(&*self.handle_file(fh)?, offset, whence)
    }

    pub fn release(&self, fh: u64) {
        let handle = self
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
        // Closed here, after the lock: a close can take its time (a
        // filesystem may start writing the file back).
        drop(handle);
    }

    /// Up to `max` entries of directory `ino` that come after position
    /// `offset` (0 for the start, `.` and `..` included), each with the
    /// position after it. Positions are the tree's own directory cookies,
    /// so each call reads the tree afresh and nothing is held between
    /// calls: a listing goes on where the last one stopped, and an entry
    /// that stays in the directory meanwhile is listed once, as on the
    /// tree's filesystem. (The kernel opens directories without asking,
    /// see `FuseMaster::opendir`.)
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> Result<Vec<(DirEntry, u64)>> {
        Ok(self
            .list(ino, offset, max, false)?
            .into_iter()
            .map(|(e, next, _)| (e, next))
            .collect())
    }

    /// [`MasterFs::readdir`] with each entry's attributes, for the
    /// kernel's `readdirplus`; an entry removed between the listing and
    /// its `stat` is left out. The kernel takes a reference to every entry
    /// it is given but `.` and `..`, as a lookup does: tell
    /// [`MasterFs::remember`] of each.
    pub fn readdir_plus(
        &self,
        ino: u64,
        offset: u64,
        max: usize,
    ) -> Result<Vec<(DirEntry, u64, Attr)>> {
        Ok(self
            .list(ino, offset, max, true)?
            .into_iter()
            .filter_map(|(e, next, attr)| attr.map(|a| (e, next, a)))
            .collect())
    }

    /// What `readdir` and `readdir_plus` share: the entries after
    /// `offset`, with attributes when `attrs` (or when the tree's
    /// filesystem does not give an entry's type).
    fn list(
        &self,
        ino: u64,
        offset: u64,
        max: usize,
        attrs: bool,
    ) -> Result<Vec<(DirEntry, u64, Option<Attr>)>> {
        let path = self.path_of(ino)?;
        let rel = path.as_ref().map_or(&b"."[..], |p| p.as_bytes());
        let fd = rustix::fs::openat(
            &self.root,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut dir = rustix::fs::Dir::new(fd)?;
        if offset != 0 {
            dir.seek(offset as i64)?;
        }
        let mut entries = Vec::new();
        while entries.len() < max {
            let Some(e) = dir.read() else { break };
            let e = e?;
            let name = e.file_name().to_bytes();
            // The root's parent is outside the tree: it is the root here.
            let outside = name == b".." && path.is_none();
            let unknown = e.file_type() == rustix::fs::FileType::Unknown;
            let attr = if attrs || unknown {
                let at = if outside { &b"."[..] } else { name };
                match rustix::fs::statat(dir.fd()?, at, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => Some(self.attr_of(&st)),
                    Err(Errno::NOENT) => continue, // removed since it was listed
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            let ino = if outside {
                ROOT_INO
            } else {
                self.fuse_ino(e.ino())
            };
            let kind = attr
                .as_ref()
                .map_or_else(|| FileKind::from_raw(e.file_type()), |a| a.kind);
            let next = e.offset() as u64;
            entries.push((
                DirEntry {
                    ino,
                    kind,
                    name: name.to_vec(),
                },
                next,
                attr,
            ));
        }
        Ok(entries)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 64 << 10];
        let n = match self.path_of(ino) {
            Ok(path) => rustix::fs::lgetxattr(self.backing(path.as_ref()), name, &mut buf)?,
            Err(_) => rustix::fs::fgetxattr(self.detached(ino)?, name, &mut buf)?,
        };
        buf.truncate(n);
        Ok(buf)
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 64 << 10];
        let n = match self.path_of(ino) {
            Ok(path) => rustix::fs::llistxattr(self.backing(path.as_ref()), &mut buf)?,
            Err(_) => rustix::fs::flistxattr(self.detached(ino)?, &mut buf)?,
        };
        buf.truncate(n);
        Ok(buf)
    }

    /// The handle of a file that was unlinked while open (no links left).
    fn detached(&self, ino: u64) -> Result<Arc<File>> {
        match self.locate(ino)? {
            Located::Detached(file) => Ok(file),
            Located::Path(_) => Err(Errno::NOENT),
        }
    }

    pub fn statfs(&self) -> Result<rustix::fs::StatVfs> {
        rustix::fs::statvfs(&self.tree)
    }

    // ---- mutations: each one a journal record ------------------------------

    fn new_node(
        &self,
        parent: u64,
        mode: u32,
        umask: u32,
        caller: Caller,
        is_dir: bool,
    ) -> Result<NewNode> {
        // With a default ACL on the parent, the ACL masks the mode instead of
        // the umask, as on a local filesystem (the kernel leaves both to us:
        // `FUSE_DONT_MASK`).
        let mut perm = match self.default_acl(parent) {
            Ok(acl) => mode & acl_mode(&acl).unwrap_or(0o777) & 0o7777,
            Err(_) => mode & !umask & 0o7777,
        };
        let mut gid = caller.gid;
        // A setgid directory gives its group to new nodes, and its bit to new directories.
        let parent_attr = self.getattr(parent)?;
        if parent_attr.perm & 0o2000 != 0 {
            gid = parent_attr.gid;
            if is_dir {
                perm |= 0o2000;
            }
        }
        Ok(NewNode {
            mode: perm,
            uid: caller.uid,
            gid,
        })
    }

    /// The default ACL of directory `dir`, remembering its absence.
    fn default_acl(&self, dir: u64) -> Result<Vec<u8>> {
        let generation = {
            let known = self
                .no_default_acl
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if known.dirs.contains(&dir) {
                return Err(Errno::NODATA);
            }
            known.generation
        };
        let r = self.getxattr(dir, DEFAULT_ACL);
        if r == Err(Errno::NODATA) {
            let mut known = self
                .no_default_acl
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if known.generation == generation {
                if known.dirs.len() >= MAX_NO_ACL_DIRS {
                    known.dirs.clear();
                }
                known.dirs.insert(dir);
            }
        }
        r
    }

    fn created(&self, parent: u64, name: &[u8], path: &RelPath) -> Result<Attr> {
        let attr = self.stat_path(Some(path))?;
        self.remember(&attr, parent, name);
        Ok(attr)
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<Attr> {
        let path = self.child_path(parent, name)?;
        let node = self.new_node(parent, mode, umask, caller, true)?;
        self.commit(Op::Mkdir {
            path: path.clone(),
            node,
        })?;
        self.created(parent, name, &path)
    }

    /// Creates and opens a regular file; returns its attributes and handle.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Attr, u64)> {
        let path = self.child_path(parent, name)?;
        let node = self.new_node(parent, mode, umask, caller, false)?;
        self.commit(Op::Create {
            path: path.clone(),
            node,
        })?;
        let attr = self.created(parent, name, &path)?;
        let fh = self.open(
            attr.ino,
            flags & !(libc_o::CREAT | libc_o::EXCL | libc_o::TRUNC),
        )?;
        Ok((attr, fh))
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u64,
        caller: Caller,
    ) -> Result<Attr> {
        let path = self.child_path(parent, name)?;
        let kind = match mode & libc_o::S_IFMT {
            libc_o::S_IFIFO => SpecialKind::Fifo,
            libc_o::S_IFSOCK => SpecialKind::Socket,
            libc_o::S_IFCHR => SpecialKind::CharDevice { rdev },
            libc_o::S_IFBLK => SpecialKind::BlockDevice { rdev },
            libc_o::S_IFREG | 0 => {
                let node = self.new_node(parent, mode, umask, caller, false)?;
                self.commit(Op::Create {
                    path: path.clone(),
                    node,
                })?;
                return self.created(parent, name, &path);
            }
            _ => return Err(Errno::INVAL),
        };
        let node = self.new_node(parent, mode, umask, caller, false)?;
        self.commit(Op::Mknod {
            path: path.clone(),
            kind,
            node,
        })?;
        self.created(parent, name, &path)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], caller: Caller) -> Result<Attr> {
        let path = self.child_path(parent, name)?;
        let gid = self.new_node(parent, 0, 0, caller, false)?.gid;
        self.commit(Op::Symlink {
            path: path.clone(),
            target: target.to_vec(),
            uid: caller.uid,
            gid,
        })?;
        self.created(parent, name, &path)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        let from = self.path_of(ino)?.ok_or(Errno::PERM)?;
        let to = self.child_path(newparent, newname)?;
        self.commit(Op::Link {
            from,
            to: to.clone(),
        })?;
        self.created(newparent, newname, &to)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        let path = self.child_path(parent, name)?;
        let ino = self.stat_path(Some(&path))?.ino;
        self.commit_keeping(Op::Unlink { path }, Some(ino))?;
        self.forget_name(ino, parent, name);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        let path = self.child_path(parent, name)?;
        let ino = self.stat_path(Some(&path))?.ino;
        self.commit(Op::Rmdir { path })?;
        self.forget_name(ino, parent, name);
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> Result<()> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        let src_attr = self.stat_path(Some(&from))?;
        let src = src_attr.ino;
        let dst = self.stat_path(Some(&to)).ok().map(|a| a.ino);
        if dst == Some(src) && mode != RenameMode::Exchange {
            // Two names of one inode: POSIX says rename does nothing.
            return Ok(());
        }
        self.commit_keeping(
            Op::Rename { from, to, mode },
            dst.filter(|_| mode == RenameMode::Replace),
        )?;
        let mut inodes = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        let rename_name =
            |names: &mut Vec<(u64, Vec<u8>)>, old: (u64, &[u8]), new: (u64, &[u8])| {
                for n in names.iter_mut() {
                    if n.0 == old.0 && n.1 == old.1 {
                        *n = (new.0, new.1.to_vec());
                    }
                }
            };
        match mode {
            RenameMode::Exchange => {
                if let Some(dst) = dst {
                    if let Some(node) = inodes.get_mut(&dst) {
                        node.names
                            .retain(|(p, n)| !(*p == newparent && n == newname));
                        node.names.push((parent, name.to_vec()));
                    }
                }
                if let Some(node) = inodes.get_mut(&src) {
                    node.names.retain(|(p, n)| !(*p == parent && n == name));
                    node.names.push((newparent, newname.to_vec()));
                }
            }
            _ => {
                if let Some(dst) = dst {
                    if let Some(node) = inodes.get_mut(&dst) {
                        node.names
                            .retain(|(p, n)| !(*p == newparent && n == newname));
                    }
                }
                match inodes.get_mut(&src) {
                    Some(node) => {
                        rename_name(&mut node.names, (parent, name), (newparent, newname))
                    }
                    None => {
                        inodes.insert(
                            src,
                            Inode {
                                names: vec![(newparent, newname.to_vec())],
                                lookups: 0,
                                dir: src_attr.kind == FileKind::Directory,
                            },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Changes attributes; a size change is a truncate.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<Attr> {
        let located = match self.path_of(ino) {
            Ok(None) => None, // the root
            Ok(Some(p)) => Some(Located::Path(p)),
            Err(_) => Some(self.locate(ino)?),
        };
        let node = match &located {
            None => Some(Node::Root),
            Some(Located::Path(p)) => Some(Node::Path(p.clone())),
            Some(Located::Detached(_)) => None,
        };
        if let Some(size) = size {
            match &located {
                Some(Located::Path(path)) => self.commit(Op::Truncate {
                    path: path.clone(),
                    size,
                })?,
                None => return Err(Errno::ISDIR),
                // Unlinked while open: no longer in the tree, nothing to journal.
                Some(Located::Detached(file)) => file.set_len(size).map_err(|e| errno_of(&e))?,
            }
        }
        if mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some() {
            if let Some(Located::Detached(file)) = &located {
                // Unlinked while open: change the file itself, unjournaled.
                if uid.is_some() || gid.is_some() {
                    rustix::fs::fchown(
                        file,
                        uid.map(rustix::fs::Uid::from_raw),
                        gid.map(rustix::fs::Gid::from_raw),
                    )?;
                }
                if let Some(m) = mode {
                    rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(m & 0o7777))?;
                }
                if atime.is_some() || mtime.is_some() {
                    let ts = |t: Option<Timestamp>| match t {
                        Some(t) => rustix::fs::Timespec {
                            tv_sec: t.sec,
                            tv_nsec: t.nsec as _,
                        },
                        None => rustix::fs::Timespec {
                            tv_sec: 0,
                            tv_nsec: rustix::fs::UTIME_OMIT,
                        },
                    };
                    let times = rustix::fs::Timestamps {
                        last_access: ts(atime),
                        last_modification: ts(mtime),
                    };
                    rustix::fs::futimens(file, &times)?;
                }
                return self.getattr(ino);
            }
            match node {
                Some(node) => {
                    let op = Op::SetAttr {
                        node,
                        mode: mode.map(|m| m & 0o7777),
                        uid,
                        gid,
                        atime,
                        mtime,
                    };
                    self.commit(op)?;
                }
                None => return Err(Errno::NOENT),
            }
        }
        self.getattr(ino)
    }

    /// Writes `data` at `offset` through handle `fh`, through the journal.
    /// Data given owned goes into its record without a copy.
    /// `kill_suidgid` is the kernel's `FUSE_WRITE_KILL_SUIDGID`: see
    /// `MasterFs::remove_suidgid`.
    pub fn write<'a>(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: impl Into<std::borrow::Cow<'a, [u8]>>,
        kill_suidgid: bool,
    ) -> Result<Written> {
        let data = data.into();
        let located = self.locate(ino)?;
        let mode_changed = kill_suidgid && self.remove_suidgid(ino, fh, &located)?;
        let len = self.write_located(fh, located, offset, data)?;
        Ok(Written { len, mode_changed })
    }

    fn write_located(
        &self,
        fh: u64,
        located: Located,
        offset: u64,
        data: std::borrow::Cow<'_, [u8]>,
    ) -> Result<u32> {
        match located {
            Located::Path(path) => {
                let len = data.len();
                if len != 0 && len <= crate::record::MAX_WRITE {
                    self.commit(Op::Write {
                        path,
                        offset,
                        data: data.into_owned(),
                    })?;
                } else {
                    for (i, chunk) in data.chunks(crate::record::MAX_WRITE).enumerate() {
                        let off = offset + (i * crate::record::MAX_WRITE) as u64;
                        self.commit(Op::Write {
                            path: path.clone(),
                            offset: off,
                            data: chunk.to_vec(),
                        })?;
                    }
                }
                self.write_behind(fh, offset, len as u64);
                Ok(len as u32)
            }
            Located::Detached(_) => {
                // Unlinked while open: no longer part of the tree, so the write
                // goes to the handle and is not journaled.
                self.handle_file(fh)?
                    .write_all_at(&data, offset)
                    .map_err(|e| errno_of(&e))?;
                Ok(data.len() as u32)
            }
        }
    }

    /// Starts the tree's writeback behind handle `fh`'s sequential writes
    /// (see [`WriteBehind`]).
    fn write_behind(&self, fh: u64, offset: u64, len: u64) {
        let kick = {
            let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
            handles.get(&fh).and_then(|h| {
                let (from, len) = h.behind.wrote(offset, len)?;
                Some((Arc::clone(&h.file), from, len))
            })
        };
        if let Some((file, from, len)) = kick {
            start_writeback(&file, from, len);
        }
    }

    /// What a local filesystem does before a write by a process without
    /// `CAP_FSETID`, which the kernel does itself for handles in its page
    /// cache and asks the server to do for direct writes
    /// (`FUSE_WRITE_KILL_SUIDGID`): setuid goes, and setgid where group
    /// execute is set, journaled as the chmod it is (a file no longer in
    /// the tree is changed directly, as its writes are). Returns whether
    /// the mode changed: the kernel still holds the old one. (The kernel
    /// drops `security.capability` itself either way.)
    fn remove_suidgid(&self, ino: u64, fh: u64, located: &Located) -> Result<bool> {
        let file = self.handle_file(fh)?;
        let mode = rustix::fs::fstat(&*file)?.st_mode & 0o7777;
        let mut kept = mode & !libc_o::S_ISUID;
        if mode & libc_o::S_IXGRP != 0 {
            kept &= !libc_o::S_ISGID;
        }
        if kept == mode {
            return Ok(false);
        }
        let node = match located {
            Located::Path(path) => Some(Node::Path(path.clone())),
            Located::Detached(_) => None,
        };
        self.chmod_in_passing(ino, node, kept)?;
        Ok(true)
    }

    /// Sets the mode of node `ino`, at `node` in the tree, as a consequence
    /// of another change: journaled as the chmod it is, or, for a node no
    /// longer in the tree (`None`), on its open file directly, as its
    /// writes are.
    fn chmod_in_passing(&self, ino: u64, node: Option<Node>, mode: u32) -> Result<()> {
        match node {
            Some(node) => self.commit(Op::SetAttr {
                node,
                mode: Some(mode),
                uid: None,
                gid: None,
                atime: None,
                mtime: None,
            }),
            None => rustix::fs::fchmod(self.detached(ino)?, Mode::from_raw_mode(mode)),
        }
    }

    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let keep = mode & libc_o::FALLOC_FL_KEEP_SIZE != 0;
        let fmode = match mode & !libc_o::FALLOC_FL_KEEP_SIZE {
            libc_o::FALLOC_FL_PUNCH_HOLE if keep => FallocateMode::PunchHole,
            libc_o::FALLOC_FL_ZERO_RANGE if keep => FallocateMode::ZeroRangeKeepSize,
            libc_o::FALLOC_FL_ZERO_RANGE => FallocateMode::ZeroRange,
            0 if keep => FallocateMode::KeepSize,
            0 => FallocateMode::Allocate,
            _ => return Err(Errno::OPNOTSUPP),
        };
        match self.locate(ino)? {
            Located::Path(path) => self.commit(Op::Fallocate {
                path,
                mode: fmode,
                offset,
                len,
            }),
            Located::Detached(file) => {
                let flags = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
                rustix::fs::fallocate(&file, flags, offset, len)
            }
        }
    }

    pub fn copy_range(
        &self,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let (src, dst) = (self.locate(ino_in)?, self.locate(ino_out)?);
        // Copy what exists: a range past the source's end is cut short, as by the kernel.
        let size = match &src {
            Located::Path(p) => self.stat_path(Some(p))?.size,
            Located::Detached(f) => f.metadata().map_err(|e| errno_of(&e))?.len(),
        };
        let len = len.min(size.saturating_sub(off_in));
        if len == 0 {
            return Ok(0);
        }
        match (src, dst) {
            (Located::Path(src), Located::Path(dst)) => {
                self.commit(Op::CopyRange {
                    src,
                    src_offset: off_in,
                    dst,
                    dst_offset: off_out,
                    len,
                })?;
            }
            // The source is no longer in the tree, so no record can name it:
            // its bytes travel in write records.
            (Located::Detached(src), Located::Path(dst)) => {
                let mut buf = vec![0u8; len.min(crate::record::MAX_WRITE as u64) as usize];
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(buf.len() as u64) as usize;
                    src.read_exact_at(&mut buf[..n], off_in + done)
                        .map_err(|e| errno_of(&e))?;
                    let op = Op::Write {
                        path: dst.clone(),
                        offset: off_out + done,
                        data: buf[..n].to_vec(),
                    };
                    self.commit(op)?;
                    done += n as u64;
                }
            }
            // The target is no longer in the tree: copy into it, unjournaled.
            (src, Located::Detached(dst)) => {
                let src = match src {
                    Located::Detached(f) => f,
                    Located::Path(p) => {
                        Arc::new(File::open(self.backing(Some(&p))).map_err(|e| errno_of(&e))?)
                    }
                };
                let (mut i, mut o, mut left) = (off_in, off_out, len);
                while left > 0 {
                    let n = rustix::fs::copy_file_range(
                        &*src,
                        Some(&mut i),
                        &*dst,
                        Some(&mut o),
                        left as usize,
                    )?;
                    if n == 0 {
                        break;
                    }
                    left -= n as u64;
                }
            }
        }
        Ok(len)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        let node = match self.node_of(ino) {
            Ok(node) => node,
            Err(_) => {
                let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
                return rustix::fs::fsetxattr(self.detached(ino)?, name, value, flags);
            }
        };
        if flags != 0 {
            let exists = self.getxattr(ino, name).is_ok();
            if flags & libc_o::XATTR_CREATE != 0 && exists {
                return Err(Errno::EXIST);
            }
            if flags & libc_o::XATTR_REPLACE != 0 && !exists {
                return Err(Errno::NODATA);
            }
        }
        self.commit(Op::SetXattr {
            node,
            name: name.to_vec(),
            value: value.to_vec(),
        })
    }

    /// What a local filesystem does when a caller sets a node's access
    /// ACL (the kernel's `posix_acl_update_mode`): unless the caller is in
    /// the node's group or holds `CAP_FSETID` (`keeps_setgid`, given the
    /// group, is the FUSE layer's to tell), the setgid bit goes.
    pub fn drop_setgid_unless(
        &self,
        ino: u64,
        keeps_setgid: impl FnOnce(u32) -> bool,
    ) -> Result<()> {
        let attr = self.getattr(ino)?;
        if attr.perm & libc_o::S_ISGID == 0 || keeps_setgid(attr.gid) {
            return Ok(());
        }
        self.chmod_in_passing(ino, self.node_of(ino).ok(), attr.perm & !libc_o::S_ISGID)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        let node = match self.node_of(ino) {
            Ok(node) => node,
            Err(_) => return rustix::fs::fremovexattr(self.detached(ino)?, name),
        };
        self.commit(Op::RemoveXattr {
            node,
            name: name.to_vec(),
        })
    }

    /// Whether [`MasterFs::fsync`] waits for the disk (the `fsync` policy).
    pub fn fsync_waits(&self) -> bool {
        self.fsync_waits
    }

    /// What `fsync` on the mount does: under the fsync policy, returns once
    /// every record so far is durable.
    pub fn fsync(&self) -> Result<()> {
        if self.fsync_waits {
            self.sync_journal()
        } else {
            Ok(())
        }
    }

    /// Makes every record journaled so far durable. The volume is held only
    /// to take the files to sync: other requests change the tree while the
    /// disk flushes (group commit: their records are made durable too, by
    /// this sync or the next).
    pub fn sync_journal(&self) -> Result<()> {
        self.with_volume(|v| v.journal().start_sync())
            .and_then(|sync| sync.wait())
            .map_err(|e| {
                eprintln!("jfs: fsync: {e:#}");
                Errno::IO
            })
    }
}

/// The few libc constants this module needs, without a libc dependency.
mod libc_o {
    pub const ACCMODE: i32 = 0o3;
    pub const RDONLY: i32 = 0;
    pub const CREAT: i32 = 0o100;
    pub const EXCL: i32 = 0o200;
    pub const TRUNC: i32 = 0o1000;
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFIFO: u32 = 0o010000;
    pub const S_ISUID: u32 = 0o4000;
    pub const S_ISGID: u32 = 0o2000;
    pub const S_IXGRP: u32 = 0o010;
    pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
    pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
    pub const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
    pub const XATTR_CREATE: i32 = 1;
    pub const XATTR_REPLACE: i32 = 2;
}

/// `lseek` with `SEEK_DATA` (3) or `SEEK_HOLE` (4) on a file of the tree,
/// which is what the kernel asks a FUSE server for: so `cp`, `tar` and
/// backup tools see the holes of sparse files through a mount.
pub(crate) fn seek_data_or_hole(file: &File, offset: i64, whence: i32) -> Result<i64> {
    let offset = u64::try_from(offset).map_err(|_| Errno::INVAL)?;
    let pos = match whence {
        3 => rustix::fs::SeekFrom::Data(offset),
        4 => rustix::fs::SeekFrom::Hole(offset),
        _ => return Err(Errno::INVAL),
    };
    Ok(rustix::fs::seek(file, pos)? as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{compare_trees, CompareOptions};
    use crate::volume::Role;
    use std::path::Path;

    const ME: Caller = Caller { uid: 0, gid: 0 };

    #[test]
    fn write_behind_follows_sequential_runs_only() {
        const MIB: u64 = 1 << 20;
        let wb = WriteBehind::default();
        // 1 MiB writes in order: the eighth starts the writeback of all
        // eight, and the next run starts where that one ended.
        for i in 0..7 {
            assert_eq!(wb.wrote(i * MIB, MIB), None, "write {i}");
        }
        assert_eq!(wb.wrote(7 * MIB, MIB), Some((0, 8 * MIB)));
        for i in 8..15 {
            assert_eq!(wb.wrote(i * MIB, MIB), None, "write {i}");
        }
        assert_eq!(wb.wrote(15 * MIB, MIB), Some((8 * MIB, 8 * MIB)));

        // The two halves of each large write may come in either order.
        let wb = WriteBehind::default();
        let mut kicked = Vec::new();
        for i in 0..16 {
            let half = MIB / 2;
            kicked.extend(wb.wrote(i * MIB + half, half));
            kicked.extend(wb.wrote(i * MIB, half));
        }
        assert_eq!(kicked, [(0, 8 * MIB), (8 * MIB, 8 * MIB)]);

        // Writes that jump about never start a writeback.
        let wb = WriteBehind::default();
        for i in 0..64u64 {
            let page = (i * 7919) % 64;
            assert_eq!(wb.wrote(page * 4 * MIB, 64 << 10), None, "write {i}");
        }
        // Going back to the start of the file starts a new run there.
        let wb = WriteBehind::default();
        for i in 0..7 {
            assert_eq!(wb.wrote(i * MIB, MIB), None);
        }
        assert_eq!(wb.wrote(7 * MIB, MIB), Some((0, 8 * MIB)));
        assert_eq!(wb.wrote(0, MIB), None);
        for i in 1..7 {
            assert_eq!(wb.wrote(i * MIB, MIB), None, "write {i}");
        }
        assert_eq!(wb.wrote(7 * MIB, MIB), Some((0, 8 * MIB)));
    }

    fn fs() -> (tempfile::TempDir, MasterFs, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let vol_path = dir.path().join("vol");
        let vol = Volume::init(&vol_path, Role::Master).unwrap();
        (dir, MasterFs::new(vol).unwrap(), vol_path)
    }

    fn check_replays(dir: &Path, fs: MasterFs, vol_path: &Path) {
        let mut vol = fs.into_volume();
        let head = vol.sync().unwrap();
        let dest = dir.join("replayed");
        crate::materialize::materialize(vol_path, head.seq, &dest, |_| {}).unwrap();
        let diffs = compare_trees(&vol.tree_path(), &dest, &CompareOptions::default()).unwrap();
        assert!(diffs.is_empty(), "{diffs:#?}");
    }

    #[test]
    fn namespace_operations_keep_paths_and_replay() {
        let (dir, fs, vol_path) = fs();
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0o022, ME).unwrap();
        let (f, fh) = fs.create(d.ino, b"f", 0o666, 0o022, 2, ME).unwrap();
        assert_eq!(f.perm, 0o644);
        assert_eq!(fs.write(f.ino, fh, 0, b"hello", false).unwrap().len, 5);
        assert_eq!(fs.read(fh, 0, 100).unwrap(), b"hello");
        // Rename the directory: the open file's path follows.
        fs.rename(ROOT_INO, b"d", ROOT_INO, b"e", RenameMode::Replace)
            .unwrap();
        fs.write(f.ino, fh, 5, b" world", false).unwrap();
        assert_eq!(
            std::fs::read(vol_path.join("tree/e/f")).unwrap(),
            b"hello world"
        );
        // A hard link keeps the inode reachable after the first name goes.
        fs.link(f.ino, ROOT_INO, b"g").unwrap();
        fs.unlink(fs.lookup(ROOT_INO, b"e").unwrap().ino, b"f")
            .unwrap();
        fs.write(f.ino, fh, 0, b"H", false).unwrap();
        assert_eq!(
            std::fs::read(vol_path.join("tree/g")).unwrap(),
            b"Hello world"
        );
        // Unlinked while open: writes still work, and are not journaled.
        fs.unlink(ROOT_INO, b"g").unwrap();
        let head = fs.with_volume(|v| v.head());
        fs.write(f.ino, fh, 0, b"gone", false).unwrap();
        assert_eq!(fs.with_volume(|v| v.head()), head);
        fs.release(fh);
        let s = fs.symlink(ROOT_INO, b"s", b"e", ME).unwrap();
        assert_eq!(fs.readlink(s.ino).unwrap(), b"e");
        fs.setxattr(ROOT_INO, b"user.k", b"v", 0).unwrap();
        assert_eq!(fs.getxattr(ROOT_INO, b"user.k").unwrap(), b"v");
        assert_eq!(fs.setxattr(ROOT_INO, b"user.k", b"w", 1), Err(Errno::EXIST));
        assert_eq!(fs.rmdir(ROOT_INO, b"nope"), Err(Errno::NOENT));
        assert_eq!(
            fs.mkdir(ROOT_INO, b"e", 0o755, 0, ME).err(),
            Some(Errno::EXIST)
        );
        check_replays(dir.path(), fs, &vol_path);
    }

    #[test]
    fn a_listing_goes_on_from_its_position_without_a_handle() {
        let (dir, fs, vol_path) = fs();
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0o022, ME).unwrap();
        for i in 0..600 {
            let (_, fh) = fs
                .create(d.ino, format!("e{i:03}").as_bytes(), 0o644, 0, 1, ME)
                .unwrap();
            fs.release(fh);
        }
        // Read a page at a time, removing entries between the pages: each
        // entry still there is listed once, and those listed before their
        // removal are not listed again.
        let mut doomed = (0..600).step_by(7).map(|i| format!("e{i:03}"));
        let (mut seen, mut offset) = (Vec::new(), 0);
        for _ in 0..20 {
            let page = fs.readdir(d.ino, offset, 100).unwrap();
            assert!(page.len() <= 100);
            let Some(&(_, last)) = page.last() else { break };
            offset = last;
            seen.extend(page.into_iter().map(|(e, _)| e.name));
            for name in doomed.by_ref().take(10) {
                fs.unlink(d.ino, name.as_bytes()).unwrap();
            }
        }
        assert!(fs.readdir(d.ino, offset, 100).unwrap().is_empty());
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "an entry was listed twice");
        let left: Vec<Vec<u8>> = std::fs::read_dir(vol_path.join("tree/d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        for name in &left {
            assert!(
                seen.contains(name),
                "{} was never listed",
                String::from_utf8_lossy(name)
            );
        }
        assert!(seen.contains(&b".".to_vec()) && seen.contains(&b"..".to_vec()));
        // Inode numbers as the kernel knows them: the root's parent is the
        // root, and a directory's own entries name it and its parent.
        let root: Vec<_> = fs.readdir(ROOT_INO, 0, 10).unwrap();
        let ino_of = |list: &[(DirEntry, u64)], name: &[u8]| {
            list.iter()
                .find(|(e, _)| e.name == name)
                .map(|(e, _)| (e.ino, e.kind))
        };
        assert_eq!(ino_of(&root, b".."), Some((ROOT_INO, FileKind::Directory)));
        assert_eq!(ino_of(&root, b"."), Some((ROOT_INO, FileKind::Directory)));
        assert_eq!(ino_of(&root, b"d"), Some((d.ino, FileKind::Directory)));
        let inner = fs.readdir(d.ino, 0, 2).unwrap();
        assert_eq!(ino_of(&inner, b".."), Some((ROOT_INO, FileKind::Directory)));
        assert_eq!(ino_of(&inner, b"."), Some((d.ino, FileKind::Directory)));
        // A moved directory is listed at its new place.
        fs.rename(ROOT_INO, b"d", ROOT_INO, b"moved", RenameMode::Replace)
            .unwrap();
        assert!(!fs.readdir(d.ino, 0, 1000).unwrap().is_empty());
        check_replays(dir.path(), fs, &vol_path);
    }

    #[test]
    fn a_write_that_drops_setuid_says_so() {
        let (dir, fs, vol_path) = fs();
        let mode = |ino| fs.getattr(ino).unwrap().perm;
        let (f, fh) = fs.create(ROOT_INO, b"f", 0o644, 0, 1, ME).unwrap();
        fs.setattr(f.ino, Some(0o6755), None, None, None, None, None)
            .unwrap();
        let w = fs.write(f.ino, fh, 0, b"a", true).unwrap();
        assert_eq!((w.len, w.mode_changed), (1, true));
        assert_eq!(mode(f.ino), 0o755, "setuid and (group execute) setgid go");
        let w = fs.write(f.ino, fh, 1, b"b", true).unwrap();
        assert!(!w.mode_changed, "nothing left to drop");
        // Without the kernel's flag (the writer holds CAP_FSETID) they stay.
        fs.setattr(f.ino, Some(0o4755), None, None, None, None, None)
            .unwrap();
        assert!(!fs.write(f.ino, fh, 2, b"c", false).unwrap().mode_changed);
        assert_eq!(mode(f.ino), 0o4755);
        fs.release(fh);
        // A file unlinked while open changes directly, and says so too.
        let (g, gh) = fs.create(ROOT_INO, b"g", 0o644, 0, 1, ME).unwrap();
        fs.setattr(g.ino, Some(0o4745), None, None, None, None, None)
            .unwrap();
        fs.unlink(ROOT_INO, b"g").unwrap();
        let head = fs.with_volume(|v| v.head());
        assert!(fs.write(g.ino, gh, 0, b"gone", true).unwrap().mode_changed);
        assert_eq!(fs.with_volume(|v| v.head()), head, "nothing journaled");
        assert_eq!(mode(g.ino), 0o745);
        fs.release(gh);
        check_replays(dir.path(), fs, &vol_path);
    }

    #[test]
    fn an_acl_from_outside_the_group_drops_setgid_journaled_or_directly() {
        let (dir, fs, vol_path) = fs();
        let (f, fh) = fs.create(ROOT_INO, b"f", 0o644, 0, 1, ME).unwrap();
        fs.setattr(f.ino, Some(0o2745), None, Some(77), None, None, None)
            .unwrap();
        let head = fs.with_volume(|v| v.head());
        // A caller that keeps it is asked about the node's group.
        let mut asked = None;
        fs.drop_setgid_unless(f.ino, |gid| {
            asked = Some(gid);
            true
        })
        .unwrap();
        assert_eq!(asked, Some(77));
        assert_eq!(fs.getattr(f.ino).unwrap().perm, 0o2745);
        // An outsider loses it, journaled.
        fs.drop_setgid_unless(f.ino, |_| false).unwrap();
        assert_eq!(fs.getattr(f.ino).unwrap().perm, 0o745);
        assert_eq!(fs.with_volume(|v| v.head()).seq, head.seq + 1);
        // Nothing to drop: nothing journaled.
        fs.drop_setgid_unless(f.ino, |_| false).unwrap();
        assert_eq!(fs.with_volume(|v| v.head()).seq, head.seq + 1);
        fs.setattr(f.ino, Some(0o6755), None, None, None, None, None)
            .unwrap();
        fs.unlink(ROOT_INO, b"f").unwrap();
        let head = fs.with_volume(|v| v.head());
        fs.drop_setgid_unless(f.ino, |_| false).unwrap();
        assert_eq!(fs.getattr(f.ino).unwrap().perm, 0o4755, "setuid stays");
        assert_eq!(fs.with_volume(|v| v.head()), head, "nothing journaled");
        fs.release(fh);
        check_replays(dir.path(), fs, &vol_path);
    }

    #[test]
    fn lookups_and_handles_do_not_follow_a_symlink_at_the_end() {
        let (dir, fs, vol_path) = fs();
        let (f, fh) = fs.create(ROOT_INO, b"f", 0o644, 0, 2, ME).unwrap();
        fs.write(f.ino, fh, 0, b"data", false).unwrap();
        fs.release(fh);
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, ME).unwrap();
        let s = fs.symlink(d.ino, b"s", b"../f", ME).unwrap();
        assert_eq!(s.kind, FileKind::Symlink);
        let found = fs.lookup(d.ino, b"s").unwrap();
        assert_eq!(
            (found.ino, found.kind, found.size),
            (s.ino, FileKind::Symlink, 4)
        );
        assert_eq!(fs.getattr(s.ino).unwrap().kind, FileKind::Symlink);
        assert_eq!(fs.readlink(s.ino).unwrap(), b"../f");
        assert_eq!(fs.open(s.ino, 0).err(), Some(Errno::LOOP));
        assert_eq!(fs.readlink(f.ino).err(), Some(Errno::INVAL));
        assert_eq!(fs.lookup(d.ino, b"none").err(), Some(Errno::NOENT));
        let root = fs.getattr(ROOT_INO).unwrap();
        assert_eq!((root.ino, root.kind), (ROOT_INO, FileKind::Directory));
        let fh = fs.open(f.ino, 0).unwrap();
        assert_eq!(fs.read(fh, 0, 10).unwrap(), b"data");
        assert_eq!(fs.getattr(f.ino).unwrap().size, 4);
        fs.release(fh);
        check_replays(dir.path(), fs, &vol_path);
    }

    /// A default ACL (version 2): owner rwx, group r-x, others nothing.
    fn default_acl() -> Vec<u8> {
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm) in [(0x01u16, 7u16), (0x04, 5), (0x20, 0)] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        acl
    }

    #[test]
    fn a_new_node_follows_its_directory_s_default_acl_as_it_changes() {
        let (dir, fs, vol_path) = fs();
        let d = fs.mkdir(ROOT_INO, b"d", 0o777, 0o022, ME).unwrap();
        let create = |name: &[u8]| {
            let (attr, fh) = fs.create(d.ino, name, 0o666, 0o022, 2, ME).unwrap();
            fs.release(fh);
            attr.perm
        };
        // The umask applies, and the directory is known to have no default ACL.
        assert_eq!(create(b"a"), 0o644);
        assert_eq!(create(b"b"), 0o644);
        fs.setxattr(d.ino, DEFAULT_ACL, &default_acl(), 0).unwrap();
        assert_eq!(create(b"c"), 0o640, "the ACL masks the mode, not the umask");
        let with_acl = fs.with_volume(|v| v.head());
        fs.removexattr(d.ino, DEFAULT_ACL).unwrap();
        assert_eq!(create(b"e"), 0o644);
        // A rewind brings the ACL back.
        fs.rewind(&crate::volume::Target::Seq(with_acl.seq))
            .unwrap();
        assert_eq!(create(b"f"), 0o640);
        fs.removexattr(d.ino, DEFAULT_ACL).unwrap();
        assert_eq!(create(b"g"), 0o644);
        // A change made on the volume directly.
        let acl = default_acl();
        fs.with_volume(|v| {
            v.commit(Op::SetXattr {
                node: Node::Path(RelPath::new("d").unwrap()),
                name: DEFAULT_ACL.to_vec(),
                value: acl,
            })
        })
        .unwrap();
        assert_eq!(create(b"h"), 0o640);
        check_replays(dir.path(), fs, &vol_path);
    }

    #[test]
    fn a_link_the_kernel_never_looked_up_still_gets_the_writes_journaled() {
        let (dir, fs, vol_path) = fs();
        let (f, fh) = fs.create(ROOT_INO, b"a", 0o644, 0, 2, ME).unwrap();
        // A second name made behind the inode table's back, as if the kernel
        // had never looked it up: the inode only knows "a".
        let b = RelPath::new("b").unwrap();
        fs.with_volume(|v| {
            v.commit(Op::Link {
                from: RelPath::new("a").unwrap(),
                to: b,
            })
        })
        .unwrap();
        fs.unlink(ROOT_INO, b"a").unwrap();
        let head = fs.with_volume(|v| v.head());
        fs.write(f.ino, fh, 0, b"still in the tree", false).unwrap();
        assert_eq!(
            fs.with_volume(|v| v.head()).seq,
            head.seq + 1,
            "the write was not journaled"
        );
        assert_eq!(
            std::fs::read(vol_path.join("tree/b")).unwrap(),
            b"still in the tree"
        );
        fs.setattr(f.ino, None, None, None, Some(5), None, None)
            .unwrap();
        assert_eq!(std::fs::read(vol_path.join("tree/b")).unwrap(), b"still");
        fs.release(fh);
        check_replays(dir.path(), fs, &vol_path);
    }

    #[test]
    fn exchange_and_setgid_directories() {
        let (dir, fs, vol_path) = fs();
        let a = fs
            .mkdir(ROOT_INO, b"a", 0o2775, 0, Caller { uid: 0, gid: 50 })
            .unwrap();
        let (f, fh) = fs
            .create(a.ino, b"f", 0o600, 0, 2, Caller { uid: 7, gid: 8 })
            .unwrap();
        assert_eq!(f.gid, 50, "a setgid directory gives its group");
        let sub = fs.mkdir(a.ino, b"sub", 0o755, 0, ME).unwrap();
        assert_eq!(
            sub.perm & 0o2000,
            0o2000,
            "and its setgid bit to subdirectories"
        );
        let (g, gh) = fs.create(ROOT_INO, b"g", 0o644, 0, 2, ME).unwrap();
        fs.rename(a.ino, b"f", ROOT_INO, b"g", RenameMode::Exchange)
            .unwrap();
        fs.write(f.ino, fh, 0, b"was f", false).unwrap();
        fs.write(g.ino, gh, 0, b"was g", false).unwrap();
        assert_eq!(std::fs::read(vol_path.join("tree/g")).unwrap(), b"was f");
        assert_eq!(std::fs::read(vol_path.join("tree/a/f")).unwrap(), b"was g");
        fs.setattr(
            f.ino,
            Some(0o640),
            Some(3),
            None,
            Some(2),
            None,
            Some(Timestamp::new(5, 6)),
        )
        .unwrap();
        let attr = fs.getattr(f.ino).unwrap();
        assert_eq!(
            (attr.perm, attr.uid, attr.size, attr.mtime),
            (0o640, 3, 2, Timestamp::new(5, 6))
        );
        fs.fallocate(f.ino, 0, 8192, 0x03).unwrap();
        assert_eq!(fs.copy_range(g.ino, 0, f.ino, 0, 100).unwrap(), 5);
        check_replays(dir.path(), fs, &vol_path);
    }
}
