//! One connection on a shard: read deadlines, routes, hand-over, responses.
//!
//! Every connection is its own task, and every timeout covers a whole phase
//! (head, body, idle) rather than one read, so a client that trickles one
//! byte per second holds only its own task, and only until the deadline.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::deadline::Deadline;
use super::io::Io;
use super::mesh::{Handoff, Outcome};
use super::{catching, catching_sync, panic_message, PanicPayload, PortKind, Shard};
use crate::http::{
    write_continue, write_response, BodyFraming, ConnectionHeader, Phase, RequestHead, RequestReader,
};
use crate::model::{Encoding, SyncMl};
use crate::routing;
use crate::server::{self, DecodeError};
use crate::service::{ServiceError, SyncRequest, SyncService};

/// The client's address: the peer, or the last X-Forwarded-For entry when
/// the peer is a trusted proxy (the balancer appends the address it saw).
fn client_addr(
    head: &RequestHead,
    peer: Option<SocketAddr>,
    trusted: &[std::net::IpAddr],
) -> Option<SocketAddr> {
    let p = peer?;
    if !trusted.contains(&p.ip()) {
        return Some(p);
    }
    let forwarded = head
        .header("x-forwarded-for")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok());
    Some(forwarded.map_or(p, |ip| SocketAddr::new(ip, 0)))
}

/// After an error response, how long unread request bytes are drained before
/// closing (closing with unread data makes the kernel send RST, which can
/// destroy the response before the client reads it).
const LINGER: Duration = Duration::from_millis(1000);

/// Reply buffer capacity an idle connection may keep (larger ones are freed after the write).
const OUT_KEEP: usize = 16 << 10;

const UNSUPPORTED_TYPE: &str =
    "content type must be application/vnd.syncml+xml or application/vnd.syncml+wbxml";

/// What a request head asks for.
#[derive(Debug)]
enum Route {
    Sync(Encoding),
    Health,
    Shards,
    Metrics,
    Reject { status: u16, reason: &'static str, allow: Option<&'static str> },
}

fn route(head: &RequestHead, sync_path: &str) -> Route {
    if head.has_unknown_expectation() {
        return Route::Reject { status: 417, reason: "only Expect: 100-continue is supported", allow: None };
    }
    let method = head.method();
    match head.path() {
        path @ ("/health" | "/shards" | "/metrics") => {
            if method != "GET" && method != "HEAD" {
                Route::Reject { status: 405, reason: "method not allowed", allow: Some("GET, HEAD") }
            } else if path == "/health" {
                Route::Health
            } else if path == "/metrics" {
                Route::Metrics
            } else {
                Route::Shards
            }
        }
        path if path == "/sync" || path == sync_path => {
            if method != "POST" {
                return Route::Reject {
                    status: 405,
                    reason: "SyncML requests use POST",
                    allow: Some("POST"),
                };
            }
            match head.content_type().and_then(Encoding::from_content_type) {
                Some(enc) => Route::Sync(enc),
                None => Route::Reject { status: 415, reason: UNSUPPORTED_TYPE, allow: None },
            }
        }
        _ => Route::Reject { status: 404, reason: "not found", allow: None },
    }
}

enum ReadEnd {
    Eof,
    TimedOut,
    Stopped,
    Failed,
}

