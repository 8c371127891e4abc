//! The balancer's connection handling on its epoll reactor, against small
//! fake cluster nodes on loopback (each node is its own single shard: it
//! answers `GET /shards` with its own port, `GET /health`, and POSTs):
//! keep-alive and pipelined requests, X-Forwarded-For, slow clients (408),
//! idle keep-alive connections, a member dying mid-request (retried on the
//! next member, reported as failed), a stale pooled member connection (replaced,
//! not a failure), stopping, a taken listen address, and the admin policy
//! (`/status`, `/route`, `/metrics`, `/admin/*` only on the admin listener, with the token).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shardsync::balancer::config::AdminToken;
use shardsync::balancer::{self, BalanceConfig, BalancerHandle};

/// What a fake node does with a POST.
#[derive(Clone, Copy)]
enum Posts {
    /// Answers 200 with "member NAME xff=<X-Forwarded-For>".
    Answer(&'static str),
    /// Reads the whole request, then closes the connection without answering.
    Die,
    /// Answers like `Answer`, then closes the connection (no `Connection: close`):
    /// the balancer's pooled connection to it goes stale.
    AnswerThenClose(&'static str),
}

/// A fake node; `posts` counts the POSTs it received.
struct Node {
    addr: SocketAddr,
    posts: Arc<AtomicUsize>,
}

fn node(posts_do: Posts) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind node");
    let addr = listener.local_addr().expect("node addr");
    let posts = Arc::new(AtomicUsize::new(0));
    let count = posts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let count = count.clone();
            std::thread::spawn(move || node_conn(conn, addr.port(), posts_do, &count));
        }
    });
    Node { addr, posts }
}

/// Serves one keep-alive connection of a fake node.
fn node_conn(mut s: TcpStream, port: u16, posts_do: Posts, posts: &AtomicUsize) {
    let mut buf = Vec::new();
    loop {
        let Some((method, path, headers, body)) = read_request(&mut s, &mut buf) else { return };
        let (status, reply) = match (method.as_str(), path.as_str()) {
            ("GET", "/shards") => (200, format!("{{\"shards\":[{{\"port\":{port}}}]}}")),
            ("GET", "/health") => (200, "ok".to_string()),
            ("POST", _) => {
                posts.fetch_add(1, Ordering::SeqCst);
                match posts_do {
                    Posts::Die => {
                        let _ = s.shutdown(Shutdown::Both);
                        return;
                    }
                    Posts::Answer(name) | Posts::AnswerThenClose(name) => {
                        let xff = header(&headers, "x-forwarded-for").unwrap_or_default();
                        (200, format!("member {name} xff={xff} body={}", String::from_utf8_lossy(&body)))
                    }
                }
            }
            _ => (404, "not found".to_string()),
        };
        let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n", reply.len());
        if s.write_all(head.as_bytes()).and_then(|()| s.write_all(reply.as_bytes())).is_err() {
            return;
        }
        // The balancer's health checks read to the end of the connection.
        if header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return;
        }
        if matches!(posts_do, Posts::AnswerThenClose(_)) && method == "POST" {
            return;
        }
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

/// Reads one request (head and Content-Length body); `None` at EOF or on garbage.
#[allow(clippy::type_complexity)]
fn read_request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, String, Vec<(String, String)>, Vec<u8>)> {
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut hs);
        if let httparse::Status::Complete(len) = req.parse(buf).ok()? {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let n: usize = header(&headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let (method, path) = (req.method?.to_string(), req.path?.to_string());
            while buf.len() < len + n {
                fill(s, buf)?;
            }
            let body = buf[len..len + n].to_vec();
            buf.drain(..len + n);
            return Some((method, path, headers, body));
        }
        fill(s, buf)?;
    }
}

