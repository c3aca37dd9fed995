//! The FUSE adapter for the master: turns kernel requests into
//! [`MasterFs`] calls and their results into replies. Nothing else; the only
//! place that speaks FUSE. Behind the `fuse` cargo feature.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::OFlags;

use crate::compare::FileKind;
use crate::master::{Attr, Caller, MasterFs};
use crate::record::{RenameMode, Timestamp};

pub mod threads;

use threads::{Readers, Threads, LONG_IO_BYTES};

/// How long the kernel may cache names (missing ones too), attributes and
/// directory listings without asking again: a day, so that a tree walked
/// again (a build's `stat`s, `git status`, `find`) costs no requests. Any
/// length is as true as a second would be, because every change to the tree
/// reaches it through this mount: the kernel updates or drops what it
/// cached of the nodes each request changes (the file, its directory, a
/// replaced target, the other names of a hard link). The server tells it
/// about the two changes it makes on its own: a rewind's (see
/// `admin_handler`) and a mode a direct write changed (see `write`).
const TTL: Duration = Duration::from_secs(24 * 3600);

/// The `fuser::Filesystem` for a master volume.
pub struct FuseMaster {
    fs: Arc<MasterFs>,
    /// Write-only handles bypass the page cache (see `open_flags`).
    direct_writes: bool,
    /// Where requests that can take long run (see [`threads`]).
    threads: Threads,
    /// Tells the kernel what changed behind its caches; set once the
    /// session exists, before it serves anything.
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

impl FuseMaster {
    /// `threads` says where long requests run; its readers are the
    /// session's business.
    pub fn new(
        fs: Arc<MasterFs>,
        threads: Threads,
        notifier: Arc<OnceLock<fuser::Notifier>>,
    ) -> FuseMaster {
        FuseMaster {
            fs,
            direct_writes: false,
            threads,
            notifier,
        }
    }

    /// Runs `job` with the filesystem where long requests run.
    fn long(&self, job: impl FnOnce(&MasterFs) + Send + 'static) {
        let fs = self.fs.clone();
        self.threads.long(move || job(&fs));
    }

    /// How a handle opened with `flags` is served.
    fn open_flags(&self, flags: i32) -> FopenFlags {
        let access = flags as u32 & OFlags::RWMODE.bits();
        if self.direct_writes && access == OFlags::WRONLY.bits() {
            FILE_OPEN | FopenFlags::FOPEN_DIRECT_IO
        } else {
            FILE_OPEN
        }
    }
}

fn errno(e: rustix::io::Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw_os_error())
}

pub(crate) fn system_time(t: Timestamp) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec as u64)
    }
}

fn timestamp(t: TimeOrNow) -> Timestamp {
    let st = match t {
        TimeOrNow::SpecificTime(st) => st,
        TimeOrNow::Now => SystemTime::now(),
    };
    match st.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp::new(d.as_secs() as i64, d.subsec_nanos()),
        // fuser 0.18 turns the kernel's (sec < 0, nsec) into EPOCH - (|sec| s
        // + nsec ns) where it means EPOCH - |sec| s + nsec ns; undo exactly that.
        Err(e) => Timestamp::new(
            -(e.duration().as_secs() as i64),
            e.duration().subsec_nanos(),
        ),
    }
}

pub(crate) fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.ctime),
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

/// The answer for a name that does not exist: node 0, which the kernel
/// keeps for `TTL` as a name known to be missing, so that looking for it
/// again (a search path, a build probing for files, `stat` before
/// `create`) does not ask the server each time. An error reply would not
/// be cached. The kernel drops the entry itself when the name is created
/// through the mount, and a rewind drops it with the others it touched
/// (see `admin_handler`).
const NEGATIVE_ENTRY: FileAttr = FileAttr {
    ino: INodeNo(0),
    size: 0,
    blocks: 0,
    atime: UNIX_EPOCH,
    mtime: UNIX_EPOCH,
    ctime: UNIX_EPOCH,
    crtime: UNIX_EPOCH,
    kind: FileType::RegularFile,
    perm: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 0,
    flags: 0,
};

