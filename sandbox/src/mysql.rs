//! The MySQL flavor of the sandbox (`sandbox up --flavor mysql`): Oracle
//! MySQL 9.x (Debian's `mysql-server-core` from the `sid` suite) as a
//! primary + N GTID replicas.
//!
//! MySQL 9.x needs a newer libc and libstdc++ than Debian 12 has, and the
//! host's libraries are never upgraded: the servers run from a minimal
//! `sid` chroot, created once by `scripts/mysql-chroot.sh` (embedded in the
//! binary, so `rwproxy sandbox up` works from any directory) at
//! `RWPROXY_MYSQL_CHROOT` (default `/var/lib/rwproxy/sid-mysql`), and reused.
//! The chroot shares the host's network and PID namespaces: the servers
//! listen on `127.0.0.1:<port>` for the host, and their pid files hold host
//! pids, so they are stopped by pid like the MariaDB ones.
//!
//! Where the data lives: in the sandbox directory `DIR`, like the MariaDB
//! sandbox (`DIR/primary/{data,my.cnf,mysqld.sock,mysqld.pid,error.log}`).
//! `mysqld` only sees the chroot, so `up` bind-mounts `DIR` at
//! `<chroot>/rwproxy-sandboxes/<16 hex of SHA1(DIR)>` (recorded in
//! `DIR/mysql-sandbox.toml`) and `down` unmounts it once the servers are
//! stopped. Removing `DIR` after `down` removes everything; the chroot
//! itself stays for the next sandbox. Needs root (mount, chroot).
//!
//! Settings that matter (see MYSQL.md in the team's notes): `mysqlx=OFF`
//! (else it listens on 33060), `event_scheduler=OFF` (else every shutdown
//! stalls 8–10 s), `secure-file-priv` inside the sandbox, `gtid_mode=ON`,
//! replicas `super_read_only`, replication with `SOURCE_AUTO_POSITION=1` and
//! `GET_SOURCE_PUBLIC_KEY=1` (the `repl` account is caching_sha2_password
//! and replication runs without TLS), and `SOURCE_HEARTBEAT_PERIOD=0.5` as
//! on the MariaDB sandbox: the default (`replica_net_timeout / 2` = 30 s) is
//! too rare for the replicas' evidence of a live primary, so a quiet primary
//! cut off from rwproxy alone looked dead after `primary_failure_timeout`
//! and a replica was promoted beside it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::process;
use super::{SandboxError, ServerStatus, io_error, server_name};

/// `scripts/mysql-chroot.sh`, run with `bash -s` when the chroot is missing.
const CHROOT_SCRIPT: &str = include_str!("../../scripts/mysql-chroot.sh");
/// Default chroot (the script's default too).
const DEFAULT_CHROOT: &str = "/var/lib/rwproxy/sid-mysql";
/// `DIR/mysql-sandbox.toml`: marks a MySQL sandbox and records its mount.
pub const MANIFEST: &str = "mysql-sandbox.toml";
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(30);
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Same accounts and databases as the MariaDB sandbox. The monitor account
/// gets exactly the README's minimal MySQL list (tests/mysql_flavor.rs
/// promotes and fails over with it): `REPLICATION CLIENT` (`SHOW REPLICA
/// STATUS`), `SELECT` on `performance_schema.replication_connection_status`
/// (heartbeats), `SELECT` on `mysql.user` (accounts),
/// `SYSTEM_VARIABLES_ADMIN` (`super_read_only`/`read_only`),
/// `REPLICATION_SLAVE_ADMIN` (`STOP`/`START REPLICA`, `CHANGE REPLICATION
/// SOURCE`), `RELOAD` (`RESET REPLICA ALL`), `SHOW_ROUTINE` (stored
/// functions' `SQL DATA ACCESS`).
const ACCOUNTS_SQL: &str = concat!(
    super::common_accounts_sql!(),
    "GRANT REPLICATION CLIENT, SYSTEM_VARIABLES_ADMIN, REPLICATION_SLAVE_ADMIN, RELOAD \
ON *.* TO 'rwproxy_monitor'@'%';
GRANT SELECT ON mysql.user TO 'rwproxy_monitor'@'%';
GRANT SELECT ON performance_schema.replication_connection_status TO 'rwproxy_monitor'@'%';
GRANT SHOW_ROUTINE ON *.* TO 'rwproxy_monitor'@'%';"
);

