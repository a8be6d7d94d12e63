//! Logging an MQTT client in, as RabbitMQ's MQTT plugin does: the credentials of CONNECT (or,
//! without any, the plugin's default user guest/guest, since `allow_anonymous` is on by
//! default), the vhost from a `vhost:user` username (split at the last colon) or the default
//! vhost `/`, then the checks of the direct connection the plugin opens
//! (`rabbit_direct:connect`), in its order: the vhost exists (else CONNACK 4), the vhost's
//! connection limit (5), the password (4), the user's connection limit and access to the vhost
//! (5, through [`Access::open_connection`](crate::core::access::Access::open_connection),
//! which counts the connection from then on), and last the loopback-users rule (5). The one
//! place the MQTT front-end asks who may log in.

use crate::core::access::Closer;
use crate::core::message::ConnId;
use crate::shared::Shared;
use mqttbytes::v4::ConnectReturnCode;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// RabbitMQ's defaults for anonymous MQTT clients (`mqtt.default_user`, `mqtt.default_pass`)
/// and the vhost (`mqtt.vhost`).
const DEFAULT_USER: &str = "guest";
const DEFAULT_PASS: &str = "guest";
const DEFAULT_VHOST: &str = "/";

/// A logged-in client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoggedIn {
    /// The user name (without the vhost part).
    pub(crate) user: String,
    /// The vhost.
    pub(crate) vhost: String,
}

/// Checks the credentials of a CONNECT and, when they pass, counts connection `id` against
/// the limits (`close` is how a deleted vhost or user closes it; the caller calls
/// `close_connection` when it ends). The CONNACK return code RabbitMQ sends when refused.
pub(crate) fn login(
    shared: &Shared,
    credentials: Option<(&str, &str)>,
    peer: IpAddr,
    id: ConnId,
    close: Closer,
) -> Result<LoggedIn, ConnectReturnCode> {
    let (username, password) = credentials.unwrap_or((DEFAULT_USER, DEFAULT_PASS));
    let (vhost, user) = split_vhost(username);
    let access = &shared.access;
    if access.vhost(vhost).is_none() {
        tracing::warn!(
            user,
            vhost,
            "MQTT login failed: virtual host does not exist"
        );
        return Err(ConnectReturnCode::BadUserNamePassword);
    }
    if let Err(err) = access.check_vhost_connections(user, vhost) {
        tracing::warn!(user, vhost, "MQTT login failed: {}", err.text);
        return Err(ConnectReturnCode::NotAuthorized);
    }
    // The password alone: the loopback rule is checked last, as the plugin does.
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Err(why) = access.authenticate(user, password, loopback) {
        tracing::warn!(user, "MQTT login failed: {why}");
        return Err(ConnectReturnCode::BadUserNamePassword);
    }
    // One channel, as RabbitMQ's MQTT connections report.
    let channels = Arc::new(AtomicUsize::new(1));
    if let Err(err) = access.open_connection(id, user, vhost, channels, close) {
        tracing::warn!(user, vhost, "MQTT login failed: {}", err.text);
        return Err(ConnectReturnCode::NotAuthorized);
    }
    if !access.loopback_allowed(user, peer) {
        access.close_connection(id);
        tracing::warn!(
            user,
            "MQTT login failed: this user's access is restricted to localhost"
        );
        return Err(ConnectReturnCode::NotAuthorized);
    }
    Ok(LoggedIn {
        user: user.to_string(),
        vhost: vhost.to_string(),
    })
}

/// `vhost:user` split at the last colon; the default vhost without a colon.
fn split_vhost(username: &str) -> (&str, &str) {
    match username.rsplit_once(':') {
        Some((vhost, user)) => (vhost, user),
        None => (DEFAULT_VHOST, username),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_comes_from_the_username_split_at_the_last_colon() {
        assert_eq!(split_vhost("guest"), ("/", "guest"));
        assert_eq!(split_vhost("v1:app"), ("v1", "app"));
        assert_eq!(split_vhost("a:b:app"), ("a:b", "app"));
    }
}
