//! Bearer tokens (API.md "Authentication and isolation"): JWTs signed
//! HS256 with the server's secret, or RS256 / ES256 / EdDSA by a key of the
//! identity provider's JWK Set ([`crate::jwks`]), chosen by `kid`.
//!
//! The order of checks is what keeps forgers blind:
//! 1. the header is read without trusting it: a `crit` header is refused
//!    (RFC 7515 §4.1.11: Weft understands no extension), and `alg` must be
//!    HS256 (the secret) or an asymmetric algorithm whose key in the set has
//!    exactly that type — `none`, HS384, PS256, an RSA key asked to verify
//!    ES256 … are refused before any signature is considered;
//! 2. jsonwebtoken verifies the signature (ring's constant-time comparison
//!    for HS256), then `exp` (required, 5 s of leeway), `iss` and `aud`;
//! 3. then `nbf` and `iat` (60 s of leeway each) and `sub`: 1–128
//!    characters, no control character (Unicode Cc), so a user id can never
//!    forge a log line.
//!
//! Every refusal is the same 401 sentence, except one: a token whose
//! signature verified but whose `exp` passed is told so, with how to get a
//! new one — only the key's holder can learn anything from that.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use serde::{Deserialize, Serialize};
use weft_domain::UserId;

use crate::error::ApiError;
use crate::jwks::{Jwks, KeyKind, Lookup};

/// Fewest bytes a secret may have (the HS256 key size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew tolerated on `nbf` and `iat` (API.md: 60 s).
pub const CLOCK_LEEWAY_SECS: u64 = 60;

/// Clock skew tolerated on `exp`.
const EXP_LEEWAY_SECS: u64 = 5;

/// The sentence of every refused token but the expired one.
const REFUSED: &str = "Invalid bearer token.";

/// The sentence of a token whose signature verified but whose `exp` passed.
pub const EXPIRED: &str =
    "The bearer token has expired. Get a new one from your identity provider, \
     or, for tokens signed with the server's secret, with `weft token --user <USER_ID>`.";

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

/// Claims rules beyond signature and expiry (API.md "Claims").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRules {
    /// `WEFT_JWT_ISSUER`: when set, `iss` must be present and equal it.
    pub issuer: Option<String>,
    /// `WEFT_JWT_AUDIENCE`: when set, `aud` (a string or an array) must
    /// contain it; when unset, `aud` is not checked at all.
    pub audience: Option<String>,
}

/// The claims of a minted token.
#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// The claims Weft reads itself after jsonwebtoken checked `exp`, `iss`
/// and `aud`. `nbf`/`iat` may be integers or fractions (RFC 7519 NumericDate);
/// anything else there is a malformed token.
#[derive(Debug, Deserialize)]
struct ReadClaims {
    sub: String,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
}

/// The parts of a JOSE header Weft looks at before verifying.
#[derive(Debug, Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Signs and verifies tokens. Built once, shared by all requests (read-only
/// but for the key set's refreshes); cheap to clone.
#[derive(Clone)]
pub struct TokenKeys {
    inner: Arc<Inner>,
}

struct Inner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    rules: ClaimRules,
    jwks: Option<Arc<Jwks>>,
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
    eddsa: Validation,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("rules", &self.inner.rules)
            .field("jwks", &self.inner.jwks)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused (logged at debug level, never shown: the client
/// sees one 401 sentence, or [`EXPIRED`] for [`TokenError::Expired`]).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header naming `alg`.
    #[error("token is not a JWS compact serialization")]
    Malformed,
    /// The header carries `crit` (RFC 7515 §4.1.11).
    #[error("token header carries a crit parameter; no extension is understood")]
    Critical,
    /// `alg` is neither HS256 nor RS256/ES256/EdDSA with a key set configured.
    #[error("token algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// No key of the set has the token's `kid` (after a refetch, when allowed).
    #[error("no identity provider key has the token's kid")]
    UnknownKey,
    /// The key named by `kid` is of another type than `alg` needs.
    #[error("the token's alg does not match its key's type")]
    KeyMismatch,
    /// The signature verified, and `exp` passed.
    #[error("token expired")]
    Expired,
    /// Signature, `exp` presence, `iss`, `aud` or claim shapes rejected by jsonwebtoken.
    #[error("token rejected: {0}")]
    Jwt(jsonwebtoken::errors::Error),
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    /// `sub` empty, longer than 128 characters, or holding a control character.
    #[error("token subject is not a valid user id")]
    Subject,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        // jsonwebtoken checks `exp` only after the signature verified.
        if matches!(e.kind(), ErrorKind::ExpiredSignature) {
            Self::Expired
        } else {
            Self::Jwt(e)
        }
    }
}

