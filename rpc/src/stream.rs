//! Streamed replies: [`Stream`], what a streaming method returns on the server, and
//! [`ReplyStream`], what its caller receives.
//!
//! A method declared `async fn ticks(&self, n: u32) -> warren_rpc::Stream<u32>` sends each item
//! as a message of its own as soon as it is produced. Flow control is credit-based: the request
//! grants a window of items (`x-warren-stream-credit`, [`CallOptions::stream_window`]); the
//! server takes the next item from the handler's stream only while it holds credit, and the
//! caller grants more (a `credit` message to the server's control queue) as it consumes, so a
//! slow caller bounds the memory of both sides. The stream ends with an end marker carrying the
//! number of items sent, or with a fault.
//!
//! - **Deadline**: the whole stream lives within its call's deadline. At the deadline the
//!   caller's stream ends with [`Error::DeadlineExceeded`] (or [`Error::Expired`] if no server
//!   took the call) and the server drops the handler's stream. Give long streams a long
//!   timeout.
//! - **Cancellation**: dropping a [`ReplyStream`] before its end (or cancelling the call's
//!   [`CancelToken`](crate::CancelToken)) tells the server, which drops the handler's stream.
//! - **Reconnection**: a stream is not resumed. If the caller's connection dies, the stream
//!   ends with [`Error::StreamInterrupted`] (retryable: calling again starts a new stream), or
//!   with [`Error::Connection`] if nothing had arrived yet. If the server's connection dies,
//!   the caller hears nothing more and its stream ends at the deadline.
//! - A caller that does not ask for a stream (a peer that knows none of this) gets all items
//!   in one reply, `{"ok": [items]}`, up to
//!   [`MAX_COLLECTED_ITEMS`](crate::MAX_COLLECTED_ITEMS).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use tracing::Instrument;

use crate::client::{
    call_span, call_trace, decode_reply, Call, CallOptions, Client, ClientSession, Sent, NO_HEADERS,
};
use crate::context::CallId;
use crate::error::{Error, FaultCode};
use crate::in_flight::{PendingStream, ReplyKind, ReplyMessage};
use crate::service::MethodSpec;
use crate::trace::TraceContext;
use crate::wire::Codec;

/// The items a streaming method returns: any `futures` stream of serializable values.
///
/// ```
/// use warren_rpc::Stream;
///
/// #[warren_rpc::service]
/// pub trait Clock {
///     /// `n` ticks, one every 10 ms.
///     async fn ticks(&self, n: u32) -> Stream<u32>;
/// }
///
/// struct Ticker;
///
/// impl Clock for Ticker {
///     async fn ticks(&self, n: u32) -> Stream<u32> {
///         Stream::new(futures::stream::iter(0..n).then(|i| async move {
///             tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///             i
///         }))
///     }
/// }
/// # use futures::StreamExt;
/// ```
pub struct Stream<T> {
    items: BoxStream<'static, T>,
}

impl<T: Send + 'static> Stream<T> {
    /// Streams the items of `items` as it yields them.
    pub fn new(items: impl futures::Stream<Item = T> + Send + 'static) -> Self {
        Stream {
            items: items.fuse().boxed(),
        }
    }

    /// Streams the items of an iterator.
    pub fn iter<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Stream::new(futures::stream::iter(items))
    }

    /// A stream without items.
    pub fn empty() -> Self {
        Stream::new(futures::stream::empty())
    }
}

impl<T> futures::Stream for Stream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        self.items.poll_next_unpin(cx)
    }
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stream(..)")
    }
}

/// The caller's side of a streamed reply: an async stream of the items as they arrive, each
/// `Ok(item)`, ending after the last item or with one `Err` (see the [module](self) for when).
/// The call is sent when the stream is first polled. Dropping it before its end cancels the
/// call on the server.
#[must_use = "a ReplyStream sends its call when first polled"]
pub struct ReplyStream<T> {
    items: BoxStream<'static, Result<T, Error>>,
    call_id: CallId,
}

impl<T> ReplyStream<T> {
    /// The call's id (the same in the servers' logs).
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }
}

impl<T> futures::Stream for ReplyStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_next_unpin(cx)
    }
}

