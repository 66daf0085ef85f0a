//! What the registry-at-scale driver measured, printed as one table
//! against issue 23's goals (or as one JSON line); the registry process's
//! RSS and threads from `/proc/PID/status`; `wrk` runs and their parsing.

use std::process::Command;
use std::time::Duration;

/// A process's memory and threads, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct ProcStatus {
    pub rss_kib: u64,
    /// The peak RSS so far (VmHWM).
    pub hwm_kib: u64,
    pub threads: u64,
}

impl ProcStatus {
    pub fn read(pid: u32) -> Option<ProcStatus> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some(ProcStatus {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            threads: field("Threads:")?,
        })
    }
}

/// One `wrk -t2 -c32 --latency` run.
#[derive(Debug, Clone, Copy)]
pub struct Wrk {
    pub rps: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors together.
    pub errors: u64,
}

impl Wrk {
    /// GET `url` (no script), or POST a heartbeat through the Lua script
    /// (`script`: its path, the address and the body it sends). None when
    /// wrk is missing or printed no figures (said on stderr).
    pub fn run(url: &str, script: Option<(&str, &str, &str)>, secs: u64) -> Option<Wrk> {
        let mut cmd = Command::new("wrk");
        cmd.args(["-t2", "-c32", &format!("-d{secs}s"), "--latency"]);
        if let Some((lua, addr, body)) = script {
            cmd.args(["-s", lua])
                .env("GEERPC_SCALE_ADDR", addr)
                .env("GEERPC_SCALE_BODY", body);
        }
        let out = match cmd.arg(url).output() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("registry_scale: cannot run wrk ({e}); apt-get install wrk");
                return None;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let parsed = Wrk::parse(&text);
        if parsed.is_none() {
            eprintln!(
                "registry_scale: no figures from wrk:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parsed
    }

    fn parse(text: &str) -> Option<Wrk> {
        let after = |prefix: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
                .map(str::to_string)
        };
        let rps: f64 = after("Requests/sec:")?.parse().ok()?;
        let p99 = after("99%")?;
        let split = p99.find(|c: char| c.is_ascii_alphabetic())?;
        let (v, unit) = p99.split_at(split);
        let scale = match unit {
            "us" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            _ => return None,
        };
        let count = |prefix: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .map_or(0, |rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .filter_map(|n| n.parse::<u64>().ok())
                        .sum()
                })
        };
        Some(Wrk {
            rps,
            p99_ms: v.parse::<f64>().ok()? * scale,
            errors: count("Non-2xx or 3xx responses:") + count("Socket errors:"),
        })
    }
}

/// Everything measured.
pub struct Report {
    instances: usize,
    services: usize,
    watchers: usize,
    changes: usize,
    all_scope: bool,
    pub beat_interval: Duration,
    pub register_secs: f64,
    pub watch_open_secs: f64,
    pub idle: Option<ProcStatus>,
    pub registered: Option<ProcStatus>,
    pub parked: Option<ProcStatus>,
    pub under_wrk: Option<ProcStatus>,
    pub end: Option<ProcStatus>,
    pub wrk_get: Option<Wrk>,
    pub wrk_post: Option<Wrk>,
    pub woken_by_wrk: usize,
    /// Propagation, microseconds, one per (change, watcher that saw it).
    pub lat_us: Vec<u64>,
    /// The same from when the POST was sent (the registry may answer the
    /// watchers before the POST's answer is read).
    pub lat_sent_us: Vec<u64>,
    /// Each change's POST round trip, microseconds.
    pub post_us: Vec<u64>,
    /// Watchers that had not seen a change within the wait.
    pub missed: u64,
    /// Answers read before the POST's own answer (counted as 0).
    pub early: u64,
    pub beats_per_sec: f64,
    pub beat_failures: u64,
    pub beat_max_lag_ms: f64,
    pub refused: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// The `q` quantile of sorted `v` (nearest rank), in milliseconds.
fn pct_ms(v: &[u64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1] as f64 / 1e3
}

fn mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

impl Report {
    pub fn new(
        instances: usize,
        services: usize,
        watchers: usize,
        changes: usize,
        all_scope: bool,
    ) -> Report {
        Report {
            instances,
            services,
            watchers,
            changes,
            all_scope,
            beat_interval: Duration::ZERO,
            register_secs: 0.0,
            watch_open_secs: 0.0,
            idle: None,
            registered: None,
            parked: None,
            under_wrk: None,
            end: None,
            wrk_get: None,
            wrk_post: None,
            woken_by_wrk: 0,
            lat_us: Vec::new(),
            lat_sent_us: Vec::new(),
            post_us: Vec::new(),
            missed: 0,
            early: 0,
            beats_per_sec: 0.0,
            beat_failures: 0,
            beat_max_lag_ms: 0.0,
            refused: 0,
            reconnects: 0,
            last_error: None,
        }
    }

    /// The largest RSS seen (the peak, VmHWM, of the last reading).
    fn peak(&self) -> Option<ProcStatus> {
        [self.end, self.under_wrk, self.parked, self.registered]
            .into_iter()
            .flatten()
            .next()
    }

