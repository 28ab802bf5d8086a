//! The listener and the one entry point, [`run`], that both `main` and the
//! integration tests call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::accounts::{Accounts, ClientAddr};
use crate::backend::Pools;
use crate::backend::tls::ServerTls;
use crate::config::Config;
use crate::failover::Failover;
use crate::monitor::Monitor;
use crate::protocol::packet::PacketStream;
use crate::protocol::stream::MaybeTls;
use crate::protocol::{ClientError, supported_capabilities};
use crate::router::rules::RuleSet;
use crate::session::{self, Greeting, Shared};
use crate::topology::{Snapshot, Topology};
use arc_swap::ArcSwap;

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen: {0}")]
    Listen(#[source] std::io::Error),
    /// `listen_socket` cannot be served.
    #[error("listen_socket {path}: {reason}")]
    Socket {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The configuration cannot be put in force (e.g. an unreadable
    /// `server_tls_ca`).
    #[error("{0}")]
    Config(#[source] crate::config::ConfigError),
    #[error("cannot start session threads: {0}")]
    Threads(#[source] std::io::Error),
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
) -> Arc<Shared> {
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
    // The config was validated, so its rules compile.
    let rules = RuleSet::compile(&config.rules).unwrap_or_else(|e| {
        warn!(error = %e, "query rules disabled");
        RuleSet::default()
    });
    let config = Arc::new(ArcSwap::from_pointee(config));
    let failover =
        Arc::new(Failover::new(config.clone(), topology.clone()).with_pools(pools.clone()));
    let accounts = Arc::new(Accounts::new(config.clone(), topology.clone()));
    if config.load().auth == crate::config::AuthMode::Servers {
        // Load accounts before the first client arrives (the refresher
        // keeps them fresh afterwards).
        if let Err(e) = accounts.refresh().await {
            warn!(error = %e, "could not load server accounts at start-up");
        }
    }
    Arc::new(Shared {
        accounts,
        config,
        config_path,
        monitor: Default::default(),
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
    })
}

thread_local! {
    static HOME: std::cell::Cell<u16> = const { std::cell::Cell::new(0) };
}

/// The session thread this code runs on (0 outside [`Workers`]).
pub fn home() -> u16 {
    HOME.with(|h| h.get())
}

/// Session threads, one single-threaded tokio runtime each, with its own
/// I/O driver (epoll) and timers, as HAProxy runs one event loop per
/// thread. A client connection is handed to one of them (round-robin) and
/// lives there with the backend connections it borrows, which the pools
/// keep per thread (`PoolKey::home`).
///
/// Why not tokio's multi-thread scheduler: with two cores shared with the
/// servers and the clients, its workers hand tasks to each other — a
/// parked worker is woken (futex) for work the other has often already
/// taken — and the machine sat idle ~6 µs per statement waiting on those
/// hand-offs (`benches/load.sh`: idle µs per statement), against ~1.6 µs
/// through HAProxy.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` session threads (at least one).
    fn start(n: usize) -> std::io::Result<Workers> {
        let mut w = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            w.stops.push(stop);
            let home = u16::try_from(i + 1).unwrap_or(u16::MAX);
            w.threads.push(
                std::thread::Builder::new()
                    .name(format!("rwproxy-worker-{i}"))
                    .spawn(move || {
                        HOME.with(|h| h.set(home));
                        rt.block_on(async {
                            // A timer always due within a second. tokio wakes
                            // its own event loop (an eventfd write and an
                            // extra epoll_wait) whenever a new timer is due
                            // before every other one; on a thread whose
                            // sessions have no timer running, that was each
                            // new session's handshake timeout — two
                            // syscalls per connection. With this one armed,
                            // session timers (seconds long) never come first.
                            let anchor = async {
                                loop {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            };
                            tokio::select! {
                                _ = stopped => {}
                                _ = anchor => {}
                            }
                        });
                    })?,
            );
        }
        Ok(w)
    }

    /// The session thread for the `i`-th connection (round-robin).
    fn pick(&self, i: usize) -> &tokio::runtime::Handle {
        &self.handles[i % self.handles.len()]
    }

    /// Stops the threads; sessions still on them are dropped.
    fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The sockets rwproxy serves on.
pub struct Listeners {
    /// Client traffic (MySQL protocol).
    pub proxy: TcpListener,
    /// Client traffic on a Unix socket (`listen_socket`); `None` without it.
    pub unix: Option<UnixSocket>,
    /// Admin port (MySQL protocol); `None` disables it.
    pub admin: Option<TcpListener>,
    /// HTTP endpoint (/metrics, /health, /status); `None` disables it.
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the configuration names.
    pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let proxy = TcpListener::bind(&config.listen)
            .await
            .map_err(ServerError::Listen)?;
        let admin = match &config.admin {
            Some(a) => Some(
                TcpListener::bind(&a.listen)
                    .await
                    .map_err(ServerError::Listen)?,
            ),
            None => None,
        };
        let http = if config.http_listen.is_empty() {
            None
        } else {
            Some(
                TcpListener::bind(&config.http_listen)
                    .await
                    .map_err(ServerError::Listen)?,
            )
        };
        let unix = match &config.listen_socket {
            Some(_) => Some(UnixSocket::bind(config)?),
            None => None,
        };
        Ok(Listeners {
            proxy,
            unix,
            admin,
            http,
        })
    }
}

/// The Unix socket listener and the file it owns: removed when the proxy
/// stops ([`run`]).
pub struct UnixSocket {
    listener: UnixListener,
    path: std::path::PathBuf,
    /// The file's inode as bound: only that file is removed at the end.
    ino: Option<u64>,
}

impl UnixSocket {
    /// Binds `listen_socket` and applies its mode, owner and group. A file
    /// already there is taken over only when it is a stale socket (nobody
    /// answers on it); a live server's socket, or anything that is not a
    /// socket, is refused. Must run inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<UnixSocket, ServerError> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let Some(path) = config.listen_socket.clone() else {
            return Err(ServerError::Socket {
                path: Default::default(),
                reason: "not configured".into(),
            });
        };
        let fail = |reason: String| ServerError::Socket {
            path: path.clone(),
            reason,
        };
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(fail(
                    "a file that is not a socket is in the way; not removing it".into(),
                ));
            }
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(_) => {
                    return Err(fail(
                        "another server is listening on it (is rwproxy already running?)".into(),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // Left behind by a process that died: take it over.
                    warn!(path = %path.display(), "removing stale socket file");
                    std::fs::remove_file(&path)
                        .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
                }
                Err(e) => return Err(fail(format!("cannot tell whether it is in use: {e}"))),
            }
        }
        let listener = UnixListener::bind(&path).map_err(|e| fail(e.to_string()))?;
        // From here on the file is ours: remove it if it cannot be set up.
        let ino = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let socket = UnixSocket {
            listener,
            path: path.clone(),
            ino,
        };
        let setup = || -> Result<(), String> {
            let owner = config
                .listen_socket_owner
                .as_deref()
                .map(resolve_user)
                .transpose()?;
            let group = config
                .listen_socket_group
                .as_deref()
                .map(resolve_group)
                .transpose()?;
            if owner.is_some() || group.is_some() {
                std::os::unix::fs::chown(&socket.path, owner, group)
                    .map_err(|e| format!("cannot change owner/group: {e}"))?;
            }
            if let Some(mode) = config.socket_mode().map_err(|e| e.to_string())? {
                std::fs::set_permissions(&socket.path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("cannot set mode {mode:o}: {e}"))?;
            }
            Ok(())
        };
        if let Err(reason) = setup() {
            socket.remove();
            return Err(fail(reason));
        }
        Ok(socket)
    }

    /// The socket's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Removes the socket file, if it is still the one bound here (another
    /// instance may have taken a path it judged stale over).
    fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if Some(m.ino()) == self.ino => {}
            _ => return,
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), error = %e, "could not remove socket file");
        }
    }
}

