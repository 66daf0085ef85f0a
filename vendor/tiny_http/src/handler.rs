//! geerpc patch (PATCHES.md item 8): serving a connection's requests on its
//! own thread, through the handler given to
//! `Server::from_listener_with_handler`.

use std::sync::mpsc;
use std::sync::Weak;

use crate::client::ClientConnection;
use crate::Handler;

/// geerpc patch: a connection's requests, each passed to the handler on
/// this thread. The client iterator reads a request's successor only once
/// the handler returned, and hands it out only once that request has been
/// answered (`client.rs`); HTTPS waits for the answer before reading, as
/// the queue path does (a read holds the stream's lock). Ends when the
/// peer closes, a read fails, the server (which owns the handler) is gone,
/// or the handler panics.
pub(crate) fn serve_on_connection(client: ClientConnection, handler: &Weak<Handler>) {
    let secure = client.secure();
    let (sender, receiver) = mpsc::channel();
    for rq in client {
        let Some(handler) = handler.upgrade() else {
            break;
        };
        let rq = if secure {
            rq.with_notify_sender(sender.clone())
        } else {
            rq
        };
        let run = std::panic::AssertUnwindSafe(|| handler(rq));
        if std::panic::catch_unwind(run).is_err() {
            log::error!("request handler panicked: closing its connection");
            break;
        }
        drop(handler);
        if secure && receiver.recv().is_err() {
            break;
        }
    }
}

