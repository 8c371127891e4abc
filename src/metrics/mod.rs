//! Metrics: lock-free counters, gauges and histograms, and the Prometheus
//! text exposition served at `GET /metrics`.
//!
//! Every writer owns its metrics: a shard writes only its own
//! [`ShardMetrics`] (cache-line aligned, relaxed atomics), each store writer
//! thread only its own [`WriterMetrics`]. The `/metrics` handler of any shard
//! reads them all and sums them, so the request path never takes a lock and
//! never shares a written cache line with another core.

pub mod parse;
mod text;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use text::{Exposition, CONTENT_TYPE};

use crate::model::Encoding;
use crate::store::Collection;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the latency histograms.
pub const SECONDS_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Upper bounds of the size histograms (batches or operations per commit).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// A histogram with fixed buckets; values are recorded in integer units
/// (microseconds for `_seconds` histograms, plain counts for sizes).
#[derive(Debug)]
pub struct Histogram {
    /// Bucket upper bounds in the exposed unit.
    bounds: &'static [f64],
    /// The same bounds in recording units.
    unit_bounds: Box<[u64]>,
    /// One count per bucket (not cumulative) plus the +Inf bucket.
    buckets: Box<[AtomicU64]>,
    /// Sum of the recorded values in units.
    sum: AtomicU64,
    /// Size of one unit in the exposed unit (1e-6 for microseconds).
    scale: f64,
}

/// A histogram's values at one moment (mergeable across writers).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds.
    pub bounds: &'static [f64],
    /// Counts per bucket, not cumulative; the last is the +Inf bucket.
    pub buckets: Vec<u64>,
    /// Sum of observations in the exposed unit.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// Total number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another snapshot with the same bounds.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
    }
}

impl Histogram {
    /// A latency histogram recording microseconds, exposed in seconds.
    pub fn seconds() -> Histogram {
        Histogram::new(SECONDS_BUCKETS, 1e-6)
    }

    /// A size histogram recording plain counts.
    pub fn sizes() -> Histogram {
        Histogram::new(SIZE_BUCKETS, 1.0)
    }

