//! Serves a few services with some calls made, so the debug page has
//! something to show.
//!
//! ```text
//! cargo run --example debug_page [SECONDS]
//! ```
//!
//! Prints the page's URL and serves for SECONDS (default 60), or until
//! stdin closes.

use std::io::Read;
use std::time::Duration;

use geerpc::{Client, Server, Service};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

fn main() -> Result<(), geerpc::Error> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let server = Server::new();
    server.register(
        Service::new("Arith")
            .method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2))
            .method("Div", |a: Args| {
                if a.num2 == 0 {
                    Err("divide by zero")
                } else {
                    Ok(a.num1 / a.num2)
                }
            })
            .method("Sleep", |a: Args| {
                std::thread::sleep(Duration::from_millis(a.num1 as u64));
                Ok::<_, String>(a.num1)
            }),
    )?;
    server.register(
        Service::new("Stats")
            .method("Mean", |v: Vec<f64>| {
                if v.is_empty() {
                    Err("no values")
                } else {
                    Ok(v.iter().sum::<f64>() / v.len() as f64)
                }
            })
            .method(
                "Histogram",
                |m: std::collections::BTreeMap<String, Vec<Option<f64>>>| {
                    Ok::<_, String>(m.into_iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>())
                },
            )
            .method("Words", |s: String| {
                Ok::<_, String>(s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            }),
    )?;
    server
        .register(Service::new("Echo").method("Echo", |v: serde_json::Value| Ok::<_, String>(v)))?;
    let running = server.listen("tcp@127.0.0.1:0")?;

    // Some traffic, through the tunnel too, with a few errors.
    let client = Client::dial(format!("http@{}", running.addr().target()))?;
    for i in 0..200 {
        let _: i64 = client.call("Arith.Sum", &Args { num1: i, num2: 1 })?;
    }
    for i in 0..20 {
        let _ = client.call::<_, i64>(
            "Arith.Div",
            &Args {
                num1: 10,
                num2: i % 4,
            },
        );
    }
    for ms in [1, 2, 5, 20] {
        let _: i64 = client.call("Arith.Sleep", &Args { num1: ms, num2: 0 })?;
    }
    let _: f64 = client.call("Stats.Mean", &vec![1.0, 2.0, 4.5])?;
    let _ = client.call::<_, f64>("Stats.Mean", &Vec::<f64>::new());
    let _: Vec<String> = client.call("Stats.Words", &"one two three")?;

    println!("http://{}/debug/geerpc", running.addr().target());
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::Builder::new()
        .name("debug-page-stdin".into())
        .spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let _ = tx.send(());
        })
        .expect("start the stdin thread");
    let _ = rx.recv_timeout(Duration::from_secs(secs));
    running.shutdown();
    Ok(())
}
