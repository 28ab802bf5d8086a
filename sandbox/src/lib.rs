//! A real local MariaDB topology — one primary and N replicas with GTID
//! replication — for demos, integration tests and benchmarks.
//!
//! Everything lives under one directory, one subdirectory per server
//! (`DIR/primary/{data,mysqld.sock,mysqld.pid,error.log}`, `DIR/replica1/…`),
//! plus `DIR/sandbox.toml` (what was created, so `down`/`status` need only
//! the directory) and `DIR/rwproxy.toml` (a proxy configuration for it).
//!
//! The code is blocking on purpose: it runs from the CLI or from test setup,
//! starts processes and waits on conditions with deadlines. Setup SQL goes
//! through the `mariadb` command-line client as root over each server's Unix
//! socket. Servers run detached (own process group, output in their error
//! log), so `rwproxy sandbox up` can exit and leave them running; tests pass
//! an `owner_pid` so a watchdog kills them when the test process dies.
//!
//! Things about MariaDB 10.11 that shaped this code:
//! - `mariadb-install-db` also creates passwordless `root@127.0.0.1` and
//!   `root@::1`, which would shadow `root@'%'` for TCP clients: they are
//!   dropped, only `root@localhost` (socket, no password) stays.
//! - `SHOW SLAVE STATUS` has `Gtid_IO_Pos` but not the applied position;
//!   that is `@@gtid_slave_pos`.
//! - With semi-sync master enabled on a replica, its SQL thread waits the
//!   full semi-sync timeout on the first event it applies
//!   (`log_slave_updates` makes it a semi-sync master with no replica) under
//!   `rpl_semi_sync_master_wait_no_slave = ON`. So only the primary runs the
//!   master side; rwproxy moves it with the primary role on promotion.
//! - A replica's IO thread counts replication heartbeats
//!   (`Slave_received_heartbeats`); the default period is
//!   `slave_net_timeout / 2` = 30 s, far too rare to tell a quiet primary
//!   from a hung one, so `MASTER_HEARTBEAT_PERIOD` is set explicitly.
//! - After SIGKILL the main thread of `mariadbd` shows as a zombie while the
//!   others still exit and hold the port; see [`process_alive`].
//!
//! A TLS sandbox (`up --tls`, [`up_with_tls`]) generates a CA and a server
//! certificate under `DIR/tls/`, runs every server with
//! `require_secure_transport = ON` (plaintext TCP logins are refused, so
//! nothing can silently fall back to them; the setup client uses the Unix
//! socket, which counts as secure), replicates over TLS, and writes an
//! `rwproxy.toml` with `server_tls = "verify_identity"`.

mod certs;
mod client;
pub mod mysql;
mod process;

use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use rwproxy::config::{Config, ConfigError};
use rwproxy::gtid::GtidPos;

pub use process::process_alive;

/// How long a server may take to accept connections after being started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long replicas may take to connect and apply the primary's binlog.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace period between SIGTERM and SIGKILL in `down`.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long a SIGKILLed process may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a busy port may take to become free before `up` gives up.
const PORT_WAIT: Duration = Duration::from_secs(2);
/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(100);
/// Longest Unix socket path (`sun_path` is 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Where the sandbox records what it created.
const MANIFEST: &str = "sandbox.toml";
/// The generated proxy configuration.
const PROXY_CONFIG: &str = "rwproxy.toml";
/// The proxy config as the sandbox last generated it: tells an operator's
/// edit from the sandbox's own text.
const LAST_GENERATED: &str = ".rwproxy.toml.generated";
/// Directories searched for the MariaDB binaries after `PATH`.
const EXTRA_BIN_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/mysql/bin"];

/// Everything that can go wrong, each naming what failed and on which
/// server.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A MariaDB program is not installed.
    #[error(
        "`{binary}` not found on PATH or in /usr/sbin, /usr/bin, /usr/local/mysql/bin: \
         install mariadb-server (and mariadb-client)"
    )]
    MissingBinary { binary: &'static str },
    /// The options make no sense (no ports, duplicate ports, path too long…).
    #[error("invalid sandbox options: {0}")]
    InvalidOptions(String),
    /// A file-system or process operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The directory does not hold a usable sandbox (missing or bad
    /// `sandbox.toml`, or foreign files in the way).
    #[error("{path}: {reason}")]
    NotASandbox { path: PathBuf, reason: String },
    /// `mariadb-install-db` failed.
    #[error("mariadb-install-db failed for {datadir} ({status}); last lines of {log}:\n{tail}")]
    InstallDb {
        datadir: PathBuf,
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// Another program listens on a server's port.
    #[error("server {server}: port 127.0.0.1:{port} is already in use by another program")]
    PortInUse { server: String, port: u16 },
    /// A server exited or did not accept connections in time.
    #[error(
        "server {server} (port {port}) failed to start: {reason}; last lines of {log}:\n{tail}"
    )]
    StartFailed {
        server: String,
        port: u16,
        reason: String,
        log: PathBuf,
        tail: String,
    },
    /// A setup statement failed.
    #[error("SQL on server {server} failed: {detail} (statement: {sql})")]
    Sql {
        server: String,
        sql: String,
        detail: String,
    },
    /// A replica did not replicate, or did not catch up in time.
    #[error("replication on server {server} is not healthy: {detail}")]
    Replication { server: String, detail: String },
    /// A server survived SIGKILL (should not happen).
    #[error("server {server} (pid {pid}) did not exit after SIGKILL")]
    StopFailed { server: String, pid: u32 },
    /// `start_server`/`kill_server` with an index out of range.
    #[error("no server #{index} in the sandbox (it has {count})")]
    NoSuchServer { index: usize, count: usize },
    /// The generated `rwproxy.toml` does not pass `Config::parse` (a bug).
    #[error("generated {path} is not a valid rwproxy configuration: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

fn io_error(action: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> SandboxError {
    let action = action.into();
    let path = path.to_path_buf();
    move |source| SandboxError::Io {
        action,
        path,
        source,
    }
}

/// The `rwproxy sandbox …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Create (if needed) and start a primary + N replicas.
    Up {
        /// Directory holding the servers' data, sockets and logs.
        #[arg(long)]
        dir: PathBuf,
        /// Port of the primary; replicas use the following ports.
        #[arg(long, default_value_t = 3310)]
        base_port: u16,
        /// Number of replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Port rwproxy will listen on in the generated rwproxy.toml
        #[arg(long, default_value_t = 6033)]
        proxy_port: u16,
        /// Enable semi-synchronous replication (primary waits for one replica ack)
        #[arg(long)]
        semi_sync: bool,
        /// Servers require TLS (generated CA and certificate for 127.0.0.1
        /// and localhost; rwproxy.toml verifies them)
        #[arg(long)]
        tls: bool,
        /// Server flavor: MariaDB from the host, or Oracle MySQL 9.x from a
        /// Debian sid chroot created once (see `sandbox::mysql`)
        #[arg(long, value_enum, default_value_t = Flavor::Mariadb)]
        flavor: Flavor,
    },
    /// Stop the servers started from DIR (by pid file).
    Down {
        /// Directory given to `sandbox up`.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Show each server: name, port, pid, running?, role, replication state.
    Status {
        /// Directory given to `sandbox up`.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Which server a sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// MariaDB installed on the host.
    Mariadb,
    /// Oracle MySQL 9.x from a Debian `sid` chroot.
    Mysql,
}

/// What `up` should create or start.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Directory for everything; created if missing.
    pub dir: PathBuf,
    /// `[primary, replica1, …]`: one port per server, so its length decides
    /// the number of replicas.
    pub ports: Vec<u16>,
    /// Port written as `listen` in the generated `rwproxy.toml`.
    pub proxy_port: u16,
    /// Semi-synchronous replication: the primary waits for one replica's
    /// acknowledgement (up to 10 s) before a commit returns.
    pub semi_sync: bool,
    /// if set, a detached watchdog stops the servers when this pid exits
    pub owner_pid: Option<u32>,
}

/// TLS for a new sandbox's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTls {
    /// Names the server certificate is valid for (IP addresses become IP
    /// SANs). The servers listen on 127.0.0.1, so the default names match
    /// the generated configuration; a test that wants a mismatch picks
    /// others.
    pub names: Vec<String>,
}

