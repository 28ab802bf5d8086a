//! Statements whose effect reaches past the session that ran them, in ways
//! that matter to pooled connections: `SET GLOBAL` (connections logged in
//! earlier carry the old values in their sessions) and account management
//! (`DROP USER`, `ALTER USER`, `GRANT`… — a pooled connection keeps the
//! identity and global privileges of its login). Looked at only after such
//! a statement succeeded, and only for statements that are not reads, so
//! plain `SELECT`s never pay for it.

use super::lex::{Lexer, TokenKind};

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
}
