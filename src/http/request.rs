//! The sans-IO request framer: heads with `httparse`, bodies by
//! `Content-Length` or chunked coding, pipelining by keeping surplus bytes.

use std::ops::Range;

use super::{HttpError, Limits};

/// Smallest read the framer offers the socket while a request arrives.
const READ_CHUNK: usize = 16 << 10;
/// The read offered to an idle connection: a typical request head and small
/// body fit in it, and an idle keep-alive connection holds no more.
const IDLE_READ_CHUNK: usize = 4 << 10;
/// Largest single read the framer offers while a big body arrives.
const MAX_READ_CHUNK: usize = 256 << 10;
/// A buffer grown past this for a big body is given back after the request.
const SHRINK_ABOVE: usize = 64 << 10;
/// Hard cap on headers parsed per request (stack array size for httparse).
const MAX_HEADERS_CAP: usize = 128;
/// Longest chunk-size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// Which read deadline applies to the connection right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests, nothing buffered: the idle keep-alive timeout applies.
    Idle,
    /// Part of a request head has arrived: the header timeout applies.
    Head,
    /// The head is complete and the body is arriving: the body timeout applies.
    Body,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, or zero).
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head. It owns a copy of the head bytes; accessors borrow from it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    raw: Vec<u8>,
    method: Range<usize>,
    target: Range<usize>,
    minor_version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    expect_other: bool,
}

impl RequestHead {
    /// The request method, e.g. `POST` (case-sensitive per RFC 9110).
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.raw[self.method.clone()]).unwrap_or("")
    }

    /// The request target as sent, e.g. `/sync?s=0123456789abcdef`.
    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.raw[self.target.clone()]).unwrap_or("")
    }

    /// The path part of the target (before `?`); for an absolute-form
    /// target (`http://host/sync`, RFC 9112 §3.2.2) the path after the authority.
    pub fn path(&self) -> &str {
        let mut t = self.target();
        if let Some(rest) = t.strip_prefix("http://").or_else(|| t.strip_prefix("https://")) {
            t = rest.find('/').map_or("/", |i| &rest[i..]);
        }
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The HTTP minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Every header in order, as (name, raw value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers
            .iter()
            .map(|(n, v)| (std::str::from_utf8(&self.raw[n.clone()]).unwrap_or(""), &self.raw[v.clone()]))
    }

    /// The `Content-Type` value, if present and valid UTF-8.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type").and_then(|v| std::str::from_utf8(v).ok())
    }

    /// How the body is delimited.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Whether the connection may stay open after this request
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the client sent `Expect: 100-continue` (HTTP/1.1 only).
    pub fn expects_continue(&self) -> bool {
        self.expect_continue
    }

    /// Whether the client sent an `Expect` value other than `100-continue` (answer 417).
    pub fn has_unknown_expectation(&self) -> bool {
        self.expect_other
    }

    /// The head bytes exactly as received (for a proxy that forwards them).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for (more of) a head.
    Head,
    /// A head was returned; the body (possibly empty) is next.
    Length(usize),
    Chunked(ChunkedDecoder, Vec<u8>),
}

/// The request framer of one connection. See the [module docs](super).
#[derive(Debug)]
pub struct RequestReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Where the search for the end of the head resumes (avoids re-scanning
    /// a head that trickles in byte by byte).
    scan: usize,
    limits: Limits,
    state: State,
}

