//! Weft's composition root: where concrete types meet. The `weft` binary
//! (`main.rs`) and the end-to-end tests start the service through
//! [`Application`].
//!
//! Layout:
//! - [`config`]: the `weft` command line / `WEFT_*` settings, the JWT secret file.
//! - [`store`]: the adapter choice — the only module naming an adapter.
//! - [`startup`]: [`Application`]: open and migrate the database, wire the
//!   app and the HTTP routes, bind, serve, shut down gracefully.
//! - [`telemetry`]: the tracing subscriber builder.
//!
//! Architecture invariant: the only crate that knows both the inbound HTTP
//! adapter (`weft-http`) and the storage adapters; nothing depends on it.
//! It holds no business rule and no SQL: it configures and wires.

pub mod config;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use startup::{Application, StartupError};