    /// A histogram with `bounds` (exposed unit) recording units of `scale`.
    pub fn new(bounds: &'static [f64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            unit_bounds: bounds.iter().map(|b| (b / scale).round() as u64).collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records a value in units.
    pub fn observe_units(&self, v: u64) {
        let i = self.unit_bounds.partition_point(|&b| b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Records a duration (for histograms in seconds).
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe_units(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// The current values.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.scale,
        }
    }
}

/// Why a session ended without completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// Too many failed authentication attempts.
    Auth,
    /// The engine aborted it (protocol error, unsupported version).
    Protocol,
    /// It was idle longer than the session timeout.
    Expired,
    /// The client started over (MsgID went back) before it completed.
    Restarted,
    /// The user already had the maximum number of concurrent sessions.
    Limit,
}

impl FailReason {
    /// Every reason, in label order.
    pub const ALL: [FailReason; 5] = [
        FailReason::Auth,
        FailReason::Protocol,
        FailReason::Expired,
        FailReason::Restarted,
        FailReason::Limit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Auth => "auth",
            FailReason::Protocol => "protocol",
            FailReason::Expired => "expired",
            FailReason::Restarted => "restarted",
            FailReason::Limit => "limit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Direction of an item operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by the client, applied by the server.
    FromClient,
    /// Sent by the server to the client.
    ToClient,
}

/// An item operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOp {
    /// Add.
    Add,
    /// Replace.
    Replace,
    /// Delete.
    Delete,
}

/// HTTP status codes counted one by one (others count as `other`).
pub const HTTP_CODES: [u16; 12] = [200, 400, 404, 405, 408, 411, 413, 415, 417, 429, 431, 503];

fn encoding_index(e: Encoding) -> usize {
    match e {
        Encoding::Xml => 0,
        Encoding::Wbxml => 1,
    }
}

fn collection_index(c: Collection) -> usize {
    Collection::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

/// The metrics one shard writes (and only that shard).
///
/// Aligned to 128 bytes so that two shards' structs never share a cache line
/// (adjacent-line prefetching pairs 64-byte lines on x86).
#[derive(Debug)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// SyncML sessions begun (first message of a session accepted).
    pub sessions_started: Counter,
    /// Sessions that ended normally (or were suspended).
    pub sessions_completed: Counter,
    /// Sessions that ended otherwise, by [`FailReason`].
    sessions_failed: [Counter; 5],
    /// Sessions held by the shard right now.
    pub sessions_active: Gauge,
    /// SyncML messages received, by encoding (xml, wbxml).
    messages: [Counter; 2],
    /// Time from a message's last body byte to its answer, by encoding.
    message_seconds: [Histogram; 2],
    /// Items by collection, operation, direction.
    items: [[[Counter; 2]; 3]; 4],
    /// Conflicts resolved, by collection.
    conflicts: [Counter; 4],
    /// Failed authentication attempts.
    pub auth_failures: Counter,
    /// Requests refused as session probes (unknown session, wrong session secret).
    pub session_probes: Counter,
    /// Requests refused with 429 because of the auth back-off, by key (user, address).
    auth_backoff: [Counter; 2],
    /// Responses by HTTP status ([`HTTP_CODES`], then `other`).
    http: [Counter; 13],
    /// Requests this shard handed to their owner shard.
    pub handoffs_sent: Counter,
    /// Hand-overs this shard waits for right now (its queue towards peers).
    pub handoffs_waiting: Gauge,
    /// Hand-overs from other shards this shard is serving right now.
    pub handoffs_serving: Gauge,
    /// Connections this shard moved to the shard owning their session.
    pub migrations_sent: Counter,
    /// Connections other shards moved to this one.
    pub migrations_adopted: Counter,
    /// Requests whose decode or engine run panicked (answered 500).
    pub panics: Counter,
    /// Set when the shard's thread ended without a shutdown being asked for
    /// (a panic that escaped a task, or an executor failure); `/health` fails.
    exited: std::sync::atomic::AtomicBool,
    /// [`monotonic_millis`] of the shard's last heartbeat (0: none yet).
    heartbeat: AtomicU64,
}

/// A shard whose heartbeat is older than this counts as dead: its executor
/// stopped running tasks (a panic that unwinds into glommio can leave the
/// thread stuck in the unwinding, so the thread's end is not always seen).
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(10);

/// Milliseconds on a process-wide monotonic clock, comparable across threads.
pub fn monotonic_millis() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    u64::try_from(BASE.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl ShardMetrics {
    /// Records that the shard's thread ended unexpectedly.
    pub fn mark_exited(&self) {
        self.exited.store(true, Ordering::SeqCst);
    }

    /// Whether the shard's thread ended unexpectedly.
    pub fn exited(&self) -> bool {
        self.exited.load(Ordering::SeqCst)
    }

    /// Records that the shard's executor is running tasks (called by a
    /// periodic task of the shard).
    pub fn beat(&self) {
        self.heartbeat.store(monotonic_millis().max(1), Ordering::Relaxed);
    }

    /// Whether the shard is dead at `now` ([`monotonic_millis`]): its thread
    /// ended unexpectedly, or it beat once and not within `stale` since.
    pub fn dead(&self, now: u64, stale: Duration) -> bool {
        let beat = self.heartbeat.load(Ordering::Relaxed);
        let stale = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
        self.exited() || (beat != 0 && now.saturating_sub(beat) > stale)
    }
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            sessions_started: Counter::default(),
            sessions_completed: Counter::default(),
            sessions_failed: Default::default(),
            sessions_active: Gauge::default(),
            messages: Default::default(),
            message_seconds: [Histogram::seconds(), Histogram::seconds()],
            items: Default::default(),
            conflicts: Default::default(),
            auth_failures: Counter::default(),
            session_probes: Counter::default(),
            auth_backoff: Default::default(),
            http: Default::default(),
            handoffs_sent: Counter::default(),
            handoffs_waiting: Gauge::default(),
            handoffs_serving: Gauge::default(),
            migrations_sent: Counter::default(),
            migrations_adopted: Counter::default(),
            panics: Counter::default(),
            exited: std::sync::atomic::AtomicBool::new(false),
            heartbeat: AtomicU64::new(0),
        }
    }
}

/// Which key of the auth back-off refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKey {
    /// The claimed user name.
    User,
    /// The client's address.
    Address,
}

impl ShardMetrics {
    /// A session ended without completing.
    pub fn session_failed(&self, reason: FailReason) {
        self.sessions_failed[reason.index()].inc();
    }

    /// A SyncML message was answered after `elapsed`.
    pub fn message(&self, encoding: Encoding, elapsed: std::time::Duration) {
        let i = encoding_index(encoding);
        self.messages[i].inc();
        self.message_seconds[i].observe_duration(elapsed);
    }

