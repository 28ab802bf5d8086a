//! Statements whose effect reaches past the session that ran them, in ways
//! that matter to pooled connections: `SET GLOBAL` (connections logged in
//! earlier carry the old values in their sessions) and account management
//! (`DROP USER`, `ALTER USER`, `GRANT`… — a pooled connection keeps the
//! identity and global privileges of its login). Looked at only after such
//! a statement succeeded, and only for statements that are not reads, so
//! plain `SELECT`s never pay for it.

use super::lex::{Lexer, TokenKind, ident_name};

/// What a statement changed beyond its own session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerWide {
    /// Nothing pooled connections care about.
    None,
    /// A global system variable (`SET GLOBAL x`, `SET @@global.x`).
    Globals,
    /// An account or its privileges (`CREATE/DROP/ALTER/RENAME USER`,
    /// `GRANT`, `REVOKE`, `SET PASSWORD`, `DROP ROLE`).
    Accounts,
}

/// Classifies `sql` (a statement that succeeded). Never panics; reads the
/// first two words, and for `SET` the whole statement.
pub fn server_wide(sql: &[u8]) -> ServerWide {
    let mut lx = Lexer::new(sql);
    let Some(first) = lx.next_token() else {
        return ServerWide::None;
    };
    if first.is_word("GRANT") || first.is_word("REVOKE") {
        return ServerWide::Accounts;
    }
    let second = lx.next_token();
    let second_is = |w: &str| second.is_some_and(|t| t.is_word(w));
    if (first.is_word("DROP")
        || first.is_word("ALTER")
        || first.is_word("RENAME")
        || first.is_word("CREATE"))
        && (second_is("USER") || second_is("ROLE") || second_is("OR"))
    {
        // `CREATE OR REPLACE USER` replaces an account in place.
        return ServerWide::Accounts;
    }
    if !first.is_word("SET") {
        return ServerWide::None;
    }
    if second_is("PASSWORD") {
        return ServerWide::Accounts;
    }
    let mut tok = second;
    while let Some(t) = tok {
        let global = t.is_word("GLOBAL")
            || (t.kind == TokenKind::SysVar
                && t.text.len() > 9
                && t.text[..9].eq_ignore_ascii_case(b"@@global."));
        if global {
            return ServerWide::Globals;
        }
        tok = lx.next_token();
    }
    ServerWide::None
}

/// One assignment of a `SET GLOBAL` statement, as the replicas get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalAssignment<'a> {
    /// The variable's name, lower case, without `@@global.`.
    pub name: String,
    /// The value as written.
    pub value: &'a [u8],
    /// `value` is one constant (number, string, word such as `ON` or
    /// `DEFAULT`): the replicas can take it as written. Otherwise it is an
    /// expression (`@saved`, `@@global.x + 1`…) that only the session's
    /// primary connection can evaluate.
    pub constant: bool,
    /// Not constant, but made only of numbers, user variables and
    /// arithmetic (`512*1024`, `@saved`): reading it on the session's
    /// primary connection (`SELECT …`) cannot fail or change anything.
    pub evaluable: bool,
}

/// Variables that describe one server's own part in replication (its
/// role, identity, position, replication filters and threads, binary
/// log): a `SET GLOBAL` of one of them means the server it ran on, the
/// primary, and must never be copied to the replicas (`read_only = 0` on
/// a replica, a replica's `gtid_slave_pos`, `server_id`…). Also the event
/// scheduler (replicated events are disabled on replicas; the scheduler is
/// the primary's business) and `auto_increment_*` (set per server in
/// some topologies).
fn per_server(name: &str) -> bool {
    const EXACT: [&str; 8] = [
        "read_only",
        "super_read_only",
        "server_id",
        "event_scheduler",
        "sql_log_bin",
        "offline_mode",
        "log_bin_trust_function_creators",
        "init_slave",
    ];
    const PREFIXES: [&str; 10] = [
        "gtid_",
        "rpl_",
        "wsrep",
        "relay_",
        "report_",
        "replicate_",
        "binlog_",
        "log_bin",
        "auto_increment_",
        "sync_",
    ];
    const PARTS: [&str; 4] = ["slave", "replica", "master", "source"];
    EXACT.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || PARTS.iter().any(|p| name.contains(p))
}

