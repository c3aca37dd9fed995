//! `Record::decode` on arbitrary bytes: it must never panic, and a record
//! that decodes must validate and decode again, unchanged, from its own
//! encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use libjfs::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::decode(data) {
        libjfs_fuzz::check_record(&r);
    }
});
