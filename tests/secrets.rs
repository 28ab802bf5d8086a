//! Secrets (issue 6, item 2): passwords come from environment variables
//! and files, and no password, native hash (`*HEX`) or SHA1 stage-1 hash
//! ever appears in what rwproxy shows: its logs at debug level, its HTTP
//! endpoints, the admin port's result sets, error messages, `check-config`.
//!
//! One full run of the real binary (`RUST_LOG=debug --log-format json`):
//! the monitor password comes from a file, a user's hash and the admin
//! password from environment variables; logins with right and wrong
//! passwords, account statements carrying passwords (CREATE USER, ALTER
//! USER, SET PASSWORD, GRANT … IDENTIFIED BY), queries, prepared
//! statements, every admin SHOW, a failed admin login, RELOAD (switching to
//! the servers' own accounts, then logging in as the account created
//! through the proxy), /metrics /status /health /digests.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::sandbox;
use mysql_async::Conn;
use mysql_async::prelude::*;
use sha1::{Digest, Sha1};

const CFG_DBA_PW: &str = "Secr3t-cfg-dba-4711";
const APP_PW: &str = "Secr3t-app-env-0815";
const MON_PW: &str = "Secr3t-mon-file-2718";
const ADMIN_PW: &str = "Secr3t-admin-env-3141";
const REPL_PW: &str = "Secr3t-repl-file-1618";
const NEW_PW1: &str = "Secr3t-new-create-1";
const NEW_PW2: &str = "Secr3t-new-alter-2";
const NEW_PW3: &str = "Secr3t-new-setpw-3";
const NEW_PW4: &str = "Secr3t-new-grant-4";
const WRONG_PW: &str = "Secr3t-wrong-9";
const ADMIN_WRONG_PW: &str = "Secr3t-admin-wrong-7";

const ALL: [&str; 11] = [
    CFG_DBA_PW,
    APP_PW,
    MON_PW,
    ADMIN_PW,
    REPL_PW,
    NEW_PW1,
    NEW_PW2,
    NEW_PW3,
    NEW_PW4,
    WRONG_PW,
    ADMIN_WRONG_PW,
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every form of a password that must never be shown: the password, the
/// stage-1 hash SHA1(pw) and the native hash SHA1(SHA1(pw)) in hex (both
/// are compared case-insensitively, so `*HEX` is covered too).
fn forms(pw: &str) -> Vec<String> {
    let stage1 = Sha1::digest(pw.as_bytes());
    let stage2 = Sha1::digest(stage1);
    vec![pw.to_lowercase(), hex(&stage1), hex(&stage2)]
}

fn native_hash(pw: &str) -> String {
    format!(
        "*{}",
        hex(&Sha1::digest(Sha1::digest(pw.as_bytes()))).to_uppercase()
    )
}

fn opts(port: u16, user: &str, pw: &str, db: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pw))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// Everything rwproxy showed, to be searched for secrets at the end.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: &str, text: impl Into<String>) {
        self.0.push((what.to_string(), text.into()));
    }
}

fn err_text(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} ({}): {}", s.code, s.state, s.message),
        other => other.to_string(),
    }
}

