//! The one statement pipeline: every command that runs on a server — text
//! queries, `COM_INIT_DB`/`COM_SET_OPTION`/`COM_FIELD_LIST`/
//! `COM_STATISTICS`, and each command on a prepared statement — goes
//! through [`Session::execute`]:
//!
//! route → write gate → acquire → (prepare on this connection) → forward →
//! account → retry.
//!
//! So each rule is written once: the switchover gate for primary-bound
//! work, the wait for an automatic failover, the retry on another replica
//! before any byte of the answer reached the client, read-your-writes
//! tracking, and the metrics' route labels (`primary`, `replica`,
//! `fallback`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::{ExecError, FailoverWait, Session, unavailable};
use crate::config::Consistency;
use crate::metrics::{ErrorKind, RouteLabel};
use crate::protocol::command;
use crate::protocol::response::{Expect, ForwardError, Summary};
use crate::router::classify::Classified;
use crate::router::{self, ReadNeeds, Route, Unavailable};
use crate::topology::Snapshot;

/// What the pipeline runs on the server it picks.
pub(super) enum Work<'a> {
    /// A command sent as the client sent it.
    Command { payload: &'a [u8], expect: Expect },
    /// A command on the client's prepared statement `id`: the statement is
    /// prepared on the chosen connection first (if it is not yet), and the
    /// payload's statement id becomes that connection's.
    Stmt {
        id: u32,
        payload: &'a mut [u8],
        op: StmtOp,
    },
}

/// The commands on a prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StmtOp {
    /// `COM_STMT_EXECUTE` of a statement with `params` parameters.
    Execute { params: u16 },
    /// `COM_STMT_SEND_LONG_DATA`: no answer.
    LongData,
    /// `COM_STMT_RESET`.
    Reset,
    /// `COM_STMT_FETCH` from an open cursor.
    Fetch,
}

impl Work<'_> {
    /// A statement in its own right (counted, accounted, tracked), rather
    /// than a step of an earlier one (long data, cursor fetch, reset).
    fn is_statement(&self) -> bool {
        matches!(
            self,
            Work::Command { .. }
                | Work::Stmt {
                    op: StmtOp::Execute { .. },
                    ..
                }
        )
    }
}

