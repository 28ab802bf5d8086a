//! Configuration: the TOML file, its defaults, and its validation.
//!
//! What the operator configured lives here and only here; what the monitor
//! observes lives in [`crate::topology`]. The two are never mixed (a lesson
//! from ProxySQL #5540, where monitor edits leaked into cluster config).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors found while loading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for our schema (the message names the field).
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value parsed but makes no sense; `field` names it.
    #[error("invalid value for `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

/// A [`ConfigError::Invalid`] for `field`.
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The role a server is configured with. The monitor may later observe a
/// different one (after a promotion); the configured role is only the
/// starting assumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
}

/// What to do with a read when no replica may serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaFallback {
    /// Send the read to the primary (always fresh, costs primary capacity).
    #[default]
    Primary,
    /// Answer the client with an error.
    Error,
}

/// Where client accounts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The primary's own accounts (`mysql.global_priv`), read by the monitor account.
    #[default]
    Servers,
    /// The `[[users]]` list of this file.
    Config,
}

/// Read consistency a session gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Reads may be served by any replica within the lag limit.
    Eventual,
    /// A session never reads data older than its own last write.
    #[default]
    Session,
    /// A read sees every transaction the primary had committed when the
    /// read arrived, whoever wrote it (see `primary_pos` and
    /// `Session::global_read`). Costs a query on the primary per read
    /// (shared by concurrent reads) and, when the replica is behind, a wait.
    Global,
}

/// How a replica is chosen for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round-robin (the classic design).
    #[default]
    RoundRobin,
    /// The replica with the fewest statements in flight (weight-scaled).
    LeastConnections,
    /// Weighted round-robin over sessions: each session reads from one
    /// replica for as long as it stays eligible (HAProxy-like affinity).
    /// Half the server connections and threads of per-statement
    /// round-robin with two replicas, and warmer ones: on the 2-core
    /// benchmark machine the servers spent ~3–9 µs less CPU per point
    /// select. One busy session no longer spreads over the replicas.
    Session,
}

/// When a session's backend connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Held for the session's life (every driver feature works unchanged;
    /// the fewest round trips per statement).
    #[default]
    Session,
    /// Returned after each transaction (an autocommit statement is one)
    /// whenever the session holds no state that cannot move to another
    /// connection; many clients share few server connections.
    Transaction,
    /// Returned after every statement; multi-statement transactions are
    /// refused, and a connection is not kept after a write for a following
    /// `LAST_INSERT_ID()` (drivers read the insert id from the OK packet).
    Statement,
}

/// How rwproxy secures its own connections to the servers (data path,
/// monitor, promotion, account reads).
///
/// There is deliberately no `preferred` (use TLS when the server offers
/// it, plaintext otherwise): it protects against nobody who can tamper with
/// the network, since stripping `CLIENT_SSL` from the greeting silently
/// downgrades it, and it hides a misconfigured server behind a connection
/// that "works". A fleet migrating to TLS sets `server_tls` for the servers
/// that have it and `tls = "disabled"` on those that do not yet, so what is
/// encrypted is always what the file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ServerTlsMode {
    /// Plaintext, even if the server offers TLS.
    #[default]
    Disabled,
    /// Encrypted, but the server's certificate is not checked (handshake
    /// signatures still are): protects against eavesdropping only.
    Required,
    /// The certificate chain must lead to `server_tls_ca`; the name in it
    /// is not checked (servers addressed by names their certificates lack).
    VerifyCa,
    /// Chain and name: the certificate must be valid for the server's
    /// configured `host` (DNS name or IP address SAN).
    VerifyIdentity,
}

impl ServerTlsMode {
    /// Whether connections use TLS at all.
    pub fn enabled(self) -> bool {
        self != ServerTlsMode::Disabled
    }

    /// Whether the mode checks the certificate against `server_tls_ca`.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ServerTlsMode::VerifyCa | ServerTlsMode::VerifyIdentity
        )
    }

    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Disabled => "disabled",
            ServerTlsMode::Required => "required",
            ServerTlsMode::VerifyCa => "verify_ca",
            ServerTlsMode::VerifyIdentity => "verify_identity",
        }
    }
}

/// One backend MariaDB/MySQL server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unique name used in logs, metrics and admin commands.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_mysql_port")]
    pub port: u16,
    /// Configured role; the monitor's observation wins once it has one.
    #[serde(default = "default_role")]
    pub role: Role,
    /// Relative share of reads among replicas (0 = never read from it).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Per-server override of `max_replica_lag_ms`.
    #[serde(default)]
    pub max_replica_lag_ms: Option<u64>,
    /// `OFFLINE`: no new work is sent here (the operator's choice).
    #[serde(default)]
    pub offline: bool,
    /// Per-server override of `server_tls`.
    #[serde(default)]
    pub tls: Option<ServerTlsMode>,
    /// Protocol compression on rwproxy's connections to this server
    /// (client sessions' backend connections), independent of the
    /// client's own leg: worth it across zones, not on loopback.
    #[serde(default)]
    pub compression: ServerCompression,
    /// zstd level for `compression = "zstd"` (1–22).
    #[serde(default = "default_zstd_level")]
    pub compression_level: i32,
}

/// Compression towards one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ServerCompression {
    /// Uncompressed (the default).
    #[default]
    Off,
    /// `CLIENT_COMPRESS` (zlib); MariaDB and MySQL servers offer it.
    Zlib,
    /// `CLIENT_ZSTD_COMPRESSION_ALGORITHM`; MySQL 8.0.18+ only.
    Zstd,
}

