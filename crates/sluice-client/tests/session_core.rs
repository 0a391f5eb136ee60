//! `ClientSession` is sans-IO: it runs on a virtual network at virtual time, with no socket, no
//! runtime and no clock, and what it sends depends only on the times it is given.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_client::{
    ClientNumbering, ClientSession, ClientTransportOptions, ServerTransportInfo, SourceConfig,
    WallClock,
};
use sluice_media::ortc::{
    DtlsFingerprint, DtlsParameters, DtlsRole, IceCandidate, IceCandidateType, IceParameters,
    Protocol as OrtcProtocol,
};
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc};

const SERVER: &str = "10.0.0.1:4443";
const CLIENT: &str = "10.0.0.2:5000";
const SERVER_UFRAG: &str = "srvufrag";
const SERVER_PASS: &str = "serverpassword0123456789";

fn addr(s: &str) -> SocketAddr {
    // The constants above are valid socket addresses.
    s.parse().expect("a valid socket address")
}

fn server_info(fingerprint_hex: &str) -> ServerTransportInfo {
    ServerTransportInfo {
        ice_parameters: IceParameters {
            username_fragment: SERVER_UFRAG.into(),
            password: SERVER_PASS.into(),
            ice_lite: Some(true),
        },
        ice_candidates: vec![IceCandidate {
            foundation: "udpcandidate".into(),
            priority: 1_076_302_079,
            ip: None,
            address: "10.0.0.1".into(),
            protocol: OrtcProtocol::Udp,
            port: 4443,
            r#type: IceCandidateType::Host,
            tcp_type: None,
        }],
        dtls_parameters: DtlsParameters {
            role: Some(DtlsRole::Auto),
            fingerprints: vec![DtlsFingerprint {
                algorithm: "sha-256".into(),
                value: fingerprint_hex.into(),
            }],
        },
        sctp_parameters: None,
    }
}

