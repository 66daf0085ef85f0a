//! The `geerpc` command: run a registry, list what it knows, call a method.
//!
//! ```text
//! geerpc registry [--addr 127.0.0.1:9999] [--ttl 5m] [--legacy-ttl 5m] [--workers 0] [--token-file FILE [--read-token-file FILE]] [--tls-cert FILE --tls-key FILE]
//! geerpc list (--registry URL | --etcd ENDPOINTS) [--service NAME] [--json] [--registry-token-file FILE] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE] [--etcd-user NAME --etcd-password-file FILE]
//! geerpc call (--registry URL | --etcd ENDPOINTS | --addr tcp@HOST:PORT) Service.Method ['JSON args' | -] [--codec json|msgpack|gob] [--magic 0x3bef5c] [--connect-path PATH] [same options as list]
//! geerpc watch (--registry URL | --etcd ENDPOINTS) [--service NAME] [same options as list]
//! geerpc describe --addr ADDR [Service | Service.Method] [--json]
//! geerpc bench (--registry URL | --etcd ENDPOINTS | --addr ADDR) Service.Method ['JSON args'] [--concurrency C] [--duration 10s | --calls N] [--rate QPS] [--timeout D] [--json]
//! ```
//!
//! This file holds the command line and the `registry` and `list`
//! commands; `call` is in `call.rs`, `watch`, `describe` and `bench` in
//! files of those names, the exit codes and hints in `exit.rs`, the
//! credentials and trust in `creds.rs`. Uses only the library's public API, as a user
//! would.

mod bench;
mod call;
mod creds;
mod describe;
mod exit;
mod watch;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};
use geerpc::etcd::EtcdDiscovery;
use geerpc::xclient::Instance;
use geerpc::{Discovery, Registry, RegistryDiscovery};

use exit::{Failure, Kind};

#[derive(Parser)]
#[command(
    name = "geerpc",
    version,
    about = "GeeRPC registry and client tool",
    after_help = exit::TABLE
)]
struct Cli {
    /// Say more on stderr: -v what the command does (which instance
    /// answered), -vv debug. RUST_LOG, when set, decides instead.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a standalone registry until Ctrl-C or SIGTERM. Prints its URL on
    /// stdout once it listens; logs go to stderr.
    Registry {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = Registry::DEFAULT_ADDR)]
        addr: String,
        /// How long an address stays listed without a heartbeat (2s, 500ms,
        /// 5m; 0 keeps addresses until they deregister). geerpc servers
        /// follow it; Go GeeRPC servers beat every 4m whatever it says, and
        /// are kept at least --legacy-ttl.
        #[arg(long, default_value = "5m", value_parser = duration)]
        ttl: Duration,
        /// How long an address registered without geerpc's heartbeat (a
        /// header-only POST: a Go GeeRPC server) stays listed at least,
        /// whatever --ttl says (the longer applies). Such instances name no
        /// service: a --service filter lists them only where no instance
        /// names the service.
        #[arg(long, default_value = "5m", value_parser = duration)]
        legacy_ttl: Duration,
        /// Serve on this path instead of /_rpc_/registry and
        /// /_geerpc_/registry.
        #[arg(long)]
        path: Option<String>,
        /// Threads answering requests (0: each connection's own thread).
        #[arg(long, default_value_t = Registry::DEFAULT_WORKERS)]
        workers: usize,
        #[command(flatten)]
        creds: creds::Serve,
    },
    /// List the instances a registry (or etcd) knows, one per line, address
    /// first.
    #[command(after_help = exit::TABLE)]
    List {
        #[command(flatten)]
        source: Source,
        /// Only the instances serving this service.
        #[arg(long)]
        service: Option<String>,
        /// Print the instances as one JSON array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        reach: creds::Reach,
    },
    /// Call Service.Method with JSON arguments and print the JSON reply.
    /// Through a registry or etcd, the call goes to one instance at random;
    /// if it cannot be sent there (nothing listening, draining), to the
    /// next, until every instance was tried.
    #[command(after_help = exit::TABLE)]
    Call(CallArgs),
    /// Print the instances a registry (or etcd) lists, then each change as
    /// it happens (added, removed, changed), with the time, until Ctrl-C.
    #[command(after_help = exit::TABLE)]
    Watch {
        #[command(flatten)]
        source: Source,
        /// Only the instances serving this service.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        reach: creds::Reach,
    },
    /// Print a server's services and methods with their argument and reply
    /// types (from its debug page), like `grpcurl describe`.
    #[command(after_help = exit::TABLE)]
    Describe {
        /// The server: tcp@HOST:PORT (or HOST:PORT), http@HOST:PORT or
        /// tls@HOST:PORT.
        #[arg(long)]
        addr: String,
        /// Only this service, or this one method (Service.Method).
        symbol: Option<String>,
        /// Print the debug page's JSON as it is.
        #[arg(long)]
        json: bool,
        /// Give up after this long.
        #[arg(long, default_value = "10s", value_parser = duration)]
        timeout: Duration,
        #[command(flatten)]
        reach: creds::Reach,
    },
    /// Load-test one method: --concurrency callers for --duration (or
    /// --calls), optionally paced to --rate calls/s in all; a progress bar
    /// on a terminal, then calls, errors by code, calls/s, latency
    /// percentiles and a histogram.
    #[command(after_help = exit::TABLE)]
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    target: Target,
    /// Service.Method, e.g. Arith.Sum.
    #[arg(value_parser = service_method)]
    method: String,
    /// The arguments of every call, as JSON.
    #[arg(default_value = "null")]
    args: String,
    /// Callers, each calling in a loop (one thread each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to call (default 10s unless --calls is given).
    #[arg(long, value_parser = duration, conflicts_with = "calls")]
    duration: Option<Duration>,
    /// How many calls to make in all, instead of --duration.
    #[arg(long)]
    calls: Option<u64>,
    /// Calls per second in all (default: as fast as the callers go).
    #[arg(long)]
    rate: Option<f64>,
    /// Each call's timeout (it travels to the server as its deadline).
    #[arg(long, default_value = "10s", value_parser = duration)]
    timeout: Duration,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    reach: creds::Reach,
}

