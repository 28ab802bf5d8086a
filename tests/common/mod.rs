//! Shared helpers for integration tests: a real sandbox topology (see
//! `sandbox.rs`) and an in-process rwproxy started through the same
//! library entry point as the binary.
#![allow(dead_code)]

pub mod child;
pub mod faults;
pub mod flavor;
pub mod raw;
pub mod relay;
pub mod sandbox;

use std::net::SocketAddr;

use rwproxy::config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running in-process proxy; stopped when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Admin port, when the config has an `[admin]` section.
    pub admin: Option<SocketAddr>,
    /// HTTP endpoint (/metrics, /health, /status).
    pub http: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Proxy {
    /// mysql_async options for `user`/`password` through this proxy.
    pub fn opts(&self, user: &str, password: &str, db: Option<&str>) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.addr.ip().to_string())
            .tcp_port(self.addr.port())
            .user(Some(user))
            .pass(Some(password))
            .db_name(db)
            .prefer_socket(false)
            .into()
    }

    /// The sandbox's application account, database `app`.
    pub fn app_opts(&self) -> mysql_async::Opts {
        self.opts("app", "app", Some("app"))
    }

    pub async fn app_conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(self.app_opts())
            .await
            .expect("connect through proxy")
    }
}

/// Loads the sandbox's generated config.
pub fn sandbox_config(sb: &rwproxy_sandbox::Sandbox) -> Config {
    let mut c = Config::load(&sb.config_path).expect("sandbox config");
    if std::env::var("TEST_POOL_MODE").as_deref() == Ok("transaction") {
        c.pool_mode = rwproxy::config::PoolMode::Transaction;
    }
    c
}

/// Starts rwproxy on 127.0.0.1:0 (and its admin port, if configured, on
/// another free port) with `config`.
pub async fn start_proxy(config: Config) -> Proxy {
    start_proxy_with_path(config, None).await
}

/// Like [`start_proxy`], with a config file path for RELOAD.
pub async fn start_proxy_with_path(
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let admin_listener = match &config.admin {
        Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin")),
        None => None,
    };
    let admin = admin_listener
        .as_ref()
        .map(|l| l.local_addr().expect("addr"));
    let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let http = http_listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let unix = config
        .listen_socket
        .as_ref()
        .map(|_| rwproxy::server::UnixSocket::bind(&config).expect("bind listen_socket"));
    let listeners = rwproxy::server::Listeners {
        proxy: listener,
        unix,
        admin: admin_listener,
        http: Some(http_listener),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = rwproxy::server::run(listeners, config, config_path, token).await {
            eprintln!("proxy stopped with error: {e}");
        }
    });
    Proxy {
        addr,
        admin,
        http,
        shutdown,
        task,
    }
}

/// Adds admin and failover sections matching the sandbox's accounts.
pub fn with_admin(mut config: Config) -> Config {
    config.admin = Some(rwproxy::config::AdminConfig {
        listen: "127.0.0.1:0".into(),
        user: "admin".into(),
        password: "adminpw".into(),
        password_env: None,
        password_file: None,
    });
    config.failover = Some(rwproxy::config::FailoverConfig {
        replication_user: "repl".into(),
        replication_password: "repl".into(),
        replication_password_env: None,
        replication_password_file: None,
        switchover_timeout_ms: 5000,
        max_promotion_lag_ms: 10_000,
        auto_failover: false,
        failover_after: 3,
        auto_rejoin: false,
        primary_failure_timeout_ms: 10_000,
        verify_primary_failure: true,
    });
    config
}

/// Runs an admin command on the proxy's admin port and returns the rows
/// as strings (NULL as "NULL"), or the server error message.
pub async fn admin(proxy: &Proxy, sql: &str) -> Result<Vec<Vec<String>>, String> {
    use mysql_async::prelude::Queryable;
    let addr = proxy.admin.expect("proxy started with an admin port");
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some("admin"))
        .pass(Some("adminpw"))
        .prefer_socket(false)
        .into();
    let mut c = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| e.to_string())?;
    let rows: Vec<mysql_async::Row> = c.query(sql).await.map_err(|e| e.to_string())?;
    let _ = c.disconnect().await;
    Ok(rows
        .into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(mysql_async::Value::NULL) | None => "NULL".into(),
                    Some(v) => v.as_sql(true),
                })
                .collect()
        })
        .collect())
}

/// A plain HTTP GET against the proxy's HTTP endpoint: (status, body).
pub async fn http_get(proxy: &Proxy, path: &str) -> (u16, String) {
    http_get_addr(proxy.http, path).await
}

/// A plain HTTP GET against an HTTP endpoint's address: (status, body).
pub async fn http_get_addr(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("http connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("http write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("http read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The proxy's `/status` JSON.
pub async fn status(proxy: &Proxy) -> serde_json::Value {
    let (_, body) = http_get(proxy, "/status").await;
    serde_json::from_str(&body).expect("status json")
}

/// Waits until the proxy's first leadership round is over (it holds the
/// leader lock on a majority), so that its start-up connections to every
/// server (`GET_LOCK('rwproxy_leader')`) do not land inside a measurement
/// of the servers' own counters.
pub async fn wait_leader(proxy: &Proxy) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, body) = http_get(proxy, "/status").await;
        let leads = serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|s| s["leader"] == serde_json::Value::Bool(true));
        if code != 0 && leads {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "proxy took no leadership within 20 s: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Server entry `name` of `/status`.
pub fn server<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no server {name} in {status}"))
}

/// Polls `cond` every 50 ms until it holds or `within` passes; returns the
/// time it took, or panics with `what`.
pub async fn wait_until<F, Fut>(
    within: std::time::Duration,
    what: &str,
    mut cond: F,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs SQL as root directly on a server.
pub async fn root_exec(port: u16, sql: &str) {
    use mysql_async::prelude::Queryable;
    let mut c = mysql_async::Conn::new(sandbox::root_opts(port))
        .await
        .expect("root connect");
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = c.disconnect().await;
}
