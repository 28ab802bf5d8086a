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
//! The same lexer (`Lexer`, crate-private) is used by [`super::set`] to take `SET`
//! statements apart.

use std::time::Duration;

/// What a statement is, as far as routing cares. Spelled in snake case in
/// the configuration (`[[rules]] kind = "read_primary"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    /// A plain read that any up-to-date server may answer (replica-eligible).
    Read,
    /// A read that must run on the primary: locking reads, `SELECT … INTO`,
    /// reads of per-connection results (`LAST_INSERT_ID()`, `FOUND_ROWS()`,
    /// `ROW_COUNT()`), sequences, `SQL_CALC_FOUND_ROWS`, `SHOW`.
    ReadPrimary,
    /// Writes, DDL, `CALL`, `LOAD DATA`, and anything unknown or unparseable.
    Write,
    /// `BEGIN`, `START TRANSACTION`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `XA …`.
    Transaction,
    /// A `SET` statement: see [`super::set::parse_set`] for what it sets.
    Set,
    /// `USE db`.
    Use,
}

/// A routing hint written in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// `/* rwproxy:primary */`
    Primary,
    /// `/* rwproxy:replica */`
    Replica,
}

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
            }
            pins |= one.pins;
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
    }
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
}

impl One {
    fn new(kind: StatementKind, pins: bool) -> Self {
        One {
            kind,
            pins,
            tx: TxOpen::None,
        }
    }

