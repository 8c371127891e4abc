//! Quick XML codec throughput check, robust to a loaded machine: the best of
//! 3000 interleaved runs of raw quick-xml scan / typed decode / encode on the
//! benchmark messages. `cargo run --release --example xml_ratio`
//! (criterion: `cargo bench --bench codec_xml`).
use std::hint::black_box;
use std::time::Instant;

/// The same allocator as the server binary (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../benches/common/messages.rs"]
mod messages;

#[path = "../benches/common/raw_scan.rs"]
mod raw;
use raw::raw_scan;

fn main() {
    for m in messages::all() {
        let mut bytes = Vec::new();
        shardsync::xml::encode(&m.msg, &mut bytes);
        let mut out = Vec::with_capacity(bytes.len() * 2);
        let (mut raw, mut dec, mut enc, mut drp) = (u128::MAX, u128::MAX, u128::MAX, u128::MAX);
        for _ in 0..3000 {
            let t = Instant::now();
            black_box(raw_scan(black_box(&bytes)));
            raw = raw.min(t.elapsed().as_nanos());
            let t = Instant::now();
            let kept = black_box(shardsync::xml::decode(black_box(&bytes)));
            dec = dec.min(t.elapsed().as_nanos());
            let t = Instant::now();
            drop(kept);
            drp = drp.min(t.elapsed().as_nanos());
            let t = Instant::now();
            out.clear();
            shardsync::xml::encode(black_box(&m.msg), &mut out);
            enc = enc.min(t.elapsed().as_nanos());
        }
        let mbs = |ns: u128| bytes.len() as f64 / ns as f64 * 1e9 / (1 << 20) as f64;
        println!(
            "{:18} {:6} B  raw {:7.1} MiB/s  decode {:7.1} MiB/s ({:.2}x raw)  encode {:7.1} MiB/s drop {} ns",
            m.name, bytes.len(), mbs(raw), mbs(dec), raw as f64 / dec as f64, mbs(enc), drp
        );
    }
}
