//! Weft's `TitleGenerator` port on a language model: `auto_rename` asks any
//! OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp's
//! server, Ollama, LiteLLM) for a short title.
//!
//! Layout:
//! - [`ModelConfig`] / [`ApiKey`]: the endpoint, model, key, timeout and
//!   connection bound (the composition root fills them from `WEFT_TITLE_*`).
//! - [`ModelTitles`]: the adapter. One bounded prompt per call (the first
//!   user message, cut to [`MAX_PROMPT_CHARS`]), one retry at most (only
//!   when the endpoint was certainly not reached or said it was busy), a
//!   semaphore bounding requests in flight, a timeout over the whole call.
//! - [`clean_title`]: the model's answer → one valid [`weft_domain::Title`],
//!   or a refusal.
//! - [`TitleObserver`] / [`TitleOutcome`]: how each call ended (`ok`,
//!   `timeout`, `error`, `invalid`) and how long it took, for metrics,
//!   without this crate knowing Prometheus.
//!
//! What this crate does *not* do: fall back. Every failure is returned as a
//! [`weft_ports::TitleError`] whose text names the cause; the app
//! (`weft-app`, `rename.rs`) replaces it with the derived title and logs a
//! warning carrying the request id. The app also keeps the rule that no
//! unit of work is open while a generator runs.
//!
//! Architecture invariant: depends on `weft-ports`, `weft-domain` and an
//! HTTP client (reqwest with rustls); never on `weft-app`, the HTTP crate or
//! a storage adapter (`crates/server/tests/architecture.rs`). No reqwest
//! type appears in a port signature.

mod clean;
mod config;
mod model;

pub use clean::{clean_title, Unusable};
pub use config::{ApiKey, ModelConfig, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT};
/// The URL type of [`ModelConfig::base_url`] (the `url` crate's, as re-exported by reqwest).
pub use reqwest::Url;

pub use model::{
    ModelTitles, ModelTitlesError, NoTitleObserver, TitleObserver, TitleOutcome, MAX_ANSWER_BYTES,
    MAX_PROMPT_CHARS, MAX_TOKENS,
};
