//! `LossyRelay`: a UDP relay between a client and a server that drops a share of the datagrams
//! each way, for loss-recovery tests and benchmarks. It learns the client's address from the
//! first datagram that does not come from the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio::net::UdpSocket;

/// Counters and switches shared with the relay task.
#[derive(Debug, Default)]
struct Shared {
    /// Drop probability in millionths.
    loss_ppm: AtomicU32,
    /// Forward nothing at all (a peer that vanished).
    blackhole: AtomicBool,
    /// Bytes per second forwarded toward the client (0: unlimited); the excess is dropped.
    rate_to_client: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A running relay; dropping the handle stops it.
#[derive(Debug)]
pub struct LossyRelay {
    addr: SocketAddr,
    server: SocketAddr,
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyRelay {
    /// Relays between whoever sends to the returned address and `server`, dropping `loss`
    /// (0.0..=1.0) of the datagrams each way with a seeded generator.
    pub async fn start(server: SocketAddr, loss: f64, seed: u64) -> std::io::Result<LossyRelay> {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = socket.local_addr()?;
        let relay_socket = socket.clone();
        let shared = Arc::new(Shared::default());
        shared
            .loss_ppm
            .store((loss.clamp(0.0, 1.0) * 1e6) as u32, Ordering::Relaxed);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let socket = relay_socket;
            let mut buf = vec![0u8; 2048];
            let mut client: Option<SocketAddr> = None;
            let mut state = seed | 1;
            // Token bucket of the rate toward the client: (tokens, last refill).
            let mut bucket = (0f64, tokio::time::Instant::now());
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let to = if from == server {
                    match client {
                        Some(c) => c,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    server
                };
                // xorshift64*: deterministic for a seed.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32 % 1_000_000;
                if s.blackhole.load(Ordering::Relaxed) || r < s.loss_ppm.load(Ordering::Relaxed) {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let rate = s.rate_to_client.load(Ordering::Relaxed);
                if rate > 0 && from == server {
                    let now = tokio::time::Instant::now();
                    let burst = rate as f64 / 10.0;
                    bucket.0 = (bucket.0
                        + now.duration_since(bucket.1).as_secs_f64() * rate as f64)
                        .min(burst);
                    bucket.1 = now;
                    if bucket.0 < n as f64 {
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    bucket.0 -= n as f64;
                }
                s.forwarded.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(&buf[..n], to).await;
            }
        });
        Ok(LossyRelay {
            addr,
            server,
            socket,
            shared,
            task,
        })
    }

    /// Where the client should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_loss(&self, loss: f64) {
        self.shared
            .loss_ppm
            .store((loss.clamp(0.0, 1.0) * 1e6) as u32, Ordering::Relaxed);
    }

    /// Caps the bytes per second forwarded toward the client, dropping the excess like a
    /// policer on a slow link (`None`: no cap).
    pub fn set_rate_to_client(&self, bytes_per_second: Option<u64>) {
        self.shared
            .rate_to_client
            .store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    /// Stops (or resumes) forwarding anything, like a peer that vanished.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Relaxed);
    }

    /// Sends `datagram` to the server from the relay's address, which the server has validated
    /// for the client: how a test delivers hostile input on a legitimate tuple.
    pub async fn inject(&self, datagram: &[u8]) -> std::io::Result<()> {
        self.socket.send_to(datagram, self.server).await.map(|_| ())
    }

    /// (forwarded, dropped) datagrams so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.forwarded.load(Ordering::Relaxed),
            self.shared.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