impl RequestReader {
    /// A framer with the given limits.
    pub fn new(limits: Limits) -> RequestReader {
        RequestReader { buf: Vec::new(), start: 0, end: 0, scan: 0, limits, state: State::Head }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Which timeout applies now.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Head if self.start == self.end => Phase::Idle,
            State::Head => Phase::Head,
            _ => Phase::Body,
        }
    }

    /// Bytes received but not yet consumed by a request.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Space to read socket bytes into; report how many arrived with [`commit`](Self::commit).
    pub fn spare(&mut self) -> &mut [u8] {
        let idle = matches!(self.state, State::Head) && self.start == self.end;
        let want = match &self.state {
            State::Length(len) => len.saturating_sub(self.buffered()).clamp(READ_CHUNK, MAX_READ_CHUNK),
            _ if idle => IDLE_READ_CHUNK,
            _ => READ_CHUNK,
        };
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scan = 0;
            if idle && self.buf.len() > IDLE_READ_CHUNK {
                // Waiting for the next request: keep a small buffer only
                // (idle keep-alive connections are most of a server's connections).
                self.buf = Vec::new();
            }
        }
        if self.buf.len() - self.end < want {
            if self.start > 0 {
                // Move the unconsumed tail to the front before growing.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scan -= self.start.min(self.scan);
                self.start = 0;
            }
            if self.buf.len() - self.end < want {
                self.buf.resize(self.end + want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into [`spare`](Self::spare).
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Call when the peer closed its side: an error if a request was cut short.
    pub fn eof(&self) -> Result<(), HttpError> {
        match self.phase() {
            Phase::Idle => Ok(()),
            _ => Err(HttpError::UnexpectedEof),
        }
    }

    /// Parses the next request head if it is complete. After `Some`, call
    /// [`poll_body`](Self::poll_body) (even for a request without a body)
    /// until it yields the body.
    pub fn poll_head(&mut self) -> Result<Option<RequestHead>, HttpError> {
        if !matches!(self.state, State::Head) {
            return Err(HttpError::Malformed("request head polled while a body is pending"));
        }
        // RFC 9112 §2.2: ignore empty lines before a request line.
        while self.start < self.end && matches!(self.buf[self.start], b'\r' | b'\n') {
            self.start += 1;
        }
        let from = self.scan.max(self.start);
        let Some(head_end) = find_head_end(&self.buf[..self.end], self.start, from) else {
            self.scan = self.end.saturating_sub(2).max(self.start);
            if self.end - self.start >= self.limits.max_header_bytes {
                return Err(HttpError::HeaderTooLarge);
            }
            return Ok(None);
        };
        if head_end - self.start > self.limits.max_header_bytes {
            return Err(HttpError::HeaderTooLarge);
        }
        let head = self.parse_head(head_end)?;
        self.start = head_end;
        self.scan = head_end;
        self.state = match head.framing {
            BodyFraming::None => State::Length(0),
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::Chunked(ChunkedDecoder::default(), Vec::new()),
        };
        Ok(Some(head))
    }

    /// Returns the complete body of the request whose head was just returned,
    /// or `None` until enough bytes have arrived.
    pub fn poll_body(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        let body = match &mut self.state {
            State::Head => return Err(HttpError::Malformed("request body polled before its head")),
            State::Length(len) => {
                let len = *len;
                if self.end - self.start < len {
                    return Ok(None);
                }
                let body = self.buf[self.start..self.start + len].to_vec();
                self.start += len;
                body
            }
            State::Chunked(dec, body) => {
                let (used, done) = dec.decode(&self.buf[self.start..self.end], body, &self.limits)?;
                self.start += used;
                if !done {
                    return Ok(None);
                }
                std::mem::take(body)
            }
        };
        self.state = State::Head;
        self.scan = self.start;
        if self.start == self.end && self.buf.len() > SHRINK_ABOVE {
            // Give back the memory a big body needed; idle connections stay small.
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.scan = 0;
        }
        Ok(Some(body))
    }

    fn parse_head(&self, head_end: usize) -> Result<RequestHead, HttpError> {
        let bytes = &self.buf[self.start..head_end];
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
        let n = self.limits.max_headers.clamp(1, MAX_HEADERS_CAP);
        let mut req = httparse::Request::new(&mut storage[..n]);
        match req.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(HttpError::Malformed("incomplete request head")),
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeaderTooLarge),
            Err(httparse::Error::Version) => return Err(HttpError::Malformed("unsupported HTTP version")),
            Err(httparse::Error::Token) => return Err(HttpError::Malformed("invalid method or token")),
            Err(httparse::Error::HeaderName) => return Err(HttpError::Malformed("invalid header name")),
            Err(httparse::Error::HeaderValue) => return Err(HttpError::Malformed("invalid header value")),
            Err(_) => return Err(HttpError::Malformed("invalid request line")),
        }
        let base = bytes.as_ptr() as usize;
        // httparse hands out sub-slices of `bytes`; their offsets index our copy.
        let range = |s: &[u8]| {
            let off = s.as_ptr() as usize - base;
            off..off + s.len()
        };
        let method = range(req.method.unwrap_or("").as_bytes());
        let target = range(req.path.unwrap_or("").as_bytes());
        let minor_version = req.version.unwrap_or(1);
        let mut headers = Vec::with_capacity(req.headers.len());
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut te_seen = false;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut expect_continue = false;
        let mut expect_other = false;
        for h in req.headers.iter() {
            headers.push((range(h.name.as_bytes()), range(h.value)));
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let v = parse_content_length(h.value)?;
                if content_length.is_some_and(|c| c != v) {
                    return Err(HttpError::Malformed("conflicting Content-Length headers"));
                }
                content_length = Some(v);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                te_seen = true;
                for coding in split_list(h.value) {
                    // Only a single `chunked` coding is supported; anything
                    // else (gzip, chunked twice) is refused.
                    if coding.eq_ignore_ascii_case(b"chunked") && !chunked {
                        chunked = true;
                    } else {
                        return Err(HttpError::UnsupportedTransferCoding);
                    }
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for token in split_list(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") {
                if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    expect_other = true;
                }
            }
        }
        if te_seen && !chunked {
            return Err(HttpError::Malformed("empty Transfer-Encoding"));
        }
        if chunked && content_length.is_some() {
            // Both framings at once is the classic request-smuggling vector.
            return Err(HttpError::Malformed("both Transfer-Encoding and Content-Length"));
        }
        let framing = match (chunked, content_length) {
            (true, _) => BodyFraming::Chunked,
            (false, Some(0)) | (false, None) => BodyFraming::None,
            (false, Some(n)) if n > self.limits.max_body => {
                return Err(HttpError::BodyTooLarge { limit: self.limits.max_body })
            }
            (false, Some(n)) => BodyFraming::Length(n),
        };
        let keep_alive = if minor_version == 0 { conn_keep_alive && !conn_close } else { !conn_close };
        Ok(RequestHead {
            raw: bytes.to_vec(),
            method,
            target,
            minor_version,
            headers,
            framing,
            keep_alive,
            // HTTP/1.0 clients do not know 100 Continue (RFC 9110 §10.1.1).
            expect_continue: expect_continue && minor_version >= 1,
            expect_other,
        })
    }
}

