//! Helpers for `tests/cli.rs`: running the `geerpc` binary, a registry
//! child process that dies with its test, and peers that misbehave on
//! purpose (a dead address, a server that refuses every call).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use geerpc::registration::RegisterOptions;
use geerpc::Heartbeat;

pub const BIN: &str = env!("CARGO_BIN_EXE_geerpc");

/// A `geerpc registry` child process, killed when dropped unless a test
/// stopped it (a failing test must not leave it running).
pub struct RegistryProc(Option<Child>);

impl Drop for RegistryProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `geerpc registry` on a free port; returns the child and its URL (the
/// first line it prints).
pub fn start_registry(extra: &[&str]) -> (RegistryProc, String) {
    let mut child = Command::new(BIN)
        .args(["registry", "--addr", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn geerpc registry");
    let out = child.stdout.take().unwrap();
    let child = RegistryProc(Some(child));
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let url = line.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
        "printed {line:?}"
    );
    (child, url)
}

pub fn geerpc(args: &[&str]) -> Output {
    // RUST_LOG would decide the logging instead of -v.
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run geerpc")
}

/// `geerpc` with `input` on its stdin.
pub fn geerpc_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn geerpc");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Asserts the exit code, showing the output when it is another.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// A loopback address where nothing listens (a port just freed).
pub fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp@{}", l.local_addr().unwrap())
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends `signal` and waits (on a thread, with a deadline) for the exit.
pub fn terminate(mut proc: RegistryProc, signal: &str) -> (std::process::ExitStatus, String) {
    let mut child = proc.0.take().expect("not stopped yet");
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx.send((child.wait().unwrap(), s));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("registry exits within 10s of the signal")
}

/// Runs `geerpc list` until `cond` holds on its output (registration is
/// asynchronous; the heartbeat's first POST goes out at once).
pub fn list_until(args: &[&str], cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = geerpc(args);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        if cond(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "never got the expected list; last:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server that speaks geerpc's JSON framing but refuses every call
/// unprocessed (`unavailable`, as a draining server does), on a thread that
/// lives as long as the test process.
pub fn refusing_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp@{}", l.local_addr().unwrap());
    std::thread::Builder::new()
        .name("refusing-server".into())
        .spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let mut w = conn.try_clone().unwrap();
                let mut lines = BufReader::new(conn).lines();
                let _option = lines.next();
                // Header and body, one JSON line each.
                while let (Some(Ok(header)), Some(Ok(_body))) = (lines.next(), lines.next()) {
                    let h: serde_json::Value = serde_json::from_str(&header).unwrap();
                    let reply = serde_json::json!({
                        "ServiceMethod": h["ServiceMethod"],
                        "Seq": h["Seq"],
                        "Error": "rpc server: shutting down",
                        "Code": "unavailable",
                    });
                    let _ = writeln!(w, "{reply}\nnull");
                }
            }
        })
        .unwrap();
    addr
}

/// Registers `addr` as serving Arith with the registry at `url` (nothing
/// need listen there), until the returned heartbeat is dropped.
pub fn register(url: &str, addr: &str) -> Heartbeat {
    Heartbeat::start(url, addr, RegisterOptions::new().services(["Arith"])).unwrap()
}

pub const SUM: &str = r#"{"Num1":20,"Num2":22}"#;
