//! One regression test per fuzzer finding (inputs inline or under
//! tests/fixtures/fuzz/). Each runs what the fuzz target runs.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

use std::path::Path;

use common::without_unknown;
use shardsync::{wbxml, xml};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz").join(name)).unwrap()
}

/// What the wbxml_roundtrip target checks.
fn wbxml_round_trip(data: &[u8]) {
    if let Ok(m) = wbxml::decode(data) {
        let mut out = Vec::new();
        wbxml::encode(&m, &mut out);
        let back = wbxml::decode(&out).expect("re-decodes");
        assert_eq!(back, without_unknown(m));
    }
    if let Ok(d) = wbxml::decode_devinf(data) {
        let mut out = Vec::new();
        wbxml::encode_devinf(&d, &mut out);
        assert_eq!(wbxml::decode_devinf(&out).expect("re-decodes"), d);
    }
}

/// What the xml_roundtrip target checks.
#[allow(dead_code)]
fn xml_round_trip(data: &[u8]) {
    if let Ok(m) = xml::decode(data) {
        let mut out = Vec::new();
        xml::encode(&m, &mut out);
        let back = xml::decode(&out).expect("re-decodes");
        assert_eq!(back, without_unknown(m));
    }
    if let Ok(d) = xml::decode_devinf(data) {
        let mut out = Vec::new();
        xml::encode_devinf(&d, &mut out);
        assert_eq!(xml::decode_devinf(&out).expect("re-decodes"), d);
    }
}

/// A truncated capture whose embedded DevInf decoded, but whose re-encoded
/// DevInf did not decode again.
#[test]
fn wbxml_devinf_reencode() {
    wbxml_round_trip(&fixture("wbxml_roundtrip-devinf-reencode.wbxml"));
}
