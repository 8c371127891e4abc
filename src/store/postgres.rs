//! The PostgreSQL backend: the shared store of a cluster.
//!
//! Runs only on the store's own threads (the synchronous `postgres` client
//! blocks; see [`super::handle`]). Each thread takes a connection from a
//! small pool inside the backend and gives it back afterwards; a connection
//! that died (network loss, PostgreSQL restart) is dropped and a fresh one is
//! opened on the next use, so the backend reconnects by itself. An operation
//! that fails because the connection broke answers [`StoreError::Backend`]
//! (retryable, HTTP 503) and leaves nothing half-written: every commit is one
//! transaction.
//!
//! # Group commit
//!
//! [`Backend::commit`] applies all batches of a group in ONE transaction. The
//! ops are folded in memory into their final rows (later ops of the group see
//! earlier ones) and written with one `INSERT … SELECT FROM unnest(…)` per
//! table, so a group of a thousand item rows is a handful of statements.
//! Only `DeleteUser` (an admin operation) is a barrier that flushes what is
//! pending before it.
//!
//! # Change sequence numbers
//!
//! Server ids and seqs are allocated per (user, collection) from the
//! `counters` row, which the commit locks first (`INSERT … ON CONFLICT DO
//! UPDATE … RETURNING`, in a fixed key order so two nodes cannot deadlock on
//! them) and holds until it commits. Commits touching one collection are
//! therefore serialized and become visible in seq order: a reader whose
//! snapshot shows a seq also shows every smaller one, so "changes since seq"
//! can never skip a change, whichever node wrote it.
//!
//! # Schema
//!
//! Every table of user data has the user name as its leading key and no
//! query joins across users, so the tables can be distributed by user
//! (Citus). Sessions are keyed by their routing key alone. The schema is
//! versioned in `schema_migrations`; [`PostgresBackend::migrate`] brings it
//! up to date and [`PostgresBackend::open`] refuses an out-of-date schema.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row, Statement};

use super::{
    bare_item, Backend, Collection, CommitInfo, DatastoreSnapshot, DeviceRecord, DeviceSummary, ItemRecord,
    ItemScope, ReadRequest, ReadResponse, SessionRecord, StoreError, SyncState, UserRecord, WriteBatch,
    WriteOp,
};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 1;

/// The command that brings a database's schema up to date.
pub const MIGRATE_HINT: &str = "shardsync migrate --store <url>";

/// One versioned schema step.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every schema step, in order. Never edit a released step: add a new one.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial schema",
    // COLLATE "C": byte order, the same as Rust's, and cheaper to compare.
    sql: r#"
CREATE TABLE users (
    user_name     text COLLATE "C" NOT NULL,
    md5_b64       text NOT NULL,
    password_hash text NOT NULL,
    PRIMARY KEY (user_name)
);
CREATE TABLE devices (
    user_name  text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    devinf_xml bytea NOT NULL,
    nonce      bytea NOT NULL,
    first_seen bigint NOT NULL,
    last_seen  bigint NOT NULL,
    PRIMARY KEY (user_name, device_id)
);
CREATE TABLE counters (
    user_name text COLLATE "C" NOT NULL,
    coll      smallint NOT NULL,
    next_id   bigint NOT NULL,
    max_seq   bigint NOT NULL,
    PRIMARY KEY (user_name, coll)
);
CREATE TABLE items (
    user_name     text COLLATE "C" NOT NULL,
    coll          smallint NOT NULL,
    server_id     bigint NOT NULL,
    seq           bigint NOT NULL,
    content_type  text NOT NULL,
    data          bytea NOT NULL,
    origin_device text NOT NULL,
    deleted       boolean NOT NULL,
    PRIMARY KEY (user_name, coll, server_id)
);
CREATE TABLE sync_states (
    user_name      text COLLATE "C" NOT NULL,
    device_id      text COLLATE "C" NOT NULL,
    coll           smallint NOT NULL,
    client_anchor  text NOT NULL,
    server_anchor  text NOT NULL,
    seq_reached    bigint NOT NULL,
    client_uri     text NOT NULL,
    last_sync_type integer NOT NULL,
    PRIMARY KEY (user_name, device_id, coll)
);
CREATE TABLE mappings (
    user_name text COLLATE "C" NOT NULL,
    device_id text COLLATE "C" NOT NULL,
    coll      smallint NOT NULL,
    client_id text COLLATE "C" NOT NULL,
    server_id bigint NOT NULL,
    PRIMARY KEY (user_name, device_id, coll, client_id)
);
-- A delete drops the deleting device's mappings to the item.
CREATE INDEX mappings_by_server_id ON mappings (user_name, device_id, coll, server_id);
CREATE TABLE sessions (
    session_key bigint NOT NULL,
    state       bytea NOT NULL,
    last_msg_id bigint NOT NULL,
    last_reply  bytea NOT NULL,
    expires_at  bigint NOT NULL,
    PRIMARY KEY (session_key)
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
"#,
}];

/// Key of the advisory lock that serializes concurrent `migrate` runs.
const MIGRATION_LOCK: i64 = 0x7368_6172_6473_796e; // "shardsyn"

/// Why the PostgreSQL store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    /// The connection string does not parse.
    #[error("invalid PostgreSQL connection string: {0}")]
    BadUrl(String),
    /// PostgreSQL could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// The database's schema is older than this build.
    #[error(
        "the PostgreSQL schema is at version {found}, this build needs version {wanted}: run `{MIGRATE_HINT}`"
    )]
    Outdated {
        /// The version found (0: no schema at all).
        found: i32,
        /// The version this build needs.
        wanted: i32,
    },
    /// The database's schema is newer than this build.
    #[error(
        "the PostgreSQL schema is at version {found}, newer than this build's {wanted}: upgrade shardsync"
    )]
    TooNew {
        /// The version found.
        found: i32,
        /// The version this build needs.
        wanted: i32,
    },
    /// A statement failed.
    #[error("PostgreSQL: {0}")]
    Query(String),
}

impl From<PgStoreError> for StoreError {
    fn from(e: PgStoreError) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

/// Options of [`PostgresBackend::connect_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Idle connections kept in the pool (one per store thread is enough:
    /// the readers plus the writer).
    pub max_idle: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions { max_idle: 8, connect_timeout: Duration::from_secs(5) }
    }
}

/// A pooled connection with its prepared statements.
struct Conn {
    client: Client,
    stmts: HashMap<&'static str, Statement>,
}

