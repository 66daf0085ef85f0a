//! Load generator speaking the common benchmark CLI (`docs/BENCH.md`).
//!
//! ```text
//! loadgen serve --addr 127.0.0.1:PORT [--codec json|msgpack|gob]
//! loadgen load  --addr 127.0.0.1:PORT --conns K --concurrency C --secs S
//!               [--payload BYTES] [--codec json|msgpack|gob]
//!               (--addr A,B: the K connections go to A and B in turn)
//! loadgen serve --addr 127.0.0.1:PORT --registry URL      (also registers)
//! loadgen serve --addr 127.0.0.1:PORT --etcd ENDPOINTS     (registers in etcd)
//! loadgen load  --registry URL [--select MODE] [--fail MODE] --concurrency C --secs S
//! loadgen load  --etcd ENDPOINTS [--select MODE] [--fail MODE] --concurrency C --secs S
//! loadgen serve|load ... --registry URL [--registry-token-file FILE] [--registry-ca FILE]
//! loadgen load  ... [--method sum|echo|work|sleep] [--arg N] [--timeout MS]
//!               [--slow-ratio R --slow-ms M] [--rate QPS]
//! ```
//!
//! `serve` also answers `Arith.Work` (burns the CPU for `Num1`
//! microseconds) and `Arith.Sleep` (sleeps `Num1` milliseconds), for the
//! overload and long-tail points of `benches/overload.sh`. `--rate` runs
//! an open loop (`loadgen/open_loop.rs`) instead of the closed one.
//!
//! A flag it does not know, a flag given twice, a value it cannot use or a
//! flag that means nothing with the others (`--conns` through a registry)
//! ends it with the usage and exit code 2 before anything runs: a
//! benchmark that silently ignored `--rate 100` would measure something
//! else than asked.
//!
//! Uses only geerpc's public API, as a user would.

// Not `mod x;`: a file beside this one would be built as an example of
// its own.
#[path = "loadgen/calls.rs"]
mod calls;
#[path = "loadgen/flags.rs"]
mod flags;
#[path = "loadgen/open_loop.rs"]
mod open_loop;

use std::collections::HashMap;
use std::io::Write;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use geerpc::etcd::EtcdDiscovery;
use geerpc::registration::RegisterOptions;
use geerpc::{Client, Discovery, Server, XClient};

use calls::{Caller, Kind, SumArgs, Tally, Target};
use flags::{
    codec_of, fail_mode, flag, grace, kind_of, load_flags, refuse, registry_access, select_mode,
    serve_flags, slow_of, timeout_of, MAX_SLEEP_MS, MAX_WORK_US, USAGE,
};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        refuse("a command is needed: serve or load")
    };
    match cmd.as_str() {
        "serve" => serve(&serve_flags(rest)),
        "load" => load(&load_flags(rest)),
        "-h" | "--help" => println!("{USAGE}"),
        other => refuse(&format!(
            "unknown command {other:?}: expected serve or load"
        )),
    }
}

/// The services `serve` registers, typed: `#[geerpc::service]` makes
/// `ArithService` and `EchoService` from these traits (the wire names are
/// `Arith.Sum`, `Arith.Work`, `Arith.Sleep`, `Echo.Echo`). The load side
/// (`calls.rs`) picks its method by name from a flag, so it stays on the
/// dynamic `call`.
#[geerpc::service]
trait Arith {
    /// Num1 + Num2 (wrapping).
    fn sum(&self, args: SumArgs) -> Result<i64, String>;
    /// Busy for Num1 microseconds of CPU time.
    fn work(&self, args: SumArgs) -> Result<i64, String>;
    /// Asleep for Num1 milliseconds.
    fn sleep(&self, args: SumArgs) -> Result<i64, String>;
}

#[geerpc::service]
trait Echo {
    /// The argument, back.
    fn echo(&self, s: String) -> Result<String, String>;
}

struct Bench;

