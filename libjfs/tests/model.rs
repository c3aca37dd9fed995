//! Property tests: random operation sequences, committed to a master volume,
//! leave a tree that matches a simple in-memory model, and the journal
//! rebuilds (materializes) exactly that tree, at the head and at any earlier
//! position.
//!
//! Each case generates abstract [`Action`]s and interprets them against the
//! current model, so that every [`Op`] produced is valid for the model's state
//! (paths are picked by index modulo the candidates). Every op must commit.
//!
//! Needs root (ownership changes, modes on files owned by others); without it
//! the properties are skipped with a note on stderr.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libjfs::compare::{compare_trees, display_path, CompareOptions};
use libjfs::materialize::materialize;
use libjfs::record::{FallocateMode, RenameMode, SpecialKind};
use libjfs::{NewNode, Node, Op, Position, RelPath, Role, Timestamp, Volume};
use proptest::collection::vec;
use proptest::prelude::*;
use rustix::io::Errno;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// No generated op makes a file larger than this.
const MAX_FILE: u64 = 6 * MIB;
/// No generated path (nor any path below a moved directory) is longer than
/// this, so that absolute paths under the temp dir stay below `PATH_MAX`.
const PATH_BUDGET: usize = 3000;
/// Owners (uids and gids) that ops use.
const OWNERS: [u32; 5] = [0, 1, 1000, 65534, 4_000_000];

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o0010;

/// Entry names: short ones (so that names collide and renames replace),
/// non-UTF-8 ones, and two of the longest length Linux allows.
static NAMES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    vec![
        b"a".to_vec(),
        b"b".to_vec(),
        b"c".to_vec(),
        b"d".to_vec(),
        b"e".to_vec(),
        b"caf\xe9".to_vec(),
        b"\xff\xfe\x80".to_vec(),
        b"with space".to_vec(),
        b".hidden".to_vec(),
        b"-dash\ttab".to_vec(),
        vec![b'n'; 255],
        [vec![b'L'; 253], b"\xc3\xa9".to_vec()].concat(),
    ]
});

static TARGETS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    vec![
        b"a".to_vec(),
        b"../b".to_vec(),
        b"/etc/passwd".to_vec(),
        b"caf\xe9/dangling".to_vec(),
        b".".to_vec(),
        [b"deep/".repeat(200), b"end".to_vec()].concat(),
    ]
});

static XATTR_NAMES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    vec![
        b"user.a".to_vec(),
        b"user.b".to_vec(),
        b"user.caf\xe9".to_vec(),
        [b"user.".to_vec(), vec![b'k'; 250]].concat(),
    ]
});

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

type Ino = usize;
const ROOT: Ino = 0;

#[derive(Clone, Debug)]
enum Kind {
    Dir(BTreeMap<Vec<u8>, Ino>),
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Fifo,
}

