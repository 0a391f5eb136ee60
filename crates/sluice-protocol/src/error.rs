//! protoo `errorCode`s and the typed errors of decoding a message.

use std::fmt;

/// The numeric `errorCode` of a failed protoo response.
///
/// protoo leaves the numbers to the application; sluice uses HTTP-like codes, one per kind of
/// failure, and never changes a code's meaning. The `errorReason` next to it is for humans and may
/// change between versions; programs branch on the code.
///
/// | code | variant | when |
/// |---|---|---|
/// | 400 | [`BadRequest`](Self::BadRequest) | malformed envelope or payload (missing field, wrong type) |
/// | 401 | [`Unauthorized`](Self::Unauthorized) | no valid token |
/// | 403 | [`Forbidden`](Self::Forbidden) | missing grant, another peer's object, wrong room |
/// | 404 | [`NotFound`](Self::NotFound) | unknown transport / producer / consumer / … id |
/// | 409 | [`Conflict`](Self::Conflict) | wrong state: already joined, not joined yet, already connected |
/// | 413 | [`TooLarge`](Self::TooLarge) | message or payload over the server's size limit |
/// | 422 | [`Unsupported`](Self::Unsupported) | well-formed but not servable: no common codec, cannot consume |
/// | 429 | [`LimitReached`](Self::LimitReached) | a rate or quota limit (requests, transports, producers, peers) |
/// | 500 | [`Internal`](Self::Internal) | a bug or failure on the server's side |
/// | 501 | [`UnknownMethod`](Self::UnknownMethod) | the method is not one sluice implements |
/// | 503 | [`Unavailable`](Self::Unavailable) | the server is draining or has no capacity right now |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// 400: the envelope or the payload is malformed (not JSON, missing or mistyped field).
    BadRequest,
    /// 401: the peer is not authenticated.
    Unauthorized,
    /// 403: authenticated but not allowed: a grant is missing, the object belongs to another peer,
    /// or the token is for another room.
    Forbidden,
    /// 404: no object with that id (transport, producer, consumer, data producer, data consumer).
    NotFound,
    /// 409: the request does not fit the current state (already joined, not joined yet, transport
    /// already connected, duplicate id).
    Conflict,
    /// 413: the message or a payload is over the server's size limit.
    TooLarge,
    /// 422: well-formed but cannot be served, e.g. no codec in common with the router, or the peer
    /// cannot consume a producer with its RTP capabilities.
    Unsupported,
    /// 429: a rate or quota limit was reached; `errorReason` says which.
    LimitReached,
    /// 500: an internal error on the server's side.
    Internal,
    /// 501: the method is unknown. HTTP's 501 is what a server answers for a method it does not
    /// recognise (RFC 9110 §15.6.2); state errors for known methods are 409.
    UnknownMethod,
    /// 503: the server is draining or temporarily without capacity; try another or later.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::Unsupported,
        ErrorCode::LimitReached,
        ErrorCode::Internal,
        ErrorCode::UnknownMethod,
        ErrorCode::Unavailable,
    ];

    /// The number on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unsupported => 422,
            ErrorCode::LimitReached => 429,
            ErrorCode::Internal => 500,
            ErrorCode::UnknownMethod => 501,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The code for a number, or `None` for one sluice does not define (another server's, or a
    /// client's own rejection code).
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_u16() == code)
    }

    /// A short snake_case name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::Internal => "internal",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.as_u16(), self.name())
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.as_u16()
    }
}

/// Longest reason text a [`DecodeError`] keeps; serde's messages quote the offending value, which a
/// peer controls, and the reason may be echoed back in `errorReason`.
pub const MAX_REASON_CHARS: usize = 200;

/// Why a text frame is not a valid protoo message, or a payload not valid for its method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The frame is JSON but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// None of `request`, `response`, `notification` is `true`.
    #[error("not a request, response or notification")]
    UnknownKind,
    /// A message of one kind where another was expected (e.g. a request handed to a notification
    /// decoder).
    #[error("expected a {expected}")]
    UnexpectedKind { expected: &'static str },
    /// A required envelope field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// An envelope field has the wrong type or value.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    /// The method is not one this side handles.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The payload (`data`) does not fit the method.
    #[error("malformed {method} payload: {reason}")]
    MalformedPayload {
        method: &'static str,
        reason: String,
    },
}

impl DecodeError {
    /// The `errorCode` to answer a request that failed to decode with: 501 for an unknown method,
    /// 400 for everything else.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownMethod(_) => ErrorCode::UnknownMethod,
            _ => ErrorCode::BadRequest,
        }
    }

    pub(crate) fn not_json(err: &serde_json::Error) -> Self {
        DecodeError::NotJson(truncate(err.to_string()))
    }

    pub(crate) fn unknown_method(method: &str) -> Self {
        DecodeError::UnknownMethod(truncate(method.to_owned()))
    }

    /// A payload serde could not read; the reason names the field path when there is one
    /// (`rtpParameters.codecs[0].payloadType: invalid type: …`).
    pub(crate) fn malformed(
        method: &'static str,
        err: &serde_path_to_error::Error<serde_json::Error>,
    ) -> Self {
        let path = err.path().to_string();
        let reason = if path == "." {
            err.inner().to_string()
        } else {
            format!("{path}: {}", err.inner())
        };
        DecodeError::MalformedPayload {
            method,
            reason: truncate(reason),
        }
    }
}

/// Cuts `s` to [`MAX_REASON_CHARS`] characters, marking the cut with `…`.
fn truncate(mut s: String) -> String {
    if let Some((idx, _)) = s.char_indices().nth(MAX_REASON_CHARS) {
        s.truncate(idx);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number_and_numbers_are_unique() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
        }
        let mut numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.as_u16()).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "ALL is in numeric order"
        );
        assert_eq!(ErrorCode::from_u16(418), None);
    }

    #[test]
    fn long_reasons_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(MAX_REASON_CHARS + 50);
        let t = truncate(s);
        assert_eq!(t.chars().count(), MAX_REASON_CHARS + 1);
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short".into()), "short");
    }

    #[test]
    fn unknown_method_maps_to_501_and_other_decode_errors_to_400() {
        assert_eq!(
            DecodeError::UnknownMethod("x".into()).error_code().as_u16(),
            501
        );
        assert_eq!(DecodeError::NotAnObject.error_code().as_u16(), 400);
        assert_eq!(DecodeError::MissingField("id").error_code().as_u16(), 400);
    }
}
