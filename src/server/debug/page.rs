//! The debug page's HTML: rendered whole on the server, so it reads
//! without JavaScript, with its CSS and a small script inline (no external
//! asset). The script polls the JSON once a second and sets the cells'
//! text (never HTML) and the sparklines' points: counts move without a
//! reload. A method registered after the page loaded shows on a reload.
//! On a phone-sized window each row becomes a block of labelled lines.

use std::fmt::Write as _;

use super::window::{FLOOR_US, SPARK_POINTS};
use super::{escape, human, plural, short_type, ConnDoc, Doc, MethodDoc, JSON_PATH};

/// A latency in microseconds as the page shows it: `< 2µs` at the floor.
pub(super) fn latency(us: Option<f64>) -> String {
    match us {
        None => "\u{2013}".into(),
        Some(us) if us <= FLOOR_US => format!("< {FLOOR_US}µs"),
        Some(us) => human(std::time::Duration::from_nanos((us * 1e3) as u64)),
    }
}

/// Calls per second with three significant digits at most.
fn rate(r: f64) -> String {
    let d = if r >= 100.0 {
        0
    } else if r >= 10.0 {
        1
    } else {
        2
    };
    format!("{r:.d$}")
}

/// A duration in milliseconds: `850ms`, `12s`, `4m10s`, `2h3m`.
pub(super) fn age(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{s}s"),
        60_000..3_600_000 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// Bytes: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub(super) fn bytes(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 || unit == "GiB" {
            return if unit == "B" {
                format!("{n} B")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    unreachable!()
}

/// The sparkline's points: calls/s per second, right-aligned on 60.
fn spark_points(pts: &[f64]) -> String {
    let max = pts.iter().copied().fold(1.0, f64::max);
    let skip = pts.len().saturating_sub(SPARK_POINTS);
    let first = SPARK_POINTS - (pts.len() - skip);
    pts.iter()
        .skip(skip)
        .enumerate()
        .map(|(i, v)| format!("{},{:.1}", first + i, 16.0 - 15.0 * v / max))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The HTML page: a table per service, one of connections; live on top.
pub(in crate::server) fn html(doc: &Doc) -> String {
    let methods: usize = doc.services.iter().map(|s| s.methods.len()).sum();
    let (calls, errors) = doc
        .services
        .iter()
        .flat_map(|s| &s.methods)
        .fold((0u64, 0u64), |(c, e), m| (c + m.calls, e + m.errors));
    let mut out = String::with_capacity(8192);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>geerpc services {addr}</title>\n<style>\n{STYLE}</style>\n</head>\n\
         <body data-json=\"{JSON_PATH}\">\n<main>\n<h1>geerpc services</h1>\n",
        addr = escape(&doc.addr),
    );
    let _ = writeln!(
        out,
        "<p class=\"sub\" id=\"facts\">Serving on <code>{addr}</code> &middot; geerpc {ver} \
         &middot; up <span id=\"uptime\">{up}</span> &middot; <span id=\"inflight\">{fl}</span> \
         in flight &middot; <span id=\"open\">{open}</span> other connections open &middot; \
         <a href=\"{JSON_PATH}\">JSON</a></p>",
        addr = escape(&doc.addr),
        ver = escape(doc.version),
        up = age(doc.uptime_ms),
        fl = doc.in_flight,
        open = doc.connections_open,
    );
    let _ = writeln!(
        out,
        "<p class=\"sub\">{} &middot; {} &middot; <span id=\"served\">{}</span> served, \
         <span id=\"failed\">{}</span> &middot; calls to unknown services or methods: \
         <span id=\"unknown\">{}</span> (<span id=\"unknown-1m\">{}</span> in the last \
         minute)</p>\n\
         <p class=\"sub\" id=\"live\">Static view: reload for news. Rates and \
         latencies cover the last {}.</p>",
        plural(doc.services.len() as u64, "service"),
        plural(methods as u64, "method"),
        plural(calls, "call"),
        plural(errors, "error"),
        doc.unknown_calls.calls,
        doc.unknown_calls.last_minute,
        age(doc.window_ms),
    );
    if doc.services.is_empty() {
        out.push_str("<p class=\"empty\">No services are registered.</p>\n");
    }
    for s in &doc.services {
        let name = escape(&s.name);
        let _ = writeln!(out, "<h2 id=\"{name}\">{name}</h2>");
        out.push_str(
            "<div class=\"scroll\"><table>\n<thead><tr><th>Method</th><th>Argument</th>\
             <th>Reply</th><th class=\"n\">Calls</th><th class=\"n\">Errors</th>\
             <th class=\"n\" title=\"last minute\">Calls/s</th>\
             <th class=\"n\" title=\"last minute\">Error rate</th>\
             <th class=\"n\" title=\"last minute\">p50</th>\
             <th class=\"n\" title=\"last minute\">p99</th>\
             <th class=\"n\" title=\"last minute\">Mean</th>\
             <th title=\"calls/s, each second of the last minute\">Last minute</th>\
             </tr></thead>\n<tbody>\n",
        );
        for m in &s.methods {
            method_row(&mut out, &s.name, m);
        }
        out.push_str("</tbody>\n</table></div>\n");
    }
    out.push_str(
        "<h2 id=\"connections\">Connections</h2>\n<div class=\"scroll\"><table>\n\
         <thead><tr><th>Peer</th><th>Listener</th><th>Codec</th><th class=\"n\">Age</th>\
         <th class=\"n\">Calls</th><th class=\"n\">Read</th><th class=\"n\">Written</th>\
         </tr></thead>\n<tbody id=\"conns\">\n",
    );
    if doc.connections.is_empty() {
        out.push_str(
            "<tr><td colspan=\"7\" class=\"none\">No other connection is open.</td></tr>\n",
        );
    }
    for c in &doc.connections {
        conn_row(&mut out, c);
    }
    out.push_str("</tbody>\n</table></div>\n</main>\n<script>");
    out.push_str(JS);
    out.push_str("</script>\n</body>\n</html>\n");
    out
}

fn method_row(out: &mut String, service: &str, m: &MethodDoc) {
    let w = &m.last_minute;
    let _ = writeln!(
        out,
        "<tr data-method=\"{svc}.{name}\" data-calls=\"{calls}\" data-errors=\"{errors}\">\
         <td class=\"m\" data-label=\"Method\">{name}</td>{arg}{reply}\
         <td class=\"n c-calls\" data-label=\"Calls\">{calls}</td>\
         <td class=\"n c-errors{bad}\" data-label=\"Errors\">{errors}</td>\
         <td class=\"n c-rate\" data-label=\"Calls/s (1 min)\">{rate}</td>\
         <td class=\"n c-err\" data-label=\"Error rate (1 min)\">{err}</td>\
         <td class=\"n c-p50\" data-label=\"p50 (1 min)\">{p50}</td>\
         <td class=\"n c-p99\" data-label=\"p99 (1 min)\">{p99}</td>\
         <td class=\"n c-mean\" data-label=\"Mean (1 min)\">{mean}</td>\
         <td class=\"c-spark\" data-label=\"Last minute\"><svg class=\"spark\" viewBox=\"0 0 60 17\" \
         preserveAspectRatio=\"none\" role=\"img\" aria-label=\"calls/s over the last minute\">\
         <polyline points=\"{spark}\"/></svg></td></tr>",
        svc = escape(service),
        name = escape(&m.name),
        arg = type_cell(m.arg_type, "Argument"),
        reply = type_cell(m.reply_type, "Reply"),
        calls = m.calls,
        errors = m.errors,
        bad = if m.errors > 0 { " bad" } else { " zero" },
        rate = rate(w.calls_per_s),
        err = if w.calls == 0 {
            "\u{2013}".into()
        } else {
            format!("{:.1}%", w.error_rate * 100.0)
        },
        p50 = latency(w.p50_us),
        p99 = latency(w.p99_us),
        mean = latency(w.mean_us),
        spark = spark_points(&w.spark),
    );
}

fn conn_row(out: &mut String, c: &ConnDoc) {
    let _ = writeln!(
        out,
        "<tr data-peer=\"{peer}\"><td class=\"t\" data-label=\"Peer\">{peer}</td>\
         <td class=\"t\" data-label=\"Listener\">{listener}</td>\
         <td data-label=\"Codec\">{codec}</td><td class=\"n\" data-label=\"Age\">{age}</td>\
         <td class=\"n\" data-label=\"Calls\">{calls}</td>\
         <td class=\"n\" data-label=\"Read\">{read}</td>\
         <td class=\"n\" data-label=\"Written\">{written}</td></tr>",
        peer = escape(&c.peer),
        listener = escape(&c.listener),
        codec = c.codec.unwrap_or("(handshake)"),
        age = age(c.age_ms),
        calls = c.calls,
        read = bytes(c.read_bytes),
        written = bytes(c.written_bytes),
    );
}

/// The short type name, with the full path as a tooltip.
fn type_cell(full: &str, label: &str) -> String {
    format!(
        "<td class=\"t\" data-label=\"{label}\" title=\"{}\">{}</td>",
        escape(full),
        escape(&short_type(full))
    )
}

const STYLE: &str = "\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;background:#f6f8fa;margin:0}
main{max-width:1200px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px}
.sub{color:#59636e;margin:0 0 4px}
.sub code{color:#1f2328}
a{color:#0969da}
div.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d1d9e0;border-radius:6px}
th,td{padding:7px 10px;text-align:left;border-bottom:1px solid #e5e9ee;vertical-align:top}
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
svg.spark{width:90px;height:18px;display:block}
svg.spark polyline{fill:none;stroke:#0969da;stroke-width:1.2;vector-effect:non-scaling-stroke}
.empty{background:#fff;border:1px solid #d1d9e0;border-radius:6px;padding:16px;color:#59636e}
@media (max-width:700px){main{padding:12px}thead{display:none}table,tbody,tr,td{display:block;width:auto}
tr{border-bottom:1px solid #d1d9e0;padding:6px 0}td{border:0;padding:2px 10px;text-align:left}
td.n{text-align:left}td::before{content:attr(data-label) \": \";color:#59636e;font-family:system-ui,sans-serif;font-weight:normal}
td.none::before{content:none}svg.spark{display:inline-block;vertical-align:middle}}
";

/// The live part: polls the JSON once a second and sets text only (and
/// the sparklines' numeric points), never HTML.
const JS: &str = r#"(function(){
var b=document.body,json=b.dataset.json,live=document.getElementById('live');
function $(id){return document.getElementById(id);}
function set(id,t){var e=$(id);if(e)e.textContent=t;}
function q(tr,sel,t){var e=tr.querySelector(sel);if(e)e.textContent=t;}
function human(us){var n=us*1000,v,u;if(n<1e3){v=n;u='ns';}else if(n<1e6){v=n/1e3;u='\u00b5s';}
 else if(n<1e9){v=n/1e6;u='ms';}else{v=n/1e9;u='s';}return v.toFixed(v>=100||u==='ns'?0:(v>=10?1:2))+u;}
function lat(us,floor){return us==null?'\u2013':(us<=floor?'< '+floor+'\u00b5s':human(us));}
function rate(r){return r.toFixed(r>=100?0:(r>=10?1:2));}
function age(ms){var s=Math.floor(ms/1000);if(ms<1000)return ms+'ms';if(ms<60000)return s+'s';
 if(ms<3600000)return Math.floor(s/60)+'m'+(s%60)+'s';return Math.floor(s/3600)+'h'+Math.floor(s%3600/60)+'m';}
function bytes(n){if(n<1024)return n+' B';var v=n,us=['KiB','MiB','GiB'];for(var i=0;i<3;i++){v/=1024;if(v<1024||i===2)return v.toFixed(1)+' '+us[i];}}
function spark(svg,pts){if(!svg)return;var max=Math.max.apply(null,[1].concat(pts)),n=pts.length;
 svg.querySelector('polyline').setAttribute('points',pts.map(function(v,i){return (60-n+i)+','+(16-15*v/max).toFixed(1);}).join(' '));}
function cell(tr,label,text,cls){var td=document.createElement('td');td.textContent=text;td.dataset.label=label;if(cls)td.className=cls;tr.appendChild(td);}
function render(v){
 set('uptime',age(v.uptime_ms));set('inflight',String(v.in_flight));set('open',String(v.connections_open));
 set('unknown',String(v.unknown_calls.calls));var c=0,e=0;
 v.services.forEach(function(s){s.methods.forEach(function(m){c+=m.calls;e+=m.errors;});});
 set('served',c+(c===1?' call':' calls'));set('failed',e+(e===1?' error':' errors'));set('unknown-1m',String(v.unknown_calls.last_minute));
 var rows={};Array.prototype.forEach.call(document.querySelectorAll('tr[data-method]'),function(tr){rows[tr.dataset.method]=tr;});
 v.services.forEach(function(s){s.methods.forEach(function(m){var tr=rows[s.name+'.'+m.name],w=m.last_minute;if(!tr)return;
  tr.dataset.calls=String(m.calls);tr.dataset.errors=String(m.errors);
  q(tr,'.c-calls',String(m.calls));q(tr,'.c-errors',String(m.errors));
  tr.querySelector('.c-errors').className='n c-errors '+(m.errors>0?'bad':'zero');
  q(tr,'.c-rate',rate(w.calls_per_s));q(tr,'.c-err',w.calls?(w.error_rate*100).toFixed(1)+'%':'\u2013');
  q(tr,'.c-p50',lat(w.p50_us,v.floor_us));q(tr,'.c-p99',lat(w.p99_us,v.floor_us));q(tr,'.c-mean',lat(w.mean_us,v.floor_us));
  spark(tr.querySelector('svg'),w.spark);});});
 var tb=$('conns');while(tb.firstChild)tb.removeChild(tb.firstChild);
 if(!v.connections.length){var tr=document.createElement('tr');cell(tr,'','No other connection is open.','none');tr.firstChild.colSpan=7;tb.appendChild(tr);}
 v.connections.forEach(function(c){var tr=document.createElement('tr');tr.dataset.peer=c.peer;
  cell(tr,'Peer',c.peer,'t');cell(tr,'Listener',c.listener,'t');cell(tr,'Codec',c.codec==null?'(handshake)':c.codec);
  cell(tr,'Age',age(c.age_ms),'n');cell(tr,'Calls',String(c.calls),'n');cell(tr,'Read',bytes(c.read_bytes),'n');
  cell(tr,'Written',bytes(c.written_bytes),'n');tb.appendChild(tr);});}
function poll(){fetch(json,{cache:'no-store'}).then(function(r){if(!r.ok)throw new Error('HTTP '+r.status);return r.json();})
 .then(function(v){render(v);live.textContent='Live: updated '+new Date().toLocaleTimeString()+'; rates and latencies cover the last '+age(v.window_ms)+'.';})
 .catch(function(e){live.textContent='Reconnecting ('+e.message+')...';})
 .then(function(){setTimeout(poll,1000);});}
poll();})();"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(latency(Some(0.6)), "< 2µs");
        assert_eq!(latency(Some(FLOOR_US)), "< 2µs");
        assert_eq!(latency(Some(87.4)), "87.4µs");
        assert_eq!(latency(None), "\u{2013}");
        assert_eq!(rate(1234.4), "1234");
        assert_eq!(rate(0.5), "0.50");
        assert_eq!(age(250_000), "4m10s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(spark_points(&[0.0, 2.0]), "58,16.0 59,1.0");
        // More points than a minute's: the last 60, from x = 0.
        let many = spark_points(&[1.0; 70]);
        assert!(
            many.starts_with("0,1.0 ") && many.ends_with(" 59,1.0"),
            "{many}"
        );
    }
}
