//! Client accounts: either the servers' own (`auth = "servers"`, the
//! default: any account that can log into the primary can log in through
//! rwproxy, with no second user list to keep in sync) or a list in the
//! config file (`auth = "config"`).
//!
//! In servers mode the monitor account reads `mysql.global_priv` on the
//! primary (`mysql.user` on MySQL), caches it, refreshes it periodically and on a cache miss — at
//! most once per `refresh_min_interval`, so a storm of logins with a wrong
//! user name costs the primary one query per interval, not one per login.
//! Only native-password and caching_sha2_password hashes are kept, in
//! memory; nothing is written out.
//!
//! TLS requirements of server accounts are honoured on the client side of
//! rwproxy: `REQUIRE SSL` (and `REQUIRE CIPHER` alone) accounts may only log
//! in over TLS to rwproxy. `REQUIRE X509`/`ISSUER`/`SUBJECT` accounts are
//! refused outright: they need a client certificate, which rwproxy neither
//! asks clients for nor could present to the servers on their behalf.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mysql_async::prelude::Queryable;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::config::{AuthMode, Config};
use crate::monitor::monitor_opts;
use crate::protocol::auth::{self, NativeHash};
use crate::topology::Topology;

/// An account as a server stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerAccount {
    pub user: String,
    /// Host pattern (`%`, `10.%`, `127.0.0.1`, `localhost`, `10.0.0.0/255.0.0.0`).
    pub host: String,
    pub plugin: String,
    /// Native hash, when the plugin is mysql_native_password with a password.
    pub hash: Option<NativeHash>,
    /// The stored `$A$…` hash, when the plugin is caching_sha2_password
    /// with a password (MySQL).
    pub sha2: Option<Arc<[u8]>>,
    pub locked: bool,
    pub expired: bool,
    /// The account's `REQUIRE` clause.
    pub tls: TlsRequirement,
}

/// What an account's `REQUIRE` clause asks of the client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRequirement {
    #[default]
    None,
    /// `REQUIRE SSL` or `REQUIRE CIPHER '…'`: any TLS connection (the
    /// cipher is then enforced by the server on rwproxy's own connection).
    Tls,
    /// `REQUIRE X509`, `ISSUER` or `SUBJECT`: a client certificate.
    ClientCertificate,
}

impl TlsRequirement {
    /// From `mysql.global_priv` JSON: `ssl_type` (0 none, 1 ANY = `REQUIRE
    /// SSL`, 2 X509, 3 SPECIFIED) and, for SPECIFIED, whether an issuer or
    /// subject is set.
    fn from_priv(ssl_type: Option<&str>, issuer: Option<&str>, subject: Option<&str>) -> Self {
        let set = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
        match ssl_type {
            Some("1") => TlsRequirement::Tls,
            Some("2") => TlsRequirement::ClientCertificate,
            Some("3") if set(issuer) || set(subject) => TlsRequirement::ClientCertificate,
            Some("3") => TlsRequirement::Tls,
            _ => TlsRequirement::None,
        }
    }
}

impl std::fmt::Debug for ServerAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAccount")
            .field("user", &self.user)
            .field("host", &self.host)
            .field("plugin", &self.plugin)
            .field("locked", &self.locked)
            .field("expired", &self.expired)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// The outcome of looking a user up for a client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Verify the scramble reply against this hash (`None`: no password).
    Found {
        name: Arc<str>,
        hash: Option<NativeHash>,
        /// The account may only log in over TLS (ERR 3159 otherwise).
        require_tls: bool,
    },
    /// The account requires a client certificate (`REQUIRE X509` …).
    NeedsClientCertificate,
    /// ER_ACCOUNT_HAS_BEEN_LOCKED.
    Locked,
    /// ER_MUST_CHANGE_PASSWORD_LOGIN.
    Expired,
    /// A caching_sha2_password account with a password (MySQL): verify
    /// with [`crate::protocol::caching_sha2`]; `host` is the account's host
    /// pattern (with `name`, the key of the fast-path cache).
    FoundSha2 {
        name: Arc<str>,
        host: Arc<str>,
        stored: Arc<[u8]>,
        require_tls: bool,
    },
    /// An authentication plugin rwproxy cannot proxy.
    Unsupported(String),
    NotFound,
}

