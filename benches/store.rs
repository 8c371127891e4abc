//! Embedded store batch commits: item rows/s.
//!
//! - `direct/rows_per_commit/N`: one `Backend::commit` of one batch of N
//!   `PutItem` rows (~300 B vCards), each commit fsynced.
//! - `handle/committers_K/rows_per_batch_N`: K concurrent committers (as
//!   shards would be) each submitting batches of N rows through the
//!   `StoreHandle`; the writer group-commits whatever is queued.
//!
//! - `first_reads/{one_by_one,read_all}`: what message 1 of a new session
//!   reads (stored session, user, device, one collection snapshot) through
//!   the `StoreHandle`, as four round trips to the reader threads or as one
//!   `read_all` job.
//!
//! - `datastore_read/{whole,changed_since_last_sync}`: a two-way sync's read
//!   of a 1,000-contact collection with 5 items changed since the device's
//!   last sync, straight on the backend: every item whole (as before bare
//!   reads, and as a slow sync still reads), or the changes whole and the
//!   rest bare from `item_meta`.
//!
//! Throughput is reported in elements = item rows (reads for `first_reads`). Quick smoke run:
//! `cargo bench --bench store -- --quick` (or `--warm-up-time 1
//! --measurement-time 2`).

#[path = "common/committers.rs"]
mod committers;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_lite::future::block_on;
use shardsync::store::{
    Backend, Collection, EmbeddedBackend, ItemScope, ReadRequest, StoreHandle, WriteBatch, WriteOp,
};

fn vcard(n: u64) -> Vec<u8> {
    let card = format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{n:016x}-bench-0000-0000-000000000000\r\nFN:Bench Person {n}\r\n\
         N:Person;Bench;;;\r\nEMAIL;TYPE=INTERNET:bench.person.{n}@example.org\r\n\
         TEL;TYPE=CELL:+1 555 {n:07}\r\nADR;TYPE=HOME:;;{n} Example Street;Springfield;;12345;USA\r\n\
         NOTE:Benchmark contact number {n}\r\nEND:VCARD\r\n"
    );
    card.into_bytes()
}

fn batch(user: &str, start: u64, rows: u64) -> WriteBatch {
    WriteBatch {
        ops: (start..start + rows)
            .map(|n| WriteOp::PutItem {
                user: user.into(),
                collection: Collection::Contacts,
                server_id: None,
                content_type: "text/vcard".into(),
                data: vcard(n),
                origin_device: "bench-device".into(),
                map_client_id: Some(n.to_string()),
            })
            .collect(),
    }
}

fn bench_dir() -> tempfile::TempDir {
    // Under target/ (a real disk), so fsync costs what it costs in production.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench temp dir")
}

fn direct(c: &mut Criterion) {
    let dir = bench_dir();
    let backend = EmbeddedBackend::open(dir.path()).expect("open");
    let mut group = c.benchmark_group("direct");
    group.sample_size(10);
    for rows in [1u64, 100, 1000] {
        assert!(vcard(rows).len() >= 280);
        group.throughput(Throughput::Elements(rows));
        let b = batch("direct", 0, rows);
        group.bench_with_input(BenchmarkId::new("rows_per_commit", rows), &b, |bench, b| {
            bench.iter(|| backend.commit(std::slice::from_ref(b)).expect("commit"))
        });
    }
    group.finish();
}

fn through_handle(c: &mut Criterion) {
    let dir = bench_dir();
    let backend: Arc<dyn Backend> = Arc::new(EmbeddedBackend::open(dir.path()).expect("open"));
    let (store, threads) = StoreHandle::start(backend, 2).expect("start");
    let mut group = c.benchmark_group("handle");
    group.sample_size(10);
    for (committers, rows) in [(1u64, 1u64), (64, 1), (16, 100), (4, 1000)] {
        group.throughput(Throughput::Elements(committers * rows));
        let id = BenchmarkId::new(format!("committers_{committers}"), format!("rows_per_batch_{rows}"));
        let batches: Vec<WriteBatch> = (0..committers).map(|k| batch(&format!("user{k}"), 0, rows)).collect();
        group.bench_function(id, |bench| {
            bench.iter_custom(|iters| committers::concurrent_commits(&store, &batches, iters))
        });
    }
    group.finish();
    committers::report_grouping("handle", threads.stats());
    threads.shutdown();
}

fn first_reads(c: &mut Criterion) {
    let dir = bench_dir();
    let backend: Arc<dyn Backend> = Arc::new(EmbeddedBackend::open(dir.path()).expect("open"));
    let user = shardsync::store::UserRecord::new("reader", "secret").expect("user");
    let mut setup = batch("reader", 0, 20);
    setup.ops.push(WriteOp::PutUser(user));
    backend.commit(&[setup]).expect("commit");
    let (store, threads) = StoreHandle::start(backend, 2).expect("start");
    let reads = vec![
        ReadRequest::Session { key: 42 },
        ReadRequest::User { name: "reader".into() },
        ReadRequest::Device { user: "reader".into(), device_id: "bench-device".into() },
        ReadRequest::Datastore {
            user: "reader".into(),
            device_id: "bench-device".into(),
            collection: Collection::Contacts,
            scope: ItemScope::Whole,
        },
    ];
    let mut group = c.benchmark_group("first_reads");
    group.throughput(Throughput::Elements(reads.len() as u64));
    group.bench_function("one_by_one", |bench| {
        bench.iter(|| {
            for r in &reads {
                block_on(store.read(r.clone())).expect("read");
            }
        })
    });
    group.bench_function("read_all", |bench| {
        bench.iter(|| block_on(store.read_all(reads.clone())).expect("read"))
    });
    group.finish();
    threads.shutdown();
}

fn datastore_read(c: &mut Criterion) {
    let dir = bench_dir();
    let backend = EmbeddedBackend::open(dir.path()).expect("open");
    backend.commit(&[batch("book", 0, 1000)]).expect("commit");
    let state = shardsync::store::SyncState {
        client_anchor: "a1".into(),
        server_anchor: "s1".into(),
        seq_reached: 1000,
        client_uri: "addressbook".into(),
        last_sync_type: 200,
    };
    let mut changes = vec![WriteOp::PutSyncState {
        user: "book".into(),
        device_id: "bench-device".into(),
        collection: Collection::Contacts,
        state,
    }];
    // Five items another device changed since: whole in either read.
    changes.extend((1..=5u64).map(|i| WriteOp::PutItem {
        user: "book".into(),
        collection: Collection::Contacts,
        server_id: Some(i * 150),
        content_type: "text/vcard".into(),
        data: vcard(5000 + i),
        origin_device: "other-device".into(),
        map_client_id: None,
    }));
    backend.commit(&[WriteBatch { ops: changes }]).expect("commit");
    let mut group = c.benchmark_group("datastore_read");
    group.throughput(Throughput::Elements(1000));
    for (name, scope) in
        [("whole", ItemScope::Whole), ("changed_since_last_sync", ItemScope::ChangedSinceLastSync)]
    {
        let request = ReadRequest::Datastore {
            user: "book".into(),
            device_id: "bench-device".into(),
            collection: Collection::Contacts,
            scope,
        };
        group.bench_function(name, |bench| bench.iter(|| backend.read(&request).expect("read")));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = direct, through_handle, first_reads, datastore_read
}
criterion_main!(benches);
