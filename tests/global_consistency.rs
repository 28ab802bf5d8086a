//! `consistency = "global"` (issue 16, item 9): a read sees every commit
//! the primary acknowledged before the read arrived, whoever made it.
//! Checked with the servers' own counters: `Com_stmt_execute` (the reads
//! are prepared statements; the writes, rwproxy's monitor and its position
//! queries are text queries) and `Master_gtid_wait_count` /
//! `Master_gtid_wait_timeouts` (the replica's `MASTER_GTID_WAIT` calls).
//! The tests share one sandbox and run one at a time.

mod common;

use std::time::{Duration, Instant};

use common::sandbox::{self, global_status};
use common::{root_exec, start_proxy};
use mysql_async::prelude::*;
use rwproxy::config::{Config, Consistency};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ports() -> (u16, u16, u16) {
    let sb = sandbox::shared();
    (sb.servers[0].port, sb.servers[1].port, sb.servers[2].port)
}

/// Undoes what a failed test may have left: replication running, no delay.
async fn heal() {
    let (_, r1, r2) = ports();
    for r in [r1, r2] {
        set_delay(r, 0).await;
    }
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
}

async fn set_delay(port: u16, secs: u32) {
    root_exec(port, "STOP SLAVE").await;
    root_exec(port, &format!("CHANGE MASTER TO MASTER_DELAY = {secs}")).await;
    root_exec(port, "START SLAVE").await;
}

fn config(consistency: Consistency, causal_wait_ms: u64) -> Config {
    let mut c = common::sandbox_config(sandbox::shared());
    c.monitor_interval_ms = 200;
    c.max_replica_lag_ms = 30_000;
    c.consistency = consistency;
    c.causal_wait_ms = causal_wait_ms;
    c
}

async fn fresh_table() {
    let (p, _, _) = ports();
    root_exec(
        p,
        "CREATE TABLE IF NOT EXISTS app.glob (id INT PRIMARY KEY)",
    )
    .await;
    root_exec(p, "DELETE FROM app.glob").await;
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
}

/// `Com_stmt_execute` on (primary, replica 1, replica 2).
async fn executes() -> [u64; 3] {
    let (p, r1, r2) = ports();
    [
        global_status(p, "Com_stmt_execute").await,
        global_status(r1, "Com_stmt_execute").await,
        global_status(r2, "Com_stmt_execute").await,
    ]
}

async fn replica_status(name: &str) -> u64 {
    let (_, r1, r2) = ports();
    global_status(r1, name).await + global_status(r2, name).await
}

/// Session A inserts a row (text protocol) and session B, another client
/// connection, reads it right after (prepared statement; every fourth
/// cycle a text query). Returns how many of B's reads missed the row.
async fn stale_reads(proxy: &common::Proxy, cycles: u32, base: u32) -> u32 {
    let mut a = proxy.app_conn().await;
    let mut b = proxy.app_conn().await;
    let mut stale = 0;
    for i in 0..cycles {
        let id = base + i;
        a.query_drop(format!("INSERT INTO app.glob (id) VALUES ({id})"))
            .await
            .expect("insert");
        let got: Option<u32> = if i % 4 == 3 {
            b.query_first(format!("SELECT id FROM app.glob WHERE id = {id}"))
                .await
                .expect("text select")
        } else {
            b.exec_first("SELECT id FROM app.glob WHERE id = ?", (id,))
                .await
                .expect("select")
        };
        if got != Some(id) {
            stale += 1;
        }
    }
    stale
}