struct Conn {
    stream: Io,
    deadline: Rc<Deadline>,
    reader: RequestReader,
    out: Vec<u8>,
    peer: Option<SocketAddr>,
    kind: PortKind,
    /// The shard's metrics (for statuses of responses that end the connection).
    metrics: Option<std::sync::Arc<crate::metrics::ShardMetrics>>,
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve<S: SyncService>(shard: Rc<Shard<S>>, stream: TcpStream, kind: PortKind) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(shard.config.write_timeout));
    let stream = match &shard.tls {
        None => Io::Plain(stream),
        Some(acceptor) => match super::io::accept_tls(acceptor, stream, shard.config.header_timeout).await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(shard = shard.id, peer = ?peer, error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    let mut conn = Conn {
        stream,
        deadline: shard.deadlines.register(),
        reader: RequestReader::new(shard.config.limits),
        out: Vec::new(),
        peer,
        kind,
        metrics: Some(shard.metrics.clone()),
    };
    conn.run(&shard).await;
}

/// What became of a connection after a response.
enum Flow {
    /// Keep reading requests.
    KeepAlive,
    /// The connection was closed.
    Closed,
    /// The connection moved to another shard.
    Migrated,
}

/// A plain connection moving to the shard that owns the session of the
/// request just read on it.
///
/// Clients send a session's messages on one keep-alive connection, so
/// moving the connection once (instead of handing over each message and its
/// answer) leaves one cross-shard message per session where there were
/// two per message. The socket moves as a duplicated descriptor: the origin
/// drops its own copy without further I/O, the owner registers the
/// duplicate with its own reactor and goes on with the buffered bytes.
#[derive(Debug)]
pub(crate) struct Migration {
    fd: OwnedFd,
    kind: PortKind,
    /// The connection's framer with whatever the client pipelined after the request.
    reader: RequestReader,
    head: RequestHead,
    /// The request (its `peer` is the client address the origin worked out).
    job: Handoff,
}

/// A second descriptor of the connection's socket (`F_DUPFD_CLOEXEC`).
#[allow(unsafe_code)]
fn duplicate(tcp: &TcpStream) -> std::io::Result<OwnedFd> {
    // SAFETY: the descriptor belongs to `tcp`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
    fd.try_clone_to_owned()
}

/// The glommio stream of a moved socket, registered with this shard's reactor.
#[allow(unsafe_code)]
fn restore(fd: OwnedFd) -> TcpStream {
    // SAFETY: `into_raw_fd` hands over an open socket descriptor that nothing else owns.
    unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
}

/// Serves a connection that another shard moved here: first the request it
/// brought, then the connection's next requests.
pub(crate) async fn adopt<S: SyncService>(shard: Rc<Shard<S>>, moved: Migration) {
    let stream = restore(moved.fd);
    shard.metrics.migrations_adopted.inc();
    // TCP_NODELAY is a socket option and came along; the write timeout is
    // glommio's per-stream state and did not.
    let _ = stream.set_write_timeout(Some(shard.config.write_timeout));
    // The peer address: the socket's own (the job's may be a forwarded one).
    let peer = stream.peer_addr().ok();
    let mut conn = Conn {
        stream: Io::Plain(stream),
        deadline: shard.deadlines.register(),
        reader: moved.reader,
        out: Vec::new(),
        peer,
        kind: moved.kind,
        metrics: Some(shard.metrics.clone()),
    };
    let started = Instant::now();
    let route = route(&moved.head, &shard.sync_path);
    if let Flow::KeepAlive = conn.respond(&shard, moved.head, route, moved.job.body, started).await {
        conn.run(&shard).await;
    }
}

/// Logs and counts a panic caught at the request boundary (DESIGN §3.12).
fn panicked<S>(shard: &Shard<S>, peer: Option<SocketAddr>, stage: &str, payload: &PanicPayload) -> Outcome {
    shard.metrics.panics.inc();
    tracing::error!(
        shard = shard.id,
        peer = ?peer,
        stage,
        panic = panic_message(payload),
        "request panicked; answered 500, nothing of it was stored"
    );
    Outcome::Panicked
}

/// Decodes a body behind a panic boundary: a decoder bug costs one 500, not the shard.
fn guarded_decode<'a, S>(
    shard: &Shard<S>,
    encoding: Encoding,
    body: &'a [u8],
    peer: Option<SocketAddr>,
) -> Result<Result<SyncMl<'a>, DecodeError>, Outcome> {
    catching_sync(|| server::decode(encoding, body)).map_err(|p| panicked(shard, peer, "decode", &p))
}

/// Serves a request handed over by another shard.
pub(crate) async fn serve_owned<S: SyncService>(shard: &Shard<S>, job: Handoff) -> Outcome {
    serve_local(shard, &job.body, job.encoding, job.token.as_deref(), job.peer).await
}

/// Checks (before decoding), decodes and runs a SyncML request on this shard's service.
async fn serve_local<S: SyncService>(
    shard: &Shard<S>,
    body: &[u8],
    encoding: Encoding,
    token: Option<&str>,
    peer: Option<SocketAddr>,
) -> Outcome {
    // The address's back-off and the session secret, before any decoding.
    if let Err(e) = shard.service.precheck(token, peer) {
        return Outcome::Service(e);
    }
    let decoded = match guarded_decode(shard, encoding, body, peer) {
        Ok(d) => d,
        Err(outcome) => return outcome,
    };
    let message = match decoded {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(shard = shard.id, peer = ?peer, error = %e, "undecodable SyncML body");
            return match e {
                DecodeError::NotBuiltIn(_) => Outcome::Unsupported(e.to_string()),
                DecodeError::Invalid(_) => Outcome::Decode(e.to_string()),
                DecodeError::TooLarge(_) => Outcome::TooLarge(e.to_string()),
            };
        }
    };
    let request = SyncRequest { message, encoding, token, body_len: body.len(), body, peer, shard: shard.id };
    // The engine is synchronous code inside this future: a panic in any poll
    // of it (reads, `handle`, `committed`) unwinds to here. The future is
    // then dropped, and with it the session the service had taken out of its
    // cache, so the client's retry continues from the stored state.
    match catching(shard.service.handle(request)).await {
        Ok(Ok(reply)) => Outcome::Reply(reply.body),
        Ok(Err(e)) => Outcome::Service(e),
        Err(p) => panicked(shard, peer, "service", &p),
    }
}

