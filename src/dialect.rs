//! What differs between MariaDB and MySQL starts from [`Flavor`], read once
//! per connection from the server's own words (`@@version`,
//! `@@version_comment`), never guessed from a version number: a MySQL 10
//! must not be taken for MariaDB, nor a MariaDB 9 fork for MySQL.

/// The server family a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    /// From `@@version` and `@@version_comment`: MariaDB names itself in
    /// one of them (`10.11.6-MariaDB-0+deb12u1`, `mariadb.org binary
    /// distribution`); anything else speaks MySQL's dialect.
    pub fn from_version(version: &str, comment: &str) -> Flavor {
        let says = |s: &str| s.to_ascii_lowercase().contains("mariadb");
        if says(version) || says(comment) {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }

    /// Asks the server (one round trip; do it once per connection).
    pub async fn detect(conn: &mut mysql_async::Conn) -> Result<Flavor, mysql_async::Error> {
        use mysql_async::prelude::Queryable;
        let row: Option<(String, String)> = conn
            .query_first("SELECT @@version, @@version_comment")
            .await?;
        let (version, comment) = row.unwrap_or_default();
        Ok(Flavor::from_version(&version, &comment))
    }
}

/// Where the replication dialects differ, one function per question, each
/// answering for both flavors. Callers hold the [`Flavor`] of their
/// connection (read once when it was opened) and ask here; nothing on the
/// per-statement path branches on the flavor.
///
/// MySQL notes (8.4 and 9.x; the `SLAVE`/`MASTER` spellings are gone in
/// 9.x): `super_read_only = ON` also sets `read_only`, and
/// `read_only = OFF` also clears `super_read_only`, so fencing sets the
/// former and unfencing clears the latter on both flavors. Replication
/// threads are exempt from both.
impl Flavor {
    /// `@@read_only`, the position written to the binlog, the position
    /// applied as a replica, `@@server_id`, and whether even privileged
    /// accounts are refused writes (`super_read_only`; MariaDB has no such
    /// variable, `read_only` is all it has, so it repeats it).
    /// MySQL keeps one executed set: applied == written on a replica.
    pub fn monitor_globals_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => {
                "SELECT @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos, @@server_id, @@read_only"
            }
            Flavor::MySql => {
                "SELECT @@read_only, @@GLOBAL.gtid_executed, @@GLOBAL.gtid_executed, @@server_id, @@super_read_only"
            }
        }
    }

    /// The replica status statement. MariaDB: the `ALL` form, the only one
    /// with `Slave_received_heartbeats`.
    pub fn replica_status_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "SHOW ALL SLAVES STATUS",
            Flavor::MySql => "SHOW REPLICA STATUS",
        }
    }

    /// Column names of the replica status row: (IO thread running, SQL
    /// thread running, lag seconds, source host, source server id, SQL
    /// thread state, GTIDs received).
    pub fn status_columns(self) -> StatusColumns {
        match self {
            Flavor::MariaDb => StatusColumns {
                io_running: "Slave_IO_Running",
                sql_running: "Slave_SQL_Running",
                lag: "Seconds_Behind_Master",
                source_host: "Master_Host",
                source_id: "Master_Server_Id",
                sql_state: "Slave_SQL_Running_State",
                received: "Gtid_IO_Pos",
            },
            Flavor::MySql => StatusColumns {
                io_running: "Replica_IO_Running",
                sql_running: "Replica_SQL_Running",
                lag: "Seconds_Behind_Source",
                source_host: "Source_Host",
                source_id: "Source_Server_Id",
                sql_state: "Replica_SQL_Running_State",
                received: "Retrieved_Gtid_Set",
            },
        }
    }

    /// MySQL: the IO thread's heartbeat counter of the default channel
    /// (MariaDB has it in the status row already).
    pub fn heartbeats_sql(self) -> Option<&'static str> {
        match self {
            Flavor::MariaDb => None,
            Flavor::MySql => Some(
                "SELECT COUNT_RECEIVED_HEARTBEATS FROM performance_schema.replication_connection_status WHERE CHANNEL_NAME = ''",
            ),
        }
    }

    /// Asks the server to report the GTID of the session's own writes in
    /// its OK packets (session-state info): MariaDB tracks the variable
    /// `last_gtid`, MySQL has `session_track_gtids = OWN_GTID`.
    pub fn track_gtid_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => {
                "SET SESSION session_track_system_variables = CONCAT_WS(',', NULLIF(@@session_track_system_variables, ''), 'last_gtid')"
            }
            Flavor::MySql => "SET SESSION session_track_gtids = OWN_GTID",
        }
    }

    /// Without session tracking: a position that includes the session's
    /// last write, asked right after it committed. MySQL has no
    /// `@@last_gtid`; the executed set includes the write (and whatever
    /// else committed meanwhile, which only makes the wait a little
    /// stricter, never stale).
    pub fn last_gtid_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "SELECT @@last_gtid",
            Flavor::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// A statement that waits up to `secs` until this server applied
    /// `gtid` and returns `0` if it did (both functions answer 0 on
    /// success; on timeout MariaDB answers -1, MySQL 1).
    pub fn gtid_wait_sql(self, gtid: &str, secs: f64) -> String {
        let gtid = gtid.replace('\\', "\\\\").replace('\'', "''");
        match self {
            Flavor::MariaDb => format!("SELECT MASTER_GTID_WAIT('{gtid}', {secs:.3})"),
            Flavor::MySql => format!("SELECT WAIT_FOR_EXECUTED_GTID_SET('{gtid}', {secs:.3})"),
        }
    }

    /// Everything this server wrote or applied (a switchover's final
    /// position of the old primary).
    pub fn written_pos_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "SELECT @@gtid_binlog_pos",
            Flavor::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// What this server applied as a replica (a failover's candidates).
    pub fn applied_pos_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "SELECT @@gtid_slave_pos",
            Flavor::MySql => "SELECT @@GLOBAL.gtid_executed",
        }
    }

    /// Fencing: nobody but the replication threads may write. MySQL's
    /// `read_only` lets accounts with `CONNECTION_ADMIN`/`SUPER` write (the
    /// monitor account has them); `super_read_only` does not.
    pub fn fence_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "SET GLOBAL read_only = 1",
            Flavor::MySql => "SET GLOBAL super_read_only = 1",
        }
    }

    /// Reads back what [`Flavor::fence_sql`] set (1 when fenced).
    pub fn fenced_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "SELECT @@GLOBAL.read_only",
            Flavor::MySql => "SELECT @@GLOBAL.super_read_only",
        }
    }

    /// Makes the server writable (MySQL: also clears `super_read_only`).
    pub fn unfence_sql(self) -> &'static str {
        "SET GLOBAL read_only = 0"
    }

    /// The semi-synchronous replication switches, `(replica side, source
    /// side)`: MariaDB's built-in `rpl_semi_sync_slave_enabled` /
    /// `rpl_semi_sync_master_enabled`; MySQL's `semisync_replica` /
    /// `semisync_source` plugins (the only ones MySQL 9 ships; 8.4's
    /// default names) call them `rpl_semi_sync_replica_enabled` /
    /// `rpl_semi_sync_source_enabled`.
    pub fn semi_sync_vars(self) -> (&'static str, &'static str) {
        match self {
            Flavor::MariaDb => (
                "rpl_semi_sync_slave_enabled",
                "rpl_semi_sync_master_enabled",
            ),
            Flavor::MySql => (
                "rpl_semi_sync_replica_enabled",
                "rpl_semi_sync_source_enabled",
            ),
        }
    }

    pub fn stop_replica_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "STOP SLAVE",
            Flavor::MySql => "STOP REPLICA",
        }
    }

    pub fn start_replica_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "START SLAVE",
            Flavor::MySql => "START REPLICA",
        }
    }

    pub fn stop_io_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "STOP SLAVE IO_THREAD",
            Flavor::MySql => "STOP REPLICA IO_THREAD",
        }
    }

    pub fn start_io_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "START SLAVE IO_THREAD",
            Flavor::MySql => "START REPLICA IO_THREAD",
        }
    }

    /// Forgets the replication configuration (a promoted replica).
    /// MariaDB's needs `RELOAD`; MySQL's `REPLICATION_SLAVE_ADMIN`.
    pub fn reset_replica_sql(self) -> &'static str {
        match self {
            Flavor::MariaDb => "RESET SLAVE ALL",
            Flavor::MySql => "RESET REPLICA ALL",
        }
    }

    /// Before an old primary becomes a replica: MariaDB replicates from
    /// `gtid_slave_pos`, which a server that never was a replica has not
    /// set, so it first takes its own binlog position. MySQL's auto
    /// position starts from `gtid_executed`: nothing to do.
    pub fn before_rejoin_sql(self) -> Option<&'static str> {
        match self {
            Flavor::MariaDb => Some("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos"),
            Flavor::MySql => None,
        }
    }

    /// Points this server at a new source by GTID. `heartbeat` in seconds;
    /// `ssl` when rwproxy itself talks TLS to the source. MySQL: the
    /// replication account uses `caching_sha2_password`, whose first full
    /// authentication without TLS needs the source's RSA key
    /// (`GET_SOURCE_PUBLIC_KEY = 1`).
    pub fn change_source_sql(self, to: &ChangeSource<'_>) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
        let (host, user, pw, port, hb) = (
            q(to.host),
            q(to.user),
            q(to.password),
            to.port,
            to.heartbeat,
        );
        match self {
            Flavor::MariaDb => format!(
                "CHANGE MASTER TO MASTER_HOST={host}, MASTER_PORT={port}, MASTER_USER={user}, MASTER_PASSWORD={pw}, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD={hb:.3}{}",
                if to.ssl { ", MASTER_SSL=1" } else { "" }
            ),
            Flavor::MySql => format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST={host}, SOURCE_PORT={port}, SOURCE_USER={user}, SOURCE_PASSWORD={pw}, SOURCE_AUTO_POSITION=1, SOURCE_CONNECT_RETRY=1, SOURCE_HEARTBEAT_PERIOD={hb:.3}, GET_SOURCE_PUBLIC_KEY=1{}",
                if to.ssl { ", SOURCE_SSL=1" } else { "" }
            ),
        }
    }
}

