//! `decode_segment` on arbitrary bytes, three ways per input:
//!
//! 1. the input as a segment file;
//! 2. the input with its checksums repaired (header CRC, frame CRCs, sealed
//!    body SHA-256 and lengths), so that mutations reach frames and records;
//! 3. a built-in valid seed segment (active, sealed zstd or sealed plain,
//!    chosen by the first byte) with the input's edits applied, as it is and
//!    repaired.
//!
//! Nothing may panic, and whatever decodes must be sound (see `check_segment`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use libjfs_fuzz::{apply_edits, check_segment, fix_checksums, seed_segments};

fuzz_target!(|data: &[u8]| {
    check_segment(data);
    if let Some(fixed) = fix_checksums(data) {
        check_segment(&fixed);
    }
    if let Some((&pick, edits)) = data.split_first() {
        let seeds = seed_segments();
        let mutated = apply_edits(&seeds[pick as usize % seeds.len()], edits);
        check_segment(&mutated);
        if let Some(fixed) = fix_checksums(&mutated) {
            check_segment(&fixed);
        }
    }
});
