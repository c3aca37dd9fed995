//! Paths inside a tree.
//!
//! A [`RelPath`] is a validated byte string relative to the tree root: Linux
//! names are bytes, not UTF-8. Validation is the first line of defence against
//! records that try to reach outside the tree; the applier's `openat2`
//! resolution is the second. This module never touches the filesystem.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name of one path component, as on Linux (`NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest whole path, as on Linux (`PATH_MAX`, counting the NUL we never store).
pub const MAX_PATH: usize = 4096;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path is absolute")]
    Absolute,
    #[error("path has an empty component")]
    EmptyComponent,
    #[error("path has a '.' or '..' component")]
    DotComponent,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path component is {0} bytes long (the limit is 255)")]
    NameTooLong(usize),
    #[error("path is {0} bytes long (the limit is 4096)")]
    PathTooLong(usize),
}

/// A non-empty, validated path relative to the tree root.
///
/// Invariants: not empty, no leading `/`, no empty, `.` or `..` component, no
/// NUL, every component at most [`MAX_NAME`] bytes, at most [`MAX_PATH`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Validates `bytes` as a path relative to the tree root.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RelPath, PathError> {
        let bytes = bytes.into();
        validate(&bytes)?;
        Ok(RelPath(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The directory that holds this entry, or `None` when it sits in the root.
    pub fn parent(&self) -> Option<RelPath> {
        let i = self.0.iter().rposition(|&b| b == b'/')?;
        Some(RelPath(self.0[..i].to_vec()))
    }

    /// The parent as a [`Node`] (the root for top-level entries).
    pub fn parent_node(&self) -> Node {
        match self.parent() {
            Some(p) => Node::Path(p),
            None => Node::Root,
        }
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// `self/name`, validated.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, PathError> {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        v.push(b'/');
        v.extend_from_slice(name);
        RelPath::new(v)
    }

    /// True when `other` is this path or lies below it.
    pub fn contains(&self, other: &RelPath) -> bool {
        other.0.starts_with(&self.0)
            && (other.0.len() == self.0.len() || other.0[self.0.len()] == b'/')
    }

    /// As an OS path relative to the tree root.
    pub fn as_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }
}

fn validate(bytes: &[u8]) -> Result<(), PathError> {
    if bytes.is_empty() {
        return Err(PathError::Empty);
    }
    if bytes.len() > MAX_PATH {
        return Err(PathError::PathTooLong(bytes.len()));
    }
    if bytes[0] == b'/' {
        return Err(PathError::Absolute);
    }
    if bytes.contains(&0) {
        return Err(PathError::Nul);
    }
    for component in bytes.split(|&b| b == b'/') {
        match component {
            b"" => return Err(PathError::EmptyComponent),
            b"." | b".." => return Err(PathError::DotComponent),
            c if c.len() > MAX_NAME => return Err(PathError::NameTooLong(c.len())),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_bytes(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", escape_bytes(&self.0))
    }
}

/// Renders bytes as text: valid UTF-8 stays as it is, other bytes and control
/// characters become `\xNN`, and `\` becomes `\\`, so the text maps back to
/// exactly one byte string.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

thread_local! {
    /// Why the last path failed to deserialize on this thread. Some formats
    /// (postcard) drop the message of a custom error; the record decoder
    /// takes it from here to say what was wrong.
    static LAST_DECODE_ERROR: std::cell::Cell<Option<PathError>> = const { std::cell::Cell::new(None) };
}

/// Takes the reason the last path deserialization on this thread failed.
pub(crate) fn take_decode_error() -> Option<PathError> {
    LAST_DECODE_ERROR.with(|c| c.take())
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RelPath, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        RelPath::new(bytes.into_vec()).map_err(|e| {
            LAST_DECODE_ERROR.with(|c| c.set(Some(e.clone())));
            serde::de::Error::custom(e)
        })
    }
}

/// Something a record can address: the tree root or a path below it.
///
/// Only operations that make sense on the root (attributes, xattrs, mtimes)
/// take a `Node`; everything that creates or removes an entry takes a
/// [`RelPath`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Node {
    Root,
    Path(RelPath),
}

impl Node {
    pub fn path(&self) -> Option<&RelPath> {
        match self {
            Node::Root => None,
            Node::Path(p) => Some(p),
        }
    }
}

impl From<RelPath> for Node {
    fn from(p: RelPath) -> Node {
        Node::Path(p)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Root => f.write_str("/"),
            Node::Path(p) => p.fmt(f),
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Root => f.write_str("Root"),
            Node::Path(p) => p.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_non_utf8_paths() {
        for p in [
            &b"a"[..],
            b"a/b/c",
            b"caf\xe9",
            b".hidden",
            b"a/..b",
            b"...",
            b"a b",
        ] {
            RelPath::new(p).unwrap();
        }
        RelPath::new(vec![b'x'; 255]).unwrap();
    }

    #[test]
    fn refuses_every_escape_form() {
        let long_name = [vec![b'x'; 256]].concat();
        let long_path = vec![b'a'; 4097];
        let cases: Vec<(Vec<u8>, PathError)> = vec![
            (b"".to_vec(), PathError::Empty),
            (b"/etc/passwd".to_vec(), PathError::Absolute),
            (b"a//b".to_vec(), PathError::EmptyComponent),
            (b"a/".to_vec(), PathError::EmptyComponent),
            (b"./a".to_vec(), PathError::DotComponent),
            (b"a/./b".to_vec(), PathError::DotComponent),
            (b"..".to_vec(), PathError::DotComponent),
            (b"a/../../etc".to_vec(), PathError::DotComponent),
            (b"a\0b".to_vec(), PathError::Nul),
            (long_name, PathError::NameTooLong(256)),
            (long_path, PathError::PathTooLong(4097)),
        ];
        for (bytes, want) in cases {
            assert_eq!(RelPath::new(bytes.clone()), Err(want), "{bytes:?}");
        }
    }

    #[test]
    fn parent_name_and_contains() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_bytes(), b"a/b");
        assert_eq!(p.file_name(), b"c");
        assert_eq!(RelPath::new("c").unwrap().parent(), None);
        assert_eq!(RelPath::new("c").unwrap().parent_node(), Node::Root);
        let a = RelPath::new("a").unwrap();
        assert!(a.contains(&p));
        assert!(a.contains(&a));
        assert!(!a.contains(&RelPath::new("ab").unwrap()));
    }

    #[test]
    fn escaping_is_unambiguous() {
        assert_eq!(escape_bytes(b"caf\xe9"), "caf\\xe9");
        assert_eq!(escape_bytes(b"a\\xe9"), "a\\\\xe9");
        assert_eq!(escape_bytes(b"tab\there"), "tab\\x09here");
        assert_eq!(escape_bytes("é".as_bytes()), "é");
    }

    #[test]
    fn deserializing_revalidates() {
        let bad = postcard::to_stdvec(&serde_bytes::Bytes::new(b"../x")).unwrap();
        assert!(postcard::from_bytes::<RelPath>(&bad).is_err());
        let good = postcard::to_stdvec(&RelPath::new("x/y").unwrap()).unwrap();
        assert_eq!(
            postcard::from_bytes::<RelPath>(&good).unwrap().as_bytes(),
            b"x/y"
        );
    }
}
