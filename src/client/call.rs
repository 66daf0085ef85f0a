//! A call in flight, returned by [`Client::go`](super::Client::go).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError};

use super::Inner;
use crate::error::{Error, Result};

/// A call sent and not yet waited for.
///
/// Wait for it ([`wait`](Call::wait), [`wait_timeout`](Call::wait_timeout)),
/// poll it ([`try_wait`](Call::try_wait)) or select on its
/// [`receiver`](Call::receiver) together with other channels. Dropping it
/// abandons the reply.
pub struct Call<R> {
    pub(super) client: Arc<Inner>,
    pub(super) seq: u64,
    pub(super) method: String,
    pub(super) rx: Receiver<Result<R>>,
}

impl<R> Call<R> {
    /// `Service.Method` of this call.
    pub fn service_method(&self) -> &str {
        &self.method
    }

    /// The channel the result arrives on, for `crossbeam_channel::select!`.
    /// Exactly one result is ever sent.
    pub fn receiver(&self) -> &Receiver<Result<R>> {
        &self.rx
    }

    /// The result if it has arrived.
    pub fn try_wait(&self) -> Option<Result<R>> {
        self.receiver().try_recv().ok()
    }

    /// Waits for the result.
    pub fn wait(self) -> Result<R> {
        let rx = self.receiver();
        self.client.lead_until(rx);
        self.finish(rx.recv())
    }

    /// Waits at most `timeout`; then the call is abandoned with
    /// [`Error::Timeout`] and its late reply discarded.
    pub fn wait_timeout(self, timeout: Duration) -> Result<R> {
        self.wait_until(Instant::now() + timeout, timeout)
    }

    /// Waits until `deadline`; see [`wait_timeout`](Call::wait_timeout).
    pub fn wait_deadline(self, deadline: Instant) -> Result<R> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.wait_until(deadline, timeout)
    }

    fn wait_until(self, deadline: Instant, timeout: Duration) -> Result<R> {
        let rx = self.receiver();
        match rx.recv_deadline(deadline) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                if self.client.forget(self.seq) {
                    Err(Error::Timeout {
                        method: self.method.clone(),
                        addr: self.client.addr.clone(),
                        timeout,
                    })
                } else {
                    // The reply is being handed over right now.
                    self.finish(rx.recv())
                }
            }
            Err(RecvTimeoutError::Disconnected) => self.finish(Err(RecvError)),
        }
    }

    pub(super) fn finish(&self, got: std::result::Result<Result<R>, RecvError>) -> Result<R> {
        got.unwrap_or_else(|_| Err(self.client.closed_error("call abandoned")))
    }
}

impl<R> std::fmt::Debug for Call<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("service_method", &self.method)
            .field("seq", &self.seq)
            .finish()
    }
}