#[derive(Args)]
struct CallArgs {
    #[command(flatten)]
    target: Target,
    /// Service.Method, e.g. Arith.Sum.
    #[arg(value_parser = service_method)]
    method: String,
    /// The arguments as JSON, e.g. '{"Num1":1,"Num2":2}'; `-` reads them
    /// from stdin.
    #[arg(default_value = "null")]
    args: String,
    /// Give up after this long, discovery and every attempt included
    /// (2s, 500ms...).
    #[arg(long, default_value = "10s", value_parser = duration)]
    timeout: Duration,
    /// Metadata sent with the call (PROTOCOL.md section 8), repeatable:
    /// --meta tenant=blue --meta traceparent=00-... The reply's metadata
    /// is logged with -v. Not for secrets (`ps` shows a command line):
    /// `authorization` is refused here.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// The codec: json, msgpack, or gob (only in a build with the `gob`
    /// feature). A Go GeeRPC server without a JSON codec added speaks gob
    /// only.
    #[arg(long, default_value = "json", value_parser = codec_name)]
    codec: geerpc::Codec,
    /// The handshake's magic number, hex (0x...) or decimal: 0x3b3f5c (the
    /// article's GeeRPC, the default) or 0x3bef5c (the original series',
    /// which its Go servers require); geerpc servers accept both.
    #[arg(long, default_value = "0x3b3f5c", value_parser = magic_number)]
    magic: u64,
    /// The path an http@ address gets its CONNECT on (default /_geerpc_):
    /// a Go server of the original GeeRPC series serves /_geeprc_, the
    /// article's /myrpc; geerpc servers answer on all three.
    #[arg(long, value_name = "PATH", value_parser = connect_path)]
    connect_path: Option<String>,
    #[command(flatten)]
    reach: creds::Reach,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Source {
    /// The registry, e.g. http://127.0.0.1:9999/_geerpc_/registry.
    #[arg(long)]
    registry: Option<String>,
    /// etcd endpoints, comma-separated, e.g. 127.0.0.1:2379,127.0.0.1:22379.
    #[arg(long)]
    etcd: Option<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// Find the service's instances through this registry URL.
    #[arg(long)]
    registry: Option<String>,
    /// Find the service's instances in etcd (endpoints, comma-separated).
    #[arg(long)]
    etcd: Option<String>,
    /// Call this server directly: tcp@HOST:PORT (or HOST:PORT),
    /// http@HOST:PORT, unix@PATH.
    #[arg(long)]
    addr: Option<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    geerpc::duration::parse_duration(s)
}

fn service_method(s: &str) -> Result<String, String> {
    match s.split_once('.') {
        Some((svc, m)) if !svc.is_empty() && !m.is_empty() && !m.contains('.') => Ok(s.into()),
        _ => Err("expected Service.Method, e.g. Arith.Sum".into()),
    }
}

/// A codec by its short name (or its content type): the library decides
/// whether this build has it, so that a `gob` build needs nothing here.
fn codec_name(s: &str) -> Result<geerpc::Codec, String> {
    let content_type = match s {
        "json" => "application/json",
        "msgpack" => "application/msgpack",
        "gob" => "application/gob",
        other if other.starts_with("application/") => other,
        _ => return Err("expected json, msgpack or gob".into()),
    };
    geerpc::Codec::from_content_type(content_type).ok_or_else(|| {
        if content_type == "application/gob" {
            "this build has no gob codec (build geerpc with the `gob` feature)".into()
        } else {
            format!("this build has no codec {content_type}; expected json, msgpack or gob")
        }
    })
}

/// A magic number, `0x` hex or decimal, one that GeeRPC servers accept.
fn magic_number(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    let accepted = format!(
        "expected {:#x} (the article's, the default) or {:#x} (the original GeeRPC series')",
        geerpc::MAGIC_NUMBER,
        geerpc::LEGACY_MAGIC_NUMBER
    );
    match parsed {
        Ok(m) if m == geerpc::MAGIC_NUMBER || m == geerpc::LEGACY_MAGIC_NUMBER => Ok(m),
        Ok(m) => Err(format!("{m:#x} is no GeeRPC magic number; {accepted}")),
        Err(_) => Err(format!("not a number (hex needs 0x); {accepted}")),
    }
}

/// A CONNECT path: checked here too (the library checks it at dial), so
/// that a bad one is a usage error, not a failed call.
fn connect_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err("must start with '/', e.g. /_geeprc_ or /myrpc".into());
    }
    if s.len() > 1024 {
        return Err("longer than 1024 bytes".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only printable ASCII without spaces".into());
    }
    Ok(s.to_string())
}

