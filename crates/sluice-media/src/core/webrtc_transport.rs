//! A WebRTC transport in the core ([`TransportState`]): one ICE-lite, DTLS-SRTP (and SCTP)
//! connection with one client — str0m's `Rtc`, driven with the time the core is given, the media
//! lines of the transport's producers and consumers, and its SCTP streams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_ortc::{
    DtlsFingerprint, DtlsParameters, DtlsRole, IceCandidate, IceCandidateTcpType, IceCandidateType,
    IceParameters, MediaKind, Protocol, RtpCapabilities, RtpParameters, SctpParameters,
};
use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::config::{DtlsCert, Fingerprint};
use str0m::media::{Mid, Pt};
use str0m::net::TcpType;
use str0m::{Candidate, IceConnectionState, IceCreds, Rtc};

use crate::core::table::Identified;
use crate::demux::Remote;
use crate::error::MediaError;
use crate::events::{DtlsState, EventSender, IceState, MediaEvent, SctpState};
use crate::fingerprint::{ExpectedFingerprint, HashFunction, PeerCertificateCapture};
use crate::numbering::{self, OfferSession, OfferedMedia};
use crate::srtp::{KeySlot, SrtpReceiver, SrtpSender};
use crate::types::{
    BandwidthEstimation, Key, SCTP_PORT, TransportCreated, TransportStat, TransportTuple,
    WebRtcTransportOptions,
};

/// The password we install as the client's ICE password. ICE-lite answers requests signed with
/// our own password only, so the client's is never used; mediasoup signaling does not carry it.
const REMOTE_ICE_PASSWORD: &str = "sluiceremoteicepasswordunused";

/// Who a media line of the transport belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaOwner {
    Producer(Key),
    Consumer(Key),
}

/// One media line (m-line) of the transport, in str0m's order.
#[derive(Debug, Clone)]
pub(crate) struct MediaLine {
    pub mid: String,
    pub kind: MediaKind,
    pub owner: MediaOwner,
    /// As the client sees them: a producer's own, or a consumer's.
    pub rtp_parameters: RtpParameters,
    pub active: bool,
}

/// str0m's default share of resends in what a stream sends beyond which queued resends are
/// dropped (a link that loses that much is better served by a keyframe).
const RTX_RATIO_CAP: f32 = 0.15;

/// What a video consumer keeps to answer NACKs (`MediaSettings::retransmission_*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retransmission {
    pub window: Duration,
    pub packets: usize,
}

/// A consumer's send stream as declared to str0m.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredConsumer {
    pub ssrc: u32,
    pub rtx: Option<u32>,
    /// Router payload type → the payload type sent on this transport.
    pub payload_types: Vec<(u8, Pt)>,
    /// Payload type sent → its RTX payload type, where RTX was negotiated.
    pub rtx_payload_types: Vec<(u8, u8)>,
}

/// How a consumer's packets leave: through a str0m send stream, or written by sluice itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Egress {
    Str0m,
    Own,
}

/// Who owns a data channel of a WebRTC transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataOwner {
    Producer(Key),
    Consumer(Key),
}

