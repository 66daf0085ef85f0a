//! One port for everything: HTTP CONNECT tunnels, the debug page, garbage,
//! and `PROTOCOL@ADDR` addresses (PROTOCOL.md sections 1 and 5).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use geerpc::{Client, Codec, Error, Server, Service};
use serde_json::Value;

/// Generous: the suite runs on a loaded 2-core machine.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn raw(target: &str) -> TcpStream {
    let s = TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

struct Reply {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Sends `request` and reads the reply up to end of stream: the server must
/// close the connection after any plain HTTP request.
fn http(target: &str, request: &[u8]) -> Reply {
    let mut s = raw(target);
    s.write_all(request).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .expect("the server closes the connection after the reply");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole HTTP head");
    let head = String::from_utf8(all[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: all[split + 4..].to_vec(),
    }
}

fn get(target: &str, path: &str) -> Reply {
    http(
        target,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

const RPC_PATHS: [(&str, &str); 3] = [
    ("/_geerpc_", "HTTP/1.0 200 Connected to Gee RPC\n\n"),
    ("/_geeprc_", "HTTP/1.0 200 Connected to Gee RPC\n\n"),
    ("/myrpc", "HTTP/1.0 200 Connected to RPC\n\n"),
];

#[test]
fn connect_on_each_rpc_path_gets_its_status_text_then_speaks_rpc() {
    init_log();
    let server = start_server();
    let target = server.addr().target().to_string();
    for (path, expected) in RPC_PATHS {
        // Go's client sends bare "\n" line ends; others send "\r\n" and headers.
        for request in [
            format!("CONNECT {path} HTTP/1.0\n\n"),
            format!("CONNECT {path} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        ] {
            let mut s = raw(&target);
            s.write_all(request.as_bytes()).unwrap();
            let mut status = vec![0u8; expected.len()];
            s.read_exact(&mut status).unwrap();
            assert_eq!(String::from_utf8(status).unwrap(), expected, "{request:?}");

            // The connection is now an ordinary RPC connection.
            s.write_all(
                b"{\"MagicNumber\":3882844,\"CodecType\":\"application/json\",\"ConnectTimeout\":0,\"HandleTimeout\":0}\n\
                  {\"ServiceMethod\":\"Arith.Sum\",\"Seq\":7,\"Error\":\"\"}\n{\"Num1\":2,\"Num2\":3}\n",
            )
            .unwrap();
            let mut rd = BufReader::new(s);
            let mut header = String::new();
            rd.read_line(&mut header).unwrap();
            let header: Value = serde_json::from_str(&header).unwrap();
            assert_eq!(header["Seq"], 7);
            assert_eq!(header["Error"], "");
            let mut body = String::new();
            rd.read_line(&mut body).unwrap();
            assert_eq!(body.trim(), "5");
        }
    }
}

#[test]
fn rpc_through_the_tunnel_with_both_codecs() {
    init_log();
    let server = start_server();
    let addr = format!("http@{}", server.addr().target());
    for codec in [Codec::Json, Codec::MsgPack] {
        let client = Client::builder().codec(codec).dial(&addr).unwrap();
        assert_eq!(client.addr().to_string(), addr);
        let sum: i64 = client
            .call("Arith.Sum", &Args { num1: 20, num2: 22 })
            .unwrap();
        assert_eq!(sum, 42, "{codec:?}");
        let calls: Vec<_> = (0..8)
            .map(|i| {
                client
                    .go::<_, i64>("Arith.Sum", &Args { num1: i, num2: 1 })
                    .unwrap()
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.wait().unwrap(), i as i64 + 1, "{codec:?}");
        }
        let err = client
            .call::<_, i64>("Arith.Fail", &Args { num1: 0, num2: 0 })
            .unwrap_err();
        assert!(matches!(err, Error::Remote { .. }), "{err:?}");
        assert!(client.is_alive());
    }
}

#[test]
fn other_methods_on_an_rpc_path_get_405_must_connect() {
    init_log();
    let server = start_server();
    let target = server.addr().target().to_string();
    let big_body = "x".repeat(200 * 1024);
    for (path, _) in RPC_PATHS {
        for request in [
            format!("GET {path} HTTP/1.0\n\n"),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
            format!("POST {path} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            // A body the server never reads must not reset the reply away.
            format!(
                "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{big_body}",
                big_body.len()
            ),
        ] {
            let reply = http(&target, request.as_bytes());
            assert_eq!(reply.status, "HTTP/1.0 405 Method Not Allowed", "{path}");
            assert_eq!(reply.text(), "405 must CONNECT\n", "{path}");
            assert_eq!(reply.header("Content-Length"), Some("17"));
        }
    }
    // The port still serves RPC.
    let client = Client::dial(server.addr()).unwrap();
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 1, num2: 1 })
        .unwrap();
    assert_eq!(sum, 2);
}

fn method<'a>(doc: &'a Value, service: &str, method: &str) -> &'a Value {
    let svc = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("service {service} in {doc}"));
    svc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == method)
        .unwrap_or_else(|| panic!("method {service}.{method} in {doc}"))
}

