//! The negotiation a router does, after mediasoup's `ortc.ts`:
//!
//! 1. [`generate_router_rtp_capabilities`]: configured codecs → router capabilities with payload
//!    types, RTX codecs and header extensions.
//! 2. [`get_producer_rtp_parameters_mapping`]: a producer's payload types and encodings → the
//!    router's payload types and fresh SSRCs. Producers may use any numbering.
//! 3. [`get_consumable_rtp_parameters`]: the producer's parameters in router numbering, the
//!    template every consumer of it is cut from.
//! 4. [`can_consume`] / [`get_consumer_rtp_parameters`]: the consumable parameters reduced to
//!    what a consumer's device supports, with one encoding and fresh SSRCs.
//!
//! Plus the SCTP side: [`get_data_consumer_sctp_stream_parameters`] and [`SctpStreamIdAllocator`].
//!
//! SSRCs come from a caller-supplied generator (`&mut impl FnMut() -> u32`) to keep the crate
//! free of randomness; [`SsrcGenerator`] is a small seedable one.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{OrtcError, path};
use crate::h264;
use crate::scalability::parse_scalability_mode;
use crate::supported::{ABS_SEND_TIME_URI, TRANSPORT_WIDE_CC_URI, supported_rtp_capabilities};
use crate::types::{
    CodecParameters, MediaKind, ParameterValue, RtcpFeedback, RtcpParameters, RtpCapabilities,
    RtpCodecCapability, RtpCodecParameters, RtpEncodingParameters, RtpEncodingRtx,
    RtpHeaderExtensionDirection, RtpHeaderExtensionParameters, RtpParameters, SctpStreamParameters,
};
use crate::validation::{
    apt_of, is_rtx_mime_type, mime_type_kind, validate_rtp_capabilities,
    validate_rtp_codec_capability_at, validate_rtp_parameters,
};

/// Dynamic payload types in allocation order, as mediasoup: 100..=127, then 96..=99.
pub fn dynamic_payload_types() -> impl Iterator<Item = u8> {
    (100..=127).chain(96..=99)
}

// ---- codec matching ---------------------------------------------------------------------------

/// The fields codec matching looks at, common to capabilities and parameters.
#[derive(Clone, Copy)]
struct CodecView<'a> {
    mime_type: &'a str,
    clock_rate: u32,
    channels: Option<u8>,
    parameters: &'a CodecParameters,
}

impl<'a> From<&'a RtpCodecCapability> for CodecView<'a> {
    fn from(c: &'a RtpCodecCapability) -> Self {
        CodecView {
            mime_type: &c.mime_type,
            clock_rate: c.clock_rate,
            channels: c.channels,
            parameters: &c.parameters,
        }
    }
}

impl<'a> From<&'a RtpCodecParameters> for CodecView<'a> {
    fn from(c: &'a RtpCodecParameters) -> Self {
        CodecView {
            mime_type: &c.mime_type,
            clock_rate: c.clock_rate,
            channels: c.channels,
            parameters: &c.parameters,
        }
    }
}

impl CodecView<'_> {
    /// Audio codecs without `channels` have one; video codecs have none.
    fn effective_channels(&self) -> Option<u8> {
        match mime_type_kind(self.mime_type) {
            Some(MediaKind::Audio) => Some(self.channels.unwrap_or(1)),
            _ => None,
        }
    }
}

/// Whether two optional parameters are equal, numerically when both are numbers, with `default`
/// standing in for an absent one.
fn same_param(
    a: Option<&ParameterValue>,
    b: Option<&ParameterValue>,
    default: Option<i64>,
) -> bool {
    let norm = |p: Option<&ParameterValue>| -> Option<Result<i64, ParameterValue>> {
        match p {
            None => default.map(Ok),
            Some(v) => Some(v.as_i64().ok_or_else(|| v.clone())),
        }
    };
    norm(a) == norm(b)
}

