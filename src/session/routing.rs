//! Where the session's own knowledge changes a statement's route or its
//! state (issue 16, item 5): reads calling stored functions (see
//! [`crate::catalog`]), function DDL, and a dropped current schema.

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::router::classify::{self, Classified, StatementKind};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// A read that calls stored functions goes to the primary unless every
    /// one of them is known not to write (the primary's catalogue or
    /// `read_only_functions`). Other statements pass unchanged.
    pub(super) fn route_stored_functions(&self, sql: &[u8], mut c: Classified) -> Classified {
        if !c.calls_functions || c.kind != StatementKind::Read {
            return c;
        }
        let catalog = &self.shared.catalog;
        catalog.want_fresh();
        let calls = classify::stored_functions(sql);
        let read_only = crate::catalog::all_read_only(
            &calls,
            self.state.schema.as_deref(),
            &catalog.load(),
            &self.cfg.read_only_functions,
        );
        if !read_only {
            c.kind = StatementKind::ReadPrimary;
        }
        c
    }

    /// Before a write runs: a `CREATE|ALTER|DROP FUNCTION` empties the
    /// function catalogue (see [`crate::catalog::Catalog::invalidate`]).
    /// Returns whether it did, so that [`Self::after_write`] reloads it.
    pub(super) fn before_write(&self, sql: &[u8], c: &Classified) -> bool {
        let ddl = c.kind == StatementKind::Write && crate::catalog::changes_functions(sql);
        if ddl {
            self.shared.catalog.invalidate();
        }
        ddl
    }

    /// After a write succeeded: the function catalogue is read again after
    /// function DDL, and a `DROP DATABASE` of the current schema leaves the
    /// session without one, as the server leaves its connection (`SELECT
    /// DATABASE()` is NULL, and no other connection replays the schema).
    /// `server` ran the statement. The session's other connections still
    /// have a schema selected (the dropped one, replicated away under them,
    /// or the one the pool handed them with), which no statement can unset:
    /// they go back to the pool (which gives them only to sessions that
    /// select a schema), unless their prepared statements keep them.
    pub(super) fn after_write(
        &mut self,
        sql: &[u8],
        c: &Classified,
        function_ddl: bool,
        server: &std::sync::Arc<str>,
    ) {
        if function_ddl {
            self.shared.catalog.want_fresh();
        }
        if c.kind == StatementKind::Write
            && let Some(dropped) = classify::dropped_schema(sql)
            && self.state.schema.as_deref() == Some(dropped.as_str())
        {
            self.state.schema = None;
            let mut i = 0;
            while i < self.conns.len() {
                let h = &mut self.conns[i];
                if &h.server == server {
                    h.conn.clear_schema();
                } else if h.conn.schema().is_some()
                    && !h.primary
                    && !self.stmts.busy_on(&h.server)
                    && self
                        .replica_tx
                        .as_ref()
                        .is_none_or(|t| t.server != h.server)
                {
                    let held = self.conns.swap_remove(i);
                    self.stmts.forget_server(&held.server);
                    self.shared.pools.give_back(held.into_conn());
                    continue;
                }
                i += 1;
            }
        }
    }
}