/// Whether the process behind `req` is in group `gid` or holds
/// `CAP_FSETID` (the kernel's `in_group_or_capable`), from its
/// `/proc/PID/status`. A process that cannot be read (gone already) is
/// taken to be neither, which at worst drops a setgid bit it could have
/// kept.
fn in_group_or_capable(req: &Request, gid: u32) -> bool {
    if req.gid() == gid {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", req.pid())) else {
        return false;
    };
    const CAP_FSETID: u32 = 4;
    status.lines().any(|line| match line.split_once(':') {
        Some(("Groups", groups)) => groups.split_whitespace().any(|g| g.parse() == Ok(gid)),
        Some(("CapEff", caps)) => {
            u64::from_str_radix(caps.trim(), 16).is_ok_and(|c| c & (1 << CAP_FSETID) != 0)
        }
        _ => false,
    })
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn entry(reply: ReplyEntry, r: crate::master::Result<Attr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

fn attr_reply(reply: ReplyAttr, r: crate::master::Result<Attr>) {
    match r {
        Ok(a) => reply.attr(&TTL, &file_attr(&a)),
        Err(e) => reply.error(errno(e)),
    }
}

fn data_reply(reply: ReplyData, r: crate::master::Result<&[u8]>) {
    match r {
        Ok(d) => reply.data(d),
        Err(e) => reply.error(errno(e)),
    }
}

/// How a handle is opened. `FLUSH` (sent at every `close`) would do
/// nothing here: writes are journaled as they come, POSIX locks and `flock`
/// are kept by the kernel (neither capability is asked for) and there is no
/// writeback cache. So the kernel is told not to send it.
///
/// The kernel also keeps what it cached of a file when it is opened again
/// (`FOPEN_KEEP_CACHE`; otherwise every open drops it, and each `cat` of a
/// large file would ask the server for all of it again). That cache stays
/// true because every change to a file's data reaches the tree through
/// this mount, where the kernel updates or drops its pages itself (writes,
/// truncates, copies, punched holes, mappings), except a rewind's, after
/// which the server tells the kernel to drop what it cached of every node
/// the rewind touched (see `admin_handler`).
///
/// A handle opened for writing only also bypasses the kernel's page cache
/// of the mount (`FOPEN_DIRECT_IO`, see [`FuseMaster::open_flags`]): every
/// write is journaled and written to VOL/tree as it comes anyway, and such
/// a handle can neither read nor be mapped, so the cache would only cost a
/// copy of every byte and, before each new file's first write, a getxattr
/// of `security.capability`. The kernel then leaves clearing setuid and
/// setgid to the server (see [`MasterFs::write`]), which tells it when
/// that changed the mode (its copy would be stale), and drops the cached
/// pages a direct write overlaps, so that readers through other handles
/// see the new bytes (some kernels only with `FUSE_DIRECT_IO_ALLOW_MMAP`,
/// which `init` asks for; kernels that do not know it get no direct
/// handles).
const FILE_OPEN: FopenFlags = FopenFlags::FOPEN_NOFLUSH.union(FopenFlags::FOPEN_KEEP_CACHE);

impl FuseMaster {
    /// `fsync` and `fsyncdir`: the journal's sync waits for the disk where
    /// the policy makes it wait.
    fn fsync_reply(&self, reply: ReplyEmpty) {
        if self.fs.fsync_waits() {
            self.long(move |fs| empty(reply, fs.fsync()))
        } else {
            empty(reply, self.fs.fsync())
        }
    }
}

fn written_reply(reply: ReplyWrite, r: crate::master::Result<u32>) {
    match r {
        Ok(n) => reply.written(n),
        Err(e) => reply.error(errno(e)),
    }
}

fn opened_reply(reply: ReplyOpen, r: crate::master::Result<u64>, flags: FopenFlags) {
    match r {
        Ok(fh) => reply.opened(FileHandle(fh), flags),
        Err(e) => reply.error(errno(e)),
    }
}

fn empty(reply: ReplyEmpty, r: crate::master::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: crate::master::Result<Vec<u8>>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for FuseMaster {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // The kernel enforces POSIX ACLs (read from the xattrs) as a local
        // filesystem does. It leaves the umask to us only when told to
        // (`FUSE_DONT_MASK`): otherwise it takes the umask off a new
        // node's mode itself, even where the parent's default ACL should
        // stand in its place (see MasterFs::new_node).
        config
            .add_capabilities(fuser::InitFlags::FUSE_POSIX_ACL)
            .map_err(|_| std::io::Error::other("the kernel does not support POSIX ACLs on FUSE"))?;
        config
            .add_capabilities(fuser::InitFlags::FUSE_DONT_MASK)
            .map_err(|_| std::io::Error::other("the kernel cannot leave the umask to FUSE"))?;
        // Listings with attributes when the kernel sees fit (see
        // `readdirplus`); a kernel without them looks names up one by one.
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
        );
        // Cached pages are dropped where a direct write lands (see
        // `FILE_OPEN`). Kernels before 6.6 do not know the flag; write-only
        // handles then stay in the page cache.
        self.direct_writes = config
            .add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            // A name that does not exist is cached as such, like one that
            // does (see `NEGATIVE_ENTRY`).
            Err(rustix::io::Errno::NOENT) => reply.entry(&TTL, &NEGATIVE_ENTRY, Generation(0)),
            r => entry(reply, r),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        attr_reply(reply, self.fs.getattr(ino.0))
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (atime, mtime) = (atime.map(timestamp), mtime.map(timestamp));
        let setattr = move |fs: &MasterFs| {
            attr_reply(reply, fs.setattr(ino.0, mode, uid, gid, size, atime, mtime))
        };
        // A truncate journals the bytes it cuts off.
        if size.is_some() {
            self.long(setattr)
        } else {
            setattr(&self.fs)
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.fs.mknod(
                parent.0,
                name.as_bytes(),
                mode,
                umask,
                rdev as u64,
                caller(req),
            ),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.fs
                .mkdir(parent.0, name.as_bytes(), mode, umask, caller(req)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.unlink(parent.0, name.as_bytes()));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.rmdir(parent.0, name.as_bytes()));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes();
        entry(
            reply,
            self.fs
                .symlink(parent.0, link_name.as_bytes(), target, caller(req)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            return reply.error(fuser::Errno::EINVAL);
        };
        empty(
            reply,
            self.fs.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                mode,
            ),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        entry(reply, self.fs.link(ino.0, newparent.0, newname.as_bytes()));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        opened_reply(
            reply,
            self.fs.open(ino.0, flags.0),
            self.open_flags(flags.0),
        )
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
        if size as usize >= LONG_IO_BYTES {
            self.long(move |fs| fs.read_with(fh.0, offset, size, |r| data_reply(reply, r)))
        } else {
            self.fs
                .read_with(fh.0, offset, size, |r| data_reply(reply, r))
        }
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

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill_suidgid = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let write = move |fs: &MasterFs,
                          notifier: &OnceLock<fuser::Notifier>,
                          data: std::borrow::Cow<'_, [u8]>| {
            match fs.write(ino.0, fh.0, offset, data, kill_suidgid) {
                Ok(w) => {
                    if w.mode_changed {
                        // The kernel keeps a direct write's mode as it was:
                        // until told, it would still see setuid (and run
                        // the file so) for as long as it caches attributes.
                        if let Some(n) = notifier.get() {
                            let _ = n.inval_inode(ino, -1, 0);
                        }
                    }
                    reply.written(w.len)
                }
                Err(e) => reply.error(errno(e)),
            }
        };
        if data.len() >= LONG_IO_BYTES {
            // The request's buffer is the session's, reused for the next
            // one: the copy is the one the record would take anyway.
            let data = data.to_vec();
            let notifier = self.notifier.clone();
            self.long(move |fs| write(fs, &notifier, data.into()))
        } else {
            write(&self.fs, &self.notifier, data.into())
        }
    }

    /// Not sent for handles opened with `FILE_OPEN`; kept for any other.
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
        self.fsync_reply(reply);
    }

    /// Answered with `ENOSYS`, after which the kernel opens directories
    /// without asking and sends no `releasedir` (`no_opendir`): a listing
    /// needs no handle (see `MasterFs::readdir`). The kernel then keeps
    /// each directory's listing (`FOPEN_CACHE_DIR`) across opens
    /// (`FOPEN_KEEP_CACHE`) and reads it again only once the directory
    /// changed: it drops the listing itself when a request through the
    /// mount changes the directory, and on the server's word after a
    /// rewind (see `TTL`). So walking a tree again costs no requests.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // A page of the kernel's takes about 150 entries of short names;
        // those that do not fit are read again by the next call.
        match self.fs.readdir(ino.0, offset, 256) {
            Ok(entries) => {
                for (e, next) in &entries {
                    if reply.add(
                        INodeNo(e.ino),
                        *next,
                        file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    /// A listing with each entry's attributes, which the kernel asks for
    /// when it starts reading a directory and while names of it are being
    /// looked up (`ls -l`, a first walk): one request for a page of
    /// entries instead of a lookup for each.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // Attributes make an entry about 150 bytes: some 27 to a page.
        match self.fs.readdir_plus(ino.0, offset, 64) {
            Ok(entries) => {
                for (e, next, a) in &entries {
                    if reply.add(
                        INodeNo(e.ino),
                        *next,
                        OsStr::from_bytes(&e.name),
                        &TTL,
                        &file_attr(a),
                        Generation(0),
                    ) {
                        break;
                    }
                    if !matches!(e.name.as_slice(), b"." | b"..") {
                        self.fs.remember(a, ino.0, &e.name);
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync_reply(reply);
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
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // Setting an access ACL drops setgid for a caller outside the
        // node's group without CAP_FSETID, as on a local filesystem. The
        // kernel would say so only with FUSE_SETXATTR_EXT, which fuser
        // cannot parse, so the caller is asked here.
        let mut r = self.fs.setxattr(ino.0, name.as_bytes(), value, flags);
        if r.is_ok() && name.as_bytes() == b"system.posix_acl_access" {
            r = self
                .fs
                .drop_setgid_unless(ino.0, |gid| in_group_or_capable(req, gid));
        }
        empty(reply, r);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.fs.getxattr(ino.0, name.as_bytes()));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.fs.listxattr(ino.0));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.removexattr(ino.0, name.as_bytes()));
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        empty(reply, self.fs.getattr(ino.0).map(|_| ()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .fs
            .create(parent.0, name.as_bytes(), mode, umask, flags, caller(req))
        {
            Ok((a, fh)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                self.open_flags(flags),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // A punch-hole or zero-range journals the bytes it clears.
        self.long(move |fs| empty(reply, fs.fallocate(ino.0, offset, length, mode)));
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.long(move |fs| {
            let len = len.min(u32::MAX as u64);
            let r = fs.copy_range(ino_in.0, offset_in, ino_out.0, offset_out, len);
            written_reply(reply, r.map(|n| n.min(u32::MAX as u64) as u32))
        })
    }
}

/// When the journal is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fsync`/`fdatasync` on the mount returns once the journal is durable.
    Fsync,
    /// The journal is made durable every this many milliseconds (group
    /// commit); `fsync` returns at once.
    Interval(u64),
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<SyncPolicy, String> {
        match s {
            "fsync" => Ok(SyncPolicy::Fsync),
            "interval" => Ok(SyncPolicy::Interval(100)),
            s => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(SyncPolicy::Interval(ms)),
                _ => Err(format!(
                    "unknown sync policy {s:?} (use fsync, interval or interval:MS)"
                )),
            },
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Fsync => f.write_str("fsync"),
            SyncPolicy::Interval(ms) => write!(f, "interval:{ms}"),
        }
    }
}

/// Why `mnt` cannot be used as a mount point serving what is in `volume`
/// (a volume's directory, or the tree itself): missing, not a directory,
/// not empty, already a mount, a dead FUSE mount, or inside `volume`.
pub fn check_mountpoint(mnt: &Path, volume: &Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::MetadataExt;
    let md = match std::fs::metadata(mnt) {
        Ok(md) => md,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("mount point {} does not exist", mnt.display()),
            ));
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()) => {
            return Err(Error::new(
                e.kind(),
                format!(
                    "mount point {} is a dead FUSE mount (its process died); run: fusermount3 -u {}",
                    mnt.display(),
                    mnt.display()
                ),
            ));
        }
        Err(e) => {
            return Err(Error::new(
                e.kind(),
                format!("mount point {}: {e}", mnt.display()),
            ))
        }
    };
    // Inside the volume, the mount would hide the files it serves from the
    // process that serves them (or from its applier), and hang or break it.
    if crate::volume::lies_inside(mnt, volume) {
        return Err(Error::other(format!(
            "mount point {} is inside the volume {}; mount it outside the volume",
            mnt.display(),
            volume.display()
        )));
    }
    if !md.is_dir() {
        return Err(Error::other(format!(
            "mount point {} is not a directory",
            mnt.display()
        )));
    }
    let parent = mnt
        .canonicalize()?
        .parent()
        .map(std::fs::metadata)
        .transpose()?;
    if parent.is_some_and(|p| p.dev() != md.dev()) {
        return Err(Error::other(format!(
            "mount point {} is busy: something is mounted there",
            mnt.display()
        )));
    }
    if std::fs::read_dir(mnt)?.next().is_some() {
        return Err(Error::other(format!(
            "mount point {} is not empty",
            mnt.display()
        )));
    }
    Ok(())
}

/// Serves `vol` at `mountpoint` until it is unmounted, then gives the volume
/// back so the caller can close it. `on_mounted` receives a handle that
/// unmounts (for signal handlers).
pub fn serve(
    vol: crate::Volume,
    mountpoint: &Path,
    policy: SyncPolicy,
    listen: Option<&str>,
    readers: Readers,
    on_mounted: impl FnOnce(fuser::SessionUnmounter, Option<std::net::SocketAddr>),
) -> std::io::Result<crate::Volume> {
    use std::sync::atomic::{AtomicBool, Ordering};
    check_mountpoint(mountpoint, vol.path())?;
    let name = format!("jfs:{}", vol.path().display());
    let vol_path = vol.path().to_owned();
    // Replication: the server reads the journal files; the filesystem only
    // publishes each new head to it.
    let mut fs = MasterFs::with_policy(vol, policy == SyncPolicy::Fsync)?;
    let server = match listen {
        Some(addr) => Some(crate::ship::server::Server::start(
            crate::ship::server::ServerConfig {
                listen: crate::ship::with_default_port(addr),
                journal_dir: vol_path.join(crate::volume::JOURNAL_DIR),
                volume_id: fs.with_volume(|v| v.id()),
                key: crate::ship::read_key(&vol_path.join(crate::volume::SECRET_FILE))?,
                head: fs.publish_heads(),
                registry_file: Some(vol_path.join(crate::ship::server::REGISTRY_FILE)),
                log_name: "jfs-master",
            },
        )?),
        None => None,
    };
    let fs = Arc::new(fs);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(name),
        fuser::MountOption::Subtype("jfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::RW,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    config.acl = fuser::SessionACL::All;
    // Without `wake_here`, eight threads reading requests, not four:
    // creating 5,000 small files took 15-25% less time with eight while the
    // VM was fast, and the same time while it was slow (tmpfs and ext4, runs
    // alternated; see docs/PERFORMANCE.md). Sixteen were no better, and cold
    // reads did not change. The cost is memory: about 20 MB more at peak
    // with sixteen readers and writers at once. With it, one reader and
    // eight workers (see `threads`).
    let threads = Threads::new("jfs-long", readers, 8, 8)?;
    config.n_threads = Some(threads.readers());
    let threads_json = serde_json::json!({
        "readers": threads.readers(),
        "workers": threads.workers(),
    });
    // Resolved before the mount: afterwards, looking at the mount point asks
    // this filesystem, which is not serving yet.
    let absolute = mountpoint.canonicalize()?;
    let notifier = Arc::new(OnceLock::new());
    let mut session = fuser::Session::new(
        FuseMaster::new(fs.clone(), threads, notifier.clone()),
        mountpoint,
        &config,
    )?;
    let _ = notifier.set(session.notifier());
    crate::mounts::raise_read_ahead(&absolute);
    let server = server.map(Arc::new);
    let admin = crate::admin::serve(
        &vol_path,
        admin_handler(
            fs.clone(),
            policy,
            mountpoint,
            server.clone(),
            session.notifier(),
            threads_json,
        ),
    )?;
    on_mounted(
        session.unmount_callable(),
        server.as_ref().map(|s| s.local_addr()),
    );

    // Group commit for the interval policy.
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = match policy {
        SyncPolicy::Fsync => None,
        SyncPolicy::Interval(ms) => {
            let (fs, stop) = (fs.clone(), stop.clone());
            Some(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(ms));
                    let _ = fs.sync_journal();
                }
            }))
        }
    };
    // Runs until unmounted; the session and its FuseMaster are gone after.
    let result = session.run();
    drop(admin);
    drop(server);
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = syncer {
        let _ = t.join();
    }
    result?;
    let fs =
        Arc::try_unwrap(fs).map_err(|_| std::io::Error::other("the filesystem is still in use"))?;
    Ok(fs.into_volume())
}

