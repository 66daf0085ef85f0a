//! `geerpc call`: one call, to the server named by `--addr` or to the
//! instances a registry or etcd lists. A one-shot command has no later
//! calls to profit from an XClient's pool and eviction, so it dials each
//! instance itself: in random order, moving to the next only while the
//! call certainly did not run there (not sent, or refused unprocessed), so
//! that a call is never run twice. The whole command is bounded by
//! `--timeout`.

use std::io::Read;
use std::time::{Duration, Instant};

use geerpc::client::ClientBuilder;
use geerpc::{CallOptions, Client, Error, Meta};
use rand::seq::SliceRandom;

use crate::exit::{Failure, Kind};
use crate::{CallArgs, Found};

/// Largest argument text read from stdin: the library's default message
/// limit (a server would refuse more anyway).
const MAX_STDIN_ARGS: u64 = 16 << 20;

pub fn run(a: CallArgs) -> Result<(), Failure> {
    let deadline = Instant::now() + a.timeout;
    let args = arguments(&a.args)?;
    let meta = meta(&a.meta)?;
    let tls = a.reach.client_tls()?;
    let mut builder = Client::builder().codec(a.codec).magic(a.magic).tls(tls);
    if let Some(path) = &a.connect_path {
        builder = builder.connect_path(path.as_str());
    }
    let (service, _) = a.method.split_once('.').expect("checked by the parser");
    let targets: Vec<String> = match a.target.addr {
        Some(addr) if addr.contains('@') => vec![addr],
        Some(addr) => vec![format!("tcp@{addr}")],
        None => {
            let timeout = a.timeout.min(crate::DISCOVERY_TIMEOUT);
            let registry = a.target.registry.as_deref();
            let etcd = a.target.etcd.as_deref();
            let found = Found::new(registry, etcd, Some(service), timeout, &a.reach)?;
            let mut addrs: Vec<String> = found
                .instances()?
                .iter()
                // An instance that lists no services may serve any.
                .filter(|i| i.services.is_empty() || i.services.iter().any(|s| s == service))
                .map(|i| i.addr.clone())
                .collect();
            if addrs.is_empty() {
                return Err(no_instance(
                    &found, registry, etcd, service, timeout, &a.reach,
                ));
            }
            addrs.shuffle(&mut rand::rng());
            addrs
        }
    };
    let mut failed: Vec<(String, Error)> = Vec::new();
    for (k, addr) in targets.iter().enumerate() {
        match call_one(&builder, addr, &a.method, &args, &meta, deadline) {
            Ok(reply) => {
                log::info!("{} answered {}", addr, a.method);
                let text = serde_json::to_string(&reply)
                    .map_err(|e| Failure::new(Kind::Other, e.to_string()))?;
                println!("{text}");
                return Ok(());
            }
            Err(e) if k + 1 < targets.len() && e.is_retryable() => {
                log::info!("{addr} did not take the call ({e}); trying the next instance");
                failed.push((addr.clone(), e));
            }
            Err(e) if failed.is_empty() => return Err(Failure::call(&e, addr)),
            Err(e) => {
                // Every instance was tried: the last error decides the
                // kind, and the message lists them all.
                let mut f = Failure::call(&e, addr);
                if f.kind == Kind::Unreachable {
                    f.hints = vec![
                        "a server that stopped without deregistering stays listed until \
                         the registry's TTL runs out"
                            .into(),
                    ];
                }
                failed.push((addr.clone(), e));
                f.message = format!(
                    "no instance took the call to {} ({} tried): {}",
                    a.method,
                    failed.len(),
                    failed
                        .iter()
                        .map(|(a, e)| format!("{a}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                return Err(f);
            }
        }
    }
    unreachable!("every path through the loop returns")
}

/// The `--meta KEY=VALUE` pairs. The texts are checked here rather than by
/// the parser, whose errors quote the value: a credential given by mistake
/// must not be echoed.
fn meta(pairs: &[String]) -> Result<Meta, Failure> {
    let mut meta = Meta::new();
    for pair in pairs {
        let usage = |m: String| Failure::new(Kind::Usage, m);
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| usage(format!("--meta {pair:?}: not KEY=VALUE")))?;
        if k.eq_ignore_ascii_case("authorization") {
            return Err(usage(
                "--meta authorization: a credential on the command line is visible to every \
                 user of the machine (ps); not accepted"
                    .into(),
            ));
        }
        meta.insert(k, v)
            .map_err(|e| usage(format!("--meta {k:?}: {e}")))?;
    }
    Ok(meta)
}

/// The call's arguments: the JSON given, or read from stdin for `-`.
fn arguments(given: &str) -> Result<serde_json::Value, Failure> {
    let (text, from) = if given == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_STDIN_ARGS + 1)
            .read_to_string(&mut text)
            .map_err(|e| {
                Failure::new(
                    Kind::Usage,
                    format!("reading the arguments from stdin: {e}"),
                )
            })?;
        if text.len() as u64 > MAX_STDIN_ARGS {
            return Err(Failure::new(
                Kind::Usage,
                format!("the arguments on stdin exceed {MAX_STDIN_ARGS} bytes"),
            ));
        }
        (text, "arguments on stdin")
    } else {
        (given.to_string(), "arguments")
    };
    serde_json::from_str(&text).map_err(|e| {
        let shown: String = text.chars().take(200).collect();
        Failure::new(
            Kind::Usage,
            format!("the {from} are not JSON ({e}): {shown}"),
        )
    })
}

/// One attempt on one instance, within what is left of the deadline.
fn call_one(
    builder: &ClientBuilder,
    addr: &str,
    method: &str,
    args: &serde_json::Value,
    meta: &Meta,
    deadline: Instant,
) -> geerpc::Result<serde_json::Value> {
    let left = deadline.saturating_duration_since(Instant::now());
    let client = builder.clone().connect_timeout(Some(left)).dial(addr)?;
    // Whole milliseconds, so that a timeout says "within 9.998s", not
    // "within 9.997812345s".
    let left = deadline.saturating_duration_since(Instant::now());
    let left = Duration::from_millis(left.as_millis() as u64);
    let opts = CallOptions::new().timeout(left).with_meta(meta.clone());
    let (reply, reply_meta) = client.go_with(method, args, &opts)?.wait_with_meta()?;
    if !reply_meta.is_empty() {
        log::info!("{addr} replied with Meta {reply_meta:?}");
    }
    Ok(reply)
}

/// The source lists nothing for `service`: say what it does list.
fn no_instance(
    found: &Found,
    registry: Option<&str>,
    etcd: Option<&str>,
    service: &str,
    timeout: Duration,
    reach: &crate::creds::Reach,
) -> Failure {
    let mut f = Failure::new(
        Kind::Discovery,
        format!("{} lists no instance of {service}", found.source),
    );
    let others = Found::new(registry, etcd, None, timeout, reach)
        .and_then(|all| all.instances())
        .map(|all| {
            let mut names: Vec<&str> = all
                .iter()
                .flat_map(|i| i.services.iter().map(String::as_str))
                .collect();
            names.sort_unstable();
            names.dedup();
            names.join(", ")
        });
    if let Ok(names) = others {
        if !names.is_empty() {
            f = f.hint(format!("it lists instances of: {names}"));
        }
    }
    f
}
