//! A connection's first bytes as the server reads them: an optional HTTP
//! head (lines through the same reader, as src/server/http.rs reads them),
//! the Option, then messages in the codec it chose.
#![no_main]

use geerpc::__fuzz::{self as fz, Reader};
use geerpc::Error;
use geerpc_fuzz::{check_capacity, read_messages, would_block, Chunked, Plan};
use libfuzzer_sys::fuzz_target;

/// src/server/http.rs's limit on a whole head.
const MAX_HEAD: usize = 8 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((plan, stream)) = Plan::split(data) else {
        return;
    };
    let mut rd = Reader::new(Chunked::new(stream, &plan), plan.max);
    let first = loop {
        match rd.peek(1) {
            Err(e) if would_block(&e) => continue,
            Ok(b) => break b.first().copied(),
            Err(e) => panic!("{e:?}"),
        }
    };
    let Some(first) = first else { return };
    if first.is_ascii_uppercase() {
        let mut total = 0;
        loop {
            match rd.read_until(b"\n", MAX_HEAD.saturating_sub(total)) {
                Err(e) if would_block(&e) => continue,
                Ok(line) => {
                    assert!(line.len() <= MAX_HEAD - total && line.ends_with(b"\n"));
                    total += line.len();
                    if line.trim_ascii().is_empty() && total > line.len() {
                        break;
                    }
                }
                Err(Error::MessageTooLarge { .. } | Error::Protocol(_)) => return,
                Err(e) => panic!("{e:?}"),
            }
        }
        check_capacity(&rd);
    }
    let accepted = loop {
        match fz::read_handshake(&mut rd) {
            Err(e) if would_block(&e) => continue,
            Ok(Some(a)) => break a,
            Ok(None) | Err(Error::Protocol(_) | Error::MessageTooLarge { .. }) => return,
            Err(e) => panic!("{e:?}"),
        }
    };
    check_capacity(&rd);
    read_messages(&mut rd, accepted.0, plan.max, plan.peek);
});
