//! Discovery from etcd: list once, then follow a watch.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use super::client::{b64, int64, parse_endpoints, prefix_end, unb64, EtcdClient, Header, Kv};
use super::{normalize_prefix, parse_entry, DEFAULT_PREFIX};
use crate::error::{Error, Result};
use crate::threads::ThreadGroup;
use crate::xclient::{Discovery, Instance, Snapshot};

/// How long a blocked watch read waits before looking at the stop flag: it
/// bounds how long dropping the discovery takes should closing the
/// connection not wake the read.
const READ_TICK: Duration = Duration::from_millis(300);
/// Timeout of the list requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest line of a watch stream accepted (a batch of events).
const MAX_LINE: usize = 64 << 20;

/// A [`Discovery`] that follows the instances registered in etcd (by
/// [`register`](super::register)) as they come and go.
///
/// It lists the keys under `PREFIX/` (or `PREFIX/SERVICE/` for one service)
/// when created, then a thread of its own (`geerpc-etcd-wch`) watches
/// them from the next revision: every change is applied as soon as etcd
/// reports it, [`snapshot`](Discovery::snapshot) is a lock and an `Arc`
/// clone, and [`watch`](Discovery::watch) receivers are signalled. After an
/// error (the endpoint died, the stream broke, history was compacted) the
/// thread lists again, from the next endpoint if needed, and watches from
/// that list's revision, so no change is missed; meanwhile the last list
/// is served. Dropping the discovery stops the thread within about a
/// second.
///
/// With no service, an instance registered under several services appears
/// once, with all of them.
///
/// ```no_run
/// use geerpc::{Discovery, EtcdDiscovery};
///
/// let d = EtcdDiscovery::new(&["127.0.0.1:2379", "127.0.0.1:22379"], Some("Arith"))?;
/// for i in d.snapshot()?.instances.iter() {
///     println!("{}", i.addr);
/// }
/// # Ok::<(), geerpc::Error>(())
/// ```
pub struct EtcdDiscovery {
    shared: Arc<Shared>,
    threads: ThreadGroup,
    stop_tx: Sender<()>,
}

struct Shared {
    client: EtcdClient,
    /// The agent of the watch stream: reads time out every `READ_TICK` so
    /// the thread can see the stop flag, and nothing else times out.
    watch_agent: ureq::Agent,
    /// The range watched: `PREFIX/` or `PREFIX/SERVICE/`.
    range: String,
    prefix: String,
    state: Mutex<State>,
    watchers: Mutex<Vec<Sender<()>>>,
    stop: AtomicBool,
}

struct State {
    /// The revision the entries reflect.
    revision: i64,
    /// Key to instance.
    entries: BTreeMap<String, Instance>,
    snapshot: Snapshot,
}

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
struct Event {
    /// "PUT" is the zero value, so the gateway leaves it out.
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    kv: Kv,
}

/// Why a watch stream ended.
enum WatchEnd {
    Stopped,
    /// Broken or refused: list again, from the next endpoint.
    Failed(Error),
    /// Cancelled by etcd (compaction): list again.
    Relist(String),
}

impl EtcdDiscovery {
    /// Follows the instances of `service` (all services with `None`) under
    /// [`DEFAULT_PREFIX`] on the etcd cluster at `endpoints`. Fails if no
    /// endpoint answers the first list.
    pub fn new<S: AsRef<str>>(endpoints: &[S], service: Option<&str>) -> Result<EtcdDiscovery> {
        EtcdDiscovery::with_prefix(endpoints, DEFAULT_PREFIX, service)
    }

    /// Like [`new`](EtcdDiscovery::new), under another key prefix.
    pub fn with_prefix<S: AsRef<str>>(
        endpoints: &[S],
        prefix: &str,
        service: Option<&str>,
    ) -> Result<EtcdDiscovery> {
        let shared = Arc::new(Shared::new(parse_endpoints(endpoints)?, prefix, service));
        shared.list(true)?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let threads = ThreadGroup::default();
        let s = shared.clone();
        threads
            .spawn("geerpc-etcd-wch", None, move || s.follow(&stop_rx))
            .map_err(|e| Error::io("start etcd watch thread", e))?;
        Ok(EtcdDiscovery {
            shared,
            threads,
            stop_tx,
        })
    }

    /// The etcd revision the current list reflects.
    pub fn revision(&self) -> i64 {
        self.shared.state.lock().revision
    }
}

impl Discovery for EtcdDiscovery {
    fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.shared.state.lock().snapshot.clone())
    }

    /// Lists the keys now. The watch keeps the list current anyway; this
    /// only helps to learn at once whether etcd can be reached.
    fn refresh(&self) -> Result<()> {
        self.shared.list(false)
    }

    /// Replaces the list by hand, until the next change in etcd (or the
    /// next list after an error) replaces it again.
    fn update(&self, instances: Vec<Instance>) -> Result<()> {
        let entries = instances
            .into_iter()
            .map(|i| (format!("{}{}", self.shared.range, i.addr), i))
            .collect();
        let mut state = self.shared.state.lock();
        state.entries = entries;
        let changed = self.shared.rebuild(&mut state);
        drop(state);
        if changed {
            self.shared.notify();
        }
        Ok(())
    }

    fn watch(&self) -> Option<Receiver<()>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.shared.watchers.lock().push(tx);
        Some(rx)
    }
}

