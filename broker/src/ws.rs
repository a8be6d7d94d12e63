//! The WebSocket transport that the Web-MQTT and Web-STOMP front-ends share: accepts the HTTP
//! upgrade on one path, negotiates the subprotocol, and then presents the connection as a
//! stream of data messages in ([`WsReader::recv`]) and out ([`WsWriter::feed`], then
//! [`WsWriter::flush`]).
//!
//! Front-ends parse what arrives as a byte stream: a message may hold part of a packet or
//! several (RabbitMQ's Web-MQTT and Web-STOMP parse it the same way), so the reader hands out
//! each message's payload and the front-end appends it to its buffer. Pings are answered by
//! the WebSocket layer; a close frame or a dropped socket ends the stream.
//!
//! ```ignore
//! const ENDPOINT: WsEndpoint = WsEndpoint { path: "/ws", protocols: &["mqtt"], require_protocol: false };
//! let ws = ws::accept(tcp_stream, &ENDPOINT).await?;
//! let (mut reader, mut writer) = (ws.reader, ws.writer);
//! while let Some(data) = reader.recv().await? { buf.extend_from_slice(&data); /* parse */ }
//! writer.feed(Bytes::from_static(b"..."), MessageKind::Binary).await?;
//! writer.flush().await?;
//! ```

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Where a front-end accepts WebSocket connections and which subprotocols it speaks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsEndpoint {
    /// The request path (RabbitMQ's plugins use `/ws`); any other path gets 404.
    pub(crate) path: &'static str,
    /// Subprotocols in order of preference (`mqtt`; `v12.stomp`, ...). The first of them the
    /// client offers is chosen and sent back in `Sec-WebSocket-Protocol`.
    pub(crate) protocols: &'static [&'static str],
    /// Refuse (400) a client that offers none of `protocols`. When false such a client is
    /// accepted without a subprotocol, as RabbitMQ's Web-MQTT accepts it.
    pub(crate) require_protocol: bool,
}

/// The kind of data message a front-end sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageKind {
    /// A binary message (MQTT packets).
    Binary,
    /// A text message (STOMP frames, which are text unless they carry a binary body).
    Text,
}

/// An accepted WebSocket connection, split into its two directions.
#[derive(Debug)]
pub(crate) struct WsConnection<S> {
    /// Data messages from the client.
    pub(crate) reader: WsReader<S>,
    /// Data messages to the client.
    pub(crate) writer: WsWriter<S>,
}

/// The receiving half of a WebSocket connection.
#[derive(Debug)]
pub(crate) struct WsReader<S> {
    inner: SplitStream<WebSocketStream<S>>,
}

/// The sending half of a WebSocket connection.
#[derive(Debug)]
pub(crate) struct WsWriter<S> {
    inner: SplitSink<WebSocketStream<S>, Message>,
}

/// Largest message or frame accepted from a client: 128 MiB plus room for a packet's own
/// header, RabbitMQ's largest message (front-ends enforce their exact limits themselves).
const MAX_MESSAGE: usize = 128 * 1024 * 1024 + 128 * 1024;

/// Completes the HTTP upgrade on `stream` for `endpoint`. Fails (after answering 404 or 400)
/// when the request is not a WebSocket upgrade on the endpoint's path, or when it requires a
/// subprotocol the client does not offer.
pub(crate) async fn accept<S>(stream: S, endpoint: &WsEndpoint) -> io::Result<WsConnection<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The type is tungstenite's Callback signature; its error is a whole HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != endpoint.path {
            return Err(refuse(StatusCode::NOT_FOUND));
        }
        match choose_protocol(req, endpoint.protocols) {
            Some(p) => {
                resp.headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static(p));
            }
            None if endpoint.require_protocol => return Err(refuse(StatusCode::BAD_REQUEST)),
            None => {}
        }
        Ok(resp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(to_io)?;
    let (writer, reader) = ws.split();
    Ok(WsConnection {
        reader: WsReader { inner: reader },
        writer: WsWriter { inner: writer },
    })
}

