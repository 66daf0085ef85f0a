//! The server's page (`/debug/geerpc`, issue 21) in a real browser:
//! headless Chromium (Debian's `chromium`, which `.ci/run` installs)
//! driven over the DevTools protocol, as tests/ui_browser.rs does for the
//! registry's. The page lists the services; call counts, calls to unknown
//! names and new connections show without a reload; it reads without
//! JavaScript and on a phone-sized window; `debug_pages(false)` turns it
//! off. Screenshots go to `target/ui-screens/` for a person to look at
//! (nothing is asserted on pixels).

mod browser_support;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use browser_support::{browser, eval, screenshot, wait_true};
use geerpc::{Client, Server};

use common::Args;

/// A plain HTTP/1.0 GET on the RPC port: (status line, body).
fn get(target: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn sum(client: &Client, n: i64) {
    for i in 0..n {
        let got: i64 = client
            .call("Arith.Sum", &Args { num1: i, num2: 1 })
            .unwrap();
        assert_eq!(got, i + 1);
    }
}

/// The RPC connections' rows (codec known: not the browser's own).
const RPC_ROWS: &str = "Array.from(document.querySelectorAll('#conns tr[data-peer]'))\
    .filter(r => r.cells[2].textContent.startsWith('application/'))";

#[test]
fn the_server_page_goes_live_in_a_real_browser() {
    common::init_log();
    let server = common::start_server();
    let target = server.addr().target().to_string();
    let client = Client::dial(server.addr()).unwrap();
    sum(&client, 3);

    let browser = browser(1280, 900);
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("http://{target}/debug/geerpc"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_true(
        &tab,
        "document.getElementById('live').textContent.startsWith('Live')",
        Duration::from_secs(10),
        "the page going live",
        "document.getElementById('live').textContent",
    );
    // Set after the load: gone if the page reloaded.
    eval(&tab, "window.__loaded_once = 1");
    for svc in ["Arith", "Echo"] {
        assert_eq!(
            eval(&tab, &format!("document.getElementById('{svc}') !== null")),
            true,
            "{svc}"
        );
    }
    let sum_row = "document.querySelector('tr[data-method=\"Arith.Sum\"]')";
    assert_eq!(
        eval(
            &tab,
            &format!("{sum_row}.querySelector('.c-calls').textContent")
        ),
        "3"
    );
    // The client's connection, with its 3 calls.
    wait_true(
        &tab,
        &format!("{RPC_ROWS}.map(r => r.cells[4].textContent).join() === '3'"),
        Duration::from_secs(10),
        "the client's connection",
        &format!("{RPC_ROWS}.map(r => r.textContent).join('|')"),
    );

    // More calls, a call to an unknown method and a second connection:
    // all of it shows without a reload.
    sum(&client, 5);
    let e = client.call::<_, i64>("Arith.Nope", &Args { num1: 0, num2: 0 });
    assert!(e.is_err());
    let other = Client::dial(server.addr()).unwrap();
    sum(&other, 1);
    let took = wait_true(
        &tab,
        &format!(
            "{sum_row}.querySelector('.c-calls').textContent === '9' && \
             {sum_row}.dataset.calls === '9' && \
             document.getElementById('unknown').textContent === '1' && \
             document.getElementById('served').textContent === '9 calls' && \
             {RPC_ROWS}.length === 2"
        ),
        Duration::from_secs(10),
        "calls, an unknown call and a connection appearing",
        &format!(
            "[{sum_row}.querySelector('.c-calls').textContent, \
             document.getElementById('unknown').textContent, {RPC_ROWS}.length]"
        ),
    );
    // A poll a second: within a few of them even on a loaded machine.
    assert!(took < Duration::from_secs(5), "updated after {took:?}");
    assert_eq!(eval(&tab, "window.__loaded_once === 1"), true, "reloaded");
    // The last minute: a rate and a latency for the method called.
    assert_ne!(
        eval(
            &tab,
            &format!("{sum_row}.querySelector('.c-rate').textContent")
        ),
        "0.00"
    );
    assert_ne!(
        eval(
            &tab,
            &format!("{sum_row}.querySelector('.c-p50').textContent")
        ),
        "\u{2013}"
    );
    screenshot(&tab, "server.png");
}

#[test]
fn the_server_page_reads_without_javascript_on_a_phone_and_turns_off() {
    common::init_log();
    let server = common::start_server();
    let target = server.addr().target().to_string();
    let client = Client::dial(server.addr()).unwrap();
    sum(&client, 2);
    assert!(client.call::<_, i64>("Nope.Nope", &()).is_err());

    // Without JavaScript: everything is in the HTML as served.
    let (status, html) = get(&target, "/debug/geerpc");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(
        html.contains("data-method=\"Arith.Sum\" data-calls=\"2\""),
        "{html}"
    );
    assert!(html.contains("<td class=\"n c-calls\" data-label=\"Calls\">2</td>"));
    assert!(html.contains("unknown services or methods: <span id=\"unknown\">1</span>"));
    assert!(html.contains(&format!("geerpc {}", env!("CARGO_PKG_VERSION"))));
    assert!(html.contains("up <span id=\"uptime\">"));
    assert!(
        html.contains("<td data-label=\"Codec\">application/"),
        "{html}"
    );
    assert!(html.contains("<polyline points="));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));

    // The monitor samples the counters once a second: the sparkline
    // shows the calls within a few seconds (polled, bounded).
    let t0 = Instant::now();
    loop {
        let (_, body) = get(&target, "/debug/geerpc.json");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        let m = &doc["services"][0]["methods"];
        let sum = m.as_array().unwrap().iter().find(|m| m["name"] == "Sum");
        let w = &sum.unwrap()["last_minute"];
        assert_eq!(w["calls"], 2, "{doc}");
        assert_eq!(doc["unknown_calls"]["last_minute"], 1, "{doc}");
        let spark: Vec<f64> = serde_json::from_value(w["spark"].clone()).unwrap();
        if spark.iter().any(|&v| v > 0.0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no sparkline: {doc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A phone-sized window: no sideways scrolling.
    let browser = browser(390, 800);
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("http://{target}/debug/geerpc"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_true(
        &tab,
        "document.getElementById('live').textContent.startsWith('Live')",
        Duration::from_secs(10),
        "the page going live",
        "document.getElementById('live').textContent",
    );
    assert_eq!(
        eval(
            &tab,
            "document.documentElement.scrollWidth <= window.innerWidth"
        ),
        true
    );
    screenshot(&tab, "server-phone.png");

    // Turned off: the page's paths are 404 like any unknown path; RPC
    // and the metrics are served as before.
    let off = Server::builder().debug_pages(false).build();
    let off = common::start_with(off);
    let off_target = off.addr().target().to_string();
    for path in ["/debug/geerpc", "/debug/rpc", "/debug/geerpc.json"] {
        let (status, _) = get(&off_target, path);
        assert_eq!(status, "HTTP/1.0 404 Not Found", "{path}");
    }
    let (status, _) = get(&off_target, "/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK");
    let c = Client::dial(off.addr()).unwrap();
    sum(&c, 1);
}
