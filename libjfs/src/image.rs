//! Images: the state of a volume at one position, as one verifiable stream.
//!
//! An image holds the volume id, the position `{seq, chain}` the tree is at,
//! and every node of the tree and of the attic with everything invariant 2
//! names: types, contents with their holes, modes, owners, mtimes, symlink
//! targets, device numbers, hardlink groups and xattrs. It is a header and
//! then a zstd stream of frames laid out like journal frames, each carrying
//! one [`Op`] (mkdir, create, write, link, ...) whose paths start with
//! `tree/` or `attic/`, and a trailer with the count of items and a SHA-256
//! of everything before it. docs/FORMAT.md gives the byte layout.
//!
//! The reader applies the ops through [`Tree`], the code every record goes
//! through, into a staging directory: an image gets the same refusals as a
//! record (no escape from the tree, no symlink on the way, no NUL, no
//! over-long name). Nothing read is used before its frame checksum passes,
//! and a bootstrap swaps the staged state in only after the trailer checks,
//! so a damaged, truncated or foreign image changes nothing.
//!
//! The writer must see a tree that does not change while it reads: the
//! caller holds the volume ([`Volume::open`] locks it; a following replica
//! holds its volume's mutex, which pauses applying).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, SeekFrom, Stat};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::format::{encode_frame, read_frame, ReadFrameError, VolumeId, FRAME_HEADER_LEN};
use crate::path::{escape_bytes, Node, RelPath};
use crate::position::Position;
use crate::record::{NewNode, Op, Record, SpecialKind, Timestamp, MAX_RECORD};
use crate::tree::{Tree, TreeError};
use crate::volume::{Bootstrap, ATTIC_DIR, TREE_DIR};
use crate::{Volume, VolumeError};

/// First bytes of an image file.
pub const IMAGE_MAGIC: [u8; 8] = *b"JFSIMAG\0";
/// Version of the image layout.
pub const IMAGE_VERSION: u16 = 1;
/// Bytes of the uncompressed header.
pub const IMAGE_HEADER_LEN: usize = 80;
/// First bytes of the trailer that follows the compressed stream.
pub const IMAGE_END_MAGIC: [u8; 8] = *b"JFSIEND\0";
/// Bytes of that trailer: magic and SHA-256.
pub const IMAGE_TRAILER_LEN: usize = 40;
const COMPRESSION_ZSTD: u16 = 1;
/// File contents travel in writes of at most this many bytes.
const CONTENT_CHUNK: usize = 1 << 20;
const ZSTD_LEVEL: i32 = 3;

/// Why an image could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("image header: {0}")]
    Header(String),
    #[error("image is damaged at item {item} (byte {offset} of the image): {reason}")]
    Corrupt {
        item: u64,
        offset: u64,
        reason: String,
    },
    #[error("image ends after item {items} (byte {offset}), before its trailer: it is truncated")]
    Truncated { items: u64, offset: u64 },
    #[error("reading the image at byte {offset}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("the image is of volume {found}, not of volume {expected}")]
    WrongVolume { expected: VolumeId, found: VolumeId },
    #[error("image item {item} ({op}) was refused")]
    Apply {
        item: u64,
        op: String,
        #[source]
        source: TreeError,
    },
    #[error("{path}: {reason}")]
    Source { path: String, reason: String },
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

type Result<T> = std::result::Result<T, ImageError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// What an image says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub volume: VolumeId,
    /// The position the tree and attic are at.
    pub position: Position,
}

