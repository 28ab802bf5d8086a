//! "The sandbox of flavor X": what fault-injection tests need from a real
//! topology, for the MariaDB sandbox and the MySQL one alike — ports,
//! SIGKILL / SIGSTOP / SIGCONT of a server's own process, restart, the
//! generated rwproxy config, replication statements in the server's
//! dialect, and waiting for the replicas to catch up. Test bodies written
//! against [`Topology`] run unchanged on both flavors (tests/failover_safety.rs,
//! tests/lag_health.rs); each flavor keeps its own assertions' facts on the
//! servers (rows, `read_only`, the replication status).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use rwproxy::config::Config;
use rwproxy_sandbox::Sandbox;
use rwproxy_sandbox::mysql::{self, MysqlSandbox};

use super::sandbox::{self, OwnedSandbox, free_ports, root_opts, temp_dir};

/// Which server family a topology runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    /// The replica status statement.
    pub fn replica_status(self) -> &'static str {
        match self {
            Flavor::MariaDb => "SHOW SLAVE STATUS",
            Flavor::MySql => "SHOW REPLICA STATUS",
        }
    }

    /// The replica status column holding the source's port.
    pub fn source_port_column(self) -> &'static str {
        match self {
            Flavor::MariaDb => "Master_Port",
            Flavor::MySql => "Source_Port",
        }
    }

    pub fn stop_sql_thread(self) -> &'static str {
        match self {
            Flavor::MariaDb => "STOP SLAVE SQL_THREAD",
            Flavor::MySql => "STOP REPLICA SQL_THREAD",
        }
    }

    pub fn start_sql_thread(self) -> &'static str {
        match self {
            Flavor::MariaDb => "START SLAVE SQL_THREAD",
            Flavor::MySql => "START REPLICA SQL_THREAD",
        }
    }
}

/// A running primary (server 0) + replicas of either flavor.
pub trait Topology: Send + Sync {
    fn flavor(&self) -> Flavor;
    /// Number of servers, primary first.
    fn len(&self) -> usize;
    fn name(&self, i: usize) -> String;
    fn port(&self, i: usize) -> u16;
    /// The pid of server `i`'s own process if it runs.
    fn pid(&self, i: usize) -> Option<u32>;
    /// SIGKILL server `i` and wait until it is gone.
    fn kill(&self, i: usize);
    /// Starts server `i` again (its replication as the servers left it).
    fn restart(&self, i: usize);
    /// The sandbox's generated rwproxy config.
    fn proxy_config(&self) -> Config;
    /// The MariaDB sandbox, for the helpers written for it alone.
    fn mariadb(&self) -> Option<&Sandbox> {
        None
    }

    fn running(&self, i: usize) -> bool {
        self.pid(i).is_some()
    }

    /// Sends `sig` ("STOP", "CONT") to server `i`'s own process.
    fn signal(&self, i: usize, sig: &str) {
        let pid = self
            .pid(i)
            .unwrap_or_else(|| panic!("{} is not running", self.name(i)));
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {pid} failed");
    }
}

impl Topology for Sandbox {
    fn flavor(&self) -> Flavor {
        Flavor::MariaDb
    }
    fn len(&self) -> usize {
        self.servers.len()
    }
    fn name(&self, i: usize) -> String {
        self.servers[i].name.clone()
    }
    fn port(&self, i: usize) -> u16 {
        self.servers[i].port
    }
    fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].running_pid()
    }
    fn kill(&self, i: usize) {
        rwproxy_sandbox::kill_server(self, i).expect("SIGKILL server");
    }
    fn restart(&self, i: usize) {
        rwproxy_sandbox::start_server(self, i).expect("restart server");
    }
    fn proxy_config(&self) -> Config {
        super::sandbox_config(self)
    }
    fn mariadb(&self) -> Option<&Sandbox> {
        Some(self)
    }
}

impl Topology for OwnedSandbox {
    fn flavor(&self) -> Flavor {
        Flavor::MariaDb
    }
    fn len(&self) -> usize {
        self.sandbox.len()
    }
    fn name(&self, i: usize) -> String {
        self.sandbox.name(i)
    }
    fn port(&self, i: usize) -> u16 {
        self.sandbox.port(i)
    }
    fn pid(&self, i: usize) -> Option<u32> {
        self.sandbox.pid(i)
    }
    fn kill(&self, i: usize) {
        self.sandbox.kill(i)
    }
    fn restart(&self, i: usize) {
        self.sandbox.restart(i)
    }
    fn proxy_config(&self) -> Config {
        self.sandbox.proxy_config()
    }
    fn mariadb(&self) -> Option<&Sandbox> {
        Some(&self.sandbox)
    }
}