    fn opens(tx: TxOpen) -> Self {
        One {
            kind: StatementKind::Transaction,
            pins: false,
            tx,
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
                One::new(kind, s.pins || explain_into)
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
                    Some(_) => One::new(K::Transaction, false),
                }
            }
            Kw::Start => {
                if st.next_kw() == Kw::Transaction {
                    One::opens(start_characteristics(st))
                } else {
                    One::new(K::Write, false)
                }
            }
            Kw::Commit | Kw::Rollback | Kw::Savepoint | Kw::Xa => One::new(K::Transaction, false),
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
                    One::new(K::Write, s.pins)
                } else {
                    let s = scan(st, Mode::Set, false);
                    One::new(K::Set, s.pins)
                }
            }
            Kw::Use => One::new(K::Use, false),
            Kw::Show | Kw::Help => One::new(K::ReadPrimary, false),
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
            Kw::Insert | Kw::Update | Kw::Delete | Kw::Replace | Kw::Do | Kw::Call | Kw::Load => {
                let s = scan(st, Mode::Write, false);
                One::new(K::Write, s.pins)
            }
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
            Kw::Other if !analyze => Target::Done(K::Read),
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
    while let Some(t) = st.next() {
        let kw = match t.kind {
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
            TokenKind::Punct(b'(') => {
                match prev.call_effect() {
                    Call::Primary if read => s.primary = true,
                    Call::Lock => {
                        s.primary = true;
                        s.pins = true;
                    }
                    _ => {}
                }
                depth = depth.saturating_add(1);
            }
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            TokenKind::Assign if prev == Kw::AtVar && mode != Mode::Set => {
                s.primary = true;
                s.pins = true;
            }
            TokenKind::SysVar if read && is_primary_sysvar(t.text) => s.primary = true,
            TokenKind::Word if read => {
                match kw {
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

/// What calling a function (`NAME(`) means for routing.
#[derive(PartialEq, Eq)]
enum Call {
    /// An ordinary function.
    None,
    /// Reads a per-connection result or a sequence: primary.
    Primary,
    /// Takes or queries a named lock held by the connection: primary and pinned.
    Lock,
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
    Handler,
    Help,
    In,
    Insert,
    Into,
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
    kw(b"NOT", Kw::Not),
    kw(b"SET", Kw::Set),
    kw(b"USE", Kw::Use),
];
const KW4: KwTable = &[
    kw(b"CALL", Kw::Call),
    kw(b"DESC", Kw::Desc),
    kw(b"DROP", Kw::Drop),
    kw(b"HELP", Kw::Help),
    kw(b"INTO", Kw::Into),
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
const KW14: KwTable = &[kw(b"LAST_INSERT_ID", Kw::LastInsertId)];
const KW15: KwTable = &[
    kw(b"MASTER_POS_WAIT", Kw::MasterPosWait),
    kw(b"SOURCE_POS_WAIT", Kw::SourcePosWait),
];
const KW16: KwTable = &[kw(b"MASTER_GTID_WAIT", Kw::MasterGtidWait)];
const KW17: KwTable = &[kw(b"RELEASE_ALL_LOCKS", Kw::ReleaseAllLocks)];
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
    &[],
    KW14,
    KW15,
    KW16,
    KW17,
    &[],
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

// ---------------------------------------------------------------------------
// The lexer
// ---------------------------------------------------------------------------

/// The kinds of token the [`Lexer`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Keyword or unquoted identifier: ASCII letters, digits, `_`, `$` and
    /// any non-ASCII byte (so invalid UTF-8 is just part of a name).
    Word,
    /// Numeric literal: `12`, `1.5`, `1e-3`, `0x1F`, `0b101`.
    Number,
    /// `'…'` or `"…"`, quotes included, escapes left as written.
    Str,
    /// `` `…` ``, backticks included.
    QuotedIdent,
    /// `@name`, `@'name'`, `` @`name` ``, `@"name"`.
    UserVar,
    /// `@@name`, `@@session.name`, `@@global.name`…
    SysVar,
    /// `:=`
    Assign,
    /// Any other single byte: `(`, `)`, `,`, `;`, `=`, `.`, `-`…
    Punct(u8),
}

/// One token, borrowing its text from the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub(crate) kind: TokenKind,
    /// The token exactly as written.
    pub(crate) text: &'a [u8],
    /// Offset of the token's first byte in the statement.
    pub(crate) start: usize,
}

impl Token<'_> {
    /// Offset just past the token's last byte.
    pub(crate) fn end(&self) -> usize {
        self.start + self.text.len()
    }

    pub(crate) fn is_punct(&self, b: u8) -> bool {
        self.kind == TokenKind::Punct(b)
    }

    /// `=` or `:=`.
    pub(crate) fn is_assign(&self) -> bool {
        matches!(self.kind, TokenKind::Assign | TokenKind::Punct(b'='))
    }

    /// A word equal to `upper` ignoring ASCII case.
    pub(crate) fn is_word(&self, upper: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(upper.as_bytes())
    }

    #[inline]
    fn keyword(&self) -> Kw {
        if self.kind == TokenKind::Word {
            keyword(self.text)
        } else {
            Kw::NotWord
        }
    }
}

// Byte classes for the lexer's dispatch.
const C_OTHER: u8 = 0;
const C_SPACE: u8 = 1;
const C_WORD: u8 = 2;
const C_DIGIT: u8 = 3;

static CLASS: [u8; 256] = {
    let mut t = [C_OTHER; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            C_SPACE
        } else if b.is_ascii_digit() {
            C_DIGIT
        } else if b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b >= 0x80 {
            C_WORD
        } else {
            C_OTHER
        };
        i += 1;
    }
    t
};

/// A byte that may continue an unquoted identifier.
fn is_ident(b: u8) -> bool {
    CLASS[b as usize] >= C_WORD
}

/// Index of the first byte at or after `i` that does not continue an identifier.
fn ident_end(src: &[u8], mut i: usize) -> usize {
    while i < src.len() && is_ident(src[i]) {
        i += 1;
    }
    i
}

fn digits_end(src: &[u8], mut i: usize) -> usize {
    while i < src.len() && src[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// Splits SQL bytes into tokens, skipping whitespace and comments.
///
/// Executable comments (`/*! … */`, `/*!50110 … */`, `/*M! … */`) are code:
/// the opener (with its version digits) and the matching `*/` are skipped
/// and the content is lexed as SQL. Ordinary comments are checked for
/// `rwproxy:` hints. An unterminated string, quoted identifier or comment
/// ends the token stream with [`Lexer::error`] set.
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Executable comments currently open; their `*/` closes one.
    exec_depth: u32,
    /// The text cannot be lexed (unterminated string or comment).
    pub(crate) error: bool,
    /// Routing hint seen in a comment so far.
    pub(crate) hint: Option<Hint>,
    /// Smallest `max_lag` hint seen so far.
    pub(crate) max_lag: Option<Duration>,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a [u8]) -> Self {
        Lexer {
            src,
            pos: 0,
            exec_depth: 0,
            error: false,
            hint: None,
            max_lag: None,
        }
    }

    /// The next token, or `None` at the end of the text or on a lexing
    /// error (then [`Lexer::error`] is set).
    pub(crate) fn next_token(&mut self) -> Option<Token<'a>> {
        let src = self.src;
        loop {
            let start = self.pos;
            let Some(&b) = src.get(start) else {
                if self.exec_depth > 0 {
                    // An executable comment that never closes.
                    self.error = true;
                }
                return None;
            };
            match CLASS[b as usize] {
                C_SPACE => {
                    self.pos += 1;
                    continue;
                }
                C_WORD => {
                    let end = ident_end(src, start + 1);
                    return Some(self.token(TokenKind::Word, start, end));
                }
                C_DIGIT => return Some(self.number(start)),
                _ => {}
            }
            let next = src.get(start + 1).copied();
            match b {
                b'\'' | b'"' => return self.quoted(start, b, TokenKind::Str),
                b'`' => return self.quoted(start, b, TokenKind::QuotedIdent),
                b'#' => self.line_comment(start + 1),
                // `--` starts a comment only when followed by whitespace, a
                // control character or the end; `1--1` is arithmetic.
                b'-' if next == Some(b'-') && src.get(start + 2).is_none_or(|&c| c <= b' ') => {
                    self.line_comment(start + 2)
                }
                b'/' if next == Some(b'*') => {
                    if !self.block_comment(start) {
                        return None;
                    }
                }
                b'*' if next == Some(b'/') && self.exec_depth > 0 => {
                    self.exec_depth -= 1;
                    self.pos = start + 2;
                }
                b'@' => return Some(self.variable(start)),
                b':' if next == Some(b'=') => {
                    return Some(self.token(TokenKind::Assign, start, start + 2));
                }
                _ => return Some(self.token(TokenKind::Punct(b), start, start + 1)),
            }
        }
    }

    fn token(&mut self, kind: TokenKind, start: usize, end: usize) -> Token<'a> {
        self.pos = end;
        Token {
            kind,
            text: &self.src[start..end],
            start,
        }
    }

    fn fail(&mut self) {
        self.error = true;
        self.pos = self.src.len();
        self.exec_depth = 0;
    }

    /// A string or quoted identifier opened by `quote` at `start`. Doubled
    /// quotes escape a quote; in strings so does a backslash.
    fn quoted(&mut self, start: usize, quote: u8, kind: TokenKind) -> Option<Token<'a>> {
        let src = self.src;
        let escape = if quote == b'`' { quote } else { b'\\' };
        let mut i = start + 1;
        loop {
            i = find2(src, i, quote, escape);
            let Some(&c) = src.get(i) else {
                self.fail();
                return None;
            };
            if c == quote {
                if src.get(i + 1) == Some(&quote) {
                    i += 2;
                    continue;
                }
                return Some(self.token(kind, start, i + 1));
            }
            // A backslash: skip it and the byte it escapes.
            i += 2;
        }
    }

    /// A number at `start`. Something like `1abc` is a word (MySQL allows
    /// identifiers that start with digits).
    fn number(&mut self, start: usize) -> Token<'a> {
        let src = self.src;
        let mut i = digits_end(src, start);
        if i == start + 1 && src[start] == b'0' {
            // 0x1F, 0b101
            fn is_bin(c: &u8) -> bool {
                matches!(c, b'0' | b'1')
            }
            let radix_digit: Option<fn(&u8) -> bool> = match src.get(i) {
                Some(b'x' | b'X') => Some(u8::is_ascii_hexdigit),
                Some(b'b' | b'B') => Some(is_bin),
                _ => None,
            };
            if let Some(is_digit) = radix_digit {
                let mut j = i + 1;
                while j < src.len() && is_digit(&src[j]) {
                    j += 1;
                }
                if j > i + 1 && !src.get(j).is_some_and(|&c| is_ident(c)) {
                    return self.token(TokenKind::Number, start, j);
                }
            }
        }
        let mut plain = true;
        if src.get(i) == Some(&b'.') && src.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i = digits_end(src, i + 1);
            plain = false;
        }
        if matches!(src.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(src.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if src.get(j).is_some_and(u8::is_ascii_digit) {
                i = digits_end(src, j);
                plain = false;
            }
        }
        if plain && src.get(i).is_some_and(|&c| is_ident(c)) {
            let end = ident_end(src, i);
            return self.token(TokenKind::Word, start, end);
        }
        self.token(TokenKind::Number, start, i)
    }

    /// `@…` at `start`: a user variable, a system variable, or a lone `@`.
    fn variable(&mut self, start: usize) -> Token<'a> {
        let src = self.src;
        match src.get(start + 1) {
            Some(b'@') => {
                let mut i = start + 2;
                while i < src.len() && (is_ident(src[i]) || src[i] == b'.') {
                    i += 1;
                }
                if i > start + 2 {
                    return self.token(TokenKind::SysVar, start, i);
                }
            }
            Some(&q @ (b'\'' | b'"' | b'`')) => {
                if let Some(t) = self.quoted(start + 1, q, TokenKind::UserVar) {
                    return self.token(TokenKind::UserVar, start, t.end());
                }
                // Unterminated: `fail` has run; hand back the `@` and let
                // the next call report the end.
                return Token {
                    kind: TokenKind::Punct(b'@'),
                    text: &src[start..start + 1],
                    start,
                };
            }
            Some(&c) if is_ident(c) => {
                let end = ident_end(src, start + 1);
                return self.token(TokenKind::UserVar, start, end);
            }
            _ => {}
        }
        self.token(TokenKind::Punct(b'@'), start, start + 1)
    }

    /// A `#` or `-- ` comment whose text starts at `from`; runs to the end
    /// of the line.
    fn line_comment(&mut self, from: usize) {
        let src = self.src;
        let from = from.min(src.len());
        let end = src[from..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(src.len(), |p| from + p);
        self.note_comment(&src[from..end]);
        self.pos = (end + 1).min(src.len());
    }

    /// A `/*` comment at `start`. Returns false if it never ends.
    fn block_comment(&mut self, start: usize) -> bool {
        let src = self.src;
        let body = start + 2;
        let exec_body = match (src.get(body), src.get(body + 1)) {
            (Some(b'!'), _) => Some(body + 1),
            (Some(b'M'), Some(b'!')) => Some(body + 2),
            _ => None,
        };
        if let Some(mut i) = exec_body {
            // Version digits: 5 for MySQL (`50110`), 6 for MariaDB (`100100`).
            let limit = (i + 6).min(src.len());
            while i < limit && src[i].is_ascii_digit() {
                i += 1;
            }
            self.exec_depth = self.exec_depth.saturating_add(1);
            self.pos = i;
            return true;
        }
        match find_comment_end(src, body) {
            Some(end) => {
                self.note_comment(&src[body..end]);
                self.pos = end + 2;
                true
            }
            None => {
                self.fail();
                false
            }
        }
    }

    /// Records a `rwproxy:` hint if the comment holds one.
    fn note_comment(&mut self, content: &[u8]) {
        const PREFIX: &[u8] = b"rwproxy:";
        let c = content.trim_ascii();
        if c.len() < PREFIX.len() || !c[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
            return;
        }
        let rest = &c[PREFIX.len()..];
        if rest.eq_ignore_ascii_case(b"primary") {
            self.hint = Some(Hint::Primary);
        } else if rest.eq_ignore_ascii_case(b"replica") {
            if self.hint != Some(Hint::Primary) {
                self.hint = Some(Hint::Replica);
            }
        } else if let Some(lag) = parse_max_lag(rest) {
            self.max_lag = Some(self.max_lag.map_or(lag, |m| m.min(lag)));
        }
    }
}

