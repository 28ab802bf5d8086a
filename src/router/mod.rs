//! Routing: which server a statement goes to.
//!
//! [`classify`] turns SQL into a [`classify::Classified`]; [`route`] is a
//! pure function of that, the session's state and the topology snapshot.
//!
//! The rules, in order:
//! 1. A `rwproxy:primary` hint, or any statement that is not a plain read,
//!    goes to the primary (writes, DDL, `CALL`, locking reads, transaction
//!    control, `SET`, `USE`, unknown or unparseable SQL).
//! 2. A session inside a transaction (the server's `IN_TRANS` flag or
//!    `autocommit = 0`), or pinned by state that only its primary connection
//!    holds (temporary tables, locks, user variables set by queries, SQL
//!    `PREPARE`), stays on the primary — unless a `rwproxy:replica` hint
//!    explicitly asks otherwise for a read.
//! 3. A plain read goes to the next readable replica, round-robin by
//!    weight; if none qualifies, to the primary or to an error, as the
//!    operator configured (`replica_fallback`).

pub mod classify;
pub mod set;

use crate::config::ReplicaFallback;
use crate::topology::Snapshot;
use classify::{Classified, Hint, StatementKind};

/// Where a statement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The primary (index into the snapshot's servers).
    Primary(usize),
    /// A replica (index into the snapshot's servers).
    Replica(usize),
    /// A read that no replica may serve, sent to the primary by policy.
    Fallback(usize),
    /// No server may run it (no primary known, or fallback = error).
    Unavailable(Unavailable),
}

/// Why no server was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    NoPrimary,
    NoReplica,
}

/// What routing needs to know about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionView {
    /// The server reported `SERVER_STATUS_IN_TRANS`.
    pub in_transaction: bool,
    /// `autocommit` is on.
    pub autocommit: bool,
    /// The session holds state only its primary connection has.
    pub pinned: bool,
}

