//! The stream calls with std alone, for systems without `native`'s flags
//! (and for tests of this path on Linux: `FORCE_PORTABLE`).

use std::io::{self, Write};
use std::time::Duration;

use super::{Sock, Stream};

/// A plain, blocking write: what the socket does not take at once is
/// waited for, here. So a thread that must not block on a write (a
/// connection's reader) may, while the peer does not read, until the
/// peer reads, the connection's write timeout closes it, or the peer's
/// does. Callers stay correct (`WouldBlock` never comes, every byte is
/// sent or an error is returned); only that guarantee is lost.
pub(super) fn send_nowait(s: &Stream, buf: &[u8]) -> io::Result<usize> {
    match &s.sock {
        Sock::Tcp(t) => (&**t).write(buf),
        #[cfg(unix)]
        Sock::Unix(u) => (&**u).write(buf),
        #[cfg(all(feature = "tls", unix))]
        Sock::Tls(t) => t.write(buf),
    }
}

/// Writes here block until the socket takes them, so there is always
/// room to try.
pub(super) fn wait_writable(_: &Stream, _: Duration) -> io::Result<bool> {
    Ok(true)
}

/// Nothing is known to be waiting: an idle connection the server closed
/// is found out by the next call's write or read.
pub(super) fn readable_now(_: &Stream) -> io::Result<bool> {
    Ok(false)
}

/// No read that cannot block: nothing is read ahead.
pub(super) fn read_nowait(_: &Stream, _: &mut [u8]) -> io::Result<usize> {
    Err(io::ErrorKind::WouldBlock.into())
}
