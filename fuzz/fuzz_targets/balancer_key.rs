//! The balancer's header scan never panics, whatever the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "targets.rs"]
mod targets;

fuzz_target!(|data: &[u8]| {
    targets::balancer_key(data);
});
