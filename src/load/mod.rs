//! `shardsync load`: plays many SyncML devices against a SyncML server (ours
//! or any other) and reports sessions/s, items/s, per-message latency, bytes
//! and errors by kind.
//!
//! * [`client`]: the sans-IO client session (messages, status checks, flow);
//! * [`data`]: generated contacts, events, tasks and notes;
//! * [`http`]: the event-driven keep-alive HTTP/1.1 client;
//! * [`report`]: counters, HDR histogram, JSON and table output.
//!
//! Threads: `--threads` workers, each a current-thread tokio runtime (one
//! epoll reactor) running its share of the `--concurrency` session slots as
//! tasks; a slot has its own keep-alive HTTP connection (the counters are
//! per thread), so a message costs a write, a wait on the reactor and a
//! read, with no thread of its own to wake. Free devices wait in a channel;
//! a slot takes one, runs one session and puts it back, so no device ever
//! runs two sessions at once.

pub mod client;
pub mod data;
pub mod http;
pub mod report;

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crossbeam_channel::{Receiver, Sender};

use client::{AuthKind, ClientConfig, Device, Next, Plan, Session};
use data::DataKind;
use http::HttpClient;
use report::{PhaseReport, Report, Stats};

use crate::model::Encoding;

/// The smallest `--max-msg-size`: below it the SyncHdr and the statuses
/// for a reply with a Sync per datastore leave no room for an item chunk (in
/// XML, with four datastores), and servers raise such a limit anyway (ours
/// never packs its replies below 2048 bytes).
pub const MIN_MAX_MSG_SIZE: usize = 2048;

/// What a load run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every session is a slow sync (201) sending all `--items` of each datastore.
    SlowSync,
    /// Two-way syncs (200) with nothing to exchange, after a set-up slow sync.
    EmptyTwoWay,
    /// Two-way syncs with `--changes` local changes per datastore (adds,
    /// replaces, deletes); devices of one user receive each other's changes.
    TwoWayChanges,
    /// Refresh from server (205): the device drops its items and gets all of the server's.
    Refresh,
    /// Message 1 only: the session stays open on the server (memory per idle session).
    HoldIdle,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::SlowSync => "slow-sync",
            Scenario::EmptyTwoWay => "empty-two-way",
            Scenario::TwoWayChanges => "two-way-changes",
            Scenario::Refresh => "refresh",
            Scenario::HoldIdle => "hold-idle",
        }
    }
}

/// `--encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncodingArg {
    /// `application/vnd.syncml+xml`.
    Xml,
    /// `application/vnd.syncml+wbxml`.
    Wbxml,
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    /// syncml:auth-md5.
    Md5,
    /// syncml:auth-basic.
    Basic,
}

