//! The engine's I/O shell on a shard: session cache, store reads, durable
//! commits, and the hand-off between the HTTP layer and the sans-IO engine.
//!
//! Per message: find the session (by key) in the shard's cache or else in
//! the store, answer a resend from the stored reply, load what the engine
//! asks for through the store's reader threads, run the engine, and commit
//! its writes together with the session's new state and reply (rkyv) through
//! the group-committing writer; only then release the reply (durable before
//! acknowledged).
//!
//! Because every message stores the session, any shard of any node can
//! continue it: a shard without the session (failover, ring change, restart)
//! loads it from the store. A cached copy is trusted only while the MsgIDs
//! follow on from it, and each commit carries
//! [`WriteOp::ExpectSession`](crate::store::WriteOp::ExpectSession): if another
//! node went on with the session meanwhile, nothing is written and the
//! message is retried once from the stored state.
//!
//! The session map lives in the shard that owns the key, so it needs no lock
//! (`RefCell` on a single-threaded executor; never borrowed across an await).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::{EngineConfig, Outcome, Session};
use crate::metrics::FailReason;
use crate::routing;
use crate::service::{ServiceError, SyncRequest, SyncResponse, SyncService};
use crate::sessions::{ActiveSessions, SessionEnd};
use crate::store::{ReadRequest, ReadResponse, StoreError, StoreHandle, WriteBatch, WriteOp};

/// Default idle expiry of a session.
pub const DEFAULT_SESSION_TIMEOUT_SECS: u64 = 15 * 60;

/// The SyncML service of one shard.
pub struct EngineService {
    cfg: Rc<EngineConfig>,
    store: StoreHandle,
    sessions: RefCell<HashMap<u64, Session>>,
    session_timeout: u64,
    last_sweep: Cell<u64>,
    /// Metrics, limits, the active-session table and the session log.
    ops: Rc<ActiveSessions>,
    last_purge: Cell<u64>,
}

/// How often a shard drops expired sessions from the store.
const PURGE_EVERY_SECS: u64 = 300;

impl EngineService {
    /// A service using `store`, with sessions expiring after `session_timeout` idle seconds.
    pub fn new(cfg: EngineConfig, store: StoreHandle, session_timeout: u64) -> EngineService {
        let limits = std::sync::Arc::new(crate::limits::Limits::new(Default::default()));
        let ops = Rc::new(ActiveSessions::new(0, Default::default(), limits));
        EngineService::with_ops(cfg, store, session_timeout, ops)
    }

    /// Like [`EngineService::new`], reporting to the shard's `ops` (metrics, limits, sessions).
    pub fn with_ops(
        cfg: EngineConfig,
        store: StoreHandle,
        session_timeout: u64,
        ops: Rc<ActiveSessions>,
    ) -> EngineService {
        EngineService {
            ops,
            cfg: Rc::new(cfg),
            store,
            sessions: RefCell::new(HashMap::new()),
            session_timeout,
            last_sweep: Cell::new(0),
            last_purge: Cell::new(0),
        }
    }

    /// Number of sessions held by this shard.
    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    fn sweep(&self, now: u64) {
        if now.saturating_sub(self.last_sweep.get()) < 30 {
            return;
        }
        self.last_sweep.set(now);
        let timeout = self.session_timeout;
        self.sessions.borrow_mut().retain(|key, s| {
            let keep = s.last_activity() + timeout > now;
            if !keep {
                tracing::info!(session = %routing::token(*key), device = %s.device_id(), "session expired");
                self.ops.ended(*key, &s.report(), SessionEnd::Failed(FailReason::Expired));
            }
            keep
        });
    }

    /// Whether this message's batch should also drop expired sessions from
    /// the store (every few minutes per shard; the delete is idempotent, so
    /// shards and nodes need not agree on who does it).
    fn purge_due(&self, now: u64) -> bool {
        if now.saturating_sub(self.last_purge.get()) < PURGE_EVERY_SECS {
            return false;
        }
        self.last_purge.set(now);
        true
    }

