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

use crate::engine::endpoint::{self, Admission, Entry, Refusal, SessionSecret, Then};
use crate::engine::{EngineConfig, Outcome, Session};
use crate::logs::Trunc;
use crate::metrics::FailReason;
use crate::routing;
use crate::service::{ServiceError, SyncRequest, SyncResponse, SyncService};
use crate::sessions::{ActiveSessions, SessionEnd};
use crate::store::{ReadRequest, ReadResponse, StoreError, StoreHandle, WriteBatch, WriteOp};
use crate::users::PasswordCheck;

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
    /// Checks basic-auth passwords (argon2id) off the shard.
    passwords: PasswordCheck,
}

/// How often a shard drops expired sessions from its cache.
const SWEEP_EVERY_SECS: u64 = 30;
/// How often a shard drops expired sessions from the store (with the batch
/// of the message at hand; the delete is idempotent, so shards and nodes need
/// not agree on who does it).
const PURGE_EVERY_SECS: u64 = 300;

/// True, and `last` set to `now`, once every `every` seconds.
fn due(last: &Cell<u64>, now: u64, every: u64) -> bool {
    if now.saturating_sub(last.get()) < every {
        return false;
    }
    last.set(now);
    true
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
        // One checking thread per shard, idle unless clients use basic auth.
        let passwords = PasswordCheck::start(1, 64).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot start the password check thread; basic auth will answer 503");
            PasswordCheck::stopped()
        });
        EngineService {
            passwords,
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

    /// Whether a cached session is still within its idle timeout. (A stored
    /// one carries the same deadline as `expires_at`, written with each
    /// message: `last_activity + session_timeout`.)
    fn alive(&self, s: &Session, now: u64) -> bool {
        s.last_activity().saturating_add(self.session_timeout) > now
    }

    fn sweep(&self, now: u64) {
        if !due(&self.last_sweep, now, SWEEP_EVERY_SECS) {
            return;
        }
        self.sessions.borrow_mut().retain(|key, s| {
            let keep = self.alive(s, now);
            if !keep {
                self.expired(*key, s);
            }
            keep
        });
    }

    /// Ends a cached session that sat idle past the timeout.
    fn expired(&self, key: u64, s: &Session) {
        tracing::info!(session = %routing::token(key), device = %s.device_id(), "session expired");
        self.ops.ended(key, &s.report(), SessionEnd::Failed(FailReason::Expired));
    }

    /// The stored session `key`, unless absent, expired or unusable.
    /// The stored session `key` (unless absent, expired or unusable) and the
    /// last MsgID of the record stored under the key (0: none).
    async fn load(&self, key: u64, now: u64) -> Result<(Option<Session>, u64), ServiceError> {
        let resp = self.store.read(ReadRequest::Session { key }).await.map_err(read_failed)?;
        let last = stored_last(&resp);
        Ok((Self::restore(key, resp, now), last))
    }

    /// Message 1 of a session this shard does not hold: the stored session
    /// (a resend after a failover) and, in the same store round trip, what
    /// a fresh session reads first (user and device) and the datastores its
    /// Alerts name (kept only if the credentials verify). `Err(fresh)`: no
    /// stored session; the fresh one has its reads.
    async fn load_or_start(
        &self,
        req: &SyncRequest<'_>,
        key: u64,
        now: u64,
    ) -> Result<(Result<Session, Session>, u64), ServiceError> {
        let msg = &req.message;
        // The auth back-off comes before any store access for a new session.
        self.ops.check_backoff(msg, req.peer)?;
        let mut fresh = self.fresh(req, key, now);
        let first = fresh.pending_reads(&self.cfg, msg);
        let speculative = fresh.speculative_reads(&self.cfg, msg);
        let mut reads = Vec::with_capacity(1 + first.len() + speculative.len());
        reads.push(ReadRequest::Session { key });
        reads.extend(first.iter().cloned());
        reads.extend(speculative.iter().cloned());
        let mut answers = self.store.read_all(reads).await.map_err(read_failed)?.into_iter();
        let mut last = 0;
        let stored = answers.next().and_then(|resp| {
            last = stored_last(&resp);
            Self::restore(key, resp, now)
        });
        if let Some(s) = stored {
            return Ok((Ok(s), last));
        }
        for (read, resp) in first.iter().zip(answers.by_ref()) {
            fresh.provide(read, resp);
        }
        // The datastores only count if the credentials verify; else they are
        // dropped here and read again after a successful retry.
        for (read, resp) in speculative.iter().zip(answers) {
            fresh.provide_if_authentic(&self.cfg, msg, read, resp);
        }
        Ok((Err(fresh), last))
    }

    /// A stored session read back, unless absent, expired or unusable.
    fn restore(key: u64, resp: ReadResponse, now: u64) -> Option<Session> {
        let ReadResponse::Session(Some(record)) = resp else { return None };
        if record.expires_at <= now {
            return None;
        }
        match Session::from_record(&record) {
            Ok(s) => {
                tracing::info!(session = %routing::token(key), device = %s.device_id(), msg_id = record.last_msg_id, "session continued from the store");
                Some(s)
            }
            Err(e) => {
                tracing::warn!(session = %routing::token(key), error = %e, "stored session ignored");
                None
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
        let secret = match req.token.map(|tok| (tok, routing::parse_session_token(tok))) {
            None => None,
            Some((_, Some(t))) if t.key == key => t.secret,
            Some((tok, _)) => {
                self.ops.probe(req.peer);
                tracing::info!(token = %Trunc(tok), device = %Trunc(device), peer = ?req.peer, "refused: token does not name this message's session");
                return Err(ServiceError::UnknownSession(routing::token(key)));
            }
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.sweep(now);
        // Boxed: a try holds whole `Session`s across its awaits, and an
        // unboxed future would make every connection's task that much larger
        // for as long as the connection lives, idle or not.
        let result = match Box::pin(self.attempt(req, key, secret, now, false)).await {
            // Another node went on with the session since this shard cached
            // it; nothing of ours was written. Once more, from the store.
            Err(Attempt::Conflict) => Box::pin(self.attempt(req, key, secret, now, true)).await,
            other => other,
        };
        result.map_err(|e| match e {
            Attempt::Failed(e) => e,
            Attempt::Conflict => ServiceError::Unavailable(format!(
                "session {} is being continued elsewhere",
                routing::token(key)
            )),
        })
    }

    /// Puts a session that this message did not change back into the cache.
    fn keep(&self, key: u64, s: Session) {
        self.sessions.borrow_mut().insert(key, s);
    }

    /// A new session for a message that may start one, bound to a fresh secret.
    fn fresh(&self, req: &SyncRequest<'_>, key: u64, now: u64) -> Session {
        Session::new(key, &req.message, req.encoding, now, fresh_secret())
    }

    /// One try at a message. `Err(Attempt::Conflict)`: the store says the
    /// session moved on elsewhere; nothing was written.
    async fn attempt(
        &self,
        req: &SyncRequest<'_>,
        key: u64,
        secret: Option<SessionSecret>,
        now: u64,
        from_store: bool,
    ) -> Result<SyncResponse, Attempt> {
        let msg = &req.message;
        let arrived = std::time::Instant::now();
        let msg_id: Option<u64> = msg.hdr.msg_id.trim().parse().ok();
        let cached = self.sessions.borrow_mut().remove(&key).filter(|s| {
            let alive = self.alive(s, now);
            if !alive {
                self.expired(key, s);
            }
            // A gap in the MsgIDs means other nodes answered the messages
            // between: this copy is stale (DESIGN §4), the store has the session.
            let stale = msg_id.is_some_and(|id| id > s.last_msg_in() + 1);
            alive && !stale && !from_store
        });
        // A new session's first reads ride along with the store lookup.
        let mut started = None;
        // The last MsgID of the record under the key: what a new session's
        // commit expects to find there (see below).
        let mut stored_last = cached.as_ref().map_or(0, |s| s.last_msg_in());
        let existing = match cached {
            Some(s) => Some(s),
            None if msg_id == Some(1) || msg.hdr.cred.is_some() => {
                let (found, last) = self.load_or_start(req, key, now).await?;
                stored_last = last;
                match found {
                    Ok(stored) => Some(stored),
                    Err(fresh) => {
                        started = Some(fresh);
                        None
                    }
                }
            }
            None => {
                let (found, last) = self.load(key, now).await?;
                stored_last = last;
                found
            }
        };

        // The entry rules: who may do what with the session under this key.
        let entry = Entry { secret, body: req.body };
        let admission = endpoint::admit(existing.as_ref(), msg, &entry);
        let (mut session, replacing) = match (admission, existing) {
            (Admission::Refuse(why), existing) => {
                if let Some(s) = existing {
                    self.keep(key, s);
                }
                if why.is_probe() {
                    self.ops.probe(req.peer);
                }
                tracing::info!(session = %routing::token(key), device = %Trunc(msg.hdr.source.loc_uri.trim()),
                    msg_id = %Trunc(msg.hdr.msg_id.trim()), peer = ?req.peer, reason = %why, "message refused");
                return Err(match why {
                    Refusal::NotAResend | Refusal::BadMsgId => ServiceError::BadMessage(why.to_string()),
                    _ => ServiceError::UnknownSession(routing::token(key)),
                }
                .into());
            }
            (Admission::Resend, Some(s)) => return Ok(self.resend(key, s)),
            (Admission::Prove(then), Some(mut s)) => {
                if let Err(reply) = self.prove(&mut s, req, now, arrived).await? {
                    self.keep(key, s);
                    return Ok(SyncResponse { body: reply });
                }
                match then {
                    Then::Resend => return Ok(self.resend(key, s)),
                    Then::Continue => (s, None),
                }
            }
            (Admission::Continue, Some(s)) => (s, None),
            (Admission::Start, _) => {
                tracing::info!(
                    session = %routing::token(key),
                    device = %Trunc(msg.hdr.source.loc_uri.trim()),
                    session_id = %Trunc(msg.hdr.session_id.trim()),
                    encoding = ?req.encoding,
                    "session started"
                );
                (started.take().unwrap_or_else(|| self.fresh(req, key, now)), None)
            }
            (Admission::Restart, Some(old)) => {
                tracing::info!(session = %routing::token(key), "client starts the session over");
                self.ops.check_backoff(msg, req.peer)?;
                (self.fresh(req, key, now), Some(old))
            }
            // `admit` asks for a session only when there is one.
            (_, None) => return Err(ServiceError::UnknownSession(routing::token(key)).into()),
        };

        let report_before = session.report();
        let was_authenticated = session.is_authenticated();
        // Load what the engine needs; a few rounds at most (auth, then
        // datastores), with the basic password checked off the shard once the
        // user's record is in.
        for _ in 0..4 {
            self.check_basic(&mut session, msg).await?;
            let reads = session.pending_reads(&self.cfg, msg);
            if reads.is_empty() {
                break;
            }
            let answers = self.store.read_all(reads.clone()).await.map_err(read_failed)?;
            for (read, resp) in reads.iter().zip(answers) {
                session.provide(read, resp);
            }
        }
        self.check_basic(&mut session, msg).await?;

        // The commit expects the stored session to be where this message
        // found it: for a new session, the record it replaces (0: none), so
        // that of two new sessions racing for one key only the first is stored.
        let expect = if session.last_msg_in() > 0 { session.last_msg_in() } else { stored_last };
        let step = session.handle(&self.cfg, msg, now, rand::random::<u64>());
        session.set_last_body(req.body);
        if !session.is_authenticated() {
            // A failed login: nothing of it is stored or cached, and a
            // session it meant to replace stays as it was.
            if let Some(old) = replacing {
                self.keep(key, old);
            }
            let stale = session.stale_nonce(&self.cfg, msg, now);
            self.ops.auth_failed(msg, req.peer, arrived, true, stale).await;
            return Ok(SyncResponse { body: step.reply });
        }
        if let Some(old) = replacing {
            if old.user() != session.user() {
                tracing::warn!(session = %routing::token(key), user = %Trunc(session.user().unwrap_or("-")),
                    peer = ?req.peer, "refused: a new session may not replace another user's live session");
                self.keep(key, old);
                return Err(ServiceError::SessionInUse(routing::token(key)).into());
            }
            self.ops.ended(key, &old.report(), SessionEnd::Failed(FailReason::Restarted));
        }
        if !was_authenticated {
            self.ops.auth_succeeded(session.device_id(), req.peer);
        }
        let after = session.report();
        if let Some(busy) = self.ops.admit(key, &report_before, &after, msg, req.encoding) {
            // Over the user's session cap: nothing of this message is written.
            return Ok(SyncResponse { body: busy });
        }
        // The session's state and reply go with the message's writes, so any
        // shard of any node can continue it or answer a resend (DESIGN §3.3).
        let mut ops = Vec::with_capacity(step.writes.ops.len() + 2);
        ops.push(WriteOp::ExpectSession { key, last_msg_id: expect });
        ops.extend(step.writes.ops);
        if due(&self.last_purge, now, PURGE_EVERY_SECS) {
            ops.push(WriteOp::PurgeSessions { expired_before: now });
        }
        match step.outcome {
            Outcome::Aborted => ops.push(WriteOp::DeleteSession { key }),
            Outcome::Continue | Outcome::Complete => {
                match session.to_record(now.saturating_add(self.session_timeout)) {
                    Ok(record) if step.outcome == Outcome::Complete => {
                        ops.push(WriteOp::FinishSession(record))
                    }
                    Ok(record) => ops.push(WriteOp::PutSession(record)),
                    Err(e) => {
                        tracing::error!(error = %e, session = %routing::token(key), "session state not stored");
                        return Err(ServiceError::Unavailable(e.to_string()).into());
                    }
                }
            }
        }
        match self.store.commit(WriteBatch { ops }).await {
            Ok(info) => session.committed(&info),
            Err(StoreError::SessionConflict(_)) => {
                tracing::info!(session = %routing::token(key), "session moved on elsewhere; reloading it");
                return Err(Attempt::Conflict);
            }
            Err(e) => {
                // Nothing of this message is durable; the client's retry
                // continues from the last stored state.
                session.commit_failed();
                tracing::error!(error = %e, session = %routing::token(key), "commit failed");
                return Err(ServiceError::Unavailable(e.to_string()).into());
            }
        }
        // A completed session is not cached: a resend of its last message is
        // answered from the stored record until it expires.
        if step.outcome == Outcome::Continue {
            self.sessions.borrow_mut().insert(key, session);
        }
        // Metrics and the session log line at the end.
        self.ops.step_done(key, &report_before, &after, step.outcome);
        Ok(SyncResponse { body: step.reply })
    }

    /// Answers a resend from the session's stored reply; the session stays as it is.
    fn resend(&self, key: u64, s: Session) -> SyncResponse {
        tracing::info!(session = %routing::token(key), msg_id = s.last_msg_in(), "resend: answering from the stored reply");
        let body = s.stored_reply().to_vec();
        self.keep(key, s);
        SyncResponse { body }
    }

    /// A request reached session `s` without its secret: `Ok(Ok(()))` when
    /// its credentials verify for the session's user; `Ok(Err(reply))`: the
    /// challenge to answer instead (the failure counted and delayed).
    async fn prove(
        &self,
        s: &mut Session,
        req: &SyncRequest<'_>,
        now: u64,
        arrived: std::time::Instant,
    ) -> Result<Result<(), Vec<u8>>, ServiceError> {
        let msg = &req.message;
        self.ops.check_backoff(msg, req.peer)?;
        let reads = s.credential_reads();
        if !reads.is_empty() {
            let answers = self.store.read_all(reads.clone()).await.map_err(read_failed)?;
            for (read, resp) in reads.iter().zip(answers) {
                s.provide(read, resp);
            }
        }
        self.check_basic(s, msg).await?;
        match s.verify_presented(&self.cfg, msg, now) {
            Ok(()) => Ok(Ok(())),
            Err(code) => {
                tracing::info!(session = %routing::token(s.key()), code, peer = ?req.peer,
                    "refused: no session secret and no valid credentials of the session's user");
                let reply = crate::engine::challenge(&self.cfg, msg, req.encoding, code, now);
                self.ops.auth_failed(msg, req.peer, arrived, false, false).await;
                Ok(Err(reply))
            }
        }
    }

    /// Checks the message's basic password against the user's argon2id hash
    /// off the shard, when the session has a verdict to take.
    async fn check_basic(&self, s: &mut Session, msg: &crate::model::SyncMl<'_>) -> Result<(), ServiceError> {
        let Some((password, phc)) = s.basic_to_verify(msg) else { return Ok(()) };
        let ok = self.passwords.verify(password, phc).await.map_err(|e| {
            tracing::warn!(error = %e, "basic credentials not checked");
            ServiceError::Unavailable(e.to_string())
        })?;
        s.basic_verified(msg, ok);
        Ok(())
    }
}

/// The last MsgID of a stored session record, expired or not (0: none).
fn stored_last(resp: &ReadResponse) -> u64 {
    match resp {
        ReadResponse::Session(Some(record)) => record.last_msg_id,
        _ => 0,
    }
}

/// 128 bits from the OS's random source for a new session's secret.
fn fresh_secret() -> SessionSecret {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SessionSecret(bytes)
}

/// A failed store read, logged, as the 503 the client gets.
fn read_failed(e: crate::store::StoreError) -> ServiceError {
    tracing::error!(error = %e, "store read failed");
    ServiceError::Unavailable(e.to_string())
}

/// Why one try at a message did not produce a reply.
enum Attempt {
    /// The store refused the message's batch: the session went on elsewhere.
    Conflict,
    /// The message's answer is this error.
    Failed(ServiceError),
}

impl From<ServiceError> for Attempt {
    fn from(e: ServiceError) -> Attempt {
        Attempt::Failed(e)
    }
}

impl SyncService for EngineService {
    /// Before decoding: the client address's back-off, and a token's secret
    /// against the session this shard holds under its key (a wrong one is
    /// refused as a probe without decoding the body).
    fn precheck(&self, token: Option<&str>, peer: Option<std::net::SocketAddr>) -> Result<(), ServiceError> {
        self.ops.check_address(peer)?;
        let Some(tok) = token.and_then(routing::parse_session_token) else { return Ok(()) };
        let Some(secret) = tok.secret else { return Ok(()) };
        let wrong = self.sessions.borrow().get(&tok.key).is_some_and(|s| !s.secret().ct_eq(&secret));
        if wrong {
            self.ops.probe(peer);
            tracing::info!(session = %routing::token(tok.key), peer = ?peer, "refused before decoding: wrong session secret");
            return Err(ServiceError::UnknownSession(routing::token(tok.key)));
        }
        Ok(())
    }

    async fn handle<'a>(&'a self, request: SyncRequest<'a>) -> Result<SyncResponse, ServiceError> {
        self.process(&request).await
    }
}
