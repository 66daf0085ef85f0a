//! The registry's page (issue 21): `GET /` (from a browser) and
//! `GET {path}/ui` on the
//! registry's port show its services, their instances with metadata, when
//! each registered, its last heartbeat and the time left before it expires,
//! the long polls waiting, the epoch, the version and the uptime; and
//! `{path}/ui.json` the same as JSON.
//!
//! The page is one HTML document with its CSS and script inline (no
//! external asset, no CDN). The table is rendered here, so the page reads
//! without JavaScript; the script then follows the registry's own long
//! poll (`GET {path}?watch=VERSION&format=json`) and re-renders from
//! `ui.json` on every change: instances appear as they register, and
//! those that leave (deregistered, expired) fade out. Ages and time left
//! count on between changes. Everything a peer sent (addresses, services,
//! metadata) is escaped here and set as text by the script: a registered
//! `<script>` is shown, never run.
//!
//! The page obeys the registry's read token like every `GET`, and
//! [`RegistryBuilder::ui`](super::RegistryBuilder::ui) turns it off.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tiny_http::{Request, Response};

use super::http::{header, respond};
use super::Shared;

/// What the page shows, as `ui.json` serves it.
#[derive(Serialize)]
struct View {
    addr: String,
    version: &'static str,
    epoch: String,
    uptime_ms: u64,
    /// The registry's TTL; 0: entries never expire.
    ttl_ms: u64,
    /// The whole list's version: the long poll's `watch=` value.
    list_version: u64,
    watchers: usize,
    /// Wall-clock time of this view, for the script's counting.
    now_unix_ms: u64,
    instances: Vec<Row>,
}

#[derive(Serialize)]
struct Row {
    addr: String,
    weight: u32,
    services: Vec<String>,
    metadata: std::collections::BTreeMap<String, String>,
    registered_ms_ago: u64,
    beat_ms_ago: u64,
    /// `None` (null) when the registry has no TTL.
    expires_in_ms: Option<u64>,
}

/// What a `GET` path is, if it is the page's.
pub(super) enum Page {
    Html,
    Json,
}

