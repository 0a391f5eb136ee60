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
