//! Switchover (planned `PROMOTE`) and failover (primary dead), done on the
//! servers themselves so that every rwproxy instance converges on the
//! result through its monitor.
//!
//! Switchover, step by step, and why:
//! 1. Close the write gate: sessions outside a transaction hold their next
//!    primary-bound statement at the statement boundary (they see a pause,
//!    not an error). Sessions inside a transaction may go on, so it can
//!    commit, for up to `switchover_timeout`.
//! 2. `SET GLOBAL read_only = 1` on the old primary: nothing more can be
//!    committed there; a transaction still open after the timeout gets the
//!    server's own ERR 1290 at its next write or commit (a clear error).
//! 3. Read the old primary's final `@@gtid_binlog_pos` and wait on the
//!    candidate with `MASTER_GTID_WAIT` until it applied all of it: no
//!    acknowledged write is lost. If it cannot catch up in time, undo step 2
//!    and reopen the gate (the undo path operators need).
//! 4. Candidate: `STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0`.
//! 5. Other replicas and the old primary: `CHANGE MASTER TO` the candidate
//!    with `MASTER_USE_GTID = slave_pos` (the old primary first copies its
//!    binlog position into `gtid_slave_pos`, since it never was a replica).
//! 6. Publish the new topology, reopen the gate: held writes go to the new
//!    primary.
//!
//! Every step is spelled in the dialect of the server it runs on
//! ([`crate::dialect::Flavor`], read once per connection): on MySQL, step 2
//! sets `super_read_only` (so accounts with `CONNECTION_ADMIN` cannot write
//! either) and reads it back, step 3 reads `@@gtid_executed` and waits with
//! `WAIT_FOR_EXECUTED_GTID_SET`, step 4 is `STOP REPLICA; RESET REPLICA
//! ALL`, step 5 `CHANGE REPLICATION SOURCE TO … SOURCE_AUTO_POSITION = 1`.
//! A step that fails is never reported as done: its name in the report
//! says FAILED (or the whole promotion is an error).
//!
//! Failover differs in steps 1–3: the old primary is gone, so the replica
//! with the most advanced GTID position is promoted after it applied what
//! it had received, and only one rwproxy instance acts: it must first take
//! `GET_LOCK('rwproxy_failover')` on a majority of the configured servers,
//! and then, holding it, check on the servers that no other instance has
//! already promoted a replica (see [`Failover::failover`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Config, FailoverConfig, Role};
use crate::dialect::{ChangeSource, Flavor};
use crate::gtid::GtidPos;
use crate::monitor::{Heartbeat, monitor_opts};
use crate::router::digest::Redacted;
use crate::topology::{Replication, Snapshot, Topology};

/// Why a promotion was refused or failed. Refusals change nothing.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("promotion is not configured (add a [failover] section)")]
    NotConfigured,
    #[error("unknown server '{0}'")]
    Unknown(String),
    #[error("server '{0}' is down")]
    Down(String),
    #[error("server '{0}' is already the primary")]
    AlreadyPrimary(String),
    #[error("server '{0}' is not a replica")]
    NotReplica(String),
    #[error(
        "server '{name}' lags {lag:?}, more than max_promotion_lag ({max:?}); use FORCE to promote anyway"
    )]
    Lagging {
        name: String,
        lag: Option<Duration>,
        max: Duration,
    },
    #[error("another promotion is running")]
    Busy,
    #[error("no primary to switch over from; use FAILOVER")]
    NoPrimary,
    #[error("the primary is up; use PROMOTE for a planned switchover")]
    PrimaryUp,
    #[error("no replica can be promoted")]
    NoCandidate,
    #[error("another rwproxy instance holds the failover lock")]
    LockHeld,
    /// rwproxy cannot reach the primary, but replicas still receive from
    /// it: it is alive, only rwproxy's link is broken. Promoting would
    /// split the brain.
    #[error(
        "primary '{name}' is unreachable from rwproxy but {receiving} replica(s) still receive from it: not failing over"
    )]
    PrimaryAlive { name: String, receiving: usize },
    /// Two or more writable, non-replicating servers: nothing is promoted
    /// until one is fenced.
    #[error("two or more servers are writable and not replicating; refusing to promote")]
    Conflict,
    /// The failover lock was free, but the servers already have a primary
    /// again (another instance, or an operator, promoted it): this instance
    /// adopted it and changed nothing on the servers.
    #[error(
        "'{0}' was already promoted (by another rwproxy instance or an operator); following it"
    )]
    AlreadyPromoted(String),
    #[error("step '{step}' failed on {server}: {error}; {state}")]
    Step {
        step: &'static str,
        server: String,
        #[source]
        error: ServerOpError,
        /// What was rolled back and in which state things were left.
        state: String,
    },
}

/// A connection rwproxy opened to a server for a promotion step, or a
/// statement it ran there, failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerOpError {
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    /// Boxed: a promotion's error travels up several calls.
    #[error("{0}")]
    Server(#[source] Box<mysql_async::Error>),
    #[error("did not reach {gtid} within {secs}s")]
    CatchUp { gtid: String, secs: f64 },
    /// The fencing statement succeeded but reading it back says otherwise.
    #[error("`{0}` is not 1 after fencing")]
    NotFenced(&'static str),
}

impl From<mysql_async::Error> for ServerOpError {
    fn from(e: mysql_async::Error) -> ServerOpError {
        ServerOpError::Server(Box::new(e))
    }
}

/// What a promotion did, for the admin's answer and the logs.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub new_primary: String,
    pub old_primary: Option<String>,
    /// Steps with their durations.
    pub steps: Vec<(String, Duration)>,
    /// How long new writes were held.
    pub write_pause: Duration,
}