fn row(service_method: &str, calls: u64, errors: u64) -> String {
    format!("data-method=\"{service_method}\" data-calls=\"{calls}\" data-errors=\"{errors}\"")
}

#[test]
fn debug_page_lists_services_and_counts_as_html_and_json() {
    init_log();
    let server = Server::new();
    server
        .register(Service::new("Gen").method("Lens", |v: Vec<i64>| Ok::<_, String>(v.len())))
        .unwrap();
    let handle = start_with(server);
    let target = handle.addr().target().to_string();

    let client = Client::dial(handle.addr()).unwrap();
    for i in 0..3 {
        let _: i64 = client
            .call("Arith.Sum", &Args { num1: i, num2: 1 })
            .unwrap();
    }
    for _ in 0..2 {
        let e = client.call::<_, i64>("Arith.Fail", &Args { num1: 0, num2: 0 });
        assert!(e.is_err());
    }
    let tunnelled = Client::dial(format!("http@{target}")).unwrap();
    let _: Value = tunnelled.call("Echo.Echo", &"hi").unwrap();

    for path in ["/debug/geerpc", "/debug/rpc", "/debug/geerpc?x=1"] {
        let page = get(&target, path);
        assert_eq!(page.status, "HTTP/1.0 200 OK", "{path}");
        assert_eq!(
            page.header("Content-Type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            page.header("Content-Length"),
            Some(page.body.len().to_string().as_str())
        );
        let html = page.text();
        for svc in ["Arith", "Echo", "Gen"] {
            assert!(
                html.contains(&format!("<h2 id=\"{svc}\">{svc}</h2>")),
                "{svc}"
            );
        }
        assert!(html.contains(&row("Arith.Sum", 3, 0)), "{html}");
        assert!(html.contains(&row("Arith.Fail", 2, 2)), "{html}");
        assert!(html.contains(&row("Arith.SleepMs", 0, 0)), "{html}");
        assert!(html.contains(&row("Echo.Echo", 1, 0)), "{html}");
        // Type names: short in the cell, full in the tooltip, escaped.
        assert!(html.contains("title=\"http::common::Args\">Args</td>"));
        assert!(html.contains(">Vec&lt;i64&gt;</td>"));
        assert!(!html.contains("Vec<i64>"));
        // Its one script is inline (the live refresh); the table is
        // all in the HTML without it.
        assert!(!html.contains("<script src"), "no external script");
        assert!(!html.contains("src=\"http"), "no external assets");
    }

    let by_path = get(&target, "/debug/geerpc.json");
    let by_accept = http(
        &target,
        b"GET /debug/geerpc HTTP/1.1\r\nAccept: application/json\r\n\r\n",
    );
    for reply in [by_path, by_accept] {
        assert_eq!(reply.status, "HTTP/1.0 200 OK");
        assert_eq!(reply.header("Content-Type"), Some("application/json"));
        let doc = reply.json();
        assert_eq!(doc["addr"], handle.addr().to_string());
        let names: Vec<&str> = doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Arith", "Echo", "Gen"]);
        let sum = method(&doc, "Arith", "Sum");
        assert_eq!(
            (sum["calls"].as_u64(), sum["errors"].as_u64()),
            (Some(3), Some(0))
        );
        assert_eq!(sum["arg_type"], "http::common::Args");
        assert_eq!(sum["reply_type"], "i64");
        assert!(sum["p50_us"].as_f64().unwrap() > 0.0);
        assert!(sum["p99_us"].as_f64().unwrap() >= sum["p50_us"].as_f64().unwrap());
        let fail = method(&doc, "Arith", "Fail");
        assert_eq!(
            (fail["calls"].as_u64(), fail["errors"].as_u64()),
            (Some(2), Some(2))
        );
        let idle = method(&doc, "Arith", "SleepMs");
        assert_eq!(idle["calls"], 0);
        assert!(idle["p50_us"].is_null() && idle["p99_us"].is_null());
        assert_eq!(method(&doc, "Echo", "Echo")["calls"], 1);
        assert_eq!(
            method(&doc, "Gen", "Lens")["arg_type"],
            "alloc::vec::Vec<i64>"
        );
    }

    // HEAD: the head only; other methods and other paths are refused.
    let head = http(&target, b"HEAD /debug/geerpc HTTP/1.0\r\n\r\n");
    assert_eq!(head.status, "HTTP/1.0 200 OK");
    assert!(head.body.is_empty());
    assert!(
        head.header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 100
    );
    let post = http(&target, b"POST /debug/geerpc HTTP/1.0\r\n\r\n");
    assert_eq!(post.status, "HTTP/1.0 405 Method Not Allowed");
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    let missing = get(&target, "/nothing/here");
    assert_eq!(missing.status, "HTTP/1.0 404 Not Found");
    let connect_here = http(&target, b"CONNECT /debug/geerpc HTTP/1.0\n\n");
    assert_eq!(connect_here.status, "HTTP/1.0 405 Method Not Allowed");
    let connect_elsewhere = http(&target, b"CONNECT /elsewhere HTTP/1.0\n\n");
    assert_eq!(connect_elsewhere.status, "HTTP/1.0 404 Not Found");
}

/// Reads until the server closes: end of stream, or a reset.
fn assert_closed_by_server(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: expected the server to close, got {e}"),
    }
    got
}

