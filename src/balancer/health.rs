//! The control thread: discovers each node's shards (`GET /shards`), runs
//! the active health checks (`GET /health` on every shard's own port),
//! takes passive failure reports and admin changes from the workers, and
//! publishes a new immutable [`View`] to every worker whenever membership,
//! health, weight or draining changes.
//!
//! It uses blocking sockets with short timeouts: it is never on a request
//! path, and the workers only ever see its results through lock-free
//! channels.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::config::BalanceConfig;
use super::view::{MemberState, MemberStats, NodeState, View};

/// What workers tell the control thread.
#[derive(Debug, Clone)]
pub enum Report {
    /// Connecting to or talking with a member failed (passive detection).
    Failed(String),
    /// Set or clear draining of a member.
    Drain(String, bool),
    /// Set a member's weight.
    Weight(String, u32),
}

struct Member {
    id: String,
    node: usize,
    addr: SocketAddr,
    up: bool,
    ok_streak: u32,
    fail_streak: u32,
    next_check: Instant,
    stats: Arc<MemberStats>,
}

struct Node {
    addr: String,
    discovered: bool,
    next_discovery: Instant,
}

/// The control loop's state.
pub(crate) struct Control {
    config: Arc<BalanceConfig>,
    nodes: Vec<Node>,
    members: Vec<Member>,
    weights: BTreeMap<String, u32>,
    drain: BTreeMap<String, bool>,
    stats: BTreeMap<String, Arc<MemberStats>>,
    generation: u64,
    workers: Vec<Sender<Arc<View>>>,
    reports: Receiver<Report>,
}

impl Control {
    pub(crate) fn new(
        config: Arc<BalanceConfig>,
        workers: Vec<Sender<Arc<View>>>,
        reports: Receiver<Report>,
    ) -> Control {
        let now = Instant::now();
        let nodes = config
            .backends
            .iter()
            .map(|a| Node { addr: a.clone(), discovered: false, next_discovery: now })
            .collect();
        let drain = config.drain.iter().map(|d| (d.clone(), true)).collect();
        Control {
            weights: config.weights.clone(),
            config,
            nodes,
            members: Vec::new(),
            drain,
            stats: BTreeMap::new(),
            generation: 0,
            workers,
            reports,
        }
    }

    /// Discovers every node once (so the first view is complete when nodes are up) and publishes.
    pub(crate) fn initial(&mut self) {
        self.discover();
        self.publish();
    }

    /// Runs until `stop` is set.
    pub(crate) fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            let mut changed = false;
            // Wait for reports for up to 50 ms, then run due checks.
            if let Ok(r) = self.reports.recv_timeout(Duration::from_millis(50)) {
                changed |= self.apply(r);
                while let Ok(r) = self.reports.try_recv() {
                    changed |= self.apply(r);
                }
            }
            changed |= self.discover();
            changed |= self.check_due();
            if changed {
                self.publish();
            }
        }
    }

    fn apply(&mut self, r: Report) -> bool {
        match r {
            Report::Failed(id) => {
                let fall = self.config.health.fall;
                match self.members.iter_mut().find(|m| m.id == id) {
                    Some(m) if m.up => {
                        tracing::warn!(member = %id, "member failed a request: marked down");
                        m.up = false;
                        m.ok_streak = 0;
                        m.fail_streak = fall;
                        true
                    }
                    _ => false,
                }
            }
            Report::Drain(id, on) => {
                tracing::info!(member = %id, draining = on, "drain changed");
                self.drain.insert(id, on);
                true
            }
            Report::Weight(id, w) => {
                tracing::info!(member = %id, weight = w, "weight changed");
                self.weights.insert(id, w);
                true
            }
        }
    }

    /// Fetches `/shards` from nodes not yet discovered, and from nodes whose
    /// shards are all down (a restarted node may report new ports).
    fn discover(&mut self) -> bool {
        let now = Instant::now();
        let mut changed = false;
        for n in 0..self.nodes.len() {
            let all_down = self.members.iter().filter(|m| m.node == n).all(|m| !m.up);
            if (self.nodes[n].discovered && !all_down) || self.nodes[n].next_discovery > now {
                continue;
            }
            self.nodes[n].next_discovery = now + self.config.health.interval;
            let Some(ports) = fetch_shards(&self.nodes[n].addr, self.config.health.timeout) else { continue };
            let host = host_of(&self.nodes[n].addr);
            let ids: Vec<String> = ports.iter().map(|p| format!("{host}:{p}")).collect();
            let known: Vec<&str> =
                self.members.iter().filter(|m| m.node == n).map(|m| m.id.as_str()).collect();
            if self.nodes[n].discovered && known == ids.iter().map(String::as_str).collect::<Vec<_>>() {
                continue;
            }
            self.members.retain(|m| m.node != n);
            for id in ids {
                let Some(addr) = resolve(&id) else { continue };
                let stats = self.stats.entry(id.clone()).or_default().clone();
                // A node that just answered /shards counts as up; checks take it from there.
                let up = !self.nodes[n].discovered;
                self.members.push(Member {
                    id,
                    node: n,
                    addr,
                    up,
                    ok_streak: 0,
                    fail_streak: 0,
                    next_check: now + self.config.health.interval,
                    stats,
                });
            }
            tracing::info!(node = %self.nodes[n].addr, shards = ports.len(), "node discovered");
            self.nodes[n].discovered = true;
            changed = true;
        }
        changed
    }

    fn check_due(&mut self) -> bool {
        let now = Instant::now();
        let h = self.config.health;
        let mut changed = false;
        for m in self.members.iter_mut().filter(|m| m.next_check <= now) {
            m.next_check = now + h.interval;
            let ok = http_get(m.addr, "/health", h.timeout).is_some_and(|(status, _)| status == 200);
            if ok {
                m.fail_streak = 0;
                m.ok_streak += 1;
                if !m.up && m.ok_streak >= h.rise {
                    tracing::info!(member = %m.id, "member up");
                    m.up = true;
                    changed = true;
                }
            } else {
                m.ok_streak = 0;
                m.fail_streak += 1;
                if m.up && m.fail_streak >= h.fall {
                    tracing::warn!(member = %m.id, "member down (health checks failed)");
                    m.up = false;
                    changed = true;
                }
            }
        }
        changed
    }

    fn publish(&mut self) {
        self.generation += 1;
        let members = self
            .members
            .iter()
            .map(|m| MemberState {
                id: m.id.clone(),
                node: self.nodes[m.node].addr.clone(),
                addr: m.addr,
                up: m.up,
                weight: self.weights.get(&m.id).copied().unwrap_or(1),
                draining: self.drain.get(&m.id).copied().unwrap_or(false),
                stats: m.stats.clone(),
            })
            .collect();
        let nodes =
            self.nodes.iter().map(|n| NodeState { addr: n.addr.clone(), discovered: n.discovered }).collect();
        let view = Arc::new(View::build(self.generation, members, nodes, &self.config));
        for w in &self.workers {
            let _ = w.send(view.clone());
        }
    }
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

fn resolve(addr: &str) -> Option<SocketAddr> {
    addr.to_socket_addrs().ok()?.next()
}

/// The shard ports a node lists at `GET /shards`.
fn fetch_shards(node: &str, timeout: Duration) -> Option<Vec<u16>> {
    let (status, body) = http_get(resolve(node)?, "/shards", timeout)?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v.get("shards")?
        .as_array()?
        .iter()
        .map(|s| s.get("port")?.as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect()
}

/// A blocking `GET` with `Connection: close`; (status, body).
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && buf.len() < 1 << 20 {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&buf).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    Some((resp.code?, buf[head_len..].to_vec()))
}