/// Holds writes at statement boundaries during a switchover.
///
/// A session registers every primary-bound statement (`enter`) *before*
/// looking at the gate, and the promoter closes the gate *before* waiting
/// for the in-flight count to drain (both sequentially consistent), so no
/// statement can slip past a closing gate to the old primary unseen.
#[derive(Debug)]
pub struct WriteGate {
    closed: AtomicBool,
    notify: watch::Sender<bool>,
    /// Sessions currently inside a transaction (from the primary's flags).
    in_transaction: AtomicI64,
    /// Primary-bound statements executing now.
    in_flight: AtomicI64,
    /// Woken when a statement or transaction leaves while the gate is
    /// closed: the switchover's drain waits on it instead of polling.
    left: tokio::sync::Notify,
}

impl Default for WriteGate {
    fn default() -> Self {
        WriteGate {
            closed: AtomicBool::new(false),
            notify: watch::channel(false).0,
            in_transaction: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            left: tokio::sync::Notify::new(),
        }
    }
}

/// A primary-bound statement in flight; leaves the gate when dropped.
#[derive(Debug)]
pub struct GateTicket(Arc<WriteGate>);

impl Drop for GateTicket {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.wake_drain();
    }
}

impl WriteGate {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// A session's transaction opened (`+1`) or ended (`-1`).
    pub fn transaction(&self, delta: i64) {
        self.in_transaction.fetch_add(delta, Ordering::SeqCst);
        if delta < 0 {
            self.wake_drain();
        }
    }

    fn wake_drain(&self) {
        if self.closed.load(Ordering::SeqCst) {
            self.left.notify_waiters();
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0 || self.in_transaction.load(Ordering::SeqCst) > 0
    }

    /// Waits until no primary-bound statement or transaction is in flight
    /// (woken by each one that leaves, no polling).
    async fn drained(&self) {
        loop {
            let wake = self.left.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if !self.busy() {
                return;
            }
            wake.await;
        }
    }

    /// Registers a primary-bound statement. Inside a transaction it always
    /// passes (so the transaction can finish); otherwise `None` while a
    /// switchover holds writes.
    pub fn enter(self: &Arc<Self>, in_transaction: bool) -> Option<GateTicket> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let ticket = GateTicket(self.clone());
        if !in_transaction && self.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(ticket)
    }

    /// Waits until the gate is open (bounded).
    pub async fn wait_open(&self, max: Duration) {
        let mut rx = self.notify.subscribe();
        let _ = tokio::time::timeout(max, rx.wait_for(|closed| !*closed)).await;
    }

    fn set(&self, closed: bool) {
        self.closed.store(closed, Ordering::SeqCst);
        self.notify.send_replace(closed);
    }
}

/// The promotion engine; one per rwproxy instance.
pub struct Failover {
    /// Swapped by RELOAD; each operation reads the current one once.
    config: Arc<ArcSwap<Config>>,
    topology: Arc<Topology>,
    pub gate: Arc<WriteGate>,
    /// One promotion at a time (try_lock: a second one is refused).
    running: tokio::sync::Mutex<()>,
    /// Promotions and failovers done (metrics).
    pub promotions: std::sync::atomic::AtomicU64,
    pub failovers: std::sync::atomic::AtomicU64,
    /// Servers this instance demoted (old primaries): only these are fenced
    /// when they show up writable, never a server rwproxy knows nothing of.
    /// With each, the new primary's position when it was promoted: an old
    /// primary that had written beyond it has transactions the new primary
    /// never received (its history diverged).
    demoted: std::sync::Mutex<Vec<(Arc<str>, GtidPos)>>,
    /// Backend pools, to close every connection to a demoted primary
    /// before the promotion is published (None in unit-level tests that
    /// drive the engine without a proxy).
    pools: Option<Arc<crate::backend::Pools>>,
    /// Whether the last watch round saw the primary unreachable from
    /// rwproxy while replicas still received from it (logs once per change).
    unreachable_reported: AtomicBool,
    /// This instance holds the leader lock on a majority of the servers
    /// (see [`Failover::lead`]); only the leader fails over automatically.
    leader: AtomicBool,
}

async fn connect(config: &Config, addr: &str) -> Result<Conn, ServerOpError> {
    Ok(tokio::time::timeout(
        config.connect_timeout(),
        crate::backend::tls::connect_mysql(monitor_opts(config, addr)),
    )
    .await
    .map_err(|_| ServerOpError::ConnectTimeout(addr.to_string()))??)
}

/// [`connect`], and the server's flavor (one round trip, once per
/// connection): every replication statement on it is in that dialect.
async fn connect_flavored(config: &Config, addr: &str) -> Result<(Conn, Flavor), ServerOpError> {
    let mut c = connect(config, addr).await?;
    match Flavor::detect(&mut c).await {
        Ok(f) => Ok((c, f)),
        Err(e) => {
            let _ = c.disconnect().await;
            Err(e.into())
        }
    }
}

fn host_port(addr: &str) -> (String, u16) {
    addr.rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse().unwrap_or(3306)))
        .unwrap_or((addr.to_string(), 3306))
}

/// Points a server at the new primary by GTID, in its `flavor`'s dialect
/// (`CHANGE MASTER TO … MASTER_USE_GTID = slave_pos` /
/// `CHANGE REPLICATION SOURCE TO … SOURCE_AUTO_POSITION = 1`). When
/// rwproxy talks TLS to the new primary, replication does too
/// (`MASTER_SSL=1` / `SOURCE_SSL=1`): such a primary typically runs with
/// `require_secure_transport`, which would refuse a plaintext replica.
/// The CA a replica verifies with is a path on the replica's host, which
/// rwproxy does not know: whatever was set stays.
fn change_master_sql(
    config: &Config,
    f: &FailoverConfig,
    primary_addr: &str,
    flavor: Flavor,
) -> String {
    let (host, port) = host_port(primary_addr);
    // Heartbeats are the evidence that a quiet primary is alive (see
    // `topology::Feed`): frequent enough to be seen several times within
    // `primary_failure_timeout`.
    flavor.change_source_sql(&ChangeSource {
        host: &host,
        port,
        user: &f.replication_user,
        password: &f.replication_password,
        heartbeat: config.replication_heartbeat().as_secs_f64(),
        ssl: config.tls_for_addr(primary_addr).enabled(),
    })
}

