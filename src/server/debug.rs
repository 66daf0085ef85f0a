//! The debug page (PROTOCOL.md section 5, issue 21): every service, its
//! methods with their argument and reply types, what each has served, and
//! over the last minute its calls/s, error rate, p50/p99 and a sparkline;
//! calls in flight, calls to unknown names, the open connections (peer,
//! codec, age, calls, bytes), uptime and version. As a self-contained
//! HTML page for people (`page.rs`, live through a once-a-second poll of
//! the JSON) and as JSON for tools.
//!
//! Gathering and JSON here; the last minute in `window.rs`; the HTTP side
//! in `http.rs`.

mod page;
mod window;

use std::sync::Weak;
use std::time::Duration;

use serde::Serialize;

pub(super) use page::html;
pub(super) use window::{tick, PageState};

use super::conn::Conn;
use super::Running;
use crate::server::service::MethodInfo;
use window::{MethodWindow, FLOOR_US};

/// Where the JSON flavour lives (the HTML page links to it and polls it).
pub(super) const JSON_PATH: &str = "/debug/geerpc.json";

/// The most connections listed (the oldest first); `connections_open`
/// counts them all.
const MAX_CONNS_SHOWN: usize = 100;

/// The JSON document, fields in this order. Latencies in microseconds;
/// `None` (null) before the first call.
#[derive(Serialize)]
pub(super) struct Doc {
    addr: String,
    version: &'static str,
    uptime_ms: u64,
    /// How long "the last minute" really covers (less on a young server).
    window_ms: u64,
    /// A latency of `floor_us` or less means "under `floor_us`": the
    /// histogram does not tell faster calls apart.
    floor_us: f64,
    in_flight: usize,
    connections_open: usize,
    /// Calls to a service or method the server does not have.
    unknown_calls: Unknown,
    services: Vec<ServiceDoc>,
    /// At most `MAX_CONNS_SHOWN`, the oldest first; the one asking is not
    /// among them.
    connections: Vec<ConnDoc>,
}

#[derive(Serialize)]
struct Unknown {
    calls: u64,
    last_minute: u64,
}

#[derive(Serialize)]
struct ServiceDoc {
    name: String,
    methods: Vec<MethodDoc>,
}

#[derive(Serialize)]
struct MethodDoc {
    name: String,
    arg_type: &'static str,
    reply_type: &'static str,
    calls: u64,
    errors: u64,
    total_time_us: f64,
    mean_us: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    last_minute: MethodWindow,
}

#[derive(Serialize)]
struct ConnDoc {
    peer: String,
    listener: String,
    /// The codec's content type; `null` while the handshake (or an HTTP
    /// request) is under way.
    codec: Option<&'static str>,
    age_ms: u64,
    calls: u64,
    read_bytes: u64,
    written_bytes: u64,
}

fn us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1_000.0
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Everything the page shows, as of now; `asking` (the connection the
/// page goes to) is left out of the connections.
pub(super) fn gather(run: &Running, asking: &Conn) -> Doc {
    let shared = &run.server.shared;
    let w = window::window(shared);
    let services = run.server.services();
    let mut conns = Vec::new();
    let runnings: Vec<_> = shared
        .runnings
        .lock()
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for r in &runnings {
        let listener = r.addr.to_string();
        for c in r.conns.lock().values() {
            if std::ptr::eq(c.as_ref(), asking) {
                continue;
            }
            conns.push(ConnDoc {
                peer: c.peer.to_string(),
                listener: listener.clone(),
                codec: c.proto.get().map(|(codec, _)| codec.content_type()),
                age_ms: ms(c.accepted.elapsed()),
                calls: c.calls_read.load(std::sync::atomic::Ordering::Relaxed),
                read_bytes: c.bytes_read.load(std::sync::atomic::Ordering::Relaxed),
                written_bytes: c.writer.written(),
            });
        }
    }
    conns.sort_by_key(|c| std::cmp::Reverse(c.age_ms));
    conns.truncate(MAX_CONNS_SHOWN);
    let unknown = shared
        .counters
        .unknown
        .0
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    Doc {
        addr: run.addr.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: ms(shared.page.started.elapsed()),
        window_ms: ms(w.span),
        floor_us: FLOOR_US,
        in_flight: super::limits::calls_in_flight(shared),
        connections_open: shared
            .open_conns
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1),
        unknown_calls: Unknown {
            calls: unknown,
            last_minute: w.unknown,
        },
        services: services
            .into_iter()
            .map(|s| ServiceDoc {
                methods: s
                    .methods
                    .iter()
                    .map(|m| MethodDoc {
                        name: m.name.clone(),
                        arg_type: m.arg_type,
                        reply_type: m.reply_type,
                        calls: m.stats.calls,
                        errors: m.stats.errors,
                        total_time_us: us(m.stats.total_time),
                        mean_us: mean(m).map(us),
                        p50_us: m.stats.p50.map(us),
                        p99_us: m.stats.p99.map(us),
                        last_minute: w
                            .methods
                            .get(&format!("{}.{}", s.name, m.name))
                            .cloned()
                            .unwrap_or_default(),
                    })
                    .collect(),
                name: s.name,
            })
            .collect(),
        connections: conns,
    }
}

