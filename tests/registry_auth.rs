//! The registry's credentials (PROTOCOL.md section 7, issue 19): a write
//! token that `POST` and `DELETE` must carry and an optional read token for
//! every `GET`; refused requests (401) change nothing; `Heartbeat` and
//! `RegistryDiscovery` carry the token; no error text ever contains a
//! token. The HTTPS registry is tested in tests/registry_tls.rs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use geerpc::registration::RegisterOptions;
use geerpc::registry::HttpRegistrar;
use geerpc::{Discovery, Registry, RegistryDiscovery, Token};

const WRITE: &str = "w-9f2c1e7a-write-secret";
const READ: &str = "r-4b8d0c3f-read-secret";
const WRONG: &str = "x-0000-not-the-token";

fn token(s: &str) -> Token {
    Token::new(s).unwrap()
}

fn start_with(write: Option<&str>, read: Option<&str>, ttl: Duration) -> Registry {
    init_log();
    let mut b = Registry::builder().addr("127.0.0.1:0").ttl(ttl);
    if let Some(w) = write {
        b = b.write_token(token(w));
    }
    if let Some(r) = read {
        b = b.read_token(token(r));
    }
    b.start().expect("start registry")
}

/// One request: its status, `WWW-Authenticate` and body.
fn send(
    method: &str,
    url: &str,
    auth: Option<&str>,
    addr: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut rq = ureq::http::Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        rq = rq.header("Authorization", a);
    }
    if let Some(a) = addr {
        rq = rq.header("X-rpc-Server", a);
    }
    let rq = rq.body(()).unwrap();
    let mut resp = http().run(rq).unwrap();
    let challenge = resp
        .headers()
        .get("WWW-Authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), challenge, body)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn listed(reg: &Registry) -> Vec<String> {
    reg.instances().into_iter().map(|i| i.addr).collect()
}

/// A refusal: 401, a Bearer challenge, and a body without the token sent.
fn assert_refused((status, challenge, body): (u16, Option<String>, String), sent: &str) {
    assert_eq!(status, 401, "{body}");
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{challenge:?}"
    );
    assert!(body.starts_with("401"), "{body}");
    assert!(sent.is_empty() || !body.contains(sent), "{body}");
    for secret in [WRITE, READ, WRONG] {
        assert!(!body.contains(secret), "{body}");
    }
}

#[test]
fn writes_without_the_write_token_get_401_and_change_nothing() {
    let reg = start_with(Some(WRITE), None, Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    let good = bearer(WRITE);
    assert_eq!(
        send("POST", &url, Some(&good), Some("tcp@127.0.0.1:7001")).0,
        200
    );
    let version = registry_version(&url);
    for auth in [
        None,
        Some(bearer(WRONG)),
        Some(format!("Basic {WRITE}")),
        Some(WRITE.to_string()),
        Some(bearer(&WRITE[..WRITE.len() - 1])),
        Some(format!("{good}x")),
    ] {
        let sent = auth.clone().unwrap_or_default();
        // A new address, a renewal with new metadata, and a deregistration.
        assert_refused(
            send("POST", &url, auth.as_deref(), Some("tcp@127.0.0.1:7002")),
            &sent,
        );
        assert_refused(
            send("DELETE", &url, auth.as_deref(), Some("tcp@127.0.0.1:7001")),
            &sent,
        );
    }
    assert_eq!(listed(&reg), ["tcp@127.0.0.1:7001"]);
    assert_eq!(registry_version(&url), version, "no change at all");
    // GET stays open without a read token.
    let (status, _, _) = send("GET", &url, None, None);
    assert_eq!(status, 200);
    // The write token deregisters; the scheme's case does not matter.
    let lower = format!("bearer {WRITE}");
    assert_eq!(
        send("DELETE", &url, Some(&lower), Some("tcp@127.0.0.1:7001")).0,
        200
    );
    assert!(listed(&reg).is_empty());
}

#[test]
fn a_missing_and_a_wrong_token_are_told_apart() {
    let reg = start_with(Some(WRITE), None, Registry::DEFAULT_TTL);
    let url = reg.url();
    let (_, _, missing) = send("POST", url, None, Some("tcp@127.0.0.1:7001"));
    assert!(
        missing.contains("needs the registry's write token"),
        "{missing}"
    );
    let (_, _, wrong) = send(
        "POST",
        url,
        Some(&bearer(WRONG)),
        Some("tcp@127.0.0.1:7001"),
    );
    assert!(wrong.contains("wrong bearer token"), "{wrong}");
}

#[test]
fn a_registry_without_tokens_is_open_as_before() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url();
    // A token sent to an open registry is simply not looked at.
    assert_eq!(send("POST", url, None, Some("tcp@127.0.0.1:7001")).0, 200);
    assert_eq!(
        send(
            "POST",
            url,
            Some(&bearer(WRONG)),
            Some("tcp@127.0.0.1:7002")
        )
        .0,
        200
    );
    assert_eq!(send("DELETE", url, None, Some("tcp@127.0.0.1:7002")).0, 200);
    assert_eq!(listed(&reg), ["tcp@127.0.0.1:7001"]);
}

