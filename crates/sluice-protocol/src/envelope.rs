//! The protoo envelope: requests, responses and notifications as JSON text frames.
//!
//! ```text
//! {"request":true,"id":12345,"method":"join","data":{...}}
//! {"response":true,"id":12345,"ok":true,"data":{...}}
//! {"response":true,"id":12345,"ok":false,"errorCode":404,"errorReason":"..."}
//! {"notification":true,"method":"newPeer","data":{...}}
//! ```
//!
//! Like protoo, an absent or `null` `data` reads as `{}` and is written as `{}`.

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{DecodeError, ErrorCode};

/// The largest request id accepted: JavaScript's `Number.MAX_SAFE_INTEGER` (2^53 − 1), since protoo
/// ids are JS numbers. protoo-client picks ids below 10^7.
pub const MAX_REQUEST_ID: u64 = (1 << 53) - 1;

/// One protoo message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request; the receiver answers with a [`Response`] carrying the same `id`.
    Request {
        id: u64,
        method: String,
        data: Value,
    },
    /// The answer to a request.
    Response(Response),
    /// A one-way message.
    Notification { method: String, data: Value },
}

/// The answer to a request: success with a payload, or failure with a code and a reason.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// `ok: true`. `data` is `{}` when the method has no result.
    Ok { id: u64, data: Value },
    /// `ok: false`. `error_code` is a number ([`ErrorCode`] for sluice's own; a peer may use others).
    Error {
        id: u64,
        error_code: u16,
        error_reason: String,
    },
}

impl Response {
    /// The id of the request this answers.
    pub fn id(&self) -> u64 {
        match self {
            Response::Ok { id, .. } | Response::Error { id, .. } => *id,
        }
    }

    /// The error code as an [`ErrorCode`], if it is a failure with one sluice defines.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Response::Ok { .. } => None,
            Response::Error { error_code, .. } => ErrorCode::from_u16(*error_code),
        }
    }
}

impl Message {
    /// A request.
    pub fn request(id: u64, method: impl Into<String>, data: Value) -> Message {
        Message::Request {
            id,
            method: method.into(),
            data: or_empty(data),
        }
    }

    /// A success response; `Value::Null` is written as `{}`.
    pub fn ok(id: u64, data: Value) -> Message {
        Message::Response(Response::Ok {
            id,
            data: or_empty(data),
        })
    }

    /// A success response without a payload (`"data":{}`).
    pub fn ok_empty(id: u64) -> Message {
        Message::ok(id, Value::Object(Map::new()))
    }

    /// A failure response with one of sluice's codes.
    pub fn error(id: u64, code: ErrorCode, reason: impl Into<String>) -> Message {
        Message::Response(Response::Error {
            id,
            error_code: code.as_u16(),
            error_reason: reason.into(),
        })
    }

    /// A notification.
    pub fn notification(method: impl Into<String>, data: Value) -> Message {
        Message::Notification {
            method: method.into(),
            data: or_empty(data),
        }
    }

