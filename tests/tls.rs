//! TLS (issue: "Security and robustness", item 1).
//!
//! Client side: a client that asks for TLS gets it (certificate generated
//! at test time with rcgen), `require_tls` refuses plaintext logins with
//! ERR 3159, and so do accounts created `REQUIRE SSL`.
//!
//! Server side: against a TLS sandbox whose servers run with
//! `require_secure_transport = ON` (a connection that silently stayed
//! plaintext would be refused, not pass), rwproxy in `verify_identity`
//! reads, writes, monitors and promotes over TLS; a wrong CA, a certificate
//! for another name and a server without TLS are refused with errors that
//! say why.

mod common;

use std::process::Command;
use std::time::Duration;

use common::sandbox::{OwnedSandbox, free_ports, temp_dir};
use common::{admin, sandbox, start_proxy, wait_until};
use mysql_async::prelude::*;
use rwproxy::backend::tls::ServerTls;
use rwproxy::backend::{BackendConn, Credential, Pools};
use rwproxy::config::{Config, ServerTlsMode};
use rwproxy::sandbox::{SandboxError, SandboxTls, UpOptions};

fn write_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("cert");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

/// Runs the `mariadb` client against `port` (off the async runtime).
async fn cli(port: u16, extra: &'static [&'static str], sql: &'static str) -> (bool, String) {
    tokio::task::spawn_blocking(move || cli_blocking(port, extra, sql))
        .await
        .expect("join")
}

fn cli_blocking(port: u16, extra: &[&str], sql: &str) -> (bool, String) {
    let out = Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{port}"), "-uapp", "-papp", "app"])
        .args(extra)
        .args(["-e", sql])
        .output()
        .expect("run mariadb client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_upgrade_and_plaintext_can_be_refused() {
    let sb = sandbox::shared();
    let (cert, key) = write_cert(&sandbox::temp_dir());
    let mut cfg = common::sandbox_config(sb);
    cfg.tls_cert = Some(cert.clone());
    cfg.tls_key = Some(key.clone());
    let proxy = start_proxy(cfg.clone()).await;

    let (ok, out) = cli(
        proxy.addr.port(),
        &["--ssl", "--ssl-verify-server-cert=0"],
        "\\s",
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("Cipher in use"),
        "TLS should be in use:\n{out}"
    );
    println!(
        "{}",
        out.lines().find(|l| l.contains("SSL")).unwrap_or_default()
    );

    // Plaintext still works unless TLS is required.
    let (ok, out) = cli(proxy.addr.port(), &["--skip-ssl"], "SELECT 'plain ok'").await;
    assert!(ok && out.contains("plain ok"), "{out}");

    cfg.require_tls = true;
    let strict = start_proxy(cfg).await;
    let (ok, out) = cli(strict.addr.port(), &["--skip-ssl"], "SELECT 1").await;
    assert!(!ok, "plaintext login must be refused: {out}");
    assert!(out.contains("3159"), "{out}");
    let (ok, out) = cli(
        strict.addr.port(),
        &["--ssl", "--ssl-verify-server-cert=0"],
        "SELECT 'tls ok'",
    )
    .await;
    assert!(ok && out.contains("tls ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_user_with_require_tls_logs_in_over_tls_only() {
    let sb = sandbox::shared();
    let (cert, key) = write_cert(&sandbox::temp_dir());
    let mut cfg = common::sandbox_config(sb);
    cfg.tls_cert = Some(cert);
    cfg.tls_key = Some(key);
    cfg.auth = rwproxy::config::AuthMode::Config;
    cfg.users = vec![
        rwproxy::config::UserConfig {
            name: "app".into(),
            password: Some("app".into()),
            password_hash: None,
            require_tls: true,
            ..Default::default()
        },
        rwproxy::config::UserConfig {
            name: "root".into(),
            password: Some("root".into()),
            password_hash: None,
            require_tls: false,
            ..Default::default()
        },
    ];
    let proxy = start_proxy(cfg).await;
    match mysql_async::Conn::new(proxy.app_opts()).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!((e.code, e.state.as_str()), (3159, "HY000"), "{e}")
        }
        other => panic!("plaintext login of a require_tls user: {other:?}"),
    }
    // A wrong password over plaintext is a plain 1045: 3159 only tells
    // someone who knows the password.
    match mysql_async::Conn::new(proxy.opts("app", "wrong", Some("app"))).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045, "{e}"),
        other => panic!("wrong password: {other:?}"),
    }
    // Other users are not affected.
    let mut root = mysql_async::Conn::new(proxy.opts("root", "root", None))
        .await
        .expect("root in plaintext");
    root.query_drop("SELECT 1").await.expect("query");
    let tls: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(proxy.app_opts())
        .ssl_opts(Some(
            mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true),
        ))
        .into();
    let mut c = mysql_async::Conn::new(tls).await.expect("app over TLS");
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("query");
    assert_eq!(one, Some(1));
}

