//! What the model-backed title generator is configured with.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

/// Default bound on one title generation, retry included (API.md
/// configuration: `WEFT_TITLE_TIMEOUT_MS`, default 3000).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);

/// Default bound on concurrent requests to the model endpoint, and so on
/// its open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

/// A bearer key for the model endpoint. Its `Debug` never shows it, and it
/// is sent as a header marked sensitive (kept out of HTTP/2 header tables
/// and reqwest's debug output).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; surrounding white space (a file's trailing newline) is dropped.
    pub fn new(key: &str) -> Self {
        Self(key.trim().to_owned())
    }

    /// Whether nothing is left of the key after trimming.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Where and how to ask for titles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The API base, e.g. `http://127.0.0.1:11434/v1`: requests go to
    /// `<base>/chat/completions` (a base that already ends in
    /// `/chat/completions` is used as is). `http` or `https` only.
    pub base_url: Url,
    /// The model name the endpoint expects (e.g. `llama3.2:1b`, `gpt-4o-mini`).
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when given.
    pub api_key: Option<ApiKey>,
    /// Bound on one generation from call to answer: waiting for a free
    /// connection slot, both attempts and reading the answer.
    pub timeout: Duration,
    /// Most requests in flight to the endpoint at once (and so most open
    /// connections); further callers wait, within their timeout.
    pub max_connections: usize,
}

impl ModelConfig {
    /// A configuration with the default timeout and connection bound.
    pub fn new(base_url: Url, model: impl Into<String>) -> Self {
        Self {
            base_url,
            model: model.into(),
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// The chat-completions URL derived from [`ModelConfig::base_url`].
    pub fn endpoint(&self) -> Url {
        let mut url = self.base_url.clone();
        let path = url.path().trim_end_matches('/').to_owned();
        if !path.ends_with("/chat/completions") {
            url.set_path(&format!("{path}/chat/completions"));
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_base_url_plus_chat_completions() {
        for (base, want) in [
            (
                "http://127.0.0.1:11434/v1",
                "http://127.0.0.1:11434/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:11434/v1/",
                "http://127.0.0.1:11434/v1/chat/completions",
            ),
            (
                "https://api.openai.com/v1/chat/completions",
                "https://api.openai.com/v1/chat/completions",
            ),
            ("http://h:8080", "http://h:8080/chat/completions"),
        ] {
            let cfg = ModelConfig::new(Url::parse(base).unwrap(), "m");
            assert_eq!(cfg.endpoint().as_str(), want, "base {base}");
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let mut cfg = ModelConfig::new(Url::parse("http://h/v1").unwrap(), "m");
        cfg.api_key = Some(ApiKey::new("sk-very-secret\n"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(cfg.api_key.unwrap().expose(), "sk-very-secret");
    }
}
