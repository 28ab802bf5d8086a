//! `SET` statements taken apart into what the session must remember.
//!
//! The session layer replays what a client has `SET` on every backend
//! connection it uses, so a read on a replica sees the same `sql_mode`,
//! `time_zone` and character set as the primary. Only assignments of
//! literals to session-scoped variables can be replayed; [`parse_set`] says
//! which, and builds the text to replay from the statement's own tokens
//! (literals copied verbatim, so escapes and charset introducers survive).
//!
//! It reuses the classifier's lexer, so comments, executable comments
//! and quoting are understood the same way in both places.

use super::lex::{Lexer, Token, TokenKind};

/// One assignment the session must remember and replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetItem {
    /// Normalized key used to replace an earlier setting of the same thing: lower-case
    /// variable name without scope prefix (`sql_mode`, `time_zone`), `names` for
    /// `SET NAMES …` and `SET CHARACTER SET …`, `@name` for user variables,
    /// `transaction_isolation` for `SET SESSION TRANSACTION ISOLATION LEVEL …`
    /// (also for the variables tx_isolation/transaction_isolation), `transaction_read_only`
    /// for `SET SESSION TRANSACTION READ ONLY|READ WRITE` (tx_read_only too).
    pub key: String,
    /// Text to replay as `SET <text>` on another connection, e.g. `SESSION sql_mode = 'ANSI'`,
    /// `NAMES utf8mb4 COLLATE utf8mb4_unicode_ci`, `@x = 5`, `SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED`.
    /// Built from the original tokens' text (literals copied verbatim, so escapes are preserved).
    pub text: String,
}

/// What a `SET` statement does to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetEffect {
    /// Every assignment is session-scoped and its value is a literal: replayable.
    /// Items are in statement order. `autocommit` appears as an item with key `autocommit`
    /// (the session layer treats it specially).
    Session(Vec<SetItem>),
    /// Affects only the next transaction (`SET TRANSACTION …` without SESSION), or global /
    /// server-wide state (`SET GLOBAL …`, `SET @@global.x`, `SET PASSWORD`, `SET DEFAULT ROLE`):
    /// run it on the primary, record nothing.
    NotSession,
    /// A value that is not a literal (expression, function, subquery, another variable, `@@x`
    /// reference), `SET ROLE`, or anything not understood: it cannot be replayed; the session
    /// must pin itself to the primary.
    Unreplayable,
}

/// Parses one SET statement (the full statement text, starting with SET, possibly after comments).
///
/// Never panics. Linear in the length of the text; allocates only the items
/// it returns.
pub fn parse_set(sql: &[u8]) -> SetEffect {
    let mut p = Parser {
        lx: Lexer::new(sql),
        peeked: None,
    };
    let effect = p.statement();
    // Whatever the statement was, the rest of the text must be only `;`:
    // a second statement, or text that does not lex, is not understood.
    if !p.finish() {
        return SetEffect::Unreplayable;
    }
    effect.unwrap_or(SetEffect::Unreplayable)
}

/// Whether `sql` is `SET TRANSACTION … READ ONLY …` without a scope: the
/// next transaction only is read only (and may run on a replica). Only
/// called for statements classified as `SET`.
pub fn next_transaction_read_only(sql: &[u8]) -> bool {
    let mut p = Parser {
        lx: Lexer::new(sql),
        peeked: None,
    };
    if !p.eat_word("SET") || !p.peek_is_word("TRANSACTION") {
        return false;
    }
    let Ok(items) = p.transaction(Scope::Session) else {
        return false;
    };
    p.finish() && items.iter().any(|i| read_only_value(i) == Some(true))
}

/// The access mode a recorded `transaction_read_only` item sets: `true`
/// for read only, `false` for read write, `None` when it is not such an
/// item. A value the proxy cannot judge (`DEFAULT`: the global default)
/// counts as read write, so transactions stay on the primary.
pub fn read_only_value(item: &SetItem) -> Option<bool> {
    if item.key != "transaction_read_only" {
        return None;
    }
    if let Some(mode) = item.text.strip_prefix("SESSION TRANSACTION ") {
        return Some(mode == "READ ONLY");
    }
    let value = item.text.rsplit('=').next().unwrap_or("").trim();
    let value = value.trim_matches('\'');
    Some(value == "1" || value.eq_ignore_ascii_case("ON") || value.eq_ignore_ascii_case("TRUE"))
}

