//! Statement classification: SQL text in, [`Classified`] out.
//!
//! Every COM_QUERY goes through [`classify`], so it is built to be cheap: one
//! pass of a hand-written lexer over the raw bytes, no allocation, no
//! recursion (a client may send 10,000 nested parentheses or megabytes of
//! garbage), and no regex or SQL parser. The lexer knows just enough SQL to
//! not be fooled: comments (including MySQL/MariaDB *executable* comments
//! `/*! … */` and `/*M! … */`, whose content the server runs and so is lexed
//! as code), quoted strings and identifiers, user and system variables, and
//! `;` between statements.
//!
//! Anything the classifier does not recognise is a [`StatementKind::Write`]:
//! sending an unknown statement to the primary is always correct, sending it
//! to a replica may not be.
//!
//! The tokens come from [`super::lex`], the lexer every SQL reader in
//! rwproxy shares; the keywords that matter for routing are looked up here.
//! Besides the kind, [`Classified`] carries what the session needs to know
//! later about the text (the `USE` target, whether a transaction opens,
//! whether `@@socket` is read), so that no one scans the text again.

use std::time::Duration;

pub use super::lex::Hint;
use super::lex::{Lexer, Span, Token, TokenKind};

/// What a statement is, as far as routing cares (defined with the
/// configuration, which names kinds in `[[rules]] kind`).
pub use crate::config::StatementKind;

/// The result of classifying one COM_QUERY text (which may hold several
/// statements when multi-statements are enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The combined kind of every statement in the text (see [`classify`]).
    pub kind: StatementKind,
    /// Routing override from a `rwproxy:` comment. When both `primary` and
    /// `replica` hints appear, `primary` wins (the safe choice).
    pub hint: Option<Hint>,
    /// Per-statement lag bound from `/* rwproxy:max_lag=2s */`. When several
    /// appear, the smallest wins.
    pub max_lag: Option<Duration>,
    /// The statement creates connection state that cannot be replayed on
    /// another connection (temporary table, `GET_LOCK`, `LOCK TABLES`, user
    /// variable assigned by a query, SQL `PREPARE`, `HANDLER`…): the session
    /// must stay on the primary connection from now on.
    pub pins_session: bool,
    /// The access mode of the transaction the statement opens (only for a
    /// text holding that one statement; [`TxOpen::None`] otherwise).
    pub tx: TxOpen,
    /// The first statement is `BEGIN …`, `START TRANSACTION …` or `XA …`
    /// (for a text of kind [`StatementKind::Transaction`]: it opens a
    /// transaction rather than ending one).
    pub begins: bool,
    /// For `USE db`: where `db` is written (see [`Classified::schema`]).
    pub use_target: Option<Span>,
    /// The text reads `@@socket` (see `session::hide_socket`).
    pub reads_socket: bool,
    /// The text reads a session-tracking variable (see
    /// `lex::replace_tracking_vars`).
    pub reads_tracking: bool,
    /// The text calls `CONNECTION_ID()` in a statement whose expressions
    /// the server evaluates now (`SELECT`, `INSERT`, `UPDATE`, `DELETE`,
    /// `SET`, `DO`, `CALL` arguments…): the session answers it with its
    /// own id (see `lex::replace_connection_id`).
    pub connection_id: bool,
    /// A statement of the text is a `KILL`: never forwarded with its
    /// number, which is one of rwproxy's session ids (see `router::kill`).
    pub kill: bool,
    /// The text reads the diagnostics of the previous statement (`SHOW
    /// WARNINGS|ERRORS`, `SHOW COUNT(*) WARNINGS|ERRORS`, `GET
    /// DIAGNOSTICS`, `@@warning_count`, `@@error_count`, `ROW_COUNT()`,
    /// `FOUND_ROWS()`, `LAST_INSERT_ID()`): only the connection that ran
    /// that statement can answer.
    pub diagnostics: bool,
    /// A read (kind [`StatementKind::Read`]) calls a function that is not
    /// a built-in (`db.f(…)`, or `f(…)` with `f` not in
    /// [`super::functions`]): a stored function, which may write. The
    /// session sends it to the primary unless its catalogue or the
    /// configured allow-list says every called function only reads (see
    /// `crate::catalog`); [`stored_functions`] lists them.
    pub calls_functions: bool,
}

impl Classified {
    /// A classification that only has a kind: for commands that carry no
    /// SQL (COM_FIELD_LIST, COM_INIT_DB…).
    pub fn of(kind: StatementKind) -> Self {
        Classified {
            kind,
            hint: None,
            max_lag: None,
            pins_session: false,
            tx: TxOpen::None,
            begins: false,
            use_target: None,
            reads_socket: false,
            reads_tracking: false,
            connection_id: false,
            kill: false,
            diagnostics: false,
            calls_functions: false,
        }
    }

    /// The schema a `USE` names (backticks removed), given the text that
    /// was classified.
    pub fn schema(&self, sql: &[u8]) -> Option<String> {
        let text = self.use_target?.get(sql)?;
        let name = super::lex::ident_name(text);
        (!name.is_empty()).then_some(name)
    }
}

/// What a statement says about a transaction it opens. Read-only
/// transactions may run on a replica (see [`super::route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxOpen {
    /// Opens no transaction (or is not understood well enough to say).
    #[default]
    None,
    /// `BEGIN [WORK]`, `START TRANSACTION [WITH CONSISTENT SNAPSHOT]`: the
    /// session's default access mode applies.
    Default,
    /// `START TRANSACTION READ ONLY[, WITH CONSISTENT SNAPSHOT]`.
    ReadOnly,
    /// `START TRANSACTION READ WRITE` (or both modes named: the server
    /// refuses that, the primary answers).
    ReadWrite,
    /// `SET TRANSACTION READ ONLY` without a scope: the *next* transaction
    /// is read only. The classifier never returns it (it does not parse
    /// `SET`); the session sets it after [`super::set::next_transaction_read_only`].
    NextReadOnly,
}

/// Classifies one COM_QUERY text. Never panics, never allocates on the fast path.
///
/// Each statement of a multi-statement text is classified and the results
/// combined: the strongest kind wins (`Write` > `Transaction` >
/// `ReadPrimary` > `Read`) and `pins_session` is OR-ed. A batch that holds a
/// `SET` or `USE` next to anything else is a pinning `Write`, because the
/// session layer cannot follow session changes made inside a batch. Empty
/// text, comment-only text and text with an unterminated string or comment
/// are `Write`.
pub fn classify(sql: &[u8]) -> Classified {
    let mut lx = Lexer::new(sql);
    let mut count: u32 = 0;
    let mut first = StatementKind::Write;
    let mut strongest = StatementKind::Read;
    let mut changes_session = false;
    let mut pins = false;
    let mut tx = TxOpen::None;
    let mut begins = false;
    let mut use_target = None;
    let mut seen = Seen::default();
    loop {
        let mut st = Stmt {
            lx: &mut lx,
            done: false,
            more: false,
        };
        let one = classify_one(&mut st);
        // Arms that decide early leave tokens behind; they may hold hints
        // or an unterminated string, so the statement is always read to
        // its end.
        st.drain();
        let more = st.more;
        if let Some(one) = one {
            count = count.saturating_add(1);
            if count == 1 {
                first = one.kind;
                tx = one.tx;
                begins = one.begins;
                use_target = one.use_target;
            }
            pins |= one.pins;
            seen.0 |= one.seen.0;
            changes_session |= matches!(one.kind, StatementKind::Set | StatementKind::Use);
            if rank(one.kind) > rank(strongest) {
                strongest = one.kind;
            }
        }
        if !more {
            break;
        }
    }
    if count != 1 || lx.error {
        tx = TxOpen::None;
    }
    let (kind, pins_session) = if lx.error || count == 0 {
        (StatementKind::Write, pins)
    } else if count == 1 {
        (first, pins)
    } else if changes_session {
        (StatementKind::Write, true)
    } else {
        (strongest, pins)
    };
    Classified {
        kind,
        hint: lx.hint,
        max_lag: lx.max_lag,
        pins_session,
        tx,
        begins,
        use_target: if kind == StatementKind::Use {
            use_target
        } else {
            None
        },
        reads_socket: lx.socket,
        reads_tracking: lx.tracking,
        connection_id: seen.has(Seen::CONNECTION_ID) && !lx.error,
        kill: seen.has(Seen::KILL),
        diagnostics: seen.has(Seen::DIAGNOSTICS) && !lx.error,
        calls_functions: seen.has(Seen::CALLS_FUNCTIONS)
            && kind == StatementKind::Read
            && !lx.error,
    }
}

/// Whether `sql` is a plain `COMMIT [WORK]` (one statement, nothing
/// after it but comments and one `;`): a commit that ends a read-only
/// transaction without chaining or releasing. Asked only inside a
/// read-only transaction on a replica, so not kept in [`Classified`].
pub fn is_plain_commit(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql);
    let mut t = lx.next_token();
    if !t.is_some_and(|t| t.keyword() == Kw::Commit) {
        return false;
    }
    t = lx.next_token();
    if t.is_some_and(|t| t.is_word("WORK")) {
        t = lx.next_token();
    }
    if t.is_some_and(|t| t.is_punct(b';')) {
        t = lx.next_token();
    }
    t.is_none() && !lx.error
}

/// How strongly a kind binds a statement to the primary, for combining the
/// statements of a batch.
fn rank(kind: StatementKind) -> u8 {
    match kind {
        StatementKind::Read => 0,
        StatementKind::ReadPrimary => 1,
        StatementKind::Transaction => 2,
        StatementKind::Write | StatementKind::Set | StatementKind::Use => 3,
    }
}

/// The classification of one statement of a batch.
struct One {
    kind: StatementKind,
    pins: bool,
    tx: TxOpen,
    /// `BEGIN`, `START TRANSACTION` or `XA`.
    begins: bool,
    /// The name after `USE`, when it stands alone.
    use_target: Option<Span>,
    /// What a batch reports if any of its statements does.
    seen: Seen,
}

/// The flags of [`One`] that [`classify`] ORs over a batch, as bits: one
/// `or` per statement. As four `bool`s they cost every classification
/// ~15 instructions more (valgrind), most of them spills.
#[derive(Clone, Copy, Default)]
struct Seen(u8);

impl Seen {
    /// Calls `CONNECTION_ID()` (see [`Classified::connection_id`]).
    const CONNECTION_ID: u8 = 1;
    /// A `KILL` statement.
    const KILL: u8 = 2;
    /// Reads the previous statement's diagnostics.
    const DIAGNOSTICS: u8 = 4;
    /// A read that calls a stored function.
    const CALLS_FUNCTIONS: u8 = 8;

