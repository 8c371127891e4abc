//! A small blocking HTTP/1.1 client for the load generator: `POST` over
//! keep-alive `TcpStream`s, one connection per host, responses framed by
//! Content-Length, chunked encoding or connection close. One client belongs
//! to one worker thread; plain blocking I/O keeps the generator's own CPU
//! cost low and its latency figures free of scheduler effects.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host[:port]/path`.
    #[error("unsupported URL {0:?} (only http://host[:port]/path)")]
    Url(String),
    /// Connecting failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The read or write timed out.
    #[error("timeout")]
    Timeout,
    /// The connection failed or closed mid-response.
    #[error("I/O: {0}")]
    Io(std::io::Error),
    /// The response is not valid HTTP/1.x.
    #[error("bad response: {0}")]
    BadResponse(String),
}

impl HttpError {
    /// A short name for error counts.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Url(_) => "url",
            HttpError::Connect { .. } => "connect",
            HttpError::Timeout => "timeout",
            HttpError::Io(_) => "io",
            HttpError::BadResponse(_) => "http_parse",
        }
    }
}

fn io_error(e: std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout,
        _ => HttpError::Io(e),
    }
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host:port` to connect to.
    pub authority: String,
    /// The `Host` header value.
    pub host: String,
    /// Path and query.
    pub path: String,
}

/// Parses `http://host[:port][/path][?query]`.
pub fn parse_url(url: &str) -> Result<Url, HttpError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.get(..7).filter(|p| p.eq_ignore_ascii_case("http://")).map(|_| &url[7..]))
        .ok_or_else(|| HttpError::Url(url.to_string()))?;
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if host.is_empty() {
        return Err(HttpError::Url(url.to_string()));
    }
    let has_port = match host.rfind(':') {
        Some(i) => !host[i..].contains(']'),
        None => false,
    };
    let authority = if has_port { host.to_string() } else { format!("{host}:80") };
    Ok(Url { authority, host: host.to_string(), path })
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// Bytes read from the socket for it (head and body).
    pub wire_bytes: usize,
}

struct Conn {
    authority: String,
    stream: TcpStream,
    /// Bytes read past the last response (pipelining is not used, so normally none).
    buf: Vec<u8>,
    used: bool,
}

/// A keep-alive HTTP client for one thread.
pub struct HttpClient {
    conn: Option<Conn>,
    timeout: Duration,
}

impl HttpClient {
    /// A client whose reads, writes and connects time out after `timeout`.
    pub fn new(timeout: Duration) -> HttpClient {
        HttpClient { conn: None, timeout }
    }

