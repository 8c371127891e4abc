//! Writes HTTP/1.1 responses into a byte buffer (always with `Content-Length`).

use std::io::Write as _;

/// What `Connection` header a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// None: the protocol default applies (HTTP/1.1 keep-alive).
    Default,
    /// `Connection: keep-alive` (needed for HTTP/1.0 clients that asked for it).
    KeepAlive,
    /// `Connection: close`: the server closes after this response.
    Close,
}

impl ConnectionHeader {
    /// The header for a response to a request of `minor_version` that does
    /// (`keep_alive`) or does not stay open.
    pub fn for_request(minor_version: u8, keep_alive: bool) -> ConnectionHeader {
        match (keep_alive, minor_version) {
            (false, _) => ConnectionHeader::Close,
            (true, 0) => ConnectionHeader::KeepAlive,
            (true, _) => ConnectionHeader::Default,
        }
    }
}

/// The reason phrase of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Appends the `Connection` header the answer needs, if any, and the blank
/// line that ends the head.
pub fn write_connection_and_end(out: &mut Vec<u8>, connection: ConnectionHeader) {
    match connection {
        ConnectionHeader::Default => {}
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnectionHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends an interim `100 Continue` response.
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

/// Appends a complete response: status line, `Content-Length`, the optional
/// `Content-Type`, the `extra` headers, the connection header and the body.
/// With `head_only` (a `HEAD` request) the body is left out but
/// `Content-Length` still gives its size.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
    connection: ConnectionHeader,
    body: &[u8],
    head_only: bool,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\n", reason(status), body.len());
    if let Some(ct) = content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    write_connection_and_end(out, connection);
    if !head_only {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_response() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            405,
            Some("text/plain"),
            &[("Allow", "POST")],
            ConnectionHeader::Close,
            b"no\n",
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\
              Allow: POST\r\nConnection: close\r\n\r\nno\n"
        );
        out.clear();
        write_response(&mut out, 200, None, &[], ConnectionHeader::for_request(0, true), b"ok", true);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n");
    }
}
