//! Server configuration: command line, `SHARDSYNC_*` environment variables
//! and an optional TOML file, merged with the precedence
//! command line > environment > file > built-in default.
//!
//! Every option of [`ServeArgs`] has the same name in the TOML file with
//! `_` instead of `-` (`max-body` → `max_body`) and an environment variable
//! `SHARDSYNC_` + upper case (`SHARDSYNC_MAX_BODY`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::http::Limits;
use crate::limits::LimitsConfig;

/// Default shared listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default io_uring registered memory per shard (bytes). Three rings per
/// shard each register it, so a shard locks three times this much.
pub const DEFAULT_IO_MEMORY: usize = 128 << 10;
/// Smallest io memory glommio uses (it rounds smaller values up).
pub const MIN_IO_MEMORY: usize = 64 << 10;
/// Largest io memory accepted (it is allocated and locked per shard).
pub const MAX_IO_MEMORY: usize = 1 << 30;
/// Default io_uring ring depth.
pub const DEFAULT_RING_DEPTH: usize = 128;

/// Why the configuration could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this program.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        source: toml::de::Error,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The options of `shardsync serve` (each also `SHARDSYNC_*` and a TOML key).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Shared listen address; every shard accepts on it (SO_REUSEPORT)
    /// [default: 127.0.0.1:8080]
    #[arg(long, env = "SHARDSYNC_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Directory for the embedded store [default: ./data]
    #[arg(long, env = "SHARDSYNC_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Shared store: a PostgreSQL URL (`postgres://user@host:port/db`); unset,
    /// the embedded store in --data-dir is used. The schema must be current
    /// (`shardsync migrate --store URL`)
    #[arg(long, env = "SHARDSYNC_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// Number of shards (one pinned thread each) [default: the number of cores available]
    #[arg(long, env = "SHARDSYNC_SHARDS", value_name = "N")]
    pub shards: Option<usize>,

    /// First per-shard port; shard i listens on P+i; 0 = ephemeral ports
    /// [default: listen port + 1, or ephemeral when the listen port is 0]
    #[arg(long, env = "SHARDSYNC_SHARD_PORT_BASE", value_name = "P")]
    pub shard_port_base: Option<u16>,

    /// Public URL of the SyncML endpoint, used in RespURI; its path is served
    /// besides /sync [default: http://<listen>/sync]
    #[arg(long, env = "SHARDSYNC_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Node name reported at GET /shards [default: the listen address]
    #[arg(long, env = "SHARDSYNC_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// TOML file with any of these options (keys with `_`, e.g. max_body = 1048576)
    #[arg(long, env = "SHARDSYNC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing
    /// directive list; RUST_LOG is used when unset [default: info]
    #[arg(long, env = "SHARDSYNC_LOG_LEVEL", value_name = "L")]
    pub log_level: Option<String>,

    /// Largest request body; larger ones get 413 [default: 4194304 (4 MiB)]
    #[arg(long, env = "SHARDSYNC_MAX_BODY", value_name = "BYTES", value_parser = parse_size)]
    pub max_body: Option<usize>,

    /// Largest request head (request line and headers); larger ones get 431 [default: 16384]
    #[arg(long, env = "SHARDSYNC_MAX_HEADER_BYTES", value_name = "BYTES", value_parser = parse_size)]
    pub max_header_bytes: Option<usize>,

    /// Time allowed for a whole request head once its first byte arrived; then 408 and close
    /// [default: 10000]
    #[arg(long, env = "SHARDSYNC_HEADER_TIMEOUT_MS", value_name = "MS")]
    pub header_timeout_ms: Option<u64>,

    /// Time allowed for a whole request body after its head; then 408 and close [default: 30000]
    #[arg(long, env = "SHARDSYNC_BODY_TIMEOUT_MS", value_name = "MS")]
    pub body_timeout_ms: Option<u64>,

    /// An idle keep-alive connection is closed after this long [default: 60000]
    #[arg(long, env = "SHARDSYNC_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,

    /// Time allowed to write one response; then the connection is closed [default: 30000]
    #[arg(long, env = "SHARDSYNC_WRITE_TIMEOUT_MS", value_name = "MS")]
    pub write_timeout_ms: Option<u64>,

    /// A SyncML session idle this long expires; its next message gets 404 [default: 900]
    #[arg(long, env = "SHARDSYNC_SESSION_TIMEOUT_SECS", value_name = "SECS")]
    pub session_timeout_secs: Option<u64>,

    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish [default: 10000]
    #[arg(long, env = "SHARDSYNC_SHUTDOWN_GRACE_MS", value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,

    /// io_uring memory registered per shard (locked: 3x this per shard counts
    /// against `ulimit -l`; 65536..=1GiB) [default: 131072, lowered to fit `ulimit -l`]
    #[arg(long, env = "SHARDSYNC_IO_MEMORY", value_name = "BYTES", value_parser = parse_size)]
    pub io_memory: Option<usize>,

    /// io_uring submission ring depth per ring [default: 128]
    #[arg(long, env = "SHARDSYNC_RING_DEPTH", value_name = "N")]
    pub ring_depth: Option<usize>,

    /// Pin shard i to the i-th available CPU (false: let the kernel place threads)
    /// [default: true]
    #[arg(long, env = "SHARDSYNC_PIN", value_name = "BOOL")]
    pub pin: Option<bool>,

    /// Move a plain keep-alive connection to the shard that owns the session
    /// of its request, instead of handing each of its requests over
    /// (false: hand over every request) [default: true]
    #[arg(long, env = "SHARDSYNC_MIGRATE_CONNECTIONS", value_name = "BOOL")]
    pub migrate_connections: Option<bool>,

    /// Failed logins per (user name, client address) allowed (within the
    /// failure window) before that pair backs off [default: 5]
    #[arg(long, env = "SHARDSYNC_AUTH_FREE_FAILURES", value_name = "N")]
    pub auth_free_failures: Option<u32>,

    /// Failed logins per user name from all addresses before the user backs off;
    /// a device that logged in from the same address before is never held back
    /// by it [default: 50]
    #[arg(long, env = "SHARDSYNC_USER_FREE_FAILURES", value_name = "N")]
    pub user_free_failures: Option<u32>,

    /// Failed logins and refused session probes per client address before the
    /// address backs off (checked before decoding) [default: 30]
    #[arg(long, env = "SHARDSYNC_ADDRESS_FREE_FAILURES", value_name = "N")]
    pub address_free_failures: Option<u32>,

    /// The key of the stateless auth challenges (32 bytes, created 0600 if
    /// missing); every node of a cluster must use the same file [default: DATA_DIR/auth.key]
    #[arg(long, env = "SHARDSYNC_AUTH_KEY_FILE", value_name = "FILE")]
    pub auth_key_file: Option<PathBuf>,

    /// First back-off after the free failures; doubles with each further failure
    /// (HTTP 429 with Retry-After meanwhile) [default: 1000]
    #[arg(long, env = "SHARDSYNC_AUTH_BACKOFF_BASE_MS", value_name = "MS")]
    pub auth_backoff_base_ms: Option<u64>,

    /// Longest back-off [default: 300]
    #[arg(long, env = "SHARDSYNC_AUTH_BACKOFF_MAX_SECS", value_name = "SECS")]
    pub auth_backoff_max_secs: Option<u64>,

    /// A key's failures are forgotten this long after its last one [default: 900]
    #[arg(long, env = "SHARDSYNC_AUTH_FAILURE_WINDOW_SECS", value_name = "SECS")]
    pub auth_failure_window_secs: Option<u64>,

    /// Every answer to a failed authentication is sent no earlier than this after
    /// the request arrived (same timing for unknown users and wrong passwords) [default: 200]
    #[arg(long, env = "SHARDSYNC_AUTH_FAIL_DELAY_MS", value_name = "MS")]
    pub auth_fail_delay_ms: Option<u64>,

    /// Concurrent authenticated sessions per user on this node; more get SyncML
    /// status 503; 0 = no cap (load tools open many per user; the deploy example sets 32) [default: 0]
    #[arg(long, env = "SHARDSYNC_MAX_SESSIONS_PER_USER", value_name = "N")]
    pub max_sessions_per_user: Option<u32>,

    /// Proxies (e.g. the balancer) whose X-Forwarded-For names the client
    /// address for the per-address limits; comma-separated IPs [default: none]
    #[arg(long, env = "SHARDSYNC_TRUSTED_PROXIES", value_name = "IPS", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,

    /// TLS certificate chain (PEM); with --tls-key the node serves HTTPS only
    #[arg(long, env = "SHARDSYNC_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "SHARDSYNC_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// The TOML file: the same keys as [`ServeArgs`], all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    shards: Option<usize>,
    shard_port_base: Option<u16>,
    public_url: Option<String>,
    node: Option<String>,
    log_level: Option<String>,
    max_body: Option<usize>,
    max_header_bytes: Option<usize>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    session_timeout_secs: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    io_memory: Option<usize>,
    ring_depth: Option<usize>,
    pin: Option<bool>,
    migrate_connections: Option<bool>,
    auth_free_failures: Option<u32>,
    user_free_failures: Option<u32>,
    address_free_failures: Option<u32>,
    auth_key_file: Option<PathBuf>,
    auth_backoff_base_ms: Option<u64>,
    auth_backoff_max_secs: Option<u64>,
    auth_failure_window_secs: Option<u64>,
    auth_fail_delay_ms: Option<u64>,
    max_sessions_per_user: Option<u32>,
    trusted_proxies: Option<Vec<std::net::IpAddr>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// The resolved server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Shared listen address (port 0: an ephemeral port, reported at `/shards`).
    pub listen: SocketAddr,
    /// Directory for the embedded store.
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the shared store (`None`: the embedded store).
    pub store: Option<String>,
    /// Number of shards (≥ 1).
    pub shards: usize,
    /// First per-shard port: `None` derives it from the listen port, `Some(0)` means ephemeral.
    pub shard_port_base: Option<u16>,
    /// Public URL of the SyncML endpoint, if configured.
    pub public_url: Option<String>,
    /// Node name reported at `/shards` (defaults to the listen address).
    pub node: Option<String>,
    /// Log filter explicitly configured (`None`: RUST_LOG or `info`).
    pub log_level: Option<String>,
    /// HTTP size limits.
    pub limits: Limits,
    /// Time for a whole request head.
    pub header_timeout: Duration,
    /// Time for a whole request body.
    pub body_timeout: Duration,
    /// Idle keep-alive timeout.
    pub idle_timeout: Duration,
    /// Time to write one response.
    pub write_timeout: Duration,
    /// Idle expiry of a SyncML session.
    pub session_timeout: Duration,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// io_uring registered memory per shard, in bytes (`None`: 128 KiB, or
    /// less so that every shard fits under RLIMIT_MEMLOCK).
    pub io_memory: Option<usize>,
    /// io_uring ring depth.
    pub ring_depth: usize,
    /// Pin each shard to a CPU.
    pub pin: bool,
    /// Move plain connections on the shared port to the shard that owns
    /// their session (else every request of theirs is handed over).
    pub migrate_connections: bool,
    /// Abuse limits (auth back-off, sessions per user).
    pub abuse: LimitsConfig,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The auth challenge key file; `None`: `auth.key` in the data dir
    /// (see [`Config::auth_key_path`]).
    pub auth_key_file: Option<PathBuf>,
    /// TLS certificate chain and key (PEM files); `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: PathBuf::from("./data"),
            store: None,
            shards: default_shards(),
            shard_port_base: None,
            public_url: None,
            node: None,
            log_level: None,
            limits: Limits::default(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(crate::sync_service::DEFAULT_SESSION_TIMEOUT_SECS),
            shutdown_grace: Duration::from_secs(10),
            io_memory: None,
            ring_depth: DEFAULT_RING_DEPTH,
            pin: true,
            migrate_connections: true,
            abuse: LimitsConfig::default(),
            trusted_proxies: Vec::new(),
            auth_key_file: None,
            tls: None,
        }
    }
}

