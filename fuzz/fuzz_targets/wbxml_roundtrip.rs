//! WBXML decode → encode → decode gives the first decode back (minus
//! `Command::Unknown`, which encoders skip by design, and with DevInf
//! 1.0/1.1 in the 1.1 shape the encoders write: see common.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
mod common;

use common::{canonical, canonical_devinf};
use shardsync::wbxml;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wbxml::decode(data) {
        let mut out = Vec::new();
        wbxml::encode(&m, &mut out);
        let back = match wbxml::decode(&out) {
            Ok(b) => b,
            Err(e) => panic!("re-decoding our own WBXML failed: {e}"),
        };
        assert_eq!(back, canonical(m));
    }
    if let Ok(d) = wbxml::decode_devinf(data) {
        let mut out = Vec::new();
        wbxml::encode_devinf(&d, &mut out);
        let back = match wbxml::decode_devinf(&out) {
            Ok(b) => b,
            Err(e) => panic!("re-decoding our own DevInf WBXML failed: {e}"),
        };
        let mut want = d;
        canonical_devinf(&mut want);
        assert_eq!(back, want);
    }
});