impl ImageHeader {
    pub fn encode(&self) -> [u8; IMAGE_HEADER_LEN] {
        let mut b = [0u8; IMAGE_HEADER_LEN];
        b[0..8].copy_from_slice(&IMAGE_MAGIC);
        b[8..10].copy_from_slice(&IMAGE_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&COMPRESSION_ZSTD.to_le_bytes());
        b[16..32].copy_from_slice(&self.volume.0);
        b[32..40].copy_from_slice(&self.position.seq.to_le_bytes());
        b[40..72].copy_from_slice(&self.position.chain);
        let crc = crc32c::crc32c(&b[0..72]);
        b[72..76].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<ImageHeader> {
        let bad = |r: &str| Err(ImageError::Header(r.to_owned()));
        if b.len() < IMAGE_HEADER_LEN {
            return bad("truncated");
        }
        if b[0..8] != IMAGE_MAGIC {
            return bad("bad magic (not a jfs image)");
        }
        if crc32c::crc32c(&b[0..72]).to_le_bytes() != b[72..76] {
            return bad("checksum mismatch");
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        if u16_at(8) != IMAGE_VERSION {
            return Err(ImageError::Header(format!(
                "version {} (this build reads version {IMAGE_VERSION})",
                u16_at(8)
            )));
        }
        if u16_at(10) != COMPRESSION_ZSTD || b[12..16] != [0; 4] || b[76..80] != [0; 4] {
            return bad("unknown compression or flags");
        }
        let seq = u64::from_le_bytes(b[32..40].try_into().unwrap());
        if seq > crate::record::MAX_SEQ {
            return bad("sequence number out of range");
        }
        Ok(ImageHeader {
            volume: VolumeId(b[16..32].try_into().unwrap()),
            position: Position {
                seq,
                chain: b[40..72].try_into().unwrap(),
            },
        })
    }
}

/// One item of the stream. The variant indices are part of the format.
#[derive(Debug, Serialize, Deserialize)]
enum Item {
    /// An operation on the volume being built; its paths start with
    /// `tree/` or `attic/` (or are `tree` or `attic`, for their own metadata).
    Op(Op),
    /// The last item: how many came before it, and the SHA-256 of the
    /// header and every frame before this one.
    End { items: u64, sha256: [u8; 32] },
}

/// What writing an image did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageStats {
    /// Nodes of tree and attic (a hardlink group counts once per name).
    pub nodes: u64,
    /// Bytes of file data (holes not counted).
    pub data_bytes: u64,
    /// Items in the stream.
    pub items: u64,
}

/// Writes an image of the volume `vol` at its applied position. The caller
/// must keep the tree from changing meanwhile (holding `vol` does).
/// `progress` is told the data bytes written so far.
pub fn write_volume<W: Write>(
    vol: &Volume,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, ImageHeader, ImageStats)> {
    let header = ImageHeader {
        volume: vol.id(),
        position: vol.applied(),
    };
    let (w, stats) = write_image(
        out,
        header,
        &vol.tree_path(),
        &vol.path().join(ATTIC_DIR),
        progress,
    )?;
    Ok((w, header, stats))
}

/// Writes an image of `vol` to the file `dest` (through a temporary file
/// beside it, so that `dest` is whole or absent).
pub fn write_volume_file(
    vol: &Volume,
    dest: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(ImageHeader, ImageStats)> {
    dest.file_name().ok_or_else(|| ImageError::Source {
        path: dest.display().to_string(),
        reason: "names no file".into(),
    })?;
    let tmp = partial_path(dest);
    let file = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
    let result = (|| {
        let (w, header, stats) =
            write_volume(vol, io::BufWriter::with_capacity(1 << 20, file), progress)?;
        let file = w
            .into_inner()
            .map_err(|e| io_err(format!("write {}", tmp.display()))(e.into_error()))?;
        file.sync_all()
            .map_err(io_err(format!("sync {}", tmp.display())))?;
        std::fs::rename(&tmp, dest).map_err(io_err(format!(
            "rename {} to {}",
            tmp.display(),
            dest.display()
        )))?;
        Ok((header, stats))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Where [`write_volume_file`] writes an image before renaming it to `dest`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.tmp"))
}

/// Nodes and data bytes an image of these directories would hold: a quick
/// walk that reads no contents, for a progress bar's total.
pub fn measure(tree: &Path, attic: &Path) -> Result<ImageStats> {
    let mut w = Walker::<io::Sink> {
        out: None,
        sha: Sha256::new(),
        stats: ImageStats::default(),
        links: HashMap::new(),
        progress: &mut |_| {},
        lenient: false,
    };
    w.namespace(TREE_DIR, tree)?;
    if attic.exists() {
        w.namespace(ATTIC_DIR, attic)?;
    }
    Ok(w.stats)
}

/// Writes an image of `tree` and `attic` (which may be missing) at `header`.
pub fn write_image<W: Write>(
    out: W,
    header: ImageHeader,
    tree: &Path,
    attic: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, ImageStats)> {
    let bytes = header.encode();
    let mut out = Hashing {
        inner: out,
        sha: Sha256::new(),
    };
    out.write_all(&bytes).map_err(io_err("write the image"))?;
    let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)
        .map_err(io_err("start compressing the image"))?;
    enc.include_checksum(true)
        .map_err(io_err("start compressing the image"))?;
    let mut sha = Sha256::new();
    sha.update(bytes);
    let mut w = Walker {
        out: Some(enc),
        sha,
        stats: ImageStats::default(),
        links: HashMap::new(),
        progress,
        lenient: false,
    };
    w.namespace(TREE_DIR, tree)?;
    if attic.exists() {
        w.namespace(ATTIC_DIR, attic)?;
    }
    let end = Item::End {
        items: w.stats.items,
        sha256: w.sha.clone().finalize().into(),
    };
    w.frame(&end)?;
    let stats = w.stats;
    let enc = w.out.take().expect("set above");
    let out = enc.finish().map_err(io_err("write the image"))?;
    let mut trailer = IMAGE_END_MAGIC.to_vec();
    trailer.extend_from_slice(&out.sha.finalize());
    let mut out = out.inner;
    out.write_all(&trailer).map_err(io_err("write the image"))?;
    out.flush().map_err(io_err("write the image"))?;
    Ok((out, stats))
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Walks a directory and emits the ops that rebuild it.
struct Walker<'p, W: Write> {
    /// `None` measures only.
    out: Option<zstd::stream::write::Encoder<'static, Hashing<W>>>,
    sha: Sha256,
    stats: ImageStats,
    /// First name of every inode with more than one link.
    links: HashMap<(u64, u64), RelPath>,
    progress: &'p mut dyn FnMut(u64),
    /// In the attic, entries may go while the walk runs (retention prunes
    /// entries older than the journal without the volume's lock): one that
    /// is gone is left out.
    lenient: bool,
}

/// True when `e` says a node went away and the walk may go on without it.
fn gone(lenient: bool, e: Errno) -> bool {
    lenient && e == Errno::NOENT
}

/// Work left in a walk: enter a directory, or finish it (its xattrs and
/// attributes, which go after its contents so that the mtime holds).
enum Step {
    Enter(Vec<u8>),
    Leave(RelPath, Stat, BTreeMap<Vec<u8>, Vec<u8>>),
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        v.extend_from_slice(rel);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn mtime(st: &Stat) -> Timestamp {
    Timestamp::new(st.st_mtime, st.st_mtime_nsec as u32)
}

impl<W: Write> Walker<'_, W> {
    fn frame(&mut self, item: &Item) -> Result<()> {
        let payload = postcard::to_stdvec(item).expect("items always encode");
        if payload.len() > MAX_RECORD {
            return Err(ImageError::Source {
                path: "image".into(),
                reason: format!("an item of {} bytes is too large", payload.len()),
            });
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        encode_frame(&payload, &mut frame);
        self.sha.update(&frame);
        if let Some(out) = &mut self.out {
            out.write_all(&frame).map_err(io_err("write the image"))?;
        }
        Ok(())
    }

    fn emit(&mut self, op: Op) -> Result<()> {
        self.stats.items += 1;
        if self.out.is_none() {
            return Ok(());
        }
        op.validate().map_err(|e| ImageError::Source {
            path: op.to_string(),
            reason: e.to_string(),
        })?;
        self.frame(&Item::Op(op))
    }

    fn dest(ns: &str, rel: &[u8]) -> Result<RelPath> {
        let full = if rel.is_empty() {
            ns.as_bytes().to_vec()
        } else {
            join(ns.as_bytes(), rel)
        };
        RelPath::new(full.clone()).map_err(|e| ImageError::Source {
            path: escape_bytes(&full),
            reason: format!("cannot go into an image: {e}"),
        })
    }

    /// Emits everything under `root` as namespace `ns`.
    fn namespace(&mut self, ns: &str, root: &Path) -> Result<()> {
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(format!("open {}", root.display()))(e.into()))?;
        let shown = |rel: &[u8]| root.join(OsStr::from_bytes(rel)).display().to_string();
        self.lenient = ns == ATTIC_DIR;
        let mut stack = vec![Step::Enter(Vec::new())];
        while let Some(step) = stack.pop() {
            match step {
                Step::Leave(dest, st, xattrs) => {
                    for (name, value) in xattrs {
                        self.emit(Op::SetXattr {
                            node: Node::Path(dest.clone()),
                            name,
                            value,
                        })?;
                    }
                    let top = !dest.as_bytes().contains(&b'/');
                    self.emit(Op::SetAttr {
                        node: Node::Path(dest),
                        mode: Some(st.st_mode & 0o7777),
                        uid: top.then_some(st.st_uid),
                        gid: top.then_some(st.st_gid),
                        atime: None,
                        mtime: Some(mtime(&st)),
                    })?;
                }
                Step::Enter(rel) => {
                    let path: &[u8] = if rel.is_empty() { b"." } else { &rel };
                    let dir = match rustix::fs::openat2(
                        &root_fd,
                        OsStr::from_bytes(path),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                        RESOLVE,
                    ) {
                        Ok(fd) => fd,
                        Err(e) if gone(self.lenient, e) && !rel.is_empty() => continue,
                        Err(e) => return Err(io_err(format!("open {}", shown(&rel)))(e.into())),
                    };
                    let st = rustix::fs::fstat(&dir)
                        .map_err(|e| io_err(format!("stat {}", shown(&rel)))(e.into()))?;
                    let dest = Walker::<W>::dest(ns, &rel)?;
                    self.stats.nodes += 1;
                    if !rel.is_empty() {
                        self.emit(Op::Mkdir {
                            path: dest.clone(),
                            node: new_node(&st),
                        })?;
                    }
                    let xattrs = if self.out.is_some() {
                        read_xattrs(&proc_at(&dir, b"."), &shown(&rel))?
                    } else {
                        BTreeMap::new()
                    };
                    let mut names = Vec::new();
                    let listing = rustix::fs::Dir::read_from(&dir)
                        .map_err(|e| io_err(format!("read directory {}", shown(&rel)))(e.into()))?;
                    for entry in listing {
                        let entry = entry.map_err(|e| {
                            io_err(format!("read directory {}", shown(&rel)))(e.into())
                        })?;
                        let name = entry.file_name().to_bytes();
                        if name != b"." && name != b".." {
                            names.push(name.to_vec());
                        }
                    }
                    names.sort();
                    stack.push(Step::Leave(dest, st, xattrs));
                    let mut subdirs = Vec::new();
                    for name in names {
                        let child = join(&rel, &name);
                        let cst = match rustix::fs::statat(
                            &dir,
                            name.as_slice(),
                            AtFlags::SYMLINK_NOFOLLOW,
                        ) {
                            Ok(st) => st,
                            Err(e) if gone(self.lenient, e) => continue,
                            Err(e) => {
                                return Err(io_err(format!("stat {}", shown(&child)))(e.into()))
                            }
                        };
                        if FileType::from_raw_mode(cst.st_mode) == FileType::Directory {
                            subdirs.push(child);
                        } else {
                            let dest = Walker::<W>::dest(ns, &child)?;
                            self.leaf(&dir, &name, &cst, dest, &shown(&child))?;
                        }
                    }
                    // Popped in name order.
                    stack.extend(subdirs.into_iter().rev().map(Step::Enter));
                }
            }
        }
        Ok(())
    }

    /// A node that is not a directory.
    fn leaf(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        st: &Stat,
        dest: RelPath,
        shown: &str,
    ) -> Result<()> {
        self.stats.nodes += 1;
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                let from = first.clone();
                return self.emit(Op::Link { from, to: dest });
            }
        }
        let ft = FileType::from_raw_mode(st.st_mode);
        let node = new_node(st);
        match ft {
            FileType::RegularFile => {
                self.emit(Op::Create {
                    path: dest.clone(),
                    node,
                })?;
                self.contents(dir, name, st, &dest, shown)?;
            }
            FileType::Symlink => {
                let target = if self.out.is_some() {
                    match rustix::fs::readlinkat(dir, name, Vec::new()) {
                        Ok(t) => t.into_bytes(),
                        Err(e) if gone(self.lenient, e) => return Ok(()),
                        Err(e) => return Err(io_err(format!("read link {shown}"))(e.into())),
                    }
                } else {
                    b"-".to_vec()
                };
                self.emit(Op::Symlink {
                    path: dest.clone(),
                    target,
                    uid: st.st_uid,
                    gid: st.st_gid,
                })?;
            }
            FileType::Fifo
            | FileType::Socket
            | FileType::CharacterDevice
            | FileType::BlockDevice => {
                let kind = match ft {
                    FileType::Fifo => SpecialKind::Fifo,
                    FileType::Socket => SpecialKind::Socket,
                    FileType::CharacterDevice => SpecialKind::CharDevice { rdev: st.st_rdev },
                    _ => SpecialKind::BlockDevice { rdev: st.st_rdev },
                };
                self.emit(Op::Mknod {
                    path: dest.clone(),
                    kind,
                    node,
                })?;
            }
            other => {
                return Err(ImageError::Source {
                    path: shown.to_owned(),
                    reason: format!("unsupported file type {other:?}"),
                })
            }
        }
        if st.st_nlink > 1 {
            self.links.insert(key, dest.clone());
        }
        if self.out.is_some() {
            let xattrs = match read_xattrs(&proc_at(dir, name), shown) {
                Err(ImageError::Io { source, .. })
                    if self.lenient && source.kind() == io::ErrorKind::NotFound =>
                {
                    BTreeMap::new()
                }
                other => other?,
            };
            for (xname, value) in xattrs {
                self.emit(Op::SetXattr {
                    node: Node::Path(dest.clone()),
                    name: xname,
                    value,
                })?;
            }
        }
        // Last, so that writes and xattrs leave mode and mtime as they are here.
        self.emit(Op::SetAttr {
            node: Node::Path(dest),
            mode: (ft != FileType::Symlink).then_some(st.st_mode & 0o7777),
            uid: None,
            gid: None,
            atime: None,
            mtime: Some(mtime(st)),
        })
    }

    /// The data of a regular file, extent by extent; holes stay holes.
    fn contents(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        st: &Stat,
        dest: &RelPath,
        shown: &str,
    ) -> Result<()> {
        let size = st.st_size as u64;
        if self.out.is_none() {
            self.stats.data_bytes += size;
            return Ok(());
        }
        let fd = match rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Gone from the attic: an empty file stands in (it is older than history).
            Err(e) if gone(self.lenient, e) => return Ok(()),
            Err(e) => return Err(io_err(format!("open {shown}"))(e.into())),
        };
        let now = rustix::fs::fstat(&fd).map_err(|e| io_err(format!("stat {shown}"))(e.into()))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) || now.st_size != st.st_size {
            return Err(ImageError::Source {
                path: shown.to_owned(),
                reason:
                    "changed while the image was written (is another process using the volume?)"
                        .into(),
            });
        }
        let file = File::from(fd);
        let mut end_of_data = 0;
        for (start, end) in data_extents(&file, size, shown)? {
            let mut off = start;
            while off < end {
                let n = ((end - off) as usize).min(CONTENT_CHUNK);
                let mut data = vec![0u8; n];
                file.read_exact_at(&mut data, off)
                    .map_err(io_err(format!("read {shown} at {off}")))?;
                self.emit(Op::Write {
                    path: dest.clone(),
                    offset: off,
                    data,
                })?;
                off += n as u64;
                self.stats.data_bytes += n as u64;
                (self.progress)(self.stats.data_bytes);
            }
            end_of_data = end;
        }
        if end_of_data < size {
            self.emit(Op::Truncate {
                path: dest.clone(),
                size,
            })?;
        }
        Ok(())
    }
}

