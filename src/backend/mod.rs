//! Backend connections: authenticated connections to one server as one
//! user, with the protocol shape (capabilities, collation) of the client
//! they serve, and per-server pools of idle ones.
//!
//! A session borrows connections with [`Pools::get`] and gives them back
//! with [`Pools::put`]. At the end of a session the connection is reset
//! (`COM_RESET_CONNECTION`) so no state leaks from one client to the next.
//! In the sharing pool modes a session gives a connection back between
//! transactions *without* a reset: the connection carries a fingerprint of
//! the replayable state applied to it (`state_fp`), the next borrower
//! prefers a connection whose fingerprint matches its own, and a mismatch
//! costs a reset plus a replay (see `session::state::State::sync`).
//! Prepared statements live on with the connection in a bounded cache
//! keyed by SQL text ([`StmtCache`]), so they are prepared once per
//! connection, not once per borrow, and churn cannot exhaust the server's
//! `max_prepared_stmt_count`.
//!
//! `pool_max_per_server` bounds the connections sessions open to a server:
//! a semaphore counts connections in use (FIFO, so waiters are served in
//! order), idle connections of other users are closed to make room, and a
//! borrower that waits longer than `pool_wait_timeout_ms` gets ERR 1040.
//!
//! Connections are TLS-encrypted per `server_tls` ([`tls`]); the pools hold
//! the TLS settings of the current configuration, so the session never
//! deals with them.
//!
//! Lifecycle rules (issue 16, item 4; see [`lifecycle`]): a connection
//! older than a `SET GLOBAL` made through rwproxy is reset before it is
//! handed out (the reset re-reads the globals), a connection whose server
//! answered with an error that ends the server's session (1927 killed,
//! 1153 packet too large, 4031 idle timeout…) is never reused, idle
//! connections of an account that was dropped or changed are discarded,
//! and every connection rwproxy closes in an orderly way gets `COM_QUIT`
//! first (the server counts a bare close in `Aborted_clients`).

pub mod guard;
pub mod lifecycle;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::dialect::Flavor;
use crate::protocol::auth::Stage1;
use crate::protocol::command::code;
use crate::protocol::compress::Algorithm;
use crate::protocol::handshake::{self, HandshakeError, Login, ServerHello};
use crate::protocol::packet::{FrameError, PacketStream};
use crate::protocol::response::{self, Expect, ForwardError};
use crate::protocol::stream::BackendStream;
use crate::protocol::{ClientError, shaping_capabilities};

/// The identity of a pool: connections in one pool are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Server name.
    pub server: Arc<str>,
    /// Account the connection is logged in as.
    pub user: Arc<str>,
    /// Protocol-shaping capabilities (see `protocol::shaping_capabilities`).
    pub caps: u32,
    /// MariaDB extended capabilities (see `protocol::supported_ext`).
    pub ext: u32,
    /// The session thread whose I/O driver the connection's socket is
    /// registered with (see `server::Workers`): each thread keeps its own
    /// idle connections, so a socket is normally polled by the thread that
    /// drives it (another thread borrows one only when its own are gone).
    pub home: u16,
    /// Connection collation from the handshake.
    pub collation: u8,
}

impl PoolKey {
    /// Interchangeable but for the session thread that keeps it.
    fn same_but_home(&self, other: &PoolKey) -> bool {
        self.server == other.server
            && self.user == other.user
            && self.caps == other.caps
            && self.ext == other.ext
            && self.collation == other.collation
    }
}

/// Credentials a session logs into servers with.
#[derive(Debug, Clone)]
pub struct Credential {
    pub user: Arc<str>,
    /// `SHA1(password)`; `None` for a password-less account.
    pub stage1: Option<Stage1>,
    /// The cleartext password for servers that ask for
    /// caching_sha2_password (MySQL accounts; config users with `password`).
    pub sha2: Option<Arc<crate::protocol::caching_sha2::Sha2Secret>>,
}

/// Why a backend connection could not be had or used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {0:?} connecting to {1}")]
    Timeout(Duration, String),
    /// TLS is configured for the server but its greeting does not offer it.
    #[error(
        "server {server} ({addr}) does not offer TLS, which server_tls = \"{mode}\" requires (start it with ssl_cert/ssl_key, or set tls = \"disabled\" for it)"
    )]
    TlsUnavailable {
        server: String,
        addr: String,
        mode: &'static str,
    },
    /// The TLS handshake failed (certificate refused, protocol error…).
    #[error("TLS to server {server} ({addr}) failed: {source}")]
    Tls {
        server: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("login to {addr} failed: {source}")]
    Login {
        addr: String,
        #[source]
        source: HandshakeError,
    },
    #[error("{0}")]
    Io(#[from] FrameError),
    #[error("{0}")]
    Forward(#[from] ForwardError),
    /// The server's pool stayed at `pool_max_per_server` for the whole wait.
    #[error(
        "no connection to server '{server}' became free within {waited:?} (pool_max_per_server = {max})"
    )]
    PoolExhausted {
        server: Arc<str>,
        max: usize,
        waited: Duration,
    },
    /// Replaying the session's state on this connection failed.
    #[error("replaying session state failed: {} ({})", .0.message, .0.code)]
    Replay(ClientError),
}

