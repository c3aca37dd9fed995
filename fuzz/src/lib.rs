//! Helpers shared by the fuzz targets: checks, seed segments, and a repair
//! step that recomputes checksums after a mutation so that the fuzzer gets
//! past them to the frames, the records and the chain.

use std::sync::OnceLock;

use libjfs::format::{
    encode_frame, ActiveHeader, BodySum, Compression, SealedHeader, VolumeId, ACTIVE_HEADER_LEN,
    ACTIVE_MAGIC, FORMAT_VERSION, FRAME_HEADER_LEN, SEALED_HEADER_LEN, SEALED_MAGIC,
};
use libjfs::journal::decode_segment;
use libjfs::record::{BeforeImage, FallocateMode, Marker, RenameMode, SetMtime, SpecialKind};
use libjfs::{NewNode, Node, Op, Position, Record, RelPath, Timestamp};

pub const VOL: VolumeId = VolumeId([0x5a; 16]);

/// Largest body the repair step decompresses (keeps each run small).
const MAX_REPAIR_RAW: usize = 1 << 20;

/// A decoded record must be valid and survive re-encoding unchanged.
pub fn check_record(r: &Record) {
    r.validate().expect("a decoded record must validate");
    let bytes = r.encode().expect("a decoded record must encode");
    let again = Record::decode(&bytes).expect("a re-encoded record must decode");
    assert_eq!(&again, r, "re-encoding changed the record");
    // Display must not panic either (it is used in logs and errors).
    let _ = r.op.to_string();
}

/// Decodes a segment file; whatever decodes must be sound.
pub fn check_segment(bytes: &[u8]) {
    let Ok(c) = decode_segment(bytes) else {
        return;
    };
    for (i, e) in c.entries.iter().enumerate() {
        check_record(&e.record);
        assert_eq!(e.record.seq, e.position.seq);
        if i > 0 {
            let prev = &c.entries[i - 1];
            assert_eq!(e.prev_chain, prev.position.chain, "chain broken at {i}");
            assert_eq!(e.position.seq, prev.position.seq + 1);
        }
    }
    if c.sealed {
        assert!(c.torn_tail.is_none(), "a sealed segment cannot be torn");
    }
}

fn p(s: &[u8]) -> RelPath {
    RelPath::new(s).unwrap()
}

/// Valid records of many kinds, numbered from `first_seq`.
pub fn seed_records(first_seq: u64) -> Vec<Record> {
    let node = NewNode {
        mode: 0o644,
        uid: 1000,
        gid: 100,
    };
    let t = Timestamp::new(1_700_000_000, 5);
    let ops = vec![
        Op::Mkdir {
            path: p(b"d"),
            node,
        },
        Op::Create {
            path: p(b"d/f"),
            node,
        },
        Op::Write {
            path: p(b"d/f"),
            offset: 4096,
            data: b"some file data".to_vec(),
        },
        Op::Mknod {
            path: p(b"dev"),
            kind: SpecialKind::BlockDevice { rdev: 0x0803 },
            node,
        },
        Op::Symlink {
            path: p(b"caf\xe9"),
            target: b"d/f".to_vec(),
            uid: 1,
            gid: 2,
        },
        Op::Rename {
            from: p(b"d/f"),
            to: p(b"g"),
            mode: RenameMode::Exchange,
        },
        Op::Fallocate {
            path: p(b"g"),
            mode: FallocateMode::PunchHole,
            offset: 0,
            len: 4096,
        },
        Op::SetAttr {
            node: Node::Root,
            mode: Some(0o755),
            uid: None,
            gid: Some(3),
            atime: Some(t),
            mtime: None,
        },
        Op::SetXattr {
            node: Node::Path(p(b"g")),
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        },
        Op::CopyRange {
            src: p(b"g"),
            src_offset: 0,
            dst: p(b"h"),
            dst_offset: 8,
            len: 4,
        },
        Op::Unlink { path: p(b"g") },
        Op::Marker(Marker::Snapshot {
            name: "seed".into(),
        }),
    ];
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| Record {
            seq: first_seq + i as u64,
            time: t,
            mtimes: if i % 3 == 0 {
                vec![SetMtime {
                    node: Node::Root,
                    mtime: t,
                }]
            } else {
                vec![]
            },
            before: match i % 4 {
                0 => vec![BeforeImage::Size(7)],
                1 => vec![BeforeImage::Attic { id: 9 }],
                2 => vec![BeforeImage::Xattr {
                    name: b"user.k".to_vec(),
                    value: None,
                }],
                _ => vec![],
            },
            op,
        })
        .collect()
}

