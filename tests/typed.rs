//! `#[geerpc::service]` used as a crate outside geerpc uses it: public
//! items only, the trait in a public, documented module (so the generated
//! items pass `missing_docs` and clippy `-D warnings` here). Every shape
//! of issue 20 over a `Client` (both codecs, `tcp@` and `http@`), an
//! `Arc` and a reference of one, and an `XClient` over two servers with
//! the typed broadcast, fork and inform.
#![deny(missing_docs, warnings)]

use std::sync::Arc;
use std::time::Duration;

use geerpc::client::PendingCall;
use geerpc::{
    CallOptions, Client, Code, Codec, Error, MultiServerDiscovery, SelectMode, Server, Status,
    XClient,
};

use api::{Args, ArithClient, ArithService, Calc};

/// The service as a user crate would define it.
pub mod api {
    use std::fmt;
    use std::sync::Mutex;
    use std::time::Duration;

    use crossbeam_channel::{Receiver, Sender};
    use serde::{Deserialize, Serialize};

    /// Two numbers, with Go's field names.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "PascalCase")]
    pub struct Args {
        /// The first.
        pub num1: i64,
        /// The second.
        pub num2: i64,
    }

    /// Division's own error: any `Display` error will do.
    #[derive(Debug)]
    pub struct DivError;

    impl fmt::Display for DivError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("divide by zero")
        }
    }

    /// Arithmetic, the article's service.
    #[geerpc::service]
    pub trait Arith {
        /// Adds the two numbers.
        fn sum(&self, args: Args) -> Result<i64, String>;
        /// Divides the first by the second.
        fn div(&self, args: Args) -> Result<i64, DivError>;
        /// The caller's metadata `who`, or the peer address.
        fn who(&self, ctx: &geerpc::Context, args: ()) -> Result<String, String>;
        /// This server's name (differs between the XClient's servers).
        fn name(&self, args: ()) -> Result<String, geerpc::Status>;
        /// Waits until the test lets it go (for timeouts), then answers.
        #[geerpc(name = "Held")]
        fn wait_for_release(&self, args: u32) -> Result<u32, String>;
    }

    /// The implementation.
    pub struct Calc {
        /// What `name` answers.
        pub name: String,
        /// Told when `wait_for_release` starts.
        pub started: Sender<()>,
        /// What `wait_for_release` waits on.
        pub release: Mutex<Receiver<()>>,
    }

    impl Arith for Calc {
        fn sum(&self, a: Args) -> Result<i64, String> {
            Ok(a.num1 + a.num2)
        }
        fn div(&self, a: Args) -> Result<i64, DivError> {
            a.num1.checked_div(a.num2).ok_or(DivError)
        }
        fn who(&self, ctx: &geerpc::Context, (): ()) -> Result<String, String> {
            Ok(ctx
                .meta()
                .get("who")
                .map_or_else(|| ctx.peer().to_string(), str::to_string))
        }
        fn name(&self, (): ()) -> Result<String, geerpc::Status> {
            if self.name == "down" {
                return Err(geerpc::Status::new(
                    geerpc::Code::Unavailable,
                    "down on purpose",
                ));
            }
            Ok(self.name.clone())
        }
        fn wait_for_release(&self, n: u32) -> Result<u32, String> {
            let _ = self.started.send(());
            let release = self.release.lock().unwrap();
            release
                .recv_timeout(Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
            Ok(n)
        }
    }
}

/// A Calc and the ends of its channels.
struct Fixture {
    calc: Calc,
    started: crossbeam_channel::Receiver<()>,
    release: crossbeam_channel::Sender<()>,
}

fn calc(name: &str) -> Fixture {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded();
    Fixture {
        calc: Calc {
            name: name.to_string(),
            started: started_tx,
            release: std::sync::Mutex::new(release_rx),
        },
        started,
        release,
    }
}

fn serve(calc: Calc) -> geerpc::server::ServerHandle {
    let server = Server::new();
    server.register(ArithService::new(calc)).unwrap();
    server.listen("tcp@127.0.0.1:0").unwrap()
}

fn args(num1: i64, num2: i64) -> Args {
    Args { num1, num2 }
}

