//! Golden files of every journal format version, and the format's fault model.
//!
//! `tests/golden/vN/` holds a journal written by format version N: one
//! sealed (zstd) segment and one active segment whose records cover every
//! `Op` variant, every `BeforeImage` variant, mtimes and a non-UTF-8 path.
//! Those bytes are frozen: today's decoder must read every version back as
//! exactly the records [`golden_records`] builds, with the chain values
//! listed in `records.txt`. Today's encoder must write the frames of every
//! version byte for byte, and the files of the current version whole.
//! (Version 2 changed only the sealed segment's body checksum, so both
//! versions hold the same records and chains.)
//!
//! The files of the current version were made by the generator below:
//!
//! ```text
//! JFS_WRITE_GOLDEN=1 cargo test -p libjfs --test golden write_golden_files
//! ```
//!
//! It refuses to overwrite existing golden files: once a format version has
//! shipped, its files must never change. A new format version gets a new
//! directory, and the tests of the older ones stay.
//!
//! The second half tests what the format promises about damage: a torn tail
//! of the active segment is cut off at every byte offset, and only a torn
//! tail; every flipped bit of a sealed segment is detected; bad magic, bad
//! version, truncated headers, short files, foreign volumes and oversized
//! records are refused.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use libjfs::format::{
    BodySum, HeaderError, ACTIVE_HEADER_LEN, FORMAT_VERSION, FRAME_HEADER_LEN,
    OLDEST_FORMAT_VERSION, SEALED_HEADER_LEN,
};
use libjfs::journal::{decode_segment, Entry, Journal, JournalConfig, JournalError};
use libjfs::record::{
    BeforeImage, FallocateMode, Marker, RecordError, RenameMode, SetMtime, SpecialKind, MAX_WRITE,
};
use libjfs::{NewNode, Node, Op, Position, Record, RelPath, Timestamp, VolumeId};

// ---------------------------------------------------------------------------
// The golden journal
// ---------------------------------------------------------------------------

const GOLDEN_VOLUME: VolumeId = VolumeId([0x11; 16]);
/// The generator seals the active segment after this record.
const GOLDEN_SEAL_AFTER: u64 = 14;
const GOLDEN_SEALED: &str = "00000000000000000001.seg";
const GOLDEN_ACTIVE: &str = "00000000000000000015.active";

/// The golden files of format version `v`.
fn golden_dir(v: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{v}"))
}

/// Every format version that has golden files: all that this build reads.
fn versions() -> std::ops::RangeInclusive<u16> {
    OLDEST_FORMAT_VERSION..=FORMAT_VERSION
}

fn golden_config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 1 << 30,
        zstd_level: Some(3),
    }
}

fn p(bytes: &[u8]) -> RelPath {
    RelPath::new(bytes).unwrap()
}

fn node(path: &[u8]) -> Node {
    Node::Path(p(path))
}

fn ts(sec: i64, nsec: u32) -> Timestamp {
    Timestamp::new(sec, nsec)
}

fn new_node(mode: u32, uid: u32, gid: u32) -> NewNode {
    NewNode { mode, uid, gid }
}

fn mtime(node: Node, t: Timestamp) -> SetMtime {
    SetMtime { node, mtime: t }
}

/// The records of the golden journal. Everything here is literal on purpose
/// (no `implied_mtimes`, no clock): these are the records that the golden
/// files of every version hold, whatever today's code would build for the
/// same operations.
fn golden_records() -> Vec<Record> {
    let cafe: &[u8] = b"caf\xe9"; // Latin-1 "café": not UTF-8.
    let big: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
    // (op, mtimes, before) in journal order; seq and time follow from the index.
    let mut items: Vec<(Op, Vec<SetMtime>, Vec<BeforeImage>)> = Vec::new();
    let mut add = |op: Op, mtimes: Vec<SetMtime>, before: Vec<BeforeImage>| {
        items.push((op, mtimes, before));
    };
    let t = |seq: i64| ts(1_700_000_000 + seq, 123_456_789);

    // 1..=14: the sealed segment.
    add(
        Op::Mkdir {
            path: p(b"d"),
            node: new_node(0o755, 1000, 1000),
        },
        vec![mtime(node(b"d"), t(1)), mtime(Node::Root, t(1))],
        vec![],
    );
    add(
        Op::Create {
            path: p(b"d/f"),
            node: new_node(0o644, 1000, 1000),
        },
        vec![mtime(node(b"d/f"), t(2)), mtime(node(b"d"), t(2))],
        vec![],
    );
    add(
        Op::Write {
            path: p(b"d/f"),
            offset: 0,
            data: b"hello, golden world\n".to_vec(),
        },
        vec![mtime(node(b"d/f"), t(3))],
        vec![BeforeImage::Bytes {
            offset: 0,
            data: vec![],
        }],
    );
    add(
        Op::Write {
            path: p(b"d/f"),
            offset: 1 << 20,
            data: big.clone(),
        },
        vec![mtime(node(b"d/f"), t(4))],
        vec![BeforeImage::Size(20)],
    );
    add(
        Op::Mknod {
            path: p(b"fifo"),
            kind: SpecialKind::Fifo,
            node: new_node(0o600, 0, 0),
        },
        vec![mtime(node(b"fifo"), t(5)), mtime(Node::Root, t(5))],
        vec![],
    );
    add(
        Op::Mknod {
            path: p(b"sock"),
            kind: SpecialKind::Socket,
            node: new_node(0o777, 1, 2),
        },
        vec![],
        vec![],
    );
    add(
        Op::Mknod {
            path: p(b"d/chr"),
            kind: SpecialKind::CharDevice { rdev: 0x0501 },
            node: new_node(0o620, 0, 5),
        },
        vec![],
        vec![],
    );
    add(
        Op::Mknod {
            path: p(b"d/blk"),
            kind: SpecialKind::BlockDevice {
                rdev: 0x0000_0103_0000_0008,
            },
            node: new_node(0o660, 0, 6),
        },
        vec![],
        vec![],
    );
    add(
        Op::Symlink {
            path: p(b"l"),
            target: b"d/f".to_vec(),
            uid: 5,
            gid: 6,
        },
        vec![mtime(node(b"l"), t(9)), mtime(Node::Root, t(9))],
        vec![],
    );
    add(
        Op::Symlink {
            path: p(b"d/lx"),
            target: b"../\xff\xfe/target".to_vec(),
            uid: u32::MAX,
            gid: 0,
        },
        vec![],
        vec![],
    );
    add(
        Op::Link {
            from: p(b"d/f"),
            to: p(b"g"),
        },
        vec![mtime(Node::Root, t(11))],
        vec![],
    );
    add(
        Op::Create {
            path: p(cafe),
            node: new_node(0o4750, 7, 8),
        },
        vec![mtime(node(cafe), t(12)), mtime(Node::Root, t(12))],
        vec![],
    );
    add(
        Op::Rename {
            from: p(b"g"),
            to: p(b"h"),
            mode: RenameMode::NoReplace,
        },
        vec![mtime(Node::Root, t(13))],
        vec![],
    );
    add(
        Op::Rename {
            from: p(b"h"),
            to: p(cafe),
            mode: RenameMode::Replace,
        },
        vec![mtime(Node::Root, t(14))],
        vec![BeforeImage::Attic { id: 7 }],
    );

    // 15..: the active segment.
    add(
        Op::Rename {
            from: p(b"d/f"),
            to: p(b"l"),
            mode: RenameMode::Exchange,
        },
        vec![mtime(node(b"d"), t(15)), mtime(Node::Root, t(15))],
        vec![],
    );
    add(
        Op::Truncate {
            path: p(b"l"),
            size: 5,
        },
        vec![mtime(node(b"l"), t(16))],
        vec![
            BeforeImage::Size((1 << 20) + 200),
            BeforeImage::Bytes {
                offset: 5,
                data: b", golden world\n".to_vec(),
            },
        ],
    );
    add(
        Op::Fallocate {
            path: p(b"l"),
            mode: FallocateMode::Allocate,
            offset: 0,
            len: 8192,
        },
        vec![mtime(node(b"l"), t(17))],
        vec![],
    );
    add(
        Op::Fallocate {
            path: p(b"l"),
            mode: FallocateMode::KeepSize,
            offset: 8192,
            len: 4096,
        },
        vec![],
        vec![],
    );
    add(
        Op::Fallocate {
            path: p(b"l"),
            mode: FallocateMode::PunchHole,
            offset: 0,
            len: 4096,
        },
        vec![mtime(node(b"l"), t(19))],
        vec![BeforeImage::Bytes {
            offset: 0,
            data: b"hello".to_vec(),
        }],
    );
    add(
        Op::Fallocate {
            path: p(b"l"),
            mode: FallocateMode::ZeroRange,
            offset: 100,
            len: 50,
        },
        vec![mtime(node(b"l"), t(20))],
        vec![],
    );
    add(
        Op::SetAttr {
            node: Node::Root,
            mode: Some(0o1777),
            uid: Some(0),
            gid: Some(u32::MAX),
            atime: Some(ts(-1, 999_999_999)),
            mtime: Some(ts(i64::MAX, 0)),
        },
        vec![],
        vec![BeforeImage::Attr {
            mode: 0o755,
            uid: 0,
            gid: 0,
            atime: ts(1_600_000_000, 1),
            mtime: ts(i64::MIN, 999_999_999),
        }],
    );
    add(
        Op::SetAttr {
            node: node(cafe),
            mode: Some(0o600),
            uid: None,
            gid: Some(9),
            atime: None,
            mtime: Some(ts(1_700_000_022, 0)),
        },
        vec![],
        vec![],
    );
    add(
        Op::SetXattr {
            node: Node::Root,
            name: b"user.root".to_vec(),
            value: b"r".to_vec(),
        },
        vec![],
        vec![BeforeImage::Xattr {
            name: b"user.root".to_vec(),
            value: None,
        }],
    );
    add(
        Op::SetXattr {
            node: node(b"l"),
            name: b"user.k\xff".to_vec(),
            value: vec![0, 1, 2, 255],
        },
        vec![],
        vec![],
    );
    add(
        Op::RemoveXattr {
            node: node(b"l"),
            name: b"user.k\xff".to_vec(),
        },
        vec![],
        vec![BeforeImage::Xattr {
            name: b"user.k\xff".to_vec(),
            value: Some(serde_bytes::ByteBuf::from(vec![0, 1, 2, 255])),
        }],
    );
    add(
        Op::CopyRange {
            src: p(b"l"),
            src_offset: 0,
            dst: p(cafe),
            dst_offset: 10,
            len: 5,
        },
        vec![mtime(node(cafe), t(26))],
        vec![BeforeImage::Size(0)],
    );
    add(
        Op::Unlink { path: p(b"fifo") },
        vec![mtime(Node::Root, t(27))],
        vec![BeforeImage::Attic { id: 42 }],
    );
    add(
        Op::Mkdir {
            path: p(b"d/e"),
            node: new_node(0o700, 0, 0),
        },
        vec![mtime(node(b"d/e"), t(28)), mtime(node(b"d"), t(28))],
        vec![],
    );
    add(
        Op::Rmdir { path: p(b"d/e") },
        vec![mtime(node(b"d"), t(29))],
        vec![BeforeImage::Attic { id: u64::MAX }],
    );
    add(
        Op::Marker(Marker::Snapshot {
            name: "golden-1".into(),
        }),
        vec![],
        vec![],
    );
    add(
        Op::Write {
            path: p(b"d/chr"),
            offset: i64::MAX as u64 - 3,
            data: vec![0xff; 3],
        },
        vec![
            mtime(node(b"d/chr"), t(31)),
            mtime(node(b"d"), t(31)),
            mtime(Node::Root, ts(-5, 0)),
        ],
        vec![],
    );

    items
        .into_iter()
        .enumerate()
        .map(|(i, (op, mtimes, before))| {
            let seq = i as u64 + 1;
            Record {
                seq,
                time: t(seq as i64),
                op,
                mtimes,
                before,
            }
        })
        .collect()
}