/// Options of `shardsync load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The server's SyncML URL, e.g. http://127.0.0.1:8080/sync.
    #[arg(long)]
    pub url: String,
    /// Simulated devices.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// What every measured session does.
    #[arg(long, value_enum, default_value_t = Scenario::EmptyTwoWay)]
    pub scenario: Scenario,
    /// Wire encoding.
    #[arg(long, value_enum, default_value_t = EncodingArg::Xml)]
    pub encoding: EncodingArg,
    /// Auth scheme.
    #[arg(long, value_enum, default_value_t = AuthArg::Md5)]
    pub auth: AuthArg,
    /// Sessions in flight at once (each with its own keep-alive connection).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Event-loop threads the sessions are spread over. One carries a few
    /// hundred sessions in flight; raise it when the load process keeps a
    /// core busy (large slow syncs, a server on other cores or hosts).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Run measured sessions for this many seconds.
    #[arg(long, conflicts_with = "sessions")]
    pub duration: Option<f64>,
    /// Run this many measured sessions (default: one per device).
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Items per datastore on each device (slow sync sends them all).
    #[arg(long, default_value_t = 100)]
    pub items: usize,
    /// Local changes per datastore per session (two-way-changes).
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Datastores each device syncs: contacts, events, tasks, notes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "contacts")]
    pub datastores: Vec<String>,
    /// Device ids are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "load-dev-")]
    pub device_prefix: String,
    /// User names are PREFIX0, PREFIX1, ... (device d belongs to user d mod --user-count).
    #[arg(long, default_value = "load-user-")]
    pub user_prefix: String,
    /// Number of generated users (default: one per device).
    #[arg(long)]
    pub user_count: Option<usize>,
    /// Password of the generated users.
    #[arg(long, default_value = "load-secret")]
    pub password: String,
    /// A file of `user:password` lines to use instead of generated users.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["user_prefix", "user_count"])]
    pub users: Option<PathBuf>,
    /// Create the generated users first (needs --data-dir or --store of the server).
    #[arg(long)]
    pub create_users: bool,
    /// The server's data directory (user creation through its admin socket).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's PostgreSQL store (user creation).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// MaxMsgSize the devices announce (at least 2048); they send no larger
    /// messages either. Items that do not fit go in chunks (large objects).
    #[arg(long, default_value_t = 150_000)]
    pub max_msg_size: usize,
    /// HTTP connect/read/write timeout.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// hold-idle: seconds to keep the sessions open before exiting.
    #[arg(long, default_value_t = 10.0)]
    pub hold_secs: f64,
    /// hold-idle: keep one open connection per held session (else connections are reused).
    #[arg(long)]
    pub hold_connections: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Progress line on stderr: auto (on a terminal, or for runs over 10 s), always, never.
    #[arg(long, default_value = "auto")]
    pub progress: String,
}

/// Why a load run could not run (errors during the run are counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An option is not usable.
    #[error("{0}")]
    Usage(String),
    /// The users file could not be read.
    #[error("cannot read users file {path}: {source}")]
    UsersFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Creating a user failed.
    #[error("cannot create user {user}: {message}")]
    CreateUser {
        /// User name.
        user: String,
        /// What failed.
        message: String,
    },
    /// A worker thread or its event loop could not start.
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
}

/// Runs the load described by `args`; prints the report (JSON or table) and
/// fails when any error was counted.
pub fn run_command(args: &LoadArgs) -> Result<(), String> {
    let report = run(args).map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    match report.errors() {
        0 => Ok(()),
        n => Err(format!("{n} errors (see errors_by_kind)")),
    }
}

fn users_of(args: &LoadArgs) -> Result<Vec<(String, String)>, LoadError> {
    if let Some(path) = &args.users {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::UsersFile { path: path.clone(), source })?;
        let users: Vec<(String, String)> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
            .collect();
        if users.is_empty() {
            return Err(LoadError::Usage(format!("{}: no `user:password` line", path.display())));
        }
        return Ok(users);
    }
    let n = args.user_count.unwrap_or(args.devices).max(1);
    Ok((0..n).map(|i| (format!("{}{i}", args.user_prefix), args.password.clone())).collect())
}

/// Creates the users on our server (embedded store through the admin
/// socket or directly, or PostgreSQL); an existing user is left alone.
fn create_users(args: &LoadArgs, users: &[(String, String)]) -> Result<(), LoadError> {
    use crate::admin::{self, AdminError, UserCommand};
    if args.data_dir.is_none() && args.store.is_none() {
        return Err(LoadError::Usage("--create-users needs --data-dir or --store".into()));
    }
    // argon2id costs tens of ms per user: spread the work over a few threads.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let next = AtomicU64::new(0);
    let failure: std::sync::Mutex<Option<LoadError>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((user, password)) = users.get(i) else { break };
                let request =
                    admin::build_request(&UserCommand::Add { name: user.clone() }, || Ok(password.clone()));
                let result = request.and_then(|req| match (&args.store, &args.data_dir) {
                    (Some(url), _) => admin::execute_on_postgres(url, req),
                    (None, Some(dir)) => admin::execute_on_data_dir(dir, req),
                    (None, None) => Err(AdminError::Remote("no store".into())),
                });
                match result {
                    Ok(_) | Err(AdminError::Exists(_)) => {}
                    Err(AdminError::Remote(m)) if m.contains("already exists") => {}
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(LoadError::CreateUser {
                                user: user.clone(),
                                message: e.to_string(),
                            });
                        }
                        break;
                    }
                }
            });
        }
    });
    match failure.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Shared progress counters (written once per session, read by the progress thread).
