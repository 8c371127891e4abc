//! The server over real sockets: hand-over between shards, every HTTP limit,
//! keep-alive, pipelining, chunked bodies, 100-continue, graceful shutdown.
//! Each test starts its own in-process server on ephemeral loopback ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use shardsync::config::Config;
use shardsync::routing;
use shardsync::server::{self, ServerHandle, ShardContext};
use shardsync::service::{ServiceError, SyncRequest, SyncResponse, SyncService};

const XML: &str = "application/vnd.syncml+xml";

/// A minimal valid SyncML message from `device` in session `session`;
/// `marker` lands in LocName (the test service looks for SLOW and GONE).
fn syncml(device: &str, session: &str, marker: &str) -> String {
    format!(
        "<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto>\
         <SessionID>{session}</SessionID><MsgID>1</MsgID><Target><LocURI>http://t/sync</LocURI></Target>\
         <Source><LocURI>{device}</LocURI><LocName>{marker}</LocName></Source></SyncHdr>\
         <SyncBody><Final/></SyncBody></SyncML>"
    )
}

fn body() -> String {
    syncml("dev-1", "1", "x")
}

/// Answers `shard=<id> token=<token> len=<body length>`; a body containing
/// `SLOW` takes 300 ms, one containing `GONE` gets UnknownSession (404),
/// `PANIC` panics inside the request and `KILL` panics in a detached task.
struct WhoAmI {
    shard: usize,
}

impl SyncService for WhoAmI {
    async fn handle<'a>(&'a self, req: SyncRequest<'a>) -> Result<SyncResponse, ServiceError> {
        assert_eq!(req.shard, self.shard);
        let text = String::from_utf8_lossy(req.body);
        if text.contains("GONE") {
            return Err(ServiceError::UnknownSession("no such session".into()));
        }
        if text.contains("PANIC") {
            // A bug in the engine, as the request boundary sees it.
            panic!("test service panics on request");
        }
        if text.contains("KILL") {
            // A bug outside any request boundary: a detached task's panic
            // unwinds into the executor and ends the shard's thread.
            // After a pause, so that the executor's own loop polls it.
            glommio::spawn_local(async {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                panic!("test task panics outside a request")
            })
            .detach();
        }
        if text.contains("SLOW") {
            glommio::timer::sleep(Duration::from_millis(300)).await;
        }
        let body = format!("shard={} token={} len={}", self.shard, req.token.unwrap_or("-"), req.body_len);
        Ok(SyncResponse { body: body.into_bytes() })
    }
}

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        shard_port_base: Some(0),
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        shutdown_grace: Duration::from_secs(5),
        pin: false,
        ..Config::default()
    }
}

fn start(config: Config) -> ServerHandle {
    server::start(config, |ctx: ShardContext| WhoAmI { shard: ctx.shard }).expect("server starts")
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The next response answers HEAD: it has no body.
    head_only: bool,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client { stream, buf: Vec::new(), head_only: false }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response, or `None` if the server closed first.
    fn response(&mut self) -> Option<Resp> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = r.parse(&self.buf) {
                let status = r.code.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let cl: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let cl = if status == 100 || self.head_only { 0 } else { cl };
                while self.buf.len() < len + cl {
                    if !self.fill() {
                        return None;
                    }
                }
                let body = self.buf[len..len + cl].to_vec();
                self.buf.drain(..len + cl);
                return Some(Resp { status, headers, body });
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// True when the server closed the connection (EOF) within the read timeout.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0)) || matches!(self.stream.read(&mut b), Ok(0))
    }
}

