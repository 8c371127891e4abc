//! Operating a real `shardsync serve` over HTTP: `/metrics` counters after
//! complete SyncML sessions (exact amounts, strictly parsed exposition), the
//! session log line at every kind of session end (and no secrets in the log),
//! the auth back-off and the per-user session cap, and the admin commands
//! (`device list|forget`, `session list`) on the embedded store and on
//! PostgreSQL.

mod support_pg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardsync::metrics::parse::{self, Scrape};

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");
/// The test user's password (`test:s3cretPW` is `dGVzdDpzM2NyZXRQVw==`).
const PASSWORD: &str = "s3cretPW";

/// A `serve` process we started, killed by PID when the test ends.
struct Server {
    child: Child,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("SHARDSYNC_STORE")
        .env_remove("SHARDSYNC_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shardsync");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Starts `serve` on a fresh data dir with user `test`; `store` = PostgreSQL URL or embedded.
fn start(extra: &[&str], store: Option<&str>) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_s = data.to_str().expect("utf-8 path").to_owned();
    let mut add = vec!["user", "add", "test"];
    match store {
        Some(url) => add.extend(["--store", url]),
        None => add.extend(["--data-dir", &data_s]),
    }
    let (ok, _, err) = run(&add, &format!("{PASSWORD}\n"));
    assert!(ok, "user add: {err}");
    // A node on PostgreSQL opens its admin socket in an existing data dir.
    std::fs::create_dir_all(&data).expect("data dir");
    let log = dir.path().join("serve.log");
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--shards", "2", "--shard-port-base", "0"])
        .args(["--pin", "false", "--data-dir", &data_s])
        .args(extra)
        .env_remove("SHARDSYNC_STORE")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    if let Some(url) = store {
        cmd.args(["--store", url]);
    }
    let child = cmd.spawn().expect("serve");
    let server = Server { child, port, data, log, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(15);
    while http(port, "GET", "/health", "", &[]).map(|r| r.status) != Some(200) {
        assert!(Instant::now() < deadline, "server did not start: {}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

impl Server {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn scrape(&self) -> Scrape {
        let r = http(self.port, "GET", "/metrics", "", &[]).expect("GET /metrics");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        parse::parse(&r.body).unwrap_or_else(|e| panic!("bad exposition: {e}\n{}", r.body))
    }

    fn post(&self, path: &str, body: &str) -> Reply {
        self.post_with(path, body, &[])
    }

    fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        http(self.port, "POST", path, body, headers).expect("POST")
    }

    fn admin(&self, args: &[&str]) -> Result<String, String> {
        let mut all: Vec<&str> = args.to_vec();
        let data = self.data.to_str().expect("utf-8");
        all.extend(["--data-dir", data]);
        let (ok, out, err) = run(&all, "");
        if ok {
            Ok(out)
        } else {
            Err(err)
        }
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The SyncHdr status code of a SyncML reply.
    fn hdr_status(&self) -> u16 {
        let hdr_status =
            self.body.split("<Status>").find(|s| s.contains("<Cmd>SyncHdr</Cmd>")).expect("SyncHdr status");
        between(hdr_status, "<Data>", "</Data>").parse().expect("status code")
    }

    /// The path of the RespURI.
    fn resp_path(&self) -> String {
        let uri = between(&self.body, "<RespURI>", "</RespURI>");
        let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
        rest[rest.find('/').expect("path")..].replace("&amp;", "&")
    }
}

/// The NextNonce of a reply's Chal (base64 text).
fn next_nonce(body: &str) -> &str {
    let tag = &body[body.find("<NextNonce").expect("NextNonce")..];
    between(tag, ">", "</NextNonce>")
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
    let start = s.find(a).map(|i| i + a.len()).unwrap_or_else(|| panic!("no {a} in {s}"));
    let end = s[start..].find(b).map(|i| start + i).unwrap_or_else(|| panic!("no {b} in {s}"));
    &s[start..end]
}

fn http(port: u16, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if method == "POST" {
        req.push_str("Content-Type: application/vnd.syncml+xml\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Reply { status, headers, body: body.to_string() })
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One client message (XML, SyncML 1.2) of `device`'s session `session`.
fn message(
    device: &str,
    session: &str,
    msg_id: u32,
    cred: Option<(&str, &str)>,
    body: &str,
    final_: bool,
) -> String {
    let cred = cred.map_or(String::new(), |(u, p)| {
        format!(
            "<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type><Format xmlns='syncml:metinf'>b64</Format></Meta><Data>{}</Data></Cred>",
            b64(&format!("{u}:{p}"))
        )
    });
    let fin = if final_ { "<Final/>" } else { "" };
    format!(
        "<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto>\
         <SessionID>{session}</SessionID><MsgID>{msg_id}</MsgID><Target><LocURI>http://127.0.0.1/sync</LocURI></Target>\
         <Source><LocURI>{device}</LocURI></Source>{cred}</SyncHdr><SyncBody>{body}{fin}</SyncBody></SyncML>"
    )
}

fn alert(code: u16, next: &str) -> String {
    alert_from(code, None, next)
}

fn alert_from(code: u16, last: Option<&str>, next: &str) -> String {
    let last = last.map_or(String::new(), |l| format!("<Last>{l}</Last>"));
    format!(
        "<Alert><CmdID>1</CmdID><Data>{code}</Data><Item><Target><LocURI>notes</LocURI></Target>\
         <Source><LocURI>./notes</LocURI></Source><Meta><Anchor xmlns='syncml:metinf'>{last}<Next>{next}</Next></Anchor></Meta></Item></Alert>"
    )
}

/// A Sync of notes with `ops` = (command, LUID, data).
fn sync(ops: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        "<Sync><CmdID>2</CmdID><Target><LocURI>notes</LocURI></Target><Source><LocURI>./notes</LocURI></Source>",
    );
    for (i, (cmd, luid, data)) in ops.iter().enumerate() {
        let data = if data.is_empty() { String::new() } else { format!("<Data>{data}</Data>") };
        s.push_str(&format!(
            "<{cmd}><CmdID>{}</CmdID><Meta><Type xmlns='syncml:metinf'>text/plain</Type></Meta>\
             <Item><Source><LocURI>{luid}</LocURI></Source>{data}</Item></{cmd}>",
            i + 3
        ));
    }
    s.push_str("</Sync>");
    s
}

/// A whole session of `device`: init (alert), the client's changes, then the
/// closing message. Returns the replies.
fn session(server: &Server, device: &str, id: &str, mode: u16, ops: &[(&str, &str, &str)]) -> Vec<Reply> {
    session_after(server, device, None, id, mode, ops)
}

/// Like [`session`], with the client's Last anchor (the Next of its previous session).
fn session_after(
    server: &Server,
    device: &str,
    last: Option<&str>,
    id: &str,
    mode: u16,
    ops: &[(&str, &str, &str)],
) -> Vec<Reply> {
    let init = alert_from(mode, last, id);
    let r1 = server.post("/sync", &message(device, id, 1, Some(("test", PASSWORD)), &init, true));
    assert_eq!((r1.status, r1.hdr_status()), (200, 212), "{}", r1.body);
    let path = r1.resp_path();
    let r2 = server.post(&path, &message(device, id, 2, None, &sync(ops), true));
    assert_eq!((r2.status, r2.hdr_status()), (200, 200), "{}", r2.body);
    let r3 = server.post(&path, &message(device, id, 3, None, "", true));
    assert_eq!((r3.status, r3.hdr_status()), (200, 200), "{}", r3.body);
    vec![r1, r2, r3]
}

fn items(s: &Scrape, op: &str, dir: &str) -> f64 {
    s.value("shardsync_items_total", &[("datastore", "notes"), ("operation", op), ("direction", dir)])
        .expect("items")
}

#[test]
fn metrics_count_real_sessions_exactly() {
    let server = start(&[], None);
    let before = server.scrape();
    for name in [
        "shardsync_sessions_started_total",
        "shardsync_sessions_completed_total",
        "shardsync_auth_failures_total",
        "shardsync_store_batches_total",
    ] {
        assert_eq!(before.value(name, &[]), Some(0.0), "{name}");
    }
    assert_eq!(before.kind("shardsync_message_duration_seconds"), Some("histogram"));
    assert_eq!(before.kind("shardsync_store_commit_duration_seconds"), Some("histogram"));

    // Device A: slow sync bringing 3 notes; then a two-way with one replace and one delete.
    session(
        &server,
        "dev-a",
        "1",
        201,
        &[("Add", "a1", "one"), ("Add", "a2", "two"), ("Add", "a3", "three")],
    );
    let r = session_after(
        &server,
        "dev-a",
        Some("1"),
        "2",
        200,
        &[("Replace", "a1", "one, edited"), ("Delete", "a2", "")],
    );
    assert!(!r[0].body.contains("<Data>508</Data>"), "anchors match: a two-way sync: {}", r[0].body);
    // Device B: slow sync without items: the server sends it the two live notes.
    let replies = session(&server, "dev-b", "1", 201, &[]);
    assert_eq!(replies[1].body.matches("<Add>").count(), 2, "{}", replies[1].body);

    let s = server.scrape();
    assert_eq!(s.value("shardsync_sessions_started_total", &[]), Some(3.0));
    assert_eq!(s.value("shardsync_sessions_completed_total", &[]), Some(3.0));
    assert_eq!(s.value("shardsync_sessions_active", &[]), Some(0.0));
    assert_eq!(s.sum("shardsync_sessions_failed_total", &[]), 0.0);
    assert_eq!(items(&s, "add", "from_client"), 3.0);
    assert_eq!(items(&s, "replace", "from_client"), 1.0);
    assert_eq!(items(&s, "delete", "from_client"), 1.0);
    assert_eq!(items(&s, "add", "to_client"), 2.0);
    assert_eq!(items(&s, "replace", "to_client") + items(&s, "delete", "to_client"), 0.0);
    assert_eq!(s.sum("shardsync_items_total", &[("datastore", "contacts")]), 0.0);
    // Nine XML messages, each answered once; the histogram saw each.
    assert_eq!(s.value("shardsync_messages_total", &[("encoding", "xml")]), Some(9.0));
    assert_eq!(s.value("shardsync_messages_total", &[("encoding", "wbxml")]), Some(0.0));
    assert_eq!(s.value("shardsync_message_duration_seconds_count", &[("encoding", "xml")]), Some(9.0));
    // 9 messages + 2 scrapes (this one's own response is counted after it is rendered).
    assert_eq!(s.value("shardsync_http_responses_total", &[("code", "200")]), Some(11.0));
    // Store: every group commit observed once; batches ≥ 1 per message with writes.
    let commits = s.sum("shardsync_store_commits_total", &[]);
    assert!(commits >= 3.0, "{commits}");
    assert_eq!(s.value("shardsync_store_commit_duration_seconds_count", &[]), Some(commits));
    assert_eq!(
        s.value("shardsync_store_commit_batches_sum", &[]),
        s.value("shardsync_store_batches_total", &[])
    );
    assert_eq!(s.value("shardsync_store_commit_ops_sum", &[]), s.value("shardsync_store_ops_total", &[]));
    assert_eq!(s.sum("shardsync_store_queue_depth", &[]), 0.0);
    // Hand-overs: counted per shard; nothing in flight now.
    assert_eq!(s.sum("shardsync_shard_queue_depth", &[]), 0.0);
    // Every shard port answers with the whole node's metrics.
    let shards: serde_json::Value =
        serde_json::from_str(&http(server.port, "GET", "/shards", "", &[]).expect("shards").body)
            .expect("json");
    for sh in shards["shards"].as_array().expect("shards") {
        let port = sh["port"].as_u64().expect("port") as u16;
        let r = http(port, "GET", "/metrics", "", &[]).expect("shard metrics");
        let own = parse::parse(&r.body).expect("exposition");
        assert_eq!(own.value("shardsync_sessions_completed_total", &[]), Some(3.0));
        assert_eq!(
            own.value(
                "shardsync_items_total",
                &[("datastore", "notes"), ("operation", "add"), ("direction", "from_client")]
            ),
            Some(3.0)
        );
    }
}

#[test]
fn session_log_line_at_every_end_and_no_secrets() {
    let server = start(&["--session-timeout-secs", "1", "--auth-fail-delay-ms", "0"], None);
    // Completed.
    let replies = session(
        &server,
        "dev-log",
        "7",
        201,
        &[("Add", "L1", "secret note text"), ("Add", "L2", "other text")],
    );
    let nonce = next_nonce(&replies[0].body).to_string();
    let raw_nonce = {
        use base64::Engine as _;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&nonce).expect("b64"))
            .expect("text")
    };
    // Three failed logins: each leaves nothing behind (no session to continue), so the
    // client's retries are new first messages.
    for _ in 1..=3 {
        let r = server
            .post("/sync", &message("dev-bad", "9", 1, Some(("test", "wrongPW1")), &alert(201, "x"), true));
        assert_eq!(r.hdr_status(), 401, "{}", r.body);
    }
    // Expired: a session idle past the timeout, then its client comes back.
    let r1 =
        server.post("/sync", &message("dev-idle", "3", 1, Some(("test", PASSWORD)), &alert(201, "i"), true));
    assert_eq!(r1.hdr_status(), 212);
    std::thread::sleep(Duration::from_millis(2200));
    let late = server.post(&r1.resp_path(), &message("dev-idle", "3", 2, None, &sync(&[]), true));
    assert_eq!(late.status, 404, "{}", late.body);

    let log = server.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("session finished")).collect();
    let find = |dev: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("device={dev} ")))
            .unwrap_or_else(|| panic!("no line for {dev}:\n{log}"))
    };
    let done = find("dev-log");
    for want in [
        "user=\"test\"",
        "session_id=7",
        "datastores=notes",
        "sync_types=notes:201",
        "from_client=add=2 replace=0 delete=0",
        "to_client=add=0 replace=0 delete=0",
        "conflicts=0",
        "messages=3",
        "duration_s=",
        "result=\"completed\"",
    ] {
        assert!(done.contains(want), "{want} missing in {done}");
    }
    // A failed login is no session: no session line, but a line per attempt.
    assert!(!lines.iter().any(|l| l.contains("device=dev-bad ")), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.contains("authentication failed") && l.contains("dev-bad")).count(),
        3,
        "{log}"
    );
    let expired = find("dev-idle");
    assert!(expired.contains("result=\"expired\"") && expired.contains("user=\"test\""), "{expired}");
    assert_eq!(lines.len(), 2, "one line per session:\n{}", lines.join("\n"));
    // No password, credential, nonce or item content anywhere in the log.
    for secret in [
        PASSWORD,
        "wrongPW1",
        &b64(&format!("test:{PASSWORD}")),
        &b64("test:wrongPW1"),
        &nonce,
        &raw_nonce,
        "secret note text",
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
    let s = server.scrape();
    assert_eq!(s.value("shardsync_sessions_failed_total", &[("reason", "auth")]), Some(3.0));
    assert_eq!(s.value("shardsync_sessions_failed_total", &[("reason", "expired")]), Some(1.0));
    assert_eq!(s.value("shardsync_sessions_completed_total", &[]), Some(1.0));
    assert_eq!(s.value("shardsync_auth_failures_total", &[]), Some(3.0));
}

