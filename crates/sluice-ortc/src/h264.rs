//! H.264 `profile-level-id` (RFC 6184 §8.1): parsing, profile comparison and the profile-level-id
//! of an answer, with the behaviour of libwebrtc and mediasoup's `h264-profile-level-id` package.
//!
//! A `profile-level-id` is three bytes in hex: `profile_idc`, `profile_iop` (the constraint set
//! flags) and `level_idc`. Codecs are compatible when they have the same *profile*; levels may
//! differ and are negotiated by [`generate_profile_level_id_for_answer`].

use crate::types::{CodecParameters, ParameterValue};

/// The H.264 profiles WebRTC knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum H264Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
    PredictiveHigh444,
}

/// An H.264 level, by its `level_idc` (`31` is level 3.1). Level 1b, which the bitstream writes
/// as `level_idc` 11 with constraint_set3, is [`H264Level::L1B`] (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct H264Level(u8);

impl H264Level {
    pub const L1B: H264Level = H264Level(0);
    pub const L3_1: H264Level = H264Level(31);

    const KNOWN: [u8; 16] = [
        10, 11, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52,
    ];

    /// The level for a `level_idc`, if it is one of the levels of ITU-T H.264 Table A-1 up to 5.2.
    pub fn from_level_idc(level_idc: u8) -> Option<H264Level> {
        Self::KNOWN
            .contains(&level_idc)
            .then_some(H264Level(level_idc))
    }

    /// `level_idc` (0 for level 1b).
    pub fn level_idc(self) -> u8 {
        self.0
    }

    /// Level order, where 1b sits between 1 and 1.1. (libwebrtc's `IsLessLevel` answers "1.1 <
    /// 1b" with true; this does not copy that slip.)
    fn is_less_than(self, other: H264Level) -> bool {
        const L1: H264Level = H264Level(10);
        if self == H264Level::L1B {
            return other != L1 && other != H264Level::L1B;
        }
        if other == H264Level::L1B {
            return self == L1;
        }
        self.0 < other.0
    }

    fn min(self, other: H264Level) -> H264Level {
        if self.is_less_than(other) {
            self
        } else {
            other
        }
    }
}

/// A parsed `profile-level-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileLevelId {
    pub profile: H264Profile,
    pub level: H264Level,
}

/// The value used when `profile-level-id` is absent. RFC 6184 says Baseline level 1, but
/// libwebrtc (and so mediasoup) uses Constrained Baseline 3.1 (`42e01f`) for compatibility.
pub const DEFAULT_PROFILE_LEVEL_ID: ProfileLevelId = ProfileLevelId {
    profile: H264Profile::ConstrainedBaseline,
    level: H264Level::L3_1,
};

/// `(profile_idc, profile_iop pattern, profile)`; in the pattern `x` is "either bit".
const PROFILE_PATTERNS: [(u8, &str, H264Profile); 9] = [
    (0x42, "x1xx0000", H264Profile::ConstrainedBaseline),
    (0x4d, "1xxx0000", H264Profile::ConstrainedBaseline),
    (0x58, "11xx0000", H264Profile::ConstrainedBaseline),
    (0x42, "x0xx0000", H264Profile::Baseline),
    (0x58, "10xx0000", H264Profile::Baseline),
    (0x4d, "0x0x0000", H264Profile::Main),
    (0x64, "00000000", H264Profile::High),
    (0x64, "00001100", H264Profile::ConstrainedHigh),
    (0xf4, "00000000", H264Profile::PredictiveHigh444),
];

fn bit_pattern_matches(pattern: &str, value: u8) -> bool {
    pattern.bytes().enumerate().all(|(i, c)| {
        let bit = (value >> (7 - i)) & 1;
        match c {
            b'0' => bit == 0,
            b'1' => bit == 1,
            _ => true,
        }
    })
}

/// Parse three hex bytes such as `"42e01f"`. `None` for anything that is not exactly six hex digits
/// of a known profile and level.
pub fn parse_profile_level_id(s: &str) -> Option<ProfileLevelId> {
    const CONSTRAINT_SET3_FLAG: u8 = 0x10;
    if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let numeric = u32::from_str_radix(s, 16).ok()?;
    if numeric == 0 {
        return None;
    }
    let [_, profile_idc, profile_iop, level_idc] = numeric.to_be_bytes();
    let level = if level_idc == 11 && profile_iop & CONSTRAINT_SET3_FLAG != 0 {
        H264Level::L1B
    } else {
        H264Level::from_level_idc(level_idc)?
    };
    PROFILE_PATTERNS
        .iter()
        .find(|(idc, pattern, _)| *idc == profile_idc && bit_pattern_matches(pattern, profile_iop))
        .map(|&(_, _, profile)| ProfileLevelId { profile, level })
}