impl Default for SandboxTls {
    fn default() -> Self {
        SandboxTls {
            names: vec!["127.0.0.1".into(), "localhost".into()],
        }
    }
}

/// One server of a sandbox and where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxServer {
    /// `primary`, `replica1`, `replica2`, …
    pub name: String,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Unix socket (root logs in here without a password).
    pub socket: PathBuf,
    /// Written by `mariadbd`; how `down`/`kill_server` find the process.
    pub pid_file: PathBuf,
    /// Data directory.
    pub datadir: PathBuf,
    /// Error log, also receiving the server's stdout/stderr.
    pub log: PathBuf,
}

impl SandboxServer {
    fn new(dir: &Path, name: &str, port: u16) -> SandboxServer {
        let base = dir.join(name);
        SandboxServer {
            name: name.to_string(),
            port,
            socket: base.join("mysqld.sock"),
            pid_file: base.join("mysqld.pid"),
            datadir: base.join("data"),
            log: base.join("error.log"),
        }
    }

    /// The directory holding this server's files.
    fn base(&self) -> PathBuf {
        self.datadir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.datadir.clone())
    }

    /// The server's own `--tmpdir` (next to its pid file).
    pub fn tmpdir(&self) -> PathBuf {
        self.pid_file.with_file_name("tmp")
    }

    /// The `--socket=` argument, also how a pid is recognised as ours.
    fn socket_arg(&self) -> String {
        format!("--socket={}", self.socket.display())
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The pid of this server if it is running (per its pid file).
    pub fn running_pid(&self) -> Option<u32> {
        process::running_pid(&self.pid_file, &self.socket_arg())
    }
}

/// A sandbox: its directory, its servers (primary first) and the generated
/// proxy configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The (canonical) sandbox directory.
    pub dir: PathBuf,
    /// `servers[0]` is the primary as created; the others are replicas.
    pub servers: Vec<SandboxServer>,
    /// `DIR/rwproxy.toml`.
    pub config_path: PathBuf,
    /// For a TLS sandbox: the CA certificate (PEM) the servers'
    /// certificate is signed by.
    pub tls_ca: Option<PathBuf>,
}

impl Sandbox {
    fn layout(dir: &Path, ports: &[u16]) -> Sandbox {
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, port)| SandboxServer::new(dir, &server_name(i), *port))
            .collect();
        Sandbox {
            dir: dir.to_path_buf(),
            servers,
            config_path: dir.join(PROXY_CONFIG),
            tls_ca: None,
        }
    }

    /// Opens the sandbox created earlier in `dir` (running or not).
    pub fn open(dir: &Path) -> Result<Sandbox, SandboxError> {
        let dir = fs::canonicalize(dir).map_err(io_error("open sandbox directory", dir))?;
        let manifest = Manifest::read(&dir)?.ok_or_else(|| SandboxError::NotASandbox {
            path: dir.clone(),
            reason: format!("no {MANIFEST}; create the sandbox with `rwproxy sandbox up`"),
        })?;
        Ok(manifest.sandbox(&dir))
    }

    /// The server created as primary (`servers[0]`; after a promotion the
    /// servers themselves know better).
    ///
    /// # Panics
    /// If `servers` is empty, which it never is in a `Sandbox` returned by
    /// [`up`] or [`Sandbox::open`].
    pub fn primary(&self) -> &SandboxServer {
        &self.servers[0]
    }

    /// The servers created as replicas.
    pub fn replicas(&self) -> &[SandboxServer] {
        self.servers.get(1..).unwrap_or_default()
    }

    fn server(&self, index: usize) -> Result<&SandboxServer, SandboxError> {
        self.servers.get(index).ok_or(SandboxError::NoSuchServer {
            index,
            count: self.servers.len(),
        })
    }
}

/// `primary`, `replica1`, `replica2`, …
fn server_name(index: usize) -> String {
    if index == 0 {
        "primary".to_string()
    } else {
        format!("replica{index}")
    }
}