/// One read appended to `buf`; `None` at EOF or error.
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// Reads one response (status, body) off a client connection; `None` at EOF.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, String)> {
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(len) = resp.parse(buf).expect("a well-formed response") {
            let n: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .expect("Content-Length");
            let status = resp.code?;
            while buf.len() < len + n {
                fill(s, buf)?;
            }
            let body = String::from_utf8_lossy(&buf[len..len + n]).into_owned();
            buf.drain(..len + n);
            return Some((status, body));
        }
        fill(s, buf)?;
    }
}

/// A balancer in front of `nodes`, one worker, short client timeouts.
fn balancer(nodes: &[&Node]) -> BalancerHandle {
    balancer_idle(nodes, Duration::from_millis(400))
}

fn balancer_idle(nodes: &[&Node], idle_timeout: Duration) -> BalancerHandle {
    let config = BalanceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        backends: nodes.iter().map(|n| n.addr.to_string()).collect(),
        threads: 1,
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        idle_timeout,
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_token: Some(AdminToken::new(TOKEN).expect("token")),
        ..BalanceConfig::default()
    };
    balancer::start(config).expect("balancer starts")
}

/// The admin token of [`balancer`].
const TOKEN: &str = "0123456789abcdef-test-token";

/// `GET /status` on the admin listener with the token.
fn status(b: &BalancerHandle) -> serde_json::Value {
    let mut s = admin(b);
    let mut buf = Vec::new();
    s.write_all(
        format!("GET /status HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let (code, body) = read_response(&mut s, &mut buf).expect("status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

fn admin(b: &BalancerHandle) -> TcpStream {
    let s = TcpStream::connect(b.admin_addr()).expect("connect to the admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s
}

fn client(b: &BalancerHandle) -> TcpStream {
    let s = TcpStream::connect(b.listen_addr()).expect("connect to the balancer");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s
}

fn post(token: u64, body: &str) -> String {
    format!(
        "POST /sync?s={token:016x} HTTP/1.1\r\nHost: b\r\nContent-Type: application/vnd.syncml+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let a = node(Posts::Answer("a"));
    let b = balancer(&[&a]);
    let mut s = client(&b);
    let mut buf = Vec::new();
    // Three requests in one write, then one more on the same connection.
    let pipelined: String = (1..=3).map(|i| post(i, &format!("msg{i}"))).collect();
    s.write_all(pipelined.as_bytes()).expect("write");
    for i in 1..=3 {
        let (status, body) = read_response(&mut s, &mut buf).expect("a response");
        assert_eq!(status, 200);
        assert_eq!(body, format!("member a xff=127.0.0.1 body=msg{i}"));
    }
    s.write_all(post(4, "msg4").as_bytes()).expect("write");
    let (status, body) = read_response(&mut s, &mut buf).expect("a response on the kept connection");
    assert_eq!((status, body.as_str()), (200, "member a xff=127.0.0.1 body=msg4"));
    // The member saw them over pooled connections: four POSTs, no more.
    assert_eq!(a.posts.load(Ordering::SeqCst), 4);
    b.stop();
}

#[test]
fn slow_clients_get_408_and_idle_connections_are_closed() {
    let a = node(Posts::Answer("a"));
    let b = balancer(&[&a]);
    // A head that never completes.
    let mut s = client(&b);
    s.write_all(b"POST /sync?s=0000000000000001 HTTP/1.1\r\nHost: b\r\n").expect("write");
    let mut buf = Vec::new();
    let (status, body) = read_response(&mut s, &mut buf).expect("a 408");
    assert_eq!((status, body.as_str()), (408, "request header timeout\n"));
    assert!(read_response(&mut s, &mut buf).is_none(), "closed after the 408");
    // A body that never completes.
    let mut s = client(&b);
    s.write_all(b"POST /sync?s=0000000000000001 HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\nabc")
        .expect("write");
    let mut buf = Vec::new();
    let (status, body) = read_response(&mut s, &mut buf).expect("a 408");
    assert_eq!((status, body.as_str()), (408, "request body timeout\n"));
    // A kept-alive connection that stays idle is closed without a response.
    let mut s = client(&b);
    s.write_all(post(1, "x").as_bytes()).expect("write");
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf).map(|r| r.0), Some(200));
    assert!(read_response(&mut s, &mut buf).is_none(), "idle connection closed");
    assert_eq!(a.posts.load(Ordering::SeqCst), 1, "no partial request was forwarded");
    b.stop();
}

#[test]
fn a_member_dying_mid_request_is_retried_on_the_next_member_and_reported() {
    let dying = node(Posts::Die);
    let good = node(Posts::Answer("good"));
    let b = balancer(&[&dying, &good]);
    let mut s = client(&b);
    let mut buf = Vec::new();
    // Enough sessions that some are owned by the dying member.
    for token in 1..=40u64 {
        s.write_all(post(token, "m").as_bytes()).expect("write");
        let (status, body) = read_response(&mut s, &mut buf).expect("a response");
        assert_eq!((status, body.as_str()), (200, "member good xff=127.0.0.1 body=m"), "token {token}");
    }
    assert!(dying.posts.load(Ordering::SeqCst) >= 1, "the dying member got its sessions first");
    // The failure was counted against the dying member (passive detection).
    let v = status(&b);
    let id = format!("127.0.0.1:{}", dying.addr.port());
    let m =
        v["members"].as_array().expect("members").iter().find(|m| m["id"] == id.as_str()).expect("member");
    assert!(m["failures"].as_u64() >= Some(1), "{m}");
    b.stop();
}

#[test]
fn a_stale_pooled_member_connection_is_replaced_without_failing_over() {
    let a = node(Posts::AnswerThenClose("a"));
    let b = balancer(&[&a]);
    let mut s = client(&b);
    let mut buf = Vec::new();
    for i in 1..=3u64 {
        // Give the member's close time to arrive, so the pooled connection is stale.
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(post(i, "m").as_bytes()).expect("write");
        let (status, body) = read_response(&mut s, &mut buf).expect("a response");
        assert_eq!((status, body.as_str()), (200, "member a xff=127.0.0.1 body=m"), "request {i}");
    }
    assert_eq!(a.posts.load(Ordering::SeqCst), 3, "each request reached the member once");
    // Not a member failure: no passive report, the member stays up.
    let v = status(&b);
    let m = &v["members"][0];
    assert_eq!((m["failures"].as_u64(), m["healthy"].as_bool()), (Some(0), Some(true)), "{m}");
    b.stop();
}

#[test]
fn stopping_closes_kept_alive_connections() {
    let a = node(Posts::Answer("a"));
    let b = balancer_idle(&[&a], Duration::from_secs(600));
    let mut s = client(&b);
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s.write_all(post(1, "x").as_bytes()).expect("write");
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf).map(|r| r.0), Some(200));
    // Not the idle timeout (10 minutes): stopping ends the worker and its connections.
    b.stop();
    assert!(read_response(&mut s, &mut buf).is_none(), "closed by the stopped balancer");
}

#[test]
fn a_taken_listen_address_is_a_bind_error() {
    let a = node(Posts::Answer("a"));
    // Bound without SO_REUSEPORT: the balancer's workers cannot share it.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let config = BalanceConfig {
        listen: taken.local_addr().expect("addr"),
        backends: vec![a.addr.to_string()],
        threads: 1,
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        ..BalanceConfig::default()
    };
    match balancer::start(config) {
        Err(balancer::BalanceError::Bind { addr, .. }) => assert_eq!(addr, taken.local_addr().expect("addr")),
        other => panic!("want a bind error, got {other:?}"),
    }
}

