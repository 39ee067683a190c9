//! Configuration: the `weft` command line, each setting also a `WEFT_*`
//! environment variable (API.md's configuration table), and the JWT secret
//! file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use weft_adapters_titles::{ApiKey, ModelConfig, Url};
use weft_app::lifecycle::BatchPolicy;
use weft_domain::Retention;
use weft_http::auth::{parse_ttl, ClaimRules, JwtSecret, MIN_SECRET_BYTES};
use weft_http::body::BodyConfig;

use crate::invocation::Invocation;
use crate::jwks::{BadJwksUrl, JwksLocation};
use crate::serve::ConnectionLimits;

/// Weft: OpenAI-compatible conversation threads, transaction-safe.
#[derive(Debug, Parser)]
#[command(name = "weft", version)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of `serve`, also accepted without the subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The `weft` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve the API (the default).
    // Boxed: the serve settings dwarf the other commands' (clap parses into
    // it once; the size of the enum is otherwise that of its largest arm).
    Serve(Box<ServeArgs>),
    /// Print a bearer token for a user, signed with the configured secret.
    Token(TokenArgs),
    /// Apply pending migrations and exit.
    Migrate(DatabaseArgs),
    /// Physically delete threads and messages deleted through the API more
    /// than DURATION ago, in bounded batches; safe while `weft serve` runs.
    Purge(PurgeArgs),
    /// Write a user's live threads, each followed by its messages, as JSON
    /// lines to stdout (the API's object shapes), from one snapshot.
    Export(ExportArgs),
    /// Delete every row of a user (threads, messages, archived rows,
    /// idempotency records) in bounded batches; idempotent.
    EraseUser(EraseArgs),
    /// Copy the live SQLite database to a new file (PostgreSQL: use pg_dump).
    Backup(BackupArgs),
}

/// How maintenance commands cut their work into batches.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Most rows of one kind each batch (one short transaction) changes.
    #[arg(long, default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Pause after each batch, in milliseconds. On SQLite, keep it well
    /// above 100 so that the server's writers (which poll for the write
    /// lock up to every 100 ms) get in between two batches.
    #[arg(long, default_value_t = 200)]
    pub pause_ms: u64,
}

impl BatchArgs {
    /// The batch policy these flags ask for.
    pub fn policy(&self) -> BatchPolicy {
        BatchPolicy {
            batch_size: self.batch_size,
            pause: Duration::from_millis(self.pause_ms),
            ..BatchPolicy::default()
        }
    }
}

/// Settings of `weft purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Purge what was deleted through the API more than this long ago:
    /// `30d`, `24h`, `90m`, `45s` (`0s`: everything deleted so far).
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub archived_before: Duration,
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Batching.
    #[command(flatten)]
    pub batches: BatchArgs,
}

/// Settings of `weft export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The user id whose data to write (exactly as in the tokens' `sub`).
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Settings of `weft erase-user`.
#[derive(Debug, Clone, Args)]
pub struct EraseArgs {
    /// The user id whose rows to delete (exactly as in the tokens' `sub`).
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Batching.
    #[command(flatten)]
    pub batches: BatchArgs,
}

/// Settings of `weft backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The new file to write (never overwritten).
    #[arg(long, value_name = "PATH")]
    pub to: PathBuf,
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// A duration such as `30d`, `24h`, `90m` or `45s` (a bare number is
/// seconds), zero allowed: how far back a maintenance command reaches.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    match s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) {
        digits if !digits.is_empty() && digits.bytes().all(|b| b == b'0') => {
            // "0s", "0d": parse_ttl refuses zero, which is a valid age.
            parse_ttl(&format!("1{}", &s.trim()[digits.len()..])).map(|_| Duration::ZERO)
        }
        _ => parse_ttl(s),
    }
}

/// `WEFT_IDEMPOTENCY_RETENTION`: a duration (`30d`, `24h`, `36h`; a bare
/// number is seconds) of at least 24 h.
///
/// # Errors
/// A message naming the accepted forms, or why a shorter one is refused.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    let d = parse_ttl(s)?;
    Retention::from_secs(d.as_secs()).map_err(|e| e.to_string())
}

/// How often the server sweeps expired idempotency records.
pub const IDEMPOTENCY_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The server's background data lifecycle.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleSettings {
    /// How long idempotency records are kept (`WEFT_IDEMPOTENCY_RETENTION`).
    pub idempotency_retention: Retention,
    /// Time between two expiry sweeps.
    pub sweep_every: Duration,
    /// Batching of the expiry.
    pub batches: BatchPolicy,
}

impl Default for LifecycleSettings {
    /// 24 h retention, a sweep a minute, default batches.
    fn default() -> Self {
        Self {
            idempotency_retention: Retention::DEFAULT,
            sweep_every: IDEMPOTENCY_SWEEP_EVERY,
            batches: BatchPolicy::default(),
        }
    }
}

/// Where the data lives, and the secret that signs tokens.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://weft.db` (relative to the working directory),
    /// `sqlite:///abs/path.db`, or `postgres://user:pass@host/db`.
    #[arg(long, env = "WEFT_DATABASE_URL", default_value = weft_adapters_sqlite::SqliteConfig::DEFAULT_URL)]
    pub database_url: String,
    /// Most database connections this process opens (at least 1).
    #[arg(long, env = "WEFT_POOL_MAX", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_max: u32,
    /// Per-statement timeout in milliseconds (PostgreSQL).
    #[arg(long, env = "WEFT_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub statement_timeout_ms: u64,
    /// PostgreSQL: `on` prepares each statement once per connection and
    /// reuses it; `off` uses no named prepared statements, for a pooler in
    /// transaction mode (PgBouncer). API.md, Configuration.
    #[arg(long, env = "WEFT_PG_STATEMENT_CACHE", default_value = "on")]
    pub pg_statement_cache: Switch,
}

