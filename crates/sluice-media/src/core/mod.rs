//! The sans-IO media core: everything one worker owns, driven by inputs that carry their time.
//!
//! [`Core`] is the worker's state without a socket, a clock or a runtime, built the way str0m's
//! `Rtc` and quinn-proto's `Endpoint` are:
//!
//! - **Inputs**, each with the `now` it happens at: [`Core::handle_datagram`] (one UDP datagram
//!   and its source), [`Core::handle_timeout`] (str0m's deadlines and the periodic tick) and
//!   [`Core::handle_command`] (the control plane's requests; replies go back on each command's
//!   own reply channel).
//! - **Outputs**: [`Core::poll_transmit`] hands out the datagrams to send, in order;
//!   [`Core::poll_timeout`] tells when the core next wants `handle_timeout`; events go to the
//!   event senders the control plane gave each transport and router.
//!
//! *Drained* means `poll_transmit` returned `None`: every transport with pending output has been
//! polled, its datagrams are in the order they are to be sent, its events delivered and its
//! next deadline known. An input only records work (a transport written to is marked dirty); the
//! transports are polled once per batch of inputs when output is asked for, not once per packet,
//! and one at a time: `poll_transmit` polls the next dirty transport only when the datagrams of
//! the previous one have all been taken, so the driver sends them before it polls the next.
//!
//! The driver (`driver.rs`) feeds a core from a socket and the wall clock; the tests feed it
//! from a virtual network on virtual time.
//!
//! The methods live in files by concern: `commands.rs` (the control plane's requests),
//! `media.rs` (producers, consumers, keyframes, layers), `forwarding.rs` (the per-packet fan-out),
//! `data.rs` (data producers and consumers), `cascade.rs` (the close cascade of
//! docs/closures.md) and `session.rs` (str0m sessions: datagrams, timeouts, draining, events).
//! Each object's own state and behaviour live in the file of its name.

mod cascade;
mod commands;
pub(crate) mod consumer;
mod data;
pub(crate) mod data_consumer;
pub(crate) mod data_producer;
pub(crate) mod direct_transport;
mod forwarding;
mod media;
mod object;
pub(crate) mod plain_transport;
pub(crate) mod producer;
pub(crate) mod router;
mod session;
pub(crate) mod table;
pub(crate) mod webrtc_transport;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use sluice_ortc::SsrcGenerator;

use self::consumer::ConsumerState;
use self::data_consumer::DataConsumerState;
use self::data_producer::DataProducerState;
use self::direct_transport::DirectTransportState;
use self::plain_transport::PlainTransportState;
use self::producer::ProducerState;
use self::router::RouterState;
use self::table::Table;
use self::webrtc_transport::TransportState;
use crate::command::Command;
use crate::demux::{Demux, Remote};
use crate::events::CloseReason;
use crate::settings::MediaSettings;
use crate::types::{Key, ResourceUsage, WorkerDump};

/// One datagram to send (on TCP, one RFC 4571 frame on the connection `destination` names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    pub destination: Remote,
    /// The plain transport socket to send from; `None`: the worker's own socket.
    pub source: Option<SocketAddr>,
    pub contents: Vec<u8>,
}

/// Puts a datagram of transport `t` in the outbox, counted for the worker and the transport
/// (str0m's output, and what sluice writes itself for own-egress consumers).
fn send_on(
    outbox: &mut VecDeque<Transmit>,
    usage: &mut ResourceUsage,
    t: &mut TransportState,
    destination: Remote,
    contents: Vec<u8>,
) {
    let n = contents.len() as u64;
    usage.datagrams_sent += 1;
    usage.bytes_sent += n;
    t.bytes_sent += n;
    t.packets_sent += 1;
    outbox.push_back(Transmit {
        destination,
        source: None,
        contents,
    });
}

/// Who a core is and where it listens (given by its driver).
pub(crate) struct CoreConfig {
    pub index: usize,
    /// The address datagrams arrive at (str0m wants it as each datagram's destination).
    pub local_addr: SocketAddr,
    /// The address of the worker's ICE-TCP listener, if it has one.
    pub tcp_local_addr: Option<SocketAddr>,
    /// The address in ICE candidates.
    pub announced_ip: IpAddr,
    /// The DTLS certificate of every transport of this worker.
    pub cert: str0m::config::DtlsCert,
    /// Wall-clock milliseconds since the Unix epoch at `now` of [`Core::new`] (stats timestamps
    /// are this plus the time the core has been driven since).
    pub unix_millis: u64,
    pub settings: MediaSettings,
}

