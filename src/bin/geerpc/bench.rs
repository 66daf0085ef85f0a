//! `geerpc bench`: a load test of one method from the shell, like `ghz` or
//! `hey`. `--concurrency` callers call the method in a loop (closed loop),
//! or at `--rate` calls per second in all (each caller waits for its next
//! slot of a shared schedule), for `--duration` or `--calls`. A progress
//! bar shows on a terminal (plain lines on stderr otherwise); then a summary
//! on stdout: calls, errors by code, calls/s, latency percentiles and a
//! text histogram (`--json`: one JSON object).
//!
//! `--addr` calls one server over one connection its callers share (as a
//! `Client` is used); `--registry` or `--etcd` go through an `XClient`
//! (round robin over the instances of the method's service).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geerpc::{CallOptions, Client, SelectMode, XClient};
use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::exit::{Failure, Kind};
use crate::{BenchArgs, Found};

/// Most callers: each is a thread.
const MAX_CONCURRENCY: usize = 4096;

/// What the callers call through.
enum Target {
    Client(Client),
    XClient(XClient),
}

impl Target {
    fn call(
        &self,
        method: &str,
        args: &serde_json::Value,
        opts: &CallOptions,
    ) -> geerpc::Result<serde_json::Value> {
        match self {
            Target::Client(c) => c.call_with(method, args, opts),
            Target::XClient(x) => x.call_with(method, args, opts),
        }
    }
}

/// When to stop.
#[derive(Clone, Copy)]
enum Until {
    Elapsed(Duration),
    Calls(u64),
}

/// What the callers share.
struct Shared {
    start: Instant,
    until: Until,
    /// Calls claimed (a caller claims one before making it): bounds
    /// `--calls`, and numbers the slots of `--rate`.
    claimed: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    /// Interval between two slots of the `--rate` schedule.
    interval: Option<Duration>,
}

impl Shared {
    /// The next call to make, and when (`None`: the bench is over).
    fn claim(&self) -> Option<Instant> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let k = self.claimed.fetch_add(1, Ordering::Relaxed);
        // Paced: the k-th slot of the schedule; a closed loop: now.
        let at = self
            .interval
            .map_or_else(Instant::now, |i| self.start + i.mul_f64(k as f64));
        match self.until {
            Until::Calls(n) if k >= n => None,
            Until::Elapsed(d) if at.duration_since(self.start) >= d => None,
            _ => Some(at),
        }
    }
}

/// One caller's results.
struct Tally {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // 1 us to 1 h at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.latency.add(&other.latency).expect("same bounds");
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }
}

pub fn run(a: BenchArgs) -> Result<(), Failure> {
    if a.concurrency == 0 || a.concurrency > MAX_CONCURRENCY {
        return Err(Failure::new(
            Kind::Usage,
            format!("--concurrency must be 1 to {MAX_CONCURRENCY}"),
        ));
    }
    let until = match (a.duration, a.calls) {
        (_, Some(0)) => return Err(Failure::new(Kind::Usage, "--calls must be at least 1")),
        (_, Some(n)) => Until::Calls(n),
        (Some(d), None) if d.is_zero() => {
            return Err(Failure::new(Kind::Usage, "--duration must be more than 0"))
        }
        (Some(d), None) => Until::Elapsed(d),
        (None, None) => Until::Elapsed(Duration::from_secs(10)),
    };
    let interval = match a.rate {
        Some(r) if r.is_finite() && r > 0.0 => Some(Duration::from_secs_f64(1.0 / r)),
        Some(r) => {
            return Err(Failure::new(
                Kind::Usage,
                format!("--rate {r}: must be more than 0"),
            ))
        }
        None => None,
    };
    let args: serde_json::Value = serde_json::from_str(&a.args)
        .map_err(|e| Failure::new(Kind::Usage, format!("the arguments are not JSON ({e})")))?;
    let target = connect(&a)?;
    let opts = CallOptions::new().timeout(a.timeout);
    let shared = Arc::new(Shared {
        start: Instant::now(),
        until,
        claimed: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        interval,
    });
    let target = Arc::new(target);
    let total = Arc::new(Mutex::new(Tally::new()));
    let mut callers = Vec::with_capacity(a.concurrency);
    for n in 0..a.concurrency {
        let (mine, target, total) = (shared.clone(), target.clone(), total.clone());
        let (method, args, opts) = (a.method.clone(), args.clone(), opts.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("geerpc-bench-{n}"))
            .spawn(move || {
                let tally = caller(&mine, &target, &method, &args, &opts);
                total.lock().merge(&tally);
            });
        match spawned {
            Ok(h) => callers.push(h),
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                for h in callers {
                    let _ = h.join();
                }
                return Err(Failure::new(Kind::Other, format!("start caller {n}: {e}")));
            }
        }
    }
    progress(&shared, &callers);
    for h in callers {
        let _ = h.join();
    }
    let secs = shared.start.elapsed().as_secs_f64();
    let total = total.lock();
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", summary_json(&a, &total, secs))?;
    } else {
        write_summary(&mut out, &a, &total, secs)?;
    }
    Ok(out.flush()?)
}