#[derive(Clone, Debug)]
struct Inode {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// A tree of inodes. Inode 0 is the root; inodes that lose their last name
/// stay in the vector, unreachable.
#[derive(Clone, Debug)]
struct Model {
    inodes: Vec<Inode>,
}

/// A name in the model; the root has the empty path.
#[derive(Clone, Debug)]
struct Entry {
    path: Vec<u8>,
    ino: Ino,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// True when `inner` is `outer` or lies below it.
fn contains(outer: &[u8], inner: &[u8]) -> bool {
    outer.is_empty()
        || (inner.starts_with(outer) && (inner.len() == outer.len() || inner[outer.len()] == b'/'))
}

fn rel(path: &[u8]) -> RelPath {
    RelPath::new(path.to_vec()).expect("generated paths are valid")
}

fn node_of(path: &[u8]) -> Node {
    if path.is_empty() {
        Node::Root
    } else {
        Node::Path(rel(path))
    }
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Writes `data` at `offset` as `pwrite` does: an empty write changes nothing.
fn write_at(content: &mut Vec<u8>, offset: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let (start, end) = (offset as usize, offset as usize + data.len());
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(data);
}

impl Model {
    fn new(root_mode: u32, uid: u32, gid: u32) -> Model {
        Model {
            inodes: vec![Inode {
                kind: Kind::Dir(BTreeMap::new()),
                mode: root_mode,
                uid,
                gid,
                xattrs: BTreeMap::new(),
            }],
        }
    }

    fn children(&self, ino: Ino) -> &BTreeMap<Vec<u8>, Ino> {
        match &self.inodes[ino].kind {
            Kind::Dir(c) => c,
            k => panic!("model: inode {ino} is not a directory: {k:?}"),
        }
    }

    fn children_mut(&mut self, ino: Ino) -> &mut BTreeMap<Vec<u8>, Ino> {
        match &mut self.inodes[ino].kind {
            Kind::Dir(c) => c,
            k => panic!("model: inode {ino} is not a directory: {k:?}"),
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.inodes[ino].kind, Kind::Dir(_))
    }

    fn is_file(&self, ino: Ino) -> bool {
        matches!(self.inodes[ino].kind, Kind::File(_))
    }

    fn is_symlink(&self, ino: Ino) -> bool {
        matches!(self.inodes[ino].kind, Kind::Symlink(_))
    }

    fn content(&self, ino: Ino) -> &Vec<u8> {
        match &self.inodes[ino].kind {
            Kind::File(d) => d,
            k => panic!("model: inode {ino} is not a regular file: {k:?}"),
        }
    }

    fn content_mut(&mut self, ino: Ino) -> &mut Vec<u8> {
        match &mut self.inodes[ino].kind {
            Kind::File(d) => d,
            k => panic!("model: inode {ino} is not a regular file: {k:?}"),
        }
    }

    fn size(&self, ino: Ino) -> u64 {
        self.content(ino).len() as u64
    }

    /// Every name, parents before children, the root first.
    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut stack = vec![Entry {
            path: Vec::new(),
            ino: ROOT,
        }];
        while let Some(e) = stack.pop() {
            if let Kind::Dir(children) = &self.inodes[e.ino].kind {
                for (name, &ino) in children.iter().rev() {
                    stack.push(Entry {
                        path: join(&e.path, name),
                        ino,
                    });
                }
            }
            out.push(e);
        }
        out
    }

    fn lookup(&self, path: &[u8]) -> Option<Ino> {
        let mut ino = ROOT;
        if path.is_empty() {
            return Some(ino);
        }
        for name in path.split(|&b| b == b'/') {
            match &self.inodes[ino].kind {
                Kind::Dir(c) => ino = *c.get(name)?,
                _ => return None,
            }
        }
        Some(ino)
    }

    fn get(&self, path: &[u8]) -> Ino {
        self.lookup(path)
            .unwrap_or_else(|| panic!("model: {} does not exist", display_path(path)))
    }

    fn node(&self, node: &Node) -> Ino {
        match node {
            Node::Root => ROOT,
            Node::Path(p) => self.get(p.as_bytes()),
        }
    }

    /// Longest relative path below `ino` (0 for a non-directory or an empty one).
    fn subtree_len(&self, ino: Ino) -> usize {
        match &self.inodes[ino].kind {
            Kind::Dir(c) => c
                .iter()
                .map(|(name, &child)| {
                    let below = self.subtree_len(child);
                    name.len() + if below > 0 { 1 + below } else { 0 }
                })
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Links inode `ino` at `path`, which must be free.
    fn attach(&mut self, path: &[u8], ino: Ino) {
        let (dir, name) = split(path);
        let dir = self.get(dir);
        let prev = self.children_mut(dir).insert(name.to_vec(), ino);
        assert!(
            prev.is_none(),
            "model: {} already exists",
            display_path(path)
        );
    }

    /// Unlinks the name `path` and returns its inode.
    fn detach(&mut self, path: &[u8]) -> Ino {
        let (dir, name) = split(path);
        let dir = self.get(dir);
        self.children_mut(dir)
            .remove(name)
            .unwrap_or_else(|| panic!("model: {} does not exist", display_path(path)))
    }

    fn create(&mut self, path: &RelPath, kind: Kind, mode: u32, uid: u32, gid: u32) {
        let ino = self.inodes.len();
        self.inodes.push(Inode {
            kind,
            mode,
            uid,
            gid,
            xattrs: BTreeMap::new(),
        });
        self.attach(path.as_bytes(), ino);
    }

    /// What `op` does to the tree, as POSIX (and Linux, as root) says.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { path, node } => {
                self.create(path, Kind::File(Vec::new()), node.mode, node.uid, node.gid)
            }
            Op::Mkdir { path, node } => self.create(
                path,
                Kind::Dir(BTreeMap::new()),
                node.mode,
                node.uid,
                node.gid,
            ),
            Op::Mknod {
                path,
                kind: SpecialKind::Fifo,
                node,
            } => self.create(path, Kind::Fifo, node.mode, node.uid, node.gid),
            Op::Symlink {
                path,
                target,
                uid,
                gid,
            } => self.create(path, Kind::Symlink(target.clone()), 0o777, *uid, *gid),
            Op::Link { from, to } => {
                let ino = self.get(from.as_bytes());
                assert!(!self.is_dir(ino), "model: link of a directory");
                self.attach(to.as_bytes(), ino);
            }
            Op::Unlink { path } => {
                let ino = self.detach(path.as_bytes());
                assert!(!self.is_dir(ino), "model: unlink of a directory");
            }
            Op::Rmdir { path } => {
                let ino = self.detach(path.as_bytes());
                assert!(
                    self.children(ino).is_empty(),
                    "model: rmdir of a non-empty directory"
                );
            }
            Op::Rename { from, to, mode } => {
                let (from, to) = (from.as_bytes(), to.as_bytes());
                let src = self.get(from);
                assert!(
                    !(self.is_dir(src) && contains(from, to)),
                    "model: rename of a directory into itself"
                );
                match (mode, self.lookup(to)) {
                    (RenameMode::Exchange, dst) => {
                        let dst = dst.expect("model: exchange with a missing entry");
                        assert!(!contains(to, from), "model: exchange with an ancestor");
                        self.detach(from);
                        self.detach(to);
                        self.attach(from, dst);
                        self.attach(to, src);
                    }
                    (RenameMode::NoReplace, Some(_)) => panic!("model: no-replace over an entry"),
                    // Two names of one inode: rename(2) does nothing.
                    (RenameMode::Replace, Some(dst)) if dst == src => {}
                    (_, dst) => {
                        if let Some(dst) = dst {
                            if self.is_dir(src) {
                                assert!(
                                    self.is_dir(dst) && self.children(dst).is_empty(),
                                    "model: a directory may only replace an empty directory"
                                );
                            } else {
                                assert!(!self.is_dir(dst), "model: a file over a directory");
                            }
                            self.detach(to);
                        }
                        self.detach(from);
                        self.attach(to, src);
                    }
                }
            }
            Op::Write { path, offset, data } => {
                let ino = self.get(path.as_bytes());
                write_at(self.content_mut(ino), *offset, data);
            }
            Op::Truncate { path, size } => {
                let ino = self.get(path.as_bytes());
                self.content_mut(ino).resize(*size as usize, 0);
            }
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                let ino = self.get(path.as_bytes());
                let content = self.content_mut(ino);
                let (start, end) = (*offset as usize, (*offset + *len) as usize);
                if matches!(mode, FallocateMode::Allocate | FallocateMode::ZeroRange)
                    && content.len() < end
                {
                    content.resize(end, 0);
                }
                if matches!(mode, FallocateMode::PunchHole | FallocateMode::ZeroRange) {
                    let end = end.min(content.len());
                    if start < end {
                        content[start..end].fill(0);
                    }
                }
            }
            Op::SetAttr {
                node,
                mode,
                uid,
                gid,
                ..
            } => {
                let ino = self.node(node);
                let is_dir = self.is_dir(ino);
                let inode = &mut self.inodes[ino];
                if uid.is_some() || gid.is_some() {
                    inode.uid = uid.unwrap_or(inode.uid);
                    inode.gid = gid.unwrap_or(inode.gid);
                    // chown(2) of a non-directory clears setuid, and setgid
                    // when group-execute is set (even for root).
                    if !is_dir {
                        inode.mode &= !S_ISUID;
                        if inode.mode & S_IXGRP != 0 {
                            inode.mode &= !S_ISGID;
                        }
                    }
                }
                if let Some(m) = mode {
                    inode.mode = *m;
                }
            }
            Op::SetXattr { node, name, value } => {
                let ino = self.node(node);
                self.inodes[ino].xattrs.insert(name.clone(), value.clone());
            }
            Op::RemoveXattr { node, name } => {
                let ino = self.node(node);
                let had = self.inodes[ino].xattrs.remove(name);
                assert!(had.is_some(), "model: remove of a missing xattr");
            }
            Op::CopyRange {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
            } => {
                let s = self.get(src.as_bytes());
                let d = self.get(dst.as_bytes());
                assert_ne!(s, d, "model: copy within one inode");
                let (start, end) = (*src_offset as usize, (*src_offset + *len) as usize);
                let bytes = self.content(s)[start..end].to_vec();
                write_at(self.content_mut(d), *dst_offset, &bytes);
            }
            op => panic!("model: the generator does not make {op}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Actions: what the generator makes, interpreted against the model
// ---------------------------------------------------------------------------

/// Indices pick among the candidates the model has when the action runs
/// (modulo their number); an action without candidates is skipped.
#[derive(Clone, Debug)]
enum Action {
    Create {
        dir: usize,
        name: usize,
        mode: u32,
        uid: usize,
        gid: usize,
    },
    Mkdir {
        dir: usize,
        name: usize,
        mode: u32,
        uid: usize,
        gid: usize,
    },
    /// Several nested directories at once: deep trees.
    MkdirChain {
        dir: usize,
        names: Vec<usize>,
    },
    Fifo {
        dir: usize,
        name: usize,
        mode: u32,
        uid: usize,
        gid: usize,
    },
    Symlink {
        dir: usize,
        name: usize,
        target: usize,
        uid: usize,
        gid: usize,
    },
    /// A hardlink to a regular file.
    Link {
        file: usize,
        dir: usize,
        name: usize,
    },
    Unlink {
        pick: usize,
    },
    /// Rmdir of an empty directory.
    Rmdir {
        pick: usize,
    },
    /// Unlinks and rmdirs a whole subtree, deepest first.
    RemoveTree {
        pick: usize,
    },
    /// A non-directory renamed over another existing one (`Replace`).
    RenameOver {
        from: usize,
        to: usize,
    },
    /// A directory renamed over an empty directory (`Replace`).
    RenameDirOverEmpty {
        from: usize,
        to: usize,
    },
    /// Any entry renamed to a free name in any directory not below it.
    Move {
        from: usize,
        dir: usize,
        name: usize,
        no_replace: bool,
    },
    Exchange {
        a: usize,
        b: usize,
    },
    Write {
        file: usize,
        at: u8,
        offset: u64,
        data: Vec<u8>,
    },
    Truncate {
        file: usize,
        how: u8,
        raw: u64,
    },
    Fallocate {
        file: usize,
        mode: u8,
        offset: u64,
        len: u64,
    },
    SetAttr {
        node: usize,
        mode: Option<u32>,
        uid: Option<usize>,
        gid: Option<usize>,
        atime: Option<(i64, u32)>,
        mtime: Option<(i64, u32)>,
    },
    SetXattr {
        node: usize,
        name: usize,
        value: Vec<u8>,
    },
    RemoveXattr {
        node: usize,
        name: usize,
    },
    CopyRange {
        src: usize,
        dst: usize,
        src_offset: u64,
        dst_at: u8,
        dst_offset: u64,
        len: u64,
    },
}

fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[i % v.len()].clone())
    }
}

fn new_node(mode: u32, uid: usize, gid: usize) -> NewNode {
    NewNode {
        mode,
        uid: OWNERS[uid % OWNERS.len()],
        gid: OWNERS[gid % OWNERS.len()],
    }
}

fn ts((sec, nsec): (i64, u32)) -> Timestamp {
    Timestamp::new(sec, nsec)
}

/// A free name in directory `dir` (trying the pool from `idx` on), such that
/// the new path plus `extra` bytes below it stays within the budget.
fn free_path(m: &Model, dir: &Entry, idx: usize, extra: usize) -> Option<Vec<u8>> {
    let children = m.children(dir.ino);
    (0..NAMES.len())
        .map(|k| &NAMES[(idx + k) % NAMES.len()])
        .filter(|name| !children.contains_key(*name))
        .map(|name| join(&dir.path, name))
        .find(|p| p.len() + if extra > 0 { 1 + extra } else { 0 } <= PATH_BUDGET)
}

/// The ops that carry out `action` on the model's current state (none when
/// the action does not fit it).
fn ops_for(m: &Model, action: &Action) -> Vec<Op> {
    let all = m.entries();
    let only = |f: &dyn Fn(&Entry) -> bool| -> Vec<Entry> {
        all.iter().filter(|e| f(e)).cloned().collect()
    };
    let dirs = only(&|e| m.is_dir(e.ino));
    let files = only(&|e| m.is_file(e.ino));
    let nondirs = only(&|e| !m.is_dir(e.ino));
    let nonroot = all[1..].to_vec();
    let fits = |path: &[u8], below: Ino| -> bool {
        let extra = m.subtree_len(below);
        path.len() + if extra > 0 { 1 + extra } else { 0 } <= PATH_BUDGET
    };

    let one = |op: Op| vec![op];
    let none = Vec::new;
    match action {
        Action::Create {
            dir,
            name,
            mode,
            uid,
            gid,
        }
        | Action::Mkdir {
            dir,
            name,
            mode,
            uid,
            gid,
        }
        | Action::Fifo {
            dir,
            name,
            mode,
            uid,
            gid,
        } => {
            let Some(d) = pick(&dirs, *dir) else {
                return none();
            };
            let Some(path) = free_path(m, &d, *name, 0) else {
                return none();
            };
            let (path, node) = (rel(&path), new_node(*mode, *uid, *gid));
            one(match action {
                Action::Create { .. } => Op::Create { path, node },
                Action::Mkdir { .. } => Op::Mkdir { path, node },
                _ => Op::Mknod {
                    path,
                    kind: SpecialKind::Fifo,
                    node,
                },
            })
        }
        Action::MkdirChain { dir, names } => {
            let Some(d) = pick(&dirs, *dir) else {
                return none();
            };
            let Some(mut path) = free_path(m, &d, names[0], 0) else {
                return none();
            };
            let node = NewNode {
                mode: 0o755,
                uid: 0,
                gid: 0,
            };
            let mut ops = vec![Op::Mkdir {
                path: rel(&path),
                node,
            }];
            for &n in &names[1..] {
                // Each new directory is empty, so any name is free in it.
                let next = join(&path, &NAMES[n % NAMES.len()]);
                if next.len() > PATH_BUDGET {
                    break;
                }
                path = next;
                ops.push(Op::Mkdir {
                    path: rel(&path),
                    node,
                });
            }
            ops
        }
        Action::Symlink {
            dir,
            name,
            target,
            uid,
            gid,
        } => {
            let Some(d) = pick(&dirs, *dir) else {
                return none();
            };
            let Some(path) = free_path(m, &d, *name, 0) else {
                return none();
            };
            one(Op::Symlink {
                path: rel(&path),
                target: TARGETS[target % TARGETS.len()].clone(),
                uid: OWNERS[uid % OWNERS.len()],
                gid: OWNERS[gid % OWNERS.len()],
            })
        }
        Action::Link { file, dir, name } => {
            let (Some(f), Some(d)) = (pick(&files, *file), pick(&dirs, *dir)) else {
                return none();
            };
            let Some(to) = free_path(m, &d, *name, 0) else {
                return none();
            };
            one(Op::Link {
                from: rel(&f.path),
                to: rel(&to),
            })
        }
        Action::Unlink { pick: i } => match pick(&nondirs, *i) {
            Some(e) => one(Op::Unlink { path: rel(&e.path) }),
            None => none(),
        },
        Action::Rmdir { pick: i } => {
            let empty = only(&|e| e.ino != ROOT && m.is_dir(e.ino) && m.children(e.ino).is_empty());
            match pick(&empty, *i) {
                Some(e) => one(Op::Rmdir { path: rel(&e.path) }),
                None => none(),
            }
        }
        Action::RemoveTree { pick: i } => {
            let Some(top) = pick(&dirs[1..], *i) else {
                return none();
            };
            // Entries below `top` come after it in preorder; reversed, every
            // child is removed before its directory.
            all.iter()
                .filter(|e| contains(&top.path, &e.path))
                .rev()
                .map(|e| {
                    if m.is_dir(e.ino) {
                        Op::Rmdir { path: rel(&e.path) }
                    } else {
                        Op::Unlink { path: rel(&e.path) }
                    }
                })
                .collect()
        }
        Action::RenameOver { from, to } => {
            let Some(src) = pick(&nondirs, *from) else {
                return none();
            };
            let others: Vec<Entry> = nondirs
                .iter()
                .filter(|e| e.path != src.path)
                .cloned()
                .collect();
            let Some(dst) = pick(&others, *to) else {
                return none();
            };
            one(Op::Rename {
                from: rel(&src.path),
                to: rel(&dst.path),
                mode: RenameMode::Replace,
            })
        }
        Action::RenameDirOverEmpty { from, to } => {
            let Some(src) = pick(&dirs[1..], *from) else {
                return none();
            };
            let targets = only(&|e| {
                e.ino != ROOT
                    && m.is_dir(e.ino)
                    && m.children(e.ino).is_empty()
                    && !contains(&src.path, &e.path)
                    && fits(&e.path, src.ino)
            });
            let Some(dst) = pick(&targets, *to) else {
                return none();
            };
            one(Op::Rename {
                from: rel(&src.path),
                to: rel(&dst.path),
                mode: RenameMode::Replace,
            })
        }
        Action::Move {
            from,
            dir,
            name,
            no_replace,
        } => {
            let Some(src) = pick(&nonroot, *from) else {
                return none();
            };
            let places = only(&|e| m.is_dir(e.ino) && !contains(&src.path, &e.path));
            let Some(d) = pick(&places, *dir) else {
                return none();
            };
            let Some(to) = free_path(m, &d, *name, m.subtree_len(src.ino)) else {
                return none();
            };
            one(Op::Rename {
                from: rel(&src.path),
                to: rel(&to),
                mode: if *no_replace {
                    RenameMode::NoReplace
                } else {
                    RenameMode::Replace
                },
            })
        }
        Action::Exchange { a, b } => {
            let Some(x) = pick(&nonroot, *a) else {
                return none();
            };
            let partners = only(&|e| {
                e.ino != ROOT
                    && !contains(&x.path, &e.path)
                    && !contains(&e.path, &x.path)
                    && fits(&e.path, x.ino)
                    && fits(&x.path, e.ino)
            });
            let Some(y) = pick(&partners, *b) else {
                return none();
            };
            one(Op::Rename {
                from: rel(&x.path),
                to: rel(&y.path),
                mode: RenameMode::Exchange,
            })
        }
        Action::Write {
            file,
            at,
            offset,
            data,
        } => {
            let Some(f) = pick(&files, *file) else {
                return none();
            };
            let size = m.size(f.ino);
            let offset = match at % 4 {
                0 => offset % (size + 1),       // overwrite inside
                1 => size,                      // append
                2 => size + offset % (4 * MIB), // sparse, past the end
                _ => offset % (4 * MIB),        // anywhere
            };
            if offset + data.len() as u64 > MAX_FILE {
                return none();
            }
            one(Op::Write {
                path: rel(&f.path),
                offset,
                data: data.clone(),
            })
        }
        Action::Truncate { file, how, raw } => {
            let Some(f) = pick(&files, *file) else {
                return none();
            };
            let size = m.size(f.ino);
            let size = match how % 4 {
                0 => raw % (size + 1),     // down (or same)
                1 => size + 1 + raw % MIB, // up
                2 => 0,
                _ => raw % (5 * MIB),
            };
            one(Op::Truncate {
                path: rel(&f.path),
                size,
            })
        }
        Action::Fallocate {
            file,
            mode,
            offset,
            len,
        } => {
            let Some(f) = pick(&files, *file) else {
                return none();
            };
            let size = m.size(f.ino);
            let (mode, offset, len) = match mode % 6 {
                // A hole punched inside the file.
                0..=2 => {
                    if size == 0 {
                        return none();
                    }
                    let off = offset % size;
                    (FallocateMode::PunchHole, off, 1 + len % (size - off))
                }
                m => (
                    match m {
                        3 => FallocateMode::Allocate,
                        4 => FallocateMode::KeepSize,
                        _ => FallocateMode::ZeroRange,
                    },
                    offset % (size + 64 * KIB),
                    1 + len % (64 * KIB),
                ),
            };
            if offset + len > MAX_FILE {
                return none();
            }
            one(Op::Fallocate {
                path: rel(&f.path),
                mode,
                offset,
                len,
            })
        }
        Action::SetAttr {
            node,
            mode,
            uid,
            gid,
            atime,
            mtime,
        } => {
            let e = pick(&all, *node).expect("the root is always there");
            one(Op::SetAttr {
                node: node_of(&e.path),
                // A symlink has no mode of its own; the applier refuses it.
                mode: if m.is_symlink(e.ino) { None } else { *mode },
                uid: uid.map(|i| OWNERS[i % OWNERS.len()]),
                gid: gid.map(|i| OWNERS[i % OWNERS.len()]),
                atime: atime.map(ts),
                mtime: mtime.map(ts),
            })
        }
        Action::SetXattr { node, name, value } => {
            // user.* xattrs exist on regular files and directories only.
            let nodes = only(&|e| m.is_dir(e.ino) || m.is_file(e.ino));
            let e = pick(&nodes, *node).expect("the root is always there");
            one(Op::SetXattr {
                node: node_of(&e.path),
                name: XATTR_NAMES[name % XATTR_NAMES.len()].clone(),
                value: value.clone(),
            })
        }
        Action::RemoveXattr { node, name } => {
            let nodes = only(&|e| !m.inodes[e.ino].xattrs.is_empty());
            let Some(e) = pick(&nodes, *node) else {
                return none();
            };
            let names: Vec<Vec<u8>> = m.inodes[e.ino].xattrs.keys().cloned().collect();
            one(Op::RemoveXattr {
                node: node_of(&e.path),
                name: pick(&names, *name).unwrap(),
            })
        }
        Action::CopyRange {
            src,
            dst,
            src_offset,
            dst_at,
            dst_offset,
            len,
        } => {
            let Some(s) = pick(&files, *src) else {
                return none();
            };
            // Distinct inodes: a hardlink of the source is the same file.
            let others: Vec<Entry> = files.iter().filter(|e| e.ino != s.ino).cloned().collect();
            let Some(d) = pick(&others, *dst) else {
                return none();
            };
            let (ssize, dsize) = (m.size(s.ino), m.size(d.ino));
            let src_offset = src_offset % (ssize + 16);
            // Clamped to what the source holds.
            let len = (1 + len % (128 * KIB)).min(ssize.saturating_sub(src_offset));
            if len == 0 {
                return none();
            }
            let dst_offset = match dst_at % 3 {
                0 => dst_offset % (dsize + 1),
                1 => dsize,
                _ => dsize + dst_offset % MIB,
            };
            if dst_offset + len > MAX_FILE {
                return none();
            }
            one(Op::CopyRange {
                src: rel(&s.path),
                src_offset,
                dst: rel(&d.path),
                dst_offset,
                len,
            })
        }
    }
}

/// An index into candidates (taken modulo their number); small, so that
/// failures shrink to readable cases.
fn idx() -> impl Strategy<Value = usize> {
    0usize..256
}

fn owner() -> impl Strategy<Value = usize> {
    0..OWNERS.len()
}

fn mode() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => Just(0o644u32),
        1 => Just(0o755u32),
        1 => Just(0o000u32),
        4 => 0u32..=0o7777,
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(any::<u8>(), 0..64),
        1 => vec(any::<u8>(), 64..9000),
    ]
}

