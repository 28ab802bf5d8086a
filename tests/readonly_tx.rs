//! Read-only transactions on replicas (issue 19, item 3): `START
//! TRANSACTION READ ONLY [, WITH CONSISTENT SNAPSHOT]`, `SET TRANSACTION
//! READ ONLY` before `BEGIN`, and a session whose transactions are read
//! only (`SET SESSION TRANSACTION READ ONLY`, `SET SESSION tx_read_only =
//! 1`) run the whole transaction on one replica chosen like a plain read.
//!
//! Evidence comes from the servers: `@@port` inside the statements, and the
//! global counters `Com_begin` / `Com_select` / `Com_commit` / `Com_insert`
//! of every server read directly before and after. Tests run one at a time
//! (`SERIAL`), and their proxies' monitors poll once at start-up unless a
//! test needs the monitor to notice a change.
//!
//! `TEST_POOL_MODE=transaction` runs all of it with connection
//! multiplexing (the replica's connection must then be held for the whole
//! transaction: the snapshot test would see the new row otherwise).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::sandbox;
use common::{root_exec, wait_until};
use mysql_async::Conn;
use mysql_async::prelude::*;
use rwproxy::config::{Config, Consistency, PoolMode, ReplicaFallback};
use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

struct Env {
    proxy: common::Proxy,
    primary: u16,
    replicas: [u16; 2],
    /// Root connections to every server (primary first), opened before
    /// anything is measured.
    direct: Vec<(u16, Conn)>,
    _serial: MutexGuard<'static, ()>,
}

type Counters = HashMap<u16, HashMap<String, i64>>;

const COUNTERS: [&str; 6] = [
    "Com_begin",
    "Com_select",
    "Com_commit",
    "Com_insert",
    "Com_savepoint",
    "Com_rollback_to_savepoint",
];

async fn env(tweak: impl FnOnce(&mut Config)) -> Env {
    let serial = SERIAL.lock().await;
    heal().await;
    let sb = sandbox::shared();
    let primary = sb.servers[0].port;
    let replicas = [sb.servers[1].port, sb.servers[2].port];
    let mut config = common::sandbox_config(sandbox::shared());
    config.monitor_interval_ms = 60_000;
    config.accounts_refresh_ms = 60_000;
    tweak(&mut config);
    let proxy = common::start_proxy(config).await;
    let mut direct = Vec::new();
    for port in [primary, replicas[0], replicas[1]] {
        let c = Conn::new(sandbox::root_opts(port))
            .await
            .expect("direct root connection");
        direct.push((port, c));
    }
    Env {
        proxy,
        primary,
        replicas,
        direct,
        _serial: serial,
    }
}

/// Replication running on both replicas, no delay, caught up.
async fn heal() {
    let sb = sandbox::shared();
    for s in &sb.servers[1..] {
        root_exec(s.port, "STOP SLAVE").await;
        root_exec(s.port, "CHANGE MASTER TO MASTER_DELAY = 0").await;
        root_exec(s.port, "START SLAVE").await;
    }
    sandbox::wait_replicas_caught_up(sb).await;
}

impl Env {
    async fn setup(&mut self, sql: &str) {
        self.direct[0]
            .1
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("setup {sql:?}: {e}"));
        sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    }

    async fn counters(&mut self) -> Counters {
        let list = COUNTERS
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({list})");
        let mut out = HashMap::new();
        for (port, c) in &mut self.direct {
            let rows: Vec<(String, String)> = c.query(&sql).await.expect("show status");
            out.insert(
                *port,
                rows.into_iter()
                    .map(|(k, v)| (k, v.parse().unwrap_or(0)))
                    .collect(),
            );
        }
        out
    }

    async fn conn(&self) -> Conn {
        self.proxy.app_conn().await
    }

    fn all(&self) -> [u16; 3] {
        [self.primary, self.replicas[0], self.replicas[1]]
    }
}

fn delta(before: &Counters, after: &Counters, port: u16, name: &str) -> i64 {
    after[&port][name] - before[&port][name]
}

async fn port_of(c: &mut Conn) -> u16 {
    c.query_first::<u16, _>("SELECT @@port")
        .await
        .expect("SELECT @@port")
        .expect("a row")
}

