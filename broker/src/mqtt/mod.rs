//! The MQTT 3.1 / 3.1.1 front-end, over TCP (`--mqtt-listen`, RabbitMQ's port 1883) and over
//! WebSocket (`--web-mqtt-listen`, RabbitMQ's 15675, path `/ws`, subprotocol `mqtt`), with
//! RabbitMQ's MQTT plugin mappings onto the core: topics on `amq.topic`, one queue per client
//! id and QoS, retained messages, wills, keep-alive, client id takeover.
//!
//! Modules: `codec` (packets on the wire, over `mqttbytes`), `topic` (topic translation),
//! `retained` (the retained messages, kept in the data directory when there is one), `login` (credentials and vhost), `registry` (client ids), `session`
//! (the protocol on the core, no I/O), `connection` (the task that moves the bytes).

pub(crate) mod codec;
mod connection;
mod login;
mod registry;
mod retained;
mod session;
mod topic;

#[cfg(test)]
mod tests;

use crate::shared::Shared;
use crate::ws::WsEndpoint;
use connection::{Conn, Transport};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Web-MQTT's endpoint, as RabbitMQ's: path `/ws`; subprotocol `mqtt` when the client asks for
/// it, and a client that asks for none is served too.
const WEB_MQTT: WsEndpoint = WsEndpoint {
    path: "/ws",
    protocols: &["mqtt"],
    require_protocol: false,
};

/// How long a Web-MQTT client has to complete the HTTP upgrade.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every MQTT connection of a broker shares: the client ids in use and the retained
/// messages.
#[derive(Debug, Default)]
pub(crate) struct MqttShared {
    registry: registry::Registry,
    retained: retained::RetainedStore,
}

impl MqttShared {
    /// With the retained messages kept in (and loaded from) `data_dir`; `Default` keeps them in
    /// memory only.
    pub(crate) fn open(data_dir: &std::path::Path) -> Result<MqttShared, String> {
        Ok(MqttShared {
            registry: registry::Registry::default(),
            retained: retained::RetainedStore::open(data_dir)?,
        })
    }

    /// Blocks until every retained message change so far is on disk (a clean stop).
    pub(crate) fn flush(&self) {
        self.retained.flush();
    }
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over WebSocket.
    WebSocket,
}

/// Accepts MQTT (or Web-MQTT) connections on `listener` until `stop`; then closes them.
pub(crate) async fn listen(
    listener: TcpListener,
    kind: Listener,
    shared: Arc<Shared>,
    mqtt: Arc<MqttShared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        crate::transport::accept_failed("mqtt", &e).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let c = Conn {
                    shared: shared.clone(),
                    mqtt: mqtt.clone(),
                    id: shared.next_conn_id(),
                    peer,
                    local: stream.local_addr().unwrap_or(peer),
                    web: kind == Listener::WebSocket,
                    shutdown: stop.clone(),
                };
                conns.spawn(async move {
                    match kind {
                        Listener::Tcp => connection::serve(c, Transport::Stream(stream)).await,
                        Listener::WebSocket => {
                            let upgrade = crate::ws::accept(stream, &WEB_MQTT);
                            match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await {
                                Ok(Ok(ws)) => connection::serve(c, Transport::Ws(ws)).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "Web-MQTT upgrade refused"),
                                Err(_) => tracing::debug!(%peer, "Web-MQTT upgrade timed out"),
                            }
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}
