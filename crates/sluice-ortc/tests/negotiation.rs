//! Router capabilities, producer mapping, consumable and consumer parameters.

mod common;

use common::*;
use sluice_ortc::supported::*;
use sluice_ortc::*;

// ---- JSON --------------------------------------------------------------------------------------

#[test]
fn mediasoup_router_caps_fixture_round_trips_through_json() {
    let caps: RtpCapabilities = serde_json::from_str(ROUTER_CAPS).expect("parses");
    validate_rtp_capabilities(&caps).expect("valid");
    let json = serde_json::to_string(&caps).expect("serialises");
    let again: RtpCapabilities = serde_json::from_str(&json).expect("parses again");
    assert_eq!(caps, again);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["codecs"][2]["mimeType"], "video/rtx");
    assert_eq!(v["codecs"][2]["parameters"]["apt"], 101);
    assert_eq!(v["headerExtensions"][2]["direction"], "recvonly");
    assert_eq!(v["headerExtensions"][2]["preferredId"], 2);
}

#[test]
fn chromium_rtp_parameters_round_trip_through_json() {
    let p = chromium_video();
    validate_rtp_parameters(&p).expect("valid");
    let json = serde_json::to_string(&p).expect("serialises");
    let again: RtpParameters = serde_json::from_str(&json).expect("parses again");
    assert_eq!(p, again);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["codecs"][1]["parameters"]["apt"], 96);
    assert_eq!(v["encodings"][1]["rid"], "r1");
    assert_eq!(v["encodings"][1]["scalabilityMode"], "L1T3");
    assert_eq!(v["encodings"][1]["maxBitrate"], 1_000_000);
    assert_eq!(v["headerExtensions"][1]["id"], 10);
    assert_eq!(v["rtcp"]["cname"], "v8Vl4ZBlUzl9mqfK");

    let audio = chromium_audio();
    validate_producer_rtp_parameters(MediaKind::Audio, &audio).expect("valid");
    assert_eq!(
        audio.codecs[0].parameters["useinbandfec"],
        ParameterValue::Int(1)
    );
}

#[test]
fn unknown_json_fields_do_not_break_parsing() {
    // Chromium's encodings carry "active", "dtx" etc.; add more unknown members everywhere.
    let mut v: serde_json::Value = serde_json::from_str(CHROMIUM_VIDEO).expect("json");
    v["someFutureField"] = serde_json::json!({ "x": [1, 2] });
    v["codecs"][0]["sdpFmtpLine"] = "x=y".into();
    v["encodings"][0]["networkPriority"] = "high".into();
    v["encodings"][0]["wibble"] = true.into();
    v["rtcp"]["extra"] = 1.into();
    let p: RtpParameters = serde_json::from_value(v).expect("unknown fields are ignored");
    assert_eq!(p.encodings[0].rid.as_deref(), Some("r0"));
    let mut caps: serde_json::Value = serde_json::from_str(DEVICE_CAPS).expect("json");
    caps["fecMechanisms"] = serde_json::json!([]);
    caps["headerExtensions"][0]["newThing"] = 3.into();
    let caps: RtpCapabilities = serde_json::from_value(caps).expect("unknown fields are ignored");
    validate_rtp_capabilities(&caps).expect("valid");
}

// ---- router capabilities ---------------------------------------------------------------------

#[test]
fn router_caps_equal_mediasoup_for_the_same_config() {
    let expected: RtpCapabilities = serde_json::from_str(ROUTER_CAPS).expect("parses");
    assert_eq!(router_caps(), expected);
}

#[test]
fn dynamic_payload_types_start_at_100_then_wrap_to_96() {
    let pts: Vec<u8> = dynamic_payload_types().collect();
    assert_eq!(pts.len(), 32);
    assert_eq!(pts[0], 100);
    assert_eq!(pts[27], 127);
    assert_eq!(pts[28], 96);
    assert_eq!(pts[31], 99);
}

#[test]
fn every_video_codec_is_followed_by_an_rtx_codec() {
    let caps = router_caps();
    let mimes: Vec<(&str, Option<u8>)> = caps
        .codecs
        .iter()
        .map(|c| (c.mime_type.as_str(), c.preferred_payload_type))
        .collect();
    assert_eq!(
        mimes,
        vec![
            ("audio/opus", Some(100)),
            ("video/VP8", Some(101)),
            ("video/rtx", Some(102)),
            ("video/H264", Some(103)),
            ("video/rtx", Some(104)),
        ]
    );
    assert_eq!(caps.codecs[4].parameters["apt"], ParameterValue::Int(103));
    assert!(caps.codecs[4].rtcp_feedback.is_empty());
}

#[test]
fn preferred_payload_type_is_kept_and_never_reallocated() {
    let mut vp8 = vp8_cap();
    vp8.preferred_payload_type = Some(100);
    let caps = generate_router_rtp_capabilities(&[opus_cap(), vp8]).expect("valid");
    // opus would have taken 100 but it is reserved for VP8.
    assert_eq!(caps.codecs[0].preferred_payload_type, Some(101));
    assert_eq!(caps.codecs[1].preferred_payload_type, Some(100));
    assert_eq!(caps.codecs[2].preferred_payload_type, Some(102));
}