/// A compression algorithm clients may negotiate with rwproxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCompression {
    /// `CLIENT_COMPRESS` (`mariadb --compress`, most drivers' `compress`).
    Zlib,
    /// `CLIENT_ZSTD_COMPRESSION_ALGORITHM` (MySQL 8.0.18+ clients), at
    /// the level the client asks for.
    Zstd,
}

impl ServerConfig {
    /// `host:port`, as used to connect.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A client account known to rwproxy. Exactly one of `password` and
/// `password_hash` is set (directly or through its `_env` / `_file`
/// alternative, resolved at load); only the native hash (`*HEX` of
/// SHA1(SHA1(password))) is ever needed at run time.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Account name, the same on rwproxy and on every server.
    pub name: String,
    /// Cleartext password (convenient for demos; prefer `password_hash`).
    #[serde(default)]
    pub password: Option<String>,
    /// `password` from this environment variable.
    #[serde(default, skip_serializing)]
    pub password_env: Option<String>,
    /// `password` from this file.
    #[serde(default, skip_serializing)]
    pub password_file: Option<PathBuf>,
    /// `mysql_native_password` hash as `SELECT PASSWORD('x')` prints it.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// `password_hash` from this environment variable.
    #[serde(default, skip_serializing)]
    pub password_hash_env: Option<String>,
    /// `password_hash` from this file.
    #[serde(default, skip_serializing)]
    pub password_hash_file: Option<PathBuf>,
    /// Refuse this user's plaintext logins (ERR 3159), like the global
    /// `require_tls` but for one account.
    #[serde(default)]
    pub require_tls: bool,
}

impl std::fmt::Debug for UserConfig {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("require_tls", &self.require_tls)
            .finish()
    }
}

/// The account the monitor uses to poll servers.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// `password` from this environment variable.
    #[serde(default, skip_serializing)]
    pub password_env: Option<String>,
    /// `password` from this file.
    #[serde(default, skip_serializing)]
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorConfig")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The admin port (MySQL protocol) and the HTTP endpoint.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// MySQL-protocol admin port; loopback by default.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Admin account (required: the admin port never runs open).
    pub user: String,
    /// Required, here or through `password_env` / `password_file`.
    #[serde(default)]
    pub password: String,
    /// `password` from this environment variable.
    #[serde(default, skip_serializing)]
    pub password_env: Option<String>,
    /// `password` from this file.
    #[serde(default, skip_serializing)]
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Promotion and failover settings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Account replicas use to replicate from a new primary
    /// (`CHANGE MASTER TO … MASTER_USER`).
    pub replication_user: String,
    #[serde(default)]
    pub replication_password: String,
    /// `replication_password` from this environment variable.
    #[serde(default, skip_serializing)]
    pub replication_password_env: Option<String>,
    /// `replication_password` from this file.
    #[serde(default, skip_serializing)]
    pub replication_password_file: Option<PathBuf>,
    /// How long in-flight transactions may run on after a switchover
    /// starts holding writes, and how long the candidate may take to catch up.
    #[serde(default = "default_switchover_timeout_ms")]
    pub switchover_timeout_ms: u64,
    /// A replica further behind than this is not promoted without FORCE.
    #[serde(default = "default_max_promotion_lag_ms")]
    pub max_promotion_lag_ms: u64,
    /// Promote a replica automatically when the primary is down.
    #[serde(default)]
    pub auto_failover: bool,
    /// Failed checks of the primary before an automatic failover.
    #[serde(default = "default_failover_after")]
    pub failover_after: u32,
    /// Point a returning old primary at the new one as a replica.
    #[serde(default)]
    pub auto_rejoin: bool,
    /// A primary rwproxy cannot reach is dead only once no replica has
    /// received anything from it (event or replication heartbeat) for this
    /// long. Shorter: faster failover of a hung primary; longer: fewer
    /// false positives on a slow or briefly stalled one. A killed primary
    /// (replicas' IO threads disconnected) does not wait for it.
    #[serde(default = "default_primary_failure_timeout_ms")]
    pub primary_failure_timeout_ms: u64,
    /// Ask the replicas before failing over (see
    /// `primary_failure_timeout_ms`). Off = the primary is dead as soon as
    /// rwproxy cannot reach it, which splits the brain on a partition
    /// between rwproxy and the primary alone; only for topologies without
    /// replicas that could tell.
    #[serde(default = "default_true")]
    pub verify_primary_failure: bool,
}