    pub fn print(mut self, json: bool) {
        self.lat_us.sort_unstable();
        self.post_us.sort_unstable();
        self.lat_sent_us.sort_unstable();
        let (p50, p99, max) = (
            pct_ms(&self.lat_us, 0.50),
            pct_ms(&self.lat_us, 0.99),
            pct_ms(&self.lat_us, 1.0),
        );
        let peak = self.peak();
        if json {
            let st = |s: Option<ProcStatus>| {
                s.map(|s| {
                    serde_json::json!({"rss_kib": s.rss_kib, "hwm_kib": s.hwm_kib, "threads": s.threads})
                })
            };
            let wrk = |w: Option<Wrk>| {
                w.map(|w| serde_json::json!({"rps": w.rps, "p99_ms": w.p99_ms, "errors": w.errors}))
            };
            let line = serde_json::json!({
                "instances": self.instances, "services": self.services,
                "watchers": self.watchers, "changes": self.changes,
                "scope": if self.all_scope { "all" } else { "service" },
                "propagation_ms": {"p50": p50, "p99": p99, "max": max, "n": self.lat_us.len()},
                "from_sent_ms": {"p50": pct_ms(&self.lat_sent_us, 0.5), "p99": pct_ms(&self.lat_sent_us, 0.99)},
                "missed": self.missed, "early": self.early,
                "post_p50_ms": pct_ms(&self.post_us, 0.5),
                "registry": {"idle": st(self.idle), "registered": st(self.registered),
                    "parked": st(self.parked), "under_wrk": st(self.under_wrk), "end": st(self.end)},
                "wrk_get": wrk(self.wrk_get), "wrk_post": wrk(self.wrk_post),
                "woken_by_wrk": self.woken_by_wrk,
                "beat_interval_ms": self.beat_interval.as_millis() as u64,
                "beats_per_sec": self.beats_per_sec, "beat_failures": self.beat_failures,
                "beat_max_lag_ms": self.beat_max_lag_ms,
                "register_secs": self.register_secs, "watch_open_secs": self.watch_open_secs,
                "refused": self.refused, "reconnects": self.reconnects,
            });
            println!("{line}");
            return;
        }
        let scope = if self.all_scope {
            "every watcher sees each change"
        } else {
            "each change seen by one service's watchers"
        };
        println!(
            "registry at scale: {} instances across {} services, {} watchers, {} changes ({scope})",
            self.instances, self.services, self.watchers, self.changes
        );
        println!(
            "  heartbeats every {} ms per instance: {:.0} POST/s sent, {} failed, latest {:.1} ms late; \
             registered in {:.2} s, watchers answered in {:.2} s",
            self.beat_interval.as_millis(),
            self.beats_per_sec,
            self.beat_failures,
            self.beat_max_lag_ms,
            self.register_secs,
            self.watch_open_secs
        );
        let row = |what: &str, value: String, goal: &str, met: Option<bool>| {
            let verdict = match met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "-",
            };
            println!("{what:<46} {value:>14}  {goal:>12}  {verdict}");
        };
        println!("{:<46} {:>14}  {:>12}  verdict", "what", "value", "goal");
        row(
            "propagation p50 ms (POST answer -> watcher)",
            format!("{p50:.1}"),
            "-",
            None,
        );
        row(
            "propagation p99 ms",
            format!("{p99:.1}"),
            "<= 100",
            Some(p99 <= 100.0),
        );
        row("propagation max ms", format!("{max:.1}"), "-", None);
        row(
            "  from the POST sent: p50 / p99 ms",
            format!(
                "{:.1} / {:.1}",
                pct_ms(&self.lat_sent_us, 0.5),
                pct_ms(&self.lat_sent_us, 0.99)
            ),
            "-",
            None,
        );
        row(
            "watcher answers missed (not within the wait)",
            self.missed.to_string(),
            "0",
            Some(self.missed == 0),
        );
        row(
            "change POST round trip p50 ms",
            format!("{:.2}", pct_ms(&self.post_us, 0.5)),
            "-",
            None,
        );
        if let Some(p) = peak {
            row(
                "registry peak RSS MiB (VmHWM)",
                format!("{:.1}", mib(p.hwm_kib)),
                "<= 256",
                Some(mib(p.hwm_kib) <= 256.0),
            );
        }
        for (what, s) in [
            ("before registering", self.idle),
            ("instances registered", self.registered),
            ("watchers parked", self.parked),
            ("after wrk", self.under_wrk),
            ("at the end", self.end),
        ] {
            if let Some(s) = s {
                row(
                    &format!("registry {what}: RSS MiB / threads"),
                    format!("{:.1} / {}", mib(s.rss_kib), s.threads),
                    "-",
                    None,
                );
            }
        }
        if let (Some(a), Some(b)) = (self.registered, self.parked) {
            let per = (b.rss_kib as f64 - a.rss_kib as f64) / self.watchers as f64;
            row(
                "registry RSS KiB per parked watcher",
                format!("{per:.1}"),
                "-",
                None,
            );
        }
        for (what, w) in [
            ("GET of one service", self.wrk_get),
            ("heartbeat POST", self.wrk_post),
        ] {
            if let Some(w) = w {
                row(
                    &format!("wrk {what} req/s"),
                    format!("{:.0}", w.rps),
                    ">= 60000",
                    Some(w.rps >= 60_000.0 && w.errors == 0),
                );
                row(
                    "  its p99 ms / errors",
                    format!("{:.2} / {}", w.p99_ms, w.errors),
                    "-",
                    None,
                );
            }
        }
        if self.wrk_get.is_some() || self.wrk_post.is_some() {
            row(
                "watchers woken by wrk's renewals",
                self.woken_by_wrk.to_string(),
                "0",
                Some(self.woken_by_wrk == 0),
            );
        }
        println!(
            "  watcher answers before the POST's own: {}; refused polls: {}; reconnects: {}{}",
            self.early,
            self.refused,
            self.reconnects,
            self.last_error
                .as_deref()
                .map_or(String::new(), |e| format!("; last error: {e}"))
        );
    }
}