/// An `on`/`off` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Switch {
    /// `true` for [`Switch::On`].
    pub fn is_on(self) -> bool {
        self == Self::On
    }
}

/// The token secret's sources.
#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// HS256 secret, at least 32 bytes. When unset, a random one is
    /// generated on first start and kept (mode 0600) in the secret file.
    #[arg(long, env = "WEFT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Where the generated secret is kept. Default: beside the SQLite
    /// database (`<db>.jwt-secret`), or `./weft.jwt-secret` for PostgreSQL.
    #[arg(long, env = "WEFT_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
}

/// Claims every token must carry (API.md "Claims"), shared by `serve`
/// (which checks them) and `token` (which puts them in the tokens it mints).
#[derive(Debug, Clone, Args)]
pub struct ClaimArgs {
    /// Required `iss`: every token's `iss` must equal it. Unset: not checked.
    #[arg(long, env = "WEFT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accepted audience: every token's `aud` must contain it. Unset: `aud`
    /// is not checked (tokens from providers that always set it work).
    #[arg(long, env = "WEFT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl ClaimArgs {
    /// The rules; an empty value counts as unset.
    pub fn rules(&self) -> ClaimRules {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        ClaimRules {
            issuer: set(&self.jwt_issuer),
            audience: set(&self.jwt_audience),
        }
    }
}

/// Settings of `weft serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Token secret settings.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Claims rules.
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// An identity provider's JWK Set, by `http(s)` URL: fetched at start,
    /// refreshed every 10 minutes and on an unknown `kid` (at most once per
    /// 30 s). RS256, ES256 and EdDSA tokens signed by its keys are accepted.
    #[arg(long, env = "WEFT_JWKS_URL", conflicts_with = "jwks_file")]
    pub jwks_url: Option<String>,
    /// An identity provider's JWK Set, from a file (re-read on the same schedule).
    #[arg(long, env = "WEFT_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Scheduled key set refresh, in seconds (for tests).
    #[arg(long, hide = true, default_value_t = 600)]
    pub jwks_refresh_secs: u64,
    /// Least time between two fetches of the key set for unknown `kid`s,
    /// in seconds (for tests).
    #[arg(long, hide = true, default_value_t = 30)]
    pub jwks_min_refetch_secs: u64,
    /// Time for a request head to arrive after its first byte, in ms (for tests).
    #[arg(long, hide = true, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Idle time after which a connection is closed, in ms (for tests).
    #[arg(long, hide = true, default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Listen address.
    #[arg(long, env = "WEFT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// `tracing` filter, e.g. `info` or `weft_http=debug,info`.
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    pub log: String,
    /// Log format: `text` or `json` (JSON lines).
    #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// How long in-flight requests may run after SIGTERM/Ctrl-C, in seconds.
    #[arg(long, env = "WEFT_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// Deadline of one request's work, in milliseconds.
    #[arg(long, env = "WEFT_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Largest request body in bytes, counted after decoding (413 above).
    /// The default fits one message at the 256,000-character limit in any
    /// JSON encoding.
    #[arg(long, env = "WEFT_MAX_BODY_BYTES", default_value_t = weft_http::body::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive after its headers, in
    /// milliseconds (408 after).
    #[arg(long, env = "WEFT_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Most bytes all request bodies being read may hold at once; a body
    /// that would pass it is answered 503 with Retry-After. At least
    /// WEFT_MAX_BODY_BYTES.
    #[arg(long, env = "WEFT_MAX_INFLIGHT_BODY_BYTES", default_value_t = weft_http::body::DEFAULT_MAX_INFLIGHT_BODY_BYTES)]
    pub max_inflight_body_bytes: usize,
    /// How long idempotency records are kept before the server deletes
    /// them in the background: `24h` (the default and the least: a
    /// response is replayed for 24 h), `30d`, `36h`.
    #[arg(long, env = "WEFT_IDEMPOTENCY_RETENTION", default_value = "24h",
          value_name = "DURATION", value_parser = parse_retention)]
    pub idempotency_retention: Retention,
    /// The language model that names threads on `auto_rename`.
    #[command(flatten)]
    pub titles: TitleArgs,
}

/// A language model that names threads on `auto_rename`: any
/// OpenAI-compatible chat-completions endpoint. Without a URL, titles are
/// derived from the first user message's words.
#[derive(Clone, Args)]
pub struct TitleArgs {
    /// Base URL of an OpenAI-compatible API, e.g. `http://127.0.0.1:11434/v1`
    /// (Ollama) or `https://api.openai.com/v1`; requests go to
    /// `<url>/chat/completions`.
    #[arg(long, env = "WEFT_TITLE_MODEL_URL")]
    pub title_model_url: Option<String>,
    /// The model name the endpoint expects (required with the URL).
    #[arg(long, env = "WEFT_TITLE_MODEL")]
    pub title_model: Option<String>,
    /// API key, sent as a bearer token; never logged. Prefer the file.
    #[arg(long, env = "WEFT_TITLE_API_KEY", hide_env_values = true)]
    pub title_api_key: Option<String>,
    /// A file holding the API key (surrounding white space ignored).
    #[arg(long, env = "WEFT_TITLE_API_KEY_FILE")]
    pub title_api_key_file: Option<PathBuf>,
    /// Longest wait for a title, retry included, in milliseconds; past it
    /// the derived title is used.
    #[arg(long, env = "WEFT_TITLE_TIMEOUT_MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub title_timeout_ms: u64,
}

