//! The seam between the HTTP layer and the SyncML engine shell.
//!
//! The HTTP layer frames a `POST /sync`, picks the codec from the content
//! type, decodes the body into a [`SyncMl`] that borrows the request buffer,
//! routes it to the owner shard and hands it to that shard's
//! [`SyncService`]. The service answers with the encoded reply (in the
//! request's encoding) or a [`ServiceError`] that maps to an HTTP status.
//! Each shard builds its own service instance, so a service needs no locks
//! and need not be `Send`.

use std::future::Future;
use std::net::SocketAddr;

use crate::model::{Encoding, SyncMl};

/// One decoded SyncML request, as handed to the owner shard's service.
#[derive(Debug)]
pub struct SyncRequest<'a> {
    /// The decoded message; its texts borrow the request body.
    pub message: SyncMl<'a>,
    /// The encoding of the request; the reply uses the same one.
    pub encoding: Encoding,
    /// The session token from the request URL (`?s=`), if any.
    pub token: Option<&'a str>,
    /// The size of the request body in bytes.
    pub body_len: usize,
    /// The raw request body (for resend detection and size accounting).
    pub body: &'a [u8],
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The index of the shard handling the request.
    pub shard: usize,
}

/// The encoded SyncML reply to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// The reply body, encoded in the request's encoding.
    pub body: Vec<u8>,
}

/// Why a request got no SyncML reply; each maps to an HTTP status.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// The URL names a session this server does not know or that expired (HTTP 404).
    #[error("unknown or expired session: {0}")]
    UnknownSession(String),
    /// The message is well-formed XML/WBXML but not a usable SyncML message (HTTP 400).
    #[error("bad SyncML message: {0}")]
    BadMessage(String),
    /// A temporary failure (store unavailable, overload); the client may retry (HTTP 503).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Too many failed authentications: retry after this many seconds
    /// (HTTP 429 with `Retry-After`).
    #[error("too many failed authentications; retry in {0} s")]
    Backoff(u64),
    /// A new session under the key of another user's live session (HTTP 409):
    /// it authenticated, but not as that session's user, so it may not replace it.
    #[error("session in use: {0}")]
    SessionInUse(String),
}

impl ServiceError {
    /// The HTTP status code for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::UnknownSession(_) => 404,
            ServiceError::BadMessage(_) => 400,
            ServiceError::Unavailable(_) => 503,
            ServiceError::Backoff(_) => 429,
            ServiceError::SessionInUse(_) => 409,
        }
    }
}

/// A SyncML service: one instance per shard.
pub trait SyncService: 'static {
    /// Checks a request before its body is decoded, on the shard that will
    /// serve it: `token` is the URL's session token, `peer` the client's
    /// address. An `Err` is the request's answer and the body is never
    /// decoded (so a refused client costs no decoding). The default admits all.
    fn precheck(&self, token: Option<&str>, peer: Option<SocketAddr>) -> Result<(), ServiceError> {
        let _ = (token, peer);
        Ok(())
    }

    /// Handles one decoded message and returns the encoded reply.
    fn handle<'a>(
        &'a self,
        request: SyncRequest<'a>,
    ) -> impl Future<Output = Result<SyncResponse, ServiceError>> + 'a;
}