fn server_err(e: mysql_async::Error) -> (u16, String, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state, s.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Runs one read-only transaction opened by `open` (one or more
/// statements), with reads, a savepoint and a COMMIT; returns the ports
/// that answered the reads (all must be one replica).
async fn ro_transaction(c: &mut Conn, open: &[&str]) -> u16 {
    for sql in open {
        c.query_drop(*sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let mut ports = vec![port_of(c).await];
    c.query_drop("SAVEPOINT sp").await.expect("savepoint");
    ports.push(port_of(c).await);
    let n: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM app.ro_t")
        .await
        .expect("count");
    assert!(n.is_some());
    c.query_drop("ROLLBACK TO SAVEPOINT sp")
        .await
        .expect("rollback to savepoint");
    ports.push(port_of(c).await);
    c.query_drop("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{open:?}: COMMIT after reads on {ports:?}: {e}"));
    ports.dedup();
    assert_eq!(ports.len(), 1, "{open:?}: reads moved: {ports:?}");
    ports[0]
}

/// Each spelling: the BEGIN, every read, the savepoint and the COMMIT run
/// on one replica; the primary sees none of it. After the transaction,
/// the session is back to normal (a read-write transaction on the primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_spelling_runs_the_whole_transaction_on_one_replica() {
    let mut env = env(|_| {}).await;
    env.setup(
        "CREATE TABLE IF NOT EXISTS app.ro_t (id INT AUTO_INCREMENT PRIMARY KEY, v INT);
         INSERT INTO app.ro_t (v) VALUES (1)",
    )
    .await;
    let spellings: &[(&str, &[&str])] = &[
        (
            "START TRANSACTION READ ONLY",
            &["START TRANSACTION READ ONLY"],
        ),
        (
            "START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT",
            &["START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT"],
        ),
        (
            "SET TRANSACTION READ ONLY + BEGIN",
            &["SET TRANSACTION READ ONLY", "BEGIN"],
        ),
        (
            "SET SESSION TRANSACTION READ ONLY + BEGIN",
            &["SET SESSION TRANSACTION READ ONLY", "BEGIN"],
        ),
        (
            "SET SESSION tx_read_only = 1 + START TRANSACTION",
            &["SET SESSION tx_read_only = 1", "START TRANSACTION"],
        ),
    ];
    for (name, open) in spellings {
        let mut c = env.conn().await;
        let before = env.counters().await;
        let mut used = Vec::new();
        const TX: i64 = 4;
        for _ in 0..TX {
            used.push(ro_transaction(&mut c, open).await);
        }
        let after = env.counters().await;
        for port in &used {
            assert!(env.replicas.contains(port), "{name}: ran on {port}");
        }
        let d = |port, n| delta(&before, &after, port, n);
        for n in ["Com_begin", "Com_select", "Com_commit", "Com_savepoint"] {
            assert_eq!(d(env.primary, n), 0, "{name}: {n} on the primary");
        }
        let replica_sum = |n| -> i64 { env.replicas.iter().map(|r| d(*r, n)).sum() };
        assert_eq!(replica_sum("Com_begin"), TX, "{name}: Com_begin");
        assert_eq!(replica_sum("Com_commit"), TX, "{name}: Com_commit");
        assert_eq!(replica_sum("Com_select"), 4 * TX, "{name}: Com_select");
        assert_eq!(replica_sum("Com_savepoint"), TX, "{name}: Com_savepoint");
        assert_eq!(
            replica_sum("Com_rollback_to_savepoint"),
            TX,
            "{name}: Com_rollback_to_savepoint"
        );
        // Each transaction's statements on one server: begins and
        // commits match per replica.
        for r in env.replicas {
            assert_eq!(d(r, "Com_begin"), d(r, "Com_commit"), "{name} on {r}");
        }
        // Afterwards: a one-shot SET TRANSACTION is used up; a session
        // setting stays until turned off.
        if name.starts_with("SET SESSION") {
            let off = if name.contains("tx_read_only") {
                "SET SESSION tx_read_only = 0"
            } else {
                "SET SESSION TRANSACTION READ WRITE"
            };
            c.query_drop(off).await.expect("back to read write");
        }
        // Plain reads still go to replicas.
        let p = port_of(&mut c).await;
        assert!(env.replicas.contains(&p), "{name}: autocommit read on {p}");
        let before = env.counters().await;
        c.query_drop("BEGIN").await.expect("begin");
        assert_eq!(port_of(&mut c).await, env.primary, "{name}: then BEGIN");
        c.query_drop("INSERT INTO app.ro_t (v) VALUES (2)")
            .await
            .unwrap_or_else(|e| panic!("{name}: write after: {e}"));
        c.query_drop("COMMIT").await.expect("commit");
        let after = env.counters().await;
        assert_eq!(delta(&before, &after, env.primary, "Com_begin"), 1);
        assert_eq!(delta(&before, &after, env.primary, "Com_insert"), 1);
    }
}

/// A write inside gets what the server answers directly (ERR 1792,
/// SQLSTATE 25006, same text), and the transaction goes on on its replica.
/// In a read-only session, autocommit writes fail on the primary as they
/// would directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_inside_fails_as_it_does_directly() {
    let mut env = env(|_| {}).await;
    env.setup("CREATE TABLE IF NOT EXISTS app.ro_w (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let write = "INSERT INTO app.ro_w (v) VALUES (1)";
    let mut direct = Conn::new(sandbox::app_opts(env.primary))
        .await
        .expect("direct");
    let mut expected = Vec::new();
    for open in [
        &["START TRANSACTION READ ONLY"][..],
        &["SET TRANSACTION READ ONLY", "BEGIN"][..],
        &["SET TRANSACTION READ ONLY"][..],
        &["SET SESSION tx_read_only = 1"][..],
    ] {
        for sql in open {
            direct.query_drop(*sql).await.expect("direct open");
        }
        expected.push(server_err(direct.query_drop(write).await.unwrap_err()));
        direct.query_drop("ROLLBACK").await.expect("direct end");
        direct
            .query_drop("SET SESSION tx_read_only = 0")
            .await
            .expect("direct reset");
    }
    assert!(
        expected.iter().all(|e| e.0 == 1792 && e.1 == "25006"),
        "direct answers: {expected:?}"
    );
    let mut c = env.conn().await;
    let before = env.counters().await;
    // START TRANSACTION READ ONLY: the write fails, the transaction goes on.
    c.query_drop("START TRANSACTION READ ONLY")
        .await
        .expect("start");
    let on = port_of(&mut c).await;
    assert!(env.replicas.contains(&on));
    let got = server_err(c.query_drop(write).await.unwrap_err());
    assert_eq!(got, expected[0], "write inside START TRANSACTION READ ONLY");
    assert_eq!(
        port_of(&mut c).await,
        on,
        "still on the transaction's replica"
    );
    c.query_drop("COMMIT").await.expect("commit");
    // SET TRANSACTION READ ONLY; BEGIN
    c.query_drop("SET TRANSACTION READ ONLY")
        .await
        .expect("set");
    c.query_drop("BEGIN").await.expect("begin");
    let on = port_of(&mut c).await;
    assert!(env.replicas.contains(&on));
    let got = server_err(c.query_drop(write).await.unwrap_err());
    assert_eq!(
        got, expected[1],
        "write inside SET TRANSACTION READ ONLY; BEGIN"
    );
    c.query_drop("ROLLBACK").await.expect("rollback");
    // SET TRANSACTION READ ONLY, then an autocommit write: refused, as the
    // next transaction (this write) is read only.
    c.query_drop("SET TRANSACTION READ ONLY")
        .await
        .expect("set");
    let got = server_err(c.query_drop(write).await.unwrap_err());
    assert_eq!(
        got, expected[2],
        "autocommit write after SET TRANSACTION READ ONLY"
    );
    c.query_drop("ROLLBACK").await.expect("rollback");
    let after = env.counters().await;
    for p in env.all() {
        assert_eq!(
            delta(&before, &after, p, "Com_insert"),
            0,
            "insert ran on {p}"
        );
    }
    // Read-only session: the autocommit write goes to the primary, which
    // refuses it.
    c.query_drop("SET SESSION tx_read_only = 1")
        .await
        .expect("ro");
    let before = env.counters().await;
    let got = server_err(c.query_drop(write).await.unwrap_err());
    assert_eq!(got, expected[3], "autocommit write in a read-only session");
    let after = env.counters().await;
    assert_eq!(delta(&before, &after, env.primary, "Com_insert"), 1);
    c.query_drop("SET SESSION tx_read_only = 0")
        .await
        .expect("rw");
    c.query_drop(write)
        .await
        .expect("write once read write again");
    // Statements that would leave state on the replica's connection are
    // refused inside (the session could not follow that state). A fresh
    // session: this one just wrote, so its transactions run on the primary
    // until a replica has the write.
    let mut c = env.conn().await;
    c.query_drop("START TRANSACTION READ ONLY")
        .await
        .expect("start");
    assert!(env.replicas.contains(&port_of(&mut c).await));
    let e = server_err(
        c.query_drop("CREATE TEMPORARY TABLE ro_tmp (a INT)")
            .await
            .unwrap_err(),
    );
    assert_eq!((e.0, e.1.as_str()), (1235, "42000"), "{e:?}");
    c.query_drop("COMMIT").await.expect("commit");
}

/// The transaction's snapshot: a row inserted on the primary after the
/// first read inside is not visible inside (although the replica has
/// applied it), and is visible after COMMIT — exactly as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_reads_one_snapshot() {
    let mut env = env(|_| {}).await;
    env.setup(
        "CREATE TABLE IF NOT EXISTS app.ro_s (id INT AUTO_INCREMENT PRIMARY KEY, v INT);
         INSERT INTO app.ro_s (v) VALUES (1)",
    )
    .await;
    let count = "SELECT COUNT(*) FROM app.ro_s";
    for open in [
        "START TRANSACTION READ ONLY",
        "START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT",
    ] {
        // Directly on a replica, then through rwproxy: the same story.
        let direct = Conn::new(sandbox::app_opts(env.replicas[0]))
            .await
            .expect("direct");
        let through = env.conn().await;
        for (who, mut c) in [("direct", direct), ("rwproxy", through)] {
            c.query_drop(open).await.expect("open");
            let first: i64 = c.query_first(count).await.expect("count").expect("row");
            let on = port_of(&mut c).await;
            assert!(env.replicas.contains(&on), "{who}: {on}");
            env.setup("INSERT INTO app.ro_s (v) VALUES (2)").await;
            if who == "rwproxy" {
                // Another session's reads meanwhile, over both replicas:
                // with multiplexing they borrow idle connections, never
                // the one holding this transaction.
                let mut other = env.conn().await;
                for _ in 0..6 {
                    let (in_tx, _port): (u8, u16) = other
                        .query_first("SELECT @@in_transaction, @@port")
                        .await
                        .expect("other session")
                        .expect("row");
                    assert_eq!(in_tx, 0, "another session ran inside the transaction");
                }
                drop(other);
            }
            for _ in 0..3 {
                let inside: i64 = c.query_first(count).await.expect("count").expect("row");
                assert_eq!(inside, first, "{who} {open}: the snapshot holds");
            }
            c.query_drop("COMMIT").await.expect("commit");
            let after: i64 = c.query_first(count).await.expect("count").expect("row");
            assert_eq!(after, first + 1, "{who} {open}: visible after COMMIT");
        }
    }
}

/// A replica whose replication is stopped is not chosen; with none left,
/// the transaction runs on the primary (`replica_fallback = "primary"`) or
/// is refused like a read (`"error"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replicas_are_not_chosen() {
    let mut env = env(|c| c.monitor_interval_ms = 200).await;
    env.setup("CREATE TABLE IF NOT EXISTS app.ro_t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let [r1, r2] = env.replicas;
    root_exec(r1, "STOP SLAVE SQL_THREAD").await;
    let http = env.proxy.http;
    let unreadable = move |names: &'static [&'static str]| {
        move || async move {
            let (_, body) = common::http_get_addr(http, "/status").await;
            let st: serde_json::Value = serde_json::from_str(&body).expect("status json");
            names
                .iter()
                .all(|n| common::server(&st, n)["readable"] == serde_json::Value::Bool(false))
        }
    };
    wait_until(
        Duration::from_secs(10),
        "replica1 not readable",
        unreadable(&["replica1"]),
    )
    .await;
    let mut c = env.conn().await;
    let before = env.counters().await;
    for _ in 0..6 {
        assert_eq!(
            ro_transaction(&mut c, &["START TRANSACTION READ ONLY"]).await,
            r2,
            "only replica2 qualifies"
        );
    }
    let after = env.counters().await;
    assert_eq!(delta(&before, &after, r1, "Com_begin"), 0);
    assert_eq!(delta(&before, &after, r2, "Com_begin"), 6);
    // Neither qualifies: the primary runs it.
    root_exec(r2, "STOP SLAVE SQL_THREAD").await;
    wait_until(
        Duration::from_secs(10),
        "replica2 not readable",
        unreadable(&["replica2"]),
    )
    .await;
    let before = env.counters().await;
    assert_eq!(
        ro_transaction(&mut c, &["START TRANSACTION READ ONLY"]).await,
        env.primary
    );
    let after = env.counters().await;
    assert_eq!(delta(&before, &after, env.primary, "Com_begin"), 1);
    assert_eq!(delta(&before, &after, env.primary, "Com_commit"), 1);
    drop(c);
    // replica_fallback = "error": refused like a plain read.
    let mut config = common::sandbox_config(sandbox::shared());
    config.monitor_interval_ms = 200;
    config.replica_fallback = ReplicaFallback::Error;
    let strict = common::start_proxy(config).await;
    // Connection options that make mysql_async run no read at connect.
    let mut c = Conn::new(sandbox::app_opts(strict.addr.port()))
        .await
        .expect("connect");
    let http = strict.http;
    wait_until(
        Duration::from_secs(10),
        "no replica readable",
        move || async move {
            let (_, body) = common::http_get_addr(http, "/status").await;
            let st: serde_json::Value = serde_json::from_str(&body).expect("status json");
            ["replica1", "replica2"]
                .iter()
                .all(|n| common::server(&st, n)["readable"] == serde_json::Value::Bool(false))
        },
    )
    .await;
    let read = server_err(c.query_drop("SELECT 1").await.unwrap_err());
    let tx = server_err(
        c.query_drop("START TRANSACTION READ ONLY")
            .await
            .unwrap_err(),
    );
    assert_eq!(read.0, 1429);
    assert_eq!(tx, read, "the same answer as a plain read");
    drop(c);
    drop(strict);
    heal().await;
}