#[test]
fn chromium_style_preferred_payload_types_are_honoured() {
    let mut opus = opus_cap();
    opus.preferred_payload_type = Some(111);
    let mut vp8 = vp8_cap();
    vp8.preferred_payload_type = Some(96);
    let caps = generate_router_rtp_capabilities(&[opus, vp8]).expect("valid");
    let pts: Vec<Option<u8>> = caps
        .codecs
        .iter()
        .map(|c| c.preferred_payload_type)
        .collect();
    assert_eq!(pts, vec![Some(111), Some(96), Some(100)]);
}

#[test]
fn duplicate_preferred_payload_types_are_rejected() {
    let mut opus = opus_cap();
    opus.preferred_payload_type = Some(100);
    let mut vp8 = vp8_cap();
    vp8.preferred_payload_type = Some(100);
    let err = generate_router_rtp_capabilities(&[opus, vp8]).expect_err("duplicate");
    assert_eq!(err.field(), Some("media_codecs[1].preferredPayloadType"));
}

#[test]
fn static_payload_types_of_pcmu_pcma_g722_are_used() {
    let codecs = [
        cap(MediaKind::Audio, "audio/PCMU", 8000, None),
        cap(MediaKind::Audio, "audio/PCMA", 8000, Some(1)),
        cap(MediaKind::Audio, "audio/G722", 8000, None),
    ];
    let caps = generate_router_rtp_capabilities(&codecs).expect("valid");
    let pts: Vec<Option<u8>> = caps
        .codecs
        .iter()
        .map(|c| c.preferred_payload_type)
        .collect();
    assert_eq!(pts, vec![Some(0), Some(8), Some(9)]);
    assert!(caps.codecs.iter().all(|c| c.channels == Some(1)));
}

#[test]
fn unsupported_media_codec_is_rejected_naming_index_and_mime_type() {
    let codecs = [opus_cap(), cap(MediaKind::Video, "video/MPV", 90000, None)];
    let err = generate_router_rtp_capabilities(&codecs).expect_err("unsupported");
    assert_eq!(
        err,
        OrtcError::UnsupportedCodec {
            field: "media_codecs[1]".to_owned(),
            mime_type: "video/MPV".to_owned(),
            payload_type: None,
        }
    );
    assert!(err.to_string().contains("media_codecs[1]"));
    assert!(err.to_string().contains("video/MPV"));
}

#[test]
fn wrong_clock_rate_is_unsupported() {
    let codecs = [cap(MediaKind::Video, "video/VP8", 8000, None)];
    assert!(matches!(
        generate_router_rtp_capabilities(&codecs),
        Err(OrtcError::UnsupportedCodec { .. })
    ));
}

#[test]
fn payload_types_run_out_after_32_dynamic_allocations() {
    let sixteen: Vec<RtpCodecCapability> = (0..16).map(|_| vp8_cap()).collect();
    let caps = generate_router_rtp_capabilities(&sixteen).expect("exactly 32 payload types");
    assert_eq!(caps.codecs.len(), 32);
    let mut seventeen = sixteen;
    seventeen.push(vp8_cap());
    let err = generate_router_rtp_capabilities(&seventeen).expect_err("exhausted");
    assert_eq!(
        err,
        OrtcError::PayloadTypesExhausted {
            field: "media_codecs[16]".to_owned()
        }
    );
}

#[test]
fn config_parameters_are_merged_over_supported_ones() {
    let mut h264 = h264_cap(1, "4d0032");
    h264.parameters.remove("level-asymmetry-allowed");
    let caps = generate_router_rtp_capabilities(&[h264]).expect("valid");
    let p = &caps.codecs[0].parameters;
    assert_eq!(p["level-asymmetry-allowed"], ParameterValue::Int(1));
    assert_eq!(p["profile-level-id"], ParameterValue::from("4d0032"));
    assert_eq!(p["packetization-mode"], ParameterValue::Int(1));
}

#[test]
fn mime_type_case_is_canonicalised_and_feedback_comes_from_the_table() {
    let mut vp8 = cap(MediaKind::Video, "video/vp8", 90000, None);
    vp8.rtcp_feedback = vec![RtcpFeedback::new("bogus", "")];
    let caps = generate_router_rtp_capabilities(&[vp8]).expect("valid");
    assert_eq!(caps.codecs[0].mime_type, "video/VP8");
    assert_eq!(caps.codecs[0].rtcp_feedback.len(), 5);
}

#[test]
fn invalid_config_codec_is_rejected_with_its_path() {
    let mut opus = opus_cap();
    opus.channels = Some(1);
    let err = generate_router_rtp_capabilities(&[vp8_cap(), opus]).expect_err("opus needs 2");
    assert_eq!(err.field(), Some("media_codecs[1].channels"));
}

#[test]
fn multiopus_variants_are_supported() {
    let mut c = cap(MediaKind::Audio, "audio/multiopus", 48000, Some(6));
    c.parameters = params(&[
        ("channel_mapping", "0,4,1,2,3,5".into()),
        ("num_streams", ParameterValue::Int(4)),
        ("coupled_streams", ParameterValue::Int(2)),
    ]);
    let caps = generate_router_rtp_capabilities(&[c.clone()]).expect("5.1 is supported");
    assert_eq!(caps.codecs[0].channels, Some(6));
    c.parameters
        .insert("num_streams".to_owned(), ParameterValue::Int(3));
    assert!(generate_router_rtp_capabilities(&[c]).is_err());
}

