//! Compares two trees on everything a replica must reproduce: paths, types,
//! contents, sparse holes, permission bits, owners, nanosecond mtimes, symlink
//! targets, hardlink groups, device numbers, xattrs. atime and ctime are not
//! compared.
//!
//! Directory sizes and link counts are not compared either: they depend on the
//! filesystem's layout, not on anything a replica writes.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, SeekFrom};
use rustix::io::Errno;

/// Size of the chunks in which file contents are streamed and compared.
const CHUNK: usize = 1 << 20;

/// Longest xattr value shown in full by `Display`; longer ones are cut.
const DISPLAY_VALUE_MAX: usize = 64;

/// One way in which two trees differ. `path` is relative to the tree roots, as
/// raw bytes (Linux names are bytes); the root itself is the empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: Vec<u8>,
    pub kind: DifferenceKind,
}

/// What differs at a path. The declaration order is the order in which
/// differences at the same path are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DifferenceKind {
    /// The path exists only in the left tree (its subtree is not listed).
    OnlyInLeft,
    /// The path exists only in the right tree (its subtree is not listed).
    OnlyInRight,
    /// Both sides exist but with different types; nothing else is compared.
    FileType { left: FileKind, right: FileKind },
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    Mode { left: u32, right: u32 },
    /// `(uid, gid)`.
    Owner { left: (u32, u32), right: (u32, u32) },
    /// `(seconds, nanoseconds)` of the modification time.
    Mtime { left: (i64, u32), right: (i64, u32) },
    /// Regular file sizes; contents and holes are not compared when they differ.
    Size { left: u64, right: u64 },
    /// First differing byte offset of two regular files of the same size.
    Content { offset: u64 },
    /// Data extents `(start, end)` found with `SEEK_DATA`/`SEEK_HOLE`, for two
    /// regular files of the same size whose extent maps differ.
    Holes {
        left: Vec<(u64, u64)>,
        right: Vec<(u64, u64)>,
    },
    /// Symlink target bytes.
    SymlinkTarget { left: Vec<u8>, right: Vec<u8> },
    /// Device number of character or block devices.
    Rdev { left: u64, right: u64 },
    /// One extended attribute; `None` means absent on that side.
    Xattr {
        name: Vec<u8>,
        left: Option<Vec<u8>>,
        right: Option<Vec<u8>>,
    },
    /// Sorted paths sharing this path's inode, on each side.
    HardlinkGroup {
        left: Vec<Vec<u8>>,
        right: Vec<Vec<u8>>,
    },
}

/// Type of a filesystem node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// Options for [`compare_trees`]. The default compares everything.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    /// Do not compare the mtime of the root directories themselves.
    pub ignore_root_mtime: bool,
    /// Count a block of zeros inside a data extent as a hole. Linux reports
    /// ranges that `fallocate` allocated but nothing wrote as data or as
    /// holes depending on its page cache, so a tree that was rewound over
    /// such ranges can only be held to this.
    pub zero_blocks_are_holes: bool,
}

impl FileKind {
    fn of(meta: &Metadata) -> FileKind {
        FileKind::from_file_type(meta.file_type())
    }

    /// The kind a `rustix::fs::FileType` (of a `stat` mode or a directory entry) names.
    pub fn from_raw(ft: rustix::fs::FileType) -> FileKind {
        use rustix::fs::FileType as T;
        match ft {
            T::Directory => FileKind::Directory,
            T::Symlink => FileKind::Symlink,
            T::Fifo => FileKind::Fifo,
            T::Socket => FileKind::Socket,
            T::CharacterDevice => FileKind::CharDevice,
            T::BlockDevice => FileKind::BlockDevice,
            _ => FileKind::Regular,
        }
    }

    /// The kind a `std::fs::FileType` names.
    pub fn from_file_type(ft: std::fs::FileType) -> FileKind {
        if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_file() {
            FileKind::Regular
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else {
            FileKind::BlockDevice
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "regular file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
        })
    }
}

impl DifferenceKind {
    /// Position of the variant in the declaration order, used for sorting.
    fn rank(&self) -> u8 {
        match self {
            DifferenceKind::OnlyInLeft => 0,
            DifferenceKind::OnlyInRight => 1,
            DifferenceKind::FileType { .. } => 2,
            DifferenceKind::Mode { .. } => 3,
            DifferenceKind::Owner { .. } => 4,
            DifferenceKind::Mtime { .. } => 5,
            DifferenceKind::Size { .. } => 6,
            DifferenceKind::Content { .. } => 7,
            DifferenceKind::Holes { .. } => 8,
            DifferenceKind::SymlinkTarget { .. } => 9,
            DifferenceKind::Rdev { .. } => 10,
            DifferenceKind::Xattr { .. } => 11,
            DifferenceKind::HardlinkGroup { .. } => 12,
        }
    }
}

/// Renders a relative path for humans: valid UTF-8 is shown as is, every other
/// byte as `\xNN`. Control characters and the backslash itself are also written
/// as `\xNN`, so the result is one line and unambiguous. The empty path (the
/// root) is shown as `.`.
pub fn display_path(path: &[u8]) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    escape_bytes(path)
}

fn escape_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn display_value(value: &Option<Vec<u8>>) -> String {
    match value {
        None => "absent".to_string(),
        Some(v) if v.len() > DISPLAY_VALUE_MAX => format!(
            "\"{}\"... ({} bytes)",
            escape_bytes(&v[..DISPLAY_VALUE_MAX]),
            v.len()
        ),
        Some(v) => format!("\"{}\"", escape_bytes(v)),
    }
}

fn display_extents(extents: &[(u64, u64)]) -> String {
    let parts: Vec<String> = extents.iter().map(|(s, e)| format!("{s}..{e}")).collect();
    format!("[{}]", parts.join(", "))
}

fn display_group(paths: &[Vec<u8>]) -> String {
    let parts: Vec<String> = paths.iter().map(|p| display_path(p)).collect();
    format!("[{}]", parts.join(", "))
}

