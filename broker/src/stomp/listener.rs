//! Accepting STOMP connections: the TCP listener (`--stomp-listen`, RabbitMQ's port 61613)
//! and the Web-STOMP one (`--web-stomp-listen`, RabbitMQ's 15674, path `/ws`, subprotocols
//! `v12.stomp`, `v11.stomp`, `v10.stomp`), with their transports: over TCP, frames are read
//! into the decoder's buffer and written batched; over a WebSocket, each message's payload is
//! fed to the decoder (a frame may span messages, a message may hold several frames) and each
//! frame goes out as one message (text when it is UTF-8, else binary), as RabbitMQ sends them.

use super::connection::{serve, Source};
use super::outbox::Wire;
use crate::shared::Shared;
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio::net::TcpStream;

/// A TCP connection's reading half.
struct TcpSource(OwnedReadHalf);

impl Source for TcpSource {
    fn read<'a>(&'a mut self, buf: &'a mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        self.0.read_buf(buf)
    }
}

/// A TCP connection's writing half: frames are gathered and written together at each flush.
struct TcpWire {
    w: OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Wire for TcpWire {
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            self.buf.extend_from_slice(&frame);
            if self.buf.len() >= 64 * 1024 {
                self.w.write_all(&self.buf).await?;
                self.buf.clear();
            }
            Ok(())
        }
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            if !self.buf.is_empty() {
                self.w.write_all(&self.buf).await?;
                self.buf.clear();
            }
            Ok(())
        }
    }

    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async move {
            let _ = self.w.shutdown().await;
        }
    }
}

/// Accepts STOMP connections over TCP until the broker stops; then waits (5 s at most) for
/// them to close.
pub(crate) async fn accept_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "STOMP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (r, w) = stream.into_split();
                let wire = TcpWire { w, buf: Vec::new() };
                let id = shared.next_conn_id();
                conns.spawn(serve(shared.clone(), TcpSource(r), wire, peer, id, stop.clone()));
            }
        }
    }
    drain(conns).await;
}

/// Gives the connections of a stopping listener 5 s to close, then drops them.
pub(crate) async fn drain(mut conns: JoinSet<()>) {
    let all = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), all).await.is_err() {
        conns.abort_all();
    }
}

/// The highest STOMP subprotocol offered (`v12.stomp` first), as RabbitMQ chooses.
fn choose_subprotocol(offered: &[&str]) -> Option<&'static str> {
    ["v12.stomp", "v11.stomp", "v10.stomp"]
        .into_iter()
        .find(|p| offered.contains(p))
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket's incoming messages.
struct WsSource(futures::stream::SplitStream<Ws>);

impl Source for WsSource {
    fn read<'a>(&'a mut self, buf: &'a mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        async move {
            loop {
                match self.0.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Text(t))) if !t.is_empty() => {
                        buf.extend_from_slice(t.as_bytes());
                        return Ok(t.len());
                    }
                    Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                        buf.extend_from_slice(&b);
                        return Ok(b.len());
                    }
                    Some(Ok(_)) => continue,
                }
            }
        }
    }
}

/// A WebSocket's outgoing side: one message per frame.
struct WsWire(futures::stream::SplitSink<Ws, Message>);

impl Wire for WsWire {
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let msg = match String::from_utf8(frame) {
                Ok(text) => Message::text(text),
                Err(e) => Message::binary(e.into_bytes()),
            };
            self.0.feed(msg).await.map_err(io::Error::other)
        }
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async move { self.0.flush().await.map_err(io::Error::other) }
    }

    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async move {
            let _ = self.0.close().await;
        }
    }
}

/// Accepts STOMP-over-WebSocket connections until the broker stops.
pub(crate) async fn accept_web(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let stop = stop.clone();
                conns.spawn(async move {
                    // The upgrade gets the login timeout's budget; a client that never
                    // completes it is dropped.
                    let upgrade = crate::ws::accept(stream, "/ws", choose_subprotocol);
                    let ws = match tokio::time::timeout(Duration::from_secs(10), upgrade).await {
                        Ok(Ok(ws)) => ws,
                        _ => return,
                    };
                    let (sink, source) = ws.split();
                    let id = shared.next_conn_id();
                    serve(shared, WsSource(source), WsWire(sink), peer, id, stop).await;
                });
            }
        }
    }
    drain(conns).await;
}