/// Session variables whose assignment cannot be replayed on another
/// connection, even with a literal value: the value is consumed or moved
/// on by what runs next, so setting it again later changes results.
/// `rand_seed1`/`rand_seed2` seed the next `RAND()` sequence (replayed,
/// the sequence would start over on every connection the session uses);
/// `insert_id` and `gtid_seq_no` apply to the next insert / transaction
/// only; `last_insert_id` (and its synonym `identity`) is overwritten by
/// the session's next insert; `pseudo_thread_id` belongs to binary-log
/// replay, which must run on one connection. A `SET` of one of these pins
/// the session to the connection that ran it.
///
/// `timestamp` is not listed: `SET timestamp = N` freezes `NOW()` at N
/// until it is set back to `DEFAULT`, so replaying the same literal gives
/// every connection the same frozen clock, as directly; and `SET timestamp
/// = DEFAULT` replays as the server's own clock.
const NOT_REPEATABLE: [&[u8]; 7] = [
    b"rand_seed1",
    b"rand_seed2",
    b"insert_id",
    b"last_insert_id",
    b"identity",
    b"gtid_seq_no",
    b"pseudo_thread_id",
];

/// Where an assignment lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The session (or a user variable): replayable if the value is a literal.
    Session,
    /// Server-wide, persisted, or only the next transaction: record nothing.
    NotSession,
}

/// Marker for "cannot be replayed"; becomes [`SetEffect::Unreplayable`].
struct Unreplayable;

type Parsed<T> = Result<T, Unreplayable>;

/// A recursive-descent parser in name only: the grammar of `SET` is flat, so
/// nothing here recurses, whatever the input.
struct Parser<'a> {
    lx: Lexer<'a>,
    /// One token of lookahead; `Some(None)` is a peeked end of statement.
    peeked: Option<Option<Token<'a>>>,
}