/// A TLS sandbox (primary + `replicas`) owned by the calling test, with
/// server certificates valid for `names`.
fn tls_sandbox(replicas: usize, names: &[&str]) -> OwnedSandbox {
    let dir = temp_dir();
    let tls = SandboxTls {
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    for attempt in 1.. {
        let mut ports = free_ports(replicas + 2);
        let proxy_port = ports.pop().expect("n+2 ports");
        let opts = UpOptions {
            dir: dir.clone(),
            ports,
            proxy_port,
            semi_sync: false,
            owner_pid: Some(std::process::id()),
        };
        match rwproxy::sandbox::up_with_tls(&opts, Some(&tls)) {
            Ok(sandbox) => return OwnedSandbox { sandbox },
            Err(SandboxError::PortInUse { .. }) if attempt < 3 => {}
            Err(SandboxError::StartFailed { tail, .. })
                if attempt < 3 && tail.contains("already in use") => {}
            Err(e) => panic!("TLS sandbox up failed: {e}"),
        }
    }
    unreachable!()
}

/// root over TLS, verifying the server against the sandbox CA (plaintext
/// TCP logins are refused by the TLS sandbox).
fn tls_root_opts(sb: &rwproxy::sandbox::Sandbox, port: u16) -> mysql_async::Opts {
    let ca = sb.tls_ca.clone().expect("a TLS sandbox");
    mysql_async::OptsBuilder::from_opts(sandbox::root_opts(port))
        .ssl_opts(Some(
            mysql_async::SslOpts::default()
                .with_root_certs(vec![ca.into()])
                .with_disable_built_in_roots(true),
        ))
        .into()
}

async fn tls_root_exec(sb: &rwproxy::sandbox::Sandbox, port: u16, sql: &str) {
    let mut c = mysql_async::Conn::new(tls_root_opts(sb, port))
        .await
        .unwrap_or_else(|e| panic!("root over TLS to {port}: {e}"));
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = c.disconnect().await;
}

async fn tls_root_value(sb: &rwproxy::sandbox::Sandbox, port: u16, sql: &str) -> Option<String> {
    let mut c = mysql_async::Conn::new(tls_root_opts(sb, port))
        .await
        .unwrap_or_else(|e| panic!("root over TLS to {port}: {e}"));
    let v: Option<Option<String>> = c
        .query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = c.disconnect().await;
    v.flatten()
}

/// Through the proxy: (port of the server that answered, its Ssl_cipher for
/// rwproxy's connection).
async fn port_and_cipher(c: &mut mysql_async::Conn, hint: &str) -> (u16, String) {
    let sql = format!(
        "SELECT /* rwproxy:{hint} */ @@port, \
         (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
          WHERE VARIABLE_NAME = 'SSL_CIPHER')"
    );
    let row: Option<(u16, Option<String>)> = c.query_first(sql).await.expect("cipher query");
    let (port, cipher) = row.expect("one row");
    (port, cipher.unwrap_or_default())
}

/// The `/status` entry of every server: all up and observed by the
/// monitor (`read_only` is unknown until its first successful check),
/// replicas with a lag.
async fn all_up_with_lag(proxy: &common::Proxy, names: &[&str]) -> bool {
    let s = common::status(proxy).await;
    names.iter().all(|n| {
        let v = common::server(&s, n);
        v["up"] == true
            && v["read_only"].is_boolean()
            && (v["role"] == "primary" || v["lag_seconds"].is_number())
    })
}

