//! `shardsync balance` options: command line, `SHARDSYNC_BALANCE_*`
//! environment and a TOML file (same keys with `_`), with the precedence
//! command line > environment > file > default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::select::{Algorithm, BoundedLoad, MaglevConfig, RingConfig, SelectorConfig};
use crate::config::ConfigError;
use crate::http::Limits;

/// The options of `shardsync balance`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BalanceArgs {
    /// Listen address (every worker accepts on it, SO_REUSEPORT) [default: 127.0.0.1:8000]
    #[arg(long, env = "SHARDSYNC_BALANCE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A cluster node's shared address (its `GET /shards` lists the shards); repeat per node
    #[arg(long = "backend", value_name = "HOST:PORT")]
    pub backends: Vec<String>,
    /// The balancer's public URL (nodes must be started with the same --public-url so
    /// their RespURI points here); shown at /status
    #[arg(long, env = "SHARDSYNC_BALANCE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// TOML file with any of these options (`backends = [..]`, `weights = {"h:p" = 2}`, `drain = [..]`)
    #[arg(long, env = "SHARDSYNC_BALANCE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Selection algorithm [default: maglev]
    #[arg(long, value_enum)]
    pub algorithm: Option<Algorithm>,
    /// Ring virtual nodes per unit of weight [default: 16384]
    #[arg(long, value_name = "N")]
    pub vnodes: Option<u32>,
    /// Maglev table size, a prime ≫ 100 × members [default: 65537]
    #[arg(long, value_name = "N")]
    pub maglev_size: Option<usize>,
    /// Bounded load: a member takes a request only while its in-flight requests are within
    /// PCT% of the average (HAProxy hash-balance-factor); 0 = off [default: 0]
    #[arg(long, value_name = "PCT")]
    pub hash_balance_factor: Option<u32>,
    /// Active health check interval [default: 2000]
    #[arg(long, value_name = "MS")]
    pub check_interval_ms: Option<u64>,
    /// Consecutive failed checks that mark a member down [default: 3]
    #[arg(long, value_name = "N")]
    pub fall: Option<u32>,
    /// Consecutive good checks that bring a member back up [default: 2]
    #[arg(long, value_name = "N")]
    pub rise: Option<u32>,
    /// Weight of a member, `HOST:PORT=W` (repeatable) [default: 1]
    #[arg(long = "weight", value_name = "HOST:PORT=W")]
    pub weights: Vec<String>,
    /// Start with this member draining (repeatable); see also POST /admin/drain
    #[arg(long = "drain", value_name = "HOST:PORT")]
    pub drain: Vec<String>,
    /// Worker threads (each one epoll reactor) [default: the number of cores available]
    #[arg(long, env = "SHARDSYNC_BALANCE_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// Largest request body; larger ones get 413 [default: 4194304]
    #[arg(long, value_name = "BYTES", value_parser = crate::config::parse_size)]
    pub max_body: Option<usize>,
    /// Largest request head [default: 16384]
    #[arg(long, value_name = "BYTES", value_parser = crate::config::parse_size)]
    pub max_header_bytes: Option<usize>,
    /// Idle client keep-alive timeout [default: 60000]
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Time for a whole request head, then for a whole body [default: 10000, body 30000]
    #[arg(long, value_name = "MS")]
    pub header_timeout_ms: Option<u64>,
    /// Time allowed for a whole request body [default: 30000]
    #[arg(long, value_name = "MS")]
    pub body_timeout_ms: Option<u64>,
    /// Connect timeout to a member [default: 1000]
    #[arg(long, value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Time a member has to answer a forwarded request [default: 60000]
    #[arg(long, value_name = "MS")]
    pub upstream_timeout_ms: Option<u64>,
    /// Log filter (RUST_LOG when unset) [default: info]
    #[arg(long, env = "SHARDSYNC_BALANCE_LOG_LEVEL", value_name = "L")]
    pub log_level: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key the balancer serves HTTPS only
    #[arg(long, env = "SHARDSYNC_BALANCE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "SHARDSYNC_BALANCE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Admin listen address: GET /status, /route, /metrics and POST /admin/* are served here
    /// only (over TLS when the balancer has a certificate); a non-loopback one needs a token
    /// [default: 127.0.0.1:8001]
    #[arg(long, env = "SHARDSYNC_BALANCE_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// File whose first line is the admin token (`Authorization: Bearer <token>`, at least
    /// 16 visible ASCII characters); a file, not a value, so that no command line or config
    /// shows it [default: none: admin reads open on a loopback admin_listen, changes refused]
    #[arg(long, env = "SHARDSYNC_BALANCE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Also serve GET /metrics on the public listener (for a scraper that cannot reach the
    /// admin address) [default: false]
    #[arg(long, value_name = "BOOL")]
    pub public_metrics: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    backends: Option<Vec<String>>,
    public_url: Option<String>,
    algorithm: Option<Algorithm>,
    vnodes: Option<u32>,
    maglev_size: Option<usize>,
    hash_balance_factor: Option<u32>,
    check_interval_ms: Option<u64>,
    fall: Option<u32>,
    rise: Option<u32>,
    weights: Option<BTreeMap<String, u32>>,
    drain: Option<Vec<String>>,
    threads: Option<usize>,
    max_body: Option<usize>,
    max_header_bytes: Option<usize>,
    idle_timeout_ms: Option<u64>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    upstream_timeout_ms: Option<u64>,
    log_level: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    admin_token_file: Option<PathBuf>,
    public_metrics: Option<bool>,
}