/// Writes the golden journal into `dir` (which must hold no segments) and
/// returns the position after each record.
fn write_golden_journal(dir: &Path) -> Vec<Position> {
    let mut j = Journal::create(dir, GOLDEN_VOLUME, golden_config()).unwrap();
    let mut positions = Vec::new();
    for r in golden_records() {
        positions.push(j.append(&r).unwrap());
        if r.seq == GOLDEN_SEAL_AFTER {
            j.seal().unwrap().unwrap();
        }
    }
    j.sync().unwrap();
    positions
}

/// Text of `records.txt`: one line per record, `seq chain-hex op`.
fn records_txt(records: &[Record], positions: &[Position]) -> String {
    let mut s = format!(
        "# jfs journal format v{FORMAT_VERSION} golden records: seq, chain after the record (hex), op.\n\
         # Generated by libjfs/tests/golden.rs (JFS_WRITE_GOLDEN=1); never edit or regenerate.\n",
    );
    for (r, pos) in records.iter().zip(positions) {
        s.push_str(&format!("{} {} {}\n", r.seq, pos.chain_hex(), r.op));
    }
    s
}

/// `(seq, chain)` of every line of `records.txt`.
fn read_records_txt(v: u16) -> Vec<Position> {
    let text = fs::read_to_string(golden_dir(v).join("records.txt")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split(' ');
            let seq = words.next().unwrap().parse().unwrap();
            let chain = hex::decode(words.next().unwrap()).unwrap();
            Position {
                seq,
                chain: chain.try_into().unwrap(),
            }
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A copy of the golden journal of version `v` in a fresh temporary directory.
fn golden_copy(v: u16) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    copy_dir(&golden_dir(v).join("journal"), &dir);
    (tmp, dir)
}

fn read_all(j: &Journal) -> Result<Vec<Entry>, JournalError> {
    j.read_from(j.first_seq())?.collect()
}

/// The payloads of the frames in `raw` (a run of frames), with their offsets.
fn frames(raw: &[u8], mut at: usize) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    while at < raw.len() {
        let len = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        out.push((
            at,
            raw[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len].to_vec(),
        ));
        at += FRAME_HEADER_LEN + len;
    }
    assert_eq!(at, raw.len(), "frames run past the end");
    out
}

/// The decompressed frames of a sealed segment file.
fn sealed_raw(file: &[u8]) -> Vec<u8> {
    let h = libjfs::format::SealedHeader::decode(file).unwrap();
    let body = &file[SEALED_HEADER_LEN..];
    match h.compression {
        libjfs::format::Compression::None => body.to_vec(),
        libjfs::format::Compression::Zstd => {
            zstd::bulk::decompress(body, h.raw_len as usize).unwrap()
        }
    }
}

