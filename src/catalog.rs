//! The stored functions that only read, so that a read calling them may
//! run on a replica (issue 16, item 5).
//!
//! A `SELECT` that calls a stored function runs the function on whichever
//! server answers: a function that writes, run on a replica, makes that
//! replica diverge from its primary (or fails on `read_only`). So the
//! classifier flags a read that calls any function that is not a built-in
//! (`router::functions`), and the session sends it to the primary unless
//! every function it calls is known not to write:
//! - the primary's catalogue declares it `NO SQL` or `READS SQL DATA`
//!   (`information_schema.ROUTINES`). The server does not enforce that
//!   declaration — a `READS SQL DATA` function may still write — so this
//!   trusts whoever created the function;
//! - or the configuration lists it (`read_only_functions`).
//!
//! The catalogue is read only while it is needed: a flagged read asks for a
//! fresh one ([`Catalog::want_fresh`]) and the refresher reads the primary
//! at most once per `monitor_interval_ms`; an application that calls no
//! stored function costs the primary nothing. Until the first read has
//! finished, and for functions it does not list (created since, or on a
//! server the monitor account cannot see), reads go to the primary —
//! safe, only not spread. `CREATE|ALTER|DROP FUNCTION` through rwproxy
//! empties the snapshot before it runs ([`Catalog::invalidate`]), so a
//! function redefined to write is never trusted on its old declaration;
//! the next flagged read reloads it. A function redefined directly on the
//! server is seen within `monitor_interval_ms` of the next flagged read.
//!
//! The snapshot is an `ArcSwap`: the statement path reads it without a
//! lock.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mysql_async::prelude::Queryable;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Config;
use crate::monitor::monitor_opts;
use crate::topology::Topology;

/// One reading of the primary's catalogue.
#[derive(Debug, Default)]
pub struct Functions {
    /// `(schema, name in lower case)` of every function declared `NO SQL`
    /// or `READS SQL DATA`.
    read_only: HashSet<(String, String)>,
    /// When it was read (`None`: never, or emptied by DDL).
    loaded_at: Option<Instant>,
}

impl Functions {
    /// A catalogue holding these read-only functions (for tests).
    pub fn from_read_only<'a>(names: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Functions {
            read_only: names
                .into_iter()
                .map(|(s, n)| (s.to_string(), n.to_ascii_lowercase()))
                .collect(),
            loaded_at: Some(Instant::now()),
        }
    }

    fn knows_read_only(&self, schema: &str, name: &str) -> bool {
        // Allocation only for reads that call stored functions.
        self.read_only
            .contains(&(schema.to_string(), name.to_ascii_lowercase()))
    }
}

/// Why the catalogue could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no primary available")]
    NoPrimary,
    #[error("reading information_schema.ROUTINES: {0}")]
    Server(#[from] mysql_async::Error),
    #[error("timed out reading information_schema.ROUTINES")]
    Timeout,
}

/// The shared catalogue of read-only stored functions.
pub struct Catalog {
    /// For the monitor account and the refresh interval (RELOAD swaps it).
    config: Arc<ArcSwap<Config>>,
    /// Where the primary is.
    topology: Arc<Topology>,
    /// The latest reading; sessions look functions up here.
    snapshot: ArcSwap<Functions>,
    /// Wakes the refresher: a flagged read wants a fresh catalogue.
    wake: Notify,
}

impl Catalog {
    pub fn new(config: Arc<ArcSwap<Config>>, topology: Arc<Topology>) -> Self {
        Catalog {
            config,
            topology,
            snapshot: ArcSwap::from_pointee(Functions::default()),
            wake: Notify::new(),
        }
    }

    /// The latest reading.
    pub fn load(&self) -> arc_swap::Guard<Arc<Functions>> {
        self.snapshot.load()
    }

    /// A read calls stored functions: have the catalogue refreshed if it is
    /// older than the refresh interval (the refresher decides; this only
    /// signals).
    pub fn want_fresh(&self) {
        self.wake.notify_one();
    }

    /// A `CREATE|ALTER|DROP FUNCTION` is about to run: forget every
    /// declaration until the catalogue is read again.
    pub fn invalidate(&self) {
        self.snapshot.store(Arc::new(Functions::default()));
    }

    /// Reads the primary's catalogue now.
    pub async fn refresh(&self) -> Result<usize, CatalogError> {
        let snap = self.topology.load();
        let primary = snap.primary_view().ok_or(CatalogError::NoPrimary)?;
        let cfg = self.config.load_full();
        let opts = monitor_opts(&cfg, &primary.addr);
        let fetch = async {
            let mut c = crate::backend::tls::connect_mysql(opts).await?;
            let rows: Vec<(String, String)> = c
                .query(
                    "SELECT ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES \
                     WHERE ROUTINE_TYPE = 'FUNCTION' \
                     AND SQL_DATA_ACCESS IN ('NO SQL', 'READS SQL DATA')",
                )
                .await?;
            let _ = c.disconnect().await;
            Ok::<_, CatalogError>(rows)
        };
        let rows = tokio::time::timeout(cfg.connect_timeout() * 2, fetch)
            .await
            .map_err(|_| CatalogError::Timeout)??;
        let n = rows.len();
        let read_only = rows
            .into_iter()
            .map(|(s, name)| (s, name.to_ascii_lowercase()))
            .collect();
        self.snapshot.store(Arc::new(Functions {
            read_only,
            loaded_at: Some(Instant::now()),
        }));
        Ok(n)
    }

