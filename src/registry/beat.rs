//! The heartbeat thread: POST, then wait for the next beat holding a
//! request open to the registry, so that a registry that stops or restarts
//! is noticed within a round trip; retries with back-off meanwhile.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rand::Rng;

use super::epoch::{EPOCH_HEADER, HOLD_PARAM, MAX_HOLD};
use super::heartbeat::{Cadence, Status};
use super::{request_error, status_error, ADDR_HEADERS, TTL_HEADER};
use crate::error::Error;
use crate::util::duration::GoDuration;

/// The first wait before trying again to reach a registry that cannot be
/// reached (unless the back-off set starts lower).
const FIRST_RECONNECT: Duration = Duration::from_millis(100);
/// Time left before a beat under which the thread just sleeps: a hold that
/// short would cost a connection for nothing.
const MIN_HOLD: Duration = Duration::from_secs(1);
/// How long to go without holds after the registry refused one and then
/// took the POST after it (it is full of holds).
const REFUSED_HOLD_PAUSE: Duration = Duration::from_secs(30);
/// The longest pause between holds that keep ending early for no reason
/// (something between us and the registry cutting idle connections).
const MAX_EARLY_PAUSE: Duration = Duration::from_secs(60);

/// What the heartbeat thread owns.
pub(super) struct Beat {
    pub(super) url: String,
    pub(super) addr: String,
    pub(super) body: Vec<u8>,
    pub(super) agent: ureq::Agent,
    pub(super) status: Arc<Status>,
    /// Whether to hold a request open between beats.
    pub(super) hold: bool,
    /// The bound on a plain request; a hold gets its own length on top.
    pub(super) timeout: Duration,
    /// The longest wait between tries to reach an unreachable registry.
    pub(super) reconnect: Duration,
}

/// Why a request failed.
enum Failure {
    /// No answer: refused, reset, timed out.
    Unreachable(Error),
    /// The registry answered with an error status.
    Refused(Error),
}

/// What a `POST`'s answer said.
struct Answer {
    ttl: Option<Duration>,
    epoch: Option<String>,
}

/// How the wait between two beats ended.
enum Between {
    /// Beat now: the interval is over, or the registry may have restarted.
    Beat,
    Stop,
}

/// What the holds have shown so far.
#[derive(Default)]
struct Holds {
    /// The last hold ended early for no reason known yet: the next POST
    /// tells whether the registry restarted (a new epoch, or no answer) or
    /// the connection was only cut.
    suspect: bool,
    /// The last hold was refused (a full or stopping registry): if the
    /// POST after finds it up, holds pause for a while.
    refused: bool,
    /// Early ends in a row that the POST after did not explain.
    unexplained: u32,
    /// No hold before this.
    not_before: Option<Instant>,
}

impl Holds {
    /// After a `POST` that answered: `explained` when the registry had
    /// restarted or had been unreachable.
    fn after_beat(&mut self, explained: bool, who: &str) {
        if explained {
            self.unexplained = 0;
            self.not_before = None;
        } else if self.refused {
            log::debug!(
                "{who}: hold refused; none for {}",
                GoDuration(REFUSED_HOLD_PAUSE)
            );
            self.not_before = Some(Instant::now() + REFUSED_HOLD_PAUSE);
        } else if self.suspect {
            // Something cuts held connections while the registry stays up:
            // hold again after a pause that doubles, so that the POSTs this
            // brings about stay rare.
            self.unexplained += 1;
            let pause = Duration::from_secs(1 << self.unexplained.min(6).saturating_sub(1))
                .min(MAX_EARLY_PAUSE);
            log::debug!(
                "{who}: held requests end early ({} in a row); next hold in {}",
                self.unexplained,
                GoDuration(pause)
            );
            self.not_before = Some(Instant::now() + pause);
        }
        self.suspect = false;
        self.refused = false;
    }
}

