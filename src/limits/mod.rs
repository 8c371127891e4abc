//! Abuse limits: exponential back-off after failed authentications and
//! session probes, and a cap on concurrent sessions per user.
//!
//! The back-off policy (three keys; a request is refused while any key that
//! applies to it is backing off):
//! - **address**: every failed login and every refused session probe
//!   (unknown session, wrong session secret) from a client address counts;
//!   after `address_free_failures` the address backs off. Checked before the
//!   body is decoded, so a blocked address costs no decoding.
//! - **(user, address)**: failed logins claiming a user from one address;
//!   after `auth_free_failures` that pair backs off. A stranger elsewhere
//!   does not lock the user out this way.
//! - **user**: failed logins claiming a user from any address, with a higher
//!   ceiling (`user_free_failures`), against distributed guessing. It never
//!   holds back a device that logged in successfully from the same address
//!   within `known_device_ttl` (so a stranger cannot lock out the user's own
//!   phone), and such a known device's failed logins (typically a correct
//!   password over a stale nonce after an interrupted session) count only
//!   against its address.
//!
//! Counting across shards: the state is node-wide, in fixed tables of
//! atomics shared by every shard, with no lock and no hand-over: a key (user
//! name or address) is hashed twice into two slots (a count-min sketch) and
//! its state is the less severe of the two. Two keys only interfere when both
//! of their slots collide (about (k/16384)² for k busy keys), and then only
//! in the strict direction (a key may be limited a little early, never
//! late). A node of a cluster counts what reaches it; the balancer routes by
//! session, so a user's sessions may be counted on several nodes.
//!
//! What the client sees (and what it never learns): the back-off is checked
//! before any store lookup, for any claimed name, so a blocked unknown user
//! and a blocked real user get the same HTTP 429 with `Retry-After`. The
//! session cap is checked only after a successful authentication (so only
//! the user learns about it) and answers SyncML status 503 in the SyncHdr
//! status, which clients show as "server busy, retry later".

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xxhash_rust::xxh64::xxh64;

/// Slots per table (a power of two).
const SLOTS: usize = 1 << 14;

/// Settings of the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Failed logins of one (user, address) pair allowed within the window before back-off starts.
    pub auth_free_failures: u32,
    /// Failed logins of one user from all addresses allowed before the user key backs off.
    pub user_free_failures: u32,
    /// Failed logins and session probes of one address allowed before it backs off.
    pub address_free_failures: u32,
    /// How long a device that logged in from an address stays exempt from the user key there.
    pub known_device_ttl: Duration,
    /// The first back-off; it doubles with every further failure.
    pub auth_backoff_base: Duration,
    /// The longest back-off.
    pub auth_backoff_max: Duration,
    /// Failures older than this (since the key's last failure) are forgotten.
    pub auth_failure_window: Duration,
    /// Concurrent authenticated sessions per user on a node (0: no cap).
    pub max_sessions_per_user: u32,
    /// Every answer to a failed authentication is released no earlier than
    /// this after the request arrived, so wrong passwords, unknown users and
    /// store latency all take the same time.
    pub auth_fail_delay: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            auth_free_failures: 5,
            user_free_failures: 50,
            address_free_failures: 30,
            known_device_ttl: Duration::from_secs(30 * 24 * 3600),
            auth_backoff_base: Duration::from_secs(1),
            auth_backoff_max: Duration::from_secs(300),
            auth_failure_window: Duration::from_secs(900),
            max_sessions_per_user: 0,
            auth_fail_delay: Duration::from_millis(200),
        }
    }
}

/// Which key refused a request.
pub use crate::metrics::BackoffKey;

/// A refusal by the back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The key that is blocked (user checked first).
    pub key: BackoffKey,
    /// How long until the key may try again (at least one second, rounded up).
    pub retry_after: Duration,
}

/// Failure counts with their last time, per hashed key.
#[derive(Debug)]
struct FailTable {
    /// `failures << 48 | (last failure in ms since the epoch + 1)`; 0 = empty.
    slots: Box<[AtomicU64]>,
}

const TIME_BITS: u32 = 48;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