impl std::fmt::Debug for TitleArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TitleArgs")
            .field(
                "title_model_url",
                &self.title_model_url.as_deref().map(mask_password),
            )
            .field("title_model", &self.title_model)
            .field("title_api_key", &self.title_api_key.as_ref().map(|_| "***"))
            .field("title_api_key_file", &self.title_api_key_file)
            .field("title_timeout_ms", &self.title_timeout_ms)
            .finish()
    }
}

/// The title model settings do not make a usable configuration.
#[derive(Debug, thiserror::Error)]
pub enum TitleConfigError {
    /// A title setting was given without the URL that would use it.
    #[error("{0} is set but WEFT_TITLE_MODEL_URL is not: set the URL to name threads with a model, or unset {0}")]
    NoUrl(&'static str),
    /// The URL does not parse, or is not `http(s)`.
    #[error("WEFT_TITLE_MODEL_URL must be an http:// or https:// URL such as http://127.0.0.1:11434/v1 ({0})")]
    Url(String),
    /// The URL is set without a model name.
    #[error("WEFT_TITLE_MODEL_URL is set but WEFT_TITLE_MODEL is not: name the model the endpoint serves (e.g. llama3.2:1b)")]
    NoModel,
    /// Both key sources are set.
    #[error("set WEFT_TITLE_API_KEY or WEFT_TITLE_API_KEY_FILE, not both")]
    TwoKeys,
    /// The key file could not be read.
    #[error("WEFT_TITLE_API_KEY_FILE {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key is empty.
    #[error("the title model API key ({0}) is empty")]
    EmptyKey(String),
}

impl TitleArgs {
    /// The model configuration, or `None` when no URL is set (titles are
    /// then derived). Reads the key file if one is named.
    ///
    /// # Errors
    /// [`TitleConfigError`] for a setting without the URL, a URL that is not
    /// `http(s)`, a URL without a model, two key sources, or a key file
    /// that cannot be read or is empty.
    pub fn model_config(&self) -> Result<Option<ModelConfig>, TitleConfigError> {
        let Some(raw_url) = self
            .title_model_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        else {
            if self.title_model.is_some() {
                return Err(TitleConfigError::NoUrl("WEFT_TITLE_MODEL"));
            }
            if self.title_api_key.is_some() {
                return Err(TitleConfigError::NoUrl("WEFT_TITLE_API_KEY"));
            }
            if self.title_api_key_file.is_some() {
                return Err(TitleConfigError::NoUrl("WEFT_TITLE_API_KEY_FILE"));
            }
            return Ok(None);
        };
        let url = Url::parse(raw_url.trim())
            .map_err(|e| TitleConfigError::Url(format!("got '{}': {e}", mask_password(raw_url))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TitleConfigError::Url(format!(
                "got a URL starting with '{}'",
                url.scheme()
            )));
        }
        let model = self
            .title_model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .ok_or(TitleConfigError::NoModel)?;
        let api_key = match (&self.title_api_key, &self.title_api_key_file) {
            (Some(_), Some(_)) => return Err(TitleConfigError::TwoKeys),
            (Some(key), None) => Some((ApiKey::new(key), "WEFT_TITLE_API_KEY".to_owned())),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| TitleConfigError::KeyFile {
                        path: path.clone(),
                        source,
                    })?;
                Some((ApiKey::new(&text), format!("file {}", path.display())))
            }
            (None, None) => None,
        };
        let api_key = match api_key {
            Some((key, from)) if key.is_empty() => return Err(TitleConfigError::EmptyKey(from)),
            Some((key, _)) => Some(key),
            None => None,
        };
        let mut config = ModelConfig::new(url, model);
        config.api_key = api_key;
        config.timeout = Duration::from_millis(self.title_timeout_ms);
        Ok(Some(config))
    }
}

/// Settings of `weft token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id the token speaks for (1–128 characters).
    #[arg(long)]
    pub user: String,
    /// How long the token is valid: `24h`, `30m`, `7d`, or seconds.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Database URL (locates the default secret file).
    #[arg(long, env = "WEFT_DATABASE_URL", default_value = weft_adapters_sqlite::SqliteConfig::DEFAULT_URL)]
    pub database_url: String,
    /// Token secret settings.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Claims put in the token (the server's `iss`/`aud` rules).
    #[command(flatten)]
    pub claims: ClaimArgs,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A parsed database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An embedded SQLite file.
    Sqlite {
        /// The URL as given (passed to the adapter).
        url: String,
        /// The database file.
        path: PathBuf,
    },
    /// A PostgreSQL server.
    Postgres {
        /// The URL as given (passed to the adapter; holds the password).
        url: String,
    },
}

