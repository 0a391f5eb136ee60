//! The validation rules, one test per rule, positive and negative.

mod common;

use common::*;
use sluice_ortc::*;

fn field_of(r: Result<(), OrtcError>) -> String {
    r.expect_err("should be rejected")
        .field()
        .expect("names a field")
        .to_owned()
}

fn video_params() -> RtpParameters {
    rtp_params(
        vec![codec("video/VP8", 96, 90000, None), rtx(97, 96)],
        vec![ssrc_encoding(1)],
    )
}

#[test]
fn real_client_fixtures_are_valid() {
    validate_rtp_parameters(&chromium_video()).expect("valid");
    validate_rtp_parameters(&chromium_audio()).expect("valid");
    validate_rtp_capabilities(&device_caps()).expect("valid");
    validate_producer_rtp_parameters(MediaKind::Video, &chromium_video()).expect("valid");
}

#[test]
fn errors_display_the_field_path_and_reason() {
    let mut p = video_params();
    p.codecs[1]
        .parameters
        .insert("apt".to_owned(), "abc".into());
    let err = validate_rtp_parameters(&p).expect_err("bad apt");
    assert_eq!(
        err.to_string(),
        "codecs[1].parameters.apt: must be an integer payload type in 0..=127"
    );
}

#[test]
fn rtx_codec_without_numeric_apt_is_rejected() {
    for bad in [
        ParameterValue::from("abc"),
        ParameterValue::Bool(true),
        ParameterValue::Float(96.5),
        ParameterValue::Int(128),
        ParameterValue::Int(-1),
    ] {
        let mut p = video_params();
        p.codecs[1].parameters.insert("apt".to_owned(), bad.clone());
        assert_eq!(
            field_of(validate_rtp_parameters(&p)),
            "codecs[1].parameters.apt",
            "{bad:?}"
        );
    }
    let mut p = video_params();
    p.codecs[1].parameters.clear();
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "codecs[1].parameters.apt"
    );
}

#[test]
fn rtx_apt_as_numeric_string_is_accepted() {
    let mut p = video_params();
    p.codecs[1].parameters.insert("apt".to_owned(), "96".into());
    validate_rtp_parameters(&p).expect("SDP-derived string apt");
}

#[test]
fn rtx_apt_naming_no_media_codec_is_rejected() {
    let mut p = video_params();
    p.codecs[1] = rtx(97, 95);
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "codecs[1].parameters.apt"
    );
    // Nor may it name another RTX codec.
    let mut p = video_params();
    p.codecs.push(rtx(98, 97));
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "codecs[2].parameters.apt"
    );
}

#[test]
fn duplicate_payload_types_are_rejected() {
    let mut p = video_params();
    p.codecs[1].payload_type = 96;
    p.codecs[1]
        .parameters
        .insert("apt".to_owned(), ParameterValue::Int(96));
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "codecs[1].payloadType"
    );

    let mut caps = device_caps();
    caps.codecs[1].preferred_payload_type = Some(100);
    assert_eq!(
        field_of(validate_rtp_capabilities(&caps)),
        "codecs[1].preferredPayloadType"
    );
}

#[test]
fn payload_type_above_127_is_rejected() {
    let mut p = video_params();
    p.codecs[0].payload_type = 200;
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "codecs[0].payloadType"
    );
    let mut c = vp8_cap();
    c.preferred_payload_type = Some(128);
    assert_eq!(
        field_of(validate_rtp_codec_capability(&c)),
        "preferredPayloadType"
    );
}

#[test]
fn mime_type_must_be_audio_or_video_slash_name() {
    for bad in [
        "VP8",
        "application/foo",
        "video/",
        "/VP8",
        "video/VP8/x",
        "video/V P8",
        "",
    ] {
        let mut p = video_params();
        p.codecs[0].mime_type = bad.to_owned();
        assert_eq!(
            field_of(validate_rtp_parameters(&p)),
            "codecs[0].mimeType",
            "{bad:?}"
        );
    }
    let mut p = video_params();
    p.codecs[0].mime_type = "VIDEO/vp8".to_owned();
    validate_rtp_parameters(&p).expect("mime types are case-insensitive");
}

