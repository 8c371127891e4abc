//! Twin keys, UIDs, merges and format conversions of item texts never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "targets.rs"]
mod targets;

fuzz_target!(|data: &[u8]| {
    targets::content_convert(data);
});