/// The database URL is not one Weft understands.
#[derive(Debug, thiserror::Error)]
pub enum BadDatabaseUrl {
    /// Neither SQLite nor PostgreSQL.
    #[error(
        "WEFT_DATABASE_URL must start with sqlite:// or postgres:// (got a URL starting with '{0}')"
    )]
    Scheme(String),
    /// An SQLite URL without a file.
    #[error("WEFT_DATABASE_URL '{0}' names no database file: use sqlite://weft.db (relative to the working directory) or sqlite:///absolute/path/weft.db")]
    NoPath(String),
    /// `~user/…`: only the caller's own home is expanded.
    #[error("WEFT_DATABASE_URL '{0}': only a leading '~/' (your home directory) is expanded; write the path out instead")]
    OtherHome(String),
    /// `~/…` with no `HOME` to expand it to.
    #[error("WEFT_DATABASE_URL '{0}' starts with ~/ but HOME is not set: write the absolute path instead")]
    NoHome(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://…` or `postgres://…`/`postgresql://…`. A leading
    /// `~/` in an SQLite path is expanded to `$HOME` (a shell does not
    /// expand it inside a URL, and a directory literally named `~` is
    /// never what was meant).
    ///
    /// # Errors
    /// [`BadDatabaseUrl`] for any other scheme, an empty SQLite path, or a
    /// `~` that cannot be expanded.
    pub fn parse(url: &str) -> Result<Self, BadDatabaseUrl> {
        Self::parse_with_home(url, std::env::var_os("HOME").map(PathBuf::from))
    }

    fn parse_with_home(url: &str, home: Option<PathBuf>) -> Result<Self, BadDatabaseUrl> {
        let scheme_of = || {
            url.split("://")
                .next()
                .unwrap_or("")
                .chars()
                .take(20)
                .collect::<String>()
        };
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let (path, query) = match rest.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(BadDatabaseUrl::NoPath(url.to_owned()));
            }
            if !path.starts_with('~') {
                return Ok(Self::Sqlite {
                    url: url.to_owned(),
                    path: PathBuf::from(path),
                });
            }
            let below_home = match path.strip_prefix("~/") {
                Some(below) if !below.is_empty() => below,
                Some(_) => return Err(BadDatabaseUrl::NoPath(url.to_owned())),
                None => return Err(BadDatabaseUrl::OtherHome(url.to_owned())),
            };
            let home = home
                .filter(|h| h.is_absolute())
                .ok_or_else(|| BadDatabaseUrl::NoHome(url.to_owned()))?;
            let path = home.join(below_home);
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            return Ok(Self::Sqlite {
                url: format!("sqlite://{}{query}", path.display()),
                path,
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres {
                url: url.to_owned(),
            });
        }
        Err(BadDatabaseUrl::Scheme(scheme_of()))
    }

    /// The SQLite file as an absolute path (relative paths are relative to
    /// the working directory), for messages a user can act on.
    pub fn absolute_sqlite_path(&self) -> Option<PathBuf> {
        match self {
            Self::Sqlite { path, .. } => Some(absolute(path)),
            Self::Postgres { .. } => None,
        }
    }

    /// The kind and location, safe to log: a PostgreSQL password is masked.
    /// SQLite paths are shown absolute.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite { path, .. } => format!("SQLite at {}", absolute(path).display()),
            Self::Postgres { url } => format!("PostgreSQL at {}", mask_password(url)),
        }
    }

    /// The URL to hand to the adapter.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url } => url,
        }
    }

    /// Where the generated secret is kept unless configured: beside the
    /// SQLite file, or in the working directory for PostgreSQL.
    pub fn default_secret_file(&self) -> PathBuf {
        match self {
            Self::Sqlite { path, .. } => {
                let mut name = path
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_default();
                name.push(".jwt-secret");
                path.with_file_name(name)
            }
            Self::Postgres { .. } => PathBuf::from("weft.jwt-secret"),
        }
    }
}

/// `path` joined to the working directory when relative (not resolved:
/// the file may not exist yet).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_owned())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let masked_authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // A password may also hide in the query (`?password=`).
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{masked_authority}{tail}")
}

/// The secret could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Configured or stored secret too short.
    #[error(transparent)]
    Weak(#[from] weft_http::auth::WeakSecret),
    /// The secret file could not be read or written.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("no secure random source: {0}")]
    Random(String),
    /// `weft token` found no secret to sign with (only `serve` creates one).
    #[error(
        "no JWT secret at {} (the secret of {database}). `weft token` never creates one: \
         start the server first ({start}), or give this command the server's \
         WEFT_DATABASE_URL, WEFT_JWT_SECRET_FILE or WEFT_JWT_SECRET",
        path.display()
    )]
    Missing {
        /// Where it looked (absolute).
        path: PathBuf,
        /// The database whose default secret file that is, password masked.
        database: String,
        /// The command that starts the server here.
        start: String,
    },
    /// The secret file can be read or changed by other users of the machine.
    #[error(
        "secret file {} is open to other users (mode {mode:04o}): anyone on this machine \
         could mint tokens for any user. Restrict it with: chmod 600 '{}'",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Where the secret came from (for the start-up log; never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `WEFT_JWT_SECRET`/`--jwt-secret`.
    Configured,
    /// Read from this existing file.
    File(PathBuf),
    /// Generated now and written to this file.
    Generated(PathBuf),
}