impl FailTable {
    fn new() -> FailTable {
        FailTable { slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }

    fn slots_of(key: &[u8]) -> [usize; 2] {
        [xxh64(key, 0x5eed_0001) as usize % SLOTS, xxh64(key, 0x5eed_0002) as usize % SLOTS]
    }

    /// (failures within the window, last failure ms) of the key: the lesser slot.
    fn get(&self, key: &[u8], now_ms: u64, window_ms: u64) -> (u32, u64) {
        Self::slots_of(key)
            .iter()
            .map(|&i| live(self.slots[i].load(Ordering::Relaxed), now_ms, window_ms))
            .min()
            .unwrap_or((0, 0))
    }

    fn record(&self, key: &[u8], now_ms: u64, window_ms: u64) {
        for i in Self::slots_of(key) {
            let _ = self.slots[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                let (failures, _) = live(v, now_ms, window_ms);
                let failures = u64::from(failures.saturating_add(1).min(0xffff));
                Some(failures << TIME_BITS | ((now_ms + 1) & TIME_MASK))
            });
        }
    }
}

/// A slot's failures (0 once the window passed) and last time.
fn live(v: u64, now_ms: u64, window_ms: u64) -> (u32, u64) {
    if v == 0 {
        return (0, 0);
    }
    let last = (v & TIME_MASK).saturating_sub(1);
    if now_ms.saturating_sub(last) > window_ms {
        return (0, 0);
    }
    ((v >> TIME_BITS) as u32, last)
}

/// Concurrent sessions per hashed user.
#[derive(Debug)]
struct CountTable {
    slots: Box<[AtomicU32]>,
}

impl CountTable {
    fn new() -> CountTable {
        CountTable { slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect() }
    }

    fn try_acquire(&self, key: &[u8], cap: u32) -> bool {
        let idx = FailTable::slots_of(key);
        // Take, then check: racing shards can both refuse, never both exceed.
        let after = idx.iter().map(|&i| self.slots[i].fetch_add(1, Ordering::Relaxed) + 1).min().unwrap_or(0);
        if after > cap {
            self.release(key);
            return false;
        }
        true
    }

    fn release(&self, key: &[u8]) {
        for i in FailTable::slots_of(key) {
            let _ = self.slots[i]
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
        }
    }

    fn count(&self, key: &[u8]) -> u32 {
        FailTable::slots_of(key).iter().map(|&i| self.slots[i].load(Ordering::Relaxed)).min().unwrap_or(0)
    }
}

/// The node's limits, shared by its shards (atomics only).
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    users: FailTable,
    pairs: FailTable,
    addrs: FailTable,
    /// (device, address) pairs that logged in: the time of the last success.
    known: FailTable,
    sessions: CountTable,
    epoch: Instant,
}

fn user_key(user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 2);
    k.extend_from_slice(b"u:");
    k.extend_from_slice(user.as_bytes());
    k
}

fn pair_key(user: &str, addr: IpAddr) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 20);
    k.extend_from_slice(b"p:");
    k.extend_from_slice(&addr_key(addr));
    k.push(0);
    k.extend_from_slice(user.as_bytes());
    k
}

fn known_key(device: &str, addr: IpAddr) -> Vec<u8> {
    let mut k = Vec::with_capacity(device.len() + 20);
    k.extend_from_slice(b"k:");
    k.extend_from_slice(&addr_key(addr));
    k.push(0);
    k.extend_from_slice(device.as_bytes());
    k
}

fn addr_key(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        // An IPv6 client usually controls its whole /64: count the prefix.
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => a.octets()[..8].to_vec(),
        },
    }
}

