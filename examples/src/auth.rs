//! A server layer that checks a bearer token, as an example of writing tower middleware for
//! warren-rpc: requests without `authorization: Bearer <token>` fail with the typed fault
//! `unauthenticated` before reaching the handler. The client side sets the header with
//! [`warren_rpc::middleware::SetHeadersLayer`] (see [`bearer`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{self, Either, Ready};
use tower::{Layer, Service};
use warren_rpc::middleware::SetHeadersLayer;
use warren_rpc::{Fault, FaultCode, Outcome, Request};

/// The header carrying the token.
pub const AUTHORIZATION: &str = "authorization";

/// The client layer that sends `token` with every call.
pub fn bearer(token: &str) -> SetHeadersLayer {
    SetHeadersLayer::new().header(AUTHORIZATION, format!("Bearer {token}"))
}

/// Rejects requests that do not carry `authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct RequireTokenLayer {
    expected: Arc<str>,
}

impl RequireTokenLayer {
    /// Accepts only `token`.
    pub fn new(token: &str) -> Self {
        RequireTokenLayer {
            expected: Arc::from(format!("Bearer {token}")),
        }
    }
}

impl<S> Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken {
            inner,
            expected: Arc::clone(&self.expected),
        }
    }
}

/// The service of [`RequireTokenLayer`].
#[derive(Debug, Clone)]
pub struct RequireToken<S> {
    inner: S,
    expected: Arc<str>,
}

impl<S> Service<Request> for RequireToken<S>
where
    S: Service<Request, Response = Outcome, Error = Infallible>,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Outcome, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.header(AUTHORIZATION) == Some(&*self.expected) {
            return Either::Left(self.inner.call(request));
        }
        let message = match request.header(AUTHORIZATION) {
            None => "missing `authorization` header".to_owned(),
            Some(_) => "invalid token".to_owned(),
        };
        Either::Right(future::ready(Ok(Outcome::Fault(Fault {
            code: FaultCode::Unauthenticated,
            message,
        }))))
    }
}
