//! How a client numbers what it sends: payload types and header-extension ids, as a browser or
//! another WebRTC stack would choose them, and the producer parameters that go with them.

use sluice_media::ortc::{
    MediaKind, ParameterValue, RtcpFeedback, RtcpParameters, RtpCapabilities, RtpCodecCapability,
    RtpCodecParameters, RtpEncodingParameters, RtpEncodingRtx, RtpHeaderExtension,
    RtpHeaderExtensionParameters, RtpParameters,
};

pub const URI_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub const URI_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
pub const URI_RRID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
pub const URI_ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
pub const URI_TWCC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
pub const URI_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub const URI_VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";

/// A client's numbering, expressed as capabilities (preferred payload types and ids).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientNumbering {
    caps: RtpCapabilities,
}

fn codec(
    kind: MediaKind,
    mime: &str,
    pt: u8,
    clock: u32,
    channels: Option<u8>,
) -> RtpCodecCapability {
    let video = kind == MediaKind::Video;
    let mut fb = vec![RtcpFeedback {
        r#type: "transport-cc".into(),
        parameter: None,
    }];
    if video {
        fb.push(RtcpFeedback {
            r#type: "nack".into(),
            parameter: None,
        });
        fb.push(RtcpFeedback::new("nack", "pli"));
        fb.push(RtcpFeedback::new("ccm", "fir"));
    }
    RtpCodecCapability {
        kind,
        mime_type: mime.into(),
        preferred_payload_type: Some(pt),
        clock_rate: clock,
        channels,
        parameters: Default::default(),
        rtcp_feedback: fb,
    }
}

fn rtx(pt: u8, apt: u8) -> RtpCodecCapability {
    RtpCodecCapability {
        kind: MediaKind::Video,
        mime_type: "video/rtx".into(),
        preferred_payload_type: Some(pt),
        clock_rate: 90000,
        channels: None,
        parameters: [("apt".to_owned(), ParameterValue::Int(i64::from(apt)))].into(),
        rtcp_feedback: vec![],
    }
}

fn ext(kind: MediaKind, uri: &str, id: u8) -> RtpHeaderExtension {
    RtpHeaderExtension {
        kind: Some(kind),
        uri: uri.into(),
        preferred_id: id,
        preferred_encrypt: None,
        direction: None,
    }
}

impl ClientNumbering {
    /// Chromium's: opus 111, VP8 96 / rtx 97; audio-level 1, abs-send-time 2, transport-cc 3,
    /// mid 4, rid 10, repaired-rid 11, video-orientation 13.
    pub fn chromium() -> Self {
        use MediaKind::{Audio, Video};
        ClientNumbering {
            caps: RtpCapabilities {
                codecs: vec![
                    codec(Audio, "audio/opus", 111, 48000, Some(2)),
                    codec(Video, "video/VP8", 96, 90000, None),
                    rtx(97, 96),
                ],
                header_extensions: vec![
                    ext(Audio, URI_AUDIO_LEVEL, 1),
                    ext(Audio, URI_ABS_SEND_TIME, 2),
                    ext(Video, URI_ABS_SEND_TIME, 2),
                    ext(Audio, URI_TWCC, 3),
                    ext(Video, URI_TWCC, 3),
                    ext(Audio, URI_MID, 4),
                    ext(Video, URI_MID, 4),
                    ext(Video, URI_RID, 10),
                    ext(Video, URI_RRID, 11),
                    ext(Video, URI_VIDEO_ORIENTATION, 13),
                ],
            },
        }
    }

    /// aiortc's: opus 96, VP8 97 / rtx 98; mid 1, audio-level 2, abs-send-time 3 (and
    /// transport-cc 5, rid 6, repaired-rid 7 so the same client can also test those).
    pub fn aiortc() -> Self {
        use MediaKind::{Audio, Video};
        ClientNumbering {
            caps: RtpCapabilities {
                codecs: vec![
                    codec(Audio, "audio/opus", 96, 48000, Some(2)),
                    codec(Video, "video/VP8", 97, 90000, None),
                    rtx(98, 97),
                ],
                header_extensions: vec![
                    ext(Audio, URI_MID, 1),
                    ext(Video, URI_MID, 1),
                    ext(Audio, URI_AUDIO_LEVEL, 2),
                    ext(Audio, URI_ABS_SEND_TIME, 3),
                    ext(Video, URI_ABS_SEND_TIME, 3),
                    ext(Audio, URI_TWCC, 5),
                    ext(Video, URI_TWCC, 5),
                    ext(Video, URI_RID, 6),
                    ext(Video, URI_RRID, 7),
                ],
            },
        }
    }

