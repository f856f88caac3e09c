//! A TCP link of the test's own between clients and a server, whose round trip the test can
//! lengthen while it runs: what `tc qdisc ... netem delay` would do, for kernels without netem.
//!
//! Every byte a client sends is held for the current delay before it goes on, in order; the
//! server's answers come back at once. So each request and answer pair takes the delay longer,
//! as it would with netem on the clients' side of the link.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A listening link, forwarding to one server, until dropped.
pub struct SlowLink {
    /// The port it listens on (every address of the host).
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// Listens on `0.0.0.0:port` (0: any free port) and forwards each connection to `server`.
    pub async fn start(port: u16, server: String) -> Self {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .expect("bind the link");
        let port = listener.local_addr().expect("local address").port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (server, delay) = (server.clone(), delay.clone());
                tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(&server).await {
                        forward(client, upstream, delay).await;
                    }
                });
            }
        });
        Self {
            port,
            delay_ms,
            task,
        }
    }

    /// Adds `delay` to every round trip from now on (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries one connection both ways until either side closes: the client's bytes after the
/// delay, the server's at once.
async fn forward(client: TcpStream, upstream: TcpStream, delay: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let (queue, mut held) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reading = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
            let due = Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
            if queue.send((due, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    // The channel keeps the client's order; each chunk waits until it is due.
    let sending = async move {
        while let Some((due, bytes)) = held.recv().await {
            tokio::time::sleep_until(due).await;
            if upstream_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let answering = async move {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
    };
    tokio::select! {
        _ = async { tokio::join!(reading, sending) } => {}
        _ = answering => {}
    }
}
