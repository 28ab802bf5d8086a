//! Counters and histograms rwproxy keeps, rendered in the Prometheus text
//! format for `/metrics`.
//!
//! Hand-rolled rather than through the `metrics` facade: the facade needs a
//! process-wide recorder (a global our STYLE rules out, and one that makes
//! in-process tests with several proxies share counters), while everything
//! here is plain atomics owned by one proxy instance and passed as an `Arc`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Role;
use crate::topology::{Replication, Snapshot};

/// Upper bounds (seconds) of the statement latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// Where a statement went (label `route`).
#[derive(Debug, Clone, Copy)]
pub enum RouteLabel {
    Primary = 0,
    Replica = 1,
    Fallback = 2,
}

/// Error kinds (label `kind`).
#[derive(Debug, Clone, Copy)]
pub enum ErrorKind {
    /// Could not get a backend connection.
    BackendConnect = 0,
    /// A backend failed while answering.
    BackendLost = 1,
    /// rwproxy refused a statement (no server, limits).
    Refused = 2,
    /// Bad packets or protocol errors from clients.
    ClientProtocol = 3,
    /// Failed logins.
    AuthFailed = 4,
    /// Statements the server answered with ERR.
    ServerError = 5,
}

const ROUTES: [&str; 3] = ["primary", "replica", "fallback"];
const ERRORS: [&str; 6] = [
    "backend_connect",
    "backend_lost",
    "refused",
    "client_protocol",
    "auth_failed",
    "server_error",
];

/// Appends `rwproxy_rule_hits_total{rule}` for every configured query rule
/// (rule names are restricted to label-safe characters at config load).
pub fn render_rule_hits<'a>(o: &mut String, hits: impl Iterator<Item = (&'a str, u64)>) {
    let _ = writeln!(
        o,
        "# HELP rwproxy_rule_hits_total Statements decided by each query rule."
    );
    let _ = writeln!(o, "# TYPE rwproxy_rule_hits_total counter");
    for (rule, n) in hits {
        let _ = writeln!(o, "rwproxy_rule_hits_total{{rule=\"{rule}\"}} {n}");
    }
}

/// All of one proxy instance's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub queries_by_route: [AtomicU64; 3],
    pub errors: [AtomicU64; 6],
    pub latency: [Histogram; 3],
    pub sessions_open: AtomicU64,
    pub sessions_total: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    /// Causal reads: [caught up (served by the replica), gave up (primary)].
    pub causal_waits: [AtomicU64; 2],
}

impl Metrics {
    pub fn statement(&self, route: RouteLabel, took: Duration) {
        self.queries_by_route[route as usize].fetch_add(1, Ordering::Relaxed);
        self.latency[route as usize].observe(took);
    }