impl Limits {
    /// Empty tables with `config`.
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            config,
            users: FailTable::new(),
            pairs: FailTable::new(),
            addrs: FailTable::new(),
            known: FailTable::new(),
            sessions: CountTable::new(),
            epoch: Instant::now(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn blocked_for(&self, free: u32, failures: u32, last_ms: u64, now_ms: u64) -> Option<Duration> {
        let c = &self.config;
        if failures <= free {
            return None;
        }
        let doublings = (failures - free - 1).min(30);
        let backoff = c.auth_backoff_base.saturating_mul(1 << doublings).min(c.auth_backoff_max);
        let until = last_ms.saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX));
        (until > now_ms).then(|| Duration::from_millis(until - now_ms))
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.config.auth_failure_window.as_millis()).unwrap_or(u64::MAX)
    }

    fn found(&self, table: &FailTable, key: &[u8], free: u32, which: BackoffKey) -> Option<Backoff> {
        let now = self.now_ms();
        let (f, last) = table.get(key, now, self.window_ms());
        self.blocked_for(free, f, last, now).map(|d| Backoff { key: which, retry_after: d })
    }

    /// Whether requests from `addr` must wait (failed logins and probes
    /// from it); checked before a request's body is decoded.
    pub fn check_address(&self, addr: Option<IpAddr>) -> Option<Backoff> {
        let a = addr?;
        self.found(&self.addrs, &addr_key(a), self.config.address_free_failures, BackoffKey::Address)
    }

    /// Whether a not yet authenticated request from `addr` claiming `user`
    /// for `device` must wait; checked before any store access.
    pub fn check_auth(&self, user: Option<&str>, device: &str, addr: Option<IpAddr>) -> Option<Backoff> {
        if let Some(b) = self.check_address(addr) {
            return Some(b);
        }
        let user = user?;
        if let Some(a) = addr {
            let pair = pair_key(user, a);
            if let Some(b) = self.found(&self.pairs, &pair, self.config.auth_free_failures, BackoffKey::User)
            {
                return Some(b);
            }
        }
        if self.is_known(device, addr) {
            return None;
        }
        self.found(&self.users, &user_key(user), self.config.user_free_failures, BackoffKey::User)
    }

    /// Whether `device` logged in from `addr` within the known-device TTL.
    fn is_known(&self, device: &str, addr: Option<IpAddr>) -> bool {
        let Some(a) = addr else { return false };
        let ttl = u64::try_from(self.config.known_device_ttl.as_millis()).unwrap_or(u64::MAX);
        self.known.get(&known_key(device, a), self.now_ms(), ttl).0 > 0
    }

    /// Records one failed login of `device` claiming `user` from `addr`.
    pub fn record_auth_failure(&self, user: Option<&str>, device: &str, addr: Option<IpAddr>) {
        let now = self.now_ms();
        let window = self.window_ms();
        if let Some(a) = addr {
            self.addrs.record(&addr_key(a), now, window);
        }
        // A device that logged in from here before: only the address counts.
        if self.is_known(device, addr) {
            return;
        }
        if let Some(u) = user {
            self.users.record(&user_key(u), now, window);
            if let Some(a) = addr {
                self.pairs.record(&pair_key(u, a), now, window);
            }
        }
    }

    /// Records a successful login of `device` from `addr` (it becomes a known device there).
    pub fn record_auth_success(&self, device: &str, addr: Option<IpAddr>) {
        if let Some(a) = addr {
            let ttl = u64::try_from(self.config.known_device_ttl.as_millis()).unwrap_or(u64::MAX);
            self.known.record(&known_key(device, a), self.now_ms(), ttl);
        }
    }

    /// Records a refused session probe (unknown session, wrong secret) from `addr`.
    pub fn record_probe(&self, addr: Option<IpAddr>) {
        if let Some(a) = addr {
            self.addrs.record(&addr_key(a), self.now_ms(), self.window_ms());
        }
    }

    /// Takes one of `user`'s session slots; `false` when the cap is reached.
    pub fn try_begin_session(&self, user: &str) -> bool {
        match self.config.max_sessions_per_user {
            0 => true,
            cap => self.sessions.try_acquire(&user_key(user), cap),
        }
    }

    /// Gives back a slot taken by [`Limits::try_begin_session`].
    pub fn end_session(&self, user: &str) {
        if self.config.max_sessions_per_user > 0 {
            self.sessions.release(&user_key(user));
        }
    }

    /// Sessions `user` holds now (as counted; for tests and listings).
    pub fn sessions_of(&self, user: &str) -> u32 {
        self.sessions.count(&user_key(user))
    }
}