/// mediasoup's `matchCodecs`: same mime type (case-insensitive), clock rate and channels, plus
/// per-codec rules. With `strict`, H.264 needs the same packetization-mode (default 0) and profile
/// with a negotiable level, VP9 the same profile-id (default 0), AV1 the same profile (default 0).
/// multiopus always needs the same num_streams and coupled_streams.
fn codecs_match(a: CodecView<'_>, b: CodecView<'_>, strict: bool) -> bool {
    if !a.mime_type.eq_ignore_ascii_case(b.mime_type)
        || a.clock_rate != b.clock_rate
        || a.effective_channels() != b.effective_channels()
    {
        return false;
    }
    let mime = a.mime_type.to_ascii_lowercase();
    let (pa, pb) = (a.parameters, b.parameters);
    match mime.as_str() {
        "audio/multiopus" => {
            same_param(pa.get("num_streams"), pb.get("num_streams"), None)
                && same_param(pa.get("coupled_streams"), pb.get("coupled_streams"), None)
        }
        "video/h264" | "video/h264-svc" if strict => {
            same_param(
                pa.get("packetization-mode"),
                pb.get("packetization-mode"),
                Some(0),
            ) && h264::is_same_profile(pa, pb)
                && h264::generate_profile_level_id_for_answer(pa, pb).is_ok()
        }
        "video/vp9" if strict => same_param(pa.get("profile-id"), pb.get("profile-id"), Some(0)),
        "video/av1" if strict => same_param(pa.get("profile"), pb.get("profile"), Some(0)),
        _ => true,
    }
}

fn same_feedback(a: &RtcpFeedback, b: &RtcpFeedback) -> bool {
    a.r#type.eq_ignore_ascii_case(&b.r#type) && a.parameter_str() == b.parameter_str()
}

// ---- router capabilities ----------------------------------------------------------------------

/// Build a router's RTP capabilities from its configured media codecs.
///
/// Each configured codec must match a supported one (mime type, clock rate, channels; parameters
/// are not compared) and takes the supported codec's canonical mime type and RTCP feedback, with
/// its own parameters merged over the supported ones. Payload types: the configured
/// `preferredPayloadType` if given (reserved before anything is allocated, so ordering never
/// matters), else the supported codec's static one (PCMU 0, PCMA 8, G722 9), else the next free of
/// 100..=127, 96..=99. Each video codec is followed by a `video/rtx` codec with `apt` = its
/// payload type. Header extensions are the whole supported table.
pub fn generate_router_rtp_capabilities(
    media_codecs: &[RtpCodecCapability],
) -> Result<RtpCapabilities, OrtcError> {
    let supported = supported_rtp_capabilities();
    let mut explicit: HashSet<u8> = HashSet::new();
    for (i, codec) in media_codecs.iter().enumerate() {
        validate_rtp_codec_capability_at(codec, &format!("media_codecs[{i}]"))?;
        if let Some(pt) = codec.preferred_payload_type {
            explicit.insert(pt);
        }
    }
    let mut pool = dynamic_payload_types().filter(|pt| !explicit.contains(pt));
    let mut used: HashMap<u8, usize> = HashMap::new();
    let mut codecs = Vec::with_capacity(media_codecs.len() * 2);

    for (i, media_codec) in media_codecs.iter().enumerate() {
        let at = format!("media_codecs[{i}]");
        let Some(supported_codec) = supported
            .codecs
            .iter()
            .find(|s| codecs_match(media_codec.into(), (*s).into(), false))
        else {
            return Err(OrtcError::UnsupportedCodec {
                field: at,
                mime_type: media_codec.mime_type.clone(),
                payload_type: None,
            });
        };
        let pt = match media_codec
            .preferred_payload_type
            .or(supported_codec.preferred_payload_type)
        {
            Some(pt) => pt,
            None => pool
                .next()
                .ok_or_else(|| OrtcError::PayloadTypesExhausted { field: at.clone() })?,
        };
        if let Some(j) = used.insert(pt, i) {
            return Err(OrtcError::invalid(
                path(&at, "preferredPayloadType"),
                format!("payload type {pt} is already used by media_codecs[{j}]"),
            ));
        }
        let mut codec = supported_codec.clone();
        codec.preferred_payload_type = Some(pt);
        codec.parameters.extend(
            media_codec
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let kind = codec.kind;
        let clock_rate = codec.clock_rate;
        codecs.push(codec);

        if kind == MediaKind::Video {
            let rtx_pt = pool
                .next()
                .ok_or_else(|| OrtcError::PayloadTypesExhausted { field: at.clone() })?;
            used.insert(rtx_pt, i);
            codecs.push(RtpCodecCapability {
                kind,
                mime_type: "video/rtx".to_owned(),
                preferred_payload_type: Some(rtx_pt),
                clock_rate,
                channels: None,
                parameters: CodecParameters::from([(
                    "apt".to_owned(),
                    ParameterValue::Int(i64::from(pt)),
                )]),
                rtcp_feedback: Vec::new(),
            });
        }
    }

    Ok(RtpCapabilities {
        codecs,
        header_extensions: supported.header_extensions,
    })
}

// ---- producer mapping -------------------------------------------------------------------------

/// One producer payload type and the router's payload type for the same codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMappingCodec {
    pub payload_type: u8,
    pub mapped_payload_type: u8,
}

