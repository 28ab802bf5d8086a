//! Replica lag and health (issue: "Replica lag and health"): lag-bounded
//! routing, fallback, a replica killed under load, read-your-writes, load
//! balancing, and a bad server entry. Every check reads the servers' own
//! counters. The tests share one sandbox and run one at a time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::flavor::{self, Topology};
use common::sandbox::{self, global_status};
use common::{root_exec, start_proxy, wait_until};
use mysql_async::prelude::*;
use rwproxy::config::{Config, Consistency, ReplicaFallback};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ports() -> (u16, u16, u16) {
    let sb = sandbox::shared();
    (sb.servers[0].port, sb.servers[1].port, sb.servers[2].port)
}

/// Undoes what a failed test may have left: replication running, no delay.
async fn heal() {
    let (_, r1, r2) = ports();
    for r in [r1, r2] {
        root_exec(r, "STOP SLAVE").await;
        root_exec(r, "CHANGE MASTER TO MASTER_DELAY = 0").await;
        root_exec(r, "START SLAVE").await;
    }
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
}

fn config() -> Config {
    config_of(sandbox::shared())
}

fn config_of(t: &dyn Topology) -> Config {
    let mut c = t.proxy_config();
    c.monitor_interval_ms = 500;
    c.consistency = Consistency::Eventual;
    c
}

async fn setup_table() {
    setup_table_on(sandbox::shared()).await
}

async fn setup_table_on(t: &dyn Topology) {
    let p = t.port(0);
    root_exec(
        p,
        "CREATE TABLE IF NOT EXISTS app.lagt (id INT PRIMARY KEY, v INT)",
    )
    .await;
    root_exec(p, "INSERT IGNORE INTO app.lagt VALUES (1, 1)").await;
    flavor::wait_caught_up(t).await;
}

