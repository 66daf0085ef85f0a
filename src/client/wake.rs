//! Waking a batch of blocked callers with one syscall.
//!
//! A connection's reader hands out a batch of replies, one to each of many
//! callers blocked waiting. Woken one by one, each caller is, on a busy
//! machine, run at once in the reader's place (it slept, so the scheduler
//! favours it) until it blocks again, and only then does the reader get the
//! CPU back to wake the next: two context switches per call. Woken all at
//! once, the reader is set aside once, the callers run one after another,
//! and the reader comes back to find their next requests queued: about one
//! switch per call, and the batch goes out in one write.
//!
//! On Linux a waiting caller holds one bit of a futex word and sleeps with
//! `FUTEX_WAIT_BITSET` on that bit. The reader marks the bits of the callers
//! it hands results to and, before it next blocks, wakes them all with one
//! `FUTEX_WAKE_BITSET` per word. A caller that finds no free bit (more than
//! 128 waiting on one connection), one that asked for its call's channel,
//! and every caller on other systems (and 32-bit Linux) wait on their
//! call's condition variable or channel instead, woken one by one. So does
//! every caller once the kernel has refused a futex wait (a seccomp
//! filter), and in tests every caller of a client made with
//! `FORCE_PORTABLE` set, whose wake set has no free place from the start:
//! that is how a Linux test runs the path other systems run.
//!
//! Invariant (no lost wake-up): a caller publishes its bit where the
//! completing thread will look, then reads its word's sequence number, then
//! checks for its result, and sleeps only while the word still holds that
//! number (the kernel compares and queues the sleeper atomically). The
//! completing thread stores the result, then reads the bit, and the wake
//! bumps the sequence number before waking. All of these are `SeqCst`, so
//! either the caller sees its result, or its bit is seen and its sleep ends
//! at the bump or at the wake. A bit marked after its caller left wakes the
//! bit's next holder for nothing; that caller checks and sleeps again.

/// A waiting caller's place: `word * 32 + bit + 1`; 0 means none.
pub(super) type Ticket = u32;

#[allow(unused_imports)] // SLEEPERS is for tests.
pub(super) use sys::{WakeSet, SLEEPERS};

