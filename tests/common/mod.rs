//! Shared helpers for integration tests: a real sandbox topology (see
//! `sandbox.rs`) and an in-process rwproxy started through the same
//! library entry point as the binary.
#![allow(dead_code)]

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
pub fn sandbox_config(sb: &rwproxy::sandbox::Sandbox) -> Config {
    Config::load(&sb.config_path).expect("sandbox config")
}

/// Starts rwproxy on 127.0.0.1:0 (and its admin port, if configured, on
/// another free port) with `config`.
pub async fn start_proxy(config: Config) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let admin_listener = match &config.admin {
        Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin")),
        None => None,
    };
    let admin = admin_listener.as_ref().map(|l| l.local_addr().expect("addr"));
    let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let http = http_listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let listeners = rwproxy::server::Listeners {
        proxy: listener,
        admin: admin_listener,
        http: Some(http_listener),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = rwproxy::server::run(listeners, config, token).await {
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
    });
    config.failover = Some(rwproxy::config::FailoverConfig {
        replication_user: "repl".into(),
        replication_password: "repl".into(),
        switchover_timeout_ms: 5000,
        max_promotion_lag_ms: 10_000,
        auto_failover: false,
        failover_after: 3,
        auto_rejoin: false,
    });
    config
}
