//! Peer tokens: HS256 JWTs naming the peer (`sub`), its room and its grants.
//!
//! `sluice token` and (in dev mode) `GET /dev/token` mint them; the signaling endpoint verifies them
//! before the WebSocket upgrade. Verification failures split into "not authenticated" (401: missing,
//! malformed, bad signature, wrong algorithm, expired, not yet valid) and "not this room or peer"
//! (403), so the HTTP layer can answer with the right status.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The well-known secret of dev mode. It is printed at start; never use it in production (the
/// configuration refuses it as `auth.secret`).
pub const DEV_SECRET: &str = "sluice-dev-secret-do-not-use-in-production";

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// What a peer may do. Absent grants are `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Produce audio and video.
    #[serde(default)]
    pub publish: bool,
    /// Consume other peers' media and data.
    #[serde(default)]
    pub subscribe: bool,
    /// Produce data channels.
    #[serde(default)]
    pub data: bool,
    /// Use the admin HTTP API.
    #[serde(default)]
    pub admin: bool,
}

impl Grants {
    /// What a game player needs: publish, subscribe and data; no admin.
    pub fn player() -> Self {
        Grants {
            publish: true,
            subscribe: true,
            data: true,
            admin: false,
        }
    }
}

/// The claims of a peer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The peer id; must equal the `peerId` the peer connects with.
    pub sub: String,
    /// The room id; must equal the `roomId` the peer connects with.
    pub room: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub grants: Grants,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    /// Which part of the token is wrong: `malformed` (not three base64url parts), `bad header`
    /// (not JSON, or an algorithm other than HS256, `none` included), `signature` (not signed
    /// with this server's secret), `claims` (missing or mistyped `sub`, `room`, `exp`, …). The
    /// reason never carries the parser's own message, which quotes the token's contents; that
    /// goes to the debug log.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token is for room {token:?}, not {requested:?}")]
    WrongRoom { token: String, requested: String },
    #[error("token is for peer {token:?}, not {requested:?}")]
    WrongPeer { token: String, requested: String },
    #[error("cannot sign token: {0}")]
    Sign(String),
}

impl AuthError {
    /// The HTTP status a refused upgrade answers with: 403 for a valid token used for another
    /// room or peer, 401 otherwise (500 for a signing failure, which is ours).
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::WrongRoom { .. } | AuthError::WrongPeer { .. } => 403,
            AuthError::Sign(_) => 500,
            _ => 401,
        }
    }
}

/// Signs and verifies peer tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAuthority { .. }")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenAuthority {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenAuthority {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Mints a token for `peer` in `room`, valid for `ttl_secs` from `now` (Unix seconds).
    pub fn mint(
        &self,
        room: &str,
        peer: &str,
        grants: Grants,
        ttl_secs: u64,
        now: u64,
    ) -> Result<String, AuthError> {
        let claims = Claims {
            sub: peer.to_owned(),
            room: room.to_owned(),
            exp: now.saturating_add(ttl_secs),
            iat: Some(now),
            nbf: Some(now),
            grants,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Sign(e.to_string()))
    }

    /// Checks signature, algorithm (HS256 only, so `alg: none` is refused), `exp`, `nbf` and
    /// `iat` (not in the future), returning the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                let refused = classify(token, &e);
                tracing::debug!(error = %e, reason = %refused, "token refused");
                refused
            })?;
        if let Some(iat) = data.claims.iat
            && iat > unix_now().saturating_add(LEEWAY_SECS)
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(data.claims)
    }

    /// Verifies `token` and checks that it was issued for `room` and `peer`.
    pub fn authorize(&self, token: &str, room: &str, peer: &str) -> Result<Claims, AuthError> {
        let claims = self.verify(token)?;
        if claims.room != room {
            return Err(AuthError::WrongRoom {
                token: claims.room,
                requested: room.to_owned(),
            });
        }
        if claims.sub != peer {
            return Err(AuthError::WrongPeer {
                token: claims.sub,
                requested: peer.to_owned(),
            });
        }
        Ok(claims)
    }
}