/// One request on a fresh connection: (status, body, head text).
fn ask(addr: SocketAddr, method: &str, target: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("{method} {target} HTTP/1.1\r\nHost: b\r\n{auth}Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf).expect("a response")
}

#[test]
fn topology_and_routing_controls_are_only_on_the_admin_listener_with_the_token() {
    let a = node(Posts::Answer("a"));
    let b = balancer(&[&a]);
    let (public, adm) = (b.listen_addr(), b.admin_addr());
    assert_ne!(public, adm);
    let member = format!("127.0.0.1:{}", a.addr.port());
    let drain = format!("/admin/drain?member={member}");
    let reads = ["/status", "/route?s=00000000000000ab", "/metrics"];
    // The public listener: 404 for all of it, and nothing changes; /health and POSTs still work.
    for target in reads {
        assert_eq!(ask(public, "GET", target, Some(TOKEN)).0, 404, "public {target}");
    }
    for target in [drain.as_str(), "/admin/undrain?member=x", "/admin/weight?member=x&w=2"] {
        assert_eq!(ask(public, "POST", target, Some(TOKEN)).0, 404, "public {target}");
    }
    assert_eq!(ask(public, "GET", "/health", None).0, 200);
    assert_eq!(status(&b)["members"][0]["draining"], false, "{}", status(&b));
    // The admin listener: 401 without the token or with a wrong one, /health needs none.
    for target in reads {
        assert_eq!(ask(adm, "GET", target, None).0, 401, "admin {target} without a token");
        assert_eq!(ask(adm, "GET", target, Some("0123456789abcdef-test-tokeN")).0, 401, "wrong token");
        assert_eq!(ask(adm, "GET", target, Some(TOKEN)).0, 200, "admin {target} with the token");
    }
    assert_eq!(ask(adm, "POST", &drain, None).0, 401);
    assert_eq!(ask(adm, "POST", &drain, Some("Basic abc")).0, 401);
    assert_eq!(ask(adm, "GET", "/health", None).0, 200);
    assert_eq!(status(&b)["members"][0]["draining"], false, "refused changes changed nothing");
    // With the token the change is made.
    assert_eq!(ask(adm, "POST", &drain, Some(TOKEN)).0, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while status(&b)["members"][0]["draining"] != true {
        assert!(std::time::Instant::now() < deadline, "drain applied: {}", status(&b));
        std::thread::sleep(Duration::from_millis(20));
    }
    // SyncML POSTs are not forwarded from the admin listener.
    assert_eq!(ask(adm, "POST", "/sync?s=00000000000000ab", Some(TOKEN)).0, 404);
    assert_eq!(a.posts.load(Ordering::SeqCst), 0);
    b.stop();
}

#[test]
fn without_a_token_admin_reads_are_local_and_changes_are_refused() {
    let a = node(Posts::Answer("a"));
    let config = BalanceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        backends: vec![a.addr.to_string()],
        threads: 1,
        public_metrics: true,
        ..BalanceConfig::default()
    };
    let b = balancer::start(config.clone()).expect("balancer starts");
    let member = format!("127.0.0.1:{}", a.addr.port());
    assert_eq!(ask(b.admin_addr(), "GET", "/status", None).0, 200);
    let (code, body) = ask(b.admin_addr(), "POST", &format!("/admin/drain?member={member}"), None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("admin_token_file"), "{body}");
    // public_metrics: /metrics on the public listener too, /status still not.
    assert_eq!(ask(b.listen_addr(), "GET", "/metrics", None).0, 200);
    assert_eq!(ask(b.listen_addr(), "GET", "/status", None).0, 404);
    b.stop();
    // A non-loopback admin address needs a token.
    let open = BalanceConfig { admin_listen: "0.0.0.0:0".parse().expect("addr"), ..config.clone() };
    match balancer::start(open) {
        Err(balancer::BalanceError::Config(e)) => assert!(e.to_string().contains("admin_token"), "{e}"),
        other => panic!("want a config error, got {other:?}"),
    }
    assert!(AdminToken::new("short").is_err(), "a short token is refused");
}
