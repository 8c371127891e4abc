//! SyncEvolution 2.0.0 (`syncevolution --daemon=no`) as an independent SyncML client.
//!
//! Each [`SyncEvoClient`] owns a private state directory (HOME and XDG_* point into it), a data
//! directory with one file per item (SyncEvolution's `file` backend) and one peer config
//! `harness@client` with one datastore. [`SyncEvoClient::sync`] runs one session with the libcurl
//! shim preloaded, under a timeout, and reads the session's `status.ini` into a [`SyncReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::Scratch;

/// What a client syncs: the local datastore, its file format and the format on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// vCard 3.0 (`text/vcard`).
    Contacts,
    /// vCard 2.1 (`text/x-vcard`).
    Contacts21,
    /// iCalendar 2.0 VEVENT (`text/calendar`).
    Calendar,
    /// vCalendar 1.0 VEVENT (`text/x-vcalendar`).
    Calendar10,
    /// iCalendar 2.0 VTODO.
    Tasks,
    /// vCalendar 1.0 VTODO.
    Tasks10,
    /// Plain-text notes (`text/plain`).
    Notes,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Contacts,
        Kind::Contacts21,
        Kind::Calendar,
        Kind::Calendar10,
        Kind::Tasks,
        Kind::Tasks10,
        Kind::Notes,
    ];

    /// SyncEvolution's local datastore name (also the client's `Source/LocURI`).
    pub fn source(self) -> &'static str {
        match self {
            Kind::Contacts | Kind::Contacts21 => "addressbook",
            Kind::Calendar | Kind::Calendar10 => "calendar",
            Kind::Tasks | Kind::Tasks10 => "todo",
            Kind::Notes => "memo",
        }
    }

    /// MIME type of the files in the data directory and on the wire.
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Contacts => "text/vcard",
            Kind::Contacts21 => "text/x-vcard",
            Kind::Calendar | Kind::Tasks => "text/calendar",
            Kind::Calendar10 | Kind::Tasks10 => "text/x-vcalendar",
            Kind::Notes => "text/plain",
        }
    }

    /// Default server database name (Alert `Target/LocURI`).
    pub fn server_uri(self) -> &'static str {
        self.source()
    }

    /// Short name used in directory names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Contacts => "contacts",
            Kind::Contacts21 => "contacts21",
            Kind::Calendar => "calendar",
            Kind::Calendar10 => "calendar10",
            Kind::Tasks => "tasks",
            Kind::Tasks10 => "tasks10",
            Kind::Notes => "notes",
        }
    }
}

/// SyncML transport encoding the client uses (the server must answer in the same one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Xml,
    Wbxml,
}

/// The sync modes of the command line, with SyncEvolution's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Alert 200 (201 automatically on the first sync of a fresh state).
    TwoWay,
    /// Alert 201.
    Slow,
    /// Alert 203: the server ends up with exactly the client's items.
    RefreshFromClient,
    /// Alert 205 (with `enableRefreshSync=1`): the client ends up with exactly the server's items.
    RefreshFromServer,
    /// Alert 202.
    OneWayFromClient,
    /// Alert 204.
    OneWayFromServer,
}

impl SyncMode {
    pub fn as_syncevolution(self) -> &'static str {
        match self {
            SyncMode::TwoWay => "two-way",
            SyncMode::Slow => "slow",
            SyncMode::RefreshFromClient => "refresh-from-local",
            SyncMode::RefreshFromServer => "refresh-from-remote",
            SyncMode::OneWayFromClient => "one-way-from-local",
            SyncMode::OneWayFromServer => "one-way-from-remote",
        }
    }
}

/// Credential type of the client's first message (`clientAuthType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Md5,
    Basic,
}

/// Everything a client is configured with. Build one with [`ClientConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub url: String,
    pub username: String,
    pub password: String,
    /// `SyncHdr/Source/LocURI`; must be unique per client state (gotcha 16).
    pub device_id: String,
    pub kind: Kind,
    pub encoding: Encoding,
    /// `None`: the newest version the server accepts (1.2 first); `Some("1.1")` forces 1.1.
    pub syncml_version: Option<&'static str>,
    pub max_msg_size: u32,
    pub max_obj_size: u32,
    pub auth: Auth,
    /// Server database name; `None` uses [`Kind::server_uri`].
    pub server_uri: Option<String>,
    /// SyncEvolution loglevel (0 off; 4 XML translations; 5 raw message dumps in the session dir).
    pub loglevel: u32,
    /// Seconds until the client gives up resending a message without an answer.
    pub retry_duration_s: u32,
    /// Seconds after which the client resends a message that got no answer.
    pub retry_interval_s: u32,
    /// Hard limit for one `syncevolution` run; the process is killed after it.
    pub timeout: Duration,
    /// More main (peer) properties as `name=value` (e.g. `SSLServerCertificates=…`).
    pub extra: Vec<String>,
}