    /// Parses one text frame. Never panics; every defect is a [`DecodeError`].
    pub fn parse(text: &str) -> Result<Message, DecodeError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            // serde_json's words for a lone surrogate ("unexpected end of hex escape") do not say
            // what is wrong; browsers' JSON.stringify writes one for a string cut inside a pair.
            match scan::lone_surrogate(text) {
                Some((offset, unit)) if offset < error_offset(text, &e) => {
                    let (line, column) = line_column(text, offset);
                    DecodeError::NotJson(format!(
                        "lone surrogate \\u{unit:04x} in a string at line {line} column {column} (half of a UTF-16 pair)"
                    ))
                }
                _ => DecodeError::not_json(&e),
            }
        })?;
        Message::from_value(value)
    }

    /// Reads a message from an already parsed JSON value.
    ///
    /// Like protoo, the kind flags are checked in the order `request`, `response`, `notification`;
    /// the first that is `true` decides.
    pub fn from_value(value: Value) -> Result<Message, DecodeError> {
        let Value::Object(mut obj) = value else {
            return Err(DecodeError::NotAnObject);
        };
        if is_true(&obj, "request") {
            let id = read_id(&obj)?;
            let method = read_method(&obj)?;
            Ok(Message::Request {
                id,
                method,
                data: take_data(&mut obj),
            })
        } else if is_true(&obj, "response") {
            let id = read_id(&obj)?;
            match obj.get("ok") {
                None => Err(DecodeError::MissingField("ok")),
                Some(Value::Bool(true)) => Ok(Message::Response(Response::Ok {
                    id,
                    data: take_data(&mut obj),
                })),
                Some(Value::Bool(false)) => {
                    let error_code = match obj.get("errorCode") {
                        None => return Err(DecodeError::MissingField("errorCode")),
                        Some(v) => v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or(
                            DecodeError::InvalidField {
                                field: "errorCode",
                                reason: "must be an integer from 0 to 65535",
                            },
                        )?,
                    };
                    // protoo always sends a reason; tolerate its absence rather than lose the code.
                    let error_reason = match obj.remove("errorReason") {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s,
                        Some(_) => {
                            return Err(DecodeError::InvalidField {
                                field: "errorReason",
                                reason: "must be a string",
                            });
                        }
                    };
                    Ok(Message::Response(Response::Error {
                        id,
                        error_code,
                        error_reason,
                    }))
                }
                Some(_) => Err(DecodeError::InvalidField {
                    field: "ok",
                    reason: "must be a boolean",
                }),
            }
        } else if is_true(&obj, "notification") {
            let method = read_method(&obj)?;
            Ok(Message::Notification {
                method,
                data: take_data(&mut obj),
            })
        } else {
            Err(DecodeError::UnknownKind)
        }
    }

    /// Best effort: the id of a request frame that failed to [`parse`](Self::parse) for another
    /// reason (e.g. a missing `method`), so the receiver can still answer it with an error.
    ///
    /// When the frame is not even JSON serde_json accepts (a lone surrogate escape such as
    /// `"\ud800"`, nesting deeper than 128 levels, `NaN`, a trailing comma), a tolerant scan of
    /// the top-level object still finds `"request": true` and a numeric `id`: it steps over the
    /// other members' values without parsing them (strings, nesting of any depth, bare tokens) and
    /// runs in time linear in the frame's length, without recursion.
    ///
    /// `None` when the frame is not an object flagged as a request with a valid id (an integer
    /// from 0 to [`MAX_REQUEST_ID`]; `"abc"`, `-1`, `1.5` and `true` are not): there is no id to
    /// answer with, since protoo matches responses by their numeric id.
    pub fn recover_request_id(text: &str) -> Option<u64> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(obj)) => {
                if !is_true(&obj, "request") {
                    return None;
                }
                read_id(&obj).ok()
            }
            Ok(_) => None,
            Err(_) => scan::request_id(text),
        }
    }

    /// The message as a JSON value (the same shape as [`to_json`](Self::to_json)).
    pub fn to_value(&self) -> Value {
        // Cannot fail: every map key is a string and no Serialize impl involved returns an error.
        serde_json::to_value(self).expect("a Message always serialises to JSON")
    }

    /// The message as one JSON text frame.
    pub fn to_json(&self) -> String {
        // Serialising into a String cannot fail: every map key is a string and no Serialize impl
        // involved returns an error.
        serde_json::to_string(self).expect("a Message always serialises to JSON")
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response(_) => None,
        }
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // protoo writes `data: data || {}`.
        let empty = Value::Object(Map::new());
        let data_or_empty = |d| or_empty_ref(d, &empty);
        match self {
            Message::Request { id, method, data } => {
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry("request", &true)?;
                map.serialize_entry("id", id)?;
                map.serialize_entry("method", method)?;
                map.serialize_entry("data", data_or_empty(data))?;
                map.end()
            }
            Message::Response(Response::Ok { id, data }) => {
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry("response", &true)?;
                map.serialize_entry("id", id)?;
                map.serialize_entry("ok", &true)?;
                map.serialize_entry("data", data_or_empty(data))?;
                map.end()
            }
            Message::Response(Response::Error {
                id,
                error_code,
                error_reason,
            }) => {
                let mut map = serializer.serialize_map(Some(5))?;
                map.serialize_entry("response", &true)?;
                map.serialize_entry("id", id)?;
                map.serialize_entry("ok", &false)?;
                map.serialize_entry("errorCode", error_code)?;
                map.serialize_entry("errorReason", error_reason)?;
                map.end()
            }
            Message::Notification { method, data } => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("notification", &true)?;
                map.serialize_entry("method", method)?;
                map.serialize_entry("data", data_or_empty(data))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Message::from_value(value).map_err(D::Error::custom)
    }
}

