//! The current view of every server, published as an immutable snapshot.
//!
//! The data path loads the snapshot with one atomic read (`ArcSwap`), never
//! a lock; whoever learns something new (the monitor, an admin command)
//! builds a new snapshot and swaps it in. Sessions that hold an old
//! snapshot finish their statement on it.
//!
//! Configured facts (address, weight, lag limit) and observed facts (role,
//! health, lag, GTID) sit side by side here but come from different
//! owners: the config only seeds a snapshot; the monitor only overwrites
//! the observed fields.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{Config, Role};
use crate::gtid::GtidPos;

/// Operator-set state of a server (config `offline`, admin `SET SERVER …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Online,
    /// Gets no new work; existing sessions finish what they have.
    Offline,
    /// Gets no new sessions; sessions already using it continue.
    Draining,
}

/// Replication as observed on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// Not observed yet.
    Unknown,
    /// No replication configured (a primary, or a fenced server).
    None,
    /// IO and SQL threads both running.
    Running,
    /// Configured but at least one thread is stopped.
    Stopped { io: bool, sql: bool },
}

/// What a replica's IO thread receives from its source, as the monitor
/// last saw it: the evidence, shared by every rwproxy instance because it
/// lives on the servers, that a primary rwproxy cannot reach is still
/// alive (MaxScale's `verify_master_failure`, Orchestrator's
/// "UnreachableMaster is not DeadMaster").
///
/// A replica *receives* from its source when its IO thread is connected
/// and its heartbeat count or received GTID position moved within
/// `primary_failure_timeout` (see [`Snapshot::primary_evidence`]). The
/// counters themselves come from the dialect (MariaDB: `SHOW SLAVE STATUS`
/// `Slave_received_heartbeats` / `Gtid_IO_Pos`; MySQL would use
/// `performance_schema.replication_connection_status`
/// `LAST_HEARTBEAT_TIMESTAMP` / `LAST_QUEUED_TRANSACTION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// `@@server_id` of the source (`Master_Server_Id`), when connected.
    pub source_id: Option<u32>,
    /// The IO thread is connected to its source (`Slave_IO_Running = Yes`).
    pub connected: bool,
    /// Replication heartbeats received so far.
    pub heartbeats: u64,
    /// Last received (not necessarily applied) GTID position.
    pub io_pos: String,
    /// When the monitor last saw `heartbeats` or `io_pos` move (or first
    /// saw the IO thread connected: unknown evidence counts as alive, the
    /// safe side for a failover decision).
    pub advanced_at: Option<Instant>,
    /// Since when the IO thread has been connected without interruption.
    pub connected_since: Option<SystemTime>,
}

impl Feed {
    /// Received something from its source within `within`.
    pub fn receiving(&self, within: Duration) -> bool {
        self.connected && self.advanced_at.is_some_and(|t| t.elapsed() <= within)
    }
}

/// What the replicas say about a primary rwproxy may or may not reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryEvidence {
    /// Replicas that received from it within `primary_failure_timeout`.
    pub receiving: usize,
    /// Since when the longest-connected of them has been connected.
    pub since: Option<SystemTime>,
}

/// Counters shared by every snapshot's copy of a server (they are not
/// topology, just accounting, so they live behind an `Arc`).
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Statements currently running there (least-connections balancing).
    pub in_flight: AtomicU64,
    /// Statements sent there.
    pub queries: AtomicU64,
    /// Backend connections currently borrowed by sessions.
    pub in_use: AtomicU64,
    /// Backend connections opened.
    pub connections: AtomicU64,
    /// Failures seen by sessions (connect or mid-statement).
    pub errors: AtomicU64,
}

