//! `consistency = "global"`: a read sees every transaction the primary had
//! committed when the read arrived, whoever wrote it (MaxScale's
//! `causal_reads = global`).
//!
//! For a read that routing sends to a replica (outside transactions, not
//! pinned, not inside a replica's read-only transaction), the target is the
//! primary's executed position read *after* the read arrived
//! ([`crate::primary_pos`], one query shared by the reads that arrive
//! together). Then, in order:
//! 1. a replica the monitor last saw at or past the target serves the read
//!    at once (the monitor's position is older than the target's, so the
//!    replica has it now);
//! 2. else the replica the balancer would pick waits for the target with
//!    the flavor's wait function (`MASTER_GTID_WAIT` /
//!    `WAIT_FOR_EXECUTED_GTID_SET`, bounded by `causal_wait_ms`) and serves
//!    it if it caught up;
//! 3. else the primary does (also when the position could not be read).
//!
//! The session's own writes are older than its next read, so the target
//! covers them: global needs no per-session write tracking. Reads already
//! bound to a server (transactions, pinned sessions, a replica's read-only
//! transaction, cursors) are unchanged. `eventual` and `session` never get
//! here (one comparison in `Session::pick`).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::gtid::GtidPos;
use crate::router::classify::Classified;
use crate::router::{self, ReadNeeds, Route, Unavailable};
use crate::topology::Snapshot;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Turns `route` (decided without a position) into a global read's
    /// route; `exclude` and `ticket` as for [`router::route`].
    pub(super) async fn global_read(
        &mut self,
        route: Route,
        c: &Classified,
        snap: &Snapshot,
        exclude: &[usize],
        ticket: u64,
    ) -> Route {
        if !matches!(route, Route::Replica(_)) || self.replica_tx.is_some() {
            return route;
        }
        let Some(target) = self.shared.primary_pos.fetch().await else {
            // Without the target no replica is known to be fresh enough.
            return match snap.primary.filter(|p| snap.servers[*p].up) {
                Some(p) => Route::Fallback(p),
                None => Route::Unavailable(Unavailable::NoPrimary),
            };
        };
        self.global_route(&target, c, snap, exclude, ticket).await
    }

    async fn global_route(
        &mut self,
        target: &Arc<GtidPos>,
        c: &Classified,
        snap: &Snapshot,
        exclude: &[usize],
        ticket: u64,
    ) -> Route {
        let needs = ReadNeeds {
            max_lag: None,
            min_gtid: Some(target),
            exclude,
        };
        match router::route(c, self.view_in(snap), snap, self.policy(), &needs, ticket) {
            Route::Fallback(p) if self.cfg.causal_wait_ms > 0 && !target.is_unknown() => {
                let gtid = target.to_string();
                match self.causal_replica(&gtid, c, snap, exclude, ticket).await {
                    Some(r) => Route::Replica(r),
                    None => Route::Fallback(p),
                }
            }
            r => r,
        }
    }
}
