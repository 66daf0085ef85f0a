//! The `geerpc` command: run a registry, list what it knows, call a method.
//!
//! ```text
//! geerpc registry [--addr 127.0.0.1:9999] [--ttl 5m] [--workers 4]
//! geerpc list (--registry URL | --etcd ENDPOINTS) [--service NAME] [--json]
//! geerpc call (--registry URL | --etcd ENDPOINTS | --addr tcp@HOST:PORT) Service.Method 'JSON args'
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use geerpc::etcd::EtcdDiscovery;
use geerpc::xclient::Instance;
use geerpc::{Client, Discovery, Registry, RegistryDiscovery, SelectMode, XClient};

#[derive(Parser)]
#[command(name = "geerpc", version, about = "GeeRPC registry and client tool")]
struct Cli {
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
        /// 5m; 0 keeps addresses until they deregister).
        #[arg(long, default_value = "5m", value_parser = duration)]
        ttl: Duration,
        /// Serve on this path instead of /_rpc_/registry and
        /// /_geerpc_/registry.
        #[arg(long)]
        path: Option<String>,
        /// Threads answering requests.
        #[arg(long, default_value_t = Registry::DEFAULT_WORKERS)]
        workers: usize,
    },
    /// List the instances a registry (or etcd) knows, one per line, address
    /// first.
    List {
        #[command(flatten)]
        source: Source,
        /// Only the instances serving this service.
        #[arg(long)]
        service: Option<String>,
        /// Print the instances as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Call Service.Method with JSON arguments and print the JSON reply.
    Call(CallArgs),
}

#[derive(Args)]
struct CallArgs {
    #[command(flatten)]
    target: Target,
    /// Service.Method, e.g. Arith.Sum.
    method: String,
    /// The arguments as JSON, e.g. '{"Num1":1,"Num2":2}'.
    #[arg(default_value = "null")]
    args: String,
    /// Give up after this long (2s, 500ms...).
    #[arg(long, default_value = "10s", value_parser = duration)]
    timeout: Duration,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Source {
    /// The registry, e.g. http://127.0.0.1:9999/_rpc_/registry.
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
    /// Call this server directly: tcp@HOST:PORT, http@HOST:PORT, unix@PATH.
    #[arg(long)]
    addr: Option<String>,
}

/// A one-shot discovery (no watch) over a registry or etcd, and where it
/// looks, for messages.
fn discovery(
    registry: Option<String>,
    etcd: Option<String>,
    service: Option<&str>,
) -> Result<(Box<dyn Discovery>, String), Box<dyn std::error::Error>> {
    match (registry, etcd) {
        (Some(url), _) => {
            let mut b = RegistryDiscovery::builder(&url).long_poll(false);
            if let Some(s) = service {
                b = b.service(s);
            }
            Ok((Box::new(b.build()?), format!("registry {url}")))
        }
        (None, Some(endpoints)) => {
            let d = EtcdDiscovery::new(&[endpoints.as_str()], service)?;
            Ok((Box::new(d), format!("etcd {endpoints}")))
        }
        (None, None) => Err("one of --registry or --etcd is needed".into()),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    geerpc::duration::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Registry { .. } => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_log)).init();
    let result = match cli.command {
        Command::Registry {
            addr,
            ttl,
            path,
            workers,
        } => registry(&addr, ttl, path, workers),
        Command::List {
            source,
            service,
            json,
        } => list(source, service, json),
        Command::Call(args) => call(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geerpc: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn registry(addr: &str, ttl: Duration, path: Option<String>, workers: usize) -> CliResult {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Before starting, so that a signal that comes early is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let mut builder = Registry::builder().addr(addr).ttl(ttl).workers(workers);
    if let Some(p) = path {
        builder = builder.path(p);
    }
    let running = builder.start()?;
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

fn list(source: Source, service: Option<String>, json: bool) -> CliResult {
    let (d, _) = discovery(source.registry, source.etcd, service.as_deref())?;
    let snap = d.snapshot()?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &*snap.instances)?;
        writeln!(out)?;
    } else {
        for i in snap.instances.iter() {
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

fn call(a: CallArgs) -> CliResult {
    let args: serde_json::Value = serde_json::from_str(&a.args)
        .map_err(|e| format!("arguments are not JSON ({e}): {}", a.args))?;
    let Some((service, _)) = a.method.rsplit_once('.') else {
        return Err(format!("expected Service.Method, got {:?}", a.method).into());
    };
    let reply: serde_json::Value = match a.target.addr {
        Some(addr) => {
            let client = Client::builder()
                .connect_timeout(Some(a.timeout))
                .dial(&addr)?;
            client.call_timeout(&a.method, &args, a.timeout)?
        }
        None => {
            let (d, source) = discovery(a.target.registry, a.target.etcd, Some(service))?;
            // An empty list is the source's answer, not a call error.
            if d.snapshot()?.instances.is_empty() {
                return Err(format!("{source} lists no instance of {service}").into());
            }
            let xc = XClient::new(d, SelectMode::Random);
            xc.call_timeout(&a.method, &args, a.timeout)?
        }
    };
    println!("{}", serde_json::to_string(&reply)?);
    Ok(())
}
