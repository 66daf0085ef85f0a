//! RPC over TLS and mutual TLS (issue 19): real handshakes on loopback with
//! certificates made here by rcgen. Each refusal must be a clear error
//! within the connect timeout while the server goes on serving others.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use geerpc::wire::{ClientTls, ServerTls};
use geerpc::{CallOptions, Client, Codec, Context, Error, Server, Service};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// A certificate for `names` (DNS names or IP addresses) with this CN,
    /// signed by this CA: (chain PEM, key PEM). `expired`: valid only in 2020.
    fn issue(&self, cn: &str, names: &[&str], expired: bool) -> (Vec<u8>, Vec<u8>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }
}

/// A server with `Echo.Echo`, and `Echo.Who` answering the caller's
/// verified identity ("subject|name,name", or "none").
fn server() -> Server {
    let server = Server::new();
    server
        .register(
            Service::new("Echo")
                .method("Echo", |s: String| Ok::<_, String>(s))
                .method_with_context("Who", |ctx: &Context, _: ()| {
                    Ok::<_, String>(match ctx.identity() {
                        Some(id) => format!("{}|{}", id.subject(), id.names().join(",")),
                        None => "none".into(),
                    })
                }),
        )
        .unwrap();
    server
}

/// A TLS listener whose certificate, from `ca`, names 127.0.0.1.
fn tls_server(ca: &Ca) -> (Server, ServerTls) {
    let (chain, key) = ca.issue("rpc server", &["127.0.0.1", "localhost"], false);
    (server(), ServerTls::pem(&chain, &key).unwrap())
}

const CONNECT: Duration = Duration::from_secs(5);

/// Runs `f` on its own thread and fails if it has not finished within
/// `limit`: a hang (a deadlock, a missing deadline) fails the test instead
/// of stalling the suite.
fn within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("not finished within {limit:?}"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the test thread panicked"),
    }
}

fn dial(addr: &geerpc::Address, tls: ClientTls, codec: Codec) -> geerpc::Result<Client> {
    Client::builder()
        .codec(codec)
        .connect_timeout(Some(CONNECT))
        .tls(tls)
        .dial(addr)
}

/// The server still answers a good client: one bad peer harmed nobody.
fn still_serves(addr: &geerpc::Address, ca: &Ca) {
    let c = dial(addr, ClientTls::ca_pem(&ca.pem()).unwrap(), Codec::Json).unwrap();
    assert_eq!(c.call::<_, String>("Echo.Echo", "still").unwrap(), "still");
}

/// A dial that must fail: its error, checked to name the address and to
/// have come within the connect timeout (plus slack for a loaded machine).
fn refused(addr: &geerpc::Address, tls: ClientTls) -> String {
    let t0 = Instant::now();
    let err = match dial(addr, tls, Codec::Json) {
        Ok(c) => c
            .call::<_, String>("Echo.Echo", &"x")
            .expect_err("the call must fail"),
        Err(e) => e,
    };
    assert!(
        t0.elapsed() < CONNECT + Duration::from_secs(2),
        "{:?}",
        t0.elapsed()
    );
    let text = err.to_string();
    eprintln!("refused: {text}");
    assert!(text.contains(&addr.to_string()), "{text}");
    text
}

#[test]
fn a_call_over_tls_with_each_codec_and_plaintext_on_another_listener() {
    let ca = Ca::new("test CA");
    let (server, tls) = tls_server(&ca);
    let secure = server.listen_tls("tls@127.0.0.1:0", &tls).unwrap();
    let plain = server.listen("127.0.0.1:0").unwrap();
    assert!(secure.addr().to_string().starts_with("tls@127.0.0.1:"));
    for codec in [Codec::Json, Codec::MsgPack] {
        let c = dial(secure.addr(), ClientTls::ca_pem(&ca.pem()).unwrap(), codec).unwrap();
        // Large enough to span several TLS records both ways.
        let big = "x".repeat(100_000);
        assert_eq!(c.call::<_, String>("Echo.Echo", &big).unwrap(), big);
        assert_eq!(c.call::<_, String>("Echo.Echo", "hi").unwrap(), "hi");
        // No client certificate asked for: nothing proved.
        assert_eq!(c.call::<_, String>("Echo.Who", &()).unwrap(), "none");
    }
    let c = Client::dial(plain.addr()).unwrap();
    assert_eq!(c.call::<_, String>("Echo.Echo", "plain").unwrap(), "plain");
}