/// The client the callers share: one connection to `--addr`, or an
/// XClient over the instances discovery lists.
fn connect(a: &BenchArgs) -> Result<Target, Failure> {
    let tls = a.reach.client_tls()?;
    let builder = Client::builder().tls(tls);
    if let Some(addr) = &a.target.addr {
        let addr = if addr.contains('@') {
            addr.clone()
        } else {
            format!("tcp@{addr}")
        };
        let client = builder
            .connect_timeout(Some(a.timeout))
            .dial(addr.as_str())
            .map_err(|e| Failure::call(&e, &addr))?;
        return Ok(Target::Client(client));
    }
    let (service, _) = a.method.split_once('.').expect("checked by the parser");
    let found = Found::following(
        a.target.registry.as_deref(),
        a.target.etcd.as_deref(),
        Some(service),
        &a.reach,
    )?;
    if found.instances()?.is_empty() {
        return Err(Failure::new(
            Kind::Discovery,
            format!("{} lists no instance of {service}", found.source),
        ));
    }
    Ok(Target::XClient(
        XClient::builder(found.discovery)
            .select_mode(SelectMode::RoundRobin)
            .client(builder)
            .build(),
    ))
}

/// One caller: claim a call, wait for its slot, make it, count it.
fn caller(
    shared: &Shared,
    target: &Target,
    method: &str,
    args: &serde_json::Value,
    opts: &CallOptions,
) -> Tally {
    let mut tally = Tally::new();
    while let Some(at) = shared.claim() {
        let now = Instant::now();
        if at > now {
            // The --rate schedule: this call's slot is later.
            std::thread::sleep(at - now);
        }
        let t0 = Instant::now();
        let result = target.call(method, args, opts);
        let us = t0.elapsed().as_micros().max(1) as u64;
        tally.latency.saturating_record(us);
        if let Err(e) = result {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            *tally.errors.entry(e.code().to_string()).or_default() += 1;
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// Shows progress until every caller is done: a bar on a terminal, a
/// plain line a second otherwise (both on stderr).
fn progress(shared: &Shared, callers: &[std::thread::JoinHandle<()>]) {
    let (len, unit) = match shared.until {
        Until::Calls(n) => (n, "calls"),
        Until::Elapsed(d) => (d.as_millis() as u64, "ms"),
    };
    let position = || match shared.until {
        Until::Calls(_) => shared.done.load(Ordering::Relaxed),
        Until::Elapsed(_) => shared.start.elapsed().as_millis() as u64,
    };
    let status = || {
        let done = shared.done.load(Ordering::Relaxed);
        let secs = shared.start.elapsed().as_secs_f64().max(1e-9);
        format!(
            "{done} calls, {} errors, {:.0}/s",
            shared.errors.load(Ordering::Relaxed),
            done as f64 / secs
        )
    };
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit}  {{msg}}"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let mut last_line = Instant::now();
    while callers.iter().any(|h| !h.is_finished()) {
        // Polling at the display's rate: there is nothing to wait on that
        // both ends of the bench and a refresh would signal.
        std::thread::sleep(Duration::from_millis(100));
        match &bar {
            Some(bar) => {
                bar.set_position(position().min(len));
                bar.set_message(status());
            }
            None if last_line.elapsed() >= Duration::from_secs(1) => {
                last_line = Instant::now();
                eprintln!(
                    "geerpc bench: {:.1}s {}",
                    shared.start.elapsed().as_secs_f64(),
                    status()
                );
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

fn percentile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

fn summary_json(a: &BenchArgs, t: &Tally, secs: f64) -> serde_json::Value {
    let calls = t.latency.len();
    let errors: u64 = t.errors.values().sum();
    let h = &t.latency;
    serde_json::json!({
        "method": a.method,
        "concurrency": a.concurrency,
        "calls": calls,
        "ok": calls - errors,
        "errors": errors,
        "errors_by_code": t.errors,
        "secs": secs,
        "calls_per_sec": calls as f64 / secs.max(1e-9),
        "p50_us": percentile(h, 0.5),
        "p90_us": percentile(h, 0.9),
        "p99_us": percentile(h, 0.99),
        "p999_us": percentile(h, 0.999),
        "max_us": h.max(),
        "mean_us": if h.is_empty() { 0.0 } else { h.mean() },
    })
}

/// Microseconds, in the unit that reads best.
fn human(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} us"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.3} s", us as f64 / 1e6),
    }
}

fn write_summary(out: &mut impl Write, a: &BenchArgs, t: &Tally, secs: f64) -> std::io::Result<()> {
    let h = &t.latency;
    let calls = h.len();
    let errors: u64 = t.errors.values().sum();
    writeln!(out, "Summary: {} with {} callers", a.method, a.concurrency)?;
    writeln!(
        out,
        "  calls:     {calls} ({} ok, {errors} errors)",
        calls - errors
    )?;
    writeln!(out, "  duration:  {secs:.3} s")?;
    writeln!(out, "  calls/s:   {:.1}", calls as f64 / secs.max(1e-9))?;
    if !t.errors.is_empty() {
        writeln!(out, "Errors by code:")?;
        for (code, n) in &t.errors {
            writeln!(out, "  {code:<20} {n}")?;
        }
    }
    if calls == 0 {
        return Ok(());
    }
    writeln!(out, "Latency:")?;
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        writeln!(out, "  {name:<6} {}", human(percentile(h, q)))?;
    }
    writeln!(out, "  max    {}", human(h.max()))?;
    writeln!(out, "  mean   {}", human(h.mean() as u64))?;
    writeln!(out, "Histogram:")?;
    for line in histogram_lines(h, 10, 40) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `buckets` lines from the fastest to the slowest call, each a bar of up
/// to `width` marks in proportion to the calls up to its bound.
fn histogram_lines(h: &Histogram<u64>, buckets: u64, width: u64) -> Vec<String> {
    let (lo, hi) = (h.min().max(1), h.max().max(1));
    let step = ((hi - lo) / buckets).max(1);
    let mut counts = Vec::new();
    let mut from = lo;
    while from <= hi && (counts.len() as u64) < buckets {
        let to = if counts.len() as u64 == buckets - 1 {
            hi
        } else {
            (from + step - 1).min(hi)
        };
        let n: u64 = h
            .iter_recorded()
            .filter(|v| (from..=to).contains(&v.value_iterated_to()))
            .map(|v| v.count_at_value())
            .sum();
        counts.push((to, n));
        from = to + 1;
    }
    let most = counts.iter().map(|&(_, n)| n).max().unwrap_or(1).max(1);
    counts
        .into_iter()
        .map(|(to, n)| {
            let marks = (n * width).div_ceil(most) as usize;
            format!("  {:>10} | {} {n}", human(to), "#".repeat(marks))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_every_call_once() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [10, 10, 11, 50, 90, 1000] {
            h.record(v).unwrap();
        }
        let lines = histogram_lines(&h, 10, 40);
        let total: u64 = lines
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 6, "{lines:#?}");
        assert!(lines.len() <= 10);
        assert!(lines.last().unwrap().contains("1.00 ms"), "{lines:#?}");
    }

    #[test]
    fn claims_stop_at_the_call_count() {
        let s = Shared {
            start: Instant::now(),
            until: Until::Calls(3),
            claimed: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            interval: Some(Duration::from_millis(10)),
        };
        let slots: Vec<Instant> = std::iter::from_fn(|| s.claim()).collect();
        assert_eq!(slots.len(), 3);
        assert_eq!(slots[2] - slots[0], Duration::from_millis(20));
    }

    #[test]
    fn an_unpaced_run_stops_when_its_time_is_up() {
        let s = Shared {
            start: Instant::now() - Duration::from_secs(2),
            until: Until::Elapsed(Duration::from_secs(1)),
            claimed: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            interval: None,
        };
        assert!(s.claim().is_none());
    }
}