#[test]
fn router_header_extensions_are_the_supported_table() {
    assert_eq!(
        router_caps().header_extensions,
        supported_rtp_capabilities().header_extensions
    );
}

// ---- producer mapping -------------------------------------------------------------------------

#[test]
fn producer_with_chromium_numbering_is_mapped_to_router_payload_types() {
    let caps = router_caps();
    let mapping = get_producer_rtp_parameters_mapping(&chromium_video(), &caps, &mut counter())
        .expect("maps");
    let pairs: Vec<(u8, u8)> = mapping
        .codecs
        .iter()
        .map(|c| (c.payload_type, c.mapped_payload_type))
        .collect();
    assert_eq!(pairs, vec![(96, 101), (97, 102)]);
    let audio = get_producer_rtp_parameters_mapping(&chromium_audio(), &caps, &mut counter())
        .expect("maps");
    assert_eq!(audio.mapped_payload_type(111), Some(100));
    assert_eq!(audio.encodings[0].ssrc, Some(3_425_689_410));
}

#[test]
fn producer_with_aiortc_numbering_is_mapped_to_router_payload_types() {
    let caps = router_caps();
    let mut audio = rtp_params(
        vec![codec("audio/opus", 96, 48000, Some(2))],
        vec![ssrc_encoding(11)],
    );
    audio.header_extensions = vec![RtpHeaderExtensionParameters {
        uri: MID_URI.to_owned(),
        id: 1,
        encrypt: None,
        parameters: CodecParameters::new(),
    }];
    let video = rtp_params(
        vec![codec("video/VP8", 97, 90000, None), rtx(98, 97)],
        vec![RtpEncodingParameters {
            ssrc: Some(21),
            rtx: Some(RtpEncodingRtx { ssrc: 22 }),
            ..Default::default()
        }],
    );
    let a = get_producer_rtp_parameters_mapping(&audio, &caps, &mut counter()).expect("maps");
    assert_eq!(a.mapped_payload_type(96), Some(100));
    let v = get_producer_rtp_parameters_mapping(&video, &caps, &mut counter()).expect("maps");
    assert_eq!(v.mapped_payload_type(97), Some(101));
    assert_eq!(v.mapped_payload_type(98), Some(102));
}

#[test]
fn producer_numbering_that_collides_with_other_router_codecs_is_mapped() {
    // The producer uses 103 (router's H264) for VP8 and 101 (router's VP8) for its RTX.
    let caps = router_caps();
    let p = rtp_params(
        vec![codec("video/VP8", 103, 90000, None), rtx(101, 103)],
        vec![ssrc_encoding(5)],
    );
    let m = get_producer_rtp_parameters_mapping(&p, &caps, &mut counter()).expect("maps");
    assert_eq!(m.mapped_payload_type(103), Some(101));
    assert_eq!(m.mapped_payload_type(101), Some(102));
}

#[test]
fn producer_with_codec_the_router_lacks_is_rejected() {
    let p = rtp_params(
        vec![codec("video/VP9", 98, 90000, None)],
        vec![ssrc_encoding(1)],
    );
    let err = get_producer_rtp_parameters_mapping(&p, &router_caps(), &mut counter())
        .expect_err("no VP9");
    assert_eq!(
        err,
        OrtcError::UnsupportedCodec {
            field: "codecs[0]".to_owned(),
            mime_type: "video/VP9".to_owned(),
            payload_type: Some(98),
        }
    );
}

#[test]
fn producer_rtx_for_a_codec_without_router_rtx_is_rejected() {
    let mut audio_rtx = codec("audio/rtx", 97, 48000, None);
    audio_rtx.parameters = params(&[("apt", ParameterValue::Int(96))]);
    let p = rtp_params(
        vec![codec("audio/opus", 96, 48000, Some(2)), audio_rtx],
        vec![ssrc_encoding(1)],
    );
    let err = get_producer_rtp_parameters_mapping(&p, &router_caps(), &mut counter())
        .expect_err("router has no audio RTX");
    assert!(matches!(
        err,
        OrtcError::UnsupportedRtxCodec {
            payload_type: 97,
            router_payload_type: 100,
            ..
        }
    ));
}

#[test]
fn producer_without_encodings_is_rejected() {
    let p = rtp_params(vec![codec("audio/opus", 96, 48000, Some(2))], vec![]);
    let err = get_producer_rtp_parameters_mapping(&p, &router_caps(), &mut counter())
        .expect_err("no encodings");
    assert_eq!(err.field(), Some("encodings"));
}

#[test]
fn invalid_producer_parameters_are_rejected_before_mapping() {
    let p = rtp_params(
        vec![
            codec("video/VP8", 96, 90000, None),
            codec("video/rtx", 97, 90000, None),
        ],
        vec![ssrc_encoding(1)],
    );
    let err = get_producer_rtp_parameters_mapping(&p, &router_caps(), &mut counter())
        .expect_err("rtx without apt");
    assert_eq!(err.field(), Some("codecs[1].parameters.apt"));
}

