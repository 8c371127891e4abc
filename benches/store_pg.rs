//! PostgreSQL store: item rows/s through the group-committing StoreHandle,
//! beside raw binary COPY of the same rows in the same run.
//!
//! The bench starts its own private PostgreSQL (initdb + pg_ctl in a temp dir
//! under `target/`, loopback only, fsync and synchronous_commit on; see
//! `tests/support_pg`), so it needs the PostgreSQL server binaries installed.
//!
//! - `pg/raw_copy/rows_N`: one transaction holding one binary `COPY` of N
//!   item rows (~300 B vCards) into a table shaped like `items` (same
//!   columns, same primary key): the physical limit for these rows.
//! - `pg/handle/committers_K/rows_per_batch_N`: K concurrent committers (as
//!   shards would be), each a different user, each submitting batches of N
//!   `PutItem` rows through the `StoreHandle`; the writer group-commits
//!   whatever is queued into one transaction (bulk `unnest` upserts).
//! - `pg/handle_2writers/…`: the same with two writer threads
//!   (`StoreHandle::start_with_writers`): one fills its next group while the
//!   other waits for its WAL flush.
//! - `pg/handle_mapped/…`: the same with a client-id mapping per item and a
//!   session record per batch, as a real Sync message writes.
//!
//! Throughput is in elements = item rows. Quick smoke run:
//! `cargo bench --bench store_pg -- --quick`.

#[path = "common/committers.rs"]
mod committers;
#[path = "../tests/support_pg/mod.rs"]
mod support_pg;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use shardsync::store::{
    Backend, Collection, PostgresBackend, SessionRecord, StoreHandle, WriteBatch, WriteOp, WriterLimits,
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

fn batch(user: &str, start: u64, rows: u64, mapped: bool) -> WriteBatch {
    let mut ops: Vec<WriteOp> = (start..start + rows)
        .map(|n| WriteOp::PutItem {
            user: user.into(),
            collection: Collection::Contacts,
            server_id: None,
            content_type: "text/vcard".into(),
            data: vcard(n),
            origin_device: "bench-device".into(),
            map_client_id: mapped.then(|| n.to_string()),
        })
        .collect();
    if mapped {
        ops.push(WriteOp::PutSession(SessionRecord {
            key: xxhash_rust::xxh64::xxh64(user.as_bytes(), 0),
            state: vec![7; 200],
            last_msg_id: start,
            last_reply: vec![b'r'; 1500],
            expires_at: 2_000_000_000,
        }));
    }
    WriteBatch { ops }
}

struct Env {
    _pg: support_pg::PgServer,
    url: String,
}

fn env() -> Env {
    let pg = support_pg::PgServer::start();
    let url = pg.create_db("bench");
    PostgresBackend::connect(&url).expect("connect").migrate().expect("migrate");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    client.batch_execute("CREATE TABLE items_raw (LIKE items INCLUDING ALL)").expect("raw table");
    Env { _pg: pg, url }
}

fn raw_copy(c: &mut Criterion, env: &Env, rows: u64) {
    let mut client = postgres::Client::connect(&env.url, postgres::NoTls).expect("connect");
    let cards: Vec<Vec<u8>> = (0..rows).map(vcard).collect();
    let next_id = AtomicU64::new(1);
    let mut group = c.benchmark_group("pg");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows));
    group.bench_function(BenchmarkId::new("raw_copy", format!("rows_{rows}")), |bench| {
        bench.iter(|| {
            let mut txn = client.transaction().expect("begin");
            let sink = txn
                .copy_in(
                    "COPY items_raw (user_name, coll, server_id, seq, content_type, data, origin_device, deleted) \
                     FROM STDIN (FORMAT binary)",
                )
                .expect("copy");
            let types =
                [Type::TEXT, Type::INT2, Type::INT8, Type::INT8, Type::TEXT, Type::BYTEA, Type::TEXT, Type::BOOL];
            let mut w = BinaryCopyInWriter::new(sink, &types);
            let first = next_id.fetch_add(rows, Ordering::Relaxed) as i64;
            for (i, card) in cards.iter().enumerate() {
                let id = first + i as i64;
                w.write(&[&"raw", &0i16, &id, &id, &"text/vcard", &card.as_slice(), &"bench-device", &false])
                    .expect("row");
            }
            w.finish().expect("finish copy");
            txn.commit().expect("commit");
        })
    });
    group.finish();
}

struct Case {
    name: &'static str,
    committers: u64,
    rows: u64,
    mapped: bool,
    writers: usize,
}

fn through_handle(c: &mut Criterion, env: &Env, case: Case) {
    let Case { name, committers, rows, mapped, writers } = case;
    let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::open(&env.url).expect("open"));
    let (store, threads) =
        StoreHandle::start_with_writers(backend, 2, writers, WriterLimits::default()).expect("start");
    let mut group = c.benchmark_group("pg");
    group.sample_size(10);
    group.throughput(Throughput::Elements(committers * rows));
    let id = BenchmarkId::new(format!("{name}/committers_{committers}"), format!("rows_per_batch_{rows}"));
    let batches: Vec<WriteBatch> =
        (0..committers).map(|k| batch(&format!("{name}-user{k}"), 0, rows, mapped)).collect();
    group.bench_function(id, |bench| {
        bench.iter_custom(|iters| committers::concurrent_commits(&store, &batches, iters))
    });
    group.finish();
    committers::report_grouping(name, threads.stats());
    threads.shutdown();
}

fn benches(c: &mut Criterion) {
    if support_pg::skip() {
        return;
    }
    let env = env();
    raw_copy(c, &env, 2000);
    let case = |name, committers, rows, mapped, writers| Case { name, committers, rows, mapped, writers };
    through_handle(c, &env, case("handle", 1, 1, false, 1));
    through_handle(c, &env, case("handle", 64, 1, false, 1));
    through_handle(c, &env, case("handle", 64, 25, false, 1));
    through_handle(c, &env, case("handle", 16, 100, false, 1));
    through_handle(c, &env, case("handle_2writers", 64, 1, false, 2));
    through_handle(c, &env, case("handle_2writers", 64, 25, false, 2));
    through_handle(c, &env, case("handle_2writers", 16, 100, false, 2));
    through_handle(c, &env, case("handle_mapped", 64, 25, true, 1));
}

criterion_group! {
    name = pg;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(pg);
