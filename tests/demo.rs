//! The demo (`cargo run --example demo`) runs here in-process, and what it
//! prints is checked line by line.

#[path = "../examples/demo.rs"]
mod demo;

use std::time::{Duration, Instant};

#[test]
fn the_demo_runs_the_articles_scenario_and_says_who_answered() {
    let _ = env_logger::builder().is_test(true).try_init();
    let t0 = Instant::now();
    let mut out = Vec::new();
    demo::run(&mut out).expect("demo runs");
    let took = t0.elapsed();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let find = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(prefix))
            .collect()
    };

    assert_eq!(
        find("registry listening on http://127.0.0.1:").len(),
        1,
        "{text}"
    );
    let servers: Vec<String> = find("server tcp@127.0.0.1:")
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    assert_eq!(servers.len(), 2, "{text}");
    let seen = find("discovery sees 2 instances: ");
    assert_eq!(seen.len(), 1, "{text}");
    for s in &servers {
        assert!(seen[0].contains(s.as_str()), "{text}");
    }

    for i in 0..5i64 {
        let sum = i + i * i;
        let call = find(&format!(
            "call Foo.Sum {i} + {} = {sum} (answered by tcp@",
            i * i
        ));
        assert_eq!(call.len(), 1, "call {i} in:\n{text}");
        assert!(
            servers.iter().any(|s| call[0].ends_with(&format!("{s})"))),
            "{}",
            call[0]
        );
        let bc = find(&format!("broadcast Foo.Sum {i} + {} = {sum} ", i * i));
        assert_eq!(bc.len(), 1, "broadcast {i} in:\n{text}");
    }
    for i in [0, 1] {
        assert_eq!(
            find(&format!("broadcast Foo.Sleep {i}s: ok")).len(),
            1,
            "{text}"
        );
    }
    for i in [3, 4] {
        let e = find(&format!("broadcast Foo.Sleep {i}s: error: "));
        assert_eq!(e.len(), 1, "{text}");
        assert!(
            e[0].contains("timeout") && e[0].contains("expect within 2s"),
            "{}",
            e[0]
        );
    }
    // Sleep(2s) under a 2 s timeout may go either way, but it is reported.
    assert_eq!(find("broadcast Foo.Sleep 2s: ").len(), 1, "{text}");
    assert_eq!(
        find("servers deregistered (0 left), registry stopped").len(),
        1,
        "{text}"
    );
    assert_eq!(lines.len(), 1 + 2 + 1 + 5 + 5 + 5 + 1, "{text}");
    assert!(took < Duration::from_secs(15), "demo took {took:?}");
}
