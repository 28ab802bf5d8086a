//! The admin port: a MySQL-protocol server (opensrv-mysql) whose answers
//! rwproxy generates, so `mariadb -P6032 -e 'SHOW SERVERS'` prints tables.
//!
//! Commands: `SHOW SERVERS | POOLS | SESSIONS | STATS`, `PROMOTE <name>
//! [FORCE]`, `FAILOVER`, `SET SERVER <name> ONLINE | OFFLINE | DRAIN`,
//! `RELOAD`, `HELP`. Anything else gets an ERR listing what is accepted.

pub mod http;

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, OkResponse,
    ParamParser, QueryResultWriter, StatementMetaWriter,
};
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::app::Shared;
use crate::config::Role;
use crate::protocol::auth;
use crate::topology::{AdminState, Replication};

const HELP: &[(&str, &str)] = &[
    (
        "SHOW SERVERS",
        "every server: role, state, lag, GTID, connections, queries, last error",
    ),
    (
        "SHOW POOLS",
        "backend connections per server: in use and idle",
    ),
    ("SHOW SESSIONS", "client sessions: id, user, address, since"),
    (
        "SHOW ACCOUNTS",
        "server accounts rwproxy cannot proxy (their plugin), and why",
    ),
    (
        "SHOW DIGESTS [LIMIT <n>]",
        "statement digests: count, time, rows, errors, where they ran",
    ),
    (
        "SHOW STATS",
        "totals: sessions, queries, errors, promotions, query rule hits",
    ),
    (
        "PROMOTE <name> [FORCE]",
        "planned switchover to replica <name>",
    ),
    (
        "FAILOVER",
        "promote the most advanced replica when the primary is down",
    ),
    (
        "SET SERVER <name> ONLINE|OFFLINE|DRAIN",
        "operator state of a server",
    ),
    ("RELOAD", "re-read the configuration file"),
    ("HELP", "this list"),
];

fn accepted() -> String {
    HELP.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
}

/// Serves the admin port until the process stops.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin port listening");
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shim = AdminShim {
            shared: shared.clone(),
            salt: auth::new_scramble(),
        };
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            if let Err(e) = AsyncMysqlIntermediary::run_on(shim, r, w).await {
                info!(%peer, error = %e, "admin session ended");
            }
        });
    }
}

struct AdminShim {
    shared: Arc<Shared>,
    salt: [u8; 20],
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column {
        table: String::new(),
        column: name.to_string(),
        coltype: ty,
        colflags: ColumnFlags::empty(),
    }
}

/// A result set as strings (NULL for `None`).
struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(names: &[&str]) -> Table {
        Table {
            columns: names
                .iter()
                .map(|n| col(n, ColumnType::MYSQL_TYPE_VAR_STRING))
                .collect(),
            rows: Vec::new(),
        }
    }
    fn row(&mut self, values: Vec<Option<String>>) {
        self.rows.push(values);
    }
}

/// Outcome of one admin command.
enum Answer {
    Table(Table),
    Ok(String),
    Err(ErrorKind, String),
}

