//! XML decode → encode → decode gives the first decode back (minus
//! `Command::Unknown`, which encoders skip by design, and with DevInf
//! 1.0/1.1 in the 1.1 shape the encoders write: see common.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
mod common;

use common::{canonical, canonical_devinf};
use shardsync::xml;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = xml::decode(data) {
        let mut out = Vec::new();
        xml::encode(&m, &mut out);
        let back = match xml::decode(&out) {
            Ok(b) => b,
            Err(e) => panic!("re-decoding our own XML failed: {e}\n{}", String::from_utf8_lossy(&out)),
        };
        assert_eq!(back, canonical(m));
    }
    if let Ok(d) = xml::decode_devinf(data) {
        let mut out = Vec::new();
        xml::encode_devinf(&d, &mut out);
        let back = match xml::decode_devinf(&out) {
            Ok(b) => b,
            Err(e) => panic!("re-decoding our own DevInf XML failed: {e}\n{}", String::from_utf8_lossy(&out)),
        };
        let mut want = d;
        canonical_devinf(&mut want);
        assert_eq!(back, want);
    }
});