/// A token could not be minted.
#[derive(Debug, thiserror::Error)]
#[error("could not sign the token: {0}")]
pub struct MintError(#[from] jsonwebtoken::errors::Error);

impl TokenKeys {
    /// Keys for `secret` alone, with no issuer or audience rule.
    pub fn new(secret: &JwtSecret) -> Self {
        Self::configured(secret, ClaimRules::default(), None)
    }

    /// Keys for `secret` and, when given, an identity provider's key set,
    /// checking `rules`.
    pub fn configured(secret: &JwtSecret, rules: ClaimRules, jwks: Option<Arc<Jwks>>) -> Self {
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.algorithms = vec![alg];
            let mut required = vec!["exp", "sub"];
            if let Some(iss) = &rules.issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            match &rules.audience {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    required.push("aud");
                }
                None => v.validate_aud = false,
            }
            v.set_required_spec_claims(&required);
            v.validate_exp = true;
            // nbf is checked here with its own leeway (see `check_claims`).
            v.validate_nbf = false;
            v.leeway = EXP_LEEWAY_SECS;
            v
        };
        Self {
            inner: Arc::new(Inner {
                encoding: EncodingKey::from_secret(secret.bytes()),
                decoding: DecodingKey::from_secret(secret.bytes()),
                hs256: validation(Algorithm::HS256),
                rs256: validation(Algorithm::RS256),
                es256: validation(Algorithm::ES256),
                eddsa: validation(Algorithm::EdDSA),
                rules,
                jwks,
            }),
        }
    }

    /// A token for `user`, valid for `ttl` from now, signed HS256 with the
    /// secret, carrying the configured issuer and audience so the server
    /// accepts it.
    ///
    /// # Errors
    /// [`MintError`] if signing fails (it does not for HS256 keys).
    pub fn mint(&self, user: &UserId, ttl: Duration) -> Result<String, MintError> {
        let now = unix_now();
        let claims = MintedClaims {
            sub: user.as_str(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            iss: self.inner.rules.issuer.as_deref(),
            aud: self.inner.rules.audience.as_deref(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.inner.encoding,
        )?)
    }

    /// The user a token speaks for. May refetch the key set once when the
    /// token names an unknown `kid` (see [`Jwks::lookup`]).
    ///
    /// # Errors
    /// [`TokenError`] saying why the token was refused.
    pub async fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        let header = read_header(token)?;
        if header.crit.is_some() {
            return Err(TokenError::Critical);
        }
        let alg = match header.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            _ => return Err(TokenError::Algorithm(shorten(&header.alg))),
        };
        let claims = if alg == Algorithm::HS256 {
            jsonwebtoken::decode::<ReadClaims>(token, &self.inner.decoding, &self.inner.hs256)?
        } else {
            let Some(jwks) = &self.inner.jwks else {
                return Err(TokenError::Algorithm(shorten(&header.alg)));
            };
            let key = match jwks.lookup(header.kid.as_deref(), alg).await {
                Lookup::Found(key) => key,
                Lookup::WrongType => return Err(TokenError::KeyMismatch),
                Lookup::Unknown => return Err(TokenError::UnknownKey),
            };
            let validation = match key.kind() {
                KeyKind::Rsa => &self.inner.rs256,
                KeyKind::EcP256 => &self.inner.es256,
                KeyKind::Ed25519 => &self.inner.eddsa,
            };
            jsonwebtoken::decode::<ReadClaims>(token, key.decoding(), validation)?
        }
        .claims;
        check_claims(&claims, unix_now())?;
        UserId::parse(&claims.sub).map_err(|_| TokenError::Subject)
    }
}