/// One server as currently seen.
#[derive(Debug, Clone)]
pub struct ServerView {
    /// Configured name (stable identity across snapshots).
    pub name: Arc<str>,
    /// `host:port`.
    pub addr: String,
    /// Role as observed (initially as configured).
    pub role: Role,
    /// Whether the server answers the monitor.
    pub up: bool,
    /// `@@read_only`, once observed.
    pub read_only: Option<bool>,
    pub replication: Replication,
    /// Replication delay, if known (replicas only).
    pub lag: Option<Duration>,
    /// Reads may go here only while `lag <= max_lag`.
    pub max_lag: Duration,
    /// `@@gtid_binlog_pos` (what this server has written to its binlog).
    pub gtid_binlog: GtidPos,
    /// `@@gtid_slave_pos` (what this server has applied as a replica).
    pub gtid_slave: GtidPos,
    /// Share of reads among replicas.
    pub weight: u32,
    pub admin: AdminState,
    /// Last monitor error, for operators.
    pub last_error: Option<String>,
    /// When `up` last changed.
    pub since: SystemTime,
    /// Consecutive failed monitor checks.
    pub failures: u32,
    /// Set when rwproxy keeps this server out (e.g. an old primary whose
    /// GTID history diverged): why.
    pub fenced: Option<String>,
    /// `@@server_id`, once observed (matches replicas' `Master_Server_Id`).
    pub server_id: Option<u32>,
    /// A replica's IO-thread evidence about its source (None: no
    /// replication configured or not observed yet).
    pub feed: Option<Feed>,
    /// This instance demoted it (failover): it is never taken as primary
    /// again until the monitor has seen it fenced (`read_only` or
    /// replicating); until then it is a stray to fence, not a candidate.
    pub demoted: bool,
    pub stats: Arc<ServerStats>,
}

impl ServerView {
    /// Takes over what the monitor observed of `old` (the same server
    /// before a RELOAD), keeping this view's configured facts: the one
    /// place that knows which fields are observations.
    pub fn keep_observed(&mut self, old: &ServerView) {
        self.role = old.role;
        self.up = old.up;
        self.read_only = old.read_only;
        self.replication = old.replication;
        self.lag = old.lag;
        self.gtid_binlog = old.gtid_binlog.clone();
        self.gtid_slave = old.gtid_slave.clone();
        self.last_error = old.last_error.clone();
        self.since = old.since;
        self.failures = old.failures;
        self.fenced = old.fenced.clone();
        self.stats = old.stats.clone();
    }

    /// May serve plain reads now, given a lag bound (the server's own when
    /// `None`).
    pub fn readable(&self, max_lag: Option<Duration>) -> bool {
        self.role == Role::Replica
            && self.up
            && self.admin == AdminState::Online
            && self.weight > 0
            && self.fenced.is_none()
            && self.replication == Replication::Running
            && self
                .lag
                .is_some_and(|l| l <= max_lag.unwrap_or(self.max_lag))
    }

    /// Everything this server has applied or written.
    pub fn applied(&self) -> &GtidPos {
        if self.role == Role::Primary {
            &self.gtid_binlog
        } else {
            &self.gtid_slave
        }
    }
}

/// An immutable picture of the topology.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub servers: Vec<ServerView>,
    /// Index of the current primary in `servers`, if any is known and up.
    pub primary: Option<usize>,
    /// Increases with every published change.
    pub generation: u64,
    /// Up servers that are all writable and not replicating (split brain):
    /// while there are two or more, `primary` is `None` and writes are
    /// refused until the servers agree again.
    pub conflict: Vec<usize>,
    /// `primary_failure_timeout` of the configuration that seeded it: how
    /// recent replicas' evidence must be (see [`Snapshot::primary_evidence`]).
    pub failure_timeout: Duration,
}

impl Snapshot {
    /// The starting view: as configured, every server assumed up and
    /// replicas current, until the monitor's first round says otherwise.
    pub fn from_config(config: &Config) -> Snapshot {
        let servers: Vec<ServerView> = config
            .servers
            .iter()
            .map(|s| ServerView {
                name: Arc::from(s.name.as_str()),
                addr: s.address(),
                role: s.role,
                up: true,
                read_only: None,
                replication: if s.role == Role::Replica {
                    Replication::Running
                } else {
                    Replication::None
                },
                lag: Some(Duration::ZERO),
                max_lag: Duration::from_millis(
                    s.max_replica_lag_ms.unwrap_or(config.max_replica_lag_ms),
                ),
                gtid_binlog: GtidPos::default(),
                gtid_slave: GtidPos::default(),
                weight: s.weight,
                admin: if s.offline {
                    AdminState::Offline
                } else {
                    AdminState::Online
                },
                last_error: None,
                since: SystemTime::now(),
                failures: 0,
                fenced: None,
                server_id: None,
                feed: None,
                demoted: false,
                stats: Arc::new(ServerStats::default()),
            })
            .collect();
        let primary = servers.iter().position(|s| s.role == Role::Primary);
        Snapshot {
            servers,
            primary,
            generation: 1,
            conflict: Vec::new(),
            failure_timeout: config.primary_failure_timeout(),
        }
    }