    /// `n` item operations of one kind.
    pub fn items(&self, c: Collection, op: ItemOp, dir: Direction, n: u64) {
        if n > 0 {
            self.items[collection_index(c)][op as usize][dir as usize].add(n);
        }
    }

    /// `n` conflicts resolved in collection `c`.
    pub fn conflicts(&self, c: Collection, n: u64) {
        if n > 0 {
            self.conflicts[collection_index(c)].add(n);
        }
    }

    /// A request refused by the auth back-off.
    pub fn backoff(&self, key: BackoffKey) {
        self.auth_backoff[key as usize].inc();
    }

    /// A response with HTTP `status` was written.
    pub fn http_status(&self, status: u16) {
        let i = HTTP_CODES.iter().position(|&c| c == status).unwrap_or(HTTP_CODES.len());
        self.http[i].inc();
    }
}

/// Something that adds its own families to a node's exposition (e.g. the store).
pub trait Source: Send + Sync {
    /// Writes the source's metric families.
    fn collect(&self, out: &mut Exposition);
}

/// All metrics of one `serve` node: one [`ShardMetrics`] per shard plus sources.
pub struct NodeMetrics {
    shards: Vec<Arc<ShardMetrics>>,
    sources: Vec<Arc<dyn Source>>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").field("shards", &self.shards.len()).finish()
    }
}

impl NodeMetrics {
    /// Metrics for `shards` shards and no sources.
    pub fn new(shards: usize) -> NodeMetrics {
        NodeMetrics {
            shards: (0..shards).map(|_| Arc::new(ShardMetrics::default())).collect(),
            sources: Vec::new(),
        }
    }

    /// Adds a source collected at every scrape.
    pub fn with_source(mut self, source: Arc<dyn Source>) -> NodeMetrics {
        self.sources.push(source);
        self
    }