impl ClientConfig {
    pub fn new(url: &str, username: &str, password: &str, device_id: &str, kind: Kind) -> ClientConfig {
        ClientConfig {
            url: url.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            device_id: device_id.to_owned(),
            kind,
            encoding: Encoding::Wbxml,
            syncml_version: None,
            max_msg_size: 150_000,
            max_obj_size: 4_000_000,
            auth: Auth::Md5,
            server_uri: None,
            loglevel: 1,
            retry_duration_s: 60,
            retry_interval_s: 30,
            timeout: Duration::from_secs(240),
            extra: Vec::new(),
        }
    }

    /// Main (peer) properties, as `name=value` for `--configure`.
    fn main_properties(&self) -> Vec<String> {
        let wbxml = matches!(self.encoding, Encoding::Wbxml);
        let auth = match self.auth {
            Auth::Md5 => "md5",
            Auth::Basic => "basic",
        };
        let mut props = vec![
            format!("syncURL={}", self.url),
            format!("username={}", self.username),
            format!("password={}", self.password),
            format!("deviceId={}", self.device_id),
            format!("enableWBXML={}", u8::from(wbxml)),
            "enableRefreshSync=1".into(),
            format!("SyncMLVersion={}", self.syncml_version.unwrap_or("")),
            format!("maxMsgSize={}", self.max_msg_size),
            format!("maxObjSize={}", self.max_obj_size),
            format!("clientAuthType={auth}"),
            format!("loglevel={}", self.loglevel),
            format!("RetryDuration={}", self.retry_duration_s),
            format!("RetryInterval={}", self.retry_interval_s),
            "preventSlowSync=0".into(),
            "printChanges=0".into(),
            "dumpData=0".into(),
            "maxlogdirs=100".into(),
        ];
        props.extend(self.extra.iter().cloned());
        props
    }

    /// Datastore properties, prefixed with the datastore name.
    fn source_properties(&self, data_dir: &Path) -> Vec<String> {
        let src = self.kind.source();
        let uri = self.server_uri.clone().unwrap_or_else(|| self.kind.server_uri().to_owned());
        vec![
            format!("{src}/backend=file"),
            format!("{src}/database=file://{}", data_dir.display()),
            format!("{src}/databaseFormat={}", self.kind.mime()),
            format!("{src}/syncFormat={}", self.kind.mime()),
            format!("{src}/forceSyncFormat=1"),
            format!("{src}/uri={uri}"),
            format!("{src}/sync=two-way"),
        ]
    }
}

/// Name of the peer config inside each client state.
const CONFIG: &str = "harness@client";

/// One SyncEvolution client with its own state and data directories.
pub struct SyncEvoClient {
    scratch: Scratch,
    cfg: ClientConfig,
    data_dir: PathBuf,
    state_dir: PathBuf,
    runs: AtomicU32,
}

