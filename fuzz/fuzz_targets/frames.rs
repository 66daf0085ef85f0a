//! Any bytes through the frame reader, either codec, any chunking: no
//! panic, no spin, no message over the limit, a bounded buffer.
#![no_main]

use geerpc::__fuzz::Reader;
use geerpc_fuzz::{read_messages, Chunked, Plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((plan, stream)) = Plan::split(data) else {
        return;
    };
    let mut rd = Reader::new(Chunked::new(stream, &plan), plan.max);
    read_messages(&mut rd, plan.codec, plan.max, plan.peek);
});