impl Conn {
    fn stmt(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Fail> {
        let s = self.stmt(sql)?;
        Ok(self.client.query(&s, params)?)
    }

    fn query_opt(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Fail> {
        let s = self.stmt(sql)?;
        Ok(self.client.query_opt(&s, params)?)
    }

    fn execute(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Fail> {
        let s = self.stmt(sql)?;
        Ok(self.client.execute(&s, params)?)
    }
}

/// An operation's failure: from PostgreSQL, a value out of range, or a
/// batch whose data PostgreSQL cannot take.
#[derive(Debug)]
enum Fail {
    Pg(postgres::Error),
    Value(String),
    /// A value of the batch itself is out of range: [`StoreError::Rejected`].
    Rejected(String),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl Fail {
    fn conn_lost(&self) -> bool {
        matches!(self, Fail::Pg(e) if conn_lost(e))
    }

    fn into_store(self, what: &str) -> StoreError {
        match self {
            Fail::Pg(e) if refused_data(&e) => {
                StoreError::Rejected(format!("PostgreSQL {what}: {}", describe(&e)))
            }
            Fail::Pg(e) => StoreError::Backend(format!("PostgreSQL {what}: {}", describe(&e))),
            Fail::Value(m) => StoreError::Backend(format!("PostgreSQL {what}: {m}")),
            Fail::Rejected(m) => StoreError::Rejected(format!("PostgreSQL {what}: {m}")),
        }
    }
}

/// The error with its server-side message, if any.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Whether PostgreSQL refused the data sent (SQLSTATE class 22, data
/// exception: invalid text encoding or NUL, value out of range; class 23,
/// integrity constraint violation; class 54, a program limit such as an
/// index row too large for a very long id): the same statements with the
/// same data fail again, so it is the data's fault, not the connection's or
/// the server's, and the writer commits the group again in parts.
fn refused_data(e: &postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("22") || code.starts_with("23") || code.starts_with("54")
    })
}

/// The first text field of `op` that PostgreSQL `text` cannot store (a NUL
/// character), named; checked before anything is sent, so a bad batch is
/// refused alone (the writer commits the rest of its group without it).
fn nul_text(op: &WriteOp) -> Option<&'static str> {
    let fields: &[(&'static str, &str)] = match op {
        WriteOp::PutUser(u) => {
            &[("user name", &u.name), ("md5", &u.md5_b64), ("password hash", &u.password_hash)]
        }
        WriteOp::DeleteUser { name } => &[("user name", name)],
        WriteOp::PutDevice { user, device } => &[("user name", user), ("device id", &device.device_id)],
        WriteOp::PutItem { user, content_type, origin_device, map_client_id, .. } => &[
            ("user name", user),
            ("content type", content_type),
            ("device id", origin_device),
            ("client id", map_client_id.as_deref().unwrap_or_default()),
        ],
        WriteOp::DeleteItem { user, origin_device, client_id, .. } => &[
            ("user name", user),
            ("device id", origin_device),
            ("client id", client_id.as_deref().unwrap_or_default()),
        ],
        WriteOp::SetMapping { user, device_id, client_id, .. }
        | WriteOp::RemoveMapping { user, device_id, client_id, .. } => {
            &[("user name", user), ("device id", device_id), ("client id", client_id)]
        }
        WriteOp::ClearMappings { user, device_id, .. } | WriteOp::ForgetDevice { user, device_id } => {
            &[("user name", user), ("device id", device_id)]
        }
        WriteOp::PutSyncState { user, device_id, state, .. } => &[
            ("user name", user),
            ("device id", device_id),
            ("client anchor", &state.client_anchor),
            ("server anchor", &state.server_anchor),
            ("client URI", &state.client_uri),
        ],
        WriteOp::PutSession(_)
        | WriteOp::FinishSession(_)
        | WriteOp::DeleteSession { .. }
        | WriteOp::PurgeSessions { .. }
        | WriteOp::ExpectSession { .. } => &[],
    };
    fields.iter().find(|(_, v)| v.contains('\0')).map(|(name, _)| *name)
}

/// Whether the connection is gone: closed, an I/O error, or the server
/// ending the session (class 08 connection exception, 57P admin shutdown).
fn conn_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
        // Not an error answer from the server: the socket failed.
        None => e.code().is_none(),
    }
}

/// The PostgreSQL store backend.
pub struct PostgresBackend {
    config: postgres::Config,
    pool: Mutex<Vec<Conn>>,
    options: PostgresOptions,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("options", &self.options)
            .finish()
    }
}

fn to_i64(v: u64, what: &str) -> Result<i64, Fail> {
    i64::try_from(v).map_err(|_| Fail::Value(format!("{what} {v} is out of range")))
}

