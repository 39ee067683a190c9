//! Where the identity provider's JWK Set is read from: `WEFT_JWKS_URL`
//! (http or https; reqwest with rustls and the system's roots) or
//! `WEFT_JWKS_FILE`. Both implement `weft_http::jwks::JwksSource`; the key
//! rules, `kid` choice and refetch limits are weft-http's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weft_http::jwks::{FetchError, Jwks, JwksSource};

/// Largest JWK Set accepted, in bytes: providers publish a few keys
/// (a few KiB); a misconfigured URL must not fill the memory.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the key set lives (`WEFT_JWKS_URL` / `WEFT_JWKS_FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// An `http(s)` URL.
    Url(reqwest::Url),
    /// A file.
    File(PathBuf),
}

/// `WEFT_JWKS_URL` is not an `http(s)` URL.
#[derive(Debug, thiserror::Error)]
#[error("WEFT_JWKS_URL must be an http:// or https:// URL ({0})")]
pub struct BadJwksUrl(String);

impl JwksLocation {
    /// Parses `WEFT_JWKS_URL`.
    ///
    /// # Errors
    /// [`BadJwksUrl`] for anything but an absolute `http`/`https` URL.
    pub fn url(text: &str) -> Result<Self, BadJwksUrl> {
        let url = reqwest::Url::parse(text).map_err(|e| BadJwksUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BadJwksUrl(format!("scheme '{}'", url.scheme())));
        }
        Ok(Self::Url(url))
    }

    /// The source reading this location.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots can be loaded).
    pub fn source(&self) -> Result<Arc<dyn JwksSource>, FetchError> {
        Ok(match self {
            Self::Url(url) => Arc::new(HttpJwks::new(url.clone())?),
            Self::File(path) => Arc::new(FileJwks(path.clone())),
        })
    }
}

/// A key set served over HTTP(S).
#[derive(Debug)]
pub struct HttpJwks {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl HttpJwks {
    /// A source for `url`, with connect (5 s) and whole-request (10 s) timeouts.
    ///
    /// # Errors
    /// When reqwest cannot build its client.
    pub fn new(url: reqwest::Url) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, url })
    }
}

#[async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self) -> Result<String, FetchError> {
        let mut resp = self
            .client
            .get(self.url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await?
            .error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWK Set is larger than {MAX_JWKS_BYTES} bytes").into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8(body)?)
    }

    fn describe(&self) -> String {
        // A URL's userinfo could hold a credential: never log it.
        let mut shown = self.url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.to_string()
    }
}

/// A key set kept in a file (re-read on every refresh).
#[derive(Debug)]
pub struct FileJwks(PathBuf);

#[async_trait]
impl JwksSource for FileJwks {
    async fn fetch(&self) -> Result<String, FetchError> {
        let len = tokio::fs::metadata(&self.0).await?.len();
        if len > MAX_JWKS_BYTES as u64 {
            return Err(format!("the JWK Set is larger than {MAX_JWKS_BYTES} bytes").into());
        }
        Ok(tokio::fs::read_to_string(&self.0).await?)
    }

    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// Refreshes `jwks` every `every` until aborted (the scheduled refresh of
/// API.md: 10 minutes). A failure keeps the last good keys (logged by
/// `Jwks::refresh`).
pub async fn refresh_every(jwks: Arc<Jwks>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the set was just loaded.
    tick.tick().await;
    loop {
        tick.tick().await;
        let _ = jwks.refresh().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(JwksLocation::url("https://idp.example/.well-known/jwks.json").is_ok());
        assert!(JwksLocation::url("http://127.0.0.1:9/jwks").is_ok());
        assert!(JwksLocation::url("file:///etc/jwks.json").is_err());
        assert!(JwksLocation::url("idp.example/jwks").is_err());
    }

    #[test]
    fn credentials_in_the_url_are_never_shown() {
        let s = HttpJwks::new(reqwest::Url::parse("https://u:hunter2@idp/jwks").unwrap()).unwrap();
        assert!(!s.describe().contains("hunter2"), "{}", s.describe());
    }
}