#[test]
fn write_golden_files() {
    if std::env::var_os("JFS_WRITE_GOLDEN").is_none() {
        eprintln!("JFS_WRITE_GOLDEN is not set: golden files left as they are");
        return;
    }
    let out = golden_dir(FORMAT_VERSION);
    assert!(
        !out.join("journal").exists(),
        "{} exists: golden files of a released format are frozen. Remove it by hand \
         only if format v{FORMAT_VERSION} never shipped.",
        out.join("journal").display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let positions = write_golden_journal(&dir);
    copy_dir(&dir, &out.join("journal"));
    fs::write(
        out.join("records.txt"),
        records_txt(&golden_records(), &positions),
    )
    .unwrap();
    eprintln!("wrote golden files to {}", out.display());
}

#[test]
fn golden_records_cover_the_format() {
    let records = golden_records();
    let names: std::collections::BTreeSet<&str> = records.iter().map(|r| r.op.name()).collect();
    for name in [
        "create",
        "mkdir",
        "mknod",
        "symlink",
        "link",
        "unlink",
        "rmdir",
        "rename",
        "write",
        "truncate",
        "fallocate",
        "setattr",
        "setxattr",
        "removexattr",
        "copy-range",
        "marker",
    ] {
        assert!(names.contains(name), "no {name} record");
    }
    let has = |f: &dyn Fn(&Record) -> bool| records.iter().any(f);
    for mode in [
        RenameMode::Replace,
        RenameMode::NoReplace,
        RenameMode::Exchange,
    ] {
        assert!(has(
            &|r| matches!(&r.op, Op::Rename { mode: m, .. } if *m == mode)
        ));
    }
    for mode in [
        FallocateMode::Allocate,
        FallocateMode::KeepSize,
        FallocateMode::PunchHole,
        FallocateMode::ZeroRange,
    ] {
        assert!(has(
            &|r| matches!(&r.op, Op::Fallocate { mode: m, .. } if *m == mode)
        ));
    }
    assert!(has(&|r| matches!(
        &r.op,
        Op::Mknod {
            kind: SpecialKind::Fifo,
            ..
        }
    )));
    assert!(has(&|r| matches!(
        &r.op,
        Op::Mknod {
            kind: SpecialKind::Socket,
            ..
        }
    )));
    assert!(has(&|r| matches!(
        &r.op,
        Op::Mknod {
            kind: SpecialKind::CharDevice { .. },
            ..
        }
    )));
    assert!(has(&|r| matches!(
        &r.op,
        Op::Mknod {
            kind: SpecialKind::BlockDevice { .. },
            ..
        }
    )));
    assert!(has(&|r| matches!(
        &r.op,
        Op::SetAttr {
            node: Node::Root,
            ..
        }
    )));
    assert!(has(&|r| matches!(
        &r.op,
        Op::SetAttr {
            node: Node::Path(_),
            ..
        }
    )));
    assert!(has(&|r| matches!(
        &r.op,
        Op::SetXattr {
            node: Node::Root,
            ..
        }
    )));
    assert!(has(&|r| matches!(
        &r.op,
        Op::SetXattr {
            node: Node::Path(_),
            ..
        }
    )));
    assert!(has(&|r| r.mtimes.len() > 2));
    for b in [
        |b: &BeforeImage| matches!(b, BeforeImage::Bytes { .. }),
        |b: &BeforeImage| matches!(b, BeforeImage::Size(_)),
        |b: &BeforeImage| matches!(b, BeforeImage::Attr { .. }),
        |b: &BeforeImage| matches!(b, BeforeImage::Xattr { value: None, .. }),
        |b: &BeforeImage| matches!(b, BeforeImage::Xattr { value: Some(_), .. }),
        |b: &BeforeImage| matches!(b, BeforeImage::Attic { .. }),
    ] {
        assert!(has(&|r| r.before.iter().any(b)));
    }
    assert!(
        has(&|r| format!("{}", r.op).contains("\\xe9")),
        "no non-UTF-8 path"
    );
    for r in &records {
        r.validate().unwrap();
    }
}

/// The journal holds exactly the golden records, with the chains of
/// version `v`'s records.txt.
fn check_golden_journal(j: &Journal, v: u16) {
    let want = golden_records();
    let chains = read_records_txt(v);
    assert_eq!(
        chains.len(),
        want.len(),
        "records.txt has one line per record"
    );
    let entries = read_all(j).unwrap();
    let got: Vec<Record> = entries.iter().map(|e| e.record.clone()).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "record {} differs from the v{v} golden record", w.seq);
    }
    let mut prev = Position::ZERO;
    for (e, chain) in entries.iter().zip(&chains) {
        assert_eq!(e.position, *chain, "chain after record {}", chain.seq);
        assert_eq!(e.prev_chain, prev.chain);
        // Today's encoder writes the very bytes the chain was computed over.
        assert_eq!(
            prev.next(&e.record.encode().unwrap()),
            e.position,
            "record {} re-encodes differently",
            e.record.seq
        );
        prev = e.position;
    }
    assert_eq!(j.head(), *chains.last().unwrap());
    assert_eq!(j.head().seq, want.len() as u64);
    assert_eq!(j.first_seq(), 1);
    assert_eq!(j.volume_id(), GOLDEN_VOLUME);
    let segs = j.segments();
    assert_eq!(segs.len(), 2);
    assert!(segs[0].sealed);
    assert_eq!(
        (segs[0].first_seq, segs[0].last_seq),
        (1, GOLDEN_SEAL_AFTER)
    );
    assert!(!segs[1].sealed);
    assert_eq!(
        (segs[1].first_seq, segs[1].last_seq),
        (GOLDEN_SEAL_AFTER + 1, want.len() as u64)
    );
    // Reading from the middle of each segment, and position lookups.
    let from: Vec<u64> = j
        .read_from(GOLDEN_SEAL_AFTER)
        .unwrap()
        .map(|e| e.unwrap().record.seq)
        .collect();
    assert_eq!(
        from,
        (GOLDEN_SEAL_AFTER..=want.len() as u64).collect::<Vec<_>>()
    );
    for pos in &chains {
        assert_eq!(j.position_at(pos.seq).unwrap(), *pos);
    }
}

#[test]
fn every_version_has_golden_files_with_the_same_records() {
    let current = read_records_txt(FORMAT_VERSION);
    for v in versions() {
        assert_eq!(read_records_txt(v), current, "records.txt of v{v}");
    }
}

#[test]
fn golden_files_open_and_read_back() {
    for v in versions() {
        let (_tmp, dir) = golden_copy(v);
        let before: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        let (j, recovery) = Journal::open(&dir, GOLDEN_VOLUME, golden_config()).unwrap();
        assert_eq!(
            recovery,
            Default::default(),
            "nothing to repair in golden files"
        );
        check_golden_journal(&j, v);
        drop(j);
        for (p, b) in &before {
            assert_eq!(&fs::read(p).unwrap(), b, "open changed {}", p.display());
        }
        let j = Journal::open_read_only(&dir, None).unwrap();
        check_golden_journal(&j, v);
        let j = Journal::open_read_only(&dir, Some(GOLDEN_VOLUME)).unwrap();
        check_golden_journal(&j, v);
    }
}

/// A journal of any version goes on in today's: the old active segment
/// takes records and is sealed in today's format beside the old sealed one.
#[test]
fn golden_files_take_appends_after_reopen() {
    for v in versions() {
        let (_tmp, dir) = golden_copy(v);
        let (mut j, _) = Journal::open(&dir, GOLDEN_VOLUME, golden_config()).unwrap();
        let head = j.head();
        let r = Record {
            seq: head.seq + 1,
            time: ts(1_800_000_000, 0),
            op: Op::Unlink { path: p(b"sock") },
            mtimes: vec![],
            before: vec![],
        };
        let pos = j.append(&r).unwrap();
        assert_eq!(pos, head.next(&r.encode().unwrap()));
        j.seal().unwrap().unwrap();
        drop(j);
        let j = Journal::open_read_only(&dir, None).unwrap();
        let entries = read_all(&j).unwrap();
        assert_eq!(entries.len(), golden_records().len() + 1);
        assert_eq!(entries.last().unwrap().record, r);
        assert_eq!(j.head(), pos);
        let versions: Vec<u16> = j
            .segments()
            .iter()
            .filter(|s| s.sealed)
            .map(|s| u16::from_le_bytes(fs::read(&s.path).unwrap()[8..10].try_into().unwrap()))
            .collect();
        assert_eq!(versions, [v, FORMAT_VERSION], "sealed segments after v{v}");
    }
}

#[test]
fn golden_files_decode_with_decode_segment() {
    let want = golden_records();
    for v in versions() {
        let chains = read_records_txt(v);
        let dir = golden_dir(v).join("journal");
        assert_eq!(
            names_in(&dir),
            [GOLDEN_SEALED, GOLDEN_ACTIVE],
            "golden journal files"
        );

        let sealed = decode_segment(&fs::read(dir.join(GOLDEN_SEALED)).unwrap()).unwrap();
        assert!(sealed.sealed);
        assert_eq!(sealed.volume_id, GOLDEN_VOLUME);
        assert_eq!(sealed.torn_tail, None);
        let active = decode_segment(&fs::read(dir.join(GOLDEN_ACTIVE)).unwrap()).unwrap();
        assert!(!active.sealed);
        assert_eq!(active.volume_id, GOLDEN_VOLUME);
        assert_eq!(active.torn_tail, None);
        let all: Vec<&Entry> = sealed.entries.iter().chain(&active.entries).collect();
        assert_eq!(sealed.entries.len() as u64, GOLDEN_SEAL_AFTER);
        assert_eq!(all.len(), want.len());
        for ((e, w), c) in all.iter().zip(&want).zip(&chains) {
            assert_eq!(&e.record, w);
            assert_eq!(e.position, *c);
        }
    }
}