/// The number of cores this process may run on.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl Config {
    /// Merges command line/environment (`args`), the config file named there
    /// and the defaults, then validates the result.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let ms = |cli: Option<u64>, file: Option<u64>, default: Duration| {
            cli.or(file).map(Duration::from_millis).unwrap_or(default)
        };
        let config = Config {
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or(d.data_dir),
            store: args.store.clone().or(file.store),
            shards: args.shards.or(file.shards).unwrap_or(d.shards),
            shard_port_base: args.shard_port_base.or(file.shard_port_base),
            public_url: args.public_url.clone().or(file.public_url),
            node: args.node.clone().or(file.node),
            log_level: args.log_level.clone().or(file.log_level),
            limits: Limits {
                max_body: args.max_body.or(file.max_body).unwrap_or(d.limits.max_body),
                max_header_bytes: args
                    .max_header_bytes
                    .or(file.max_header_bytes)
                    .unwrap_or(d.limits.max_header_bytes),
                max_headers: d.limits.max_headers,
            },
            header_timeout: ms(args.header_timeout_ms, file.header_timeout_ms, d.header_timeout),
            body_timeout: ms(args.body_timeout_ms, file.body_timeout_ms, d.body_timeout),
            idle_timeout: ms(args.idle_timeout_ms, file.idle_timeout_ms, d.idle_timeout),
            write_timeout: ms(args.write_timeout_ms, file.write_timeout_ms, d.write_timeout),
            session_timeout: args
                .session_timeout_secs
                .or(file.session_timeout_secs)
                .map(Duration::from_secs)
                .unwrap_or(d.session_timeout),
            shutdown_grace: ms(args.shutdown_grace_ms, file.shutdown_grace_ms, d.shutdown_grace),
            io_memory: args.io_memory.or(file.io_memory),
            ring_depth: args.ring_depth.or(file.ring_depth).unwrap_or(d.ring_depth),
            pin: args.pin.or(file.pin).unwrap_or(d.pin),
            migrate_connections: args
                .migrate_connections
                .or(file.migrate_connections)
                .unwrap_or(d.migrate_connections),
            abuse: LimitsConfig {
                auth_free_failures: args
                    .auth_free_failures
                    .or(file.auth_free_failures)
                    .unwrap_or(d.abuse.auth_free_failures),
                user_free_failures: args
                    .user_free_failures
                    .or(file.user_free_failures)
                    .unwrap_or(d.abuse.user_free_failures),
                address_free_failures: args
                    .address_free_failures
                    .or(file.address_free_failures)
                    .unwrap_or(d.abuse.address_free_failures),
                known_device_ttl: d.abuse.known_device_ttl,
                auth_backoff_base: ms(
                    args.auth_backoff_base_ms,
                    file.auth_backoff_base_ms,
                    d.abuse.auth_backoff_base,
                ),
                auth_backoff_max: args
                    .auth_backoff_max_secs
                    .or(file.auth_backoff_max_secs)
                    .map(Duration::from_secs)
                    .unwrap_or(d.abuse.auth_backoff_max),
                auth_failure_window: args
                    .auth_failure_window_secs
                    .or(file.auth_failure_window_secs)
                    .map(Duration::from_secs)
                    .unwrap_or(d.abuse.auth_failure_window),
                auth_fail_delay: ms(
                    args.auth_fail_delay_ms,
                    file.auth_fail_delay_ms,
                    d.abuse.auth_fail_delay,
                ),
                max_sessions_per_user: args
                    .max_sessions_per_user
                    .or(file.max_sessions_per_user)
                    .unwrap_or(d.abuse.max_sessions_per_user),
            },
            trusted_proxies: args.trusted_proxies.clone().or(file.trusted_proxies).unwrap_or_default(),
            auth_key_file: args.auth_key_file.clone().or(file.auth_key_file),
            tls: match (args.tls_cert.clone().or(file.tls_cert), args.tls_key.clone().or(file.tls_key)) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => return Err(ConfigError::Invalid("tls_cert and tls_key go together".into())),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Where the auth challenge key lives: `auth_key_file`, else `auth.key`
    /// in the data dir.
    pub fn auth_key_path(&self) -> PathBuf {
        self.auth_key_file.clone().unwrap_or_else(|| self.data_dir.join("auth.key"))
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.shards == 0 || self.shards > 1024 {
            return bad(format!("shards must be 1..=1024, not {}", self.shards));
        }
        if self.limits.max_body == 0 {
            return bad("max_body must be positive".into());
        }
        if self.limits.max_header_bytes < 256 {
            return bad("max_header_bytes must be at least 256".into());
        }
        if let Some(m) = self.io_memory {
            if !(MIN_IO_MEMORY..=MAX_IO_MEMORY).contains(&m) {
                return bad(format!("io_memory must be {MIN_IO_MEMORY}..={MAX_IO_MEMORY} bytes, not {m}"));
            }
        }
        if self.ring_depth == 0 || self.ring_depth > 32768 {
            return bad(format!("ring_depth must be 1..=32768, not {}", self.ring_depth));
        }
        if self.abuse.auth_backoff_base.is_zero()
            || self.abuse.auth_backoff_max < self.abuse.auth_backoff_base
        {
            return bad("auth_backoff_base_ms must be positive and at most auth_backoff_max_secs".into());
        }
        if self.abuse.auth_fail_delay > Duration::from_secs(10) {
            return bad("auth_fail_delay_ms must be at most 10000".into());
        }
        for (name, d) in [
            ("auth_failure_window_secs", self.abuse.auth_failure_window),
            ("header_timeout_ms", self.header_timeout),
            ("body_timeout_ms", self.body_timeout),
            ("idle_timeout_ms", self.idle_timeout),
            ("write_timeout_ms", self.write_timeout),
            ("session_timeout_secs", self.session_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be positive"));
            }
        }
        if let Some(url) = &self.store {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return bad("store must be a postgres:// or postgresql:// URL".into());
            }
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad(format!("public_url must start with http:// or https://, not {url:?}"));
            }
        }
        for i in 0..self.shards {
            self.shard_port(i)?;
        }
        Ok(())
    }

    /// The configured own port of shard `i` (0: ephemeral).
    pub fn shard_port(&self, i: usize) -> Result<u16, ConfigError> {
        let base = match self.shard_port_base {
            Some(0) => return Ok(0),
            Some(p) => u32::from(p),
            None if self.listen.port() == 0 => return Ok(0),
            None => u32::from(self.listen.port()) + 1,
        };
        u16::try_from(base + i as u32)
            .map_err(|_| ConfigError::Invalid(format!("shard {i}'s port {} is above 65535", base + i as u32)))
    }

    /// The path of the SyncML endpoint from the public URL (`/sync` when unset).
    /// `/sync` is always served as well.
    pub fn sync_path(&self) -> String {
        let Some(url) = &self.public_url else { return "/sync".to_string() };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        let path = path.split(['?', '#']).next().unwrap_or("/");
        if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        }
    }

    /// The public URL clients are told to use (RespURI base).
    pub fn public_url_or_default(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}/sync", self.listen))
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
}

