//! The monitor: one task per server polls health, `read_only`, replication
//! and GTID positions every `monitor_interval` over one persistent
//! connection, and publishes what it sees into the topology snapshot.
//!
//! Rules (lessons from other proxies' bug trackers):
//! - A server is marked down only after `down_after` failed checks in a row,
//!   and back up on the first good check.
//! - "Replication stopped" is its own state, not "lag = 0" (ProxySQL #3897)
//!   and not "lag = ∞ for everyone": a NULL `Seconds_Behind_Master` on one
//!   replica only affects that replica.
//! - The primary is never judged by lag.
//! - Which server is primary comes from the servers (`read_only = 0` and not
//!   replicating), not from rwproxy's memory, so several rwproxy instances
//!   converge on the same answer after a promotion.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, Role};
use crate::dialect::Flavor;
use crate::gtid::GtidPos;
use crate::topology::{Feed, Replication, Snapshot, Topology};

/// One check's result.
#[derive(Debug, Clone)]
pub struct Observation {
    pub read_only: bool,
    pub replication: Replication,
    /// Lag from `Seconds_Behind_Master` or the heartbeat.
    pub lag: Option<Duration>,
    pub gtid_binlog: GtidPos,
    pub gtid_slave: GtidPos,
    /// Whether the server replicates: a replication thread runs or is
    /// connecting ([`replicating`]). Leftover configuration with both
    /// threads stopped does not count.
    pub is_replica: bool,
    /// `@@server_id`.
    pub server_id: Option<u32>,
    /// The IO thread's counters (replicas only; None where the dialect
    /// gives none).
    pub feed: Option<FeedSample>,
    /// Even privileged accounts are refused writes: MySQL's
    /// `super_read_only` (what fencing sets there); MariaDB's `read_only`.
    pub super_read_only: bool,
}

/// One reading of a replica's IO-thread counters (see
/// [`crate::topology::Feed`] for what is made of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSample {
    pub source_id: Option<u32>,
    pub connected: bool,
    pub heartbeats: u64,
    pub io_pos: String,
}

/// The IO thread's evidence from a replica status row: MariaDB has the
/// heartbeat counter in the row (`SHOW ALL SLAVES STATUS`), MySQL in
/// `performance_schema.replication_connection_status` (`heartbeats`, read
/// by [`check`]). The received position is `Gtid_IO_Pos` /
/// `Retrieved_Gtid_Set`.
fn feed_sample(r: &Row, flavor: Flavor, heartbeats: Option<u64>) -> Option<FeedSample> {
    let cols = flavor.status_columns();
    let heartbeats = match flavor {
        Flavor::MariaDb => col_str(r, "Slave_received_heartbeats")?.parse().ok()?,
        Flavor::MySql => heartbeats?,
    };
    Some(FeedSample {
        source_id: col_str(r, cols.source_id)
            .and_then(|v| v.parse().ok())
            .filter(|&id| id != 0),
        connected: col_str(r, cols.io_running).is_some_and(|v| v == "Yes"),
        heartbeats,
        io_pos: col_str(r, cols.received).unwrap_or_default(),
    })
}

/// The next [`Feed`] from the previous one and a new sample: it advanced
/// when the counters moved while connected to the same source.
pub fn next_feed(prev: Option<&Feed>, sample: &FeedSample) -> Feed {
    let now = Instant::now();
    let same_link = prev.is_some_and(|p| p.connected && p.source_id == sample.source_id);
    let advanced_at = match prev {
        _ if !sample.connected => None,
        Some(p) if same_link => {
            if p.heartbeats != sample.heartbeats || p.io_pos != sample.io_pos {
                Some(now)
            } else {
                p.advanced_at
            }
        }
        // Newly connected (or first seen connected): counts as just
        // received — when in doubt, the primary is alive.
        _ => Some(now),
    };
    let connected_since = match prev {
        _ if !sample.connected => None,
        Some(p) if same_link => p.connected_since,
        _ => Some(SystemTime::now()),
    };
    Feed {
        source_id: sample.source_id,
        connected: sample.connected,
        heartbeats: sample.heartbeats,
        io_pos: sample.io_pos.clone(),
        advanced_at,
        connected_since,
    }
}

/// Connection options for the monitor account on one server, with the TLS
/// the configuration asks for that server (promotion and account reads use
/// the same options). Open them with [`crate::backend::tls::connect_mysql`].
pub fn monitor_opts(config: &Config, addr: &str) -> mysql_async::Opts {
    let (host, port) = addr
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse().unwrap_or(3306)))
        .unwrap_or((addr.to_string(), 3306));
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(config.monitor.user.clone()))
        .pass(Some(config.monitor.password.clone()))
        .prefer_socket(false)
        .wait_timeout(Some(28_800))
        .ssl_opts(crate::backend::tls::ssl_opts(
            config,
            config.tls_for_addr(addr),
        ))
        .into()
}