/// Normalizes what differs between two auth-failure replies (nonce, session, device).
fn normalized(r: &Reply, device: &str, session: &str) -> String {
    let nonce = next_nonce(&r.body);
    r.body
        .replace(nonce, "NONCE")
        .replace(device, "DEVICE")
        .replace(&format!("<SessionID>{session}<"), "<SessionID>S<")
}

#[test]
fn auth_backoff_per_user_and_address_reveals_no_user() {
    let server = start(
        &[
            "--auth-free-failures",
            "2",
            "--user-free-failures",
            "4",
            "--address-free-failures",
            "3",
            "--auth-backoff-base-ms",
            "20000",
            "--auth-fail-delay-ms",
            "300",
            "--trusted-proxies",
            "127.0.0.1",
        ],
        None,
    );
    let attempt = |user: &str, pw: &str, from: &str, session: &str| {
        let device = format!("dev-{user}");
        let body = message(&device, session, 1, Some((user, pw)), &alert(201, "x"), true);
        let started = Instant::now();
        let r = server.post_with("/sync", &body, &[("X-Forwarded-For", from)]);
        (r, started.elapsed())
    };
    // Three failures each: a real user with a wrong password, and a user that does not exist.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..3 {
        let s = format!("{}", 10 + i);
        let (r, took) = attempt("test", "nope", "10.0.0.1", &s);
        assert_eq!((r.status, r.hdr_status()), (200, 401), "{}", r.body);
        assert!(took >= Duration::from_millis(300), "answer released before the auth delay: {took:?}");
        known.push(normalized(&r, "dev-test", &s));
        let (r, took) = attempt("ghost", "nope", "10.0.0.2", &s);
        assert_eq!((r.status, r.hdr_status()), (200, 401), "{}", r.body);
        assert!(took >= Duration::from_millis(300), "answer released before the auth delay: {took:?}");
        unknown.push(normalized(&r, "dev-ghost", &s));
    }
    // The same answer, byte for byte apart from nonce, device and session.
    assert_eq!(known, unknown);
    // Each (name, address) pair is in back-off now, even with the right password ...
    for (user, pw, from) in [("test", PASSWORD, "10.0.0.1"), ("ghost", "nope", "10.0.0.2")] {
        let (r, _) = attempt(user, pw, from, "50");
        assert_eq!(r.status, 429, "{user}: {}", r.body);
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
        assert!((1..=20).contains(&retry), "{retry}");
        assert!(r.body.starts_with("too many failed authentications"), "{}", r.body);
    }
    // ... but a stranger's failures do not lock the user out elsewhere.
    let (r, _) = attempt("test", PASSWORD, "10.0.0.3", "51");
    assert_eq!((r.status, r.hdr_status()), (200, 212), "{}", r.body);
    // An address over its own ceiling is in back-off for any name.
    let (r, _) = attempt("carol", "nope", "10.0.0.1", "60");
    assert_eq!((r.status, r.hdr_status()), (200, 401));
    let (r, _) = attempt("carol", "nope", "10.0.0.1", "61");
    assert_eq!(r.status, 429);
    // Failures from many addresses reach the user's own, higher ceiling ...
    for (i, from) in ["10.0.0.5", "10.0.0.6"].into_iter().enumerate() {
        let (r, _) = attempt("ghost", "nope", from, &format!("{}", 70 + i));
        assert_eq!((r.status, r.hdr_status()), (200, 401));
    }
    let (r, _) = attempt("ghost", "nope", "10.0.0.7", "72");
    assert_eq!(r.status, 429);
    for (i, from) in ["10.0.0.8", "10.0.0.9"].into_iter().enumerate() {
        let (r, _) = attempt("test", "nope", from, &format!("{}", 80 + i));
        assert_eq!((r.status, r.hdr_status()), (200, 401));
    }
    let (r, _) = attempt("test", PASSWORD, "10.0.0.10", "82");
    assert_eq!(r.status, 429, "{}", r.body);
    // ... which never holds back a device that logged in from the same address before.
    let (r, _) = attempt("test", PASSWORD, "10.0.0.3", "83");
    assert_eq!((r.status, r.hdr_status()), (200, 212), "{}", r.body);
    let s = server.scrape();
    assert_eq!(s.value("shardsync_auth_failures_total", &[]), Some(11.0));
    assert_eq!(s.value("shardsync_auth_backoff_total", &[("key", "user")]), Some(4.0));
    assert_eq!(s.value("shardsync_auth_backoff_total", &[("key", "address")]), Some(1.0));
    assert_eq!(s.value("shardsync_http_responses_total", &[("code", "429")]), Some(5.0));
}