/// Every shape over `client`, a connection to a server whose `name` is
/// `name`.
fn every_shape(client: &ArithClient<Client>, name: &str) {
    assert_eq!(client.sum(&args(1, 2)).unwrap(), 3);
    assert_eq!(client.div(&args(7, 2)).unwrap(), 3);
    // The handler's own error type reaches the caller as its text.
    let err = client.div(&args(1, 0)).unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message.contains("divide by zero")),
        "{err:?}"
    );
    // A Status error keeps its code.
    assert_eq!(client.name(&()).unwrap(), name);
    // The context: metadata sent with `with`, the peer without.
    let opts = CallOptions::new().meta("who", "tester").unwrap();
    assert_eq!(client.with(opts).who(&()).unwrap(), "tester");
    assert!(client.who(&()).unwrap().contains("127.0.0.1"));
    // The pending call, waited for, and through the trait.
    let call = client.go_sum(&args(2, 2)).unwrap();
    assert_eq!(call.wait().unwrap(), 4);
    let call = client.go_sum(&args(3, 3)).unwrap();
    assert_eq!(PendingCall::wait(call).unwrap(), 6);
    // The wire name is Go's `Service.Method`: the dynamic call reaches it.
    assert_eq!(
        client
            .get_ref()
            .call::<_, i64>("Arith.Sum", &args(5, 5))
            .unwrap(),
        10
    );
}

#[test]
fn every_shape_over_a_client_with_both_codecs_tcp_and_http() {
    let f = calc("one");
    let running = serve(f.calc);
    let target = running.addr().target().to_string();
    for codec in [Codec::Json, Codec::MsgPack] {
        for addr in [format!("tcp@{target}"), format!("http@{target}")] {
            let client = Client::builder().codec(codec).dial(addr.as_str()).unwrap();
            every_shape(&ArithClient::new(client), "one");
        }
    }
}

#[test]
fn the_same_client_over_an_arc_and_a_reference() {
    let f = calc("one");
    let running = serve(f.calc);
    let client = Client::dial(running.addr()).unwrap();
    let by_ref = ArithClient::new(&client);
    assert_eq!(by_ref.sum(&args(1, 1)).unwrap(), 2);
    let shared = ArithClient::new(Arc::new(client.clone()));
    let copy = shared.clone();
    let t = std::thread::spawn(move || copy.sum(&args(2, 3)).unwrap());
    assert_eq!(t.join().unwrap(), 5);
    assert_eq!(shared.go_sum(&args(4, 4)).unwrap().wait().unwrap(), 8);
    // The options a `with` client carries, and none on the plain one.
    // The adapter and the client say what they are.
    let adapter = ArithService::new(calc("x").calc);
    assert_eq!(
        format!("{adapter:?}"),
        r#"ArithService { service: "Arith", .. }"#
    );
    assert!(format!("{by_ref:?}").starts_with("ArithClient { inner: Client"));
    let with = shared.with(CallOptions::new().timeout(Duration::from_secs(3)));
    assert!(with
        .options()
        .is_some_and(|o| format!("{o:?}").contains("3s")));
    assert!(shared.options().is_none());
}

#[test]
fn a_status_error_keeps_its_code() {
    let f = calc("down");
    let running = serve(f.calc);
    let client = ArithClient::new(Client::dial(running.addr()).unwrap());
    let err = client.name(&()).unwrap_err();
    assert_eq!(err.remote_code(), Some(&Code::Unavailable), "{err:?}");
    let _: Status = Status::from(err);
}

#[test]
fn with_a_timeout_the_typed_call_ends_at_it() {
    let f = calc("one");
    let running = serve(f.calc);
    let client = ArithClient::new(Client::dial(running.addr()).unwrap());
    let t0 = std::time::Instant::now();
    let err = client
        .with(CallOptions::new().timeout(Duration::from_millis(50)))
        .wait_for_release(&7)
        .unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // 50 ms, with a generous margin for a loaded 2-core machine; the point
    // is that it did not wait for the (never sent) release.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The handler did start: the call reached it under its wire name `Held`.
    f.started.recv_timeout(Duration::from_secs(10)).unwrap();
    // The typed go_ with the options ends at the deadline too.
    let call = client
        .with(CallOptions::new().timeout(Duration::from_millis(50)))
        .go_wait_for_release(&8)
        .unwrap();
    assert!(matches!(call.wait(), Err(Error::Timeout { .. })));
    // Released, a call without options gets its reply.
    f.release.send(()).unwrap();
    f.release.send(()).unwrap();
    f.release.send(()).unwrap();
    assert_eq!(client.wait_for_release(&9).unwrap(), 9);
}

