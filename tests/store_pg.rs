//! What only the PostgreSQL store has: migrations, two nodes on one
//! database, and a PostgreSQL restart in the middle of committing.
//!
//! Each test starts its own private PostgreSQL (see `support_pg`).

mod suite;
mod support_pg;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use shardsync::store::postgres::{PgStoreError, SCHEMA_VERSION};
use shardsync::store::{
    Backend, Collection, ItemScope, PostgresBackend, ReadRequest, ReadResponse, StoreError, StoreHandle,
    SyncState, WriteBatch, WriteOp, WriterLimits,
};
use suite::{put, snapshot};

fn migrated(pg: &support_pg::PgServer, db: &str) -> String {
    let url = pg.create_db(db);
    PostgresBackend::connect(&url).unwrap().migrate().unwrap();
    url
}

#[test]
fn migrations_are_versioned_and_checked() {
    if support_pg::skip() {
        return;
    }
    let pg = support_pg::PgServer::start();
    let url = pg.create_db("mig");
    // No schema: `open` refuses and names the fix.
    match PostgresBackend::open(&url) {
        Err(e @ PgStoreError::Outdated { found: 0, .. }) => {
            assert!(e.to_string().contains("shardsync migrate --store"), "{e}")
        }
        other => panic!("expected Outdated, got {other:?}"),
    }
    let b = PostgresBackend::connect(&url).unwrap();
    assert_eq!(b.schema_version().unwrap(), 0);
    assert_eq!(b.migrate().unwrap(), (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    assert_eq!(b.migrate().unwrap(), Vec::<i32>::new(), "a second migrate does nothing");
    assert_eq!(b.schema_version().unwrap(), SCHEMA_VERSION);
    PostgresBackend::open(&url).unwrap();
    // A database migrated by a newer build is refused too.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')", &[]).unwrap();
    assert!(matches!(PostgresBackend::open(&url), Err(PgStoreError::TooNew { found: 999, .. })));
    assert!(matches!(b.migrate(), Err(PgStoreError::TooNew { .. })));
    // A wrong address fails at once with a connect error.
    let bad = format!("postgres://nobody@127.0.0.1:{}/nothing?connect_timeout=2", pg.port());
    assert!(matches!(PostgresBackend::open(&bad), Err(PgStoreError::Connect(_))));
}

/// Two "nodes" (two backends with their own connections and store threads,
/// two writers each)
/// on one database; committers on both write the same user's collections,
/// touching two collections in opposite orders; a reader alternating between
/// the nodes must never see a gap in the change sequence.
#[test]
fn two_nodes_concurrent_writers_no_skipped_change() {
    if support_pg::skip() {
        return;
    }
    let pg = support_pg::PgServer::start();
    let url = migrated(&pg, "nodes");
    let nodes: Vec<(StoreHandle, shardsync::store::StoreThreads)> = (0..2)
        .map(|_| {
            let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::open(&url).unwrap());
            // Two writers per node, as `serve --store` runs: four concurrent group commits.
            StoreHandle::start_with_writers(backend, 2, 2, WriterLimits::default()).unwrap()
        })
        .collect();
    let (committers, batches, rows) = (8u64, 12u64, 4u64);
    let done = AtomicBool::new(false);
    let colls = [Collection::Contacts, Collection::Calendar];
    let ids: Vec<u64> = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            let mut last_max = [0u64; 2];
            while !done.load(Ordering::Relaxed) {
                for (ci, c) in colls.iter().enumerate() {
                    let node = &nodes[(reads % 2) as usize].0;
                    let req = ReadRequest::Datastore {
                        user: "shared".into(),
                        device_id: "reader".into(),
                        collection: *c,
                        scope: ItemScope::Whole,
                    };
                    let Ok(ReadResponse::Datastore(snap)) = block_on(node.read(req)) else {
                        panic!("read failed")
                    };
                    let mut seqs: Vec<u64> = snap.items.iter().map(|i| i.seq).collect();
                    seqs.sort_unstable();
                    assert_eq!(seqs, (1..=snap.max_seq).collect::<Vec<_>>(), "gap in the change sequence");
                    assert!(snap.max_seq >= last_max[ci], "the sequence went backwards");
                    last_max[ci] = snap.max_seq;
                    reads += 1;
                }
            }
            reads
        });
        let workers: Vec<_> = (0..committers)
            .map(|k| {
                let node = nodes[(k % 2) as usize].0.clone();
                s.spawn(move || {
                    let mut ids = Vec::new();
                    for n in 0..batches {
                        let mut ops: Vec<WriteOp> = Vec::new();
                        // Odd committers touch the collections in the other order.
                        let order = if k % 2 == 0 { [0, 1] } else { [1, 0] };
                        for ci in order {
                            for i in 0..rows {
                                ops.push(put(
                                    "shared",
                                    colls[ci],
                                    None,
                                    &format!("{k}/{n}/{i}"),
                                    "dev",
                                    None,
                                ));
                            }
                        }
                        let info = block_on(node.commit(WriteBatch { ops })).expect("commit");
                        // Contacts ids are the first or the last half, depending on the order.
                        let half = rows as usize;
                        let contacts = if k % 2 == 0 {
                            &info.new_server_ids[..half]
                        } else {
                            &info.new_server_ids[half..]
                        };
                        ids.extend_from_slice(contacts);
                    }
                    ids
                })
            })
            .collect();
        let ids = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        ids
    });
    let total = committers * batches * rows;
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (1..=total).collect::<Vec<_>>(), "ids unique and dense across nodes");
    let fresh = PostgresBackend::open(&url).unwrap();
    for c in colls {
        let s = snapshot(&fresh, "shared", "x", c);
        assert_eq!(s.items.len() as u64, total);
        assert_eq!(s.max_seq, total);
    }
    for (_, threads) in nodes {
        threads.shutdown();
    }
}