fn display_dev(dev: u64) -> String {
    format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev))
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", display_path(&self.path))?;
        match &self.kind {
            DifferenceKind::OnlyInLeft => write!(f, "only in left"),
            DifferenceKind::OnlyInRight => write!(f, "only in right"),
            DifferenceKind::FileType { left, right } => write!(f, "type {left} != {right}"),
            DifferenceKind::Mode { left, right } => write!(f, "mode {left:04o} != {right:04o}"),
            DifferenceKind::Owner { left, right } => {
                write!(f, "owner {}:{} != {}:{}", left.0, left.1, right.0, right.1)
            }
            DifferenceKind::Mtime { left, right } => write!(
                f,
                "mtime {}.{:09} != {}.{:09}",
                left.0, left.1, right.0, right.1
            ),
            DifferenceKind::Size { left, right } => write!(f, "size {left} != {right}"),
            DifferenceKind::Content { offset } => {
                write!(f, "content differs at offset {offset}")
            }
            DifferenceKind::Holes { left, right } => write!(
                f,
                "data extents {} != {}",
                display_extents(left),
                display_extents(right)
            ),
            DifferenceKind::SymlinkTarget { left, right } => write!(
                f,
                "symlink target \"{}\" != \"{}\"",
                escape_bytes(left),
                escape_bytes(right)
            ),
            DifferenceKind::Rdev { left, right } => write!(
                f,
                "device {} != {}",
                display_dev(*left),
                display_dev(*right)
            ),
            DifferenceKind::Xattr { name, left, right } => write!(
                f,
                "xattr {} {} != {}",
                escape_bytes(name),
                display_value(left),
                display_value(right)
            ),
            DifferenceKind::HardlinkGroup { left, right } => write!(
                f,
                "hardlink group {} != {}",
                display_group(left),
                display_group(right)
            ),
        }
    }
}

/// Adds the operation and the path to an error so that it can be located.
fn at_path<T, E: Into<io::Error>>(result: Result<T, E>, what: &str, path: &Path) -> io::Result<T> {
    result.map_err(|e| {
        let e: io::Error = e.into();
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    })
}

fn lstat(path: &Path) -> io::Result<Metadata> {
    at_path(std::fs::symlink_metadata(path), "lstat", path)
}

/// Names in a directory, sorted by bytes.
fn list_dir(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in at_path(std::fs::read_dir(path), "read directory", path)? {
        let entry = at_path(entry, "read directory", path)?;
        names.push(entry.file_name().into_vec());
    }
    names.sort();
    Ok(names)
}

fn child_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        let mut out = Vec::with_capacity(rel.len() + 1 + name.len());
        out.extend_from_slice(rel);
        out.push(b'/');
        out.extend_from_slice(name);
        out
    }
}

fn open_no_follow(path: &Path) -> io::Result<File> {
    let fd = at_path(
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ),
        "open",
        path,
    )?;
    Ok(File::from(fd))
}

/// Reads until `buf` is full or end of file; returns the number of bytes read.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Offset of the first byte at which the two streams differ, if any.
fn first_difference(
    left: &mut File,
    left_path: &Path,
    right: &mut File,
    right_path: &Path,
) -> io::Result<Option<u64>> {
    let mut lbuf = vec![0u8; CHUNK];
    let mut rbuf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let ln = at_path(fill(left, &mut lbuf), "read", left_path)?;
        let rn = at_path(fill(right, &mut rbuf), "read", right_path)?;
        let n = ln.min(rn);
        if lbuf[..n] != rbuf[..n] {
            let i = lbuf[..n]
                .iter()
                .zip(&rbuf[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(n);
            return Ok(Some(offset + i as u64));
        }
        if ln != rn {
            return Ok(Some(offset + n as u64));
        }
        if n == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

/// Data extents of a file as `(start, end)` pairs, found with `SEEK_DATA` and
/// `SEEK_HOLE`. A filesystem without support for them (`EINVAL`) is taken to
/// hold data everywhere, which is also what Linux reports for such filesystems.
fn data_extents(file: &File, size: u64, path: &Path) -> io::Result<Vec<(u64, u64)>> {
    at_path(data_extents_between(file, 0, size), "seek data", path)
}

/// `extents` less the 4 KiB blocks in them that hold only zeros.
fn without_zero_blocks(
    file: &File,
    extents: Vec<(u64, u64)>,
    path: &Path,
) -> io::Result<Vec<(u64, u64)>> {
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 4096;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; BLOCK as usize];
    for (start, end) in extents {
        let mut pos = start;
        while pos < end {
            let next = ((pos / BLOCK) + 1) * BLOCK;
            let stop = next.min(end);
            let b = &mut buf[..(stop - pos) as usize];
            at_path(file.read_exact_at(b, pos), "read", path)?;
            if b.iter().any(|&x| x != 0) {
                match out.last_mut() {
                    Some(last) if last.1 == pos => last.1 = stop,
                    _ => out.push((pos, stop)),
                }
            }
            pos = stop;
        }
    }
    Ok(out)
}

/// The data extents of `file` that lie within `from..to`, clipped to it.
pub(crate) fn data_extents_between(
    file: &File,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, u64)>, Errno> {
    let mut extents = Vec::new();
    let mut pos = from;
    while pos < to {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) => {
                extents.push((pos, to));
                break;
            }
            Err(e) => return Err(e),
        };
        if start >= to {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(end) => end.min(to),
            Err(Errno::NXIO) | Err(Errno::INVAL) => to,
            Err(e) => return Err(e),
        };
        let end = if end <= start { to } else { end };
        extents.push((start, end));
        pos = end;
    }
    Ok(extents)
}

