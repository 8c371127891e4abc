//! The engine, driven by a sequence of messages on the in-memory store,
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "targets.rs"]
mod targets;

fuzz_target!(|data: &[u8]| {
    targets::engine_messages(data);
});
