//! Server-side prepared statements across several backend connections.
//!
//! The client sees rwproxy's own statement ids. Each backend connection
//! has its own ids; a statement is prepared on a connection the first time
//! it runs there, so a read-only prepared SELECT can be spread over the
//! replicas. Parameter types, which a client sends only with the first
//! execution, are remembered and injected for a connection seeing the
//! statement for the first time. Long data and cursors tie the statement
//! to the connection that holds them until the execution / reset.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::{ExecError, FailoverWait, Session};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::{PoolMode, RuleRoute};
use tracing::warn;

use crate::failover::GateTicket;
use crate::metrics::{ErrorKind as MetricError, RouteLabel};
use crate::protocol::ClientError;
use crate::protocol::command::{self, code};
use crate::protocol::ok_payload;
use crate::protocol::response::{self, Expect, ForwardError};
use crate::router::classify::{self, Classified};
use crate::router::rules::{self, Verdict};
use crate::router::{self, Route};
use crate::topology::Snapshot;

/// One statement as the client knows it.
pub(super) struct Stmt {
    sql: Vec<u8>,
    /// Digest of the statement text and its normalized form.
    digest: Option<(u64, String)>,
    class: Classified,
    /// Route forced by a query rule at prepare time; applied to each
    /// execution against the session state of that moment.
    forced: Option<RuleRoute>,
    params: u16,
    /// Parameter types from the client's last execution that sent them.
    types: Option<Vec<u8>>,
    /// Metadata cache: the result column definitions the client holds for
    /// this statement (from its prepare, or the last execution that sent
    /// them); see `response::MetaCache`.
    pub(super) columns: Option<Arc<[u8]>>,
    /// Backend id per server name, and whether that connection has seen
    /// the parameter types.
    on: Vec<(Arc<str>, u32, bool)>,
    /// Server holding long data sent for the next execution.
    long_data_on: Option<Arc<str>>,
    /// Server holding an open cursor.
    cursor_on: Option<Arc<str>>,
}

/// The session's statements by client-visible id.
#[derive(Default)]
pub(super) struct Statements {
    /// Fx, not SipHash: looked up several times per execution, and the
    /// ids are rwproxy's own (a client cannot choose colliding keys).
    pub(super) by_id: FxHashMap<u32, Stmt>,
    next_id: u32,
}

impl Statements {
    /// Whether a statement holds long data or an open cursor on `server`
    /// (its connection must then stay with the session).
    pub(super) fn busy_on(&self, server: &Arc<str>) -> bool {
        self.by_id.values().any(|s| {
            s.long_data_on.as_ref() == Some(server) || s.cursor_on.as_ref() == Some(server)
        })
    }

    /// Forgets backend statement `bid` on `server` (closed by the cache).
    fn forget_backend_id(&mut self, server: &Arc<str>, bid: u32) {
        for s in self.by_id.values_mut() {
            s.on.retain(|(name, id, _)| !(name == server && *id == bid));
        }
    }

    /// Forgets every id on a server whose connection the session dropped.
    pub(super) fn forget_server(&mut self, server: &Arc<str>) {
        for s in self.by_id.values_mut() {
            s.on.retain(|(name, _, _)| name != server);
            if s.long_data_on.as_ref() == Some(server) {
                s.long_data_on = None;
            }
            if s.cursor_on.as_ref() == Some(server) {
                s.cursor_on = None;
            }
        }
    }
}