/// One producer encoding and the SSRC the router re-stamps its packets with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMappingEncoding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalability_mode: Option<String>,
    pub mapped_ssrc: u32,
}

/// How a producer's numbering maps to the router's (mediasoup's `RtpMapping`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMapping {
    pub codecs: Vec<RtpMappingCodec>,
    pub encodings: Vec<RtpMappingEncoding>,
}

impl RtpMapping {
    /// The router payload type for a producer payload type.
    pub fn mapped_payload_type(&self, payload_type: u8) -> Option<u8> {
        self.codecs
            .iter()
            .find(|c| c.payload_type == payload_type)
            .map(|c| c.mapped_payload_type)
    }
}

/// Map a producer's RTP parameters onto the router's capabilities.
///
/// The parameters are validated first. Every media codec must strictly match a router codec
/// (else [`OrtcError::UnsupportedCodec`]); every RTX codec must protect a media codec for which the
/// router has an RTX codec (else [`OrtcError::UnsupportedRtxCodec`]). Header extension ids do not
/// matter here. Encodings get consecutive mapped SSRCs starting at one value from `ssrc_gen`.
pub fn get_producer_rtp_parameters_mapping(
    params: &RtpParameters,
    caps: &RtpCapabilities,
    ssrc_gen: &mut impl FnMut() -> u32,
) -> Result<RtpMapping, OrtcError> {
    validate_rtp_parameters(params)?;
    if params.encodings.is_empty() {
        return Err(OrtcError::invalid(
            "encodings",
            "a producer needs at least one encoding",
        ));
    }
    let mut mapping = RtpMapping::default();

    for (i, codec) in params.codecs.iter().enumerate() {
        if is_rtx_mime_type(&codec.mime_type) {
            continue;
        }
        let matched = caps.codecs.iter().find_map(|cap| {
            let pt = cap.preferred_payload_type?;
            codecs_match(codec.into(), cap.into(), true).then_some(pt)
        });
        let Some(mapped_payload_type) = matched else {
            return Err(OrtcError::UnsupportedCodec {
                field: format!("codecs[{i}]"),
                mime_type: codec.mime_type.clone(),
                payload_type: Some(codec.payload_type),
            });
        };
        mapping.codecs.push(RtpMappingCodec {
            payload_type: codec.payload_type,
            mapped_payload_type,
        });
    }

    for (i, codec) in params.codecs.iter().enumerate() {
        if !is_rtx_mime_type(&codec.mime_type) {
            continue;
        }
        let field = format!("codecs[{i}]");
        // validate_rtp_parameters guarantees a valid apt naming a media codec of `params`, which
        // the loop above has mapped; errors are returned anyway rather than assumed away.
        let media_pt = apt_of(&codec.parameters).ok_or_else(|| {
            OrtcError::invalid(
                path(&field, "parameters.apt"),
                "missing or not a payload type",
            )
        })?;
        let router_media_pt = mapping.mapped_payload_type(media_pt).ok_or_else(|| {
            OrtcError::invalid(
                path(&field, "parameters.apt"),
                format!("no media codec has payload type {media_pt}"),
            )
        })?;
        let router_rtx_pt = caps.codecs.iter().find_map(|cap| {
            let pt = cap.preferred_payload_type?;
            (is_rtx_mime_type(&cap.mime_type) && apt_of(&cap.parameters) == Some(router_media_pt))
                .then_some(pt)
        });
        let Some(mapped_payload_type) = router_rtx_pt else {
            return Err(OrtcError::UnsupportedRtxCodec {
                field,
                payload_type: codec.payload_type,
                router_payload_type: router_media_pt,
            });
        };
        mapping.codecs.push(RtpMappingCodec {
            payload_type: codec.payload_type,
            mapped_payload_type,
        });
    }

    let base_ssrc = ssrc_gen();
    mapping.encodings = params
        .encodings
        .iter()
        .zip(0u32..)
        .map(|(e, i)| RtpMappingEncoding {
            ssrc: e.ssrc,
            rid: e.rid.clone(),
            scalability_mode: e.scalability_mode.clone(),
            mapped_ssrc: base_ssrc.wrapping_add(i),
        })
        .collect();
    Ok(mapping)
}

