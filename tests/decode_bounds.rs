//! The decoders' memory is bounded: a counting global allocator measures the
//! peak heap a decode holds, for amplification bodies and for the captured
//! real sessions, against the documented bound
//! `DecodeLimits::memory_budget(body) = min(64 × body + 48 MiB, 128 MiB)`.
//!
//! Everything runs in one test function: the allocator's counters are
//! process-wide, and parallel tests would disturb each other's peaks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use shardsync::codec::{self, Cap, DecodeError, DecodeLimits};
use shardsync::model::Encoding;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as if old and new coexisted for a moment (a moving realloc).
            grew(new_size);
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Decodes `body`, returning the cap it failed on (if any) and the peak
/// heap the decode held above what was allocated before it.
fn measure(encoding: Encoding, body: &[u8]) -> (Result<usize, DecodeError>, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = codec::decode(encoding, body).map(|m| m.body.len());
    let peak = PEAK.load(Ordering::Relaxed) - base;
    (r, peak)
}

fn wbxml_body(fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    // WBXML 1.2, SyncML 1.2, UTF-8, no string table; SyncML, SyncBody.
    let mut doc = vec![0x02, 0xA4, 0x01, 0x6A, 0x00, 0x6D, 0x6B];
    fill(&mut doc);
    doc.extend_from_slice(&[0x01, 0x01]);
    doc
}

fn xml_body(body: &str) -> Vec<u8> {
    format!(
        "<SyncML><SyncHdr><VerDTD>1.2</VerDTD><SessionID>1</SessionID><MsgID>1</MsgID>\
         <Target><LocURI>http://x/sync</LocURI></Target><Source><LocURI>dev</LocURI></Source>\
         </SyncHdr><SyncBody>{body}</SyncBody></SyncML>"
    )
    .into_bytes()
}

#[test]
fn decoded_memory_stays_within_the_budget() {
    let limits = DecodeLimits::default();
    let mut report = Vec::new();
    let mut check = |name: &str, encoding: Encoding, body: Vec<u8>, want: Option<Cap>| {
        let t = std::time::Instant::now();
        let (r, peak) = measure(encoding, &body);
        let took = t.elapsed();
        let budget = limits.memory_budget(body.len());
        let cap = r.as_ref().err().and_then(DecodeError::cap);
        assert_eq!(cap, want, "{name}: {r:?}");
        assert!(peak <= budget, "{name}: peak {peak} over the budget {budget}");
        report.push(format!(
            "{name}: body {} B, peak {:.1} MB ({:.1}x body), budget {:.1} MB, {:?}, {took:?}",
            body.len(),
            peak as f64 / 1e6,
            peak as f64 / body.len() as f64,
            budget as f64 / 1e6,
            cap.map_or("decoded".to_string(), |c| format!("over {c}")),
        ));
        peak
    };

    // The reported attacks: one-byte empty Adds, and empty unknown XML elements.
    let peak = check(
        "wbxml 1 MiB of 0x05",
        Encoding::Wbxml,
        wbxml_body(|d| d.resize(d.len() + (1 << 20), 0x05)),
        Some(Cap::Commands),
    );
    assert!(peak < 64 << 20, "1 MiB of 0x05 held {peak} bytes");
    let peak =
        check("xml 4 MiB of <a/>", Encoding::Xml, xml_body(&"<a/>".repeat(1 << 20)), Some(Cap::Commands));
    assert!(peak < 64 << 20, "4 MiB of <a/> held {peak} bytes");

    // Within the command cap, items instead: the memory budget stops it.
    let items = wbxml_body(|d| {
        for _ in 0..5_000 {
            d.push(0x45); // Add
            d.resize(d.len() + 500, 0x14); // empty <Item/>
            d.push(0x01);
        }
    });
    check("wbxml 5,000 Adds x 500 empty Items", Encoding::Wbxml, items, Some(Cap::Memory));
    let items = xml_body(&format!("<Add>{}</Add>", "<Item/>".repeat(9_000)).repeat(100));
    check("xml 100 Adds x 9,000 empty Items", Encoding::Xml, items, Some(Cap::Memory));

    // Nested Syncs reserve command lists up front: charged too.
    let syncs = xml_body(&"<Sync><Add/></Sync>".repeat(5_000));
    check("xml 5,000 Syncs", Encoding::Xml, syncs, None);

    // Entities: each one an owned string, then joined.
    let ents = wbxml_body(|d| {
        d.extend_from_slice(&[0x45, 0x54, 0x4F]); // Add, Item, Data
        for _ in 0..(1 << 20) {
            d.extend_from_slice(&[0x02, 0x41]); // ENTITY 'A'
        }
        d.extend_from_slice(&[0x01, 0x01, 0x01]);
    });
    check("wbxml 1 Mi entities in one Data", Encoding::Wbxml, ents, None);

    // String-table amplification: a 60 KB entry referenced 10,000 times.
    let mut strt = vec![0x02, 0xA4, 0x01, 0x6A, 0x83, 0xD4, 0x62]; // table length 60,002
    strt.extend(std::iter::repeat_n(b'x', 60_001));
    strt.push(0);
    strt.extend_from_slice(&[0x6D, 0x6B, 0x45, 0x54, 0x4F]);
    for _ in 0..10_000 {
        strt.extend_from_slice(&[0x83, 0x00]);
    }
    strt.extend_from_slice(&[0x01, 0x01, 0x01, 0x01, 0x01]);
    check("wbxml 10,000 STR_T of 60 KB", Encoding::Wbxml, strt, Some(Cap::StringTable));

    // Every captured real session decodes, within the same bound.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures");
    let mut dirs = vec![root];
    let mut seen = 0;
    let mut worst = 0.0f64;
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let encoding = if p.is_dir() {
                dirs.push(p);
                continue;
            } else if name.ends_with(".xml") {
                Encoding::Xml
            } else if name.ends_with(".wbxml") {
                Encoding::Wbxml
            } else {
                continue;
            };
            let body = std::fs::read(&p).unwrap();
            let (r, peak) = measure(encoding, &body);
            assert!(r.is_ok(), "{}: {r:?}", p.display());
            assert!(peak <= limits.memory_budget(body.len()), "{}", p.display());
            worst = worst.max(peak as f64 / body.len() as f64);
            seen += 1;
        }
    }
    assert!(seen > 60, "captures decoded: {seen}");
    report.push(format!("{seen} captured messages: all decode, worst peak {worst:.1}x body"));
    println!("{}", report.join("\n"));
}