    /// These bits set.
    fn of(bits: u8) -> Self {
        Seen(bits)
    }

    /// The same, with `bit` set if `on`.
    fn with(self, bit: u8, on: bool) -> Self {
        Seen(self.0 | if on { bit } else { 0 })
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

impl One {
    fn new(kind: StatementKind, pins: bool) -> Self {
        One {
            kind,
            pins,
            tx: TxOpen::None,
            begins: false,
            use_target: None,
            seen: Seen::default(),
        }
    }

    /// [`One::new`] for a statement [`scan`] read.
    fn scanned(kind: StatementKind, s: &Scan) -> Self {
        One {
            // `IS_USED_LOCK(x) = CONNECTION_ID()` compares with the
            // server's thread id: such a statement keeps the server's own
            // `CONNECTION_ID()` (it runs on the one connection that holds
            // the lock), so the comparison stays true.
            seen: Seen::default()
                .with(Seen::CONNECTION_ID, s.connection_id && !s.server_thread_ids)
                .with(Seen::DIAGNOSTICS, s.diagnostics)
                .with(Seen::CALLS_FUNCTIONS, s.calls_functions),
            ..One::new(kind, s.pins)
        }
    }

    fn opens(tx: TxOpen) -> Self {
        One {
            kind: StatementKind::Transaction,
            pins: false,
            tx,
            begins: true,
            use_target: None,
            seen: Seen::default(),
        }
    }

    /// The same, pinning the session.
    fn pinning(self) -> Self {
        One { pins: true, ..self }
    }

    /// A transaction statement that opens one (`BEGIN …`, `XA …`).
    fn begins() -> Self {
        One {
            begins: true,
            ..One::new(StatementKind::Transaction, false)
        }
    }
}

/// The tokens of one statement: stops at `;` (remembering that more may
/// follow) or at the end of the text.
struct Stmt<'l, 'a> {
    lx: &'l mut Lexer<'a>,
    /// `;` or the end was reached: no more tokens for this statement.
    done: bool,
    /// The statement ended at `;`, so another may follow.
    more: bool,
}

impl<'a> Stmt<'_, 'a> {
    fn next(&mut self) -> Option<Token<'a>> {
        if self.done {
            return None;
        }
        match self.lx.next_token() {
            Some(t) if t.kind == TokenKind::Punct(b';') => {
                self.done = true;
                self.more = true;
                None
            }
            Some(t) => Some(t),
            None => {
                self.done = true;
                None
            }
        }
    }

    /// The keyword of the next token (`Kw::End` at the end of the statement).
    fn next_kw(&mut self) -> Kw {
        self.next().map_or(Kw::End, |t| t.keyword())
    }

    fn drain(&mut self) {
        while self.next().is_some() {}
    }
}

/// Classifies the statement at the front of `st`; `None` for an empty one.
/// Iterative: `EXPLAIN` and leading parentheses loop instead of recursing.
fn classify_one(st: &mut Stmt<'_, '_>) -> Option<One> {
    use StatementKind as K;
    let mut tok = st.next()?;
    // Set once an EXPLAIN/DESCRIBE/ANALYZE prefix has been consumed.
    let mut explained = false;
    // `EXPLAIN … INTO @var` (MySQL 8.3+) assigns a user variable.
    let mut explain_into = false;
    loop {
        let mut parenthesised = false;
        while tok.is_punct(b'(') {
            parenthesised = true;
            tok = match st.next() {
                Some(t) => t,
                None => return Some(One::new(K::Write, false)),
            };
        }
        let kw = tok.keyword();
        if parenthesised && !matches!(kw, Kw::Select | Kw::Values | Kw::With | Kw::Table) {
            return Some(One::new(K::Write, false));
        }
        let one = match kw {
            Kw::Select | Kw::Values | Kw::Table | Kw::With => {
                let s = scan(st, Mode::Read, kw == Kw::With);
                let kind = if s.write {
                    K::Write
                } else if s.primary || explain_into {
                    K::ReadPrimary
                } else {
                    K::Read
                };
                One {
                    pins: s.pins || explain_into,
                    ..One::scanned(kind, &s)
                }
            }
            Kw::Explain | Kw::Describe | Kw::Desc | Kw::Analyze if !explained => {
                explained = true;
                match explain_target(st, kw == Kw::Analyze, &mut explain_into) {
                    Target::Statement(t) => {
                        tok = t;
                        continue;
                    }
                    Target::Done(kind) => One::new(kind, explain_into),
                }
            }
            Kw::Begin => {
                // `BEGIN NOT ATOMIC` opens a MariaDB compound statement.
                match st.next() {
                    None => One::opens(TxOpen::Default),
                    Some(t) if t.is_word("WORK") && st.next().is_none() => {
                        One::opens(TxOpen::Default)
                    }
                    Some(t) if t.keyword() == Kw::Not => One::new(K::Write, false),
                    Some(_) => One::begins(),
                }
            }
            Kw::Start => {
                if st.next_kw() == Kw::Transaction {
                    One::opens(start_characteristics(st))
                } else {
                    One::new(K::Write, false)
                }
            }
            Kw::Xa => One::begins(),
            Kw::Commit | Kw::Rollback | Kw::Savepoint => One::new(K::Transaction, false),
            Kw::Release => {
                let kind = if st.next_kw() == Kw::Savepoint {
                    K::Transaction
                } else {
                    K::Write
                };
                One::new(kind, false)
            }
            Kw::Set => {
                // `SET STATEMENT var=val FOR stmt` runs `stmt`; a variable
                // named `statement` would be followed by `=`.
                let set_statement = match st.next() {
                    Some(t) if t.keyword() == Kw::Statement => {
                        !st.next().is_some_and(|t| t.is_assign())
                    }
                    _ => false,
                };
                if set_statement {
                    let s = scan(st, Mode::Write, false);
                    One::scanned(K::Write, &s)
                } else {
                    let s = scan(st, Mode::Set, false);
                    One::scanned(K::Set, &s)
                }
            }
            Kw::Use => {
                // `USE db` with nothing after the name: its span.
                let target = st
                    .next()
                    .filter(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
                    .filter(|_| st.next().is_none())
                    .map(|t| t.span());
                One {
                    use_target: target,
                    ..One::new(K::Use, false)
                }
            }
            Kw::Show => {
                // SHOW WARNINGS | ERRORS | COUNT(*) WARNINGS | ERRORS
                let next = st.next();
                One {
                    seen: Seen::default().with(
                        Seen::DIAGNOSTICS,
                        next.is_some_and(|t| {
                            t.is_word("WARNINGS") || t.is_word("ERRORS") || t.is_word("COUNT")
                        }),
                    ),
                    ..One::new(K::ReadPrimary, false)
                }
            }
            Kw::Help => One::new(K::ReadPrimary, false),
            // GET [CURRENT | STACKED] DIAGNOSTICS …: assigns variables
            // (user variables pin, as any assignment by a query).
            Kw::Get => {
                let mut t = st.next();
                if t.is_some_and(|t| t.is_word("CURRENT") || t.is_word("STACKED")) {
                    t = st.next();
                }
                if t.is_some_and(|t| t.is_word("DIAGNOSTICS")) {
                    let s = scan(st, Mode::Write, false);
                    One {
                        seen: Seen::of(Seen::DIAGNOSTICS),
                        ..One::new(K::ReadPrimary, s.pins || s.assigns_user_var)
                    }
                } else {
                    One::new(K::Write, false)
                }
            }
            Kw::Create => {
                let mut next = st.next_kw();
                if next == Kw::Or {
                    // CREATE OR REPLACE TEMPORARY TABLE (MariaDB)
                    st.next();
                    next = st.next_kw();
                }
                One::new(K::Write, next == Kw::Temporary)
            }
            Kw::Drop => {
                let next = st.next_kw();
                One::new(K::Write, matches!(next, Kw::Temporary | Kw::Prepare))
            }
            Kw::Lock | Kw::Unlock | Kw::Prepare | Kw::Execute | Kw::Deallocate | Kw::Handler => {
                One::new(K::Write, true)
            }
            // CALL: what the procedure leaves in the connection (user
            // variables, temporary tables, locks, prepared statements) is
            // invisible here, so the session stays on the primary
            // connection that ran it from then on. MaxScale's default
            // routes CALL to the primary but does not follow that state
            // (its `strict_sp_calls = true` is this rule).
            Kw::Call => {
                let s = scan(st, Mode::Write, false);
                One::scanned(K::Write, &s).pinning()
            }
            Kw::Insert | Kw::Update | Kw::Delete | Kw::Replace | Kw::Do | Kw::Load => {
                let s = scan(st, Mode::Write, false);
                One::scanned(K::Write, &s)
            }
            Kw::Kill => One {
                seen: Seen::of(Seen::KILL),
                ..One::new(K::Write, false)
            },
            _ => One::new(K::Write, false),
        };
        return Some(one);
    }
}

/// The access mode named after `START TRANSACTION`: a comma-separated list
/// of `READ ONLY`, `READ WRITE`, `WITH CONSISTENT SNAPSHOT`. Anything else
/// is not understood ([`TxOpen::None`]: the primary answers).
fn start_characteristics(st: &mut Stmt<'_, '_>) -> TxOpen {
    let (mut ro, mut rw) = (false, false);
    let mut t = st.next();
    while let Some(w) = t {
        if w.is_word("READ") {
            match st.next() {
                Some(m) if m.is_word("ONLY") => ro = true,
                Some(m) if m.is_word("WRITE") => rw = true,
                _ => return TxOpen::None,
            }
        } else if w.is_word("WITH") {
            let consistent = st.next().is_some_and(|c| c.is_word("CONSISTENT"));
            if !consistent || !st.next().is_some_and(|s| s.is_word("SNAPSHOT")) {
                return TxOpen::None;
            }
        } else {
            return TxOpen::None;
        }
        t = match st.next() {
            Some(c) if c.is_punct(b',') => st.next(),
            None => None,
            Some(_) => return TxOpen::None,
        };
    }
    match (ro, rw) {
        (true, false) => TxOpen::ReadOnly,
        (false, false) => TxOpen::Default,
        _ => TxOpen::ReadWrite,
    }
}

/// What follows an `EXPLAIN`/`DESCRIBE`/`ANALYZE` prefix.
enum Target<'a> {
    /// A statement to classify as if it stood alone, starting at this token.
    Statement(Token<'a>),
    /// Settled without looking at a statement.
    Done(StatementKind),
}

/// Skips the options of `EXPLAIN`/`DESCRIBE` (or MariaDB's `ANALYZE`) and
/// finds what is explained.
fn explain_target<'a>(st: &mut Stmt<'_, 'a>, analyze: bool, into: &mut bool) -> Target<'a> {
    use StatementKind as K;
    loop {
        let Some(t) = st.next() else {
            return Target::Done(K::Write);
        };
        let kw = t.keyword();
        return match kw {
            Kw::Select | Kw::Values | Kw::With => Target::Statement(t),
            // ANALYZE TABLE is maintenance; EXPLAIN TABLE t explains a read.
            Kw::Table if analyze => Target::Done(K::Write),
            Kw::Table => Target::Statement(t),
            _ if t.is_punct(b'(') => Target::Statement(t),
            Kw::Format => {
                // FORMAT = JSON | TREE | TRADITIONAL
                if st.next().is_some_and(|t| t.is_punct(b'=')) {
                    st.next();
                }
                continue;
            }
            Kw::Extended | Kw::Partitions | Kw::Analyze if !analyze => continue,
            Kw::Into if !analyze => {
                *into = true;
                st.next();
                continue;
            }
            // EXPLAIN FOR CONNECTION n looks at another connection of that server.
            Kw::For if !analyze => Target::Done(K::ReadPrimary),
            Kw::Insert | Kw::Update | Kw::Delete | Kw::Replace => Target::Done(K::Write),
            // DESCRIBE tbl / EXPLAIN db.tbl col. A table named like one of
            // our keywords is sent to the primary: safe, if not clever.
            Kw::Other | Kw::ServerSchema if !analyze => Target::Done(K::Read),
            _ if !analyze && t.kind == TokenKind::QuotedIdent => Target::Done(K::Read),
            _ => Target::Done(K::Write),
        };
    }
}

/// Which rules [`scan`] applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A `SELECT`-like statement: every primary and pinning rule applies.
    Read,
    /// A write: only the pinning rules (lock functions, `@x :=`) matter.
    Write,
    /// A `SET`: lock functions pin; `@x :=` is the statement's own
    /// assignment, judged by [`super::set::parse_set`].
    Set,
}

