//! One client connection: handshake, then the command loop
//! (decode → classify → route → execute → account), and the state that
//! follows the client across the backend connections it uses.
//!
//! A session holds at most one connection per server (borrowed from the
//! pools on first use, returned reset when the session ends). Before a
//! statement runs on a connection, the session's replayable state (schema,
//! `SET NAMES`, session variables set to literals) is brought up to date
//! there, so a read served by a replica sees what the client set.

mod execute;
mod global;
mod kill;
mod lifecycle;
mod routing;
mod sha2_login;
mod state;
mod stmt;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::accounts::{ClientAddr, Lookup};
use crate::app::{SessionControl, SessionInfo, Shared};
use crate::backend::{BackendConn, BackendError, Credential, Pools, Want};
use crate::config::{Balance, ClientCompression, Config, Consistency, PoolMode};
use crate::gtid::GtidPos;
use crate::metrics::ErrorKind;
use crate::protocol::auth;
use crate::protocol::command::{self, Command};
use crate::protocol::compress::{Algorithm, DEFAULT_ZSTD_LEVEL, Role};
use crate::protocol::handshake::{self, ClientHello, FirstReply, HandshakeError};
use crate::protocol::packet::{FrameError, PacketStream};
use crate::protocol::response::{self, Expect, ForwardError, Summary};
use crate::protocol::stream::ClientTransport;
use crate::protocol::{ClientError, ok_payload};
use crate::router::classify::{self, Classified, StatementKind, TxOpen};
use crate::router::digest;
use crate::router::kill::KillScope;
use crate::router::rules::{self, Subject, Verdict};
use crate::router::{self, Policy, ReadNeeds, Route, SessionView, Unavailable};
use crate::topology::{ServerStats, Snapshot};
use execute::{Ran, Work};
use state::State;
use stmt::Statements;

/// A backend connection the session holds, by server name.
struct Held {
    server: Arc<str>,
    conn: BackendConn,
    /// Borrowed while the server was the primary: transactions and pinned
    /// state live here (sharing pool modes keep it while they last).
    primary: bool,
    /// The server's counters: `in_use` counts this connection while held.
    stats: Arc<ServerStats>,
}

impl Held {
    /// Gives up the connection, counting it out of the server's `in_use`.
    fn into_conn(self) -> BackendConn {
        self.stats.in_use.fetch_sub(1, Ordering::Relaxed);
        self.conn
    }
}

/// A read-only transaction the session runs on a replica's connection.
#[derive(Debug, Clone)]
struct ReplicaTx {
    /// The replica whose held connection has it.
    server: Arc<str>,
    /// The server reported the transaction open (`SERVER_STATUS_IN_TRANS`).
    /// `false`: only `SET TRANSACTION READ ONLY` ran there so far, and the
    /// transaction it announces has not started yet.
    open: bool,
}

/// How a statement failed, from the session's point of view.
#[derive(Debug, thiserror::Error)]
enum ExecError {
    /// The client is gone or misbehaved: end the session.
    #[error("client: {0}")]
    Client(FrameError),
    /// Could not get a usable connection (nothing was sent to the client).
    #[error("{server}: {source}")]
    Acquire {
        server: Arc<str>,
        #[source]
        source: BackendError,
    },
    /// The backend failed while answering. If `started`, part of the
    /// answer already reached the client and the session must be closed.
    #[error("{server}: {source}")]
    Backend {
        server: Arc<str>,
        #[source]
        source: ForwardError,
        started: bool,
    },
    /// rwproxy refuses the statement itself.
    #[error("{}", .0.message)]
    Refused(ClientError),
    /// `KILL CONNECTION` of this session arrived: end it (see `kill`).
    #[error("connection killed")]
    Killed,
}

impl ExecError {
    /// Whether the same statement may safely be tried on another server.
    fn retryable(&self) -> bool {
        match self {
            ExecError::Acquire { source, .. } => {
                source.server_refusal().is_none()
                    && !matches!(source, BackendError::PoolExhausted { .. })
            }
            ExecError::Backend { started, .. } => !started,
            _ => false,
        }
    }

    /// The ERR the client sees (when nothing was sent yet).
    fn to_client(&self) -> ClientError {
        match self {
            ExecError::Acquire {
                source: source @ BackendError::PoolExhausted { .. },
                ..
            } => ClientError::new(1040, b"08004", format!("rwproxy: {source}")),
            ExecError::Acquire { server, source } => match source.server_refusal() {
                Some(e) => e.clone(),
                None => ClientError::new(
                    1429,
                    b"HY000",
                    format!("rwproxy: can't connect to backend '{server}': {source}"),
                ),
            },
            ExecError::Backend { server, source, .. } => {
                ClientError::lost_backend(server, &source.to_string())
            }
            ExecError::Refused(e) => e.clone(),
            ExecError::Killed => ClientError::new(1927, b"70100", "Connection was killed"),
            ExecError::Client(e) => ClientError::new(1105, b"HY000", e.to_string()),
        }
    }
}

/// Bounds how long one statement waits for an automatic failover: it may
/// wait several times (the topology can flicker while the new primary is
/// published), but never past one deadline.
#[derive(Default)]
pub(crate) struct FailoverWait {
    deadline: Option<Instant>,
}

impl FailoverWait {
    fn may_wait<S: AsyncRead + AsyncWrite + Unpin + Send>(&mut self, s: &Session<S>) -> bool {
        let Some(f) = s.cfg.failover.as_ref().filter(|f| f.auto_failover) else {
            return false;
        };
        // No failover is coming while replicas still receive from the
        // primary or two servers claim to be primary: answer at once.
        if s.shared.topology.load().no_primary_reason().is_some() {
            return false;
        }
        let deadline = *self.deadline.get_or_insert_with(|| {
            Instant::now()
                + s.cfg.monitor_interval() * (f.failover_after + 4)
                + Duration::from_millis(f.switchover_timeout_ms)
                + Duration::from_millis(f.primary_failure_timeout_ms)
        });
        Instant::now() < deadline
    }
}

