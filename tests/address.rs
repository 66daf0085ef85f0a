//! One address type for dialling and listening: every way of naming a
//! server (a `PROTOCOL@ADDR` string, a bare `HOST:PORT`, a `String`, an
//! `Address` or a reference to one, a `SocketAddr`) is taken by
//! `Client::dial`, `ClientBuilder::dial` and `Server::listen`, and means the
//! same `Address`, which `Client::addr` and `ServerHandle::addr` tell.

use std::net::SocketAddr;

use geerpc::{Address, Client, Protocol, Server, Service, ToAddress};

fn echo_server() -> Server {
    let server = Server::new();
    server
        .register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))
        .unwrap();
    server
}

fn assert_echoes(client: &Client, how: &str) {
    let back: String = client
        .call("Echo.Echo", "hi")
        .unwrap_or_else(|e| panic!("{how}: {e}"));
    assert_eq!(back, "hi", "{how}");
}

#[test]
fn a_client_dials_by_every_kind_of_address_and_tells_the_same_one() {
    let running = echo_server().listen("tcp@127.0.0.1:0").unwrap();
    let addr: &Address = running.addr();
    assert_eq!(addr.protocol(), Protocol::Tcp);
    let text: String = addr.to_string();
    let bare: &str = addr.target();
    assert!(!bare.contains('@'), "{bare}");
    let sock: SocketAddr = bare.parse().unwrap();

    let clients = [
        ("&str tcp@", Client::dial(text.as_str())),
        ("bare HOST:PORT", Client::dial(bare)),
        ("String", Client::dial(text.clone())),
        ("&String", Client::dial(&text)),
        ("&Address", Client::dial(addr)),
        ("Address", Client::dial(addr.clone())),
        ("SocketAddr", Client::dial(sock)),
        ("builder, bare HOST:PORT", Client::builder().dial(bare)),
        ("builder, &Address", Client::builder().dial(addr)),
        ("builder, SocketAddr", Client::builder().dial(sock)),
    ];
    for (how, client) in clients {
        let client = client.unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(client.addr(), addr, "{how}");
        assert_echoes(&client, how);
    }
}

#[test]
fn an_http_client_tells_its_http_address() {
    let running = echo_server().listen("127.0.0.1:0").unwrap();
    let http = format!("http@{}", running.addr().target());
    let want: Address = http.parse().unwrap();
    assert_eq!(want.protocol(), Protocol::Http);
    for (how, client) in [
        ("&str http@", Client::dial(http.as_str())),
        ("&Address http@", Client::dial(&want)),
    ] {
        let client = client.unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(client.addr(), &want, "{how}");
        assert_echoes(&client, how);
    }
}

#[test]
fn a_server_listens_on_every_kind_of_address() {
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let parsed: Address = "tcp@127.0.0.1:0".parse().unwrap();
    let server = echo_server();
    let runnings = [
        ("&str tcp@", server.listen("tcp@127.0.0.1:0")),
        ("bare HOST:PORT", server.listen("127.0.0.1:0")),
        ("String", server.listen(String::from("tcp@127.0.0.1:0"))),
        ("&Address", server.listen(&parsed)),
        ("Address", server.listen(parsed.clone())),
        ("SocketAddr", server.listen(any_port)),
        // An http@ client's server is a TCP one: the same port serves both.
        ("&str http@", server.listen("http@127.0.0.1:0")),
    ];
    for (how, running) in runnings {
        let running = running.unwrap_or_else(|e| panic!("{how}: {e}"));
        let addr = running.addr();
        assert_eq!(addr.protocol(), Protocol::Tcp, "{how}");
        let sock: SocketAddr = addr.target().parse().unwrap();
        assert!(sock.ip().is_loopback() && sock.port() != 0, "{how}: {addr}");
        // What the handle tells is an address to dial as it is.
        let client = Client::dial(addr).unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(client.addr(), addr, "{how}");
        assert_echoes(&client, how);
    }
}

#[cfg(unix)]
#[test]
fn unix_sockets_take_the_same_kinds() {
    let dir = std::env::temp_dir().join(format!("geerpc-address-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let text = format!("unix@{}", path.display());
    let want: Address = text.parse().unwrap();

    let running = echo_server().listen(&want).unwrap();
    assert_eq!(running.addr(), &want);
    for (how, client) in [
        ("&str unix@", Client::dial(text.as_str())),
        ("String", Client::dial(text.clone())),
        ("&Address", Client::dial(&want)),
    ] {
        let client = client.unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(client.addr(), &want, "{how}");
        assert_echoes(&client, how);
    }
    running.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_is_not_an_address_fails_before_any_socket_naming_it() {
    let server = echo_server();
    for bad in ["127.0.0.1", "ftp@127.0.0.1:1", "tcp@127.0.0.1:port", "tcp@"] {
        let dial = Client::dial(bad).unwrap_err();
        assert!(
            matches!(&dial, geerpc::Error::InvalidAddress { addr, .. } if addr == bad),
            "dial {bad}: {dial:?}"
        );
        let Err(listen) = server.listen(bad) else {
            panic!("listen {bad}: accepted");
        };
        assert!(
            matches!(&listen, geerpc::Error::InvalidAddress { addr, .. } if addr == bad),
            "listen {bad}: {listen:?}"
        );
        // The trait says the same, for code that takes any address.
        assert!(bad.to_address().is_err(), "{bad}");
    }
}