fn unknown_stmt(id: u32) -> ExecError {
    ExecError::Refused(ClientError::new(
        1243,
        b"HY000",
        format!("Unknown prepared statement handler ({id}) given to mysqld_stmt_execute"),
    ))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn sharing(&self) -> bool {
        self.cfg.pool_mode != PoolMode::Session
    }

    /// Sharing pool modes: remembers a statement prepared on the connection
    /// at `pos` in its bounded cache, closing what the cache evicts.
    async fn cache_stmt(&mut self, pos: usize, sql: &[u8], bid: u32) {
        if !self.sharing() {
            // Session mode: the handle lives on until the session ends,
            // and only a reset closes it then.
            self.conns[pos].conn.dirty = true;
            return;
        }
        let cap = self.cfg.pool_stmt_cache;
        let evicted = self.conns[pos]
            .conn
            .stmt_cache
            .insert(sql.to_vec(), bid, cap);
        let server = self.conns[pos].server.clone();
        for old in evicted {
            self.stmts.forget_backend_id(&server, old);
            self.conns[pos].conn.close_stmt(old).await;
        }
    }

    /// Routes a statement's prepare or execution; `causal` lets a read
    /// after a write wait on a replica (`causal_wait_ms`; preparing writes
    /// nothing, so a prepare does not wait).
    async fn stmt_target(
        &mut self,
        snap: &Snapshot,
        class: &Classified,
        exclude: &[usize],
        causal: bool,
    ) -> Result<usize, router::Unavailable> {
        let ticket = self.read_ticket();
        let needs = router::ReadNeeds {
            max_lag: None,
            min_gtid: self.last_write.as_ref(),
            exclude,
        };
        let view = self.view_in(snap);
        let mut route = router::route(class, view, snap, self.policy(), &needs, ticket);
        if causal {
            route = self.causal(route, class, snap, exclude, ticket).await;
        }
        match route {
            Route::Primary(i) | Route::Replica(i) | Route::Fallback(i) => Ok(i),
            Route::Unavailable(why) => Err(why),
        }
    }

    pub(super) async fn on_prepare(
        &mut self,
        payload: &[u8],
        sql: Vec<u8>,
    ) -> Result<(), ExecError> {
        let class = classify::classify(&sql);
        debug!(parent: &self.span, statement = %crate::router::digest::Redacted(&sql), kind = ?class.kind, "prepare");
        // Rules are matched once, at prepare: a denied statement is never
        // prepared anywhere (its executions then fail as unknown ids).
        let forced = match self.apply_rules(&sql, class, None) {
            Ok((_, Some(Verdict::Route(r)))) => Some(r),
            Ok(_) => None,
            Err(denied) => return Err(ExecError::Refused(denied)),
        };
        let snap = self.shared.topology.load();
        let routed = match forced {
            Some(r) => rules::apply_route(class, r, self.view()),
            None => class,
        };
        // Preparing writes nothing, so when no primary is available (e.g.
        // during a failover) any live server can describe the statement;
        // its executions are routed (and wait for a primary) as usual.
        let idx = match self.stmt_target(&snap, &routed, &[], false).await {
            Ok(i) => i,
            Err(why) => snap
                .servers
                .iter()
                .position(|s| s.up && s.fenced.is_none())
                .ok_or_else(|| ExecError::Refused(super::unavailable(why, &snap)))?,
        };
        let pos = self.acquire(&snap, idx).await?;
        let client_id = self.stmts.next_id.wrapping_add(1).max(1);
        let caps = self.caps;
        // The client caches the columns of its prepare; the server too.
        let client_caches = self
            .ext
            .contains(mysql_common::constants::MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA);
        let held = &mut self.conns[pos];
        let keep_columns = client_caches || held.conn.caches_metadata();
        held.conn.broken = true;
        held.conn.stream.queue_payload(0, payload);
        let r = match held.conn.stream.flush().await {
            Err(source) => Err(ForwardError::Backend {
                source,
                started: false,
            }),
            Ok(()) => {
                response::forward_prepare(
                    &mut held.conn.stream,
                    Some(&mut self.client),
                    caps,
                    client_id,
                    keep_columns,
                )
                .await
            }
        };
        match r {
            Ok(Ok(p)) => {
                held.conn.broken = false;
                let bid = p.backend_id;
                if let Some(cols) = &p.column_defs {
                    held.conn.sent_columns.insert(bid, cols.clone());
                }
                self.cache_stmt(pos, &sql, bid).await;
                let held = &self.conns[pos];
                self.stmts.next_id = client_id;
                self.stmts.by_id.insert(
                    client_id,
                    Stmt {
                        digest: (self.cfg.digest_capacity > 0).then(|| {
                            let mut text = String::new();
                            let d = crate::router::digest::normalize(&sql, &mut text);
                            (d, text)
                        }),
                        sql,
                        class,
                        forced,
                        params: p.params,
                        types: None,
                        columns: p.column_defs,
                        on: vec![(held.server.clone(), p.backend_id, false)],
                        long_data_on: None,
                        cursor_on: None,
                    },
                );
                Ok(())
            }
            Ok(Err(_server_err)) => {
                held.conn.broken = false;
                Ok(())
            }
            Err(e) => Err(self.drop_conn(pos, e)),
        }
    }

    /// Makes sure statement `id` is prepared on the connection at `pos`;
    /// returns its backend id there.
    async fn ensure_prepared(&mut self, pos: usize, id: u32) -> Result<u32, ExecError> {
        let server = self.conns[pos].server.clone();
        let stmt = self.stmts.by_id.get(&id).ok_or_else(|| unknown_stmt(id))?;
        if let Some((_, bid, _)) = stmt.on.iter().find(|(s, _, _)| *s == server) {
            return Ok(*bid);
        }
        if self.sharing()
            && let Some(bid) = self.conns[pos].conn.stmt_cache.get(&stmt.sql)
        {
            // Prepared here by an earlier borrower: reuse it (parameter
            // types are sent again with the first execution, `seen` false).
            if let Some(stmt) = self.stmts.by_id.get_mut(&id) {
                stmt.on.push((server, bid, false));
            }
            return Ok(bid);
        }
        let mut payload = Vec::with_capacity(1 + stmt.sql.len());
        payload.push(code::COM_STMT_PREPARE);
        payload.extend_from_slice(&stmt.sql);
        let caps = self.caps;
        let held = &mut self.conns[pos];
        let keep_columns = held.conn.caches_metadata();
        held.conn.broken = true;
        held.conn.stream.queue_payload(0, &payload);
        let r = match held.conn.stream.flush().await {
            Err(source) => Err(ForwardError::Backend {
                source,
                started: false,
            }),
            Ok(()) => {
                response::forward_prepare::<_, tokio::net::TcpStream>(
                    &mut held.conn.stream,
                    None,
                    caps,
                    0,
                    keep_columns,
                )
                .await
            }
        };
        match r {
            Ok(Ok(p)) => {
                held.conn.broken = false;
                if let Some(cols) = p.column_defs {
                    // Shared with the client's copy when they are the same
                    // (the usual case: replicas have the same schema).
                    let holds = self.stmts.by_id.get(&id).and_then(|s| s.columns.as_ref());
                    let cols = match holds {
                        Some(h) if h[..] == cols[..] => h.clone(),
                        _ => cols,
                    };
                    held.conn.sent_columns.insert(p.backend_id, cols);
                }
                let sql = self.stmts.by_id.get(&id).map(|s| s.sql.clone());
                if let Some(stmt) = self.stmts.by_id.get_mut(&id) {
                    stmt.on.push((server, p.backend_id, false));
                }
                if let Some(sql) = sql {
                    self.cache_stmt(pos, &sql, p.backend_id).await;
                }
                Ok(p.backend_id)
            }
            Ok(Err(err)) => {
                held.conn.broken = false;
                Err(ExecError::Refused(crate::protocol::handshake::parse_err(
                    &err,
                )))
            }
            Err(e) => Err(self.drop_conn(pos, e)),
        }
    }

    /// The connection (position) a statement command must use, preparing
    /// the statement there if needed. Returns (position, backend id).
    ///
    /// Primary-bound executions pass the switchover write gate (the ticket
    /// is held until the statement completes) and, when the primary is down
    /// with automatic failover on, wait for the new one — as `run_routed`
    /// does for text queries.
    async fn stmt_conn(
        &mut self,
        id: u32,
        forced: Option<Arc<str>>,
        tried: &mut Vec<usize>,
    ) -> Result<(usize, u32, Option<GateTicket>, usize), ExecError> {
        let (class, forced_route) = self
            .stmts
            .by_id
            .get(&id)
            .map(|s| (s.class, s.forced))
            .ok_or_else(|| unknown_stmt(id))?;
        let class = match forced_route {
            Some(r) => rules::apply_route(class, r, self.view()),
            None => class,
        };
        let mut failover_wait = FailoverWait::default();
        loop {
            let snap = self.shared.topology.load();
            let idx = match forced
                .as_ref()
                .and_then(|name| snap.servers.iter().position(|s| &s.name == name))
            {
                Some(i) => i,
                None => match self.stmt_target(&snap, &class, tried, true).await {
                    Ok(i) => i,
                    Err(router::Unavailable::NoPrimary) if failover_wait.may_wait(self) => {
                        self.wait_for_primary().await;
                        continue;
                    }
                    Err(why) => return Err(ExecError::Refused(super::unavailable(why, &snap))),
                },
            };
            let ticket = if snap.primary == Some(idx) {
                match self.shared.failover.gate.enter(self.in_trans) {
                    Some(t) => Some(t),
                    None => {
                        self.shared.failover.gate.wait_open(self.hold_limit()).await;
                        continue;
                    }
                }
            } else {
                None
            };
            let pos = match self.acquire(&snap, idx).await {
                Ok(p) => p,
                Err(e @ ExecError::Acquire { .. })
                    if ticket.is_some() && e.retryable() && failover_wait.may_wait(self) =>
                {
                    // Primary unreachable, nothing sent: wait for failover.
                    drop(ticket);
                    self.wait_for_new_primary(Some(&snap.servers[idx].name))
                        .await;
                    continue;
                }
                Err(e) if self.may_retry_elsewhere(&e, &snap, idx, &forced, tried) => {
                    warn!(parent: &self.span, server = %snap.servers[idx].name, error = %e, "statement execution could not reach replica; retrying elsewhere");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let bid = match self.ensure_prepared(pos, id).await {
                Ok(bid) => bid,
                Err(e) if self.may_retry_elsewhere(&e, &snap, idx, &forced, tried) => {
                    warn!(parent: &self.span, server = %snap.servers[idx].name, error = %e, "preparing on replica failed; retrying elsewhere");
                    continue;
                }
                Err(e) => return Err(e),
            };
            return Ok((pos, bid, ticket, idx));
        }
    }

    /// Whether a failure on server `idx` may be retried on another server:
    /// a replica chosen freely (no long data or cursor tie), failing before
    /// any byte reached the client. Records `idx` in `tried` if so.
    fn may_retry_elsewhere(
        &self,
        e: &ExecError,
        snap: &Snapshot,
        idx: usize,
        forced: &Option<Arc<str>>,
        tried: &mut Vec<usize>,
    ) -> bool {
        // Not inside a replica's read-only transaction: no other server has it.
        let retry = forced.is_none()
            && self.replica_tx.is_none()
            && snap.primary != Some(idx)
            && !tried.contains(&idx)
            && e.retryable();
        if retry {
            tried.push(idx);
        }
        retry
    }

    pub(super) async fn on_execute(
        &mut self,
        payload: &mut [u8],
        id: u32,
    ) -> Result<(), ExecError> {
        let (forced, params, class) = {
            let stmt = self.stmts.by_id.get(&id).ok_or_else(|| unknown_stmt(id))?;
            (stmt.long_data_on.clone(), stmt.params, stmt.class)
        };
        // A read on a replica that fails before any byte of its answer
        // reached the client is run again elsewhere, as text queries are.
        let mut tried = Vec::new();
        loop {
            let snap = self.shared.topology.load();
            match self
                .execute_once(payload, id, forced.clone(), params, class, &mut tried)
                .await
            {
                Err((Some(idx), e))
                    if self.may_retry_elsewhere(&e, &snap, idx, &forced, &mut tried) =>
                {
                    warn!(parent: &self.span, server = %snap.servers[idx].name, error = %e, "execution failed on replica before any reply; retrying elsewhere");
                }
                Err((_, e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// One attempt of an execution; on failure, also says on which server
    /// (when one was chosen).
    async fn execute_once(
        &mut self,
        payload: &mut [u8],
        id: u32,
        forced: Option<Arc<str>>,
        params: u16,
        class: Classified,
        tried: &mut Vec<usize>,
    ) -> Result<(), (Option<usize>, ExecError)> {
        let (pos, bid, _ticket, idx) = self
            .stmt_conn(id, forced, tried)
            .await
            .map_err(|e| (None, e))?;
        let server = self.conns[pos].server.clone();
        command::set_stmt_id(payload, bid);
        // Parameter types: remember what the client sends, inject them for
        // a connection that has never seen them.
        let layout = command::execute_layout(payload, params);
        let mut rebuilt: Option<Vec<u8>> = None;
        if let (Some(layout), Some(stmt)) = (layout, self.stmts.by_id.get_mut(&id)) {
            if let Some(types) = command::execute_types(payload, layout, params) {
                stmt.types = Some(types.to_vec());
                for (_, _, seen) in stmt.on.iter_mut() {
                    *seen = false;
                }
            } else if let Some(types) = &stmt.types
                && stmt.on.iter().any(|(s, _, seen)| *s == server && !*seen)
            {
                rebuilt = Some(command::execute_with_types(payload, layout, types));
            }
            for (s, _, seen) in stmt.on.iter_mut() {
                if *s == server {
                    *seen = true;
                }
            }
        }
        let opens_cursor = payload.get(5).is_some_and(|f| f & 0x01 != 0);
        let snap = self.shared.topology.load();
        let stats = snap.find(&server).map(|i| snap.servers[i].stats.clone());
        if let Some(st) = &stats {
            st.queries.fetch_add(1, Ordering::Relaxed);
            st.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let started = Instant::now();
        let r = self
            .forward_on(
                pos,
                rebuilt.as_deref().unwrap_or(payload),
                Expect::Execute,
                Some((id, bid)),
            )
            .await;
        if let Some(st) = &stats {
            st.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        let warned = r.as_ref().is_ok_and(|s| s.warnings > 0);
        self.note_effects(&server, &class, warned);
        match r {
            Ok(summary) => {
                let on_primary = snap.primary_view().is_some_and(|p| p.name == server);
                let label = if on_primary {
                    RouteLabel::Primary
                } else {
                    RouteLabel::Replica
                };
                let now = Instant::now();
                self.shared
                    .metrics
                    .statement(label, now.saturating_duration_since(started));
                if summary.error.is_some() {
                    self.shared.metrics.error(MetricError::ServerError);
                }
                if let Some((d, text)) = self.stmts.by_id.get(&id).and_then(|s| s.digest.as_ref()) {
                    self.account_digest(*d, text, (started, now), Some((on_primary, &summary)));
                }
                if !on_primary {
                    self.track_replica_tx(&class, &summary, &server);
                }
                if on_primary {
                    self.track_status(&summary);
                    let snap = self.shared.topology.load();
                    if let Some(idx) = snap.find(&server) {
                        self.track_write(&class, &summary, &snap, idx).await;
                    }
                }
                if class.pins_session {
                    self.pinned = true;
                }
                if let Some(stmt) = self.stmts.by_id.get_mut(&id) {
                    stmt.long_data_on = None;
                    stmt.cursor_on = opens_cursor.then_some(server);
                }
                Ok(())
            }
            Err(e) => Err((Some(idx), e)),
        }
    }

    pub(super) async fn on_long_data(
        &mut self,
        payload: &mut [u8],
        id: u32,
    ) -> Result<(), ExecError> {
        let forced = match self.stmts.by_id.get(&id) {
            Some(s) => s.long_data_on.clone(),
            // No reply is allowed to SEND_LONG_DATA; an unknown id surfaces
            // at the execution, as with a server.
            None => return Ok(()),
        };
        let (pos, bid, _ticket, _) = self.stmt_conn(id, forced, &mut Vec::new()).await?;
        command::set_stmt_id(payload, bid);
        let server = self.conns[pos].server.clone();
        let held = &mut self.conns[pos];
        held.conn.stream.queue_payload(0, payload);
        if let Err(source) = held.conn.stream.flush().await {
            return Err(self.drop_conn(
                pos,
                ForwardError::Backend {
                    source,
                    started: false,
                },
            ));
        }
        if let Some(stmt) = self.stmts.by_id.get_mut(&id) {
            stmt.long_data_on = Some(server);
        }
        Ok(())
    }

    pub(super) async fn on_close(&mut self, id: u32) {
        let Some(stmt) = self.stmts.by_id.remove(&id) else {
            return;
        };
        for (server, bid, _) in stmt.on {
            if let Some(held) = self.conns.iter_mut().find(|h| h.server == server)
                // A statement in the connection's cache outlives the
                // client's handle: later borrowers reuse it.
                && !held.conn.stmt_cache.holds(bid)
            {
                held.conn.close_stmt(bid).await;
            }
        }
    }

    pub(super) async fn on_stmt_reset(
        &mut self,
        payload: &mut [u8],
        id: u32,
    ) -> Result<(), ExecError> {
        let holder = {
            let stmt = self.stmts.by_id.get(&id).ok_or_else(|| unknown_stmt(id))?;
            stmt.long_data_on.clone().or_else(|| stmt.cursor_on.clone())
        };
        let Some(server) = holder else {
            // Nothing is held on any server: a reset has nothing to undo.
            let st = self.status_flags();
            self.client.queue_payload(1, &ok_payload(0, 0, st));
            return self.client.flush().await.map_err(ExecError::Client);
        };
        let (pos, bid, _ticket, _) = self.stmt_conn(id, Some(server), &mut Vec::new()).await?;
        command::set_stmt_id(payload, bid);
        self.forward_on(pos, payload, Expect::Simple, None).await?;
        if let Some(stmt) = self.stmts.by_id.get_mut(&id) {
            stmt.long_data_on = None;
            stmt.cursor_on = None;
        }
        Ok(())
    }

    pub(super) async fn on_fetch(&mut self, payload: &mut [u8], id: u32) -> Result<(), ExecError> {
        let Some(server) = self
            .stmts
            .by_id
            .get(&id)
            .ok_or_else(|| unknown_stmt(id))?
            .cursor_on
            .clone()
        else {
            return Err(ExecError::Refused(ClientError::new(
                1421,
                b"HY000",
                format!("The statement ({id}) has no open cursor"),
            )));
        };
        let (pos, bid, _ticket, _) = self.stmt_conn(id, Some(server), &mut Vec::new()).await?;
        command::set_stmt_id(payload, bid);
        self.forward_on(pos, payload, Expect::Fetch, None)
            .await
            .map(|_| ())
    }
}
