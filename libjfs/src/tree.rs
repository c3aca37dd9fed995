//! Applying one operation to a directory tree, safely.
//!
//! [`Tree`] owns a directory and performs [`Op`]s on it. Every path is
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to
//! the root, and the last component is only ever used with no-follow `*at`
//! calls, so no record can reach outside the tree or through a symlink.
//! Files are opened for writing only after `fstat` shows they are regular
//! files, so no record can write to a device node.
//!
//! Each operation also has a *redo* form, used once after a crash for the
//! record that was in flight: it completes the operation from whatever state
//! a partial or complete earlier attempt left, and does not apply it twice.
//!
//! The directory a path's last component lives in is resolved once and its
//! handle kept (see `DirCache`) until an operation that could move or
//! remove a directory runs, or any operation fails. So every change to the
//! tree's directories must go through [`Tree::apply`].
//!
//! This module knows nothing of positions or journals.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{
    self as rfs, AtFlags, FallocateFlags, FileType, Gid, Mode, OFlags, RenameFlags, ResolveFlags,
    Timespec, Timestamps, Uid, XattrFlags, UTIME_OMIT,
};
use rustix::io::{Errno, ReadWriteFlags};

use crate::path::{Node, RelPath};
use crate::record::{
    BeforeImage, FallocateMode, NewNode, Op, Record, RenameMode, SetMtime, SpecialKind, Timestamp,
};

/// Why an operation did not apply.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The record is refused and nothing was changed: it would escape the tree,
    /// go through a symlink, or it does not fit the tree (the replica diverged).
    /// `errno` is what a local filesystem answers in the same case.
    #[error("{reason}")]
    Refused { errno: Errno, reason: String },
    /// The system could not do the operation and nothing was changed: no
    /// room left, a file larger than this filesystem holds, a mode it does
    /// not support. The record itself is sound: a replica waits and tries
    /// again, a master takes the record back and answers `errno`.
    #[error("{context}: {}", io::Error::from(*.errno))]
    Unchanged { errno: Errno, context: String },
    /// The system failed part-way; the operation may be partly applied and is
    /// completed by its redo form.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl TreeError {
    /// True when the tree is as it was before the operation.
    pub fn changed_nothing(&self) -> bool {
        matches!(
            self,
            TreeError::Refused { .. } | TreeError::Unchanged { .. }
        )
    }
}

type Result<T> = std::result::Result<T, TreeError>;

/// Failures of a single system call that leave the tree as it was: the
/// filesystem is out of room or does not hold or support what was asked.
const CHANGED_NOTHING: [Errno; 9] = [
    Errno::NOSPC,
    Errno::DQUOT,
    Errno::FBIG,
    Errno::MLINK,
    Errno::NAMETOOLONG,
    Errno::TOOBIG,
    Errno::RANGE,
    Errno::OPNOTSUPP,
    // Only from link and rename: another filesystem is mounted in the tree.
    Errno::XDEV,
];

/// Out of room: a write may have got part way before it saw that.
const NO_ROOM: [Errno; 2] = [Errno::NOSPC, Errno::DQUOT];

/// Files ending below this are not checked against the filesystem's
/// largest file: every filesystem Linux writes to holds 2 GiB.
const CHECK_SIZE_ABOVE: u64 = 1 << 31;

/// Writes of at least this many bytes go through the page cache without
/// staying in it (`RWF_DONTCACHE`, Linux 6.14 and later, where the
/// filesystem has it): the kernel starts writing them back at once and
/// frees their pages when that is done, for the next large write to
/// reuse instead of fresh ones. A large write is a file being copied or
/// written out whole (`cp` and `cat` write 128 KiB at a time), whose tree
/// copy nobody reads back soon: the mount keeps its own cache of what is
/// read through it, and the journal is what makes the data durable.
/// Filling fresh page cache for it, and writing that back later, was the
/// largest part of the master's work for such a write
/// (docs/PERFORMANCE.md). Smaller writes, such as a database's pages,
/// stay cached as before.
const UNCACHED_WRITE_BYTES: usize = 128 << 10;

/// `RWF_DONTCACHE`, which rustix does not name yet.
const RWF_DONTCACHE: ReadWriteFlags = ReadWriteFlags::from_bits_retain(libc::RWF_DONTCACHE as u32);

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// A directory that operations are applied to.
pub struct Tree {
    path: PathBuf,
    root: OwnedFd,
    /// Where removed nodes go when their record names an attic entry
    /// (`BeforeImage::Attic`); without one they are freed.
    attic: Option<OwnedFd>,
    dirs: Mutex<DirCache>,
    /// The file the last record created or wrote, still open for writing,
    /// and its path: a write that follows (a create, then its data) takes
    /// it instead of walking the path and opening the file again.
    ///
    /// Dropped by every record that could take the path from the file or
    /// change its mode ([`reach`]), with the directory cache, and
    /// by [`Tree::sync`]. Never kept for a file with an execute bit: the
    /// kernel refuses to run a file open for writing (`ETXTBSY`), and the
    /// tree is there to be used with plain tools.
    last_file: Mutex<Option<(RelPath, OwnedFd)>>,
    /// Set once the tree's filesystem (or the kernel) refused an uncached
    /// write ([`UNCACHED_WRITE_BYTES`]): every write is cached from then on.
    cached_only: AtomicBool,
}

/// Handles (`O_PATH`) of directories below the root, by path, as
/// `openat2` resolved them. A handle stays right while no directory is
/// moved or removed, so the cache is dropped whole by every operation that
/// could do so and by every failed one ([`Tree::apply`]).
#[derive(Default)]
struct DirCache {
    dirs: HashMap<RelPath, Arc<OwnedFd>>,
    /// Counts the drops: a handle resolved before a drop is not kept after it.
    generation: u64,
}

/// More cached directories than this and the cache starts again.
const MAX_CACHED_DIRS: usize = 256;

/// A directory handle and a name in it: where a node lives.
struct At<'a> {
    dir: Dir<'a>,
    name: CString,
}

enum Dir<'a> {
    Root(BorrowedFd<'a>),
    Cached(Arc<OwnedFd>),
}

impl Dir<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Dir::Root(fd) => *fd,
            Dir::Cached(fd) => fd.as_fd(),
        }
    }
}

fn ts(t: Timestamp) -> Timespec {
    Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec as _,
    }
}

const OMIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: UTIME_OMIT,
};

