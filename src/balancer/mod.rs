//! The balancer: `shardsync balance` (DESIGN §6).
//!
//! ```text
//!  clients ──▶ worker 0..T (epoll, SO_REUSEPORT) ──pooled keep-alive──▶ shard ports of nodes
//!                 ▲ Arc<View> (crossbeam channel)        │ Report (passive failures, admin)
//!                 └──────────── control thread ◀─────────┘  (/shards discovery, /health checks)
//! ```
//!
//! - [`key`]: the routing key of a request (URL token, else a SyncHdr scan).
//! - [`select`]: consistent hashing (ring, Maglev) and bounded load; no health in it.
//! - [`view`]: the immutable snapshot (members, health, weights, draining, selections).
//! - `health` (the control thread) and `proxy` (the workers), `stream`
//!   (the workers' sockets).
//!
//! The workers do no disk I/O, so unlike `serve`'s shards they do not run
//! on glommio (io_uring) but on an epoll reactor: one tokio current-thread
//! runtime per worker thread, connections as tasks on its `LocalSet`. Each
//! socket is registered with epoll once, edge-triggered; a wait costs one
//! share of an `epoll_wait` and no syscall of its own, and wakeups stay on
//! the thread (no IPI, no eventfd). No locked memory (`ulimit -l`) is needed.
//!
//! Members are shards (`host:port` of each shard's own port, learned from
//! each node's `GET /shards`), so a forwarded request lands on the shard
//! that owns its session with no hand-over inside the node.
//!
//! # Admin
//!
//! Who may do what on the balancer's two listeners:
//!
//! - The public listener (`listen`) serves `GET /health` and forwards
//!   `POST`s; `GET /metrics` only with `public_metrics`. Everything else,
//!   `/status`, `/route` and `/admin/*` included, is 404 there.
//! - The admin listener (`admin_listen`, loopback by default, TLS when the
//!   balancer has a certificate) serves `GET /health`, `/status`, `/route`,
//!   `/metrics` and `POST /admin/*`. With a token configured
//!   (`admin_token_file`), each of them but `/health` needs
//!   `Authorization: Bearer <token>` (else 401). Without one, the reads are
//!   open to local clients and `/admin/*` answers 403: changing the routing
//!   always takes the token. A non-loopback admin address without a token
//!   is refused at start.

pub mod config;
mod health;
pub mod key;
mod proxy;
pub mod select;
mod stream;
pub mod view;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

pub use config::{BalanceArgs, BalanceConfig};

/// Why the balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The listen address is taken or not bindable.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A worker thread or its reactor (epoll) could not be created.
    #[error("cannot start balancer worker {worker}: {reason}")]
    Runtime {
        /// The worker.
        worker: usize,
        /// Why.
        reason: String,
    },
    /// Signal handling could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(String),
}

/// A running balancer (see [`start`]).
#[derive(Debug)]
pub struct BalancerHandle {
    listen: SocketAddr,
    admin: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BalancerHandle {
    /// The actual listen address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The actual admin listen address (see the module documentation, "Admin").
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The flag that stops the balancer when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Waits until every thread has ended.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Stops and waits.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.join();
    }
}