/// ER_BAD_DB_ERROR: the schema does not exist (any more).
pub const UNKNOWN_DATABASE: u16 = 1049;

impl BackendError {
    /// The server's own refusal (e.g. 1045, 1049, 1044), when that is
    /// what happened: the client should see it verbatim.
    pub fn server_refusal(&self) -> Option<&ClientError> {
        match self {
            BackendError::Login {
                source: HandshakeError::Refused(e),
                ..
            } => Some(e),
            BackendError::Replay(e) => Some(e),
            _ => None,
        }
    }
}

/// The byte stream under a backend connection (plain or TLS). An alias so
/// code that names the stream type does not change with its definition.
pub type BackendIo = BackendStream;

/// One authenticated connection to a backend server.
///
/// Its invariants are its own: a command's answer is read through an
/// [`Exchange`], which keeps the connection marked broken until the whole
/// answer was read, so no path (an error, a client gone mid-result, a
/// cancelled future) can return a connection with half an answer pending
/// to a pool; what the session needs to know or change (replayed state,
/// schema, statement caches) goes through methods.
pub struct BackendConn {
    stream: PacketStream<BackendIo>,
    key: PoolKey,
    /// Capabilities in force on this connection.
    caps: CapabilityFlags,
    hello: ServerHello,
    /// Schema currently selected on the server side, as far as rwproxy knows.
    schema: Option<String>,
    /// Set by a reset, cleared when the schema is selected again: MariaDB's
    /// `COM_RESET_CONNECTION` keeps the schema but sets
    /// `character_set_database`/`collation_database` to the server's
    /// globals instead of that schema's (a fresh login into it, or
    /// `COM_INIT_DB`, shows the schema's). `LOAD DATA INFILE` reads files in
    /// that character set, so the next borrower selects the schema again
    /// (see [`BackendConn::has_schema`]).
    schema_vars_stale: bool,
    /// Fingerprint of the replayable session state applied here (0 = the
    /// server's defaults, as after a reset).
    state_fp: u64,
    /// Prepared statements this connection holds for the sharing pool modes.
    stmt_cache: StmtCache,
    /// Metadata cache: per server statement id, the result columns the
    /// server last sent for it (at prepare or with an execution), which is
    /// what it skips sending while they do not change.
    sent_columns: rustc_hash::FxHashMap<u32, Arc<[u8]>>,
    /// While the connection is in use and its server's pool is bounded: the
    /// slot it takes (freed when it goes idle or is dropped).
    permit: Option<OwnedSemaphorePermit>,
    /// When it last went idle in the pool (to decide whether to ping it
    /// before reuse).
    last_used: Instant,
    /// Set when a response was not fully read or the socket failed: the
    /// connection must not be reused.
    broken: bool,
    /// The server reports `last_gtid` in OK packets (session tracking), so
    /// read-your-writes needs no extra query after a commit.
    tracks_gtid: bool,
    /// MariaDB or MySQL, from the greeting's version string, read once at
    /// login: the statements rwproxy sends itself here (GTID tracking and
    /// waits) are in this dialect.
    flavor: Flavor,
    /// A client statement left state here that only a reset clears (see
    /// [`Pools::put`]); false after connect and after a reset.
    dirty: bool,
    /// Cancelled when its server is demoted ([`Pools::sever`]): an exchange
    /// in flight is aborted and the connection is never used again.
    cut: CancellationToken,
    /// `backend_read_timeout` for the statements rwproxy sends itself on
    /// this connection (state replay, GTID reads, pings, resets).
    read_timeout: Option<Duration>,
    /// The pools' globals epoch ([`Pools::globals_changed`]) when the
    /// connection logged in or was last reset: its session variables were
    /// copied from the globals of that time.
    epoch: u64,
    /// The session `wait_timeout` a client's replayed state set here (none
    /// after a reset): the server closes the connection once it sat idle
    /// that long, so the pool must not hand it out by then.
    server_wait_timeout: Option<Duration>,
    /// When the last command was sent (the server's idle clock).
    last_command: Instant,
}

