//! The `shardsync` binary: `serve` answers /health, /shards and /sync (a
//! message without a device id is a 400), exits 0 on SIGTERM; start-up
//! problems are one line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");

fn get(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Starts `serve` on ephemeral ports and returns the child and its listen address.
fn serve(extra: &[&str]) -> (Child, String, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "2", "--log-level", "info"])
        .arg("--data-dir")
        .arg(data.path())
        .args(extra)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.split("listen=").nth(1) {
            break rest.split_whitespace().next().unwrap().trim_matches('"').to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr, data)
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let (mut child, addr, _data) = serve(&[]);
    let health = get(&addr, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok"), "{health}");
    let shards = get(&addr, "GET /shards HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(shards.contains("\"shards\":[{\"id\":0,"), "{shards}");
    let body = "<SyncML><SyncHdr><VerDTD>1.2</VerDTD></SyncHdr><SyncBody/></SyncML>";
    let sync = get(
        &addr,
        &format!(
            "POST /sync HTTP/1.1\r\nContent-Type: application/vnd.syncml+xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(sync.starts_with("HTTP/1.1 400"), "{sync}");
    assert!(sync.contains("device id"), "{sync}");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn low_memlock_is_a_one_line_error() {
    let data = tempfile::tempdir().unwrap();
    let script = format!(
        "ulimit -l 256 && exec {BIN} serve --listen 127.0.0.1:0 --shards 2 --data-dir {}",
        data.path().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    if out.status.success() {
        return; // could not lower the limit here
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ulimit -l"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn port_in_use_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--shards", "1", "--shard-port-base", "0"])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--listen",
        "--data-dir",
        "--shards",
        "--shard-port-base",
        "--public-url",
        "--config",
        "--log-level",
        "--max-body",
        "--header-timeout-ms",
        "--body-timeout-ms",
        "--idle-timeout-ms",
        "--io-memory",
        "SHARDSYNC_LISTEN",
    ] {
        assert!(help.contains(opt), "{opt} missing from\n{help}");
    }
}
