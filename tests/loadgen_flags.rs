//! `examples/loadgen.rs` refuses what it does not understand (issue 17): an
//! unknown flag, a bad value or a meaningless combination ends it at once
//! with exit code 2 and the usage, before it serves or loads anything.
//! `cargo test` builds the examples next to the test binaries (run alone,
//! `cargo test --test loadgen_flags` uses the last `cargo build --examples`).

use std::path::PathBuf;
use std::process::Command;

fn loadgen() -> PathBuf {
    // target/debug/deps/loadgen_flags-HASH -> target/debug/examples/loadgen
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(format!("loadgen{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is not built", path.display());
    path
}

fn refused(args: &[&str], says: &str) {
    let out = Command::new(loadgen()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(
        stderr.contains("usage"),
        "{args:?} gives no usage: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
}

#[test]
fn unknown_flags_and_bad_values_are_refused_with_the_usage() {
    refused(
        &["load", "--addr", "127.0.0.1:1", "--rate", "100"],
        "--rate",
    );
    refused(
        &["load", "--addr", "127.0.0.1:1", "--bogus", "1"],
        "--bogus",
    );
    refused(&["serve", "--conns", "4"], "--conns");
    refused(
        &["load", "--addr", "127.0.0.1:1", "--conns", "0"],
        "--conns",
    );
    refused(
        &["load", "--addr", "127.0.0.1:1", "--secs", "abc"],
        "--secs",
    );
    refused(&["load", "--addr", "127.0.0.1:1", "--codec", "xml"], "xml");
    refused(
        &[
            "load",
            "--addr",
            "127.0.0.1:1",
            "--secs",
            "1",
            "--secs",
            "2",
        ],
        "twice",
    );
    refused(&["load", "--addr"], "--addr needs a value");
    refused(&["fly"], "fly");
}
