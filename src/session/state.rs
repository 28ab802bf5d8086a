//! The replayable part of a session's state, and bringing a backend
//! connection up to date with it.

use crate::backend::{BackendConn, BackendError};
use crate::protocol::command::code;
use crate::router::set::{SetEffect, SetItem, parse_set};

/// What the client set that any backend connection it uses must also have.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Current schema (`USE`, COM_INIT_DB, login database).
    pub schema: Option<String>,
    /// Session settings in the order they were last set (`SET NAMES`,
    /// session variables, user variables set to literals).
    pub items: Vec<SetItem>,
    /// COM_SET_OPTION value (multi-statements on/off), if the client sent one.
    pub set_option: Option<u16>,
    /// Fingerprint of `items` and `set_option` (0 = nothing set), kept up
    /// to date on every change; a connection whose `state_fp` differs gets
    /// the state replayed before its next use.
    pub fp: u64,
    /// The session's transactions are read only by default (`SET SESSION
    /// TRANSACTION READ ONLY`, `tx_read_only` / `transaction_read_only` set
    /// to 1): they may run on a replica.
    pub read_only: bool,
    /// The client set a session-tracking variable itself
    /// (`session_track_system_variables`, `session_track_gtids`): rwproxy
    /// then adds no tracking of its own, so the client's setting is the
    /// server's exactly (read-your-writes asks for the GTID instead).
    pub own_tracking: bool,
}

impl State {
    /// Records a successful SET. Returns `true` if it could not be recorded
    /// (the session must then stay on the connection that ran it).
    pub fn record_set(&mut self, sql: &[u8]) -> bool {
        // Any mention will do (`SET @x = @@session_track_gtids` too): SETs
        // are rare, and erring this way only costs a GTID query per write.
        if !self.own_tracking
            && sql
                .windows(b"session_track_".len())
                .any(|w| w.eq_ignore_ascii_case(b"session_track_"))
        {
            self.own_tracking = true;
        }
        match parse_set(sql) {
            // Profiling lists the statements one connection ran (`SHOW
            // PROFILES`): the session stays on the primary's connection.
            SetEffect::Session(items) if items.iter().any(|i| i.key == "profiling") => true,
            SetEffect::Session(items) => {
                let mut changed = false;
                for item in items {
                    // autocommit is tracked from the server's status flags,
                    // and reads only leave the primary when it is on.
                    if item.key == "autocommit" {
                        continue;
                    }
                    self.items.retain(|i| i.key != item.key);
                    self.items.push(item);
                    changed = true;
                }
                if changed {
                    self.refresh_fp();
                    self.read_only = self
                        .items
                        .iter()
                        .find_map(crate::router::set::read_only_value)
                        .unwrap_or(false);
                }
                false
            }
            SetEffect::NotSession => false,
            SetEffect::Unreplayable => true,
        }
    }

    /// Records a COM_SET_OPTION the server accepted.
    pub fn record_set_option(&mut self, opt: u16) {
        self.set_option = Some(opt);
        self.refresh_fp();
    }

    fn refresh_fp(&mut self) {
        use std::hash::{Hash, Hasher};
        if self.items.is_empty() && self.set_option.is_none() {
            self.fp = 0;
            return;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for i in &self.items {
            i.key.hash(&mut h);
            i.text.hash(&mut h);
        }
        self.set_option.hash(&mut h);
        self.fp = h.finish().max(1);
    }

    /// Brings `conn` up to date: schema first, then one SET carrying every
    /// recorded setting (transaction characteristics separately, as they
    /// cannot share a SET with other assignments), then COM_SET_OPTION.
    /// Costs nothing when the connection is already current. A connection
    /// carrying another session's settings (sharing pool modes) is reset
    /// first: settings cannot be unset one by one without knowing the
    /// server's defaults.
    pub async fn sync(&self, conn: &mut BackendConn) -> Result<(), BackendError> {
        if conn.state_fp() != self.fp
            && conn.state_fp() != 0
            && let Some(e) = conn.reset().await?
        {
            return Err(refused(e));
        }
        if let Some(db) = &self.schema
            && !conn.has_schema(db)
        {
            match conn.simple(code::COM_INIT_DB, db.as_bytes()).await? {
                None => conn.set_schema(db.clone()),
                // Dropped by another session: directly, this session's
                // connection would keep it selected and go on running what
                // needs no schema (`SELECT 1`); a connection with no schema
                // selected does the same (what needs it gets 1046 instead
                // of 1146). One with another schema selected must not run
                // the statement there.
                Some(e)
                    if e.code == crate::backend::UNKNOWN_DATABASE && conn.schema().is_none() => {}
                Some(e) => return Err(refused(e)),
            }
        }
        if conn.state_fp() == self.fp {
            return Ok(());
        }
        let mut plain: Vec<&str> = Vec::new();
        for item in &self.items {
            if item.key.starts_with("transaction_") {
                if let Some(e) = conn.query_internal(&format!("SET {}", item.text)).await? {
                    return Err(refused(e));
                }
            } else {
                plain.push(&item.text);
            }
        }
        if !plain.is_empty()
            && let Some(e) = conn
                .query_internal(&format!("SET {}", plain.join(", ")))
                .await?
        {
            return Err(refused(e));
        }
        if let Some(opt) = self.set_option
            && let Some(e) = conn
                .simple(code::COM_SET_OPTION, &opt.to_le_bytes())
                .await?
        {
            return Err(refused(e));
        }
        conn.set_state_fp(self.fp);
        conn.set_server_wait_timeout(self.wait_timeout());
        Ok(())
    }

    /// The session `wait_timeout` the client set, if it set one to a
    /// number of seconds.
    pub fn wait_timeout(&self) -> Option<std::time::Duration> {
        let item = self.items.iter().find(|i| i.key == "wait_timeout")?;
        let secs: f64 = item.text.rsplit('=').next()?.trim().parse().ok()?;
        (secs > 0.0 && secs.is_finite()).then(|| std::time::Duration::from_secs_f64(secs))
    }
}

fn refused(e: crate::protocol::ClientError) -> BackendError {
    BackendError::Replay(e)
}