    fn connect(&self, authority: &str) -> Result<Conn, HttpError> {
        let fail = |source| HttpError::Connect { addr: authority.to_string(), source };
        let addrs = authority.to_socket_addrs().map_err(fail)?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(fail)?;
                    stream.set_read_timeout(Some(self.timeout)).map_err(fail)?;
                    stream.set_write_timeout(Some(self.timeout)).map_err(fail)?;
                    return Ok(Conn {
                        authority: authority.to_string(),
                        stream,
                        buf: Vec::new(),
                        used: false,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(fail(last.unwrap_or_else(|| std::io::Error::other("no address"))))
    }

    /// POSTs `body`; a request on a reused connection that the server had
    /// closed meanwhile is sent once more on a fresh one.
    pub fn post(&mut self, url: &str, content_type: &str, body: &[u8]) -> Result<Response, HttpError> {
        let url = parse_url(url)?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nAccept: {content_type}\r\n\
             Content-Length: {}\r\nUser-Agent: shardsync-load\r\n\r\n",
            url.path,
            url.host,
            body.len()
        )
        .into_bytes();
        head.extend_from_slice(body);
        for attempt in 0..2 {
            if self.conn.as_ref().is_none_or(|c| c.authority != url.authority) {
                self.conn = Some(self.connect(&url.authority)?);
            }
            let Some(conn) = self.conn.as_mut() else { continue };
            let reused = conn.used;
            match exchange(conn, &head) {
                Ok((resp, keep)) => {
                    conn.used = true;
                    if !keep {
                        self.conn = None;
                    }
                    return Ok(resp);
                }
                Err((e, got_bytes)) => {
                    self.conn = None;
                    let stale = reused && !got_bytes && !matches!(e, HttpError::Timeout);
                    if !(stale && attempt == 0) {
                        return Err(e);
                    }
                }
            }
        }
        Err(HttpError::BadResponse("connection closed twice".into()))
    }

    /// Drops the connection (a held session's client keeps it open).
    pub fn close(&mut self) {
        self.conn = None;
    }
}

/// Writes the request and reads one response; the flag says whether any
/// response byte arrived (a stale keep-alive connection gives none).
fn exchange(conn: &mut Conn, request: &[u8]) -> Result<(Response, bool), (HttpError, bool)> {
    conn.stream.write_all(request).map_err(|e| (io_error(e), false))?;
    let mut buf = std::mem::take(&mut conn.buf);
    let mut chunk = [0u8; 16 * 1024];
    let mut wire = 0usize;
    // Head.
    let (status, head_len, length, chunked, close) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let mut length = None;
                let mut chunked = false;
                let mut close = resp.version == Some(0);
                for h in resp.headers.iter() {
                    let value = String::from_utf8_lossy(h.value);
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = Some(value.trim().parse::<usize>().map_err(|_| {
                            (HttpError::BadResponse(format!("Content-Length {value:?}")), true)
                        })?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = value.to_ascii_lowercase().contains("chunked");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        let v = value.to_ascii_lowercase();
                        if v.contains("close") {
                            close = true;
                        } else if v.contains("keep-alive") {
                            close = false;
                        }
                    }
                }
                break (status, n, length, chunked, close);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err((HttpError::BadResponse(e.to_string()), true)),
        }
        let n = conn.stream.read(&mut chunk).map_err(|e| (io_error(e), !buf.is_empty()))?;
        if n == 0 {
            let got = !buf.is_empty();
            return Err((HttpError::Io(std::io::ErrorKind::UnexpectedEof.into()), got));
        }
        wire += n;
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut rest = buf.split_off(head_len);
    let mut read_more =
        |rest: &mut Vec<u8>, stream: &mut TcpStream, wire: &mut usize| -> Result<bool, HttpError> {
            let n = stream.read(&mut chunk).map_err(io_error)?;
            *wire += n;
            rest.extend_from_slice(&chunk[..n]);
            Ok(n > 0)
        };
    let body = if chunked {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let Some(eol) = find_crlf(&rest[pos..]) else {
                if !read_more(&mut rest, &mut conn.stream, &mut wire).map_err(|e| (e, true))? {
                    return Err((HttpError::BadResponse("eof in chunked body".into()), true));
                }
                continue;
            };
            let line = String::from_utf8_lossy(&rest[pos..pos + eol]).to_string();
            let size_text = line.split(';').next().unwrap_or("").trim().to_string();
            let size = usize::from_str_radix(&size_text, 16)
                .map_err(|_| (HttpError::BadResponse(format!("chunk size {line:?}")), true))?;
            let need = pos + eol + 2 + size + 2;
            while rest.len() < need {
                if !read_more(&mut rest, &mut conn.stream, &mut wire).map_err(|e| (e, true))? {
                    return Err((HttpError::BadResponse("eof in chunk".into()), true));
                }
            }
            if size == 0 {
                // No trailers are expected from a SyncML server.
                pos = need;
                break;
            }
            body.extend_from_slice(&rest[pos + eol + 2..pos + eol + 2 + size]);
            pos = need;
        }
        conn.buf = rest.split_off(pos);
        body
    } else if let Some(len) = length {
        while rest.len() < len {
            if !read_more(&mut rest, &mut conn.stream, &mut wire).map_err(|e| (e, true))? {
                return Err((HttpError::BadResponse("eof in body".into()), true));
            }
        }
        conn.buf = rest.split_off(len);
        rest
    } else {
        while read_more(&mut rest, &mut conn.stream, &mut wire).map_err(|e| (e, true))? {}
        return Ok((Response { status, body: rest, wire_bytes: wire }, false));
    };
    Ok((Response { status, body, wire_bytes: wire }, !close))
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/sync?s=00ff").unwrap();
        assert_eq!(
            u,
            Url {
                authority: "127.0.0.1:8080".into(),
                host: "127.0.0.1:8080".into(),
                path: "/sync?s=00ff".into()
            }
        );
        let u = parse_url("http://example.org?x=1").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("example.org:80", "/?x=1"));
        assert_eq!(parse_url("http://[::1]:9/a").unwrap().authority, "[::1]:9");
        assert!(parse_url("https://example.org/").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn chunked_and_keep_alive_against_a_local_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            for reply in [
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_string(),
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    .to_string(),
            ] {
                loop {
                    let n = s.read(&mut buf).unwrap();
                    seen.extend_from_slice(&buf[..n]);
                    if seen.ends_with(b"body") {
                        break;
                    }
                }
                seen.clear();
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        let mut c = HttpClient::new(Duration::from_secs(5));
        let url = format!("http://{addr}/sync");
        let r = c.post(&url, "application/vnd.syncml+xml", b"body").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = c.post(&url, "application/vnd.syncml+xml", b"body").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        server.join().unwrap();
    }
}
