//! rwproxy: a read/write-splitting MySQL/MariaDB proxy.
//!
//! - [`config`]: the TOML file and its validation.
//! - [`protocol`]: MySQL wire protocol (framing, compression, handshake,
//!   response reading).
//! - [`router`]: statement classification and the routing decision.
//! - [`session`]: one client connection's command loop and state.
//! - [`backend`]: authenticated server connections and their pools.
//! - [`topology`]: the published view of every server.
//! - [`server`]: the listener; `server::run` is the one entry point.
//! - [`sandbox`]: a real local MariaDB primary + replicas for demos and tests.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod admin;
pub mod app;
pub mod backend;
pub mod config;
pub mod failover;
pub mod gtid;
pub mod metrics;
pub mod monitor;
pub mod protocol;
pub mod router;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod topology;
pub mod workers;
