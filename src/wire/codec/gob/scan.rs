//! Where a gob value ends in a stream: after any number of type
//! definitions (messages with a negative type id), the message with a
//! positive id. Found from the length prefixes and ids alone.

use super::super::Scan;
use super::varint::{peek_uint, Cursor};

/// Resumable state: where the next message starts. It stays at the value
/// message once that is found, so scanning again answers the same.
#[derive(Debug, Default)]
pub(crate) struct GobScan {
    pos: usize,
}

impl GobScan {
    pub(crate) fn at_start(&self) -> bool {
        self.pos == 0
    }

    pub(crate) fn scan(&mut self, buf: &[u8]) -> Result<Scan, String> {
        loop {
            let Some((n, len)) = peek_uint(&buf[self.pos..])? else {
                return Ok(Scan::Incomplete(buf.len() + 1));
            };
            if len == 0 {
                return Err("gob: empty message".into());
            }
            // A length past usize is past any limit: saturate, and the
            // frame reader refuses it from the hint.
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| (self.pos + n).checked_add(l))
                .unwrap_or(usize::MAX);
            if buf.len() < end {
                return Ok(Scan::Incomplete(end));
            }
            let id = Cursor::new(&buf[self.pos + n..end]).int()?;
            match id {
                0 => return Err("gob: message with type id 0".into()),
                id if id < 0 => self.pos = end,
                _ => return Ok(Scan::Complete(end)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_ends_after_its_definitions() {
        // def (-65), value (65), then a second value (builtin int).
        let stream = [
            3, 0xff, 0x81, 0x00, 3, 0xff, 0x82, 0x00, 3, 0x04, 0x00, 0x0e,
        ];
        let mut sc = GobScan::default();
        for end in 0..8 {
            assert!(matches!(sc.scan(&stream[..end]).unwrap(), Scan::Incomplete(n) if n > end));
        }
        assert_eq!(sc.scan(&stream[..8]).unwrap(), Scan::Complete(8));
        assert_eq!(
            sc.scan(&stream).unwrap(),
            Scan::Complete(8),
            "rescanning answers the same"
        );
        assert_eq!(
            GobScan::default().scan(&stream[8..]).unwrap(),
            Scan::Complete(4)
        );
    }

    #[test]
    fn a_huge_length_asks_for_all_of_it_and_garbage_is_refused() {
        let mut sc = GobScan::default();
        match sc
            .scan(&[0xf8, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap()
        {
            Scan::Incomplete(n) => assert!(n > 1 << 40),
            other => panic!("{other:?}"),
        }
        assert!(GobScan::default().scan(&[0x00]).is_err());
        assert!(GobScan::default().scan(&[0x01, 0x00]).is_err(), "type id 0");
        assert!(GobScan::default().scan(&[0xf0]).is_err(), "16-byte integer");
    }
}
