//! The HTTP request framer and the chunked decoder never panic, whatever
//! bytes arrive and however the socket splits them.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "targets.rs"]
mod targets;

fuzz_target!(|data: &[u8]| {
    targets::http_framing(data);
});