/// Answers the admin socket for a mounted master.
fn admin_handler(
    fs: Arc<MasterFs>,
    policy: SyncPolicy,
    mountpoint: &Path,
    server: Option<Arc<crate::ship::server::Server>>,
    notifier: fuser::Notifier,
    threads: serde_json::Value,
) -> crate::admin::Handler {
    let mountpoint = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_owned());
    Arc::new(move |req| {
        if let crate::admin::Request::Rewind { to } = &req {
            let (r, touched) = fs
                .rewind(&crate::volume::parse_target(to))
                .map_err(|e| e.to_string())?;
            // The kernel drops what it cached of every node the undo touched.
            for path in &touched {
                let (parent, node) = fs.inodes_at(path);
                if let Some(parent) = parent {
                    let _ = notifier.inval_entry(
                        INodeNo(parent),
                        std::ffi::OsStr::from_bytes(path.file_name()),
                    );
                    let _ = notifier.inval_inode(INodeNo(parent), 0, 0);
                }
                if let Some(node) = node {
                    let _ = notifier.inval_inode(INodeNo(node), 0, 0);
                }
            }
            if policy == SyncPolicy::Fsync {
                fs.sync_journal()
                    .map_err(|e| format!("sync the journal: {e}"))?;
            }
            return Ok(crate::admin::rewound_json(&r));
        }
        let is_status = req == crate::admin::Request::Status;
        let mut answer = fs.with_volume(|v| crate::admin::answer_with(v, req))?;
        if is_status {
            answer["sync"] = policy.to_string().into();
            answer["mountpoint"] = mountpoint.display().to_string().into();
            answer["fuse_threads"] = threads.clone();
            if let Some(server) = &server {
                answer["listen"] = server.local_addr().to_string().into();
                answer["replicas"] = server.replicas();
            }
        }
        Ok(answer)
    })
}