/// Active health checking (HAProxy's defaults: `inter 2s fall 3 rise 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between two checks of a member.
    pub interval: Duration,
    /// Consecutive failures that mark a member down.
    pub fall: u32,
    /// Consecutive successes that mark a down member up.
    pub rise: u32,
    /// Connect and answer timeout of one check.
    pub timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { interval: Duration::from_secs(2), fall: 3, rise: 2, timeout: Duration::from_secs(1) }
    }
}

/// The resolved balancer configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Node addresses (`host:port` of each node's shared port).
    pub backends: Vec<String>,
    /// Public URL, if configured.
    pub public_url: Option<String>,
    /// Selection algorithm and sizes.
    pub selector: SelectorConfig,
    /// Bounded load (off by default).
    pub bounded: BoundedLoad,
    /// Health checking.
    pub health: HealthConfig,
    /// Configured member weights by member id.
    pub weights: BTreeMap<String, u32>,
    /// Members draining from the start.
    pub drain: Vec<String>,
    /// Worker threads.
    pub threads: usize,
    /// HTTP limits (as `serve`).
    pub limits: Limits,
    /// Idle keep-alive timeout.
    pub idle_timeout: Duration,
    /// Request head timeout.
    pub header_timeout: Duration,
    /// Request body timeout.
    pub body_timeout: Duration,
    /// Member connect timeout.
    pub connect_timeout: Duration,
    /// Member answer timeout.
    pub upstream_timeout: Duration,
    /// Log filter.
    pub log_level: Option<String>,
    /// TLS certificate chain and key; `None`: plain HTTP.
    pub tls: Option<crate::config::TlsFiles>,
    /// Admin listen address (see [`crate::balancer`], "Admin").
    pub admin_listen: SocketAddr,
    /// The admin token, if one is configured (see [`crate::balancer`], "Admin").
    pub admin_token: Option<AdminToken>,
    /// The file [`crate::balancer::start`] reads the admin token from when
    /// `admin_token` is not set (read at start, so a config can be checked
    /// where the file is not).
    pub admin_token_file: Option<PathBuf>,
    /// Serve `GET /metrics` on the public listener too.
    pub public_metrics: bool,
}

/// The admin token, compared in constant time; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token; it must be at least 16 characters of visible ASCII.
    pub fn new(token: &str) -> Result<AdminToken, ConfigError> {
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid(
                "the admin token must be at least 16 visible ASCII characters (e.g. `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        Ok(AdminToken(token.to_string()))
    }

    /// The token on the first line of `path`.
    pub fn from_file(path: PathBuf) -> Result<AdminToken, ConfigError> {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path, source })?;
        AdminToken::new(text.lines().next().unwrap_or_default().trim())
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let presented = authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        presented.is_some_and(|t| crate::engine::auth::constant_time_eq(t, &self.0))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            backends: Vec::new(),
            public_url: None,
            selector: SelectorConfig::default(),
            bounded: BoundedLoad::default(),
            health: HealthConfig::default(),
            weights: BTreeMap::new(),
            drain: Vec::new(),
            threads: crate::config::default_shards(),
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            upstream_timeout: Duration::from_secs(60),
            log_level: None,
            tls: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            admin_token: None,
            admin_token_file: None,
            public_metrics: false,
        }
    }
}

