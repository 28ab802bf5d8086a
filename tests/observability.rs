//! Observability and operations (issue: "Observability and operations"):
//! Prometheus counters move by the right amounts, /health and /status,
//! RELOAD (valid and invalid), and graceful shutdown.

mod common;

use std::time::Duration;

use common::sandbox;
use common::{http_get, start_proxy, start_proxy_with_path};
use mysql_async::prelude::*;
use rwproxy::config::Config;

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name_and_labels} not found"))
}

fn config() -> Config {
    let mut c = common::sandbox_config(sandbox::shared());
    c.consistency = rwproxy::config::Consistency::Eventual;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.obs (id INT PRIMARY KEY)",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    let proxy = start_proxy(config()).await;
    let mut c = proxy.app_conn().await;
    // The session counts a statement just after the client has its answer;
    // let the driver's connect-time query be counted before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, before) = http_get(&proxy, "/metrics").await;
    for i in 0..50 {
        let _: Option<i64> = c
            .query_first(format!("SELECT COUNT(*) FROM app.obs WHERE id > {i}"))
            .await
            .expect("read");
    }
    for i in 0..10 {
        c.query_drop(format!("REPLACE INTO app.obs VALUES ({i})"))
            .await
            .expect("write");
    }
    let _ = c.query_drop("SELEKT broken").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, after) = http_get(&proxy, "/metrics").await;
    assert_eq!(status, 200);
    let d = |m: &str| metric(&after, m) - metric(&before, m);
    assert_eq!(d("rwproxy_queries_total{route=\"replica\"}"), 50.0);
    // 10 writes + the unparseable statement.
    assert_eq!(d("rwproxy_queries_total{route=\"primary\"}"), 11.0);
    assert_eq!(d("rwproxy_errors_total{kind=\"server_error\"}"), 1.0);
    assert_eq!(
        d("rwproxy_statement_duration_seconds_count{route=\"replica\"}"),
        50.0
    );
    assert!(d("rwproxy_client_bytes_total{direction=\"in\"}") > 60.0 * 20.0);
    assert!(d("rwproxy_client_bytes_total{direction=\"out\"}") > 0.0);
    assert!(metric(&after, "rwproxy_client_sessions") >= 1.0);
    assert_eq!(
        metric(&after, "rwproxy_server_is_primary{server=\"primary\"}"),
        1.0
    );
    assert_eq!(
        metric(&after, "rwproxy_server_up{server=\"replica1\"}"),
        1.0
    );
    assert!(metric(&after, "rwproxy_replica_lag_seconds{server=\"replica2\"}") >= 0.0);
    assert!(after.contains("# TYPE rwproxy_statement_duration_seconds histogram"));
    let per_server: f64 = ["replica1", "replica2"]
        .iter()
        .map(|s| d(&format!("rwproxy_server_queries_total{{server=\"{s}\"}}")))
        .sum();
    assert_eq!(per_server, 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_status() {
    let proxy = start_proxy(config()).await;
    let (code, body) = http_get(&proxy, "/health").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ok"), "{body}");
    let s = common::status(&proxy).await;
    assert_eq!(s["primary"], "primary");
    assert_eq!(s["servers"].as_array().map(|a| a.len()), Some(3));

    // A topology whose primary is unreachable: 503 with a reason.
    let mut cfg = config();
    cfg.servers[0].port = sandbox::free_ports(1)[0];
    let broken = start_proxy(cfg).await;
    let (code, body) = http_get(&broken, "/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no primary"), "{body}");
    // Liveness is not readiness: the process is alive, so /live answers
    // 200 even with no primary (a liveness probe must not restart a proxy
    // because its servers are down).
    for p in [&proxy, &broken] {
        let (code, body) = http_get(p, "/live").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body.trim(), "ok");
    }
    let (code, _) = http_get(&broken, "/nope").await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_to_new_sessions_and_rejects_bad_files() {
    let sb = sandbox::shared();
    let dir = sandbox::temp_dir();
    let path = dir.join("reload.toml");
    let mut cfg = config();
    cfg.auth = rwproxy::config::AuthMode::Config;
    cfg.users = vec![rwproxy::config::UserConfig {
        name: "app".into(),
        password: Some("app".into()),
        password_hash: None,
        ..Default::default()
    }];
    let write = |c: &Config| {
        std::fs::write(&path, toml::to_string(c).expect("toml")).expect("write config")
    };
    write(&cfg);
    let proxy = start_proxy_with_path(common::with_admin(cfg.clone()), Some(path.clone())).await;
    let mut old = proxy.app_conn().await;

    // RELOAD with a file that names the app user by its hash only, and a
    // replica taken out of rotation.
    let mut next = common::with_admin(cfg.clone());
    next.users = vec![rwproxy::config::UserConfig {
        name: "app".into(),
        password: None,
        password_hash: Some("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3".into()),
        ..Default::default()
    }];
    next.servers[2].weight = 0;
    write(&next);
    let ok = common::admin(&proxy, "RELOAD").await;
    assert!(ok.is_ok(), "{ok:?}");
    // Which server answered is read from the answer itself (`@@port`):
    // other tests of this binary share the sandbox and move its counters.
    let r2 = sb.servers[2].port;
    let mut fresh = proxy.app_conn().await;
    let mut on_r2 = 0;
    for _ in 0..20 {
        let port: Option<u16> = fresh
            .query_first("SELECT @@port")
            .await
            .expect("read after reload");
        if port == Some(r2) {
            on_r2 += 1;
        }
    }
    assert_eq!(
        on_r2, 0,
        "weight 0 after reload: replica2 answered {on_r2} of 20"
    );
    // The old session goes on.
    old.query_drop("SELECT 1")
        .await
        .expect("old session continues");

    // An invalid file is rejected with its error; the old config stays.
    std::fs::write(&path, "listen = 5\n").expect("write");
    let err = common::admin(&proxy, "RELOAD")
        .await
        .expect_err("invalid config");
    assert!(err.contains("rejected") && err.contains("listen"), "{err}");
    let mut again = proxy.app_conn().await;
    again.query_drop("SELECT 1").await.expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_transactions_finish() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.shut (id INT PRIMARY KEY)",
    )
    .await;
    common::root_exec(sb.servers[0].port, "DELETE FROM app.shut").await;
    let proxy = start_proxy(config()).await;
    let mut tx = proxy.app_conn().await;
    tx.query_drop("BEGIN").await.expect("begin");
    tx.query_drop("INSERT INTO app.shut VALUES (1)")
        .await
        .expect("insert");
    proxy.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New clients are refused once the listener is closed.
    assert!(
        mysql_async::Conn::new(proxy.app_opts()).await.is_err(),
        "listener should be closed"
    );
    // The open transaction may still finish.
    tx.query_drop("INSERT INTO app.shut VALUES (2)")
        .await
        .expect("insert during drain");
    tx.query_drop("COMMIT").await.expect("commit during drain");
    // After the commit the session is closed by the proxy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tx.query_drop("SELECT 1").await.is_err(),
        "session should be closed after its transaction"
    );
    let mut direct = mysql_async::Conn::new(sandbox::root_opts(sb.servers[0].port))
        .await
        .expect("direct");
    let n: Option<i64> = direct
        .query_first("SELECT COUNT(*) FROM app.shut")
        .await
        .expect("count");
    assert_eq!(n, Some(2), "both rows committed");
}

