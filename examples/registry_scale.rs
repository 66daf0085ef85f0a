//! The registry at scale (issue 23): registers many instances across many
//! services, heartbeating at their normal rate, opens long-poll watchers,
//! then makes changes and measures how long each watcher takes to see
//! each one, from the POST's answer to the watcher's answer; reports the
//! registry's RSS and thread count, optionally `wrk` throughput of GET and
//! heartbeat POSTs while the watchers wait, and prints it all against the
//! issue's goals.
//!
//! ```text
//! registry_scale [--geerpc PATH | --url URL [--pid PID]] [--ttl 5m]
//!                [--instances 10000] [--services 100] [--watchers 1000]
//!                [--changes 40] [--gap-ms 300] [--scope all|service]
//!                [--beat-threads 2] [--wrk-secs 0] [--lua benches/registry_post.lua]
//!                [--settle-ms 1000] [--wait-ms 5000] [--registry-log FILE] [--json]
//! ```
//!
//! By default it starts `geerpc registry --addr 127.0.0.1:0 --ttl TTL`
//! (the binary beside this example's folder, i.e. `target/release/geerpc`
//! after `cargo build --release --features cli --bin geerpc`, or `--geerpc
//! PATH`) and stops it at the end; `--url` points at a running registry
//! instead (`--pid` lets it read that registry's RSS and threads).
//!
//! Scope `all` (the default) changes what EVERY watcher sees: one
//! instance's services go from `[svc0]` to none (an instance that names no
//! service is listed for every service) and back, alternately. Scope
//! `service` changes one instance's weight in one service per change
//! (service k mod S), seen by that service's watchers only.
//!
//! Bounded: every count is a flag, every wait has a deadline (`--wait-ms`
//! per change, 60 s for the watchers' first answers, 300 s for the
//! registrations), and the registry it started is stopped on every path
//! out. `benches/registry_scale.sh` builds and runs it (see docs/BENCH.md).

#[path = "registry_scale/beats.rs"]
mod beats;
#[path = "registry_scale/http.rs"]
mod http;
#[path = "registry_scale/report.rs"]
mod report;
#[path = "registry_scale/watchers.rs"]
mod watchers;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{exit, Child, Command, Stdio};
use std::time::{Duration, Instant};

use beats::{addr_of, body_of, service_name, Beats};
use http::{Conn, Target};
use report::{ProcStatus, Report, Wrk};
use watchers::Watchers;

const USAGE: &str = "usage: registry_scale [--geerpc PATH | --url URL [--pid PID]] [--ttl 5m] \
[--instances N] [--services S] [--watchers W] [--changes C] [--gap-ms MS] [--scope all|service] \
[--beat-threads T] [--wrk-secs S] [--lua FILE] [--settle-ms MS] [--wait-ms MS] \
[--registry-log FILE] [--json]";

fn refuse(msg: &str) -> ! {
    eprintln!("registry_scale: {msg}\n{USAGE}");
    exit(2)
}

fn flags() -> HashMap<String, String> {
    let known = [
        "geerpc",
        "url",
        "pid",
        "ttl",
        "instances",
        "services",
        "watchers",
        "changes",
        "gap-ms",
        "scope",
        "beat-threads",
        "wrk-secs",
        "lua",
        "settle-ms",
        "wait-ms",
        "registry-log",
    ];
    let mut out = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--json" {
            out.insert("json".to_string(), String::new());
            continue;
        }
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        let Some(name) = a.strip_prefix("--").filter(|n| known.contains(n)) else {
            refuse(&format!("unknown argument {a:?}"))
        };
        let Some(v) = args.next() else {
            refuse(&format!("--{name} needs a value"))
        };
        if out.insert(name.to_string(), v).is_some() {
            refuse(&format!("--{name} given twice"));
        }
    }
    out
}

fn num(f: &HashMap<String, String>, name: &str, default: u64, min: u64) -> u64 {
    match f.get(name) {
        None => default,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n >= min => n,
            _ => refuse(&format!(
                "--{name} wants a whole number >= {min}, not {v:?}"
            )),
        },
    }
}