/// Read-your-writes: right after a write, a read-only transaction gets a
/// replica that has applied it, or the primary — never a replica that is
/// behind (replica1 here applies events 3 s late, well within the lag
/// bound, so only the session's GTID keeps it out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_own_writes_in_read_only_transactions() {
    let mut env = env(|c| {
        c.monitor_interval_ms = 200;
        c.consistency = Consistency::Session;
    })
    .await;
    env.setup("CREATE TABLE IF NOT EXISTS app.ro_ryw (id INT PRIMARY KEY)")
        .await;
    env.setup("DELETE FROM app.ro_ryw").await;
    let r1 = env.replicas[0];
    root_exec(r1, "STOP SLAVE").await;
    root_exec(r1, "CHANGE MASTER TO MASTER_DELAY = 3").await;
    root_exec(r1, "START SLAVE").await;
    let mut c = env.conn().await;
    let mut on: HashMap<u16, u32> = HashMap::new();
    for id in 0..12u32 {
        c.exec_drop("INSERT INTO app.ro_ryw (id) VALUES (?)", (id,))
            .await
            .expect("insert");
        c.query_drop("START TRANSACTION READ ONLY")
            .await
            .expect("start");
        let got: Option<u32> = c
            .exec_first("SELECT id FROM app.ro_ryw WHERE id = ?", (id,))
            .await
            .expect("select");
        let port = port_of(&mut c).await;
        c.query_drop("COMMIT").await.expect("commit");
        assert_eq!(
            got,
            Some(id),
            "read-only transaction on {port} missed the session's write"
        );
        assert_ne!(port, r1, "the delayed replica was chosen");
        *on.entry(port).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    println!("read-only transactions after a write ran on: {on:?}");
    drop(c);
    heal().await;
}

