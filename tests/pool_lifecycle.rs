//! A fresh server session per client session, and a primary that survives
//! leftover replication metadata (issue 16, items 4 and 7). Each test
//! compares what a client sees through rwproxy with what it sees directly
//! against the server, and reads the servers' own counters
//! (`Aborted_clients`, the process list, `IS_FREE_LOCK`) rather than
//! rwproxy's claims.

mod common;

use std::time::Duration;

use common::sandbox;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use rwproxy::config::{Config, PoolMode};
use tokio::sync::Mutex;

/// Tests here read global counters and accounts of the shared servers.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

async fn root(port: u16) -> Conn {
    Conn::new(sandbox::root_opts(port)).await.expect("root")
}

/// Creates (or re-creates) `user` with password `pw` on the shared
/// primary and waits until the replicas have it.
async fn make_user(user: &str, grants: &str, option: &str) {
    let sb = sandbox::shared();
    let mut r = root(sb.servers[0].port).await;
    r.query_drop(format!("DROP USER IF EXISTS {user}@'%'"))
        .await
        .expect("drop");
    r.query_drop(format!(
        "CREATE USER {user}@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw')"
    ))
    .await
    .expect("create user");
    r.query_drop(format!("GRANT {grants} TO {user}@'%' {option}"))
        .await
        .expect("grant");
    sandbox::wait_replicas_caught_up(sb).await;
}

fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = common::sandbox_config(sandbox::shared());
    tweak(&mut c);
    c
}

/// What a session sees of the state a previous one could leave behind.
const PROBE: &str = "SELECT @@port, @@character_set_client, @@collation_connection, @@sql_mode, \
     @@time_zone, @@autocommit, @u, @q, @@div_precision_increment";

type ProbeRow = (
    u16,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
);

