//! rwproxy as a child process (the real binary), for tests that measure
//! the proxy's own memory: in-process, the proxy's RSS would be mixed with
//! the test's clients and buffers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rwproxy::config::Config;

use super::sandbox;

/// A running `rwproxy run` child process; killed (by its pid) when dropped.
pub struct ChildProxy {
    child: Child,
    /// The proxy's MySQL port.
    pub addr: SocketAddr,
    /// Its HTTP endpoint (/metrics, /status).
    pub http: SocketAddr,
    /// Its admin port, when the config has an `[admin]` section.
    pub admin: Option<SocketAddr>,
    /// Where its stdout and stderr go (a file, so a chatty log can never
    /// block the proxy on a full pipe).
    pub log: PathBuf,
}

impl ChildProxy {
    /// Writes `config` (listen, http and admin ports replaced by free ones)
    /// to a temp file and starts the binary on it with `RUST_LOG =
    /// log_filter`; returns once the proxy accepts MySQL logins.
    pub async fn start(mut config: Config, log_filter: &str) -> ChildProxy {
        let ports = sandbox::free_ports(3);
        config.listen = format!("127.0.0.1:{}", ports[0]);
        config.http_listen = format!("127.0.0.1:{}", ports[1]);
        let admin = config.admin.as_mut().map(|a| {
            a.listen = format!("127.0.0.1:{}", ports[2]);
            a.listen.parse().expect("admin addr")
        });
        let dir = sandbox::temp_dir();
        let path = dir.join("rwproxy.toml");
        std::fs::write(&path, toml::to_string(&config).expect("config to toml"))
            .expect("write config");
        let log = dir.join("rwproxy.log");
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("dup log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rwproxy"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start rwproxy");
        let proxy = ChildProxy {
            child,
            addr: format!("127.0.0.1:{}", ports[0]).parse().expect("addr"),
            http: format!("127.0.0.1:{}", ports[1]).parse().expect("addr"),
            admin,
            log,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = mysql_async::Conn::new(proxy.app_opts()).await {
                let _ = c.disconnect().await;
                return proxy;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rwproxy child did not accept logins within 30 s; log:\n{}",
                proxy.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's resident memory in KiB (VmRSS).
    pub fn rss_kib(&mut self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// A KiB figure from the child's /proc/<pid>/status, e.g. `VmRSS:`
    /// (memory touched) or `VmSize:` (address space, which also counts
    /// allocations never written to).
    pub fn status_kib(&mut self, field: &str) -> u64 {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "rwproxy exited ({status}); log:\n{}",
                tail(&self.log_text(), 40)
            );
        }
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status of rwproxy");
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    /// Whether the child is still running (a panic that unwinds to the
    /// top of a task does not end it, but one in `main` or an abort does).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the child logged so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// A value from `/metrics`: the sample whose name (with labels, as
    /// printed) is exactly `series`, e.g. `rwproxy_client_sessions`.
    pub async fn metric(&self, series: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.http)
            .await
            .expect("http connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("http write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("http read");
        let text = String::from_utf8_lossy(&buf);
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(name, _)| *name == series)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
    }

    /// Asserts the proxy is alive and never panicked (a panic inside a
    /// session task is caught by tokio and would otherwise go unnoticed).
    pub fn assert_healthy(&mut self) {
        assert!(
            self.running(),
            "rwproxy died; log tail:\n{}",
            tail(&self.log_text(), 40)
        );
        let log = self.log_text();
        for bad in ["panicked", "overflowed its stack"] {
            assert!(
                !log.contains(bad),
                "rwproxy log contains {bad:?}:\n{}",
                log.lines()
                    .filter(|l| l.contains(bad))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }

    /// mysql_async options for the sandbox's `app` account through the child.
    pub fn app_opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.addr.ip().to_string())
            .tcp_port(self.addr.port())
            .user(Some("app"))
            .pass(Some("app"))
            .db_name(Some("app"))
            .prefer_socket(false)
            .into()
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Raises this process's soft limit on open files to `want` (capped by
/// the hard limit); children started afterwards (rwproxy, mariadbd)
/// inherit it. Tests with hundreds of connections need more than the
/// usual 1024.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}
