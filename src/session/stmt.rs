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

use super::execute::{StmtOp, Work};
use super::{ExecError, Session};
use std::time::Instant;

use crate::config::{PoolMode, RuleRoute};

use crate::protocol::ClientError;
use crate::protocol::command::{self, code};
use crate::protocol::ok_payload;
use crate::protocol::response::{self, ForwardError};
use crate::router::classify::{self, Classified};
use crate::router::rules::{self, Verdict};

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
            self.conns[pos].conn.mark_dirty();
            return;
        }
        let cap = self.cfg.pool_stmt_cache;
        let evicted = self.conns[pos]
            .conn
            .stmt_cache()
            .insert(sql.to_vec(), bid, cap);
        let server = self.conns[pos].server.clone();
        for old in evicted {
            self.stmts.forget_backend_id(&server, old);
            self.conns[pos].conn.close_stmt(old).await;
        }
    }

    pub(super) async fn on_prepare(
        &mut self,
        payload: &[u8],
        sql: Vec<u8>,
    ) -> Result<(), ExecError> {
        let class = self.route_stored_functions(&sql, classify::classify(&sql));
        debug!(parent: &self.span, statement = %crate::router::digest::Redacted(&sql), kind = ?class.kind, "prepare");
        if class.kill {
            // Its `?` would be a thread id of whichever server runs it.
            return Err(ExecError::Refused(ClientError::new(
                1295,
                b"HY000",
                "rwproxy: KILL is not supported in the prepared statement protocol; send it as a query",
            )));
        }
        // `CONNECTION_ID()` is this session's id on every server that runs
        // the statement (see `lex::replace_connection_id`).
        let rewritten = class
            .connection_id
            .then(|| crate::router::lex::replace_connection_id(payload, self.conn_id))
            .flatten();
        let (payload, sql) = match &rewritten {
            Some(p) => (p.as_slice(), p.get(1..).unwrap_or_default().to_vec()),
            None => (payload, sql),
        };
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
        let idx = match self.pick(&routed, None, &snap, &[], false).await {
            Ok((i, _)) => i,
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
        let mut ex = match held.conn.exchange(payload).await {
            Ok(ex) => ex,
            Err(source) => return Err(self.drop_conn(pos, ForwardError::unsent(source))),
        };
        let r = response::forward_prepare(
            ex.stream(),
            Some(&mut self.client),
            caps,
            client_id,
            keep_columns,
        )
        .await;
        let p = match r {
            Ok(Ok(p)) => p,
            Ok(Err(_server_err)) => {
                ex.finish();
                return Ok(());
            }
            Err(e) => {
                return Err(self.drop_conn(pos, e));
            }
        };
        let bid = p.backend_id;
        if let Some(cols) = &p.column_defs {
            ex.remember_columns(bid, cols.clone());
        }
        ex.finish();
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

    /// Makes sure statement `id` is prepared on the connection at `pos`;
    /// returns its backend id there.
    pub(super) async fn ensure_prepared(&mut self, pos: usize, id: u32) -> Result<u32, ExecError> {
        let server = self.conns[pos].server.clone();
        let stmt = self.stmts.by_id.get(&id).ok_or_else(|| unknown_stmt(id))?;
        if let Some((_, bid, _)) = stmt.on.iter().find(|(s, _, _)| *s == server) {
            return Ok(*bid);
        }
        if self.sharing()
            && let Some(bid) = self.conns[pos].conn.stmt_cache().get(&stmt.sql)
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
        let mut ex = match held.conn.exchange(&payload).await {
            Ok(ex) => ex,
            Err(source) => return Err(self.drop_conn(pos, ForwardError::unsent(source))),
        };
        let r = response::forward_prepare::<_, tokio::net::TcpStream>(
            ex.stream(),
            None,
            caps,
            0,
            keep_columns,
        )
        .await;
        let p = match r {
            Ok(Ok(p)) => p,
            Ok(Err(err)) => {
                ex.finish();
                return Err(ExecError::Refused(crate::protocol::handshake::parse_err(
                    &err,
                )));
            }
            Err(e) => {
                return Err(self.drop_conn(pos, e));
            }
        };
        if let Some(cols) = p.column_defs {
            // Shared with the client's copy when they are the same
            // (the usual case: replicas have the same schema).
            let holds = self.stmts.by_id.get(&id).and_then(|s| s.columns.as_ref());
            let cols = match holds {
                Some(h) if h[..] == cols[..] => h.clone(),
                _ => cols,
            };
            ex.remember_columns(p.backend_id, cols);
        }
        ex.finish();
        let sql = self.stmts.by_id.get(&id).map(|s| s.sql.clone());
        if let Some(stmt) = self.stmts.by_id.get_mut(&id) {
            stmt.on.push((server, p.backend_id, false));
        }
        if let Some(sql) = sql {
            self.cache_stmt(pos, &sql, p.backend_id).await;
        }
        Ok(p.backend_id)
    }

    /// The routing class of statement `id`'s commands: its class at
    /// prepare, with the route a query rule forced then applied to the
    /// session state of now.
    fn stmt_class(&self, id: u32) -> Result<Classified, ExecError> {
        let stmt = self.stmts.by_id.get(&id).ok_or_else(|| unknown_stmt(id))?;
        Ok(match stmt.forced {
            Some(r) => rules::apply_route(stmt.class, r, self.view()),
            None => stmt.class,
        })
    }

    pub(super) async fn on_execute(
        &mut self,
        payload: &mut [u8],
        id: u32,
    ) -> Result<(), ExecError> {
        let class = self.stmt_class(id)?;
        let (bound, params) = {
            let stmt = self.stmts.by_id.get(&id).ok_or_else(|| unknown_stmt(id))?;
            (stmt.long_data_on.clone(), stmt.params)
        };
        let opens_cursor = payload.get(5).is_some_and(|f| f & 0x01 != 0);
        let started = Instant::now();
        let work = Work::Stmt {
            id,
            payload,
            op: StmtOp::Execute { params },
        };
        let r = self.execute(&class, bound.as_ref(), work).await;
        if let Some((d, text)) = self.stmts.by_id.get(&id).and_then(|s| s.digest.as_ref()) {
            let outcome = r.as_ref().ok().map(|ran| (ran.on_primary, &ran.summary));
            self.account_digest(*d, text, (started, Instant::now()), outcome);
        }
        let ran = r?;
        if let Some(stmt) = self.stmts.by_id.get_mut(&id) {
            stmt.long_data_on = None;
            stmt.cursor_on = opens_cursor.then_some(ran.server);
        }
        Ok(())
    }

    /// Parameter types: remembers what the client sends with an execution,
    /// and returns the execution rebuilt with the remembered types for a
    /// connection (at `pos`) that has never seen them.
    pub(super) fn with_param_types(
        &mut self,
        pos: usize,
        id: u32,
        payload: &[u8],
        params: u16,
    ) -> Option<Vec<u8>> {
        let server = &self.conns[pos].server;
        let layout = command::execute_layout(payload, params)?;
        let stmt = self.stmts.by_id.get_mut(&id)?;
        let mut rebuilt = None;
        if let Some(types) = command::execute_types(payload, layout, params) {
            stmt.types = Some(types.to_vec());
            for (_, _, seen) in stmt.on.iter_mut() {
                *seen = false;
            }
        } else if let Some(types) = &stmt.types
            && stmt.on.iter().any(|(s, _, seen)| s == server && !*seen)
        {
            rebuilt = Some(command::execute_with_types(payload, layout, types));
        }
        for (s, _, seen) in stmt.on.iter_mut() {
            if s == server {
                *seen = true;
            }
        }
        rebuilt
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
        let class = self.stmt_class(id)?;
        let work = Work::Stmt {
            id,
            payload,
            op: StmtOp::LongData,
        };
        let server = self.execute(&class, forced.as_ref(), work).await?.server;
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
                && !held.conn.caches_stmt(bid)
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
        let class = self.stmt_class(id)?;
        let work = Work::Stmt {
            id,
            payload,
            op: StmtOp::Reset,
        };
        self.execute(&class, Some(&server), work).await?;
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
        let class = self.stmt_class(id)?;
        let work = Work::Stmt {
            id,
            payload,
            op: StmtOp::Fetch,
        };
        self.execute(&class, Some(&server), work).await.map(|_| ())
    }
}