impl Arith for Bench {
    fn sum(&self, a: SumArgs) -> Result<i64, String> {
        Ok(a.num1.wrapping_add(a.num2))
    }

    fn work(&self, a: SumArgs) -> Result<i64, String> {
        if !(0..=MAX_WORK_US).contains(&a.num1) {
            return Err(format!(
                "Arith.Work {}: must be 0..={MAX_WORK_US} microseconds",
                a.num1
            ));
        }
        burn_cpu(Duration::from_micros(a.num1 as u64));
        Ok(a.num1)
    }

    fn sleep(&self, a: SumArgs) -> Result<i64, String> {
        if !(0..=MAX_SLEEP_MS).contains(&a.num1) {
            return Err(format!(
                "Arith.Sleep {}: must be 0..={MAX_SLEEP_MS} milliseconds",
                a.num1
            ));
        }
        std::thread::sleep(Duration::from_millis(a.num1 as u64));
        Ok(a.num1)
    }
}

impl Echo for Bench {
    fn echo(&self, s: String) -> Result<String, String> {
        Ok(s)
    }
}

fn bench_services(server: &Server) {
    server
        .register(ArithService::new(Bench))
        .expect("register Arith");
    server
        .register(EchoService::new(Bench))
        .expect("register Echo");
}

/// Arith.Work's body: busy (the CPU-bound handler of the overload point)
/// until this thread has used `cpu` of CPU time. Not wall-clock time: a
/// handler preempted half way must still do all its work, as real
/// CPU-bound work would, or an overloaded server would look faster the
/// more handlers it ran at once. Bounded by `cpu` + 1 s of wall-clock time
/// too; where the thread's CPU clock is not available, wall-clock time.
fn burn_cpu(cpu: Duration) {
    let start = Instant::now();
    let give_up = start + cpu + Duration::from_secs(1);
    let Some(used0) = thread_cpu_time() else {
        while start.elapsed() < cpu {
            std::hint::spin_loop();
        }
        return;
    };
    while Instant::now() < give_up {
        match thread_cpu_time() {
            Some(used) if used.saturating_sub(used0) < cpu => std::hint::spin_loop(),
            _ => return,
        }
    }
}

/// The CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

fn serve(flags: &HashMap<String, String>) {
    let addr = &flags["addr"];
    let server = flags::limits(flags)(Server::builder().shutdown_grace(grace(flags))).build();
    bench_services(&server);
    let listened = match flags::server_tls(flags) {
        Some(tls) => server.listen_tls(addr, &tls),
        None => server.listen(addr),
    };
    let running = match listened {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            exit(1)
        }
    };
    // Before `ready`, so that a signal sent right after it is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .expect("install signal handlers");
    // Kept until the end: dropping it deregisters.
    let _heartbeat = flags.get("registry").map(|url| {
        let hb = registry_access(flags)
            .registrar(url)
            .and_then(|r| r.register_server(&running, RegisterOptions::new()))
            .unwrap_or_else(|e| {
                eprintln!("loadgen: {e}");
                exit(1)
            });
        eprintln!("loadgen: registering {} with {url}", running.addr());
        hb
    });
    // Kept until the end: dropping it revokes the etcd lease.
    let _etcd = flags.get("etcd").map(|endpoints| {
        let r = geerpc::etcd::EtcdRegistration::for_server(
            &running,
            &[endpoints.as_str()],
            RegisterOptions::new(),
        )
        .unwrap_or_else(|e| {
            eprintln!("loadgen: {e}");
            exit(1)
        });
        eprintln!(
            "loadgen: registering {} in etcd {endpoints}",
            running.addr()
        );
        r
    });
    eprintln!("loadgen: serving on {}", running.addr());
    println!("ready");
    std::io::stdout().flush().ok();
    signals.forever().next();
    // Deregisters from the registry (if any) first, then drains: clients
    // are told to go elsewhere, calls already sent are answered (within the
    // grace), and every thread is joined.
    eprintln!("loadgen: stopping: draining {}", running.addr());
    running.shutdown();
}

