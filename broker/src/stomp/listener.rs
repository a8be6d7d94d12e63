//! Accepting STOMP connections: the TCP listener (`--stomp-listen`, RabbitMQ's port 61613)
//! and the Web-STOMP one (`--web-stomp-listen`, RabbitMQ's 15674, path `/ws`, subprotocols
//! `v12.stomp`, `v11.stomp`, `v10.stomp`), with their transports: over TCP, frames are read
//! into the decoder's buffer and written batched; over a WebSocket, each message's payload is
//! fed to the decoder (a frame may span messages, a message may hold several frames) and each
//! frame goes out as one message (text when it is UTF-8, else binary), as RabbitMQ sends them.
//! The WebSocket upgrade itself is `ws.rs`, shared with Web-MQTT.

use super::connection::{serve, Source};
use super::outbox::Wire;
use crate::shared::Shared;
use crate::ws::{MessageKind, WsEndpoint, WsReader, WsWriter};
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A TCP connection's reading half.
struct TcpSource(OwnedReadHalf);

impl Source for TcpSource {
    fn read<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        self.0.read_buf(buf)
    }
}

/// A TCP connection's writing half: frames are gathered and written together at each flush.
struct TcpWire {
    w: OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Wire for TcpWire {
    async fn send(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.buf.extend_from_slice(&frame);
        if self.buf.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.w.shutdown().await;
    }
}

/// Accepts STOMP connections over TCP until the broker stops; then waits (5 s at most) for
/// them to close.
pub(crate) async fn accept_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    accept_loop(listener, stop.clone(), move |stream, peer| {
        let local = stream.local_addr().unwrap_or(peer);
        let (r, w) = stream.into_split();
        let wire = TcpWire { w, buf: Vec::new() };
        let id = shared.next_conn_id();
        serve(
            shared.clone(),
            TcpSource(r),
            wire,
            (peer, local, false),
            id,
            stop.clone(),
        )
    })
    .await;
}

/// Accepts connections until the broker stops, running `serve` for each in a task of its
/// own; then gives them 5 s to close.
async fn accept_loop<F, Fut>(listener: TcpListener, mut stop: watch::Receiver<bool>, mut serve: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve(stream, peer));
                }
                Err(e) => crate::transport::accept_failed("stomp", &e).await,
            },
        }
    }
    drain(conns).await;
}

/// Gives the connections of a stopping listener 5 s to close, then drops them.
async fn drain(mut conns: JoinSet<()>) {
    let all = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}

/// Web-STOMP's endpoint: path `/ws`, the three STOMP subprotocols; a client offering none is
/// accepted too, as RabbitMQ's Web-STOMP accepts it.
const WEB_STOMP: WsEndpoint = WsEndpoint {
    path: "/ws",
    protocols: &["v12.stomp", "v11.stomp", "v10.stomp"],
    require_protocol: false,
};

/// A WebSocket's incoming data messages.
struct WsSource(WsReader<TcpStream>);

impl Source for WsSource {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.0.recv().await? {
                None => return Ok(0),
                Some(data) if data.is_empty() => continue,
                Some(data) => {
                    buf.extend_from_slice(&data);
                    return Ok(data.len());
                }
            }
        }
    }
}

/// A WebSocket's outgoing side: one message per frame, text unless the body is binary.
struct WsWire(WsWriter<TcpStream>);

impl Wire for WsWire {
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send {
        self.0.feed(frame.into(), MessageKind::Text)
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        self.0.flush()
    }

    /// As RabbitMQ's Web-STOMP: close code 1000, "STOMP died".
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        self.0.close_with("STOMP died")
    }
}

/// Accepts STOMP-over-WebSocket connections until the broker stops.
pub(crate) async fn accept_web(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    accept_loop(listener, stop.clone(), move |stream, peer| {
        let shared = shared.clone();
        let stop = stop.clone();
        async move {
            // The upgrade gets the login timeout's budget; a client that never completes it
            // is dropped.
            let local = stream.local_addr().unwrap_or(peer);
            let upgrade = crate::ws::accept(stream, &WEB_STOMP);
            let Ok(Ok(ws)) = tokio::time::timeout(Duration::from_secs(10), upgrade).await else {
                return;
            };
            let id = shared.next_conn_id();
            serve(
                shared,
                WsSource(ws.reader),
                WsWire(ws.writer),
                (peer, local, true),
                id,
                stop,
            )
            .await;
        }
    })
    .await;
}