/// Finds the end of a head (`\n\r\n` or `\n\n`) in `buf[start..]`, searching
/// from `from`; returns the index just past it.
fn find_head_end(buf: &[u8], start: usize, from: usize) -> Option<usize> {
    let mut i = from.max(start);
    while i < buf.len() {
        let nl = buf[i..].iter().position(|&b| b == b'\n')? + i;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            Some(b'\r') if nl + 2 >= buf.len() => return None,
            None => return None,
            _ => i = nl + 1,
        }
    }
    None
}

fn parse_content_length(v: &[u8]) -> Result<usize, HttpError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::Malformed("invalid Content-Length"));
    }
    Ok(v.iter().fold(0usize, |acc, &d| acc.saturating_mul(10).saturating_add(usize::from(d - b'0'))))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &v[start..end]
}

fn split_list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `ext` once past it (extensions are ignored).
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Reading a trailer line; `len` bytes of it so far.
    Trailer {
        len: usize,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// Incremental decoder of the chunked transfer coding (RFC 9112 §7.1):
/// request bodies here, and the load generator's response bodies.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line_len: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size { size: 0, digits: 0, ext: false },
            line_len: 0,
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Consumes bytes of `input`, appending chunk data to `body`. Returns how
    /// many bytes were used and whether the body is complete; stops right
    /// after the final CRLF so a pipelined request stays in the buffer.
    /// `limits` bounds the body (`max_body`) and the trailer section
    /// (`max_header_bytes`).
    pub fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        limits: &Limits,
    ) -> Result<(usize, bool), HttpError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Size { size, digits, ext } => {
                    let b = input[i];
                    i += 1;
                    self.line_len += 1;
                    if self.line_len > MAX_CHUNK_LINE {
                        return Err(HttpError::Malformed("chunk size line too long"));
                    }
                    self.state = match b {
                        b'\r' if digits > 0 => ChunkState::SizeLf { size },
                        b'\r' | b'\n' => return Err(HttpError::Malformed("invalid chunk size line")),
                        _ if ext => ChunkState::Size { size, digits, ext },
                        b';' | b' ' | b'\t' if digits > 0 => ChunkState::Size { size, digits, ext: true },
                        _ => {
                            let v = hex_value(b).ok_or(HttpError::Malformed("invalid chunk size"))?;
                            if digits >= 15 {
                                return Err(HttpError::Malformed("chunk size too large"));
                            }
                            ChunkState::Size { size: size * 16 + u64::from(v), digits: digits + 1, ext }
                        }
                    };
                }
                ChunkState::SizeLf { size } => {
                    if input[i] != b'\n' {
                        return Err(HttpError::Malformed("invalid chunk size line"));
                    }
                    i += 1;
                    self.line_len = 0;
                    if size == 0 {
                        self.state = ChunkState::Trailer { len: 0 };
                    } else {
                        if size > (limits.max_body - body.len().min(limits.max_body)) as u64 {
                            return Err(HttpError::BodyTooLarge { limit: limits.max_body });
                        }
                        self.state = ChunkState::Data { remaining: size };
                    }
                }
                ChunkState::Data { remaining } => {
                    let n = (input.len() - i).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    body.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let remaining = remaining - n as u64;
                    self.state =
                        if remaining == 0 { ChunkState::DataCr } else { ChunkState::Data { remaining } };
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    let (want, next) = if self.state == ChunkState::DataCr {
                        (b'\r', ChunkState::DataLf)
                    } else {
                        (b'\n', ChunkState::Size { size: 0, digits: 0, ext: false })
                    };
                    if input[i] != want {
                        return Err(HttpError::Malformed("missing CRLF after chunk data"));
                    }
                    i += 1;
                    self.state = next;
                }
                ChunkState::Trailer { len } => {
                    let b = input[i];
                    i += 1;
                    self.state = match b {
                        b'\r' => ChunkState::TrailerLf { empty: len == 0 },
                        b'\n' => return Err(HttpError::Malformed("bare LF in trailer")),
                        _ => {
                            self.trailer_bytes += 1;
                            if self.trailer_bytes > limits.max_header_bytes {
                                return Err(HttpError::HeaderTooLarge);
                            }
                            ChunkState::Trailer { len: len + 1 }
                        }
                    };
                }
                ChunkState::TrailerLf { empty } => {
                    if input[i] != b'\n' {
                        return Err(HttpError::Malformed("invalid trailer line"));
                    }
                    i += 1;
                    if empty {
                        self.state = ChunkState::Done;
                        return Ok((i, true));
                    }
                    self.state = ChunkState::Trailer { len: 0 };
                }
                ChunkState::Done => return Ok((i, true)),
            }
        }
        Ok((i, self.state == ChunkState::Done))
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(r: &mut RequestReader, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = r.spare();
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            r.commit(n);
            rest = &rest[n..];
        }
    }

    /// Feeds all bytes at once, then reads every complete request.
    fn requests(limits: Limits, bytes: &[u8]) -> Result<Vec<(RequestHead, Vec<u8>)>, HttpError> {
        let mut r = RequestReader::new(limits);
        feed(&mut r, bytes);
        let mut out = Vec::new();
        while let Some(head) = r.poll_head()? {
            let body = r.poll_body()?.ok_or(HttpError::UnexpectedEof)?;
            out.push((head, body));
        }
        Ok(out)
    }

    const POST: &[u8] = b"POST /sync?s=00000000000000ff HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/vnd.syncml+xml; charset=UTF-8\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn simple_post() {
        let reqs = requests(Limits::default(), POST).unwrap();
        assert_eq!(reqs.len(), 1);
        let (h, body) = &reqs[0];
        assert_eq!(h.method(), "POST");
        assert_eq!(h.target(), "/sync?s=00000000000000ff");
        assert_eq!(h.path(), "/sync");
        assert_eq!(h.minor_version(), 1);
        assert_eq!(h.content_type(), Some("application/vnd.syncml+xml; charset=UTF-8"));
        assert_eq!(h.framing(), BodyFraming::Length(5));
        assert!(h.keep_alive());
        assert_eq!(body, b"hello");
    }

    #[test]
    fn byte_by_byte_and_phases() {
        let mut r = RequestReader::new(Limits::default());
        assert_eq!(r.phase(), Phase::Idle);
        let split = POST.len() - 5;
        for (i, b) in POST.iter().enumerate() {
            if i < split {
                assert!(r.poll_head().unwrap().is_none());
            }
            feed(&mut r, &[*b]);
            if i + 1 == split {
                break;
            }
            assert_eq!(r.phase(), Phase::Head);
        }
        let head = r.poll_head().unwrap().unwrap();
        assert_eq!(head.framing(), BodyFraming::Length(5));
        assert_eq!(r.phase(), Phase::Body);
        assert!(r.poll_body().unwrap().is_none());
        for b in &POST[split..] {
            feed(&mut r, &[*b]);
        }
        assert_eq!(r.poll_body().unwrap().unwrap(), b"hello");
        assert_eq!(r.phase(), Phase::Idle);
    }

    #[test]
    fn pipelined_requests_in_order() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(POST);
        bytes.extend_from_slice(b"GET /health HTTP/1.1\r\n\r\n");
        bytes.extend_from_slice(
            b"POST /sync HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        bytes.extend_from_slice(b"GET /shards HTTP/1.1\r\nConnection: close\r\n\r\n");
        let reqs = requests(Limits::default(), &bytes).unwrap();
        let targets: Vec<_> = reqs.iter().map(|(h, _)| h.target().to_string()).collect();
        assert_eq!(targets, ["/sync?s=00000000000000ff", "/health", "/sync", "/shards"]);
        assert_eq!(reqs[2].1, b"abc");
        assert!(!reqs[3].0.keep_alive());
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let bytes = b"POST /sync HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n\
            5;name=value\r\nhello\r\nA \r\n, world!!!\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let reqs = requests(Limits::default(), bytes).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].0.framing(), BodyFraming::Chunked);
        assert_eq!(reqs[0].1, b"hello, world!!!");
        assert_eq!(reqs[1].0.target(), "/");
    }

    #[test]
    fn chunked_byte_by_byte() {
        let bytes =
            b"POST /sync HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut r = RequestReader::new(Limits::default());
        let mut head = None;
        let mut body = None;
        for b in bytes {
            feed(&mut r, &[*b]);
            if head.is_none() {
                head = r.poll_head().unwrap();
            } else if body.is_none() {
                body = r.poll_body().unwrap();
            }
        }
        assert_eq!(body.unwrap(), b"Wikipedia");
    }

    #[test]
    fn malformed_chunked() {
        for bad in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        ] {
            assert_eq!(requests(Limits::default(), bad).unwrap_err().status(), 400, "{:?}", bad);
        }
    }

    #[test]
    fn limits() {
        let small = Limits { max_header_bytes: 64, max_headers: 4, max_body: 8 };
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(requests(small, long_header.as_bytes()).unwrap_err(), HttpError::HeaderTooLarge);
        // An unterminated head beyond the limit fails without waiting for its end.
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100));
        assert_eq!(requests(small, partial.as_bytes()).unwrap_err(), HttpError::HeaderTooLarge);
        let many = "GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n";
        assert_eq!(requests(small, many.as_bytes()).unwrap_err(), HttpError::HeaderTooLarge);
        let big = b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789";
        assert_eq!(requests(small, big).unwrap_err().status(), 413);
        let big_chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n12345\r\n0\r\n\r\n";
        assert_eq!(requests(small, big_chunked).unwrap_err().status(), 413);
        let ok = b"POST / HTTP/1.1\r\nContent-Length: 8\r\n\r\n12345678";
        assert_eq!(requests(small, ok).unwrap()[0].1, b"12345678");
    }

    #[test]
    fn malformed_heads() {
        let cases: &[(&[u8], u16)] = &[
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ];
        for (bytes, status) in cases {
            let err = requests(Limits::default(), bytes).unwrap_err();
            assert_eq!(err.status(), *status, "{}", String::from_utf8_lossy(bytes));
        }
        // Identical duplicate lengths are fine.
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(requests(Limits::default(), dup).unwrap()[0].1, b"x");
    }

    #[test]
    fn connection_semantics() {
        let h10 = &requests(Limits::default(), b"GET / HTTP/1.0\r\n\r\n").unwrap()[0].0;
        assert!(!h10.keep_alive());
        let h10ka =
            &requests(Limits::default(), b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap()[0].0;
        assert!(h10ka.keep_alive());
        let h11c =
            &requests(Limits::default(), b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").unwrap()[0].0;
        assert!(!h11c.keep_alive());
    }

    #[test]
    fn expectations() {
        let e = &requests(
            Limits::default(),
            b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()[0]
            .0;
        assert!(e.expects_continue());
        let e10 =
            &requests(Limits::default(), b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap()[0].0;
        assert!(!e10.expects_continue());
        let other = &requests(Limits::default(), b"POST / HTTP/1.1\r\nExpect: magic\r\n\r\n").unwrap()[0].0;
        assert!(other.has_unknown_expectation());
    }

    #[test]
    fn absolute_form_target() {
        let reqs =
            requests(Limits::default(), b"GET http://example.com:8080/sync?s=1 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(reqs[0].0.path(), "/sync");
        let reqs = requests(Limits::default(), b"GET https://example.com HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(reqs[0].0.path(), "/");
    }

    #[test]
    fn leading_empty_lines_and_lf_only() {
        let reqs = requests(Limits::default(), b"\r\n\r\nGET /a HTTP/1.1\n\n").unwrap();
        assert_eq!(reqs[0].0.target(), "/a");
    }

    #[test]
    fn eof_mid_request() {
        let mut r = RequestReader::new(Limits::default());
        assert!(r.eof().is_ok());
        feed(&mut r, b"GET / HT");
        assert!(r.poll_head().unwrap().is_none());
        assert_eq!(r.eof(), Err(HttpError::UnexpectedEof));
    }

    #[test]
    fn large_body_grows_and_shrinks() {
        let body = vec![b'x'; 1 << 20];
        let mut bytes = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(&body);
        let mut r = RequestReader::new(Limits::default());
        feed(&mut r, &bytes);
        r.poll_head().unwrap().unwrap();
        assert_eq!(r.poll_body().unwrap().unwrap().len(), 1 << 20);
        assert!(r.buf.len() <= SHRINK_ABOVE);
        // Waiting for the next request, the connection holds a small buffer only.
        assert_eq!(r.spare().len(), IDLE_READ_CHUNK);
        assert!(r.buf.capacity() <= IDLE_READ_CHUNK);
    }
}