#[test]
fn over_an_xclient_with_two_servers() {
    let (a, b) = (calc("a"), calc("b"));
    let (ra, rb) = (serve(a.calc), serve(b.calc));
    let discovery = MultiServerDiscovery::new([ra.addr().clone(), rb.addr().clone()]);
    let xc = ArithClient::new(XClient::new(discovery, SelectMode::RoundRobin));
    assert_eq!(xc.sum(&args(1, 2)).unwrap(), 3);
    // Round robin reaches both servers.
    let mut names: Vec<String> = (0..4).map(|_| xc.name(&()).unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["a", "b"]);
    // The pending call (an XCall: it knows where it went).
    let call = xc.go_sum(&args(2, 5)).unwrap();
    let to = call.addr().to_string();
    assert!(to == ra.addr().to_string() || to == rb.addr().to_string());
    assert_eq!(call.wait().unwrap(), 7);
    // Per-call settings.
    let opts = CallOptions::new().meta("who", "x").unwrap();
    assert_eq!(xc.with(opts).who(&()).unwrap(), "x");
    // Typed fan-out: every instance answers.
    assert_eq!(xc.broadcast_sum(&args(1, 1)).unwrap(), 2);
    let fork = xc.fork_name(&()).unwrap();
    assert!(fork == "a" || fork == "b", "{fork}");
    let all = xc.inform_name(&()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[&ra.addr().to_string()].as_ref().unwrap(), "a");
    assert_eq!(all[&rb.addr().to_string()].as_ref().unwrap(), "b");
    // Broadcast fails with the first error.
    let err = xc.broadcast_div(&args(1, 0)).unwrap_err();
    assert!(err.to_string().contains("divide by zero"), "{err}");
}

#[test]
fn over_an_arc_of_an_xclient_the_fan_out_is_typed_too() {
    let (a, b) = (calc("a"), calc("down"));
    let (ra, rb) = (serve(a.calc), serve(b.calc));
    let discovery = MultiServerDiscovery::new([ra.addr().clone(), rb.addr().clone()]);
    let xc = Arc::new(XClient::new(discovery, SelectMode::Random));
    let typed = ArithClient::new(Arc::clone(&xc));
    // Fork: the first success ("down" fails); broadcast: the failure.
    assert_eq!(typed.fork_name(&()).unwrap(), "a");
    let err = typed.broadcast_name(&()).unwrap_err();
    assert_eq!(err.remote_code(), Some(&Code::Unavailable), "{err:?}");
    // `with` over the Arc keeps the fan-out (a `&Arc<XClient>` fans out).
    let with = typed.with(CallOptions::new().timeout(Duration::from_secs(5)));
    assert_eq!(with.broadcast_sum(&args(2, 2)).unwrap(), 4);
}

#[test]
fn over_an_xclient_with_msgpack_and_an_http_instance() {
    let (a, b) = (calc("a"), calc("b"));
    let (ra, rb) = (serve(a.calc), serve(b.calc));
    // One instance reached through HTTP CONNECT, the other plain.
    let http_b = format!("http@{}", rb.addr().target());
    for codec in [Codec::Json, Codec::MsgPack] {
        let discovery = MultiServerDiscovery::new([ra.addr().to_string(), http_b.clone()]);
        let xc = XClient::builder(discovery)
            .select_mode(SelectMode::RoundRobin)
            .client(Client::builder().codec(codec))
            .build();
        let typed = ArithClient::new(xc);
        assert_eq!(typed.sum(&args(40, 2)).unwrap(), 42);
        assert_eq!(typed.go_sum(&args(1, 1)).unwrap().wait().unwrap(), 2);
        let all = typed.inform_name(&()).unwrap();
        assert_eq!(all[&ra.addr().to_string()].as_ref().unwrap(), "a");
        assert_eq!(all[&http_b].as_ref().unwrap(), "b");
        assert_eq!(typed.broadcast_sum(&args(2, 3)).unwrap(), 5);
        let err = typed.fork_div(&args(1, 0)).unwrap_err();
        assert!(err.to_string().contains("divide by zero"), "{err}");
    }
}

/// The issue's snippet, as written there (with `Calc` and `discovery`
/// made here).
#[test]
#[allow(clippy::needless_borrows_for_generic_args)] // `dial(&...)`, as the issue writes it
fn the_issues_snippet_as_written() -> geerpc::Result<()> {
    let Fixture { calc: imp, .. } = calc("one");
    let server = geerpc::Server::new();
    server.register(ArithService::new(imp))?;
    let running = server.listen("tcp@127.0.0.1:0")?;

    let client = ArithClient::new(geerpc::Client::dial(&running.addr().to_string())?);
    let sum: i64 = client.sum(&Args { num1: 1, num2: 2 })?;
    assert_eq!(sum, 3);
    let call = client.go_sum(&Args { num1: 1, num2: 2 })?;
    let sum: i64 = call.wait()?;
    assert_eq!(sum, 3);
    let discovery = MultiServerDiscovery::new([running.addr().clone()]);
    let xc = ArithClient::new(geerpc::XClient::new(
        discovery,
        geerpc::SelectMode::RoundRobin,
    ));
    let sum: i64 = xc.sum(&Args { num1: 1, num2: 2 })?;
    assert_eq!(sum, 3);
    let args = Args { num1: 1, num2: 2 };
    let sum: i64 = client
        .with(CallOptions::new().timeout(Duration::from_millis(50)))
        .sum(&args)?;
    assert_eq!(sum, 3);
    Ok(())
}