/// [`to_i64`] of a value a write batch carries: out of range is the batch's fault.
fn arg_i64(v: u64, what: &str) -> Result<i64, Fail> {
    i64::try_from(v).map_err(|_| Fail::Rejected(format!("{what} {v} is out of range")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, Fail> {
    u64::try_from(v).map_err(|_| Fail::Value(format!("stored {what} {v} is negative")))
}

/// The key of a collection.
fn coll(c: Collection) -> i16 {
    match c {
        Collection::Contacts => 0,
        Collection::Calendar => 1,
        Collection::Tasks => 2,
        Collection::Notes => 3,
    }
}

/// Session keys are any u64: stored as the i64 with the same bits.
fn session_key(key: u64) -> i64 {
    i64::from_ne_bytes(key.to_ne_bytes())
}

impl PostgresBackend {
    /// Connects to `url` (`postgres://user@host:port/db` or `host=… dbname=…`)
    /// and checks that the schema is current ([`SCHEMA_VERSION`]); this is
    /// what `serve` uses.
    pub fn open(url: &str) -> Result<PostgresBackend, PgStoreError> {
        let backend = PostgresBackend::connect(url)?;
        backend.check_schema()?;
        Ok(backend)
    }

    /// Connects to `url` without looking at the schema (for [`Self::migrate`]).
    pub fn connect(url: &str) -> Result<PostgresBackend, PgStoreError> {
        PostgresBackend::connect_with(url, PostgresOptions::default())
    }

    /// Like [`Self::connect`], with explicit options.
    pub fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresBackend, PgStoreError> {
        let mut config: postgres::Config = url.parse().map_err(|e| PgStoreError::BadUrl(format!("{e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("shardsync");
        }
        let backend = PostgresBackend { config, pool: Mutex::new(Vec::new()), options };
        // Fail early on a wrong address or login.
        let conn = backend.new_conn().map_err(|e| PgStoreError::Connect(e.to_string()))?;
        backend.put_back(conn);
        Ok(backend)
    }

    /// The schema version of the database (0: none).
    pub fn schema_version(&self) -> Result<i32, PgStoreError> {
        let mut conn = self.take().map_err(|e| PgStoreError::Connect(e.to_string()))?;
        let version = schema_version_on(&mut conn.client)?;
        self.put_back(conn);
        Ok(version)
    }

    /// Fails unless the schema is exactly [`SCHEMA_VERSION`].
    pub fn check_schema(&self) -> Result<(), PgStoreError> {
        let found = self.schema_version()?;
        match found.cmp(&SCHEMA_VERSION) {
            std::cmp::Ordering::Less => Err(PgStoreError::Outdated { found, wanted: SCHEMA_VERSION }),
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(PgStoreError::TooNew { found, wanted: SCHEMA_VERSION }),
        }
    }

    /// Applies every schema step the database lacks, each with its row in
    /// `schema_migrations`, all in one transaction; returns the versions
    /// applied (empty: already current). Concurrent runs wait for each other.
    pub fn migrate(&self) -> Result<Vec<i32>, PgStoreError> {
        let q = |e: postgres::Error| PgStoreError::Query(describe(&e));
        let mut conn = self.take().map_err(|e| PgStoreError::Connect(e.to_string()))?;
        let mut txn = conn.client.transaction().map_err(q)?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(q)?;
        txn.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .map_err(q)?;
        let found: i32 =
            txn.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[]).map_err(q)?.get(0);
        if found > SCHEMA_VERSION {
            return Err(PgStoreError::TooNew { found, wanted: SCHEMA_VERSION });
        }
        let mut applied = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| m.version > found) {
            txn.batch_execute(m.sql).map_err(q)?;
            txn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&m.version, &m.name],
            )
            .map_err(q)?;
            applied.push(m.version);
        }
        txn.commit().map_err(q)?;
        // Prepared statements may refer to replaced tables: start afresh.
        drop(conn);
        self.pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(applied)
    }

    fn new_conn(&self) -> Result<Conn, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        // Durable before acknowledged: never let a database or role default
        // of `off`/`local` weaken a commit.
        let current: String = client.query_one("SELECT current_setting('synchronous_commit')", &[])?.get(0);
        if current == "off" || current == "local" {
            client.batch_execute("SET synchronous_commit = on")?;
        }
        Ok(Conn { client, stmts: HashMap::new() })
    }

    fn take(&self) -> Result<Conn, postgres::Error> {
        let pooled = self.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match pooled {
            Some(conn) if !conn.client.is_closed() => Ok(conn),
            _ => self.new_conn(),
        }
    }

    fn put_back(&self, conn: Conn) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < self.options.max_idle && !conn.client.is_closed() {
            pool.push(conn);
        }
    }

    /// Runs `f` on a pooled connection, inside `begin … COMMIT` when `begin`
    /// is given. A connection found dead before anything was done on it (a
    /// pooled one after a PostgreSQL restart) is replaced once; an
    /// `idempotent` operation is also retried once on a fresh connection if
    /// the connection breaks under it. Any other failure rolls back.
    fn run<T>(
        &self,
        what: &str,
        begin: Option<&str>,
        idempotent: bool,
        mut f: impl FnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let connect_err = |e: postgres::Error| Fail::Pg(e).into_store(what);
        let mut conn = self.take().map_err(connect_err)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut started = false;
            let result: Result<T, Fail> = (|| {
                if let Some(begin) = begin {
                    conn.client.batch_execute(begin)?;
                }
                started = true;
                let value = f(&mut conn)?;
                if begin.is_some() {
                    conn.client.batch_execute("COMMIT")?;
                }
                Ok(value)
            })();
            match result {
                Ok(value) => {
                    self.put_back(conn);
                    return Ok(value);
                }
                Err(fail) if fail.conn_lost() => {
                    if attempt == 1 && (idempotent || !started) {
                        tracing::info!(what, "PostgreSQL connection lost; reconnecting");
                        conn = self.new_conn().map_err(connect_err)?;
                        continue;
                    }
                    let mut err = fail.into_store(what);
                    if started && begin.is_some() && !idempotent {
                        if let StoreError::Backend(m) = &mut err {
                            m.push_str(" (connection lost; the transaction was rolled back or, if COMMIT had been sent, may have committed)");
                        }
                    }
                    return Err(err);
                }
                Err(fail) => {
                    if begin.is_none() || conn.client.batch_execute("ROLLBACK").is_ok() {
                        self.put_back(conn);
                    }
                    return Err(fail.into_store(what));
                }
            }
        }
    }

    fn snapshot(
        &self,
        conn: &mut Conn,
        user: &str,
        device: &str,
        c: i16,
        scope: ItemScope,
    ) -> Result<DatastoreSnapshot, Fail> {
        let state = conn
            .query_opt(
                "SELECT client_anchor, server_anchor, seq_reached, client_uri, last_sync_type
                 FROM sync_states WHERE user_name = $1 AND device_id = $2 AND coll = $3",
                &[&user, &device, &c],
            )?
            .map(|r| -> Result<SyncState, Fail> {
                Ok(SyncState {
                    client_anchor: r.try_get(0)?,
                    server_anchor: r.try_get(1)?,
                    seq_reached: to_u64(r.try_get(2)?, "seq")?,
                    client_uri: r.try_get(3)?,
                    last_sync_type: u16::try_from(r.try_get::<_, i32>(4)?)
                        .map_err(|_| Fail::Value("stored sync type out of range".into()))?,
                })
            })
            .transpose()?;
        let mappings = conn
            .query(
                "SELECT client_id, server_id FROM mappings
                 WHERE user_name = $1 AND device_id = $2 AND coll = $3 ORDER BY client_id",
                &[&user, &device, &c],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, to_u64(r.try_get(1)?, "server id")?)))
            .collect::<Result<Vec<(String, u64)>, Fail>>()?;
        // Without a state the device has seen nothing: every tombstone counts.
        let reached = match &state {
            Some(s) => to_i64(s.seq_reached, "seq")?,
            None => 0,
        };
        let bare_up_to = scope.bare_up_to(state.as_ref());
        // Bare items leave their columns out of the answer (NULLs), so the
        // server neither reads their TOASTed data nor sends it.
        let items = conn
            .query(
                "SELECT server_id, seq, deleted,
                        CASE WHEN seq > $4 THEN content_type END,
                        CASE WHEN seq > $4 THEN data END,
                        CASE WHEN seq > $4 THEN origin_device END
                 FROM items
                 WHERE user_name = $1 AND coll = $2 AND (NOT deleted OR seq > $3) ORDER BY server_id",
                &[&user, &c, &reached, &to_i64(bare_up_to, "seq")?],
            )?
            .iter()
            .map(|r| {
                let server_id = to_u64(r.try_get(0)?, "server id")?;
                let seq = to_u64(r.try_get(1)?, "seq")?;
                let deleted = r.try_get(2)?;
                if seq <= bare_up_to {
                    return Ok(bare_item(server_id, seq, deleted));
                }
                Ok(ItemRecord {
                    server_id,
                    seq,
                    content_type: r.try_get(3)?,
                    data: r.try_get(4)?,
                    origin_device: r.try_get(5)?,
                    deleted,
                })
            })
            .collect::<Result<Vec<_>, Fail>>()?;
        let max_seq = match conn
            .query_opt("SELECT max_seq FROM counters WHERE user_name = $1 AND coll = $2", &[&user, &c])?
        {
            Some(r) => to_u64(r.try_get(0)?, "seq")?,
            None => 0,
        };
        Ok(DatastoreSnapshot { state, mappings, items, bare_up_to, max_seq })
    }
}