impl<'a> Parser<'a> {
    /// The next token of this statement; `None` at `;` or the end of text.
    fn peek(&mut self) -> Option<Token<'a>> {
        if self.peeked.is_none() {
            let t = self.lx.next_token();
            self.peeked = Some(t);
        }
        match self.peeked {
            Some(Some(t)) if t.is_punct(b';') => None,
            Some(t) => t,
            None => None,
        }
    }

    fn bump(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.peeked = None;
        }
        t
    }

    /// The next token, which must exist.
    fn expect(&mut self) -> Parsed<Token<'a>> {
        self.bump().ok_or(Unreplayable)
    }

    fn peek_is_word(&mut self, upper: &str) -> bool {
        self.peek().is_some_and(|t| t.is_word(upper))
    }

    fn eat_word(&mut self, upper: &str) -> bool {
        let yes = self.peek_is_word(upper);
        if yes {
            self.bump();
        }
        yes
    }

    /// Skips the rest of the statement; then accepts only `;` up to the end.
    /// False if another statement follows or the text does not lex.
    fn finish(&mut self) -> bool {
        while self.bump().is_some() {}
        // At `;` (peeked) or the end.
        loop {
            match self
                .peeked
                .take()
                .flatten()
                .or_else(|| self.lx.next_token())
            {
                Some(t) if t.is_punct(b';') => continue,
                Some(_) => return false,
                None => return !self.lx.error,
            }
        }
    }

    fn statement(&mut self) -> Parsed<SetEffect> {
        if !self.eat_word("SET") {
            return Err(Unreplayable);
        }
        let first = self.peek().ok_or(Unreplayable)?;
        if first.is_word("TRANSACTION") {
            self.transaction(Scope::NotSession)?;
            return Ok(SetEffect::NotSession);
        }
        if first.is_word("PASSWORD") || first.is_word("STATEMENT") {
            // SET STATEMENT … FOR stmt changes variables for that one statement.
            return Ok(SetEffect::NotSession);
        }
        if first.is_word("DEFAULT") {
            self.bump();
            return if self.peek_is_word("ROLE") {
                Ok(SetEffect::NotSession)
            } else {
                Err(Unreplayable)
            };
        }
        if first.kind == TokenKind::Word && scope_word(first.text).is_some() {
            // SET SESSION TRANSACTION … needs a second token of lookahead:
            // keep the scope word and look at what follows it.
            let scope = scope_word(first.text);
            self.bump();
            if self.peek_is_word("TRANSACTION") {
                let scope = scope.unwrap_or(Scope::NotSession);
                let items = self.transaction(scope)?;
                return Ok(match scope {
                    Scope::Session => SetEffect::Session(items),
                    Scope::NotSession => SetEffect::NotSession,
                });
            }
            return self.assignments(scope);
        }
        self.assignments(None)
    }

    /// `TRANSACTION characteristic [, characteristic]…` (the TRANSACTION
    /// word not yet consumed).
    fn transaction(&mut self, scope: Scope) -> Parsed<Vec<SetItem>> {
        self.bump();
        let mut items = Vec::new();
        loop {
            if self.eat_word("ISOLATION") {
                if !self.eat_word("LEVEL") {
                    return Err(Unreplayable);
                }
                let level = if self.eat_word("READ") {
                    if self.eat_word("COMMITTED") {
                        "READ COMMITTED"
                    } else if self.eat_word("UNCOMMITTED") {
                        "READ UNCOMMITTED"
                    } else {
                        return Err(Unreplayable);
                    }
                } else if self.eat_word("REPEATABLE") {
                    if !self.eat_word("READ") {
                        return Err(Unreplayable);
                    }
                    "REPEATABLE READ"
                } else if self.eat_word("SERIALIZABLE") {
                    "SERIALIZABLE"
                } else {
                    return Err(Unreplayable);
                };
                items.push(SetItem {
                    key: "transaction_isolation".into(),
                    text: format!("SESSION TRANSACTION ISOLATION LEVEL {level}"),
                });
            } else if self.eat_word("READ") {
                let mode = if self.eat_word("ONLY") {
                    "READ ONLY"
                } else if self.eat_word("WRITE") {
                    "READ WRITE"
                } else {
                    return Err(Unreplayable);
                };
                items.push(SetItem {
                    key: "transaction_read_only".into(),
                    text: format!("SESSION TRANSACTION {mode}"),
                });
            } else {
                return Err(Unreplayable);
            }
            if !self.list_continues()? {
                break;
            }
        }
        if scope == Scope::NotSession {
            items.clear();
        }
        Ok(items)
    }

    /// After one list element: true at `,`, false at the end, error otherwise.
    fn list_continues(&mut self) -> Parsed<bool> {
        match self.bump() {
            None => Ok(false),
            Some(t) if t.is_punct(b',') => Ok(true),
            Some(_) => Err(Unreplayable),
        }
    }

    /// `assignment [, assignment]…`. `scope` is a scope word already
    /// consumed in front of the first one (it sticks to later assignments
    /// that have none, as in MySQL).
    fn assignments(&mut self, mut scope: Option<Scope>) -> Parsed<SetEffect> {
        let mut items = Vec::new();
        let (mut any_session, mut any_other) = (false, false);
        loop {
            let scope_here = self
                .peek()
                .filter(|t| t.kind == TokenKind::Word)
                .and_then(|t| scope_word(t.text));
            if let Some(s) = scope_here {
                self.bump();
                scope = Some(s);
            }
            match self.assignment(scope.unwrap_or(Scope::Session))? {
                Some(item) => {
                    any_session = true;
                    items.push(item);
                }
                None => any_other = true,
            }
            if !self.list_continues()? {
                break;
            }
        }
        match (any_session, any_other) {
            (true, false) => Ok(SetEffect::Session(items)),
            (false, true) => Ok(SetEffect::NotSession),
            _ => Err(Unreplayable),
        }
    }

    /// One assignment. `Some(item)` for a replayable session assignment,
    /// `None` for one that is not session state.
    fn assignment(&mut self, default_scope: Scope) -> Parsed<Option<SetItem>> {
        let target = self.expect()?;
        match target.kind {
            TokenKind::Word if target.is_word("NAMES") && !self.peek_is_assign() => {
                let value = self.charset_value()?;
                let mut text = b"NAMES ".to_vec();
                text.extend_from_slice(value.text);
                if self.eat_word("COLLATE") {
                    let collation = self.charset_value()?;
                    text.extend_from_slice(b" COLLATE ");
                    text.extend_from_slice(collation.text);
                }
                Ok(Some(item("names", text)?))
            }
            TokenKind::Word
                if (target.is_word("CHARSET")
                    || (target.is_word("CHARACTER") && self.peek_is_word("SET")))
                    && !self.peek_is_assign() =>
            {
                if target.is_word("CHARACTER") {
                    self.bump();
                }
                let value = self.charset_value()?;
                let mut text = b"CHARACTER SET ".to_vec();
                text.extend_from_slice(value.text);
                Ok(Some(item("names", text)?))
            }
            TokenKind::Word => {
                // A structured variable (`cache.key_buffer_size`) is global
                // and rare: not understood.
                if self.peek().is_some_and(|t| t.is_punct(b'.')) {
                    return Err(Unreplayable);
                }
                self.system_variable(target.text, default_scope)
            }
            TokenKind::SysVar => {
                let full = &target.text[2..];
                let (scope, name) = match full.iter().position(|&b| b == b'.') {
                    Some(dot) => {
                        let scope = scope_word(&full[..dot]).ok_or(Unreplayable)?;
                        (scope, &full[dot + 1..])
                    }
                    // `SET @@transaction_isolation = …` without a scope sets
                    // only the next transaction (MySQL); other variables
                    // are session ones.
                    None if is_transaction_variable(full) => (Scope::NotSession, full),
                    None => (Scope::Session, full),
                };
                if name.is_empty() || name.contains(&b'.') {
                    return Err(Unreplayable);
                }
                self.system_variable(name, scope)
            }
            TokenKind::UserVar => {
                self.assign_op()?;
                let value = self.value(true)?;
                let mut text = target.text.to_vec();
                text.extend_from_slice(b" = ");
                text.extend_from_slice(&value);
                Ok(Some(item(&user_variable_key(target.text), text)?))
            }
            _ => Err(Unreplayable),
        }
    }

    /// `name = value` for a system variable whose name has been read.
    fn system_variable(&mut self, name: &[u8], scope: Scope) -> Parsed<Option<SetItem>> {
        self.assign_op()?;
        if scope == Scope::NotSession {
            // Nothing to record, whatever the value is.
            self.skip_expression();
            return Ok(None);
        }
        let value = self.value(false)?;
        let lower = name.to_ascii_lowercase();
        if NOT_REPEATABLE.contains(&lower.as_slice()) {
            return Err(Unreplayable);
        }
        let key = match lower.as_slice() {
            b"tx_isolation" => b"transaction_isolation".as_slice(),
            b"tx_read_only" => b"transaction_read_only".as_slice(),
            other => other,
        };
        let key = String::from_utf8(key.to_vec()).map_err(|_| Unreplayable)?;
        let mut text = b"SESSION ".to_vec();
        text.extend_from_slice(&lower);
        text.extend_from_slice(b" = ");
        text.extend_from_slice(&value);
        Ok(Some(item(&key, text)?))
    }

    fn peek_is_assign(&mut self) -> bool {
        self.peek().is_some_and(|t| t.is_assign())
    }

    /// `=` or `:=`.
    fn assign_op(&mut self) -> Parsed<()> {
        match self.bump() {
            Some(t) if t.is_assign() => Ok(()),
            _ => Err(Unreplayable),
        }
    }

    /// A character set or collation name: a word (including `DEFAULT`) or
    /// a quoted string.
    fn charset_value(&mut self) -> Parsed<Token<'a>> {
        match self.bump() {
            Some(t) if matches!(t.kind, TokenKind::Word | TokenKind::Str) => Ok(t),
            _ => Err(Unreplayable),
        }
    }

    /// A literal value, as the bytes to replay. Must be followed by `,` or
    /// the end of the statement (checked by the caller's list handling; a
    /// `(` or operator there makes the whole statement unreplayable).
    fn value(&mut self, user: bool) -> Parsed<Vec<u8>> {
        let first = self.expect()?;
        let mut out = Vec::with_capacity(first.text.len());
        let mut last_end = first.start;
        let mut push = |out: &mut Vec<u8>, t: &Token<'_>| {
            // Keep tokens that were adjacent adjacent (`N'x'`, `-5`); a
            // single space stands for whatever separated the others.
            if !out.is_empty() && t.start != last_end {
                out.push(b' ');
            }
            out.extend_from_slice(t.text);
            last_end = t.end();
        };
        push(&mut out, &first);
        match first.kind {
            TokenKind::Number => {}
            TokenKind::Punct(b'-' | b'+') => match self.bump() {
                Some(n) if n.kind == TokenKind::Number => push(&mut out, &n),
                _ => return Err(Unreplayable),
            },
            TokenKind::Str => self.more_strings(&mut out, &mut push),
            TokenKind::Word => {
                let w = first.text;
                let next = self.peek();
                let next_str = next.filter(|t| t.kind == TokenKind::Str);
                if let Some(s) = next_str.filter(|_| w.first() == Some(&b'_')) {
                    // Charset introducer: _utf8mb4'x' or _binary 'x'.
                    self.bump();
                    push(&mut out, &s);
                    self.more_strings(&mut out, &mut push);
                } else if let Some(s) =
                    next_str.filter(|s| s.start == first.end() && is_literal_prefix(w))
                {
                    // N'x', X'41', B'01'
                    self.bump();
                    push(&mut out, &s);
                } else if ["TRUE", "FALSE", "NULL"].iter().any(|k| first.is_word(k)) {
                } else if user || is_niladic_function(w) {
                    // A user variable cannot take a bare word; a word that
                    // is really a function call has a value of its own time.
                    return Err(Unreplayable);
                }
                // Otherwise a bare word: ON, OFF, DEFAULT, SYSTEM, ANSI…
            }
            _ => return Err(Unreplayable),
        }
        // Anything but `,` or the end after the literal means an expression.
        if self.peek().is_some_and(|t| !t.is_punct(b',')) {
            return Err(Unreplayable);
        }
        Ok(out)
    }

    /// Adjacent string literals concatenate: `'a' 'b'`.
    fn more_strings(&mut self, out: &mut Vec<u8>, push: &mut impl FnMut(&mut Vec<u8>, &Token<'_>)) {
        while let Some(s) = self.peek().filter(|t| t.kind == TokenKind::Str) {
            self.bump();
            push(out, &s);
        }
    }

    /// Skips an expression up to a `,` outside parentheses or the end.
    fn skip_expression(&mut self) {
        let mut depth: u32 = 0;
        while let Some(t) = self.peek() {
            match t.kind {
                TokenKind::Punct(b',') if depth == 0 => return,
                TokenKind::Punct(b'(') => depth = depth.saturating_add(1),
                TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
                _ => {}
            }
            self.bump();
        }
    }
}

