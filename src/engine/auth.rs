//! SyncML authentication: syncml:auth-basic and syncml:auth-md5 (digest §7).
//!
//! The store keeps `B64(MD5("user:password"))` per user, which is exactly what
//! the DS 1.1/1.2 MD5 digest is built from, so no clear password is needed.
//!
//! Nonces. An md5 credential is only as good as the nonce it was computed
//! over, so an empty nonce is never accepted. Two kinds are issued:
//! - after a successful login, a random nonce (`NextNonce` in the 212), kept
//!   in the device's record for its next session (written only once the
//!   user is authenticated);
//! - in a challenge (401/407), a *window nonce*
//!   `HMAC-SHA-256(server key, device id, time window)`: derived, not
//!   stored, so a failed login writes nothing and any shard or node that
//!   holds the same [`AuthKey`] can check the retry, even when the client
//!   retries under a new SessionID (SyncEvolution does). A window nonce is
//!   accepted during its window and the next one ([`NONCE_WINDOW_SECS`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest, Md5};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::model::{Cred, Data};

/// Length of a challenge window in seconds: a window nonce is accepted in
/// its own window and the next, so for 5 to 10 minutes.
pub const NONCE_WINDOW_SECS: u64 = 300;

/// The server's secret key for window nonces. Every node of a cluster must
/// hold the same key (`auth_key_file`), or a retry that lands on another node
/// is challenged once more.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey([u8; 32]);

impl std::fmt::Debug for AuthKey {
    // The key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

impl AuthKey {
    /// A key from its 32 bytes (e.g. read from the key file).
    pub fn new(bytes: [u8; 32]) -> AuthKey {
        AuthKey(bytes)
    }

    /// A fresh key from the OS's random source (a single node without a key file).
    pub fn random() -> AuthKey {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        AuthKey(bytes)
    }

    /// The window nonce of `device_id` for the window holding `now` (seconds
    /// since the epoch), `back` windows earlier: 16 printable characters
    /// (base64 of 12 MAC bytes; see [`is_printable_nonce`] for why printable).
    pub fn window_nonce(&self, device_id: &str, now: u64, back: u64) -> Vec<u8> {
        let window = (now / NONCE_WINDOW_SECS).saturating_sub(back);
        // A key of any length is valid for HMAC; this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) else {
            return Vec::new();
        };
        mac.update(b"shardsync challenge nonce\0");
        mac.update(&(device_id.len() as u64).to_le_bytes());
        mac.update(device_id.as_bytes());
        mac.update(&window.to_le_bytes());
        let tag = mac.finalize().into_bytes();
        B64.encode(&tag[..12]).into_bytes()
    }
}

/// True if every byte of `nonce` is a base64 character: some clients (the
/// Synthesis engine in SyncEvolution) treat the decoded nonce as a C string,
/// so a NUL byte in a binary nonce breaks their digest.
pub fn is_printable_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/' || *b == b'=')
}

/// The auth scheme names of SyncML.
pub const AUTH_MD5: &str = "syncml:auth-md5";
/// Basic auth scheme name.
pub const AUTH_BASIC: &str = "syncml:auth-basic";

/// `B64(MD5(user ":" password))`.
pub fn md5_user_pass_b64(user: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(user.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    B64.encode(h.finalize())
}

/// The DS 1.1/1.2 MD5 credential: `B64(MD5(B64(MD5(user:pass)) ":" nonce))`,
/// computed from the stored `B64(MD5(user:pass))`.
pub fn md5_cred_from_digest(md5_b64: &str, nonce: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(md5_b64.as_bytes());
    h.update(b":");
    h.update(nonce);
    B64.encode(h.finalize())
}

/// A credential as the client presented it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// syncml:auth-basic: user name and clear password.
    Basic {
        /// User name (from the credential itself).
        user: String,
        /// Password.
        password: String,
    },
    /// syncml:auth-md5: the digest in base64.
    Md5 {
        /// Base64 digest.
        digest_b64: String,
    },
    /// An auth type this server does not support.
    Unsupported(String),
    /// A credential that cannot be decoded (bad base64, empty data).
    Malformed,
}

/// Interprets a `Cred` element.
pub fn parse_cred(cred: &Cred<'_>) -> Presented {
    let scheme = cred.meta.as_ref().and_then(|m| m.type_.as_deref()).unwrap_or(AUTH_BASIC).trim();
    if scheme.eq_ignore_ascii_case(AUTH_BASIC) {
        // Basic is always base64, whatever Format says (digest §7.2).
        let Some(text) = cred.data.as_text() else { return Presented::Malformed };
        let Ok(raw) = B64.decode(text.trim()) else { return Presented::Malformed };
        let Ok(s) = String::from_utf8(raw) else { return Presented::Malformed };
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => {
                Presented::Basic { user: u.to_string(), password: p.to_string() }
            }
            _ => Presented::Malformed,
        }
    } else if scheme.eq_ignore_ascii_case(AUTH_MD5) {
        match &cred.data {
            // Some WBXML clients send the 16 raw digest bytes.
            Data::Binary(b) if b.len() == 16 => Presented::Md5 { digest_b64: B64.encode(b) },
            Data::Text(t) if !t.trim().is_empty() => Presented::Md5 { digest_b64: t.trim().to_string() },
            _ => Presented::Malformed,
        }
    } else {
        Presented::Unsupported(scheme.to_string())
    }
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Base64 of nonce bytes, for `NextNonce`.
pub fn nonce_b64(nonce: &[u8]) -> String {
    B64.encode(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_vectors() {
        let inner = md5_user_pass_b64("alice", "secret");
        assert_eq!(inner, "b2IgWJaLuQdX5sbteeXfgQ==");
        let nonce = b"\x01\x02\x03\x04RustSync";
        assert_eq!(md5_cred_from_digest(&inner, nonce), "hs4Hle6YDoxpHtFkcgpzjw==");
        assert_eq!(md5_cred_from_digest(&inner, b"4711"), "lCGkffwEIn5ahR91IE8zVw==");
        assert_eq!(md5_cred_from_digest(&inner, b""), "lOnT4YjHnGPOubN9TXInoQ==");
    }

    #[test]
    fn window_nonces_are_keyed_per_device_and_window() {
        let key = AuthKey::new([7; 32]);
        let now = 10 * NONCE_WINDOW_SECS + 17;
        let n = key.window_nonce("dev-a", now, 0);
        assert_eq!(n.len(), 16);
        assert!(is_printable_nonce(&n));
        // Same window, same device: the same nonce (any shard can check it).
        assert_eq!(n, key.window_nonce("dev-a", now + 100, 0));
        assert_eq!(n, key.window_nonce("dev-a", now + NONCE_WINDOW_SECS, 1));
        assert_ne!(n, key.window_nonce("dev-a", now + NONCE_WINDOW_SECS, 0));
        assert_ne!(n, key.window_nonce("dev-b", now, 0));
        assert_ne!(n, AuthKey::new([8; 32]).window_nonce("dev-a", now, 0));
        assert_ne!(AuthKey::random(), AuthKey::random());
        assert_eq!(format!("{key:?}"), "AuthKey(..)");
    }

    #[test]
    fn basic_cred() {
        let cred = Cred {
            meta: Some(crate::model::Meta { type_: Some(AUTH_BASIC.into()), ..Default::default() }),
            data: Data::Text("YWxpY2U6c2VjcmV0".into()),
        };
        assert_eq!(parse_cred(&cred), Presented::Basic { user: "alice".into(), password: "secret".into() });
    }
}
