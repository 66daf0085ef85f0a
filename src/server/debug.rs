//! The debug page (PROTOCOL.md section 5): every service, its methods with
//! their argument and reply types, and what each has served, as a
//! self-contained HTML page for people and as JSON for tools.
//!
//! Rendering only: the HTTP side lives in `http.rs`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::server::service::{MethodInfo, ServiceInfo};
use crate::wire::address::Address;

/// Where the JSON flavour lives (the HTML page links to it).
pub(super) const JSON_PATH: &str = "/debug/geerpc.json";

/// The JSON document, fields in this order.
#[derive(Serialize)]
struct Doc<'a> {
    addr: String,
    services: Vec<ServiceDoc<'a>>,
}

#[derive(Serialize)]
struct ServiceDoc<'a> {
    name: &'a str,
    methods: Vec<MethodDoc<'a>>,
}

/// Latencies in microseconds; `None` (null) before the first call.
#[derive(Serialize)]
struct MethodDoc<'a> {
    name: &'a str,
    arg_type: &'a str,
    reply_type: &'a str,
    calls: u64,
    errors: u64,
    total_time_us: f64,
    mean_us: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

/// The JSON document: `{"addr", "services": [{"name", "methods": [..]}]}`
/// with full Rust type names and latencies in microseconds (`null` before
/// the first call).
pub(super) fn json(addr: &Address, services: &[ServiceInfo]) -> Vec<u8> {
    let us = |d: Duration| d.as_nanos() as f64 / 1_000.0;
    let doc = Doc {
        addr: addr.to_string(),
        services: services
            .iter()
            .map(|s| ServiceDoc {
                name: &s.name,
                methods: s
                    .methods
                    .iter()
                    .map(|m| MethodDoc {
                        name: &m.name,
                        arg_type: m.arg_type,
                        reply_type: m.reply_type,
                        calls: m.stats.calls,
                        errors: m.stats.errors,
                        total_time_us: us(m.stats.total_time),
                        mean_us: mean(m).map(us),
                        p50_us: m.stats.p50.map(us),
                        p99_us: m.stats.p99.map(us),
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

fn mean(m: &MethodInfo) -> Option<Duration> {
    let calls = u32::try_from(m.stats.calls).ok().filter(|&n| n > 0)?;
    Some(m.stats.total_time / calls)
}

const STYLE: &str = "\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;background:#f6f8fa;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px}
.sub{color:#59636e;margin:0 0 4px}
.sub code{color:#1f2328}
a{color:#0969da}
div.scroll{overflow-x:auto}
table{border-collapse:collapse;table-layout:fixed;width:100%;min-width:800px;background:#fff;border:1px solid #d1d9e0;border-radius:6px;overflow:hidden}
th,td{padding:7px 12px;text-align:left;border-bottom:1px solid #e5e9ee;vertical-align:top}
th{background:#eef1f4;font-weight:600;font-size:13px;color:#3d444d;white-space:nowrap}
tr:last-child td{border-bottom:none}
tbody tr:hover{background:#f6f8fa}
td.m,td.t{overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
td.m{font-weight:600}
td.t{color:#3d444d}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.bad{color:#cf222e;font-weight:600}
td.zero{color:#8c959f}
.none{color:#8c959f}
.empty{background:#fff;border:1px solid #d1d9e0;border-radius:6px;padding:16px;color:#59636e}
";

/// The HTML page: one table per service, no scripts, no external assets.
pub(super) fn html(addr: &Address, services: &[ServiceInfo]) -> String {
    let methods: usize = services.iter().map(|s| s.methods.len()).sum();
    let (calls, errors) = services
        .iter()
        .flat_map(|s| &s.methods)
        .fold((0u64, 0u64), |(c, e), m| {
            (c + m.stats.calls, e + m.stats.errors)
        });
    let mut out = String::with_capacity(4096);
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>geerpc services</title>\n<style>\n",
    );
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<main>\n<h1>geerpc services</h1>\n");
    let _ = writeln!(
        out,
        "<p class=\"sub\">Serving on <code>{}</code> &middot; {} &middot; {} &middot; \
         {} served, {} &middot; <a href=\"{JSON_PATH}\">JSON</a></p>",
        escape(&addr.to_string()),
        plural(services.len() as u64, "service"),
        plural(methods as u64, "method"),
        plural(calls, "call"),
        plural(errors, "error"),
    );
    if services.is_empty() {
        out.push_str("<p class=\"empty\">No services are registered.</p>\n");
    }
    for s in services {
        let name = escape(&s.name);
        let _ = writeln!(out, "<h2 id=\"{name}\">{name}</h2>");
        out.push_str(
            "<div class=\"scroll\"><table>\n<colgroup><col style=\"width:17%\"><col style=\"width:19%\">\
             <col style=\"width:19%\"><col style=\"width:9%\"><col style=\"width:9%\">\
             <col style=\"width:9%\"><col style=\"width:9%\"><col style=\"width:9%\"></colgroup>\n<thead><tr><th>Method</th><th>Argument</th><th>Reply</th>\
             <th class=\"n\">Calls</th><th class=\"n\">Errors</th><th class=\"n\">p50</th>\
             <th class=\"n\">p99</th><th class=\"n\">Mean</th></tr></thead>\n<tbody>\n",
        );
        for m in &s.methods {
            method_row(&mut out, &s.name, m);
        }
        out.push_str("</tbody>\n</table></div>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn method_row(out: &mut String, service: &str, m: &MethodInfo) {
    let st = &m.stats;
    let _ = writeln!(
        out,
        "<tr data-method=\"{svc}.{name}\" data-calls=\"{calls}\" data-errors=\"{errors}\">\
         <td class=\"m\">{name}</td>{arg}{reply}\
         <td class=\"n\">{calls}</td><td class=\"n{bad}\">{errors}</td>\
         {p50}{p99}{mean}</tr>",
        svc = escape(service),
        name = escape(&m.name),
        arg = type_cell(m.arg_type),
        reply = type_cell(m.reply_type),
        calls = st.calls,
        errors = st.errors,
        bad = if st.errors > 0 { " bad" } else { " zero" },
        p50 = latency_cell(st.p50),
        p99 = latency_cell(st.p99),
        mean = latency_cell(mean(m)),
    );
}

/// The short type name, with the full path as a tooltip.
fn type_cell(full: &str) -> String {
    format!(
        "<td class=\"t\" title=\"{}\">{}</td>",
        escape(full),
        escape(&short_type(full))
    )
}

fn latency_cell(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("<td class=\"n\">{}</td>", human(d)),
        None => "<td class=\"n none\">&ndash;</td>".to_string(),
    }
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
    use crate::server::stats::StatsSnapshot;
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
        let addr: Address = "tcp@127.0.0.1:1".parse().unwrap();
        let services = vec![ServiceInfo {
            name: "S".into(),
            methods: vec![MethodInfo {
                name: "M".into(),
                arg_type: "x::Vec<x::A>",
                reply_type: "&'static str",
                stats: StatsSnapshot {
                    calls: 3,
                    errors: 1,
                    expired: 0,
                    total_time: Duration::from_micros(300),
                    p50: Some(Duration::from_micros(100)),
                    p99: Some(Duration::from_micros(125)),
                },
            }],
        }];
        let page = html(&addr, &services);
        assert!(page.contains("title=\"x::Vec&lt;x::A&gt;\">Vec&lt;A&gt;</td>"));
        assert!(page.contains("&amp;&#39;static str"));
        assert!(!page.contains("<x::A>"));
        assert!(page.contains("data-method=\"S.M\" data-calls=\"3\" data-errors=\"1\""));
        let doc: Value = serde_json::from_slice(&json(&addr, &services)).unwrap();
        let m = &doc["services"][0]["methods"][0];
        assert_eq!(
            (m["calls"].as_u64(), m["errors"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(m["mean_us"].as_f64(), Some(100.0));
        assert_eq!(m["arg_type"], "x::Vec<x::A>");
    }
}