/// Builds an item; text that is not UTF-8 (a latin1 client's literal, say)
/// cannot be carried in a `String` unchanged, so it is not replayable.
fn item(key: &str, text: Vec<u8>) -> Parsed<SetItem> {
    Ok(SetItem {
        key: key.to_owned(),
        text: String::from_utf8(text).map_err(|_| Unreplayable)?,
    })
}

/// The scope a scope word (or `@@scope.` prefix) names.
fn scope_word(w: &[u8]) -> Option<Scope> {
    let is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
    if is("SESSION") || is("LOCAL") {
        Some(Scope::Session)
    } else if is("GLOBAL") || is("PERSIST") || is("PERSIST_ONLY") {
        Some(Scope::NotSession)
    } else {
        None
    }
}

fn is_transaction_variable(name: &[u8]) -> bool {
    [
        "tx_isolation",
        "transaction_isolation",
        "tx_read_only",
        "transaction_read_only",
    ]
    .iter()
    .any(|k| name.eq_ignore_ascii_case(k.as_bytes()))
}

/// `N`, `X`, `B` before a quoted string make a literal of it.
fn is_literal_prefix(w: &[u8]) -> bool {
    matches!(w, [b'N' | b'n' | b'X' | b'x' | b'B' | b'b'])
}

/// Functions that may be written without parentheses: their value depends
/// on when and by whom they are evaluated.
fn is_niladic_function(w: &[u8]) -> bool {
    [
        "CURRENT_DATE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
        "CURRENT_USER",
        "CURRENT_ROLE",
        "LOCALTIME",
        "LOCALTIMESTAMP",
        "UTC_DATE",
        "UTC_TIME",
        "UTC_TIMESTAMP",
    ]
    .iter()
    .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
}