const ITEMS: usize = 20;

fn fault_batch(k: usize, n: u64) -> WriteBatch {
    let dev = format!("dev{k}");
    let mut ops: Vec<WriteOp> = (0..ITEMS)
        .map(|i| {
            put(
                "fault",
                Collection::Contacts,
                None,
                &format!("c{k} b{n} i{i}"),
                &dev,
                Some(&format!("{n}-{i}")),
            )
        })
        .collect();
    ops.push(WriteOp::PutSyncState {
        user: "fault".into(),
        device_id: dev,
        collection: Collection::Contacts,
        state: SyncState { seq_reached: n, ..SyncState::default() },
    });
    WriteBatch { ops }
}

/// PostgreSQL is stopped and started again while committers run: commits in
/// flight or during the outage fail with a retryable `StoreError::Backend`,
/// no batch is ever half-written, every acknowledged batch is there, and the
/// backend reconnects by itself (commits and reads succeed afterwards).
#[test]
fn postgres_restart_mid_commit() {
    if support_pg::skip() {
        return;
    }
    let pg = support_pg::PgServer::start();
    let url = migrated(&pg, "fault");
    let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::open(&url).unwrap());
    let (store, threads) = StoreHandle::start(backend.clone(), 1).unwrap();
    let committers = 4usize;
    let stop = AtomicBool::new(false);
    let acked_total = AtomicU64::new(0);
    let restarted = AtomicBool::new(false);
    let acked_after = AtomicU64::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let outcomes: Vec<(Vec<u64>, Vec<u64>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..committers)
            .map(|k| {
                let store = store.clone();
                let (stop, acked_total, restarted, acked_after, errors) =
                    (&stop, &acked_total, &restarted, &acked_after, &errors);
                s.spawn(move || {
                    let (mut acked, mut failed) = (Vec::new(), Vec::new());
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        match block_on(store.commit(fault_batch(k, n))) {
                            Ok(_) => {
                                acked.push(n);
                                acked_total.fetch_add(1, Ordering::Relaxed);
                                if restarted.load(Ordering::Relaxed) {
                                    acked_after.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(StoreError::Backend(m)) => {
                                failed.push(n);
                                errors.lock().unwrap().push(m);
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(other) => panic!("not retryable: {other:?}"),
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        let wait = |what: &str, cond: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !cond() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait("first commits", &|| acked_total.load(Ordering::Relaxed) >= 20);
        pg.stop();
        // Commits during the outage must fail, not hang.
        std::thread::sleep(Duration::from_millis(300));
        pg.start_again();
        restarted.store(true, Ordering::Relaxed);
        wait("commits after the restart", &|| acked_after.load(Ordering::Relaxed) >= 20);
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let errors = errors.into_inner().unwrap();
    eprintln!("{} failed commits, e.g. {:?}", errors.len(), errors.first());
    assert!(!errors.is_empty(), "the restart produced no error at all");

    // Reads work again too (through a reader whose connection was cut).
    assert!(block_on(store.read(ReadRequest::ListUsers)).is_ok());
    let fresh = PostgresBackend::open(&url).unwrap();
    for (k, (acked, failed)) in outcomes.iter().enumerate() {
        let dev = format!("dev{k}");
        let s = snapshot(&fresh, "fault", &dev, Collection::Contacts);
        let mut per_batch = BTreeMap::<u64, usize>::new();
        for it in &s.items {
            let text = String::from_utf8(it.data.clone()).unwrap();
            let mut words = text.split(' ');
            if words.next() != Some(&format!("c{k}")) {
                continue;
            }
            let n: u64 = words.next().unwrap()[1..].parse().unwrap();
            *per_batch.entry(n).or_default() += 1;
        }
        // Whole batches only.
        assert!(per_batch.values().all(|&c| c == ITEMS), "committer {k}: partial batch {per_batch:?}");
        for n in acked {
            assert_eq!(per_batch.get(n), Some(&ITEMS), "committer {k}: acknowledged batch {n} lost");
        }
        // A failed batch is absent, unless the connection broke after COMMIT was sent.
        let surprising: Vec<_> = failed.iter().filter(|n| per_batch.contains_key(n)).collect();
        assert!(surprising.len() <= 1, "committer {k}: failed batches present: {surprising:?}");
        assert_eq!(s.mappings.len(), per_batch.len() * ITEMS, "committer {k}: mappings match items");
        let last = acked.iter().chain(surprising.iter().copied()).max().copied().unwrap_or(0);
        assert_eq!(s.state.map(|st| st.seq_reached), Some(last), "committer {k}: state of the last batch");
    }
    threads.shutdown();
}

const NODE_URL_ENV: &str = "SHARDSYNC_PG_NODE_URL";
const NODE_ID_ENV: &str = "SHARDSYNC_PG_NODE_ID";
const NODE_BATCHES: u64 = 30;
const NODE_COMMITTERS: u64 = 4;
const NODE_ROWS: u64 = 5;

/// The child side of `two_processes_no_skipped_change`: one "node" process
/// with its own backend and store threads, committing concurrently.
#[test]
#[ignore = "run by two_processes_no_skipped_change in child processes"]
fn node_child() {
    let (Some(url), Some(node)) = (std::env::var_os(NODE_URL_ENV), std::env::var_os(NODE_ID_ENV)) else {
        return;
    };
    let (url, node) = (url.into_string().unwrap(), node.into_string().unwrap());
    let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::open(&url).unwrap());
    let (store, threads) = StoreHandle::start(backend, 1).unwrap();
    std::thread::scope(|s| {
        for k in 0..NODE_COMMITTERS {
            let store = store.clone();
            let node = node.clone();
            s.spawn(move || {
                for n in 0..NODE_BATCHES {
                    let ops = (0..NODE_ROWS)
                        .map(|i| {
                            put("procs", Collection::Notes, None, &format!("{node}/{k}/{n}/{i}"), &node, None)
                        })
                        .collect();
                    block_on(store.commit(WriteBatch { ops })).expect("commit");
                }
            });
        }
    });
    threads.shutdown();
}

/// Two server processes on one database commit to one user's collection at
/// once; a reader in this process never sees a gap in the change sequence.
#[test]
fn two_processes_no_skipped_change() {
    if support_pg::skip() {
        return;
    }
    let pg = support_pg::PgServer::start();
    let url = migrated(&pg, "procs");
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = ["node-a", "node-b"]
        .iter()
        .map(|node| {
            std::process::Command::new(&exe)
                .args(["--exact", "node_child", "--ignored", "--test-threads=1"])
                .env(NODE_URL_ENV, &url)
                .env(NODE_ID_ENV, node)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let reader = PostgresBackend::open(&url).unwrap();
    let mut reads = 0;
    let mut last_max = 0;
    let mut running = true;
    while running {
        running = children.iter_mut().any(|c| c.try_wait().unwrap().is_none());
        let s = snapshot(&reader, "procs", "reader", Collection::Notes);
        let mut seqs: Vec<u64> = s.items.iter().map(|i| i.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=s.max_seq).collect::<Vec<_>>(), "gap in the change sequence");
        assert!(s.max_seq >= last_max);
        last_max = s.max_seq;
        reads += 1;
    }
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a node process failed");
    }
    let total = 2 * NODE_COMMITTERS * NODE_BATCHES * NODE_ROWS;
    let s = snapshot(&reader, "procs", "reader", Collection::Notes);
    let mut ids: Vec<u64> = s.items.iter().map(|i| i.server_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=total).collect::<Vec<_>>());
    assert_eq!(s.max_seq, total);
    eprintln!("{reads} gap-free snapshots while two processes committed {total} items");
}

/// A batch `i` of the isolation test: a device record and an item of user `iso`.
fn iso_batch(device: &str, i: usize) -> WriteBatch {
    WriteBatch {
        ops: vec![
            WriteOp::PutDevice {
                user: "iso".into(),
                device: shardsync::store::DeviceRecord { device_id: device.into(), ..Default::default() },
            },
            put("iso", Collection::Contacts, None, &format!("item {i}"), device, Some(&format!("c{i}"))),
        ],
    }
}

/// One group commit holding good batches and two bad ones (a NUL in a device
/// id, refused before sending; a device id too long for PostgreSQL's index,
/// refused by the server): the good ones commit, each bad one gets its own
/// `StoreError::Rejected`, and the writer goes on.
#[test]
fn a_bad_batch_fails_alone_in_its_group_commit() {
    if support_pg::skip() {
        return;
    }
    let pg = support_pg::PgServer::start();
    let url = migrated(&pg, "iso");
    let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::open(&url).unwrap());

    // The backend alone: a group with a NUL is refused whole, before anything is sent.
    let nul = iso_batch("dev\0nul", 99);
    match backend.commit(&[iso_batch("g", 98), nul.clone()]) {
        Err(StoreError::Rejected(m)) => assert!(m.contains("NUL") && m.contains("device id"), "{m}"),
        other => panic!("want Rejected, got {other:?}"),
    }
    // Not stored: all or nothing.
    assert!(snapshot(&*backend, "iso", "g", Collection::Contacts).items.is_empty());
    // Random text does not compress below the btree row limit (SQLSTATE 54000).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let long: String = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    match backend.commit(&[iso_batch(&long, 97)]) {
        Err(StoreError::Rejected(m)) => assert!(m.contains("54000"), "{m}"),
        other => panic!("want Rejected, got {other:?}"),
    }

    // Through the writer: hold the writer in its first commit (another
    // connection locks the counter row it needs), queue the rest behind it so
    // they form one group, then let it go.
    let (store, threads) = StoreHandle::start(backend.clone(), 1).unwrap();
    block_on(
        store.commit(WriteBatch { ops: vec![put("blocker", Collection::Contacts, None, "x", "d", None)] }),
    )
    .unwrap();
    let mut locker = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut lock = locker.transaction().unwrap();
    lock.execute("SELECT 1 FROM counters WHERE user_name = 'blocker' FOR UPDATE", &[]).unwrap();
    let before = threads.stats();
    let mut batches =
        vec![WriteBatch { ops: vec![put("blocker", Collection::Contacts, None, "y", "d", None)] }];
    let good = 12;
    for i in 0..good {
        batches.push(iso_batch(&format!("dev{i}"), i));
        if i == 3 {
            batches.push(nul.clone());
        }
        if i == 8 {
            batches.push(iso_batch(&long, 100));
        }
    }
    let results: Vec<Result<_, StoreError>> = std::thread::scope(|s| {
        let store = &store;
        let mut joins = Vec::new();
        for (n, b) in batches.into_iter().enumerate() {
            joins.push(s.spawn(move || block_on(store.commit(b))));
            if n == 0 {
                // The blocker's batch first, alone: the writer takes it and waits on the lock.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        lock.rollback().unwrap();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let rejected: Vec<usize> =
        (0..results.len()).filter(|&i| matches!(results[i], Err(StoreError::Rejected(_)))).collect();
    // Batch order: blocker, dev0..dev3, NUL (5), dev4..dev8, long (11), dev9..dev11.
    assert_eq!(rejected, vec![5, 11], "{results:?}");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1 + good, "{results:?}");
    let stats = threads.stats();
    assert_eq!(stats.rejected_batches - before.rejected_batches, 2);
    // The queued batches were one group: refused, then committed in parts.
    assert!(stats.batches - before.batches > 1 + good as u64 + 2, "{stats:?} {before:?}");
    for i in 0..good {
        let snap = snapshot(&*backend, "iso", &format!("dev{i}"), Collection::Contacts);
        assert_eq!(snap.items.len(), good, "every good item is there");
        assert_eq!(snap.mappings.len(), 1, "dev{i}: its own mapping");
    }
    let devices = match backend.read(&ReadRequest::ListDevices { user: "iso".into() }).unwrap() {
        ReadResponse::Devices(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(devices.len(), good, "no device of a refused batch");
    // The writer goes on.
    block_on(store.commit(iso_batch("after", 200))).unwrap();
    threads.shutdown();
}
