//! Counters and the final report of a load run: an HDR histogram of
//! per-message latency, sessions and items per second, bytes each way, and
//! errors by kind. Each worker thread keeps its own [`Stats`]; they are merged
//! at the end, so counting costs no shared writes on the request path.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::client::{LobCounts, OpCounts};

/// What one worker (or the whole run, after merging) counted.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Per-message round trip in microseconds (send to last response byte).
    pub latency_us: Histogram<u64>,
    /// Messages sent.
    pub messages: u64,
    /// Request bytes written (HTTP head and body).
    pub bytes_out: u64,
    /// Response bytes read (HTTP head and body).
    pub bytes_in: u64,
    /// Sessions that completed with no error.
    pub sessions_ok: u64,
    /// Sessions that ended with at least one error.
    pub sessions_failed: u64,
    /// Hold plan: sessions left open after message 1.
    pub sessions_held: u64,
    /// Items the devices sent.
    pub sent: OpCounts,
    /// Items the devices received.
    pub received: OpCounts,
    /// Auth challenges answered with a retry (md5 nonce refresh).
    pub auth_retries: u64,
    /// Large objects and their chunks, both ways.
    pub lob: LobCounts,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Empty counters; latencies from 1 µs to 10 min at 3 significant digits.
    pub fn new() -> Stats {
        let latency_us =
            Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid");
        Stats {
            latency_us,
            messages: 0,
            bytes_out: 0,
            bytes_in: 0,
            sessions_ok: 0,
            sessions_failed: 0,
            sessions_held: 0,
            sent: OpCounts::default(),
            received: OpCounts::default(),
            auth_retries: 0,
            lob: LobCounts::default(),
            errors: BTreeMap::new(),
        }
    }

    /// Records one message round trip.
    pub fn message(&mut self, took: Duration, out: usize, inb: usize) {
        self.messages += 1;
        self.bytes_out += out as u64;
        self.bytes_in += inb as u64;
        let us = took.as_micros().clamp(1, 600_000_000) as u64;
        // In bounds by the clamp above.
        let _ = self.latency_us.record(us);
    }

    /// Counts an error of `kind`.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    /// Total errors.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Items sent and received.
    pub fn items(&self) -> u64 {
        self.sent.total() + self.received.total()
    }

    /// Adds `other` into these counters.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides: add cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.messages += other.messages;
        self.bytes_out += other.bytes_out;
        self.bytes_in += other.bytes_in;
        self.sessions_ok += other.sessions_ok;
        self.sessions_failed += other.sessions_failed;
        self.sessions_held += other.sessions_held;
        self.sent.merge(&other.sent);
        self.received.merge(&other.received);
        self.auth_retries += other.auth_retries;
        self.lob.merge(&other.lob);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
    }
}

/// A phase of a run (set-up or the measured load) and its figures.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// Wall-clock time of the phase.
    pub elapsed: Duration,
    /// Its counters.
    pub stats: Stats,
}

impl PhaseReport {
    fn rate(&self, n: u64) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            n as f64 / s
        } else {
            0.0
        }
    }

    /// Completed sessions per second.
    pub fn sessions_per_s(&self) -> f64 {
        self.rate(self.stats.sessions_ok + self.stats.sessions_failed + self.stats.sessions_held)
    }

    /// Items (sent + received) per second.
    pub fn items_per_s(&self) -> f64 {
        self.rate(self.stats.items())
    }

    fn latency_ms(&self, q: f64) -> f64 {
        if self.stats.latency_us.is_empty() {
            return 0.0;
        }
        self.stats.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// The phase as JSON.
    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "sessions": s.sessions_ok + s.sessions_failed + s.sessions_held,
            "sessions_ok": s.sessions_ok,
            "sessions_failed": s.sessions_failed,
            "sessions_held": s.sessions_held,
            "sessions_per_s": self.sessions_per_s(),
            "messages": s.messages,
            "messages_per_s": self.rate(s.messages),
            "items": s.items(),
            "items_per_s": self.items_per_s(),
            "items_sent": {"add": s.sent.add, "replace": s.sent.replace, "delete": s.sent.delete},
            "items_received": {"add": s.received.add, "replace": s.received.replace, "delete": s.received.delete},
            "large_objects": {
                "sent": s.lob.objects_sent,
                "chunks_sent": s.lob.chunks_sent,
                "received": s.lob.objects_received,
                "chunks_received": s.lob.chunks_received,
            },
            "bytes_out": s.bytes_out,
            "bytes_in": s.bytes_in,
            "latency_ms": {
                "p50": self.latency_ms(0.5),
                "p90": self.latency_ms(0.9),
                "p99": self.latency_ms(0.99),
                "p99_9": self.latency_ms(0.999),
                "max": s.latency_us.max() as f64 / 1000.0,
            },
            "auth_retries": s.auth_retries,
            "errors": s.error_total(),
            "errors_by_kind": s.errors,
        })
    }
}

