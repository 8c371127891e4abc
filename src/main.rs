//! The `shardsync` command line.
//!
//! Each subcommand is a variant of [`Command`]; add new ones (`user`,
//! `balance`, `load`) as variants with their own `clap::Args` struct and a
//! match arm in `main`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardsync::config::{Config, ServeArgs};
use shardsync::server::{self, ShardContext};

/// mimalloc: glibc's malloc returns freed memory to the OS at the end of
/// every large message and page-faults it back in on the next one (about 3×
/// slower XML decode of a 100-item Sync in the codec bench); mimalloc keeps it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// shardsync: a shard-per-core SyncML (OMA DS 1.1/1.2) data synchronization server.
#[derive(Debug, Parser)]
#[command(name = "shardsync", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the SyncML server: POST /sync, GET /health, GET /shards, GET /metrics.
    ///
    /// Every option can also be set with a SHARDSYNC_* environment variable or
    /// in the TOML file given by --config; precedence: command line >
    /// environment > file > default.
    Serve(ServeArgs),
    /// Manage users: add, passwd, del, list (works while `serve` runs on the same data dir).
    User(shardsync::admin::UserArgs),
    /// Manage a user's devices: list, forget (its next sync is slow); works while `serve` runs.
    Device(shardsync::admin::DeviceArgs),
    /// Show the active SyncML sessions of a running node (through its admin socket).
    Session(shardsync::admin::SessionArgs),
    /// Create or upgrade the PostgreSQL schema (versioned migrations; safe to run again).
    Migrate(MigrateArgs),
    /// Run the balancer: consistent hashing of SyncML sessions over the shards of the
    /// --backend nodes (learned from their GET /shards); GET /status, GET /health, GET /metrics.
    Balance(shardsync::balancer::BalanceArgs),
    /// Print the routing token (16 hex digits) of a SyncML message file: the key the
    /// balancer routes it by when it carries no `?s=` token.
    RouteKey(RouteKeyArgs),
    /// Play many SyncML devices against a SyncML server (ours or another) and report
    /// sessions/s, items/s, per-message latency and errors by kind.
    Load(shardsync::load::LoadArgs),
    /// Benchmark target for perf/wrk-serve.sh (not for production).
    #[command(hide = true)]
    BenchServer(BenchArgs),
}

/// Options of `migrate`.
#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// PostgreSQL URL (`postgres://user@host:port/db`).
    #[arg(long, env = "SHARDSYNC_STORE", value_name = "URL")]
    store: String,
}

/// Options of `route-key`.
#[derive(Debug, clap::Args)]
struct RouteKeyArgs {
    /// The message (XML, or WBXML when the name ends in `.wbxml`).
    file: PathBuf,
}

/// Options of the hidden `bench-server` subcommand.
#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// `handler`: the full server path with a fixed SyncML answer;
    /// `ceiling`: a minimal glommio server answering the same bytes without
    /// HTTP parsing beyond finding the request's end, nor decoding.
    #[arg(long, value_enum)]
    mode: BenchMode,
    /// File whose contents are the answer body.
    #[arg(long, value_name = "FILE")]
    reply: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchMode {
    Handler,
    Ceiling,
}

