//! A writer shared by many threads that batches their messages.
//!
//! Senders append encoded messages to `pending` under a short lock, then try
//! to become the flusher. The flusher swaps the whole batch out and writes it
//! with one syscall, and keeps going while more arrived meanwhile; a sender
//! that finds a flusher at work just returns, its bytes ride in the next
//! batch. Under many callers several messages share one write, and nobody
//! waits for another's syscall.
//!
//! Invariant: after `flush` returns, every byte enqueued before the call has
//! been written or is being written by a flusher that will re-check
//! `pending` after it lets go of `io` (the re-check below closes the race of
//! a sender that enqueued just as the flusher was leaving).

use std::io::{self, Write};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::transport::Stream;

/// Batches above this size are not kept around for reuse.
const KEEP_BATCH: usize = 256 * 1024;

pub(crate) struct SharedWriter {
    pending: Mutex<Vec<u8>>,
    io: Mutex<Io>,
    max_message: usize,
}

struct Io {
    stream: Stream,
    batch: Vec<u8>,
    broken: Option<io::ErrorKind>,
}

impl SharedWriter {
    pub(crate) fn new(stream: Stream, max_message: usize) -> Self {
        SharedWriter {
            pending: Mutex::new(Vec::with_capacity(1024)),
            io: Mutex::new(Io {
                stream,
                batch: Vec::with_capacity(1024),
                broken: None,
            }),
            max_message,
        }
    }

    /// Appends one message, encoded by `encode` straight into the batch. A
    /// message the encoder fails on, or one over the size limit, is taken
    /// back out and nothing of it is sent.
    pub(crate) fn enqueue(&self, encode: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        let mut pending = self.pending.lock();
        let mark = pending.len();
        let res = encode(&mut pending);
        let size = pending.len() - mark;
        if res.is_err() || size > self.max_message {
            pending.truncate(mark);
            res?;
            return Err(Error::MessageTooLarge {
                size,
                limit: self.max_message,
            });
        }
        Ok(())
    }

    /// Writes everything enqueued so far, unless another thread is already
    /// doing so (it then writes our bytes too). An error means the stream is
    /// broken: what was pending is lost and every later flush fails.
    pub(crate) fn flush(&self) -> io::Result<()> {
        loop {
            let Some(mut guard) = self.io.try_lock() else {
                return Ok(());
            };
            let io = &mut *guard;
            loop {
                if let Some(kind) = io.broken {
                    self.pending.lock().clear();
                    return Err(kind.into());
                }
                {
                    let mut pending = self.pending.lock();
                    if pending.is_empty() {
                        break;
                    }
                    std::mem::swap(&mut *pending, &mut io.batch);
                }
                let res = io.stream.write_all(&io.batch);
                if io.batch.capacity() > KEEP_BATCH {
                    io.batch = Vec::with_capacity(1024);
                } else {
                    io.batch.clear();
                }
                if let Err(e) = res {
                    io.broken = Some(e.kind());
                    self.pending.lock().clear();
                    return Err(e);
                }
            }
            drop(guard);
            if self.pending.lock().is_empty() {
                return Ok(());
            }
        }
    }
}