impl From<Response> for Message {
    fn from(response: Response) -> Message {
        Message::Response(response)
    }
}

fn or_empty(data: Value) -> Value {
    if data.is_null() {
        Value::Object(Map::new())
    } else {
        data
    }
}

fn or_empty_ref<'a>(data: &'a Value, empty: &'a Value) -> &'a Value {
    if data.is_null() { empty } else { data }
}

fn is_true(obj: &Map<String, Value>, key: &str) -> bool {
    matches!(obj.get(key), Some(Value::Bool(true)))
}

fn read_id(obj: &Map<String, Value>) -> Result<u64, DecodeError> {
    const INVALID: DecodeError = DecodeError::InvalidField {
        field: "id",
        reason: "must be an integer from 0 to 2^53-1",
    };
    let Some(Value::Number(n)) = obj.get("id") else {
        return match obj.get("id") {
            None | Some(Value::Null) => Err(DecodeError::MissingField("id")),
            Some(_) => Err(INVALID),
        };
    };
    let id = if let Some(id) = n.as_u64() {
        id
    } else {
        // A JS number may come from a client that writes integers as floats (`12345.0`).
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..=MAX_REQUEST_ID as f64).contains(&f) => f as u64,
            _ => return Err(INVALID),
        }
    };
    if id > MAX_REQUEST_ID {
        return Err(INVALID);
    }
    Ok(id)
}

fn read_method(obj: &Map<String, Value>) -> Result<String, DecodeError> {
    match obj.get("method") {
        None | Some(Value::Null) => Err(DecodeError::MissingField("method")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(DecodeError::InvalidField {
            field: "method",
            reason: "must be a non-empty string",
        }),
    }
}

fn take_data(obj: &mut Map<String, Value>) -> Value {
    or_empty(obj.remove("data").unwrap_or(Value::Null))
}

/// The byte offset where serde_json stopped (its line is 1-based, its column counts bytes).
fn error_offset(text: &str, e: &serde_json::Error) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    line_start + e.column()
}

/// 1-based line and column (in bytes) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, column)
}

/// The tolerant scan behind [`Message::recover_request_id`] for frames serde_json refuses.
mod scan {
    use super::MAX_REQUEST_ID;

    /// `Some(id)` when the text is an object whose top level has `"request": true` and an `id`
    /// that is an integer from 0 to [`MAX_REQUEST_ID`] (an integral float such as `12.0` too);
    /// the last occurrence of a repeated member counts, as in serde_json's map. Members after the
    /// first one the scan cannot step over are not seen.
    pub(super) fn request_id(text: &str) -> Option<u64> {
        let mut s = Scanner {
            bytes: text.as_bytes(),
            pos: 0,
        };
        s.skip_ws();
        if !s.eat(b'{') {
            return None;
        }
        let mut request = false;
        let mut id: Option<Option<u64>> = None;
        loop {
            s.skip_ws();
            match s.peek() {
                Some(b'}') | None => break,
                Some(b',') => {
                    // Tolerates `{,` and trailing or doubled commas.
                    s.pos += 1;
                    continue;
                }
                Some(b'"') => {}
                Some(_) => break,
            }
            let Some(key) = s.string() else {
                break;
            };
            s.skip_ws();
            if !s.eat(b':') {
                break;
            }
            s.skip_ws();
            let start = s.pos;
            if !s.skip_value() {
                break;
            }
            let value = &s.bytes[start..s.pos];
            match key {
                Some("request") => request = value == b"true",
                Some("id") => id = Some(parse_id(value)),
                _ => {}
            }
        }
        if request { id.flatten() } else { None }
    }