#[test]
fn golden_header_fields() {
    for v in versions() {
        let dir = golden_dir(v).join("journal");
        let chains = read_records_txt(v);
        let sealed = fs::read(dir.join(GOLDEN_SEALED)).unwrap();
        let h = libjfs::format::SealedHeader::decode(&sealed).unwrap();
        assert_eq!(&sealed[0..8], b"JFSSEAL\0");
        assert_eq!(u16::from_le_bytes([sealed[8], sealed[9]]), v);
        assert_eq!(h.compression, libjfs::format::Compression::Zstd);
        assert_eq!((h.first_seq, h.last_seq), (1, GOLDEN_SEAL_AFTER));
        assert_eq!(h.prev_chain, [0; 32]);
        assert_eq!(h.last_chain, chains[GOLDEN_SEAL_AFTER as usize - 1].chain);
        assert_eq!(h.body_len as usize, sealed.len() - SEALED_HEADER_LEN);
        assert_eq!(h.raw_len as usize, sealed_raw(&sealed).len());
        let body = &sealed[SEALED_HEADER_LEN..];
        match (v, h.body_sum) {
            (1, BodySum::Sha256(sum)) => {
                use sha2::Digest;
                assert_eq!(sum, <[u8; 32]>::from(sha2::Sha256::digest(body)));
            }
            (2, BodySum::Xxh3(sum)) => {
                assert_eq!(sum, xxhash_rust::xxh3::xxh3_128(body).to_le_bytes());
                assert_eq!(sealed[144..160], [0; 16]);
            }
            other => panic!("v{v} golden body checksum {other:?}"),
        }
        let active = fs::read(dir.join(GOLDEN_ACTIVE)).unwrap();
        let a = libjfs::format::ActiveHeader::decode(&active).unwrap();
        assert_eq!(&active[0..8], b"JFSACTV\0");
        assert_eq!(u16::from_le_bytes([active[8], active[9]]), v);
        assert_eq!(a.first_seq, GOLDEN_SEAL_AFTER + 1);
        assert_eq!(a.prev_chain, h.last_chain);
        assert_eq!(a.volume_id, GOLDEN_VOLUME);
        // Small enough to keep in the repository.
        assert!(sealed.len() + active.len() < 8 << 10);
    }
}

/// A sealed segment of every version, as a replica receives it from its
/// master, is installed byte for byte; the same segment with one byte of
/// its body changed is refused and the journal stays as it was.
#[test]
fn golden_sealed_segments_install_as_received() {
    for v in versions() {
        let golden = fs::read(golden_dir(v).join("journal").join(GOLDEN_SEALED)).unwrap();
        let chains = read_records_txt(v);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("journal");
        let mut j = Journal::create(&dir, GOLDEN_VOLUME, golden_config()).unwrap();

        let mut damaged = golden.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x20;
        let e = j.install_sealed(&damaged).unwrap_err();
        assert!(
            e.to_string().contains("body checksum mismatch"),
            "v{v}: {e}"
        );
        assert_eq!(j.head(), Position::ZERO);
        assert_eq!(j.segments().len(), 1, "v{v}: only the empty active segment");

        let (info, entries) = j.install_sealed(&golden).unwrap();
        assert_eq!((info.first_seq, info.last_seq), (1, GOLDEN_SEAL_AFTER));
        assert_eq!(entries.len() as u64, GOLDEN_SEAL_AFTER);
        assert_eq!(j.head(), chains[GOLDEN_SEAL_AFTER as usize - 1]);
        assert_eq!(
            fs::read(&info.path).unwrap(),
            golden,
            "v{v}: installed as it came"
        );
    }
}

/// Today's encoder, given the same records, writes the same frames as every
/// version: the active segment's byte for byte, the sealed one's once
/// decompressed. The current version's active segment is the same file.
#[test]
fn golden_encoding_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let positions = write_golden_journal(&dir);
    let active = fs::read(dir.join(GOLDEN_ACTIVE)).unwrap();
    let new = fs::read(dir.join(GOLDEN_SEALED)).unwrap();
    let hn = libjfs::format::SealedHeader::decode(&new).unwrap();
    for v in versions() {
        assert_eq!(positions, read_records_txt(v));
        let golden = golden_dir(v).join("journal");
        let old_active = fs::read(golden.join(GOLDEN_ACTIVE)).unwrap();
        assert_eq!(
            active[ACTIVE_HEADER_LEN..],
            old_active[ACTIVE_HEADER_LEN..],
            "active segment frames differ from the v{v} golden file"
        );
        if v == FORMAT_VERSION {
            assert_eq!(
                active, old_active,
                "active segment differs from the v{v} golden file"
            );
        }
        let old = fs::read(golden.join(GOLDEN_SEALED)).unwrap();
        let ho = libjfs::format::SealedHeader::decode(&old).unwrap();
        assert_eq!(
            sealed_raw(&new),
            sealed_raw(&old),
            "sealed frames differ from v{v}"
        );
        assert_eq!(
            (hn.volume_id, hn.compression, hn.first_seq, hn.last_seq),
            (ho.volume_id, ho.compression, ho.first_seq, ho.last_seq)
        );
        assert_eq!(
            (hn.prev_chain, hn.last_chain, hn.raw_len),
            (ho.prev_chain, ho.last_chain, ho.raw_len)
        );
        let payloads: Vec<Vec<u8>> = frames(&sealed_raw(&old), 0)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let encoded: Vec<Vec<u8>> = golden_records()[..GOLDEN_SEAL_AFTER as usize]
            .iter()
            .map(|r| r.encode().unwrap())
            .collect();
        assert_eq!(payloads, encoded);
    }
}