/// `DIR/sandbox.toml`: what `up` created, so later commands need only the
/// directory, and a half-finished `up` can be recognised and redone.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    state: ManifestState,
    semi_sync: bool,
    /// Created with `--tls` (absent in manifests written before TLS).
    #[serde(default)]
    tls: bool,
    servers: Vec<ManifestServer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ManifestState {
    /// `up` is (or was, if it failed) creating the servers: nothing in
    /// them is worth keeping.
    Initializing,
    /// Servers created and replication set up.
    Ready,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestServer {
    name: String,
    port: u16,
}

impl Manifest {
    fn new(state: ManifestState, semi_sync: bool, sandbox: &Sandbox) -> Manifest {
        Manifest {
            state,
            semi_sync,
            tls: sandbox.tls_ca.is_some(),
            servers: sandbox
                .servers
                .iter()
                .map(|s| ManifestServer {
                    name: s.name.clone(),
                    port: s.port,
                })
                .collect(),
        }
    }

    fn read(dir: &Path) -> Result<Option<Manifest>, SandboxError> {
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let manifest: Manifest = toml::from_str(&text).map_err(|e| SandboxError::NotASandbox {
            path: path.clone(),
            reason: format!("unreadable sandbox state: {e}"),
        })?;
        let names_ok = !manifest.servers.is_empty()
            && manifest
                .servers
                .iter()
                .enumerate()
                .all(|(i, s)| s.name == server_name(i));
        if !names_ok {
            return Err(SandboxError::NotASandbox {
                path,
                reason: "unexpected server list in sandbox state".into(),
            });
        }
        Ok(Some(manifest))
    }

    fn write(&self, dir: &Path) -> Result<(), SandboxError> {
        let path = dir.join(MANIFEST);
        let body = toml::to_string(self).map_err(|e| SandboxError::NotASandbox {
            path: path.clone(),
            reason: format!("cannot serialize sandbox state: {e}"),
        })?;
        let text = format!("# Managed by `rwproxy sandbox`; do not edit.\n{body}");
        // Write then rename, so a crash never leaves half a manifest.
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        fs::write(&tmp, text).map_err(io_error("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_error("write", &path))
    }

    fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port).collect()
    }

    fn sandbox(&self, dir: &Path) -> Sandbox {
        let mut sandbox = Sandbox::layout(dir, &self.ports());
        sandbox.tls_ca = self.tls.then(|| certs::ca_path(dir));
        sandbox
    }
}

/// The MariaDB programs the sandbox runs.
struct Binaries {
    mariadbd: PathBuf,
    mariadb: PathBuf,
    install_db: PathBuf,
}

impl Binaries {
    fn find() -> Result<Binaries, SandboxError> {
        Ok(Binaries {
            mariadbd: find_binary("mariadbd")?,
            mariadb: find_binary("mariadb")?,
            install_db: find_binary("mariadb-install-db")?,
        })
    }
}

fn find_binary(name: &'static str) -> Result<PathBuf, SandboxError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or(SandboxError::MissingBinary { binary: name })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Creates (if needed) and starts the sandbox described by `opts`, and
/// returns once every replica replicates and has caught up.
///
/// On an existing directory: servers already running are reused, stopped
/// ones are started again (data intact) and replication is verified; the
/// ports must be those the sandbox was created with. A directory left
/// half-created by a failed `up` is wiped and created again. If `up` fails,
/// the servers it started are stopped again.
pub fn up(opts: &UpOptions) -> Result<Sandbox, SandboxError> {
    up_with_tls(opts, None)
}

/// [`up`], with servers that require TLS when `tls` is given (see the
/// module doc). TLS is decided when the sandbox is created: an existing TLS
/// sandbox stays one, and asking for TLS on an existing plaintext one is an
/// error. (A separate function rather than a field of [`UpOptions`], which
/// callers build as struct literals.)
pub fn up_with_tls(opts: &UpOptions, tls: Option<&SandboxTls>) -> Result<Sandbox, SandboxError> {
    validate_ports(&opts.ports)?;
    let bins = Binaries::find()?;
    fs::create_dir_all(&opts.dir).map_err(io_error("create directory", &opts.dir))?;
    let dir = fs::canonicalize(&opts.dir).map_err(io_error("open directory", &opts.dir))?;
    let mut sandbox = Sandbox::layout(&dir, &opts.ports);
    check_socket_paths(&sandbox)?;

    match Manifest::read(&dir)? {
        Some(m) if m.state == ManifestState::Ready => {
            if tls.is_some() && !m.tls {
                return Err(SandboxError::InvalidOptions(format!(
                    "the sandbox in {} was created without TLS; run `sandbox down` and remove \
                     the directory to create it with --tls",
                    dir.display()
                )));
            }
            sandbox.tls_ca = m.tls.then(|| certs::ca_path(&dir));
            if m.ports() != opts.ports {
                return Err(SandboxError::InvalidOptions(format!(
                    "the sandbox in {} was created with ports {:?} (primary first), not {:?}; \
                     use those, or run `sandbox down` and remove the directory",
                    dir.display(),
                    m.ports(),
                    opts.ports
                )));
            }
            resume(&bins, &sandbox, opts)?;
        }
        Some(m) => {
            // A previous `up` failed half-way: nothing in there is worth
            // keeping, and we know exactly what it created.
            let old = m.sandbox(&dir);
            let all: Vec<usize> = (0..old.servers.len()).collect();
            stop_servers(&old, &all, Duration::from_secs(5))?;
            for s in &old.servers {
                let base = s.base();
                if base.exists() {
                    fs::remove_dir_all(&base).map_err(io_error("remove", &base))?;
                }
            }
            create(&bins, &mut sandbox, opts, tls)?;
        }
        None => {
            for s in &sandbox.servers {
                if s.base().exists() {
                    return Err(SandboxError::NotASandbox {
                        path: s.base(),
                        reason: format!(
                            "exists but {} has no {MANIFEST}; refusing to overwrite it",
                            dir.display()
                        ),
                    });
                }
            }
            create(&bins, &mut sandbox, opts, tls)?;
        }
    }
    Ok(sandbox)
}

fn validate_ports(ports: &[u16]) -> Result<(), SandboxError> {
    if ports.is_empty() {
        return Err(SandboxError::InvalidOptions(
            "at least one port (the primary's) is required".into(),
        ));
    }
    if ports.contains(&0) {
        return Err(SandboxError::InvalidOptions("port 0 is not allowed".into()));
    }
    for (i, p) in ports.iter().enumerate() {
        if ports[..i].contains(p) {
            return Err(SandboxError::InvalidOptions(format!(
                "port {p} is given twice"
            )));
        }
    }
    Ok(())
}

fn check_socket_paths(sandbox: &Sandbox) -> Result<(), SandboxError> {
    for s in &sandbox.servers {
        let len = s.socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(SandboxError::InvalidOptions(format!(
                "socket path {} is {len} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket \
                 allows; use a shorter --dir",
                s.socket.display()
            )));
        }
    }
    Ok(())
}

/// First `up` in a directory: install once, copy, start, set up replication.
fn create(
    bins: &Binaries,
    sandbox: &mut Sandbox,
    opts: &UpOptions,
    tls: Option<&SandboxTls>,
) -> Result<(), SandboxError> {
    if let Some(tls) = tls {
        certs::generate(&sandbox.dir, &tls.names)?;
        sandbox.tls_ca = Some(certs::ca_path(&sandbox.dir));
    }
    let sandbox = &*sandbox;
    Manifest::new(ManifestState::Initializing, opts.semi_sync, sandbox).write(&sandbox.dir)?;
    for s in &sandbox.servers {
        let base = s.base();
        fs::create_dir_all(&base).map_err(io_error("create directory", &base))?;
        check_port_free(s)?;
    }
    let t0 = Instant::now();
    install_db(bins, sandbox.primary())?;
    tracing::debug!(
        dir = %sandbox.dir.display(),
        ms = t0.elapsed().as_millis() as u64,
        "sandbox: system tables installed"
    );
    // One install, copied before any server starts: every copy is a pristine,
    // identical data directory with empty binlogs, which is all GTID
    // replication from the start needs, and far faster than N installs.
    for s in sandbox.replicas() {
        copy_dir(&sandbox.primary().datadir, &s.datadir)?;
    }
    let mut started = Vec::new();
    let result = (|| {
        if let Some(owner) = opts.owner_pid {
            start_watchdog(sandbox, owner)?;
        }
        for index in 0..sandbox.servers.len() {
            let read_only = index > 0;
            started.push(spawn_server(
                bins,
                sandbox,
                index,
                opts.semi_sync,
                read_only,
                &[],
            )?);
        }
        let waits: Vec<_> = started.iter().map(|(i, s)| (*i, Some(s))).collect();
        wait_ready(bins, sandbox, &waits)?;
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            "sandbox: servers accept connections"
        );
        set_up_replication(bins, sandbox, opts.semi_sync)?;
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            "sandbox: replicas caught up"
        );
        write_proxy_config(sandbox, opts.proxy_port)?;
        Manifest::new(ManifestState::Ready, opts.semi_sync, sandbox).write(&sandbox.dir)
    })();
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = stop_spawned(sandbox, &started);
    }
    result
}

/// `up` on a ready sandbox: start what is stopped, verify replication.
fn resume(bins: &Binaries, sandbox: &Sandbox, opts: &UpOptions) -> Result<(), SandboxError> {
    Manifest::new(ManifestState::Ready, opts.semi_sync, sandbox).write(&sandbox.dir)?;
    let mut started = Vec::new();
    let result = (|| {
        if let Some(owner) = opts.owner_pid {
            start_watchdog(sandbox, owner)?;
        }
        for (index, s) in sandbox.servers.iter().enumerate() {
            if s.running_pid().is_none() {
                check_port_free(s)?;
                started.push(spawn_server(
                    bins,
                    sandbox,
                    index,
                    opts.semi_sync,
                    is_replica(s),
                    &[],
                )?);
            }
        }
        let waits: Vec<_> = (0..sandbox.servers.len())
            .map(|i| (i, started.iter().find(|(j, _)| *j == i).map(|(_, s)| s)))
            .collect();
        wait_ready(bins, sandbox, &waits)?;
        let all: Vec<usize> = (0..sandbox.servers.len()).collect();
        wait_replication(bins, sandbox, &all)?;
        if opts.semi_sync
            && sandbox.servers.len() > 1
            && let Some(p) = sandbox.servers.iter().find(|s| !is_replica(s))
        {
            enable_semi_sync(bins, sandbox, p)?;
        }
        write_proxy_config(sandbox, opts.proxy_port)
    })();
    if result.is_err() {
        let _ = stop_spawned(sandbox, &started);
    }
    result
}

/// Fails if something listens on the server's port. Waits a little first:
/// a server just killed may hold its port for a moment.
fn check_port_free(server: &SandboxServer) -> Result<(), SandboxError> {
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        match TcpListener::bind(("127.0.0.1", server.port)) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                thread::sleep(POLL);
            }
            other => return port_check_result(server, other.map(|_| ())),
        }
    }
}

fn port_check_result(server: &SandboxServer, bound: io::Result<()>) -> Result<(), SandboxError> {
    match bound {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(SandboxError::PortInUse {
            server: server.name.clone(),
            port: server.port,
        }),
        Err(e) => Err(io_error(
            format!("bind port {} for server {}", server.port, server.name),
            &server.datadir,
        )(e)),
    }
}

/// Runs `mariadb-install-db`, one at a time per process and with one
/// retry: two bootstraps started at the same moment under heavy load were
/// seen to fail now and then (tests start sandboxes in parallel), and a
/// second attempt on a clean data directory succeeds.
fn install_db(bins: &Binaries, server: &SandboxServer) -> Result<(), SandboxError> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    match install_db_once(bins, server) {
        Ok(()) => Ok(()),
        Err(first) => {
            let _ = fs::remove_dir_all(&server.datadir);
            install_db_once(bins, server).map_err(|_| first)
        }
    }
}

