//! Servers the real-client tests talk to: the `shardsync` binary under test ([`ServerProcess`])
//! and SyncEvolution's own SyncML server as a reference ([`RefServer`]). Both listen on
//! 127.0.0.1 only, and both are stopped by PID (or process group) when dropped.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, tail_file, wait_until, Scratch};

/// `GET /health` on 127.0.0.1:port; returns the HTTP status code.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let head = std::str::from_utf8(&buf[..got]).ok()?;
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a PID (or -PGID) this harness started.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A running `shardsync serve` on 127.0.0.1 with its own log files.
pub struct ServerProcess {
    bin: PathBuf,
    args: Vec<String>,
    data_dir: PathBuf,
    port: u16,
    child: Option<Child>,
    logs: Scratch,
    starts: u32,
}

impl ServerProcess {
    /// Starts `BIN serve --listen 127.0.0.1:PORT --data-dir DATA_DIR ARGS...` on a free port and
    /// waits until `GET /health` answers 200.
    pub fn start(bin: &Path, args: &[&str], data_dir: &Path) -> Result<ServerProcess, String> {
        let mut last_err = String::new();
        // A port picked by binding port 0 can be taken by someone else before the server binds it.
        for _ in 0..3 {
            let mut server = ServerProcess {
                bin: bin.to_owned(),
                args: args.iter().map(|s| s.to_string()).collect(),
                data_dir: data_dir.to_owned(),
                port: free_port(),
                child: None,
                logs: Scratch::new("server-logs"),
                starts: 0,
            };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The SyncML URL for clients.
    pub fn sync_url(&self) -> String {
        format!("http://127.0.0.1:{}/sync", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Path of the current (latest) server log.
    pub fn log_path(&self) -> PathBuf {
        self.logs.path().join(format!("serve-{}.log", self.starts))
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        fs::create_dir_all(&self.data_dir).map_err(|e| format!("create {}: {e}", self.data_dir.display()))?;
        self.starts += 1;
        let log = self.log_path();
        let out = fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        // Shard ports default to the listen port + 1.., which tests running
        // side by side may hold: ephemeral ones unless a test asks.
        if !self.args.iter().any(|a| a.starts_with("--shard-port-base")) {
            cmd.env("SHARDSYNC_SHARD_PORT_BASE", "0");
        }
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe. It takes the server down with the
        // test process if the run is interrupted before the Drop guard could stop it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("RUST_LOG", std::env::var("SHARDSYNC_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let port = self.port;
        let mut exited = None;
        let up = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                exited = Some(status);
                return true;
            }
            http_get_status(port, "/health") == Some(200)
        });
        if let Some(status) = exited {
            self.child = None;
            return Err(format!(
                "`{} serve` exited with {status} before answering GET /health; log:\n{}",
                self.bin.display(),
                tail_file(&log, 4000)
            ));
        }
        if !up {
            self.kill9();
            return Err(format!(
                "`{} serve` did not answer GET /health with 200 within 30 s; log:\n{}",
                self.bin.display(),
                tail_file(&log, 4000)
            ));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 15 s; returns the exit status if the server exited by itself.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILL now (crash test).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data dir (after [`stop`] or [`kill9`]).
    ///
    /// [`stop`]: ServerProcess::stop
    /// [`kill9`]: ServerProcess::kill9
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            self.stop();
        }
        // The old socket may linger briefly; retry for a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        tail_file(&self.log_path(), 8000)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `BIN user add NAME --data-dir DIR` with the password on stdin.
pub fn add_user(bin: &Path, data_dir: &Path, name: &str, password: &str) -> Result<(), String> {
    let mut child = Command::new(bin)
        .args(["user", "add", name, "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(format!("{password}\n").as_bytes())
        .map_err(|e| format!("writing the password: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "`{} user add {name}` failed ({}):\n{}{}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Options for [`RefServer::start`].
#[derive(Clone, Debug)]
pub struct RefServerOptions {
    pub username: String,
    pub password: String,
    /// Client device ids the server accepts (it rejects unknown devices with HTTP 500).
    pub device_ids: Vec<String>,
    /// MaxMsgSize the server announces.
    pub max_msg_size: u32,
    /// Server-side SyncEvolution loglevel (1 = errors only; 4/5 dump messages).
    pub loglevel: u32,
}

impl Default for RefServerOptions {
    fn default() -> Self {
        RefServerOptions {
            username: "test".into(),
            password: "test".into(),
            device_ids: vec!["sc-harness-client-1".into()],
            max_msg_size: 150_000,
            loglevel: 1,
        }
    }
}

/// Runs Debian's `syncevo-http-server` on 127.0.0.1 (see the script's comment).
const HTTP_FRONTEND_PY: &str = include_str!("../../perf/syncevo-loopback.py");

/// SyncEvolution's own SyncML server (`syncevo-http-server` in front of `syncevo-dbus-server`,
/// inside a private `dbus-run-session`), with file-backed databases, on 127.0.0.1.
///
/// The SyncML URL is `http://127.0.0.1:PORT/syncevolution`. The server picks the per-device
/// config by the client's device id, so every client device must be listed in the options.
/// Its databases (`db/addressbook`, `db/calendar`, `db/todo`, `db/memo`) hold vCard 3.0,
/// iCalendar 2.0 and text files and are shared by all devices.
pub struct RefServer {
    dir: Scratch,
    port: u16,
    opts: RefServerOptions,
    /// The `dbus-run-session` process; it leads its own process group.
    session: Option<Child>,
}

impl RefServer {
    pub fn start(opts: RefServerOptions) -> Result<RefServer, String> {
        let dir = Scratch::new("refserver");
        let mut server = RefServer { dir, port: 0, opts, session: None };
        server.configure()?;
        let mut last_err = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn sync_url(&self) -> String {
        format!("http://127.0.0.1:{}/syncevolution", self.port)
    }

    pub fn options(&self) -> &RefServerOptions {
        &self.opts
    }

    /// The server's database directory for a datastore (`addressbook`, `calendar`, `todo`, `memo`).
    pub fn db_dir(&self, datastore: &str) -> PathBuf {
        self.dir.path().join("db").join(datastore)
    }

    fn command(&self, program: &str) -> Command {
        let root = self.dir.path();
        let mut cmd = Command::new(program);
        cmd.env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env("LC_ALL", "C.UTF-8")
            .env("TZ", "UTC");
        for var in ["DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "http_proxy", "https_proxy", "LD_PRELOAD"] {
            cmd.env_remove(var);
        }
        cmd
    }

    fn syncevolution(&self, args: &[String]) -> Result<(), String> {
        let out = self
            .command("syncevolution")
            .arg("--daemon=no")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run syncevolution: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "syncevolution {args:?} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Server context `@server` with four file-backed datastores, and one peer config per device.
    fn configure(&self) -> Result<(), String> {
        let root = self.dir.path();
        fs::create_dir_all(root.join("home")).map_err(|e| e.to_string())?;
        let mut args: Vec<String> = vec!["--configure".into(), "keyring=no".into()];
        for (store, format) in [
            ("addressbook", "text/vcard"),
            ("calendar", "text/calendar"),
            ("todo", "text/calendar"),
            ("memo", "text/plain"),
        ] {
            let db = self.db_dir(store);
            fs::create_dir_all(&db).map_err(|e| e.to_string())?;
            args.push(format!("{store}/backend=file"));
            args.push(format!("{store}/database=file://{}", db.display()));
            args.push(format!("{store}/databaseFormat={format}"));
        }
        args.extend(["@server", "addressbook", "calendar", "todo", "memo"].map(String::from));
        self.syncevolution(&args)?;
        for device in &self.opts.device_ids {
            self.add_device(device)?;
        }
        Ok(())
    }

    /// Accepts one more client device (also while running).
    pub fn add_device(&self, device_id: &str) -> Result<(), String> {
        let name: String =
            device_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let args: Vec<String> = vec![
            "--configure".into(),
            "--template".into(),
            "SyncEvolution_Client".into(),
            format!("username={}", self.opts.username),
            format!("password={}", self.opts.password),
            format!("remoteDeviceId={device_id}"),
            "printChanges=0".into(),
            "dumpData=0".into(),
            format!("loglevel={}", self.opts.loglevel),
            format!("maxMsgSize={}", self.opts.max_msg_size),
            format!("{name}@server"),
        ];
        self.syncevolution(&args)
    }

    fn launch(&mut self) -> Result<(), String> {
        let root = self.dir.path().to_owned();
        let http_log = root.join(format!("http-server-{}.log", self.port));
        let dbus_log = root.join(format!("dbus-server-{}.log", self.port));
        let _ = fs::remove_file(&http_log);
        let frontend = root.join("loopback-frontend.py");
        fs::write(&frontend, HTTP_FRONTEND_PY).map_err(|e| e.to_string())?;
        // Inside the private bus: the D-Bus server in the background, the HTTP front end in front.
        let script = format!(
            "/usr/libexec/syncevo-dbus-server --duration=unlimited --verbosity=2 --stdout --no-syslog \
             >'{dbus}' 2>&1 &\nexec /usr/bin/python3 '{frontend}' 'http://127.0.0.1:{port}/syncevolution' \
             >'{http}' 2>&1\n",
            dbus = dbus_log.display(),
            frontend = frontend.display(),
            port = self.port,
            http = http_log.display()
        );
        let session_log = fs::File::create(root.join("dbus-run-session.log")).map_err(|e| e.to_string())?;
        let mut cmd = self.command("dbus-run-session");
        cmd.args(["--", "/bin/sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(session_log.try_clone().map_err(|e| e.to_string())?)
            .stderr(session_log);
        // SAFETY: setsid() is async-signal-safe; the new process group lets us stop the bus, the
        // D-Bus server, its helpers and the front end together.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start dbus-run-session (apt-get install dbus-bin): {e}"))?;
        self.session = Some(child);
        let ready = |path: &Path, needles: &[&str]| {
            fs::read_to_string(path).is_ok_and(|s| needles.iter().any(|n| s.contains(n)))
        };
        let mut exited = false;
        let up = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            if self.session.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                exited = true;
                return true;
            }
            ready(&http_log, &["listening on port"]) && ready(&dbus_log, &["ready to run", "got D-Bus name"])
        });
        if exited || !up {
            let msg = format!(
                "reference server did not come up on port {}:\n{}\n{}\n{}",
                self.port,
                tail_file(&root.join("dbus-run-session.log"), 2000),
                tail_file(&http_log, 3000),
                tail_file(&dbus_log, 3000)
            );
            self.kill_group(libc::SIGKILL);
            return Err(msg);
        }
        Ok(())
    }

    fn kill_group(&mut self, sig: libc::c_int) {
        if let Some(mut child) = self.session.take() {
            let pgid = child.id() as i32;
            signal(-pgid, sig);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal(-pgid, libc::SIGKILL);
            let _ = child.wait();
            // Helpers of the group may outlive the session leader for a moment.
            wait_until(Duration::from_secs(5), Duration::from_millis(20), || !pid_alive(-pgid));
        }
    }

    /// Stops everything (SIGTERM to the process group, then SIGKILL).
    pub fn stop(&mut self) {
        self.kill_group(libc::SIGTERM);
    }

    /// SIGKILL to the whole process group (crash test).
    pub fn kill9(&mut self) {
        self.kill_group(libc::SIGKILL);
    }

    /// Starts again on the same port and state directory.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The HTTP front end's and D-Bus server's logs (for failure messages).
    pub fn log_tail(&self) -> String {
        let root = self.dir.path();
        format!(
            "{}\n{}",
            tail_file(&root.join(format!("http-server-{}.log", self.port)), 4000),
            tail_file(&root.join(format!("dbus-server-{}.log", self.port)), 4000)
        )
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        self.stop();
    }
}
