//! The application: everything the proxy's parts share ([`Shared`]: the
//! configuration in force, pools, topology, accounts, failover, metrics,
//! rules), how it is built from a configuration, and RELOAD. Sessions, the
//! admin port and the listener depend on this module; it depends on none
//! of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::accounts::{Accounts, ClientAddr};
use crate::backend::Pools;
use crate::backend::tls::ServerTls;
use crate::config::{Config, ConfigError};
use crate::failover::Failover;
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::protocol::packet::PacketStream;
use crate::protocol::supported_capabilities;
use crate::router::digest::DigestStore;
use crate::router::rules::RuleSet;
use crate::topology::{Snapshot, Topology};
use tokio::net::TcpStream;

/// What rwproxy announces to clients in its greeting.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub version: String,
    pub caps: CapabilityFlags,
    /// MariaDB extended capabilities (the metadata cache, when the servers
    /// offer it).
    pub ext: MariadbCapabilities,
    pub collation: u8,
}

/// Everything sessions share. Passed as an `Arc`, never a global.
pub struct Shared {
    /// The configuration in force; RELOAD swaps it. A session reads it once
    /// at its start and finishes on that snapshot.
    pub config: Arc<ArcSwap<Config>>,
    /// Where the configuration was read from (for RELOAD / SIGHUP).
    pub config_path: Option<std::path::PathBuf>,
    pub accounts: Arc<Accounts>,
    pub topology: Arc<Topology>,
    pub pools: Arc<Pools>,
    pub greeting: Greeting,
    /// Round-robin counter shared by all sessions, so reads spread evenly.
    pub read_ticket: AtomicU64,
    pub next_conn_id: AtomicU32,
    pub shutdown: CancellationToken,
    /// Promotion engine; its write gate holds writes during a switchover.
    pub failover: Arc<Failover>,
    /// Open sessions, for the admin's SHOW SESSIONS.
    pub sessions: Mutex<HashMap<u32, SessionInfo>>,
    pub metrics: Arc<Metrics>,
    /// TLS for clients, when `tls_cert`/`tls_key` are configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Per-digest statement statistics (bounded).
    pub digests: Arc<DigestStore>,
    /// Query rules compiled from the configuration. Unlike the rest of the
    /// config, RELOAD applies them to open sessions at their next statement:
    /// a firewall rule added in an emergency must reach long-lived pooled
    /// connections too.
    pub rules: ArcSwap<RuleSet>,
    /// The stored functions known to only read (refreshed on demand by
    /// its own service, see [`crate::catalog`]).
    pub catalog: Arc<crate::catalog::Catalog>,
    /// The running monitor and its cancellation token (RELOAD restarts it).
    pub monitor: tokio::sync::Mutex<Option<(CancellationToken, crate::monitor::Monitor)>>,
    /// The primary's executed position for `consistency = "global"` reads
    /// (single flight; idle and lock-free for the other modes).
    pub primary_pos: crate::primary_pos::PrimaryPos,
}

/// What the admin port shows about a session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: String,
    /// The client's address (`localhost` for Unix-socket clients).
    pub peer: ClientAddr,
    pub since: std::time::SystemTime,
    pub schema: Option<String>,
    /// How `KILL` from another session reaches this one.
    pub control: SessionControl,
}

/// The handles `KILL [QUERY | CONNECTION] id` (and `COM_PROCESS_KILL`)
/// from any session use to reach session `id`. The killer only signals;
/// the killed session stops its own backend work (see
/// `session::kill`), so a backend thread id never leaves the session that
/// owns the connection and no other connection can ever be hit.
#[derive(Debug, Clone)]
pub struct SessionControl {
    /// Bumped by every KILL: the statement the session runs now (if any)
    /// is stopped on whichever server runs it.
    pub kill_query: Arc<tokio::sync::watch::Sender<u64>>,
    /// Cancelled by `KILL [CONNECTION]`: the session ends.
    pub killed: CancellationToken,
}

impl Default for SessionControl {
    fn default() -> Self {
        SessionControl {
            kill_query: Arc::new(tokio::sync::watch::Sender::new(0)),
            killed: CancellationToken::new(),
        }
    }
}

