//! A consumer's per-packet path, outside the worker: the forwarder's decision, str0m's RTP write,
//! SRTP protection and serialisation, and the UDP send. Two str0m sessions are connected in memory
//! (ICE-lite server, full-ICE client, DTLS), then the server side forwards packets to the client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // Benchmark scaffolding.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_media::forwarder::{Forwarder, InPacket, Verdict};
use sluice_media::payload;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc, Vp8Descriptor};
use str0m::{Candidate, IceCreds, Input, Output, Rtc};

pub const SERVER: &str = "127.0.0.1:4000";
pub const CLIENT: &str = "127.0.0.1:5000";

fn drain(rtc: &mut Rtc, out: &mut Vec<(bool, Vec<u8>)>, to_client: bool) {
    while let Ok(o) = rtc.poll_output() {
        match o {
            Output::Transmit(t) => out.push((to_client, t.contents.to_vec())),
            Output::Timeout(_) => break,
            Output::Event(_) => {}
        }
    }
}

/// A connected (server, client) pair, the server sending VP8 on `ssrc` with payload type 96.
pub fn connected_pair() -> (Rtc, Rtc, Ssrc) {
    let now = Instant::now();
    let server_creds = IceCreds::new();
    let mut server = Rtc::builder()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .set_local_ice_credentials(server_creds.clone())
        .build(now);
    let client_creds = IceCreds::new();
    let mut client = Rtc::builder()
        .set_rtp_mode(true)
        .set_local_ice_credentials(client_creds.clone())
        .build(now);
    let (s_addr, c_addr): (SocketAddr, SocketAddr) =
        (SERVER.parse().unwrap(), CLIENT.parse().unwrap());
    server.add_local_candidate(Candidate::host(s_addr, "udp").unwrap());
    client.add_local_candidate(Candidate::host(c_addr, "udp").unwrap());
    client.add_remote_candidate(Candidate::host(s_addr, "udp").unwrap());
    let sf = server.direct_api().local_dtls_fingerprint().clone();
    let cf = client.direct_api().local_dtls_fingerprint().clone();
    client.direct_api().set_remote_fingerprint(sf);
    client.direct_api().set_remote_ice_credentials(server_creds);
    client.direct_api().set_ice_controlling(true);
    server.direct_api().set_remote_fingerprint(cf);
    server.direct_api().set_remote_ice_credentials(IceCreds {
        ufrag: client_creds.ufrag,
        pass: "x".repeat(22),
    });
    client.direct_api().start_dtls(true).unwrap();
    server.direct_api().start_dtls(false).unwrap();
    let mid = Mid::from("0");
    let ssrc = Ssrc::from(4242);
    server.direct_api().declare_media(mid, MediaKind::Video);
    server
        .direct_api()
        .declare_stream_tx(ssrc, Some(Ssrc::from(4243)), mid, None);
    client.direct_api().declare_media(mid, MediaKind::Video);
    client
        .direct_api()
        .expect_stream_rx(ssrc, Some(Ssrc::from(4243)), mid, None);

    let mut t = now;
    for _ in 0..2000 {
        t += Duration::from_millis(2);
        let _ = server.handle_input(Input::Timeout(t));
        let _ = client.handle_input(Input::Timeout(t));
        let mut q = Vec::new();
        drain(&mut client, &mut q, false);
        drain(&mut server, &mut q, true);
        while let Some((to_client, data)) = q.pop() {
            let (rtc, src, dst) = if to_client {
                (&mut client, s_addr, c_addr)
            } else {
                (&mut server, c_addr, s_addr)
            };
            let r = Receive::new(Protocol::Udp, src, dst, &data).unwrap();
            let _ = rtc.handle_input(Input::Receive(t, r));
            drain(rtc, &mut q, !to_client);
        }
        if server.is_connected() && client.is_connected() {
            return (server, client, ssrc);
        }
    }
    panic!("the in-memory pair did not connect");
}

/// A VP8 payload of `size` bytes with a 15-bit picture id.
pub fn vp8_payload(pid: u16, keyframe: bool, size: usize) -> Arc<[u8]> {
    let mut p = vec![
        0x90,
        0x80,
        0x80 | (pid >> 8) as u8,
        pid as u8,
        if keyframe { 0 } else { 1 },
    ];
    p.resize(size, 0xab);
    p.into()
}

/// The consumer's side of one forwarded packet, as the worker does it.
pub struct ForwardPath {
    pub server: Rtc,
    pub forwarder: Forwarder,
    pub ssrc: Ssrc,
    pub socket: UdpSocket,
    pub sink: SocketAddr,
    seq: u64,
    ts: u32,
    payloads: Vec<Arc<[u8]>>,
}

impl ForwardPath {
    pub fn new() -> (ForwardPath, Rtc, UdpSocket) {
        let (server, client, ssrc) = connected_pair();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A sink socket nobody reads: the kernel drops what overflows it, like a busy client.
        let sink_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = sink_socket.local_addr().unwrap();
        let mut forwarder = Forwarder::new(Codec::Vp8, 90000, true, 1);
        forwarder.set_paused(false, Instant::now());
        let payloads = (0..64u16).map(|i| vp8_payload(i, i == 0, 1200)).collect();
        (
            ForwardPath {
                server,
                forwarder,
                ssrc,
                socket,
                sink,
                seq: 1,
                ts: 0,
                payloads,
            },
            client,
            sink_socket,
        )
    }

    /// Forwards one packet: decision, rewrite, str0m write, SRTP, send. Returns bytes sent.
    pub fn forward_one(&mut self, now: Instant) -> usize {
        let payload = self.payloads[(self.seq % 64) as usize].clone();
        let info = payload::inspect(Codec::Vp8, &payload);
        let input = InPacket {
            layer: 0,
            seq: self.seq,
            timestamp: self.ts,
            info,
        };
        self.seq += 1;
        if self.seq % 3 == 0 {
            self.ts = self.ts.wrapping_add(3000);
        }
        let Verdict::Forward(out) = self.forwarder.on_packet(&input, now) else {
            return 0;
        };
        let mut write = RtpWrite::new(
            Pt::from(96),
            out.seq.into(),
            out.timestamp,
            now,
            payload.clone(),
        )
        .nackable(true);
        if let (Some(pid), Ok(desc)) = (out.picture_id, Vp8Descriptor::parse(&payload))
            && let Ok(patch) = desc.patch().picture_id(pid).build()
        {
            write = write.vp8_patch(patch);
        }
        if let Some(stream) = self.server.direct_api().stream_tx(&self.ssrc) {
            stream.write_rtp(write);
        }
        let _ = self.server.handle_input(Input::Timeout(now));
        let mut sent = 0;
        while let Ok(o) = self.server.poll_output() {
            match o {
                Output::Transmit(t) => {
                    sent += self.socket.send_to(&t.contents, self.sink).unwrap_or(0);
                }
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
        sent
    }
}
