//! A worker: one thread with its own epoll reactor (a tokio current-thread
//! runtime running connection tasks on a `LocalSet`), accepting client
//! connections on the shared listen port (SO_REUSEPORT) and forwarding
//! requests to members over its own pool of keep-alive connections. Nothing
//! here is shared between workers except the immutable [`View`] (received
//! over a channel) and atomic counters, so the request path takes no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use super::config::BalanceConfig;
use super::health::Report;
use super::key;
use super::stream::{self, before, ClientIo, Tcp};
use super::view::View;
use crate::http::{
    reason, write_connection_and_end, write_continue, write_response, ConnectionHeader, Phase, RequestHead,
    RequestReader,
};

/// Idle pooled connections kept per member and worker.
const MAX_IDLE_PER_MEMBER: usize = 64;
/// Largest response head accepted from a member.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Read size for a member's response head (SyncML replies usually fit whole).
const RESPONSE_READ: usize = 16 << 10;
/// A response buffer bigger than this is freed after its request.
const MAX_KEPT_RESPONSE_BUF: usize = 64 << 10;
/// Request headers not forwarded (hop-by-hop, or re-framed by us).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// Per-worker state (one executor thread; never shared).
pub(crate) struct Worker {
    pub config: Arc<BalanceConfig>,
    pub listen: SocketAddr,
    views: Receiver<Arc<View>>,
    view: RefCell<Arc<View>>,
    reports: Sender<Report>,
    pool: RefCell<HashMap<SocketAddr, Vec<Tcp>>>,
    pub stop: Arc<AtomicBool>,
    /// TLS acceptor when the balancer serves HTTPS.
    pub tls: Option<crate::tls::Acceptor>,
}

impl Worker {
    pub(crate) fn new(
        config: Arc<BalanceConfig>,
        listen: SocketAddr,
        views: Receiver<Arc<View>>,
        first: Arc<View>,
        reports: Sender<Report>,
        stop: Arc<AtomicBool>,
    ) -> Worker {
        Worker {
            config,
            listen,
            views,
            view: RefCell::new(first),
            reports,
            pool: RefCell::new(HashMap::new()),
            stop,
            tls: None,
        }
    }

    /// The latest published view (drains the channel; never blocks).
    fn view(&self) -> Arc<View> {
        if let Some(v) = self.views.try_iter().last() {
            if v.generation != self.view.borrow().generation {
                // Members may have new addresses: drop idle connections to unknown ones.
                let known: std::collections::HashSet<SocketAddr> = v.members.iter().map(|m| m.addr).collect();
                self.pool.borrow_mut().retain(|a, _| known.contains(a));
            }
            *self.view.borrow_mut() = v;
        }
        self.view.borrow().clone()
    }
}

/// Which listener a connection came in on (see the module documentation
/// of [`super`], "Admin").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The clients' address: `/health`, SyncML `POST`s (and `/metrics` if configured).
    Public,
    /// The operators' address: `/status`, `/route`, `/metrics`, `/admin/*`.
    Admin,
}

