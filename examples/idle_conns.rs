//! Measures what idle connections cost a server (issue 6): starts
//! `loadgen serve` as a child process, opens N connections that only send
//! the handshake, and prints one JSON line with the server's RSS growth per
//! connection and the latency of a call on a new connection.
//!
//! ```text
//! cargo build --release --examples
//! (ulimit -n 30000; target/release/examples/idle_conns --conns 10000)
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geerpc::Client;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SumArgs {
    num1: i64,
    num2: i64,
}

/// The part of loadgen's `Arith` this client calls: a client needs only
/// the trait (`ArithClient` comes from it), not the server's code.
#[geerpc::service]
trait Arith {
    /// Num1 + Num2.
    fn sum(&self, args: SumArgs) -> Result<i64, String>;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let conns: usize = args
        .iter()
        .position(|a| a == "--conns")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let loadgen = std::env::current_exe()
        .expect("own path")
        .with_file_name("loadgen");
    // The server's log goes to a file, so that a full pipe never stalls it.
    let log_path = std::env::temp_dir().join(format!("idle_conns-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("server log file");
    let mut child = Command::new(&loadgen)
        // Room for the warm-up connection beside the idle ones: the
        // default `max_connections` (10,000) would refuse the last one.
        .args(["serve", "--addr", "127.0.0.1:0", "--max-connections"])
        .arg((conns + 16).to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", loadgen.display()));
    let pid = child.id();
    let mut line = String::new();
    let t0 = Instant::now();
    while !line.contains("tcp@") && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        line.clear();
        let _ = BufReader::new(std::fs::File::open(&log_path).expect("log")).read_line(&mut line);
    }
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("tcp@"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let target = addr.trim_start_matches("tcp@").to_string();

    // One call first, so that what every server has anyway is in the baseline.
    let warm = ArithClient::new(Client::dial(&addr).expect("dial"));
    let _: i64 = warm.sum(&SumArgs { num1: 1, num2: 2 }).expect("call");
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);

    let option = b"{\"MagicNumber\":3882844,\"CodecType\":\"application/json\",\"ConnectTimeout\":0,\"HandleTimeout\":0}\n";
    let mut idle = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut s = TcpStream::connect(&target)
            .unwrap_or_else(|e| panic!("connection {i}: {e} (raise the open-files limit)"));
        s.write_all(option).expect("handshake");
        idle.push(s);
    }
    // Let the server take every connection in.
    let t0 = Instant::now();
    while threads(pid) < conns && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);

    eprintln!(
        "idle_conns: server has {} threads, RSS {} KiB",
        threads(pid),
        rss_kib(pid)
    );
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let c = ArithClient::new(Client::dial(&addr).expect("dial a new connection"));
        let _: i64 = c.sum(&SumArgs { num1: 2, num2: 3 }).expect("call");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let line = serde_json::json!({
        "conns": conns,
        "server_threads": threads(pid),
        "rss_kib_before": before,
        "rss_kib_after": after,
        "rss_kib_per_conn": (after.saturating_sub(before)) as f64 / conns as f64,
        "new_call_ms": times[times.len() / 2],
        "new_call_ms_max": times[times.len() - 1],
    });
    println!("{line}");
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    eprint!(
        "{}",
        log.lines()
            .skip(1)
            .take(5)
            .map(|l| format!("server: {l}\n"))
            .collect::<String>()
    );
    let _ = std::fs::remove_file(&log_path);
}
