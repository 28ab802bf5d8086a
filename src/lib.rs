//! rwproxy: a read/write-splitting MySQL/MariaDB proxy.
//!
//! Modules, lowest layer first (each uses only those above it or beside
//! it; `tests/module_graph.rs` fails on a cycle):
//! - [`config`]: the TOML file and its validation.
//! - [`gtid`]: GTID positions and their comparison.
//! - [`dialect`]: MariaDB or MySQL, read from the server's own words.
//! - [`protocol`]: MySQL wire protocol (framing, compression, handshake,
//!   authentication, response reading).
//! - [`topology`]: the published view of every server (configured facts
//!   and what the monitor observed), with a change notification.
//! - [`metrics`]: counters and histograms, rendered for Prometheus.
//! - [`router`]: statement classification, digests, query rules and the
//!   routing decision (pure functions of a statement and a snapshot).
//! - [`backend`]: authenticated server connections and their pools.
//! - [`monitor`]: polls every server and publishes what it sees.
//! - [`accounts`]: the servers' accounts, for logins checked by rwproxy.
//! - [`catalog`]: the primary's stored functions that only read (a read
//!   calling only those may run on a replica).
//! - [`failover`]: switchover, automatic failover, fencing, the write gate.
//! - [`primary_pos`]: the primary's executed GTID position, fetched once
//!   for all the `consistency = "global"` reads that arrive together.
//! - [`app`]: what every part shares (`Shared`), built from a
//!   configuration; RELOAD.
//! - [`workers`]: the session threads.
//! - [`session`]: one client connection: handshake, then the command loop
//!   and its one statement pipeline.
//! - [`admin`]: the admin port (MySQL protocol) and the HTTP endpoint.
//! - [`server`]: the listeners and the background services;
//!   `server::run` is the one entry point of `main` and the tests.
//!
//! The sandbox (a real local MariaDB/MySQL primary + replicas for the demo,
//! the tests and the benchmarks) is its own crate, `sandbox/`
//! (`rwproxy-sandbox`), so the proxy's dependencies are the proxy's.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod admin;
pub mod app;
pub mod backend;
pub mod catalog;
pub mod config;
pub mod dialect;
pub mod failover;
pub mod gtid;
pub mod metrics;
pub mod monitor;
pub mod primary_pos;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod topology;
pub mod workers;