/// Where a client connects from, as account host patterns judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// A TCP client: its address.
    Tcp(SocketAddr),
    /// A client on rwproxy's Unix socket (`listen_socket`): host
    /// `localhost`, as a server names its own socket clients.
    Local,
}

impl ClientAddr {
    /// The host part of `'user'@'host'` in error messages: the IP, or
    /// `localhost`.
    pub fn host(&self) -> String {
        match self {
            ClientAddr::Tcp(a) => a.ip().to_string(),
            ClientAddr::Local => "localhost".to_string(),
        }
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddr::Tcp(a) => a.fmt(f),
            ClientAddr::Local => f.write_str("localhost"),
        }
    }
}

impl From<SocketAddr> for ClientAddr {
    fn from(a: SocketAddr) -> ClientAddr {
        ClientAddr::Tcp(a)
    }
}

/// See [`Accounts::host_name`]; `resolve` is `skip_name_resolve = OFF`.
fn server_host_name(client: &ClientAddr, resolve: bool) -> String {
    match client {
        ClientAddr::Tcp(a) if resolve && a.ip().is_loopback() => "localhost".to_string(),
        other => other.host(),
    }
}

/// Whether a client matches a MySQL host pattern. `resolve` mirrors the
/// server's `skip_name_resolve = OFF`: only then does a TCP client from a
/// loopback address count as `localhost` (with name resolution off, the
/// server keeps `localhost` for Unix-socket clients). A Unix-socket client
/// is host `localhost` either way: it matches `localhost`, `%` and
/// patterns such as `local%`, never an IP pattern (the server does the
/// same for its own socket clients).
pub fn host_matches(pattern: &str, client: &ClientAddr, resolve: bool) -> bool {
    let ip = match client {
        ClientAddr::Tcp(a) => a.ip(),
        ClientAddr::Local => {
            return pattern.eq_ignore_ascii_case("localhost")
                || like(pattern.as_bytes(), b"localhost");
        }
    };
    let text = ip.to_string();
    if pattern.eq_ignore_ascii_case("localhost") {
        return resolve && ip.is_loopback();
    }
    if let Some((net, mask)) = pattern.split_once('/')
        && let (Ok(IpAddr::V4(n)), Ok(IpAddr::V4(m)), IpAddr::V4(a)) =
            (net.parse::<IpAddr>(), mask.parse::<IpAddr>(), ip)
    {
        return u32::from(a) & u32::from(m) == u32::from(n);
    }
    like(pattern.as_bytes(), text.as_bytes())
}