impl BalanceConfig {
    /// Merges arguments, the config file and defaults, then validates.
    pub fn resolve(args: &BalanceArgs) -> Result<BalanceConfig, ConfigError> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.clone(), source })?
            }
            None => FileConfig::default(),
        };
        let d = BalanceConfig::default();
        let ms =
            |a: Option<u64>, f: Option<u64>, d: Duration| a.or(f).map(Duration::from_millis).unwrap_or(d);
        let mut weights = file.weights.unwrap_or_default();
        for w in &args.weights {
            let (id, v) = w
                .rsplit_once('=')
                .and_then(|(id, v)| Some((id.to_string(), v.parse::<u32>().ok()?)))
                .ok_or_else(|| ConfigError::Invalid(format!("--weight wants HOST:PORT=W, not {w:?}")))?;
            weights.insert(id, v);
        }
        let mut drain = file.drain.unwrap_or_default();
        drain.extend(args.drain.iter().cloned());
        let backends =
            if args.backends.is_empty() { file.backends.unwrap_or_default() } else { args.backends.clone() };
        let c = BalanceConfig {
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            backends,
            public_url: args.public_url.clone().or(file.public_url),
            selector: SelectorConfig {
                algorithm: args.algorithm.or(file.algorithm).unwrap_or_default(),
                ring: RingConfig { vnodes: args.vnodes.or(file.vnodes).unwrap_or(d.selector.ring.vnodes) },
                maglev: MaglevConfig {
                    table_size: args.maglev_size.or(file.maglev_size).unwrap_or(d.selector.maglev.table_size),
                },
            },
            bounded: BoundedLoad {
                factor_pct: args.hash_balance_factor.or(file.hash_balance_factor).unwrap_or(0),
            },
            health: HealthConfig {
                interval: ms(args.check_interval_ms, file.check_interval_ms, d.health.interval),
                fall: args.fall.or(file.fall).unwrap_or(d.health.fall),
                rise: args.rise.or(file.rise).unwrap_or(d.health.rise),
                timeout: d.health.timeout,
            },
            weights,
            drain,
            threads: args.threads.or(file.threads).unwrap_or(d.threads),
            limits: Limits {
                max_body: args.max_body.or(file.max_body).unwrap_or(d.limits.max_body),
                max_header_bytes: args
                    .max_header_bytes
                    .or(file.max_header_bytes)
                    .unwrap_or(d.limits.max_header_bytes),
                max_headers: d.limits.max_headers,
            },
            idle_timeout: ms(args.idle_timeout_ms, file.idle_timeout_ms, d.idle_timeout),
            header_timeout: ms(args.header_timeout_ms, file.header_timeout_ms, d.header_timeout),
            body_timeout: ms(args.body_timeout_ms, file.body_timeout_ms, d.body_timeout),
            connect_timeout: ms(args.connect_timeout_ms, file.connect_timeout_ms, d.connect_timeout),
            upstream_timeout: ms(args.upstream_timeout_ms, file.upstream_timeout_ms, d.upstream_timeout),
            log_level: args.log_level.clone().or(file.log_level),
            tls: match (args.tls_cert.clone().or(file.tls_cert), args.tls_key.clone().or(file.tls_key)) {
                (Some(cert), Some(key)) => Some(crate::config::TlsFiles { cert, key }),
                (None, None) => None,
                _ => return Err(ConfigError::Invalid("tls_cert and tls_key go together".into())),
            },
            admin_listen: args.admin_listen.or(file.admin_listen).unwrap_or(d.admin_listen),
            admin_token: None,
            admin_token_file: args.admin_token_file.clone().or(file.admin_token_file),
            public_metrics: args.public_metrics.or(file.public_metrics).unwrap_or(d.public_metrics),
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.backends.is_empty() {
            return bad("at least one --backend HOST:PORT is needed".into());
        }
        if self.threads == 0 || self.threads > 1024 {
            return bad(format!("threads must be 1..=1024, not {}", self.threads));
        }
        if self.selector.ring.vnodes == 0 || self.selector.maglev.table_size < 2 {
            return bad("vnodes must be ≥ 1 and maglev_size ≥ 2".into());
        }
        if self.health.fall == 0 || self.health.rise == 0 || self.health.interval.is_zero() {
            return bad("fall, rise and check_interval_ms must be positive".into());
        }
        if self.limits.max_body == 0 || self.limits.max_header_bytes < 256 {
            return bad("max_body must be positive and max_header_bytes ≥ 256".into());
        }
        if self.admin_listen == self.listen && self.listen.port() != 0 {
            return bad(format!("admin_listen must differ from listen ({})", self.listen));
        }
        if !self.admin_listen.ip().is_loopback()
            && self.admin_token.is_none()
            && self.admin_token_file.is_none()
        {
            return bad(format!(
                "admin_listen {} is not a loopback address: set admin_token_file",
                self.admin_listen
            ));
        }
        Ok(())
    }

    /// Reads `admin_token_file` into `admin_token` (when the token is not set already).
    pub fn load_admin_token(&mut self) -> Result<(), ConfigError> {
        if let (None, Some(path)) = (&self.admin_token, &self.admin_token_file) {
            self.admin_token = Some(AdminToken::from_file(path.clone())?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "backends = [\"127.0.0.1:9000\"]\nalgorithm = \"ring\"\nweights = { \"127.0.0.1:9001\" = 3 }\n",
        )
        .unwrap();
        let args = BalanceArgs {
            config: Some(path),
            weights: vec!["127.0.0.1:9002=0".into()],
            ..Default::default()
        };
        let c = BalanceConfig::resolve(&args).unwrap();
        assert_eq!(c.backends, vec!["127.0.0.1:9000"]);
        assert_eq!(c.selector.algorithm, Algorithm::Ring);
        assert_eq!(c.weights.get("127.0.0.1:9001"), Some(&3));
        assert_eq!(c.weights.get("127.0.0.1:9002"), Some(&0));
        assert_eq!(c.health, HealthConfig::default());
        assert!(BalanceConfig::resolve(&BalanceArgs::default()).is_err());
    }

    #[test]
    fn admin_token_file_and_admin_listen() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "  s3cret-admin-token-0123 \nignored\n").unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            format!(
                "backends = [\"127.0.0.1:9000\"]\nadmin_listen = \"10.0.0.5:8001\"\nadmin_token_file = {:?}\n",
                token.display().to_string()
            ),
        )
        .unwrap();
        let mut c =
            BalanceConfig::resolve(&BalanceArgs { config: Some(path), ..Default::default() }).unwrap();
        assert_eq!(c.admin_listen, "10.0.0.5:8001".parse::<SocketAddr>().unwrap());
        assert!(c.admin_token.is_none(), "read at start");
        c.load_admin_token().unwrap();
        let t = c.admin_token.expect("a token");
        assert!(t.admits(Some(b"Bearer s3cret-admin-token-0123")));
        assert!(t.admits(Some(b"bearer  s3cret-admin-token-0123 ")));
        assert!(!t.admits(Some(b"Bearer s3cret-admin-token-012")));
        assert!(!t.admits(Some(b"Basic s3cret-admin-token-0123")));
        assert!(!t.admits(Some(b"s3cret-admin-token-0123")));
        assert!(!t.admits(None));
        assert_eq!(format!("{t:?}"), "AdminToken(..)", "never printed");
        // Non-loopback without a token, a short token, a missing file: refused.
        let backends = vec!["127.0.0.1:9000".to_string()];
        let open = BalanceArgs {
            backends: backends.clone(),
            admin_listen: Some("0.0.0.0:8001".parse().unwrap()),
            ..Default::default()
        };
        assert!(
            matches!(BalanceConfig::resolve(&open), Err(ConfigError::Invalid(m)) if m.contains("admin_token_file"))
        );
        std::fs::write(&token, "short\n").unwrap();
        let short =
            BalanceArgs { backends: backends.clone(), admin_token_file: Some(token), ..Default::default() };
        assert!(BalanceConfig::resolve(&short).unwrap().load_admin_token().is_err());
        let missing =
            BalanceArgs { backends, admin_token_file: Some(dir.path().join("nope")), ..Default::default() };
        let mut missing = BalanceConfig::resolve(&missing).unwrap();
        assert!(matches!(missing.load_admin_token(), Err(ConfigError::Read { .. })));
        // Defaults: loopback admin address, no token, /metrics not public.
        let d = BalanceConfig::default();
        assert!(d.admin_listen.ip().is_loopback() && d.admin_token.is_none() && !d.public_metrics);
    }

    #[test]
    fn glommio_knobs_are_unknown_keys() {
        // The workers run on epoll: io_uring memory and spin-before-park mean nothing.
        let dir = tempfile::tempdir().unwrap();
        for key in ["io_memory = 131072", "spin_us = 0"] {
            let path = dir.path().join("b.toml");
            std::fs::write(&path, format!("backends = [\"127.0.0.1:9000\"]\n{key}\n")).unwrap();
            let args = BalanceArgs { config: Some(path), ..Default::default() };
            match BalanceConfig::resolve(&args) {
                Err(ConfigError::Parse { source, .. }) => {
                    assert!(source.to_string().contains("unknown field"))
                }
                other => panic!("{key}: want an unknown-key error, got {other:?}"),
            }
        }
    }
}