    /// The byte offset and code unit of the first `\\uXXXX` escape in a string that is half of
    /// a UTF-16 surrogate pair without its other half.
    pub(super) fn lone_surrogate(text: &str) -> Option<(usize, u16)> {
        let bytes = text.as_bytes();
        let unit_at = |i: usize| -> Option<u16> {
            if bytes.get(i) != Some(&b'\\') || bytes.get(i + 1) != Some(&b'u') {
                return None;
            }
            let hex = std::str::from_utf8(bytes.get(i + 2..i + 6)?).ok()?;
            u16::from_str_radix(hex, 16).ok()
        };
        let mut in_string = false;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'"' => in_string = !in_string,
                b'\\' if in_string => {
                    match unit_at(i) {
                        Some(high @ 0xd800..=0xdbff) => {
                            if matches!(unit_at(i + 6), Some(0xdc00..=0xdfff)) {
                                i += 12;
                                continue;
                            }
                            return Some((i, high));
                        }
                        Some(low @ 0xdc00..=0xdfff) => return Some((i, low)),
                        _ => {}
                    }
                    // Steps over the escaped byte (`\\"` does not end the string).
                    i += 1;
                }
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// A JSON number token as a request id.
    fn parse_id(token: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(token).ok()?;
        let first = *token.first()?;
        if !first.is_ascii_digit() {
            return None;
        }
        if token.iter().all(u8::is_ascii_digit) {
            return text.parse::<u64>().ok().filter(|id| *id <= MAX_REQUEST_ID);
        }
        if !token
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return None;
        }
        let f = text.parse::<f64>().ok()?;
        (f.fract() == 0.0 && (0.0..=MAX_REQUEST_ID as f64).contains(&f)).then_some(f as u64)
    }

    struct Scanner<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl<'a> Scanner<'a> {
        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.pos).copied()
        }

        fn eat(&mut self, b: u8) -> bool {
            if self.peek() == Some(b) {
                self.pos += 1;
                true
            } else {
                false
            }
        }

        fn skip_ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }

        /// A string at `pos` (which is `"`), stepping past its closing quote: `None` when it
        /// runs off the end of the text; else its text, `None` when it has escapes (no member name
        /// the scan looks for needs one).
        fn string(&mut self) -> Option<Option<&'a str>> {
            self.pos += 1;
            let start = self.pos;
            let mut escaped = false;
            while let Some(b) = self.peek() {
                self.pos += 1;
                match b {
                    b'\\' => {
                        escaped = true;
                        self.pos += 1;
                    }
                    b'"' => {
                        let bytes: &'a [u8] = self.bytes;
                        let text = &bytes[start..self.pos - 1];
                        return Some(if escaped {
                            None
                        } else {
                            std::str::from_utf8(text).ok()
                        });
                    }
                    _ => {}
                }
            }
            self.pos = self.bytes.len();
            None
        }

        /// Steps over one value: a string, an array or object of any depth (brackets counted,
        /// strings inside skipped; mismatched brackets are not checked), or a bare token (number,
        /// literal, `NaN`, …) up to the next `,`, `}`, `]` or whitespace. False when there is no
        /// value or it runs off the end of the text.
        fn skip_value(&mut self) -> bool {
            match self.peek() {
                None => false,
                Some(b'"') => self.string().is_some(),
                Some(b'{' | b'[') => {
                    let mut depth = 0usize;
                    while let Some(b) = self.peek() {
                        match b {
                            b'"' => {
                                if self.string().is_none() {
                                    return false;
                                }
                                continue;
                            }
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => {
                                depth -= 1;
                                if depth == 0 {
                                    self.pos += 1;
                                    return true;
                                }
                            }
                            _ => {}
                        }
                        self.pos += 1;
                    }
                    false
                }
                Some(_) => {
                    let start = self.pos;
                    while let Some(b) = self.peek() {
                        if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                            break;
                        }
                        self.pos += 1;
                    }
                    self.pos > start
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn to_value_and_to_json_agree() {
        let messages = [
            Message::request(1, "join", json!({"displayName": "a"})),
            Message::ok(2, Value::Null),
            Message::error(3, ErrorCode::NotFound, "no such transport"),
            Message::notification("peerClosed", json!({"peerId": "p"})),
        ];
        for m in messages {
            let from_text: Value = serde_json::from_str(&m.to_json()).unwrap();
            assert_eq!(from_text, m.to_value());
            assert_eq!(Message::parse(&m.to_json()).unwrap(), m);
        }
    }
}
