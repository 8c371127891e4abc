//! The active SyncML sessions of a node, for operators: each shard keeps a
//! table of its own sessions (shard-local, no lock), and the admin socket
//! asks every shard for its table through a [`SessionDirectory`] (crossbeam
//! channels a shard task polls, so no shard ever blocks on the admin thread).
//!
//! The table also keeps the per-user session slots of [`crate::limits`]
//! balanced: a session that took a slot gives it back exactly once, whether
//! it completes, aborts, fails or expires.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::engine::report::{claimed_user, SessionReport};
use crate::engine::Outcome;
use crate::limits::Limits;
use crate::metrics::{Direction, FailReason, ItemOp, ShardMetrics};
use crate::model::{Encoding, SyncMl};
use crate::routing;
use crate::service::ServiceError;

/// What an operator sees of one active session (never credentials or data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The shard holding it.
    pub shard: usize,
    /// Its routing token (`?s=`).
    pub token: String,
    /// The authenticated user, or empty before authentication.
    pub user: String,
    /// The device id.
    pub device: String,
    /// The client's SessionID.
    pub session_id: String,
    /// Datastores and sync types, e.g. `contacts:200 notes:201`.
    pub datastores: String,
    /// Seconds since the Unix epoch of the first message.
    pub started_at: u64,
    /// Seconds since the Unix epoch of the last message.
    pub last_activity: u64,
    /// Messages answered so far.
    pub messages: u64,
}

#[derive(Debug)]
struct Entry {
    info: SessionInfo,
    /// What the session did up to its last message (for the log line at expiry).
    report: SessionReport,
    /// The user whose session slot this session holds.
    slot: Option<String>,
}

/// One shard's active sessions (used only on that shard).
#[derive(Debug)]
pub struct ActiveSessions {
    shard: usize,
    map: RefCell<HashMap<u64, Entry>>,
    metrics: Arc<ShardMetrics>,
    limits: Arc<Limits>,
    /// Idle seconds after which [`ActiveSessions::expire_idle`] ends a session (0: never).
    idle_timeout: u64,
}

impl ActiveSessions {
    /// An empty table of shard `shard`.
    pub fn new(shard: usize, metrics: Arc<ShardMetrics>, limits: Arc<Limits>) -> ActiveSessions {
        ActiveSessions { shard, map: RefCell::new(HashMap::new()), metrics, limits, idle_timeout: 0 }
    }

    /// Sessions idle this long are ended by [`ActiveSessions::expire_idle`].
    pub fn with_idle_timeout(mut self, secs: u64) -> ActiveSessions {
        self.idle_timeout = secs;
        self
    }

    /// Ends the sessions idle past the timeout (logged and counted as
    /// expired, slots freed), so the table, `sessions_active` and the
    /// per-user slots stay true on a shard that gets no traffic. The
    /// engine's own cache expires its copy later; that finds nothing to end.
    pub fn expire_idle(&self, now: u64) {
        if self.idle_timeout == 0 {
            return;
        }
        let idle: Vec<(u64, SessionReport)> = self
            .map
            .borrow()
            .iter()
            .filter(|(_, e)| e.info.last_activity.saturating_add(self.idle_timeout) <= now)
            .map(|(k, e)| (*k, e.report.clone()))
            .collect();
        for (key, report) in idle {
            self.ended(key, &report, SessionEnd::Failed(FailReason::Expired));
        }
    }

    /// The shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// The node's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether session `key` is in the table.
    pub fn contains(&self, key: u64) -> bool {
        self.map.borrow().contains_key(&key)
    }

    /// Records a new session (counted as started) or updates one.
    pub fn upsert(&self, key: u64, mut info: SessionInfo, report: &SessionReport) {
        info.shard = self.shard;
        let mut map = self.map.borrow_mut();
        match map.get_mut(&key) {
            Some(e) => {
                info.messages = e.info.messages + 1;
                e.info = info;
                e.report = report.clone();
            }
            None => {
                info.messages = 1;
                map.insert(key, Entry { info, report: report.clone(), slot: None });
                self.metrics.sessions_started.inc();
            }
        }
        self.metrics.sessions_active.set(map.len() as i64);
    }

    /// Takes a session slot of `user` for session `key` (once); `false` when
    /// the user is at the cap.
    pub fn take_slot(&self, key: u64, user: &str) -> bool {
        let mut map = self.map.borrow_mut();
        let Some(e) = map.get_mut(&key) else { return false };
        if e.slot.is_some() {
            return true;
        }
        if !self.limits.try_begin_session(user) {
            return false;
        }
        e.slot = Some(user.to_owned());
        true
    }

    /// Removes a session that ended; gives its slot back. `None` if it was
    /// not active (already ended).
    pub fn end(&self, key: u64) -> Option<SessionInfo> {
        let mut map = self.map.borrow_mut();
        let e = map.remove(&key)?;
        if let Some(user) = &e.slot {
            self.limits.end_session(user);
        }
        self.metrics.sessions_active.set(map.len() as i64);
        Some(e.info)
    }

