//! `geerpc describe`: a server's services and methods with their argument
//! and reply types, like `grpcurl describe`, read from the JSON of its
//! debug page (`GET /debug/geerpc.json` on the RPC port; over TLS for a
//! `tls@` address).

use std::io::Write;

use serde::Deserialize;

use crate::exit::{Failure, Kind};

#[derive(Deserialize)]
struct Doc {
    addr: String,
    services: Vec<ServiceDoc>,
}

#[derive(Deserialize)]
struct ServiceDoc {
    name: String,
    methods: Vec<MethodDoc>,
}

#[derive(Deserialize)]
struct MethodDoc {
    name: String,
    arg_type: String,
    reply_type: String,
}

/// Longest debug document read: a server with thousands of methods.
const MAX_DOC: u64 = 16 << 20;

pub fn run(
    addr: &str,
    symbol: Option<&str>,
    json: bool,
    timeout: std::time::Duration,
    reach: &crate::creds::Reach,
) -> Result<(), Failure> {
    let url = debug_url(addr)?;
    let text = fetch(&url, timeout, reach)?;
    let mut out = std::io::stdout().lock();
    if json {
        out.write_all(&text)?;
        return Ok(out.flush()?);
    }
    let doc: Doc = serde_json::from_slice(&text).map_err(|e| {
        Failure::new(
            Kind::NotGeerpc,
            format!("{url} is not a geerpc debug document: {e}"),
        )
    })?;
    let lines = render(&doc, symbol);
    if lines.is_empty() {
        return Err(Failure::new(
            Kind::NotFound,
            format!(
                "{} has no {}",
                doc.addr,
                symbol.map_or("service".to_string(), |s| format!("service or method {s}"))
            ),
        ));
    }
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(out.flush()?)
}

/// The debug JSON's URL on an RPC address (`tcp@`, `http@`, `tls@` or a
/// bare `HOST:PORT`).
fn debug_url(addr: &str) -> Result<String, Failure> {
    let (scheme, target) = match addr.split_once('@') {
        None => ("http", addr),
        Some(("tcp" | "http", t)) => ("http", t),
        Some(("tls", t)) => ("https", t),
        Some((p, _)) => {
            return Err(Failure::new(
                Kind::Usage,
                format!("describe reads the debug page over HTTP: {p}@ addresses have none"),
            ))
        }
    };
    Ok(format!("{scheme}://{target}/debug/geerpc.json"))
}

fn fetch(
    url: &str,
    timeout: std::time::Duration,
    reach: &crate::creds::Reach,
) -> Result<Vec<u8>, Failure> {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false);
    if let Some(tls) = reach.http_tls()? {
        config = config.tls_config(tls);
    }
    let agent: ureq::Agent = config.build().into();
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| Failure::new(Kind::Unreachable, format!("GET {url}: {e}")))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .with_config()
        .limit(MAX_DOC)
        .read_to_vec()
        .map_err(|e| Failure::new(Kind::Unreachable, format!("GET {url}: {e}")))?;
    if status == 404 {
        return Err(Failure::new(
            Kind::NotFound,
            format!("GET {url}: 404: {}", String::from_utf8_lossy(&body).trim()),
        ));
    }
    if status != 200 {
        return Err(Failure::new(
            Kind::NotGeerpc,
            format!("GET {url}: HTTP {status}"),
        ));
    }
    Ok(body)
}

/// `service Arith` then `  Arith.Sum(Args) returns (i64)` for each method,
/// of every service or only the one `symbol` names (a service, or one
/// method as `Service.Method`).
fn render(doc: &Doc, symbol: Option<&str>) -> Vec<String> {
    let (want_service, want_method) = match symbol {
        None => (None, None),
        Some(s) => match s.split_once('.') {
            Some((svc, m)) => (Some(svc), Some(m)),
            None => (Some(s), None),
        },
    };
    let mut lines = Vec::new();
    for s in &doc.services {
        if want_service.is_some_and(|w| w != s.name) {
            continue;
        }
        let methods: Vec<&MethodDoc> = s
            .methods
            .iter()
            .filter(|m| want_method.is_none_or(|w| w == m.name))
            .collect();
        if methods.is_empty() {
            continue;
        }
        lines.push(format!("service {}", s.name));
        for m in methods {
            lines.push(format!(
                "  {}.{}({}) returns ({})",
                s.name,
                m.name,
                short_type(&m.arg_type),
                short_type(&m.reply_type)
            ));
        }
    }
    lines
}

/// A Rust type name without its module paths: `alloc::vec::Vec<app::Args>`
/// becomes `Vec<Args>`.
fn short_type(full: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(short_type("alloc::vec::Vec<app::Args>"), "Vec<Args>");
        assert_eq!(short_type("i64"), "i64");
        assert_eq!(
            short_type("core::option::Option<(u8, alloc::string::String)>"),
            "Option<(u8, String)>"
        );
    }

    #[test]
    fn urls_and_symbols() {
        assert_eq!(
            debug_url("tls@h:1").unwrap(),
            "https://h:1/debug/geerpc.json"
        );
        assert_eq!(debug_url("h:1").unwrap(), "http://h:1/debug/geerpc.json");
        assert!(debug_url("unix@/tmp/s").is_err());
        let doc: Doc = serde_json::from_str(
            r#"{"addr":"tcp@h:1","services":[{"name":"Arith","methods":[
                {"name":"Sum","arg_type":"x::Args","reply_type":"i64"},
                {"name":"Div","arg_type":"x::Args","reply_type":"f64"}]}]}"#,
        )
        .unwrap();
        assert_eq!(render(&doc, None).len(), 3);
        assert_eq!(
            render(&doc, Some("Arith.Div")),
            ["service Arith", "  Arith.Div(Args) returns (f64)"]
        );
        assert!(render(&doc, Some("Nope")).is_empty());
    }
}