#[test]
fn many_calls_at_once_share_one_tls_connection() {
    let ca = Ca::new("test CA");
    let (server, tls) = tls_server(&ca);
    let h = server.listen_tls("127.0.0.1:0", &tls).unwrap();
    let c = dial(
        h.addr(),
        ClientTls::ca_pem(&ca.pem()).unwrap(),
        Codec::MsgPack,
    )
    .unwrap();
    // Readers and writers on both sides take turns on one TLS state: a
    // lock held across a blocking wait would stall this.
    within(Duration::from_secs(60), move || {
        std::thread::scope(|s| {
            for t in 0..8 {
                let c = &c;
                s.spawn(move || {
                    for i in 0..200 {
                        let arg = format!("{t}-{i}-{}", "y".repeat(i * 37));
                        assert_eq!(c.call::<_, String>("Echo.Echo", &arg).unwrap(), arg);
                    }
                });
            }
        });
        drop(h);
    });
}

#[test]
fn the_server_name_can_be_given_for_an_ip_address() {
    let ca = Ca::new("test CA");
    let (chain, key) = ca.issue("rpc server", &["rpc.internal"], false);
    let h = server()
        .listen_tls("127.0.0.1:0", &ServerTls::pem(&chain, &key).unwrap())
        .unwrap();
    let tls = ClientTls::ca_pem(&ca.pem()).unwrap();
    let c = dial(h.addr(), tls.server_name("rpc.internal"), Codec::Json).unwrap();
    assert_eq!(c.call::<_, String>("Echo.Echo", "named").unwrap(), "named");
}

#[test]
fn a_server_signed_by_an_unknown_ca_is_refused() {
    let ca = Ca::new("test CA");
    let (server, tls) = tls_server(&ca);
    let h = server.listen_tls("127.0.0.1:0", &tls).unwrap();
    let other = Ca::new("other CA");
    let text = refused(h.addr(), ClientTls::ca_pem(&other.pem()).unwrap());
    assert!(text.contains("unknown CA"), "{text}");
    // Nor do the public roots trust a private CA.
    let text = refused(h.addr(), ClientTls::webpki_roots());
    assert!(text.contains("unknown CA"), "{text}");
    still_serves(h.addr(), &ca);
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let ca = Ca::new("test CA");
    let (chain, key) = ca.issue("rpc server", &["elsewhere.example"], false);
    let h = server()
        .listen_tls("127.0.0.1:0", &ServerTls::pem(&chain, &key).unwrap())
        .unwrap();
    let text = refused(h.addr(), ClientTls::ca_pem(&ca.pem()).unwrap());
    assert!(text.contains("name mismatch"), "{text}");
}

#[test]
fn an_expired_certificate_is_refused() {
    let ca = Ca::new("test CA");
    let (chain, key) = ca.issue("rpc server", &["127.0.0.1"], true);
    let h = server()
        .listen_tls("127.0.0.1:0", &ServerTls::pem(&chain, &key).unwrap())
        .unwrap();
    let text = refused(h.addr(), ClientTls::ca_pem(&ca.pem()).unwrap());
    assert!(text.contains("expired"), "{text}");
}

#[test]
fn a_plaintext_client_on_a_tls_port_fails_and_harms_nobody() {
    let ca = Ca::new("test CA");
    let (server, tls) = tls_server(&ca);
    let h = server.listen_tls("127.0.0.1:0", &tls).unwrap();
    let plain_addr: geerpc::Address = h
        .addr()
        .to_string()
        .replace("tls@", "tcp@")
        .parse()
        .unwrap();
    let t0 = Instant::now();
    let err = match Client::builder()
        .connect_timeout(Some(CONNECT))
        .dial(&plain_addr)
    {
        Ok(c) => c
            .call_with::<_, String>("Echo.Echo", &"x", &CallOptions::new().timeout(CONNECT))
            .expect_err("a plaintext call on a TLS port must fail"),
        Err(e) => e,
    };
    assert!(
        t0.elapsed() < CONNECT + Duration::from_secs(2),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        !matches!(err, Error::Timeout { .. }),
        "refused, not timed out: {err}"
    );
    // A peer that sends nothing at all holds only its own thread.
    let _silent = TcpStream::connect(h.addr().target()).unwrap();
    still_serves(h.addr(), &ca);
}

#[test]
fn a_tls_client_on_a_plaintext_port_gets_a_clear_error() {
    let ca = Ca::new("test CA");
    let server = server();
    let h = server.listen("127.0.0.1:0").unwrap();
    let tls_addr: geerpc::Address = h
        .addr()
        .to_string()
        .replace("tcp@", "tls@")
        .parse()
        .unwrap();
    let text = refused(&tls_addr, ClientTls::ca_pem(&ca.pem()).unwrap());
    assert!(text.contains("TLS handshake failed"), "{text}");
    let c = Client::dial(h.addr()).unwrap();
    assert_eq!(c.call::<_, String>("Echo.Echo", "ok").unwrap(), "ok");
}