impl BackendConn {
    /// Connects and logs in, over TLS when `tls` is given (the SSLRequest
    /// goes out after the greeting, the login after the TLS handshake).
    #[allow(clippy::too_many_arguments)]
    pub async fn connect(
        addr: &str,
        key: PoolKey,
        cred: &Credential,
        caps: CapabilityFlags,
        db: Option<&str>,
        timeout: Duration,
        tls: Option<&tls::ServerTlsConfig>,
        compression: Option<Algorithm>,
    ) -> Result<BackendConn, BackendError> {
        let login_error = |source| BackendError::Login {
            addr: addr.to_string(),
            source,
        };
        let fut = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| BackendError::Connect {
                    addr: addr.to_string(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let mut stream = PacketStream::new(BackendStream::Plain(tcp));
            let login = Login {
                user: &cred.user,
                stage1: cred.stage1.as_ref(),
                sha2: cred.sha2.as_deref(),
                db,
                caps,
                ext: MariadbCapabilities::from_bits_truncate(key.ext),
                collation: key.collation,
                max_packet: 1 << 30,
                compression,
            };
            let greeting = handshake::read_greeting(&mut stream)
                .await
                .map_err(login_error)?;
            if let Some(tls) = tls {
                if !greeting.offers_tls() {
                    return Err(BackendError::TlsUnavailable {
                        server: key.server.to_string(),
                        addr: addr.to_string(),
                        mode: tls.mode.as_str(),
                    });
                }
                handshake::send_ssl_request(&mut stream, &greeting, &login)
                    .await
                    .map_err(login_error)?;
                let (inner, rest) = stream.into_inner();
                let BackendStream::Plain(tcp) = inner else {
                    return Err(login_error(HandshakeError::Malformed(
                        "TLS requested twice".into(),
                    )));
                };
                if !rest.is_empty() {
                    // Bytes before the TLS handshake would be unauthenticated.
                    return Err(login_error(HandshakeError::Malformed(
                        "server sent data after the SSLRequest".into(),
                    )));
                }
                let encrypted = tls.connect(tcp).await.map_err(|source| BackendError::Tls {
                    server: key.server.to_string(),
                    addr: addr.to_string(),
                    source,
                })?;
                stream = PacketStream::new(BackendStream::Tls(Box::new(encrypted)));
            }
            let hello = handshake::authenticate(&mut stream, &greeting, &login, tls.is_some())
                .await
                .map_err(login_error)?;
            Ok::<_, BackendError>(BackendConn {
                flavor: Flavor::from_version(&hello.version, ""),
                stream,
                caps: hello.caps,
                key: key.clone(),
                hello,
                schema: db.map(str::to_string),
                schema_vars_stale: false,
                state_fp: 0,
                stmt_cache: StmtCache::default(),
                sent_columns: Default::default(),
                permit: None,
                last_used: Instant::now(),
                broken: false,
                tracks_gtid: false,
                dirty: false,
                cut: CancellationToken::new(),
                read_timeout: None,
                epoch: 0,
                server_wait_timeout: None,
                last_command: Instant::now(),
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout(timeout, addr.to_string())),
        }
    }

    /// Sends a command whose answer the caller reads through the returned
    /// [`Exchange`]. Until [`Exchange::finish`], the connection is broken.
    pub async fn exchange(&mut self, payload: &[u8]) -> Result<Exchange<'_>, FrameError> {
        self.broken = true;
        self.last_command = Instant::now();
        self.stream.queue_payload(0, payload);
        self.stream.flush().await?;
        Ok(Exchange { conn: self })
    }

    /// The token [`Pools::sever`] cancels when the server is demoted: an
    /// exchange in flight is to be aborted ([`guard::guarded`]).
    pub fn cut_token(&self) -> CancellationToken {
        self.cut.clone()
    }

    /// The key of the pool the connection belongs to.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The server's greeting and what was negotiated.
    pub fn hello(&self) -> &ServerHello {
        &self.hello
    }

    /// Fingerprint of the replayable session state applied here (0 = the
    /// server's defaults, as after a reset).
    pub fn state_fp(&self) -> u64 {
        self.state_fp
    }

    /// Records that the session state with fingerprint `fp` is now applied
    /// here.
    pub fn set_state_fp(&mut self, fp: u64) {
        self.state_fp = fp;
    }

    /// The schema selected on the server side, as far as rwproxy knows.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Records that `db` is now the selected schema here.
    pub fn set_schema(&mut self, db: String) {
        self.schema = Some(db);
        self.schema_vars_stale = false;
    }

    /// Whether `db` is selected here with the session variables a login
    /// into it gives (false after a reset: see `schema_vars_stale`).
    pub fn has_schema(&self, db: &str) -> bool {
        !self.schema_vars_stale && self.schema.as_deref() == Some(db)
    }

    /// Records that no schema is selected here (the current one was dropped).
    pub fn clear_schema(&mut self) {
        self.schema = None;
    }

    /// A client statement left state here that only a reset clears.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The server's flavor (see [`Flavor`]), read at login.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The client's state set the server's `wait_timeout` here to `t`.
    pub fn set_server_wait_timeout(&mut self, t: Option<Duration>) {
        self.server_wait_timeout = t;
    }

    /// The server has closed, or is about to close, this idle connection
    /// for its `wait_timeout` (with a margin for the time to use it).
    fn timed_out_on_server(&self) -> bool {
        self.server_wait_timeout
            .is_some_and(|w| self.last_command.elapsed() + Duration::from_millis(500) >= w)
    }

    /// The server ended its session on this connection (an ERR such as
    /// 1927 or 1153, see [`lifecycle::ends_server_session`]): it is never
    /// used again.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Closes the connection the orderly way: `COM_QUIT`, then the socket
    /// (a bare close counts in the server's `Aborted_clients` and logs
    /// "Aborted connection"). A connection with half an answer pending is
    /// just dropped: the server is writing, not reading.
    pub async fn quit(mut self) {
        if !self.broken {
            self.stream.queue_payload(0, &[code::COM_QUIT]);
            let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        }
    }

    /// The server reports `last_gtid` in its OK packets here.
    pub fn tracks_gtid(&self) -> bool {
        self.tracks_gtid
    }

    /// Asks the server to report `last_gtid` in its OK packets (session
    /// tracking, kept until a reset); true if it agreed.
    pub async fn track_gtid(&mut self) -> bool {
        if !self.tracks_gtid
            && let Ok(None) = self.query_internal(self.flavor.track_gtid_sql()).await
        {
            self.tracks_gtid = true;
        }
        self.tracks_gtid
    }

    /// The client's own setting of the tracking variables replaced
    /// rwproxy's on this connection: `last_gtid` is no longer reported.
    pub fn forget_gtid_tracking(&mut self) {
        self.tracks_gtid = false;
    }

    /// The connection's statement cache (sharing pool modes).
    pub fn stmt_cache(&mut self) -> &mut StmtCache {
        &mut self.stmt_cache
    }

    /// Whether the connection's statement cache holds server statement `id`.
    pub fn caches_stmt(&self, id: u32) -> bool {
        self.stmt_cache.holds(id)
    }

    /// Metadata cache: remembers the result columns the server sent for
    /// its statement `id`.
    pub fn remember_columns(&mut self, id: u32, columns: Arc<[u8]>) {
        self.sent_columns.insert(id, columns);
    }

    /// `COM_RESET_CONNECTION`: back to the server's defaults for this user
    /// (variables, temporary tables, prepared statements, tracking). The
    /// schema stays selected.
    pub async fn reset(&mut self) -> Result<Option<ClientError>, BackendError> {
        let r = self.simple(code::COM_RESET_CONNECTION, &[]).await?;
        if r.as_ref()
            .is_some_and(|e| lifecycle::ends_server_session(e.code))
        {
            self.broken = true;
        }
        if r.is_none() {
            self.state_fp = 0;
            self.stmt_cache.clear();
            self.sent_columns.clear();
            // The reset restored the server's default tracking.
            self.tracks_gtid = false;
            self.dirty = false;
            self.server_wait_timeout = None;
            self.schema_vars_stale = self.schema.is_some();
        }
        Ok(r)
    }

    /// Whether the server's column count packets carry MariaDB's "metadata
    /// follows" byte (the metadata cache is on for this connection).
    pub fn caches_metadata(&self) -> bool {
        self.hello
            .ext
            .contains(MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA)
    }

    /// The metadata cache settings for a response on this connection to
    /// rwproxy's own statements (no client).
    fn meta_internal(&self) -> response::MetaCache<'static> {
        response::MetaCache {
            server: self.caches_metadata(),
            ..response::MetaCache::OFF
        }
    }