/// Everything a worker owns.
pub(crate) struct Core {
    index: usize,
    local_addr: SocketAddr,
    tcp_local_addr: Option<SocketAddr>,
    announced_ip: IpAddr,
    cert: str0m::config::DtlsCert,
    settings: MediaSettings,
    demux: Demux,
    routers: HashMap<String, RouterState>,
    transports: Table<Box<TransportState>>,
    producers: Table<ProducerState>,
    consumers: Table<ConsumerState>,
    directs: Table<DirectTransportState>,
    plains: Table<PlainTransportState>,
    /// Each plain transport by the local address of its sockets (RTP and RTCP).
    plain_by_local: HashMap<SocketAddr, Key>,
    data_producers: Table<DataProducerState>,
    data_consumers: Table<DataConsumerState>,
    /// Each transport's next str0m deadline.
    timers: BTreeSet<(Instant, Key)>,
    /// Those of `timers` that may not run late (the others may, by `MediaSettings::timer_slack`).
    exact_timers: BTreeSet<(Instant, Key)>,
    /// Transports with output to poll.
    dirty: Vec<Key>,
    /// The transports left to poll in the current round of draining (popped from the end).
    flushing: Vec<Key>,
    /// Rounds of the current drain (see `drain_next`).
    flush_rounds: u32,
    outbox: VecDeque<Transmit>,
    next_key: Key,
    ssrcs: SsrcGenerator,
    usage: ResourceUsage,
    /// The time of the latest input.
    now: Instant,
    next_tick: Instant,
    /// `now` of `new`, and the wall clock then (stats timestamps).
    epoch: (Instant, u64),
    closed: bool,
}

impl Core {
    pub fn new(config: CoreConfig, now: Instant) -> Self {
        Core {
            index: config.index,
            local_addr: config.local_addr,
            tcp_local_addr: config.tcp_local_addr,
            announced_ip: config.announced_ip,
            cert: config.cert,
            next_tick: now + config.settings.tick,
            settings: config.settings,
            demux: Demux::new(),
            routers: HashMap::new(),
            transports: Table::default(),
            producers: Table::default(),
            consumers: Table::default(),
            directs: Table::default(),
            plains: Table::default(),
            plain_by_local: HashMap::new(),
            data_producers: Table::default(),
            data_consumers: Table::default(),
            timers: BTreeSet::new(),
            exact_timers: BTreeSet::new(),
            dirty: Vec::new(),
            flushing: Vec::new(),
            flush_rounds: 0,
            outbox: VecDeque::new(),
            next_key: 1,
            ssrcs: SsrcGenerator::new(rand::random()),
            usage: ResourceUsage::default(),
            now,
            epoch: (now, config.unix_millis),
            closed: false,
        }
    }

    // ---- inputs ----------------------------------------------------------------------------

    /// One datagram (or one TCP frame) from `from`, received at `now`.
    pub fn handle_datagram(&mut self, now: Instant, from: Remote, data: &[u8]) {
        self.advance(now);
        self.on_datagram(data, from, now);
    }

    /// The driver closed the connection `remote` names: it is no longer a tuple of its
    /// transport, and no longer the selected one (the client's next check on another connection
    /// selects that).
    pub fn forget_tuple(&mut self, remote: &Remote) {
        let Some(key) = self.demux.by_addr(remote) else {
            return;
        };
        self.demux.forget_addr(remote);
        if let Some(t) = self.transports.get_mut(&key) {
            if t.selected_remote == Some(*remote) {
                t.selected_remote = None;
            }
            if t.nominating == Some(*remote) {
                t.nominating = None;
            }
        }
    }

    /// Whether `remote` is an ICE-validated tuple of a live transport (the driver closes TCP
    /// connections that never become one, or stop being one).
    pub fn is_validated(&self, remote: &Remote) -> bool {
        self.demux.by_addr(remote).is_some()
    }