/// Session A leaves every kind of server-session state on its backend
/// connections (replicas included: it reads after setting it); session B
/// of the same user must find none of it on any server, exactly like a
/// fresh direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_sees_the_previous_sessions_state() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let primary = sb.servers[0].port;
    common::root_exec(
        primary,
        "CREATE TABLE IF NOT EXISTS app.pl_rows (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    let proxy = common::start_proxy(config(|c| c.pool_max_idle = 1)).await;
    // A fresh direct session on the primary: the reference.
    let mut direct = Conn::new(sandbox::app_opts(primary)).await.expect("direct");
    let want: ProbeRow = direct
        .query_first(PROBE)
        .await
        .expect("probe")
        .expect("row");
    drop(direct);
    let rows_before: Option<i64> = root(primary)
        .await
        .query_first("SELECT COUNT(*) FROM app.pl_rows")
        .await
        .expect("count");

    // Odd rounds leave no replayable state (no fingerprint on the
    // connection to give it away): only a reset can clear what stays.
    for round in 0..4 {
        let mut a = proxy.app_conn().await;
        let sets: &[&str] = if round % 2 == 0 {
            &[
                "SET NAMES latin1",
                "SET sql_mode = 'ANSI_QUOTES', time_zone = '+05:00', div_precision_increment = 11, @u = 7",
            ]
        } else {
            &[]
        };
        for sql in sets.iter().copied().chain([
            "SELECT 1",
            "SELECT 2",
            "SELECT @q := 5",
            "CREATE TEMPORARY TABLE pl_tmp (a INT)",
            "PREPARE pl_stmt FROM 'SELECT 1'",
            "SELECT GET_LOCK('pl_lock', 0)",
            "SET autocommit = 0",
            "INSERT INTO pl_rows (v) VALUES (1)",
        ]) {
            a.query_drop(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // Vanishes mid-transaction (no COM_QUIT).
        drop(a);
        tokio::time::sleep(Duration::from_millis(200)).await;

        let mut b = proxy.app_conn().await;
        let mut seen = std::collections::BTreeSet::new();
        for hint in [
            "/* rwproxy:primary */",
            "/* rwproxy:replica */",
            "/* rwproxy:replica */",
            "/* rwproxy:replica */",
        ] {
            let got: ProbeRow = b
                .query_first(format!("{hint} {PROBE}"))
                .await
                .expect("probe")
                .expect("row");
            seen.insert(got.0);
            assert_eq!(
                (got.1, got.2, got.3, got.4, got.5, got.6, got.7, got.8),
                (
                    want.1.clone(),
                    want.2.clone(),
                    want.3.clone(),
                    want.4.clone(),
                    want.5,
                    want.6,
                    want.7,
                    want.8
                ),
                "round {round}: server {} shows the previous session's state",
                got.0
            );
        }
        assert!(seen.len() >= 2, "probes reached only {seen:?}");
        let tmp = b.query_drop("SELECT * FROM pl_tmp").await;
        assert_eq!(
            tmp.as_ref().err().and_then(code),
            Some(1146),
            "temporary table leaked: {tmp:?}"
        );
        let stmt = b.query_drop("EXECUTE pl_stmt").await;
        assert_eq!(
            stmt.as_ref().err().and_then(code),
            Some(1243),
            "prepared statement leaked: {stmt:?}"
        );
        drop(b);
        let mut r = root(primary).await;
        let free: Option<i64> = r
            .query_first("SELECT IS_FREE_LOCK('pl_lock')")
            .await
            .expect("lock");
        assert_eq!(free, Some(1), "GET_LOCK of a gone session is still held");
        let rows: Option<i64> = r
            .query_first("SELECT COUNT(*) FROM app.pl_rows")
            .await
            .expect("count");
        assert_eq!(
            rows, rows_before,
            "the vanished session's transaction was committed"
        );
    }
}

/// After `SET GLOBAL` through rwproxy, new sessions see the new value on
/// the primary, as they would directly (pooled connections logged in
/// before it are reset first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sessions_see_a_set_global_made_through_rwproxy() {
    let _serial = SERIAL.lock().await;
    let primary = sandbox::shared().servers[0].port;
    let proxy = common::start_proxy(config(|_| {})).await;
    make_user("pl_admin", "ALL ON *.*", "").await;
    let admin = || proxy.opts("pl_admin", "pw", Some("app"));
    // Warm the pool: several connections of the user sit idle.
    let mut warm = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::new(admin()).await.expect("connect");
        c.query_drop("/* rwproxy:primary */ SELECT 1")
            .await
            .expect("warm");
        warm.push(c);
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = Conn::new(admin()).await.expect("connect");
    c.query_drop("SET GLOBAL div_precision_increment = 9")
        .await
        .expect("set global");
    drop(c);
    let direct: Option<i64> = Conn::new(sandbox::app_opts(primary))
        .await
        .expect("direct")
        .query_first("SELECT @@div_precision_increment")
        .await
        .expect("direct");
    let mut through = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::new(admin()).await.expect("connect");
        let v: Option<i64> = c
            .query_first("/* rwproxy:primary */ SELECT @@div_precision_increment")
            .await
            .expect("read");
        through.push(v);
        let q: Option<String> = c
            .query_first("/* rwproxy:primary */ SELECT CAST(1/3 AS CHAR)")
            .await
            .expect("divide");
        assert_eq!(q.as_deref(), Some("0.333333333"));
    }
    // Through rwproxy, which makes it on the replicas too, as the SET.
    Conn::new(admin())
        .await
        .expect("connect")
        .query_drop("SET GLOBAL div_precision_increment = 4")
        .await
        .expect("restore");
    assert_eq!(direct, Some(9));
    assert_eq!(through, vec![Some(9); 3], "new sessions saw the old global");
}

