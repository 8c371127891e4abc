//! [`StoreHandle`]: the non-blocking face of a [`Backend`] for shards.
//!
//! A backend is blocking, so it only ever runs on the store's own threads:
//! `readers` reader threads share one read queue, and a single writer thread
//! (or a few, see [`StoreHandle::start_with_writers`]) takes write batches
//! from every shard. Requests travel over crossbeam
//! channels (sending never blocks: the queues are unbounded) and answers come
//! back through one-shot channels whose receivers are plain futures, woken by
//! a [`std::task::Waker`]; they work on glommio, on a `block_on` executor, or
//! on any other runtime.
//!
//! The writer group-commits: it blocks for one batch, then drains every batch
//! already queued (up to [`WriterLimits`]), applies them all in one backend
//! transaction and only then answers each of them. A failed commit fails every
//! batch in it; nothing of it is written. A group the backend refuses for one
//! batch's data ([`StoreError::Rejected`]) is committed again in halves, so
//! that only that batch fails.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use futures_channel::oneshot;

use crate::metrics::{Exposition, HistogramSnapshot, Source, WriterMetrics};

use super::{Backend, CommitInfo, ReadRequest, ReadResponse, StoreError, WriteBatch, WriteOp};

/// Bounds on how much one group commit may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterLimits {
    /// At most this many batches per backend transaction.
    pub max_batches: usize,
    /// Stop draining the queue once the batches taken hold about this many bytes.
    pub max_bytes: usize,
}

impl Default for WriterLimits {
    fn default() -> Self {
        // A few MiB per transaction keeps a commit's latency in the low
        // milliseconds while amortizing the fsync over hundreds of batches.
        WriterLimits { max_batches: 1024, max_bytes: 8 << 20 }
    }
}

/// Counters of what the store threads did (a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Backend transactions attempted by the writer (group commits).
    pub commits: u64,
    /// Batches handed to those transactions.
    pub batches: u64,
    /// Write operations in those batches.
    pub ops: u64,
    /// Transactions that failed (every batch in them got the error, except
    /// a refused group, whose batches are committed again apart).
    pub failed_commits: u64,
    /// Batches the backend refused for their own data ([`StoreError::Rejected`]).
    pub rejected_batches: u64,
    /// Reads answered (successfully or not).
    pub reads: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    batches: AtomicU64,
    ops: AtomicU64,
    failed_commits: AtomicU64,
    rejected_batches: AtomicU64,
    reads: AtomicU64,
    /// One per writer thread, written only by that thread.
    writers: Vec<Arc<WriterMetrics>>,
}

impl Counters {
    fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            rejected_batches: self.rejected_batches.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
        }
    }
}

type ReadReply = oneshot::Sender<Result<ReadResponse, StoreError>>;
type CommitReply = oneshot::Sender<Result<CommitInfo, StoreError>>;

enum ReadJob {
    Read(ReadRequest, ReadReply),
    /// Several reads in one hand-over: one wake-up each way, however many.
    Many(Vec<ReadRequest>, oneshot::Sender<Result<Vec<ReadResponse>, StoreError>>),
    Stop,
}

enum WriteJob {
    Commit(WriteBatch, CommitReply),
    Stop,
}

/// The cheap, cloneable, non-blocking face of the store.
///
/// Every method only enqueues a job and awaits its one-shot answer, so it is
/// safe to call from a shard's executor. Once the store threads are shut down
/// every call answers [`StoreError::Closed`].
#[derive(Clone)]
pub struct StoreHandle {
    reads: Sender<ReadJob>,
    writes: Sender<WriteJob>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").field("stats", &self.stats()).finish()
    }
}

