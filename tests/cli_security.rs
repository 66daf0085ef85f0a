//! The `geerpc` command's security flags end to end: the registry's
//! tokens from files (`--token-file`, `--read-token-file`,
//! `--registry-token-file`), an HTTPS registry (`--tls-cert`, `--tls-key`,
//! `--tls-ca`), and calls to `tls@` servers, with mutual TLS
//! (`--tls-ca`, `--tls-cert`, `--tls-key`). No output ever shows a token.
#![cfg(feature = "cli")]

mod cli_support;
mod common;

use cli_support::*;
use common::*;
use geerpc::registration::RegisterOptions;

/// A fresh directory for this test's files (tokens, certificates).
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("geerpc-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const WRITE_TOKEN: &str = "cli-write-7d1e0b9a";
const READ_TOKEN: &str = "cli-read-52c4f8e3";
const WRONG_TOKEN: &str = "cli-wrong-00000000";

/// `geerpc registry --token-file --read-token-file`: a heartbeat with the
/// write token registers; `list` and `call` read with
/// `--registry-token-file`; without it or with a wrong one they fail
/// (exit 5) with a hint, and no output ever shows a token.
#[test]
fn registry_tokens_come_from_files_and_guard_writes_and_reads() {
    init_log();
    let dir = scratch("tokens");
    let (w, r, x) = (dir.join("write"), dir.join("read"), dir.join("wrong"));
    std::fs::write(&w, format!("{WRITE_TOKEN}\n")).unwrap();
    std::fs::write(&r, READ_TOKEN).unwrap();
    std::fs::write(&x, WRONG_TOKEN).unwrap();
    let (w, r, x) = (
        w.to_str().unwrap(),
        r.to_str().unwrap(),
        x.to_str().unwrap(),
    );
    let (child, url) = start_registry(&["--token-file", w, "--read-token-file", r]);

    let server = start_server();
    let addr = server.addr().to_string();
    let _hb = geerpc::registry::HttpRegistrar::new(&url)
        .unwrap()
        .token(geerpc::Token::from_file(w).unwrap())
        .register_server(&server, RegisterOptions::new())
        .unwrap();

    for token in [r, w] {
        let out = list_until(
            &["list", "--registry", &url, "--registry-token-file", token],
            |o| o.contains(&addr),
        );
        assert!(out.starts_with(&addr), "{out}");
    }
    let o = geerpc(&[
        "call",
        "--registry",
        &url,
        "--registry-token-file",
        r,
        "Arith.Sum",
        SUM,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "42");

    // Without the token, and with a wrong one: refused, with a hint.
    let no_token: [&[&str]; 2] = [
        &["list", "--registry", &url],
        &["call", "--registry", &url, "Arith.Sum", SUM],
    ];
    for args in no_token {
        for extra in [&[][..], &["--registry-token-file", x][..]] {
            let mut args = args.to_vec();
            args.extend_from_slice(extra);
            let o = geerpc(&args);
            assert_code(&o, 5);
            let err = stderr(&o);
            assert!(err.contains("401") && err.contains(&url), "{err}");
            assert!(
                err.contains("hint: the registry wants a bearer token"),
                "{err}"
            );
            for t in [WRITE_TOKEN, READ_TOKEN, WRONG_TOKEN] {
                assert!(!err.contains(t) && !stdout(&o).contains(t), "{err}");
            }
        }
    }

    // The registry itself logs refusals (warn) without the tokens.
    let (status, log) = terminate(child, "-TERM");
    assert!(status.success());
    assert!(log.contains("401"), "{log}");
    for t in [WRITE_TOKEN, READ_TOKEN, WRONG_TOKEN] {
        assert!(!log.contains(t), "{log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn token_flags_are_checked_before_anything_runs() {
    let dir = scratch("badtokens");
    let missing = dir.join("missing");
    let missing = missing.to_str().unwrap();
    // An unreadable token file: exit 10 naming the file.
    let o = geerpc(&["registry", "--addr", "127.0.0.1:0", "--token-file", missing]);
    assert_code(&o, 10);
    assert!(stderr(&o).contains(missing), "{}", stderr(&o));
    // A read token alone would leave writes open: a usage error.
    let o = geerpc(&[
        "registry",
        "--addr",
        "127.0.0.1:0",
        "--read-token-file",
        missing,
    ]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("--token-file"), "{}", stderr(&o));
    // A registry token for etcd: a usage error.
    let o = geerpc(&[
        "list",
        "--etcd",
        "127.0.0.1:1",
        "--registry-token-file",
        missing,
    ]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("--registry-token-file"),
        "{}",
        stderr(&o)
    );
    // No flag takes a token's value itself.
    let help = stdout(&geerpc(&["list", "--help"]));
    assert!(help.contains("--registry-token-file <FILE>"), "{help}");
    assert!(!help.contains("--token <"), "{help}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A CA and a certificate it signs for 127.0.0.1, as PEM files in `dir`:
/// (ca, cert, key).
fn test_pki(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

/// `geerpc registry --tls-cert --tls-key --token-file` serves HTTPS;
/// `list` and `call` reach it with `--tls-ca` (and the token), and
/// without `--tls-ca` fail (exit 5) with a hint naming it.
#[test]
fn an_https_registry_with_a_token_through_the_cli() {
    init_log();
    let dir = scratch("https");
    let (ca, cert, key) = test_pki(&dir);
    let token = dir.join("token");
    std::fs::write(&token, WRITE_TOKEN).unwrap();
    let token = token.to_str().unwrap();
    let (child, url) = start_registry(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--token-file",
        token,
    ]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let server = start_server();
    let addr = server.addr().to_string();
    let _hb = geerpc::registry::HttpRegistrar::new(&url)
        .unwrap()
        .token(geerpc::Token::new(WRITE_TOKEN).unwrap())
        .tls_ca_file(&ca)
        .register_server(&server, RegisterOptions::new())
        .unwrap();
    let out = list_until(&["list", "--registry", &url, "--tls-ca", &ca], |o| {
        o.contains(&addr)
    });
    assert!(out.starts_with(&addr), "{out}");
    let o = geerpc(&[
        "call",
        "--registry",
        &url,
        "--tls-ca",
        &ca,
        "--registry-token-file",
        token,
        "Arith.Sum",
        SUM,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "42");

    // Without the CA: the certificate is not trusted, and the hint says
    // which flag names it.
    let o = geerpc(&["list", "--registry", &url]);
    assert_code(&o, 5);
    let err = stderr(&o);
    assert!(
        err.contains("hint: the registry's certificate is not trusted: --tls-ca"),
        "{err}"
    );
    assert!(!err.contains("serves plain HTTP"), "{err}");

    let (status, _) = terminate(child, "-TERM");
    assert!(status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `geerpc call --addr tls@...` with `--tls-ca`; against a server that
/// requires client certificates, with `--tls-cert` and `--tls-key`. An
/// untrusted server and a missing client certificate each fail with a
/// message saying so.
#[test]
fn calls_to_tls_servers_with_a_ca_and_a_client_certificate() {
    init_log();
    let dir = scratch("rpc-tls");
    let (ca, cert, key) = test_pki(&dir);
    let tls = geerpc::wire::ServerTls::files(&cert, &key).unwrap();
    let server = geerpc::Server::new();
    server.register(arith()).unwrap();
    let plain_tls = server.listen_tls("tls@127.0.0.1:0", &tls).unwrap();
    let addr = plain_tls.addr().to_string();
    assert!(addr.starts_with("tls@"), "{addr}");
    let o = geerpc(&["call", "--addr", &addr, "--tls-ca", &ca, "Arith.Sum", SUM]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "42");
    // The webpki roots do not know the test CA.
    let o = geerpc(&["call", "--addr", &addr, "Arith.Sum", SUM]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));

    // Mutual TLS: the server wants a certificate from the same CA.
    let mtls = geerpc::wire::ServerTls::files(&cert, &key)
        .unwrap()
        .require_client_cert_file(&ca)
        .unwrap();
    let server = geerpc::Server::new();
    server.register(arith()).unwrap();
    let running = server.listen_tls("tls@127.0.0.1:0", &mtls).unwrap();
    let addr = running.addr().to_string();
    let o = geerpc(&["call", "--addr", &addr, "--tls-ca", &ca, "Arith.Sum", SUM]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("client certificate"), "{}", stderr(&o));
    let o = geerpc(&[
        "call",
        "--addr",
        &addr,
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "Arith.Sum",
        SUM,
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "42");
    // The two go together.
    let o = geerpc(&[
        "call",
        "--addr",
        &addr,
        "--tls-cert",
        &cert,
        "Arith.Sum",
        SUM,
    ]);
    assert_code(&o, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
