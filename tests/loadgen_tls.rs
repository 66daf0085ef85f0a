//! `examples/loadgen.rs`'s security flags end to end (issue 19): `serve`
//! over mutual TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`)
//! registering itself as `tls@HOST:PORT` with an HTTPS registry that wants
//! a token (`--registry-token-file`, `--registry-ca`); `load` through that
//! registry with a client certificate (`--tls-ca`, `--tls-cert`,
//! `--tls-key`), and refused without one. Certificates are made here with
//! rcgen. `cargo test` builds the example next to the test binaries (run
//! alone, `cargo test --test loadgen_tls` uses the last `cargo build
//! --examples`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use geerpc::{Registry, RegistryDiscovery, Token};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

fn loadgen() -> PathBuf {
    common::example("loadgen")
}

const TOKEN: &str = "loadgen-tls-write-61b0c2";

/// A CA, a certificate for 127.0.0.1 (the server's and the registry's)
/// and a client certificate, as PEM files, and the registry token file.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(test: &str) -> Files {
        let dir =
            std::env::temp_dir().join(format!("geerpc-loadgen-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "loadgen test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".into()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut cp = CertificateParams::new(vec!["loadgen.client".into()]).unwrap();
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = cp.signed_by(&client_key, &ca).unwrap();
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server.pem()),
            ("server.key", server_key.serialize_pem()),
            ("client.pem", client.pem()),
            ("client.key", client_key.serialize_pem()),
            ("token", format!("{TOKEN}\n")),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `loadgen serve`, killed when dropped.
/// Starts `loadgen serve ARGS`; returns it and the address it serves on.
fn serve(args: &[&str]) -> (common::Serving, String) {
    let served = common::serve_example("loadgen", args);
    let addr = served.addr.clone();
    (served, addr)
}

fn load(args: &[&str]) -> std::process::Output {
    Command::new(loadgen())
        .arg("load")
        .args(args)
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn serve_and_load_over_mutual_tls_through_an_https_registry_with_a_token() {
    common::init_log();
    let f = Files::new("serve");
    let registry = Registry::builder()
        .addr("127.0.0.1:0")
        .write_token(Token::from_file(f.file("token")).unwrap())
        .tls_pem_files(f.file("server.pem"), f.file("server.key"))
        .start()
        .unwrap();
    let url = registry.url().to_string();
    let (ca, cert, key, token) = (
        f.path("ca.pem"),
        f.path("client.pem"),
        f.path("client.key"),
        f.path("token"),
    );
    let (_served, addr) = serve(&[
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        path(&f.file("server.pem")),
        "--tls-key",
        path(&f.file("server.key")),
        "--tls-client-ca",
        &ca,
        "--registry",
        &url,
        "--registry-token-file",
        &token,
        "--registry-ca",
        &ca,
    ]);
    assert!(addr.starts_with("tls@127.0.0.1:"), "{addr}");
    // Registered as what it serves: a tls@ address.
    let d = RegistryDiscovery::builder(&url)
        .tls_ca_file(&ca)
        .build()
        .unwrap();
    common::wait_for(&d, Duration::from_secs(20), |s| {
        s.instances.iter().any(|i| i.addr == addr)
    });

    // Through the registry, with a client certificate: every call good.
    let out = load(&[
        "--registry",
        &url,
        "--registry-ca",
        &ca,
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--secs",
        "0.3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(line["calls"].as_f64().unwrap() > 0.0, "{line}");
    assert_eq!(line["errors"].as_f64(), Some(0.0), "{line}");

    // Straight to the address without a client certificate: every call
    // refused (the server wants one), none good.
    let out = load(&["--addr", &addr, "--tls-ca", &ca, "--secs", "0.3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(line["calls"].as_f64().unwrap() > 0.0, "{line}");
    assert_eq!(line["errors"], line["calls"], "{line}");
    assert_eq!(line["goodput"].as_f64(), Some(0.0), "{line}");
}

#[test]
fn tls_flags_that_do_not_go_together_are_refused() {
    let f = Files::new("flags");
    let (cert, ca) = (f.path("server.pem"), f.path("ca.pem"));
    for (args, says) in [
        (
            vec!["serve", "--addr", "127.0.0.1:0", "--tls-cert", &cert],
            "--tls-cert and --tls-key go together",
        ),
        (
            vec!["serve", "--addr", "127.0.0.1:0", "--tls-client-ca", &ca],
            "--tls-client-ca needs --tls-cert and --tls-key",
        ),
        (
            vec!["load", "--addr", "tls@127.0.0.1:1", "--tls-key", &cert],
            "--tls-cert and --tls-key go together",
        ),
        (
            vec![
                "load",
                "--addr",
                "tls@127.0.0.1:1",
                "--tls-ca",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem",
        ),
    ] {
        let out = Command::new(loadgen()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