impl Tree {
    /// Opens the directory `path` as a tree root.
    pub fn open(path: &Path) -> io::Result<Tree> {
        let root = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("open tree {}: {e}", path.display()),
            )
        })?;
        Ok(Tree {
            path: path.to_owned(),
            root,
            attic: None,
            dirs: Mutex::new(DirCache::default()),
            last_file: Mutex::new(None),
            cached_only: AtomicBool::new(false),
        })
    }

    /// Opens a tree whose removed nodes are kept in the directory `attic`
    /// (on the same filesystem) when their records ask for it.
    pub fn open_with_attic(path: &Path, attic: &Path) -> io::Result<Tree> {
        let mut tree = Tree::open(path)?;
        let fd = rfs::open(
            attic,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("open attic {}: {e}", attic.display()),
            )
        })?;
        tree.attic = Some(fd);
        Ok(tree)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the whole filesystem holding the tree to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        // A settled tree holds no file open for writing.
        self.forget_last_file();
        let dir = rfs::open(
            &self.path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(rfs::syncfs(dir)?)
    }

    fn refused(what: &Node, e: Errno) -> TreeError {
        let why = match e {
            Errno::LOOP => "a symlink lies on the way".to_string(),
            Errno::XDEV => "the path leads outside the tree".to_string(),
            Errno::NOENT => "a directory on the way does not exist".to_string(),
            Errno::NOTDIR => "a component on the way is not a directory".to_string(),
            e => format!("cannot resolve the path: {e}"),
        };
        refused(e, format!("{what}: {why}"))
    }

    /// Resolves the directory holding `path`, refusing symlinks and escapes.
    fn at(&self, path: &RelPath) -> Result<At<'_>> {
        let name = CString::new(path.file_name()).expect("validated paths hold no NUL");
        let dir = match path.parent() {
            None => Dir::Root(self.root.as_fd()),
            Some(parent) => Dir::Cached(
                self.dir(parent)
                    .map_err(|e| Tree::refused(&Node::Path(path.clone()), e))?,
            ),
        };
        Ok(At { dir, name })
    }

    /// The directory at `path`, from the cache or resolved (and then cached).
    fn dir(&self, path: RelPath) -> std::result::Result<Arc<OwnedFd>, Errno> {
        let generation = {
            let cache = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(fd) = cache.dirs.get(&path) {
                return Ok(fd.clone());
            }
            cache.generation
        };
        let fd = Arc::new(rfs::openat2(
            &self.root,
            path.as_bytes(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?);
        let mut cache = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        // Resolved before a drop: it may name another directory by now.
        if cache.generation == generation {
            if cache.dirs.len() >= MAX_CACHED_DIRS {
                cache.dirs.clear();
            }
            cache.dirs.insert(path, fd.clone());
        }
        Ok(fd)
    }

    /// Drops every cached directory handle, and the last file: paths are
    /// resolved again.
    fn forget_dirs(&self) {
        let mut cache = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        cache.dirs.clear();
        cache.generation += 1;
        self.forget_last_file();
    }

    fn forget_last_file(&self) {
        let last = self
            .last_file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(last);
    }

    /// The last file, when it is `path`'s (see [`Tree::last_file`]).
    fn take_last_file(&self, path: &RelPath) -> Option<OwnedFd> {
        let mut last = self.last_file.lock().unwrap_or_else(|p| p.into_inner());
        match last.take() {
            Some((p, fd)) if p == *path => Some(fd),
            other => {
                *last = other;
                None
            }
        }
    }

    fn node_at(&self, node: &Node) -> Result<At<'_>> {
        match node {
            Node::Root => Ok(At {
                dir: Dir::Root(self.root.as_fd()),
                name: c".".to_owned(),
            }),
            Node::Path(p) => self.at(p),
        }
    }

    /// Opens `at` with `O_PATH | O_NOFOLLOW` and returns it with its type.
    fn open_path(at: &At<'_>) -> std::result::Result<(OwnedFd, rfs::Stat), Errno> {
        let fd = rfs::openat(
            at.dir.fd(),
            at.name.as_c_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rfs::fstat(&fd)?;
        Ok((fd, st))
    }

    /// Opens a regular file for I/O. The node is pinned with `O_PATH` and
    /// checked before it is opened for real, so a device or fifo is never opened.
    fn open_regular(&self, path: &RelPath, flags: OFlags) -> Result<OwnedFd> {
        self.open_regular_stat(path, flags).map(|(fd, _)| fd)
    }

    /// [`Tree::open_regular`], with the file's status before anything changes.
    fn open_regular_stat(&self, path: &RelPath, flags: OFlags) -> Result<(OwnedFd, rfs::Stat)> {
        if flags == OFlags::WRONLY {
            if let Some(fd) = self.take_last_file(path) {
                let st = rfs::fstat(&fd).map_err(|e| io_err(format!("stat {path}"), e))?;
                return Ok((fd, st));
            }
        }
        let at = self.at(path)?;
        let (pinned, st) = Tree::open_path(&at).map_err(|e| match e {
            Errno::NOENT => refused(Errno::NOENT, format!("{path}: does not exist")),
            e => refused(e, format!("{path}: {e}")),
        })?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(refused(Errno::INVAL, format!("{path}: not a regular file")));
        }
        let fd = rfs::open(
            proc_fd(&pinned),
            flags | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| io_err(format!("open {path}"), e))?;
        Ok((fd, st))
    }

    /// `pwrite`, kept out of the page cache with `uncached` (see
    /// [`UNCACHED_WRITE_BYTES`]) where the tree's filesystem allows it.
    fn pwrite(
        &self,
        fd: &OwnedFd,
        buf: &[u8],
        offset: u64,
        uncached: bool,
    ) -> std::result::Result<usize, Errno> {
        if uncached && !self.cached_only.load(Ordering::Relaxed) {
            match rustix::io::pwritev2(fd, &[io::IoSlice::new(buf)], offset, RWF_DONTCACHE) {
                // Refused before anything was written: a kernel before
                // 6.14, or a filesystem without it (tmpfs).
                Err(Errno::OPNOTSUPP) => self.cached_only.store(true, Ordering::Relaxed),
                r => return r,
            }
        }
        rustix::io::pwrite(fd, buf, offset)
    }

    /// A value that lets the redo form tell whether the operation already
    /// happened, taken before the operation (see [`Tree::apply`]).
    pub fn fingerprint(&self, op: &Op) -> u64 {
        match op {
            // An exchange applied twice is undone; the inode that was at `from`
            // tells whether it happened.
            Op::Rename {
                from,
                mode: RenameMode::Exchange,
                ..
            } => self
                .at(from)
                .ok()
                .and_then(|at| Tree::open_path(&at).ok())
                .map_or(0, |(_, st)| st.st_ino),
            _ => 0,
        }
    }

    /// Applies `record`: its operation, then its mtimes.
    ///
    /// With `redo = Some(fingerprint)` the operation may already have happened,
    /// wholly or in part; it is completed without being done twice.
    pub fn apply(&self, record: &Record, redo: Option<u64>) -> Result<()> {
        let r = self.apply_uncached(record, redo);
        if r.is_err() {
            // Possibly half done: what a path names is no longer known.
            self.forget_dirs();
        }
        r
    }

    fn apply_uncached(&self, record: &Record, redo: Option<u64>) -> Result<()> {
        let mut written = None;
        let attic = record.before.iter().find_map(|b| match b {
            BeforeImage::Attic { id } => Some(*id),
            _ => None,
        });
        let reach = reach(&record.op);
        if reach != Reach::Contents {
            self.forget_last_file();
        }
        let r = match self.apply_op(&record.op, attic, redo, &mut written) {
            Err(e) if redo.is_none() => self.undo_partial_write(record, e),
            r => r,
        };
        if reach == Reach::DirNames {
            // Before the mtimes, which are set by path.
            self.forget_dirs();
        }
        r?;
        for m in &record.mtimes {
            match &written {
                // The file just written is still open: no need to resolve its path again.
                Some(f) if m.node.path() == Some(f.path) => {
                    let times = Timestamps {
                        last_access: OMIT,
                        last_modification: ts(m.mtime),
                    };
                    rfs::futimens(&f.fd, &times)
                        .map_err(|e| io_err(format!("set mtime of {}", f.path), e))?;
                }
                _ => self.set_mtime(m)?,
            }
        }
        if let Some(f) = written.filter(|f| f.mode & 0o111 == 0) {
            *self.last_file.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((f.path.clone(), f.fd));
        }
        Ok(())
    }

    fn set_mtime(&self, m: &SetMtime) -> Result<()> {
        let at = self.node_at(&m.node)?;
        let times = Timestamps {
            last_access: OMIT,
            last_modification: ts(m.mtime),
        };
        rfs::utimensat(
            at.dir.fd(),
            at.name.as_c_str(),
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(format!("set mtime of {}", m.node), e))
    }

    /// A write or copy that ran out of room part way over a file's old
    /// bytes (`failed`) is undone with the record's own undo
    /// ([`crate::history::inverse`]): the grown end cut, the old holes
    /// punched again, the old bytes written back, the old mtime. It then
    /// changed nothing, and a master takes it back and answers ENOSPC
    /// where a half-done write would leave its volume to be replayed.
    /// Without before-images (history off), or when the undo fails in
    /// turn, it stays half done. Any other failure is returned as it is.
    fn undo_partial_write(&self, record: &Record, failed: TreeError) -> Result<()> {
        let errno = match &failed {
            TreeError::Io { source, .. } => source.raw_os_error().map(Errno::from_raw_os_error),
            _ => None,
        };
        let (Some(errno), Op::Write { .. } | Op::CopyRange { .. }) = (errno, &record.op) else {
            return Err(failed);
        };
        if !NO_ROOM.contains(&errno) {
            return Err(failed);
        }
        let Ok(steps) = crate::history::inverse(record) else {
            return Err(failed);
        };
        for step in &steps {
            // Steps carry no before-images: one that fails is not undone in turn.
            if self
                .apply_uncached(&step.to_record(record.seq), None)
                .is_err()
            {
                return Err(failed);
            }
        }
        Err(unchanged(errno, failed.to_string()))
    }

    /// Applies `op`; an op that writes a file leaves it open in `written`.
    fn apply_op<'o>(
        &self,
        op: &'o Op,
        attic: Option<u64>,
        redo: Option<u64>,
        written: &mut Option<Written<'o>>,
    ) -> Result<()> {
        let redo_mode = redo.is_some();
        match op {
            Op::Create { path, node } => {
                let at = self.at(path)?;
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = match rfs::openat(
                    at.dir.fd(),
                    at.name.as_c_str(),
                    flags,
                    Mode::from_raw_mode(0o600),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::EXIST) if redo_mode => {
                        let fd = self.open_regular(path, OFlags::WRONLY)?;
                        rfs::ftruncate(&fd, 0)
                            .map_err(|e| io_err(format!("truncate {path}"), e))?;
                        fd
                    }
                    Err(e) => return Err(exists_or_io(path, "create", e)),
                };
                set_owner_mode(&fd, node, path)?;
                *written = Some(Written {
                    path,
                    fd,
                    mode: node.mode,
                });
                Ok(())
            }
            Op::Mkdir { path, node } => {
                let at = self.at(path)?;
                match rfs::mkdirat(at.dir.fd(), at.name.as_c_str(), Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) if redo_mode => {}
                    Err(e) => return Err(exists_or_io(path, "mkdir", e)),
                }
                let fd = rfs::openat(
                    at.dir.fd(),
                    at.name.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_err(format!("open {path}"), e))?;
                set_owner_mode(&fd, node, path)
            }
            Op::Mknod { path, kind, node } => {
                let at = self.at(path)?;
                let (ft, dev) = match kind {
                    SpecialKind::Fifo => (FileType::Fifo, 0),
                    SpecialKind::Socket => (FileType::Socket, 0),
                    SpecialKind::CharDevice { rdev } => (FileType::CharacterDevice, *rdev),
                    SpecialKind::BlockDevice { rdev } => (FileType::BlockDevice, *rdev),
                };
                match rfs::mknodat(
                    at.dir.fd(),
                    at.name.as_c_str(),
                    ft,
                    Mode::from_raw_mode(0o600),
                    dev,
                ) {
                    Ok(()) => {}
                    Err(Errno::EXIST) if redo_mode => {}
                    Err(e) => return Err(exists_or_io(path, "mknod", e)),
                }
                let (pinned, st) =
                    Tree::open_path(&at).map_err(|e| io_err(format!("open {path}"), e))?;
                if FileType::from_raw_mode(st.st_mode) != ft {
                    return Err(refused(
                        Errno::EXIST,
                        format!("{path}: exists with another type"),
                    ));
                }
                set_owner_mode_pinned(&pinned, node, path)
            }
            Op::Symlink {
                path,
                target,
                uid,
                gid,
            } => {
                let at = self.at(path)?;
                match rfs::symlinkat(target.as_slice(), at.dir.fd(), at.name.as_c_str()) {
                    Ok(()) => {}
                    Err(Errno::EXIST) if redo_mode => {
                        let old = rfs::readlinkat(at.dir.fd(), at.name.as_c_str(), Vec::new())
                            .map_err(|e| io_err(format!("readlink {path}"), e))?;
                        if old.as_bytes() != target.as_slice() {
                            return Err(refused(
                                Errno::EXIST,
                                format!("{path}: exists with another target"),
                            ));
                        }
                    }
                    Err(e) => return Err(exists_or_io(path, "symlink", e)),
                }
                rfs::chownat(
                    at.dir.fd(),
                    at.name.as_c_str(),
                    Some(Uid::from_raw(*uid)),
                    Some(Gid::from_raw(*gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_err(format!("chown {path}"), e))
            }
            Op::Link { from, to } => {
                let src = self.at(from)?;
                let dst = self.at(to)?;
                match rfs::linkat(
                    src.dir.fd(),
                    src.name.as_c_str(),
                    dst.dir.fd(),
                    dst.name.as_c_str(),
                    AtFlags::empty(),
                ) {
                    Ok(()) => Ok(()),
                    Err(Errno::EXIST) if redo_mode => {
                        let a = Tree::open_path(&src)
                            .map_err(|e| io_err(format!("stat {from}"), e))?
                            .1;
                        let b = Tree::open_path(&dst)
                            .map_err(|e| io_err(format!("stat {to}"), e))?
                            .1;
                        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) {
                            Ok(())
                        } else {
                            Err(refused(
                                Errno::EXIST,
                                format!("{to}: exists and is not a link of {from}"),
                            ))
                        }
                    }
                    Err(e) => Err(missing_exists_or_io(from, "link", e)),
                }
            }
            Op::Unlink { path } | Op::Rmdir { path } if attic.is_some() && self.attic.is_some() => {
                let at = self.at(path)?;
                let dir = matches!(op, Op::Rmdir { .. });
                let (_, st) = match Tree::open_path(&at) {
                    Ok(found) => found,
                    Err(Errno::NOENT) if redo_mode => return Ok(()),
                    Err(e) => return Err(missing_exists_or_io(path, op.name(), e)),
                };
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if dir != is_dir {
                    let e = if dir { Errno::NOTDIR } else { Errno::ISDIR };
                    return Err(missing_exists_or_io(path, op.name(), e));
                }
                if dir && !self.dir_is_empty(&at)? {
                    return Err(missing_exists_or_io(path, op.name(), Errno::NOTEMPTY));
                }
                self.to_attic(&at, attic.unwrap_or_default(), path, redo_mode)
            }
            Op::Unlink { path } | Op::Rmdir { path } => {
                let at = self.at(path)?;
                let flags = if matches!(op, Op::Rmdir { .. }) {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                match rfs::unlinkat(at.dir.fd(), at.name.as_c_str(), flags) {
                    Ok(()) => Ok(()),
                    Err(Errno::NOENT) if redo_mode => Ok(()),
                    Err(e) => Err(missing_exists_or_io(path, op.name(), e)),
                }
            }
            Op::Rename { from, to, mode } => {
                let src = self.at(from)?;
                let dst = self.at(to)?;
                // A directory cannot move inside itself; the kernel's EINVAL
                // would read as an I/O error. Paths hold no symlinks and no
                // `..`, so a prefix is an ancestor.
                let inside = |a: &RelPath, b: &RelPath| {
                    (a.as_bytes().strip_prefix(b.as_bytes()))
                        .is_some_and(|rest| rest.starts_with(b"/"))
                };
                if inside(to, from) || (*mode == RenameMode::Exchange && inside(from, to)) {
                    return Err(refused(
                        Errno::INVAL,
                        format!("{to}: {from} cannot move inside itself (rename)"),
                    ));
                }
                if let (RenameMode::Exchange, Some(fp)) = (mode, redo) {
                    let now_at_to = Tree::open_path(&dst).map(|(_, st)| st.st_ino).ok();
                    if fp != 0 && now_at_to == Some(fp) {
                        return Ok(());
                    }
                }
                let kept = match (mode, attic, &self.attic) {
                    (RenameMode::Replace, Some(id), Some(_)) => {
                        self.keep_replaced(&src, &dst, id, from, to, redo_mode)?
                    }
                    _ => None,
                };
                let flags = match mode {
                    RenameMode::Replace => RenameFlags::empty(),
                    RenameMode::NoReplace => RenameFlags::NOREPLACE,
                    RenameMode::Exchange => RenameFlags::EXCHANGE,
                };
                let renamed = match rfs::renameat_with(
                    src.dir.fd(),
                    src.name.as_c_str(),
                    dst.dir.fd(),
                    dst.name.as_c_str(),
                    flags,
                ) {
                    Ok(()) => Ok(()),
                    Err(Errno::NOENT) if redo_mode && *mode != RenameMode::Exchange => {
                        // `from` is gone: the rename happened, provided `to` exists.
                        Tree::open_path(&dst)
                            .map(|_| ())
                            .map_err(|e| missing_exists_or_io(to, "rename", e))
                    }
                    // Flags this filesystem does not take.
                    Err(Errno::INVAL) => Err(unchanged(Errno::INVAL, format!("rename {from}"))),
                    Err(e) => Err(missing_exists_or_io(from, "rename", e)),
                };
                match (renamed, kept) {
                    // A refusal changes nothing: the attic gives the node back.
                    (Err(e), Some(kept)) if e.changed_nothing() && !redo_mode => {
                        self.take_back(kept, &dst, to)?;
                        Err(e)
                    }
                    (renamed, _) => renamed,
                }
            }
            Op::Write { path, offset, data } => {
                let (fd, before) = self.open_regular_stat(path, OFlags::WRONLY)?;
                let what = || format!("write {path}");
                fits(&fd, offset.checked_add(data.len() as u64), what)?;
                let uncached = data.len() >= UNCACHED_WRITE_BYTES;
                let (mut off, mut left) = (*offset, data.as_slice());
                while !left.is_empty() {
                    match self.pwrite(&fd, left, off, uncached) {
                        Ok(0) => return Err(io_err(what(), Errno::IO)),
                        Ok(n) => {
                            left = &left[n..];
                            off += n as u64;
                        }
                        Err(Errno::INTR) => {}
                        Err(e) => return Err(put_back(&fd, &before, *offset, off, e, what)),
                    }
                }
                *written = Some(Written {
                    path,
                    fd,
                    mode: before.st_mode,
                });
                Ok(())
            }
            Op::Truncate { path, size } => {
                let (fd, before) = self.open_regular_stat(path, OFlags::WRONLY)?;
                let what = || format!("truncate {path}");
                fits(&fd, Some(*size), what)?;
                rfs::ftruncate(&fd, *size).map_err(|e| match e {
                    Errno::FBIG | Errno::INVAL => unchanged(e, what()),
                    // Growing a file only changes its size.
                    e if *size >= before.st_size as u64 => {
                        put_back(&fd, &before, *size, *size, e, what)
                    }
                    e => io_err(what(), e),
                })?;
                *written = Some(Written {
                    path,
                    fd,
                    mode: before.st_mode,
                });
                Ok(())
            }
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                let (fd, before) = self.open_regular_stat(path, OFlags::WRONLY)?;
                let what = || format!("fallocate {path}");
                fits(&fd, offset.checked_add(*len), what)?;
                let flags = match mode {
                    FallocateMode::Allocate => FallocateFlags::empty(),
                    FallocateMode::KeepSize => FallocateFlags::KEEP_SIZE,
                    FallocateMode::PunchHole => {
                        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE
                    }
                    FallocateMode::ZeroRange => FallocateFlags::ZERO_RANGE,
                    FallocateMode::ZeroRangeKeepSize => {
                        FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE
                    }
                };
                rfs::fallocate(&fd, flags, *offset, *len).map_err(|e| match e {
                    // Checked before anything is done.
                    Errno::OPNOTSUPP | Errno::INVAL | Errno::FBIG | Errno::NODEV => {
                        unchanged(e, what())
                    }
                    // Allocation changes no byte; a size that grew goes back.
                    e if matches!(mode, FallocateMode::Allocate | FallocateMode::KeepSize) => {
                        put_back(&fd, &before, *offset, *offset, e, what)
                    }
                    e => io_err(what(), e),
                })?;
                *written = Some(Written {
                    path,
                    fd,
                    mode: before.st_mode,
                });
                Ok(())
            }
            Op::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime,
            } => {
                let at = self.node_at(node)?;
                // The node is checked before anything changes: a refused mode
                // change must not leave a new owner behind.
                let chmod = match mode {
                    Some(mode) => {
                        let (pinned, st) = Tree::open_path(&at)
                            .map_err(|e| missing_exists_or_io_node(node, "chmod", e))?;
                        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                            return Err(refused(
                                Errno::OPNOTSUPP,
                                format!("{node}: cannot change the mode of a symlink"),
                            ));
                        }
                        Some((pinned, *mode))
                    }
                    None => None,
                };
                if uid.is_some() || gid.is_some() {
                    rfs::chownat(
                        at.dir.fd(),
                        at.name.as_c_str(),
                        uid.map(Uid::from_raw),
                        gid.map(Gid::from_raw),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| missing_exists_or_io_node(node, "chown", e))?;
                }
                if let Some((pinned, mode)) = chmod {
                    rfs::chmod(proc_fd(&pinned), Mode::from_raw_mode(mode))
                        .map_err(|e| io_err(format!("chmod {node}"), e))?;
                }
                if atime.is_some() || mtime.is_some() {
                    let times = Timestamps {
                        last_access: atime.map_or(OMIT, ts),
                        last_modification: mtime.map_or(OMIT, ts),
                    };
                    rfs::utimensat(
                        at.dir.fd(),
                        at.name.as_c_str(),
                        &times,
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| missing_exists_or_io_node(node, "utimens", e))?;
                }
                Ok(())
            }
            Op::SetXattr { node, name, value } => {
                let at = self.node_at(node)?;
                let name_c =
                    CString::new(name.as_slice()).expect("validated xattr names hold no NUL");
                rfs::lsetxattr(proc_at(&at), name_c.as_c_str(), value, XattrFlags::empty())
                    .map_err(|e| missing_exists_or_io_node(node, "setxattr", e))
            }
            Op::RemoveXattr { node, name } => {
                let at = self.node_at(node)?;
                let name_c =
                    CString::new(name.as_slice()).expect("validated xattr names hold no NUL");
                match rfs::lremovexattr(proc_at(&at), name_c.as_c_str()) {
                    Ok(()) => Ok(()),
                    Err(Errno::NODATA) if redo_mode => Ok(()),
                    Err(Errno::NODATA) => {
                        Err(refused(Errno::NODATA, format!("{node}: has no such xattr")))
                    }
                    Err(e) => Err(missing_exists_or_io_node(node, "removexattr", e)),
                }
            }
            Op::CopyRange {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
            } => {
                let input = self.open_regular(src, OFlags::RDONLY)?;
                let (output, before) = self.open_regular_stat(dst, OFlags::WRONLY)?;
                let what = || format!("copy {src} to {dst}");
                fits(&output, dst_offset.checked_add(*len), what)?;
                // A short source is refused before anything is copied: the
                // kernel would copy what there is, and stamp the target's
                // mtime, before the end of the source showed.
                let size = rfs::fstat(&input)
                    .map_err(|e| io_err(format!("stat {src}"), e))?
                    .st_size as u64;
                if src_offset.checked_add(*len).is_none_or(|end| end > size) {
                    return Err(refused(
                        Errno::INVAL,
                        format!("{src}: shorter than the copied range"),
                    ));
                }
                let (mut off_in, mut off_out, mut left) = (*src_offset, *dst_offset, *len);
                while left > 0 {
                    let chunk = left.min(1 << 30) as usize;
                    let n = rfs::copy_file_range(
                        &input,
                        Some(&mut off_in),
                        &output,
                        Some(&mut off_out),
                        chunk,
                    )
                    .map_err(|e| match e {
                        // Refused before anything was copied (two links of one
                        // inode with overlapping ranges): nothing changed.
                        Errno::INVAL if left == *len => {
                            refused(e, format!("copy {src} to {dst}: {e}"))
                        }
                        e => put_back(&output, &before, *dst_offset, off_out, e, what),
                    })?;
                    if n == 0 {
                        // The source shrank during the copy: part of it may
                        // be in the target already, so this is no refusal.
                        return Err(io_err(
                            format!("copy {src} to {dst}: the source ended early"),
                            Errno::INVAL,
                        ));
                    }
                    left -= n as u64;
                }
                *written = Some(Written {
                    path: dst,
                    fd: output,
                    mode: before.st_mode,
                });
                Ok(())
            }
            Op::Marker(_) => Ok(()),
            Op::Restore { id, path } => {
                let dst = self.at(path)?;
                let attic = self.attic_fd(path)?;
                let name = attic_name(*id);
                match rfs::renameat_with(
                    attic,
                    name.as_c_str(),
                    dst.dir.fd(),
                    dst.name.as_c_str(),
                    RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => Ok(()),
                    Err(Errno::NOENT) if redo_mode && Tree::open_path(&dst).is_ok() => Ok(()),
                    Err(Errno::NOENT) => Err(refused(
                        Errno::NOENT,
                        format!("{path}: attic entry {id} does not exist (restore)"),
                    )),
                    Err(e) => Err(missing_exists_or_io(path, "restore", e)),
                }
            }
        }
    }

    fn attic_fd(&self, path: &RelPath) -> Result<BorrowedFd<'_>> {
        self.attic.as_ref().map(|fd| fd.as_fd()).ok_or_else(|| {
            refused(
                Errno::NOENT,
                format!("{path}: this tree keeps no attic (restore)"),
            )
        })
    }

    /// Moves the node at `at` to attic entry `id`.
    fn to_attic(&self, at: &At<'_>, id: u64, path: &RelPath, redo_mode: bool) -> Result<()> {
        let attic = self.attic_fd(path)?;
        let name = attic_name(id);
        match rfs::renameat_with(
            at.dir.fd(),
            at.name.as_c_str(),
            attic,
            name.as_c_str(),
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) if redo_mode => Ok(()),
            Err(Errno::EXIST) => Err(refused(
                Errno::EXIST,
                format!("{path}: attic entry {id} already exists"),
            )),
            Err(e) => Err(missing_exists_or_io(path, "move to attic", e)),
        }
    }

    /// Keeps the node that a replacing rename of `src` to `dst` replaces as
    /// attic entry `id`: a non-directory gets a second name there (so the
    /// rename stays atomic), an empty directory moves there. What would make
    /// the rename fail is checked first; returns what was kept, for
    /// [`Tree::take_back`] should the rename fail all the same.
    ///
    /// In the redo form a missing `from` means the rename happened (after
    /// this step), and a missing `to` that an empty directory moved already.
    fn keep_replaced(
        &self,
        src: &At<'_>,
        dst: &At<'_>,
        id: u64,
        from: &RelPath,
        to: &RelPath,
        redo_mode: bool,
    ) -> Result<Option<Kept>> {
        let is_dir = |st: &rfs::Stat| FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        let src_dir = match Tree::open_path(src) {
            Ok((_, st)) => is_dir(&st),
            Err(Errno::NOENT) if redo_mode => return Ok(None),
            Err(e) => return Err(missing_exists_or_io(from, "rename", e)),
        };
        let dst_st = match Tree::open_path(dst) {
            Ok((_, st)) => st,
            Err(Errno::NOENT) if redo_mode => return Ok(None),
            Err(e) => return Err(missing_exists_or_io(to, "rename", e)),
        };
        match (src_dir, is_dir(&dst_st)) {
            (false, true) => Err(missing_exists_or_io(to, "rename", Errno::ISDIR)),
            (true, false) => Err(missing_exists_or_io(to, "rename", Errno::NOTDIR)),
            (true, true) => {
                if !self.dir_is_empty(dst)? {
                    return Err(missing_exists_or_io(to, "rename", Errno::NOTEMPTY));
                }
                // Moving the directory out and back would stamp its parent's
                // mtime: a refusal puts the one from before back.
                let parent = rfs::fstat(dst.dir.fd())
                    .map_err(|e| io_err(format!("stat the directory holding {to}"), e))?;
                self.to_attic(dst, id, to, redo_mode)?;
                Ok(Some(Kept::Moved {
                    id,
                    mtimes: [mtime_of(&parent), mtime_of(&dst_st)],
                }))
            }
            (false, false) => {
                self.link_to_attic(dst, id, to, redo_mode)?;
                Ok(Some(Kept::Linked(id)))
            }
        }
    }

    /// Undoes [`Tree::keep_replaced`] after the rename failed: the attic
    /// link goes, a directory moves back to `dst`.
    fn take_back(&self, kept: Kept, dst: &At<'_>, to: &RelPath) -> Result<()> {
        let attic = self.attic_fd(to)?;
        let taken = |id, e| io_err(format!("{to}: take back attic entry {id}"), e);
        match kept {
            Kept::Linked(id) => rfs::unlinkat(attic, attic_name(id).as_c_str(), AtFlags::empty())
                .map_err(|e| taken(id, e)),
            Kept::Moved {
                id,
                mtimes: [parent, moved],
            } => {
                rfs::renameat_with(
                    attic,
                    attic_name(id).as_c_str(),
                    dst.dir.fd(),
                    dst.name.as_c_str(),
                    RenameFlags::NOREPLACE,
                )
                .map_err(|e| taken(id, e))?;
                let times = |mtime| Timestamps {
                    last_access: OMIT,
                    last_modification: mtime,
                };
                let flags = AtFlags::SYMLINK_NOFOLLOW;
                rfs::utimensat(dst.dir.fd(), dst.name.as_c_str(), &times(moved), flags)
                    .and_then(|()| rfs::utimensat(dst.dir.fd(), c".", &times(parent), flags))
                    .map_err(|e| taken(id, e))
            }
        }
    }

    /// Gives the non-directory at `at` a second name, attic entry `id`.
    fn link_to_attic(&self, at: &At<'_>, id: u64, path: &RelPath, redo_mode: bool) -> Result<()> {
        let attic = self.attic_fd(path)?;
        let name = attic_name(id);
        match rfs::linkat(
            at.dir.fd(),
            at.name.as_c_str(),
            attic,
            name.as_c_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) if redo_mode => Ok(()),
            Err(Errno::EXIST) => Err(refused(
                Errno::EXIST,
                format!("{path}: attic entry {id} already exists"),
            )),
            Err(e) => Err(missing_exists_or_io(path, "link to attic", e)),
        }
    }

    fn dir_is_empty(&self, at: &At<'_>) -> Result<bool> {
        let fd = rfs::openat(
            at.dir.fd(),
            at.name.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open directory".into(), e))?;
        let mut dir = rfs::Dir::read_from(&fd).map_err(|e| io_err("read directory".into(), e))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| io_err("read directory".into(), e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    // ---- reading, for before-images ---------------------------------------------

    /// `lstat` of a node, `None` if it does not exist.
    pub(crate) fn lstat(&self, node: &Node) -> Result<Option<rfs::Stat>> {
        // One `statat` on the pinned directory: no descriptor for the node
        // itself (this runs before every journaled change).
        let at = self.node_at(node)?;
        match rfs::statat(at.dir.fd(), at.name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(missing_exists_or_io_node(node, "stat", e)),
        }
    }

    /// `lstat` of attic entry `id`, `None` if it does not exist (or there is no attic).
    pub(crate) fn attic_lstat(&self, id: u64) -> Result<Option<rfs::Stat>> {
        let Some(attic) = &self.attic else {
            return Ok(None);
        };
        match rfs::statat(attic, attic_name(id).as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err(format!("stat attic entry {id}"), e)),
        }
    }

    /// Opens an existing regular file for reading.
    pub(crate) fn open_file(&self, path: &RelPath) -> Result<std::fs::File> {
        Ok(self.open_regular(path, OFlags::RDONLY)?.into())
    }

    /// An xattr's value, `None` if the node lacks it.
    pub(crate) fn xattr(&self, node: &Node, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let at = self.node_at(node)?;
        let name_c = CString::new(name).expect("validated xattr names hold no NUL");
        let path = proc_at(&at);
        let mut buf = vec![0u8; crate::record::MAX_XATTR_VALUE];
        match rfs::lgetxattr(&path, name_c.as_c_str(), &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(Errno::NODATA) => Ok(None),
            Err(e) => Err(missing_exists_or_io_node(node, "getxattr", e)),
        }
    }
}

/// What applying an operation can change that the tree's cached handles
/// (the directory cache, the last file) rely on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Nothing they rely on: the operation adds names only where there
    /// were none (no directory was there, so none is cached), changes a
    /// file's contents, or does nothing to the tree (a marker).
    Contents,
    /// A node's mode (a setattr, an ACL), which may give a file an
    /// execute bit: the last file goes (see [`Tree::last_file`]).
    Modes,
    /// Which non-directory a name names: the last file goes. (`unlinkat`
    /// without `AT_REMOVEDIR` refuses a directory, and the move to the
    /// attic checks the type first.)
    FileNames,
    /// Which directory a path names, by moving or removing a directory or
    /// by bringing one back from the attic: both go.
    DirNames,
}