/// The canonical three-hex-byte string, or `None` for level 1b in a profile that has no 1b.
pub fn profile_level_id_to_string(id: ProfileLevelId) -> Option<String> {
    if id.level == H264Level::L1B {
        return match id.profile {
            H264Profile::ConstrainedBaseline => Some("42f00b".to_owned()),
            H264Profile::Baseline => Some("42100b".to_owned()),
            H264Profile::Main => Some("4d100b".to_owned()),
            _ => None,
        };
    }
    let idc_iop = match id.profile {
        H264Profile::ConstrainedBaseline => "42e0",
        H264Profile::Baseline => "4200",
        H264Profile::Main => "4d00",
        H264Profile::ConstrainedHigh => "640c",
        H264Profile::High => "6400",
        H264Profile::PredictiveHigh444 => "f400",
    };
    Some(format!("{idc_iop}{:02x}", id.level.0))
}

/// The raw `profile-level-id` of codec parameters as a string. A value that arrived as a JSON
/// number (SDP parsers turn `640032` into one) is read back as its decimal digits.
fn profile_level_id_param(params: &CodecParameters) -> Option<Result<String, ()>> {
    params.get("profile-level-id").map(|v| match v {
        ParameterValue::String(s) => Ok(s.clone()),
        ParameterValue::Int(i) => Ok(i.to_string()),
        _ => Err(()),
    })
}

/// The profile-level-id of codec parameters: the default when absent, `None` when present but
/// invalid.
pub fn parse_sdp_profile_level_id(params: &CodecParameters) -> Option<ProfileLevelId> {
    match profile_level_id_param(params) {
        None => Some(DEFAULT_PROFILE_LEVEL_ID),
        Some(Ok(s)) => parse_profile_level_id(&s),
        Some(Err(())) => None,
    }
}

/// Whether both parameter sets have a valid profile-level-id of the same profile (levels ignored).
pub fn is_same_profile(a: &CodecParameters, b: &CodecParameters) -> bool {
    match (parse_sdp_profile_level_id(a), parse_sdp_profile_level_id(b)) {
        (Some(a), Some(b)) => a.profile == b.profile,
        _ => false,
    }
}

/// `level-asymmetry-allowed=1`.
pub fn is_level_asymmetry_allowed(params: &CodecParameters) -> bool {
    params
        .get("level-asymmetry-allowed")
        .and_then(ParameterValue::as_i64)
        == Some(1)
}

/// Why no answer profile-level-id could be generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264AnswerError {
    InvalidLocalProfileLevelId,
    InvalidRemoteProfileLevelId,
    ProfileMismatch,
}

