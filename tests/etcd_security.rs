//! The etcd backend against secured etcd members (issue 19): a member
//! serving `https://` that requires client certificates
//! (`--client-cert-auth`), and one with etcd's user/password
//! authentication enabled. Register, discover and watch through each; a
//! token etcd stops accepting is renewed; every refusal is a clear error
//! naming the endpoint and never the password. With the `cli` feature,
//! `geerpc list --etcd` through each too (`--tls-ca`, `--tls-cert`,
//! `--tls-key`, `--etcd-user`, `--etcd-password-file`).

#[cfg(feature = "cli")]
mod cli_support;
mod common;
mod etcd_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use etcd_support::{addrs, opts, wait_for, Etcd};
use geerpc::etcd::{EtcdDiscovery, EtcdRegistrar};
use geerpc::{Discovery, Token};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

// ---------------------------------------------------------------- certificates

/// A CA and, signed by it, a server certificate for 127.0.0.1 (usable as a
/// client certificate too: etcd's gateway presents it to etcd's own gRPC
/// port when client certificates are required) and a client certificate;
/// PEM files in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(name: &str) -> Pki {
    let dir = etcd_support::unique_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    sp.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server = sp.signed_by(&server_key, &ca).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "geerpc-client");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &ca).unwrap();

    let p = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        dir,
    };
    std::fs::write(&p.ca, ca.pem()).unwrap();
    std::fs::write(&p.server_cert, server.pem()).unwrap();
    std::fs::write(&p.server_key, server_key.serialize_pem()).unwrap();
    std::fs::write(&p.client_cert, client.pem()).unwrap();
    std::fs::write(&p.client_key, client_key.serialize_pem()).unwrap();
    p
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// A ureq agent that trusts `p`'s CA and presents its client certificate:
/// the fixture's health checks.
fn tls_agent(p: &Pki) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let ca = Certificate::from_pem(&read(&p.ca)).unwrap();
    let cert = Certificate::from_pem(&read(&p.client_cert)).unwrap();
    let key = PrivateKey::from_pem(&read(&p.client_key)).unwrap();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&[ca]))
        .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .tls_config(tls)
        .build()
        .into()
}

/// One member serving `https://` with `p`'s server certificate, requiring
/// client certificates signed by `p`'s CA.
fn tls_member(p: &Pki) -> Etcd {
    let flag = |f: &str, v: &Path| [f.to_string(), v.display().to_string()];
    let mut extra = Vec::new();
    extra.extend(flag("--cert-file", &p.server_cert));
    extra.extend(flag("--key-file", &p.server_key));
    extra.extend(flag("--trusted-ca-file", &p.ca));
    extra.push("--client-cert-auth".into());
    Etcd::start(1, "https", extra, tls_agent(p))
}

// ---------------------------------------------------------------- TLS

#[test]
fn register_discover_and_watch_through_a_member_requiring_client_certificates() {
    common::init_log();
    let p = pki("mtls");
    let etcd = tls_member(&p);
    let eps = etcd.endpoints();
    assert!(eps[0].starts_with("https://"), "{eps:?}");
    let registrar = EtcdRegistrar::new(&eps)
        .unwrap()
        .tls_ca_file(&p.ca)
        .tls_client_cert_files(&p.client_cert, &p.client_key);

    let a = common::start_server();
    let reg_a = registrar
        .register_server(&a, opts(10))
        .expect("register over mutual TLS");
    let d = EtcdDiscovery::builder(&eps)
        .service("Arith")
        .tls_ca_file(&p.ca)
        .tls_client_cert_files(&p.client_cert, &p.client_key)
        .build()
        .expect("discover over mutual TLS");
    assert_eq!(addrs(&d.snapshot().unwrap()), [a.addr().to_string()]);
    #[cfg(feature = "cli")]
    {
        let path = |p: &Path| p.display().to_string();
        let (ca, cert, key) = (path(&p.ca), path(&p.client_cert), path(&p.client_key));
        let o = cli_support::geerpc(&[
            "list",
            "--etcd",
            &eps[0],
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ]);
        cli_support::assert_code(&o, 0);
        assert!(cli_support::stdout(&o).starts_with(&a.addr().to_string()));
        let o = cli_support::geerpc(&["list", "--etcd", &eps[0], "--tls-ca", &ca]);
        cli_support::assert_code(&o, 5);
        assert!(cli_support::stderr(&o).contains("none was given"));
    }

    // The watch stream runs over TLS too: a second server appears, the
    // first one leaves, both seen as they happen.
    let rx = d.watch().unwrap();
    let b = common::start_server();
    let _reg_b = registrar.register_server(&b, opts(10)).unwrap();
    let both = |s: &geerpc::xclient::Snapshot| addrs(s).len() == 2;
    assert!(
        wait_for(&d, &rx, Duration::from_secs(10), both).is_some(),
        "{:?}",
        d.snapshot()
    );
    reg_a.deregister().unwrap();
    let only_b = |s: &geerpc::xclient::Snapshot| addrs(s) == [b.addr().to_string()];
    assert!(
        wait_for(&d, &rx, Duration::from_secs(10), only_b).is_some(),
        "{:?}",
        d.snapshot()
    );
}

