//! A cancellation signal shared between the parts of one call.
//!
//! The client side hands a [`CancelToken`] to a call ([`CallOptions::cancel_token`]) to cancel
//! it explicitly; the server side gives every handler one, reachable through
//! [`Context::is_cancelled`](crate::Context::is_cancelled) and
//! [`Context::cancelled`](crate::Context::cancelled), and trips it when the caller cancelled
//! the call or its deadline passed.
//!
//! [`CallOptions::cancel_token`]: crate::CallOptions::cancel_token

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A one-way "cancel" flag that can be awaited. Cheap to clone; clones share the flag.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let token = warren_rpc::CancelToken::new();
/// let watcher = token.clone();
/// assert!(!watcher.is_cancelled());
/// token.cancel();
/// watcher.cancelled().await; // returns at once: the flag is set
/// assert!(watcher.is_cancelled());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Inner>);

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Cancels: wakes every [`CancelToken::cancelled`] waiter. Cancelling twice is harmless.
    pub fn cancel(&self) {
        if !self.0.cancelled.swap(true, Ordering::SeqCst) {
            self.0.notify.notify_waiters();
        }
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Waits until the token is cancelled (returns at once if it is).
    pub async fn cancelled(&self) {
        loop {
            // Registered before the check, so a cancel in between is not missed.
            let notified = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Two tokens are equal when they are clones of one another (they share the flag).
impl PartialEq for CancelToken {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CancelToken {}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_on_cancel() {
        let token = CancelToken::new();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move { token.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        assert!(token.is_cancelled());
    }
}