/// The store's threads; shutting them down (explicitly or by drop) joins them.
///
/// Jobs queued before the shutdown are still answered; later ones get
/// [`StoreError::Closed`].
#[derive(Debug)]
pub struct StoreThreads {
    reads: Sender<ReadJob>,
    writes: Sender<WriteJob>,
    readers: Vec<JoinHandle<()>>,
    writers: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl StoreHandle {
    /// Starts `readers` reader threads (at least one) and the writer thread
    /// over `backend`, with the default [`WriterLimits`].
    pub fn start(backend: Arc<dyn Backend>, readers: usize) -> std::io::Result<(StoreHandle, StoreThreads)> {
        StoreHandle::start_with(backend, readers, WriterLimits::default())
    }

    /// Like [`StoreHandle::start`], with explicit group-commit limits.
    pub fn start_with(
        backend: Arc<dyn Backend>,
        readers: usize,
        limits: WriterLimits,
    ) -> std::io::Result<(StoreHandle, StoreThreads)> {
        StoreHandle::start_with_writers(backend, readers, 1, limits)
    }

    /// Like [`StoreHandle::start_with`], with `writers` writer threads (at
    /// least one) draining the same queue, each group-committing on its own.
    ///
    /// Only for backends whose transactions can overlap: on PostgreSQL one
    /// writer fills its next group while another waits for its WAL flush
    /// (commits touching one collection still serialize on its counter row,
    /// in seq order). A session never has two batches in flight, so batch
    /// order per session is kept. The embedded store allows one write
    /// transaction at a time: use one writer there.
    pub fn start_with_writers(
        backend: Arc<dyn Backend>,
        readers: usize,
        writers: usize,
        limits: WriterLimits,
    ) -> std::io::Result<(StoreHandle, StoreThreads)> {
        let (read_tx, read_rx) = crossbeam_channel::unbounded::<ReadJob>();
        let (write_tx, write_rx) = crossbeam_channel::unbounded::<WriteJob>();
        let writers = writers.max(1);
        let counters = Arc::new(Counters {
            writers: (0..writers).map(|_| Arc::new(WriterMetrics::default())).collect(),
            ..Counters::default()
        });
        let mut threads = StoreThreads {
            reads: read_tx.clone(),
            writes: write_tx.clone(),
            readers: Vec::new(),
            writers: Vec::new(),
            counters: counters.clone(),
        };
        // If spawning fails half-way, dropping `threads` stops what started.
        for i in 0..readers.max(1) {
            let rx = read_rx.clone();
            let backend = backend.clone();
            let counters = counters.clone();
            let handle = std::thread::Builder::new()
                .name(format!("store-read-{i}"))
                .spawn(move || reader_loop(&*backend, &rx, &counters))?;
            threads.readers.push(handle);
        }
        let limits = WriterLimits { max_batches: limits.max_batches.max(1), max_bytes: limits.max_bytes };
        for (i, own) in counters.writers.iter().enumerate() {
            let rx = write_rx.clone();
            let backend = backend.clone();
            let counters = counters.clone();
            let own = own.clone();
            let handle = std::thread::Builder::new()
                .name(format!("store-write-{i}"))
                .spawn(move || writer_loop(&*backend, &rx, &counters, &own, limits))?;
            threads.writers.push(handle);
        }
        Ok((StoreHandle { reads: read_tx, writes: write_tx, counters }, threads))
    }

    /// Answers one read on a reader thread.
    pub async fn read(&self, request: ReadRequest) -> Result<ReadResponse, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.reads.send(ReadJob::Read(request, tx)).map_err(|_| StoreError::Closed)?;
        // A dropped reply sender means the job was discarded at shutdown.
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Runs several reads as one job on one reader thread: the answers in
    /// the order asked, or the first error. One cross-thread round trip
    /// instead of one per read (message 1 of a session needs several).
    pub async fn read_all(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResponse>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        self.reads.send(ReadJob::Many(requests, tx)).map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Commits one batch atomically; resolves once it is durable.
    pub async fn commit(&self, batch: WriteBatch) -> Result<CommitInfo, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes.send(WriteJob::Commit(batch, tx)).map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// What the store threads did so far.
    pub fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }
}

impl Source for StoreHandle {
    fn collect(&self, out: &mut Exposition) {
        let c = &self.counters;
        let writers = &c.writers;
        out.family("shardsync_store_commits_total", "counter", "Group commits by store writer thread.");
        for (i, w) in writers.iter().enumerate() {
            out.sample(
                "shardsync_store_commits_total",
                &[("writer", &i.to_string())],
                w.commits.get() as f64,
            );
        }
        out.family("shardsync_store_commit_failures_total", "counter", "Group commits that failed.");
        let failed: u64 = writers.iter().map(|w| w.failed.get()).sum();
        out.sample("shardsync_store_commit_failures_total", &[], failed as f64);
        out.family(
            "shardsync_store_rejected_batches_total",
            "counter",
            "Write batches the store refused for their own data (the rest of their group committed).",
        );
        out.sample(
            "shardsync_store_rejected_batches_total",
            &[],
            c.rejected_batches.load(Ordering::Relaxed) as f64,
        );
        out.family(
            "shardsync_store_batches_total",
            "counter",
            "Write batches (one per SyncML message with writes) committed.",
        );
        out.sample("shardsync_store_batches_total", &[], c.batches.load(Ordering::Relaxed) as f64);
        out.family("shardsync_store_ops_total", "counter", "Write operations committed.");
        out.sample("shardsync_store_ops_total", &[], c.ops.load(Ordering::Relaxed) as f64);
        out.family("shardsync_store_reads_total", "counter", "Store reads answered.");
        out.sample("shardsync_store_reads_total", &[], c.reads.load(Ordering::Relaxed) as f64);
        let merged = |f: &dyn Fn(&WriterMetrics) -> HistogramSnapshot| {
            let mut all = writers.iter().map(|w| f(w));
            let first = all.next();
            first.map(|mut h| {
                for other in all {
                    h.merge(&other);
                }
                h
            })
        };
        for (name, help, h) in [
            (
                "shardsync_store_commit_batches",
                "Batches per group commit (how many messages share one durable transaction).",
                merged(&|w| w.batches.snapshot()),
            ),
            (
                "shardsync_store_commit_ops",
                "Write operations per group commit.",
                merged(&|w| w.ops.snapshot()),
            ),
            (
                "shardsync_store_commit_duration_seconds",
                "Duration of a group commit until durable.",
                merged(&|w| w.seconds.snapshot()),
            ),
        ] {
            if let Some(h) = h {
                out.family(name, "histogram", help);
                out.histogram(name, &[], &h);
            }
        }
        out.family("shardsync_store_queue_depth", "gauge", "Jobs waiting for the store threads, by queue.");
        out.sample("shardsync_store_queue_depth", &[("queue", "read")], self.reads.len() as f64);
        out.sample("shardsync_store_queue_depth", &[("queue", "write")], self.writes.len() as f64);
    }
}

impl StoreThreads {
    /// What the store threads did so far.
    pub fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    /// Stops the threads after the jobs already queued and waits for them.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // One Stop per reader: each reader consumes exactly one and exits.
        for _ in 0..self.readers.len() {
            let _ = self.reads.send(ReadJob::Stop);
        }
        // Likewise one Stop per writer, queued behind every batch already sent.
        for _ in 0..self.writers.len() {
            let _ = self.writes.send(WriteJob::Stop);
        }
        for handle in self.readers.drain(..) {
            let _ = handle.join();
        }
        for handle in self.writers.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for StoreThreads {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Runs a read job's `n` reads, counted; a backend panic fails the job, not the thread.
fn guarded<T>(
    counters: &Counters,
    n: usize,
    read: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    counters.reads.fetch_add(n as u64, Ordering::Relaxed);
    catch_unwind(AssertUnwindSafe(read))
        .unwrap_or_else(|_| Err(StoreError::Backend("backend panicked during a read".into())))
}

fn reader_loop(backend: &dyn Backend, rx: &Receiver<ReadJob>, counters: &Counters) {
    loop {
        // The asker may have gone away (e.g. its connection closed); a failed
        // send of the answer is fine.
        match rx.recv() {
            Ok(ReadJob::Read(request, reply)) => {
                let _ = reply.send(guarded(counters, 1, || backend.read(&request)));
            }
            Ok(ReadJob::Many(requests, reply)) => {
                let _ = reply.send(guarded(counters, requests.len(), || backend.read_many(&requests)));
            }
            Ok(ReadJob::Stop) | Err(_) => break,
        }
    }
}

/// Rough size of a batch, to bound one transaction.
fn batch_bytes(batch: &WriteBatch) -> usize {
    batch
        .ops
        .iter()
        .map(|op| {
            64 + match op {
                WriteOp::PutItem { data, .. } => data.len(),
                WriteOp::PutSession(s) | WriteOp::FinishSession(s) => s.state.len() + s.last_reply.len(),
                WriteOp::PutDevice { device, .. } => device.devinf_xml.len(),
                _ => 0,
            }
        })
        .sum()
}

fn writer_loop(
    backend: &dyn Backend,
    rx: &Receiver<WriteJob>,
    counters: &Counters,
    own: &WriterMetrics,
    limits: WriterLimits,
) {
    let mut batches: Vec<WriteBatch> = Vec::new();
    let mut replies: Vec<CommitReply> = Vec::new();
    let mut stopping = false;
    while !stopping {
        // Block for the first batch, then take whatever else is already queued.
        match rx.recv() {
            Ok(WriteJob::Commit(batch, reply)) => {
                batches.push(batch);
                replies.push(reply);
            }
            Ok(WriteJob::Stop) | Err(_) => break,
        }
        let mut bytes = batch_bytes(&batches[0]);
        while batches.len() < limits.max_batches && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(WriteJob::Commit(batch, reply)) => {
                    bytes += batch_bytes(&batch);
                    batches.push(batch);
                    replies.push(reply);
                }
                Ok(WriteJob::Stop) => {
                    stopping = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    stopping = true;
                    break;
                }
            }
        }
        let mut results = Vec::with_capacity(batches.len());
        commit_isolating(backend, &batches, counters, own, &mut results);
        for ((reply, result), batch) in replies.drain(..).zip(results).zip(&batches) {
            let answer = match (result, batch.expected_session()) {
                (Ok(info), Some((key, _))) if info.session_conflict => Err(StoreError::SessionConflict(key)),
                (result, _) => result,
            };
            let _ = reply.send(answer);
        }
        batches.clear();
    }
}

/// Commits `batches` as one group and appends one result per batch to `out`.
///
/// When the backend refuses the group because of one batch's data
/// ([`StoreError::Rejected`]), nothing of it was written; the two halves are
/// then committed apart (and so on), so that the good batches commit and only
/// the bad one gets the error: about 2·log2(n) extra transactions for one
/// bad batch among n, none when nothing is rejected. Any other error
/// (connection lost, I/O) fails every batch of the group, as before: the
/// clients retry their messages.
fn commit_isolating(
    backend: &dyn Backend,
    batches: &[WriteBatch],
    counters: &Counters,
    own: &WriterMetrics,
    out: &mut Vec<Result<CommitInfo, StoreError>>,
) {
    counters.commits.fetch_add(1, Ordering::Relaxed);
    counters.batches.fetch_add(batches.len() as u64, Ordering::Relaxed);
    let ops: u64 = batches.iter().map(|b| b.ops.len() as u64).sum();
    counters.ops.fetch_add(ops, Ordering::Relaxed);
    own.commits.inc();
    own.batches.observe_units(batches.len() as u64);
    own.ops.observe_units(ops);
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| backend.commit(batches)))
        .unwrap_or_else(|_| Err(StoreError::Backend("backend panicked during a commit".into())));
    own.seconds.observe_duration(started.elapsed());
    if !matches!(&result, Ok(infos) if infos.len() == batches.len()) {
        own.failed.inc();
        counters.failed_commits.fetch_add(1, Ordering::Relaxed);
    }
    match result {
        Ok(infos) if infos.len() == batches.len() => out.extend(infos.into_iter().map(Ok)),
        Ok(infos) => {
            let msg = format!("backend answered {} commit infos for {} batches", infos.len(), batches.len());
            out.extend(batches.iter().map(|_| Err(StoreError::Backend(msg.clone()))));
        }
        Err(StoreError::Rejected(reason)) if batches.len() > 1 => {
            tracing::warn!(batches = batches.len(), %reason, "group commit refused; committing its halves apart");
            let (first, second) = batches.split_at(batches.len() / 2);
            commit_isolating(backend, first, counters, own, out);
            commit_isolating(backend, second, counters, own, out);
        }
        Err(err) => {
            if matches!(err, StoreError::Rejected(_)) {
                counters.rejected_batches.fetch_add(1, Ordering::Relaxed);
            }
            out.extend(batches.iter().map(|_| Err(copy_error(&err))));
        }
    }
}