/// SQL LIKE matching with `%` and `_` (iterative, no recursion).
fn like(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'_' || p[pi].eq_ignore_ascii_case(&s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'%' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'%' {
        pi += 1;
    }
    pi == p.len()
}

/// Most specific first, as the server sorts its ACL: exact host names and
/// addresses before patterns, patterns with a longer literal prefix before
/// shorter ones, `%` last; a named user before the anonymous one.
fn specificity(a: &ServerAccount) -> (u8, usize, u8) {
    let wild = a.host.find(['%', '_']);
    let class = match wild {
        None => 0,
        Some(_) if a.host == "%" => 2,
        Some(_) => 1,
    };
    let prefix = wild.unwrap_or(a.host.len());
    (class, usize::MAX - prefix, u8::from(a.user.is_empty()))
}

/// One row of the accounts query: user, host, plugin, authentication
/// string, account_locked, password_last_changed, ssl_type, x509_issuer,
/// x509_subject.
type AccountRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// `mysql.user` (MySQL) in the shape of the MariaDB query: locked as
/// `1`, expired as `password_last_changed = 0`, `ssl_type` as global_priv's
/// numbers, the authentication string in hex.
const MYSQL_ACCOUNTS_SQL: &str = "SELECT User, Host, plugin, HEX(authentication_string), \
     IF(account_locked = 'Y', '1', '0'), IF(password_expired = 'Y', '0', '1'), \
     CASE ssl_type WHEN 'ANY' THEN '1' WHEN 'X509' THEN '2' WHEN 'SPECIFIED' THEN '3' ELSE '0' END, \
     CAST(x509_issuer AS CHAR), CAST(x509_subject AS CHAR) FROM mysql.user";

/// Hex digits to bytes (MySQL's `HEX()` output); invalid input gives what
/// parsed before it (such a hash then fails every check).
fn unhex(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks_exact(2)
        .map_while(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

/// Why the accounts could not be read from the servers.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("no server available")]
    NoServer,
    #[error("{0}")]
    Server(#[from] mysql_async::Error),
    #[error("timed out reading the accounts (mysql.global_priv / mysql.user)")]
    Timeout,
}

/// The account store a proxy instance authenticates against.
pub struct Accounts {
    /// Swapped by RELOAD (users and passwords change for new sessions).
    config: Arc<ArcSwap<Config>>,
    topology: Arc<Topology>,
    /// Server accounts, most specific first.
    cache: ArcSwap<Vec<ServerAccount>>,
    /// When the cache was last refreshed (rate limit for refresh-on-miss).
    last_refresh: Mutex<Option<Instant>>,
    /// Bumped by every refresh (lets queued logins reuse a refresh).
    generation: std::sync::atomic::AtomicU64,
    /// The primary's `@@skip_name_resolve` (see [`host_matches`]).
    skip_name_resolve: std::sync::atomic::AtomicBool,
    /// The accounts were last read from a MySQL server (whose default
    /// plugin, caching_sha2_password, clients are then greeted with).
    mysql: std::sync::atomic::AtomicBool,
    /// Fast-path cache of caching_sha2_password accounts (see the README,
    /// "What rwproxy keeps in memory").
    pub sha2_cache: crate::protocol::caching_sha2::Sha2Cache,
    /// rwproxy's RSA key for caching_sha2 full authentication over
    /// plaintext, generated at first use.
    rsa: tokio::sync::OnceCell<Option<Arc<crate::protocol::caching_sha2::RsaKey>>>,
    /// The backend pools: a refresh that finds an account dropped or
    /// changed closes the idle connections logged in as it.
    pools: Option<Arc<crate::backend::Pools>>,
}

/// The users whose accounts differ between two readings (dropped, or any
/// entry's password, plugin, lock, expiry or TLS requirement changed). A
/// pooled connection keeps the identity and global privileges of its
/// login, so such a user's pooled connections must not serve new sessions.
/// The first reading (`old` empty) changes nobody.
pub fn changed_users(old: &[ServerAccount], new: &[ServerAccount]) -> Vec<String> {
    if old.is_empty() {
        return Vec::new();
    }
    let entries = |list: &[ServerAccount], user: &str| -> Vec<ServerAccount> {
        let mut v: Vec<ServerAccount> = list.iter().filter(|a| a.user == user).cloned().collect();
        v.sort_by(|a, b| a.host.cmp(&b.host));
        v
    };
    let mut users: Vec<&str> = old.iter().map(|a| a.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    users
        .into_iter()
        .filter(|u| entries(old, u) != entries(new, u))
        .map(str::to_string)
        .collect()
}

/// Least time between two refreshes triggered by unknown users.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(1);

impl Accounts {
    fn cfg(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn new(config: Arc<ArcSwap<Config>>, topology: Arc<Topology>) -> Accounts {
        Accounts {
            config,
            topology,
            cache: ArcSwap::from_pointee(Vec::new()),
            last_refresh: Mutex::new(None),
            skip_name_resolve: std::sync::atomic::AtomicBool::new(true),
            generation: std::sync::atomic::AtomicU64::new(0),
            sha2_cache: Default::default(),
            mysql: std::sync::atomic::AtomicBool::new(false),
            rsa: tokio::sync::OnceCell::new(),
            pools: None,
        }
    }

    /// Lets refreshes discard idle connections of dropped or changed
    /// accounts ([`changed_users`]).
    pub fn with_pools(mut self, pools: Arc<crate::backend::Pools>) -> Accounts {
        self.pools = Some(pools);
        self
    }

    /// Whether client greetings should name caching_sha2_password: in
    /// servers mode, when the accounts were read from MySQL (config mode
    /// keeps mysql_native_password, which every config user can use).
    pub fn greet_with_sha2(&self) -> bool {
        self.mysql.load(std::sync::atomic::Ordering::Relaxed)
            && self.cfg().auth == AuthMode::Servers
    }

    /// rwproxy's RSA key (generated off the async threads at first use);
    /// `None` if generation failed.
    pub async fn rsa_key(&self) -> Option<Arc<crate::protocol::caching_sha2::RsaKey>> {
        self.rsa
            .get_or_init(|| async {
                tokio::task::spawn_blocking(crate::protocol::caching_sha2::RsaKey::generate)
                    .await
                    .ok()
                    .flatten()
                    .map(Arc::new)
            })
            .await
            .clone()
    }

    /// Finds the account `user` connecting from `client` would use.
    pub async fn lookup(&self, user: &str, client: ClientAddr) -> Lookup {
        let cfg = self.cfg();
        if cfg.auth == AuthMode::Config {
            return match cfg.users.iter().find(|u| u.name == user) {
                Some(u) => Lookup::Found {
                    name: Arc::from(u.name.as_str()),
                    hash: match (&u.password, &u.password_hash) {
                        (Some(p), _) if p.is_empty() => None,
                        (Some(p), _) => Some(auth::from_password(p).1),
                        (None, Some(h)) => auth::parse_native_hash(h),
                        (None, None) => None,
                    },
                    require_tls: u.require_tls,
                },
                None => Lookup::NotFound,
            };
        }
        match self.find(user, client) {
            Lookup::NotFound => {
                // Maybe created since the last refresh: refresh, then look again.
                self.refresh_after_miss().await;
                self.find(user, client)
            }
            found => found,
        }
    }

    /// The client's host as the servers name it in their messages (ERR
    /// 1045 `'u'@'host'`): with name resolution on (`skip_name_resolve =
    /// OFF`), a loopback TCP client resolves to `localhost`; otherwise the
    /// address. (A server resolving other addresses would print their DNS
    /// names; rwproxy does no reverse lookups and prints the address.)
    pub fn host_name(&self, client: &ClientAddr) -> String {
        let resolve = !self
            .skip_name_resolve
            .load(std::sync::atomic::Ordering::Relaxed);
        server_host_name(client, resolve)
    }

    fn find(&self, user: &str, client: ClientAddr) -> Lookup {
        let cache = self.cache.load();
        let resolve = !self
            .skip_name_resolve
            .load(std::sync::atomic::Ordering::Relaxed);
        let Some(a) = cache.iter().find(|a| {
            (a.user == user || a.user.is_empty()) && host_matches(&a.host, &client, resolve)
        }) else {
            return Lookup::NotFound;
        };
        if a.locked {
            return Lookup::Locked;
        }
        if a.expired {
            return Lookup::Expired;
        }
        if a.tls == TlsRequirement::ClientCertificate {
            return Lookup::NeedsClientCertificate;
        }
        match a.plugin.as_str() {
            "mysql_native_password" | "" => Lookup::Found {
                name: Arc::from(user),
                hash: a.hash,
                require_tls: a.tls == TlsRequirement::Tls,
            },
            "caching_sha2_password" => match &a.sha2 {
                Some(stored) => Lookup::FoundSha2 {
                    name: Arc::from(user),
                    host: Arc::from(a.host.as_str()),
                    stored: stored.clone(),
                    require_tls: a.tls == TlsRequirement::Tls,
                },
                // No password: the empty reply is checked as for native.
                None => Lookup::Found {
                    name: Arc::from(user),
                    hash: None,
                    require_tls: a.tls == TlsRequirement::Tls,
                },
            },
            other => Lookup::Unsupported(other.to_string()),
        }
    }

    /// Refreshes after a login found no matching account or a wrong
    /// password (the account may have been created or changed since the
    /// last refresh). At most one refresh per `REFRESH_MIN_INTERVAL`: a
    /// login arriving sooner waits for the next allowed refresh, and logins
    /// that queued behind a refresh reuse its result.
    pub async fn refresh_after_miss(&self) {
        let seen = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut last = self.last_refresh.lock().await;
        if self.generation.load(std::sync::atomic::Ordering::Acquire) != seen {
            return;
        }
        if let Some(t) = *last {
            let age = t.elapsed();
            if age < REFRESH_MIN_INTERVAL {
                tokio::time::sleep(REFRESH_MIN_INTERVAL - age).await;
            }
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh().await {
            warn!(error = %e, "could not read server accounts");
        }
    }

    /// Refreshes when the last refresh is older than `min_age`; returns
    /// whether it refreshed successfully.
    async fn refresh_if_due(&self, min_age: Duration) -> bool {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_age) {
            return false;
        }
        *last = Some(Instant::now());
        match self.refresh().await {
            Ok(n) => {
                debug!(accounts = n, "server accounts refreshed");
                true
            }
            Err(e) => {
                warn!(error = %e, "could not read server accounts");
                false
            }
        }
    }

    /// Reads the accounts from the current primary.
    pub async fn refresh(&self) -> Result<usize, RefreshError> {
        let snap = self.topology.load();
        let primary = snap
            .primary_view()
            .or_else(|| snap.servers.iter().find(|s| s.up))
            .ok_or(RefreshError::NoServer)?;
        let cfg = self.cfg();
        let opts = monitor_opts(&cfg, &primary.addr);
        let fetch = async {
            let mut c = crate::backend::tls::connect_mysql(opts).await?;
            // MariaDB keeps accounts in mysql.global_priv (JSON), MySQL in
            // mysql.user (no global_priv); the columns are mapped to the
            // same shape. MySQL's hashes hold arbitrary salt bytes: hex.
            let (version, comment): (String, String) = c
                .query_first("SELECT VERSION(), @@version_comment")
                .await?
                .unwrap_or_default();
            let mysql = crate::dialect::Flavor::from_version(&version, &comment)
                == crate::dialect::Flavor::MySql;
            let sql = if mysql {
                MYSQL_ACCOUNTS_SQL
            } else {
                "SELECT User, Host, \
                       JSON_VALUE(Priv, '$.plugin'), \
                       JSON_VALUE(Priv, '$.authentication_string'), \
                       JSON_VALUE(Priv, '$.account_locked'), \
                       JSON_VALUE(Priv, '$.password_last_changed'), \
                       JSON_VALUE(Priv, '$.ssl_type'), \
                       JSON_VALUE(Priv, '$.x509_issuer'), \
                       JSON_VALUE(Priv, '$.x509_subject') \
                     FROM mysql.global_priv"
            };
            let rows: Vec<AccountRow> = c.query(sql).await?;
            let skip: Option<i64> = c.query_first("SELECT @@skip_name_resolve").await?;
            let _ = c.disconnect().await;
            Ok::<_, RefreshError>((rows, skip.unwrap_or(1) != 0, mysql))
        };
        let (rows, skip, mysql) = tokio::time::timeout(cfg.connect_timeout() * 2, fetch)
            .await
            .map_err(|_| RefreshError::Timeout)??;
        self.skip_name_resolve
            .store(skip, std::sync::atomic::Ordering::Relaxed);
        self.mysql
            .store(mysql, std::sync::atomic::Ordering::Relaxed);
        let mut list: Vec<ServerAccount> = rows
            .into_iter()
            .map(
                |(user, host, plugin, auth_string, locked, changed, ssl_type, issuer, subject)| {
                    let plugin = plugin.unwrap_or_default();
                    let auth_string = auth_string.unwrap_or_default();
                    let raw = if mysql {
                        unhex(&auth_string)
                    } else {
                        auth_string.into_bytes()
                    };
                    let hash = if plugin == "mysql_native_password" || plugin.is_empty() {
                        std::str::from_utf8(&raw)
                            .ok()
                            .and_then(auth::parse_native_hash)
                    } else {
                        None
                    };
                    let sha2 = (plugin == "caching_sha2_password" && !raw.is_empty())
                        .then(|| Arc::from(raw));
                    ServerAccount {
                        user,
                        host,
                        plugin,
                        hash,
                        sha2,
                        locked: matches!(locked.as_deref(), Some("1" | "true")),
                        // `ALTER USER … PASSWORD EXPIRE` sets this to 0.
                        expired: changed.as_deref() == Some("0"),
                        tls: TlsRequirement::from_priv(
                            ssl_type.as_deref(),
                            issuer.as_deref(),
                            subject.as_deref(),
                        ),
                    }
                },
            )
            .collect();
        list.sort_by_key(specificity);
        self.sha2_cache.retain_current(list.iter().filter_map(|a| {
            a.sha2
                .as_deref()
                .map(|s| (a.user.as_str(), a.host.as_str(), s))
        }));
        let n = list.len();
        let old = self.cache.load_full();
        if let Some(pools) = &self.pools {
            for user in changed_users(&old, &list) {
                let closed = pools.discard_user(Some(&user));
                info!(%user, closed, "account dropped or changed on the servers: its pooled connections are closed");
            }
        }
        self.cache.store(Arc::new(list));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(n)
    }

    /// Accounts rwproxy cannot proxy (for check-config and the admin).
    pub fn unsupported(&self) -> Vec<(String, String, String)> {
        self.cache
            .load()
            .iter()
            .filter(|a| {
                !matches!(
                    a.plugin.as_str(),
                    "mysql_native_password" | "caching_sha2_password" | ""
                )
            })
            .map(|a| (a.user.clone(), a.host.clone(), a.plugin.clone()))
            .collect()
    }

    /// Periodic refresh until shutdown.
    pub async fn refresher(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if self.cfg().auth != AuthMode::Servers {
            // Checked again each period: RELOAD may switch modes.
        }
        if self.cfg().auth == AuthMode::Servers {
            match self.refresh().await {
                Ok(n) => info!(accounts = n, "loaded server accounts"),
                Err(e) => warn!(error = %e, "could not load server accounts yet"),
            }
        }
        loop {
            let every = Duration::from_millis(self.cfg().accounts_refresh_ms);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            if self.cfg().auth == AuthMode::Servers {
                self.refresh_if_due(every / 2).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_and_changed_accounts_are_reported() {
        let acct = |user: &str, host: &str, hash: u8| ServerAccount {
            user: user.into(),
            host: host.into(),
            plugin: "mysql_native_password".into(),
            hash: Some(NativeHash([hash; 20])),
            sha2: None,
            locked: false,
            expired: false,
            tls: TlsRequirement::None,
        };
        let old = vec![acct("a", "%", 1), acct("b", "%", 2), acct("c", "%", 3)];
        let new = vec![acct("a", "%", 1), acct("c", "%", 9), acct("d", "%", 4)];
        assert_eq!(changed_users(&old, &new), vec!["b", "c"]);
        assert!(changed_users(&[], &new).is_empty());
        let mut locked = new.clone();
        locked[0].locked = true;
        assert_eq!(changed_users(&new, &locked), vec!["a"]);
    }

    #[test]
    fn host_patterns() {
        let lo = ClientAddr::Tcp("127.0.0.1:5000".parse().expect("ip"));
        let ten = ClientAddr::Tcp("10.1.2.3:5000".parse().expect("ip"));
        assert!(host_matches("%", &lo, false));
        assert!(host_matches("localhost", &lo, true));
        assert!(!host_matches("localhost", &lo, false));
        assert!(!host_matches("localhost", &ten, true));
        assert!(host_matches("10.%", &ten, false));
        assert!(!host_matches("10.%", &lo, false));
        assert!(host_matches("127.0.0._", &lo, false));
        assert!(host_matches("10.0.0.0/255.0.0.0", &ten, false));
        assert!(!host_matches("10.0.0.0/255.0.0.0", &lo, false));
        assert!(host_matches("127.0.0.1", &lo, false));
        assert!(!host_matches("127.0.0.10", &lo, false));
    }

    #[test]
    fn socket_clients_are_localhost() {
        let sock = ClientAddr::Local;
        let lo = ClientAddr::Tcp("127.0.0.1:5000".parse().expect("addr"));
        let lan = ClientAddr::Tcp("10.1.2.3:5000".parse().expect("addr"));
        assert_eq!(server_host_name(&lo, false), "127.0.0.1");
        assert_eq!(server_host_name(&lo, true), "localhost");
        assert_eq!(server_host_name(&lan, true), "10.1.2.3");
        assert_eq!(server_host_name(&sock, false), "localhost");
        for resolve in [false, true] {
            assert!(host_matches("localhost", &sock, resolve));
            assert!(host_matches("LOCALHOST", &sock, resolve));
            assert!(host_matches("%", &sock, resolve));
            assert!(host_matches("local%", &sock, resolve));
            assert!(!host_matches("127.0.0.1", &sock, resolve));
            assert!(!host_matches("127.%", &sock, resolve));
            assert!(!host_matches("127.0.0.0/255.0.0.0", &sock, resolve));
        }
        assert_eq!(sock.to_string(), "localhost");
        assert_eq!(sock.host(), "localhost");
    }

    #[test]
    fn require_clauses() {
        use TlsRequirement as T;
        assert_eq!(T::from_priv(None, None, None), T::None);
        assert_eq!(T::from_priv(Some("0"), None, None), T::None);
        assert_eq!(T::from_priv(Some("1"), None, None), T::Tls);
        assert_eq!(T::from_priv(Some("2"), None, None), T::ClientCertificate);
        // REQUIRE CIPHER only: TLS, the server checks the cipher.
        assert_eq!(T::from_priv(Some("3"), Some(""), Some("")), T::Tls);
        assert_eq!(
            T::from_priv(Some("3"), Some("/CN=ca"), Some("")),
            T::ClientCertificate
        );
    }

    #[test]
    fn most_specific_first() {
        let acc = |user: &str, host: &str| ServerAccount {
            user: user.into(),
            host: host.into(),
            plugin: String::new(),
            hash: None,
            sha2: None,
            locked: false,
            expired: false,
            tls: TlsRequirement::None,
        };
        let mut v = [
            acc("app", "%"),
            acc("", "127.0.0.1"),
            acc("app", "127.%"),
            acc("app", "127.0.0.1"),
        ];
        v.sort_by_key(specificity);
        let order: Vec<(&str, &str)> = v
            .iter()
            .map(|a| (a.user.as_str(), a.host.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("app", "127.0.0.1"),
                ("", "127.0.0.1"),
                ("app", "127.%"),
                ("app", "%")
            ]
        );
    }
}
