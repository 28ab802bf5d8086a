//! Backend connections: authenticated connections to one server as one
//! user, with the protocol shape (capabilities, collation) of the client
//! they serve, and per-server pools of idle ones.
//!
//! A session borrows connections with [`Pools::get`] and gives them back
//! with [`Pools::put`], which resets them (`COM_RESET_CONNECTION`) so no
//! state leaks from one client to the next. The boundary is deliberately
//! narrow so that multiplexing (giving a connection back between
//! transactions) is a policy decision in the session, not a rewrite here.
//!
//! Connections are TLS-encrypted per `server_tls` ([`tls`]); the pools hold
//! the TLS settings of the current configuration, so the session never
//! deals with them.

pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_common::constants::CapabilityFlags;
use tokio::net::TcpStream;
use tracing::debug;

use crate::protocol::auth::Stage1;
use crate::protocol::command::code;
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
    /// Connection collation from the handshake.
    pub collation: u8,
}

/// Credentials a session logs into servers with.
#[derive(Debug, Clone)]
pub struct Credential {
    pub user: Arc<str>,
    /// `SHA1(password)`; `None` for a password-less account.
    pub stage1: Option<Stage1>,
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
    /// Replaying the session's state on this connection failed.
    #[error("replaying session state failed: {} ({})", .0.message, .0.code)]
    Replay(ClientError),
}

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
pub struct BackendConn {
    pub stream: PacketStream<BackendIo>,
    pub key: PoolKey,
    /// Capabilities in force on this connection.
    pub caps: CapabilityFlags,
    pub hello: ServerHello,
    /// Schema currently selected on the server side, as far as rwproxy knows.
    pub schema: Option<String>,
    /// Version of the session's replayable state applied here (0 = none).
    pub state_version: u64,
    /// When it was last used (to decide whether to ping before reuse).
    pub last_used: Instant,
    /// Set when a response was not fully read or the socket failed: the
    /// connection must not be reused.
    pub broken: bool,
    /// The server reports `last_gtid` in OK packets (session tracking), so
    /// read-your-writes needs no extra query after a commit.
    pub tracks_gtid: bool,
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
                db,
                caps,
                collation: key.collation,
                max_packet: 1 << 30,
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
                stream,
                caps: hello.caps,
                key: key.clone(),
                hello,
                schema: db.map(str::to_string),
                state_version: 0,
                last_used: Instant::now(),
                broken: false,
                tracks_gtid: false,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout(timeout, addr.to_string())),
        }
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

    /// Runs a one-value query rwproxy needs itself (e.g. `@@last_gtid`)
    /// and returns the first column of the first row as text.
    pub async fn query_value(&mut self, sql: &str) -> Result<Option<String>, BackendError> {
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(code::COM_QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.broken = true;
        self.stream.queue_payload(0, &payload);
        self.stream.flush().await?;
        let v = response::read_single_value(&mut self.stream, self.caps).await?;
        self.broken = false;
        Ok(v)
    }

    async fn run_internal(
        &mut self,
        payload: &[u8],
        expect: Expect,
    ) -> Result<Option<ClientError>, BackendError> {
        self.broken = true;
        self.stream.queue_payload(0, payload);
        self.stream.flush().await?;
        let summary =
            response::forward::<_, TcpStream>(&mut self.stream, None, expect, self.caps).await?;
        self.broken = false;
        self.last_used = Instant::now();
        Ok(summary.err)
    }
}

/// Idle connections per pool key, with the knobs that govern reuse.
pub struct Pools {
    idle: Mutex<HashMap<PoolKey, Vec<BackendConn>>>,
    max_idle: usize,
    ping_after: Duration,
    connect_timeout: Duration,
    /// TLS settings of the configuration in force (swapped by RELOAD).
    tls: arc_swap::ArcSwap<tls::ServerTls>,
}

impl Pools {
    pub fn new(max_idle: usize, ping_after: Duration, connect_timeout: Duration) -> Pools {
        Pools {
            idle: Mutex::new(HashMap::new()),
            max_idle,
            ping_after,
            connect_timeout,
            tls: Default::default(),
        }
    }

    /// Sets the TLS settings new connections use (at start-up and RELOAD;
    /// idle connections opened under the old ones stay until they close).
    pub fn set_server_tls(&self, tls: tls::ServerTls) {
        self.tls.store(Arc::new(tls));
    }

    /// The pool key a session with these parameters uses on `server`.
    pub fn key(
        server: &Arc<str>,
        user: &Arc<str>,
        caps: CapabilityFlags,
        collation: u8,
    ) -> PoolKey {
        PoolKey {
            server: server.clone(),
            user: user.clone(),
            caps: shaping_capabilities(caps).bits(),
            collation,
        }
    }

    fn take_idle(&self, key: &PoolKey) -> Option<BackendConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(key).and_then(Vec::pop)
    }

    /// Borrows a connection: an idle one (pinged first if it sat idle long
    /// enough for `wait_timeout` to have killed it) or a new one.
    pub async fn get(
        &self,
        addr: &str,
        key: &PoolKey,
        cred: &Credential,
        caps: CapabilityFlags,
        db: Option<&str>,
    ) -> Result<BackendConn, BackendError> {
        while let Some(mut conn) = self.take_idle(key) {
            if conn.last_used.elapsed() < self.ping_after {
                return Ok(conn);
            }
            match conn.simple(code::COM_PING, &[]).await {
                Ok(None) => return Ok(conn),
                _ => debug!(server = %key.server, "dropping stale pooled connection"),
            }
        }
        let tls = self.tls.load();
        BackendConn::connect(
            addr,
            key.clone(),
            cred,
            caps,
            db,
            self.connect_timeout,
            tls.for_server(&key.server),
        )
        .await
    }

    /// Gives a connection back: reset, then kept idle (or closed if the
    /// pool is full or the connection is not clean).
    pub async fn put(&self, mut conn: BackendConn) {
        if conn.broken {
            return;
        }
        if !matches!(conn.simple(code::COM_RESET_CONNECTION, &[]).await, Ok(None)) {
            return;
        }
        conn.state_version = 0;
        // The reset restored the server's default tracking.
        conn.tracks_gtid = false;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(conn.key.clone()).or_default();
        if list.len() < self.max_idle {
            list.push(conn);
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
