//! Encode and decode of one request message (header + body) per codec.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use geerpc::Codec;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(rename = "ServiceMethod")]
    service_method: String,
    #[serde(rename = "Seq")]
    seq: u64,
    #[serde(rename = "Error")]
    error: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

fn header() -> Header {
    Header {
        service_method: "Arith.Sum".into(),
        seq: 123_456,
        error: String::new(),
    }
}

fn bench_codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for codec in [Codec::Json, Codec::MsgPack] {
        let name = match codec {
            Codec::Json => "json",
            _ => "msgpack",
        };
        let args = Args {
            num1: 1 << 33,
            num2: -7,
        };
        let payload = "x".repeat(4096);
        g.throughput(Throughput::Elements(1));
        let mut out = Vec::with_capacity(8192);
        g.bench_function(format!("{name}/encode/sum"), |b| {
            b.iter(|| {
                out.clear();
                codec.encode_into(&mut out, &header(), "header").unwrap();
                codec
                    .encode_into(&mut out, black_box(&args), "body")
                    .unwrap();
            })
        });
        g.bench_function(format!("{name}/encode/echo4k"), |b| {
            b.iter(|| {
                out.clear();
                codec.encode_into(&mut out, &header(), "header").unwrap();
                codec
                    .encode_into(&mut out, black_box(&payload), "body")
                    .unwrap();
            })
        });
        let mut h = Vec::new();
        codec.encode_into(&mut h, &header(), "header").unwrap();
        let mut body = Vec::new();
        codec.encode_into(&mut body, &args, "body").unwrap();
        let mut big = Vec::new();
        codec.encode_into(&mut big, &payload, "body").unwrap();
        g.bench_function(format!("{name}/decode/sum"), |b| {
            b.iter(|| {
                let hd: Header = codec.decode(black_box(&h), "header").unwrap();
                let a: Args = codec.decode(black_box(&body), "body").unwrap();
                (hd.seq, a.num1)
            })
        });
        g.bench_function(format!("{name}/decode/echo4k"), |b| {
            b.iter(|| {
                let hd: Header = codec.decode(black_box(&h), "header").unwrap();
                let s: String = codec.decode(black_box(&big), "body").unwrap();
                (hd.seq, s.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_codecs);
criterion_main!(benches);
