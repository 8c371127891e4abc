//! The shard-per-core runtime: one glommio `LocalExecutor` per shard, pinned
//! to a CPU, each accepting on the shared port (SO_REUSEPORT) and on a port
//! of its own, handing requests it does not own to their owner through the
//! channel [`mesh`]. This is the only module that knows glommio.

mod ceiling;
mod conn;
mod deadline;
pub mod io;
mod mesh;

pub use ceiling::run_ceiling;

/// Waits `d` on the current shard's timer (never blocks the executor).
pub async fn sleep(d: Duration) {
    Timer::new(d).await;
}

use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::sync::{Gate, Semaphore};
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::metrics::{NodeMetrics, ShardMetrics};
use crate::server::{NodeOps, ShardContext};
use crate::service::SyncService;
use crate::sessions::{ActiveSessions, SessionInbox};

/// glommio refuses to start below this RLIMIT_MEMLOCK (bytes).
const GLOMMIO_MIN_MEMLOCK: u64 = 512 << 10;
/// Rings per executor that register the io memory (main, latency, poll).
const RINGS_PER_SHARD: usize = 3;
/// How often a shard checks the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Why the server could not start or did not stop cleanly. Each message is
/// one line that says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Locked memory (RLIMIT_MEMLOCK) is too low for io_uring.
    #[error(
        "locked memory limit is {have_kib} KiB but {need_kib} KiB are needed for {shards} shard(s): \
         raise `ulimit -l` to at least {need_kib} (or set LimitMEMLOCK= in the systemd unit){hint}"
    )]
    MemLock {
        /// What else would help (empty when only raising the limit does).
        hint: &'static str,
        /// The current soft limit in KiB.
        have_kib: u64,
        /// What the configuration needs in KiB.
        need_kib: u64,
        /// The shard count.
        shards: usize,
    },
    /// A glommio executor (io_uring) could not be created.
    #[error(
        "cannot start shard {shard}: {reason} — shardsync needs io_uring (Linux ≥ 5.8, \
         sysctl kernel.io_uring_disabled=0, not blocked by seccomp/container policy)"
    )]
    Runtime {
        /// The shard.
        shard: usize,
        /// The underlying error.
        reason: String,
    },
    /// A listen address is taken or not bindable.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Signal handling could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(String),
    /// A shard thread ended abnormally.
    #[error("shard {shard} failed: {reason}")]
    Shard {
        /// The shard.
        shard: usize,
        /// Why.
        reason: String,
    },
}

/// A running server (see [`start`]).
#[derive(Debug)]
pub struct ServerHandle {
    listen: SocketAddr,
    shard_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), String>>>,
}

impl ServerHandle {
    /// The shared listen address (with the actual port when 0 was configured).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The own address of each shard, by shard index.
    pub fn shard_addrs(&self) -> &[SocketAddr] {
        &self.shard_addrs
    }

    /// The flag that asks every shard to shut down gracefully when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Asks the shards to shut down gracefully (does not wait).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until every shard has stopped.
    pub fn join(self) -> Result<(), ServerError> {
        let mut result = Ok(());
        for (shard, t) in self.threads.into_iter().enumerate() {
            let r = match t.join() {
                Ok(Ok(())) => continue,
                Ok(Err(reason)) => reason,
                Err(_) => "panicked".to_string(),
            };
            if result.is_ok() {
                result = Err(ServerError::Shard { shard, reason: r });
            }
        }
        result
    }