fn time() -> impl Strategy<Value = (i64, u32)> {
    (-2_000_000_000i64..=15_000_000_000, 0u32..1_000_000_000)
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (idx(), idx(), mode(), owner(), owner())
            .prop_map(|(dir, name, mode, uid, gid)| Action::Create { dir, name, mode, uid, gid }),
        5 => (idx(), idx(), mode(), owner(), owner())
            .prop_map(|(dir, name, mode, uid, gid)| Action::Mkdir { dir, name, mode, uid, gid }),
        2 => (idx(), vec(idx(), 2..8))
            .prop_map(|(dir, names)| Action::MkdirChain { dir, names }),
        2 => (idx(), idx(), mode(), owner(), owner())
            .prop_map(|(dir, name, mode, uid, gid)| Action::Fifo { dir, name, mode, uid, gid }),
        3 => (idx(), idx(), idx(), owner(), owner()).prop_map(|(dir, name, target, uid, gid)| {
            Action::Symlink { dir, name, target, uid, gid }
        }),
        4 => (idx(), idx(), idx()).prop_map(|(file, dir, name)| Action::Link { file, dir, name }),
        3 => idx().prop_map(|pick| Action::Unlink { pick }),
        2 => idx().prop_map(|pick| Action::Rmdir { pick }),
        1 => idx().prop_map(|pick| Action::RemoveTree { pick }),
        4 => (idx(), idx()).prop_map(|(from, to)| Action::RenameOver { from, to }),
        2 => (idx(), idx()).prop_map(|(from, to)| Action::RenameDirOverEmpty { from, to }),
        5 => (idx(), idx(), idx(), any::<bool>()).prop_map(|(from, dir, name, no_replace)| {
            Action::Move { from, dir, name, no_replace }
        }),
        3 => (idx(), idx()).prop_map(|(a, b)| Action::Exchange { a, b }),
        10 => (idx(), any::<u8>(), any::<u64>(), data())
            .prop_map(|(file, at, offset, data)| Action::Write { file, at, offset, data }),
        4 => (idx(), any::<u8>(), any::<u64>())
            .prop_map(|(file, how, raw)| Action::Truncate { file, how, raw }),
        3 => (idx(), any::<u8>(), any::<u64>(), any::<u64>())
            .prop_map(|(file, mode, offset, len)| Action::Fallocate { file, mode, offset, len }),
        5 => (
            idx(),
            proptest::option::of(mode()),
            proptest::option::of(owner()),
            proptest::option::of(owner()),
            proptest::option::of(time()),
            proptest::option::of(time()),
        )
            .prop_map(|(node, mode, uid, gid, atime, mtime)| Action::SetAttr {
                node, mode, uid, gid, atime, mtime
            }),
        4 => (idx(), idx(), prop_oneof![4 => vec(any::<u8>(), 0..48), 1 => vec(any::<u8>(), 48..500)])
            .prop_map(|(node, name, value)| Action::SetXattr { node, name, value }),
        2 => (idx(), idx()).prop_map(|(node, name)| Action::RemoveXattr { node, name }),
        4 => (idx(), idx(), any::<u64>(), any::<u8>(), any::<u64>(), any::<u64>()).prop_map(
            |(src, dst, src_offset, dst_at, dst_offset, len)| Action::CopyRange {
                src, dst, src_offset, dst_at, dst_offset, len
            }
        ),
    ]
}