#[test]
fn a_member_requiring_client_certificates_refuses_clearly() {
    common::init_log();
    let p = pki("refuse");
    let other = pki("other");
    let etcd = tls_member(&p);
    let eps = etcd.endpoints();
    let ep = &eps[0];

    // No client certificate.
    let e = EtcdDiscovery::builder(&eps)
        .tls_ca_file(&p.ca)
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains(ep.as_str()), "{e}");
    assert!(e.contains("none was given"), "{e}");
    let a = common::start_server();
    let e = EtcdRegistrar::new(&eps)
        .unwrap()
        .tls_ca_file(&p.ca)
        .register_server(&a, opts(10))
        .unwrap_err()
        .to_string();
    assert!(e.contains(ep.as_str()), "{e}");
    assert!(e.contains("none was given"), "{e}");

    // A client certificate from another CA.
    let e = EtcdDiscovery::builder(&eps)
        .tls_ca_file(&p.ca)
        .tls_client_cert_files(&other.client_cert, &other.client_key)
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains(ep.as_str()), "{e}");
    assert!(e.contains("refused the client certificate given"), "{e}");

    // A server certificate from a CA not trusted (the webpki roots, or
    // another CA): the reason is said.
    for builder in [
        EtcdDiscovery::builder(&eps),
        EtcdDiscovery::builder(&eps).tls_ca_file(&other.ca),
    ] {
        let e = builder
            .tls_client_cert_files(&p.client_cert, &p.client_key)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains(ep.as_str()), "{e}");
        assert!(
            e.contains("UnknownIssuer") || e.contains("unknown issuer"),
            "{e}"
        );
    }

    // A CA file that is not there: named.
    let e = EtcdDiscovery::builder(&eps)
        .tls_ca_file(p.dir.join("missing-ca.pem"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing-ca.pem"), "{e}");

    // Plain HTTP to the TLS port.
    let plain = ep.replace("https://", "http://");
    let e = EtcdDiscovery::builder(&[plain.as_str()])
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains(&plain), "{e}");

    // And the member still serves a client that does it right.
    let d = EtcdDiscovery::builder(&eps)
        .tls_ca_file(&p.ca)
        .tls_client_cert_files(&p.client_cert, &p.client_key)
        .build()
        .expect("a right client is served after the refusals");
    assert!(d.snapshot().unwrap().instances.is_empty());
}

// ---------------------------------------------------------------- users

const ROOT_PW: &str = "root-pw-5c1e";
const PW: &str = "geerpc-pw-8d2f7a";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A plain member with authentication enabled: `root`, and `geerpc` with
/// read and write permission on the keys under `/geerpc/`. Returns it and
/// a root token.
fn auth_member() -> (Etcd, String) {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let etcd = Etcd::start(1, "http", Vec::new(), agent);
    for (path, body) in [
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": ROOT_PW}),
        ),
        ("/v3/auth/role/add", serde_json::json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
        ),
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "geerpc", "password": PW}),
        ),
        (
            "/v3/auth/role/add",
            serde_json::json!({"name": "geerpc-rw"}),
        ),
        (
            "/v3/auth/role/grant",
            serde_json::json!({"name": "geerpc-rw", "perm": {
                "permType": "READWRITE",
                "key": b64("/geerpc/"),
                "range_end": b64("/geerpc0"),
            }}),
        ),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "geerpc", "role": "geerpc-rw"}),
        ),
        ("/v3/auth/enable", serde_json::json!({})),
    ] {
        etcd.post(path, body);
    }
    let root = etcd.post(
        "/v3/auth/authenticate",
        serde_json::json!({"name": "root", "password": ROOT_PW}),
    );
    let token = root["token"].as_str().expect("a root token").to_string();
    (etcd, token)
}