impl std::fmt::Debug for FailoverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverConfig")
            .field("replication_user", &self.replication_user)
            .field("switchover_timeout_ms", &self.switchover_timeout_ms)
            .field("auto_failover", &self.auto_failover)
            .finish_non_exhaustive()
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where applications connect (MySQL protocol).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A Unix socket applications on this host may connect to as well
    /// (same protocol; no TLS offered; clients count as host `localhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_socket: Option<std::path::PathBuf>,
    /// Permissions of `listen_socket`, an octal string such as `"0660"`
    /// (default: what the process umask leaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_socket_mode: Option<String>,
    /// Owner of `listen_socket`: a user name or a numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_socket_owner: Option<String>,
    /// Group of `listen_socket`: a group name or a numeric gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_socket_group: Option<String>,
    /// HTTP endpoint for /metrics, /health, /status; `""` disables it.
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    /// PEM certificate chain offered to clients that ask for TLS.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
    /// Refuse clients that do not upgrade to TLS (ERR 3159).
    #[serde(default)]
    pub require_tls: bool,
    /// Compression algorithms offered to clients (`[]`: none; a client
    /// that asks for one anyway is refused at login).
    #[serde(default = "default_client_compression")]
    pub client_compression: Vec<ClientCompression>,
    /// TLS to the servers (data path, monitor, promotion, account reads);
    /// `[[servers]] tls` overrides it per server.
    #[serde(default)]
    pub server_tls: ServerTlsMode,
    /// PEM file with the CA certificate(s) server certificates must chain
    /// to; required by `verify_ca` and `verify_identity`.
    #[serde(default)]
    pub server_tls_ca: Option<std::path::PathBuf>,
    /// Largest packet payload accepted from a client or a server, in bytes;
    /// checked before anything is buffered.
    #[serde(default = "default_max_allowed_packet")]
    pub max_allowed_packet: usize,
    /// Bound on connecting + authenticating to a backend server.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Bound on a client's handshake (slow or silent clients are cut).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Client connections accepted at once; the next one gets ERR 1040.
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// Per-user cap on client connections (0 = no cap).
    #[serde(default)]
    pub max_connections_per_user: usize,
    /// A client silent this long between commands is disconnected (0 = never).
    #[serde(default)]
    pub client_idle_timeout_ms: u64,
    /// A client that stops reading its results this long is disconnected
    /// (its backend connection is closed, never reused).
    #[serde(default = "default_client_write_timeout_ms")]
    pub client_write_timeout_ms: u64,
    /// Session threads, each running its own event loop for the client
    /// sessions handed to it (0 = one per CPU). Read at start.
    #[serde(default)]
    pub worker_threads: usize,
    /// A client packet that has started arriving must be complete within
    /// this (MariaDB's `net_read_timeout`): a client that stalls mid-packet
    /// is disconnected even when `client_idle_timeout_ms` is off. 0 = off.
    #[serde(default = "default_client_read_timeout_ms")]
    pub client_read_timeout_ms: u64,
    /// A backend whose response to a statement has not ended this long
    /// after the statement was sent is cut: the client gets an ERR (the
    /// statement's outcome is unknown) and the connection is discarded.
    /// It bounds the whole response, so it must exceed the longest
    /// legitimate statement (and result transfer). 0 = off (the default:
    /// long-running statements are legitimate; a hung server is then cut
    /// only by a promotion or by TCP).
    #[serde(default)]
    pub backend_read_timeout_ms: u64,
    /// On SIGTERM: how long running statements and transactions may take
    /// to finish before remaining sessions are closed.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Distinct statement digests kept (least recently seen evicted; 0 turns
    /// digests off).
    #[serde(default = "default_digest_capacity")]
    pub digest_capacity: usize,
    /// Statements slower than this are logged with their digest (0 = off).
    #[serde(default)]
    pub slow_query_threshold_ms: u64,
    /// Where plain reads go when no replica qualifies.
    #[serde(default)]
    pub replica_fallback: ReplicaFallback,
    /// Idle backend connections kept per (server, user) pool, on each
    /// session thread.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// When backend connections go back to the pool (see [`PoolMode`]).
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Backend connections (in use + idle) per server that client sessions
    /// may open; 0 = no limit. Read at start-up.
    #[serde(default)]
    pub pool_max_per_server: usize,
    /// How long a statement waits for a connection when the server's pool
    /// is at `pool_max_per_server` before it gets ERR 1040.
    #[serde(default = "default_pool_wait_timeout_ms")]
    pub pool_wait_timeout_ms: u64,
    /// Prepared statements kept per backend connection in the sharing pool
    /// modes (least recently used ones are closed on the server).
    #[serde(default = "default_pool_stmt_cache")]
    pub pool_stmt_cache: usize,
    /// Idle pooled connections older than this are pinged before reuse, so a
    /// connection killed by the server's `wait_timeout` is never handed out.
    #[serde(default = "default_pool_ping_after_ms")]
    pub pool_ping_after_ms: u64,
    /// Idle pooled connections unused this long are closed (with
    /// `COM_QUIT`); 0 = kept until `pool_max_idle` or the server's
    /// `wait_timeout` ends them. See [`crate::app::close_idle_pooled`].
    #[serde(default = "default_pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
    /// How often the monitor polls each server.
    #[serde(default = "default_monitor_interval_ms")]
    pub monitor_interval_ms: u64,
    /// How often the primary's accounts are re-read (`auth = "servers"`;
    /// an unknown user or a wrong password also triggers a re-read).
    #[serde(default = "default_accounts_refresh_ms")]
    pub accounts_refresh_ms: u64,
    /// Consecutive failed checks before a server is marked down.
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// Replicas further behind than this serve no reads.
    #[serde(default = "default_max_replica_lag_ms")]
    pub max_replica_lag_ms: u64,
    /// Lag from a heartbeat row rwproxy writes on the primary (sub-second,
    /// catches a stalled IO thread) instead of `Seconds_Behind_Master`.
    #[serde(default)]
    pub heartbeat: bool,
    /// `session` (read your own writes), `eventual`, or `global` (every
    /// commit acknowledged before the read arrived).
    #[serde(default)]
    pub consistency: Consistency,
    /// How long a read may wait for a replica to catch up with the
    /// session's last write (`global`: the primary's position when the read
    /// arrived) before going to the primary (0 = never wait).
    #[serde(default)]
    pub causal_wait_ms: u64,
    /// Stored functions known not to write, besides those the primary's
    /// catalogue declares `NO SQL` or `READS SQL DATA`: a read calling
    /// only such functions may run on a replica. `"db.f"` names one
    /// function, `"f"` a function of that name in any schema (names ignore
    /// case, schemas do not). Reloadable; applies to new sessions.
    #[serde(default)]
    pub read_only_functions: Vec<String>,
    /// Replica selection.
    #[serde(default)]
    pub balance: Balance,
    /// Server version string announced to clients; defaults to the version
    /// of the configured primary, learned at start-up.
    #[serde(default)]
    pub server_version: Option<String>,
    /// The monitor account.
    pub monitor: MonitorConfig,
    /// Admin port; disabled when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Promotion settings; PROMOTE/FAILOVER are refused when absent.
    #[serde(default)]
    pub failover: Option<FailoverConfig>,
    /// Backend servers; exactly one is configured as primary.
    pub servers: Vec<ServerConfig>,
    /// Where client accounts come from: `servers` (default) or `config`.
    #[serde(default)]
    pub auth: AuthMode,
    /// Client accounts (used when `auth = "config"`).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Query rules, in order; the first that matches a statement decides
    /// (see [`crate::router::rules`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
}