fn post(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: {XML}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn roundtrip(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.response().expect("a response")
}

fn assert_serving(addr: SocketAddr) {
    let r = roundtrip(addr, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

/// A token whose owner among `shards` is `owner`.
fn token_for(owner: usize, shards: u32) -> String {
    (1u64..)
        .map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .find(|&k| routing::jump_hash(k, shards) as usize == owner)
        .map(routing::token)
        .unwrap()
}

#[test]
fn shared_port_routes_to_owner_and_own_port_serves_locally() {
    let h = start(config());
    let shared = h.listen_addr();
    for owner in 0..2 {
        let token = token_for(owner, 2);
        // New connections land on either shard (SO_REUSEPORT); the owner always answers.
        for _ in 0..16 {
            let r = roundtrip(shared, &post(&format!("/sync?s={token}"), &body()));
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-type"), Some(XML));
            assert_eq!(r.text(), format!("shard={owner} token={token} len={}", body().len()));
        }
        // On a shard's own port the token is not used for routing.
        for (shard, addr) in h.shard_addrs().iter().enumerate() {
            let r = roundtrip(*addr, &post(&format!("/sync?s={token}"), &body()));
            assert_eq!(r.text(), format!("shard={shard} token={token} len={}", body().len()));
        }
    }
    // One keep-alive connection alternating owners.
    let mut c = Client::connect(shared);
    for i in 0..10 {
        let owner = i % 2;
        c.send(&post(&format!("/sync?s={}", token_for(owner, 2)), &body()));
        assert!(c.response().unwrap().text().starts_with(&format!("shard={owner} ")));
    }
    h.stop().unwrap();
}

#[test]
fn without_token_the_synchdr_routes() {
    let h = start(config());
    let mut seen = [false; 2];
    for i in 0..8 {
        let (device, session) = (format!("IMEI:{i}"), format!("{}", i * 7));
        let owner = routing::jump_hash(routing::session_key(&device, &session), 2) as usize;
        seen[owner] = true;
        for _ in 0..4 {
            let r = roundtrip(h.listen_addr(), &post("/sync", &syncml(&device, &session, "x")));
            assert_eq!(r.status, 200);
            assert!(r.text().starts_with(&format!("shard={owner} token=- ")), "{}", r.text());
        }
    }
    assert_eq!(seen, [true, true]);
    // A token and the header of the same session pick the same shard.
    let token = routing::token(routing::session_key("IMEI:1", "7"));
    let a = roundtrip(h.listen_addr(), &post(&format!("/sync?s={token}"), &syncml("other", "9", "x"))).text();
    let b = roundtrip(h.listen_addr(), &post("/sync", &syncml("IMEI:1", "7", "x"))).text();
    assert_eq!(a[..8], b[..8]);
    h.stop().unwrap();
}

#[test]
fn undecodable_syncml_is_400_with_a_reason() {
    let h = start(config());
    let mut c = Client::connect(h.listen_addr());
    for (target, bad) in [("/sync", "<SyncML><SyncHdr>"), ("/sync?s=0000000000000001", "not xml <<<")] {
        c.send(&post(target, bad));
        let r = c.response().unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().starts_with("malformed SyncML message: "), "{}", r.text());
        assert_eq!(r.text().lines().count(), 1);
    }
    c.send(&post("/sync", &body()));
    assert_eq!(c.response().unwrap().status, 200);
    h.stop().unwrap();
}

#[test]
fn over_a_decode_cap_is_413_and_a_bad_id_is_400() {
    let h = start(config());
    let mut c = Client::connect(h.listen_addr());
    let flood = body().replace("<Final/>", &"<a/>".repeat(20_000));
    for target in ["/sync", "/sync?s=0000000000000001"] {
        c.send(&post(target, &flood));
        let r = c.response().unwrap();
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.text().contains("commands per message"), "{}", r.text());
    }
    c.send(&post("/sync", &syncml("dev&#0;1", "1", "x")));
    let r = c.response().unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("control character U+0000"), "{}", r.text());
    c.send(&post("/sync", &syncml(&"d".repeat(1 << 20), "1", "x")));
    let r = c.response().unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().len() < 200, "the id is not echoed: {} bytes", r.text().len());
    c.send(&post("/sync", &body()));
    assert_eq!(c.response().unwrap().status, 200);
    h.stop().unwrap();
}

