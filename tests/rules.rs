//! Query rules (issue 6, item 4) through a real rwproxy in front of a real
//! primary + 2 replicas: a denied statement gets ERR 1142 naming the rule
//! and no server ever sees it; a forced route lands where forced, except
//! where that would break correctness; hits are counted; RELOAD applies new
//! rules to open sessions.
//!
//! Evidence is the servers' own `Com_*` counters, read directly before and
//! after. To keep them exact the proxy's monitor polls once at start-up
//! (`monitor_interval_ms = 60000`) and accounts come from the config
//! (`auth = "config"`, no periodic account refresh on the primary).

mod common;

use std::collections::HashMap;

use common::sandbox;
use mysql_async::Conn;
use mysql_async::prelude::*;

const RULES: &str = r#"
[[rules]]
name = "no-truncate"
regex = '(?i)^\s*truncate\b'
action = "deny"

[[rules]]
name = "no-delete-all"
digest = "delete from rules_t"
action = "deny"

[[rules]]
name = "hot-read-on-primary"
digest = "SELECT v FROM rules_t WHERE id = ?"
route = "primary"

[[rules]]
name = "locking-read-to-replica"
kind = "read_primary"
regex = "rules_t"
route = "replica"

[[rules]]
name = "app-only"
user = "app"
regex = "rules_forbidden"
action = "deny"
"#;

const LATE_RULE: &str = r#"
[[rules]]
name = "late-deny"
regex = "rules_late"
action = "deny"
"#;

type Counters = HashMap<u16, HashMap<String, i64>>;

/// Root connections to every server, opened before any measurement.
struct Direct(Vec<(u16, Conn)>);

impl Direct {
    async fn counters(&mut self) -> Counters {
        let sql = "SHOW GLOBAL STATUS WHERE Variable_name IN \
                   ('Com_select','Com_truncate','Com_delete','Com_stmt_prepare','Com_stmt_execute')";
        let mut out = HashMap::new();
        for (port, c) in &mut self.0 {
            let rows: Vec<(String, String)> = c.query(sql).await.expect("show status");
            out.insert(
                *port,
                rows.into_iter()
                    .map(|(k, v)| (k, v.parse::<i64>().unwrap_or(0)))
                    .collect(),
            );
        }
        out
    }
}

fn delta(before: &Counters, after: &Counters, port: u16, name: &str) -> i64 {
    let get = |c: &Counters| c[&port].get(name).copied().unwrap_or(0);
    get(after) - get(before)
}

