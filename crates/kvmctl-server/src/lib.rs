//! The kvmctl daemon (`kvmctl serve`).
//!
//! Layout: `config` (file, environment, flags), `http/` thin entrypoints that parse and
//! answer, `app/` the logic behind them, `openapi` the API document generated from the code.
//! The daemon owns the database and the libvirt connections; every client, the CLI and the
//! web console included, goes through its API.

pub mod agent;
pub mod app;
pub mod clock;
pub mod config;
mod http;
pub mod metrics;
pub mod node;
pub mod openapi;
mod server;
pub mod tls;

pub use config::Config;
pub use http::route_list;
pub use server::{RunningServer, ServeError};
