//! Routing: which server a statement goes to.
//!
//! [`classify`] turns SQL into a [`classify::Classified`]; [`route`] is a
//! pure function of that, the session's state and the topology snapshot.
//! [`lex`] is the one SQL lexer under [`classify`], [`digest`] (statement
//! digests) and [`set`] (`SET` parsing); [`rules`] are the operator's
//! routing rules; [`server_wide`] spots statements whose effect reaches
//! pooled connections (`SET GLOBAL`, account changes); [`kill`] reads
//! `KILL` statements, which the session answers itself.
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
//! 4. A read-only transaction (`START TRANSACTION READ ONLY`, `BEGIN` in a
//!    session whose transactions are read only, `SET TRANSACTION READ
//!    ONLY` for the next one) is opened on a replica chosen like a plain
//!    read, outside a primary transaction, with autocommit on and no pinned
//!    state; every statement up to its end then goes to that replica
//!    (`SessionView::replica_tx`), except those hinted `rwproxy:primary`.

pub mod classify;
pub mod digest;
pub mod functions;
pub mod kill;
pub mod lex;
pub mod rules;
pub mod server_wide;
pub mod set;

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::{Balance, ReplicaFallback};
use crate::gtid::GtidPos;
use crate::topology::Snapshot;
use classify::{Classified, Hint, StatementKind, TxOpen};

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
    /// The session's transactions are read only by default.
    pub read_only: bool,
    /// A read-only transaction is open (or about to open) on this replica
    /// (index into the snapshot's servers): statements go there until it ends.
    pub replica_tx: Option<usize>,
}

/// The operator's routing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub fallback: ReplicaFallback,
    pub balance: Balance,
}

/// What a read requires of a replica.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadNeeds<'a> {
    /// Statement-level lag bound (`rwproxy:max_lag`); else each server's own.
    pub max_lag: Option<Duration>,
    /// The session's last write: a replica must have applied it
    /// (`consistency = "session"`).
    pub min_gtid: Option<&'a GtidPos>,
    /// Servers already tried for this statement.
    pub exclude: &'a [usize],
}

/// Picks a replica by the balancing policy among those that are readable
/// within the lag bound, not excluded, and (if required) have applied the
/// session's last write. `ticket` is a counter the caller increments per
/// read (shared by all sessions, so round-robin spreads evenly), or with
/// [`Balance::Session`] the session's own ticket, drawn once from that
/// counter when it started.
pub fn pick_replica(
    snapshot: &Snapshot,
    ticket: u64,
    needs: &ReadNeeds<'_>,
    balance: Balance,
) -> Option<usize> {
    let eligible = || {
        snapshot.readable_replicas(needs.max_lag).filter(|i| {
            !needs.exclude.contains(i)
                && needs
                    .min_gtid
                    .is_none_or(|g| snapshot.servers[*i].gtid_slave.covers(g))
        })
    };
    match balance {
        // The caller passes a per-session ticket for `Session`.
        Balance::RoundRobin | Balance::Session => {
            let total: u64 = eligible()
                .map(|i| u64::from(snapshot.servers[i].weight))
                .sum();
            if total == 0 {
                return None;
            }
            let mut slot = ticket % total;
            for i in eligible() {
                let w = u64::from(snapshot.servers[i].weight);
                if slot < w {
                    return Some(i);
                }
                slot -= w;
            }
            None
        }
        Balance::LeastConnections => eligible().min_by_key(|i| {
            let s = &snapshot.servers[*i];
            // in_flight / weight, compared without division.
            let load = s.stats.in_flight.load(Ordering::Relaxed) + 1;
            (load * 1_000_000) / u64::from(s.weight.max(1))
        }),
    }
}