    /// The stored session `key`, unless absent, expired or unusable.
    async fn load(&self, key: u64, now: u64) -> Result<Option<Session>, ServiceError> {
        let resp = self.store.read(ReadRequest::Session { key }).await.map_err(|e| {
            tracing::error!(error = %e, "store read failed");
            ServiceError::Unavailable(e.to_string())
        })?;
        let ReadResponse::Session(Some(record)) = resp else { return Ok(None) };
        if record.expires_at <= now {
            return Ok(None);
        }
        match Session::from_record(&record) {
            Ok(s) => {
                tracing::info!(session = %routing::token(key), device = %s.device_id(), msg_id = record.last_msg_id, "session continued from the store");
                Ok(Some(s))
            }
            Err(e) => {
                tracing::warn!(session = %routing::token(key), error = %e, "stored session ignored");
                Ok(None)
            }
        }
    }

    async fn process(&self, req: &SyncRequest<'_>) -> Result<SyncResponse, ServiceError> {
        let msg = &req.message;
        let device = msg.hdr.source.loc_uri.trim();
        if device.is_empty() {
            return Err(ServiceError::BadMessage("SyncHdr has no Source/LocURI (device id)".into()));
        }
        let key = routing::session_key(device, msg.hdr.session_id.trim());
        if let Some(tok) = req.token {
            if routing::parse_token(tok) != Some(key) {
                return Err(ServiceError::UnknownSession(format!("token {tok} does not match the message")));
            }
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.sweep(now);
        match self.attempt(req, key, now, false).await {
            // Another node went on with the session since this shard cached
            // it; nothing of ours was written. Once more, from the store.
            Err(Conflict) => match self.attempt(req, key, now, true).await {
                Err(Conflict) => Err(ServiceError::Unavailable(format!(
                    "session {} is being continued elsewhere",
                    routing::token(key)
                ))),
                Ok(r) => r,
            },
            Ok(r) => r,
        }
    }

    /// One try at a message. `Err(Conflict)`: the store says the session
    /// moved on elsewhere; nothing was written.
    async fn attempt(
        &self,
        req: &SyncRequest<'_>,
        key: u64,
        now: u64,
        from_store: bool,
    ) -> Result<Result<SyncResponse, ServiceError>, Conflict> {
        let msg = &req.message;
        let arrived = std::time::Instant::now();
        let msg_id: Option<u64> = msg.hdr.msg_id.trim().parse().ok();
        let cached = self.sessions.borrow_mut().remove(&key).filter(|s| {
            let alive = s.last_activity() + self.session_timeout > now;
            if !alive {
                tracing::info!(session = %routing::token(key), device = %s.device_id(), "session expired");
                self.ops.ended(key, &s.report(), SessionEnd::Failed(FailReason::Expired));
            }
            // A gap in the MsgIDs means other nodes answered the messages
            // between: this copy is stale (DESIGN §4), the store has the session.
            let stale = msg_id.is_some_and(|id| id > s.last_msg_in() + 1);
            alive && !stale && !from_store
        });
        let existing = match cached {
            Some(s) => Some(s),
            None => match self.load(key, now).await {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            },
        };
        let mut session = match existing {
            Some(s) => {
                if let Some(reply) = s.resend(msg) {
                    tracing::info!(session = %routing::token(key), msg_id = %msg.hdr.msg_id, "resend: answering from the stored reply");
                    let body = reply.to_vec();
                    self.sessions.borrow_mut().insert(key, s);
                    return Ok(Ok(SyncResponse { body }));
                }
                if s.is_restart(msg) || msg_id == Some(1) {
                    tracing::info!(session = %routing::token(key), "client restarted the session");
                    self.ops.ended(key, &s.report(), SessionEnd::Failed(FailReason::Restarted));
                    Session::new(key, msg, req.encoding, now)
                } else if msg_id.is_some_and(|id| id > s.last_msg_in() + 1) {
                    tracing::warn!(session = %routing::token(key), msg_id = %msg.hdr.msg_id, last = s.last_msg_in(), "messages of this session are missing");
                    return Ok(Err(ServiceError::UnknownSession(routing::token(key))));
                } else {
                    s
                }
            }
            None => {
                if msg_id != Some(1) {
                    tracing::info!(session = %routing::token(key), msg_id = %msg.hdr.msg_id, "no such session");
                    return Ok(Err(ServiceError::UnknownSession(routing::token(key))));
                }
                tracing::info!(
                    session = %routing::token(key),
                    device = %msg.hdr.source.loc_uri.trim(),
                    session_id = %msg.hdr.session_id.trim(),
                    encoding = ?req.encoding,
                    "session started"
                );
                Session::new(key, msg, req.encoding, now)
            }
        };

        // Auth back-off, before any store access for a session not yet authenticated.
        if let Err(e) = self.ops.check_backoff(session.user().is_some(), msg, req.peer) {
            return Ok(Err(e));
        }
        let report_before = session.report();
        // Load what the engine needs; a few rounds at most (auth, then datastores).
        for _ in 0..4 {
            let reads = session.pending_reads(&self.cfg, msg);
            if reads.is_empty() {
                break;
            }
            for read in reads {
                let resp = match self.store.read(read.clone()).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "store read failed");
                        return Ok(Err(ServiceError::Unavailable(e.to_string())));
                    }
                };
                session.provide(&read, resp);
            }
        }

        let before = session.last_msg_in();
        let step = session.handle(&self.cfg, msg, now, rand::random::<u64>());
        let after = session.report();
        if let Some(busy) = self.ops.admit(key, &report_before, &after, msg, req.encoding) {
            // Over the user's session cap: nothing of this message is written.
            return Ok(Ok(SyncResponse { body: busy }));
        }
        // The session's state and reply go with the message's writes, so any
        // shard of any node can continue it or answer a resend (DESIGN §3.3).
        let mut ops = Vec::with_capacity(step.writes.ops.len() + 2);
        if before > 0 {
            ops.push(WriteOp::ExpectSession { key, last_msg_id: before });
        }
        ops.extend(step.writes.ops);
        if self.purge_due(now) {
            ops.push(WriteOp::PurgeSessions { expired_before: now });
        }
        match step.outcome {
            Outcome::Aborted => ops.push(WriteOp::DeleteSession { key }),
            Outcome::Continue | Outcome::Complete => {
                match session.to_record(now.saturating_add(self.session_timeout)) {
                    Ok(record) => ops.push(WriteOp::PutSession(record)),
                    Err(e) => {
                        tracing::error!(error = %e, session = %routing::token(key), "session state not stored");
                        return Ok(Err(ServiceError::Unavailable(e.to_string())));
                    }
                }
            }
        }
        match self.store.commit(WriteBatch { ops }).await {
            Ok(info) => session.committed(&info),
            Err(StoreError::SessionConflict(_)) => {
                tracing::info!(session = %routing::token(key), "session moved on elsewhere; reloading it");
                return Err(Conflict);
            }
            Err(e) => {
                // Nothing of this message is durable; the client's retry
                // continues from the last stored state.
                session.commit_failed();
                tracing::error!(error = %e, session = %routing::token(key), "commit failed");
                return Ok(Err(ServiceError::Unavailable(e.to_string())));
            }
        }
        match step.outcome {
            Outcome::Continue => {
                self.sessions.borrow_mut().insert(key, session);
            }
            Outcome::Complete => {
                // Not cached: a resend of the last message is answered from
                // the stored record until it expires.
            }
            Outcome::Aborted => {}
        }
        // Metrics, the session log line at the end, the auth failure delay.
        self.ops.step_done(key, &report_before, &after, step.outcome, msg, req.peer, arrived).await;
        Ok(Ok(SyncResponse { body: step.reply }))
    }
}

/// The store refused a message's batch: the session went on elsewhere.
struct Conflict;

impl SyncService for EngineService {
    async fn handle<'a>(&'a self, request: SyncRequest<'a>) -> Result<SyncResponse, ServiceError> {
        self.process(&request).await
    }
}
