//! The HTTP server's connections: the accept loop, the caps on connections open at once (in all
//! and per IP address, `http.max_connections` and `http.max_connections_per_ip`), and the
//! header-read timeout (`http.header_read_timeout_ms`) that closes a connection trickling its
//! request header (slowloris). A connection over a cap is closed as soon as it is accepted; one
//! that is open holds its place until its socket closes, after a WebSocket upgrade too, so the
//! caps bound the file descriptors HTTP can take. The timeout covers reading a request's header
//! (and a keep-alive connection's idle wait for the next one), not an upgraded WebSocket.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::HttpConfig;
use crate::metrics::Metrics;

/// Connections open at once, in all and per address, against their caps.
#[derive(Clone)]
struct Gate {
    state: Arc<Mutex<Open>>,
    max_total: usize,
    max_per_ip: usize,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Gate {
    fn new(http: &HttpConfig) -> Self {
        Gate {
            state: Arc::default(),
            max_total: http.max_connections,
            max_per_ip: http.max_connections_per_ip,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent under a panic elsewhere: each update is one statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, or the cap that refuses it (the total first).
    fn admit(&self, ip: IpAddr) -> Result<Slot, Cap> {
        let ip = ip.to_canonical();
        let mut open = self.lock();
        let of_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if open.total >= self.max_total {
            return Err(Cap::Total);
        }
        if of_ip >= self.max_per_ip {
            return Err(Cap::PerIp);
        }
        open.total += 1;
        open.per_ip.insert(ip, of_ip + 1);
        Ok(Slot {
            gate: self.clone(),
            ip,
        })
    }
}

/// The cap a refused connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    /// `http.max_connections`.
    Total,
    /// `http.max_connections_per_ip`.
    PerIp,
}

impl Cap {
    /// The `reason` label of `sluice_http_connections_refused_total`.
    fn label(self) -> &'static str {
        match self {
            Cap::Total => "total",
            Cap::PerIp => "per_ip",
        }
    }
}

/// One open connection's place; given back when dropped.
struct Slot {
    gate: Gate,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_ip.remove(&self.ip);
                crate::shrink_when_sparse(&mut open.per_ip);
            }
        }
    }
}

/// A TCP stream that holds its connection's place for as long as the socket is open, through
/// a WebSocket upgrade (hyper hands the stream itself to the upgraded connection).
struct Counted {
    io: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets every HTTP
/// connection finish its request (upgraded WebSockets are the instance's to close) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    http: &HttpConfig,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let gate = Gate::new(http);
    let header_timeout = Duration::from_millis(http.header_read_timeout_ms);
    // Dropping `stop_rx` tells every connection to shut down gracefully; each holds a clone of
    // `done_rx` until it ends, so `done_tx.closed()` is every connection having ended.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    // The shutdown (with the instance's drain) runs beside the accept loop, as axum's graceful
    // shutdown runs it, not inside this future.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    let mut shutdown = pin!(signal_tx.closed());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match gate.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(cap) => {
                metrics.http_connection_refused(cap.label());
                tracing::debug!(%remote, cap = cap.label(), "HTTP connection over the cap closed");
                drop(stream);
                continue;
            }
        };
        let io = TokioIo::new(Counted {
            io: stream,
            _slot: slot,
        });
        let service = TowerToHyperService::new(app.clone());
        let stop_tx = stop_tx.clone();
        let done_rx = done_rx.clone();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let mut conn = pin!(builder.serve_connection(io, service).with_upgrades());
            let mut stopping = pin!(stop_tx.closed());
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(%remote, "HTTP connection ended: {e}");
                        }
                        break;
                    }
                    () = &mut stopping => conn.as_mut().graceful_shutdown(),
                }
            }
            drop(done_rx);
        });
    }
    drop(listener);
    drop(stop_rx);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// After a failed accept: a connection that went away before it was accepted is nothing; out
/// of file descriptors (or another resource), wait a moment rather than spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting an HTTP connection: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, per_ip: usize) -> Gate {
        Gate {
            state: Arc::default(),
            max_total: total,
            max_per_ip: per_ip,
        }
    }

    #[test]
    fn an_address_at_its_cap_is_refused_until_one_of_its_connections_closes() {
        let g = gate(10, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = g.admit(a).unwrap();
        let _second = g.admit(a).unwrap();
        assert_eq!(g.admit(a).err(), Some(Cap::PerIp));
        // The same address written as IPv4-mapped IPv6 is the same address.
        assert_eq!(
            g.admit("::ffff:192.0.2.1".parse().unwrap()).err(),
            Some(Cap::PerIp)
        );
        let _other = g.admit(b).unwrap();
        drop(first);
        assert!(g.admit(a).is_ok());
    }

    #[test]
    fn the_total_cap_holds_across_addresses_and_frees_on_close() {
        let g = gate(2, 10);
        let one = g.admit("192.0.2.1".parse().unwrap()).unwrap();
        let _two = g.admit("192.0.2.2".parse().unwrap()).unwrap();
        assert_eq!(
            g.admit("192.0.2.3".parse().unwrap()).err(),
            Some(Cap::Total)
        );
        drop(one);
        assert!(g.admit("192.0.2.3".parse().unwrap()).is_ok());
        assert_eq!(g.lock().per_ip.len(), 1, "a closed address's count is gone");
    }
}