fn install_db_once(bins: &Binaries, server: &SandboxServer) -> Result<(), SandboxError> {
    let log = server.base().join("install-db.log");
    let out = fs::File::create(&log).map_err(io_error("create", &log))?;
    let err = out.try_clone().map_err(io_error("open", &log))?;
    let mut cmd = Command::new(&bins.install_db);
    // --no-defaults must come first, or /etc/mysql is read.
    cmd.arg("--no-defaults")
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--skip-name-resolve")
        .arg(format!("--datadir={}", server.datadir.display()));
    if process::running_as_root() {
        cmd.arg("--user=root");
    }
    if let Some(basedir) = basedir_of(&bins.mariadbd) {
        cmd.arg(format!("--basedir={}", basedir.display()));
    }
    // Passed through to the bootstrap server: create the redo log at the
    // size the servers run with, instead of the 96M default.
    cmd.arg("--innodb-log-file-size=32M");
    // And its own tmpdir (see `server_args`: the bootstrap server too
    // deletes `#sql*` files in its tmpdir).
    let tmpdir = server.tmpdir();
    fs::create_dir_all(&tmpdir).map_err(io_error("create", &tmpdir))?;
    cmd.arg(format!("--tmpdir={}", tmpdir.display()));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(io_error("run", &bins.install_db))?;
    if status.success() {
        Ok(())
    } else {
        // The useful lines are the errors, not the usage text the script
        // prints after them.
        let text = fs::read_to_string(&log).unwrap_or_default();
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("[ERROR]") || l.contains("FATAL"))
            .take(10)
            .collect();
        Err(SandboxError::InstallDb {
            datadir: server.datadir.clone(),
            status: status.to_string(),
            tail: if errors.is_empty() {
                log_tail(&log)
            } else {
                errors.join("\n")
            },
            log,
        })
    }
}

/// `--basedir` for a tarball install (`/usr/local/mysql/bin/mariadbd`); the
/// distribution packages under /usr find their files themselves.
fn basedir_of(mariadbd: &Path) -> Option<PathBuf> {
    let base = mariadbd.parent()?.parent()?;
    if base == Path::new("/usr") || base == Path::new("/") {
        None
    } else {
        Some(base.to_path_buf())
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), SandboxError> {
    let output = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .map_err(io_error("run cp to copy", from))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(SandboxError::Io {
            action: format!("copy to {}", to.display()),
            path: from.to_path_buf(),
            source: io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        })
    }
}

/// Whether a server that has run before is configured to replicate (has a
/// `master.info`), so it restarts read-only. A replica promoted since
/// (`RESET SLAVE ALL` removes the file) restarts writable, and so does a
/// killed primary: fencing a returning old primary is rwproxy's job.
fn is_replica(server: &SandboxServer) -> bool {
    server.datadir.join("master.info").exists()
}

/// The command line of server `index`.
fn server_args(
    server: &SandboxServer,
    index: usize,
    semi_sync: bool,
    read_only: bool,
    root: bool,
    tls_of: Option<&Path>,
) -> Vec<String> {
    let mut args = vec![
        // Must be first, or /etc/mysql/*.cnf is read.
        "--no-defaults".to_string(),
        format!("--datadir={}", server.datadir.display()),
        server.socket_arg(),
        format!("--pid-file={}", server.pid_file.display()),
        // A private tmpdir: mariadbd deletes every `#sql*` file in its
        // tmpdir at start-up, so servers sharing /tmp removed each other's
        // temporary tables whenever a test started a server (mtr tests
        // then failed with "Error on delete of '/tmp/#sql-temptable-…'").
        format!("--tmpdir={}", server.tmpdir().display()),
        format!("--port={}", server.port),
        "--bind-address=127.0.0.1".into(),
        format!("--log-error={}", server.log.display()),
        format!("--server-id={}", index + 1),
        // Explicit names: the defaults derive from the host name, and a
        // renamed host would otherwise lose its binlog and relay log.
        "--log-bin=mysql-bin".into(),
        "--relay-log=relay-bin".into(),
        "--log-slave-updates=1".into(),
        "--gtid-strict-mode=1".into(),
        "--binlog-format=ROW".into(),
        "--skip-name-resolve".into(),
        "--character-set-server=utf8mb4".into(),
        "--collation-server=utf8mb4_general_ci".into(),
        // Small footprint: several sandboxes share a 2-core test machine.
        "--innodb-buffer-pool-size=64M".into(),
        "--innodb-log-file-size=32M".into(),
        "--innodb-temp-data-file-path=ibtmp1:1M:autoextend".into(),
        "--performance-schema=OFF".into(),
        "--max-connections=3000".into(),
        "--max-allowed-packet=1G".into(),
        // Durability is not the point of a sandbox; speed is.
        "--skip-innodb-doublewrite".into(),
        "--innodb-flush-log-at-trx-commit=2".into(),
        "--sync-binlog=0".into(),
    ];
    if root {
        // mariadbd refuses to run as root without it.
        args.insert(1, "--user=root".into());
    }
    if read_only {
        args.push("--read-only=1".into());
    }
    if let Some(dir) = tls_of {
        let (cert, key) = certs::server_paths(dir);
        args.push(format!("--ssl-ca={}", certs::ca_path(dir).display()));
        args.push(format!("--ssl-cert={}", cert.display()));
        args.push(format!("--ssl-key={}", key.display()));
        // Plaintext TCP logins are refused: a client that silently did not
        // use TLS fails instead of passing.
        args.push("--require-secure-transport=ON".into());
    }
    if semi_sync {
        // Lossless semi-sync that does not degrade: the primary waits for a
        // replica's acknowledgement even when no replica is connected
        // (`wait_no_slave = ON`), and the timeout after which it would fall
        // back to asynchronous commits (silently, but for
        // `Rpl_semi_sync_master_status = OFF`) is the largest MariaDB
        // accepts (~49 days): an orphaned primary stalls instead of
        // acknowledging writes no replica has. The master side itself is
        // switched on once replicas are connected (`enable_semi_sync`):
        // the set-up statements would otherwise wait for them.
        args.push("--rpl-semi-sync-master-timeout=4294967295".into());
        args.push("--rpl-semi-sync-master-wait-no-slave=ON".into());
        args.push("--rpl-semi-sync-slave-enabled=1".into());
        // Lossless semi-sync: a transaction waits for the acknowledgement
        // before it commits in InnoDB. With it (and semi-sync slave enabled
        // at start-up), a crashed primary that restarts rolls back and
        // truncates from its binlog what no replica acknowledged (MDEV-21117),
        // so it can rejoin the promoted replica without diverging.
        args.push("--rpl-semi-sync-master-wait-point=AFTER_SYNC".into());
    }
    args
}

fn spawn_server(
    bins: &Binaries,
    sandbox: &Sandbox,
    index: usize,
    semi_sync: bool,
    read_only: bool,
    extra_args: &[&str],
) -> Result<(usize, process::Spawned), SandboxError> {
    let server = sandbox.server(index)?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&server.log)
        .map_err(io_error("open", &server.log))?;
    let log2 = log.try_clone().map_err(io_error("open", &server.log))?;
    let tmpdir = server.tmpdir();
    fs::create_dir_all(&tmpdir).map_err(io_error("create", &tmpdir))?;
    let mut cmd = Command::new(&bins.mariadbd);
    cmd.args(server_args(
        server,
        index,
        semi_sync,
        read_only,
        process::running_as_root(),
        sandbox.tls_ca.as_ref().map(|_| sandbox.dir.as_path()),
    ))
    .args(extra_args)
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log2);
    let spawned = process::spawn_detached(&mut cmd).map_err(io_error(
        format!("start server {}:", server.name),
        &bins.mariadbd,
    ))?;
    Ok((index, spawned))
}

fn start_watchdog(sandbox: &Sandbox, owner: u32) -> Result<(), SandboxError> {
    let servers: Vec<(PathBuf, String)> = sandbox
        .servers
        .iter()
        .map(|s| (s.pid_file.clone(), s.socket_arg()))
        .collect();
    process::spawn_watchdog(owner, &servers)
        .map(|_| ())
        .map_err(io_error("start the watchdog", Path::new("/bin/sh")))
}

