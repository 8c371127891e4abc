//! A server-side connection's byte stream, plain or TLS, over whatever TCP
//! type the runtime gives (glommio's for the shards, the balancer's epoll
//! socket). Both speak the `futures` I/O traits, so the HTTP code and
//! futures-rustls work on either; socket options stay with each runtime's
//! own inherent methods on its `ServerStream<Tcp>`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// A server-side connection over the TCP stream `S`.
#[derive(Debug)]
pub enum ServerStream<S> {
    /// Plain HTTP.
    Plain(S),
    /// HTTPS (after the handshake).
    Tls(Box<futures_rustls::server::TlsStream<S>>),
}

impl<S> ServerStream<S> {
    /// The TCP stream under the (optional) TLS layer.
    pub fn tcp(&self) -> &S {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerStream<S> {
    /// Sends TLS close_notify when the stream is TLS (the caller then ends
    /// the TCP sending side); a failure there changes nothing for the caller.
    pub async fn close_tls(&mut self) {
        if let ServerStream::Tls(s) = self {
            let _ = s.close().await;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_close(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