impl Conn {
    async fn run<S: SyncService>(&mut self, shard: &Shard<S>) {
        let cfg = &shard.config;
        let mut idle_since = Instant::now();
        loop {
            // ---- request head (idle deadline until a byte arrives, then the header deadline)
            let mut head_since: Option<Instant> = None;
            let head = loop {
                match self.reader.poll_head() {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => return self.fail(e.status(), &e.to_string()).await,
                }
                if self.reader.phase() == Phase::Idle {
                    if shard.stopping() {
                        let _ = self.flush().await;
                        return;
                    }
                } else if head_since.is_none() {
                    head_since = Some(Instant::now());
                }
                if self.flush().await.is_err() {
                    return;
                }
                let (deadline, stoppable) = match head_since {
                    None => (idle_since + cfg.idle_timeout, true),
                    Some(t) => (t + cfg.header_timeout, false),
                };
                match self.read(shard, deadline, stoppable).await {
                    Ok(()) => {
                        if head_since.is_none() && self.reader.phase() != Phase::Idle {
                            head_since = Some(Instant::now());
                        }
                    }
                    Err(ReadEnd::TimedOut) if head_since.is_some() => {
                        return self.fail(408, "request header timeout").await;
                    }
                    // Idle timeout, shutdown, peer gone: just close.
                    Err(_) => return,
                }
            };

            // ---- request body
            let started = Instant::now();
            let route = route(&head, &shard.sync_path);
            let rejected = matches!(route, Route::Reject { .. });
            let has_body = head.framing() != BodyFraming::None;
            if has_body && head.expects_continue() && self.reader.buffered() == 0 {
                if rejected {
                    // The client waits for our word before sending the body:
                    // answer now and close rather than read a body we refuse.
                    if let Route::Reject { status, reason, allow } = route {
                        self.write_text(status, reason, allow, ConnectionHeader::Close, false);
                    }
                    let _ = self.flush().await;
                    return self.linger_close().await;
                }
                write_continue(&mut self.out);
            }
            let body_deadline = started + cfg.body_timeout;
            let body = loop {
                match self.reader.poll_body() {
                    Ok(Some(b)) => break b,
                    Ok(None) => {}
                    Err(e) => return self.fail(e.status(), &e.to_string()).await,
                }
                if self.flush().await.is_err() {
                    return;
                }
                match self.read(shard, body_deadline, false).await {
                    Ok(()) => {}
                    Err(ReadEnd::TimedOut) => return self.fail(408, "request body timeout").await,
                    Err(_) => return,
                }
            };

            // ---- response
            match self.respond(shard, head, route, body, started).await {
                Flow::KeepAlive => idle_since = Instant::now(),
                Flow::Closed | Flow::Migrated => return,
            }
        }
    }