fn new_node(st: &Stat) -> NewNode {
    NewNode {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

/// `/proc/self/fd/DIR/NAME`: a node by its directory handle and name, for
/// the xattr calls that only exist in path form.
fn proc_at(dir: &OwnedFd, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&p))
}

/// Data extents `(start, end)` of a file, by `SEEK_DATA` and `SEEK_HOLE`.
fn data_extents(file: &File, size: u64, shown: &str) -> Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    let mut pos = 0u64;
    let err = |what: &str, e: Errno| io_err(format!("{what} in {shown}"))(e.into());
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) => {
                extents.push((pos, size));
                break;
            }
            Err(e) => return Err(err("seek data", e)),
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(end) => end.min(size),
            Err(Errno::NXIO) | Err(Errno::INVAL) => size,
            Err(e) => return Err(err("seek hole", e)),
        };
        let end = if end <= start { size } else { end };
        extents.push((start, end));
        pos = end;
    }
    Ok(extents)
}

/// Every xattr of a node, without following it. A filesystem without
/// xattrs gives none.
fn read_xattrs(path: &Path, shown: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let unsupported = |e: Errno| e == Errno::NOTSUP || e == Errno::OPNOTSUPP;
    let err = |e: Errno| io_err(format!("read xattrs of {shown}"))(e.into());
    let mut map = BTreeMap::new();
    let names = loop {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(e) if unsupported(e) => return Ok(map),
            Err(e) => return Err(err(e)),
        };
        if size == 0 {
            return Ok(map);
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(err(e)),
        }
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let value = loop {
            let size = match rustix::fs::lgetxattr_query(path, name_os) {
                Ok(n) => n,
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(err(e)),
            };
            let mut buf = vec![0u8; size];
            if size == 0 {
                break Some(buf);
            }
            match rustix::fs::lgetxattr(path, name_os, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    break Some(buf);
                }
                Err(Errno::RANGE) => continue,
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(err(e)),
            }
        };
        if let Some(v) = value {
            map.insert(name.to_vec(), v);
        }
    }
    Ok(map)
}

