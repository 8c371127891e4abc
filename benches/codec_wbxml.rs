//! WBXML codec throughput on the same logical messages as the XML benches
//! (`common/messages.rs`). The `*_units` groups hold the WBXML decode and
//! encode next to the XML decode of the same message, so criterion's
//! elements/s (items, statuses or DevInf properties per second) show the
//! WBXML/XML ratio directly; a summary of the decode ratios is printed at
//! the end.
//!
//! Full run: `cargo bench --bench codec_wbxml`; smoke run:
//! `cargo bench --bench codec_wbxml -- --quick` (or `--test`).

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardsync::{wbxml, xml};

#[path = "common/messages.rs"]
mod messages;

/// Mean time of one call of `f`, measured over about `budget`.
fn time_per_call(budget: Duration, mut f: impl FnMut() -> usize) -> Duration {
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget {
        black_box(f());
        n += 1;
    }
    start.elapsed() / n.max(1)
}

fn bench(c: &mut Criterion) {
    let mut summary = Vec::new();
    for m in messages::all() {
        let mut wb = Vec::new();
        wbxml::encode(&m.msg, &mut wb);
        let mut xb = Vec::new();
        xml::encode(&m.msg, &mut xb);
        let mut out = Vec::with_capacity(wb.len() * 2);

        let mut g = c.benchmark_group(format!("wbxml_bytes/{}", m.name));
        g.throughput(Throughput::Bytes(wb.len() as u64));
        g.bench_function("decode", |b| b.iter(|| wbxml::decode(black_box(&wb)).map(|m| m.body.len())));
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                wbxml::encode(black_box(&m.msg), &mut out);
                out.len()
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("wbxml_units/{}", m.name));
        g.throughput(Throughput::Elements(m.units));
        g.bench_function("wbxml_decode", |b| b.iter(|| wbxml::decode(black_box(&wb)).map(|m| m.body.len())));
        g.bench_function("xml_decode", |b| b.iter(|| xml::decode(black_box(&xb)).map(|m| m.body.len())));
        g.bench_function("wbxml_encode", |b| {
            b.iter(|| {
                out.clear();
                wbxml::encode(black_box(&m.msg), &mut out);
                out.len()
            })
        });
        g.finish();

        let budget = Duration::from_millis(300);
        let tw = time_per_call(budget, || wbxml::decode(&wb).map(|m| m.body.len()).unwrap_or(0));
        let tx = time_per_call(budget, || xml::decode(&xb).map(|m| m.body.len()).unwrap_or(0));
        summary.push((m.name, m.units, wb.len(), xb.len(), tw, tx));
    }
    eprintln!("\nWBXML vs XML decode (same logical message):");
    for (name, units, wl, xl, tw, tx) in summary {
        let ups = |t: Duration| units as f64 / t.as_secs_f64();
        eprintln!(
            "  {name}: {units} units, WBXML {wl} B {:.0} units/s, XML {xl} B {:.0} units/s, ratio {:.2}x",
            ups(tw),
            ups(tx),
            tx.as_secs_f64() / tw.as_secs_f64()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