#[test]
fn session_cap_per_user_and_session_list() {
    let server = start(&["--max-sessions-per-user", "1"], None);
    // Session A authenticates and stays open.
    let a1 =
        server.post("/sync", &message("dev-a", "1", 1, Some(("test", PASSWORD)), &alert(201, "a"), true));
    assert_eq!(a1.hdr_status(), 212);
    let list = server.admin(&["session", "list"]).expect("session list");
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{list}");
    let cols: Vec<&str> = rows[0].split('\t').collect();
    assert_eq!(&cols[2..7], ["test", "dev-a", "1", "notes:201", "1"], "{list}");
    // The list names the routing key, never the session's secret.
    let resp = a1.resp_path();
    let (key, secret) = resp.trim_start_matches("/sync?s=").split_once('.').expect("key.secret");
    assert_eq!(cols[0], key, "{list}");
    assert!(!list.contains(secret), "{list}");
    // Session B of the same user is refused with SyncML 503; nothing of it is kept.
    let b1 =
        server.post("/sync", &message("dev-b", "1", 1, Some(("test", PASSWORD)), &alert(201, "b"), true));
    assert_eq!((b1.status, b1.hdr_status()), (200, 503), "{}", b1.body);
    assert!(b1.body.contains("<Final/>") || b1.body.contains("<Final></Final>"), "{}", b1.body);
    assert_eq!(server.admin(&["session", "list"]).expect("list").lines().count(), 2);
    // A finishes; then B gets in.
    let path = a1.resp_path();
    server.post(&path, &message("dev-a", "1", 2, None, &sync(&[]), true));
    server.post(&path, &message("dev-a", "1", 3, None, "", true));
    assert_eq!(server.admin(&["session", "list"]).expect("list").lines().count(), 1, "only the header");
    let b2 =
        server.post("/sync", &message("dev-b", "2", 1, Some(("test", PASSWORD)), &alert(201, "b"), true));
    assert_eq!(b2.hdr_status(), 212, "{}", b2.body);
    let s = server.scrape();
    assert_eq!(s.value("shardsync_sessions_failed_total", &[("reason", "limit")]), Some(1.0));
    assert_eq!(s.value("shardsync_sessions_active", &[]), Some(1.0));
    assert!(server.log_text().contains("session refused: user at the concurrent session cap"));
}

