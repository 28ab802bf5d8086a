//! Connection multiplexing (`pool_mode = "transaction" | "statement"`) and
//! backend pool limits (`pool_max_per_server`, `pool_wait_timeout_ms`),
//! against the real sandbox. Evidence comes from the servers themselves:
//! `Threads_connected` sampled on every server during the run, and
//! `Prepared_stmt_count` after statement churn; correctness from what the
//! clients read back (their own session variables, `LAST_INSERT_ID()`,
//! their own rows).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::sandbox;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use rwproxy::config::{Config, PoolMode};
use tokio::sync::Mutex;

/// Tests here read global counters of the shared servers: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn config(mode: PoolMode, max_per_server: usize, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = common::sandbox_config(sandbox::shared());
    c.pool_mode = mode;
    c.pool_max_per_server = max_per_server;
    tweak(&mut c);
    c
}

/// Raises the soft open-files limit to the hard one (1,000 clients plus
/// their server-side sockets live in this one process).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Samples `Threads_connected` on every server until stopped; returns the
/// maximum seen per server.
fn sample_threads(
    ports: Vec<u16>,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut conns = Vec::new();
        for p in &ports {
            conns.push(Conn::new(sandbox::root_opts(*p)).await.expect("root"));
        }
        let mut max = vec![0u64; ports.len()];
        loop {
            for (i, c) in conns.iter_mut().enumerate() {
                let v: Option<(String, u64)> = c
                    .query_first("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                    .await
                    .expect("status");
                max[i] = max[i].max(v.map(|v| v.1).unwrap_or(0));
            }
            tokio::select! {
                _ = stop.notified() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        max
    })
}

async fn threads_connected(port: u16) -> u64 {
    sandbox::global_status(port, "Threads_connected").await
}

const CLIENTS: usize = 1000;
const ROUNDS: u32 = 3;

/// One client's workload: its own session variables, autocommit inserts
/// followed by `LAST_INSERT_ID()`, a multi-statement transaction, reads of
/// its own rows (read-your-writes) and a prepared statement — checking
/// every answer. Returns the number of rows it wrote.
async fn client(opts: Opts, n: u32, start: Arc<tokio::sync::Barrier>) -> Result<u64, String> {
    let e = |what: &str, err: mysql_async::Error| format!("client {n}: {what}: {err}");
    let mut c = Conn::new(opts).await.map_err(|x| e("connect", x))?;
    start.wait().await;
    // Whole hours: MariaDB 10.11 caches offset time zones by a key under
    // which e.g. '+05:43' and '+07:59' collide (SET one, then the other,
    // and @@time_zone shows the first) — a server bug, seen directly.
    let tz = format!("+{:02}:00", n % 13);
    let dpi = n % 31;
    c.query_drop(format!(
        "SET time_zone = '{tz}', @me = {n}, div_precision_increment = {dpi}"
    ))
    .await
    .map_err(|x| e("set", x))?;
    let mut written = 0u64;
    for r in 0..ROUNDS {
        c.query_drop(format!(
            "INSERT INTO mx (client, k, v) VALUES ({n}, {r}, 0)"
        ))
        .await
        .map_err(|x| e("insert", x))?;
        let id = c.last_insert_id().unwrap_or(0);
        let lid: Option<u64> = c
            .query_first("SELECT LAST_INSERT_ID()")
            .await
            .map_err(|x| e("last_insert_id", x))?;
        if lid != Some(id) || id == 0 {
            return Err(format!(
                "client {n}: LAST_INSERT_ID() = {lid:?}, insert id {id}"
            ));
        }
        let mut tx = c
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .map_err(|x| e("begin", x))?;
        tx.query_drop(format!(
            "INSERT INTO mx (client, k, v) VALUES ({n}, {}, 1)",
            100 + r
        ))
        .await
        .map_err(|x| e("tx insert", x))?;
        tx.query_drop(format!(
            "UPDATE mx SET v = v + 1 WHERE client = {n} AND k = {}",
            100 + r
        ))
        .await
        .map_err(|x| e("tx update", x))?;
        tx.commit().await.map_err(|x| e("commit", x))?;
        written += 2;
        let count: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM mx WHERE client = {n}"))
            .await
            .map_err(|x| e("count", x))?;
        if count != Some(written) {
            return Err(format!("client {n}: sees {count:?} of its {written} rows"));
        }
        let mine: Option<(u32, String, u16, u64)> = c
            .query_first("SELECT @me, @@time_zone, @@port, CONNECTION_ID()")
            .await
            .map_err(|x| e("variables", x))?;
        if mine.as_ref().map(|m| (m.0, m.1.clone())) != Some((n, tz.clone())) {
            return Err(format!(
                "client {n}: session variables {mine:?}, expected ({n}, {tz})"
            ));
        }
        let v: Option<u32> = c
            .exec_first("SELECT v FROM mx WHERE client = ? AND k = ?", (n, 100 + r))
            .await
            .map_err(|x| e("prepared", x))?;
        if v != Some(2) {
            return Err(format!("client {n}: prepared read {v:?}"));
        }
    }
    c.disconnect().await.map_err(|x| e("disconnect", x))?;
    Ok(written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_share_twenty_connections_per_server() {
    let _serial = SERIAL.lock().await;
    raise_nofile();
    let sb = sandbox::shared();
    let ports: Vec<u16> = sb.servers.iter().map(|s| s.port).collect();
    let mut root = Conn::new(sandbox::root_opts(ports[0])).await.expect("root");
    root.query_drop(
        "CREATE OR REPLACE TABLE app.mx (id BIGINT PRIMARY KEY AUTO_INCREMENT, \
         client INT NOT NULL, k INT NOT NULL, v INT NOT NULL, KEY (client, k))",
    )
    .await
    .expect("create table");
    sandbox::wait_replicas_caught_up(sb).await;
    let proxy = common::start_proxy(config(PoolMode::Transaction, 20, |c| {
        c.pool_wait_timeout_ms = 60_000;
        c.handshake_timeout_ms = 60_000;
    }))
    .await;
    // Let the proxy's monitor connect before taking the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut baseline = Vec::new();
    for p in &ports {
        baseline.push(threads_connected(*p).await);
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    // The sampler's own connections count too: one per server.
    let sampler = sample_threads(ports.clone(), stop.clone());

    let started = Instant::now();
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let connected = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for n in 0..CLIENTS as u32 {
        let opts = proxy.app_opts();
        let b = barrier.clone();
        let k = connected.clone();
        tasks.push(tokio::spawn(async move {
            let r = client(opts, n, b).await;
            k.fetch_add(1, Ordering::Relaxed);
            r
        }));
        if n % 50 == 49 {
            // Connect in waves, as a real fleet would.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut written = 0;
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.expect("client task") {
            Ok(w) => written += w,
            Err(e) => errors.push(e),
        }
    }
    let took = started.elapsed();
    stop.notify_one();
    let max = sampler.await.expect("sampler");
    println!(
        "{CLIENTS} clients x {ROUNDS} rounds in {:.1} s; Threads_connected baseline {baseline:?}, max during run {max:?} (+1 sampler each)",
        took.as_secs_f64()
    );
    assert!(
        errors.is_empty(),
        "{} clients failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(written, CLIENTS as u64 * ROUNDS as u64 * 2);
    for (i, p) in ports.iter().enumerate() {
        let used = max[i].saturating_sub(baseline[i] + 1);
        assert!(
            used <= 20,
            "server on port {p}: {used} connections above the baseline (limit 20)"
        );
    }
    // The primary was really shared by many clients, not bypassed.
    assert!(
        max[0] > baseline[0] + 1,
        "the primary saw no proxy connection at all"
    );
    // Every acknowledged write is on every server.
    sandbox::wait_replicas_caught_up(sb).await;
    for p in &ports {
        let mut c = Conn::new(sandbox::root_opts(*p)).await.expect("root");
        let (rows, sum): (u64, u64) = c
            .query_first("SELECT COUNT(*), SUM(v) FROM app.mx")
            .await
            .expect("count")
            .expect("row");
        assert_eq!(rows, written, "rows on port {p}");
        assert_eq!(
            sum,
            CLIENTS as u64 * ROUNDS as u64 * 2,
            "sum of v on port {p}"
        );
    }
}

/// A session without a default schema never inherits one from a shared
/// connection, and one with a schema gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_connections_keep_each_sessions_schema_and_variables() {
    let _serial = SERIAL.lock().await;
    let proxy = common::start_proxy(config(PoolMode::Transaction, 2, |_| {})).await;
    let mut with_db = proxy.app_conn().await;
    let mut without = Conn::new(proxy.opts("app", "app", None))
        .await
        .expect("no db");
    for _ in 0..20 {
        with_db
            .query_drop("SET sql_mode = 'ANSI_QUOTES'")
            .await
            .expect("set");
        let (db, mode): (Option<String>, String) = with_db
            .query_first("SELECT DATABASE(), @@sql_mode")
            .await
            .expect("q")
            .expect("row");
        assert_eq!(db.as_deref(), Some("app"));
        assert_eq!(mode, "ANSI_QUOTES");
        let (db, mode): (Option<String>, String) = without
            .query_first("SELECT DATABASE(), @@sql_mode")
            .await
            .expect("q")
            .expect("row");
        assert_eq!(db, None, "a session without a schema got one");
        assert_ne!(mode, "ANSI_QUOTES", "another session's sql_mode leaked");
    }
}

/// With `pool_max_per_server = 1`, a second session needing the primary
/// while the first holds it in a transaction waits `pool_wait_timeout_ms`
/// and gets ERR 1040; once the transaction ends it is served. Same in
/// session mode, where a session holds its connection for its lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_waits_then_answers_1040() {
    let _serial = SERIAL.lock().await;
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = common::start_proxy(config(mode, 1, |c| c.pool_wait_timeout_ms = 300)).await;
        let mut a = proxy.app_conn().await;
        // Without a default schema, logging in needs no primary connection
        // (in session mode `a` holds the only one from its login on).
        let mut b = Conn::new(proxy.opts("app", "app", None))
            .await
            .expect("connect b");
        a.query_drop("CREATE TABLE IF NOT EXISTS pool_t (id INT PRIMARY KEY AUTO_INCREMENT)")
            .await
            .expect("create");
        a.query_drop("BEGIN").await.expect("begin");
        a.query_drop("INSERT INTO pool_t VALUES ()")
            .await
            .expect("insert a");
        let t = Instant::now();
        let err = b
            .query_drop("INSERT INTO app.pool_t VALUES ()")
            .await
            .expect_err("the pool is exhausted");
        let waited = t.elapsed();
        match &err {
            mysql_async::Error::Server(s) => {
                assert_eq!(s.code, 1040, "{s:?}");
                assert_eq!(s.state, "08004");
                assert!(
                    s.message.contains("pool_max_per_server = 1"),
                    "{}",
                    s.message
                );
            }
            other => panic!("{mode:?}: expected a server error, got {other}"),
        }
        println!("{mode:?}: ERR 1040 after {} ms", waited.as_millis());
        // The refused session is still usable, and the holder unaffected.
        a.query_drop("COMMIT").await.expect("commit");
        if mode == PoolMode::Session {
            // The holder keeps its connection for its whole session.
            drop(a);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = b.query_drop("INSERT INTO app.pool_t VALUES ()").await {
            assert!(Instant::now() < deadline, "{mode:?}: still refused: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Statement mode shares connections after every statement and refuses
/// what would open a multi-statement transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transactions() {
    let _serial = SERIAL.lock().await;
    let proxy = common::start_proxy(config(PoolMode::Statement, 4, |_| {})).await;
    let mut c = proxy.app_conn().await;
    for sql in ["BEGIN", "START TRANSACTION", "SET autocommit = 0"] {
        match c.query_drop(sql).await {
            Err(mysql_async::Error::Server(s)) => {
                assert_eq!(s.code, 1235, "{sql}: {s:?}");
                assert!(s.message.contains("pool_mode"), "{}", s.message);
            }
            other => panic!("{sql}: expected ERR 1235, got {other:?}"),
        }
    }
    let one: Option<u32> = c.query_first("SELECT 1").await.expect("session goes on");
    assert_eq!(one, Some(1));
}

/// A client churning through thousands of distinct prepared statements
/// leaves at most `pool_stmt_cache` of them open per backend connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_churn_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let proxy =
        common::start_proxy(config(PoolMode::Transaction, 2, |c| c.pool_stmt_cache = 8)).await;
    let mut before = Vec::new();
    for s in &sb.servers {
        before.push(sandbox::global_status(s.port, "Prepared_stmt_count").await);
    }
    let mut c = proxy.app_conn().await;
    for i in 0..2000u32 {
        let v: Option<u32> = c
            .exec_first(format!("SELECT ? + {i}"), (1u32,))
            .await
            .expect("execute");
        assert_eq!(v, Some(1 + i));
    }
    let mut after = Vec::new();
    for s in &sb.servers {
        after.push(sandbox::global_status(s.port, "Prepared_stmt_count").await);
    }
    println!("Prepared_stmt_count before {before:?}, after 2000 distinct statements {after:?}");
    for (i, s) in sb.servers.iter().enumerate() {
        // 2 connections per server at most, 8 statements each.
        assert!(
            after[i] <= before[i] + 16,
            "{}: {} prepared statements open",
            s.name,
            after[i] - before[i]
        );
    }
}

/// At the end of a session (default `session` mode) a backend connection
/// that ran only plain reads goes back to the pool without a
/// COM_RESET_CONNECTION — one round trip and server work less per
/// short-lived client. The server counts each reset in
/// `Com_admin_commands`. A connection that wrote, ran with autocommit off,
/// holds a user variable or a prepared statement is still reset: the next
/// session (same account, same pooled connection) must never see the last
/// one's `LAST_INSERT_ID()`, `@@autocommit`, `@x`, warnings or statement
/// handles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_resets_only_connections_that_need_it() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let primary = sb.servers[0].port;
    common::root_exec(
        primary,
        "CREATE TABLE IF NOT EXISTS app.reset_probe (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    )
    .await;
    let proxy = common::start_proxy(config(PoolMode::Session, 0, |_| {})).await;
    let n = 100u64;
    let session = |sql: &'static str| {
        let opts = proxy.app_opts();
        async move {
            let mut c = Conn::new(opts).await.expect("connect");
            c.query_drop(sql).await.expect(sql);
            c.disconnect().await.expect("disconnect");
        }
    };
    // Warm the pool so both phases reuse connections.
    session("SELECT 1").await;

    let before = sandbox::global_status(primary, "Com_admin_commands").await;
    for _ in 0..n {
        session("SELECT 1").await;
    }
    let reads = sandbox::global_status(primary, "Com_admin_commands").await - before;

    let before = sandbox::global_status(primary, "Com_admin_commands").await;
    for _ in 0..n {
        session("INSERT INTO reset_probe (v) VALUES (1)").await;
    }
    let writes = sandbox::global_status(primary, "Com_admin_commands").await - before;
    println!(
        "Com_admin_commands on the primary: {reads} after {n} read-only sessions, {writes} after {n} writing sessions"
    );
    assert!(
        writes >= n,
        "only {writes} resets for {n} sessions that wrote"
    );
    // The monitor's own admin commands are the only other source.
    assert!(
        reads < n / 4,
        "{reads} admin commands for {n} read-only sessions: their connections were reset"
    );

    // Whatever a session leaves behind never reaches the next one.
    let probe = |sql: &'static str| {
        let opts = proxy.app_opts();
        async move {
            let mut c = Conn::new(opts).await.expect("connect");
            let v: Option<Option<String>> = c.query_first(sql).await.expect(sql);
            c.disconnect().await.expect("disconnect");
            v.flatten()
        }
    };
    for _ in 0..10 {
        session("INSERT INTO reset_probe (v) VALUES (2)").await;
        assert_eq!(
            probe("SELECT LAST_INSERT_ID()").await.as_deref(),
            Some("0"),
            "LAST_INSERT_ID() of the previous session leaked"
        );
        let opts = proxy.app_opts();
        let mut c = Conn::new(opts).await.expect("connect");
        c.query_drop("SET autocommit = 0")
            .await
            .expect("autocommit");
        c.query_drop("SELECT COUNT(*) FROM reset_probe")
            .await
            .expect("read");
        c.query_drop("SET @x = 42").await.expect("user variable");
        c.disconnect().await.expect("disconnect");
        assert_eq!(
            probe("/* rwproxy:primary */ SELECT @@autocommit")
                .await
                .as_deref(),
            Some("1"),
            "autocommit = 0 of the previous session leaked"
        );
        assert_eq!(
            probe("/* rwproxy:primary */ SELECT @x").await,
            None,
            "a user variable of the previous session leaked"
        );
        // A read that raised a warning (1292) on the primary.
        session("/* rwproxy:primary */ SELECT CAST('1x' AS SIGNED)").await;
        let mut c = Conn::new(proxy.app_opts()).await.expect("connect");
        let warnings: Vec<(String, u32, String)> =
            c.query("SHOW WARNINGS").await.expect("show warnings");
        c.disconnect().await.expect("disconnect");
        assert!(
            warnings.is_empty(),
            "warnings of the previous session leaked: {warnings:?}"
        );
    }
    let mut before = Vec::new();
    for s in &sb.servers {
        before.push(sandbox::global_status(s.port, "Prepared_stmt_count").await);
    }
    for i in 0..50u32 {
        let mut c = Conn::new(proxy.app_opts()).await.expect("connect");
        let v: Option<u32> = c.exec_first("SELECT ? + 1", (i,)).await.expect("execute");
        assert_eq!(v, Some(i + 1));
        // No COM_STMT_CLOSE: the session just ends.
        drop(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, s) in sb.servers.iter().enumerate() {
        let after = sandbox::global_status(s.port, "Prepared_stmt_count").await;
        assert!(
            after <= before[i] + 2,
            "{}: {} statement handles left open by ended sessions",
            s.name,
            after.saturating_sub(before[i])
        );
    }
}

/// Client sessions are handed to the session threads in turn, and each
/// thread keeps its own idle backend connections. A session whose thread
/// has none borrows another thread's idle one rather than open a new
/// connection — which, at `pool_max_per_server = 1`, would first close the
/// other thread's. Sequential sessions alternate between the two threads,
/// so after one warm-up session the primary sees no new connection at all
/// (its own `Connections` counter), and every session is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_other_threads_borrow_idle_connections() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let primary = sb.servers[0].port;
    common::root_exec(
        primary,
        "CREATE TABLE IF NOT EXISTS app.borrow_t (id INT PRIMARY KEY); INSERT IGNORE INTO app.borrow_t VALUES (1)",
    )
    .await;
    let proxy = common::start_proxy(config(PoolMode::Session, 1, |c| {
        c.worker_threads = 2;
        c.monitor_interval_ms = 60_000;
        c.accounts_refresh_ms = 60_000;
    }))
    .await;
    let session = || {
        let opts = proxy.app_opts();
        async move {
            let mut c = Conn::new(opts).await.expect("connect");
            // A locking read: the primary serves it.
            let id: Option<u32> = c
                .query_first("SELECT id FROM borrow_t WHERE id = 1 FOR UPDATE")
                .await
                .expect("locking read");
            assert_eq!(id, Some(1));
            c.disconnect().await.expect("disconnect");
        }
    };
    session().await;
    let n = 10;
    // `global_status` opens a connection of its own: one per reading.
    let before = sandbox::global_status(primary, "Connections").await;
    for _ in 0..n {
        session().await;
    }
    let opened = sandbox::global_status(primary, "Connections").await - before - 1;
    println!("{n} sessions after warm-up opened {opened} new connection(s) to the primary");
    assert_eq!(
        opened, 0,
        "sessions on the other thread opened new connections instead of borrowing idle ones"
    );
}