    /// Every active session, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.map.borrow().values().map(|e| e.info.clone()).collect();
        v.sort_by(|a, b| (a.started_at, &a.token).cmp(&(b.started_at, &b.token)));
        v
    }

    /// Answers the admin queries waiting in `inbox` (call it from a shard task).
    pub fn answer(&self, inbox: &SessionInbox) {
        while let Ok(reply) = inbox.rx.try_recv() {
            let _ = reply.send(self.list());
        }
    }
}

type Query = Sender<Vec<SessionInfo>>;

/// A shard's end of the admin queries.
#[derive(Debug)]
pub struct SessionInbox {
    rx: Receiver<Query>,
}

/// How often a shard looks for admin queries.
pub const POLL: Duration = Duration::from_millis(100);

/// The admin side: asks every shard for its sessions.
#[derive(Debug, Clone)]
pub struct SessionDirectory {
    shards: Vec<Sender<Query>>,
}

/// Builds the directory and one inbox per shard.
pub fn directory(shards: usize) -> (SessionDirectory, Vec<SessionInbox>) {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| crossbeam_channel::unbounded()).unzip();
    (SessionDirectory { shards: txs }, rxs.into_iter().map(|rx| SessionInbox { rx }).collect())
}

impl SessionDirectory {
    /// Every active session of the node; fails if a shard does not answer within `timeout`.
    pub fn list(&self, timeout: Duration) -> Result<Vec<SessionInfo>, String> {
        let deadline = Instant::now() + timeout;
        let mut waiting = Vec::with_capacity(self.shards.len());
        for (i, tx) in self.shards.iter().enumerate() {
            let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
            tx.send(reply_tx).map_err(|_| format!("shard {i} is not running"))?;
            waiting.push((i, reply_rx));
        }
        let mut all = Vec::new();
        for (i, rx) in waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            all.extend(rx.recv_timeout(left).map_err(|_| format!("shard {i} did not answer"))?);
        }
        all.sort_by(|a, b| (a.started_at, &a.token).cmp(&(b.started_at, &b.token)));
        Ok(all)
    }
}

/// How a session ended, for the session log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Completed (or suspended) normally.
    Completed,
    /// Ended without completing.
    Failed(FailReason),
}

impl ActiveSessions {
    /// Before a request's body is decoded: refuses it while its client
    /// address is in the back-off (failed logins and session probes).
    pub fn check_address(&self, peer: Option<SocketAddr>) -> Result<(), ServiceError> {
        match self.limits.check_address(peer.map(|p| p.ip())) {
            None => Ok(()),
            Some(b) => Err(self.refused(b, None, peer)),
        }
    }

    /// Before anything is loaded for a message that is not in an
    /// authenticated session yet: refuses it while its claimed user (from
    /// that address, or everywhere unless the device is known there) or its
    /// client address is in the back-off. Checked for any name, known or
    /// not, so the answer says nothing about which users exist.
    pub fn check_backoff(&self, msg: &SyncMl<'_>, peer: Option<SocketAddr>) -> Result<(), ServiceError> {
        let user = claimed_user(msg);
        let device = msg.hdr.source.loc_uri.trim();
        match self.limits.check_auth(user.as_deref(), device, peer.map(|p| p.ip())) {
            None => Ok(()),
            Some(b) => Err(self.refused(b, user.as_deref(), peer)),
        }
    }

