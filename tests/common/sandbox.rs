//! Real MariaDB sandboxes for integration tests.
//!
//! `shared()` starts one primary + 2 replicas per test binary, on first use;
//! `fresh(n)` gives a test its own topology to kill servers in or promote.
//! Every sandbox lives in a new directory under the system temp dir, on
//! free ports, with this process as its owner: a watchdog kills the servers
//! when the test process exits, however it exits, and a cleaner removes the
//! directory shortly after.
#![allow(dead_code)]

use std::net::TcpListener;
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use rwproxy::gtid::GtidPos;
use rwproxy_sandbox::{self as sandbox, Sandbox, SandboxError, UpOptions};

/// Deadline of `wait_replicas_caught_up`.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// One sandbox per test binary, started on first use on free ports, in a fresh temp dir, owner_pid = this process.
pub fn shared() -> &'static Sandbox {
    static SHARED: OnceLock<Sandbox> = OnceLock::new();
    SHARED.get_or_init(|| start(2))
}

/// A fresh, separate sandbox for destructive tests (kill/promotion); stopped on Drop (also killed by the watchdog if the process dies).
pub struct OwnedSandbox {
    pub sandbox: Sandbox,
}

impl Deref for OwnedSandbox {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Drop for OwnedSandbox {
    fn drop(&mut self) {
        // The data is thrown away, so SIGKILL: no need to wait for a clean
        // shutdown.
        for index in 0..self.sandbox.servers.len() {
            let _ = sandbox::kill_server(&self.sandbox, index);
        }
        let _ = std::fs::remove_dir_all(&self.sandbox.dir);
    }
}

/// A new primary + `replicas` replicas, owned by the calling test.
pub fn fresh(replicas: usize) -> OwnedSandbox {
    OwnedSandbox {
        sandbox: start(replicas),
    }
}

/// Like [`fresh`], with lossless semi-synchronous replication
/// (`sandbox up --semi-sync`).
pub fn fresh_semi_sync(replicas: usize) -> OwnedSandbox {
    OwnedSandbox {
        sandbox: start_with(replicas, true),
    }
}

/// A new, empty directory for a sandbox, removed after this process exits.
/// Short on purpose: socket paths must stay under 108 bytes.
pub fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rwproxy-sb-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create sandbox temp dir");
    remove_after_exit(&dir);
    dir
}

/// Starts a detached shell that removes `dir` once this process is gone
/// (after the watchdog, which polls faster, has killed the servers).
fn remove_after_exit(dir: &Path) {
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; sleep 2; rm -rf "$2""#)
        .arg("rwproxy-sandbox-cleaner")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// Starts a sandbox on free ports; retries with other ports if one was
/// taken between choosing it and binding it.
fn start(replicas: usize) -> Sandbox {
    start_with(replicas, false)
}

fn start_with(replicas: usize, semi_sync: bool) -> Sandbox {
    let dir = temp_dir();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut ports = free_ports(replicas + 2);
        let proxy_port = ports.pop().expect("n+2 ports");
        let started = Instant::now();
        match sandbox::up(&UpOptions {
            dir: dir.clone(),
            ports,
            proxy_port,
            semi_sync,
            owner_pid: Some(std::process::id()),
        }) {
            Ok(sb) => {
                eprintln!(
                    "sandbox with {replicas} replica(s) up in {:.1} s in {}",
                    started.elapsed().as_secs_f64(),
                    sb.dir.display()
                );
                return sb;
            }
            Err(SandboxError::PortInUse { .. }) if attempt < 3 => {}
            Err(SandboxError::StartFailed { tail, .. })
                if attempt < 3 && tail.contains("already in use") => {}
            Err(e) => panic!("sandbox up failed: {e}"),
        }
    }
}

