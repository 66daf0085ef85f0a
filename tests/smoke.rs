mod common;
use common::*;
use geerpc::{Client, Codec};

#[test]
fn smoke() {
    init_log();
    let s = start_server();
    for codec in [Codec::Json, Codec::MsgPack] {
        let c = Client::builder()
            .codec(codec)
            .dial(&s.addr().to_string())
            .unwrap();
        let r: i64 = c.call("Arith.Sum", &Args { num1: 2, num2: 3 }).unwrap();
        assert_eq!(r, 5);
        let e = c
            .call::<_, i64>("Arith.Nope", &Args { num1: 2, num2: 3 })
            .unwrap_err();
        assert!(e.to_string().contains("can't find method"), "{e}");
    }
}