    /// Shard `i`'s metrics (a fresh, unregistered one past the end).
    pub fn shard(&self, i: usize) -> Arc<ShardMetrics> {
        self.shards.get(i).cloned().unwrap_or_default()
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shards that are dead now (see [`ShardMetrics::dead`]).
    pub fn dead_shards(&self, stale: Duration) -> Vec<usize> {
        let now = monotonic_millis();
        self.shards.iter().enumerate().filter(|(_, s)| s.dead(now, stale)).map(|(i, _)| i).collect()
    }

    /// The Prometheus text exposition of the whole node.
    pub fn render(&self) -> String {
        let mut out = Exposition::new();
        self.collect_shards(&mut out);
        for s in &self.sources {
            s.collect(&mut out);
        }
        out.finish()
    }

    fn sum(&self, f: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.shards.iter().map(|s| f(s)).sum()
    }

    /// A counter family with one sample per shard (label `shard`).
    fn per_shard(&self, out: &mut Exposition, name: &str, help: &str, f: impl Fn(&ShardMetrics) -> u64) {
        out.family(name, "counter", help);
        for (i, s) in self.shards.iter().enumerate() {
            out.sample(name, &[("shard", &i.to_string())], f(s) as f64);
        }
    }

    fn collect_shards(&self, out: &mut Exposition) {
        out.family("shardsync_sessions_active", "gauge", "SyncML sessions held by the node's shards.");
        out.sample(
            "shardsync_sessions_active",
            &[],
            self.shards.iter().map(|s| s.sessions_active.get()).sum::<i64>() as f64,
        );
        out.family("shardsync_sessions_started_total", "counter", "SyncML sessions begun.");
        out.sample("shardsync_sessions_started_total", &[], self.sum(|s| s.sessions_started.get()) as f64);
        out.family(
            "shardsync_sessions_completed_total",
            "counter",
            "SyncML sessions that completed (or were suspended).",
        );
        out.sample(
            "shardsync_sessions_completed_total",
            &[],
            self.sum(|s| s.sessions_completed.get()) as f64,
        );
        out.family(
            "shardsync_sessions_failed_total",
            "counter",
            "SyncML sessions that ended without completing, by reason.",
        );
        for r in FailReason::ALL {
            let v = self.sum(|s| s.sessions_failed[r.index()].get());
            out.sample("shardsync_sessions_failed_total", &[("reason", r.as_str())], v as f64);
        }
        let encodings = [("xml", 0usize), ("wbxml", 1)];
        out.family("shardsync_messages_total", "counter", "SyncML messages answered, by encoding.");
        for (name, i) in encodings {
            out.sample(
                "shardsync_messages_total",
                &[("encoding", name)],
                self.sum(|s| s.messages[i].get()) as f64,
            );
        }
        out.family(
            "shardsync_message_duration_seconds",
            "histogram",
            "Time from a SyncML message's last byte to its answer (hand-over, store and engine included), by encoding.",
        );
        for (name, i) in encodings {
            let mut h = Histogram::seconds().snapshot();
            for s in &self.shards {
                h.merge(&s.message_seconds[i].snapshot());
            }
            out.histogram("shardsync_message_duration_seconds", &[("encoding", name)], &h);
        }
        out.family(
            "shardsync_items_total",
            "counter",
            "Item operations by datastore, operation and direction (from_client: applied; to_client: sent).",
        );
        for c in Collection::ALL {
            for (op, oi) in [("add", 0usize), ("replace", 1), ("delete", 2)] {
                for (dir, di) in [("from_client", 0usize), ("to_client", 1)] {
                    let v = self.sum(|s| s.items[collection_index(c)][oi][di].get());
                    out.sample(
                        "shardsync_items_total",
                        &[("datastore", c.as_str()), ("operation", op), ("direction", dir)],
                        v as f64,
                    );
                }
            }
        }
        out.family("shardsync_conflicts_total", "counter", "Conflicts resolved, by datastore.");
        for c in Collection::ALL {
            let v = self.sum(|s| s.conflicts[collection_index(c)].get());
            out.sample("shardsync_conflicts_total", &[("datastore", c.as_str())], v as f64);
        }
        out.family("shardsync_auth_failures_total", "counter", "Failed SyncML authentication attempts.");
        out.sample("shardsync_auth_failures_total", &[], self.sum(|s| s.auth_failures.get()) as f64);
        out.family(
            "shardsync_session_probes_total",
            "counter",
            "Requests refused as session probes: unknown session, wrong session secret, colliding ids.",
        );
        out.sample("shardsync_session_probes_total", &[], self.sum(|s| s.session_probes.get()) as f64);
        out.family(
            "shardsync_auth_backoff_total",
            "counter",
            "Requests refused with HTTP 429 by the authentication back-off, by the key that was blocked.",
        );
        for (name, i) in [("user", 0usize), ("address", 1)] {
            out.sample(
                "shardsync_auth_backoff_total",
                &[("key", name)],
                self.sum(|s| s.auth_backoff[i].get()) as f64,
            );
        }
        out.family("shardsync_http_responses_total", "counter", "HTTP responses by status code.");
        for (i, code) in HTTP_CODES.iter().enumerate() {
            let v = self.sum(|s| s.http[i].get());
            out.sample("shardsync_http_responses_total", &[("code", &code.to_string())], v as f64);
        }
        let other = self.sum(|s| s.http[HTTP_CODES.len()].get());
        out.sample("shardsync_http_responses_total", &[("code", "other")], other as f64);
        self.per_shard(
            out,
            "shardsync_handoffs_total",
            "Requests handed to their owner shard, by sending shard.",
            |s| s.handoffs_sent.get(),
        );
        self.per_shard(
            out,
            "shardsync_connection_migrations_total",
            "Keep-alive connections moved to the shard owning their session, by sending shard.",
            |s| s.migrations_sent.get(),
        );
        self.per_shard(
            out,
            "shardsync_panics_total",
            "Requests whose decode or engine run panicked (answered with HTTP 500), by shard.",
            |s| s.panics.get(),
        );
        out.family(
            "shardsync_shard_up",
            "gauge",
            "1 while the shard runs, 0 once its thread ended unexpectedly or its heartbeat stopped.",
        );
        let now = monotonic_millis();
        for (i, s) in self.shards.iter().enumerate() {
            let up = if s.dead(now, HEARTBEAT_STALE) { 0.0 } else { 1.0 };
            out.sample("shardsync_shard_up", &[("shard", &i.to_string())], up);
        }
        out.family(
            "shardsync_shard_queue_depth",
            "gauge",
            "Hand-overs in flight per shard: waiting = sent and not yet answered, serving = received and being served.",
        );
        for (i, s) in self.shards.iter().enumerate() {
            let shard = i.to_string();
            out.sample(
                "shardsync_shard_queue_depth",
                &[("shard", &shard), ("queue", "waiting")],
                s.handoffs_waiting.get() as f64,
            );
            out.sample(
                "shardsync_shard_queue_depth",
                &[("shard", &shard), ("queue", "serving")],
                s.handoffs_serving.get() as f64,
            );
        }
    }
}

/// The metrics one store writer thread writes (and only that thread).
#[derive(Debug)]
#[repr(align(128))]
pub struct WriterMetrics {
    /// Group commits attempted.
    pub commits: Counter,
    /// Group commits that failed.
    pub failed: Counter,
    /// Batches per group commit.
    pub batches: Histogram,
    /// Write operations per group commit.
    pub ops: Histogram,
    /// Duration of the backend commit (durable).
    pub seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            commits: Counter::default(),
            failed: Counter::default(),
            batches: Histogram::sizes(),
            ops: Histogram::sizes(),
            seconds: Histogram::seconds(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::seconds();
        h.observe_duration(Duration::from_micros(500)); // on the 0.0005 bound: first bucket
        h.observe_duration(Duration::from_micros(501));
        h.observe_duration(Duration::from_secs(11));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(*s.buckets.last().unwrap(), 1);
        assert_eq!(s.count(), 3);
        assert!((s.sum - 11.001001).abs() < 1e-9, "{}", s.sum);
        let sizes = Histogram::sizes();
        sizes.observe_units(3);
        assert_eq!(sizes.snapshot().buckets[2], 1);
    }

