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
//! a sender that enqueued just as the flusher was leaving). After
//! `flush_nowait` returns `Ok(false)`, bytes are left over and the caller
//! must see that some thread calls `flush`.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::transport::Stream;

/// Batches above this size are not kept around for reuse.
const KEEP_BATCH: usize = 256 * 1024;

pub(crate) struct SharedWriter {
    pending: Mutex<Vec<u8>>,
    io: Mutex<Io>,
    max_message: usize,
    /// Bytes ever enqueued, and ever written: a message that ended at
    /// offset `e` of the stream is out once `written >= e` (a client's
    /// timed-out call tells "writing" from "waiting for the reply" by it).
    /// `enqueued` changes only under the `pending` lock.
    enqueued: AtomicU64,
    written: AtomicU64,
}

struct Io {
    stream: Stream,
    batch: Vec<u8>,
    /// How much of `batch` is written already (a non-blocking flush can
    /// stop part way).
    sent: usize,
    broken: Option<io::ErrorKind>,
}

impl SharedWriter {
    pub(crate) fn new(stream: Stream, max_message: usize) -> Self {
        SharedWriter {
            pending: Mutex::new(Vec::with_capacity(1024)),
            io: Mutex::new(Io {
                stream,
                batch: Vec::with_capacity(1024),
                sent: 0,
                broken: None,
            }),
            max_message,
            enqueued: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Like [`enqueue`](SharedWriter::enqueue); returns where the message
    /// ends in the stream, to compare with [`written`](SharedWriter::written).
    pub(crate) fn enqueue_marked(
        &self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<u64> {
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
        Ok(self.enqueued.fetch_add(size as u64, Ordering::Relaxed) + size as u64)
    }

    /// Bytes written to the socket so far (see `enqueued`).
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Appends one message, encoded by `encode` straight into the batch. A
    /// message the encoder fails on, or one over the size limit, is taken
    /// back out and nothing of it is sent.
    pub(crate) fn enqueue(&self, encode: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        self.enqueue_marked(encode).map(|_| ())
    }

    /// Writes everything enqueued so far, unless another thread is already
    /// doing so (it then writes our bytes too). An error means the stream is
    /// broken: what was pending is lost and every later flush fails.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.flush_inner(false).map(|_| ())
    }

    /// Like `flush`, but never blocks: it writes what the socket takes at
    /// once and returns `Ok(false)` if bytes are left, which some thread
    /// must then `flush`. For the thread that reads a connection: if it
    /// blocked writing to a peer that is itself blocked writing to us, both
    /// would wait for ever.
    pub(crate) fn flush_nowait(&self) -> io::Result<bool> {
        self.flush_inner(true)
    }

    /// Bytes enqueued and not yet taken by a flusher.
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// For closing a connection without cutting a message short: waits
    /// until `deadline` for a flush in progress on another thread, then
    /// writes what the socket takes without blocking. `Ok(true)`: every
    /// message enqueued before the call has been written; `Ok(false)`: the
    /// peer stopped reading, or a flusher was still blocked at `deadline`.
    pub(crate) fn finish_nowait(&self, deadline: Instant) -> io::Result<bool> {
        self.flush_with(true, Some(deadline))
    }

    fn flush_inner(&self, nowait: bool) -> io::Result<bool> {
        self.flush_with(nowait, None)
    }

    fn flush_with(&self, nowait: bool, wait_until: Option<Instant>) -> io::Result<bool> {
        loop {
            let lock = match wait_until {
                Some(d) => self.io.try_lock_until(d).ok_or(false),
                None => self.io.try_lock().ok_or(true),
            };
            let mut guard = match lock {
                Ok(g) => g,
                Err(done) => return Ok(done),
            };
            let io = &mut *guard;
            loop {
                if let Some(kind) = io.broken {
                    self.pending.lock().clear();
                    return Err(kind.into());
                }
                if io.sent == io.batch.len() {
                    if io.batch.capacity() > KEEP_BATCH {
                        io.batch = Vec::with_capacity(1024);
                    } else {
                        io.batch.clear();
                    }
                    io.sent = 0;
                    let mut pending = self.pending.lock();
                    if pending.is_empty() {
                        break;
                    }
                    std::mem::swap(&mut *pending, &mut io.batch);
                }
                let before = io.sent;
                let wrote = write_some(io, nowait);
                self.written
                    .fetch_add((io.sent - before) as u64, Ordering::Release);
                match wrote {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    Err(e) => {
                        io.broken = Some(e.kind());
                        self.pending.lock().clear();
                        return Err(e);
                    }
                }
            }
            drop(guard);
            if self.pending.lock().is_empty() {
                return Ok(true);
            }
        }
    }
}

/// Writes the rest of `io.batch`; `Ok(false)` if the socket would block and
/// `nowait` is set.
fn write_some(io: &mut Io, nowait: bool) -> io::Result<bool> {
    while io.sent < io.batch.len() {
        let rest = &io.batch[io.sent..];
        let written = if nowait {
            io.stream.send_nowait(rest)
        } else {
            io.stream.write(rest)
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io.sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if nowait && e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn flush_nowait_never_blocks_and_flush_finishes_the_job() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let w = SharedWriter::new(Stream::unix(a), 64 << 20);
        // Far more than the socket buffer holds, with the peer not reading.
        let total: usize = 8 << 20;
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        for _ in 0..total / chunk.len() {
            w.enqueue(|out| {
                out.extend_from_slice(&chunk);
                Ok(())
            })
            .unwrap();
        }
        let t0 = std::time::Instant::now();
        assert!(
            !w.flush_nowait().unwrap(),
            "a full socket leaves bytes over"
        );
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(1),
            "it did not block"
        );
        // Once the peer reads, a blocking flush sends the rest, in order.
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; total];
            b.read_exact(&mut got).unwrap();
            got
        });
        w.flush().unwrap();
        let got = reader.join().unwrap();
        assert!(
            got.chunks(chunk.len()).all(|c| c == chunk),
            "bytes out of order"
        );
    }
}
