//! Reads go where their answer is right (issue 16, item 5), through a real
//! rwproxy in front of the sandbox's primary + 2 replicas, judged by the
//! servers themselves: which server answered (`@@port` evaluated inside
//! the statement, or a stored function returning it), rows each server
//! holds, and global status counters read directly on every server.
//!
//! - a read calling a stored function that writes runs on the primary only
//!   (the replicas get the rows by replication, never a second copy); one
//!   declared `READS SQL DATA`, or listed in `read_only_functions`, runs on
//!   replicas; function DDL through rwproxy is followed at once;
//! - reads of a server's own state (`@@datadir`, `@@global.x` after `SET
//!   GLOBAL`, `information_schema.PROCESSLIST`, `SHOW STATUS`) are the
//!   primary's, while `@@session.x` stays on replicas;
//! - a dropped schema is not replayed (dropped by the session, or by
//!   someone else);
//! - what a `CALL` leaves (user variable, temporary table) is seen by the
//!   session's next reads.

mod common;

use std::time::{Duration, Instant};

use common::sandbox;
use mysql_async::Conn;
use mysql_async::prelude::*;
use rwproxy::config::Config;
use tokio::sync::{Mutex, MutexGuard};

/// These tests change shared server state (`SET GLOBAL`, schemas) and read
/// counters: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

struct Env {
    proxy: common::Proxy,
    primary: u16,
    replicas: [u16; 2],
    _serial: MutexGuard<'static, ()>,
}

async fn env(tweak: impl FnOnce(&mut Config)) -> Env {
    let serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let mut config = common::sandbox_config(sb);
    // Quiet servers: the monitor checks once at start-up.
    config.monitor_interval_ms = 60_000;
    config.accounts_refresh_ms = 60_000;
    tweak(&mut config);
    let proxy = common::start_proxy(config).await;
    common::wait_leader(&proxy).await;
    Env {
        proxy,
        primary: sb.servers[0].port,
        replicas: [sb.servers[1].port, sb.servers[2].port],
        _serial: serial,
    }
}

impl Env {
    /// Runs SQL on the primary as root and waits for both replicas.
    async fn setup(&self, sql: &str) {
        common::root_exec(self.primary, sql).await;
        sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    }

    async fn root(&self) -> Conn {
        Conn::new(self.proxy.opts("root", "root", Some("app")))
            .await
            .expect("root through proxy")
    }

    /// `sql` (whose first column is a port) run until a replica answers or
    /// 10 s pass; the ports seen.
    async fn until_replica(&self, c: &mut Conn, sql: &str) -> Vec<u16> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let port = first_port(c, sql).await;
            seen.push(port);
            if self.replicas.contains(&port) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    }

    /// A counter on every server (primary first).
    async fn counter(&self, name: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for port in [self.primary, self.replicas[0], self.replicas[1]] {
            out.push(sandbox::global_status(port, name).await);
        }
        out
    }
}

/// The first column (a port) of the first row of `sql`.
async fn first_port(c: &mut Conn, sql: &str) -> u16 {
    let row: mysql_async::Row = c
        .query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"));
    row.get::<u16, usize>(0)
        .unwrap_or_else(|| panic!("{sql}: first column is not a port"))
}