#[test]
fn mapped_ssrcs_are_consecutive_from_one_generated_value() {
    let mut calls = 0;
    let mut next_ssrc = || {
        calls += 1;
        4_000_000_000
    };
    let m = get_producer_rtp_parameters_mapping(&chromium_video(), &router_caps(), &mut next_ssrc)
        .expect("maps");
    assert_eq!(calls, 1);
    let mapped: Vec<u32> = m.encodings.iter().map(|e| e.mapped_ssrc).collect();
    assert_eq!(mapped, vec![4_000_000_000, 4_000_000_001, 4_000_000_002]);
    let rids: Vec<Option<&str>> = m.encodings.iter().map(|e| e.rid.as_deref()).collect();
    assert_eq!(rids, vec![Some("r0"), Some("r1"), Some("r2")]);
    assert_eq!(m.encodings[2].scalability_mode.as_deref(), Some("L1T3"));
}

#[test]
fn rtp_mapping_serialises_in_mediasoup_shape() {
    let m = get_producer_rtp_parameters_mapping(&chromium_video(), &router_caps(), &mut counter())
        .expect("maps");
    let v = serde_json::to_value(&m).expect("json");
    assert_eq!(v["codecs"][0]["payloadType"], 96);
    assert_eq!(v["codecs"][0]["mappedPayloadType"], 101);
    assert_eq!(v["encodings"][0]["mappedSsrc"], 1000);
    assert_eq!(v["encodings"][0]["rid"], "r0");
    assert!(v["encodings"][0].get("ssrc").is_none());
}

// ---- codec matching rules ---------------------------------------------------------------------

fn h264_producer(packetization_mode: i64, profile_level_id: &str) -> RtpParameters {
    let mut c = codec("video/H264", 125, 90000, None);
    c.parameters = params(&[
        (
            "packetization-mode",
            ParameterValue::Int(packetization_mode),
        ),
        ("profile-level-id", profile_level_id.into()),
        ("level-asymmetry-allowed", ParameterValue::Int(1)),
    ]);
    rtp_params(vec![c], vec![ssrc_encoding(1)])
}

#[test]
fn h264_with_same_mode_and_profile_matches_and_keeps_producer_parameters() {
    let caps = router_caps();
    let p = h264_producer(1, "42e01f");
    let m = get_producer_rtp_parameters_mapping(&p, &caps, &mut counter()).expect("maps");
    assert_eq!(m.mapped_payload_type(125), Some(103));
    let c = get_consumable_rtp_parameters(MediaKind::Video, &p, &caps, &m);
    assert_eq!(c.codecs[0].parameters, p.codecs[0].parameters);
}

#[test]
fn h264_with_different_packetization_mode_does_not_match() {
    let err = get_producer_rtp_parameters_mapping(
        &h264_producer(0, "42e01f"),
        &router_caps(),
        &mut counter(),
    )
    .expect_err("mode 0 vs 1");
    assert!(matches!(err, OrtcError::UnsupportedCodec { .. }));
    // An absent packetization-mode is mode 0.
    let mut p = h264_producer(0, "42e01f");
    p.codecs[0].parameters.remove("packetization-mode");
    assert!(get_producer_rtp_parameters_mapping(&p, &router_caps(), &mut counter()).is_err());
}

#[test]
fn h264_with_different_profile_does_not_match() {
    // High profile against the router's Constrained Baseline.
    assert!(
        get_producer_rtp_parameters_mapping(
            &h264_producer(1, "640032"),
            &router_caps(),
            &mut counter()
        )
        .is_err()
    );
}

#[test]
fn h264_with_same_profile_and_other_level_matches() {
    assert!(
        get_producer_rtp_parameters_mapping(
            &h264_producer(1, "42e034"),
            &router_caps(),
            &mut counter()
        )
        .is_ok()
    );
    // 4de01f is Constrained Baseline too, spelled with the Main profile_idc.
    assert!(
        get_producer_rtp_parameters_mapping(
            &h264_producer(1, "4de01f"),
            &router_caps(),
            &mut counter()
        )
        .is_ok()
    );
}

#[test]
fn h264_router_picks_the_codec_of_the_same_profile() {
    let caps = generate_router_rtp_capabilities(&[h264_cap(1, "640032"), h264_cap(1, "42e01f")])
        .expect("valid");
    let m = get_producer_rtp_parameters_mapping(&h264_producer(1, "42e01f"), &caps, &mut counter())
        .expect("maps");
    assert_eq!(m.mapped_payload_type(125), Some(102));
}

#[test]
fn vp9_profile_id_must_match_with_default_zero() {
    let mut vp9_2 = cap(MediaKind::Video, "video/VP9", 90000, None);
    vp9_2.parameters = params(&[("profile-id", ParameterValue::Int(2))]);
    let caps = generate_router_rtp_capabilities(&[vp9_2]).expect("valid");
    let mut p = rtp_params(
        vec![codec("video/VP9", 98, 90000, None)],
        vec![ssrc_encoding(1)],
    );
    assert!(get_producer_rtp_parameters_mapping(&p, &caps, &mut counter()).is_err());
    p.codecs[0].parameters = params(&[("profile-id", "2".into())]);
    assert!(get_producer_rtp_parameters_mapping(&p, &caps, &mut counter()).is_ok());
}

