//! Graceful shutdown in two steps, so that a rolling restart fails no request.
//!
//! On SIGTERM (or SIGINT) the replica first **drains** for `server.drain_secs`. It goes on
//! serving every request, but `/readyz` answers 503 and every answer closes its connection.
//! Load balancers that probe readiness take it out of rotation, and proxies keep no idle
//! connection to it: a proxy that reused one just as the replica closed it would fail a
//! request it may not retry (a login is a POST).
//!
//! Then it **stops accepting**. A new connection is refused, which a proxy retries on another
//! replica, since the request was never sent. Requests in flight get
//! `server.shutdown_timeout_secs` to finish. A second signal cuts the drain short. Behind a
//! proxy that cannot probe readiness (nginx), a connection still in the listen backlog as the
//! listener closes ends with its request sent and unread: about 1 in 10 000 under flat-out load.
//! The request was never read, so nginx sends it to another replica, even a POST
//! (`non_idempotent` in deploy/nginx/portcullis.conf; docs/failure-modes.md).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Whether the replica is draining: shared by the server's workers and the shutdown.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
}

impl Drain {
    /// Whether a shutdown has begun (readiness fails, connections close after each answer).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// SIGTERM and SIGINT, whichever comes.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Runs `server` until a signal, then drains for `drain_for` and stops it gracefully. A server
/// stopped another way (its handle) ends this at once.
pub async fn serve(server: Server, drain: &Drain, drain_for: Duration) -> io::Result<()> {
    let handle = server.handle();
    let mut signals = Signals::new()?;
    tokio::pin!(server);
    tokio::select! {
        ended = &mut server => return ended,
        () = signals.next() => {}
    }
    drain.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        drain_secs = drain_for.as_secs(),
        "shutting down: draining (readyz answers 503) before the listener closes"
    );
    tokio::select! {
        ended = &mut server => return ended,
        () = tokio::time::sleep(drain_for) => {}
        () = signals.next() => tracing::info!("a second signal: the drain is cut short"),
    }
    tracing::info!("no longer accepting connections; requests in flight finish");
    let ((), ended) = tokio::join!(handle.stop(true), server);
    ended
}
