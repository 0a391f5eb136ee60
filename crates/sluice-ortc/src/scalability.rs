//! Scalability modes (`L3T3`, `L1T3`, `S3T3`, `L2T2_KEY`, `L1T3h`…), as mediasoup parses them:
//! `^[LS]([1-9]\d?)T([1-9]\d?)(_KEY)?` with anything after ignored, and 1 spatial / 1 temporal layer
//! for absent or unparsable input.

/// Layers described by a scalability mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScalabilityMode {
    pub spatial_layers: u8,
    pub temporal_layers: u8,
    /// K-SVC (`_KEY`): spatial layers depend on each other only on key frames.
    pub ksvc: bool,
}

impl Default for ScalabilityMode {
    fn default() -> Self {
        ScalabilityMode {
            spatial_layers: 1,
            temporal_layers: 1,
            ksvc: false,
        }
    }
}

/// A 1..=99 number with no leading zero at the start of `s`, and the rest of `s`.
fn layer_count(s: &[u8]) -> Option<(u8, &[u8])> {
    let first = *s.first()?;
    if !(b'1'..=b'9').contains(&first) {
        return None;
    }
    let mut n = first - b'0';
    let mut rest = &s[1..];
    if let Some(&d) = rest.first()
        && d.is_ascii_digit()
    {
        n = n * 10 + (d - b'0');
        rest = &rest[1..];
    }
    Some((n, rest))
}

/// Most spatial layers a producer's scalability mode may declare: the W3C webrtc-svc modes go
/// to three (`L3T3`, `S3T3`, `L3T3_KEY`).
pub const MAX_SPATIAL_LAYERS: u8 = 3;

/// Most temporal layers a producer's scalability mode may declare: libwebrtc's VP8 encoder makes
/// up to four (webrtc-svc's modes go to `T3`).
pub const MAX_TEMPORAL_LAYERS: u8 = 4;

/// A producer's scalability mode, strictly: the whole of `[LS]<spatial>T<temporal>` followed
/// by nothing but `h`, `_KEY` and `_SHIFT` in that order (mediasoup's
/// `[LS](\d+)T(\d+)(_KEY)?(_SHIFT)?` and webrtc-svc's `h` modes), with at most
/// [`MAX_SPATIAL_LAYERS`] and [`MAX_TEMPORAL_LAYERS`]. [`parse_scalability_mode`] reads anything
/// leniently; this is for input the server accepts and relays, so `L99T99` or a mode with a
/// tail of garbage is refused rather than defaulted or passed on.
pub fn validate_scalability_mode(mode: &str) -> Result<ScalabilityMode, String> {
    let bad = || {
        format!(
            "{:?} is not a scalability mode like L1T3, L3T3_KEY or S2T1h",
            truncated(mode)
        )
    };
    let bytes = mode.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return Err(bad());
    };
    if first != b'L' && first != b'S' {
        return Err(bad());
    }
    let (spatial_layers, rest) = layer_count(rest).ok_or_else(bad)?;
    let rest = rest.strip_prefix(b"T").ok_or_else(bad)?;
    let (temporal_layers, rest) = layer_count(rest).ok_or_else(bad)?;
    let rest = rest.strip_prefix(b"h").unwrap_or(rest);
    let (ksvc, rest) = match rest.strip_prefix(b"_KEY") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let rest = rest.strip_prefix(b"_SHIFT").unwrap_or(rest);
    if !rest.is_empty() {
        return Err(bad());
    }
    if spatial_layers > MAX_SPATIAL_LAYERS || temporal_layers > MAX_TEMPORAL_LAYERS {
        return Err(format!(
            "{mode:?} has {spatial_layers} spatial and {temporal_layers} temporal layers; at most \
             {MAX_SPATIAL_LAYERS} and {MAX_TEMPORAL_LAYERS} are supported"
        ));
    }
    Ok(ScalabilityMode {
        spatial_layers,
        temporal_layers,
        ksvc,
    })
}