/// Accepts until the stop flag is set.
pub(crate) async fn accept_loop(worker: Rc<Worker>, listener: tokio::net::TcpListener, kind: Listener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(stream::accept(&listener).await) }, async {
            while !worker.stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                // The task ends with its connection; nothing waits for it.
                drop(tokio::task::spawn_local(serve(worker.clone(), stream, kind)));
            }
            Some(Err(e)) => {
                // E.g. EMFILE: back off instead of spinning on the ready listener.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[derive(Debug)]
enum UpstreamError {
    Connect,
    Io,
    Timeout,
    Protocol,
}

struct Conn {
    stream: ClientIo,
    reader: RequestReader,
    /// Bytes for the client (responses), written with one send per request.
    out: Vec<u8>,
    /// The listener the connection came in on.
    listener: Listener,
    /// The client's address as sent in X-Forwarded-For (formatted once per connection).
    peer_ip: Option<String>,
    /// The request as sent to a member (reused from request to request).
    upstream: Vec<u8>,
    /// A member's response as read (reused; see [`ResponseBuf`]).
    response: ResponseBuf,
}

/// A read buffer whose bytes stay initialised between requests, so reading
/// a member's response neither allocates nor zeroes memory once warm.
struct ResponseBuf {
    buf: Vec<u8>,
    len: usize,
}

impl ResponseBuf {
    /// Room for at least `want` more bytes after the filled part.
    fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.buf.len() - self.len < want {
            self.buf.resize(self.len + want, 0);
        }
        &mut self.buf[self.len..]
    }

    fn filled(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Frees a buffer a big response grew (idle connections stay small).
    fn reset(&mut self) {
        self.len = 0;
        if self.buf.len() > MAX_KEPT_RESPONSE_BUF {
            self.buf = Vec::new();
        }
    }
}

async fn serve(worker: Rc<Worker>, stream: Tcp, listener: Listener) {
    let peer = stream.peer_addr().ok();
    let stream = match &worker.tls {
        None => ClientIo::Plain(stream),
        Some(acceptor) => {
            let deadline = Instant::now() + worker.config.header_timeout;
            match stream::accept_tls(acceptor, stream, deadline).await {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(peer = ?peer, error = %e, "TLS handshake failed");
                    return;
                }
            }
        }
    };
    let mut conn = Conn {
        stream,
        reader: RequestReader::new(worker.config.limits),
        out: Vec::with_capacity(4096),
        listener,
        peer_ip: peer.map(|p| p.ip().to_string()),
        upstream: Vec::new(),
        response: ResponseBuf { buf: Vec::new(), len: 0 },
    };
    conn.run(&worker).await;
}

impl Conn {
    async fn run(&mut self, w: &Worker) {
        let cfg = &w.config;
        loop {
            // Each phase's deadline starts at its first read (see `read`).
            let mut deadline: Option<Instant> = None;
            let mut in_head = false;
            let head = loop {
                match self.reader.poll_head() {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => return self.fail(e.status(), &e.to_string()).await,
                }
                if self.reader.phase() != Phase::Idle && !in_head {
                    // The first bytes of a head: the header timeout replaces the idle one.
                    in_head = true;
                    deadline = None;
                }
                if self.reader.phase() == Phase::Idle && w.stop.load(Ordering::SeqCst) {
                    return;
                }
                if self.flush().await.is_err() {
                    return;
                }
                let timeout = if in_head { cfg.header_timeout } else { cfg.idle_timeout };
                match self.read(&mut deadline, timeout).await {
                    Ok(()) => {}
                    Err(true) if in_head => return self.fail(408, "request header timeout").await,
                    Err(_) => return,
                }
            };
            if head.has_unknown_expectation() {
                return self.fail(417, "only Expect: 100-continue is supported").await;
            }
            if head.expects_continue() && self.reader.buffered() == 0 {
                write_continue(&mut self.out);
            }
            let mut deadline: Option<Instant> = None;
            let body = loop {
                match self.reader.poll_body() {
                    Ok(Some(b)) => break b,
                    Ok(None) => {}
                    Err(e) => return self.fail(e.status(), &e.to_string()).await,
                }
                if self.flush().await.is_err() {
                    return;
                }
                match self.read(&mut deadline, cfg.body_timeout).await {
                    Ok(()) => {}
                    Err(true) => return self.fail(408, "request body timeout").await,
                    Err(false) => return,
                }
            };
            let keep_alive = head.keep_alive() && !w.stop.load(Ordering::SeqCst);
            let connection = ConnectionHeader::for_request(head.minor_version(), keep_alive);
            self.respond(w, &head, body, connection).await;
            if !keep_alive {
                let _ = self.flush().await;
                let _ = self.stream.shutdown_write().await;
                return;
            }
        }
    }

