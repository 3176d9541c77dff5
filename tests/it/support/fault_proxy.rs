//! A TCP fault proxy for tests: tracemap talks to a peer (moto, a gateway)
//! through it, and the test switches faults on and off while traffic flows.
//! tc netem is not available on these machines and toxiproxy is not
//! installable, so this is the small in-repo equivalent (TESTING.md).
//!
//! Faults apply to new and open connections alike, checked per read:
//! - `Pass`: bytes flow both ways unchanged.
//! - `Delay(d)`: every chunk waits `d` before it is forwarded.
//! - `Reset`: new connections are reset (RST); open ones are closed at
//!   their next read.
//! - `Blackhole`: connections stay open, nothing is forwarded either way
//!   (the peer looks hung: the client's timeouts fire).
//! - `SlowDrip { bytes, every }`: at most `bytes` forwarded per `every`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// Hold each chunk this long.
    Delay(Duration),
    /// Reset every connection.
    Reset,
    /// Accept, forward nothing.
    Blackhole,
    /// Forward at most `bytes` every `every`.
    SlowDrip {
        /// Bytes per tick.
        bytes: usize,
        /// The tick.
        every: Duration,
    },
}

/// Counts of what went through, for assertions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections reset by the `Reset` fault.
    pub resets: u64,
    /// Bytes forwarded client → upstream.
    pub bytes_up: u64,
    /// Bytes forwarded upstream → client.
    pub bytes_down: u64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    stats: Arc<Mutex<ProxyStats>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (fault, watcher) = watch::channel(Fault::Pass);
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let task = tokio::spawn(accept(listener, upstream, watcher, stats.clone()));
        Self {
            addr,
            fault,
            stats,
            task,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault; open connections see it at their next read.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// What went through so far.
    pub fn stats(&self) -> ProxyStats {
        *self.stats.lock().expect("stats lock")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    stats: Arc<Mutex<ProxyStats>>,
) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        stats.lock().expect("stats lock").connections += 1;
        let (fault, stats) = (fault.clone(), stats.clone());
        connections.spawn(async move {
            if *fault.borrow() == Fault::Reset {
                reset(client, &stats);
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(client, &stats);
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pump(
                client_read,
                server_write,
                fault.clone(),
                stats.clone(),
                true,
            );
            let down = pump(server_read, client_write, fault, stats.clone(), false);
            // Either direction ending (or a reset) ends the connection.
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        });
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
    }
}

/// Closes with RST (linger 0) rather than FIN, as a crashed peer would.
fn reset(stream: TcpStream, stats: &Mutex<ProxyStats>) {
    let _ = stream.set_zero_linger();
    drop(stream);
    stats.lock().expect("stats lock").resets += 1;
}

/// Copies one direction, applying the fault before each chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    stats: Arc<Mutex<ProxyStats>>,
    up: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *fault.borrow() == Fault::Reset {
            stats.lock().expect("stats lock").resets += 1;
            return;
        }
        // A blackhole reads nothing until the fault changes.
        while *fault.borrow_and_update() == Fault::Blackhole {
            if fault.changed().await.is_err() {
                return;
            }
        }
        let limit = match *fault.borrow() {
            Fault::SlowDrip { bytes, .. } => bytes.clamp(1, buf.len()),
            _ => buf.len(),
        };
        let read = tokio::select! {
            read = from.read(&mut buf[..limit]) => read,
            // Re-check the fault (a reset or blackhole) without waiting for data.
            changed = fault.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let wait = match *fault.borrow() {
            Fault::Delay(delay) => Some(delay),
            Fault::SlowDrip { every, .. } => Some(every),
            Fault::Pass | Fault::Blackhole | Fault::Reset => None,
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        let mut stats = stats.lock().expect("stats lock");
        if up {
            stats.bytes_up += n as u64;
        } else {
            stats.bytes_down += n as u64;
        }
    }
}