/// Whether etcd's count of watchers reaches `n` within `limit`.
fn watchers_reach(etcd: &Etcd, n: i64, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let text = etcd
            .agent
            .get(format!("{}/metrics", etcd.endpoint(0)))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("etcd's watcher count") as i64;
        if count >= n {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        // Polling: etcd signals nothing when a watcher is created.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn user() -> Token {
    Token::new(PW).unwrap()
}

#[test]
fn register_discover_and_watch_as_an_etcd_user_renewing_refused_tokens() {
    common::init_log();
    let (etcd, root) = auth_member();
    let eps = etcd.endpoints();
    let registrar = EtcdRegistrar::new(&eps).unwrap().user("geerpc", user());
    let a = common::start_server();
    // A 2 s lease renewed every ~0.67 s: a renewal that failed for want
    // of a token would let it expire within the window below.
    let _reg_a = registrar
        .register_server(&a, opts(2))
        .expect("register as an etcd user");
    let d = EtcdDiscovery::builder(&eps)
        .service("Arith")
        .user("geerpc", user())
        .warmup(Duration::ZERO)
        .build()
        .expect("discover as an etcd user");
    assert_eq!(addrs(&d.snapshot().unwrap()), [a.addr().to_string()]);
    #[cfg(feature = "cli")]
    {
        let pw = etcd.dir.join("password");
        std::fs::write(&pw, format!("{PW}\n")).unwrap();
        let pw = pw.display().to_string();
        let args = [
            "--etcd",
            &eps[0],
            "--etcd-user",
            "geerpc",
            "--etcd-password-file",
            &pw,
        ];
        let o = cli_support::geerpc(&[&["list"][..], &args].concat());
        cli_support::assert_code(&o, 0);
        assert!(cli_support::stdout(&o).starts_with(&a.addr().to_string()));
        let o = cli_support::geerpc(
            &[
                &["call"][..],
                &args,
                &["Arith.Sum", r#"{"Num1":2,"Num2":3}"#],
            ]
            .concat(),
        );
        cli_support::assert_code(&o, 0);
        assert_eq!(cli_support::stdout(&o).trim(), "5");
        let o = cli_support::geerpc(&["list", "--etcd", &eps[0]]);
        cli_support::assert_code(&o, 5);
        let err = cli_support::stderr(&o);
        assert!(
            err.contains("authentication enabled") && !err.contains(PW),
            "{err}"
        );
    }
    let rx = d.watch().unwrap();
    let b = common::start_server();
    let _reg_b = registrar.register_server(&b, opts(2)).unwrap();
    let two = |s: &geerpc::xclient::Snapshot| addrs(s).len() == 2;
    assert!(wait_for(&d, &rx, Duration::from_secs(10), two).is_some());
    // Seen through the watch, not only by the lists that follow a refused
    // one: etcd counts the watcher.
    assert!(
        watchers_reach(&etcd, 1, Duration::from_secs(10)),
        "the discovery's watch is not established"
    );

    // Every token of the user dies (a password change does that, even to
    // the same password; so do an expiry and a member's restart).
    etcd.post_as(
        Some(&root),
        "/v3/auth/user/changepw",
        serde_json::json!({"name": "geerpc", "password": PW}),
    );
    // A list with a dead token: renewed, not failed.
    d.refresh().expect("a list after the token died");
    // A registration made with it, seen through the watch.
    let c = common::start_server();
    let _reg_c = registrar
        .register_server(&c, opts(2))
        .expect("a registration after the token died");
    let three = |s: &geerpc::xclient::Snapshot| addrs(s).len() == 3;
    assert!(
        wait_for(&d, &rx, Duration::from_secs(10), three).is_some(),
        "{:?}",
        d.snapshot()
    );
    // The leases of the first two stay renewed: none of the three leaves
    // within twice their TTL.
    let fewer = |s: &geerpc::xclient::Snapshot| addrs(s).len() < 3;
    assert_eq!(
        wait_for(&d, &rx, Duration::from_secs(4), fewer),
        None,
        "{:?}",
        d.snapshot()
    );
}

#[test]
fn wrong_or_missing_etcd_credentials_are_clear_errors_without_the_password() {
    common::init_log();
    let (etcd, _root) = auth_member();
    let eps = etcd.endpoints();

    let e = EtcdDiscovery::builder(&eps)
        .user("geerpc", Token::new("not-the-password").unwrap())
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("authentication as etcd user \"geerpc\" failed"),
        "{e}"
    );
    assert!(e.contains("invalid user ID or password"), "{e}");
    assert!(
        e.contains(&eps[0]) && !e.contains("not-the-password"),
        "{e}"
    );

    let a = common::start_server();
    let e = EtcdRegistrar::new(&eps)
        .unwrap()
        .user("nobody", user())
        .register_server(&a, opts(10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"nobody\" failed") && !e.contains(PW), "{e}");

    let e = EtcdDiscovery::builder(&eps)
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("authentication enabled"), "{e}");

    // A user without permission outside its prefix.
    let e = EtcdDiscovery::builder(&eps)
        .prefix("/elsewhere")
        .user("geerpc", user())
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("permission denied"), "{e}");
}