fn dur_ms(d: std::time::Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

impl AdminShim {
    fn show_servers(&self) -> Table {
        let snap = self.shared.topology.load();
        let mut t = Table::new(&[
            "name",
            "address",
            "role",
            "state",
            "admin",
            "read_only",
            "replication",
            "lag_ms",
            "gtid",
            "connections",
            "queries",
            "errors",
            "last_error",
        ]);
        for (i, s) in snap.servers.iter().enumerate() {
            let role = if snap.primary == Some(i) {
                "primary"
            } else {
                match s.role {
                    Role::Primary => "primary?",
                    Role::Replica => "replica",
                }
            };
            let state = if let Some(f) = &s.fenced {
                format!("fenced: {f}")
            } else if s.up {
                "up".into()
            } else {
                "down".into()
            };
            let rep = match s.replication {
                Replication::Unknown => "unknown".to_string(),
                Replication::None => "none".to_string(),
                Replication::Running => "running".to_string(),
                Replication::Stopped { io, sql } => format!(
                    "stopped (io {}, sql {})",
                    if io { "yes" } else { "no" },
                    if sql { "yes" } else { "no" }
                ),
            };
            t.row(vec![
                Some(s.name.to_string()),
                Some(s.addr.clone()),
                Some(role.into()),
                Some(state),
                Some(admin_state(s.admin).into()),
                s.read_only.map(|r| if r { "1" } else { "0" }.to_string()),
                Some(rep),
                s.lag.map(dur_ms),
                Some(s.applied().to_string()),
                Some(s.stats.in_use.load(Ordering::Relaxed).to_string()),
                Some(s.stats.queries.load(Ordering::Relaxed).to_string()),
                Some(s.stats.errors.load(Ordering::Relaxed).to_string()),
                s.last_error.clone(),
            ]);
        }
        t
    }

    fn show_pools(&self) -> Table {
        let snap = self.shared.topology.load();
        let idle = self.shared.pools.idle_counts();
        let mut t = Table::new(&["server", "in_use", "idle", "opened_total"]);
        for s in snap.servers.iter() {
            t.row(vec![
                Some(s.name.to_string()),
                Some(s.stats.in_use.load(Ordering::Relaxed).to_string()),
                Some(idle.get(&s.name).copied().unwrap_or(0).to_string()),
                Some(s.stats.connections.load(Ordering::Relaxed).to_string()),
            ]);
        }
        t
    }

    fn show_sessions(&self) -> Table {
        let mut t = Table::new(&["id", "user", "address", "schema", "connected_secs"]);
        let mut rows: Vec<(u32, crate::app::SessionInfo)> = self
            .shared
            .sessions
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        rows.sort_by_key(|r| r.0);
        for (id, s) in rows {
            t.row(vec![
                Some(id.to_string()),
                Some(s.user),
                Some(s.peer.to_string()),
                s.schema,
                Some(
                    s.since
                        .elapsed()
                        .map(|d| d.as_secs().to_string())
                        .unwrap_or_default(),
                ),
            ]);
        }
        t
    }

    fn show_stats(&self) -> Table {
        let snap = self.shared.topology.load();
        let q: u64 = snap
            .servers
            .iter()
            .map(|s| s.stats.queries.load(Ordering::Relaxed))
            .sum();
        let e: u64 = snap
            .servers
            .iter()
            .map(|s| s.stats.errors.load(Ordering::Relaxed))
            .sum();
        let sessions = self.shared.sessions.lock().map(|m| m.len()).unwrap_or(0);
        let mut t = Table::new(&["name", "value"]);
        for (k, v) in [
            ("sessions", sessions as u64),
            ("queries", q),
            ("backend_errors", e),
            (
                "promotions",
                self.shared.failover.promotions.load(Ordering::Relaxed),
            ),
            (
                "failovers",
                self.shared.failover.failovers.load(Ordering::Relaxed),
            ),
            ("topology_generation", snap.generation),
        ] {
            t.row(vec![Some(k.into()), Some(v.to_string())]);
        }
        for (rule, hits) in self.shared.rules.load().hits() {
            t.row(vec![
                Some(format!("rule_hits.{rule}")),
                Some(hits.to_string()),
            ]);
        }
        t
    }

    fn show_digests(&self, n: usize) -> Table {
        let mut t = Table::new(&[
            "digest",
            "count",
            "total_ms",
            "avg_ms",
            "max_ms",
            "rows",
            "errors",
            "on_primary",
            "on_replicas",
            "text",
        ]);
        for d in self.shared.digests.top(n) {
            let avg = if d.count > 0 {
                d.total / u32::try_from(d.count).unwrap_or(u32::MAX)
            } else {
                d.total
            };
            t.row(vec![
                Some(format!("{:016x}", d.digest)),
                Some(d.count.to_string()),
                Some(format!("{:.3}", d.total.as_secs_f64() * 1000.0)),
                Some(format!("{:.3}", avg.as_secs_f64() * 1000.0)),
                Some(format!("{:.3}", d.max.as_secs_f64() * 1000.0)),
                Some(d.rows.to_string()),
                Some(d.errors.to_string()),
                Some(d.primary.to_string()),
                Some(d.replica.to_string()),
                Some(d.text),
            ]);
        }
        t
    }

    fn set_server(&self, name: &str, state: &str) -> Answer {
        let new = match state.to_ascii_uppercase().as_str() {
            "ONLINE" => AdminState::Online,
            "OFFLINE" => AdminState::Offline,
            "DRAIN" | "DRAINING" => AdminState::Draining,
            _ => {
                return Answer::Err(
                    ErrorKind::ER_SYNTAX_ERROR,
                    format!("SET SERVER {name} {state}: state must be ONLINE, OFFLINE or DRAIN"),
                );
            }
        };
        let snap = self.shared.topology.load();
        if snap.find(name).is_none() {
            let names: Vec<String> = snap.servers.iter().map(|s| s.name.to_string()).collect();
            return Answer::Err(
                ErrorKind::ER_UNKNOWN_ERROR,
                format!("unknown server '{name}'; servers: {}", names.join(", ")),
            );
        }
        self.shared.topology.update(|s| {
            if let Some(v) = s.servers.iter_mut().find(|v| &*v.name == name) {
                v.admin = new;
            }
        });
        info!(
            server = name,
            state = admin_state(new),
            "admin changed server state"
        );
        Answer::Ok(format!("server {name} is now {}", admin_state(new)))
    }

    async fn run(&self, query: &str) -> Answer {
        let q = query.trim().trim_end_matches(';').trim();
        let words: Vec<&str> = q.split_whitespace().collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let u: Vec<&str> = upper.iter().map(String::as_str).collect();
        match u.as_slice() {
            ["SHOW", "SERVERS"] => Answer::Table(self.show_servers()),
            ["SHOW", "POOLS"] => Answer::Table(self.show_pools()),
            ["SHOW", "SESSIONS"] => Answer::Table(self.show_sessions()),
            ["SHOW", "STATS"] => Answer::Table(self.show_stats()),
            ["SHOW", "ACCOUNTS"] => {
                let mut t = Table::new(&["user", "host", "plugin", "note"]);
                for (u, h, p) in self.shared.accounts.unsupported() {
                    t.row(vec![
                        Some(u),
                        Some(h),
                        Some(p.clone()),
                        Some(format!("logins get ERR 1251: rwproxy cannot proxy '{p}'")),
                    ]);
                }
                Answer::Table(t)
            }
            ["SHOW", "DIGESTS"] => Answer::Table(self.show_digests(20)),
            ["SHOW", "DIGESTS", "LIMIT", n] => match n.parse::<usize>() {
                Ok(n) => Answer::Table(self.show_digests(n)),
                Err(_) => Answer::Err(
                    ErrorKind::ER_SYNTAX_ERROR,
                    format!("SHOW DIGESTS LIMIT {n}: the limit must be a number"),
                ),
            },
            ["HELP"] => {
                let mut t = Table::new(&["command", "description"]);
                for (c, d) in HELP {
                    t.row(vec![Some((*c).into()), Some((*d).into())]);
                }
                Answer::Table(t)
            }
            ["PROMOTE", _] | ["PROMOTE", _, "FORCE"] => {
                let force = u.len() == 3;
                match self.shared.failover.switchover(words[1], force).await {
                    Ok(r) => Answer::Table(report_table(&r)),
                    Err(e) => {
                        Answer::Err(ErrorKind::ER_UNKNOWN_ERROR, format!("PROMOTE refused: {e}"))
                    }
                }
            }
            ["FAILOVER"] => match self.shared.failover.failover().await {
                Ok(r) => Answer::Table(report_table(&r)),
                Err(e) => Answer::Err(
                    ErrorKind::ER_UNKNOWN_ERROR,
                    format!("FAILOVER refused: {e}"),
                ),
            },
            ["SET", "SERVER", _, _] => self.set_server(words[2], words[3]),
            ["RELOAD"] => match crate::app::reload(&self.shared).await {
                Ok(msg) => Answer::Ok(msg),
                Err(e) => Answer::Err(ErrorKind::ER_UNKNOWN_ERROR, format!("RELOAD failed: {e}")),
            },
            // What client libraries and the CLI ask on connect and for `\s`
            // (`SELECT @@version_comment LIMIT 1`, `SELECT DATABASE(), USER()`,
            // `SELECT @@max_allowed_packet, @@wait_timeout`).
            ["SELECT", ..] => match client_probe(q) {
                Some(t) => Answer::Table(t),
                None => Answer::Err(
                    ErrorKind::ER_UNKNOWN_COM_ERROR,
                    format!("unknown admin command {q:?}; accepted: {}", accepted()),
                ),
            },
            _ => Answer::Err(
                ErrorKind::ER_UNKNOWN_COM_ERROR,
                format!("unknown admin command {q:?}; accepted: {}", accepted()),
            ),
        }
    }
}

/// Answers the variable and function probes drivers send on connect.
fn client_probe(q: &str) -> Option<Table> {
    let body = q.get(6..)?.trim();
    let body = match body.to_ascii_uppercase().rfind(" LIMIT ") {
        Some(i) => &body[..i],
        None => body,
    };
    let items: Vec<&str> = body.split(',').map(str::trim).collect();
    let mut values = Vec::new();
    for item in &items {
        let v = match item.to_ascii_lowercase().as_str() {
            "@@version_comment" => Some("rwproxy admin".to_string()),
            "@@version" | "version()" => Some("5.5.5-10.11.0-rwproxy-admin".to_string()),
            "@@max_allowed_packet" => Some("16777216".to_string()),
            "@@wait_timeout" | "@@interactive_timeout" => Some("28800".to_string()),
            "@@socket" | "database()" => None,
            "user()" | "current_user()" => Some("admin".to_string()),
            "@@character_set_client"
            | "@@character_set_connection"
            | "@@character_set_results"
            | "@@character_set_server" => Some("utf8mb4".to_string()),
            "connection_id()" => Some("1".to_string()),
            _ => return None,
        };
        values.push(v);
    }
    let mut t = Table::new(&items);
    t.row(values);
    Some(t)
}

fn admin_state(a: AdminState) -> &'static str {
    match a {
        AdminState::Online => "ONLINE",
        AdminState::Offline => "OFFLINE",
        AdminState::Draining => "DRAIN",
    }
}