/// The worker-side state of one transport.
pub(crate) struct TransportState {
    pub id: String,
    pub router_id: String,
    pub rtc: Rtc,
    /// Where the DTLS handshake puts the SRTP keys it exports…
    pub keys: Arc<KeySlot>,
    /// …from which, once DTLS is connected, the consumers with their own egress are protected.
    pub srtp: Option<SrtpSender>,
    /// …and the client's RTCP about them read (a copy; str0m reads the original).
    pub srtp_rx: Option<SrtpReceiver>,
    pub events: Option<EventSender>,
    /// The addresses of our host candidates (the worker's UDP socket and TCP listener); str0m
    /// wants the one a datagram arrived at as its destination.
    pub local_addr: SocketAddr,
    pub tcp_local_addr: Option<SocketAddr>,
    pub local_ufrag: String,
    /// The client's ufrag, learnt from STUN USERNAMEs (mediasoup signaling does not carry it).
    pub remote_ufrag: Option<String>,
    pub enable_sctp: bool,
    pub dtls_started: bool,
    /// As the DTLS server, nothing has come from the client yet but garbage: DTLS datagrams are
    /// dropped until one starts with a ClientHello (RFC 6347 §4.1.2.7: invalid records are
    /// discarded; str0m would queue them, and 30 of them fail the handshake).
    pub awaiting_client_hello: bool,
    /// The client's `a=setup` value (`active`: the client is the DTLS client).
    pub remote_setup: &'static str,
    /// `sha-256 AB:CD:…` of the client, once connected.
    pub remote_fingerprint: Option<String>,
    /// The client's fingerprint the peer is checked against when DTLS connects.
    pub expected_fingerprint: Option<ExpectedFingerprint>,
    /// Reads the peer's certificate from the handshake when the fingerprint is not sha-256.
    pub peer_certificate: Option<PeerCertificateCapture>,
    pub ice_state: IceState,
    pub dtls_state: DtlsState,
    pub sctp_state: Option<SctpState>,
    pub selected_remote: Option<Remote>,
    /// The source of the latest binding request carrying USE-CANDIDATE: the tuple the client
    /// nominates, which becomes the selected one once str0m answers it (as in mediasoup: other
    /// checks do not move the selected tuple once there is one).
    pub nominating: Option<Remote>,
    /// When str0m next wants `handle_input(Timeout)`.
    pub next_timeout: Option<Instant>,
    /// Whether that deadline must be kept to the millisecond (see `MediaSettings::timer_slack`).
    pub exact_timeout: bool,
    pub medias: Vec<MediaLine>,
    pub next_mid: u32,
    /// Producer numbering to hand to str0m once DTLS has started.
    pub offer_pending: bool,
    pub producers: Vec<Key>,
    pub consumers: Vec<Key>,
    /// Of those, the ones whose packets str0m sends (simulcast and SVC): what its estimator
    /// measures. Without one, it measures nothing (see `MediaSettings::idle_estimator_interval`).
    pub str0m_egress_consumers: usize,
    pub producer_by_mid: HashMap<Mid, Key>,
    pub consumer_by_mid: HashMap<Mid, Key>,
    /// SSRC of an incoming stream → (producer, layer).
    pub rx_ssrc: HashMap<u32, (Key, usize)>,
    /// SCTP stream ids in use (data producers' and data consumers'); `None` without SCTP.
    pub sctp_streams: Option<sluice_ortc::SctpStreamIdAllocator>,
    pub data_producers: Vec<Key>,
    pub data_consumers: Vec<Key>,
    pub data_by_channel: HashMap<ChannelId, DataOwner>,
    /// Channels sluice closed whose SCTP stream ids str0m still holds (see
    /// [`TransportState::close_data_channel`]), with those ids.
    pub closing_channels: HashMap<ChannelId, u16>,
    pub bandwidth_estimation: BandwidthEstimation,
    pub available_bitrate: Option<u64>,
    /// What the consumers would send at their preferred live layers, and that plus the headroom
    /// to switch up (what the estimator probes for); refreshed every tick.
    pub desired_bitrate: u64,
    pub effective_desired_bitrate: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
}

/// The estimation a transport of a router with these capabilities runs.
///
/// The estimate only picks video layers. A router without video codecs (a voice room) has none
/// to pick, and its audio consumers carry no transport-wide-cc sequence numbers (for audio the
/// extension is receive-only, as in mediasoup), so str0m's estimator would get no feedback while
/// its pacer still took a timeout before and after every packet: such transports run without.
pub(crate) fn effective_bandwidth_estimation(
    caps: &RtpCapabilities,
    configured: BandwidthEstimation,
) -> BandwidthEstimation {
    if caps.codecs.iter().any(|c| c.kind == MediaKind::Video) {
        configured
    } else {
        BandwidthEstimation::Off
    }
}

