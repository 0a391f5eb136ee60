//! A `PlainTransport` in its worker: plain RTP over UDP on a socket of its own (mediasoup's
//! semantics, optionally SRTP with keys given in the clear), for tools that do not speak WebRTC
//! (ffmpeg, GStreamer, a broadcaster). What arrives is fanned out to the router's consumers like any producer's
//! packets; the driver owns the sockets and hands their datagrams here with the address they
//! arrived at.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sluice_ortc::MediaKind;
use str0m::rtp::ExtensionValues;

use super::Core;
use super::consumer::{ConsumerState, OwnEgress, PipeHistory};
use super::producer::ProducerState;
use crate::core::table::Identified;
use crate::demux::{DatagramKind, Remote};
use crate::error::MediaError;
use crate::events::{EventSender, MediaEvent};
use crate::forwarder::Received;
use crate::layers::SampledRate;
use crate::nack::{NackGenerator, NackPolicy};
use crate::srtp::{SrtpReceiver, SrtpSender};
use crate::types::{
    ConsumerCreated, ConsumerOptions, Key, PlainTransportConnect, PlainTransportCreated,
    PlainTransportOptions, PlainTransportStat, ProducerSpec, SrtpCryptoSuite, SrtpParameters,
};

/// The worker-side state of a plain transport.
#[derive(Debug)]
pub(crate) struct PlainTransportState {
    pub id: String,
    pub router_id: String,
    pub events: Option<EventSender>,
    /// The socket RTP (and, with `rtcp_mux`, RTCP) arrives at.
    pub local: SocketAddr,
    /// The RTCP socket without `rtcp_mux`.
    pub rtcp_local: Option<SocketAddr>,
    /// The first packet's source becomes the remote tuple (mediasoup's `comedia`).
    pub comedia: bool,
    /// Where RTP comes from (and would go to): set by `connect` or, with `comedia`, by the
    /// first packet. Packets from anywhere else are dropped.
    pub remote: Option<SocketAddr>,
    pub producers: Vec<Key>,
    /// Consumers whose RTP this transport sends to its remote.
    pub consumers: Vec<Key>,
    /// Each producer stream by SSRC.
    pub rx_ssrc: HashMap<u32, RxStream>,
    pub bytes_received: u64,
    pub packets_received: u64,
    /// RTP of an SSRC no producer declared, RTCP (read and dropped), and SRTP that does not
    /// authenticate (or comes before `connect` gave the remote's key).
    pub packets_dropped: u64,
    /// With SRTP: the suite, our sender (made at creation), the remote's receiver (`connect`).
    pub srtp: Option<PlainSrtp>,
    /// The SRTCP index of the next keyframe request sent (RFC 3711 §3.4).
    pub srtcp_index: u32,
    pub bytes_sent: u64,
    pub packets_sent: u64,
}

/// A plain transport's SRTP.
#[derive(Debug)]
pub(crate) struct PlainSrtp {
    pub suite: SrtpCryptoSuite,
    pub sender: SrtpSender,
    pub receiver: Option<SrtpReceiver>,
}

/// The bytes of a base64 key of `suite`, or why not.
fn decode_key(params: &SrtpParameters) -> Result<Vec<u8>, MediaError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(params.key_base64.trim())
        .map_err(|e| MediaError::InvalidSrtpParameters(format!("keyBase64: {e}")))?;
    let (key, salt) = params.crypto_suite.key_and_salt_len();
    if bytes.len() != key + salt {
        return Err(MediaError::InvalidSrtpParameters(format!(
            "keyBase64 holds {} bytes; {:?} takes {} (key and salt)",
            bytes.len(),
            params.crypto_suite,
            key + salt
        )));
    }
    Ok(bytes)
}

/// A producer's stream arriving on a plain transport.
#[derive(Debug)]
pub(crate) struct RxStream {
    pub producer: Key,
    pub layer: usize,
    pub unwrap: SeqUnwrap,
    /// A video stream with NACK negotiated (a pipe's): what is missing, to ask for again.
    pub nack: Option<NackGenerator>,
}