fn report_table(r: &crate::failover::Report) -> Table {
    let mut t = Table::new(&["step", "ms"]);
    for (s, d) in &r.steps {
        t.row(vec![Some(s.clone()), Some(dur_ms(*d))]);
    }
    t.row(vec![Some(format!("new primary: {}", r.new_primary)), None]);
    t.row(vec![
        Some("write pause".into()),
        Some(dur_ms(r.write_pause)),
    ]);
    t
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for AdminShim {
    type Error = io::Error;

    fn version(&self) -> String {
        "5.5.5-10.11.0-rwproxy-admin".into()
    }

    fn salt(&self) -> [u8; 20] {
        self.salt
    }

    async fn authenticate(
        &self,
        _plugin: &str,
        username: &[u8],
        salt: &[u8],
        auth_data: &[u8],
    ) -> bool {
        let cfg = self.shared.config.load();
        let Some(admin) = &cfg.admin else {
            return false;
        };
        if username != admin.user.as_bytes() {
            return false;
        }
        let (_, hash) = auth::from_password(&admin.password);
        auth::verify(salt, auth_data, &hash).is_some()
    }

    async fn on_prepare<'a>(
        &'a mut self,
        _q: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> io::Result<()> {
        info.error(
            ErrorKind::ER_UNSUPPORTED_PS,
            b"the admin port does not support prepared statements",
        )
        .await
    }

    async fn on_execute<'a>(
        &'a mut self,
        _id: u32,
        _p: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        results
            .error(
                ErrorKind::ER_UNSUPPORTED_PS,
                b"the admin port does not support prepared statements",
            )
            .await
    }

    async fn on_close<'a>(&'a mut self, _stmt: u32)
    where
        W: 'async_trait,
    {
    }

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        // Normalized: an unknown command might hold anything, secrets included.
        info!(command = %crate::router::digest::Redacted(query.as_bytes()), "admin command");
        match self.run(query).await {
            Answer::Table(t) => {
                let mut w = results.start(&t.columns).await?;
                for row in &t.rows {
                    for v in row {
                        w.write_col(v.as_deref())?;
                    }
                    w.end_row().await?;
                }
                w.finish().await
            }
            Answer::Ok(info) => {
                results
                    .completed(OkResponse {
                        info,
                        ..OkResponse::default()
                    })
                    .await
            }
            Answer::Err(kind, msg) => results.error(kind, msg.as_bytes()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HELP;

    /// Every command form `run` matches (its literal words) is in HELP.
    #[test]
    fn help_lists_every_command() {
        let src = include_str!("mod.rs");
        let body = &src[src.find("async fn run(").expect("run")..];
        let body = &body[..body.find("\n    }\n").expect("end of run")];
        let mut checked = 0;
        for line in body.lines() {
            let line = line.trim_start().trim_start_matches("| ");
            let Some(pattern) = line.strip_prefix('[') else {
                continue;
            };
            let Some(end) = pattern.find(']') else {
                continue;
            };
            let words: Vec<&str> = pattern[..end]
                .split(", ")
                .map_while(|w| w.strip_prefix('"').and_then(|w| w.strip_suffix('"')))
                .collect();
            if words.is_empty() || words == ["SELECT"] {
                continue;
            }
            let command = words.join(" ");
            assert!(
                HELP.iter()
                    .any(|(c, _)| c.replace(['[', ']'], "").starts_with(&command)),
                "admin command {command:?} is missing from HELP"
            );
            checked += 1;
        }
        assert!(checked >= 10, "read the command patterns ({checked})");
    }
}
