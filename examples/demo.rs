//! The article's scenario. Until the registry lands, this starts a server
//! and calls it.

use geerpc::{Client, Server, Service};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

fn main() -> Result<(), geerpc::Error> {
    let server = Server::new();
    server
        .register(Service::new("Foo").method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2)))?;
    let running = server.listen("tcp@127.0.0.1:0")?;
    let client = Client::dial(&running.addr().to_string())?;
    for i in 0..5 {
        let sum: i64 = client.call(
            "Foo.Sum",
            &Args {
                num1: i,
                num2: i * i,
            },
        )?;
        println!("{} + {} = {sum}", i, i * i);
    }
    Ok(())
}
