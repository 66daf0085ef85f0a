//! The Go peer of tests/go_interop.rs: builds tests/go (standard library
//! only) once per test binary into target/, and runs it as a server (kept
//! for the whole binary, one per Go flavour) or as a client (one process
//! per batch of calls, its JSON lines parsed here).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a Go client run may take before it is killed and the test
/// fails (its calls have their own, much shorter, timeouts).
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// The built Go program, or None when `go` is not installed (the reason is
/// printed once). A failed build panics: that is a bug, not a skip.
pub fn go_bin() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(build).as_deref()
}

fn build() -> Option<PathBuf> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-interop");
    let bin = tmp.join("gopeer");
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go");
    // Everything Go writes stays under target/; no module download (the
    // program needs only the standard library), no cgo (no C compiler).
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", tmp.join("go-cache"))
        .env("GOPATH", tmp.join("go-path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "0")
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED: the Go interop tests need `go` on PATH (Debian: apt-get install golang-go; .ci/run installs it)"
            );
            None
        }
        Err(e) => panic!("could not run `go build` in {}: {e}", src.display()),
        Ok(out) if !out.status.success() => panic!(
            "`go build` of {} failed ({}):\n{}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => Some(bin),
    }
}

/// A Go server process: raw TCP on `tcp`, HTTP CONNECT on `http`. It
/// exits when its stdin closes, so it goes away with the test binary even
/// from a `static`; dropping it kills it at once.
pub struct GoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `HOST:PORT` of the raw TCP listener.
    pub tcp: String,
    /// `HOST:PORT` of the HTTP listener (CONNECT on the server's path).
    pub http: String,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl GoServer {
    /// Starts `gopeer FLAGS server` and reads its addresses.
    pub fn start(bin: &Path, flags: &[&str]) -> GoServer {
        let mut child = Command::new(bin)
            .args(flags)
            .arg("server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the Go server");
        let stdin = child.stdin.take();
        let mut first = String::new();
        // The first line comes once both listeners are bound; should the
        // program die first, read_line sees EOF and the test fails.
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .expect("read the Go server's addresses");
        let addrs: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("Go server printed {first:?}, not its addresses: {e}"));
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::Builder::new()
            .name("go-server-log".into())
            .spawn(move || {
                // Ends with the process (its stderr closes).
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.0.lock().unwrap().push(line);
                    sink.1.notify_all();
                }
            })
            .unwrap();
        GoServer {
            child,
            stdin,
            tcp: addrs["tcp"].as_str().expect("tcp address").to_string(),
            http: addrs["http"].as_str().expect("http address").to_string(),
            log,
        }
    }

    /// What the server logged so far (stderr lines).
    pub fn log(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    /// Whether the server logs a line containing `text` within `limit`
    /// (woken by each new line, not polling).
    pub fn logs_within(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut lines = self.log.0.lock().unwrap();
        loop {
            if lines.iter().any(|l| l.contains(text)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lines = self.log.1.wait_timeout(lines, left).unwrap().0;
        }
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `gopeer FLAGS client CALL...` and returns one JSON value per line
/// it printed (a call's result, or `{"dial_error": ..}`).
pub fn go_client(bin: &Path, flags: &[&str], calls: &[Value]) -> Vec<Value> {
    let mut child = Command::new(bin)
        .args(flags)
        .arg("client")
        .args(calls.iter().map(Value::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Go client");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("go-client-out".into())
        .spawn(move || {
            // Both pipes reach EOF when the process ends (or is killed).
            let mut out = String::new();
            let mut err = String::new();
            let _ = stdout.read_to_string(&mut out);
            let _ = stderr.read_to_string(&mut err);
            let _ = tx.send((out, err));
        })
        .unwrap();
    let (out, err) = match rx.recv_timeout(CLIENT_LIMIT) {
        Ok(got) => got,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Go client {flags:?} still running after {CLIENT_LIMIT:?}");
        }
    };
    let status = child.wait().expect("wait for the Go client");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("Go client printed {l:?}: {e}; stderr: {err}"))
        })
        .collect();
    assert!(
        status.success() || lines.iter().any(|l| l.get("dial_error").is_some()),
        "Go client {flags:?} failed ({status}); stdout: {out}; stderr: {err}"
    );
    lines
}

/// A CALL argument for the Go client.
pub fn call(method: &str, args: Value) -> Value {
    serde_json::json!({ "method": method, "args": args })
}

/// A CALL with the client's own timeout (Go's context.WithTimeout).
pub fn call_within(method: &str, args: Value, timeout: Duration) -> Value {
    serde_json::json!({ "method": method, "args": args, "timeout_ms": timeout.as_millis() as u64 })
}