// ---------------------------------------------------------------------------
// Running and checking
// ---------------------------------------------------------------------------

struct Run {
    // Field order is drop order: the volume closes before its directory goes.
    vol: Volume,
    model: Model,
    /// Every committed op, as `#seq op`.
    log: Vec<String>,
    /// Position and model after the chosen number of actions.
    snapshot: Option<(Position, Model, usize)>,
    vol_path: PathBuf,
    dir: tempfile::TempDir,
}

/// `Volume::init` for a master.
///
/// Works around a libjfs bug: `Volume::init` builds the volume (opening and
/// dropping a sled db in `build_volume`), then reopens it at once with
/// `Volume::open`. sled 0.34 does not release the db's `flock` synchronously
/// on drop (its flusher thread holds it a moment longer; spacejam/sled#1234,
/// #1289), so `init` fails now and then with "could not acquire lock on
/// .../meta/db: WouldBlock". The volume is complete on disk by then, so the
/// test opens it again after a pause.
fn init_master(vol_path: &Path) -> Volume {
    Volume::init(vol_path, Role::Master).expect("init volume")
}

/// Commits the ops of `actions` to a new master volume, applying each to the
/// model too. With `snapshot_after = Some(k)`, keeps the model and position
/// as they were after the first `k` actions.
fn execute(actions: &[Action], snapshot_after: Option<usize>) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let vol_path = dir.path().join("vol");
    let mut vol = init_master(&vol_path);
    let st = std::fs::symlink_metadata(vol.tree_path()).expect("stat tree");
    let mut model = Model::new(st.mode() & 0o7777, st.uid(), st.gid());
    let mut log = Vec::new();
    let mut position = vol.head();
    let mut snapshot = None;
    for (i, action) in actions.iter().enumerate() {
        if snapshot_after == Some(i) {
            snapshot = Some((position, model.clone(), log.len()));
        }
        for op in ops_for(&model, action) {
            model.apply(&op);
            let line = format!("#{} {op}", position.seq + 1);
            match vol.commit(op) {
                Ok(pos) => position = pos,
                Err(e) => panic!(
                    "commit of a valid op failed: {e}\nops:\n  {}\n  {line}   <- failed",
                    log.join("\n  ")
                ),
            }
            log.push(line);
        }
    }
    assert_eq!(
        vol.head(),
        position,
        "the head is not the last commit's position"
    );
    if snapshot_after.is_some_and(|k| k >= actions.len()) {
        snapshot = Some((position, model.clone(), log.len()));
    }
    Run {
        vol,
        model,
        log,
        snapshot,
        vol_path,
        dir,
    }
}

