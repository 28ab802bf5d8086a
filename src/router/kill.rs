//! `KILL` statements, read so that rwproxy can answer them itself.
//!
//! The ids a client knows are rwproxy's session ids (the handshake's id,
//! which `CONNECTION_ID()` also returns), so a `KILL n` forwarded to a
//! server would name some unrelated connection there. MariaDB's syntax is
//! `KILL [HARD | SOFT] [CONNECTION | QUERY] {thread_id | USER user_name}`
//! and `KILL [HARD | SOFT] QUERY ID query_id`; `thread_id` may be any
//! expression. rwproxy evaluates the two forms clients use — an integer
//! literal and `CONNECTION_ID()` — and refuses other expressions rather
//! than guess. `QUERY ID` names a query id of the server's processlist
//! (not a thread id): that one goes to the primary unchanged.

use super::lex::{Lexer, TokenKind};

/// What a `KILL` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillScope {
    /// `KILL QUERY`: the statement the connection runs.
    Query,
    /// `KILL [CONNECTION]`: the connection itself.
    Connection,
}

/// Whom a `KILL` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillTarget {
    /// A thread id written as an integer.
    Id(u64),
    /// `CONNECTION_ID()`: the killing session itself.
    Own,
    /// `USER name` (the name unquoted; a `@host` part is ignored).
    User(String),
}

/// A `KILL` statement as rwproxy handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kill {
    /// Handled by rwproxy for its own sessions.
    Local {
        scope: KillScope,
        target: KillTarget,
    },
    /// `KILL QUERY ID n`: the server's query ids, forwarded to the primary.
    QueryId,
    /// A form rwproxy does not evaluate (an expression, a `KILL` inside a
    /// batch): refused, never forwarded.
    Unsupported,
}

/// Reads the one statement of `sql` (a text the classifier marked as
/// holding a `KILL`).
pub fn parse(sql: &[u8]) -> Kill {
    let mut lx = Lexer::new(sql);
    let mut tokens = Vec::new();
    while let Some(t) = lx.next_token() {
        tokens.push(t);
    }
    if lx.error {
        return Kill::Unsupported;
    }
    if tokens.last().is_some_and(|t| t.is_punct(b';')) {
        tokens.pop();
    }
    let mut it = tokens.into_iter().peekable();
    if !it.next().is_some_and(|t| t.is_word("KILL")) {
        return Kill::Unsupported;
    }
    if it
        .peek()
        .is_some_and(|t| t.is_word("HARD") || t.is_word("SOFT"))
    {
        it.next();
    }
    let mut scope = KillScope::Connection;
    if it.peek().is_some_and(|t| t.is_word("CONNECTION")) {
        it.next();
    } else if it.peek().is_some_and(|t| t.is_word("QUERY")) {
        it.next();
        scope = KillScope::Query;
        if it.peek().is_some_and(|t| t.is_word("ID")) {
            return Kill::QueryId;
        }
    }
    let rest: Vec<_> = it.collect();
    let target = match rest.as_slice() {
        [n] if n.kind == TokenKind::Number => match std::str::from_utf8(n.text)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(id) => KillTarget::Id(id),
            None => return Kill::Unsupported,
        },
        [f, o, c] if f.is_word("CONNECTION_ID") && o.is_punct(b'(') && c.is_punct(b')') => {
            KillTarget::Own
        }
        [u, name, ..] if u.is_word("USER") => {
            let text = name.text;
            let unquoted = match (text.first(), text.last()) {
                (Some(&q @ (b'\'' | b'"' | b'`')), Some(&e)) if q == e && text.len() >= 2 => {
                    &text[1..text.len() - 1]
                }
                _ => text,
            };
            KillTarget::User(String::from_utf8_lossy(unquoted).into_owned())
        }
        _ => return Kill::Unsupported,
    };
    Kill::Local { scope, target }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(scope: KillScope, target: KillTarget) -> Kill {
        Kill::Local { scope, target }
    }

    #[test]
    fn kill_forms_are_read() {
        use KillScope::*;
        use KillTarget::*;
        assert_eq!(parse(b"KILL 42"), local(Connection, Id(42)));
        assert_eq!(parse(b"kill connection 42;"), local(Connection, Id(42)));
        assert_eq!(parse(b"KILL QUERY 7"), local(Query, Id(7)));
        assert_eq!(parse(b"KILL HARD QUERY 7"), local(Query, Id(7)));
        assert_eq!(parse(b"KILL SOFT 7"), local(Connection, Id(7)));
        assert_eq!(
            parse(b"/* x */ KILL QUERY CONNECTION_ID()"),
            local(Query, Own)
        );
        assert_eq!(parse(b"KILL QUERY ID 12"), Kill::QueryId);
        assert_eq!(
            parse(b"KILL USER 'app'@'%'"),
            local(Connection, User("app".into()))
        );
        assert_eq!(
            parse(b"KILL QUERY USER app"),
            local(Query, User("app".into()))
        );
        assert_eq!(parse(b"KILL 1+1"), Kill::Unsupported);
        assert_eq!(parse(b"KILL @id"), Kill::Unsupported);
        assert_eq!(parse(b"KILL 1; SELECT 1"), Kill::Unsupported);
        assert_eq!(parse(b"KILL 99999999999999999999999"), Kill::Unsupported);
        assert_eq!(parse(b"KILL"), Kill::Unsupported);
    }
}