/// Decodes the JOSE header (the first of three `.`-separated parts) without
/// trusting it.
fn read_header(token: &str) -> Result<JoseHeader, TokenError> {
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// `nbf`, `iat` and `sub`, checked after the signature.
fn check_claims(claims: &ReadClaims, now: u64) -> Result<(), TokenError> {
    // u64 → f64 is exact for any Unix time of the next 285 million years.
    #[allow(clippy::cast_precision_loss)]
    let latest = (now + CLOCK_LEEWAY_SECS) as f64;
    if claims.nbf.is_some_and(|nbf| nbf > latest) {
        return Err(TokenError::NotYetValid);
    }
    if claims.iat.is_some_and(|iat| iat > latest) {
        return Err(TokenError::IssuedInFuture);
    }
    if !is_safe_subject(&claims.sub) {
        return Err(TokenError::Subject);
    }
    Ok(())
}

/// Whether `sub` may be a user id: 1–128 characters, none a control
/// character (Unicode Cc: C0, DEL, C1), so it is safe in any log line.
pub fn is_safe_subject(sub: &str) -> bool {
    let n = sub.chars().count();
    (1..=128).contains(&n) && !sub.chars().any(char::is_control)
}

fn shorten(s: &str) -> String {
    s.chars().take(32).collect()
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
    let Some(keys) = req.data::<TokenKeys>() else {
        tracing::error!("token keys missing from the request data");
        return Err(ApiError::internal().into());
    };
    // Two `Authorization` headers are ambiguous (which one speaks for the
    // caller?): refused, like a repeated `Idempotency-Key`, rather than
    // resolved by order.
    if req
        .headers()
        .get_all(poem::http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::unauthorized(REFUSED).into());
    }
    keys.verify(&bearer.token).await.map_err(|e| {
        tracing::debug!(reason = %e, "token refused");
        match e {
            TokenError::Expired => ApiError::unauthorized(EXPIRED).into(),
            _ => ApiError::unauthorized(REFUSED).into(),
        }
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
    use serde_json::json;

    const SECRET: [u8; 32] = [7; 32];

    fn keys() -> TokenKeys {
        TokenKeys::new(&JwtSecret::new(SECRET.to_vec()).unwrap())
    }

    fn sign(header: &Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(&SECRET)).unwrap()
    }

    fn hs(claims: serde_json::Value) -> String {
        sign(&Header::new(Algorithm::HS256), &claims)
    }

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    #[tokio::test]
    async fn a_minted_token_verifies_to_its_user() {
        let k = keys();
        let user = UserId::parse("alice").unwrap();
        let t = k.mint(&user, Duration::from_secs(60)).unwrap();
        assert_eq!(k.verify(&t).await.unwrap(), user);
    }

    #[tokio::test]
    async fn other_secrets_other_algorithms_and_expired_tokens_are_refused() {
        let k = keys();
        let other = TokenKeys::new(&JwtSecret::new(vec![8; 32]).unwrap());
        let user = UserId::parse("alice").unwrap();
        let forged = other.mint(&user, Duration::from_secs(60)).unwrap();
        assert!(matches!(k.verify(&forged).await, Err(TokenError::Jwt(_))));

        let claims = json!({"sub": "alice", "exp": unix_now() + 60});
        let hs512 = sign(&Header::new(Algorithm::HS512), &claims);
        assert!(matches!(
            k.verify(&hs512).await,
            Err(TokenError::Algorithm(_))
        ));
        // Asymmetric algorithms need a key set; none is configured.
        let rs = format!(
            "{}.{}.sig",
            b64(br#"{"alg":"RS256"}"#),
            b64(claims.to_string().as_bytes())
        );
        assert!(matches!(k.verify(&rs).await, Err(TokenError::Algorithm(_))));
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(claims.to_string().as_bytes())
        );
        assert!(matches!(
            k.verify(&none).await,
            Err(TokenError::Algorithm(_))
        ));

        let expired = hs(json!({"sub": "alice", "exp": unix_now() - 3600}));
        assert!(matches!(k.verify(&expired).await, Err(TokenError::Expired)));
        assert!(
            k.verify(&hs(json!({"sub": "alice"}))).await.is_err(),
            "exp is required"
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.e30.x", "e30.e30.x"] {
            assert!(k.verify(garbage).await.is_err(), "{garbage:?}");
        }
    }

    #[tokio::test]
    async fn only_a_verified_signature_learns_that_its_token_expired() {
        let k = keys();
        let claims = json!({"sub": "alice", "exp": unix_now() - 3600});
        let expired = hs(claims.clone());
        assert!(matches!(k.verify(&expired).await, Err(TokenError::Expired)));
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[9; 32]),
        )
        .unwrap();
        assert!(matches!(k.verify(&forged).await, Err(TokenError::Jwt(_))));
    }

    #[tokio::test]
    async fn nbf_and_iat_are_honoured_with_sixty_seconds_of_leeway() {
        let k = keys();
        let now = unix_now();
        let exp = now + 3600;
        for (claims, ok) in [
            (json!({"sub": "a", "exp": exp, "nbf": now + 30}), true),
            (json!({"sub": "a", "exp": exp, "nbf": now - 30}), true),
            (json!({"sub": "a", "exp": exp, "nbf": now + 600}), false),
            (json!({"sub": "a", "exp": exp, "iat": now + 30}), true),
            (json!({"sub": "a", "exp": exp, "iat": now + 600}), false),
            (
                json!({"sub": "a", "exp": exp, "iat": (now as f64) + 0.5}),
                true,
            ),
            (json!({"sub": "a", "exp": exp, "iat": "yesterday"}), false),
            (json!({"sub": "a", "exp": exp, "nbf": "now"}), false),
        ] {
            assert_eq!(k.verify(&hs(claims.clone())).await.is_ok(), ok, "{claims}");
        }
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_only_when_configured() {
        let exp = unix_now() + 3600;
        let plain = keys();
        // Unset: any aud (string or array) and any iss are accepted (Supabase-style tokens).
        for claims in [
            json!({"sub": "a", "exp": exp, "aud": "authenticated"}),
            json!({"sub": "a", "exp": exp, "aud": ["x", "y"], "iss": "https://idp"}),
        ] {
            assert!(plain.verify(&hs(claims)).await.is_ok());
        }
        let strict = TokenKeys::configured(
            &JwtSecret::new(SECRET.to_vec()).unwrap(),
            ClaimRules {
                issuer: Some("https://idp/".into()),
                audience: Some("weft".into()),
            },
            None,
        );
        for (claims, ok) in [
            (
                json!({"sub": "a", "exp": exp, "iss": "https://idp/", "aud": "weft"}),
                true,
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://idp/", "aud": ["other", "weft"]}),
                true,
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://idp/", "aud": ["other"]}),
                false,
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://idp/"}),
                false,
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://evil/", "aud": "weft"}),
                false,
            ),
            (json!({"sub": "a", "exp": exp, "aud": "weft"}), false),
        ] {
            assert_eq!(
                strict.verify(&hs(claims.clone())).await.is_ok(),
                ok,
                "{claims}"
            );
        }
        // Tokens the server mints carry the configured issuer and audience.
        let t = strict
            .mint(&UserId::parse("a").unwrap(), Duration::from_secs(60))
            .unwrap();
        assert!(strict.verify(&t).await.is_ok());
    }

    #[tokio::test]
    async fn a_crit_header_is_refused() {
        let claims = json!({"sub": "a", "exp": unix_now() + 60});
        let head = b64(br#"{"alg":"HS256","crit":["exp"],"exp":1}"#);
        let body = b64(claims.to_string().as_bytes());
        let input = format!("{head}.{body}");
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(&SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        let token = format!("{input}.{sig}");
        assert!(matches!(
            keys().verify(&token).await,
            Err(TokenError::Critical)
        ));
        // The same token without crit verifies: the refusal is the crit header's.
        let head = b64(br#"{"alg":"HS256"}"#);
        let input = format!("{head}.{body}");
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(&SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        assert!(keys().verify(&format!("{input}.{sig}")).await.is_ok());
    }

    #[tokio::test]
    async fn subjects_must_be_short_and_free_of_control_characters() {
        let k = keys();
        let exp = unix_now() + 60;
        for (sub, ok) in [
            ("a", true),
            (&*"u".repeat(128), true),
            ("名前", true),
            ("", false),
            (&*"u".repeat(129), false),
            ("evil\nINFO forged", false),
            ("\u{1b}[31mred", false),
            ("tab\there", false),
            ("del\u{7f}", false),
            ("c1\u{85}", false),
            ("nul\u{0}", false),
        ] {
            assert_eq!(
                k.verify(&hs(json!({"sub": sub, "exp": exp}))).await.is_ok(),
                ok,
                "{sub:?}"
            );
        }
        assert!(k.verify(&hs(json!({"sub": 42, "exp": exp}))).await.is_err());
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