/// Rows of `table` on each server, directly (primary first).
async fn rows_everywhere(env: &Env, table: &str) -> Vec<Vec<(u32, u16)>> {
    let mut out = Vec::new();
    for port in [env.primary, env.replicas[0], env.replicas[1]] {
        let mut c = Conn::new(sandbox::root_opts(port)).await.expect("direct");
        let rows: Vec<(u32, u16)> = c
            .query(format!("SELECT id, ran_on FROM {table} ORDER BY id"))
            .await
            .expect("read rows");
        out.push(rows);
        let _ = c.disconnect().await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_calling_a_writing_function_writes_on_the_primary_only() {
    let env = env(|_| {}).await;
    env.setup(
        "CREATE OR REPLACE TABLE app.srt_log (id INT AUTO_INCREMENT PRIMARY KEY, ran_on INT);
         CREATE OR REPLACE FUNCTION app.srt_log_f(x INT) RETURNS INT DETERMINISTIC MODIFIES SQL DATA
         BEGIN INSERT INTO app.srt_log (ran_on) VALUES (@@port); RETURN @@port; END",
    )
    .await;
    // root holds READ_ONLY ADMIN: on a replica the function would write
    // there (the divergence); the app account runs it as its
    // definer, root, too.
    let mut c = env.root().await;
    let mut app = env.proxy.app_conn().await;
    let mut ran = Vec::new();
    for _ in 0..3 {
        ran.push(first_port(&mut c, "SELECT srt_log_f(1)").await);
        ran.push(first_port(&mut app, "SELECT app.srt_log_f(2), 'x'").await);
        let p: Option<u16> = app
            .exec_first("SELECT `srt_log_f`(?)", (3,))
            .await
            .expect("prepared");
        ran.push(p.expect("row"));
    }
    assert!(
        ran.iter().all(|&p| p == env.primary),
        "every call ran on the primary ({}): {ran:?}",
        env.primary
    );
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    let rows = rows_everywhere(&env, "app.srt_log").await;
    assert_eq!(rows[0].len(), 9, "one row per call on the primary");
    assert!(rows[0].iter().all(|r| r.1 == env.primary));
    assert_eq!(
        rows[1], rows[0],
        "replica 1 holds exactly the primary's rows"
    );
    assert_eq!(
        rows[2], rows[0],
        "replica 2 holds exactly the primary's rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_known_not_to_write_run_on_replicas() {
    let env = env(|c| c.read_only_functions = vec!["app.srt_listed".into()]).await;
    env.setup(
        "CREATE OR REPLACE FUNCTION app.srt_reads() RETURNS INT READS SQL DATA RETURN @@port;
         CREATE OR REPLACE FUNCTION app.srt_nosql() RETURNS INT DETERMINISTIC NO SQL RETURN @@port;
         CREATE OR REPLACE FUNCTION app.srt_listed() RETURNS INT DETERMINISTIC CONTAINS SQL RETURN @@port;
         CREATE OR REPLACE FUNCTION app.srt_plain() RETURNS INT DETERMINISTIC CONTAINS SQL RETURN @@port",
    )
    .await;
    let mut c = env.proxy.app_conn().await;
    for sql in [
        "SELECT srt_reads()",
        "SELECT app.srt_nosql()",
        "SELECT srt_listed()",
        "SELECT srt_reads() + 0 * srt_listed()",
    ] {
        let seen = env.until_replica(&mut c, sql).await;
        assert!(
            seen.last().is_some_and(|p| env.replicas.contains(p)),
            "{sql}: a replica answers within 10 s, ports seen {seen:?}"
        );
    }
    // Not declared read-only, not listed: the primary, every time; also
    // next to a read-only one.
    for sql in ["SELECT srt_plain()", "SELECT srt_reads() + 0 * srt_plain()"] {
        for _ in 0..4 {
            assert_eq!(first_port(&mut c, sql).await, env.primary, "{sql}");
        }
    }
    // Redefined to write through rwproxy: trusted no more, at once.
    let mut root = env.root().await;
    root.query_drop(
        "CREATE OR REPLACE FUNCTION app.srt_reads() RETURNS INT DETERMINISTIC MODIFIES SQL DATA RETURN @@port",
    )
    .await
    .expect("redefine");
    for _ in 0..4 {
        assert_eq!(
            first_port(&mut c, "SELECT srt_reads()").await,
            env.primary,
            "a function redefined to write runs on the primary"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_servers_own_state_are_the_primarys() {
    let env = env(|_| {}).await;
    let mut direct = Conn::new(sandbox::root_opts(env.primary))
        .await
        .expect("direct");
    let datadir: String = direct
        .query_first("SELECT @@datadir")
        .await
        .expect("datadir")
        .expect("row");
    let mut c = env.root().await;
    for _ in 0..4 {
        let (d, port): (String, u16) = c
            .query_first("SELECT @@datadir, @@port")
            .await
            .expect("datadir")
            .expect("row");
        assert_eq!((d.as_str(), port), (datadir.as_str(), env.primary));
        let (_, port): (u64, u16) = c
            .query_first("SELECT @@hostname IS NOT NULL, @@port")
            .await
            .expect("hostname")
            .expect("row");
        assert_eq!(port, env.primary, "@@hostname");
        let port = first_port(
            &mut c,
            "SELECT @@port FROM information_schema.PROCESSLIST LIMIT 1",
        )
        .await;
        assert_eq!(port, env.primary, "information_schema.PROCESSLIST");
        let port = first_port(
            &mut c,
            "SELECT @@port, (SELECT COUNT(*) FROM performance_schema.setup_actors)",
        )
        .await;
        assert_eq!(port, env.primary, "performance_schema");
    }
    // A global changed through rwproxy is read back as the primary has it.
    let before: u32 = direct
        .query_first("SELECT @@global.div_precision_increment")
        .await
        .expect("read")
        .expect("row");
    c.query_drop("SET GLOBAL div_precision_increment = 9")
        .await
        .expect("set global");
    let mut answers = Vec::new();
    for _ in 0..4 {
        let row: (u32, u16) = c
            .query_first("SELECT @@global.div_precision_increment, @@port")
            .await
            .expect("read global")
            .expect("row");
        answers.push(row);
    }
    // Through rwproxy, which makes it on the replicas too, as the SET.
    c.query_drop(format!("SET GLOBAL div_precision_increment = {before}"))
        .await
        .expect("restore");
    assert!(
        answers.iter().all(|&a| a == (9, env.primary)),
        "@@global after SET GLOBAL: {answers:?}"
    );
    // SHOW STATUS: the primary's counter moves, the replicas' do not
    // (each server's own read of the counter counts once).
    let before = env.counter("Com_show_status").await;
    for _ in 0..4 {
        c.query_drop("SHOW STATUS LIKE 'Uptime'")
            .await
            .expect("show");
    }
    let after = env.counter("Com_show_status").await;
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(delta, vec![5, 1, 1], "Com_show_status (primary, replicas)");
    // The session's own values stay readable anywhere.
    let seen = env
        .until_replica(&mut c, "SELECT @@port, @@session.sql_mode")
        .await;
    assert!(
        seen.last().is_some_and(|p| env.replicas.contains(p)),
        "@@session.sql_mode on a replica: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_schema_is_not_replayed() {
    // Eventual: the session's own DDL must not keep its reads on the
    // primary (the monitor, quiet here, would not see the replicas catch up).
    let env = env(|c| c.consistency = rwproxy::config::Consistency::Eventual).await;
    // Directly: after USE d; DROP DATABASE d the session has no schema
    // and goes on.
    let mut direct = Conn::new(sandbox::root_opts(env.primary))
        .await
        .expect("direct");
    direct
        .query_drop("CREATE DATABASE srt_gone; USE srt_gone; DROP DATABASE srt_gone")
        .await
        .expect("direct drop");
    let db: Option<Option<String>> = direct.query_first("SELECT DATABASE()").await.expect("db");
    assert_eq!(db, Some(None), "directly");

    let mut c = env.root().await;
    c.query_drop("CREATE DATABASE srt_gone")
        .await
        .expect("create");
    c.query_drop("USE srt_gone").await.expect("use");
    // A replica's connection gets the schema selected first.
    let seen = env.until_replica(&mut c, "SELECT @@port").await;
    assert!(
        seen.last().is_some_and(|p| env.replicas.contains(p)),
        "{seen:?}"
    );
    c.query_drop("DROP DATABASE srt_gone").await.expect("drop");
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    for _ in 0..6 {
        let one: Option<u8> = c
            .query_first("SELECT 1")
            .await
            .expect("SELECT 1 after drop");
        assert_eq!(one, Some(1));
        let db: Option<Option<String>> = c.query_first("SELECT DATABASE()").await.expect("db");
        assert_eq!(db, Some(None), "no schema after dropping it");
    }

    // Dropped by someone else: directly the session keeps working for
    // statements that need no schema.
    let mut other = env.root().await;
    other
        .query_drop("CREATE DATABASE srt_other")
        .await
        .expect("create");
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    let mut direct2 = Conn::new(sandbox::root_opts(env.replicas[0]))
        .await
        .expect("direct replica");
    direct2.query_drop("USE srt_other").await.expect("use");
    other.query_drop("USE srt_other").await.expect("use");
    common::root_exec(env.primary, "DROP DATABASE srt_other").await;
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    let one: Option<u8> = direct2.query_first("SELECT 1").await.expect("direct");
    assert_eq!(one, Some(1), "directly");
    let mut ports = Vec::new();
    for _ in 0..6 {
        let port = first_port(&mut other, "SELECT @@port").await;
        ports.push(port);
    }
    assert!(
        ports.iter().any(|p| env.replicas.contains(p)),
        "reads still spread to replicas: {ports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_call_leaves_is_seen_by_the_next_reads() {
    let env = env(|_| {}).await;
    env.setup(
        "CREATE OR REPLACE PROCEDURE app.srt_proc()
         BEGIN
           SET @srt_v = 42;
           CREATE TEMPORARY TABLE srt_tmp (a INT);
           INSERT INTO srt_tmp VALUES (7);
         END",
    )
    .await;
    // Directly.
    let mut direct = Conn::new(sandbox::app_opts(env.primary))
        .await
        .expect("direct");
    direct.query_drop("CALL srt_proc()").await.expect("call");
    let want: Option<(u32, u32)> = direct
        .query_first("SELECT @srt_v, (SELECT a FROM srt_tmp)")
        .await
        .expect("direct read");
    assert_eq!(want, Some((42, 7)));

    let mut c = env.proxy.app_conn().await;
    c.query_drop("CALL srt_proc()").await.expect("call");
    for _ in 0..4 {
        let v: Option<Option<u32>> = c.query_first("SELECT @srt_v").await.expect("@srt_v");
        assert_eq!(v, Some(Some(42)), "the user variable the procedure set");
        let a: Option<u32> = c.query_first("SELECT a FROM srt_tmp").await.expect("tmp");
        assert_eq!(a, Some(7), "the temporary table the procedure created");
    }
}
