//! User administration: `shardsync user add|passwd|del|list`.
//!
//! The commands open the embedded store directly. While `shardsync serve`
//! runs on the same data directory the store file is locked
//! ([`StoreError::Locked`]); the commands then go through the running
//! server's admin socket `<data dir>/admin.sock` ([`AdminServer`]), a Unix
//! domain socket with mode 0600 that speaks one JSON request and one JSON
//! answer per line. Passwords are hashed by the command itself, so only the
//! stored digests ever cross the socket.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_lite::future::block_on;
use serde::{Deserialize, Serialize};

use crate::sessions::{SessionDirectory, SessionInfo};
use crate::store::{
    Backend, DeviceSummary, EmbeddedBackend, ReadRequest, ReadResponse, StoreError, StoreHandle, UserRecord,
    WriteBatch, WriteOp,
};
use crate::users::UserError;

/// The admin socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// The default data directory (as for `shardsync serve`).
pub const DEFAULT_DATA_DIR: &str = "data";

/// Longest request or answer line accepted on the admin socket.
const MAX_LINE: u64 = 64 * 1024;

/// Longest answer line read from the admin socket (device and session lists).
const MAX_ANSWER: u64 = 64 << 20;

/// How long the admin socket waits for the shards' session tables.
const SESSION_LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long either side of the admin socket waits for the other.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Manage users: `shardsync user add|passwd|del|list [NAME] [--data-dir DIR]`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
    /// Data directory of the embedded store.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_DATA_DIR, env = "SHARDSYNC_DATA_DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the shared store; when given, the command runs on it
    /// directly (no admin socket needed) and `--data-dir` is ignored.
    #[arg(long, global = true, value_name = "URL", env = "SHARDSYNC_STORE")]
    pub store: Option<String>,
}

/// A `shardsync user` subcommand.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user (password from stdin, or prompted twice on a terminal).
    Add {
        /// User name.
        name: String,
    },
    /// Change a user's password (from stdin, or prompted twice on a terminal).
    Passwd {
        /// User name.
        name: String,
    },
    /// Delete a user and all of the user's data.
    Del {
        /// User name.
        name: String,
    },
    /// List user names, one per line.
    List,
}

/// Manage devices: `shardsync device list USER`, `shardsync device forget USER DEVICE`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DeviceArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DeviceCommand,
    /// Data directory of the embedded store.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_DATA_DIR, env = "SHARDSYNC_DATA_DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the shared store; when given, the command runs on it directly.
    #[arg(long, global = true, value_name = "URL", env = "SHARDSYNC_STORE")]
    pub store: Option<String>,
}

/// A `shardsync device` subcommand.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum DeviceCommand {
    /// List a user's devices: first and last contact, datastores with their last sync type, mappings.
    List {
        /// User name.
        user: String,
    },
    /// Forget a device (its record, sync states and mappings): its next sync is a slow sync.
    Forget {
        /// User name.
        user: String,
        /// Device id (as `device list` prints it).
        device: String,
    },
}

/// Active sessions of a running node: `shardsync session list`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SessionArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SessionCommand,
    /// Data directory of the running `serve` (its admin socket is `DIR/admin.sock`).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_DATA_DIR, env = "SHARDSYNC_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// A `shardsync session` subcommand.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum SessionCommand {
    /// List the node's active SyncML sessions (token, shard, user, device, datastores, messages, times).
    List,
}

/// Runs a parsed `shardsync device …` command and returns the text to print.
pub fn run_device_command(args: DeviceArgs) -> Result<String, AdminError> {
    let request = match args.command {
        DeviceCommand::List { user } => AdminRequest::Devices { user },
        DeviceCommand::Forget { user, device } => AdminRequest::Forget { user, device },
    };
    match &args.store {
        Some(url) => execute_on_postgres(url, request),
        None => execute_on_data_dir(&args.data_dir, request),
    }
}