fn col_str(row: &Row, name: &str) -> Option<String> {
    let idx = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str() == name)?;
    match row.as_ref(idx)? {
        mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        mysql_async::Value::Int(i) => Some(i.to_string()),
        mysql_async::Value::UInt(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Whether a `SHOW SLAVE STATUS` row says the server replicates: a source
/// is configured and a replication thread runs or tries to (IO thread
/// `Yes` or `Connecting`, SQL thread `Yes`).
///
/// Why not "a source is configured": `CHANGE MASTER TO` without `START
/// SLAVE`, a `STOP SLAVE`, or `RESET SLAVE` (without `ALL`) leave
/// `Master_Host` set on a server that replicates nothing. Counting those
/// as replicas made a writable primary with such leftovers lose its role,
/// and every write failed with "no primary" (issue 16, item 7). A
/// writable server whose threads are stopped is a primary; a *second* one
/// is the split-brain case `derive_primary` refuses writes for.
pub fn replicating(master_host: &str, io: Option<&str>, sql: Option<&str>) -> bool {
    !master_host.is_empty()
        && (matches!(io, Some("Yes" | "Connecting" | "Preparing")) || sql == Some("Yes"))
}

/// `@@read_only`, binlog position, applied position, `@@server_id`,
/// `@@super_read_only` (see [`Flavor::monitor_globals_sql`]).
type GlobalsRow = (i64, Option<String>, Option<String>, Option<u32>, i64);

/// Runs one check on an open connection, in the dialect of its `flavor`
/// (read once when the connection was opened).
pub async fn check(
    conn: &mut Conn,
    flavor: Flavor,
    heartbeat: Heartbeat,
) -> Result<Observation, mysql_async::Error> {
    let row: Option<GlobalsRow> = conn.query_first(flavor.monitor_globals_sql()).await?;
    let (read_only, binlog, slave, server_id, super_ro) = row.unwrap_or((0, None, None, None, 0));
    let mut status: Vec<Row> = conn.query(flavor.replica_status_sql()).await?;
    // The default (unnamed) replication connection comes first.
    if let Some(i) = status.iter().position(|r| {
        col_str(r, "Connection_name")
            .or_else(|| col_str(r, "Channel_Name"))
            .is_some_and(|n| n.is_empty())
    }) {
        status.swap(0, i);
    }
    let heartbeats = match (flavor.heartbeats_sql(), status.is_empty()) {
        // Not fatal: without SELECT on performance_schema there is no
        // feed evidence (failover then cannot verify a primary's death).
        (Some(sql), false) => conn
            .query_first::<Option<u64>, _>(sql)
            .await
            .ok()
            .flatten()
            .flatten(),
        _ => None,
    };
    let feed = status
        .first()
        .and_then(|r| feed_sample(r, flavor, heartbeats));
    let cols = flavor.status_columns();
    let (is_replica, replication, sbm) = match status.first() {
        None => (false, Replication::None, None),
        Some(r) => {
            let master = col_str(r, cols.source_host).unwrap_or_default();
            let io = col_str(r, cols.io_running).is_some_and(|v| v == "Yes");
            let sql = col_str(r, cols.sql_running).is_some_and(|v| v == "Yes");
            let sbm = col_str(r, cols.lag)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let rep = if io && sql {
                Replication::Running
            } else {
                Replication::Stopped { io, sql }
            };
            let replicates = replicating(
                &master,
                col_str(r, cols.io_running).as_deref(),
                col_str(r, cols.sql_running).as_deref(),
            );
            (replicates, rep, sbm)
        }
    };
    let lag = match heartbeat {
        Heartbeat::Off => sbm,
        Heartbeat::Write => {
            conn.query_drop("REPLACE INTO rwproxy.heartbeat (id, ts) VALUES (1, UTC_TIMESTAMP(6))")
                .await?;
            None
        }
        Heartbeat::Read => {
            let us: Option<Option<i64>> = conn
                .query_first(
                    "SELECT TIMESTAMPDIFF(MICROSECOND, ts, UTC_TIMESTAMP(6)) FROM rwproxy.heartbeat WHERE id = 1",
                )
                .await
                .ok()
                .flatten();
            us.flatten()
                .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)))
        }
    };
    Ok(Observation {
        read_only: read_only != 0,
        replication,
        lag,
        gtid_binlog: GtidPos::parse(binlog.as_deref().unwrap_or("")),
        gtid_slave: GtidPos::parse(slave.as_deref().unwrap_or("")),
        is_replica,
        server_id,
        feed,
        super_read_only: super_ro != 0,
    })
}

/// What a server's check does with the heartbeat table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Off,
    /// This server is the primary: write the timestamp.
    Write,
    /// This server is a replica: read it.
    Read,
}

