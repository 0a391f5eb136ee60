//! Validation of capabilities and parameters received from the network.
//!
//! mediasoup's `ortc.validate*` functions check JSON types and fill in defaults; serde already
//! does the type checks here, so these functions check the *rules* and report the first broken one
//! as [`OrtcError::InvalidField`] with the JSON path of the field. Nothing here panics.
//!
//! Rules beyond mediasoup's (documented in `docs/ortc.md`):
//! - a codec's `kind` must agree with its `mimeType`; `channels` only on audio; `audio/opus`
//!   needs `channels: 2`;
//! - payload types are 0..=127 and unique within one parameter / capability set;
//! - an RTX codec needs an integer `apt` (a numeric string such as `"96"` is tolerated) and, in
//!   parameters, a media codec with that payload type;
//! - header extension ids are 1..=255 (one-byte ids are 1..=14, two-byte ones up to 255) and
//!   unique;
//! - encodings either all have a `rid` or none has; likewise `ssrc`; rids and SSRCs (RTX ones
//!   included) are unique;
//! - SCTP stream parameters use presence (not JavaScript truthiness) of `maxPacketLifeTime` and
//!   `maxRetransmits`, so `maxRetransmits: 0` counts as set.

use std::collections::HashMap;

use crate::error::{OrtcError, path};
use crate::types::{
    CodecParameters, MediaKind, ParameterValue, RtcpFeedback, RtpCapabilities, RtpCodecCapability,
    RtpCodecParameters, RtpEncodingParameters, RtpHeaderExtension, RtpHeaderExtensionParameters,
    RtpParameters, SctpCapabilities, SctpParameters, SctpStreamParameters,
};

/// Highest RTP payload type (7 bits).
pub const MAX_PAYLOAD_TYPE: u8 = 127;

/// Highest SCTP stream id a data channel may use (65535 is reserved).
pub const MAX_SCTP_STREAM_ID: u16 = 65534;

/// Media kind of a mime type `audio/<name>` or `video/<name>` (case-insensitive), if it is one.
pub fn mime_type_kind(mime_type: &str) -> Option<MediaKind> {
    let (kind, name) = mime_type.split_once('/')?;
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        return None;
    }
    if kind.eq_ignore_ascii_case("audio") {
        Some(MediaKind::Audio)
    } else if kind.eq_ignore_ascii_case("video") {
        Some(MediaKind::Video)
    } else {
        None
    }
}

/// Whether the mime type is `<kind>/rtx`.
pub fn is_rtx_mime_type(mime_type: &str) -> bool {
    mime_type
        .split_once('/')
        .is_some_and(|(_, name)| name.eq_ignore_ascii_case("rtx"))
}

