//! An identity provider's public keys: a JWK Set (RFC 7517), chosen by
//! `kid`, kept fresh (API.md "Authentication and isolation").
//!
//! [`KeySet::parse`] keeps only the keys Weft can verify with — RSA keys
//! for RS256, EC P-256 keys for ES256, OKP Ed25519 keys for EdDSA — and
//! skips the rest (encryption keys, other curves, x5c-only keys) instead of
//! refusing the whole set: providers publish mixed sets. [`Jwks`] holds the
//! current set behind a lock that is never held across an `.await`, and
//! refetches it from its [`JwksSource`] on demand: on a schedule (the
//! composition root's task, every 10 minutes) and when a token names an
//! unknown `kid` — at most once per `min_refetch` (30 s), so a flood of
//! random `kid`s costs the provider one request per 30 s. A refetch that
//! fails keeps the last good keys and is logged.
//!
//! Fetching itself (HTTP, file) is the composition root's business: this
//! module only knows the [`JwksSource`] port.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Any error a [`JwksSource`] reports (its text is logged, never shown to clients).
pub type FetchError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where a JWK Set comes from: an `http(s)` URL or a file.
#[async_trait]
pub trait JwksSource: Send + Sync + fmt::Debug {
    /// The JWK Set document as text.
    ///
    /// # Errors
    /// When the set cannot be read (unreachable, not 2xx, too large, I/O);
    /// the caller keeps its last good keys.
    async fn fetch(&self) -> Result<String, FetchError>;

    /// The URL or path, for logs.
    fn describe(&self) -> String;
}

/// The kinds of key a token may be verified with, each tied to exactly one
/// algorithm: a token whose `alg` does not match its key's kind is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA, for RS256.
    Rsa,
    /// EC on P-256, for ES256.
    EcP256,
    /// OKP Ed25519, for EdDSA.
    Ed25519,
}

impl KeyKind {
    /// The one algorithm this kind of key verifies.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Rsa => Algorithm::RS256,
            Self::EcP256 => Algorithm::ES256,
            Self::Ed25519 => Algorithm::EdDSA,
        }
    }

    /// The kind of key an asymmetric `alg` needs; `None` for any other algorithm.
    pub fn for_algorithm(alg: Algorithm) -> Option<Self> {
        match alg {
            Algorithm::RS256 => Some(Self::Rsa),
            Algorithm::ES256 => Some(Self::EcP256),
            Algorithm::EdDSA => Some(Self::Ed25519),
            _ => None,
        }
    }
}

/// One usable public key of the set.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    kind: KeyKind,
    decoding: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// The key's type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key, ready for jsonwebtoken.
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The set of keys a JWKS document yielded.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyingKey>>,
    /// The only key, when the set holds exactly one: a token without `kid`
    /// is verified with it (self-hosted issuers often omit `kid`).
    only: Option<Arc<VerifyingKey>>,
    skipped: usize,
}

/// A JWKS document Weft cannot use at all.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("not a JWK Set (a JSON object with a \"keys\" array): {0}")]
    NotASet(String),
    /// No key of the set can verify RS256, ES256 or EdDSA signatures.
    #[error(
        "the JWK Set holds no usable signing key (RSA for RS256, EC P-256 for ES256, \
         OKP Ed25519 for EdDSA); {skipped} other key(s) skipped"
    )]
    NoUsableKeys {
        /// Keys present but unusable.
        skipped: usize,
    },
    /// The source could not be read.
    #[error("could not read the JWK Set from {source_name}: {cause}")]
    Fetch {
        /// The URL or file.
        source_name: String,
        /// The source's error, with its chain.
        cause: String,
    },
}

/// What looking a key up found.
#[derive(Debug)]
pub enum Lookup {
    /// The key to verify with.
    Found(Arc<VerifyingKey>),
    /// The key exists, but is of another type than the token's `alg` needs.
    WrongType,
    /// No key has this `kid` (or the token has none and the set is not a single key).
    Unknown,
}

