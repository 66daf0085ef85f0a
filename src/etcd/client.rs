//! The few etcd v3 calls geerpc needs, over the JSON gateway, with failover
//! between the endpoints of one cluster.
//!
//! The gateway speaks the gRPC messages as JSON: byte fields (keys, values)
//! are base64, 64-bit integers are JSON strings, and fields at their zero
//! value are left out (a keepalive answer without `TTL` means the lease is
//! gone).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::access::{auth_value, token_refused, Access};
use crate::error::{Error, Result};

/// Encodes bytes as the gateway wants them.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a base64 field of a gateway answer.
pub(crate) fn unb64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| Error::Decode {
            what: "etcd base64 field".into(),
            message: e.to_string(),
        })
}

/// The end of the key range that holds every key starting with `prefix`:
/// the prefix with its last byte incremented (bytes 0xff dropped first).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: "\0" means "to the end of the keyspace".
    vec![0]
}

/// An int64 field: a JSON string (as the gateway sends it) or a number.
pub(crate) fn int64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        S(String),
        N(i64),
    }
    match Int::deserialize(d)? {
        Int::N(n) => Ok(n),
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// The header every answer carries; only the revision matters here.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub(crate) revision: i64,
}

/// A key-value pair as ranges and watch events carry it (base64 still).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Kv {
    #[serde(default)]
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
    #[serde(default, deserialize_with = "int64")]
    pub(crate) mod_revision: i64,
}