#[cfg(test)]
thread_local! {
    /// Set by a test: wake sets made on this thread hand out no places, so
    /// their callers wait on condition variables as on every system without
    /// futexes (see `tests::a_client_without_futex_places_...`).
    pub(super) static FORCE_PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// 64-bit only: there `libc::timespec` is what `SYS_futex` expects (32-bit
// targets may have a 64-bit `time_t`, or only `SYS_futex_time64`).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod sys {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Instant;

    use super::Ticket;

    /// Futex words per connection.
    const WORDS: usize = 4;
    /// Callers that can sleep in one connection's wake set at once.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(in super::super) const SLEEPERS: usize = WORDS * 32;

    /// Set if the kernel refused a futex wait (a seccomp filter, say):
    /// from then on no places are handed out.
    static UNUSABLE: AtomicBool = AtomicBool::new(false);

    pub(in super::super) struct WakeSet {
        words: [Word; WORDS],
    }

    impl Default for WakeSet {
        fn default() -> WakeSet {
            let set = WakeSet {
                words: Default::default(),
            };
            // Tests force the portable path by taking every place for good:
            // each caller then finds none, as on other systems. Decided
            // here, once per connection; nothing on the call path.
            #[cfg(test)]
            if super::FORCE_PORTABLE.get() {
                for w in &set.words {
                    w.taken.store(u32::MAX, Ordering::Relaxed);
                }
            }
            set
        }
    }

    #[derive(Default)]
    struct Word {
        /// The futex: bumped by every wake.
        seq: AtomicU32,
        /// Bits held by waiting callers.
        taken: AtomicU32,
        /// Bits to wake when the batch ends.
        marked: AtomicU32,
    }

    impl WakeSet {
        /// A free place, or None (the caller waits some other way).
        pub(in super::super) fn acquire(&self) -> Option<Ticket> {
            if UNUSABLE.load(Ordering::Relaxed) {
                return None;
            }
            for (i, w) in self.words.iter().enumerate() {
                let mut taken = w.taken.load(Ordering::Relaxed);
                while taken != u32::MAX {
                    let bit = (!taken).trailing_zeros();
                    match w.taken.compare_exchange_weak(
                        taken,
                        taken | (1 << bit),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Some(i as u32 * 32 + bit + 1),
                        Err(now) => taken = now,
                    }
                }
            }
            None
        }

        pub(in super::super) fn release(&self, t: Ticket) {
            let (w, bit) = self.place(t);
            w.taken.fetch_and(!bit, Ordering::Relaxed);
        }

        /// Sleeps until `ready()` or `deadline`. `t` must be published
        /// where the completing thread reads it (see the module's invariant).
        /// Returns early if the kernel refuses the wait: the caller then
        /// waits on its condition variable, which is always notified too.
        pub(in super::super) fn wait(
            &self,
            t: Ticket,
            ready: impl Fn() -> bool,
            deadline: Option<Instant>,
        ) {
            let (w, bit) = self.place(t);
            loop {
                let seq = w.seq.load(Ordering::SeqCst);
                if ready() {
                    return;
                }
                let until = match deadline {
                    None => None,
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => Some(left),
                        _ => return,
                    },
                };
                if let Err(e) = futex::wait_bitset(&w.seq, seq, bit, until) {
                    if !UNUSABLE.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "rpc client: futex wait refused ({e}); callers wait on \
                             condition variables from now on"
                        );
                    }
                    return;
                }
            }
        }

        /// Notes a caller to wake when the batch ends (0: nobody).
        pub(in super::super) fn mark(&self, t: Ticket) {
            if t != 0 {
                let (w, bit) = self.place(t);
                w.marked.fetch_or(bit, Ordering::SeqCst);
            }
        }

        /// Wakes every caller marked so far; false if there were none.
        pub(in super::super) fn wake_marked(&self) -> bool {
            let mut woke = false;
            for w in &self.words {
                if w.marked.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let bits = w.marked.swap(0, Ordering::SeqCst);
                if bits != 0 {
                    w.seq.fetch_add(1, Ordering::SeqCst);
                    futex::wake_bitset(&w.seq, bits);
                    woke = true;
                }
            }
            woke
        }

        fn place(&self, t: Ticket) -> (&Word, u32) {
            let i = (t - 1) as usize;
            (&self.words[i / 32], 1 << (i % 32))
        }
    }

    pub(super) mod futex {
        use std::sync::atomic::AtomicU32;
        use std::time::Duration;

        /// Sleeps while `*word == expected` until a wake names one of
        /// `bits`, or `left` has passed. May return early (a signal, a
        /// mismatch): the caller checks again. An error means the kernel
        /// will not do this wait at all.
        pub(in super::super) fn wait_bitset(
            word: &AtomicU32,
            expected: u32,
            bits: u32,
            left: Option<Duration>,
        ) -> std::io::Result<()> {
            // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time.
            let abs = left.map(|left| {
                let mut now = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: `now` is a valid timespec to write.
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
                let nanos = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
                libc::timespec {
                    tv_sec: now
                        .tv_sec
                        .saturating_add(left.as_secs().min(i32::MAX as u64) as libc::time_t)
                        .saturating_add((nanos / 1_000_000_000) as libc::time_t),
                    tv_nsec: (nanos % 1_000_000_000) as _,
                }
            });
            let timeout = abs
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `word` is a live, aligned u32 for the whole call and
            // the kernel only reads it; `timeout` is null or points to a
            // timespec that outlives the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word.as_ptr(),
                    libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                    expected,
                    timeout,
                    std::ptr::null::<u32>(),
                    bits,
                )
            };
            if r == -1 {
                let e = std::io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EINTR | libc::ETIMEDOUT)
                ) {
                    return Err(e);
                }
            }
            Ok(())
        }

        /// Wakes every sleeper on `word` whose bits meet `bits`; if the
        /// kernel refuses that, every sleeper on `word` (they check again).
        pub(super) fn wake_bitset(word: &AtomicU32, bits: u32) {
            // SAFETY: as above; a wake only uses the address as a key.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word.as_ptr(),
                    libc::FUTEX_WAKE_BITSET | libc::FUTEX_PRIVATE_FLAG,
                    i32::MAX,
                    std::ptr::null::<libc::timespec>(),
                    std::ptr::null::<u32>(),
                    bits,
                )
            };
            if r == -1 {
                // SAFETY: as above.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        word.as_ptr(),
                        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                        i32::MAX,
                    )
                };
            }
        }
    }
}

