//! The fault proxy itself, against a loopback echo server: each fault does
//! what the outage tests rely on, and switching back restores traffic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::fault_proxy::{Fault, FaultProxy};

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `message` and reads the echo, or `None` after `wait`.
async fn round_trip(stream: &mut TcpStream, message: &[u8], wait: Duration) -> Option<Vec<u8>> {
    stream.write_all(message).await.ok()?;
    let mut got = vec![0u8; message.len()];
    match tokio::time::timeout(wait, stream.read_exact(&mut got)).await {
        Ok(Ok(_)) => Some(got),
        _ => None,
    }
}

#[tokio::test]
async fn pass_delay_and_slow_drip_forward_everything() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let wait = Duration::from_secs(10);
    assert_eq!(
        round_trip(&mut stream, b"hello", wait).await.unwrap(),
        b"hello"
    );

    proxy.set(Fault::Delay(Duration::from_millis(200)));
    let started = Instant::now();
    assert_eq!(
        round_trip(&mut stream, b"later", wait).await.unwrap(),
        b"later"
    );
    // Both directions wait: at least two delays.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    proxy.set(Fault::SlowDrip {
        bytes: 4,
        every: Duration::from_millis(50),
    });
    let started = Instant::now();
    let message = [7u8; 40];
    assert_eq!(
        round_trip(&mut stream, &message, wait).await.unwrap(),
        message
    );
    // 40 bytes at 4 a tick, each way: at least ten ticks.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let stats = proxy.stats();
    assert_eq!(stats.bytes_up, 5 + 5 + 40);
    assert_eq!(stats.bytes_down, 5 + 5 + 40);
}

#[tokio::test]
async fn blackhole_holds_traffic_until_it_is_lifted() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.set(Fault::Blackhole);
    assert_eq!(
        round_trip(&mut stream, b"lost?", Duration::from_millis(300)).await,
        None,
        "nothing comes back through a blackhole"
    );
    proxy.set(Fault::Pass);
    // The held bytes go through once it is lifted.
    let mut got = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
        .await
        .expect("echo after the blackhole")
        .unwrap();
    assert_eq!(&got, b"lost?");
}

#[tokio::test]
async fn reset_closes_open_and_new_connections() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(
        round_trip(&mut open, b"up", Duration::from_secs(10))
            .await
            .is_some()
    );
    proxy.set(Fault::Reset);
    assert_eq!(
        round_trip(&mut open, b"x", Duration::from_secs(5)).await,
        None
    );

    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), fresh.read(&mut buf))
        .await
        .expect("a reset connection answers at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(proxy.stats().resets >= 2, "{:?}", proxy.stats());

    proxy.set(Fault::Pass);
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut again, b"back", Duration::from_secs(10))
            .await
            .unwrap(),
        b"back"
    );
}