/// Lets this process (and the registry it starts) open a descriptor per
/// watcher: the soft limit is raised to the hard one.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A registry this driver started; stopped (SIGTERM, then SIGKILL after
/// 5 s) when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `geerpc registry` on a free port; its URL and handle.
fn start_registry(f: &HashMap<String, String>) -> (String, Started) {
    let bin = f
        .get("geerpc")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap_or_default();
            // target/release/examples/registry_scale -> target/release/geerpc
            exe.parent()
                .and_then(|p| p.parent())
                .map(|p| p.join("geerpc"))
                .unwrap_or_default()
        });
    if !bin.is_file() {
        refuse(&format!(
            "no geerpc binary at {} (cargo build --release --features cli --bin geerpc, \
             or --geerpc PATH, or --url URL)",
            bin.display()
        ));
    }
    let ttl = f.get("ttl").map_or("5m", String::as_str);
    // Its log (at its default level, as deployed: a line per new
    // instance and per change) goes to a file, not between our lines.
    let log_path = f.get("registry-log").map_or_else(
        || std::env::temp_dir().join("registry_scale.log"),
        std::path::PathBuf::from,
    );
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| {
        eprintln!("registry_scale: cannot create {}: {e}", log_path.display());
        exit(1)
    });
    eprintln!(
        "registry_scale: the registry logs to {}",
        log_path.display()
    );
    let mut child = Command::new(&bin)
        .args(["registry", "--addr", "127.0.0.1:0", "--ttl", ttl])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("registry_scale: cannot start {}: {e}", bin.display());
            exit(1)
        });
    let stdout = child.stdout.take().expect("piped");
    let started = Started(child);
    // It prints its URL once it listens; EOF if it died first.
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    let url = line.trim().to_string();
    if !url.starts_with("http") {
        eprintln!("registry_scale: {} registry printed no URL", bin.display());
        exit(1);
    }
    (url, started)
}

fn main() {
    let f = flags();
    match run(&f) {
        Ok(r) => r.print(f.contains_key("json")),
        Err(e) => {
            // The registry this run started, if any, was stopped on the
            // way out of `run` (its guard's drop).
            eprintln!("registry_scale: {e}");
            exit(1)
        }
    }
}