/// The JSON document: `{"addr", "version", "uptime_ms", .., "services":
/// [{"name", "methods": [..]}], "connections": [..]}` with full Rust type
/// names and latencies in microseconds (`null` before the first call).
pub(super) fn json(doc: &Doc) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(doc).unwrap_or_default();
    out.push(b'\n');
    out
}

fn mean(m: &MethodInfo) -> Option<Duration> {
    let calls = u32::try_from(m.stats.calls).ok().filter(|&n| n > 0)?;
    Some(m.stats.total_time / calls)
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Escapes text for HTML content and quoted attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Drops module paths from a type name, generics included:
/// `alloc::vec::Vec<my_app::Args>` becomes `Vec<Args>`.
fn short_type(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    // Where the current path started in `out`: a `::` cuts back to it.
    let mut path_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(path_start);
        } else {
            out.push(c);
            if !(c.is_alphanumeric() || c == '_') {
                path_start = out.len();
            }
        }
    }
    out
}

/// A latency with three significant digits: `87.4µs`, `1.23ms`, `2.50s`.
fn human(d: Duration) -> String {
    let nanos = d.as_nanos() as f64;
    let (value, unit) = if nanos < 1e3 {
        (nanos, "ns")
    } else if nanos < 1e6 {
        (nanos / 1e3, "µs")
    } else if nanos < 1e9 {
        (nanos / 1e6, "ms")
    } else {
        (nanos / 1e9, "s")
    };
    let decimals = if value >= 100.0 || unit == "ns" {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn type_names_lose_their_paths() {
        for (full, short) in [
            ("alloc::string::String", "String"),
            ("alloc::vec::Vec<my_app::Args>", "Vec<Args>"),
            (
                "(i64, core::option::Option<alloc::string::String>)",
                "(i64, Option<String>)",
            ),
            ("&str", "&str"),
            ("[u8; 4]", "[u8; 4]"),
            ("()", "()"),
        ] {
            assert_eq!(short_type(full), short, "{full}");
        }
    }

    #[test]
    fn latencies_read_well() {
        assert_eq!(human(Duration::from_nanos(870)), "870ns");
        assert_eq!(human(Duration::from_nanos(87_420)), "87.4µs");
        assert_eq!(human(Duration::from_micros(1_234)), "1.23ms");
        assert_eq!(human(Duration::from_millis(2_500)), "2.50s");
    }

    #[test]
    fn names_are_escaped_and_rows_carry_their_counts() {
        let doc = Doc {
            addr: "tcp@127.0.0.1:1".into(),
            version: "0.1.0",
            uptime_ms: 61_000,
            window_ms: 60_000,
            floor_us: FLOOR_US,
            in_flight: 0,
            connections_open: 1,
            unknown_calls: Unknown {
                calls: 7,
                last_minute: 2,
            },
            services: vec![ServiceDoc {
                name: "S".into(),
                methods: vec![MethodDoc {
                    name: "M".into(),
                    arg_type: "x::Vec<x::A>",
                    reply_type: "&'static str",
                    calls: 3,
                    errors: 1,
                    total_time_us: 300.0,
                    mean_us: Some(100.0),
                    p50_us: Some(100.0),
                    p99_us: Some(125.0),
                    last_minute: MethodWindow {
                        calls: 2,
                        p50_us: Some(0.6),
                        ..Default::default()
                    },
                }],
            }],
            connections: vec![ConnDoc {
                peer: "<b>evil</b>".into(),
                listener: "tcp@127.0.0.1:1".into(),
                codec: None,
                age_ms: 1500,
                calls: 4,
                read_bytes: 10,
                written_bytes: 2048,
            }],
        };
        let page = html(&doc);
        assert!(page.contains("title=\"x::Vec&lt;x::A&gt;\">Vec&lt;A&gt;</td>"));
        assert!(page.contains("&amp;&#39;static str"));
        assert!(!page.contains("<x::A>"));
        assert!(page.contains("data-method=\"S.M\" data-calls=\"3\" data-errors=\"1\""));
        assert!(page.contains("&lt;b&gt;evil&lt;/b&gt;") && !page.contains("<b>evil"));
        assert!(page.contains("unknown services or methods: <span id=\"unknown\">7</span>"));
        assert!(page.contains("data-label=\"p50 (1 min)\">< 2µs</td>"));
        assert!(
            page.contains("geerpc 0.1.0") && page.contains("up <span id=\"uptime\">1m1s</span>")
        );
        let doc: Value = serde_json::from_slice(&json(&doc)).unwrap();
        let m = &doc["services"][0]["methods"][0];
        assert_eq!(
            (m["calls"].as_u64(), m["errors"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(m["mean_us"].as_f64(), Some(100.0));
        assert_eq!(m["arg_type"], "x::Vec<x::A>");
        assert_eq!(m["last_minute"]["calls"], 2);
        assert_eq!(doc["unknown_calls"]["calls"], 7);
        assert_eq!(doc["connections"][0]["written_bytes"], 2048);
    }
}