/// Why one check of a server failed (shown as its `last_error`).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Server(#[from] mysql_async::Error),
    #[error("no connection")]
    NoConnection,
    #[error("check timed out after {0:?}")]
    TimedOut(Duration),
}

/// Applies one server's result to a snapshot and re-derives the primary.
fn apply(
    snap: &mut Snapshot,
    idx: usize,
    result: &Result<Observation, CheckError>,
    failures: u32,
    down_after: u32,
) {
    let Some(s) = snap.servers.get_mut(idx) else {
        return;
    };
    match result {
        Ok(o) => {
            if !s.up {
                s.since = SystemTime::now();
            }
            s.up = true;
            s.failures = 0;
            s.last_error = None;
            s.read_only = Some(o.read_only);
            s.replication = o.replication;
            s.gtid_binlog = o.gtid_binlog.clone();
            s.gtid_slave = o.gtid_slave.clone();
            s.role = if o.is_replica || o.read_only {
                Role::Replica
            } else {
                Role::Primary
            };
            s.lag = if s.role == Role::Primary {
                Some(Duration::ZERO)
            } else {
                o.lag
            };
            s.server_id = o.server_id;
            s.feed = o.feed.as_ref().map(|f| next_feed(s.feed.as_ref(), f));
            // A server this instance demoted stays out until it is seen
            // fenced (read-only or replicating).
            if s.demoted && s.role == Role::Replica {
                s.demoted = false;
            }
        }
        Err(e) => {
            s.failures = failures;
            s.last_error = Some(e.to_string());
            if failures >= down_after {
                if s.up {
                    s.since = SystemTime::now();
                }
                s.up = false;
            }
        }
    }
    derive_primary(snap);
}

/// The primary is the up server that is writable and not replicating.
///
/// A server this instance demoted (failover) is never a candidate: it is a
/// stray waiting to be fenced. With several candidates left (split brain:
/// e.g. another instance promoted a replica while this one still saw the
/// old primary), there is *no* primary: picking one could send writes to
/// the server that is about to lose, so writes are refused until the
/// servers agree again (one is fenced, by whichever instance can reach
/// it; see `Failover::fence_strays`).
pub fn derive_primary(snap: &mut Snapshot) {
    let candidates: Vec<usize> = snap
        .servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.up && s.role == Role::Primary && !s.demoted)
        .map(|(i, _)| i)
        .collect();
    let (primary, conflict) = match candidates.as_slice() {
        [] => (None, Vec::new()),
        [one] => (Some(*one), Vec::new()),
        many => (None, many.to_vec()),
    };
    if conflict != snap.conflict {
        if conflict.is_empty() {
            info!("the servers agree on one primary again");
        } else {
            let names: Vec<&str> = conflict.iter().map(|&i| &*snap.servers[i].name).collect();
            warn!(servers = ?names, "two or more writable, non-replicating servers: refusing writes until they agree");
        }
    }
    snap.primary = primary;
    snap.conflict = conflict;
}

/// Handle to the running monitor.
pub struct Monitor {
    tasks: JoinSet<()>,
}

impl Monitor {
    /// Runs one round of checks synchronously (used at start-up so the
    /// first routing decisions already use observed state), then starts
    /// one task per server.
    pub async fn start(
        config: Arc<Config>,
        topology: Arc<Topology>,
        shutdown: CancellationToken,
    ) -> Monitor {
        let snap = topology.load();
        let mut first = JoinSet::new();
        for (idx, s) in snap.servers.iter().enumerate() {
            let opts = monitor_opts(&config, &s.addr);
            let timeout = config.connect_timeout();
            let hb = heartbeat_mode(&config, s.role);
            first.spawn(async move {
                let started = Instant::now();
                let r = tokio::time::timeout(timeout, async {
                    let mut c = crate::backend::tls::connect_mysql(opts).await?;
                    if hb == Heartbeat::Write {
                        let _ = ensure_heartbeat_table(&mut c).await;
                    }
                    let flavor = Flavor::detect(&mut c).await?;
                    let o = check(&mut c, flavor, hb).await;
                    let _ = c.disconnect().await;
                    o
                })
                .await;
                let r = match r {
                    Ok(r) => r.map_err(CheckError::from),
                    Err(_) => Err(CheckError::TimedOut(started.elapsed())),
                };
                (idx, r)
            });
        }
        while let Some(Ok((idx, result))) = first.join_next().await {
            // A server that fails the first round starts out down.
            topology.update(|snap| apply(snap, idx, &result, u32::MAX, 1));
        }
        let mut tasks = JoinSet::new();
        for idx in 0..snap.servers.len() {
            tasks.spawn(server_task(
                idx,
                config.clone(),
                topology.clone(),
                shutdown.clone(),
            ));
        }
        Monitor { tasks }
    }