fn reach(op: &Op) -> Reach {
    match op {
        Op::Rename { .. } | Op::Rmdir { .. } | Op::Restore { .. } => Reach::DirNames,
        Op::Unlink { .. } => Reach::FileNames,
        Op::SetAttr { .. } | Op::SetXattr { .. } | Op::RemoveXattr { .. } => Reach::Modes,
        Op::Create { .. }
        | Op::Mkdir { .. }
        | Op::Mknod { .. }
        | Op::Symlink { .. }
        | Op::Link { .. }
        | Op::Write { .. }
        | Op::Truncate { .. }
        | Op::Fallocate { .. }
        | Op::CopyRange { .. }
        | Op::Marker(_) => Reach::Contents,
    }
}

/// A regular file an operation wrote, still open for writing, and its
/// mode when it was opened.
struct Written<'o> {
    path: &'o RelPath,
    fd: OwnedFd,
    mode: u32,
}

/// What a replacing rename put in the attic before renaming.
enum Kept {
    /// A second name for the replaced non-directory, attic entry `id`.
    Linked(u64),
    /// The replaced empty directory, moved to attic entry `id`, and the
    /// mtimes of its parent and of itself before the move.
    Moved { id: u64, mtimes: [Timespec; 2] },
}

fn mtime_of(st: &rfs::Stat) -> Timespec {
    Timespec {
        tv_sec: st.st_mtime as _,
        tv_nsec: st.st_mtime_nsec as _,
    }
}