/// Parses a byte size: a plain number or one with a `K`/`KiB`/`M`/`MiB`/`G`/`GiB` suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size too large: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert!(parse_size("x").is_err());
        assert!(parse_size("1T").is_err());
    }

    #[test]
    fn precedence_cli_over_file_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "max_body = 1000\nshards = 3\nidle_timeout_ms = 5\n").unwrap();
        let args = ServeArgs { config: Some(path), shards: Some(2), ..Default::default() };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.shards, 2);
        assert_eq!(c.limits.max_body, 1000);
        assert_eq!(c.idle_timeout, Duration::from_millis(5));
        assert_eq!(c.header_timeout, Duration::from_secs(10));
    }

    #[test]
    fn store_url_from_file_or_cli() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "store = \"postgres://a@db/x\"\n").unwrap();
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        assert_eq!(Config::resolve(&args).unwrap().store.as_deref(), Some("postgres://a@db/x"));
        let args =
            ServeArgs { config: Some(path), store: Some("postgresql://b@db/y".into()), ..Default::default() };
        assert_eq!(Config::resolve(&args).unwrap().store.as_deref(), Some("postgresql://b@db/y"));
        let args = ServeArgs { store: Some("mysql://nope".into()), ..Default::default() };
        assert!(matches!(Config::resolve(&args), Err(ConfigError::Invalid(_))));
        assert_eq!(Config::resolve(&ServeArgs::default()).unwrap().store, None);
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "max_bodyy = 1\n").unwrap();
        let args = ServeArgs { config: Some(path), ..Default::default() };
        assert!(matches!(Config::resolve(&args), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn shard_ports_and_paths() {
        let mut c = Config { shards: 2, ..Config::default() };
        assert_eq!(c.shard_port(1).unwrap(), 8082);
        c.shard_port_base = Some(9000);
        assert_eq!(c.shard_port(1).unwrap(), 9001);
        c.shard_port_base = Some(0);
        assert_eq!(c.shard_port(1).unwrap(), 0);
        c.shard_port_base = Some(65535);
        assert!(c.validate().is_err());
        c.shard_port_base = None;
        c.listen = "127.0.0.1:0".parse().unwrap();
        assert_eq!(c.shard_port(1).unwrap(), 0);
        assert_eq!(c.sync_path(), "/sync");
        c.public_url = Some("https://sync.example.com/ds/syncml?x=1".into());
        assert_eq!(c.sync_path(), "/ds/syncml");
        c.public_url = Some("https://sync.example.com".into());
        assert_eq!(c.sync_path(), "/");
    }
}