#[test]
fn capability_kind_must_agree_with_mime_type() {
    let mut c = vp8_cap();
    c.kind = MediaKind::Audio;
    assert_eq!(field_of(validate_rtp_codec_capability(&c)), "kind");
}

#[test]
fn producer_codecs_must_be_of_the_producer_kind() {
    let err = validate_producer_rtp_parameters(MediaKind::Audio, &video_params());
    assert_eq!(field_of(err), "codecs[0].mimeType");
}

#[test]
fn audio_and_video_codecs_cannot_mix() {
    let mut p = video_params();
    p.codecs.push(codec("audio/opus", 111, 48000, Some(2)));
    assert_eq!(field_of(validate_rtp_parameters(&p)), "codecs[2].mimeType");
}

#[test]
fn channels_are_only_for_audio() {
    let mut p = video_params();
    p.codecs[0].channels = Some(1);
    assert_eq!(field_of(validate_rtp_parameters(&p)), "codecs[0].channels");
    let mut c = cap(MediaKind::Audio, "audio/PCMU", 8000, Some(0));
    assert_eq!(field_of(validate_rtp_codec_capability(&c)), "channels");
    c.channels = None;
    validate_rtp_codec_capability(&c).expect("audio channels default to 1");
}

#[test]
fn opus_needs_two_channels() {
    for channels in [None, Some(1), Some(6)] {
        let c = codec("audio/opus", 111, 48000, channels);
        assert_eq!(field_of(validate_rtp_codec_parameters(&c)), "channels");
    }
    validate_rtp_codec_parameters(&codec("audio/OPUS", 111, 48000, Some(2))).expect("valid");
}

#[test]
fn zero_clock_rate_is_rejected() {
    let c = codec("video/VP8", 96, 0, None);
    assert_eq!(field_of(validate_rtp_codec_parameters(&c)), "clockRate");
}

#[test]
fn empty_codec_list_is_rejected() {
    let p = rtp_params(vec![], vec![ssrc_encoding(1)]);
    assert_eq!(field_of(validate_rtp_parameters(&p)), "codecs");
}

#[test]
fn empty_mid_is_rejected() {
    let mut p = video_params();
    p.mid = Some(String::new());
    assert_eq!(field_of(validate_rtp_parameters(&p)), "mid");
}

#[test]
fn rtcp_feedback_needs_a_type() {
    let fb = RtcpFeedback {
        r#type: " ".to_owned(),
        parameter: None,
    };
    assert_eq!(field_of(validate_rtcp_feedback(&fb)), "type");
    let mut p = video_params();
    p.codecs[0].rtcp_feedback = vec![RtcpFeedback::new("nack", ""), fb];
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "codecs[0].rtcpFeedback[1].type"
    );
    validate_rtcp_feedback(&RtcpFeedback {
        r#type: "nack".to_owned(),
        parameter: None,
    })
    .expect("parameter is optional");
}

fn ext(uri: &str, id: u8) -> RtpHeaderExtensionParameters {
    RtpHeaderExtensionParameters {
        uri: uri.to_owned(),
        id,
        encrypt: None,
        parameters: CodecParameters::new(),
    }
}

#[test]
fn duplicate_header_extension_ids_are_rejected() {
    let mut p = video_params();
    p.header_extensions = vec![ext("urn:a", 1), ext("urn:b", 2), ext("urn:c", 1)];
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "headerExtensions[2].id"
    );
}

#[test]
fn header_extension_ids_are_1_to_255() {
    let mut p = video_params();
    p.header_extensions = vec![ext("urn:a", 0)];
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "headerExtensions[0].id"
    );
    p.header_extensions = vec![ext("urn:a", 14), ext("urn:b", 15), ext("urn:c", 255)];
    validate_rtp_parameters(&p).expect("two-byte ids are allowed");
    p.header_extensions = vec![ext("", 3)];
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "headerExtensions[0].uri"
    );
}

