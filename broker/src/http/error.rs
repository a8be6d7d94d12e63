//! The API's errors: RabbitMQ's JSON body `{"error": ..., "reason": ...}` with its status
//! codes (400 bad_request, 401 not_authorized, 404 Object Not Found, 405, 413, 500).

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
        }
    }

    /// 404 as RabbitMQ answers for a missing vhost, queue, exchange, user...
    pub(crate) fn not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".into(),
        }
    }

    /// 401 for a user without the rights (RabbitMQ answers 401 not_authorized, not 403).
    pub(crate) fn not_authorized(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorized",
            reason: reason.into(),
        }
    }

    /// An AMQP-level refusal turned into the status RabbitMQ's API gives for it: 404 for
    /// NOT_FOUND, 405 for RESOURCE_LOCKED (exclusive queues), 403-like 401 for ACCESS_REFUSED,
    /// 400 for PRECONDITION_FAILED and the rest.
    pub(crate) fn from_amqp(e: &crate::core::error::AmqpError) -> Self {
        use crate::core::error::Code;
        let reason = format!("{} - {}", e.code.name(), e.text);
        match e.code {
            Code::NotFound => ApiError {
                status: StatusCode::NOT_FOUND,
                error: "not_found",
                reason,
            },
            Code::AccessRefused => ApiError::not_authorized(reason),
            _ => ApiError::bad_request(reason),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "reason": self.reason}).to_string();
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
