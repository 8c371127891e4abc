//! A connection's byte stream: plain TCP or TLS over TCP, with the few
//! socket operations the HTTP code needs besides reading and writing.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

/// A server-side connection.
#[derive(Debug)]
pub enum Io {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS (after the handshake).
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }

    /// Sets the socket's read timeout.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d).map_err(|e| io::Error::other(e.to_string()))
    }

    /// Ends the sending side (TLS: close_notify first).
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        if let Io::Tls(s) = self {
            let _ = s.close().await;
        }
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

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_close(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
