//! The immutable routing view the control thread publishes to the workers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::config::BalanceConfig;
use super::select::{BoundedLoad, Member, Selection, Selector};

/// Counters of one member, shared by every worker (atomics only).
#[derive(Debug, Default)]
pub struct MemberStats {
    /// Requests forwarded to the member (including failed ones).
    pub requests: AtomicU64,
    /// Requests that failed on the member (connect or I/O errors, timeouts).
    pub failures: AtomicU64,
    /// Requests in flight to the member right now.
    pub in_flight: AtomicU64,
}

/// One member as of a view.
#[derive(Debug, Clone)]
pub struct MemberState {
    /// `host:port` of the shard: the identity selection hashes.
    pub id: String,
    /// The node (`--backend`) it belongs to.
    pub node: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Health (active and passive).
    pub up: bool,
    /// Configured weight.
    pub weight: u32,
    /// Draining: no new sessions, existing ones continue.
    pub draining: bool,
    /// Counters.
    pub stats: Arc<MemberStats>,
}

/// A node as of a view.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// Its address as configured.
    pub addr: String,
    /// Whether its `/shards` was read.
    pub discovered: bool,
}

/// A selection over a subset of the members, with its index mapping.
#[derive(Debug)]
pub struct Pool {
    selector: Selector,
    /// Selection member id → index in [`View::members`].
    map: Vec<usize>,
}

impl Pool {
    fn build(
        members: &[MemberState],
        include: impl Fn(&MemberState) -> bool,
        config: &BalanceConfig,
    ) -> Pool {
        let map: Vec<usize> = (0..members.len()).filter(|&i| include(&members[i])).collect();
        let sel: Vec<Member> =
            map.iter().map(|&i| Member { id: members[i].id.clone(), weight: members[i].weight }).collect();
        Pool { selector: Selector::build(&sel, &config.selector), map }
    }

    /// Members for `key`, best first (indices into [`View::members`]).
    pub fn candidates(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        self.selector.select(key).map(|i| self.map[i])
    }

    /// How many members this pool selects from.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Everything a worker needs to route, as of one generation.
#[derive(Debug)]
pub struct View {
    /// Increases with every change.
    pub generation: u64,
    /// Every known member.
    pub members: Vec<MemberState>,
    /// The configured nodes.
    pub nodes: Vec<NodeState>,
    /// Up members with weight, draining ones included: where existing sessions go.
    pub serving: Pool,
    /// Up members with weight, not draining: where new sessions go.
    pub accepting: Pool,
    /// Bounded-load setting.
    pub bounded: BoundedLoad,
}

impl View {
    /// Builds the selections for these members.
    pub fn build(
        generation: u64,
        members: Vec<MemberState>,
        nodes: Vec<NodeState>,
        config: &BalanceConfig,
    ) -> View {
        let serving = Pool::build(&members, |m| m.up && m.weight > 0, config);
        let accepting = Pool::build(&members, |m| m.up && m.weight > 0 && !m.draining, config);
        View { generation, members, nodes, serving, accepting, bounded: config.bounded }
    }

    /// The member for a request: from `accepting` for a new session (unless
    /// no member accepts), else from `serving`; bounded load applied.
    /// `skip` excludes members that just failed.
    pub fn pick(&self, key: u64, new_session: bool, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let pool = if new_session && !self.accepting.is_empty() { &self.accepting } else { &self.serving };
        let load = |m: usize| self.members[m].stats.in_flight.load(Ordering::Relaxed);
        let total: u64 =
            if self.bounded.factor_pct == 0 { 0 } else { pool.map.iter().map(|&m| load(m)).sum() };
        self.bounded.pick(pool.candidates(key).filter(|&m| !skip(m)), load, total, pool.len())
    }

    /// The Prometheus exposition of the balancer: member health, weight,
    /// draining, requests, failures and in-flight requests, by member.
    pub fn metrics_text(&self) -> String {
        use crate::metrics::Exposition;
        let mut out = Exposition::new();
        let labels = |m: &MemberState| [("member", m.id.clone()), ("node", m.node.clone())];
        type Get = fn(&MemberState) -> f64;
        let families: [(&str, &str, &str, Get); 6] = [
            ("shardsync_balancer_member_up", "gauge", "1 when the member (a shard) is healthy.", |m| {
                f64::from(u8::from(m.up))
            }),
            (
                "shardsync_balancer_member_draining",
                "gauge",
                "1 when the member takes no new sessions.",
                |m| f64::from(u8::from(m.draining)),
            ),
            ("shardsync_balancer_member_weight", "gauge", "Configured weight of the member.", |m| {
                f64::from(m.weight)
            }),
            (
                "shardsync_balancer_member_requests_total",
                "counter",
                "Requests forwarded to the member.",
                |m| m.stats.requests.load(Ordering::Relaxed) as f64,
            ),
            (
                "shardsync_balancer_member_failures_total",
                "counter",
                "Forwarded requests that failed on the member.",
                |m| m.stats.failures.load(Ordering::Relaxed) as f64,
            ),
            ("shardsync_balancer_member_in_flight", "gauge", "Requests in flight to the member.", |m| {
                m.stats.in_flight.load(Ordering::Relaxed) as f64
            }),
        ];
        for (name, kind, help, get) in families {
            out.family(name, kind, help);
            for m in &self.members {
                let l = labels(m);
                out.sample(name, &[(l[0].0, &l[0].1), (l[1].0, &l[1].1)], get(m));
            }
        }
        out.family("shardsync_balancer_members", "gauge", "Members known, by health.");
        let up = self.members.iter().filter(|m| m.up).count();
        out.sample("shardsync_balancer_members", &[("state", "up")], up as f64);
        out.sample("shardsync_balancer_members", &[("state", "down")], (self.members.len() - up) as f64);
        out.family("shardsync_balancer_view_generation", "gauge", "Generation of the routing view in use.");
        out.sample("shardsync_balancer_view_generation", &[], self.generation as f64);
        out.finish()
    }

    /// The `/status` document.
    pub fn status_json(&self, listen: &str, public_url: Option<&str>, algorithm: &str) -> String {
        let members: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "node": m.node,
                    "healthy": m.up,
                    "weight": m.weight,
                    "draining": m.draining,
                    "requests": m.stats.requests.load(Ordering::Relaxed),
                    "failures": m.stats.failures.load(Ordering::Relaxed),
                    "in_flight": m.stats.in_flight.load(Ordering::Relaxed),
                })
            })
            .collect();
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| serde_json::json!({"addr": n.addr, "discovered": n.discovered}))
            .collect();
        serde_json::json!({
            "listen": listen,
            "public_url": public_url,
            "algorithm": algorithm,
            "hash_balance_factor": self.bounded.factor_pct,
            "generation": self.generation,
            "nodes": nodes,
            "members": members,
        })
        .to_string()
    }
}