/// An mTLS server: its own certificate from `ca`, clients' from `clients`.
fn mtls_server(ca: &Ca, clients: &Ca) -> geerpc::server::ServerHandle {
    let (_, tls) = tls_server(ca);
    let tls = tls.require_client_cert(&clients.pem()).unwrap();
    server().listen_tls("127.0.0.1:0", &tls).unwrap()
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
    let h = mtls_server(&ca, &clients);
    let text = refused(h.addr(), ClientTls::ca_pem(&ca.pem()).unwrap());
    assert!(text.contains("client certificate"), "{text}");
    let (chain, key) = clients.issue("ok", &["ok.internal"], false);
    let tls = ClientTls::ca_pem(&ca.pem())
        .unwrap()
        .client_cert(&chain, &key)
        .unwrap();
    let c = dial(h.addr(), tls, Codec::Json).unwrap();
    assert_eq!(c.call::<_, String>("Echo.Echo", "in").unwrap(), "in");
}

#[test]
fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
    let h = mtls_server(&ca, &clients);
    let stranger = Ca::new("stranger CA");
    let (chain, key) = stranger.issue("billing", &["billing.internal"], false);
    let tls = ClientTls::ca_pem(&ca.pem())
        .unwrap()
        .client_cert(&chain, &key)
        .unwrap();
    let text = refused(h.addr(), tls);
    assert!(text.contains("unknown CA"), "{text}");
}

#[test]
fn mutual_tls_gives_the_handler_the_verified_identity() {
    let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
    let h = mtls_server(&ca, &clients);
    let (chain, key) = clients.issue("billing", &["billing.internal", "10.0.0.7"], false);
    let tls = ClientTls::ca_pem(&ca.pem())
        .unwrap()
        .client_cert(&chain, &key)
        .unwrap();
    for codec in [Codec::Json, Codec::MsgPack] {
        let c = dial(h.addr(), tls.clone(), codec).unwrap();
        assert_eq!(
            c.call::<_, String>("Echo.Who", &()).unwrap(),
            "CN=billing|billing.internal,10.0.0.7"
        );
    }
}

#[test]
fn a_tls_address_needs_listen_tls() {
    let err = server().listen("tls@127.0.0.1:0").err().expect("refused");
    assert!(err.to_string().contains("listen_tls"), "{err}");
    let err = server()
        .listen_tls("unix@/tmp/x.sock", &tls_server(&Ca::new("ca")).1)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("tls@HOST:PORT"), "{err}");
}

#[test]
fn the_tls_handshake_counts_against_the_connect_timeout() {
    // Accepts, and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: geerpc::Address = format!("tls@{}", silent.local_addr().unwrap())
        .parse()
        .unwrap();
    let limit = Duration::from_millis(300);
    within(Duration::from_secs(30), move || {
        let t0 = Instant::now();
        let Err(err) = Client::builder()
            .connect_timeout(Some(limit))
            .tls(ClientTls::webpki_roots())
            .dial(&addr)
        else {
            panic!("nobody answers the handshake")
        };
        let took = t0.elapsed();
        assert!(matches!(err, Error::ConnectTimeout { .. }), "{err}");
        // Generous for a loaded machine: without the bound it never ends.
        assert!(
            took >= limit && took < limit + Duration::from_secs(3),
            "{took:?}"
        );
    });
    drop(silent);
}

#[test]
fn a_peer_that_never_handshakes_is_closed_at_the_handshake_timeout() {
    let ca = Ca::new("test CA");
    let (_, tls) = tls_server(&ca);
    let server = Server::builder()
        .handshake_timeout(Duration::from_millis(300))
        .build();
    let h = server.listen_tls("127.0.0.1:0", &tls).unwrap();
    let mut silent = TcpStream::connect(h.addr().target()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    // Closed by the server (at most a close_notify alert first): the end
    // of the stream or a reset, not our read timeout.
    let mut got = 0;
    loop {
        match std::io::Read::read(&mut silent, &mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                break;
            }
        }
        assert!(got <= 7, "only an alert may come");
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn an_xclient_calls_tls_instances_from_discovery() {
    use geerpc::{MultiServerDiscovery, SelectMode, XClient};
    let ca = Ca::new("test CA");
    let (server, tls) = tls_server(&ca);
    let a = server.listen_tls("127.0.0.1:0", &tls).unwrap();
    let b = server.listen_tls("127.0.0.1:0", &tls).unwrap();
    let addrs = [a.addr().to_string(), b.addr().to_string()];
    let xc = XClient::builder(MultiServerDiscovery::new(addrs.iter().map(String::as_str)))
        .select_mode(SelectMode::RoundRobin)
        .client(
            Client::builder()
                .connect_timeout(Some(CONNECT))
                .tls(ClientTls::ca_pem(&ca.pem()).unwrap()),
        )
        .build();
    for i in 0..4 {
        let s = format!("x{i}");
        assert_eq!(xc.call::<_, String>("Echo.Echo", &s).unwrap(), s);
    }
}