impl TransportState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        router_id: String,
        caps: &RtpCapabilities,
        cert: &DtlsCert,
        local_addr: SocketAddr,
        tcp_local_addr: Option<SocketAddr>,
        announced_ip: std::net::IpAddr,
        options: &WebRtcTransportOptions,
        now: Instant,
    ) -> Result<(TransportState, TransportCreated), MediaError> {
        let creds = IceCreds::new();
        let mut config = numbering::rtc_config_for_router(caps)
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds.clone())
            .set_dtls_cert(cert.clone())
            .set_sctp_max_message_size(options.max_sctp_message_size)
            .set_stats_interval(Some(Duration::from_secs(1)))
            // str0m checks only sha-256 and sha-1 fingerprints; the transport checks the peer
            // itself when DTLS connects (`verify_peer`), whatever the hash function.
            .set_fingerprint_verification(false);
        let bandwidth_estimation =
            effective_bandwidth_estimation(caps, options.bandwidth_estimation);
        if bandwidth_estimation == BandwidthEstimation::Twcc {
            config = config.enable_bwe(Some(Bitrate::bps(
                options.initial_available_outgoing_bitrate,
            )));
        }
        let keys = Arc::new(KeySlot::default());
        let config = config.set_crypto_provider(crate::srtp::provider());
        let mut rtc = crate::srtp::with_key_slot(keys.clone(), || config.build(now));
        let ip = announced_ip.to_string();
        let mut ice_candidates = Vec::new();
        let mut add_candidate = |addr: SocketAddr, protocol: Protocol| {
            let (candidate, foundation, tcp_type) = match protocol {
                Protocol::Udp => (Candidate::host(addr, "udp"), "udpcandidate", None),
                Protocol::Tcp => (
                    Candidate::builder()
                        .tcp()
                        .host(addr)
                        .tcptype(TcpType::Passive)
                        .build(),
                    "tcpcandidate",
                    Some(IceCandidateTcpType::Passive),
                ),
            };
            let candidate = candidate.map_err(|e| MediaError::Rtc(e.to_string()))?;
            ice_candidates.push(IceCandidate {
                foundation: foundation.into(),
                priority: candidate.prio(),
                ip: Some(ip.clone()),
                address: ip.clone(),
                protocol,
                port: addr.port(),
                r#type: IceCandidateType::Host,
                tcp_type,
            });
            rtc.add_local_candidate(candidate);
            Ok::<(), MediaError>(())
        };
        if options.enable_udp {
            add_candidate(local_addr, Protocol::Udp)?;
        }
        let tcp_local_addr = tcp_local_addr.filter(|_| options.enable_tcp);
        if let Some(addr) = tcp_local_addr {
            add_candidate(addr, Protocol::Tcp)?;
        }
        if ice_candidates.is_empty() {
            return Err(MediaError::NoCandidate(if options.enable_udp {
                "UDP is disabled"
            } else {
                "only TCP was asked for and the worker does not listen on TCP"
            }));
        }
        let fingerprint = rtc.direct_api().local_dtls_fingerprint().clone();

        let ice_parameters = IceParameters {
            username_fragment: creds.ufrag.clone(),
            password: creds.pass.clone(),
            ice_lite: Some(true),
        };
        let dtls_parameters = DtlsParameters {
            role: Some(DtlsRole::Auto),
            fingerprints: vec![fingerprint_to_ortc(&fingerprint)],
        };
        let sctp_parameters = options.enable_sctp.then_some(SctpParameters {
            port: SCTP_PORT,
            os: options.num_sctp_streams.os,
            mis: options.num_sctp_streams.mis,
            max_message_size: options.max_sctp_message_size,
        });
        let state = TransportState {
            id: id.clone(),
            router_id,
            rtc,
            keys,
            srtp: None,
            srtp_rx: None,
            events: options.events.clone(),
            local_addr,
            tcp_local_addr,
            local_ufrag: creds.ufrag,
            remote_ufrag: None,
            enable_sctp: options.enable_sctp,
            dtls_started: false,
            remote_setup: "active",
            awaiting_client_hello: true,
            remote_fingerprint: None,
            expected_fingerprint: None,
            peer_certificate: None,
            ice_state: IceState::New,
            dtls_state: DtlsState::New,
            sctp_state: options.enable_sctp.then_some(SctpState::New),
            selected_remote: None,
            nominating: None,
            next_timeout: None,
            exact_timeout: false,
            medias: Vec::new(),
            next_mid: 0,
            offer_pending: false,
            producers: Vec::new(),
            consumers: Vec::new(),
            producer_by_mid: HashMap::new(),
            consumer_by_mid: HashMap::new(),
            rx_ssrc: HashMap::new(),
            sctp_streams: options.enable_sctp.then(|| {
                sluice_ortc::SctpStreamIdAllocator::new(
                    options
                        .num_sctp_streams
                        .os
                        .min(options.num_sctp_streams.mis),
                )
            }),
            data_producers: Vec::new(),
            data_consumers: Vec::new(),
            data_by_channel: HashMap::new(),
            closing_channels: HashMap::new(),
            str0m_egress_consumers: 0,
            bandwidth_estimation,
            available_bitrate: (bandwidth_estimation != BandwidthEstimation::Off)
                .then_some(options.initial_available_outgoing_bitrate),
            desired_bitrate: 0,
            effective_desired_bitrate: 0,
            bytes_received: 0,
            bytes_sent: 0,
            packets_received: 0,
            packets_sent: 0,
        };
        let created = TransportCreated {
            id,
            ice_parameters,
            ice_candidates,
            dtls_parameters,
            sctp_parameters,
        };
        Ok((state, created))
    }

    pub fn emit(&self, event: MediaEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// Installs the client's fingerprint and starts DTLS in the role the client left us.
    ///
    /// Every hash function mediasoup accepts is accepted (sha-1, sha-224, sha-256, sha-384,
    /// sha-512); the peer is verified when DTLS connects ([`crate::fingerprint`]).
    pub fn connect(&mut self, params: &DtlsParameters) -> Result<(), MediaError> {
        if self.dtls_started {
            return Err(MediaError::AlreadyConnected(self.id.clone()));
        }
        if params.fingerprints.is_empty() {
            return Err(MediaError::InvalidDtlsParameters(
                "no fingerprint".to_owned(),
            ));
        }
        let expected = params
            .fingerprints
            .iter()
            .map(|f| ExpectedFingerprint::parse(&f.algorithm, &f.value))
            .collect::<Result<Vec<_>, String>>()
            .map_err(MediaError::InvalidDtlsParameters)?;
        // sha-256 when the client gave one: str0m then fingerprints the very certificate it used.
        let chosen = expected
            .iter()
            .find(|f| f.hash == HashFunction::Sha256)
            .or_else(|| expected.first())
            .cloned()
            .ok_or_else(|| MediaError::InvalidDtlsParameters("no fingerprint".to_owned()))?;
        let text = chosen.to_sdp();
        let parsed: Fingerprint = text
            .parse()
            .map_err(|e: String| MediaError::InvalidDtlsParameters(e))?;
        // str0m fingerprints the handshake's certificate itself with sha-256 and sha-1; for
        // the others the certificate is read from the handshake.
        if !matches!(chosen.hash, HashFunction::Sha256 | HashFunction::Sha1) {
            self.peer_certificate = Some(PeerCertificateCapture::default());
        }
        self.expected_fingerprint = Some(chosen);
        // The client says which role it takes; we take the other. "auto" from a client (not
        // something mediasoup-client sends) leaves us the server, as our own "auto" implies.
        let active = matches!(params.role, Some(DtlsRole::Server));
        let mut api = self.rtc.direct_api();
        api.set_remote_fingerprint(parsed);
        api.start_dtls(active)
            .map_err(|e| MediaError::Rtc(e.to_string()))?;
        if self.enable_sctp {
            api.start_sctp(active);
        }
        self.dtls_started = true;
        self.awaiting_client_hello &= !active;
        self.remote_setup = if active { "passive" } else { "active" };
        self.remote_fingerprint = Some(text);
        self.dtls_state = DtlsState::Connecting;
        if self.enable_sctp {
            self.sctp_state = Some(SctpState::Connecting);
        }
        Ok(())
    }

    /// Checks the certificate the DTLS handshake used against the client's fingerprint; called
    /// when str0m reports DTLS connected, before anything else of the transport is polled.
    pub fn verify_peer(&mut self) -> Result<(), String> {
        let expected = self
            .expected_fingerprint
            .as_ref()
            .ok_or("DTLS connected before connect()")?;
        // str0m's fingerprint of the certificate the handshake used: with the client's hash
        // function when str0m has it (sha-256, sha-1), else sha-256.
        let used = self
            .rtc
            .direct_api()
            .remote_dtls_fingerprint()
            .and_then(|f| Some((HashFunction::parse(&f.hash_func)?, f.bytes.clone())))
            .ok_or("DTLS connected without the peer's certificate")?;
        if used.0 == expected.hash {
            return if used.1 == expected.bytes {
                Ok(())
            } else {
                Err(format!(
                    "the peer's certificate does not match its {} fingerprint",
                    expected.hash.name()
                ))
            };
        }
        if used.0 != HashFunction::Sha256 {
            return Err("DTLS connected without the peer's sha-256 fingerprint".into());
        }
        let used = used.1;
        let der = self
            .peer_certificate
            .as_ref()
            .and_then(PeerCertificateCapture::certificate)
            .ok_or("the peer's certificate was not seen in the handshake")?;
        if HashFunction::Sha256.digest(der) != used {
            return Err("the certificate seen is not the one the handshake used".into());
        }
        if !expected.matches(der) {
            return Err(format!(
                "the peer's certificate does not match its {} fingerprint",
                expected.hash.name()
            ));
        }
        self.peer_certificate = None;
        Ok(())
    }

    /// New local ICE credentials. The caller updates the demux with the returned old ufrag.
    pub fn restart_ice(&mut self) -> (IceParameters, String) {
        let creds = IceCreds::new();
        self.rtc
            .direct_api()
            .set_local_ice_credentials(creds.clone());
        let old = std::mem::replace(&mut self.local_ufrag, creds.ufrag.clone());
        (
            IceParameters {
                username_fragment: creds.ufrag,
                password: creds.pass,
                ice_lite: Some(true),
            },
            old,
        )
    }

    /// Learns the client's ufrag from a STUN USERNAME (`local:remote`) and installs it.
    pub fn learn_remote_ufrag(&mut self, remote: &str) {
        if self.remote_ufrag.as_deref() == Some(remote) {
            return;
        }
        self.remote_ufrag = Some(remote.to_owned());
        self.rtc.direct_api().set_remote_ice_credentials(IceCreds {
            ufrag: remote.to_owned(),
            pass: REMOTE_ICE_PASSWORD.to_owned(),
        });
    }

    pub fn set_ice_state(&mut self, state: IceConnectionState) -> Option<IceState> {
        let state = IceState::from_str0m(state);
        (state != self.ice_state).then(|| {
            self.ice_state = state;
            state
        })
    }

    /// A fresh mid for a consumer's media line.
    /// Closes data channel `cid` on SCTP stream `stream_id` (a data producer's or consumer's).
    ///
    /// The stream id goes back to the transport's allocator only once str0m has let go of it:
    /// at once when the remote closed the channel (str0m reported it closed), otherwise when
    /// str0m reports the close. str0m keeps a channel created before the association is up as a
    /// pending allocation that closing cannot cancel (it opens when SCTP comes up, and is closed
    /// again then); creating another channel on its stream id meanwhile would trip str0m's
    /// "stream id exists already" assertion.
    pub fn close_data_channel(&mut self, cid: ChannelId, stream_id: u16, remote: bool) {
        self.data_by_channel.remove(&cid);
        if remote {
            if let Some(streams) = self.sctp_streams.as_mut() {
                streams.release(stream_id);
            }
        } else {
            self.closing_channels.insert(cid, stream_id);
            self.rtc.direct_api().close_data_channel(cid);
        }
    }

    /// str0m opened channel `cid`: one closed before SCTP came up is closed again now that it
    /// has a stream.
    pub fn on_channel_open(&mut self, cid: ChannelId) {
        if self.closing_channels.contains_key(&cid) {
            self.rtc.direct_api().close_data_channel(cid);
        }
    }

    /// str0m closed channel `cid`: `true` if sluice had closed it, whose stream id is free now.
    pub fn on_channel_closed(&mut self, cid: ChannelId) -> bool {
        let Some(stream_id) = self.closing_channels.remove(&cid) else {
            return false;
        };
        if let Some(streams) = self.sctp_streams.as_mut() {
            streams.release(stream_id);
        }
        true
    }

    pub fn allocate_mid(&mut self) -> String {
        loop {
            let mid = self.next_mid.to_string();
            self.next_mid += 1;
            if !self.medias.iter().any(|m| m.mid == mid) {
                return mid;
            }
        }
    }

    /// Describes all media lines to str0m as the client's offer, so str0m reads every producer in
    /// the client's numbering. Deferred until DTLS has started (no media can arrive before).
    pub fn apply_offer(&mut self) -> Result<(), MediaError> {
        if !self.dtls_started {
            self.offer_pending = true;
            return Ok(());
        }
        self.offer_pending = false;
        if !self
            .medias
            .iter()
            .any(|m| matches!(m.owner, MediaOwner::Producer(_)))
        {
            return Ok(());
        }
        let ufrag = self
            .remote_ufrag
            .clone()
            .unwrap_or_else(|| "pending".into());
        let fingerprint = self.remote_fingerprint.clone().unwrap_or_default();
        let offered: Vec<OfferedMedia> = self
            .medias
            .iter()
            .map(|m| OfferedMedia {
                mid: m.mid.clone(),
                kind: m.kind,
                rtp_parameters: m.rtp_parameters.clone(),
                active: m.active,
                receiving: matches!(m.owner, MediaOwner::Consumer(_)),
            })
            .collect();
        let sdp = numbering::producer_offer(
            &OfferSession {
                ice_ufrag: &ufrag,
                ice_pwd: REMOTE_ICE_PASSWORD,
                fingerprint: &fingerprint,
                setup: self.remote_setup,
            },
            &offered,
        );
        if self.remote_ufrag.is_none() {
            // The offer installs these remote credentials; keep ours in step.
            self.rtc.direct_api().set_remote_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass: REMOTE_ICE_PASSWORD.to_owned(),
            });
        }
        let offer = SdpOffer::from_sdp_string(&sdp)
            .map_err(|e| MediaError::Numbering(format!("bad media description: {e}")))?;
        self.rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| MediaError::Numbering(e.to_string()))?;
        Ok(())
    }

    /// Makes a consumer's parameters use this transport's numbering (the router's, unless the
    /// client's producers remapped it) and declares its media line and send stream, which
    /// keeps what it sent for NACKs over `retransmission` (video; audio is not resent).
    pub fn declare_consumer_media(
        &mut self,
        mid: &str,
        kind: MediaKind,
        params: &mut RtpParameters,
        retransmission: Retransmission,
        egress: Egress,
    ) -> Result<DeclaredConsumer, MediaError> {
        let mid_id = Mid::from(mid);
        let str0m_kind = match kind {
            MediaKind::Audio => str0m::media::MediaKind::Audio,
            MediaKind::Video => str0m::media::MediaKind::Video,
        };
        let mut api = self.rtc.direct_api();
        api.declare_media(mid_id, str0m_kind);
        let exts = self
            .rtc
            .media(mid_id)
            .map(|m| m.remote_extmap().clone())
            .unwrap_or_else(str0m::rtp::ExtensionMap::empty);
        params.header_extensions.retain_mut(|h| {
            match numbering::extension_from_uri(&h.uri).and_then(|e| exts.id_of(e)) {
                Some(id) => {
                    h.id = id;
                    true
                }
                None => false,
            }
        });
        let table = self.rtc.codec_config().params().to_vec();
        let mut renumbered = Vec::with_capacity(params.codecs.len());
        for codec in &params.codecs {
            if codec.mime_type.to_ascii_lowercase().ends_with("/rtx") {
                continue;
            }
            let Some(c) = numbering::codec_from_mime(&codec.mime_type) else {
                continue;
            };
            let found = table
                .iter()
                .find(|p| *p.pt() == codec.payload_type && p.spec().codec == c)
                .or_else(|| table.iter().find(|p| p.spec().codec == c));
            let Some(p) = found else { continue };
            renumbered.push((codec.payload_type, *p.pt(), p.resend().map(|r| *r)));
        }
        if renumbered.is_empty() {
            return Err(MediaError::CannotConsume(
                "no codec of the consumer can be sent on this transport".into(),
            ));
        }
        let mut codecs = Vec::new();
        for codec in &params.codecs {
            let is_rtx = codec.mime_type.to_ascii_lowercase().ends_with("/rtx");
            if is_rtx {
                let apt = codec
                    .parameters
                    .get("apt")
                    .and_then(sluice_ortc::ParameterValue::as_i64);
                if let Some((_, new_pt, Some(rtx))) = renumbered
                    .iter()
                    .find(|(old, _, _)| Some(i64::from(*old)) == apt)
                {
                    let mut c = codec.clone();
                    c.payload_type = *rtx;
                    c.parameters.insert(
                        "apt".into(),
                        sluice_ortc::ParameterValue::Int(i64::from(*new_pt)),
                    );
                    codecs.push(c);
                }
            } else if let Some((_, new_pt, _)) = renumbered
                .iter()
                .find(|(old, _, _)| *old == codec.payload_type)
            {
                let mut c = codec.clone();
                c.payload_type = *new_pt;
                codecs.push(c);
            }
        }
        params.codecs = codecs;
        let has_rtx = params
            .codecs
            .iter()
            .any(|c| c.mime_type.to_ascii_lowercase().ends_with("/rtx"));
        let encoding = params
            .encodings
            .first_mut()
            .ok_or_else(|| MediaError::CannotConsume("no encoding".into()))?;
        let ssrc = encoding
            .ssrc
            .ok_or_else(|| MediaError::CannotConsume("no SSRC".into()))?;
        if !has_rtx {
            encoding.rtx = None;
        }
        let rtx = encoding.rtx.map(|r| r.ssrc);
        let declared = DeclaredConsumer {
            ssrc,
            rtx,
            payload_types: renumbered
                .iter()
                .map(|(router_pt, sent_pt, _)| (*router_pt, Pt::from(*sent_pt)))
                .collect(),
            rtx_payload_types: match rtx {
                Some(_) => renumbered
                    .iter()
                    .filter_map(|(_, sent_pt, rtx_pt)| rtx_pt.map(|r| (*sent_pt, r)))
                    .collect(),
                None => Vec::new(),
            },
        };
        if egress == Egress::Own {
            // The media line is declared (its numbering is what the client gets); no send
            // stream: the consumer's packets never enter str0m.
            return Ok(declared);
        }
        let mut api = self.rtc.direct_api();
        // Forwarded media leaves as it arrives, as in mediasoup: the publisher's own pacer has
        // already spread it out. (str0m leaves a stream unpaced until told otherwise; this
        // says so rather than rely on it.) Probes and padding stay paced.
        let stream = api.declare_stream_tx(ssrc.into(), rtx.map(Into::into), mid_id, None);
        stream.set_unpaced(true);
        if kind == MediaKind::Video {
            // str0m's default drop ratio for resends (0.15) stays.
            stream.set_rtx_cache(
                retransmission.packets,
                retransmission.window,
                Some(RTX_RATIO_CAP),
            );
        }
        Ok(declared)
    }

    /// The address of ours a datagram from `remote` arrives at.
    pub fn local_addr_for(&self, remote: &Remote) -> SocketAddr {
        match remote.protocol {
            Protocol::Udp => self.local_addr,
            Protocol::Tcp => self.tcp_local_addr.unwrap_or(self.local_addr),
        }
    }

    pub fn stats(&self, timestamp: u64) -> TransportStat {
        TransportStat {
            kind: "webrtc-transport",
            transport_id: self.id.clone(),
            timestamp,
            ice_role: "controlled",
            ice_state: self.ice_state,
            dtls_state: self.dtls_state,
            sctp_state: self.sctp_state,
            ice_selected_tuple: self.selected_remote.map(|remote| {
                let local = self.local_addr_for(&remote);
                TransportTuple {
                    local_address: local.ip().to_string(),
                    local_port: local.port(),
                    remote_ip: remote.addr.ip().to_string(),
                    remote_port: remote.addr.port(),
                    protocol: remote.protocol,
                }
            }),
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            packets_received: self.packets_received,
            packets_sent: self.packets_sent,
            available_outgoing_bitrate: self.available_bitrate,
        }
    }
}

/// `sha-256 AB:CD:…` → `{algorithm: "sha-256", value: "AB:CD:…"}`.
fn fingerprint_to_ortc(f: &Fingerprint) -> DtlsFingerprint {
    let value = f
        .bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    DtlsFingerprint {
        algorithm: f.hash_func.clone(),
        value,
    }
}

impl Identified for TransportState {
    fn id(&self) -> &str {
        &self.id
    }
}