#[derive(Default)]
struct Progress {
    sessions: AtomicU64,
}

/// What a phase runs.
#[derive(Clone, Copy)]
struct PhaseSpec {
    plan: Plan,
    /// Sessions to run (None: until the deadline).
    sessions: Option<u64>,
    deadline: Option<Instant>,
    hold_connections: bool,
}

/// What the session slots of a phase share, across worker threads.
struct PhaseShared {
    cfg: ClientConfig,
    spec: PhaseSpec,
    timeout: Duration,
    /// Free devices: a slot takes one, runs one session and puts it back.
    free: (Sender<Device>, Receiver<Device>),
    /// Sessions begun (the `--sessions` budget).
    started: AtomicU64,
    progress: Arc<Progress>,
}

/// A worker thread's result: its slots' counters and held connections.
type WorkerResult = Result<(Stats, Vec<std::net::TcpStream>), std::io::Error>;

/// Runs one phase: `concurrency` session slots, spread over `threads`
/// event-loop threads, take devices from the pool until the session budget
/// or the deadline is spent. Returns the devices (with their new state), the
/// merged counters and the connections of held sessions (`hold_connections`).
fn run_phase(
    cfg: &ClientConfig,
    devices: Vec<Device>,
    (concurrency, threads): (usize, usize),
    spec: PhaseSpec,
    timeout: Duration,
    progress: &Arc<Progress>,
) -> Result<(Vec<Device>, Stats, Vec<std::net::TcpStream>), LoadError> {
    let total = devices.len();
    // More slots than devices would only wait for devices; with at most one
    // slot per device a slot that holds none always finds a free one.
    let slots = concurrency.clamp(1, total.max(1));
    let threads = threads.clamp(1, slots);
    let (tx, rx) = crossbeam_channel::unbounded::<Device>();
    for d in devices {
        // The receiver is alive: the send cannot fail.
        let _ = tx.send(d);
    }
    let shared = Arc::new(PhaseShared {
        cfg: cfg.clone(),
        spec,
        timeout,
        free: (tx, rx),
        started: AtomicU64::new(0),
        progress: progress.clone(),
    });
    let mut results: Vec<WorkerResult> = Vec::new();
    let mut spawn_error = None;
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let n = slots / threads + usize::from(t < slots % threads);
            let shared = shared.clone();
            let builder = std::thread::Builder::new().name(format!("load-{t}"));
            match builder.spawn_scoped(scope, move || worker(shared, n)) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        for h in handles {
            match h.join() {
                Ok(r) => results.push(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    if let Some(e) = spawn_error {
        return Err(LoadError::Thread(e));
    }
    let mut stats = Stats::new();
    let mut held = Vec::new();
    for r in results {
        let (s, h) = r.map_err(LoadError::Thread)?;
        stats.merge(&s);
        held.extend(h);
    }
    let mut devices: Vec<Device> = shared.free.1.try_iter().collect();
    devices.sort_by_key(|d| device_index(&d.id));
    debug_assert_eq!(devices.len(), total);
    Ok((devices, stats, held))
}

/// A worker thread: a current-thread tokio runtime (epoll reactor, timers)
/// running `slots` session slots as tasks until they end. The slots count
/// into one `Stats` per thread (its latency histogram is about 0.5 MiB).
fn worker(shared: Arc<PhaseShared>, slots: usize) -> WorkerResult {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    let local = tokio::task::LocalSet::new();
    let stats = Rc::new(RefCell::new(Stats::new()));
    let held = local.block_on(&runtime, async {
        let tasks: Vec<_> =
            (0..slots).map(|_| tokio::task::spawn_local(slot(shared.clone(), stats.clone()))).collect();
        let mut held = Vec::new();
        for task in tasks {
            match task.await {
                Ok(h) => held.extend(h),
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Nothing aborts a slot; a cancelled one has nothing to report.
                    Err(e) => tracing::error!(error = %e, "load slot cancelled"),
                },
            }
        }
        held
    });
    let stats = Rc::try_unwrap(stats).map_or_else(|rc| rc.borrow().clone(), RefCell::into_inner);
    Ok((stats, held))
}

/// One session slot: takes a free device, runs one session over its own
/// keep-alive connection, puts the device back, until the phase's budget or
/// deadline is spent. Returns the connections of the sessions it holds.
async fn slot(shared: Arc<PhaseShared>, stats: Rc<RefCell<Stats>>) -> Vec<std::net::TcpStream> {
    let spec = shared.spec;
    let content_type = shared.cfg.encoding.content_type();
    let mut held = Vec::new();
    let mut http = HttpClient::new(shared.timeout);
    loop {
        if spec.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = shared.started.fetch_add(1, Ordering::Relaxed);
        if spec.sessions.is_some_and(|max| n >= max) {
            break;
        }
        // Never empty (at most one slot per device, see `run_phase`).
        let Ok(mut dev) = shared.free.1.try_recv() else { break };
        let outcome = run_session(&shared.cfg, spec.plan, &mut dev, &mut http, content_type, &stats).await;
        if outcome == Outcome::Held && spec.hold_connections {
            held.extend(std::mem::replace(&mut http, HttpClient::new(shared.timeout)).into_connection());
        }
        shared.progress.sessions.fetch_add(1, Ordering::Relaxed);
        // The receiver is alive (in `shared`): the send cannot fail.
        let _ = shared.free.0.send(dev);
    }
    held
}

fn device_index(id: &str) -> u64 {
    let digits: String = id.chars().rev().take_while(char::is_ascii_digit).collect();
    digits.chars().rev().collect::<String>().parse().unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Held,
}

/// Drives one session over `http`, counting into `stats` (the thread's
/// slots share it; it is never borrowed across an `await`).
async fn run_session(
    cfg: &ClientConfig,
    plan: Plan,
    dev: &mut Device,
    http: &mut HttpClient,
    content_type: &str,
    stats: &RefCell<Stats>,
) -> Outcome {
    let mut session = Session::new(cfg, plan, dev);
    let mut out = session.start(dev);
    let outcome = loop {
        let t0 = Instant::now();
        match http.post(&out.url, content_type, &out.body).await {
            Ok(resp) => {
                stats.borrow_mut().message(t0.elapsed(), out.body.len(), resp.wire_bytes);
                if resp.status != 200 {
                    tracing::debug!(device = %dev.id, status = resp.status, body = %String::from_utf8_lossy(&resp.body), "HTTP error");
                    session.fail(format!("http_{}", resp.status));
                    break Outcome::Failed;
                }
                tracing::trace!(
                    device = %dev.id,
                    sent = %String::from_utf8_lossy(&out.body),
                    reply = %String::from_utf8_lossy(&resp.body),
                    "message exchanged"
                );
                match session.on_reply(dev, &resp.body) {
                    Next::Send(next) => out = next,
                    Next::Done => break Outcome::Ok,
                    Next::Held => break Outcome::Held,
                    Next::Failed => break Outcome::Failed,
                }
            }
            Err(e) => {
                tracing::debug!(device = %dev.id, error = %e, "request failed");
                session.fail(e.kind());
                break Outcome::Failed;
            }
        }
    };
    let mut stats = stats.borrow_mut();
    for e in session.errors() {
        stats.error(e);
    }
    stats.sent.merge(&session.sent);
    stats.received.merge(&session.received);
    stats.auth_retries += session.auth_retries;
    stats.lob.merge(&session.lob);
    match outcome {
        Outcome::Ok if session.errors().is_empty() => stats.sessions_ok += 1,
        Outcome::Held if session.errors().is_empty() => stats.sessions_held += 1,
        _ => stats.sessions_failed += 1,
    }
    if !session.errors().is_empty() {
        tracing::debug!(device = %dev.id, errors = ?session.errors(), "session errors");
        return Outcome::Failed;
    }
    outcome
}

fn progress_thread(
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    phase: &'static str,
    every: Duration,
    tty: bool,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("load-progress".into())
        .spawn(move || {
            let t0 = Instant::now();
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let secs = t0.elapsed().as_secs_f64();
                let n = progress.sessions.load(Ordering::Relaxed);
                let line = format!(
                    "[{phase} {secs:6.1}s] sessions {n} ({:.1}/s)",
                    if secs > 0.0 { n as f64 / secs } else { 0.0 }
                );
                if tty {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
            }
            if tty {
                eprintln!();
            }
        })
        .ok()
}

/// Runs a load: users, devices, set-up phase, measured phase.
pub fn run(args: &LoadArgs) -> Result<Report, LoadError> {
    let kinds: Vec<DataKind> = args
        .datastores
        .iter()
        .map(|s| DataKind::parse(s).ok_or_else(|| LoadError::Usage(format!("unknown datastore {s:?}"))))
        .collect::<Result<_, _>>()?;
    if kinds.is_empty() || args.devices == 0 {
        return Err(LoadError::Usage("need at least one device and one datastore".into()));
    }
    if args.max_msg_size < MIN_MAX_MSG_SIZE {
        return Err(LoadError::Usage(format!(
            "--max-msg-size {} is too small: at least {MIN_MAX_MSG_SIZE} (a message must hold its header, \
             the statuses of the last reply and a chunk of an item)",
            args.max_msg_size
        )));
    }
    if args.threads == 0 {
        return Err(LoadError::Usage("--threads must be at least 1".into()));
    }
    http::parse_url(&args.url).map_err(|e| LoadError::Usage(e.to_string()))?;
    let users = users_of(args)?;
    if args.create_users {
        if args.users.is_some() {
            return Err(LoadError::Usage(
                "--create-users creates generated users, not a --users list".into(),
            ));
        }
        create_users(args, &users)?;
    }
    let encoding = match args.encoding {
        EncodingArg::Xml => Encoding::Xml,
        EncodingArg::Wbxml => Encoding::Wbxml,
    };
    let cfg = ClientConfig {
        url: args.url.clone(),
        encoding,
        auth: match args.auth {
            AuthArg::Md5 => AuthKind::Md5,
            AuthArg::Basic => AuthKind::Basic,
        },
        max_msg_size: args.max_msg_size,
    };
    let mut devices: Vec<Device> = (0..args.devices)
        .map(|i| {
            let (user, password) = &users[i % users.len()];
            Device::new(&format!("{}{i}", args.device_prefix), user, password, &kinds, args.items, args.seed)
        })
        .collect();
    let timeout = Duration::from_millis(args.timeout_ms);
    let workers = (args.concurrency, args.threads);
    let tty = std::io::stderr().is_terminal();
    let show = match args.progress.as_str() {
        "always" => true,
        "never" => false,
        _ => tty || args.duration.is_some_and(|d| d > 10.0),
    };
    let with_progress = |phase: &'static str, f: &mut dyn FnMut(&Arc<Progress>) -> Result<(), LoadError>| {
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let every = if tty { Duration::from_millis(500) } else { Duration::from_secs(5) };
        let handle =
            show.then(|| progress_thread(progress.clone(), stop.clone(), phase, every, tty)).flatten();
        let result = f(&progress);
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = handle {
            let _ = h.join();
        }
        result
    };

    // Set-up: the scenarios that start from synced devices get a first slow
    // sync, then (when devices share a user) one two-way round so that each
    // device holds what the others sent.
    let needs_setup =
        matches!(args.scenario, Scenario::EmptyTwoWay | Scenario::TwoWayChanges | Scenario::Refresh);
    let shared_users = users.len() < args.devices;
    let setup = if needs_setup {
        let t0 = Instant::now();
        let mut stats = Stats::new();
        let mut rounds = vec![Plan { alert: 201, changes: 0, hold: false }];
        if shared_users {
            rounds.push(Plan { alert: 200, changes: 0, hold: false });
        }
        for plan in rounds {
            let spec = PhaseSpec {
                plan,
                sessions: Some(args.devices as u64),
                deadline: None,
                hold_connections: false,
            };
            with_progress("setup", &mut |p| {
                let (d, s, _) = run_phase(&cfg, std::mem::take(&mut devices), workers, spec, timeout, p)?;
                devices = d;
                stats.merge(&s);
                Ok(())
            })?;
        }
        Some(PhaseReport { elapsed: t0.elapsed(), stats })
    } else {
        None
    };

    let plan = match args.scenario {
        Scenario::SlowSync => Plan { alert: 201, changes: 0, hold: false },
        Scenario::EmptyTwoWay => Plan { alert: 200, changes: 0, hold: false },
        Scenario::TwoWayChanges => Plan { alert: 200, changes: args.changes, hold: false },
        Scenario::Refresh => Plan { alert: 205, changes: 0, hold: false },
        // A first sync's message 1 (slow, 201): the server loads and keeps what a real first session has.
        Scenario::HoldIdle => Plan { alert: 201, changes: 0, hold: true },
    };
    let sessions = match (args.duration, args.sessions) {
        (Some(_), _) => None,
        (None, Some(n)) => Some(n),
        (None, None) => Some(args.devices as u64),
    };
    if args.scenario == Scenario::HoldIdle
        && (args.duration.is_some() || sessions.is_some_and(|n| n > args.devices as u64))
    {
        return Err(LoadError::Usage(
            "hold-idle holds one session per device: use --sessions ≤ --devices, not --duration".into(),
        ));
    }
    let spec = PhaseSpec {
        plan,
        sessions,
        deadline: args.duration.map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0))),
        hold_connections: args.hold_connections,
    };
    let t0 = Instant::now();
    let mut load_stats = Stats::new();
    let mut held = Vec::new();
    with_progress("load", &mut |p| {
        let (d, s, h) = run_phase(&cfg, std::mem::take(&mut devices), workers, spec, timeout, p)?;
        devices = d;
        load_stats = s;
        held = h;
        Ok(())
    })?;
    let elapsed = t0.elapsed();
    if args.scenario == Scenario::HoldIdle {
        // The marker line perf/idle-sessions.sh waits for before it reads the server's RSS.
        eprintln!(
            "holding {} sessions ({} open connections) for {:.0} s",
            load_stats.sessions_held,
            held.len(),
            args.hold_secs
        );
        std::thread::sleep(Duration::from_secs_f64(args.hold_secs.max(0.0)));
        drop(held);
    }
    let params = json!({
        "url": args.url,
        "scenario": args.scenario.name(),
        "encoding": match encoding { Encoding::Xml => "xml", Encoding::Wbxml => "wbxml" },
        "auth": match cfg.auth { AuthKind::Md5 => "md5", AuthKind::Basic => "basic" },
        "devices": args.devices,
        "users": users.len(),
        "concurrency": args.concurrency,
        "threads": args.threads,
        "datastores": kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "items": args.items,
        "changes": args.changes,
        "max_msg_size": args.max_msg_size,
    });
    let device_items: Vec<usize> = devices.iter().map(|d| d.stores.iter().map(|s| s.len()).sum()).collect();
    let mut params = params;
    if let serde_json::Value::Object(m) = &mut params {
        m.insert("device_items_after".into(), json!(device_items.iter().sum::<usize>()));
        // Equal digests: two sets of devices hold byte-identical items.
        let digest = devices.iter().fold(0u64, |acc, d| acc.wrapping_add(d.content_digest()));
        m.insert("device_items_digest".into(), json!(format!("{digest:016x}")));
    }
    Ok(Report { params, setup, load: PhaseReport { elapsed, stats: load_stats } })
}