/// Prints `message` with the subcommand's usage line, as clap does for its
/// own errors, and exits with code 2.
fn usage_error(subcommand: &str, message: &str) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    let sub = cmd
        .find_subcommand_mut(subcommand)
        .expect("a known subcommand");
    sub.error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

/// Logs to stderr: at error level, or (for the registry, a server) info;
/// each `-v` one level more. RUST_LOG, when set, decides instead.
fn init_log(verbose: u8, serving: bool) {
    use log::LevelFilter;
    let mut b = env_logger::Builder::new();
    if std::env::var_os("RUST_LOG").is_some() {
        b.parse_env("RUST_LOG");
    } else {
        let level = match verbose + u8::from(serving) {
            0 => LevelFilter::Error,
            1 => LevelFilter::Info,
            2 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        };
        b.filter_level(level);
        if !serving {
            // A one-shot command prints its error itself; the discovery's
            // "serving the last good list until it answers" is about a
            // future this process will not have.
            if level < LevelFilter::Debug {
                b.filter_module("geerpc::registry::discovery", LevelFilter::Error);
                b.filter_module("geerpc::etcd", LevelFilter::Error);
            }
            // The command's own lines read as its messages; the library's
            // keep their level and module.
            b.format(|buf, r| match r.target() {
                "geerpc" | "geerpc::call" => writeln!(buf, "geerpc: {}", r.args()),
                target => writeln!(buf, "{} {target}: {}", r.level(), r.args()),
            });
        }
    }
    b.init();
}

/// The command line, or exit code 2 with what is wrong and a usage line
/// (clap leaves the usage out for a bad value; a user needs it most then).
fn parse() -> Cli {
    let e = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    let text = e.render().to_string();
    if !e.use_stderr() || text.contains("Usage:") {
        e.exit()
    }
    let mut cmd = Cli::command();
    cmd.build();
    let sub = std::env::args()
        .skip(1)
        .find(|a| cmd.find_subcommand(a).is_some());
    let usage = match sub.and_then(|s| cmd.find_subcommand_mut(&s)) {
        Some(sub) => sub.render_usage(),
        None => cmd.render_usage(),
    };
    let (head, tail) = text
        .split_once("\nFor more information")
        .map_or((text.as_str(), ""), |(h, _)| {
            (h, "\nFor more information, try '--help'.\n")
        });
    eprint!("{}\n\n{usage}\n{tail}", head.trim_end());
    std::process::exit(2)
}