/// Whether RTP parameters negotiate generic NACK (`nack` feedback without a parameter).
fn negotiates_nack(params: &sluice_ortc::RtpParameters) -> bool {
    params.codecs.iter().any(|c| {
        c.rtcp_feedback
            .iter()
            .any(|f| f.r#type == "nack" && f.parameter.as_deref().unwrap_or("").is_empty())
    })
}

impl Identified for PlainTransportState {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Extends 16-bit RTP sequence numbers to 64 bits across wrap-arounds (RFC 3550 A.1's idea: the
/// nearest extended value to the last one).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SeqUnwrap {
    last: Option<u64>,
}

impl SeqUnwrap {
    pub fn extend(&mut self, seq: u16) -> u64 {
        let extended = self.peek(seq);
        if self.last.is_none_or(|last| extended > last) {
            self.last = Some(extended);
        }
        extended
    }

    /// What [`extend`](Self::extend) would answer, without taking `seq` in (a packet not yet
    /// authenticated must not move the unwrapper). The first packet is in the second cycle, so
    /// a packet reordered before it still has a smaller value.
    pub fn peek(&self, seq: u16) -> u64 {
        match self.last {
            None => u64::from(seq) + (1 << 16),
            Some(last) => {
                let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
                last.saturating_add_signed(delta)
            }
        }
    }
}

/// What the fan-out reads of a plain RTP packet.
#[derive(Debug, PartialEq, Eq)]
struct PlainRtp<'a> {
    pt: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &'a [u8],
}

/// The fixed RTP header of a packet (RFC 3550 §5.1), its payload after the CSRCs, extension
/// and padding; `None` when the packet is not well-formed RTP.
fn parse_rtp(data: &[u8]) -> Option<PlainRtp<'_>> {
    let start = header_len(data)?;
    let padding = data[0] & 0x20 != 0;
    let marker = data[1] & 0x80 != 0;
    let pt = data[1] & 0x7f;
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let timestamp = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    let mut end = data.len();
    if padding {
        let pad = usize::from(*data.last()?);
        end = end.checked_sub(pad)?;
    }
    let payload = data.get(start..end)?;
    Some(PlainRtp {
        pt,
        marker,
        seq,
        timestamp,
        ssrc,
        payload,
    })
}

/// The length of an RTP packet's header: the fixed twelve bytes, the CSRCs, the extension
/// (what SRTP leaves in the clear); `None` when the packet is not RTP or too short.
fn header_len(data: &[u8]) -> Option<usize> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(data[0] & 0x0f);
    if data[0] & 0x10 != 0 {
        let words = data.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= data.len()).then_some(len)
}

/// A PLI (RFC 4585 §6.3.1) for `media_ssrc`.
fn pli(media_ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    // The sender SSRC: a plain transport has no stream of its own to name.
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&media_ssrc.to_be_bytes());
    p
}

/// A remote a plain transport can send to: a unicast address and a port (datagrams to an
/// unspecified, broadcast or multicast address, or to port 0, could only fail or spray).
fn check_remote(remote: SocketAddr) -> Result<(), MediaError> {
    let ip = remote.ip();
    let unusable = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if unusable {
        return Err(MediaError::InvalidRemote(format!(
            "{ip} is not a unicast address"
        )));
    }
    if remote.port() == 0 {
        return Err(MediaError::InvalidRemote("port 0".into()));
    }
    Ok(())
}

