//! A measuring tool, not an example of geerpc: the raw-frames server of
//! the rawtcp anchor (shared `anchors/rawtcp`, the thread-per-connection
//! floor of issue 23's scale points) served instead by a few threads that
//! each wait on many connections with epoll. Driven by the anchor's own
//! pingpong load, it tells how far readiness-based serving alone would move
//! the floor at 64, 256 and 1,000 connections, with the clients unchanged
//! (one blocking thread per connection, as many client processes are): the
//! most such a server could give geerpc against tarpc, before geerpc's own
//! work per call. `benches/epoll_floor.sh` runs it against the anchors.
//!
//! ```text
//! epoll_floor serve --addr 127.0.0.1:PORT [--workers N]    (default 2)
//! ```
//!
//! Prints `ready` on stdout once listening, and its address on stderr. Frames as the anchor's: a request is
//! `len u32 LE | id u32 | method u8 | body`, Sum (0) adds two i64 LE and
//! Echo (1) returns the body; a reply is `len u32 LE | id u32 | body`.
//! Linux only (epoll). No limits, no timeouts: a floor, not a server.

#[cfg(target_os = "linux")]
fn main() {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("epoll_floor: Linux only (epoll)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::io::{self, ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::Arc;

    const METHOD_SUM: u8 = 0;
    const METHOD_ECHO: u8 = 1;
    const MAX_FRAME: usize = 16 << 20;

    /// One connection of a worker: what it read and has not yet answered,
    /// and replies not yet written.
    struct Conn {
        stream: TcpStream,
        inbuf: Vec<u8>,
        out: Vec<u8>,
    }

    struct Poller(RawFd);

    impl Poller {
        fn new() -> io::Result<Poller> {
            // SAFETY: a plain syscall; the result is checked.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Poller(fd))
        }

        fn ctl(&self, op: i32, fd: RawFd, events: u32) -> io::Result<()> {
            let mut ev = libc::epoll_event {
                events,
                u64: fd as u64,
            };
            // SAFETY: `ev` outlives the call; the kernel copies it.
            if unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
            loop {
                // SAFETY: `events` is valid for its length.
                let n = unsafe {
                    libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, -1)
                };
                if n >= 0 {
                    return Ok(n as usize);
                }
                let e = io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        if args.first().map(String::as_str) != Some("serve") {
            eprintln!("usage: epoll_floor serve --addr HOST:PORT [--workers N]");
            std::process::exit(2);
        }
        let addr = value("--addr").unwrap_or_else(|| "127.0.0.1:0".into());
        let workers: usize = value("--workers").and_then(|w| w.parse().ok()).unwrap_or(2);
        let listener = TcpListener::bind(&addr).expect("bind");
        let pollers: Vec<Arc<Poller>> = (0..workers.max(1))
            .map(|_| Arc::new(Poller::new().expect("epoll_create1")))
            .collect();
        // Each worker owns its connections; the acceptor hands them over
        // through a channel and the worker's epoll set (EPOLLIN on the
        // stream wakes the worker, which then drains the channel).
        let mut senders = Vec::new();
        for (i, poller) in pollers.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded::<TcpStream>();
            senders.push(tx);
            let poller = poller.clone();
            std::thread::Builder::new()
                .name(format!("epoll-floor-{i}"))
                .spawn(move || worker(&poller, &rx))
                .expect("spawn");
        }
        // The anchors' signal on stdout; the address on stderr (for
        // `--addr 127.0.0.1:0`).
        eprintln!(
            "epoll_floor: serving on {}",
            listener.local_addr().expect("local address")
        );
        println!("ready");
        let mut next = 0;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if stream.set_nodelay(true).is_err() || stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.as_raw_fd();
            let w = next % pollers.len();
            next += 1;
            // Into the channel first: the worker looks there when it sees
            // an fd it does not know yet.
            if senders[w].send(stream).is_ok() {
                let _ = pollers[w].ctl(
                    libc::EPOLL_CTL_ADD,
                    fd,
                    (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
                );
            }
        }
    }

    fn worker(poller: &Poller, incoming: &crossbeam_channel::Receiver<TcpStream>) {
        let mut conns: HashMap<RawFd, Conn> = HashMap::new();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match poller.wait(&mut events) {
                Ok(n) => n,
                Err(_) => return,
            };
            for ev in &events[..n] {
                let fd = ev.u64 as RawFd;
                if !conns.contains_key(&fd) {
                    for s in incoming.try_iter() {
                        conns.insert(
                            s.as_raw_fd(),
                            Conn {
                                stream: s,
                                inbuf: Vec::new(),
                                out: Vec::new(),
                            },
                        );
                    }
                }
                let Some(conn) = conns.get_mut(&fd) else {
                    continue;
                };
                if serve(conn, &mut chunk).is_err() {
                    let _ = poller.ctl(libc::EPOLL_CTL_DEL, fd, 0);
                    conns.remove(&fd);
                }
            }
        }
    }

    /// Reads what is there, answers every whole request, writes the
    /// replies. Err ends the connection.
    fn serve(conn: &mut Conn, chunk: &mut [u8]) -> io::Result<()> {
        loop {
            match conn.stream.read(chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => conn.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut at = 0;
        while conn.inbuf.len() - at >= 9 {
            let hdr = &conn.inbuf[at..at + 9];
            let len = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as usize;
            if len > MAX_FRAME {
                return Err(ErrorKind::InvalidData.into());
            }
            if conn.inbuf.len() - at < 9 + len {
                break;
            }
            let (id, method) = (&hdr[4..8], hdr[8]);
            let body = &conn.inbuf[at + 9..at + 9 + len];
            match method {
                METHOD_SUM if len == 16 => {
                    let a = i64::from_le_bytes(body[0..8].try_into().unwrap());
                    let b = i64::from_le_bytes(body[8..16].try_into().unwrap());
                    conn.out.extend_from_slice(&8u32.to_le_bytes());
                    conn.out.extend_from_slice(id);
                    conn.out.extend_from_slice(&a.wrapping_add(b).to_le_bytes());
                }
                METHOD_ECHO => {
                    conn.out.extend_from_slice(&(len as u32).to_le_bytes());
                    conn.out.extend_from_slice(id);
                    conn.out.extend_from_slice(body);
                }
                _ => return Err(ErrorKind::InvalidData.into()),
            }
            at += 9 + len;
        }
        conn.inbuf.drain(..at);
        // Replies are small and the peer reads them: a write that would
        // block is waited out here (a floor, not a server).
        let mut done = 0;
        while done < conn.out.len() {
            match conn.stream.write(&conn.out[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        conn.out.clear();
        Ok(())
    }
}
