//! Routing-key extraction per message: the balancer's SyncHdr scan
//! (`balancer::key::scan`) against a full decode of the same bytes
//! (`server::route_key`), for every client message of the captured XML and
//! WBXML sessions.
//!
//! Full run: `cargo bench --bench balancer_key`; smoke run: `-- --test`.

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardsync::balancer::key;
use shardsync::model::Encoding;
use shardsync::server;

fn messages() -> Vec<(String, Encoding, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures");
    let mut out = Vec::new();
    for (dir, ext, enc) in [("xml", "xml", Encoding::Xml), ("wbxml", "wbxml", Encoding::Wbxml)] {
        for session in ["01-slow-sync", "02-two-way-add-replace-delete"] {
            for msg in ["0001", "0002", "0003"] {
                let p = root.join(dir).join(session).join(format!("{msg}-c2s.{ext}"));
                if let Ok(bytes) = std::fs::read(&p) {
                    out.push((format!("{dir}/{session}/{msg}"), enc, bytes));
                }
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    for (name, enc, body) in messages() {
        let mut g = c.benchmark_group(format!("route_key/{name}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("header_scan", |b| {
            b.iter(|| key::scan(enc, black_box(&body)).map(|i| i.key()).ok())
        });
        g.bench_function("full_decode", |b| b.iter(|| server::route_key(enc, black_box(&body))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