/// User xattrs of a node, not following symlinks.
fn user_xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Errno> {
    let mut out = BTreeMap::new();
    let names = loop {
        let size = rustix::fs::llistxattr_query(path)?;
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    };
    for name in names.split(|&b| b == 0) {
        if !name.starts_with(b"user.") {
            continue;
        }
        let name_os = OsStr::from_bytes(name);
        let value = loop {
            let size = rustix::fs::lgetxattr_query(path, name_os)?;
            let mut buf = vec![0u8; size];
            match rustix::fs::lgetxattr(path, name_os, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    break buf;
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e),
            }
        };
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

fn show(bytes: &[u8]) -> String {
    if bytes.len() > 40 {
        format!("{}... ({} bytes)", display_path(&bytes[..40]), bytes.len())
    } else {
        format!("\"{}\"", display_path(bytes))
    }
}

fn show_names<'a>(names: impl IntoIterator<Item = &'a Vec<u8>>) -> String {
    let v: Vec<String> = names.into_iter().map(|n| display_path(n)).collect();
    format!("[{}]", v.join(", "))
}

/// Every way in which the tree at `root` differs from `model`: names, types,
/// contents, permission bits, owners, symlink targets, user xattrs, link
/// counts and hardlink groups.
fn model_differences(root: &Path, model: &Model) -> Vec<String> {
    let mut diffs = Vec::new();
    // A volume's tree shares inodes with the attic beside it (history keeps
    // removed names there), which count in the link counts.
    let mut attic_links: HashMap<(u64, u64), u64> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(root.with_file_name("attic")) {
        for entry in entries.flatten() {
            if let Ok(md) = entry.metadata() {
                *attic_links.entry((md.dev(), md.ino())).or_default() += 1;
            }
        }
    }
    let mut real_inode: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    let mut real_groups: HashMap<(u64, u64), BTreeSet<Vec<u8>>> = HashMap::new();
    let mut model_groups: BTreeMap<Ino, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let entries = model.entries();
    for e in &entries {
        if !model.is_dir(e.ino) {
            model_groups
                .entry(e.ino)
                .or_default()
                .insert(e.path.clone());
        }
    }
    for e in &entries {
        let shown = display_path(&e.path);
        let mut diff = |what: String| diffs.push(format!("{shown}: {what}"));
        let real = if e.path.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&e.path))
        };
        let meta = match std::fs::symlink_metadata(&real) {
            Ok(m) => m,
            Err(err) => {
                diff(format!("missing from the tree ({err})"));
                continue;
            }
        };
        let inode = &model.inodes[e.ino];
        let ft = meta.file_type();
        let (want, is) = match &inode.kind {
            Kind::Dir(_) => ("directory", ft.is_dir()),
            Kind::File(_) => ("regular file", ft.is_file()),
            Kind::Symlink(_) => ("symlink", ft.is_symlink()),
            Kind::Fifo => ("fifo", std::os::unix::fs::FileTypeExt::is_fifo(&ft)),
        };
        if !is {
            diff(format!("is a {ft:?}, the model has a {want}"));
            continue;
        }
        if !ft.is_symlink() && meta.mode() & 0o7777 != inode.mode {
            diff(format!(
                "mode {:04o}, the model has {:04o}",
                meta.mode() & 0o7777,
                inode.mode
            ));
        }
        if (meta.uid(), meta.gid()) != (inode.uid, inode.gid) {
            diff(format!(
                "owner {}:{}, the model has {}:{}",
                meta.uid(),
                meta.gid(),
                inode.uid,
                inode.gid
            ));
        }
        match &inode.kind {
            Kind::Dir(children) => {
                let listed: BTreeSet<Vec<u8>> = match std::fs::read_dir(&real) {
                    Ok(rd) => rd
                        .map(|d| d.expect("read directory").file_name().into_vec())
                        .collect(),
                    Err(err) => {
                        diff(format!("cannot be listed ({err})"));
                        continue;
                    }
                };
                let modeled: BTreeSet<Vec<u8>> = children.keys().cloned().collect();
                let extra: Vec<_> = listed.difference(&modeled).collect();
                let missing: Vec<_> = modeled.difference(&listed).collect();
                if !extra.is_empty() {
                    diff(format!("names not in the model: {}", show_names(extra)));
                }
                if !missing.is_empty() {
                    diff(format!("names missing: {}", show_names(missing)));
                }
            }
            Kind::File(content) => match std::fs::read(&real) {
                Ok(got) if got == *content => {}
                Ok(got) => {
                    let at = got.iter().zip(content).position(|(a, b)| a != b);
                    diff(format!(
                        "content differs: size {} (model {}), first differing byte {}",
                        got.len(),
                        content.len(),
                        at.map_or("past the shorter end".to_string(), |i| i.to_string())
                    ));
                }
                Err(err) => diff(format!("cannot be read ({err})")),
            },
            Kind::Symlink(target) => match std::fs::read_link(&real) {
                Ok(got) if got.as_os_str().as_bytes() == target.as_slice() => {}
                Ok(got) => diff(format!(
                    "symlink target {}, the model has {}",
                    show(got.as_os_str().as_bytes()),
                    show(target)
                )),
                Err(err) => diff(format!("cannot read the link ({err})")),
            },
            Kind::Fifo => {}
        }
        match user_xattrs(&real) {
            Ok(got) if got == inode.xattrs => {}
            Ok(got) => {
                let names: BTreeSet<&Vec<u8>> = got.keys().chain(inode.xattrs.keys()).collect();
                for name in names {
                    let (g, w) = (got.get(name), inode.xattrs.get(name));
                    if g != w {
                        let s = |v: Option<&Vec<u8>>| v.map_or("absent".to_string(), |v| show(v));
                        diff(format!(
                            "xattr {} is {}, the model has {}",
                            show(name),
                            s(g),
                            s(w)
                        ));
                    }
                }
            }
            Err(err) => diff(format!("cannot read xattrs ({err})")),
        }
        if !model.is_dir(e.ino) {
            let names = model_groups[&e.ino].len() as u64;
            let kept = attic_links
                .get(&(meta.dev(), meta.ino()))
                .copied()
                .unwrap_or(0);
            if meta.nlink() != names + kept {
                diff(format!(
                    "link count {} ({kept} in the attic), the model has {names} names",
                    meta.nlink()
                ));
            }
            real_inode.insert(e.path.clone(), (meta.dev(), meta.ino()));
            real_groups
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .insert(e.path.clone());
        }
    }
    // Hardlink groups: the names of one model inode are exactly the names of
    // one real inode.
    for names in model_groups.values() {
        let keys: BTreeSet<_> = names.iter().filter_map(|p| real_inode.get(p)).collect();
        if keys.len() > 1 {
            diffs.push(format!(
                "the names {} of one model inode are {} different inodes",
                show_names(names),
                keys.len()
            ));
        }
        for key in keys {
            if real_groups[key] != *names {
                diffs.push(format!(
                    "hardlink group {} in the tree, the model has {}",
                    show_names(&real_groups[key]),
                    show_names(names)
                ));
            }
        }
    }
    diffs
}