    /// Answers one request whose head and body have been read.
    async fn respond<S: SyncService>(
        &mut self,
        shard: &Shard<S>,
        mut head: RequestHead,
        route: Route,
        body: Vec<u8>,
        started: Instant,
    ) -> Flow {
        let cfg = &shard.config;
        let mut keep_alive = head.keep_alive() && !shard.stopping();
        let connection = ConnectionHeader::for_request(head.minor_version(), keep_alive);
        let head_only = head.method() == "HEAD";
        let mut owner = shard.id;
        let status = match route {
            Route::Reject { status, reason, allow } => {
                self.write_text(status, reason, allow, connection, head_only);
                status
            }
            // Any shard answers for the node: a node with a dead shard loses
            // that shard's sessions' hand-overs, so it is not healthy.
            Route::Health => match shard.node_metrics.dead_shards(crate::metrics::HEARTBEAT_STALE) {
                exited if exited.is_empty() => {
                    write_response(&mut self.out, 200, Some("text/plain"), &[], connection, b"ok", head_only);
                    200
                }
                exited => {
                    let reason = format!("shard(s) not running: {exited:?}");
                    self.write_text(503, &reason, None, connection, head_only);
                    503
                }
            },
            Route::Metrics => {
                let text = shard.node_metrics.render();
                let ct = Some(crate::metrics::CONTENT_TYPE);
                write_response(&mut self.out, 200, ct, &[], connection, text.as_bytes(), head_only);
                200
            }
            Route::Shards => match shard.topology.get() {
                Some(json) => {
                    let ct = Some("application/json");
                    write_response(&mut self.out, 200, ct, &[], connection, json.as_bytes(), head_only);
                    200
                }
                None => {
                    self.write_text(503, "starting up", None, connection, head_only);
                    503
                }
            },
            Route::Sync(encoding) => {
                let answer_started = Instant::now();
                let client = client_addr(&head, self.peer, &cfg.trusted_proxies);
                let token = routing::token_from_target(head.target());
                // DESIGN §4: only the shared port routes by key; a shard's own port is served here.
                let routed = self.kind == PortKind::Shared && shard.shards > 1;
                let token_key = token.and_then(routing::parse_token);
                // Without a token the SyncHdr names the session: read from the
                // header alone (as the balancer does), so the body is decoded
                // only by its owner, after the checks that come before decoding.
                let outcome = 'outcome: {
                    if routed {
                        let scanned = catching_sync(|| {
                            crate::balancer::key::scan(encoding, &body).ok().map(|ids| ids.key())
                        });
                        let header_key = match scanned {
                            Ok(k) => k,
                            // The scanner panicked: answered here, never handed over.
                            Err(p) => break 'outcome panicked(shard, client, "header scan", &p),
                        };
                        if let Some(key) = token_key.or(header_key) {
                            owner = routing::jump_hash(key, shard.shards as u32) as usize;
                        }
                    }
                    if owner == shard.id {
                        break 'outcome serve_local(shard, &body, encoding, token, client).await;
                    }
                    let job = Handoff { body, encoding, token: token.map(str::to_owned), peer: client };
                    // A plain connection moves to the owner with its request,
                    // so the session's next messages on it need no hand-over.
                    let job = match self.migrate(shard, owner, head, job).await {
                        Ok(()) => return Flow::Migrated,
                        Err(back) => {
                            head = back.0;
                            back.1
                        }
                    };
                    shard.metrics.handoffs_sent.inc();
                    shard.metrics.handoffs_waiting.add(1);
                    let outcome = shard.mesh.call(owner, job).await;
                    shard.metrics.handoffs_waiting.add(-1);
                    outcome
                };
                if matches!(outcome, Outcome::Reply(_)) {
                    shard.metrics.message(encoding, answer_started.elapsed());
                }
                // Shutdown may have begun while the service worked: then say close.
                keep_alive = keep_alive && !shard.stopping();
                let connection = ConnectionHeader::for_request(head.minor_version(), keep_alive);
                self.write_outcome(outcome, encoding, connection)
            }
        };
        shard.metrics.http_status(status);
        tracing::debug!(
            shard = shard.id,
            peer = ?self.peer,
            method = head.method(),
            target = head.target(),
            status,
            owner,
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
        if !keep_alive {
            let _ = self.flush().await;
            let _ = self.stream.shutdown_write().await;
            return Flow::Closed;
        }
        Flow::KeepAlive
    }

