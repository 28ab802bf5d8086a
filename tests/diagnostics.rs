//! Diagnostics follow the statement (issue 16, item 3): `SHOW WARNINGS |
//! ERRORS`, `SHOW COUNT(*) …`, `@@warning_count`, `@@error_count`, `GET
//! DIAGNOSTICS`, `ROW_COUNT()`, `FOUND_ROWS()` are answered by the
//! connection that ran the previous statement, and `profiling = 1` keeps
//! the session on one server. Each script runs on a fresh connection
//! directly against the primary and through rwproxy; the answers must be
//! the same. Run under every pool mode (`TEST_POOL_MODE=transaction`).

mod common;

use common::sandbox;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Row};

/// Every answer of `script`, as text: rows, or the error code.
async fn run(opts: Opts, script: &[&str]) -> Vec<String> {
    let mut c = Conn::new(opts).await.expect("connect");
    let mut out = Vec::new();
    for sql in script {
        let r: Result<Vec<Row>, _> = c.query(*sql).await;
        out.push(match r {
            Ok(rows) => {
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|r| r.unwrap().iter().map(|v| v.as_sql(true)).collect())
                    .collect();
                format!("{sql} -> {rows:?}")
            }
            Err(mysql_async::Error::Server(e)) => format!("{sql} -> ERR {}", e.code),
            Err(e) => format!("{sql} -> {e}"),
        });
    }
    let _ = c.disconnect().await;
    out
}

async fn same_answers(script: &[&str]) {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let direct = run(sandbox::app_opts(sb.servers[0].port), script).await;
    let through = run(proxy.app_opts(), script).await;
    println!("direct:  {direct:#?}\nthrough: {through:#?}");
    assert_eq!(through, direct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_follow_the_statement() {
    same_answers(&[
        "SELECT SHA2('x', 1)",
        "SHOW WARNINGS",
        "SHOW COUNT(*) WARNINGS",
        "SELECT @@warning_count, @@session.warning_count",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_follow_the_statement() {
    same_answers(&[
        "SELECT * FROM app.diag_no_such_table",
        "SHOW ERRORS",
        "SHOW COUNT(*) ERRORS",
        "SELECT @@error_count",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_diagnostics_after_a_failed_write() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.diag_w (id INT PRIMARY KEY)",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    same_answers(&[
        "INSERT INTO app.diag_w VALUES (1), (1)",
        "GET DIAGNOSTICS CONDITION 1 @errno = MYSQL_ERRNO, @state = RETURNED_SQLSTATE",
        "SELECT @errno, @state",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_counts_follow_the_statement() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.diag_t (id INT PRIMARY KEY, v INT); \
         INSERT IGNORE INTO app.diag_t VALUES (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    let mut script = vec![
        "SELECT SQL_CALC_FOUND_ROWS id FROM app.diag_t ORDER BY id LIMIT 2",
        "SELECT FOUND_ROWS()",
        "UPDATE app.diag_t SET v = v + 0 WHERE id <= 3",
        "SELECT ROW_COUNT()",
        "DELETE FROM app.diag_t WHERE id = 99",
        "SELECT ROW_COUNT()",
    ];
    // A plain read's FOUND_ROWS(): the read leaves nothing else behind, so
    // the sharing pool modes give its connection back (see README).
    if std::env::var("TEST_POOL_MODE").as_deref() != Ok("transaction") {
        script.extend([
            "SELECT id FROM app.diag_t ORDER BY id LIMIT 2",
            "SELECT FOUND_ROWS()",
        ]);
    }
    same_answers(&script).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiling_keeps_the_session_on_one_server() {
    same_answers(&[
        "SET profiling = 1",
        "SELECT 1",
        "SELECT 2",
        "SELECT COUNT(*) FROM information_schema.PROFILING WHERE QUERY_ID = 2",
        "SELECT Query FROM (SELECT QUERY_ID, MIN(STATE) AS s FROM information_schema.PROFILING GROUP BY QUERY_ID) p \
         JOIN (SELECT 1 AS Query) q WHERE FALSE",
    ])
    .await;
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    for opts in [sandbox::app_opts(sb.servers[0].port), proxy.app_opts()] {
        let mut c = Conn::new(opts).await.expect("connect");
        c.query_drop("SET profiling = 1").await.expect("set");
        c.query_drop("SELECT 1").await.expect("1");
        c.query_drop("SELECT 2").await.expect("2");
        let rows: Vec<Row> = c.query("SHOW PROFILES").await.expect("profiles");
        let queries: Vec<String> = rows
            .into_iter()
            .map(|r| r.get::<String, _>(2).unwrap_or_default())
            .collect();
        assert_eq!(queries, ["SELECT 1", "SELECT 2"], "SHOW PROFILES");
    }
}

/// Without a pool mode that shares connections, the session holds every
/// connection it used: a warning raised on a replica is read there even
/// after a write ran on the primary in between — as directly, where the
/// write's (empty) diagnostics replace the read's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_statement_wins() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.diag_w2 (id INT)",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    same_answers(&[
        "SELECT SHA2('x', 1)",
        "INSERT INTO app.diag_w2 VALUES (1)",
        "SHOW WARNINGS",
        "SELECT @@warning_count",
        "SELECT SHA2('y', 1)",
        "SHOW WARNINGS",
    ])
    .await;
}
