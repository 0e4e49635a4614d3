//! A TCP proxy in front of one service, which a test can take down.
//!
//! The functions under test reach Postgres, the Snowflake emulator or moto
//! through it. Taking it down closes every open connection and refuses new
//! ones: from the function's side the service is gone, exactly as when the
//! server stops, while the service itself keeps its data for the checks that
//! follow (a stopped emulator would lose its in-memory tables; real Snowflake
//! does not).
//!
//! It runs on a thread of its own, so that a test blocked on a child process
//! does not stop it from forwarding.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultProxy {
    port: u16,
    down: watch::Sender<bool>,
    /// Bytes the service may still send before the proxy goes down by itself.
    budget: Arc<AtomicI64>,
}

impl FaultProxy {
    /// A proxy to `127.0.0.1:upstream_port` on a free loopback port.
    pub fn start(upstream_port: u16) -> Self {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = std_listener.local_addr().expect("proxy address").port();
        let (down, down_rx) = watch::channel(false);
        let budget = Arc::new(AtomicI64::new(i64::MAX));
        let proxy = Self {
            port,
            down: down.clone(),
            budget: budget.clone(),
        };
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(serve(std_listener, upstream, down, down_rx, budget));
        });
        proxy
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Takes the service down now: open connections are cut, new ones refused.
    pub fn take_down(&self) {
        let _ = self.down.send(true);
    }

    /// Takes the service down once it has sent `bytes` more bytes to the
    /// client, possibly in the middle of a response.
    pub fn take_down_after(&self, bytes: u64) {
        self.budget
            .store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.down.send(true);
    }
}

async fn serve(
    std_listener: std::net::TcpListener,
    upstream: SocketAddr,
    down: watch::Sender<bool>,
    mut down_rx: watch::Receiver<bool>,
    budget: Arc<AtomicI64>,
) {
    let Ok(listener) = TcpListener::from_std(std_listener) else {
        return;
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(forward(client, upstream, down.clone(), budget.clone()));
            }
            // Dropping the listener refuses every new connection.
            _ = down_rx.wait_for(|down| *down) => return,
        }
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    down: watch::Sender<bool>,
    budget: Arc<AtomicI64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut down_rx = down.subscribe();
    tokio::select! {
        _ = pump(client_read, server_write, None, &down) => {}
        _ = pump(server_read, client_write, Some(&budget), &down) => {}
        _ = down_rx.wait_for(|down| *down) => {}
    }
    // Both halves drop here: the client sees its connection cut.
}

/// Copies one direction; on the service's side, spends the byte budget and
/// takes the proxy down when it runs out.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    budget: Option<&AtomicI64>,
    down: &watch::Sender<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut allowed = n;
        if let Some(budget) = budget {
            let before = budget.fetch_sub(n as i64, Ordering::SeqCst);
            if before < n as i64 {
                allowed = usize::try_from(before.max(0)).unwrap_or(0);
            }
        }
        if allowed > 0 && to.write_all(&buffer[..allowed]).await.is_err() {
            return;
        }
        if allowed < n {
            let _ = to.flush().await;
            let _ = down.send(true);
            return;
        }
    }
}