/// The sealed file byte for byte, compressed body included: the current
/// version's whole, and every older version's body. zstd output is
/// deterministic for one zstd version and level; if only this test fails
/// (and `golden_encoding_is_unchanged` passes), the zstd library changed
/// its output, not the jfs format: old files still read, new ones differ.
#[test]
fn golden_sealed_segment_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    write_golden_journal(&dir);
    let new = fs::read(dir.join(GOLDEN_SEALED)).unwrap();
    for v in versions() {
        let old = fs::read(golden_dir(v).join("journal").join(GOLDEN_SEALED)).unwrap();
        assert!(
            new[SEALED_HEADER_LEN..] == old[SEALED_HEADER_LEN..],
            "sealed segment body differs from the v{v} golden file (see this test's doc comment)"
        );
        if v == FORMAT_VERSION {
            assert!(
                new == old,
                "sealed segment differs from the v{v} golden file (see this test's doc comment)"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Fault model
// ---------------------------------------------------------------------------

const VOL: VolumeId = VolumeId([0x22; 16]);

fn config(zstd: bool) -> JournalConfig {
    JournalConfig {
        segment_bytes: 1 << 30,
        zstd_level: zstd.then_some(3),
    }
}

fn record(seq: u64, op: Op) -> Record {
    Record {
        seq,
        time: ts(1_700_000_000 + seq as i64, 0),
        op,
        mtimes: vec![],
        before: vec![],
    }
}

/// `n` small records; the last is a write of `last_len` bytes.
fn small_records(n: u64, last_len: usize) -> Vec<Record> {
    (1..=n)
        .map(|seq| {
            if seq == n {
                record(
                    seq,
                    Op::Write {
                        path: p(b"f"),
                        offset: 3,
                        data: (0..last_len).map(|i| i as u8 | 1).collect(),
                    },
                )
            } else {
                record(
                    seq,
                    Op::Create {
                        path: p(format!("f{seq}").as_bytes()),
                        node: new_node(0o644, 1, 2),
                    },
                )
            }
        })
        .collect()
}

/// A journal in `dir` holding `records`, all in the active segment.
fn make_active(dir: &Path, records: &[Record]) -> Vec<Position> {
    let mut j = Journal::create(dir, VOL, config(true)).unwrap();
    let pos = records.iter().map(|r| j.append(r).unwrap()).collect();
    j.sync().unwrap();
    pos
}

fn active_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.active"))
}

fn sealed_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// File offset of each record's frame in an active segment holding `records`.
fn frame_offsets(records: &[Record]) -> Vec<u64> {
    let mut at = ACTIVE_HEADER_LEN as u64;
    records
        .iter()
        .map(|r| {
            let here = at;
            at += (FRAME_HEADER_LEN + r.encode().unwrap().len()) as u64;
            here
        })
        .collect()
}

fn records_of(entries: &[Entry]) -> Vec<Record> {
    entries.iter().map(|e| e.record.clone()).collect()
}

/// Open a copy of a journal whose active segment lost its last record's
/// bytes from `cut` on (or had them replaced by zeros): recovery cuts the
/// tail at the frame start, and the journal goes on from there.
#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let records = small_records(4, 60);
    let positions = make_active(&orig, &records);
    let active = active_path(&orig, 1);
    let full = fs::read(&active).unwrap();
    let start = *frame_offsets(&records).last().unwrap() as usize;
    assert!(full.len() - start > 60);
    assert_eq!(
        frames(&full, ACTIVE_HEADER_LEN).last().unwrap().0,
        start,
        "frame offsets"
    );

    let mut cases = 0;
    for cut in start..full.len() {
        for zero_fill in [false, true] {
            let dir = tmp.path().join(format!("cut{cut}-{zero_fill}"));
            fs::create_dir(&dir).unwrap();
            let path = active_path(&dir, 1);
            let mut bytes = full[..cut].to_vec();
            if zero_fill {
                // The file grew but the data never reached the disk.
                bytes.resize(full.len(), 0);
                if bytes == full {
                    cases += 1;
                    continue; // The cut bytes were zeros anyway.
                }
            }
            fs::write(&path, &bytes).unwrap();
            let what = format!("cut at {cut} (frame at {start}), zero fill {zero_fill}");

            // A reader sees the earlier records and changes nothing.
            let ro = Journal::open_read_only(&dir, Some(VOL)).unwrap();
            assert_eq!(ro.head(), positions[2], "{what}");
            assert_eq!(records_of(&read_all(&ro).unwrap()), records[..3], "{what}");
            drop(ro);
            assert_eq!(
                fs::read(&path).unwrap(),
                bytes,
                "{what}: read-only open wrote"
            );

            let (mut j, recovery) = Journal::open(&dir, VOL, config(true)).unwrap();
            let removed = (bytes.len() - start) as u64;
            if removed == 0 {
                assert_eq!(recovery.torn_tail, None, "{what}");
            } else {
                let (seg, offset, n, _why) = recovery.torn_tail.clone().expect(&what);
                assert_eq!(
                    (seg, offset, n),
                    (path.clone(), start as u64, removed),
                    "{what}"
                );
            }
            assert!(recovery.removed.is_empty(), "{what}");
            assert_eq!(fs::metadata(&path).unwrap().len(), start as u64, "{what}");
            assert_eq!(j.head(), positions[2], "{what}");
            assert_eq!(records_of(&read_all(&j).unwrap()), records[..3], "{what}");

            // The journal goes on: the same record again gives the same chain.
            assert_eq!(j.append(&records[3]).unwrap(), positions[3], "{what}");
            j.sync().unwrap();
            assert_eq!(records_of(&read_all(&j).unwrap()), records, "{what}");
            drop(j);
            assert_eq!(fs::read(&path).unwrap(), full, "{what}");
            let (j, recovery) = Journal::open(&dir, VOL, config(true)).unwrap();
            assert_eq!(recovery, Default::default(), "{what}");
            assert_eq!(j.head(), positions[3], "{what}");
            fs::remove_dir_all(&dir).unwrap();
            cases += 1;
        }
    }
    assert_eq!(cases, 2 * (full.len() - start));
}

#[test]
fn zero_filled_tail_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let records = small_records(3, 10);
    let positions = make_active(&dir, &records);
    let path = active_path(&dir, 1);
    let full = fs::read(&path).unwrap();
    let mut padded = full.clone();
    padded.extend_from_slice(&[0; 4096]);
    fs::write(&path, &padded).unwrap();

    let (j, recovery) = Journal::open(&dir, VOL, config(true)).unwrap();
    let (seg, offset, n, why) = recovery.torn_tail.unwrap();
    assert_eq!((seg, offset, n), (path.clone(), full.len() as u64, 4096));
    assert_eq!(why, "zero-filled tail");
    assert_eq!(fs::read(&path).unwrap(), full);
    assert_eq!(j.head(), positions[2]);
    assert_eq!(records_of(&read_all(&j).unwrap()), records);

    // decode_segment reports the same tail without cutting it.
    let c = decode_segment(&padded).unwrap();
    assert_eq!(c.torn_tail, Some((full.len() as u64, "zero-filled tail")));
    assert_eq!(records_of(&c.entries), records);
}

/// What opening an active segment with one bit of a non-last frame flipped does.
fn open_with_flipped_bit(
    dir: &Path,
    path: &Path,
    full: &[u8],
    bit: usize,
) -> Result<(Journal, libjfs::journal::Recovery), JournalError> {
    let mut bytes = full.to_vec();
    bytes[bit / 8] ^= 1 << (bit % 8);
    fs::write(path, &bytes).unwrap();
    let r = Journal::open(dir, VOL, config(true));
    if r.is_err() {
        assert_eq!(
            fs::read(path).unwrap(),
            bytes,
            "bit {bit}: failed open changed the file"
        );
    }
    r
}

/// The offset of the frame that `bit` lands in.
fn flip_target(offsets: &[u64], bit: usize) -> u64 {
    *offsets
        .iter()
        .rev()
        .find(|&&o| o as usize <= bit / 8)
        .unwrap()
}

/// A flipped bit in any record but the last is damage, not a torn tail:
/// opening fails, names the segment and the frame, and leaves the file alone.
#[test]
fn flipped_bit_in_an_earlier_record_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let records = small_records(4, 20);
    make_active(&dir, &records);
    let path = active_path(&dir, 1);
    let full = fs::read(&path).unwrap();
    let offsets = frame_offsets(&records);
    let last = *offsets.last().unwrap() as usize;
    let mut checked = 0;
    for bit in ACTIVE_HEADER_LEN * 8..last * 8 {
        let frame = flip_target(&offsets, bit);
        match open_with_flipped_bit(&dir, &path, &full, bit) {
            Err(JournalError::Corrupt {
                segment,
                offset,
                reason,
            }) => {
                assert_eq!(segment, path, "bit {bit}");
                assert_eq!(offset, frame, "bit {bit}: {reason}");
            }
            Err(e) => panic!("bit {bit}: unexpected error {e}"),
            Ok((_, rec)) => panic!("bit {bit}: opened, recovery {rec:?}"),
        }
        checked += 1;
    }
    assert_eq!(checked, (last - ACTIVE_HEADER_LEN) * 8);
    // Header bits: refused as a bad header.
    for bit in 0..ACTIVE_HEADER_LEN * 8 {
        match open_with_flipped_bit(&dir, &path, &full, bit) {
            Err(JournalError::Header { segment, .. }) => assert_eq!(segment, path),
            Err(e) => panic!("header bit {bit}: unexpected error {e}"),
            Ok(_) => panic!("header bit {bit}: opened"),
        }
    }
}

/// One flipped high bit in the length field of a frame that is not the last
/// makes the frame seem to run past the end of the file, just as a torn
/// append would. The frame header's own checksum tells them apart: opening
/// refuses, naming the frame, instead of cutting off every later record.
#[test]
fn flipped_length_bit_in_an_earlier_frame_is_damage_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let records = small_records(4, 20);
    make_active(&dir, &records);
    let path = active_path(&dir, 1);
    let full = fs::read(&path).unwrap();
    let first = ACTIVE_HEADER_LEN;
    // Bit 4 of the second length byte adds 4096 to the first frame's length.
    let bit = (first + 1) * 8 + 4;
    let r = open_with_flipped_bit(&dir, &path, &full, bit);
    let len_after = fs::metadata(&path).unwrap().len();
    assert!(
        matches!(r, Err(JournalError::Corrupt { offset, .. }) if offset == first as u64),
        "open returned {:?}; the file went from {} to {len_after} bytes",
        r.map(|(j, rec)| (j.head().seq, rec)),
        full.len()
    );
}