/// `SET GLOBAL` through rwproxy reaches the replicas, where a new
/// session's reads land, before the client has its answer; the usual
/// save-and-restore through a user variable keeps them equal; a variable
/// that describes one server's own part (`auto_increment_increment`,
/// `read_only`…) stays the primary's. Read on each server directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_global_reaches_the_replicas() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let proxy = common::start_proxy(config(|_| {})).await;
    common::wait_until(Duration::from_secs(10), "every server up", || async {
        let s = common::status(&proxy).await;
        sb.servers
            .iter()
            .all(|x| common::server(&s, &x.name)["up"] == serde_json::Value::Bool(true))
    })
    .await;
    make_user("pl_admin", "ALL ON *.*", "").await;
    let admin = || proxy.opts("pl_admin", "pw", Some("app"));
    let globals = |name: &'static str| async move {
        let mut v = Vec::new();
        for s in &sb.servers {
            let x: Option<i64> = root(s.port)
                .await
                .query_first(format!("SELECT @@global.{name}"))
                .await
                .expect("read global");
            v.push(x.unwrap_or(-1));
        }
        v
    };
    let dpi = globals("div_precision_increment").await;
    let mut c = Conn::new(admin()).await.expect("connect");
    c.query_drop("SET @save = @@global.div_precision_increment")
        .await
        .expect("save");
    c.query_drop("SET GLOBAL div_precision_increment = 9, auto_increment_increment = 3")
        .await
        .expect("set global");
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut n = Conn::new(admin()).await.expect("connect");
        let q: Option<(String, i64)> = n
            .query_first("SELECT CAST(1/3 AS CHAR), @@port")
            .await
            .expect("divide");
        answers.push(q.expect("a row"));
    }
    let set_dpi = globals("div_precision_increment").await;
    let set_aii = globals("auto_increment_increment").await;
    c.query_drop("SET GLOBAL div_precision_increment = @save, auto_increment_increment = 1")
        .await
        .expect("restore");
    let restored = globals("div_precision_increment").await;
    common::root_exec(
        sb.servers[0].port,
        "SET GLOBAL auto_increment_increment = 1",
    )
    .await;
    let n = sb.servers.len();
    assert_eq!(set_dpi, vec![9; n], "SET GLOBAL did not reach every server");
    assert_eq!(set_aii[0], 3);
    assert_eq!(
        &set_aii[1..],
        &vec![1; n - 1][..],
        "a per-server variable was copied"
    );
    let replica_ports: Vec<i64> = sb.servers[1..].iter().map(|s| i64::from(s.port)).collect();
    assert!(
        answers.iter().any(|(_, port)| replica_ports.contains(port)),
        "no read landed on a replica: {answers:?}"
    );
    for (q, port) in &answers {
        assert_eq!(
            q, "0.333333333",
            "read on port {port} did not see the new global"
        );
    }
    assert_eq!(
        restored, dpi,
        "the restore through @save did not reach every server"
    );
}

/// A pooled connection reset for the next session keeps its schema
/// selected, but MariaDB's `COM_RESET_CONNECTION` sets
/// `character_set_database`/`collation_database` to the server's globals,
/// not to that schema's: a new session logged into a latin1 schema then
/// read its files as utf8mb4 (`LOAD DATA INFILE`, main.outfile_loaddata
/// through rwproxy: 1366). Directly, a login into the schema shows its
/// character set; so must every server a session through rwproxy uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_shows_the_schemas_character_set() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let primary = sb.servers[0].port;
    common::root_exec(
        primary,
        "CREATE DATABASE IF NOT EXISTS pl_latin1 DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    let proxy = common::start_proxy(config(|c| c.pool_max_idle = 1)).await;
    const DB_VARS: &str = "SELECT @@port, @@character_set_database, @@collation_database";
    let mut direct = Conn::new(
        mysql_async::OptsBuilder::from_opts(sandbox::root_opts(primary)).db_name(Some("pl_latin1")),
    )
    .await
    .expect("direct");
    let want: (u16, String, String) = direct
        .query_first(DB_VARS)
        .await
        .expect("direct")
        .expect("row");
    drop(direct);
    let through = || proxy.opts("root", "root", Some("pl_latin1"));
    for round in 0..3 {
        // Leaves unreplayable state on every server it used: its
        // connections are reset when it ends.
        let mut a = Conn::new(through()).await.expect("connect");
        for hint in ["primary", "replica", "replica", "replica"] {
            a.query_drop(format!("/* rwproxy:{hint} */ SELECT @q := 5"))
                .await
                .expect("session a");
        }
        drop(a);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut b = Conn::new(through()).await.expect("connect");
        for hint in ["primary", "replica", "replica", "replica"] {
            let got: (u16, String, String) = b
                .query_first(format!("/* rwproxy:{hint} */ {DB_VARS}"))
                .await
                .expect("probe")
                .expect("row");
            assert_eq!(
                (got.1.as_str(), got.2.as_str()),
                (want.1.as_str(), want.2.as_str()),
                "round {round}: server {} shows the server's default instead of the schema's",
                got.0
            );
        }
    }
}

/// The primary's backend thread ids of `user` (from the server's own
/// process list).
async fn threads_of(port: u16, user: &str) -> Vec<u64> {
    root(port)
        .await
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
        ))
        .await
        .expect("processlist")
}

