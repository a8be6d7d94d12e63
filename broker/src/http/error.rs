//! The API's errors: RabbitMQ's JSON body `{"error": ..., "reason": ...}` with its status
//! codes (400 bad_request, 401 not_authorised (not_authorized for a failed login), 404 Object Not Found, 405, 413, 500).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the management API.
#[derive(Debug)]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The `error` field (RabbitMQ's short name, e.g. "bad_request").
    pub(crate) error: &'static str,
    /// The `reason` field (free text).
    pub(crate) reason: String,
    /// A reason that is not a string (RabbitMQ writes some Erlang terms as JSON lists).
    pub(crate) reason_json: Option<serde_json::Value>,
}

/// Handler results.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 400 with RabbitMQ's "bad_request".
    pub(crate) fn bad_request(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
            reason_json: None,
        }
    }

    /// 404 as RabbitMQ answers for a missing vhost, queue, exchange, user...
    pub(crate) fn not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".into(),
            reason_json: None,
        }
    }

    /// 404 with RabbitMQ's "Object Not Found" and another reason.
    pub(crate) fn not_found_reason(reason: &str) -> Self {
        ApiError {
            reason: reason.into(),
            ..ApiError::not_found()
        }
    }

    /// 413 for a body over the limit (RabbitMQ's limit is the same; it answers 500 there).
    pub(crate) fn too_large() -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "bad_request",
            reason: format!("request body larger than {} bytes", super::MAX_BODY),
            reason_json: None,
        }
    }

    /// 401 for a user without the rights (RabbitMQ answers 401 "not_authorised", not 403).
    pub(crate) fn not_authorized(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised",
            reason: reason.into(),
            reason_json: None,
        }
    }

    /// An AMQP-level refusal turned into the status RabbitMQ's API gives for it: 404 for
    /// NOT_FOUND, 405 for RESOURCE_LOCKED (exclusive queues), 403-like 401 for ACCESS_REFUSED,
    /// 400 for PRECONDITION_FAILED and the rest.
    /// 400 with a closed channel's text, code first ("403 ACCESS_REFUSED - ..."): what
    /// RabbitMQ answers when its internal channel closes during a publish.
    pub(crate) fn channel_closed(e: &crate::core::error::AmqpError) -> Self {
        ApiError::bad_request(format!("{} {}", e.code as u16, e.text))
    }

    pub(crate) fn from_amqp(e: &crate::core::error::AmqpError) -> Self {
        use crate::core::error::Code;
        // The text is "NAME - explanation": RabbitMQ keeps the name for a refusal and gives
        // only the explanation for a bad request ("inequivalent arg 'durable' ...").
        let explanation = e.text.split_once(" - ").map_or(e.text.as_str(), |(_, x)| x);
        match e.code {
            Code::NotFound => ApiError {
                status: StatusCode::NOT_FOUND,
                error: "not_found",
                reason: explanation.to_string(),
                reason_json: None,
            },
            Code::AccessRefused => ApiError::not_authorized(e.text.clone()),
            _ => ApiError::bad_request(explanation),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reason = self.reason_json.unwrap_or(json!(self.reason));
        let body = json!({"error": self.error, "reason": reason}).to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        resp
    }
}