    /// Receiving in a router's numbering (what a receive transport needs).
    pub fn from_router(caps: &RtpCapabilities) -> Self {
        ClientNumbering { caps: caps.clone() }
    }

    pub fn capabilities(&self) -> &RtpCapabilities {
        &self.caps
    }

    fn codec_for(&self, kind: MediaKind) -> Option<&RtpCodecCapability> {
        self.caps
            .codecs
            .iter()
            .find(|c| c.kind == kind && !c.mime_type.to_ascii_lowercase().ends_with("/rtx"))
    }

    /// The RTX payload type protecting `pt`, if the numbering has one.
    pub fn rtx_for(&self, pt: u8) -> Option<u8> {
        self.caps.codecs.iter().find_map(|c| {
            (c.mime_type.to_ascii_lowercase().ends_with("/rtx")
                && c.parameters.get("apt").and_then(ParameterValue::as_i64) == Some(i64::from(pt)))
            .then_some(c.preferred_payload_type)
            .flatten()
        })
    }

    /// The producer parameters for `kind` with these encodings (SSRC- or rid-based).
    pub fn producer_parameters(
        &self,
        kind: MediaKind,
        mid: &str,
        encodings: Vec<RtpEncodingParameters>,
        cname: &str,
    ) -> Option<RtpParameters> {
        let main = self.codec_for(kind)?;
        let pt = main.preferred_payload_type?;
        let mut codecs = vec![RtpCodecParameters {
            mime_type: main.mime_type.clone(),
            payload_type: pt,
            clock_rate: main.clock_rate,
            channels: main.channels,
            parameters: main.parameters.clone(),
            rtcp_feedback: main.rtcp_feedback.clone(),
        }];
        if kind == MediaKind::Video
            && let Some(rtx) = self.rtx_for(pt)
        {
            codecs.push(RtpCodecParameters {
                mime_type: "video/rtx".into(),
                payload_type: rtx,
                clock_rate: main.clock_rate,
                channels: None,
                parameters: [("apt".to_owned(), ParameterValue::Int(i64::from(pt)))].into(),
                rtcp_feedback: vec![],
            });
        }
        let simulcast = encodings.iter().any(|e| e.rid.is_some());
        let header_extensions = self
            .caps
            .header_extensions
            .iter()
            .filter(|h| h.kind.is_none_or(|k| k == kind))
            .filter(|h| simulcast || (h.uri != URI_RID && h.uri != URI_RRID))
            .map(|h| RtpHeaderExtensionParameters {
                uri: h.uri.clone(),
                id: h.preferred_id,
                encrypt: None,
                parameters: Default::default(),
            })
            .collect();
        Some(RtpParameters {
            mid: Some(mid.to_owned()),
            codecs,
            header_extensions,
            encodings,
            rtcp: RtcpParameters {
                cname: Some(cname.to_owned()),
                reduced_size: Some(true),
                mux: Some(true),
            },
            msid: None,
        })
    }
}

/// SSRC-based encoding with optional RTX.
pub fn ssrc_encoding(ssrc: u32, rtx: Option<u32>) -> RtpEncodingParameters {
    RtpEncodingParameters {
        ssrc: Some(ssrc),
        rtx: rtx.map(|ssrc| RtpEncodingRtx { ssrc }),
        ..Default::default()
    }
}

/// Rid-based simulcast encoding (SSRCs learnt by the server from the rid header extension).
pub fn rid_encoding(rid: &str, scalability_mode: &str) -> RtpEncodingParameters {
    RtpEncodingParameters {
        rid: Some(rid.to_owned()),
        scalability_mode: Some(scalability_mode.to_owned()),
        ..Default::default()
    }
}
