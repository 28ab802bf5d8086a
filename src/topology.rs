//! The current view of every server, published as an immutable snapshot.
//!
//! The data path loads the snapshot with one atomic read (`ArcSwap`), never
//! a lock; whoever learns something new (the monitor, an admin command)
//! builds a new snapshot and swaps it in. Sessions that hold an old
//! snapshot finish their statement on it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Config, Role};

/// Operator-set state of a server (admin `SET SERVER …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Online,
    /// Gets no new work; existing sessions finish.
    Offline,
    /// Gets no new sessions; existing sessions keep using it.
    Draining,
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
    /// Whether the server answers.
    pub up: bool,
    /// Replication delay, if known (replicas only).
    pub lag: Option<Duration>,
    /// Share of reads among replicas.
    pub weight: u32,
    pub admin: AdminState,
}

impl ServerView {
    /// May serve plain reads now.
    pub fn readable(&self) -> bool {
        self.up && self.admin == AdminState::Online && self.weight > 0
    }
}

/// An immutable picture of the topology.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub servers: Vec<ServerView>,
    /// Index of the current primary in `servers`, if any is known.
    pub primary: Option<usize>,
    /// Increases with every published change.
    pub generation: u64,
}

impl Snapshot {
    /// The starting view: as configured, every server assumed up.
    pub fn from_config(config: &Config) -> Snapshot {
        let servers: Vec<ServerView> = config
            .servers
            .iter()
            .map(|s| ServerView {
                name: Arc::from(s.name.as_str()),
                addr: s.address(),
                role: s.role,
                up: true,
                lag: None,
                weight: s.weight,
                admin: AdminState::Online,
            })
            .collect();
        let primary = servers.iter().position(|s| s.role == Role::Primary);
        Snapshot {
            servers,
            primary,
            generation: 1,
        }
    }

    /// Indexes of replicas that may serve plain reads.
    pub fn readable_replicas(&self) -> impl Iterator<Item = usize> + '_ {
        self.servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.role == Role::Replica && s.readable())
            .map(|(i, _)| i)
    }
}

/// The shared handle to the current snapshot.
#[derive(Debug)]
pub struct Topology {
    current: ArcSwap<Snapshot>,
}

impl Topology {
    pub fn new(initial: Snapshot) -> Topology {
        Topology {
            current: ArcSwap::from_pointee(initial),
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
    }
}
