//! File modes of a real `shardsync serve` and `shardsync user add` started
//! under umask 022: the data dir is 0700, the store file and the admin socket
//! 0600 (another local user can read none of them), and a data dir / store
//! left by an older version with 0755 / 0644 is tightened on start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shardsync");

/// A `serve` we started, killed by PID when the test ends.
struct Server {
    child: Child,
    log: PathBuf,
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

/// `shardsync ARGS` run by `sh` after `umask 022`.
fn under_umask_022(args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("umask 022; exec \"$@\"").arg("sh").arg(BIN).args(args);
    cmd.env_remove("SHARDSYNC_STORE").env_remove("SHARDSYNC_DATA_DIR");
    cmd
}

fn user_add(data: &Path) {
    let mut child = under_umask_022(&["user", "add", "test", "--data-dir", data.to_str().expect("utf-8")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("user add");
    child.stdin.take().expect("stdin").write_all(b"s3cretPW\n").expect("password");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
}

fn health(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200")
}

fn serve(data: &Path, log: PathBuf) -> Server {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = under_umask_022(&["serve", "--listen", &listen, "--shards", "1", "--shard-port-base", "0"])
        .args(["--pin", "false", "--data-dir", data.to_str().expect("utf-8")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("serve");
    let server = Server { child, log };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !health(port) {
        assert!(Instant::now() < deadline, "server did not start: {}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

impl Server {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o7777
}

#[test]
fn a_new_data_dir_store_and_admin_socket_are_private_under_umask_022() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The control: this umask really makes 0755 directories and 0644 files.
    let probe = tmp.path().join("probe");
    let status = Command::new("sh")
        .arg("-c")
        .arg("umask 022; mkdir \"$1\"; : > \"$1/f\"")
        .arg("sh")
        .arg(&probe)
        .status()
        .expect("sh");
    assert!(status.success());
    assert_eq!((mode(&probe), mode(&probe.join("f"))), (0o755, 0o644));

    let data = tmp.path().join("data");
    let server = serve(&data, tmp.path().join("serve.log"));
    let socket = data.join("admin.sock");
    assert_eq!(mode(&data), 0o700, "data dir");
    assert_eq!(mode(&data.join("shardsync.redb")), 0o600, "store file");
    assert!(std::fs::symlink_metadata(&socket).expect("socket").file_type().is_socket(), "a socket");
    assert_eq!(mode(&socket), 0o600, "admin socket");
    let entries: Vec<String> = std::fs::read_dir(&data)
        .expect("read data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for name in &entries {
        let m = mode(&data.join(name));
        assert_eq!(m & 0o077, 0, "{name} is {m:o}: readable by others");
    }
    assert!(!server.log_text().contains("permissions"), "nothing to tighten: {}", server.log_text());
    drop(server);

    // `user add` on a data dir it creates: the same modes.
    let data2 = tmp.path().join("data2");
    user_add(&data2);
    assert_eq!((mode(&data2), mode(&data2.join("shardsync.redb"))), (0o700, 0o600));
}

#[test]
fn a_data_dir_and_store_left_readable_by_an_older_version_are_tightened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    user_add(&data);
    let store = data.join("shardsync.redb");
    // What a version before the fix left under umask 022.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).expect("chmod store");
    let before = std::fs::metadata(&store).expect("store").ino();

    let server = serve(&data, tmp.path().join("serve.log"));
    assert_eq!(mode(&data), 0o700, "data dir tightened");
    assert_eq!(mode(&store), 0o600, "store tightened");
    assert_eq!(std::fs::metadata(&store).expect("store").ino(), before, "the same file, not a new one");
    let log = server.log_text();
    assert!(log.contains("permissions 755 -> 700"), "a log line for the dir: {log}");
    assert!(log.contains("permissions 644 -> 600"), "a log line for the store: {log}");
    drop(server);

    // The user is still there: the store was opened, not replaced.
    let out = Command::new(BIN)
        .args(["user", "list", "--data-dir", data.to_str().expect("utf-8")])
        .env_remove("SHARDSYNC_STORE")
        .output()
        .expect("user list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("test"));
}