/// The monitor's last error for server `name`.
async fn last_error(proxy: &common::Proxy, name: &str) -> String {
    let s = common::status(proxy).await;
    common::server(&s, name)["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A data-path connection as the proxy would open it (the session never
/// sees the error text of a server the monitor already marked down).
async fn data_path_connect(cfg: &Config, server: usize) -> Result<BackendConn, String> {
    let tls = ServerTls::from_config(cfg).map_err(|e| e.to_string())?;
    let s = &cfg.servers[server];
    let name: std::sync::Arc<str> = s.name.as_str().into();
    let user: std::sync::Arc<str> = "app".into();
    let caps = mysql_common::constants::CapabilityFlags::CLIENT_PROTOCOL_41;
    let key = Pools::key(&name, &user, caps, Default::default(), 45, 0);
    let cred = Credential {
        user,
        stage1: Some(rwproxy::protocol::auth::from_password("app").0),
        sha2: None,
    };
    BackendConn::connect(
        &s.address(),
        key,
        &cred,
        caps,
        None,
        Duration::from_secs(5),
        tls.for_server(&s.name),
        None,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Another CA, unrelated to the sandbox's.
fn foreign_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).expect("ca");
    let path = dir.join("foreign-ca.pem");
    std::fs::write(&path, ca.pem()).expect("write ca");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_over_tls_verify_identity_read_write_monitor_promote() {
    let sb = tls_sandbox(1, &["127.0.0.1", "localhost"]);
    let (p, r1) = (sb.servers[0].port, sb.servers[1].port);
    // Plaintext really is refused by these servers.
    let plain = mysql_async::Conn::new(sandbox::root_opts(p)).await;
    assert!(
        plain.is_err(),
        "the TLS sandbox must refuse plaintext logins"
    );

    let mut cfg = common::with_admin(common::sandbox_config(&sb));
    assert_eq!(cfg.server_tls, ServerTlsMode::VerifyIdentity);
    cfg.monitor_interval_ms = 250;
    let (cert, key) = write_cert(&sb.dir.join("client-tls"));
    cfg.tls_cert = Some(cert);
    cfg.tls_key = Some(key);
    let proxy = start_proxy(cfg.clone()).await;
    let took = wait_until(
        Duration::from_secs(20),
        "monitor sees both servers up, the replica with a lag",
        || all_up_with_lag(&proxy, &["primary", "replica1"]),
    )
    .await;
    println!("monitor over TLS: both servers up after {took:?}");

    // Writes and reads.
    let mut c = proxy.app_conn().await;
    c.query_drop("CREATE TABLE app.tls_t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .expect("create");
    c.query_drop("INSERT INTO app.tls_t VALUES (1, 'one'), (2, 'two')")
        .await
        .expect("insert");
    let n: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM app.tls_t")
        .await
        .expect("count");
    assert_eq!(n, Some(2));
    // rwproxy's own connections to each server are encrypted.
    let (port, cipher) = port_and_cipher(&mut c, "primary").await;
    assert_eq!(port, p);
    assert!(!cipher.is_empty(), "no TLS on the primary connection");
    let replicated = || async {
        let mut r = proxy.app_conn().await;
        let n: Option<i64> = r
            .query_first("SELECT /* rwproxy:replica */ COUNT(*) FROM app.tls_t")
            .await
            .expect("count on replica");
        n == Some(2)
    };
    wait_until(Duration::from_secs(20), "rows replicated", replicated).await;
    drop(c);
    // A new session: it has no write of its own the replica must have first.
    let mut c = proxy.app_conn().await;
    let (port, cipher) = port_and_cipher(&mut c, "replica").await;
    assert_eq!(port, r1);
    assert!(!cipher.is_empty(), "no TLS on the replica connection");
    println!("primary and replica connections use {cipher}");
    drop(c);

    // Per-user require_tls from the servers' accounts: REQUIRE SSL.
    tls_root_exec(
        &sb,
        p,
        "CREATE USER 'sslu'@'%' IDENTIFIED BY 'sslpw' REQUIRE SSL; \
         GRANT SELECT ON app.* TO 'sslu'@'%'; \
         CREATE USER 'x509u'@'%' IDENTIFIED BY 'x509pw' REQUIRE X509",
    )
    .await;
    wait_until(Duration::from_secs(20), "account replicated", || async {
        tls_root_value(
            &sb,
            r1,
            "SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'sslu'",
        )
        .await
            == Some("1".into())
    })
    .await;
    let plain = mysql_async::Conn::new(proxy.opts("sslu", "sslpw", Some("app"))).await;
    match plain {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!((e.code, e.state.as_str()), (3159, "HY000"), "{e}")
        }
        other => panic!("plaintext login of a REQUIRE SSL account: {other:?}"),
    }
    let client_tls = mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true);
    let tls_opts = |user: &str, pw: &str| -> mysql_async::Opts {
        mysql_async::OptsBuilder::from_opts(proxy.opts(user, pw, Some("app")))
            .ssl_opts(Some(client_tls.clone()))
            .into()
    };
    let mut c = mysql_async::Conn::new(tls_opts("sslu", "sslpw"))
        .await
        .expect("REQUIRE SSL account over TLS");
    let n: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM app.tls_t")
        .await
        .expect("count as sslu");
    assert_eq!(n, Some(2));
    drop(c);
    match mysql_async::Conn::new(tls_opts("x509u", "x509pw")).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1251, "{e}"),
        other => panic!("REQUIRE X509 account: {other:?}"),
    }

    // A wrong CA: nothing verifies, and the error says why.
    let mut wrong = cfg.clone();
    wrong.server_tls_ca = Some(foreign_ca(&sb.dir));
    wrong.admin = None;
    let bad = start_proxy(wrong.clone()).await;
    wait_until(
        Duration::from_secs(20),
        "servers down for a wrong CA",
        || async {
            let s = common::status(&bad).await;
            ["primary", "replica1"]
                .iter()
                .all(|n| common::server(&s, n)["up"] == false)
        },
    )
    .await;
    let e = last_error(&bad, "primary").await;
    println!("monitor, wrong CA: {e}");
    assert!(
        e.contains("certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );
    let e = data_path_connect(&wrong, 0).await.err().expect("refused");
    println!("data path, wrong CA: {e}");
    assert!(
        e.contains("TLS to server primary") && e.contains("UnknownIssuer"),
        "{e}"
    );
    drop(bad);

    // Switchover over TLS: the old primary replicates from the new one
    // with MASTER_SSL (its server refuses plaintext replication).
    let report = admin(&proxy, "PROMOTE replica1")
        .await
        .expect("PROMOTE replica1 over TLS");
    for row in &report {
        println!("  {:<60} {} ms", row[0], row[1]);
    }
    wait_until(
        Duration::from_secs(20),
        "replica1 published as primary",
        || async { common::status(&proxy).await["primary"] == "replica1" },
    )
    .await;
    let mut c = proxy.app_conn().await;
    c.query_drop("INSERT INTO app.tls_t VALUES (3, 'after promote')")
        .await
        .expect("write after promotion");
    let (port, cipher) = port_and_cipher(&mut c, "primary").await;
    assert_eq!(port, r1, "writes go to the new primary");
    assert!(!cipher.is_empty());
    wait_until(
        Duration::from_secs(20),
        "old primary receives the new write",
        || async {
            tls_root_value(&sb, p, "SELECT v FROM app.tls_t WHERE id = 3").await
                == Some("after promote".into())
        },
    )
    .await;
    let mut root = mysql_async::Conn::new(tls_root_opts(&sb, p))
        .await
        .expect("root on old primary");
    let row: mysql_async::Row = root
        .query_first("SHOW SLAVE STATUS")
        .await
        .expect("slave status")
        .expect("the old primary replicates");
    let get = |k: &str| row.get::<String, _>(k).unwrap_or_default();
    assert_eq!(get("Master_Port"), r1.to_string());
    assert_eq!(
        (
            get("Slave_IO_Running").as_str(),
            get("Slave_SQL_Running").as_str()
        ),
        ("Yes", "Yes")
    );
    assert_eq!(get("Master_SSL_Allowed"), "Yes");
    let _ = root.disconnect().await;
    wait_until(
        Duration::from_secs(20),
        "monitor: both up after promotion",
        || all_up_with_lag(&proxy, &["primary", "replica1"]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_ignores_the_name_verify_identity_does_not() {
    // A certificate from the sandbox CA, but for a name rwproxy does not
    // connect to (it connects to 127.0.0.1).
    let sb = tls_sandbox(0, &["db.invalid"]);
    let mut cfg = common::sandbox_config(&sb);
    cfg.monitor_interval_ms = 250;
    cfg.admin = None;
    cfg.failover = None;

    let strict = start_proxy(cfg.clone()).await;
    wait_until(
        Duration::from_secs(20),
        "name mismatch: server down",
        || async { common::server(&common::status(&strict).await, "primary")["up"] == false },
    )
    .await;
    let e = last_error(&strict, "primary").await;
    println!("monitor, verify_identity, wrong name: {e}");
    assert!(e.contains("not valid for name"), "{e}");
    let e = data_path_connect(&cfg, 0).await.err().expect("refused");
    println!("data path, verify_identity, wrong name: {e}");
    assert!(e.contains("not valid for name"), "{e}");
    drop(strict);

    cfg.server_tls = ServerTlsMode::VerifyCa;
    let proxy = start_proxy(cfg.clone()).await;
    wait_until(Duration::from_secs(20), "verify_ca: server up", || {
        all_up_with_lag(&proxy, &["primary"])
    })
    .await;
    let mut c = proxy.app_conn().await;
    let (port, cipher) = port_and_cipher(&mut c, "primary").await;
    assert_eq!(port, sb.servers[0].port);
    assert!(!cipher.is_empty());
    assert!(data_path_connect(&cfg, 0).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_to_a_server_without_tls_is_refused_clearly() {
    let sb = sandbox::shared();
    let mut cfg = common::sandbox_config(sb);
    cfg.server_tls = ServerTlsMode::Required;
    cfg.monitor_interval_ms = 250;
    cfg.admin = None;
    cfg.failover = None;
    let e = data_path_connect(&cfg, 0).await.err().expect("refused");
    println!("data path, required, plaintext server: {e}");
    assert!(
        e.contains("server primary") && e.contains("does not offer TLS"),
        "{e}"
    );
    let proxy = start_proxy(cfg).await;
    wait_until(Duration::from_secs(20), "plaintext server down", || async {
        common::server(&common::status(&proxy).await, "primary")["up"] == false
    })
    .await;
    let e = last_error(&proxy, "primary").await;
    println!("monitor, required, plaintext server: {e}");
    assert!(e.to_lowercase().contains("ssl"), "{e}");
}
