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
use tracing::info;

use super::Session;
use crate::config::PoolMode;
use crate::router::classify::{Classified, StatementKind};
use crate::router::server_wide::{ServerWide, server_wide};
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