/// Where a piece of work ran and what came back.
pub(super) struct Ran {
    pub(super) server: Arc<str>,
    pub(super) on_primary: bool,
    pub(super) summary: Summary,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Runs `work` for a statement of class `c`: on server `bound` when it
    /// is given and still configured (long data, an open cursor), else
    /// where routing sends `c`.
    ///
    /// Retries: a read on a replica chosen freely that fails before any
    /// byte of its answer reached the client runs again on another server
    /// (not inside a replica's read-only transaction: no other server has
    /// it). Primary-bound work that could not even get a connection waits,
    /// with automatic failover on, for the new primary and runs there;
    /// nothing was sent, so nothing can run twice.
    pub(super) async fn execute(
        &mut self,
        c: &Classified,
        bound: Option<&Arc<str>>,
        mut work: Work<'_>,
    ) -> Result<Ran, ExecError> {
        let retry_ok = bound.is_none() && self.replica_tx.is_none();
        let mut tried: Vec<usize> = Vec::new();
        let mut last_err: Option<ExecError> = None;
        let mut failover_wait = FailoverWait::default();
        let mut held_by_switchover = false;
        if bound.is_none() {
            self.resolve_pending_gtid().await;
        }
        loop {
            let snap = self.shared.topology.load();
            let (idx, label) = match self.pick(c, bound, &snap, &tried, true).await {
                Ok(p) => p,
                // A switchover is under way (the write gate is closed):
                // the monitor may already see the old primary fenced while
                // the new one is not published yet. Hold the statement as
                // the gate would (once), then route again.
                Err(Unavailable::NoPrimary)
                    if !held_by_switchover
                        && !self.in_trans
                        && self.shared.failover.gate.is_closed() =>
                {
                    held_by_switchover = true;
                    self.shared.failover.gate.wait_open(self.hold_limit()).await;
                    continue;
                }
                Err(Unavailable::NoPrimary) if failover_wait.may_wait(self) => {
                    // The primary is down and automatic failover is on:
                    // hold the statement until a new primary is published.
                    self.wait_for_primary().await;
                    continue;
                }
                Err(why) => {
                    return Err(
                        last_err.unwrap_or_else(|| ExecError::Refused(unavailable(why, &snap)))
                    );
                }
            };
            let on_primary = snap.primary == Some(idx);
            // A switchover holds primary-bound work at the statement
            // boundary (outside transactions): wait, then route again on
            // the new topology.
            let ticket = if on_primary {
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
            if on_primary && tried.contains(&idx) {
                return Err(last_err.unwrap_or_else(|| {
                    ExecError::Refused(unavailable(Unavailable::NoPrimary, &snap))
                }));
            }
            let statement = work.is_statement();
            let stats = snap.servers[idx].stats.clone();
            if statement {
                stats.queries.fetch_add(1, Ordering::Relaxed);
            }
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let r = self.attempt(&snap, idx, &mut work).await;
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            let server = snap.servers[idx].name.clone();
            if statement {
                let warned = r.as_ref().is_ok_and(|s| s.warnings > 0);
                self.note_effects(&server, c, warned);
            }
            match r {
                Ok(summary) => {
                    if statement {
                        self.ran_on(&server, c, &summary);
                        self.shared.metrics.statement(label, started.elapsed());
                        if summary.error.is_some() {
                            self.shared.metrics.error(ErrorKind::ServerError);
                        }
                        if on_primary {
                            self.track_status(&summary);
                            self.track_write(c, &summary, &snap, idx).await;
                        } else {
                            self.track_replica_tx(c, &summary, &server);
                        }
                        if c.pins_session {
                            self.pinned = true;
                        }
                    }
                    return Ok(Ran {
                        server,
                        on_primary,
                        summary,
                    });
                }
                Err(e) if !on_primary && retry_ok && e.retryable() && !tried.contains(&idx) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(parent: &self.span, server = %server, error = %e, "failed on replica before any reply; retrying elsewhere");
                    tried.push(idx);
                    last_err = Some(e);
                }
                Err(e @ ExecError::Acquire { .. })
                    if on_primary && e.retryable() && failover_wait.may_wait(self) =>
                {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(parent: &self.span, server = %server, error = %e, "primary unreachable; waiting for failover");
                    drop(ticket);
                    self.wait_for_new_primary(Some(&server)).await;
                    last_err = Some(e);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    /// The server for this attempt and its metrics label. `causal` lets a
    /// read after a write wait on a replica (`causal_wait_ms`; a prepare
    /// writes nothing and does not wait).
    pub(super) async fn pick(
        &mut self,
        c: &Classified,
        bound: Option<&Arc<str>>,
        snap: &Snapshot,
        tried: &[usize],
        causal: bool,
    ) -> Result<(usize, RouteLabel), Unavailable> {
        if let Some(i) = bound.and_then(|name| snap.find(name)) {
            let label = if snap.primary == Some(i) {
                RouteLabel::Primary
            } else {
                RouteLabel::Replica
            };
            return Ok((i, label));
        }
        let ticket = self.read_ticket();
        let needs = ReadNeeds {
            max_lag: None,
            min_gtid: self.last_write.as_ref(),
            exclude: tried,
        };
        let mut route = router::route(c, self.view_in(snap), snap, self.policy(), &needs, ticket);
        if causal {
            route = if self.cfg.consistency == Consistency::Global {
                self.global_read(route, c, snap, tried, ticket).await
            } else {
                self.causal(route, c, snap, tried, ticket).await
            };
        }
        match route {
            Route::Primary(i) => Ok((i, RouteLabel::Primary)),
            Route::Fallback(i) => Ok((i, RouteLabel::Fallback)),
            Route::Replica(i) => Ok((i, RouteLabel::Replica)),
            Route::Unavailable(why) => Err(why),
        }
    }

    /// One attempt on server `idx`: a connection, the statement prepared
    /// there if needed, the command forwarded and its answer relayed.
    async fn attempt(
        &mut self,
        snap: &Snapshot,
        idx: usize,
        work: &mut Work<'_>,
    ) -> Result<Summary, ExecError> {
        let pos = self.acquire(snap, idx).await?;
        let (id, payload, op) = match work {
            Work::Command { payload, expect } => {
                return self.forward_on(pos, payload, *expect, None).await;
            }
            Work::Stmt { id, payload, op } => (*id, &mut **payload, *op),
        };
        let bid = self.ensure_prepared(pos, id).await?;
        command::set_stmt_id(payload, bid);
        match op {
            StmtOp::Execute { params } => {
                let rebuilt = self.with_param_types(pos, id, payload, params);
                let payload = rebuilt.as_deref().unwrap_or(payload);
                self.forward_on(pos, payload, Expect::Execute, Some((id, bid)))
                    .await
            }
            StmtOp::LongData => match self.conns[pos].conn.send(payload).await {
                Ok(()) => Ok(Summary::default()),
                Err(source) => Err(self.drop_conn(pos, ForwardError::unsent(source))),
            },
            StmtOp::Reset => self.forward_on(pos, payload, Expect::Simple, None).await,
            StmtOp::Fetch => self.forward_on(pos, payload, Expect::Fetch, None).await,
        }
    }
}