/// The calls go through an XClient over the instances a registry (`--registry
/// URL`) or etcd (`--etcd ENDPOINTS`) lists.
fn discovered_target(
    flags: &HashMap<String, String>,
    payload: usize,
) -> (Target, Arc<dyn Discovery>) {
    let service = if payload > 0 { "Echo" } else { "Arith" };
    let found: geerpc::Result<(Arc<dyn Discovery>, String)> =
        match (flags.get("registry"), flags.get("etcd")) {
            (Some(url), _) => registry_access(flags)
                .discovery(url)
                .service(service)
                .build()
                .map(|d| (Arc::new(d) as Arc<dyn Discovery>, format!("registry {url}"))),
            (None, Some(endpoints)) => EtcdDiscovery::new(&[endpoints.as_str()], Some(service))
                .map(|d| {
                    (
                        Arc::new(d) as Arc<dyn Discovery>,
                        format!("etcd {endpoints}"),
                    )
                }),
            (None, None) => unreachable!("checked by load_flags"),
        };
    let (discovery, source) = found.unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        exit(1)
    });
    match discovery.snapshot() {
        Ok(s) if !s.instances.is_empty() => {}
        Ok(_) => {
            eprintln!("loadgen: {source} lists no instance of {service}");
            exit(1)
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            exit(1)
        }
    }
    let xc = XClient::builder(discovery.clone())
        .select_mode(select_mode(flags))
        .fail_mode(fail_mode(flags))
        .idempotent(true)
        .client(match flags::client_tls(flags) {
            Some(tls) => Client::builder().codec(codec_of(flags)).tls(tls),
            None => Client::builder().codec(codec_of(flags)),
        })
        .build();
    (Target::Registry(Arc::new(xc)), discovery)
}

fn note_servers(d: &Option<Arc<dyn Discovery>>, seen: &mut BTreeSet<String>) {
    if let Some(Ok(s)) = d.as_ref().map(|d| d.snapshot()) {
        seen.extend(s.instances.iter().map(|i| i.addr.clone()));
    }
}