/// Waits until every listed server answers a query. A server we just spawned
/// (`Some`) that exits fails at once, with the tail of its log.
fn wait_ready(
    bins: &Binaries,
    sandbox: &Sandbox,
    servers: &[(usize, Option<&process::Spawned>)],
) -> Result<(), SandboxError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pending: Vec<(usize, Option<&process::Spawned>)> = servers.to_vec();
    loop {
        let mut still = Vec::new();
        for (index, spawned) in pending {
            let server = sandbox.server(index)?;
            if let Some(status) = spawned.and_then(|s| s.exit_status()) {
                return Err(start_failed(server, format!("mariadbd exited ({status})")));
            }
            if !(server.socket.exists() && client::ping(&bins.mariadb, server)) {
                still.push((index, spawned));
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let server = sandbox.server(still[0].0)?;
            return Err(start_failed(
                server,
                format!(
                    "did not accept connections on {} within {} s",
                    server.socket.display(),
                    START_TIMEOUT.as_secs()
                ),
            ));
        }
        pending = still;
        thread::sleep(POLL);
    }
}

fn start_failed(server: &SandboxServer, reason: String) -> SandboxError {
    SandboxError::StartFailed {
        server: server.name.clone(),
        port: server.port,
        reason,
        log: server.log.clone(),
        tail: log_tail(&server.log),
    }
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    const LINES: usize = 25;
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The databases and accounts both flavors' sandboxes create on the primary
/// (they reach the replicas by replication), up to the monitor account's
/// grants, which each flavor spells its own way. A macro, so each flavor's
/// statement list is one `concat!`ed constant.
macro_rules! common_accounts_sql {
    () => {
        "\
CREATE DATABASE IF NOT EXISTS app;
CREATE DATABASE IF NOT EXISTS test;
CREATE USER 'app'@'%' IDENTIFIED BY 'app';
GRANT ALL ON app.* TO 'app'@'%';
GRANT ALL ON test.* TO 'app'@'%';
CREATE USER 'root'@'%' IDENTIFIED BY 'root';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
CREATE USER 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
CREATE USER 'rwproxy_monitor'@'%' IDENTIFIED BY 'monitor';
GRANT CREATE, INSERT, UPDATE, DELETE, SELECT ON rwproxy.* TO 'rwproxy_monitor'@'%';
"
    };
}
pub(crate) use common_accounts_sql;

/// MariaDB: the common accounts, and the monitor's rights in MariaDB's
/// names — exactly the minimal list of the README ("Grants of the monitor
/// account"), so that every test (promotion included) proves it is enough:
/// `SLAVE MONITOR` (`SHOW ALL SLAVES STATUS`), `SELECT` on
/// `mysql.global_priv` (accounts), `READ_ONLY ADMIN` (fencing),
/// `REPLICATION SLAVE ADMIN` (`STOP`/`START SLAVE`, `CHANGE MASTER`,
/// `gtid_slave_pos`), `RELOAD` (`RESET SLAVE ALL`), `REPLICATION MASTER
/// ADMIN` (semi-sync primary side after a promotion), `SELECT` on
/// `mysql.proc` (the stored functions' `SQL DATA ACCESS`, for routing reads
/// that call them).
const ACCOUNTS_SQL: &str = concat!(
    common_accounts_sql!(),
    "GRANT SLAVE MONITOR, READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, RELOAD, \
REPLICATION MASTER ADMIN ON *.* TO 'rwproxy_monitor'@'%';
GRANT SELECT ON mysql.global_priv TO 'rwproxy_monitor'@'%';
GRANT SELECT ON mysql.proc TO 'rwproxy_monitor'@'%';"
);

fn set_up_replication(
    bins: &Binaries,
    sandbox: &Sandbox,
    semi_sync: bool,
) -> Result<(), SandboxError> {
    let primary = sandbox.primary();
    // mariadb-install-db also creates passwordless root@127.0.0.1 and
    // root@::1; being more specific than root@'%', they would shadow it for
    // TCP clients. Only root@localhost (the socket, for this module) stays.
    let rows = client::query(
        &bins.mariadb,
        primary,
        "SELECT Host FROM mysql.user WHERE User = 'root' AND Host NOT IN ('localhost', '%')",
    )?;
    let accounts: Vec<String> = rows
        .iter()
        .map(|row| {
            let host = field(row, "Host")
                .replace('\\', "\\\\")
                .replace('\'', "\\'");
            format!("'root'@'{host}'")
        })
        .collect();
    let drop_roots = if accounts.is_empty() {
        String::new()
    } else {
        format!("DROP USER {};\n", accounts.join(", "))
    };
    client::execute(
        &bins.mariadb,
        primary,
        &format!("{drop_roots}{ACCOUNTS_SQL}"),
    )?;
    // Over TLS when the servers require it, verifying the primary against
    // the sandbox CA.
    let ssl = match &sandbox.tls_ca {
        Some(ca) => format!(
            ", MASTER_SSL=1, MASTER_SSL_CA='{}'",
            ca.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('\'', "\\'")
        ),
        None => String::new(),
    };
    let change_master = format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', \
         MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, \
         MASTER_HEARTBEAT_PERIOD=0.5{ssl}; START SLAVE;",
        primary.port
    );
    for replica in sandbox.replicas() {
        client::execute(&bins.mariadb, replica, &change_master)?;
    }
    let replicas: Vec<usize> = (1..sandbox.servers.len()).collect();
    wait_replication(bins, sandbox, &replicas)?;
    if semi_sync && !replicas.is_empty() {
        enable_semi_sync(bins, sandbox, primary)?;
    }
    Ok(())
}

/// Turns the semi-sync master side on on `primary` (only there: see the
/// module notes) and reconnects the replicas' IO threads so they register
/// as semi-sync replicas, then waits until it is active.
fn enable_semi_sync(
    bins: &Binaries,
    sandbox: &Sandbox,
    primary: &SandboxServer,
) -> Result<(), SandboxError> {
    client::execute(
        &bins.mariadb,
        primary,
        "SET GLOBAL rpl_semi_sync_master_enabled = 1;",
    )?;
    for s in sandbox.servers.iter().filter(|s| s.name != primary.name) {
        client::execute(
            &bins.mariadb,
            s,
            "STOP SLAVE IO_THREAD; START SLAVE IO_THREAD;",
        )?;
    }
    wait_semi_sync(bins, primary)
}

/// Waits until the primary has a semi-sync replica and semi-sync is on, so
/// the first write after `up` is already acknowledged by a replica.
fn wait_semi_sync(bins: &Binaries, primary: &SandboxServer) -> Result<(), SandboxError> {
    let deadline = Instant::now() + REPLICATION_TIMEOUT;
    loop {
        let rows = client::query(
            &bins.mariadb,
            primary,
            "SHOW GLOBAL STATUS WHERE Variable_name IN \
             ('Rpl_semi_sync_master_clients', 'Rpl_semi_sync_master_status')",
        )?;
        let value = |name: &str| {
            rows.iter()
                .find(|r| field(r, "Variable_name") == name)
                .map(|r| field(r, "Value").to_string())
                .unwrap_or_default()
        };
        let clients = value("Rpl_semi_sync_master_clients");
        let status = value("Rpl_semi_sync_master_status");
        if clients.parse::<u64>().is_ok_and(|c| c > 0) && status == "ON" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(SandboxError::Replication {
                server: primary.name.clone(),
                detail: format!(
                    "semi-sync not active after {} s: Rpl_semi_sync_master_clients={clients:?} \
                     Rpl_semi_sync_master_status={status:?}",
                    REPLICATION_TIMEOUT.as_secs()
                ),
            });
        }
        thread::sleep(POLL);
    }
}

/// What one poll of a replica found.
enum ReplicaState {
    /// Not configured as a replica (no `SHOW SLAVE STATUS` row).
    NotReplica,
    /// Both threads running and everything of its primary applied.
    CaughtUp,
    /// Not there yet; the text says why (for the timeout error).
    Behind(String),
}

