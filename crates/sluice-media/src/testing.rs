//! A virtual network for tests and simulations: datagrams between virtual addresses with delay,
//! jitter (so reordering), loss and blackholes, on tokio's clock.
//!
//! Run a test on tokio's paused clock (`#[tokio::test(start_paused = true)]`) and time is
//! virtual: it stands still while tasks work and jumps to the next deadline when all of them
//! wait. A worker started with [`Worker::spawn_virtual`](crate::Worker::spawn_virtual) feeds its
//! sans-IO core from a [`VirtualSocket`] and that clock; clients (`sluice-client`) do the same,
//! so a whole call runs in milliseconds of real time, and a lossy link loses the same packets in
//! every run (the loss is drawn from a seeded generator, in the order datagrams are sent).
//!
//! Delivery: a datagram sent at `t` on a link with delay `d` and jitter `j` arrives at
//! `t + d + u·j` (`u` uniform in [0, 1)); datagrams due at the same time arrive in the order
//! they were sent. A datagram to an address nobody is bound to is dropped (and counted).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

/// How a link (one direction between two addresses) treats datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConditions {
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter)` per datagram; more than the spacing of
    /// packets reorders them.
    pub jitter: Duration,
    /// Probability of losing each datagram.
    pub loss: f64,
    /// Drop everything.
    pub blackhole: bool,
    /// A policer: at most this many bytes per second (bursts of a tenth of a second), the
    /// excess dropped, as on a slow link.
    pub rate: Option<u64>,
}

impl Default for LinkConditions {
    /// A clean link with 1 ms of delay.
    fn default() -> Self {
        LinkConditions {
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            blackhole: false,
            rate: None,
        }
    }
}

/// What the network did with the datagrams sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounts {
    pub sent: u64,
    pub delivered: u64,
    /// Lost on a lossy link, in a blackhole or to a policer.
    pub lost: u64,
    /// Sent to an address nobody is bound to.
    pub unroutable: u64,
}

/// A datagram on its way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    due: Instant,
    order: u64,
    from: SocketAddr,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: BinaryHeap<Reverse<InFlight>>,
    notify: Arc<Notify>,
}

/// Which datagrams a link drops, whatever its conditions (see [`VirtualNet::set_filter`]).
type DropFilter = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

struct Net {
    inboxes: HashMap<SocketAddr, Inbox>,
    default: LinkConditions,
    links: HashMap<(SocketAddr, SocketAddr), LinkConditions>,
    /// Policers' token buckets by link: (tokens, last refill).
    buckets: HashMap<(SocketAddr, SocketAddr), (f64, Instant)>,
    rng: StdRng,
    order: u64,
    counts: NetCounts,
    link_counts: HashMap<(SocketAddr, SocketAddr), NetCounts>,
    filters: HashMap<(SocketAddr, SocketAddr), DropFilter>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("inboxes", &self.inboxes.len())
            .field("default", &self.default)
            .field("links", &self.links)
            .field("filters", &self.filters.len())
            .field("counts", &self.counts)
            .finish()
    }
}

/// The network: cheap to clone, shared by everything on it.
#[derive(Debug, Clone)]
pub struct VirtualNet {
    net: Arc<Mutex<Net>>,
}

/// tokio's clock as a `std::time::Instant` (virtual on a paused runtime).
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl VirtualNet {
    /// A network whose losses and jitter are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        VirtualNet {
            net: Arc::new(Mutex::new(Net {
                inboxes: HashMap::new(),
                default: LinkConditions::default(),
                links: HashMap::new(),
                buckets: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
                order: 0,
                counts: NetCounts::default(),
                link_counts: HashMap::new(),
                filters: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        // No code panics while holding the lock, so it is never poisoned; if it were, the
        // network's state is still consistent (every update is a single step).
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A socket at `addr`; an error if something is bound there already.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<VirtualSocket> {
        let mut net = self.lock();
        if net.inboxes.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is bound already"),
            ));
        }
        let inbox = Inbox::default();
        let notify = inbox.notify.clone();
        net.inboxes.insert(addr, inbox);
        Ok(VirtualSocket {
            net: self.clone(),
            addr,
            notify,
        })
    }

    /// The conditions of every link without its own.
    pub fn set_default(&self, conditions: LinkConditions) {
        self.lock().default = conditions;
    }

    /// The conditions from `from` to `to` (one direction).
    pub fn set_link(&self, from: SocketAddr, to: SocketAddr, conditions: LinkConditions) {
        self.lock().links.insert((from, to), conditions);
    }

    /// The conditions both ways between `a` and `b`.
    pub fn set_path(&self, a: SocketAddr, b: SocketAddr, conditions: LinkConditions) {
        self.set_link(a, b, conditions);
        self.set_link(b, a, conditions);
    }

    /// Drops the datagrams from `from` to `to` for which `drop` says so (counted as lost), until
    /// [`VirtualNet::clear_filter`]: a test's way to hold back one kind of packet.
    pub fn set_filter(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        drop: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
    ) {
        self.lock().filters.insert((from, to), Arc::new(drop));
    }

    pub fn clear_filter(&self, from: SocketAddr, to: SocketAddr) {
        self.lock().filters.remove(&(from, to));
    }

    /// The conditions from `from` to `to`.
    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> LinkConditions {
        let net = self.lock();
        net.links.get(&(from, to)).copied().unwrap_or(net.default)
    }

    /// Sends `data` from `from` (bound or not: a spoofed or injected datagram) to `to`.
    pub fn send(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let now = now();
        let mut net = self.lock();
        let net = &mut *net;
        net.counts.sent += 1;
        net.link_counts.entry((from, to)).or_default().sent += 1;
        let link = net.links.get(&(from, to)).copied().unwrap_or(net.default);
        let lost = link.blackhole || (link.loss > 0.0 && net.rng.random::<f64>() < link.loss);
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            link.jitter.mul_f64(net.rng.random::<f64>())
        };
        let policed = link.rate.is_some_and(|rate| {
            let burst = rate as f64 / 10.0;
            let bucket = net.buckets.entry((from, to)).or_insert((burst, now));
            bucket.0 = (bucket.0 + (now - bucket.1).as_secs_f64() * rate as f64).min(burst);
            bucket.1 = now;
            let over = bucket.0 < data.len() as f64;
            if !over {
                bucket.0 -= data.len() as f64;
            }
            over
        });
        let filtered = net.filters.get(&(from, to)).is_some_and(|drop| drop(data));
        if lost || policed || filtered {
            net.counts.lost += 1;
            net.link_counts.entry((from, to)).or_default().lost += 1;
            return;
        }
        let Some(inbox) = net.inboxes.get_mut(&to) else {
            net.counts.unroutable += 1;
            return;
        };
        net.order += 1;
        inbox.queue.push(Reverse(InFlight {
            due: now + link.delay + jitter,
            order: net.order,
            from,
            data: data.to_vec(),
        }));
        inbox.notify.notify_one();
    }

    /// What the network did so far.
    pub fn counts(&self) -> NetCounts {
        self.lock().counts
    }

    /// What the link from `from` to `to` did so far (`sent` and `lost`).
    pub fn link_counts(&self, from: SocketAddr, to: SocketAddr) -> NetCounts {
        self.lock()
            .link_counts
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// Datagrams sent and not yet received by their socket.
    pub fn in_flight(&self) -> usize {
        self.lock().inboxes.values().map(|i| i.queue.len()).sum()
    }
}

/// A socket on a [`VirtualNet`]; unbound when dropped.
#[derive(Debug)]
pub struct VirtualSocket {
    net: VirtualNet,
    addr: SocketAddr,
    notify: Arc<Notify>,
}

impl VirtualSocket {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn net(&self) -> &VirtualNet {
        &self.net
    }

    /// The time the next datagram for this socket arrives, if one is on its way.
    fn next_due(&self) -> Option<Instant> {
        let net = self.net.lock();
        net.inboxes
            .get(&self.addr)
            .and_then(|i| i.queue.peek().map(|Reverse(d)| d.due))
    }

    /// Waits until a datagram has arrived.
    pub async fn readable(&self) -> io::Result<()> {
        loop {
            let notified = self.notify.notified();
            match self.next_due() {
                Some(due) if due <= now() => return Ok(()),
                Some(due) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due.into()) => {}
                        () = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The next datagram that has arrived, or `WouldBlock`.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let now = now();
        let mut net = self.net.lock();
        let Some(inbox) = net.inboxes.get_mut(&self.addr) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        match inbox.queue.peek() {
            Some(Reverse(d)) if d.due <= now => {}
            _ => return Err(io::ErrorKind::WouldBlock.into()),
        }
        let Some(Reverse(d)) = inbox.queue.pop() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        net.counts.delivered += 1;
        let n = d.data.len().min(buf.len());
        buf[..n].copy_from_slice(&d.data[..n]);
        Ok((n, d.from))
    }

    /// Waits for the next datagram.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            self.readable().await?;
            match self.try_recv_from(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Sends (never blocks: the network has no queue limit).
    pub fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.net.send(self.addr, to, buf);
        Ok(buf.len())
    }
}

impl Drop for VirtualSocket {
    fn drop(&mut self) {
        self.net.lock().inboxes.remove(&self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[tokio::test(start_paused = true)]
    async fn a_datagram_arrives_after_the_links_delay_and_not_before() {
        let net = VirtualNet::new(1);
        let a = net.bind(addr(1)).unwrap();
        let b = net.bind(addr(2)).unwrap();
        net.set_link(
            addr(1),
            addr(2),
            LinkConditions {
                delay: Duration::from_millis(30),
                ..LinkConditions::default()
            },
        );
        let t0 = now();
        a.try_send_to(b"hi", addr(2)).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            b.try_recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"hi"[..], addr(1)));
        assert_eq!(now() - t0, Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_seed_loses_the_same_datagrams_and_a_blackhole_loses_all() {
        let lost = |seed| {
            let net = VirtualNet::new(seed);
            let _b = net.bind(addr(2)).unwrap();
            net.set_default(LinkConditions {
                loss: 0.3,
                ..LinkConditions::default()
            });
            for i in 0..1000u16 {
                net.send(addr(1), addr(2), &i.to_be_bytes());
            }
            net.counts()
        };
        assert_eq!(lost(7), lost(7));
        let counts = lost(7);
        assert!((250..350).contains(&counts.lost), "{counts:?}");
        assert_eq!(counts.sent, 1000);
        let net = VirtualNet::new(1);
        let _b = net.bind(addr(2)).unwrap();
        net.set_link(
            addr(1),
            addr(2),
            LinkConditions {
                blackhole: true,
                ..LinkConditions::default()
            },
        );
        net.send(addr(1), addr(2), b"x");
        net.send(addr(3), addr(9), b"y");
        let counts = net.counts();
        assert_eq!((counts.lost, counts.unroutable, net.in_flight()), (1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_reorders_and_equal_times_keep_the_sending_order() {
        let net = VirtualNet::new(3);
        let a = net.bind(addr(1)).unwrap();
        let b = net.bind(addr(2)).unwrap();
        for i in 0..5u8 {
            a.try_send_to(&[i], addr(2)).unwrap();
        }
        let mut buf = [0u8; 1];
        let mut order = Vec::new();
        for _ in 0..5 {
            b.recv_from(&mut buf).await.unwrap();
            order.push(buf[0]);
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        net.set_default(LinkConditions {
            jitter: Duration::from_millis(50),
            ..LinkConditions::default()
        });
        for i in 0..50u8 {
            a.try_send_to(&[i], addr(2)).unwrap();
        }
        order.clear();
        for _ in 0..50 {
            b.recv_from(&mut buf).await.unwrap();
            order.push(buf[0]);
        }
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<u8>>());
        assert_ne!(
            order, sorted,
            "50 ms of jitter reorders datagrams sent at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_policed_link_passes_its_rate_and_drops_the_rest() {
        let net = VirtualNet::new(1);
        let a = net.bind(addr(1)).unwrap();
        let _b = net.bind(addr(2)).unwrap();
        net.set_link(
            addr(1),
            addr(2),
            LinkConditions {
                rate: Some(100_000),
                ..LinkConditions::default()
            },
        );
        // 1000-byte datagrams every 5 ms (200 kB/s) for one second, against 100 kB/s.
        for _ in 0..200 {
            a.try_send_to(&[0; 1000], addr(2)).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let counts = net.counts();
        // The first tenth of a second's burst, then 100 kB/s for the second.
        assert_eq!(counts.sent - counts.lost, 10 + 99);
    }
}