/// An SRTP packet of a declared SSRC, authenticated and decrypted with the remote's key;
/// `None` without a key yet, for an unknown SSRC or a packet that does not authenticate.
fn unprotect(srtp: &PlainSrtp, rx_ssrc: &HashMap<u32, RxStream>, data: &[u8]) -> Option<Vec<u8>> {
    let receiver = srtp.receiver.as_ref()?;
    let header = header_len(data)?;
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    let stream = rx_ssrc.get(&ssrc)?;
    // The sender's rollover counter starts at zero (RFC 3711 §3.3.1); the unwrapper's first
    // cycle is one.
    let roc = u32::try_from((stream.unwrap.peek(seq) >> 16).saturating_sub(1)).ok()?;
    let mut packet = data.to_vec();
    let len = receiver
        .unprotect_rtp(&mut packet, header, ssrc, roc, seq)
        .ok()?;
    packet.truncate(len);
    Some(packet)
}

impl Core {
    /// A plain transport on `router_id` whose sockets the driver bound at `local` (and
    /// `rtcp_local`).
    pub(crate) fn create_plain_transport(
        &mut self,
        router_id: String,
        options: PlainTransportOptions,
        local: SocketAddr,
        rtcp_local: Option<SocketAddr>,
    ) -> Result<PlainTransportCreated, MediaError> {
        if !self.routers.contains_key(&router_id) {
            return Err(MediaError::UnknownRouter(router_id));
        }
        let (srtp, srtp_parameters) = if options.enable_srtp {
            let suite = options.srtp_crypto_suite;
            let (k, s) = suite.key_and_salt_len();
            let material: Vec<u8> = (0..k + s).map(|_| rand::random::<u8>()).collect();
            let sender = SrtpSender::from_suite(suite, &material)
                .map_err(|e| MediaError::InvalidSrtpParameters(e.to_string()))?;
            use base64::Engine;
            let params = SrtpParameters {
                crypto_suite: suite,
                key_base64: base64::engine::general_purpose::STANDARD.encode(&material),
            };
            (
                Some(PlainSrtp {
                    suite,
                    sender,
                    receiver: None,
                }),
                Some(params),
            )
        } else {
            (None, None)
        };
        let id = crate::new_id();
        let key = self.key();
        self.plain_by_local.insert(local, key);
        if let Some(rtcp) = rtcp_local {
            self.plain_by_local.insert(rtcp, key);
        }
        self.plains.insert(
            key,
            PlainTransportState {
                id: id.clone(),
                router_id,
                events: options.events,
                local,
                rtcp_local,
                comedia: options.comedia,
                remote: None,
                producers: Vec::new(),
                consumers: Vec::new(),
                rx_ssrc: HashMap::new(),
                bytes_received: 0,
                packets_received: 0,
                packets_dropped: 0,
                bytes_sent: 0,
                packets_sent: 0,
                srtp,
                srtcp_index: 0,
            },
        );
        Ok(PlainTransportCreated {
            id,
            local,
            ip: self.announced_ip,
            port: local.port(),
            rtcp_port: rtcp_local.map(|a| a.port()),
            srtp_parameters,
        })
    }