/// Why a client's login did not complete: the `reason` of its "handshake
/// failed" log line (the client got an ERR, or its connection failed).
#[derive(Debug, thiserror::Error)]
enum LoginFailure {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    #[error("{0}")]
    Tls(#[from] crate::protocol::stream::TlsUpgradeError),
    #[error("client asked for TLS, which is not offered here")]
    TlsNotOffered,
    #[error("SSLRequest after TLS")]
    SslRequestTwice,
    #[error("{0}")]
    BadHandshake(String),
    #[error("{}", .0.message)]
    Refused(ClientError),
    #[error("plaintext login refused (require_tls)")]
    PlaintextRefused,
    #[error("login refused for user {user:?}: {}", .error.message)]
    Denied { user: String, error: ClientError },
    #[error("login refused by backend: {}", .0.message)]
    Backend(ClientError),
}

/// Why a session ended: the `reason` of its "session closed" log line.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client quit")]
    Quit,
    #[error("client disconnected")]
    Disconnected,
    #[error("server shutting down")]
    Shutdown,
    #[error("killed by KILL")]
    Killed,
    #[error("client idle timeout")]
    IdleTimeout,
    #[error("client read timeout (stalled mid-packet)")]
    Stalled,
    #[error("packet too large")]
    TooLarge,
    #[error("protocol error: {0}")]
    Protocol(#[source] FrameError),
    #[error("client error: {0}")]
    Client(#[source] FrameError),
    #[error("backend failed mid-response: {0}")]
    BackendLost(#[source] ExecError),
    /// A backend connection holding the session's transaction or state
    /// died (see `lifecycle`): closed as the server would have closed it.
    #[error("backend connection holding the session's state was lost")]
    StateLost,
    /// Idle longer than the client's own `wait_timeout` (sharing pool modes).
    #[error("client wait_timeout")]
    WaitTimeout,
    #[error("COM_CHANGE_USER failed: {0}")]
    ChangeUser(#[source] HandshakeError),
    #[error("COM_CHANGE_USER refused for {user:?}: {}", .error.message)]
    ChangeUserRefused { user: String, error: ClientError },
}

/// Whether the command loop goes on.
enum Flow {
    Continue,
    Close,
}

/// Serves one client connection to its end. Never panics on client input;
/// every failure ends in an ERR packet or a clean close, and a log line.
/// `S` is the transport: a TCP [`crate::protocol::stream::ClientStream`]
/// or a Unix socket's stream (one copy of the session code each, so the
/// per-statement path never asks which).
pub async fn serve<S: ClientTransport>(shared: Arc<Shared>, stream: S, peer: ClientAddr) {
    let conn_id = new_conn_id(&shared);
    let span = info_span!("session", conn_id, %peer, user = tracing::field::Empty);
    // The span is entered only for the handshake. Entering it on every poll
    // of the command loop cost ~5 % of rwproxy's instructions per statement
    // (callgrind, point selects); log lines there name it as their parent
    // instead (`parent: &self.span`), which needs no entering.
    {
        let started = Instant::now();
        let client = PacketStream::new(stream);
        let hs = tokio::time::timeout(
            shared.config.load().handshake_timeout(),
            Box::pin(handshake(&shared, client, conn_id, peer)).instrument(span.clone()),
        )
        .await;
        let mut session = match hs {
            Ok(Ok(s)) => s,
            Ok(Err(reason)) => {
                shared.metrics.error(ErrorKind::AuthFailed);
                info!(parent: &span, %reason, "handshake failed");
                return;
            }
            Err(_) => {
                info!(parent: &span, "handshake timed out");
                return;
            }
        };
        span.record("user", &*session.cred.user);
        session.hangup = session.client.get_ref().hangup_probe();
        let per_user = session.cfg.max_connections_per_user;
        if per_user > 0 {
            let open = shared
                .sessions
                .lock()
                .map(|m| m.values().filter(|s| s.user == *session.cred.user).count())
                .unwrap_or(0);
            if open >= per_user {
                let e = ClientError::new(
                    1226,
                    b"42000",
                    format!(
                        "User '{}' has exceeded the 'max_connections_per_user' resource (current value: {per_user})",
                        session.cred.user
                    ),
                );
                session.send_err(&e).await;
                session.release_all().await;
                info!(parent: &span, "refused: per-user connection limit");
                return;
            }
        }
        debug!(parent: &span, "session opened");
        shared.metrics.sessions_open.fetch_add(1, Ordering::Relaxed);
        shared
            .metrics
            .sessions_total
            .fetch_add(1, Ordering::Relaxed);
        if let Ok(mut reg) = shared.sessions.lock() {
            reg.insert(
                conn_id,
                SessionInfo {
                    user: session.cred.user.to_string(),
                    peer,
                    since: std::time::SystemTime::now(),
                    schema: session.state.schema.clone(),
                    control: session.control.clone(),
                },
            );
        }
        let reason = session.command_loop().await;
        if let Ok(mut reg) = shared.sessions.lock() {
            reg.remove(&conn_id);
        }
        // The client first: it need not wait for its connections' resets.
        session.client.shutdown().await;
        session.release_all().await;
        session.set_in_trans(false);
        session.account_bytes();
        shared.metrics.sessions_open.fetch_sub(1, Ordering::Relaxed);
        info!(parent: &span,
            %reason,
            bytes_in = session.client.bytes_in,
            bytes_out = session.client.bytes_out,
            secs = started.elapsed().as_secs_f64(),
            "session closed"
        );
    }
}

/// A session id for the handshake: unique among the sessions alive (ids
/// still registered are skipped when the counter wraps; 0 is never used,
/// drivers read it as "no id").
fn new_conn_id(shared: &Shared) -> u32 {
    loop {
        let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let taken = shared
            .sessions
            .lock()
            .map(|m| m.contains_key(&id))
            .unwrap_or(false);
        if id != 0 && !taken {
            return id;
        }
    }
}

/// Drivers such as mysql_async ask for `@@socket` on connect and, when the
/// server looks local, silently reconnect to that Unix socket — straight to
/// a backend, bypassing rwproxy. A proxy's backends' sockets are never the
/// client's to use, so `@@socket` is answered as NULL (the request is
/// rewritten; the answer is still the server's own bytes), in a column
/// still named `@@socket` when it stands alone in the select list. Returns the
/// rewritten payload, or `None` when the statement does not read it
/// (`Classified::reads_socket` says so without looking at the text
/// again). Only code is rewritten, never a string or comment.
fn hide_socket(payload: &[u8]) -> Option<Vec<u8>> {
    crate::router::lex::replace_socket_var(payload)
}

/// Answers a connection rwproxy will not serve with an ERR and closes it.
pub async fn refuse<S>(stream: S, peer: ClientAddr, err: ClientError)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    info!(%peer, code = err.code, reason = %err.message, "connection refused");
    let mut client = PacketStream::new(stream);
    client.queue_payload(0, &err.to_payload());
    let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
}

/// Authenticates a client against the configured accounts.
async fn handshake<S: ClientTransport>(
    shared: &Arc<Shared>,
    mut client: PacketStream<S>,
    conn_id: u32,
    peer: ClientAddr,
) -> Result<Session<S>, LoginFailure> {
    let scramble = auth::new_scramble();
    let cfg = shared.config.load_full();
    client.set_write_timeout(
        (cfg.client_write_timeout_ms > 0)
            .then(|| Duration::from_millis(cfg.client_write_timeout_ms)),
    );
    let g = &shared.greeting;
    let mut caps = g.caps;
    if S::OFFERS_TLS && shared.tls.is_some() {
        caps |= CapabilityFlags::CLIENT_SSL;
    }
    for c in &cfg.client_compression {
        caps |= match c {
            ClientCompression::Zlib => CapabilityFlags::CLIENT_COMPRESS,
            ClientCompression::Zstd => CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM,
        };
    }
    let offered = caps;
    handshake::send_greeting(
        &mut client,
        &g.version,
        conn_id,
        &scramble,
        caps,
        g.ext,
        g.collation,
        shared.accounts.greet_with_sha2(),
    )
    .await?;
    let mut expect_seq = 1;
    let hello: ClientHello = loop {
        match handshake::read_client_hello(&mut client, cfg.max_allowed_packet, expect_seq).await {
            Ok(FirstReply::Hello(h)) => break h,
            Ok(FirstReply::SslRequest) if expect_seq == 1 => {
                // Upgrade to TLS; the handshake response follows, encrypted,
                // with the next sequence id.
                let acceptor = match shared.tls.clone() {
                    Some(a) if S::OFFERS_TLS => a,
                    _ => {
                        // Not offered in the greeting (no certificate, or
                        // the Unix socket): answer as a server without
                        // TLS support would, with an ERR in plaintext.
                        let e = ClientError::new(
                            1043,
                            b"08S01",
                            "Bad handshake: TLS was not offered on this connection",
                        );
                        client.queue_payload(2, &e.to_payload());
                        client.shutdown().await;
                        return Err(LoginFailure::TlsNotOffered);
                    }
                };
                // What was read past the SSLRequest is the start of the
                // TLS handshake: it goes back in front of the stream.
                let (stream, rest) = client.into_inner();
                client = PacketStream::new(stream.start_tls(rest, acceptor).await?);
                client.set_write_timeout(
                    (cfg.client_write_timeout_ms > 0)
                        .then(|| Duration::from_millis(cfg.client_write_timeout_ms)),
                );
                expect_seq = 2;
            }
            Ok(FirstReply::SslRequest) => return Err(LoginFailure::SslRequestTwice),
            Err(HandshakeError::Malformed(m)) => {
                let e = ClientError::new(1043, b"08S01", format!("Bad handshake: {m}"));
                client.queue_payload(expect_seq.wrapping_add(1), &e.to_payload());
                client.shutdown().await;
                return Err(LoginFailure::BadHandshake(m));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let compression = match client_compression(offered, &hello) {
        Ok(c) => c,
        Err(e) => {
            client.queue_payload(hello.seq.wrapping_add(1), &e.to_payload());
            client.shutdown().await;
            return Err(LoginFailure::Refused(e));
        }
    };
    if cfg.require_tls && !S::LOCAL && !client.get_ref().is_tls() {
        let e = ClientError::new(
            3159,
            b"HY000",
            "Connections using insecure transport are prohibited while require_tls = true",
        );
        client.queue_payload(hello.seq.wrapping_add(1), &e.to_payload());
        client.shutdown().await;
        return Err(LoginFailure::PlaintextRefused);
    }
    let mut seq = hello.seq.wrapping_add(1);
    let mut reply = hello.auth_reply.clone();
    let tls = client.get_ref().is_tls();
    // caching_sha2_password accounts (MySQL) and clients that ask for it.
    let sha2 = match sha2_login::try_login(shared, &mut client, &hello, seq, &scramble, peer).await
    {
        Ok(done) => done,
        Err(sha2_login::Sha2LoginError::Refused { err, seq }) => {
            client.queue_payload(seq, &err.to_payload());
            client.shutdown().await;
            return Err(LoginFailure::Denied {
                user: hello.user,
                error: err,
            });
        }
        Err(sha2_login::Sha2LoginError::Frame(e)) => return Err(e.into()),
    };
    if sha2.is_none()
        && hello
            .plugin
            .as_deref()
            .is_some_and(|p| p != "mysql_native_password")
    {
        // e.g. caching_sha2_password: ask for a native-password answer.
        let (r, s) = handshake::switch_to_native(&mut client, seq, &scramble).await?;
        reply = r;
        seq = s.wrapping_add(1);
    }
    let verified = match sha2 {
        Some((cred, next)) => {
            seq = next;
            Ok(cred)
        }
        None => verify(shared, &hello.user, peer, tls, (&scramble, &reply)).await,
    };
    let stage1 = match verified {
        Ok(c) => c,
        Err(e) => {
            client.queue_payload(seq, &e.to_payload());
            client.shutdown().await;
            return Err(LoginFailure::Denied {
                user: hello.user,
                error: e,
            });
        }
    };
    // TLS is between the client and rwproxy only: never ask servers for it.
    let caps = hello.caps & g.caps;
    let ext = hello.ext & g.ext;
    // Drawn only when used, so per-statement round-robin keeps its strict
    // alternation.
    let session_ticket = if cfg.balance == Balance::Session {
        shared.read_ticket.fetch_add(1, Ordering::Relaxed)
    } else {
        0
    };
    let mut session = Session {
        shared: shared.clone(),
        cfg,
        client,
        peer,
        client_tls: tls,
        scramble,
        caps,
        ext,
        collation: hello.collation,
        cred: stage1,
        state: State::default(),
        autocommit: true,
        in_trans: false,
        pinned: false,
        replica_tx: None,
        trans_wrote: false,
        // Drawn only when used, so per-statement round-robin keeps its
        // strict alternation.
        session_ticket,
        conns: Vec::new(),
        stmts: Statements::default(),
        last_write: None,
        bytes_seen: (0, 0),
        digest_text: String::new(),
        span: tracing::Span::current(),
        sticky: false,
        home: crate::workers::home(),
        closing: false,
        conn_id,
        control: SessionControl::default(),
        hangup: None,
        last_ran: None,
        keep_last: None,
        gtid_pending: None,
    };
    session.state.schema = hello.db.clone();
    // A schema given at login is checked on the primary now, so that a
    // wrong name fails the login exactly as it would against the server.
    if hello.db.is_some() {
        let snap = shared.topology.load();
        // The primary when it is up; any live server otherwise (during a
        // failover), since every server has the same schemas.
        let target = snap
            .primary
            .filter(|p| snap.servers[*p].up)
            .or_else(|| snap.servers.iter().position(|s| s.up && s.fenced.is_none()));
        let checked = match target {
            Some(p) => session.acquire(&snap, p).await.map(Some),
            None => Ok(None),
        };
        // `acquire` lets a session go on without a schema another client
        // dropped; a login naming one that does not exist fails, as directly.
        let missing = |pos: usize| {
            let db = hello.db.as_deref().unwrap_or_default();
            (session.conns[pos].conn.schema() != Some(db))
                .then(|| ClientError::new(1049, b"42000", format!("Unknown database '{db}'")))
        };
        let refused = match checked {
            Ok(Some(pos)) => missing(pos),
            Ok(None) => None,
            Err(e) => Some(e.to_client()),
        };
        if let Some(err) = refused {
            session.client.queue_payload(seq, &err.to_payload());
            session.client.shutdown().await;
            session.release_all().await;
            return Err(LoginFailure::Backend(err));
        }
        // Sharing pool modes: a client that logs in and then idles holds
        // no server connection.
        session.release_idle();
    }
    session.client.queue_payload(
        seq,
        &ok_payload(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT),
    );
    session.client.flush().await?;
    // The OK is the last uncompressed packet.
    if let Some(algo) = compression {
        session.client.start_compression(algo, Role::Server)?;
    }
    Ok(session)
}

/// The compression a client negotiated: zlib when it asks for zlib (also
/// when it asks for both, as MySQL servers decide), zstd at the level it
/// sent. A client that asks for an algorithm rwproxy did not offer is
/// refused with ERR 1043 rather than having its packets misread.
fn client_compression(
    offered: CapabilityFlags,
    hello: &ClientHello,
) -> Result<Option<Algorithm>, ClientError> {
    let asked = hello.caps
        & (CapabilityFlags::CLIENT_COMPRESS | CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM);
    if !offered.contains(asked) {
        let name = if (asked - offered).contains(CapabilityFlags::CLIENT_COMPRESS) {
            "zlib"
        } else {
            "zstd"
        };
        return Err(ClientError::new(
            1043,
            b"08S01",
            format!(
                "Bad handshake: the client asked for {name} compression, which this server does not offer"
            ),
        ));
    }
    Ok(if asked.contains(CapabilityFlags::CLIENT_COMPRESS) {
        Some(Algorithm::Zlib)
    } else if asked.contains(CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM) {
        let level = hello
            .zstd_level
            .map_or(DEFAULT_ZSTD_LEVEL, |l| i32::from(l).clamp(1, 22));
        Some(Algorithm::Zstd { level })
    } else {
        None
    })
}

/// Checks a scramble reply against the account `user` would use from
/// `client`; returns the credential to log into servers, or the server's own
/// error for this case (1045 / 28000 for a wrong password or unknown user).
async fn verify(
    shared: &Shared,
    user: &str,
    client: ClientAddr,
    tls: bool,
    (scramble, reply): (&[u8], &[u8]),
) -> Result<Credential, ClientError> {
    let host = shared.accounts.host_name(&client);
    let denied = || ClientError::access_denied(user, &host, !reply.is_empty());
    let first = verify_once(shared, user, client, tls, scramble, reply, denied).await;
    match first {
        // The password may have changed since accounts were last read:
        // refresh (rate-limited) and try once more before refusing.
        Err(ref e)
            if e.code == 1045 && shared.config.load().auth == crate::config::AuthMode::Servers =>
        {
            shared.accounts.refresh_after_miss().await;
            verify_once(shared, user, client, tls, scramble, reply, denied).await
        }
        other => other,
    }
}

/// A TLS-only account's plaintext login, refused like the global
/// `require_tls` (only once the password proved right, so the answer does
/// not tell strangers which accounts exist).
fn insecure_transport() -> ClientError {
    ClientError::new(
        3159,
        b"HY000",
        "Connections using insecure transport are prohibited for this account (it requires TLS)",
    )
}

async fn verify_once(
    shared: &Shared,
    user: &str,
    client: ClientAddr,
    tls: bool,
    scramble: &[u8],
    reply: &[u8],
    denied: impl Fn() -> ClientError,
) -> Result<Credential, ClientError> {
    match shared.accounts.lookup(user, client).await {
        Lookup::Found {
            name,
            hash: None,
            require_tls,
        } if reply.is_empty() => {
            if require_tls && !tls {
                return Err(insecure_transport());
            }
            Ok(Credential {
                user: name,
                stage1: None,
                sha2: None,
            })
        }
        Lookup::Found { hash: None, .. } => Err(denied()),
        Lookup::Found {
            name,
            hash: Some(hash),
            require_tls,
        } => {
            let stage1 = auth::verify(scramble, reply, &hash).ok_or_else(denied)?;
            if require_tls && !tls {
                return Err(insecure_transport());
            }
            Ok(Credential {
                sha2: sha2_login::config_secret(&shared.config.load(), &name),
                user: name,
                stage1: Some(stage1),
            })
        }
        Lookup::NeedsClientCertificate => Err(ClientError::new(
            1251,
            b"08004",
            "rwproxy cannot proxy accounts that REQUIRE X509, ISSUER or SUBJECT (client certificates are neither checked nor forwarded); use REQUIRE SSL",
        )),
        Lookup::Locked => Err(ClientError::new(
            4151,
            b"HY000",
            "Access denied, this account is locked",
        )),
        Lookup::Expired => Err(ClientError::new(
            1862,
            b"HY000",
            "Your password has expired. To log in you must change it using a client that supports expired passwords",
        )),
        Lookup::Unsupported(plugin) => Err(ClientError::new(
            1251,
            b"08004",
            format!(
                "rwproxy cannot proxy accounts that use the '{plugin}' authentication plugin; use mysql_native_password"
            ),
        )),
        // Served by sha2_login before; here only through COM_CHANGE_USER,
        // which speaks mysql_native_password only.
        Lookup::FoundSha2 { .. } => Err(ClientError::new(
            1251,
            b"08004",
            "rwproxy cannot change to a caching_sha2_password account with COM_CHANGE_USER; reconnect instead",
        )),
        Lookup::NotFound => Err(denied()),
    }
}

/// One client session after authentication.
pub struct Session<S> {
    shared: Arc<Shared>,
    /// The configuration as of the session's start (RELOAD applies to new sessions).
    cfg: Arc<Config>,
    client: PacketStream<S>,
    /// The client's address (host patterns of accounts are judged on it).
    peer: ClientAddr,
    /// The client connection is TLS (TLS-only accounts may change to it).
    client_tls: bool,
    /// The scramble of the initial handshake (COM_CHANGE_USER answers it).
    scramble: [u8; auth::SCRAMBLE_LEN],
    /// Capabilities negotiated with the client; backend connections use the same.
    caps: CapabilityFlags,
    /// MariaDB extended capabilities negotiated with the client (part of
    /// the pool key, so backend connections ask for the same).
    ext: MariadbCapabilities,
    collation: u8,
    cred: Credential,
    /// Replayable state (schema, SET NAMES, session variables).
    state: State,
    /// From the primary's status flags: the truth about transactions.
    autocommit: bool,
    in_trans: bool,
    /// The session holds state only its primary connection has.
    pinned: bool,
    /// A read-only transaction running on a replica: every statement goes
    /// to that connection until the server's status flags say it ended.
    /// `in_trans` stays about the primary.
    replica_tx: Option<ReplicaTx>,
    /// The open transaction (or the statement just run) may have written
    /// on the primary: its GTID is wanted when it ends (read-your-writes
    /// without session tracking).
    trans_wrote: bool,
    /// This session's replica ticket for `balance = "session"`.
    session_ticket: u64,
    conns: Vec<Held>,
    stmts: Statements,
    /// GTID of the session's last committed write (read-your-writes).
    last_write: Option<GtidPos>,
    /// Client byte counters already added to the metrics.
    bytes_seen: (u64, u64),
    /// Reused buffer for the normalized text of the current statement.
    digest_text: String,
    /// The session's log span (conn_id, peer, user): the parent of its log
    /// lines, never entered in the command loop.
    span: tracing::Span,
    /// Sharing pool modes: the last statement wrote on the primary, so its
    /// connection stays with the session through the next command (which
    /// may ask `LAST_INSERT_ID()`, `ROW_COUNT()` or `@@last_gtid`).
    sticky: bool,
    /// The session thread this session lives on (its pools' key part).
    home: u16,
    /// A backend connection the session depended on died: the client's
    /// connection closes after the current command (`lifecycle`).
    closing: bool,
    /// The id the client got in the handshake (`CONNECTION_ID()`, `KILL`).
    conn_id: u32,
    /// How other sessions' `KILL` reaches this one (see `kill`).
    control: SessionControl,
    /// Notices a client that hung up during a statement (`forward_on`).
    hangup: Option<crate::protocol::stream::HangupProbe>,
    /// The server whose connection ran the session's last statement: the
    /// one that holds its diagnostics (see `Session::diagnostics_bound`).
    last_ran: Option<Arc<str>>,
    /// Sharing pool modes: the last statement left diagnostics worth
    /// reading (warnings, an error, affected rows…) on this server's
    /// connection, so it stays with the session through the next command.
    keep_last: Option<Arc<str>>,
    /// A write committed on this (primary) server's connection and its
    /// GTID is still to be read there (see `resolve_pending_gtid`); the
    /// connection is kept until then.
    gtid_pending: Option<Arc<str>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn view(&self) -> SessionView {
        SessionView {
            in_transaction: self.in_trans,
            autocommit: self.autocommit,
            pinned: self.pinned,
            read_only: self.state.read_only,
            replica_tx: None,
        }
    }

    /// The session as routing sees it on `snap` (the replica holding a
    /// read-only transaction resolved to its index there).
    fn view_in(&self, snap: &Snapshot) -> SessionView {
        SessionView {
            replica_tx: self.replica_tx.as_ref().and_then(|t| snap.find(&t.server)),
            ..self.view()
        }
    }

    /// Whether a transaction is open, on the primary or on a replica.
    fn in_any_trans(&self) -> bool {
        self.in_trans || self.replica_tx.as_ref().is_some_and(|t| t.open)
    }

    /// Reads and runs commands until the client leaves or fails.
    async fn command_loop(&mut self) -> End {
        let shutdown = self.shared.shutdown.clone();
        let killed = self.control.killed.clone();
        loop {
            let idle = self.cfg.client_idle_timeout_ms;
            let wait_timeout = self.client_wait_timeout();
            let idle_limit = async {
                match (idle, wait_timeout) {
                    (0, None) => std::future::pending::<()>().await,
                    (0, Some(w)) => tokio::time::sleep(w).await,
                    (ms, None) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    (ms, Some(w)) => tokio::time::sleep(w.min(Duration::from_millis(ms))).await,
                }
            };
            // Idle between commands: bounded by `client_idle_timeout_ms`
            // (and shutdown). Once a packet has started, the rest of it is
            // bounded by `client_read_timeout_ms` (a stalled client).
            let started = tokio::select! {
                r = self.client.wait_readable() => r,
                _ = shutdown.cancelled(), if !self.in_any_trans() => {
                    return End::Shutdown;
                }
                _ = killed.cancelled() => {
                    return End::Killed;
                }
                _ = idle_limit => {
                    // As the server does at `wait_timeout` (MariaDB 10.11:
                    // a bare close).
                    if wait_timeout.is_some_and(|w| idle == 0 || w < Duration::from_millis(idle)) {
                        return End::WaitTimeout;
                    }
                    return End::IdleTimeout;
                }
            };
            let read = match started {
                Ok(false) => Err(FrameError::Closed),
                Err(e) => Err(e),
                Ok(true) => {
                    // A whole packet already here cannot stall: no timer
                    // (arming one reads the clock on every command).
                    let whole = self.client.has_buffered_packet();
                    let rest = self
                        .client
                        .read_packet(self.cfg.max_allowed_packet, Some(0));
                    match self.cfg.client_read_timeout_ms {
                        _ if whole => rest.await,
                        0 => rest.await,
                        ms => match tokio::time::timeout(Duration::from_millis(ms), rest).await {
                            Ok(r) => r,
                            Err(_) => {
                                self.shared.metrics.error(ErrorKind::ClientProtocol);
                                warn!(parent: &self.span, ms, "client stalled in the middle of a packet");
                                return End::Stalled;
                            }
                        },
                    }
                }
            };
            let packet = match read {
                Ok(p) => p,
                Err(FrameError::Closed) => return End::Disconnected,
                Err(FrameError::TooLarge { size, limit }) => {
                    warn!(parent: &self.span, size, limit, "client packet exceeds max_allowed_packet");
                    self.send_err(&ClientError::packet_too_large()).await;
                    return End::TooLarge;
                }
                Err(e) => {
                    self.shared.metrics.error(ErrorKind::ClientProtocol);
                    warn!(parent: &self.span, error = %e, "bad packet from client");
                    return End::Protocol(e);
                }
            };
            let mut payload = packet.payload;
            // Boxed: the dispatch future is large (it nests routing, state
            // replay and forwarding); inline, every idle session would carry
            // it. Measured: ~24 KiB per idle client without the box.
            let r = Box::pin(self.dispatch(&mut payload)).await;
            self.release_idle();
            self.account_bytes();
            if killed.is_cancelled() {
                return End::Killed;
            }
            match r {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => return End::Quit,
                Err(e) => return e,
            }
        }
    }

    /// Runs one command. `Err` ends the session with the given reason.
    async fn dispatch(&mut self, payload: &mut [u8]) -> Result<Flow, End> {
        let cmd = match command::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                warn!(parent: &self.span, error = %e, "malformed command");
                self.send_err(&ClientError::malformed_packet()).await;
                return Ok(Flow::Continue);
            }
        };
        let r = match cmd {
            Command::Quit => return Ok(Flow::Close),
            Command::Ping => {
                let st = self.status_flags();
                self.client.queue_payload(1, &ok_payload(0, 0, st));
                self.client.flush().await.map_err(End::Client)?;
                Ok(())
            }
            Command::Query(sql) => {
                let c = self.route_stored_functions(sql, classify::classify(sql));
                // Normalized (literals as `?`), never the raw text: string
                // literals carry passwords (`IDENTIFIED BY '…'`) and user data.
                debug!(parent: &self.span, statement = %digest::Redacted(sql), kind = ?c.kind, "query");
                if c.kill {
                    // `KILL QUERY ID n` names the server's query ids: an
                    // ordinary statement for the primary.
                    match crate::router::kill::parse(sql) {
                        crate::router::kill::Kill::QueryId => {}
                        k => return self.on_kill_statement(k).await,
                    }
                }
                let mut hidden = c.reads_socket.then(|| hide_socket(payload)).flatten();
                if c.reads_tracking
                    && c.kind != StatementKind::Set
                    && self.adds_tracking()
                    && let Some(r) = crate::router::lex::replace_tracking_vars(
                        hidden.as_deref().unwrap_or(payload),
                    )
                {
                    hidden = Some(r);
                }
                let own_id = c
                    .connection_id
                    .then(|| {
                        let p = hidden.as_deref().unwrap_or(payload);
                        crate::router::lex::replace_connection_id(p, self.conn_id)
                    })
                    .flatten();
                match own_id.or(hidden) {
                    Some(rewritten) => self.on_query(&rewritten, c).await,
                    None => self.on_query(payload, c).await,
                }
            }
            Command::ProcessKill(id) => return self.on_process_kill(id).await,
            Command::InitDb(db) => {
                let db = String::from_utf8_lossy(db).into_owned();
                self.on_init_db(payload, db).await
            }
            Command::FieldList => self
                .command(StatementKind::Read, payload, Expect::FieldList)
                .await
                .map(|_| ()),
            Command::Statistics => self
                .command(StatementKind::ReadPrimary, payload, Expect::Statistics)
                .await
                .map(|_| ()),
            Command::ResetConnection => {
                self.reset_session().await;
                self.client
                    .queue_payload(1, &ok_payload(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT));
                self.client.flush().await.map_err(End::Client)?;
                Ok(())
            }
            Command::ChangeUser(rest) => {
                let rest = rest.to_vec();
                return self.on_change_user(&rest).await;
            }
            Command::SetOption(opt) => self.on_set_option(payload, opt).await,
            Command::StmtPrepare(sql) => {
                let sql = sql.to_vec();
                self.on_prepare(payload, sql).await
            }
            Command::StmtExecute { stmt_id } => self.on_execute(payload, stmt_id).await,
            Command::StmtSendLongData { stmt_id } => self.on_long_data(payload, stmt_id).await,
            Command::StmtClose { stmt_id } => {
                self.on_close(stmt_id).await;
                Ok(())
            }
            Command::StmtReset { stmt_id } => self.on_stmt_reset(payload, stmt_id).await,
            Command::StmtFetch { stmt_id } => self.on_fetch(payload, stmt_id).await,
            Command::Admin(a) => self.on_admin(payload, a).await,
            Command::Unsupported(c) => {
                info!(parent: &self.span, command = c, "unsupported command");
                self.send_err(&ClientError::unknown_command()).await;
                Ok(())
            }
        };
        match r {
            Ok(()) if self.closing => {
                let _ = self.client.flush().await;
                Err(End::StateLost)
            }
            Ok(()) => Ok(Flow::Continue),
            Err(ExecError::Client(e)) => Err(End::Client(e)),
            Err(ExecError::Killed) => Err(End::Killed),
            // The server's own path: the client finds its connection
            // closed (2013) and reconnects, knowing its state is gone.
            Err(_) if self.closing => Err(End::StateLost),
            Err(e @ ExecError::Backend { started: true, .. }) => {
                self.shared.metrics.error(ErrorKind::BackendLost);
                warn!(parent: &self.span, error = %e, "backend failed mid-response; closing client");
                Err(End::BackendLost(e))
            }
            Err(e) => {
                self.shared.metrics.error(match &e {
                    ExecError::Acquire { .. } => ErrorKind::BackendConnect,
                    ExecError::Backend { .. } => ErrorKind::BackendLost,
                    _ => ErrorKind::Refused,
                });
                warn!(parent: &self.span, error = %e, "statement failed");
                self.send_err(&e.to_client()).await;
                Ok(Flow::Continue)
            }
        }
    }

    /// Adds the bytes exchanged with the client since the last call.
    fn account_bytes(&mut self) {
        let m = &self.shared.metrics;
        m.bytes_from_clients
            .fetch_add(self.client.bytes_in - self.bytes_seen.0, Ordering::Relaxed);
        m.bytes_to_clients
            .fetch_add(self.client.bytes_out - self.bytes_seen.1, Ordering::Relaxed);
        self.bytes_seen = (self.client.bytes_in, self.client.bytes_out);
    }

    /// Records a statement (normalized `text`) that ran from `started` to
    /// `now` in the digest table, and in the log if slow. `outcome` says
    /// whether it ran on the primary and what came back (`None`: refused).
    pub(super) fn account_digest(
        &self,
        digest: u64,
        text: &str,
        (started, now): (Instant, Instant),
        outcome: Option<(bool, &Summary)>,
    ) {
        let took = now.saturating_duration_since(started);
        let (rows, error, on_primary) = match outcome {
            Some((on_primary, summary)) => (
                summary.rows.max(summary.affected_rows),
                summary.error.is_some(),
                on_primary,
            ),
            None => (0, true, false),
        };
        self.shared
            .digests
            .record_at(digest, text, took, rows, error, on_primary, now);
        let slow = self.cfg.slow_query_threshold_ms;
        if slow > 0 && took >= Duration::from_millis(slow) {
            warn!(parent: &self.span,
                digest = format!("{digest:016x}"),
                text = %text,
                ms = took.as_secs_f64() * 1000.0,
                rows,
                "slow statement"
            );
        }
    }

    /// Status flags for answers rwproxy writes itself.
    fn status_flags(&self) -> StatusFlags {
        let mut st = StatusFlags::empty();
        if self.autocommit {
            st |= StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        }
        if self.in_any_trans() {
            st |= StatusFlags::SERVER_STATUS_IN_TRANS;
        }
        if self.replica_tx.as_ref().is_some_and(|t| t.open) {
            st |= StatusFlags::SERVER_STATUS_IN_TRANS_READONLY;
        }
        st
    }

    async fn send_err(&mut self, e: &ClientError) {
        self.client.queue_payload(1, &e.to_payload());
        let _ = self.client.flush().await;
    }

    /// Matches a statement against the query rules. `Err` is the ERR for
    /// a denied statement; `Ok` carries the classification to route with
    /// (changed when a rule forces the route). With no rules configured this
    /// is one branch: no digest, no regex.
    fn apply_rules(
        &mut self,
        sql: &[u8],
        c: Classified,
        digest: Option<u64>,
    ) -> Result<(Classified, Option<Verdict>), ClientError> {
        let set = self.shared.rules.load();
        if set.is_empty() {
            return Ok((c, None));
        }
        let subject = Subject {
            sql,
            kind: c.kind,
            user: &self.cred.user,
            schema: self.state.schema.as_deref(),
        };
        let scratch = &mut self.digest_text;
        let Some(rule) = set.check(&subject, || {
            digest.unwrap_or_else(|| digest::normalize(sql, scratch))
        }) else {
            return Ok((c, None));
        };
        debug!(parent: &self.span, rule = %rule.name, verdict = ?rule.verdict, "query rule matched");
        match rule.verdict {
            Verdict::Deny => Err(rule.denial()),
            Verdict::Route(r) => Ok((rules::apply_route(c, r, self.view()), Some(rule.verdict))),
        }
    }

    async fn on_query(&mut self, payload: &[u8], c: Classified) -> Result<(), ExecError> {
        let sql = payload.get(1..).unwrap_or_default();
        let digest = if self.cfg.digest_capacity > 0 {
            Some(digest::normalize(sql, &mut self.digest_text))
        } else {
            None
        };
        if let Some(e) = self.refuse_in_statement_mode(&c, sql) {
            return Err(ExecError::Refused(e));
        }
        if let Some(e) = self.refuse_in_replica_tx(&c, sql) {
            return Err(ExecError::Refused(e));
        }
        let c = self.next_transaction(c, sql);
        let bound = self.without_primary(&c, Some(sql));
        let routed = match self.apply_rules(sql, c, digest) {
            Ok((routed, _)) => routed,
            Err(denied) => {
                // Denied statements show in SHOW DIGESTS as errors.
                if let Some(d) = digest {
                    let now = Instant::now();
                    self.account_digest(d, &self.digest_text, (now, now), None);
                }
                return Err(ExecError::Refused(denied));
            }
        };
        let function_ddl = self.before_write(sql, &c);
        if bound.is_none() {
            self.before_server_wide(&routed, sql).await;
        }
        let started = Instant::now();
        let work = Work::Command {
            payload,
            expect: Expect::Query,
        };
        let bound = bound.or_else(|| self.diagnostics_bound(&routed));
        let r = self.execute(&routed, bound.as_ref(), work).await;
        if let Some(d) = digest {
            let outcome = r.as_ref().ok().map(|ran| (ran.on_primary, &ran.summary));
            self.account_digest(d, &self.digest_text, (started, Instant::now()), outcome);
        }
        let Ran {
            server: route_idx,
            summary,
            ..
        } = r?;
        if summary.error.is_none() {
            match c.kind {
                StatementKind::Set => {
                    let before = self.state.fp;
                    if self.state.record_set(sql) {
                        // Unreplayable SET: only the primary connection has it.
                        self.pinned = true;
                    }
                    // The connection that ran the SET already has it.
                    self.state_applied(&route_idx, before);
                }
                StatementKind::Use => {
                    if let Some(db) = c.schema(sql) {
                        self.schema_selected(&route_idx, db);
                    }
                }
                _ => self.after_write(sql, &c, function_ddl, &route_idx),
            }
        }
        if let Some(schema) = summary.schema {
            self.schema_selected(&route_idx, schema);
        }
        if summary.error.is_none() {
            self.after_server_wide(&c, sql).await;
        }
        Ok(())
    }

    async fn on_init_db(&mut self, payload: &[u8], db: String) -> Result<(), ExecError> {
        if let Some(server) = self.session_command(StatementKind::Use, payload).await? {
            self.schema_selected(&server, db);
        }
        Ok(())
    }

    async fn on_set_option(&mut self, payload: &[u8], opt: u16) -> Result<(), ExecError> {
        if let Some(server) = self.session_command(StatementKind::Set, payload).await? {
            let before = self.state.fp;
            self.state.record_set_option(opt);
            self.state_applied(&server, before);
        }
        Ok(())
    }

    /// A command that changes session state (`COM_INIT_DB`,
    /// `COM_SET_OPTION`): the server that accepted it, `None` if it
    /// answered with an error.
    async fn session_command(
        &mut self,
        kind: StatementKind,
        payload: &[u8],
    ) -> Result<Option<Arc<str>>, ExecError> {
        let ran = self.command(kind, payload, Expect::Simple).await?;
        Ok(ran.summary.error.is_none().then_some(ran.server))
    }

    /// A server administration command: forwarded unchanged to the
    /// primary, whose answer (and privilege checks) the client gets.
    /// `COM_REFRESH` and `COM_SHUTDOWN` act on the server like the `FLUSH`
    /// and `SHUTDOWN` statements (writes: a `FLUSH` is binary-logged);
    /// `COM_DEBUG` and `COM_PROCESS_INFO` read the primary's own state.
    async fn on_admin(&mut self, payload: &[u8], a: command::Admin) -> Result<(), ExecError> {
        use command::Admin;
        let (kind, expect) = match a {
            Admin::Refresh | Admin::Shutdown => (StatementKind::Write, Expect::Simple),
            Admin::Debug => (StatementKind::ReadPrimary, Expect::Simple),
            Admin::ProcessInfo => (StatementKind::ReadPrimary, Expect::Query),
        };
        self.command(kind, payload, expect).await.map(|_| ())
    }

    /// Runs a command that is not a statement text (`COM_INIT_DB`,
    /// `COM_SET_OPTION`, `COM_FIELD_LIST`, `COM_STATISTICS`), routed as a
    /// statement of `kind`.
    async fn command(
        &mut self,
        kind: StatementKind,
        payload: &[u8],
        expect: Expect,
    ) -> Result<Ran, ExecError> {
        let c = Classified::of(kind);
        let bound = self.without_primary(&c, None);
        self.execute(&c, bound.as_ref(), Work::Command { payload, expect })
            .await
    }

    /// The session's schema is now `db`, and the connection to `server`
    /// (which ran the statement) has it selected.
    /// An empty name (the server's schema tracking after the current schema
    /// was dropped) means no schema.
    fn schema_selected(&mut self, server: &Arc<str>, db: String) {
        let held = self.conns.iter_mut().find(|h| &h.server == server);
        if db.is_empty() {
            self.state.schema = None;
            if let Some(h) = held {
                h.conn.clear_schema();
            }
            return;
        }
        self.state.schema = Some(db.clone());
        if let Some(h) = held {
            h.conn.set_schema(db);
        }
    }

    /// A SET ran on `server`'s connection: it carries the session state
    /// now, if it carried the state before (`before`, the fingerprint).
    fn state_applied(&mut self, server: &Arc<str>, before: u64) {
        if let Some(h) = self.conns.iter_mut().find(|h| &h.server == server)
            && h.conn.state_fp() == before
        {
            h.conn.set_state_fp(self.state.fp);
            h.conn.set_server_wait_timeout(self.state.wait_timeout());
        }
    }

    /// The routing policy in force.
    /// The round-robin ticket for the next read: per statement from the
    /// shared counter, or the session's own with `balance = "session"`.
    fn read_ticket(&self) -> u64 {
        match self.cfg.balance {
            Balance::Session => self.session_ticket,
            _ => self.shared.read_ticket.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            fallback: self.cfg.replica_fallback,
            balance: self.cfg.balance,
        }
    }

    /// How long a statement may be held by a switchover.
    pub(super) fn hold_limit(&self) -> Duration {
        self.cfg
            .failover
            .as_ref()
            .map(|f| Duration::from_millis(f.switchover_timeout_ms * 2 + 1000))
            .unwrap_or(Duration::from_secs(10))
    }

    /// Waits (bounded) until the topology has a primary again.
    pub(super) async fn wait_for_primary(&self) {
        self.wait_for_new_primary(None).await;
    }

    /// Waits (bounded) until the topology has a primary other than `old`.
    pub(super) async fn wait_for_new_primary(&self, old: Option<&Arc<str>>) {
        let Some(f) = self.cfg.failover.as_ref() else {
            return;
        };
        let limit = self.cfg.monitor_interval() * (f.failover_after + 4)
            + Duration::from_millis(f.switchover_timeout_ms)
            + Duration::from_millis(f.primary_failure_timeout_ms);
        let deadline = tokio::time::Instant::now() + limit;
        self.shared
            .topology
            .wait_until(deadline, |snap| {
                snap.primary_view()
                    .is_some_and(|p| p.up && old != Some(&p.name))
                    || snap.no_primary_reason().is_some()
            })
            .await;
    }

    /// Causal reads (`causal_wait_ms`; MaxScale calls them
    /// `causal_reads = local`). A read that must see the session's last
    /// write, when the monitor's snapshot shows no replica with it yet,
    /// asks the replica the balancer would pick to wait for that GTID
    /// (`MASTER_GTID_WAIT`, bounded by `causal_wait_ms`) and runs there if
    /// the wait succeeds; otherwise it goes to the primary as before.
    ///
    /// Why: the snapshot is up to one `monitor_interval_ms` old, so right
    /// after a write it shows no replica with it, although a healthy
    /// replica applies it within a millisecond; without the wait every read
    /// that follows a write lands on the primary for up to a monitor
    /// interval. The wait costs one round trip on the replica, and no read
    /// is ever older than the session's own write: the replica has applied
    /// it before the read is sent, or the primary answers.
    pub(super) async fn causal(
        &mut self,
        route: Route,
        c: &Classified,
        snap: &Snapshot,
        exclude: &[usize],
        ticket: u64,
    ) -> Route {
        match route {
            Route::Fallback(p) if self.cfg.causal_wait_ms > 0 => {
                let Some(gtid) = self.last_write.as_ref().filter(|g| !g.is_unknown()) else {
                    return route;
                };
                let gtid = gtid.to_string();
                match self.causal_replica(&gtid, c, snap, exclude, ticket).await {
                    Some(r) => Route::Replica(r),
                    None => Route::Fallback(p),
                }
            }
            r => r,
        }
    }

    /// Asks the replica the balancer would pick for `c` to wait until it
    /// has applied `gtid` (bounded by `causal_wait_ms`); that replica if it
    /// did. Also the wait of `consistency = "global"` (see `global.rs`).
    pub(super) async fn causal_replica(
        &mut self,
        gtid: &str,
        c: &Classified,
        snap: &Snapshot,
        exclude: &[usize],
        ticket: u64,
    ) -> Option<usize> {
        let secs = self.cfg.causal_wait_ms as f64 / 1000.0;
        let needs = ReadNeeds {
            max_lag: None,
            min_gtid: None,
            exclude,
        };
        let idx = router::causal_candidate(c, snap, self.policy(), &needs, ticket)?;
        let caught_up = match self.acquire(snap, idx).await {
            Ok(pos) => {
                // In the replica's own dialect (`MASTER_GTID_WAIT` /
                // `WAIT_FOR_EXECUTED_GTID_SET`; both answer 0 once applied).
                let sql = self.conns[pos].conn.flavor().gtid_wait_sql(gtid, secs);
                match self.conns[pos].conn.query_value(&sql).await {
                    Ok(v) => v.as_deref() == Some("0"),
                    Err(e) => {
                        debug!(parent: &self.span, server = %snap.servers[idx].name, error = %e, "causal wait failed");
                        self.remove_conn(pos);
                        false
                    }
                }
            }
            Err(_) => false,
        };
        self.shared.metrics.causal_wait(caught_up);
        caught_up.then_some(idx)
    }

    /// Read-your-writes: after a write commits on the primary, learn its
    /// GTID so the session's next reads only go to replicas that applied
    /// it: from the OK packet when the connection tracks `last_gtid`
    /// (MariaDB) or `OWN_GTID` (MySQL) (session tracking, set up when the
    /// session first uses the primary), else with `SELECT @@last_gtid`
    /// (MySQL: `@@GLOBAL.gtid_executed`) (one extra round trip per
    /// committed write).
    pub(super) async fn track_write(
        &mut self,
        c: &Classified,
        summary: &Summary,
        snap: &Snapshot,
        idx: usize,
    ) {
        if summary.error.is_none() && c.kind == StatementKind::Write {
            self.sticky = true;
        }
        if self.cfg.consistency != Consistency::Session || summary.error.is_some() {
            return;
        }
        // With session tracking the server reports `last_gtid` in the OK of
        // every statement that changes it (a write in autocommit, a COMMIT
        // that wrote, a non-transactional write inside a transaction).
        if let Some(g) = summary.gtid.as_deref().filter(|g| !g.is_empty()) {
            // A report rwproxy cannot read must not let reads go anywhere:
            // an empty position would be covered by every replica.
            let pos = GtidPos::parse(g);
            self.last_write = Some(if pos.is_empty() {
                GtidPos::unknown()
            } else {
                pos
            });
            if !self.in_trans {
                self.trans_wrote = false;
            }
            return;
        }
        // Otherwise the GTID is wanted once a transaction (or autocommit
        // statement) that may have written has ended, and only then: plain
        // reads cost nothing here.
        if !matches!(
            c.kind,
            StatementKind::Read
                | StatementKind::Transaction
                | StatementKind::Set
                | StatementKind::Use
        ) {
            self.trans_wrote = true;
        }
        if self.in_trans || !std::mem::take(&mut self.trans_wrote) {
            return;
        }
        let name = &snap.servers[idx].name;
        let Some(held) = self.conns.iter_mut().find(|h| &h.server == name) else {
            return;
        };
        if held.conn.tracks_gtid() {
            // Tracked, and no report: nothing new was written (a read-only
            // transaction's COMMIT costs no extra query).
            return;
        }
        // Asked before the next statement routing decides on, not now: a
        // query here would replace the statement's diagnostics
        // (`ROW_COUNT()`, `FOUND_ROWS()`) the client may read next.
        self.gtid_pending = Some(name.clone());
        // Sharing pool modes: only a connection kept for its diagnostics
        // waits; any other is given back now, so its GTID is read now.
        if self.cfg.pool_mode != PoolMode::Session && self.keep_last.as_ref() != Some(name) {
            self.resolve_pending_gtid().await;
        }
    }

    /// Reads the `@@last_gtid` of the write [`Session::track_write`] left
    /// pending, on the primary connection that ran it. Called before a
    /// statement routing decides on; a statement that reads the write's
    /// diagnostics runs first (it is bound to that connection).
    pub(super) async fn resolve_pending_gtid(&mut self) {
        let Some(name) = self.gtid_pending.take() else {
            return;
        };
        let Some(held) = self.conns.iter_mut().find(|h| h.server == name) else {
            self.last_write = Some(GtidPos::unknown());
            return;
        };
        let sql = held.conn.flavor().last_gtid_sql();
        match held.conn.query_value(sql).await {
            Ok(Some(g)) if !g.is_empty() => {
                self.last_write = Some(GtidPos::parse(&g));
            }
            Ok(_) => {}
            Err(e) => {
                // Without the GTID, be safe: read from the primary until a
                // later write tells us more.
                debug!(parent: &self.span, error = %e, sql, "could not read the last write's GTID");
                self.last_write = Some(GtidPos::unknown());
            }
        }
    }

    /// Statement pool mode refuses what would open a multi-statement
    /// transaction, since the connection goes back after every statement.
    fn refuse_in_statement_mode(&self, c: &Classified, sql: &[u8]) -> Option<ClientError> {
        if self.cfg.pool_mode != PoolMode::Statement || !opens_transaction(c, sql) {
            return None;
        }
        Some(ClientError::new(
            1235,
            b"42000",
            "rwproxy: transactions are not allowed with pool_mode = \"statement\" (use \"transaction\" or \"session\")",
        ))
    }

    /// Read-only transactions on replicas: after a statement ran on
    /// replica `server`, follows the server's status flags. A transaction
    /// the replica reports open pins the session to that connection; once
    /// the flags say it ended (COMMIT, ROLLBACK, an implicit commit), the
    /// session routes freely again. After `SET TRANSACTION READ ONLY` the
    /// session stays there until a statement other than `SET`/`USE` has
    /// succeeded, so the next transaction gets that setting (a stale setting left
    /// on a replica's connection is harmless: replicas only run reads; the
    /// connection is reset before another session borrows it).
    fn track_replica_tx(&mut self, c: &Classified, summary: &Summary, server: &Arc<str>) {
        let in_trans = summary
            .status
            .map(|st| st.contains(StatusFlags::SERVER_STATUS_IN_TRANS));
        match self.replica_tx.as_mut() {
            Some(tx) if tx.server == *server => match in_trans {
                Some(true) => tx.open = true,
                // An error does not end a transaction, nor use up a
                // pending `SET TRANSACTION READ ONLY` (MariaDB keeps it
                // after a refused write).
                None => {}
                Some(false)
                    if !tx.open && matches!(c.kind, StatementKind::Set | StatementKind::Use) => {}
                Some(false) => self.replica_tx = None,
            },
            Some(_) => {}
            None => {
                // The server's word on the access mode: a transaction it
                // opened read-write would be a routing mistake (replicas
                // still refuse its writes through `read_only`).
                if let Some(st) = summary.status
                    && st.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
                    && !st.contains(StatusFlags::SERVER_STATUS_IN_TRANS_READONLY)
                {
                    warn!(parent: &self.span, server = %server, "transaction opened on a replica is not read only");
                }
                let pending = c.tx == TxOpen::NextReadOnly && summary.error.is_none();
                if pending || in_trans == Some(true) {
                    if pending && let Some(h) = self.conns.iter_mut().find(|h| h.server == *server)
                    {
                        h.conn.mark_dirty();
                    }
                    self.replica_tx = Some(ReplicaTx {
                        server: server.clone(),
                        open: in_trans == Some(true),
                    });
                }
            }
        }
    }

    /// `SET TRANSACTION READ ONLY` (next transaction only) is routed like
    /// the transaction it announces: to a replica, where that transaction
    /// will run. Not in statement pool mode (no multi-statement
    /// transactions there). Parses only `SET` statements.
    fn next_transaction(&self, c: Classified, sql: &[u8]) -> Classified {
        if c.kind == StatementKind::Set
            && self.cfg.pool_mode != PoolMode::Statement
            && crate::router::set::next_transaction_read_only(sql)
        {
            Classified {
                tx: TxOpen::NextReadOnly,
                ..c
            }
        } else {
            c
        }
    }

    /// Inside a read-only transaction on a replica, statements that would
    /// leave state only that connection holds (temporary tables, locks,
    /// user variables set by queries, SQL `PREPARE`, unreplayable `SET`s,
    /// `autocommit`) are refused: the session could not follow that state
    /// once the transaction ends. `/* rwproxy:primary */` on the opening
    /// statement runs such a transaction on the primary.
    fn refuse_in_replica_tx(&self, c: &Classified, sql: &[u8]) -> Option<ClientError> {
        self.replica_tx.as_ref()?;
        if c.hint == Some(classify::Hint::Primary) {
            return None;
        }
        let leaves_state = c.pins_session
            || (c.kind == StatementKind::Set
                && match crate::router::set::parse_set(sql) {
                    crate::router::set::SetEffect::Unreplayable => true,
                    crate::router::set::SetEffect::Session(items) => {
                        items.iter().any(|i| i.key == "autocommit")
                    }
                    crate::router::set::SetEffect::NotSession => false,
                });
        leaves_state.then(|| {
            ClientError::new(
                1235,
                b"42000",
                "rwproxy: this statement would leave session state on the replica running this read-only transaction (temporary table, lock, user variable set by a query, PREPARE, autocommit); run the transaction on the primary with /* rwproxy:primary */",
            )
        })
    }

    /// Updates transaction state from the primary's status flags.
    fn track_status(&mut self, summary: &Summary) {
        if let Some(st) = summary.status {
            self.set_in_trans(st.contains(StatusFlags::SERVER_STATUS_IN_TRANS));
            self.autocommit = st.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT);
        }
    }

    /// Updates the in-transaction flag and the count a switchover waits on.
    fn set_in_trans(&mut self, now: bool) {
        if now != self.in_trans {
            let delta = if now { 1 } else { -1 };
            self.shared.failover.gate.transaction(delta);
            self.in_trans = now;
        }
    }

    /// Returns the position in `self.conns` of a ready connection to
    /// server `idx`, borrowing one and replaying state as needed.
    ///
    /// The session's schema may have been dropped by another client: a
    /// connection with another schema selected cannot run the statement
    /// (it would read that schema's tables), so it is dropped and one with
    /// no schema selected is taken instead (see `State::sync`).
    async fn acquire(&mut self, snap: &Snapshot, idx: usize) -> Result<usize, ExecError> {
        match self.acquire_with(snap, idx, false).await {
            Err(ExecError::Acquire { source, .. })
                if self.state.schema.is_some()
                    && source
                        .server_refusal()
                        .is_some_and(|e| e.code == crate::backend::UNKNOWN_DATABASE) =>
            {
                self.acquire_with(snap, idx, true).await
            }
            r => r,
        }
    }

    /// [`Self::acquire`]; `no_schema` asks the pool for a connection
    /// without a schema selected.
    async fn acquire_with(
        &mut self,
        snap: &Snapshot,
        idx: usize,
        no_schema: bool,
    ) -> Result<usize, ExecError> {
        let server = &snap.servers[idx];
        let held = self.conns.iter().position(|h| h.server == server.name);
        let pos = match held {
            Some(p) => p,
            None => {
                let key = Pools::key(
                    &server.name,
                    &self.cred.user,
                    self.caps,
                    self.ext,
                    self.collation,
                    self.home,
                );
                let want = Want {
                    state_fp: self.state.fp,
                    schema: self.state.schema.as_deref().filter(|_| !no_schema),
                };
                let conn = self
                    .shared
                    .pools
                    .get(&server.addr, &key, &self.cred, self.caps, want)
                    .await
                    .map_err(|source| ExecError::Acquire {
                        server: server.name.clone(),
                        source,
                    })?;
                server.stats.in_use.fetch_add(1, Ordering::Relaxed);
                self.conns.push(Held {
                    server: server.name.clone(),
                    conn,
                    primary: snap.primary == Some(idx),
                    stats: server.stats.clone(),
                });
                self.conns.len() - 1
            }
        };
        // Read-your-writes on a connection whose client negotiated session
        // tracking: let the server report `last_gtid` in its OK packets
        // (once per backend connection) instead of asking after each commit.
        // A client that set the tracking variables itself keeps exactly its
        // own setting (its SET, replayed, replaced rwproxy's addition).
        if self.state.own_tracking {
            self.conns[pos].conn.forget_gtid_tracking();
        } else if snap.primary == Some(idx) && self.adds_tracking() {
            self.conns[pos].conn.track_gtid().await;
        }
        if let Err(source) = self.state.sync(&mut self.conns[pos].conn).await {
            if held.is_some() && source.server_refusal().is_none() && self.depends_on(pos) {
                self.closing = true;
            }
            let server = self.remove_conn(pos);
            return Err(ExecError::Acquire { server, source });
        }
        Ok(pos)
    }

    /// Whether rwproxy adds its own session tracking (`last_gtid` /
    /// `OWN_GTID`) to the session's primary connections, which the client
    /// must then not see: in its OK packets ([`response::Hide`]) nor in
    /// `@@session_track_system_variables` (`lex::replace_tracking_vars`).
    fn adds_tracking(&self) -> bool {
        self.cfg.consistency == Consistency::Session
            && self.caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK)
            && !self.state.own_tracking
    }

    /// Sends a command on held connection `pos` and forwards its answer to
    /// the client. The connection is marked broken while the answer is in
    /// flight, so a failure anywhere leaves it unusable; on failure it is
    /// dropped and the error says whether the client already got part of
    /// the answer.
    ///
    /// `stmt` (client statement id, server statement id) is given for an
    /// execution, so the metadata cache can be kept consistent (see
    /// `response::MetaCache`).
    async fn forward_on(
        &mut self,
        pos: usize,
        payload: &[u8],
        expect: Expect,
        stmt: Option<(u32, u32)>,
    ) -> Result<Summary, ExecError> {
        let caps = self.caps;
        let read_only_tx = self
            .replica_tx
            .as_ref()
            .is_some_and(|t| t.server == self.conns[pos].server);
        let commit =
            read_only_tx && classify::is_plain_commit(payload.get(1..).unwrap_or_default());
        let client_caches = self
            .ext
            .contains(MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA);
        let client_holds = stmt
            .and_then(|(id, _)| self.stmts.by_id.get(&id))
            .and_then(|s| s.columns.as_ref());
        let (mark, sent_before) = (self.client.queued(), self.client.bytes_out);
        let timeout = self.cfg.backend_read_timeout();
        // KILL from another session during this exchange (see `kill`).
        let mut kill_rx = self.control.kill_query.subscribe();
        let thread = self.conns[pos].conn.hello().connection_id;
        let hide = if self.conns[pos].conn.tracks_gtid() {
            response::Hide::tracking_of(self.conns[pos].conn.flavor())
        } else {
            response::Hide::Nothing
        };
        let (hangup, span) = (self.hangup.as_ref(), &self.span);
        let held = &mut self.conns[pos];
        let cut = held.conn.cut_token();
        let (client, server) = (&mut self.client, &held.server);
        // The whole exchange (command, answer, and the ROLLBACK that may
        // follow) is bounded by `backend_read_timeout` and aborted when the
        // server is demoted ([`crate::backend::guard`]).
        let exchange = async {
            let mut ex = held
                .conn
                .exchange(payload)
                .await
                .map_err(ForwardError::unsent)?;
            let server_caches = ex.caches_metadata();
            let (stream, server_sent) = ex.stream_and_columns(stmt.map(|(_, bid)| bid));
            let meta = response::MetaCache {
                server: server_caches,
                client: client_caches,
                client_holds,
                server_sent,
            };
            let summary = if read_only_tx {
                response::forward_read_only_tx(
                    stream,
                    Some(&mut *client),
                    expect,
                    caps,
                    meta,
                    commit,
                )
                .await?
            } else {
                response::forward_hiding(stream, Some(&mut *client), expect, caps, meta, hide)
                    .await?
            };
            // A read-only transaction's COMMIT the replica refused: end it
            // with ROLLBACK (same effect: nothing was written) and forward
            // that.
            let summary = if summary.held_back {
                debug!(server = %server, "replica refused a read-only transaction's COMMIT; rolling back instead");
                ex.send(b"\x03ROLLBACK")
                    .await
                    .map_err(ForwardError::unsent)?;
                response::forward(
                    ex.stream(),
                    Some(&mut *client),
                    Expect::Query,
                    caps,
                    response::MetaCache::OFF,
                )
                .await?
            } else {
                summary
            };
            Ok::<_, ForwardError>((summary, ex))
        };
        let mut was_cut = false;
        let guarded = async {
            let mut guarded =
                std::pin::pin!(crate::backend::guard::guarded(exchange, &cut, timeout));
            tokio::select! {
                r = &mut guarded => Some(r),
                Ok(()) = kill_rx.changed() => match kill::SideKill::new(
                    &self.shared,
                    &self.cred,
                    server,
                    thread,
                    (self.caps, self.ext, self.collation, self.home),
                ) {
                    // KILL CONNECTION: the answer is abandoned (the client's
                    // connection closes) and the backend thread ended.
                    Some(side) if self.control.killed.is_cancelled() => {
                        side.run(KillScope::Connection).await;
                        None
                    }
                    // KILL QUERY: the server interrupts the statement; its
                    // answer (ERR 1317, or the result if it was done
                    // first) is relayed as usual. The connection is given
                    // back only after the side KILL returned.
                    Some(side) => {
                        let (r, ()) = tokio::join!(&mut guarded, side.run(KillScope::Query));
                        Some(r)
                    }
                    None => Some(guarded.await),
                },
                // The client hung up: its statement ends on the server, as
                // the server ends a disconnected client's (see `HangupProbe`).
                () = client_hung_up(hangup) => {
                    info!(parent: span, server = %server, "client hung up during a statement: ending its backend connection");
                    if let Some(side) = kill::SideKill::new(
                        &self.shared,
                        &self.cred,
                        server,
                        thread,
                        (self.caps, self.ext, self.collation, self.home),
                    ) {
                        side.run(KillScope::Connection).await;
                    }
                    None
                }
            }
        };
        let Some(guarded) = guarded.await else {
            if self.client.bytes_out == sent_before {
                self.client.truncate_queued(mark);
            }
            self.remove_conn(pos);
            return Err(ExecError::Killed);
        };
        let result = match guarded {
            Ok(r) => r,
            Err(why) => {
                was_cut = true;
                // Cut (timeout or demotion): nothing of a half response may
                // stay queued for the client, which gets an ERR instead,
                // unless part of it already left (then the session closes).
                let started = self.client.bytes_out != sent_before;
                if !started {
                    self.client.truncate_queued(mark);
                }
                warn!(parent: &self.span, server = %self.conns[pos].server, reason = %why, "backend exchange cut");
                Err(ForwardError::Backend {
                    source: why.io_error().into(),
                    started,
                })
            }
        };
        match result {
            Ok((summary, mut ex)) => {
                if let Some((id, bid)) = stmt {
                    let now_holds = match &summary.columns_sent {
                        Some(cols) => {
                            ex.remember_columns(bid, cols.clone());
                            Some(cols.clone())
                        }
                        None if summary.columns_injected => ex.sent_columns(bid).cloned(),
                        None => None,
                    };
                    if let (Some(cols), Some(s)) = (now_holds, self.stmts.by_id.get_mut(&id)) {
                        s.columns = Some(cols);
                    }
                }
                ex.finish();
                if let Some(code) = summary
                    .error
                    .filter(|c| crate::backend::lifecycle::ends_server_session(*c))
                {
                    self.server_ended_session(pos, code);
                }
                Ok(summary)
            }
            Err(e) => {
                // A cut (timeout, demotion) keeps its own rule: an ERR
                // whose outcome is unknown, the session goes on.
                if !was_cut && self.depends_on(pos) {
                    self.closing = true;
                }
                Err(self.drop_conn(pos, e))
            }
        }
    }

    /// Closes a held connection (not reusable) and forgets its statements.
    fn remove_conn(&mut self, pos: usize) -> Arc<str> {
        let held = self.conns.swap_remove(pos);
        let server = held.server.clone();
        self.stmts.forget_server(&server);
        drop(held.into_conn());
        // The server ended a read-only transaction with the connection.
        if self.replica_tx.as_ref().is_some_and(|t| t.server == server) {
            self.replica_tx = None;
        }
        // Losing the primary connection ends whatever lived on it: the
        // server rolls back the open transaction and drops session-only
        // state, so the session is free to route normally again.
        let snap = self.shared.topology.load();
        let was_primary = snap.primary_view().is_none_or(|p| p.name == server);
        if was_primary {
            self.set_in_trans(false);
            self.trans_wrote = false;
            self.autocommit = true;
            self.pinned = false;
        }
        server
    }

    /// Drops a failed connection and turns the failure into an ExecError.
    fn drop_conn(&mut self, pos: usize, e: ForwardError) -> ExecError {
        let server = self.remove_conn(pos);
        match e {
            ForwardError::Client(f) => ExecError::Client(f),
            ForwardError::Backend { started, .. } => ExecError::Backend {
                server,
                source: e,
                started,
            },
            ForwardError::Malformed(_) => ExecError::Backend {
                server,
                source: e,
                started: true,
            },
        }
    }

    /// Sharing pool modes: gives back, between commands, every held
    /// connection the session has no reason to keep. The primary's
    /// connection stays while a transaction is open, autocommit is off,
    /// unreplayable state lives on it (temporary tables, locks, user
    /// variables set by queries, SQL `PREPARE` — `pinned`), or right after
    /// a write (transaction mode: the next command may ask for
    /// `LAST_INSERT_ID()`). Any connection holding long data or an open
    /// cursor of a prepared statement stays too. Replayable state (schema,
    /// `SET`s) moves with the session: the connection's fingerprint says
    /// what it carries. The session's statement ids on a connection given
    /// back are forgotten; the connection's own statement cache keeps
    /// them for whoever borrows it next.
    fn release_idle(&mut self) {
        let mode = self.cfg.pool_mode;
        let sticky = std::mem::take(&mut self.sticky);
        let keep_last = self.keep_last.take();
        if mode == PoolMode::Session || self.conns.is_empty() {
            return;
        }
        let keep_primary = self.in_trans
            || !self.autocommit
            || self.pinned
            || (sticky && mode == PoolMode::Transaction);
        let mut i = 0;
        while i < self.conns.len() {
            let held = &self.conns[i];
            let replica_tx = self
                .replica_tx
                .as_ref()
                .is_some_and(|t| t.server == held.server);
            if (held.primary && keep_primary)
                || replica_tx
                || self.stmts.busy_on(&held.server)
                || keep_last.as_ref() == Some(&held.server)
                || self.gtid_pending.as_ref() == Some(&held.server)
            {
                i += 1;
                continue;
            }
            let held = self.conns.swap_remove(i);
            self.stmts.forget_server(&held.server);
            self.shared.pools.give_back(held.into_conn());
        }
    }

    /// Returns every held connection to its pool, reset there unless
    /// nothing on it needs a reset (see [`crate::backend::Pools::put`]).
    async fn release_all(&mut self) {
        let session_clean =
            self.autocommit && !self.pinned && !self.in_trans && self.replica_tx.is_none();
        let conns: Vec<Held> = self.conns.drain(..).collect();
        for held in conns {
            self.shared.pools.put(held.into_conn(), session_clean).await;
        }
    }

    /// Marks the held connection to `server` as needing a reset before
    /// another session may use it, unless a statement of class `c` leaves
    /// nothing behind that a reset would clear: plain reads (not pinning)
    /// and `SET`/`USE`, whose effects the connection's fingerprint and
    /// schema track, that raised no warnings (`SHOW WARNINGS` would show
    /// them to the next session). Writes leave `LAST_INSERT_ID()` and
    /// `ROW_COUNT()`; `ReadPrimary` covers `LAST_INSERT_ID(expr)` and
    /// sequences.
    pub(super) fn note_effects(&mut self, server: &Arc<str>, c: &Classified, warned: bool) {
        let clean = matches!(
            c.kind,
            StatementKind::Read | StatementKind::Set | StatementKind::Use
        ) && !c.pins_session
            && !warned;
        if !clean && let Some(h) = self.conns.iter_mut().find(|h| &h.server == server) {
            h.conn.mark_dirty();
        }
    }

    /// Where a statement reading the previous statement's diagnostics
    /// (`SHOW WARNINGS`, `@@warning_count`, `GET DIAGNOSTICS`,
    /// `ROW_COUNT()`, `FOUND_ROWS()`, `LAST_INSERT_ID()`…) must run: on the
    /// connection that ran that statement, which the session still holds
    /// (session pool mode: always; sharing modes: when that statement left
    /// something to read, see `keep_last`). Only a text that writes
    /// nothing follows it there, and not against a routing hint; otherwise
    /// (or with no such connection) routing decides as usual.
    fn diagnostics_bound(&self, c: &Classified) -> Option<Arc<str>> {
        if !c.diagnostics
            || c.hint.is_some()
            || !matches!(c.kind, StatementKind::Read | StatementKind::ReadPrimary)
        {
            return None;
        }
        let last = self.last_ran.as_ref()?;
        self.conns
            .iter()
            .any(|h| &h.server == last)
            .then(|| last.clone())
    }

    /// After a statement ran on `server`: that connection holds its
    /// diagnostics now. In the sharing pool modes it is kept through the
    /// next command when they are worth reading: warnings or an error (SHOW
    /// WARNINGS, `@@error_count`, GET DIAGNOSTICS), or anything but a plain
    /// read (affected rows, `LAST_INSERT_ID()`, `FOUND_ROWS()` after
    /// `SQL_CALC_FOUND_ROWS`). After a plain read without warnings the
    /// connection goes back to the pool as before; a diagnostics statement
    /// then runs where routing sends it.
    pub(super) fn ran_on(&mut self, server: &Arc<str>, c: &Classified, summary: &Summary) {
        if self.last_ran.as_ref() != Some(server) {
            self.last_ran = Some(server.clone());
        }
        let worth = summary.warnings > 0
            || summary.error.is_some()
            || matches!(c.kind, StatementKind::Write | StatementKind::ReadPrimary)
            || c.diagnostics;
        self.keep_last = worth.then(|| server.clone());
    }

    /// COM_RESET_CONNECTION: back to a fresh session of the same user.
    async fn reset_session(&mut self) {
        self.release_all().await;
        let schema = self.state.schema.take();
        self.state = State::default();
        self.state.schema = schema;
        self.stmts = Statements::default();
        self.autocommit = true;
        self.set_in_trans(false);
        self.pinned = false;
        self.replica_tx = None;
    }

    async fn on_change_user(&mut self, rest: &[u8]) -> Result<Flow, End> {
        let Some(cu) = handshake::parse_change_user(rest) else {
            self.send_err(&ClientError::malformed_packet()).await;
            return Ok(Flow::Continue);
        };
        let mut seq = 1u8;
        let mut reply = cu.auth_reply.clone();
        let mut scramble = self.scramble;
        if cu
            .plugin
            .as_deref()
            .is_some_and(|p| p != "mysql_native_password")
        {
            scramble = auth::new_scramble();
            let (r, s) = handshake::switch_to_native(&mut self.client, seq, &scramble)
                .await
                .map_err(End::ChangeUser)?;
            reply = r;
            seq = s.wrapping_add(1);
        }
        let cred = match verify(
            &self.shared,
            &cu.user,
            self.peer,
            self.client_tls,
            (&scramble, &reply),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                self.client.queue_payload(seq, &e.to_payload());
                let _ = self.client.flush().await;
                return Err(End::ChangeUserRefused {
                    user: cu.user,
                    error: e,
                });
            }
        };
        self.reset_session().await;
        self.cred = cred;
        if let Some(c) = cu.collation.and_then(|c| u8::try_from(c).ok()) {
            self.collation = c;
        }
        self.state.schema = cu.db;
        tracing::Span::current().record("user", &*self.cred.user);
        info!(parent: &self.span, user = %self.cred.user, "user changed");
        self.client.queue_payload(
            seq,
            &ok_payload(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT),
        );
        self.client.flush().await.map_err(End::Client)?;
        Ok(Flow::Continue)
    }
}

/// Whether a statement would open a transaction spanning statements:
/// `BEGIN`, `START TRANSACTION`, `XA …`, or `SET autocommit = 0`.
fn opens_transaction(c: &Classified, sql: &[u8]) -> bool {
    match c.kind {
        StatementKind::Transaction => c.begins,
        StatementKind::Set => match crate::router::set::parse_set(sql) {
            crate::router::set::SetEffect::Session(items) => items.iter().any(|i| {
                i.key == "autocommit" && {
                    let v = i.text.rsplit('=').next().unwrap_or("").trim();
                    v == "0" || v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false")
                }
            }),
            _ => false,
        },
        _ => false,
    }
}

fn unavailable(why: Unavailable, snap: &Snapshot) -> ClientError {
    match why {
        Unavailable::NoPrimary => {
            if let Some(reason) = snap.no_primary_reason() {
                return ClientError::new(1429, b"HY000", format!("rwproxy: {reason}"));
            }
            // Name the server that should be primary and why it is not
            // usable, so the operator knows where to look.
            let detail = snap
                .servers
                .iter()
                .filter(|s| s.role == crate::config::Role::Primary)
                .map(|s| {
                    format!(
                        "'{}' ({}) is {}{}",
                        s.name,
                        s.addr,
                        if s.up { "up" } else { "down" },
                        s.last_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            ClientError::new(
                1429,
                b"HY000",
                if detail.is_empty() {
                    "rwproxy: no primary server is available for this statement".to_string()
                } else {
                    format!("rwproxy: no primary server is available for this statement: {detail}")
                },
            )
        }
        Unavailable::NoReplica => ClientError::new(
            1429,
            b"HY000",
            "rwproxy: no replica can serve this read (replica_fallback = \"error\")",
        ),
    }
}

/// Resolves once `probe` sees that the client hung up; checked once a
/// second, so a statement shorter than that never looks (only a timer is
/// armed). Without a probe it never resolves.
async fn client_hung_up(probe: Option<&crate::protocol::stream::HangupProbe>) {
    let Some(probe) = probe else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if probe.hung_up() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hide_socket;

    #[test]
    fn statement_mode_knows_what_opens_a_transaction() {
        use crate::router::classify::classify;
        let opens = |sql: &str| super::opens_transaction(&classify(sql.as_bytes()), sql.as_bytes());
        for sql in [
            "BEGIN",
            "begin work",
            "/* app */ START TRANSACTION READ ONLY",
            "XA START 'x'",
            "SET autocommit=0",
            "SET SESSION autocommit = OFF",
            "set @@autocommit=0",
        ] {
            assert!(opens(sql), "{sql}");
        }
        for sql in [
            "COMMIT",
            "ROLLBACK",
            "SET autocommit=1",
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
            "SET NAMES utf8mb4",
        ] {
            assert!(!opens(sql), "{sql}");
        }
    }

    #[test]
    fn socket_is_hidden_from_drivers() {
        assert_eq!(
            hide_socket(b"\x03SELECT @@max_allowed_packet,@@wait_timeout,@@socket").as_deref(),
            Some(&b"\x03SELECT @@max_allowed_packet,@@wait_timeout,NULL AS `@@socket`"[..])
        );
        assert_eq!(
            hide_socket(b"\x03SELECT @@SOCKET").as_deref(),
            Some(&b"\x03SELECT NULL AS `@@SOCKET`"[..])
        );
        assert_eq!(
            hide_socket(b"\x03SELECT @@socket AS s, @@socket IS NULL").as_deref(),
            Some(&b"\x03SELECT NULL AS s, NULL IS NULL"[..])
        );
        assert_eq!(hide_socket(b"\x03SELECT @@socket_x, @@sockets"), None);
        assert_eq!(hide_socket(b"\x03SELECT 1"), None);
        assert_eq!(hide_socket(b"\x03INSERT INTO t VALUES ('@@socket')"), None);
        assert_eq!(hide_socket(b"\x03"), None);
        assert_eq!(hide_socket(b""), None);
    }
}