/// The image's bytes as they are read: buffered, counted, and hashed as
/// they are consumed (so that the hash covers exactly the header and the
/// compressed stream, whatever was read ahead).
struct Source<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    sha: Option<Sha256>,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            self.len = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            self.pos = 0;
            self.count.fetch_add(self.len as u64, Ordering::Relaxed);
        }
        Ok(&self.buf[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.len - self.pos);
        if let Some(sha) = &mut self.sha {
            sha.update(&self.buf[self.pos..self.pos + n]);
        }
        self.pos += n;
    }
}

/// Only these ops rebuild a tree, and only under `tree/` or `attic/`.
fn check_item_op(op: &Op) -> std::result::Result<(), String> {
    let below = |p: &RelPath| {
        let b = p.as_bytes();
        b.starts_with(b"tree/") || b.starts_with(b"attic/")
    };
    let node_ok = |n: &Node| match n {
        Node::Root => false,
        Node::Path(p) => below(p) || p.as_bytes() == b"tree" || p.as_bytes() == b"attic",
    };
    let ok = match op {
        Op::Create { path, .. }
        | Op::Mkdir { path, .. }
        | Op::Mknod { path, .. }
        | Op::Symlink { path, .. }
        | Op::Write { path, .. }
        | Op::Truncate { path, .. } => below(path),
        Op::Link { from, to } => below(from) && below(to),
        Op::SetAttr { node, .. } | Op::SetXattr { node, .. } => node_ok(node),
        _ => return Err(format!("{} is not an image operation", op.name())),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{op}: a path outside tree/ and attic/"))
    }
}

