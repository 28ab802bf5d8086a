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
use std::time::{Duration, SystemTime};

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
                stats: Arc::new(ServerStats::default()),
            })
            .collect();
        let primary = servers.iter().position(|s| s.role == Role::Primary);
        Snapshot {
            servers,
            primary,
            generation: 1,
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