    /// Closes server statement `id` (its answer-less `COM_STMT_CLOSE`).
    pub async fn close_stmt(&mut self, id: u32) {
        self.sent_columns.remove(&id);
        let mut p = [0u8; 5];
        p[0] = code::COM_STMT_CLOSE;
        p[1..].copy_from_slice(&id.to_le_bytes());
        self.send_no_reply(&p).await;
    }

    /// Sends a command that has no answer (e.g. `COM_STMT_CLOSE`); a
    /// failure leaves the connection unusable.
    pub async fn send_no_reply(&mut self, payload: &[u8]) {
        let _ = self.send(payload).await;
    }

    /// Sends a command that has no answer (`COM_STMT_SEND_LONG_DATA`) and
    /// says whether it left; a failure leaves the connection unusable.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        self.stream.queue_payload(0, payload);
        let r = self.stream.flush().await;
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Whether the connection to the server is encrypted.
    pub fn is_tls(&self) -> bool {
        self.stream.get_ref().is_tls()
    }

    /// Sends a simple command and reads its one-packet answer; returns the
    /// server's error if it refused.
    pub async fn simple(
        &mut self,
        cmd: u8,
        arg: &[u8],
    ) -> Result<Option<ClientError>, BackendError> {
        let mut payload = Vec::with_capacity(1 + arg.len());
        payload.push(cmd);
        payload.extend_from_slice(arg);
        self.run_internal(&payload, Expect::Simple).await
    }