#[test]
fn av1_profile_must_match_with_default_zero() {
    let caps = generate_router_rtp_capabilities(&[cap(MediaKind::Video, "video/AV1", 90000, None)])
        .expect("valid");
    let mut p = rtp_params(
        vec![codec("video/AV1", 45, 90000, None)],
        vec![ssrc_encoding(1)],
    );
    assert!(get_producer_rtp_parameters_mapping(&p, &caps, &mut counter()).is_ok());
    p.codecs[0].parameters = params(&[("profile", ParameterValue::Int(1))]);
    assert!(get_producer_rtp_parameters_mapping(&p, &caps, &mut counter()).is_err());
}

#[test]
fn opus_producer_without_channels_is_rejected() {
    let p = rtp_params(
        vec![codec("audio/opus", 111, 48000, None)],
        vec![ssrc_encoding(1)],
    );
    let err = get_producer_rtp_parameters_mapping(&p, &router_caps(), &mut counter())
        .expect_err("opus needs channels 2");
    assert_eq!(err.field(), Some("codecs[0].channels"));
}

// ---- consumable parameters --------------------------------------------------------------------

#[test]
fn consumable_uses_router_numbering_with_producer_codec_parameters() {
    let caps = router_caps();
    let c = consumable_of(MediaKind::Audio, &chromium_audio(), &caps);
    assert_eq!(c.codecs.len(), 1);
    assert_eq!(c.codecs[0].payload_type, 100);
    assert_eq!(c.codecs[0].mime_type, "audio/opus");
    assert_eq!(c.codecs[0].parameters["minptime"], ParameterValue::Int(10));
    assert_eq!(fb_list(&c.codecs[0]), vec!["transport-cc"]);

    let v = consumable_of(MediaKind::Video, &chromium_video(), &caps);
    let pts: Vec<(String, u8)> = v
        .codecs
        .iter()
        .map(|c| (c.mime_type.clone(), c.payload_type))
        .collect();
    assert_eq!(
        pts,
        vec![("video/VP8".to_owned(), 101), ("video/rtx".to_owned(), 102)]
    );
    assert_eq!(v.codecs[1].parameters["apt"], ParameterValue::Int(101));
    assert_eq!(
        fb_list(&v.codecs[0]),
        vec!["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"]
    );
}

#[test]
fn consumable_header_extensions_are_router_ids_of_the_kind_the_router_may_send() {
    let caps = router_caps();
    let v = consumable_of(MediaKind::Video, &chromium_video(), &caps);
    let exts: Vec<(&str, u8)> = v
        .header_extensions
        .iter()
        .map(|e| (e.uri.as_str(), e.id))
        .collect();
    assert_eq!(
        exts,
        vec![
            (MID_URI, 1),
            (ABS_SEND_TIME_URI, 4),
            (TRANSPORT_WIDE_CC_URI, 5),
            (VIDEO_ORIENTATION_URI, 11),
            (TOFFSET_URI, 12),
            (ABS_CAPTURE_TIME_URI, 13),
            (PLAYOUT_DELAY_URI, 14),
        ]
    );
    // rid / repaired-rid are recvonly for the router; audio transport-cc too.
    let a = consumable_of(MediaKind::Audio, &chromium_audio(), &caps);
    assert!(
        a.header_extensions
            .iter()
            .all(|e| e.uri != TRANSPORT_WIDE_CC_URI)
    );
    assert!(
        a.header_extensions
            .iter()
            .any(|e| e.uri == AUDIO_LEVEL_URI && e.id == 10)
    );
    assert!(a.header_extensions.iter().all(|e| e.encrypt == Some(false)));
}

#[test]
fn consumable_encodings_carry_mapped_ssrcs_and_no_rid() {
    let v = consumable_of(MediaKind::Video, &chromium_video(), &router_caps());
    assert_eq!(v.encodings.len(), 3);
    for (i, e) in v.encodings.iter().enumerate() {
        assert_eq!(e.ssrc, Some(1000 + i as u32));
        assert_eq!(e.rid, None);
        assert_eq!(e.rtx, None);
        assert_eq!(e.scalability_mode.as_deref(), Some("L1T3"));
    }
    assert_eq!(v.encodings[2].max_bitrate, Some(5_000_000));
}

#[test]
fn consumable_rtcp_is_reduced_size_and_muxed_with_producer_cname() {
    let v = consumable_of(MediaKind::Video, &chromium_video(), &router_caps());
    assert_eq!(
        v.rtcp,
        RtcpParameters {
            cname: Some("v8Vl4ZBlUzl9mqfK".to_owned()),
            reduced_size: Some(true),
            mux: Some(true),
        }
    );
    assert_eq!(v.mid, None);
}

#[test]
fn consumable_skips_what_a_mismatched_mapping_does_not_cover() {
    let caps = router_caps();
    let c = get_consumable_rtp_parameters(
        MediaKind::Video,
        &chromium_video(),
        &caps,
        &RtpMapping::default(),
    );
    assert!(c.codecs.is_empty());
    assert!(c.encodings.is_empty());
}

// ---- consumers --------------------------------------------------------------------------------