/// Runs a parsed `shardsync session …` command through the running server's admin socket.
pub fn run_session_command(args: SessionArgs) -> Result<String, AdminError> {
    match args.command {
        SessionCommand::List => send_request(&socket_path(&args.data_dir), &AdminRequest::Sessions),
    }
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The name or password is not acceptable.
    #[error(transparent)]
    User(#[from] UserError),
    /// `add` of a user that exists.
    #[error("user {0} already exists")]
    Exists(String),
    /// `passwd` or `del` of a user that does not exist.
    #[error("no such user: {0}")]
    NotFound(String),
    /// `device forget` of a device the user does not have.
    #[error("user {user} has no device {device}")]
    NoDevice {
        /// User name.
        user: String,
        /// Device id.
        device: String,
    },
    /// The password could not be read, or the two entries differ.
    #[error("password: {0}")]
    Password(String),
    /// The store is locked and the running server's admin socket failed.
    #[error("the store is in use and its admin socket {path} failed: {message}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The running server refused the request (its message).
    #[error("{0}")]
    Remote(String),
}

/// One admin request, as sent over the admin socket (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum AdminRequest {
    /// Add a new user.
    Add {
        /// The record (digests only).
        user: UserRecord,
    },
    /// Replace an existing user's credentials.
    Passwd {
        /// The record (digests only).
        user: UserRecord,
    },
    /// Delete a user and all of its data.
    Del {
        /// User name.
        name: String,
    },
    /// List user names.
    List,
    /// List a user's devices.
    Devices {
        /// User name.
        user: String,
    },
    /// Forget a device: its record, sync states and mappings.
    Forget {
        /// User name.
        user: String,
        /// Device id.
        device: String,
    },
    /// List the node's active sessions (answered by the running server only).
    Sessions,
}

impl AdminRequest {
    /// The operation's name, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            AdminRequest::Add { .. } => "add",
            AdminRequest::Passwd { .. } => "passwd",
            AdminRequest::Del { .. } => "del",
            AdminRequest::List => "list",
            AdminRequest::Devices { .. } => "devices",
            AdminRequest::Forget { .. } => "forget",
            AdminRequest::Sessions => "sessions",
        }
    }

    /// The user the request is about, if any.
    pub fn user_name(&self) -> &str {
        match self {
            AdminRequest::Add { user } | AdminRequest::Passwd { user } => &user.name,
            AdminRequest::Del { name } => name,
            AdminRequest::Devices { user } | AdminRequest::Forget { user, .. } => user,
            AdminRequest::List | AdminRequest::Sessions => "",
        }
    }
}

/// The answer to an [`AdminRequest`] (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminAnswer {
    /// Success, with the text to print.
    Ok(String),
    /// Failure, with the message to print.
    Error(String),
}

/// Runs a parsed `shardsync user …` command and returns the text to print.
///
/// Reads the password for `add` and `passwd` with [`read_password`].
pub fn run_user_command(args: UserArgs) -> Result<String, AdminError> {
    let request = build_request(&args.command, read_password)?;
    match &args.store {
        Some(url) => execute_on_postgres(url, request),
        None => execute_on_data_dir(&args.data_dir, request),
    }
}

/// Runs `request` directly on the PostgreSQL store at `url` (whose schema
/// must be current); PostgreSQL takes care of concurrent servers.
pub fn execute_on_postgres(url: &str, request: AdminRequest) -> Result<String, AdminError> {
    let backend = crate::store::PostgresBackend::open(url).map_err(StoreError::from)?;
    execute(&Access::Backend(&backend), request)
}

/// Builds the request for `command`; `password` is asked only when needed.
pub fn build_request(
    command: &UserCommand,
    password: impl FnOnce() -> Result<String, AdminError>,
) -> Result<AdminRequest, AdminError> {
    Ok(match command {
        UserCommand::Add { name } => {
            crate::users::validate_name(name)?;
            AdminRequest::Add { user: UserRecord::new(name, &password()?)? }
        }
        UserCommand::Passwd { name } => {
            crate::users::validate_name(name)?;
            AdminRequest::Passwd { user: UserRecord::new(name, &password()?)? }
        }
        UserCommand::Del { name } => AdminRequest::Del { name: name.clone() },
        UserCommand::List => AdminRequest::List,
    })
}

/// Reads a password: one line from stdin when it is not a terminal (the
/// trailing newline stripped), else prompted twice without echo.
pub fn read_password() -> Result<String, AdminError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_password_line(stdin.lock());
    }
    let first = rpassword::prompt_password("Password: ").map_err(|e| AdminError::Password(e.to_string()))?;
    let second =
        rpassword::prompt_password("Password (again): ").map_err(|e| AdminError::Password(e.to_string()))?;
    if first != second {
        return Err(AdminError::Password("the two entries differ".into()));
    }
    Ok(first)
}