/// What [`scan`] found in the rest of a statement.
#[derive(Default)]
struct Scan {
    /// Must run on the primary (locking read, `INTO`, per-connection result…).
    primary: bool,
    /// Creates unreplayable connection state.
    pins: bool,
    /// A `WITH` whose main statement writes.
    write: bool,
    /// Calls `CONNECTION_ID()`.
    connection_id: bool,
    /// Reads the previous statement's diagnostics.
    diagnostics: bool,
    /// Names a user variable (`@x`): in `GET DIAGNOSTICS`, its target.
    assigns_user_var: bool,
    /// Calls `IS_USED_LOCK()`, which answers a server thread id.
    server_thread_ids: bool,
    /// A read that calls a function that is not a built-in.
    calls_functions: bool,
}

/// Reads the rest of a statement and applies the rules that can fire
/// anywhere in it (any parenthesis depth). `with` asks to also find the
/// main statement of a `WITH`: the first statement keyword at depth 0.
fn scan(st: &mut Stmt<'_, '_>, mode: Mode, with: bool) -> Scan {
    let mut s = Scan::default();
    // Cleared when a WITH turns out to be a write: its INSERT … INTO is
    // not a SELECT … INTO.
    let mut read = mode == Mode::Read;
    let mut depth: u32 = 0;
    // Keywords of the last two tokens (`Kw::NotWord` for punctuation etc.).
    let mut prev = Kw::NotWord;
    let mut prev2 = Kw::NotWord;
    // The token after INTO decides whether a variable is assigned.
    let mut after_into = false;
    // WITH: still looking for the main statement.
    let mut find_main = with;
    // WITH … REPLACE at depth 0: a write unless `(` follows (the function).
    let mut after_replace = false;
    // The text of the last word that is not one of ours (`Kw::Other`,
    // `Kw::ServerSchema`) or quoted identifier (`Kw::Quoted`), for `word(`
    // (see [`stored_call`]) and `schema.`: read only when `prev` says the
    // token before is that name. The only per-token cost of both rules.
    let mut name: &[u8] = &[];
    while let Some(t) = st.next() {
        // `Kw::Quoted` and `Kw::Dot` are set in their arms below, where the
        // token kind is matched anyway: a second dispatch on it here cost
        // every token a few instructions.
        let mut kw = match t.kind {
            TokenKind::Word => t.keyword(),
            TokenKind::UserVar => Kw::AtVar,
            _ => Kw::NotWord,
        };
        if after_into {
            after_into = false;
            if !matches!(kw, Kw::Outfile | Kw::Dumpfile) {
                s.pins = true;
            }
        }
        if after_replace {
            after_replace = false;
            find_main = false;
            if !t.is_punct(b'(') {
                s.write = true;
                read = false;
            }
        }
        match t.kind {
            // `word(` with a word that is not ours (`COUNT(`, `WHERE (`)
            // is the common case, and only the stored-function rule can
            // apply to it: tested first.
            TokenKind::Punct(b'(') if prev == Kw::Other => {
                if read && !s.calls_functions {
                    s.calls_functions = prev2 == Kw::Dot || !super::functions::is_builtin(name);
                }
                depth = depth.saturating_add(1);
            }
            TokenKind::Punct(b'(') => {
                match prev.call_effect() {
                    Call::Primary if read => s.primary = true,
                    Call::Lock => {
                        s.primary = true;
                        s.pins = true;
                    }
                    Call::ConnectionId => s.connection_id = true,
                    _ => {}
                }
                if prev == Kw::IsUsedLock {
                    s.server_thread_ids = true;
                }
                if prev.reads_diagnostics() {
                    s.diagnostics = true;
                }
                if read && !s.calls_functions {
                    s.calls_functions = stored_call(prev, prev2, name);
                }
                depth = depth.saturating_add(1);
            }
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            // `schema.`: a server schema qualifies what follows (see
            // `is_server_schema`).
            TokenKind::Punct(b'.') => {
                if read
                    && (prev == Kw::ServerSchema
                        || prev == Kw::Quoted && quotes_server_schema(name))
                {
                    s.primary = true;
                }
                kw = Kw::Dot;
            }
            TokenKind::Assign if prev == Kw::AtVar && mode != Mode::Set => {
                s.primary = true;
                s.pins = true;
            }
            TokenKind::SysVar if read && is_primary_sysvar(t.text) => {
                s.primary = true;
                s.diagnostics |= is_diagnostics_sysvar(t.text);
            }
            TokenKind::SysVar if read && is_server_sysvar(t.text) => s.primary = true,
            TokenKind::QuotedIdent => {
                kw = Kw::Quoted;
                name = t.text;
            }
            TokenKind::UserVar => s.assigns_user_var = true,
            // Most words are not ours: a plain test for them, not the
            // jump table over every keyword (measured: ~5 instructions a
            // word).
            TokenKind::Word if read && kw == Kw::Other => name = t.text,
            TokenKind::Word if read => {
                match kw {
                    Kw::ServerSchema => name = t.text,
                    Kw::Update | Kw::Share if prev == Kw::For => s.primary = true,
                    Kw::In if prev == Kw::Lock => s.primary = true,
                    // NEXT VALUE FOR seq / PREVIOUS VALUE FOR seq
                    Kw::For if prev == Kw::Value && matches!(prev2, Kw::Next | Kw::Previous) => {
                        s.primary = true
                    }
                    Kw::Into => {
                        s.primary = true;
                        after_into = true;
                    }
                    Kw::SqlCalcFoundRows => s.primary = true,
                    _ => {}
                }
                if find_main && depth == 0 {
                    match kw {
                        Kw::Select | Kw::Values | Kw::Table => find_main = false,
                        Kw::Insert | Kw::Update | Kw::Delete => {
                            find_main = false;
                            s.write = true;
                            read = false;
                        }
                        Kw::Replace => after_replace = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        prev2 = prev;
        prev = kw;
    }
    if after_into {
        s.pins = true;
    }
    if after_replace || find_main {
        // `WITH … REPLACE` at the end, or no main statement found: not
        // understood, so not a read.
        s.write = true;
    }
    s
}

/// `@@identity`, `@@last_insert_id`… (any scope prefix): per-connection
/// results that only the primary connection that ran the statement has.
fn is_primary_sysvar(text: &[u8]) -> bool {
    let mut name = text.get(2..).unwrap_or_default();
    if let Some(dot) = name.iter().position(|&b| b == b'.') {
        name = &name[dot + 1..];
    }
    const NAMES: [&[u8]; 5] = [
        b"identity",
        b"last_insert_id",
        b"last_gtid",
        b"warning_count",
        b"error_count",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Whether `word(` (the word `p`, of keyword `kw`, after a `.` if
/// `qualified`) calls a stored function: `db.f(` always; `f(` when `f` is
/// neither one of our keywords nor a built-in function or SQL keyword;
/// `` `f`( `` (a quoted name is never a built-in).
#[inline]
fn is_stored_call(p: Token<'_>, kw: Kw, qualified: bool) -> bool {
    match p.kind {
        TokenKind::Word => {
            qualified
                || (matches!(kw, Kw::Other | Kw::ServerSchema)
                    && !super::functions::is_builtin(p.text))
        }
        TokenKind::QuotedIdent => true,
        _ => false,
    }
}

/// [`is_stored_call`] for [`scan`], from what it keeps anyway: the
/// keywords of the two tokens before `(` (`prev` the name's, `prev2`
/// [`Kw::Dot`] when qualified) and `name`, the text of the name before
/// `(` when `prev` is a word. Keeping the whole previous token and a `.`
/// flag per token instead cost a point select ~10 % of its
/// classification (valgrind, see benches/results/classify-server-state.md).
#[inline]
fn stored_call(prev: Kw, prev2: Kw, name: &[u8]) -> bool {
    match prev {
        Kw::Quoted => true,
        Kw::Other | Kw::ServerSchema => prev2 == Kw::Dot || !super::functions::is_builtin(name),
        // Not a word (`)`, `,`, a literal…).
        Kw::NotWord | Kw::AtVar | Kw::Dot | Kw::End => false,
        // One of our keywords: a call only as `db.word(`.
        _ => prev2 == Kw::Dot,
    }
}

/// The name inside `` `…` `` (the quotes cut off; doubled backticks kept,
/// which no schema we look for has).
fn ident_inner(text: &[u8]) -> &[u8] {
    text.get(1..text.len().saturating_sub(1))
        .unwrap_or_default()
}

/// The schemas whose tables describe the server that answers, not the
/// replicated data: `information_schema` (its runtime tables —
/// `PROCESSLIST`, `GLOBAL_STATUS`… — differ per server, and a catalogue
/// read right after DDL must see the DDL, as ORMs introspect right after
/// migrating), `performance_schema`, `mysql`, `sys`. A read that names
/// one as a qualifier (`mysql.user`, `` `sys`.`x` ``, followed by `.`)
/// goes to the primary. Only there does a name mean the schema: a column,
/// alias or table of the current schema spelled like one of them
/// (`SELECT sys FROM t`) is no server state. (Looking at every quoted
/// name also cost ORM statements, which quote every name, more than
/// looking at qualifiers.)
///
/// The names are [`Kw::ServerSchema`] in the keyword tables, so that an
/// unquoted word is told apart by the lookup every word gets anyway;
/// [`quotes_server_schema`] tells quoted ones.
#[inline(never)]
fn is_server_schema(name: &[u8]) -> bool {
    keyword(name) == Kw::ServerSchema
}

/// [`is_server_schema`] for a quoted identifier's text (backticks
/// included). Asked for every quoted qualifier in a read (ORMs quote
/// every name: `` `users`.`id` ``), so `sys` and `mysql` are compared
/// inline by their five or seven bytes (`| 0x20` turns exactly the two
/// cases of a letter into the lower-case one) and only 20-byte texts are
/// looked up out of line.
#[inline(always)]
fn quotes_server_schema(text: &[u8]) -> bool {
    match *text {
        [_, a, b, c, _] => a | 0x20 == b's' && b | 0x20 == b'y' && c | 0x20 == b's',
        [_, a, b, c, d, e, _] => {
            u32::from_le_bytes([a, b, c, d]) | 0x2020_2020 == u32::from_le_bytes(*b"mysq")
                && e | 0x20 == b'l'
        }
        _ => text.len() == 20 && is_server_schema(ident_inner(text)),
    }
}

/// A system variable whose value is the answering server's own: any
/// `@@global.x` (globals differ per server: `SET GLOBAL` through rwproxy
/// reaches only the primary), and a bare `@@x` naming per-server state
/// (paths, identity, replication and GTID positions, `read_only`).
/// `@@session.x`/`@@local.x` and other bare names read the session's value,
/// which rwproxy replays on every connection the session uses, so they
/// stay readable anywhere: drivers' connect-time reads (`SELECT
/// @@max_allowed_packet`, `@@version_comment`, `@@tx_isolation`…) keep
/// going to replicas.
///
/// Why not every bare `@@x`: that sends every driver's connect-time
/// queries to the primary, and rwproxy's own tests identify the server
/// that ran a read by `@@port`. `@@port` therefore stays readable anywhere
/// (a client knows the port it connected to: rwproxy's); `@@global.port`
/// goes to the primary.
fn is_server_sysvar(text: &[u8]) -> bool {
    let name = text.get(2..).unwrap_or_default();
    if let Some(dot) = name.iter().position(|&b| b == b'.') {
        return name[..dot].eq_ignore_ascii_case(b"global");
    }
    const NAMES: &[&[u8]] = &[
        b"basedir",
        b"character_sets_dir",
        b"datadir",
        b"general_log_file",
        b"gtid_binlog_pos",
        b"gtid_binlog_state",
        b"gtid_current_pos",
        b"gtid_executed",
        b"gtid_purged",
        b"gtid_slave_pos",
        b"hostname",
        b"innodb_buffer_pool_filename",
        b"innodb_data_home_dir",
        b"innodb_log_group_home_dir",
        b"innodb_read_only",
        b"innodb_temp_data_file_path",
        b"innodb_undo_directory",
        b"lc_messages_dir",
        b"log_bin",
        b"log_bin_basename",
        b"log_bin_index",
        b"log_error",
        b"pid_file",
        b"plugin_dir",
        b"read_only",
        b"relay_log",
        b"relay_log_basename",
        b"relay_log_index",
        b"report_host",
        b"secure_file_priv",
        b"server_id",
        b"server_uid",
        b"server_uuid",
        b"slave_load_tmpdir",
        b"slow_query_log_file",
        b"super_read_only",
        b"system_time_zone",
        b"tmpdir",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The stored functions a text calls, as (schema as written, name), names
/// unquoted: what [`Classified::calls_functions`] saw, for the session to
/// look up in its catalogue. Asked only for a text so flagged, so it may
/// allocate.
pub fn stored_functions(sql: &[u8]) -> Vec<(Option<String>, String)> {
    let mut lx = Lexer::new(sql);
    let mut out = Vec::new();
    // The last three tokens: qualifier, `.`, name.
    let (mut p3, mut p2, mut p1): (Option<Token<'_>>, Option<Token<'_>>, Option<Token<'_>>) =
        (None, None, None);
    while let Some(t) = lx.next_token() {
        if t.is_punct(b'(')
            && let Some(name) = p1
        {
            let qualified = p2.is_some_and(|d| d.is_punct(b'.'));
            if is_stored_call(name, name.keyword(), qualified) {
                let schema = if qualified {
                    p3.filter(|q| matches!(q.kind, TokenKind::Word | TokenKind::QuotedIdent))
                        .map(|q| super::lex::ident_name(q.text))
                } else {
                    None
                };
                out.push((schema, super::lex::ident_name(name.text)));
            }
        }
        p3 = p2;
        p2 = p1;
        p1 = Some(t);
    }
    out
}

/// The schema a `DROP {DATABASE | SCHEMA} [IF EXISTS] name` drops (one
/// statement; backticks removed). Asked only after a write succeeded.
pub fn dropped_schema(sql: &[u8]) -> Option<String> {
    let mut lx = Lexer::new(sql);
    if lx.next_token()?.keyword() != Kw::Drop {
        return None;
    }
    let what = lx.next_token()?;
    if !(what.is_word("DATABASE") || what.is_word("SCHEMA")) {
        return None;
    }
    let mut name = lx.next_token()?;
    if name.is_word("IF") {
        lx.next_token().filter(|t| t.is_word("EXISTS"))?;
        name = lx.next_token()?;
    }
    if !matches!(name.kind, TokenKind::Word | TokenKind::QuotedIdent) {
        return None;
    }
    match lx.next_token() {
        None => {}
        Some(t) if t.is_punct(b';') && lx.next_token().is_none() => {}
        Some(_) => return None,
    }
    (!lx.error).then(|| super::lex::ident_name(name.text))
}

/// `@@warning_count`, `@@error_count` (any scope prefix).
fn is_diagnostics_sysvar(text: &[u8]) -> bool {
    let name = text.get(2..).unwrap_or_default();
    let name = match name.iter().rposition(|&b| b == b'.') {
        Some(dot) => &name[dot + 1..],
        None => name,
    };
    name.eq_ignore_ascii_case(b"warning_count") || name.eq_ignore_ascii_case(b"error_count")
}

/// What calling a function (`NAME(`) means for routing.
#[derive(PartialEq, Eq)]
enum Call {
    /// An ordinary function.
    None,
    /// Reads a per-connection result or a sequence: primary.
    Primary,
    /// Takes or queries a named lock held by the connection: primary and pinned.
    Lock,
    /// `CONNECTION_ID()`: answered with the session's id.
    ConnectionId,
}

/// The words the classifier cares about. Everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    /// A word that is not one of ours.
    Other,
    /// Not a word at all (punctuation, literal…).
    NotWord,
    /// A user variable (`@x`), for `@x :=`.
    AtVar,
    /// A quoted identifier (`` `f` ``), for `` `f`( `` (only in [`scan`]).
    Quoted,
    /// The punctuation `.`, for `db.f(` (only in [`scan`]).
    Dot,
    /// A word naming a schema that describes the answering server
    /// (`sys`, `mysql`, `information_schema`, `performance_schema`; see
    /// [`is_server_schema`]). Otherwise a word like [`Kw::Other`]: every
    /// rule that names `Other` names it too.
    ServerSchema,
    /// End of the statement.
    End,
    Analyze,
    Begin,
    Call,
    Commit,
    Create,
    Deallocate,
    Delete,
    Desc,
    Describe,
    Do,
    Drop,
    Dumpfile,
    Execute,
    Explain,
    Extended,
    For,
    Format,
    Get,
    Handler,
    Help,
    In,
    Insert,
    Into,
    Kill,
    Load,
    Lock,
    Next,
    Not,
    Or,
    Outfile,
    Partitions,
    Prepare,
    Previous,
    Release,
    Replace,
    Rollback,
    Savepoint,
    Select,
    Set,
    Share,
    Show,
    SqlCalcFoundRows,
    Start,
    Statement,
    Table,
    Temporary,
    Transaction,
    Unlock,
    Update,
    Use,
    Value,
    Values,
    With,
    Xa,
    // Functions.
    ConnectionId,
    FoundRows,
    GetLock,
    IsFreeLock,
    IsUsedLock,
    LastInsertId,
    Lastval,
    MasterGtidWait,
    MasterPosWait,
    Nextval,
    ReleaseAllLocks,
    ReleaseLock,
    RowCount,
    Setval,
    SourcePosWait,
}

impl Kw {
    /// `FOUND_ROWS`, `ROW_COUNT`, `LAST_INSERT_ID`: called, they read the
    /// previous statement's results.
    fn reads_diagnostics(self) -> bool {
        matches!(self, Kw::FoundRows | Kw::RowCount | Kw::LastInsertId)
    }

    fn call_effect(self) -> Call {
        match self {
            Kw::LastInsertId
            | Kw::FoundRows
            | Kw::RowCount
            | Kw::Nextval
            | Kw::Lastval
            | Kw::Setval
            | Kw::MasterPosWait
            | Kw::MasterGtidWait
            | Kw::SourcePosWait => Call::Primary,
            Kw::GetLock
            | Kw::ReleaseLock
            | Kw::ReleaseAllLocks
            | Kw::IsUsedLock
            | Kw::IsFreeLock => Call::Lock,
            Kw::ConnectionId => Call::ConnectionId,
            _ => Call::None,
        }
    }
}

// Keyword tables by length, so a word is compared against a handful of
// candidates at most. Spelled in upper case; `keyword` relies on that.
/// A keyword table entry. `folded` is the first 8 bytes of the name,
/// lower-cased by [`fold8`], so most candidates are rejected (or accepted)
/// by one integer comparison.
struct KwEntry {
    folded: u64,
    name: &'static [u8],
    kw: Kw,
}

const fn kw(name: &'static [u8], kw: Kw) -> KwEntry {
    let mut buf = [0u8; 8];
    let mut i = 0;
    while i < 8 && i < name.len() {
        buf[i] = name[i];
        i += 1;
    }
    KwEntry {
        folded: u64::from_le_bytes(buf) | FOLD,
        name,
        kw,
    }
}

/// Setting bit 5 of every byte lower-cases ASCII letters. On the bytes a
/// word can hold (letters, digits, `_`, `$`, bytes ≥ 0x80) it only merges a
/// letter with its other case, so comparing folded bytes is
/// `eq_ignore_ascii_case` for our keywords (all letters and `_`).
const FOLD: u64 = 0x2020_2020_2020_2020;

/// The first (up to) 8 bytes of `word`, folded like [`KwEntry::folded`].
#[inline]
fn fold8(word: &[u8]) -> u64 {
    if let Some(chunk) = word.first_chunk::<8>() {
        return u64::from_le_bytes(*chunk) | FOLD;
    }
    let mut v = 0u64;
    for (k, &b) in word.iter().enumerate() {
        v |= u64::from(b) << (8 * k);
    }
    v | FOLD
}

type KwTable = &'static [KwEntry];
const KW2: KwTable = &[
    kw(b"DO", Kw::Do),
    kw(b"IN", Kw::In),
    kw(b"OR", Kw::Or),
    kw(b"XA", Kw::Xa),
];
const KW3: KwTable = &[
    kw(b"FOR", Kw::For),
    kw(b"GET", Kw::Get),
    kw(b"NOT", Kw::Not),
    kw(b"SET", Kw::Set),
    kw(b"USE", Kw::Use),
    kw(b"SYS", Kw::ServerSchema),
];
const KW4: KwTable = &[
    kw(b"CALL", Kw::Call),
    kw(b"DESC", Kw::Desc),
    kw(b"DROP", Kw::Drop),
    kw(b"HELP", Kw::Help),
    kw(b"INTO", Kw::Into),
    kw(b"KILL", Kw::Kill),
    kw(b"LOAD", Kw::Load),
    kw(b"LOCK", Kw::Lock),
    kw(b"NEXT", Kw::Next),
    kw(b"SHOW", Kw::Show),
    kw(b"WITH", Kw::With),
];
const KW5: KwTable = &[
    kw(b"BEGIN", Kw::Begin),
    kw(b"SHARE", Kw::Share),
    kw(b"START", Kw::Start),
    kw(b"TABLE", Kw::Table),
    kw(b"VALUE", Kw::Value),
    kw(b"MYSQL", Kw::ServerSchema),
];
const KW6: KwTable = &[
    kw(b"SELECT", Kw::Select),
    kw(b"UPDATE", Kw::Update),
    kw(b"INSERT", Kw::Insert),
    kw(b"DELETE", Kw::Delete),
    kw(b"COMMIT", Kw::Commit),
    kw(b"CREATE", Kw::Create),
    kw(b"FORMAT", Kw::Format),
    kw(b"SETVAL", Kw::Setval),
    kw(b"UNLOCK", Kw::Unlock),
    kw(b"VALUES", Kw::Values),
];
const KW7: KwTable = &[
    kw(b"REPLACE", Kw::Replace),
    kw(b"ANALYZE", Kw::Analyze),
    kw(b"EXECUTE", Kw::Execute),
    kw(b"EXPLAIN", Kw::Explain),
    kw(b"HANDLER", Kw::Handler),
    kw(b"LASTVAL", Kw::Lastval),
    kw(b"NEXTVAL", Kw::Nextval),
    kw(b"OUTFILE", Kw::Outfile),
    kw(b"PREPARE", Kw::Prepare),
    kw(b"RELEASE", Kw::Release),
];
const KW8: KwTable = &[
    kw(b"DESCRIBE", Kw::Describe),
    kw(b"DUMPFILE", Kw::Dumpfile),
    kw(b"EXTENDED", Kw::Extended),
    kw(b"GET_LOCK", Kw::GetLock),
    kw(b"PREVIOUS", Kw::Previous),
    kw(b"ROLLBACK", Kw::Rollback),
];
const KW9: KwTable = &[
    kw(b"ROW_COUNT", Kw::RowCount),
    kw(b"SAVEPOINT", Kw::Savepoint),
    kw(b"STATEMENT", Kw::Statement),
    kw(b"TEMPORARY", Kw::Temporary),
];
const KW10: KwTable = &[
    kw(b"DEALLOCATE", Kw::Deallocate),
    kw(b"FOUND_ROWS", Kw::FoundRows),
    kw(b"PARTITIONS", Kw::Partitions),
];
const KW11: KwTable = &[kw(b"TRANSACTION", Kw::Transaction)];
const KW12: KwTable = &[
    kw(b"IS_FREE_LOCK", Kw::IsFreeLock),
    kw(b"IS_USED_LOCK", Kw::IsUsedLock),
    kw(b"RELEASE_LOCK", Kw::ReleaseLock),
];
const KW13: KwTable = &[kw(b"CONNECTION_ID", Kw::ConnectionId)];
const KW14: KwTable = &[kw(b"LAST_INSERT_ID", Kw::LastInsertId)];
const KW15: KwTable = &[
    kw(b"MASTER_POS_WAIT", Kw::MasterPosWait),
    kw(b"SOURCE_POS_WAIT", Kw::SourcePosWait),
];
const KW16: KwTable = &[kw(b"MASTER_GTID_WAIT", Kw::MasterGtidWait)];
const KW17: KwTable = &[kw(b"RELEASE_ALL_LOCKS", Kw::ReleaseAllLocks)];
const KW18: KwTable = &[
    kw(b"INFORMATION_SCHEMA", Kw::ServerSchema),
    kw(b"PERFORMANCE_SCHEMA", Kw::ServerSchema),
];
const KW19: KwTable = &[kw(b"SQL_CALC_FOUND_ROWS", Kw::SqlCalcFoundRows)];

/// Keyword tables indexed by word length.
const BY_LEN: [KwTable; 20] = [
    &[],
    &[],
    KW2,
    KW3,
    KW4,
    KW5,
    KW6,
    KW7,
    KW8,
    KW9,
    KW10,
    KW11,
    KW12,
    KW13,
    KW14,
    KW15,
    KW16,
    KW17,
    KW18,
    KW19,
];

/// For each length, a bit per letter (`a` = bit 0) that starts a keyword
/// of that length: most identifiers are rejected by this one test.
const FIRST_LETTERS: [u32; 20] = {
    let mut out = [0u32; 20];
    let mut len = 0;
    while len < BY_LEN.len() {
        let table = BY_LEN[len];
        let mut i = 0;
        while i < table.len() {
            out[len] |= 1 << (table[i].name[0] | 0x20).wrapping_sub(b'a');
            i += 1;
        }
        len += 1;
    }
    out
};

/// The routing keyword a token spells.
trait TokenKw {
    fn keyword(&self) -> Kw;
}

impl TokenKw for Token<'_> {
    #[inline]
    fn keyword(&self) -> Kw {
        if self.kind == TokenKind::Word {
            keyword(self.text)
        } else {
            Kw::NotWord
        }
    }
}

/// Looks a word up in the keyword tables, ignoring ASCII case.
#[inline]
fn keyword(word: &[u8]) -> Kw {
    let (Some(&first), Some(&letters)) = (word.first(), FIRST_LETTERS.get(word.len())) else {
        return Kw::Other;
    };
    let bit = (first | 0x20).wrapping_sub(b'a');
    if bit >= 26 || letters & (1 << bit) == 0 {
        return Kw::Other;
    }
    let folded = fold8(word);
    for e in BY_LEN[word.len()] {
        if e.folded == folded && (word.len() <= 8 || word[8..].eq_ignore_ascii_case(&e.name[8..])) {
            return e.kw;
        }
    }
    Kw::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementKind::*;

    const P: Option<Hint> = Some(Hint::Primary);
    const R: Option<Hint> = Some(Hint::Replica);

    /// SQL in → (kind, pins_session, hint) out.
    const CASES: &[(&str, StatementKind, bool, Option<Hint>)] = &[
        // --- sysbench oltp ---
        ("SELECT c FROM sbtest1 WHERE id=4242", Read, false, None),
        (
            "SELECT c FROM sbtest7 WHERE id BETWEEN 5001 AND 5100",
            Read,
            false,
            None,
        ),
        (
            "SELECT SUM(k) FROM sbtest2 WHERE id BETWEEN 1 AND 100",
            Read,
            false,
            None,
        ),
        (
            "SELECT c FROM sbtest4 WHERE id BETWEEN 1 AND 100 ORDER BY c",
            Read,
            false,
            None,
        ),
        (
            "SELECT DISTINCT c FROM sbtest3 WHERE id BETWEEN 1 AND 100 ORDER BY c",
            Read,
            false,
            None,
        ),
        ("UPDATE sbtest1 SET k=k+1 WHERE id=5", Write, false, None),
        (
            "UPDATE sbtest6 SET c='83868641912-28773972837-60736120486' WHERE id=5012",
            Write,
            false,
            None,
        ),
        ("DELETE FROM sbtest1 WHERE id=5011", Write, false, None),
        (
            "INSERT INTO sbtest1 (id, k, c, pad) VALUES (5011, 4979, '4862-1', '2256-9')",
            Write,
            false,
            None,
        ),
        ("BEGIN", Transaction, false, None),
        ("COMMIT", Transaction, false, None),
        // --- other first keywords ---
        ("select 1", Read, false, None),
        ("  \n\tSELECT 1  ", Read, false, None),
        ("(SELECT 1) UNION (SELECT 2)", Read, false, None),
        ("((SELECT a FROM t))", Read, false, None),
        ("VALUES ROW(1,2), ROW(3,4)", Read, false, None),
        ("TABLE t1", Read, false, None),
        ("REPLACE INTO t VALUES (1)", Write, false, None),
        ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", Write, false, None),
        ("CALL p(1, 2)", Write, true, None),
        ("CREATE TABLE t (a int)", Write, false, None),
        ("ALTER TABLE t ADD COLUMN b int", Write, false, None),
        ("DROP TABLE t", Write, false, None),
        ("TRUNCATE TABLE t", Write, false, None),
        ("RENAME TABLE a TO b", Write, false, None),
        ("GRANT SELECT ON *.* TO u", Write, false, None),
        ("OPTIMIZE TABLE t", Write, false, None),
        ("ANALYZE TABLE t", Write, false, None),
        ("CHECK TABLE t", Write, false, None),
        ("FLUSH PRIVILEGES", Write, false, None),
        ("KILL 42", Write, false, None),
        ("DO SLEEP(1)", Write, false, None),
        (
            "PURGE BINARY LOGS TO 'mysql-bin.000010'",
            Write,
            false,
            None,
        ),
        ("START SLAVE", Write, false, None),
        ("START REPLICA", Write, false, None),
        ("STOP SLAVE", Write, false, None),
        ("FROBNICATE everything", Write, false, None),
        ("SELECTX 1", Write, false, None),
        ("", Write, false, None),
        ("   \n ", Write, false, None),
        ("/* only a comment */", Write, false, None),
        ("-- only a comment", Write, false, None),
        (";", Write, false, None),
        ("(UPDATE t SET a=1)", Write, false, None),
        // --- session pinning statements ---
        ("CREATE TEMPORARY TABLE tmp (a int)", Write, true, None),
        (
            "create or replace temporary table tmp (a int)",
            Write,
            true,
            None,
        ),
        ("DROP TEMPORARY TABLE tmp", Write, true, None),
        ("LOCK TABLES t READ", Write, true, None),
        ("LOCK TABLE t WRITE", Write, true, None),
        ("UNLOCK TABLES", Write, true, None),
        ("PREPARE s FROM 'SELECT 1'", Write, true, None),
        ("EXECUTE s USING @a", Write, true, None),
        ("DEALLOCATE PREPARE s", Write, true, None),
        ("DROP PREPARE s", Write, true, None),
        ("HANDLER t OPEN", Write, true, None),
        ("DO GET_LOCK('a', 10)", Write, true, None),
        ("DO RELEASE_LOCK('a')", Write, true, None),
        ("UPDATE t SET a = (@x := a + 1)", Write, true, None),
        // --- transactions ---
        ("BEGIN WORK", Transaction, false, None),
        ("begin;", Transaction, false, None),
        ("BEGIN NOT ATOMIC SELECT 1; END", Write, false, None),
        ("START TRANSACTION", Transaction, false, None),
        (
            "START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT",
            Transaction,
            false,
            None,
        ),
        ("ROLLBACK", Transaction, false, None),
        ("ROLLBACK TO SAVEPOINT s1", Transaction, false, None),
        ("SAVEPOINT s1", Transaction, false, None),
        ("RELEASE SAVEPOINT s1", Transaction, false, None),
        ("XA START 'x'", Transaction, false, None),
        // --- SET and USE ---
        ("SET NAMES utf8mb4", Set, false, None),
        ("SET autocommit=0", Set, false, None),
        ("SET @x := 5", Set, false, None),
        ("SET @x = GET_LOCK('a', 1)", Set, true, None),
        (
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            Set,
            false,
            None,
        ),
        (
            "SET STATEMENT max_statement_time=1 FOR SELECT 1",
            Write,
            false,
            None,
        ),
        ("/*!40101 SET NAMES utf8 */", Set, false, None),
        ("/*!40101 SET NAMES utf8 */;", Set, false, None),
        ("USE sbtest", Use, false, None),
        ("use `my db`", Use, false, None),
        // --- SHOW / HELP / EXPLAIN ---
        ("SHOW TABLES", ReadPrimary, false, None),
        ("show warnings", ReadPrimary, false, None),
        ("HELP 'contents'", ReadPrimary, false, None),
        ("DESCRIBE t", Read, false, None),
        ("DESC db.t", Read, false, None),
        ("desc `t`", Read, false, None),
        ("EXPLAIN SELECT * FROM t WHERE a = 1", Read, false, None),
        ("EXPLAIN FORMAT=JSON SELECT 1", Read, false, None),
        ("EXPLAIN ANALYZE SELECT * FROM t", Read, false, None),
        ("EXPLAIN EXTENDED SELECT 1", Read, false, None),
        (
            "EXPLAIN SELECT * FROM t FOR UPDATE",
            ReadPrimary,
            false,
            None,
        ),
        ("EXPLAIN UPDATE t SET a = 1", Write, false, None),
        ("EXPLAIN DELETE FROM t", Write, false, None),
        ("EXPLAIN FOR CONNECTION 12", ReadPrimary, false, None),
        ("ANALYZE SELECT * FROM t", Read, false, None),
        (
            "ANALYZE FORMAT=JSON DELETE FROM t WHERE a = 1",
            Write,
            false,
            None,
        ),
        ("ANALYZE FORMAT=JSON SELECT 1", Read, false, None),
        ("ANALYZE NO_WRITE_TO_BINLOG TABLE t", Write, false, None),
        ("EXPLAIN", Write, false, None),
        // --- locking reads and INTO ---
        (
            "SELECT * FROM t WHERE id = 1 FOR UPDATE",
            ReadPrimary,
            false,
            None,
        ),
        (
            "select * from t where id = 1 for update",
            ReadPrimary,
            false,
            None,
        ),
        (
            "SELECT * FROM t FOR UPDATE SKIP LOCKED",
            ReadPrimary,
            false,
            None,
        ),
        (
            "SELECT * FROM t WHERE a IN (SELECT b FROM u FOR SHARE)",
            ReadPrimary,
            false,
            None,
        ),
        (
            "SELECT * FROM t LOCK IN SHARE MODE",
            ReadPrimary,
            false,
            None,
        ),
        ("SELECT a INTO @x FROM t LIMIT 1", ReadPrimary, true, None),
        (
            "SELECT a FROM t LIMIT 1 INTO @x, @y",
            ReadPrimary,
            true,
            None,
        ),
        ("SELECT a INTO var1 FROM t", ReadPrimary, true, None),
        (
            "SELECT * FROM t INTO OUTFILE '/tmp/t.csv'",
            ReadPrimary,
            false,
            None,
        ),
        (
            "SELECT * INTO DUMPFILE '/tmp/t.bin' FROM t",
            ReadPrimary,
            false,
            None,
        ),
        (
            "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10",
            ReadPrimary,
            false,
            None,
        ),
        // --- per-connection results, sequences, locks, user variables ---
        ("SELECT LAST_INSERT_ID()", ReadPrimary, false, None),
        ("select last_insert_id ( )", ReadPrimary, false, None),
        ("SELECT FOUND_ROWS()", ReadPrimary, false, None),
        ("SELECT ROW_COUNT()", ReadPrimary, false, None),
        ("SELECT NEXTVAL(s1)", ReadPrimary, false, None),
        ("SELECT LASTVAL(s1)", ReadPrimary, false, None),
        ("SELECT SETVAL(s1, 100)", ReadPrimary, false, None),
        ("SELECT NEXT VALUE FOR s1", ReadPrimary, false, None),
        ("SELECT PREVIOUS VALUE FOR s1", ReadPrimary, false, None),
        (
            "SELECT MASTER_POS_WAIT('log.000001', 4)",
            ReadPrimary,
            false,
            None,
        ),
        (
            "SELECT MASTER_GTID_WAIT('0-1-100')",
            ReadPrimary,
            false,
            None,
        ),
        (
            "SELECT SOURCE_POS_WAIT('log.000001', 4)",
            ReadPrimary,
            false,
            None,
        ),
        ("SELECT @@identity", ReadPrimary, false, None),
        ("SELECT @@session.last_insert_id", ReadPrimary, false, None),
        ("SELECT @@LAST_GTID", ReadPrimary, false, None),
        ("SELECT @@version, @@max_allowed_packet", Read, false, None),
        ("select GET_LOCK('a',1)", ReadPrimary, true, None),
        ("SELECT RELEASE_LOCK('a')", ReadPrimary, true, None),
        ("SELECT RELEASE_ALL_LOCKS()", ReadPrimary, true, None),
        ("SELECT IS_USED_LOCK('a')", ReadPrimary, true, None),
        ("SELECT IS_FREE_LOCK('a')", ReadPrimary, true, None),
        ("SELECT @a:=1", ReadPrimary, true, None),
        ("SELECT @a := @a + 1 FROM t", ReadPrimary, true, None),
        ("SELECT @a", Read, false, None),
        ("SELECT @a = 1", Read, false, None),
        ("SELECT found_rows, row_count FROM stats", Read, false, None),
        ("SELECT REPLACE(name, 'a', 'b') FROM t", Read, false, None),
        ("SELECT INSERT('abc', 1, 1, 'x')", Read, false, None),
        // --- strings, identifiers and comments must not fool it ---
        ("SELECT 'FOR UPDATE' FROM t", Read, false, None),
        (
            "SELECT \"x FOR UPDATE\", 'it''s', 'a\\'b FOR UPDATE' FROM t",
            Read,
            false,
            None,
        ),
        ("SELECT 'a;b' FROM t", Read, false, None),
        ("SELECT 'a; UPDATE t SET a=1' FROM t", Read, false, None),
        (
            "SELECT `update`, `for` FROM `delete` WHERE `insert` = 1",
            Read,
            false,
            None,
        ),
        ("SELECT 1 /* FOR UPDATE */", Read, false, None),
        ("SELECT 1 -- FOR UPDATE", Read, false, None),
        ("SELECT 1 # FOR UPDATE", Read, false, None),
        ("SELECT 1--1", Read, false, None),
        ("SELECT 1 /*! FOR UPDATE */", ReadPrimary, false, None),
        ("SELECT 1 /*!50000 FOR UPDATE */", ReadPrimary, false, None),
        (
            "SELECT 1 /*M!100100 FOR UPDATE */",
            ReadPrimary,
            false,
            None,
        ),
        ("/*!50000 SELECT */ * FROM t", Read, false, None),
        (
            "/* app: user-list */ SELECT id FROM users WHERE id = 7 /* trace-id=abc */",
            Read,
            false,
            None,
        ),
        ("-- leading\nSELECT 1", Read, false, None),
        ("# leading\nSELECT 1", Read, false, None),
        (
            "SELECT /*+ MAX_EXECUTION_TIME(1000) */ a FROM t",
            Read,
            false,
            None,
        ),
        ("SELECT 'unterminated", Write, false, None),
        ("SELECT 1 /* unterminated", Write, false, None),
        ("SELECT `unterminated", Write, false, None),
        ("SELECT 1 /*! unterminated executable", Write, false, None),
        // --- CTEs ---
        (
            "WITH c AS (SELECT 1 AS a) SELECT a FROM c",
            Read,
            false,
            None,
        ),
        (
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < 5) SELECT n FROM c",
            Read,
            false,
            None,
        ),
        (
            "WITH c AS (SELECT id FROM t) UPDATE t SET a = 1 WHERE id IN (SELECT id FROM c)",
            Write,
            false,
            None,
        ),
        (
            "WITH c AS (SELECT id FROM t) DELETE FROM t WHERE id IN (SELECT id FROM c)",
            Write,
            false,
            None,
        ),
        (
            "WITH c AS (SELECT 1) INSERT INTO t SELECT * FROM c",
            Write,
            false,
            None,
        ),
        (
            "WITH c AS (SELECT 1) REPLACE INTO t SELECT * FROM c",
            Write,
            false,
            None,
        ),
        (
            "WITH c AS (SELECT 'x' AS s) SELECT REPLACE(s, 'x', 'y') FROM c",
            Read,
            false,
            None,
        ),
        (
            "WITH c AS (SELECT id FROM t) SELECT * FROM c FOR UPDATE",
            ReadPrimary,
            false,
            None,
        ),
        ("(WITH c AS (SELECT 1) SELECT * FROM c)", Read, false, None),
        ("WITH c AS (SELECT 1)", Write, false, None),
        // --- multi-statements ---
        ("SELECT 1; SELECT 2", Read, false, None),
        ("SELECT 1; SELECT 2;", Read, false, None),
        ("SELECT 1; UPDATE t SET a=1", Write, false, None),
        (
            "SELECT 1; SELECT LAST_INSERT_ID()",
            ReadPrimary,
            false,
            None,
        ),
        ("SELECT 1; COMMIT", Transaction, false, None),
        (
            "INSERT INTO t VALUES (1); SELECT LAST_INSERT_ID()",
            Write,
            false,
            None,
        ),
        ("SET NAMES utf8; SELECT 1", Write, true, None),
        ("SELECT 1; USE db2", Write, true, None),
        ("SELECT 1; SELECT GET_LOCK('a', 1)", ReadPrimary, true, None),
        ("SELECT 1; SELECT 'x", Write, false, None),
        // --- hints ---
        ("/* rwproxy:primary */ SELECT 1", Read, false, P),
        ("SELECT 1 /* rwproxy:replica */", Read, false, R),
        (
            "/*rwproxy:replica*/ SELECT * FROM t FOR UPDATE",
            ReadPrimary,
            false,
            R,
        ),
        ("-- rwproxy:primary\nSELECT 1", Read, false, P),
        ("# rwproxy:replica\nSELECT 1", Read, false, R),
        (
            "/* rwproxy:replica */ /* rwproxy:primary */ SELECT 1",
            Read,
            false,
            P,
        ),
        (
            "/* rwproxy:primary */ /* rwproxy:replica */ SELECT 1",
            Read,
            false,
            P,
        ),
        ("/*! rwproxy:primary */ SELECT 1", Write, false, None),
        ("/* rwproxy:primaryx */ SELECT 1", Read, false, None),
        ("/* not rwproxy:primary */ SELECT 1", Read, false, None),
        ("SELECT '/* rwproxy:primary */'", Read, false, None),
        ("/* rwproxy:primary */ UPDATE t SET a=1", Write, false, P),
    ];

    #[test]
    fn transaction_access_modes() {
        let cases: &[(&str, TxOpen)] = &[
            ("BEGIN", TxOpen::Default),
            ("begin work;", TxOpen::Default),
            ("/* app */ BEGIN", TxOpen::Default),
            ("START TRANSACTION", TxOpen::Default),
            (
                "START TRANSACTION WITH CONSISTENT SNAPSHOT",
                TxOpen::Default,
            ),
            ("START TRANSACTION READ ONLY", TxOpen::ReadOnly),
            ("start transaction read only;", TxOpen::ReadOnly),
            (
                "START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT",
                TxOpen::ReadOnly,
            ),
            (
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
                TxOpen::ReadOnly,
            ),
            ("START TRANSACTION READ WRITE", TxOpen::ReadWrite),
            ("START TRANSACTION READ ONLY, READ WRITE", TxOpen::ReadWrite),
            ("START TRANSACTION READ", TxOpen::None),
            ("START TRANSACTION READ ONLY WITH", TxOpen::None),
            ("START TRANSACTION READ ONLY; SELECT 1", TxOpen::None),
            ("SELECT 1; START TRANSACTION READ ONLY", TxOpen::None),
            ("BEGIN NOT ATOMIC SELECT 1; END", TxOpen::None),
            ("COMMIT", TxOpen::None),
            ("SET TRANSACTION READ ONLY", TxOpen::None),
            ("XA START 'x'", TxOpen::None),
            ("SELECT 1", TxOpen::None),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql.as_bytes()).tx, *want, "{sql}");
        }
    }

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for &(sql, kind, pins, hint) in CASES {
            let got = classify(sql.as_bytes());
            if (got.kind, got.pins_session, got.hint) != (kind, pins, hint) {
                failures.push(format!(
                    "{sql:?}: want ({kind:?}, pins={pins}, {hint:?}), got ({:?}, pins={}, {:?})",
                    got.kind, got.pins_session, got.hint
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(CASES.len() >= 80);
    }

    #[test]
    fn max_lag_hints() {
        let cases: &[(&str, Option<Duration>)] = &[
            (
                "/* rwproxy:max_lag=2s */ SELECT 1",
                Some(Duration::from_secs(2)),
            ),
            (
                "/* rwproxy:max_lag=500ms */ SELECT 1",
                Some(Duration::from_millis(500)),
            ),
            (
                "/* rwproxy:max_lag = 3S */ SELECT 1",
                Some(Duration::from_secs(3)),
            ),
            ("-- rwproxy:max_lag=0s\nSELECT 1", Some(Duration::ZERO)),
            (
                "/* rwproxy:max_lag=2s */ /* rwproxy:max_lag=100ms */ SELECT 1",
                Some(Duration::from_millis(100)),
            ),
            ("/* rwproxy:max_lag=2 */ SELECT 1", None),
            ("/* rwproxy:max_lag=s */ SELECT 1", None),
            ("/* rwproxy:max_lag=2min */ SELECT 1", None),
            (
                "/* rwproxy:max_lag=99999999999999999999999s */ SELECT 1",
                None,
            ),
        ];
        for &(sql, lag) in cases {
            let got = classify(sql.as_bytes());
            assert_eq!(got.max_lag, lag, "{sql:?}");
            assert_eq!(got.kind, StatementKind::Read, "{sql:?}");
        }
        let both = classify(b"/* rwproxy:replica */ /* rwproxy:max_lag=2s */ SELECT 1");
        assert_eq!(both.hint, Some(Hint::Replica));
        assert_eq!(both.max_lag, Some(Duration::from_secs(2)));
    }

    #[test]
    fn invalid_utf8_is_identifier_bytes() {
        let c = classify(b"SELECT \xff\xfe FROM t\xc3 WHERE a = '\x80'");
        assert_eq!(c.kind, StatementKind::Read);
        let c = classify(b"\xffSELECT 1");
        assert_eq!(c.kind, StatementKind::Write);
        let c = classify(b"UPDATE t SET a = '\xff\xff'");
        assert_eq!(c.kind, StatementKind::Write);
    }

    #[test]
    fn long_in_list() {
        let mut sql = String::from("SELECT c FROM sbtest1 WHERE id IN (");
        for i in 0..5000 {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&i.to_string());
        }
        sql.push(')');
        assert_eq!(classify(sql.as_bytes()).kind, StatementKind::Read);
        sql.push_str(" FOR UPDATE");
        assert_eq!(classify(sql.as_bytes()).kind, StatementKind::ReadPrimary);
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let depth = 10_000;
        let mut sql = "(".repeat(depth);
        sql.push_str("SELECT 1");
        sql.push_str(&")".repeat(depth));
        assert_eq!(classify(sql.as_bytes()).kind, StatementKind::Read);

        let mut sql = String::from("SELECT ");
        sql.push_str(&"(".repeat(depth));
        sql.push('1');
        sql.push_str(&")".repeat(depth));
        sql.push_str(" FOR UPDATE");
        assert_eq!(classify(sql.as_bytes()).kind, StatementKind::ReadPrimary);

        // Unbalanced either way: no panic, no underflow.
        let _ = classify("(".repeat(depth).as_bytes());
        let _ = classify(format!("SELECT 1{}", ")".repeat(depth)).as_bytes());
        let _ = classify("/*!".repeat(depth).as_bytes());
        let _ = classify("*/".repeat(depth).as_bytes());
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic xorshift so a failure reproduces.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Bytes biased towards the ones the lexer treats specially.
        const SPECIAL: &[u8] = b"'\"`\\/*!M-#@:=;()., \n\tx0e5SELECTFORUPDATE";
        let mut buf = Vec::new();
        for _ in 0..2_000 {
            buf.clear();
            let len = (next() % 64) as usize;
            for _ in 0..len {
                let r = next();
                buf.push(if r % 3 == 0 {
                    (r >> 8) as u8
                } else {
                    SPECIAL[(r >> 8) as usize % SPECIAL.len()]
                });
            }
            let _ = classify(&buf);
        }
        // One big blob (1 MiB): linear time, no panic.
        let blob: Vec<u8> = (0..1 << 20).map(|_| (next() >> 3) as u8).collect();
        let _ = classify(&blob);
    }

    #[test]
    fn commits() {
        for sql in [
            "COMMIT",
            "commit;",
            "/* x */ COMMIT WORK",
            " Commit work ; ",
            // Comments after it are comments (the old scanner said no).
            "COMMIT /* x */",
            "COMMIT; -- done",
        ] {
            assert!(is_plain_commit(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "COMMITTED",
            "COMMIT AND CHAIN",
            "COMMIT RELEASE",
            "ROLLBACK",
            "COMMIT; SELECT 1",
            "COMMIT;;",
            "COMMIT '",
            "",
        ] {
            assert!(!is_plain_commit(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn use_target_and_transaction_openers_are_carried() {
        let schema = |sql: &str| classify(sql.as_bytes()).schema(sql.as_bytes());
        assert_eq!(schema("USE app").as_deref(), Some("app"));
        assert_eq!(schema("use `my db`;").as_deref(), Some("my db"));
        assert_eq!(schema("  USE\tx  ").as_deref(), Some("x"));
        assert_eq!(schema("USE `a``b`").as_deref(), Some("a`b"));
        // The old `parse_use` missed these: a leading comment, a comment
        // or executable comment around the name.
        assert_eq!(schema("/* app */ USE app").as_deref(), Some("app"));
        assert_eq!(schema("USE app -- x").as_deref(), Some("app"));
        assert_eq!(schema("/*!USE app */").as_deref(), Some("app"));
        assert_eq!(schema("USE "), None);
        assert_eq!(schema("US"), None);
        assert_eq!(schema("USE a b"), None);
        assert_eq!(schema("SELECT 1"), None);
        assert_eq!(schema("USE a; SELECT 1"), None);

        let begins = |sql: &str| {
            let c = classify(sql.as_bytes());
            c.kind == Transaction && c.begins
        };
        for sql in [
            "BEGIN",
            "begin work",
            "/* app */ START TRANSACTION READ ONLY",
            "XA START 'x'",
            "BEGIN; SELECT 1",
            // An executable comment is code (the old `skip_comments`
            // skipped it and said no).
            "/*!BEGIN */",
            "--\tc\nBEGIN",
            // A leading empty statement does not hide it either.
            ";BEGIN",
        ] {
            assert!(begins(sql), "{sql}");
        }
        for sql in [
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT a",
            "SELECT 1; BEGIN",
            "COMMIT; BEGIN",
        ] {
            assert!(!begins(sql), "{sql}");
        }
        assert!(classify(b"SELECT @@socket").reads_socket);
        assert!(!classify(b"SELECT '@@socket'").reads_socket);
    }

    #[test]
    fn every_keyword_is_found() {
        for (len, table) in BY_LEN.iter().enumerate() {
            for e in *table {
                assert_eq!(e.name.len(), len);
                let (name, kw) = (e.name, e.kw);
                assert_eq!(keyword(name), kw, "{}", String::from_utf8_lossy(name));
                assert_eq!(keyword(&name.to_ascii_lowercase()), kw);
                assert!(name.iter().all(|&b| b.is_ascii_uppercase() || b == b'_'));
            }
        }
        assert_eq!(keyword(b"SELECTS"), Kw::Other);
        assert_eq!(keyword(b"_"), Kw::Other);
        // Folding merges `_` only with 0x7f, which never occurs in a word.
        assert!(!super::super::lex::is_ident(0x7f));
        assert!(!classify(b"SELECT GET\x7fLOCK('a')").pins_session);
        assert_eq!(keyword(b"last_insert_iD"), Kw::LastInsertId);
        assert_eq!(keyword(b"LAST_INSERT_IX"), Kw::Other);
        assert_eq!(keyword(b"SQL_CALC_FOUND_ROWz"), Kw::Other);
    }

    #[test]
    fn kill_and_connection_id_are_flagged() {
        let c = classify(b"KILL QUERY 42");
        assert!(c.kill && c.kind == Write);
        assert!(classify(b"SELECT 1; KILL 42").kill);
        assert!(!classify(b"SELECT 'KILL 42'").kill);
        assert!(classify(b"SELECT CONNECTION_ID()").connection_id);
        assert!(classify(b"INSERT INTO t VALUES (CONNECTION_ID())").connection_id);
        assert!(classify(b"SET @a = CONNECTION_ID()").connection_id);
        assert!(!classify(b"SELECT connection_id FROM t").connection_id);
        assert!(!classify(b"SELECT 'CONNECTION_ID()'").connection_id);
        // A routine's body runs later, on the server: not rewritten.
        assert!(!classify(b"CREATE PROCEDURE p() SELECT CONNECTION_ID()").connection_id);
        assert_eq!(classify(b"SELECT CONNECTION_ID()").kind, Read);
        assert!(!classify(b"SELECT IS_USED_LOCK('l') = CONNECTION_ID()").connection_id);
    }
}

#[cfg(test)]
mod server_state_tests {
    use super::*;
    use StatementKind::*;

    /// Reads of one server's own state: SQL in → kind out.
    #[test]
    fn server_state_reads_go_to_the_primary() {
        for (sql, kind) in [
            ("SELECT @@datadir", ReadPrimary),
            ("select @@DataDir, 1", ReadPrimary),
            ("SELECT @@hostname", ReadPrimary),
            ("SELECT @@server_id", ReadPrimary),
            ("SELECT @@global.sql_mode", ReadPrimary),
            ("SELECT @@GLOBAL.port", ReadPrimary),
            ("SELECT @@gtid_current_pos", ReadPrimary),
            ("SELECT @@session.sql_mode", Read),
            ("SELECT @@local.sql_mode", Read),
            ("SELECT @@sql_mode", Read),
            ("SELECT @@max_allowed_packet", Read),
            ("select @@version_comment limit 1", Read),
            ("SELECT @@port", Read),
            ("SELECT * FROM information_schema.PROCESSLIST", ReadPrimary),
            ("SELECT * FROM INFORMATION_SCHEMA.tables", ReadPrimary),
            ("SELECT * FROM `information_schema`.`TABLES`", ReadPrimary),
            ("SELECT * FROM performance_schema.threads", ReadPrimary),
            ("SELECT user FROM mysql.user", ReadPrimary),
            ("SELECT * FROM sys.session", ReadPrimary),
            (
                "SELECT a FROM t WHERE b IN (SELECT 1 FROM information_schema.ROUTINES)",
                ReadPrimary,
            ),
            ("SELECT 'information_schema.x'", Read),
            ("SELECT a FROM t /* mysql.user */", Read),
            // A qualifier, however spelled; only a qualifier.
            ("SELECT * FROM MySQL . user", ReadPrimary),
            ("SELECT * FROM `MySQL`.`user`", ReadPrimary),
            ("SELECT * FROM `sys` /* x */ .`session`", ReadPrimary),
            ("SELECT sys.f()", ReadPrimary),
            (
                "SELECT a FROM t WHERE x IN (SELECT 1 FROM `performance_schema`.`threads`)",
                ReadPrimary,
            ),
            ("SELECT sys, mysql FROM t AS information_schema", Read),
            ("SELECT `sys` FROM `mysql`", Read),
            (
                "SELECT `users`.`id` FROM `users` WHERE `mysqlx`.`a` = 1",
                Read,
            ),
            ("SELECT 1 FROM `information_schemas`.t", Read),
            // Not read by a read: already on the primary.
            ("INSERT INTO t SELECT * FROM mysql.user", Write),
            ("SHOW STATUS", ReadPrimary),
            ("SHOW GLOBAL STATUS LIKE 'Com_select'", ReadPrimary),
            ("SHOW VARIABLES LIKE 'datadir'", ReadPrimary),
            ("SHOW PROCESSLIST", ReadPrimary),
            ("SHOW FULL PROCESSLIST", ReadPrimary),
            ("SHOW ENGINE INNODB STATUS", ReadPrimary),
            ("SHOW ENGINES", ReadPrimary),
            ("SET @@global.x = 1", Set),
        ] {
            assert_eq!(classify(sql.as_bytes()).kind, kind, "{sql}");
        }
    }

    /// `word(` in a read: built-in or stored function?
    #[test]
    fn stored_function_calls_are_flagged() {
        for (sql, calls) in [
            ("SELECT f_log()", true),
            ("SELECT app.f_log()", true),
            ("SELECT `app`.`f_log`(1)", true),
            ("SELECT `f_log`(1)", true),
            ("SELECT a FROM t WHERE my_func(a) > 1", true),
            ("SELECT db.concat('a')", true),
            (
                "SELECT CONCAT(a, 'x'), COUNT(*), SUM(k) FROM t GROUP BY a",
                false,
            ),
            ("SELECT c FROM sbtest1 WHERE id=4242", false),
            (
                "SELECT a FROM t WHERE a IN (1,2) AND EXISTS (SELECT 1)",
                false,
            ),
            (
                "SELECT CAST(a AS DECIMAL(10,2)), CONVERT(b, CHAR(3)) FROM t",
                false,
            ),
            (
                "SELECT ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) FROM t",
                false,
            ),
            ("SELECT * FROM t USE INDEX (i) JOIN u USING (id)", false),
            (
                "SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (x INT PATH '$')) AS jt",
                false,
            ),
            ("SELECT ST_AsText(ST_GeomFromText('POINT(1 1)'))", false),
            ("SELECT DATE(now()), IF(1, 2, 3), NEXTVAL(s)", false),
            ("SELECT 'f_log()'", false),
            // Not reads: already on the primary, never flagged.
            ("INSERT INTO t VALUES (f_log())", false),
            ("DO f_log()", false),
            ("SELECT f_log() FOR UPDATE", false),
        ] {
            let c = classify(sql.as_bytes());
            assert_eq!(c.calls_functions, calls, "{sql}");
            if calls {
                assert_eq!(c.kind, Read, "{sql}");
            }
        }
    }

    /// The flag `scan` keeps per token and the list `stored_functions`
    /// builds from whole tokens agree on every read.
    #[test]
    fn the_flag_agrees_with_the_list() {
        for sql in [
            "SELECT COUNT(*) FROM t WHERE (a = 1) AND b IN (1, 2)",
            "SELECT f(1)",
            "SELECT app.f(1)",
            "SELECT `f`(1)",
            "SELECT `app`.`concat`(1)",
            "SELECT db.nextval(s)",
            "SELECT nextval(s), lastval(s)",
            "SELECT x.select(1)",
            "SELECT sys(1), mysql(2)",
            "SELECT mysql.f()",
            "SELECT db . concat (1)",
            "SELECT CONCAT (a, b), IFNULL(c, 0), DATE_FORMAT(d, '%Y')",
            "SELECT a FROM t WHERE EXISTS (SELECT 1) AND NOT (a) OR (b)",
            "SELECT CURRENT_TIMESTAMP(), JSON_ARRAY_APPEND(j, '$', 1)",
            "SELECT JSON_ARRAY_APPENX(j)",
            "SELECT @a := f(1)",
            "SELECT 1 FROM t WHERE id = ? AND (`t`.`x` IS NULL)",
        ] {
            let c = classify(sql.as_bytes());
            if c.kind == Read {
                assert_eq!(
                    c.calls_functions,
                    !stored_functions(sql.as_bytes()).is_empty(),
                    "{sql}"
                );
            }
        }
    }

    #[test]
    fn stored_functions_are_listed_with_their_schema() {
        let got = stored_functions(b"SELECT f(1), app.g(), `x y`.`h`(2), CONCAT('a'), t.c FROM t");
        assert_eq!(
            got,
            vec![
                (None, "f".to_string()),
                (Some("app".to_string()), "g".to_string()),
                (Some("x y".to_string()), "h".to_string()),
            ]
        );
    }

    #[test]
    fn dropped_schemas_are_read() {
        let d = |sql: &str| dropped_schema(sql.as_bytes());
        assert_eq!(d("DROP DATABASE d"), Some("d".into()));
        assert_eq!(d("drop schema if exists `a b`;"), Some("a b".into()));
        assert_eq!(d("DROP TABLE d"), None);
        assert_eq!(d("DROP DATABASE d; SELECT 1"), None);
        assert_eq!(d("SELECT 1"), None);
    }

    /// `CALL` goes to the primary and pins the session there.
    #[test]
    fn call_pins() {
        for sql in ["CALL p(1)", "call app.p", "CALL p(); SELECT 1"] {
            let c = classify(sql.as_bytes());
            assert_eq!((c.kind, c.pins_session), (Write, true), "{sql}");
        }
    }
}
