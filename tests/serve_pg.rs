//! End to end on PostgreSQL: `shardsync serve --store postgres://…` refuses
//! an unmigrated database (naming the fix), `shardsync migrate` and
//! `shardsync user add --store` prepare it, and a SyncML message over HTTP
//! is answered with the engine's writes committed in PostgreSQL.

mod support_pg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/vnd.syncml+xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Kills the server we started (by its PID) when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(url: &str, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--store", url, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--shards", "1", "--pin", "false", "--shard-port-base", "0"])
        .env_remove("SHARDSYNC_STORE")
        .stdin(Stdio::null());
    cmd
}

fn init_message(device: &str) -> String {
    // test:test, basic auth; slow sync (201) of the address book.
    format!(
        "<?xml version=\"1.0\"?><SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD>\
         <VerProto>SyncML/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID>\
         <Target><LocURI>http://127.0.0.1/sync</LocURI></Target><Source><LocURI>{device}</LocURI></Source>\
         <Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type>\
         <Format xmlns='syncml:metinf'>b64</Format></Meta><Data>dGVzdDp0ZXN0</Data></Cred>\
         <Meta><MaxMsgSize xmlns='syncml:metinf'>150000</MaxMsgSize></Meta></SyncHdr><SyncBody>\
         <Alert><CmdID>1</CmdID><Data>201</Data><Item><Target><LocURI>addressbook</LocURI></Target>\
         <Source><LocURI>./addressbook</LocURI></Source><Meta><Anchor xmlns='syncml:metinf'>\
         <Next>A1</Next></Anchor></Meta></Item></Alert><Final/></SyncBody></SyncML>"
    )
}

