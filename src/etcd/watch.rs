//! The watch thread of [`EtcdDiscovery`](super::EtcdDiscovery): follow a
//! watch stream, prove the member behind it alive, and after any end list
//! again and watch from there.

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Deserialize;
use serde_json::json;

use super::access::{auth_value, token_refused};
use super::client::{b64, int64, prefix_end, Header, Kv};
use super::discovery::{Shared, MAX_LINE};
use crate::error::Error;

#[derive(Deserialize)]
struct WatchLine {
    #[serde(default)]
    result: Option<WatchResult>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Deserialize)]
pub(super) struct Event {
    /// "PUT" is the zero value, so the gateway leaves it out.
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) kv: Kv,
}

/// Why a watch stream ended.
enum WatchEnd {
    Stopped,
    /// Broken or refused: list again, from the next endpoint.
    Failed(Error),
    /// Cancelled by etcd (compaction): list again.
    Relist(String),
}

/// How long a watch stream may stay silent before the member behind it must
/// prove it is alive by answering a status request (on another connection,
/// within the request timeout, 3 s): a member that is stopped, powered off
/// or cut off is left within `SILENCE` + 3 s + a read tick, about 6.3 s.
///
/// Why a probe, and not the alternatives:
/// - etcd's progress notifications come every 10 minutes unless the member
///   was started with a shorter `--experimental-watch-progress-notify-interval`,
///   which a client cannot require; and a progress *request* must travel on
///   the watch stream itself, whose request body the HTTP gateway has
///   already read to its end (a blocking HTTP/1 client cannot send more).
/// - TCP keepalive proves only that the peer's kernel is there: a stopped
///   (SIGSTOP) or wedged etcd still has its kernel answer keepalives, and so
///   does a listen backlog accept a new connection; only an answer from etcd
///   itself proves etcd alive.
///
/// The probe costs one small request per silent stream every 3 s; a busy
/// stream (events arriving) never probes. What it does not catch: a stream
/// broken silently while the member stays fine for new connections (a
/// middlebox dropping this one connection's state); no such box sits on
/// loopback or a LAN, and the next error or relist heals it.
const SILENCE: Duration = Duration::from_secs(3);

