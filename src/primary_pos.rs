//! The primary's executed GTID position, fetched on demand for
//! `consistency = "global"` reads and shared by the reads that arrive
//! together (single flight).
//!
//! A global read must see every transaction the primary had committed when
//! the read arrived. So its target is a position read from the primary
//! *after* the read arrived: MariaDB `@@gtid_binlog_pos`, MySQL
//! `@@GLOBAL.gtid_executed` ([`Flavor::written_pos_sql`]).
//!
//! Why `gtid_binlog_pos` and not `gtid_current_pos` on MariaDB: a commit is
//! acknowledged only after it is in the binlog, so `gtid_binlog_pos` holds
//! every acknowledged commit (and may run a little ahead of what is
//! visible: a wait then lasts a commit longer, never too short). It is also
//! exactly what replicas can receive. `gtid_current_pos` mixes in
//! `gtid_slave_pos` for domains where the server applied more as a replica
//! than it logged (a former replica without `log_slave_updates`): such
//! transactions never reach this primary's replicas, and a wait for them
//! would only time out.
//!
//! Single flight: one query at a time on one monitor-account connection to
//! the primary, however many reads wait. A read may join a fetch that
//! *started after it arrived*, never one already running when it arrived
//! (that one may have read the position before a commit acknowledged just
//! before the read arrived). Fetches are numbered as they start; a read
//! arriving when `started = n` needs the result of fetch `n + 1` or later.
//! The query runs in its own task, so a client that disconnects mid-read
//! cannot leave the fetch half done and its followers waiting.
//!
//! Nothing here is touched by `eventual` or `session` reads.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use mysql_async::prelude::Queryable;
use tokio::sync::watch;
use tracing::debug;

use crate::config::Config;
use crate::dialect::Flavor;
use crate::gtid::GtidPos;
use crate::topology::Topology;

/// Why the primary's position could not be read (the read then goes to
/// the primary).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no primary is known")]
    NoPrimary,
    #[error("primary {addr}: {source}")]
    Server {
        addr: String,
        #[source]
        source: mysql_async::Error,
    },
}

/// The shared fetcher (one per [`crate::app::Shared`]).
pub struct PrimaryPos {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<ArcSwap<Config>>,
    topology: Arc<Topology>,
    /// Fetches started so far and whether one runs now. A plain mutex:
    /// held only to read or bump these two fields, never across an await.
    state: Mutex<Flight>,
    /// The latest finished fetch; readers wait on it for theirs.
    done: watch::Sender<Fetched>,
    /// The connection to the primary (its address and flavor), reused by
    /// successive fetches; only the running fetch touches it.
    link: tokio::sync::Mutex<Option<Link>>,
}

#[derive(Default)]
struct Flight {
    started: u64,
    running: bool,
}

#[derive(Clone, Default)]
struct Fetched {
    /// Number of the fetch (0: none finished yet).
    seq: u64,
    /// `None`: the fetch failed.
    pos: Option<Arc<GtidPos>>,
}

struct Link {
    addr: String,
    flavor: Flavor,
    conn: mysql_async::Conn,
}

