//! Routing through a real rwproxy in front of a real primary + 2 replicas:
//! which server runs each kind of statement, and that the session's state
//! follows it there (issue "Core", items 4, 5 and 6).
//!
//! Two kinds of server-side evidence, neither of which the proxy can fake:
//! - `@@port` inside the statement: the answer names the server that ran it.
//! - Global status counters (`Com_select`, `Com_stmt_execute`, …) read
//!   directly from each server before and after. To keep them exact, every
//!   test here runs alone (the `SERIAL` lock) and its proxy's monitor polls
//!   only once, at start-up (`monitor_interval_ms = 60000`, and likewise
//!   `accounts_refresh_ms`), so nothing but the test's own statements moves
//!   the counters.

mod common;

use std::collections::HashMap;

use common::sandbox;
use mysql_async::Conn;
use mysql_async::prelude::*;
use rwproxy::config::{Config, Consistency};
use tokio::sync::{Mutex, MutexGuard};

/// Counter-based tests must not overlap (they share the sandbox's servers).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// One test's world: the shared sandbox, its own proxy, and direct root
/// connections to every server for reading counters.
struct Env {
    proxy: common::Proxy,
    primary: u16,
    replicas: [u16; 2],
    /// Root connections, one per server (primary first), opened before any
    /// measurement so their own connect-time queries are not counted.
    direct: Vec<(u16, Conn)>,
    _serial: MutexGuard<'static, ()>,
}

async fn env(tweak: impl FnOnce(&mut Config)) -> Env {
    let serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let primary = sb.servers[0].port;
    let replicas = [sb.servers[1].port, sb.servers[2].port];
    let mut config = common::sandbox_config(sb);
    // The monitor checks once at start-up and then stays quiet for the
    // whole test, so it does not move the counters we measure.
    config.monitor_interval_ms = 60_000;
    // Likewise the accounts refresh, a query on the primary.
    config.accounts_refresh_ms = 60_000;
    tweak(&mut config);
    let proxy = common::start_proxy(config).await;
    // The leader task's first round connects to every server: let it end
    // before anything is measured.
    common::wait_leader(&proxy).await;
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

/// Global status counters of every server, by port.
type Counters = HashMap<u16, HashMap<String, u64>>;

impl Env {
    /// Runs setup SQL on the primary as root and waits until both replicas
    /// have applied it.
    async fn setup(&mut self, sql: &str) {
        self.direct[0]
            .1
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("setup {sql:?}: {e}"));
        sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    }

    async fn counters(&mut self, names: &[&str]) -> Counters {
        let list = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({list})");
        let mut out = HashMap::new();
        for (port, c) in &mut self.direct {
            let rows: Vec<(String, String)> = c.query(&sql).await.expect("show status");
            let map = rows
                .into_iter()
                .map(|(k, v)| (k, v.parse::<u64>().unwrap_or(0)))
                .collect();
            out.insert(*port, map);
        }
        out
    }

    /// `after - before` of one counter on one server.
    fn delta(before: &Counters, after: &Counters, port: u16, name: &str) -> i64 {
        let get = |c: &Counters| c[&port].get(name).copied().unwrap_or(0) as i64;
        get(after) - get(before)
    }

    /// Runs `sql` (which the primary must refuse with a syntax error) and
    /// returns each attempt's `Questions` deltas (primary, replicas…) until
    /// one shows exactly the statement on the primary: (2, 1, 1), counting
    /// each server's own counter reads. Anything else landing in the window
    /// (a proxy task under a loaded machine) only adds, so the statement is
    /// measured again, up to 5 times; one that reached a replica never
    /// gives (2, 1, 1).
    async fn syntax_error_window(&mut self, c: &mut Conn, sql: &str) -> Vec<Vec<i64>> {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = self.counters(&["Questions"]).await;
            let e = c.query_drop(sql).await.expect_err("syntax error");
            let after = self.counters(&["Questions"]).await;
            let (code, state, msg) = server_err(e);
            assert_eq!((code, state.as_str()), (1064, "42000"), "{sql}: {msg}");
            let deltas: Vec<i64> = std::iter::once(self.primary)
                .chain(self.replicas.iter().copied())
                .map(|port| Env::delta(&before, &after, port, "Questions"))
                .collect();
            let quiet = deltas == [2, 1, 1];
            seen.push(deltas);
            if quiet {
                break;
            }
        }
        seen
    }

    fn is_replica(&self, port: u16) -> bool {
        self.replicas.contains(&port)
    }

    async fn conn(&self) -> Conn {
        self.proxy.app_conn().await
    }
}