/// Every bit of a small sealed segment, flipped: opening and reading all
/// entries fails (the header has a CRC, the body a SHA-256), and
/// `decode_segment` refuses the file too.
#[test]
fn every_flipped_bit_of_a_sealed_segment_is_detected() {
    for zstd in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let records = small_records(3, 8);
        let mut j = Journal::create(&dir, VOL, config(zstd)).unwrap();
        for r in &records {
            j.append(r).unwrap();
        }
        j.seal().unwrap().unwrap();
        drop(j);
        let seg = sealed_path(&dir, 1);
        let good = fs::read(&seg).unwrap();
        assert!(
            good.len() < 400,
            "keep the sealed segment small ({})",
            good.len()
        );
        {
            let j = Journal::open_read_only(&dir, Some(VOL)).unwrap();
            assert_eq!(records_of(&read_all(&j).unwrap()), records);
        }
        for bit in 0..good.len() * 8 {
            let mut bytes = good.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            fs::write(&seg, &bytes).unwrap();
            let err = match Journal::open(&dir, VOL, config(zstd)) {
                Err(e) => e,
                Ok((j, _)) => {
                    assert!(
                        bit >= SEALED_HEADER_LEN * 8,
                        "zstd {zstd} bit {bit}: header flip not caught by open"
                    );
                    match read_all(&j) {
                        Err(e) => e,
                        Ok(entries) => panic!(
                            "zstd {zstd} bit {bit}: read {} entries from a damaged segment",
                            entries.len()
                        ),
                    }
                }
            };
            match &err {
                JournalError::Header { segment, .. } | JournalError::Corrupt { segment, .. } => {
                    assert_eq!(segment, &seg, "zstd {zstd} bit {bit}: {err}")
                }
                e => panic!("zstd {zstd} bit {bit}: unexpected error {e}"),
            }
            assert!(decode_segment(&bytes).is_err(), "zstd {zstd} bit {bit}");
        }
    }
}

fn fix_active_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[0..72]);
    b[72..76].copy_from_slice(&crc.to_le_bytes());
}

fn fix_sealed_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[0..160]);
    b[160..164].copy_from_slice(&crc.to_le_bytes());
}

/// A journal with one sealed segment (records 1..=3) and an active one (4..=5).
fn sealed_and_active(dir: &Path) -> (Vec<Record>, PathBuf, PathBuf) {
    let records = small_records(5, 8);
    let mut j = Journal::create(dir, VOL, config(true)).unwrap();
    for r in &records {
        j.append(r).unwrap();
        if r.seq == 3 {
            j.seal().unwrap().unwrap();
        }
    }
    j.sync().unwrap();
    (records, sealed_path(dir, 1), active_path(dir, 4))
}

fn header_error(r: Result<impl Sized, JournalError>) -> (PathBuf, HeaderError) {
    match r {
        Err(JournalError::Header { segment, source }) => (segment, source),
        Err(e) => panic!("expected a header error, got {e}"),
        Ok(_) => panic!("expected a header error, got success"),
    }
}

#[test]
fn wrong_magic_is_refused() {
    for (which, magic_of_other) in [(0, b"JFSACTV\0"), (1, b"JFSSEAL\0")] {
        for bad in [*b"XFSSEAL\0", *magic_of_other, [0; 8]] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("j");
            let (_, seg, act) = sealed_and_active(&dir);
            let path = if which == 0 { seg } else { act };
            let mut b = fs::read(&path).unwrap();
            b[0..8].copy_from_slice(&bad);
            fs::write(&path, &b).unwrap();
            let (segment, e) = header_error(Journal::open(&dir, VOL, config(true)));
            assert_eq!(segment, path);
            assert_eq!(e, HeaderError::BadMagic(bad));
            let (segment, e) = header_error(Journal::open_read_only(&dir, Some(VOL)));
            assert_eq!((segment, e), (path.clone(), HeaderError::BadMagic(bad)));
            assert!(decode_segment(&b).is_err());
        }
    }
}

#[test]
fn unsupported_version_is_refused() {
    for version in [0u16, FORMAT_VERSION + 1, 0x0100, u16::MAX] {
        for sealed in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("j");
            let (_, seg, act) = sealed_and_active(&dir);
            let path = if sealed { seg } else { act };
            let mut b = fs::read(&path).unwrap();
            b[8..10].copy_from_slice(&version.to_le_bytes());
            // Only the version is wrong: the header checksum matches.
            if sealed {
                fix_sealed_crc(&mut b);
            } else {
                fix_active_crc(&mut b);
            }
            fs::write(&path, &b).unwrap();
            let (segment, e) = header_error(Journal::open(&dir, VOL, config(true)));
            assert_eq!(segment, path);
            assert_eq!(e, HeaderError::UnsupportedVersion(version));
            assert!(matches!(
                decode_segment(&b),
                Err(JournalError::Header {
                    source: HeaderError::UnsupportedVersion(v),
                    ..
                }) if v == version
            ));
        }
    }
}

#[test]
fn truncated_headers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let (_, seg, act) = sealed_and_active(&orig);
    for (path, need) in [(&seg, SEALED_HEADER_LEN), (&act, ACTIVE_HEADER_LEN)] {
        let full = fs::read(path).unwrap();
        for cut in 0..need {
            let dir = tmp.path().join(format!("cut-{need}-{cut}"));
            copy_dir(&orig, &dir);
            let target = dir.join(path.file_name().unwrap());
            fs::write(&target, &full[..cut]).unwrap();
            let want = HeaderError::Truncated { have: cut, need };
            let (segment, e) = header_error(Journal::open(&dir, VOL, config(true)));
            assert_eq!((segment, e), (target.clone(), want.clone()), "cut {cut}");
            let (segment, e) = header_error(Journal::open_read_only(&dir, Some(VOL)));
            assert_eq!((segment, e), (target.clone(), want.clone()), "cut {cut}");
            assert_eq!(fs::read(&target).unwrap(), &full[..cut]);
            if cut >= 8 {
                // decode_segment only knows the kind once the magic is there.
                assert!(matches!(
                    decode_segment(&full[..cut]),
                    Err(JournalError::Header { source, .. }) if source == want
                ));
            } else {
                assert!(decode_segment(&full[..cut]).is_err());
            }
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn sealed_file_of_the_wrong_length_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let (records, seg, _) = sealed_and_active(&orig);
    let full = fs::read(&seg).unwrap();
    let mut lengths: Vec<usize> = (SEALED_HEADER_LEN..full.len()).collect();
    lengths.push(full.len() + 1);
    lengths.push(full.len() + 4096);
    for len in lengths {
        let dir = tmp.path().join(format!("len{len}"));
        copy_dir(&orig, &dir);
        let target = dir.join(seg.file_name().unwrap());
        let mut b = full.clone();
        b.resize(len, 0);
        fs::write(&target, &b).unwrap();
        match Journal::open(&dir, VOL, config(true)) {
            Err(JournalError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!((segment, offset), (target.clone(), len as u64), "len {len}")
            }
            Err(e) => panic!("len {len}: unexpected error {e}"),
            Ok(_) => panic!("len {len}: opened"),
        }
        assert!(decode_segment(&b).is_err(), "len {len}");
        assert_eq!(fs::read(&target).unwrap(), b);
        fs::remove_dir_all(&dir).unwrap();
    }
    // The original still reads.
    let j = Journal::open_read_only(&orig, Some(VOL)).unwrap();
    assert_eq!(records_of(&read_all(&j).unwrap()), records);
}

#[test]
fn foreign_volume_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (_, seg, act) = sealed_and_active(&dir);
    let other = VolumeId([0x33; 16]);
    for r in [
        Journal::open(&dir, other, config(true)).map(|_| ()),
        Journal::open_read_only(&dir, Some(other)).map(|_| ()),
    ] {
        match r {
            Err(JournalError::WrongVolume {
                segment,
                expected,
                found,
            }) => assert_eq!((segment, expected, found), (seg.clone(), other, VOL)),
            Err(e) => panic!("unexpected error {e}"),
            Ok(()) => panic!("opened with the wrong volume id"),
        }
    }
    // An active segment of another volume next to sealed ones of this one.
    let mut b = fs::read(&act).unwrap();
    b[16..32].copy_from_slice(&other.0);
    fix_active_crc(&mut b);
    fs::write(&act, &b).unwrap();
    for r in [
        Journal::open(&dir, VOL, config(true)).map(|_| ()),
        Journal::open_read_only(&dir, None).map(|_| ()),
    ] {
        match r {
            Err(JournalError::WrongVolume {
                segment,
                expected,
                found,
            }) => assert_eq!((segment, expected, found), (act.clone(), VOL, other)),
            Err(e) => panic!("unexpected error {e}"),
            Ok(()) => panic!("opened a journal mixing volumes"),
        }
    }
}

