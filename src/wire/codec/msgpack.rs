//! Where a MessagePack value ends, found from its markers and lengths alone.

use super::Scan;

/// Resumable state: the offset of the next marker and how many values are
/// still to be skipped (containers add their children).
#[derive(Debug)]
pub(crate) struct MsgPackScan {
    pos: usize,
    remaining: u64,
}

impl Default for MsgPackScan {
    fn default() -> Self {
        MsgPackScan {
            pos: 0,
            remaining: 1,
        }
    }
}

/// One marker's layout: bytes of header (marker and length fields), bytes of
/// data after them, and child values that follow.
struct Layout {
    header: usize,
    data: usize,
    children: u64,
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

impl MsgPackScan {
    pub(crate) fn at_start(&self) -> bool {
        self.pos == 0
    }

    pub(crate) fn scan(&mut self, buf: &[u8]) -> Result<Scan, String> {
        // Every value still to come takes at least one byte, so the hint
        // counts them: an array or map count over the size limit is refused
        // from its field, before its elements arrive.
        let need = |at: usize, values: u64| {
            at.saturating_add(usize::try_from(values).unwrap_or(usize::MAX))
        };
        while self.remaining > 0 {
            let Some(&marker) = buf.get(self.pos) else {
                return Ok(Scan::Incomplete(need(self.pos, self.remaining)));
            };
            // Bytes of length field after the marker, for variable-size kinds.
            let fixed = |header: usize, data: usize| Layout {
                header,
                data,
                children: 0,
            };
            let len_field = match marker {
                0xc4 | 0xd9 | 0xc7 => 1,
                0xc5 | 0xda | 0xc8 | 0xdc | 0xde => 2,
                0xc6 | 0xdb | 0xc9 | 0xdd | 0xdf => 4,
                _ => 0,
            };
            if buf.len() < self.pos + 1 + len_field {
                return Ok(Scan::Incomplete(need(
                    self.pos + 1 + len_field,
                    self.remaining - 1,
                )));
            }
            let n = be(&buf[self.pos + 1..self.pos + 1 + len_field]) as usize;
            let layout = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => fixed(1, 0),
                0x80..=0x8f => Layout {
                    header: 1,
                    data: 0,
                    children: 2 * u64::from(marker & 0x0f),
                },
                0x90..=0x9f => Layout {
                    header: 1,
                    data: 0,
                    children: u64::from(marker & 0x0f),
                },
                0xa0..=0xbf => fixed(1, usize::from(marker & 0x1f)),
                0xc1 => return Err("invalid MessagePack marker 0xc1".to_string()),
                0xc4..=0xc6 | 0xd9..=0xdb => fixed(1 + len_field, n),
                // ext: a type byte after the length, then the data
                0xc7..=0xc9 => fixed(2 + len_field, n),
                0xca => fixed(1, 4),
                0xcb => fixed(1, 8),
                0xcc | 0xd0 => fixed(1, 1),
                0xcd | 0xd1 => fixed(1, 2),
                0xce | 0xd2 => fixed(1, 4),
                0xcf | 0xd3 => fixed(1, 8),
                0xd4 => fixed(2, 1),
                0xd5 => fixed(2, 2),
                0xd6 => fixed(2, 4),
                0xd7 => fixed(2, 8),
                0xd8 => fixed(2, 16),
                0xdc | 0xdd => Layout {
                    header: 1 + len_field,
                    data: 0,
                    children: n as u64,
                },
                0xde | 0xdf => Layout {
                    header: 1 + len_field,
                    data: 0,
                    children: 2 * n as u64,
                },
            };
            let end = self
                .pos
                .checked_add(layout.header)
                .and_then(|e| e.checked_add(layout.data))
                .ok_or_else(|| "MessagePack length overflows".to_string())?;
            // Saturating: 2^32 children per marker could add up past u64
            // only under a limit no stream reaches, but never wrap.
            let remaining = (self.remaining - 1).saturating_add(layout.children);
            if buf.len() < end {
                return Ok(Scan::Incomplete(need(end, remaining)));
            }
            self.pos = end;
            self.remaining = remaining;
        }
        Ok(Scan::Complete(self.pos))
    }
}