/// What a query rule does with the statements it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Refuse with ERR 1142 naming the rule; the server never sees it.
    Deny,
}

/// Where a query rule sends the statements it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleRoute {
    Primary,
    Replica,
}

/// What a statement is, as far as routing cares. Spelled in snake case in
/// the configuration (`[[rules]] kind = "read_primary"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    /// A plain read that any up-to-date server may answer (replica-eligible).
    Read,
    /// A read that must run on the primary: locking reads, `SELECT … INTO`,
    /// reads of per-connection results (`LAST_INSERT_ID()`, `FOUND_ROWS()`,
    /// `ROW_COUNT()`), sequences, `SQL_CALC_FOUND_ROWS`, `SHOW`.
    ReadPrimary,
    /// Writes, DDL, `CALL`, `LOAD DATA`, and anything unknown or unparseable.
    Write,
    /// `BEGIN`, `START TRANSACTION`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `XA …`.
    Transaction,
    /// A `SET` statement: see `crate::router::set::parse_set` for what it sets.
    Set,
    /// `USE db`.
    Use,
}

/// One `[[rules]]` entry: every match field given must match, then
/// exactly one of `action` and `route` applies. Regular expressions and
/// digests are checked when the rules are compiled
/// (`crate::router::rules::RuleSet::compile`, at start-up and RELOAD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; shown in the client's ERR, in metrics and in SHOW STATS.
    pub name: String,
    /// Statement kind as the router classifies it (`read`, `read_primary`,
    /// `write`, `transaction`, `set`, `use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StatementKind>,
    /// A digest text as `SHOW DIGESTS` prints it (it is normalized again,
    /// so any spelling of the same statement shape works) or its 16-hex
    /// digest id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A regular expression (`regex` crate syntax) searched in the raw
    /// statement text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The session's user name, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The session's current schema, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RuleRoute>,
}

fn default_client_compression() -> Vec<ClientCompression> {
    vec![ClientCompression::Zlib, ClientCompression::Zstd]
}
fn default_zstd_level() -> i32 {
    crate::protocol::compress::DEFAULT_ZSTD_LEVEL
}
fn default_listen() -> String {
    "127.0.0.1:6033".into()
}
fn default_max_client_connections() -> usize {
    10_000
}
fn default_client_read_timeout_ms() -> u64 {
    30_000
}
fn default_client_write_timeout_ms() -> u64 {
    60_000
}
fn default_digest_capacity() -> usize {
    2000
}
fn default_shutdown_timeout_ms() -> u64 {
    30_000
}
fn default_http_listen() -> String {
    "127.0.0.1:9033".into()
}
fn default_max_allowed_packet() -> usize {
    64 * 1024 * 1024
}
fn default_connect_timeout_ms() -> u64 {
    2000
}
fn default_handshake_timeout_ms() -> u64 {
    10_000
}
fn default_pool_max_idle() -> usize {
    64
}
fn default_pool_wait_timeout_ms() -> u64 {
    5_000
}
fn default_pool_stmt_cache() -> usize {
    128
}
fn default_pool_idle_timeout_ms() -> u64 {
    5_000
}
fn default_pool_ping_after_ms() -> u64 {
    10_000
}
fn default_admin_listen() -> String {
    "127.0.0.1:6032".into()
}
fn default_switchover_timeout_ms() -> u64 {
    5_000
}
fn default_max_promotion_lag_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_primary_failure_timeout_ms() -> u64 {
    10_000
}
fn default_failover_after() -> u32 {
    3
}
fn default_monitor_interval_ms() -> u64 {
    500
}
fn default_accounts_refresh_ms() -> u64 {
    2000
}
fn default_down_after() -> u32 {
    2
}
fn default_max_replica_lag_ms() -> u64 {
    10_000
}
fn default_mysql_port() -> u16 {
    3306
}
fn default_role() -> Role {
    Role::Replica
}
fn default_weight() -> u32 {
    1
}