    /// Runs a statement rwproxy issues itself (state replay); the answer is
    /// consumed, not forwarded.
    pub async fn query_internal(&mut self, sql: &str) -> Result<Option<ClientError>, BackendError> {
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(code::COM_QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.run_internal(&payload, Expect::Query).await
    }

    /// One exchange of rwproxy's own (state replay, GTID reads, pings,
    /// resets): `read` reads the answer. Bounded like client statements
    /// ([`guard::guarded`]): a hung or demoted server must not hold a
    /// session in the middle of a state replay or a GTID read.
    async fn own_exchange<T>(
        &mut self,
        payload: &[u8],
        read: impl AsyncFnOnce(&mut PacketStream<BackendIo>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let (cut, bound) = (self.cut.clone(), self.read_timeout);
        let exchange = async {
            let mut ex = self.exchange(payload).await?;
            let v = read(ex.stream()).await?;
            ex.finish();
            Ok::<_, BackendError>(v)
        };
        guard::guarded(exchange, &cut, bound)
            .await
            .map_err(|c| BackendError::Io(c.io_error().into()))?
    }

    /// Runs a one-value query rwproxy needs itself (e.g. `@@last_gtid`)
    /// and returns the first column of the first row as text.
    pub async fn query_value(&mut self, sql: &str) -> Result<Option<String>, BackendError> {
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(code::COM_QUERY);
        payload.extend_from_slice(sql.as_bytes());
        let (caps, flag) = (self.caps, self.caches_metadata());
        self.own_exchange(&payload, async |stream| {
            Ok(response::read_single_value(stream, caps, flag).await?)
        })
        .await
    }

    async fn run_internal(
        &mut self,
        payload: &[u8],
        expect: Expect,
    ) -> Result<Option<ClientError>, BackendError> {
        let (caps, meta) = (self.caps, self.meta_internal());
        let summary = self
            .own_exchange(payload, async |stream| {
                Ok(response::forward::<_, TcpStream>(stream, None, expect, caps, meta).await?)
            })
            .await?;
        self.last_used = Instant::now();
        if summary
            .err
            .as_ref()
            .is_some_and(|e| lifecycle::ends_server_session(e.code))
        {
            self.broken = true;
        }
        Ok(summary.err)
    }
}

/// One command's round trip on a [`BackendConn`] (see
/// [`BackendConn::exchange`]): the connection stays marked broken unless
/// [`Exchange::finish`] says the whole answer was read.
pub struct Exchange<'a> {
    conn: &'a mut BackendConn,
}

impl Exchange<'_> {
    /// The stream to read the answer from.
    pub fn stream(&mut self) -> &mut PacketStream<BackendIo> {
        &mut self.conn.stream
    }

    /// The stream, and the columns the server last sent for its statement
    /// `id` (metadata cache), borrowed together.
    pub fn stream_and_columns(
        &mut self,
        id: Option<u32>,
    ) -> (&mut PacketStream<BackendIo>, Option<&Arc<[u8]>>) {
        let sent = id.and_then(|id| self.conn.sent_columns.get(&id));
        (&mut self.conn.stream, sent)
    }

    /// Whether the server's column counts carry the metadata-cache byte.
    pub fn caches_metadata(&self) -> bool {
        self.conn.caches_metadata()
    }

    /// Sends a follow-up command in the same exchange (e.g. the ROLLBACK
    /// that ends a read-only transaction whose COMMIT was refused).
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        self.conn.stream.queue_payload(0, payload);
        self.conn.stream.flush().await
    }

    /// The columns the server last sent for its statement `id`.
    pub fn sent_columns(&self, id: u32) -> Option<&Arc<[u8]>> {
        self.conn.sent_columns.get(&id)
    }

    /// Metadata cache: remembers the columns the server sent for `id`.
    pub fn remember_columns(&mut self, id: u32, columns: Arc<[u8]>) {
        self.conn.sent_columns.insert(id, columns);
    }

    /// The whole answer was read: the connection is usable again.
    pub fn finish(self) {
        self.conn.broken = false;
    }
}

/// A connection's prepared statements by SQL text, least recently used
/// first out. The session layer closes what [`StmtCache::insert`] evicts.
#[derive(Default)]
pub struct StmtCache {
    by_sql: HashMap<Vec<u8>, (u32, u64)>,
    clock: u64,
}

impl StmtCache {
    /// The backend id of `sql` here, marking it recently used.
    pub fn get(&mut self, sql: &[u8]) -> Option<u32> {
        self.clock += 1;
        let clock = self.clock;
        self.by_sql.get_mut(sql).map(|e| {
            e.1 = clock;
            e.0
        })
    }

    /// Remembers `sql` as backend statement `id`; returns the ids the
    /// caller must close on the server: a previous id for the same text,
    /// and the least recently used entry when the cache is over `cap`.
    pub fn insert(&mut self, sql: Vec<u8>, id: u32, cap: usize) -> Vec<u32> {
        self.clock += 1;
        let mut close = Vec::new();
        if let Some((old, _)) = self.by_sql.insert(sql, (id, self.clock))
            && old != id
        {
            close.push(old);
        }
        while self.by_sql.len() > cap.max(1) {
            let Some(oldest) = self
                .by_sql
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((old, _)) = self.by_sql.remove(&oldest) {
                close.push(old);
            }
        }
        close
    }