/// Starts the control thread and the workers; returns once they listen.
/// The first routing view is published after one discovery round, so nodes
/// that are up at start are members from the first request on.
pub fn start(mut config: BalanceConfig) -> Result<BalancerHandle, BalanceError> {
    config.validate()?;
    config.load_admin_token()?;
    let tls = match &config.tls {
        Some(f) => Some(crate::tls::acceptor(&f.cert, &f.key)?),
        None => None,
    };
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let (report_tx, report_rx) = crossbeam_channel::unbounded();
    let mut view_txs = Vec::new();
    let mut view_rxs = Vec::new();
    for _ in 0..config.threads {
        let (tx, rx) = crossbeam_channel::unbounded();
        view_txs.push(tx);
        view_rxs.push(rx);
    }
    let mut control = health::Control::new(config.clone(), view_txs, report_rx);
    control.initial();
    let mut threads = Vec::new();
    let stop_c = stop.clone();
    threads.push(
        std::thread::Builder::new()
            .name("balance-control".into())
            .spawn(move || control.run(stop_c))
            .map_err(|e| BalanceError::Runtime { worker: 0, reason: e.to_string() })?,
    );
    let mut listen = config.listen;
    let mut admin = config.admin_listen;
    for (id, rx) in view_rxs.into_iter().enumerate() {
        // The control thread sent the first view already; take it here.
        let first = match rx.try_iter().last() {
            Some(v) => v,
            None => {
                stop.store(true, Ordering::SeqCst);
                return Err(BalanceError::Runtime { worker: id, reason: "no routing view".into() });
            }
        };
        let (tx, started) = mpsc::channel::<Result<(SocketAddr, Option<SocketAddr>), BalanceError>>();
        let (config_w, stop_w, reports) = (config.clone(), stop.clone(), report_tx.clone());
        let tls_w = tls.clone();
        let bind_addr = listen;
        // Worker 0 also serves the admin listener (few requests, no SO_REUSEPORT).
        let admin_addr = (id == 0).then_some(config.admin_listen);
        let thread = std::thread::Builder::new()
            .name(format!("balance-{id}"))
            .spawn(move || {
                let reactor = match Reactor::new() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(BalanceError::Runtime { worker: id, reason: e.to_string() }));
                        return;
                    }
                };
                reactor.block_on(async move {
                    let listener = match stream::listen(bind_addr) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ =
                                tx.send(Err(BalanceError::Bind { addr: bind_addr, reason: e.to_string() }));
                            return;
                        }
                    };
                    let admin_listener = match admin_addr.map(stream::listen_exclusive).transpose() {
                        Ok(l) => l,
                        Err(e) => {
                            let addr = admin_addr.unwrap_or(bind_addr);
                            let _ = tx.send(Err(BalanceError::Bind { addr, reason: e.to_string() }));
                            return;
                        }
                    };
                    let actual = listener.local_addr().unwrap_or(bind_addr);
                    let actual_admin = admin_listener.as_ref().map(|l| l.local_addr().unwrap_or(bind_addr));
                    let _ = tx.send(Ok((actual, actual_admin)));
                    let mut worker = proxy::Worker::new(config_w, actual, rx, first, reports, stop_w);
                    worker.tls = tls_w;
                    let worker = Rc::new(worker);
                    match admin_listener {
                        Some(admin) => {
                            let public =
                                proxy::accept_loop(worker.clone(), listener, proxy::Listener::Public);
                            let admin = proxy::accept_loop(worker, admin, proxy::Listener::Admin);
                            futures_lite::future::zip(public, admin).await;
                        }
                        None => proxy::accept_loop(worker, listener, proxy::Listener::Public).await,
                    }
                    // Let in-flight requests finish briefly; the rest end with the runtime.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                });
            })
            .map_err(|e| BalanceError::Runtime { worker: id, reason: e.to_string() })?;
        threads.push(thread);
        match started.recv() {
            Ok(Ok((addr, admin_addr))) => {
                listen = addr;
                if let Some(a) = admin_addr {
                    admin = a;
                }
            }
            Ok(Err(e)) => {
                stop.store(true, Ordering::SeqCst);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                return Err(BalanceError::Runtime {
                    worker: id,
                    reason: "worker ended during start-up".into(),
                });
            }
        }
    }
    Ok(BalancerHandle { listen, admin, stop, threads })
}

/// A worker's single-threaded epoll reactor and executor: a tokio
/// current-thread runtime (I/O and timers) with a `LocalSet` for the
/// connection tasks, which hold `Rc`s and never leave the thread.
pub(crate) struct Reactor {
    // Fields drop in order: the tasks (and their sockets and timers) go
    // while the runtime's drivers still exist.
    local: tokio::task::LocalSet,
    runtime: tokio::runtime::Runtime,
}

impl Reactor {
    /// Creates the reactor (epoll instance, eventfd, timer wheel).
    pub(crate) fn new() -> std::io::Result<Reactor> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        Ok(Reactor { local: tokio::task::LocalSet::new(), runtime })
    }

    /// Runs `future` and the tasks it spawns (`tokio::task::spawn_local`)
    /// on this thread until `future` ends; tasks still running then are
    /// dropped with the reactor.
    pub(crate) fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.local.block_on(&self.runtime, future)
    }
}

/// Runs the balancer until SIGINT or SIGTERM.
pub fn run(config: BalanceConfig) -> Result<(), BalanceError> {
    let handle = start(config)?;
    tracing::info!(listen = %handle.listen_addr(), admin = %handle.admin_addr(), "shardsync balancing");
    let signals = crate::server::StopOnSignal::install(handle.stop_flag())
        .map_err(|e| BalanceError::Signals(e.to_string()))?;
    handle.join();
    signals.finish();
    Ok(())
}