/// Replicas 1–2 s behind (`MASTER_DELAY = 2`): in session mode another
/// session's fresh write is often missing; in global mode never, and the
/// reads the replicas could not serve within `causal_wait_ms` ran on the
/// primary after a wait that timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sessions_write_is_never_missing_in_global_mode() {
    let _g = SERIAL.lock().await;
    heal().await;
    fresh_table().await;
    let (_, r1, r2) = ports();
    set_delay(r1, 2).await;
    set_delay(r2, 2).await;

    let session = start_proxy(config(Consistency::Session, 20)).await;
    let stale_session = stale_reads(&session, 300, 0).await;
    drop(session);

    let global = start_proxy(config(Consistency::Global, 20)).await;
    let before = executes().await;
    let timeouts = replica_status("Master_gtid_wait_timeouts").await;
    let stale_global = stale_reads(&global, 300, 1_000_000).await;
    let after = executes().await;
    let timed_out = replica_status("Master_gtid_wait_timeouts").await - timeouts;
    let prepared = 300 - 300 / 4;
    println!(
        "300 write-then-read-from-another-session cycles, replicas 1-2 s behind: session {stale_session} stale, global {stale_global} stale; global reads executed on primary {} / replicas {}; replica waits timed out: {timed_out}",
        after[0] - before[0],
        (after[1] - before[1]) + (after[2] - before[2]),
    );
    assert_eq!(stale_global, 0, "global consistency must never read stale");
    assert!(
        stale_session > 100,
        "session mode should miss another session's writes here (else the test proves nothing): {stale_session}"
    );
    assert!(
        after[0] - before[0] >= prepared,
        "the replicas could not catch up within causal_wait_ms: the primary serves the reads"
    );
    assert_eq!(
        (after[1] - before[1]) + (after[2] - before[2]),
        0,
        "no replica had the fresh row"
    );
    assert!(
        timed_out >= prepared,
        "each of those reads first waited on a replica: {timed_out} timeouts"
    );
    heal().await;
}

/// A replica that catches up within `causal_wait_ms` serves the read
/// (after waiting); with nothing to wait for a read neither waits nor goes
/// to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_read_waits_for_a_replica_only_when_needed() {
    let _g = SERIAL.lock().await;
    heal().await;
    fresh_table().await;
    let (p, r1, r2) = ports();
    let proxy = start_proxy(config(Consistency::Global, 5_000)).await;
    let mut b = proxy.app_conn().await;

    // Nothing to wait for: the monitor has seen both replicas at the
    // primary's position (no write since).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let waits = replica_status("Master_gtid_wait_count").await;
    let before = executes().await;
    for _ in 0..40 {
        let got: Option<u32> = b
            .exec_first("SELECT COUNT(*) FROM app.glob WHERE id > ?", (0,))
            .await
            .expect("select");
        assert_eq!(got, Some(0));
    }
    let after = executes().await;
    let waited = replica_status("Master_gtid_wait_count").await - waits;
    println!(
        "idle: 40 reads, primary executed {}, replicas {}, replica waits {waited}",
        after[0] - before[0],
        (after[1] - before[1]) + (after[2] - before[2])
    );
    assert_eq!(
        waited, 0,
        "no read should wait when the replicas are current"
    );
    assert_eq!(after[0] - before[0], 0, "no read should go to the primary");
    assert_eq!((after[1] - before[1]) + (after[2] - before[2]), 40);

    // Replicas 1–2 s behind (`MASTER_DELAY = 2`, replication running);
    // another session writes; the read waits on the replica the balancer
    // picks until it applied the write, and that replica serves it.
    set_delay(r1, 2).await;
    set_delay(r2, 2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for round in 0..3u32 {
        let id = 100 + round;
        root_exec(p, &format!("INSERT INTO app.glob VALUES ({id})")).await;
        for r in [r1, r2] {
            let mut direct = mysql_async::Conn::new(sandbox::app_opts(r))
                .await
                .expect("connect to replica");
            let seen: Option<u32> = direct
                .query_first(format!("SELECT id FROM app.glob WHERE id = {id}"))
                .await
                .expect("direct select");
            assert_eq!(
                seen, None,
                "replica on port {r} must be behind for this check"
            );
            let _ = direct.disconnect().await;
        }
        let waits = replica_status("Master_gtid_wait_count").await;
        let before = executes().await;
        let started = Instant::now();
        let got: Option<u32> = b
            .exec_first("SELECT id FROM app.glob WHERE id = ?", (id,))
            .await
            .expect("select");
        let took = started.elapsed();
        let after = executes().await;
        let waited = replica_status("Master_gtid_wait_count").await - waits;
        println!(
            "round {round}: read took {took:?}, primary executed {}, replicas {}, waits {waited}",
            after[0] - before[0],
            (after[1] - before[1]) + (after[2] - before[2])
        );
        assert_eq!(got, Some(id), "the read must see the write");
        assert_eq!(waited, 1, "one wait on the chosen replica");
        assert_eq!(after[0] - before[0], 0, "the primary did not serve it");
        assert_eq!((after[1] - before[1]) + (after[2] - before[2]), 1);
    }
    heal().await;
}
