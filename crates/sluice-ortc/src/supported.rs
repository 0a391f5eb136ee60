//! What the SFU can route: the codec and header-extension table a router's capabilities are cut
//! from (mediasoup's `supportedRtpCapabilities`).
//!
//! Codecs carry no payload types except the static ones (PCMU 0, PCMA 8, G722 9); the router
//! assigns the rest. Header extensions carry mediasoup's preferred ids, and their `direction` is
//! from the router's point of view: `recvonly` extensions (rid, repaired-rid, audio transport-cc)
//! are read from producers but never written towards consumers.

use crate::types::{
    CodecParameters, MediaKind, ParameterValue, RtcpFeedback, RtpCapabilities, RtpCodecCapability,
    RtpHeaderExtension, RtpHeaderExtensionDirection,
};

/// `urn:ietf:params:rtp-hdrext:sdes:mid`
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id` (rid)
pub const RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id` (rid of the RTX stream)
pub const REPAIRED_RTP_STREAM_ID_URI: &str =
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
/// Absolute send time, the basis of REMB bandwidth estimation.
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
/// Transport-wide sequence numbers, the basis of transport-cc bandwidth estimation.
pub const TRANSPORT_WIDE_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// RFC 6464 audio level.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// 3GPP coordination of video orientation.
pub const VIDEO_ORIENTATION_URI: &str = "urn:3gpp:video-orientation";
/// RFC 5450 transmission time offset.
pub const TOFFSET_URI: &str = "urn:ietf:params:rtp-hdrext:toffset";
/// Absolute capture time.
pub const ABS_CAPTURE_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";
/// Playout delay.
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