#[test]
fn capability_extension_ids_may_repeat_only_for_the_same_uri_or_other_kind() {
    let mut caps = device_caps();
    validate_rtp_capabilities(&caps).expect("mid has id 1 for audio and video");
    let mut clash = caps.header_extensions[1].clone();
    clash.uri = "urn:other".to_owned();
    caps.header_extensions.push(clash);
    let n = caps.header_extensions.len() - 1;
    assert_eq!(
        field_of(validate_rtp_capabilities(&caps)),
        format!("headerExtensions[{n}].preferredId")
    );
    let mut zero = caps.header_extensions[0].clone();
    zero.preferred_id = 0;
    assert_eq!(
        field_of(validate_rtp_header_extension(&zero)),
        "preferredId"
    );
}

#[test]
fn rid_and_ssrc_mixing_across_encodings_is_rejected() {
    let mixed = [rid_encoding("r0", None), ssrc_encoding(5)];
    assert_eq!(
        field_of(validate_rtp_encoding_parameters(&mixed)),
        "encodings[1].rid"
    );
    let mixed = [
        RtpEncodingParameters {
            ssrc: Some(4),
            ..rid_encoding("r0", None)
        },
        rid_encoding("r1", None),
    ];
    assert_eq!(
        field_of(validate_rtp_encoding_parameters(&mixed)),
        "encodings[1].ssrc"
    );
    validate_rtp_encoding_parameters(&[rid_encoding("r0", None), rid_encoding("r1", None)])
        .expect("all rids");
    validate_rtp_encoding_parameters(&[ssrc_encoding(1), ssrc_encoding(2)]).expect("all ssrcs");
}

#[test]
fn duplicate_rids_are_rejected() {
    let e = [rid_encoding("r0", None), rid_encoding("r0", None)];
    assert_eq!(
        field_of(validate_rtp_encoding_parameters(&e)),
        "encodings[1].rid"
    );
}

#[test]
fn duplicate_ssrcs_are_rejected_including_rtx_ones() {
    let e = [ssrc_encoding(7), ssrc_encoding(7)];
    assert_eq!(
        field_of(validate_rtp_encoding_parameters(&e)),
        "encodings[1].ssrc"
    );
    let e = [
        RtpEncodingParameters {
            rtx: Some(RtpEncodingRtx { ssrc: 8 }),
            ..ssrc_encoding(7)
        },
        ssrc_encoding(8),
    ];
    assert_eq!(
        field_of(validate_rtp_encoding_parameters(&e)),
        "encodings[1].ssrc"
    );
    let e = [RtpEncodingParameters {
        rtx: Some(RtpEncodingRtx { ssrc: 7 }),
        ..ssrc_encoding(7)
    }];
    assert_eq!(
        field_of(validate_rtp_encoding_parameters(&e)),
        "encodings[0].rtx.ssrc"
    );
}

#[test]
fn rid_must_follow_rfc_8851_syntax() {
    for bad in ["", "r 0", "r/0", "ré", &"x".repeat(256)] {
        let e = [rid_encoding(bad, None)];
        assert_eq!(
            field_of(validate_rtp_encoding_parameters(&e)),
            "encodings[0].rid",
            "{bad:?}"
        );
    }
    validate_rtp_encoding_parameters(&[rid_encoding("hi-Res_2", None)]).expect("valid rid");
}

#[test]
fn several_encodings_need_an_identity() {
    let e = [
        RtpEncodingParameters::default(),
        RtpEncodingParameters::default(),
    ];
    assert_eq!(field_of(validate_rtp_encoding_parameters(&e)), "encodings");
    validate_rtp_encoding_parameters(&[RtpEncodingParameters::default()])
        .expect("a single encoding may be identified by mid alone");
}

#[test]
fn scale_resolution_down_by_below_one_is_rejected() {
    let e = [RtpEncodingParameters {
        scale_resolution_down_by: Some(0.5),
        ..ssrc_encoding(1)
    }];
    assert_eq!(
        field_of(validate_rtp_encoding_parameters(&e)),
        "encodings[0].scaleResolutionDownBy"
    );
    let e = [RtpEncodingParameters {
        max_framerate: Some(-1.0),
        ..ssrc_encoding(1)
    }];
    assert_eq!(
        field_of(validate_rtp_encoding_parameters(&e)),
        "encodings[0].maxFramerate"
    );
}