fn main() -> ExitCode {
    let cli = parse();
    let serving = matches!(
        cli.command,
        Command::Registry { .. } | Command::Watch { .. }
    );
    init_log(cli.verbose, serving);
    let (name, result) = match cli.command {
        Command::Registry {
            addr,
            ttl,
            legacy_ttl,
            path,
            workers,
            creds,
        } => (
            "registry",
            registry(&addr, (ttl, legacy_ttl), path, workers, &creds),
        ),
        Command::List {
            source,
            service,
            json,
            reach,
        } => ("list", list(source, service, json, &reach)),
        Command::Call(args) => ("call", call::run(args)),
        Command::Watch {
            source,
            service,
            reach,
        } => ("watch", watch::run(source, service, &reach)),
        Command::Describe {
            addr,
            symbol,
            json,
            timeout,
            reach,
        } => (
            "describe",
            describe::run(&addr, symbol.as_deref(), json, timeout, &reach),
        ),
        Command::Bench(args) => ("bench", bench::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.kind == Kind::Usage => usage_error(name, &f.message),
        Err(f) => {
            eprintln!("{f}");
            f.exit_code()
        }
    }
}

type CliResult = Result<(), Failure>;

/// `ttl`: the TTL and the legacy TTL.
fn registry(
    addr: &str,
    ttl: (Duration, Duration),
    path: Option<String>,
    workers: usize,
    creds: &creds::Serve,
) -> CliResult {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Before starting, so that a signal that comes early is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let mut builder = Registry::builder()
        .addr(addr)
        .ttl(ttl.0)
        .legacy_ttl(ttl.1)
        .workers(workers);
    if let Some(p) = path {
        builder = builder.path(p);
    }
    let builder = creds.apply(builder)?;
    let running = builder
        .start()
        .map_err(|e| Failure::new(Kind::Other, e.to_string()))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", running.url())?;
    stdout.flush()?;
    if let Some(sig) = signals.forever().next() {
        let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
        log::info!("{name} received, stopping");
    }
    running.shutdown();
    Ok(())
}

/// A one-shot discovery (no watch) over a registry or etcd, and where it
/// looks, for messages.
struct Found {
    discovery: Box<dyn Discovery>,
    source: String,
    registry: Option<String>,
}

impl Found {
    /// A discovery that lists once (a one-shot command's).
    fn new(
        registry: Option<&str>,
        etcd: Option<&str>,
        service: Option<&str>,
        timeout: Duration,
        reach: &creds::Reach,
    ) -> Result<Found, Failure> {
        Found::make(registry, etcd, service, Some(timeout), reach)
    }

    /// A discovery that follows every change as it happens (the registry's
    /// long poll, etcd's watch), with the library's request timeout.
    fn following(
        registry: Option<&str>,
        etcd: Option<&str>,
        service: Option<&str>,
        reach: &creds::Reach,
    ) -> Result<Found, Failure> {
        Found::make(registry, etcd, service, None, reach)
    }

    /// `one_shot`: the timeout of a discovery that lists once; `None`
    /// for one that follows.
    fn make(
        registry: Option<&str>,
        etcd: Option<&str>,
        service: Option<&str>,
        one_shot: Option<Duration>,
        reach: &creds::Reach,
    ) -> Result<Found, Failure> {
        reach.check_used(registry, etcd)?;
        match (registry, etcd) {
            (Some(url), _) => {
                let mut b = RegistryDiscovery::builder(url).long_poll(one_shot.is_none());
                if let Some(timeout) = one_shot {
                    b = b.timeout(timeout);
                }
                let mut b = reach.apply(b)?;
                if let Some(s) = service {
                    b = b.service(s);
                }
                let d = b.build().map_err(|e| Failure::registry(&e, url))?;
                Ok(Found {
                    discovery: Box::new(d),
                    source: format!("registry {url}"),
                    registry: Some(url.to_string()),
                })
            }
            (None, Some(endpoints)) => {
                let mut b = reach.apply_etcd(EtcdDiscovery::builder(&[endpoints]))?;
                if let Some(s) = service {
                    b = b.service(s);
                }
                let d = b
                    .build()
                    .map_err(|e| Failure::new(Kind::Discovery, e.to_string()))?;
                Ok(Found {
                    discovery: Box::new(d),
                    source: format!("etcd {endpoints}"),
                    registry: None,
                })
            }
            (None, None) => Err(Failure::new(
                Kind::Usage,
                "one of --registry or --etcd is needed",
            )),
        }
    }

    /// The instances listed now.
    fn instances(&self) -> Result<std::sync::Arc<[Instance]>, Failure> {
        match self.discovery.snapshot() {
            Ok(s) => Ok(s.instances),
            Err(e) => Err(match &self.registry {
                Some(url) => Failure::registry(&e, url),
                None => Failure::new(Kind::Discovery, e.to_string()),
            }),
        }
    }
}

/// The registry's own timeout for one request: the command's, at most the
/// library's default.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

fn list(source: Source, service: Option<String>, json: bool, reach: &creds::Reach) -> CliResult {
    let found = Found::new(
        source.registry.as_deref(),
        source.etcd.as_deref(),
        service.as_deref(),
        DISCOVERY_TIMEOUT,
        reach,
    )?;
    let instances = found.instances()?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &*instances)
            .map_err(|e| Failure::new(Kind::Other, e.to_string()))?;
        writeln!(out)?;
    } else {
        for i in instances.iter() {
            writeln!(out, "{}", describe(i))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `tcp@127.0.0.1:7001 weight=1 services=Arith,Echo version=1.2`
fn describe(i: &Instance) -> String {
    let mut line = format!("{} weight={}", i.addr, i.weight);
    if !i.services.is_empty() {
        line.push_str(&format!(" services={}", i.services.join(",")));
    }
    for (k, v) in &i.metadata {
        line.push_str(&format!(" {k}={v}"));
    }
    line
}
