//! The balancer's connection handling on its epoll reactor, against small
//! fake cluster nodes on loopback (each node is its own single shard: it
//! answers `GET /shards` with its own port, `GET /health`, and POSTs):
//! keep-alive and pipelined requests, X-Forwarded-For, slow clients (408),
//! idle keep-alive connections, a member dying mid-request (retried on the
//! next member, reported as failed), a stale pooled member connection (replaced,
//! not a failure), stopping, and a taken listen address.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
        ..BalanceConfig::default()
    };
    balancer::start(config).expect("balancer starts")
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
    s.write_all(b"GET /status HTTP/1.1\r\nHost: b\r\n\r\n").expect("write");
    let (status, body) = read_response(&mut s, &mut buf).expect("status");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
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
    s.write_all(b"GET /status HTTP/1.1\r\nHost: b\r\n\r\n").expect("write");
    let (_, body) = read_response(&mut s, &mut buf).expect("status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
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
        ..BalanceConfig::default()
    };
    match balancer::start(config) {
        Err(balancer::BalanceError::Bind { addr, .. }) => assert_eq!(addr, taken.local_addr().expect("addr")),
        other => panic!("want a bind error, got {other:?}"),
    }
}
