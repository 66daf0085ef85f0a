//! The registry over HTTPS (PROTOCOL.md section 7, issue 19): a registry
//! serving a certificate from a CA made here with rcgen; heartbeats and
//! discovery (its long poll, the heartbeat's hold) that trust that CA;
//! clear errors for an untrusted certificate and bad PEM files; a
//! plaintext peer on the HTTPS port harms no one.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use geerpc::registration::RegisterOptions;
use geerpc::registry::HttpRegistrar;
use geerpc::{Discovery, Registry, RegistryDiscovery, Token};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const WRITE: &str = "tls-write-3a9e6c21";

/// A CA, and a certificate for 127.0.0.1 and localhost signed by it, as
/// PEM files in a fresh directory: (dir, ca, cert, key).
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("geerpc-regtls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let p = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        dir,
    };
    std::fs::write(&p.ca, ca.pem()).unwrap();
    std::fs::write(&p.cert, cert.pem()).unwrap();
    std::fs::write(&p.key, key.serialize_pem()).unwrap();
    p
}

fn https_registry(p: &Pki, ttl: Duration) -> Registry {
    init_log();
    Registry::builder()
        .addr("127.0.0.1:0")
        .ttl(ttl)
        .write_token(Token::new(WRITE).unwrap())
        .tls_pem_files(&p.cert, &p.key)
        .start()
        .expect("start an HTTPS registry")
}

fn listed(reg: &Registry) -> Vec<String> {
    reg.instances().into_iter().map(|i| i.addr).collect()
}

#[test]
fn heartbeats_and_discovery_work_through_an_https_registry_trusting_a_test_ca() {
    let p = pki("ok");
    // A 2 s TTL renewed every 200 ms, and the heartbeat's hold between
    // beats: all over TLS.
    let reg = https_registry(&p, Duration::from_secs(2));
    let url = reg.url().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let hb = HttpRegistrar::new(&url)
        .unwrap()
        .token(Token::new(WRITE).unwrap())
        .tls_ca_file(&p.ca)
        .register(
            "tcp@127.0.0.1:7201",
            RegisterOptions::new().renew_every(Duration::from_millis(200)),
        )
        .unwrap();
    // The long poll runs over TLS too.
    let d = RegistryDiscovery::builder(&url)
        .tls_ca_file(&p.ca)
        .poll_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    wait_for(&d, Duration::from_secs(30), |s| {
        s.instances.iter().any(|i| i.addr == "tcp@127.0.0.1:7201")
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while hb.beats() < 12 {
        assert!(Instant::now() < deadline, "12 beats within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(listed(&reg), ["tcp@127.0.0.1:7201"]);
    hb.deregister().unwrap();
    assert!(listed(&reg).is_empty());
    wait_for(&d, Duration::from_secs(30), |s| s.instances.is_empty());
}

#[test]
fn an_untrusted_certificate_or_plain_http_is_a_clear_error() {
    let p = pki("trust");
    let other = pki("other");
    let reg = https_registry(&p, Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    // The webpki roots, and another CA: the certificate is not trusted.
    let no_ca = RegistryDiscovery::builder(&url).long_poll(false);
    let wrong_ca = RegistryDiscovery::builder(&url)
        .long_poll(false)
        .tls_ca_file(&other.ca);
    for b in [no_ca, wrong_ca] {
        let t0 = Instant::now();
        let e = b.build().unwrap().refresh().unwrap_err().to_string();
        assert!(e.contains(&url), "{e}");
        assert!(
            e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "at once: {e}");
    }
    // http:// to the HTTPS port: an error within the request timeout.
    let plain = url.replacen("https://", "http://", 1);
    let t0 = Instant::now();
    let e = RegistryDiscovery::builder(&plain)
        .long_poll(false)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
        .refresh()
        .unwrap_err()
        .to_string();
    assert!(e.contains(&plain), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{e}");
    // The registry still serves a trusting client.
    let d = RegistryDiscovery::builder(&url)
        .long_poll(false)
        .tls_ca_file(&p.ca)
        .build()
        .unwrap();
    d.refresh().unwrap();
}

#[test]
fn a_plaintext_peer_on_the_https_port_is_closed_and_harms_no_one() {
    let p = pki("plain");
    let reg = https_registry(&p, Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    let mut raw = raw_connect(reg.addr());
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw.write_all(b"GET /_rpc_/registry HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Meanwhile a TLS client is served.
    let d = RegistryDiscovery::builder(&url)
        .long_poll(false)
        .tls_ca_file(&p.ca)
        .build()
        .unwrap();
    d.refresh().unwrap();
    // The plaintext peer gets no HTTP answer: a TLS alert at most, then
    // the close.
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
}

#[test]
fn unreadable_or_malformed_pem_files_fail_at_start_naming_the_file() {
    let p = pki("bad");
    let missing = p.dir.join("missing.pem");
    let not_pem = p.dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let start = |cert: &Path, key: &Path| {
        Registry::builder()
            .addr("127.0.0.1:0")
            .tls_pem_files(cert, key)
            .start()
            .unwrap_err()
            .to_string()
    };
    for (cert, key, named) in [
        (&missing, &p.key, &missing),
        (&p.cert, &missing, &missing),
        (&not_pem, &p.key, &not_pem),
        (&p.cert, &not_pem, &not_pem),
        // A certificate where the key should be.
        (&p.cert, &p.cert, &p.cert),
    ] {
        let e = start(cert, key);
        assert!(e.contains(&named.display().to_string()), "{e}");
    }
    // A CA file that cannot be read: the builder's build says so.
    let e = RegistryDiscovery::builder("https://127.0.0.1:1/_rpc_/registry")
        .tls_ca_file(&missing)
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.pem"), "{e}");
    let e = HttpRegistrar::new("https://127.0.0.1:1/_rpc_/registry")
        .unwrap()
        .tls_ca_file(&not_pem)
        .register("tcp@127.0.0.1:1", RegisterOptions::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not.pem"), "{e}");
}

/// The read deadline bounds a TLS handshake too: a peer that sends half a
/// ClientHello and stops is closed at the read timeout, not held for ever.
#[test]
fn a_stalled_handshake_is_closed_at_the_read_timeout() {
    let p = pki("stall");
    init_log();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .read_timeout(Duration::from_millis(300))
        .tls_pem_files(&p.cert, &p.key)
        .start()
        .unwrap();
    let mut raw = raw_connect(reg.addr());
    // A TLS record header announcing 512 bytes of handshake, then 3.
    raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .unwrap();
    // Generous under load: the point is that it ends, not when.
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let r = raw.read_to_end(&mut got);
    assert!(
        r.is_ok() || t0.elapsed() < Duration::from_secs(19),
        "still open after {:?}: {r:?}",
        t0.elapsed()
    );
}