/// Column names of a replica status row (see [`Flavor::status_columns`]).
#[derive(Debug, Clone, Copy)]
pub struct StatusColumns {
    pub io_running: &'static str,
    pub sql_running: &'static str,
    pub lag: &'static str,
    pub source_host: &'static str,
    pub source_id: &'static str,
    pub sql_state: &'static str,
    pub received: &'static str,
}

/// Where [`Flavor::change_source_sql`] points a replica.
#[derive(Debug, Clone)]
pub struct ChangeSource<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
    pub heartbeat: f64,
    pub ssl: bool,
}

#[cfg(test)]
mod tests {
    use super::Flavor;

    #[test]
    fn flavor_comes_from_the_servers_words_not_the_version_number() {
        let cases = [
            ("10.11.6-MariaDB-0+deb12u1", "Debian 12", Flavor::MariaDb),
            (
                "11.8.2-MariaDB",
                "mariadb.org binary distribution",
                Flavor::MariaDb,
            ),
            ("9.7.4", "(Debian)", Flavor::MySql),
            ("8.4.5", "MySQL Community Server - GPL", Flavor::MySql),
            // A future MySQL 10 is still MySQL; a MariaDB build whose
            // version string was shortened is still MariaDB.
            ("10.0.1", "MySQL Community Server - GPL", Flavor::MySql),
            ("5.5.5-10.11.6", "MariaDB Server", Flavor::MariaDb),
        ];
        for (version, comment, want) in cases {
            assert_eq!(
                Flavor::from_version(version, comment),
                want,
                "{version} / {comment}"
            );
        }
    }

