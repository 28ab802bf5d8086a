//! MySQL's replication dialect, proved on a real MySQL 9.7 (issue 15,
//! items 3 and 4): ONE MySQL sandbox (primary + 2 GTID replicas, a Debian
//! sid chroot) runs these scenarios in sequence, each judged by what the
//! servers themselves say (status counters, rows, `SHOW REPLICA STATUS`,
//! `@@super_read_only`):
//! 1. monitor: roles, MySQL GTID sets, lag from `Seconds_Behind_Source`;
//! 2. routing with server counters: reads (text and prepared) on the
//!    replicas, writes on the primary;
//!    2b. real clients: PyMySQL (text) and mysql-connector-python with
//!    server-side prepared statements: rows right, reads on the replicas,
//!    writes on the primary;
//!    2c. sysbench `oltp_read_write` with prepared statements (libmariadb,
//!    caching_sha2 over plaintext + RSA): in transactions all on the
//!    primary, with `--skip-trx` reads on the replicas; no error that the
//!    primary's InnoDB did not count as its own deadlock;
//!    2d. lag-bounded routing: a replica 3 s behind (`SOURCE_DELAY`,
//!    heartbeat lag, `max_replica_lag_ms = 1500`) serves no read, shows
//!    its lag in `/status` and `SHOW SERVERS`, and serves again after;
//! 3. read-your-writes: 0 stale reads in 1,000 write→read cycles with a
//!    1 s `SOURCE_DELAY` on both replicas (eventual consistency shows
//!    stale reads in the same cycles, so the check can fail); then causal
//!    reads (`session_track_gtids = OWN_GTID` + `WAIT_FOR_EXECUTED_GTID_SET`)
//!    on the replicas, 0 stale;
//! 4. switchover (`PROMOTE`) under 16 writers: 0 write errors, every
//!    acknowledged write on every server, the old primary fenced with
//!    `super_read_only` and replicating from the new one;
//! 5. failover after `kill -9` of the primary, with the monitor account's
//!    documented grants only (the sandbox creates exactly those);
//! 6. fencing and rejoin of a returning writable old primary
//!    (`auto_rejoin`).
//!
//! Needs the chroot of scripts/mysql-chroot.sh (scripts/test.sh creates
//! it). Without it the test says SKIPPED loudly and returns.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::faults::{Writers, acked};
use common::flavor::scalar;
use common::sandbox::{free_ports, global_status, root_opts, temp_dir};
use common::{admin, root_exec, start_proxy, wait_until};
use mysql_async::prelude::*;
use rwproxy::config::{Config, Consistency};
use rwproxy_sandbox::mysql::{self, MysqlSandbox};

/// Stops the servers and unmounts the sandbox directory, also on panic.
struct Down(MysqlSandbox);

impl Drop for Down {
    fn drop(&mut self) {
        if let Err(e) = mysql::down_sandbox(&self.0) {
            eprintln!("sandbox down failed: {e}");
        }
    }
}

/// `(Source_Port, Replica_IO_Running, Replica_SQL_Running)` of `port`.
async fn source_of(port: u16) -> Option<(u16, String, String)> {
    let mut c = mysql_async::Conn::new(root_opts(port))
        .await
        .expect("connect");
    let rows: Vec<mysql_async::Row> = c.query("SHOW REPLICA STATUS").await.expect("status");
    let _ = c.disconnect().await;
    let r = rows.first()?;
    Some((
        r.get::<u16, _>("Source_Port")?,
        r.get("Replica_IO_Running")?,
        r.get("Replica_SQL_Running")?,
    ))
}

async fn ids_on(port: u16) -> BTreeSet<u64> {
    let mut c = mysql_async::Conn::new(root_opts(port))
        .await
        .expect("connect");
    let v: Vec<u64> = c.query("SELECT id FROM app.ack").await.expect("ids");
    let _ = c.disconnect().await;
    v.into_iter().collect()
}

async fn missing_on(port: u16, want: &BTreeSet<u64>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing = want.difference(&ids_on(port).await).count();
        if missing == 0 || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every running server in `ports` has applied `primary`'s
/// executed set.
async fn caught_up(primary: u16, ports: &[u16]) {
    let gtids = scalar(primary, "SELECT @@GLOBAL.gtid_executed")
        .await
        .unwrap_or_default()
        .replace('\n', "");
    for &p in ports {
        let sql = format!("SELECT GTID_SUBSET('{gtids}', @@GLOBAL.gtid_executed)");
        wait_until(Duration::from_secs(30), "replica caught up", || async {
            scalar(p, &sql).await.as_deref() == Some("1")
        })
        .await;
    }
}

/// The digest of the routing scenario's text read (MySQL's normal form).
const READ_DIGEST: &str = "SELECT `v` FROM `app` . `t` WHERE `id` = ?";

/// How often `port` ran statements of digest text `digest` (text protocol).
async fn digest_count(port: u16, digest: &str) -> u64 {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(COUNT_STAR), 0) AS CHAR) FROM performance_schema.events_statements_summary_by_digest WHERE DIGEST_TEXT = '{}'",
        digest.replace('\'', "''")
    );
    scalar(port, &sql)
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The digest of the read-your-writes scenario's text read.
const RYW_DIGEST: &str = "SELECT `id` FROM `app` . `ryw` WHERE `id` = ?";