/// `autocommit = 0` with a read-only transaction stays on the primary (as
/// MaxScale does without `master_accept_reads`): with autocommit off every
/// statement is in a transaction, and rwproxy follows it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_off_keeps_read_only_transactions_on_the_primary() {
    let mut env = env(|_| {}).await;
    let mut c = env.conn().await;
    c.query_drop("SET autocommit = 0").await.expect("ac0");
    let before = env.counters().await;
    c.query_drop("START TRANSACTION READ ONLY")
        .await
        .expect("start");
    assert_eq!(port_of(&mut c).await, env.primary);
    c.query_drop("COMMIT").await.expect("commit");
    let after = env.counters().await;
    assert_eq!(delta(&before, &after, env.primary, "Com_begin"), 1);
    for r in env.replicas {
        assert_eq!(delta(&before, &after, r, "Com_begin"), 0);
    }
    c.query_drop("SET autocommit = 1").await.expect("ac1");
}

/// `pool_mode = "statement"` refuses explicit transactions (ERR 1235),
/// read-only ones too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_pool_mode_refuses_them() {
    let env = env(|c| c.pool_mode = PoolMode::Statement).await;
    let mut c = env.conn().await;
    for sql in ["START TRANSACTION READ ONLY", "BEGIN"] {
        let e = server_err(c.query_drop(sql).await.unwrap_err());
        assert_eq!((e.0, e.1.as_str()), (1235, "42000"), "{sql}");
    }
    let p = port_of(&mut c).await;
    assert!(env.replicas.contains(&p));
}