    /// Shuts down and waits.
    pub fn stop(self) -> Result<(), ServerError> {
        self.shutdown();
        self.join()
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortKind {
    /// The node's shared port: requests are routed by key.
    Shared,
    /// The shard's own port: the balancer already chose this shard.
    Own,
}

/// Per-shard state shared by the shard's tasks (never across threads).
pub(crate) struct Shard<S> {
    pub id: usize,
    pub shards: usize,
    pub service: S,
    pub config: Arc<Config>,
    pub sync_path: String,
    pub topology: Arc<OnceLock<String>>,
    pub mesh: mesh::Mesh,
    /// Closed at shutdown: wakes the accept loops.
    pub shutdown: Semaphore,
    /// Read deadlines of the connections (idle ones also end at shutdown).
    pub deadlines: deadline::Deadlines,
    /// This shard's metrics.
    pub metrics: Arc<ShardMetrics>,
    /// The whole node's metrics (for `GET /metrics`).
    pub node_metrics: Arc<NodeMetrics>,
    /// TLS acceptor when the node serves HTTPS.
    pub tls: Option<crate::tls::Acceptor>,
    stopping: std::cell::Cell<bool>,
}

impl<S> Shard<S> {
    /// Whether graceful shutdown has begun.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.get()
    }

    fn begin_shutdown(&self) {
        self.stopping.set(true);
        self.shutdown.close();
    }
}

/// Starts the shards and returns once every one of them listens.
pub fn start<S, F>(config: Config, factory: F) -> Result<ServerHandle, ServerError>
where
    S: SyncService,
    F: Fn(ShardContext) -> S + Send + Sync + 'static,
{
    let (ops, _) = NodeOps::new(&config, NodeMetrics::new(config.shards));
    start_with(config, ops, factory)
}

/// Like [`start`], with the node's metrics, limits and admin inboxes.
pub fn start_with<S, F>(config: Config, ops: NodeOps, factory: F) -> Result<ServerHandle, ServerError>
where
    S: SyncService,
    F: Fn(ShardContext) -> S + Send + Sync + 'static,
{
    config.validate()?;
    if ops.metrics.shards() != config.shards || ops.inboxes.len() != config.shards {
        return Err(ServerError::Runtime {
            shard: 0,
            reason: format!(
                "operations state built for {} shards, config has {}",
                ops.metrics.shards(),
                config.shards
            ),
        });
    }
    let NodeOps { metrics: node_metrics, limits, inboxes } = ops;
    let tls = match &config.tls {
        Some(files) => Some(crate::tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let mut inboxes = inboxes.into_iter();
    let io_memory = check_memlock(&config)?;
    probe_free(&config)?;
    let config = Arc::new(config);
    let factory = Arc::new(factory);
    let n = config.shards;
    let cpus = allowed_cpus();
    let stop = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(AtomicUsize::new(0));
    let topology: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let mut mesh_ends = mesh::build(n).into_iter().enumerate();
    let mut threads = Vec::with_capacity(n);
    let mut shard_addrs = Vec::with_capacity(n);
    let mut listen = config.listen;
    // Shards start one after another: shard 0 binds the shared port first so
    // that a configured port 0 becomes one actual port the others join.
    while let Some((id, ends)) = mesh_ends.next() {
        let own = SocketAddr::new(config.listen.ip(), config.shard_port(id)?);
        let placement = match (config.pin, cpus.is_empty()) {
            (true, false) => Placement::Fixed(cpus[id % cpus.len()]),
            _ => Placement::Unbound,
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(io_memory)
            .ring_depth(config.ring_depth)
            .preempt_timer(Duration::from_millis(100));
        let (tx, rx) = mpsc::channel();
        let Some(inbox) = inboxes.next() else {
            return Err(ServerError::Runtime { shard: id, reason: "no admin inbox".into() });
        };
        let setup = ShardSetup {
            tls: tls.clone(),
            inbox,
            node_metrics: node_metrics.clone(),
            limits: limits.clone(),
            id,
            shared: listen,
            own,
            config: config.clone(),
            stop: stop.clone(),
            drained: drained.clone(),
            topology: topology.clone(),
            ends,
        };
        let factory = factory.clone();
        let exit_guard = ExitGuard { id, metrics: node_metrics.shard(id), stop: stop.clone() };
        let thread = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                // A panic outside every request boundary marks the shard dead
                // at once; the guard covers a thread that ends otherwise.
                install_panic_hook();
                SHARD_METRICS.with(|m| *m.borrow_mut() = Some(exit_guard.metrics.clone()));
                let _exit_guard = exit_guard;
                // Build the executor here, not with builder.spawn(), so a
                // failure is an error we report instead of a panic.
                let ex = match builder.make() {
                    Ok(ex) => ex,
                    Err(e) => {
                        let _ = tx.send(Err(ServerError::Runtime { shard: id, reason: e.to_string() }));
                        return Ok(());
                    }
                };
                ex.run(shard_main(setup, factory, tx))
            })
            .map_err(|e| ServerError::Runtime { shard: id, reason: e.to_string() })?;
        match rx.recv() {
            Ok(Ok((shared_addr, own_addr))) => {
                listen = shared_addr;
                shard_addrs.push(own_addr);
                threads.push(thread);
            }
            Ok(Err(e)) => {
                stop.store(true, Ordering::SeqCst);
                let _ = thread.join();
                // Shards already started have no peers to wait for: let them go.
                drop(mesh_ends);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                let reason = match thread.join() {
                    Ok(Err(r)) => r,
                    _ => "shard thread ended during start-up".into(),
                };
                return Err(ServerError::Runtime { shard: id, reason });
            }
        }
    }
    let node = config.node.clone().unwrap_or_else(|| listen.to_string());
    let json = serde_json::json!({
        "node": node,
        "listen": listen.to_string(),
        "shards": shard_addrs.iter().enumerate()
            .map(|(id, a)| serde_json::json!({"id": id, "port": a.port()}))
            .collect::<Vec<_>>(),
    });
    let _ = topology.set(json.to_string());
    Ok(ServerHandle { listen, shard_addrs, stop, threads })
}

/// Marks its shard as exited (failing the node's `/health`) when the shard's
/// thread ends without a shutdown having been asked for, or by a panic.
struct ExitGuard {
    id: usize,
    metrics: Arc<ShardMetrics>,
    stop: Arc<AtomicBool>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking || !self.stop.load(Ordering::SeqCst) {
            self.metrics.mark_exited();
            tracing::error!(shard = self.id, panicking, "shard thread ended unexpectedly; /health now fails");
        }
    }
}

std::thread_local! {
    /// This thread's shard metrics, set for the life of a shard thread.
    static SHARD_METRICS: std::cell::RefCell<Option<Arc<ShardMetrics>>> = const { std::cell::RefCell::new(None) };
    /// How many panic boundaries of this module enclose the running code.
    static CAUGHT_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Inside a panic boundary until dropped (also while a panic unwinds).
struct Boundary;

impl Boundary {
    fn enter() -> Boundary {
        CAUGHT_DEPTH.with(|d| d.set(d.get() + 1));
        Boundary
    }
}

impl Drop for Boundary {
    fn drop(&mut self) {
        CAUGHT_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// A caught panic's payload.
pub(crate) type PanicPayload = Box<dyn std::any::Any + Send>;

/// Runs `f` behind a panic boundary: a panic comes back as `Err`.
pub(crate) fn catching_sync<T>(f: impl FnOnce() -> T) -> Result<T, PanicPayload> {
    let _inside = Boundary::enter();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

/// Polls `future` behind a panic boundary: a panic in any poll comes back
/// as `Err` (the future is dropped). Asserted unwind-safe: after a panic the
/// caller uses only its own counters and logger, never the future's state.
pub(crate) async fn catching<F: std::future::Future>(future: F) -> Result<F::Output, PanicPayload> {
    use futures_lite::FutureExt;
    let mut future = std::pin::pin!(future);
    let polled = futures_lite::future::poll_fn(|cx| {
        let _inside = Boundary::enter();
        future.as_mut().poll(cx)
    });
    std::panic::AssertUnwindSafe(polled).catch_unwind().await
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &PanicPayload) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-text panic payload)")
}

/// Installs (once per process) a panic hook that marks a shard dead the
/// moment a panic starts on its thread outside every boundary of this
/// module: such a panic unwinds into glommio, which does not isolate tasks,
/// and the shard is lost (its thread's unwinding may not even finish, so
/// [`ExitGuard`] alone would not see it). The previous hook still runs.
fn install_panic_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAUGHT_DEPTH.with(|d| d.get()) == 0 {
                SHARD_METRICS.with(|m| {
                    if let Some(m) = m.borrow().as_ref() {
                        m.mark_exited();
                    }
                });
            }
            previous(info);
        }));
    });
}