/// The replica a read would get if the session's last write did not
/// matter: the one a causal read asks to wait for that write (see
/// `Session::causal_replica`). Only meaningful for a statement that
/// [`route`] sent to the primary as [`Route::Fallback`].
pub fn causal_candidate(
    c: &Classified,
    snapshot: &Snapshot,
    policy: Policy,
    needs: &ReadNeeds<'_>,
    ticket: u64,
) -> Option<usize> {
    let needs = ReadNeeds {
        max_lag: c.max_lag.or(needs.max_lag),
        min_gtid: None,
        exclude: needs.exclude,
    };
    pick_replica(snapshot, ticket, &needs, policy.balance)
}

/// The routing decision (pure; see the module doc for the rules).
pub fn route(
    c: &Classified,
    session: SessionView,
    snapshot: &Snapshot,
    policy: Policy,
    needs: &ReadNeeds<'_>,
    ticket: u64,
) -> Route {
    let fallback = policy.fallback;
    let primary = match snapshot.primary {
        Some(p) if snapshot.servers.get(p).is_some_and(|s| s.up) => Some(p),
        _ => None,
    };
    let to_primary = || match primary {
        Some(p) => Route::Primary(p),
        None => Route::Unavailable(Unavailable::NoPrimary),
    };
    if let Some(r) = session.replica_tx {
        return match c.hint {
            Some(Hint::Primary) => to_primary(),
            _ => Route::Replica(r),
        };
    }
    let is_read = matches!(c.kind, StatementKind::Read | StatementKind::ReadPrimary);
    let free = !session.in_transaction && session.autocommit && !session.pinned;
    let opens_read_only = free
        && match c.tx {
            TxOpen::ReadOnly | TxOpen::NextReadOnly => true,
            TxOpen::Default => session.read_only,
            TxOpen::None | TxOpen::ReadWrite => false,
        };
    let wants_replica = match c.hint {
        Some(Hint::Primary) => false,
        Some(Hint::Replica) => is_read || opens_read_only,
        None => (c.kind == StatementKind::Read && free) || opens_read_only,
    };
    if !wants_replica {
        return to_primary();
    }
    let needs = ReadNeeds {
        max_lag: c.max_lag.or(needs.max_lag),
        ..*needs
    };
    if let Some(r) = pick_replica(snapshot, ticket, &needs, policy.balance) {
        return Route::Replica(r);
    }
    // Replicas are usable but none has the session's last write yet: the
    // primary answers (read-your-writes beats load spreading).
    if needs.min_gtid.is_some()
        && pick_replica(
            snapshot,
            ticket,
            &ReadNeeds {
                min_gtid: None,
                ..needs
            },
            policy.balance,
        )
        .is_some()
        && let Some(p) = primary
    {
        return Route::Fallback(p);
    }
    {
        match (fallback, primary) {
            (ReplicaFallback::Primary, Some(p)) => Route::Fallback(p),
            (ReplicaFallback::Primary, None) => Route::Unavailable(Unavailable::NoPrimary),
            (ReplicaFallback::Error, _) => Route::Unavailable(Unavailable::NoReplica),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Replica 1 before the write `0-1-11` (returned), replica 2 after it.
    fn around_write(snap: &mut Snapshot) -> GtidPos {
        snap.servers[1].gtid_slave = GtidPos::parse("0-1-10");
        snap.servers[2].gtid_slave = GtidPos::parse("0-1-12");
        GtidPos::parse("0-1-11")
    }

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
        read_only: false,
        replica_tx: None,
    };
    /// [`FREE`] with one field changed.
    macro_rules! view {
        ($field:ident: $value:expr) => {
            SessionView {
                $field: $value,
                ..FREE
            }
        };
    }
    const RO: SessionView = view!(read_only: true);
    const IN_TX: SessionView = view!(in_transaction: true);
    const NO_AC: SessionView = view!(autocommit: false);
    const PINNED: SessionView = view!(pinned: true);

    const P0: Route = Route::Primary(0);
    const R1: Route = Route::Replica(1);

    const RR: Policy = Policy {
        fallback: ReplicaFallback::Primary,
        balance: Balance::RoundRobin,
    };

    fn r(sql: &str, s: SessionView, snap: &Snapshot, ticket: u64) -> Route {
        route(
            &classify::classify(sql.as_bytes()),
            s,
            snap,
            RR,
            &ReadNeeds::default(),
            ticket,
        )
    }

    #[test]
    fn table_of_routes() {
        let snap = snapshot();
        let cases: &[(&str, SessionView, Route)] = &[
            ("SELECT 1", FREE, R1),
            ("select c from sbtest1 where id=5", FREE, R1),
            ("INSERT INTO t VALUES (1)", FREE, P0),
            ("UPDATE t SET a=1", FREE, P0),
            ("DELETE FROM t", FREE, P0),
            ("REPLACE INTO t VALUES (1)", FREE, P0),
            ("CREATE TABLE t (a int)", FREE, P0),
            ("SELECT * FROM t FOR UPDATE", FREE, P0),
            ("SELECT * FROM t LOCK IN SHARE MODE", FREE, P0),
            ("SELECT * FROM t FOR SHARE", FREE, P0),
            ("SELECT a INTO @x FROM t", FREE, P0),
            ("CALL p()", FREE, P0),
            ("BEGIN", FREE, P0),
            ("SELECT 1", IN_TX, P0),
            ("SELECT 1", NO_AC, P0),
            ("SELECT 1", PINNED, P0),
            ("SELECT LAST_INSERT_ID()", FREE, P0),
            ("SELEKT garbage", FREE, P0),
            ("/* rwproxy:primary */ SELECT 1", FREE, P0),
            ("/* rwproxy:replica */ SELECT 1", IN_TX, R1),
            ("/* rwproxy:replica */ UPDATE t SET a=1", FREE, P0),
            ("WITH x AS (SELECT 1) SELECT * FROM x", FREE, R1),
        ];
        for (sql, s, want) in cases {
            assert_eq!(r(sql, *s, &snap, 0), *want, "{sql} with {s:?}");
        }
    }

    #[test]
    fn read_only_transactions_open_on_a_replica_and_stay_there() {
        let snap = snapshot();
        let on_r2 = view!(replica_tx: Some(2));
        let c = |sql: &str| classify::classify(sql.as_bytes());
        let (p0, r1, r2) = (Route::Primary(0), Route::Replica(1), Route::Replica(2));
        let next_ro = |sql: &str| Classified {
            tx: TxOpen::NextReadOnly,
            ..c(sql)
        };
        let long = [
            "start transaction with consistent snapshot, read only",
            "START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT",
            "/* rwproxy:primary */ START TRANSACTION READ ONLY",
        ];
        let cases: &[(Classified, SessionView, Route)] = &[
            (c("START TRANSACTION READ ONLY"), FREE, r1),
            (c(long[0]), FREE, r1),
            (c(long[1]), FREE, r1),
            (c(long[2]), FREE, p0),
            (c("BEGIN"), RO, r1),
            (c("BEGIN WORK"), RO, r1),
            (c("START TRANSACTION"), RO, r1),
            (c("BEGIN"), FREE, p0),
            (c("START TRANSACTION READ WRITE"), RO, p0),
            (c("START TRANSACTION READ ONLY, READ WRITE"), FREE, p0),
            (c("START TRANSACTION READ ONLY"), IN_TX, p0),
            (c("START TRANSACTION READ ONLY"), NO_AC, p0),
            (c("START TRANSACTION READ ONLY"), PINNED, p0),
            (c("START TRANSACTION READ ONLY; SELECT 1"), FREE, p0),
            (c("XA START 'x'"), RO, p0),
            (next_ro("SET TRANSACTION READ ONLY"), FREE, r1),
            (next_ro("SET TRANSACTION READ ONLY"), IN_TX, p0),
            (c("SET TRANSACTION READ ONLY"), FREE, p0),
            // Inside: everything on that replica, writes too (the server refuses them).
            (c("SELECT 1"), on_r2, r2),
            (c("SELECT 1 FOR UPDATE"), on_r2, r2),
            (c("INSERT INTO t VALUES (1)"), on_r2, r2),
            (c("SAVEPOINT a"), on_r2, r2),
            (c("COMMIT"), on_r2, r2),
            (c("/* rwproxy:primary */ SELECT 1"), on_r2, p0),
        ];
        for (c, s, want) in cases {
            assert_eq!(
                route(c, *s, &snap, RR, &ReadNeeds::default(), 0),
                *want,
                "{c:?} with {s:?}"
            );
        }
        // Read-your-writes and lag: the same replica choice as a read.
        let mut snap = snapshot();
        let w = around_write(&mut snap);
        let needs = ReadNeeds {
            min_gtid: Some(&w),
            ..ReadNeeds::default()
        };
        let c = c("START TRANSACTION READ ONLY");
        for t in 0..4 {
            assert_eq!(route(&c, FREE, &snap, RR, &needs, t), r2);
        }
        snap.servers[2].replication = crate::topology::Replication::Stopped {
            io: true,
            sql: false,
        };
        assert_eq!(route(&c, FREE, &snap, RR, &needs, 0), Route::Fallback(0));
        let err = Policy {
            fallback: ReplicaFallback::Error,
            ..RR
        };
        snap.servers[1].up = false;
        assert_eq!(
            route(&c, FREE, &snap, err, &ReadNeeds::default(), 0),
            Route::Unavailable(Unavailable::NoReplica)
        );
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
        let err = Policy {
            fallback: ReplicaFallback::Error,
            ..RR
        };
        assert_eq!(
            route(&c, FREE, &snap, err, &ReadNeeds::default(), 0),
            Route::Unavailable(Unavailable::NoReplica)
        );
        snap.servers[0].up = false;
        assert_eq!(
            r("INSERT INTO t VALUES (1)", FREE, &snap, 0),
            Route::Unavailable(Unavailable::NoPrimary)
        );
    }

    #[test]
    fn lag_bounds_and_read_your_writes() {
        let mut snap = snapshot();
        snap.servers[1].lag = Some(Duration::from_secs(5));
        snap.servers[2].lag = Some(Duration::from_millis(100));
        snap.servers[1].max_lag = Duration::from_secs(10);
        snap.servers[2].max_lag = Duration::from_secs(10);
        // Both within their limit.
        assert_eq!(r("SELECT 1", FREE, &snap, 0), Route::Replica(1));
        // A statement bound of 2 s excludes the 5 s replica.
        for t in 0..4 {
            assert_eq!(
                r("/* rwproxy:max_lag=2s */ SELECT 1", FREE, &snap, t),
                Route::Replica(2)
            );
        }
        // Stopped replication makes a replica unusable whatever its lag says.
        snap.servers[2].replication = crate::topology::Replication::Stopped {
            io: true,
            sql: false,
        };
        for t in 0..4 {
            assert_eq!(r("SELECT 1", FREE, &snap, t), Route::Replica(1));
        }
        // Read-your-writes: only a replica that applied the write qualifies.
        snap.servers[2].replication = crate::topology::Replication::Running;
        let w = around_write(&mut snap);
        let needs = ReadNeeds {
            min_gtid: Some(&w),
            ..ReadNeeds::default()
        };
        let c = classify::classify(b"SELECT 1");
        for t in 0..4 {
            assert_eq!(route(&c, FREE, &snap, RR, &needs, t), Route::Replica(2));
        }
        let w = GtidPos::parse("0-1-13");
        let needs = ReadNeeds {
            min_gtid: Some(&w),
            ..ReadNeeds::default()
        };
        assert_eq!(route(&c, FREE, &snap, RR, &needs, 0), Route::Fallback(0));
        // A causal read waits on the replica the balancer would pick anyway,
        // within the statement's lag bound.
        for t in 0..4 {
            assert_eq!(
                causal_candidate(&c, &snap, RR, &needs, t),
                Some(1 + (t as usize % 2))
            );
        }
        // replica1 is 5 s behind.
        let bounded = classify::classify(b"/* rwproxy:max_lag=2s */ SELECT 1");
        for t in 0..4 {
            assert_eq!(causal_candidate(&bounded, &snap, RR, &needs, t), Some(2));
        }
    }
}