    /// Whether backend statement `id` is cached (then it must stay open).
    pub fn holds(&self, id: u32) -> bool {
        self.by_sql.values().any(|(i, _)| *i == id)
    }

    pub fn len(&self) -> usize {
        self.by_sql.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sql.is_empty()
    }

    fn clear(&mut self) {
        self.by_sql.clear();
    }
}

/// What a borrower would like a pooled connection to carry already.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// Fingerprint of the session's replayable state.
    pub state_fp: u64,
    /// The session's schema.
    pub schema: Option<&'a str>,
}

/// Idle connections per pool key, with the knobs that govern reuse.
pub struct Pools {
    idle: Mutex<HashMap<PoolKey, Vec<BackendConn>>>,
    /// Connections in use per server, when `max_per_server` bounds them.
    in_use: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    max_idle: usize,
    ping_after: Duration,
    connect_timeout: Duration,
    max_per_server: usize,
    wait_timeout: Duration,
    read_timeout: Option<Duration>,
    /// TLS settings of the configuration in force (swapped by RELOAD).
    tls: arc_swap::ArcSwap<tls::ServerTls>,
    /// Per server, the token its connections carry ([`BackendConn::cut`]);
    /// [`Pools::sever`] cancels it and starts a new one.
    cuts: Mutex<HashMap<Arc<str>, CancellationToken>>,
    /// Bumped by every `SET GLOBAL` made through rwproxy: a connection of
    /// an older epoch is reset before it is handed out, so new sessions see
    /// the new global values as they would directly.
    epoch: AtomicU64,
}

/// The knobs of [`Pools`], from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Idle connections kept per pool key.
    pub max_idle: usize,
    /// Idle connections older than this are pinged before reuse.
    pub ping_after: Duration,
    pub connect_timeout: Duration,
    /// Connections per server (in use + idle); 0 = unbounded.
    pub max_per_server: usize,
    /// How long a borrower waits for a bounded server.
    pub wait_timeout: Duration,
    /// `backend_read_timeout` (read at start) for rwproxy's own statements.
    pub read_timeout: Option<Duration>,
}

impl Pools {
    pub fn new(limits: PoolLimits) -> Pools {
        Pools {
            idle: Mutex::new(HashMap::new()),
            in_use: Mutex::new(HashMap::new()),
            max_idle: limits.max_idle,
            ping_after: limits.ping_after,
            connect_timeout: limits.connect_timeout,
            max_per_server: limits.max_per_server,
            wait_timeout: limits.wait_timeout,
            read_timeout: limits.read_timeout,
            tls: Default::default(),
            cuts: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    /// The current cut token of `server`.
    fn cut_token(&self, server: &Arc<str>) -> CancellationToken {
        let mut m = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(server.clone()).or_default().clone()
    }

    /// Closes every connection to `server` (called before a promotion away
    /// from it is published): idle ones are dropped now; borrowed ones are
    /// marked so that a statement in flight on them is aborted (the client
    /// gets an ERR whose outcome is unknown, never an OK the demoted server
    /// sends later) and they are never reused. Connections opened
    /// afterwards carry a fresh token. Returns how many idle ones closed.
    pub fn sever(&self, server: &Arc<str>) -> usize {
        let old = {
            let mut m = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
            m.insert(server.clone(), CancellationToken::new())
        };
        if let Some(t) = old {
            t.cancel();
        }
        let mut gone = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for (k, list) in idle.iter_mut() {
                if &k.server == server {
                    gone.append(list);
                }
            }
        }
        let closed = gone.len();
        lifecycle::close_later(gone);
        closed
    }

    /// Sets the TLS settings new connections use (at start-up and RELOAD;
    /// idle connections opened under the old ones stay until they close).
    pub fn set_server_tls(&self, tls: tls::ServerTls) {
        self.tls.store(Arc::new(tls));
    }

    /// The pool key a session with these parameters, on session thread
    /// `home` ([`crate::workers::home`]), uses on `server`.
    pub fn key(
        server: &Arc<str>,
        user: &Arc<str>,
        caps: CapabilityFlags,
        ext: MariadbCapabilities,
        collation: u8,
        home: u16,
    ) -> PoolKey {
        PoolKey {
            server: server.clone(),
            user: user.clone(),
            caps: shaping_capabilities(caps).bits(),
            ext: ext.bits(),
            collation,
            home,
        }
    }

    /// An idle connection for `key`: preferably one that already carries
    /// the wanted state, else the most recently used. A session without a
    /// schema never gets one with a schema selected (it cannot be unset).
    fn take_idle(&self, key: &PoolKey, want: Want<'_>) -> Option<BackendConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = idle.get_mut(key).and_then(|list| Self::pick(list, want)) {
            return Some(c);
        }
        // None idle on this session thread: borrow one another thread keeps
        // rather than open a new one (or wait at `pool_max_per_server`). Its
        // socket stays registered with its home thread, so its I/O wakes
        // cross-thread while borrowed, and it goes back home when returned.
        idle.iter_mut()
            .filter(|(k, _)| k.home != key.home && k.same_but_home(key))
            .find_map(|(_, list)| Self::pick(list, want))
    }

