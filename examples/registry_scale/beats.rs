//! The heartbeats of the simulated instances: a few threads, each owning
//! a share of the instances and one keep-alive connection, POST every
//! instance once at once (its registration), then each again every
//! `interval` (the heartbeat's normal rate: a third of the TTL the
//! registry announces, as `beat.rs` follows it), spread evenly over the
//! interval. Not a thread per instance: 10,000 threads would load the
//! machine the registry is measured on.
//!
//! Not simulated: the `GET ?hold=EPOCH` a real heartbeat keeps open
//! between beats (10,000 held connections is a scenario of its own).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{Conn, Target};

/// Instance `i` of service `s`: a unique address (nothing listens there;
/// the registry never dials it).
pub fn addr_of(s: usize, i: usize) -> String {
    format!("tcp@10.{}.{}.1:{}", s / 256, s % 256, 10_000 + i)
}

pub fn service_name(s: usize) -> String {
    format!("svc{s}")
}

/// The body a heartbeat of service `s` carries.
pub fn body_of(s: usize) -> String {
    format!("{{\"services\":[\"{}\"]}}", service_name(s))
}

/// Counters the beat threads keep.
#[derive(Default)]
pub struct Tally {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    /// The longest a beat went out after its due time, microseconds.
    pub max_lag_us: AtomicU64,
}

pub struct Beats {
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Beats {
    /// Registers `instances` (pairs of service, index) from `threads`
    /// threads, waits until every one was registered (or failed), then
    /// keeps beating them every `interval` until dropped. The first
    /// failure's message is returned if any registration failed.
    pub fn start(
        target: &Target,
        instances: Vec<(usize, usize)>,
        threads: usize,
        interval: Duration,
    ) -> Result<Beats, String> {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = threads.max(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<Result<(), String>>(threads);
        let mut handles = Vec::new();
        for k in 0..threads {
            let mine: Vec<(usize, usize)> =
                instances.iter().copied().skip(k).step_by(threads).collect();
            let (t, tally, stop, done) =
                (target.clone(), tally.clone(), stop.clone(), done_tx.clone());
            let h = std::thread::Builder::new()
                .name(format!("scale-beat-{k}"))
                .spawn(move || beat(&t, &mine, interval, &tally, &stop, &done))
                .map_err(|e| format!("cannot start a beat thread: {e}"))?;
            handles.push(h);
        }
        let beats = Beats {
            tally,
            stop,
            threads: handles,
        };
        for _ in 0..threads {
            match done_rx.recv_timeout(Duration::from_secs(300)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("registering the instances took over 300 s".into()),
            }
        }
        Ok(beats)
    }
}

impl Drop for Beats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Each thread sleeps 50 ms at most between looks at `stop`, and a
        // POST waits 10 s at most.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn beat(
    target: &Target,
    mine: &[(usize, usize)],
    interval: Duration,
    tally: &Tally,
    stop: &AtomicBool,
    done: &crossbeam_channel::Sender<Result<(), String>>,
) {
    let mut conn = Conn::new(target);
    let requests: Vec<Vec<u8>> = mine
        .iter()
        .map(|&(s, i)| target.post(&addr_of(s, i), &body_of(s)))
        .collect();
    let mut first_error = None;
    for rq in &requests {
        match conn.send(rq) {
            Ok(a) if a.status == 200 => {
                tally.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(a) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert_with(|| {
                    format!(
                        "registration refused: status {}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body).trim()
                    )
                });
            }
            Err(e) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
        }
    }
    let failed = first_error.is_some();
    let _ = done.send(first_error.map_or(Ok(()), Err));
    if failed || requests.is_empty() {
        return;
    }
    // Beat k of this thread is due at start + k * step: every instance
    // once per interval, evenly spread.
    let step = interval / requests.len() as u32;
    let start = Instant::now();
    let mut k: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        let due = start + step.saturating_mul(u32::try_from(k + 1).unwrap_or(u32::MAX));
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        let lag = (now - due).as_micros() as u64;
        tally.max_lag_us.fetch_max(lag, Ordering::Relaxed);
        let rq = &requests[(k % requests.len() as u64) as usize];
        match conn.send(rq) {
            Ok(a) if a.status == 200 => tally.sent.fetch_add(1, Ordering::Relaxed),
            _ => tally.failed.fetch_add(1, Ordering::Relaxed),
        };
        k += 1;
    }
}
