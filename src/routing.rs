//! Routing keys: which shard (and, behind the balancer, which node) owns a session.
//!
//! A session is identified by the pair (device id = `SyncHdr/Source/LocURI`,
//! `SessionID`) because the client-chosen SessionID alone is not unique.
//! The pair hashes to a 64-bit key with **XXH64, seed 0** over
//! `device_id || 0x00 || session_id` (both as UTF-8 bytes). XXH64 has a
//! published specification, so the key is stable across builds, platforms and
//! Rust versions (unlike `std`'s `DefaultHasher`).
//!
//! The server's RespURI carries the key as a token, `?s=<16 lowercase hex>`,
//! so a component that sees only the URL (the balancer) and one that decodes
//! the header (a client that ignores RespURI) compute the same key.
//! Inside a node the owner shard is `jump_hash(key, shards)` (Lamping & Veach).

use xxhash_rust::xxh64::xxh64;

/// The URL query parameter that carries a session token.
pub const TOKEN_PARAM: &str = "s";

/// The 64-bit routing key of a session.
pub fn session_key(device_id: &str, session_id: &str) -> u64 {
    let mut buf = Vec::with_capacity(device_id.len() + 1 + session_id.len());
    buf.extend_from_slice(device_id.as_bytes());
    buf.push(0);
    buf.extend_from_slice(session_id.as_bytes());
    xxh64(&buf, 0)
}

/// The token form of a key: 16 lowercase hex digits.
pub fn token(key: u64) -> String {
    format!("{key:016x}")
}

/// Parses a token back into its key; `None` unless it is exactly 16 hex digits.
pub fn parse_token(token: &str) -> Option<u64> {
    if token.len() != 16 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(token, 16).ok()
}

/// Finds the value of the token parameter in a request target such as
/// `/sync?s=0123456789abcdef&x=y`.
pub fn token_from_target(target: &str) -> Option<&str> {
    let query = target.split_once('?')?.1;
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == TOKEN_PARAM).map(|(_, v)| v)
}

/// Jump consistent hash: maps `key` to a bucket in `0..buckets`, moving only
/// about 1/n of the keys when a bucket is added. `buckets` must be ≥ 1.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1i64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable() {
        // Pinned values: a change here breaks routing across mixed versions.
        assert_eq!(session_key("", ""), xxh64(&[0], 0));
        assert_eq!(token(session_key("dev", "1")), token(session_key("dev", "1")));
        assert_ne!(session_key("dev", "1"), session_key("dev1", ""));
    }

    #[test]
    fn token_round_trip() {
        let k = session_key("sc-harness-client-1", "42");
        assert_eq!(parse_token(&token(k)), Some(k));
        assert_eq!(parse_token("xyz"), None);
        assert_eq!(parse_token("0123456789abcdeg"), None);
    }

    #[test]
    fn token_in_target() {
        assert_eq!(token_from_target("/sync?s=00000000000000ff"), Some("00000000000000ff"));
        assert_eq!(token_from_target("/sync?a=1&s=abc"), Some("abc"));
        assert_eq!(token_from_target("/sync"), None);
    }

    #[test]
    fn jump_hash_moves_few_keys() {
        let n = 10_000u64;
        let moved = (0..n)
            .filter(|&i| {
                let k = xxh64(&i.to_le_bytes(), 0);
                jump_hash(k, 8) != jump_hash(k, 9)
            })
            .count() as f64;
        // About 1/9 of the keys should move when a ninth bucket is added.
        assert!((moved / n as f64 - 1.0 / 9.0).abs() < 0.02, "moved {moved}");
        for i in 0..1000u64 {
            assert!(jump_hash(i, 5) < 5);
        }
    }
}