/// The SyncML answer to a session over the per-user cap: SyncHdr status 503
/// ("service unavailable", digest §status codes) and 503 for every command
/// of the message, final, in the request's encoding.
pub fn busy_reply(msg: &crate::model::SyncMl<'_>, encoding: crate::model::Encoding) -> Vec<u8> {
    use crate::engine::reply::Reply;
    use crate::model::Command;
    let msg_id = msg.hdr.msg_id.trim();
    let mut r = Reply::answering(msg);
    r.status(msg_id, "0", "SyncHdr", Some(&msg.hdr.target.loc_uri), Some(&msg.hdr.source.loc_uri), 503);
    for cmd in &msg.body {
        if !matches!(cmd, Command::Status(_)) {
            r.status(msg_id, cmd.cmd_id(), cmd.name(), None, None, 503);
        }
    }
    let mut out = Vec::with_capacity(1024);
    crate::codec::encode(encoding, &r.into_message(true), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(free: u32) -> Limits {
        Limits::new(LimitsConfig {
            auth_free_failures: free,
            user_free_failures: 6,
            address_free_failures: 8,
            auth_backoff_base: Duration::from_secs(10),
            auth_backoff_max: Duration::from_secs(35),
            max_sessions_per_user: 2,
            ..LimitsConfig::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_user_address_pair_backs_off_after_its_free_failures_and_doubles_to_the_max() {
        let l = limits(2);
        let a = ip("192.0.2.7");
        for _ in 0..2 {
            l.record_auth_failure(Some("alice"), "eve-phone", Some(a));
            assert_eq!(l.check_auth(Some("alice"), "eve-phone", Some(a)), None);
        }
        l.record_auth_failure(Some("alice"), "eve-phone", Some(a));
        let b = l.check_auth(Some("alice"), "eve-phone", Some(a)).unwrap();
        assert_eq!(b.key, BackoffKey::User);
        assert!(b.retry_after > Duration::from_secs(9) && b.retry_after <= Duration::from_secs(10));
        l.record_auth_failure(Some("alice"), "eve-phone", Some(a));
        assert!(l.check_auth(Some("alice"), "x", Some(a)).unwrap().retry_after > Duration::from_secs(19));
        // The same user from elsewhere is not held back by that pair.
        assert_eq!(l.check_auth(Some("alice"), "alice-phone", Some(ip("198.51.100.1"))), None);
        // Another user from the attacker's address is not either (address not over its ceiling).
        assert_eq!(l.check_auth(Some("bob"), "x", Some(a)), None);
    }

    #[test]
    fn the_address_ceiling_covers_probes_and_any_user_name() {
        let l = limits(100);
        let a = ip("192.0.2.9");
        for _ in 0..8 {
            l.record_probe(Some(a));
        }
        assert_eq!(l.check_address(Some(a)), None);
        l.record_probe(Some(a));
        assert_eq!(l.check_address(Some(a)).unwrap().key, BackoffKey::Address);
        assert_eq!(l.check_auth(Some("anyone"), "d", Some(a)).unwrap().key, BackoffKey::Address);
        assert_eq!(l.check_address(Some(ip("192.0.2.10"))), None);
        // An IPv6 /64 counts as one address.
        let (v6a, v6b) = (ip("2001:db8::1"), ip("2001:db8::2:3"));
        for _ in 0..9 {
            l.record_probe(Some(v6a));
        }
        assert!(l.check_address(Some(v6b)).is_some());
    }

    #[test]
    fn strangers_cannot_lock_out_a_known_device() {
        let l = limits(100);
        let home = ip("203.0.113.5");
        l.record_auth_success("alice-phone", Some(home));
        // Failed logins for alice from many addresses: the user key backs off ...
        for i in 0..7 {
            l.record_auth_failure(Some("alice"), "x", Some(ip(&format!("198.51.100.{i}"))));
        }
        assert_eq!(l.check_auth(Some("alice"), "new-tablet", Some(home)).unwrap().key, BackoffKey::User);
        // ... but not for her phone at home.
        assert_eq!(l.check_auth(Some("alice"), "alice-phone", Some(home)), None);
        // Her phone's own failures (a stale nonce) count only against the address.
        for _ in 0..5 {
            l.record_auth_failure(Some("alice"), "alice-phone", Some(home));
        }
        assert_eq!(l.check_auth(Some("alice"), "alice-phone", Some(home)), None);
    }

    #[test]
    fn session_cap_counts_and_releases() {
        let l = limits(1);
        assert!(l.try_begin_session("carol"));
        assert!(l.try_begin_session("carol"));
        assert!(!l.try_begin_session("carol"));
        assert_eq!(l.sessions_of("carol"), 2);
        assert!(l.try_begin_session("dave"));
        l.end_session("carol");
        assert!(l.try_begin_session("carol"));
        let unlimited = Limits::new(LimitsConfig { max_sessions_per_user: 0, ..LimitsConfig::default() });
        assert!((0..100).all(|_| unlimited.try_begin_session("x")));
    }

    #[test]
    fn old_failures_are_forgotten() {
        let l = Limits::new(LimitsConfig {
            auth_free_failures: 0,
            auth_failure_window: Duration::from_millis(30),
            ..LimitsConfig::default()
        });
        let a = Some(ip("192.0.2.1"));
        l.record_auth_failure(Some("eve"), "d", a);
        assert!(l.check_auth(Some("eve"), "d", a).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.check_auth(Some("eve"), "d", a), None);
    }
}
