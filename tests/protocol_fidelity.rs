//! Protocol details a client can see, checked against a direct connection
//! to the sandbox's primary (issue 16, item 8): extended metadata, session
//! tracking, server administration commands, rwproxy's own errors,
//! non-repeatable `SET`s and the `@@socket` column.

mod common;

use std::time::Duration;

use common::raw::{Raw, Reply};
use common::sandbox;
use mysql_async::prelude::*;
use tokio::process::Command;

/// Runs the `mariadb` CLI against `port` with `args`, feeding `sql` on
/// stdin: (exit code, stdout, stderr).
async fn cli(port: u16, user: &str, args: &[&str], sql: &str) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("mariadb")
        .arg("--no-defaults")
        .arg("--protocol=tcp")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg(format!("-u{user}"))
        .arg(format!("-p{user}"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run mariadb (scripts/install-deps.sh)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(sql.as_bytes()).await.expect("write sql");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("mariadb finished")
        .expect("mariadb output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mariadb-admin` as root against `port`: (exit code, stdout, stderr).
async fn admin(port: u16, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("mariadb-admin")
        .arg("--no-defaults")
        .arg("--protocol=tcp")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg("-uroot")
        .arg("-proot")
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("mariadb-admin finished")
        .expect("run mariadb-admin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mariadb --column-type-info` shows the data type behind a column
/// (`format=json`, `type=point`) only when `MARIADB_CLIENT_EXTENDED_METADATA`
/// was negotiated end to end: the output must be the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_metadata_reaches_the_client() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let sql = "SELECT JSON_OBJECT('a',1) AS j, POINT(1,1) AS p, JSON_ARRAY() AS a;\n";
    let args = ["--column-type-info", "-t", "app"];
    let direct = cli(sb.servers[0].port, "app", &args, sql).await;
    let through = cli(proxy.addr.port(), "app", &args, sql).await;
    assert_eq!(direct.0, 0, "{direct:?}");
    assert!(direct.1.contains("(format=json)"), "{}", direct.1);
    assert!(direct.1.contains("(type=point)"), "{}", direct.1);
    assert_eq!(through, direct);
    // A client that does not ask for it gets plain column definitions
    // (pooled connections of the other kind are never handed to it).
    let mut c = mysql_async::Conn::new(proxy.app_opts())
        .await
        .expect("connect");
    let v: Option<String> = c
        .query_first("SELECT JSON_OBJECT('a', 1)")
        .await
        .expect("select");
    assert_eq!(v.as_deref(), Some(r#"{"a": 1}"#));
    c.disconnect().await.expect("disconnect");
    let again = cli(proxy.addr.port(), "app", &args, sql).await;
    assert_eq!(again, direct);
}

/// The session tracking rwproxy adds for read-your-writes (`last_gtid`)
/// is never visible: not in `@@session_track_system_variables`, not in
/// the OK packets a client gets; a client that sets its own tracking gets
/// exactly that. PyMySQL with `CLIENT_SESSION_TRACK`; every OK packet's
/// bytes are recorded and compared with the direct connection's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_session_tracking_is_invisible() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.track_t (id INT PRIMARY KEY, v INT)",
    )
    .await;
    let script = r#"
import sys, json, pymysql
from pymysql.constants import CLIENT
oks = []
orig = pymysql.connections.Connection._read_packet
def rec(self, *a, **k):
    p = orig(self, *a, **k)
    d = p.get_all_data()
    if d[:1] == b"\x00":
        oks.append(d)
    return p
pymysql.connections.Connection._read_packet = rec
out = {}
for who, port, base in (("direct", int(sys.argv[1]), 0), ("proxy", int(sys.argv[2]), 1000)):
    for track in (True, False):
        flag = CLIENT.MULTI_STATEMENTS | (1 << 23 if track else 0)
        c = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app",
                            database="app", client_flag=flag, autocommit=True)
        cur = c.cursor()
        r = {}
        cur.execute("SELECT @@session_track_system_variables")
        r["name"] = cur.description[0][0]
        r["value"] = cur.fetchone()[0]
        n = base + (500 if track else 0)
        del oks[:]
        cur.execute("INSERT INTO track_t VALUES (%s, 1)" % n)
        cur.execute("UPDATE track_t SET v = 2 WHERE id = %s" % n)
        r["oks"] = [o.hex() for o in oks]
        cur.execute("SELECT v FROM track_t WHERE id = %s" % n)
        r["read"] = cur.fetchone()[0]
        # The client's own tracking: exactly what it asked for.
        cur.execute("SET SESSION session_track_system_variables = 'last_gtid'")
        cur.execute("SELECT @@session_track_system_variables")
        r["own"] = cur.fetchone()[0]
        del oks[:]
        cur.execute("DELETE FROM track_t WHERE id = %s" % n)
        r["own_ok_has_gtid"] = any(b"last_gtid" in o for o in oks)
        c.close()
        out["%s-%s" % (who, str(track).lower())] = r
print(json.dumps(out))
"#;
    let out = tokio::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(sb.servers[0].port.to_string())
        .arg(proxy.addr.port().to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("python finished")
        .expect("run python3 (python3-pymysql from scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    for track in ["true", "false"] {
        let d = &v[format!("direct-{track}")];
        let p = &v[format!("proxy-{track}")];
        println!("track={track}\n direct {d}\n proxy  {p}");
        assert_eq!(p["name"], d["name"]);
        assert_eq!(p["value"], d["value"], "@@session_track_system_variables");
        assert!(!d["value"].as_str().unwrap_or("").contains("last_gtid"));
        // INSERT and UPDATE: byte for byte the server's OK packets (no
        // AUTO_INCREMENT, so nothing in them depends on the server).
        assert_eq!(p["oks"], d["oks"], "OK packets");
        assert_eq!(p["read"], 2, "read-your-writes");
        assert_eq!(p["own"], "last_gtid");
        assert_eq!(p["own_ok_has_gtid"], d["own_ok_has_gtid"]);
    }
    assert_eq!(v["direct-true"]["own_ok_has_gtid"], true);
    assert_eq!(v["direct-false"]["own_ok_has_gtid"], false);
}

/// `COM_REFRESH` (`mariadb-admin refresh`, `flush-hosts`) and `COM_DEBUG`
/// (`mariadb-admin debug`) run on the primary and answer as it does;
/// commands the server does not know get its own ERR 1047.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_reach_the_primary() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let primary = sb.servers[0].port;
    let debug_dumps = || {
        std::fs::read_to_string(&sb.servers[0].log)
            .map_or(0, |t| t.matches("Status information").count())
    };
    for args in [
        &["refresh"][..],
        &["flush-hosts"],
        &["flush-status"],
        &["debug"],
    ] {
        let direct = admin(primary, args).await;
        let flush_before = sandbox::global_status(primary, "Com_flush").await;
        let dumps_before = debug_dumps();
        let through = admin(proxy.addr.port(), args).await;
        assert_eq!(through, direct, "mariadb-admin {args:?}");
        assert_eq!(direct.0, 0, "{args:?}: {direct:?}");
        if args[0] == "debug" {
            // The server writes its status to the error log.
            common::wait_until(
                Duration::from_secs(10),
                "COM_DEBUG's dump in the primary's log",
                || async { debug_dumps() > dumps_before },
            )
            .await;
        } else if args[0] != "flush-status" {
            assert!(
                sandbox::global_status(primary, "Com_flush").await > flush_before,
                "{args:?} did not run on the primary"
            );
        }
    }
    // Without the privilege: the server's refusal, both ways.
    for port in [primary, proxy.addr.port()] {
        let mut c = Raw::connect(([127, 0, 0, 1], port).into(), "app", "app", Some("app"))
            .await
            .expect("login");
        let refused = c.command(0x07, &[0x04]).await;
        match &refused {
            Reply::Err { code, .. } => assert_eq!(*code, 1227, "{refused:?}"),
            other => panic!("COM_REFRESH as app: {other:?}"),
        }
        for code in [0x00, 0x05, 0x0b, 0x0f, 0x10, 0x13, 0x1d, 0x20, 0xff] {
            assert_eq!(
                c.command(code, b"").await,
                Reply::Err {
                    code: 1047,
                    state: "08S01".into(),
                    message: "Unknown command".into()
                },
                "command {code:#04x} on port {port}"
            );
        }
        assert_eq!(c.value("SELECT 1").await.as_deref(), Some("1"));
    }
}

/// rwproxy's own refusals at login say what the server says for the same
/// mistake: code, SQLSTATE and message (host as the server names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_errors_use_the_servers_words() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let direct: std::net::SocketAddr = ([127, 0, 0, 1], sb.servers[0].port).into();
    for (user, pass, db) in [
        ("app", "wrong", Some("app")),
        ("app", "", None),
        ("nobody", "x", None),
        ("app", "app", Some("no_such_db")),
        ("root", "root", Some("no_such_db")),
    ] {
        let d = Raw::connect(direct, user, pass, db).await.err();
        let p = Raw::connect(proxy.addr, user, pass, db).await.err();
        assert!(d.is_some(), "{user}/{pass}/{db:?} logged in directly");
        assert_eq!(p, d, "{user}/{pass}/{db:?}");
    }
}

/// `SET rand_seed1/rand_seed2`, `insert_id`: consumed by what runs next,
/// so they pin the session instead of being replayed on other connections
/// (a replayed seed restarts the `RAND()` sequence; a replayed `insert_id`
/// gives the next INSERT the same id again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_repeatable_sets_pin_the_session() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE IF NOT EXISTS app.seq_t (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(10))",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    let rand = "SELECT RAND()";
    let run = async |opts: mysql_async::Opts, who: &str, round: i64| {
        let mut c = mysql_async::Conn::new(opts).await.expect("connect");
        c.query_drop("SET rand_seed1 = 12345, rand_seed2 = 67890")
            .await
            .expect("seed");
        let mut seq = Vec::new();
        for _ in 0..4 {
            let x: Option<f64> = c.query_first(rand).await.expect("rand");
            seq.push(x.expect("value"));
        }
        // A fresh range each round: AUTO_INCREMENT does not go back.
        let base: i64 = 1_000_000 + round * 1000;
        c.query_drop(format!("SET insert_id = {base}"))
            .await
            .expect("insert_id");
        let mut ids = Vec::new();
        for _ in 0..3 {
            c.query_drop(format!("INSERT INTO app.seq_t (who) VALUES ('{who}')"))
                .await
                .expect("insert");
            ids.push(c.last_insert_id().expect("id") as i64 - base);
            let _: Option<i64> = c
                .query_first("SELECT COUNT(*) FROM app.seq_t")
                .await
                .expect("read");
        }
        c.disconnect().await.expect("disconnect");
        (seq, ids)
    };
    let direct = run(sandbox::app_opts(sb.servers[0].port), "direct", 0).await;
    assert!(direct.0.windows(2).all(|w| w[0] != w[1]), "{direct:?}");
    for (round, mode) in [
        rwproxy::config::PoolMode::Session,
        rwproxy::config::PoolMode::Transaction,
    ]
    .into_iter()
    .enumerate()
    {
        let mut config = common::sandbox_config(sb);
        config.pool_mode = mode;
        let proxy = common::start_proxy(config).await;
        let through = run(proxy.app_opts(), "proxy", round as i64 + 1).await;
        assert_eq!(through, direct, "pool_mode {mode:?}");
    }
}

/// `@@socket` stays hidden (NULL: drivers must not bypass rwproxy through
/// a server's socket) but its column keeps the server's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_column_keeps_its_name() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let sql = "SELECT @@socket, @@SOCKET, @@socket AS s, @@socket IS NULL";
    let names = async |opts: mysql_async::Opts| {
        let mut c = mysql_async::Conn::new(opts).await.expect("connect");
        let row: mysql_async::Row = c.query_first(sql).await.expect("select").expect("row");
        let names: Vec<String> = row
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        let v: Option<String> = row.get(0).expect("value");
        c.disconnect().await.expect("disconnect");
        (names, v)
    };
    let (direct, socket) = names(sandbox::app_opts(sb.servers[0].port)).await;
    assert!(socket.is_some());
    let (through, hidden) = names(proxy.app_opts()).await;
    assert_eq!(hidden, None);
    assert_eq!(through[..3], direct[..3]);
    assert_eq!(through[..3], ["@@socket", "@@SOCKET", "s"]);
}
