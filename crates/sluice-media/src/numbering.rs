//! Payload-type and header-extension numbering between sluice, str0m and clients.
//!
//! str0m keeps one payload-type table (`CodecConfig`) and one header-extension table
//! (`ExtensionMap`) per `Rtc`, fixed when the `Rtc` is built; its Direct API has no setter. Two
//! facts make that work for an SFU:
//!
//! - **What we send** (consumers) uses numbering we choose. Every transport's `Rtc` is built with
//!   its router's numbering ([`rtc_config_for_router`]), which is what consumer parameters carry.
//! - **What a client sends** (producers) uses the client's own numbering, learnt only from the
//!   `produce` request. str0m's SDP API remaps both tables to a remote description, so each
//!   `produce` is described to str0m as the remote offer the client would have made
//!   ([`producer_offer`]) and accepted with `sdp_api().accept_offer`. DTLS and SCTP were already
//!   started through the Direct API, so the offer changes only the media description.
//!
//! The result is checked ([`check_producer_numbering`]): if a client reuses on one transport a
//! payload type that str0m already locked to another codec, `produce` fails with a clear error
//! rather than forwarding garbage.

use std::fmt::Write as _;

use sluice_ortc::{
    MediaKind, ParameterValue, RtpCapabilities, RtpCodecParameters, RtpHeaderExtensionParameters,
    RtpParameters,
};
use str0m::RtcConfig;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Pt};
use str0m::rtp::{Extension, ExtensionMap};

/// The highest header-extension id str0m stores (it drops larger ids).
pub const MAX_EXTENSION_ID: u8 = 16;

/// The str0m extension for a mediasoup header-extension URI, if str0m knows it.
pub fn extension_from_uri(uri: &str) -> Option<Extension> {
    Some(match uri {
        "urn:ietf:params:rtp-hdrext:sdes:mid" => Extension::RtpMid,
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" => Extension::RtpStreamId,
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id" => Extension::RepairedRtpStreamId,
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time" => Extension::AbsoluteSendTime,
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01" => {
            Extension::TransportSequenceNumber
        }
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level" => Extension::AudioLevel,
        "urn:3gpp:video-orientation" => Extension::VideoOrientation,
        "urn:ietf:params:rtp-hdrext:toffset" => Extension::TransmissionTimeOffset,
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time" => {
            Extension::AbsoluteCaptureTime
        }
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay" => Extension::PlayoutDelay,
        _ => return None,
    })
}

/// The str0m codec for a mime type, if str0m can carry it.
pub fn codec_from_mime(mime_type: &str) -> Option<Codec> {
    let (_, name) = mime_type.split_once('/')?;
    Some(match name.to_ascii_lowercase().as_str() {
        "opus" => Codec::Opus,
        "pcmu" => Codec::PCMU,
        "pcma" => Codec::PCMA,
        "g722" => Codec::G722,
        "vp8" => Codec::Vp8,
        "vp9" => Codec::Vp9,
        "h264" => Codec::H264,
        "h265" => Codec::H265,
        "av1" => Codec::Av1,
        _ => return None,
    })
}

fn is_rtx(mime_type: &str) -> bool {
    mime_type
        .split_once('/')
        .is_some_and(|(_, name)| name.eq_ignore_ascii_case("rtx"))
}

fn param_u32(value: &ParameterValue) -> Option<u32> {
    value.as_i64().and_then(|v| u32::try_from(v).ok())
}

/// str0m's format parameters for a codec's mediasoup `parameters`.
fn format_params(parameters: &sluice_ortc::CodecParameters) -> FormatParams {
    let mut f = FormatParams::default();
    for (key, value) in parameters {
        match key.as_str() {
            "packetization-mode" => f.packetization_mode = param_u32(value).map(|v| v as u8),
            "profile-level-id" => {
                f.profile_level_id = match value {
                    ParameterValue::String(s) => u32::from_str_radix(s, 16).ok(),
                    other => param_u32(other),
                }
            }
            "level-asymmetry-allowed" => {
                f.level_asymmetry_allowed = param_u32(value).map(|v| v != 0)
            }
            "profile-id" => f.profile_id = param_u32(value),
            "useinbandfec" => f.use_inband_fec = param_u32(value).map(|v| v != 0),
            "usedtx" => f.use_dtx = param_u32(value).map(|v| v != 0),
            "stereo" => f.stereo = param_u32(value).map(|v| v != 0),
            "minptime" => f.min_p_time = param_u32(value).map(|v| v.min(255) as u8),
            _ => {}
        }
    }
    f
}