/// Runs a shard task's future, catching a panic that would otherwise unwind
/// into the executor and end the shard (glommio does not isolate tasks).
/// The request boundaries in `conn` catch engine and decoder panics first;
/// this is the net under the rest (HTTP framing, hand-over plumbing).
pub(crate) async fn contained(
    id: usize,
    metrics: Arc<ShardMetrics>,
    task: &'static str,
    future: impl std::future::Future<Output = ()>,
) {
    if let Err(payload) = catching(future).await {
        metrics.panics.inc();
        let message = panic_message(&payload);
        tracing::error!(shard = id, task, panic = message, "shard task panicked; its connection was dropped");
    }
}

struct ShardSetup {
    tls: Option<crate::tls::Acceptor>,
    inbox: SessionInbox,
    node_metrics: Arc<NodeMetrics>,
    limits: Arc<crate::limits::Limits>,
    id: usize,
    shared: SocketAddr,
    own: SocketAddr,
    config: Arc<Config>,
    stop: Arc<AtomicBool>,
    drained: Arc<AtomicUsize>,
    topology: Arc<OnceLock<String>>,
    ends: mesh::MeshEnds,
}

type StartReply = Result<(SocketAddr, SocketAddr), ServerError>;

/// Opens a listening socket with SO_REUSEPORT (every shard accepts on the
/// shared port) and SO_REUSEADDR (a restarted node can bind while
/// connections of its previous run linger in TIME_WAIT; glommio's own
/// `TcpListener::bind` sets only the former).
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` is a freshly created, bound and listening TCP socket whose
    // ownership moves into the listener; nothing else holds or closes it.
    #[allow(unsafe_code)]
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    Ok(listener)
}

async fn shard_main<S, F>(
    setup: ShardSetup,
    factory: Arc<F>,
    started: mpsc::Sender<StartReply>,
) -> Result<(), String>
where
    S: SyncService,
    F: Fn(ShardContext) -> S + Send + Sync + 'static,
{
    let ShardSetup {
        tls,
        inbox,
        node_metrics,
        limits,
        id,
        shared,
        own,
        config,
        stop,
        drained,
        topology,
        ends,
    } = setup;
    let bind = |addr: SocketAddr| listen(addr).map_err(|e| ServerError::Bind { addr, reason: e.to_string() });
    let listeners = bind(shared).and_then(|s| Ok((s, bind(own)?))).and_then(|(s, o)| {
        let sa = s.local_addr().map_err(|e| ServerError::Bind { addr: shared, reason: e.to_string() })?;
        let oa = o.local_addr().map_err(|e| ServerError::Bind { addr: own, reason: e.to_string() })?;
        Ok((s, o, sa, oa))
    });
    let (shared_listener, own_listener) = match listeners {
        Ok((s, o, sa, oa)) => {
            let _ = started.send(Ok((sa, oa)));
            (s, o)
        }
        Err(e) => {
            let _ = started.send(Err(e));
            return Ok(());
        }
    };
    drop(started);
    let n = config.shards;
    // Wait for every peer (or for a start-up failure elsewhere).
    let connect = mesh::Mesh::connect(id, ends);
    let stopped = async {
        while !stop.load(Ordering::SeqCst) {
            Timer::new(STOP_POLL).await;
        }
        None
    };
    let Some((mesh, receivers)) = futures_lite::future::or(async { Some(connect.await) }, stopped).await
    else {
        return Ok(());
    };
    let metrics = node_metrics.shard(id);
    metrics.beat();
    let sessions = Rc::new(
        ActiveSessions::new(id, metrics.clone(), limits).with_idle_timeout(config.session_timeout.as_secs()),
    );
    let service = factory(ShardContext {
        shard: id,
        shards: n,
        config: config.clone(),
        metrics: metrics.clone(),
        sessions: sessions.clone(),
    });
    // Admin queries (`shardsync session list`) are answered from this task.
    // Idle sessions are ended here too (about once a second), traffic or not.
    let admin_task = glommio::spawn_local(async move {
        let mut polls = 0u32;
        loop {
            Timer::new(crate::sessions::POLL).await;
            sessions.answer(&inbox);
            polls = polls.wrapping_add(1);
            if polls % 10 == 0 {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                sessions.expire_idle(now);
            }
        }
    });
    let shard = Rc::new(Shard {
        tls,
        metrics,
        node_metrics,
        id,
        shards: n,
        service,
        sync_path: config.sync_path(),
        config: config.clone(),
        topology,
        mesh,
        shutdown: Semaphore::new(0),
        deadlines: deadline::Deadlines::new(deadline::tick_for(
            [config.header_timeout, config.body_timeout, config.idle_timeout]
                .into_iter()
                .min()
                .unwrap_or_default(),
        )),
        stopping: std::cell::Cell::new(false),
    });
    let sweeper = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                Timer::new(shard.deadlines.tick()).await;
                shard.deadlines.sweep(Instant::now(), shard.stopping());
                // At most 250 ms apart while the executor runs tasks (`/health`).
                shard.metrics.beat();
            }
        })
    };
    let gate = Gate::new();
    for (peer, rx) in receivers {
        glommio::spawn_local(receive_loop(shard.clone(), gate.clone(), peer, rx)).detach();
    }
    let accept_shared =
        glommio::spawn_local(accept_loop(shard.clone(), gate.clone(), shared_listener, PortKind::Shared));
    let accept_own =
        glommio::spawn_local(accept_loop(shard.clone(), gate.clone(), own_listener, PortKind::Own));
    tracing::debug!(shard = id, %shared, %own, "shard serving");

    while !stop.load(Ordering::SeqCst) {
        Timer::new(STOP_POLL).await;
    }
    // Graceful shutdown: stop accepting, wake idle connections, wait for in-flight ones.
    shard.begin_shutdown();
    accept_shared.await;
    accept_own.await;
    let deadline = Instant::now() + config.shutdown_grace;
    let closed = futures_lite::future::or(
        async {
            let _ = gate.close().await;
            true
        },
        async {
            Timer::new(config.shutdown_grace).await;
            false
        },
    )
    .await;
    if !closed {
        tracing::warn!(shard = id, "shutdown grace period over; dropping remaining connections");
    }
    // Keep answering hand-overs until every shard has drained its own connections.
    drained.fetch_add(1, Ordering::SeqCst);
    while drained.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        Timer::new(Duration::from_millis(10)).await;
    }
    drop(sweeper);
    drop(admin_task);
    tracing::debug!(shard = id, "shard stopped");
    Ok(())
}

async fn accept_loop<S: SyncService>(shard: Rc<Shard<S>>, gate: Gate, listener: TcpListener, kind: PortKind) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = shard.shutdown.acquire(1).await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                let serve = contained(
                    shard.id,
                    shard.metrics.clone(),
                    "connection",
                    conn::serve(shard.clone(), stream, kind),
                );
                if gate.spawn(serve).map(|t| t.detach()).is_err() {
                    break;
                }
            }
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                Timer::new(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn receive_loop<S: SyncService>(
    shard: Rc<Shard<S>>,
    gate: Gate,
    peer: usize,
    rx: glommio::channels::shared_channel::ConnectedReceiver<mesh::Envelope>,
) {
    while let Some(envelope) = rx.recv().await {
        match envelope {
            mesh::Envelope::Request { id, from, job } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    shard.metrics.handoffs_serving.add(1);
                    let outcome = conn::serve_owned(&shard, job).await;
                    shard.metrics.handoffs_serving.add(-1);
                    shard.mesh.reply(from, id, outcome).await;
                })
                .detach();
            }
            mesh::Envelope::Reply { id, outcome } => shard.mesh.complete(id, outcome),
            mesh::Envelope::Adopt(moved) => {
                // Like an accepted connection, it joins the gate that shutdown
                // waits for; once that is closed, it is served outside it (it
                // answers with `Connection: close` then).
                let serve = contained(
                    shard.id,
                    shard.metrics.clone(),
                    "adopted connection",
                    conn::adopt(shard.clone(), *moved),
                );
                if gate.is_open() {
                    if let Err(e) = gate.spawn(serve).map(|t| t.detach()) {
                        tracing::warn!(shard = shard.id, error = %e, "adopted connection dropped");
                    }
                } else {
                    glommio::spawn_local(serve).detach();
                }
            }
        }
    }
    tracing::trace!(shard = shard.id, peer, "mesh channel closed");
}

/// Picks the io memory per shard and checks it against RLIMIT_MEMLOCK.
///
/// Each shard's three rings register the io memory, and glommio refuses to
/// start below 512 KiB of RLIMIT_MEMLOCK. An explicitly configured size that
/// does not fit is an error with a one-line fix; the default (128 KiB) is
/// lowered to fit, down to glommio's 64 KiB minimum — past that glommio
/// falls back to unregistered buffers, which network I/O does not need.
/// Returns the io memory per ring; `serve` calls it before it opens or
/// creates anything, so a low limit is one line and no side effect.
pub fn check_memlock(config: &Config) -> Result<usize, ServerError> {
    let default = crate::config::DEFAULT_IO_MEMORY;
    let min = crate::config::MIN_IO_MEMORY;
    let per_shard = |m: usize| (m.max(min).next_multiple_of(4096) * RINGS_PER_SHARD) as u64;
    let Some(have) = memlock_limit() else { return Ok(config.io_memory.unwrap_or(default)) };
    let err = |need: u64, hint| ServerError::MemLock {
        hint,
        have_kib: have / 1024,
        need_kib: need.max(GLOMMIO_MIN_MEMLOCK).div_ceil(1024),
        shards: config.shards,
    };
    if have < GLOMMIO_MIN_MEMLOCK {
        return Err(err(GLOMMIO_MIN_MEMLOCK, ""));
    }
    match config.io_memory {
        Some(m) => {
            let need = per_shard(m) * config.shards as u64;
            if have < need {
                return Err(err(need, ", or lower --io-memory (min 65536) or --shards"));
            }
            Ok(m)
        }
        None => {
            let fit = (have / (RINGS_PER_SHARD * config.shards) as u64) as usize / 4096 * 4096;
            if fit < min {
                tracing::warn!(
                    "`ulimit -l` ({} KiB) is below {} KiB for {} shards: io_uring buffers stay unregistered \
                     (fine for network I/O); raise it to silence this",
                    have / 1024,
                    per_shard(min) * config.shards as u64 / 1024,
                    config.shards
                );
            }
            Ok(fit.clamp(min, default))
        }
    }
}

/// The soft RLIMIT_MEMLOCK in bytes; `None` when unlimited or unknown.
#[allow(unsafe_code)]
fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass, which lives on our stack.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(lim.rlim_cur)
}

/// SO_REUSEPORT (which glommio always sets) would let a second server on the
/// same port silently share its traffic; refuse to start instead.
fn probe_free(config: &Config) -> Result<(), ServerError> {
    let mut addrs = vec![config.listen];
    for i in 0..config.shards {
        addrs.push(SocketAddr::new(config.listen.ip(), config.shard_port(i)?));
    }
    for addr in addrs.into_iter().filter(|a| a.port() != 0) {
        if let Err(e) = StdListener::bind(addr) {
            return Err(ServerError::Bind { addr, reason: e.to_string() });
        }
    }
    Ok(())
}

/// The CPUs this process may run on (from /proc/self/status), else `0..cores`.
fn allowed_cpus() -> Vec<usize> {
    let parsed = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
        parse_cpu_list(line.split_once(':')?.1.trim())
    });
    parsed.filter(|v| !v.is_empty()).unwrap_or_else(|| (0..crate::config::default_shards()).collect())
}

fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse::<usize>().ok()?),
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard a shard thread holds: a panic or an unasked-for return
    /// marks the shard exited; a return after shutdown was asked does not.
    #[test]
    fn exit_guard_marks_unexpected_ends_only() {
        let run = |stop_first: bool, panic: bool| {
            let metrics = Arc::new(ShardMetrics::default());
            let stop = Arc::new(AtomicBool::new(stop_first));
            let guard = ExitGuard { id: 0, metrics: metrics.clone(), stop };
            let joined = std::thread::spawn(move || {
                let _guard = guard;
                if panic {
                    panic!("shard thread panics");
                }
            })
            .join();
            assert_eq!(joined.is_err(), panic);
            metrics.exited()
        };
        assert!(!run(true, false), "a graceful stop is not an exit");
        assert!(run(false, false), "returning without a stop is");
        assert!(run(false, true), "a panic is");
        assert!(run(true, true), "a panic during shutdown is too");
    }

    /// A panic inside a contained task is caught, counted and does not
    /// reach the executor, which goes on running other tasks.
    #[test]
    fn contained_task_panics_do_not_end_the_executor() {
        let metrics = Arc::new(ShardMetrics::default());
        let m = metrics.clone();
        let ex = glommio::LocalExecutorBuilder::new(Placement::Unbound).make().expect("executor");
        let after = ex.run(async move {
            glommio::spawn_local(contained(0, m.clone(), "test", async { panic!("task panics") })).await;
            glommio::spawn_local(async { 7 }).await
        });
        assert_eq!(after, 7);
        assert_eq!(metrics.panics.get(), 1);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn memlock_need() {
        let c = Config { shards: 2, io_memory: Some(128 << 10), ..Config::default() };
        // 2 shards × 3 rings × 128 KiB = 768 KiB fits under 8 MiB.
        if memlock_limit().is_some_and(|l| l >= 8 << 20) {
            assert_eq!(check_memlock(&c).unwrap(), 128 << 10);
            // The default shrinks to fit many shards.
            let many = Config { shards: 32, ..Config::default() };
            let m = check_memlock(&many).unwrap();
            assert!((64 << 10..128 << 10).contains(&m) && (m * 3 * 32) as u64 <= memlock_limit().unwrap());
        }
        let huge = Config { shards: 1024, io_memory: Some(1 << 30), ..Config::default() };
        if memlock_limit().is_some() {
            let err = check_memlock(&huge).unwrap_err().to_string();
            assert!(err.contains("ulimit -l"), "{err}");
        }
    }
}