fn options(seed: u64) -> ClientTransportOptions {
    let mut options = ClientTransportOptions::new(ClientNumbering::chromium());
    options.enable_sctp = false;
    options.seed = Some(seed);
    options
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A fingerprint the client can parse; no DTLS is involved in the tests that use it.
fn dummy_fingerprint() -> String {
    hex(&[0xAB; 32])
}

/// The USERNAME attribute of a STUN binding request, or `None` if `bytes` is not one.
fn stun_binding_username(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 20 || bytes[0..2] != [0x00, 0x01] || bytes[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let mut rest = &bytes[20..];
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == 0x0006 {
            return String::from_utf8(value.to_vec()).ok();
        }
        rest = rest.get(4 + len.div_ceil(4) * 4..)?;
    }
    None
}

#[test]
fn a_session_sends_nothing_before_start_then_a_stun_request_to_the_server_naming_both_ufrags() {
    let t0 = Instant::now();
    let mut session = ClientSession::new(
        t0,
        addr(CLIENT),
        &server_info(&dummy_fingerprint()),
        options(1),
    )
    .expect("valid server parameters");
    // Idle before start, however much virtual time passes.
    session.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(session.poll_transmit(), None);

    let started = t0 + Duration::from_secs(5);
    session.start(started);
    let first = loop {
        if let Some(t) = session.poll_transmit() {
            break t;
        }
        let now = session
            .poll_timeout()
            .expect("a live session has a deadline");
        assert!(
            now < started + Duration::from_secs(1),
            "no STUN request within 1 s"
        );
        session.handle_timeout(now);
    };
    assert_eq!(first.destination, addr(SERVER));
    assert_eq!(
        stun_binding_username(&first.contents),
        Some(format!("{SERVER_UFRAG}:{}", session.local_ice_ufrag()))
    );
}

#[test]
fn poll_timeout_moves_only_with_the_time_given_and_requests_repeat_at_virtual_deadlines() {
    let t0 = Instant::now();
    let mut session = ClientSession::new(
        t0,
        addr(CLIENT),
        &server_info(&dummy_fingerprint()),
        options(2),
    )
    .expect("valid server parameters");
    session.start(t0);
    while session.poll_transmit().is_some() {}
    let deadline = session
        .poll_timeout()
        .expect("a live session has a deadline");
    // Nothing given, nothing changes.
    assert_eq!(session.poll_timeout(), Some(deadline));
    // A time before the deadline sends nothing.
    if let Some(before) = deadline.checked_sub(Duration::from_micros(1))
        && before >= t0
    {
        session.handle_timeout(before);
        assert_eq!(session.poll_transmit(), None);
    }
    // Ten virtual seconds of unanswered ICE: every request goes out at a deadline the session
    // named, to the server, naming our ufrag.
    let mut now = t0;
    let mut requests = 0;
    while now < t0 + Duration::from_secs(10) {
        now = session
            .poll_timeout()
            .expect("a live session has a deadline");
        session.handle_timeout(now);
        while let Some(t) = session.poll_transmit() {
            assert_eq!(t.destination, addr(SERVER));
            let username = stun_binding_username(&t.contents).expect("a STUN binding request");
            assert!(username.ends_with(session.local_ice_ufrag()));
            requests += 1;
        }
    }
    assert!(requests >= 2, "ICE retried {requests} times in 10 s");
    assert!(!session.connection_state().ice_connected);
}

#[test]
fn sessions_with_the_same_seed_choose_the_same_ufrag_and_ssrcs() {
    let t0 = Instant::now();
    let info = server_info(&dummy_fingerprint());
    let mut a = ClientSession::new(t0, addr(CLIENT), &info, options(3)).expect("valid");
    let mut b = ClientSession::new(t0, addr(CLIENT), &info, options(3)).expect("valid");
    assert_eq!(a.local_ice_ufrag(), b.local_ice_ufrag());
    let pa = a.produce(t0, SourceConfig::video(), false).expect("vp8");
    let pb = b.produce(t0, SourceConfig::video(), false).expect("vp8");
    assert_eq!(pa.rtp_parameters.encodings, pb.rtp_parameters.encodings);
    assert_eq!(pa.rtp_parameters.rtcp, pb.rtp_parameters.rtcp);
}

/// A minimal ICE-lite, DTLS-server str0m peer standing in for the server.
struct FakeServer {
    rtc: Rtc,
    deadline: Instant,
    received_seqs: Vec<u64>,
}

impl FakeServer {
    fn new(now: Instant) -> FakeServer {
        let caps = ClientNumbering::chromium().capabilities().clone();
        let mut rtc = sluice_media::numbering::rtc_config_for_router(&caps)
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: SERVER_UFRAG.into(),
                pass: SERVER_PASS.into(),
            })
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr(SERVER), "udp").expect("a host candidate"));
        FakeServer {
            rtc,
            deadline: now,
            received_seqs: Vec::new(),
        }
    }

    fn fingerprint_hex(&mut self) -> String {
        hex(&self.rtc.direct_api().local_dtls_fingerprint().bytes)
    }

    /// Accepts `client` (ICE, DTLS) and expects the producer with this SSRC and mid.
    fn connect(&mut self, client: &ClientSession, producer: Option<(u32, &str)>) {
        let fp = &client.dtls_parameters().fingerprints[0];
        let fingerprint = format!("{} {}", fp.algorithm, fp.value)
            .parse()
            .expect("the client's fingerprint parses");
        let mut api = self.rtc.direct_api();
        api.set_remote_ice_credentials(IceCreds {
            ufrag: client.local_ice_ufrag().into(),
            pass: "unused-by-an-ice-lite-agent".into(),
        });
        api.set_ice_controlling(false);
        api.set_remote_fingerprint(fingerprint);
        api.start_dtls(false).expect("DTLS starts");
        if let Some((ssrc, mid)) = producer {
            let mid = Mid::from(mid);
            api.declare_media(mid, MediaKind::Audio);
            api.expect_stream_rx(ssrc.into(), None, mid, None)
                .suppress_nack(true);
        }
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Ok(r) = Receive::new(Protocol::Udp, from, addr(SERVER), bytes) {
            let _ = self.rtc.handle_input(Input::Receive(now, r));
        }
    }

    /// Collects transmits and events until str0m names its next deadline.
    fn drain(&mut self, net: &mut Net) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    net.send(addr(SERVER), t.destination, t.contents.into());
                }
                Ok(Output::Timeout(t)) => {
                    self.deadline = t;
                    return;
                }
                Ok(Output::Event(Event::RtpPacket(p))) => self.received_seqs.push(*p.seq_no),
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("the fake server failed: {e}"),
            }
        }
    }
}

/// Datagrams in flight with a fixed one-way delay, at virtual time.
struct Net {
    now: Instant,
    delay: Duration,
    in_flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Net {
    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.in_flight
            .push_back((self.now + self.delay, from, to, bytes));
    }
}

/// Puts what the client and the server want sent on the network.
fn flush(net: &mut Net, client: &mut ClientSession, server: &mut FakeServer) {
    while let Some(t) = client.poll_transmit() {
        net.send(addr(CLIENT), t.destination, t.contents);
    }
    server.drain(net);
}

/// When the next thing happens: a deadline or a delivery (after a [`flush`]).
fn next_event(net: &Net, client: &ClientSession, server: &FakeServer) -> Instant {
    let mut next = server.deadline;
    if let Some(t) = client.poll_timeout() {
        next = next.min(t);
    }
    if let Some((t, ..)) = net.in_flight.front() {
        next = next.min(*t);
    }
    next
}

