//! Setup SQL through the `mariadb` command-line client, as root over the
//! server's Unix socket.
//!
//! The CLI is the simplest robust choice for a handful of blocking setup
//! statements: no runtime, and `root@localhost` of a fresh data directory
//! logs in over the socket without a password whatever the OS user.

use std::collections::HashMap;
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
}