#[test]
fn garbage_closes_the_connection_and_the_server_keeps_serving() {
    init_log();
    let server = start_server();
    let target = server.addr().target().to_string();
    for garbage in [
        &b"\x00\x01\x02\xffgarbage\n"[..],
        b"hello there\n",
        b"[1,2,3]\n",
        b"{\"MagicNumber\":1,\"CodecType\":\"application/json\"}\n",
        b"{\"MagicNumber\":3882844,\"CodecType\":\"application/protobuf\"}\n",
        b"{not json at all}\n",
    ] {
        let mut s = raw(&target);
        s.write_all(garbage).unwrap();
        let got = assert_closed_by_server(&mut s, &String::from_utf8_lossy(garbage));
        assert!(got.is_empty(), "nothing is sent back for {garbage:?}");
    }
    // Something that starts like HTTP but is not: a short 400.
    for junk in [&b"NOT HTTP\n\n"[..], b"GET\r\n\r\n", b"GET / FTP/1.0\n\n"] {
        let reply = http(&target, junk);
        assert_eq!(reply.status, "HTTP/1.0 400 Bad Request", "{junk:?}");
    }
    // A head that never ends is cut off at its limit.
    let mut s = raw(&target);
    let endless = format!("GET / HTTP/1.0\r\nX-Long: {}\r\n", "a".repeat(16 * 1024));
    let _ = s.write_all(endless.as_bytes());
    let got = assert_closed_by_server(&mut s, "endless head");
    assert!(got.is_empty() || got.starts_with(b"HTTP/1.0 400 Bad Request"));

    let client = Client::dial(server.addr()).unwrap();
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 4, num2: 5 })
        .unwrap();
    assert_eq!(sum, 9);
}

#[test]
fn a_handshake_or_head_that_never_completes_is_dropped_at_the_handshake_timeout() {
    init_log();
    let server = start_with(
        Server::builder()
            .handshake_timeout(Duration::from_millis(200))
            .build(),
    );
    let target = server.addr().target().to_string();
    for partial in [
        &b""[..],
        b"{\"MagicNumber\":3882",
        b"GET /debug/geerpc HTTP/1.0\r\n",
    ] {
        let mut s = raw(&target);
        s.write_all(partial).unwrap();
        let got = assert_closed_by_server(&mut s, &String::from_utf8_lossy(partial));
        assert!(got.is_empty(), "{partial:?}: nothing is sent back");
    }
    let client = Client::dial(server.addr()).unwrap();
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 1, num2: 2 })
        .unwrap();
    assert_eq!(sum, 3);
}

