//! Accounts from the servers (issue: "Accounts from the servers"): an
//! account created on the primary works through rwproxy at once, password
//! changes and drops take effect, host patterns and locks are honoured,
//! and the servers enforce their own grants.

mod common;

use std::time::{Duration, Instant};

use common::sandbox;
use common::{root_exec, start_proxy};
use mysql_async::prelude::*;

fn server_code(e: &mysql_async::Error) -> Option<(u16, String)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.state.clone())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_accounts_lifecycle_through_the_proxy() {
    let sb = sandbox::shared();
    let p = sb.servers[0].port;
    let cfg = common::sandbox_config(sb);
    assert_eq!(
        cfg.auth,
        rwproxy::config::AuthMode::Servers,
        "servers mode is the default"
    );
    let proxy = start_proxy(cfg).await;
    for u in ["acc_u1", "acc_far", "acc_locked", "acc_other"] {
        root_exec(p, &format!("DROP USER IF EXISTS '{u}'@'%'")).await;
        root_exec(p, &format!("DROP USER IF EXISTS '{u}'@'10.%'")).await;
    }
    root_exec(p, "CREATE TABLE IF NOT EXISTS app.acc_secret (id INT)").await;

    // CREATE USER + GRANT through rwproxy, then log in as that user within a second.
    let mut admin_conn = proxy.app_conn().await;
    let mut root = mysql_async::Conn::new(proxy.opts("root", "root", None))
        .await
        .expect("root via proxy");
    root.query_drop("CREATE USER 'acc_u1'@'%' IDENTIFIED BY 'pw1'")
        .await
        .expect("create user");
    root.query_drop("GRANT SELECT ON app.lagt TO 'acc_u1'@'%'")
        .await
        .ok();
    root.query_drop("GRANT SELECT ON app.acc_secret TO 'acc_u1'@'%'")
        .await
        .expect("grant");
    let created = Instant::now();
    let mut u1 = loop {
        match mysql_async::Conn::new(proxy.opts("acc_u1", "pw1", Some("app"))).await {
            Ok(c) => break c,
            Err(e) if created.elapsed() < Duration::from_secs(1) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("new account could not log in within 1 s: {e}"),
        }
    };
    println!(
        "new account logged in {:.0} ms after CREATE USER",
        created.elapsed().as_secs_f64() * 1000.0
    );
    // The read goes to a replica: let it apply the table and the grant
    // (on a busy machine it may be a few ms behind).
    sandbox::wait_replicas_caught_up(sb).await;
    let n: Option<i64> = u1
        .query_first("SELECT COUNT(*) FROM app.acc_secret")
        .await
        .expect("granted read");
    assert!(n.is_some());
    // The server enforces its own grants: no INSERT privilege.
    let e = u1
        .query_drop("INSERT INTO app.acc_secret VALUES (1)")
        .await
        .expect_err("no INSERT grant");
    assert_eq!(server_code(&e).map(|c| c.0), Some(1142), "{e}");
    drop(u1);

    // Wrong password → 1045 / 28000.
    let e = mysql_async::Conn::new(proxy.opts("acc_u1", "nope", None))
        .await
        .expect_err("wrong password");
    assert_eq!(server_code(&e), Some((1045, "28000".into())), "{e}");

    // ALTER USER … IDENTIFIED BY changes which password works (the periodic
    // refresh picks it up; a login with the new password refreshes on miss).
    root.query_drop("ALTER USER 'acc_u1'@'%' IDENTIFIED BY 'pw2'")
        .await
        .expect("alter");
    let changed = Instant::now();
    loop {
        let new_ok = mysql_async::Conn::new(proxy.opts("acc_u1", "pw2", None))
            .await
            .is_ok();
        let old_ok = mysql_async::Conn::new(proxy.opts("acc_u1", "pw1", None))
            .await
            .is_ok();
        if new_ok && !old_ok {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(15),
            "password change not honoured (new ok {new_ok}, old ok {old_ok})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "password change honoured after {:.1} s",
        changed.elapsed().as_secs_f64()
    );

    // A host pattern that excludes 127.0.0.1 is refused.
    root.query_drop("CREATE USER 'acc_far'@'10.%' IDENTIFIED BY 'pw'")
        .await
        .expect("create far");
    let e = mysql_async::Conn::new(proxy.opts("acc_far", "pw", None))
        .await
        .expect_err("host pattern");
    assert_eq!(server_code(&e).map(|c| c.0), Some(1045), "{e}");

    // A locked account gets the server's 4151.
    root.query_drop("CREATE USER 'acc_locked'@'%' IDENTIFIED BY 'pw' ACCOUNT LOCK")
        .await
        .expect("create locked");
    let e = mysql_async::Conn::new(proxy.opts("acc_locked", "pw", None))
        .await
        .expect_err("locked");
    assert_eq!(server_code(&e).map(|c| c.0), Some(4151), "{e}");

    // COM_CHANGE_USER to another server account works.
    root.query_drop("CREATE USER 'acc_other'@'%' IDENTIFIED BY 'opw'")
        .await
        .expect("create other");
    root.query_drop("GRANT SELECT ON app.* TO 'acc_other'@'%'")
        .await
        .expect("grant other");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let opts = mysql_async::ChangeUserOpts::default()
        .with_user(Some("acc_other".into()))
        .with_pass(Some("opw".into()));
    admin_conn.change_user(opts).await.expect("change user");
    let who: Option<String> = admin_conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .expect("whoami");
    assert_eq!(who.as_deref(), Some("acc_other@%"));

    // DROP USER ends new logins.
    root.query_drop("DROP USER 'acc_u1'@'%'")
        .await
        .expect("drop");
    let dropped = Instant::now();
    loop {
        if mysql_async::Conn::new(proxy.opts("acc_u1", "pw2", None))
            .await
            .is_err()
        {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(15),
            "dropped user can still log in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "DROP USER honoured after {:.1} s",
        dropped.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mode_uses_the_file_and_hashes() {
    let sb = sandbox::shared();
    let mut cfg = common::sandbox_config(sb);
    cfg.auth = rwproxy::config::AuthMode::Config;
    cfg.users = vec![rwproxy::config::UserConfig {
        name: "app".into(),
        password: None,
        // SELECT PASSWORD('app')
        password_hash: Some("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3".into()),
        ..Default::default()
    }];
    let proxy = start_proxy(cfg).await;
    let mut c = proxy.app_conn().await;
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("query");
    assert_eq!(one, Some(1));
    // root exists on the servers but not in the file: refused.
    let e = mysql_async::Conn::new(proxy.opts("root", "root", None))
        .await
        .expect_err("not in config");
    assert_eq!(server_code(&e).map(|c| c.0), Some(1045), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_unsupported_plugin_and_caching_sha2_clients() {
    let sb = sandbox::shared();
    let p = sb.servers[0].port;
    for u in ["acc_expired", "acc_socket"] {
        root_exec(p, &format!("DROP USER IF EXISTS '{u}'@'%'")).await;
    }
    root_exec(
        p,
        "CREATE USER 'acc_expired'@'%' IDENTIFIED BY 'pw' PASSWORD EXPIRE",
    )
    .await;
    root_exec(p, "CREATE USER 'acc_socket'@'%' IDENTIFIED VIA unix_socket").await;
    let proxy = start_proxy(common::with_admin(common::sandbox_config(sb))).await;

    let e = mysql_async::Conn::new(proxy.opts("acc_expired", "pw", None))
        .await
        .expect_err("expired");
    assert_eq!(server_code(&e).map(|c| c.0), Some(1862), "{e}");
    let e = mysql_async::Conn::new(proxy.opts("acc_socket", "", None))
        .await
        .expect_err("unix_socket");
    let text = e.to_string();
    assert!(
        text.contains("1251") && text.contains("unix_socket"),
        "{text}"
    );
    let rows = common::admin(&proxy, "SHOW ACCOUNTS")
        .await
        .expect("show accounts");
    assert!(
        rows.iter()
            .any(|r| r[0] == "acc_socket" && r[2] == "unix_socket"),
        "{rows:?}"
    );

    // A client that starts with caching_sha2_password is switched to
    // mysql_native_password and logs in.
    let port = proxy.addr.port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-uapp",
                "-papp",
                "--default-auth=caching_sha2_password",
                "-e",
                "SELECT 'switched ok'",
            ])
            .output()
            .expect("mariadb client")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("switched ok"),
        "{text}"
    );
}