/// The configured secret, or the one kept in the secret file, generating
/// and storing it (mode 0600) on first use. Only `weft serve` calls this:
/// `weft token` uses [`find_secret`], which never creates one.
///
/// # Errors
/// [`SecretError`] when the secret is too short or the file cannot be used.
pub fn resolve_secret(
    args: &SecretArgs,
    db: &DatabaseUrl,
) -> Result<(JwtSecret, SecretSource), SecretError> {
    if let Some(s) = &args.jwt_secret {
        return Ok((
            JwtSecret::new(s.as_bytes().to_vec())?,
            SecretSource::Configured,
        ));
    }
    load_or_create_secret(&secret_file(args, db))
}

fn secret_file(args: &SecretArgs, db: &DatabaseUrl) -> PathBuf {
    args.jwt_secret_file
        .clone()
        .unwrap_or_else(|| db.default_secret_file())
}

/// The configured secret, or the one an earlier `weft serve` stored: what
/// `weft token` signs with. Never creates a secret (API.md: "`weft token`
/// never creates a secret: only `serve` does"), so a token it prints is
/// one the server accepts.
///
/// # Errors
/// [`SecretError::Missing`] naming where it looked and what to set (with
/// `start`, the command that starts the server here); [`SecretError`] when
/// the secret is too short or the file cannot be read.
pub fn find_secret(
    args: &SecretArgs,
    db: &DatabaseUrl,
    start: &str,
) -> Result<JwtSecret, SecretError> {
    if let Some(s) = &args.jwt_secret {
        return Ok(JwtSecret::new(s.as_bytes().to_vec())?);
    }
    let path = secret_file(args, db);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(JwtSecret::new(text.trim().as_bytes().to_vec())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SecretError::Missing {
            path: absolute(&path),
            database: db.describe(),
            start: start.to_owned(),
        }),
        Err(source) => Err(SecretError::Io { path, source }),
    }
}