/// A MySQL 9.7 sandbox owned by one test: servers SIGKILLed, the chroot
/// mount undone and the directory removed on Drop (a watchdog kills the
/// servers if the test process dies first).
pub struct OwnedMysql {
    pub sandbox: MysqlSandbox,
}

impl Drop for OwnedMysql {
    fn drop(&mut self) {
        // The data is thrown away: SIGKILL (also ends a SIGSTOPped
        // server), then unmount, which needs the servers gone.
        for i in 0..self.sandbox.ports.len() {
            kill_mysql(&self.sandbox, i);
        }
        // The mount stays busy for a moment after the last server exits
        // (umount says "target is busy" then; retried).
        std::thread::sleep(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match mysql::down_sandbox(&self.sandbox) {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => {
                    eprintln!("MySQL sandbox down failed: {e}");
                    return;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.sandbox.dir);
    }
}

fn kill_mysql(sb: &MysqlSandbox, i: usize) {
    let Some(pid) = sb.running_pid(i) else { return };
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let t = Instant::now();
    while sb.running_pid(i).is_some() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Topology for OwnedMysql {
    fn flavor(&self) -> Flavor {
        Flavor::MySql
    }
    fn len(&self) -> usize {
        self.sandbox.ports.len()
    }
    fn name(&self, i: usize) -> String {
        self.sandbox.names()[i].clone()
    }
    fn port(&self, i: usize) -> u16 {
        self.sandbox.ports[i]
    }
    fn pid(&self, i: usize) -> Option<u32> {
        self.sandbox.running_pid(i)
    }
    fn kill(&self, i: usize) {
        kill_mysql(&self.sandbox, i);
        assert!(
            self.sandbox.running_pid(i).is_none(),
            "{} survived SIGKILL",
            self.name(i)
        );
    }
    fn restart(&self, i: usize) {
        mysql::start_server(&self.sandbox, i).expect("restart MySQL server");
    }
    fn proxy_config(&self) -> Config {
        Config::load(&self.sandbox.dir.join("rwproxy.toml")).expect("MySQL sandbox config")
    }
}

/// A new MySQL 9.7 primary + `replicas` GTID replicas (the chroot of
/// scripts/mysql-chroot.sh, created here if missing). No chroot and no way
/// to create it is a test failure that says so, never a silent skip:
/// scripts/test.sh creates the chroot before the tests run.
pub fn fresh_mysql(replicas: usize) -> OwnedMysql {
    let started = Instant::now();
    let dir: PathBuf = temp_dir();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ports = free_ports(replicas + 2);
        match mysql::up(
            &dir,
            &ports[..=replicas],
            ports[replicas + 1],
            Some(std::process::id()),
        ) {
            Ok(sb) => {
                eprintln!(
                    "MySQL sandbox with {replicas} replica(s) up in {:.1} s in {}",
                    started.elapsed().as_secs_f64(),
                    sb.dir.display()
                );
                return OwnedMysql { sandbox: sb };
            }
            Err(rwproxy_sandbox::SandboxError::PortInUse { .. }) if attempt < 3 => {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("recreate sandbox dir");
            }
            Err(e) => panic!(
                "MySQL sandbox up failed (the MySQL tests need the chroot of scripts/mysql-chroot.sh at {}): {e}",
                mysql::chroot_dir().display()
            ),
        }
    }
}

/// Like [`fresh_mysql`], with lossless semi-synchronous replication as the
/// MariaDB sandbox's `--semi-sync`: both plugins on every server (so the
/// role can move), the source side on the primary only, waiting for one
/// replica's acknowledgement after sync (`AFTER_SYNC`) even with no replica
/// connected, with the largest timeout MySQL accepts (~49 days) so that it
/// never silently degrades to asynchronous commits.
pub async fn fresh_mysql_semi_sync(replicas: usize) -> OwnedMysql {
    let sb = tokio::task::spawn_blocking(move || fresh_mysql(replicas))
        .await
        .expect("join");
    let install = "SET SESSION sql_log_bin = 0; \
        INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'; \
        INSTALL PLUGIN rpl_semi_sync_replica SONAME 'semisync_replica.so'; \
        SET GLOBAL rpl_semi_sync_source_timeout = 4294967295; \
        SET GLOBAL rpl_semi_sync_source_wait_no_replica = ON; \
        SET GLOBAL rpl_semi_sync_source_wait_point = AFTER_SYNC";
    for i in 0..sb.len() {
        let replica = i > 0;
        let mut sql = String::new();
        if replica {
            // super_read_only refuses INSTALL PLUGIN (it writes mysql.plugin).
            sql.push_str("SET GLOBAL super_read_only = 0; ");
        }
        sql.push_str(install);
        if replica {
            sql.push_str(
                "; SET GLOBAL rpl_semi_sync_replica_enabled = 1; SET GLOBAL super_read_only = 1; \
                 STOP REPLICA IO_THREAD; START REPLICA IO_THREAD",
            );
        } else {
            sql.push_str("; SET GLOBAL rpl_semi_sync_source_enabled = 1");
        }
        mysql::sql(&sb.sandbox, i, &sql).expect("enable semi-sync");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = mysql::sql(
            &sb.sandbox,
            0,
            "SELECT GROUP_CONCAT(VARIABLE_VALUE ORDER BY VARIABLE_NAME) FROM performance_schema.global_status \
             WHERE VARIABLE_NAME IN ('Rpl_semi_sync_source_clients', 'Rpl_semi_sync_source_status')",
        )
        .expect("semi-sync status");
        // "<clients>,<status>"
        if st
            .split_once(',')
            .is_some_and(|(n, on)| n.parse::<u32>().is_ok_and(|n| n >= 1) && on == "ON")
        {
            break;
        }
        assert!(Instant::now() < deadline, "semi-sync not on: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sb
}

/// `(read_only, replicating from port)` of a running server, read from the
/// server itself in its flavor's dialect.
pub async fn role_of(flavor: Flavor, port: u16) -> Option<(bool, Option<u16>)> {
    let mut c = tokio::time::timeout(
        Duration::from_secs(3),
        mysql_async::Conn::new(root_opts(port)),
    )
    .await
    .ok()?
    .ok()?;
    let ro: Option<u8> = c.query_first("SELECT @@GLOBAL.read_only").await.ok()?;
    let rows: Vec<mysql_async::Row> = c.query(flavor.replica_status()).await.ok()?;
    let source = rows
        .first()
        .and_then(|r| r.get::<u16, _>(flavor.source_port_column()));
    let _ = c.disconnect().await;
    Some((ro == Some(1), source))
}

/// Waits (30 s) until every running replica has applied what the running,
/// writable server (else server 0) has written, in the flavor's terms.
pub async fn wait_caught_up(t: &dyn Topology) {
    match t.mariadb() {
        Some(sb) => sandbox::wait_replicas_caught_up(sb).await,
        None => mysql_caught_up(t).await,
    }
}

async fn mysql_caught_up(t: &dyn Topology) {
    let running: Vec<usize> = (0..t.len()).filter(|&i| t.running(i)).collect();
    let mut primary = 0;
    for &i in &running {
        if role_of(Flavor::MySql, t.port(i)).await == Some((false, None)) {
            primary = i;
        }
    }
    let gtids = scalar(t.port(primary), "SELECT @@GLOBAL.gtid_executed")
        .await
        .unwrap_or_default()
        .replace('\n', "");
    let sql = format!("SELECT GTID_SUBSET('{gtids}', @@GLOBAL.gtid_executed)");
    let deadline = Instant::now() + Duration::from_secs(30);
    for &i in running.iter().filter(|&&i| i != primary) {
        while scalar(t.port(i), &sql).await.as_deref() != Some("1") {
            assert!(
                Instant::now() < deadline,
                "{} did not catch up with {gtids} within 30 s",
                t.name(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One value as root (NULL as None).
pub async fn scalar(port: u16, sql: &str) -> Option<String> {
    let mut c = mysql_async::Conn::new(root_opts(port))
        .await
        .unwrap_or_else(|e| panic!("root connect to {port}: {e}"));
    let v: Option<Option<String>> = c
        .query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql} on {port}: {e}"));
    let _ = c.disconnect().await;
    v.flatten()
}