impl SyncEvoClient {
    /// Creates the state and (empty) data directories and configures the client.
    pub fn new(cfg: ClientConfig) -> Result<SyncEvoClient, String> {
        let scratch = Scratch::new(&format!("client-{}", sanitize(&cfg.device_id)));
        let data_dir = scratch.path().join("data");
        let state_dir = scratch.path().join("state");
        for dir in [&data_dir, &state_dir.join("home")] {
            fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let client = SyncEvoClient { scratch, cfg, data_dir, state_dir, runs: AtomicU32::new(0) };
        let mut args: Vec<String> =
            vec!["--configure".into(), "--template".into(), "none".into(), "keyring=no".into()];
        args.extend(client.cfg.main_properties());
        args.push("PeerName=harness".into());
        args.extend(client.cfg.source_properties(&client.data_dir));
        args.push(CONFIG.into());
        args.push(client.cfg.kind.source().into());
        client.configure(&args)?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The directory with one file per item (the client's database).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Root of this client's scratch space (state, data, run logs).
    pub fn root(&self) -> &Path {
        self.scratch.path()
    }

    /// Changes the configuration (URL, password, encoding, sizes, ...) for the following syncs.
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut ClientConfig)) -> Result<(), String> {
        let before = self.cfg.kind;
        change(&mut self.cfg);
        assert_eq!(before, self.cfg.kind, "the kind of a client cannot change");
        let mut args: Vec<String> = vec!["--configure".into()];
        args.extend(self.cfg.main_properties());
        args.extend(self.cfg.source_properties(&self.data_dir));
        args.push(CONFIG.into());
        args.push(self.cfg.kind.source().into());
        self.configure(&args)
    }

    fn configure(&self, args: &[String]) -> Result<(), String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run syncevolution (apt-get install syncevolution): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "syncevolution --configure failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// `syncevolution --daemon=no` with this client's private environment.
    fn command(&self) -> Command {
        let mut cmd = Command::new("syncevolution");
        cmd.arg("--daemon=no");
        let st = &self.state_dir;
        cmd.env("HOME", st.join("home"))
            .env("XDG_CONFIG_HOME", st.join("config"))
            .env("XDG_DATA_HOME", st.join("data"))
            .env("XDG_CACHE_HOME", st.join("cache"))
            .env("LC_ALL", "C.UTF-8")
            .env("TZ", "UTC");
        for var in [
            "DBUS_SESSION_BUS_ADDRESS",
            "DISPLAY",
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "LD_PRELOAD",
            "SYNCEVOLUTION_DEBUG",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    fn session_root(&self) -> PathBuf {
        self.state_dir.join("cache").join("syncevolution")
    }

    fn session_dirs(&self) -> BTreeSet<PathBuf> {
        fs::read_dir(self.session_root())
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default()
    }

    /// Runs one sync session and waits for it (up to the configured timeout).
    pub fn sync(&self, mode: SyncMode) -> SyncReport {
        self.spawn_sync(mode).wait()
    }

    /// Runs one sync session with the libcurl shim (the normal case).
    pub fn spawn_sync(&self, mode: SyncMode) -> RunningSync<'_> {
        self.spawn_sync_with(mode, Some(super::shim::curlfix_path()))
    }

    /// Starts one sync session in the background; `shim: None` runs the client without the
    /// libcurl fix (only to demonstrate the crash).
    pub fn spawn_sync_with(&self, mode: SyncMode, shim: Option<&Path>) -> RunningSync<'_> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let stdout = self.scratch.path().join(format!("run-{n:02}.out"));
        let stderr = self.scratch.path().join(format!("run-{n:02}.err"));
        let before = self.session_dirs();
        let mut cmd = self.command();
        cmd.args(["--sync", mode.as_syncevolution(), CONFIG, self.cfg.kind.source()])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create stdout file"))
            .stderr(fs::File::create(&stderr).expect("create stderr file"));
        if let Some(shim) = shim {
            cmd.env("LD_PRELOAD", shim);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run syncevolution: {e}"));
        RunningSync {
            client: self,
            child: Some(child),
            mode,
            before,
            stdout,
            stderr,
            started: Instant::now(),
            log_scan: None,
        }
    }
}

/// A `syncevolution` process that is still running; killed (by PID) if dropped unfinished.
pub struct RunningSync<'a> {
    client: &'a SyncEvoClient,
    child: Option<Child>,
    mode: SyncMode,
    before: BTreeSet<PathBuf>,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
    /// Incremental scan of the session log: (session dir, bytes read, markers seen, carry-over).
    log_scan: Option<(PathBuf, u64, usize, Vec<u8>)>,
}

/// Logged by the Synthesis engine once per outgoing SyncML message.
const OUTGOING_MARKER: &[u8] = b"Started new outgoing message";

impl RunningSync<'_> {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// True while the client process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How many SyncML messages the client has started to send in this session so far (counted
    /// in the session log, which SyncEvolution writes as it goes).
    /// The log is read incrementally, so polling it is cheap.
    pub fn messages_started(&mut self) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        if self.log_scan.is_none() {
            let after = self.client.session_dirs();
            let Some(dir) = after.difference(&self.before).max() else { return 0 };
            self.log_scan = Some((dir.clone(), 0, 0, Vec::new()));
        }
        let (dir, offset, count, carry) = self.log_scan.as_mut().expect("set above");
        let Ok(mut file) = fs::File::open(dir.join("syncevolution-log.html")) else { return *count };
        if file.seek(SeekFrom::Start(*offset)).is_err() {
            return *count;
        }
        let mut fresh = Vec::new();
        if file.read_to_end(&mut fresh).is_err() {
            return *count;
        }
        *offset += fresh.len() as u64;
        let mut buf = std::mem::take(carry);
        buf.extend_from_slice(&fresh);
        let mut i = 0;
        while let Some(pos) = buf[i..].windows(OUTGOING_MARKER.len()).position(|w| w == OUTGOING_MARKER) {
            *count += 1;
            i += pos + OUTGOING_MARKER.len();
        }
        // keep a tail that may hold the start of a marker cut by this read
        let keep_from = buf.len().saturating_sub(OUTGOING_MARKER.len() - 1).max(i);
        *carry = buf[keep_from..].to_vec();
        *count
    }

    /// Waits for the process (killing it at the client's timeout) and reads the session result.
    pub fn wait(mut self) -> SyncReport {
        let mut child = self.child.take().expect("wait called once");
        let timeout = self.client.cfg.timeout;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if self.started.elapsed() > timeout => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(25)),
                Err(_) => break None,
            }
        };
        let elapsed = self.started.elapsed();
        let after = self.client.session_dirs();
        let session_dir = after.difference(&self.before).max().cloned();
        let mut report = SyncReport {
            requested: self.mode,
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            timed_out,
            elapsed,
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
            session_dir: session_dir.clone(),
            ..SyncReport::default()
        };
        if let Some(dir) = session_dir {
            if let Ok(text) = fs::read_to_string(dir.join("status.ini")) {
                report.fill_from_status_ini(&text, self.client.cfg.kind.source());
            }
            // the log may hold bytes that are not UTF-8 (message dumps at high loglevels)
            if let Ok(bytes) = fs::read(dir.join("syncevolution-log.html")) {
                let log = String::from_utf8_lossy(&bytes);
                report.syncml_version = log
                    .rmatch_indices("SyncML Version: ")
                    .next()
                    .and_then(|(i, m)| log[i + m.len()..].split(['<', '\n', ' ']).next())
                    .map(str::to_owned);
            }
            let mut dumps: Vec<String> = fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.contains("_msg") && (n.ends_with(".xml") || n.ends_with(".wbxml")))
                        .collect()
                })
                .unwrap_or_default();
            dumps.sort();
            report.message_dumps = dumps;
        }
        report
    }
}