/// Reads an image from `source` into `dest`, a directory holding empty
/// `tree/` and `attic/` directories, checking every frame as it comes and
/// the trailer at the end. With `expect`, an image of another volume is
/// refused before anything is written. `progress` is told the image bytes
/// read so far.
///
/// On an error, `dest` holds a partial tree: build into a scratch directory
/// (as [`bootstrap`] does) and throw it away.
pub fn read_image<R: Read>(
    source: R,
    expect: Option<VolumeId>,
    dest: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ImageHeader> {
    let count = Arc::new(AtomicU64::new(0));
    let mut raw = Source {
        inner: source,
        buf: vec![0; 1 << 20],
        pos: 0,
        len: 0,
        sha: Some(Sha256::new()),
        count: count.clone(),
    };
    let mut hbytes = [0u8; IMAGE_HEADER_LEN];
    match raw.read_exact(&mut hbytes) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ImageError::Header("truncated".into()))
        }
        Err(source) => return Err(ImageError::Read { offset: 0, source }),
    }
    let header = ImageHeader::decode(&hbytes)?;
    if let Some(expected) = expect.filter(|e| *e != header.volume) {
        return Err(ImageError::WrongVolume {
            expected,
            found: header.volume,
        });
    }
    let tree = Tree::open(dest).map_err(io_err(format!("open {}", dest.display())))?;
    let mut dec = zstd::stream::read::Decoder::with_buffer(raw)
        .map_err(io_err("start decompressing the image"))?
        .single_frame();
    let mut sha = Sha256::new();
    sha.update(hbytes);
    let mut items = 0u64;
    let offset = || count.load(Ordering::Relaxed);
    let mut frame = Vec::new();
    loop {
        let corrupt = |items: u64, reason: String| ImageError::Corrupt {
            item: items + 1,
            offset: offset(),
            reason,
        };
        let truncated = || ImageError::Truncated {
            items,
            offset: offset(),
        };
        match read_frame(&mut dec, &mut frame) {
            Ok(true) => {}
            Ok(false) | Err(ReadFrameError::CutShort) => return Err(truncated()),
            Err(ReadFrameError::Corrupt(reason)) => return Err(corrupt(items, reason)),
            Err(ReadFrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(truncated())
            }
            Err(ReadFrameError::Io(source)) => {
                return Err(ImageError::Read {
                    offset: offset(),
                    source,
                })
            }
        }
        let payload = &frame[FRAME_HEADER_LEN..];
        crate::path::take_decode_error();
        let item = match postcard::take_from_bytes::<Item>(payload) {
            Ok((item, [])) => item,
            Ok((_, rest)) => {
                return Err(corrupt(
                    items,
                    format!("{} trailing bytes in an item", rest.len()),
                ))
            }
            Err(e) => {
                let why = match crate::path::take_decode_error() {
                    Some(p) => p.to_string(),
                    None => e.to_string(),
                };
                return Err(corrupt(items, format!("item does not decode: {why}")));
            }
        };
        match item {
            Item::Op(op) => {
                op.validate().map_err(|e| corrupt(items, e.to_string()))?;
                check_item_op(&op).map_err(|e| corrupt(items, e))?;
                sha.update(&frame);
                items += 1;
                let record = Record {
                    seq: 1,
                    time: Timestamp::new(0, 0),
                    op,
                    mtimes: Vec::new(),
                    before: Vec::new(),
                };
                tree.apply(&record, None)
                    .map_err(|source| ImageError::Apply {
                        item: items,
                        op: record.op.to_string(),
                        source,
                    })?;
                progress(offset());
            }
            Item::End { items: n, sha256 } => {
                if n != items {
                    return Err(corrupt(
                        items,
                        format!("the trailer counts {n} items, {items} came"),
                    ));
                }
                if sha.finalize().as_slice() != sha256 {
                    return Err(corrupt(
                        items,
                        "the trailer's SHA-256 does not match".into(),
                    ));
                }
                break;
            }
        }
    }
    // Nothing may follow the trailer: not in the compressed frame, not after it.
    let mut extra = [0u8; 1];
    match dec.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => {
            return Err(ImageError::Corrupt {
                item: items + 1,
                offset: offset(),
                reason: "bytes after the last item".into(),
            })
        }
        Err(source) => {
            return Err(ImageError::Read {
                offset: offset(),
                source,
            })
        }
    }
    let mut raw = dec.finish();
    let digest = raw.sha.take().expect("set above").finalize();
    let mut trailer = [0u8; IMAGE_TRAILER_LEN];
    match raw.read_exact(&mut trailer) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ImageError::Truncated {
                items,
                offset: offset(),
            })
        }
        Err(source) => {
            return Err(ImageError::Read {
                offset: offset(),
                source,
            })
        }
    }
    let bad_end = |reason: &str| ImageError::Corrupt {
        item: items + 1,
        offset: offset(),
        reason: reason.into(),
    };
    if trailer[0..8] != IMAGE_END_MAGIC {
        return Err(bad_end("no trailer after the compressed stream"));
    }
    if trailer[8..40] != digest[..] {
        return Err(bad_end("the SHA-256 of the image's bytes does not match"));
    }
    let rest = raw.fill_buf().map_err(|source| ImageError::Read {
        offset: offset(),
        source,
    })?;
    if !rest.is_empty() {
        return Err(bad_end("bytes after the trailer"));
    }
    tree.sync()
        .map_err(io_err(format!("sync {}", dest.display())))?;
    progress(offset());
    Ok(header)
}