/// The `apt` parameter as a payload type, if it is an integer (or numeric string) in 0..=127.
pub fn apt_of(parameters: &CodecParameters) -> Option<u8> {
    let v = match parameters.get("apt")? {
        ParameterValue::Int(i) => *i,
        ParameterValue::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u8::try_from(v).ok().filter(|pt| *pt <= MAX_PAYLOAD_TYPE)
}

fn ensure(
    ok: bool,
    field: impl FnOnce() -> String,
    reason: impl FnOnce() -> String,
) -> Result<(), OrtcError> {
    if ok {
        Ok(())
    } else {
        Err(OrtcError::invalid(field(), reason()))
    }
}

/// Validate a whole capability set (a client's or a router's).
pub fn validate_rtp_capabilities(caps: &RtpCapabilities) -> Result<(), OrtcError> {
    let mut payload_types: HashMap<u8, usize> = HashMap::new();
    for (i, codec) in caps.codecs.iter().enumerate() {
        let at = format!("codecs[{i}]");
        validate_rtp_codec_capability_at(codec, &at)?;
        if let Some(pt) = codec.preferred_payload_type
            && let Some(j) = payload_types.insert(pt, i)
        {
            return Err(OrtcError::invalid(
                path(&at, "preferredPayloadType"),
                format!("payload type {pt} is already used by codecs[{j}]"),
            ));
        }
    }
    for (i, ext) in caps.header_extensions.iter().enumerate() {
        let at = format!("headerExtensions[{i}]");
        validate_rtp_header_extension_at(ext, &at)?;
        let clash = caps.header_extensions[..i].iter().position(|other| {
            other.preferred_id == ext.preferred_id
                && other.uri != ext.uri
                && (other.kind.is_none() || ext.kind.is_none() || other.kind == ext.kind)
        });
        if let Some(j) = clash {
            return Err(OrtcError::invalid(
                path(&at, "preferredId"),
                format!(
                    "id {} is already used by headerExtensions[{j}] for another uri",
                    ext.preferred_id
                ),
            ));
        }
    }
    Ok(())
}

/// Validate one codec of a capability set.
pub fn validate_rtp_codec_capability(codec: &RtpCodecCapability) -> Result<(), OrtcError> {
    validate_rtp_codec_capability_at(codec, "")
}

pub(crate) fn validate_rtp_codec_capability_at(
    codec: &RtpCodecCapability,
    at: &str,
) -> Result<(), OrtcError> {
    let kind = validate_mime_type(&codec.mime_type, at)?;
    ensure(
        kind == codec.kind,
        || path(at, "kind"),
        || {
            format!(
                "is {:?} but mimeType {:?} is {kind}",
                codec.kind.as_str(),
                codec.mime_type
            )
        },
    )?;
    if let Some(pt) = codec.preferred_payload_type {
        validate_payload_type(pt, &path(at, "preferredPayloadType"))?;
    }
    validate_codec_common(
        at,
        kind,
        &codec.mime_type,
        codec.clock_rate,
        codec.channels,
        &codec.parameters,
        &codec.rtcp_feedback,
    )
}

/// Validate one RTCP feedback entry.
pub fn validate_rtcp_feedback(fb: &RtcpFeedback) -> Result<(), OrtcError> {
    validate_rtcp_feedback_at(fb, "")
}

fn validate_rtcp_feedback_at(fb: &RtcpFeedback, at: &str) -> Result<(), OrtcError> {
    ensure(
        !fb.r#type.trim().is_empty(),
        || path(at, "type"),
        || "must not be empty".to_owned(),
    )
}

/// Validate one header extension of a capability set.
pub fn validate_rtp_header_extension(ext: &RtpHeaderExtension) -> Result<(), OrtcError> {
    validate_rtp_header_extension_at(ext, "")
}

fn validate_rtp_header_extension_at(ext: &RtpHeaderExtension, at: &str) -> Result<(), OrtcError> {
    ensure(
        !ext.uri.trim().is_empty(),
        || path(at, "uri"),
        || "must not be empty".to_owned(),
    )?;
    validate_extension_id(ext.preferred_id, &path(at, "preferredId"))
}

/// Validate the RTP parameters of a producer or consumer.
pub fn validate_rtp_parameters(params: &RtpParameters) -> Result<(), OrtcError> {
    if let Some(mid) = &params.mid {
        ensure(
            !mid.is_empty(),
            || "mid".to_owned(),
            || "must not be empty".to_owned(),
        )?;
    }
    ensure(
        !params.codecs.is_empty(),
        || "codecs".to_owned(),
        || "at least one codec is required".to_owned(),
    )?;
    let mut kind = None;
    let mut payload_types: HashMap<u8, usize> = HashMap::new();
    for (i, codec) in params.codecs.iter().enumerate() {
        let at = format!("codecs[{i}]");
        let codec_kind = validate_rtp_codec_parameters_at(codec, &at)?;
        match kind {
            None => kind = Some(codec_kind),
            Some(k) if k != codec_kind => {
                return Err(OrtcError::invalid(
                    path(&at, "mimeType"),
                    format!("is {codec_kind} but codecs[0] is {k}; audio and video cannot mix"),
                ));
            }
            Some(_) => {}
        }
        if let Some(j) = payload_types.insert(codec.payload_type, i) {
            return Err(OrtcError::invalid(
                path(&at, "payloadType"),
                format!(
                    "payload type {} is already used by codecs[{j}]",
                    codec.payload_type
                ),
            ));
        }
    }
    // RTX codecs must protect a media codec of the same parameters.
    for (i, codec) in params.codecs.iter().enumerate() {
        if !is_rtx_mime_type(&codec.mime_type) {
            continue;
        }
        // Validated above: an RTX codec has a valid apt.
        let Some(apt) = apt_of(&codec.parameters) else {
            continue;
        };
        let protects_media = params
            .codecs
            .iter()
            .any(|c| c.payload_type == apt && !is_rtx_mime_type(&c.mime_type));
        ensure(
            protects_media,
            || format!("codecs[{i}].parameters.apt"),
            || format!("no media codec has payload type {apt}"),
        )?;
    }
    let mut ids: HashMap<u8, usize> = HashMap::new();
    for (i, ext) in params.header_extensions.iter().enumerate() {
        let at = format!("headerExtensions[{i}]");
        validate_rtp_header_extension_parameters_at(ext, &at)?;
        if let Some(j) = ids.insert(ext.id, i) {
            return Err(OrtcError::invalid(
                path(&at, "id"),
                format!("id {} is already used by headerExtensions[{j}]", ext.id),
            ));
        }
    }
    validate_rtp_encoding_parameters(&params.encodings)?;
    for (i, encoding) in params.encodings.iter().enumerate() {
        if let Some(pt) = encoding.codec_payload_type {
            ensure(
                payload_types.contains_key(&pt),
                || format!("encodings[{i}].codecPayloadType"),
                || format!("no codec has payload type {pt}"),
            )?;
        }
    }
    Ok(())
}

/// Validate the RTP parameters of a producer of the given kind: [`validate_rtp_parameters`], plus
/// every codec of that kind and at least one encoding.
pub fn validate_producer_rtp_parameters(
    kind: MediaKind,
    params: &RtpParameters,
) -> Result<(), OrtcError> {
    validate_rtp_parameters(params)?;
    for (i, codec) in params.codecs.iter().enumerate() {
        ensure(
            mime_type_kind(&codec.mime_type) == Some(kind),
            || format!("codecs[{i}].mimeType"),
            || format!("{:?} is not a {kind} codec", codec.mime_type),
        )?;
    }
    ensure(
        !params.encodings.is_empty(),
        || "encodings".to_owned(),
        || "a producer needs at least one encoding".to_owned(),
    )
}

/// Validate one codec of RTP parameters.
pub fn validate_rtp_codec_parameters(codec: &RtpCodecParameters) -> Result<(), OrtcError> {
    validate_rtp_codec_parameters_at(codec, "").map(|_| ())
}

fn validate_rtp_codec_parameters_at(
    codec: &RtpCodecParameters,
    at: &str,
) -> Result<MediaKind, OrtcError> {
    let kind = validate_mime_type(&codec.mime_type, at)?;
    validate_payload_type(codec.payload_type, &path(at, "payloadType"))?;
    validate_codec_common(
        at,
        kind,
        &codec.mime_type,
        codec.clock_rate,
        codec.channels,
        &codec.parameters,
        &codec.rtcp_feedback,
    )?;
    Ok(kind)
}

fn validate_rtp_header_extension_parameters_at(
    ext: &RtpHeaderExtensionParameters,
    at: &str,
) -> Result<(), OrtcError> {
    ensure(
        !ext.uri.trim().is_empty(),
        || path(at, "uri"),
        || "must not be empty".to_owned(),
    )?;
    validate_extension_id(ext.id, &path(at, "id"))
}

/// Whether a rid follows RFC 8851's `rid-id` syntax (letters, digits, `-`, `_`), at most 255 bytes.
fn is_valid_rid(rid: &str) -> bool {
    !rid.is_empty()
        && rid.len() <= 255
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Validate the encodings of one RTP parameter set, each on its own and across each other.
pub fn validate_rtp_encoding_parameters(
    encodings: &[RtpEncodingParameters],
) -> Result<(), OrtcError> {
    let mut rids: HashMap<&str, usize> = HashMap::new();
    let mut ssrcs: HashMap<u32, String> = HashMap::new();
    for (i, e) in encodings.iter().enumerate() {
        let at = format!("encodings[{i}]");
        if let Some(rid) = &e.rid {
            ensure(
                is_valid_rid(rid),
                || path(&at, "rid"),
                || "must be 1..=255 letters, digits, '-' or '_'".to_owned(),
            )?;
            if let Some(j) = rids.insert(rid, i) {
                return Err(OrtcError::invalid(
                    path(&at, "rid"),
                    format!("rid {rid:?} is already used by encodings[{j}]"),
                ));
            }
        }
        let own = [
            e.ssrc.map(|s| (s, path(&at, "ssrc"))),
            e.rtx.map(|r| (r.ssrc, path(&at, "rtx.ssrc"))),
        ];
        for (ssrc, field) in own.into_iter().flatten() {
            if let Some(other) = ssrcs.insert(ssrc, field.clone()) {
                return Err(OrtcError::invalid(
                    field,
                    format!("ssrc {ssrc} is already used by {other}"),
                ));
            }
        }
        if let Some(f) = e.scale_resolution_down_by {
            ensure(
                f.is_finite() && f >= 1.0,
                || path(&at, "scaleResolutionDownBy"),
                || format!("must be at least 1.0, not {f}"),
            )?;
        }
        if let Some(f) = e.max_framerate {
            ensure(
                f.is_finite() && f >= 0.0,
                || path(&at, "maxFramerate"),
                || format!("must not be negative, not {f}"),
            )?;
        }
    }
    if encodings.len() > 1 {
        let with_rid = encodings.iter().filter(|e| e.rid.is_some()).count();
        let with_ssrc = encodings.iter().filter(|e| e.ssrc.is_some()).count();
        if with_rid != 0 && with_rid != encodings.len() {
            let i = encodings.iter().position(|e| e.rid.is_none()).unwrap_or(0);
            return Err(OrtcError::invalid(
                format!("encodings[{i}].rid"),
                "missing while other encodings have one; either all encodings have a rid or none",
            ));
        }
        if with_ssrc != 0 && with_ssrc != encodings.len() {
            let i = encodings.iter().position(|e| e.ssrc.is_none()).unwrap_or(0);
            return Err(OrtcError::invalid(
                format!("encodings[{i}].ssrc"),
                "missing while other encodings have one; either all encodings have an ssrc or none",
            ));
        }
        ensure(
            with_rid != 0 || with_ssrc != 0,
            || "encodings".to_owned(),
            || "several encodings need a rid or an ssrc each to tell them apart".to_owned(),
        )?;
    }
    Ok(())
}

/// Validate SCTP capabilities: `OS` and `MIS` in 1..=65535.
pub fn validate_sctp_capabilities(caps: &SctpCapabilities) -> Result<(), OrtcError> {
    ensure(
        caps.num_streams.os >= 1,
        || "numStreams.OS".to_owned(),
        || "must be in 1..=65535".to_owned(),
    )?;
    ensure(
        caps.num_streams.mis >= 1,
        || "numStreams.MIS".to_owned(),
        || "must be in 1..=65535".to_owned(),
    )
}

/// Validate SCTP association parameters: `OS`, `MIS` and `maxMessageSize` non-zero.
pub fn validate_sctp_parameters(params: &SctpParameters) -> Result<(), OrtcError> {
    ensure(
        params.os >= 1,
        || "OS".to_owned(),
        || "must be in 1..=65535".to_owned(),
    )?;
    ensure(
        params.mis >= 1,
        || "MIS".to_owned(),
        || "must be in 1..=65535".to_owned(),
    )?;
    ensure(
        params.max_message_size >= 1,
        || "maxMessageSize".to_owned(),
        || "must not be 0".to_owned(),
    )
}

/// Validate the parameters of one SCTP stream and return them with `ordered` filled in: `true`
/// when neither `maxPacketLifeTime` nor `maxRetransmits` is set, `false` when one is.
///
/// Rejected: `streamId` 65535; both `maxPacketLifeTime` and `maxRetransmits`; `ordered: true`
/// with either of them.
pub fn validate_sctp_stream_parameters(
    params: &SctpStreamParameters,
) -> Result<SctpStreamParameters, OrtcError> {
    ensure(
        params.stream_id <= MAX_SCTP_STREAM_ID,
        || "streamId".to_owned(),
        || format!("must be in 0..={MAX_SCTP_STREAM_ID}"),
    )?;
    let partial = params.max_packet_life_time.is_some() || params.max_retransmits.is_some();
    ensure(
        !(params.max_packet_life_time.is_some() && params.max_retransmits.is_some()),
        || "maxRetransmits".to_owned(),
        || "cannot be given together with maxPacketLifeTime".to_owned(),
    )?;
    ensure(
        !(partial && params.ordered == Some(true)),
        || "ordered".to_owned(),
        || "cannot be true with maxPacketLifeTime or maxRetransmits".to_owned(),
    )?;
    let mut normalized = params.clone();
    normalized.ordered = Some(params.ordered.unwrap_or(!partial));
    Ok(normalized)
}

// ---- shared pieces ----------------------------------------------------------------------------

fn validate_mime_type(mime_type: &str, at: &str) -> Result<MediaKind, OrtcError> {
    mime_type_kind(mime_type).ok_or_else(|| {
        OrtcError::invalid(
            path(at, "mimeType"),
            format!("{mime_type:?} is not \"audio/<name>\" or \"video/<name>\""),
        )
    })
}

fn validate_payload_type(pt: u8, field: &str) -> Result<(), OrtcError> {
    ensure(
        pt <= MAX_PAYLOAD_TYPE,
        || field.to_owned(),
        || format!("{pt} is not in 0..=127"),
    )
}

fn validate_extension_id(id: u8, field: &str) -> Result<(), OrtcError> {
    ensure(
        id != 0,
        || field.to_owned(),
        || "must be in 1..=255".to_owned(),
    )
}

fn validate_codec_common(
    at: &str,
    kind: MediaKind,
    mime_type: &str,
    clock_rate: u32,
    channels: Option<u8>,
    parameters: &CodecParameters,
    rtcp_feedback: &[RtcpFeedback],
) -> Result<(), OrtcError> {
    ensure(
        clock_rate > 0,
        || path(at, "clockRate"),
        || "must not be 0".to_owned(),
    )?;
    match (kind, channels) {
        (MediaKind::Video, Some(_)) => {
            return Err(OrtcError::invalid(
                path(at, "channels"),
                "only audio codecs have channels",
            ));
        }
        (MediaKind::Audio, Some(0)) => {
            return Err(OrtcError::invalid(path(at, "channels"), "must not be 0"));
        }
        _ => {}
    }
    if mime_type.eq_ignore_ascii_case("audio/opus") {
        ensure(
            channels == Some(2),
            || path(at, "channels"),
            || "audio/opus is always negotiated with channels: 2".to_owned(),
        )?;
    }
    for key in parameters.keys() {
        ensure(
            !key.is_empty(),
            || path(at, "parameters"),
            || "parameter names must not be empty".to_owned(),
        )?;
    }
    let apt_field = || path(at, "parameters.apt");
    match parameters.get("apt") {
        Some(_) => ensure(apt_of(parameters).is_some(), apt_field, || {
            "must be an integer payload type in 0..=127".to_owned()
        })?,
        None => ensure(!is_rtx_mime_type(mime_type), apt_field, || {
            "an RTX codec needs the apt parameter".to_owned()
        })?,
    }
    for (k, fb) in rtcp_feedback.iter().enumerate() {
        validate_rtcp_feedback_at(fb, &path(at, &format!("rtcpFeedback[{k}]")))?;
    }
    Ok(())
}