    /// Refreshes the catalogue when a read wants it and the last reading is
    /// older than `monitor_interval_ms`, until `stop`.
    pub async fn refresher(self: Arc<Self>, stop: CancellationToken) {
        let mut warned = false;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => return,
            }
            let every = Duration::from_millis(self.config.load().monitor_interval_ms);
            if let Some(at) = self.snapshot.load().loaded_at {
                let due = at + every;
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = stop.cancelled() => return,
                }
            }
            match self.refresh().await {
                Ok(n) => {
                    warned = false;
                    debug!(read_only_functions = n, "stored function catalogue read");
                }
                Err(e) => {
                    if !warned {
                        warn!(error = %e, "could not read the stored function catalogue; reads calling stored functions go to the primary");
                        warned = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// Whether every stored function in `calls` (schema as written, name) is
/// known not to write: declared so in `catalog`, or listed in `allow`
/// (`read_only_functions`). An unqualified name is the current schema's
/// (`schema`); without one, the server refuses the call anyway.
pub fn all_read_only(
    calls: &[(Option<String>, String)],
    schema: Option<&str>,
    catalog: &Functions,
    allow: &[String],
) -> bool {
    !calls.is_empty()
        && calls.iter().all(|(qualifier, name)| {
            let Some(db) = qualifier.as_deref().or(schema) else {
                return false;
            };
            allowed(allow, db, name) || catalog.knows_read_only(db, name)
        })
}

/// `name` in `db` is on the allow-list: as `db.name`, or as `name` alone.
fn allowed(allow: &[String], db: &str, name: &str) -> bool {
    allow.iter().any(|entry| match entry.rsplit_once('.') {
        Some((s, n)) => s == db && n.eq_ignore_ascii_case(name),
        None => entry.eq_ignore_ascii_case(name),
    })
}

/// Whether `sql` creates, changes or drops a stored function (`CREATE [OR
/// REPLACE] [DEFINER = …] [AGGREGATE] FUNCTION`, `ALTER FUNCTION`, `DROP
/// FUNCTION`): the word `FUNCTION` among the first tokens, before any `(`.
/// Asked only for writes.
pub fn changes_functions(sql: &[u8]) -> bool {
    let mut lx = crate::router::lex::Lexer::new(sql);
    let Some(first) = lx.next_token() else {
        return false;
    };
    if !(first.is_word("CREATE") || first.is_word("ALTER") || first.is_word("DROP")) {
        return false;
    }
    for _ in 0..12 {
        match lx.next_token() {
            Some(t) if t.is_word("FUNCTION") => return true,
            Some(t) if t.is_punct(b'(') || t.is_punct(b';') => return false,
            // `CREATE TABLE function …`: another object, named `function`
            // (a wrong guess would only cost a catalogue reload).
            Some(t)
                if [
                    "TABLE",
                    "VIEW",
                    "TRIGGER",
                    "EVENT",
                    "INDEX",
                    "PROCEDURE",
                    "DATABASE",
                ]
                .iter()
                .any(|w| t.is_word(w)) =>
            {
                return false;
            }
            Some(_) => {}
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(list: &[(Option<&str>, &str)]) -> Vec<(Option<String>, String)> {
        list.iter()
            .map(|(s, n)| (s.map(str::to_string), n.to_string()))
            .collect()
    }

    #[test]
    fn declared_or_listed_functions_are_read_only() {
        let cat = Functions::from_read_only([("app", "f_read"), ("app", "F_Pure")]);
        let allow = vec!["app.f_listed".to_string(), "anywhere".to_string()];
        let ro = |list: &[(Option<&str>, &str)], schema| {
            all_read_only(&calls(list), schema, &cat, &allow)
        };
        assert!(ro(&[(None, "f_read")], Some("app")));
        assert!(ro(
            &[(Some("app"), "F_READ"), (None, "f_pure")],
            Some("app")
        ));
        assert!(ro(&[(Some("app"), "f_listed")], None));
        assert!(ro(&[(Some("other"), "ANYWHERE")], None));
        // Unknown, in another schema, or no schema to resolve against.
        assert!(!ro(&[(None, "f_log")], Some("app")));
        assert!(!ro(&[(None, "f_read")], Some("other")));
        assert!(!ro(&[(Some("App"), "f_read")], None));
        assert!(!ro(&[(None, "f_read")], None));
        assert!(!ro(&[(None, "f_read"), (None, "f_log")], Some("app")));
        assert!(!ro(&[(Some("other"), "f_listed")], None));
        assert!(!ro(&[], Some("app")));
    }

    #[test]
    fn function_ddl_is_spotted() {
        for sql in [
            "CREATE FUNCTION f() RETURNS INT RETURN 1",
            "create or replace function app.f() returns int return 1",
            "CREATE DEFINER=`root`@`%` FUNCTION f() RETURNS INT RETURN 1",
            "CREATE AGGREGATE FUNCTION f(x INT) RETURNS INT BEGIN END",
            "DROP FUNCTION IF EXISTS f",
            "ALTER FUNCTION f COMMENT 'x'",
        ] {
            assert!(changes_functions(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "CREATE TABLE function (a INT)",
            "DROP TABLE t",
            "INSERT INTO t VALUES (1)",
            "CREATE PROCEDURE p() SELECT 1",
        ] {
            assert!(!changes_functions(sql.as_bytes()), "{sql}");
        }
    }
}
