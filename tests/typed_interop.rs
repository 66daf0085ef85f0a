//! Generated services and clients speak the same wire as everything else:
//! a generated client calls a server registered with closures, a dynamic
//! `Client::call` calls a generated service, and a Go-style JSON byte
//! stream (what a Go GeeRPC client writes) calls a generated service.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use geerpc::{Client, Error, Server, Service};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Go's `Args` (field names as Go writes them).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

#[geerpc::service]
trait Arith {
    fn sum(&self, args: Args) -> Result<i64, String>;
    fn div(&self, args: Args) -> Result<i64, String>;
    fn get_user(&self, id: u64) -> Result<String, String>;
}

struct Calc;

impl Arith for Calc {
    fn sum(&self, a: Args) -> Result<i64, String> {
        Ok(a.num1 + a.num2)
    }
    fn div(&self, a: Args) -> Result<i64, String> {
        a.num1
            .checked_div(a.num2)
            .ok_or_else(|| "divide by zero".into())
    }
    fn get_user(&self, id: u64) -> Result<String, String> {
        Ok(format!("user-{id}"))
    }
}

fn typed_server() -> geerpc::server::ServerHandle {
    let server = Server::new();
    server.register(ArithService::new(Calc)).unwrap();
    server.listen("tcp@127.0.0.1:0").unwrap()
}

#[test]
fn a_generated_client_calls_a_closure_server() {
    let server = Server::new();
    server
        .register(
            Service::new("Arith")
                .method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2))
                .method("Div", |a: Args| {
                    a.num1.checked_div(a.num2).ok_or("closure: divide by zero")
                })
                .method("GetUser", |id: u64| {
                    Ok::<_, String>(format!("closure-{id}"))
                }),
        )
        .unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let client = ArithClient::new(Client::dial(running.addr()).unwrap());
    assert_eq!(client.sum(&Args { num1: 20, num2: 22 }).unwrap(), 42);
    assert_eq!(client.get_user(&7).unwrap(), "closure-7");
    let err = client.div(&Args { num1: 1, num2: 0 }).unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "closure: divide by zero"),
        "{err:?}"
    );
}

#[test]
fn a_dynamic_client_calls_a_generated_service() {
    let running = typed_server();
    let client = Client::dial(running.addr()).unwrap();
    let sum: i64 = client
        .call("Arith.Sum", &json!({"Num1": 1, "Num2": 2}))
        .unwrap();
    assert_eq!(sum, 3);
    let user: String = client.call("Arith.GetUser", &5u64).unwrap();
    assert_eq!(user, "user-5");
    // Rust names are not wire names.
    let err = client
        .call::<_, String>("Arith.get_user", &5u64)
        .unwrap_err();
    assert!(err.to_string().contains("get_user"), "{err}");
    // An argument of the wrong shape is that call's error, naming it.
    let err = client.call::<_, i64>("Arith.Sum", &"nope").unwrap_err();
    assert!(err.to_string().contains("Arith.Sum"), "{err}");
    assert_eq!(
        client
            .call::<_, i64>("Arith.Sum", &json!({"Num1": 2, "Num2": 2}))
            .unwrap(),
        4
    );
}

/// Writes what a Go GeeRPC client writes: the JSON Option line, then per
/// call a header line and a body line; reads each reply's two lines.
struct GoPeer {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl GoPeer {
    fn dial(addr: &geerpc::Address) -> GoPeer {
        let mut s = TcpStream::connect(addr.target()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            b"{\"MagicNumber\":3882844,\"CodecType\":\"application/json\",\
              \"ConnectTimeout\":0,\"HandleTimeout\":0}\n",
        )
        .unwrap();
        GoPeer {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn call(&mut self, seq: u64, method: &str, body: &str) -> (Value, Value) {
        let req =
            format!("{{\"ServiceMethod\":\"{method}\",\"Seq\":{seq},\"Error\":\"\"}}\n{body}\n");
        self.writer.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let header: Value = serde_json::from_str(&line).unwrap();
        line.clear();
        self.reader.read_line(&mut line).unwrap();
        let body: Value = serde_json::from_str(&line).unwrap();
        (header, body)
    }
}

#[test]
fn a_go_json_byte_stream_calls_a_generated_service() {
    let running = typed_server();
    let mut go = GoPeer::dial(running.addr());
    let (h, b) = go.call(1, "Arith.Sum", r#"{"Num1":3,"Num2":4}"#);
    assert_eq!(h["ServiceMethod"], "Arith.Sum");
    assert_eq!(h["Seq"], 1);
    assert_eq!(h["Error"], "");
    assert_eq!(b, json!(7));
    let (h, b) = go.call(2, "Arith.GetUser", "9");
    assert_eq!(
        (h["Seq"].clone(), h["Error"].clone()),
        (json!(2), json!(""))
    );
    assert_eq!(b, json!("user-9"));
    // The handler's error travels in the header's Error, as Go's does.
    let (h, _) = go.call(3, "Arith.Div", r#"{"Num1":1,"Num2":0}"#);
    assert_eq!(h["Seq"], 3);
    assert_eq!(h["Error"], "divide by zero");
    // And the connection goes on.
    let (h, b) = go.call(4, "Arith.Sum", r#"{"Num1":-1,"Num2":1}"#);
    assert_eq!((h["Seq"].clone(), b), (json!(4), json!(0)));
}
