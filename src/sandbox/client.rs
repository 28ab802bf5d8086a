//! Setup SQL through the `mariadb` command-line client, as root over the
//! server's Unix socket.
//!
//! The CLI is the simplest robust choice for a handful of blocking setup
//! statements: no runtime, and `root@localhost` of a fresh data directory
//! logs in over the socket without a password whatever the OS user.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{SandboxError, SandboxServer};

/// One row of a result, by column name.
pub(super) type Row = HashMap<String, String>;

/// Runs `sql` (one or more `;`-separated statements) on `server` and returns
/// the result rows of the last statement that produced any.
pub(super) fn query(
    mariadb: &Path,
    server: &SandboxServer,
    sql: &str,
) -> Result<Vec<Row>, SandboxError> {
    let output = Command::new(mariadb)
        .arg("--no-defaults")
        .arg("--protocol=socket")
        .arg(format!("--socket={}", server.socket.display()))
        .arg("--user=root")
        .arg("--connect-timeout=2")
        .arg("--batch")
        .arg("--execute")
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SandboxError::Io {
            action: "run the mariadb client".into(),
            path: mariadb.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(SandboxError::Sql {
            server: server.name.clone(),
            sql: sql.to_string(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(parse_batch(&String::from_utf8_lossy(&output.stdout)))
}

/// Runs statements whose results do not matter.
pub(super) fn execute(
    mariadb: &Path,
    server: &SandboxServer,
    sql: &str,
) -> Result<(), SandboxError> {
    query(mariadb, server, sql).map(|_| ())
}

/// Whether the server answers a trivial query.
pub(super) fn ping(mariadb: &Path, server: &SandboxServer) -> bool {
    query(mariadb, server, "SELECT 1").is_ok()
}

/// Parses `--batch` output: a tab-separated header line, then one line per
/// row with `\t`, `\n` and `\\` escaped. With several result sets the last
/// one wins (each starts with its own header line, which we cannot tell
/// from a row, so callers send at most one result-producing statement).
fn parse_batch(text: &str) -> Vec<Row> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split('\t').collect();
    lines
        .map(|line| {
            names
                .iter()
                .zip(line.split('\t'))
                .map(|(n, v)| (n.to_string(), unescape(v)))
                .collect()
        })
        .collect()
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A MariaDB GTID position (`@@gtid_binlog_pos`, `@@gtid_slave_pos`):
/// the highest sequence number per replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos(BTreeMap<u32, u64>);

impl GtidPos {
    /// Parses `domain-server-seq[,domain-server-seq...]`; empty means empty.
    pub fn parse(text: &str) -> Option<GtidPos> {
        let mut map = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split('-');
            let domain = fields.next()?.parse::<u32>().ok()?;
            let _server = fields.next()?.parse::<u32>().ok()?;
            let seq = fields.next()?.parse::<u64>().ok()?;
            if fields.next().is_some() {
                return None;
            }
            let entry = map.entry(domain).or_insert(0);
            *entry = (*entry).max(seq);
        }
        Some(GtidPos(map))
    }

    /// Whether this position includes everything in `other`, domain by
    /// domain (the server id part does not matter: sequence numbers grow
    /// across a promotion under `gtid_strict_mode`).
    pub fn covers(&self, other: &GtidPos) -> bool {
        other
            .0
            .iter()
            .all(|(domain, seq)| self.0.get(domain).is_some_and(|mine| mine >= seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_output_is_split_and_unescaped() {
        let rows = parse_batch("a\tb\nx\\ty\tNULL\n1\\n2\t\\\\\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["a"], "x\ty");
        assert_eq!(rows[0]["b"], "NULL");
        assert_eq!(rows[1]["a"], "1\n2");
        assert_eq!(rows[1]["b"], "\\");
        assert!(parse_batch("").is_empty());
    }

    #[test]
    fn gtid_positions_compare_per_domain() {
        let p = |s| GtidPos::parse(s).expect("valid");
        assert!(p("0-1-12").covers(&p("0-1-12")));
        assert!(p("0-2-13").covers(&p("0-1-12")));
        assert!(!p("0-1-11").covers(&p("0-1-12")));
        assert!(p("").covers(&p("")));
        assert!(!p("").covers(&p("0-1-1")));
        assert!(p("0-1-5,1-2-7").covers(&p("1-2-7")));
        assert!(!p("0-1-5").covers(&p("0-1-5,1-2-7")));
        assert!(GtidPos::parse("0-1").is_none());
        assert!(GtidPos::parse("x-1-2").is_none());
    }
}