/// Index of the first byte at or after `i` that is `a` or `b` (`src.len()`
/// if none). Strings are the longest tokens in typical statements, so this
/// looks at 8 bytes per step (SWAR, safe code): for `x = chunk ^ splat(a)`,
/// `(x - 0x01…) & !x & 0x80…` has the high bit set in the lowest byte where
/// `x` is zero, and no false positive below it.
fn find2(src: &[u8], mut i: usize, a: u8, b: u8) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let (sa, sb) = (LO * u64::from(a), LO * u64::from(b));
    while let Some(chunk) = src.get(i..).and_then(|s| s.first_chunk::<8>()) {
        let v = u64::from_le_bytes(*chunk);
        let (xa, xb) = (v ^ sa, v ^ sb);
        let hit = ((xa.wrapping_sub(LO) & !xa) | (xb.wrapping_sub(LO) & !xb)) & HI;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < src.len() && src[i] != a && src[i] != b {
        i += 1;
    }
    i.min(src.len())
}

/// Offset of the `*/` that closes a comment whose body starts at `from`.
fn find_comment_end(src: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < src.len() {
        // Step over bytes that cannot start `*/` without looking at pairs.
        match src[i..src.len() - 1].iter().position(|&c| c == b'*') {
            Some(p) => i += p,
            None => return None,
        }
        if src[i + 1] == b'/' {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `max_lag=<n>ms` or `max_lag=<n>s` (spaces around `=` allowed).
fn parse_max_lag(s: &[u8]) -> Option<Duration> {
    const KEY: &[u8] = b"max_lag";
    if s.len() < KEY.len() || !s[..KEY.len()].eq_ignore_ascii_case(KEY) {
        return None;
    }
    let s = s[KEY.len()..]
        .trim_ascii_start()
        .strip_prefix(b"=")?
        .trim_ascii_start();
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let unit = &s[digits..];
    if unit.eq_ignore_ascii_case(b"ms") {
        Some(Duration::from_millis(n))
    } else if unit.eq_ignore_ascii_case(b"s") {
        Some(Duration::from_secs(n))
    } else {
        None
    }
}