/// `@x`, `@X`, `@'x'`, `` @`x` `` all name the same variable: `@x`.
fn user_variable_key(text: &[u8]) -> String {
    let name = &text[1..];
    let name: Vec<u8> = match name {
        [q @ (b'\'' | b'"' | b'`'), inner @ .., last] if last == q => {
            let mut out = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                out.push(inner[i]);
                // A doubled quote stands for one.
                i += if inner[i] == *q && inner.get(i + 1) == Some(q) {
                    2
                } else {
                    1
                };
            }
            out
        }
        _ => name.to_vec(),
    };
    let mut key = String::with_capacity(name.len() + 1);
    key.push('@');
    key.push_str(&String::from_utf8_lossy(&name.to_ascii_lowercase()));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shorthand for an expected item list.
    fn session(items: &[(&str, &str)]) -> SetEffect {
        SetEffect::Session(
            items
                .iter()
                .map(|&(key, text)| SetItem {
                    key: key.into(),
                    text: text.into(),
                })
                .collect(),
        )
    }

    #[test]
    fn table() {
        use SetEffect::{NotSession, Unreplayable};
        let cases: Vec<(&str, SetEffect)> = vec![
            // --- replayable session state ---
            (
                "SET sql_mode = 'ANSI'",
                session(&[("sql_mode", "SESSION sql_mode = 'ANSI'")]),
            ),
            (
                "set SESSION sql_mode='ANSI,NO_ZERO_DATE'",
                session(&[("sql_mode", "SESSION sql_mode = 'ANSI,NO_ZERO_DATE'")]),
            ),
            (
                "SET LOCAL time_zone = '+00:00'",
                session(&[("time_zone", "SESSION time_zone = '+00:00'")]),
            ),
            (
                "SET @@time_zone = 'UTC'",
                session(&[("time_zone", "SESSION time_zone = 'UTC'")]),
            ),
            (
                "SET @@session.Time_Zone := SYSTEM",
                session(&[("time_zone", "SESSION time_zone = SYSTEM")]),
            ),
            (
                "SET @@LOCAL.sql_mode = ANSI",
                session(&[("sql_mode", "SESSION sql_mode = ANSI")]),
            ),
            (
                "SET autocommit=0",
                session(&[("autocommit", "SESSION autocommit = 0")]),
            ),
            (
                "SET autocommit = ON;",
                session(&[("autocommit", "SESSION autocommit = ON")]),
            ),
            ("SET NAMES utf8mb4", session(&[("names", "NAMES utf8mb4")])),
            (
                "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
                session(&[("names", "NAMES utf8mb4 COLLATE utf8mb4_unicode_ci")]),
            ),
            (
                "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'",
                session(&[("names", "NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'")]),
            ),
            ("SET NAMES DEFAULT", session(&[("names", "NAMES DEFAULT")])),
            (
                "SET CHARACTER SET utf8",
                session(&[("names", "CHARACTER SET utf8")]),
            ),
            (
                "SET CHARSET 'latin1'",
                session(&[("names", "CHARACTER SET 'latin1'")]),
            ),
            (
                "/*!40101 SET NAMES utf8 */",
                session(&[("names", "NAMES utf8")]),
            ),
            ("/* app */ SET @x = 5 ; ", session(&[("@x", "@x = 5")])),
            ("SET @X := -5", session(&[("@x", "@X = -5")])),
            (
                "SET @'My Var' = 'it''s'",
                session(&[("@my var", "@'My Var' = 'it''s'")]),
            ),
            (
                "SET @s = 'a\\'b', @n = NULL, @t = TRUE",
                session(&[
                    ("@s", "@s = 'a\\'b'"),
                    ("@n", "@n = NULL"),
                    ("@t", "@t = TRUE"),
                ]),
            ),
            (
                "SET @u = _utf8mb4'x', @h = 0x4142, @b = X'41', @d = 1.5e3",
                session(&[
                    ("@u", "@u = _utf8mb4'x'"),
                    ("@h", "@h = 0x4142"),
                    ("@b", "@b = X'41'"),
                    ("@d", "@d = 1.5e3"),
                ]),
            ),
            ("SET @c = 'a' 'b'", session(&[("@c", "@c = 'a' 'b'")])),
            (
                "SET sql_mode = '', time_zone = '+01:00', @a = 1",
                session(&[
                    ("sql_mode", "SESSION sql_mode = ''"),
                    ("time_zone", "SESSION time_zone = '+01:00'"),
                    ("@a", "@a = 1"),
                ]),
            ),
            (
                "SET SESSION sql_mode = DEFAULT, wait_timeout = 60",
                session(&[
                    ("sql_mode", "SESSION sql_mode = DEFAULT"),
                    ("wait_timeout", "SESSION wait_timeout = 60"),
                ]),
            ),
            (
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                session(&[(
                    "transaction_isolation",
                    "SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                )]),
            ),
            (
                "set session transaction read only, isolation level serializable",
                session(&[
                    ("transaction_read_only", "SESSION TRANSACTION READ ONLY"),
                    (
                        "transaction_isolation",
                        "SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                    ),
                ]),
            ),
            (
                "SET tx_isolation = 'READ-COMMITTED'",
                session(&[(
                    "transaction_isolation",
                    "SESSION tx_isolation = 'READ-COMMITTED'",
                )]),
            ),
            (
                "SET SESSION transaction_read_only = 1",
                session(&[("transaction_read_only", "SESSION transaction_read_only = 1")]),
            ),
            (
                "SET @@session.tx_read_only = OFF",
                session(&[("transaction_read_only", "SESSION tx_read_only = OFF")]),
            ),
            // --- not session state ---
            (
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                NotSession,
            ),
            ("SET GLOBAL TRANSACTION READ WRITE", NotSession),
            ("SET @@transaction_isolation = 'SERIALIZABLE'", NotSession),
            ("SET GLOBAL max_connections = 1000", NotSession),
            (
                "SET @@global.sql_mode = CONCAT(@@global.sql_mode, ',ANSI')",
                NotSession,
            ),
            ("SET PERSIST max_connections = 500", NotSession),
            ("SET @@persist_only.max_connections = 500", NotSession),
            ("SET GLOBAL a = 1, b = 2", NotSession),
            ("SET PASSWORD = 'secret'", NotSession),
            ("SET PASSWORD FOR 'u'@'%' = 'secret'", NotSession),
            ("SET DEFAULT ROLE ALL TO 'u'@'%'", NotSession),
            // --- cannot be replayed ---
            ("SET @x = (SELECT 1)", Unreplayable),
            ("SET sql_mode = CONCAT(@@sql_mode, ',ANSI')", Unreplayable),
            ("SET @a = @b", Unreplayable),
            ("SET time_zone = @@global.time_zone", Unreplayable),
            ("SET @x = 1 + 1", Unreplayable),
            ("SET @x = NOW()", Unreplayable),
            ("SET @t = CURRENT_TIMESTAMP", Unreplayable),
            ("SET @x = some_column", Unreplayable),
            ("SET sql_mode = t.col", Unreplayable),
            ("SET @x = 5, @@global.y = 1", Unreplayable),
            ("SET GLOBAL a = 1, SESSION b = 2", Unreplayable),
            ("SET ROLE admin", Unreplayable),
            ("SET RESOURCE GROUP rg", Unreplayable),
            ("SET", Unreplayable),
            ("SET x", Unreplayable),
            ("SET x =", Unreplayable),
            ("SET @x = 'unterminated", Unreplayable),
            ("SET @x = 1; SELECT 1", Unreplayable),
            ("SET @x = 1,", Unreplayable),
            (
                "SET SESSION TRANSACTION ISOLATION LEVEL CHAOS",
                Unreplayable,
            ),
            ("SELECT 1", Unreplayable),
            (
                "SET /*!40101 @OLD_SQL_MODE=@@SQL_MODE, */ SQL_MODE='NO_AUTO_VALUE_ON_ZERO'",
                Unreplayable,
            ),
            ("SET cache.key_buffer_size = 1", Unreplayable),
            ("SET rand_seed1 = 1, rand_seed2 = 2", Unreplayable),
            ("SET @@session.insert_id = 5", Unreplayable),
            ("SET SESSION last_insert_id = 5", Unreplayable),
            ("SET gtid_seq_no = 9, sql_mode = ''", Unreplayable),
            ("SET @@pseudo_thread_id = 3", Unreplayable),
            ("SET GLOBAL insert_id = 5", NotSession),
        ];
        let mut failures = Vec::new();
        for (sql, want) in &cases {
            let got = parse_set(sql.as_bytes());
            if &got != want {
                failures.push(format!("{sql:?}:\n  want {want:?}\n  got  {got:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(cases.len() >= 30);
    }

    #[test]
    fn read_only_transactions() {
        for sql in [
            "SET TRANSACTION READ ONLY",
            "set transaction isolation level repeatable read, read only;",
            "/* x */ SET TRANSACTION READ ONLY",
        ] {
            assert!(next_transaction_read_only(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SET TRANSACTION READ WRITE",
            "SET SESSION TRANSACTION READ ONLY",
            "SET GLOBAL TRANSACTION READ ONLY",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION READ ONLY; SELECT 1",
            "SET tx_read_only = 1",
            "SET @@tx_read_only = 1",
        ] {
            assert!(!next_transaction_read_only(sql.as_bytes()), "{sql}");
        }
        let mode = |sql: &str| match parse_set(sql.as_bytes()) {
            SetEffect::Session(items) => items.iter().find_map(read_only_value),
            _ => None,
        };
        assert_eq!(mode("SET SESSION TRANSACTION READ ONLY"), Some(true));
        assert_eq!(mode("SET SESSION TRANSACTION READ WRITE"), Some(false));
        assert_eq!(mode("SET SESSION tx_read_only = 1"), Some(true));
        assert_eq!(mode("SET tx_read_only = ON"), Some(true));
        assert_eq!(mode("SET SESSION transaction_read_only = 0"), Some(false));
        assert_eq!(mode("SET @@session.tx_read_only = OFF"), Some(false));
        assert_eq!(mode("SET SESSION tx_read_only = DEFAULT"), Some(false));
        assert_eq!(mode("SET sql_mode = ''"), None);
    }

    #[test]
    fn non_utf8_literal_is_unreplayable() {
        assert_eq!(parse_set(b"SET @x = 'caf\xe9'"), SetEffect::Unreplayable);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const SPECIAL: &[u8] = b"SET @:=,;'\"`().-+ _x0NAMES GLOBAL SESSION ";
        let mut buf = Vec::new();
        for _ in 0..2_000 {
            buf.clear();
            buf.extend_from_slice(b"SET ");
            for _ in 0..(next() % 48) {
                let r = next();
                buf.push(if r % 4 == 0 {
                    (r >> 8) as u8
                } else {
                    SPECIAL[(r >> 8) as usize % SPECIAL.len()]
                });
            }
            let _ = parse_set(&buf);
        }
    }

    #[test]
    fn long_list_is_linear() {
        let mut sql = String::from("SET @a0 = 0");
        for i in 1..100_000 {
            sql.push_str(&format!(", @a{i} = {i}"));
        }
        match parse_set(sql.as_bytes()) {
            SetEffect::Session(items) => assert_eq!(items.len(), 100_000),
            other => panic!("{other:?}"),
        }
        let deep = format!(
            "SET GLOBAL x = {}1{}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert_eq!(parse_set(deep.as_bytes()), SetEffect::NotSession);
    }
}