#[derive(Deserialize)]
struct GrantReply {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct KeepAliveReply {
    #[serde(default)]
    result: Option<KeepAliveResult>,
}

#[derive(Deserialize)]
struct KeepAliveResult {
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
}

#[derive(Deserialize)]
struct TxnReply {
    #[serde(default)]
    header: Header,
}

#[derive(Deserialize)]
struct RangeReply {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct AuthReply {
    #[serde(default)]
    token: String,
}

/// An error answer of the gateway: `{"error": .., "code": GRPC_CODE}`.
#[derive(Deserialize)]
struct ErrorReply {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    code: i32,
}

/// gRPC codes that say "this member cannot serve now; another may".
const UNAVAILABLE: i32 = 14;
const DEADLINE_EXCEEDED: i32 = 4;
/// The lease (or key) asked for does not exist.
const NOT_FOUND: i32 = 5;
/// `FailedPrecondition`: for a grant with a chosen ID, "lease already exists".
const FAILED_PRECONDITION: i32 = 9;

/// What a grant with a chosen lease ID came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Granted {
    /// etcd granted it now, with this TTL (seconds).
    Now(i64),
    /// etcd already has a lease with this ID: ours if an earlier attempt
    /// with the same ID may have reached etcd (its answer was lost),
    /// someone else's otherwise.
    Exists {
        /// Whether an attempt of this very call failed on an endpoint
        /// before another endpoint answered "exists".
        after_lost_attempt: bool,
    },
}

/// How one attempt on one endpoint went wrong.
enum Failure {
    /// The endpoint is down, unreachable or has no leader: try the next.
    Endpoint(Error),
    /// etcd answered and said no: another endpoint would say the same.
    Answer { code: i32, error: Error },
}

/// Normalises `host:port` and `http://host:port/` to `http://host:port`;
/// one string may hold several endpoints separated by commas.
pub(crate) fn parse_endpoints<S: AsRef<str>>(endpoints: &[S]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in endpoints {
        for part in e.as_ref().split(',') {
            let part = part.trim().trim_end_matches('/');
            if part.is_empty() {
                continue;
            }
            if part.contains("://") {
                out.push(part.to_string());
            } else {
                out.push(format!("http://{part}"));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Registry {
            url: String::new(),
            message: "no etcd endpoint given".into(),
        });
    }
    Ok(out)
}

/// Unary calls to one etcd cluster, tried on each endpoint in turn.
pub(crate) struct EtcdClient {
    endpoints: Vec<String>,
    timeout: Duration,
    /// The endpoint that answered last; calls start there.
    current: AtomicUsize,
    agent: ureq::Agent,
    access: Access,
}

impl EtcdClient {
    /// A client for `endpoints` whose every request ends within `timeout`,
    /// with the TLS settings and user of `access`.
    pub(crate) fn new(endpoints: Vec<String>, timeout: Duration, access: Access) -> EtcdClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(1))));
        let agent = access.agent(config);
        EtcdClient {
            endpoints,
            timeout,
            current: AtomicUsize::new(0),
            agent,
            access,
        }
    }

    /// An agent with this client's TLS settings for the long watch stream:
    /// reads time out every `read_tick` and nothing else does.
    pub(crate) fn watch_agent(&self, read_tick: Duration) -> ureq::Agent {
        self.access.agent(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(1)))
                .timeout_per_read(Some(read_tick)),
        )
    }

    /// Another client for the same endpoints, starting where this one is,
    /// with connections of its own (it outlives a [`shutdown`](Self::shutdown)).
    pub(crate) fn sibling(&self) -> EtcdClient {
        let c = EtcdClient::new(self.endpoints.clone(), self.timeout, self.access.clone());
        c.prefer(self.current());
        c
    }

    /// Closes every connection, making a request in flight on another
    /// thread fail now; later requests fail too.
    pub(crate) fn shutdown(&self) {
        self.agent.clone().shutdown();
    }

    /// The endpoints, normalised.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint to try first.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.endpoints.len()
    }

    /// Makes `i` the endpoint tried first from now on.
    pub(crate) fn prefer(&self, i: usize) {
        self.current
            .store(i % self.endpoints.len(), Ordering::Relaxed);
    }

    /// POSTs `body` to `path` on the current endpoint, then on the others
    /// while endpoints fail, and decodes the answer.
    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> std::result::Result<T, (i32, Error)> {
        self.post_counted(path, body, &mut 0)
    }

    /// [`post`](Self::post), counting in `lost` the endpoints that failed
    /// (refused, timed out, broke) before one answered: a request that
    /// timed out may still have been carried out.
    fn post_counted<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        lost: &mut u32,
    ) -> std::result::Result<T, (i32, Error)> {
        let body = body.to_string();
        let start = self.current();
        let n = self.endpoints.len();
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            match self.post_once(i, path, &body) {
                Ok(v) => {
                    if k > 0 {
                        self.prefer(i);
                    }
                    return Ok(v);
                }
                Err(Failure::Answer { code, error }) => {
                    self.prefer(i);
                    return Err((code, error));
                }
                Err(Failure::Endpoint(e)) => {
                    log::debug!("etcd endpoint failed: {e}");
                    *lost += 1;
                    last = Some(e);
                }
            }
        }
        let e = match last.expect("there is at least one endpoint") {
            Error::Registry { url, message } if n > 1 => Error::Registry {
                url,
                message: format!("{message} (the {n} endpoints all failed)"),
            },
            e => e,
        };
        Err((UNAVAILABLE, e))
    }

    /// One request to endpoint `i`, with the user's token when there is
    /// one: asked for first if none is held, and renewed once if etcd
    /// refuses it (see [`access`](super::access)).
    fn post_once<T: DeserializeOwned>(
        &self,
        i: usize,
        path: &str,
        body: &str,
    ) -> std::result::Result<T, Failure> {
        let token = self.token(i)?;
        match self.send(i, path, body, token.as_deref()) {
            Err(Failure::Answer { error, .. })
                if token.is_some() && token_refused(&error.to_string()) =>
            {
                let refused = token.expect("checked above");
                log::debug!(
                    "etcd {}: auth token refused ({error}); renewing it",
                    self.endpoints[i]
                );
                if let Some(user) = &self.access.user {
                    user.drop_token(&refused);
                }
                let token = self.token(i)?;
                self.send(i, path, body, token.as_deref())
            }
            r => r,
        }
    }

    /// The token to send to endpoint `i`: none without a user; the one
    /// held, or a new one from `/v3/auth/authenticate`.
    fn token(&self, i: usize) -> std::result::Result<Option<std::sync::Arc<str>>, Failure> {
        let Some(user) = &self.access.user else {
            return Ok(None);
        };
        if let Some(t) = user.token() {
            return Ok(Some(t));
        }
        let body = json!({ "name": user.name, "password": user.password.secret() }).to_string();
        let refused = |e: Error| Error::Registry {
            url: format!("{}/v3/auth/authenticate", self.endpoints[i]),
            message: format!(
                "authentication as etcd user {:?} failed: {}",
                user.name,
                match e {
                    Error::Registry { message, .. } => message,
                    e => e.to_string(),
                }
            ),
        };
        let r: AuthReply =
            self.send(i, "/v3/auth/authenticate", &body, None)
                .map_err(|f| match f {
                    Failure::Endpoint(e) => Failure::Endpoint(e),
                    Failure::Answer { code, error } => Failure::Answer {
                        code,
                        error: refused(error),
                    },
                })?;
        if r.token.is_empty() {
            // etcd answers an authenticate with no token when auth is not
            // enabled: nothing to send then.
            return Ok(None);
        }
        user.set_token(&r.token);
        Ok(user.token())
    }

    /// The token for a watch stream on endpoint `i` (see [`token`](Self::token)).
    pub(crate) fn watch_token(&self, i: usize) -> Result<Option<std::sync::Arc<str>>> {
        self.token(i).map_err(|f| match f {
            Failure::Endpoint(e) | Failure::Answer { error: e, .. } => e,
        })
    }

    /// Drops a token a watch stream saw refused, so the next one asks anew.
    pub(crate) fn token_refused(&self, token: &std::sync::Arc<str>) {
        if let Some(user) = &self.access.user {
            user.drop_token(token);
        }
    }

    /// POSTs `body` to `path` on endpoint `i`, with `token` as
    /// `Authorization`, and decodes the answer.
    fn send<T: DeserializeOwned>(
        &self,
        i: usize,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> std::result::Result<T, Failure> {
        let url = format!("{}{path}", self.endpoints[i]);
        let fail = |message: String| Error::Registry {
            url: url.clone(),
            message,
        };
        let mut rq = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(token) = token {
            let value = auth_value(token).map_err(|e| Failure::Endpoint(fail(e)))?;
            rq = rq.header(ureq::http::header::AUTHORIZATION, value);
        }
        let resp = rq
            .send(body)
            .map_err(|e| Failure::Endpoint(fail(self.access.explain(&url, e.to_string()))))?;
        let status = resp.status().as_u16();
        let text = resp
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| Failure::Endpoint(fail(format!("read answer: {e}"))))?;
        if status == 200 {
            return serde_json::from_slice(&text).map_err(|e| Failure::Answer {
                code: 0,
                error: fail(format!("undecodable answer: {e}")),
            });
        }
        let (code, mut message) = match serde_json::from_slice::<ErrorReply>(&text) {
            Ok(r) => {
                let m = if r.message.is_empty() {
                    r.error
                } else {
                    r.message
                };
                (r.code, m)
            }
            Err(_) => (0, String::from_utf8_lossy(&text).trim().to_string()),
        };
        if token.is_none() && self.access.user.is_none() && token_refused(&message) {
            message.push_str(" (the cluster has authentication enabled: give a user and password)");
        }
        let error = fail(format!("HTTP {status}: {message}"));
        if status >= 500 || code == UNAVAILABLE || code == DEADLINE_EXCEEDED {
            Err(Failure::Endpoint(error))
        } else {
            Err(Failure::Answer { code, error })
        }
    }

    /// Grants lease `id` (chosen by the caller, non-zero) of `ttl` (etcd
    /// may raise it to its minimum).
    ///
    /// The ID is chosen here rather than by etcd so that a grant whose
    /// answer is lost (a timeout after etcd carried it out) can be retried
    /// without leaving an orphan: the retry asks for the same ID and etcd
    /// answers "exists" instead of granting a second lease nobody knows.
    pub(crate) fn grant(&self, id: i64, ttl: Duration) -> Result<Granted> {
        let secs = ttl.as_secs().max(1);
        let mut lost = 0;
        let r: GrantReply = match self.post_counted(
            "/v3/lease/grant",
            &json!({ "TTL": secs.to_string(), "ID": id.to_string() }),
            &mut lost,
        ) {
            Ok(r) => r,
            Err((FAILED_PRECONDITION, e)) if e.to_string().contains("exists") => {
                return Ok(Granted::Exists {
                    after_lost_attempt: lost > 0,
                })
            }
            Err((_, e)) => return Err(e),
        };
        if !r.error.is_empty() || r.id != id {
            return Err(Error::Registry {
                url: self.endpoints[self.current()].clone() + "/v3/lease/grant",
                message: format!("lease {id} not granted (got {}): {}", r.id, r.error),
            });
        }
        Ok(Granted::Now(r.ttl))
    }

    /// Asks endpoint `i` alone (no failover) for its status: a cheap
    /// request that only a member that is running and reachable answers
    /// within the request timeout.
    pub(crate) fn probe(&self, i: usize) -> Result<()> {
        match self.post_once::<serde_json::Value>(i, "/v3/maintenance/status", "{}") {
            Ok(_) => Ok(()),
            Err(Failure::Endpoint(e)) | Err(Failure::Answer { error: e, .. }) => Err(e),
        }
    }

    /// Renews a lease. `Ok(None)`: etcd no longer knows it.
    pub(crate) fn keep_alive(&self, lease: i64) -> Result<Option<i64>> {
        match self
            .post::<KeepAliveReply>("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))
        {
            Ok(r) => Ok(r.result.map(|r| r.ttl).filter(|&t| t > 0)),
            Err((NOT_FOUND, _)) => Ok(None),
            Err((_, e)) => Err(e),
        }
    }

    /// Revokes a lease, deleting its keys. `Ok(false)`: it was gone already.
    pub(crate) fn revoke(&self, lease: i64) -> Result<bool> {
        match self
            .post::<serde_json::Value>("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
        {
            Ok(_) => Ok(true),
            Err((NOT_FOUND, _)) => Ok(false),
            Err((_, e)) => Err(e),
        }
    }

    /// Puts every pair under `lease` in one transaction, so they appear in
    /// one revision. Returns that revision.
    pub(crate) fn put_all(&self, kvs: &[(String, Vec<u8>)], lease: i64) -> Result<i64> {
        let ops: Vec<serde_json::Value> = kvs
            .iter()
            .map(|(k, v)| {
                json!({ "request_put": {
                    "key": b64(k.as_bytes()),
                    "value": b64(v),
                    "lease": lease.to_string(),
                }})
            })
            .collect();
        let r: TxnReply = self
            .post("/v3/kv/txn", &json!({ "success": ops }))
            .map_err(|(_, e)| e)?;
        Ok(r.header.revision)
    }

    /// Every key starting with `prefix`, and the revision they were read at.
    pub(crate) fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>)> {
        let r: RangeReply = self
            .post(
                "/v3/kv/range",
                &json!({
                    "key": b64(prefix.as_bytes()),
                    "range_end": b64(&prefix_end(prefix.as_bytes())),
                }),
            )
            .map_err(|(_, e)| e)?;
        Ok((r.header.revision, r.kvs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/geerpc/"), b"/geerpc0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn endpoints_are_normalised() {
        let e = parse_endpoints(&["127.0.0.1:2379, http://h:1/", "https://x:2"]).unwrap();
        assert_eq!(e, ["http://127.0.0.1:2379", "http://h:1", "https://x:2"]);
        assert!(parse_endpoints::<&str>(&[]).is_err());
        assert!(parse_endpoints(&[" , "]).is_err());
    }

    #[test]
    fn int64_fields_accept_strings_and_numbers() {
        let h: Header = serde_json::from_str(r#"{"revision":"42"}"#).unwrap();
        assert_eq!(h.revision, 42);
        let h: Header = serde_json::from_str(r#"{"revision":7}"#).unwrap();
        assert_eq!(h.revision, 7);
        assert!(serde_json::from_str::<Header>(r#"{"revision":"x"}"#).is_err());
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(b64(b"/geerpc/"), "L2dlZXJwYy8=");
        assert_eq!(unb64("L2dlZXJwYy8=").unwrap(), b"/geerpc/");
        assert!(unb64("%%").is_err());
    }
}
