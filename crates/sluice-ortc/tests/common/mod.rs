//! Fixtures and builders shared by the integration tests.
#![allow(dead_code)]

use sluice_ortc::*;

pub const CHROMIUM_VIDEO: &str = include_str!("../fixtures/chromium_video_simulcast.json");
pub const CHROMIUM_AUDIO: &str = include_str!("../fixtures/chromium_audio.json");
pub const ROUTER_CAPS: &str = include_str!("../fixtures/mediasoup_router_caps.json");
pub const DEVICE_CAPS: &str = include_str!("../fixtures/mediasoup_client_device_caps.json");

pub fn chromium_video() -> RtpParameters {
    serde_json::from_str(CHROMIUM_VIDEO).expect("fixture parses")
}

pub fn chromium_audio() -> RtpParameters {
    serde_json::from_str(CHROMIUM_AUDIO).expect("fixture parses")
}

pub fn device_caps() -> RtpCapabilities {
    serde_json::from_str(DEVICE_CAPS).expect("fixture parses")
}

pub fn params(pairs: &[(&str, ParameterValue)]) -> CodecParameters {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

pub fn cap(
    kind: MediaKind,
    mime: &str,
    clock_rate: u32,
    channels: Option<u8>,
) -> RtpCodecCapability {
    RtpCodecCapability {
        kind,
        mime_type: mime.to_owned(),
        preferred_payload_type: None,
        clock_rate,
        channels,
        parameters: CodecParameters::new(),
        rtcp_feedback: vec![],
    }
}

pub fn opus_cap() -> RtpCodecCapability {
    cap(MediaKind::Audio, "audio/opus", 48000, Some(2))
}

pub fn vp8_cap() -> RtpCodecCapability {
    cap(MediaKind::Video, "video/VP8", 90000, None)
}

pub fn h264_cap(packetization_mode: i64, profile_level_id: &str) -> RtpCodecCapability {
    let mut c = cap(MediaKind::Video, "video/H264", 90000, None);
    c.parameters = params(&[
        (
            "packetization-mode",
            ParameterValue::Int(packetization_mode),
        ),
        ("profile-level-id", profile_level_id.into()),
        ("level-asymmetry-allowed", ParameterValue::Int(1)),
    ]);
    c
}

/// The configuration the router fixture was generated from.
pub fn router_media_codecs() -> Vec<RtpCodecCapability> {
    let mut vp8 = vp8_cap();
    vp8.parameters = params(&[("x-google-start-bitrate", ParameterValue::Int(1000))]);
    vec![opus_cap(), vp8, h264_cap(1, "42e01f")]
}

pub fn router_caps() -> RtpCapabilities {
    generate_router_rtp_capabilities(&router_media_codecs()).expect("valid config")
}

pub fn codec(mime: &str, pt: u8, clock_rate: u32, channels: Option<u8>) -> RtpCodecParameters {
    RtpCodecParameters {
        mime_type: mime.to_owned(),
        payload_type: pt,
        clock_rate,
        channels,
        parameters: CodecParameters::new(),
        rtcp_feedback: vec![],
    }
}

pub fn rtx(pt: u8, apt: u8) -> RtpCodecParameters {
    let mut c = codec("video/rtx", pt, 90000, None);
    c.parameters = params(&[("apt", ParameterValue::Int(i64::from(apt)))]);
    c
}

pub fn ssrc_encoding(ssrc: u32) -> RtpEncodingParameters {
    RtpEncodingParameters {
        ssrc: Some(ssrc),
        ..Default::default()
    }
}

pub fn rid_encoding(rid: &str, mode: Option<&str>) -> RtpEncodingParameters {
    RtpEncodingParameters {
        rid: Some(rid.to_owned()),
        scalability_mode: mode.map(str::to_owned),
        ..Default::default()
    }
}

pub fn rtp_params(
    codecs: Vec<RtpCodecParameters>,
    encodings: Vec<RtpEncodingParameters>,
) -> RtpParameters {
    RtpParameters {
        codecs,
        encodings,
        ..Default::default()
    }
}

/// A counter as SSRC generator: 1000, 2000, 3000…
pub fn counter() -> impl FnMut() -> u32 {
    let mut n = 0;
    move || {
        n += 1000;
        n
    }
}

/// Producer mapping + consumable parameters in one go.
pub fn consumable_of(
    kind: MediaKind,
    producer: &RtpParameters,
    caps: &RtpCapabilities,
) -> RtpParameters {
    let mapping =
        get_producer_rtp_parameters_mapping(producer, caps, &mut counter()).expect("maps");
    get_consumable_rtp_parameters(kind, producer, caps, &mapping)
}

pub fn fb_list(c: &RtpCodecParameters) -> Vec<String> {
    c.rtcp_feedback
        .iter()
        .map(|f| {
            format!("{} {}", f.r#type, f.parameter_str())
                .trim()
                .to_owned()
        })
        .collect()
}
