//! XML codec throughput on realistic messages (see `common/messages.rs`):
//! typed decode and encode against a raw quick-xml event scan of the same
//! bytes (the upper bound for any quick-xml based decoder).
//!
//! Full run: `cargo bench --bench codec_xml`; smoke run:
//! `cargo bench --bench codec_xml -- --quick` (or `--test`: run each once).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardsync::xml::{decode, encode};

/// mimalloc: glibc's malloc returns freed memory to the OS at the end of
/// every large message and page-faults it back in on the next one (about 3×
/// slower XML decode of a 100-item Sync in the codec bench); mimalloc keeps it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/messages.rs"]
mod messages;

#[path = "common/raw_scan.rs"]
mod raw;
use raw::raw_scan;

fn bench(c: &mut Criterion) {
    for m in messages::all() {
        let mut bytes = Vec::new();
        encode(&m.msg, &mut bytes);
        let mut out = Vec::with_capacity(bytes.len() * 2);

        let mut g = c.benchmark_group(format!("xml_bytes/{}", m.name));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("raw_scan", |b| b.iter(|| raw_scan(black_box(&bytes))));
        g.bench_function("decode", |b| b.iter(|| decode(black_box(&bytes)).map(|m| m.body.len())));
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&m.msg), &mut out);
                out.len()
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("xml_units/{}", m.name));
        g.throughput(Throughput::Elements(m.units));
        g.bench_function("decode", |b| b.iter(|| decode(black_box(&bytes)).map(|m| m.body.len())));
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&m.msg), &mut out);
                out.len()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
