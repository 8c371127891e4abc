//! The balancer's sockets on its epoll reactor (a tokio current-thread
//! runtime per worker thread; see [`super::start`]): the listening socket,
//! connections to members, and a client connection that is plain TCP or TLS.
//!
//! Everything here implements the `futures` I/O traits, so the proxy code
//! reads and writes with `futures_lite`'s extension methods whatever the
//! stream is, and futures-rustls runs TLS over it. Each socket is
//! registered with epoll once, edge-triggered: a read or write that has to
//! wait costs no `epoll_ctl`.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite};
use tokio::io::ReadBuf;

/// A TCP connection on the worker's reactor.
#[derive(Debug)]
pub(crate) struct Tcp(tokio::net::TcpStream);

impl Tcp {
    /// Connects to `addr` within `timeout`, with TCP_NODELAY set.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Tcp> {
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
        stream.set_nodelay(true)?;
        Ok(Tcp(stream))
    }

    /// The peer's address.
    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    /// Ends the sending side.
    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.0).shutdown(Shutdown::Write)
    }
}

impl AsyncRead for Tcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.get_mut().0), cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().0), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.get_mut().0), cx)
    }
}

/// A non-blocking listening socket with SO_REUSEPORT (every worker accepts on
/// the shared port; the kernel spreads connections) and SO_REUSEADDR (a
/// restarted balancer binds while old connections linger in TIME_WAIT).
/// Must be called on a worker thread (inside its runtime).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    listen_with(addr, true)
}

/// A listening socket of one worker alone (no SO_REUSEPORT): the admin
/// address, which a second process must not silently share.
pub(crate) fn listen_exclusive(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    listen_with(addr, false)
}

fn listen_with(addr: SocketAddr, reuse_port: bool) -> io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// Accepts one connection (TCP_NODELAY set). Errors are the listener's own
/// (e.g. EMFILE); a connection already reset by its client is still handed
/// over and fails at its first read, so it never delays the next accept.
pub(crate) async fn accept(listener: &tokio::net::TcpListener) -> io::Result<Tcp> {
    let (stream, peer) = listener.accept().await?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(peer = %peer, error = %e, "TCP_NODELAY not set");
    }
    Ok(Tcp(stream))
}

/// A client connection: plain HTTP or HTTPS (after the handshake).
pub(crate) type ClientIo = crate::http::ServerStream<Tcp>;

impl ClientIo {
    /// Ends the sending side (TLS: close_notify first).
    pub(crate) async fn shutdown_write(&mut self) -> io::Result<()> {
        self.close_tls().await;
        self.tcp().shutdown_write()
    }
}

/// Accepts a TLS connection on `tcp` before `deadline`.
pub(crate) async fn accept_tls(
    acceptor: &crate::tls::Acceptor,
    tcp: Tcp,
    deadline: Instant,
) -> io::Result<ClientIo> {
    match tokio::time::timeout_at(deadline.into(), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Ok(ClientIo::Tls(Box::new(s))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timeout")),
    }
}

/// Runs `io` until it completes or `deadline` passes (`None` then). The
/// timer is armed only if `io` has to wait, so a read whose bytes are
/// already there costs no timer operation.
pub(crate) async fn before<T>(deadline: Instant, io: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout_at(deadline.into(), io).await.ok()
}