/// A segment file holding `payloads` as frames. `compression` `None` makes an
/// active segment.
pub fn build_segment(
    compression: Option<Compression>,
    start: Position,
    payloads: &[Vec<u8>],
) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut end = start;
    for p in payloads {
        encode_frame(p, &mut raw);
        end = end.next(p);
    }
    match compression {
        None => {
            let h = ActiveHeader {
                volume_id: VOL,
                first_seq: start.seq + 1,
                prev_chain: start.chain,
            };
            let mut out = h.encode().to_vec();
            out.extend_from_slice(&raw);
            out
        }
        Some(compression) => {
            let body = match compression {
                Compression::Zstd => zstd::bulk::compress(&raw, 3).unwrap(),
                Compression::None => raw.clone(),
            };
            let h = SealedHeader {
                volume_id: VOL,
                compression,
                first_seq: start.seq + 1,
                last_seq: end.seq.max(start.seq + 1),
                prev_chain: start.chain,
                last_chain: end.chain,
                raw_len: raw.len() as u64,
                body_len: body.len() as u64,
                body_sum: BodySum::of(FORMAT_VERSION, &body),
            };
            let mut out = h.encode().to_vec();
            out.extend_from_slice(&body);
            out
        }
    }
}

/// Valid seed segments: active, sealed with zstd, sealed uncompressed.
pub fn seed_segments() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let payloads: Vec<Vec<u8>> = seed_records(41)
            .iter()
            .map(|r| r.encode().unwrap())
            .collect();
        let start = Position {
            seq: 40,
            chain: [0xab; 32],
        };
        let seeds = vec![
            build_segment(None, start, &payloads),
            build_segment(Some(Compression::Zstd), start, &payloads),
            build_segment(Some(Compression::None), start, &payloads),
        ];
        for s in &seeds {
            let c = decode_segment(s).expect("seed segments are valid");
            assert_eq!(c.entries.len(), payloads.len());
        }
        seeds
    })
}

/// Applies the edits `edits` describes to a copy of `seed`: each 4 bytes
/// `[pos lo, pos hi, op, value]` flip bits (op 0), set a byte (1), insert a
/// byte (2) or truncate (3) at `pos` modulo the length.
pub fn apply_edits(seed: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for e in edits.chunks_exact(4) {
        let pos = u16::from_le_bytes([e[0], e[1]]) as usize % (out.len() + 1);
        match e[2] % 4 {
            0 if pos < out.len() => out[pos] ^= e[3].max(1),
            1 if pos < out.len() => out[pos] = e[3],
            2 => out.insert(pos, e[3]),
            3 => out.truncate(pos),
            _ => {}
        }
    }
    out
}

/// Recomputes every frame's payload and header CRC in `raw[at..]` as far as
/// the lengths allow.
fn fix_frames(raw: &mut [u8], mut at: usize) {
    while at + FRAME_HEADER_LEN <= raw.len() {
        let len = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        let end = at + FRAME_HEADER_LEN + len;
        if len == 0 || end > raw.len() {
            break;
        }
        let pcrc = crc32c::crc32c(&raw[at + FRAME_HEADER_LEN..end]);
        raw[at + 4..at + 8].copy_from_slice(&pcrc.to_le_bytes());
        let hcrc = crc32c::crc32c(&raw[at..at + 8]);
        raw[at + 8..at + 12].copy_from_slice(&hcrc.to_le_bytes());
        at = end;
    }
}

/// `bytes` with its checksums made to match: header CRC, frame CRCs and, for
/// a sealed segment, raw and body lengths and the body's SHA-256 (a zstd body
/// is decompressed, repaired and recompressed). Every other field is kept as
/// the mutation left it. `None` when there is no header to repair.
pub fn fix_checksums(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.starts_with(&SEALED_MAGIC) && bytes.len() >= SEALED_HEADER_LEN {
        let mut header = bytes[..SEALED_HEADER_LEN].to_vec();
        let body = &bytes[SEALED_HEADER_LEN..];
        let zstd = u16::from_le_bytes([header[10], header[11]]) == Compression::Zstd as u16;
        let (raw_len, body) = if zstd {
            match zstd::bulk::decompress(body, MAX_REPAIR_RAW) {
                Ok(mut raw) => {
                    fix_frames(&mut raw, 0);
                    (raw.len(), zstd::bulk::compress(&raw, 1).unwrap())
                }
                Err(_) => (MAX_REPAIR_RAW, body.to_vec()),
            }
        } else {
            let mut raw = body.to_vec();
            fix_frames(&mut raw, 0);
            (raw.len(), raw)
        };
        header[112..120].copy_from_slice(&(raw_len as u64).to_le_bytes());
        header[120..128].copy_from_slice(&(body.len() as u64).to_le_bytes());
        // The checksum that the header's version takes (a version this
        // build does not read is refused whatever its checksum).
        let version = u16::from_le_bytes([header[8], header[9]]);
        header[128..160].copy_from_slice(&BodySum::of(version, &body).header_bytes());
        let crc = crc32c::crc32c(&header[..160]);
        header[160..164].copy_from_slice(&crc.to_le_bytes());
        header.extend_from_slice(&body);
        Some(header)
    } else if bytes.starts_with(&ACTIVE_MAGIC) && bytes.len() >= ACTIVE_HEADER_LEN {
        let mut out = bytes.to_vec();
        let crc = crc32c::crc32c(&out[..72]);
        out[72..76].copy_from_slice(&crc.to_le_bytes());
        fix_frames(&mut out, ACTIVE_HEADER_LEN);
        Some(out)
    } else {
        None
    }
}