fn schema_version_on(client: &mut Client) -> Result<i32, PgStoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(|e| PgStoreError::Query(describe(&e)))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
        .map_err(|e| PgStoreError::Query(describe(&e)))?;
    Ok(row.get(0))
}

/// Every device of `user` with its sync states and mapping count.
fn list_devices(conn: &mut Conn, user: &str) -> Result<Vec<DeviceSummary>, Fail> {
    let rows = conn.query(
        "SELECT device_id, devinf_xml, nonce, first_seen, last_seen FROM devices
         WHERE user_name = $1 ORDER BY device_id",
        &[&user],
    )?;
    let mut out = rows
        .iter()
        .map(|r| Ok(DeviceSummary { device: read_device(r)?, ..Default::default() }))
        .collect::<Result<Vec<_>, Fail>>()?;
    let states = conn.query(
        "SELECT device_id, coll, client_anchor, server_anchor, seq_reached, client_uri, last_sync_type
         FROM sync_states WHERE user_name = $1 ORDER BY device_id, coll",
        &[&user],
    )?;
    let maps = conn.query(
        "SELECT device_id, count(*) FROM mappings WHERE user_name = $1 GROUP BY device_id",
        &[&user],
    )?;
    for d in &mut out {
        for r in states.iter().filter(|r| r.try_get::<_, &str>(0).is_ok_and(|id| id == d.device.device_id)) {
            let c: i16 = r.try_get(1)?;
            let collection = Collection::ALL
                .into_iter()
                .find(|x| coll(*x) == c)
                .ok_or_else(|| Fail::Value(format!("stored collection {c} is unknown")))?;
            let state = SyncState {
                client_anchor: r.try_get(2)?,
                server_anchor: r.try_get(3)?,
                seq_reached: to_u64(r.try_get(4)?, "seq")?,
                client_uri: r.try_get(5)?,
                last_sync_type: u16::try_from(r.try_get::<_, i32>(6)?)
                    .map_err(|_| Fail::Value("stored sync type out of range".into()))?,
            };
            d.states.push((collection, state));
        }
        for r in maps.iter().filter(|r| r.try_get::<_, &str>(0).is_ok_and(|id| id == d.device.device_id)) {
            d.mappings = to_u64(r.try_get(1)?, "mapping count")?;
        }
    }
    Ok(out)
}

fn read_user(r: &Row) -> Result<UserRecord, Fail> {
    Ok(UserRecord { name: r.try_get(0)?, md5_b64: r.try_get(1)?, password_hash: r.try_get(2)? })
}

fn read_device(r: &Row) -> Result<DeviceRecord, Fail> {
    Ok(DeviceRecord {
        device_id: r.try_get(0)?,
        devinf_xml: r.try_get(1)?,
        nonce: r.try_get(2)?,
        first_seen: to_u64(r.try_get(3)?, "time")?,
        last_seen: to_u64(r.try_get(4)?, "time")?,
    })
}

fn read_session(r: &Row) -> Result<SessionRecord, Fail> {
    let key: i64 = r.try_get(0)?;
    Ok(SessionRecord {
        key: u64::from_ne_bytes(key.to_ne_bytes()),
        state: r.try_get(1)?,
        last_msg_id: to_u64(r.try_get(2)?, "MsgID")?,
        last_reply: r.try_get(3)?,
        expires_at: to_u64(r.try_get(4)?, "expiry")?,
    })
}

impl Backend for PostgresBackend {
    fn read(&self, request: &ReadRequest) -> Result<ReadResponse, StoreError> {
        match request {
            ReadRequest::User { name } => self.run("read", None, true, |conn| {
                let row = conn.query_opt(
                    "SELECT user_name, md5_b64, password_hash FROM users WHERE user_name = $1",
                    &[name],
                )?;
                Ok(ReadResponse::User(row.as_ref().map(read_user).transpose()?))
            }),
            ReadRequest::Device { user, device_id } => self.run("read", None, true, |conn| {
                let row = conn.query_opt(
                    "SELECT device_id, devinf_xml, nonce, first_seen, last_seen FROM devices
                     WHERE user_name = $1 AND device_id = $2",
                    &[user, device_id],
                )?;
                Ok(ReadResponse::Device(row.as_ref().map(read_device).transpose()?))
            }),
            ReadRequest::Datastore { user, device_id, collection, scope } => {
                // One MVCC snapshot for state, mappings, items and max_seq.
                let c = coll(*collection);
                self.run("read", Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"), true, |conn| {
                    Ok(ReadResponse::Datastore(self.snapshot(conn, user, device_id, c, *scope)?))
                })
            }
            ReadRequest::Session { key } => self.run("read", None, true, |conn| {
                let row = conn.query_opt(
                    "SELECT session_key, state, last_msg_id, last_reply, expires_at FROM sessions
                     WHERE session_key = $1",
                    &[&session_key(*key)],
                )?;
                Ok(ReadResponse::Session(row.as_ref().map(read_session).transpose()?))
            }),
            ReadRequest::ListUsers => self.run("read", None, true, |conn| {
                let rows = conn.query("SELECT user_name FROM users ORDER BY user_name", &[])?;
                let names = rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>()?;
                Ok(ReadResponse::Users(names))
            }),
            ReadRequest::ListDevices { user } => {
                self.run("read", Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"), true, |conn| {
                    Ok(ReadResponse::Devices(list_devices(conn, user)?))
                })
            }
        }
    }

    fn commit(&self, batches: &[WriteBatch]) -> Result<Vec<CommitInfo>, StoreError> {
        if batches.iter().all(|b| b.ops.is_empty()) {
            return Ok(vec![CommitInfo::default(); batches.len()]);
        }
        // PostgreSQL would refuse the whole transaction (22021); refuse here, before sending.
        if let Some(field) = batches.iter().flat_map(|b| &b.ops).find_map(nul_text) {
            return Err(StoreError::Rejected(format!("a {field} contains a NUL character")));
        }
        // Not idempotent: once statements ran, a broken connection is reported, never replayed.
        self.run("commit", Some("BEGIN"), false, |conn| Writer::new(conn).commit(batches))
    }
}

/// Where an item's row stands, as far as this commit knows.
struct ItemRow<'a> {
    /// The row did not exist before this commit (its id was allocated here):
    /// it can go in by COPY, with no conflict check.
    fresh: bool,
    seq: i64,
    content_type: &'a str,
    data: &'a [u8],
    origin: &'a str,
    deleted: bool,
}

