//! The byte streams a connection is served over: a plain TCP socket, or TLS over one. Front-ends
//! are generic over [`Transport`], so the plain path keeps tokio's lock-free `into_split` and
//! pays nothing for TLS existing.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A stream a connection reads and writes: split into halves for its reader and writer tasks.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The reading half.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// The writing half.
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Splits the stream for two tasks.
    fn split(self) -> (Self::Read, Self::Write);
    /// The local end's address (the listener's side), for the management API.
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr>;
}

impl Transport for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        TcpStream::local_addr(self)
    }
}

/// TLS: one session state shared by both directions, so the halves share it through tokio's
/// `split` (a lock taken per read or write call, not per frame).
impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.get_ref().0.local_addr()
    }
}

/// What every accept loop does when `accept` fails (most often: out of file descriptors):
/// pauses 50 ms so the loop does not spin, and logs at most once a second per process with
/// how many failures it did not log (the failure repeats every pause while the limit holds,
/// which flooded the log with 20 lines a second per listener).
pub(crate) async fn accept_failed(listener: &str, error: &std::io::Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, PoisonError};
    use std::time::{Duration, Instant};
    static LAST_LOGGED: Mutex<Option<Instant>> = Mutex::new(None);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    let due = {
        let mut last = LAST_LOGGED.lock().unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    if due {
        let unlogged = UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::warn!(listener, %error, unlogged, "accept failed");
    } else {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}
