//! The Unix socket listener (issue 19, item 2): `listen_socket` serves the
//! same protocol as TCP to the `mariadb` CLI (`-S`), PyMySQL
//! (`unix_socket=`) and mysql_async (`OptsBuilder::socket`), with reads
//! and writes routed as for TCP (proved by the servers' own counters);
//! socket clients are host `localhost` for account matching and in
//! SHOW SESSIONS; the socket file gets its mode, is refused when a live
//! server owns it, taken over when stale, and removed on shutdown.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::sandbox;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use rwproxy::config::Config;
use tokio::process::Command;
use tokio::sync::{Mutex, MutexGuard};

/// Counter-based tests must not overlap (they share the sandbox's servers).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// A socket path of its own for each test (short: sun_path is 108 bytes).
fn socket_path(tag: &str) -> PathBuf {
    let dir = sandbox::temp_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    let p = dir.join(format!("{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// The sandbox's config with a quiet monitor (its queries would move the
/// counters) and `listen_socket` at `path`.
fn config(path: &Path) -> Config {
    let mut c = common::sandbox_config(sandbox::shared());
    c.monitor_interval_ms = 60_000;
    c.accounts_refresh_ms = 60_000;
    c.listen_socket = Some(path.to_path_buf());
    c.listen_socket_mode = Some("0660".into());
    c
}

/// Counters of every server (primary first).
async fn counters(direct: &mut [Conn]) -> Vec<HashMap<String, i64>> {
    let mut out = Vec::new();
    for c in direct.iter_mut() {
        let rows: Vec<(String, String)> = c
            .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select', 'Com_insert')")
            .await
            .expect("show status");
        out.push(
            rows.into_iter()
                .map(|(k, v)| (k, v.parse().unwrap_or(0)))
                .collect(),
        );
    }
    out
}

async fn direct_conns() -> Vec<Conn> {
    let mut v = Vec::new();
    for s in &sandbox::shared().servers {
        v.push(Conn::new(sandbox::root_opts(s.port)).await.expect("root"));
    }
    v
}

/// Per server, `after - before` of `name`.
fn deltas(before: &[HashMap<String, i64>], after: &[HashMap<String, i64>], name: &str) -> Vec<i64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.get(name).copied().unwrap_or(0) - b.get(name).copied().unwrap_or(0))
        .collect()
}

/// Runs a client's `write` phase (`writes` INSERTs), waits until the
/// replicas applied it, then its `read` phase (`reads` plain SELECTs, on a
/// new connection: a session that just wrote may read from the primary),
/// and checks on the servers that the writes ran on the primary and every
/// read on a replica, both replicas taking some.
async fn assert_routed<W, R>(
    direct: &mut [Conn],
    what: &str,
    writes: i64,
    reads: i64,
    write: W,
    read: R,
) where
    W: std::future::Future<Output = ()>,
    R: std::future::Future<Output = ()>,
{
    // Two windows: waiting for the replicas runs queries of its own.
    let before = counters(direct).await;
    write.await;
    let after = counters(direct).await;
    let ins = deltas(&before, &after, "Com_insert");
    println!("{what} writes: Com_insert {ins:?}");
    assert_eq!(ins[0], writes, "{what}: the writes ran on the primary");
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    let before = counters(direct).await;
    read.await;
    let after = counters(direct).await;
    let sel = deltas(&before, &after, "Com_select");
    println!("{what} reads: Com_select {sel:?}");
    assert_eq!(sel[0], 0, "{what}: no plain read may reach the primary");
    assert!(
        sel[1..].iter().sum::<i64>() >= reads,
        "{what}: the {reads} reads ran on the replicas: {sel:?}"
    );
    assert!(
        sel[1] > 0 && sel[2] > 0,
        "{what}: both replicas served reads: {sel:?}"
    );
}

async fn run(cmd: &mut Command) -> (i32, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish"))
        .expect("spawn");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lock() -> impl std::future::Future<Output = MutexGuard<'static, ()>> {
    SERIAL.lock()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_the_socket_are_routed_like_tcp() {
    let _serial = lock().await;
    let path = socket_path("route");
    let proxy = common::start_proxy(common::with_admin(config(&path))).await;
    let meta = std::fs::symlink_metadata(&path).expect("socket file exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o660,
        "listen_socket_mode"
    );
    let mut direct = direct_conns().await;
    direct[0]
        .query_drop(
            "CREATE TABLE IF NOT EXISTS app.us_t (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(20))",
        )
        .await
        .expect("create");
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;

    // mysql_async.
    let opts = OptsBuilder::default()
        .socket(Some(path.to_string_lossy().into_owned()))
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("app"))
        .prefer_socket(false);
    let mut c = Conn::new(opts.clone())
        .await
        .expect("mysql_async over the socket");
    // SHOW SESSIONS names socket clients `localhost`, not a made-up IP.
    let sessions = common::admin(&proxy, "SHOW SESSIONS").await.expect("admin");
    println!("{sessions:?}");
    assert!(
        sessions.iter().any(|r| r.iter().any(|v| v == "localhost")),
        "{sessions:?}"
    );
    let mut r = Conn::new(opts).await.expect("second connection");
    assert_routed(
        &mut direct,
        "mysql_async",
        2,
        6,
        async {
            for _ in 0..2 {
                c.query_drop("INSERT INTO us_t (who) VALUES ('async')")
                    .await
                    .expect("insert");
            }
        },
        async {
            for _ in 0..6 {
                let n: Option<i64> = r
                    .query_first("SELECT COUNT(*) FROM us_t WHERE who = 'async'")
                    .await
                    .expect("read");
                assert_eq!(n, Some(2));
            }
        },
    )
    .await;
    c.disconnect().await.expect("disconnect");
    r.disconnect().await.expect("disconnect");

    // The mariadb CLI.
    let cli = |sql: &str| {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .arg(format!("-S{}", path.display()))
            .args(["-uapp", "-papp", "app", "-e", sql]);
        c
    };
    let (mut w, mut r) = (None, None);
    assert_routed(
        &mut direct,
        "mariadb -S",
        1,
        4,
        async { w = Some(run(&mut cli("INSERT INTO us_t (who) VALUES ('cli')")).await) },
        async {
            r = Some(
                run(&mut cli(
                    "SELECT COUNT(*) AS n_cli FROM us_t WHERE who = 'cli'; SELECT 1; SELECT 2; SELECT 3;",
                ))
                .await,
            )
        },
    )
    .await;
    let outs: Vec<_> = [w, r].into_iter().flatten().collect();
    for (code, out, err) in &outs {
        println!("{out}{err}");
        assert_eq!(*code, 0, "mariadb -S failed: {err}");
    }
    assert!(outs[1].1.contains("n_cli\n1\n"), "{}", outs[1].1);

    // PyMySQL.
    let script = r#"
import sys
try:
    import pymysql
except ImportError:
    print("NO_PYMYSQL")
    sys.exit(0)
c = pymysql.connect(unix_socket=sys.argv[1], user="app", password="app",
                    database="app", autocommit=True)
cur = c.cursor()
if sys.argv[2] == "write":
    cur.execute("INSERT INTO us_t (who) VALUES (%s)", ("py",))
else:
    for _ in range(4):
        cur.execute("SELECT COUNT(*) FROM us_t WHERE who = %s", ("py",))
        print("py rows", cur.fetchone()[0])
c.close()
"#;
    let py = |phase: &str| {
        let mut c = Command::new("/usr/bin/python3");
        c.arg("-c").arg(script).arg(&path).arg(phase);
        c
    };
    let (mut w, mut r) = (None, None);
    assert_routed(
        &mut direct,
        "pymysql",
        1,
        4,
        async { w = Some(run(&mut py("write")).await) },
        async { r = Some(run(&mut py("read")).await) },
    )
    .await;
    let outs: Vec<_> = [w, r].into_iter().flatten().collect();
    for (code, out, err) in &outs {
        println!("{out}{err}");
        assert!(
            !out.contains("NO_PYMYSQL"),
            "python3-pymysql is required (scripts/install-deps.sh)"
        );
        assert_eq!(*code, 0, "{err}");
    }
    assert!(outs[1].1.contains("py rows 1"), "{}", outs[1].1);

    // Everything written through the socket is on the primary.
    let rows: Vec<(String, i64)> = direct[0]
        .query("SELECT who, COUNT(*) FROM app.us_t GROUP BY who ORDER BY who")
        .await
        .expect("rows");
    assert_eq!(
        rows,
        vec![("async".into(), 2), ("cli".into(), 1), ("py".into(), 1)]
    );
    direct[0]
        .query_drop("DROP TABLE app.us_t")
        .await
        .expect("drop");
    drop(proxy);
    wait_gone(&path).await;
}

/// Waits (bounded) until the proxy removed its socket file.
async fn wait_gone(path: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still exists after shutdown",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A live server's socket is refused with a clear error; a stale one
/// (nobody answers) is taken over; a file that is not a socket is never
/// removed; the socket goes away when the proxy stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_file_lifecycle() {
    let path = socket_path("life");
    let cfg = config(&path);
    // Stale: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    assert!(path.exists());
    let first = rwproxy::server::UnixSocket::bind(&cfg).expect("stale socket taken over");
    // Live: a second instance is refused and leaves the file alone.
    let e = match rwproxy::server::UnixSocket::bind(&cfg) {
        Ok(_) => panic!("a second listener took a live socket over"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("another server is listening"), "{e}");
    assert!(
        std::os::unix::net::UnixStream::connect(&path).is_ok(),
        "still served"
    );
    drop(first);
    // Not a socket: refused, not removed.
    let plain = socket_path("plain");
    std::fs::write(&plain, b"keep me").expect("file");
    let mut c = cfg.clone();
    c.listen_socket = Some(plain.clone());
    let e = match rwproxy::server::UnixSocket::bind(&c) {
        Ok(_) => panic!("a regular file was replaced"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&plain).expect("kept"), b"keep me");
    let _ = std::fs::remove_file(&plain);

    // The whole proxy: serves, then removes the file on shutdown.
    let _ = std::fs::remove_file(&path);
    let proxy = common::start_proxy(cfg).await;
    let opts = OptsBuilder::default()
        .socket(Some(path.to_string_lossy().into_owned()))
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false);
    let mut c = Conn::new(opts).await.expect("login over the socket");
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("query");
    assert_eq!(one, Some(1));
    // A client that asks for TLS on the socket (not offered) gets an ERR,
    // and the proxy goes on serving.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&path)
            .await
            .expect("connect");
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.expect("greeting header");
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let mut greeting = vec![0; len];
        s.read_exact(&mut greeting).await.expect("greeting");
        // SSLRequest: CLIENT_SSL | PROTOCOL_41 | SECURE_CONNECTION, seq 1.
        let caps: u32 = 0x0800 | 0x0200 | 0x8000;
        let mut req = vec![32, 0, 0, 1];
        req.extend_from_slice(&caps.to_le_bytes());
        req.extend_from_slice(&(1u32 << 24).to_le_bytes());
        req.push(45);
        req.extend_from_slice(&[0; 23]);
        s.write_all(&req).await.expect("ssl request");
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply)).await;
        assert!(
            reply.len() > 4 && reply[4] == 0xff,
            "ERR expected: {reply:?}"
        );
    }
    let two: Option<i64> = c.query_first("SELECT 2").await.expect("still serving");
    assert_eq!(two, Some(2));
    drop(c);
    drop(proxy);
    wait_gone(&path).await;
}

