//! A small server to try the `geerpc` command against (the README's
//! walkthrough): the article's `Arith` service, GeeRPC style.
//!
//! ```text
//! cargo run --example arith_server -- [--port PORT] [--host HOST] [--registry URL]
//! ```
//!
//! Listens on HOST:PORT (default 127.0.0.1, port 0: a free one) and prints
//! its address (`tcp@127.0.0.1:PORT`) on stdout. With `--registry URL` it
//! registers there and heartbeats until it stops. Ctrl-C (or SIGTERM)
//! stops it cleanly: it deregisters, answers the calls it already has,
//! and exits. Uses only geerpc's public API; the service is a typed one
//! (`#[geerpc::service]`), whose wire names are Go's.
//!
//! Methods, arguments `{"Num1": i64, "Num2": i64}`:
//! - `Arith.Sum`: Num1 + Num2
//! - `Arith.Mul`: Num1 * Num2
//! - `Arith.Div`: Num1 / Num2, an error when Num2 is 0

use std::io::Write;
use std::process::exit;

use geerpc::registration::RegisterOptions;
use geerpc::{Heartbeat, Server};
use serde::{Deserialize, Serialize};

/// The article's arguments: Go field names, so Go peers can call it too.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

const USAGE: &str =
    "usage: arith_server [--port PORT (default 0: any free port)] [--host HOST (default 127.0.0.1)] [--registry URL]";

struct Options {
    host: String,
    port: u16,
    registry: Option<String>,
}

/// Ends the program on a command line it cannot run.
fn refuse(why: &str) -> ! {
    eprintln!("arith_server: {why}\n{USAGE}");
    exit(2)
}

fn options() -> Options {
    let mut o = Options {
        host: "127.0.0.1".into(),
        port: 0,
        registry: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            exit(0)
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if !matches!(name.as_str(), "--port" | "--host" | "--registry") {
            refuse(&format!("unknown argument {arg:?}"))
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            refuse(&format!("{name} needs a value"))
        };
        match name.as_str() {
            "--port" => {
                o.port = value
                    .parse()
                    .unwrap_or_else(|_| refuse(&format!("--port {value}: not a port number")))
            }
            "--host" => o.host = value,
            _ => o.registry = Some(value),
        }
    }
    o
}

/// The article's service. `#[geerpc::service]` makes `ArithService` (the
/// server adapter registered below) and `ArithClient` (unused here: the
/// `geerpc` command calls it by name, as a Go client would).
#[geerpc::service]
trait Arith {
    /// Num1 + Num2.
    fn sum(&self, args: Args) -> Result<i64, String>;
    /// Num1 * Num2.
    fn mul(&self, args: Args) -> Result<i64, String>;
    /// Num1 / Num2, an error when Num2 is 0.
    fn div(&self, args: Args) -> Result<i64, String>;
}

struct Calc;

impl Arith for Calc {
    fn sum(&self, a: Args) -> Result<i64, String> {
        a.num1
            .checked_add(a.num2)
            .ok_or_else(|| "Sum overflows i64".to_string())
    }

    fn mul(&self, a: Args) -> Result<i64, String> {
        a.num1
            .checked_mul(a.num2)
            .ok_or_else(|| "Mul overflows i64".to_string())
    }

    fn div(&self, a: Args) -> Result<i64, String> {
        if a.num2 == 0 {
            return Err("divide by zero".to_string());
        }
        a.num1
            .checked_div(a.num2)
            .ok_or_else(|| "Div overflows i64".to_string())
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let o = options();
    // Before listening, so that a Ctrl-C that comes early is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .expect("install signal handlers");
    let server = Server::new();
    server
        .register(ArithService::new(Calc))
        .expect("register Arith");
    let running = server
        .listen(format!("tcp@{}:{}", o.host, o.port))
        .unwrap_or_else(|e| {
            eprintln!("arith_server: {e}");
            exit(1)
        });
    // Kept until the end: dropping it deregisters (so does the shutdown).
    let _heartbeat = o.registry.as_deref().map(|url| {
        Heartbeat::for_server(&running, url, RegisterOptions::new()).unwrap_or_else(|e| {
            eprintln!("arith_server: {e}");
            exit(1)
        })
    });
    println!("{}", running.addr());
    std::io::stdout().flush().ok();
    match &o.registry {
        Some(url) => log::info!("serving Arith on {}, registered with {url}", running.addr()),
        None => log::info!("serving Arith on {}", running.addr()),
    }
    if let Some(sig) = signals.forever().next() {
        let name = if sig == signal_hook::consts::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        log::info!("{name} received, stopping");
    }
    // Deregisters first, then answers what it has and joins its threads.
    running.shutdown();
}
