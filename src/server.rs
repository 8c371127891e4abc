//! The server's public face: start it with a per-shard service factory.
//!
//! ```text
//! shardsync::server::run(config, |ctx: ShardContext| MyService::new(ctx))
//! ```
//!
//! The factory runs once inside each shard thread and builds that shard's
//! [`SyncService`]; it must be `Send + Sync` (it is shared by the shard
//! threads), the service it returns need not be. Everything glommio-specific
//! lives in [`crate::shard`]; this module also holds the codec dispatch the
//! shards use ([`decode`], [`route_key`]) so it can be tested without a runtime.

use std::rc::Rc;
use std::sync::Arc;

use crate::config::Config;
use crate::limits::Limits;
use crate::metrics::{NodeMetrics, ShardMetrics};
use crate::model::{Encoding, SyncMl};
use crate::routing;
use crate::service::{ServiceError, SyncRequest, SyncResponse, SyncService};
use crate::sessions::{ActiveSessions, SessionDirectory, SessionInbox};

pub use crate::shard::{check_memlock, start, start_with, ServerError, ServerHandle};

/// What a shard's service factory learns about the shard it builds for.
#[derive(Debug, Clone)]
pub struct ShardContext {
    /// This shard's index, `0..shards`.
    pub shard: usize,
    /// The number of shards of this node.
    pub shards: usize,
    /// The whole server configuration (data dir, public URL, …).
    pub config: Arc<Config>,
    /// This shard's metrics (written only by this shard).
    pub metrics: Arc<ShardMetrics>,
    /// This shard's table of active sessions (with the node's limits).
    pub sessions: Rc<ActiveSessions>,
}

/// What a node's shards share for operations: metrics, limits and the
/// inboxes of the admin session queries (one per shard).
#[derive(Debug)]
pub struct NodeOps {
    /// The node's metrics (served at `GET /metrics`).
    pub metrics: Arc<NodeMetrics>,
    /// The node's abuse limits.
    pub limits: Arc<Limits>,
    /// One inbox per shard, in shard order.
    pub inboxes: Vec<SessionInbox>,
}

impl NodeOps {
    /// Operations state for `config` with `metrics` (which may carry sources,
    /// e.g. the store); also returns the directory the admin socket asks.
    pub fn new(config: &Config, metrics: NodeMetrics) -> (NodeOps, SessionDirectory) {
        let (directory, inboxes) = crate::sessions::directory(config.shards);
        let ops =
            NodeOps { metrics: Arc::new(metrics), limits: Arc::new(Limits::new(config.abuse)), inboxes };
        (ops, directory)
    }
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully:
/// stops accepting, lets in-flight requests finish within the grace period
/// and returns `Ok(())`.
pub fn run<S, F>(config: Config, factory: F) -> Result<(), ServerError>
where
    S: SyncService,
    F: Fn(ShardContext) -> S + Send + Sync + 'static,
{
    let (ops, _) = NodeOps::new(&config, NodeMetrics::new(config.shards));
    run_with(config, ops, factory)
}

/// Like [`run`], with the node's operations state built by the caller.
pub fn run_with<S, F>(config: Config, ops: NodeOps, factory: F) -> Result<(), ServerError>
where
    S: SyncService,
    F: Fn(ShardContext) -> S + Send + Sync + 'static,
{
    let handle = crate::shard::start_with(config, ops, factory)?;
    tracing::info!(
        listen = %handle.listen_addr(),
        shards = ?handle.shard_addrs(),
        "shardsync serving"
    );
    let signals = StopOnSignal::install(handle.stop_flag())?;
    let result = handle.join();
    signals.finish();
    result
}

/// A thread that sets a stop flag on SIGINT or SIGTERM; no shard ever blocks on it.
pub(crate) struct StopOnSignal {
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

impl StopOnSignal {
    /// Installs the handlers and starts the waiting thread.
    pub(crate) fn install(stop: Arc<std::sync::atomic::AtomicBool>) -> Result<StopOnSignal, ServerError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .map_err(|e| ServerError::Signals(e.to_string()))?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("shardsync-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    tracing::info!(
                        signal = sig,
                        "shutting down: no new connections, finishing in-flight requests"
                    );
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            })
            .map_err(|e| ServerError::Signals(e.to_string()))?;
        Ok(StopOnSignal { handle, thread })
    }

    /// Stops the waiting thread (after the server stopped for another reason too).
    pub(crate) fn finish(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

/// Why a SyncML body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a valid SyncML message in its encoding, or an
    /// identifier in it is refused (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The body went over a decode cap (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// This build has no decoder for the encoding.
    #[error("{0} decoder not built in")]
    NotBuiltIn(&'static str),
}

/// Decodes a SyncML body in `encoding` under the default
/// [`DecodeLimits`](crate::codec::DecodeLimits); the message borrows from `body`.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<SyncMl<'_>, DecodeError> {
    crate::codec::decode(encoding, body).map_err(|e| match e.cap() {
        Some(_) => DecodeError::TooLarge(e.to_string()),
        None => DecodeError::Invalid(e.to_string()),
    })
}