// ---- consumable parameters --------------------------------------------------------------------

/// Whether a header extension with this direction (router's view) may be sent to consumers.
fn router_may_send(direction: Option<RtpHeaderExtensionDirection>) -> bool {
    matches!(
        direction,
        None | Some(RtpHeaderExtensionDirection::Sendrecv | RtpHeaderExtensionDirection::Sendonly)
    )
}

/// Whether a header extension with this direction (receiving device's view) may be received.
fn device_may_receive(direction: Option<RtpHeaderExtensionDirection>) -> bool {
    matches!(
        direction,
        None | Some(RtpHeaderExtensionDirection::Sendrecv | RtpHeaderExtensionDirection::Recvonly)
    )
}

/// The producer's parameters in the router's numbering: router payload types, mime types and
/// RTCP feedback with the producer's codec parameters; the router's RTX codec after each media
/// codec that has one; every router header extension of `kind` the router may send (ids are the
/// router's); one encoding per producer encoding with its mapped SSRC (rid, rtx and
/// codecPayloadType removed); `rtcp` with the producer's cname, `reducedSize` and `mux` true.
///
/// `mapping` must come from [`get_producer_rtp_parameters_mapping`] for the same `params` and
/// `caps`; codecs or encodings it does not cover are left out rather than failing.
pub fn get_consumable_rtp_parameters(
    kind: MediaKind,
    params: &RtpParameters,
    caps: &RtpCapabilities,
    mapping: &RtpMapping,
) -> RtpParameters {
    let mut consumable = RtpParameters::default();

    for codec in &params.codecs {
        if is_rtx_mime_type(&codec.mime_type) {
            continue;
        }
        let Some(mapped) = mapping.mapped_payload_type(codec.payload_type) else {
            continue;
        };
        if consumable.codecs.iter().any(|c| c.payload_type == mapped) {
            continue;
        }
        let Some(cap) = caps
            .codecs
            .iter()
            .find(|c| c.preferred_payload_type == Some(mapped) && !is_rtx_mime_type(&c.mime_type))
        else {
            continue;
        };
        consumable.codecs.push(RtpCodecParameters {
            mime_type: cap.mime_type.clone(),
            payload_type: mapped,
            clock_rate: cap.clock_rate,
            channels: cap.channels,
            parameters: codec.parameters.clone(),
            rtcp_feedback: cap.rtcp_feedback.clone(),
        });
        let rtx = caps.codecs.iter().find_map(|c| {
            let pt = c.preferred_payload_type?;
            (is_rtx_mime_type(&c.mime_type) && apt_of(&c.parameters) == Some(mapped))
                .then_some((c, pt))
        });
        if let Some((rtx, rtx_pt)) = rtx {
            consumable.codecs.push(RtpCodecParameters {
                mime_type: rtx.mime_type.clone(),
                payload_type: rtx_pt,
                clock_rate: rtx.clock_rate,
                channels: None,
                parameters: rtx.parameters.clone(),
                rtcp_feedback: rtx.rtcp_feedback.clone(),
            });
        }
    }

    consumable.header_extensions = caps
        .header_extensions
        .iter()
        .filter(|e| e.kind.is_none_or(|k| k == kind) && router_may_send(e.direction))
        .map(|e| RtpHeaderExtensionParameters {
            uri: e.uri.clone(),
            id: e.preferred_id,
            encrypt: Some(e.preferred_encrypt.unwrap_or(false)),
            parameters: CodecParameters::new(),
        })
        .collect();

    consumable.encodings = params
        .encodings
        .iter()
        .zip(&mapping.encodings)
        .map(|(e, m)| RtpEncodingParameters {
            ssrc: Some(m.mapped_ssrc),
            rid: None,
            rtx: None,
            codec_payload_type: None,
            ..e.clone()
        })
        .collect();

    consumable.rtcp = RtcpParameters {
        cname: params.rtcp.cname.clone(),
        reduced_size: Some(true),
        mux: Some(true),
    };
    consumable
}

