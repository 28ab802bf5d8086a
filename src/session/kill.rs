//! One connection id: `KILL [QUERY | CONNECTION] id`, `KILL USER name` and
//! `COM_PROCESS_KILL`, answered by rwproxy for its own session ids.
//!
//! The id a client sees — in the handshake and from `CONNECTION_ID()` — is
//! its rwproxy session id (unique in the process, never reused while the
//! session lives). A statement's backend thread id never leaves the
//! session that owns the connection:
//!
//! * The killer looks the id up in the session registry
//!   ([`crate::app::Shared::sessions`]), checks the server's permission
//!   rule, and only *signals* the target ([`crate::app::SessionControl`]).
//! * The target, while it forwards a statement, watches that signal
//!   ([`Session::forward_on`]). On `KILL QUERY` it sends `KILL QUERY
//!   <backend thread id>` to the server running the statement over a side
//!   connection of its own user, and keeps relaying the answer (the
//!   server's ERR 1317, or the result if it finished first). The
//!   connection is still the target's and is only given back after the
//!   side `KILL` returned, so the thread id cannot belong to anyone else
//!   by then — not another rwproxy session, not a client connected to the
//!   server directly. On `KILL CONNECTION` it abandons the answer, kills
//!   the backend connection the same way, and closes the client's
//!   connection without a word, as MariaDB does to a killed client.
//!
//! Permissions follow the server's rule (`kill_one_thread`): a session of
//! the same user name may always be killed; any other needs `CONNECTION
//! ADMIN` or `SUPER`, which rwproxy reads from the killer's own grants on
//! the primary (`information_schema.USER_PRIVILEGES`, so privileges held
//! only through a role do not count). Otherwise ERR 1095, and ERR 1094 for
//! an id that is no rwproxy session.

use std::sync::Arc;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::{End, ExecError, Flow, Session, unavailable};
use crate::app::{SessionControl, Shared};
use crate::backend::{Credential, PoolKey, Pools, Want};
use crate::protocol::{ClientError, ok_payload};
use crate::router::Unavailable;
use crate::router::kill::{Kill, KillScope, KillTarget};

/// The killer's privileges that allow killing another user's sessions
/// (MariaDB's and MySQL's spellings).
const KILL_PRIVILEGE_SQL: &str = "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES \
     WHERE PRIVILEGE_TYPE IN ('SUPER', 'CONNECTION ADMIN', 'CONNECTION_ADMIN')";

fn unknown_thread(id: u64) -> ClientError {
    ClientError::new(1094, b"HY000", format!("Unknown thread id: {id}"))
}

fn not_owner(id: u64) -> ClientError {
    ClientError::new(1095, b"HY000", format!("You are not owner of thread {id}"))
}

fn interrupted() -> ClientError {
    ClientError::new(1317, b"70100", "Query execution was interrupted")
}

fn connection_killed() -> ClientError {
    ClientError::new(1927, b"70100", "Connection was killed")
}

/// What a backend connection needs to have its statement killed from a
/// side connection: everything copied, so the session's connection stays
/// borrowed by the exchange in flight.
pub(super) struct SideKill {
    pub(super) pools: Arc<Pools>,
    pub(super) server: Arc<str>,
    pub(super) addr: String,
    pub(super) key: PoolKey,
    pub(super) cred: Credential,
    pub(super) caps: CapabilityFlags,
    /// The server's thread id of the connection running the statement.
    pub(super) thread: u32,
}

impl SideKill {
    /// For the connection to `server` whose thread is `thread`, held by a
    /// session of `cred` with (caps, ext, collation, home) — its pool key.
    /// Built only when a KILL arrives, so statements pay nothing for it.
    /// `None` if the server left the topology.
    pub(super) fn new(
        shared: &Shared,
        cred: &Credential,
        server: &Arc<str>,
        thread: u32,
        (caps, ext, collation, home): (CapabilityFlags, MariadbCapabilities, u8, u16),
    ) -> Option<SideKill> {
        let snap = shared.topology.load();
        let addr = snap.servers[snap.find(server)?].addr.clone();
        Some(SideKill {
            pools: shared.pools.clone(),
            server: server.clone(),
            addr,
            key: Pools::key(server, &cred.user, caps, ext, collation, home),
            cred: cred.clone(),
            caps,
            thread,
        })
    }