/// One error for each batch of a failed group commit.
fn copy_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Locked(m) => StoreError::Locked(m.clone()),
        StoreError::SessionConflict(k) => StoreError::SessionConflict(*k),
        StoreError::Rejected(m) => StoreError::Rejected(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Collection;
    use futures_lite::future::block_on;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Records group sizes; commits slowly so batches pile up; can be told to fail.
    #[derive(Default)]
    struct FakeBackend {
        groups: Mutex<Vec<usize>>,
        committed_ops: AtomicU64,
        fail: AtomicBool,
    }

    impl Backend for FakeBackend {
        fn read(&self, request: &ReadRequest) -> Result<ReadResponse, StoreError> {
            match request {
                ReadRequest::ListUsers => {
                    Ok(ReadResponse::Users(vec![self.committed_ops.load(Ordering::SeqCst).to_string()]))
                }
                _ => Err(StoreError::Backend("unsupported".into())),
            }
        }
        fn commit(&self, batches: &[WriteBatch]) -> Result<Vec<CommitInfo>, StoreError> {
            std::thread::sleep(Duration::from_millis(2));
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("disk on fire".into()));
            }
            self.groups.lock().map_err(|_| StoreError::Closed)?.push(batches.len());
            let ops: usize = batches.iter().map(|b| b.ops.len()).sum();
            self.committed_ops.fetch_add(ops as u64, Ordering::SeqCst);
            Ok(batches
                .iter()
                .map(|b| CommitInfo { new_server_ids: vec![b.ops.len() as u64], ..Default::default() })
                .collect())
        }
    }

    fn batch(n: usize) -> WriteBatch {
        WriteBatch {
            ops: (0..n)
                .map(|i| WriteOp::PutItem {
                    user: "u".into(),
                    collection: Collection::Notes,
                    server_id: None,
                    content_type: "text/plain".into(),
                    data: vec![b'x'; i],
                    origin_device: "d".into(),
                    map_client_id: None,
                })
                .collect(),
        }
    }

    #[test]
    fn read_and_commit_on_plain_executor() {
        let backend = Arc::new(FakeBackend::default());
        let (store, threads) = StoreHandle::start(backend, 2).unwrap();
        let info = block_on(store.commit(batch(3))).unwrap();
        assert_eq!(info.new_server_ids, vec![3]);
        let users = block_on(store.read(ReadRequest::ListUsers)).unwrap();
        assert_eq!(users, ReadResponse::Users(vec!["3".into()]));
        assert!(matches!(
            block_on(store.read(ReadRequest::User { name: "x".into() })),
            Err(StoreError::Backend(_))
        ));
        let stats = threads.stats();
        assert_eq!((stats.commits, stats.batches, stats.ops, stats.reads), (1, 1, 3, 2));
        threads.shutdown();
        assert!(matches!(block_on(store.commit(batch(1))), Err(StoreError::Closed)));
        assert!(matches!(block_on(store.read(ReadRequest::ListUsers)), Err(StoreError::Closed)));
    }

    #[test]
    fn concurrent_committers_are_grouped() {
        let backend = Arc::new(FakeBackend::default());
        let (store, threads) = StoreHandle::start(backend.clone(), 1).unwrap();
        let committers: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        block_on(store.commit(batch(2))).unwrap();
                    }
                })
            })
            .collect();
        for c in committers {
            c.join().unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.batches, 16 * 20);
        assert_eq!(stats.ops, 16 * 20 * 2);
        assert_eq!(backend.committed_ops.load(Ordering::SeqCst), 16 * 20 * 2);
        // 2 ms per commit and 16 committers: far fewer commits than batches.
        assert!(stats.commits * 2 < stats.batches, "{stats:?}");
        let max_group = backend.groups.lock().unwrap().iter().copied().max().unwrap();
        assert!(max_group > 1);
        drop(threads);
    }

    #[test]
    fn several_writers_answer_every_batch_and_stop() {
        let backend = Arc::new(FakeBackend::default());
        let (store, threads) =
            StoreHandle::start_with_writers(backend.clone(), 1, 3, WriterLimits::default()).unwrap();
        std::thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| {
                    for _ in 0..5 {
                        block_on(store.commit(batch(1))).unwrap();
                    }
                });
            }
        });
        assert_eq!(backend.committed_ops.load(Ordering::SeqCst), 60);
        threads.shutdown();
        assert!(matches!(block_on(store.commit(batch(1))), Err(StoreError::Closed)));
    }

    #[test]
    fn group_limits_are_honored() {
        let backend = Arc::new(FakeBackend::default());
        let limits = WriterLimits { max_batches: 3, max_bytes: usize::MAX };
        let (store, _threads) = StoreHandle::start_with(backend.clone(), 1, limits).unwrap();
        std::thread::scope(|s| {
            for _ in 0..30 {
                s.spawn(|| block_on(store.commit(batch(1))).unwrap());
            }
        });
        let groups = backend.groups.lock().unwrap();
        assert_eq!(groups.iter().sum::<usize>(), 30);
        assert!(groups.iter().all(|&g| g <= 3), "{groups:?}");
    }

    #[test]
    fn failed_group_fails_every_batch() {
        let backend = Arc::new(FakeBackend::default());
        backend.fail.store(true, Ordering::SeqCst);
        let (store, threads) = StoreHandle::start(backend.clone(), 1).unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let joins: Vec<_> = (0..8).map(|_| s.spawn(|| block_on(store.commit(batch(1))))).collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        assert!(results.iter().all(|r| matches!(r, Err(StoreError::Backend(m)) if m == "disk on fire")));
        assert_eq!(backend.committed_ops.load(Ordering::SeqCst), 0);
        let stats = threads.stats();
        assert_eq!(stats.failed_commits, stats.commits);
        // The writer survives a failed commit.
        backend.fail.store(false, Ordering::SeqCst);
        assert!(block_on(store.commit(batch(1))).is_ok());
    }

    #[test]
    fn queued_jobs_are_answered_before_shutdown() {
        let backend = Arc::new(FakeBackend::default());
        let (store, threads) = StoreHandle::start(backend.clone(), 1).unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let joins: Vec<_> = (0..10).map(|_| s.spawn(|| block_on(store.commit(batch(1))))).collect();
            std::thread::sleep(Duration::from_millis(20));
            threads.shutdown();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        // Every batch is either committed and acknowledged, or refused as Closed.
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::Closed))));
        assert_eq!(ok as u64, backend.committed_ops.load(Ordering::SeqCst));
    }

    /// Commits a group whole, like a database transaction: refused whole
    /// ([`StoreError::Rejected`]) when any batch holds a `DeleteSession` of
    /// key 0 (the "bad data" here), failed whole when `down`.
    #[derive(Default)]
    struct Picky {
        committed: Mutex<Vec<u64>>,
        calls: AtomicU64,
        down: AtomicBool,
    }

    impl Backend for Picky {
        fn read(&self, _: &ReadRequest) -> Result<ReadResponse, StoreError> {
            Err(StoreError::Backend("unsupported".into()))
        }
        fn commit(&self, batches: &[WriteBatch]) -> Result<Vec<CommitInfo>, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("connection lost".into()));
            }
            let keys: Vec<u64> = batches
                .iter()
                .flat_map(|b| &b.ops)
                .filter_map(|op| match op {
                    WriteOp::DeleteSession { key } => Some(*key),
                    _ => None,
                })
                .collect();
            if keys.contains(&0) {
                return Err(StoreError::Rejected("key 0".into()));
            }
            self.committed.lock().map_err(|_| StoreError::Closed)?.extend(keys);
            Ok(vec![CommitInfo::default(); batches.len()])
        }
    }

    /// Batch `i` deletes session `i + 1`, or the bad key 0 when `bad[i]`.
    fn keyed(bad: &[bool]) -> Vec<WriteBatch> {
        bad.iter()
            .enumerate()
            .map(|(i, &b)| WriteBatch {
                ops: vec![WriteOp::DeleteSession { key: if b { 0 } else { i as u64 + 1 } }],
            })
            .collect()
    }

    fn isolate(backend: &Picky, batches: &[WriteBatch]) -> (Vec<Result<CommitInfo, StoreError>>, Counters) {
        let counters = Counters::default();
        let own = WriterMetrics::default();
        let mut out = Vec::new();
        commit_isolating(backend, batches, &counters, &own, &mut out);
        (out, counters)
    }

    #[test]
    fn a_rejected_batch_fails_alone_and_the_rest_of_its_group_commits() {
        let backend = Picky::default();
        let mut bad = vec![false; 64];
        bad[37] = true;
        let (out, counters) = isolate(&backend, &keyed(&bad));
        assert_eq!(out.len(), 64);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(matches!(r, Err(StoreError::Rejected(_))), i == 37, "batch {i}: {r:?}");
            assert!(i == 37 || r.is_ok());
        }
        let want: Vec<u64> = (1..=64).filter(|&k| k != 38).collect();
        assert_eq!(*backend.committed.lock().unwrap(), want, "each good batch once, in order");
        // One bad batch among 64: the group, then two halves per level down to it.
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1 + 2 * 6);
        assert_eq!(counters.rejected_batches.load(Ordering::Relaxed), 1);

        // Nothing rejected: one transaction, no extra cost.
        let backend = Picky::default();
        let (out, _) = isolate(&backend, &keyed(&[false; 64]));
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_lost_connection_still_fails_the_whole_group_without_retries() {
        let backend = Picky::default();
        backend.down.store(true, Ordering::SeqCst);
        let (out, counters) = isolate(&backend, &keyed(&[false, true, false, false]));
        assert!(out.iter().all(|r| matches!(r, Err(StoreError::Backend(m)) if m == "connection lost")));
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
        assert_eq!(counters.rejected_batches.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_writer_thread_answers_each_batch_of_a_refused_group_with_its_own_result() {
        let backend = Arc::new(Picky::default());
        let (store, threads) = StoreHandle::start(backend.clone(), 1).unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let joins: Vec<_> = keyed(&[false, false, true, false, false, false, true, false])
                .into_iter()
                .map(|b| {
                    let store = &store;
                    s.spawn(move || block_on(store.commit(b)))
                })
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let rejected = results.iter().filter(|r| matches!(r, Err(StoreError::Rejected(_)))).count();
        assert_eq!(rejected, 2, "{results:?}");
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 6, "{results:?}");
        let mut committed = backend.committed.lock().unwrap().clone();
        committed.sort_unstable();
        assert_eq!(committed, vec![1, 2, 4, 5, 6, 8]);
        assert_eq!(threads.stats().rejected_batches, 2);
    }

    proptest::proptest! {
        /// Whatever batches are bad, every good batch commits exactly once,
        /// in group order, and every bad one gets `Rejected`.
        #[test]
        fn isolation_commits_exactly_the_good_batches(bad in proptest::collection::vec(proptest::bool::weighted(0.15), 1..80)) {
            let backend = Picky::default();
            let (out, counters) = isolate(&backend, &keyed(&bad));
            proptest::prop_assert_eq!(out.len(), bad.len());
            for (r, &b) in out.iter().zip(&bad) {
                proptest::prop_assert_eq!(matches!(r, Err(StoreError::Rejected(_))), b);
                proptest::prop_assert_eq!(r.is_ok(), !b);
            }
            let want: Vec<u64> = (1..=bad.len() as u64).filter(|k| !bad[*k as usize - 1]).collect();
            proptest::prop_assert_eq!(&*backend.committed.lock().unwrap(), &want);
            let n_bad = bad.iter().filter(|b| **b).count() as u64;
            proptest::prop_assert_eq!(counters.rejected_batches.load(Ordering::Relaxed), n_bad);
            if n_bad == 0 {
                proptest::prop_assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
            }
        }
    }
}