impl<T> fmt::Debug for ReplyStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyStream")
            .field("call_id", &self.call_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Calls a streaming method: the items arrive through the returned [`ReplyStream`].
    pub fn stream<A, T>(
        &self,
        method: &MethodSpec,
        args: &A,
        options: &CallOptions,
    ) -> ReplyStream<T>
    where
        A: Serialize,
        T: DeserializeOwned + Send + 'static,
    {
        let (service, codec, deadline, timeout) = self.plan(method, options);
        let call_id = CallId::random();
        let span = call_span(&service, method, &call_id);
        let trace = call_trace(&span, options);
        let body = codec.encode(args);
        let state = StreamCall {
            client: self.clone(),
            method: *method,
            service,
            call_id: call_id.clone(),
            codec,
            deadline,
            timeout,
            trace,
            window: options.window(),
            cancel: options.cancel().cloned(),
            started: Arc::default(),
            published: AtomicBool::new(false),
            session: None,
            pending: None,
            server: None,
            received: 0,
            ungranted: 0,
            collected: VecDeque::new(),
            done: false,
        };
        let items = match body {
            Err(reason) => futures::stream::once(async { Err(Error::Encode { reason }) })
                .fuse()
                .boxed(),
            Ok(body) => {
                futures::stream::unfold((state, body, span), |(mut state, body, span)| async move {
                    let item = state.next_item(&body).instrument(span.clone()).await?;
                    Some((item, (state, body, span)))
                })
                // Polled after its end, the stream keeps answering `None`.
                .fuse()
                .boxed()
            }
        };
        ReplyStream { items, call_id }
    }
}

/// The state of one streamed call, owned by its [`ReplyStream`].
struct StreamCall<T> {
    client: Client,
    method: MethodSpec,
    service: String,
    call_id: CallId,
    codec: Codec,
    deadline: Instant,
    timeout: Duration,
    trace: TraceContext,
    window: usize,
    cancel: Option<crate::cancel::CancelToken>,
    started: Arc<AtomicBool>,
    published: AtomicBool,
    session: Option<Arc<ClientSession>>,
    pending: Option<PendingStream>,
    /// The control queue of the server streaming the reply, once known.
    server: Option<String>,
    /// Items received so far.
    received: u64,
    /// Items handed to the caller since credit was last granted.
    ungranted: usize,
    /// Items of a reply that came as one list (from a server that did not stream).
    collected: VecDeque<T>,
    done: bool,
}

impl<T: DeserializeOwned> StreamCall<T> {
    /// The next item, or `None` after the end (or after an error was returned).
    async fn next_item(&mut self, body: &[u8]) -> Option<Result<T, Error>> {
        if let Some(item) = self.collected.pop_front() {
            return Some(Ok(item));
        }
        if self.done {
            return None;
        }
        let token = self.cancel.clone();
        let next = self.receive(body);
        let result = match token {
            Some(token) => tokio::select! {
                result = next => result,
                () = token.cancelled() => Some(Err(Error::Cancelled)),
            },
            None => next.await,
        };
        if matches!(result, None | Some(Err(_))) {
            self.finish();
        }
        result
    }

    /// Marks the stream done. Ended before the server's end marker (cancelled, a bad item, the
    /// deadline, a lost connection), it tells the servers to stop.
    fn finish(&mut self) {
        self.done = true;
        let server_still_sending = self.pending.take().is_some();
        if server_still_sending && self.published.load(Ordering::SeqCst) {
            self.client
                .send_cancel(&self.service, &self.call_id, self.deadline);
        }
    }

    async fn receive(&mut self, body: &[u8]) -> Option<Result<T, Error>> {
        if self.pending.is_none() {
            if let Err(err) = self.open(body).await {
                return Some(Err(err));
            }
        }
        self.grant().await;
        loop {
            let pending = self.pending.as_mut()?;
            let message = match tokio::time::timeout_at(self.deadline.into(), pending.next()).await
            {
                Err(_) => return Some(Err(self.out_of_time())),
                Ok(Err(err)) => return Some(Err(self.interrupted(err))),
                Ok(Ok(message)) => message,
            };
            if self.server.is_none() {
                self.server.clone_from(&message.server);
            }
            match message.kind {
                ReplyKind::Started => self.started.store(true, Ordering::SeqCst),
                ReplyKind::Item => {
                    self.started.store(true, Ordering::SeqCst);
                    self.received += 1;
                    self.ungranted += 1;
                    return Some(match decode_reply::<T, IgnoredAny>(&message) {
                        Ok(Ok(item)) => Ok(item),
                        Ok(Err(_)) => Err(Error::Decode {
                            reason: "a streamed item came as \"err\"".into(),
                        }),
                        Err(err) => Err(err),
                    });
                }
                ReplyKind::End => return self.end(&message),
                ReplyKind::Final => return self.collect(&message),
            }
        }
    }