    /// Sends `KILL QUERY|CONNECTION <thread>` to the server over a
    /// connection of the same user (any pooled one, else a new one), so the
    /// server's own rule (a user may kill its own threads) allows it.
    pub(super) async fn run(self, scope: KillScope) {
        let want = Want {
            state_fp: 0,
            schema: None,
        };
        let what = match scope {
            KillScope::Query => "QUERY",
            KillScope::Connection => "CONNECTION",
        };
        let sql = format!("KILL {what} {}", self.thread);
        match self
            .pools
            .get(&self.addr, &self.key, &self.cred, self.caps, want)
            .await
        {
            Ok(mut conn) => {
                match conn.query_internal(&sql).await {
                    Ok(None) => {
                        info!(server = %self.server, thread = self.thread, scope = what, "backend statement killed")
                    }
                    Ok(Some(e)) => {
                        warn!(server = %self.server, thread = self.thread, error = %e.message, "server refused KILL")
                    }
                    Err(e) => {
                        warn!(server = %self.server, thread = self.thread, error = %e, "KILL failed")
                    }
                }
                self.pools.give_back(conn);
            }
            Err(e) => {
                warn!(server = %self.server, thread = self.thread, error = %e, "no side connection for KILL")
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// A `KILL` statement rwproxy answers itself (`Kill::QueryId` goes
    /// to the primary as an ordinary statement instead; the session sends
    /// it there).
    pub(super) async fn on_kill_statement(&mut self, k: Kill) -> Result<Flow, End> {
        let r = match k {
            Kill::Local { scope, target } => self.kill(scope, target).await,
            Kill::QueryId | Kill::Unsupported => Err(ExecError::Refused(ClientError::new(
                1235,
                b"42000",
                "rwproxy answers KILL itself and supports only KILL [HARD|SOFT] \
                 [CONNECTION|QUERY] {<number> | CONNECTION_ID() | USER <name>} alone in a statement",
            ))),
        };
        self.kill_reply(r).await
    }

    /// `COM_PROCESS_KILL id`: `KILL CONNECTION id`.
    pub(super) async fn on_process_kill(&mut self, id: u32) -> Result<Flow, End> {
        let r = self
            .kill(KillScope::Connection, KillTarget::Id(u64::from(id)))
            .await;
        self.kill_reply(r).await
    }

    /// Answers a KILL: OK, or its ERR; the session's own connection
    /// killed ends with ERR 1927, as directly.
    async fn kill_reply(&mut self, r: Result<(), ExecError>) -> Result<Flow, End> {
        match r {
            Ok(()) => {
                let st = self.status_flags();
                self.client.queue_payload(1, &ok_payload(0, 0, st));
                self.client.flush().await.map_err(End::Client)?;
                Ok(Flow::Continue)
            }
            Err(ExecError::Killed) => {
                self.send_err(&connection_killed()).await;
                Err(End::Killed)
            }
            Err(ExecError::Client(e)) => Err(End::Client(e)),
            Err(e) => {
                self.send_err(&e.to_client()).await;
                Ok(Flow::Continue)
            }
        }
    }

    /// Kills what `target` names, if this session may.
    async fn kill(&mut self, scope: KillScope, target: KillTarget) -> Result<(), ExecError> {
        let own = u64::from(self.conn_id);
        let victims: Vec<(u64, String, SessionControl)> = match &target {
            KillTarget::Own => Vec::new(),
            KillTarget::Id(id) if *id == own => Vec::new(),
            KillTarget::Id(id) => {
                let found = u32::try_from(*id).ok().and_then(|id| {
                    let reg = self.shared.sessions.lock().ok()?;
                    reg.get(&id).map(|s| (s.user.clone(), s.control.clone()))
                });
                match found {
                    Some((user, control)) => vec![(*id, user, control)],
                    None => return Err(ExecError::Refused(unknown_thread(*id))),
                }
            }
            KillTarget::User(name) => match self.shared.sessions.lock() {
                Ok(reg) => reg
                    .iter()
                    .filter(|(id, s)| s.user == *name && u64::from(**id) != own)
                    .map(|(id, s)| (u64::from(*id), s.user.clone(), s.control.clone()))
                    .collect(),
                Err(_) => Vec::new(),
            },
        };
        let own_target = match &target {
            KillTarget::Own => true,
            KillTarget::Id(id) => *id == own,
            KillTarget::User(name) => *name == *self.cred.user,
        };
        if let Some((id, _, _)) = victims.iter().find(|(_, u, _)| *u != *self.cred.user)
            && !self.may_kill_others().await?
        {
            return Err(ExecError::Refused(not_owner(*id)));
        }
        for (id, _, control) in &victims {
            info!(parent: &self.span, target = id, ?scope, "KILL");
            match scope {
                KillScope::Query => control.kill_query(),
                KillScope::Connection => control.kill_connection(),
            }
        }
        if own_target {
            // The KILL is this session's running statement: directly, the
            // server interrupts it (1317) or ends the connection (1927).
            return Err(match scope {
                KillScope::Query => ExecError::Refused(interrupted()),
                KillScope::Connection => ExecError::Killed,
            });
        }
        Ok(())
    }

    /// Whether this session's user holds `CONNECTION ADMIN` or `SUPER` on
    /// the primary (asked on the session's own primary connection).
    async fn may_kill_others(&mut self) -> Result<bool, ExecError> {
        let snap = self.shared.topology.load();
        let Some(p) = snap.primary else {
            return Err(ExecError::Refused(unavailable(
                Unavailable::NoPrimary,
                &snap,
            )));
        };
        let pos = self.acquire(&snap, p).await?;
        match self.conns[pos].conn.query_value(KILL_PRIVILEGE_SQL).await {
            Ok(v) => Ok(v.is_some_and(|n| n != "0")),
            Err(source) => {
                let server = self.remove_conn(pos);
                Err(ExecError::Acquire { server, source })
            }
        }
    }
}
