//! Fuzzing on stable, in the normal test suite: arbitrary and mutated bytes fed
//! to `Record::decode` and `decode_segment` must never panic, and whatever
//! decodes must be a valid record that re-encodes to itself.
//!
//! The coverage-guided fuzz targets in `fuzz/` go deeper; this keeps the
//! decoders honest on every `cargo test` in a few seconds. Set
//! `PROPTEST_RNG_SEED` to replay a run; failures print a shrunk input.
//!
//! `JFS_FUZZ_SEEDS=<dir> cargo test -p libjfs --test decode_robustness write_fuzz_seeds`
//! writes a seed corpus for the fuzz targets into `<dir>/record` and
//! `<dir>/segment` (see fuzz/README.md).

use std::path::Path;

use libjfs::format::{
    encode_frame, ActiveHeader, BodySum, Compression, SealedHeader, VolumeId, FORMAT_VERSION,
};
use libjfs::journal::{decode_segment, SegmentContents};
use libjfs::record::{
    BeforeImage, FallocateMode, Marker, RenameMode, SetMtime, SpecialKind, MAX_RECORD,
};
use libjfs::{NewNode, Node, Op, Position, Record, RelPath, Timestamp};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;

const VOL: VolumeId = VolumeId([0x5a; 16]);

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files next to the sources: failures print their input.
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Valid records
// ---------------------------------------------------------------------------

fn arb_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(String::into_bytes),
        Just(b"caf\xe9".to_vec()),
        Just("é".as_bytes().to_vec()),
        vec(1u8..=255, 1..12),
    ]
}

fn arb_path() -> impl Strategy<Value = RelPath> {
    vec(arb_name(), 1..4).prop_filter_map("not a valid path", |parts| {
        RelPath::new(parts.join(&b'/')).ok()
    })
}

fn arb_node() -> impl Strategy<Value = Node> {
    prop_oneof![1 => Just(Node::Root), 3 => arb_path().prop_map(Node::Path)]
}

fn arb_time() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (any::<i64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Timestamp::new(s, n)),
        (1_600_000_000i64..1_800_000_000, 0u32..1_000_000_000)
            .prop_map(|(s, n)| Timestamp::new(s, n)),
    ]
}

fn arb_new_node() -> impl Strategy<Value = NewNode> {
    (0u32..=0o7777, any::<u32>(), any::<u32>()).prop_map(|(mode, uid, gid)| NewNode {
        mode,
        uid,
        gid,
    })
}

fn arb_offset() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1 << 20, 0u64..1 << 40, Just(0)]
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn arb_xattr_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(b"user.k".to_vec()), vec(1u8..=255, 1..20)]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(SpecialKind::Fifo),
        Just(SpecialKind::Socket),
        any::<u64>().prop_map(|rdev| SpecialKind::CharDevice { rdev }),
        any::<u64>().prop_map(|rdev| SpecialKind::BlockDevice { rdev }),
    ];
    let rename_mode = prop_oneof![
        Just(RenameMode::Replace),
        Just(RenameMode::NoReplace),
        Just(RenameMode::Exchange),
    ];
    let falloc_mode = prop_oneof![
        Just(FallocateMode::Allocate),
        Just(FallocateMode::KeepSize),
        Just(FallocateMode::PunchHole),
        Just(FallocateMode::ZeroRange),
    ];
    prop_oneof![
        (arb_path(), arb_new_node()).prop_map(|(path, node)| Op::Create { path, node }),
        (arb_path(), arb_new_node()).prop_map(|(path, node)| Op::Mkdir { path, node }),
        (arb_path(), kind, arb_new_node()).prop_map(|(path, kind, node)| Op::Mknod {
            path,
            kind,
            node
        }),
        (
            arb_path(),
            vec(1u8..=255, 1..40),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(path, target, uid, gid)| Op::Symlink {
                path,
                target,
                uid,
                gid
            }),
        (arb_path(), arb_path()).prop_map(|(from, to)| Op::Link { from, to }),
        arb_path().prop_map(|path| Op::Unlink { path }),
        arb_path().prop_map(|path| Op::Rmdir { path }),
        (arb_path(), arb_path(), rename_mode).prop_map(|(from, to, mode)| Op::Rename {
            from,
            to,
            mode
        }),
        (arb_path(), arb_offset(), arb_bytes(96)).prop_map(|(path, offset, data)| Op::Write {
            path,
            offset,
            data
        }),
        (arb_path(), arb_offset()).prop_map(|(path, size)| Op::Truncate { path, size }),
        (arb_path(), falloc_mode, arb_offset(), 1u64..1 << 30).prop_map(
            |(path, mode, offset, len)| Op::Fallocate {
                path,
                mode,
                offset,
                len
            }
        ),
        (
            arb_node(),
            proptest::option::of(0u32..=0o7777),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(arb_time()),
            proptest::option::of(arb_time()),
        )
            .prop_map(|(node, mode, uid, gid, atime, mtime)| Op::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime
            }),
        (arb_node(), arb_xattr_name(), arb_bytes(40))
            .prop_map(|(node, name, value)| { Op::SetXattr { node, name, value } }),
        (arb_node(), arb_xattr_name()).prop_map(|(node, name)| Op::RemoveXattr { node, name }),
        (
            arb_path(),
            arb_offset(),
            arb_path(),
            arb_offset(),
            0u64..1 << 20
        )
            .prop_map(|(src, src_offset, dst, dst_offset, len)| Op::CopyRange {
                src,
                src_offset,
                dst,
                dst_offset,
                len
            }),
        "[a-z0-9][a-z0-9._-]{0,12}".prop_map(|name| Op::Marker(Marker::Snapshot { name })),
    ]
}