/// A user name or numeric uid.
fn resolve_user(v: &str) -> Result<u32, String> {
    if let Ok(uid) = v.trim().parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(v.trim()) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("listen_socket_owner: no user named {v:?}")),
        Err(e) => Err(format!("listen_socket_owner {v:?}: {e}")),
    }
}

/// A group name or numeric gid.
fn resolve_group(v: &str) -> Result<u32, String> {
    if let Ok(gid) = v.trim().parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(v.trim()) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("listen_socket_group: no group named {v:?}")),
        Err(e) => Err(format!("listen_socket_group {v:?}: {e}")),
    }
}

/// Serves clients until `shutdown` is cancelled, then waits (up to a grace
/// period) for sessions to finish their current statement or transaction.
/// `config_path` enables RELOAD and SIGHUP.
///
/// Client sessions run on their own session threads ([`Workers`],
/// `worker_threads` of them); the caller's runtime keeps the accept loop,
/// the monitor, the admin port and the HTTP endpoint.
pub async fn run(
    listeners: Listeners,
    config: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let threads = if config.worker_threads > 0 {
        config.worker_threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let workers = Workers::start(threads).map_err(ServerError::Threads)?;
    let r = run_with(listeners, config, config_path, shutdown, &workers).await;
    // Joining blocks: off this runtime's thread.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    r
}

async fn run_with(
    listeners: Listeners,
    config: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
    workers: &Workers,
) -> Result<(), ServerError> {
    let listener = listeners.proxy;
    let unix = listeners.unix;
    // Built before anything connects: a server_tls setting that cannot be
    // honoured stops the start rather than degrading to plaintext.
    let server_tls = match ServerTls::from_config(&config) {
        Ok(t) => t,
        Err(e) => {
            if let Some(u) = unix {
                u.remove();
            }
            return Err(ServerError::Config(e));
        }
    };
    let shared = build_shared(config, config_path, shutdown.clone()).await;
    shared.pools.set_server_tls(server_tls);
    start_monitor(&shared).await;
    let hup = tokio::spawn(reload_on_sighup(shared.clone()));
    let watcher = tokio::spawn(shared.failover.clone().watch(shutdown.clone()));
    let refresher = tokio::spawn(shared.accounts.clone().refresher(shutdown.clone()));
    let admin = listeners
        .admin
        .map(|l| tokio::spawn(crate::admin::serve(l, shared.clone())));
    let http = listeners
        .http
        .map(|l| tokio::spawn(crate::admin::http::serve(l, shared.clone())));
    let grace = Duration::from_millis(shared.config.load().shutdown_timeout_ms);
    let r = serve(listener, unix, shared.clone(), grace, workers).await;
    if let Some(h) = http {
        h.abort();
    }
    hup.abort();
    stop_monitor(&shared).await;
    let _ = watcher.await;
    let _ = refresher.await;
    if let Some(a) = admin {
        a.abort();
    }
    r
}

/// Client sessions open, counted by the sessions themselves, so that one
/// ending wakes nobody: a `JoinSet` on the accept loop would cost a
/// cross-thread wake-up of the accept thread per connection, which short
/// connect/query/close clients pay for. Only a shutdown drain waits on
/// [`OpenSessions::drained`].
#[derive(Default)]
struct OpenSessions {
    n: std::sync::atomic::AtomicUsize,
    drained: tokio::sync::Notify,
}

/// Held by a session task; counts it out when the task ends or is dropped.
struct OpenGuard(Arc<OpenSessions>);

impl OpenSessions {
    fn enter(self: &Arc<Self>) -> OpenGuard {
        self.n.fetch_add(1, Ordering::AcqRel);
        OpenGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }

    async fn all_closed(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// The accept loop over an already-built [`Shared`]: each client connection
/// goes to the next session thread. Sessions still open when the grace
/// period ends are closed when their threads stop (see [`run`]).
async fn serve(
    listener: TcpListener,
    unix: Option<UnixSocket>,
    shared: Arc<Shared>,
    grace: Duration,
    workers: &Workers,
) -> Result<(), ServerError> {
    let mut next_worker = 0usize;
    let local = listener.local_addr().map_err(ServerError::Listen)?;
    info!(%local, version = %shared.greeting.version, "rwproxy listening");
    if let Some(u) = &unix {
        info!(path = %u.path.display(), "rwproxy listening on a Unix socket");
    }
    let open = Arc::new(OpenSessions::default());
    let shutdown = shared.shutdown.clone();
    // Hands a client to the next session thread, or refuses it when the
    // proxy is full.
    let mut dispatch = |client: Client| {
        if open.count() >= shared.config.load().max_client_connections {
            // Refuse cheaply, before any handshake work.
            let e = ClientError::new(1040, b"08004", "Too many connections");
            match client {
                Client::Tcp(s, peer) => tokio::spawn(session::refuse(s, peer.into(), e)),
                Client::Unix(s) => tokio::spawn(session::refuse(s, ClientAddr::Local, e)),
            };
            return;
        }
        let guard = open.enter();
        let shared = shared.clone();
        let worker = workers.pick(next_worker);
        next_worker = next_worker.wrapping_add(1);
        // Handed over as a plain socket and registered with the session
        // thread's own I/O driver there.
        match client {
            Client::Tcp(stream, peer) => {
                let Ok(std) = stream.into_std() else { return };
                worker.spawn(async move {
                    if let Ok(stream) = TcpStream::from_std(std) {
                        session::serve(shared, MaybeTls::Plain(stream), peer.into()).await;
                    }
                    drop(guard);
                });
            }
            Client::Unix(stream) => {
                let Ok(std) = stream.into_std() else { return };
                worker.spawn(async move {
                    if let Ok(stream) = tokio::net::UnixStream::from_std(std) {
                        session::serve(shared, stream, ClientAddr::Local).await;
                    }
                    drop(guard);
                });
            }
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    dispatch(Client::Tcp(stream, peer));
                }
                Err(e) => {
                    // EMFILE and friends: log, back off briefly, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            accepted = accept_unix(unix.as_ref()) => match accepted {
                Ok(stream) => dispatch(Client::Unix(stream)),
                Err(e) => {
                    warn!(error = %e, "accept failed on the Unix socket");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => break,
        }
    }
    if let Some(u) = unix {
        // No new clients from here; open ones keep their connections.
        u.remove();
    }
    drop(listener);
    info!(open = open.count(), "shutting down: draining sessions");
    if tokio::time::timeout(grace, open.all_closed())
        .await
        .is_err()
    {
        warn!(
            open = open.count(),
            "grace period over; closing remaining sessions"
        );
    }
    Ok(())
}

/// A client connection just accepted.
enum Client {
    Tcp(TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

/// The next client on the Unix socket; never ready without one.
async fn accept_unix(unix: Option<&UnixSocket>) -> std::io::Result<tokio::net::UnixStream> {
    match unix {
        Some(u) => u.listener.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Starts the monitor for the current configuration (with its own token,
/// a child of the shutdown token, so RELOAD can restart it).
async fn start_monitor(shared: &Arc<Shared>) {
    let token = shared.shutdown.child_token();
    let m = Monitor::start(
        shared.config.load_full(),
        shared.topology.clone(),
        token.clone(),
    )
    .await;
    *shared.monitor.lock().await = Some((token, m));
}

async fn stop_monitor(shared: &Arc<Shared>) {
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
pub async fn reload(shared: &Arc<Shared>) -> Result<String, String> {
    let path = shared
        .config_path
        .clone()
        .ok_or("rwproxy was started without a configuration file")?;
    let new = Config::load(&path)
        .map_err(|e| format!("configuration rejected, old one stays in force: {e}"))?;
    let mut rules = RuleSet::compile(&new.rules)
        .map_err(|e| format!("configuration rejected, old one stays in force: {e}"))?;
    let server_tls = ServerTls::from_config(&new)
        .map_err(|e| format!("configuration rejected, old one stays in force: {e}"))?;
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
                s.role = o.role;
                s.up = o.up;
                s.read_only = o.read_only;
                s.replication = o.replication;
                s.lag = o.lag;
                s.gtid_binlog = o.gtid_binlog.clone();
                s.gtid_slave = o.gtid_slave.clone();
                s.last_error = o.last_error.clone();
                s.since = o.since;
                s.failures = o.failures;
                s.fenced = o.fenced.clone();
                s.stats = o.stats.clone();
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

async fn reload_on_sighup(shared: Arc<Shared>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        if let Err(e) = reload(&shared).await {
            warn!(error = %e, "SIGHUP reload failed");
        }
    }
}
