//! The WebSocket side of the Web-STOMP (and Web-MQTT) listeners: the HTTP upgrade on one path
//! with subprotocol negotiation, as RabbitMQ's cowboy listeners do it, on tokio-tungstenite.
//!
//! A request for another path is answered `404 Not Found`. The subprotocol the server picks
//! (if any) is chosen by the front-end from the ones the client offered; a client offering
//! none, or none the front-end speaks, is still accepted, without a `Sec-WebSocket-Protocol`
//! answer, as RabbitMQ does.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::WebSocketStream;

/// Performs the WebSocket handshake on an accepted socket: `path` must match, and `choose`
/// picks the subprotocol from those offered.
pub(crate) async fn accept(
    stream: TcpStream,
    path: &str,
    choose: fn(&[&str]) -> Option<&'static str>,
) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != path {
            let mut not_found = ErrorResponse::new(Some("Not Found".to_string()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            return Err(not_found);
        }
        let offered: Vec<&str> = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if let Some(p) = choose(&offered) {
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(p));
        }
        Ok(resp)
    };
    tokio_tungstenite::accept_hdr_async(stream, callback).await
}