// ---- consumers --------------------------------------------------------------------------------

/// Whether a device with capabilities `caps` can consume: its capabilities are valid and at least
/// one media codec of the consumable parameters strictly matches one of its codecs.
pub fn can_consume(consumable: &RtpParameters, caps: &RtpCapabilities) -> Result<bool, OrtcError> {
    validate_rtp_capabilities(caps)?;
    let first_match = consumable.codecs.iter().find(|codec| {
        caps.codecs
            .iter()
            .any(|cap| codecs_match(cap.into(), (*codec).into(), true))
    });
    Ok(first_match.is_some_and(|c| !is_rtx_mime_type(&c.mime_type)))
}

/// The RTP parameters of one consumer, for a device whose receive capabilities are `caps`.
///
/// - Codecs: the consumable codecs, in their order and with the router's payload types, that
///   strictly match a device codec; RTCP feedback reduced to entries the device also lists; RTX
///   codecs kept only when the device supports RTX and their media codec is kept.
///   [`OrtcError::NoMatchingCodec`] when no media codec is left.
/// - Header extensions: consumable extensions the device lists with the same uri and id and a
///   direction it can receive (`sendrecv`, `recvonly` or none).
/// - Bandwidth estimation: with transport-wide-cc, `goog-remb` is dropped; else with
///   abs-send-time, `transport-cc` is dropped; else both are.
/// - Encodings: unless `pipe`, a single one with an SSRC from `ssrc_gen` (RTX SSRC = SSRC + 1 when
///   RTX is kept), the largest `maxBitrate` of the producer's encodings, and a scalability mode:
///   `L{N}T{t}` for N simulcast encodings with `t` temporal layers, else the producer's own mode.
///   With `pipe`, every consumable encoding is kept with consecutive fresh SSRCs.
pub fn get_consumer_rtp_parameters(
    consumable: &RtpParameters,
    caps: &RtpCapabilities,
    pipe: bool,
    ssrc_gen: &mut impl FnMut() -> u32,
) -> Result<RtpParameters, OrtcError> {
    validate_rtp_capabilities(caps)?;
    let Some(first) = consumable.codecs.first() else {
        return Err(OrtcError::CannotConsume {
            reason: "the producer has no codecs".to_owned(),
        });
    };
    let kind = mime_type_kind(&first.mime_type);

    let mut codecs: Vec<RtpCodecParameters> = Vec::new();
    for codec in &consumable.codecs {
        let Some(cap) = caps
            .codecs
            .iter()
            .find(|cap| codecs_match((*cap).into(), codec.into(), true))
        else {
            continue;
        };
        let mut codec = codec.clone();
        codec
            .rtcp_feedback
            .retain(|fb| cap.rtcp_feedback.iter().any(|c| same_feedback(c, fb)));
        codecs.push(codec);
    }
    let media_pts: HashSet<u8> = codecs
        .iter()
        .filter(|c| !is_rtx_mime_type(&c.mime_type))
        .map(|c| c.payload_type)
        .collect();
    codecs.retain(|c| {
        !is_rtx_mime_type(&c.mime_type)
            || apt_of(&c.parameters).is_some_and(|apt| media_pts.contains(&apt))
    });
    if codecs
        .first()
        .is_none_or(|c| is_rtx_mime_type(&c.mime_type))
    {
        return Err(OrtcError::NoMatchingCodec);
    }
    let rtx_supported = codecs.iter().any(|c| is_rtx_mime_type(&c.mime_type));

    let header_extensions: Vec<RtpHeaderExtensionParameters> = consumable
        .header_extensions
        .iter()
        .filter(|ext| {
            caps.header_extensions.iter().any(|cap| {
                cap.uri == ext.uri
                    && cap.preferred_id == ext.id
                    && (cap.kind.is_none() || cap.kind == kind)
                    && device_may_receive(cap.direction)
            })
        })
        .cloned()
        .collect();

    let has_ext = |uri: &str| header_extensions.iter().any(|e| e.uri == uri);
    let drop: &[&str] = if has_ext(TRANSPORT_WIDE_CC_URI) {
        &["goog-remb"]
    } else if has_ext(ABS_SEND_TIME_URI) {
        &["transport-cc"]
    } else {
        &["goog-remb", "transport-cc"]
    };
    for codec in &mut codecs {
        codec
            .rtcp_feedback
            .retain(|fb| !drop.iter().any(|d| fb.r#type.eq_ignore_ascii_case(d)));
    }

    let encodings = if pipe {
        let base = ssrc_gen();
        let rtx_base = ssrc_gen();
        consumable
            .encodings
            .iter()
            .zip(0u32..)
            .map(|(e, i)| RtpEncodingParameters {
                ssrc: Some(base.wrapping_add(i)),
                rtx: rtx_supported.then(|| RtpEncodingRtx {
                    ssrc: rtx_base.wrapping_add(i),
                }),
                ..e.clone()
            })
            .collect()
    } else {
        let ssrc = ssrc_gen();
        let producer_mode = consumable
            .encodings
            .iter()
            .find_map(|e| e.scalability_mode.as_deref());
        let scalability_mode = if consumable.encodings.len() > 1 {
            let temporal = parse_scalability_mode(producer_mode).temporal_layers;
            Some(format!("L{}T{temporal}", consumable.encodings.len()))
        } else {
            producer_mode.map(str::to_owned)
        };
        vec![RtpEncodingParameters {
            ssrc: Some(ssrc),
            rtx: rtx_supported.then(|| RtpEncodingRtx {
                ssrc: ssrc.wrapping_add(1),
            }),
            scalability_mode,
            max_bitrate: consumable
                .encodings
                .iter()
                .filter_map(|e| e.max_bitrate)
                .max(),
            ..RtpEncodingParameters::default()
        }]
    };

    Ok(RtpParameters {
        mid: None,
        codecs,
        header_extensions,
        encodings,
        rtcp: consumable.rtcp.clone(),
        msid: None,
    })
}

/// The RTP parameters of a consumer on a pipe transport (router to router): all consumable codecs
/// and encodings kept, bandwidth-estimation feedback and the mid / abs-send-time /
/// transport-wide-cc extensions removed; without `enable_rtx` also RTX codecs and plain NACK.
pub fn get_pipe_consumer_rtp_parameters(
    consumable: &RtpParameters,
    enable_rtx: bool,
    ssrc_gen: &mut impl FnMut() -> u32,
) -> RtpParameters {
    let codecs = consumable
        .codecs
        .iter()
        .filter(|c| enable_rtx || !is_rtx_mime_type(&c.mime_type))
        .map(|c| {
            let mut c = c.clone();
            c.rtcp_feedback.retain(|fb| {
                let t = fb.r#type.to_ascii_lowercase();
                let p = fb.parameter_str();
                (t == "nack" && p == "pli")
                    || (t == "ccm" && p == "fir")
                    || (enable_rtx && t == "nack" && p.is_empty())
            });
            c
        })
        .collect();
    let header_extensions = consumable
        .header_extensions
        .iter()
        .filter(|e| {
            ![
                crate::supported::MID_URI,
                ABS_SEND_TIME_URI,
                TRANSPORT_WIDE_CC_URI,
            ]
            .contains(&e.uri.as_str())
        })
        .cloned()
        .collect();
    let base = ssrc_gen();
    let rtx_base = ssrc_gen();
    let encodings = consumable
        .encodings
        .iter()
        .zip(0u32..)
        .map(|(e, i)| RtpEncodingParameters {
            ssrc: Some(base.wrapping_add(i)),
            rtx: enable_rtx.then(|| RtpEncodingRtx {
                ssrc: rtx_base.wrapping_add(i),
            }),
            ..e.clone()
        })
        .collect();
    RtpParameters {
        mid: None,
        codecs,
        header_extensions,
        encodings,
        rtcp: consumable.rtcp.clone(),
        msid: None,
    }
}

// ---- SSRCs ------------------------------------------------------------------------------------

/// A small seedable SSRC source (SplitMix64) giving values in 100_000_000..=999_999_999 like
/// mediasoup, so `ssrc + i` for a few encodings never wraps. Not cryptographic.
#[derive(Debug, Clone)]
pub struct SsrcGenerator {
    state: u64,
}

impl SsrcGenerator {
    pub fn new(seed: u64) -> Self {
        SsrcGenerator { state: seed }
    }

    /// The next SSRC.
    pub fn next_ssrc(&mut self) -> u32 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The remainder is below 900_000_000, so it fits in u32 and the sum stays below 10^9.
        100_000_000 + (z % 900_000_000) as u32
    }
}

// ---- SCTP -------------------------------------------------------------------------------------

/// Stream parameters of a data consumer fed by a data producer: the producer's reliability
/// (`ordered`, with its default filled in, `maxPacketLifeTime`, `maxRetransmits`) on the
/// consumer's own stream id.
pub fn get_data_consumer_sctp_stream_parameters(
    producer: &SctpStreamParameters,
    stream_id: u16,
) -> SctpStreamParameters {
    let partial = producer.max_packet_life_time.is_some() || producer.max_retransmits.is_some();
    SctpStreamParameters {
        stream_id,
        ordered: Some(producer.ordered.unwrap_or(!partial)),
        max_packet_life_time: producer.max_packet_life_time,
        max_retransmits: producer.max_retransmits,
    }
}

/// Hands out SCTP stream ids of one association: the lowest free id below its stream count.
///
/// One bit per stream (128 bytes for mediasoup-demo's 1024 streams), as every WebRTC transport
/// with SCTP holds one.
#[derive(Debug, Clone)]
pub struct SctpStreamIdAllocator {
    /// Bit `id % 64` of word `id / 64` is set when `id` is in use.
    in_use: Vec<u64>,
    count: u16,
}

impl SctpStreamIdAllocator {
    /// An allocator for an association with `num_streams` streams (ids `0..num_streams`; 65535 is
    /// never handed out).
    pub fn new(num_streams: u16) -> Self {
        SctpStreamIdAllocator {
            in_use: vec![0; usize::from(num_streams).div_ceil(64)],
            count: num_streams,
        }
    }

    /// How many ids the association has.
    pub fn capacity(&self) -> u16 {
        self.count
    }

    /// Take the lowest free id.
    pub fn allocate(&mut self) -> Result<u16, OrtcError> {
        let count = self.count;
        let free = self.in_use.iter().enumerate().find_map(|(word, bits)| {
            let id = word * 64 + bits.trailing_ones() as usize;
            (*bits != u64::MAX && id < usize::from(count)).then_some(id)
        });
        // `id < count`, a u16.
        match free.and_then(|id| u16::try_from(id).ok()) {
            Some(id) => {
                self.set(id, true);
                Ok(id)
            }
            None => Err(OrtcError::SctpStreamsExhausted { count }),
        }
    }

    /// Take a specific id (one a data producer chose).
    pub fn reserve(&mut self, stream_id: u16) -> Result<(), OrtcError> {
        if stream_id >= self.count {
            return Err(OrtcError::SctpStreamIdUnavailable {
                stream_id,
                reason: format!("the association has only {} streams", self.count),
            });
        }
        if self.is_in_use(stream_id) {
            return Err(OrtcError::SctpStreamIdUnavailable {
                stream_id,
                reason: "already in use".to_owned(),
            });
        }
        self.set(stream_id, true);
        Ok(())
    }

    /// Give an id back; `false` if it was not in use.
    pub fn release(&mut self, stream_id: u16) -> bool {
        let was = self.is_in_use(stream_id);
        if was {
            self.set(stream_id, false);
        }
        was
    }

    pub fn is_in_use(&self, stream_id: u16) -> bool {
        stream_id < self.count
            && self
                .in_use
                .get(usize::from(stream_id / 64))
                .is_some_and(|bits| bits & (1 << (stream_id % 64)) != 0)
    }

    /// Marks an id below `count` used or free.
    fn set(&mut self, stream_id: u16, used: bool) {
        if let Some(bits) = self.in_use.get_mut(usize::from(stream_id / 64)) {
            let bit = 1u64 << (stream_id % 64);
            if used {
                *bits |= bit;
            } else {
                *bits &= !bit;
            }
        }
    }
}