/// Pooled connections nobody uses are closed after `pool_idle_timeout_ms`
/// (default configuration: 5 s): the primary's process list is back to
/// what the clients hold within seconds of their leaving, as it would be
/// directly (MariaDB's own `wait_until_count_sessions.inc` waits for
/// exactly that, at most 10 s). Counted by the server, for a user of its
/// own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_pooled_connections_are_closed() {
    let _serial = SERIAL.lock().await;
    let primary = sandbox::shared().servers[0].port;
    make_user("pl_idle", "SELECT ON *.*", "").await;
    let proxy = common::start_proxy(config(|_| {})).await;
    let session = || async {
        let mut c = Conn::new(proxy.opts("pl_idle", "pw", None))
            .await
            .expect("connect");
        c.query_drop("/* rwproxy:primary */ SELECT 1")
            .await
            .expect("select");
        c
    };
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(session().await);
    }
    for c in open {
        c.disconnect().await.expect("disconnect");
    }
    let left = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pooled = threads_of(primary, "pl_idle").await.len();
    assert_eq!(pooled, 4, "the sessions' connections were not pooled");
    loop {
        let now = threads_of(primary, "pl_idle").await;
        if now.is_empty() {
            break;
        }
        assert!(
            left.elapsed() < Duration::from_secs(9),
            "pooled connections still open {:?} after their clients left: {now:?}",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = left.elapsed();
    assert!(
        gone >= Duration::from_secs(4),
        "closed after {gone:?}: before the idle timeout"
    );
    // Reuse within the timeout still works: a new session takes a pooled
    // connection instead of opening one.
    let c = session().await;
    let first = threads_of(primary, "pl_idle").await;
    c.disconnect().await.expect("disconnect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _c = session().await;
    assert_eq!(
        threads_of(primary, "pl_idle").await,
        first,
        "a session within the idle timeout did not reuse the pooled connection"
    );
}

/// A backend connection the server killed never goes back to the pool,
/// and a session whose transaction lived on it is closed as the server
/// would close it: its next statement fails and so does the one after (no
/// silent reconnect that loses the transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_closes_the_session_that_depended_on_it() {
    let _serial = SERIAL.lock().await;
    let primary = sandbox::shared().servers[0].port;
    common::root_exec(
        primary,
        "CREATE TABLE IF NOT EXISTS app.pl_rows (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    )
    .await;
    make_user("pl_kill", "ALL ON app.*", "").await;
    let proxy = common::start_proxy(config(|_| {})).await;
    let opts = || proxy.opts("pl_kill", "pw", Some("app"));

    // 1. Open transaction, backend killed: the session ends.
    let mut c = Conn::new(opts()).await.expect("connect");
    c.query_drop("BEGIN").await.expect("begin");
    c.query_drop("INSERT INTO pl_rows (v) VALUES (42)")
        .await
        .expect("insert");
    let ids = threads_of(primary, "pl_kill").await;
    assert_eq!(ids.len(), 1, "one primary connection: {ids:?}");
    common::root_exec(primary, &format!("KILL {}", ids[0])).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = c.query_drop("INSERT INTO pl_rows (v) VALUES (43)").await;
    assert!(first.is_err(), "a statement after the kill succeeded");
    let second = c.query_drop("COMMIT").await;
    assert!(
        second.is_err(),
        "the session went on after losing its transaction (first error: {first:?})"
    );
    drop(c);
    let lost: Option<i64> = root(primary)
        .await
        .query_first("SELECT COUNT(*) FROM app.pl_rows WHERE v IN (42, 43)")
        .await
        .expect("count");
    assert_eq!(lost, Some(0));

    // 2. No state: the killed connection must not serve the next session.
    for _ in 0..3 {
        let mut c = Conn::new(opts()).await.expect("connect");
        c.query_drop("/* rwproxy:primary */ SELECT 1")
            .await
            .expect("select");
        let ids = threads_of(primary, "pl_kill").await;
        for id in &ids {
            common::root_exec(primary, &format!("KILL {id}")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = c.query_drop("/* rwproxy:primary */ SELECT 1").await;
        drop(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = Conn::new(opts()).await.expect("connect");
        next.query_drop("/* rwproxy:primary */ SELECT 1")
            .await
            .expect("a new session got a connection the server had killed");
        drop(next);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// rwproxy closes its backend connections with COM_QUIT: the servers'
/// `Aborted_clients` does not grow across sessions, pool overflow and a
/// proxy shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_pooled_connections_does_not_abort_them() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let ports: Vec<u16> = sb.servers.iter().map(|s| s.port).collect();
    // The previous test's proxy died with its runtime (no orderly close):
    // wait until the counters are quiet.
    let aborted = || async {
        let mut v = Vec::new();
        for p in &ports {
            v.push(sandbox::global_status(*p, "Aborted_clients").await);
        }
        v
    };
    let mut before = aborted().await;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = aborted().await;
        if now == before {
            break;
        }
        before = now;
    }
    let proxy = common::start_proxy(config(|c| c.pool_max_idle = 1)).await;
    common::wait_leader(&proxy).await;
    let mut open = Vec::new();
    for _ in 0..6 {
        let mut c = proxy.app_conn().await;
        c.query_drop("SELECT 1").await.expect("read");
        c.query_drop("/* rwproxy:primary */ SELECT 1")
            .await
            .expect("primary");
        open.push(c);
    }
    for c in open {
        c.disconnect().await.expect("disconnect");
    }
    let mut proxy = proxy;
    proxy.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), &mut proxy.task)
        .await
        .expect("proxy stops")
        .expect("proxy task");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, p) in ports.iter().enumerate() {
        let after = sandbox::global_status(*p, "Aborted_clients").await;
        assert_eq!(
            after, before[i],
            "server on port {p}: Aborted_clients grew from {} to {after}",
            before[i]
        );
    }
}

/// A dropped account, or one that lost global privileges, through
/// rwproxy: new sessions get what they would get directly (1045, 1142),
/// never a connection pooled under the old account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_or_changed_accounts_cannot_use_pooled_connections() {
    let _serial = SERIAL.lock().await;
    let primary = sandbox::shared().servers[0].port;
    common::root_exec(
        primary,
        "CREATE TABLE IF NOT EXISTS app.pl_rows (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    )
    .await;
    make_user("pl_admin", "ALL ON *.*", "WITH GRANT OPTION").await;
    make_user("pl_gone", "SELECT ON *.*", "").await;
    // Only statements seen by rwproxy and the periodic refresh (far away
    // here) tell it about accounts.
    let proxy = common::start_proxy(config(|c| c.accounts_refresh_ms = 600_000)).await;
    let user = || proxy.opts("pl_gone", "pw", Some("app"));
    let mut admin = Conn::new(proxy.opts("pl_admin", "pw", Some("app")))
        .await
        .expect("admin");
    let use_once = || async {
        let mut c = Conn::new(user()).await?;
        let r: Option<i64> = c
            .query_first("/* rwproxy:primary */ SELECT COUNT(*) FROM app.pl_rows")
            .await?;
        let _ = c.disconnect().await;
        Ok::<_, mysql_async::Error>(r)
    };
    use_once().await.expect("works before");

    // Global SELECT revoked: directly, a new session gets 1142.
    admin
        .query_drop("REVOKE SELECT ON *.* FROM pl_gone@'%'")
        .await
        .expect("revoke");
    let direct_opts: Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(primary)
        .user(Some("pl_gone"))
        .pass(Some("pw"))
        .db_name(Some("app"))
        .prefer_socket(false)
        .into();
    let direct = async {
        let mut c = Conn::new(direct_opts.clone()).await?;
        c.query_drop("SELECT COUNT(*) FROM app.pl_rows").await?;
        Ok::<_, mysql_async::Error>(())
    }
    .await;
    let want = direct.as_ref().err().and_then(code);
    assert!(want.is_some(), "directly: {direct:?}");
    let through = use_once().await;
    assert_eq!(
        through.as_ref().err().and_then(code),
        want,
        "a session of a user without SELECT read through a pooled connection: {through:?}"
    );

    // Dropped: directly, login fails with 1045.
    admin
        .query_drop("GRANT SELECT ON *.* TO pl_gone@'%'")
        .await
        .expect("grant");
    use_once().await.expect("works again");
    admin
        .query_drop("DROP USER pl_gone@'%'")
        .await
        .expect("drop");
    let through = use_once().await;
    assert_eq!(
        through.as_ref().err().and_then(code),
        Some(1045),
        "a dropped user still ran a query: {through:?}"
    );
}

/// The client's own `wait_timeout` holds through rwproxy in every pool
/// mode: an idle session older than it is closed, as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_wait_timeout_closes_an_idle_session() {
    let _serial = SERIAL.lock().await;
    let primary = sandbox::shared().servers[0].port;
    // Directly: the server closes the idle connection.
    let mut d = Conn::new(sandbox::app_opts(primary)).await.expect("direct");
    d.query_drop("SET wait_timeout = 1").await.expect("set");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        d.query_drop("SELECT 1").await.is_err(),
        "direct session outlived its wait_timeout"
    );
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let proxy = common::start_proxy(config(|c| c.pool_mode = mode)).await;
        let mut c = proxy.app_conn().await;
        c.query_drop("SET wait_timeout = 1").await.expect("set");
        c.query_drop("/* rwproxy:primary */ SELECT 1")
            .await
            .expect("select");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let r = c.query_drop("SELECT 1").await;
        assert!(
            r.is_err(),
            "{mode:?}: the session outlived its wait_timeout"
        );
        // A session that keeps talking stays.
        let mut busy = proxy.app_conn().await;
        busy.query_drop("SET wait_timeout = 1").await.expect("set");
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            busy.query_drop("SELECT 1").await.expect("busy session");
        }
    }
}