    /// Publishes the request.
    async fn open(&mut self, body: &[u8]) -> Result<(), Error> {
        let session = self.client.session(self.deadline).await?;
        let policy = self.client.policy_of(&self.method, &CallOptions::new());
        let call = Call {
            service: &self.service,
            method: &self.method,
            call_id: &self.call_id,
            codec: self.codec,
            body,
            deadline: self.deadline,
            timeout: self.timeout,
            policy,
            expect_reply: true,
            stream_credit: Some(self.window),
            trace: &self.trace,
            started: Arc::clone(&self.started),
            published: AtomicBool::new(false),
            headers: &NO_HEADERS,
            exchange: None,
        };
        let sent = self.client.publish(&session, &call, 1).await;
        if call.published.load(Ordering::SeqCst) {
            self.published.store(true, Ordering::SeqCst);
        }
        match sent? {
            Sent::Stream(pending) => {
                self.pending = Some(pending);
                self.session = Some(session);
                Ok(())
            }
            Sent::Reply(_) | Sent::Nothing => Err(Error::Decode {
                reason: "a streamed call registered no stream".into(),
            }),
        }
    }

    /// Grants the server credit for the items the caller has taken, once they are half the
    /// window.
    async fn grant(&mut self) {
        if self.ungranted == 0 || self.ungranted < self.window.div_ceil(2) {
            return;
        }
        if let (Some(session), Some(server)) = (&self.session, &self.server) {
            self.client
                .send_credit(session, server, &self.call_id, self.ungranted)
                .await;
            self.ungranted = 0;
        }
    }

    fn out_of_time(&self) -> Error {
        if self.started.load(Ordering::SeqCst) {
            Error::DeadlineExceeded {
                timeout: self.timeout,
            }
        } else {
            Error::Expired {
                timeout: self.timeout,
            }
        }
    }

    /// The error of a stream the connection (or a misbehaving server) cut off.
    fn interrupted(&self, err: Error) -> Error {
        match err {
            Error::Connection { reason } | Error::Decode { reason }
                if self.started.load(Ordering::SeqCst) =>
            {
                Error::StreamInterrupted {
                    received: self.received,
                    reason,
                }
            }
            other => other,
        }
    }

    /// The end marker: `{"ok": items sent}` or a fault.
    fn end(&mut self, message: &ReplyMessage) -> Option<Result<T, Error>> {
        self.pending = None;
        self.done = true;
        match decode_reply::<u64, IgnoredAny>(message) {
            Ok(Ok(sent)) if sent == self.received => None,
            Ok(Ok(sent)) => Some(Err(Error::StreamInterrupted {
                received: self.received,
                reason: format!("the server sent {sent} items"),
            })),
            Ok(Err(_)) => Some(Err(Error::Decode {
                reason: "a stream's end marker came as \"err\"".into(),
            })),
            Err(err) => Some(Err(self.at_deadline(err))),
        }
    }

    /// A server that stops a stream at its deadline ends it with a `deadline_exceeded` fault,
    /// which can arrive just before the caller's own timer fires: the caller sees the same
    /// error either way.
    fn at_deadline(&self, err: Error) -> Error {
        match err {
            Error::Fault {
                code: FaultCode::DeadlineExceeded,
                ..
            } => Error::DeadlineExceeded {
                timeout: self.timeout,
            },
            other => other,
        }
    }

    /// A plain reply instead of a stream: a fault, or every item in one list.
    fn collect(&mut self, message: &ReplyMessage) -> Option<Result<T, Error>> {
        self.pending = None;
        self.done = true;
        match decode_reply::<Vec<T>, IgnoredAny>(message) {
            Ok(Ok(items)) => {
                self.collected = items.into();
                self.collected.pop_front().map(Ok)
            }
            Ok(Err(_)) => Some(Err(Error::Decode {
                reason: "a streamed reply came as \"err\"".into(),
            })),
            Err(err) => Some(Err(self.at_deadline(err))),
        }
    }
}

impl<T> Drop for StreamCall<T> {
    fn drop(&mut self) {
        // Dropped before its end: the caller gave up on the stream.
        if !self.done && self.published.load(Ordering::SeqCst) {
            self.client
                .send_cancel(&self.service, &self.call_id, self.deadline);
        }
    }
}