#[test]
fn an_abandoned_session_expires_without_traffic_and_frees_its_slot() {
    let server = start(&["--max-sessions-per-user", "1", "--session-timeout-secs", "1"], None);
    let a1 =
        server.post("/sync", &message("dev-gone", "1", 1, Some(("test", PASSWORD)), &alert(201, "g"), true));
    assert_eq!(a1.hdr_status(), 212);
    assert_eq!(server.scrape().value("shardsync_sessions_active", &[]), Some(1.0));
    // No request at all while it idles past the timeout: its shard ends it by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.scrape().value("shardsync_sessions_active", &[]) != Some(0.0) {
        assert!(Instant::now() < deadline, "the idle session was not expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = server.scrape();
    assert_eq!(s.value("shardsync_sessions_failed_total", &[("reason", "expired")]), Some(1.0));
    assert_eq!(server.admin(&["session", "list"]).expect("list").lines().count(), 1, "only the header");
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("session finished") && l.contains("device=dev-gone "))
        .expect("log line");
    assert!(line.contains("result=\"expired\"") && line.contains("sync_types=notes:201"), "{line}");
    // The slot is free: another device of the user gets in.
    let b1 =
        server.post("/sync", &message("dev-new", "1", 1, Some(("test", PASSWORD)), &alert(201, "n"), true));
    assert_eq!(b1.hdr_status(), 212, "{}", b1.body);
    assert_eq!(log.matches("session finished").count(), 1);
}

