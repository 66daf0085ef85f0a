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
//!
//! # The queue cap (backpressure)
//!
//! Bytes *queued* are those enqueued and not yet written: `pending` plus the
//! unsent rest of the batch a flusher is writing. `enqueue` itself never
//! refuses or blocks on a full queue (a reply already computed must not be
//! lost, and a handler must not wait on its peer); instead whoever *reads*
//! new work (the server's leader, a client's caller) looks at
//! [`SharedWriter::is_full`] first and, past the cap, waits with
//! [`SharedWriter::wait_room`] until a flusher has drained the queue below
//! it. The queue then exceeds the cap by at most what was already in flight.
//!
//! Cost on the batching fast path: one relaxed store per enqueue (the new
//! length of `pending`, under the lock already held) and no syscall. The
//! flusher publishes how much of its batch is unsent after each write, and
//! takes the `room` lock to wake waiters only when some thread is waiting.
//!
//! Invariant (no lost wake-up): a waiter registers in `waiters` and checks
//! `queued()` while holding `room.0`; a flusher publishes progress, then
//! reads `waiters` (both SeqCst) and notifies under `room.0`. Either the
//! waiter sees the progress, or the flusher sees the waiter and its
//! notification comes after the waiter sleeps.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::wire::transport::Stream;

/// Batches above this size are not kept around for reuse.
const KEEP_BATCH: usize = 256 * 1024;