/// The allocation state of one (user, collection), locked by this commit.
struct Counter {
    next_id: i64,
    max_seq: i64,
    dirty: bool,
}

type MapKey<'a> = (&'a str, &'a str, i16, &'a str);
type MapSidKey<'a> = (&'a str, &'a str, i16, i64);
type DevColl<'a> = (&'a str, &'a str, i16);

/// A run of mapping changes of one kind: upserts only, or deletes only.
/// Within a run the order does not matter (upserts: the last per key wins;
/// deletes commute), so each run is a few bulk statements; runs are executed
/// in order.
#[derive(Default)]
struct MapRun<'a> {
    upsert: BTreeMap<MapKey<'a>, i64>,
    delete_one: BTreeSet<MapKey<'a>>,
    delete_to_sid: BTreeSet<MapSidKey<'a>>,
    delete_all: BTreeSet<DevColl<'a>>,
}

impl MapRun<'_> {
    fn has_deletes(&self) -> bool {
        !(self.delete_one.is_empty() && self.delete_to_sid.is_empty() && self.delete_all.is_empty())
    }
}

/// The final rows of what is pending, keyed (and so sorted, which gives two
/// concurrent commits the same lock order) by primary key.
#[derive(Default)]
struct Pending<'a> {
    users: BTreeMap<&'a str, &'a UserRecord>,
    devices: BTreeMap<(&'a str, &'a str), &'a DeviceRecord>,
    items: BTreeMap<(&'a str, i16, i64), ItemRow<'a>>,
    maps: Vec<MapRun<'a>>,
    states: BTreeMap<DevColl<'a>, &'a SyncState>,
    sessions: BTreeMap<i64, Option<&'a SessionRecord>>,
}

