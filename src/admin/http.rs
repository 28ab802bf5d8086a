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
                Err(msg) => (503, "text/plain", format!("{msg}\n")),
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
    text
}

/// Whether rwproxy can serve writes and reads now.
pub fn health(shared: &Shared) -> Result<String, String> {
    let snap = shared.topology.load();
    let Some(p) = snap.primary_view() else {
        return Err("no primary available: writes would fail".into());
    };
    let readable = snap.readable_replicas(None).count();
    if readable == 0 && shared.config.load().replica_fallback == ReplicaFallback::Error {
        return Err("no replica can serve reads and replica_fallback = \"error\"".into());
    }
    Ok(format!(
        "ok: primary {} up, {readable} replica(s) readable",
        p.name
    ))
}

fn status_json(shared: &Shared) -> String {
    let snap = shared.topology.load();
    let servers: Vec<serde_json::Value> = snap
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "name": &*s.name,
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
        "health": health(shared).unwrap_or_else(|e| e),
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