#[test]
fn oversized_write_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let records = small_records(2, 4);
    let positions = make_active(&dir, &records);
    let (mut j, _) = Journal::open(&dir, VOL, config(true)).unwrap();
    let path = active_path(&dir, 1);
    let len = fs::metadata(&path).unwrap().len();

    let huge = record(
        3,
        Op::Write {
            path: p(b"f"),
            offset: 0,
            data: vec![7; MAX_WRITE + 1],
        },
    );
    match j.append(&huge) {
        Err(JournalError::Record {
            seq: 3,
            source: RecordError::Field(_),
        }) => {}
        other => panic!("oversized write: {:?}", other.map(|p| p.seq)),
    }
    assert_eq!(j.head(), positions[1]);
    assert_eq!(fs::metadata(&path).unwrap().len(), len);

    // Bytes over MAX_RECORD are refused before they are even decoded.
    let too_long = vec![0u8; libjfs::record::MAX_RECORD + 1];
    match j.append_encoded(&too_long) {
        Err(JournalError::Record {
            source: RecordError::TooLarge(n),
            ..
        }) => assert_eq!(n, too_long.len()),
        other => panic!("oversized bytes: {:?}", other.map(|(p, _)| p.seq)),
    }
    assert_eq!(j.head(), positions[1]);
    assert_eq!(fs::metadata(&path).unwrap().len(), len);

    // The largest write fits, and the journal goes on normally.
    let max = record(
        3,
        Op::Write {
            path: p(b"f"),
            offset: 0,
            data: vec![7; MAX_WRITE],
        },
    );
    j.append(&max).unwrap();
    let next = record(4, Op::Unlink { path: p(b"f") });
    j.append(&next).unwrap();
    j.seal().unwrap().unwrap();
    drop(j);
    let j = Journal::open_read_only(&dir, Some(VOL)).unwrap();
    let got = records_of(&read_all(&j).unwrap());
    assert_eq!(got.len(), 4);
    assert!(got[2] == max && got[3] == next);
}

/// A frame whose length field is over MAX_RECORD is damage wherever it is.
#[test]
fn impossible_frame_length_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let records = small_records(3, 4);
    make_active(&dir, &records);
    let path = active_path(&dir, 1);
    let offsets = frame_offsets(&records);
    let full = fs::read(&path).unwrap();
    for (i, &at) in offsets.iter().enumerate() {
        for len in [0u32, libjfs::record::MAX_RECORD as u32 + 1, u32::MAX] {
            let mut b = full.clone();
            b[at as usize..at as usize + 4].copy_from_slice(&len.to_le_bytes());
            fs::write(&path, &b).unwrap();
            match Journal::open(&dir, VOL, config(true)) {
                Err(JournalError::Corrupt {
                    segment, offset, ..
                }) => assert_eq!((segment, offset), (path.clone(), at), "frame {i} len {len}"),
                Err(e) => panic!("frame {i} len {len}: unexpected error {e}"),
                Ok(_) => panic!("frame {i} len {len}: opened"),
            }
            assert_eq!(fs::read(&path).unwrap(), b);
        }
    }
}

// ---------------------------------------------------------------------------
// Sealing beside appends
// ---------------------------------------------------------------------------

fn small_segments() -> JournalConfig {
    JournalConfig {
        segment_bytes: 4096,
        zstd_level: Some(3),
    }
}

/// `n` records of a few hundred bytes each, so 4 KiB segments fill often.
fn write_records(n: u64) -> Vec<Record> {
    (1..=n)
        .map(|seq| {
            record(
                seq,
                Op::Write {
                    path: p(b"f"),
                    offset: seq * 100,
                    data: vec![seq as u8; 100 + (seq as usize * 37) % 400],
                },
            )
        })
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A sync taken from the journal and finished without it (as the mount's
/// fsync does) still completes when the segments it took have since been
/// sealed and removed, and appends go on in between.
#[test]
fn a_sync_started_before_seals_finishes_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let records = write_records(200);
    let mut j = Journal::create(&jdir, VOL, small_segments()).unwrap();
    for r in &records[..20] {
        j.append(r).unwrap();
        j.seal_if_full().unwrap();
    }
    let taken: Vec<String> = j
        .segments()
        .iter()
        .filter(|s| !s.sealed)
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!taken.is_empty());
    let sync = j.start_sync().unwrap();
    for r in &records[20..] {
        j.append(r).unwrap();
        j.seal_if_full().unwrap();
    }
    let names = names_in(&jdir);
    assert!(
        taken.iter().all(|t| !names.contains(t)),
        "the segments the sync took are still there: {taken:?} in {names:?}"
    );
    sync.wait().unwrap();
    j.start_sync().unwrap().wait().unwrap();
    let head = j.head();
    drop(j);
    let (j, _) = Journal::open(&jdir, VOL, small_segments()).unwrap();
    assert_eq!(j.head(), head);
    assert_eq!(records_of(&read_all(&j).unwrap()), records);
}

#[test]
fn full_segments_are_sealed_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let records = write_records(400);
    let mut j = Journal::create(&jdir, VOL, small_segments()).unwrap();
    let mut sealed_seen = 0;
    for (i, r) in records.iter().enumerate() {
        j.append(r).unwrap();
        if j.seal_if_full().unwrap().is_some() {
            sealed_seen += 1;
        }
        if i % 25 == 0 {
            // Readers see every record, whether its segment is active,
            // being sealed, or sealed.
            let got = read_all(&j).unwrap();
            assert_eq!(records_of(&got), records[..=i]);
            let ro = Journal::open_read_only(&jdir, Some(VOL)).unwrap();
            assert_eq!(ro.head(), j.head());
            assert_eq!(records_of(&read_all(&ro).unwrap()), records[..=i]);
        }
    }
    let segments = j.segments();
    assert!(sealed_seen >= 10, "only {sealed_seen} seals finished");
    assert!(segments.iter().filter(|s| !s.sealed).count() <= 2);
    for w in segments.windows(2) {
        assert_eq!(w[1].first_seq, w[0].last_seq + 1, "{segments:?}");
    }
    let head = j.head();
    drop(j);

    let (j, _) = Journal::open(&jdir, VOL, small_segments()).unwrap();
    assert_eq!(j.head(), head);
    assert_eq!(records_of(&read_all(&j).unwrap()), records);
    let names = names_in(&jdir);
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".active")).count(),
        1,
        "{names:?}"
    );
    assert!(j.segments().iter().filter(|s| s.sealed).count() >= 10);
}

#[test]
fn a_reader_follows_a_segment_into_its_sealed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let records = write_records(40);
    let mut j = Journal::create(&jdir, VOL, small_segments()).unwrap();
    let mut n = 0;
    while !j.is_full() {
        j.append(&records[n]).unwrap();
        n += 1;
    }
    j.seal_if_full().unwrap();
    j.append(&records[n]).unwrap();
    let reader = j.read_from(1).unwrap();
    // The full segment's sealed copy takes its place before the reader
    // opens it.
    j.seal().unwrap();
    assert!(!active_path(&jdir, 1).exists());
    let got: Vec<Entry> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(records_of(&got), records[..=n]);
}

/// A journal stopped while it sealed a full segment: the full segment
/// (records 1 to 10) and the next active one (11 to 15) are both active
/// files, and no sealed copy exists yet. `cut` shortens the full one.
fn interrupted_seal(jdir: &Path, cut: Option<u64>) -> Vec<Record> {
    let records = write_records(15);
    let mut j = Journal::create(jdir, VOL, config(true)).unwrap();
    for r in &records[..10] {
        j.append(r).unwrap();
    }
    j.sync().unwrap();
    let full = fs::read(active_path(jdir, 1)).unwrap();
    j.seal().unwrap();
    for r in &records[10..] {
        j.append(r).unwrap();
    }
    j.sync().unwrap();
    drop(j);
    fs::remove_file(sealed_path(jdir, 1)).unwrap();
    let len = cut.map_or(full.len(), |c| c as usize);
    fs::write(active_path(jdir, 1), &full[..len]).unwrap();
    records
}

#[test]
fn an_interrupted_seal_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let records = interrupted_seal(&jdir, None);

    let ro = Journal::open_read_only(&jdir, Some(VOL)).unwrap();
    assert_eq!(records_of(&read_all(&ro).unwrap()), records);
    assert_eq!(ro.segments().len(), 2);
    drop(ro);

    let (j, recovery) = Journal::open(&jdir, VOL, config(true)).unwrap();
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(records_of(&read_all(&j).unwrap()), records);
    assert_eq!(
        names_in(&jdir),
        ["00000000000000000001.seg", "00000000000000000011.active"]
    );
}

