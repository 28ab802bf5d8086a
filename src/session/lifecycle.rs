//! The session's side of backend connection lifecycles (issue 16, items 4
//! and 7):
//!
//! - a backend connection the session *depends on* (its open transaction,
//!   autocommit off, pinned state; in `session` pool mode also replayable
//!   state it set) that dies closes the client's connection as the server
//!   would — the server's ERR (e.g. 1927) when one came, else a bare close
//!   (the client reports 2013/2006 and reconnects) — never a silent
//!   reconnect that loses the transaction or state;
//! - `SET GLOBAL` and account statements made through rwproxy act on the
//!   pools ([`crate::router::server_wide`]);
//! - in the sharing pool modes, where no server connection sits under an
//!   idle client, rwproxy enforces the client's own `wait_timeout`;
//! - replayable `SET` and `USE` run on a replica when no primary is
//!   reachable: they only need a server to check them, and the session
//!   records and replays them.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::Session;
use crate::config::PoolMode;
use crate::router::classify::{Classified, StatementKind};
use crate::router::server_wide::{ServerWide, global_assignments, server_wide};
use crate::router::set::{SetEffect, parse_set};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Whether losing held connection `pos` loses something the client
    /// relies on (see the module doc).
    pub(super) fn depends_on(&self, pos: usize) -> bool {
        let Some(held) = self.conns.get(pos) else {
            return false;
        };
        if self
            .replica_tx
            .as_ref()
            .is_some_and(|t| t.server == held.server)
        {
            return true;
        }
        held.primary
            && (self.in_trans
                || !self.autocommit
                || self.pinned
                || (self.cfg.pool_mode == PoolMode::Session && self.state.fp != 0))
    }

    /// The server answered on held connection `pos` with an error that
    /// ends its session there (already forwarded to the client): the
    /// connection goes, and the client's connection too if the session
    /// depended on it.
    pub(super) fn server_ended_session(&mut self, pos: usize, code: u16) {
        if self.depends_on(pos) {
            self.closing = true;
        }
        info!(parent: &self.span, server = %self.conns[pos].server, code, closing_client = self.closing, "server ended its session on a backend connection");
        self.conns[pos].conn.mark_broken();
        self.remove_conn(pos);
    }

    /// After a statement succeeded: `SET GLOBAL` makes pooled connections
    /// older than it get a reset before their next use; account changes
    /// close idle connections (every user's: a `GRANT` to a role reaches
    /// its grantees) and re-read the accounts. Plain reads never get here.
    pub(super) async fn after_server_wide(&mut self, c: &Classified, sql: &[u8]) {
        if matches!(c.kind, StatementKind::Read | StatementKind::ReadPrimary) {
            return;
        }
        match server_wide(sql) {
            ServerWide::None => {}
            ServerWide::Globals => self.shared.pools.globals_changed(),
            ServerWide::Accounts => {
                self.shared.pools.discard_user(None);
                if self.cfg.auth == crate::config::AuthMode::Servers {
                    let _ = self.shared.accounts.refresh().await;
                }
            }
        }
    }

    /// Before a statement runs: `SET GLOBAL` is made on the replicas
    /// ([`Self::globals_to_replicas`]), and an account statement closes the
    /// idle connections (as after it, in [`Self::after_server_wide`]) so
    /// that none logged in under the old account is handed to a session
    /// that logs in as soon as the client has its answer.
    pub(super) async fn before_server_wide(&mut self, c: &Classified, sql: &[u8]) {
        if matches!(c.kind, StatementKind::Read | StatementKind::ReadPrimary) {
            return;
        }
        match server_wide(sql) {
            ServerWide::None => {}
            ServerWide::Globals => self.globals_to_replicas(sql).await,
            ServerWide::Accounts => {
                self.shared.pools.discard_user(None);
            }
        }
    }

    /// `SET GLOBAL` made through rwproxy reaches the replicas too, before
    /// the primary runs it (and so before the client has its answer): a
    /// read that lands on a replica must see the global the client just set,
    /// as it would directly (`max_allowed_packet`, `div_precision_increment`,
    /// `session_track_system_variables` for new sessions…). The primary's
    /// answer is the client's; a replica's refusal is logged, nothing more.
    ///
    /// Not copied: variables that describe one server's part in replication
    /// (`read_only`, `gtid_*`, `server_id`… see
    /// `server_wide::global_assignments`), values other than constants and
    /// arithmetic on numbers and user variables (those are read on the
    /// session's primary connection first, so the usual save-and-restore
    /// through `@saved` keeps replicas equal; a function or `@@x` there is
    /// left to the primary), and statements inside a multi-statement text.
    /// A replica that is down misses it: globals are not replayed.
    async fn globals_to_replicas(&mut self, sql: &[u8]) {
        let Some(assignments) = global_assignments(sql) else {
            return;
        };
        let snap = self.shared.topology.load();
        let Some(primary) = snap.primary.filter(|&i| snap.servers[i].up) else {
            return;
        };
        let mut values = Vec::with_capacity(assignments.len());
        for a in &assignments {
            if a.constant {
                values.push(String::from_utf8_lossy(a.value).into_owned());
                continue;
            }
            if !a.evaluable {
                debug!(parent: &self.span, "SET GLOBAL with an expression: left to the primary");
                return;
            }
            let Ok(pos) = self.acquire(&snap, primary).await else {
                return;
            };
            let expr = format!("SELECT {}", String::from_utf8_lossy(a.value));
            match self.conns[pos].conn.query_value(&expr).await {
                Ok(v) => values.push(sql_literal(v)),
                Err(e) => {
                    info!(parent: &self.span, error = %e, "SET GLOBAL: could not read the value");
                    self.server_ended_session(pos, 0);
                    return;
                }
            }
        }
        let list: Vec<String> = assignments
            .iter()
            .zip(&values)
            .map(|(a, v)| format!("`{}` = {v}", a.name.replace('`', "``")))
            .collect();
        let stmt = format!("SET GLOBAL {}", list.join(", "));
        let replicas: Vec<usize> = (0..snap.servers.len())
            .filter(|&i| {
                let s = &snap.servers[i];
                i != primary
                    && s.up
                    && s.fenced.is_none()
                    && s.admin == crate::topology::AdminState::Online
            })
            .collect();
        for idx in replicas {
            let server = snap.servers[idx].name.clone();
            let Ok(pos) = self.acquire(&snap, idx).await else {
                info!(parent: &self.span, %server, "SET GLOBAL not made on a replica: no connection");
                continue;
            };
            match self.conns[pos].conn.query_internal(&stmt).await {
                Ok(None) => debug!(parent: &self.span, %server, "SET GLOBAL made on a replica"),
                Ok(Some(e)) => {
                    info!(parent: &self.span, %server, code = e.code, message = %e.message, "a replica refused SET GLOBAL")
                }
                Err(e) => {
                    info!(parent: &self.span, %server, error = %e, "SET GLOBAL failed on a replica");
                    self.server_ended_session(pos, 0);
                }
            }
        }
    }

    /// The client's own `wait_timeout`, which rwproxy enforces itself: in
    /// the sharing pool modes no server connection sits under an idle
    /// client, and in `session` mode the primary's connection timing out
    /// would go unnoticed while the session's next statements are reads
    /// on replicas. Only a value the client set is known; the servers'
    /// global default (8 hours unless configured) is left to
    /// `client_idle_timeout_ms`.
    pub(super) fn client_wait_timeout(&self) -> Option<Duration> {
        self.state.wait_timeout()
    }

    /// The server a replayable `SET`, `USE` or `COM_INIT_DB`/
    /// `COM_SET_OPTION` (kind `Set`/`Use`) runs on while no primary is up
    /// (outside a transaction, unpinned): a readable replica, else any
    /// reachable one (a replica whose source is gone has stopped
    /// replicating, so it is not readable, but it can check a `SET`). The
    /// session records the statement as usual and replays it wherever it
    /// goes next. `None`: routed as always.
    pub(super) fn without_primary(&self, c: &Classified, sql: Option<&[u8]>) -> Option<Arc<str>> {
        if !matches!(c.kind, StatementKind::Set | StatementKind::Use)
            || c.pins_session
            || self.in_trans
            || self.pinned
        {
            return None;
        }
        let snap = self.shared.topology.load();
        if snap.primary_view().is_some_and(|p| p.up) {
            return None;
        }
        let replayable = c.kind == StatementKind::Use
            || sql.is_none_or(|sql| match parse_set(sql) {
                SetEffect::Session(items) => items.iter().all(|i| i.key != "autocommit"),
                _ => false,
            });
        if !replayable {
            return None;
        }
        let usable = |s: &&crate::topology::ServerView| {
            s.up && s.fenced.is_none() && s.admin == crate::topology::AdminState::Online
        };
        snap.readable_replicas(None)
            .map(|i| &snap.servers[i])
            .find(usable)
            .or_else(|| snap.servers.iter().find(usable))
            .map(|s| s.name.clone())
    }
}

