//! The frame reader's tests: messages through one buffer, limits, resumes.

use super::*;

/// A reader that hands out its bytes in small pieces.
struct Trickle<'a>(&'a [u8], usize);
impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(self.1).min(out.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn option_then_messages_through_one_buffer() {
    let stream = b"{\"MagicNumber\":3882844}\n{\"Seq\":1}\n{\"a\":1}\n  {\"Seq\":2}\n\"x\"\n";
    for step in [1, 3, 1000] {
        let mut r = FrameReader::new(Trickle(stream, step), 1024);
        let opt = r.read_value(Codec::Json, 1024).unwrap().unwrap();
        assert_eq!(opt.trim_ascii(), b"{\"MagicNumber\":3882844}");
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.bytes(m.header).trim_ascii(), b"{\"Seq\":1}");
        assert_eq!(r.bytes(m.body).trim_ascii(), b"{\"a\":1}");
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.bytes(m.body).trim_ascii(), b"\"x\"");
        assert!(r.read_message(Codec::Json).unwrap().is_none());
    }
}

/// Counts the reads made on the inner stream.
struct Counting<R>(R, usize);
impl<R: Read> Read for Counting<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.1 += 1;
        self.0.read(out)
    }
}

#[test]
fn large_messages_are_read_several_per_syscall() {
    // 4 KiB messages through a 4 KiB starting buffer: after the first,
    // reads are sized for several messages, not one (one read per
    // message was the cost that held back the 4 KiB benchmark).
    let body = format!("\"{}\"\n", "x".repeat(4096));
    let mut stream = Vec::new();
    for seq in 0..64 {
        stream.extend_from_slice(format!("{{\"Seq\":{seq}}}\n").as_bytes());
        stream.extend_from_slice(body.as_bytes());
    }
    let mut r = FrameReader::new(Counting(io::Cursor::new(stream), 0), 1 << 20);
    for _ in 0..64 {
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(r.bytes(m.body).len(), body.len());
    }
    assert!(r.read_message(Codec::Json).unwrap().is_none());
    let reads = r.inner.1;
    assert!(reads <= 16, "{reads} reads for 64 messages of 4 KiB");
    assert!(
        r.buf.len() <= KEEP_BUF,
        "buffer stays within KEEP_BUF: {}",
        r.buf.len()
    );
}

#[test]
fn a_large_message_is_read_in_growing_steps() {
    // After small messages (a small read size), one 1 MiB JSON message:
    // reads double in size instead of adding a few KiB each time.
    let mut stream = Vec::new();
    for seq in 0..4 {
        stream.extend_from_slice(format!("{{\"Seq\":{seq}}}\n1\n").as_bytes());
    }
    let big = format!("\"{}\"\n", "y".repeat(1 << 20));
    stream.extend_from_slice(b"{\"Seq\":9}\n");
    stream.extend_from_slice(big.as_bytes());
    let mut r = FrameReader::new(Counting(io::Cursor::new(stream), 0), 2 << 20);
    for _ in 0..4 {
        r.read_message(Codec::Json).unwrap().unwrap();
    }
    let before = r.inner.1;
    let m = r.read_message(Codec::Json).unwrap().unwrap();
    assert_eq!(r.bytes(m.body).len(), big.len());
    let reads = r.inner.1 - before;
    assert!(reads <= 16, "{reads} reads for one 1 MiB message");
}

#[test]
fn small_messages_keep_a_small_buffer() {
    let mut stream = Vec::new();
    for seq in 0..1000 {
        stream.extend_from_slice(format!("{{\"Seq\":{seq}}}\n[1,2]\n").as_bytes());
    }
    let mut r = FrameReader::new(io::Cursor::new(stream), 1 << 20);
    while r.read_message(Codec::Json).unwrap().is_some() {}
    assert!(
        r.buf.len() <= INITIAL_BUF * 2,
        "buffer grew to {}",
        r.buf.len()
    );
}

#[test]
fn oversized_frame_is_refused_before_it_is_read() {
    // A msgpack bin32 claiming 4 GiB: refused from its length field alone.
    let mut stream = vec![0x80]; // header: empty map
    stream.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff]);
    let mut r = FrameReader::new(Trickle(&stream, 64), 1 << 20);
    match r.read_message(Codec::MsgPack) {
        Err(Error::MessageTooLarge { size, limit }) => {
            assert!(size > limit);
            assert!(r.buf.len() < 1 << 16, "no allocation sized from the claim");
        }
        other => panic!("expected MessageTooLarge, got {:?}", other.err()),
    }
    let long = format!("\"{}\"", "a".repeat(5000));
    let mut r = FrameReader::new(Trickle(long.as_bytes(), 512), 1000);
    assert!(matches!(
        r.read_message(Codec::Json),
        Err(Error::MessageTooLarge { .. })
    ));
}

#[test]
fn truncated_message_is_an_error_and_buffered_detection_works() {
    let mut r = FrameReader::new(Trickle(b"{\"Seq\":1}\n{\"a\":", 100), 1024);
    assert!(matches!(
        r.read_message(Codec::Json),
        Err(Error::Protocol(_))
    ));

    let mut r = FrameReader::new(Trickle(b"{}\n1\n{}\n2\n{}\n", 100), 1024);
    let m = r.read_message(Codec::Json).unwrap().unwrap();
    assert_eq!(r.bytes(m.body).trim_ascii(), b"1");
    assert!(r.has_buffered_message(Codec::Json));
    let m = r.read_message(Codec::Json).unwrap().unwrap();
    assert_eq!(r.bytes(m.body).trim_ascii(), b"2");
    assert!(!r.has_buffered_message(Codec::Json));
}

/// One message (and the newline after it) per read.
struct OnePerRead(Vec<&'static [u8]>);
impl Read for OnePerRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(m) = self.0.first().copied() else {
            return Ok(0);
        };
        self.0.remove(0);
        out[..m.len()].copy_from_slice(m);
        Ok(m.len())
    }
}

#[test]
fn a_drained_buffer_starts_again_at_its_front() {
    // Each message ends at its body's bracket or digit, before the newline
    // that follows it; that newline must not keep the buffer from draining.
    let msgs: Vec<&'static [u8]> = vec![
        b"{\"Seq\":1}\n{\"a\":1}\n",
        b"{\"Seq\":2}\n3\n",
        b"{\"Seq\":3}\n\"x\"\r\n",
        b"{\"Seq\":4}\n[1]\n",
    ];
    let total: usize = msgs.iter().map(|m| m.len()).sum();
    let mut r = FrameReader::new(OnePerRead(msgs), 1024);
    let mut read = 0;
    for seq in 1..=4 {
        let m = r.read_message(Codec::Json).unwrap().unwrap();
        assert_eq!(m.header.start, 0, "message {seq} sits at the front");
        assert_eq!(
            r.bytes(m.header.clone()),
            format!("{{\"Seq\":{seq}}}").as_bytes()
        );
        read += 1;
    }
    assert_eq!(read, 4);
    assert!(r.read_message(Codec::Json).unwrap().is_none());
    assert_eq!(r.bytes_read(), total as u64, "every byte counted once");
}