/// Free TCP ports on 127.0.0.1 (bind :0, read the port, close) — n distinct ones.
pub fn free_ports(n: usize) -> Vec<u16> {
    // All listeners stay open until every port is read, so the n are distinct.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Options shared by test connections. Setting `max_allowed_packet` and
/// `wait_timeout` and not preferring the socket keeps mysql_async from
/// running its `SELECT @@max_allowed_packet, …` at connect, which would
/// count in the `Com_select` of the server under test.
fn opts(port: u16, user: &str, pass: &str, db: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pass))
        .db_name(db)
        .prefer_socket(false)
        .max_allowed_packet(Some(64 * 1024 * 1024))
        .wait_timeout(Some(28_800))
        .into()
}

/// mysql_async Opts for root@127.0.0.1:port (password root).
pub fn root_opts(port: u16) -> mysql_async::Opts {
    opts(port, "root", "root", None)
}

/// mysql_async Opts for app@127.0.0.1:port (password app, database app).
pub fn app_opts(port: u16) -> mysql_async::Opts {
    opts(port, "app", "app", Some("app"))
}

/// SHOW GLOBAL STATUS LIKE 'Com_%' etc. on a server as root: returns the counter value.
///
/// Reading the counter does not move `Com_select` (it is a `SHOW`, and the
/// connection runs no setup query), but it does count in `Connections`,
/// `Questions` and `Com_show_status`.
pub async fn global_status(port: u16, name: &str) -> u64 {
    let mut conn = mysql_async::Conn::new(root_opts(port))
        .await
        .unwrap_or_else(|e| panic!("connect as root to port {port}: {e}"));
    let sql = format!(
        "SHOW GLOBAL STATUS WHERE Variable_name = '{}'",
        name.replace('\\', "\\\\").replace('\'', "''")
    );
    let row: Option<(String, String)> = conn
        .query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("SHOW GLOBAL STATUS on port {port}: {e}"));
    let _ = conn.disconnect().await;
    let (_, value) = row.unwrap_or_else(|| panic!("no status variable {name:?} on port {port}"));
    value
        .parse()
        .unwrap_or_else(|e| panic!("status {name} = {value:?} on port {port}: {e}"))
}

/// Wait until every replica's @@gtid_slave_pos covers the primary's @@gtid_binlog_pos (deadline 30 s).
///
/// The primary is the one running server with `read_only = 0` (so this
/// follows a promotion), else `servers[0]`; servers that are not running
/// (killed by the test) are skipped.
pub async fn wait_replicas_caught_up(sb: &Sandbox) {
    let mut conns = Vec::new();
    for server in sb.servers.iter().filter(|s| s.running_pid().is_some()) {
        let conn = mysql_async::Conn::new(root_opts(server.port))
            .await
            .unwrap_or_else(|e| panic!("connect as root to {}: {e}", server.name));
        conns.push((server, conn));
    }
    let mut writable = Vec::new();
    for (i, (_, conn)) in conns.iter_mut().enumerate() {
        let ro: Option<u8> = conn
            .query_first("SELECT @@GLOBAL.read_only")
            .await
            .expect("read @@read_only");
        if ro == Some(0) {
            writable.push(i);
        }
    }
    let primary = match writable.as_slice() {
        [only] => *only,
        _ => conns
            .iter()
            .position(|(s, _)| s.name == sb.servers[0].name)
            .expect("the primary (servers[0]) is running"),
    };
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let target: String = conns[primary]
            .1
            .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
            .await
            .expect("read @@gtid_binlog_pos")
            .unwrap_or_default();
        let target = GtidPos::parse(&target);
        let mut behind = Vec::new();
        for (i, (server, conn)) in conns.iter_mut().enumerate() {
            if i == primary {
                continue;
            }
            let pos: String = conn
                .query_first("SELECT @@GLOBAL.gtid_slave_pos")
                .await
                .expect("read @@gtid_slave_pos")
                .unwrap_or_default();
            if !GtidPos::parse(&pos).covers(&target) {
                behind.push(format!("{} at {pos:?}", server.name));
            }
        }
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas not caught up with {target:?} after {} s: {}",
            CATCH_UP_TIMEOUT.as_secs(),
            behind.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, conn) in conns {
        let _ = conn.disconnect().await;
    }
}