fn fb(r#type: &str, parameter: &str) -> RtcpFeedback {
    RtcpFeedback::new(r#type, parameter)
}

fn video_feedback() -> Vec<RtcpFeedback> {
    vec![
        fb("nack", ""),
        fb("nack", "pli"),
        fb("ccm", "fir"),
        fb("goog-remb", ""),
        fb("transport-cc", ""),
    ]
}

fn audio(
    mime_type: &str,
    preferred_payload_type: Option<u8>,
    clock_rate: u32,
    channels: u8,
    parameters: CodecParameters,
) -> RtpCodecCapability {
    RtpCodecCapability {
        kind: MediaKind::Audio,
        mime_type: mime_type.to_owned(),
        preferred_payload_type,
        clock_rate,
        channels: Some(channels),
        parameters,
        rtcp_feedback: vec![fb("transport-cc", "")],
    }
}

fn video(mime_type: &str, parameters: CodecParameters) -> RtpCodecCapability {
    RtpCodecCapability {
        kind: MediaKind::Video,
        mime_type: mime_type.to_owned(),
        preferred_payload_type: None,
        clock_rate: 90000,
        channels: None,
        parameters,
        rtcp_feedback: video_feedback(),
    }
}

fn multiopus(channel_mapping: &str, num_streams: i64, coupled_streams: i64) -> CodecParameters {
    CodecParameters::from([
        (
            "channel_mapping".to_owned(),
            ParameterValue::from(channel_mapping),
        ),
        ("num_streams".to_owned(), ParameterValue::Int(num_streams)),
        (
            "coupled_streams".to_owned(),
            ParameterValue::Int(coupled_streams),
        ),
    ])
}

fn level_asymmetry_allowed() -> CodecParameters {
    CodecParameters::from([("level-asymmetry-allowed".to_owned(), ParameterValue::Int(1))])
}

fn ext(
    kind: MediaKind,
    uri: &str,
    preferred_id: u8,
    direction: RtpHeaderExtensionDirection,
) -> RtpHeaderExtension {
    RtpHeaderExtension {
        kind: Some(kind),
        uri: uri.to_owned(),
        preferred_id,
        preferred_encrypt: Some(false),
        direction: Some(direction),
    }
}

/// The supported codecs and header extensions. Not what clients load: they load the router's
/// capabilities, see [`crate::generate_router_rtp_capabilities`].
pub fn supported_rtp_capabilities() -> RtpCapabilities {
    use MediaKind::{Audio, Video};
    use RtpHeaderExtensionDirection::{Recvonly, Sendrecv};

    RtpCapabilities {
        codecs: vec![
            audio("audio/opus", None, 48000, 2, CodecParameters::new()),
            // Quad, 5.1 and 7.1 as Chromium's multiopus.
            audio(
                "audio/multiopus",
                None,
                48000,
                4,
                multiopus("0,1,2,3", 2, 2),
            ),
            audio(
                "audio/multiopus",
                None,
                48000,
                6,
                multiopus("0,4,1,2,3,5", 4, 2),
            ),
            audio(
                "audio/multiopus",
                None,
                48000,
                8,
                multiopus("0,6,1,2,3,4,5,7", 5, 3),
            ),
            audio("audio/PCMU", Some(0), 8000, 1, CodecParameters::new()),
            audio("audio/PCMA", Some(8), 8000, 1, CodecParameters::new()),
            audio("audio/G722", Some(9), 8000, 1, CodecParameters::new()),
            video("video/VP8", CodecParameters::new()),
            video("video/VP9", CodecParameters::new()),
            video("video/H264", level_asymmetry_allowed()),
            video("video/H265", level_asymmetry_allowed()),
            video("video/AV1", CodecParameters::new()),
        ],
        header_extensions: vec![
            ext(Audio, MID_URI, 1, Sendrecv),
            ext(Video, MID_URI, 1, Sendrecv),
            ext(Video, RTP_STREAM_ID_URI, 2, Recvonly),
            ext(Video, REPAIRED_RTP_STREAM_ID_URI, 3, Recvonly),
            ext(Audio, ABS_SEND_TIME_URI, 4, Sendrecv),
            ext(Video, ABS_SEND_TIME_URI, 4, Sendrecv),
            // For audio transport-wide-cc is only used when receiving.
            ext(Audio, TRANSPORT_WIDE_CC_URI, 5, Recvonly),
            ext(Video, TRANSPORT_WIDE_CC_URI, 5, Sendrecv),
            ext(Audio, AUDIO_LEVEL_URI, 10, Sendrecv),
            ext(Video, VIDEO_ORIENTATION_URI, 11, Sendrecv),
            ext(Video, TOFFSET_URI, 12, Sendrecv),
            ext(Audio, ABS_CAPTURE_TIME_URI, 13, Sendrecv),
            ext(Video, ABS_CAPTURE_TIME_URI, 13, Sendrecv),
            ext(Audio, PLAYOUT_DELAY_URI, 14, Sendrecv),
            ext(Video, PLAYOUT_DELAY_URI, 14, Sendrecv),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::validate_rtp_capabilities;

    #[test]
    fn supported_table_is_itself_valid() {
        validate_rtp_capabilities(&supported_rtp_capabilities()).expect("valid table");
    }

    #[test]
    fn every_video_codec_offers_nack_pli_fir_remb_and_transport_cc() {
        for c in supported_rtp_capabilities().codecs {
            let kinds: Vec<(String, String)> = c
                .rtcp_feedback
                .iter()
                .map(|f| (f.r#type.clone(), f.parameter_str().to_owned()))
                .collect();
            match c.kind {
                MediaKind::Video => assert_eq!(kinds.len(), 5, "{}", c.mime_type),
                MediaKind::Audio => {
                    assert_eq!(kinds, vec![("transport-cc".to_owned(), String::new())])
                }
            }
        }
    }

    #[test]
    fn rid_and_repaired_rid_are_receive_only() {
        let caps = supported_rtp_capabilities();
        for uri in [RTP_STREAM_ID_URI, REPAIRED_RTP_STREAM_ID_URI] {
            let e = caps
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .expect("present");
            assert_eq!(e.direction, Some(RtpHeaderExtensionDirection::Recvonly));
            assert_eq!(e.kind, Some(MediaKind::Video));
        }
    }

    #[test]
    fn extension_ids_are_consistent_across_kinds() {
        let caps = supported_rtp_capabilities();
        for a in &caps.header_extensions {
            for b in &caps.header_extensions {
                assert_eq!(a.uri == b.uri, a.preferred_id == b.preferred_id);
            }
        }
    }
}