/// The profile-level-id to put in an answer, from the local (supported) and remote (offered)
/// parameters, which must be of the same profile. `Ok(None)` when neither side has one (both use
/// the default). The answer level is the local level when both allow level asymmetry, otherwise
/// the lower of the two.
pub fn generate_profile_level_id_for_answer(
    local: &CodecParameters,
    remote: &CodecParameters,
) -> Result<Option<String>, H264AnswerError> {
    if profile_level_id_param(local).is_none() && profile_level_id_param(remote).is_none() {
        return Ok(None);
    }
    let local_id =
        parse_sdp_profile_level_id(local).ok_or(H264AnswerError::InvalidLocalProfileLevelId)?;
    let remote_id =
        parse_sdp_profile_level_id(remote).ok_or(H264AnswerError::InvalidRemoteProfileLevelId)?;
    if local_id.profile != remote_id.profile {
        return Err(H264AnswerError::ProfileMismatch);
    }
    let asymmetry = is_level_asymmetry_allowed(local) && is_level_asymmetry_allowed(remote);
    let level = if asymmetry {
        local_id.level
    } else {
        local_id.level.min(remote_id.level)
    };
    Ok(profile_level_id_to_string(ProfileLevelId {
        profile: local_id.profile,
        level,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, ParameterValue)]) -> CodecParameters {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn common_profile_level_ids_parse_to_their_profiles() {
        let cases = [
            ("42e01f", H264Profile::ConstrainedBaseline, 31),
            ("42001f", H264Profile::Baseline, 31),
            ("4d001f", H264Profile::Main, 31),
            ("4d0032", H264Profile::Main, 50),
            ("640c1f", H264Profile::ConstrainedHigh, 31),
            ("640032", H264Profile::High, 50),
            ("f4001f", H264Profile::PredictiveHigh444, 31),
            ("58C01E", H264Profile::ConstrainedBaseline, 30),
            ("58A01E", H264Profile::Baseline, 30),
            ("4de01f", H264Profile::ConstrainedBaseline, 31),
        ];
        for (s, profile, level) in cases {
            let id = parse_profile_level_id(s).unwrap_or_else(|| panic!("{s} should parse"));
            assert_eq!(id.profile, profile, "{s}");
            assert_eq!(id.level.level_idc(), level, "{s}");
        }
    }

    #[test]
    fn level_1b_is_recognised_by_the_constraint_set3_flag() {
        assert_eq!(
            parse_profile_level_id("42f00b").map(|i| i.level),
            Some(H264Level::L1B)
        );
        assert_eq!(
            parse_profile_level_id("42e00b").map(|i| i.level.level_idc()),
            Some(11)
        );
    }

    #[test]
    fn malformed_profile_level_ids_are_rejected() {
        for s in [
            "", "42e01", "42e01f0", "000000", "42e0zz", "+42e01", "42e0ff", "650c1f", "64001",
            "é2e01f",
        ] {
            assert_eq!(parse_profile_level_id(s), None, "{s:?}");
        }
    }

    #[test]
    fn to_string_round_trips_canonical_values() {
        for s in [
            "42e01f", "42001f", "4d0032", "640c1f", "640034", "f4001f", "42f00b", "4d100b",
        ] {
            let id = parse_profile_level_id(s).expect("valid");
            assert_eq!(profile_level_id_to_string(id).as_deref(), Some(s));
        }
        let high_1b = ProfileLevelId {
            profile: H264Profile::High,
            level: H264Level::L1B,
        };
        assert_eq!(profile_level_id_to_string(high_1b), None);
    }

    #[test]
    fn absent_profile_level_id_means_constrained_baseline_3_1() {
        assert_eq!(
            parse_sdp_profile_level_id(&CodecParameters::new()),
            Some(DEFAULT_PROFILE_LEVEL_ID)
        );
        assert!(is_same_profile(
            &CodecParameters::new(),
            &params(&[("profile-level-id", "42e01f".into())])
        ));
    }

    #[test]
    fn numeric_profile_level_id_is_read_as_hex_digits() {
        let p = params(&[("profile-level-id", ParameterValue::Int(640032))]);
        assert_eq!(
            parse_sdp_profile_level_id(&p).map(|i| i.profile),
            Some(H264Profile::High)
        );
    }

    #[test]
    fn different_profiles_are_not_the_same_profile() {
        let cb = params(&[("profile-level-id", "42e01f".into())]);
        let high = params(&[("profile-level-id", "640032".into())]);
        let cb_other_level = params(&[("profile-level-id", "42e034".into())]);
        assert!(!is_same_profile(&cb, &high));
        assert!(is_same_profile(&cb, &cb_other_level));
        let bad = params(&[("profile-level-id", "zzzzzz".into())]);
        assert!(!is_same_profile(&bad, &bad));
    }

    #[test]
    fn answer_uses_local_level_with_asymmetry_and_the_minimum_without() {
        let local = params(&[
            ("profile-level-id", "42e034".into()),
            ("level-asymmetry-allowed", ParameterValue::Int(1)),
        ]);
        let remote_sym = params(&[("profile-level-id", "42e01f".into())]);
        let remote_asym = params(&[
            ("profile-level-id", "42e01f".into()),
            ("level-asymmetry-allowed", "1".into()),
        ]);
        assert_eq!(
            generate_profile_level_id_for_answer(&local, &remote_sym),
            Ok(Some("42e01f".to_owned()))
        );
        assert_eq!(
            generate_profile_level_id_for_answer(&local, &remote_asym),
            Ok(Some("42e034".to_owned()))
        );
    }

    #[test]
    fn answer_is_none_when_neither_side_has_a_profile_level_id() {
        assert_eq!(
            generate_profile_level_id_for_answer(&CodecParameters::new(), &CodecParameters::new()),
            Ok(None)
        );
    }

    #[test]
    fn answer_fails_on_profile_mismatch_or_garbage() {
        let cb = params(&[("profile-level-id", "42e01f".into())]);
        let high = params(&[("profile-level-id", "640032".into())]);
        let bad = params(&[("profile-level-id", ParameterValue::Bool(true))]);
        assert_eq!(
            generate_profile_level_id_for_answer(&cb, &high),
            Err(H264AnswerError::ProfileMismatch)
        );
        assert_eq!(
            generate_profile_level_id_for_answer(&bad, &cb),
            Err(H264AnswerError::InvalidLocalProfileLevelId)
        );
        assert_eq!(
            generate_profile_level_id_for_answer(&cb, &bad),
            Err(H264AnswerError::InvalidRemoteProfileLevelId)
        );
    }

    #[test]
    fn level_1b_orders_between_1_and_1_1() {
        let l1 = H264Level(10);
        let l1_1 = H264Level(11);
        assert_eq!(H264Level::L1B.min(l1), l1);
        assert_eq!(H264Level::L1B.min(l1_1), H264Level::L1B);
        assert_eq!(l1_1.min(H264Level::L1B), H264Level::L1B);
    }
}
