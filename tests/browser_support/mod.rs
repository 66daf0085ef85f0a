//! The browser of the page tests (tests/ui_browser.rs, the registry's;
//! tests/ui_server_browser.rs, the server's): headless Chromium (Debian's
//! `chromium`, which `.ci/run` installs) driven over the DevTools protocol
//! by `headless_chrome`, and what the tests do with a page: evaluate,
//! wait for a condition, take a screenshot for a person to look at.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// `$CHROME`, else `chromium` (or `chromium-browser`) on the PATH.
pub fn chromium() -> PathBuf {
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

pub fn browser(width: u32, height: u32) -> Browser {
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
pub fn eval(tab: &Tab, js: &str) -> serde_json::Value {
    tab.evaluate(js, false)
        .unwrap_or_else(|e| panic!("evaluate {js}: {e}"))
        .value
        .unwrap_or(serde_json::Value::Null)
}

/// Polls the page until `js` is true (the page signals nothing to a
/// test), or panics with `what` and the value of `show` after `limit`.
pub fn wait_true(tab: &Tab, js: &str, limit: Duration, what: &str, show: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        if eval(tab, js) == serde_json::Value::Bool(true) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; {show} = {}",
            eval(tab, show)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn screenshot(tab: &Tab, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screens");
    std::fs::create_dir_all(&dir).unwrap();
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}