/// Whether `rq` asks for the page: `{path}/ui`, `{path}/ui.json`, or `/`
/// from a browser. `/` is the page only for a request that accepts HTML:
/// a registry client given the registry's root instead of its path must
/// still get the `404` that names the path, not a page it would read as
/// an empty list.
pub(super) fn page(shared: &Shared, rq: &Request, path: &str) -> Option<Page> {
    if path == "/" && !shared.paths.iter().any(|p| p == "/") {
        let html = rq
            .headers()
            .iter()
            .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("text/html"));
        return html.then_some(Page::Html);
    }
    let rest = shared.paths.iter().find_map(|p| {
        path.strip_prefix(p.trim_end_matches('/'))
            .and_then(|r| r.strip_prefix('/'))
    })?;
    match rest {
        "ui" => Some(Page::Html),
        "ui.json" => Some(Page::Json),
        _ => None,
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn view(shared: &Shared) -> View {
    let now = Instant::now();
    let (rows, list_version, watchers) = {
        let st = shared.state.lock();
        (
            st.table.rows(now),
            st.table.version(None),
            st.watchers.len(),
        )
    };
    View {
        addr: shared.address.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        epoch: shared.epoch.token().to_string(),
        uptime_ms: ms(shared.epoch.uptime()),
        ttl_ms: shared.ttl_ms.parse().unwrap_or(0),
        list_version,
        watchers,
        now_unix_ms: ms(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()),
        instances: rows
            .into_iter()
            .map(|r| Row {
                addr: r.instance.addr,
                weight: r.instance.weight,
                services: r.instance.services,
                metadata: r.instance.metadata.into_iter().collect(),
                registered_ms_ago: ms(now - r.since),
                beat_ms_ago: ms(now - r.beat),
                expires_in_ms: r.expires.map(|t| ms(t.saturating_duration_since(now))),
            })
            .collect(),
    }
}

/// Answers the page's `GET`.
pub(super) fn serve(shared: &Shared, rq: Request, page: Page) {
    let v = view(shared);
    let resp = match page {
        Page::Json => Response::from_data(serde_json::to_vec(&v).expect("a view serializes"))
            .with_header(header("Content-Type", "application/json")),
        Page::Html => Response::from_data(html(shared, &v))
            .with_header(header("Content-Type", "text/html; charset=utf-8")),
    };
    // The page is live data: never from a cache.
    respond(
        shared,
        rq,
        resp.with_header(header("Cache-Control", "no-store")),
    )
}

/// `s` safe inside HTML text and double-quoted attributes.
fn esc(s: &str) -> String {
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

/// A duration as the page shows it: `850ms`, `12s`, `4m10s`, `2h3m`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{s}s"),
        60_000..3_600_000 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// The services an instance is shown under: its own, or `*` for one that
/// names none (as Go servers register: listed under a service no instance names).
fn groups(v: &View) -> Vec<(String, Vec<&Row>)> {
    let mut by: std::collections::BTreeMap<String, Vec<&Row>> = Default::default();
    for r in &v.instances {
        if r.services.is_empty() {
            by.entry("*".into()).or_default().push(r);
        }
        for s in &r.services {
            by.entry(s.clone()).or_default().push(r);
        }
    }
    by.into_iter().collect()
}

fn html(shared: &Shared, v: &View) -> Vec<u8> {
    let json_url = format!("{}/ui.json", shared.paths[0].trim_end_matches('/'));
    let mut body = String::new();
    for (service, rows) in groups(v) {
        let title = if service == "*" {
            "* (no service named: listed under any service no instance names)".to_string()
        } else {
            service.clone()
        };
        let _ = write!(
            body,
            "<section class=\"svc\" data-service=\"{}\"><h2>{} <small>{} instance{}</small></h2>\
             <table><thead><tr><th>Address</th><th>Weight</th><th>Metadata</th>\
             <th>Registered</th><th>Last heartbeat</th><th>Expires in</th></tr></thead><tbody>",
            esc(&service),
            esc(&title),
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        );
        for r in rows {
            let meta: Vec<String> = r
                .metadata
                .iter()
                .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                .collect();
            let _ = write!(
                body,
                "<tr data-addr=\"{a}\"><td class=\"addr\" data-label=\"Address\">{a}</td>\
                 <td data-label=\"Weight\">{w}</td><td data-label=\"Metadata\">{m}</td>\
                 <td data-label=\"Registered\">{reg} ago</td><td data-label=\"Last heartbeat\">{beat} ago</td>\
                 <td data-label=\"Expires in\">{exp}</td></tr>",
                a = esc(&r.addr),
                w = r.weight,
                m = meta.join(" "),
                reg = age(r.registered_ms_ago),
                beat = age(r.beat_ms_ago),
                exp = r.expires_in_ms.map_or("never".into(), age),
            );
        }
        body.push_str("</tbody></table></section>");
    }
    if v.instances.is_empty() {
        body.push_str("<p id=\"empty\">No instance is registered.</p>");
    }
    let facts = format!(
        "{addr} &middot; geerpc {ver} &middot; up {up} &middot; TTL {ttl} &middot; \
         epoch <code>{epoch}</code> &middot; <span id=\"watchers\">{w}</span> long poll{s} waiting",
        addr = esc(&v.addr),
        ver = esc(v.version),
        up = age(v.uptime_ms),
        ttl = if v.ttl_ms == 0 {
            "none".into()
        } else {
            age(v.ttl_ms)
        },
        epoch = esc(&v.epoch),
        w = v.watchers,
        s = if v.watchers == 1 { "" } else { "s" },
    );
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>geerpc registry {addr}</title><style>{CSS}</style></head>\
         <body data-json=\"{json}\" data-list=\"{list}\" data-version=\"{version}\">\
         <header><h1>geerpc registry</h1><p id=\"facts\">{facts}</p>\
         <p id=\"live\">Static view: reload for news.</p></header>\
         <main id=\"services\">{body}</main><script>{JS}</script></body></html>",
        addr = esc(&v.addr),
        json = esc(&json_url),
        list = esc(&shared.paths[0]),
        version = v.list_version,
    )
    .into_bytes()
}

const CSS: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:1rem;color:#222}\
h1{font-size:1.3rem;margin:0}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}h2 small{color:#777;font-weight:normal}\
#facts,#live{color:#555;margin:.3rem 0}code{font-size:.9em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4}.addr{font-family:monospace;word-break:break-all}\
tr{transition:opacity 2s}tr.gone{opacity:.25}tr.new{background:#eaffea}\
@media (max-width:640px){thead{display:none}tr,td{display:block}tr{border:1px solid #ddd;margin:.5rem 0;padding:.3rem}\
td{border:0;padding:.1rem .3rem}td::before{content:attr(data-label) \": \";color:#777}}";

/// The live part: follows the long poll, re-renders from `ui.json`, fades
/// out what left, counts ages on. Sets text only, never HTML.
const JS: &str = r#"(function(){
var b=document.body,json=b.dataset.json,list=b.dataset.list,version=b.dataset.version;
var live=document.getElementById('live'),main=document.getElementById('services');
var view=null,at=0,gone={};
function age(ms){ms=Math.max(0,Math.floor(ms));var s=Math.floor(ms/1000);
 if(ms<1000)return ms+'ms';if(ms<60000)return s+'s';if(ms<3600000)return Math.floor(s/60)+'m'+(s%60)+'s';
 return Math.floor(s/3600)+'h'+Math.floor(s%3600/60)+'m';}
function el(tag,text,cls){var e=document.createElement(tag);if(text!=null)e.textContent=text;if(cls)e.className=cls;return e;}
function cell(tr,label,text,cls){var td=el('td',text,cls);td.dataset.label=label;tr.appendChild(td);return td;}
function row(r,old){var tr=el('tr',null,old?'gone':null);tr.dataset.addr=r.addr;
 cell(tr,'Address',r.addr,'addr');cell(tr,'Weight',String(r.weight));
 cell(tr,'Metadata',Object.keys(r.metadata).sort().map(function(k){return k+'='+r.metadata[k];}).join(' '));
 cell(tr,'Registered','').className='reg';cell(tr,'Last heartbeat','').className='beat';cell(tr,'Expires in','').className='exp';
 tr._r=r;return tr;}
function tick(){if(!view)return;var d=Date.now()-at;
 Array.prototype.forEach.call(document.querySelectorAll('tr[data-addr]'),function(tr){var r=tr._r;if(!r)return;
  var g=tr.classList.contains('gone');
  tr.querySelector('.reg').textContent=age(r.registered_ms_ago+(g?0:d))+' ago';
  tr.querySelector('.beat').textContent=age(r.beat_ms_ago+(g?0:d))+' ago';
  tr.querySelector('.exp').textContent=g?'gone':(r.expires_in_ms==null?'never':age(r.expires_in_ms-d));});}
function render(v,fresh){var now=Date.now(),seen={},groups={};
 if(view&&fresh)view.instances.forEach(function(r){seen[r.addr]=r;});
 v.instances.forEach(function(r){delete seen[r.addr];delete gone[r.addr];
  (r.services.length?r.services:['*']).forEach(function(s){(groups[s]=groups[s]||[]).push([r,false]);});});
 Object.keys(seen).forEach(function(a){gone[a]={r:seen[a],until:now+5000};});
 Object.keys(gone).forEach(function(a){var g=gone[a];if(g.until<now){delete gone[a];return;}
  (g.r.services.length?g.r.services:['*']).forEach(function(s){(groups[s]=groups[s]||[]).push([g.r,true]);});});
 while(main.firstChild)main.removeChild(main.firstChild);
 var names=Object.keys(groups).sort();
 if(!names.length)main.appendChild(el('p','No instance is registered.')).id='empty';
 names.forEach(function(s){var sec=el('section',null,'svc');sec.dataset.service=s;
  var n=groups[s].filter(function(x){return !x[1];}).length;
  var h=el('h2',s==='*'?'* (no service named: listed under any service no instance names)':s);h.appendChild(document.createTextNode(' '));
  h.appendChild(el('small',n+' instance'+(n===1?'':'s')));sec.appendChild(h);
  var t=el('table'),hd=el('thead'),hr=el('tr');
  ['Address','Weight','Metadata','Registered','Last heartbeat','Expires in'].forEach(function(x){hr.appendChild(el('th',x));});
  hd.appendChild(hr);t.appendChild(hd);var tb=el('tbody');
  groups[s].forEach(function(x){tb.appendChild(row(x[0],x[1]));});t.appendChild(tb);sec.appendChild(t);main.appendChild(sec);});
 document.getElementById('watchers').textContent=String(v.watchers);
 if(fresh){view=v;at=now;}tick();}
function refresh(){return fetch(json,{cache:'no-store'}).then(function(r){return r.json();}).then(function(v){render(v,true);version=v.list_version;});}
function follow(){fetch(list+'?watch='+encodeURIComponent(version)+'&format=json',{cache:'no-store'})
 .then(function(r){if(!r.ok)throw new Error('HTTP '+r.status);return refresh();})
 .then(function(){live.textContent='Live: updated '+new Date().toLocaleTimeString()+'.';follow();})
 .catch(function(e){live.textContent='Reconnecting ('+e.message+')...';setTimeout(function(){refresh().then(follow,follow);},2000);});}
refresh().then(function(){live.textContent='Live.';follow();},function(e){live.textContent='Static view ('+e.message+').';});
setInterval(function(){if(Object.keys(gone).length&&view)render(view,false);tick();},1000);
})();"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_ages() {
        assert_eq!(
            esc("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(age(850), "850ms");
        assert_eq!(age(12_400), "12s");
        assert_eq!(age(250_000), "4m10s");
        assert_eq!(age(7_380_000), "2h3m");
    }
}
