//! Arbitrary (seeded pseudo-random) input never makes the crate panic.

mod common;

use common::*;
use sluice_ortc::*;

struct Rng(SsrcGenerator);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0.next_ssrc() % n.max(1)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u32) as usize]
    }
    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }
}

fn random_value(r: &mut Rng) -> ParameterValue {
    match r.below(5) {
        0 => ParameterValue::Int(i64::from(r.below(300)) - 20),
        1 => ParameterValue::from(r.pick(&["42e01f", "640032", "zz", "", "96", "L1T3", "é"])),
        2 => ParameterValue::Bool(r.coin()),
        3 => ParameterValue::Float(f64::from(r.below(100)) / 3.0),
        _ => ParameterValue::Int(i64::MAX),
    }
}

fn random_params(r: &mut Rng) -> CodecParameters {
    let keys = [
        "apt",
        "packetization-mode",
        "profile-level-id",
        "level-asymmetry-allowed",
        "profile-id",
        "profile",
        "num_streams",
        "coupled_streams",
        "x",
    ];
    (0..r.below(4))
        .map(|_| (r.pick(&keys).to_owned(), random_value(r)))
        .collect()
}

fn random_codec(r: &mut Rng) -> RtpCodecParameters {
    let mimes = [
        "audio/opus",
        "video/VP8",
        "video/rtx",
        "audio/rtx",
        "video/H264",
        "video/VP9",
        "video/AV1",
        "audio/multiopus",
        "audio/PCMU",
        "video/",
        "x",
        "",
    ];
    RtpCodecParameters {
        mime_type: r.pick(&mimes).to_owned(),
        payload_type: r.below(256) as u8,
        clock_rate: [0, 8000, 48000, 90000][r.below(4) as usize],
        channels: if r.coin() {
            None
        } else {
            Some(r.below(9) as u8)
        },
        parameters: random_params(r),
        rtcp_feedback: (0..r.below(3))
            .map(|_| {
                RtcpFeedback::new(
                    r.pick(&["nack", "", "transport-cc", "goog-remb"]),
                    r.pick(&["", "pli"]),
                )
            })
            .collect(),
    }
}

fn random_rtp_parameters(r: &mut Rng) -> RtpParameters {
    let mut p = RtpParameters {
        codecs: (0..r.below(4)).map(|_| random_codec(r)).collect(),
        ..Default::default()
    };
    p.header_extensions = (0..r.below(4))
        .map(|_| RtpHeaderExtensionParameters {
            uri: r
                .pick(&[
                    supported::MID_URI,
                    supported::TRANSPORT_WIDE_CC_URI,
                    "",
                    "urn:x",
                ])
                .to_owned(),
            id: r.below(256) as u8,
            encrypt: None,
            parameters: CodecParameters::new(),
        })
        .collect();
    p.encodings = (0..r.below(4))
        .map(|_| RtpEncodingParameters {
            ssrc: r.coin().then(|| r.below(5)),
            rid: r
                .coin()
                .then(|| r.pick(&["r0", "r1", "", "a b"]).to_owned()),
            rtx: r.coin().then(|| RtpEncodingRtx { ssrc: r.below(5) }),
            scalability_mode: r
                .coin()
                .then(|| r.pick(&["L1T3", "L3T3_KEY", "S2T9", "L0T0", ""]).to_owned()),
            max_bitrate: r.coin().then(|| r.below(u32::MAX)),
            ..Default::default()
        })
        .collect();
    p
}

#[test]
fn random_parameters_and_capabilities_never_panic() {
    let router = router_caps();
    let mut r = Rng(SsrcGenerator::new(0x5eed));
    let mut mapped = 0;
    for _ in 0..5_000 {
        let p = random_rtp_parameters(&mut r);
        let _ = validate_rtp_parameters(&p);
        let kind = if r.coin() {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let mut ssrc = || u32::MAX - 1;
        if let Ok(m) = get_producer_rtp_parameters_mapping(&p, &router, &mut ssrc) {
            mapped += 1;
            let c = get_consumable_rtp_parameters(kind, &p, &router, &m);
            let _ = can_consume(&c, &device_caps());
            let _ = get_consumer_rtp_parameters(&c, &device_caps(), r.coin(), &mut ssrc);
            let _ = get_pipe_consumer_rtp_parameters(&c, r.coin(), &mut ssrc);
        }
        // Random "device capabilities" made of the same random codecs.
        let caps = RtpCapabilities {
            codecs: p
                .codecs
                .iter()
                .map(|c| RtpCodecCapability {
                    kind,
                    mime_type: c.mime_type.clone(),
                    preferred_payload_type: Some(c.payload_type),
                    clock_rate: c.clock_rate,
                    channels: c.channels,
                    parameters: c.parameters.clone(),
                    rtcp_feedback: c.rtcp_feedback.clone(),
                })
                .collect(),
            header_extensions: vec![],
        };
        let _ = generate_router_rtp_capabilities(&caps.codecs);
        let consumable = consumable_of(MediaKind::Video, &chromium_video(), &router);
        let _ = can_consume(&consumable, &caps);
        let _ = get_consumer_rtp_parameters(&consumable, &caps, false, &mut ssrc);
        let _ = get_consumer_rtp_parameters(&p, &router, r.coin(), &mut ssrc);
    }
    assert!(mapped > 0, "some random producers should map");
}