    #[test]
    fn replication_statements_speak_each_flavors_dialect() {
        let to = super::ChangeSource {
            host: "127.0.0.1",
            port: 3307,
            user: "repl",
            password: "it's",
            heartbeat: 0.5,
            ssl: false,
        };
        let my = Flavor::MySql.change_source_sql(&to);
        assert_eq!(
            my,
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=3307, SOURCE_USER='repl', SOURCE_PASSWORD='it''s', SOURCE_AUTO_POSITION=1, SOURCE_CONNECT_RETRY=1, SOURCE_HEARTBEAT_PERIOD=0.500, GET_SOURCE_PUBLIC_KEY=1"
        );
        let ma = Flavor::MariaDb.change_source_sql(&super::ChangeSource { ssl: true, ..to });
        assert!(
            ma.starts_with("CHANGE MASTER TO MASTER_HOST='127.0.0.1'"),
            "{ma}"
        );
        assert!(ma.ends_with("MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=0.500, MASTER_SSL=1"), "{ma}");
        // MySQL 9.x rejects every SLAVE/MASTER spelling.
        for f in [
            Flavor::MySql.stop_replica_sql(),
            Flavor::MySql.start_replica_sql(),
            Flavor::MySql.stop_io_sql(),
            Flavor::MySql.start_io_sql(),
            Flavor::MySql.reset_replica_sql(),
            Flavor::MySql.replica_status_sql(),
            Flavor::MySql.monitor_globals_sql(),
            Flavor::MySql.written_pos_sql(),
            Flavor::MySql.applied_pos_sql(),
            Flavor::MySql.last_gtid_sql(),
            Flavor::MySql.track_gtid_sql(),
        ] {
            let up = f.to_ascii_uppercase();
            assert!(
                !up.contains("SLAVE") && !up.contains("MASTER") && !up.contains("GTID_BINLOG"),
                "{f}"
            );
        }
        assert_eq!(
            Flavor::MySql.gtid_wait_sql("u:1-5", 0.25),
            "SELECT WAIT_FOR_EXECUTED_GTID_SET('u:1-5', 0.250)"
        );
        assert_eq!(
            Flavor::MariaDb.gtid_wait_sql("0-1-5", 1.0),
            "SELECT MASTER_GTID_WAIT('0-1-5', 1.000)"
        );
    }
}