/// An `Rtc` builder whose payload-type and header-extension tables are the router's numbering.
pub fn rtc_config_for_router(caps: &RtpCapabilities) -> RtcConfig {
    let mut exts = ExtensionMap::empty();
    for ext in &caps.header_extensions {
        if ext.preferred_id == 0 || ext.preferred_id > MAX_EXTENSION_ID {
            continue;
        }
        if let Some(e) = extension_from_uri(&ext.uri) {
            // One id may be listed once per kind with the same URI; setting it twice is harmless.
            exts.set(ext.preferred_id, e);
        }
    }
    let mut config = RtcConfig::new().clear_codecs().set_extension_map(exts);
    let codec_config = config.codec_config();
    for codec in &caps.codecs {
        if is_rtx(&codec.mime_type) {
            continue;
        }
        let (Some(pt), Some(c)) = (
            codec.preferred_payload_type,
            codec_from_mime(&codec.mime_type),
        ) else {
            continue;
        };
        let rtx = caps.codecs.iter().find_map(|r| {
            (is_rtx(&r.mime_type)
                && r.parameters.get("apt").and_then(ParameterValue::as_i64) == Some(i64::from(pt)))
            .then_some(r.preferred_payload_type)
            .flatten()
        });
        let Some(clock) = std::num::NonZeroU32::new(codec.clock_rate) else {
            continue;
        };
        codec_config.add_config(
            Pt::from(pt),
            rtx.map(Pt::from),
            c,
            Frequency::from_nonzero(clock),
            codec.channels,
            format_params(&codec.parameters),
        );
    }
    config
}

/// One producer as the remote offer describes it.
#[derive(Debug, Clone)]
pub struct OfferedMedia {
    pub mid: String,
    pub kind: MediaKind,
    pub rtp_parameters: RtpParameters,
    /// A closed producer keeps its m-line (str0m's m-line order is fixed) as `inactive`.
    pub active: bool,
    /// A consumer's line on the same transport: the client receives it.
    pub receiving: bool,
}

/// What the offer says about the session, besides its media.
#[derive(Debug, Clone)]
pub struct OfferSession<'a> {
    pub ice_ufrag: &'a str,
    pub ice_pwd: &'a str,
    /// `sha-256 AB:CD:...`
    pub fingerprint: &'a str,
    /// The client's DTLS role as an SDP `a=setup` value (`active` when the client is the DTLS client).
    pub setup: &'a str,
}

fn sdp_token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() && *c != ';')
        .collect()
}

fn fmtp_value(v: &ParameterValue) -> String {
    match v {
        ParameterValue::Bool(b) => u8::from(*b).to_string(),
        ParameterValue::Int(i) => i.to_string(),
        ParameterValue::Float(f) => f.to_string(),
        ParameterValue::String(s) => sdp_token(s),
    }
}