impl KeySet {
    /// Parses a JWK Set document, keeping every key usable for RS256, ES256
    /// or EdDSA verification. A key declaring `use: enc`, an `alg` other than
    /// its type's algorithm, an unsupported curve or unparsable parameters
    /// is skipped.
    ///
    /// # Errors
    /// [`JwksError::NotASet`] when the text is not a JWK Set;
    /// [`JwksError::NoUsableKeys`] when no key is usable.
    pub fn parse(text: &str) -> Result<Self, JwksError> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| JwksError::NotASet(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| JwksError::NotASet("no \"keys\" array".to_owned()))?;
        let mut set = Self::default();
        let mut usable = Vec::new();
        for raw in keys {
            match usable_key(raw) {
                Some(key) => usable.push(Arc::new(key)),
                None => set.skipped += 1,
            }
        }
        if usable.is_empty() {
            return Err(JwksError::NoUsableKeys {
                skipped: set.skipped,
            });
        }
        if usable.len() == 1 {
            set.only = usable.first().cloned();
        }
        for key in usable {
            if let Some(kid) = &key.kid {
                // The first key with a kid wins; a duplicate kid is a provider bug.
                set.by_kid.entry(kid.clone()).or_insert_with(|| key.clone());
            }
        }
        Ok(set)
    }

    /// The key a token with `kid` and the asymmetric `alg` must be verified with.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let key = match kid {
            Some(kid) => self.by_kid.get(kid),
            None => self.only.as_ref(),
        };
        match key {
            None => Lookup::Unknown,
            Some(k) if KeyKind::for_algorithm(alg) == Some(k.kind) => Lookup::Found(k.clone()),
            Some(_) => Lookup::WrongType,
        }
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.only.as_ref().map_or(self.by_kid.len(), |_| 1)
    }

    /// Whether the set holds no usable key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `kid`s of the set, sorted (for logs).
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.by_kid.keys().cloned().collect();
        kids.sort_unstable();
        kids
    }
}

fn usable_key(raw: &serde_json::Value) -> Option<VerifyingKey> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => KeyKind::EcP256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        // Symmetric keys never come from a key set (that would let anyone
        // who reads the set mint tokens), and other curves are unsupported.
        _ => return None,
    };
    let declared_ok = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => kind == KeyKind::Rsa,
        Some(KeyAlgorithm::ES256) => kind == KeyKind::EcP256,
        Some(KeyAlgorithm::EdDSA) => kind == KeyKind::Ed25519,
        Some(_) => false,
    };
    if !declared_ok {
        return None;
    }
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        kind,
        decoding,
    })
}

/// The identity provider's current keys, refreshed from their source.
pub struct Jwks {
    current: RwLock<Arc<KeySet>>,
    source: Arc<dyn JwksSource>,
    /// When the last fetch started; held during a fetch so concurrent
    /// requests with a new `kid` share one fetch.
    last_fetch: tokio::sync::Mutex<Instant>,
    min_refetch: Duration,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source.describe())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Fetches the set once (at start: an unreachable or unusable source is
    /// an error, so a misconfigured server does not start).
    ///
    /// # Errors
    /// [`JwksError`] when the source cannot be read or holds no usable key.
    pub async fn load(
        source: Arc<dyn JwksSource>,
        min_refetch: Duration,
    ) -> Result<Self, JwksError> {
        let set = fetch_set(source.as_ref()).await?;
        tracing::info!(
            source = %source.describe(),
            keys = set.len(),
            kids = ?set.kids(),
            skipped = set.skipped,
            "identity provider keys loaded"
        );
        Ok(Self {
            current: RwLock::new(Arc::new(set)),
            source,
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
            min_refetch,
        })
    }

    /// The source, for logs.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            // A poisoned lock still holds a whole Arc: the writer only swaps it.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Refetches now (the scheduled refresh). On failure the last good keys
    /// stay in use and the failure is logged.
    ///
    /// # Errors
    /// The failure, after logging it.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.last_fetch.lock().await;
        *last = Instant::now();
        self.fetch_and_swap().await
    }

    /// The key for a token's `kid` and `alg`. An unknown `kid` refetches the
    /// set first, unless a fetch started less than `min_refetch` ago.
    pub async fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let seen = self.current();
        match seen.lookup(kid, alg) {
            Lookup::Unknown => {}
            found => return found,
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another request may have fetched while this one waited for the lock.
            let now_current = self.current();
            if !Arc::ptr_eq(&seen, &now_current) {
                return now_current.lookup(kid, alg);
            }
            if last.elapsed() < self.min_refetch {
                return Lookup::Unknown;
            }
            *last = Instant::now();
            tracing::info!(source = %self.source.describe(), "token names an unknown key id; refetching the identity provider keys");
            // The failure is already logged; the lookup below uses the last good keys.
            let _ = self.fetch_and_swap().await;
        }
        self.current().lookup(kid, alg)
    }

    async fn fetch_and_swap(&self) -> Result<(), JwksError> {
        match fetch_set(self.source.as_ref()).await {
            Ok(set) => {
                let old = self.current();
                if old.kids() != set.kids() || old.len() != set.len() {
                    tracing::info!(
                        source = %self.source.describe(),
                        keys = set.len(),
                        kids = ?set.kids(),
                        "identity provider keys changed"
                    );
                }
                let set = Arc::new(set);
                match self.current.write() {
                    Ok(mut g) => *g = set,
                    Err(poisoned) => *poisoned.into_inner() = set,
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "identity provider keys could not be refreshed; keeping the last good keys"
                );
                Err(e)
            }
        }
    }
}

