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