    fn refused(
        &self,
        b: crate::limits::Backoff,
        user: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> ServiceError {
        self.metrics.backoff(b.key);
        let secs = b.retry_after.as_millis().div_ceil(1000).max(1) as u64;
        tracing::info!(key = ?b.key, user = %crate::logs::Trunc(user.unwrap_or("-")), peer = ?peer.map(|p| p.ip()),
            retry_after_s = secs, "auth back-off: request refused (429)");
        ServiceError::Backoff(secs)
    }

    /// A request refused as a session probe (unknown session, wrong
    /// secret): counts against its address.
    pub fn probe(&self, peer: Option<SocketAddr>) {
        self.metrics.session_probes.inc();
        self.limits.record_probe(peer.map(|p| p.ip()));
    }

    /// A message whose credentials did not verify (nothing of it was
    /// stored): counts the failure (and a failed session, when it was to
    /// start one) and holds the answer until the failure delay has passed
    /// since `arrived`, so unknown users, wrong passwords and store latency
    /// all take the same time.
    /// `stale`: the right password over a missing or old nonce
    /// ([`crate::engine::Session::stale_nonce`]), which the back-off does not count.
    pub async fn auth_failed(
        &self,
        msg: &SyncMl<'_>,
        peer: Option<SocketAddr>,
        arrived: Instant,
        starting: bool,
        stale: bool,
    ) {
        self.metrics.auth_failures.add(1);
        if starting {
            self.metrics.session_failed(FailReason::Auth);
        }
        if !stale {
            let device = msg.hdr.source.loc_uri.trim();
            self.limits.record_auth_failure(claimed_user(msg).as_deref(), device, peer.map(|p| p.ip()));
        }
        if stale {
            // The right password over an old or empty nonce (a new device's
            // first message): the challenge goes out at once. The delay hides
            // whether a guess was right, and this answer tells no more than
            // the 212 the same password gets with the fresh nonce.
            return;
        }
        let floor = arrived + self.limits.config().auth_fail_delay;
        let now = Instant::now();
        if floor > now {
            crate::shard::sleep(floor - now).await;
        }
    }

    /// A device logged in from `peer`: it becomes known there (see [`crate::limits`]).
    pub fn auth_succeeded(&self, device: &str, peer: Option<SocketAddr>) {
        self.limits.record_auth_success(device, peer.map(|p| p.ip()));
    }

    /// After the engine handled a message, before its writes are committed:
    /// records the session, and takes a session slot when it just
    /// authenticated. `Some(reply)` (SyncML 503) when the user is at the
    /// cap: the caller drops the session and commits nothing.
    pub fn admit(
        &self,
        key: u64,
        before: &SessionReport,
        after: &SessionReport,
        msg: &SyncMl<'_>,
        encoding: Encoding,
    ) -> Option<Vec<u8>> {
        self.upsert(key, info(key, after), after);
        let user = match (&before.user, &after.user) {
            (None, Some(u)) => u,
            _ => return None,
        };
        if self.take_slot(key, user) {
            return None;
        }
        let cap = self.limits.config().max_sessions_per_user;
        self.ended(key, after, SessionEnd::Failed(FailReason::Limit));
        tracing::info!(user = %user, device = %after.device, cap, "session refused: user at the concurrent session cap (SyncML 503)");
        Some(crate::limits::busy_reply(msg, encoding))
    }

    /// After a message's writes are durable: item metrics and the end of
    /// the session when it ended.
    pub fn step_done(&self, key: u64, before: &SessionReport, after: &SessionReport, outcome: Outcome) {
        for s in &after.stores {
            let prev = before.stores.iter().find(|p| p.collection == s.collection);
            let (pf, pt, pc) =
                prev.map_or(([0; 3], [0; 3], 0), |p| (p.from_client, p.to_client, p.conflicts));
            for (i, op) in [ItemOp::Add, ItemOp::Replace, ItemOp::Delete].into_iter().enumerate() {
                let from = u64::from(s.from_client[i].saturating_sub(pf[i]));
                let to = u64::from(s.to_client[i].saturating_sub(pt[i]));
                self.metrics.items(s.collection, op, Direction::FromClient, from);
                self.metrics.items(s.collection, op, Direction::ToClient, to);
            }
            self.metrics.conflicts(s.collection, u64::from(s.conflicts.saturating_sub(pc)));
        }
        match outcome {
            Outcome::Continue => {}
            Outcome::Complete => self.ended(key, after, SessionEnd::Completed),
            Outcome::Aborted => {
                let reason = if after.user.is_none() && after.auth_failures > 0 {
                    FailReason::Auth
                } else {
                    FailReason::Protocol
                };
                self.ended(key, after, SessionEnd::Failed(reason));
            }
        }
    }

    /// A session ended (completed, aborted, failed, expired): counts it,
    /// frees its slot and writes the session log line, once.
    pub fn ended(&self, key: u64, report: &SessionReport, end: SessionEnd) {
        let Some(entry) = self.end(key) else { return };
        let (result, reason) = match end {
            SessionEnd::Completed => {
                self.metrics.sessions_completed.inc();
                ("completed", "-")
            }
            SessionEnd::Failed(r) => {
                self.metrics.session_failed(r);
                let result = match r {
                    FailReason::Expired => "expired",
                    FailReason::Auth | FailReason::Protocol | FailReason::Restarted => "aborted",
                    FailReason::Limit => "failed",
                };
                (result, r.as_str())
            }
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let [fa, fr, fd] = report.from_client();
        let [ta, tr, td] = report.to_client();
        // Never credentials, nonces or item content: names, counts, times only.
        tracing::info!(
            target: "shardsync::session",
            user = report.user.as_deref().unwrap_or("-"),
            device = %report.device,
            session_id = %report.session_id,
            token = %routing::token(key),
            datastores = %report.datastores(),
            sync_types = %report.sync_types(),
            from_client = %format_args!("add={fa} replace={fr} delete={fd}"),
            to_client = %format_args!("add={ta} replace={tr} delete={td}"),
            conflicts = report.conflicts(),
            messages = entry.messages,
            duration_s = now.saturating_sub(report.started_at),
            result,
            reason,
            "session finished"
        );
    }
}

fn info(key: u64, r: &SessionReport) -> SessionInfo {
    SessionInfo {
        shard: 0,
        token: routing::token(key),
        user: r.user.clone().unwrap_or_default(),
        device: r.device.clone(),
        session_id: r.session_id.clone(),
        datastores: r.sync_types(),
        started_at: r.started_at,
        last_activity: r.last_activity,
        messages: 0,
    }
}
