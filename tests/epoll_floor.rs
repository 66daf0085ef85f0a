//! `examples/epoll_floor.rs`, the readiness-based floor `benches/scale.sh`
//! measures against (PEERS=epoll), answers the rawtcp anchor's frames
//! correctly: on several connections at once, with requests split across
//! reads and pipelined in one write, and it drops a connection that sends
//! a bad frame without harming the others. A floor that answered wrongly
//! would make its figures meaningless. `cargo test` builds the examples
//! next to the test binaries.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn sum_request(id: u32, a: i64, b: i64) -> Vec<u8> {
    let mut f = 16u32.to_le_bytes().to_vec();
    f.extend_from_slice(&id.to_le_bytes());
    f.push(0); // Sum
    f.extend_from_slice(&a.to_le_bytes());
    f.extend_from_slice(&b.to_le_bytes());
    f
}

fn read_reply(s: &mut TcpStream) -> (u32, Vec<u8>) {
    let mut hdr = [0u8; 8];
    s.read_exact(&mut hdr).unwrap();
    let len = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (u32::from_le_bytes(hdr[4..8].try_into().unwrap()), body)
}

#[test]
fn answers_split_and_pipelined_frames_on_many_connections() {
    let served = common::serve_example("epoll_floor", &["--addr", "127.0.0.1:0"]);
    let addr = served.addr.clone();
    let mut conns: Vec<TcpStream> = (0..8)
        .map(|_| {
            let s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    for (c, s) in conns.iter_mut().enumerate() {
        let c = c as i64;
        // One request in two writes, cut inside its header. The pause
        // only makes it likely that the server reads the halves apart;
        // the test asserts the same either way.
        let req = sum_request(7, c, 100);
        s.write_all(&req[..5]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        s.write_all(&req[5..]).unwrap();
        let (id, body) = read_reply(s);
        assert_eq!(id, 7);
        assert_eq!(i64::from_le_bytes(body[..].try_into().unwrap()), c + 100);
        // Three requests and an echo in one write, answered in order.
        let mut batch = Vec::new();
        for i in 0..3 {
            batch.extend(sum_request(10 + i, c, i64::from(i)));
        }
        batch.extend_from_slice(&5u32.to_le_bytes());
        batch.extend_from_slice(&99u32.to_le_bytes());
        batch.push(1); // Echo
        batch.extend_from_slice(b"hello");
        s.write_all(&batch).unwrap();
        for i in 0..3u32 {
            let (id, body) = read_reply(s);
            assert_eq!(id, 10 + i);
            assert_eq!(
                i64::from_le_bytes(body[..].try_into().unwrap()),
                c + i64::from(i)
            );
        }
        assert_eq!(read_reply(s), (99, b"hello".to_vec()));
    }
    // A bad frame (unknown method) ends that connection only.
    let mut bad = TcpStream::connect(&addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(&[0, 0, 0, 0, 1, 0, 0, 0, 9]).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        bad.read(&mut byte).unwrap_or(0),
        0,
        "the bad connection is closed"
    );
    let s = &mut conns[0];
    s.write_all(&sum_request(1, 2, 3)).unwrap();
    assert_eq!(read_reply(s), (1, 5i64.to_le_bytes().to_vec()));
}