async fn admin_rows(port: u16, pw: &str, sql: &str) -> Result<String, String> {
    let mut c = Conn::new(opts(port, "secadmin", pw, None))
        .await
        .map_err(|e| err_text(&e))?;
    let rows: Vec<mysql_async::Row> = c.query(sql).await.map_err(|e| err_text(&e))?;
    let _ = c.disconnect().await;
    Ok(rows
        .into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(v) => v.as_sql(true),
                    None => "NULL".into(),
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

fn config_text(
    ports: &[u16],
    sb: &rwproxy_sandbox::Sandbox,
    repl_file: &str,
    auth: &str,
) -> String {
    let mut t = format!(
        "listen = \"127.0.0.1:{}\"\n\
         http_listen = \"127.0.0.1:{}\"\n\
         auth = \"{auth}\"\n\
         monitor_interval_ms = 200\n\
         [monitor]\n\
         user = \"sec_mon\"\n\
         password_file = \"mon.pw\"\n\
         [admin]\n\
         listen = \"127.0.0.1:{}\"\n\
         user = \"secadmin\"\n\
         password_env = \"RWSEC_ADMIN_PW\"\n\
         [failover]\n\
         replication_user = \"sec_repl\"\n\
         replication_password_file = \"{repl_file}\"\n",
        ports[0], ports[1], ports[2]
    );
    for (i, s) in sb.servers.iter().enumerate() {
        t.push_str(&format!(
            "[[servers]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"{}\"\n",
            s.name,
            s.port,
            if i == 0 { "primary" } else { "replica" }
        ));
    }
    t.push_str(&format!(
        "[[users]]\nname = \"sec_app\"\npassword_hash_env = \"RWSEC_APP_HASH\"\n\
         [[users]]\nname = \"sec_dba\"\npassword = \"{CFG_DBA_PW}\"\n"
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_ever_shown() {
    let sb = sandbox::shared();
    let primary = sb.servers[0].port;
    for sql in [
        format!("CREATE USER sec_mon@'%' IDENTIFIED BY '{MON_PW}'"),
        "GRANT SUPER, REPLICATION CLIENT, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, \
         READ_ONLY ADMIN, BINLOG ADMIN, RELOAD, PROCESS, SLAVE MONITOR, CONNECTION ADMIN \
         ON *.* TO sec_mon@'%'"
            .to_string(),
        "GRANT SELECT ON mysql.* TO sec_mon@'%'".to_string(),
        format!("CREATE USER sec_app@'%' IDENTIFIED BY '{APP_PW}'"),
        "GRANT ALL ON app.* TO sec_app@'%'".to_string(),
        format!("CREATE USER sec_dba@'%' IDENTIFIED BY '{CFG_DBA_PW}'"),
        "GRANT ALL ON *.* TO sec_dba@'%' WITH GRANT OPTION".to_string(),
        format!("CREATE USER sec_repl@'%' IDENTIFIED BY '{REPL_PW}'"),
        "GRANT REPLICATION SLAVE ON *.* TO sec_repl@'%'".to_string(),
    ] {
        common::root_exec(primary, &sql).await;
    }
    sandbox::wait_replicas_caught_up(sb).await;

    let dir = sandbox::temp_dir();
    std::fs::write(dir.join("mon.pw"), format!("{MON_PW}\n")).expect("write");
    let repl_file = dir.join("repl.pw");
    std::fs::write(&repl_file, REPL_PW).expect("write");
    let repl_file = repl_file.display().to_string();
    let ports = sandbox::free_ports(3);
    let path = dir.join("secrets.toml");
    std::fs::write(&path, config_text(&ports, sb, &repl_file, "config")).expect("write");
    let envs = [
        ("RWSEC_APP_HASH", native_hash(APP_PW)),
        ("RWSEC_ADMIN_PW", ADMIN_PW.to_string()),
        ("RUST_LOG", "debug".to_string()),
    ];
    let mut seen = Seen::default();

    // check-config resolves the same sources and shows none of them.
    let out = Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .args(["check-config"])
        .arg(&path)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check-config failed: {text}");
    assert!(text.contains("OK (3 servers, 2 users"), "{text}");
    seen.add("check-config", text);

    let log_path = dir.join("rwproxy.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(log.try_clone().expect("clone")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start rwproxy");
    let child_pid = child.id();
    let proxy_port = ports[0];
    let admin_port = ports[2];
    let http = common::Proxy {
        addr: format!("127.0.0.1:{proxy_port}").parse().expect("addr"),
        admin: Some(format!("127.0.0.1:{admin_port}").parse().expect("addr")),
        http: format!("127.0.0.1:{}", ports[1]).parse().expect("addr"),
        shutdown: Default::default(),
        task: tokio::spawn(async {}),
    };

    // The user whose hash comes from the environment logs in (its stage-1
    // hash then logs into the servers), so the env hash was right.
    let app_opts = opts(proxy_port, "sec_app", APP_PW, Some("app"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut app = loop {
        match Conn::new(app_opts.clone()).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("rwproxy did not accept sec_app within 20 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // The monitor, whose password comes from a file, sees every server.
    common::wait_until(
        Duration::from_secs(20),
        "monitor sees every server up",
        || async {
            let st = common::status(&http).await;
            st["servers"]
                .as_array()
                .is_some_and(|a| a.len() == 3 && a.iter().all(|s| s["up"] == true))
        },
    )
    .await;

    // Wrong passwords.
    for (user, pw) in [
        ("sec_app", WRONG_PW),
        ("sec_dba", APP_PW),
        ("nobody", NEW_PW1),
    ] {
        let e = Conn::new(opts(proxy_port, user, pw, None))
            .await
            .expect_err("wrong password refused");
        let t = err_text(&e);
        assert!(t.starts_with("1045"), "{t}");
        seen.add("login error", t);
    }

    // Account statements carrying passwords, through the proxy.
    let mut dba = Conn::new(opts(proxy_port, "sec_dba", CFG_DBA_PW, None))
        .await
        .expect("sec_dba logs in with the config password");
    for sql in [
        format!("CREATE USER sec_new@'%' IDENTIFIED BY '{NEW_PW1}'"),
        format!("ALTER USER sec_new@'%' IDENTIFIED BY '{NEW_PW2}'"),
        format!("SET PASSWORD FOR sec_new@'%' = PASSWORD('{NEW_PW3}')"),
        format!("GRANT SELECT ON app.* TO sec_new@'%' IDENTIFIED BY '{NEW_PW4}'"),
    ] {
        dba.query_drop(&sql).await.unwrap_or_else(|e| panic!("{e}"));
    }
    // Failing ones: the server's error is forwarded as is.
    for sql in [
        format!("CREATE USER sec_new@'%' IDENTIFIED BY '{NEW_PW1}'"),
        format!("ALTER USER sec_nobody@'%' IDENTIFIED BY '{NEW_PW2}'"),
    ] {
        let e = dba.query_drop(&sql).await.expect_err("fails");
        seen.add("statement error", err_text(&e));
    }
    let hash: Option<String> = dba
        .query_first("SELECT authentication_string FROM mysql.user WHERE user = 'sec_new'")
        .await
        .expect("read the hash back");
    assert_eq!(hash, Some(native_hash(NEW_PW4)), "the last change won");

    // Queries and prepared statements.
    app.query_drop("CREATE TABLE IF NOT EXISTS sec_t (id INT PRIMARY KEY, v VARCHAR(40))")
        .await
        .expect("create");
    app.query_drop("REPLACE INTO sec_t VALUES (1, 'one'), (2, 'two')")
        .await
        .expect("insert");
    let _: Vec<(i32, String)> = app.query("SELECT id, v FROM sec_t").await.expect("select");
    let stmt = app
        .prep("SELECT v FROM sec_t WHERE id = ?")
        .await
        .expect("prepare");
    let v: Option<String> = app.exec_first(&stmt, (2,)).await.expect("execute");
    assert_eq!(v.as_deref(), Some("two"));

    // The admin port: every SHOW, and a failed login.
    for sql in [
        "SHOW SERVERS",
        "SHOW POOLS",
        "SHOW SESSIONS",
        "SHOW ACCOUNTS",
        "SHOW DIGESTS",
        "SHOW STATS",
        "HELP",
    ] {
        let rows = admin_rows(admin_port, ADMIN_PW, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        seen.add(sql, rows);
    }
    let digests = admin_rows(admin_port, ADMIN_PW, "SHOW DIGESTS LIMIT 100")
        .await
        .expect("digests");
    assert!(
        digests.contains("CREATE USER"),
        "the account statements were recorded (normalized): {digests}"
    );
    let e = admin_rows(admin_port, ADMIN_WRONG_PW, "SHOW SERVERS")
        .await
        .expect_err("wrong admin password refused");
    seen.add("admin login error", e);
    let e = admin_rows(
        admin_port,
        ADMIN_PW,
        &format!("SET PASSWORD = '{ADMIN_WRONG_PW}'"),
    )
    .await
    .expect_err("not an admin command");
    // The admin port echoes an unknown command to the operator who typed
    // it; that answer is theirs, only the log must not keep it.
    assert!(e.contains("unknown admin command"), "{e}");

    // RELOAD into the servers' own accounts: the account created through
    // the proxy logs in with its latest password, not an older one.
    std::fs::write(&path, config_text(&ports, sb, &repl_file, "servers")).expect("write");
    let r = admin_rows(admin_port, ADMIN_PW, "RELOAD").await;
    // RELOAD answers OK (no rows).
    assert!(r.is_ok(), "{r:?}");
    let mut new = Conn::new(opts(proxy_port, "sec_new", NEW_PW4, Some("app")))
        .await
        .expect("sec_new logs in through the proxy");
    let v: Option<String> = new
        .query_first("SELECT v FROM sec_t WHERE id = 1")
        .await
        .expect("read");
    assert_eq!(v.as_deref(), Some("one"));
    let e = Conn::new(opts(proxy_port, "sec_new", NEW_PW1, None))
        .await
        .expect_err("old password refused");
    seen.add("login error after reload", err_text(&e));

    for p in ["/metrics", "/status", "/health", "/digests"] {
        let (status, body) = common::http_get(&http, p).await;
        assert!(status == 200 || status == 503, "{p}: {status}");
        seen.add(p, body);
    }
    for c in [app, dba, new] {
        let _ = c.disconnect().await;
    }
    // Let the session-closed lines reach the log, then stop the child (by
    // its own pid, which we started).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = child.kill();
    let _ = child.wait();
    drop(http);
    let log = std::fs::read_to_string(&log_path).expect("read log");
    let log_for_check = log.clone();
    assert!(!log.trim().is_empty(), "no log output (pid {child_pid})");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let _: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    seen.add("log", log);

    let mut leaks = Vec::new();
    for (what, text) in &seen.0 {
        let lower = text.to_lowercase();
        for pw in ALL {
            for f in forms(pw) {
                if lower.contains(&f) {
                    leaks.push(format!("{what}: a form of {pw:?} ({f})"));
                }
            }
        }
    }
    let total: usize = seen.0.iter().map(|(_, t)| t.len()).sum();
    println!(
        "searched {} outputs ({} KiB, {} log lines) for {} forms of {} passwords",
        seen.0.len(),
        total / 1024,
        seen.0
            .iter()
            .find(|(w, _)| w == "log")
            .map(|(_, t)| t.lines().count())
            .unwrap_or(0),
        ALL.len() * 3,
        ALL.len()
    );
    assert!(leaks.is_empty(), "secrets shown:\n{}", leaks.join("\n"));
    // Statements were logged at debug, normalized: the check above was not
    // vacuous.
    let statement_lines: Vec<&str> = log_for_check
        .lines()
        .filter(|l| l.contains("CREATE USER sec_new"))
        .collect();
    assert!(
        statement_lines
            .iter()
            .any(|l| l.contains("IDENTIFIED BY ?")),
        "debug log lacks the normalized CREATE USER: {statement_lines:?}"
    );
}