fn load_or_create_secret(path: &Path) -> Result<(JwtSecret, SecretSource), SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            refuse_exposed(path)?;
            let secret = JwtSecret::new(text.trim().as_bytes().to_vec())?;
            return Ok((secret, SecretSource::File(path.to_owned())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut raw = [0u8; MIN_SECRET_BYTES * 2];
    getrandom::getrandom(&mut raw).map_err(|e| SecretError::Random(e.to_string()))?;
    let text = hex::encode(raw);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match write_private(path, text.as_bytes()) {
        Ok(()) => {}
        // Another process created it between our read and our write: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    // Read back what is on disk, so two racing first starts agree on one secret.
    let text = std::fs::read_to_string(path).map_err(io)?;
    Ok((
        JwtSecret::new(text.trim().as_bytes().to_vec())?,
        SecretSource::Generated(path.to_owned()),
    ))
}

/// Refuses a secret file that others may read, or that anyone but its
/// owner (and group) may change: it signs every user's tokens. Like
/// OpenSSH with private keys, refusing beats warning — a warning scrolls by,
/// the exposure stays. Group read is allowed (a deliberate admin group).
fn refuse_exposed(path: &Path) -> Result<(), SecretError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| SecretError::Io {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o027 != 0 {
            return Err(SecretError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `path` exclusively, readable and writable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The database.
    pub database: DatabaseUrl,
    /// Most pool connections.
    pub pool_max: u32,
    /// Per-statement timeout.
    pub statement_timeout: Duration,
    /// PostgreSQL: whether statements are prepared under a name and reused
    /// per connection (`WEFT_PG_STATEMENT_CACHE`); `false` behind a pooler
    /// in transaction mode. Ignored for SQLite.
    pub pg_statement_cache: bool,
    /// The token secret.
    pub secret: JwtSecret,
    /// Listen address (port 0 picks a free port).
    pub bind: SocketAddr,
    /// Bound on in-flight work after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Deadline of one request's work.
    pub request_timeout: Duration,
    /// How request bodies are read (size, time, in-flight memory).
    pub body: BodyConfig,
    /// The language model that names threads, if configured (else titles
    /// are derived from the first user message).
    pub titles: Option<ModelConfig>,
    /// The background data lifecycle (idempotency expiry).
    pub lifecycle: LifecycleSettings,
    /// Claims rules and the identity provider's keys.
    pub tokens: TokenSettings,
    /// Bounds on each HTTP connection.
    pub connections: ConnectionLimits,
}

/// How tokens are checked beyond the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// `iss`/`aud` rules.
    pub rules: ClaimRules,
    /// Where the identity provider's JWK Set is, if any.
    pub jwks: Option<JwksLocation>,
    /// Scheduled refresh of the set (API.md: 10 minutes).
    pub jwks_refresh: Duration,
    /// Least time between fetches for unknown `kid`s (API.md: 30 s).
    pub jwks_min_refetch: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            rules: ClaimRules::default(),
            jwks: None,
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refetch: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_select_the_adapter() {
        let s = DatabaseUrl::parse("sqlite://weft.db").unwrap();
        assert_eq!(s.default_secret_file(), PathBuf::from("weft.db.jwt-secret"));
        let abs = DatabaseUrl::parse("sqlite:///var/lib/weft/w.db?mode=rwc").unwrap();
        assert_eq!(
            abs.default_secret_file(),
            PathBuf::from("/var/lib/weft/w.db.jwt-secret")
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:p@h/db").unwrap(),
            DatabaseUrl::Postgres { .. }
        ));
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("postgres://u:hunter2@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(mask_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            mask_password("postgres://h/db?user=u&password=x"),
            "postgres://h/db?user=u&password=***"
        );
        assert!(!DatabaseUrl::parse("postgres://u:hunter2@h/db")
            .unwrap()
            .describe()
            .contains("hunter2"));
    }

    #[test]
    fn a_generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (a, src) = load_or_create_secret(&path).unwrap();
        assert_eq!(src, SecretSource::Generated(path.clone()));
        let (b, src) = load_or_create_secret(&path).unwrap();
        assert_eq!(src, SecretSource::File(path.clone()));
        let user = weft_domain::UserId::parse("u").unwrap();
        let token = weft_http::auth::TokenKeys::new(&a)
            .mint(&user, Duration::from_secs(60))
            .unwrap();
        let verified = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(weft_http::auth::TokenKeys::new(&b).verify(&token))
            .unwrap();
        assert_eq!(verified, user);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_open_to_other_users_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        load_or_create_secret(&path).unwrap();
        for mode in [0o644, 0o604, 0o620, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load_or_create_secret(&path).unwrap_err();
            assert!(
                matches!(err, SecretError::Exposed { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        for mode in [0o600, 0o400, 0o640] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(load_or_create_secret(&path).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn identity_provider_settings_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("s").display().to_string();
        let parse = |extra: &[&str]| {
            let mut args = vec!["weft", "--jwt-secret-file", &secret_file];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| c.serve.settings())
        };
        let (s, _) = parse(&[
            "--jwks-url",
            "https://idp.example/.well-known/jwks.json",
            "--jwt-issuer",
            "https://idp.example/",
            "--jwt-audience",
            "weft",
        ])
        .unwrap()
        .unwrap();
        assert!(matches!(s.tokens.jwks, Some(JwksLocation::Url(_))));
        assert_eq!(
            s.tokens.rules.issuer.as_deref(),
            Some("https://idp.example/")
        );
        assert_eq!(s.tokens.rules.audience.as_deref(), Some("weft"));
        assert!(matches!(
            parse(&["--jwks-url", "ftp://idp/jwks"]).unwrap(),
            Err(ConfigError::JwksUrl(_))
        ));
        assert!(
            parse(&["--jwks-url", "https://a/j", "--jwks-file", "/x"]).is_err(),
            "URL and file are exclusive"
        );
        let (s, _) = parse(&["--jwks-file", "/etc/weft/jwks.json"])
            .unwrap()
            .unwrap();
        assert_eq!(
            s.tokens.jwks,
            Some(JwksLocation::File(PathBuf::from("/etc/weft/jwks.json")))
        );
    }

    #[test]
    fn the_token_hint_names_the_database_without_its_password() {
        let cli =
            Cli::try_parse_from(["weft", "--database-url", "postgres://u:hunter2@h/db"]).unwrap();
        let weft = Invocation::Binary("weft".to_owned());
        let hint = cli
            .serve
            .token_command(&SecretSource::File(PathBuf::from("weft.jwt-secret")), &weft);
        assert_eq!(
            hint,
            "WEFT_DATABASE_URL='postgres://u:***@h/db' weft token --user <USER_ID>"
        );
        let cli = Cli::try_parse_from(["weft"]).unwrap();
        assert_eq!(
            cli.serve
                .token_command(&SecretSource::Generated(PathBuf::from("x")), &weft),
            "weft token --user <USER_ID>"
        );
        assert_eq!(
            cli.serve.token_command(
                &SecretSource::Generated(PathBuf::from("x")),
                &Invocation::Cargo { release: false }
            ),
            "cargo run --bin weft -- token --user <USER_ID>"
        );
    }

    fn title_args(args: &[&str]) -> Result<Option<ModelConfig>, TitleConfigError> {
        let mut argv = vec!["weft"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .unwrap()
            .serve
            .titles
            .model_config()
    }

    #[test]
    fn without_a_title_model_url_titles_are_derived() {
        assert_eq!(title_args(&[]).unwrap(), None);
    }

    #[test]
    fn a_title_model_is_configured_by_url_model_key_and_timeout() {
        let cfg = title_args(&[
            "--title-model-url",
            "http://127.0.0.1:11434/v1",
            "--title-model",
            "llama3.2:1b",
            "--title-timeout-ms",
            "1500",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            cfg.endpoint().as_str(),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        assert_eq!(cfg.model, "llama3.2:1b");
        assert_eq!(cfg.api_key, None);
        assert_eq!(cfg.timeout, Duration::from_millis(1500));
        let default = title_args(&["--title-model-url", "http://h/v1", "--title-model", "m"])
            .unwrap()
            .unwrap();
        assert_eq!(default.timeout, Duration::from_millis(3000));
    }

    #[test]
    fn the_title_api_key_is_read_from_its_file_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        let file_arg = file.display().to_string();
        let base = [
            "--title-model-url",
            "https://api.openai.com/v1",
            "--title-model",
            "m",
        ];
        let cfg = title_args(&[&base[..], &["--title-api-key-file", file_arg.as_str()]].concat())
            .unwrap()
            .unwrap();
        assert_eq!(cfg.api_key, Some(ApiKey::new("sk-from-file")));
        let cli = Cli::try_parse_from(
            [&["weft"][..], &base[..], &["--title-api-key", "sk-inline"]].concat(),
        )
        .unwrap();
        assert!(!format!("{:?}", cli.serve).contains("sk-inline"));
        let missing = dir.path().join("nope").display().to_string();
        let err = title_args(&[&base[..], &["--title-api-key-file", missing.as_str()]].concat())
            .unwrap_err();
        assert!(err.to_string().contains(&missing), "{err}");
    }

    #[test]
    fn inconsistent_title_settings_are_refused_with_what_to_set() {
        let err = title_args(&["--title-model", "m"]).unwrap_err();
        assert!(
            err.to_string().contains("WEFT_TITLE_MODEL_URL is not"),
            "{err}"
        );
        let err = title_args(&["--title-model-url", "http://h/v1"]).unwrap_err();
        assert!(err.to_string().contains("WEFT_TITLE_MODEL is not"), "{err}");
        let err =
            title_args(&["--title-model-url", "ftp://h/v1", "--title-model", "m"]).unwrap_err();
        assert!(err.to_string().contains("'ftp'"), "{err}");
        let err = title_args(&[
            "--title-model-url",
            "http://h/v1",
            "--title-model",
            "m",
            "--title-api-key",
            "k",
            "--title-api-key-file",
            "/k",
        ])
        .unwrap_err();
        assert!(matches!(err, TitleConfigError::TwoKeys), "{err}");
        assert!(Cli::try_parse_from(["weft", "--title-timeout-ms", "0"]).is_err());
    }

    #[test]
    fn the_statement_cache_is_switched_off_by_flag_or_environment() {
        let cli = Cli::try_parse_from(["weft", "--pg-statement-cache", "off"]).unwrap();
        assert_eq!(cli.serve.database.pg_statement_cache, Switch::Off);
        let cli = Cli::try_parse_from(["weft", "migrate", "--pg-statement-cache=off"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Migrate(d)) if d.pg_statement_cache == Switch::Off)
        );
        assert!(Cli::try_parse_from(["weft", "--pg-statement-cache", "maybe"]).is_err());
        let settings = |args: &[&str]| {
            let dir = tempfile::tempdir().unwrap();
            let db = format!("sqlite://{}", dir.path().join("w.db").display());
            let mut argv = vec!["weft", "--database-url", db.as_str()];
            argv.extend_from_slice(args);
            let cli = Cli::try_parse_from(argv).unwrap();
            cli.serve.settings().unwrap().0.pg_statement_cache
        };
        assert!(settings(&[]));
        assert!(!settings(&["--pg-statement-cache", "off"]));
    }

    #[test]
    fn body_settings_are_flags_and_must_be_consistent() {
        let cli = Cli::try_parse_from([
            "weft",
            "--max-body-bytes",
            "1000",
            "--body-timeout-ms",
            "5",
            "--max-inflight-body-bytes",
            "4000",
        ])
        .unwrap();
        let s = &cli.serve;
        let body = body_config(
            s.max_body_bytes,
            s.body_timeout_ms,
            s.max_inflight_body_bytes,
        )
        .unwrap();
        assert_eq!(body.max_bytes, 1000);
        assert_eq!(body.timeout, Duration::from_millis(5));
        assert_eq!(body.max_inflight_bytes, 4000);
        assert!(body_config(0, 1, 1).is_err());
        assert!(body_config(1, 0, 1).is_err());
        let e = body_config(2000, 1, 1000).unwrap_err().to_string();
        assert!(e.contains("WEFT_MAX_INFLIGHT_BODY_BYTES"), "{e}");
    }

    #[test]
    fn the_idempotency_retention_is_a_duration_of_at_least_24h() {
        let cli = Cli::try_parse_from(["weft"]).unwrap();
        assert_eq!(cli.serve.idempotency_retention, Retention::DEFAULT);
        let cli = Cli::try_parse_from(["weft", "--idempotency-retention", "30d"]).unwrap();
        assert_eq!(cli.serve.idempotency_retention.secs(), 30 * 86_400);
        assert_eq!(parse_retention("36h").unwrap().secs(), 36 * 3600);
        let err = Cli::try_parse_from(["weft", "--idempotency-retention", "90m"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 24h"), "{err}");
        assert!(err.contains("replayed"), "{err}");
        assert!(parse_retention("1y").is_err());
    }

    #[test]
    fn a_purge_age_may_be_zero_and_takes_the_same_units() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_age("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_age("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_age("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_age("00d").unwrap(), Duration::ZERO);
        assert!(parse_age("0y").is_err());
        assert!(parse_age("x").is_err());
        assert!(parse_age("").is_err());
        let cli = Cli::try_parse_from(["weft", "purge", "--archived-before", "30d"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Purge(p)) if p.archived_before == Duration::from_secs(30 * 86_400)
                && p.batches.batch_size == 1_000 && p.batches.pause_ms == 200
        ));
        assert!(Cli::try_parse_from(["weft", "purge"]).is_err());
        assert!(Cli::try_parse_from([
            "weft",
            "purge",
            "--archived-before",
            "1d",
            "--batch-size",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn the_cli_defaults_to_serve_with_the_documented_defaults() {
        let cli = Cli::try_parse_from(["weft"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(cli.serve.database.pool_max, 16);
        assert_eq!(cli.serve.database.pg_statement_cache, Switch::On);
        assert_eq!(cli.serve.max_body_bytes, 4_194_304);
        assert_eq!(cli.serve.body_timeout_ms, 30_000);
        assert_eq!(cli.serve.max_inflight_body_bytes, 268_435_456);
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("s").display().to_string();
        let cli = Cli::try_parse_from(["weft", "--jwt-secret-file", &secret_file]).unwrap();
        let (settings, _) = cli.serve.settings().unwrap();
        assert_eq!(settings.connections, ConnectionLimits::default());
        assert_eq!(settings.connections.header_timeout, Duration::from_secs(10));
        assert_eq!(settings.connections.idle_timeout, Duration::from_secs(60));
        assert_eq!(settings.connections.max_concurrent_streams, 128);
        assert_eq!(settings.tokens, TokenSettings::default());
        assert_eq!(settings.tokens.jwks_refresh, Duration::from_secs(600));
        assert_eq!(settings.tokens.jwks_min_refetch, Duration::from_secs(30));
        let cli = Cli::try_parse_from(["weft", "token", "--user", "alice", "--ttl", "1h"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Token(t)) if t.ttl == Duration::from_secs(3600))
        );
    }
}

/// The configuration could not be turned into [`Settings`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The database URL is not understood.
    #[error(transparent)]
    DatabaseUrl(#[from] BadDatabaseUrl),
    /// The token secret could not be obtained.
    #[error("obtaining the JWT secret")]
    Secret(#[from] SecretError),
    /// A body setting is out of range.
    #[error("{0}")]
    Body(String),
    /// The title model settings are not usable.
    #[error(transparent)]
    Titles(#[from] TitleConfigError),
    /// `WEFT_JWKS_URL` is not an `http(s)` URL.
    #[error(transparent)]
    JwksUrl(#[from] BadJwksUrl),
}

/// The body settings, checked: every bound positive, and the in-flight
/// budget able to hold at least one body of the largest size.
///
/// # Errors
/// [`ConfigError::Body`] naming the setting.
pub fn body_config(
    max_body_bytes: usize,
    body_timeout_ms: u64,
    max_inflight_body_bytes: usize,
) -> Result<BodyConfig, ConfigError> {
    if max_body_bytes == 0 {
        return Err(ConfigError::Body(
            "WEFT_MAX_BODY_BYTES must be at least 1".to_owned(),
        ));
    }
    if body_timeout_ms == 0 {
        return Err(ConfigError::Body(
            "WEFT_BODY_TIMEOUT_MS must be at least 1".to_owned(),
        ));
    }
    if max_inflight_body_bytes < max_body_bytes {
        return Err(ConfigError::Body(format!(
            "WEFT_MAX_INFLIGHT_BODY_BYTES ({max_inflight_body_bytes}) must be at least WEFT_MAX_BODY_BYTES ({max_body_bytes}), or no body of the largest size could ever be read"
        )));
    }
    Ok(BodyConfig {
        max_bytes: max_body_bytes,
        timeout: Duration::from_millis(body_timeout_ms),
        max_inflight_bytes: max_inflight_body_bytes,
    })
}

impl ServeArgs {
    /// The validated settings, and where the secret came from (for the log).
    ///
    /// # Errors
    /// [`ConfigError`] for a bad database URL, an unusable secret or a body
    /// setting out of range.
    pub fn settings(&self) -> Result<(Settings, SecretSource), ConfigError> {
        let body = body_config(
            self.max_body_bytes,
            self.body_timeout_ms,
            self.max_inflight_body_bytes,
        )?;
        let database = DatabaseUrl::parse(&self.database.database_url)?;
        let titles = self.titles.model_config()?;
        let jwks = match (&self.jwks_url, &self.jwks_file) {
            (Some(url), _) if !url.is_empty() => Some(JwksLocation::url(url)?),
            (_, Some(file)) if !file.as_os_str().is_empty() => {
                Some(JwksLocation::File(file.clone()))
            }
            _ => None,
        };
        let (secret, source) = resolve_secret(&self.secret, &database)?;
        let defaults = ConnectionLimits::default();
        let settings = Settings {
            database,
            pool_max: self.database.pool_max,
            statement_timeout: Duration::from_millis(self.database.statement_timeout_ms),
            pg_statement_cache: self.database.pg_statement_cache.is_on(),
            secret,
            bind: self.bind,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            body,
            titles,
            lifecycle: LifecycleSettings {
                idempotency_retention: self.idempotency_retention,
                ..LifecycleSettings::default()
            },
            tokens: TokenSettings {
                rules: self.claims.rules(),
                jwks,
                jwks_refresh: Duration::from_secs(self.jwks_refresh_secs.max(1)),
                jwks_min_refetch: Duration::from_secs(self.jwks_min_refetch_secs),
            },
            connections: ConnectionLimits {
                header_timeout: Duration::from_millis(self.header_timeout_ms.max(1)),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(1)),
                ..defaults
            },
        };
        Ok((settings, source))
    }

    /// The exact `weft token` command that finds the secret this server
    /// uses, run the way this server was (`cargo run --bin weft -- token …`
    /// after `cargo run`), safe to log (a PostgreSQL password is masked:
    /// `weft token` needs the URL only to locate the secret file).
    pub fn token_command(&self, source: &SecretSource, program: &Invocation) -> String {
        let mut parts = Vec::new();
        if matches!(source, SecretSource::Configured) {
            parts.push("WEFT_JWT_SECRET=<the same secret>".to_owned());
        } else {
            if self.database.database_url != weft_adapters_sqlite::SqliteConfig::DEFAULT_URL {
                parts.push(format!(
                    "WEFT_DATABASE_URL='{}'",
                    mask_password(&self.database.database_url)
                ));
            }
            if let Some(file) = &self.secret.jwt_secret_file {
                parts.push(format!("WEFT_JWT_SECRET_FILE='{}'", file.display()));
            }
        }
        parts.push(program.command("token --user <USER_ID>"));
        parts.join(" ")
    }
}