/// Waits until each listed server that is configured as a replica has both
/// threads running and has applied everything its primary (found among the
/// sandbox's servers by port) has in its binlog. A replication thread
/// stopped with an error fails at once.
fn wait_replication(
    bins: &Binaries,
    sandbox: &Sandbox,
    indices: &[usize],
) -> Result<(), SandboxError> {
    let deadline = Instant::now() + REPLICATION_TIMEOUT;
    let mut pending = indices.to_vec();
    loop {
        let mut still = Vec::new();
        let mut last_reason = String::new();
        for index in pending {
            let server = sandbox.server(index)?;
            match replica_state(bins, sandbox, server)? {
                ReplicaState::NotReplica | ReplicaState::CaughtUp => {}
                ReplicaState::Behind(reason) => {
                    if still.is_empty() {
                        last_reason = reason;
                    }
                    still.push(index);
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(SandboxError::Replication {
                server: sandbox.server(still[0])?.name.clone(),
                detail: format!(
                    "not caught up after {} s: {last_reason}",
                    REPLICATION_TIMEOUT.as_secs()
                ),
            });
        }
        pending = still;
        thread::sleep(POLL);
    }
}

fn field<'a>(row: &'a client::Row, name: &str) -> &'a str {
    row.get(name).map(String::as_str).unwrap_or("")
}

fn replica_state(
    bins: &Binaries,
    sandbox: &Sandbox,
    server: &SandboxServer,
) -> Result<ReplicaState, SandboxError> {
    let rows = client::query(&bins.mariadb, server, "SHOW SLAVE STATUS")?;
    let Some(row) = rows.first() else {
        return Ok(ReplicaState::NotReplica);
    };
    let io = field(row, "Slave_IO_Running");
    let sql = field(row, "Slave_SQL_Running");
    // A thread that stopped on an error will not recover by waiting
    // (while connecting, the IO thread shows "Connecting", not "No").
    for (running, errno, error) in [
        (io, "Last_IO_Errno", "Last_IO_Error"),
        (sql, "Last_SQL_Errno", "Last_SQL_Error"),
    ] {
        if running == "No" && !matches!(field(row, errno), "" | "0") {
            return Err(SandboxError::Replication {
                server: server.name.clone(),
                detail: format!("{errno} {}: {}", field(row, errno), field(row, error)),
            });
        }
    }
    if io != "Yes" || sql != "Yes" {
        return Ok(ReplicaState::Behind(format!(
            "Slave_IO_Running={io} Slave_SQL_Running={sql} {}",
            field(row, "Last_IO_Error")
        )));
    }
    let master_port = field(row, "Master_Port").parse::<u16>().ok();
    let Some(master) = sandbox
        .servers
        .iter()
        .find(|s| Some(s.port) == master_port && s.name != server.name)
    else {
        // Replicating from outside the sandbox: running is all we can check.
        return Ok(ReplicaState::CaughtUp);
    };
    let rows = client::query(
        &bins.mariadb,
        master,
        "SELECT @@GLOBAL.gtid_binlog_pos AS pos",
    )?;
    let master_pos = rows.first().map(|r| field(r, "pos")).unwrap_or("");
    // SHOW SLAVE STATUS only has Gtid_IO_Pos (received); applied is here.
    let rows = client::query(
        &bins.mariadb,
        server,
        "SELECT @@GLOBAL.gtid_slave_pos AS pos",
    )?;
    let replica_pos = rows.first().map(|r| field(r, "pos")).unwrap_or("");
    if GtidPos::parse(replica_pos).covers(&GtidPos::parse(master_pos)) {
        Ok(ReplicaState::CaughtUp)
    } else {
        Ok(ReplicaState::Behind(format!(
            "gtid_slave_pos {replica_pos:?} behind {}'s gtid_binlog_pos {master_pos:?}",
            master.name
        )))
    }
}

/// The proxy configuration for this sandbox, in the format of
/// [`crate::config`].
/// The admin and HTTP ports of the generated config, derived from the
/// proxy port: 6033 → admin 6032, HTTP 9033 (the defaults); other proxy
/// ports keep the same offsets, so sandboxes with different proxy ports
/// run their proxies side by side.
pub fn proxy_side_ports(proxy_port: u16) -> (u16, u16) {
    (
        proxy_port.saturating_sub(1),
        proxy_port.saturating_add(3000),
    )
}