/// Sleeps `d`, noting the registry's instances every 100 ms.
fn run_for(d: Duration, discovery: &Option<Arc<dyn Discovery>>, seen: &mut BTreeSet<String>) {
    let end = Instant::now() + d;
    loop {
        note_servers(discovery, seen);
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

fn load(flags: &HashMap<String, String>) {
    let discovered = flags.contains_key("registry") || flags.contains_key("etcd");
    let addr = flags.get("addr").cloned().unwrap_or_default();
    let conns: usize = flag(flags, "conns", 1, 1);
    let concurrency: usize = flag(flags, "concurrency", 1, 1);
    let secs: f64 = flag(flags, "secs", 5.0, 0.0);
    let payload: usize = flag(flags, "payload", 0, 0);
    let codec = codec_of(flags);
    // Several addresses (comma-separated) get the connections in turn: a
    // baseline of direct connections to the same servers an XClient calls.
    let targets: Vec<String> = addr
        .split(',')
        .map(|a| match a.contains('@') {
            true => a.to_string(),
            false => format!("tcp@{a}"),
        })
        .collect();

    let mut seen = BTreeSet::new();
    let mut discovery = None;
    let clients: Vec<Target> = match discovered {
        true => {
            let (t, d) = discovered_target(flags, payload);
            discovery = Some(d);
            vec![t]
        }
        false => {
            let mut builder = Client::builder().codec(codec);
            if let Some(tls) = flags::client_tls(flags) {
                builder = builder.tls(tls);
            }
            (0..conns)
                .map(|i| {
                    builder
                        .dial(&targets[i % targets.len()])
                        .map(Target::Direct)
                        .unwrap_or_else(|e| {
                            eprintln!("loadgen: {e}");
                            exit(1)
                        })
                })
                .collect()
        }
    };
    let conns = clients.len();

    let kind = kind_of(flags);
    let timeout = timeout_of(flags);
    let slow = slow_of(flags);
    let rate: Option<f64> = flags.get("rate").and_then(|r| r.parse().ok());
    let concurrency = match (rate, timeout, flags.contains_key("concurrency")) {
        (Some(r), Some(t), false) => open_loop::default_callers(r, t),
        _ => concurrency,
    };
    // Each caller echoes its own string (the first letter differs).
    let callers: Vec<Caller> = (0..concurrency)
        .map(|i| {
            let kind = match &kind {
                Kind::Echo(p) => {
                    let mut s = p.clone();
                    s.replace_range(0..1, &((b'a' + (i % 26) as u8) as char).to_string());
                    Kind::Echo(s)
                }
                k => k.clone(),
            };
            Caller::new(i, kind, slow)
        })
        .collect();

    let warmup = Duration::from_millis(500);
    let run_time = Duration::from_secs_f64(secs);
    let (tally, elapsed) = match (rate, timeout) {
        (Some(rate), Some(timeout)) => {
            let tally = open_loop::run(
                &clients,
                callers,
                rate,
                timeout,
                warmup,
                run_time,
                &mut || note_servers(&discovery, &mut seen),
            );
            (tally, run_time.as_secs_f64())
        }
        _ => closed_loop(&clients, callers, timeout, warmup, run_time, |d| {
            run_for(d, &discovery, &mut seen)
        }),
    };
    let unstarted = tally.unstarted;
    let mut line = serde_json::json!({
        "system": "geerpc",
        "conns": conns,
        "concurrency": concurrency,
        "payload": payload,
        "secs": secs,
        "method": kind.name(),
    });
    if let serde_json::Value::Object(figures) = tally.summary(elapsed, timeout) {
        line.as_object_mut().expect("an object").extend(figures);
    }
    if let Kind::Work(n) | Kind::Sleep(n) = kind {
        line["arg"] = n.into();
    }
    if let Some(t) = timeout {
        line["timeout_ms"] = (t.as_millis() as u64).into();
    }
    if let Some((r, ms)) = slow {
        line["slow_ratio"] = r.into();
        line["slow_ms"] = ms.into();
    }
    if let Some(r) = rate {
        line["rate"] = r.into();
        line["unstarted"] = unstarted.into();
    }
    if discovery.is_some() {
        line["servers"] = seen.len().into();
    }
    println!("{line}");
}

/// Each caller sends its next call when the last returns, for `warmup`
/// (not counted) then `run_time`; `wait(d)` passes the time. Returns the
/// tally and the measured window in seconds.
fn closed_loop(
    clients: &[Target],
    callers: Vec<Caller>,
    timeout: Option<Duration>,
    warmup: Duration,
    run_time: Duration,
    mut wait: impl FnMut(Duration),
) -> (Tally, f64) {
    let conns = clients.len();
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(callers.len() + 1));
    let mut workers = Vec::new();
    for (i, mut caller) in callers.into_iter().enumerate() {
        let client = clients[i % conns].clone();
        let (counting, stop, start) = (counting.clone(), stop.clone(), start.clone());
        workers.push(std::thread::spawn(move || {
            let mut tally = Tally::with_capacity(1 << 16);
            start.wait();
            // Bounded in time by `stop`, each call by its timeout if any.
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let (outcome, slow) = caller.call(&client, timeout.map(|t| t0 + t));
                let dt = t0.elapsed();
                if counting.load(Ordering::Relaxed) {
                    tally.record(dt, outcome, slow);
                }
            }
            tally
        }));
    }
    start.wait();
    std::thread::sleep(warmup);
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    wait(run_time);
    counting.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for w in workers {
        all.merge(w.join().expect("worker thread"));
    }
    (all, elapsed)
}