impl Drop for RunningSync<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The outcome of one client session (SyncEvolution's exit code and its `status.ini`).
#[derive(Clone, Debug)]
pub struct SyncReport {
    pub requested: SyncMode,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// Overall session status: 200 ok, 401 bad credentials, 20043 transport failure, ...
    pub status: Option<u32>,
    /// The mode actually run (`two-way`, `slow`, `refresh-from-remote`, ...).
    pub mode: String,
    pub first: bool,
    pub source_status: Option<u32>,
    /// Items the client changed in its own data dir (received from the server).
    pub local_added: u64,
    pub local_updated: u64,
    pub local_removed: u64,
    /// Items the client changed on the server (sent to it).
    pub remote_added: u64,
    pub remote_updated: u64,
    pub remote_removed: u64,
    pub local_rejected: u64,
    pub remote_rejected: u64,
    pub conflicts: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub stdout: String,
    pub stderr: String,
    pub session_dir: Option<PathBuf>,
    /// All `key = value` pairs of `status.ini`.
    pub raw: BTreeMap<String, String>,
    /// Protocol the session used, from the session log (e.g. `SyncML/1.1`).
    pub syncml_version: Option<String>,
    /// Raw message dumps in the session dir (loglevel 5), e.g.
    /// `syncevolution-log_msg001_001_outgoing.wbxml`.
    pub message_dumps: Vec<String>,
}

impl Default for SyncReport {
    fn default() -> Self {
        SyncReport {
            requested: SyncMode::TwoWay,
            exit_code: None,
            signal: None,
            timed_out: false,
            elapsed: Duration::ZERO,
            status: None,
            mode: String::new(),
            first: false,
            source_status: None,
            local_added: 0,
            local_updated: 0,
            local_removed: 0,
            remote_added: 0,
            remote_updated: 0,
            remote_removed: 0,
            local_rejected: 0,
            remote_rejected: 0,
            conflicts: 0,
            bytes_sent: 0,
            bytes_received: 0,
            stdout: String::new(),
            stderr: String::new(),
            session_dir: None,
            raw: BTreeMap::new(),
            syncml_version: None,
            message_dumps: Vec::new(),
        }
    }
}

impl SyncReport {
    fn fill_from_status_ini(&mut self, text: &str, source: &str) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(" = ") {
                self.raw.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        let p = format!("source-{source}-");
        let num = |key: &str| self.raw.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let stat = |side: &str, what: &str| num(&format!("{p}stat-{side}-{what}-total"));
        self.local_added = stat("local", "added");
        self.local_updated = stat("local", "updated");
        self.local_removed = stat("local", "removed");
        self.remote_added = stat("remote", "added");
        self.remote_updated = stat("remote", "updated");
        self.remote_removed = stat("remote", "removed");
        self.local_rejected = num(&format!("{p}stat-local-any-reject"));
        self.remote_rejected = num(&format!("{p}stat-remote-any-reject"));
        self.bytes_sent = num(&format!("{p}stat-local-any-sent"));
        self.bytes_received = num(&format!("{p}stat-local-any-received"));
        self.conflicts = self
            .raw
            .iter()
            .filter(|(k, _)| k.starts_with(&p) && k.contains("conflict"))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum();
        self.status = self.raw.get("status").and_then(|v| v.parse().ok());
        self.mode = self.raw.get(&format!("{p}mode")).cloned().unwrap_or_default();
        self.first = self.raw.get(&format!("{p}first")).is_some_and(|v| v == "true");
        self.source_status = self.raw.get(&format!("{p}status")).and_then(|v| v.parse().ok());
    }

    /// Sizes in bytes of the dumped messages in one direction (`"incoming"` = from the server,
    /// `"outgoing"` = from the client); needs loglevel 5.
    pub fn dump_sizes(&self, direction: &str) -> Vec<u64> {
        let Some(dir) = &self.session_dir else { return Vec::new() };
        self.message_dumps
            .iter()
            .filter(|n| n.contains(direction))
            .filter_map(|n| fs::metadata(dir.join(n)).ok().map(|m| m.len()))
            .collect()
    }

    /// Exit code 0, overall status 200 and datastore status 0.
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
            && !self.timed_out
            && self.status == Some(200)
            && self.source_status.unwrap_or(0) == 0
    }

    /// Panics with the report, the client's output and the session log location unless [`ok`].
    ///
    /// [`ok`]: SyncReport::ok
    pub fn assert_ok(&self, what: &str) -> &Self {
        if !self.ok() {
            panic!("{what}: sync failed\n{}", self.diagnostics());
        }
        self
    }

    /// The report plus the client's output, for failure messages.
    pub fn diagnostics(&self) -> String {
        let tail = |s: &str| {
            let start = s.len().saturating_sub(6000);
            let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
            s[start..].to_owned()
        };
        format!(
            "{self}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}\n--- session log: {} ---",
            tail(&self.stdout),
            tail(&self.stderr),
            self.session_dir
                .as_ref()
                .map(|d| d.join("syncevolution-log.html").display().to_string())
                .unwrap_or_else(|| "none".into())
        )
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requested={} exit={:?} signal={:?} timed_out={} status={:?} mode={} first={} \
             source_status={:?} local(+{} ~{} -{}) remote(+{} ~{} -{}) rejected(local {} remote {}) \
             conflicts={} sent={}B received={}B protocol={} elapsed={:.2}s",
            self.requested.as_syncevolution(),
            self.exit_code,
            self.signal,
            self.timed_out,
            self.status,
            self.mode,
            self.first,
            self.source_status,
            self.local_added,
            self.local_updated,
            self.local_removed,
            self.remote_added,
            self.remote_updated,
            self.remote_removed,
            self.local_rejected,
            self.remote_rejected,
            self.conflicts,
            self.bytes_sent,
            self.bytes_received,
            self.syncml_version.as_deref().unwrap_or("?"),
            self.elapsed.as_secs_f64()
        )
    }
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}