#[cfg(unix)]
#[test]
fn unix_socket_end_to_end() {
    use std::os::unix::net::UnixStream;
    init_log();
    let path = std::env::temp_dir().join(format!(
        "geerpc-http-test-{}-{}.sock",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_file(&path);
    let server = Server::new();
    server.register(arith()).unwrap();
    let addr = format!("unix@{}", path.display());
    let handle = server.listen(&addr).unwrap();
    assert_eq!(handle.addr().to_string(), addr);
    for codec in [Codec::Json, Codec::MsgPack] {
        let client = Client::builder().codec(codec).dial(&addr).unwrap();
        let sum: i64 = client
            .call("Arith.Sum", &Args { num1: 6, num2: 7 })
            .unwrap();
        assert_eq!(sum, 13, "{codec:?}");
    }
    // The same sniffing serves the debug page on a Unix socket too.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /debug/geerpc.json HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.0 200 OK\r\n"), "{all}");
    let body = &all[all.find("\r\n\r\n").unwrap() + 4..];
    let doc: Value = serde_json::from_str(body).unwrap();
    assert_eq!(method(&doc, "Arith", "Sum")["calls"], 2);

    handle.shutdown();
    assert_eq!(handle.live_threads(), 0);
    assert!(!path.exists(), "the socket file is removed at shutdown");
    assert!(matches!(Client::dial(&addr), Err(Error::Connect { .. })));
}

/// The error dialling `addr` gives (`Client` is not `Debug`).
fn dial_err(addr: &str) -> Error {
    match Client::dial(addr) {
        Ok(_) => panic!("dialling {addr} should fail"),
        Err(e) => e,
    }
}

/// A fake server that reads a CONNECT and answers it with `answer` (or just
/// closes when `answer` is empty). Returns its address.
fn fake_proxy(answer: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t = std::thread::Builder::new()
        .name("test-fake-proxy".into())
        .spawn(move || {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut rd = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            rd.read_line(&mut line).unwrap();
            assert_eq!(line, "CONNECT /_geerpc_ HTTP/1.0\n");
            line.clear();
            rd.read_line(&mut line).unwrap();
            assert_eq!(line, "\n");
            (&s).write_all(answer).unwrap();
        })
        .unwrap();
    (addr, t)
}

#[test]
fn a_refused_connect_is_an_error_with_the_status_line() {
    init_log();
    let (target, proxy) = fake_proxy(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let addr = format!("http@{target}");
    let err = dial_err(&addr);
    proxy.join().unwrap();
    match &err {
        Error::HttpConnect { addr: a, status } => {
            assert_eq!(a, &addr);
            assert_eq!(status, "HTTP/1.0 404 Not Found");
        }
        other => panic!("expected HttpConnect, got {other:?}"),
    }
    assert!(err.is_not_sent());
    let text = err.to_string();
    assert!(
        text.contains(&addr) && text.contains("404 Not Found"),
        "{text}"
    );

    // A server that hangs up without answering.
    let (target, proxy) = fake_proxy(b"");
    let err = dial_err(&format!("http@{target}"));
    proxy.join().unwrap();
    match err {
        Error::HttpConnect { status, .. } => assert!(status.contains("closed"), "{status}"),
        Error::Connect { .. } => {} // a reset instead of a clean close
        other => panic!("expected HttpConnect, got {other:?}"),
    }
}

/// A Go server from the article serves RPC on `/myrpc` only; the CONNECT
/// path is a client setting for it.
#[test]
fn the_connect_path_is_a_client_setting() {
    init_log();
    let server = start_server();
    let addr = format!("http@{}", server.addr().target());
    let client = Client::builder()
        .connect_path("/myrpc")
        .dial(&addr)
        .unwrap();
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 2, num2: 3 })
        .unwrap();
    assert_eq!(sum, 5);
    match Client::builder().connect_path("elsewhere").dial(&addr) {
        Err(Error::HttpConnect { status, .. }) => assert!(status.contains("404"), "{status}"),
        other => panic!("expected a refused CONNECT, got {other:?}"),
    }
    // A path that would break the request line is refused before any
    // connection is made, and not as the server's failure (an XClient would
    // evict the instance).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let nobody = format!("http@{}", listener.local_addr().unwrap());
    match Client::builder().connect_path("/a b").dial(&nobody) {
        Err(Error::InvalidAddress { reason, .. }) => {
            assert!(reason.contains("\"/a b\""), "{reason}")
        }
        other => panic!("expected an unusable path, got {other:?}"),
    }
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "no connection was made"
    );
}

#[test]
fn a_malformed_address_lists_the_accepted_forms() {
    for bad in [
        "127.0.0.1",
        "ftp@127.0.0.1:80",
        "http@nohost",
        "tcp@",
        "unix@",
        "http@:80",
    ] {
        let err = dial_err(bad);
        assert!(
            matches!(err, Error::InvalidAddress { .. }),
            "{bad}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("tcp@HOST:PORT, http@HOST:PORT, unix@/PATH") && text.contains(bad),
            "{bad}: {text}"
        );
    }
}

#[test]
fn the_debug_page_is_not_held_to_the_rpc_message_limit() {
    init_log();
    let server = start_with(Server::builder().max_message_size(512).build());
    let target = server.addr().target().to_string();
    let page = get(&target, "/debug/geerpc");
    assert_eq!(page.status, "HTTP/1.0 200 OK");
    assert!(page.body.len() > 512, "{} bytes", page.body.len());
    assert!(page.text().contains(&row("Arith.Sum", 0, 0)));
    // A tunnelled RPC connection still works after the CONNECT reply.
    let client = Client::dial(format!("http@{target}")).unwrap();
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 1, num2: 2 })
        .unwrap();
    assert_eq!(sum, 3);
}