pub(crate) struct SharedWriter {
    pending: Mutex<Vec<u8>>,
    io: Mutex<Io>,
    max_message: usize,
    /// `pending.len()`, stored by whoever holds `pending` (relaxed: a
    /// gauge, read without the lock).
    pending_bytes: AtomicUsize,
    /// The unsent part of the batch being written, stored by the holder
    /// of `io`.
    unsent: AtomicUsize,
    /// Past this many queued bytes `is_full` says so (usize::MAX: no cap).
    cap: usize,
    /// Threads inside `wait_room`.
    waiters: AtomicUsize,
    room: (Mutex<()>, Condvar),
    /// Bytes ever enqueued, and ever written: a message that ended at
    /// offset `e` of the stream is out once `written >= e` (a client's
    /// timed-out call tells "writing" from "waiting for the reply" by it).
    /// `enqueued` changes only under the `pending` lock.
    enqueued: AtomicU64,
    written: AtomicU64,
    /// Set once on a gob connection ([`SharedWriter::use_gob`]): the
    /// stream's type definitions so far. Messages are encoded as
    /// self-contained fragments and rewritten into stream form under the
    /// `pending` lock (the only place this mutex is taken, so it is never
    /// contended), so definitions go out in enqueue order, before the
    /// first message that uses them. JSON and MessagePack writers leave it
    /// unset and pay one load and untaken branch per message.
    #[cfg(feature = "gob")]
    gob: std::sync::OnceLock<Mutex<crate::wire::codec::gob::GobSend>>,
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
            pending_bytes: AtomicUsize::new(0),
            unsent: AtomicUsize::new(0),
            cap: usize::MAX,
            waiters: AtomicUsize::new(0),
            room: (Mutex::new(()), Condvar::new()),
            enqueued: AtomicU64::new(0),
            written: AtomicU64::new(0),
            #[cfg(feature = "gob")]
            gob: std::sync::OnceLock::new(),
        }
    }

    /// Makes this a gob stream's writer: from now on every message
    /// enqueued is a gob fragment sequence, rewritten into stream form.
    /// Call before the first message is enqueued.
    #[cfg(feature = "gob")]
    pub(crate) fn use_gob(&self) {
        let _ = self.gob.set(Mutex::new(Default::default()));
    }

    /// Like [`enqueue`](SharedWriter::enqueue); returns where the message
    /// ends in the stream, to compare with [`written`](SharedWriter::written).
    pub(crate) fn enqueue_marked(
        &self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<u64> {
        let mut pending = self.pending.lock();
        let mark = pending.len();
        #[allow(unused_mut)]
        let mut res = encode(&mut pending);
        #[cfg(feature = "gob")]
        let mut gob_rollback = None;
        #[cfg(feature = "gob")]
        if let (Some(gob), Ok(())) = (self.gob.get(), &res) {
            let frags = pending.split_off(mark);
            let mut gob = gob.lock();
            match gob.rebase(&frags, &mut pending) {
                Ok(checkpoint) => gob_rollback = Some((gob, checkpoint)),
                Err(message) => {
                    res = Err(Error::Encode {
                        what: "gob message".into(),
                        message,
                    })
                }
            }
        }
        let size = pending.len() - mark;
        if res.is_err() || size > self.max_message {
            pending.truncate(mark);
            // Not sent: the types it defined are not defined on the stream.
            #[cfg(feature = "gob")]
            if let Some((mut gob, checkpoint)) = gob_rollback {
                gob.rollback(checkpoint);
            }
            res?;
            return Err(Error::MessageTooLarge {
                size,
                limit: self.max_message,
            });
        }
        self.pending_bytes.store(pending.len(), Ordering::Relaxed);
        Ok(self.enqueued.fetch_add(size as u64, Ordering::Relaxed) + size as u64)
    }

    /// Bytes enqueued so far (see `enqueued`).
    pub(crate) fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::Relaxed)
    }

    /// Bytes written to the socket so far (see `enqueued`).
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    // Used by the server and the client as each adopts the cap.
    #[allow(dead_code)]
    /// Sets the queue cap (see the module notes); 0 is taken as 1.
    pub(crate) fn with_queue_cap(mut self, cap: usize) -> Self {
        self.cap = cap.max(1);
        self
    }

    // Used by the server and the client as each adopts the cap.
    #[allow(dead_code)]
    /// The queue cap (usize::MAX when none was set).
    pub(crate) fn queue_cap(&self) -> usize {
        self.cap
    }

    /// Bytes enqueued and not yet written (a gauge: exact when nothing is
    /// being enqueued or written at the same moment).
    pub(crate) fn queued(&self) -> usize {
        self.pending_bytes
            .load(Ordering::Relaxed)
            .saturating_add(self.unsent.load(Ordering::Relaxed))
    }

    /// Whether the queue is at or past its cap: the caller should read no
    /// new work before [`wait_room`](Self::wait_room) says there is room.
    /// Two relaxed loads; meant for the hot path.
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.queued() >= self.cap
    }

    // Used by the server and the client as each adopts the cap.
    #[allow(dead_code)]
    /// Waits until the queue is below its cap, or `deadline` (None: no
    /// limit). True if there is room. Some thread must be flushing
    /// meanwhile (after `flush_nowait` returns `Ok(false)`, start one), or
    /// nothing drains the queue. A broken stream counts as room: its queue
    /// is dropped, and the next `flush` reports the error.
    pub(crate) fn wait_room(&self, deadline: Option<Instant>) -> bool {
        if !self.is_full() {
            return true;
        }
        let mut guard = self.room.0.lock();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let room = loop {
            // SeqCst loads pair with the flusher's SeqCst stores (see the
            // module notes).
            let queued = self
                .pending_bytes
                .load(Ordering::SeqCst)
                .saturating_add(self.unsent.load(Ordering::SeqCst));
            if queued < self.cap {
                break true;
            }
            match deadline {
                Some(d) => {
                    if self.room.1.wait_until(&mut guard, d).timed_out() {
                        break !self.is_full();
                    }
                }
                None => self.room.1.wait(&mut guard),
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        room
    }

    /// Publishes the flusher's progress and wakes waiters if the queue is
    /// now below the cap. Off the enqueue path: called once per write.
    fn set_unsent(&self, n: usize) {
        self.unsent.store(n, Ordering::SeqCst);
        self.wake_if_room();
    }

    fn wake_if_room(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 && !self.is_full() {
            let _guard = self.room.0.lock();
            self.room.1.notify_all();
        }
    }

    /// Drops everything pending (the stream is broken) and wakes waiters.
    fn drop_pending(&self) {
        let mut pending = self.pending.lock();
        pending.clear();
        self.pending_bytes.store(0, Ordering::SeqCst);
        drop(pending);
        self.set_unsent(0);
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
                    self.drop_pending();
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
                    // Moved, not written: the sum `queued` stays the same.
                    self.unsent.store(io.batch.len(), Ordering::SeqCst);
                    self.pending_bytes.store(0, Ordering::SeqCst);
                }
                // `written` counts the batch's bytes as they go: it is the
                // earlier batches' total plus `io.sent`, and changes only
                // under `io`.
                let (len, base) = (io.batch.len(), self.written() - io.sent as u64);
                let wrote = write_some(io, nowait, |left| {
                    self.written
                        .store(base + (len - left) as u64, Ordering::Release);
                    self.set_unsent(left)
                });
                match wrote {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    Err(e) => {
                        io.broken = Some(e.kind());
                        io.sent = io.batch.len();
                        self.drop_pending();
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
/// `nowait` is set. `progress` is told the unsent length after each write.
fn write_some(io: &mut Io, nowait: bool, progress: impl Fn(usize)) -> io::Result<bool> {
    while io.sent < io.batch.len() {
        let rest = &io.batch[io.sent..];
        let written = if nowait {
            io.stream.send_nowait(rest)
        } else {
            io.stream.write(rest)
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                io.sent += n;
                progress(io.batch.len() - io.sent);
            }
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

    #[cfg(feature = "gob")]
    #[test]
    fn a_gob_message_refused_as_too_large_takes_its_definitions_back() {
        use crate::wire::codec::Codec;
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Note {
            s: String,
        }
        let (a, mut b) = UnixStream::pair().unwrap();
        let w = SharedWriter::new(Stream::unix(a), 200);
        w.use_gob();
        let big = Note { s: "x".repeat(300) };
        let refused = w.enqueue(|out| Codec::Gob.encode_into(out, &big, "note"));
        assert!(matches!(refused, Err(Error::MessageTooLarge { .. })));
        let small = Note { s: "y".into() };
        w.enqueue(|out| Codec::Gob.encode_into(out, &small, "note"))
            .unwrap();
        w.flush().unwrap();
        drop(w);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        // The stream defines Note again before the value: alone, it is a
        // whole gob stream.
        let back: Note = Codec::Gob.decode(&got, "note").unwrap();
        assert_eq!(back, small);
    }

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

    fn chunk_writer(cap: usize) -> (SharedWriter, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            SharedWriter::new(Stream::unix(a), 64 << 20).with_queue_cap(cap),
            b,
        )
    }

    fn enqueue_bytes(w: &SharedWriter, n: usize) {
        w.enqueue(|out| {
            out.resize(out.len() + n, 7);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn queued_counts_pending_and_the_unsent_batch_and_is_full_at_the_cap() {
        let (w, _peer) = chunk_writer(1 << 20);
        assert_eq!(w.queued(), 0);
        enqueue_bytes(&w, 600 << 10);
        assert_eq!(w.queued(), 600 << 10);
        assert!(!w.is_full());
        enqueue_bytes(&w, 600 << 10);
        assert!(w.is_full(), "1200 KiB queued against a 1 MiB cap");
        // The peer does not read: part of the batch stays unsent, and
        // still counts.
        assert!(!w.flush_nowait().unwrap());
        let left = w.queued();
        assert!(left > 0 && left < 1200 << 10, "{left}");
        assert_eq!(w.pending_len(), 0, "all of it moved into the batch");
    }

    #[test]
    fn wait_room_times_out_while_the_peer_does_not_read() {
        let (w, _peer) = chunk_writer(256 << 10);
        enqueue_bytes(&w, 4 << 20);
        assert!(!w.flush_nowait().unwrap());
        let t0 = Instant::now();
        assert!(!w.wait_room(Some(t0 + std::time::Duration::from_millis(100))));
        assert!(t0.elapsed() >= std::time::Duration::from_millis(100));
    }

    #[test]
    fn wait_room_wakes_when_a_flusher_drains_below_the_cap() {
        let (w, mut peer) = chunk_writer(256 << 10);
        let w = std::sync::Arc::new(w);
        let total = 4 << 20;
        enqueue_bytes(&w, total);
        assert!(!w.flush_nowait().unwrap());
        assert!(w.is_full());
        let flusher = {
            let w = w.clone();
            std::thread::spawn(move || w.flush().unwrap())
        };
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; total];
            peer.read_exact(&mut got).unwrap();
        });
        // Generous: only a lost wake-up could take this long.
        let by = Instant::now() + std::time::Duration::from_secs(20);
        assert!(w.wait_room(Some(by)), "room came once the peer read");
        assert!(Instant::now() < by);
        flusher.join().unwrap();
        reader.join().unwrap();
        assert_eq!(w.queued(), 0);
    }

    #[test]
    fn a_broken_stream_wakes_waiters_and_empties_the_queue() {
        let (w, peer) = chunk_writer(256 << 10);
        let w = std::sync::Arc::new(w);
        enqueue_bytes(&w, 4 << 20);
        assert!(!w.flush_nowait().unwrap());
        let waiter = {
            let w = w.clone();
            std::thread::spawn(move || w.wait_room(None))
        };
        let flusher = {
            let w = w.clone();
            std::thread::spawn(move || w.flush())
        };
        drop(peer);
        assert!(waiter.join().unwrap(), "woken, with room");
        assert!(flusher.join().unwrap().is_err());
        assert_eq!(w.queued(), 0);
    }
}
