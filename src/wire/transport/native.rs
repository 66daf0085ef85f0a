//! The stream calls with the systems' own flags: sends that never block
//! (`MSG_DONTWAIT`), a look without reading (`MSG_PEEK`) and waiting for
//! room (`poll`). See the parent module for which systems.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{Sock, Stream};

pub(super) fn send_nowait(s: &Stream, buf: &[u8]) -> io::Result<usize> {
    // MSG_NOSIGNAL: a peer gone is an error here, not a SIGPIPE.
    s.sock()
        .send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

pub(super) fn wait_writable(s: &Stream, timeout: Duration) -> io::Result<bool> {
    let fd = match &s.sock {
        Sock::Tcp(s) => s.as_raw_fd(),
        Sock::Unix(s) => s.as_raw_fd(),
        #[cfg(feature = "tls")]
        Sock::Tls(t) => t.tcp().as_raw_fd(),
    };
    super::poll_fd(fd, libc::POLLOUT, Some(timeout))
}

pub(super) fn read_nowait(s: &Stream, buf: &mut [u8]) -> io::Result<usize> {
    let fd = match &s.sock {
        Sock::Tcp(s) => s.as_raw_fd(),
        Sock::Unix(s) => s.as_raw_fd(),
        #[cfg(feature = "tls")]
        Sock::Tls(t) => t.tcp().as_raw_fd(),
    };
    loop {
        // SAFETY: `buf` is valid for writes of its length, and `fd` is
        // a descriptor this stream owns.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub(super) fn readable_now(s: &Stream) -> io::Result<bool> {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    match s
        .sock()
        .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}