/// Makes a server a replica of `primary_addr`: stop, (MariaDB: take the
/// own binlog position as the replication position), change source,
/// start. Stops at the first failure and says which statement failed.
async fn make_replica(
    c: &mut Conn,
    flavor: Flavor,
    config: &Config,
    f: &FailoverConfig,
    primary_addr: &str,
    old_primary: bool,
) -> Result<(), (String, ServerOpError)> {
    let change = change_master_sql(config, f, primary_addr, flavor);
    let mut sqls: Vec<&str> = vec![flavor.stop_replica_sql()];
    if old_primary && let Some(sql) = flavor.before_rejoin_sql() {
        sqls.push(sql);
    }
    sqls.push(&change);
    sqls.push(flavor.start_replica_sql());
    for sql in sqls {
        if let Err(e) = c.query_drop(sql).await {
            let shown = Redacted(sql.as_bytes()).to_string();
            return Err((shown, e.into()));
        }
    }
    Ok(())
}

/// Fences a server (`read_only` / `super_read_only`) and reads it back:
/// the step is done only when the server says so.
async fn fence(c: &mut Conn, flavor: Flavor) -> Result<(), ServerOpError> {
    c.query_drop(flavor.fence_sql()).await?;
    let on: Option<i64> = c.query_first(flavor.fenced_sql()).await?;
    if on == Some(1) {
        Ok(())
    } else {
        Err(ServerOpError::NotFenced(flavor.fenced_sql()))
    }
}

struct Steps {
    report: Report,
    last: Instant,
}

impl Steps {
    fn done(&mut self, name: impl Into<String>) {
        let d = self.last.elapsed();
        let name = name.into();
        info!(step = %name, ms = d.as_secs_f64() * 1000.0, "promotion step done");
        self.report.steps.push((name, d));
        self.last = Instant::now();
    }
}

