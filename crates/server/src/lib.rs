//! Weft's composition root: where concrete types meet. The `weft` binary
//! (`main.rs`) and the end-to-end tests start the service through
//! [`Application`].
//!
//! Layout:
//! - [`config`]: the `weft` command line / `WEFT_*` settings, the JWT secret file.
//! - [`lifecycle`]: the data lifecycle commands' wiring (`weft purge`,
//!   `export`, `erase-user`, `backup`): opening an existing database, the
//!   export's JSON lines, the backup file.
//! - [`invocation`]: how this binary was started (`cargo run` or a path),
//!   so hints print a command that works.
//! - [`store`]: the storage adapter choice — the only module naming one.
//! - [`startup`]: [`Application`]: open and migrate the database, wire the
//!   app and the HTTP routes, bind, serve, shut down gracefully.
//! - [`telemetry`]: the tracing subscriber builder.
//! - [`titles`]: the title generator choice (a language model, or derived
//!   titles) and its metrics.
//! - [`telemetry`]: the tracing subscriber builder; no raw control
//!   character of a request reaches a log field.
//! - [`serve`]: the HTTP server: accept loop and connections served with
//!   hyper under API.md's connection bounds (poem's `Server` lacks them).
//! - [`jwks`]: where the identity provider's JWK Set is read from (URL or
//!   file), and its scheduled refresh.
//!
//! Architecture invariant: the only crate that knows both the inbound HTTP
//! adapter (`weft-http`) and the outbound adapters (storage, title model);
//! nothing depends on it.
//! It holds no business rule and no SQL: it configures and wires.

pub mod config;
pub mod invocation;
pub mod jwks;
pub mod lifecycle;
pub mod serve;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod titles;

pub use startup::{Application, StartupError};