fn video_consumable() -> RtpParameters {
    consumable_of(MediaKind::Video, &chromium_video(), &router_caps())
}

#[test]
fn device_with_a_matching_codec_can_consume() {
    assert_eq!(can_consume(&video_consumable(), &device_caps()), Ok(true));
}

#[test]
fn device_without_a_matching_codec_cannot_consume() {
    let mut caps = device_caps();
    caps.codecs.retain(|c| c.mime_type != "video/VP8");
    assert_eq!(can_consume(&video_consumable(), &caps), Ok(false));
    // Only an RTX codec in common is not enough.
    assert_eq!(
        get_consumer_rtp_parameters(&video_consumable(), &caps, false, &mut counter()),
        Err(OrtcError::NoMatchingCodec)
    );
}

#[test]
fn can_consume_rejects_invalid_device_caps() {
    let mut caps = device_caps();
    caps.codecs[2]
        .parameters
        .insert("apt".to_owned(), "x".into());
    let err = can_consume(&video_consumable(), &caps).expect_err("invalid caps");
    assert_eq!(err.field(), Some("codecs[2].parameters.apt"));
}

#[test]
fn consumer_of_three_l1t3_simulcast_layers_gets_l3t3() {
    let p = get_consumer_rtp_parameters(&video_consumable(), &device_caps(), false, &mut counter())
        .expect("consumes");
    assert_eq!(p.encodings.len(), 1);
    let e = &p.encodings[0];
    assert_eq!(e.scalability_mode.as_deref(), Some("L3T3"));
    assert_eq!(e.ssrc, Some(1000));
    assert_eq!(e.rtx, Some(RtpEncodingRtx { ssrc: 1001 }));
    assert_eq!(e.max_bitrate, Some(5_000_000));
    assert_eq!(e.rid, None);
}

#[test]
fn consumer_of_simulcast_without_modes_gets_one_temporal_layer() {
    let caps = router_caps();
    let producer = rtp_params(
        vec![codec("video/VP8", 96, 90000, None)],
        vec![rid_encoding("a", None), rid_encoding("b", None)],
    );
    let c = consumable_of(MediaKind::Video, &producer, &caps);
    let p =
        get_consumer_rtp_parameters(&c, &device_caps(), false, &mut counter()).expect("consumes");
    assert_eq!(p.encodings[0].scalability_mode.as_deref(), Some("L2T1"));
}

#[test]
fn consumer_of_a_single_svc_encoding_keeps_its_mode() {
    let mut vp9 = cap(MediaKind::Video, "video/VP9", 90000, None);
    vp9.parameters = params(&[("profile-id", ParameterValue::Int(0))]);
    let caps = generate_router_rtp_capabilities(&[vp9.clone()]).expect("valid");
    let mut producer = rtp_params(
        vec![codec("video/VP9", 98, 90000, None)],
        vec![ssrc_encoding(7)],
    );
    producer.encodings[0].scalability_mode = Some("L3T3_KEY".to_owned());
    let c = consumable_of(MediaKind::Video, &producer, &caps);
    let mut device = caps.clone();
    device.codecs.truncate(1);
    let p = get_consumer_rtp_parameters(&c, &device, false, &mut counter()).expect("consumes");
    assert_eq!(p.encodings[0].scalability_mode.as_deref(), Some("L3T3_KEY"));
    // Without RTX in the device's capabilities there is no RTX codec nor RTX SSRC.
    assert!(p.codecs.iter().all(|c| c.mime_type != "video/rtx"));
    assert_eq!(p.encodings[0].rtx, None);
}

#[test]
fn consumer_gets_rtx_only_when_the_device_supports_it() {
    let with =
        get_consumer_rtp_parameters(&video_consumable(), &device_caps(), false, &mut counter())
            .expect("consumes");
    assert_eq!(
        with.codecs
            .iter()
            .map(|c| c.payload_type)
            .collect::<Vec<_>>(),
        vec![101, 102]
    );
    let mut caps = device_caps();
    caps.codecs.retain(|c| c.mime_type != "video/rtx");
    let without = get_consumer_rtp_parameters(&video_consumable(), &caps, false, &mut counter())
        .expect("consumes");
    assert_eq!(without.codecs.len(), 1);
    assert_eq!(without.encodings[0].rtx, None);
}

#[test]
fn consumer_keeps_router_payload_types_even_if_device_numbers_differently() {
    let mut caps = device_caps();
    for c in &mut caps.codecs {
        c.preferred_payload_type = c.preferred_payload_type.map(|pt| pt - 4);
        if let Some(ParameterValue::Int(apt)) = c.parameters.get_mut("apt") {
            *apt -= 4;
        }
    }
    let p = get_consumer_rtp_parameters(&video_consumable(), &caps, false, &mut counter())
        .expect("consumes");
    assert_eq!(p.codecs[0].payload_type, 101);
    assert_eq!(p.codecs[1].parameters["apt"], ParameterValue::Int(101));
}

