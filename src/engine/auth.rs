//! SyncML authentication: syncml:auth-basic and syncml:auth-md5 (digest §7).
//!
//! The store keeps `B64(MD5("user:password"))` per user, which is exactly what
//! the DS 1.1/1.2 MD5 digest is built from, so no clear password is needed.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest, Md5};

use crate::model::{Cred, Data};

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
    fn basic_cred() {
        let cred = Cred {
            meta: Some(crate::model::Meta { type_: Some(AUTH_BASIC.into()), ..Default::default() }),
            data: Data::Text("YWxpY2U6c2VjcmV0".into()),
        };
        assert_eq!(parse_cred(&cred), Presented::Basic { user: "alice".into(), password: "secret".into() });
    }
}
