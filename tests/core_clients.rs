//! Real clients through rwproxy (issue "Core", item 2): PyMySQL, the
//! `mariadb` command-line client (batch, piped and interactive on a
//! pseudo-terminal) and sysbench with server-side prepared statements.
//!
//! The proxy runs in this process; its log is captured so each test can
//! also check that the proxy itself saw nothing go wrong. The tests run
//! one at a time (`SERIAL`) so that each one's log window and server
//! counters are its own.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use common::sandbox;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// The proxy's log lines (this test binary's tracing output).
fn log_buffer() -> &'static Arc<StdMutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<StdMutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(StdMutex::new(Vec::new()));
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(b.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<StdMutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log text written since `mark` (a length of the buffer).
fn log_since(mark: usize) -> String {
    let b = log_buffer().lock().unwrap();
    String::from_utf8_lossy(&b[mark.min(b.len())..]).into_owned()
}

fn log_mark() -> usize {
    log_buffer().lock().unwrap().len()
}

/// Fails if the proxy logged a warning or an error since `mark`.
fn assert_quiet_log(mark: usize, what: &str) {
    let text = log_since(mark);
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: the proxy logged problems:\n{}",
        bad.join("\n")
    );
}

async fn setup() -> (tokio::sync::MutexGuard<'static, ()>, common::Proxy, usize) {
    log_buffer();
    let serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    // Let the proxy's start-up lines land before the window opens.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !log_since(0).contains("rwproxy listening") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mark = log_mark();
    (serial, proxy, mark)
}

/// Runs a program with a deadline; returns (exit code, stdout, stderr).
async fn run(cmd: &mut Command, stdin: Option<&str>, limit: Duration) -> (i32, String, String) {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut si = child.stdin.take().unwrap();
        let input = input.to_string();
        tokio::spawn(async move {
            let _ = si.write_all(input.as_bytes()).await;
        });
    }
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

fn mariadb_cli(proxy: &common::Proxy) -> Command {
    let mut c = Command::new("mariadb");
    c.arg("--no-defaults")
        .arg("--protocol=tcp")
        .arg("-h127.0.0.1")
        .arg(format!("-P{}", proxy.addr.port()))
        .arg("-uapp")
        .arg("-papp");
    c
}