impl SessionControl {
    /// `KILL QUERY`: stop the running statement.
    pub fn kill_query(&self) {
        self.kill_query.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// `KILL [CONNECTION]`: end the session (and its running statement).
    pub fn kill_connection(&self) {
        self.killed.cancel();
        self.kill_query();
    }
}

/// Why RELOAD left the configuration as it was.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("rwproxy was started without a configuration file")]
    NoFile,
    #[error("configuration rejected, old one stays in force: {0}")]
    Rejected(#[source] ConfigError),
}

/// A version string for clients when no server answered at start-up.
const FALLBACK_VERSION: &str = "5.5.5-10.11.0-MariaDB-rwproxy";

/// Learns what to announce to clients from the first server that answers:
/// its version string, capabilities and default collation. Only the
/// greeting is read; no login is needed.
async fn probe_greeting(config: &Config) -> Greeting {
    let mut order: Vec<_> = config.servers.iter().collect();
    order.sort_by_key(|s| s.role != crate::config::Role::Primary);
    for s in order {
        let addr = s.address();
        let probe = async {
            let tcp = TcpStream::connect(&addr).await.ok()?;
            let mut ps = PacketStream::new(tcp);
            let p = ps.read_packet(64 * 1024, Some(0)).await.ok()?;
            let hs = crate::protocol::handshake::parse_greeting(&p.payload).ok()?;
            Some(Greeting {
                version: config
                    .server_version
                    .clone()
                    .unwrap_or_else(|| hs.server_version_str().into_owned()),
                caps: hs.capabilities() & supported_capabilities(),
                ext: crate::protocol::handshake::mariadb_ext(
                    hs.capabilities(),
                    hs.mariadb_ext_capabilities(),
                ) & crate::protocol::supported_ext(),
                collation: hs.default_collation(),
            })
        };
        if let Ok(Some(g)) = tokio::time::timeout(config.connect_timeout(), probe).await {
            return g;
        }
        warn!(server = %s.name, "could not read greeting at start-up");
    }
    Greeting {
        version: config
            .server_version
            .clone()
            .unwrap_or_else(|| FALLBACK_VERSION.to_string()),
        caps: supported_capabilities() - CapabilityFlags::CLIENT_DEPRECATE_EOF,
        ext: Default::default(),
        collation: 45,
    }
}

/// Builds the shared state for a configuration.
pub async fn build_shared(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
) -> Result<Arc<Shared>, ConfigError> {
    let greeting = probe_greeting(&config).await;
    let topology = Arc::new(Topology::new(Snapshot::from_config(&config)));
    let pools = Arc::new(Pools::new(crate::backend::PoolLimits {
        max_idle: config.pool_max_idle,
        ping_after: config.pool_ping_after(),
        connect_timeout: config.connect_timeout(),
        max_per_server: config.pool_max_per_server,
        wait_timeout: Duration::from_millis(config.pool_wait_timeout_ms),
        read_timeout: config.backend_read_timeout(),
    }));
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => match crate::protocol::stream::acceptor(c, k) {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(error = %e, "TLS disabled: could not load certificate");
                None
            }
        },
        _ => None,
    };
    let digests = Arc::new(crate::router::digest::DigestStore::new(
        config.digest_capacity,
    ));
    let rules = RuleSet::compile(&config.rules)?;
    let config = Arc::new(ArcSwap::from_pointee(config));
    let primary_pos = crate::primary_pos::PrimaryPos::new(config.clone(), topology.clone());
    let failover =
        Arc::new(Failover::new(config.clone(), topology.clone()).with_pools(pools.clone()));
    let accounts =
        Arc::new(Accounts::new(config.clone(), topology.clone()).with_pools(pools.clone()));
    if config.load().auth == crate::config::AuthMode::Servers {
        // Load accounts before the first client arrives (the refresher
        // keeps them fresh afterwards).
        if let Err(e) = accounts.refresh().await {
            warn!(error = %e, "could not load server accounts at start-up");
        }
    }
    let catalog = Arc::new(crate::catalog::Catalog::new(
        config.clone(),
        topology.clone(),
    ));
    Ok(Arc::new(Shared {
        accounts,
        catalog,
        config,
        config_path,
        monitor: Default::default(),
        primary_pos,
        failover,
        sessions: Default::default(),
        metrics: Default::default(),
        digests,
        rules: ArcSwap::from_pointee(rules),
        tls,
        topology,
        pools,
        greeting,
        read_ticket: AtomicU64::new(0),
        next_conn_id: AtomicU32::new(1),
        shutdown,
    }))
}

/// Starts the monitor for the current configuration (with its own token,
/// a child of the shutdown token, so RELOAD can restart it).
pub(crate) async fn start_monitor(shared: &Arc<Shared>) {
    let token = shared.shutdown.child_token();
    let m = Monitor::start(
        shared.config.load_full(),
        shared.topology.clone(),
        token.clone(),
    )
    .await;
    *shared.monitor.lock().await = Some((token, m));
}

