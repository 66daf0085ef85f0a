//! The article's day 7, made real: a registry, two servers that keep
//! themselves registered with heartbeats, and a client that finds them
//! through the registry, with a typed service (`#[geerpc::service]`).
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! It makes five concurrent `Foo.Sum` calls (random selection), five
//! broadcasts of `Foo.Sum`, and five broadcasts of `Foo.Sleep` for 0 to 4
//! seconds under a 2 s timeout, of which the longer ones fail with the
//! timeout error. Everything listens on free loopback ports.

use std::io::Write;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use geerpc::registration::RegisterOptions;
use geerpc::server::ServerHandle;
use geerpc::{
    CallOptions, Discovery, Heartbeat, Registry, RegistryDiscovery, SelectMode, Server, XClient,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

/// The article's `Foo`, typed: the macro generates `FooClient` (over the
/// XClient below) and `FooService` (registered on each server). On the
/// wire these are `Foo.Sum` and `Foo.Sleep`, as in Go.
#[geerpc::service]
trait Foo {
    /// Adds the two numbers.
    fn sum(&self, args: Args) -> Result<i64, String>;
    /// Waits `Num1` seconds, then adds.
    fn sleep(&self, args: Args) -> Result<i64, String>;
}

/// The servers' implementation. Sleep's wait ends early when `stop`
/// closes, so that the demo's servers shut down at once instead of
/// waiting for sleepers nobody listens to any more.
struct Served {
    stop: Receiver<()>,
}

impl Foo for Served {
    fn sum(&self, a: Args) -> Result<i64, String> {
        Ok(a.num1 + a.num2)
    }

    fn sleep(&self, a: Args) -> Result<i64, String> {
        let _ = self
            .stop
            .recv_timeout(Duration::from_secs(a.num1.max(0) as u64));
        Ok(a.num1 + a.num2)
    }
}

fn start_server(
    registry_url: &str,
    stop: &Receiver<()>,
) -> geerpc::Result<(ServerHandle, Heartbeat)> {
    let server = Server::new();
    server.register(FooService::new(Served { stop: stop.clone() }))?;
    let running = server.listen("tcp@127.0.0.1:0")?;
    // Registers at once, then every TTL - 1 min; shutdown (or dropping the
    // heartbeat) deregisters.
    let heartbeat = Heartbeat::for_server(&running, registry_url, RegisterOptions::new())?;
    Ok((running, heartbeat))
}

/// Runs the whole scenario, writing what happens to `out`.
pub fn run(out: &mut (dyn Write + Send)) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let registry = Registry::builder().addr("127.0.0.1:0").start()?;
    let url = registry.url().to_string();
    writeln!(out, "registry listening on {url}")?;

    // Closed at the end: ends any Sleep still running.
    let (stop_tx, stop_rx): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(0);
    let servers = [start_server(&url, &stop_rx)?, start_server(&url, &stop_rx)?];
    for (s, _) in &servers {
        writeln!(
            out,
            "server {} started, heartbeating to the registry",
            s.addr()
        )?;
    }

    let discovery = RegistryDiscovery::builder(&url).service("Foo").build()?;
    // No fixed sleep: wait until the registry lists both servers.
    let changed = discovery.watch().expect("registry discovery watches");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = discovery.snapshot()?;
        if snap.instances.len() == servers.len() {
            let addrs: Vec<&str> = snap.instances.iter().map(|i| i.addr.as_str()).collect();
            writeln!(
                out,
                "discovery sees {} instances: {}",
                addrs.len(),
                addrs.join(", ")
            )?;
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the servers did not register within 10s".into());
        }
        let _ = changed.recv_timeout(left);
    }

    let xc = FooClient::new(XClient::new(discovery, SelectMode::Random));
    let out = std::sync::Mutex::new(out);
    let say = |line: String| {
        let mut o = out.lock().unwrap();
        let _ = writeln!(o, "{line}");
    };

    // The article's five concurrent Sum calls, each through the XClient.
    five_at_once(&say, |i, args| match xc.go_sum(args) {
        Ok(call) => {
            let addr = call.addr().to_string();
            match call.wait() {
                Ok(r) => format!("call Foo.Sum {i} + {} = {r} (answered by {addr})", i * i),
                Err(e) => format!("call Foo.Sum {i} + {} error: {e}", i * i),
            }
        }
        Err(e) => format!("call Foo.Sum {i} + {} error: {e}", i * i),
    });

    // Five broadcasts of Sum: every instance answers each.
    five_at_once(&say, |i, args| match xc.broadcast_sum(args) {
        Ok(r) => format!(
            "broadcast Foo.Sum {i} + {} = {r} (every instance answered)",
            i * i
        ),
        Err(e) => format!("broadcast Foo.Sum {i} + {} error: {e}", i * i),
    });

    // Five broadcasts of Sleep(i s) under a 2 s timeout: the slow ones fail.
    let timeout = xc.with(CallOptions::new().timeout(Duration::from_secs(2)));
    five_at_once(&say, |i, args| match timeout.broadcast_sleep(args) {
        Ok(r) => format!("broadcast Foo.Sleep {i}s: ok, {i} + {} = {r}", i * i),
        Err(e) => format!("broadcast Foo.Sleep {i}s: error: {e}"),
    });

    drop(xc);
    drop(stop_tx);
    for (s, _) in &servers {
        s.shutdown();
    }
    let left = registry.instances().len();
    registry.shutdown();
    say(format!(
        "servers deregistered ({left} left), registry stopped; done in {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[allow(dead_code)] // tests/demo.rs includes this file and calls `run`.
fn main() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let mut stdout = std::io::stdout();
    if let Err(e) = run(&mut stdout) {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

/// Runs `step` for i = 0..5 at once, with the article's arguments
/// (i, i * i), and says each line it returns.
fn five_at_once(say: &(dyn Fn(String) + Sync), step: impl Fn(i64, &Args) -> String + Sync) {
    std::thread::scope(|s| {
        for i in 0..5i64 {
            let step = &step;
            s.spawn(move || {
                let args = Args {
                    num1: i,
                    num2: i * i,
                };
                say(step(i, &args));
            });
        }
    });
}