    #[test]
    fn panics_and_shard_liveness_are_exposed() {
        let node = NodeMetrics::new(3);
        node.shard(1).panics.inc();
        assert!(node.dead_shards(HEARTBEAT_STALE).is_empty(), "no heartbeat yet is not dead");
        node.shard(0).beat();
        node.shard(1).beat();
        assert!(node.dead_shards(HEARTBEAT_STALE).is_empty());
        node.shard(2).mark_exited();
        assert_eq!(node.dead_shards(HEARTBEAT_STALE), vec![2]);
        // A heartbeat that stopped: shard 0 is stale once `stale` has passed.
        std::thread::sleep(Duration::from_millis(30));
        node.shard(1).beat();
        assert_eq!(node.dead_shards(Duration::from_millis(20)), vec![0, 2]);
        let now = monotonic_millis();
        assert!(!node.shard(1).dead(now, Duration::from_millis(20)));
        let scrape = parse::parse(&node.render()).unwrap();
        assert_eq!(scrape.value("shardsync_panics_total", &[("shard", "1")]), Some(1.0));
        assert_eq!(scrape.value("shardsync_panics_total", &[("shard", "0")]), Some(0.0));
        assert_eq!(scrape.value("shardsync_shard_up", &[("shard", "1")]), Some(1.0));
        assert_eq!(scrape.value("shardsync_shard_up", &[("shard", "2")]), Some(0.0));
    }

    #[test]
    fn node_render_sums_shards_and_parses() {
        let node = NodeMetrics::new(2);
        node.shard(0).sessions_started.add(2);
        node.shard(1).sessions_started.add(3);
        node.shard(1).items(Collection::Notes, ItemOp::Delete, Direction::ToClient, 4);
        node.shard(0).message(Encoding::Wbxml, Duration::from_millis(3));
        node.shard(1).http_status(299);
        let text = node.render();
        let scrape = parse::parse(&text).unwrap();
        assert_eq!(scrape.value("shardsync_sessions_started_total", &[]), Some(5.0));
        let labels = [("datastore", "notes"), ("operation", "delete"), ("direction", "to_client")];
        assert_eq!(scrape.value("shardsync_items_total", &labels), Some(4.0));
        assert_eq!(scrape.value("shardsync_messages_total", &[("encoding", "wbxml")]), Some(1.0));
        assert_eq!(
            scrape.value("shardsync_message_duration_seconds_count", &[("encoding", "wbxml")]),
            Some(1.0)
        );
        assert_eq!(
            scrape.value(
                "shardsync_message_duration_seconds_bucket",
                &[("encoding", "wbxml"), ("le", "0.005")]
            ),
            Some(1.0)
        );
        assert_eq!(scrape.value("shardsync_http_responses_total", &[("code", "other")]), Some(1.0));
        assert_eq!(scrape.kind("shardsync_message_duration_seconds"), Some("histogram"));
    }

    #[test]
    fn shard_metrics_are_cache_line_aligned() {
        assert_eq!(std::mem::align_of::<ShardMetrics>(), 128);
        assert_eq!(std::mem::align_of::<WriterMetrics>(), 128);
    }
}
