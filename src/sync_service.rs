//! The engine's I/O shell on a shard: session cache, store reads, durable
//! commits, and the hand-off between the HTTP layer and the sans-IO engine.
//!
//! Per message: find the session (by key), answer a resend from the stored
//! reply, load what the engine asks for through the store's reader threads,
//! run the engine, commit its writes through the group-committing writer
//! thread, and only then release the reply (durable before acknowledged).
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
use crate::store::StoreHandle;

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
}

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
        let arrived = std::time::Instant::now();
        self.sweep(now);
        let authenticated = self.sessions.borrow().get(&key).is_some_and(|s| s.user().is_some());
        self.ops.check_backoff(authenticated, msg, req.peer)?;

        let existing = self.sessions.borrow_mut().remove(&key).filter(|s| {
            let alive = s.last_activity() + self.session_timeout > now;
            if !alive {
                tracing::info!(session = %routing::token(key), device = %s.device_id(), "session expired");
                self.ops.ended(key, &s.report(), SessionEnd::Failed(FailReason::Expired));
            }
            alive
        });
        let mut session = match existing {
            Some(s) => {
                if let Some(reply) = s.resend(msg) {
                    tracing::info!(session = %routing::token(key), msg_id = %msg.hdr.msg_id, "resend: answering from the stored reply");
                    let body = reply.to_vec();
                    self.sessions.borrow_mut().insert(key, s);
                    return Ok(SyncResponse { body });
                }
                if s.is_restart(msg) {
                    tracing::info!(session = %routing::token(key), "client restarted the session");
                    self.ops.ended(key, &s.report(), SessionEnd::Failed(FailReason::Restarted));
                    Session::new(key, msg, req.encoding, now)
                } else {
                    s
                }
            }
            None => {
                let first = msg.hdr.msg_id.trim() == "1";
                if req.token.is_some() && !first {
                    return Err(ServiceError::UnknownSession(routing::token(key)));
                }
                Session::new(key, msg, req.encoding, now)
            }
        };

        let before = session.report();
        // Load what the engine needs; a few rounds at most (auth, then datastores).
        for _ in 0..4 {
            let reads = session.pending_reads(&self.cfg, msg);
            if reads.is_empty() {
                break;
            }
            for read in reads {
                let resp = self.store.read(read.clone()).await.map_err(|e| {
                    tracing::error!(error = %e, "store read failed");
                    self.ops.ended(key, &session.report(), SessionEnd::Failed(FailReason::Store));
                    ServiceError::Unavailable(e.to_string())
                })?;
                session.provide(&read, resp);
            }
        }

        let step = session.handle(&self.cfg, msg, now, rand::random::<u64>());
        let after = session.report();
        if let Some(busy) = self.ops.admit(key, &before, &after, msg, req.encoding) {
            // Over the user's session cap: nothing of this message is written.
            return Ok(SyncResponse { body: busy });
        }
        if !step.writes.ops.is_empty() {
            match self.store.commit(step.writes).await {
                Ok(info) => session.committed(&info),
                Err(e) => {
                    // Nothing of this message is durable; the session cannot
                    // continue consistently. The client's retry starts over.
                    session.commit_failed();
                    tracing::error!(error = %e, session = %routing::token(key), "commit failed");
                    self.ops.ended(key, &after, SessionEnd::Failed(FailReason::Store));
                    return Err(ServiceError::Unavailable(e.to_string()));
                }
            }
        }
        tracing::debug!(session = %routing::token(key), datastores = %step.summary, "message handled");
        match step.outcome {
            Outcome::Continue => {
                self.sessions.borrow_mut().insert(key, session);
            }
            Outcome::Complete => {
                // Kept until expiry so a resend of the last message is answered.
                self.sessions.borrow_mut().insert(key, session);
            }
            Outcome::Aborted => {}
        }
        // Metrics, the session log line at the end, the auth failure delay.
        self.ops.step_done(key, &before, &after, step.outcome, msg, req.peer, arrived).await;
        Ok(SyncResponse { body: step.reply })
    }
}

impl SyncService for EngineService {
    async fn handle<'a>(&'a self, request: SyncRequest<'a>) -> Result<SyncResponse, ServiceError> {
        self.process(&request).await
    }
}
