//! Sluice's signaling wire format: the [protoo] envelope and mediasoup-demo's methods.
//!
//! Signaling runs over a WebSocket (subprotocol `protoo`) carrying one JSON [`Message`] per text
//! frame: requests (answered by a response with the same id), responses and notifications.
//! Requests flow both ways. The method names and payloads are mediasoup-demo's, so an unmodified
//! mediasoup-client + protoo-client browser app can talk to sluice.
//!
//! - [`envelope`]: [`Message`] / [`Response`], parsed with [`Message::parse`] and written with
//!   [`Message::to_json`].
//! - [`methods`]: typed payloads; [`ClientRequest`] (client → server), [`ServerRequest`] and
//!   [`ServerNotification`] (server → client), each decoded from `(method, data)` and encoded back.
//! - [`error`]: the numeric [`ErrorCode`]s of failed responses and [`DecodeError`].
//!
//! Decoding never panics on network input: every defect is a [`DecodeError`], whose
//! [`error_code`](DecodeError::error_code) is the code to answer a bad request with.
//!
//! ```
//! use sluice_protocol::{ClientRequest, ErrorCode, Message};
//!
//! let frame = r#"{"request":true,"id":7,"method":"resumeConsumer","data":{"consumerId":"c1"}}"#;
//! let reply = match Message::parse(frame) {
//!     Ok(Message::Request { id, method, data }) => match ClientRequest::decode(&method, data) {
//!         Ok(ClientRequest::ResumeConsumer(r)) => {
//!             assert_eq!(r.consumer_id, "c1");
//!             Message::ok_empty(id)
//!         }
//!         Ok(_) => Message::error(id, ErrorCode::Internal, "not handled here"),
//!         Err(e) => Message::error(id, e.error_code(), e.to_string()),
//!     },
//!     _ => unreachable!(),
//! };
//! assert_eq!(reply.to_json(), r#"{"response":true,"id":7,"ok":true,"data":{}}"#);
//! ```
//!
//! The full reference, with a JSON example of every method, is `docs/protocol.md`.
//!
//! [protoo]: https://protoo.versatica.com/

pub mod envelope;
pub mod error;
pub mod methods;

pub use envelope::{MAX_REQUEST_ID, Message, Response};
pub use error::{DecodeError, ErrorCode, MAX_REASON_CHARS};
pub use methods::*;
