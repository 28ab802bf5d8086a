//! The listener and the one entry point, [`run`], that both `main` and the
//! integration tests call.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::accounts::ClientAddr;
use crate::app::{self, Shared};
use crate::backend::tls::ServerTls;
use crate::config::Config;
use crate::protocol::ClientError;
use crate::protocol::stream::MaybeTls;
use crate::session;
use crate::workers::Workers;

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
        let setup = || -> Result<(), SocketSetupError> {
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
                    .map_err(SocketSetupError::Chown)?;
            }
            if let Some(mode) = config.socket_mode().map_err(SocketSetupError::Mode)? {
                std::fs::set_permissions(&socket.path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| SocketSetupError::Chmod(mode, e))?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            socket.remove();
            return Err(fail(e.to_string()));
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

/// Why the Unix socket's owner, group or mode could not be set.
#[derive(Debug, thiserror::Error)]
enum SocketSetupError {
    #[error("{field}: no such name {name:?}")]
    NoSuchName { field: &'static str, name: String },
    #[error("{field} {name:?}: {source}")]
    Lookup {
        field: &'static str,
        name: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("cannot change owner/group: {0}")]
    Chown(#[source] std::io::Error),
    #[error("{0}")]
    Mode(#[source] crate::config::ConfigError),
    #[error("cannot set mode {0:o}: {1}")]
    Chmod(u32, #[source] std::io::Error),
}

/// A user name or numeric uid.
fn resolve_user(v: &str) -> Result<u32, SocketSetupError> {
    if let Ok(uid) = v.trim().parse::<u32>() {
        return Ok(uid);
    }
    resolved(
        "listen_socket_owner",
        v,
        nix::unistd::User::from_name(v.trim()).map(|u| u.map(|u| u.uid.as_raw())),
    )
}

/// A group name or numeric gid.
fn resolve_group(v: &str) -> Result<u32, SocketSetupError> {
    if let Ok(gid) = v.trim().parse::<u32>() {
        return Ok(gid);
    }
    resolved(
        "listen_socket_group",
        v,
        nix::unistd::Group::from_name(v.trim()).map(|g| g.map(|g| g.gid.as_raw())),
    )
}

fn resolved(
    field: &'static str,
    name: &str,
    found: nix::Result<Option<u32>>,
) -> Result<u32, SocketSetupError> {
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(SocketSetupError::NoSuchName {
            field,
            name: name.to_string(),
        }),
        Err(source) => Err(SocketSetupError::Lookup {
            field,
            name: name.to_string(),
            source,
        }),
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
    let shared = app::build_shared(config, config_path, shutdown.clone())
        .await
        .map_err(ServerError::Config)?;
    shared.pools.set_server_tls(server_tls);
    let mut services = Services::default();
    app::start_monitor(&shared).await;
    let sh = shared.clone();
    // The monitor is restarted by RELOAD, so the app owns it; this service
    // only stops it at shutdown.
    services.spawn("monitor", &shutdown, |stop| async move {
        stop.cancelled().await;
        app::stop_monitor(&sh).await;
    });
    services.spawn_until("sighup", &shutdown, app::reload_on_sighup(shared.clone()));
    let f = shared.failover.clone();
    services.spawn("failover", &shutdown, |stop| f.watch(stop));
    let a = shared.accounts.clone();
    services.spawn("accounts", &shutdown, |stop| a.refresher(stop));
    let cat = shared.catalog.clone();
    services.spawn("catalog", &shutdown, |stop| cat.refresher(stop));
    let sh = shared.clone();
    services.spawn("pool-idle", &shutdown, |stop| {
        app::close_idle_pooled(sh, stop)
    });
    if let Some(l) = listeners.admin {
        services.spawn_until("admin", &shutdown, crate::admin::serve(l, shared.clone()));
    }
    if let Some(l) = listeners.http {
        services.spawn_until(
            "http",
            &shutdown,
            crate::admin::http::serve(l, shared.clone()),
        );
    }
    let grace = Duration::from_millis(shared.config.load().shutdown_timeout_ms);
    let r = serve(listener, unix, shared.clone(), grace, workers).await;
    services.stop().await;
    // Idle backend connections end with COM_QUIT, not a bare close.
    shared.pools.close_all().await;
    r
}

/// The background services beside the accept loop (monitor, SIGHUP,
/// failover watcher, accounts refresher, admin port, HTTP endpoint),
/// started in one place and stopped in one place: in reverse order of
/// start, each cancelled through its own child of the shutdown token and
/// joined (aborted if it does not end within a second).
#[derive(Default)]
struct Services {
    running: Vec<(&'static str, CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Services {
    /// Starts a service that ends when its token is cancelled.
    fn spawn<F>(
        &mut self,
        name: &'static str,
        shutdown: &CancellationToken,
        service: impl FnOnce(CancellationToken) -> F,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let token = shutdown.child_token();
        let handle = tokio::spawn(service(token.clone()));
        self.running.push((name, token, handle));
    }

    /// Starts a service that knows no token: it is dropped when cancelled.
    fn spawn_until<F>(&mut self, name: &'static str, shutdown: &CancellationToken, service: F)
    where
        F: std::future::Future + Send + 'static,
    {
        self.spawn(name, shutdown, |stop| async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = service => {}
            }
        });
    }

    async fn stop(self) {
        for (name, token, mut handle) in self.running.into_iter().rev() {
            token.cancel();
            if tokio::time::timeout(Duration::from_secs(1), &mut handle)
                .await
                .is_err()
            {
                warn!(service = name, "service did not stop within 1 s; aborted");
                handle.abort();
            }
        }
    }
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