/// Elsewhere there are no places: every caller waits on its call's
/// condition variable, and marking and waking do nothing.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
mod sys {
    use std::time::Instant;

    use super::Ticket;

    // Only the futex tests read it, and they are not built here.
    #[allow(dead_code)]
    pub(in super::super) const SLEEPERS: usize = 0;

    #[derive(Default)]
    pub(in super::super) struct WakeSet;

    impl WakeSet {
        pub(in super::super) fn acquire(&self) -> Option<Ticket> {
            None
        }
        pub(in super::super) fn release(&self, _: Ticket) {}
        pub(in super::super) fn wait(&self, _: Ticket, _: impl Fn() -> bool, _: Option<Instant>) {}
        pub(in super::super) fn mark(&self, _: Ticket) {}
        pub(in super::super) fn wake_marked(&self) -> bool {
            false
        }
    }
}

#[cfg(all(test, target_os = "linux", target_pointer_width = "64"))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn places_are_distinct_until_all_are_taken_and_come_back_when_released() {
        let set = WakeSet::default();
        let mut got: Vec<Ticket> = (0..SLEEPERS).map(|_| set.acquire().unwrap()).collect();
        assert!(set.acquire().is_none(), "only {SLEEPERS} places");
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), SLEEPERS);
        assert!(!got.contains(&0), "0 means no place");
        set.release(got[40]);
        assert_eq!(set.acquire(), Some(got[40]));
    }

    #[test]
    fn a_wait_the_kernel_refuses_is_an_error_not_a_spin() {
        let word = AtomicU32::new(0);
        // A zero bitset is invalid (EINVAL).
        let e = sys::futex::wait_bitset(&word, 0, 0, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        // A changed word is no error: the caller checks again.
        sys::futex::wait_bitset(&word, 1, 1, None).unwrap();
    }

    #[test]
    fn a_timed_wait_ends_at_its_deadline_and_a_ready_one_at_once() {
        let set = WakeSet::default();
        let t = set.acquire().unwrap();
        let t0 = Instant::now();
        set.wait(t, || false, Some(t0 + Duration::from_millis(50)));
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let t0 = Instant::now();
        set.wait(t, || true, None);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    /// Waiters sleep and a completer hands each its "result" as a reader
    /// does: result first, then the waiter's published place, then one wake
    /// for all it marked. A lost wake-up leaves a waiter asleep and the
    /// watchdog fails the test instead of hanging it.
    #[test]
    fn no_wake_up_is_lost() {
        const WAITERS: usize = 40; // more than one word
        const ROUNDS: u32 = 3000;
        let set = WakeSet::default();
        let ready: Vec<AtomicBool> = (0..WAITERS).map(|_| AtomicBool::new(false)).collect();
        let published: Vec<AtomicU32> = (0..WAITERS).map(|_| AtomicU32::new(0)).collect();
        let rounds: Vec<AtomicU32> = (0..WAITERS).map(|_| AtomicU32::new(0)).collect();
        let done = AtomicBool::new(false);
        let (finished_tx, finished_rx) = crossbeam_channel::bounded::<()>(WAITERS);
        std::thread::scope(|s| {
            for i in 0..WAITERS {
                let (set, ready, published, rounds, done) =
                    (&set, &ready, &published, &rounds, &done);
                let finished_tx = finished_tx.clone();
                s.spawn(move || {
                    for _ in 0..ROUNDS {
                        let t = set.acquire().unwrap();
                        published[i].store(t, Ordering::SeqCst);
                        // Not ready: yield before going to sleep, to widen
                        // the window a wake-up could be lost in.
                        let woken = || {
                            let r = ready[i].load(Ordering::SeqCst) || done.load(Ordering::SeqCst);
                            if !r {
                                std::thread::yield_now();
                            }
                            r
                        };
                        set.wait(t, woken, None);
                        if done.load(Ordering::SeqCst) {
                            return;
                        }
                        assert!(ready[i].load(Ordering::SeqCst), "woken without a result");
                        published[i].store(0, Ordering::SeqCst);
                        set.release(t);
                        ready[i].store(false, Ordering::SeqCst);
                        rounds[i].fetch_add(1, Ordering::SeqCst);
                    }
                    finished_tx.send(()).unwrap();
                });
            }
            s.spawn(|| {
                // Hands out at most one result per waiter and round.
                let mut handed = [0u32; WAITERS];
                while !done.load(Ordering::SeqCst) {
                    for i in 0..WAITERS {
                        if handed[i] == rounds[i].load(Ordering::SeqCst) && handed[i] < ROUNDS {
                            handed[i] += 1;
                            ready[i].store(true, Ordering::SeqCst);
                            set.mark(published[i].load(Ordering::SeqCst));
                        }
                    }
                    set.wake_marked();
                }
            });
            for _ in 0..WAITERS {
                let got = finished_rx.recv_timeout(Duration::from_secs(30));
                if got.is_err() {
                    let stuck: Vec<u32> = rounds.iter().map(|r| r.load(Ordering::SeqCst)).collect();
                    // Let the sleepers go, or the scope would wait for ever.
                    done.store(true, Ordering::SeqCst);
                    for p in &published {
                        set.mark(p.load(Ordering::SeqCst));
                    }
                    set.wake_marked();
                    panic!("a waiter slept through its wake-up: rounds done {stuck:?}");
                }
            }
            done.store(true, Ordering::SeqCst);
        });
    }
}

/// The portable paths (waits and socket calls), through real calls: on
/// every system, Linux included.
#[cfg(test)]
mod portable_tests {
    use std::time::{Duration, Instant};

    use crate::server::{Server, Service};
    use crate::wire::transport::FORCE_PORTABLE as FORCE_PORTABLE_IO;
    use crate::Client;

    /// A client whose wake set hands out no places (what every system
    /// without futexes runs: each caller waits on its call's condition
    /// variable and is woken alone) answers many concurrent callers right,
    /// each within its timeout.
    #[test]
    fn a_client_without_futex_places_serves_concurrent_callers() {
        let server = Server::new();
        server
            .register(
                Service::new("Arith")
                    .method("Sum", |a: (i64, i64)| Ok::<_, String>(a.0 + a.1))
                    .method("Echo", |s: String| Ok::<_, String>(s)),
            )
            .unwrap();
        let running = server.listen("tcp@127.0.0.1:0").unwrap();
        // Portable waits and portable socket calls (see wire::transport).
        super::FORCE_PORTABLE.set(true);
        FORCE_PORTABLE_IO.set(true);
        let client = Client::dial(running.addr());
        super::FORCE_PORTABLE.set(false);
        FORCE_PORTABLE_IO.set(false);
        let client = client.unwrap();
        assert!(
            client.inner.wakes.acquire().is_none(),
            "the wake set hands out places"
        );
        assert!(client.inner.stream.forced_portable());
        assert!(!client.inner.stream.readable_now().unwrap());
        const THREADS: i64 = 8;
        const CALLS: i64 = 300;
        let give_up = Instant::now() + Duration::from_secs(60);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let client = &client;
                s.spawn(move || {
                    for i in 0..CALLS {
                        if Instant::now() > give_up {
                            panic!("thread {t}: only {i} calls in 60 s");
                        }
                        // Concurrent calls, each bounded: a lost wake-up is a
                        // timeout here, not a hang.
                        let sum: i64 = client
                            .call_timeout("Arith.Sum", &(t, i), Duration::from_secs(10))
                            .unwrap_or_else(|e| panic!("thread {t} call {i}: {e}"));
                        assert_eq!(sum, t + i);
                        // Now and then more than a socket buffer holds, so
                        // that writes wait for the peer to read.
                        if i % 100 == 0 {
                            let big = format!("{t}-{i}-{}", "x".repeat(512 << 10));
                            let back: String = client
                                .call_timeout("Arith.Echo", &big, Duration::from_secs(20))
                                .unwrap_or_else(|e| panic!("thread {t} echo {i}: {e}"));
                            assert!(back == big, "thread {t} echo {i}: wrong reply");
                        }
                    }
                });
            }
        });
        // Async calls too: many in flight at once, waited for out of order.
        let calls: Vec<_> = (0..64i64)
            .map(|i| client.go::<_, i64>("Arith.Sum", &(i, 1)).unwrap())
            .collect();
        for (i, c) in calls.into_iter().enumerate().rev() {
            assert_eq!(
                c.wait_timeout(Duration::from_secs(10)).unwrap(),
                i as i64 + 1
            );
        }
    }
}
