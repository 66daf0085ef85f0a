//! Load generator speaking the common benchmark CLI (`docs/BENCH.md`).
//!
//! ```text
//! loadgen serve --addr 127.0.0.1:PORT [--codec json|msgpack]
//! loadgen load  --addr 127.0.0.1:PORT --conns K --concurrency C --secs S
//!               [--payload BYTES] [--codec json|msgpack]
//! loadgen serve --addr 127.0.0.1:PORT --registry URL      (also registers)
//! loadgen serve --addr 127.0.0.1:PORT --etcd ENDPOINTS     (registers in etcd)
//! loadgen load  --registry URL [--select MODE] [--fail MODE] --concurrency C --secs S
//! loadgen load  --etcd ENDPOINTS [--select MODE] [--fail MODE] --concurrency C --secs S
//! ```
//!
//! A flag it does not know, a flag given twice, a value it cannot use or a
//! flag that means nothing with the others (`--conns` through a registry)
//! ends it with the usage and exit code 2 before anything runs: a
//! benchmark that silently ignored `--rate 100` would measure something
//! else than asked.
//!
//! Uses only geerpc's public API, as a user would.

use std::collections::HashMap;
use std::io::Write;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use geerpc::etcd::EtcdDiscovery;
use geerpc::registration::RegisterOptions;
use geerpc::{
    Client, Codec, Discovery, FailMode, Heartbeat, RegistryDiscovery, SelectMode, Server, Service,
    XClient,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SumArgs {
    num1: i64,
    num2: i64,
}

const USAGE: &str = "\
usage:
  loadgen serve --addr HOST:PORT [--codec json|msgpack]
  loadgen load --addr HOST:PORT [--conns K] [--concurrency C] [--secs S] [--payload BYTES] [--codec json|msgpack]
  loadgen serve --addr HOST:PORT (--registry URL | --etcd ENDPOINTS) [--grace DURATION]
               (registers; on SIGINT/SIGTERM deregisters, then drains within the grace, default 5s)
  loadgen load (--registry URL | --etcd ENDPOINTS) [--select random|round_robin|weighted_round_robin|consistent_hash|p2c]
               [--fail failfast|failover|failtry|failbackup] [--concurrency C] [--secs S] [--payload BYTES] [--codec json|msgpack]
defaults: --conns 1, --concurrency 1, --secs 5, --payload 0 (Arith.Sum; N > 0: Echo.Echo of N bytes),
          --codec json, --select random, --fail failfast";

/// The flags each command takes.
const SERVE_FLAGS: &[&str] = &["addr", "codec", "registry", "etcd", "grace"];
const LOAD_FLAGS: &[&str] = &[
    "addr",
    "conns",
    "concurrency",
    "secs",
    "payload",
    "codec",
    "registry",
    "etcd",
    "select",
    "fail",
];

/// Ends the program on a command line it cannot run: what is wrong, the
/// usage, exit code 2.
fn refuse(why: &str) -> ! {
    eprintln!("loadgen: {why}\n{USAGE}");
    exit(2)
}

/// `--flag value` (or `--flag=value`) pairs, each one of `known`, each at
/// most once.
fn parse_flags(cmd: &str, rest: &[String], known: &[&str]) -> HashMap<String, String> {
    let mut flags = HashMap::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            exit(0)
        }
        let Some(flag) = arg.strip_prefix("--") else {
            refuse(&format!(
                "unexpected argument {arg:?} (flags are --name value)"
            ))
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if !known.contains(&name) {
            let why = match name {
                "rate" => " (this loadgen runs a closed loop only: each caller sends its next call when the last returns)",
                "method" | "arg" | "timeout" | "slow-ratio" | "slow-ms" => " (not implemented by this loadgen)",
                _ => "",
            };
            refuse(&format!(
                "unknown flag --{name} for `loadgen {cmd}`{why}; it takes --{}",
                known.join(", --")
            ))
        }
        let value = match inline {
            Some(v) => v,
            None => match it.next() {
                Some(v) if !v.starts_with("--") => v.clone(),
                _ => refuse(&format!("--{name} needs a value")),
            },
        };
        if flags.insert(name.to_string(), value).is_some() {
            refuse(&format!("--{name} given twice"))
        }
    }
    flags
}