/// Item 7: `CHANGE MASTER TO` on the primary without starting replication
/// (MariaDB's own `ps_change_master` test) leaves it the primary: writes
/// and session statements go on. With the primary gone, `SET` and `USE`
/// still work on the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_replication_settings_keep_the_primary() {
    let sb = sandbox::fresh(1);
    let primary = sb.servers[0].port;
    let replica = sb.servers[1].port;
    common::root_exec(primary, "CREATE TABLE IF NOT EXISTS app.pl_w (v INT)").await;
    common::root_exec(
        primary,
        &format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_USER='root', MASTER_PORT={replica}"
        ),
    )
    .await;
    let mut cfg = common::sandbox_config(&sb);
    cfg.monitor_interval_ms = 100;
    cfg.down_after = 2;
    let proxy = common::start_proxy(cfg).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = proxy.app_conn().await;
    for sql in [
        "INSERT INTO pl_w VALUES (1)",
        "SET optimizer_switch = 'index_merge=off'",
        "USE app",
    ] {
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let n: Option<i64> = root(primary)
        .await
        .query_first("SELECT COUNT(*) FROM app.pl_w")
        .await
        .expect("count");
    assert_eq!(n, Some(1), "the write did not land on the primary");

    // The primary gone: SET and USE still work (the only replica stopped
    // replicating, so no server is readable), and the state they set is
    // replayed once the primary is back.
    common::root_exec(primary, "STOP SLAVE; RESET SLAVE ALL").await;
    rwproxy_sandbox::kill_server(&sb, 0).expect("kill primary");
    common::wait_until(Duration::from_secs(10), "primary seen down", || async {
        let s = common::status(&proxy).await;
        common::server(&s, &sb.servers[0].name)["up"] == serde_json::Value::Bool(false)
    })
    .await;
    // No connect-time SELECT (nothing could serve it).
    let quiet: Opts = mysql_async::OptsBuilder::from_opts(proxy.app_opts())
        .db_name(None::<String>)
        .max_allowed_packet(Some(64 * 1024 * 1024))
        .wait_timeout(Some(28_800))
        .into();
    let mut c = Conn::new(quiet).await.expect("login without a primary");
    for sql in [
        "SET sql_mode = 'ANSI_QUOTES'",
        "USE app",
        "SET NAMES latin1",
    ] {
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} without a primary: {e}"));
    }
    let w = c.query_drop("INSERT INTO app.pl_w VALUES (2)").await;
    assert!(w.is_err(), "a write without a primary succeeded");
    rwproxy_sandbox::start_server(&sb, 0).expect("restart primary");
    common::wait_until(Duration::from_secs(20), "primary back", || async {
        let s = common::status(&proxy).await;
        common::server(&s, &sb.servers[0].name)["up"] == serde_json::Value::Bool(true)
            && s["primary"] == serde_json::Value::String(sb.servers[0].name.clone())
    })
    .await;
    let got: Option<(u16, String, String, String)> = c
        .query_first(
            "/* rwproxy:primary */ SELECT @@port, @@sql_mode, DATABASE(), @@character_set_client",
        )
        .await
        .expect("read on the primary");
    assert_eq!(
        got,
        Some((primary, "ANSI_QUOTES".into(), "app".into(), "latin1".into()))
    );
}