/// How often `port` ran statements whose digest text is LIKE `like` and
/// NOT LIKE `unlike`.
async fn digest_like(port: u16, like: &str, unlike: &str) -> u64 {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(COUNT_STAR), 0) AS CHAR) FROM performance_schema.events_statements_summary_by_digest WHERE DIGEST_TEXT LIKE '{like}' AND DIGEST_TEXT NOT LIKE '{unlike}'"
    );
    scalar(port, &sql)
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn set_delay(port: u16, secs: u32) {
    root_exec(port, "STOP REPLICA SQL_THREAD").await;
    root_exec(
        port,
        &format!("CHANGE REPLICATION SOURCE TO SOURCE_DELAY = {secs}"),
    )
    .await;
    root_exec(port, "START REPLICA SQL_THREAD").await;
}

/// Insert-then-select cycles through `proxy`; how many selects missed the
/// row just inserted.
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
    let _ = c.disconnect().await;
    stale
}

/// Runs a program (killed after `limit`); returns (exit code, stdout, stderr).
async fn run_tool(cmd: &mut tokio::process::Command, limit: Duration) -> (i32, String, String) {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {limit:?}"))
        .expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The project's Python tools (mysql-connector-python), from
/// scripts/install-deps.sh.
fn tools_python() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps.sh",
        p.display()
    );
    p
}

/// PyMySQL (client-side parameters: text protocol) and
/// mysql-connector-python with `cursor(prepared=True)` (server-side
/// prepared statements), logging in as `app` over plaintext (caching_sha2
/// full authentication with rwproxy's RSA key). `argv`: port, phase
/// (`write` or `read`), first id, count. Prints `rows <n> <sum>` after
/// reads, `done` at the end.
const PYMYSQL_RW: &str = r#"
import sys, pymysql
port, phase, first, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app",
                    database="app", autocommit=True)
cur = c.cursor()
if phase == "write":
    for i in range(first, first + n):
        cur.execute("INSERT INTO app.cl (id, v) VALUES (%s, %s)", (i, "py%d" % i))
else:
    got, total = 0, 0
    for i in range(first, first + n):
        cur.execute("SELECT v FROM app.cl WHERE id = %s", (i,))
        row = cur.fetchone()
        if row is not None and row[0] == "py%d" % i:
            got += 1
            total += i
    print("rows", got, total)
c.close()
print("done")
"#;

const CONNECTOR_RW: &str = r#"
import sys, mysql.connector
port, phase, first, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = mysql.connector.connect(host="127.0.0.1", port=port, user="app", password="app",
                            database="app", autocommit=True, use_pure=True,
                            ssl_disabled=True)
cur = c.cursor(prepared=True)
if phase == "write":
    for i in range(first, first + n):
        cur.execute("INSERT INTO app.cl (id, v) VALUES (?, ?)", (i, "cn%d" % i))
else:
    got, total = 0, 0
    for i in range(first, first + n):
        cur.execute("SELECT v FROM app.cl WHERE id = ?", (i,))
        row = cur.fetchone()
        if row is not None and row[0] == "cn%d" % i:
            got += 1
            total += i
    print("rows", got, total)
c.close()
print("done")
"#;

/// The digest of the clients' text read (PyMySQL inlines its parameters).
const CLIENT_READ_DIGEST: &str = "SELECT `v` FROM `app` . `cl` WHERE `id` = ?";

/// Deadlocks InnoDB detected on `port` (`lock_deadlocks`, on by default).
async fn deadlocks(port: u16) -> u64 {
    scalar(
        port,
        "SELECT CAST(`COUNT` AS CHAR) FROM information_schema.INNODB_METRICS WHERE NAME = 'lock_deadlocks'",
    )
    .await
    .and_then(|v| v.parse().ok())
    .expect("lock_deadlocks metric")
}