/// The name of attic entry `id`.
fn attic_name(id: u64) -> CString {
    CString::new(id.to_string()).expect("digits hold no NUL")
}

/// `/proc/self/fd/N`: reopens a pinned node without resolving any path again.
fn proc_fd(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `/proc/self/fd/DIR/NAME`, for calls that only exist in path form (xattrs).
/// The directory is pinned and the name is a single component.
fn proc_at(at: &At<'_>) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", at.dir.fd().as_raw_fd()).into_bytes();
    p.extend_from_slice(at.name.as_bytes());
    PathBuf::from(std::ffi::OsStr::from_bytes(&p))
}

fn refused(errno: Errno, reason: String) -> TreeError {
    TreeError::Refused { errno, reason }
}

fn unchanged(errno: Errno, context: String) -> TreeError {
    TreeError::Unchanged { errno, context }
}

/// The failure of one system call that changes all or nothing.
fn failed(context: String, e: Errno) -> TreeError {
    if CHANGED_NOTHING.contains(&e) {
        unchanged(e, context)
    } else {
        io_err(context, e)
    }
}

/// Refuses, before anything changes, a file that would end past `end`
/// where this filesystem cannot hold it (a write that ran into the limit
/// would stop part way). Seeking there fails exactly when it is past the
/// filesystem's largest file.
fn fits(fd: &OwnedFd, end: Option<u64>, what: impl Fn() -> String) -> Result<()> {
    let too_big = || unchanged(Errno::FBIG, what());
    let end = end.filter(|&e| e <= i64::MAX as u64).ok_or_else(too_big)?;
    if end > CHECK_SIZE_ABOVE {
        rfs::seek(fd, rfs::SeekFrom::Start(end)).map_err(|_| too_big())?;
    }
    Ok(())
}

/// After a call that writes from `offset` failed with `e` having got to
/// `reached`: when it failed for want of room and wrote nothing over old
/// bytes, puts the old size and mtime back, so that nothing changed.
/// Anything else may be half done (see `Tree::undo_partial_write` for what undoes
/// a write over old bytes).
fn put_back(
    fd: &OwnedFd,
    before: &rfs::Stat,
    offset: u64,
    reached: u64,
    e: Errno,
    what: impl Fn() -> String,
) -> TreeError {
    let old_size = before.st_size as u64;
    if e == Errno::FBIG && reached == offset {
        return unchanged(e, what());
    }
    if !NO_ROOM.contains(&e) || (reached > offset && offset < old_size) {
        return io_err(what(), e);
    }
    let undo = || -> std::result::Result<(), Errno> {
        if rfs::fstat(fd)?.st_size as u64 > old_size {
            rfs::ftruncate(fd, old_size)?;
        }
        let mtime = Timespec {
            tv_sec: before.st_mtime as _,
            tv_nsec: before.st_mtime_nsec as _,
        };
        rfs::futimens(
            fd,
            &Timestamps {
                last_access: OMIT,
                last_modification: mtime,
            },
        )
    };
    match undo() {
        Ok(()) => unchanged(e, what()),
        Err(_) => io_err(what(), e),
    }
}

fn io_err(context: String, e: Errno) -> TreeError {
    TreeError::Io {
        context,
        source: e.into(),
    }
}

/// EEXIST means the tree does not match the journal: refuse, change nothing.
fn exists_or_io(path: &RelPath, what: &str, e: Errno) -> TreeError {
    match e {
        Errno::EXIST => refused(Errno::EXIST, format!("{path}: already exists ({what})")),
        e => failed(format!("{what} {path}"), e),
    }
}

/// Errors that show a mismatch between tree and record are refusals.
fn missing_exists_or_io(path: &RelPath, what: &str, e: Errno) -> TreeError {
    missing_exists_or_io_node(&Node::Path(path.clone()), what, e)
}

fn missing_exists_or_io_node(node: &Node, what: &str, e: Errno) -> TreeError {
    let why = match e {
        Errno::NOENT => "does not exist",
        Errno::EXIST => "already exists",
        Errno::NOTEMPTY => "directory is not empty",
        Errno::ISDIR => "is a directory",
        Errno::NOTDIR => "is not a directory",
        Errno::PERM => "operation not permitted on this node",
        Errno::LOOP => "a symlink lies on the way",
        _ => return failed(format!("{what} {node}"), e),
    };
    refused(e, format!("{node}: {why} ({what})"))
}

fn set_owner_mode(fd: &OwnedFd, node: &NewNode, path: &RelPath) -> Result<()> {
    // chown first: it clears setuid/setgid, which the chmod then sets.
    rfs::fchown(
        fd,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
    )
    .map_err(|e| io_err(format!("chown {path}"), e))?;
    rfs::fchmod(fd, Mode::from_raw_mode(node.mode)).map_err(|e| io_err(format!("chmod {path}"), e))
}

fn set_owner_mode_pinned(pinned: &OwnedFd, node: &NewNode, path: &RelPath) -> Result<()> {
    rfs::chownat(
        pinned,
        c"",
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        AtFlags::EMPTY_PATH,
    )
    .map_err(|e| io_err(format!("chown {path}"), e))?;
    rfs::chmod(proc_fd(pinned), Mode::from_raw_mode(node.mode))
        .map_err(|e| io_err(format!("chmod {path}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn apply(tree: &Tree, op: Op) -> Result<()> {
        apply_with(tree, op, vec![])
    }

    fn apply_with(tree: &Tree, op: Op, before: Vec<BeforeImage>) -> Result<()> {
        let record = Record {
            seq: 1,
            time: Timestamp::new(0, 0),
            op,
            mtimes: vec![],
            before,
        };
        tree.apply(&record, None)
    }

    const NODE: NewNode = NewNode {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };

    fn mkdir(tree: &Tree, path: &str) {
        apply(
            tree,
            Op::Mkdir {
                path: p(path),
                node: NODE,
            },
        )
        .unwrap();
    }

    fn create(tree: &Tree, path: &str) -> Result<()> {
        create_with_mode(tree, path, NODE.mode)
    }

    fn create_with_mode(tree: &Tree, path: &str, mode: u32) -> Result<()> {
        let node = NewNode { mode, ..NODE };
        apply(
            tree,
            Op::Create {
                path: p(path),
                node,
            },
        )
    }

    fn rename(tree: &Tree, from: &str, to: &str, mode: RenameMode) {
        let (from, to) = (p(from), p(to));
        apply(tree, Op::Rename { from, to, mode }).unwrap();
    }

    fn refused_with(r: Result<()>) -> Option<Errno> {
        match r {
            Err(TreeError::Refused { errno, .. }) => Some(errno),
            _ => None,
        }
    }

    fn cached(tree: &Tree) -> usize {
        tree.dirs.lock().unwrap().dirs.len()
    }

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        std::fs::create_dir(dir.path().join("attic")).unwrap();
        let tree =
            Tree::open_with_attic(&dir.path().join("tree"), &dir.path().join("attic")).unwrap();
        (dir, tree)
    }

    #[test]
    fn a_renamed_directory_is_found_at_its_new_path_only() {
        let (dir, tree) = tree();
        let root = dir.path().join("tree");
        mkdir(&tree, "a");
        mkdir(&tree, "a/b");
        create(&tree, "a/f").unwrap();
        create(&tree, "a/b/f").unwrap();
        assert_eq!(cached(&tree), 2, "a and a/b are cached");
        rename(&tree, "a", "c", RenameMode::Replace);
        assert_eq!(cached(&tree), 0);
        assert_eq!(refused_with(create(&tree, "a/g")), Some(Errno::NOENT));
        assert_eq!(refused_with(create(&tree, "a/b/g")), Some(Errno::NOENT));
        create(&tree, "c/g").unwrap();
        create(&tree, "c/b/g").unwrap();
        assert!(root.join("c/g").is_file() && root.join("c/b/g").is_file());
        // Moved into another directory, under a name that was cached before.
        mkdir(&tree, "a");
        create(&tree, "a/x").unwrap();
        rename(&tree, "c/b", "a/b", RenameMode::NoReplace);
        create(&tree, "a/b/h").unwrap();
        assert!(root.join("a/b/h").is_file());
        assert_eq!(refused_with(create(&tree, "c/b/h")), Some(Errno::NOENT));
    }

    #[test]
    fn a_directory_made_again_under_the_same_name_gets_the_new_nodes() {
        let (dir, tree) = tree();
        let root = dir.path().join("tree");
        // Without the attic the old directory is freed; with it, it lives on
        // in the attic, where a stale handle would still create files.
        for attic in [None, Some(7)] {
            mkdir(&tree, "d");
            create(&tree, "d/f").unwrap();
            let before = attic.map(|id| vec![BeforeImage::Attic { id }]);
            apply_with(&tree, Op::Unlink { path: p("d/f") }, vec![]).unwrap();
            let old = root.join("d").metadata().unwrap().ino();
            let rmdir = Op::Rmdir { path: p("d") };
            apply_with(&tree, rmdir, before.unwrap_or_default()).unwrap();
            mkdir(&tree, "d");
            if attic.is_some() {
                assert_ne!(root.join("d").metadata().unwrap().ino(), old);
            }
            create(&tree, "d/new").unwrap();
            assert!(root.join("d/new").is_file());
            if let Some(id) = attic {
                let kept = dir.path().join("attic").join(id.to_string());
                assert_eq!(std::fs::read_dir(kept).unwrap().count(), 0);
            }
            apply(&tree, Op::Unlink { path: p("d/new") }).unwrap();
            apply(&tree, Op::Rmdir { path: p("d") }).unwrap();
        }
    }

    #[test]
    fn exchanged_directories_swap_what_their_paths_name() {
        let (dir, tree) = tree();
        let root = dir.path().join("tree");
        mkdir(&tree, "p");
        mkdir(&tree, "q");
        create(&tree, "p/a").unwrap();
        create(&tree, "q/b").unwrap();
        rename(&tree, "p", "q", RenameMode::Exchange);
        create(&tree, "p/c").unwrap();
        create(&tree, "q/d").unwrap();
        assert!(root.join("p/b").is_file() && root.join("p/c").is_file());
        assert!(root.join("q/a").is_file() && root.join("q/d").is_file());
    }

    #[test]
    fn a_restored_directory_and_a_failed_operation_drop_the_cache() {
        let (dir, tree) = tree();
        let root = dir.path().join("tree");
        mkdir(&tree, "r");
        create(&tree, "r/f").unwrap();
        apply(&tree, Op::Unlink { path: p("r/f") }).unwrap();
        let to_attic = vec![BeforeImage::Attic { id: 3 }];
        apply_with(&tree, Op::Rmdir { path: p("r") }, to_attic).unwrap();
        mkdir(&tree, "s");
        create(&tree, "s/f").unwrap();
        assert_eq!(cached(&tree), 1);
        apply(
            &tree,
            Op::Restore {
                id: 3,
                path: p("r"),
            },
        )
        .unwrap();
        assert_eq!(cached(&tree), 0);
        create(&tree, "r/g").unwrap();
        assert!(root.join("r/g").is_file());
        assert_eq!(cached(&tree), 1);
        assert_eq!(refused_with(create(&tree, "r/g")), Some(Errno::EXIST));
        assert_eq!(cached(&tree), 0);
    }

    #[test]
    fn the_cache_stays_small() {
        let (dir, tree) = tree();
        for i in 0..MAX_CACHED_DIRS + 10 {
            mkdir(&tree, &format!("d{i}"));
            create(&tree, &format!("d{i}/f")).unwrap();
            assert!(cached(&tree) <= MAX_CACHED_DIRS);
        }
        assert!(dir.path().join("tree/d265/f").is_file());
    }

    fn unchanged_with(r: Result<()>) -> Option<Errno> {
        match r {
            Err(TreeError::Unchanged { errno, .. }) => Some(errno),
            _ => None,
        }
    }

    fn write(tree: &Tree, path: &str, offset: u64, data: Vec<u8>) -> Result<()> {
        let path = p(path);
        apply(tree, Op::Write { path, offset, data })
    }

    /// Whether the tree holds `path` open as its last file.
    fn last_file_is(tree: &Tree, path: &str) -> bool {
        tree.last_file
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(p, _)| p.as_bytes() == path.as_bytes())
    }

    #[test]
    fn large_writes_do_not_stay_in_the_page_cache() {
        // On the disk: tmpfs has no uncached writes (its page cache is
        // where the data lives).
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        let tree = Tree::open(&root).unwrap();
        create(&tree, "f").unwrap();
        let small = UNCACHED_WRITE_BYTES - 1;
        let large = 8 * UNCACHED_WRITE_BYTES + 5;
        write(&tree, "f", 0, vec![b'a'; small]).unwrap();
        write(&tree, "f", small as u64, vec![b'b'; large]).unwrap();
        write(&tree, "f", 10, vec![b'c'; 10]).unwrap();
        let file = std::fs::File::open(root.join("f")).unwrap();
        // Uncached pages go once they are written back.
        file.sync_all().unwrap();
        let page = 4096;
        let cached = |offset: usize, len: usize, want: usize| {
            let (offset, len) = (offset as u64, len as u64);
            crate::treeread::cached_pages_settle(&file, offset, len, want as u64, || {}).unwrap()
        };
        assert!(!tree.cached_only.load(Ordering::Relaxed), "refused here");
        let pages = small / page;
        assert_eq!(cached(0, pages * page, pages), pages as u64);
        let whole = small.div_ceil(page) * page..(small + large) / page * page;
        assert_eq!(
            cached(whole.start, whole.len(), 0),
            0,
            "{whole:?} is cached"
        );
        let mut want = vec![b'a'; small];
        want[10..20].fill(b'c');
        want.extend(vec![b'b'; large]);
        assert!(std::fs::read(root.join("f")).unwrap() == want);
    }

    #[test]
    fn the_last_file_is_written_only_while_its_path_still_names_it() {
        let (_dir, tree) = tree();
        let root = tree.path().to_owned();
        let read = |name: &str| std::fs::read(root.join(name)).unwrap();

        create_with_mode(&tree, "a", 0o644).unwrap();
        assert!(last_file_is(&tree, "a"), "a create keeps its file");
        write(&tree, "a", 0, b"one".to_vec()).unwrap();
        assert!(last_file_is(&tree, "a"), "so does a write");
        // Moved away: the old name names nothing, the file keeps its bytes.
        rename(&tree, "a", "b", RenameMode::Replace);
        assert!(!last_file_is(&tree, "a"));
        let r = write(&tree, "a", 0, b"two".to_vec());
        assert_eq!(refused_with(r), Some(Errno::NOENT));
        assert_eq!(read("b"), b"one");

        // Exchanged: a write goes to the file the name names now.
        create_with_mode(&tree, "c", 0o644).unwrap();
        write(&tree, "c", 0, b"ccc".to_vec()).unwrap();
        rename(&tree, "c", "b", RenameMode::Exchange);
        write(&tree, "c", 0, b"x".to_vec()).unwrap();
        assert_eq!((read("b"), read("c")), (b"ccc".to_vec(), b"xne".to_vec()));

        // Removed: a write to the name is refused and changes nothing.
        create_with_mode(&tree, "d", 0o644).unwrap();
        apply(&tree, Op::Unlink { path: p("d") }).unwrap();
        assert!(!last_file_is(&tree, "d"));
        assert_eq!(
            refused_with(write(&tree, "d", 0, b"z".to_vec())),
            Some(Errno::NOENT)
        );
        assert!(!root.join("d").exists());

        // Another name for it keeps it; a sync lets go.
        create_with_mode(&tree, "e", 0o644).unwrap();
        let link = Op::Link {
            from: p("e"),
            to: p("f"),
        };
        apply(&tree, link).unwrap();
        assert!(last_file_is(&tree, "e"));
        tree.sync().unwrap();
        assert!(
            !last_file_is(&tree, "e"),
            "a settled tree holds no file open"
        );
    }

    /// The kernel refuses to run a file that is open for writing (ETXTBSY):
    /// a file that is or becomes executable is never held open.
    #[test]
    fn a_file_that_can_be_run_is_not_held_open() {
        let (_dir, tree) = tree();
        let root = tree.path().to_owned();
        let script = b"#!/bin/sh\nexit 7\n".to_vec();
        let run = |name: &str| {
            let path = root.join(name);
            std::process::Command::new(&path)
                .status()
                .unwrap_or_else(|e| panic!("run {}: {e}", path.display()))
                .code()
        };

        create_with_mode(&tree, "made-executable", 0o755).unwrap();
        write(&tree, "made-executable", 0, script.clone()).unwrap();
        assert!(!last_file_is(&tree, "made-executable"));
        assert_eq!(run("made-executable"), Some(7));

        // Written while it could not be run, then made executable.
        create_with_mode(&tree, "chmod", 0o644).unwrap();
        write(&tree, "chmod", 0, script.clone()).unwrap();
        assert!(last_file_is(&tree, "chmod"));
        let chmod = Op::SetAttr {
            node: Node::Path(p("chmod")),
            mode: Some(0o755),
            uid: None,
            gid: None,
            atime: None,
            mtime: None,
        };
        apply(&tree, chmod).unwrap();
        assert!(!last_file_is(&tree, "chmod"));
        assert_eq!(run("chmod"), Some(7));
    }

    /// A file's size, mtime (seconds, nanoseconds) and bytes.
    type FileState = (u64, i64, i64, Vec<u8>);

    /// Size, mtime and bytes of a file: what a failure must leave alone.
    fn state(path: &std::path::Path) -> FileState {
        let md = std::fs::metadata(path).unwrap();
        let bytes = std::fs::read(path).unwrap();
        (md.size(), md.mtime(), md.mtime_nsec(), bytes)
    }

    /// Gives `path` an mtime long past, so that a failure that stamps the
    /// time shows.
    fn age(path: &std::path::Path) {
        let old = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123);
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(old).unwrap();
    }

    /// A tmpfs (or a small ext4) mounted for a test (as root), unmounted
    /// on drop.
    struct SmallFs(std::path::PathBuf, Option<tempfile::TempDir>);

    impl SmallFs {
        /// An ext4 of `bytes` in a file, mounted through a loop device: a
        /// disk filesystem that fills up, with uncached writes.
        fn ext4(bytes: u64) -> SmallFs {
            let dir = tempfile::tempdir_in("/var/tmp").unwrap();
            let image = dir.path().join("image");
            let mnt = dir.path().join("mnt");
            std::fs::create_dir(&mnt).unwrap();
            std::fs::File::create(&image)
                .unwrap()
                .set_len(bytes)
                .unwrap();
            let st = std::process::Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&image)
                .status()
                .unwrap();
            assert!(st.success(), "mkfs.ext4 {}", image.display());
            let st = std::process::Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mnt)
                .status()
                .unwrap();
            assert!(st.success(), "mount -o loop (needs root and a loop device)");
            SmallFs(mnt, Some(dir))
        }

        fn mount(options: &str) -> SmallFs {
            let dir = tempfile::tempdir().unwrap();
            let mut fs = SmallFs::mount_at(dir.path(), options);
            fs.1 = Some(dir);
            fs
        }

        fn mount_at(path: &std::path::Path, options: &str) -> SmallFs {
            let st = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success(), "mount -t tmpfs -o {options} (needs root)");
            SmallFs(path.to_owned(), None)
        }

        fn tree(&self) -> (std::path::PathBuf, Tree) {
            let root = self.0.join("tree");
            std::fs::create_dir(&root).unwrap();
            std::fs::create_dir(self.0.join("attic")).unwrap();
            let tree = Tree::open_with_attic(&root, &self.0.join("attic")).unwrap();
            (root, tree)
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    /// File `f` of the tree at `root`: 100,000 bytes with an old mtime,
    /// and its state, which a write that finds no room must leave as it is.
    fn aged_file(tree: &Tree, root: &std::path::Path) -> (std::path::PathBuf, FileState) {
        let f = root.join("f");
        create(tree, "f").unwrap();
        write(tree, "f", 0, vec![1; 100_000]).unwrap();
        age(&f);
        let before = state(&f);
        (f, before)
    }

    #[test]
    fn a_write_or_allocation_that_finds_no_room_changes_nothing() {
        let fs = SmallFs::mount("size=1m");
        let (root, tree) = fs.tree();
        let (f, before) = aged_file(&tree, &root);
        // Part of it fits before the disk is full: the size and mtime go back.
        let past_end = write(&tree, "f", 100_000, vec![2; 2 << 20]);
        assert_eq!(unchanged_with(past_end), Some(Errno::NOSPC));
        assert_eq!(state(&f), before);
        // tmpfs refused to keep that write out of the cache, and it was an
        // ordinary one.
        assert!(
            tree.cached_only.load(Ordering::Relaxed),
            "tmpfs has uncached writes on this kernel: this no longer covers their refusal"
        );
        // Further on, leaving a hole.
        let past_hole = write(&tree, "f", 300_000, vec![2; 2 << 20]);
        assert_eq!(unchanged_with(past_hole), Some(Errno::NOSPC));
        assert_eq!(state(&f), before);
        for mode in [FallocateMode::Allocate, FallocateMode::KeepSize] {
            let path = p("f");
            let (offset, len) = (0, 2 << 20);
            let r = apply(
                &tree,
                Op::Fallocate {
                    path,
                    mode,
                    offset,
                    len,
                },
            );
            assert_eq!(unchanged_with(r), Some(Errno::NOSPC), "{mode:?}");
            assert_eq!(state(&f), before, "{mode:?}");
        }
        // Over old bytes without their before-images (history off) the old
        // ones are gone: that is no "nothing changed".
        let over_old = write(&tree, "f", 50_000, vec![3; 2 << 20]);
        assert!(
            matches!(over_old, Err(TreeError::Io { .. })),
            "{over_old:?}"
        );
    }

    #[test]
    fn an_uncached_write_that_finds_no_room_changes_nothing() {
        use std::io::Write;
        let fs = SmallFs::ext4(16 << 20);
        let (root, tree) = fs.tree();
        let (f, before) = aged_file(&tree, &root);
        let mut filler = std::fs::File::create(fs.0.join("filler")).unwrap();
        while filler.write_all(&[4; 1 << 16]).is_ok() {}
        let full = filler.metadata().unwrap().len();
        // Room for part of the write.
        filler.set_len(full - (256 << 10)).unwrap();
        let r = write(&tree, "f", 100_000, vec![2; 2 << 20]);
        assert_eq!(unchanged_with(r), Some(Errno::NOSPC));
        assert_eq!(state(&f), before);
        assert!(
            !tree.cached_only.load(Ordering::Relaxed),
            "ext4 refused uncached writes"
        );
    }

    /// A file of four blocks, data in the first and the last and holes
    /// between, a file to copy from, and a tmpfs so full that one block is
    /// left: a write over the file gets through its first block and
    /// allocates the second before it finds no room.
    fn sparse_file_on_a_full_disk() -> (SmallFs, std::path::PathBuf, Tree) {
        use std::io::Write;
        let fs = SmallFs::mount("size=1m");
        let (root, tree) = fs.tree();
        create(&tree, "f").unwrap();
        write(&tree, "f", 0, vec![1; 4096]).unwrap();
        write(&tree, "f", 3 * 4096, vec![2; 4096]).unwrap();
        create(&tree, "src").unwrap();
        write(&tree, "src", 0, vec![3; 5 * 4096]).unwrap();
        age(&root.join("f"));
        let mut filler = std::fs::File::create(fs.0.join("filler")).unwrap();
        while filler.write_all(&[4; 4096]).is_ok() {}
        let full = filler.metadata().unwrap().len();
        filler.set_len(full / 4096 * 4096 - 4096).unwrap();
        (fs, root, tree)
    }

    /// Where a file holds data: its holes are what is left.
    fn data_map(path: &std::path::Path) -> (u64, Vec<(u64, u64)>) {
        let file = std::fs::File::open(path).unwrap();
        let md = file.metadata().unwrap();
        let extents = crate::compare::data_extents_between(&file, 0, md.size()).unwrap();
        (md.blocks(), extents)
    }

    /// The records of a write and a copy over blocks 0..4 of the file and
    /// past its end, with before-images when `history`, as a master makes them.
    fn writes_over_old_bytes(tree: &Tree, history: bool) -> Vec<Record> {
        let ops = [
            Op::Write {
                path: p("f"),
                offset: 1000,
                data: vec![9; 4 * 4096],
            },
            Op::CopyRange {
                src: p("src"),
                src_offset: 0,
                dst: p("f"),
                dst_offset: 1000,
                len: 4 * 4096,
            },
        ];
        let time = Timestamp::new(2_000_000_000, 0);
        ops.into_iter()
            .map(|op| {
                let mtimes = crate::record::implied_mtimes(&op, time);
                let before = if history {
                    crate::history::capture(tree, &op, &mtimes, 1).unwrap()
                } else {
                    vec![]
                };
                Record {
                    seq: 1,
                    time,
                    op,
                    mtimes,
                    before,
                }
            })
            .collect()
    }

    #[test]
    fn a_write_over_old_bytes_that_finds_no_room_is_undone_from_its_before_images() {
        let (fs, root, tree) = sparse_file_on_a_full_disk();
        let f = root.join("f");
        let (before, map) = (state(&f), data_map(&f));
        assert_eq!(map.1, [(0, 4096), (3 * 4096, 4 * 4096)]);
        let records = writes_over_old_bytes(&tree, true);
        for record in &records {
            let r = tree.apply(record, None);
            assert_eq!(unchanged_with(r), Some(Errno::NOSPC), "{}", record.op);
            assert_eq!(state(&f), before, "{}", record.op);
            assert_eq!(
                data_map(&f),
                map,
                "the holes are holes again ({})",
                record.op
            );
        }
        // Room again: the same records apply.
        std::fs::remove_file(fs.0.join("filler")).unwrap();
        for record in &records {
            tree.apply(record, None).unwrap();
        }
        let mut want = vec![1; 1000];
        want.resize(1000 + 4 * 4096, 3);
        assert_eq!(std::fs::read(&f).unwrap(), want);
    }

    #[test]
    fn a_write_over_old_bytes_without_before_images_that_finds_no_room_is_half_done() {
        let (_fs, root, tree) = sparse_file_on_a_full_disk();
        for record in writes_over_old_bytes(&tree, false) {
            let r = tree.apply(&record, None);
            assert!(
                matches!(r, Err(TreeError::Io { .. })),
                "{}: {r:?}",
                record.op
            );
        }
        assert_eq!(
            std::fs::read(root.join("f")).unwrap()[1000..4096],
            [3; 3096]
        );
    }

    #[test]
    fn a_node_that_finds_no_inode_left_changes_nothing() {
        let fs = SmallFs::mount("size=1m,nr_inodes=16");
        let (root, tree) = fs.tree();
        mkdir(&tree, "d");
        let mut made = 0;
        let failure = loop {
            match create(&tree, &format!("d/f{made}")) {
                Ok(()) => made += 1,
                Err(e) => break e,
            }
            assert!(made < 16, "a tmpfs of 16 inodes took {made} files");
        };
        assert!(
            matches!(
                failure,
                TreeError::Unchanged {
                    errno: Errno::NOSPC,
                    ..
                }
            ),
            "{failure:?}"
        );
        let node = NODE;
        let r = apply(&tree, Op::Mkdir { path: p("e"), node });
        assert_eq!(unchanged_with(r), Some(Errno::NOSPC));
        let (target, uid, gid) = (b"d".to_vec(), 0, 0);
        let r = apply(
            &tree,
            Op::Symlink {
                path: p("l"),
                target,
                uid,
                gid,
            },
        );
        assert_eq!(unchanged_with(r), Some(Errno::NOSPC));
        let names = std::fs::read_dir(&root).unwrap().count();
        assert_eq!(names, 1, "only d is in the tree");
        assert_eq!(std::fs::read_dir(root.join("d")).unwrap().count(), made);
        // Room again: the same records apply.
        apply(&tree, Op::Unlink { path: p("d/f0") }).unwrap();
        create(&tree, "d/again").unwrap();
    }

    #[test]
    fn a_file_past_the_largest_this_filesystem_holds_changes_nothing() {
        let (dir, tree) = tree();
        let f = dir.path().join("tree/f");
        create(&tree, "f").unwrap();
        write(&tree, "f", 0, b"abc".to_vec()).unwrap();
        age(&f);
        let before = state(&f);
        // The largest size this filesystem holds: seeking past it fails.
        let file = std::fs::File::open(&f).unwrap();
        let (mut lo, mut hi) = (0u64, i64::MAX as u64);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match rfs::seek(&file, rfs::SeekFrom::Start(mid)) {
                Ok(_) => lo = mid,
                Err(_) => hi = mid - 1,
            }
        }
        let max = lo;
        assert!(max > CHECK_SIZE_ABOVE, "largest file {max}");
        // Ending just past it: a plain write would write what fits and stop.
        let r = write(&tree, "f", max - 5, vec![7; 10]);
        assert_eq!(unchanged_with(r), Some(Errno::FBIG), "largest file {max}");
        let r = write(&tree, "f", u64::MAX - 5, vec![7; 10]);
        assert_eq!(unchanged_with(r), Some(Errno::FBIG));
        let r = apply(
            &tree,
            Op::Truncate {
                path: p("f"),
                size: max + 1,
            },
        );
        assert_eq!(unchanged_with(r), Some(Errno::FBIG));
        let (path, mode) = (p("f"), FallocateMode::KeepSize);
        let r = apply(
            &tree,
            Op::Fallocate {
                path,
                mode,
                offset: max,
                len: 4096,
            },
        );
        assert_eq!(unchanged_with(r), Some(Errno::FBIG));
        assert_eq!(state(&f), before);
        // Up to the limit itself is fine.
        write(&tree, "f", max - 5, vec![7; 5]).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().size(), max);
    }

    #[test]
    fn a_link_or_rename_into_another_filesystem_changes_nothing() {
        let (dir, tree) = tree();
        let root = dir.path().join("tree");
        mkdir(&tree, "other");
        create(&tree, "f").unwrap();
        let other = SmallFs::mount_at(&root.join("other"), "size=1m");
        let (from, to) = (p("f"), p("other/f"));
        let r = apply(&tree, Op::Link { from, to });
        assert_eq!(unchanged_with(r), Some(Errno::XDEV));
        let (from, to, mode) = (p("f"), p("other/f"), RenameMode::Replace);
        let r = apply(&tree, Op::Rename { from, to, mode });
        assert_eq!(unchanged_with(r), Some(Errno::XDEV));
        assert!(root.join("f").is_file());
        assert_eq!(std::fs::read_dir(root.join("other")).unwrap().count(), 0);
        drop(other);
    }
}
