//! loadgen's command line: the usage, the flags each command takes, and
//! their checks. Everything is checked before anything runs; what is wrong
//! ends the program with the usage and exit code 2 (`tests/loadgen_flags.rs`).

use std::collections::HashMap;
use std::process::exit;
use std::time::Duration;

use geerpc::{Codec, FailMode, SelectMode};

use super::calls::Kind;
use super::open_loop;

/// Bounds on what a caller may ask `Arith.Work` and `Arith.Sleep` for:
/// every resource a peer can make the server hold has one.
pub const MAX_WORK_US: i64 = 1_000_000;
pub const MAX_SLEEP_MS: i64 = 60_000;

pub const USAGE: &str = "\
usage:
  loadgen serve --addr HOST:PORT [--codec json|msgpack|gob]
  loadgen load --addr HOST:PORT[,HOST:PORT...] [--conns K] [--concurrency C] [--secs S] [--payload BYTES] [--codec json|msgpack|gob]
               (several addresses: the K connections go to them in turn)
  loadgen serve --addr HOST:PORT (--registry URL | --etcd ENDPOINTS) [--grace DURATION]
               (registers; on SIGINT/SIGTERM deregisters, then drains within the grace, default 5s)
  loadgen load (--registry URL | --etcd ENDPOINTS) [--select random|round_robin|weighted_round_robin|consistent_hash|p2c]
               [--fail failfast|failover|failtry|failbackup] [--concurrency C] [--secs S] [--payload BYTES] [--codec json|msgpack|gob]
  serve and load also take: [--registry-token-file FILE] [--registry-ca FILE]
               (with --registry: the registry's bearer token, read from FILE, never given on the
               command line; the CA, PEM, an https:// registry's certificate must chain to)
  serve and load over TLS: serve [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] (listens tls@);
               load --addr tls@HOST:PORT [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]
  serve also takes: [--max-connections N] [--max-concurrency N] [--max-queue-wait DURATION] [--adaptive on|off]
               (the server's limits: ServerBuilder::max_connections, max_concurrency, max_queue_wait,
               adaptive_concurrency; defaults: the library's)
  load also takes: [--method sum|echo|work|sleep] [--arg N] [--timeout MS] [--slow-ratio R --slow-ms M] [--rate QPS]
               --method work|sleep needs --arg (microseconds of CPU | milliseconds of sleep);
               --method echo needs --payload; --slow-ratio R (0 < R <= 1) sends that fraction of calls
               to Arith.Sleep M ms; --rate runs an open loop (calls start at QPS whatever the latency),
               needs --timeout, and takes --concurrency as its caller threads (default: enough for QPS x timeout)
defaults: --conns 1, --concurrency 1, --secs 5, --payload 0 (Arith.Sum; N > 0: Echo.Echo of N bytes),
          --codec json, --select random, --fail failfast, no timeout, closed loop";

/// The flags each command takes.
const SERVE_FLAGS: &[&str] = &[
    "addr",
    "codec",
    "registry",
    "registry-token-file",
    "registry-ca",
    "etcd",
    "grace",
    "max-connections",
    "max-concurrency",
    "max-queue-wait",
    "adaptive",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
];
const LOAD_FLAGS: &[&str] = &[
    "addr",
    "tls-ca",
    "tls-cert",
    "tls-key",
    "conns",
    "concurrency",
    "secs",
    "payload",
    "codec",
    "registry",
    "registry-token-file",
    "registry-ca",
    "etcd",
    "select",
    "fail",
    "method",
    "arg",
    "timeout",
    "slow-ratio",
    "slow-ms",
    "rate",
];

/// Ends the program on a command line it cannot run: what is wrong, the
/// usage, exit code 2.
pub fn refuse(why: &str) -> ! {
    eprintln!("loadgen: {why}\n{USAGE}");
    exit(2)
}

/// `--flag value` (or `--flag=value`) pairs, each one of `known`, each at
/// most once.
pub fn parse_flags(cmd: &str, rest: &[String], known: &[&str]) -> HashMap<String, String> {
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
            refuse(&format!(
                "unknown flag --{name} for `loadgen {cmd}`; it takes --{}",
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
pub fn flag<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
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

/// `--codec`: the library decides whether this build has it (gob only
/// with the `gob` feature), so that a `gob` build needs nothing here.
pub fn codec_of(flags: &HashMap<String, String>) -> Codec {
    let content_type = match flags.get("codec").map(String::as_str) {
        None | Some("json") => "application/json",
        Some("msgpack") => "application/msgpack",
        Some("gob") => "application/gob",
        Some(other) => refuse(&format!("--codec {other}: expected json, msgpack or gob")),
    };
    Codec::from_content_type(content_type).unwrap_or_else(|| {
        refuse("--codec gob: this build has no gob codec (build with the `gob` feature)")
    })
}

/// `serve`'s flags, checked before anything starts.
pub fn serve_flags(rest: &[String]) -> HashMap<String, String> {
    let flags = parse_flags("serve", rest, SERVE_FLAGS);
    if !flags.contains_key("addr") {
        refuse("serve needs --addr HOST:PORT")
    }
    // The server answers both codecs; the value is still checked.
    codec_of(&flags);
    grace(&flags);
    let _checked = limits(&flags);
    registry_access(&flags);
    server_tls(&flags);
    flags
}

/// `--registry-token-file` and `--registry-ca`, checked: they need
/// `--registry`, and the token file must hold a token (the error names the
/// file, never its content).
pub struct RegistryAccess {
    pub token: Option<geerpc::Token>,
    /// Read only with the `tls` feature (refused without it).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub ca: Option<String>,
}

pub fn registry_access(flags: &HashMap<String, String>) -> RegistryAccess {
    for f in ["registry-token-file", "registry-ca"] {
        if flags.contains_key(f) && !flags.contains_key("registry") {
            refuse(&format!("--{f} applies to --registry"))
        }
    }
    let token = flags.get("registry-token-file").map(|f| {
        geerpc::Token::from_file(f)
            .unwrap_or_else(|e| refuse(&format!("--registry-token-file: {e}")))
    });
    let ca = flags.get("registry-ca").cloned();
    if ca.is_some() && cfg!(not(feature = "tls")) {
        refuse("--registry-ca needs geerpc's tls feature, which this build lacks")
    }
    if let Some(ca) = &ca {
        if let Err(e) = std::fs::metadata(ca) {
            refuse(&format!("--registry-ca {ca}: {e}"))
        }
    }
    RegistryAccess { token, ca }
}

impl RegistryAccess {
    pub fn registrar(&self, url: &str) -> geerpc::Result<geerpc::registry::HttpRegistrar> {
        let mut r = geerpc::registry::HttpRegistrar::new(url)?;
        if let Some(t) = &self.token {
            r = r.token(t.clone());
        }
        #[cfg(feature = "tls")]
        if let Some(ca) = &self.ca {
            r = r.tls_ca_file(ca);
        }
        Ok(r)
    }

    pub fn discovery(&self, url: &str) -> geerpc::registry::RegistryDiscoveryBuilder {
        let mut b = geerpc::RegistryDiscovery::builder(url);
        if let Some(t) = &self.token {
            b = b.token(t.clone());
        }
        #[cfg(feature = "tls")]
        if let Some(ca) = &self.ca {
            b = b.tls_ca_file(ca);
        }
        b
    }
}

/// `serve --tls-cert FILE --tls-key FILE [--tls-client-ca FILE]`: serve
/// over TLS (mutual TLS with a client CA). None: plaintext.
pub fn server_tls(flags: &HashMap<String, String>) -> Option<geerpc::wire::ServerTls> {
    let (cert, key) = match (flags.get("tls-cert"), flags.get("tls-key")) {
        (Some(c), Some(k)) => (c, k),
        (None, None) if flags.contains_key("tls-client-ca") => {
            refuse("--tls-client-ca needs --tls-cert and --tls-key")
        }
        (None, None) => return None,
        _ => refuse("--tls-cert and --tls-key go together"),
    };
    let tls = geerpc::wire::ServerTls::files(cert, key).unwrap_or_else(|e| refuse(&e.to_string()));
    Some(match flags.get("tls-client-ca") {
        Some(ca) => tls
            .require_client_cert_file(ca)
            .unwrap_or_else(|e| refuse(&e.to_string())),
        None => tls,
    })
}

/// `load [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]`: how `tls@`
/// addresses are dialled (default: the webpki roots, no client certificate).
pub fn client_tls(flags: &HashMap<String, String>) -> Option<geerpc::wire::ClientTls> {
    let ca = flags.get("tls-ca");
    let pair = match (flags.get("tls-cert"), flags.get("tls-key")) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => refuse("--tls-cert and --tls-key go together"),
    };
    if ca.is_none() && pair.is_none() {
        return None;
    }
    let tls = match ca {
        Some(ca) => geerpc::wire::ClientTls::ca_file(ca).unwrap_or_else(|e| refuse(&e.to_string())),
        None => geerpc::wire::ClientTls::webpki_roots(),
    };
    Some(match pair {
        Some((c, k)) => tls
            .client_cert_files(c, k)
            .unwrap_or_else(|e| refuse(&e.to_string())),
        None => tls,
    })
}

/// The server's limits from `--max-connections`, `--max-concurrency`,
/// `--max-queue-wait` and `--adaptive`, applied to `b`.
pub fn limits(
    flags: &HashMap<String, String>,
) -> impl Fn(geerpc::server::ServerBuilder) -> geerpc::server::ServerBuilder {
    let conns = flags
        .get("max-connections")
        .map(|n| match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => refuse(&format!("--max-connections {n}: a count of at least 1")),
        });
    let max = flags
        .get("max-concurrency")
        .map(|n| match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => refuse(&format!("--max-concurrency {n}: a count of at least 1")),
        });
    let wait = flags.get("max-queue-wait").map(|w| {
        geerpc::duration::parse_duration(w)
            .unwrap_or_else(|e| refuse(&format!("--max-queue-wait {w}: {e}")))
    });
    let adaptive = flags.get("adaptive").map(|a| match a.as_str() {
        "on" => true,
        "off" => false,
        _ => refuse(&format!("--adaptive {a}: on or off")),
    });
    move |mut b| {
        if let Some(n) = conns {
            b = b.max_connections(n);
        }
        if let Some(n) = max {
            b = b.max_concurrency(n);
        }
        if let Some(w) = wait {
            b = b.max_queue_wait(w);
        }
        if let Some(a) = adaptive {
            b = b.adaptive_concurrency(a);
        }
        b
    }
}

pub fn grace(flags: &HashMap<String, String>) -> Duration {
    flags.get("grace").map_or(Duration::from_secs(5), |g| {
        geerpc::duration::parse_duration(g).unwrap_or_else(|e| refuse(&format!("--grace {g}: {e}")))
    })
}

/// `load`'s flags, checked (values and combinations) before anything
/// starts.
pub fn load_flags(rest: &[String]) -> HashMap<String, String> {
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
    let conns = flag(&flags, "conns", 1usize, 1);
    // Each address gets a connection at least: fewer would leave some
    // unused without a word.
    let addrs = flags.get("addr").map_or(1, |a| a.split(',').count());
    if addrs > conns {
        refuse(&format!(
            "--conns {conns} is fewer than the {addrs} addresses of --addr (each gets connections in turn)"
        ))
    }
    if flags
        .get("addr")
        .is_some_and(|a| a.split(',').any(str::is_empty))
    {
        refuse("--addr has an empty address (A,B: no spaces, no empty entries)")
    }
    flag(&flags, "concurrency", 1usize, 1);
    flag(&flags, "payload", 0usize, 0);
    if let Some(v) = flags.get("secs") {
        if !v.parse::<f64>().is_ok_and(|s| s > 0.0 && s < 1e9) {
            refuse(&format!("--secs {v}: must be a positive number of seconds"))
        }
    }
    codec_of(&flags);
    registry_access(&flags);
    client_tls(&flags);
    select_mode(&flags);
    fail_mode(&flags);
    kind_of(&flags);
    timeout_of(&flags);
    slow_of(&flags);
    if let Some(v) = flags.get("rate") {
        if !v.parse::<f64>().is_ok_and(|r| r > 0.0 && r <= 1e6) {
            refuse(&format!(
                "--rate {v}: must be a number of calls per second in (0, 1e6]"
            ))
        }
        if !has("timeout") {
            refuse("--rate needs --timeout MS: an open loop must bound each call, or what it holds grows without end")
        }
        if flag(&flags, "concurrency", 1usize, 1) > open_loop::MAX_CALLERS {
            refuse(&format!(
                "--concurrency with --rate: at most {} caller threads",
                open_loop::MAX_CALLERS
            ))
        }
    }
    flags
}

/// What the callers call: `--method`, with `--arg` or `--payload`.
pub fn kind_of(flags: &HashMap<String, String>) -> Kind {
    let payload: usize = flag(flags, "payload", 0, 0);
    let method = flags
        .get("method")
        .map(String::as_str)
        .unwrap_or(if payload > 0 { "echo" } else { "sum" });
    let arg = |max: i64, unit: &str| -> i64 {
        match flags.get("arg") {
            None => refuse(&format!("--method {method} needs --arg N ({unit})")),
            Some(_) => {
                let n: i64 = flag(flags, "arg", 0, 0);
                if n > max {
                    refuse(&format!("--arg {n}: at most {max} {unit}"))
                }
                n
            }
        }
    };
    if flags.contains_key("arg") && matches!(method, "sum" | "echo") {
        refuse(&format!(
            "--arg applies to --method work and sleep, not {method}"
        ))
    }
    if payload > 0 && method != "echo" {
        refuse(&format!("--payload applies to --method echo, not {method}"))
    }
    match method {
        "sum" => Kind::Sum,
        "echo" if payload == 0 => refuse("--method echo needs --payload BYTES (at least 1)"),
        "echo" => Kind::Echo("x".repeat(payload)),
        "work" => Kind::Work(arg(MAX_WORK_US, "microseconds")),
        "sleep" => Kind::Sleep(arg(MAX_SLEEP_MS, "milliseconds")),
        other => refuse(&format!(
            "--method {other}: expected sum, echo, work or sleep"
        )),
    }
}

/// `--timeout MS`: each call's deadline.
pub fn timeout_of(flags: &HashMap<String, String>) -> Option<Duration> {
    flags
        .contains_key("timeout")
        .then(|| Duration::from_millis(flag(flags, "timeout", 1u64, 1)))
}

/// `--slow-ratio R --slow-ms M`, both or neither.
pub fn slow_of(flags: &HashMap<String, String>) -> Option<(f64, i64)> {
    match (flags.get("slow-ratio"), flags.get("slow-ms")) {
        (None, None) => None,
        (Some(r), Some(_)) => {
            if !r.parse::<f64>().is_ok_and(|r| r > 0.0 && r <= 1.0) {
                refuse(&format!("--slow-ratio {r}: must be in (0, 1]"))
            }
            let ms: i64 = flag(flags, "slow-ms", 1, 1);
            if ms > MAX_SLEEP_MS {
                refuse(&format!("--slow-ms {ms}: at most {MAX_SLEEP_MS}"))
            }
            Some((r.parse().unwrap_or(0.0), ms))
        }
        _ => refuse("--slow-ratio and --slow-ms go together"),
    }
}

pub fn select_mode(flags: &HashMap<String, String>) -> SelectMode {
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

pub fn fail_mode(flags: &HashMap<String, String>) -> FailMode {
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
