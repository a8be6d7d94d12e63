//! HTTP basic authentication against the broker's users, and what each user's tags allow
//! (RabbitMQ's management tags: `administrator` > `monitoring` > `management`).
//!
//! Users, passwords and tags are the broker's access data (`core/access`), shared with AMQP.

use super::error::ApiError;
use super::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use base64::Engine;

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The user name.
    pub(crate) name: String,
    /// Its tags, e.g. ["administrator"].
    pub(crate) tags: Vec<String>,
}

impl Caller {
    /// Whether the user has a tag.
    pub(crate) fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// May change users, vhosts, permissions and see everything.
    pub(crate) fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// May see every vhost's objects (administrator or monitoring).
    pub(crate) fn sees_all(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    /// Refuses a non-administrator, as RabbitMQ does (401 "Not administrator user").
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorized("Not administrator user"))
        }
    }

    /// Refuses a user below monitoring.
    pub(crate) fn require_monitor(&self) -> Result<(), ApiError> {
        if self.sees_all() {
            Ok(())
        } else {
            Err(ApiError::not_authorized("Not monitor user"))
        }
    }
}

/// Checks basic credentials from `peer` against the broker's users (RabbitMQ's
/// loopback-users rule included: guest logs in from localhost only); the caller on success.
pub(crate) fn authenticate(
    state: &AppState,
    user: &str,
    password: &str,
    peer: std::net::IpAddr,
) -> Option<Caller> {
    let u = state
        .shared
        .access
        .authenticate(user, password, peer)
        .ok()?;
    Some(Caller {
        name: u.name,
        tags: u.tags,
    })
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let Some((user, password)) = basic_credentials(parts) else {
            // RabbitMQ: no credentials at all is a bare 401 with the challenge.
            return Err((
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"RabbitMQ Management\"",
                )],
            )
                .into_response());
        };
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        match authenticate(state, &user, &password, peer) {
            Some(c) if c.has("administrator") || c.has("monitoring") || c.has("management") => {
                Ok(c)
            }
            Some(_) => Err(ApiError::not_authorized("Not management user").into_response()),
            // RabbitMQ spells this one error the American way.
            None => Err(ApiError {
                error: "not_authorized",
                ..ApiError::not_authorized("Login failed")
            }
            .into_response()),
        }
    }
}
