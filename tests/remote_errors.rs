//! Remote errors matched by kind (`Error::remote_kind`), each produced by a
//! real call to a real server, and the unknown-service and unknown-method
//! texts: Go's beginning, then what the server has, bounded.

mod common;

use std::time::Duration;

use common::*;
use geerpc::{Client, Error, RemoteKind, Server, Service};

fn kind_and_text(err: Error) -> (RemoteKind, String) {
    let kind = err
        .remote_kind()
        .unwrap_or_else(|| panic!("not remote: {err:?}"));
    (kind, err.to_string())
}

#[test]
fn each_kind_of_remote_error_is_matchable_without_its_text() {
    init_log();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let server = Server::new();
    server
        .register(Service::new("Hold").method("Hold", move |_: Args| {
            // Bounded: released by the test once the timeout reply is in.
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
            Ok::<_, String>(0i64)
        }))
        .unwrap();
    let running = start_with(server);
    let addr = running.addr().to_string();
    let client = Client::dial(&addr).unwrap();
    let args = Args { num1: 1, num2: 2 };

    let (kind, text) = kind_and_text(client.call::<_, i64>("Nope.Sum", &args).unwrap_err());
    assert_eq!(kind, RemoteKind::UnknownService, "{text}");
    assert_eq!(
        text,
        "rpc server: can't find service Nope (services: Arith, Echo, Hold)"
    );

    let (kind, text) = kind_and_text(client.call::<_, i64>("NoDot", &args).unwrap_err());
    assert_eq!(kind, RemoteKind::UnknownService, "{text}");

    let (kind, text) = kind_and_text(client.call::<_, i64>("Arith.Nope", &args).unwrap_err());
    assert_eq!(kind, RemoteKind::UnknownMethod, "{text}");
    assert_eq!(
        text,
        "rpc server: can't find method Nope of service Arith \
         (methods: Fail, Panic, SleepMs, Sum)"
    );

    let (kind, text) = kind_and_text(client.call::<_, i64>("Arith.Sum", &"not args").unwrap_err());
    assert_eq!(kind, RemoteKind::BadArgument, "{text}");

    let (kind, text) = kind_and_text(client.call::<_, i64>("Arith.Fail", &args).unwrap_err());
    assert_eq!(kind, RemoteKind::Handler, "{text}");
    assert_eq!(text, "boom: it failed");
    // A panic is the server's failure to run the handler: `internal`, with
    // the text it always had.
    let (kind, text) = kind_and_text(client.call::<_, i64>("Arith.Panic", &args).unwrap_err());
    assert_eq!(kind, RemoteKind::Internal, "{text}");
    assert_eq!(
        text,
        "rpc server: Arith.Panic panicked: handler panicked on purpose"
    );

    let timed = Client::builder()
        .handle_timeout(Some(Duration::from_millis(100)))
        .dial(&addr)
        .unwrap();
    let (kind, text) = kind_and_text(timed.call::<_, i64>("Hold.Hold", &args).unwrap_err());
    assert_eq!(kind, RemoteKind::HandleTimeout, "{text}");
    assert!(
        text.starts_with("rpc server: request handle timeout: expect within 100ms"),
        "{text}"
    );
    release_tx.send(()).unwrap();

    // A result is no remote error, and neither is a local failure.
    assert_eq!(client.call::<_, i64>("Arith.Sum", &args).unwrap(), 3);
    let local = Error::NoServers { service: None };
    assert_eq!(local.remote_kind(), None);
}

/// A service with 10,000 methods: the unknown-method text names the first
/// few and counts the rest, instead of growing with the service.
#[test]
fn the_list_of_methods_in_an_error_is_bounded() {
    init_log();
    let mut svc = Service::new("Big");
    for i in 0..10_000 {
        svc = svc.method(&format!("M{i:05}"), |a: Args| Ok::<_, String>(a.num1));
    }
    let server = Server::new();
    server.register(svc).unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let client = Client::dial(running.addr()).unwrap();
    let err = client
        .call::<_, i64>("Big.Nope", &Args { num1: 1, num2: 2 })
        .unwrap_err();
    assert_eq!(err.remote_kind(), Some(RemoteKind::UnknownMethod));
    let text = err.to_string();
    assert!(
        text.starts_with(
            "rpc server: can't find method Nope of service Big (methods: M00000, M00001, "
        ),
        "{text}"
    );
    assert!(text.ends_with(" and 9984 more)"), "{text}");
    assert!(text.len() < 600, "{} bytes", text.len());
    // The server still finds what it has.
    let one: i64 = client
        .call("Big.M09999", &Args { num1: 7, num2: 0 })
        .unwrap();
    assert_eq!(one, 7);
}

/// A Go GeeRPC server sends no `Code`: its error texts alone say the kind.
/// This fake one answers each request with the text Go's server.go would,
/// chosen by the method asked for.
#[test]
fn a_go_peer_s_errors_are_classified_by_their_text() {
    use std::io::{BufRead, BufReader, Write};
    init_log();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let go = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rd = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        rd.read_line(&mut line).unwrap(); // the Option
        for _ in 0..4 {
            line.clear();
            if rd.read_line(&mut line).unwrap() == 0 {
                return;
            }
            let header: serde_json::Value = serde_json::from_str(&line).unwrap();
            line.clear();
            rd.read_line(&mut line).unwrap(); // the body
            let method = header["ServiceMethod"].as_str().unwrap().to_string();
            let error = match method.as_str() {
                "Nope.Sum" => "rpc server: can't find service Nope",
                "Arith.Nope" => "rpc server: can't find method Nope",
                "Arith.Slow" => "rpc server: request handle timeout: expect within 1s",
                _ => "divide by zero",
            };
            let reply = serde_json::json!({
                "ServiceMethod": method, "Seq": header["Seq"], "Error": error,
            });
            writeln!(w, "{reply}\n{{}}").unwrap();
        }
    });
    let client = Client::dial(addr).unwrap();
    let args = Args { num1: 1, num2: 2 };
    for (method, kind) in [
        ("Nope.Sum", RemoteKind::UnknownService),
        ("Arith.Nope", RemoteKind::UnknownMethod),
        ("Arith.Slow", RemoteKind::HandleTimeout),
        ("Arith.Div", RemoteKind::Handler),
    ] {
        let err = client
            .call_timeout::<_, i64>(method, &args, Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(err.remote_code(), None, "{method}: a Go peer sends no code");
        assert_eq!(err.remote_kind(), Some(kind), "{method}: {err}");
    }
    drop(client);
    go.join().unwrap();
}