#[test]
fn health_and_shards() {
    let h = start(config());
    assert_serving(h.listen_addr());
    let r = roundtrip(h.listen_addr(), b"GET /shards HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["listen"], h.listen_addr().to_string());
    let ports: Vec<u64> =
        v["shards"].as_array().unwrap().iter().map(|s| s["port"].as_u64().unwrap()).collect();
    let want: Vec<u64> = h.shard_addrs().iter().map(|a| u64::from(a.port())).collect();
    assert_eq!(ports, want);
    assert_eq!(v["shards"][1]["id"], 1);
    let mut c = Client::connect(h.listen_addr());
    c.head_only = true;
    c.send(b"HEAD /health HTTP/1.1\r\n\r\n");
    let head = c.response().unwrap();
    assert_eq!((head.status, head.header("content-length")), (200, Some("2")));
    h.stop().unwrap();
}

#[test]
fn rejections_keep_the_server_serving() {
    let h = start(Config {
        limits: shardsync::http::Limits { max_body: 1024, ..Default::default() },
        ..config()
    });
    let a = h.listen_addr();
    // 431: header too large.
    let big = format!("GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(roundtrip(a, big.as_bytes()).status, 431);
    assert_serving(a);
    // 413: declared length over the limit (answered before the body is read).
    let r = roundtrip(
        a,
        format!("POST /sync HTTP/1.1\r\nContent-Type: {XML}\r\nContent-Length: 5000000\r\n\r\n").as_bytes(),
    );
    assert_eq!((r.status, r.header("connection")), (413, Some("close")));
    assert_serving(a);
    // 413: chunked body growing over the limit.
    let mut chunked =
        format!("POST /sync HTTP/1.1\r\nContent-Type: {XML}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("200\r\n{}\r\n", "x".repeat(512)).as_bytes());
    }
    assert_eq!(roundtrip(a, &chunked).status, 413);
    assert_serving(a);
    // 400: malformed.
    assert_eq!(roundtrip(a, b"NOT HTTP AT ALL\r\n\r\n").status, 400);
    assert_eq!(roundtrip(a, b"POST /sync HTTP/1.1\r\nContent-Length: x\r\n\r\n").status, 400);
    assert_serving(a);
    // 405 with Allow, and the connection stays usable.
    let mut c = Client::connect(a);
    c.send(b"GET /sync HTTP/1.1\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    c.send(b"DELETE /health HTTP/1.1\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    // 415 (body read and dropped; the connection stays usable).
    c.send(b"POST /sync HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.response().unwrap().status, 415);
    c.send(b"POST /sync HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.response().unwrap().status, 415);
    // Parameters on the SyncML type are fine.
    c.send(
        format!(
            "POST /sync HTTP/1.1\r\nContent-Type: {XML}; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{}",
            body().len(),
            body()
        )
        .as_bytes(),
    );
    assert_eq!(c.response().unwrap().status, 200);
    // 404 and a ServiceError's status.
    c.send(b"GET /nope HTTP/1.1\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 404);
    c.send(&post("/sync", &syncml("d", "1", "GONE")));
    let r = c.response().unwrap();
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no such session"));
    // Undecodable WBXML: 400 with the decoder's reason.
    c.send(b"POST /sync HTTP/1.1\r\nContent-Type: application/vnd.syncml+wbxml\r\nContent-Length: 2\r\n\r\n\x02\x00");
    let r = c.response().unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert_serving(a);
    h.stop().unwrap();
}

#[test]
fn slowloris_gets_408_and_does_not_hold_the_shard() {
    let h = start(Config { shards: 1, ..config() });
    let a = h.listen_addr();
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(a);
        let started = Instant::now();
        // One byte every 100 ms: the 500 ms header deadline covers the whole head.
        for b in b"GET /health HTTP/1.1\r\nX-Slow: 1234567890\r\n\r\n" {
            if c.stream.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            if started.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let r = c.response();
        (r.map(|r| r.status), started.elapsed())
    });
    // Meanwhile the single shard answers others at once.
    std::thread::sleep(Duration::from_millis(150));
    for _ in 0..5 {
        let t = Instant::now();
        assert_serving(a);
        assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    }
    let (status, elapsed) = slow.join().unwrap();
    assert_eq!(status, Some(408));
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    // A body that never completes: 408 too.
    let mut c = Client::connect(a);
    c.send(format!("POST /sync HTTP/1.1\r\nContent-Type: {XML}\r\nContent-Length: 10\r\n\r\nabc").as_bytes());
    assert_eq!(c.response().unwrap().status, 408);
    assert_serving(a);
    h.stop().unwrap();
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let h = start(config());
    let mut c = Client::connect(h.listen_addr());
    c.send(b"GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 200);
    let t = Instant::now();
    assert!(c.closed());
    assert!(t.elapsed() >= Duration::from_millis(600) && t.elapsed() < Duration::from_secs(3));
    h.stop().unwrap();
}

#[test]
fn keep_alive_pipelining_and_http10() {
    let h = start(config());
    let a = h.listen_addr();
    let mut c = Client::connect(a);
    let bodies = [syncml("d", "1", "a"), syncml("d", "1", "bbbb"), syncml("d", "1", "cc")];
    let mut batch = Vec::new();
    batch.extend_from_slice(&post("/sync?s=0000000000000001", &bodies[0]));
    batch.extend_from_slice(b"GET /health HTTP/1.1\r\n\r\n");
    batch.extend_from_slice(&post("/sync?s=0000000000000002", &bodies[1]));
    batch.extend_from_slice(&post("/sync", &bodies[2]));
    c.send(&batch);
    let texts: Vec<String> = (0..4).map(|_| c.response().unwrap().text()).collect();
    assert!(texts[0].ends_with(&format!("token=0000000000000001 len={}", bodies[0].len())), "{texts:?}");
    assert_eq!(texts[1], "ok");
    assert!(texts[2].ends_with(&format!("token=0000000000000002 len={}", bodies[1].len())), "{texts:?}");
    assert!(texts[3].ends_with(&format!("token=- len={}", bodies[2].len())), "{texts:?}");
    // Connection: close is honoured.
    c.send(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
    // HTTP/1.0: closes by default, stays with keep-alive.
    let mut c = Client::connect(a);
    c.send(b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().unwrap().header("connection"), Some("close"));
    assert!(c.closed());
    let mut c = Client::connect(a);
    c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().unwrap().header("connection"), Some("keep-alive"));
    c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 200);
    h.stop().unwrap();
}

#[test]
fn chunked_and_100_continue() {
    let h = start(config());
    let a = h.listen_addr();
    let mut c = Client::connect(a);
    c.send(
        format!("POST /sync HTTP/1.1\r\nContent-Type: {XML}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    );
    let b = body();
    let (first, second) = b.split_at(40);
    c.send(format!("{:x}\r\n{first}\r\n", first.len()).as_bytes());
    std::thread::sleep(Duration::from_millis(50));
    c.send(format!("{:X};ext=1\r\n{second}\r\n0\r\n\r\n", second.len()).as_bytes());
    assert!(c.response().unwrap().text().ends_with(&format!("len={}", b.len())));
    // 100-continue: the interim answer comes before the body is sent.
    c.send(
        format!(
            "POST /sync HTTP/1.1\r\nContent-Type: {XML}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            b.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.response().unwrap().status, 100);
    c.send(b.as_bytes());
    let r = c.response().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with(&format!("len={}", b.len())));
    // A refused request with Expect gets its final status at once, no 100.
    let mut c = Client::connect(a);
    c.send(b"POST /sync HTTP/1.1\r\nContent-Type: text/plain\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 415);
    let mut c = Client::connect(a);
    c.send(b"POST /sync HTTP/1.1\r\nExpect: something-else\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 417);
    assert_serving(a);
    h.stop().unwrap();
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let h = start(config());
    let a = h.listen_addr();
    let token = token_for(1, 2);
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let req = post(&format!("/sync?s={token}"), &syncml("d", "1", "SLOW"));
            std::thread::spawn(move || roundtrip(a, &req))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    h.stop().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    for r in in_flight {
        let r = r.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(r.text().starts_with("shard=1 "));
    }
    assert!(TcpStream::connect(a).is_err());
}

#[test]
fn memlock_error_is_one_line() {
    let c = Config { shards: 64, io_memory: Some(1 << 30), ..config() };
    let Err(e) = server::start(c, |ctx: ShardContext| WhoAmI { shard: ctx.shard }) else {
        // RLIMIT_MEMLOCK unlimited: nothing to check here.
        return;
    };
    let msg = e.to_string();
    assert!(msg.contains("ulimit -l") && !msg.contains('\n'), "{msg}");
}

#[test]
fn wbxml_routes_by_its_synchdr() {
    use shardsync::model::Encoding;
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/captures/wbxml/01-slow-sync/0001-c2s.wbxml");
    let wbxml = std::fs::read(path).unwrap();
    let key = server::route_key(Encoding::Wbxml, &wbxml).expect("the captured WBXML header decodes");
    let owner = routing::jump_hash(key, 2) as usize;
    let h = start(config());
    let mut head = format!(
        "POST /sync HTTP/1.1\r\nContent-Type: application/vnd.syncml+wbxml\r\nContent-Length: {}\r\n\r\n",
        wbxml.len()
    )
    .into_bytes();
    head.extend_from_slice(&wbxml);
    for _ in 0..8 {
        let r = roundtrip(h.listen_addr(), &head);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/vnd.syncml+wbxml"));
        assert!(r.text().starts_with(&format!("shard={owner} token=- ")), "{}", r.text());
    }
    h.stop().unwrap();
}

/// The value of a `/metrics` sample summed over its labels (e.g. every shard).
fn metric_sum(addr: SocketAddr, name: &str) -> f64 {
    let text = roundtrip(addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").text();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A keep-alive connection whose requests belong to other shards moves to
/// their owner (`migrate_connections`, the default) instead of having each
/// request handed over; pipelined bytes move with it. With the setting off,
/// the same traffic is handed over request by request. Either way the owner
/// answers every request, in order.
#[test]
fn keep_alive_connections_move_to_the_owner() {
    for migrate in [true, false] {
        let h = start(Config { migrate_connections: migrate, ..config() });
        let shared = h.listen_addr();
        let mut c = Client::connect(shared);
        // Runs of requests per owner, as a session's messages come.
        for i in 0..12 {
            let owner = (i / 3) % 2;
            c.send(&post(&format!("/sync?s={}", token_for(owner, 2)), &body()));
            let r = c.response().expect("answered");
            assert!(r.text().starts_with(&format!("shard={owner} ")), "{}", r.text());
        }
        // Pipelined: one request for each owner in one write, then a health check.
        let mut batch = Vec::new();
        for owner in [0, 1, 1, 0] {
            batch.extend_from_slice(&post(&format!("/sync?s={}", token_for(owner, 2)), &body()));
        }
        batch.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        c.send(&batch);
        for owner in [0, 1, 1, 0] {
            let r = c.response().expect("pipelined request answered");
            assert!(r.text().starts_with(&format!("shard={owner} ")), "{}", r.text());
        }
        let last = c.response().expect("health answered");
        assert_eq!((last.status, last.header("connection")), (200, Some("close")));
        assert!(c.closed());
        let (moved, handed) = (
            metric_sum(shared, "shardsync_connection_migrations_total"),
            metric_sum(shared, "shardsync_handoffs_total"),
        );
        if migrate {
            // The owner changed 3 times in the runs and 3 times in the pipeline
            // (plus once at the start if the connection landed on shard 1).
            assert!((6.0..=7.0).contains(&moved), "migrations {moved}");
            assert_eq!(handed, 0.0);
        } else {
            assert_eq!(moved, 0.0);
            // Every request of the other shard's runs and pipeline is handed over.
            assert!(handed >= 8.0, "hand-overs {handed}");
        }
        h.stop().unwrap();
    }
}

/// A panic inside a request (the engine's code, as far as the shard knows)
/// costs that request a 500, a log line and `shardsync_panics_total`; the
/// shard goes on serving, on the same connection too, and /health stays 200.
#[test]
fn a_panicking_request_is_500_and_the_shard_keeps_serving() {
    let h = start(config());
    for (i, &own) in h.shard_addrs().iter().enumerate() {
        let mut c = Client::connect(own);
        c.send(&post("/sync", &syncml("dev-p", "1", "PANIC")));
        let r = c.response().expect("an answer to the panicking request");
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(!r.text().contains("test service panics"), "the panic message is not sent: {}", r.text());
        c.send(&post("/sync", &body()));
        let r = c.response().expect("the shard answers after the panic");
        assert_eq!((r.status, r.text()), (200, format!("shard={i} token=- len={}", body().len())));
    }
    // Handed over (or moved) to the owner: the owner's boundary answers 500 too.
    for owner in 0..2 {
        let target = format!("/sync?s={}", token_for(owner, 2));
        let r = roundtrip(h.listen_addr(), &post(&target, &syncml("dev-p", "1", "PANIC")));
        assert_eq!(r.status, 500, "{}", r.text());
    }
    assert_eq!(metric_sum(h.listen_addr(), "shardsync_panics_total"), 4.0);
    assert_eq!(metric_sum(h.listen_addr(), "shardsync_shard_up"), 2.0);
    for &own in h.shard_addrs() {
        assert_serving(own);
    }
    h.stop().expect("no shard died");
}

/// A shard whose thread ended makes /health fail on every other shard.
#[test]
fn a_dead_shard_makes_health_fail() {
    let h = start(config());
    let (alive, doomed) = (h.shard_addrs()[0], h.shard_addrs()[1]);
    assert_serving(alive);
    let mut c = Client::connect(doomed);
    c.send(&post("/sync", &syncml("dev-k", "1", "KILL")));
    // The reply may or may not get out before the thread unwinds.
    let _ = c.response();
    // Seen through the thread's end or, if the unwinding stalls, through
    // the shard's heartbeat (stale after 10 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = roundtrip(alive, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("[1]"), "{}", r.text());
    assert_eq!(metric_sum(alive, "shardsync_shard_up"), 1.0);
    // The dead shard's own port no longer answers.
    assert!(TcpStream::connect(doomed)
        .map(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /health HTTP/1.1\r\n\r\n");
            let mut b = [0u8; 1];
            matches!(s.read(&mut b), Ok(0) | Err(_))
        })
        .unwrap_or(true));
    // Not joined: the dead shard's thread may never end.
    h.shutdown();
}