fn server_err(e: mysql_async::Error) -> (u16, String, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state, s.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn metric(body: &str, rule: &str) -> Option<u64> {
    let prefix = format!("rwproxy_rule_hits_total{{rule=\"{rule}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_deny_and_force_routes_on_real_servers() {
    let sb = sandbox::shared();
    let primary = sb.servers[0].port;
    let replicas = [sb.servers[1].port, sb.servers[2].port];
    let mut cfg = common::with_admin(common::sandbox_config(sb));
    cfg.monitor_interval_ms = 60_000;
    cfg.accounts_refresh_ms = 60_000;
    // No `SELECT @@last_gtid` after writes: only the test's statements count.
    cfg.consistency = rwproxy::config::Consistency::Eventual;
    cfg.auth = rwproxy::config::AuthMode::Config;
    cfg.users = ["app", "root"]
        .iter()
        .map(|u| rwproxy::config::UserConfig {
            name: (*u).into(),
            password: Some((*u).into()),
            ..Default::default()
        })
        .collect();
    let base = toml::to_string(&cfg).expect("toml");
    let path = sandbox::temp_dir().join("rules.toml");
    std::fs::write(&path, format!("{base}{RULES}")).expect("write config");
    let cfg = rwproxy::config::Config::load(&path).expect("valid config with rules");
    assert_eq!(cfg.rules.len(), 5);
    let proxy = common::start_proxy_with_path(cfg, Some(path.clone())).await;

    common::root_exec(
        primary,
        "CREATE TABLE IF NOT EXISTS app.rules_t (id INT PRIMARY KEY, v VARCHAR(20))",
    )
    .await;
    common::root_exec(
        primary,
        "REPLACE INTO app.rules_t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;

    // Every connection opens before the first measurement: the driver's
    // connect-time query is a read and would count on a replica.
    let mut app = proxy.app_conn().await;
    let mut app2 = proxy.app_conn().await;
    let mut root = Conn::new(proxy.opts("root", "root", Some("app")))
        .await
        .expect("root through the proxy");
    let mut direct = Direct(Vec::new());
    for port in [primary, replicas[0], replicas[1]] {
        direct.0.push((
            port,
            Conn::new(sandbox::root_opts(port)).await.expect("direct"),
        ));
    }
    let all = [primary, replicas[0], replicas[1]];

    // 1. Deny: ERR 1142 / 42000 naming the rule; no server sees it; the
    //    session goes on.
    let before = direct.counters().await;
    let (code, state, msg) = server_err(
        app.query_drop("TRUNCATE TABLE rules_t")
            .await
            .expect_err("denied"),
    );
    assert_eq!((code, state.as_str()), (1142, "42000"), "{msg}");
    assert!(msg.contains("'no-truncate'"), "{msg}");
    let (code, _, msg) = server_err(
        app.query_drop("DELETE  FROM rules_t")
            .await
            .expect_err("denied"),
    );
    assert_eq!(code, 1142);
    assert!(msg.contains("'no-delete-all'"), "{msg}");
    // Denied at prepare: never prepared anywhere.
    let (code, _, msg) = server_err(
        app.prep("truncate rules_t")
            .await
            .expect_err("denied at prepare"),
    );
    assert_eq!(code, 1142);
    assert!(msg.contains("'no-truncate'"), "{msg}");
    // A user-scoped rule: denied for app, allowed for root.
    let (code, _, msg) = server_err(
        app.query_drop("SELECT 'rules_forbidden'")
            .await
            .expect_err("denied for app"),
    );
    assert_eq!(code, 1142);
    assert!(msg.contains("'app-only'"), "{msg}");
    let after = direct.counters().await;
    for port in all {
        for name in [
            "Com_truncate",
            "Com_delete",
            "Com_stmt_prepare",
            "Com_select",
        ] {
            assert_eq!(
                delta(&before, &after, port, name),
                0,
                "{name} moved on {port}: a denied statement reached a server"
            );
        }
    }
    let before = direct.counters().await;
    let v: Option<String> = root
        .query_first("SELECT 'rules_forbidden'")
        .await
        .expect("allowed for root");
    assert_eq!(v.as_deref(), Some("rules_forbidden"));
    // The session that was denied goes on.
    let n: Option<i64> = app
        .query_first("SELECT COUNT(*) FROM rules_t")
        .await
        .expect("session continues");
    assert_eq!(n, Some(3));
    let after = direct.counters().await;
    assert_eq!(
        replicas
            .iter()
            .map(|r| delta(&before, &after, *r, "Com_select"))
            .sum::<i64>(),
        2,
        "the two allowed reads ran on replicas"
    );

    // 2. Forced primary: a plain read the router would send to a replica.
    const N: i64 = 10;
    let before = direct.counters().await;
    for i in 0..N {
        let v: Option<String> = app
            .query_first(format!("SELECT v FROM rules_t WHERE id = {}", 1 + i % 3))
            .await
            .expect("hot read");
        assert!(v.is_some());
    }
    let stmt = app
        .prep("SELECT v FROM rules_t WHERE id = ?")
        .await
        .expect("prepare hot read");
    for i in 0..N {
        let v: Option<String> = app.exec_first(&stmt, (1 + i % 3,)).await.expect("exec");
        assert!(v.is_some());
    }
    let after = direct.counters().await;
    let d = |port, name| delta(&before, &after, port, name);
    println!(
        "forced primary: Com_select primary {}, replicas {} {}; Com_stmt_execute primary {}, replicas {} {}",
        d(primary, "Com_select"),
        d(replicas[0], "Com_select"),
        d(replicas[1], "Com_select"),
        d(primary, "Com_stmt_execute"),
        d(replicas[0], "Com_stmt_execute"),
        d(replicas[1], "Com_stmt_execute"),
    );
    // An executed prepared SELECT counts in Com_select too.
    assert_eq!(d(primary, "Com_select"), 2 * N);
    assert_eq!(d(primary, "Com_stmt_execute"), N);
    for r in replicas {
        assert_eq!(d(r, "Com_select"), 0, "forced-primary read on replica {r}");
        assert_eq!(d(r, "Com_stmt_execute"), 0, "forced-primary execute on {r}");
    }

    // 3. Forced replica: a locking read outside a transaction goes to the
    //    replicas; inside a transaction, or in a session pinned by a
    //    temporary table, it stays on the primary.
    let before = direct.counters().await;
    for _ in 0..N {
        let _: Vec<String> = app2
            .query("SELECT v FROM rules_t LOCK IN SHARE MODE")
            .await
            .expect("locking read");
    }
    let after = direct.counters().await;
    let d = |port, name| delta(&before, &after, port, name);
    assert_eq!(d(primary, "Com_select"), 0, "forced replica ran on primary");
    assert_eq!(
        d(replicas[0], "Com_select") + d(replicas[1], "Com_select"),
        N
    );

    let before = direct.counters().await;
    app2.query_drop("START TRANSACTION").await.expect("begin");
    let _: Vec<String> = app2
        .query("SELECT v FROM rules_t LOCK IN SHARE MODE")
        .await
        .expect("locking read in a transaction");
    app2.query_drop("COMMIT").await.expect("commit");
    app2.query_drop("CREATE TEMPORARY TABLE rules_tmp (a INT)")
        .await
        .expect("temporary table pins the session");
    let _: Vec<String> = app2
        .query("SELECT v FROM rules_t LOCK IN SHARE MODE")
        .await
        .expect("locking read when pinned");
    let after = direct.counters().await;
    let d = |port, name| delta(&before, &after, port, name);
    assert_eq!(
        d(primary, "Com_select"),
        2,
        "in a transaction / pinned: primary"
    );
    for r in replicas {
        assert_eq!(d(r, "Com_select"), 0, "replica {r} got a read it must not");
    }

    // 4. Hits, in /metrics and SHOW STATS.
    let (status, body) = common::http_get(&proxy, "/metrics").await;
    assert_eq!(status, 200);
    let expected = [
        ("no-truncate", 2),
        ("no-delete-all", 1),
        ("hot-read-on-primary", N as u64 + 1),
        ("locking-read-to-replica", N as u64 + 2),
        ("app-only", 1),
    ];
    for (rule, n) in expected {
        assert_eq!(metric(&body, rule), Some(n), "{rule} in:\n{body}");
    }
    let stats = common::admin(&proxy, "SHOW STATS").await.expect("stats");
    let stat = |k: &str| {
        stats
            .iter()
            .find(|r| r[0] == k)
            .map(|r| r[1].clone())
            .unwrap_or_default()
    };
    assert_eq!(stat("rule_hits.no-truncate"), "2", "{stats:?}");

    // 5. RELOAD: a new rule reaches the sessions already open; counters of
    //    rules that stay carry on.
    let _: Option<String> = app
        .query_first("SELECT 'rules_late'")
        .await
        .expect("allowed before the reload");
    std::fs::write(&path, format!("{base}{RULES}{LATE_RULE}")).expect("rewrite config");
    common::admin(&proxy, "RELOAD").await.expect("reload");
    let (code, _, msg) = server_err(
        app.query_drop("SELECT 'rules_late'")
            .await
            .expect_err("denied after reload"),
    );
    assert_eq!(code, 1142);
    assert!(msg.contains("'late-deny'"), "{msg}");
    let (_, body) = common::http_get(&proxy, "/metrics").await;
    assert_eq!(metric(&body, "late-deny"), Some(1), "{body}");
    assert_eq!(metric(&body, "no-truncate"), Some(2), "kept across RELOAD");

    // An invalid regex is rejected by RELOAD, naming the rule; the rules in
    // force stay.
    std::fs::write(
        &path,
        format!("{base}{RULES}\n[[rules]]\nname = \"broken\"\nregex = \"(\"\naction = \"deny\"\n"),
    )
    .expect("rewrite config");
    let e = common::admin(&proxy, "RELOAD")
        .await
        .expect_err("bad regex rejected");
    assert!(e.contains("broken") && e.contains("rules[5].regex"), "{e}");
    assert!(
        app.query_drop("SELECT 'rules_late'").await.is_err(),
        "old rules still in force"
    );

    drop(app);
    drop(app2);
    drop(root);
    for (_, c) in direct.0 {
        let _ = c.disconnect().await;
    }
}

/// `check-config` compiles the query rules as `run` would: a rule whose
/// regular expression does not compile is reported with its name, and the
/// command fails (no server needed).
#[test]
fn check_config_rejects_a_rule_that_does_not_compile() {
    let dir = std::env::temp_dir().join(format!("rwproxy-rules-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("rwproxy.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\nauth = \"config\"\n\n[monitor]\nuser = \"mon\"\npassword = \"m\"\n\n\
         [[servers]]\nname = \"p\"\nhost = \"127.0.0.1\"\nport = 1\nrole = \"primary\"\n\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n\n\
         [[rules]]\nname = \"broken\"\nregex = \"(unclosed\"\naction = \"deny\"\n",
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .args(["--log-color", "never", "check-config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !out.status.success(),
        "check-config accepted a broken rule: {text}"
    );
    assert!(
        text.contains("rules[0]") || text.contains("broken"),
        "{text}"
    );
}