impl Beat {
    pub(super) fn run(&self, mut cadence: Cadence, stop: Receiver<()>) {
        let mut refused_delay = cadence.backoff().0;
        let first_reconnect = |c: &Cadence| c.backoff().0.min(FIRST_RECONNECT);
        let mut reconnect_delay = first_reconnect(&cadence);
        let mut failures = 0u32;
        let mut epoch: Option<String> = None;
        let mut holds = Holds::default();
        let who = format!("heartbeat {} to {}", self.addr, self.url);
        loop {
            let wait = match self.send() {
                Ok(answer) => {
                    if let Some(ttl) = answer.ttl {
                        cadence.follow(ttl, &who);
                    }
                    let restarted = matches!(
                        (&epoch, &answer.epoch),
                        (Some(old), Some(new)) if old != new
                    );
                    if restarted {
                        log::info!(
                            "heartbeat: {} registered again at {}: the registry restarted",
                            self.addr,
                            self.url
                        );
                    } else if failures > 0 {
                        log::info!(
                            "heartbeat: {} registered again at {} after {failures} failures",
                            self.addr,
                            self.url
                        );
                    } else if self.status.beats.load(Ordering::Acquire) == 0 {
                        log::info!("heartbeat: {} registered at {}", self.addr, self.url);
                    }
                    holds.after_beat(restarted || failures > 0, &who);
                    failures = 0;
                    refused_delay = cadence.backoff().0;
                    reconnect_delay = first_reconnect(&cadence);
                    epoch = answer.epoch;
                    self.status.registered.store(true, Ordering::Release);
                    self.status.beats.fetch_add(1, Ordering::AcqRel);
                    let next = Instant::now() + cadence.interval;
                    match self.between_beats(next, epoch.as_deref(), &mut holds, &stop) {
                        Between::Beat => continue,
                        Between::Stop => break,
                    }
                }
                Err(_) if self.stopping() => break,
                Err(failure) => {
                    self.status.registered.store(false, Ordering::Release);
                    failures += 1;
                    let (delay, e) = match failure {
                        // Cheap to try (a refused connection) and the only
                        // way to find a restarted registry soon: short.
                        Failure::Unreachable(e) => {
                            let d = reconnect_delay;
                            let max = cadence.backoff().1.min(self.reconnect);
                            reconnect_delay = (d * 2).min(max.max(d));
                            (d, e)
                        }
                        Failure::Refused(e) => {
                            let d = refused_delay;
                            refused_delay = (d * 2).min(cadence.backoff().1);
                            (d, e)
                        }
                    };
                    // Spread retries so that servers that lost the same
                    // registry do not come back in lockstep.
                    let wait = delay.mul_f64(rand::rng().random_range(0.8..1.0));
                    let wait = Duration::from_millis(wait.as_millis().max(1) as u64);
                    // Every failure while a registry is down would be a warning
                    // a second: warn at 1, 2, 4, 8... only.
                    if failures.is_power_of_two() {
                        log::warn!("{e}; retrying in {} (failure {failures})", GoDuration(wait));
                    } else {
                        log::debug!("{e}; retrying in {} (failure {failures})", GoDuration(wait));
                    }
                    wait
                }
            };
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
    }

    fn stopping(&self) -> bool {
        self.status.stopping.load(Ordering::Acquire)
    }

    /// Waits until `next`, holding a request open to the registry when it
    /// says its epoch (and holds are on).
    fn between_beats(
        &self,
        next: Instant,
        epoch: Option<&str>,
        holds: &mut Holds,
        stop: &Receiver<()>,
    ) -> Between {
        let epoch = epoch.filter(|_| self.hold);
        loop {
            let now = Instant::now();
            let left = next.saturating_duration_since(now);
            if left.is_zero() {
                return Between::Beat;
            }
            let paused = holds.not_before.filter(|t| *t > now);
            let Some(epoch) = epoch.filter(|_| paused.is_none() && left >= MIN_HOLD) else {
                let until = paused.map_or(next, |t| t.min(next));
                match stop.recv_timeout(until.saturating_duration_since(now)) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    _ => return Between::Stop,
                }
            };
            let want = left.min(MAX_HOLD);
            let t0 = Instant::now();
            let held = self.hold(epoch, want);
            if self.stopping() {
                return Between::Stop;
            }
            match held {
                Ok(Some(new)) if new != epoch => {
                    log::info!(
                        "heartbeat {}: the registry at {} restarted; registering again",
                        self.addr,
                        self.url
                    );
                    return Between::Beat;
                }
                // Held its whole time (the registry answers at the
                // deadline, which the clock here may see a bit early).
                Ok(_) if t0.elapsed() >= want.mul_f64(0.9) => {
                    holds.unexplained = 0;
                }
                Ok(_) | Err(Failure::Unreachable(_)) => {
                    // Ended early: the registry stopped, or died (its
                    // connection closed), or something cut the connection.
                    // A POST tells which; retries follow if it fails.
                    log::debug!(
                        "heartbeat {}: hold at {} ended after {}",
                        self.addr,
                        self.url,
                        GoDuration(t0.elapsed())
                    );
                    holds.suspect = true;
                    return Between::Beat;
                }
                // Refused: the registry is full, or stopping. A POST tells.
                Err(Failure::Refused(e)) => {
                    log::debug!("{e}");
                    holds.suspect = true;
                    holds.refused = true;
                    return Between::Beat;
                }
            }
        }
    }

    /// One held request: answered at `want` (or at once, when the
    /// registry is another start). The epoch the answer carries.
    fn hold(&self, epoch: &str, want: Duration) -> Result<Option<String>, Failure> {
        let what = format!("hold for {}", self.addr);
        let resp = self
            .agent
            .get(&self.url)
            .query(HOLD_PARAM, epoch)
            .query("timeout", GoDuration(want).to_string())
            .config()
            .timeout_global(Some(want + self.timeout))
            .build()
            .call();
        let mut resp =
            resp.map_err(|e| Failure::Unreachable(request_error(&self.url, &what, e)))?;
        if !resp.status().is_success() {
            return Err(Failure::Refused(status_error(&self.url, &what, &mut resp)));
        }
        Ok(header(&resp, EPOCH_HEADER))
    }

    /// One heartbeat; the registry's TTL and epoch if it said.
    fn send(&self) -> Result<Answer, Failure> {
        let what = format!("heartbeat for {}", self.addr);
        // All three spellings, so that either Go registry takes it too.
        let mut rq = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        for h in ADDR_HEADERS {
            rq = rq.header(h, &self.addr);
        }
        let mut resp = rq
            .send(&self.body[..])
            .map_err(|e| Failure::Unreachable(request_error(&self.url, &what, e)))?;
        if !resp.status().is_success() {
            return Err(Failure::Refused(status_error(&self.url, &what, &mut resp)));
        }
        let ttl = header(&resp, TTL_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        Ok(Answer {
            ttl,
            epoch: header(&resp, EPOCH_HEADER),
        })
    }
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}
