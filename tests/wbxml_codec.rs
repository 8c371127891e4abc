//! The WBXML codec against the captured sessions, libwbxml and proptest.

use std::path::{Path, PathBuf};

use shardsync::wbxml;

fn captures(ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, ext, out);
            } else if p.to_string_lossy().ends_with(ext) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures"), ext, &mut out);
    out.sort();
    out
}

#[test]
fn every_capture_round_trips() {
    let files = captures(".wbxml");
    assert!(files.len() >= 50, "captures missing: {}", files.len());
    for f in files {
        let bytes = std::fs::read(&f).expect("read capture");
        let m = wbxml::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let mut out = Vec::new();
        wbxml::encode(&m, &mut out);
        let back = wbxml::decode(&out).unwrap_or_else(|e| panic!("{} re-encoded: {e}", f.display()));
        assert_eq!(back, m, "{}", f.display());
    }
}