impl Drop for EtcdDiscovery {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.stop_tx.try_send(());
        // Closing the connections ends a blocked read or list at once; the
        // read timeout is the fallback (a connect in progress is not cut).
        self.shared.watch_agent.clone().shutdown();
        self.shared.client.shutdown();
        let stuck = self
            .threads
            .join_until(Instant::now() + READ_TICK + Duration::from_secs(1));
        if stuck > 0 {
            log::warn!("etcd discovery: watch thread did not stop in time");
        }
    }
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("endpoints", &self.shared.client.endpoints())
            .field("range", &self.shared.range)
            .finish()
    }
}

impl Shared {
    fn new(endpoints: Vec<String>, prefix: &str, service: Option<&str>) -> Shared {
        let prefix = normalize_prefix(prefix);
        let range = match service {
            Some(s) => format!("{prefix}/{s}/"),
            None => format!("{prefix}/"),
        };
        let watch_agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(1)))
            .timeout_per_read(Some(READ_TICK))
            .build()
            .into();
        Shared {
            client: EtcdClient::new(endpoints, REQUEST_TIMEOUT),
            watch_agent,
            range,
            prefix,
            state: Mutex::new(State {
                revision: 0,
                entries: BTreeMap::new(),
                snapshot: Snapshot {
                    version: 0,
                    instances: Arc::from(Vec::new()),
                },
            }),
            watchers: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        }
    }

    /// Lists the range and installs the result. `force`: even if older than
    /// what is known (a rebuilt cluster starts its revisions again); only the
    /// watch thread, which watches from the list's revision next, forces.
    fn list(&self, force: bool) -> Result<()> {
        let (revision, kvs) = self.client.range_prefix(&self.range)?;
        let mut entries = BTreeMap::new();
        for kv in kvs {
            if let Some((key, instance)) = self.decode(&kv) {
                entries.insert(key, instance);
            }
        }
        let mut state = self.state.lock();
        if !force && revision < state.revision {
            return Ok(());
        }
        state.revision = revision;
        state.entries = entries;
        let changed = self.rebuild(&mut state);
        drop(state);
        if changed {
            self.notify();
        }
        Ok(())
    }

    fn decode(&self, kv: &Kv) -> Option<(String, Instance)> {
        let key = unb64(&kv.key).ok()?;
        let value = unb64(&kv.value).ok()?;
        let (_, instance) = parse_entry(&self.prefix, &key, &value)?;
        Some((String::from_utf8(key).ok()?, instance))
    }

    /// Recomputes the snapshot from the entries; bumps its version and says
    /// so if the instances changed.
    fn rebuild(&self, state: &mut State) -> bool {
        let mut by_addr: BTreeMap<&str, Instance> = BTreeMap::new();
        for i in state.entries.values() {
            match by_addr.get_mut(i.addr.as_str()) {
                None => {
                    by_addr.insert(&i.addr, i.clone());
                }
                Some(seen) => {
                    for s in &i.services {
                        if !seen.services.contains(s) {
                            seen.services.push(s.clone());
                        }
                    }
                    seen.services.sort();
                }
            }
        }
        let instances: Vec<Instance> = by_addr.into_values().collect();
        if *instances == *state.snapshot.instances {
            return false;
        }
        state.snapshot = Snapshot {
            version: state.snapshot.version + 1,
            instances: instances.into(),
        };
        true
    }

    fn notify(&self) {
        self.watchers.lock().retain(|tx| {
            !matches!(
                tx.try_send(()),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
        });
    }

    /// Applies one watch response's events (all of one revision arrive in
    /// one response). Events not newer than the list are skipped.
    fn apply(&self, events: &[Event]) {
        let mut state = self.state.lock();
        let base = state.revision;
        let mut newest = base;
        for ev in events {
            if ev.kv.mod_revision <= base {
                continue;
            }
            newest = newest.max(ev.kv.mod_revision);
            let Ok(key) = unb64(&ev.kv.key).and_then(|k| {
                String::from_utf8(k).map_err(|_| Error::Protocol("etcd key is not UTF-8".into()))
            }) else {
                continue;
            };
            if ev.kind == "DELETE" {
                state.entries.remove(&key);
            } else if let Some((key, instance)) = self.decode(&ev.kv) {
                state.entries.insert(key, instance);
            }
        }
        state.revision = newest;
        let changed = self.rebuild(&mut state);
        drop(state);
        if changed {
            self.notify();
        }
    }

    /// The watch thread: watch, and after any end, list again and watch
    /// from there, until stopped.
    fn follow(&self, stop: &Receiver<()>) {
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

    /// One watch stream from `from` on endpoint `endpoint`, read to its end.
    fn watch_once(
        &self,
        endpoint: usize,
        from: i64,
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
        let resp = self
            .watch_agent
            .post(&url)
            .header("Content-Type", "application/json")
            // Makes a member that loses its leader cancel the watch, rather
            // than keep a stream open that no change reaches any more.
            .header("Grpc-Metadata-hasleader", "true")
            .send(body.to_string());
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
        loop {
            if self.stop.load(Ordering::Acquire) {
                return WatchEnd::Stopped;
            }
            match reader.read_until(b'\n', &mut line) {
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
                Err(e) if is_timeout(&e) => {}
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

    fn shared(service: Option<&str>) -> Shared {
        Shared::new(vec!["http://127.0.0.1:1".into()], "/geerpc", service)
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