/// Runs plain reads from `clients` connections until `stop`.
fn readers(
    proxy: &common::Proxy,
    clients: usize,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let opts = proxy.app_opts();
            let (stop, errors, ok) = (stop.clone(), errors.clone(), ok.clone());
            tokio::spawn(async move {
                let mut conn: Option<mysql_async::Conn> = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        match mysql_async::Conn::new(opts.clone()).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                eprintln!("connect failed: {e}");
                                errors.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    match c
                        .query_first::<i64, _>("SELECT v FROM app.lagt WHERE id = 1")
                        .await
                    {
                        Ok(Some(1)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            eprintln!("read failed: {other:?}");
                            errors.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_stops_getting_reads_and_comes_back() {
    let _g = SERIAL.lock().await;
    heal().await;
    setup_table().await;
    let (_, r1, r2) = ports();
    let proxy = start_proxy(config()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (errors, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks = readers(&proxy, 4, stop.clone(), errors.clone(), ok.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    root_exec(r1, "STOP SLAVE SQL_THREAD").await;
    // Within 2 × monitor_interval + 1 s, replica1 gets no more reads.
    tokio::time::sleep(Duration::from_millis(2 * 500 + 1000)).await;
    let (a1, a2) = (
        global_status(r1, "Com_select").await,
        global_status(r2, "Com_select").await,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (b1, b2) = (
        global_status(r1, "Com_select").await,
        global_status(r2, "Com_select").await,
    );
    println!(
        "while replica1 lags: replica1 +{} selects, replica2 +{}",
        b1 - a1,
        b2 - a2
    );
    // The monitor's own SELECTs are all replica1 may see: 2 per poll (the
    // state row and the heartbeat), 4 polls in 2 s at 500 ms, 5 or 6 when
    // a loaded machine delays one poll into the window. A replica that
    // still served reads would get a share of the ≥ 100 reads below.
    assert!(b1 - a1 <= 12, "replica1 still served reads: +{}", b1 - a1);
    assert!(
        b2 - a2 >= 100,
        "replica2 should take the reads: +{}",
        b2 - a2
    );

    root_exec(r1, "START SLAVE SQL_THREAD").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c1 = global_status(r1, "Com_select").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d1 = global_status(r1, "Com_select").await;
    println!("after recovery: replica1 +{} selects in 2 s", d1 - c1);
    assert!(
        d1 - c1 >= 50,
        "replica1 should take its share again: +{}",
        d1 - c1
    );

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no read may fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_usable_replica_falls_back_or_errors() {
    let _g = SERIAL.lock().await;
    heal().await;
    setup_table().await;
    no_usable_replica(sandbox::shared()).await;
}

/// Both replicas' SQL threads stopped: reads fall back to the primary
/// (its `Com_select` counts them), or, with `replica_fallback = "error"`,
/// fail with 1429 while writes still work.
async fn no_usable_replica(t: &dyn Topology) {
    let (p, r1, r2) = (t.port(0), t.port(1), t.port(2));
    let (stop_sql, start_sql) = (t.flavor().stop_sql_thread(), t.flavor().start_sql_thread());
    let proxy = start_proxy(config_of(t)).await;
    let mut cfg = config_of(t);
    cfg.replica_fallback = ReplicaFallback::Error;
    let strict = start_proxy(cfg).await;
    // Connect while replicas are fine: drivers run reads of their own on
    // connect, which `replica_fallback = "error"` would refuse later.
    let mut strict_conn = strict.app_conn().await;
    root_exec(r1, stop_sql).await;
    root_exec(r2, stop_sql).await;
    wait_until(Duration::from_secs(5), "both replicas unusable", || async {
        let s = common::status(&proxy).await;
        common::server(&s, "replica1")["readable"] == false
            && common::server(&s, "replica2")["readable"] == false
    })
    .await;
    wait_until(
        Duration::from_secs(5),
        "both replicas unusable (strict)",
        || async {
            let s = common::status(&strict).await;
            common::server(&s, "replica1")["readable"] == false
                && common::server(&s, "replica2")["readable"] == false
        },
    )
    .await;
    let mut c = proxy.app_conn().await;
    let before = global_status(p, "Com_select").await;
    for _ in 0..50 {
        let v: Option<i64> = c
            .query_first("SELECT v FROM app.lagt WHERE id = 1")
            .await
            .expect("fallback read");
        assert_eq!(v, Some(1));
    }
    let after = global_status(p, "Com_select").await;
    assert!(
        after - before >= 50,
        "reads should fall back to the primary: +{}",
        after - before
    );
    drop(c);

    let c = &mut strict_conn;
    let err = c
        .query_first::<i64, _>("SELECT v FROM app.lagt WHERE id = 1")
        .await
        .expect_err("no replica and fallback = error");
    let text = err.to_string();
    assert!(
        text.contains("1429") && text.contains("no replica"),
        "{text}"
    );
    // Writes still work.
    c.query_drop("UPDATE app.lagt SET v = 1 WHERE id = 1")
        .await
        .expect("write");

    root_exec(r1, start_sql).await;
    root_exec(r2, start_sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_under_load_then_restarted() {
    let _g = SERIAL.lock().await;
    heal().await;
    setup_table().await;
    replica_killed(sandbox::shared()).await;
}

/// 16 readers; replica1 SIGKILLed after 3 s: it is marked down within 1 s,
/// reads keep flowing (few client-visible errors), and once restarted it
/// serves reads again (its own `Com_select`).
async fn replica_killed(sb: &dyn Topology) {
    let (r1, r2) = (sb.port(1), sb.port(2));
    let proxy = start_proxy(config_of(sb)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (errors, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks = readers(&proxy, 16, stop.clone(), errors.clone(), ok.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let killed = Instant::now();
    sb.kill(1);
    let detect = wait_until(Duration::from_secs(5), "replica1 marked down", || async {
        let s = common::status(&proxy).await;
        common::server(&s, "replica1")["up"] == false
    })
    .await;
    let down_after = killed.elapsed();
    println!(
        "replica1 marked down {:.0} ms after kill -9",
        down_after.as_secs_f64() * 1000.0
    );
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(killed.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (e, o) = (errors.load(Ordering::Relaxed), ok.load(Ordering::Relaxed));
    println!("16 readers, 10 s, kill -9 at 3 s: {o} reads ok, {e} client-visible errors");
    assert!(o > 1000, "reads should keep flowing: {o}");
    // Statements cut mid-stream may fail; single-row reads almost never are.
    assert!(e <= 16, "too many client-visible errors: {e}");
    assert!(
        down_after < Duration::from_millis(1000),
        "marking replica1 down took {down_after:?} (polled for {detect:?})"
    );

    sb.restart(1);
    wait_until(
        Duration::from_secs(30),
        "replica1 readable again",
        || async {
            let s = common::status(&proxy).await;
            common::server(&s, "replica1")["readable"] == true
        },
    )
    .await;
    let before = global_status(r1, "Com_select").await;
    let mut c = proxy.app_conn().await;
    for _ in 0..40 {
        c.query_drop("SELECT v FROM app.lagt WHERE id = 1")
            .await
            .expect("read");
    }
    let after = global_status(r1, "Com_select").await;
    assert!(
        after - before >= 15,
        "restarted replica should serve reads again: +{}",
        after - before
    );
    let _ = r2;
}

async fn set_delay(port: u16, secs: u32) {
    root_exec(port, "STOP SLAVE").await;
    root_exec(port, &format!("CHANGE MASTER TO MASTER_DELAY = {secs}")).await;
    root_exec(port, "START SLAVE").await;
}

/// Insert-then-select cycles; returns how many selects missed the row.
async fn stale_reads(proxy: &common::Proxy, cycles: u32, base: u32) -> u32 {
    let mut c = proxy.app_conn().await;
    let mut stale = 0;
    for i in 0..cycles {
        let id = base + i;
        c.exec_drop("INSERT INTO app.ryw (id) VALUES (?)", (id,))
            .await
            .expect("insert");
        let got: Option<u32> = c
            .exec_first("SELECT id FROM app.ryw WHERE id = ?", (id,))
            .await
            .expect("select");
        if got != Some(id) {
            stale += 1;
        }
    }
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_in_session_mode_only() {
    let _g = SERIAL.lock().await;
    heal().await;
    let sb = sandbox::shared();
    let (p, r1, r2) = ports();
    root_exec(p, "CREATE TABLE IF NOT EXISTS app.ryw (id INT PRIMARY KEY)").await;
    root_exec(p, "DELETE FROM app.ryw").await;
    sandbox::wait_replicas_caught_up(sb).await;
    set_delay(r1, 1).await;
    set_delay(r2, 1).await;

    let mut eventual = config();
    eventual.max_replica_lag_ms = 30_000;
    let mut session = eventual.clone();
    session.consistency = Consistency::Session;

    let ev = start_proxy(eventual).await;
    let stale_eventual = stale_reads(&ev, 1000, 0).await;
    let ss = start_proxy(session).await;
    let (a1, a2) = (
        global_status(r1, "Com_stmt_execute").await,
        global_status(r2, "Com_stmt_execute").await,
    );
    let stale_session = stale_reads(&ss, 1000, 1_000_000).await;
    println!(
        "1000 insert-then-select cycles with 1 s replica delay: eventual {stale_eventual} stale, session {stale_session} stale"
    );
    assert_eq!(
        stale_session, 0,
        "session consistency must never read stale"
    );
    assert!(
        stale_eventual > 100,
        "eventual should show stale reads (else the test proves nothing): {stale_eventual}"
    );

    // Once the replicas caught up, the same session reads from replicas again.
    set_delay(r1, 0).await;
    set_delay(r2, 0).await;
    sandbox::wait_replicas_caught_up(sb).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut c = ss.app_conn().await;
    c.exec_drop("INSERT INTO app.ryw (id) VALUES (?)", (5_000_000,))
        .await
        .expect("insert");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (b1, b2) = (
        global_status(r1, "Com_stmt_execute").await,
        global_status(r2, "Com_stmt_execute").await,
    );
    for _ in 0..20 {
        let got: Option<u32> = c
            .exec_first("SELECT id FROM app.ryw WHERE id = ?", (5_000_000,))
            .await
            .expect("select");
        assert_eq!(got, Some(5_000_000));
    }
    let (c1, c2) = (
        global_status(r1, "Com_stmt_execute").await,
        global_status(r2, "Com_stmt_execute").await,
    );
    println!(
        "session mode: replicas executed {} of the stale-phase reads, {} reads after catch-up",
        (b1 - a1) + (b2 - a2),
        (c1 - b1) + (c2 - b2)
    );
    assert!(
        (c1 - b1) + (c2 - b2) >= 20,
        "caught-up replicas should serve the session's reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_least_connections_and_offline() {
    let _g = SERIAL.lock().await;
    heal().await;
    setup_table().await;
    let (_, r1, r2) = ports();
    let mut cfg = config();
    cfg.monitor_interval_ms = 60_000; // keep the monitor's own selects out of the counts
    cfg.accounts_refresh_ms = 60_000;
    cfg.servers[1].weight = 1;
    cfg.servers[2].weight = 3;
    let proxy = start_proxy(common::with_admin(cfg)).await;
    // The monitor's first round and the leader lock's start-up queries
    // must not land inside the counts (CI once saw replica1 at 104).
    common::wait_leader(&proxy).await;
    let mut c = proxy.app_conn().await;
    let (a1, a2) = (
        global_status(r1, "Com_select").await,
        global_status(r2, "Com_select").await,
    );
    for _ in 0..400 {
        c.query_drop("SELECT v FROM app.lagt WHERE id = 1")
            .await
            .expect("read");
    }
    let (b1, b2) = (
        global_status(r1, "Com_select").await,
        global_status(r2, "Com_select").await,
    );
    println!("weights 1:3 → replica1 {} replica2 {}", b1 - a1, b2 - a2);
    // ±2 for the counter reads themselves.
    assert!((b1 - a1).abs_diff(100) <= 3, "replica1: {}", b1 - a1);
    assert!((b2 - a2).abs_diff(300) <= 3, "replica2: {}", b2 - a2);

    common::admin(&proxy, "SET SERVER replica2 OFFLINE")
        .await
        .expect("offline");
    let (a1, a2) = (
        global_status(r1, "Com_select").await,
        global_status(r2, "Com_select").await,
    );
    for _ in 0..100 {
        c.query_drop("SELECT v FROM app.lagt WHERE id = 1")
            .await
            .expect("read");
    }
    let (b1, b2) = (
        global_status(r1, "Com_select").await,
        global_status(r2, "Com_select").await,
    );
    assert!(b2 - a2 <= 2, "OFFLINE replica2 got reads: {}", b2 - a2);
    assert!(
        b1 - a1 >= 100,
        "replica1 should take all reads: {}",
        b1 - a1
    );
    common::admin(&proxy, "SET SERVER replica2 ONLINE")
        .await
        .expect("online");
    let err = common::admin(&proxy, "SET SERVER nosuch OFFLINE")
        .await
        .expect_err("unknown server");
    assert!(err.contains("unknown server"), "{err}");

    let mut lc = config();
    lc.balance = rwproxy::config::Balance::LeastConnections;
    lc.monitor_interval_ms = 60_000;
    lc.accounts_refresh_ms = 60_000;
    let proxy = start_proxy(lc).await;
    // A long read holds replica1 or replica2; the other gets the short ones.
    let mut slow = proxy.app_conn().await;
    let hold = tokio::spawn(async move {
        let _: Option<i64> = slow.query_first("SELECT SLEEP(2)").await.expect("sleep");
        slow
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a1, a2) = (
        global_status(r1, "Com_select").await,
        global_status(r2, "Com_select").await,
    );
    let mut c = proxy.app_conn().await;
    for _ in 0..30 {
        c.query_drop("SELECT v FROM app.lagt WHERE id = 1")
            .await
            .expect("read");
    }
    let (b1, b2) = (
        global_status(r1, "Com_select").await,
        global_status(r2, "Com_select").await,
    );
    let _ = hold.await;
    println!(
        "least_connections with one busy replica: replica1 +{} replica2 +{}",
        b1 - a1,
        b2 - a2
    );
    assert!(
        (b1 - a1).min(b2 - a2) <= 3,
        "the busy replica should get (almost) nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_server_entry_is_down_and_the_rest_serves() {
    let _g = SERIAL.lock().await;
    heal().await;
    setup_table().await;
    let mut cfg = config();
    let closed = sandbox::free_ports(1)[0];
    cfg.servers.push(rwproxy::config::ServerConfig {
        name: "ghost".into(),
        host: "127.0.0.1".into(),
        port: closed,
        role: rwproxy::config::Role::Replica,
        weight: 1,
        max_replica_lag_ms: None,
        offline: false,
        tls: None,
        compression: Default::default(),
        compression_level: 3,
    });
    let proxy = start_proxy(cfg).await;
    let mut c = proxy.app_conn().await;
    for _ in 0..60 {
        let v: Option<i64> = c
            .query_first("SELECT v FROM app.lagt WHERE id = 1")
            .await
            .expect("read");
        assert_eq!(v, Some(1));
    }
    let s = common::status(&proxy).await;
    assert_eq!(common::server(&s, "ghost")["up"], false, "{s}");
    assert!(
        common::server(&s, "ghost")["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_lag_is_sub_second_and_bounds_reads() {
    let _g = SERIAL.lock().await;
    heal().await;
    setup_table().await;
    let (_, r1, _) = ports();
    let mut cfg = config();
    cfg.heartbeat = true;
    cfg.monitor_interval_ms = 200;
    cfg.max_replica_lag_ms = 1500;
    let proxy = start_proxy(cfg).await;
    // Heartbeat lag is measured in fractions of a second.
    wait_until(
        Duration::from_secs(10),
        "heartbeat lag on both replicas",
        || async {
            let s = common::status(&proxy).await;
            ["replica1", "replica2"].iter().all(|r| {
                common::server(&s, r)["lag_seconds"]
                    .as_f64()
                    .is_some_and(|l| l > 0.0 && l < 1.0)
            })
        },
    )
    .await;
    let s = common::status(&proxy).await;
    println!(
        "heartbeat lag: replica1 {} s, replica2 {} s",
        common::server(&s, "replica1")["lag_seconds"],
        common::server(&s, "replica2")["lag_seconds"]
    );
    // A replica applying 3 s late (threads running, Seconds_Behind_Master
    // small between events) is seen lagging and gets no reads.
    root_exec(r1, "STOP SLAVE").await;
    root_exec(r1, "CHANGE MASTER TO MASTER_DELAY = 3").await;
    root_exec(r1, "START SLAVE").await;
    wait_until(
        Duration::from_secs(15),
        "replica1 lagging by heartbeat",
        || async {
            let s = common::status(&proxy).await;
            common::server(&s, "replica1")["readable"] == false
                && common::server(&s, "replica1")["replication"] == "running"
        },
    )
    .await;
    let before = global_status(r1, "Com_select").await;
    let mut c = proxy.app_conn().await;
    for _ in 0..50 {
        c.query_drop("SELECT v FROM app.lagt WHERE id = 1")
            .await
            .expect("read");
    }
    let after = global_status(r1, "Com_select").await;
    assert!(
        after - before <= 5,
        "lagging replica1 served reads: +{}",
        after - before
    );
    heal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_mysql_service_is_down_with_a_clear_error() {
    let _g = SERIAL.lock().await;
    heal().await;
    setup_table().await;
    // Something that is not MySQL: answers garbage and hangs up.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gport = garbage.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = garbage.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let mut cfg = config();
    cfg.servers.push(rwproxy::config::ServerConfig {
        name: "web".into(),
        host: "127.0.0.1".into(),
        port: gport,
        role: rwproxy::config::Role::Replica,
        weight: 1,
        max_replica_lag_ms: None,
        offline: false,
        tls: None,
        compression: Default::default(),
        compression_level: 3,
    });
    let proxy = start_proxy(cfg).await;
    let mut c = proxy.app_conn().await;
    for _ in 0..40 {
        let v: Option<i64> = c
            .query_first("SELECT v FROM app.lagt WHERE id = 1")
            .await
            .expect("read");
        assert_eq!(v, Some(1));
    }
    let s = common::status(&proxy).await;
    let web = common::server(&s, "web");
    assert_eq!(web["up"], false, "{web}");
    println!("non-MySQL server entry: {}", web["last_error"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_gtids_come_from_session_tracking() {
    // libmariadb (the mariadb CLI) negotiates session tracking: rwproxy then
    // learns each write's GTID from the OK packet and sends no extra
    // `SELECT @@last_gtid` (mysql_async does not negotiate it and gets the
    // query instead).
    let _g = SERIAL.lock().await;
    heal().await;
    let (p, _, _) = ports();
    root_exec(p, "CREATE TABLE IF NOT EXISTS app.trk (id INT PRIMARY KEY)").await;
    root_exec(p, "DELETE FROM app.trk").await;
    let mut cfg = config();
    cfg.consistency = Consistency::Session;
    cfg.monitor_interval_ms = 60_000;
    cfg.accounts_refresh_ms = 60_000;
    let proxy = start_proxy(cfg).await;
    let sql: String = (0..200)
        .map(|i| format!("INSERT INTO app.trk VALUES ({i});"))
        .collect();
    let before = global_status(p, "Com_select").await;
    let port = proxy.addr.port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-uapp",
                "-papp",
                "app",
                "-e",
                &sql,
            ])
            .output()
            .expect("mariadb client")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extra = global_status(p, "Com_select").await - before;
    println!("text SELECTs on the primary for 200 autocommit writes via libmariadb: {extra}");
    // The CLI itself asks `SELECT @@version_comment` etc. a few times.
    assert!(
        extra < 20,
        "write GTIDs should come from session tracking, not queries: {extra}"
    );
}

/// Sum of a status counter over both replicas.
async fn on_replicas(name: &str) -> u64 {
    let (_, r1, r2) = ports();
    global_status(r1, name).await + global_status(r2, name).await
}

/// A prepared write, then a prepared read of it that must see it.
async fn causal_cycle(c: &mut mysql_async::Conn, id: u32) {
    c.exec_drop("INSERT INTO app.causal VALUES (?)", (id,))
        .await
        .expect("insert");
    let got: Option<u32> = c
        .exec_first("SELECT id FROM app.causal WHERE id = ?", (id,))
        .await
        .expect("select");
    assert_eq!(got, Some(id), "prepared read after write {id} was stale");
}

/// Causal reads (`causal_wait_ms`). The monitor polls once a minute here, so
/// its snapshot never shows a replica with the session's last write: without
/// the wait every read after a write would go to the primary. With it, the
/// read first asks a replica to wait for the write's GTID
/// (`MASTER_GTID_WAIT`) and runs there. When the replicas cannot catch up
/// (SQL threads stopped) the wait gives up and the primary answers: the read
/// is never stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_reads_wait_on_a_replica_and_never_read_stale() {
    let _g = SERIAL.lock().await;
    heal().await;
    let (p, r1, r2) = ports();
    root_exec(
        p,
        "CREATE TABLE IF NOT EXISTS app.causal (id INT PRIMARY KEY)",
    )
    .await;
    root_exec(p, "DELETE FROM app.causal").await;
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    let mut cfg = config();
    cfg.consistency = Consistency::Session;
    cfg.causal_wait_ms = 1000;
    cfg.monitor_interval_ms = 60_000;
    cfg.accounts_refresh_ms = 60_000;
    let proxy = start_proxy(cfg).await;
    let mut c = proxy.app_conn().await;
    let n = 50u32;
    // The monitor's first round (its SELECTs on every server) may still be
    // running on a loaded machine: measure only once the primary is quiet.
    let mut last = global_status(p, "Com_select").await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = global_status(p, "Com_select").await;
        if now == last {
            break;
        }
        last = now;
    }

    // Text protocol: each read after a write is served by a replica.
    let primary_before = global_status(p, "Com_select").await;
    let replicas_before = on_replicas("Com_select").await;
    for id in 0..n {
        c.query_drop(format!("INSERT INTO app.causal VALUES ({id})"))
            .await
            .expect("insert");
        let got: Option<u32> = c
            .query_first(format!("SELECT id FROM app.causal WHERE id = {id}"))
            .await
            .expect("select");
        assert_eq!(got, Some(id), "read after write {id} was stale");
    }
    // mysql_async negotiates no session tracking: rwproxy asks the primary
    // `SELECT @@last_gtid` once per write, and nothing else.
    let on_primary = global_status(p, "Com_select").await - primary_before;
    let on_replicas_text = on_replicas("Com_select").await - replicas_before;
    println!(
        "text: {n} write-then-read cycles; primary ran {on_primary} SELECTs, replicas {on_replicas_text} (wait + read)"
    );
    assert_eq!(on_primary, u64::from(n), "reads went to the primary");
    assert_eq!(on_replicas_text, 2 * u64::from(n));

    // Prepared statements: the same.
    let exec_before = on_replicas("Com_stmt_execute").await;
    for id in n..2 * n {
        causal_cycle(&mut c, id).await;
    }
    let exec_on_replicas = on_replicas("Com_stmt_execute").await - exec_before;
    println!("prepared: replicas executed {exec_on_replicas} of {n} reads");
    assert_eq!(exec_on_replicas, u64::from(n));

    // Replicas that cannot apply the write: the wait gives up, the primary
    // answers, nothing stale.
    for r in [r1, r2] {
        root_exec(r, "STOP SLAVE SQL_THREAD").await;
    }
    let primary_before = global_status(p, "Com_stmt_execute").await;
    let t = Instant::now();
    for id in 2 * n..2 * n + 3 {
        causal_cycle(&mut c, id).await;
    }
    let waited = t.elapsed();
    let on_primary = global_status(p, "Com_stmt_execute").await - primary_before;
    for r in [r1, r2] {
        root_exec(r, "START SLAVE SQL_THREAD").await;
    }
    println!(
        "replicas stopped: 3 cycles took {} ms, primary executed {on_primary} statements",
        waited.as_millis()
    );
    assert_eq!(on_primary, 6, "the primary serves writes and the reads");
    assert!(waited >= Duration::from_millis(3000), "{waited:?}: no wait");
    let (_, metrics) = common::http_get(&proxy, "/metrics").await;
    assert!(
        metrics.contains("rwproxy_causal_waits_total{result=\"gave_up\"} 3"),
        "{metrics}"
    );
    heal().await;
}

/// The same fallback and replica-kill scenarios on MySQL 9.7 (issue 15,
/// item 4), on one MySQL sandbox of this test's own (lag-bounded routing
/// and read-your-writes on MySQL: tests/mysql_flavor.rs). The sandbox
/// starts outside the lock; the scenarios take it like the others, so
/// that no other test's timings share the machine with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_no_usable_replica_and_replica_killed_under_load() {
    let sb = tokio::task::spawn_blocking(|| flavor::fresh_mysql(2))
        .await
        .expect("join");
    let _g = SERIAL.lock().await;
    let t = Instant::now();
    setup_table_on(&sb).await;
    no_usable_replica(&sb).await;
    flavor::wait_caught_up(&sb).await;
    replica_killed(&sb).await;
    println!(
        "MySQL: fallback and replica kill in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
