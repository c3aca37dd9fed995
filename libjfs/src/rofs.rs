//! The read-only FUSE mount a replica serves over its tree.
//!
//! The tree changes underneath the mount: the replica's applier applies
//! records to it in the same process. So, as libfuse's `passthrough_ll`
//! does, every inode the kernel knows is held as an `O_PATH | O_NOFOLLOW`
//! file descriptor to the backing inode ([`InodeTable`]), and every request
//! works on those descriptors, never on a path remembered from earlier: a
//! rename or unlink underneath does not make a known inode point elsewhere.
//!
//! Consistency with the applier:
//! - The *gate* (`RwLock<()>`): each request holds it for reading while it
//!   touches the tree; the applier holds it for writing while it applies one
//!   record. A request never sees a record half-applied.
//! - Names and attributes are given to the kernel with a time-to-live of
//!   zero, so every path walk and `stat` asks again.
//! - File data is read with direct I/O (no page cache): each `read` call
//!   goes to this process, and one read of up to the kernel's request size
//!   (128 KiB by default) is answered under the gate in one piece, so it
//!   never mixes bytes from before and after a record. A page cache would
//!   be refilled page by page and could mix them while it is invalidated.
//! - [`Invalidator::record_applied`] tells the kernel after each record to
//!   drop what it still caches about the nodes the record names (private
//!   mappings, POSIX ACLs, dentries).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::fuse::threads::{Readers, Threads, LONG_IO_BYTES};
use crate::path::Node;

/// The root's FUSE node id.
pub const ROOT_ID: u64 = 1;

/// Names and attributes are never cached by the kernel (see the module doc).
const TTL: Duration = Duration::ZERO;

/// How many threads answer the kernel where each reads requests and
/// answers them itself, and how many run large reads where one thread
/// reads them (see [`crate::fuse::threads`]).
const THREADS: usize = 4;

type Result<T> = std::result::Result<T, Errno>;

/// A backing inode the kernel knows, pinned by an `O_PATH` descriptor.
#[derive(Debug)]
pub struct Inode {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    /// `st_mode & S_IFMT` when it was looked up.
    kind: u32,
}

impl Inode {
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// `/proc/self/fd/N`: reopens the pinned inode itself (no path walk).
    fn proc_path(&self) -> CString {
        CString::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).expect("no NUL")
    }
}

const S_IFMT: u32 = 0o170000;