    /// Indexes of replicas that may serve plain reads within `max_lag`.
    pub fn readable_replicas(&self, max_lag: Option<Duration>) -> impl Iterator<Item = usize> + '_ {
        self.servers
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.readable(max_lag))
            .map(|(i, _)| i)
    }

    /// The server with this name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| &*s.name == name)
    }

    /// The primary rwproxy lost: a server that was primary and that the
    /// monitor now fails to reach (none while a primary is published).
    pub fn lost_primary(&self) -> Option<usize> {
        if self.primary.is_some() {
            return None;
        }
        self.servers
            .iter()
            .position(|s| s.role == Role::Primary && !s.up && !s.demoted && s.fenced.is_none())
    }

    /// How many up replicas still receive from server `idx` (by its
    /// `@@server_id`; any source when that was never observed) within
    /// `within`. The rule of failure detection: `idx` is dead only when
    /// rwproxy cannot reach it *and* this is 0.
    pub fn primary_evidence(&self, idx: usize, within: Duration) -> PrimaryEvidence {
        let id = self.servers.get(idx).and_then(|s| s.server_id);
        let mut out = PrimaryEvidence {
            receiving: 0,
            since: None,
        };
        for (i, s) in self.servers.iter().enumerate() {
            let Some(f) = s.feed.as_ref() else { continue };
            if i == idx || !s.up || !f.receiving(within) {
                continue;
            }
            if id.is_some() && f.source_id.is_some() && f.source_id != id {
                continue;
            }
            out.receiving += 1;
            out.since = match (out.since, f.connected_since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        out
    }

    /// The primary (published, or lost by rwproxy) with what its replicas
    /// say about it, for operators.
    pub fn primary_report(&self) -> Option<(usize, PrimaryEvidence)> {
        let idx = self.primary.or_else(|| self.lost_primary())?;
        Some((idx, self.primary_evidence(idx, self.failure_timeout)))
    }

    /// Why no primary is published, in words for a client's ERR, the logs
    /// and `/health`; None when one is, or when the plain "down" applies.
    pub fn no_primary_reason(&self) -> Option<String> {
        if self.primary.is_some() {
            return None;
        }
        if self.conflict.len() >= 2 {
            let names: Vec<String> = self
                .conflict
                .iter()
                .map(|&i| format!("'{}'", self.servers[i].name))
                .collect();
            return Some(format!(
                "servers {} are all writable and not replicating (two primaries); writes are refused until they agree",
                names.join(" and ")
            ));
        }
        let (idx, ev) = self.primary_report()?;
        (ev.receiving > 0).then(|| {
            format!(
                "primary '{}' is unreachable from rwproxy, but {} replica(s) still receive from it: not failing over; writes resume when the link heals",
                self.servers[idx].name, ev.receiving
            )
        })
    }

    /// The current primary's view, if any.
    pub fn primary_view(&self) -> Option<&ServerView> {
        self.primary.and_then(|p| self.servers.get(p))
    }
}

/// The shared handle to the current snapshot. Readers load it lock-free;
/// code that waits for a change (a new primary, a drained gate) awaits
/// [`Topology::changed`] instead of polling.
#[derive(Debug)]
pub struct Topology {
    current: ArcSwap<Snapshot>,
    /// Wakes every waiter when a snapshot is published.
    published: tokio::sync::watch::Sender<u64>,
}

impl Topology {
    pub fn new(initial: Snapshot) -> Topology {
        let (published, _) = tokio::sync::watch::channel(initial.generation);
        Topology {
            current: ArcSwap::from_pointee(initial),
            published,
        }
    }

    /// A receiver that [`tokio::sync::watch::Receiver::changed`] wakes on
    /// every published snapshot after this call.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Waits until `pred` holds for the current snapshot or `deadline`
    /// passes; returns whether it holds.
    pub async fn wait_until(
        &self,
        deadline: tokio::time::Instant,
        pred: impl Fn(&Snapshot) -> bool,
    ) -> bool {
        let mut rx = self.subscribe();
        loop {
            if pred(&self.load()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // Past the deadline, or the topology is gone (shutdown).
                _ => return pred(&self.load()),
            }
        }
    }

    /// The current snapshot (lock-free).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot built from the current one.
    pub fn update(&self, f: impl Fn(&mut Snapshot)) {
        self.current.rcu(|cur| {
            let mut next = Snapshot::clone(cur);
            f(&mut next);
            next.generation = cur.generation + 1;
            next
        });
        let generation = self.current.load().generation;
        self.published.send_replace(generation);
    }
}