fn refuse(status: StatusCode) -> ErrorResponse {
    let mut resp = ErrorResponse::new(None);
    *resp.status_mut() = status;
    resp
}

/// The endpoint's most preferred subprotocol among those the client offers (RabbitMQ's
/// Web-STOMP answers `v12.stomp` to a browser offering `v10.stomp, v11.stomp, v12.stomp`).
fn choose_protocol(req: &Request, ours: &[&'static str]) -> Option<&'static str> {
    let offered: Vec<&str> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    ours.iter().copied().find(|p| offered.contains(p))
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsReader<S> {
    /// The payload of the next data message (binary or text); `None` once the client closed
    /// the connection. Pings and pongs are handled underneath and never returned.
    pub(crate) async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            match self.inner.next().await {
                None => return Ok(None),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(None),
                Some(Err(e)) => return Err(to_io(e)),
                Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
                Some(Ok(Message::Text(t))) => return Ok(Some(Bytes::from(t))),
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsWriter<S> {
    /// Queues one data message without flushing: several fed messages leave in one write at
    /// the next [`flush`](Self::flush). A text message must be valid UTF-8 (it is sent as
    /// binary otherwise, rather than failing).
    pub(crate) async fn feed(&mut self, data: Bytes, kind: MessageKind) -> io::Result<()> {
        let msg = match kind {
            MessageKind::Text => match String::from_utf8(data.to_vec()) {
                Ok(text) => Message::text(text),
                Err(e) => Message::Binary(Bytes::from(e.into_bytes())),
            },
            MessageKind::Binary => Message::Binary(data),
        };
        self.inner.feed(msg).await.map_err(to_io)
    }

    /// Writes out everything fed so far.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await.map_err(to_io)
    }

    /// Sends a close frame (normal closure) and closes the socket.
    pub(crate) async fn close(&mut self) {
        let _ = self.inner.close().await;
    }

    /// Sends a close frame with code 1000 (normal closure) and `reason`, then closes the
    /// socket.
    pub(crate) async fn close_with(&mut self, reason: &str) {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: reason.to_string().into(),
        };
        let _ = self.inner.send(Message::Close(Some(frame))).await;
        let _ = self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ENDPOINT: WsEndpoint = WsEndpoint {
        path: "/ws",
        protocols: &["v12.stomp", "mqtt"],
        require_protocol: true,
    };

    fn upgrade(path: &str, protocol: Option<&str>) -> String {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(p) = protocol {
            req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        req.push_str("\r\n");
        req
    }

    /// Runs `accept` on one end of a pipe after writing `request` to the other; returns the
    /// result and the HTTP status line the client read.
    async fn handshake(
        request: String,
    ) -> (io::Result<WsConnection<tokio::io::DuplexStream>>, String) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(request.as_bytes()).await.unwrap();
        let accepted = accept(server, &ENDPOINT).await;
        let mut buf = vec![0u8; 1024];
        let n = client.read(&mut buf).await.unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        (accepted, text)
    }

    #[tokio::test]
    async fn picks_its_most_preferred_protocol_the_client_offers() {
        let (ws, resp) = handshake(upgrade("/ws", Some("mqttv3.1, mqtt, v12.stomp"))).await;
        assert!(ws.is_ok());
        assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
        assert!(
            resp.to_lowercase()
                .contains("sec-websocket-protocol: v12.stomp\r\n"),
            "{resp}"
        );
    }

    #[tokio::test]
    async fn refuses_other_paths_and_missing_protocols() {
        let (ws, resp) = handshake(upgrade("/other", Some("mqtt"))).await;
        assert!(ws.is_err());
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        let (ws, resp) = handshake(upgrade("/ws", Some("foo"))).await;
        assert!(ws.is_err());
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    }
}