/// A transaction still open when the grace period ends is closed: its
/// session thread stops, the client's connection drops, the server rolls
/// the transaction back (its row lock is released), and `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_left_after_the_grace_period() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.shut_late (id INT PRIMARY KEY)",
    )
    .await;
    common::root_exec(sb.servers[0].port, "DELETE FROM app.shut_late").await;
    let mut cfg = config();
    cfg.shutdown_timeout_ms = 500;
    let mut proxy = start_proxy(cfg).await;
    let mut tx = proxy.app_conn().await;
    tx.query_drop("BEGIN").await.expect("begin");
    tx.query_drop("INSERT INTO app.shut_late VALUES (1)")
        .await
        .expect("insert");
    let t = std::time::Instant::now();
    proxy.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), &mut proxy.task)
        .await
        .expect("rwproxy stops within the grace period plus a little")
        .expect("proxy task");
    let took = t.elapsed();
    println!(
        "rwproxy stopped {} ms after the shutdown signal",
        took.as_millis()
    );
    assert!(
        took >= Duration::from_millis(500),
        "stopped after {took:?}, before the grace period ended"
    );
    assert!(
        tx.query_drop("COMMIT").await.is_err(),
        "the session should have been closed"
    );
    let mut direct = mysql_async::Conn::new(sandbox::root_opts(sb.servers[0].port))
        .await
        .expect("direct");
    // The row lock of the unfinished transaction is gone: had its server
    // connection stayed open, this insert would wait out its 2 s and fail.
    direct
        .query_drop("SET SESSION innodb_lock_wait_timeout = 2")
        .await
        .expect("set");
    direct
        .query_drop("INSERT INTO app.shut_late VALUES (1)")
        .await
        .expect("the unfinished transaction was rolled back, its lock released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_group_statements_and_stay_bounded() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.dig (id INT PRIMARY KEY, v INT)",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    let mut cfg = config();
    cfg.digest_capacity = 50;
    let proxy = start_proxy(common::with_admin(cfg)).await;
    let mut c = proxy.app_conn().await;
    for i in 0..30 {
        c.query_drop(format!("SELECT v FROM app.dig WHERE id = {i}"))
            .await
            .expect("read");
        c.query_drop(format!(
            "SELECT v FROM app.dig WHERE id IN ({i}, {}, {})",
            i + 1,
            i + 2
        ))
        .await
        .expect("in");
    }
    for i in 0..5 {
        c.exec_drop("REPLACE INTO app.dig VALUES (?, ?)", (i, i))
            .await
            .expect("prepared write");
    }
    // Digests are recorded just after the client has its answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = common::admin(&proxy, "SHOW DIGESTS LIMIT 10")
        .await
        .expect("digests");
    let find = |needle: &str| {
        rows.iter()
            .find(|r| r[9].contains(needle))
            .unwrap_or_else(|| panic!("no digest containing {needle:?} in {rows:?}"))
    };
    let point = find("WHERE id = ?");
    assert_eq!(point[1], "30", "{point:?}");
    assert_eq!(point[8], "30", "reads ran on replicas: {point:?}");
    let inlist = find("IN (...)");
    assert_eq!(inlist[1], "30", "{inlist:?}");
    let write = find("REPLACE INTO");
    assert_eq!(
        (write[1].as_str(), write[7].as_str()),
        ("5", "5"),
        "{write:?}"
    );
    // Many distinct statements: the table stays within its cap.
    for i in 0..200 {
        c.query_drop(format!("SELECT {i} AS c{i}"))
            .await
            .expect("distinct");
    }
    let (_, body) = http_get(&proxy, "/digests").await;
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    let n = list.as_array().map(|a| a.len()).unwrap_or(0);
    assert!(n <= 50, "digest table exceeded its cap: {n}");
    let err = common::admin(&proxy, "SHOW DIGESTS LIMIT x")
        .await
        .expect_err("bad limit");
    assert!(err.contains("must be a number"), "{err}");
}
