//! The load generator's event-driven HTTP/1.1 client: `POST` over one
//! keep-alive tokio `TcpStream` per client (replaced when the authority
//! changes: a RespURI may name another host), responses framed by
//! Content-Length, chunked encoding or connection close. One client belongs
//! to one session slot, a task on a worker's current-thread runtime (see
//! [`super`]): a read or write that has to wait parks the task on the
//! worker's epoll reactor, so a slot costs no thread and a message no
//! context switch of its own.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::http::{ChunkedDecoder, Limits};

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

fn io_error(e: io::Error) -> HttpError {
    match e.kind() {
        io::ErrorKind::TimedOut => HttpError::Timeout,
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

/// Bytes a read asks for at least (the buffer grows when less is free).
const READ_SIZE: usize = 16 * 1024;

/// A response head larger than this is refused (a SyncML server sends a few lines).
const MAX_HEAD: usize = 64 * 1024;

/// Bounds of a chunked response: its trailers like a head; its body is not
/// bounded, as a Content-Length body is not.
const CHUNKED_LIMITS: Limits =
    Limits { max_header_bytes: MAX_HEAD, max_headers: usize::MAX, max_body: usize::MAX };

/// Received bytes: `data[..len]`. The storage stays initialised between
/// reads (only growth zeroes memory), so a read costs no clearing.
struct InBuf {
    data: Vec<u8>,
    len: usize,
}

impl InBuf {
    fn filled(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// Free space for the next read, at least a quarter of [`READ_SIZE`].
    fn spare(&mut self) -> &mut [u8] {
        if self.data.len() - self.len < READ_SIZE / 4 {
            let size = (self.data.len() * 2).max(self.len + READ_SIZE);
            self.data.resize(size, 0);
        }
        &mut self.data[self.len..]
    }

    /// Drops the first `n` bytes (a response); what follows moves to the front.
    fn consume(&mut self, n: usize) {
        self.data.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

struct Conn {
    authority: String,
    stream: TcpStream,
    /// Bytes read past the last response (pipelining is not used, so normally none).
    buf: InBuf,
    used: bool,
}

/// Waits for `ready` (a socket's readiness) at most `timeout`.
async fn within(timeout: Duration, ready: impl Future<Output = io::Result<()>>) -> io::Result<()> {
    match tokio::time::timeout(timeout, ready).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

impl Conn {
    /// Writes all of `data`; each wait for the socket to take more lasts at
    /// most `timeout` (as a blocking socket's send timeout).
    async fn write_all(&self, mut data: &[u8], timeout: Duration) -> io::Result<()> {
        while !data.is_empty() {
            match self.stream.try_write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    within(timeout, self.stream.writable()).await?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads once into the buffer (0 at end of stream); a wait for bytes
    /// lasts at most `timeout` (as a blocking socket's receive timeout).
    async fn read_more(&mut self, timeout: Duration) -> io::Result<usize> {
        loop {
            match self.stream.try_read(self.buf.spare()) {
                Ok(n) => {
                    self.buf.len += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    within(timeout, self.stream.readable()).await?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A keep-alive HTTP client for one session slot (a task on a worker's
/// current-thread tokio runtime).
pub struct HttpClient {
    conn: Option<Conn>,
    timeout: Duration,
    /// The request being sent (reused).
    request: Vec<u8>,
}

impl HttpClient {
    /// A client whose connects, and each wait of its reads and writes, time
    /// out after `timeout`.
    pub fn new(timeout: Duration) -> HttpClient {
        HttpClient { conn: None, timeout, request: Vec::new() }
    }

    async fn connect(&self, authority: &str) -> Result<Conn, HttpError> {
        let fail = |source| HttpError::Connect { addr: authority.to_string(), source };
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "timed out");
        // An IP literal resolves at once; a name goes to tokio's blocking pool.
        let addrs = match tokio::time::timeout(self.timeout, tokio::net::lookup_host(authority)).await {
            Ok(addrs) => addrs.map_err(fail)?,
            Err(_) => return Err(fail(timed_out())),
        };
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true).map_err(fail)?;
                    return Ok(Conn {
                        authority: authority.to_string(),
                        stream,
                        buf: InBuf { data: Vec::new(), len: 0 },
                        used: false,
                    });
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(timed_out()),
            }
        }
        Err(fail(last.unwrap_or_else(|| io::Error::other("no address"))))
    }

    /// POSTs `body`; a request on a reused connection that the server had
    /// closed meanwhile is sent once more on a fresh one.
    pub async fn post(&mut self, url: &str, content_type: &str, body: &[u8]) -> Result<Response, HttpError> {
        let url = parse_url(url)?;
        let mut request = std::mem::take(&mut self.request);
        request.clear();
        request.extend_from_slice(b"POST ");
        request.extend_from_slice(url.path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        request.extend_from_slice(url.host.as_bytes());
        for (name, value) in [("Content-Type", content_type), ("Accept", content_type)] {
            request.extend_from_slice(format!("\r\n{name}: {value}").as_bytes());
        }
        request.extend_from_slice(
            format!("\r\nContent-Length: {}\r\nUser-Agent: shardsync-load\r\n\r\n", body.len()).as_bytes(),
        );
        request.extend_from_slice(body);
        let result = self.send(&url.authority, &request).await;
        self.request = request;
        result
    }

    async fn send(&mut self, authority: &str, request: &[u8]) -> Result<Response, HttpError> {
        for attempt in 0..2 {
            if self.conn.as_ref().is_none_or(|c| c.authority != authority) {
                self.conn = Some(self.connect(authority).await?);
            }
            let Some(conn) = self.conn.as_mut() else { continue };
            let reused = conn.used;
            match exchange(conn, request, self.timeout).await {
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

    /// Gives the client up, keeping its open connection (if any) as a
    /// plain socket: `hold-idle` keeps connections open after the event
    /// loops that made them have ended.
    pub fn into_connection(self) -> Option<std::net::TcpStream> {
        let conn = self.conn?;
        match conn.stream.into_std() {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(authority = %conn.authority, error = %e, "cannot keep a held connection");
                None
            }
        }
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// At the end of the connection.
    Close,
}

/// A parsed response head.
struct Head {
    status: u16,
    /// Bytes of the head (the body starts there).
    len: usize,
    framing: Framing,
    /// The server closes the connection after this response.
    close: bool,
}

/// Parses a response head at the start of `buf` (`None`: incomplete).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HttpError::BadResponse(format!("response head over {MAX_HEAD} bytes")))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::BadResponse(e.to_string())),
    };
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| HttpError::BadResponse(format!("Content-Length {value:?}")))?,
            );
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
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    };
    Ok(Some(Head { status: resp.code.unwrap_or(0), len, framing, close }))
}

/// Reads once more for a body; end of stream there is a bad response.
async fn body_read(
    conn: &mut Conn,
    timeout: Duration,
    wire: &mut usize,
    eof: &str,
) -> Result<(), (HttpError, bool)> {
    match conn.read_more(timeout).await {
        Ok(0) => Err((HttpError::BadResponse(eof.into()), true)),
        Ok(n) => {
            *wire += n;
            Ok(())
        }
        Err(e) => Err((io_error(e), true)),
    }
}

/// Writes the request and reads one response; returns it and whether the
/// connection stays open. Errors carry whether any response byte arrived
/// (a stale keep-alive connection gives none).
async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    timeout: Duration,
) -> Result<(Response, bool), (HttpError, bool)> {
    conn.write_all(request, timeout).await.map_err(|e| (io_error(e), false))?;
    let mut wire = 0usize;
    let head = loop {
        let got = conn.buf.len > 0;
        if got {
            if let Some(head) = parse_head(conn.buf.filled()).map_err(|e| (e, true))? {
                break head;
            }
        }
        match conn.read_more(timeout).await {
            Ok(0) => return Err((HttpError::Io(io::ErrorKind::UnexpectedEof.into()), got)),
            Ok(n) => wire += n,
            Err(e) => return Err((io_error(e), got)),
        }
    };
    let mut pos = head.len;
    let body = match head.framing {
        Framing::Length(len) => {
            let end = pos
                .checked_add(len)
                .ok_or_else(|| (HttpError::BadResponse(format!("Content-Length {len}")), true))?;
            while conn.buf.len < end {
                body_read(conn, timeout, &mut wire, "eof in body").await?;
            }
            pos = end;
            conn.buf.data[head.len..end].to_vec()
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            let mut body = Vec::new();
            loop {
                let (used, done) = decoder
                    .decode(&conn.buf.filled()[pos..], &mut body, &CHUNKED_LIMITS)
                    .map_err(|e| (HttpError::BadResponse(format!("chunked body: {e}")), true))?;
                pos += used;
                if done {
                    break;
                }
                body_read(conn, timeout, &mut wire, "eof in chunked body").await?;
            }
            body
        }
        Framing::Close => {
            loop {
                match conn.read_more(timeout).await {
                    Ok(0) => break,
                    Ok(n) => wire += n,
                    Err(e) => return Err((io_error(e), true)),
                }
            }
            pos = conn.buf.len;
            conn.buf.data[head.len..pos].to_vec()
        }
    };
    conn.buf.consume(pos);
    let keep = head.framing != Framing::Close && !head.close;
    Ok((Response { status: head.status, body, wire_bytes: wire }, keep))
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

    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// What a test server saw of one request: its target and Host header.
    type Seen = (String, String);

    /// Reads one request (head and Content-Length body); `None` at end of stream.
    fn read_request(s: &mut std::net::TcpStream) -> Option<Seen> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(n) = req.parse(&buf).unwrap() {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8(h.value.to_vec()).unwrap())
                };
                let len: usize = header("content-length").unwrap().parse().unwrap();
                if buf.len() >= n + len {
                    return Some((req.path.unwrap().to_string(), header("host").unwrap()));
                }
            }
            let got = s.read(&mut chunk).unwrap();
            if got == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..got]);
        }
    }

    /// A server thread: one connection per script, each reply answering one
    /// request; the connection closes after its script. Returns what it saw.
    fn server(scripts: Vec<Vec<&'static str>>) -> (String, std::thread::JoinHandle<Vec<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for script in scripts {
                let (mut s, _) = listener.accept().unwrap();
                for reply in script {
                    seen.push(read_request(&mut s).unwrap());
                    s.write_all(reply.as_bytes()).unwrap();
                }
            }
            seen
        });
        (addr, handle)
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().unwrap();
        rt.block_on(f)
    }

    const CT: &str = "application/vnd.syncml+xml";

    #[test]
    fn framings_keep_alive_and_resp_uri_to_another_port() {
        let (a, server_a) = server(vec![
            vec![
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                // Chunked, with a chunk extension.
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                // Close-delimited: no length, the body ends with the connection.
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
            ],
            // After the close: a new connection; then RespURI moves to B and back.
            vec!["HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"],
            vec!["HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nback"],
        ]);
        let (b, server_b) = server(vec![vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ntwo!\r\n0\r\n\r\n",
        ]]);
        let responses = block_on(async {
            let mut c = HttpClient::new(Duration::from_secs(5));
            let mut got = Vec::new();
            for url in [
                format!("http://{a}/sync"),
                format!("http://{a}/sync"),
                format!("http://{a}/sync"),
                format!("http://{a}/sync"),
                format!("http://{b}/sync?s=00ff"),
                format!("http://{b}/sync?s=00ff"),
                format!("http://{a}/sync?s=00ff"),
            ] {
                let r = c.post(&url, CT, b"body").await.unwrap();
                got.push((r.status, String::from_utf8(r.body).unwrap(), r.wire_bytes > 0));
            }
            // HTTP/1.0 without keep-alive closed the connection.
            assert!(c.into_connection().is_none());
            got
        });
        let bodies: Vec<(u16, &str)> = responses.iter().map(|(s, b, _)| (*s, b.as_str())).collect();
        assert_eq!(
            bodies,
            [
                (200, "hello"),
                (200, "abcde"),
                (200, "until the end"),
                (201, ""),
                (200, "one"),
                (200, "two!"),
                (200, "back")
            ]
        );
        assert!(responses.iter().all(|r| r.2));
        let seen_a = server_a.join().unwrap();
        let seen_b = server_b.join().unwrap();
        let paths = |seen: &[Seen]| seen.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&seen_a), ["/sync", "/sync", "/sync", "/sync", "/sync?s=00ff"]);
        assert_eq!(paths(&seen_b), ["/sync?s=00ff", "/sync?s=00ff"]);
        assert!(seen_a.iter().all(|(_, host)| *host == a));
        assert!(seen_b.iter().all(|(_, host)| *host == b));
    }

    #[test]
    fn a_stale_keep_alive_connection_is_replaced_once() {
        // The server closes the kept-alive connection after the first reply
        // without saying so; the second request goes on a fresh connection.
        let (a, server_a) = server(vec![
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1"],
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2"],
        ]);
        let bodies = block_on(async {
            let mut c = HttpClient::new(Duration::from_secs(5));
            let url = format!("http://{a}/sync");
            let first = c.post(&url, CT, b"x").await.unwrap().body;
            // Let the server's close arrive first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let second = c.post(&url, CT, b"x").await.unwrap().body;
            (first, second)
        });
        assert_eq!(bodies, (b"1".to_vec(), b"2".to_vec()));
        assert_eq!(server_a.join().unwrap().len(), 2);
    }

    #[test]
    fn errors_have_their_kinds() {
        // No answer within the timeout.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = listener.local_addr().unwrap();
        let kind = block_on(async {
            let mut c = HttpClient::new(Duration::from_millis(200));
            c.post(&format!("http://{silent}/"), CT, b"x").await.unwrap_err().kind()
        });
        assert_eq!(kind, "timeout");
        drop(listener);
        // Nobody listens any more.
        let kind = block_on(async {
            let mut c = HttpClient::new(Duration::from_secs(5));
            c.post(&format!("http://{silent}/"), CT, b"x").await.unwrap_err().kind()
        });
        assert_eq!(kind, "connect");
        // Not HTTP; a chunk size that is not hex; a body cut short.
        for reply in [
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ] {
            let (a, server_a) = server(vec![vec![reply]]);
            let kind = block_on(async {
                let mut c = HttpClient::new(Duration::from_secs(5));
                c.post(&format!("http://{a}/"), CT, b"x").await.unwrap_err().kind()
            });
            assert_eq!(kind, "http_parse", "{reply:?}");
            server_a.join().unwrap();
        }
        let kind = block_on(async {
            HttpClient::new(Duration::from_secs(1)).post("https://x/", CT, b"x").await.unwrap_err().kind()
        });
        assert_eq!(kind, "url");
    }
}