/// A value read from the server as an SQL literal: numbers as written,
/// NULL, else a string (as a hex literal when it holds a quote or a
/// backslash, which `NO_BACKSLASH_ESCAPES` would read differently).
fn sql_literal(v: Option<String>) -> String {
    let Some(v) = v else {
        return "NULL".to_string();
    };
    let numeric = !v.is_empty()
        && v.parse::<f64>().is_ok()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if numeric {
        v
    } else if v.contains(['\\', '\'']) {
        let hex: String = v.bytes().map(|b| format!("{b:02X}")).collect();
        format!("X'{hex}'")
    } else {
        format!("'{v}'")
    }
}

#[cfg(test)]
mod tests {
    use super::sql_literal;

    #[test]
    fn values_read_back_as_literals() {
        assert_eq!(sql_literal(None), "NULL");
        assert_eq!(sql_literal(Some("2048".into())), "2048");
        assert_eq!(sql_literal(Some("-1.5e3".into())), "-1.5e3");
        assert_eq!(sql_literal(Some("ON".into())), "'ON'");
        assert_eq!(sql_literal(Some("".into())), "''");
        assert_eq!(sql_literal(Some("inf".into())), "'inf'");
        assert_eq!(sql_literal(Some("a'b".into())), "X'612762'");
    }
}