    fn pick(list: &mut Vec<BackendConn>, want: Want<'_>) -> Option<BackendConn> {
        let fits = |c: &BackendConn| want.schema.is_some() || c.schema.is_none();
        let pos = list
            .iter()
            .rposition(|c| c.state_fp == want.state_fp && c.schema.as_deref() == want.schema)
            .or_else(|| list.iter().rposition(fits))?;
        Some(list.swap_remove(pos))
    }

    fn limiter(&self, server: &Arc<str>) -> Option<Arc<Semaphore>> {
        if self.max_per_server == 0 {
            return None;
        }
        let mut m = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            m.entry(server.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_server)))
                .clone(),
        )
    }

    /// Closes idle connections of `server` (any user) until a new one fits
    /// under `max_per_server`.
    fn make_room(&self, server: &Arc<str>, sem: &Semaphore) {
        let in_use = self.max_per_server - sem.available_permits();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = in_use
            + idle
                .iter()
                .filter(|(k, _)| &k.server == server)
                .map(|(_, v)| v.len())
                .sum::<usize>();
        let mut gone = Vec::new();
        for (k, list) in idle.iter_mut() {
            while total > self.max_per_server && &k.server == server && !list.is_empty() {
                gone.push(list.remove(0));
                total -= 1;
            }
        }
        drop(idle);
        lifecycle::close_later(gone);
    }

    /// Borrows a connection: an idle one (pinged first if it sat idle long
    /// enough for `wait_timeout` to have killed it) or a new one. With
    /// `pool_max_per_server`, waits (bounded) for a slot first.
    pub async fn get(
        &self,
        addr: &str,
        key: &PoolKey,
        cred: &Credential,
        caps: CapabilityFlags,
        want: Want<'_>,
    ) -> Result<BackendConn, BackendError> {
        let limiter = self.limiter(&key.server);
        let permit = match &limiter {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    match tokio::time::timeout(self.wait_timeout, sem.clone().acquire_owned()).await
                    {
                        Ok(Ok(p)) => Some(p),
                        _ => {
                            return Err(BackendError::PoolExhausted {
                                server: key.server.clone(),
                                max: self.max_per_server,
                                waited: self.wait_timeout,
                            });
                        }
                    }
                }
            },
        };
        while let Some(mut conn) = self.take_idle(key, want) {
            if conn.cut.is_cancelled() {
                continue;
            }
            if conn.stream.has_buffered_frame() || conn.stream.get_ref().peer_gone() {
                debug!(server = %key.server, "dropping pooled connection the server closed");
                continue;
            }
            if conn.timed_out_on_server() {
                debug!(server = %key.server, "dropping pooled connection past its session wait_timeout");
                lifecycle::close_later(vec![conn]);
                continue;
            }
            let epoch = self.epoch.load(Ordering::Acquire);
            if conn.epoch != epoch {
                // Older than a `SET GLOBAL`: the reset copies the new
                // globals into its session (and doubles as the ping).
                if !matches!(conn.reset().await, Ok(None)) {
                    debug!(server = %key.server, "dropping pooled connection that failed its reset");
                    continue;
                }
                conn.epoch = epoch;
            } else if conn.last_used.elapsed() >= self.ping_after
                && !matches!(conn.simple(code::COM_PING, &[]).await, Ok(None))
            {
                debug!(server = %key.server, "dropping stale pooled connection");
                continue;
            }
            conn.permit = permit;
            return Ok(conn);
        }
        if let Some(sem) = &limiter {
            self.make_room(&key.server, sem);
        }
        let tls = self.tls.load();
        let epoch = self.epoch.load(Ordering::Acquire);
        let connect = |schema| {
            BackendConn::connect(
                addr,
                key.clone(),
                cred,
                caps,
                schema,
                self.connect_timeout,
                tls.for_server(&key.server),
                tls.compression_for(&key.server),
            )
        };
        let mut conn = match connect(want.schema).await {
            // The session's schema was dropped by someone else: directly,
            // its connection keeps working for statements that need no
            // schema, so this one logs in without (see `State::sync`).
            Err(e)
                if want.schema.is_some()
                    && e.server_refusal()
                        .is_some_and(|r| r.code == UNKNOWN_DATABASE) =>
            {
                connect(None).await?
            }
            r => r?,
        };
        conn.permit = permit;
        conn.cut = self.cut_token(&key.server);
        conn.read_timeout = self.read_timeout;
        conn.epoch = epoch;
        Ok(conn)
    }

    /// Gives a connection back at the end of a session, then kept idle
    /// (or closed if the pool is full or a reset fails).
    ///
    /// The reset (one round trip and server work per session) is skipped
    /// when nothing on the connection needs it: `session_clean` (the
    /// session ends with autocommit on, outside a transaction, holding no
    /// unreplayable state) and the connection not `dirty` (it only ran
    /// plain reads and replayable `SET`/`USE`). What such a connection
    /// still carries — schema and `SET`s — is in its `schema` and
    /// `state_fp`, which the next borrower syncs (resetting on a mismatch),
    /// exactly as between statements in the sharing pool modes. Writes,
    /// transactions, prepared statements, `LAST_INSERT_ID(expr)`, locks and
    /// temporary tables all make it dirty, so no session ever sees another
    /// one's `LAST_INSERT_ID()`, `ROW_COUNT()` or statement handles. This
    /// is what makes short-lived read-mostly clients (PHP-style
    /// connect/query/close) cheap on the servers.
    pub async fn put(&self, mut conn: BackendConn, session_clean: bool) {
        if conn.broken {
            return;
        }
        if conn.cut.is_cancelled() {
            conn.quit().await;
            return;
        }
        if conn.dirty || !session_clean {
            let epoch = self.epoch.load(Ordering::Acquire);
            if !matches!(conn.reset().await, Ok(None)) {
                conn.quit().await;
                return;
            }
            conn.epoch = epoch;
        }
        self.keep(conn);
    }

    /// Gives a connection back between statements in a sharing pool mode:
    /// no reset; its state fingerprint tells the next borrower what it has.
    pub fn give_back(&self, conn: BackendConn) {
        if conn.broken {
            return;
        }
        if conn.cut.is_cancelled() {
            lifecycle::close_later(vec![conn]);
            return;
        }
        self.keep(conn);
    }

    fn keep(&self, mut conn: BackendConn) {
        // Idle connections do not count against the in-use bound.
        let permit = conn.permit.take();
        conn.last_used = Instant::now();
        let overflow = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.entry(conn.key.clone()).or_default();
            if list.len() < self.max_idle {
                list.push(conn);
                None
            } else {
                Some(conn)
            }
        };
        drop(permit);
        if let Some(conn) = overflow {
            lifecycle::close_later(vec![conn]);
        }
    }

    /// A `SET GLOBAL` succeeded through rwproxy: every connection logged in
    /// or reset before now is reset before its next borrower gets it.
    pub fn globals_changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Closes (with `COM_QUIT`) the idle connections logged in as `user`
    /// (every user when `None`): the account was dropped or changed, and a
    /// connection keeps the login's identity and global privileges.
    pub fn discard_user(&self, user: Option<&str>) -> usize {
        let mut gone = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for (k, list) in idle.iter_mut() {
                if user.is_none_or(|u| *k.user == *u) {
                    gone.append(list);
                }
            }
        }
        let n = gone.len();
        lifecycle::close_later(gone);
        n
    }

    /// Closes (with `COM_QUIT`) the idle connections that have sat unused
    /// for `unused` or longer; returns how many.
    pub fn close_unused(&self, unused: Duration) -> usize {
        let now = Instant::now();
        let gone: Vec<BackendConn> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let gone = idle
                .values_mut()
                .flat_map(|list| list.extract_if(.., |c| now.duration_since(c.last_used) >= unused))
                .collect();
            idle.retain(|_, list| !list.is_empty());
            gone
        };
        let n = gone.len();
        lifecycle::close_later(gone);
        n
    }

    /// Closes every idle connection with `COM_QUIT` (at shutdown, after the
    /// sessions drained).
    pub async fn close_all(&self) {
        let gone: Vec<BackendConn> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.drain().flat_map(|(_, list)| list).collect()
        };
        for conn in gone {
            conn.quit().await;
        }
    }

    /// Idle connections per server (admin / metrics).
    pub fn idle_counts(&self) -> HashMap<Arc<str>, usize> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: HashMap<Arc<str>, usize> = HashMap::new();
        for (k, v) in idle.iter() {
            *out.entry(k.server.clone()).or_default() += v.len();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::StmtCache;

    #[test]
    fn stmt_cache_is_bounded_and_evicts_least_recently_used() {
        let mut c = StmtCache::default();
        assert!(c.insert(b"a".to_vec(), 1, 2).is_empty());
        assert!(c.insert(b"b".to_vec(), 2, 2).is_empty());
        assert_eq!(c.get(b"a"), Some(1));
        // "b" is the least recently used: it goes.
        assert_eq!(c.insert(b"c".to_vec(), 3, 2), vec![2]);
        assert_eq!(c.get(b"b"), None);
        assert_eq!(c.len(), 2);
        // Re-preparing the same text replaces (and closes) the old id.
        assert_eq!(c.insert(b"a".to_vec(), 4, 2), vec![1]);
        assert!(c.holds(4) && !c.holds(1));
    }
}