/// The value of `--name` (or `default`), refusing one that does not parse
/// or is below `min`.
fn flag<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    flags: &HashMap<String, String>,
    name: &str,
    default: T,
    min: T,
) -> T {
    match flags.get(name) {
        None => default,
        Some(v) => match v.parse::<T>() {
            Ok(n) if n >= min => n,
            Ok(_) => refuse(&format!("--{name} {v}: must be at least {min}")),
            Err(_) => refuse(&format!("--{name} {v}: not a number")),
        },
    }
}

fn codec_of(flags: &HashMap<String, String>) -> Codec {
    match flags.get("codec").map(String::as_str) {
        None | Some("json") => Codec::Json,
        Some("msgpack") => Codec::MsgPack,
        Some(other) => refuse(&format!("--codec {other}: expected json or msgpack")),
    }
}

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

/// `serve`'s flags, checked before anything starts.
fn serve_flags(rest: &[String]) -> HashMap<String, String> {
    let flags = parse_flags("serve", rest, SERVE_FLAGS);
    if !flags.contains_key("addr") {
        refuse("serve needs --addr HOST:PORT")
    }
    // The server answers both codecs; the value is still checked.
    codec_of(&flags);
    grace(&flags);
    flags
}

fn grace(flags: &HashMap<String, String>) -> Duration {
    flags.get("grace").map_or(Duration::from_secs(5), |g| {
        geerpc::duration::parse_duration(g).unwrap_or_else(|e| refuse(&format!("--grace {g}: {e}")))
    })
}

/// `load`'s flags, checked (values and combinations) before anything
/// starts.
fn load_flags(rest: &[String]) -> HashMap<String, String> {
    let flags = parse_flags("load", rest, LOAD_FLAGS);
    let has = |f: &str| flags.contains_key(f);
    match (has("addr"), has("registry"), has("etcd")) {
        (true, false, false) => {
            for f in ["select", "fail"] {
                if has(f) {
                    refuse(&format!(
                        "--{f} applies to --registry and --etcd, not --addr"
                    ))
                }
            }
        }
        (false, true, false) | (false, false, true) => {
            if has("conns") {
                refuse("--conns applies to --addr only (through discovery, the XClient keeps one connection per instance)")
            }
        }
        (false, false, false) => refuse("load needs --addr, --registry or --etcd"),
        _ => refuse("load takes one of --addr, --registry and --etcd"),
    }
    flag(&flags, "conns", 1usize, 1);
    flag(&flags, "concurrency", 1usize, 1);
    flag(&flags, "payload", 0usize, 0);
    if let Some(v) = flags.get("secs") {
        if !v.parse::<f64>().is_ok_and(|s| s > 0.0 && s < 1e9) {
            refuse(&format!("--secs {v}: must be a positive number of seconds"))
        }
    }
    codec_of(&flags);
    select_mode(&flags);
    fail_mode(&flags);
    flags
}

fn bench_services(server: &Server) {
    server
        .register(Service::new("Arith").method("Sum", |a: SumArgs| {
            Ok::<_, String>(a.num1.wrapping_add(a.num2))
        }))
        .expect("register Arith");
    server
        .register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))
        .expect("register Echo");
}

