//! What every OpenModel server binary (the operator, the ledger service and
//! the inference server) needs once, so that they start, log, serve and stop
//! the same way:
//!
//! - [`logging`]: `--log-format json|text` and the `tracing` subscriber.
//! - [`shutdown`]: the signal that stops a server (SIGTERM or Ctrl-C).
//! - [`endpoints`]: `/metrics`, `/healthz` and `/readyz` on axum.
//! - [`tls`] and [`https`]: PEM certificate files checked once, and HTTPS
//!   (rustls with ring, HTTP/2 and HTTP/1.1) in front of an axum router with
//!   a handshake timeout and a graceful drain.
//!
//! Nothing here knows about models or ledgers.

pub mod endpoints;
mod error;
pub mod https;
pub mod logging;
pub mod shutdown;
pub mod tls;

pub use error::Error;