impl PrimaryPos {
    pub fn new(config: Arc<ArcSwap<Config>>, topology: Arc<Topology>) -> PrimaryPos {
        PrimaryPos {
            inner: Arc::new(Inner {
                config,
                topology,
                state: Mutex::new(Flight::default()),
                done: watch::Sender::new(Fetched::default()),
                link: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The primary's executed position, read after this call began.
    /// `None` when it could not be read (no primary, error, timeout).
    pub async fn fetch(&self) -> Option<Arc<GtidPos>> {
        self.fetch_by(|inner| async move { query(&inner).await })
            .await
    }

    /// [`PrimaryPos::fetch`] with the query given (`read` makes the fetch
    /// this caller starts, if it starts one; tests pass their own).
    async fn fetch_by<F, Fut>(&self, read: F) -> Option<Arc<GtidPos>>
    where
        F: Fn(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<GtidPos, FetchError>> + Send + 'static,
    {
        // Subscribed before looking at the state: a fetch finishing after
        // this line wakes `changed()` below.
        let mut rx = self.inner.done.subscribe();
        let need = {
            let s = self
                .inner
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            s.started + 1
        };
        loop {
            {
                let mut s = self
                    .inner
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let last = rx.borrow_and_update().clone();
                if last.seq >= need {
                    return last.pos;
                }
                if !s.running {
                    s.running = true;
                    s.started += 1;
                    let seq = s.started;
                    let query = read(self.inner.clone());
                    tokio::spawn(run(self.inner.clone(), seq, query));
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// One fetch, numbered `seq`: publishes its result and lets the next
/// fetch start.
async fn run(
    inner: Arc<Inner>,
    seq: u64,
    query: impl Future<Output = Result<GtidPos, FetchError>>,
) {
    let limit = inner.config.load().connect_timeout();
    let pos = match tokio::time::timeout(limit, query).await {
        Ok(Ok(p)) => Some(Arc::new(p)),
        Ok(Err(e)) => {
            debug!(error = %e, "global read: primary position not read");
            None
        }
        Err(_) => {
            // The connection may be mid-answer: never reuse it.
            *inner.link.lock().await = None;
            debug!(limit = ?limit, "global read: primary position timed out");
            None
        }
    };
    let mut s = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
    s.running = false;
    // Published under the state lock, so a reader that sees `running ==
    // false` also sees this result.
    inner.done.send_replace(Fetched { seq, pos });
}

/// Reads the position on the current primary (connecting if needed).
async fn query(inner: &Inner) -> Result<GtidPos, FetchError> {
    let snap = inner.topology.load();
    let addr = snap
        .primary_view()
        .filter(|p| p.up)
        .map(|p| p.addr.clone())
        .ok_or(FetchError::NoPrimary)?;
    let mut link = inner.link.lock().await;
    if link.as_ref().is_some_and(|l| l.addr != addr) {
        *link = None;
    }
    if link.is_none() {
        let config = inner.config.load();
        let server = |source| FetchError::Server {
            addr: addr.clone(),
            source,
        };
        let mut conn =
            crate::backend::tls::connect_mysql(crate::monitor::monitor_opts(&config, &addr))
                .await
                .map_err(server)?;
        let flavor = Flavor::detect(&mut conn).await.map_err(server)?;
        *link = Some(Link {
            addr: addr.clone(),
            flavor,
            conn,
        });
    }
    let Some(l) = link.as_mut() else {
        return Err(FetchError::NoPrimary);
    };
    let sql = l.flavor.written_pos_sql();
    match l.conn.query_first::<Option<String>, _>(sql).await {
        Ok(v) => {
            let text = v.flatten().unwrap_or_default();
            let pos = GtidPos::parse(&text);
            // Text rwproxy cannot read must not let a read go anywhere.
            Ok(if pos.is_empty() && !text.trim().is_empty() {
                GtidPos::unknown()
            } else {
                pos
            })
        }
        Err(source) => {
            *link = None;
            Err(FetchError::Server { addr, source })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn fetcher() -> PrimaryPos {
        let config = Config::parse(
            r#"
[monitor]
user = "m"
[[servers]]
name = "p"
host = "127.0.0.1"
port = 1
role = "primary"
"#,
        )
        .expect("config");
        let topology = Arc::new(Topology::new(crate::topology::Snapshot::from_config(
            &config,
        )));
        PrimaryPos::new(Arc::new(ArcSwap::from_pointee(config)), topology)
    }

    type Reading = std::pin::Pin<Box<dyn Future<Output = Result<GtidPos, FetchError>> + Send>>;

    /// A query that reads "the primary's position" (`committed`) when it
    /// starts, then takes 100 ms to answer; counts the queries run.
    fn slow_read(
        committed: Arc<AtomicU64>,
        queries: Arc<AtomicU64>,
    ) -> impl Fn(Arc<Inner>) -> Reading {
        move |_| {
            let (committed, queries) = (committed.clone(), queries.clone());
            Box::pin(async move {
                queries.fetch_add(1, Ordering::SeqCst);
                let seen = committed.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(GtidPos::parse(&format!("0-1-{seen}")))
            })
        }
    }

    /// A read that arrives while a fetch runs must not take that fetch's
    /// answer (it may predate a commit acknowledged before the read
    /// arrived); reads that arrive together share the next fetch.
    #[tokio::test]
    async fn a_read_never_joins_a_fetch_that_started_before_it() {
        let pos = Arc::new(fetcher());
        let committed = Arc::new(AtomicU64::new(1));
        let queries = Arc::new(AtomicU64::new(0));
        let first = {
            let (pos, read) = (pos.clone(), slow_read(committed.clone(), queries.clone()));
            tokio::spawn(async move { pos.fetch_by(read).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        // A commit is acknowledged while the first fetch runs; then three
        // reads arrive.
        committed.store(2, Ordering::SeqCst);
        let mut later = Vec::new();
        for _ in 0..3 {
            let (pos, read) = (pos.clone(), slow_read(committed.clone(), queries.clone()));
            later.push(tokio::spawn(async move { pos.fetch_by(read).await }));
        }
        let first = first.await.expect("first").expect("position");
        assert_eq!(*first, GtidPos::parse("0-1-1"));
        for r in later {
            let got = r.await.expect("read").expect("position");
            assert_eq!(*got, GtidPos::parse("0-1-2"), "must see the commit");
        }
        assert_eq!(
            queries.load(Ordering::SeqCst),
            2,
            "the three later reads share one fetch"
        );
    }
}
