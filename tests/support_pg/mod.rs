//! A private PostgreSQL server for tests and benches.
//!
//! [`PgServer::start`] finds the server binaries (`pg_config --bindir`,
//! `/usr/lib/postgresql/*/bin`, `PATH`), runs `initdb` in a fresh temporary
//! directory under `target/` (a real disk: fsync costs what it costs) and
//! starts the server with `pg_ctl` on a free loopback port and a private
//! Unix socket directory, listening only on 127.0.0.1, `fsync` on. As root
//! (PostgreSQL refuses to run as root) the binaries run as the `postgres`
//! OS user through `runuser`. Dropping the value stops exactly this server
//! (`pg_ctl stop`, then SIGKILL by its PID); no other server is touched.
//!
//! Used by tests with `mod support_pg;` and by benches with
//! `#[path = "../tests/support_pg/mod.rs"] mod support_pg;`.
//! Set `SHARDSYNC_SKIP_PG=1` to skip PostgreSQL tests on machines without it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The database role the tests connect as (created by `initdb -U`).
pub const SUPERUSER: &str = "shardsync";

/// A running private PostgreSQL server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    /// `Some(name)`: run binaries as this OS user (we are root).
    run_as: Option<String>,
    port: u16,
}

/// Whether PostgreSQL tests should be skipped (`SHARDSYNC_SKIP_PG=1`).
pub fn skip() -> bool {
    if std::env::var_os("SHARDSYNC_SKIP_PG").is_some_and(|v| v != "0" && !v.is_empty()) {
        eprintln!("SHARDSYNC_SKIP_PG is set: skipping a PostgreSQL test");
        return true;
    }
    false
}

fn find_bindir() -> PathBuf {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return dir;
        }
    }
    // Debian/Ubuntu keep the server binaries per major version; take the newest.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has_tools(&dir) {
            return dir;
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package \
         (apt-get install postgresql) or set SHARDSYNC_SKIP_PG=1"
    );
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// (uid, gid) of an OS user, from /etc/passwd.
fn os_user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?))).flatten()
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

impl PgServer {
    /// initdb + start on a free port. Panics with the server log on failure.
    pub fn start() -> PgServer {
        let bindir = find_bindir();
        let run_as = is_root().then(|| "postgres".to_string());
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&root).expect("target tmp dir");
        let dir = tempfile::Builder::new().prefix("pg-").tempdir_in(&root).expect("temp dir");
        std::fs::create_dir(dir.path().join("sock")).expect("socket dir");
        if let Some(user) = &run_as {
            let (uid, gid) = os_user_ids(user)
                .unwrap_or_else(|| panic!("running as root needs the OS user {user:?} (postgresql package)"));
            chown_tree(dir.path(), uid, gid);
        }
        let mut server = PgServer { dir, bindir, run_as, port: 0 };
        let data = server.data_dir();
        let out = server.tool(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        // Private port; retried in case another process took the free port meanwhile.
        for _ in 0..5 {
            server.port = free_port();
            if server.start_server() {
                return server;
            }
        }
        panic!("PostgreSQL did not start: {}", server.log());
    }

    /// The server's directory (data, WAL, log): grows as the server stores data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn tool(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bindir.join(name);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    fn start_server(&self) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
             -c max_connections=100 -c shared_buffers=128MB -c max_wal_size=1GB",
            self.port,
            self.dir.path().join("sock").display()
        );
        let data = self.data_dir().display().to_string();
        let log = self.log_path().display().to_string();
        let out = self.tool("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
        out.status.success()
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test server: {e}\n{}", self.log()));
        client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).expect("create database");
        self.url(name)
    }

    /// The postmaster's PID (from `postmaster.pid`).
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Stops the server (fast: open sessions are terminated).
    pub fn stop(&self) {
        let data = self.data_dir().display().to_string();
        let out = self.tool("pg_ctl", &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the stopped server again on the same port.
    pub fn start_again(&self) {
        assert!(self.start_server(), "PostgreSQL did not restart: {}", self.log());
    }

    /// Stops and starts the server (every connection is cut).
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Waits until the server accepts connections.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let pid = self.pid();
        let data = self.data_dir().display().to_string();
        let stopped = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "-t", "20", "stop"]);
        if !stopped.status.success() {
            if let Some(pid) = pid {
                // Only the postmaster we started, by its PID.
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}