fn proxy_config_text(sandbox: &Sandbox, proxy_port: u16) -> String {
    let dir = sandbox.dir.display().to_string().replace(['\n', '\r'], " ");
    let (admin_port, http_port) = proxy_side_ports(proxy_port);
    // Top-level keys, so before the first table.
    let tls = match &sandbox.tls_ca {
        Some(ca) => format!(
            "# The servers require TLS; their certificate is signed by this CA.\n\
             server_tls = \"verify_identity\"\n\
             server_tls_ca = {}\n",
            toml_string(&ca.display().to_string())
        ),
        None => String::new(),
    };
    let mut text = format!(
        "# Generated by `rwproxy sandbox up` for the sandbox in {dir}.\n\
         # Start the proxy: rwproxy run --config {}\n\
         listen = \"127.0.0.1:{proxy_port}\"\n\
         http_listen = \"127.0.0.1:{http_port}\"\n\
         # Client accounts are the servers' own (auth = \"servers\"): app/app, root/root.\n\
         {tls}\
         \n\
         [monitor]\n\
         user = \"rwproxy_monitor\"\n\
         password = \"monitor\"\n\
         \n\
         [admin]\n\
         listen = \"127.0.0.1:{admin_port}\"\n\
         user = \"admin\"\n\
         password = \"admin\"\n\
         \n\
         [failover]\n\
         replication_user = \"repl\"\n\
         replication_password = \"repl\"\n",
        sandbox
            .config_path
            .display()
            .to_string()
            .replace(['\n', '\r'], " ")
    );
    for (i, s) in sandbox.servers.iter().enumerate() {
        let role = if i == 0 { "primary" } else { "replica" };
        text.push_str(&format!(
            "\n[[servers]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"{role}\"\n",
            s.name, s.port
        ));
    }
    text
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Writes the generated proxy config, unless the operator edited the one
/// already there: it is replaced only when absent, identical to what the
/// sandbox generated last time (kept beside it, [`LAST_GENERATED`]) or to
/// the new text. An edited file stays; the new text goes to
/// `rwproxy.toml.new`, and a note says so.
fn write_proxy_config(sandbox: &Sandbox, proxy_port: u16) -> Result<(), SandboxError> {
    let text = proxy_config_text(sandbox, proxy_port);
    Config::parse(&text).map_err(|source| SandboxError::Config {
        path: sandbox.config_path.clone(),
        source,
    })?;
    let last_path = sandbox.dir.join(LAST_GENERATED);
    let ours = match fs::read(&sandbox.config_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(io_error("read", &sandbox.config_path)(e)),
        Ok(current) => {
            current == text.as_bytes() || fs::read(&last_path).is_ok_and(|last| last == current)
        }
    };
    if ours {
        fs::write(&sandbox.config_path, &text).map_err(io_error("write", &sandbox.config_path))?;
    } else {
        let mut new = sandbox.config_path.clone().into_os_string();
        new.push(".new");
        let new = PathBuf::from(new);
        fs::write(&new, &text).map_err(io_error("write", &new))?;
        let _ = writeln!(
            io::stderr(),
            "note: {} was edited since the sandbox wrote it and is kept; the generated configuration is in {}",
            sandbox.config_path.display(),
            new.display()
        );
    }
    fs::write(&last_path, &text).map_err(io_error("write", &last_path))
}

/// Stops the servers started from `dir`: SIGTERM, up to 20 s for a clean
/// shutdown, then SIGKILL. Only pid files are removed (and only stale ones:
/// `mariadbd` removes its own on a clean shutdown); data stays.
pub fn down(dir: &Path) -> Result<(), SandboxError> {
    let sandbox = Sandbox::open(dir)?;
    let all: Vec<usize> = (0..sandbox.servers.len()).collect();
    stop_servers(&sandbox, &all, STOP_GRACE)
}

/// Stops the listed servers that are running, per their pid files.
fn stop_servers(sandbox: &Sandbox, indices: &[usize], grace: Duration) -> Result<(), SandboxError> {
    let mut running = Vec::new();
    for &index in indices {
        let server = sandbox.server(index)?;
        if let Some(pid) = server.running_pid() {
            running.push((server, pid));
        }
    }
    stop_processes(&running, grace)
}

/// Stops servers this call spawned, after a failed `up`. By the pids we
/// spawned, not by pid file: a server that had not written its pid file yet
/// would be missed and left running.
fn stop_spawned(
    sandbox: &Sandbox,
    started: &[(usize, process::Spawned)],
) -> Result<(), SandboxError> {
    let mut running = Vec::new();
    for (index, spawned) in started {
        if spawned.exit_status().is_none() {
            running.push((sandbox.server(*index)?, spawned.pid));
        }
    }
    stop_processes(&running, Duration::from_secs(5))
}

/// SIGTERM, a grace period for a clean shutdown, then SIGKILL; removes pid
/// files left behind.
fn stop_processes(running: &[(&SandboxServer, u32)], grace: Duration) -> Result<(), SandboxError> {
    for (server, pid) in running {
        process::signal(*pid, "TERM").map_err(io_error("run kill for", &server.pid_file))?;
    }
    let deadline = Instant::now() + grace;
    while running.iter().any(|(_, pid)| process_alive(*pid)) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    for (server, pid) in running {
        if process_alive(*pid) {
            kill_and_wait(server, *pid)?;
        }
        remove_pid_file(server)?;
    }
    Ok(())
}

fn kill_and_wait(server: &SandboxServer, pid: u32) -> Result<(), SandboxError> {
    process::signal(pid, "KILL").map_err(io_error("run kill for", &server.pid_file))?;
    let deadline = Instant::now() + KILL_WAIT;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return Err(SandboxError::StopFailed {
                server: server.name.clone(),
                pid,
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn remove_pid_file(server: &SandboxServer) -> Result<(), SandboxError> {
    match fs::remove_file(&server.pid_file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_error("remove", &server.pid_file)(e))
        }
        _ => Ok(()),
    }
}

/// Starts one stopped server of the sandbox again and waits until it
/// accepts connections (not until it has caught up). Does nothing if it is
/// running. It starts read-only if it is configured to replicate, writable
/// otherwise (a killed primary comes back writable, as a real one would).
pub fn start_server(sandbox: &Sandbox, index: usize) -> Result<(), SandboxError> {
    let server = sandbox.server(index)?;
    if server.running_pid().is_some() {
        return Ok(());
    }
    let bins = Binaries::find()?;
    let semi_sync = Manifest::read(&sandbox.dir)?.is_some_and(|m| m.semi_sync);
    check_port_free(server)?;
    // A server restarted here (typically one a test killed) comes back to
    // rejoin as a replica. With lossless semi-sync, MariaDB's crash
    // recovery then truncates from its binlog the transactions that no
    // replica acknowledged (MDEV-21117), so it does not diverge from the
    // promoted replica, but MariaDB 10.11.19 does that only when told the
    // server starts as a replica (`--init-rpl-role=SLAVE`): without it the
    // unacknowledged tail is committed and the server cannot rejoin.
    let extra: &[&str] = if semi_sync {
        &["--init-rpl-role=SLAVE"]
    } else {
        &[]
    };
    let (_, spawned) = spawn_server(&bins, sandbox, index, semi_sync, is_replica(server), extra)?;
    wait_ready(&bins, sandbox, &[(index, Some(&spawned))])
}

/// Stops one server cleanly (SIGTERM, SIGKILL after the grace period) and
/// waits until it is gone — for tests that restart a server the way an
/// operator would. Does nothing if it is not running; data stays.
pub fn stop_server(sandbox: &Sandbox, index: usize) -> Result<(), SandboxError> {
    stop_servers(sandbox, &[index], STOP_GRACE)
}

/// Kills one server with SIGKILL (by its pid file) and waits until it is
/// gone — for failure tests. Does nothing if it is not running.
pub fn kill_server(sandbox: &Sandbox, index: usize) -> Result<(), SandboxError> {
    let server = sandbox.server(index)?;
    match server.running_pid() {
        Some(pid) => kill_and_wait(server, pid),
        None => Ok(()),
    }
}

/// One server as `status` sees it.
#[derive(Debug, Clone)]
pub struct ServerStatus {
    pub name: String,
    pub port: u16,
    /// From the pid file, if that process is running.
    pub pid: Option<u32>,
    /// Whether it answers a query.
    pub answering: bool,
    /// `primary`, `replica`, `read-only` (read-only without replication), or
    /// `-` when it does not answer.
    pub role: String,
    /// Replication threads, source, lag and GTID position, in words.
    pub replication: String,
}

/// The state of each server of the sandbox in `dir`.
pub fn status(dir: &Path) -> Result<Vec<ServerStatus>, SandboxError> {
    let sandbox = Sandbox::open(dir)?;
    let bins = Binaries::find()?;
    Ok(sandbox
        .servers
        .iter()
        .map(|s| server_status(&bins, &sandbox, s))
        .collect())
}

fn server_status(bins: &Binaries, sandbox: &Sandbox, server: &SandboxServer) -> ServerStatus {
    let pid = server.running_pid();
    let mut st = ServerStatus {
        name: server.name.clone(),
        port: server.port,
        pid,
        answering: false,
        role: "-".into(),
        replication: "-".into(),
    };
    if pid.is_none() {
        return st;
    }
    let vars = client::query(
        &bins.mariadb,
        server,
        "SELECT @@GLOBAL.read_only AS ro, @@GLOBAL.gtid_binlog_pos AS pos, \
         @@GLOBAL.gtid_slave_pos AS slave_pos",
    );
    let slave = client::query(&bins.mariadb, server, "SHOW SLAVE STATUS");
    let (Ok(vars), Ok(slave)) = (vars, slave) else {
        st.replication = "not answering".into();
        return st;
    };
    st.answering = true;
    let read_only = vars.first().map(|r| field(r, "ro")) == Some("1");
    let binlog_pos = vars
        .first()
        .map(|r| field(r, "pos").to_string())
        .unwrap_or_default();
    match slave.first() {
        Some(row) => {
            st.role = "replica".into();
            let port = field(row, "Master_Port");
            let source = sandbox
                .servers
                .iter()
                .find(|s| s.port.to_string() == port)
                .map(|s| s.name.clone())
                .unwrap_or_else(|| format!("{}:{port}", field(row, "Master_Host")));
            let mut text = format!(
                "from {source}: io={} sql={} lag={}s gtid_slave_pos={}",
                field(row, "Slave_IO_Running"),
                field(row, "Slave_SQL_Running"),
                field(row, "Seconds_Behind_Master"),
                vars.first().map(|r| field(r, "slave_pos")).unwrap_or(""),
            );
            for error in ["Last_IO_Error", "Last_SQL_Error"] {
                if !field(row, error).is_empty() {
                    text.push_str(&format!(" {error}: {}", field(row, error)));
                }
            }
            st.replication = text;
        }
        None => {
            st.role = if read_only { "read-only" } else { "primary" }.into();
            st.replication = format!("gtid_binlog_pos={binlog_pos}");
        }
    }
    st
}

/// Runs a `rwproxy sandbox …` command, printing for humans.
pub fn run_cli(cmd: SandboxCommand) -> Result<(), SandboxError> {
    match cmd {
        SandboxCommand::Up {
            dir,
            base_port,
            replicas,
            proxy_port,
            semi_sync,
            tls,
            flavor,
        } => {
            let ports = (0..=replicas)
                .map(|i| {
                    u16::try_from(i)
                        .ok()
                        .and_then(|i| base_port.checked_add(i))
                        .ok_or_else(|| {
                            SandboxError::InvalidOptions(format!(
                                "{replicas} replicas from base port {base_port} exceed port 65535"
                            ))
                        })
                })
                .collect::<Result<Vec<u16>, _>>()?;
            let (admin_port, http_port) = proxy_side_ports(proxy_port);
            for (what, p) in [
                ("proxy port", proxy_port),
                ("admin port (proxy port - 1)", admin_port),
                ("HTTP port (proxy port + 3000)", http_port),
            ] {
                if ports.contains(&p) {
                    return Err(SandboxError::InvalidOptions(format!(
                        "{what} {p} collides with a server port"
                    )));
                }
            }
            let started = Instant::now();
            if flavor == Flavor::Mysql {
                if semi_sync || tls {
                    return Err(SandboxError::InvalidOptions(
                        "--semi-sync and --tls are not available with --flavor mysql".into(),
                    ));
                }
                let sb = mysql::up(&dir, &ports, proxy_port, None)?;
                emit(&mysql::up_text(&sb, proxy_port, started.elapsed()));
                return Ok(());
            }
            let sandbox = up_with_tls(
                &UpOptions {
                    dir,
                    ports,
                    proxy_port,
                    semi_sync,
                    owner_pid: None,
                },
                tls.then(SandboxTls::default).as_ref(),
            )?;
            emit(&up_text(&sandbox, proxy_port, semi_sync, started.elapsed()));
            Ok(())
        }
        SandboxCommand::Down { dir } => {
            if let Some(sb) = mysql::MysqlSandbox::open(&dir)? {
                mysql::down_sandbox(&sb)?;
            } else {
                down(&dir)?;
            }
            emit(&format!(
                "Sandbox in {} stopped (data kept).\n",
                dir.display()
            ));
            Ok(())
        }
        SandboxCommand::Status { dir } => {
            if let Some(sb) = mysql::MysqlSandbox::open(&dir)? {
                emit(&status_text(&mysql::status(&sb)));
                return Ok(());
            }
            emit(&status_text(&status(&dir)?));
            Ok(())
        }
    }
}

/// Writes CLI output; a closed stdout (`… | head`) is not an error worth a
/// panic, which is what `println!` would do.
fn emit(text: &str) {
    use std::io::Write;
    let _ = io::stdout().lock().write_all(text.as_bytes());
}

fn up_text(sandbox: &Sandbox, proxy_port: u16, semi_sync: bool, took: Duration) -> String {
    let mut text = format!(
        "Sandbox up in {} ({} server(s), {} replication) after {:.1} s.\n\n\
         Servers (accounts root/root, app/app, rwproxy_monitor/monitor, repl/repl):\n",
        sandbox.dir.display(),
        sandbox.servers.len(),
        if semi_sync { "semi-sync" } else { "async" },
        took.as_secs_f64()
    );
    // Servers of a TLS sandbox refuse plaintext TCP logins.
    let ssl = sandbox
        .tls_ca
        .as_ref()
        .map(|ca| format!(" --ssl-ca={}", ca.display()))
        .unwrap_or_default();
    for s in &sandbox.servers {
        let pid = s
            .running_pid()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        text.push_str(&format!(
            "  {:<10} mariadb -h127.0.0.1 -P{} -uroot -proot{ssl}    (pid {pid}, log {})\n",
            s.name,
            s.port,
            s.log.display()
        ));
    }
    text.push_str(&format!(
        "\nStart the proxy:\n  rwproxy run --config {}\n\
         Connect through it:\n  mariadb -h127.0.0.1 -P{proxy_port} -uapp -papp app\n\
         Stop the servers:\n  rwproxy sandbox down --dir {}\n",
        sandbox.config_path.display(),
        sandbox.dir.display()
    ));
    text
}

fn status_text(servers: &[ServerStatus]) -> String {
    let mut text = format!(
        "{:<10} {:>5} {:>8} {:<8} {:<9} REPLICATION\n",
        "NAME", "PORT", "PID", "RUNNING", "ROLE"
    );
    for s in servers {
        let pid = s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let running = match (s.pid.is_some(), s.answering) {
            (true, true) => "yes",
            (true, false) => "starting",
            _ => "no",
        };
        text.push_str(&format!(
            "{:<10} {:>5} {:>8} {:<8} {:<9} {}\n",
            s.name, s.port, pid, running, s.role, s.replication
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_round_trips_through_config_parse() {
        let sandbox = Sandbox::layout(Path::new("/tmp/sb"), &[3310, 3311, 3312]);
        let text = proxy_config_text(&sandbox, 6033);
        let config = Config::parse(&text).expect("generated config parses");
        assert_eq!(config.listen, "127.0.0.1:6033");
        assert_eq!(config.monitor.user, "rwproxy_monitor");
        assert_eq!(config.servers.len(), 3);
        assert_eq!(config.servers[0].name, "primary");
        assert_eq!(config.servers[0].role, rwproxy::config::Role::Primary);
        assert_eq!(config.servers[2].port, 3312);
        assert_eq!(config.servers[2].role, rwproxy::config::Role::Replica);
        assert_eq!(config.auth, rwproxy::config::AuthMode::Servers);
        assert!(config.users.is_empty());
        let admin = config.admin.expect("admin section");
        assert_eq!(
            (admin.listen.as_str(), admin.user.as_str()),
            ("127.0.0.1:6032", "admin")
        );
        assert_eq!(config.http_listen, "127.0.0.1:9033");
        assert_eq!(
            config.failover.expect("failover section").replication_user,
            "repl"
        );
    }

    #[test]
    fn layout_and_arguments() {
        let sandbox = Sandbox::layout(Path::new("/tmp/sb"), &[4000, 4001]);
        let r = &sandbox.servers[1];
        assert_eq!(r.name, "replica1");
        assert_eq!(r.socket, Path::new("/tmp/sb/replica1/mysqld.sock"));
        let args = server_args(r, 1, true, true, true, None);
        assert_eq!(args[0], "--no-defaults");
        assert_eq!(args[1], "--user=root");
        assert!(args.contains(&"--server-id=2".to_string()));
        assert!(args.contains(&"--read-only=1".to_string()));
        assert!(args.contains(&"--rpl-semi-sync-slave-enabled=1".to_string()));
        let args = server_args(&sandbox.servers[0], 0, false, false, false, None);
        assert!(
            !args
                .iter()
                .any(|a| a == "--user=root" || a == "--read-only=1")
        );
        assert!(!args.iter().any(|a| a.starts_with("--ssl")));
        let args = server_args(
            &sandbox.servers[0],
            0,
            false,
            false,
            false,
            Some(Path::new("/tmp/sb")),
        );
        assert!(args.contains(&"--ssl-ca=/tmp/sb/tls/ca.pem".to_string()));
        assert!(args.contains(&"--ssl-cert=/tmp/sb/tls/server.pem".to_string()));
        assert!(args.contains(&"--require-secure-transport=ON".to_string()));
    }

    #[test]
    fn tls_proxy_config_verifies_the_servers() {
        let mut sandbox = Sandbox::layout(Path::new("/tmp/sb"), &[3310, 3311]);
        sandbox.tls_ca = Some(certs::ca_path(&sandbox.dir));
        let c = Config::parse(&proxy_config_text(&sandbox, 6033)).expect("valid config");
        assert_eq!(c.server_tls, rwproxy::config::ServerTlsMode::VerifyIdentity);
        assert_eq!(
            c.server_tls_ca.as_deref(),
            Some(Path::new("/tmp/sb/tls/ca.pem"))
        );
    }

    #[test]
    fn manifest_round_trips() {
        let sandbox = Sandbox::layout(Path::new("/tmp/sb"), &[4000, 4001]);
        let m = Manifest::new(ManifestState::Ready, true, &sandbox);
        let text = toml::to_string(&m).expect("serializes");
        let back: Manifest = toml::from_str(&text).expect("parses");
        assert_eq!(back.ports(), vec![4000, 4001]);
        assert_eq!(back.state, ManifestState::Ready);
        assert!(back.semi_sync);
    }

    #[test]
    fn bad_ports_are_rejected() {
        assert!(validate_ports(&[]).is_err());
        assert!(validate_ports(&[0]).is_err());
        assert!(validate_ports(&[5, 6, 5]).is_err());
        assert!(validate_ports(&[5, 6]).is_ok());
    }
}