    /// Moves this connection, with the request just read, to shard `owner`
    /// (see [`Migration`]). `Err` gives the request back when the connection
    /// cannot move (TLS, a failed `dup`, the owner not accepting); the caller
    /// then hands the request over instead. On `Ok` this task must drop the
    /// connection without touching the socket again.
    async fn migrate<S: SyncService>(
        &mut self,
        shard: &Shard<S>,
        owner: usize,
        head: RequestHead,
        job: Handoff,
    ) -> Result<(), (RequestHead, Handoff)> {
        // A TLS session's state lives in this task; such requests are handed over.
        if !shard.config.migrate_connections || !matches!(self.stream, Io::Plain(_)) {
            return Err((head, job));
        }
        // Answers to earlier pipelined requests go out first, from here.
        if self.flush().await.is_err() {
            return Err((head, job));
        }
        let Io::Plain(tcp) = &self.stream else { return Err((head, job)) };
        let fd = match duplicate(tcp) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "dup of a connection failed; handing the request over");
                return Err((head, job));
            }
        };
        let limits = *self.reader.limits();
        let reader = std::mem::replace(&mut self.reader, RequestReader::new(limits));
        let moving = Migration { fd, kind: self.kind, reader, head, job };
        match shard.mesh.adopt(owner, moving).await {
            Ok(()) => {
                shard.metrics.migrations_sent.inc();
                Ok(())
            }
            Err(back) => {
                self.reader = back.reader;
                Err((back.head, back.job))
            }
        }
    }

    fn write_outcome(&mut self, outcome: Outcome, encoding: Encoding, connection: ConnectionHeader) -> u16 {
        match outcome {
            Outcome::Reply(body) => {
                let ct = Some(encoding.content_type());
                write_response(&mut self.out, 200, ct, &[], connection, &body, false);
                200
            }
            Outcome::Service(ServiceError::Backoff(secs)) => {
                let retry = secs.to_string();
                let ct = Some("text/plain; charset=utf-8");
                let line = format!("{}\n", ServiceError::Backoff(secs));
                write_response(
                    &mut self.out,
                    429,
                    ct,
                    &[("Retry-After", &retry)],
                    connection,
                    line.as_bytes(),
                    false,
                );
                429
            }
            Outcome::Service(e) => {
                let status = e.http_status();
                self.write_text(status, &e.to_string(), None, connection, false);
                status
            }
            Outcome::Decode(msg) => {
                self.write_text(400, &format!("malformed SyncML message: {msg}"), None, connection, false);
                400
            }
            Outcome::TooLarge(msg) => {
                self.write_text(413, &format!("SyncML message too large: {msg}"), None, connection, false);
                413
            }
            Outcome::Unsupported(msg) => {
                self.write_text(415, &msg, None, connection, false);
                415
            }
            Outcome::Unavailable(msg) => {
                self.write_text(503, &msg, None, connection, false);
                503
            }
            // The panic message stays in the log: it may quote internal state.
            Outcome::Panicked => {
                self.write_text(500, "internal server error", None, connection, false);
                500
            }
        }
    }

    /// A one-line plain-text response.
    fn write_text(
        &mut self,
        status: u16,
        reason: &str,
        allow: Option<&str>,
        connection: ConnectionHeader,
        head_only: bool,
    ) {
        let mut line = reason.replace(['\r', '\n'], " ");
        line.push('\n');
        let allow_header = allow.map(|a| [("Allow", a)]);
        let extra: &[(&str, &str)] = allow_header.as_ref().map_or(&[], |h| &h[..]);
        let ct = Some("text/plain; charset=utf-8");
        write_response(&mut self.out, status, ct, extra, connection, line.as_bytes(), head_only);
    }

    /// Answers an error that ends the connection, then closes it.
    async fn fail(&mut self, status: u16, reason: &str) {
        if let Some(m) = &self.metrics {
            m.http_status(status);
        }
        tracing::debug!(peer = ?self.peer, status, reason, "closing connection after error");
        self.write_text(status, reason, None, ConnectionHeader::Close, false);
        if self.flush().await.is_ok() {
            self.linger_close().await;
        }
    }

    /// Half-closes, then drains what the client still sends for a short while.
    async fn linger_close(&mut self) {
        let _ = self.stream.shutdown_write().await;
        let deadline = Instant::now() + LINGER;
        let mut scratch = vec![0u8; 16 << 10];
        loop {
            let now = Instant::now();
            if now >= deadline || self.stream.set_read_timeout(Some(deadline - now)).is_err() {
                return;
            }
            match self.stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut r = self.stream.write_all(&self.out).await;
        if r.is_ok() {
            // TLS buffers records: push them out.
            r = self.stream.flush().await;
        }
        self.out.clear();
        if self.out.capacity() > OUT_KEEP {
            // A big reply's buffer is not kept by an idle connection.
            self.out = Vec::new();
        }
        r
    }

    /// One read with the phase deadline; `stoppable` reads also end at shutdown.
    async fn read<S>(&mut self, shard: &Shard<S>, deadline: Instant, stoppable: bool) -> Result<(), ReadEnd> {
        if Instant::now() >= deadline {
            return Err(ReadEnd::TimedOut);
        }
        // The shard's sweeper wakes us when the deadline passes (or at
        // shutdown while idle); see `deadline.rs` for why not a timer per read.
        self.deadline.arm(deadline, stoppable);
        let read = self.stream.read(self.reader.spare());
        let expired = self.deadline.expired();
        let result = futures_lite::future::or(async { Some(read.await) }, async {
            expired.await;
            None
        })
        .await;
        self.deadline.disarm();
        let Some(result) = result else {
            return Err(if stoppable && shard.stopping() { ReadEnd::Stopped } else { ReadEnd::TimedOut });
        };
        match result {
            Ok(0) => Err(ReadEnd::Eof),
            Ok(n) => {
                self.reader.commit(n);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(ReadEnd::TimedOut),
            Err(_) => Err(ReadEnd::Failed),
        }
    }
}