impl Shared {
    /// The watch thread: watch, and after any end, list again and watch
    /// from there, until stopped.
    pub(super) fn follow(&self, stop: &Receiver<()>) {
        let mut backoff = Duration::from_millis(100);
        let mut listed = true;
        let mut failures = 0u32;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if !listed {
                if let Err(e) = self.list(true) {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    failures += 1;
                    if failures == 1 {
                        log::warn!("etcd discovery: list {} failed: {e}; retrying", self.range);
                    }
                    if wait(stop, backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
            let from = self.state.lock().revision + 1;
            let endpoint = self.client.current();
            let end = self.watch_once(endpoint, from, &mut backoff, &mut failures);
            // Dropping the discovery breaks the stream: not worth a warning.
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            match end {
                WatchEnd::Stopped => return,
                WatchEnd::Relist(why) => {
                    log::info!(
                        "etcd discovery: watch of {} cancelled ({why}); listing again",
                        self.range
                    );
                }
                WatchEnd::Failed(e) => {
                    failures += 1;
                    if failures == 1 {
                        log::warn!(
                            "etcd discovery: watch of {} failed: {e}; reconnecting",
                            self.range
                        );
                    } else {
                        log::debug!("etcd discovery: watch of {} failed: {e}", self.range);
                    }
                    self.client.prefer(endpoint + 1);
                    if wait(stop, backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            listed = false;
        }
    }

    /// One watch stream from `from` on endpoint `endpoint`, read to its
    /// end, with the user's token if there is one. A stream etcd refuses
    /// for its token (invalid, or "permission denied", which is what a
    /// watch whose token expired gets) drops the token, so the next list
    /// or watch asks for a new one.
    fn watch_once(
        &self,
        endpoint: usize,
        from: i64,
        backoff: &mut Duration,
        failures: &mut u32,
    ) -> WatchEnd {
        let token = match self.client.watch_token(endpoint) {
            Ok(t) => t,
            Err(e) => return WatchEnd::Failed(e),
        };
        let end = self.watch_stream(endpoint, from, token.as_deref(), backoff, failures);
        if let (WatchEnd::Failed(e), Some(t)) = (&end, &token) {
            let m = e.to_string();
            if token_refused(&m) || m.contains("permission denied") {
                self.client.token_refused(t);
            }
        }
        end
    }

    fn watch_stream(
        &self,
        endpoint: usize,
        from: i64,
        token: Option<&str>,
        backoff: &mut Duration,
        failures: &mut u32,
    ) -> WatchEnd {
        let url = format!("{}/v3/watch", self.client.endpoints()[endpoint]);
        let fail = |message: String| {
            WatchEnd::Failed(Error::Registry {
                url: url.clone(),
                message,
            })
        };
        let body = json!({ "create_request": {
            "key": b64(self.range.as_bytes()),
            "range_end": b64(&prefix_end(self.range.as_bytes())),
            "start_revision": from.to_string(),
        }});
        let mut rq = self
            .watch_agent
            .post(&url)
            .header("Content-Type", "application/json")
            // Makes a member that loses its leader cancel the watch, rather
            // than keep a stream open that no change reaches any more.
            .header("Grpc-Metadata-hasleader", "true");
        if let Some(token) = token {
            match auth_value(token) {
                Ok(value) => rq = rq.header(ureq::http::header::AUTHORIZATION, value),
                Err(e) => return fail(e),
            }
        }
        let resp = rq.send(body.to_string());
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        if resp.status() != 200 {
            let status = resp.status();
            let text = resp
                .into_body()
                .with_config()
                .limit(64 << 10)
                .read_to_string()
                .unwrap_or_default();
            return fail(format!("HTTP {status}: {}", text.trim()));
        }
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let mut line = Vec::new();
        // When the stream last brought a byte, or the member last proved
        // it is alive.
        let mut heard = Instant::now();
        loop {
            if self.stop.load(Ordering::Acquire) {
                return WatchEnd::Stopped;
            }
            let before = line.len();
            let read = reader.read_until(b'\n', &mut line);
            if line.len() > before {
                heard = Instant::now();
            }
            match read {
                Ok(0) => return fail("watch stream ended".into()),
                Ok(_) if line.ends_with(b"\n") => {
                    let flow = self.handle_line(&line, backoff, failures);
                    line.clear();
                    if let ControlFlow::Break(end) = flow {
                        return end.unwrap_or_else(&fail);
                    }
                }
                // The stream ended inside a line: the next read says so.
                Ok(_) => {}
                // Nothing for a tick: the bytes read so far stay in `line`.
                Err(e) if is_timeout(&e) => {
                    self.end_warmup_if_due();
                    if heard.elapsed() >= SILENCE {
                        // A quiet stream, or a member that is gone without
                        // a word (stopped, powered off, cut off): ask it.
                        if let Err(e) = self.client.probe(endpoint) {
                            return fail(format!(
                                "watch stream silent for {:?} and the member does not \
                                 answer a status request: {e}",
                                heard.elapsed()
                            ));
                        }
                        heard = Instant::now();
                    }
                }
                Err(e) => return fail(format!("read watch stream: {e}")),
            }
            if line.len() > MAX_LINE {
                return fail(format!("watch message longer than {MAX_LINE} bytes"));
            }
        }
    }

    /// Handles one message of the stream; `Break` ends the stream, with an
    /// error message as `Err`.
    fn handle_line(
        &self,
        line: &[u8],
        backoff: &mut Duration,
        failures: &mut u32,
    ) -> ControlFlow<std::result::Result<WatchEnd, String>> {
        let msg: WatchLine = match serde_json::from_slice(line) {
            Ok(m) => m,
            Err(e) => return ControlFlow::Break(Err(format!("undecodable watch message: {e}"))),
        };
        if let Some(err) = msg.error {
            return ControlFlow::Break(Err(format!("watch error: {err}")));
        }
        let Some(r) = msg.result else {
            return ControlFlow::Continue(());
        };
        if r.created {
            *backoff = Duration::from_millis(100);
            if *failures > 0 {
                log::info!("etcd discovery: watching {} again", self.range);
            }
            *failures = 0;
            log::debug!(
                "etcd discovery: watching {} (etcd at revision {})",
                self.range,
                r.header.revision
            );
        }
        if !r.events.is_empty() {
            self.apply(&r.events);
        }
        if r.canceled {
            if r.compact_revision > 0 {
                return ControlFlow::Break(Ok(WatchEnd::Relist(format!(
                    "history compacted up to revision {}",
                    r.compact_revision
                ))));
            }
            return ControlFlow::Break(Err(format!(
                "watch cancelled by etcd: {}",
                r.cancel_reason
            )));
        }
        ControlFlow::Continue(())
    }
}

/// Waits `d` unless stopped first; true when stopped.
fn wait(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

/// Whether a read failed only because no byte came within the read timeout.
fn is_timeout(e: &std::io::Error) -> bool {
    if matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) {
        return true;
    }
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xclient::Instance;

    fn shared(service: Option<&str>) -> Shared {
        Shared::new(
            vec!["http://127.0.0.1:1".into()],
            "/geerpc",
            service,
            Default::default(),
        )
    }

    fn put(key: &str, instance: &Instance, rev: i64) -> String {
        json!({"kv": {
            "key": b64(key.as_bytes()),
            "value": b64(&serde_json::to_vec(instance).unwrap()),
            "mod_revision": rev.to_string(),
        }})
        .to_string()
    }

    fn delete(key: &str, rev: i64) -> String {
        json!({"type": "DELETE", "kv": {"key": b64(key.as_bytes()), "mod_revision": rev.to_string()}})
            .to_string()
    }

    fn line(events: &[String]) -> Vec<u8> {
        format!(
            r#"{{"result":{{"header":{{"revision":"9"}},"events":[{}]}}}}"#,
            events.join(",")
        )
        .into_bytes()
    }

    fn feed(s: &Shared, l: &[u8]) -> ControlFlow<std::result::Result<WatchEnd, String>> {
        s.handle_line(l, &mut Duration::from_secs(1), &mut 0)
    }

    fn addrs(s: &Shared) -> Vec<String> {
        s.state
            .lock()
            .snapshot
            .instances
            .iter()
            .map(|i| i.addr.clone())
            .collect()
    }

    #[test]
    fn events_of_one_revision_apply_together_and_old_ones_are_skipped() {
        let s = shared(None);
        let (tx, rx) = crossbeam_channel::bounded(1);
        s.watchers.lock().push(tx);
        let mut a = Instance::new("x");
        a.services = vec!["Arith".into(), "Echo".into()];
        // One registration: two keys in one revision.
        let l = line(&[
            put("/geerpc/Arith/tcp@a:1", &a, 5),
            put("/geerpc/Echo/tcp@a:1", &a, 5),
        ]);
        assert!(feed(&s, &l).is_continue());
        assert_eq!(addrs(&s), ["tcp@a:1"]);
        assert_eq!(s.state.lock().revision, 5);
        assert!(rx.try_recv().is_ok());
        let version = s.state.lock().snapshot.version;

        // Replayed events change nothing and signal nothing.
        assert!(feed(&s, &line(&[delete("/geerpc/Arith/tcp@a:1", 4)])).is_continue());
        assert_eq!(addrs(&s), ["tcp@a:1"]);
        assert_eq!(s.state.lock().snapshot.version, version);
        assert!(rx.try_recv().is_err());

        // One key of two gone: still there, under the other service.
        assert!(feed(&s, &line(&[delete("/geerpc/Arith/tcp@a:1", 6)])).is_continue());
        assert_eq!(
            s.state.lock().snapshot.instances[0].services,
            ["Arith", "Echo"]
        );
        assert!(feed(&s, &line(&[delete("/geerpc/Echo/tcp@a:1", 7)])).is_continue());
        assert!(addrs(&s).is_empty());
        assert!(s.state.lock().snapshot.version > version);
    }

    #[test]
    fn cancellations_and_errors_end_the_stream() {
        let s = shared(Some("Arith"));
        let created = br#"{"result":{"header":{"revision":"3"},"created":true}}"#;
        assert!(feed(&s, created).is_continue());
        let compacted = br#"{"result":{"header":{},"canceled":true,"compact_revision":"3"}}"#;
        assert!(matches!(
            feed(&s, compacted),
            ControlFlow::Break(Ok(WatchEnd::Relist(_)))
        ));
        let canceled = br#"{"result":{"canceled":true,"cancel_reason":"no leader"}}"#;
        assert!(
            matches!(feed(&s, canceled), ControlFlow::Break(Err(m)) if m.contains("no leader"))
        );
        let error = br#"{"error":{"grpc_code":14,"message":"etcdserver: no leader"}}"#;
        assert!(matches!(feed(&s, error), ControlFlow::Break(Err(m)) if m.contains("no leader")));
        assert!(matches!(feed(&s, b"{oops"), ControlFlow::Break(Err(_))));
        // A key of another service under the prefix is ignored, not fatal.
        let other = line(&[put("/geerpc/Arith", &Instance::new("x"), 9)]);
        assert!(feed(&s, &other).is_continue());
        assert!(addrs(&s).is_empty());
    }
}
