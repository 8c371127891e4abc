//! The WBXML decoder never panics, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shardsync::wbxml::decode(data);
    let _ = shardsync::wbxml::decode_devinf(data);
});