/// Turns transparent huge pages off for this process. The store's page cache
/// and the allocator grow in small steps; with THP every fresh 2 MiB region is
/// zeroed whole on its first touch, which was a quarter of a slow sync's CPU
/// (`clear_page_erms` in `perf/profile.sh`). RSS per idle session drops too.
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE reads no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        eprintln!("shardsync: cannot disable transparent huge pages: {}", std::io::Error::last_os_error());
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::User(args) => match shardsync::admin::run_user_command(args) {
            Ok(out) => {
                if !out.is_empty() {
                    println!("{out}");
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Device(args) => print_admin(shardsync::admin::run_device_command(args)),
        Command::Session(args) => print_admin(shardsync::admin::run_session_command(args)),
        Command::Migrate(args) => migrate(&args),
        Command::BenchServer(args) => bench_server(&args),
        Command::Balance(args) => balance(&args),
        Command::RouteKey(args) => route_key(&args),
        Command::Load(args) => {
            init_tracing(None);
            shardsync::load::run_command(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shardsync: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints an admin command's output.
fn print_admin(result: Result<String, shardsync::admin::AdminError>) -> Result<(), String> {
    let out = result.map_err(|e| e.to_string())?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}

/// `migrate`: brings the PostgreSQL schema up to date.
fn migrate(args: &MigrateArgs) -> Result<(), String> {
    use shardsync::store::postgres::SCHEMA_VERSION;
    use shardsync::store::PostgresBackend;
    let backend = PostgresBackend::connect(&args.store).map_err(|e| e.to_string())?;
    let applied = backend.migrate().map_err(|e| e.to_string())?;
    if applied.is_empty() {
        println!("schema already at version {SCHEMA_VERSION}");
    } else {
        let list: Vec<String> = applied.iter().map(i32::to_string).collect();
        println!("applied migration(s) {}; schema at version {SCHEMA_VERSION}", list.join(", "));
    }
    Ok(())
}

/// `serve`: the store (embedded, or PostgreSQL with `--store`), its
/// reader/writer threads, the admin socket (embedded store only), and one
/// sync engine service per shard.
fn serve(args: &ServeArgs) -> Result<(), String> {
    use shardsync::engine::EngineConfig;
    use shardsync::store::embedded::EmbeddedBackend;
    use shardsync::store::postgres::{PostgresBackend, PostgresOptions};
    use shardsync::store::{Backend, StoreHandle, WriterLimits};
    use shardsync::sync_service::EngineService;
    use std::sync::Arc;

    let config = Config::resolve(args).map_err(|e| e.to_string())?;
    // Before anything is opened or created: a low limit is one line, no side effect.
    server::check_memlock(&config).map_err(|e| e.to_string())?;
    init_tracing(config.log_level.as_deref());
    let (backend, readers, writers): (Arc<dyn Backend>, usize, usize) = match &config.store {
        Some(url) => {
            // Reads wait on network round trips: more reader threads, one
            // pooled connection each; two writers, so that one fills its next
            // group while the other waits for its WAL flush.
            let (readers, writers) = (4, 2);
            let options = PostgresOptions { max_idle: readers + writers, ..PostgresOptions::default() };
            let backend = PostgresBackend::connect_with(url, options).map_err(|e| e.to_string())?;
            // Refuse an out-of-date schema; the message names `shardsync migrate`.
            backend.check_schema().map_err(|e| e.to_string())?;
            tracing::debug!(schema = shardsync::store::postgres::SCHEMA_VERSION, "PostgreSQL store open");
            (Arc::new(backend), readers, writers)
        }
        None => {
            let backend = EmbeddedBackend::open(&config.data_dir).map_err(|e| e.to_string())?;
            tracing::debug!(data_dir = %config.data_dir.display(), "embedded store open");
            // Reads are short redb transactions; two reader threads keep shards from
            // queueing behind one large snapshot.
            // redb has one write transaction at a time: one writer.
            (Arc::new(backend), 2, 1)
        }
    };
    let (store, threads) =
        StoreHandle::start_with_writers(backend, readers, writers, WriterLimits::default())
            .map_err(|e| format!("cannot start store threads: {e}"))?;
    let metrics = shardsync::metrics::NodeMetrics::new(config.shards).with_source(Arc::new(store.clone()));
    let (ops, directory) = server::NodeOps::new(&config, metrics);
    // The admin socket: user commands while the embedded store is locked, and
    // `shardsync session list` (the node's active sessions) with either store.
    // On PostgreSQL the socket only serves `session list`: a node without its
    // own existing data dir (or whose socket another node holds) runs without it.
    let socket = shardsync::admin::socket_path(&config.data_dir);
    let admin = if config.store.is_some() && !config.data_dir.is_dir() {
        tracing::info!(data_dir = %config.data_dir.display(), "no admin socket: the data dir does not exist");
        None
    } else {
        match shardsync::admin::AdminServer::spawn_with_sessions(store.clone(), &socket, Some(directory)) {
            Ok(a) => Some(a),
            Err(e) if config.store.is_some() => {
                tracing::warn!(socket = %socket.display(), error = %e, "no admin socket (session list unavailable)");
                None
            }
            Err(e) => return Err(format!("cannot open the admin socket {}: {e}", socket.display())),
        }
    };
    let engine = EngineConfig {
        public_url: config.public_url.clone().unwrap_or_default(),
        max_msg_size: config.limits.max_body,
        auth_key: auth_key(&config)?,
        ..EngineConfig::default()
    };
    let session_timeout = config.session_timeout.as_secs();
    let result = server::run_with(config, ops, move |ctx: ShardContext| {
        EngineService::with_ops(engine.clone(), store.clone(), session_timeout, ctx.sessions.clone())
    })
    .map_err(|e| e.to_string());
    if let Some(admin) = admin {
        admin.shutdown();
    }
    threads.shutdown();
    result
}

/// The key of the stateless auth challenges: read from `auth_key_file` (or
/// `auth.key` in the data dir), created there with 32 random bytes (mode
/// 0600) if it does not exist. A PostgreSQL node without a data dir and
/// without a key file runs with a random key of its own (logged: every node
/// of a cluster should share one file).
fn auth_key(config: &Config) -> Result<shardsync::engine::auth::AuthKey, String> {
    use shardsync::engine::auth::AuthKey;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = config.auth_key_path();
    if config.auth_key_file.is_none() && !config.data_dir.is_dir() {
        tracing::warn!(data_dir = %config.data_dir.display(),
            "no auth key file and no data dir: a random challenge key for this process; give every node of a cluster the same auth_key_file");
        return Ok(AuthKey::random());
    }
    if let Some(bytes) = read_auth_key(&path)? {
        return Ok(AuthKey::new(bytes));
    }
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // Written whole to a private temp file of this process, then linked into
    // place: the link fails if another node sharing the file made it first
    // (then its key is the one to use), and no half key is ever read.
    let tmp = path.with_extension(format!("key.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot create {}: {e}", tmp.display()));
    }
    let linked = std::fs::hard_link(&tmp, &path);
    std::fs::remove_file(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    match linked {
        Ok(()) => {
            tracing::info!(file = %path.display(), "created the auth challenge key");
            Ok(AuthKey::new(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_auth_key(&path)?
            .map(AuthKey::new)
            .ok_or_else(|| format!("{}: vanished while being created", path.display())),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// The 32 bytes of an existing auth key file (None if there is none), refused
/// if others may read it.
fn read_auth_key(path: &std::path::Path) -> Result<Option<[u8; 32]>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mode = f.metadata().map_err(|e| format!("{}: {e}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: the auth key file must not be readable by others (mode {:o}; chmod 600 it)",
            path.display(),
            mode & 0o777
        ));
    }
    let mut bytes = [0u8; 32];
    f.read_exact(&mut bytes).map_err(|e| format!("{}: want 32 bytes: {e}", path.display()))?;
    Ok(Some(bytes))
}

/// `balance`: the proxy in front of the cluster's shards.
fn balance(args: &shardsync::balancer::BalanceArgs) -> Result<(), String> {
    let config = shardsync::balancer::BalanceConfig::resolve(args).map_err(|e| e.to_string())?;
    init_tracing(config.log_level.as_deref());
    shardsync::balancer::run(config).map_err(|e| e.to_string())
}

fn route_key(args: &RouteKeyArgs) -> Result<(), String> {
    use shardsync::model::Encoding;
    let body = std::fs::read(&args.file).map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let wbxml = args.file.extension().is_some_and(|e| e == "wbxml");
    let encoding = if wbxml { Encoding::Wbxml } else { Encoding::Xml };
    let ids = shardsync::balancer::key::scan(encoding, &body).map_err(|e| e.to_string())?;
    println!("{}", shardsync::routing::token(ids.key()));
    Ok(())
}

fn bench_server(args: &BenchArgs) -> Result<(), String> {
    let config = Config::resolve(&args.serve).map_err(|e| e.to_string())?;
    init_tracing(config.log_level.as_deref());
    let reply =
        std::fs::read(&args.reply).map_err(|e| format!("cannot read {}: {e}", args.reply.display()))?;
    match args.mode {
        BenchMode::Handler => {
            let reply = std::sync::Arc::new(reply);
            server::run(config, move |_| server::FixedReply::new(reply.clone())).map_err(|e| e.to_string())
        }
        BenchMode::Ceiling => shardsync::shard::run_ceiling(config, reply).map_err(|e| e.to_string()),
    }
}

/// Logs to stderr; the filter is `--log-level`, else RUST_LOG, else `info`.
fn init_tracing(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
