//! Routing keys: which shard (and, behind the balancer, which node) owns a session.
//!
//! A session is identified by the pair (device id = `SyncHdr/Source/LocURI`,
//! `SessionID`) because the client-chosen SessionID alone is not unique.
//! The pair hashes to a 64-bit key with **XXH64, seed 0** over
//! `device_id || 0x00 || session_id` (both as UTF-8 bytes). XXH64 has a
//! published specification, so the key is stable across builds, platforms and
//! Rust versions (unlike `std`'s `DefaultHasher`).
//!
//! The server's RespURI carries the key as a token,
//! `?s=<16 lowercase hex key>.<32 lowercase hex secret>`, so a component that
//! sees only the URL (the balancer) and one that decodes the header (a client
//! that ignores RespURI) compute the same key. The key routes; it is not a
//! secret (anyone can hash a device id and SessionID). The second part is the
//! session's [`SessionSecret`]: 128 random bits that prove a request belongs to
//! the client that opened the session (see `engine::endpoint`). A token of the
//! key alone (older builds) still routes, but proves nothing.
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
    let mut out = String::with_capacity(16);
    push_hex(&mut out, &key.to_be_bytes());
    out
}

/// The token of a session with its secret: `<key>.<secret>` (16 + 1 + 32 hex digits).
pub fn session_token(key: u64, secret: &SessionSecret) -> String {
    let mut out = String::with_capacity(49);
    session_token_into(&mut out, key, secret);
    out
}

/// Appends the token of a session with its secret to `out`.
pub fn session_token_into(out: &mut String, key: u64, secret: &SessionSecret) {
    push_hex(out, &key.to_be_bytes());
    out.push('.');
    push_hex(out, &secret.0);
}

/// Lower-case hex of `bytes`, appended. By hand: it runs for every reply's
/// RespURI, and `format!("{:02x}")` per byte cost about a microsecond there
/// (measured in the engine bench's empty two-way session).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Parses a token's routing key: the 16 hex digits of `<key>` or of
/// `<key>.<secret>`; `None` for anything else. The secret is not checked here.
pub fn parse_token(token: &str) -> Option<u64> {
    parse_session_token(token).map(|t| t.key)
}

/// A session token as read from a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionToken {
    /// The routing key.
    pub key: u64,
    /// The session's secret, when the token carries one.
    pub secret: Option<SessionSecret>,
}

/// Parses `<16 hex>` or `<16 hex>.<32 hex>`; `None` for any other shape.
pub fn parse_session_token(token: &str) -> Option<SessionToken> {
    let (key, secret) = match token.split_once('.') {
        Some((k, s)) => (k, Some(SessionSecret::from_hex(s)?)),
        None => (token, None),
    };
    if key.len() != 16 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(SessionToken { key: u64::from_str_radix(key, 16).ok()?, secret })
}

/// A session's secret: 128 bits from the OS's random source, drawn when the
/// session starts and kept in its stored state. Compared in constant time.
#[derive(Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SessionSecret(pub [u8; 16]);

impl std::fmt::Debug for SessionSecret {
    // Never print the secret itself (it would end up in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

impl SessionSecret {
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(32);
        push_hex(&mut out, &self.0);
        out
    }

    /// Parses exactly 32 hex digits.
    pub fn from_hex(s: &str) -> Option<SessionSecret> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            *o = (hi * 16 + lo) as u8;
        }
        Some(SessionSecret(out))
    }

    /// Compares in time independent of where the two differ.
    pub fn ct_eq(&self, other: &SessionSecret) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
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
    fn hex_by_hand_is_what_format_writes() {
        for key in [0u64, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
            let secret = SessionSecret::from_hex("00ff10a05b6c7d8e9fa0b1c2d3e4f5a6").expect("hex");
            assert_eq!(token(key), format!("{key:016x}"));
            assert_eq!(session_token(key, &secret), format!("{key:016x}.00ff10a05b6c7d8e9fa0b1c2d3e4f5a6"));
            assert_eq!(SessionSecret::from_hex(&secret.to_hex()), Some(secret));
        }
    }

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
        let secret = SessionSecret([0xa5; 16]);
        let tok = session_token(k, &secret);
        assert_eq!(tok.len(), 49);
        assert_eq!(parse_token(&tok), Some(k));
        let parsed = parse_session_token(&tok).unwrap();
        assert_eq!(parsed.key, k);
        assert!(parsed.secret.unwrap().ct_eq(&secret));
        assert!(!parsed.secret.unwrap().ct_eq(&SessionSecret([0xa4; 16])));
        assert_eq!(parse_session_token(&token(k)).unwrap().secret, None);
        // A malformed secret makes the whole token invalid.
        assert_eq!(parse_token(&format!("{}.{}", token(k), "zz")), None);
        assert_eq!(parse_token(&format!("{}.", token(k))), None);
        assert_eq!(format!("{secret:?}"), "SessionSecret(..)");
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