fn arb_before() -> impl Strategy<Value = BeforeImage> {
    prop_oneof![
        (any::<u64>(), arb_bytes(32))
            .prop_map(|(offset, data)| BeforeImage::Bytes { offset, data }),
        any::<u64>().prop_map(BeforeImage::Size),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            arb_time(),
            arb_time()
        )
            .prop_map(|(mode, uid, gid, atime, mtime)| BeforeImage::Attr {
                mode,
                uid,
                gid,
                atime,
                mtime
            }),
        (
            arb_xattr_name(),
            proptest::option::of(arb_bytes(16).prop_map(serde_bytes::ByteBuf::from))
        )
            .prop_map(|(name, value)| BeforeImage::Xattr { name, value }),
        any::<u64>().prop_map(|id| BeforeImage::Attic { id }),
    ]
}

/// A valid record (seq 1; callers renumber).
fn arb_record() -> impl Strategy<Value = Record> {
    (
        arb_time(),
        arb_op(),
        vec(
            (arb_node(), arb_time()).prop_map(|(node, mtime)| SetMtime { node, mtime }),
            0..4,
        ),
        vec(arb_before(), 0..3),
        prop_oneof![Just(1u64), 1u64..1000, 1u64..u64::MAX / 2],
    )
        .prop_map(|(time, op, mtimes, before, seq)| Record {
            seq,
            time,
            op,
            mtimes,
            before,
        })
        .prop_filter("record does not validate", |r| r.validate().is_ok())
}

// ---------------------------------------------------------------------------
// Segments built in memory
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Active,
    SealedZstd,
    SealedPlain,
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Active),
        Just(Kind::SealedZstd),
        Just(Kind::SealedPlain)
    ]
}

/// Renumbers `records` to follow `first_seq - 1`; their encodings.
fn payloads(records: &mut [Record], first_seq: u64) -> Vec<Vec<u8>> {
    records
        .iter_mut()
        .enumerate()
        .map(|(i, r)| {
            r.seq = first_seq + i as u64;
            r.encode().unwrap()
        })
        .collect()
}

fn frames_of(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut raw = Vec::new();
    for p in payloads {
        encode_frame(p, &mut raw);
    }
    raw
}

fn chain_end(start: Position, payloads: &[Vec<u8>]) -> Position {
    payloads.iter().fold(start, |pos, p| pos.next(p))
}

