//! [`SignalError`]: why a signaling request failed, as the protoo error answer carries it, and
//! [`clip`] / [`clip_reason`], which keep a client's strings in such reasons short.

use std::borrow::Cow;

use sluice_media::MediaError;
use sluice_protocol::ErrorCode;

/// Longest prefix of a client-supplied value (an id, a mid, a method name, a label) that an error
/// reason quotes, in characters; beyond, the value is cut and marked with `…`. A client that
/// sends a 200 KB mid gets a reason of a few dozen bytes, not its own megabytes back.
pub const MAX_QUOTED_CHARS: usize = 64;

/// Longest error reason, in characters, whatever it quotes: a backstop for reasons that embed
/// client input unquoted (other crates' messages).
pub const MAX_REASON_CHARS: usize = 512;

/// `value` cut to its first [`MAX_QUOTED_CHARS`] characters (on a char boundary) with `…` after
/// the cut, for quoting client input in an error reason or a log line.
pub fn clip(value: &str) -> Cow<'_, str> {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => Cow::Borrowed(value),
        Some((cut, _)) => Cow::Owned(format!("{}…", &value[..cut])),
    }
}

/// `reason` with every quoted span (`"…"` as `{:?}` writes it, or `` `…` `` as serde does) cut
/// to [`MAX_QUOTED_CHARS`] characters, and the whole to [`MAX_REASON_CHARS`]. Every
/// [`SignalError`] goes through it, so a reason that quotes a client's value with `{:?}` (here,
/// in the media plane or in serde's messages) stays short.
pub fn clip_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_CHARS + 8));
    // The quote that opened the span we are in, and how many of its characters were kept.
    let mut open: Option<char> = None;
    let mut kept = 0usize;
    let mut escaped = false;
    // Characters written so far (the cut parts of quoted spans do not count).
    let mut written = 0usize;
    for c in reason.chars() {
        if written >= MAX_REASON_CHARS {
            out.push('…');
            break;
        }
        written += 1;
        match open {
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    open = Some(c);
                    kept = 0;
                    escaped = false;
                }
            }
            Some(q) => {
                let closes = c == q && !escaped;
                escaped = q == '"' && c == '\\' && !escaped;
                if closes {
                    open = None;
                    out.push(c);
                } else {
                    kept += 1;
                    if kept <= MAX_QUOTED_CHARS {
                        out.push(c);
                    } else if kept == MAX_QUOTED_CHARS + 1 {
                        out.push('…');
                    } else {
                        written -= 1;
                    }
                }
            }
        }
    }
    out
}

/// A failed request: the protoo `errorCode` and `errorReason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalError {
    pub code: ErrorCode,
    pub reason: String,
}

impl SignalError {
    /// An error with `reason` passed through [`clip_reason`].
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        SignalError {
            code,
            reason: clip_reason(&reason),
        }
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, reason)
    }

    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, reason)
    }

    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, reason)
    }

    pub fn internal(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, reason)
    }

    pub fn limit(what: &str) -> Self {
        Self::new(ErrorCode::LimitReached, format!("limit reached: {what}"))
    }
}

impl From<MediaError> for SignalError {
    fn from(e: MediaError) -> Self {
        let code = match &e {
            MediaError::UnknownRouter(_)
            | MediaError::UnknownTransport(_)
            | MediaError::UnknownProducer(_)
            | MediaError::UnknownConsumer(_)
            | MediaError::UnknownDataProducer(_)
            | MediaError::UnknownDataConsumer(_) => ErrorCode::NotFound,
            MediaError::InvalidDtlsParameters(_)
            | MediaError::InvalidRtpParameters(_)
            | MediaError::InvalidSctpParameters(_)
            | MediaError::InvalidSrtpParameters(_)
            | MediaError::InvalidRemote(_)
            | MediaError::InvalidMediaCodecs(_) => ErrorCode::BadRequest,
            MediaError::CannotConsume(_)
            | MediaError::Numbering(_)
            | MediaError::SctpDisabled(_)
            | MediaError::NoCandidate(_) => ErrorCode::Unsupported,
            MediaError::AlreadyConnected(_) | MediaError::DuplicateId(_) => ErrorCode::Conflict,
            MediaError::Limit(_) => ErrorCode::LimitReached,
            MediaError::WorkerClosed(_) => ErrorCode::Unavailable,
            MediaError::Bind { .. }
            | MediaError::Spawn(_)
            | MediaError::Certificate
            | MediaError::Rtc(_) => ErrorCode::Internal,
        };
        SignalError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_values_and_cuts_long_ones_on_a_char_boundary() {
        assert_eq!(clip("abc"), "abc");
        let exact = "x".repeat(MAX_QUOTED_CHARS);
        assert_eq!(clip(&exact), exact.as_str());
        let long = "é".repeat(MAX_QUOTED_CHARS + 10);
        let cut = clip(&long);
        assert_eq!(cut.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(cut.ends_with("é…"), "{cut}");
    }

    #[test]
    fn clip_reason_cuts_every_quoted_span_and_keeps_the_text_around_them() {
        let mid = "m".repeat(100_000);
        let reason = format!("invalid RTP parameters: mid {mid:?}: up to 16 letters and digits");
        let clipped = clip_reason(&reason);
        assert_eq!(
            clipped,
            format!(
                "invalid RTP parameters: mid \"{}…\": up to 16 letters and digits",
                "m".repeat(MAX_QUOTED_CHARS)
            )
        );
        let serde = format!("unknown variant `{}`, expected `audio`", "v".repeat(500));
        assert_eq!(
            clip_reason(&serde),
            format!(
                "unknown variant `{}…`, expected `audio`",
                "v".repeat(MAX_QUOTED_CHARS)
            )
        );
        // An escaped quote does not end the span.
        let escaped = format!("{:?}", format!("a\"{}", "b".repeat(200)));
        assert!(clip_reason(&escaped).chars().count() < 70, "{escaped}");
        assert_eq!(clip_reason("no quotes"), "no quotes");
        let unquoted = "z".repeat(10_000);
        assert_eq!(clip_reason(&unquoted).chars().count(), MAX_REASON_CHARS + 1);
    }
}