/// The server that ran `SELECT @@port` (plus `extra` columns ignored).
async fn port_of(conn: &mut Conn, sql: &str) -> u16 {
    conn.query_first::<u16, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

fn server_err(e: mysql_async::Error) -> (u16, String, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state, s.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// `balance = "session"`: each session reads from one replica, and the
/// sessions are spread over the replicas; prepared executions follow the
/// same rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_balance_keeps_each_session_on_one_replica() {
    let mut env = env(|c| c.balance = rwproxy::config::Balance::Session).await;
    let mut conns = Vec::new();
    for _ in 0..6 {
        conns.push(env.conn().await);
    }
    const N: usize = 10;
    let before = env.counters(&["Com_select", "Com_stmt_execute"]).await;
    let mut sessions_on: HashMap<u16, usize> = HashMap::new();
    for (k, c) in conns.iter_mut().enumerate() {
        let mut ports = Vec::new();
        for _ in 0..N {
            ports.push(port_of(c, "SELECT @@port").await);
        }
        let stmt = c.prep("SELECT @@port + ?").await.expect("prepare");
        for _ in 0..N {
            let p: Option<u32> = c.exec_first(&stmt, (0,)).await.expect("execute");
            ports.push(p.expect("row") as u16);
        }
        ports.dedup();
        assert_eq!(
            ports.len(),
            1,
            "session {k} moved between servers: {ports:?}"
        );
        assert!(
            env.is_replica(ports[0]),
            "session {k} read from {}",
            ports[0]
        );
        *sessions_on.entry(ports[0]).or_default() += 1;
    }
    assert_eq!(
        env.replicas
            .map(|r| sessions_on.get(&r).copied().unwrap_or(0)),
        [3, 3],
        "sessions spread over the replicas: {sessions_on:?}"
    );
    let after = env.counters(&["Com_select", "Com_stmt_execute"]).await;
    assert_eq!(Env::delta(&before, &after, env.primary, "Com_select"), 0);
    assert_eq!(
        Env::delta(&before, &after, env.primary, "Com_stmt_execute"),
        0
    );
    let ran: i64 = env
        .replicas
        .iter()
        .map(|r| Env::delta(&before, &after, *r, "Com_stmt_execute"))
        .sum();
    assert_eq!(ran, (6 * N) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_selects_spread_evenly_over_replicas_and_never_hit_the_primary() {
    let mut env = env(|_| {}).await;
    env.setup(
        "CREATE TABLE IF NOT EXISTS app.rt_even (id INT PRIMARY KEY, v VARCHAR(20));
         REPLACE INTO app.rt_even VALUES (1, 'one'), (2, 'two')",
    )
    .await;
    // Several client connections: the balance is across all sessions.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(env.conn().await);
    }
    const N: usize = 100;
    let before = env.counters(&["Com_select"]).await;
    for i in 0..N {
        let c = &mut conns[i % 4];
        let id = 1 + (i % 2) as u32;
        let v: Option<String> = c
            .query_first(format!("SELECT v FROM rt_even WHERE id = {id}"))
            .await
            .expect("read");
        assert_eq!(v.as_deref(), Some(if id == 1 { "one" } else { "two" }));
    }
    let after = env.counters(&["Com_select"]).await;
    let on_primary = Env::delta(&before, &after, env.primary, "Com_select");
    let on_r1 = Env::delta(&before, &after, env.replicas[0], "Com_select");
    let on_r2 = Env::delta(&before, &after, env.replicas[1], "Com_select");
    println!("Com_select deltas: primary {on_primary}, r1 {on_r1}, r2 {on_r2}");
    assert_eq!(on_primary, 0, "no plain read may reach the primary");
    assert_eq!(on_r1 + on_r2, N as i64, "every read ran on a replica");
    let half = (N / 2) as i64;
    assert!((on_r1 - half).abs() <= 1, "r1 got {on_r1} of {N}");
    assert!((on_r2 - half).abs() <= 1, "r2 got {on_r2} of {N}");

    // The same, seen from the answers themselves.
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    for i in 0..N {
        let c = &mut conns[i % 4];
        *by_port
            .entry(port_of(c, "SELECT @@port").await)
            .or_default() += 1;
    }
    assert_eq!(by_port.get(&env.primary), None, "{by_port:?}");
    for r in env.replicas {
        let n = by_port.get(&r).copied().unwrap_or(0) as i64;
        assert!(
            (n - half).abs() <= 1,
            "replica {r} answered {n}: {by_port:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_ddl_run_on_the_primary() {
    let mut env = env(|_| {}).await;
    env.setup("DROP TABLE IF EXISTS app.rt_w; DROP TABLE IF EXISTS app.rt_w_ddl")
        .await;
    let mut c = env.conn().await;
    let names = [
        "Com_insert",
        "Com_update",
        "Com_delete",
        "Com_replace",
        "Com_create_table",
        "Com_alter_table",
        "Com_drop_table",
        "Questions",
    ];
    let before = env.counters(&names).await;
    let p = env.primary;
    // `@@port` evaluated by whichever server executes the statement is
    // stored in the row: the primary's port proves where it ran.
    for sql in [
        "CREATE TABLE rt_w (id INT PRIMARY KEY, port INT, upd INT)",
        "INSERT INTO rt_w (id, port) VALUES (1, @@port), (2, @@port)",
        "UPDATE rt_w SET upd = @@port WHERE id = 1",
        "REPLACE INTO rt_w (id, port) VALUES (3, @@port)",
        "DELETE FROM rt_w WHERE id = 2",
        "CREATE TABLE rt_w_ddl (a INT)",
        "ALTER TABLE rt_w_ddl ADD COLUMN b INT",
        "DROP TABLE rt_w_ddl",
    ] {
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let after = env.counters(&names).await;
    for name in &names[..7] {
        let want = if *name == "Com_create_table" { 2 } else { 1 };
        assert_eq!(
            Env::delta(&before, &after, p, name),
            want,
            "{name} on the primary"
        );
    }
    // `Questions` counts client statements only (not what the replication
    // applier runs): the replicas saw nothing but our own SHOW STATUS.
    for r in env.replicas {
        assert_eq!(
            Env::delta(&before, &after, r, "Questions"),
            1,
            "a client statement reached replica {r}"
        );
    }
    // For the record: what replication does to the replicas' Com_* counters.
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    let replicated = env.counters(&names).await;
    for name in &names[..7] {
        let per: Vec<String> = env
            .replicas
            .iter()
            .map(|r| format!("{r}: +{}", Env::delta(&before, &replicated, *r, name)))
            .collect();
        println!(
            "{name} after replication: primary +{}, replicas {}",
            Env::delta(&before, &replicated, p, name),
            per.join(", ")
        );
    }
    let rows: Vec<(i32, i32, Option<i32>)> = env.direct[0]
        .1
        .query("SELECT id, port, upd FROM app.rt_w ORDER BY id")
        .await
        .expect("read back");
    assert_eq!(
        rows,
        vec![(1, p as i32, Some(p as i32)), (3, p as i32, None)],
        "rows written by the primary (port {p})"
    );
    // The replicas got them by replication, with the primary's port.
    for r in env.replicas {
        let idx = env.direct.iter().position(|(port, _)| *port == r).unwrap();
        let rows: Vec<(i32, i32, Option<i32>)> = env.direct[idx]
            .1
            .query("SELECT id, port, upd FROM app.rt_w ORDER BY id")
            .await
            .expect("read back on replica");
        assert_eq!(
            rows,
            vec![(1, p as i32, Some(p as i32)), (3, p as i32, None)]
        );
    }
}

/// Read-your-writes learns a write's GTID from the COMMIT's OK packet
/// (session tracking): a transaction that wrote nothing costs the primary
/// no extra statement, and one that wrote is still followed by reads that
/// see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_cost_the_primary_nothing_extra() {
    let mut env = env(|_| {}).await;
    env.setup(
        "CREATE TABLE IF NOT EXISTS app.rt_rot (id INT PRIMARY KEY, v INT);
         REPLACE INTO app.rt_rot VALUES (1, 1)",
    )
    .await;
    let mut c = env.conn().await;
    // First use of the primary (sets up session tracking).
    c.query_drop("BEGIN; SELECT v FROM rt_rot WHERE id = 1; COMMIT")
        .await
        .expect("warm-up");
    const N: i64 = 20;
    let names = ["Com_select", "Com_commit", "Com_begin", "Questions"];
    let before = env.counters(&names).await;
    for _ in 0..N {
        c.query_drop("BEGIN").await.expect("begin");
        let v: Option<i64> = c
            .query_first("SELECT v FROM rt_rot WHERE id = 1")
            .await
            .expect("select");
        assert_eq!(v, Some(1));
        c.query_drop("COMMIT").await.expect("commit");
    }
    let after = env.counters(&names).await;
    let d = |name| Env::delta(&before, &after, env.primary, name);
    assert_eq!(d("Com_begin"), N);
    assert_eq!(d("Com_commit"), N);
    assert_eq!(d("Com_select"), N, "one SELECT per transaction, none extra");
    // Each transaction's three statements, plus the counters query.
    assert_eq!(d("Questions"), 3 * N + 1);
    // The same from the mariadb CLI (libmariadb asks for session tracking,
    // so the GTID would come in the OK packets).
    let before = env.counters(&names).await;
    let script = "BEGIN; SELECT v FROM rt_rot WHERE id = 1; COMMIT; ".repeat(N as usize);
    let out = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            &format!("-P{}", env.proxy.addr.port()),
            "-uapp",
            "-papp",
            "app",
            "-e",
            &script,
        ])
        .output()
        .expect("run the mariadb client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = env.counters(&names).await;
    let d = |name| Env::delta(&before, &after, env.primary, name);
    assert_eq!(d("Com_commit"), N);
    let selects = d("Com_select");
    assert!(
        (N..N + 3).contains(&selects),
        "{selects} SELECTs on the primary for {N} read-only transactions"
    );
    // A transaction that writes: the next read sees it (from a replica
    // that applied it, or the primary).
    for v in 2..5i64 {
        c.query_drop(format!(
            "BEGIN; UPDATE rt_rot SET v = {v} WHERE id = 1; COMMIT"
        ))
        .await
        .expect("write");
        let got: Option<i64> = c
            .query_first("SELECT v FROM rt_rot WHERE id = 1")
            .await
            .expect("read after write");
        assert_eq!(got, Some(v), "read-your-writes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_run_entirely_on_the_primary() {
    // Eventual: the read after the transaction may go to a replica at once.
    let mut env = env(|c| c.consistency = Consistency::Eventual).await;
    env.setup(
        "CREATE TABLE IF NOT EXISTS app.rt_tx (id INT AUTO_INCREMENT PRIMARY KEY, v INT);
         REPLACE INTO app.rt_tx (id, v) VALUES (1, 1)",
    )
    .await;
    let p = env.primary;
    let mut c = env.conn().await;
    assert!(env.is_replica(port_of(&mut c, "SELECT @@port").await));
    let before = env.counters(&["Com_select"]).await;
    c.query_drop("BEGIN").await.expect("begin");
    for _ in 0..4 {
        assert_eq!(
            port_of(&mut c, "SELECT @@port").await,
            p,
            "read inside BEGIN"
        );
    }
    c.query_drop("INSERT INTO rt_tx (v) VALUES (2)")
        .await
        .expect("insert");
    let n: u64 = c
        .query_first("SELECT COUNT(*) FROM rt_tx WHERE v = 2")
        .await
        .expect("count")
        .unwrap();
    assert!(n >= 1, "the transaction sees its own uncommitted row");
    c.query_drop("COMMIT").await.expect("commit");

    // (Read-only transactions run on a replica: tests/readonly_tx.rs.)
    c.query_drop("START TRANSACTION READ WRITE")
        .await
        .expect("start");
    for _ in 0..2 {
        assert_eq!(port_of(&mut c, "SELECT @@port").await, p);
    }
    c.query_drop("ROLLBACK").await.expect("rollback");

    // autocommit = 0: every statement is in a transaction, even after COMMIT.
    c.query_drop("SET autocommit = 0").await.expect("ac0");
    for _ in 0..2 {
        assert_eq!(
            port_of(&mut c, "SELECT @@port").await,
            p,
            "autocommit=0 read"
        );
    }
    c.query_drop("COMMIT").await.expect("commit");
    for _ in 0..2 {
        assert_eq!(
            port_of(&mut c, "SELECT @@port").await,
            p,
            "autocommit=0 after COMMIT"
        );
    }
    let after = env.counters(&["Com_select"]).await;
    for r in env.replicas {
        assert_eq!(
            Env::delta(&before, &after, r, "Com_select"),
            0,
            "no transactional read may reach replica {r}"
        );
    }
    // 4 + 1 + 2 + 2 + 2 reads, all on the primary.
    assert!(Env::delta(&before, &after, p, "Com_select") >= 11);
    c.query_drop("SET autocommit = 1").await.expect("ac1");
    let back = port_of(&mut c, "SELECT @@port").await;
    assert!(
        env.is_replica(back),
        "reads go back to replicas after autocommit=1, got {back}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_reads_select_into_and_call_run_on_the_primary() {
    let mut env = env(|_| {}).await;
    env.setup(
        "CREATE TABLE IF NOT EXISTS app.rt_lock (id INT PRIMARY KEY, v INT);
         REPLACE INTO app.rt_lock VALUES (1, 10);
         CREATE OR REPLACE PROCEDURE app.rt_port_proc() SELECT @@port",
    )
    .await;
    let p = env.primary;
    let mut c = env.conn().await;
    for sql in [
        "SELECT @@port FROM rt_lock WHERE id = 1 FOR UPDATE",
        "SELECT @@port FROM rt_lock WHERE id = 1 LOCK IN SHARE MODE",
        "SELECT @@port FROM rt_lock WHERE id = 1 FOR UPDATE NOWAIT",
    ] {
        for _ in 0..2 {
            assert_eq!(port_of(&mut c, sql).await, p, "{sql}");
        }
    }
    // MariaDB 10.11 has no `FOR SHARE`: the primary answers with its
    // syntax error, and only the primary saw the statement.
    let seen = env
        .syntax_error_window(&mut c, "SELECT v FROM rt_lock WHERE id = 1 FOR SHARE")
        .await;
    assert_eq!(
        seen.last().map(Vec::as_slice),
        Some(&[2i64, 1, 1][..]),
        "Questions deltas (primary, replicas…) per attempt: {seen:?}"
    );

    // SELECT … INTO @x runs on the primary, and the session stays there:
    // @x exists only on that connection.
    c.query_drop("SELECT @@port INTO @x").await.expect("into");
    let (x, at): (Option<u16>, u16) = c
        .query_first("SELECT @x, @@port")
        .await
        .expect("read @x")
        .unwrap();
    assert_eq!((x, at), (Some(p), p));

    let mut c = env.conn().await;
    let ports: Vec<u16> = c.query("CALL rt_port_proc()").await.expect("call");
    assert_eq!(ports, vec![p], "CALL runs on the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreplayable_session_state_keeps_the_session_on_the_primary() {
    let mut env = env(|c| c.consistency = Consistency::Eventual).await;
    env.setup(
        "CREATE TABLE IF NOT EXISTS app.rt_pin (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40));
         REPLACE INTO app.rt_pin (id, v) VALUES (1, 'x')",
    )
    .await;
    let p = env.primary;

    // Each case: a fresh session reads from a replica, runs the statement
    // that creates connection-bound state, then uses that state.
    async fn fresh(env: &Env) -> Conn {
        let mut c = env.conn().await;
        let first = port_of(&mut c, "SELECT @@port").await;
        assert!(
            env.is_replica(first),
            "a fresh session reads from a replica"
        );
        c
    }

    // Temporary table.
    let mut c = fresh(&env).await;
    c.query_drop("CREATE TEMPORARY TABLE rt_tmp (a INT)")
        .await
        .expect("temp");
    c.query_drop("INSERT INTO rt_tmp VALUES (7)")
        .await
        .expect("ins");
    for _ in 0..3 {
        let (a, at): (i32, u16) = c
            .query_first("SELECT a, @@port FROM rt_tmp")
            .await
            .expect("select from temp table")
            .unwrap();
        assert_eq!((a, at), (7, p));
    }
    assert_eq!(
        port_of(&mut c, "SELECT @@port").await,
        p,
        "pinned after temp table"
    );

    // GET_LOCK: the lock belongs to the primary connection, which the
    // session keeps using.
    let mut c = fresh(&env).await;
    let (got, at): (i32, u16) = c
        .query_first("SELECT GET_LOCK('rt_lock', 5), @@port")
        .await
        .expect("get_lock")
        .unwrap();
    assert_eq!((got, at), (1, p));
    for _ in 0..2 {
        let (mine, at): (i32, u16) = c
            .query_first("SELECT IS_USED_LOCK('rt_lock') = CONNECTION_ID(), @@port")
            .await
            .expect("is_used_lock")
            .unwrap();
        assert_eq!((mine, at), (1, p));
    }
    let (rel, _): (i32, u16) = c
        .query_first("SELECT RELEASE_LOCK('rt_lock'), @@port")
        .await
        .expect("release")
        .unwrap();
    assert_eq!(rel, 1, "released by the connection that holds it");

    // LOCK TABLES.
    let mut c = fresh(&env).await;
    c.query_drop("LOCK TABLES rt_pin READ")
        .await
        .expect("lock tables");
    for _ in 0..2 {
        let (v, at): (String, u16) = c
            .query_first("SELECT v, @@port FROM rt_pin WHERE id = 1")
            .await
            .expect("read locked table")
            .unwrap();
        assert_eq!((v.as_str(), at), ("x", p));
    }
    c.query_drop("UNLOCK TABLES").await.expect("unlock");

    // A user variable assigned by a query.
    let mut c = fresh(&env).await;
    let one: Option<i64> = c.query_first("SELECT @x := 1").await.expect("assign");
    assert_eq!(one, Some(1));
    for _ in 0..2 {
        let (x, at): (Option<i64>, u16) = c
            .query_first("SELECT @x, @@port")
            .await
            .expect("read @x")
            .unwrap();
        assert_eq!((x, at), (Some(1), p));
    }

    // SQL-level PREPARE / EXECUTE.
    let mut c = fresh(&env).await;
    c.query_drop("PREPARE s FROM 'SELECT @@port'")
        .await
        .expect("prepare");
    for _ in 0..3 {
        assert_eq!(port_of(&mut c, "EXECUTE s").await, p);
    }
    c.query_drop("DEALLOCATE PREPARE s")
        .await
        .expect("deallocate");

    // INSERT then LAST_INSERT_ID().
    let mut c = fresh(&env).await;
    let tag = format!("lid-{}", std::process::id());
    c.exec_drop("INSERT INTO rt_pin (v) VALUES (?)", (&tag,))
        .await
        .expect("insert");
    let from_ok = c.last_insert_id().expect("OK carries the id");
    let (lid, at): (u64, u16) = c
        .query_first("SELECT LAST_INSERT_ID(), @@port")
        .await
        .expect("last_insert_id")
        .unwrap();
    let real: u64 = env.direct[0]
        .1
        .exec_first("SELECT id FROM app.rt_pin WHERE v = ?", (&tag,))
        .await
        .expect("row on primary")
        .unwrap();
    assert_eq!(
        (lid, at),
        (real, p),
        "LAST_INSERT_ID() on the connection that inserted"
    );
    assert_eq!(from_ok, real);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_sql_gets_the_primarys_syntax_error() {
    let mut env = env(|_| {}).await;
    let mut c = env.conn().await;
    // Warm up so that no connection or state replay happens in the window.
    port_of(&mut c, "SELECT @@port").await;
    port_of(&mut c, "SELECT @@port").await;
    let seen = env.syntax_error_window(&mut c, "SELEKT 1").await;
    assert_eq!(
        seen.last().map(Vec::as_slice),
        Some(&[2i64, 1, 1][..]),
        "Questions deltas (primary, replicas…) per attempt: {seen:?}"
    );
    let e = c.query_drop("SELEKT 1").await.expect_err("syntax error");
    let (_, _, msg) = server_err(e);
    assert!(msg.contains("SELEKT"), "the server's own message: {msg}");
    // The session is still usable.
    assert!(env.is_replica(port_of(&mut c, "SELECT @@port").await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_override_the_routing() {
    let env = env(|_| {}).await;
    let p = env.primary;
    let mut c = env.conn().await;
    for _ in 0..4 {
        assert_eq!(
            port_of(&mut c, "/* rwproxy:primary */ SELECT @@port").await,
            p
        );
    }
    c.query_drop("BEGIN").await.expect("begin");
    assert_eq!(port_of(&mut c, "SELECT @@port").await, p);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(port_of(&mut c, "/* rwproxy:replica */ SELECT @@port").await);
    }
    assert!(
        seen.iter().all(|s| env.is_replica(*s)),
        "replica hint in a transaction: {seen:?}"
    );
    assert_eq!(
        port_of(&mut c, "SELECT @@port").await,
        p,
        "still in the transaction"
    );
    c.query_drop("COMMIT").await.expect("commit");
    // A replica hint never sends a write to a replica.
    c.query_drop("CREATE TABLE IF NOT EXISTS rt_hint (a INT)")
        .await
        .expect("create");
    c.query_drop("/* rwproxy:replica */ INSERT INTO rt_hint VALUES (@@port)")
        .await
        .expect("hinted write still goes to the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_follows_reads_to_the_replicas() {
    let mut env = env(|_| {}).await;
    env.setup(
        // `test` is the other database the sandbox's app account may use.
        "CREATE DATABASE IF NOT EXISTS test;
         CREATE TABLE IF NOT EXISTS test.rt_only_here (id INT PRIMARY KEY, v VARCHAR(20));
         REPLACE INTO test.rt_only_here VALUES (1, 'other-db')",
    )
    .await;
    let mut c = env.conn().await;

    // Reads several times so both replicas get the state replayed.
    c.query_drop("SET time_zone = '+05:00'").await.expect("tz");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let (tz, at): (String, u16) = c
            .query_first("SELECT @@time_zone, @@port")
            .await
            .expect("tz read")
            .unwrap();
        assert_eq!(tz, "+05:00", "served by {at}");
        assert!(env.is_replica(at));
        seen.insert(at);
    }
    assert_eq!(seen.len(), 2, "both replicas served reads");

    c.query_drop("USE test").await.expect("use");
    for _ in 0..4 {
        let (v, at): (String, u16) = c
            .query_first("SELECT v, @@port FROM rt_only_here WHERE id = 1")
            .await
            .expect("unqualified table of the new schema")
            .unwrap();
        assert_eq!(v, "other-db");
        assert!(env.is_replica(at), "served by {at}");
    }
    let db: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("test"));

    c.query_drop("SET NAMES latin1").await.expect("names");
    for _ in 0..4 {
        let (cs, res, at): (String, String, u16) = c
            .query_first("SELECT @@character_set_client, @@character_set_results, @@port")
            .await
            .expect("charset read")
            .unwrap();
        assert_eq!((cs.as_str(), res.as_str()), ("latin1", "latin1"));
        assert!(env.is_replica(at));
    }

    c.query_drop("SET sql_mode = 'ANSI'")
        .await
        .expect("sql_mode");
    for _ in 0..4 {
        // PIPES_AS_CONCAT (part of ANSI) changes what `||` means.
        let (cat, mode, at): (String, String, u16) = c
            .query_first("SELECT 'a' || 'b', @@sql_mode, @@port")
            .await
            .expect("sql_mode read")
            .unwrap();
        assert_eq!(cat, "ab", "ANSI mode on {at}");
        assert!(mode.contains("ANSI"), "{mode}");
        assert!(env.is_replica(at));
    }

    // A user variable set to a literal is replayed too.
    c.query_drop("SET @u = 42").await.expect("set @u");
    for _ in 0..4 {
        let (u, at): (Option<i64>, u16) = c
            .query_first("SELECT @u, @@port")
            .await
            .expect("@u read")
            .unwrap();
        assert_eq!(u, Some(42), "on {at}");
        assert!(env.is_replica(at), "a literal user variable does not pin");
    }
}

/// A `USE` behind a comment (as ORMs and query tags write it) changes the
/// schema of the reads that follow on the replicas too: the classifier
/// and the session read the same tokens (before `router::lex`, the session
/// found no schema name after a leading comment and the replicas stayed in
/// the old schema).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_behind_a_comment_is_followed_on_the_replicas() {
    let mut env = env(|_| {}).await;
    env.setup(
        "CREATE DATABASE IF NOT EXISTS test;
         CREATE TABLE IF NOT EXISTS test.rt_use_comment (id INT PRIMARY KEY, v VARCHAR(20));
         REPLACE INTO test.rt_use_comment VALUES (1, 'in-test')",
    )
    .await;
    let mut c = env.conn().await;
    let before: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_ne!(before.as_deref(), Some("test"));
    c.query_drop("/* app:orders */ USE `test` -- switch")
        .await
        .expect("use behind comments");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let (v, db, at): (String, String, u16) = c
            .query_first("SELECT v, DATABASE(), @@port FROM rt_use_comment WHERE id = 1")
            .await
            .expect("unqualified table of the new schema")
            .unwrap();
        assert_eq!((v.as_str(), db.as_str()), ("in-test", "test"), "on {at}");
        assert!(env.is_replica(at), "served by {at}");
        seen.insert(at);
    }
    assert_eq!(seen.len(), 2, "both replicas served reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_spread_over_replicas_and_keep_their_ids() {
    let mut env = env(|_| {}).await;
    env.setup(
        "CREATE TABLE IF NOT EXISTS app.rt_ps (id INT PRIMARY KEY, v VARCHAR(20));
         REPLACE INTO app.rt_ps SELECT seq, CONCAT('v', seq) FROM app.seq_1_to_10;
         CREATE TABLE IF NOT EXISTS app.rt_ps_w (id INT PRIMARY KEY, v INT);
         TRUNCATE app.rt_ps_w",
    )
    .await;
    let p = env.primary;
    let mut c = env.conn().await;
    let sel = c
        .prep("SELECT v FROM rt_ps WHERE id = ?")
        .await
        .expect("prepare");
    const N: i64 = 100;
    let names = ["Com_stmt_execute", "Com_stmt_prepare"];
    let before = env.counters(&names).await;
    for i in 0..N {
        let id = 1 + i % 10;
        let v: Option<String> = c.exec_first(&sel, (id,)).await.expect("execute");
        assert_eq!(v, Some(format!("v{id}")), "execution {i}");
    }
    let after = env.counters(&names).await;
    let d = |port, name| Env::delta(&before, &after, port, name);
    println!(
        "Com_stmt_execute: primary {}, r1 {}, r2 {}",
        d(p, "Com_stmt_execute"),
        d(env.replicas[0], "Com_stmt_execute"),
        d(env.replicas[1], "Com_stmt_execute")
    );
    assert_eq!(
        d(p, "Com_stmt_execute"),
        0,
        "no prepared read on the primary"
    );
    let (e1, e2) = (
        d(env.replicas[0], "Com_stmt_execute"),
        d(env.replicas[1], "Com_stmt_execute"),
    );
    assert_eq!(e1 + e2, N);
    assert!(
        (e1 - N / 2).abs() <= 1 && (e2 - N / 2).abs() <= 1,
        "{e1} / {e2}"
    );
    // Prepared at most once per replica, never on the primary.
    assert_eq!(d(p, "Com_stmt_prepare"), 0);
    for r in env.replicas {
        assert!(d(r, "Com_stmt_prepare") <= 1, "re-prepared on {r}");
    }

    // A prepared INSERT runs on the primary.
    let ins = c
        .prep("INSERT INTO rt_ps_w (id, v) VALUES (?, @@port)")
        .await
        .expect("prepare insert");
    let before = env.counters(&names).await;
    for id in 1..=5 {
        c.exec_drop(&ins, (id,)).await.expect("insert");
    }
    let after = env.counters(&names).await;
    assert_eq!(Env::delta(&before, &after, p, "Com_stmt_execute"), 5);
    for r in env.replicas {
        assert_eq!(Env::delta(&before, &after, r, "Com_stmt_execute"), 0);
    }
    let ports: Vec<i32> = env.direct[0]
        .1
        .query("SELECT v FROM app.rt_ps_w ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ports, vec![p as i32; 5]);

    // Ids stay valid while other statements come and go.
    let other = c
        .prep("SELECT id * ? FROM rt_ps WHERE id = 2")
        .await
        .expect("prepare other");
    let third = c
        .prep("SELECT COUNT(*) + ? FROM rt_ps")
        .await
        .expect("third");
    for round in 0..3i64 {
        let v: Option<String> = c.exec_first(&sel, (3,)).await.expect("sel");
        assert_eq!(v.as_deref(), Some("v3"), "round {round}");
        let x: Option<i64> = c.exec_first(&other, (round + 10,)).await.expect("other");
        assert_eq!(x, Some(2 * (round + 10)));
        let n: Option<i64> = c.exec_first(&third, (round,)).await.expect("third");
        assert_eq!(n, Some(10 + round));
    }
    c.close(other).await.expect("close other");
    let fourth = c
        .prep("SELECT v FROM rt_ps WHERE id = ? + 1")
        .await
        .unwrap();
    for round in 0..3i64 {
        let v: Option<String> = c.exec_first(&sel, (4,)).await.expect("sel after close");
        assert_eq!(v.as_deref(), Some("v4"), "round {round}");
        let v: Option<String> = c.exec_first(&fourth, (round + 1,)).await.expect("fourth");
        assert_eq!(v, Some(format!("v{}", round + 2)));
        let n: Option<i64> = c.exec_first(&third, (1,)).await.expect("third");
        assert_eq!(n, Some(11));
    }
    c.close(third).await.expect("close third");
    c.close(ins).await.expect("close insert");
    let v: Option<String> = c.exec_first(&sel, (5,)).await.expect("sel at the end");
    assert_eq!(v.as_deref(), Some("v5"));
    let v: Option<String> = c
        .exec_first(&fourth, (8,))
        .await
        .expect("fourth at the end");
    assert_eq!(v.as_deref(), Some("v9"));
}