    /// A causal read's wait on a replica ended (see `causal_wait_ms`).
    pub fn causal_wait(&self, caught_up: bool) {
        self.causal_waits[usize::from(!caught_up)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders everything in the Prometheus text exposition format.
    pub fn render(
        &self,
        snap: &Snapshot,
        idle: &std::collections::HashMap<std::sync::Arc<str>, usize>,
        promotions: u64,
        failovers: u64,
    ) -> String {
        let mut o = String::with_capacity(8 * 1024);
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "# HELP rwproxy_queries_total Statements forwarded, by route."
        );
        let _ = writeln!(o, "# TYPE rwproxy_queries_total counter");
        for (i, r) in ROUTES.iter().enumerate() {
            let _ = writeln!(
                o,
                "rwproxy_queries_total{{route=\"{r}\"}} {}",
                ld(&self.queries_by_route[i])
            );
        }
        let _ = writeln!(
            o,
            "# HELP rwproxy_server_queries_total Statements sent to each server."
        );
        let _ = writeln!(o, "# TYPE rwproxy_server_queries_total counter");
        for s in &snap.servers {
            let _ = writeln!(
                o,
                "rwproxy_server_queries_total{{server=\"{}\"}} {}",
                s.name,
                ld(&s.stats.queries)
            );
        }
        let _ = writeln!(
            o,
            "# HELP rwproxy_statement_duration_seconds Statement latency through rwproxy, by route."
        );
        let _ = writeln!(o, "# TYPE rwproxy_statement_duration_seconds histogram");
        for (i, r) in ROUTES.iter().enumerate() {
            let h = &self.latency[i];
            let mut cum = 0;
            for (b, le) in LATENCY_BUCKETS.iter().enumerate() {
                cum += ld(&h.buckets[b]);
                let _ = writeln!(
                    o,
                    "rwproxy_statement_duration_seconds_bucket{{route=\"{r}\",le=\"{le}\"}} {cum}"
                );
            }
            let _ = writeln!(
                o,
                "rwproxy_statement_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                ld(&h.count)
            );
            let _ = writeln!(
                o,
                "rwproxy_statement_duration_seconds_sum{{route=\"{r}\"}} {}",
                ld(&h.sum_micros) as f64 / 1e6
            );
            let _ = writeln!(
                o,
                "rwproxy_statement_duration_seconds_count{{route=\"{r}\"}} {}",
                ld(&h.count)
            );
        }
        let _ = writeln!(o, "# HELP rwproxy_errors_total Errors, by kind.");
        let _ = writeln!(o, "# TYPE rwproxy_errors_total counter");
        for (i, k) in ERRORS.iter().enumerate() {
            let _ = writeln!(
                o,
                "rwproxy_errors_total{{kind=\"{k}\"}} {}",
                ld(&self.errors[i])
            );
        }
        let _ = writeln!(
            o,
            "# HELP rwproxy_causal_waits_total Reads after a write that waited on a replica for that write (causal_wait_ms), by result: caught_up (the replica served the read) or gave_up (the primary did)."
        );
        let _ = writeln!(o, "# TYPE rwproxy_causal_waits_total counter");
        for (i, r) in ["caught_up", "gave_up"].iter().enumerate() {
            let _ = writeln!(
                o,
                "rwproxy_causal_waits_total{{result=\"{r}\"}} {}",
                ld(&self.causal_waits[i])
            );
        }
        let _ = writeln!(o, "# HELP rwproxy_client_sessions Open client sessions.");
        let _ = writeln!(o, "# TYPE rwproxy_client_sessions gauge");
        let _ = writeln!(o, "rwproxy_client_sessions {}", ld(&self.sessions_open));
        let _ = writeln!(
            o,
            "# HELP rwproxy_client_sessions_total Client sessions accepted."
        );
        let _ = writeln!(o, "# TYPE rwproxy_client_sessions_total counter");
        let _ = writeln!(
            o,
            "rwproxy_client_sessions_total {}",
            ld(&self.sessions_total)
        );
        let _ = writeln!(
            o,
            "# HELP rwproxy_client_bytes_total Bytes exchanged with clients."
        );
        let _ = writeln!(o, "# TYPE rwproxy_client_bytes_total counter");
        let _ = writeln!(
            o,
            "rwproxy_client_bytes_total{{direction=\"in\"}} {}",
            ld(&self.bytes_from_clients)
        );
        let _ = writeln!(
            o,
            "rwproxy_client_bytes_total{{direction=\"out\"}} {}",
            ld(&self.bytes_to_clients)
        );
        let _ = writeln!(
            o,
            "# HELP rwproxy_backend_connections Backend connections per server and state."
        );
        let _ = writeln!(o, "# TYPE rwproxy_backend_connections gauge");
        for s in &snap.servers {
            let _ = writeln!(
                o,
                "rwproxy_backend_connections{{server=\"{}\",state=\"in_use\"}} {}",
                s.name,
                ld(&s.stats.in_use)
            );
            let _ = writeln!(
                o,
                "rwproxy_backend_connections{{server=\"{}\",state=\"idle\"}} {}",
                s.name,
                idle.get(&s.name).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            o,
            "# HELP rwproxy_server_up Whether the monitor reaches the server."
        );
        let _ = writeln!(o, "# TYPE rwproxy_server_up gauge");
        let _ = writeln!(
            o,
            "# HELP rwproxy_server_is_primary Whether the server is the current primary."
        );
        let _ = writeln!(o, "# TYPE rwproxy_server_is_primary gauge");
        let _ = writeln!(
            o,
            "# HELP rwproxy_replica_lag_seconds Replication lag as last observed (-1 when unknown)."
        );
        let _ = writeln!(o, "# TYPE rwproxy_replica_lag_seconds gauge");
        let _ = writeln!(
            o,
            "# HELP rwproxy_replica_readable Whether the replica may serve reads now."
        );
        let _ = writeln!(o, "# TYPE rwproxy_replica_readable gauge");
        for (i, s) in snap.servers.iter().enumerate() {
            let _ = writeln!(
                o,
                "rwproxy_server_up{{server=\"{}\"}} {}",
                s.name,
                u8::from(s.up)
            );
            let _ = writeln!(
                o,
                "rwproxy_server_is_primary{{server=\"{}\"}} {}",
                s.name,
                u8::from(snap.primary == Some(i))
            );
            if s.role == Role::Replica {
                let lag = match (s.replication, s.lag) {
                    (Replication::Running, Some(l)) => l.as_secs_f64(),
                    _ => -1.0,
                };
                let _ = writeln!(
                    o,
                    "rwproxy_replica_lag_seconds{{server=\"{}\"}} {lag}",
                    s.name
                );
                let _ = writeln!(
                    o,
                    "rwproxy_replica_readable{{server=\"{}\"}} {}",
                    s.name,
                    u8::from(s.readable(None))
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP rwproxy_promotions_total Switchovers done by this instance."
        );
        let _ = writeln!(o, "# TYPE rwproxy_promotions_total counter");
        let _ = writeln!(o, "rwproxy_promotions_total {promotions}");
        let _ = writeln!(
            o,
            "# HELP rwproxy_failovers_total Failovers done by this instance."
        );
        let _ = writeln!(o, "# TYPE rwproxy_failovers_total counter");
        let _ = writeln!(o, "rwproxy_failovers_total {failovers}");
        let report = snap.primary_report();
        let receiving = report.map_or(0, |(_, e)| e.receiving);
        let unreachable = report.is_some_and(|(i, e)| e.receiving > 0 && !snap.servers[i].up);
        let _ = writeln!(
            o,
            "# HELP rwproxy_primary_replicas_receiving Replicas that received from the primary within primary_failure_timeout."
        );
        let _ = writeln!(o, "# TYPE rwproxy_primary_replicas_receiving gauge");
        let _ = writeln!(o, "rwproxy_primary_replicas_receiving {receiving}");
        let _ = writeln!(
            o,
            "# HELP rwproxy_primary_unreachable 1 while rwproxy cannot reach a primary its replicas still receive from (no failover; writes fail)."
        );
        let _ = writeln!(o, "# TYPE rwproxy_primary_unreachable gauge");
        let _ = writeln!(o, "rwproxy_primary_unreachable {}", u8::from(unreachable));
        let _ = writeln!(
            o,
            "# HELP rwproxy_primary_conflict 1 while two or more servers are writable and not replicating (writes refused)."
        );
        let _ = writeln!(o, "# TYPE rwproxy_primary_conflict gauge");
        let _ = writeln!(
            o,
            "rwproxy_primary_conflict {}",
            u8::from(snap.conflict.len() >= 2)
        );
        o
    }
}
