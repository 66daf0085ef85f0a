//! The watchers: N long polls (`GET ?service=S&watch=VERSION`), each on a
//! keep-alive connection of its own, all read by ONE thread through
//! `poll(2)`, so that a thousand watchers cost the measured machine one
//! thread, not a thousand. Each answer is stamped when its last byte is
//! read; one whose version moved counts as a change seen (a poll that
//! timed out at the registry answers with its version unchanged and is
//! simply sent again).
//!
//! Concurrency: the watcher thread owns the sockets; what it saw is
//! published in [`Board`] under one mutex, and the condvar is notified
//! after each batch of answers so that the driver can wait for "every
//! watcher of this change has answered" without spinning.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::http::{parse, Target};

/// What one watcher has seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// Answers whose version differed from the one asked about.
    pub changes: u64,
    /// When the last of them was read.
    pub at: Option<Instant>,
    pub version: u64,
}

/// Shared between the watcher thread and the driver.
#[derive(Default)]
pub struct Board {
    pub seen: Vec<Seen>,
    /// Answers that were not 200 (e.g. 503: too many long polls).
    pub refused: u64,
    /// Connections the registry closed (or that failed), opened again.
    pub reconnects: u64,
    /// The last error, for the report.
    pub last_error: Option<String>,
}

pub struct Watchers {
    pub board: Arc<(Mutex<Board>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Watch {
    service: String,
    stream: TcpStream,
    known: u64,
    out: Vec<u8>,
    sent: usize,
    inbuf: Vec<u8>,
    /// After a refusal: when to ask again.
    retry_at: Option<Instant>,
}

/// How long each poll asks to wait: the registry's maximum, so that few
/// time out during a run.
const WAIT: &str = "300s";

impl Watchers {
    /// Opens `n` watchers, watcher `i` on `services[i % services.len()]`,
    /// and starts the thread that reads them.
    pub fn open(target: &Target, services: &[String], n: usize) -> Result<Watchers, String> {
        let mut watches = Vec::with_capacity(n);
        for i in 0..n {
            let service = services[i % services.len()].clone();
            let stream = target
                .connect()
                .map_err(|e| format!("watcher {i}: connect {}: {e}", target.addr))?;
            stream
                .set_nonblocking(true)
                .map_err(|e| format!("watcher {i}: {e}"))?;
            watches.push(Watch {
                out: target.watch(&service, 0, WAIT),
                service,
                stream,
                known: 0,
                sent: 0,
                inbuf: Vec::new(),
                retry_at: None,
            });
        }
        let board = Arc::new((
            Mutex::new(Board {
                seen: vec![Seen::default(); n],
                ..Board::default()
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s, t) = (board.clone(), stop.clone(), target.clone());
        let thread = std::thread::Builder::new()
            .name("scale-watchers".into())
            .spawn(move || run(&t, watches, &b, &s))
            .map_err(|e| format!("cannot start the watcher thread: {e}"))?;
        Ok(Watchers {
            board,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits (until `deadline`) for `pred` over the board to hold; whether
    /// it did.
    pub fn wait_until(&self, deadline: Instant, mut pred: impl FnMut(&Board) -> bool) -> bool {
        let (lock, cv) = &*self.board;
        let mut b = lock.lock();
        loop {
            if pred(&b) {
                return true;
            }
            if cv.wait_until(&mut b, deadline).timed_out() {
                return pred(&b);
            }
        }
    }

    pub fn snapshot(&self) -> Vec<Seen> {
        self.board.0.lock().seen.clone()
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // The thread wakes every 50 ms at most to look at `stop`.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn note_error(board: &(Mutex<Board>, Condvar), e: String) {
    board.0.lock().last_error = Some(e);
}

/// The watcher thread's loop, until `stop`.
fn run(target: &Target, mut ws: Vec<Watch>, board: &(Mutex<Board>, Condvar), stop: &AtomicBool) {
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(ws.len());
    let mut chunk = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        fds.clear();
        for w in &mut ws {
            if w.retry_at.is_some_and(|t| t <= now) {
                w.retry_at = None;
            }
            let mut events = libc::POLLIN;
            if w.sent < w.out.len() && w.retry_at.is_none() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: w.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs,
        // alive and not aliased for the call's duration.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if ready <= 0 {
            continue;
        }
        let mut answers: Vec<(usize, u64, Instant)> = Vec::new();
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            let w = &mut ws[i];
            if fd.revents & libc::POLLOUT != 0 {
                match w.stream.write(&w.out[w.sent..]) {
                    Ok(n) => w.sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => reconnect(target, w, board, format!("watcher {i}: send: {e}")),
                }
            }
            if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if let Some(ans) = read_answers(target, w, i, &mut chunk, board) {
                    answers.extend(ans);
                }
            }
        }
        if !answers.is_empty() {
            let (lock, cv) = board;
            let mut b = lock.lock();
            for (i, version, at) in answers {
                let s = &mut b.seen[i];
                s.changes += 1;
                s.at = Some(at);
                s.version = version;
            }
            drop(b);
            cv.notify_all();
        }
    }
}

/// Reads what `w` has; returns the changes seen (watcher, version, when).
fn read_answers(
    target: &Target,
    w: &mut Watch,
    i: usize,
    chunk: &mut [u8],
    board: &(Mutex<Board>, Condvar),
) -> Option<Vec<(usize, u64, Instant)>> {
    let mut out = Vec::new();
    loop {
        match w.stream.read(chunk) {
            Ok(0) => {
                reconnect(
                    target,
                    w,
                    board,
                    format!("watcher {i}: the registry closed it"),
                );
                return Some(out);
            }
            Ok(n) => w.inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                reconnect(target, w, board, format!("watcher {i}: read: {e}"));
                return Some(out);
            }
        }
    }
    let at = Instant::now();
    loop {
        match parse(&w.inbuf) {
            Ok(None) => break,
            Ok(Some((answer, used))) => {
                w.inbuf.drain(..used);
                match (answer.status, answer.version()) {
                    (200, Some(v)) => {
                        // The first answer (known 0) counts too: the
                        // driver waits for one per watcher before it starts.
                        if v != w.known {
                            out.push((i, v, at));
                            w.known = v;
                        }
                        w.out = target.watch(&w.service, w.known, WAIT);
                        w.sent = 0;
                    }
                    (status, _) => {
                        let mut b = board.0.lock();
                        b.refused += 1;
                        b.last_error = Some(format!(
                            "watcher {i}: status {status}: {}",
                            String::from_utf8_lossy(&answer.body).trim()
                        ));
                        drop(b);
                        w.out = target.watch(&w.service, w.known, WAIT);
                        w.sent = 0;
                        w.retry_at = Some(Instant::now() + Duration::from_millis(200));
                    }
                }
            }
            Err(e) => {
                reconnect(target, w, board, format!("watcher {i}: {e}"));
                break;
            }
        }
    }
    Some(out)
}

/// Opens `w`'s connection again and re-sends its poll (after 200 ms, so
/// that a registry refusing connections is not hammered).
fn reconnect(target: &Target, w: &mut Watch, board: &(Mutex<Board>, Condvar), why: String) {
    {
        let mut b = board.0.lock();
        b.reconnects += 1;
    }
    note_error(board, why);
    match target
        .connect()
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
    {
        Ok(s) => w.stream = s,
        Err(e) => note_error(board, format!("reconnect: {e}")),
    }
    w.inbuf.clear();
    w.out = target.watch(&w.service, w.known, WAIT);
    w.sent = 0;
    w.retry_at = Some(Instant::now() + Duration::from_millis(200));
}
