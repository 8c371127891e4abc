//! A worker: one glommio executor accepting client connections on the
//! shared listen port (SO_REUSEPORT) and forwarding requests to members over
//! its own pool of keep-alive connections. Nothing here is shared between
//! workers except the immutable [`View`] (received over a channel) and
//! atomic counters, so the request path takes no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::Timer;

use super::config::BalanceConfig;
use super::health::Report;
use super::key;
use super::view::View;
use crate::http::{
    reason, write_continue, write_response, ConnectionHeader, Phase, RequestHead, RequestReader,
};
use crate::shard::io::Io;

/// Idle pooled connections kept per member and worker.
const MAX_IDLE_PER_MEMBER: usize = 64;
/// Largest response head accepted from a member.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
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
    pool: RefCell<HashMap<SocketAddr, Vec<TcpStream>>>,
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

/// Accepts until the stop flag is set.
pub(crate) async fn accept_loop(worker: Rc<Worker>, listener: TcpListener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            while !worker.stop.load(Ordering::SeqCst) {
                Timer::new(Duration::from_millis(50)).await;
            }
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                glommio::spawn_local(serve(worker.clone(), stream)).detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                Timer::new(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A member's answer, ready to relay.
struct Upstream {
    status: u16,
    /// Headers to relay (hop-by-hop and Content-Length removed).
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    keep_alive: bool,
}

#[derive(Debug)]
enum UpstreamError {
    Connect,
    Io,
    Timeout,
    Protocol,
}

struct Conn {
    stream: Io,
    reader: RequestReader,
    out: Vec<u8>,
    peer: Option<SocketAddr>,
}

async fn serve(worker: Rc<Worker>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let stream = match &worker.tls {
        None => Io::Plain(stream),
        Some(acceptor) => {
            match crate::shard::io::accept_tls(acceptor, stream, worker.config.header_timeout).await {
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
        peer,
    };
    conn.run(&worker).await;
}

impl Conn {
    async fn run(&mut self, w: &Worker) {
        let cfg = &w.config;
        let mut idle_since = Instant::now();
        loop {
            let mut head_since: Option<Instant> = None;
            let head = loop {
                match self.reader.poll_head() {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => return self.fail(e.status(), &e.to_string()).await,
                }
                if self.reader.phase() != Phase::Idle && head_since.is_none() {
                    head_since = Some(Instant::now());
                }
                if self.reader.phase() == Phase::Idle && w.stop.load(Ordering::SeqCst) {
                    return;
                }
                if self.flush().await.is_err() {
                    return;
                }
                let deadline = match head_since {
                    None => idle_since + cfg.idle_timeout,
                    Some(t) => t + cfg.header_timeout,
                };
                match self.read(deadline).await {
                    Ok(()) => {}
                    Err(true) if head_since.is_some() => {
                        return self.fail(408, "request header timeout").await
                    }
                    Err(_) => return,
                }
            };
            let started = Instant::now();
            if head.has_unknown_expectation() {
                return self.fail(417, "only Expect: 100-continue is supported").await;
            }
            if head.expects_continue() && self.reader.buffered() == 0 {
                write_continue(&mut self.out);
            }
            let body = loop {
                match self.reader.poll_body() {
                    Ok(Some(b)) => break b,
                    Ok(None) => {}
                    Err(e) => return self.fail(e.status(), &e.to_string()).await,
                }
                if self.flush().await.is_err() {
                    return;
                }
                match self.read(started + cfg.body_timeout).await {
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
            idle_since = Instant::now();
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
        match head.path() {
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
                // Admin changes only from the local host.
                if !self.peer.is_some_and(|p| p.ip().is_loopback()) {
                    return self.text(403, "admin endpoints answer loopback clients only", connection);
                }
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
            _ if method == "POST" => self.proxy(w, head, body, connection).await,
            _ => self.text(404, "not found", connection),
        }
    }

    async fn proxy(&mut self, w: &Worker, head: &RequestHead, body: Vec<u8>, connection: ConnectionHeader) {
        let rk = match key::request_key(head.target(), head.content_type(), &body) {
            Ok(k) => k,
            Err(e) => return self.text(400, &format!("no routing key: {e}"), connection),
        };
        let request = upstream_request(head, &body, self.peer);
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
            let result = forward(w, member.addr, &request).await;
            member.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            match result {
                Ok(up) => return self.relay(up, connection),
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

    fn relay(&mut self, up: Upstream, connection: ConnectionHeader) {
        use std::io::Write as _;
        let _ = write!(self.out, "HTTP/1.1 {} {}\r\n", up.status, reason(up.status));
        for (n, v) in &up.headers {
            self.out.extend_from_slice(n.as_bytes());
            self.out.extend_from_slice(b": ");
            self.out.extend_from_slice(v);
            self.out.extend_from_slice(b"\r\n");
        }
        let _ = write!(self.out, "Content-Length: {}\r\n", up.body.len());
        match connection {
            ConnectionHeader::Default => {}
            ConnectionHeader::KeepAlive => self.out.extend_from_slice(b"Connection: keep-alive\r\n"),
            ConnectionHeader::Close => self.out.extend_from_slice(b"Connection: close\r\n"),
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(&up.body);
    }

    fn text(&mut self, status: u16, msg: &str, connection: ConnectionHeader) {
        let mut line = msg.replace(['\r', '\n'], " ");
        line.push('\n');
        write_response(
            &mut self.out,
            status,
            Some("text/plain; charset=utf-8"),
            &[],
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

    /// One read before `deadline`; `Err(true)` on timeout, `Err(false)` on EOF/error.
    async fn read(&mut self, deadline: Instant) -> Result<(), bool> {
        let now = Instant::now();
        if now >= deadline {
            return Err(true);
        }
        self.stream.set_read_timeout(Some(deadline - now)).map_err(|_| false)?;
        match self.stream.read(self.reader.spare()).await {
            Ok(0) => Err(false),
            Ok(n) => {
                self.reader.commit(n);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(true),
            Err(_) => Err(false),
        }
    }
}

/// The request as sent to a member: hop-by-hop headers dropped, the body
/// re-framed with Content-Length, X-Forwarded-For appended.
fn upstream_request(head: &RequestHead, body: &[u8], peer: Option<SocketAddr>) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(head.raw().len() + body.len() + 64);
    let _ = write!(out, "{} {} HTTP/1.1\r\n", head.method(), head.target());
    let mut xff: Option<Vec<u8>> = None;
    for (name, value) in head.headers() {
        if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(value.to_vec());
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(ip) = peer.map(|p| p.ip().to_string()) {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if let Some(prev) = xff {
            out.extend_from_slice(&prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(ip.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
    out
}

/// Sends a request to `addr` over a pooled connection (a stale pooled one is
/// replaced by a fresh one once) and reads the answer.
async fn forward(w: &Worker, addr: SocketAddr, request: &[u8]) -> Result<Upstream, UpstreamError> {
    loop {
        let pooled = w.pool.borrow_mut().get_mut(&addr).and_then(Vec::pop);
        let reused = pooled.is_some();
        let mut stream = match pooled {
            Some(s) => s,
            None => {
                let s = TcpStream::connect_timeout(addr, w.config.connect_timeout)
                    .await
                    .map_err(|_| UpstreamError::Connect)?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        match exchange(&mut stream, request, w.config.upstream_timeout).await {
            Ok(up) => {
                if up.keep_alive {
                    let mut pool = w.pool.borrow_mut();
                    let idle = pool.entry(addr).or_default();
                    if idle.len() < MAX_IDLE_PER_MEMBER {
                        idle.push(stream);
                    }
                }
                return Ok(up);
            }
            // A kept-alive connection the member closed meanwhile: try a fresh one.
            Err((UpstreamError::Io, false)) if reused => continue,
            Err((e, _)) => return Err(e),
        }
    }
}

/// Writes the request and reads one response. The flag tells whether any
/// response byte arrived (then the connection was not merely stale).
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    timeout: Duration,
) -> Result<Upstream, (UpstreamError, bool)> {
    let deadline = Instant::now() + timeout;
    stream.write_all(request).await.map_err(|_| (UpstreamError::Io, false))?;
    // Reads go straight into `buf` (no per-request scratch buffer).
    let mut buf: Vec<u8> = Vec::new();
    // Head.
    let (status, headers, framing, keep_alive, head_len) = loop {
        let got = !buf.is_empty();
        let n = read_into(stream, &mut buf, 8 << 10, deadline, got).await?;
        if n == 0 {
            return Err((UpstreamError::Io, got));
        }
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(502);
                let mut length: Option<usize> = None;
                let mut close = resp.version == Some(0);
                let mut relay = Vec::new();
                for h in resp.headers.iter() {
                    let lower = h.name.to_ascii_lowercase();
                    match lower.as_str() {
                        "content-length" => {
                            length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                        }
                        "connection" => {
                            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                            close =
                                v.contains("close") || (resp.version == Some(0) && !v.contains("keep-alive"));
                        }
                        // Members (shardsync) always send Content-Length; no chunked relay.
                        "transfer-encoding" => return Err((UpstreamError::Protocol, true)),
                        "keep-alive" | "proxy-connection" => {}
                        _ => relay.push((h.name.to_string(), h.value.to_vec())),
                    }
                }
                break (status, relay, length, !close, len);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {}
            _ => return Err((UpstreamError::Protocol, true)),
        }
    };
    let mut body = buf.split_off(head_len);
    match framing {
        Some(len) => {
            while body.len() < len {
                let want = (len - body.len()).min(1 << 20);
                if read_into(stream, &mut body, want, deadline, true).await? == 0 {
                    return Err((UpstreamError::Io, true));
                }
            }
            body.truncate(len);
            Ok(Upstream { status, headers, body, keep_alive })
        }
        None => {
            // No length: the body runs to the end of the connection.
            while read_into(stream, &mut body, 16 << 10, deadline, true).await? > 0 {}
            Ok(Upstream { status, headers, body, keep_alive: false })
        }
    }
}

/// Appends up to `want` bytes read before `deadline` to `buf`; errors carry
/// whether response bytes had arrived.
async fn read_into(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    want: usize,
    deadline: Instant,
    got: bool,
) -> Result<usize, (UpstreamError, bool)> {
    let start = buf.len();
    buf.resize(start + want.max(1), 0);
    let r = read_some(stream, &mut buf[start..], deadline, got).await;
    buf.truncate(start + *r.as_ref().unwrap_or(&0));
    r
}

/// One read before `deadline`; errors carry whether response bytes had arrived.
async fn read_some(
    stream: &mut TcpStream,
    chunk: &mut [u8],
    deadline: Instant,
    got: bool,
) -> Result<usize, (UpstreamError, bool)> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err((UpstreamError::Timeout, got));
    }
    stream.set_read_timeout(Some(left)).map_err(|_| (UpstreamError::Io, got))?;
    match stream.read(chunk).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err((UpstreamError::Timeout, got)),
        Err(_) => Err((UpstreamError::Io, got)),
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
        let out = String::from_utf8(upstream_request(&head, &body, Some(peer))).unwrap();
        assert_eq!(
            out,
            "POST /sync?s=00000000000000ff HTTP/1.1\r\nHost: b\r\nContent-Type: application/vnd.syncml+xml\r\n\
             X-Forwarded-For: 10.0.0.1, 127.0.0.7\r\nContent-Length: 3\r\n\r\nabc"
        );
    }
}