fn is_unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// The NUL-separated list of xattr names of a node, without following it.
fn xattr_names(path: &Path) -> Result<Vec<u8>, Errno> {
    loop {
        let size = rustix::fs::llistxattr_query(path)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One xattr value, or `None` if it no longer exists.
fn xattr_value(path: &Path, name: &OsStr) -> Result<Option<Vec<u8>>, Errno> {
    loop {
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(size) => size,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e),
        };
        if size == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::lgetxattr(path, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// All xattrs of a node, without following it. A filesystem without xattr
/// support yields an empty map.
fn read_xattrs(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut map = BTreeMap::new();
    let names = match xattr_names(path) {
        Ok(names) => names,
        Err(e) if is_unsupported(e) => return Ok(map),
        Err(e) => return at_path(Err(e), "list xattrs of", path),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match xattr_value(path, OsStr::from_bytes(name)) {
            Ok(Some(value)) => {
                map.insert(name.to_vec(), value);
            }
            Ok(None) => {}
            Err(e) if is_unsupported(e) => {}
            Err(e) => return at_path(Err(e), "read xattr of", path),
        }
    }
    Ok(map)
}

fn mtime(meta: &Metadata) -> (i64, u32) {
    (meta.mtime(), meta.mtime_nsec() as u32)
}

/// Identity of an inode within one tree.
type InodeKey = (u64, u64);

fn inode_key(meta: &Metadata) -> InodeKey {
    (meta.dev(), meta.ino())
}

/// Non-directory paths of one tree grouped by inode.
#[derive(Default)]
struct LinkMap {
    groups: HashMap<InodeKey, Vec<Vec<u8>>>,
}

impl LinkMap {
    fn add(&mut self, meta: &Metadata, rel: &[u8]) {
        self.groups
            .entry(inode_key(meta))
            .or_default()
            .push(rel.to_vec());
    }

    /// Records every non-directory at or below `path` (present on one side
    /// only), so that links from compared paths into it are seen.
    fn add_subtree(&mut self, rel: &[u8], path: &Path, meta: &Metadata) -> io::Result<()> {
        if !meta.is_dir() {
            self.add(meta, rel);
            return Ok(());
        }
        let mut dirs = vec![(rel.to_vec(), path.to_path_buf())];
        while let Some((dir_rel, dir_path)) = dirs.pop() {
            for name in list_dir(&dir_path)? {
                let rel = child_rel(&dir_rel, &name);
                let path = dir_path.join(OsStr::from_bytes(&name));
                let meta = lstat(&path)?;
                if meta.is_dir() {
                    dirs.push((rel, path));
                } else {
                    self.add(&meta, &rel);
                }
            }
        }
        Ok(())
    }

    fn sort(&mut self) {
        for paths in self.groups.values_mut() {
            paths.sort();
        }
    }
}

struct Walk<'a> {
    opts: &'a CompareOptions,
    diffs: Vec<Difference>,
    left_links: LinkMap,
    right_links: LinkMap,
    /// Non-directories present with the same type on both sides.
    common: Vec<(Vec<u8>, InodeKey, InodeKey)>,
    /// Directories present on both sides and still to be listed.
    pending: Vec<(Vec<u8>, PathBuf, PathBuf)>,
}

impl Walk<'_> {
    fn push(&mut self, rel: &[u8], kind: DifferenceKind) {
        self.diffs.push(Difference {
            path: rel.to_vec(),
            kind,
        });
    }

    fn compare_node(
        &mut self,
        rel: &[u8],
        lpath: &Path,
        lmeta: &Metadata,
        rpath: &Path,
        rmeta: &Metadata,
    ) -> io::Result<()> {
        let lkind = FileKind::of(lmeta);
        let rkind = FileKind::of(rmeta);
        if lkind != rkind {
            self.push(
                rel,
                DifferenceKind::FileType {
                    left: lkind,
                    right: rkind,
                },
            );
            self.left_links.add_subtree(rel, lpath, lmeta)?;
            self.right_links.add_subtree(rel, rpath, rmeta)?;
            return Ok(());
        }

        let (lmode, rmode) = (lmeta.mode() & 0o7777, rmeta.mode() & 0o7777);
        if lmode != rmode {
            self.push(
                rel,
                DifferenceKind::Mode {
                    left: lmode,
                    right: rmode,
                },
            );
        }
        let (lown, rown) = ((lmeta.uid(), lmeta.gid()), (rmeta.uid(), rmeta.gid()));
        if lown != rown {
            self.push(
                rel,
                DifferenceKind::Owner {
                    left: lown,
                    right: rown,
                },
            );
        }
        let skip_mtime = rel.is_empty() && self.opts.ignore_root_mtime;
        let (lmtime, rmtime) = (mtime(lmeta), mtime(rmeta));
        if !skip_mtime && lmtime != rmtime {
            self.push(
                rel,
                DifferenceKind::Mtime {
                    left: lmtime,
                    right: rmtime,
                },
            );
        }

        match lkind {
            FileKind::Regular => self.compare_regular(rel, lpath, lmeta, rpath, rmeta)?,
            FileKind::Symlink => {
                let ltarget = at_path(std::fs::read_link(lpath), "read link", lpath)?;
                let rtarget = at_path(std::fs::read_link(rpath), "read link", rpath)?;
                if ltarget != rtarget {
                    self.push(
                        rel,
                        DifferenceKind::SymlinkTarget {
                            left: ltarget.into_os_string().into_vec(),
                            right: rtarget.into_os_string().into_vec(),
                        },
                    );
                }
            }
            FileKind::CharDevice | FileKind::BlockDevice => {
                if lmeta.rdev() != rmeta.rdev() {
                    self.push(
                        rel,
                        DifferenceKind::Rdev {
                            left: lmeta.rdev(),
                            right: rmeta.rdev(),
                        },
                    );
                }
            }
            FileKind::Directory | FileKind::Fifo | FileKind::Socket => {}
        }

        self.compare_xattrs(rel, lpath, rpath)?;

        if lkind == FileKind::Directory {
            self.pending
                .push((rel.to_vec(), lpath.to_path_buf(), rpath.to_path_buf()));
        } else {
            self.left_links.add(lmeta, rel);
            self.right_links.add(rmeta, rel);
            self.common
                .push((rel.to_vec(), inode_key(lmeta), inode_key(rmeta)));
        }
        Ok(())
    }

    fn compare_regular(
        &mut self,
        rel: &[u8],
        lpath: &Path,
        lmeta: &Metadata,
        rpath: &Path,
        rmeta: &Metadata,
    ) -> io::Result<()> {
        let (lsize, rsize) = (lmeta.size(), rmeta.size());
        if lsize != rsize {
            self.push(
                rel,
                DifferenceKind::Size {
                    left: lsize,
                    right: rsize,
                },
            );
            return Ok(());
        }
        let mut lfile = open_no_follow(lpath)?;
        let mut rfile = open_no_follow(rpath)?;
        if let Some(offset) = first_difference(&mut lfile, lpath, &mut rfile, rpath)? {
            self.push(rel, DifferenceKind::Content { offset });
        }
        let mut lext = data_extents(&lfile, lsize, lpath)?;
        let mut rext = data_extents(&rfile, rsize, rpath)?;
        if lext != rext && self.opts.zero_blocks_are_holes {
            lext = without_zero_blocks(&lfile, lext, lpath)?;
            rext = without_zero_blocks(&rfile, rext, rpath)?;
        }
        if lext != rext {
            self.push(
                rel,
                DifferenceKind::Holes {
                    left: lext,
                    right: rext,
                },
            );
        }
        Ok(())
    }

    fn compare_xattrs(&mut self, rel: &[u8], lpath: &Path, rpath: &Path) -> io::Result<()> {
        let mut left = read_xattrs(lpath)?;
        let mut right = read_xattrs(rpath)?;
        let mut names: Vec<Vec<u8>> = left.keys().chain(right.keys()).cloned().collect();
        names.sort();
        names.dedup();
        for name in names {
            let lvalue = left.remove(&name);
            let rvalue = right.remove(&name);
            if lvalue != rvalue {
                self.push(
                    rel,
                    DifferenceKind::Xattr {
                        name,
                        left: lvalue,
                        right: rvalue,
                    },
                );
            }
        }
        Ok(())
    }

    fn compare_dir(&mut self, rel: &[u8], lpath: &Path, rpath: &Path) -> io::Result<()> {
        let lnames = list_dir(lpath)?;
        let rnames = list_dir(rpath)?;
        let (mut i, mut j) = (0, 0);
        while i < lnames.len() || j < rnames.len() {
            let order = match (lnames.get(i), rnames.get(j)) {
                (Some(l), Some(r)) => l.cmp(r),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let name = &lnames[i];
                    let child = child_rel(rel, name);
                    let path = lpath.join(OsStr::from_bytes(name));
                    let meta = lstat(&path)?;
                    self.push(&child, DifferenceKind::OnlyInLeft);
                    self.left_links.add_subtree(&child, &path, &meta)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let name = &rnames[j];
                    let child = child_rel(rel, name);
                    let path = rpath.join(OsStr::from_bytes(name));
                    let meta = lstat(&path)?;
                    self.push(&child, DifferenceKind::OnlyInRight);
                    self.right_links.add_subtree(&child, &path, &meta)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let name = &lnames[i];
                    let child = child_rel(rel, name);
                    let lchild = lpath.join(OsStr::from_bytes(name));
                    let rchild = rpath.join(OsStr::from_bytes(name));
                    let lmeta = lstat(&lchild)?;
                    let rmeta = lstat(&rchild)?;
                    self.compare_node(&child, &lchild, &lmeta, &rchild, &rmeta)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn compare_hardlinks(&mut self) {
        self.left_links.sort();
        self.right_links.sort();
        let common = std::mem::take(&mut self.common);
        for (rel, lkey, rkey) in common {
            let left = &self.left_links.groups[&lkey];
            let right = &self.right_links.groups[&rkey];
            if left != right {
                let kind = DifferenceKind::HardlinkGroup {
                    left: left.clone(),
                    right: right.clone(),
                };
                self.push(&rel, kind);
            }
        }
    }
}

/// Walks both trees (never following symlinks) and returns every difference,
/// sorted by path bytes, then by the declaration order of [`DifferenceKind`],
/// then by xattr name. Err only for I/O errors that prevent comparing (e.g. a
/// root missing), with the path in the message.
///
/// Paths present on one side only are reported once and not descended into,
/// nor are paths whose types differ. Hardlink groups are still computed over
/// whole trees, so a link from a compared path into such a subtree shows up as
/// a `HardlinkGroup` difference.
pub fn compare_trees(
    left: &Path,
    right: &Path,
    opts: &CompareOptions,
) -> io::Result<Vec<Difference>> {
    let lmeta = lstat(left)?;
    let rmeta = lstat(right)?;
    let mut walk = Walk {
        opts,
        diffs: Vec::new(),
        left_links: LinkMap::default(),
        right_links: LinkMap::default(),
        common: Vec::new(),
        pending: Vec::new(),
    };
    walk.compare_node(&[], left, &lmeta, right, &rmeta)?;
    while let Some((rel, lpath, rpath)) = walk.pending.pop() {
        walk.compare_dir(&rel, &lpath, &rpath)?;
    }
    walk.compare_hardlinks();

    let mut diffs = walk.diffs;
    diffs.sort_by(|a, b| {
        a.path
            .cmp(&b.path)
            .then_with(|| a.kind.rank().cmp(&b.kind.rank()))
            .then_with(|| match (&a.kind, &b.kind) {
                (DifferenceKind::Xattr { name: x, .. }, DifferenceKind::Xattr { name: y, .. }) => {
                    x.cmp(y)
                }
                _ => std::cmp::Ordering::Equal,
            })
    });
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{AtFlags, FileType, Timespec, Timestamps, XattrFlags, CWD};
    use std::io::{Seek, Write};
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    const MIB: u64 = 1 << 20;
    const T0: (i64, u32) = (1_600_000_000, 123_456_789);

    fn set_mtime(path: &Path, (sec, nsec): (i64, u32)) {
        let ts = Timespec {
            tv_sec: sec,
            tv_nsec: nsec.into(),
        };
        let times = Timestamps {
            last_access: ts,
            last_modification: ts,
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    /// Sets the mtime of every node of a tree, the root included, to `T0`.
    fn settle(root: &Path) {
        set_mtime(root, T0);
        if !std::fs::symlink_metadata(root).unwrap().is_dir() {
            return;
        }
        for entry in std::fs::read_dir(root).unwrap() {
            settle(&entry.unwrap().path());
        }
    }

    fn p(root: &TempDir, rel: &[u8]) -> PathBuf {
        root.path().join(OsStr::from_bytes(rel))
    }

    fn write(root: &TempDir, rel: &[u8], data: &[u8]) {
        std::fs::write(p(root, rel), data).unwrap();
    }

    fn mkdir(root: &TempDir, rel: &[u8]) {
        std::fs::create_dir(p(root, rel)).unwrap();
    }

    fn symlink(root: &TempDir, rel: &[u8], target: &[u8]) {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), p(root, rel)).unwrap();
    }

    fn chmod(root: &TempDir, rel: &[u8], mode: u32) {
        std::fs::set_permissions(p(root, rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn set_xattr(root: &TempDir, rel: &[u8], name: &str, value: &[u8]) {
        rustix::fs::lsetxattr(p(root, rel), name, value, XattrFlags::empty()).unwrap();
    }

    fn mknod(root: &TempDir, rel: &[u8], file_type: FileType, dev: u64) {
        rustix::fs::mknodat(
            CWD,
            p(root, rel),
            file_type,
            Mode::from_raw_mode(0o640),
            dev,
        )
        .unwrap();
    }

    fn pair() -> (TempDir, TempDir) {
        (TempDir::new().unwrap(), TempDir::new().unwrap())
    }

    fn compare(left: &TempDir, right: &TempDir) -> Vec<Difference> {
        compare_trees(left.path(), right.path(), &CompareOptions::default()).unwrap()
    }

    /// Sets every mtime on both sides to `T0`, then compares.
    fn settled_compare(left: &TempDir, right: &TempDir) -> Vec<Difference> {
        settle(left.path());
        settle(right.path());
        compare(left, right)
    }

    fn diff(path: &[u8], kind: DifferenceKind) -> Difference {
        Difference {
            path: path.to_vec(),
            kind,
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// A tree holding every kind of node and attribute the comparison covers.
    fn build_everything(root: &TempDir) {
        mkdir(root, b"d");
        mkdir(root, b"d/e");
        mkdir(root, b"d/e/empty-dir");
        write(root, b"d/file", b"hello\n");
        chmod(root, b"d/file", 0o640);
        write(root, b"empty", b"");
        write(root, b"setuid", b"#!/bin/sh\n");
        chmod(root, b"setuid", 0o4755);
        chmod(root, b"d/e", 0o1777);
        write(root, b"big", &pattern(2 * MIB as usize + 12345));

        let mut sparse = File::create(p(root, b"sparse")).unwrap();
        sparse.set_len(3 * MIB).unwrap();
        sparse.seek(io::SeekFrom::Start(MIB)).unwrap();
        sparse.write_all(b"island").unwrap();
        drop(sparse);

        symlink(root, b"link", b"d/file");
        symlink(root, b"dangling", b"nowhere/\xff");
        mknod(root, b"fifo", FileType::Fifo, 0);
        mknod(
            root,
            b"null",
            FileType::CharacterDevice,
            rustix::fs::makedev(1, 3),
        );
        mknod(
            root,
            b"loop",
            FileType::BlockDevice,
            rustix::fs::makedev(7, 0),
        );
        let socket = p(root, b"socket");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());

        write(root, b"h1", b"linked\n");
        std::fs::hard_link(p(root, b"h1"), p(root, b"d/h2")).unwrap();
        std::fs::hard_link(p(root, b"h1"), p(root, b"d/e/h3")).unwrap();

        set_xattr(root, b"d/file", "user.x", b"file value");
        set_xattr(root, b"d", "user.x", b"dir value");
        set_xattr(root, b"", "user.x", b"root value");
        set_xattr(root, b"h1", "user.empty", b"");
        set_xattr(root, b"big", "user.x", &pattern(3000));

        write(root, b"caf\xe9", b"non-UTF-8 name\n");
        std::os::unix::fs::lchown(p(root, b"d/file"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::lchown(p(root, b"link"), Some(1002), Some(1003)).unwrap();
    }

    #[test]
    fn identical_trees_with_every_file_type_have_no_differences() {
        let (left, right) = pair();
        build_everything(&left);
        build_everything(&right);
        assert_eq!(settled_compare(&left, &right), vec![]);
        let opts = CompareOptions {
            ignore_root_mtime: true,
            ..CompareOptions::default()
        };
        assert_eq!(
            compare_trees(left.path(), right.path(), &opts).unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_tree_compared_with_itself_has_no_differences() {
        let dir = TempDir::new().unwrap();
        build_everything(&dir);
        let diffs = compare_trees(dir.path(), dir.path(), &CompareOptions::default()).unwrap();
        assert_eq!(diffs, vec![]);
    }

    #[test]
    fn one_sided_entries_are_reported_once_without_descending() {
        let (left, right) = pair();
        mkdir(&left, b"only-left");
        mkdir(&left, b"only-left/sub");
        write(&left, b"only-left/sub/f", b"x");
        write(&right, b"only-right", b"y");
        mkdir(&left, b"both");
        mkdir(&right, b"both");
        symlink(&right, b"both/link", b"target");
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(b"both/link", DifferenceKind::OnlyInRight),
                diff(b"only-left", DifferenceKind::OnlyInLeft),
                diff(b"only-right", DifferenceKind::OnlyInRight),
            ]
        );
    }

    #[test]
    fn differing_types_are_reported_without_descending() {
        let (left, right) = pair();
        write(&left, b"x", b"file");
        mkdir(&right, b"x");
        write(&right, b"x/inner", b"file");
        symlink(&left, b"y", b"x");
        mknod(&right, b"y", FileType::Fifo, 0);
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"x",
                    DifferenceKind::FileType {
                        left: FileKind::Regular,
                        right: FileKind::Directory,
                    }
                ),
                diff(
                    b"y",
                    DifferenceKind::FileType {
                        left: FileKind::Symlink,
                        right: FileKind::Fifo,
                    }
                ),
            ]
        );
    }

    #[test]
    fn permission_bits_including_special_bits_are_compared() {
        let (left, right) = pair();
        for root in [&left, &right] {
            write(root, b"f", b"same");
            write(root, b"s", b"same");
            mkdir(root, b"d");
        }
        chmod(&left, b"f", 0o644);
        chmod(&right, b"f", 0o600);
        chmod(&left, b"s", 0o755);
        chmod(&right, b"s", 0o4755);
        chmod(&left, b"d", 0o1777);
        chmod(&right, b"d", 0o777);
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"d",
                    DifferenceKind::Mode {
                        left: 0o1777,
                        right: 0o777,
                    }
                ),
                diff(
                    b"f",
                    DifferenceKind::Mode {
                        left: 0o644,
                        right: 0o600,
                    }
                ),
                diff(
                    b"s",
                    DifferenceKind::Mode {
                        left: 0o755,
                        right: 0o4755,
                    }
                ),
            ]
        );
    }

    #[test]
    fn owners_are_compared_without_following_symlinks() {
        let (left, right) = pair();
        for root in [&left, &right] {
            write(root, b"f", b"same");
            symlink(root, b"l", b"f");
        }
        std::os::unix::fs::lchown(p(&left, b"f"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::lchown(p(&right, b"f"), Some(1000), Some(2000)).unwrap();
        std::os::unix::fs::lchown(p(&right, b"l"), Some(3000), Some(0)).unwrap();
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"f",
                    DifferenceKind::Owner {
                        left: (1000, 1000),
                        right: (1000, 2000),
                    }
                ),
                diff(
                    b"l",
                    DifferenceKind::Owner {
                        left: (0, 0),
                        right: (3000, 0),
                    }
                ),
            ]
        );
    }

    #[test]
    fn mtimes_are_compared_to_the_nanosecond() {
        let (left, right) = pair();
        for root in [&left, &right] {
            write(root, b"f", b"same");
            symlink(root, b"l", b"f");
        }
        settle(left.path());
        settle(right.path());
        set_mtime(&p(&right, b"f"), (T0.0, T0.1 + 1));
        set_mtime(&p(&left, b"l"), (-5, 999_999_999));
        assert_eq!(
            compare(&left, &right),
            vec![
                diff(
                    b"f",
                    DifferenceKind::Mtime {
                        left: T0,
                        right: (T0.0, T0.1 + 1),
                    }
                ),
                diff(
                    b"l",
                    DifferenceKind::Mtime {
                        left: (-5, 999_999_999),
                        right: T0,
                    }
                ),
            ]
        );
    }

    #[test]
    fn root_metadata_is_compared_unless_root_mtime_is_ignored() {
        let (left, right) = pair();
        settle(left.path());
        settle(right.path());
        set_mtime(right.path(), (T0.0 + 60, 0));
        chmod(&left, b"", 0o700);
        chmod(&right, b"", 0o755);
        set_xattr(&left, b"", "user.root", b"1");
        assert_eq!(
            compare(&left, &right),
            vec![
                diff(
                    b"",
                    DifferenceKind::Mode {
                        left: 0o700,
                        right: 0o755,
                    }
                ),
                diff(
                    b"",
                    DifferenceKind::Mtime {
                        left: T0,
                        right: (T0.0 + 60, 0),
                    }
                ),
                diff(
                    b"",
                    DifferenceKind::Xattr {
                        name: b"user.root".to_vec(),
                        left: Some(b"1".to_vec()),
                        right: None,
                    }
                ),
            ]
        );
        let opts = CompareOptions {
            ignore_root_mtime: true,
            ..CompareOptions::default()
        };
        assert_eq!(
            compare_trees(left.path(), right.path(), &opts).unwrap(),
            vec![
                diff(
                    b"",
                    DifferenceKind::Mode {
                        left: 0o700,
                        right: 0o755,
                    }
                ),
                diff(
                    b"",
                    DifferenceKind::Xattr {
                        name: b"user.root".to_vec(),
                        left: Some(b"1".to_vec()),
                        right: None,
                    }
                ),
            ]
        );
    }

    #[test]
    fn ignoring_root_mtime_still_compares_other_mtimes() {
        let (left, right) = pair();
        mkdir(&left, b"d");
        mkdir(&right, b"d");
        settle(left.path());
        settle(right.path());
        set_mtime(left.path(), (1, 0));
        set_mtime(&p(&left, b"d"), (2, 0));
        let opts = CompareOptions {
            ignore_root_mtime: true,
            ..CompareOptions::default()
        };
        assert_eq!(
            compare_trees(left.path(), right.path(), &opts).unwrap(),
            vec![diff(
                b"d",
                DifferenceKind::Mtime {
                    left: (2, 0),
                    right: T0,
                }
            )]
        );
    }

    #[test]
    fn sizes_differ_and_content_is_then_not_compared() {
        let (left, right) = pair();
        write(&left, b"f", b"short");
        write(&right, b"f", b"longer content");
        assert_eq!(
            settled_compare(&left, &right),
            vec![diff(b"f", DifferenceKind::Size { left: 5, right: 14 })]
        );
    }

    #[test]
    fn content_difference_reports_first_differing_offset() {
        let (left, right) = pair();
        let data = pattern(3 * MIB as usize + 100);
        let mut other = data.clone();
        let offset = 2 * MIB as usize + 17;
        other[offset] ^= 0xff;
        other[offset + 5000] ^= 0xff;
        write(&left, b"big", &data);
        write(&right, b"big", &other);
        write(&left, b"small", b"abc");
        write(&right, b"small", b"xbc");
        write(&left, b"tail", b"abcd");
        write(&right, b"tail", b"abcD");
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"big",
                    DifferenceKind::Content {
                        offset: offset as u64,
                    }
                ),
                diff(b"small", DifferenceKind::Content { offset: 0 }),
                diff(b"tail", DifferenceKind::Content { offset: 3 }),
            ]
        );
    }

    #[test]
    fn sparse_and_dense_files_with_equal_bytes_differ_only_in_holes() {
        let (left, right) = pair();
        let tail = b"data after the hole";
        let size = MIB + tail.len() as u64;

        let mut sparse = File::create(p(&left, b"f")).unwrap();
        sparse.set_len(MIB).unwrap();
        sparse.seek(io::SeekFrom::Start(MIB)).unwrap();
        sparse.write_all(tail).unwrap();
        sparse.sync_all().unwrap();
        drop(sparse);

        let mut dense = vec![0u8; MIB as usize];
        dense.extend_from_slice(tail);
        write(&right, b"f", &dense);
        File::open(p(&right, b"f")).unwrap().sync_all().unwrap();

        assert_eq!(
            settled_compare(&left, &right),
            vec![diff(
                b"f",
                DifferenceKind::Holes {
                    left: vec![(MIB, size)],
                    right: vec![(0, size)],
                }
            )]
        );
    }

    #[test]
    fn data_extents_describe_holes_and_empty_files() {
        let dir = TempDir::new().unwrap();
        let path = p(&dir, b"f");
        let mut file = File::create(&path).unwrap();
        file.write_all(&pattern(8192)).unwrap();
        file.seek(io::SeekFrom::Start(2 * MIB)).unwrap();
        file.write_all(&pattern(4096)).unwrap();
        file.set_len(4 * MIB).unwrap();
        file.sync_all().unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            data_extents(&file, 4 * MIB, &path).unwrap(),
            vec![(0, 8192), (2 * MIB, 2 * MIB + 4096)]
        );

        let empty_path = p(&dir, b"empty");
        let empty = File::create(&empty_path).unwrap();
        assert_eq!(data_extents(&empty, 0, &empty_path).unwrap(), vec![]);
        empty.set_len(MIB).unwrap();
        assert_eq!(data_extents(&empty, MIB, &empty_path).unwrap(), vec![]);
    }

    #[test]
    fn symlink_targets_are_compared_as_bytes() {
        let (left, right) = pair();
        symlink(&left, b"l", b"target-a");
        symlink(&right, b"l", b"target-b");
        symlink(&left, b"raw", b"x\xff");
        symlink(&right, b"raw", b"x\xfe");
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"l",
                    DifferenceKind::SymlinkTarget {
                        left: b"target-a".to_vec(),
                        right: b"target-b".to_vec(),
                    }
                ),
                diff(
                    b"raw",
                    DifferenceKind::SymlinkTarget {
                        left: b"x\xff".to_vec(),
                        right: b"x\xfe".to_vec(),
                    }
                ),
            ]
        );
    }

    #[test]
    fn symlinks_are_never_followed() {
        // The same relative target resolves to different directories.
        let (outer_left, outer_right) = pair();
        for outer in [&outer_left, &outer_right] {
            mkdir(outer, b"root");
            mkdir(outer, b"root/sub");
            mkdir(outer, b"outside");
            symlink(outer, b"root/sub/to", b"../../outside");
            symlink(outer, b"root/file-link", b"../outside/f");
        }
        write(&outer_left, b"outside/f", b"one");
        write(&outer_right, b"outside/f", b"two, longer");
        chmod(&outer_left, b"outside", 0o700);
        let (left, right) = (p(&outer_left, b"root"), p(&outer_right, b"root"));
        settle(&left);
        settle(&right);
        assert_eq!(
            compare_trees(&left, &right, &CompareOptions::default()).unwrap(),
            vec![]
        );

        // Roots that are symlinks are compared as symlinks.
        let (left, right) = (p(&outer_left, b"root-link"), p(&outer_right, b"root-link"));
        std::os::unix::fs::symlink(outer_left.path(), &left).unwrap();
        std::os::unix::fs::symlink("elsewhere", &right).unwrap();
        settle(&left);
        settle(&right);
        assert_eq!(
            compare_trees(&left, &right, &CompareOptions::default()).unwrap(),
            vec![diff(
                b"",
                DifferenceKind::SymlinkTarget {
                    left: outer_left.path().as_os_str().as_bytes().to_vec(),
                    right: b"elsewhere".to_vec(),
                }
            )]
        );
    }

    #[test]
    fn device_numbers_are_compared() {
        let (left, right) = pair();
        mknod(
            &left,
            b"c",
            FileType::CharacterDevice,
            rustix::fs::makedev(1, 3),
        );
        mknod(
            &right,
            b"c",
            FileType::CharacterDevice,
            rustix::fs::makedev(1, 5),
        );
        mknod(
            &left,
            b"b",
            FileType::BlockDevice,
            rustix::fs::makedev(7, 0),
        );
        mknod(
            &right,
            b"b",
            FileType::BlockDevice,
            rustix::fs::makedev(259, 70000),
        );
        mknod(&left, b"p", FileType::Fifo, 0);
        mknod(&right, b"p", FileType::Fifo, 0);
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"b",
                    DifferenceKind::Rdev {
                        left: rustix::fs::makedev(7, 0),
                        right: rustix::fs::makedev(259, 70000),
                    }
                ),
                diff(
                    b"c",
                    DifferenceKind::Rdev {
                        left: rustix::fs::makedev(1, 3),
                        right: rustix::fs::makedev(1, 5),
                    }
                ),
            ]
        );
    }

    #[test]
    fn xattr_values_and_presence_are_compared() {
        let (left, right) = pair();
        for root in [&left, &right] {
            write(root, b"f", b"same");
            mkdir(root, b"d");
            set_xattr(root, b"f", "user.same", b"v");
        }
        set_xattr(&left, b"f", "user.x", b"1");
        set_xattr(&right, b"f", "user.x", b"2");
        set_xattr(&left, b"f", "user.y", b"");
        set_xattr(&right, b"d", "user.z", b"dir");
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"d",
                    DifferenceKind::Xattr {
                        name: b"user.z".to_vec(),
                        left: None,
                        right: Some(b"dir".to_vec()),
                    }
                ),
                diff(
                    b"f",
                    DifferenceKind::Xattr {
                        name: b"user.x".to_vec(),
                        left: Some(b"1".to_vec()),
                        right: Some(b"2".to_vec()),
                    }
                ),
                diff(
                    b"f",
                    DifferenceKind::Xattr {
                        name: b"user.y".to_vec(),
                        left: Some(Vec::new()),
                        right: None,
                    }
                ),
            ]
        );
    }

    #[test]
    fn symlink_xattrs_are_read_without_following() {
        let (left, right) = pair();
        for root in [&left, &right] {
            write(root, b"target", b"same");
            symlink(root, b"l", b"target");
        }
        // user.* is not allowed on symlinks; trusted.* needs CAP_SYS_ADMIN.
        match rustix::fs::lsetxattr(p(&left, b"l"), "trusted.t", b"on link", XattrFlags::empty()) {
            Ok(()) => {}
            Err(Errno::PERM) => {
                eprintln!("skipping: no permission to set trusted.* xattrs");
                return;
            }
            Err(e) => panic!("lsetxattr: {e}"),
        }
        assert_eq!(
            settled_compare(&left, &right),
            vec![diff(
                b"l",
                DifferenceKind::Xattr {
                    name: b"trusted.t".to_vec(),
                    left: Some(b"on link".to_vec()),
                    right: None,
                }
            )]
        );
    }

    #[test]
    fn hardlinked_pair_differs_from_separate_identical_files() {
        let (left, right) = pair();
        mkdir(&left, b"d");
        mkdir(&right, b"d");
        write(&left, b"a", b"same");
        std::fs::hard_link(p(&left, b"a"), p(&left, b"d/b")).unwrap();
        write(&right, b"a", b"same");
        write(&right, b"d/b", b"same");
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"a",
                    DifferenceKind::HardlinkGroup {
                        left: vec![b"a".to_vec(), b"d/b".to_vec()],
                        right: vec![b"a".to_vec()],
                    }
                ),
                diff(
                    b"d/b",
                    DifferenceKind::HardlinkGroup {
                        left: vec![b"a".to_vec(), b"d/b".to_vec()],
                        right: vec![b"d/b".to_vec()],
                    }
                ),
            ]
        );
    }

    #[test]
    fn hardlink_groups_with_different_members_are_reported() {
        let (left, right) = pair();
        for root in [&left, &right] {
            write(root, b"a", b"same");
            write(root, b"c", b"same");
        }
        // Left: {a, b} and {c}; right: {a} and {b, c}.
        std::fs::hard_link(p(&left, b"a"), p(&left, b"b")).unwrap();
        std::fs::hard_link(p(&right, b"c"), p(&right, b"b")).unwrap();
        // A link into a subtree present on the left only.
        write(&left, b"e", b"same");
        mkdir(&left, b"only");
        std::fs::hard_link(p(&left, b"e"), p(&left, b"only/e")).unwrap();
        write(&right, b"e", b"same");
        let strings = |v: &[&[u8]]| v.iter().map(|s| s.to_vec()).collect::<Vec<_>>();
        assert_eq!(
            settled_compare(&left, &right),
            vec![
                diff(
                    b"a",
                    DifferenceKind::HardlinkGroup {
                        left: strings(&[b"a", b"b"]),
                        right: strings(&[b"a"]),
                    }
                ),
                diff(
                    b"b",
                    DifferenceKind::HardlinkGroup {
                        left: strings(&[b"a", b"b"]),
                        right: strings(&[b"b", b"c"]),
                    }
                ),
                diff(
                    b"c",
                    DifferenceKind::HardlinkGroup {
                        left: strings(&[b"c"]),
                        right: strings(&[b"b", b"c"]),
                    }
                ),
                diff(
                    b"e",
                    DifferenceKind::HardlinkGroup {
                        left: strings(&[b"e", b"only/e"]),
                        right: strings(&[b"e"]),
                    }
                ),
                diff(b"only", DifferenceKind::OnlyInLeft),
            ]
        );
    }

    #[test]
    fn non_utf8_names_are_compared_and_displayed_escaped() {
        let (left, right) = pair();
        write(&left, b"caf\xe9", b"left");
        write(&right, b"caf\xe9", b"righ");
        mkdir(&left, b"d\xff");
        let diffs = settled_compare(&left, &right);
        assert_eq!(
            diffs,
            vec![
                diff(b"caf\xe9", DifferenceKind::Content { offset: 0 }),
                diff(b"d\xff", DifferenceKind::OnlyInLeft),
            ]
        );
        assert_eq!(
            diffs[0].to_string(),
            "caf\\xe9: content differs at offset 0"
        );
        assert_eq!(diffs[1].to_string(), "d\\xff: only in left");
    }

    #[test]
    fn results_are_sorted_by_path_bytes_then_kind() {
        let (left, right) = pair();
        for root in [&left, &right] {
            mkdir(root, b"a");
            write(root, b"a/b", b"x");
            write(root, b"a.b", b"x");
            write(root, b"z", b"x");
        }
        write(&left, b"0", b"only left");
        write(&right, b"a/b", b"y");
        chmod(&left, b"a.b", 0o600);
        chmod(&right, b"a.b", 0o644);
        set_xattr(&left, b"a.b", "user.b", b"1");
        set_xattr(&left, b"a.b", "user.a", b"1");
        std::os::unix::fs::lchown(p(&right, b"a.b"), Some(7), Some(8)).unwrap();
        chmod(&left, b"a", 0o700);
        chmod(&right, b"a", 0o755);
        settle(left.path());
        settle(right.path());
        set_mtime(&p(&left, b"a.b"), (5, 5));
        chmod(&left, b"z", 0o600);
        chmod(&right, b"z", 0o644);
        let diffs = compare(&left, &right);
        let expected = vec![
            diff(b"0", DifferenceKind::OnlyInLeft),
            diff(
                b"a",
                DifferenceKind::Mode {
                    left: 0o700,
                    right: 0o755,
                },
            ),
            diff(
                b"a.b",
                DifferenceKind::Mode {
                    left: 0o600,
                    right: 0o644,
                },
            ),
            diff(
                b"a.b",
                DifferenceKind::Owner {
                    left: (0, 0),
                    right: (7, 8),
                },
            ),
            diff(
                b"a.b",
                DifferenceKind::Mtime {
                    left: (5, 5),
                    right: T0,
                },
            ),
            diff(
                b"a.b",
                DifferenceKind::Xattr {
                    name: b"user.a".to_vec(),
                    left: Some(b"1".to_vec()),
                    right: None,
                },
            ),
            diff(
                b"a.b",
                DifferenceKind::Xattr {
                    name: b"user.b".to_vec(),
                    left: Some(b"1".to_vec()),
                    right: None,
                },
            ),
            diff(b"a/b", DifferenceKind::Content { offset: 0 }),
            diff(
                b"z",
                DifferenceKind::Mode {
                    left: 0o600,
                    right: 0o644,
                },
            ),
        ];
        assert_eq!(diffs, expected);
        assert_eq!(compare(&left, &right), expected);
    }

    #[test]
    fn missing_root_is_an_error_naming_the_path() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("missing");
        let err = compare_trees(&missing, dir.path(), &CompareOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
        let err = compare_trees(dir.path(), &missing, &CompareOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn differences_display_as_one_line() {
        let line = |path: &[u8], kind| diff(path, kind).to_string();
        assert_eq!(
            line(
                b"a/b",
                DifferenceKind::Mode {
                    left: 0o644,
                    right: 0o600
                }
            ),
            "a/b: mode 0644 != 0600"
        );
        assert_eq!(
            line(
                b"s",
                DifferenceKind::Mode {
                    left: 0o4755,
                    right: 0o755
                }
            ),
            "s: mode 4755 != 0755"
        );
        assert_eq!(line(b"", DifferenceKind::OnlyInRight), ".: only in right");
        assert_eq!(
            line(
                b"x",
                DifferenceKind::FileType {
                    left: FileKind::Regular,
                    right: FileKind::CharDevice
                }
            ),
            "x: type regular file != character device"
        );
        assert_eq!(
            line(
                b"x",
                DifferenceKind::Owner {
                    left: (0, 0),
                    right: (1000, 100)
                }
            ),
            "x: owner 0:0 != 1000:100"
        );
        assert_eq!(
            line(
                b"x",
                DifferenceKind::Mtime {
                    left: (1, 5),
                    right: (1, 500_000_000)
                }
            ),
            "x: mtime 1.000000005 != 1.500000000"
        );
        assert_eq!(
            line(b"x", DifferenceKind::Size { left: 1, right: 2 }),
            "x: size 1 != 2"
        );
        assert_eq!(
            line(
                b"x",
                DifferenceKind::Holes {
                    left: vec![(0, 4096), (8192, 9000)],
                    right: vec![]
                }
            ),
            "x: data extents [0..4096, 8192..9000] != []"
        );
        assert_eq!(
            line(
                b"x",
                DifferenceKind::SymlinkTarget {
                    left: b"a\nb".to_vec(),
                    right: b"c".to_vec()
                }
            ),
            "x: symlink target \"a\\x0ab\" != \"c\""
        );
        assert_eq!(
            line(
                b"x",
                DifferenceKind::Rdev {
                    left: rustix::fs::makedev(1, 3),
                    right: rustix::fs::makedev(259, 70000)
                }
            ),
            "x: device 1:3 != 259:70000"
        );
        assert_eq!(
            line(
                b"x",
                DifferenceKind::Xattr {
                    name: b"user.x".to_vec(),
                    left: Some(b"v\xff".to_vec()),
                    right: None
                }
            ),
            "x: xattr user.x \"v\\xff\" != absent"
        );
        assert_eq!(
            line(
                b"x",
                DifferenceKind::Xattr {
                    name: b"user.x".to_vec(),
                    left: Some(vec![b'a'; 100]),
                    right: Some(Vec::new())
                }
            ),
            format!(
                "x: xattr user.x \"{}\"... (100 bytes) != \"\"",
                "a".repeat(64)
            )
        );
        assert_eq!(
            line(
                b"a",
                DifferenceKind::HardlinkGroup {
                    left: vec![b"a".to_vec(), b"caf\xe9".to_vec()],
                    right: vec![b"a".to_vec()]
                }
            ),
            "a: hardlink group [a, caf\\xe9] != [a]"
        );
    }

    #[test]
    fn display_path_escapes_only_what_is_needed() {
        assert_eq!(display_path(b""), ".");
        assert_eq!(display_path(b"plain/path"), "plain/path");
        assert_eq!(display_path("café/ü".as_bytes()), "café/ü");
        assert_eq!(display_path(b"caf\xe9"), "caf\\xe9");
        assert_eq!(display_path(b"\xc3"), "\\xc3");
        assert_eq!(display_path(b"back\\slash"), "back\\x5cslash");
        assert_eq!(display_path(b"tab\there"), "tab\\x09here");
    }
}