#[allow(clippy::unnecessary_cast)]
fn key(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

#[allow(clippy::unnecessary_cast)]
fn nlink(st: &Stat) -> u64 {
    st.st_nlink as u64
}

/// Whether the inode we hold (`held`, its `fstat` now, or the error that
/// gave) is no longer the inode a fresh lookup found (`fresh`) although both
/// have the same `(st_dev, st_ino)`: the held one was deleted and its number
/// reused, or it changed type (which an inode never does).
pub fn is_stale(held: std::result::Result<&Stat, Errno>, fresh: &Stat) -> bool {
    match held {
        Err(_) => true,
        Ok(h) => {
            nlink(h) == 0
                || key(h) != key(fresh)
                || (h.st_mode & S_IFMT) != (fresh.st_mode & S_IFMT)
        }
    }
}

struct Entry {
    inode: Arc<Inode>,
    lookups: u64,
    generation: u64,
}

struct Table {
    /// FUSE node id -> inode.
    nodes: HashMap<u64, Entry>,
    next_generation: u64,
}

/// The inodes the kernel knows, each with its lookup count (see FUSE
/// `forget`). No FUSE in here.
///
/// A node id is the backing `st_ino` (fuser hands the kernel the same number
/// as node id and as `st_ino`), so hard links share one node, except the
/// tree's root, which is [`ROOT_ID`]. When a held inode was deleted and its
/// number now names a new inode, the entry is replaced and gets a new
/// generation: the kernel then drops its old inode, and its lookups stay
/// counted on the entry (the kernel forgets them under the same node id).
pub struct InodeTable {
    table: Mutex<Table>,
    root_ino: u64,
    dev: u64,
}

impl InodeTable {
    /// A table holding `root` as [`ROOT_ID`], which is never forgotten.
    pub fn new(root: OwnedFd) -> io::Result<InodeTable> {
        let st = rfs::fstat(&root)?;
        let (dev, root_ino) = key(&st);
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_ID,
            Entry {
                inode: Arc::new(Inode {
                    fd: root,
                    dev,
                    ino: root_ino,
                    kind: st.st_mode & S_IFMT,
                }),
                lookups: 1,
                generation: 0,
            },
        );
        Ok(InodeTable {
            table: Mutex::new(Table {
                nodes,
                next_generation: 1,
            }),
            root_ino,
            dev,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node id for backing inode number `ino`.
    pub fn node_id(&self, ino: u64) -> u64 {
        if ino == self.root_ino {
            ROOT_ID
        } else {
            ino
        }
    }

    pub fn get(&self, id: u64) -> Result<Arc<Inode>> {
        self.lock()
            .nodes
            .get(&id)
            .map(|e| e.inode.clone())
            .ok_or(Errno::STALE)
    }

    /// The node id standing for backing inode `(dev, ino)`, if the kernel knows it.
    pub fn id_of(&self, dev: u64, ino: u64) -> Option<u64> {
        let id = self.node_id(ino);
        let t = self.lock();
        let e = t.nodes.get(&id)?;
        (e.inode.dev == dev && e.inode.ino == ino).then_some(id)
    }

    /// Looks `name` up in directory node `parent` and counts one kernel
    /// lookup of the result. Returns its node id, generation and `fstat`.
    pub fn lookup(&self, parent: u64, name: &CStr) -> Result<(u64, u64, Stat)> {
        if name.to_bytes() == b"." || name.to_bytes() == b".." || name.is_empty() {
            return Err(Errno::INVAL);
        }
        let dir = self.get(parent)?;
        let fd = rfs::openat(
            &dir.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rfs::fstat(&fd)?;
        let (id, generation) = self.insert(fd, &st)?;
        Ok((id, generation, st))
    }

    /// Counts one lookup of the inode `fd` (whose `fstat` is `st`); returns
    /// its node id and generation.
    pub fn insert(&self, fd: OwnedFd, st: &Stat) -> Result<(u64, u64)> {
        let (dev, ino) = key(st);
        if dev != self.dev {
            // Node ids are inode numbers of the tree's filesystem: something
            // mounted inside the tree cannot be served.
            return Err(Errno::XDEV);
        }
        let id = self.node_id(ino);
        let inode = Arc::new(Inode {
            fd,
            dev,
            ino,
            kind: st.st_mode & S_IFMT,
        });
        let mut t = self.lock();
        let generation = t.next_generation;
        match t.nodes.get_mut(&id) {
            Some(e) => {
                let held = rfs::fstat(&e.inode.fd);
                if is_stale(held.as_ref().map_err(|e| *e), st) {
                    e.inode = inode;
                    e.generation = generation;
                    t.next_generation += 1;
                    let e = t.nodes.get_mut(&id).expect("present");
                    e.lookups += 1;
                    return Ok((id, e.generation));
                }
                e.lookups += 1;
                Ok((id, e.generation))
            }
            None => {
                t.nodes.insert(
                    id,
                    Entry {
                        inode,
                        lookups: 1,
                        generation,
                    },
                );
                t.next_generation += 1;
                Ok((id, generation))
            }
        }
    }

    /// The kernel dropped `n` lookups of `id`; the last one closes the descriptor.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut t = self.lock();
        let Some(entry) = t.nodes.get_mut(&id) else {
            return;
        };
        entry.lookups = entry.lookups.saturating_sub(n);
        if entry.lookups == 0 {
            t.nodes.remove(&id);
        }
    }

    /// How many inodes are held (the root included).
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---- attributes -------------------------------------------------------------

fn system_time(sec: i64, nsec: u32) -> SystemTime {
    crate::fuse::system_time(crate::Timestamp::new(sec, nsec))
}

fn file_type(mode: u32) -> FileType {
    kind(rfs::FileType::from_raw_mode(mode))
}

fn kind(ft: rfs::FileType) -> FileType {
    crate::fuse::file_type(crate::compare::FileKind::from_raw(ft))
}

#[allow(clippy::unnecessary_cast)]
/// `st` as the kernel gets it, for node `id` (which is also the `st_ino`
/// the kernel reports).
fn file_attr(id: u64, st: &Stat) -> FileAttr {
    let ctime = system_time(st.st_ctime as i64, st.st_ctime_nsec as u32);
    FileAttr {
        ino: INodeNo(id),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: system_time(st.st_atime as i64, st.st_atime_nsec as u32),
        mtime: system_time(st.st_mtime as i64, st.st_mtime_nsec as u32),
        ctime,
        crtime: ctime,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

// ---- the filesystem -----------------------------------------------------------

/// One directory listing, read whole under the gate at `opendir`.
struct Listing {
    entries: Vec<(u64, FileType, Vec<u8>)>,
}

/// The filesystem without the FUSE plumbing: requests by node id, answers or errno.
pub struct RoFs {
    inodes: Arc<InodeTable>,
    gate: Arc<RwLock<()>>,
    files: RwLock<HashMap<u64, Arc<File>>>,
    dirs: RwLock<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
}

impl RoFs {
    pub fn new(inodes: Arc<InodeTable>, gate: Arc<RwLock<()>>) -> RoFs {
        RoFs {
            inodes,
            gate,
            files: RwLock::new(HashMap::new()),
            dirs: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn read_gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Node id, generation and `fstat` of `name` in directory node `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<(u64, u64, Stat)> {
        let name = CString::new(name).map_err(|_| Errno::INVAL)?;
        let _g = self.read_gate();
        self.inodes.lookup(parent, &name)
    }

    pub fn getattr(&self, id: u64) -> Result<Stat> {
        let inode = self.inodes.get(id)?;
        let _g = self.read_gate();
        rfs::fstat(&inode.fd)
    }

    pub fn readlink(&self, id: u64) -> Result<Vec<u8>> {
        let inode = self.inodes.get(id)?;
        if inode.kind != 0o120000 {
            return Err(Errno::INVAL);
        }
        let _g = self.read_gate();
        Ok(rfs::readlinkat(&inode.fd, c"", Vec::new())?.into_bytes())
    }

    /// Opens a file for reading; anything else is `EROFS`.
    pub fn open(&self, id: u64, flags: i32) -> Result<u64> {
        let acc = flags & 0o3;
        if acc != 0 || flags & 0o1000 != 0 {
            return Err(Errno::ROFS);
        }
        let inode = self.inodes.get(id)?;
        if inode.kind != 0o100000 {
            return Err(Errno::INVAL);
        }
        let file = {
            let _g = self.read_gate();
            rfs::open(
                inode.proc_path().as_c_str(),
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
                Mode::empty(),
            )?
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(File::from(file)));
        Ok(fh)
    }

    /// Reads up to `size` bytes at `offset` and hands them to `f`, under
    /// the read gate (see `treeread::read_reusing`).
    pub fn read_with<T>(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        f: impl FnOnce(Result<&[u8]>) -> T,
    ) -> T {
        let file = match self.file(fh) {
            Ok(file) => file,
            Err(e) => return f(Err(e)),
        };
        let _g = self.read_gate();
        crate::treeread::read_reusing(&file, None, offset, size, f)
    }

    /// `SEEK_DATA` / `SEEK_HOLE` on an open file (the kernel does the others).
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let file = self.file(fh)?;
        let _g = self.read_gate();
        crate::master::seek_data_or_hole(&file, offset, whence)
    }

    fn file(&self, fh: u64) -> Result<Arc<File>> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(Errno::BADF)
    }

    pub fn release(&self, fh: u64) {
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    pub fn opendir(&self, id: u64) -> Result<u64> {
        let inode = self.inodes.get(id)?;
        let mut entries = Vec::new();
        {
            let _g = self.read_gate();
            let fd = rfs::openat(
                &inode.fd,
                c".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut dir = rfs::Dir::new(fd)?;
            while let Some(e) = dir.read() {
                let e = e?;
                let kind = kind(e.file_type());
                let id = self.inodes.node_id(e.ino());
                entries.push((id, kind, e.file_name().to_bytes().to_vec()));
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(Listing { entries }));
        Ok(fh)
    }

    fn listing(&self, fh: u64) -> Result<Arc<Listing>> {
        self.dirs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(Errno::BADF)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    pub fn statfs(&self) -> Result<rfs::StatVfs> {
        let root = self.inodes.get(ROOT_ID)?;
        rfs::fstatvfs(&root.fd)
    }

    /// An xattr's value. `O_PATH` descriptors do not take `fgetxattr`, so
    /// this goes through `/proc/self/fd/N`, which names the pinned inode.
    pub fn getxattr(&self, id: u64, name: &[u8]) -> Result<Vec<u8>> {
        let inode = self.inodes.get(id)?;
        let name = CString::new(name).map_err(|_| Errno::INVAL)?;
        let path = inode.proc_path();
        let _g = self.read_gate();
        loop {
            let n = rfs::getxattr_query(path.as_c_str(), name.as_c_str())?;
            let mut buf = vec![0u8; n];
            match rfs::getxattr(path.as_c_str(), name.as_c_str(), &mut buf[..]) {
                Ok(k) => {
                    buf.truncate(k);
                    return Ok(buf);
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn listxattr(&self, id: u64) -> Result<Vec<u8>> {
        let inode = self.inodes.get(id)?;
        let path = inode.proc_path();
        let _g = self.read_gate();
        loop {
            let n = rfs::listxattr_query(path.as_c_str())?;
            let mut buf = vec![0u8; n];
            match rfs::listxattr(path.as_c_str(), &mut buf[..]) {
                Ok(k) => {
                    buf.truncate(k);
                    return Ok(buf);
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn forget(&self, id: u64, n: u64) {
        self.inodes.forget(id, n);
    }
}

// ---- FUSE -----------------------------------------------------------------------

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw_os_error())
}

fn rofs_err() -> fuser::Errno {
    fuser::Errno::EROFS
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e)),
    }
}

/// The `fuser::Filesystem` over [`RoFs`]: reads answered, writes refused.
pub struct FuseRo {
    fs: Arc<RoFs>,
    /// Where large reads run (see [`crate::fuse::threads`]).
    threads: Threads,
}

impl Filesystem for FuseRo {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // The kernel enforces POSIX ACLs (read from the xattrs) as a local
        // filesystem does.
        config
            .add_capabilities(fuser::InitFlags::FUSE_POSIX_ACL)
            .map_err(|_| io::Error::other("the kernel does not support POSIX ACLs on FUSE"))?;
        // Files are opened with direct I/O; let shared mappings work anyway
        // (Linux 6.6 and later; without it they fail with ENODEV).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok((id, generation, st)) => {
                reply.entry(&TTL, &file_attr(id, &st), Generation(generation))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(st) => reply.attr(&TTL, &file_attr(ino.0, &st)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(rofs_err());
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(rofs_err());
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(rofs_err());
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(rofs_err());
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(rofs_err());
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(rofs_err());
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(rofs_err());
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(rofs_err());
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let read = move |fs: &RoFs| {
            fs.read_with(fh.0, offset, size, |r| match r {
                Ok(d) => reply.data(d),
                Err(e) => reply.error(errno(e)),
            })
        };
        if size as usize >= LONG_IO_BYTES {
            let fs = self.fs.clone();
            self.threads.long(move || read(&fs))
        } else {
            read(&self.fs)
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(rofs_err());
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Offset i + 1 is after the i-th entry.
        match self.fs.listing(fh.0) {
            Ok(l) => {
                for (i, (ino, kind, name)) in l.entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*ino), i as u64 + 1, *kind, OsStr::from_bytes(name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(rofs_err());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.fs.getxattr(ino.0, name.as_bytes()));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.fs.listxattr(ino.0));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(rofs_err());
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(rofs_err());
        }
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(rofs_err());
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(rofs_err());
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(rofs_err());
    }
}

// ---- invalidation ------------------------------------------------------------------

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

struct Shared {
    inodes: Arc<InodeTable>,
    /// The tree's root, to find what a record's paths name now.
    root: OwnedFd,
    notifier: fuser::Notifier,
}

/// Tells the kernel what a record changed. Cheap to clone; see
/// [`Invalidator::record_applied`].
#[derive(Clone)]
pub struct Invalidator {
    shared: Arc<Shared>,
}

impl Invalidator {
    /// The node id the kernel knows for `rel` (relative to the tree), if any.
    fn id_of(&self, rel: &[u8]) -> Option<u64> {
        let root = &self.shared.root;
        let fd = if rel.is_empty() {
            return Some(ROOT_ID);
        } else {
            rfs::openat2(
                root,
                rel,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .ok()?
        };
        let st = rfs::fstat(&fd).ok()?;
        let (dev, ino) = key(&st);
        self.shared.inodes.id_of(dev, ino)
    }

    /// Call after `op` was applied to the tree and the gate released (never
    /// while holding it: the kernel may wait for reads that wait for the
    /// gate). Drops the kernel's cached data, attributes and ACLs of every
    /// node `op` names, and the names themselves, so anything asked after
    /// this returns sees the new state.
    pub fn record_applied(&self, op: &crate::Op) {
        for node in crate::inspect::op_paths(op) {
            match node {
                Node::Root => self.inval_inode(ROOT_ID),
                Node::Path(p) => {
                    if let Some(id) = self.id_of(p.as_bytes()) {
                        self.inval_inode(id);
                    }
                    let parent = p
                        .parent()
                        .map(|d| d.as_bytes().to_vec())
                        .unwrap_or_default();
                    if let Some(pid) = self.id_of(&parent) {
                        self.inval_inode(pid);
                        let _ = self
                            .shared
                            .notifier
                            .inval_entry(INodeNo(pid), OsStr::from_bytes(p.file_name()));
                    }
                }
            }
        }
    }

    fn inval_inode(&self, id: u64) {
        // Offset 0, length 0: attributes and all cached pages. A node the
        // kernel has already forgotten answers ENOENT, which fuser ignores.
        let _ = self.shared.notifier.inval_inode(INodeNo(id), 0, 0);
    }
}

// ---- mounting ------------------------------------------------------------------------

/// A tree served read-only at a mount point. Dropping it unmounts.
pub struct ReadOnlyMount {
    session: Option<fuser::BackgroundSession>,
    invalidator: Invalidator,
    mountpoint: PathBuf,
}

/// Every inode the kernel knows holds a descriptor: allow as many as we may.
fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

impl ReadOnlyMount {
    /// Mounts `tree` read-only at `mountpoint` (an empty directory, nothing
    /// mounted on it), as `fsname` in the mount table. Requests hold `gate`
    /// for reading while they touch the tree.
    pub fn mount(
        tree: &Path,
        mountpoint: &Path,
        fsname: &str,
        gate: Arc<RwLock<()>>,
    ) -> io::Result<ReadOnlyMount> {
        ReadOnlyMount::mount_with(tree, mountpoint, fsname, gate, Readers::Auto)
    }

    /// [`ReadOnlyMount::mount`] with `readers` threads reading requests.
    pub fn mount_with(
        tree: &Path,
        mountpoint: &Path,
        fsname: &str,
        gate: Arc<RwLock<()>>,
        readers: Readers,
    ) -> io::Result<ReadOnlyMount> {
        crate::fuse::check_mountpoint(mountpoint, tree)?;
        raise_nofile_limit();
        let open_root = || {
            rfs::open(
                tree,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("open tree {}: {e}", tree.display()),
                )
            })
        };
        let inodes = Arc::new(InodeTable::new(open_root()?)?);
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName(fsname.to_owned()),
            fuser::MountOption::Subtype("jfs".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::RO,
        ];
        config.acl = fuser::SessionACL::All;
        let threads = Threads::new("jfs-ro-read", readers, THREADS, THREADS)?;
        config.n_threads = Some(threads.readers());
        let fs = FuseRo {
            fs: Arc::new(RoFs::new(inodes.clone(), gate)),
            threads,
        };
        // Resolved before the mount: afterwards, looking at the mount point
        // asks this filesystem, which is not serving yet.
        let absolute = mountpoint.canonicalize()?;
        let session = fuser::Session::new(fs, mountpoint, &config)?;
        crate::mounts::raise_read_ahead(&absolute);
        let notifier = session.notifier();
        let session = session.spawn()?;
        Ok(ReadOnlyMount {
            session: Some(session),
            invalidator: Invalidator {
                shared: Arc::new(Shared {
                    inodes,
                    root: open_root()?,
                    notifier,
                }),
            },
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// What the applier calls after each record.
    pub fn invalidator(&self) -> Invalidator {
        self.invalidator.clone()
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the session to end. Fails if the mount is
    /// busy; the mount is then detached lazily (and ends when its last user
    /// is gone).
    pub fn unmount(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // The kernel sends release after close() returns: a mount can stay
        // busy for a moment after its last file is closed.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while is_busy(&self.mountpoint) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg("-q")
                    .arg("-z")
                    .arg(&self.mountpoint)
                    .stderr(std::process::Stdio::null())
                    .status();
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "unmount {}: {e} (detached lazily)",
                        self.mountpoint.display()
                    ),
                ))
            }
        }
    }
}

/// Whether this process has files open under `mnt` (which keep it busy).
fn is_busy(mnt: &Path) -> bool {
    let Ok(mnt) = mnt.canonicalize() else {
        return false;
    };
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|t| t.starts_with(&mnt))
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("jfs: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn table(dir: &Path) -> InodeTable {
        let root = rfs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        InodeTable::new(root).unwrap()
    }

    #[test]
    fn hard_links_share_a_node_and_forget_closes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"x").unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        let t = table(d.path());
        let (a, _, st) = t.lookup(ROOT_ID, c"a").unwrap();
        let (b, _, _) = t.lookup(ROOT_ID, c"b").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, std::fs::metadata(d.path().join("a")).unwrap().ino());
        assert_eq!(st.st_ino, a);
        assert_eq!(t.len(), 2);
        t.forget(a, 1);
        assert!(t.get(a).is_ok());
        t.forget(a, 1);
        assert_eq!(t.get(a).unwrap_err(), Errno::STALE);
        assert_eq!(t.len(), 1);
        // The root is never forgotten.
        t.forget(ROOT_ID, 100);
        assert!(t.get(ROOT_ID).is_ok());
    }

    #[test]
    fn lookups_follow_no_symlink_and_refuse_dots() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("l")).unwrap();
        let t = table(d.path());
        let (_, _, st) = t.lookup(ROOT_ID, c"l").unwrap();
        assert_eq!(st.st_mode & S_IFMT, 0o120000);
        assert_eq!(t.lookup(ROOT_ID, c"..").unwrap_err(), Errno::INVAL);
        assert_eq!(t.lookup(ROOT_ID, c"missing").unwrap_err(), Errno::NOENT);
    }

    #[test]
    fn a_held_inode_stays_itself_across_renames() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"old").unwrap();
        let t = table(d.path());
        let (a, _, _) = t.lookup(ROOT_ID, c"a").unwrap();
        std::fs::rename(d.path().join("a"), d.path().join("b")).unwrap();
        std::fs::write(d.path().join("a"), b"new!").unwrap();
        let (a2, _, st) = t.lookup(ROOT_ID, c"a").unwrap();
        assert_ne!(a, a2);
        assert_eq!(st.st_size, 4);
        assert_eq!(rfs::fstat(t.get(a).unwrap().fd()).unwrap().st_size, 3);
        let (b, _, _) = t.lookup(ROOT_ID, c"b").unwrap();
        assert_eq!(a, b);
    }

    fn stat_of(p: &Path) -> Stat {
        rfs::lstat(p).unwrap()
    }

    #[test]
    fn staleness() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let st = stat_of(&f);
        assert!(!is_stale(Ok(&st), &st));
        assert!(is_stale(Err(Errno::BADF), &st));
        let mut dead = st;
        dead.st_nlink = 0;
        assert!(is_stale(Ok(&dead), &st));
        let mut dir = st;
        dir.st_mode = 0o040755;
        assert!(is_stale(Ok(&dir), &st));
        let mut other = st;
        other.st_ino += 1;
        assert!(is_stale(Ok(&other), &st));
    }

    #[test]
    fn an_unlinked_inode_is_replaced_when_its_number_comes_back() {
        // Simulate the reuse of a number: hold "a", unlink it, and present a
        // new inode under the same (dev, ino).
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"old").unwrap();
        std::fs::write(d.path().join("c"), b"newer").unwrap();
        let t = table(d.path());
        let (a, gen_a, st_a) = t.lookup(ROOT_ID, c"a").unwrap();
        let (again, gen_again, _) = t.lookup(ROOT_ID, c"a").unwrap();
        assert_eq!((again, gen_again), (a, gen_a));
        std::fs::remove_file(d.path().join("a")).unwrap();
        let fd = rfs::open(
            d.path().join("c"),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let mut st_c = rfs::fstat(&fd).unwrap();
        st_c.st_ino = st_a.st_ino;
        let (c, gen_c) = t.insert(fd, &st_c).unwrap();
        assert_eq!(c, a);
        assert_ne!(gen_c, gen_a, "a reused number is a new generation");
        assert_eq!(rfs::fstat(t.get(c).unwrap().fd()).unwrap().st_size, 5);
        // The kernel forgets the old inode's two lookups; the new one stays.
        t.forget(a, 2);
        assert_eq!(rfs::fstat(t.get(c).unwrap().fd()).unwrap().st_size, 5);
        t.forget(c, 1);
        assert!(t.get(c).is_err());
    }
}