    async fn respond(&mut self, w: &Worker, head: &RequestHead, body: Vec<u8>, connection: ConnectionHeader) {
        let method = head.method();
        let get = method == "GET" || method == "HEAD";
        let head_only = method == "HEAD";
        let query = head.target().split_once('?').map_or("", |(_, q)| q);
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let admin = self.listener == Listener::Admin;
        let path = head.path();
        let admin_path = matches!(path, "/status" | "/route" | "/metrics") || path.starts_with("/admin/");
        if admin_path && !(admin || (path == "/metrics" && w.config.public_metrics)) {
            // Not on the public listener: the topology and the routing controls are for operators.
            return self.text(404, "not found", connection);
        }
        if admin_path && admin {
            match &w.config.admin_token {
                Some(token) if !token.admits(head.header("authorization")) => {
                    let challenge = [("WWW-Authenticate", "Bearer realm=\"shardsync-balance\"")];
                    return self.text_with(
                        401,
                        "want Authorization: Bearer <admin token>",
                        &challenge,
                        connection,
                    );
                }
                None if path.starts_with("/admin/") => {
                    return self.text(
                        403,
                        "admin changes need an admin token: start the balancer with admin_token_file",
                        connection,
                    );
                }
                _ => {}
            }
        }
        match path {
            "/health" if get => {
                write_response(&mut self.out, 200, Some("text/plain"), &[], connection, b"ok", head_only);
            }
            "/status" if get => {
                let algo = format!("{:?}", w.config.selector.algorithm).to_lowercase();
                let json = w.view().status_json(&w.listen.to_string(), w.config.public_url.as_deref(), &algo);
                write_response(
                    &mut self.out,
                    200,
                    Some("application/json"),
                    &[],
                    connection,
                    json.as_bytes(),
                    head_only,
                );
            }
            "/metrics" if get => {
                let text = w.view().metrics_text();
                let ct = Some(crate::metrics::CONTENT_TYPE);
                write_response(&mut self.out, 200, ct, &[], connection, text.as_bytes(), head_only);
            }
            "/route" if get => {
                // Where a token's session goes (for operators and tests): owner and fallbacks.
                let view = w.view();
                let Some(k) = param("s").as_deref().and_then(crate::routing::parse_token) else {
                    return self.text(400, "want /route?s=<16 hex digits>", connection);
                };
                // `new=1`: where a new session with this key would go (draining members excluded).
                let owner =
                    view.pick(k, param("new").is_some(), |_| false).map(|m| view.members[m].id.clone());
                let all: Vec<&str> =
                    view.serving.candidates(k).map(|m| view.members[m].id.as_str()).collect();
                let json =
                    serde_json::json!({"key": crate::routing::token(k), "member": owner, "candidates": all});
                let json = json.to_string();
                write_response(
                    &mut self.out,
                    200,
                    Some("application/json"),
                    &[],
                    connection,
                    json.as_bytes(),
                    head_only,
                );
            }
            path @ ("/admin/drain" | "/admin/undrain" | "/admin/weight") if method == "POST" => {
                // The admin listener with the token (checked above).
                let Some(member) = param("member") else {
                    return self.text(400, "want ?member=HOST:PORT", connection);
                };
                let report = match path {
                    "/admin/drain" => Report::Drain(member, true),
                    "/admin/undrain" => Report::Drain(member, false),
                    _ => match param("w").and_then(|v| v.parse().ok()) {
                        Some(weight) => Report::Weight(member, weight),
                        None => return self.text(400, "want &w=<weight>", connection),
                    },
                };
                let _ = w.reports.send(report);
                self.text(202, "accepted", connection);
            }
            _ if method == "POST" && !admin => self.proxy(w, head, body, connection).await,
            _ => self.text(404, "not found", connection),
        }
    }