/// The whole run: what was asked, the set-up phase and the measured phase.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run's parameters (scenario, encoding, devices, ...), for the record.
    pub params: Value,
    /// Set-up sessions (first slow syncs that give devices their anchors), if any.
    pub setup: Option<PhaseReport>,
    /// The measured sessions.
    pub load: PhaseReport,
}

impl Report {
    /// Errors of both phases.
    pub fn errors(&self) -> u64 {
        self.load.stats.error_total() + self.setup.as_ref().map_or(0, |s| s.stats.error_total())
    }

    /// One JSON object: the measured phase's figures at the top level, with
    /// `errors` and `errors_by_kind` covering set-up too.
    pub fn to_json(&self) -> Value {
        let mut v = self.load.to_json();
        let mut by_kind = self.load.stats.errors.clone();
        if let Some(setup) = &self.setup {
            for (k, n) in &setup.stats.errors {
                *by_kind.entry(format!("setup:{k}")).or_insert(0) += n;
            }
        }
        if let Value::Object(map) = &mut v {
            map.insert("errors".into(), json!(self.errors()));
            map.insert("errors_by_kind".into(), json!(by_kind));
            map.insert("params".into(), self.params.clone());
            map.insert("setup".into(), self.setup.as_ref().map_or(Value::Null, PhaseReport::to_json));
        }
        v
    }

    /// A human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("load: {}\n", self.params));
        if let Some(setup) = &self.setup {
            out.push_str(&format!(
                "setup: {} sessions in {:.2} s, {} errors\n",
                setup.stats.sessions_ok + setup.stats.sessions_failed,
                setup.elapsed.as_secs_f64(),
                setup.stats.error_total()
            ));
        }
        let l = &self.load;
        let s = &l.stats;
        let rows = [
            ("elapsed", format!("{:.2} s", l.elapsed.as_secs_f64())),
            (
                "sessions",
                format!(
                    "{} ok, {} failed, {} held ({:.1}/s)",
                    s.sessions_ok,
                    s.sessions_failed,
                    s.sessions_held,
                    l.sessions_per_s()
                ),
            ),
            ("messages", format!("{} ({:.1}/s)", s.messages, l.rate(s.messages))),
            (
                "items sent",
                format!("{} (+{} ~{} -{})", s.sent.total(), s.sent.add, s.sent.replace, s.sent.delete),
            ),
            (
                "items received",
                format!(
                    "{} (+{} ~{} -{})",
                    s.received.total(),
                    s.received.add,
                    s.received.replace,
                    s.received.delete
                ),
            ),
            ("items/s", format!("{:.1}", l.items_per_s())),
            (
                "large objects",
                format!(
                    "{} sent in {} chunks, {} received in {} chunks",
                    s.lob.objects_sent, s.lob.chunks_sent, s.lob.objects_received, s.lob.chunks_received
                ),
            ),
            ("bytes out / in", format!("{} / {}", s.bytes_out, s.bytes_in)),
            (
                "latency ms",
                format!(
                    "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                    l.latency_ms(0.5),
                    l.latency_ms(0.9),
                    l.latency_ms(0.99),
                    l.latency_ms(0.999),
                    s.latency_us.max() as f64 / 1000.0
                ),
            ),
            ("errors", format!("{} {:?}", self.errors(), s.errors)),
        ];
        for (k, v) in rows {
            out.push_str(&format!("{k:>16}  {v}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_quantiles() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for ms in 1..=100u64 {
            a.message(Duration::from_millis(ms), 10, 20);
        }
        b.message(Duration::from_secs(2), 1, 1);
        b.error("status_Add_500");
        b.error("status_Add_500");
        a.merge(&b);
        let p = PhaseReport { elapsed: Duration::from_secs(2), stats: a };
        let j = p.to_json();
        assert_eq!(j["messages"], 101);
        assert_eq!(j["errors"], 2);
        assert_eq!(j["errors_by_kind"]["status_Add_500"], 2);
        let p50 = j["latency_ms"]["p50"].as_f64().unwrap();
        assert!((49.0..=52.0).contains(&p50), "{p50}");
        assert!(j["latency_ms"]["max"].as_f64().unwrap() >= 1999.0);
    }
}
