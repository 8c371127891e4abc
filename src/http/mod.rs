//! HTTP/1.1 framing, independent of sockets and of the shard runtime.
//!
//! [`RequestReader`] is a sans-IO request framer: the caller reads socket bytes
//! into [`RequestReader::spare`], reports them with [`RequestReader::commit`] and
//! pulls complete request heads ([`RequestReader::poll_head`]) and bodies
//! ([`RequestReader::poll_body`]) out of it. It handles keep-alive and
//! pipelining (bytes after one request stay buffered for the next),
//! `Content-Length` and chunked bodies, and enforces [`Limits`].
//! [`response`] writes responses into a byte buffer, and [`stream`] is a
//! connection that is plain TCP or TLS over either runtime's sockets. The
//! server's shards and the balancer both build on these pieces; timeouts are the caller's
//! job because only the caller owns a clock ([`Phase`] tells it which one
//! applies).

pub mod request;
pub mod response;
pub mod stream;

pub use request::{BodyFraming, ChunkedDecoder, Phase, RequestHead, RequestReader};
pub use response::{reason, write_connection_and_end, write_continue, write_response, ConnectionHeader};
pub use stream::ServerStream;

/// Default cap on a request body (4 MiB).
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// Default cap on a request head: request line plus headers (16 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 << 10;
/// Default cap on the number of request headers.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// Size limits the framer enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line, headers, final empty line) in bytes.
    pub max_header_bytes: usize,
    /// Most headers in one request (or trailer section).
    pub max_headers: usize,
    /// Largest request body in bytes (after removing chunked framing).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Why a request could not be framed. After any of these the connection's
/// byte stream is out of sync, so the caller answers [`HttpError::status`]
/// and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request head exceeds [`Limits::max_header_bytes`] or [`Limits::max_headers`] (431).
    #[error("request header fields too large")]
    HeaderTooLarge,
    /// The body exceeds [`Limits::max_body`] (413).
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The request is not valid HTTP/1.x (400).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A transfer coding other than `chunked` (501).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// The peer closed the connection in the middle of a request (no answer possible).
    #[error("connection closed in the middle of a request")]
    UnexpectedEof,
}

impl HttpError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeaderTooLarge => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::Malformed(_) | HttpError::UnexpectedEof => 400,
            HttpError::UnsupportedTransferCoding => 501,
        }
    }
}
