//! Reading the journal newest first (`Journal::read_back`, what rewinds
//! use): the same verified entries as reading forward, in reverse, over any
//! stretch of sealed (compressed or stored) and active segments; damage is an
//! error, never a shorter or different answer.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use libjfs::journal::{Journal, JournalConfig, JournalError};
use libjfs::record::Marker;
use libjfs::{Entry, Op, Record, Timestamp, VolumeId};

const VOL: VolumeId = VolumeId([0x5a; 16]);

/// Record `seq`, of a size that varies with it (so that frames and chunks
/// do not line up).
fn record(seq: u64) -> Record {
    Record {
        seq,
        time: Timestamp::new(1_700_000_000 + seq as i64, 0),
        op: Op::Marker(Marker::Snapshot {
            name: format!("s{seq}-{}", "x".repeat((seq * 7 % 50) as usize)),
        }),
        mtimes: vec![],
        before: vec![],
    }
}

fn config(zstd_level: Option<i32>) -> JournalConfig {
    JournalConfig {
        segment_bytes: 1 << 30,
        zstd_level,
    }
}

/// Appends records `from ..= to`.
fn append(j: &mut Journal, from: u64, to: u64) {
    for seq in from..=to {
        j.append(&record(seq)).unwrap();
    }
}

/// A journal of 2,300 records: 1..=600 and 601..=1200 in zstd segments,
/// 1201..=1800 in a stored one, 1801..=2300 in the active segment. Every
/// segment holds more than two chunks of 256 records.
fn journal(dir: &Path) -> Journal {
    let mut j = Journal::create(dir, VOL, config(Some(3))).unwrap();
    append(&mut j, 1, 600);
    j.seal().unwrap();
    append(&mut j, 601, 1200);
    j.seal().unwrap();
    j.sync().unwrap();
    drop(j);
    let (mut j, _) = Journal::open(dir, VOL, config(None)).unwrap();
    append(&mut j, 1201, 1800);
    j.seal().unwrap();
    append(&mut j, 1801, 2300);
    j.sync().unwrap();
    j
}

fn forward(j: &Journal, lo: u64, hi: u64) -> Vec<Entry> {
    let mut v: Vec<Entry> = j
        .read_from(lo)
        .unwrap()
        .map(|e| e.unwrap())
        .take_while(|e| e.record.seq <= hi)
        .collect();
    v.reverse();
    v
}

fn back(j: &Journal, lo: u64, hi: u64) -> Vec<Entry> {
    j.read_back(lo, hi).unwrap().map(|e| e.unwrap()).collect()
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn reading_back_gives_the_forward_entries_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    assert_eq!(j.head().seq, 2300);
    assert_eq!(segment_files(dir.path(), "seg").len(), 3);
    let mut stretches = vec![
        (1, 2300),
        (1, 1),
        (2300, 2300),
        (600, 601),
        (1, 600),
        (601, 1200),
        (1200, 1801),
        (256, 513),
        (257, 512),
        (1801, 2300),
        (2000, 2299),
    ];
    // And some chosen by a small generator, fixed so a failure repeats.
    let mut x: u64 = 0x9e37_79b9;
    for _ in 0..40 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let a = 1 + (x >> 33) % 2300;
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let b = 1 + (x >> 33) % 2300;
        stretches.push((a.min(b), a.max(b)));
    }
    for (lo, hi) in stretches {
        let got = back(&j, lo, hi);
        assert_eq!(got.len() as u64, hi + 1 - lo, "{lo}..={hi}");
        assert_eq!(got, forward(&j, lo, hi), "{lo}..={hi}");
    }
}

#[test]
fn a_stretch_outside_the_journal_is_refused_and_an_empty_one_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path());
    assert!(matches!(
        j.read_back(10, 2301),
        Err(JournalError::NotFound { seq: 2301, .. })
    ));
    assert!(matches!(
        j.read_back(0, 5),
        Err(JournalError::NotFound { seq: 0, .. })
    ));
    assert_eq!(j.read_back(11, 10).unwrap().count(), 0);
    j.trim_before(601).unwrap();
    assert!(matches!(
        j.read_back(600, 700),
        Err(JournalError::NotFound { seq: 600, .. })
    ));
    assert_eq!(back(&j, 601, 700), forward(&j, 601, 700));
}

#[test]
fn records_appended_after_the_reader_started_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path());
    let expected = forward(&j, 1500, 2300);
    let reader = j.read_back(1500, 2300).unwrap();
    // The active segment the reader listed takes more records and is
    // sealed (its file renamed away) before the reader looks at it.
    append(&mut j, 2301, 2400);
    j.seal().unwrap();
    assert!(segment_files(dir.path(), "active")
        .iter()
        .all(|p| !p.ends_with("00000000000000001801.active")));
    let got: Vec<Entry> = reader.map(|e| e.unwrap()).collect();
    assert_eq!(got, expected);
}

#[test]
fn damage_anywhere_in_the_stretch_is_an_error() {
    for (file, at) in [
        ("00000000000000000601.seg", 400),
        ("00000000000000001201.seg", 5000),
        ("00000000000000001801.active", 3000),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let path = dir.path().join(file);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, at).unwrap();
        f.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
        let mut reader = j.read_back(1, 2300).unwrap();
        let mut handed = 0;
        let err = loop {
            match reader.next() {
                Some(Ok(e)) => {
                    // Entries of the undamaged segments after it still come,
                    // newest first; none of the damaged one does.
                    assert!(!file.starts_with(&format!("{:020}", first_of(e.record.seq))));
                    handed += 1;
                }
                Some(Err(e)) => break e,
                None => panic!("{file}: damage at {at} read as a whole stretch"),
            }
        };
        assert!(
            matches!(err, JournalError::Corrupt { .. }),
            "{file}: {err:?}"
        );
        assert!(
            reader.next().is_none(),
            "{file}: the reader goes on after an error"
        );
        assert!(handed < 2300, "{file}");
    }
}

/// The first record of the segment holding `seq`, in [`journal`].
fn first_of(seq: u64) -> u64 {
    match seq {
        1..=600 => 1,
        601..=1200 => 601,
        1201..=1800 => 1201,
        _ => 1801,
    }
}