#[test]
fn encoding_codec_payload_type_must_name_a_codec() {
    let mut p = video_params();
    p.encodings[0].codec_payload_type = Some(100);
    assert_eq!(
        field_of(validate_rtp_parameters(&p)),
        "encodings[0].codecPayloadType"
    );
    p.encodings[0].codec_payload_type = Some(96);
    validate_rtp_parameters(&p).expect("valid");
}

#[test]
fn producer_needs_an_encoding() {
    let mut p = video_params();
    p.encodings.clear();
    validate_rtp_parameters(&p).expect("plain parameters may have none");
    assert_eq!(
        field_of(validate_producer_rtp_parameters(MediaKind::Video, &p)),
        "encodings"
    );
}

#[test]
fn sctp_capabilities_need_at_least_one_stream_each_way() {
    let caps = |os, mis| SctpCapabilities {
        num_streams: NumSctpStreams { os, mis },
    };
    assert_eq!(
        field_of(validate_sctp_capabilities(&caps(0, 10))),
        "numStreams.OS"
    );
    assert_eq!(
        field_of(validate_sctp_capabilities(&caps(10, 0))),
        "numStreams.MIS"
    );
    validate_sctp_capabilities(&caps(1, 65535)).expect("valid");
    validate_sctp_capabilities(&SctpCapabilities::default()).expect("1024/1024");
    let json: SctpCapabilities =
        serde_json::from_str(r#"{"numStreams":{"OS":1024,"MIS":1024}}"#).expect("parses");
    assert_eq!(json, SctpCapabilities::default());
    assert!(
        serde_json::from_str::<SctpCapabilities>(r#"{"numStreams":{"OS":65536,"MIS":1}}"#).is_err()
    );
}

#[test]
fn sctp_parameters_need_streams_and_a_message_size() {
    let p = SctpParameters {
        port: 5000,
        os: 1024,
        mis: 1024,
        max_message_size: 262_144,
    };
    validate_sctp_parameters(&p).expect("valid");
    assert_eq!(
        field_of(validate_sctp_parameters(&SctpParameters { mis: 0, ..p })),
        "MIS"
    );
    assert_eq!(
        field_of(validate_sctp_parameters(&SctpParameters {
            max_message_size: 0,
            ..p
        })),
        "maxMessageSize"
    );
}

fn stream(
    ordered: Option<bool>,
    life: Option<u32>,
    retransmits: Option<u32>,
) -> SctpStreamParameters {
    SctpStreamParameters {
        stream_id: 1,
        ordered,
        max_packet_life_time: life,
        max_retransmits: retransmits,
    }
}

#[test]
fn sctp_stream_id_65535_is_rejected() {
    let mut s = stream(None, None, None);
    s.stream_id = 65535;
    assert_eq!(
        field_of(validate_sctp_stream_parameters(&s).map(|_| ())),
        "streamId"
    );
    s.stream_id = 65534;
    validate_sctp_stream_parameters(&s).expect("valid");
}

#[test]
fn sctp_stream_with_both_lifetime_and_retransmits_is_rejected() {
    let r = validate_sctp_stream_parameters(&stream(None, Some(100), Some(3))).map(|_| ());
    assert_eq!(field_of(r), "maxRetransmits");
}

#[test]
fn sctp_stream_ordered_with_partial_reliability_is_rejected() {
    for s in [
        stream(Some(true), Some(100), None),
        stream(Some(true), None, Some(0)),
    ] {
        assert_eq!(
            field_of(validate_sctp_stream_parameters(&s).map(|_| ())),
            "ordered"
        );
    }
    let ok = validate_sctp_stream_parameters(&stream(Some(false), Some(100), None)).expect("valid");
    assert_eq!(ok.ordered, Some(false));
}

#[test]
fn sctp_stream_ordered_defaults_to_true_unless_partially_reliable() {
    let reliable = validate_sctp_stream_parameters(&stream(None, None, None)).expect("valid");
    assert_eq!(reliable.ordered, Some(true));
    let unreliable = validate_sctp_stream_parameters(&stream(None, None, Some(0))).expect("valid");
    assert_eq!(
        unreliable.ordered,
        Some(false),
        "maxRetransmits 0 counts as set"
    );
    let unordered =
        validate_sctp_stream_parameters(&stream(Some(false), None, None)).expect("valid");
    assert_eq!(unordered.ordered, Some(false));
}