#[test]
fn consumer_feedback_is_reduced_to_what_the_device_supports() {
    let mut caps = device_caps();
    caps.codecs[1]
        .rtcp_feedback
        .retain(|f| f.r#type != "ccm" && f.parameter_str() != "pli");
    let p = get_consumer_rtp_parameters(&video_consumable(), &caps, false, &mut counter())
        .expect("consumes");
    assert_eq!(fb_list(&p.codecs[0]), vec!["nack", "transport-cc"]);
}

#[test]
fn consumer_with_transport_wide_cc_drops_remb() {
    let p = get_consumer_rtp_parameters(&video_consumable(), &device_caps(), false, &mut counter())
        .expect("consumes");
    assert!(
        p.header_extensions
            .iter()
            .any(|e| e.uri == TRANSPORT_WIDE_CC_URI)
    );
    assert_eq!(
        fb_list(&p.codecs[0]),
        vec!["nack", "nack pli", "ccm fir", "transport-cc"]
    );
}

#[test]
fn consumer_with_only_abs_send_time_drops_transport_cc() {
    let mut caps = device_caps();
    caps.header_extensions
        .retain(|e| e.uri != TRANSPORT_WIDE_CC_URI);
    let p = get_consumer_rtp_parameters(&video_consumable(), &caps, false, &mut counter())
        .expect("consumes");
    assert_eq!(
        fb_list(&p.codecs[0]),
        vec!["nack", "nack pli", "ccm fir", "goog-remb"]
    );
}

#[test]
fn consumer_without_bwe_extensions_drops_remb_and_transport_cc() {
    let mut caps = device_caps();
    caps.header_extensions
        .retain(|e| e.uri != TRANSPORT_WIDE_CC_URI && e.uri != ABS_SEND_TIME_URI);
    let p = get_consumer_rtp_parameters(&video_consumable(), &caps, false, &mut counter())
        .expect("consumes");
    assert_eq!(fb_list(&p.codecs[0]), vec!["nack", "nack pli", "ccm fir"]);
}

#[test]
fn consumer_header_extensions_need_same_uri_id_and_a_receivable_direction() {
    let mut caps = device_caps();
    for e in &mut caps.header_extensions {
        if e.uri == TOFFSET_URI {
            e.preferred_id = 9;
        }
        if e.uri == VIDEO_ORIENTATION_URI {
            e.direction = Some(RtpHeaderExtensionDirection::Sendonly);
        }
        if e.uri == PLAYOUT_DELAY_URI {
            e.direction = Some(RtpHeaderExtensionDirection::Recvonly);
        }
    }
    let p = get_consumer_rtp_parameters(&video_consumable(), &caps, false, &mut counter())
        .expect("consumes");
    let uris: Vec<&str> = p.header_extensions.iter().map(|e| e.uri.as_str()).collect();
    assert_eq!(
        uris,
        vec![
            MID_URI,
            ABS_SEND_TIME_URI,
            TRANSPORT_WIDE_CC_URI,
            ABS_CAPTURE_TIME_URI,
            PLAYOUT_DELAY_URI
        ]
    );
}

#[test]
fn consumer_of_audio_gets_one_encoding_and_no_rtx() {
    let c = consumable_of(MediaKind::Audio, &chromium_audio(), &router_caps());
    let p =
        get_consumer_rtp_parameters(&c, &device_caps(), false, &mut counter()).expect("consumes");
    assert_eq!(p.codecs.len(), 1);
    assert_eq!(p.codecs[0].payload_type, 100);
    assert_eq!(p.encodings, vec![ssrc_encoding(1000)]);
    // abs-send-time is there for audio but transport-wide-cc is not: transport-cc feedback goes.
    assert!(p.codecs[0].rtcp_feedback.is_empty());
    assert_eq!(p.rtcp.reduced_size, Some(true));
}

#[test]
fn pipe_consumer_keeps_every_encoding_with_fresh_ssrcs() {
    let p = get_consumer_rtp_parameters(&video_consumable(), &device_caps(), true, &mut counter())
        .expect("consumes");
    let ssrcs: Vec<(Option<u32>, Option<u32>)> = p
        .encodings
        .iter()
        .map(|e| (e.ssrc, e.rtx.map(|r| r.ssrc)))
        .collect();
    assert_eq!(
        ssrcs,
        vec![
            (Some(1000), Some(2000)),
            (Some(1001), Some(2001)),
            (Some(1002), Some(2002))
        ]
    );
    assert_eq!(p.encodings[0].scalability_mode.as_deref(), Some("L1T3"));
}

#[test]
fn pipe_consumer_parameters_drop_bwe_and_optionally_rtx() {
    let c = video_consumable();
    let with = get_pipe_consumer_rtp_parameters(&c, true, &mut counter());
    assert_eq!(with.codecs.len(), 2);
    assert_eq!(
        fb_list(&with.codecs[0]),
        vec!["nack", "nack pli", "ccm fir"]
    );
    assert!(with.header_extensions.iter().all(|e| {
        e.uri != MID_URI && e.uri != ABS_SEND_TIME_URI && e.uri != TRANSPORT_WIDE_CC_URI
    }));
    assert_eq!(with.encodings.len(), 3);
    assert_eq!(with.encodings[1].rtx, Some(RtpEncodingRtx { ssrc: 2001 }));
    let without = get_pipe_consumer_rtp_parameters(&c, false, &mut counter());
    assert_eq!(without.codecs.len(), 1);
    assert_eq!(fb_list(&without.codecs[0]), vec!["nack pli", "ccm fir"]);
    assert!(without.encodings.iter().all(|e| e.rtx.is_none()));
}

#[test]
fn consumer_of_empty_consumable_cannot_consume() {
    let err = get_consumer_rtp_parameters(
        &RtpParameters::default(),
        &device_caps(),
        false,
        &mut counter(),
    )
    .expect_err("nothing to consume");
    assert!(matches!(err, OrtcError::CannotConsume { .. }));
}

#[test]
fn consumer_parameters_are_themselves_valid() {
    let p = get_consumer_rtp_parameters(&video_consumable(), &device_caps(), false, &mut counter())
        .expect("consumes");
    validate_rtp_parameters(&p).expect("valid");
}

// ---- SSRCs and SCTP ---------------------------------------------------------------------------

#[test]
fn ssrc_generator_is_deterministic_and_in_mediasoup_range() {
    let mut a = SsrcGenerator::new(42);
    let mut b = SsrcGenerator::new(42);
    let xs: Vec<u32> = (0..1000).map(|_| a.next_ssrc()).collect();
    let ys: Vec<u32> = (0..1000).map(|_| b.next_ssrc()).collect();
    assert_eq!(xs, ys);
    assert!(xs.iter().all(|x| (100_000_000..=999_999_999).contains(x)));
    let distinct: std::collections::HashSet<u32> = xs.iter().copied().collect();
    assert!(distinct.len() > 990);
    assert_ne!(
        SsrcGenerator::new(1).next_ssrc(),
        SsrcGenerator::new(2).next_ssrc()
    );
}

#[test]
fn ssrc_generator_plugs_into_the_negotiation_functions() {
    let mut g = SsrcGenerator::new(7);
    let m = get_producer_rtp_parameters_mapping(&chromium_video(), &router_caps(), &mut || {
        g.next_ssrc()
    })
    .expect("maps");
    assert!(m.encodings[0].mapped_ssrc >= 100_000_000);
}

#[test]
fn data_consumer_copies_producer_reliability_on_its_own_stream() {
    let producer = SctpStreamParameters {
        stream_id: 3,
        ordered: None,
        max_packet_life_time: None,
        max_retransmits: Some(0),
    };
    let c = get_data_consumer_sctp_stream_parameters(&producer, 9);
    assert_eq!(
        c,
        SctpStreamParameters {
            stream_id: 9,
            ordered: Some(false),
            max_packet_life_time: None,
            max_retransmits: Some(0),
        }
    );
    let reliable = SctpStreamParameters {
        stream_id: 1,
        ..Default::default()
    };
    assert_eq!(
        get_data_consumer_sctp_stream_parameters(&reliable, 2).ordered,
        Some(true)
    );
}

#[test]
fn sctp_stream_id_allocator_hands_out_the_lowest_free_id() {
    let mut a = SctpStreamIdAllocator::new(3);
    assert_eq!(a.capacity(), 3);
    assert_eq!(a.allocate(), Ok(0));
    assert_eq!(a.allocate(), Ok(1));
    assert_eq!(a.allocate(), Ok(2));
    assert_eq!(
        a.allocate(),
        Err(OrtcError::SctpStreamsExhausted { count: 3 })
    );
    assert!(a.release(1));
    assert!(!a.release(1));
    assert!(!a.is_in_use(1));
    assert_eq!(a.allocate(), Ok(1));
}

#[test]
fn sctp_stream_id_allocator_reserves_chosen_ids() {
    let mut a = SctpStreamIdAllocator::new(4);
    assert_eq!(a.reserve(0), Ok(()));
    assert!(matches!(
        a.reserve(0),
        Err(OrtcError::SctpStreamIdUnavailable { stream_id: 0, .. })
    ));
    assert!(matches!(
        a.reserve(4),
        Err(OrtcError::SctpStreamIdUnavailable { stream_id: 4, .. })
    ));
    assert_eq!(a.allocate(), Ok(1));
    assert!(!a.release(60000));
    let mut none = SctpStreamIdAllocator::new(0);
    assert_eq!(
        none.allocate(),
        Err(OrtcError::SctpStreamsExhausted { count: 0 })
    );
    let mut max = SctpStreamIdAllocator::new(u16::MAX);
    assert_eq!(max.capacity(), 65535);
    assert_eq!(max.reserve(65534), Ok(()));
    assert!(max.reserve(65535).is_err());
}

#[test]
fn sctp_stream_id_allocator_works_across_many_ids() {
    let mut a = SctpStreamIdAllocator::new(130);
    for id in 0..130 {
        assert_eq!(a.allocate(), Ok(id));
    }
    assert_eq!(
        a.allocate(),
        Err(OrtcError::SctpStreamsExhausted { count: 130 })
    );
    assert!(a.release(127));
    assert!(a.release(64));
    assert!(a.release(129));
    assert_eq!(a.allocate(), Ok(64));
    assert_eq!(a.allocate(), Ok(127));
    assert_eq!(a.allocate(), Ok(129));
    assert!(a.is_in_use(129));
    assert!(!a.is_in_use(130));
    assert!(matches!(
        a.reserve(128),
        Err(OrtcError::SctpStreamIdUnavailable { stream_id: 128, .. })
    ));
}