/// A whole segment file holding the frames `raw`, with a correct header for
/// the given range and chain ends (which need not match the frames).
fn segment_file(kind: Kind, start: Position, end: Position, raw: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Active => {
            let h = ActiveHeader {
                volume_id: VOL,
                first_seq: start.seq + 1,
                prev_chain: start.chain,
            };
            let mut out = h.encode().to_vec();
            out.extend_from_slice(raw);
            out
        }
        Kind::SealedZstd | Kind::SealedPlain => {
            let (compression, body) = match kind {
                Kind::SealedZstd => (Compression::Zstd, zstd::bulk::compress(raw, 3).unwrap()),
                _ => (Compression::None, raw.to_vec()),
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

/// A valid segment of `kind` holding `records` (renumbered from `first_seq`).
fn build_segment(kind: Kind, records: &mut [Record], first_seq: u64, prev: [u8; 32]) -> Vec<u8> {
    let ps = payloads(records, first_seq);
    let start = Position {
        seq: first_seq - 1,
        chain: prev,
    };
    segment_file(kind, start, chain_end(start, &ps), &frames_of(&ps))
}

/// Everything that decoded is a valid record that round-trips, in an unbroken chain.
fn check_contents(c: &SegmentContents) {
    for (i, e) in c.entries.iter().enumerate() {
        check_record(&e.record);
        if i > 0 {
            let prev = &c.entries[i - 1];
            assert_eq!(e.prev_chain, prev.position.chain);
            assert_eq!(e.position.seq, prev.position.seq + 1);
        }
        assert_eq!(e.record.seq, e.position.seq);
    }
}

fn check_record(r: &Record) {
    r.validate().expect("a decoded record must validate");
    let bytes = r.encode().expect("a decoded record must encode");
    assert!(bytes.len() <= MAX_RECORD);
    assert_eq!(
        &Record::decode(&bytes).unwrap(),
        r,
        "re-encoding changed the record"
    );
}

// ---------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    /// Overwrite 1, 2, 4 or 8 bytes with an interesting little-endian integer.
    Integer(Index, u64, u8),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7f),
        Just(0x80),
        Just(0xff),
        Just(0xffff),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(MAX_RECORD as u64),
        Just(MAX_RECORD as u64 + 1),
        any::<u64>(),
    ];
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        2 => (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), interesting, prop_oneof![Just(1u8), Just(2), Just(4), Just(8)])
            .prop_map(|(i, v, w)| Mutation::Integer(i, v, w)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, muts: &[Mutation]) {
    for m in muts {
        if bytes.is_empty() {
            if let Mutation::Insert(_, b) = m {
                bytes.extend_from_slice(b);
            }
            continue;
        }
        match m {
            Mutation::FlipBit(i, bit) => {
                let at = i.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
            Mutation::Overwrite(i, b) => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Mutation::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let at = i.index(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Truncate(i) => {
                let at = i.index(bytes.len());
                bytes.truncate(at);
            }
            Mutation::Integer(i, v, w) => {
                let at = i.index(bytes.len());
                let w = (*w as usize).min(bytes.len() - at);
                bytes[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
        }
    }
}

/// What a mutated segment is checked for: no panic, and what decodes is sound.
fn decode_checked(bytes: &[u8]) {
    if let Ok(c) = decode_segment(bytes) {
        check_contents(&c);
    }
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn record_decode_of_arbitrary_bytes(bytes in vec(any::<u8>(), 0..200)) {
        if let Ok(r) = Record::decode(&bytes) {
            check_record(&r);
        }
    }

    /// Bytes that begin like a record: a plausible seq and time, then noise.
    #[test]
    fn record_decode_of_plausible_prefixes(
        seq in 1u8..0x80,
        op in 0u8..20,
        tail in vec(any::<u8>(), 0..100),
    ) {
        let mut bytes = vec![seq, 0x80, 0x80, 0x04, 0x10, op];
        bytes.extend_from_slice(&tail);
        if let Ok(r) = Record::decode(&bytes) {
            check_record(&r);
        }
    }

    #[test]
    fn record_round_trip_and_mutations(
        record in arb_record(),
        muts in vec(arb_mutation(), 1..4),
    ) {
        let bytes = record.encode().unwrap();
        prop_assert_eq!(&Record::decode(&bytes).unwrap(), &record);
        let mut m = bytes.clone();
        mutate(&mut m, &muts);
        if let Ok(r) = Record::decode(&m) {
            check_record(&r);
        }
    }
}

// ---------------------------------------------------------------------------
// Segments
// ---------------------------------------------------------------------------

fn golden_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("golden/v1/journal/00000000000000000001.seg").to_vec(),
        include_bytes!("golden/v1/journal/00000000000000000015.active").to_vec(),
        include_bytes!("golden/v2/journal/00000000000000000001.seg").to_vec(),
        include_bytes!("golden/v2/journal/00000000000000000015.active").to_vec(),
    ]
}

proptest! {
    #![proptest_config(config(600))]

    /// Noise, or noise behind a valid header (else the magic stops it at once).
    #[test]
    fn segment_decode_of_arbitrary_bytes(
        kind in arb_kind(),
        header_ok in any::<bool>(),
        first_seq in 1u64..1 << 40,
        tail in vec(any::<u8>(), 0..300),
    ) {
        let start = Position { seq: first_seq - 1, chain: [3; 32] };
        let end = Position { seq: first_seq + 5, chain: [4; 32] };
        let bytes = if header_ok {
            // Checksums match, so the noise is read as frames.
            segment_file(kind, start, end, &tail)
        } else {
            tail
        };
        decode_checked(&bytes);
    }

    /// Valid segments decode to their records; mutated ones never panic.
    #[test]
    fn segment_round_trip_and_mutations(
        kind in arb_kind(),
        mut records in vec(arb_record(), 1..6),
        first_seq in prop_oneof![Just(1u64), 1u64..1 << 40],
        prev in prop_oneof![Just([0u8; 32]), any::<[u8; 32]>()],
        muts in vec(arb_mutation(), 1..5),
    ) {
        let seg = build_segment(kind, &mut records, first_seq, prev);
        let c = decode_segment(&seg).unwrap();
        prop_assert_eq!(c.torn_tail, None);
        let got: Vec<Record> = c.entries.iter().map(|e| e.record.clone()).collect();
        prop_assert_eq!(got, records);
        let mut m = seg.clone();
        mutate(&mut m, &muts);
        decode_checked(&m);
    }

    /// Mutations of the golden files of every version (the zstd body included).
    #[test]
    fn golden_segment_mutations(
        which in 0usize..4,
        muts in vec(arb_mutation(), 1..5),
    ) {
        let mut m = golden_seeds()[which].clone();
        mutate(&mut m, &muts);
        decode_checked(&m);
    }

    /// Checksums fixed after the mutation, so that decoding gets past them to
    /// the frames, the records and the chain: mutate one record's bytes (the
    /// frame is rebuilt around them), or the frames themselves (then the
    /// sealed body is recompressed and rehashed), or a header field.
    #[test]
    fn segment_mutations_behind_valid_checksums(
        kind in arb_kind(),
        mut records in vec(arb_record(), 1..5),
        first_seq in prop_oneof![Just(1u64), 1u64..1 << 40],
        target in 0usize..3,
        which in any::<Index>(),
        muts in vec(arb_mutation(), 1..4),
        field_value in prop_oneof![
            Just(0u64), Just(1), Just(2), 0u64..1 << 16, 1u64..1 << 40
        ],
        field in 0usize..4,
    ) {
        let ps = payloads(&mut records, first_seq);
        let start = Position { seq: first_seq - 1, chain: [7; 32] };
        let end = chain_end(start, &ps);
        let bytes = match target {
            0 => {
                let mut ps = ps.clone();
                let i = which.index(ps.len());
                mutate(&mut ps[i], &muts);
                segment_file(kind, start, end, &frames_of(&ps))
            }
            1 => {
                let mut raw = frames_of(&ps);
                mutate(&mut raw, &muts);
                segment_file(kind, start, end, &raw)
            }
            _ => {
                // Header fields out of step with the body; the header CRC is redone.
                let (mut s, mut e) = (start, end);
                match field {
                    0 => s.seq = field_value,
                    1 => e.seq = s.seq + field_value,
                    2 => s.chain[field_value as usize % 32] ^= 1,
                    _ => e.chain[field_value as usize % 32] ^= 1,
                }
                if s.seq == u64::MAX {
                    s.seq -= 1;
                }
                segment_file(kind, s, e, &frames_of(&ps))
            }
        };
        decode_checked(&bytes);
    }
}

// ---------------------------------------------------------------------------
// Edge cases, pinned down
// ---------------------------------------------------------------------------

/// An active segment starting at `u64::MAX` with two records.
fn seq_overflow_segment() -> Vec<u8> {
    let mut records = vec![
        Record {
            seq: u64::MAX,
            time: Timestamp::new(0, 0),
            op: Op::Unlink {
                path: RelPath::new("a").unwrap(),
            },
            mtimes: vec![],
            before: vec![],
        };
        2
    ];
    records[1].seq = 1;
    // Encoded without validation: `encode` itself refuses such seqs.
    let ps: Vec<Vec<u8>> = records
        .iter()
        .map(|r| postcard::to_stdvec(r).unwrap())
        .collect();
    let start = Position {
        seq: u64::MAX - 1,
        chain: [0; 32],
    };
    segment_file(Kind::Active, start, start, &frames_of(&ps))
}

/// A segment whose records would run past the largest sequence number is
/// refused with an error, never a panic or a wrapped number.
#[test]
fn seq_overflow_is_an_error_not_a_panic() {
    let bytes = seq_overflow_segment();
    let r = std::panic::catch_unwind(|| decode_segment(&bytes).map(|c| c.entries.len()));
    match r {
        Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("decoded {n} entries past seq u64::MAX"),
        Err(_) => panic!("decode_segment panicked"),
    }
}

/// Postcard accepts over-long varints, so one record has more than one
/// encoding: `decode` then `encode` is not the identity on bytes. Harmless
/// to the chain, which hashes the bytes as stored (and `append_encoded`
/// keeps them), but two journals can hold "the same" record with different
/// chains. Pinned here so that a change is noticed.
#[test]
fn overlong_varints_decode_to_the_same_record() {
    let r = Record {
        seq: 1,
        time: Timestamp::new(0, 0),
        op: Op::Unlink {
            path: RelPath::new("a").unwrap(),
        },
        mtimes: vec![],
        before: vec![],
    };
    let canonical = r.encode().unwrap();
    assert_eq!(canonical[0], 1);
    let mut overlong = vec![0x81, 0x00];
    overlong.extend_from_slice(&canonical[1..]);
    match Record::decode(&overlong) {
        Ok(d) => {
            assert_eq!(d, r);
            assert_ne!(d.encode().unwrap(), overlong);
        }
        Err(e) => eprintln!("over-long varints are refused now: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Seed corpus for fuzz/
// ---------------------------------------------------------------------------

/// Writes seeds for the fuzz targets when `JFS_FUZZ_SEEDS` names a directory.
#[test]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("JFS_FUZZ_SEEDS") else {
        return;
    };
    let dir = Path::new(&dir);
    let (rdir, sdir) = (dir.join("record"), dir.join("segment"));
    std::fs::create_dir_all(&rdir).unwrap();
    std::fs::create_dir_all(&sdir).unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let records: Vec<Record> = (0..64)
        .map(|_| arb_record().new_tree(&mut runner).unwrap().current())
        .collect();
    for (i, r) in records.iter().enumerate() {
        std::fs::write(rdir.join(format!("seed-{i:03}")), r.encode().unwrap()).unwrap();
    }
    let mut n = 0;
    for (i, chunk) in records.chunks(4).enumerate() {
        for kind in [Kind::Active, Kind::SealedZstd, Kind::SealedPlain] {
            let mut rs = chunk.to_vec();
            let seg = build_segment(kind, &mut rs, 1 + i as u64 * 10, [i as u8; 32]);
            std::fs::write(sdir.join(format!("seed-{n:03}")), seg).unwrap();
            n += 1;
        }
    }
    let golden = golden_seeds();
    for (i, g) in golden.iter().enumerate() {
        std::fs::write(sdir.join(format!("golden-{i}")), g).unwrap();
    }
    eprintln!(
        "wrote {} record and {} segment seeds to {}",
        records.len(),
        n + golden.len(),
        dir.display()
    );
}