fn device_rows(out: &str) -> Vec<Vec<String>> {
    out.lines().skip(1).map(|l| l.split('\t').map(str::to_owned).collect()).collect()
}

/// `device list` and `device forget` through the running server (admin socket),
/// or directly on PostgreSQL; the forgotten device's next two-way sync is slow (508).
fn devices_and_forget(server: &Server, store: Option<&str>) {
    session(server, "dev-1", "1", 201, &[("Add", "x1", "one"), ("Add", "x2", "two")]);
    session(server, "dev-2", "1", 201, &[]);
    let admin = |args: &[&str]| match store {
        Some(url) => {
            let mut all = args.to_vec();
            all.extend(["--store", url]);
            let (ok, out, err) = run(&all, "");
            if ok {
                Ok(out)
            } else {
                Err(err)
            }
        }
        None => server.admin(args),
    };
    let rows = device_rows(&admin(&["device", "list", "test"]).expect("device list"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][3].as_str(), rows[0][4].as_str()), ("dev-1", "notes:201", "2"));
    assert_eq!((rows[1][0].as_str(), rows[1][3].as_str()), ("dev-2", "notes:201"));
    assert!(rows[0][1].ends_with('Z') && rows[0][2].ends_with('Z'), "{rows:?}");
    let err = admin(&["device", "forget", "test", "dev-9"]).expect_err("unknown device");
    assert!(err.contains("has no device dev-9"), "{err}");
    let err = admin(&["device", "list", "nobody"]).expect_err("unknown user");
    assert!(err.contains("no such user"), "{err}");
    let out = admin(&["device", "forget", "test", "dev-1"]).expect("forget");
    assert!(out.contains("forgotten"), "{out}");
    let rows = device_rows(&admin(&["device", "list", "test"]).expect("device list"));
    assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["dev-2"]);
    // dev-1 asks for a two-way sync: the server has no state for it any more.
    let r =
        server.post("/sync", &message("dev-1", "2", 1, Some(("test", PASSWORD)), &alert(200, "n2"), true));
    assert_eq!(r.hdr_status(), 212);
    assert!(r.body.contains("<Data>508</Data>"), "a slow sync is required: {}", r.body);
}

