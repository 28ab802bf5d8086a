//! The HTTP endpoint: `/metrics` (Prometheus), `/health` (200 or 503 with a
//! one-line reason, for a load balancer's check: readiness), `/live` (200
//! while the process serves HTTP at all: a Kubernetes liveness probe, which
//! must not fail just because the servers are down) and `/status` (the
//! topology snapshot as JSON).
//!
//! A few lines of HTTP/1.1 by hand: three GET endpoints do not justify a
//! web framework on a proxy's dependency list.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::app::Shared;
use crate::config::{ReplicaFallback, Role};
use crate::topology::Replication;

/// Serves HTTP until the process stops.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "http endpoint listening");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) =
                tokio::time::timeout(Duration::from_secs(5), handle(stream, shared)).await
            {
                debug!(error = %e, "http request timed out");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head (bounded); only the request line matters.
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let (status, ctype, body) = if method != "GET" {
        (405, "text/plain", "only GET is supported\n".to_string())
    } else {
        match path.split('?').next().unwrap_or("/") {
            "/metrics" => (200, "text/plain; version=0.0.4", render_metrics(&shared)),
            "/health" => match health(&shared) {
                Ok(msg) => (200, "text/plain", format!("{msg}\n")),
                Err(why) => (503, "text/plain", format!("{why}\n")),
            },
            "/live" => (200, "text/plain", "ok\n".to_string()),
            "/status" => (200, "application/json", status_json(&shared)),
            "/digests" => (200, "application/json", digests_json(&shared)),
            _ => (
                404,
                "text/plain",
                "endpoints: /metrics /health /live /status /digests\n".to_string(),
            ),
        }
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

fn render_metrics(shared: &Shared) -> String {
    let snap = shared.topology.load();
    let mut text = shared.metrics.render(
        &snap,
        &shared.pools.idle_counts(),
        shared.failover.promotions.load(Ordering::Relaxed),
        shared.failover.failovers.load(Ordering::Relaxed),
    );
    crate::metrics::render_rule_hits(&mut text, shared.rules.load().hits());
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "# HELP rwproxy_leader 1 while this instance holds the leader lock on a majority of the servers (only the leader fails over).\n# TYPE rwproxy_leader gauge\nrwproxy_leader {}",
        u8::from(shared.failover.is_leader())
    );
    text
}

/// Whether rwproxy can serve writes and reads now.
pub fn health(shared: &Shared) -> Result<String, Unhealthy> {
    let snap = shared.topology.load();
    let Some(p) = snap.primary_view() else {
        return Err(Unhealthy::NoPrimary(snap.no_primary_reason()));
    };
    let readable = snap.readable_replicas(None).count();
    if readable == 0 && shared.config.load().replica_fallback == ReplicaFallback::Error {
        return Err(Unhealthy::NoReplica);
    }
    Ok(format!(
        "ok: primary {} up, {readable} replica(s) readable",
        p.name
    ))
}

/// Why `/health` answers 503.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// No primary; the topology's reason when it knows one.
    #[error("no primary available: {}", .0.as_deref().unwrap_or("writes would fail"))]
    NoPrimary(Option<String>),
    #[error("no replica can serve reads and replica_fallback = \"error\"")]
    NoReplica,
}

fn unix_secs(t: std::time::SystemTime) -> Option<f64> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

fn status_json(shared: &Shared) -> String {
    let snap = shared.topology.load();
    let report = snap.primary_report();
    let servers: Vec<serde_json::Value> = snap
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let evidence = report.filter(|(p, _)| *p == i).map(|(_, e)| e);
            serde_json::json!({
                "name": &*s.name,
                // For the primary (published or lost): how many replicas
                // still receive from it, and since when (Unix seconds).
                "replicas_receiving": evidence.map(|e| e.receiving),
                "receiving_since": evidence.and_then(|e| e.since).and_then(unix_secs),
                "unreachable_from_rwproxy": evidence.is_some_and(|e| e.receiving > 0) && !s.up,
                "address": s.addr,
                "role": if snap.primary == Some(i) { "primary" } else if s.role == Role::Primary { "primary?" } else { "replica" },
                "up": s.up,
                "read_only": s.read_only,
                "replication": match s.replication {
                    Replication::Unknown => "unknown",
                    Replication::None => "none",
                    Replication::Running => "running",
                    Replication::Stopped { .. } => "stopped",
                },
                "lag_seconds": s.lag.map(|l| l.as_secs_f64()),
                "readable": s.readable(None),
                "gtid": s.applied().to_string(),
                "fenced": s.fenced,
                "last_error": s.last_error,
                "queries": s.stats.queries.load(Ordering::Relaxed),
                "connections_in_use": s.stats.in_use.load(Ordering::Relaxed),
            })
        })
        .collect();
    serde_json::json!({
        "generation": snap.generation,
        "primary": snap.primary_view().map(|p| p.name.to_string()),
        "leader": shared.failover.is_leader(),
        "conflict": snap.conflict.iter().map(|&i| snap.servers[i].name.to_string()).collect::<Vec<_>>(),
        "health": health(shared).unwrap_or_else(|e| e.to_string()),
        "servers": servers,
    })
    .to_string()
}

fn digests_json(shared: &Shared) -> String {
    let list: Vec<serde_json::Value> = shared
        .digests
        .top(100)
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "digest": format!("{:016x}", d.digest),
                "text": d.text,
                "count": d.count,
                "total_seconds": d.total.as_secs_f64(),
                "max_seconds": d.max.as_secs_f64(),
                "rows": d.rows,
                "errors": d.errors,
                "on_primary": d.primary,
                "on_replicas": d.replica,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}