/// At most the first 32 characters of `s`, for an error message about hostile input.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Parse a scalability mode; the default (1/1) when absent or malformed.
pub fn parse_scalability_mode(mode: Option<&str>) -> ScalabilityMode {
    mode.and_then(try_parse).unwrap_or_default()
}

fn try_parse(mode: &str) -> Option<ScalabilityMode> {
    let bytes = mode.as_bytes();
    let (&first, rest) = bytes.split_first()?;
    if first != b'L' && first != b'S' {
        return None;
    }
    let (spatial_layers, rest) = layer_count(rest)?;
    let rest = rest.strip_prefix(b"T")?;
    let (temporal_layers, rest) = layer_count(rest)?;
    Some(ScalabilityMode {
        spatial_layers,
        temporal_layers,
        ksvc: rest.starts_with(b"_KEY"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(s: u8, t: u8, ksvc: bool) -> ScalabilityMode {
        ScalabilityMode {
            spatial_layers: s,
            temporal_layers: t,
            ksvc,
        }
    }

    #[test]
    fn plain_modes_parse() {
        assert_eq!(parse_scalability_mode(Some("L1T3")), sm(1, 3, false));
        assert_eq!(parse_scalability_mode(Some("L3T3")), sm(3, 3, false));
        assert_eq!(parse_scalability_mode(Some("S3T3")), sm(3, 3, false));
        assert_eq!(parse_scalability_mode(Some("L12T10")), sm(12, 10, false));
    }

    #[test]
    fn key_and_h_suffixes_are_accepted() {
        assert_eq!(parse_scalability_mode(Some("L3T3_KEY")), sm(3, 3, true));
        assert_eq!(
            parse_scalability_mode(Some("L2T2_KEY_SHIFT")),
            sm(2, 2, true)
        );
        assert_eq!(parse_scalability_mode(Some("L1T3h")), sm(1, 3, false));
        assert_eq!(parse_scalability_mode(Some("S2T1h")), sm(2, 1, false));
    }

    #[test]
    fn strict_validation_accepts_the_webrtc_svc_modes_and_refuses_the_rest() {
        for (mode, expected) in [
            ("L1T1", sm(1, 1, false)),
            ("L1T3", sm(1, 3, false)),
            ("L1T4", sm(1, 4, false)),
            ("L3T3", sm(3, 3, false)),
            ("S3T3", sm(3, 3, false)),
            ("S2T1h", sm(2, 1, false)),
            ("L3T3_KEY", sm(3, 3, true)),
            ("L2T2_KEY_SHIFT", sm(2, 2, true)),
        ] {
            assert_eq!(validate_scalability_mode(mode), Ok(expected), "{mode:?}");
        }
        for mode in [
            "",
            "L",
            "L0T1",
            "L1T0",
            "l1t3",
            "X1T1",
            "L1T",
            "L1T3x",
            "L1T3_KEYX",
            "L1T3 ",
            "L1T3_SHIFT_KEY",
            "LéT3",
        ] {
            let err = validate_scalability_mode(mode).unwrap_err();
            assert!(err.contains("is not a scalability mode"), "{mode:?}: {err}");
        }
        for mode in ["L4T1", "L99T99", "S1T5", "L12T10"] {
            let err = validate_scalability_mode(mode).unwrap_err();
            assert!(err.contains("at most 3 and 4"), "{mode:?}: {err}");
        }
        // A long hostile mode is not echoed whole.
        let long = format!("L1T1{}", "x".repeat(10_000));
        assert!(validate_scalability_mode(&long).unwrap_err().len() < 120);
    }

    #[test]
    fn bad_input_defaults_to_one_layer_each() {
        for s in [
            "", "L", "L0T1", "L1T0", "T1L1", "l1t3", "X1T1", "L1", "L1T", "L1X3", "LéT3",
        ] {
            assert_eq!(
                parse_scalability_mode(Some(s)),
                ScalabilityMode::default(),
                "{s:?}"
            );
        }
        assert_eq!(parse_scalability_mode(None), ScalabilityMode::default());
    }
}