async fn primary_version() -> String {
    let sb = sandbox::shared();
    let mut c = Conn::new(sandbox::root_opts(sb.servers[0].port))
        .await
        .unwrap();
    c.query_first("SELECT VERSION()").await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_connects_writes_reads_and_runs_transactions() {
    let (_serial, proxy, mark) = setup().await;
    let script = r#"
import sys
try:
    import pymysql
except ImportError:
    print("NO_PYMYSQL")
    sys.exit(0)
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app",
                    password="app", database="app", autocommit=True)
cur = c.cursor()
cur.execute("DROP TABLE IF EXISTS ct_py")
cur.execute("CREATE TABLE ct_py (id INT PRIMARY KEY, name VARCHAR(20))")
cur.executemany("INSERT INTO ct_py VALUES (%s, %s)", [(1, "one"), (2, "two"), (3, "three")])
cur.execute("SELECT id, name FROM ct_py ORDER BY id")
print("rows", cur.fetchall())
c.begin()
cur.execute("UPDATE ct_py SET name = 'uno' WHERE id = 1")
cur.execute("SELECT name FROM ct_py WHERE id = 1")
print("in-tx", cur.fetchone()[0])
c.rollback()
cur.execute("SELECT name FROM ct_py WHERE id = 1")
print("after-rollback", cur.fetchone()[0])
c.begin()
cur.execute("DELETE FROM ct_py WHERE id = 3")
c.commit()
cur.execute("SELECT COUNT(*) FROM ct_py")
print("count", cur.fetchone()[0])
cur.execute("SELECT %s, %s", ("it's", None))
print("escaped", cur.fetchone())
c.ping()
cur.execute("SELECT VERSION()")
print("version", cur.fetchone()[0])
c.close()
print("done")
"#;
    let (code, out, err) = run(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(proxy.addr.port().to_string()),
        None,
        Duration::from_secs(60),
    )
    .await;
    println!("{out}{err}");
    if out.contains("NO_PYMYSQL") {
        println!("SKIPPED: python3-pymysql is not installed (import pymysql failed)");
        return;
    }
    assert_eq!(code, 0, "python failed:\n{out}\n{err}");
    assert!(
        out.contains("rows ((1, 'one'), (2, 'two'), (3, 'three'))"),
        "{out}"
    );
    assert!(out.contains("in-tx uno"), "{out}");
    assert!(out.contains("after-rollback one"), "{out}");
    assert!(out.contains("count 2"), "{out}");
    assert!(out.contains("escaped (\"it's\", None)"), "{out}");
    assert!(
        out.contains(&format!("version {}", primary_version().await)),
        "{out}"
    );
    assert!(out.contains("done"), "{out}");
    assert_quiet_log(mark, "pymysql");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_batch_and_piped() {
    let (_serial, proxy, mark) = setup().await;
    let version = primary_version().await;
    let port = proxy.addr.port();

    let (code, out, err) = run(
        mariadb_cli(&proxy)
            .arg("app")
            .arg("-e")
            .arg("USE app; SELECT 1; \\s"),
        None,
        Duration::from_secs(30),
    )
    .await;
    println!("{out}{err}");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&version),
        "status shows the server version {version}:\n{out}"
    );
    assert!(out.contains("Current database:\tapp"), "{out}");
    assert!(out.contains(&format!("TCP port:\t\t{port}")), "{out}");

    let input = "use app\n\
                 SELECT 40 + 2 AS answer;\n\
                 \\s\n\
                 CREATE TABLE IF NOT EXISTS ct_cli (a INT);\n\
                 INSERT INTO ct_cli VALUES (1);\n\
                 SELECT COUNT(*) > 0 AS has_rows FROM ct_cli;\n\
                 SELECT @@character_set_client AS cs;\n\
                 SELEKT 1;\n\
                 SELECT 'not reached';\n";
    let (code, out, err) = run(
        &mut mariadb_cli(&proxy),
        Some(input),
        Duration::from_secs(30),
    )
    .await;
    println!("{out}{err}");
    // The syntax error stops the batch with exit 1, after everything else.
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ERROR 1064 (42000)"), "{err}");
    assert!(out.contains("answer\n42\n"), "{out}");
    assert!(out.contains("Current database:\tapp"), "{out}");
    assert!(out.contains(&version), "{out}");
    assert!(out.contains("has_rows\n1\n"), "{out}");
    assert!(!out.contains("not reached"), "{out}");
    assert_quiet_log(mark, "mariadb piped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_interactive_with_auto_rehash() {
    let (_serial, proxy, mark) = setup().await;
    let sb = sandbox::shared();
    let ports: Vec<u16> = sb.servers.iter().map(|s| s.port).collect();
    let mut direct = Vec::new();
    for p in &ports {
        let opts = OptsBuilder::from_opts(sandbox::root_opts(*p))
            .max_allowed_packet(Some(16 << 20))
            .wait_timeout(Some(28800));
        direct.push(Conn::new(opts).await.unwrap());
    }
    direct[0]
        .query_drop("CREATE TABLE IF NOT EXISTS app.ct_rehash (col_one INT, col_two INT)")
        .await
        .unwrap();
    sandbox::wait_replicas_caught_up(sb).await;
    let tables: u64 = direct[0]
        .query_first("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app'")
        .await
        .unwrap()
        .unwrap();
    async fn show_fields(direct: &mut [Conn]) -> u64 {
        let mut total = 0;
        for c in direct.iter_mut() {
            let v: Option<(String, u64)> = c
                .query_first("SHOW GLOBAL STATUS LIKE 'Com_show_fields'")
                .await
                .unwrap();
            total += v.unwrap().1;
        }
        total
    }
    let before = show_fields(&mut direct).await;
    // `script` gives the client a pseudo-terminal, so it runs interactively
    // and, with --auto-rehash, reads every table's columns (COM_FIELD_LIST).
    let cli = format!(
        "mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P{} -uapp -papp --auto-rehash app",
        proxy.addr.port()
    );
    let mut cmd = Command::new("script");
    cmd.arg("-qec").arg(&cli).arg("/dev/null");
    let input = "SELECT 6 * 7 AS answer;\n\\s\nquit\n";
    // The client must be up before it reads its input from the terminal.
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script");
    let mut si = child.stdin.take().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = si.write_all(input.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("interactive client finished")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("MariaDB [app]>"),
        "interactive prompt:\n{text}"
    );
    assert!(
        text.contains("| answer |") && text.contains("|     42 |"),
        "{text}"
    );
    assert!(text.contains("Current database:\tapp"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    let after = show_fields(&mut direct).await;
    assert_eq!(
        after - before,
        tables,
        "one COM_FIELD_LIST per table of `app` reached a server"
    );
    assert_quiet_log(mark, "mariadb --auto-rehash");
}

/// Parses "    <label>:   <n>" from sysbench's report.
fn sysbench_count(out: &str, label: &str) -> Option<u64> {
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with(label))
        .and_then(|l| l[label.len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_with_prepared_statements() {
    let (_serial, proxy, mark) = setup().await;
    if std::process::Command::new("sysbench")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: sysbench is not installed");
        return;
    }
    let common = |test: &str, cmd: &str| {
        let mut c = Command::new("sysbench");
        c.arg(test)
            .arg("--mysql-host=127.0.0.1")
            .arg(format!("--mysql-port={}", proxy.addr.port()))
            .arg("--mysql-user=app")
            .arg("--mysql-password=app")
            .arg("--mysql-db=app")
            .arg("--tables=1")
            .arg("--table-size=200")
            .arg("--db-ps-mode=auto");
        c.arg(cmd);
        c
    };
    let limit = Duration::from_secs(60);
    let (code, out, err) = run(&mut common("oltp_read_write", "cleanup"), None, limit).await;
    assert_eq!(code, 0, "cleanup before: {out}{err}");
    let (code, out, err) = run(&mut common("oltp_read_write", "prepare"), None, limit).await;
    println!("{out}{err}");
    assert_eq!(code, 0, "prepare: {out}{err}");
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;

    let runs = [
        ("oltp_read_write", vec!["--time=3", "--threads=4"]),
        // Reads outside transactions: prepared SELECTs on the replicas.
        (
            "oltp_read_only",
            vec!["--time=2", "--threads=4", "--skip-trx=on"],
        ),
    ];
    let sb = sandbox::shared();
    for (test, extra) in runs {
        let mut before = Vec::new();
        for s in &sb.servers {
            before.push(sandbox::global_status(s.port, "Com_stmt_execute").await);
        }
        let mut cmd = common(test, "run");
        cmd.args(&extra);
        let (code, out, err) = run(&mut cmd, None, limit).await;
        let mut executed = Vec::new();
        for (s, b) in sb.servers.iter().zip(&before) {
            executed.push(sandbox::global_status(s.port, "Com_stmt_execute").await - b);
        }
        println!("{test}: prepared executions per server (primary first): {executed:?}");
        println!("{test}:\n{out}{err}");
        assert_eq!(code, 0, "{test}: {out}{err}");
        assert!(
            !out.contains("FATAL") && !err.contains("FATAL"),
            "{test}: {out}{err}"
        );
        let tx = sysbench_count(&out, "transactions:").unwrap_or(0);
        assert!(tx > 0, "{test}: no transactions:\n{out}");
        assert_eq!(sysbench_count(&out, "reconnects:"), Some(0), "{test}");
        let ignored = sysbench_count(&out, "ignored errors:").unwrap_or(0);
        // sysbench ignores only deadlocks and lock waits (1213, 1020, 1205)
        // by default, any other error is FATAL; with 200 rows and 4 threads
        // a few deadlocks are normal, a flood is not.
        assert!(
            ignored * 20 <= tx,
            "{test}: {ignored} ignored errors in {tx} transactions"
        );
    }
    let (code, out, err) = run(&mut common("oltp_read_write", "cleanup"), None, limit).await;
    assert_eq!(code, 0, "cleanup: {out}{err}");
    assert_quiet_log(mark, "sysbench");
}
