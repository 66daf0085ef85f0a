//! [`TraceParent`]: W3C Trace Context's `traceparent` value
//! (<https://www.w3.org/TR/trace-context/>), which carries a trace from a
//! call to the calls its handler makes, under the `traceparent` key of
//! [`Meta`](crate::Meta).

use std::fmt;

/// A parsed `traceparent`: version 00, a 16-byte trace id, an 8-byte
/// parent (span) id and the flags.
///
/// A call keeps the trace id of the call it is made from and gets a parent
/// id of its own ([`child`](TraceParent::child)), as W3C Trace Context asks
/// of every hop.
///
/// ```
/// use geerpc::context::TraceParent;
///
/// let tp: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
/// let next = tp.child();
/// assert_eq!(next.trace_id(), tp.trace_id());
/// assert_ne!(next.parent_id(), tp.parent_id());
/// assert!(next.sampled());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` value was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTraceParent;

impl fmt::Display for BadTraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")
    }
}

impl std::error::Error for BadTraceParent {}

fn hex_into(s: &str, out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return false;
    }
    for (i, o) in out.iter_mut().enumerate() {
        match u8::from_str_radix(&s[2 * i..2 * i + 2], 16) {
            Ok(v) => *o = v,
            Err(_) => return false,
        }
    }
    true
}

fn nonzero_random<const N: usize>() -> [u8; N] {
    loop {
        let b: [u8; N] = std::array::from_fn(|_| rand::random::<u8>());
        if b.iter().any(|&x| x != 0) {
            return b;
        }
    }
}

impl TraceParent {
    /// A new trace: random trace and parent ids, sampled.
    pub fn new_root() -> TraceParent {
        TraceParent {
            trace_id: nonzero_random(),
            parent_id: nonzero_random(),
            flags: 1,
        }
    }

    /// The same trace, with a new parent id: what a call made from this
    /// one sends.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            parent_id: nonzero_random(),
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        self.trace_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The parent id, 16 lowercase hex digits.
    pub fn parent_id(&self) -> String {
        self.parent_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl std::str::FromStr for TraceParent {
    type Err = BadTraceParent;

    /// Version 00 exactly as W3C writes it; a later version is read by its
    /// first four fields, as the recommendation asks.
    fn from_str(s: &str) -> Result<TraceParent, BadTraceParent> {
        let mut parts = s.split('-');
        let (Some(v), Some(t), Some(p), Some(f)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadTraceParent);
        };
        let mut version = [0u8; 1];
        let mut tp = TraceParent {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        let mut flags = [0u8; 1];
        let ok = hex_into(v, &mut version)
            && version[0] != 0xff
            && (version[0] != 0 || parts.next().is_none())
            && hex_into(t, &mut tp.trace_id)
            && hex_into(p, &mut tp.parent_id)
            && hex_into(f, &mut flags)
            && tp.trace_id != [0; 16]
            && tp.parent_id != [0; 8];
        tp.flags = flags[0];
        if ok {
            Ok(tp)
        } else {
            Err(BadTraceParent)
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.parent_id(),
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_w3c_writes_and_nothing_else() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp: TraceParent = text.parse().unwrap();
        assert_eq!(tp.to_string(), text);
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad:?}");
        }
        // A later version: its first four fields.
        let later: TraceParent = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x"
            .parse()
            .unwrap();
        assert!(!later.sampled());
    }

    #[test]
    fn a_child_keeps_the_trace_and_a_root_is_new() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.parent_id(), root.parent_id());
        assert_ne!(TraceParent::new_root().trace_id(), root.trace_id());
        assert_eq!(root.to_string().parse::<TraceParent>().unwrap(), root);
    }
}
