//! Tests of the XML codec: captured sessions, targeted tolerance cases,
//! error reporting, and property-based round trips.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use shardsync::model::*;
use shardsync::xml::{decode, decode_devinf, encode, encode_devinf, XmlError};

fn fixture_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "xml") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures"), &mut v);
    v.sort();
    v
}

fn reencode(m: &SyncMl) -> Vec<u8> {
    let mut out = Vec::new();
    encode(m, &mut out);
    out
}

#[test]
fn captures_round_trip() {
    let files = fixture_files();
    assert!(files.len() >= 100, "fixtures missing: {}", files.len());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let m = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(m.version().is_some(), "{}", f.display());
        let out = reencode(&m);
        let m2 = decode(&out).unwrap_or_else(|e| panic!("{} re-encoded: {e}", f.display()));
        assert_eq!(m, m2, "{}", f.display());
        // Encoding is deterministic.
        assert_eq!(reencode(&m2), out, "{}", f.display());
    }
}