/// Rebuilds the replica volume at `vol` from an image read from `source`:
/// tree, attic, journal (which then starts right after the image's
/// position, continuing its chain), position slot and checkpoint are
/// replaced; id, key, settings and the master to follow stay; a `broken`
/// mark is removed. The image is built in `VOL/bootstrap.tmp/` and swapped
/// in only once all of it checked, so on any error the volume is as it was.
/// Refused while another process holds the volume, and for an image of
/// another volume.
pub fn bootstrap<R: Read>(
    vol: &Path,
    source: R,
    progress: &mut dyn FnMut(u64),
) -> Result<(Volume, ImageHeader)> {
    let b = Bootstrap::begin(vol)?;
    bootstrap_into(b, source, progress)
}

/// [`bootstrap`] on a volume already held, for sources that need its id
/// (a server asked for the image proves it serves this volume).
pub fn bootstrap_into<R: Read>(
    b: Bootstrap,
    source: R,
    progress: &mut dyn FnMut(u64),
) -> Result<(Volume, ImageHeader)> {
    let header = read_image(source, Some(b.volume_id()), b.staging(), progress)?;
    let root = b.volume_path().to_owned();
    let v = b.install(header.position)?;
    let broken = root.join(crate::ship::follower::BROKEN_FILE);
    match std::fs::remove_file(&broken) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("remove {}", broken.display()))(e)),
    }
    Ok((v, header))
}

/// Something that writes images of a consistent position on request: a
/// replica's follow process gives its server one, so that other replicas
/// can be bootstrapped from it over the network.
pub trait ImageSource: Send + Sync {
    /// Writes a whole image to `out` and returns its header.
    fn write_image(&self, out: &mut dyn Write) -> Result<ImageHeader>;
}

/// Images of a volume that a following replica keeps in a mutex: the mutex
/// is held while the image is written, so applying pauses (the replica
/// lags for that long; its master is not held up).
pub struct LockedVolume(pub Arc<Mutex<Volume>>);

impl ImageSource for LockedVolume {
    fn write_image(&self, out: &mut dyn Write) -> Result<ImageHeader> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (_, header, _) = write_volume(&v, out, &mut |_| {})?;
        Ok(header)
    }
}