fn write_codec(sdp: &mut String, codec: &RtpCodecParameters) {
    let name = codec
        .mime_type
        .split_once('/')
        .map_or(codec.mime_type.as_str(), |(_, n)| n);
    let pt = codec.payload_type;
    match codec.channels {
        Some(ch) if ch > 1 => {
            let _ = write!(sdp, "a=rtpmap:{pt} {name}/{}/{ch}\r\n", codec.clock_rate);
        }
        _ => {
            let _ = write!(sdp, "a=rtpmap:{pt} {name}/{}\r\n", codec.clock_rate);
        }
    }
    if !codec.parameters.is_empty() {
        let params: Vec<String> = codec
            .parameters
            .iter()
            .map(|(k, v)| format!("{}={}", sdp_token(k), fmtp_value(v)))
            .collect();
        let _ = write!(sdp, "a=fmtp:{pt} {}\r\n", params.join(";"));
    }
    for fb in &codec.rtcp_feedback {
        match fb.parameter.as_deref() {
            Some(p) if !p.is_empty() => {
                let _ = write!(
                    sdp,
                    "a=rtcp-fb:{pt} {} {}\r\n",
                    sdp_token(&fb.r#type),
                    sdp_token(p)
                );
            }
            _ => {
                let _ = write!(sdp, "a=rtcp-fb:{pt} {}\r\n", sdp_token(&fb.r#type));
            }
        }
    }
}

fn write_extensions(sdp: &mut String, exts: &[RtpHeaderExtensionParameters]) {
    for ext in exts {
        if ext.id == 0 || ext.id > MAX_EXTENSION_ID || extension_from_uri(&ext.uri).is_none() {
            continue;
        }
        let _ = write!(sdp, "a=extmap:{} {}\r\n", ext.id, ext.uri);
    }
}

/// The SDP offer a client producing `media` would have made, for `accept_offer`.
pub fn producer_offer(session: &OfferSession<'_>, media: &[OfferedMedia]) -> String {
    let mut sdp = String::with_capacity(1024 + 1024 * media.len());
    sdp.push_str("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    let mids: Vec<&str> = media.iter().map(|m| m.mid.as_str()).collect();
    let _ = write!(sdp, "a=group:BUNDLE {}\r\n", mids.join(" "));
    let _ = write!(
        sdp,
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:{}\r\na=setup:{}\r\n",
        session.ice_ufrag, session.ice_pwd, session.fingerprint, session.setup
    );
    for m in media {
        let pts: Vec<String> = m
            .rtp_parameters
            .codecs
            .iter()
            .map(|c| c.payload_type.to_string())
            .collect();
        let _ = write!(
            sdp,
            "m={} 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=mid:{}\r\n{}\r\na=rtcp-mux\r\n",
            m.kind,
            pts.join(" "),
            m.mid,
            match (m.active, m.receiving) {
                (false, _) => "a=inactive",
                (true, false) => "a=sendonly",
                (true, true) => "a=recvonly",
            }
        );
        for codec in &m.rtp_parameters.codecs {
            write_codec(&mut sdp, codec);
        }
        write_extensions(&mut sdp, &m.rtp_parameters.header_extensions);
        let cname = m
            .rtp_parameters
            .rtcp
            .cname
            .as_deref()
            .map(sdp_token)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "sluice".to_owned());
        if m.receiving {
            // What we send is declared through the Direct API; only the numbering matters here.
            continue;
        }
        let encodings = &m.rtp_parameters.encodings;
        let rids: Vec<&str> = encodings.iter().filter_map(|e| e.rid.as_deref()).collect();
        if !rids.is_empty() && m.active {
            for rid in &rids {
                let _ = write!(sdp, "a=rid:{rid} send\r\n");
            }
            let _ = write!(sdp, "a=simulcast:send {}\r\n", rids.join(";"));
        }
        for e in encodings {
            let Some(ssrc) = e.ssrc else { continue };
            if let Some(rtx) = e.rtx {
                let _ = write!(sdp, "a=ssrc-group:FID {ssrc} {}\r\n", rtx.ssrc);
            }
            let _ = write!(sdp, "a=ssrc:{ssrc} cname:{cname}\r\n");
            if let Some(rtx) = e.rtx {
                let _ = write!(sdp, "a=ssrc:{} cname:{cname}\r\n", rtx.ssrc);
            }
        }
    }
    sdp
}

/// Why str0m's tables could not take a producer's numbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberingConflict(pub String);

/// Checks that after the remap, str0m reads the producer's payload types as the producer means them.
pub fn check_producer_numbering(
    codec_config: &str0m::format::CodecConfig,
    rtp_parameters: &RtpParameters,
) -> Result<(), NumberingConflict> {
    for codec in &rtp_parameters.codecs {
        if is_rtx(&codec.mime_type) {
            continue;
        }
        let Some(want) = codec_from_mime(&codec.mime_type) else {
            return Err(NumberingConflict(format!(
                "codec {} cannot be received",
                codec.mime_type
            )));
        };
        let rtx = rtp_parameters.codecs.iter().find_map(|r| {
            (is_rtx(&r.mime_type)
                && r.parameters.get("apt").and_then(ParameterValue::as_i64)
                    == Some(i64::from(codec.payload_type)))
            .then_some(r.payload_type)
        });
        let found = codec_config
            .params()
            .iter()
            .find(|p| *p.pt() == codec.payload_type);
        match found {
            Some(p) if p.spec().codec == want => {
                if let Some(rtx) = rtx
                    && p.resend().map(|r| *r) != Some(rtx)
                {
                    return Err(NumberingConflict(format!(
                        "payload type {rtx} (RTX of {}) conflicts with this transport's earlier numbering",
                        codec.payload_type
                    )));
                }
            }
            _ => {
                return Err(NumberingConflict(format!(
                    "payload type {} ({}) conflicts with this transport's earlier numbering",
                    codec.payload_type, codec.mime_type
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_ortc::{RtcpFeedback, RtpEncodingParameters, RtpEncodingRtx};

    fn vp8_params(pt: u8, rtx: u8) -> RtpParameters {
        RtpParameters {
            mid: Some("1".into()),
            codecs: vec![
                RtpCodecParameters {
                    mime_type: "video/VP8".into(),
                    payload_type: pt,
                    clock_rate: 90000,
                    channels: None,
                    parameters: Default::default(),
                    rtcp_feedback: vec![RtcpFeedback::new("nack", "pli")],
                },
                RtpCodecParameters {
                    mime_type: "video/rtx".into(),
                    payload_type: rtx,
                    clock_rate: 90000,
                    channels: None,
                    parameters: [("apt".to_owned(), ParameterValue::Int(i64::from(pt)))].into(),
                    rtcp_feedback: vec![],
                },
            ],
            header_extensions: vec![RtpHeaderExtensionParameters {
                uri: "urn:ietf:params:rtp-hdrext:sdes:mid".into(),
                id: 9,
                encrypt: None,
                parameters: Default::default(),
            }],
            encodings: vec![RtpEncodingParameters {
                ssrc: Some(1234),
                rtx: Some(RtpEncodingRtx { ssrc: 1235 }),
                ..Default::default()
            }],
            rtcp: Default::default(),
            msid: None,
        }
    }

    #[test]
    fn offer_describes_codecs_extensions_and_ssrcs_of_each_producer() {
        let session = OfferSession {
            ice_ufrag: "abcd",
            ice_pwd: "pwdpwdpwdpwdpwdpwdpwdpwd",
            fingerprint: "sha-256 AA:BB",
            setup: "active",
        };
        let sdp = producer_offer(
            &session,
            &[OfferedMedia {
                mid: "1".into(),
                kind: MediaKind::Video,
                rtp_parameters: vp8_params(97, 98),
                active: true,
                receiving: false,
            }],
        );
        for line in [
            "a=group:BUNDLE 1",
            "m=video 9 UDP/TLS/RTP/SAVPF 97 98",
            "a=rtpmap:97 VP8/90000",
            "a=rtcp-fb:97 nack pli",
            "a=rtpmap:98 rtx/90000",
            "a=fmtp:98 apt=97",
            "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=ssrc-group:FID 1234 1235",
            "a=sendonly",
        ] {
            assert!(sdp.contains(line), "missing {line:?} in\n{sdp}");
        }
        assert!(str0m::change::SdpOffer::from_sdp_string(&sdp).is_ok());
    }

    #[test]
    fn rid_encodings_become_simulcast_lines() {
        let mut p = vp8_params(96, 97);
        p.encodings = ["r0", "r1"]
            .iter()
            .map(|r| RtpEncodingParameters {
                rid: Some((*r).into()),
                ..Default::default()
            })
            .collect();
        let session = OfferSession {
            ice_ufrag: "abcd",
            ice_pwd: "pwdpwdpwdpwdpwdpwdpwdpwd",
            fingerprint: "sha-256 AA:BB",
            setup: "active",
        };
        let sdp = producer_offer(
            &session,
            &[OfferedMedia {
                mid: "0".into(),
                kind: MediaKind::Video,
                rtp_parameters: p,
                active: true,
                receiving: false,
            }],
        );
        assert!(sdp.contains("a=rid:r0 send\r\na=rid:r1 send\r\na=simulcast:send r0;r1\r\n"));
    }

    #[test]
    fn router_numbering_becomes_the_rtc_tables() {
        let caps = sluice_ortc::generate_router_rtp_capabilities(&[
            serde_json::from_str(
                r#"{"kind":"audio","mimeType":"audio/opus","clockRate":48000,"channels":2}"#,
            )
            .unwrap(),
            serde_json::from_str(r#"{"kind":"video","mimeType":"video/VP8","clockRate":90000}"#)
                .unwrap(),
        ])
        .unwrap();
        let mut config = rtc_config_for_router(&caps);
        let params = config.codec_config().params().to_vec();
        let opus = caps
            .codecs
            .iter()
            .find(|c| c.mime_type == "audio/opus")
            .unwrap();
        let vp8 = caps
            .codecs
            .iter()
            .find(|c| c.mime_type == "video/VP8")
            .unwrap();
        assert!(
            params
                .iter()
                .any(|p| Some(*p.pt()) == opus.preferred_payload_type
                    && p.spec().codec == Codec::Opus)
        );
        let v = params
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap();
        assert_eq!(Some(*v.pt()), vp8.preferred_payload_type);
        assert!(v.resend().is_some());
        let exts = config.extension_map();
        assert_eq!(exts.id_of(Extension::RtpMid), Some(1));
        assert_eq!(exts.id_of(Extension::TransportSequenceNumber), Some(5));
    }
}