/// The routing key of a request without a `?s=` token: the session key of
/// the SyncHdr's (Source/LocURI, SessionID). `None` when the header cannot be
/// decoded (the request is then served where it arrived).
pub fn route_key(encoding: Encoding, body: &[u8]) -> Option<u64> {
    header_key(&decode(encoding, body).ok()?)
}

/// The session key of a decoded message's SyncHdr (device id = Source/LocURI,
/// SessionID); `None` without a device id.
pub fn header_key(msg: &SyncMl<'_>) -> Option<u64> {
    if msg.hdr.source.loc_uri.is_empty() {
        return None;
    }
    Some(routing::session_key(&msg.hdr.source.loc_uri, &msg.hdr.session_id))
}

/// The routing key of a request: its valid `?s=` token, else [`route_key`].
pub fn request_key(target: &str, encoding: Encoding, body: &[u8]) -> Option<u64> {
    routing::token_from_target(target).and_then(routing::parse_token).or_else(|| route_key(encoding, body))
}

/// The service `serve` uses while no sync engine is built in: every SyncML
/// request is answered 503 "sync engine not built in" (never placeholder SyncML).
#[derive(Debug, Clone, Copy, Default)]
pub struct NotBuiltIn;

impl SyncService for NotBuiltIn {
    async fn handle<'a>(&'a self, _request: SyncRequest<'a>) -> Result<SyncResponse, ServiceError> {
        Err(ServiceError::Unavailable("sync engine not built in".into()))
    }
}

/// A service that answers every request with the same bytes (benchmarks, tests).
#[derive(Debug, Clone)]
pub struct FixedReply {
    body: Arc<Vec<u8>>,
}

impl FixedReply {
    /// Answers with `body`.
    pub fn new(body: Arc<Vec<u8>>) -> FixedReply {
        FixedReply { body }
    }
}

impl SyncService for FixedReply {
    async fn handle<'a>(&'a self, _request: SyncRequest<'a>) -> Result<SyncResponse, ServiceError> {
        Ok(SyncResponse { body: self.body.as_ref().clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_key_from_a_captured_message() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/captures/xml/02-two-way-add-replace-delete/0003-c2s.xml"
        );
        let body = std::fs::read(path).unwrap();
        let want = routing::session_key("sc-harness-capture-xml", "10");
        assert_eq!(route_key(Encoding::Xml, &body), Some(want));
        assert_eq!(request_key("/sync", Encoding::Xml, &body), Some(want));
        // A valid token wins; a malformed one falls back to the header.
        assert_eq!(request_key("/sync?s=00000000000000ff", Encoding::Xml, &body), Some(255));
        assert_eq!(request_key("/sync?s=zz", Encoding::Xml, &body), Some(want));
        assert_eq!(route_key(Encoding::Xml, b"garbage"), None);
    }
}
