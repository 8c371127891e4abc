//! The WBXML codec against the captured sessions, the XML codec, libwbxml's
//! `wbxml2xml`/`xml2wbxml` (Debian `libwbxml2-utils`) and proptest.
//!
//! libwbxml 0.11 knows SyncML 1.0–1.2, DevInf 1.0–1.2 and MetInf 1.1 (see
//! `wbxml2xml -l`). Documented differences when a message passes through it:
//! * it rewrites a Meta `Type` of `application/vnd.syncml-devinf+wbxml` to
//!   `...+xml` when decoding to XML (and back when encoding), so the
//!   comparison normalises that value;
//! * `xml2wbxml` drops whitespace-only text ("ignorable whitespace") unless
//!   run with `-k`; we pass `-k`.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use proptest::prelude::*;

use shardsync::model::*;
use shardsync::{wbxml, xml};

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

fn wbxml_captures() -> Vec<(PathBuf, Vec<u8>)> {
    let files = captures(".wbxml");
    assert!(files.len() >= 50, "WBXML captures missing: {}", files.len());
    files
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).expect("read capture");
            (f, b)
        })
        .collect()
}

fn enc(m: &SyncMl) -> Vec<u8> {
    let mut out = Vec::new();
    wbxml::encode(m, &mut out);
    out
}

const DEVINF_XML: &str = "application/vnd.syncml-devinf+xml";
const DEVINF_WBXML: &str = "application/vnd.syncml-devinf+wbxml";

/// Sets every DevInf Meta Type to the given flavour, as libwbxml does when
/// it converts (and as our engine does when it answers in WBXML).
fn set_devinf_type(m: &mut SyncMl, flavour: &'static str) {
    let meta = |m: &mut Option<Meta>| {
        if let Some(t) = m.as_mut().and_then(|m| m.type_.as_mut()) {
            if t == DEVINF_XML || t == DEVINF_WBXML {
                *t = Cow::Borrowed(flavour);
            }
        }
    };
    fn cmds(cs: &mut [Command], meta: &dyn Fn(&mut Option<Meta>)) {
        for c in cs {
            match c {
                Command::Put(p) | Command::Get(p) => {
                    meta(&mut p.meta);
                    p.items.iter_mut().for_each(|i| meta(&mut i.meta));
                }
                Command::Results(r) => {
                    meta(&mut r.meta);
                    r.items.iter_mut().for_each(|i| meta(&mut i.meta));
                }
                Command::Sync(s) => cmds(&mut s.commands, meta),
                Command::Atomic(k) | Command::Sequence(k) => cmds(&mut k.commands, meta),
                _ => {}
            }
        }
    }
    cmds(&mut m.body, &meta);
}

fn normalise_devinf_type(m: &mut SyncMl) {
    set_devinf_type(m, DEVINF_XML);
}

#[test]
fn every_capture_matches_its_decoded_xml_twin() {
    for (f, bytes) in wbxml_captures() {
        let m = wbxml::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let twin =
            f.with_file_name(f.file_name().unwrap().to_string_lossy().replace(".wbxml", ".decoded.xml"));
        let xml_bytes = std::fs::read(&twin).unwrap_or_else(|e| panic!("{}: {e}", twin.display()));
        let x = xml::decode(&xml_bytes).unwrap_or_else(|e| panic!("{}: {e}", twin.display()));
        assert_eq!(m, x, "{}", f.display());
    }
}

#[test]
fn decoding_borrows_from_the_input() {
    let (_, bytes) =
        wbxml_captures().into_iter().find(|(f, _)| f.ends_with("wbxml/01-slow-sync/0002-c2s.wbxml")).unwrap();
    let m = wbxml::decode(&bytes).unwrap();
    assert!(matches!(m.hdr.session_id, Cow::Borrowed(_)));
    let mut saw_item = false;
    for c in &m.body {
        if let Command::Sync(s) = c {
            for c in &s.commands {
                if let Command::Add(a) = c {
                    for i in &a.items {
                        assert!(matches!(i.data, Some(Data::Text(Cow::Borrowed(_)))), "OPAQUE is borrowed");
                        saw_item = true;
                    }
                }
            }
        }
    }
    assert!(saw_item);
}

#[test]
fn every_capture_round_trips() {
    for (f, bytes) in wbxml_captures() {
        let m = wbxml::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let out = enc(&m);
        let back = wbxml::decode(&out).unwrap_or_else(|e| panic!("{} re-encoded: {e}", f.display()));
        assert_eq!(back, m, "{}", f.display());
        assert_eq!(enc(&back), out, "{}: encoding is deterministic", f.display());
    }
}

