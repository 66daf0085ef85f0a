//! The registry's page in a real browser (issue 21): headless Chromium
//! (Debian's `chromium`, which `.ci/run` installs) driven over the
//! DevTools protocol. The page lists a registered instance with its
//! metadata shown as text (a registered `<script>` never runs); an
//! instance that registers later appears without a reload; one that stops
//! beating fades out within its TTL; the page reads without JavaScript and
//! on a phone-sized window. Screenshots go to `target/ui-screens/` for a
//! person to look at (nothing is asserted on pixels).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use geerpc::registration::RegisterOptions;
use geerpc::registry::HttpRegistrar;
use geerpc::Registry;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// `$CHROME`, else `chromium` (or `chromium-browser`) on the PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROME") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is not installed: the browser tests need it. Install it with \
                 `apt-get install chromium` (.ci/run does this), or point CHROME at a \
                 Chrome or Chromium binary."
            )
        })
}

fn browser(width: u32, height: u32) -> Browser {
    Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium()))
            .headless(true)
            // Root in CI containers: Chromium's sandbox needs user namespaces.
            .sandbox(false)
            .window_size(Some((width, height)))
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .expect("start headless Chromium")
}

/// Evaluates `js` in the page; its value as JSON.
fn eval(tab: &Tab, js: &str) -> serde_json::Value {
    tab.evaluate(js, false)
        .unwrap_or_else(|e| panic!("evaluate {js}: {e}"))
        .value
        .unwrap_or(serde_json::Value::Null)
}

/// Polls the page until `js` is true (the page signals nothing to a test),
/// or panics with `what` after `limit`.
fn wait_true(tab: &Tab, js: &str, limit: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        if eval(tab, js) == serde_json::Value::Bool(true) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screenshot(tab: &Tab, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screens");
    std::fs::create_dir_all(&dir).unwrap();
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

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
    );
    assert!(took < Duration::from_secs(3), "appeared after {took:?}");
    screenshot(&tab, "registry.png");
    let took = wait_true(
        &tab,
        &format!("{r} === null || {r}.classList.contains('gone')", r = row(b)),
        ttl + Duration::from_secs(5),
        "the expired instance fading out",
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