async fn fetch_set(source: &dyn JwksSource) -> Result<KeySet, JwksError> {
    let text = source.fetch().await.map_err(|e| JwksError::Fetch {
        source_name: source.describe(),
        cause: crate::error::chain(e.as_ref()),
    })?;
    KeySet::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A P-256 public key (RFC 7517 appendix A.1) and an RSA one (A.1 too).
    const EC: &str = r#"{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"sig","kid":"ec1"}"#;
    const RSA: &str = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"rsa1"}"#;

    fn set(keys: &[&str]) -> String {
        format!(r#"{{"keys":[{}]}}"#, keys.join(","))
    }

    #[test]
    fn keys_are_chosen_by_kid_and_must_match_the_tokens_algorithm() {
        let s = KeySet::parse(&set(&[EC, RSA])).unwrap();
        assert_eq!(s.kids(), ["ec1", "rsa1"]);
        assert!(
            matches!(s.lookup(Some("ec1"), Algorithm::ES256), Lookup::Found(k) if k.kind() == KeyKind::EcP256)
        );
        assert!(matches!(
            s.lookup(Some("rsa1"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            s.lookup(Some("rsa1"), Algorithm::ES256),
            Lookup::WrongType
        ));
        assert!(matches!(
            s.lookup(Some("ec1"), Algorithm::EdDSA),
            Lookup::WrongType
        ));
        assert!(matches!(
            s.lookup(Some("ec1"), Algorithm::HS256),
            Lookup::WrongType
        ));
        assert!(matches!(
            s.lookup(Some("nope"), Algorithm::RS256),
            Lookup::Unknown
        ));
        // Two keys: a token without kid names none of them.
        assert!(matches!(s.lookup(None, Algorithm::RS256), Lookup::Unknown));
        let one = KeySet::parse(&set(&[RSA])).unwrap();
        assert!(matches!(
            one.lookup(None, Algorithm::RS256),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn unusable_keys_are_skipped_and_a_set_without_usable_keys_is_refused() {
        let enc = RSA.replace(r#""alg":"RS256""#, r#""use":"enc""#);
        let oaep = RSA.replace(r#""alg":"RS256""#, r#""alg":"RSA-OAEP""#);
        let p384 = EC.replace("P-256", "P-384");
        let oct = r#"{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}"#;
        let bogus = r#"{"kty":"nope"}"#;
        let s = KeySet::parse(&set(&[EC, &enc, &oaep, &p384, oct, bogus])).unwrap();
        assert_eq!(s.kids(), ["ec1"]);
        assert_eq!(s.skipped, 5);
        assert!(matches!(
            KeySet::parse(&set(&[oct, &enc])),
            Err(JwksError::NoUsableKeys { skipped: 2 })
        ));
        assert!(matches!(KeySet::parse("[]"), Err(JwksError::NotASet(_))));
        assert!(matches!(KeySet::parse("nope"), Err(JwksError::NotASet(_))));
    }
}