/// Every XML capture, encoded to WBXML, decodes to the same model.
#[test]
fn every_xml_capture_survives_wbxml() {
    for f in captures(".xml") {
        let bytes = std::fs::read(&f).expect("read");
        let m = xml::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let out = enc(&m);
        let back = wbxml::decode(&out).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(back, m, "{}", f.display());
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install Debian's libwbxml2-utils (apt-get install libwbxml2-utils)");
}

/// Runs a libwbxml tool on `input`, returning its output file's bytes.
fn run_libwbxml(tool_name: &str, args: &[&str], input: &[u8], in_ext: &str) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let inp = dir.path().join(format!("in.{in_ext}"));
    let outp = dir.path().join("out");
    std::fs::write(&inp, input).map_err(|e| e.to_string())?;
    let mut cmd = Process::new(tool(tool_name));
    cmd.args(args).arg("-o").arg(&outp).arg(&inp);
    let res = cmd.output().map_err(|e| e.to_string())?;
    if !res.status.success() {
        return Err(format!(
            "{tool_name} failed ({}): {}{}",
            res.status,
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        ));
    }
    std::fs::read(&outp).map_err(|e| e.to_string())
}

/// Our WBXML → `wbxml2xml` → our XML decoder gives the model we encoded.
#[test]
fn wbxml2xml_accepts_our_encoding() {
    let mut models: Vec<SyncMl<'static>> = Vec::new();
    for (_, bytes) in wbxml_captures() {
        models.push(wbxml::decode(&bytes).unwrap().into_owned());
    }
    for f in captures(".xml").into_iter().filter(|f| f.to_string_lossy().contains("12-syncml-1.1")) {
        models.push(xml::decode(&std::fs::read(&f).unwrap()).unwrap().into_owned());
    }
    for (i, m) in models.iter_mut().enumerate() {
        // libwbxml only decodes an embedded DevInf when Type says +wbxml.
        set_devinf_type(m, DEVINF_WBXML);
        let ours = enc(m);
        let xml_out = run_libwbxml("wbxml2xml", &["-m", "0"], &ours, "wbxml")
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        let mut back = xml::decode(&xml_out)
            .unwrap_or_else(|e| panic!("message {i}: {e}\n{}", String::from_utf8_lossy(&xml_out)));
        let mut want = m.clone();
        normalise_devinf_type(&mut want);
        normalise_devinf_type(&mut back);
        assert_eq!(back, want, "message {i}");
    }
}

/// Our XML → `xml2wbxml` → our WBXML decoder gives the same model.
#[test]
fn xml2wbxml_output_decodes() {
    let mut sources: Vec<Vec<u8>> = Vec::new();
    for f in captures(".xml").into_iter().filter(|f| !f.to_string_lossy().ends_with(".decoded.xml")) {
        sources.push(std::fs::read(&f).unwrap());
    }
    for (_, bytes) in wbxml_captures() {
        let mut x = Vec::new();
        xml::encode(&wbxml::decode(&bytes).unwrap(), &mut x);
        sources.push(x);
    }
    for (i, src) in sources.iter().enumerate() {
        let m = xml::decode(src).unwrap();
        let mut ours = Vec::new();
        xml::encode(&m, &mut ours);
        // Cover WBXML 1.1-1.3, with and without a string table (STR_T).
        let version = ["1.1", "1.2", "1.3"][i % 3];
        let mut args = vec!["-k", "-v", version];
        if i % 2 == 1 {
            args.push("-n");
        }
        let wb = run_libwbxml("xml2wbxml", &args, &ours, "xml")
            .unwrap_or_else(|e| panic!("message {i}: {e}\n{}", String::from_utf8_lossy(&ours)));
        let mut back = wbxml::decode(&wb).unwrap_or_else(|e| panic!("message {i}: {e}"));
        let mut want = m.clone();
        normalise_devinf_type(&mut want);
        normalise_devinf_type(&mut back);
        assert_eq!(back, want, "message {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn prop_message_round_trips(m in common::gen::arb_message()) {
        let out = enc(&m);
        let back = wbxml::decode(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, m);
    }

    #[test]
    fn prop_devinf_round_trips(d in common::gen::arb_devinf()) {
        let mut out = Vec::new();
        wbxml::encode_devinf(&d, &mut out);
        let back = wbxml::decode_devinf(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, d);
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn prop_garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = wbxml::decode(&b);
        let _ = wbxml::decode_devinf(&b);
    }
}
