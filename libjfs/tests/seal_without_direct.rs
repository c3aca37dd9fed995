//! Sealing writes its file with `O_DIRECT` where the filesystem takes it.
//! On one that refuses it (ramfs answers EINVAL), sealing must fall back
//! to ordinary writes and give the same sealed segments: compressed and
//! stored, each read back whole and checked.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libjfs::journal::{Journal, JournalConfig};
use libjfs::{Op, Record, RelPath, Timestamp, VolumeId};

const VOL: VolumeId = VolumeId([0x3c; 16]);

/// A write of `data` to one file, as record `seq`.
fn record(seq: u64, data: Vec<u8>) -> Record {
    Record {
        seq,
        time: Timestamp::new(1_700_000_000 + seq as i64, 0),
        op: Op::Write {
            path: RelPath::new(b"f".to_vec()).unwrap(),
            offset: (seq - 1) * data.len() as u64,
            data,
        },
        mtimes: vec![],
        before: vec![],
    }
}

/// Whether `dir`'s filesystem refuses `O_DIRECT` as ramfs does.
fn refuses_direct(dir: &Path) -> bool {
    let err = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(dir.join("probe"))
        .err();
    let _ = std::fs::remove_file(dir.join("probe"));
    err.and_then(|e| e.raw_os_error()) == Some(rustix::io::Errno::INVAL.raw_os_error())
}

#[test]
fn sealing_on_a_filesystem_without_direct_writes_falls_back_to_ordinary_ones() {
    let scratch = tempfile::tempdir().unwrap();
    let fs = common::Tmpfs::mount_type(&scratch.path().join("ramfs"), "ramfs", "mode=0700");
    let dir = fs.path().join("journal");
    std::fs::create_dir(&dir).unwrap();
    assert!(
        refuses_direct(fs.path()),
        "ramfs takes O_DIRECT on this kernel: this test no longer covers the fallback"
    );

    // Three segments of 3 MiB each, so that a seal writes several chunks
    // of its buffer: text that zstd shrinks, noise that it cannot (stored
    // as it is), and text again in the segment left active.
    let text = |seq: u64| format!("line {seq} of a file that compresses well\n").repeat(2_000);
    let mut noise = common::Noise::new();
    let mut records = Vec::new();
    for seq in 1..=150 {
        let data = match seq {
            1..=50 | 101..=150 => text(seq).into_bytes()[..60_000].to_vec(),
            _ => noise.bytes(60_000),
        };
        records.push(record(seq, data));
    }
    let config = JournalConfig {
        segment_bytes: 1 << 30,
        zstd_level: Some(3),
    };
    let mut j = Journal::create(&dir, VOL, config.clone()).unwrap();
    for r in &records[..50] {
        j.append(r).unwrap();
    }
    let compressed = j.seal().unwrap().expect("a segment to seal");
    for r in &records[50..100] {
        j.append(r).unwrap();
    }
    let stored = j.seal().unwrap().expect("a segment to seal");
    for r in &records[100..] {
        j.append(r).unwrap();
    }
    j.sync().unwrap();
    drop(j);

    assert!(compressed.sealed && stored.sealed);
    assert_eq!((compressed.first_seq, compressed.last_seq), (1, 50));
    assert_eq!((stored.first_seq, stored.last_seq), (51, 100));
    // zstd shrank the text; the noise was stored, a little larger than
    // its 3 MB of data.
    assert!(
        compressed.file_bytes < 1 << 20,
        "compressed segment of {} bytes",
        compressed.file_bytes
    );
    assert!(
        stored.file_bytes > 3_000_000,
        "stored segment of {} bytes",
        stored.file_bytes
    );
    // Nothing half-written is left beside the segments.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "left over: {names:?}"
    );

    // Opened again, every record reads back as it went in, through both
    // sealed files and the active one.
    let (j, _) = Journal::open(&dir, VOL, config).unwrap();
    let segments = j.segments();
    assert_eq!(
        segments.iter().filter(|s| s.sealed).count(),
        2,
        "{segments:?}"
    );
    let read: Vec<Record> = j.read_from(1).unwrap().map(|e| e.unwrap().record).collect();
    assert_eq!(read.len(), records.len());
    for (got, want) in read.iter().zip(&records) {
        assert_eq!(got, want, "record {}", want.seq);
    }
}
