//! Fault-injection helpers: writers that record every acknowledged id, a
//! checker that every acknowledged id survived on the final primary and
//! on each replica following it, and signals to the sandbox's own
//! `mariadbd` / `mysqld` processes (by the PID the sandbox recorded); for
//! either flavor through [`Topology`].
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;

use super::flavor::{Topology, role_of};
use super::sandbox::root_opts;

/// One write's outcome as its client saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: u64,
    /// When the statement was sent and how long its answer took.
    pub sent: Instant,
    pub took: Duration,
    /// None: acknowledged (OK). Some: the error text.
    pub error: Option<String>,
}

/// Writers inserting unique ids into `app.ack` in autocommit, each
/// recording every outcome.
pub struct Writers {
    stop: Arc<AtomicBool>,
    pub outcomes: Arc<Mutex<Vec<Outcome>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Bound on one statement from the writers' side, so a hung statement
/// shows as a very long `took` instead of hanging the test.
const STATEMENT_BOUND: Duration = Duration::from_secs(60);

impl Writers {
    /// `n` writers through `opts`; ids are `base + writer * 1_000_000 + k`.
    pub fn start(opts: mysql_async::Opts, n: u64, base: u64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..n)
            .map(|w| {
                let (opts, stop, outcomes) = (opts.clone(), stop.clone(), outcomes.clone());
                tokio::spawn(async move {
                    let mut conn: Option<mysql_async::Conn> = None;
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            conn = tokio::time::timeout(
                                Duration::from_secs(5),
                                mysql_async::Conn::new(opts.clone()),
                            )
                            .await
                            .ok()
                            .and_then(Result::ok);
                            if conn.is_none() {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                        let Some(c) = conn.as_mut() else { continue };
                        let id = base + w * 1_000_000 + k;
                        k += 1;
                        let sent = Instant::now();
                        let r = tokio::time::timeout(
                            STATEMENT_BOUND,
                            c.exec_drop("INSERT INTO app.ack (id) VALUES (?)", (id,)),
                        )
                        .await;
                        let error = match r {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(_) => Some("statement hung (test bound)".into()),
                        };
                        let failed = error.is_some();
                        outcomes.lock().expect("lock").push(Outcome {
                            id,
                            sent,
                            took: sent.elapsed(),
                            error,
                        });
                        if failed {
                            conn = None;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        } else {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    if let Some(c) = conn {
                        let _ = c.disconnect().await;
                    }
                })
            })
            .collect();
        Writers {
            stop,
            outcomes,
            tasks,
        }
    }

    /// Stops the writers (after their current statement) and returns every
    /// outcome.
    pub async fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.outcomes.lock().expect("lock").clone()
    }

    /// Acknowledged writes so far.
    pub fn acked_count(&self) -> usize {
        self.outcomes
            .lock()
            .expect("lock")
            .iter()
            .filter(|o| o.error.is_none())
            .count()
    }
}

/// The acknowledged ids of `outcomes`.
pub fn acked(outcomes: &[Outcome]) -> BTreeSet<u64> {
    outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .map(|o| o.id)
        .collect()
}

/// Where acknowledged ids are missing.
#[derive(Debug)]
pub struct Survival {
    /// The final primary: the one running server that is writable and not
    /// replicating.
    pub primary: String,
    pub missing_on_primary: BTreeSet<u64>,
    /// Each running replica that follows the final primary, with the
    /// acknowledged ids it lacks (after waiting for it to catch up).
    pub replicas: Vec<(String, BTreeSet<u64>)>,
}

impl Survival {
    pub fn lost(&self) -> usize {
        self.missing_on_primary.len()
    }
    pub fn all_there(&self) -> bool {
        self.missing_on_primary.is_empty() && self.replicas.iter().all(|(_, m)| m.is_empty())
    }
}

async fn ids_on(port: u16) -> BTreeSet<u64> {
    let mut c = mysql_async::Conn::new(root_opts(port))
        .await
        .expect("connect");
    let v: Vec<u64> = c.query("SELECT id FROM app.ack").await.expect("ids");
    let _ = c.disconnect().await;
    v.into_iter().collect()
}

/// Servers (names) that are running, writable and not replicating.
pub async fn writable_primaries(sb: &dyn Topology) -> Vec<String> {
    let mut out = Vec::new();
    for i in (0..sb.len()).filter(|&i| sb.running(i)) {
        if let Some((false, None)) = role_of(sb.flavor(), sb.port(i)).await {
            out.push(sb.name(i));
        }
    }
    out
}

/// Checks that every acknowledged id is on the final primary (`primary`,
/// as rwproxy publishes it) and on every running replica that follows it
/// (waiting up to 30 s for them).
pub async fn survival(sb: &dyn Topology, primary: &str, acked: &BTreeSet<u64>) -> Survival {
    let p = (0..sb.len())
        .find(|&i| sb.name(i) == primary)
        .unwrap_or_else(|| panic!("no server {primary}"));
    let missing_on_primary: BTreeSet<u64> = acked
        .difference(&ids_on(sb.port(p)).await)
        .copied()
        .collect();
    let mut replicas = Vec::new();
    for i in (0..sb.len()).filter(|&i| sb.running(i)) {
        if i == p {
            continue;
        }
        if role_of(sb.flavor(), sb.port(i))
            .await
            .and_then(|(_, src)| src)
            != Some(sb.port(p))
        {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let expected: BTreeSet<u64> = acked.difference(&missing_on_primary).copied().collect();
        let missing = loop {
            let m: BTreeSet<u64> = expected
                .difference(&ids_on(sb.port(i)).await)
                .copied()
                .collect();
            if m.is_empty() || Instant::now() > deadline {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        replicas.push((sb.name(i), missing));
    }
    Survival {
        primary: primary.to_string(),
        missing_on_primary,
        replicas,
    }
}

/// Sends signal `sig` ("STOP", "CONT") to server `index` of the sandbox
/// — its own `mariadbd` / `mysqld`, by the PID the sandbox recorded.
/// (SIGKILL: [`Topology::kill`], which also waits for the exit.)
pub fn signal(sb: &dyn Topology, index: usize, sig: &str) {
    sb.signal(index, sig)
}