/// What a failed decode says to the client: the part of the token that is wrong, in a few
/// words (the detail, which quotes the token, is only logged).
fn classify(token: &str, e: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::Invalid("signature"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::InvalidKeyFormat => AuthError::Invalid("bad header"),
        ErrorKind::InvalidToken => AuthError::Invalid("malformed"),
        // The header is read first: a failure there is the header's.
        _ if jsonwebtoken::decode_header(token).is_err() => AuthError::Invalid("bad header"),
        ErrorKind::Base64(_) => AuthError::Invalid("malformed"),
        _ => AuthError::Invalid("claims"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn authority() -> TokenAuthority {
        TokenAuthority::new(SECRET)
    }

    /// Builds a token from raw header and claims JSON, signed with HS256 and `secret`.
    fn forge(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn minted_token_verifies_with_its_claims() {
        let now = unix_now();
        let token = authority()
            .mint("room-1", "alice", Grants::player(), 600, now)
            .unwrap();
        let claims = authority().authorize(&token, "room-1", "alice").unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.room, "room-1");
        assert_eq!(claims.exp, now + 600);
        assert_eq!(claims.iat, Some(now));
        assert_eq!(claims.grants, Grants::player());
    }

    #[test]
    fn token_claims_are_the_documented_json() {
        let token = authority()
            .mint(
                "r",
                "p",
                Grants {
                    admin: true,
                    ..Default::default()
                },
                10,
                1000,
            )
            .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let json = base64url_decode(payload);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "sub": "p", "room": "r", "exp": 1010, "iat": 1000, "nbf": 1000,
                "grants": {"publish": false, "subscribe": false, "data": false, "admin": true}
            })
        );
    }

    #[test]
    fn expired_token_is_refused_with_401() {
        let now = unix_now();
        let token = authority()
            .mint("r", "p", Grants::player(), 1, now - 100)
            .unwrap();
        let err = authority().verify(&token).unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.http_status(), 401);
    }

    #[test]
    fn token_signed_with_another_key_is_refused() {
        let token = TokenAuthority::new("another-secret-another-secret-another")
            .mint("r", "p", Grants::player(), 60, unix_now())
            .unwrap();
        let err = authority().verify(&token).unwrap_err();
        assert!(matches!(err, AuthError::Invalid(_)), "{err:?}");
        assert_eq!(err.http_status(), 401);
    }

    #[test]
    fn alg_none_token_is_refused() {
        // {"alg":"none","typ":"JWT"} . {"sub":"p","room":"r","exp":<future>} . (no signature)
        let header = base64url_encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = base64url_encode(
            format!(r#"{{"sub":"p","room":"r","exp":{}}}"#, unix_now() + 600).as_bytes(),
        );
        let token = format!("{header}.{claims}.");
        let err = authority().verify(&token).unwrap_err();
        assert!(matches!(err, AuthError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn invalid_tokens_say_which_part_is_wrong_without_the_parsers_message() {
        let now = unix_now();
        let claims =
            base64url_encode(format!(r#"{{"sub":"p","room":"r","exp":{}}}"#, now + 600).as_bytes());
        let none = format!(
            "{}.{claims}.",
            base64url_encode(br#"{"alg":"none","typ":"JWT"}"#)
        );
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "p", "room": "r", "exp": now + 600}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let other_key = TokenAuthority::new("another-secret-another-secret-another")
            .mint("r", "p", Grants::player(), 60, now)
            .unwrap();
        let no_room = forge(serde_json::json!({"sub": "p", "exp": now + 600}), SECRET);
        let bad_grants = forge(
            serde_json::json!({"sub": "p", "room": "r", "exp": now + 600, "grants": "all"}),
            SECRET,
        );
        for (token, reason) in [
            (none.as_str(), "invalid token: bad header"),
            (hs512.as_str(), "invalid token: bad header"),
            ("x", "invalid token: malformed"),
            (other_key.as_str(), "invalid token: signature"),
            (no_room.as_str(), "invalid token: claims"),
            (bad_grants.as_str(), "invalid token: claims"),
        ] {
            let err = authority().verify(token).unwrap_err();
            assert_eq!(err.to_string(), reason, "{token}");
            assert_eq!(err.http_status(), 401);
        }
    }

    #[test]
    fn token_without_exp_is_refused() {
        let token = forge(serde_json::json!({"sub": "p", "room": "r"}), SECRET);
        assert!(matches!(
            authority().verify(&token),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn token_not_valid_before_nbf_is_refused() {
        let now = unix_now();
        let token = forge(
            serde_json::json!({"sub": "p", "room": "r", "exp": now + 600, "nbf": now + 300}),
            SECRET,
        );
        assert_eq!(authority().verify(&token), Err(AuthError::NotYetValid));
    }

    #[test]
    fn token_issued_in_the_future_is_refused() {
        let now = unix_now();
        let token = forge(
            serde_json::json!({"sub": "p", "room": "r", "exp": now + 600, "iat": now + 300}),
            SECRET,
        );
        assert_eq!(authority().verify(&token), Err(AuthError::NotYetValid));
    }

    #[test]
    fn garbage_and_empty_tokens_are_refused() {
        assert_eq!(authority().verify(""), Err(AuthError::Missing));
        for junk in [
            "x",
            "a.b.c",
            "....",
            "eyJhbGciOiJIUzI1NiJ9.e30.",
            "\u{0}\u{1}",
        ] {
            let err = authority().verify(junk).unwrap_err();
            assert_eq!(err.http_status(), 401, "{junk:?}: {err:?}");
        }
    }

    #[test]
    fn token_for_another_room_or_peer_is_refused_with_403() {
        let token = authority()
            .mint("room-1", "alice", Grants::player(), 60, unix_now())
            .unwrap();
        let err = authority()
            .authorize(&token, "room-2", "alice")
            .unwrap_err();
        assert!(matches!(err, AuthError::WrongRoom { .. }));
        assert_eq!(err.http_status(), 403);
        let err = authority().authorize(&token, "room-1", "bob").unwrap_err();
        assert!(matches!(err, AuthError::WrongPeer { .. }));
        assert_eq!(err.http_status(), 403);
    }

    #[test]
    fn missing_grants_default_to_false() {
        let now = unix_now();
        let token = forge(
            serde_json::json!({"sub": "p", "room": "r", "exp": now + 60}),
            SECRET,
        );
        assert_eq!(
            authority().verify(&token).unwrap().grants,
            Grants::default()
        );
    }

    fn base64url_encode(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn base64url_decode(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }
}