#[test]
fn reads_need_the_read_or_write_token_once_a_read_token_is_set() {
    let reg = start_with(Some(WRITE), Some(READ), Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    assert_eq!(
        send(
            "POST",
            &url,
            Some(&bearer(WRITE)),
            Some("tcp@127.0.0.1:7001")
        )
        .0,
        200
    );
    // The plain list, the JSON listing, a long poll and a heartbeat hold:
    // every read is refused at once, none is parked.
    let reads = [
        url.clone(),
        format!("{url}?format=json"),
        format!("{url}?watch=0&timeout=30s"),
        format!("{url}?watch=999&timeout=30s"),
        format!("{url}?hold=whatever&timeout=30s"),
    ];
    for read in &reads {
        for auth in [None, Some(bearer(WRONG)), Some(format!("Basic {READ}"))] {
            let t0 = Instant::now();
            let sent = auth.clone().unwrap_or_default();
            assert_refused(send("GET", read, auth.as_deref(), None), &sent);
            assert!(t0.elapsed() < Duration::from_secs(10), "{read}: not parked");
        }
    }
    // The read token reads; the write token reads too.
    for t in [READ, WRITE] {
        let (status, _, _) = send("GET", &format!("{url}?format=json"), Some(&bearer(t)), None);
        assert_eq!(status, 200);
    }
    // The read token does not write.
    assert_refused(
        send(
            "POST",
            &url,
            Some(&bearer(READ)),
            Some("tcp@127.0.0.1:7002"),
        ),
        READ,
    );
    assert_refused(
        send(
            "DELETE",
            &url,
            Some(&bearer(READ)),
            Some("tcp@127.0.0.1:7001"),
        ),
        READ,
    );
    assert_eq!(listed(&reg), ["tcp@127.0.0.1:7001"]);
}

#[test]
fn a_read_token_without_a_write_token_is_refused_at_start() {
    let e = Registry::builder()
        .addr("127.0.0.1:0")
        .read_token(token(READ))
        .start()
        .unwrap_err()
        .to_string();
    assert!(e.contains("write token"), "{e}");
    assert!(!e.contains(READ), "{e}");
}

/// Waits (bounded) until `cond` holds, checking every 10 ms.
fn eventually(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn heartbeats_with_the_token_stay_listed_and_discovery_with_the_read_token_finds_them() {
    // A 1 s TTL, renewed every 100 ms: listed after 15 beats means the
    // renewals (not just the first POST) got through.
    let reg = start_with(Some(WRITE), Some(READ), Duration::from_secs(1));
    let url = reg.url().to_string();
    let hb = HttpRegistrar::new(&url)
        .unwrap()
        .token(token(WRITE))
        .register(
            "tcp@127.0.0.1:7101",
            RegisterOptions::new()
                .services(["Arith"])
                .renew_every(Duration::from_millis(100)),
        )
        .unwrap();
    let d = RegistryDiscovery::builder(&url)
        .token(token(READ))
        .poll_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    wait_for(&d, Duration::from_secs(30), |s| {
        s.instances.iter().any(|i| i.addr == "tcp@127.0.0.1:7101")
    });
    eventually("15 beats", Duration::from_secs(60), || hb.beats() >= 15);
    assert!(hb.is_registered());
    assert_eq!(listed(&reg), ["tcp@127.0.0.1:7101"]);
    // The DELETE carries the token too.
    hb.deregister().unwrap();
    assert!(listed(&reg).is_empty());
    wait_for(&d, Duration::from_secs(30), |s| s.instances.is_empty());
}

#[test]
fn clients_without_the_right_token_get_a_clear_error_that_never_holds_a_token() {
    let reg = start_with(Some(WRITE), Some(READ), Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    assert_eq!(
        send(
            "POST",
            &url,
            Some(&bearer(WRITE)),
            Some("tcp@127.0.0.1:7001")
        )
        .0,
        200
    );
    // Discovery: no token, then a wrong one.
    for t in [None, Some(WRONG)] {
        let mut b = RegistryDiscovery::builder(&url).long_poll(false);
        if let Some(t) = t {
            b = b.token(token(t));
        }
        let d = b.build().unwrap();
        let e = d.refresh().unwrap_err().to_string();
        assert!(e.contains(&url) && e.contains("401"), "{e}");
        assert!(e.contains("bearer token"), "{e}");
        for secret in [WRITE, READ, WRONG] {
            assert!(!e.contains(secret), "{e}");
        }
        assert!(!format!("{d:?}").contains(WRONG));
    }
    // A heartbeat with a wrong token is never listed, and its DELETE is
    // refused with the same kind of error.
    let registrar = HttpRegistrar::new(&url).unwrap().token(token(WRONG));
    assert!(!format!("{registrar:?}").contains(WRONG));
    let hb = registrar
        .register("tcp@127.0.0.1:7002", RegisterOptions::new())
        .unwrap();
    assert!(!format!("{hb:?}").contains(WRONG));
    assert!(!hb.is_registered());
    let e = hb.deregister().unwrap_err().to_string();
    assert!(
        e.contains(&url) && e.contains("401") && e.contains("bearer token"),
        "{e}"
    );
    assert!(!e.contains(WRONG) && !e.contains(WRITE), "{e}");
    assert_eq!(listed(&reg), ["tcp@127.0.0.1:7001"]);
}

/// `examples/loadgen`, built by `cargo test` (run alone, this test uses the
/// last `cargo build --examples`).
#[cfg(feature = "etcd")]
fn loadgen() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(format!("loadgen{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is not built", path.display());
    path
}

/// `loadgen serve|load --registry-token-file`: the server registers with
/// the write token and deregisters on SIGTERM; the load finds it through
/// a registry whose reads are closed; without the token, load fails.
#[cfg(feature = "etcd")]
#[test]
fn loadgen_serves_and_loads_through_a_registry_with_tokens() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let reg = start_with(Some(WRITE), Some(READ), Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    let dir = std::env::temp_dir().join(format!("geerpc-auth-lg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (w, r) = (dir.join("w"), dir.join("r"));
    std::fs::write(&w, WRITE).unwrap();
    std::fs::write(&r, READ).unwrap();
    let (w, r) = (w.to_str().unwrap(), r.to_str().unwrap());

    let mut serve = Command::new(loadgen())
        .args(["serve", "--addr", "127.0.0.1:0", "--registry", &url])
        .args(["--registry-token-file", w])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    eventually("registered", Duration::from_secs(30), || {
        reg.instances().len() == 1
    });

    let load = |token: Option<&str>| {
        let mut c = Command::new(loadgen());
        c.args(["load", "--registry", &url, "--secs", "0.3"]);
        if let Some(t) = token {
            c.args(["--registry-token-file", t]);
        }
        c.output().unwrap()
    };
    let out = load(Some(r));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line["calls"].as_u64().unwrap() > 0, "{line}");
    assert_eq!(line["servers"], 1, "{line}");

    let out = load(None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains(WRITE) && !stderr.contains(READ),
        "{stderr}"
    );

    // SIGTERM: the DELETE carries the token, so the address goes at once.
    let killed = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(serve.wait().unwrap().success());
    assert!(reg.instances().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