fn assert_matches_model(what: &str, root: &Path, model: &Model, log: &[String]) {
    let diffs = model_differences(root, model);
    if !diffs.is_empty() {
        panic!(
            "{what} differs from the model:\n  {}\nafter ops:\n  {}",
            diffs.join("\n  "),
            log.join("\n  ")
        );
    }
}

fn is_root() -> bool {
    static NOTED: std::sync::Once = std::sync::Once::new();
    let root = rustix::process::geteuid().is_root();
    if !root {
        NOTED.call_once(|| {
            eprintln!("model tests skipped: they need root (ownership changes)");
        });
    }
    root
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Nothing is written into the source tree on failure.
        failure_persistence: None,
        max_shrink_iters: 400,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// The applied tree matches the model, and the journal materializes into
    /// a tree equal to it (mtimes, holes, xattrs and owners included).
    #[test]
    fn applied_tree_matches_model_and_materialized_journal(
        actions in vec(action(), 1..120),
    ) {
        if !is_root() {
            return Ok(());
        }
        let mut run = execute(&actions, None);
        let tree = run.vol.tree_path();
        assert_matches_model("the applied tree", &tree, &run.model, &run.log);

        run.vol.sync().expect("sync");
        let head = run.vol.head();
        let dest = run.dir.path().join("materialized");
        let at = materialize(&run.vol_path, head.seq, &dest, |_| {}).expect("materialize");
        prop_assert_eq!(at, head);
        let diffs = compare_trees(&tree, &dest, &CompareOptions::default()).expect("compare");
        if !diffs.is_empty() {
            let shown: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
            panic!(
                "the materialized tree differs from the applied one (left):\n  {}\nafter ops:\n  {}",
                shown.join("\n  "),
                run.log.join("\n  ")
            );
        }
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// Materializing at an intermediate position gives the tree the model had
    /// there.
    #[test]
    fn materialize_at_intermediate_position_matches_model_then(
        actions in vec(action(), 1..80),
        when in 0usize..1000,
    ) {
        if !is_root() {
            return Ok(());
        }
        let k = when % (actions.len() + 1);
        let mut run = execute(&actions, Some(k));
        let (position, model, ops) = run.snapshot.take().expect("a snapshot");
        run.vol.sync().expect("sync");
        let dest = run.dir.path().join("materialized");
        let at = materialize(&run.vol_path, position.seq, &dest, |_| {}).expect("materialize");
        prop_assert_eq!(at, position);
        assert_matches_model(
            &format!("the tree materialized at {}", position.seq),
            &dest,
            &model,
            &run.log[..ops],
        );
    }
}

/// Commits the ops of `actions` to `vol`, applying them to `model` too, and
/// keeps `(seq, model)` after each action in `states`.
fn commit_actions(
    vol: &mut Volume,
    model: &mut Model,
    actions: &[Action],
    log: &mut Vec<String>,
    states: &mut Vec<(u64, Model)>,
) {
    for action in actions {
        for op in ops_for(model, action) {
            model.apply(&op);
            let line = squeeze(&format!("#{} {op}", vol.head().seq + 1));
            if let Err(e) = vol.commit(op) {
                panic!(
                    "commit of a valid op failed: {e}\nops:\n  {}\n  {line}   <- failed",
                    log.join("\n  ")
                );
            }
            log.push(line);
        }
        states.push((vol.head().seq, model.clone()));
    }
}

fn assert_same_trees(what: &str, left: &Path, right: &Path, log: &[String]) {
    // An attic directory's own mtime is not history. Blocks that fallocate
    // allocated and nothing wrote read as zeros and are reported as data or
    // as holes depending on the page cache (see CompareOptions).
    let opts = CompareOptions {
        ignore_root_mtime: left.ends_with("attic"),
        zero_blocks_are_holes: true,
    };
    let diffs = compare_trees(left, right, &opts).expect("compare");
    if !diffs.is_empty() {
        let shown: Vec<String> = diffs.iter().map(|d| squeeze(&d.to_string())).collect();
        panic!(
            "{what}:\n  {}\nafter ops:\n  {}",
            shown.join("\n  "),
            log.join("\n  ")
        );
    }
}

/// Long runs of one character (the long names) shortened, for messages.
fn squeeze(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let mut j = i;
        while j < chars.len() && chars[j] == chars[i] {
            j += 1;
        }
        if j - i > 8 {
            out.push_str(&format!("{}{{{}}}", chars[i], j - i));
        } else {
            out.extend(&chars[i..j]);
        }
        i = j;
    }
    out
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// Gives a replica volume every record of `master` it lacks (as a master
/// ships them: the exact bytes) without applying them.
fn ship(master: &Volume, replica: &mut Volume) {
    let from = replica.head().seq + 1;
    let bytes: Vec<Vec<u8>> = master
        .journal()
        .read_from(from)
        .expect("read journal")
        .map(|e| e.expect("entry").record.encode().expect("encode"))
        .collect();
    replica.receive(&bytes).expect("receive");
}

proptest! {
    #![proptest_config(config(64))]

    /// Rounds of random changes, each ended by a rewind of the master to a
    /// random earlier state (before or after earlier rewinds): after each,
    /// the tree is exactly the model at that state and what the journal
    /// materializes there, and the journal (rewinds included) materializes
    /// into the tree at its head. A replica fed the same journal can rewind
    /// its tree alone to any of those states and move forward again, and
    /// ends with the master's tree and attic.
    #[test]
    fn rewinds_bring_back_every_earlier_state(
        rounds in vec((vec(action(), 1..30), 0usize..1000), 1..4),
        replica_targets in vec(0usize..1000, 1..4),
    ) {
        if !is_root() {
            return Ok(());
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let vol_path = dir.path().join("vol");
        let mut vol = init_master(&vol_path);
        let st = std::fs::symlink_metadata(vol.tree_path()).expect("stat tree");
        let mut model = Model::new(st.mode() & 0o7777, st.uid(), st.gid());
        let mut log = Vec::new();
        let mut states = vec![(vol.head().seq, model.clone())];
        for (round, (actions, pick)) in rounds.iter().enumerate() {
            commit_actions(&mut vol, &mut model, actions, &mut log, &mut states);
            let (to, then) = states[pick % states.len()].clone();
            let rewound = vol.rewind(to, |_| {}).unwrap_or_else(|e| {
                panic!("rewind to {to} failed: {}\nafter ops:\n  {}", chain(&e), log.join("\n  "))
            });
            log.push(format!("-- rewind to {to}: {} records undone", rewound.undone));
            model = then;
            let what = format!("round {round}: the tree rewound to {to}");
            assert_matches_model(&what, &vol.tree_path(), &model, &log);
            vol.sync().expect("sync");
            let dest = dir.path().join(format!("at-{round}"));
            materialize(&vol_path, to, &dest, |_| {}).expect("materialize");
            assert_same_trees(&format!("{what} differs from the journal materialized there"),
                &vol.tree_path(), &dest, &log);
            let dest = dir.path().join(format!("head-{round}"));
            materialize(&vol_path, vol.head().seq, &dest, |_| {}).expect("materialize");
            assert_same_trees(&format!("{what} differs from the journal materialized at its head"),
                &vol.tree_path(), &dest, &log);
            states.push((vol.head().seq, model.clone()));
        }

        // A replica: the same journal, its tree taken back alone.
        let rep_path = dir.path().join("replica");
        let mut rep = Volume::init_with(&rep_path, Role::Replica, vol.id(), b"secret").expect("init replica");
        ship(&vol, &mut rep);
        rep.replay(None, |_| {}).expect("replay");
        for (i, pick) in replica_targets.iter().enumerate() {
            let to = states[pick % states.len()].0;
            if to > rep.applied().seq {
                rep.replay(Some(to), |_| {}).expect("replay forward");
            } else {
                rep.rewind_tree(to, None, |_| {}).unwrap_or_else(|e| {
                    panic!("replica rewind to {to} failed: {}\nafter ops:\n  {}", chain(&e), log.join("\n  "))
                });
            }
            let dest = dir.path().join(format!("rep-{i}"));
            materialize(&vol_path, to, &dest, |_| {}).expect("materialize");
            assert_same_trees(&format!("the replica's tree taken to {to}"), &rep.tree_path(), &dest, &log);
        }
        rep.replay(None, |_| {}).expect("replay to the head");
        assert_same_trees("the replica at the head", &vol.tree_path(), &rep.tree_path(), &log);
        assert_same_trees("the replica's attic", &vol.attic_path(), &rep.attic_path(), &log);
    }
}