impl Failover {
    fn cfg(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn new(config: Arc<ArcSwap<Config>>, topology: Arc<Topology>) -> Failover {
        Failover {
            config,
            topology,
            gate: Arc::new(WriteGate::default()),
            running: tokio::sync::Mutex::new(()),
            promotions: Default::default(),
            failovers: Default::default(),
            demoted: Default::default(),
            pools: None,
            unreachable_reported: AtomicBool::new(false),
            leader: AtomicBool::new(false),
        }
    }

    /// Whether this instance currently leads (holds the leader lock on a
    /// majority of the servers).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Keeps (or tries to take) `GET_LOCK('rwproxy_leader')` on every
    /// server, each on its own connection, and leads while it holds a
    /// majority of them — MaxScale's cooperative monitoring. The state is
    /// held on the servers: a named lock lives exactly as long as the
    /// connection that took it, so a leader that dies or is cut off from
    /// the servers loses it by itself, and another instance takes over at
    /// its next round. With one instance (the default) it simply always
    /// leads. No consensus of our own, no external coordinator.
    async fn lead(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut held: Vec<(Arc<str>, Conn)> = Vec::new();
        loop {
            let cfg = self.cfg();
            let snap = self.topology.load();
            let bound = cfg.connect_timeout();
            // Keep the locks still held (the connection answers and is the
            // lock's owner); drop the others.
            let mut kept = Vec::new();
            for (name, mut c) in held.drain(..) {
                let owner: Result<Result<Option<Option<i64>>, _>, _> = tokio::time::timeout(
                    bound,
                    c.query_first("SELECT IS_USED_LOCK('rwproxy_leader') = CONNECTION_ID()"),
                )
                .await;
                if matches!(owner, Ok(Ok(Some(Some(1))))) {
                    kept.push((name, c));
                }
            }
            held = kept;
            for s in snap.servers.iter().filter(|s| s.up) {
                if held.iter().any(|(n, _)| n == &s.name) {
                    continue;
                }
                let Ok(mut c) = connect(&cfg, &s.addr).await else {
                    continue;
                };
                let got: Result<Result<Option<Option<i64>>, _>, _> = tokio::time::timeout(
                    bound,
                    c.query_first("SELECT GET_LOCK('rwproxy_leader', 0)"),
                )
                .await;
                if matches!(got, Ok(Ok(Some(Some(1))))) {
                    held.push((s.name.clone(), c));
                } else {
                    let _ = c.disconnect().await;
                }
            }
            let lead = held.len() > snap.servers.len() / 2;
            if lead != self.leader.swap(lead, Ordering::Relaxed) {
                info!(
                    leader = lead,
                    locks = held.len(),
                    servers = snap.servers.len(),
                    "rwproxy leadership changed"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.monitor_interval()) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.leader.store(false, Ordering::Relaxed);
        for (_, c) in held {
            let _ = c.disconnect().await;
        }
    }

    /// Gives the engine the proxy's pools (see [`Failover::adopt`]).
    pub fn with_pools(mut self, pools: Arc<crate::backend::Pools>) -> Failover {
        self.pools = Some(pools);
        self
    }

    /// Whether `idx`, which rwproxy cannot reach, is dead by the shared
    /// evidence: with `verify_primary_failure`, only when no replica
    /// received anything from it within `primary_failure_timeout`.
    fn primary_alive_on_replicas(&self, snap: &Snapshot, idx: usize) -> Option<usize> {
        let cfg = self.cfg();
        if !cfg
            .failover
            .as_ref()
            .is_none_or(|f| f.verify_primary_failure)
        {
            return None;
        }
        let ev = snap.primary_evidence(idx, cfg.primary_failure_timeout());
        (ev.receiving > 0).then_some(ev.receiving)
    }

    fn settings(&self) -> Result<FailoverConfig, FailoverError> {
        self.cfg()
            .failover
            .clone()
            .ok_or(FailoverError::NotConfigured)
    }

    /// Checks a candidate; refusals change nothing.
    fn check_candidate(
        &self,
        snap: &Snapshot,
        name: &str,
        force: bool,
    ) -> Result<usize, FailoverError> {
        let f = self.settings()?;
        let idx = snap
            .find(name)
            .ok_or_else(|| FailoverError::Unknown(name.into()))?;
        let s = &snap.servers[idx];
        if !s.up {
            return Err(FailoverError::Down(name.into()));
        }
        if snap.primary == Some(idx) || s.role == Role::Primary {
            return Err(FailoverError::AlreadyPrimary(name.into()));
        }
        if s.fenced.is_some() || s.replication == Replication::None {
            return Err(FailoverError::NotReplica(name.into()));
        }
        let max = Duration::from_millis(f.max_promotion_lag_ms);
        if !force && s.lag.is_none_or(|l| l > max) {
            return Err(FailoverError::Lagging {
                name: name.into(),
                lag: s.lag,
                max,
            });
        }
        Ok(idx)
    }

    /// Planned switchover to `name` (admin `PROMOTE name [FORCE]`).
    pub async fn switchover(&self, name: &str, force: bool) -> Result<Report, FailoverError> {
        let f = self.settings()?;
        let _guard = self.running.try_lock().map_err(|_| FailoverError::Busy)?;
        let snap = self.topology.load();
        let cand = self.check_candidate(&snap, name, force)?;
        let old = snap.primary.ok_or(FailoverError::NoPrimary)?;
        let old_view = snap.servers[old].clone();
        let cand_view = snap.servers[cand].clone();
        let timeout = Duration::from_millis(f.switchover_timeout_ms);
        let mut steps = Steps {
            report: Report {
                new_primary: cand_view.name.to_string(),
                old_primary: Some(old_view.name.to_string()),
                ..Report::default()
            },
            last: Instant::now(),
        };
        info!(from = %old_view.name, to = %cand_view.name, "switchover started");
        let (mut old_conn, old_flavor) = connect_flavored(&self.cfg(), &old_view.addr)
            .await
            .map_err(|e| FailoverError::Step {
                step: "connect old primary",
                server: old_view.name.to_string(),
                error: e,
                state: "nothing changed".into(),
            })?;
        let (mut cand_conn, cand_flavor) = connect_flavored(&self.cfg(), &cand_view.addr)
            .await
            .map_err(|e| FailoverError::Step {
                step: "connect candidate",
                server: cand_view.name.to_string(),
                error: e,
                state: "nothing changed".into(),
            })?;
        steps.done("connect");

        // 1. Hold new writes; let in-flight statements and transactions end.
        let paused = Instant::now();
        self.gate.set(true);
        let drained = tokio::time::timeout(timeout, self.gate.drained())
            .await
            .is_ok();
        steps.done(if drained {
            "hold writes (drained)"
        } else {
            "hold writes (timeout: open transactions will be refused)"
        });

        // 2. Freeze the old primary (MySQL: super_read_only, else the
        // accounts with CONNECTION_ADMIN could still write there).
        if let Err(e) = fence(&mut old_conn, old_flavor).await {
            let state = self
                .undo(
                    &mut old_conn,
                    &old_view.name,
                    "writes reopened on the old primary; nothing changed",
                )
                .await;
            return Err(FailoverError::Step {
                step: "set old primary read_only",
                server: old_view.name.to_string(),
                error: e,
                state,
            });
        }
        let final_pos: Option<String> =
            match old_conn.query_first(old_flavor.written_pos_sql()).await {
                Ok(v) => v,
                Err(e) => {
                    let state = self
                        .undo(
                            &mut old_conn,
                            &old_view.name,
                            "old primary made writable again",
                        )
                        .await;
                    return Err(FailoverError::Step {
                        step: "read old primary GTID",
                        server: old_view.name.to_string(),
                        error: e.into(),
                        state,
                    });
                }
            };
        let final_pos = final_pos.unwrap_or_default();
        steps.done(format!("old primary read_only at GTID {final_pos}"));

        // 3. Wait until the candidate applied everything.
        let wait_secs = timeout.as_secs_f64().max(1.0);
        let waited: Result<Option<i64>, _> = cand_conn
            .query_first(cand_flavor.gtid_wait_sql(&final_pos, wait_secs))
            .await;
        match waited {
            Ok(Some(0)) => {}
            other => {
                let error = match other {
                    Err(e) => e.into(),
                    _ => ServerOpError::CatchUp {
                        gtid: final_pos.to_string(),
                        secs: wait_secs,
                    },
                };
                let state = self
                    .undo(
                        &mut old_conn,
                        &old_view.name,
                        "old primary made writable again; topology unchanged",
                    )
                    .await;
                return Err(FailoverError::Step {
                    step: "candidate catch-up",
                    server: cand_view.name.to_string(),
                    error,
                    state,
                });
            }
        }
        steps.done("candidate caught up");

        // 4. Promote the candidate.
        for sql in [
            cand_flavor.stop_replica_sql(),
            cand_flavor.reset_replica_sql(),
            cand_flavor.unfence_sql(),
        ] {
            if let Err(e) = cand_conn.query_drop(sql).await {
                // Best effort back: candidate replicates again, old primary writable.
                let _ = cand_conn.query_drop(cand_flavor.fence_sql()).await;
                let state = self
                    .undo(
                        &mut old_conn,
                        &old_view.name,
                        &format!("old primary made writable again; candidate may need `CHANGE MASTER` / `CHANGE REPLICATION SOURCE` (failed at `{sql}`)"),
                    )
                    .await;
                return Err(FailoverError::Step {
                    step: "promote candidate",
                    server: cand_view.name.to_string(),
                    error: e.into(),
                    state,
                });
            }
        }
        take_semi_sync_master(&mut cand_conn, cand_flavor).await;
        steps.done("candidate writable");

        // 6 (before 5, so writes resume as early as possible): publish and reopen.
        let cand_name = cand_view.name.clone();
        let old_name = old_view.name.clone();
        self.remember_demoted(&old_name, &GtidPos::parse(&final_pos));
        self.topology.update(|s| {
            for v in s.servers.iter_mut() {
                if v.name == cand_name {
                    v.role = Role::Primary;
                    v.read_only = Some(false);
                    v.replication = Replication::None;
                    v.lag = Some(Duration::ZERO);
                } else if v.name == old_name {
                    v.role = Role::Replica;
                    v.read_only = Some(true);
                    v.replication = Replication::Unknown;
                }
            }
            s.primary = s.find(&cand_name);
        });
        self.gate.set(false);
        steps.report.write_pause = paused.elapsed();
        steps.done("published; writes released");

        // 5. Repoint the others. A failure is reported in the step's name
        // (the promotion itself is done; the operator repoints by hand).
        let cfg = self.cfg();
        drop_semi_sync_master(&mut old_conn, old_flavor).await;
        let mut failed: Vec<String> = Vec::new();
        if let Err((sql, e)) =
            make_replica(&mut old_conn, old_flavor, &cfg, &f, &cand_view.addr, true).await
        {
            warn!(server = %old_view.name, error = %e, %sql, "repointing old primary failed");
            failed.push(old_view.name.to_string());
        }
        for v in snap.servers.iter() {
            if v.name == cand_view.name || v.name == old_view.name || !v.up {
                continue;
            }
            if let Err(e) = repoint(&cfg, &f, &v.addr, &cand_view.addr).await {
                warn!(server = %v.name, error = %e, "repointing replica failed");
                failed.push(v.name.to_string());
            }
        }
        steps.done(if failed.is_empty() {
            "replicas repointed".to_string()
        } else {
            format!("replicas repointed, FAILED on {}", failed.join(", "))
        });
        let _ = old_conn.disconnect().await;
        let _ = cand_conn.disconnect().await;
        self.promotions.fetch_add(1, Ordering::Relaxed);
        info!(
            new = %steps.report.new_primary,
            write_pause_ms = steps.report.write_pause.as_secs_f64() * 1000.0,
            "switchover done"
        );
        Ok(steps.report)
    }

    /// Undo of a switchover: the old primary takes writes again.
    async fn undo(&self, old_conn: &mut Conn, old: &Arc<str>, state: &str) -> String {
        // `read_only = 0` also clears MySQL's `super_read_only`.
        let state = match old_conn.query_drop("SET GLOBAL read_only = 0").await {
            Ok(()) => {
                // Publish at once (the monitor may have seen it read_only
                // meanwhile) so writes go back to it without a gap.
                let name = old.clone();
                self.topology.update(|s| {
                    if let Some(i) = s.find(&name) {
                        s.servers[i].role = Role::Primary;
                        s.servers[i].read_only = Some(false);
                        if s.servers[i].up {
                            s.primary = Some(i);
                        }
                    }
                });
                state.to_string()
            }
            Err(e) => format!("{state} FAILED ({e}): old primary is still read_only"),
        };
        self.gate.set(false);
        warn!(%state, "switchover rolled back");
        state
    }

    /// Failover: the primary is down; promote the most advanced replica.
    ///
    /// At most one failover per primary death, however many instances see
    /// it: only the holder of the majority lock acts, and it first checks on
    /// the servers that nobody promoted a replica already. An instance that
    /// lost the race gets [`FailoverError::AlreadyPromoted`] (or `LockHeld`
    /// while the winner works), adopts the winner's primary and does not
    /// count a failover.
    pub async fn failover(&self) -> Result<Report, FailoverError> {
        let f = self.settings()?;
        let _guard = self.running.try_lock().map_err(|_| FailoverError::Busy)?;
        let snap = self.topology.load();
        if snap.primary.is_some() {
            return Err(FailoverError::PrimaryUp);
        }
        if !snap.conflict.is_empty() {
            return Err(FailoverError::Conflict);
        }
        // The replicas' last samples may predate the primary's failure (a
        // FAILOVER typed right after a crash): give their monitors two
        // rounds to look again before refusing.
        let fresh_by = Instant::now() + self.cfg().monitor_interval() * 2;
        let mut changes = self.topology.subscribe();
        let mut snap = snap;
        while let Some(lost) = snap.lost_primary()
            && let Some(receiving) = self.primary_alive_on_replicas(&snap, lost)
        {
            if Instant::now() >= fresh_by {
                return Err(FailoverError::PrimaryAlive {
                    name: snap.servers[lost].name.to_string(),
                    receiving,
                });
            }
            let until = tokio::time::Instant::from_std(fresh_by);
            let _ = tokio::time::timeout_at(until, changes.changed()).await;
            snap = self.topology.load();
        }
        if snap.primary.is_some() {
            return Err(FailoverError::PrimaryUp);
        }
        let old_primary = snap
            .servers
            .iter()
            .find(|s| s.role == Role::Primary && !s.up)
            .map(|s| s.name.to_string());
        let mut steps = Steps {
            report: Report {
                old_primary: old_primary.clone(),
                ..Report::default()
            },
            last: Instant::now(),
        };
        // Only one instance acts: a lock on a majority of the servers.
        let mut locks: Vec<Conn> = Vec::new();
        for s in snap.servers.iter().filter(|s| s.up) {
            if let Ok(mut c) = connect(&self.cfg(), &s.addr).await {
                let got: Option<Option<i64>> = c
                    .query_first("SELECT GET_LOCK('rwproxy_failover', 0)")
                    .await
                    .ok();
                if got == Some(Some(1)) {
                    locks.push(c);
                } else {
                    let _ = c.disconnect().await;
                }
            }
        }
        let majority = snap.servers.len() / 2 + 1;
        if locks.len() < majority {
            for c in locks {
                let _ = c.disconnect().await;
            }
            return Err(FailoverError::LockHeld);
        }
        steps.done(format!(
            "failover lock on {} of {} servers",
            locks.len(),
            snap.servers.len()
        ));

        // The lock only says nobody is failing over *now*. Another instance
        // may have taken it, promoted a replica and released it between our
        // monitor's last look and our GET_LOCK: our snapshot, still without
        // a primary, is stale. Promoting again would re-promote the new
        // primary and repoint the others (a second failover for one death),
        // or promote a different replica (split brain, losing what the new
        // primary acknowledged meanwhile). The winner holds the lock from
        // before its first change until its candidate is writable, so under
        // the lock the servers tell the truth: if one is a primary again,
        // adopt it instead.
        if let Some((name, promoted_at)) = self.promoted_meanwhile(&snap).await {
            for c in locks {
                let _ = c.disconnect().await;
            }
            info!(primary = %name, promoted_at = %promoted_at, "failover not needed: a primary was already promoted; following it");
            self.adopt(&snap, &name, &promoted_at);
            return Err(FailoverError::AlreadyPromoted(name.to_string()));
        }

        // Candidates: up replicas, not fenced. Stop their IO threads so the
        // received positions stop moving, let the SQL threads apply what
        // they have, then pick the most advanced.
        // A candidate whose IO thread could not be stopped is left out
        // (its position could still move), and the report says so.
        let mut cands: Vec<(usize, Conn, Flavor)> = Vec::new();
        let mut left_out: Vec<String> = Vec::new();
        for (i, s) in snap.servers.iter().enumerate() {
            if !s.up || s.role != Role::Replica || s.fenced.is_some() {
                continue;
            }
            match connect_flavored(&self.cfg(), &s.addr).await {
                Ok((mut c, flavor)) => match c.query_drop(flavor.stop_io_sql()).await {
                    Ok(()) => cands.push((i, c, flavor)),
                    Err(e) => {
                        warn!(server = %s.name, error = %e, "could not stop the IO thread: not a failover candidate");
                        left_out.push(format!("{} (IO thread not stopped: {e})", s.name));
                        let _ = c.disconnect().await;
                    }
                },
                Err(e) => {
                    warn!(server = %s.name, error = %e, "could not connect: not a failover candidate");
                    left_out.push(format!("{} ({e})", s.name));
                }
            }
        }
        if !left_out.is_empty() {
            steps.done(format!("left out: {}", left_out.join("; ")));
        }
        let mut best: Option<(usize, GtidPos)> = None;
        for (i, c, flavor) in cands.iter_mut() {
            let cols = flavor.status_columns();
            // Wait (bounded) for the relay log to be applied.
            let deadline = Instant::now() + Duration::from_millis(f.switchover_timeout_ms);
            let mut pos = String::new();
            while Instant::now() < deadline {
                let rows: Vec<mysql_async::Row> = c
                    .query(flavor.replica_status_sql())
                    .await
                    .unwrap_or_default();
                let state = rows
                    .first()
                    .and_then(|r| r.get_opt::<String, _>(cols.sql_state).and_then(Result::ok))
                    .unwrap_or_default();
                let v: Option<String> =
                    c.query_first(flavor.applied_pos_sql()).await.ok().flatten();
                pos = v.unwrap_or_default();
                if state.contains("has read all relay log") || state.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let g = GtidPos::parse(&pos);
            if best
                .as_ref()
                .is_none_or(|(_, b)| g.progress() > b.progress())
            {
                best = Some((*i, g));
            }
        }
        let Some((cand, pos)) = best else {
            for (_, mut c, flavor) in cands {
                let _ = c.query_drop(flavor.start_io_sql()).await;
            }
            return Err(FailoverError::NoCandidate);
        };
        let cand_view = snap.servers[cand].clone();
        steps.report.new_primary = cand_view.name.to_string();
        steps.done(format!("chose {} at GTID {pos}", cand_view.name));
        let cfg = self.cfg();
        // The candidate first: it must be a (semi-sync) primary before the
        // others connect to it, or they register as asynchronous replicas.
        cands.sort_by_key(|(i, _, _)| *i != cand);
        let mut failed: Vec<String> = Vec::new();
        for (i, c, flavor) in cands.iter_mut() {
            if *i != cand {
                if let Err((sql, e)) =
                    make_replica(c, *flavor, &cfg, &f, &cand_view.addr, false).await
                {
                    warn!(server = %snap.servers[*i].name, error = %e, %sql, "failover step failed");
                    failed.push(snap.servers[*i].name.to_string());
                }
                continue;
            }
            take_semi_sync_master(c, *flavor).await;
            for sql in [
                flavor.stop_replica_sql(),
                flavor.reset_replica_sql(),
                flavor.unfence_sql(),
            ] {
                if let Err(e) = c.query_drop(sql).await {
                    warn!(server = %cand_view.name, error = %e, sql, "failover step failed");
                    return Err(FailoverError::Step {
                        step: "promote candidate",
                        server: cand_view.name.to_string(),
                        error: e.into(),
                        state: "no primary; replicas' IO threads stopped — run FAILOVER again"
                            .into(),
                    });
                }
            }
        }
        steps.done(if failed.is_empty() {
            "promoted and repointed".to_string()
        } else {
            format!("promoted; repointing FAILED on {}", failed.join(", "))
        });
        self.adopt(&snap, &cand_view.name, &pos);
        steps.done("published");
        for (_, c, _) in cands {
            let _ = c.disconnect().await;
        }
        for c in locks {
            let _ = c.disconnect().await;
        }
        self.failovers.fetch_add(1, Ordering::Relaxed);
        info!(new = %cand_view.name, "failover done");
        Ok(steps.report)
    }

    /// Under the failover lock: the server, other than the dead primary,
    /// that is a primary by the monitor's rule (writable, not replicating),
    /// with the position it was promoted at (`@@gtid_slave_pos`: what it had
    /// applied as a replica; its own writes go to `@@gtid_binlog_pos`).
    async fn promoted_meanwhile(&self, snap: &Snapshot) -> Option<(Arc<str>, GtidPos)> {
        let cfg = self.cfg();
        for s in snap.servers.iter() {
            if s.role == Role::Primary && !s.up {
                continue;
            }
            let Ok(mut c) = connect(&cfg, &s.addr).await else {
                continue;
            };
            let seen = match crate::dialect::Flavor::detect(&mut c).await {
                Ok(flavor) => crate::monitor::check(&mut c, flavor, Heartbeat::Off).await,
                Err(e) => Err(e),
            };
            let _ = c.disconnect().await;
            if let Ok(o) = seen
                && !o.read_only
                && !o.is_replica
            {
                return Some((s.name.clone(), o.gtid_slave));
            }
        }
        None
    }

    /// Publishes `primary` as the primary after a failover (ours, or one
    /// another instance did): the dead primary is kept out of routing and
    /// remembered, so that this instance fences it when it comes back,
    /// even if the instance that promoted is gone by then.
    ///
    /// Before publishing, every backend connection to the old primary is
    /// closed ([`crate::backend::Pools::sever`]): a statement in flight on
    /// a primary that only hung would otherwise be acknowledged when it
    /// resumes, after the promotion, and be missing on the new primary.
    fn adopt(&self, snap: &Snapshot, primary: &Arc<str>, promoted_at: &GtidPos) {
        for s in snap
            .servers
            .iter()
            .filter(|s| s.role == Role::Primary && !s.up && s.name != *primary)
        {
            self.remember_demoted(&s.name, promoted_at);
            if let Some(pools) = &self.pools {
                let idle = pools.sever(&s.name);
                info!(server = %s.name, idle_closed = idle, "closed every connection to the demoted primary");
            }
        }
        self.topology.update(|s| {
            for v in s.servers.iter_mut() {
                if v.name == *primary {
                    v.role = Role::Primary;
                    v.read_only = Some(false);
                    v.replication = Replication::None;
                    v.lag = Some(Duration::ZERO);
                    v.demoted = false;
                } else if v.role == Role::Primary {
                    // The dead primary: keep it out until it is fenced.
                    v.role = Role::Replica;
                    v.demoted = true;
                }
            }
            crate::monitor::derive_primary(s);
            s.primary = s.find(primary);
        });
    }

    fn remember_demoted(&self, name: &Arc<str>, promoted_at: &GtidPos) {
        if let Ok(mut d) = self.demoted.lock() {
            d.retain(|(n, _)| n != name);
            d.push((name.clone(), promoted_at.clone()));
        }
    }

    /// Fences old primaries that claim to be primary again (back from the
    /// dead, or demoted by another instance's failover): `read_only = 1` at
    /// once, then, with `auto_rejoin`, made a replica of the current
    /// primary if its GTID history is contained in the primary's;
    /// otherwise kept out.
    ///
    /// Strays are (a) servers this instance demoted, and (b) while two or
    /// more servers are writable and not replicating (no primary is
    /// published then), those the replicas do not follow, when the
    /// replicas follow exactly one of them: which server is primary is what
    /// the servers say, so an instance that did not do the failover (and
    /// never saw the old primary die) still converges on the promoted one.
    pub async fn fence_strays(&self) {
        let snap = self.topology.load();
        let Some(p_idx) = snap.primary.or_else(|| followed_primary(&snap)) else {
            return;
        };
        let p = &snap.servers[p_idx];
        let cfg = self.cfg();
        let rejoin = cfg.failover.as_ref().is_some_and(|f| f.auto_rejoin);
        for (i, s) in snap.servers.iter().enumerate() {
            if i == p_idx || !s.up || s.role != Role::Primary || s.fenced.is_some() {
                continue;
            }
            // Only a server known to have been primary before (ours), or
            // one the replicas do not follow in a conflict; never one that
            // shares the current primary's address.
            let promoted_at = self
                .demoted
                .lock()
                .ok()
                .and_then(|d| d.iter().find(|(n, _)| n == &s.name).map(|(_, g)| g.clone()));
            let unfollowed = snap.primary.is_none() && snap.conflict.contains(&i);
            if (promoted_at.is_none() && !unfollowed) || s.addr == p.addr {
                continue;
            }
            let Ok((mut c, flavor)) = connect_flavored(&self.cfg(), &s.addr).await else {
                continue;
            };
            // Bounded: `SET GLOBAL read_only = 1` waits for commits in
            // progress, and a resumed primary may have commits that wait
            // for a semi-sync acknowledgement nobody will send. It stays
            // out of routing meanwhile (`demoted` / conflict).
            match tokio::time::timeout(
                cfg.connect_timeout().max(Duration::from_secs(2)),
                fence(&mut c, flavor),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(server = %s.name, error = %e, "could not fence stray primary");
                    continue;
                }
                Err(_) => {
                    warn!(server = %s.name, "fencing stray primary timed out (commits in progress there); kept out of routing, retrying");
                    continue;
                }
            }
            warn!(server = %s.name, primary = %p.name, sql = flavor.fence_sql(), "fenced a stray primary");
            // Sequence numbers alone cannot tell: the new primary continues
            // the same domain's numbering with its own server id. What the
            // old primary wrote must not go past where the new one was
            // promoted. Without that position (another instance promoted),
            // it is kept out for the operator to inspect.
            let why = match &promoted_at {
                Some(at) if at.covers(&s.gtid_binlog) => None,
                Some(at) => Some(format!(
                    "GTID history diverged: it has {} but {} was promoted at {}",
                    s.gtid_binlog, p.name, at
                )),
                None => Some(format!(
                    "stray primary: writable while the replicas follow {}",
                    p.name
                )),
            };
            let name = s.name.clone();
            if let Some(why) = why {
                warn!(server = %name, reason = %why, "kept out of the topology");
                self.topology.update(|snap| {
                    if let Some(v) = snap.servers.iter_mut().find(|v| v.name == name) {
                        v.fenced = Some(why.clone());
                        v.role = Role::Replica;
                    }
                    crate::monitor::derive_primary(snap);
                });
            } else if rejoin && let Some(f) = &cfg.failover {
                drop_semi_sync_master(&mut c, flavor).await;
                match make_replica(&mut c, flavor, &cfg, f, &p.addr, true).await {
                    Ok(()) => {
                        info!(server = %name, primary = %p.name, "old primary rejoined as replica")
                    }
                    Err((sql, e)) => warn!(server = %name, error = %e, %sql, "rejoin failed"),
                }
            }
            let _ = c.disconnect().await;
        }
    }

    /// Logs (once per change) that the primary is unreachable from rwproxy
    /// while replicas still receive from it.
    fn report_unreachable(&self, alive: Option<(&str, usize)>) {
        let was = self
            .unreachable_reported
            .swap(alive.is_some(), Ordering::Relaxed);
        match alive {
            Some((name, receiving)) if !was => warn!(
                primary = %name,
                receiving,
                "primary unreachable from rwproxy, but replicas still receive from it: not failing over (writes fail until the link heals)"
            ),
            None if was => info!("primary reachable again (or dead by the replicas' account)"),
            _ => {}
        }
    }

    /// Background duty: fence strays and, with `auto_failover`, fail over
    /// once the primary missed `failover_after` checks *and* no replica
    /// received from it within `primary_failure_timeout`.
    pub async fn watch(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let leading = tokio::spawn(self.clone().lead(shutdown.clone()));
        loop {
            let cfg = self.cfg();
            let interval = cfg.monitor_interval();
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => break,
            }
            self.fence_strays().await;
            let snap = self.topology.load();
            let lost = snap.lost_primary();
            let alive = lost.and_then(|i| {
                let ev = snap.primary_evidence(i, cfg.primary_failure_timeout());
                (ev.receiving > 0).then(|| (&*snap.servers[i].name, ev.receiving))
            });
            self.report_unreachable(alive);
            let Some(f) = cfg.failover.as_ref() else {
                continue;
            };
            if !f.auto_failover {
                continue;
            }
            // Only the leader promotes; the others follow what the servers
            // then say.
            let dead = self.is_leader()
                && snap.primary.is_none()
                && snap.conflict.is_empty()
                && lost.is_some_and(|i| snap.servers[i].failures >= f.failover_after)
                && (alive.is_none() || !f.verify_primary_failure);
            if dead {
                match self.failover().await {
                    Ok(r) => info!(new = %r.new_primary, "automatic failover done"),
                    Err(FailoverError::LockHeld) => {
                        info!("another rwproxy instance is failing over; following it")
                    }
                    Err(e @ FailoverError::AlreadyPromoted(_)) => info!(%e, "no failover needed"),
                    Err(e) => warn!(error = %e, "automatic failover failed"),
                }
            }
        }
        let _ = leading.await;
    }
}

/// Semi-sync follows the primary role: a promoted replica that runs as a
/// semi-sync replica (`rpl_semi_sync_slave_enabled`) becomes a semi-sync
/// primary, so "no acknowledged write lost" still holds after the
/// promotion. Replicas do not run the master side: with
/// `rpl_semi_sync_master_wait_no_slave = ON` a replica's SQL thread would
/// wait for an acknowledgement nobody sends. Best effort (servers without
/// semi-sync are left alone).
async fn take_semi_sync_master(c: &mut Conn, flavor: Flavor) {
    let (replica_var, source_var) = flavor.semi_sync_vars();
    let replica: Option<Option<i64>> = c
        .query_first(format!("SELECT @@GLOBAL.{replica_var}"))
        .await
        .ok();
    if replica == Some(Some(1)) {
        match c.query_drop(format!("SET GLOBAL {source_var} = 1")).await {
            Ok(()) => info!("semi-sync primary side enabled on the promoted server"),
            Err(e) => warn!(error = %e, "could not enable semi-sync on the promoted server"),
        }
    }
}

/// The other half of [`take_semi_sync_master`], for a server that becomes
/// a replica. On MySQL as on MariaDB a replica left with the source side on
/// (and `wait_no_replica`) stalls its applier waiting for acknowledgements
/// nobody sends (tests/failover_safety.rs
/// `mysql_frozen_primary_with_semi_sync_…`: the rejoined old primary
/// applied nothing).
async fn drop_semi_sync_master(c: &mut Conn, flavor: Flavor) {
    let (_, source_var) = flavor.semi_sync_vars();
    let source: Option<Option<i64>> = c
        .query_first(format!("SELECT @@GLOBAL.{source_var}"))
        .await
        .ok();
    if source == Some(Some(1)) {
        let _ = c.query_drop(format!("SET GLOBAL {source_var} = 0")).await;
    }
}

/// In a conflict (two or more writable, non-replicating servers), the one
/// the up replicas follow (`Master_Server_Id`), if they all follow exactly
/// one of them.
fn followed_primary(snap: &Snapshot) -> Option<usize> {
    if snap.conflict.len() < 2 {
        return None;
    }
    let mut followed: Vec<usize> = Vec::new();
    for s in snap
        .servers
        .iter()
        .filter(|s| s.up && s.role == Role::Replica)
    {
        let Some(src) = s.feed.as_ref().and_then(|f| f.source_id) else {
            continue;
        };
        if let Some(i) = snap
            .conflict
            .iter()
            .copied()
            .find(|&i| snap.servers[i].server_id == Some(src))
            && !followed.contains(&i)
        {
            followed.push(i);
        }
    }
    match followed.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

async fn repoint(
    config: &Config,
    f: &FailoverConfig,
    addr: &str,
    primary_addr: &str,
) -> Result<(), ServerOpError> {
    let (mut c, flavor) = connect_flavored(config, addr).await?;
    let r = make_replica(&mut c, flavor, config, f, primary_addr, false).await;
    let _ = c.disconnect().await;
    r.map_err(|(_, e)| e)
}
