//! A connection's byte stream: plain TCP or TLS over TCP, with the few
//! socket operations the HTTP code needs besides reading and writing.

use std::io;
use std::net::Shutdown;
use std::time::Duration;

use glommio::net::TcpStream;

/// A shard's server-side connection: plain or TLS over glommio's TCP stream.
pub type Io = crate::http::ServerStream<TcpStream>;

impl Io {
    /// Sets the socket's read timeout.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d).map_err(|e| io::Error::other(e.to_string()))
    }

    /// Ends the sending side (TLS: close_notify first).
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.close_tls().await;
        self.tcp().shutdown(Shutdown::Write).await.map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Accepts a TLS connection on `tcp` within `timeout`.
pub async fn accept_tls(
    acceptor: &crate::tls::Acceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> io::Result<Io> {
    let handshake = async { Some(acceptor.accept(tcp).await) };
    let expired = async {
        glommio::timer::Timer::new(timeout).await;
        None
    };
    match futures_lite::future::or(handshake, expired).await {
        Some(Ok(s)) => Ok(Io::Tls(Box::new(s))),
        Some(Err(e)) => Err(e),
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timeout")),
    }
}