/// Socket clients are host `localhost` for account matching: an account
/// pair 'us_hp'@'localhost' + 'us_hp'@'127.0.0.1' (the second is what the
/// servers see of rwproxy's own logins) lets a socket client in; a wrong
/// password names 'localhost' as the server would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_clients_match_localhost_accounts() {
    let _serial = lock().await;
    let path = socket_path("host");
    let mut direct = direct_conns().await;
    direct[0]
        .query_drop(
            "DROP USER IF EXISTS 'us_hp'@'localhost', 'us_hp'@'127.0.0.1'; \
             CREATE USER 'us_hp'@'localhost' IDENTIFIED BY 'pw'; \
             CREATE USER 'us_hp'@'127.0.0.1' IDENTIFIED BY 'pw'",
        )
        .await
        .expect("accounts");
    sandbox::wait_replicas_caught_up(sandbox::shared()).await;
    let proxy = common::start_proxy(config(&path)).await;
    let sock = |pw: &str| {
        OptsBuilder::default()
            .socket(Some(path.to_string_lossy().into_owned()))
            .user(Some("us_hp"))
            .pass(Some(pw.to_string()))
            .prefer_socket(false)
    };
    let mut c = Conn::new(sock("pw"))
        .await
        .expect("socket login as localhost");
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("query");
    assert_eq!(one, Some(1));
    drop(c);
    let e = Conn::new(sock("wrong")).await.expect_err("wrong password");
    assert!(
        e.to_string().contains("'us_hp'@'localhost'"),
        "the refusal names localhost: {e}"
    );
    direct[0]
        .query_drop("DROP USER 'us_hp'@'localhost', 'us_hp'@'127.0.0.1'")
        .await
        .expect("drop users");
    drop(proxy);
    wait_gone(&path).await;
}

/// `listen_socket_owner` / `listen_socket_group` by name give the socket
/// file that owner and group (the test runs as root, as CI does; only
/// root may give a file away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_owner_and_group_are_applied() {
    use std::os::unix::fs::MetadataExt;
    let _serial = lock().await;
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test needs root (chown to another user), as CI runs"
    );
    let path = socket_path("owner");
    let mut c = config(&path);
    c.listen_socket_owner = Some("nobody".into());
    c.listen_socket_group = Some("nogroup".into());
    c.listen_socket_mode = Some("0600".into());
    let _proxy = common::start_proxy(c).await;
    let meta = std::fs::symlink_metadata(&path).expect("socket file exists");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    assert_eq!(meta.uid(), nobody.uid.as_raw());
    assert_eq!(meta.gid(), nogroup.gid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    // root still connects (as the server's own socket lets it).
    let opts = OptsBuilder::default()
        .socket(Some(path.to_string_lossy().into_owned()))
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false);
    let mut conn = Conn::new(opts).await.expect("connect over the socket");
    let one: i64 = conn.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
}