impl Config {
    /// Reads, parses and validates a file. Relative `*_file` paths are
    /// taken from the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_in(&text, path.parent()).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text (relative `*_file` paths are taken
    /// from the working directory).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_in(text, None)
    }

    fn parse_in(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            source: Box::new(e),
        })?;
        config.resolve_secrets(base)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads every password given as `<field>_env` or `<field>_file` into
    /// `<field>`. Each secret has exactly one source; errors name the field
    /// and the variable or path, never the content. The `_env` / `_file`
    /// fields stay set (and are not serialized, so a serialized `Config`
    /// carries the resolved values: never write one where secrets must not go).
    pub fn resolve_secrets(&mut self, base: Option<&Path>) -> Result<(), ConfigError> {
        let m = &mut self.monitor;
        if let Some(p) = secret(
            "monitor.password",
            !m.password.is_empty(),
            &m.password_env,
            &m.password_file,
            base,
        )? {
            m.password = p;
        }
        if let Some(a) = &mut self.admin
            && let Some(p) = secret(
                "admin.password",
                !a.password.is_empty(),
                &a.password_env,
                &a.password_file,
                base,
            )?
        {
            a.password = p;
        }
        if let Some(f) = &mut self.failover
            && let Some(p) = secret(
                "failover.replication_password",
                !f.replication_password.is_empty(),
                &f.replication_password_env,
                &f.replication_password_file,
                base,
            )?
        {
            f.replication_password = p;
        }
        for (i, u) in self.users.iter_mut().enumerate() {
            if let Some(p) = secret(
                &format!("users[{i}].password"),
                u.password.is_some(),
                &u.password_env,
                &u.password_file,
                base,
            )? {
                u.password = Some(p);
            }
            if let Some(h) = secret(
                &format!("users[{i}].password_hash"),
                u.password_hash.is_some(),
                &u.password_hash_env,
                &u.password_hash_file,
                base,
            )? {
                u.password_hash = Some(h);
            }
        }
        Ok(())
    }

    /// Checks what serde cannot: cross-field rules and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("listen", format!("{:?}: {e}", self.listen)))?;
        self.validate_socket()?;
        if !self.http_listen.is_empty() {
            self.http_listen
                .parse::<SocketAddr>()
                .map_err(|e| invalid("http_listen", format!("{:?}: {e}", self.http_listen)))?;
        }
        if self.max_allowed_packet < 1024 || self.max_allowed_packet > 1 << 30 {
            return Err(invalid(
                "max_allowed_packet",
                "must be between 1024 and 1073741824 bytes",
            ));
        }
        if self.connect_timeout_ms == 0 {
            return Err(invalid("connect_timeout_ms", "must be greater than 0"));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(invalid("handshake_timeout_ms", "must be greater than 0"));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(invalid("tls_key", "required when tls_cert is set")),
            (None, Some(_)) => return Err(invalid("tls_cert", "required when tls_key is set")),
            _ => {}
        }
        if self.require_tls && self.tls_cert.is_none() {
            return Err(invalid("require_tls", "needs tls_cert and tls_key"));
        }
        if self.pool_stmt_cache == 0 {
            return Err(invalid("pool_stmt_cache", "must be at least 1"));
        }
        if self.pool_mode != PoolMode::Session && self.pool_wait_timeout_ms == 0 {
            return Err(invalid("pool_wait_timeout_ms", "must be greater than 0"));
        }
        if self.server_tls.verifies() && self.server_tls_ca.is_none() {
            return Err(invalid(
                "server_tls_ca",
                format!(
                    "required when server_tls = \"{}\" (the CA server certificates must chain to)",
                    self.server_tls.as_str()
                ),
            ));
        }
        if self.monitor_interval_ms < 50 {
            return Err(invalid("monitor_interval_ms", "must be at least 50"));
        }
        if self.accounts_refresh_ms < 100 {
            return Err(invalid("accounts_refresh_ms", "must be at least 100"));
        }
        if self.down_after == 0 {
            return Err(invalid("down_after", "must be at least 1"));
        }
        if let Some(a) = &self.admin {
            a.listen
                .parse::<SocketAddr>()
                .map_err(|e| invalid("admin.listen", format!("{:?}: {e}", a.listen)))?;
            if a.user.is_empty() {
                return Err(invalid("admin.user", "must not be empty"));
            }
            if a.password.is_empty() {
                return Err(invalid(
                    "admin.password",
                    "an admin password is required (password, password_env or password_file)",
                ));
            }
        }
        if let Some(f) = &self.failover {
            if f.replication_user.is_empty() {
                return Err(invalid("failover.replication_user", "must not be empty"));
            }
            if f.failover_after == 0 {
                return Err(invalid("failover.failover_after", "must be at least 1"));
            }
            if f.primary_failure_timeout_ms < 100 {
                return Err(invalid(
                    "failover.primary_failure_timeout_ms",
                    "must be at least 100",
                ));
            }
        }
        if self.servers.is_empty() {
            return Err(invalid("servers", "at least one server is required"));
        }
        let mut names = HashSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            if s.name.is_empty() {
                return Err(invalid(format!("servers[{i}].name"), "must not be empty"));
            }
            if !names.insert(s.name.as_str()) {
                return Err(invalid(
                    format!("servers[{i}].name"),
                    format!("duplicate server name {:?}", s.name),
                ));
            }
            if s.host.is_empty() {
                return Err(invalid(format!("servers[{i}].host"), "must not be empty"));
            }
            if s.port == 0 {
                return Err(invalid(format!("servers[{i}].port"), "must not be 0"));
            }
            if !(1..=22).contains(&s.compression_level) {
                return Err(invalid(
                    format!("servers[{i}].compression_level"),
                    "must be between 1 and 22 (zstd levels)",
                ));
            }
            if let Some(mode) = s.tls
                && mode.verifies()
                && self.server_tls_ca.is_none()
            {
                return Err(invalid(
                    format!("servers[{i}].tls"),
                    format!("\"{}\" needs server_tls_ca", mode.as_str()),
                ));
            }
        }
        let primaries = self
            .servers
            .iter()
            .filter(|s| s.role == Role::Primary)
            .count();
        if primaries != 1 {
            return Err(invalid(
                "servers.role",
                format!("exactly one server must have role = \"primary\", found {primaries}"),
            ));
        }
        let mut users = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty() {
                return Err(invalid(format!("users[{i}].name"), "must not be empty"));
            }
            if !users.insert(u.name.as_str()) {
                return Err(invalid(
                    format!("users[{i}].name"),
                    format!("duplicate user {:?}", u.name),
                ));
            }
            match (&u.password, &u.password_hash) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        format!("users[{i}]"),
                        "set either `password` or `password_hash`, not both",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        format!("users[{i}]"),
                        "one of `password` or `password_hash` is required",
                    ));
                }
                (None, Some(h)) => {
                    if crate::protocol::auth::parse_native_hash(h).is_none() {
                        return Err(invalid(
                            format!("users[{i}].password_hash"),
                            "must be '*' followed by 40 hex digits, as PASSWORD() prints",
                        ));
                    }
                }
                (Some(_), None) => {}
            }
            if u.require_tls && self.tls_cert.is_none() {
                return Err(invalid(
                    format!("users[{i}].require_tls"),
                    "needs tls_cert and tls_key (clients must be able to upgrade)",
                ));
            }
        }
        Ok(())
    }

    /// `listen_socket` and its mode, owner and group.
    fn validate_socket(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.listen_socket else {
            for (field, set) in [
                ("listen_socket_mode", self.listen_socket_mode.is_some()),
                ("listen_socket_owner", self.listen_socket_owner.is_some()),
                ("listen_socket_group", self.listen_socket_group.is_some()),
            ] {
                if set {
                    return Err(invalid(field, "needs listen_socket"));
                }
            }
            return Ok(());
        };
        if path.as_os_str().is_empty() {
            return Err(invalid("listen_socket", "must not be empty"));
        }
        // sun_path holds 108 bytes, the terminating NUL included.
        if path.as_os_str().len() > 107 {
            return Err(invalid(
                "listen_socket",
                format!(
                    "{:?} is longer than the 107 bytes a Unix socket path may have",
                    path
                ),
            ));
        }
        self.socket_mode()?;
        for (field, v) in [
            ("listen_socket_owner", &self.listen_socket_owner),
            ("listen_socket_group", &self.listen_socket_group),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(field, "must not be empty"));
            }
        }
        Ok(())
    }

    /// `listen_socket_mode` as permission bits.
    pub fn socket_mode(&self) -> Result<Option<u32>, ConfigError> {
        let Some(m) = &self.listen_socket_mode else {
            return Ok(None);
        };
        match u32::from_str_radix(m.trim(), 8) {
            Ok(bits) if bits <= 0o7777 && !m.trim().is_empty() => Ok(Some(bits)),
            _ => Err(invalid(
                "listen_socket_mode",
                format!("{m:?} is not an octal mode such as \"0660\""),
            )),
        }
    }

    /// The TLS mode for connections to `server` (its override, else
    /// `server_tls`).
    pub fn tls_for(&self, server: &ServerConfig) -> ServerTlsMode {
        server.tls.unwrap_or(self.server_tls)
    }

    /// The TLS mode for a server known by its `host:port` address (the
    /// topology's key for monitor and promotion connections); `server_tls`
    /// for an address that is not configured.
    pub fn tls_for_addr(&self, addr: &str) -> ServerTlsMode {
        self.servers
            .iter()
            .find(|s| s.address() == addr)
            .map(|s| self.tls_for(s))
            .unwrap_or(self.server_tls)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// `[failover] primary_failure_timeout_ms` (its default without a
    /// `[failover]` section: the evidence is still reported).
    pub fn primary_failure_timeout(&self) -> Duration {
        Duration::from_millis(
            self.failover
                .as_ref()
                .map(|f| f.primary_failure_timeout_ms)
                .unwrap_or_else(default_primary_failure_timeout_ms),
        )
    }
    /// Replication heartbeat period rwproxy sets when it points a replica
    /// at a primary: a quarter of the failure timeout, so a live but idle
    /// primary is seen alive several times per timeout.
    pub fn replication_heartbeat(&self) -> Duration {
        (self.primary_failure_timeout() / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(30))
    }
    /// `backend_read_timeout_ms`, when on.
    pub fn backend_read_timeout(&self) -> Option<Duration> {
        (self.backend_read_timeout_ms > 0)
            .then(|| Duration::from_millis(self.backend_read_timeout_ms))
    }
    pub fn monitor_interval(&self) -> Duration {
        Duration::from_millis(self.monitor_interval_ms)
    }
    pub fn max_replica_lag(&self) -> Duration {
        Duration::from_millis(self.max_replica_lag_ms)
    }
    pub fn pool_ping_after(&self) -> Duration {
        Duration::from_millis(self.pool_ping_after_ms)
    }
}