/// The global assignments of a `SET` statement that the replicas should
/// get too, leaving out [per-server](per_server) variables (the
/// primary's alone); `None` when there are none, or when the statement is
/// not a plain list of assignments (`SET PASSWORD`, `SET NAMES`, `SET
/// PERSIST`, structured variables, more than one statement).
/// A modifier applies to the assignments after it until the next one, as
/// in the server (`SET GLOBAL a = 1, b = 2` sets two globals).
pub fn global_assignments(sql: &[u8]) -> Option<Vec<GlobalAssignment<'_>>> {
    let mut lx = Lexer::new(sql);
    if !lx.next_token()?.is_word("SET") {
        return None;
    }
    let mut global = false;
    let mut out = Vec::new();
    loop {
        let mut t = lx.next_token()?;
        if t.is_word("GLOBAL") {
            global = true;
            t = lx.next_token()?;
        } else if t.is_word("SESSION") || t.is_word("LOCAL") {
            global = false;
            t = lx.next_token()?;
        }
        let (name, is_global) = match t.kind {
            TokenKind::Word | TokenKind::QuotedIdent => (ident_name(t.text), global),
            TokenKind::SysVar => {
                let text = String::from_utf8_lossy(t.text.get(2..)?).into_owned();
                match text.split_once('.') {
                    Some((scope, name)) if scope.eq_ignore_ascii_case("global") => {
                        (name.to_string(), true)
                    }
                    Some((scope, name))
                        if scope.eq_ignore_ascii_case("session")
                            || scope.eq_ignore_ascii_case("local") =>
                    {
                        (name.to_string(), false)
                    }
                    Some(_) => return None,
                    None => (text, false),
                }
            }
            TokenKind::UserVar => (String::new(), false),
            _ => return None,
        };
        if !lx.next_token()?.is_assign() {
            return None;
        }
        let (mut first, mut last, mut count, mut depth) = (None, None, 0usize, 0usize);
        let (mut more, mut evaluable) = (false, true);
        while let Some(v) = lx.next_token() {
            evaluable &= matches!(
                v.kind,
                TokenKind::Number
                    | TokenKind::UserVar
                    | TokenKind::Punct(
                        b'+' | b'-' | b'*' | b'/' | b'%' | b'(' | b')' | b',' | b';'
                    )
            );
            match v.kind {
                TokenKind::Punct(b'(') => depth += 1,
                TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
                TokenKind::Punct(b',') if depth == 0 => {
                    more = true;
                    break;
                }
                TokenKind::Punct(b';') if depth == 0 => {
                    if lx.next_token().is_some() {
                        return None;
                    }
                    break;
                }
                _ => {}
            }
            first.get_or_insert(v);
            last = Some(v);
            count += 1;
        }
        let (first, last) = (first?, last?);
        let value = sql.get(first.start..last.start + last.text.len())?;
        let name = name.to_ascii_lowercase();
        if is_global && !per_server(&name) {
            let constant = match count {
                1 => matches!(
                    first.kind,
                    TokenKind::Number | TokenKind::Str | TokenKind::Word
                ),
                2 => {
                    matches!(first.kind, TokenKind::Punct(b'-' | b'+'))
                        && last.kind == TokenKind::Number
                }
                _ => false,
            };
            out.push(GlobalAssignment {
                name,
                value,
                constant,
                evaluable: evaluable && !constant,
            });
        }
        if !more {
            break;
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_reach_past_the_session() {
        for (sql, want) in [
            (
                "SET GLOBAL div_precision_increment = 9",
                ServerWide::Globals,
            ),
            ("set @@global.max_allowed_packet=2048", ServerWide::Globals),
            ("SET @@GLOBAL.sql_mode = ''", ServerWide::Globals),
            (
                "SET sql_mode = '', GLOBAL wait_timeout = 5",
                ServerWide::Globals,
            ),
            ("/* x */ SET GLOBAL x = 1", ServerWide::Globals),
            ("SET SESSION sql_mode = 'GLOBAL'", ServerWide::None),
            ("SET @global = 1", ServerWide::None),
            ("SET @@session.x = 1", ServerWide::None),
            ("DROP USER u@'%'", ServerWide::Accounts),
            ("alter user u identified by 'x'", ServerWide::Accounts),
            ("RENAME USER a TO b", ServerWide::Accounts),
            ("CREATE OR REPLACE USER a", ServerWide::Accounts),
            ("REVOKE ALL ON *.* FROM u", ServerWide::Accounts),
            ("GRANT SELECT ON d.* TO u", ServerWide::Accounts),
            ("SET PASSWORD FOR u = PASSWORD('x')", ServerWide::Accounts),
            ("DROP ROLE r", ServerWide::Accounts),
            ("DROP TABLE user", ServerWide::None),
            ("INSERT INTO t VALUES ('GLOBAL')", ServerWide::None),
            ("", ServerWide::None),
        ] {
            assert_eq!(server_wide(sql.as_bytes()), want, "{sql}");
        }
    }

    #[test]
    fn global_assignments_the_replicas_get() {
        let names = |sql: &str| {
            global_assignments(sql.as_bytes()).map(|v| {
                v.iter()
                    .map(|a| {
                        format!(
                            "{}={}{}",
                            a.name,
                            String::from_utf8_lossy(a.value),
                            if a.constant {
                                ""
                            } else if a.evaluable {
                                "?"
                            } else {
                                "!"
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        for (sql, want) in [
            (
                "SET GLOBAL max_allowed_packet=2048",
                Some("max_allowed_packet=2048"),
            ),
            (
                "set @@global.sql_mode = 'ANSI', @@GLOBAL.x = -1;",
                Some("sql_mode='ANSI' x=-1"),
            ),
            (
                "SET GLOBAL a = 1, b = ON, SESSION c = 2, d = 3",
                Some("a=1 b=ON"),
            ),
            (
                "SET GLOBAL max_allowed_packet = @save_max",
                Some("max_allowed_packet=@save_max?"),
            ),
            (
                "SET GLOBAL x = CONCAT(@@global.x, ',a'), y = DEFAULT",
                Some("x=CONCAT(@@global.x, ',a')! y=DEFAULT"),
            ),
            (
                "SET GLOBAL `Div_Precision_Increment` = 9",
                Some("div_precision_increment=9"),
            ),
            (
                "SET sql_mode = '', GLOBAL wait_timeout = 5",
                Some("wait_timeout=5"),
            ),
            ("SET @a = 1, @@session.x = 2", None),
            ("SET GLOBAL read_only = 0", None),
            (
                "SET GLOBAL max_connections = 9, read_only = 0",
                Some("max_connections=9"),
            ),
            ("SET GLOBAL gtid_slave_pos = ''", None),
            ("SET GLOBAL rpl_semi_sync_master_enabled = 1", None),
            ("SET GLOBAL event_scheduler = ON", None),
            ("SET @@global.server_id = 7", None),
            ("SET GLOBAL x = 1; SELECT 1", None),
            ("SET PERSIST x = 1", None),
            ("SET PASSWORD = 'x'", None),
            ("SET NAMES latin1", None),
            ("SET GLOBAL x =", None),
            ("SELECT 1", None),
        ] {
            assert_eq!(names(sql).as_deref(), want, "{sql}");
        }
    }
}