#[test]
fn serve_on_postgres_end_to_end() {
    if support_pg::skip() {
        return;
    }
    let pg = support_pg::PgServer::start();
    let url = pg.create_db("e2e");

    // Unmigrated: serve refuses and names the command that fixes it.
    let out = serve(&url, free_port()).stdout(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shardsync migrate --store"), "{err}");

    let out = Command::new(BIN).args(["migrate", "--store", &url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied"));

    let mut add = Command::new(BIN)
        .args(["user", "add", "test", "--store", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"test\n").unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN).args(["user", "list", "--store", &url]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "test");

    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let server = Server(serve(&url, port).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/health", "").map(|r| r.0) != Some(200) {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "server did not come up:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = http(port, "POST", "/sync", &init_message("e2e-phone")).expect("answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("SyncML"), "{body}");

    // The engine's writes went to PostgreSQL.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let devices: i64 = client
        .query_one("SELECT count(*) FROM devices WHERE user_name = 'test' AND device_id = 'e2e-phone'", &[])
        .unwrap()
        .get(0);
    assert_eq!(devices, 1, "answer was: {body}");
    drop(server);
}

/// A later message of the session `init_message` opened.
fn next_message(device: &str, msg_id: u32, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD>\
         <VerProto>SyncML/1.2</VerProto><SessionID>1</SessionID><MsgID>{msg_id}</MsgID>\
         <Target><LocURI>http://127.0.0.1/sync</LocURI></Target><Source><LocURI>{device}</LocURI></Source>\
         </SyncHdr><SyncBody>{body}</SyncBody></SyncML>"
    )
}

fn start_node(url: &str, dir: &std::path::Path, name: &str) -> (Server, u16) {
    let port = free_port();
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let server = Server(serve(url, port).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/health", "").map(|r| r.0) != Some(200) {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(Instant::now() < deadline, "{name} did not come up:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

/// Two nodes on one database: a session goes back and forth between them.
/// Resends get the stored reply byte for byte on either node, a node whose
/// cached copy of the session is stale notices (nothing applied twice), and
/// a message whose predecessors are missing is refused.
#[test]
fn sessions_continue_and_resends_are_answered_on_any_node() {
    if support_pg::skip() {
        return;
    }
    let pg = support_pg::PgServer::start();
    let url = pg.create_db("handover");
    let out = Command::new(BIN).args(["migrate", "--store", &url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut add = Command::new(BIN)
        .args(["user", "add", "test", "--store", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"test\n").unwrap();
    assert!(add.wait().unwrap().success());
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = start_node(&url, dir.path(), "a");
    let (_b, b) = start_node(&url, dir.path(), "b");
    let dev = "handover-phone";
    let post = |port: u16, body: &str| http(port, "POST", "/sync", body).expect("answer");
    // Later messages go where the client was told (RespURI: the session's key and secret).
    let post_to = |port: u16, path: &str, body: &str| http(port, "POST", path, body).expect("answer");

    // Message 1 on A; its resend on B gets the same bytes.
    let (s1, r1) = post(a, &init_message(dev));
    assert_eq!(s1, 200, "{r1}");
    assert!(r1.contains("<Data>212</Data>") || r1.contains("<Data>200</Data>"), "{r1}");
    assert_eq!(post(b, &init_message(dev)), (200, r1.clone()), "resend on the other node");
    let uri = r1.split("<RespURI>").nth(1).and_then(|r| r.split("</RespURI>").next()).expect("RespURI");
    let path = uri.split_once("://").map_or(uri, |(_, r)| r);
    let path = path[path.find('/').expect("a path")..].replace("&amp;", "&");
    assert!(path.starts_with("/sync?s=") && path.contains('.'), "{path}");

    // Message 2 (two Adds) on B.
    let adds: String = (1..=2)
        .map(|i| {
            format!(
                "<Add><CmdID>{}</CmdID><Meta><Type xmlns='syncml:metinf'>text/vcard</Type></Meta><Item>\
                 <Source><LocURI>L{i}</LocURI></Source><Data>BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Person {i}\r\n\
                 N:{i};Person;;;\r\nEND:VCARD\r\n</Data></Item></Add>",
                10 + i
            )
        })
        .collect();
    let m2 = next_message(
        dev,
        2,
        &format!(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd>\
             <TargetRef>{dev}</TargetRef><SourceRef>http://127.0.0.1/sync</SourceRef><Data>200</Data></Status>\
             <Sync><CmdID>2</CmdID><Target><LocURI>addressbook</LocURI></Target>\
             <Source><LocURI>./addressbook</LocURI></Source>{adds}</Sync><Final/>"
        ),
    );
    let (s2, r2) = post_to(b, &path, &m2);
    assert_eq!(s2, 200, "{r2}");
    assert_eq!(r2.matches("<Cmd>Add</Cmd>").count(), 2, "{r2}");

    // The same message 2 on A, whose cached copy still stands at message 1:
    // the store refuses its commit, A reloads and answers the stored reply.
    assert_eq!(post_to(a, &path, &m2), (200, r2.clone()), "stale copy on A");
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let count = |db: &mut postgres::Client| -> i64 {
        db.query_one("SELECT count(*) FROM items WHERE user_name = 'test' AND NOT deleted", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(count(&mut db), 2, "an Add was applied twice");

    // A message whose predecessor no node answered: refused, nothing written.
    let (s4, _) = post_to(b, &path, &next_message(dev, 4, "<Final/>"));
    assert_eq!(s4, 404);

    // Message 3 (closing the session) on A goes on from B's state.
    let m3 = next_message(
        dev,
        3,
        "<Status><CmdID>1</CmdID><MsgRef>2</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd>\
         <TargetRef>x</TargetRef><SourceRef>y</SourceRef><Data>200</Data></Status><Final/>",
    );
    let (s3, r3) = post_to(a, &path, &m3);
    assert_eq!(s3, 200, "{r3}");
    let anchors: i64 = db
        .query_one(
            "SELECT count(*) FROM sync_states WHERE user_name = 'test' AND device_id = $1 AND client_anchor = 'A1'",
            &[&dev],
        )
        .unwrap()
        .get(0);
    assert_eq!(anchors, 1, "the session did not complete: {r3}");
    assert_eq!(count(&mut db), 2);
    let continued = ["a", "b"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default())
        .filter(|log| log.contains("session continued from the store"))
        .count();
    assert_eq!(continued, 2, "both nodes continued the session from the store");
}