/// What a crash during a clean stop's seal leaves once the sealed copy of
/// the last segment is in place and the segment is not yet removed: the
/// next (empty) active segment was started before the copy, so a read-only
/// reader finds the journal whole without the recovery only a writer does.
#[test]
fn a_stop_during_the_last_seal_leaves_a_journal_readers_can_open() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let records = write_records(10);
    let mut j = Journal::create(&jdir, VOL, config(true)).unwrap();
    for r in &records {
        j.append(r).unwrap();
    }
    j.sync().unwrap();
    let full = fs::read(active_path(&jdir, 1)).unwrap();
    j.seal().unwrap();
    drop(j);
    fs::write(active_path(&jdir, 1), &full).unwrap();
    assert_eq!(
        names_in(&jdir),
        [
            "00000000000000000001.active",
            "00000000000000000001.seg",
            "00000000000000000011.active"
        ]
    );

    let ro = Journal::open_read_only(&jdir, Some(VOL)).unwrap();
    assert_eq!(records_of(&read_all(&ro).unwrap()), records);
    drop(ro);
    let (j, _) = Journal::open(&jdir, VOL, config(true)).unwrap();
    assert_eq!(records_of(&read_all(&j).unwrap()), records);
    assert_eq!(
        names_in(&jdir),
        ["00000000000000000001.seg", "00000000000000000011.active"]
    );
}

/// What a crash leaves while a replica takes in a sealed segment it
/// received: before the sealed file is renamed in, the journal is as it
/// was (plus an empty active segment that does not continue it); after,
/// it holds the segment. Either way a read-only reader opens it, and a
/// writer cleans up. (Had the file gone in before the next active segment
/// was started, readers would have found no active segment.)
#[test]
fn a_crash_while_a_received_segment_goes_in_leaves_a_journal_readers_can_open() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_records(10);
    let mdir = dir.path().join("master");
    let mut m = Journal::create(&mdir, VOL, config(true)).unwrap();
    for r in &records {
        m.append(r).unwrap();
    }
    let seg = m.seal().unwrap().unwrap();
    let bytes = fs::read(&seg.path).unwrap();

    let jdir = dir.path().join("replica");
    let fresh = {
        let j = Journal::create(&jdir, VOL, config(true)).unwrap();
        drop(j);
        fs::read(active_path(&jdir, 1)).unwrap()
    };
    let (mut j, _) = Journal::open(&jdir, VOL, config(true)).unwrap();
    j.install_sealed(&bytes).unwrap();
    drop(j);
    let done = ["00000000000000000001.seg", "00000000000000000011.active"];
    assert_eq!(names_in(&jdir), done);

    // Before the rename: the old active segment, the file under its
    // temporary name, the next active segment.
    fs::rename(
        sealed_path(&jdir, 1),
        jdir.join("00000000000000000001.seg.tmp"),
    )
    .unwrap();
    fs::write(active_path(&jdir, 1), &fresh).unwrap();
    let ro = Journal::open_read_only(&jdir, Some(VOL)).unwrap();
    assert_eq!(ro.head(), Position::ZERO);
    assert!(read_all(&ro).unwrap().is_empty());
    drop(ro);
    let (mut j, _) = Journal::open(&jdir, VOL, config(true)).unwrap();
    assert_eq!(names_in(&jdir), ["00000000000000000001.active"]);
    j.install_sealed(&bytes).unwrap();
    drop(j);
    assert_eq!(names_in(&jdir), done);

    // After the rename: the old active segment is not removed yet.
    fs::write(active_path(&jdir, 1), &fresh).unwrap();
    let ro = Journal::open_read_only(&jdir, Some(VOL)).unwrap();
    assert_eq!(records_of(&read_all(&ro).unwrap()), records);
    drop(ro);
    let (j, _) = Journal::open(&jdir, VOL, config(true)).unwrap();
    assert_eq!(records_of(&read_all(&j).unwrap()), records);
    assert_eq!(names_in(&jdir), done);
}

#[test]
fn a_full_segment_that_lost_its_tail_takes_appends_again() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let offsets = frame_offsets(&write_records(10));
    // Record 10 is torn: the system stopped before the full segment was
    // written back, so nothing after it was ever synced either.
    let records = interrupted_seal(&jdir, Some(offsets[9] + 5));

    let ro = Journal::open_read_only(&jdir, Some(VOL)).unwrap();
    assert_eq!(records_of(&read_all(&ro).unwrap()), records[..9]);
    drop(ro);

    let (mut j, recovery) = Journal::open(&jdir, VOL, config(true)).unwrap();
    assert_eq!(recovery.torn_tail.as_ref().map(|t| t.1), Some(offsets[9]));
    assert_eq!(recovery.removed, [active_path(&jdir, 11)]);
    assert_eq!(j.head().seq, 9);
    assert_eq!(names_in(&jdir), ["00000000000000000001.active"]);
    j.append(&records[9]).unwrap();
    assert_eq!(records_of(&read_all(&j).unwrap()), records[..10]);
}

#[test]
fn segments_of_random_data_are_stored_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let mut noise = common::Noise::new();
    let mut records = Vec::new();
    for seq in 1..=40u64 {
        // Random data in the first segments, text after.
        let data = if seq <= 20 {
            noise.bytes(3000)
        } else {
            format!("line {seq}\n").repeat(300).into_bytes()
        };
        records.push(record(
            seq,
            Op::Write {
                path: p(b"f"),
                offset: seq * 4000,
                data,
            },
        ));
    }
    let mut j = Journal::create(&jdir, VOL, small_segments()).unwrap();
    for r in &records {
        j.append(r).unwrap();
        j.seal_if_full().unwrap();
    }
    j.seal().unwrap();
    let kinds: Vec<(u64, libjfs::format::Compression)> = j
        .segments()
        .iter()
        .filter(|s| s.sealed)
        .map(|s| {
            let h = libjfs::format::SealedHeader::decode(&fs::read(&s.path).unwrap()).unwrap();
            (s.first_seq, h.compression)
        })
        .collect();
    use libjfs::format::Compression;
    assert!(kinds.iter().any(|k| k.1 == Compression::None), "{kinds:?}");
    assert!(kinds.iter().any(|k| k.1 == Compression::Zstd), "{kinds:?}");
    for (first, c) in &kinds {
        let random = *first <= 20;
        assert_eq!(*c == Compression::None, random, "{kinds:?}");
    }
    drop(j);
    let (j, _) = Journal::open(&jdir, VOL, small_segments()).unwrap();
    assert_eq!(records_of(&read_all(&j).unwrap()), records);
}

#[test]
fn segments_of_several_mib_are_sealed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let config = JournalConfig {
        segment_bytes: 3 << 20,
        zstd_level: Some(3),
    };
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut records = Vec::new();
    for seq in 1..=120u64 {
        // Random blocks, then text: segments of each kind, and bodies that
        // end anywhere in a block.
        let data: Vec<u8> = if seq <= 60 {
            (0..100_000 + seq as usize * 13)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        } else {
            format!("{seq} ").repeat(20_000 + seq as usize).into_bytes()
        };
        records.push(record(
            seq,
            Op::Write {
                path: p(b"f"),
                offset: 0,
                data,
            },
        ));
    }
    let mut j = Journal::create(&jdir, VOL, config.clone()).unwrap();
    for r in &records {
        j.append(r).unwrap();
        j.seal_if_full().unwrap();
    }
    j.seal().unwrap();
    assert!(j.segments().iter().filter(|s| s.sealed).count() >= 4);
    let mut kinds = Vec::new();
    for s in j.segments().iter().filter(|s| s.sealed) {
        let file = fs::read(&s.path).unwrap();
        assert_eq!(file.len() as u64, s.file_bytes);
        let h = libjfs::format::SealedHeader::decode(&file).unwrap();
        // All but the last, sealed at the end, were full.
        assert!(h.raw_len > 2 << 20 || h.last_seq == 120, "{h:?}");
        kinds.push(h.compression);
    }
    use libjfs::format::Compression;
    assert!(kinds.contains(&Compression::None), "{kinds:?}");
    assert!(kinds.contains(&Compression::Zstd), "{kinds:?}");
    drop(j);
    let (j, _) = Journal::open(&jdir, VOL, config).unwrap();
    assert_eq!(records_of(&read_all(&j).unwrap()), records);
}
