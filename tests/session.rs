//! Session handling through the real server: RespURI tokens, resends, idle expiry, unknown
//! sessions and malformed bodies (plain HTTP, no SyncML client library).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");

struct Server {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
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

fn start(extra: &[&str]) -> Server {
    let data = tempfile::tempdir().expect("tempdir");
    let mut add = Command::new(BIN)
        .args(["user", "add", "test", "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("user add");
    add.stdin.take().expect("stdin").write_all(b"test\n").expect("password");
    assert!(add.wait().expect("user add").success());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--shards", "2", "--shard-port-base", "0", "--data-dir"])
        .arg(data.path())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, addr, _data: data }
}

/// One POST; returns (status code, body).
fn post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.syncml+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn msg(msg_id: u32, body: &str) -> String {
    let cred = if msg_id == 1 {
        "<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type></Meta><Data>dGVzdDp0ZXN0</Data></Cred>"
    } else {
        ""
    };
    format!(
        "<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto><SessionID>1</SessionID><MsgID>{msg_id}</MsgID><Target><LocURI>http://x/sync</LocURI></Target><Source><LocURI>dev-1</LocURI><LocName>test</LocName></Source>{cred}</SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"
    )
}

const ALERT: &str = "<Alert><CmdID>1</CmdID><Data>201</Data><Item><Target><LocURI>contacts</LocURI></Target><Source><LocURI>./c</LocURI></Source><Meta><Anchor xmlns='syncml:metinf'><Next>1</Next></Anchor></Meta></Item></Alert>";

fn resp_path(reply: &str) -> String {
    let uri = reply.split("<RespURI>").nth(1).and_then(|r| r.split("</RespURI>").next()).expect("RespURI");
    let path =
        uri.split_once("://").map(|(_, r)| r).and_then(|r| r.find('/').map(|i| &r[i..])).expect("path");
    path.replace("&amp;", "&")
}

#[test]
fn resp_uri_resend_and_idle_expiry() {
    let server = start(&["--session-timeout-secs", "1"]);
    let (code, reply) = post(&server.addr, "/sync", &msg(1, ALERT));
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains("<Data>212</Data>"), "{reply}");
    let path = resp_path(&reply);
    assert!(path.starts_with("/sync?s="), "{path}");
    // Message 2 at the RespURI; then the same message again gets the same bytes.
    let m2 = msg(2, "<Sync><CmdID>2</CmdID><Target><LocURI>contacts</LocURI></Target><Source><LocURI>./c</LocURI></Source></Sync>");
    let (code, first) = post(&server.addr, &path, &m2);
    assert_eq!(code, 200, "{first}");
    let (code, again) = post(&server.addr, &path, &m2);
    assert_eq!((code, &again), (200, &first), "a resend is answered from the stored reply");
    // Idle past the timeout: the session is gone.
    std::thread::sleep(Duration::from_millis(2100));
    let (code, body) = post(&server.addr, &path, &msg(3, ""));
    assert_eq!(code, 404, "{body}");
}

#[test]
fn unknown_session_and_bad_bodies() {
    let server = start(&[]);
    let (code, _) = post(&server.addr, "/sync?s=0123456789abcdef", &msg(2, ""));
    assert_eq!(code, 404, "a token that matches no session");
    let (code, _) = post(&server.addr, "/sync", "<SyncML><SyncHdr><VerDTD>1.2");
    assert_eq!(code, 400, "truncated XML");
    let (code, _) = post(&server.addr, "/sync", "not xml at all");
    assert_eq!(code, 400);
    // The server still serves.
    let (code, reply) = post(&server.addr, "/sync", &msg(1, ALERT));
    assert_eq!(code, 200, "{reply}");
    let _ = Path::new(BIN);
}