    /// Runs what is due at `now`: str0m's deadlines and, when its time has come, the tick
    /// (layers, estimates, keyframe re-requests, the active speaker, queued data).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.next_deadline().is_some_and(|d| d <= now) {
            self.on_timeout(now);
        }
        if now >= self.next_tick {
            self.on_tick(now);
            self.next_tick = now + self.settings.tick;
        }
    }

    /// One request of the control plane. `Command::Close` closes everything (see
    /// [`Core::is_closed`]).
    ///
    /// A panic while handling it (a bug, in sluice or in str0m) closes the session the command
    /// concerns, and only it; its requester sees the worker's reply channel dropped.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        self.advance(now);
        let session = self.session_of(&command);
        if catch_unwind(AssertUnwindSafe(|| self.on_command(command, now))).is_err() {
            self.usage.session_errors += 1;
            match session {
                Some(key) => {
                    let id = self.transports.get(&key).map(|t| t.id.clone());
                    tracing::error!(transport = ?id, "a command panicked; closing its session");
                    self.close_object(
                        object::Object::WebRtcTransport(key),
                        CloseReason::SessionError,
                    );
                }
                None => tracing::error!("a command outside any session panicked"),
            }
        }
    }

    /// Closes every router (their transports say goodbye through the outbox).
    pub fn close(&mut self, now: Instant) {
        self.advance(now);
        self.close_all(CloseReason::WorkerClosed);
        self.closed = true;
    }

    // ---- outputs ---------------------------------------------------------------------------

    /// The next datagram to send; `None` once the core is drained.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            if let Some(transmit) = self.outbox.pop_front() {
                return Some(transmit);
            }
            if !self.drain_next(self.now) {
                return None;
            }
        }
    }

    /// When the core next wants [`Core::handle_timeout`] (call it after draining). A str0m
    /// deadline that may run late is run by any earlier wake-up once due, so a worker receiving
    /// datagrams rarely wakes for one alone.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        Some(
            self.wake_deadline()
                .map_or(self.next_tick, |d| d.min(self.next_tick)),
        )
    }

    /// Whether `Command::Close` or [`Core::close`] has closed the core.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The core's counters (the driver adds the thread's CPU time, its wake-ups and its send
    /// errors).
    pub fn usage(&self) -> &ResourceUsage {
        &self.usage
    }

    /// The driver could not read a datagram (counted as malformed input).
    pub fn count_receive_error(&mut self) {
        self.usage.dropped_malformed += 1;
    }

    pub fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    // ---- internals -------------------------------------------------------------------------

    /// Time only moves forward: an input older than the latest is taken as happening now.
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn key(&mut self) -> Key {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    /// The key of the WebRTC, direct or plain transport with this id.
    fn transport_key(&self, id: &str) -> Option<Key> {
        self.transports
            .key_of(id)
            .or_else(|| self.directs.key_of(id))
            .or_else(|| self.plains.key_of(id))
    }

    /// The earliest str0m deadline: every wake-up from then on runs it.
    fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// When the worker must wake for str0m: an exact deadline, or the earliest one once its
    /// slack has passed (until then, a datagram's wake-up runs it).
    fn wake_deadline(&self) -> Option<Instant> {
        let lax = self
            .timers
            .first()
            .map(|(t, _)| *t + self.settings.timer_slack);
        let exact = self.exact_timers.first().map(|(t, _)| *t);
        match (lax, exact) {
            (Some(l), Some(e)) => Some(l.min(e)),
            (l, e) => l.or(e),
        }
    }

    /// Wall-clock milliseconds at `now` (stats timestamps).
    fn unix_millis(&self, now: Instant) -> u64 {
        let (at, millis) = self.epoch;
        millis + now.saturating_duration_since(at).as_millis() as u64
    }

    /// Wall-clock microseconds at `now` (sender reports).
    fn unix_micros(&self, now: Instant) -> u64 {
        let (at, millis) = self.epoch;
        millis * 1000 + now.saturating_duration_since(at).as_micros() as u64
    }

    /// A datagram of no transport (a goodbye after it closed), counted for the worker.
    fn transmit(&mut self, destination: Remote, contents: Vec<u8>) {
        self.usage.datagrams_sent += 1;
        self.usage.bytes_sent += contents.len() as u64;
        self.outbox.push_back(Transmit {
            destination,
            source: None,
            contents,
        });
    }

    fn dump(&self) -> WorkerDump {
        let (ufrag_entries, address_entries) = self.demux.entries();
        let mut router_ids: Vec<String> = self.routers.keys().cloned().collect();
        router_ids.sort();
        WorkerDump {
            index: self.index,
            local_addr: self.local_addr.to_string(),
            router_ids,
            transports: self.transports.len() + self.directs.len() + self.plains.len(),
            producers: self.producers.len(),
            consumers: self.consumers.len(),
            data_producers: self.data_producers.len(),
            data_consumers: self.data_consumers.len(),
            ufrag_entries,
            address_entries,
            timers: self.timers.len(),
        }
    }

    /// Runs `f` for transport `key`; a panic inside closes that transport (and only it).
    fn guarded(&mut self, key: Key, f: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            self.usage.session_errors += 1;
            let id = self
                .transports
                .get(&key)
                .map(|t| t.id.clone())
                .unwrap_or_default();
            tracing::error!(transport = %id, "session panicked; closing it");
            self.close_object(
                object::Object::WebRtcTransport(key),
                CloseReason::SessionError,
            );
        }
    }
}

/// When a str0m deadline seen at `now` is run without the timer: `Some(at)`, the time to hand
/// str0m (the deadline itself if it is still ahead; never earlier than `now`).
fn due_now(deadline: Instant, now: Instant, window: Duration) -> Option<Instant> {
    (deadline <= now + window).then(|| deadline.max(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_str0m_sets_just_ahead_runs_now_at_itself_and_a_later_one_waits_for_the_timer() {
        let window = MediaSettings::default().immediate_window;
        let now = Instant::now();
        // The pacer's "1 µs after the last packet".
        let just_ahead = now + Duration::from_micros(1);
        assert_eq!(due_now(just_ahead, now, window), Some(just_ahead));
        // Past deadlines run at `now`, never in the past.
        let past = now.checked_sub(Duration::from_millis(5)).unwrap_or(now);
        assert_eq!(due_now(past, now, window), Some(now));
        assert_eq!(due_now(now + window, now, window), Some(now + window));
        // A real pacing gap or an RTCP interval is left to the timer.
        assert_eq!(due_now(now + Duration::from_millis(1), now, window), None);
        assert_eq!(due_now(now + Duration::from_secs(1), now, window), None);
    }
}