#[test]
fn device_list_and_forget_on_the_embedded_store_while_serving() {
    let server = start(&[], None);
    devices_and_forget(&server, None);
}

#[test]
fn device_list_forget_and_session_list_on_postgres() {
    if support_pg::skip() {
        return;
    }
    let pg = support_pg::PgServer::start();
    let url = pg.create_db("ops");
    let (ok, _, err) = run(&["migrate", "--store", &url], "");
    assert!(ok, "{err}");
    let server = start(&[], Some(&url));
    devices_and_forget(&server, Some(&url));
    // The admin socket of a PostgreSQL node answers `session list` too.
    let list = server.admin(&["session", "list"]).expect("session list");
    assert!(list.lines().any(|l| l.contains("\tdev-1\t")), "{list}");
    // A commit that fails (PostgreSQL stopped) does not end the session: the
    // message gets 503, and the client's retry completes it once the store is back.
    let r1 =
        server.post("/sync", &message("dev-3", "1", 1, Some(("test", PASSWORD)), &alert(201, "1"), true));
    assert_eq!(r1.hdr_status(), 212);
    let path = r1.resp_path();
    let m2 = message("dev-3", "1", 2, None, &sync(&[("Add", "z1", "kept")]), true);
    pg.stop();
    let r2 = server.post(&path, &m2);
    assert_eq!(r2.status, 503, "{}", r2.body);
    pg.start_again();
    assert!(pg.wait_ready(Duration::from_secs(30)), "PostgreSQL back");
    let deadline = Instant::now() + Duration::from_secs(30);
    let r2 = loop {
        let r = server.post(&path, &m2);
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((r2.status, r2.hdr_status()), (200, 200), "{}", r2.body);
    let r3 = server.post(&path, &message("dev-3", "1", 3, None, "", true));
    assert_eq!(r3.hdr_status(), 200);
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("session finished") && l.contains("device=dev-3 "))
        .unwrap_or_else(|| panic!("no session line for dev-3:\n{log}"));
    assert!(line.contains("result=\"completed\"") && line.contains("from_client=add=1 "), "{line}");
    let s = server.scrape();
    assert_eq!(s.sum("shardsync_sessions_failed_total", &[]), 0.0);
    assert!(s.sum("shardsync_store_commit_failures_total", &[]) >= 1.0);
    drop(server);
    let _ = Path::new(&url);
}