/// Parses "    <label>:   <n>" from sysbench's report.
fn sysbench_count(out: &str, label: &str) -> Option<u64> {
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with(label))
        .and_then(|l| l[label.len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn kill9(sb: &MysqlSandbox, i: usize) {
    let pid = sb.running_pid(i).expect("server runs");
    let st = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let t = Instant::now();
    while sb.running_pid(i).is_some() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn base_config(dir: &std::path::Path) -> Config {
    let mut c = common::with_admin(Config::load(&dir.join("rwproxy.toml")).expect("config"));
    c.monitor_interval_ms = 250;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_replication_dialect_end_to_end() {
    let root = mysql::chroot_dir();
    if !mysql::chroot_ready(&root) {
        println!(
            "\n\n*** SKIPPED: no MySQL chroot at {} (run scripts/mysql-chroot.sh; scripts/test.sh does) ***\n\n",
            root.display()
        );
        return;
    }
    let t_all = Instant::now();
    let dir = temp_dir();
    let ports = free_ports(4);
    let sb = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let ports = ports.clone();
        move || mysql::up(&dir, &ports[..3], ports[3], Some(std::process::id()))
    })
    .await
    .expect("join")
    .expect("mysql sandbox up");
    let _down = Down(sb.clone());
    eprintln!("MySQL sandbox up in {:.1} s", t_all.elapsed().as_secs_f64());
    let (p, r1, r2) = (ports[0], ports[1], ports[2]);

    // The sandbox's monitor account has the documented grants, no more.
    let grants = mysql::sql(&sb, 0, "SHOW GRANTS FOR 'rwproxy_monitor'@'%'").expect("grants");
    assert!(
        !grants.contains("SUPER")
            && !grants.contains("ALL PRIVILEGES")
            && !grants.contains("CONNECTION_ADMIN")
            && !grants.contains("ON `mysql`.*"),
        "{grants}"
    );

    // 1. Monitor.
    let proxy = start_proxy(base_config(&dir)).await;
    common::wait_leader(&proxy).await;
    wait_until(
        Duration::from_secs(10),
        "monitor sees the topology",
        || async {
            let s = common::status(&proxy).await;
            s["primary"] == "primary"
                && ["replica1", "replica2"].iter().all(|r| {
                    let v = common::server(&s, r);
                    v["role"] == "replica"
                        && v["replication"] == "running"
                        && v["lag_seconds"] == 0.0
                })
        },
    )
    .await;
    let primary_gtid = scalar(p, "SELECT @@GLOBAL.gtid_executed")
        .await
        .unwrap_or_default();
    let s = common::status(&proxy).await;
    let shown = common::server(&s, "primary")["gtid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        shown.contains(':') && primary_gtid.to_lowercase().contains(&shown[..36]),
        "gtid column {shown:?} vs the primary's {primary_gtid:?}"
    );

    // 2. Routing by the servers' counters.
    root_exec(p, "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)").await;
    root_exec(p, "INSERT INTO app.t VALUES (1, 1)").await;
    root_exec(p, "CREATE TABLE app.ryw (id INT PRIMARY KEY)").await;
    root_exec(p, "CREATE TABLE app.ack (id BIGINT PRIMARY KEY)").await;
    caught_up(p, &[r1, r2]).await;
    let count = |port, name: &'static str| global_status(port, name);
    // Text reads counted by their digest (performance_schema), so that the
    // monitor's own SELECTs do not blur the primary's count.
    let (sp, s1, s2) = (
        digest_count(p, READ_DIGEST).await,
        digest_count(r1, READ_DIGEST).await,
        digest_count(r2, READ_DIGEST).await,
    );
    let (ep, e1, e2) = (
        count(p, "Com_stmt_execute").await,
        count(r1, "Com_stmt_execute").await,
        count(r2, "Com_stmt_execute").await,
    );
    let ip = count(p, "Com_insert").await;
    let mut c = proxy.app_conn().await;
    for _ in 0..200 {
        let v: Option<i64> = c
            .query_first("SELECT v FROM app.t WHERE id = 1")
            .await
            .expect("select");
        assert_eq!(v, Some(1));
    }
    for i in 0..100 {
        let v: Option<i64> = c
            .exec_first("SELECT v FROM app.t WHERE id = ?", (1,))
            .await
            .expect("prepared select");
        assert_eq!(v, Some(1), "prepared read {i}");
    }
    for i in 0..50 {
        c.query_drop(format!("INSERT INTO app.t VALUES ({}, 0)", 100 + i))
            .await
            .expect("insert");
    }
    let _ = c.disconnect().await;
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let (dsp, ds1, ds2) = (
        d(sp, digest_count(p, READ_DIGEST).await),
        d(s1, digest_count(r1, READ_DIGEST).await),
        d(s2, digest_count(r2, READ_DIGEST).await),
    );
    let (dep, de1, de2) = (
        d(ep, count(p, "Com_stmt_execute").await),
        d(e1, count(r1, "Com_stmt_execute").await),
        d(e2, count(r2, "Com_stmt_execute").await),
    );
    let dip = d(ip, count(p, "Com_insert").await);
    println!(
        "routing: `SELECT v FROM app.t` primary +{dsp}, replica1 +{ds1}, replica2 +{ds2}; Com_stmt_execute primary +{dep}, replica1 +{de1}, replica2 +{de2}; Com_insert primary +{dip}"
    );
    assert!(
        ds1 + ds2 >= 200 && ds1 >= 50 && ds2 >= 50,
        "reads spread over the replicas"
    );
    assert_eq!(dsp, 0, "plain reads went to the primary");
    assert!(
        de1 >= 30 && de2 >= 30 && de1 + de2 >= 100,
        "prepared reads spread over the replicas"
    );
    assert_eq!(dep, 0, "prepared reads ran on the primary");
    assert!(dip >= 50, "writes on the primary: +{dip}");

    // 2b. Real clients, as on MariaDB (tests/core_clients.rs): PyMySQL
    // (text protocol) and mysql-connector-python with server-side prepared
    // statements (`cursor(prepared=True)`) log in as `app` (caching_sha2,
    // plaintext + RSA), write 100 rows, then read them back on a fresh
    // connection: rows right, reads on the replicas, writes on the primary.
    root_exec(p, "CREATE TABLE app.cl (id INT PRIMARY KEY, v VARCHAR(20))").await;
    caught_up(p, &[r1, r2]).await;
    let pport = proxy.addr.port();
    let t = Instant::now();
    for (name, interp, script, first, prepared) in [
        (
            "PyMySQL",
            std::path::PathBuf::from("/usr/bin/python3"),
            PYMYSQL_RW,
            10_000u64,
            false,
        ),
        (
            "mysql-connector (prepared)",
            tools_python(),
            CONNECTOR_RW,
            20_000,
            true,
        ),
    ] {
        let n = 100u64;
        let client = |phase: &str| {
            let mut c = tokio::process::Command::new(&interp);
            c.args(["-c", script])
                .arg(pport.to_string())
                .arg(phase)
                .arg(first.to_string())
                .arg(n.to_string());
            c
        };
        let (ip, ep) = (
            count(p, "Com_insert").await,
            count(p, "Com_stmt_execute").await,
        );
        let (code, out, err) = run_tool(&mut client("write"), Duration::from_secs(60)).await;
        assert!(
            code == 0 && out.contains("done"),
            "{name} write: {out}{err}"
        );
        let (dip, dep) = (
            d(ip, count(p, "Com_insert").await),
            d(ep, count(p, "Com_stmt_execute").await),
        );
        caught_up(p, &[r1, r2]).await;
        let in_range = format!(
            "SELECT CAST(COUNT(*) AS CHAR) FROM app.cl WHERE id BETWEEN {first} AND {}",
            first + n - 1
        );
        for port in [p, r1, r2] {
            assert_eq!(
                scalar(port, &in_range).await.as_deref(),
                Some(n.to_string().as_str()),
                "{name}: rows on {port}"
            );
        }
        let ports3 = [p, r1, r2];
        let mut texts = Vec::new();
        let mut execs = Vec::new();
        for &port in &ports3 {
            texts.push(digest_count(port, CLIENT_READ_DIGEST).await);
            execs.push(count(port, "Com_stmt_execute").await);
        }
        let (code, out, err) = run_tool(&mut client("read"), Duration::from_secs(60)).await;
        assert!(code == 0 && out.contains("done"), "{name} read: {out}{err}");
        let mut dt = Vec::new();
        let mut dx = Vec::new();
        for (i, &port) in ports3.iter().enumerate() {
            dt.push(d(texts[i], digest_count(port, CLIENT_READ_DIGEST).await));
            dx.push(d(execs[i], count(port, "Com_stmt_execute").await));
        }
        println!(
            "{name}: writes: primary Com_insert +{dip}, Com_stmt_execute +{dep}; reads (primary, replica1, replica2): text {dt:?}, Com_stmt_execute {dx:?}"
        );
        let sum: u64 = (first..first + n).sum();
        assert!(
            out.contains(&format!("rows {n} {sum}")),
            "{name}: every row read back right: {out}"
        );
        // Reads counted where they ran: by their digest (text) or
        // Com_stmt_execute (prepared), none on the primary, both
        // replicas serving.
        let reads = if prepared { &dx } else { &dt };
        assert_eq!(reads[0], 0, "{name}: reads ran on the primary");
        assert!(
            reads[1] + reads[2] >= n && reads[1] >= n / 5 && reads[2] >= n / 5,
            "{name}: reads spread over the replicas: {reads:?}"
        );
        if prepared {
            assert!(dep >= n, "{name}: prepared writes on the primary: +{dep}");
            assert_eq!(dt, [0, 0, 0], "{name}: the reads were prepared");
        } else {
            assert!(dip >= n, "{name}: writes on the primary: +{dip}");
            assert_eq!(dx[1] + dx[2], 0, "{name}: the reads were text");
        }
    }
    println!("clients: {:.1} s", t.elapsed().as_secs_f64());

    // 2c. sysbench oltp_read_write (libmariadb's caching_sha2 plugin,
    // plaintext + RSA) with server-side prepared statements: first in
    // transactions (all on the primary, as a transaction must be), then
    // with --skip-trx (autocommit: reads on the replicas, writes on the
    // primary; without its DELETE+INSERT pairs, which collide on the same
    // id across threads outside transactions: ERR 1062 on any server).
    // No error but the primary's own deadlocks.
    let t = Instant::now();
    // The autocommit run goes through a proxy with consistency =
    // "eventual": under the default "session", a read that follows the
    // session's own write (nearly every read here) rightly goes to the
    // primary until a replica has that write.
    let mut eventual = base_config(&dir);
    eventual.consistency = Consistency::Eventual;
    let ev = start_proxy(eventual).await;
    let sysbench = |port: u16, test: &str, cmd: &str| {
        let mut c = tokio::process::Command::new("sysbench");
        c.arg(test)
            .arg("--mysql-host=127.0.0.1")
            .arg(format!("--mysql-port={port}"))
            .args(["--mysql-user=app", "--mysql-password=app", "--mysql-db=app"])
            .args(["--tables=4", "--table-size=5000", "--db-ps-mode=auto"])
            .arg(cmd);
        c
    };
    let limit = Duration::from_secs(60);
    let (code, out, err) =
        run_tool(&mut sysbench(pport, "oltp_read_write", "prepare"), limit).await;
    assert_eq!(code, 0, "sysbench prepare: {out}{err}");
    caught_up(p, &[r1, r2]).await;
    for (label, in_trx, port, extra) in [
        (
            "in transactions",
            true,
            pport,
            vec!["--time=4", "--threads=4"],
        ),
        (
            "autocommit (--skip-trx, eventual)",
            false,
            ev.addr.port(),
            vec![
                "--time=3",
                "--threads=4",
                "--skip-trx=on",
                "--delete_inserts=0",
            ],
        ),
    ] {
        let mut before = Vec::new();
        for port in [p, r1, r2] {
            before.push(count(port, "Com_stmt_execute").await);
        }
        let deadlocks0 = deadlocks(p).await;
        let mut cmd = sysbench(port, "oltp_read_write", "run");
        cmd.args(&extra);
        let (code, out, err) = run_tool(&mut cmd, limit).await;
        let mut executed = Vec::new();
        for (port, b) in [p, r1, r2].into_iter().zip(before) {
            executed.push(d(b, count(port, "Com_stmt_execute").await));
        }
        let dead = d(deadlocks0, deadlocks(p).await);
        let num = |l: &str| sysbench_count(&out, l).unwrap_or(0);
        let (tx, reads, writes) = (num("transactions:"), num("read:"), num("write:"));
        println!(
            "sysbench oltp_read_write {label}: {tx} transactions, {reads} reads, {writes} writes, ignored errors {:?} (InnoDB deadlocks on the primary +{dead}), reconnects {:?}; Com_stmt_execute (primary, replica1, replica2) {executed:?}",
            sysbench_count(&out, "ignored errors:"),
            sysbench_count(&out, "reconnects:")
        );
        assert!(
            code == 0 && !out.contains("FATAL") && !err.contains("FATAL"),
            "sysbench {label}: {out}{err}"
        );
        assert!(tx > 0 && reads > 0 && writes > 0, "sysbench {label}: {out}");
        // sysbench retries (and counts as "ignored") only deadlocks and lock
        // wait timeouts; each one must be a deadlock the primary's InnoDB
        // counted itself, i.e. none came from rwproxy.
        let ignored = sysbench_count(&out, "ignored errors:").unwrap_or(u64::MAX);
        assert!(
            ignored <= dead,
            "{ignored} ignored errors, {dead} InnoDB deadlocks: {out}"
        );
        assert_eq!(sysbench_count(&out, "reconnects:"), Some(0), "{out}");
        // Every write ran on the primary (the replicas are super_read_only,
        // so a write sent there would have failed the run).
        assert!(executed[0] >= writes, "writes on the primary: {executed:?}");
        if !in_trx {
            assert!(
                executed[1] + executed[2] >= reads * 9 / 10
                    && executed[1] >= reads / 5
                    && executed[2] >= reads / 5,
                "autocommit reads on the replicas: {executed:?} of {reads} reads"
            );
        } else {
            assert_eq!(
                executed[1] + executed[2],
                0,
                "statements of transactions ran on replicas"
            );
        }
    }
    let (code, out, err) =
        run_tool(&mut sysbench(pport, "oltp_read_write", "cleanup"), limit).await;
    assert_eq!(code, 0, "sysbench cleanup: {out}{err}");
    drop(ev);
    println!("sysbench: {:.1} s", t.elapsed().as_secs_f64());

    // 2d. Lag-bounded routing: replica1 applies 3 s late (SOURCE_DELAY);
    // with heartbeat lag and max_replica_lag_ms = 1500 it serves no reads
    // while it lags (its digest counter does not move), the lag shows in
    // /status and SHOW SERVERS, and it takes its share again once it
    // catches up.
    // This proxy writes the heartbeat, which only the leader does: the
    // first one steps aside until the switchover scenario.
    drop(proxy);
    let t = Instant::now();
    let mut lagged = base_config(&dir);
    lagged.heartbeat = true;
    lagged.monitor_interval_ms = 200;
    lagged.max_replica_lag_ms = 1500;
    lagged.consistency = Consistency::Eventual;
    let lp = start_proxy(lagged).await;
    common::wait_leader(&lp).await;
    let lag_of = |s: &serde_json::Value, r: &str| common::server(s, r)["lag_seconds"].as_f64();
    wait_until(
        Duration::from_secs(10),
        "heartbeat lag on both replicas",
        || async {
            let s = common::status(&lp).await;
            ["replica1", "replica2"].iter().all(|r| {
                lag_of(&s, r).is_some_and(|l| l < 1.0) && common::server(&s, r)["readable"] == true
            })
        },
    )
    .await;
    set_delay(r1, 3).await;
    wait_until(Duration::from_secs(15), "replica1 seen lagging", || async {
        let s = common::status(&lp).await;
        common::server(&s, "replica1")["readable"] == false
            && lag_of(&s, "replica1").is_some_and(|l| l > 1.5)
    })
    .await;
    let servers = admin(&lp, "SHOW SERVERS").await.expect("SHOW SERVERS");
    let lag_ms = |name: &str| -> Option<f64> {
        servers
            .iter()
            .find(|r| r[0] == name)
            .and_then(|r| r[7].parse().ok())
    };
    let s = common::status(&lp).await;
    println!(
        "lagging replica1: /status lag {:?} s, SHOW SERVERS lag_ms {:?} (replica2: {:?} s, {:?} ms)",
        lag_of(&s, "replica1"),
        lag_ms("replica1"),
        lag_of(&s, "replica2"),
        lag_ms("replica2")
    );
    assert!(
        lag_ms("replica1").is_some_and(|l| l > 1500.0),
        "{servers:?}"
    );
    assert!(
        lag_ms("replica2").is_some_and(|l| l < 1500.0),
        "{servers:?}"
    );
    let reads_through = |n: u32| {
        let opts = lp.app_opts();
        async move {
            let mut c = mysql_async::Conn::new(opts).await.expect("connect");
            for _ in 0..n {
                let v: Option<i64> = c
                    .query_first("SELECT v FROM app.t WHERE id = 1")
                    .await
                    .expect("read");
                assert_eq!(v, Some(1));
            }
            let _ = c.disconnect().await;
        }
    };
    let digests = || async {
        [
            digest_count(p, READ_DIGEST).await,
            digest_count(r1, READ_DIGEST).await,
            digest_count(r2, READ_DIGEST).await,
        ]
    };
    let b = digests().await;
    reads_through(200).await;
    let a = digests().await;
    let during = [d(b[0], a[0]), d(b[1], a[1]), d(b[2], a[2])];
    let still_lagging = common::server(&common::status(&lp).await, "replica1")["readable"] == false;
    set_delay(r1, 0).await;
    wait_until(
        Duration::from_secs(15),
        "replica1 readable again",
        || async { common::server(&common::status(&lp).await, "replica1")["readable"] == true },
    )
    .await;
    let b = digests().await;
    reads_through(200).await;
    let a = digests().await;
    let after = [d(b[0], a[0]), d(b[1], a[1]), d(b[2], a[2])];
    println!(
        "200 reads while replica1 lags (primary, replica1, replica2): {during:?}; 200 after it caught up: {after:?} ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    assert!(still_lagging, "replica1 caught up during the reads");
    assert_eq!(during, [0, 0, 200], "reads while replica1 lags");
    assert_eq!(after[0], 0, "reads on the primary");
    assert!(
        after[1] >= 50 && after[1] + after[2] == 200,
        "replica1 takes its share again: {after:?}"
    );
    drop(lp);
    caught_up(p, &[r1, r2]).await;
    let proxy = start_proxy(base_config(&dir)).await;
    common::wait_leader(&proxy).await;

    // 3. Read-your-writes with 1 s of lag on both replicas.
    set_delay(r1, 1).await;
    set_delay(r2, 1).await;
    let mut eventual = base_config(&dir);
    eventual.consistency = Consistency::Eventual;
    eventual.max_replica_lag_ms = 30_000;
    let mut session = eventual.clone();
    session.consistency = Consistency::Session;
    let ev = start_proxy(eventual).await;
    let t = Instant::now();
    let stale_eventual = stale_reads(&ev, 1000, 0).await;
    drop(ev);
    let ss = start_proxy(session.clone()).await;
    let stale_session = stale_reads(&ss, 1000, 1_000_000).await;
    drop(ss);
    println!(
        "1000 insert-then-select cycles with SOURCE_DELAY = 1: eventual {stale_eventual} stale, session {stale_session} stale ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        stale_session, 0,
        "session consistency must never read stale"
    );
    assert!(
        stale_eventual > 100,
        "eventual should show stale reads (else the test proves nothing): {stale_eventual}"
    );
    set_delay(r1, 0).await;
    set_delay(r2, 0).await;
    caught_up(p, &[r1, r2]).await;

    // Causal reads: the write's own GTID (session_track_gtids = OWN_GTID)
    // is waited for on a replica (WAIT_FOR_EXECUTED_GTID_SET, a SELECT
    // there), so the reads that follow writes run on replicas, not stale.
    let mut causal = session;
    causal.causal_wait_ms = 2000;
    let cs = start_proxy(causal).await;
    let (a1, a2) = (
        count(r1, "Com_stmt_execute").await,
        count(r2, "Com_stmt_execute").await,
    );
    let (w1, w2) = (count(r1, "Com_select").await, count(r2, "Com_select").await);
    let stale_causal = stale_reads(&cs, 300, 2_000_000).await;
    let on_replicas =
        d(a1, count(r1, "Com_stmt_execute").await) + d(a2, count(r2, "Com_stmt_execute").await);
    let waits = d(w1, count(r1, "Com_select").await) + d(w2, count(r2, "Com_select").await);
    println!(
        "causal: 300 cycles, {stale_causal} stale, {on_replicas} reads on replicas, {waits} text SELECTs (waits) there"
    );
    assert_eq!(stale_causal, 0);
    assert!(
        on_replicas >= 250,
        "reads after writes should run on replicas: {on_replicas}"
    );
    assert!(
        waits >= 150,
        "replicas should have been asked to wait: {waits}"
    );
    // The same through the MySQL 9.7 `mysql` client, which negotiates
    // CLIENT_SESSION_TRACK (mysql_async does not): the write's GTID comes
    // in the OK packet (OWN_GTID), so rwproxy never asks the primary for
    // it, and every read still runs on a replica after its wait.
    let n = 300u32;
    let script: String = (0..n)
        .map(|i| {
            let id = 3_000_000 + i;
            format!("INSERT INTO app.ryw VALUES ({id}); SELECT id FROM app.ryw WHERE id = {id};\n")
        })
        .collect();
    let asked = |port| digest_like(port, "%gtid_executed%", "%read_only%");
    let (f0, q1, q2) = (
        asked(p).await,
        digest_count(r1, RYW_DIGEST).await,
        digest_count(r2, RYW_DIGEST).await,
    );
    let q0 = digest_count(p, RYW_DIGEST).await;
    let out = tokio::task::spawn_blocking({
        let (chroot, port) = (sb.chroot.clone(), cs.addr.port());
        move || {
            std::process::Command::new("chroot")
                .arg(&chroot)
                .args(["mysql", "--no-defaults", "-h127.0.0.1", "-N", "-B"])
                .arg(format!("-P{port}"))
                .args([
                    "-uapp",
                    "-papp",
                    "--ssl-mode=DISABLED",
                    "--get-server-public-key",
                ])
                .args(["-e", &script])
                .output()
                .expect("run mysql")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "mysql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: BTreeSet<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let stale_cli = (0..n).filter(|i| !seen.contains(&(3_000_000 + i))).count();
    let fallback = asked(p).await - f0;
    let (cli_replicas, cli_primary) = (
        d(q1, digest_count(r1, RYW_DIGEST).await) + d(q2, digest_count(r2, RYW_DIGEST).await),
        d(q0, digest_count(p, RYW_DIGEST).await),
    );
    println!(
        "causal, mysql CLI: {n} cycles, {stale_cli} stale, reads on replicas {cli_replicas}, on the primary {cli_primary}, GTID asked of the primary {fallback} times"
    );
    assert_eq!(stale_cli, 0);
    assert_eq!(
        fallback, 0,
        "the GTID should come from the OK packet (OWN_GTID)"
    );
    assert!(
        cli_replicas >= u64::from(n) - 10,
        "reads after writes on replicas: {cli_replicas}"
    );
    drop(cs);

    // 4. Switchover under 16 writers.
    let t = Instant::now();
    let writers = Writers::start(proxy.app_opts(), 16, 0);
    wait_until(Duration::from_secs(10), "writes flowing", || async {
        writers.acked_count() > 300
    })
    .await;
    let report = admin(&proxy, "PROMOTE replica1")
        .await
        .expect("PROMOTE replica1");
    for row in &report {
        println!("  {:<70} {} ms", row[0], row[1]);
    }
    assert!(
        report.iter().all(|r| !r[0].contains("FAILED")),
        "every step done: {report:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcomes = writers.finish().await;
    let acks = acked(&outcomes);
    let errors: Vec<&str> = outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
    println!(
        "switchover: {} acknowledged writes, {} write errors ({:.1} s)",
        acks.len(),
        errors.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(acks.len() > 500, "load too small: {}", acks.len());
    assert!(
        errors.is_empty(),
        "write errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    for (name, port) in [
        ("replica1 (new primary)", r1),
        ("replica2", r2),
        ("old primary", p),
    ] {
        let missing = missing_on(port, &acks).await;
        assert_eq!(missing, 0, "{missing} acknowledged ids missing on {name}");
    }
    for port in [p, r2] {
        let (sp, io, sql) = source_of(port).await.expect("replicating");
        assert_eq!(
            (sp, io.as_str(), sql.as_str()),
            (r1, "Yes", "Yes"),
            "port {port}"
        );
    }
    assert_eq!(
        scalar(p, "SELECT @@GLOBAL.super_read_only")
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        scalar(r1, "SELECT @@GLOBAL.read_only").await.as_deref(),
        Some("0")
    );
    assert!(
        source_of(r1).await.is_none(),
        "RESET REPLICA ALL on the new primary"
    );
    wait_until(Duration::from_secs(10), "proxy follows", || async {
        common::status(&proxy).await["primary"] == "replica1"
    })
    .await;
    drop(proxy);

    // 5. Failover: kill -9 the primary (replica1); FAILOVER promotes the
    // most advanced of the others, repoints the rest. auto_rejoin for 6.
    let mut cfg = base_config(&dir);
    if let Some(f) = cfg.failover.as_mut() {
        f.auto_rejoin = true;
    }
    let proxy = start_proxy(cfg).await;
    common::wait_leader(&proxy).await;
    wait_until(
        Duration::from_secs(10),
        "proxy sees replica1 as primary",
        || async { common::status(&proxy).await["primary"] == "replica1" },
    )
    .await;
    let mut c = proxy.app_conn().await;
    for i in 0..100u64 {
        c.exec_drop("INSERT INTO app.ack (id) VALUES (?)", (900_000_000 + i,))
            .await
            .expect("insert before failover");
    }
    let _ = c.disconnect().await;
    caught_up(r1, &[p, r2]).await;
    let before: BTreeSet<u64> = ids_on(r1).await;
    let t = Instant::now();
    tokio::task::spawn_blocking({
        let sb = sb.clone();
        move || kill9(&sb, 1)
    })
    .await
    .expect("join");
    wait_until(Duration::from_secs(20), "primary seen down", || async {
        let s = common::status(&proxy).await;
        common::server(&s, "replica1")["up"] == false
    })
    .await;
    let report = admin(&proxy, "FAILOVER").await.expect("FAILOVER");
    for row in &report {
        println!("  {:<70} {} ms", row[0], row[1]);
    }
    assert!(
        report
            .iter()
            .all(|r| !r[0].contains("FAILED") && !r[0].contains("left out")),
        "{report:?}"
    );
    let s = common::status(&proxy).await;
    let new = s["primary"]
        .as_str()
        .expect("a primary after FAILOVER")
        .to_string();
    let (newp, other) = if new == "primary" { (p, r2) } else { (r2, p) };
    println!("failover to {new} in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(
        scalar(newp, "SELECT @@GLOBAL.read_only").await.as_deref(),
        Some("0")
    );
    let (sp, io, sql) = source_of(other).await.expect("the other replicates");
    assert_eq!(sp, newp);
    assert_eq!(sql, "Yes");
    wait_until(
        Duration::from_secs(10),
        "IO thread of the other replica",
        || async { source_of(other).await.is_some_and(|(_, io, _)| io == "Yes") },
    )
    .await;
    let _ = io;
    assert_eq!(
        missing_on(newp, &before).await,
        0,
        "writes lost by failover"
    );
    let mut c = proxy.app_conn().await;
    c.exec_drop("INSERT INTO app.ack (id) VALUES (?)", (950_000_000u64,))
        .await
        .expect("write after failover");
    let _ = c.disconnect().await;

    // 6. The old primary returns writable (as if its configuration said
    // so): rwproxy fences it (super_read_only) and, its history being
    // contained in the new primary's, makes it a replica of the new one.
    tokio::task::spawn_blocking({
        let sb = sb.clone();
        move || mysql::start_server(&sb, 1)
    })
    .await
    .expect("join")
    .expect("restart replica1");
    root_exec(r1, "SET GLOBAL read_only = 0").await;
    let took = wait_until(
        Duration::from_secs(20),
        "old primary fenced and rejoined",
        || async {
            scalar(r1, "SELECT @@GLOBAL.super_read_only")
                .await
                .as_deref()
                == Some("1")
                && source_of(r1)
                    .await
                    .is_some_and(|(sp, io, sql)| sp == newp && io == "Yes" && sql == "Yes")
        },
    )
    .await;
    println!(
        "old primary fenced and rejoined in {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(missing_on(r1, &BTreeSet::from([950_000_000u64])).await, 0);
    wait_until(Duration::from_secs(10), "one primary again", || async {
        common::status(&proxy).await["primary"].as_str() == Some(new.as_str())
    })
    .await;
    drop(proxy);
    println!(
        "mysql_flavor: all scenarios in {:.1} s",
        t_all.elapsed().as_secs_f64()
    );
}
