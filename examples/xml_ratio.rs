//! Quick XML codec throughput check, robust to a loaded machine: the best of
//! 3000 interleaved runs of raw quick-xml scan / typed decode / encode on the
//! benchmark messages. `cargo run --release --example xml_ratio`
//! (criterion: `cargo bench --bench codec_xml`).
use quick_xml::events::Event;
use quick_xml::Reader;
use std::hint::black_box;
use std::time::Instant;

#[path = "../benches/common/messages.rs"]
mod messages;

fn raw_scan(input: &[u8]) -> usize {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = false;
    let mut n = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => n += e.local_name().as_ref().len(),
            Ok(Event::Text(t)) => n += black_box(&*t).len(),
            Ok(Event::CData(t)) => n += black_box(&*t).len(),
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => n += 1,
        }
    }
    n
}

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
