//! Read stamps and drains of a [`FrameReader`]: when each message arrived
//! (for the server's deadlines and queue-delay shedding), and reading what
//! waits in the socket without blocking so that a backlog carries its true
//! age. Apart from the framing because only the server uses them; the
//! reader's fields they keep (`last_read`, `base`, `stamps`, `drained_at`)
//! are documented on the struct.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::{FrameReader, MAX_READ};

/// The most stamps of drained reads kept ([`FrameReader::drain_nowait`]):
/// at one drain a millisecond, the exact age of over 100 ms of backlog.
/// Past it the oldest is dropped, so its bytes take the next (later)
/// stamp: an age is only ever under-, never overstated.
const MAX_STAMPS: usize = 128;

/// A read that returns at once: `WouldBlock` when nothing is waiting,
/// `Ok(0)` at end of stream.
pub(crate) trait ReadNowait {
    fn read_nowait(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl<R: Read> FrameReader<R> {
    /// Stamps each read that brings bytes with its time (one clock read per
    /// read syscall, not per message), for [`received`](Self::received):
    /// the server counts a call's wait in this buffer against its deadline.
    pub(crate) fn stamp_reads(&mut self) {
        self.last_read = Some(Instant::now());
    }

    /// When the message last handed out arrived: the time the read that
    /// completed it returned (a message found whole in the buffer makes no
    /// read, so it keeps the stamp of the read that brought it, however long
    /// it waited there). `None` unless [`stamp_reads`](Self::stamp_reads)
    /// was called.
    ///
    /// After [`drain_nowait`](Self::drain_nowait), the stamp is that of the
    /// read that brought the message's last byte, which can be older than
    /// the last read.
    pub(crate) fn received(&mut self) -> Option<Instant> {
        if !self.stamps.is_empty() {
            let end = self.base + (self.start + self.handed_out) as u64;
            while let Some(&(e, t)) = self.stamps.front() {
                if e >= end {
                    return Some(t);
                }
                // Bytes all handed out: no later message needs it.
                self.stamps.pop_front();
            }
        }
        self.last_read
    }
}

impl<R: Read + ReadNowait> FrameReader<R> {
    /// Whether `every` has passed since the last read or drain that was
    /// due (and if so, counts now as one): a reader that is only briefly
    /// behind pays a clock read, not a syscall.
    pub(crate) fn drain_due(&mut self, every: Duration) -> bool {
        let Some(read) = self.last_read else {
            return false;
        };
        let now = Instant::now();
        let last = self.drained_at.map_or(read, |d| d.max(read));
        if now.saturating_duration_since(last) < every {
            return false;
        }
        self.drained_at = Some(now);
        true
    }

    /// Reads what the stream has waiting, without blocking, while fewer
    /// than `cap` bytes are buffered; stamps it. Returns the bytes read.
    ///
    /// For a reader that is behind (whole messages buffered): the queue
    /// then moves from the socket, where its age is invisible, into this
    /// buffer, where each message keeps the stamp of the read that brought
    /// it (`received`), so the server sees how long a call waited and can
    /// refuse a stale one cheaply. A peeked message stays valid. Past `cap`
    /// nothing is read: the peer is held back by TCP, as without drains.
    pub(crate) fn drain_nowait(&mut self, cap: usize) -> io::Result<usize> {
        let Some(before) = self.last_read else {
            return Ok(0);
        };
        if self.eof || self.handed_out != 0 {
            return Ok(0);
        }
        let buffered_end = self.base + self.end as u64;
        let mut total = 0;
        while self.end - self.start < cap {
            if self.buf.len() - self.end < MAX_READ / 2 {
                if self.start > 0 {
                    self.compact();
                }
                let target = (self.end + MAX_READ).min(self.start + cap);
                if self.buf.len() < target {
                    self.buf.resize(target, 0);
                }
            }
            let upto = self.buf.len().min(self.start + cap);
            match self.inner.read_nowait(&mut self.buf[self.end..upto]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.end += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if total > 0 {
            // Bytes buffered before keep the stamp of the read that
            // brought them (unless a stamp already covers them).
            if self.stamps.back().is_none_or(|&(e, _)| e < buffered_end) {
                self.stamps.push_back((buffered_end, before));
            }
            let now = Instant::now();
            self.last_read = Some(now);
            self.stamps.push_back((self.base + self.end as u64, now));
            while self.stamps.len() > MAX_STAMPS {
                self.stamps.pop_front();
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::Codec;

    /// A reader that hands out one piece per read.
    struct Pieces(Vec<&'static [u8]>);
    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let p = self.0.remove(0);
            out[..p.len()].copy_from_slice(p);
            Ok(p.len())
        }
    }

    #[test]
    fn a_message_is_stamped_with_the_read_that_completed_it() {
        let pieces = || Pieces(vec![b"{}\n1\n{}\n2\n{}\n", b"3\n"]);
        let mut r = FrameReader::new(pieces(), 1024);
        r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.received(), None, "not stamped unless asked");

        let mut r = FrameReader::new(pieces(), 1024);
        r.stamp_reads();
        let before = Instant::now();
        r.read_message(Codec::Json).unwrap().unwrap();
        let first = r.received().unwrap();
        assert!(first >= before);
        // Buffered by the same read: the same stamp, however late it is
        // handed out.
        std::thread::sleep(std::time::Duration::from_millis(2));
        r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.received(), Some(first));
        // Completed by the next read: that read's stamp.
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.bytes(m.body).trim_ascii(), b"3");
        assert!(r.received().unwrap() >= first + std::time::Duration::from_millis(2));
    }

    /// Blocking reads from `blocking`, reads that cannot block from
    /// `waiting` (`WouldBlock` when it is empty).
    struct Scripted {
        blocking: Vec<&'static [u8]>,
        waiting: Vec<&'static [u8]>,
    }
    impl Read for Scripted {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.blocking.is_empty() {
                return Ok(0);
            }
            let p = self.blocking.remove(0);
            out[..p.len()].copy_from_slice(p);
            Ok(p.len())
        }
    }
    impl ReadNowait for Scripted {
        fn read_nowait(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.waiting.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let p = self.waiting.remove(0);
            let n = p.len().min(out.len());
            out[..n].copy_from_slice(&p[..n]);
            if n < p.len() {
                self.waiting.insert(0, &p[n..]);
            }
            Ok(n)
        }
    }

    #[test]
    fn drained_messages_keep_their_own_stamps_behind_older_ones() {
        let ms = std::time::Duration::from_millis;
        let mut r = FrameReader::new(
            Scripted {
                blocking: vec![b"{}\n1\n{}\n2\n{}\n"],
                waiting: vec![b"3\n{}\n4\n", b"{}\n5\n"],
            },
            1024,
        );
        r.stamp_reads();
        r.read_message(Codec::Json).unwrap().unwrap();
        let first = r.received().unwrap();
        // Behind: message 2 is buffered (peeked); a drain right after the
        // read is not due yet.
        assert!(r.has_buffered_message(Codec::Json));
        assert!(!r.drain_due(ms(1000)), "not due");
        std::thread::sleep(ms(2));
        assert!(r.drain_due(ms(1)));
        assert!(!r.drain_due(ms(1000)), "the last try counts");
        assert_eq!(r.drain_nowait(1 << 20).unwrap(), 12);
        // The peeked message is intact, and keeps the older stamp.
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.bytes(m.body).trim_ascii(), b"2");
        assert_eq!(r.received(), Some(first));
        // Message 3 was completed by the drain: its stamp is the drain's.
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.bytes(m.body).trim_ascii(), b"3");
        let drained = r.received().unwrap();
        assert!(drained >= first + ms(2), "the drain's own stamp");
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.bytes(m.body).trim_ascii(), b"4");
        assert_eq!(r.received(), Some(drained));
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.bytes(m.body).trim_ascii(), b"5");
        assert_eq!(r.received(), Some(drained));
        assert!(r.read_message(Codec::Json).unwrap().is_none());
    }

    #[test]
    fn a_drain_stops_at_its_cap() {
        let mut r = FrameReader::new(
            Scripted {
                blocking: vec![b"{}\n1\n{}\n2\n"],
                waiting: vec![b"{}\n3\n{}\n4\n{}\n5\n"],
            },
            1024,
        );
        r.stamp_reads();
        r.read_message(Codec::Json).unwrap().unwrap();
        assert!(r.has_buffered_message(Codec::Json));
        // A cap of 8 bytes lets in what fills the buffer to 8, no more.
        let before = r.end - r.start;
        let n = r.drain_nowait(8).unwrap();
        assert!(before < 8 && n > 0);
        assert_eq!(r.end - r.start, 8);
        assert_eq!(r.drain_nowait(8).unwrap(), 0);
    }
}