    /// Waits for the tasks after shutdown was signalled.
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn heartbeat_mode(config: &Config, role: Role) -> Heartbeat {
    match (config.heartbeat, role) {
        (false, _) => Heartbeat::Off,
        (true, Role::Primary) => Heartbeat::Write,
        (true, Role::Replica) => Heartbeat::Read,
    }
}

async fn ensure_heartbeat_table(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop("CREATE DATABASE IF NOT EXISTS rwproxy")
        .await?;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS rwproxy.heartbeat (id INT PRIMARY KEY, ts DATETIME(6) NOT NULL)",
    )
    .await
}

/// Polls one server until shutdown. Keeps one connection, reconnecting
/// with backoff; logs once per state change, never per failed poll.
async fn server_task(
    idx: usize,
    config: Arc<Config>,
    topology: Arc<Topology>,
    shutdown: CancellationToken,
) {
    let interval = config.monitor_interval();
    let (name, addr) = {
        let snap = topology.load();
        let s = &snap.servers[idx];
        (s.name.clone(), s.addr.clone())
    };
    let opts = monitor_opts(&config, &addr);
    let mut conn: Option<(Conn, Flavor)> = None;
    let mut failures: u32 = 0;
    let mut was_up = topology.load().servers[idx].up;
    let mut heartbeat_ready = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let role = topology.load().servers[idx].role;
        let hb = heartbeat_mode(&config, role);
        // Each check is bounded so a hung server counts as failed in time.
        let bound = interval
            .max(Duration::from_millis(400))
            .min(config.connect_timeout());
        let started = Instant::now();
        let result: Result<Observation, CheckError> = tokio::time::timeout(bound, async {
            if conn.is_none() {
                let mut c = crate::backend::tls::connect_mysql(opts.clone()).await?;
                let flavor = Flavor::detect(&mut c).await?;
                conn = Some((c, flavor));
                heartbeat_ready = false;
            }
            let (c, flavor) = conn.as_mut().ok_or(CheckError::NoConnection)?;
            let flavor = *flavor;
            if hb == Heartbeat::Write && !heartbeat_ready {
                // Not fatal to the check (see `check`), but said once.
                if let Err(e) = ensure_heartbeat_table(c).await {
                    warn!(server = %name, error = %e, "cannot create rwproxy.heartbeat (grant CREATE, INSERT, UPDATE, DELETE, SELECT ON rwproxy.* to the monitor account)");
                }
                heartbeat_ready = true;
            }
            Ok(check(c, flavor, hb).await?)
        })
        .await
        .unwrap_or_else(|_| Err(CheckError::TimedOut(started.elapsed())));
        if result.is_err() {
            conn = None;
            failures = failures.saturating_add(1);
            // Confirm a failure quickly instead of a full interval later,
            // so a dead server is marked down within about one interval.
            if failures < config.down_after {
                ticker.reset_at(
                    tokio::time::Instant::now() + (interval / 5).max(Duration::from_millis(50)),
                );
            }
        } else {
            failures = 0;
        }
        let down_after = config.down_after;
        let before = topology.load();
        let old_primary = before.primary_view().map(|p| p.name.clone());
        topology.update(|snap| apply(snap, idx, &result, failures, down_after));
        let after = topology.load();
        let now_up = after.servers[idx].up;
        if now_up != was_up {
            match &result {
                Ok(_) => info!(server = %name, "server is up"),
                Err(e) => warn!(server = %name, error = %e, failures, "server is down"),
            }
            was_up = now_up;
        }
        let new_primary = after.primary_view().map(|p| p.name.clone());
        if new_primary != old_primary {
            info!(old = ?old_primary.as_deref(), new = ?new_primary.as_deref(), "primary changed");
        }
    }
    if let Some((c, _)) = conn {
        let _ = c.disconnect().await;
    }
}

#[cfg(test)]
mod replicating_tests {
    use super::replicating;

    #[test]
    fn leftover_replication_settings_do_not_make_a_replica() {
        // Running, or trying to: a replica.
        assert!(replicating("10.0.0.1", Some("Yes"), Some("Yes")));
        assert!(replicating("10.0.0.1", Some("Connecting"), Some("Yes")));
        assert!(replicating("10.0.0.1", Some("Connecting"), Some("No")));
        // The SQL thread still applying relay logs after the IO thread stopped.
        assert!(replicating("10.0.0.1", Some("No"), Some("Yes")));
        // `CHANGE MASTER TO` never started, `STOP SLAVE`, `RESET SLAVE`:
        // configured but stopped.
        assert!(!replicating("127.0.0.1", Some("No"), Some("No")));
        assert!(!replicating("127.0.0.1", None, None));
        // `RESET SLAVE ALL`: nothing configured.
        assert!(!replicating("", Some("Yes"), Some("Yes")));
    }
}