/// Resolves one secret field from its `_env` / `_file` alternative.
/// `field` is the dotted path of the value field (`monitor.password`);
/// `literal` says whether the value field itself was set. Returns the
/// secret when it came from the environment or a file.
fn secret(
    field: &str,
    literal: bool,
    env: &Option<String>,
    file: &Option<PathBuf>,
    base: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    let key = field.rsplit('.').next().unwrap_or(field);
    let sources = usize::from(literal) + usize::from(env.is_some()) + usize::from(file.is_some());
    if sources > 1 {
        return Err(invalid(
            field,
            format!("set only one of `{key}`, `{key}_env` and `{key}_file`"),
        ));
    }
    if let Some(var) = env {
        let field = format!("{field}_env");
        if var.is_empty() {
            return Err(invalid(field, "names no environment variable"));
        }
        return match std::env::var(var) {
            Ok(v) if v.is_empty() => Err(invalid(
                field,
                format!("environment variable {var} is empty"),
            )),
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Err(invalid(
                field,
                format!("environment variable {var} is not set"),
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(invalid(
                field,
                format!("environment variable {var} is not valid UTF-8"),
            )),
        };
    }
    if let Some(path) = file {
        let field = format!("{field}_file");
        let path = match base {
            Some(b) if path.is_relative() => b.join(path),
            _ => path.clone(),
        };
        // The io::Error says why (missing, permissions), never what is in it.
        let bytes = std::fs::read(&path)
            .map_err(|e| invalid(&field, format!("cannot read {}: {e}", path.display())))?;
        let mut text = String::from_utf8(bytes)
            .map_err(|_| invalid(&field, format!("{} is not valid UTF-8", path.display())))?;
        // Editors and `echo` add a final newline; it is never part of the secret.
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(invalid(field, format!("{} is empty", path.display())));
        }
        return Ok(Some(text));
    }
    Ok(None)
}

/// Things that are valid but probably unwise, for `check-config`.
pub fn warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    let loopback = |addr: &str| {
        addr.parse::<SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false)
    };
    if let Some(a) = &c.admin
        && !loopback(&a.listen)
        && c.tls_cert.is_none()
    {
        w.push(format!(
            "admin.listen = {:?} is reachable beyond loopback and TLS is not configured: the admin password travels as a scramble only, but commands and answers are plaintext",
            a.listen
        ));
    }
    if !loopback(&c.listen) && c.tls_cert.is_none() {
        w.push(format!(
            "listen = {:?} is reachable beyond loopback without TLS (set tls_cert/tls_key)",
            c.listen
        ));
    }
    if c.auth == AuthMode::Servers && !c.users.is_empty() {
        w.push("auth = \"servers\": the [[users]] list is ignored".into());
    }
    for u in &c.users {
        if u.password.is_some() && u.password_env.is_none() && u.password_file.is_none() {
            w.push(format!(
                "user {:?} has a cleartext password in the file; prefer password_hash",
                u.name
            ));
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:6033"
[monitor]
user = "mon"
password = "m"
[[servers]]
name = "p"
host = "127.0.0.1"
port = 3306
role = "primary"
[[servers]]
name = "r1"
host = "127.0.0.1"
port = 3307
[[users]]
name = "app"
password = "secret"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[1].role, Role::Replica);
        assert_eq!(c.servers[1].weight, 1);
        assert_eq!(c.replica_fallback, ReplicaFallback::Primary);
        assert_eq!(c.max_allowed_packet, 64 * 1024 * 1024);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = GOOD.replace("port = 3307", "port = \"x\"");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        let bad = GOOD.replace("role = \"primary\"", "");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("servers.role"), "{e}");
        let bad = GOOD.replace("listen = \"127.0.0.1:6033\"", "listen = \"nope\"");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("`listen`"), "{e}");
        let bad = GOOD.replace("password = \"secret\"", "password_hash = \"*12\"");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("users[0].password_hash"), "{e}");
        let bad = format!("{GOOD}\nbogus = 1\n");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn listen_socket_settings() {
        let top = |extra: &str| GOOD.replacen("listen = ", &format!("{extra}\nlisten = "), 1);
        let c = Config::parse(&top(
            "listen_socket = \"/run/rwproxy.sock\"\nlisten_socket_mode = \"0660\"\nlisten_socket_group = \"mysql\"",
        ))
        .expect("valid");
        assert_eq!(c.socket_mode().expect("mode"), Some(0o660));
        for (extra, field) in [
            ("listen_socket_mode = \"0660\"", "listen_socket_mode"),
            ("listen_socket_owner = \"0\"", "listen_socket_owner"),
            (
                "listen_socket = \"/tmp/x.sock\"\nlisten_socket_mode = \"rw\"",
                "listen_socket_mode",
            ),
            (
                "listen_socket = \"/tmp/x.sock\"\nlisten_socket_mode = \"0999\"",
                "listen_socket_mode",
            ),
            (
                "listen_socket = \"/tmp/x.sock\"\nlisten_socket_mode = \"17777\"",
                "listen_socket_mode",
            ),
            ("listen_socket = \"\"", "listen_socket"),
        ] {
            let e = Config::parse(&top(extra)).unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{extra}: {e}");
        }
        let long = format!("listen_socket = \"/tmp/{}\"", "x".repeat(110));
        let e = Config::parse(&top(&long)).unwrap_err().to_string();
        assert!(e.contains("107 bytes"), "{e}");
    }

    #[test]
    fn server_tls_modes_and_their_errors() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.server_tls, ServerTlsMode::Disabled);
        let text = format!("server_tls = \"required\"\n{GOOD}");
        let c = Config::parse(&text).expect("required needs no CA");
        assert_eq!(c.tls_for(&c.servers[1]), ServerTlsMode::Required);
        assert_eq!(c.tls_for_addr("127.0.0.1:3307"), ServerTlsMode::Required);

        let text = format!("server_tls = \"verify_identity\"\n{GOOD}");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("`server_tls_ca`"), "{e}");
        let text = format!("server_tls = \"sometimes\"\n{GOOD}");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("server_tls") && e.contains("verify_ca"), "{e}");

        // Per-server override: the replica stays plaintext.
        let text = format!(
            "server_tls = \"verify_ca\"\nserver_tls_ca = \"/ca.pem\"\n{}",
            GOOD.replace("port = 3307", "port = 3307\ntls = \"disabled\"")
        );
        let c = Config::parse(&text).expect("valid");
        assert_eq!(c.tls_for(&c.servers[0]), ServerTlsMode::VerifyCa);
        assert_eq!(c.tls_for(&c.servers[1]), ServerTlsMode::Disabled);
        let text = GOOD.replace("port = 3307", "port = 3307\ntls = \"verify_ca\"");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("servers[1].tls"), "{e}");
    }

    #[test]
    fn per_user_require_tls_needs_a_certificate() {
        let text = GOOD.replace(
            "password = \"secret\"",
            "password = \"secret\"\nrequire_tls = true",
        );
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("users[0].require_tls"), "{e}");
        let text = format!("tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n{text}");
        let c = Config::parse(&text).expect("valid");
        assert!(c.users[0].require_tls);
    }

    #[test]
    fn debug_never_prints_secrets() {
        let c = Config::parse(GOOD).expect("valid");
        let s = format!("{c:?}");
        assert!(!s.contains("secret"));
        assert!(!s.contains("\"m\""));
    }

    /// A directory of its own for file-based secrets.
    fn secrets_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rwproxy-cfg-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn secrets_come_from_files_and_env() {
        let dir = secrets_dir("ok");
        std::fs::write(dir.join("mon"), "m0n-pw\n").expect("write");
        std::fs::write(
            dir.join("hash"),
            "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3\r\n",
        )
        .expect("write");
        std::fs::write(dir.join("repl"), "r3pl").expect("write");
        // Tests must not set variables (unsafe, racy): PATH is always set.
        let path_var = std::env::var("PATH").expect("PATH");
        let text = GOOD
            .replace("password = \"m\"", "password_file = \"mon\"")
            .replace("password = \"secret\"", "password_hash_file = \"hash\"")
            + "[admin]\nuser = \"a\"\npassword_env = \"PATH\"\n\
               [failover]\nreplication_user = \"r\"\nreplication_password_file = \"repl\"\n";
        let toml_path = dir.join("rwproxy.toml");
        std::fs::write(&toml_path, &text).expect("write");
        // Relative paths are taken from the config file's directory.
        let c = Config::load(&toml_path).expect("valid");
        assert_eq!(c.monitor.password, "m0n-pw", "one trailing newline dropped");
        assert_eq!(
            c.users[0].password_hash.as_deref(),
            Some("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3")
        );
        assert_eq!(
            c.admin.as_ref().map(|a| a.password.as_str()),
            Some(path_var.as_str())
        );
        assert_eq!(
            c.failover.as_ref().map(|f| f.replication_password.as_str()),
            Some("r3pl")
        );
        // A file-sourced password is not "cleartext in the file".
        let text = GOOD.replace("password = \"secret\"", "password_file = \"mon\"");
        std::fs::write(&toml_path, &text).expect("write");
        let c = Config::load(&toml_path).expect("valid");
        assert_eq!(c.users[0].password.as_deref(), Some("m0n-pw"));
        assert!(warnings(&c).iter().all(|w| !w.contains("cleartext")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secret_errors_name_field_and_source_never_content() {
        let dir = secrets_dir("bad");
        let secret_file = dir.join("s");
        std::fs::write(&secret_file, "Secr3t-content\n").expect("write");
        let empty_file = dir.join("empty");
        std::fs::write(&empty_file, "\n").expect("write");
        let missing = dir.join("missing");
        let unset = "RWPROXY_TEST_SURELY_UNSET_5D1E";
        let f = |p: &Path| p.display().to_string();
        // (config text, field named, detail named)
        let cases: Vec<(String, &str, String)> = vec![
            (
                GOOD.replace(
                    "password = \"m\"",
                    &format!("password_file = \"{}\"", f(&missing)),
                ),
                "monitor.password_file",
                f(&missing),
            ),
            (
                GOOD.replace("password = \"m\"", &format!("password_env = \"{unset}\"")),
                "monitor.password_env",
                unset.to_string(),
            ),
            (
                GOOD.replace(
                    "password = \"m\"",
                    &format!("password = \"m\"\npassword_file = \"{}\"", f(&secret_file)),
                ),
                "monitor.password",
                "only one".into(),
            ),
            (
                GOOD.replace(
                    "password = \"secret\"",
                    &format!(
                        "password_env = \"PATH\"\npassword_hash_file = \"{}\"",
                        f(&secret_file)
                    ),
                ),
                "users[0]",
                "not both".into(),
            ),
            (
                GOOD.replace(
                    "password = \"secret\"",
                    &format!("password_hash_file = \"{}\"", f(&secret_file)),
                ),
                "users[0].password_hash",
                "40 hex".into(),
            ),
            (
                GOOD.replace(
                    "password = \"secret\"",
                    &format!("password_file = \"{}\"", f(&empty_file)),
                ),
                "users[0].password_file",
                "empty".into(),
            ),
            (
                format!("{GOOD}[admin]\nuser = \"a\"\n"),
                "admin.password",
                "required".into(),
            ),
            (
                format!(
                    "{GOOD}[failover]\nreplication_user = \"r\"\nreplication_password_env = \"{unset}\"\n"
                ),
                "failover.replication_password_env",
                unset.to_string(),
            ),
        ];
        for (text, field, detail) in cases {
            let e = Config::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(field), "{e} should name {field}");
            assert!(e.contains(&detail), "{e} should say {detail}");
            assert!(!e.contains("Secr3t"), "{e} leaks the content");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
