//! Services and helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use geerpc::server::ServerHandle;
use geerpc::xclient::Snapshot;
#[cfg(feature = "registry")]
use geerpc::Registry;
use geerpc::{Client, Discovery, MultiServerDiscovery, Server, Service, XClient};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Args {
    pub num1: i64,
    pub num2: i64,
}

/// The article's service: `Sum` and `Sleep` (sleeps Num1 seconds... here
/// milliseconds, so tests stay fast; `SleepSecs` sleeps seconds).
pub fn arith() -> Service {
    Service::new("Arith")
        .method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2))
        .method("SleepMs", |a: Args| {
            std::thread::sleep(Duration::from_millis(a.num1 as u64));
            Ok::<_, String>(a.num1 + a.num2)
        })
        .method("Fail", |_: Args| Err::<i64, _>("boom: it failed"))
        .method("Panic", |_: Args| -> Result<i64, String> {
            panic!("handler panicked on purpose")
        })
}

pub fn echo() -> Service {
    Service::new("Echo").method("Echo", |s: serde_json::Value| Ok::<_, String>(s))
}

/// A server with Arith and Echo on a free loopback port.
pub fn start_server() -> ServerHandle {
    start_with(Server::new())
}

pub fn start_with(server: Server) -> ServerHandle {
    server.register(arith()).unwrap();
    server.register(echo()).unwrap();
    server.listen("tcp@127.0.0.1:0").unwrap()
}

pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Names of this process's threads that start with `prefix`.
pub fn threads_named(prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(name) = std::fs::read_to_string(e.path().join("comm")) {
                let name = name.trim().to_string();
                if name.starts_with(prefix) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// Threads named `prefix...` once their count satisfies `settled`, or as
/// last seen after 2 s. /proc lags the program by a moment both ways: a new
/// thread names itself only once it first runs, and a joined thread stays
/// listed while the kernel tears it down. Nothing signals either, so look
/// again briefly rather than call it a leak or a missing thread.
pub fn wait_for_threads(prefix: &str, settled: impl Fn(usize) -> bool) -> Vec<String> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let seen = threads_named(prefix);
        if settled(seen.len()) || std::time::Instant::now() > give_up {
            return seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A `Gate.Hold` method that reports on `started` when it begins, then
/// sleeps Num1 milliseconds and returns Num1 + Num2: tests wait for the
/// signal instead of guessing how long a request takes to arrive.
pub fn gate(started: crossbeam_channel::Sender<i64>) -> Service {
    Service::new("Gate").method("Hold", move |a: Args| {
        let _ = started.send(a.num2);
        std::thread::sleep(Duration::from_millis(a.num1 as u64));
        Ok::<_, String>(a.num1 + a.num2)
    })
}

/// A server with Arith, Echo and `gate`, and the receiver of its start
/// signals.
pub fn start_gated(server: Server) -> (ServerHandle, crossbeam_channel::Receiver<i64>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    server.register(gate(tx)).unwrap();
    (start_with(server), rx)
}

/// Waits (on the discovery's change signal, not a sleep) until `cond` holds.
pub fn wait_for(
    d: &dyn Discovery,
    timeout: Duration,
    cond: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let changed = d.watch().expect("registry discovery can watch");
    let deadline = Instant::now() + timeout;
    loop {
        let snap = d.snapshot().expect("snapshot");
        if cond(&snap) {
            return snap;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "condition not met within {timeout:?}; last list: {:?}",
            snap.instances
        );
        let _ = changed.recv_timeout(left);
    }
}

/// An HTTP agent for tests that talk to a registry: a status is an answer,
/// not an error; no pooled connections (one to a registry shut down in
/// this process stays open, and a request sent on it is never answered);
/// every request bounded by `timeout`.
#[cfg(any(feature = "registry", feature = "etcd"))]
pub fn registry_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// The registry's current list version, from a plain `GET`.
#[cfg(any(feature = "registry", feature = "etcd"))]
pub fn registry_version(url: &str) -> u64 {
    let resp = registry_agent(Duration::from_secs(10))
        .get(url)
        .call()
        .unwrap();
    resp.headers()["X-Geerpc-Version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[cfg(feature = "registry")]
pub fn start(ttl: Duration) -> Registry {
    init_log();
    Registry::builder()
        .addr("127.0.0.1:0")
        .ttl(ttl)
        .start()
        .expect("start registry")
}

#[cfg(feature = "registry")]
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

#[cfg(feature = "registry")]
pub fn post(url: &str, header: &str, addr: &str) -> u16 {
    http()
        .post(url)
        .header(header, addr)
        .send_empty()
        .unwrap()
        .status()
        .as_u16()
}

#[cfg(feature = "registry")]
pub fn post_json(url: &str, addr: &str, body: serde_json::Value) -> u16 {
    http()
        .post(url)
        .header("X-rpc-Server", addr)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap()
        .status()
        .as_u16()
}

/// An HTTP server standing in for a registry, and its registry URL: the
/// test answers its requests by hand.
#[cfg(feature = "registry")]
pub fn fake_registry() -> (Arc<tiny_http::Server>, String) {
    let fake = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let url = format!(
        "http://{}/_rpc_/registry",
        fake.server_addr().to_ip().unwrap()
    );
    (fake, url)
}

// Raw connections and gated calls (core RPC tests).

pub fn raw_connect(addr: &geerpc::Address) -> TcpStream {
    let s = TcpStream::connect(addr.target()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends a `Gate.Hold` of `ms` milliseconds and returns once its handler
/// has started.
pub fn hold_started(
    client: &Client,
    started: &crossbeam_channel::Receiver<i64>,
    ms: i64,
) -> geerpc::client::Call<i64> {
    let call = client.go("Gate.Hold", &Args { num1: ms, num2: 0 }).unwrap();
    started
        .recv_timeout(Duration::from_secs(5))
        .expect("the handler starts");
    call
}

// In-process XClient instances (xclient tests).

/// The tests run one at a time: they measure latencies and count threads,
/// which other tests running alongside would disturb on a small machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    init_log();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server whose `Who.Am` answers with its own address, after an
/// adjustable delay, or fails on demand; it counts the calls it gets.
pub struct Node {
    pub handle: ServerHandle,
    pub addr: String,
    pub delay_ms: Arc<AtomicU64>,
    pub fail: Arc<AtomicBool>,
    pub hits: Arc<AtomicUsize>,
}

impl Node {
    pub fn start() -> Node {
        Node::listen("tcp@127.0.0.1:0")
    }

    pub fn listen(addr: &str) -> Node {
        Node::listen_with_grace(addr, Duration::from_millis(200))
    }

    /// A zero grace: shutdown sends no drain notice, as if it crashed.
    pub fn listen_with_grace(addr: &str, grace: Duration) -> Node {
        let server = Server::builder().shutdown_grace(grace).build();
        server.register(arith()).unwrap();
        let handle = server.listen(addr).unwrap();
        let addr = handle.addr().to_string();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, f, h, me) = (delay_ms.clone(), fail.clone(), hits.clone(), addr.clone());
        handle
            .server()
            .register(Service::new("Who").method("Am", move |_: Args| {
                h.fetch_add(1, Ordering::SeqCst);
                let delay = d.load(Ordering::SeqCst);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                if f.load(Ordering::SeqCst) {
                    return Err(format!("instance {me} failed on purpose"));
                }
                Ok(me.clone())
            }))
            .unwrap();
        Node {
            handle,
            addr,
            delay_ms,
            fail,
            hits,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub fn nodes(n: usize) -> Vec<Node> {
    (0..n).map(|_| Node::start()).collect()
}

pub fn discovery(nodes: &[Node]) -> MultiServerDiscovery {
    MultiServerDiscovery::new(nodes.iter().map(|n| n.addr.as_str()))
}

pub const ARGS: Args = Args { num1: 0, num2: 0 };

pub fn who(xc: &XClient) -> geerpc::Result<String> {
    xc.call("Who.Am", &ARGS)
}

/// How many of `calls` calls each address answered.
pub fn spread(xc: &XClient, calls: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..calls {
        *counts.entry(who(xc).unwrap()).or_insert(0) += 1;
    }
    counts
}

/// The path of example `name` (`cargo test` builds the examples next to
/// the test binaries: target/PROFILE/deps/TEST-HASH -> target/PROFILE/
/// examples/NAME). Run alone, `cargo test --test T` uses the last
/// `cargo build --examples`.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built (cargo build --examples --all-features)",
        path.display()
    );
    path
}

/// Example `name` run as `name serve ARGS` (ARGS with `--addr`, port 0 for
/// one of its own choosing): `addr` is what it names on stderr ("...
/// serving on ADDR") before it serves. Killed (and reaped) when dropped.
pub struct Serving {
    child: std::process::Child,
    pub addr: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve_example(name: &str, args: &[&str]) -> Serving {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(example(name))
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut serving = Serving {
        child,
        addr: String::new(),
    };
    // A few lines at most before the address.
    for line in std::io::BufReader::new(stderr).lines().take(20) {
        if let Some(addr) = line.unwrap().split("serving on ").nth(1) {
            serving.addr = addr.trim().to_string();
            return serving;
        }
    }
    panic!("{name} serve named no address");
}
