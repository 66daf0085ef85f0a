//! The etcd fixture of the etcd tests: real etcd 3.4 processes (Debian's
//! `etcd-server` package) on free loopback ports with throw-away data
//! directories, and helpers to wait on a discovery.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use geerpc::etcd::EtcdDiscovery;
use geerpc::registration::RegisterOptions;
use geerpc::xclient::Snapshot;
use geerpc::Discovery;

// ---------------------------------------------------------------- fixture

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH.
pub fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = match std::env::var_os("ETCD_BIN") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file()),
    };
    if let Some(bin) = found {
        return bin;
    }
    panic!(
        "etcd is not installed: the etcd tests need the etcd 3.4 server binary. \
         Install it with `apt-get install etcd-server` (.ci/run does this), \
         or point ETCD_BIN at an etcd binary."
    );
}

/// A port that was free a moment ago (etcd binds it next; a start that
/// loses the race is retried with other ports).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

pub fn unique_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "geerpc-etcd-test-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub child: Option<Child>,
    /// Bumped on each fresh restart: a new, empty data directory.
    pub generation: u32,
}

/// One etcd cluster of local processes; Drop kills them and removes their
/// data.
pub struct Etcd {
    pub dir: PathBuf,
    pub token: String,
    pub members: Vec<Member>,
    /// `http` or `https` (client URLs; peers always talk plain HTTP).
    pub scheme: &'static str,
    /// More flags for every member (TLS files, auth).
    pub extra: Vec<String>,
    /// The agent of the health checks (one that can pass the TLS asked).
    pub agent: ureq::Agent,
}

impl Etcd {
    pub fn single() -> Etcd {
        Etcd::cluster(1)
    }

    pub fn cluster(n: usize) -> Etcd {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(1)))
            .build()
            .into();
        Etcd::start(n, "http", Vec::new(), agent)
    }

    /// `n` members with client URLs of `scheme`, started with `extra`
    /// flags, checked healthy through `agent`.
    pub fn start(n: usize, scheme: &'static str, extra: Vec<String>, agent: ureq::Agent) -> Etcd {
        let bin = etcd_binary();
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = unique_dir();
            let token = dir.file_name().unwrap().to_string_lossy().into_owned();
            let members = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                    generation: 0,
                })
                .collect();
            let mut etcd = Etcd {
                dir,
                token,
                members,
                scheme,
                extra: extra.clone(),
                agent: agent.clone(),
            };
            for i in 0..n {
                etcd.spawn(&bin, i);
            }
            if (0..n).all(|i| etcd.wait_healthy(i, Duration::from_secs(30))) {
                return etcd;
            }
            // Lost a port race, most likely: drop these (killing them) and
            // try other ports.
            last_log = etcd.logs();
        }
        panic!("etcd did not start after 5 attempts; last logs:\n{last_log}");
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        let m = &self.members[i];
        self.dir.join(format!("{}-{}.etcd", m.name, m.generation))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.members[i].name))
    }

    pub fn spawn(&mut self, bin: &Path, i: usize) {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let client = format!("{}://127.0.0.1:{}", self.scheme, m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open etcd log");
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = cmd.spawn().expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until member `i` says it is healthy (it has a leader); false if
    /// it exited or `limit` passed.
    pub fn wait_healthy(&mut self, i: usize, limit: Duration) -> bool {
        let agent = self.agent.clone();
        let url = format!("{}/health", self.endpoint(i));
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.members[i].child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if let Ok(mut r) = agent.get(&url).call() {
                if r.body_mut()
                    .read_to_string()
                    .unwrap_or_default()
                    .contains("true")
                {
                    return true;
                }
            }
            // Polling: etcd offers nothing to block on until it is up.
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme, self.members[i].client_port
        )
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops member `i` with SIGSTOP: its sockets stay open and its kernel
    /// still accepts connections, but etcd says nothing more, as a member
    /// that lost power or was cut off without a reset.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// Lets a paused member run again (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&mut self, i: usize, sig: libc::c_int) {
        let pid = self.members[i].child.as_ref().expect("member runs").id();
        // SAFETY: kill(2) on the pid of a child we started and have not
        // reaped; no memory is involved.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Kills member `i` and starts it again on the same ports with an empty
    /// data directory: a single-member cluster that lost everything.
    pub fn restart_fresh(&mut self, i: usize) {
        self.kill(i);
        self.start_fresh(i);
    }

    /// Starts killed member `i` again on its ports with an empty data
    /// directory, and waits until it is healthy.
    pub fn start_fresh(&mut self, i: usize) {
        self.members[i].generation += 1;
        self.spawn(&etcd_binary(), i);
        assert!(
            self.wait_healthy(i, Duration::from_secs(30)),
            "etcd did not restart; logs:\n{}",
            self.logs()
        );
    }

    /// Index of the member that is the raft leader now.
    pub fn leader(&self) -> usize {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let url = format!("{}/v3/maintenance/status", self.endpoint(i));
            let Ok(mut r) = agent.post(&url).send("{}") else {
                continue;
            };
            let text = r.body_mut().read_to_string().unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["leader"].is_string() && v["leader"] == v["header"]["member_id"] {
                return i;
            }
        }
        panic!("no etcd member says it is the leader");
    }

    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A raw gateway call, for what the tests do behind geerpc's back.
    pub fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.post_as(None, path, body)
    }

    /// [`post`](Self::post) with an auth token as `Authorization`.
    pub fn post_as(
        &self,
        token: Option<&str>,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let url = format!("{}{path}", self.endpoint(0));
        let mut rq = self.agent.post(&url);
        if let Some(t) = token {
            rq = rq.header("Authorization", t);
        }
        let text = rq
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST {url}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- helpers

pub fn addrs(s: &Snapshot) -> Vec<String> {
    s.instances.iter().map(|i| i.addr.clone()).collect()
}

/// Waits (on the discovery's watch signal) until `cond` holds for its
/// snapshot; returns how long it took, or None at `limit`.
pub fn wait_for(
    d: &EtcdDiscovery,
    rx: &crossbeam_channel::Receiver<()>,
    limit: Duration,
    cond: impl Fn(&Snapshot) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond(&d.snapshot().unwrap()) {
            return Some(start.elapsed());
        }
        let left = limit.checked_sub(start.elapsed())?;
        let _ = rx.recv_timeout(left);
    }
}

pub fn opts(ttl_secs: u64) -> RegisterOptions {
    RegisterOptions::new().ttl(Duration::from_secs(ttl_secs))
}