    /// Sets the remote tuple of a plain transport and, with SRTP, the remote's key
    /// (mediasoup's `connect({ip, port, srtpParameters})`). A `comedia` transport learns its
    /// tuple, so it takes the key only; an SRTP transport needs the key.
    pub(crate) fn connect_plain_transport(
        &mut self,
        id: &str,
        connect: PlainTransportConnect,
    ) -> Result<(), MediaError> {
        let p = self
            .plains
            .by_id_mut(id)
            .ok_or_else(|| MediaError::UnknownTransport(id.to_owned()))?;
        let connected = p.remote.is_some() && !p.comedia
            || p.srtp.as_ref().is_some_and(|s| s.receiver.is_some());
        if connected {
            return Err(MediaError::AlreadyConnected(id.to_owned()));
        }
        match (&connect.remote, p.comedia) {
            (Some(_), true) => {
                return Err(MediaError::InvalidRemote(format!(
                    "transport {id} is comedia: it learns its remote from the first packet it \
                     receives, so connect takes no ip and port"
                )));
            }
            (None, false) => {
                return Err(MediaError::InvalidRemote(
                    "connect needs the remote's ip and port".into(),
                ));
            }
            (Some(remote), false) => check_remote(*remote)?,
            (None, true) => {}
        }
        let receiver = match (&p.srtp, &connect.srtp_parameters) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(MediaError::InvalidSrtpParameters(format!(
                    "transport {id} was created without SRTP"
                )));
            }
            (Some(_), None) => {
                return Err(MediaError::InvalidSrtpParameters(format!(
                    "transport {id} uses SRTP: connect needs srtpParameters"
                )));
            }
            (Some(srtp), Some(params)) => {
                if params.crypto_suite != srtp.suite {
                    return Err(MediaError::InvalidSrtpParameters(format!(
                        "cryptoSuite {:?}, where the transport uses {:?}",
                        params.crypto_suite, srtp.suite
                    )));
                }
                let material = decode_key(params)?;
                Some(
                    SrtpReceiver::from_suite(params.crypto_suite, &material)
                        .map_err(|e| MediaError::InvalidSrtpParameters(e.to_string()))?,
                )
            }
        };
        if let Some(remote) = connect.remote {
            p.remote = Some(remote);
        }
        if let Some(srtp) = p.srtp.as_mut() {
            srtp.receiver = receiver;
        }
        Ok(())
    }

    /// A producer on plain transport `tkey`: each of its encodings needs an SSRC (plain RTP has
    /// no mid or rid to map streams by).
    pub(crate) fn produce_plain(
        &mut self,
        tkey: Key,
        spec: ProducerSpec,
    ) -> Result<(), MediaError> {
        if self.producers.contains_id(&spec.id) {
            return Err(MediaError::DuplicateId(spec.id));
        }
        let t = self
            .plains
            .get(&tkey)
            .ok_or_else(|| MediaError::UnknownTransport(String::new()))?;
        let mut ssrcs = Vec::new();
        for e in &spec.rtp_parameters.encodings {
            let Some(ssrc) = e.ssrc else {
                return Err(MediaError::InvalidRtpParameters(
                    "a plain transport's producer needs an SSRC in each encoding".into(),
                ));
            };
            if t.rx_ssrc.contains_key(&ssrc) || ssrcs.contains(&ssrc) {
                return Err(MediaError::InvalidRtpParameters(
                    format!("SSRC {ssrc} is already in use on this transport").into(),
                ));
            }
            ssrcs.push(ssrc);
        }
        let router_id = t.router_id.clone();
        let key = self.key();
        let mid = format!("plain{key}");
        let nack = (spec.kind == MediaKind::Video && negotiates_nack(&spec.rtp_parameters))
            .then_some(NackPolicy {
                retry: self.settings.pipe_nack_retry,
                tries: self.settings.pipe_nack_tries,
                max_age: self.settings.retransmission_window,
                max_missing: self.settings.pipe_nack_max_missing,
                max_per_call: self.settings.max_nacked_per_datagram,
            });
        let producer = ProducerState::new(spec, tkey, router_id.clone(), mid);
        let Some(t) = self.plains.get_mut(&tkey) else {
            return Err(MediaError::UnknownTransport(String::new()));
        };
        for (layer, ssrc) in ssrcs.into_iter().enumerate() {
            let stream = RxStream {
                producer: key,
                layer,
                unwrap: SeqUnwrap::default(),
                nack: nack.map(NackGenerator::new),
            };
            t.rx_ssrc.insert(ssrc, stream);
        }
        t.producers.push(key);
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.producers.insert(key);
        }
        self.producers.insert(key, producer);
        Ok(())
    }

    /// A consumer on plain transport `tkey`: the producer's RTP, rewritten for it (its SSRC, the
    /// router's payload types, continuous sequence numbers and timestamps), sent to the
    /// transport's remote from its own port, without SRTP, RTX or header extensions.
    pub(crate) fn consume_plain(
        &mut self,
        tkey: Key,
        id: String,
        options: ConsumerOptions,
        now: Instant,
    ) -> Result<ConsumerCreated, MediaError> {
        if self.consumers.contains_id(&id) {
            return Err(MediaError::DuplicateId(id));
        }
        let pkey = self
            .producers
            .key_of(&options.producer_id)
            .ok_or_else(|| MediaError::UnknownProducer(options.producer_id.clone()))?;
        let key = self.key();
        let (Some(producer), Some(t)) = (self.producers.get(&pkey), self.plains.get(&tkey)) else {
            return Err(MediaError::UnknownProducer(options.producer_id.clone()));
        };
        producer.check_consumable(&t.router_id, &options.rtp_capabilities)?;
        let ssrcs = &mut self.ssrcs;
        let mut params = sluice_ortc::get_consumer_rtp_parameters(
            &producer.consumable,
            &options.rtp_capabilities,
            options.pipe,
            &mut || ssrcs.next_ssrc(),
        )
        .map_err(|e| MediaError::CannotConsume(e.into()))?;
        // Plain RTP: no retransmissions, no header extensions, no mid.
        params
            .codecs
            .retain(|c| !c.mime_type.to_ascii_lowercase().ends_with("/rtx"));
        params.header_extensions.clear();
        params.mid = None;
        for e in &mut params.encodings {
            e.rtx = None;
        }
        let ssrc = params
            .encodings
            .first()
            .and_then(|e| e.ssrc)
            .ok_or_else(|| MediaError::CannotConsume("no SSRC for the consumer".into()))?;
        let pipe_ssrcs = if options.pipe {
            params.encodings.iter().filter_map(|e| e.ssrc).collect()
        } else {
            Vec::new()
        };
        let pipe_history = (options.pipe
            && producer.kind == MediaKind::Video
            && negotiates_nack(&params))
        .then(|| {
            PipeHistory::new(
                self.settings.retransmission_packets,
                self.settings.retransmission_window,
                self.settings.max_resend_ratio,
                self.settings.resend_burst,
            )
        });
        let pt_map = producer
            .mapping
            .codecs
            .iter()
            .filter(|m| {
                params
                    .codecs
                    .iter()
                    .any(|c| c.payload_type == m.mapped_payload_type)
            })
            .map(|m| (m.payload_type, m.mapped_payload_type.into()))
            .collect();
        let mime_type = params
            .codecs
            .first()
            .map_or_else(String::new, |c| c.mime_type.clone());
        let forwarder = producer.new_forwarder(options.paused, now);
        let created = ConsumerCreated {
            kind: producer.kind,
            r#type: producer.r#type,
            rtp_parameters: params.clone(),
            producer_paused: producer.paused,
            score: crate::events::ConsumerScore {
                score: 10,
                producer_score: producer.score(),
                producer_scores: producer.layers.iter().map(|l| l.score).collect(),
            },
        };
        let consumer = ConsumerState {
            id,
            producer: pkey,
            producer_id: options.producer_id.clone(),
            transport: tkey,
            kind: producer.kind,
            r#type: producer.r#type,
            mid: String::new(),
            ssrc,
            rtx_ssrc: None,
            mime_type,
            pt_map,
            forwarder,
            preferred_layers: options.preferred_layers,
            priority: options.priority.max(1),
            reported_layers: None,
            rate: SampledRate::new(std::time::Duration::from_secs(1), now),
            packets: 0,
            bytes: 0,
            score: 10,
            fraction_lost: 0,
            nacks: 0,
            plis: 0,
            firs: 0,
            last_score: None,
            own_egress: Some(OwnEgress::new(&params, "", producer.clock_rate)),
            pipe_ssrcs,
            pipe_history,
        };
        if let Some(p) = self.producers.get_mut(&pkey) {
            p.consumers.push(key);
        }
        if let Some(t) = self.plains.get_mut(&tkey) {
            t.consumers.push(key);
        }
        self.consumers.insert(key, consumer);
        self.update_layers(key, now);
        // A recorder or a tool starts at a keyframe.
        self.serve_consumer_keyframe_request(key, now);
        self.update_demand(pkey);
        Ok(created)
    }

    /// A datagram that arrived at the plain transport socket `local` from `from`.
    pub(crate) fn handle_plain_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.advance(now);
        self.usage.datagrams_received += 1;
        self.usage.bytes_received += data.len() as u64;
        let Some(&tkey) = self.plain_by_local.get(&local) else {
            self.usage.dropped_unknown_source += 1;
            return;
        };
        let Some(t) = self.plains.get_mut(&tkey) else {
            return;
        };
        t.bytes_received += data.len() as u64;
        t.packets_received += 1;
        if t.rtcp_local == Some(local) || crate::rtcp::is_rtcp(data) {
            // Keyframe requests for this transport's consumers (a pipe's other end, a tool that
            // decodes) are served; the rest (sender and receiver reports) is read and dropped.
            // From the remote only; with SRTP, only SRTCP that authenticates with its key.
            let from_remote = t.remote.is_some_and(|r| r.ip() == from.ip());
            let max_nacked = self.settings.max_nacked_per_datagram;
            let feedback = match (&t.srtp, from_remote) {
                (_, false) => Vec::new(),
                (None, true) => crate::rtcp::read(data, max_nacked),
                (Some(srtp), true) => srtp.receiver.as_ref().map_or_else(Vec::new, |r| {
                    let mut plain = data.to_vec();
                    r.unprotect_rtcp(&mut plain)
                        .map(|len| crate::rtcp::read(&plain[..len], max_nacked))
                        .unwrap_or_default()
                }),
            };
            let (mut nacked, mut asked) = (Vec::new(), Vec::new());
            for f in feedback {
                match f {
                    crate::rtcp::Feedback::Nack { ssrc, lost } => nacked.push((ssrc, lost)),
                    f if f.is_keyframe_request() => asked.push(f.ssrc()),
                    _ => {}
                }
            }
            if !nacked.is_empty() {
                self.resend_on_pipe(tkey, &nacked, now);
            }
            let Some(t) = self.plains.get_mut(&tkey) else {
                return;
            };
            if asked.is_empty() {
                if nacked.is_empty() {
                    t.packets_dropped += 1;
                }
                return;
            }
            let mine = t.consumers.clone();
            // A pipe consumer's: a keyframe of each encoding asked for, from the producer.
            let layers: Vec<(Key, usize)> = mine
                .iter()
                .filter_map(|k| self.consumers.get(k))
                .flat_map(|c| {
                    c.pipe_ssrcs
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| asked.contains(s))
                        .map(|(layer, _)| (c.producer, layer))
                })
                .collect();
            for (pkey, layer) in layers {
                self.request_producer_keyframe(pkey, layer, now);
            }
            let targets: Vec<Key> = mine
                .into_iter()
                .filter(|k| {
                    self.consumers
                        .get(k)
                        .is_some_and(|c| c.pipe_ssrcs.is_empty() && asked.contains(&c.ssrc))
                })
                .collect();
            for ckey in targets {
                if let Some(c) = self.consumers.get_mut(&ckey) {
                    c.forwarder.request_keyframe(now);
                }
                self.serve_consumer_keyframe_request(ckey, now);
            }
            return;
        }
        match t.remote {
            Some(remote) if remote != from => {
                tracing::debug!(transport = %t.id, %from, %remote, "RTP from another source than the remote tuple");
                self.usage.dropped_unknown_source += 1;
                return;
            }
            Some(_) => {}
            None if t.comedia => {
                tracing::debug!(transport = %t.id, %local, %from, "comedia: the remote tuple is the first packet's source");
                t.remote = Some(from);
                let event = MediaEvent::IceSelectedTupleChange {
                    transport_id: t.id.clone(),
                    remote: from,
                    protocol: Remote::udp(from).protocol,
                };
                if let Some(events) = &t.events {
                    let _ = events.send(event);
                }
            }
            None => {
                // Not connected: nobody was told to send here.
                self.usage.dropped_unknown_source += 1;
                return;
            }
        }
        if DatagramKind::of(data) != DatagramKind::RtpOrRtcp {
            self.usage.dropped_malformed += 1;
            return;
        }
        let decrypted;
        let data = match &t.srtp {
            None => data,
            Some(srtp) => {
                let Some(plain) = unprotect(srtp, &t.rx_ssrc, data) else {
                    tracing::trace!(transport = %t.id, "SRTP packet dropped (no key yet, unknown SSRC or not authentic)");
                    t.packets_dropped += 1;
                    return;
                };
                decrypted = plain;
                &decrypted[..]
            }
        };
        let Some(rtp) = parse_rtp(data) else {
            self.usage.dropped_malformed += 1;
            return;
        };
        let Some(stream) = t.rx_ssrc.get_mut(&rtp.ssrc) else {
            tracing::debug!(transport = %t.id, ssrc = rtp.ssrc, "RTP of an SSRC no producer declared");
            t.packets_dropped += 1;
            return;
        };
        let (pkey, layer) = (stream.producer, stream.layer);
        let seq = stream.unwrap.extend(rtp.seq);
        let lost = stream.nack.as_mut().map_or_else(Vec::new, |n| {
            n.on_packet(seq, now);
            n.due(now)
        });
        let ssrc = rtp.ssrc;
        let packet = Received {
            payload_type: rtp.pt,
            seq,
            rtp_timestamp: rtp.timestamp,
            marker: rtp.marker,
            ext_vals: ExtensionValues::default(),
            payload: Arc::from(rtp.payload),
            at: now,
        };
        if !lost.is_empty() {
            self.send_plain_rtcp(tkey, crate::rtcp::nack(ssrc, &lost));
        }
        self.fan_out(pkey, layer, packet, now);
    }

    /// Answers NACKs from the other end of plain transport `tkey` (a pipe's target): each
    /// packet still kept by its pipe consumer is sent again, at most once per
    /// `resend_interval`.
    fn resend_on_pipe(&mut self, tkey: Key, nacked: &[(u32, Vec<u16>)], now: Instant) {
        let interval = self.settings.resend_interval;
        let Core {
            plains,
            consumers,
            outbox,
            usage,
            ..
        } = self;
        let Some(t) = plains.get_mut(&tkey) else {
            return;
        };
        let Some(remote) = t.remote else {
            return;
        };
        for ckey in &t.consumers {
            let Some(c) = consumers.get_mut(ckey) else {
                continue;
            };
            let pipe_ssrcs = &c.pipe_ssrcs;
            let Some(history) = c.pipe_history.as_mut() else {
                continue;
            };
            for (ssrc, lost) in nacked.iter().filter(|(s, _)| pipe_ssrcs.contains(s)) {
                c.nacks += 1;
                for &seq in lost {
                    let Some(bytes) = history.resend(*ssrc, seq, now, interval) else {
                        continue;
                    };
                    usage.datagrams_sent += 1;
                    usage.bytes_sent += bytes.len() as u64;
                    t.bytes_sent += bytes.len() as u64;
                    t.packets_sent += 1;
                    outbox.push_back(super::Transmit {
                        destination: Remote::udp(remote),
                        source: Some(t.local),
                        contents: bytes,
                    });
                }
            }
        }
    }

    /// Asks the remote of plain transport `tkey` for a keyframe of `ssrc` (a PLI, SRTCP with
    /// SRTP), to the RTP port with `rtcp_mux`, else from the RTCP socket to the next port. A
    /// tool may ignore it (ffmpeg does); a pipe's other end serves it.
    pub(crate) fn request_plain_keyframe(&mut self, tkey: Key, ssrc: u32) -> bool {
        self.send_plain_rtcp(tkey, pli(ssrc))
    }

    /// Sends RTCP `packet` to the remote of plain transport `tkey` (SRTCP with SRTP), to the RTP
    /// port with `rtcp_mux`, else from the RTCP socket to the next port.
    fn send_plain_rtcp(&mut self, tkey: Key, mut packet: Vec<u8>) -> bool {
        let Some(t) = self.plains.get_mut(&tkey) else {
            return false;
        };
        let Some(remote) = t.remote else {
            return false;
        };
        if let Some(srtp) = &t.srtp {
            let index = t.srtcp_index;
            t.srtcp_index = (index + 1) & 0x7fff_ffff;
            if srtp.sender.protect_rtcp(&mut packet, index).is_err() {
                return false;
            }
        }
        let (source, destination) = match t.rtcp_local {
            None => (t.local, remote),
            Some(rtcp) => (
                rtcp,
                SocketAddr::new(remote.ip(), remote.port().saturating_add(1)),
            ),
        };
        self.usage.datagrams_sent += 1;
        self.usage.bytes_sent += packet.len() as u64;
        t.bytes_sent += packet.len() as u64;
        t.packets_sent += 1;
        self.outbox.push_back(super::Transmit {
            destination: Remote::udp(destination),
            source: Some(source),
            contents: packet,
        });
        true
    }

    /// Whether a plain transport still has the socket at `local` (the driver closes the others).
    pub(crate) fn plain_socket_in_use(&self, local: &SocketAddr) -> bool {
        self.plain_by_local.contains_key(local)
    }

    pub(crate) fn plain_stats(
        &self,
        id: &str,
        timestamp: u64,
    ) -> Result<PlainTransportStat, MediaError> {
        let p = self
            .plains
            .by_id(id)
            .ok_or_else(|| MediaError::UnknownTransport(id.to_owned()))?;
        Ok(PlainTransportStat {
            kind: "plain-rtp-transport",
            transport_id: p.id.clone(),
            timestamp,
            comedia: p.comedia,
            rtcp_mux: p.rtcp_local.is_none(),
            tuple_local_port: p.local.port(),
            tuple_remote: p.remote.map(|a| a.to_string()),
            bytes_received: p.bytes_received,
            packets_received: p.packets_received,
            packets_dropped: p.packets_dropped,
            bytes_sent: p.bytes_sent,
            packets_sent: p.packets_sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_the_wrap_and_reordering() {
        let mut u = SeqUnwrap::default();
        let a = u.extend(65534);
        assert_eq!(u.extend(65535), a + 1);
        assert_eq!(u.extend(0), a + 2);
        assert_eq!(u.extend(65535), a + 1, "a late packet from before the wrap");
        assert_eq!(u.extend(1), a + 3);
    }

    #[test]
    fn the_rtp_header_is_read_past_csrcs_extension_and_padding() {
        let mut p = vec![
            0x80 | 0x20 | 0x10 | 1,
            0x80 | 101,
            0,
            7,
            0,
            0,
            0,
            9,
            0,
            0,
            8,
            0xae,
        ];
        p.extend_from_slice(&[1, 2, 3, 4]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one extension word
        p.extend_from_slice(&[0xaa, 0xbb]); // payload
        p.extend_from_slice(&[0, 2]); // two bytes of padding
        let rtp = parse_rtp(&p).unwrap();
        assert_eq!(
            rtp,
            PlainRtp {
                pt: 101,
                marker: true,
                seq: 7,
                timestamp: 9,
                ssrc: 2222,
                payload: &[0xaa, 0xbb],
            }
        );
        // Truncated or lying lengths are refused, not read past.
        assert!(parse_rtp(&p[..14]).is_none());
        let mut lying = p.clone();
        *lying.last_mut().unwrap() = 200;
        assert!(parse_rtp(&lying).is_none());
        assert!(parse_rtp(&[0x40; 20]).is_none(), "not version 2");
    }
}