    async fn proxy(&mut self, w: &Worker, head: &RequestHead, body: Vec<u8>, connection: ConnectionHeader) {
        let rk = match key::request_key(head.target(), head.content_type(), &body) {
            Ok(k) => k,
            Err(e) => return self.text(400, &format!("no routing key: {e}"), connection),
        };
        upstream_request(head, &body, self.peer_ip.as_deref(), &mut self.upstream);
        let view = w.view();
        let mut failed: Option<&str> = None;
        // The owner, then (once, if it fails) the next member on another node
        // (a failure usually means the whole node is gone): resends are idempotent.
        for _attempt in 0..2 {
            let skip = |m: usize| failed.is_some_and(|node| view.members[m].node == node);
            let Some(m) = view.pick(rk.key, rk.new_session, skip) else { break };
            let member = &view.members[m];
            member.stats.requests.fetch_add(1, Ordering::Relaxed);
            member.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let result =
                forward(w, member.addr, &self.upstream, &mut self.response, &mut self.out, connection).await;
            self.response.reset();
            member.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            match result {
                Ok(()) => return,
                Err(e) => {
                    member.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(member = %member.id, error = ?e, "member failed; retrying on the next member");
                    let _ = w.reports.send(Report::Failed(member.id.clone()));
                    failed = Some(member.node.as_str());
                }
            }
        }
        self.text(502, "no member could serve the request", connection);
    }

    fn text(&mut self, status: u16, msg: &str, connection: ConnectionHeader) {
        self.text_with(status, msg, &[], connection);
    }

    fn text_with(&mut self, status: u16, msg: &str, extra: &[(&str, &str)], connection: ConnectionHeader) {
        let mut line = msg.replace(['\r', '\n'], " ");
        line.push('\n');
        write_response(
            &mut self.out,
            status,
            Some("text/plain; charset=utf-8"),
            extra,
            connection,
            line.as_bytes(),
            false,
        );
    }

    async fn fail(&mut self, status: u16, msg: &str) {
        self.text(status, msg, ConnectionHeader::Close);
        let _ = self.flush().await;
        let _ = self.stream.shutdown_write().await;
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut r = self.stream.write_all(&self.out).await;
        if r.is_ok() {
            r = self.stream.flush().await;
        }
        self.out.clear();
        r
    }

    /// One read before `deadline` (set to now + `timeout` if not yet set:
    /// one clock read per read); `Err(true)` on timeout, `Err(false)` on EOF/error.
    async fn read(&mut self, deadline: &mut Option<Instant>, timeout: Duration) -> Result<(), bool> {
        let now = Instant::now();
        let deadline = *deadline.get_or_insert(now + timeout);
        if now >= deadline {
            return Err(true);
        }
        match before(deadline, self.stream.read(self.reader.spare())).await {
            None => Err(true),
            Some(Ok(0)) | Some(Err(_)) => Err(false),
            Some(Ok(n)) => {
                self.reader.commit(n);
                Ok(())
            }
        }
    }
}

