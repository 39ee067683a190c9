//! Bearer tokens: HS256 JWTs signed with the server's secret.
//!
//! Only HS256 is accepted: the validation pins the algorithm, so `none`,
//! RS256/ES256 and HS384/HS512 tokens are all refused before the signature
//! is even considered. `exp` is required; `sub` must be a valid
//! [`UserId`] (1–128 characters). Every failure is the same 401 to the
//! client; the reason is logged at debug level only.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use serde::{Deserialize, Serialize};
use weft_domain::UserId;

use crate::error::ApiError;

/// Fewest bytes a secret may have (the HS256 key size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The HS256 secret. Its `Debug` is redacted so it can never reach a log.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// The secret is too short to be safe.
#[derive(Debug, thiserror::Error)]
#[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes, got {0}")]
pub struct WeakSecret(usize);

impl JwtSecret {
    /// Accepts a secret of at least [`MIN_SECRET_BYTES`] bytes.
    ///
    /// # Errors
    /// [`WeakSecret`] when shorter.
    pub fn new(bytes: Vec<u8>) -> Result<Self, WeakSecret> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret(bytes.len()));
        }
        Ok(Self(bytes))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    // Optional on input: tokens minted elsewhere need not carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// Signs and verifies tokens with one secret. Built once, shared by all
/// requests (read-only).
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKeys(<redacted>)")
    }
}

/// Why a token was refused (logged, never shown: the client sees one 401).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, algorithm, expiry or shape rejected by jsonwebtoken.
    #[error("token rejected: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// `sub` empty, too long or holding NUL.
    #[error("token subject is not a valid user id")]
    Subject,
}

/// A token could not be minted.
#[derive(Debug, thiserror::Error)]
#[error("could not sign the token: {0}")]
pub struct MintError(#[from] jsonwebtoken::errors::Error);

impl TokenKeys {
    /// Keys for `secret`, validating HS256 only, `exp` required, no leeway
    /// beyond a few seconds of clock skew.
    pub fn new(secret: &JwtSecret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.bytes()),
            decoding: DecodingKey::from_secret(secret.bytes()),
            validation,
        }
    }

    /// A token for `user`, valid for `ttl` from now.
    ///
    /// # Errors
    /// [`MintError`] if signing fails (it does not for HS256 keys).
    pub fn mint(&self, user: &UserId, ttl: Duration) -> Result<String, MintError> {
        let now = unix_now();
        let claims = Claims {
            sub: user.as_str().to_owned(),
            iat: Some(now),
            exp: now.saturating_add(ttl.as_secs()),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The user a token speaks for.
    ///
    /// # Errors
    /// [`TokenError`] for any algorithm but HS256, a bad signature, an
    /// expired token, a missing `exp`, or a `sub` that is not a valid user id.
    pub fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        UserId::parse(&data.claims.sub).map_err(|_| TokenError::Subject)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// The verified caller of a `/v1` operation: poem-openapi runs
// `check_bearer` before any other extractor, so a handler holding one knows
// the token was valid. (Not a doc comment: that one is the description the
// Swagger UI "Authorize" dialog shows users.)
/// A JWT signed with the server's secret. `weft token --user <USER_ID>`
/// prints one (after `cargo run`: `cargo run --bin weft -- token --user
/// <USER_ID>`; the server's start-up log shows the exact command). Paste
/// the token alone, without `Bearer`.
#[derive(SecurityScheme)]
#[oai(
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_bearer",
    rename = "bearerAuth"
)]
pub struct Caller(pub UserId);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<UserId> {
    let refused = || ApiError::unauthorized("Invalid bearer token.");
    let Some(keys) = req.data::<TokenKeys>() else {
        tracing::error!("token keys missing from the request data");
        return Err(ApiError::internal().into());
    };
    keys.verify(&bearer.token).map_err(|e| {
        tracing::debug!(reason = %e, "token refused");
        refused().into()
    })
}

/// Parses a duration like `24h`, `30m`, `90s`, `7d` or a bare number of seconds.
///
/// # Errors
/// A message when the value is not such a duration or is zero.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 24h, 30m, 7d"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in '{s}'; use s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("'{s}' is too long"))?;
    if secs == 0 {
        return Err("the ttl must be positive".to_owned());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&JwtSecret::new(vec![7; 32]).unwrap())
    }

    #[test]
    fn a_minted_token_verifies_to_its_user() {
        let k = keys();
        let user = UserId::parse("alice").unwrap();
        let t = k.mint(&user, Duration::from_secs(60)).unwrap();
        assert_eq!(k.verify(&t).unwrap(), user);
    }

    #[test]
    fn other_secrets_other_algorithms_and_expired_tokens_are_refused() {
        let k = keys();
        let other = TokenKeys::new(&JwtSecret::new(vec![8; 32]).unwrap());
        let user = UserId::parse("alice").unwrap();
        assert!(k
            .verify(&other.mint(&user, Duration::from_secs(60)).unwrap())
            .is_err());

        let claims = serde_json::json!({"sub": "alice", "exp": unix_now() + 60});
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(&[7; 32]),
        )
        .unwrap();
        assert!(k.verify(&hs512).is_err());

        let expired = serde_json::json!({"sub": "alice", "exp": unix_now() - 3600});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(&[7; 32]),
        )
        .unwrap();
        assert!(k.verify(&t).is_err());

        let no_exp = serde_json::json!({"sub": "alice"});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &no_exp,
            &EncodingKey::from_secret(&[7; 32]),
        )
        .unwrap();
        assert!(k.verify(&t).is_err());

        for sub in ["", &"u".repeat(129)] {
            let c = serde_json::json!({"sub": sub, "exp": unix_now() + 60});
            let t = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(&[7; 32]),
            )
            .unwrap();
            assert!(k.verify(&t).is_err(), "sub {sub:?} must be refused");
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(JwtSecret::new(vec![1; 31]).is_err());
        assert_eq!(
            format!("{:?}", JwtSecret::new(vec![1; 32]).unwrap()),
            "JwtSecret(<redacted>)"
        );
    }

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