/// One group commit in progress.
struct Writer<'a, 'c> {
    conn: &'c mut Conn,
    counters: HashMap<(&'a str, i16), Counter>,
    /// Whether an item is a tombstone (or absent: `true`), as written so far.
    deleted: HashMap<(&'a str, i16, i64), bool>,
    p: Pending<'a>,
}

const LOCK_COUNTERS: &str = "INSERT INTO counters (user_name, coll, next_id, max_seq)
     SELECT u, c, 1, 0 FROM unnest($1::text[], $2::int2[]) AS k(u, c)
     ON CONFLICT (user_name, coll) DO UPDATE SET next_id = counters.next_id
     RETURNING user_name, coll, next_id, max_seq";

impl<'a, 'c> Writer<'a, 'c> {
    fn new(conn: &'c mut Conn) -> Writer<'a, 'c> {
        Writer { conn, counters: HashMap::new(), deleted: HashMap::new(), p: Pending::default() }
    }

    fn commit(mut self, batches: &'a [WriteBatch]) -> Result<Vec<CommitInfo>, Fail> {
        let accepted = self.check_sessions(batches)?;
        let live: Vec<&'a WriteBatch> =
            batches.iter().zip(&accepted).filter(|(_, ok)| **ok).map(|(b, _)| b).collect();
        self.prefetch(&live)?;
        let mut infos = Vec::with_capacity(batches.len());
        for (batch, ok) in batches.iter().zip(accepted) {
            let mut info = CommitInfo::default();
            if ok {
                for op in &batch.ops {
                    self.apply(op, &mut info)?;
                }
            } else {
                info.session_conflict = true;
            }
            infos.push(info);
        }
        self.flush()?;
        Ok(infos)
    }

    /// Evaluates every batch's `ExpectSession` against the stored sessions,
    /// locking those rows (sorted, before any other lock of the group, so
    /// two nodes continuing one session serialize here and the second sees
    /// the first's MsgID).
    fn check_sessions(&mut self, batches: &'a [WriteBatch]) -> Result<Vec<bool>, Fail> {
        let expected: Vec<Option<(i64, i64)>> = batches
            .iter()
            .map(|b| b.expected_session().map(|(k, m)| Ok::<_, Fail>((session_key(k), arg_i64(m, "MsgID")?))))
            .map(Option::transpose)
            .collect::<Result<_, _>>()?;
        let keys: BTreeSet<i64> = expected.iter().flatten().map(|e| e.0).collect();
        if keys.is_empty() {
            return Ok(vec![true; batches.len()]);
        }
        let keys: Vec<i64> = keys.into_iter().collect();
        let rows = self.conn.query(
            "SELECT session_key, last_msg_id FROM sessions WHERE session_key = ANY($1::int8[])
             ORDER BY session_key FOR UPDATE",
            &[&keys],
        )?;
        let mut stored = HashMap::new();
        for r in &rows {
            stored.insert(r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?);
        }
        // Within the group, a batch that passes moves the session on: a
        // second batch expecting the old MsgID must fail like it would after.
        let mut accepted = Vec::with_capacity(batches.len());
        for (batch, exp) in batches.iter().zip(&expected) {
            let ok = match exp {
                None => true,
                // 0: the batch starts a session and expects none under its key.
                Some((key, last)) => stored.get(key).copied().unwrap_or(0) == *last,
            };
            if ok {
                for op in &batch.ops {
                    if let WriteOp::PutSession(s) | WriteOp::FinishSession(s) = op {
                        stored.insert(session_key(s.key), arg_i64(s.last_msg_id, "MsgID")?);
                    }
                }
            }
            accepted.push(ok);
        }
        Ok(accepted)
    }

    /// Locks every counter the group needs (sorted, in one statement) and
    /// loads the liveness of every item it deletes.
    fn prefetch(&mut self, batches: &[&'a WriteBatch]) -> Result<(), Fail> {
        let mut colls = BTreeSet::new();
        let mut deletes = BTreeSet::new();
        for op in batches.iter().flat_map(|b| &b.ops) {
            match op {
                WriteOp::PutItem { user, collection, .. } => {
                    colls.insert((user.as_str(), coll(*collection)));
                }
                WriteOp::DeleteItem { user, collection, server_id, .. } => {
                    colls.insert((user.as_str(), coll(*collection)));
                    if let Ok(sid) = i64::try_from(*server_id) {
                        deletes.insert((user.as_str(), coll(*collection), sid));
                    }
                }
                _ => {}
            }
        }
        if !colls.is_empty() {
            let keys: Vec<(&'a str, i16)> = colls.into_iter().collect();
            self.lock_counters(&keys)?;
        }
        if !deletes.is_empty() {
            let us: Vec<&str> = deletes.iter().map(|k| k.0).collect();
            let cs: Vec<i16> = deletes.iter().map(|k| k.1).collect();
            let ss: Vec<i64> = deletes.iter().map(|k| k.2).collect();
            let rows = self.conn.query(
                "SELECT i.user_name, i.coll, i.server_id, i.deleted
                 FROM unnest($1::text[], $2::int2[], $3::int8[]) AS k(u, c, s)
                 JOIN items i ON i.user_name = k.u AND i.coll = k.c AND i.server_id = k.s",
                &[&us, &cs, &ss],
            )?;
            let mut found = HashMap::new();
            for r in &rows {
                found.insert(
                    (r.try_get::<_, String>(0)?, r.try_get::<_, i16>(1)?, r.try_get::<_, i64>(2)?),
                    r.try_get::<_, bool>(3)?,
                );
            }
            for key in deletes {
                let d = found.get(&(key.0.to_owned(), key.1, key.2)).copied().unwrap_or(true);
                self.deleted.insert(key, d);
            }
        }
        Ok(())
    }

    fn lock_counters(&mut self, keys: &[(&'a str, i16)]) -> Result<(), Fail> {
        let us: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let cs: Vec<i16> = keys.iter().map(|k| k.1).collect();
        let rows = self.conn.query(LOCK_COUNTERS, &[&us, &cs])?;
        let mut got = HashMap::new();
        for r in &rows {
            got.insert(
                (r.try_get::<_, String>(0)?, r.try_get::<_, i16>(1)?),
                (r.try_get::<_, i64>(2)?, r.try_get::<_, i64>(3)?),
            );
        }
        for &(u, c) in keys {
            let (next_id, max_seq) = got
                .get(&(u.to_owned(), c))
                .copied()
                .ok_or_else(|| Fail::Value(format!("counter of {u}/{c} not returned")))?;
            self.counters.insert((u, c), Counter { next_id, max_seq, dirty: false });
        }
        Ok(())
    }

    fn counter(&mut self, user: &'a str, c: i16) -> Result<&mut Counter, Fail> {
        if !self.counters.contains_key(&(user, c)) {
            // Only after a DeleteUser in the same group: not prefetched.
            self.lock_counters(&[(user, c)])?;
        }
        self.counters.get_mut(&(user, c)).ok_or_else(|| Fail::Value("counter missing".into()))
    }

    fn is_deleted(&mut self, key: (&'a str, i16, i64)) -> Result<bool, Fail> {
        if let Some(row) = self.p.items.get(&key) {
            return Ok(row.deleted);
        }
        if let Some(d) = self.deleted.get(&key) {
            return Ok(*d);
        }
        let row = self.conn.query_opt(
            "SELECT deleted FROM items WHERE user_name = $1 AND coll = $2 AND server_id = $3",
            &[&key.0, &key.1, &key.2],
        )?;
        let d = match row {
            Some(r) => r.try_get(0)?,
            None => true,
        };
        self.deleted.insert(key, d);
        Ok(d)
    }

    /// The open mapping run for an upsert (`upsert`) or a delete.
    fn map_run(&mut self, upsert: bool) -> &mut MapRun<'a> {
        let fits =
            self.p.maps.last().is_some_and(|r| if upsert { !r.has_deletes() } else { r.upsert.is_empty() });
        if !fits {
            self.p.maps.push(MapRun::default());
        }
        let last = self.p.maps.len() - 1;
        &mut self.p.maps[last]
    }

    fn apply(&mut self, op: &'a WriteOp, info: &mut CommitInfo) -> Result<(), Fail> {
        match op {
            WriteOp::PutUser(u) => {
                self.p.users.insert(&u.name, u);
            }
            WriteOp::DeleteUser { name } => self.delete_user(name)?,
            WriteOp::PutDevice { user, device } => {
                self.p.devices.insert((user.as_str(), device.device_id.as_str()), device);
            }
            WriteOp::PutItem {
                user,
                collection,
                server_id,
                content_type,
                data,
                origin_device,
                map_client_id,
            } => {
                let c = coll(*collection);
                let explicit = server_id.map(|id| arg_i64(id, "server id")).transpose()?;
                let counter = self.counter(user, c)?;
                let sid = match explicit {
                    Some(id) => {
                        // Keep allocation above any id the engine chose itself.
                        counter.next_id = counter.next_id.max(id.saturating_add(1));
                        id
                    }
                    None => {
                        let id = counter.next_id;
                        counter.next_id += 1;
                        info.new_server_ids.push(to_u64(id, "server id")?);
                        id
                    }
                };
                counter.max_seq += 1;
                counter.dirty = true;
                let seq = counter.max_seq;
                let key = (user.as_str(), c, sid);
                // An allocated id is above every stored one: the row cannot exist yet.
                let fresh = explicit.is_none() || self.p.items.get(&key).is_some_and(|r| r.fresh);
                let row = ItemRow { fresh, seq, content_type, data, origin: origin_device, deleted: false };
                self.p.items.insert(key, row);
                if let Some(client_id) = map_client_id {
                    self.map_run(true)
                        .upsert
                        .insert((user.as_str(), origin_device.as_str(), c, client_id.as_str()), sid);
                }
            }
            WriteOp::DeleteItem { user, collection, server_id, origin_device, .. } => {
                let c = coll(*collection);
                let sid = arg_i64(*server_id, "server id")?;
                // Deleting a missing item or a tombstone changes nothing but mappings.
                if !self.is_deleted((user.as_str(), c, sid))? {
                    let counter = self.counter(user, c)?;
                    counter.max_seq += 1;
                    counter.dirty = true;
                    let seq = counter.max_seq;
                    let key = (user.as_str(), c, sid);
                    let fresh = self.p.items.get(&key).is_some_and(|r| r.fresh);
                    let row = ItemRow {
                        fresh,
                        seq,
                        content_type: "",
                        data: &[],
                        origin: origin_device,
                        deleted: true,
                    };
                    self.p.items.insert(key, row);
                }
                // Other devices keep their mapping until the delete reaches them.
                self.map_run(false).delete_to_sid.insert((user.as_str(), origin_device.as_str(), c, sid));
            }
            WriteOp::SetMapping { user, device_id, collection, client_id, server_id } => {
                let sid = arg_i64(*server_id, "server id")?;
                self.map_run(true)
                    .upsert
                    .insert((user.as_str(), device_id.as_str(), coll(*collection), client_id.as_str()), sid);
            }
            WriteOp::RemoveMapping { user, device_id, collection, client_id } => {
                self.map_run(false).delete_one.insert((
                    user.as_str(),
                    device_id.as_str(),
                    coll(*collection),
                    client_id.as_str(),
                ));
            }
            WriteOp::ClearMappings { user, device_id, collection } => {
                self.map_run(false).delete_all.insert((user.as_str(), device_id.as_str(), coll(*collection)));
            }
            WriteOp::PutSyncState { user, device_id, collection, state } => {
                self.p.states.insert((user.as_str(), device_id.as_str(), coll(*collection)), state);
            }
            // One table: its rows are indexed by key, the finished ones go by expiry.
            WriteOp::PutSession(s) | WriteOp::FinishSession(s) => {
                self.p.sessions.insert(session_key(s.key), Some(s));
            }
            WriteOp::DeleteSession { key } => {
                self.p.sessions.insert(session_key(*key), None);
            }
            WriteOp::PurgeSessions { expired_before } => {
                // Pending session rows of this group are live ones (their
                // expiry is in the future), so deleting right away is safe.
                let before = arg_i64(*expired_before, "expiry")?;
                self.conn.execute("DELETE FROM sessions WHERE expires_at < $1", &[&before])?;
            }
            // Checked by `check_sessions` before anything of the group is applied.
            WriteOp::ExpectSession { .. } => {}
            WriteOp::ForgetDevice { user, device_id } => self.forget_device(user, device_id)?,
        }
        Ok(())
    }

    fn forget_device(&mut self, user: &'a str, device: &'a str) -> Result<(), Fail> {
        // Earlier ops of the group may have written this device's rows: write them first.
        self.flush()?;
        for sql in [
            "DELETE FROM devices WHERE user_name = $1 AND device_id = $2",
            "DELETE FROM sync_states WHERE user_name = $1 AND device_id = $2",
            "DELETE FROM mappings WHERE user_name = $1 AND device_id = $2",
        ] {
            self.conn.execute(sql, &[&user, &device])?;
        }
        Ok(())
    }

    fn delete_user(&mut self, name: &'a str) -> Result<(), Fail> {
        self.flush()?;
        for sql in [
            "DELETE FROM users WHERE user_name = $1",
            "DELETE FROM devices WHERE user_name = $1",
            "DELETE FROM items WHERE user_name = $1",
            "DELETE FROM counters WHERE user_name = $1",
            "DELETE FROM sync_states WHERE user_name = $1",
            "DELETE FROM mappings WHERE user_name = $1",
        ] {
            self.conn.execute(sql, &[&name])?;
        }
        // A re-created user starts from scratch.
        self.counters.retain(|(u, _), _| *u != name);
        self.deleted.retain(|(u, _, _), _| *u != name);
        Ok(())
    }

    /// Writes everything pending, one bulk statement per table and mapping run.
    fn flush(&mut self) -> Result<(), Fail> {
        let p = std::mem::take(&mut self.p);
        if !p.users.is_empty() {
            let names: Vec<&str> = p.users.keys().copied().collect();
            let md5: Vec<&str> = p.users.values().map(|u| u.md5_b64.as_str()).collect();
            let hash: Vec<&str> = p.users.values().map(|u| u.password_hash.as_str()).collect();
            self.conn.execute(
                "INSERT INTO users (user_name, md5_b64, password_hash)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (user_name) DO UPDATE
                 SET md5_b64 = EXCLUDED.md5_b64, password_hash = EXCLUDED.password_hash",
                &[&names, &md5, &hash],
            )?;
        }
        if !p.devices.is_empty() {
            let us: Vec<&str> = p.devices.keys().map(|k| k.0).collect();
            let ds: Vec<&str> = p.devices.keys().map(|k| k.1).collect();
            let infs: Vec<&[u8]> = p.devices.values().map(|d| d.devinf_xml.as_slice()).collect();
            let nonces: Vec<&[u8]> = p.devices.values().map(|d| d.nonce.as_slice()).collect();
            let first =
                p.devices.values().map(|d| arg_i64(d.first_seen, "time")).collect::<Result<Vec<_>, _>>()?;
            let last =
                p.devices.values().map(|d| arg_i64(d.last_seen, "time")).collect::<Result<Vec<_>, _>>()?;
            self.conn.execute(
                "INSERT INTO devices (user_name, device_id, devinf_xml, nonce, first_seen, last_seen)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::int8[], $6::int8[])
                 ON CONFLICT (user_name, device_id) DO UPDATE
                 SET devinf_xml = EXCLUDED.devinf_xml, nonce = EXCLUDED.nonce,
                     first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen",
                &[&us, &ds, &infs, &nonces, &first, &last],
            )?;
        }
        for (&key, row) in &p.items {
            self.deleted.insert(key, row.deleted);
        }
        if p.items.values().any(|r| r.fresh) {
            // New rows: binary COPY, the cheapest way in (no conflict checks).
            let sink = self.conn.client.copy_in(
                "COPY items (user_name, coll, server_id, seq, content_type, data, origin_device, deleted) \
                 FROM STDIN (FORMAT binary)",
            )?;
            let types = [
                Type::TEXT,
                Type::INT2,
                Type::INT8,
                Type::INT8,
                Type::TEXT,
                Type::BYTEA,
                Type::TEXT,
                Type::BOOL,
            ];
            let mut w = BinaryCopyInWriter::new(sink, &types);
            for ((u, c, sid), row) in p.items.iter().filter(|(_, r)| r.fresh) {
                w.write(&[u, c, sid, &row.seq, &row.content_type, &row.data, &row.origin, &row.deleted])?;
            }
            w.finish()?;
        }
        let old = p.items.iter().filter(|(_, r)| !r.fresh).count();
        if old > 0 {
            let (mut us, mut cs, mut ids, mut seqs) = (
                Vec::with_capacity(old),
                Vec::with_capacity(old),
                Vec::with_capacity(old),
                Vec::with_capacity(old),
            );
            let (mut types, mut datas, mut origins, mut dels) = (
                Vec::with_capacity(old),
                Vec::with_capacity(old),
                Vec::with_capacity(old),
                Vec::with_capacity(old),
            );
            for (&(u, c, sid), row) in p.items.iter().filter(|(_, r)| !r.fresh) {
                us.push(u);
                cs.push(c);
                ids.push(sid);
                seqs.push(row.seq);
                types.push(row.content_type);
                datas.push(row.data);
                origins.push(row.origin);
                dels.push(row.deleted);
            }
            self.conn.execute(
                "INSERT INTO items (user_name, coll, server_id, seq, content_type, data, origin_device, deleted)
                 SELECT * FROM unnest($1::text[], $2::int2[], $3::int8[], $4::int8[], $5::text[],
                                      $6::bytea[], $7::text[], $8::bool[])
                 ON CONFLICT (user_name, coll, server_id) DO UPDATE
                 SET seq = EXCLUDED.seq, content_type = EXCLUDED.content_type, data = EXCLUDED.data,
                     origin_device = EXCLUDED.origin_device, deleted = EXCLUDED.deleted",
                &[&us, &cs, &ids, &seqs, &types, &datas, &origins, &dels],
            )?;
        }
        for run in &p.maps {
            self.write_map_run(run)?;
        }
        if !p.states.is_empty() {
            let us: Vec<&str> = p.states.keys().map(|k| k.0).collect();
            let ds: Vec<&str> = p.states.keys().map(|k| k.1).collect();
            let cs: Vec<i16> = p.states.keys().map(|k| k.2).collect();
            let ca: Vec<&str> = p.states.values().map(|s| s.client_anchor.as_str()).collect();
            let sa: Vec<&str> = p.states.values().map(|s| s.server_anchor.as_str()).collect();
            let reached =
                p.states.values().map(|s| arg_i64(s.seq_reached, "seq")).collect::<Result<Vec<_>, _>>()?;
            let uris: Vec<&str> = p.states.values().map(|s| s.client_uri.as_str()).collect();
            let types: Vec<i32> = p.states.values().map(|s| i32::from(s.last_sync_type)).collect();
            self.conn.execute(
                "INSERT INTO sync_states (user_name, device_id, coll, client_anchor, server_anchor,
                                          seq_reached, client_uri, last_sync_type)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[],
                                      $6::int8[], $7::text[], $8::int4[])
                 ON CONFLICT (user_name, device_id, coll) DO UPDATE
                 SET client_anchor = EXCLUDED.client_anchor, server_anchor = EXCLUDED.server_anchor,
                     seq_reached = EXCLUDED.seq_reached, client_uri = EXCLUDED.client_uri,
                     last_sync_type = EXCLUDED.last_sync_type",
                &[&us, &ds, &cs, &ca, &sa, &reached, &uris, &types],
            )?;
        }
        if !p.sessions.is_empty() {
            let gone: Vec<i64> = p.sessions.iter().filter(|(_, s)| s.is_none()).map(|(k, _)| *k).collect();
            if !gone.is_empty() {
                self.conn.execute("DELETE FROM sessions WHERE session_key = ANY($1::int8[])", &[&gone])?;
            }
            let live: Vec<&SessionRecord> = p.sessions.values().filter_map(|s| *s).collect();
            if !live.is_empty() {
                let keys: Vec<i64> = live.iter().map(|s| session_key(s.key)).collect();
                let states: Vec<&[u8]> = live.iter().map(|s| s.state.as_slice()).collect();
                let msg =
                    live.iter().map(|s| arg_i64(s.last_msg_id, "MsgID")).collect::<Result<Vec<_>, _>>()?;
                let replies: Vec<&[u8]> = live.iter().map(|s| s.last_reply.as_slice()).collect();
                let exp =
                    live.iter().map(|s| arg_i64(s.expires_at, "expiry")).collect::<Result<Vec<_>, _>>()?;
                self.conn.execute(
                    "INSERT INTO sessions (session_key, state, last_msg_id, last_reply, expires_at)
                     SELECT * FROM unnest($1::int8[], $2::bytea[], $3::int8[], $4::bytea[], $5::int8[])
                     ON CONFLICT (session_key) DO UPDATE
                     SET state = EXCLUDED.state, last_msg_id = EXCLUDED.last_msg_id,
                         last_reply = EXCLUDED.last_reply, expires_at = EXCLUDED.expires_at",
                    &[&keys, &states, &msg, &replies, &exp],
                )?;
            }
        }
        // Rows already locked by this transaction: their order does not matter.
        let (mut us, mut cs, mut next, mut max) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (&(u, c), counter) in self.counters.iter_mut().filter(|(_, c)| c.dirty) {
            counter.dirty = false;
            us.push(u);
            cs.push(c);
            next.push(counter.next_id);
            max.push(counter.max_seq);
        }
        if !us.is_empty() {
            self.conn.execute(
                "UPDATE counters AS t SET next_id = v.n, max_seq = v.m
                 FROM unnest($1::text[], $2::int2[], $3::int8[], $4::int8[]) AS v(u, c, n, m)
                 WHERE t.user_name = v.u AND t.coll = v.c",
                &[&us, &cs, &next, &max],
            )?;
        }
        Ok(())
    }

    fn write_map_run(&mut self, run: &MapRun<'_>) -> Result<(), Fail> {
        if !run.upsert.is_empty() {
            let m = &run.upsert;
            let us: Vec<&str> = m.keys().map(|k| k.0).collect();
            let ds: Vec<&str> = m.keys().map(|k| k.1).collect();
            let cs: Vec<i16> = m.keys().map(|k| k.2).collect();
            let ls: Vec<&str> = m.keys().map(|k| k.3).collect();
            let ss: Vec<i64> = m.values().copied().collect();
            self.conn.execute(
                "INSERT INTO mappings (user_name, device_id, coll, client_id, server_id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::int8[])
                 ON CONFLICT (user_name, device_id, coll, client_id) DO UPDATE
                 SET server_id = EXCLUDED.server_id",
                &[&us, &ds, &cs, &ls, &ss],
            )?;
        }
        if !run.delete_one.is_empty() {
            let one = &run.delete_one;
            let us: Vec<&str> = one.iter().map(|k| k.0).collect();
            let ds: Vec<&str> = one.iter().map(|k| k.1).collect();
            let cs: Vec<i16> = one.iter().map(|k| k.2).collect();
            let ls: Vec<&str> = one.iter().map(|k| k.3).collect();
            self.conn.execute(
                "DELETE FROM mappings m
                 USING unnest($1::text[], $2::text[], $3::int2[], $4::text[]) AS k(u, d, c, l)
                 WHERE m.user_name = k.u AND m.device_id = k.d AND m.coll = k.c AND m.client_id = k.l",
                &[&us, &ds, &cs, &ls],
            )?;
        }
        if !run.delete_to_sid.is_empty() {
            let to_sid = &run.delete_to_sid;
            let us: Vec<&str> = to_sid.iter().map(|k| k.0).collect();
            let ds: Vec<&str> = to_sid.iter().map(|k| k.1).collect();
            let cs: Vec<i16> = to_sid.iter().map(|k| k.2).collect();
            let ss: Vec<i64> = to_sid.iter().map(|k| k.3).collect();
            self.conn.execute(
                "DELETE FROM mappings m
                 USING unnest($1::text[], $2::text[], $3::int2[], $4::int8[]) AS k(u, d, c, s)
                 WHERE m.user_name = k.u AND m.device_id = k.d AND m.coll = k.c AND m.server_id = k.s",
                &[&us, &ds, &cs, &ss],
            )?;
        }
        if !run.delete_all.is_empty() {
            let all = &run.delete_all;
            let us: Vec<&str> = all.iter().map(|k| k.0).collect();
            let ds: Vec<&str> = all.iter().map(|k| k.1).collect();
            let cs: Vec<i16> = all.iter().map(|k| k.2).collect();
            self.conn.execute(
                "DELETE FROM mappings m
                 USING unnest($1::text[], $2::text[], $3::int2[]) AS k(u, d, c)
                 WHERE m.user_name = k.u AND m.device_id = k.d AND m.coll = k.c",
                &[&us, &ds, &cs],
            )?;
        }
        Ok(())
    }
}