pub(crate) async fn stop_monitor(shared: &Arc<Shared>) {
    if let Some((token, m)) = shared.monitor.lock().await.take() {
        token.cancel();
        m.join().await;
    }
}

/// Re-reads the configuration file. An invalid file is rejected with its
/// error and the configuration in force stays. A valid one applies to new
/// sessions (users, passwords, limits, routing policy) and to the topology
/// (servers added or removed, weights, lag limits); open sessions finish on
/// the configuration they started with. Listen addresses need a restart.
pub async fn reload(shared: &Arc<Shared>) -> Result<String, ReloadError> {
    let path = shared.config_path.clone().ok_or(ReloadError::NoFile)?;
    let new = Config::load(&path).map_err(ReloadError::Rejected)?;
    let mut rules = RuleSet::compile(&new.rules).map_err(ReloadError::Rejected)?;
    let server_tls = ServerTls::from_config(&new).map_err(ReloadError::Rejected)?;
    let old = shared.config.load_full();
    let mut notes = Vec::new();
    if new.listen != old.listen
        || new.listen_socket != old.listen_socket
        || new.listen_socket_mode != old.listen_socket_mode
        || new.listen_socket_owner != old.listen_socket_owner
        || new.listen_socket_group != old.listen_socket_group
        || new.http_listen != old.http_listen
        || new.admin.as_ref().map(|a| &a.listen) != old.admin.as_ref().map(|a| &a.listen)
    {
        notes.push("listen addresses change only on restart");
    }
    stop_monitor(shared).await;
    let next = Snapshot::from_config(&new);
    shared.topology.update(|snap| {
        let mut merged = next.clone();
        for s in merged.servers.iter_mut() {
            // Keep what the monitor observed (and the counters) for servers
            // that stay at the same address; configured facts come from the
            // new file.
            if let Some(o) = snap
                .servers
                .iter()
                .find(|o| o.name == s.name && o.addr == s.addr)
            {
                s.keep_observed(o);
                if o.admin != crate::topology::AdminState::Online
                    && s.admin == crate::topology::AdminState::Online
                {
                    s.admin = o.admin;
                }
            }
        }
        let old_primary = snap.primary_view().map(|p| p.name.clone());
        merged.primary = old_primary.and_then(|n| merged.find(&n)).or(merged.primary);
        *snap = merged;
    });
    let servers = new.servers.len();
    shared.pools.set_server_tls(server_tls);
    shared.config.store(Arc::new(new));
    rules.inherit_hits(&shared.rules.load());
    shared.rules.store(Arc::new(rules));
    start_monitor(shared).await;
    let msg = format!(
        "configuration reloaded from {} ({servers} servers){}",
        path.display(),
        if notes.is_empty() {
            String::new()
        } else {
            format!("; note: {}", notes.join("; "))
        }
    );
    info!(%msg, "reload");
    Ok(msg)
}

pub(crate) async fn reload_on_sighup(shared: Arc<Shared>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        if let Err(e) = reload(&shared).await {
            warn!(error = %e, "SIGHUP reload failed");
        }
    }
}

/// Closes pooled backend connections nobody has used for
/// `pool_idle_timeout_ms` (read every round, so RELOAD changes it).
///
/// Why a short default (5 s) rather than pgbouncer's ten minutes: a MySQL
/// login on a LAN costs about a millisecond (the server's thread cache makes
/// it cheap), while every idle pooled connection is a server thread that
/// shows in `Threads_connected` and `SHOW PROCESSLIST` and counts against
/// `max_connections`. With a short timeout the servers' connection counts
/// follow the clients within seconds, as they would without rwproxy:
/// monitoring that watches them, and tests that wait for them (MariaDB's
/// own `wait_until_count_sessions.inc`), see what they expect. Clients that
/// connect and disconnect more often than that still reuse connections, and
/// a steady load keeps its connections busy, never idle.
pub async fn close_idle_pooled(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let unused = Duration::from_millis(shared.config.load().pool_idle_timeout_ms);
        let tick = if unused.is_zero() {
            Duration::from_secs(1)
        } else {
            (unused / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        if !unused.is_zero() {
            let n = shared.pools.close_unused(unused);
            if n > 0 {
                tracing::debug!(closed = n, "closed pooled connections nobody used");
            }
        }
    }
}