/// Steps the client, the fake server and the network to the next thing that happens; returns
/// the new virtual time.
fn step(net: &mut Net, client: &mut ClientSession, server: &mut FakeServer) -> Instant {
    flush(net, client, server);
    net.now = net.now.max(next_event(net, client, server));
    let now = net.now;
    while net.in_flight.front().is_some_and(|(t, ..)| *t <= now) {
        let Some((_, from, to, bytes)) = net.in_flight.pop_front() else {
            break;
        };
        if to == addr(CLIENT) {
            client.handle_datagram(now, from, &bytes);
        } else if to == addr(SERVER) {
            server.receive(now, from, &bytes);
            server.drain(net);
        }
    }
    client.handle_timeout(now);
    if server.deadline <= now {
        let _ = server.rtc.handle_input(Input::Timeout(now));
    }
    flush(net, client, server);
    now
}

#[test]
fn a_connected_audio_producer_sends_one_packet_per_20_ms_of_virtual_time() {
    let t0 = Instant::now();
    let mut server = FakeServer::new(t0);
    let info = server_info(&server.fingerprint_hex());
    let mut client = ClientSession::new(t0, addr(CLIENT), &info, options(4)).expect("valid");
    let producer = client
        .produce(t0, SourceConfig::audio(), false)
        .expect("opus");
    let ssrc = producer.rtp_parameters.encodings[0]
        .ssrc
        .expect("an SSRC-based encoding");
    server.connect(&client, Some((ssrc, &producer.mid)));
    let mut net = Net {
        now: t0,
        delay: Duration::from_millis(5),
        in_flight: VecDeque::new(),
    };
    client.start(t0);

    let connected = loop {
        let now = step(&mut net, &mut client, &mut server);
        assert!(
            now < t0 + Duration::from_secs(5),
            "no DTLS within 5 virtual seconds"
        );
        if client.connection_state().dtls_connected {
            break now;
        }
    };
    assert!(client.connection_state().ice_connected);
    // Frames go out at connected + k·20 ms: by +995 ms, frames 0..=49 were sent and (5 ms
    // later) received, and frame 50 is not due yet.
    let until = connected + Duration::from_millis(995);
    while next_event(&net, &client, &server) <= until {
        step(&mut net, &mut client, &mut server);
    }
    assert_eq!(client.stats().rtp_sent, 50);
    assert_eq!(server.received_seqs.len(), 50);
    assert!(
        server.received_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers run on: {:?}",
        server.received_seqs
    );
}

#[test]
fn a_consumer_gets_the_servers_packets_stamped_with_the_given_wall_clock() {
    let t0 = Instant::now();
    let mut server = FakeServer::new(t0);
    let info = server_info(&server.fingerprint_hex());
    let mut options = options(5);
    options.wall_clock = Some(WallClock {
        at: t0,
        unix_us: 1_000_000,
    });
    let mut client = ClientSession::new(t0, addr(CLIENT), &info, options).expect("valid");
    // An audio producer's parameters, renamed, make the consumer's (same numbering).
    let mut params = client
        .produce(t0, SourceConfig::audio(), true)
        .expect("opus")
        .rtp_parameters;
    params.mid = Some("s0".into());
    params.encodings[0].ssrc = Some(4242);
    let pt = params.codecs[0].payload_type;
    let mut packets = client.consume(params).expect("valid consumer parameters");
    server.connect(&client, None);
    let mut net = Net {
        now: t0,
        delay: Duration::from_millis(5),
        in_flight: VecDeque::new(),
    };
    client.start(t0);
    while !client.connection_state().dtls_connected {
        let now = step(&mut net, &mut client, &mut server);
        assert!(
            now < t0 + Duration::from_secs(5),
            "no DTLS within 5 virtual seconds"
        );
    }

    let mid = Mid::from("s0");
    let mut api = server.rtc.direct_api();
    api.declare_media(mid, MediaKind::Audio);
    api.declare_stream_tx(Ssrc::from(4242), None, mid, None);
    let stream = api.stream_tx(&Ssrc::from(4242)).expect("declared above");
    stream.write_rtp(RtpWrite::new(
        Pt::from(pt),
        77u64.into(),
        960,
        net.now,
        vec![7u8; 50],
    ));
    let _ = server.rtc.handle_input(Input::Timeout(net.now));
    let packet = loop {
        let now = step(&mut net, &mut client, &mut server);
        if let Ok(p) = packets.try_recv() {
            assert_eq!(p.received_us, 1_000_000 + micros(now - t0));
            break p;
        }
        assert!(now < t0 + Duration::from_secs(10), "the packet never came");
    };
    assert_eq!(packet.ssrc, 4242);
    assert_eq!(packet.seq, 77);
    assert_eq!(&packet.payload[..], &[7u8; 50][..]);
    assert_eq!(client.stats().rtp_received, 1);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).expect("test spans are far below u64::MAX microseconds")
}