fn run(f: &HashMap<String, String>) -> Result<Report, String> {
    let instances = num(f, "instances", 10_000, 1) as usize;
    let services = num(f, "services", 100, 1) as usize;
    let n_watchers = num(f, "watchers", 1_000, 1) as usize;
    let changes = num(f, "changes", 40, 1) as usize;
    let gap = Duration::from_millis(num(f, "gap-ms", 300, 0));
    let threads = num(f, "beat-threads", 2, 1) as usize;
    let wrk_secs = num(f, "wrk-secs", 0, 0);
    let settle = Duration::from_millis(num(f, "settle-ms", 1_000, 0));
    let wait = Duration::from_millis(num(f, "wait-ms", 5_000, 1));
    let all_scope = match f.get("scope").map_or("all", String::as_str) {
        "all" => true,
        "service" => false,
        other => refuse(&format!("--scope is all or service, not {other:?}")),
    };
    if instances < services {
        refuse("--instances must be at least --services (one instance per service at least)");
    }
    raise_nofile();

    let (url, started, pid) = match f.get("url") {
        Some(u) => (
            u.clone(),
            None,
            f.get("pid").and_then(|p| p.parse::<u32>().ok()),
        ),
        None => {
            let (u, s) = start_registry(f);
            let pid = s.0.id();
            (u, Some(s), Some(pid))
        }
    };
    let target = Target::parse(&url).unwrap_or_else(|e| refuse(&e));
    let status = || pid.and_then(ProcStatus::read);
    let mut r = Report::new(instances, services, n_watchers, changes, all_scope);
    r.idle = status();

    // The probe (instance 0 of svc0) is the one the changes move: the
    // main thread beats it (each change is a POST), the beat threads not.
    let mut main_conn = Conn::new(&target);
    let probe = addr_of(0, 0);
    let first = main_conn.send(&target.post(&probe, &body_of(0)))?;
    if first.status != 200 {
        return Err(format!("registering {probe}: status {}", first.status));
    }
    // The heartbeat's normal rate: a third of the TTL the registry says.
    let ttl_ms: u64 = first
        .header("X-Geerpc-Ttl-Ms")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(300_000);
    let ttl_ms = if ttl_ms == 0 { 300_000 } else { ttl_ms };
    let interval = Duration::from_millis(ttl_ms / 3).max(Duration::from_millis(1));
    r.beat_interval = interval;

    let others: Vec<(usize, usize)> = (1..instances)
        .map(|j| (j % services, j / services))
        .collect();
    let t0 = Instant::now();
    let beats = Beats::start(&target, others, threads, interval)?;
    r.register_secs = t0.elapsed().as_secs_f64();
    let beats_from = Instant::now();
    let sent0 = beats.tally.sent.load(std::sync::atomic::Ordering::Relaxed);
    r.registered = status();

    let names: Vec<String> = (0..services).map(service_name).collect();
    let t0 = Instant::now();
    let w = Watchers::open(&target, &names, n_watchers)?;
    let all_answered = w.wait_until(Instant::now() + Duration::from_secs(60), |b| {
        b.seen.iter().all(|s| s.changes >= 1)
    });
    if !all_answered {
        let b = w.board.0.lock();
        let n = b.seen.iter().filter(|s| s.changes >= 1).count();
        return Err(format!(
            "only {n} of {n_watchers} watchers had a first answer within 60 s (last error: {:?})",
            b.last_error
        ));
    }
    r.watch_open_secs = t0.elapsed().as_secs_f64();
    // Their second polls park; give them time to reach the registry.
    std::thread::sleep(settle);
    r.parked = status();

    if wrk_secs > 0 {
        let g = services - 1;
        let lua = f.get("lua").cloned().unwrap_or_else(|| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/benches/registry_post.lua").to_string()
        });
        let before = w.snapshot();
        r.wrk_get = Wrk::run(
            &format!("{url}?service={}", service_name(g)),
            None,
            wrk_secs,
        );
        r.wrk_post = Wrk::run(&url, Some((&lua, &addr_of(g, 0), &body_of(g))), wrk_secs);
        r.under_wrk = status();
        // Renewals change nothing: a watcher woken here is a bug to see.
        let after = w.snapshot();
        r.woken_by_wrk = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a.changes != b.changes)
            .count();
        std::thread::sleep(settle);
    }

    for k in 0..changes {
        let (addr, body, expect): (String, String, Vec<usize>) = if all_scope {
            let body = if k % 2 == 0 {
                "{\"services\":[]}".to_string()
            } else {
                body_of(0)
            };
            (probe.clone(), body, (0..n_watchers).collect())
        } else {
            let s = k % services;
            let body = format!(
                "{{\"services\":[\"{}\"],\"weight\":{}}}",
                service_name(s),
                2 + k
            );
            let expect = (0..n_watchers).filter(|i| i % services == s).collect();
            (addr_of(s, 0), body, expect)
        };
        let before = w.snapshot();
        let sent = Instant::now();
        let answer = main_conn.send(&target.post(&addr, &body));
        let t0 = Instant::now();
        match answer {
            Ok(a) if a.status == 200 => {}
            Ok(a) => return Err(format!("change {k}: status {}", a.status)),
            Err(e) => return Err(format!("change {k}: {e}")),
        }
        r.post_us.push((t0 - sent).as_micros() as u64);
        let deadline = t0 + wait;
        w.wait_until(deadline, |b| {
            expect
                .iter()
                .all(|&i| b.seen[i].changes > before[i].changes)
        });
        let after = w.snapshot();
        for &i in &expect {
            if after[i].changes == before[i].changes {
                r.missed += 1;
                continue;
            }
            let at = after[i].at.expect("a change has a time");
            r.lat_sent_us
                .push(at.saturating_duration_since(sent).as_micros() as u64);
            match at.checked_duration_since(t0) {
                Some(d) => r.lat_us.push(d.as_micros() as u64),
                None => {
                    r.early += 1;
                    r.lat_us.push(0);
                }
            }
        }
        std::thread::sleep(gap);
    }
    r.end = status();
    let beat_secs = beats_from.elapsed().as_secs_f64();
    let t = &beats.tally;
    r.beats_per_sec =
        (t.sent.load(std::sync::atomic::Ordering::Relaxed) - sent0) as f64 / beat_secs;
    r.beat_failures = t.failed.load(std::sync::atomic::Ordering::Relaxed);
    r.beat_max_lag_ms = t.max_lag_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e3;
    {
        let b = w.board.0.lock();
        r.refused = b.refused;
        r.reconnects = b.reconnects;
        r.last_error = b.last_error.clone();
    }
    // Watchers and beats first, so that they do not see the registry go.
    drop(w);
    drop(beats);
    drop(started);
    Ok(r)
}
