//! The registry's page in a real browser (issue 21): headless Chromium
//! (Debian's `chromium`, which `.ci/run` installs) driven over the
//! DevTools protocol. The page lists a registered instance with its
//! metadata shown as text (a registered `<script>` never runs); an
//! instance that registers later appears without a reload; one that stops
//! beating fades out within its TTL; the page reads without JavaScript and
//! on a phone-sized window. Screenshots go to `target/ui-screens/` for a
//! person to look at (nothing is asserted on pixels).

mod browser_support;
mod common;

use std::time::Duration;

use browser_support::{browser, eval, screenshot, wait_true};
use geerpc::registration::RegisterOptions;
use geerpc::registry::HttpRegistrar;
use geerpc::Registry;

/// The selector of `addr`'s row, in a JS string.
fn row(addr: &str) -> String {
    format!("document.querySelector('tr[data-addr=\"{addr}\"]')")
}

#[test]
fn the_registry_page_follows_instances_live_in_a_real_browser() {
    common::init_log();
    let ttl = Duration::from_secs(2);
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .ttl(ttl)
        .start()
        .unwrap();
    let url = reg.url().to_string();
    let server = common::start_server();
    let a = server.addr().to_string();
    let evil = "<img src=x onerror=\"window.__pwned=1\">";
    let _hb = HttpRegistrar::new(&url)
        .unwrap()
        .register_server(&server, RegisterOptions::new().metadata("zone", evil))
        .unwrap();

    let browser = browser(1024, 768);
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("{url}/ui"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_true(
        &tab,
        "document.getElementById('live').textContent.startsWith('Live')",
        Duration::from_secs(10),
        "the page going live",
        "document.getElementById('services').textContent",
    );
    // Listed under its service, its metadata as text: the markup a peer
    // registered is shown, not run.
    let cells = eval(
        &tab,
        &format!(
            "Array.from({}.cells).map(c => c.textContent).join('|')",
            row(&a)
        ),
    );
    let cells = cells.as_str().unwrap();
    assert!(cells.starts_with(&format!("{a}|1|zone={evil}|")), "{cells}");
    assert_eq!(eval(&tab, "window.__pwned === undefined"), true);
    assert_eq!(
        eval(
            &tab,
            &format!("{}.closest('section').dataset.service", row(&a))
        ),
        "Arith"
    );

    // Registered after the page loaded, by one POST and no heartbeat: it
    // appears without a reload, then expires and fades out.
    let b = "tcp@127.0.0.1:1";
    let status = common::post_json(&url, b, serde_json::json!({"services": ["Echo"]}));
    assert_eq!(status, 200);
    let took = wait_true(
        &tab,
        &format!("{} !== null", row(b)),
        Duration::from_secs(5),
        "the new instance appearing",
        "document.getElementById('services').textContent",
    );
    assert!(took < Duration::from_secs(3), "appeared after {took:?}");
    screenshot(&tab, "registry.png");
    let took = wait_true(
        &tab,
        &format!("{r} === null || {r}.classList.contains('gone')", r = row(b)),
        ttl + Duration::from_secs(5),
        "the expired instance fading out",
        "document.getElementById('services').textContent",
    );
    assert!(took <= ttl + Duration::from_secs(3), "faded after {took:?}");
    // The one that keeps beating stays, not faded.
    assert_eq!(
        eval(&tab, &format!("{}.classList.contains('gone')", row(&a))),
        false
    );
    screenshot(&tab, "registry-expired.png");
}

#[test]
fn the_registry_page_reads_without_javascript_and_on_a_phone() {
    let reg = common::start(Duration::from_secs(60));
    let url = reg.url().to_string();
    let addr = "tcp@127.0.0.1:7001";
    assert_eq!(
        common::post_json(&url, addr, serde_json::json!({"services": ["Arith"]})),
        200
    );
    // Without JavaScript: the table is in the HTML as served.
    let base = url.trim_end_matches(Registry::DEFAULT_PATH);
    let html = common::http()
        .get(&format!("{base}/"))
        .header("Accept", "text/html")
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        html.contains(&format!("<tr data-addr=\"{addr}\">")),
        "{html}"
    );
    assert!(!html.contains("src=\"http"), "an external asset: {html}");
    // A registry client given the root, not the path, gets the 404 that
    // names the path (not a page it would read as an empty list).
    let mut root = common::http().get(&format!("{base}/")).call().unwrap();
    assert_eq!(root.status(), 404);
    assert!(root
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains(Registry::DEFAULT_PATH));

    // A phone-sized window: no sideways scrolling, every row readable.
    let browser = browser(390, 800);
    let tab = browser.new_tab().unwrap();
    tab.navigate_to(&format!("{base}/"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_true(
        &tab,
        &format!("{} !== null", row(addr)),
        Duration::from_secs(10),
        "the row",
        "document.getElementById('services').textContent",
    );
    assert_eq!(
        eval(
            &tab,
            "document.documentElement.scrollWidth <= window.innerWidth"
        ),
        true
    );
    screenshot(&tab, "registry-phone.png");

    // Turned off, the page is not there.
    let off = Registry::builder()
        .addr("127.0.0.1:0")
        .ui(false)
        .start()
        .unwrap();
    let status = common::http()
        .get(&format!("{}/ui", off.url()))
        .call()
        .unwrap()
        .status();
    assert_eq!(status, 404);
}