/// Reads one line as a password, stripping the trailing `\n` or `\r\n`.
pub fn read_password_line(input: impl BufRead) -> Result<String, AdminError> {
    let mut line = String::new();
    input.take(MAX_LINE).read_line(&mut line).map_err(|e| AdminError::Password(e.to_string()))?;
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// The admin socket path of a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Runs `request` on the store in `data_dir`: directly when the store can be
/// opened, through the running server's admin socket when it is locked.
pub fn execute_on_data_dir(data_dir: &Path, request: AdminRequest) -> Result<String, AdminError> {
    match EmbeddedBackend::open(data_dir) {
        Ok(backend) => execute(&Access::Backend(&backend), request),
        Err(StoreError::Locked(_)) => send_request(&socket_path(data_dir), &request),
        Err(e) => Err(e.into()),
    }
}

/// Adds `name` with `password` to the store in `data_dir`.
pub fn add_user(data_dir: &Path, name: &str, password: &str) -> Result<String, AdminError> {
    let cmd = UserCommand::Add { name: name.into() };
    execute_on_data_dir(data_dir, build_request(&cmd, || Ok(password.into()))?)
}

/// Changes the password of `name` in the store in `data_dir`.
pub fn change_password(data_dir: &Path, name: &str, password: &str) -> Result<String, AdminError> {
    let cmd = UserCommand::Passwd { name: name.into() };
    execute_on_data_dir(data_dir, build_request(&cmd, || Ok(password.into()))?)
}

/// Deletes `name` and all of its data from the store in `data_dir`.
pub fn delete_user(data_dir: &Path, name: &str) -> Result<String, AdminError> {
    execute_on_data_dir(data_dir, AdminRequest::Del { name: name.into() })
}

/// The user names in the store in `data_dir`, sorted.
pub fn list_users(data_dir: &Path) -> Result<Vec<String>, AdminError> {
    let text = execute_on_data_dir(data_dir, AdminRequest::List)?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// How a request reaches the store: directly, or through the store threads.
enum Access<'a> {
    Backend(&'a dyn Backend),
    Handle(&'a StoreHandle),
}

impl Access<'_> {
    fn read(&self, request: ReadRequest) -> Result<ReadResponse, StoreError> {
        match self {
            Access::Backend(b) => b.read(&request),
            // The admin thread is no shard: blocking on the answer is fine here.
            Access::Handle(h) => block_on(h.read(request)),
        }
    }

    fn commit(&self, op: WriteOp) -> Result<(), StoreError> {
        let batch = WriteBatch { ops: vec![op] };
        match self {
            Access::Backend(b) => b.commit(std::slice::from_ref(&batch)).map(drop),
            Access::Handle(h) => block_on(h.commit(batch)).map(drop),
        }
    }

    fn devices(&self, user: &str) -> Result<Vec<DeviceSummary>, StoreError> {
        match self.read(ReadRequest::ListDevices { user: user.into() })? {
            ReadResponse::Devices(d) => Ok(d),
            other => Err(StoreError::Backend(format!("unexpected answer to a device list: {other:?}"))),
        }
    }

    fn user_exists(&self, name: &str) -> Result<bool, StoreError> {
        match self.read(ReadRequest::User { name: name.into() })? {
            ReadResponse::User(u) => Ok(u.is_some()),
            other => Err(StoreError::Backend(format!("unexpected answer to a user read: {other:?}"))),
        }
    }
}

fn execute(store: &Access<'_>, request: AdminRequest) -> Result<String, AdminError> {
    match request {
        AdminRequest::Add { user } => {
            crate::users::validate_name(&user.name)?;
            if store.user_exists(&user.name)? {
                return Err(AdminError::Exists(user.name));
            }
            let msg = format!("user {} added", user.name);
            store.commit(WriteOp::PutUser(user))?;
            Ok(msg)
        }
        AdminRequest::Passwd { user } => {
            if !store.user_exists(&user.name)? {
                return Err(AdminError::NotFound(user.name));
            }
            let msg = format!("password of {} changed", user.name);
            store.commit(WriteOp::PutUser(user))?;
            Ok(msg)
        }
        AdminRequest::Del { name } => {
            if !store.user_exists(&name)? {
                return Err(AdminError::NotFound(name));
            }
            let msg = format!("user {name} deleted with all of its data");
            store.commit(WriteOp::DeleteUser { name })?;
            Ok(msg)
        }
        AdminRequest::List => match store.read(ReadRequest::ListUsers)? {
            ReadResponse::Users(mut names) => {
                names.sort();
                Ok(names.join("\n"))
            }
            other => Err(StoreError::Backend(format!("unexpected answer to a user list: {other:?}")).into()),
        },
        AdminRequest::Devices { user } => {
            if !store.user_exists(&user)? {
                return Err(AdminError::NotFound(user));
            }
            Ok(format_devices(&store.devices(&user)?))
        }
        AdminRequest::Forget { user, device } => {
            if !store.user_exists(&user)? {
                return Err(AdminError::NotFound(user));
            }
            if !store.devices(&user)?.iter().any(|d| d.device.device_id == device) {
                return Err(AdminError::NoDevice { user, device });
            }
            let msg = format!("device {device} of {user} forgotten; its next sync is a slow sync");
            store.commit(WriteOp::ForgetDevice { user, device_id: device })?;
            Ok(msg)
        }
        AdminRequest::Sessions => Err(AdminError::Remote(
            "session list needs a running server: it is answered on the admin socket only".into(),
        )),
    }
}

/// Seconds since the Unix epoch as `2026-11-25T12:00:00Z` (`-` for 0).
fn time_text(secs: u64) -> String {
    if secs == 0 {
        return "-".into();
    }
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(|| secs.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// One line per device (tab-separated): id, first seen, last seen,
/// datastores with their last sync type, mappings; with a header line.
pub fn format_devices(devices: &[DeviceSummary]) -> String {
    let mut out = String::from("DEVICE\tFIRST_SEEN\tLAST_SEEN\tDATASTORES\tMAPPINGS");
    for d in devices {
        let stores: Vec<String> =
            d.states.iter().map(|(c, s)| format!("{}:{}", c.as_str(), s.last_sync_type)).collect();
        let stores = if stores.is_empty() { "-".to_string() } else { stores.join(",") };
        out.push_str(&format!(
            "\n{}\t{}\t{}\t{}\t{}",
            d.device.device_id,
            time_text(d.device.first_seen),
            time_text(d.device.last_seen),
            stores,
            d.mappings
        ));
    }
    out
}

/// One line per session (tab-separated), oldest first, with a header line.
pub fn format_sessions(sessions: &[SessionInfo]) -> String {
    let mut out =
        String::from("TOKEN\tSHARD\tUSER\tDEVICE\tSESSION_ID\tDATASTORES\tMESSAGES\tSTARTED\tLAST_ACTIVITY");
    for s in sessions {
        let user = if s.user.is_empty() { "-" } else { s.user.as_str() };
        let stores = if s.datastores.is_empty() { "-" } else { s.datastores.as_str() };
        out.push_str(&format!(
            "\n{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            s.token,
            s.shard,
            user,
            s.device,
            s.session_id,
            stores,
            s.messages,
            time_text(s.started_at),
            time_text(s.last_activity)
        ));
    }
    out
}

/// Sends one request to a running server's admin socket.
pub fn send_request(socket: &Path, request: &AdminRequest) -> Result<String, AdminError> {
    let fail = |message: String| AdminError::Socket { path: socket.to_owned(), message };
    let mut stream = UnixStream::connect(socket).map_err(|e| fail(e.to_string()))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| fail(e.to_string()))?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| fail(e.to_string()))?;
    let mut line = serde_json::to_string(request).map_err(|e| fail(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream).take(MAX_ANSWER).read_line(&mut answer).map_err(|e| fail(e.to_string()))?;
    match serde_json::from_str::<AdminAnswer>(answer.trim_end()) {
        Ok(AdminAnswer::Ok(text)) => Ok(text),
        Ok(AdminAnswer::Error(message)) => Err(AdminError::Remote(message)),
        Err(e) => Err(fail(format!("bad answer {answer:?}: {e}"))),
    }
}

/// The running server's side of the admin socket: one plain thread that
/// answers requests one connection at a time through a [`StoreHandle`].
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Listens on `socket_path` (mode 0600; a stale socket file there is
    /// replaced) and serves requests on a new thread.
    ///
    /// Call it only while holding the store (so no other server uses the path).
    pub fn spawn(store: StoreHandle, socket_path: impl Into<PathBuf>) -> std::io::Result<AdminServer> {
        AdminServer::spawn_with_sessions(store, socket_path, None)
    }

    /// Like [`AdminServer::spawn`]; `sessions` answers `session list`. The
    /// socket's directory is created (0700) if missing, or tightened to 0700; a socket another
    /// running server answers on is an error, never taken over.
    pub fn spawn_with_sessions(
        store: StoreHandle,
        socket_path: impl Into<PathBuf>,
        sessions: Option<SessionDirectory>,
    ) -> std::io::Result<AdminServer> {
        let path = socket_path.into();
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::store::private::private_dir(dir)?;
        }
        if UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is served by another running server: give each node its own --data-dir",
                    path.display()
                ),
            ));
        }
        let listener = bind_private(&path)?;
        // Non-blocking accept polled with a short sleep lets shutdown stop the thread.
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("admin-socket".into())
            .spawn(move || serve(&listener, &store, sessions.as_ref(), &thread_stop))?;
        Ok(AdminServer { path, stop, thread: Some(thread) })
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Stops the thread and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds a Unix socket at `path` that only the owner can connect to.
///
/// The socket is created inside a fresh 0700 directory, set to 0600 and only
/// then renamed into place, so it is never reachable with looser permissions.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            // A socket left by a server that died; we hold the store now.
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    let tmp_dir = parent.join(format!(".admin-sock.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    std::fs::DirBuilder::new().mode(0o700).create(&tmp_dir)?;
    let result = (|| {
        let tmp_sock = tmp_dir.join("s");
        let listener = UnixListener::bind(&tmp_sock)?;
        std::fs::set_permissions(&tmp_sock, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp_sock, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&tmp_dir);
    result
}

fn serve(
    listener: &UnixListener,
    store: &StoreHandle,
    sessions: Option<&SessionDirectory>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = serve_connection(stream, store, sessions) {
                    tracing::warn!("admin socket connection failed: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!("admin socket accept failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn serve_connection(
    stream: UnixStream,
    store: &StoreHandle,
    sessions: Option<&SessionDirectory>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if (&mut reader).take(MAX_LINE).read_line(&mut line)? == 0 {
            return Ok(());
        }
        let answer = match serde_json::from_str::<AdminRequest>(line.trim_end()) {
            Ok(request) => {
                // Never log the record: its MD5 digest is password-equivalent for auth-md5.
                tracing::info!(op = request.op(), user = request.user_name(), "admin request");
                match (&request, sessions) {
                    (AdminRequest::Sessions, Some(dir)) => match dir.list(SESSION_LIST_TIMEOUT) {
                        Ok(list) => AdminAnswer::Ok(format_sessions(&list)),
                        Err(e) => AdminAnswer::Error(format!("session list: {e}")),
                    },
                    _ => match execute(&Access::Handle(store), request) {
                        Ok(text) => AdminAnswer::Ok(text),
                        Err(e) => AdminAnswer::Error(e.to_string()),
                    },
                }
            }
            Err(e) => AdminAnswer::Error(format!("bad admin request: {e}")),
        };
        let mut out = serde_json::to_string(&answer).map_err(std::io::Error::other)?;
        out.push('\n');
        writer.write_all(out.as_bytes())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(clap::Subcommand, Debug)]
    enum Top {
        User(UserArgs),
    }

    fn parse(args: &[&str]) -> UserArgs {
        let Top::User(u) = Cli::try_parse_from(args).unwrap().cmd;
        u
    }

    #[test]
    fn cli_parses() {
        let u = parse(&["shardsync", "user", "add", "alice", "--data-dir", "/tmp/x"]);
        assert_eq!(u.command, UserCommand::Add { name: "alice".into() });
        assert_eq!(u.data_dir, PathBuf::from("/tmp/x"));
        let u = parse(&["shardsync", "user", "--data-dir", "d", "list"]);
        assert_eq!((u.command, u.data_dir), (UserCommand::List, PathBuf::from("d")));
        assert!(Cli::try_parse_from(["shardsync", "user", "add"]).is_err());
    }

    #[test]
    fn password_line_is_stripped() {
        assert_eq!(read_password_line(&b"pw\n"[..]).unwrap(), "pw");
        assert_eq!(read_password_line(&b"pw\r\nmore\n"[..]).unwrap(), "pw");
        assert_eq!(read_password_line(&b" spaced pw "[..]).unwrap(), " spaced pw ");
    }

    #[test]
    fn requests_carry_no_plaintext() {
        let req = build_request(&UserCommand::Add { name: "alice".into() }, || Ok("secret".into())).unwrap();
        let json = serde_json::to_string(&req).unwrap();
        assert!(!json.contains("secret"), "{json}");
        assert!(json.contains("b2IgWJaLuQdX5sbteeXfgQ=="));
        // No password is asked for del/list.
        let req = build_request(&UserCommand::List, || panic!("asked")).unwrap();
        assert_eq!(req, AdminRequest::List);
    }
}
