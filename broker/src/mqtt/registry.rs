//! Client ids in use: a second connection with the id of a live one closes the first (as
//! RabbitMQ's client id tracker does), and waits until it has let go of its session.

use crate::core::message::ConnId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How long a new connection waits for the one it replaces to close.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// One registered connection: how to tell it to go, and how to know it went.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    conn: ConnId,
    kick: Arc<Notify>,
    gone: watch::Receiver<bool>,
}

/// What a registered connection keeps: notified when replaced; sets `gone` when closed.
#[derive(Debug)]
pub(crate) struct Ticket {
    /// Notified when another connection took the client id over.
    pub(crate) kicked: Arc<Notify>,
    gone: watch::Sender<bool>,
}

impl Ticket {
    /// Says the connection released its session (the one replacing it may go on).
    pub(crate) fn release(&self) {
        self.gone.send_replace(true);
    }
}

/// Client id -> the connection using it.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    ids: Mutex<HashMap<String, Registration>>,
}

impl Registry {
    /// Registers `conn` under `client_id`, closing the connection that had it (waiting, within
    /// a bound, until it released its session).
    pub(crate) async fn register(&self, client_id: &str, conn: ConnId) -> Ticket {
        let kick = Arc::new(Notify::new());
        let (gone_tx, gone_rx) = watch::channel(false);
        let previous = {
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            ids.insert(
                client_id.to_string(),
                Registration {
                    conn,
                    kick: kick.clone(),
                    gone: gone_rx,
                },
            )
        };
        if let Some(mut old) = previous {
            tracing::warn!(
                client_id,
                old = old.conn,
                new = conn,
                "MQTT client id taken over; closing the old connection"
            );
            old.kick.notify_one();
            let _ = tokio::time::timeout(TAKEOVER_WAIT, old.gone.wait_for(|g| *g)).await;
        }
        Ticket {
            kicked: kick,
            gone: gone_tx,
        }
    }

    /// Forgets `client_id` if `conn` still holds it.
    pub(crate) fn unregister(&self, client_id: &str, conn: ConnId) {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.get(client_id).is_some_and(|r| r.conn == conn) {
            ids.remove(client_id);
        }
    }
}
