//! Self-tests of the real-client test support (`tests/support/`): the libcurl shim really is
//! needed and works, and the server process helpers start, probe, stop, kill and restart a
//! server and add users (checked with a stand-in server, so they are known to work before the
//! real `shardsync serve` is there).

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::items::{self, GenOptions};
use support::server::{self, http_get_status, ServerProcess};
use support::syncevo::{ClientConfig, Kind, SyncEvoClient, SyncMode};
use support::Scratch;

const USER: &str = "test";
const PASSWORD: &str = "test";

/// Without the shim, Debian's client dies with SIGSEGV on its first POST; with it, it gets to
/// talk HTTP. Needs no SyncML server: a throwaway listener answers every request with a 500.
#[test]
fn curl_shim_prevents_the_client_crash() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let answerer = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).ok();
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    let mut buf = [0u8; 65536];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let url = format!("http://127.0.0.1:{port}/sync");
    let mut cfg = ClientConfig::new(&url, USER, PASSWORD, "shim-check", Kind::Contacts);
    cfg.retry_duration_s = 1;
    cfg.retry_interval_s = 1;
    cfg.timeout = Duration::from_secs(60);
    let client = SyncEvoClient::new(cfg).expect("configure");
    items::write_items(client.data_dir(), Kind::Contacts, "s", 0..1, GenOptions::default());

    let without = client.spawn_sync_with(SyncMode::TwoWay, None).wait();
    let with = client.sync(SyncMode::TwoWay);
    stop.store(true, Ordering::SeqCst);
    answerer.join().expect("answerer thread");

    assert_eq!(
        without.signal,
        Some(libc::SIGSEGV),
        "expected the unpatched client to crash:\n{}",
        without.diagnostics()
    );
    assert_eq!(with.signal, None, "client crashed even with the shim:\n{}", with.diagnostics());
    assert!(with.exit_code.is_some() && !with.timed_out, "{}", with.diagnostics());
    assert_ne!(with.status, Some(200), "a 500 answer cannot be a successful sync:\n{}", with.diagnostics());
}

// ---------------------------------------------------------------------------------------------
// server process helpers

/// A stand-in for `shardsync` with the same command contract: `user add NAME --data-dir DIR`
/// (password on stdin) and `serve --listen HOST:PORT --data-dir DIR` answering `GET /health`.
const FAKE_SERVER: &str = r#"#!/usr/bin/python3
import http.server, os, signal, sys
args = sys.argv[1:]
data_dir = args[args.index("--data-dir") + 1]
if args[:2] == ["user", "add"]:
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "users"), "a") as f:
        f.write(args[2] + ":" + sys.stdin.readline().strip() + "\n")
    sys.exit(0)
if args[:1] == ["serve"]:
    host, port = args[args.index("--listen") + 1].rsplit(":", 1)
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *a):
            pass
    server = http.server.HTTPServer((host, int(port)), Health)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print("fake server on", port, flush=True)
    server.serve_forever()
sys.exit(2)
"#;

#[test]
fn server_process_lifecycle() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("fake-server");
    let bin = scratch.path().join("fake-shardsync");
    std::fs::write(&bin, FAKE_SERVER).expect("write fake server");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data_dir = scratch.path().join("data");

    server::add_user(&bin, &data_dir, "alice", "s3cret pass").expect("user add");
    let users = std::fs::read_to_string(data_dir.join("users")).expect("users file");
    assert_eq!(users, "alice:s3cret pass\n");

    let mut s = ServerProcess::start(&bin, &[], &data_dir).expect("start");
    let port = s.port();
    assert_eq!(s.sync_url(), format!("http://127.0.0.1:{port}/sync"));
    assert_eq!(http_get_status(port, "/health"), Some(200));
    assert_eq!(http_get_status(port, "/nope"), Some(404));

    let status = s.stop().expect("exits on SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");
    assert_eq!(http_get_status(port, "/health"), None);

    s.restart().expect("restart after stop");
    assert_eq!(s.port(), port, "restart keeps the port");
    assert_eq!(http_get_status(port, "/health"), Some(200));

    let pid = s.pid().expect("running") as i32;
    s.kill9();
    // SAFETY: signal 0 only probes the PID we just killed and reaped.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "killed server still exists");
    assert_eq!(http_get_status(port, "/health"), None);

    s.restart().expect("restart after kill -9");
    assert_eq!(http_get_status(port, "/health"), Some(200));
    let pid = s.pid().expect("running") as i32;
    drop(s);
    // SAFETY: as above.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "drop must stop the server");
}

#[test]
fn a_server_that_exits_fails_loudly() {
    let scratch = Scratch::new("broken-server");
    let err = match ServerProcess::start(std::path::Path::new("/bin/false"), &[], &scratch.path().join("d")) {
        Ok(_) => panic!("/bin/false cannot serve"),
        Err(e) => e,
    };
    assert!(err.contains("exited"), "{err}");
}