/// Picks a replica round-robin by weight. `ticket` is a counter the caller
/// increments per read (shared by all sessions, so reads spread evenly).
pub fn pick_replica(snapshot: &Snapshot, ticket: u64) -> Option<usize> {
    let total: u64 = snapshot
        .readable_replicas()
        .map(|i| u64::from(snapshot.servers[i].weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut slot = ticket % total;
    for i in snapshot.readable_replicas() {
        let w = u64::from(snapshot.servers[i].weight);
        if slot < w {
            return Some(i);
        }
        slot -= w;
    }
    None
}

/// The routing decision (pure; see the module doc for the rules).
pub fn route(
    c: &Classified,
    session: SessionView,
    snapshot: &Snapshot,
    fallback: ReplicaFallback,
    ticket: u64,
) -> Route {
    let primary = match snapshot.primary {
        Some(p) if snapshot.servers.get(p).is_some_and(|s| s.up) => Some(p),
        _ => None,
    };
    let to_primary = || match primary {
        Some(p) => Route::Primary(p),
        None => Route::Unavailable(Unavailable::NoPrimary),
    };
    let is_read = matches!(c.kind, StatementKind::Read | StatementKind::ReadPrimary);
    let wants_replica = match c.hint {
        Some(Hint::Primary) => false,
        Some(Hint::Replica) => is_read,
        None => {
            c.kind == StatementKind::Read
                && !session.in_transaction
                && session.autocommit
                && !session.pinned
        }
    };
    if !wants_replica {
        return to_primary();
    }
    match pick_replica(snapshot, ticket) {
        Some(r) => Route::Replica(r),
        None => match (fallback, primary) {
            (ReplicaFallback::Primary, Some(p)) => Route::Fallback(p),
            (ReplicaFallback::Primary, None) => Route::Unavailable(Unavailable::NoPrimary),
            (ReplicaFallback::Error, _) => Route::Unavailable(Unavailable::NoReplica),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn snapshot() -> Snapshot {
        let cfg = Config::parse(
            r#"
[monitor]
user = "m"
[[servers]]
name = "p"
host = "127.0.0.1"
role = "primary"
[[servers]]
name = "r1"
host = "127.0.0.1"
port = 3307
[[servers]]
name = "r2"
host = "127.0.0.1"
port = 3308
"#,
        )
        .expect("config");
        Snapshot::from_config(&cfg)
    }

    const FREE: SessionView = SessionView {
        in_transaction: false,
        autocommit: true,
        pinned: false,
    };

    fn r(sql: &str, s: SessionView, snap: &Snapshot, ticket: u64) -> Route {
        route(
            &classify::classify(sql.as_bytes()),
            s,
            snap,
            ReplicaFallback::Primary,
            ticket,
        )
    }

    #[test]
    fn table_of_routes() {
        let snap = snapshot();
        let in_tx = SessionView {
            in_transaction: true,
            ..FREE
        };
        let no_ac = SessionView {
            autocommit: false,
            ..FREE
        };
        let pinned = SessionView {
            pinned: true,
            ..FREE
        };
        let cases: &[(&str, SessionView, Route)] = &[
            ("SELECT 1", FREE, Route::Replica(1)),
            ("select c from sbtest1 where id=5", FREE, Route::Replica(1)),
            ("INSERT INTO t VALUES (1)", FREE, Route::Primary(0)),
            ("UPDATE t SET a=1", FREE, Route::Primary(0)),
            ("DELETE FROM t", FREE, Route::Primary(0)),
            ("REPLACE INTO t VALUES (1)", FREE, Route::Primary(0)),
            ("CREATE TABLE t (a int)", FREE, Route::Primary(0)),
            ("SELECT * FROM t FOR UPDATE", FREE, Route::Primary(0)),
            ("SELECT * FROM t LOCK IN SHARE MODE", FREE, Route::Primary(0)),
            ("SELECT * FROM t FOR SHARE", FREE, Route::Primary(0)),
            ("SELECT a INTO @x FROM t", FREE, Route::Primary(0)),
            ("CALL p()", FREE, Route::Primary(0)),
            ("BEGIN", FREE, Route::Primary(0)),
            ("SELECT 1", in_tx, Route::Primary(0)),
            ("SELECT 1", no_ac, Route::Primary(0)),
            ("SELECT 1", pinned, Route::Primary(0)),
            ("SELECT LAST_INSERT_ID()", FREE, Route::Primary(0)),
            ("SELEKT garbage", FREE, Route::Primary(0)),
            ("/* rwproxy:primary */ SELECT 1", FREE, Route::Primary(0)),
            ("/* rwproxy:replica */ SELECT 1", in_tx, Route::Replica(1)),
            ("/* rwproxy:replica */ UPDATE t SET a=1", FREE, Route::Primary(0)),
            ("WITH x AS (SELECT 1) SELECT * FROM x", FREE, Route::Replica(1)),
        ];
        for (sql, s, want) in cases {
            assert_eq!(r(sql, *s, &snap, 0), *want, "{sql} with {s:?}");
        }
    }

    #[test]
    fn round_robin_is_even_and_respects_weight_and_health() {
        let mut snap = snapshot();
        let mut counts = [0usize; 3];
        for t in 0..1000 {
            if let Route::Replica(i) = r("SELECT 1", FREE, &snap, t) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts, [0, 500, 500]);
        snap.servers[2].weight = 3;
        let mut counts = [0usize; 3];
        for t in 0..1000 {
            if let Route::Replica(i) = r("SELECT 1", FREE, &snap, t) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts, [0, 250, 750]);
        snap.servers[1].up = false;
        snap.servers[2].up = false;
        assert_eq!(r("SELECT 1", FREE, &snap, 0), Route::Fallback(0));
        let c = classify::classify(b"SELECT 1");
        assert_eq!(
            route(&c, FREE, &snap, ReplicaFallback::Error, 0),
            Route::Unavailable(Unavailable::NoReplica)
        );
        snap.servers[0].up = false;
        assert_eq!(
            r("INSERT INTO t VALUES (1)", FREE, &snap, 0),
            Route::Unavailable(Unavailable::NoPrimary)
        );
    }
}