/// Appends `n` in decimal (no formatting machinery on the request path).
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes the request as sent to a member into `out` (cleared first):
/// hop-by-hop headers dropped, the body re-framed with Content-Length,
/// X-Forwarded-For appended.
fn upstream_request(head: &RequestHead, body: &[u8], peer_ip: Option<&str>, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(head.raw().len() + body.len() + 64);
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff: Option<&[u8]> = None;
    for (name, value) in head.headers() {
        if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(value);
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(ip) = peer_ip {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if let Some(prev) = xff {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(ip.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Sends a request to `addr` over a pooled connection (a stale pooled one is
/// replaced by a fresh one once), reads the answer into `buf` and appends
/// the response for the client to `out` (nothing on error).
async fn forward(
    w: &Worker,
    addr: SocketAddr,
    request: &[u8],
    buf: &mut ResponseBuf,
    out: &mut Vec<u8>,
    connection: ConnectionHeader,
) -> Result<(), UpstreamError> {
    loop {
        let pooled = w.pool.borrow_mut().get_mut(&addr).and_then(Vec::pop);
        let reused = pooled.is_some();
        let mut stream = match pooled {
            Some(s) => s,
            None => Tcp::connect(addr, w.config.connect_timeout).await.map_err(|_| UpstreamError::Connect)?,
        };
        buf.len = 0;
        let mark = out.len();
        let result = exchange(&mut stream, request, w.config.upstream_timeout, buf, out, connection).await;
        if result.is_err() {
            out.truncate(mark);
        }
        match result {
            Ok(keep_alive) => {
                if keep_alive {
                    let mut pool = w.pool.borrow_mut();
                    let idle = pool.entry(addr).or_default();
                    if idle.len() < MAX_IDLE_PER_MEMBER {
                        idle.push(stream);
                    }
                }
                return Ok(());
            }
            // A kept-alive connection the member closed meanwhile: try a fresh one.
            Err((UpstreamError::Io, false)) if reused => continue,
            Err((e, _)) => return Err(e),
        }
    }
}

/// Writes the request, reads one response into `buf` and appends it to
/// `out` as the client gets it: the member's headers minus hop-by-hop ones,
/// re-framed with Content-Length, our Connection header. Returns whether the
/// member keeps the connection open. Errors carry whether any response byte
/// arrived (then the connection was not merely stale).
async fn exchange(
    stream: &mut Tcp,
    request: &[u8],
    timeout: Duration,
    buf: &mut ResponseBuf,
    out: &mut Vec<u8>,
    connection: ConnectionHeader,
) -> Result<bool, (UpstreamError, bool)> {
    // Set at the first read (one clock read per read).
    let mut deadline: Option<Instant> = None;
    stream.write_all(request).await.map_err(|_| (UpstreamError::Io, false))?;
    // Head: relayed into `out` straight from the parsed bytes.
    let (framing, keep_alive, head_len) = loop {
        let got = buf.len > 0;
        if read_some(stream, buf, RESPONSE_READ, (&mut deadline, timeout), got).await? == 0 {
            return Err((UpstreamError::Io, got));
        }
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(buf.filled()) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(502);
                let http10 = resp.version == Some(0);
                let mut length: Option<usize> = None;
                let mut close = http10;
                out.extend_from_slice(b"HTTP/1.1 ");
                push_decimal(out, usize::from(status));
                out.push(b' ');
                out.extend_from_slice(reason(status).as_bytes());
                out.extend_from_slice(b"\r\n");
                for h in resp.headers.iter() {
                    let name = h.name;
                    if name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                    } else if name.eq_ignore_ascii_case("connection") {
                        let has = |token: &[u8]| {
                            h.value.windows(token.len()).any(|w| w.eq_ignore_ascii_case(token))
                        };
                        close = has(b"close") || (http10 && !has(b"keep-alive"));
                    } else if name.eq_ignore_ascii_case("transfer-encoding") {
                        // Members (shardsync) always send Content-Length; no chunked relay.
                        return Err((UpstreamError::Protocol, true));
                    } else if !name.eq_ignore_ascii_case("keep-alive")
                        && !name.eq_ignore_ascii_case("proxy-connection")
                    {
                        out.extend_from_slice(name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(h.value);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                break (length, !close, len);
            }
            Ok(httparse::Status::Partial) if buf.len < MAX_RESPONSE_HEAD => {}
            _ => return Err((UpstreamError::Protocol, true)),
        }
    };
    let keep_alive = match framing {
        Some(len) => {
            while buf.len - head_len < len {
                let want = (len - (buf.len - head_len)).min(1 << 20);
                if read_some(stream, buf, want, (&mut deadline, timeout), true).await? == 0 {
                    return Err((UpstreamError::Io, true));
                }
            }
            buf.len = head_len + len;
            keep_alive
        }
        None => {
            // No length: the body runs to the end of the connection.
            while read_some(stream, buf, 16 << 10, (&mut deadline, timeout), true).await? > 0 {}
            false
        }
    };
    let body = &buf.filled()[head_len..];
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len());
    out.extend_from_slice(b"\r\n");
    write_connection_and_end(out, connection);
    out.extend_from_slice(body);
    Ok(keep_alive)
}

/// Appends what one read (of up to `want` bytes, before the deadline, which
/// is set to now + timeout if unset) brings to `buf`; errors carry whether
/// response bytes had arrived.
async fn read_some(
    stream: &mut Tcp,
    buf: &mut ResponseBuf,
    want: usize,
    (deadline, timeout): (&mut Option<Instant>, Duration),
    got: bool,
) -> Result<usize, (UpstreamError, bool)> {
    let now = Instant::now();
    let deadline = *deadline.get_or_insert(now + timeout);
    if now >= deadline {
        return Err((UpstreamError::Timeout, got));
    }
    let spare = buf.spare(want.max(1));
    let spare_len = spare.len().min(want.max(1));
    match before(deadline, stream.read(&mut spare[..spare_len])).await {
        Some(Ok(n)) => {
            buf.len += n;
            Ok(n)
        }
        None => Err((UpstreamError::Timeout, got)),
        Some(Err(_)) => Err((UpstreamError::Io, got)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Limits;

    #[test]
    fn upstream_request_reframes_and_forwards_for() {
        let mut r = RequestReader::new(Limits::default());
        let raw = b"POST /sync?s=00000000000000ff HTTP/1.1\r\nHost: b\r\nConnection: keep-alive\r\n\
            Transfer-Encoding: chunked\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Type: application/vnd.syncml+xml\r\n\
            Expect: 100-continue\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        r.spare()[..raw.len()].copy_from_slice(raw);
        r.commit(raw.len());
        let head = r.poll_head().unwrap().unwrap();
        let body = r.poll_body().unwrap().unwrap();
        let peer: SocketAddr = "127.0.0.7:5000".parse().unwrap();
        let mut out = Vec::new();
        upstream_request(&head, &body, Some(&peer.ip().to_string()), &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "POST /sync?s=00000000000000ff HTTP/1.1\r\nHost: b\r\nContent-Type: application/vnd.syncml+xml\r\n\
             X-Forwarded-For: 10.0.0.1, 127.0.0.7\r\nContent-Length: 3\r\n\r\nabc"
        );
    }
}

#[cfg(test)]
mod relay_tests {
    use super::*;
    use std::io::{Read, Write};

    /// A member on loopback answering one request per connection with `reply`
    /// (then closing); returns its address and the request it got.
    fn member(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while !got.ends_with(b"\r\n\r\nabc") {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "request cut short");
                got.extend_from_slice(&chunk[..n]);
            }
            s.write_all(reply).unwrap();
            got
        });
        (addr, t)
    }

    /// Runs one `exchange` against a member answering `reply`.
    fn relay(reply: &'static [u8], connection: ConnectionHeader) -> (Result<bool, UpstreamError>, String) {
        let (addr, member) = member(reply);
        let (result, out) = super::super::Reactor::new().unwrap().block_on(async move {
            let mut stream = Tcp::connect(addr, Duration::from_secs(5)).await.unwrap();
            let mut buf = ResponseBuf { buf: Vec::new(), len: 0 };
            let mut out = b"earlier".to_vec();
            let request = b"POST /sync HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
            let r =
                exchange(&mut stream, request, Duration::from_secs(5), &mut buf, &mut out, connection).await;
            (r.map_err(|(e, _)| e), out)
        });
        assert!(member.join().unwrap().starts_with(b"POST /sync HTTP/1.1\r\n"));
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn relays_headers_without_hop_by_hop_and_reframes() {
        let (r, out) = relay(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.syncml+xml\r\nConnection: keep-alive\r\n\
              Keep-Alive: timeout=5\r\nContent-Length: 5\r\nX-Node: a\r\n\r\nhello",
            ConnectionHeader::KeepAlive,
        );
        assert!(r.unwrap(), "the member keeps the connection");
        assert_eq!(
            out,
            "earlierHTTP/1.1 200 OK\r\nContent-Type: application/vnd.syncml+xml\r\nX-Node: a\r\n\
             Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
        );
    }

    #[test]
    fn a_body_without_length_runs_to_the_close() {
        let (r, out) = relay(b"HTTP/1.0 404 Not Found\r\nX-Node: b\r\n\r\nnot here", ConnectionHeader::Close);
        assert!(!r.unwrap(), "an HTTP/1.0 member without keep-alive closes");
        assert_eq!(
            out,
            "earlierHTTP/1.1 404 Not Found\r\nX-Node: b\r\nContent-Length: 8\r\nConnection: close\r\n\r\nnot here"
        );
    }

    #[test]
    fn a_chunked_member_response_is_refused() {
        let (r, _) = relay(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ConnectionHeader::Default,
        );
        assert!(matches!(r, Err(UpstreamError::Protocol)));
    }
}