/// What `DIR/mysql-sandbox.toml` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// The chroot the servers run in.
    chroot: PathBuf,
    /// Where `DIR` is mounted, as a path inside the chroot.
    inner: String,
    /// Primary first.
    ports: Vec<u16>,
    /// Accounts and replication were set up.
    ready: bool,
}

/// A MySQL sandbox: directory, chroot, where the directory appears inside
/// the chroot, and the ports (primary first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlSandbox {
    /// The (canonical) sandbox directory on the host.
    pub dir: PathBuf,
    /// The chroot holding MySQL.
    pub chroot: PathBuf,
    /// `dir` as a path inside the chroot (the bind mount).
    pub inner: String,
    /// Primary first.
    pub ports: Vec<u16>,
}

impl MysqlSandbox {
    /// Server names, primary first.
    pub fn names(&self) -> Vec<String> {
        (0..self.ports.len()).map(server_name).collect()
    }

    /// Unix socket of server `i`, as a host path.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(server_name(i)).join("mysqld.sock")
    }

    fn pid_file(&self, i: usize) -> PathBuf {
        self.dir.join(server_name(i)).join("mysqld.pid")
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(server_name(i)).join("error.log")
    }

    /// The `--defaults-file=` argument: how a pid is recognised as ours.
    fn defaults_arg(&self, i: usize) -> String {
        format!("--defaults-file={}/{}/my.cnf", self.inner, server_name(i))
    }

    /// The pid of server `i` if it runs.
    pub fn running_pid(&self, i: usize) -> Option<u32> {
        process::running_pid(&self.pid_file(i), &self.defaults_arg(i))
    }

    fn mount_point(&self) -> PathBuf {
        self.chroot.join(self.inner.trim_start_matches('/'))
    }

    /// Opens the MySQL sandbox created in `dir`, if it is one.
    pub fn open(dir: &Path) -> Result<Option<MysqlSandbox>, SandboxError> {
        let dir = fs::canonicalize(dir).map_err(io_error("open sandbox directory", dir))?;
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let m: Manifest = toml::from_str(&text).map_err(|e| SandboxError::NotASandbox {
            path: path.clone(),
            reason: format!("unreadable sandbox state: {e}"),
        })?;
        Ok(Some(MysqlSandbox {
            dir,
            chroot: m.chroot,
            inner: m.inner,
            ports: m.ports,
        }))
    }

    fn write_manifest(&self, ready: bool) -> Result<(), SandboxError> {
        let m = Manifest {
            chroot: self.chroot.clone(),
            inner: self.inner.clone(),
            ports: self.ports.clone(),
            ready,
        };
        let path = self.dir.join(MANIFEST);
        let body = toml::to_string(&m).map_err(|e| SandboxError::NotASandbox {
            path: path.clone(),
            reason: format!("cannot serialize sandbox state: {e}"),
        })?;
        let tmp = self.dir.join(format!("{MANIFEST}.tmp"));
        fs::write(
            &tmp,
            format!("# Managed by `rwproxy sandbox`; do not edit.\n{body}"),
        )
        .map_err(io_error("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_error("write", &path))
    }

    fn ready(&self) -> bool {
        fs::read_to_string(self.dir.join(MANIFEST))
            .ok()
            .and_then(|t| toml::from_str::<Manifest>(&t).ok())
            .is_some_and(|m| m.ready)
    }
}

/// The chroot to use: `RWPROXY_MYSQL_CHROOT` or the default.
pub fn chroot_dir() -> PathBuf {
    std::env::var_os("RWPROXY_MYSQL_CHROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CHROOT))
}

/// Whether the chroot holds a MySQL server and client.
pub fn chroot_ready(root: &Path) -> bool {
    root.join("usr/sbin/mysqld").exists() && root.join("usr/bin/mysql").exists()
}

/// Creates the chroot when missing (debootstrap + apt inside it, ~40–90 s
/// the first time; see `scripts/mysql-chroot.sh`).
pub fn ensure_chroot(root: &Path) -> Result<(), SandboxError> {
    if chroot_ready(root) {
        return Ok(());
    }
    let mut child = Command::new("bash")
        .arg("-s")
        .env("RWPROXY_MYSQL_CHROOT", root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(io_error("run", Path::new("bash")))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(CHROOT_SCRIPT.as_bytes())
            .map_err(io_error("run", Path::new("scripts/mysql-chroot.sh")))?;
    }
    let status = child
        .wait()
        .map_err(io_error("run", Path::new("scripts/mysql-chroot.sh")))?;
    if !status.success() || !chroot_ready(root) {
        return Err(SandboxError::InvalidOptions(format!(
            "could not create the MySQL chroot {} (scripts/mysql-chroot.sh: {status})",
            root.display()
        )));
    }
    Ok(())
}

/// Runs `program args…` inside the chroot.
fn in_root(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(root).args(args).stdin(Stdio::null());
    cmd
}

/// Runs SQL as root over server `i`'s socket with the chroot's `mysql`
/// client; returns its tab-separated output without headers.
pub fn sql(sb: &MysqlSandbox, i: usize, statements: &str) -> Result<String, SandboxError> {
    let sock = format!("{}/{}/mysqld.sock", sb.inner, server_name(i));
    let out = in_root(
        &sb.chroot,
        &[
            "mysql",
            "--no-defaults",
            "-S",
            &sock,
            "-uroot",
            "-N",
            "-B",
            "-e",
            statements,
        ],
    )
    .output()
    .map_err(io_error("run the chroot's mysql client in", &sb.chroot))?;
    if !out.status.success() {
        return Err(SandboxError::Sql {
            server: server_name(i),
            sql: statements.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn inner_path_for(dir: &Path) -> String {
    let digest = Sha1::digest(dir.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("/rwproxy-sandboxes/{hex}")
}

fn is_mountpoint(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    // Field 5 is the mount point (spaces escaped as \040).
    text.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| m.replace("\\040", " ") == want)
    })
}

fn mount(sb: &MysqlSandbox) -> Result<(), SandboxError> {
    let mp = sb.mount_point();
    if is_mountpoint(&mp) {
        return Ok(());
    }
    fs::create_dir_all(&mp).map_err(io_error("create", &mp))?;
    let status = Command::new("mount")
        .arg("--bind")
        .arg(&sb.dir)
        .arg(&mp)
        .status()
        .map_err(io_error("run mount for", &mp))?;
    if !status.success() {
        return Err(SandboxError::InvalidOptions(format!(
            "mount --bind {} {} failed ({status}); the MySQL sandbox needs root",
            sb.dir.display(),
            mp.display()
        )));
    }
    Ok(())
}

fn unmount(sb: &MysqlSandbox) -> Result<(), SandboxError> {
    let mp = sb.mount_point();
    if is_mountpoint(&mp) {
        let ok = Command::new("umount")
            .arg(&mp)
            .status()
            .map_err(io_error("run umount for", &mp))?
            .success();
        if !ok {
            return Err(SandboxError::InvalidOptions(format!(
                "umount {} failed",
                mp.display()
            )));
        }
    }
    let _ = fs::remove_dir(&mp);
    Ok(())
}

fn write_cnf(sb: &MysqlSandbox, i: usize) -> Result<(), SandboxError> {
    let name = server_name(i);
    let d = format!("{}/{name}", sb.inner);
    let host = sb.dir.join(&name);
    fs::create_dir_all(host.join("files")).map_err(io_error("create", &host))?;
    let mut cnf = format!(
        "# Generated by `rwproxy sandbox up --flavor mysql`; paths are inside the chroot {chroot}\n\
         [mysqld]\n\
         user = root\n\
         datadir = {d}/data\n\
         socket = {d}/mysqld.sock\n\
         pid-file = {d}/mysqld.pid\n\
         log-error = {d}/error.log\n\
         secure-file-priv = {d}/files\n\
         port = {port}\n\
         bind-address = 127.0.0.1\n\
         mysqlx = OFF\n\
         skip-name-resolve\n\
         server_id = {id}\n\
         report_host = 127.0.0.1\n\
         report_port = {port}\n\
         log-bin = binlog\n\
         relay-log = relay\n\
         gtid_mode = ON\n\
         enforce_gtid_consistency = ON\n\
         innodb_buffer_pool_size = 64M\n\
         innodb_redo_log_capacity = 64M\n\
         max_connections = 500\n\
         event_scheduler = OFF\n",
        chroot = sb.chroot.display(),
        port = sb.ports[i],
        id = i + 1,
    );
    if i > 0 {
        cnf.push_str("read_only = ON\nsuper_read_only = ON\n");
    }
    let path = host.join("my.cnf");
    fs::write(&path, cnf).map_err(io_error("write", &path))
}

fn start_one(sb: &MysqlSandbox, i: usize) -> Result<(), SandboxError> {
    let name = server_name(i);
    if sb.running_pid(i).is_some() {
        return Ok(());
    }
    super::check_port_free(&super::SandboxServer::new(&sb.dir, &name, sb.ports[i]))?;
    let defaults = sb.defaults_arg(i);
    let fail = |reason: String| SandboxError::StartFailed {
        server: name.clone(),
        port: sb.ports[i],
        reason,
        log: sb.log(i),
        tail: super::log_tail(&sb.log(i)),
    };
    if !sb.dir.join(&name).join("data").exists() {
        write_cnf(sb, i)?;
        let st = in_root(&sb.chroot, &["mysqld", &defaults, "--initialize-insecure"])
            .status()
            .map_err(io_error("run mysqld in", &sb.chroot))?;
        if !st.success() {
            return Err(fail(format!("mysqld --initialize-insecure: {st}")));
        }
    }
    remove_stale_socket_lock(&sb.socket(i));
    // --daemonize returns once the server accepts connections (or failed).
    let st = in_root(&sb.chroot, &["mysqld", &defaults, "--daemonize"])
        .stdout(Stdio::null())
        .status()
        .map_err(io_error("run mysqld in", &sb.chroot))?;
    if !st.success() {
        return Err(fail(format!("mysqld --daemonize: {st}")));
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while sql(sb, i, "SELECT 1").is_err() {
        if Instant::now() > deadline {
            return Err(fail("does not answer".into()));
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Removes `<socket>.lock` left by a server that is gone. mysqld refuses to
/// start while the pid written there answers `kill(pid, 0)`, which a zombie
/// does: in containers whose pid 1 does not reap orphans, a server killed
/// with SIGKILL stays one, and its restart failed with "Another process
/// with pid … is using unix socket file". A zombie holds no socket.
fn remove_stale_socket_lock(socket: &std::path::Path) {
    let mut lock = socket.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let pid = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    if pid.is_some_and(|pid| !crate::process::process_alive(pid)) {
        let _ = std::fs::remove_file(&lock);
    }
}

/// Starts server `i` again (after a test stopped or killed it) without
/// touching replication: after a promotion the servers' own configuration
/// is the truth, not the sandbox's original layout.
pub fn start_server(sb: &MysqlSandbox, i: usize) -> Result<(), SandboxError> {
    start_one(sb, i)
}

fn set_up_replication(sb: &MysqlSandbox) -> Result<(), SandboxError> {
    if !sb.ready() {
        sql(sb, 0, ACCOUNTS_SQL)?;
    }
    let pport = sb.ports[0];
    for i in 1..sb.ports.len() {
        let configured = sql(
            sb,
            i,
            "SELECT COUNT(*) FROM performance_schema.replication_connection_configuration",
        )?;
        if configured == "0" {
            sql(
                sb,
                i,
                &format!(
                    "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT={pport}, \
                     SOURCE_USER='repl', SOURCE_PASSWORD='repl', SOURCE_AUTO_POSITION=1, \
                     GET_SOURCE_PUBLIC_KEY=1, SOURCE_CONNECT_RETRY=1, SOURCE_HEARTBEAT_PERIOD=0.5; \
                     START REPLICA;"
                ),
            )?;
        } else {
            sql(sb, i, "START REPLICA")?;
        }
    }
    let gtids = sql(sb, 0, "SELECT @@GLOBAL.gtid_executed")?.replace('\n', "");
    let deadline = Instant::now() + REPLICATION_TIMEOUT;
    for i in 1..sb.ports.len() {
        loop {
            let q = format!("SELECT GTID_SUBSET('{gtids}', @@GLOBAL.gtid_executed)");
            if sql(sb, i, &q)? == "1" {
                break;
            }
            if Instant::now() > deadline {
                let detail = sql(sb, i, "SHOW REPLICA STATUS\\G").unwrap_or_default();
                return Err(SandboxError::Replication {
                    server: server_name(i),
                    detail: format!("did not reach {gtids}: {detail}"),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Creates (once) and starts a MySQL primary + replicas in `dir` on `ports`
/// (primary first); writes `dir/rwproxy.toml`. With `owner_pid`, a watchdog
/// kills the servers when that process dies (tests).
pub fn up(
    dir: &Path,
    ports: &[u16],
    proxy_port: u16,
    owner_pid: Option<u32>,
) -> Result<MysqlSandbox, SandboxError> {
    super::validate_ports(ports)?;
    let root = chroot_dir();
    ensure_chroot(&root)?;
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    let dir = fs::canonicalize(dir).map_err(io_error("open directory", dir))?;
    if dir.join(super::MANIFEST).exists() {
        return Err(SandboxError::InvalidOptions(format!(
            "{} holds a MariaDB sandbox; use another directory for --flavor mysql",
            dir.display()
        )));
    }
    let sb = match MysqlSandbox::open(&dir)? {
        Some(old) if old.ports != ports => {
            return Err(SandboxError::InvalidOptions(format!(
                "the sandbox in {} was created with ports {:?} (primary first), not {:?}",
                dir.display(),
                old.ports,
                ports
            )));
        }
        Some(old) => old,
        None => MysqlSandbox {
            inner: inner_path_for(&dir),
            dir: dir.clone(),
            chroot: root,
            ports: ports.to_vec(),
        },
    };
    for i in 0..sb.ports.len() {
        let sock = sb.socket(i);
        if sock.as_os_str().len() > super::MAX_SOCKET_PATH {
            return Err(SandboxError::InvalidOptions(format!(
                "socket path {} is too long",
                sock.display()
            )));
        }
    }
    if !sb.ready() {
        sb.write_manifest(false)?;
    }
    mount(&sb)?;
    let result = (|| {
        for i in 0..sb.ports.len() {
            start_one(&sb, i)?;
        }
        if let Some(owner) = owner_pid {
            let servers: Vec<(PathBuf, String)> = (0..sb.ports.len())
                .map(|i| (sb.pid_file(i), sb.defaults_arg(i)))
                .collect();
            process::spawn_watchdog(owner, &servers)
                .map_err(io_error("start the watchdog", Path::new("/bin/sh")))?;
        }
        set_up_replication(&sb)?;
        sb.write_manifest(true)?;
        let layout = super::Sandbox::layout(&sb.dir, &sb.ports);
        super::write_proxy_config(&layout, proxy_port)
    })();
    if let Err(e) = result {
        let _ = down_sandbox(&sb);
        return Err(e);
    }
    Ok(sb)
}

/// Stops every server (SIGTERM by pid, SIGKILL after 30 s) and unmounts the
/// sandbox directory from the chroot. Data stays.
pub fn down_sandbox(sb: &MysqlSandbox) -> Result<(), SandboxError> {
    let running: Vec<(usize, u32)> = (0..sb.ports.len())
        .rev()
        .filter_map(|i| sb.running_pid(i).map(|p| (i, p)))
        .collect();
    for (_, pid) in &running {
        let _ = process::signal(*pid, "TERM");
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (i, pid) in &running {
        while process::process_alive(*pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        if process::process_alive(*pid) {
            let _ = process::signal(*pid, "KILL");
            let until = Instant::now() + Duration::from_secs(5);
            while process::process_alive(*pid) && Instant::now() < until {
                thread::sleep(Duration::from_millis(50));
            }
            if process::process_alive(*pid) {
                return Err(SandboxError::StopFailed {
                    server: server_name(*i),
                    pid: *pid,
                });
            }
        }
    }
    unmount(sb)
}

/// One line per server, as `status` shows them.
pub fn status(sb: &MysqlSandbox) -> Vec<ServerStatus> {
    (0..sb.ports.len())
        .map(|i| {
            let pid = sb.running_pid(i);
            let mut st = ServerStatus {
                name: server_name(i),
                port: sb.ports[i],
                pid,
                answering: false,
                role: "-".into(),
                replication: "-".into(),
            };
            if pid.is_none() {
                return st;
            }
            let Ok(ro) = sql(sb, i, "SELECT @@super_read_only") else {
                return st;
            };
            st.answering = true;
            let repl = sql(
                sb,
                i,
                "SELECT CONCAT(c.SERVICE_STATE, '/', a.SERVICE_STATE, ' from ', \
                 cc.HOST, ':', cc.PORT) FROM performance_schema.replication_connection_status c \
                 JOIN performance_schema.replication_applier_status a \
                 JOIN performance_schema.replication_connection_configuration cc",
            )
            .unwrap_or_default();
            let gtid = sql(sb, i, "SELECT @@GLOBAL.gtid_executed")
                .unwrap_or_default()
                .replace('\n', "");
            st.role = match (repl.is_empty(), ro == "1") {
                (false, _) => "replica".into(),
                (true, false) => "primary".into(),
                (true, true) => "read-only".into(),
            };
            st.replication = if repl.is_empty() {
                format!("gtid_executed {gtid}")
            } else {
                format!("io/sql {repl}, gtid_executed {gtid}")
            };
            st
        })
        .collect()
}

/// What `sandbox up --flavor mysql` prints.
pub fn up_text(sb: &MysqlSandbox, proxy_port: u16, took: Duration) -> String {
    let version = in_root(&sb.chroot, &["mysqld", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut text = format!(
        "MySQL sandbox up in {} ({} server(s), GTID replication) after {:.1} s.\n\
         {version}\n(chroot {}, the directory is mounted there at {})\n\n\
         Servers (accounts root/root, app/app, rwproxy_monitor/monitor, repl/repl; caching_sha2_password):\n",
        sb.dir.display(),
        sb.ports.len(),
        took.as_secs_f64(),
        sb.chroot.display(),
        sb.inner,
    );
    for (i, name) in sb.names().iter().enumerate() {
        let pid = sb
            .running_pid(i)
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        text.push_str(&format!(
            "  {name:<10} mariadb -h127.0.0.1 -P{} -uroot -proot    (pid {pid}, log {})\n",
            sb.ports[i],
            sb.log(i).display()
        ));
    }
    text.push_str(&format!(
        "  MySQL's own client: chroot {} mysql -h127.0.0.1 -P{} -uroot -proot\n\
         \nStart the proxy:\n  rwproxy run --config {}\n\
         Connect through it:\n  mariadb -h127.0.0.1 -P{proxy_port} -uapp -papp app\n\
         Stop the servers (and unmount):\n  rwproxy sandbox down --dir {}\n",
        sb.chroot.display(),
        sb.ports[0],
        sb.dir.join("rwproxy.toml").display(),
        sb.dir.display()
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_path_is_stable_and_short() {
        let a = inner_path_for(Path::new("/tmp/x"));
        assert_eq!(a, inner_path_for(Path::new("/tmp/x")));
        assert_ne!(a, inner_path_for(Path::new("/tmp/y")));
        assert_eq!(a.len(), "/rwproxy-sandboxes/".len() + 16);
    }

    #[test]
    fn manifest_round_trips() {
        let m = Manifest {
            chroot: "/var/lib/rwproxy/sid-mysql".into(),
            inner: "/rwproxy-sandboxes/0011223344556677".into(),
            ports: vec![3400, 3401],
            ready: true,
        };
        let text = toml::to_string(&m).expect("serialize");
        assert_eq!(toml::from_str::<Manifest>(&text).expect("parse"), m);
    }
}