fn serve(flags: &HashMap<String, String>) {
    let addr = &flags["addr"];
    let server = Server::builder().shutdown_grace(grace(flags)).build();
    bench_services(&server);
    let running = match server.listen(addr) {
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
        let hb = Heartbeat::for_server(&running, url, RegisterOptions::new()).unwrap_or_else(|e| {
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

/// One caller's work: the next request and a check of its reply.
struct Work {
    n: i64,
    payload: Option<String>,
}

/// Where calls go: one server, or the instances a registry lists.
#[derive(Clone)]
enum Target {
    Direct(Client),
    Registry(Arc<XClient>),
}

impl Target {
    fn call<A, R>(&self, method: &str, args: &A) -> geerpc::Result<R>
    where
        A: Serialize + ?Sized,
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        match self {
            Target::Direct(c) => c.call(method, args),
            Target::Registry(x) => x.call(method, args),
        }
    }
}

impl Work {
    fn call(&mut self, client: &Target) -> bool {
        self.n = self.n.wrapping_add(1);
        match &self.payload {
            None => {
                let args = SumArgs {
                    num1: self.n,
                    num2: self.n * 3,
                };
                matches!(client.call::<_, i64>("Arith.Sum", &args), Ok(v) if v == self.n * 4)
            }
            Some(p) => matches!(client.call::<_, String>("Echo.Echo", p), Ok(v) if v == *p),
        }
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1_000.0
}

fn select_mode(flags: &HashMap<String, String>) -> SelectMode {
    match flags.get("select").map(String::as_str) {
        None | Some("random") => SelectMode::Random,
        Some("round_robin") => SelectMode::RoundRobin,
        Some("weighted_round_robin") | Some("weighted") => SelectMode::WeightedRoundRobin,
        Some("consistent_hash") => SelectMode::ConsistentHash,
        Some("p2c") => SelectMode::PowerOfTwoChoices,
        Some(other) => refuse(&format!(
            "--select {other}: expected random, round_robin, weighted_round_robin, consistent_hash or p2c"
        )),
    }
}

fn fail_mode(flags: &HashMap<String, String>) -> FailMode {
    match flags.get("fail").map(String::as_str) {
        None | Some("failfast") => FailMode::FailFast,
        Some("failover") => FailMode::Failover { retries: 2 },
        Some("failtry") => FailMode::Failtry { retries: 2 },
        Some("failbackup") => FailMode::Failbackup {
            after: Duration::from_millis(10),
        },
        Some(other) => refuse(&format!(
            "--fail {other}: expected failfast, failover, failtry or failbackup"
        )),
    }
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
            (Some(url), _) => RegistryDiscovery::builder(url)
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
        .client(Client::builder().codec(codec_of(flags)))
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
    let target = if addr.contains('@') {
        addr
    } else {
        format!("tcp@{addr}")
    };

    let mut seen = BTreeSet::new();
    let mut discovery = None;
    let clients: Vec<Target> = match discovered {
        true => {
            let (t, d) = discovered_target(flags, payload);
            discovery = Some(d);
            vec![t]
        }
        false => {
            let builder = Client::builder().codec(codec);
            (0..conns)
                .map(|_| {
                    builder
                        .dial(&target)
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

    let warmup = Duration::from_millis(500);
    let run_time = Duration::from_secs_f64(secs);
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(concurrency + 1));
    let mut workers = Vec::new();
    for i in 0..concurrency {
        let client = clients[i % conns].clone();
        let (counting, stop, start) = (counting.clone(), stop.clone(), start.clone());
        let payload = (payload > 0).then(|| {
            let mut s = "x".repeat(payload);
            s.replace_range(0..1, &((b'a' + (i % 26) as u8) as char).to_string());
            s
        });
        workers.push(std::thread::spawn(move || {
            let mut work = Work {
                n: (i as i64) << 32,
                payload,
            };
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            start.wait();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let ok = work.call(&client);
                let dt = t0.elapsed();
                if counting.load(Ordering::Relaxed) {
                    lat.push(dt.as_nanos() as u64);
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    start.wait();
    std::thread::sleep(warmup);
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    run_for(run_time, &discovery, &mut seen);
    counting.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w.join().expect("worker thread");
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let calls = all.len() as u64;
    let mut line = serde_json::json!({
        "system": "geerpc",
        "conns": conns,
        "concurrency": concurrency,
        "payload": payload,
        "calls": calls,
        "errors": errors,
        "secs": secs,
        "calls_per_sec": (calls as f64 / elapsed).round(),
        "p50_us": percentile(&all, 0.50),
        "p99_us": percentile(&all, 0.99),
    });
    if discovery.is_some() {
        line["servers"] = seen.len().into();
    }
    println!("{line}");
}
