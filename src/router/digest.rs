//! Query digests: statement text in, a normalized *digest text* and a 64-bit
//! *digest id* out, and a bounded store of per-digest statistics.
//!
//! [`normalize`] turns `SELECT c FROM sbtest1 WHERE id=50114` and
//! `select c  from sbtest1 where id = 7 -- x` into the same text,
//! `SELECT c FROM sbtest1 WHERE id = ?`, and the same id (FNV-1a of that
//! text). It is one pass over the tokens of [`super::lex`], the lexer the
//! classifier uses too, so both agree on comments, strings, executable
//! comments and identifiers. What is digest-specific is here: signs and
//! `.5` as part of a number where an operand is expected, literal
//! introducers (`X'1F'`, `_utf8mb4'a'`), which words are upper-cased, and
//! list collapsing. Unlike the classifier it keeps going over text that
//! does not lex (an unterminated string is one last literal).
//!
//! The digest text is canonical: tokens are separated by exactly one space
//! except around `.`, after `(`, before `)` `,` `;`, and between a function
//! or identifier and its `(`, so `id=5`, `id = 5` and `id =/* c */5` agree.
//!
//! [`DigestStore`] keeps, per digest id, how often it ran, how long it took
//! (total and max), rows, errors and which side ran it, in bounded memory:
//! see its doc for the eviction policy.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::lex::{Lexer, Mark, Token, TokenKind};

/// Longest digest text [`normalize`] produces, in bytes (including the
/// truncation mark). Callers that reuse one buffer should give it this
/// capacity so that normalizing never allocates.
pub const MAX_TEXT_LEN: usize = 1024;

/// Appended to a digest text that was cut at [`MAX_TEXT_LEN`].
const TRUNCATION_MARK: &str = "…";

/// Normalizes SQL into a digest text written to `out` (cleared first) and
/// returns its 64-bit digest id: [`digest_id`] of exactly that text, so
/// two statements share an id if and only if (barring 64-bit collisions)
/// they share a digest text.
///
/// - String, number, hex (`0x1F`, `X'1F'`), bit (`b'01'`) literals, charset
///   introduced strings (`_utf8mb4'a'`, `N'a'`) and `?` placeholders become
///   `?`; `NULL`, `TRUE`, `FALSE` are kept. A sign before a number where an
///   operand is expected (`id = -5`, `IN (-1, +2)`) is part of the literal.
/// - Whitespace and comments separate tokens and are otherwise dropped
///   (so are `rwproxy:` hints and `/*+ … */` optimizer hints); the content
///   of executable comments (`/*! … */`, `/*!50110 … */`, `/*M! … */`) is
///   SQL and is normalized like the rest.
/// - Keywords are upper-cased; identifiers (plain or back-quoted) are kept
///   as written. Known function names are upper-cased only when called
///   (`count(*)` → `COUNT(*)`, but a column named `count` stays). A word
///   right after or before `.` is always an identifier (`t.status`).
/// - `IN (…)` whose elements are all literals (any number, tuples of
///   literals included) becomes `IN (...)`; a `VALUES`/`VALUE` list of rows
///   of literals (or `DEFAULT`) becomes `VALUES (...)`. Lists holding
///   anything else (subqueries, columns, expressions) are kept.
/// - A trailing `;` is removed; `;` between statements is kept.
/// - The text is capped at [`MAX_TEXT_LEN`] bytes: what does not fit is
///   cut (on a character boundary), `…` is appended, and the id covers
///   only what was kept.
///
/// Invalid UTF-8 in identifiers is replaced by U+FFFD. Never panics, never
/// recurses (100,000 nested parentheses are just tokens), and does not
/// allocate when `out` already has [`MAX_TEXT_LEN`] bytes of capacity.
pub fn normalize(sql: &[u8], out: &mut String) -> u64 {
    // Built as bytes in `out`'s own buffer (no copy either way): only the
    // pieces that may not be UTF-8 (identifiers) are checked as they are
    // copied, and the result once at the end.
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    let mut n = Normalizer {
        src: sql,
        lx: Lexer::without_hints(sql),
        prev: Class::Start,
        list_kw: ListKw::None,
        semi: false,
        truncated: false,
        mode: Mode::Normal,
        no_collapse_at: usize::MAX,
        out: &mut buf,
    };
    n.run();
    let digest = digest_id(&buf);
    *out = match String::from_utf8(buf) {
        Ok(s) => s,
        // Unreachable: every piece written is UTF-8 and cuts fall on
        // character boundaries. Kept total rather than trusted.
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    digest
}

/// The digest id of a digest text: its 64-bit FNV-1a hash. Stable across
/// runs, builds and platforms, and simple enough for other tools to
/// compute from a logged digest text. (A word-at-a-time hash was measured
/// at 13 instead of 20 ns for a 36-byte text: not worth a non-standard id.)
pub fn digest_id(text: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------
// Lexer + emitter
// ---------------------------------------------------------------------------

/// What a token is, as far as spacing, signs and list collapsing care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Nothing emitted yet.
    Start,
    /// A plain identifier or a function name about to be called.
    Ident,
    /// A back-quoted identifier.
    QIdent,
    /// A keyword (other than the literal-like ones).
    Kw,
    /// A literal (`?`) or `NULL`/`TRUE`/`FALSE`.
    Lit,
    /// `@user` or `@@system` variable.
    Var,
    Open,
    Close,
    Comma,
    Dot,
    Semi,
    /// Any operator or other punctuation.
    Op,
}

impl Class {
    /// Whether a token of this class ends an operand, so that a following
    /// `-`/`+` is binary (`a - 5`) rather than a sign (`= -5`).
    fn ends_operand(self) -> bool {
        matches!(
            self,
            Class::Ident | Class::QIdent | Class::Lit | Class::Var | Class::Close | Class::Dot
        )
    }
}

/// Whether a space goes between a token of class `prev` and one of `cur`.
fn space_between(prev: Class, cur: Class) -> bool {
    let tight = matches!(
        (prev, cur),
        (Class::Start | Class::Open | Class::Dot, _)
            | (_, Class::Close | Class::Comma | Class::Dot | Class::Semi)
            // A call (`COUNT(*)`) or a column list (`t(a, b)`).
            | (Class::Ident | Class::QIdent, Class::Open)
    );
    !tight
}

/// Where a token's output text comes from.
#[derive(Debug, Clone, Copy)]
enum Text {
    Static(&'static str),
    /// A byte range of the source, copied (lossily if not UTF-8).
    Src(usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    class: Class,
    text: Text,
    /// Source offset where the token starts (to replay from it).
    start: usize,
    /// May be an element of a collapsed list: a literal, `NULL`, `TRUE`,
    /// `FALSE`, `DEFAULT`.
    collapsible: bool,
    /// `IN`, `VALUES` or `VALUE`: a `(` right after it may open a list.
    opens_list: ListKw,
}

/// The keyword before a `(` that may open a collapsible list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKw {
    None,
    /// `IN (…)`: one list.
    In,
    /// `VALUES (…), (…)`: rows.
    Values,
}

impl Tok {
    fn new(class: Class, text: Text, start: usize) -> Self {
        Tok {
            class,
            text,
            start,
            collapsible: false,
            opens_list: ListKw::None,
        }
    }

    fn lit(start: usize) -> Self {
        Tok {
            collapsible: true,
            ..Tok::new(Class::Lit, Text::Static("?"), start)
        }
    }
}

/// Lexer state to go back to when a list that looked collapsible turns out
/// not to be: the list is then lexed again, token by token.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    /// Source offset of the token the snapshot was taken at.
    pos: usize,
    lexer: Mark,
    prev: Class,
    list_kw: ListKw,
    semi: bool,
    out_len: usize,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Normal,
    /// Inside a list that is collapsed if it holds only literals; its
    /// tokens are not emitted.
    List {
        /// Parentheses opened inside the list (row constructors).
        depth: u32,
        /// Literals seen (an empty list is not collapsed).
        items: u32,
        /// The first row (whose `(` was emitted, and whose `)` emits
        /// `...)`), or a later `VALUES` row (which leaves no trace).
        first: bool,
        /// A `VALUES` list: more rows may follow.
        values: bool,
        snap: Snapshot,
    },
    /// After a collapsed `VALUES` row: a `,` may start another row.
    AfterRow,
    /// Saw `,` after a collapsed `VALUES` row; a `(` must follow.
    RowComma {
        snap: Snapshot,
    },
}

struct Normalizer<'a> {
    src: &'a [u8],
    lx: Lexer<'a>,
    /// Class of the last emitted token.
    prev: Class,
    /// The last emitted token was `IN`/`VALUES`/`VALUE`.
    list_kw: ListKw,
    /// A `;` is pending: written only if another token follows, so a
    /// trailing `;` disappears.
    semi: bool,
    /// The output is full; stop.
    truncated: bool,
    mode: Mode,
    /// Source offset of a list opener (or row comma) whose collapse was
    /// abandoned, so that its replay does not try again.
    no_collapse_at: usize,
    /// The digest text so far (UTF-8 by construction).
    out: &'a mut Vec<u8>,
}

impl Normalizer<'_> {
    fn run(&mut self) {
        while !self.truncated {
            let tok = self.next_tok();
            if let Mode::Normal = self.mode {
                match tok {
                    Some(t) => self.normal(t),
                    None => break,
                }
                continue;
            }
            match (self.mode, tok) {
                // (`Normal` is handled above; listed for exhaustiveness.)
                (Mode::Normal, None) | (Mode::AfterRow, None) => break,
                (Mode::Normal, Some(t)) => self.normal(t),
                (Mode::AfterRow, Some(t)) => {
                    if t.class == Class::Comma && t.start != self.no_collapse_at {
                        self.mode = Mode::RowComma {
                            snap: self.snapshot(t.start),
                        };
                    } else {
                        self.mode = Mode::Normal;
                        self.normal(t);
                    }
                }
                (Mode::RowComma { snap }, Some(t)) if t.class == Class::Open => {
                    self.mode = Mode::List {
                        depth: 0,
                        items: 0,
                        first: false,
                        values: true,
                        snap,
                    };
                }
                (Mode::RowComma { snap }, _) => self.abandon(snap),
                (
                    Mode::List {
                        depth,
                        items,
                        first,
                        values,
                        snap,
                    },
                    Some(t),
                ) => {
                    let (depth, items) = match t.class {
                        _ if t.collapsible => (depth, items.saturating_add(1)),
                        Class::Comma => (depth, items),
                        Class::Open => (depth.saturating_add(1), items),
                        Class::Close if depth > 0 => (depth - 1, items),
                        Class::Close if items > 0 => {
                            if first {
                                self.push(b"...)");
                                self.prev = Class::Close;
                                self.list_kw = ListKw::None;
                            }
                            self.mode = if values { Mode::AfterRow } else { Mode::Normal };
                            continue;
                        }
                        _ => {
                            self.abandon(snap);
                            continue;
                        }
                    };
                    self.mode = Mode::List {
                        depth,
                        items,
                        first,
                        values,
                        snap,
                    };
                }
                (Mode::List { snap, .. }, None) => self.abandon(snap),
            }
        }
    }

    /// Handles a token outside any list.
    // Forced inline: with the lexer's hot path inlined into `run`, LLVM
    // stopped inlining this (and the `emit` inside it), which cost ~8% of
    // the sysbench point select (perf, `benches/digest.rs`).
    #[inline(always)]
    fn normal(&mut self, t: Tok) {
        match t.class {
            Class::Semi => {
                if self.prev != Class::Start {
                    self.semi = true;
                }
                self.list_kw = ListKw::None;
            }
            Class::Open if self.list_kw != ListKw::None && t.start != self.no_collapse_at => {
                let snap = self.snapshot(t.start);
                let values = self.list_kw == ListKw::Values;
                self.emit(t);
                self.mode = Mode::List {
                    depth: 0,
                    items: 0,
                    first: true,
                    values,
                    snap,
                };
            }
            _ => self.emit(t),
        }
    }

    fn snapshot(&self, pos: usize) -> Snapshot {
        Snapshot {
            pos,
            lexer: self.lx.mark_at(pos),
            prev: self.prev,
            list_kw: self.list_kw,
            semi: self.semi,
            out_len: self.out.len(),
        }
    }

    /// Gives up collapsing: back to `snap`, to lex the list token by token.
    fn abandon(&mut self, snap: Snapshot) {
        self.lx.rewind(snap.lexer);
        self.prev = snap.prev;
        self.list_kw = snap.list_kw;
        self.semi = snap.semi;
        self.out.truncate(snap.out_len);
        self.no_collapse_at = snap.pos;
        self.mode = Mode::Normal;
    }

    // Inlined into its callers: 117 → 108 ns for the sysbench point
    // select (plain `#[inline]` is not taken).
    #[inline(always)]
    fn emit(&mut self, t: Tok) {
        if self.semi {
            self.semi = false;
            self.push(b";");
            self.prev = Class::Semi;
        }
        let space = space_between(self.prev, t.class);
        self.prev = t.class;
        self.list_kw = t.opens_list;
        let src = self.src;
        let text = match t.text {
            Text::Static(s) => s.as_bytes(),
            Text::Src(a, b) => {
                let bytes = src.get(a..b).unwrap_or_default();
                if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
                    if space {
                        self.push(b" ");
                    }
                    for chunk in bytes.utf8_chunks() {
                        self.push(chunk.valid().as_bytes());
                        if !chunk.invalid().is_empty() {
                            self.push("\u{FFFD}".as_bytes());
                        }
                    }
                    return;
                }
                bytes
            }
        };
        // The common case, with one bounds check for space and token.
        if self.out.len() + usize::from(space) + text.len() <= MAX_TEXT_LEN && !self.truncated {
            if space {
                self.out.push(b' ');
            }
            self.out.extend_from_slice(text);
        } else {
            if space {
                self.push(b" ");
            }
            self.push(text);
        }
    }

    /// Appends UTF-8 bytes to the output, or cuts it at [`MAX_TEXT_LEN`]
    /// (on a character boundary) and marks it.
    fn push(&mut self, s: &[u8]) {
        if self.truncated {
            return;
        }
        if self.out.len() + s.len() <= MAX_TEXT_LEN {
            self.out.extend_from_slice(s);
            return;
        }
        let room = MAX_TEXT_LEN - TRUNCATION_MARK.len();
        if self.out.len() < room {
            let mut take = room - self.out.len();
            while !is_char_start(s, take) {
                take -= 1;
            }
            self.out.extend_from_slice(&s[..take]);
        } else {
            let mut keep = room;
            while !is_char_start(self.out, keep) {
                keep -= 1;
            }
            self.out.truncate(keep);
        }
        self.out.extend_from_slice(TRUNCATION_MARK.as_bytes());
        self.truncated = true;
    }

    /// The next token, skipping whitespace and comments; `None` at the end.
    #[inline(always)]
    fn next_tok(&mut self) -> Option<Tok> {
        let t = self.lx.next_token()?;
        let start = t.start;
        let src = self.src;
        Some(match t.kind {
            TokenKind::Word => self.word(t),
            TokenKind::Number | TokenKind::Str | TokenKind::Punct(b'?') => Tok::lit(start),
            TokenKind::QuotedIdent => Tok::new(Class::QIdent, Text::Src(start, t.end()), start),
            TokenKind::UserVar | TokenKind::SysVar => {
                Tok::new(Class::Var, Text::Src(start, t.end()), start)
            }
            TokenKind::Punct(b'@') => {
                // A nameless `@@` is one variable-like token here.
                let end = if src.get(start + 1) == Some(&b'@') {
                    self.lx.rewind(self.lx.mark_at(start + 2));
                    start + 2
                } else {
                    start + 1
                };
                Tok::new(Class::Var, Text::Src(start, end), start)
            }
            TokenKind::Punct(b'(') => Tok::new(Class::Open, Text::Src(start, start + 1), start),
            TokenKind::Punct(b')') => Tok::new(Class::Close, Text::Src(start, start + 1), start),
            TokenKind::Punct(b',') => Tok::new(Class::Comma, Text::Src(start, start + 1), start),
            TokenKind::Punct(b';') => Tok::new(Class::Semi, Text::Src(start, start + 1), start),
            TokenKind::Punct(b'.') => {
                // `.5` where an operand is expected is a number; after
                // one (`t.5x`) it qualifies a name.
                if src.get(start + 1).is_some_and(u8::is_ascii_digit) && !self.prev.ends_operand() {
                    let n = self.lx.number_at(start);
                    if n.kind == TokenKind::Number {
                        return Some(Tok::lit(start));
                    }
                    return Some(Tok::new(Class::Ident, Text::Src(n.start, n.end()), n.start));
                }
                Tok::new(Class::Dot, Text::Src(start, start + 1), start)
            }
            TokenKind::Punct(b'-' | b'+') if !self.prev.ends_operand() => {
                // A sign, if a number follows (spaces allowed between).
                let mut j = start + 1;
                while src.get(j).is_some_and(|&c| c == b' ' || c == b'\t') {
                    j += 1;
                }
                let starts_number = match src.get(j) {
                    Some(c) if c.is_ascii_digit() => true,
                    Some(b'.') => src.get(j + 1).is_some_and(u8::is_ascii_digit),
                    _ => false,
                };
                if starts_number {
                    let back = self.lx.mark();
                    if self.lx.number_at(j).kind == TokenKind::Number {
                        return Some(Tok::lit(start));
                    }
                    self.lx.rewind(back);
                }
                Tok::new(Class::Op, Text::Src(start, start + 1), start)
            }
            TokenKind::Punct(_) | TokenKind::Op | TokenKind::Assign => {
                Tok::new(Class::Op, Text::Src(start, t.end()), start)
            }
        })
    }

    /// A word: keyword, function name, identifier, or the introducer of
    /// a literal (`X'1F'`, `b'01'`, `N'a'`, `_utf8mb4'a'`).
    fn word(&mut self, t: Token<'_>) -> Tok {
        let src = self.src;
        let (start, end) = (t.start, t.end());
        let len = end - start;
        match src.get(end) {
            Some(b'\'')
                if len == 1 && matches!(src[start], b'x' | b'X' | b'b' | b'B' | b'n' | b'N') =>
            {
                self.lx.next_token();
                return Tok::lit(start);
            }
            Some(b'\'' | b'"') if src[start] == b'_' => {
                self.lx.next_token();
                return Tok::lit(start);
            }
            _ => {}
        }
        let ident = Tok::new(Class::Ident, Text::Src(start, end), start);
        // Qualified names are identifiers whatever they spell.
        if len > KW_MAX || self.prev == Class::Dot || src.get(end) == Some(&b'.') {
            return ident;
        }
        let Some(&(name, flags)) = kw_lookup(src, start, end) else {
            return ident;
        };
        if flags & F != 0 && next_is_open_paren(src, end) {
            return Tok::new(Class::Ident, Text::Static(name), start);
        }
        if flags & K == 0 {
            return ident;
        }
        let class = if flags & LIT != 0 {
            Class::Lit
        } else {
            Class::Kw
        };
        Tok {
            collapsible: flags & (LIT | COLL) != 0,
            opens_list: match (flags & LIST != 0, flags & ROWS != 0) {
                (_, true) => ListKw::Values,
                (true, false) => ListKw::In,
                (false, false) => ListKw::None,
            },
            ..Tok::new(class, Text::Static(name), start)
        }
    }
}

/// Whether a UTF-8 text may be cut before byte `i` (not inside a character).
fn is_char_start(s: &[u8], i: usize) -> bool {
    s.get(i).is_none_or(|&b| !(0x80..0xc0).contains(&b))
}

/// Whether the next non-blank byte at or after `i` is `(`.
fn next_is_open_paren(src: &[u8], mut i: usize) -> bool {
    while let Some(&c) = src.get(i) {
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => return true,
            _ => return false,
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Keywords
// ---------------------------------------------------------------------------

/// Always upper-cased (reserved words, which cannot be unquoted
/// identifiers, and statement words that rarely are).
const K: u8 = 1;
/// Upper-cased when called: followed by `(` it is a function (written
/// `NAME(`); otherwise, unless also `K`, an identifier kept as written.
const F: u8 = 2;
/// A literal kept in the text (`NULL`, `TRUE`, `FALSE`).
const LIT: u8 = 4;
/// May stand for a value in a collapsed `VALUES` row (`DEFAULT`).
const COLL: u8 = 8;
/// A `(` after it may open a collapsible list (`IN`).
const LIST: u8 = 16;
/// A `(` after it may open collapsible rows (`VALUES`, `VALUE`).
const ROWS: u8 = 32;
const KF: u8 = K | F;

/// Longest keyword, in bytes.
const KW_MAX: usize = 32;

#[rustfmt::skip]
const KEYWORDS: &[(&str, u8)] = &[
    // Reserved words (MySQL 8 / MariaDB).
    ("ACCESSIBLE", K), ("ADD", K), ("ALL", K), ("ALTER", K), ("ANALYZE", K), ("AND", K),
    ("AS", K), ("ASC", K), ("ASENSITIVE", K), ("BEFORE", K), ("BETWEEN", K), ("BIGINT", KF),
    ("BINARY", KF), ("BLOB", KF), ("BOTH", K), ("BY", K), ("CALL", K), ("CASCADE", K),
    ("CASE", K), ("CHANGE", K), ("CHAR", KF), ("CHARACTER", KF), ("CHECK", K), ("COLLATE", K),
    ("COLUMN", K), ("CONDITION", K), ("CONSTRAINT", K), ("CONTINUE", K), ("CONVERT", KF),
    ("CREATE", K), ("CROSS", K), ("CUBE", K), ("CUME_DIST", KF), ("CURRENT_DATE", KF),
    ("CURRENT_TIME", KF), ("CURRENT_TIMESTAMP", KF), ("CURRENT_USER", KF), ("CURSOR", K),
    ("DATABASE", KF), ("DATABASES", K), ("DAY_HOUR", K), ("DAY_MICROSECOND", K),
    ("DAY_MINUTE", K), ("DAY_SECOND", K), ("DEC", KF), ("DECIMAL", KF), ("DECLARE", K),
    ("DEFAULT", KF | COLL), ("DELAYED", K), ("DELETE", K), ("DENSE_RANK", KF), ("DESC", K),
    ("DESCRIBE", K), ("DETERMINISTIC", K), ("DISTINCT", K), ("DISTINCTROW", K), ("DIV", K),
    ("DOUBLE", KF), ("DROP", K), ("DUAL", K), ("EACH", K), ("ELSE", K), ("ELSEIF", K),
    ("EMPTY", K), ("ENCLOSED", K), ("ESCAPED", K), ("EXCEPT", K), ("EXISTS", K), ("EXIT", K),
    ("EXPLAIN", K), ("FALSE", K | LIT), ("FETCH", K), ("FIRST_VALUE", KF), ("FLOAT", KF),
    ("FLOAT4", KF), ("FLOAT8", KF), ("FOR", K), ("FORCE", K), ("FOREIGN", K), ("FROM", K),
    ("FULLTEXT", K), ("FUNCTION", K), ("GENERATED", K), ("GET", K), ("GRANT", K),
    ("GROUP", K), ("GROUPING", KF), ("GROUPS", K), ("HAVING", K), ("HIGH_PRIORITY", K),
    ("HOUR_MICROSECOND", K), ("HOUR_MINUTE", K), ("HOUR_SECOND", K), ("IF", KF),
    ("IGNORE", K), ("IN", K | LIST), ("INDEX", K), ("INFILE", K), ("INNER", K), ("INOUT", K),
    ("INSENSITIVE", K), ("INSERT", KF), ("INT", KF), ("INT1", KF), ("INT2", KF), ("INT3", KF),
    ("INT4", KF), ("INT8", KF), ("INTEGER", KF), ("INTERSECT", K), ("INTERVAL", KF),
    ("INTO", K), ("IO_AFTER_GTIDS", K), ("IO_BEFORE_GTIDS", K), ("IS", K), ("ITERATE", K),
    ("JOIN", K), ("JSON_TABLE", KF), ("KEY", K), ("KEYS", K), ("KILL", K), ("LAG", KF),
    ("LAST_VALUE", KF), ("LATERAL", K), ("LEAD", KF), ("LEADING", K), ("LEAVE", K),
    ("LEFT", KF), ("LIKE", K), ("LIMIT", K), ("LINEAR", K), ("LINES", K), ("LOAD", K),
    ("LOCALTIME", KF), ("LOCALTIMESTAMP", KF), ("LOCK", K), ("LONG", K), ("LONGBLOB", K),
    ("LONGTEXT", K), ("LOOP", K), ("LOW_PRIORITY", K), ("MASTER_BIND", K),
    ("MASTER_SSL_VERIFY_SERVER_CERT", K), ("MATCH", KF), ("MAXVALUE", K), ("MEDIUMBLOB", K),
    ("MEDIUMINT", KF), ("MEDIUMTEXT", K), ("MIDDLEINT", KF), ("MINUTE_MICROSECOND", K),
    ("MINUTE_SECOND", K), ("MOD", KF), ("MODIFIES", K), ("NATURAL", K), ("NOT", K),
    ("NO_WRITE_TO_BINLOG", K), ("NTH_VALUE", KF), ("NTILE", KF), ("NULL", K | LIT),
    ("NUMERIC", KF), ("OF", K), ("ON", K), ("OPTIMIZE", K), ("OPTIMIZER_COSTS", K),
    ("OPTION", K), ("OPTIONALLY", K), ("OR", K), ("ORDER", K), ("OUT", K), ("OUTER", K),
    ("OUTFILE", K), ("OVER", K), ("PARTITION", K), ("PERCENT_RANK", KF), ("PRECISION", K),
    ("PRIMARY", K), ("PROCEDURE", K), ("PURGE", K), ("RANGE", K), ("RANK", KF), ("READ", K),
    ("READS", K), ("READ_WRITE", K), ("REAL", KF), ("RECURSIVE", K), ("REFERENCES", K),
    ("REGEXP", K), ("RELEASE", K), ("RENAME", K), ("REPEAT", KF), ("REPLACE", KF),
    ("REQUIRE", K), ("RESIGNAL", K), ("RESTRICT", K), ("RETURN", K), ("RETURNING", K),
    ("REVOKE", K), ("RIGHT", KF), ("RLIKE", K), ("ROW", KF), ("ROWS", K), ("ROW_NUMBER", KF),
    ("SCHEMA", KF), ("SCHEMAS", K), ("SECOND_MICROSECOND", K), ("SELECT", K),
    ("SENSITIVE", K), ("SEPARATOR", K), ("SET", K), ("SHOW", K), ("SIGNAL", K),
    ("SMALLINT", KF), ("SPATIAL", K), ("SPECIFIC", K), ("SQL", K), ("SQLEXCEPTION", K),
    ("SQLSTATE", K), ("SQLWARNING", K), ("SQL_BIG_RESULT", K), ("SQL_CALC_FOUND_ROWS", K),
    ("SQL_SMALL_RESULT", K), ("SSL", K), ("STARTING", K), ("STORED", K),
    ("STRAIGHT_JOIN", K), ("SYSTEM", K), ("TABLE", K), ("TERMINATED", K), ("THEN", K),
    ("TINYBLOB", K), ("TINYINT", KF), ("TINYTEXT", K), ("TO", K), ("TRAILING", K),
    ("TRIGGER", K), ("TRUE", K | LIT), ("UNDO", K), ("UNION", K), ("UNIQUE", K),
    ("UNLOCK", K), ("UNSIGNED", K), ("UPDATE", K), ("USAGE", K), ("USE", K), ("USING", K),
    ("UTC_DATE", KF), ("UTC_TIME", KF), ("UTC_TIMESTAMP", KF), ("VALUES", K | ROWS),
    ("VARBINARY", KF), ("VARCHAR", KF), ("VARCHARACTER", KF), ("VARYING", K), ("VIRTUAL", K),
    ("WHEN", K), ("WHERE", K), ("WHILE", K), ("WINDOW", K), ("WITH", K), ("WRITE", K),
    ("XOR", K), ("YEAR_MONTH", K), ("ZEROFILL", K),
    // Statement words that are not reserved but are rarely identifiers.
    ("ANY", K), ("BEGIN", K), ("COMMIT", K), ("COMMITTED", K), ("COLUMNS", K),
    ("DEALLOCATE", K), ("DO", K), ("DUPLICATE", K), ("END", K), ("ESCAPE", K),
    ("EXECUTE", K), ("FIELDS", K), ("FLUSH", K), ("FOLLOWING", K), ("GLOBAL", K),
    ("ISOLATION", K), ("LOCKED", K), ("MODE", K), ("NAMES", K), ("NOWAIT", K),
    ("OFFSET", K), ("PRECEDING", K), ("PREPARE", K), ("REPEATABLE", K), ("ROLLBACK", K),
    ("SAVEPOINT", K), ("SERIALIZABLE", K), ("SESSION", K), ("SHARE", K), ("SKIP", K),
    ("SOME", K), ("START", K), ("TABLES", K), ("TEMPORARY", K), ("TRANSACTION", K),
    ("TRUNCATE", KF), ("UNBOUNDED", K), ("UNCOMMITTED", K), ("VALUE", K | ROWS),
    ("VARIABLES", K), ("VIEW", K), ("WARNINGS", K), ("WORK", K), ("XA", K),
    // Functions (upper-cased only when called).
    ("ABS", F), ("AES_DECRYPT", F), ("AES_ENCRYPT", F), ("ANY_VALUE", F), ("AVG", F),
    ("BENCHMARK", F), ("BIT_AND", F), ("BIT_COUNT", F), ("BIT_OR", F), ("BIT_XOR", F),
    ("CAST", F), ("CEIL", F), ("CEILING", F), ("CHARACTER_LENGTH", F), ("CHAR_LENGTH", F),
    ("COALESCE", F), ("CONCAT", F), ("CONCAT_WS", F), ("CONNECTION_ID", F), ("CONV", F),
    ("COUNT", F), ("CRC32", F), ("CURDATE", F), ("CURTIME", F), ("DATE", F),
    ("DATEDIFF", F), ("DATE_ADD", F), ("DATE_FORMAT", F), ("DATE_SUB", F), ("DAY", F),
    ("DAYOFWEEK", F), ("EXTRACT", F), ("FIELD", F), ("FIND_IN_SET", F), ("FLOOR", F),
    ("FORMAT", F), ("FOUND_ROWS", F), ("FROM_BASE64", F), ("FROM_UNIXTIME", F),
    ("GET_LOCK", F), ("GREATEST", F), ("GROUP_CONCAT", F), ("HEX", F), ("HOUR", F),
    ("IFNULL", F), ("INET_ATON", F), ("INET_NTOA", F), ("INSTR", F), ("IS_FREE_LOCK", F),
    ("JSON_ARRAY", F), ("JSON_CONTAINS", F), ("JSON_EXTRACT", F), ("JSON_LENGTH", F),
    ("JSON_OBJECT", F), ("JSON_SET", F), ("JSON_UNQUOTE", F), ("LASTVAL", F),
    ("LAST_INSERT_ID", F), ("LCASE", F), ("LEAST", F), ("LENGTH", F), ("LOCATE", F),
    ("LOWER", F), ("LPAD", F), ("LTRIM", F), ("MAX", F), ("MD5", F), ("MIN", F),
    ("MINUTE", F), ("MONTH", F), ("NEXTVAL", F), ("NOW", F), ("NULLIF", F), ("POSITION", F),
    ("RAND", F), ("RELEASE_LOCK", F), ("REVERSE", F), ("ROUND", F), ("ROW_COUNT", F),
    ("RPAD", F), ("RTRIM", F), ("SECOND", F), ("SHA1", F), ("SHA2", F), ("SLEEP", F),
    ("STD", F), ("STDDEV", F), ("STR_TO_DATE", F), ("SUBSTR", F), ("SUBSTRING", F),
    ("SUBSTRING_INDEX", F), ("SUM", F), ("SYSDATE", F), ("TIME", F), ("TIMESTAMP", F),
    ("TIMESTAMPADD", F), ("TIMESTAMPDIFF", F), ("TO_BASE64", F), ("TRIM", F), ("UCASE", F),
    ("UNHEX", F), ("UNIX_TIMESTAMP", F), ("UPPER", F), ("USER", F), ("UUID", F),
    ("UUID_SHORT", F), ("VARIANCE", F), ("VERSION", F), ("WEEK", F), ("YEAR", F),
];

/// Open-addressing table of indexes into [`KEYWORDS`] (+1; 0 is empty),
/// built at compile time. A word is looked up with one hash of at most two
/// 8-byte loads (its first and last 8 bytes, and its length) and usually
/// one comparison, instead of a per-byte hash computed while scanning.
const KW_BITS: u32 = 11;
const KW_SLOTS: usize = 1 << KW_BITS;
static KW_TABLE: [u16; KW_SLOTS] = build_kw_table();

/// `& 0xDF` on every byte upper-cases ASCII letters and moves the other
/// identifier bytes (digits, `_`, `$`) to values no letter has, and keeps
/// non-ASCII bytes non-ASCII: two identifiers are equal ignoring ASCII
/// case exactly when their folded bytes are equal.
const FOLD: u64 = 0xDFDF_DFDF_DFDF_DFDF;

/// Each keyword's folded first and last 8 bytes (see [`kw_words`]): for
/// keywords of at most 16 bytes the two words cover every byte, so a match
/// is two integer comparisons.
static KW_FOLDED: [(u64, u64); KEYWORDS.len()] = {
    let mut t = [(0u64, 0u64); KEYWORDS.len()];
    let mut k = 0;
    while k < KEYWORDS.len() {
        t[k] = kw_words(KEYWORDS[k].0.as_bytes());
        k += 1;
    }
    t
};

/// Hash of a word from its folded first 8 bytes `head` (zero-padded),
/// last 8 bytes `tail` (0 if it is at most 8 long), and length.
const fn kw_hash(head: u64, tail: u64, len: usize) -> usize {
    let h = (head ^ tail.rotate_left(29) ^ len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - KW_BITS)) as usize
}

/// A word's folded first 8 bytes (zero-padded) and last 8 bytes (0 if it
/// is at most 8 long), byte by byte (for the compile-time tables).
const fn kw_words(word: &[u8]) -> (u64, u64) {
    let len = word.len();
    let (mut head, mut tail) = (0u64, 0u64);
    let mut i = 0;
    while i < 8 && i < len {
        head |= ((word[i] & 0xDF) as u64) << (8 * i);
        i += 1;
    }
    if len > 8 {
        let mut i = 0;
        while i < 8 {
            tail |= ((word[len - 8 + i] & 0xDF) as u64) << (8 * i);
            i += 1;
        }
    }
    (head, tail)
}

const fn build_kw_table() -> [u16; KW_SLOTS] {
    let mut table = [0u16; KW_SLOTS];
    let mut k = 0;
    while k < KEYWORDS.len() {
        let name = KEYWORDS[k].0.as_bytes();
        let (head, tail) = kw_words(name);
        let mut slot = kw_hash(head, tail, name.len());
        while table[slot] != 0 {
            slot = (slot + 1) & (KW_SLOTS - 1);
        }
        table[slot] = (k + 1) as u16;
        k += 1;
    }
    table
}

/// The keyword spelled (in any case) by `src[start..end]`, a word of at
/// most [`KW_MAX`] bytes.
fn kw_lookup(src: &[u8], start: usize, end: usize) -> Option<&'static (&'static str, u8)> {
    let word = &src[start..end];
    let len = word.len();
    let head = match src.get(start..start + 8) {
        // Load 8 bytes at once and keep the word's own.
        Some(w) if len < 8 => load8(w) & (u64::MAX >> (8 * (8 - len))),
        Some(w) => load8(w),
        None => {
            let mut b = [0u8; 8];
            b[..len.min(8)].copy_from_slice(&word[..len.min(8)]);
            u64::from_le_bytes(b)
        }
    };
    let tail = if len > 8 { load8(&word[len - 8..]) } else { 0 };
    let (head, tail) = (head & FOLD, tail & FOLD);
    let mut slot = kw_hash(head, tail, len);
    loop {
        let k = usize::from(KW_TABLE[slot]);
        if k == 0 {
            return None;
        }
        let entry = &KEYWORDS[k - 1];
        if entry.0.len() == len
            && KW_FOLDED[k - 1] == (head, tail)
            && (len <= 16 || entry.0.as_bytes().eq_ignore_ascii_case(word))
        {
            return Some(entry);
        }
        slot = (slot + 1) & (KW_SLOTS - 1);
    }
}

/// The first 8 bytes of `b` (which has at least 8), little-endian.
fn load8(b: &[u8]) -> u64 {
    b.first_chunk::<8>().map_or(0, |c| u64::from_le_bytes(*c))
}

// ---------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------

/// What the proxy knows about one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestStats {
    /// The digest id ([`normalize`]'s return value).
    pub digest: u64,
    /// The digest text (as normalized when the digest was first seen).
    pub text: String,
    /// Statements run.
    pub count: u64,
    /// Statements that ended in an error.
    pub errors: u64,
    /// Rows returned or affected, summed.
    pub rows: u64,
    /// Time from sending the statement to its last response byte, summed.
    pub total: Duration,
    /// The slowest run.
    pub max: Duration,
    /// Runs on the primary (writes, pinned sessions, fallbacks).
    pub primary: u64,
    /// Runs on a replica.
    pub replica: u64,
    /// When it last ran; also the eviction order.
    pub last_seen: Instant,
}

/// Per-digest statistics for the busiest digests, in bounded memory.
///
/// Thread-safe: the digests are split over up to 16 shards (by the digest
/// id's low bits), each a `Mutex` around a map and two intrusive lists, so
/// sessions on different worker threads rarely wait for each other (see
/// `benches/digest.rs` for one shard against 16 under contention). A
/// capacity below 512 uses a single shard.
///
/// Eviction is a *segmented LRU* per shard, O(1) per record: a new digest
/// enters a *probation* segment; a digest seen again moves to a
/// *protected* segment (at most 80% of the shard). When the shard is full,
/// the least-recently-seen probation digest is evicted (the
/// least-recently-seen protected one if probation is empty); when
/// protected overflows, its least-recently-seen digest drops back to
/// probation. A flood of one-off statements (a client that inlines
/// unique identifiers, a migration) therefore churns only probation and
/// cannot push out digests that run repeatedly. Because each shard evicts
/// on its own, the policy is approximate across the whole store: the
/// victim is the LRU entry of the shard the new digest falls into.
///
/// An evicted digest's statistics are lost; if it comes back it starts from
/// zero. Evicted entries' text buffers are reused, so once the store is
/// full a new digest allocates only if its text is longer than the
/// victim's.
pub struct DigestStore {
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
}

impl std::fmt::Debug for DigestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestStore")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .field("len", &self.len())
            .finish()
    }
}

impl DigestStore {
    /// A store of at most `capacity` digests (0 disables recording).
    pub fn new(capacity: usize) -> Self {
        // At least 256 digests per shard so that per-shard eviction stays
        // close to global LRU; at most 16 shards (enough to make lock
        // contention negligible, see the bench).
        let want = (capacity / 256).clamp(1, 16);
        let shards = 1 << (usize::BITS - 1 - want.leading_zeros());
        Self::with_shards(capacity, shards)
    }

    /// A store of at most `capacity` digests over `shards` shards (at most
    /// `capacity` of them, so that none is empty, rounded down to a power of
    /// two, at least 1). For tuning and benchmarks; [`DigestStore::new`]
    /// picks a sensible count.
    pub fn with_shards(capacity: usize, shards: usize) -> Self {
        let want = shards.min(capacity).clamp(1, 1 << 16);
        let n = 1usize << (usize::BITS - 1 - want.leading_zeros());
        // Shards index their entries with u32 and reserve u32::MAX.
        let per_shard_max = (u32::MAX - 1) as usize;
        let shards = (0..n)
            .map(|i| {
                let cap = capacity / n + usize::from(i < capacity % n);
                Mutex::new(Shard::new(cap.min(per_shard_max)))
            })
            .collect();
        DigestStore { shards, capacity }
    }

    /// The most digests the store keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Accounts one statement run. `normalized` is the digest text
    /// (`normalize`'s output); it is copied only when `digest` is new.
    pub fn record(
        &self,
        digest: u64,
        normalized: &str,
        took: Duration,
        rows: u64,
        error: bool,
        on_primary: bool,
    ) {
        self.record_at(
            digest,
            normalized,
            took,
            rows,
            error,
            on_primary,
            Instant::now(),
        );
    }

    /// [`DigestStore::record`] with the caller's clock reading for "last
    /// seen" (the data path already has one; reading the clock is not free).
    #[allow(clippy::too_many_arguments)]
    pub fn record_at(
        &self,
        digest: u64,
        normalized: &str,
        took: Duration,
        rows: u64,
        error: bool,
        on_primary: bool,
        now: Instant,
    ) {
        let shard = &self.shards[digest as usize & (self.shards.len() - 1)];
        lock(shard).record(
            digest,
            normalized,
            Run {
                took,
                rows,
                error,
                on_primary,
                now,
            },
        );
    }

    /// The `n` digests with the largest total time (ties: larger count
    /// first, then smaller digest id), largest first.
    pub fn top(&self, n: usize) -> Vec<DigestStats> {
        if n == 0 {
            return Vec::new();
        }
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let s = lock(shard);
            let mut refs: Vec<&DigestStats> = s.nodes.iter().map(|node| &node.stats).collect();
            if refs.len() > n {
                refs.select_nth_unstable_by(n - 1, |a, b| by_weight(a, b));
                refs.truncate(n);
            }
            all.extend(refs.into_iter().cloned());
        }
        all.sort_unstable_by(by_weight);
        all.truncate(n);
        all
    }

    /// Digests currently kept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).nodes.len()).sum()
    }

    /// Whether no digest is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Descending total time, then descending count, then ascending id.
fn by_weight(a: &DigestStats, b: &DigestStats) -> std::cmp::Ordering {
    b.total
        .cmp(&a.total)
        .then(b.count.cmp(&a.count))
        .then(a.digest.cmp(&b.digest))
}

/// Nothing in a shard's critical section panics, but a poisoned lock must
/// not take statistics (and the statement path) down with it.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One statement run, as [`DigestStore::record`] received it.
struct Run {
    took: Duration,
    rows: u64,
    error: bool,
    on_primary: bool,
    now: Instant,
}

/// "No entry" in the intrusive lists.
const NIL: u32 = u32::MAX;

struct Node {
    stats: DigestStats,
    prev: u32,
    next: u32,
    /// In the protected segment (else probation).
    protected: bool,
}

/// A doubly linked list threaded through [`Shard::nodes`]; `head` is the
/// most recently seen.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

struct Shard {
    /// Digest id → index into `nodes`.
    map: HashMap<u64, u32, MixHasher>,
    /// Entries; never shrinks, evicted slots are reused.
    nodes: Vec<Node>,
    cap: usize,
    probation: List,
    protected: List,
    /// Most entries the protected segment holds.
    protected_cap: usize,
}

impl Shard {
    fn new(cap: usize) -> Self {
        Shard {
            map: HashMap::with_hasher(MixHasher),
            nodes: Vec::new(),
            cap,
            probation: List::EMPTY,
            protected: List::EMPTY,
            protected_cap: cap - cap.div_ceil(5).min(cap),
        }
    }

    fn record(&mut self, digest: u64, text: &str, run: Run) {
        if self.cap == 0 {
            return;
        }
        if let Some(&i) = self.map.get(&digest) {
            let node = &mut self.nodes[i as usize];
            let s = &mut node.stats;
            s.count += 1;
            s.errors += u64::from(run.error);
            s.rows = s.rows.saturating_add(run.rows);
            s.total = s.total.saturating_add(run.took);
            s.max = s.max.max(run.took);
            if run.on_primary {
                s.primary += 1;
            } else {
                s.replica += 1;
            }
            s.last_seen = run.now;
            self.promote(i);
            return;
        }
        let stats = DigestStats {
            digest,
            text: String::new(),
            count: 1,
            errors: u64::from(run.error),
            rows: run.rows,
            total: run.took,
            max: run.took,
            primary: u64::from(run.on_primary),
            replica: u64::from(!run.on_primary),
            last_seen: run.now,
        };
        let i = if self.nodes.len() < self.cap {
            self.nodes.push(Node {
                stats: DigestStats {
                    text: text.to_owned(),
                    ..stats
                },
                prev: NIL,
                next: NIL,
                protected: false,
            });
            (self.nodes.len() - 1) as u32
        } else {
            let victim = if self.probation.tail != NIL {
                self.probation.tail
            } else {
                self.protected.tail
            };
            self.unlink(victim);
            let node = &mut self.nodes[victim as usize];
            self.map.remove(&node.stats.digest);
            let mut buf = std::mem::take(&mut node.stats.text);
            buf.clear();
            buf.push_str(text);
            node.stats = DigestStats { text: buf, ..stats };
            node.protected = false;
            victim
        };
        self.push_front(i);
        self.map.insert(digest, i);
    }

    /// A digest seen again: to the front of the protected segment, which
    /// hands its least recently seen entry back to probation if full.
    fn promote(&mut self, i: u32) {
        self.unlink(i);
        self.nodes[i as usize].protected = self.protected_cap > 0;
        self.push_front(i);
        if self.protected.len > self.protected_cap {
            let t = self.protected.tail;
            self.unlink(t);
            self.nodes[t as usize].protected = false;
            self.push_front(t);
        }
    }

    fn list(&mut self, protected: bool) -> &mut List {
        if protected {
            &mut self.protected
        } else {
            &mut self.probation
        }
    }

    fn unlink(&mut self, i: u32) {
        let Node {
            prev,
            next,
            protected,
            ..
        } = self.nodes[i as usize];
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        let list = self.list(protected);
        if list.head == i {
            list.head = next;
        }
        if list.tail == i {
            list.tail = prev;
        }
        list.len -= 1;
        let node = &mut self.nodes[i as usize];
        node.prev = NIL;
        node.next = NIL;
    }

    /// Links `i` at the head of the segment its `protected` flag names.
    fn push_front(&mut self, i: u32) {
        let protected = self.nodes[i as usize].protected;
        let list = self.list(protected);
        let old = list.head;
        list.head = i;
        if list.tail == NIL {
            list.tail = i;
        }
        list.len += 1;
        if old != NIL {
            self.nodes[old as usize].prev = i;
        }
        self.nodes[i as usize].next = old;
    }
}

/// Digest ids are already hashes; one multiply spreads their bits for the
/// map instead of running SipHash over them.
#[derive(Clone, Copy, Default)]
struct MixHasher;

impl BuildHasher for MixHasher {
    type Hasher = MixState;
    fn build_hasher(&self) -> MixState {
        MixState(0)
    }
}

struct MixState(u64);

impl Hasher for MixState {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Displays a statement as its digest text (literals replaced by `?`), for
/// logs: statement text is logged at debug level, and string literals carry
/// passwords (`IDENTIFIED BY '…'`, `MASTER_PASSWORD='…'`) and user data.
/// The normalization runs only when the value is actually formatted, i.e.
/// when the log line is enabled.
pub struct Redacted<'a>(pub &'a [u8]);

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        normalize(self.0, &mut text);
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(sql: &str) -> String {
        let mut out = String::new();
        normalize(sql.as_bytes(), &mut out);
        out
    }

    fn id(sql: &[u8]) -> u64 {
        normalize(sql, &mut String::new())
    }

    #[test]
    fn table_of_normalizations() {
        let cases: &[(&str, &str)] = &[
            (
                "SELECT c FROM sbtest1 WHERE id=50114",
                "SELECT c FROM sbtest1 WHERE id = ?",
            ),
            (
                "select c from sbtest1 where id = 7",
                "SELECT c FROM sbtest1 WHERE id = ?",
            ),
            (
                "SELECT c FROM sbtest3 WHERE id BETWEEN 49893 AND 49992",
                "SELECT c FROM sbtest3 WHERE id BETWEEN ? AND ?",
            ),
            (
                "SELECT SUM(k) FROM sbtest5 WHERE id BETWEEN 1 AND 100",
                "SELECT SUM(k) FROM sbtest5 WHERE id BETWEEN ? AND ?",
            ),
            (
                "UPDATE sbtest1 SET k=k+1 WHERE id=49873",
                "UPDATE sbtest1 SET k = k + ? WHERE id = ?",
            ),
            (
                "SELECT * FROM t WHERE a = -5",
                "SELECT * FROM t WHERE a = ?",
            ),
            (
                "SELECT a-5, a - -5, a--5 FROM t",
                "SELECT a - ?, a - ?, a - ? FROM t",
            ),
            (
                "SELECT -1.5e-3, +.5, 1., 0x1F, 0b101, X'1f', b'01', N'x'",
                "SELECT ?, ?, ?, ?, ?, ?, ?, ?",
            ),
            ("SELECT _utf8mb4'a', _binary \"b\"", "SELECT ?, _binary ?"),
            (
                "SELECT 1abc, t2.col_3, `t1`.`c 1` FROM db1.t2",
                "SELECT 1abc, t2.col_3, `t1`.`c 1` FROM db1.t2",
            ),
            (
                "SELECT t.status, status.x, count FROM t",
                "SELECT t.status, status.x, count FROM t",
            ),
            (
                "select count(*), Count (id), now() from t",
                "SELECT COUNT(*), COUNT(id), NOW() FROM t",
            ),
            (
                "SELECT a FROM t WHERE b IS NULL AND c = TRUE",
                "SELECT a FROM t WHERE b IS NULL AND c = TRUE",
            ),
            (
                "SELECT a FROM t WHERE x IN (1, 2, 3)",
                "SELECT a FROM t WHERE x IN (...)",
            ),
            (
                "SELECT a FROM t WHERE x not in ('a')",
                "SELECT a FROM t WHERE x NOT IN (...)",
            ),
            (
                "SELECT a FROM t WHERE (x, y) IN ((1, 2), (3, 4))",
                "SELECT a FROM t WHERE (x, y) IN (...)",
            ),
            (
                "SELECT a FROM t WHERE x IN (SELECT y FROM u)",
                "SELECT a FROM t WHERE x IN (SELECT y FROM u)",
            ),
            (
                "SELECT a FROM t WHERE x IN (1, b, 3)",
                "SELECT a FROM t WHERE x IN (?, b, ?)",
            ),
            (
                "SELECT a FROM t WHERE x IN ()",
                "SELECT a FROM t WHERE x IN ()",
            ),
            (
                "SELECT a FROM t WHERE x IN (1, 2",
                "SELECT a FROM t WHERE x IN (?, ?",
            ),
            (
                "INSERT INTO t (a, b) VALUES (1, 'x')",
                "INSERT INTO t(a, b) VALUES (...)",
            ),
            (
                "INSERT INTO t(a,b) VALUES(1,'x'),(2,'y'),(3, DEFAULT)",
                "INSERT INTO t(a, b) VALUES (...)",
            ),
            (
                "INSERT INTO t VALUES (1, NOW()), (2, NOW())",
                "INSERT INTO t VALUES (?, NOW()), (?, NOW())",
            ),
            (
                "INSERT INTO t VALUES (1), (NOW())",
                "INSERT INTO t VALUES (...), (NOW())",
            ),
            (
                "INSERT INTO t VALUES (1), 2",
                "INSERT INTO t VALUES (...), ?",
            ),
            (
                "INSERT INTO t VALUES (1,2) ON DUPLICATE KEY UPDATE b = VALUES(b)",
                "INSERT INTO t VALUES (...) ON DUPLICATE KEY UPDATE b = VALUES (b)",
            ),
            ("SELECT 1;", "SELECT ?"),
            ("SELECT 1 ;  -- bye\n ; ", "SELECT ?"),
            ("SELECT 1; select 2;", "SELECT ?; SELECT ?"),
            (
                "/* rwproxy:primary */ SELECT 1 /* rwproxy:max_lag=2s */",
                "SELECT ?",
            ),
            ("/*!40101 SET NAMES utf8 */", "SET NAMES utf8"),
            (
                "SELECT /*!50110 SQL_NO_CACHE */ a /*M!100100 , b */ FROM t",
                "SELECT SQL_NO_CACHE a, b FROM t",
            ),
            ("SELECT /*+ BKA(t) */ a FROM t", "SELECT a FROM t"),
            (
                "SELECT @a, @@session.sql_mode, @`x`",
                "SELECT @a, @@session.sql_mode, @`x`",
            ),
            (
                "SELECT a FROM t WHERE a <=> 1 OR a->>'$.x' != 2",
                "SELECT a FROM t WHERE a <=> ? OR a ->> ? != ?",
            ),
            (
                "SELECT a FROM t WHERE id = ? AND b IN (?, ?)",
                "SELECT a FROM t WHERE id = ? AND b IN (...)",
            ),
            ("SELECT a FROM t LIMIT 10, 20", "SELECT a FROM t LIMIT ?, ?"),
            (
                "SELECT * FROM t WHERE d > INTERVAL -1 DAY",
                "SELECT * FROM t WHERE d > INTERVAL ? DAY",
            ),
            (
                "CREATE TABLE t (id int unsigned, v varchar(32))",
                "CREATE TABLE t(id INT UNSIGNED, v VARCHAR(?))",
            ),
            ("", ""),
            ("  /* only a comment */ ", ""),
        ];
        for (sql, want) in cases {
            assert_eq!(norm(sql), *want, "{sql}");
        }
    }

    #[test]
    fn signs_after_operators_are_part_of_the_literal() {
        assert_eq!(
            norm("SELECT * FROM t WHERE id = -5"),
            "SELECT * FROM t WHERE id = ?"
        );
        assert_eq!(
            norm("SELECT * FROM t WHERE id=-5"),
            "SELECT * FROM t WHERE id = ?"
        );
        assert_eq!(
            norm("SELECT * FROM t WHERE id IN (-1, +2, - 3)"),
            "SELECT * FROM t WHERE id IN (...)"
        );
        assert_eq!(
            norm("SELECT -x, (-1), f(-2) FROM t"),
            "SELECT - x, (?), f(?) FROM t"
        );
        // After an operand, `-` is subtraction.
        assert_eq!(
            norm("SELECT a-1, t.b -1, (c)-1, ?-1 FROM t"),
            "SELECT a - ?, t.b - ?, (c) - ?, ? - ? FROM t"
        );
        assert_eq!(
            id(b"SELECT 1 FROM t WHERE a = -5"),
            id(b"SELECT 1 FROM t WHERE a = 5")
        );
    }

    #[test]
    fn qualified_names_and_digit_identifiers_stay() {
        assert_eq!(
            norm("SELECT sbtest1.c, t2.col_3, db.t.x FROM db.sbtest1 JOIN t2 ON t2.id = sbtest1.k"),
            "SELECT sbtest1.c, t2.col_3, db.t.x FROM db.sbtest1 JOIN t2 ON t2.id = sbtest1.k"
        );
        assert_eq!(
            norm("SELECT t.select, t.from FROM t"),
            "SELECT t.select, t.from FROM t"
        );
        assert_eq!(
            norm("SELECT 2t, t2, 3e1x, 1e+5x FROM t"),
            "SELECT 2t, t2, 3e1x, ? x FROM t"
        );
        assert_ne!(id(b"SELECT * FROM sbtest1"), id(b"SELECT * FROM sbtest2"));
    }

    #[test]
    fn executable_comments_are_sql() {
        assert_eq!(
            norm("/*!40101 SET character_set_client = utf8 */;"),
            "SET character_set_client = utf8"
        );
        assert_eq!(
            norm("SELECT /*!STRAIGHT_JOIN*/ a FROM t"),
            "SELECT STRAIGHT_JOIN a FROM t"
        );
        assert_eq!(
            norm("CREATE TABLE t (a INT) /*!50100 PARTITION BY HASH (a) */"),
            "CREATE TABLE t(a INT) PARTITION BY HASH(a)"
        );
        // Only comments go: an executable comment that never closes still is SQL.
        assert_eq!(norm("SELECT /*! 1"), "SELECT ?");
    }

    #[test]
    fn sysbench_literals_do_not_matter() {
        let a = id(b"SELECT c FROM sbtest1 WHERE id=50114");
        let b = id(b"SELECT c FROM sbtest1 WHERE id=1");
        let c = id(b"SELECT c FROM sbtest1 WHERE id = -3");
        assert_eq!(a, b);
        assert_eq!(a, c);
        let u1 = id(b"UPDATE sbtest6 SET c='83868641912-28773972837' WHERE id=50224");
        let u2 = id(b"UPDATE sbtest6 SET c='1-2-3' WHERE id=7");
        assert_eq!(u1, u2);
        let i1 = id(b"INSERT INTO sbtest8 (id, k, c, pad) VALUES (50044, 49887, 'x', 'y')");
        let i2 = id(b"INSERT INTO sbtest8 (id, k, c, pad) VALUES (1, 2, 'aaa', 'bbb')");
        assert_eq!(i1, i2);
    }

    #[test]
    fn different_tables_and_shapes_differ() {
        let a = id(b"SELECT c FROM sbtest1 WHERE id=1");
        assert_ne!(a, id(b"SELECT c FROM sbtest2 WHERE id=1"));
        assert_ne!(a, id(b"SELECT k FROM sbtest1 WHERE id=1"));
        assert_ne!(a, id(b"SELECT c FROM sbtest1 WHERE id>1"));
        assert_ne!(a, id(b"SELECT c FROM sbtest1 WHERE id=1 FOR UPDATE"));
        // Table names may be case-sensitive: kept as written.
        assert_ne!(id(b"SELECT * FROM t"), id(b"SELECT * FROM T"));
    }

    #[test]
    fn digest_is_hash_of_text() {
        let mut out = String::new();
        let d = normalize(b"select c from sbtest1 where id=5", &mut out);
        assert_eq!(d, digest_id(out.as_bytes()));
        // FNV-1a test vectors: ids must stay stable across builds.
        assert_eq!(digest_id(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(digest_id(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(digest_id(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn in_lists_of_any_length_collapse() {
        let list = |n: usize| {
            let items: Vec<String> = (0..n).map(|i| (i * 7919).to_string()).collect();
            format!("SELECT id FROM sbtest1 WHERE id IN ({})", items.join(", "))
        };
        let one = id(list(1).as_bytes());
        let big = list(500);
        assert_eq!(one, id(big.as_bytes()));
        assert_eq!(norm(&big), "SELECT id FROM sbtest1 WHERE id IN (...)");
        let strings = "SELECT id FROM t WHERE s IN ('a', \"b\", 'it''s', NULL, -1, 0x0F)";
        assert_eq!(norm(strings), "SELECT id FROM t WHERE s IN (...)");
        // Longer than the cap before collapsing, not after.
        let huge = list(100_000);
        assert_eq!(norm(&huge), "SELECT id FROM sbtest1 WHERE id IN (...)");
    }

    #[test]
    fn multi_row_values_collapse() {
        let rows = |n: usize| {
            let r: Vec<String> = (0..n).map(|i| format!("({i}, 'v{i}', NULL)")).collect();
            format!("INSERT INTO t (a, b, c) VALUES {}", r.join(","))
        };
        assert_eq!(norm(&rows(1)), "INSERT INTO t(a, b, c) VALUES (...)");
        assert_eq!(id(rows(1).as_bytes()), id(rows(1000).as_bytes()));
        let odku = format!("{} ON DUPLICATE KEY UPDATE b = VALUES(b)", rows(3));
        assert_eq!(
            norm(&odku),
            "INSERT INTO t(a, b, c) VALUES (...) ON DUPLICATE KEY UPDATE b = VALUES (b)"
        );
    }

    #[test]
    fn comments_and_whitespace_do_not_matter() {
        let base = id(b"SELECT c FROM sbtest1 WHERE id = 5");
        for sql in [
            "SELECT c FROM sbtest1 WHERE id=5",
            "  SELECT\tc\nFROM   sbtest1\r\nWHERE id =5 ;",
            "/* controller=users */ SELECT c FROM sbtest1 WHERE id = 5 /* trace=1 */",
            "SELECT c -- why\nFROM sbtest1 # how\nWHERE id/**/=/**/5",
            "/* rwproxy:replica */ SELECT c FROM sbtest1 WHERE id = 5",
            "SELECT c FROM sbtest1 WHERE id = 5 /* unterminated",
        ] {
            assert_eq!(id(sql.as_bytes()), base, "{sql}");
        }
    }

    #[test]
    fn strings_hide_everything() {
        let base = id(b"SELECT a FROM t WHERE s = 'x' AND b = 1");
        for sql in [
            r"SELECT a FROM t WHERE s = 'it''s' AND b = 1",
            r"SELECT a FROM t WHERE s = 'it\'s \\' AND b = 1",
            r#"SELECT a FROM t WHERE s = "say ""hi"" -- not a comment" AND b = 1"#,
            "SELECT a FROM t WHERE s = 'a; DROP TABLE t; /* x */ # y' AND b = 1",
            "SELECT a FROM t WHERE s = '`IN (1,2)`' AND b = 1",
        ] {
            assert_eq!(id(sql.as_bytes()), base, "{sql}");
        }
        // Unterminated strings swallow the rest.
        assert_eq!(norm("SELECT 'abc"), "SELECT ?");
        assert_eq!(norm(r"SELECT 'abc\"), "SELECT ?");
        assert_eq!(norm("SELECT `abc"), "SELECT `abc");
        assert_eq!(norm("SELECT `a``b` FROM t"), "SELECT `a``b` FROM t");
    }

    #[test]
    fn invalid_utf8_is_lossy_not_fatal() {
        let mut out = String::new();
        normalize(b"SELECT \xff\xfe FROM t\xc3 WHERE s = '\xff'", &mut out);
        assert_eq!(out, "SELECT \u{FFFD}\u{FFFD} FROM t\u{FFFD} WHERE s = ?");
        normalize("SELECT naïve FROM 表 WHERE x = 'ü'".as_bytes(), &mut out);
        assert_eq!(out, "SELECT naïve FROM 表 WHERE x = ?");
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let depth = 100_000;
        let sql = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        let mut out = String::new();
        normalize(sql.as_bytes(), &mut out);
        assert!(out.len() <= MAX_TEXT_LEN);
        assert!(out.starts_with("SELECT (((("));
        assert!(out.ends_with(TRUNCATION_MARK));
        // Nested inside an IN list too.
        let sql = format!(
            "SELECT a FROM t WHERE x IN {}1{}",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        assert_eq!(norm(&sql), "SELECT a FROM t WHERE x IN (...)");
        let sql = format!("SELECT a FROM t WHERE x IN {}", "(".repeat(depth));
        assert!(norm(&sql).len() <= MAX_TEXT_LEN);
    }

    #[test]
    fn truncation_at_cap() {
        let cols: Vec<String> = (0..400).map(|i| format!("col_{i}")).collect();
        let sql = format!("SELECT {} FROM t WHERE id = 1", cols.join(", "));
        let mut out = String::new();
        let d = normalize(sql.as_bytes(), &mut out);
        assert_eq!(out.len(), MAX_TEXT_LEN);
        assert!(out.ends_with(TRUNCATION_MARK));
        assert!(out.starts_with("SELECT col_0, col_1, "));
        assert_eq!(d, digest_id(out.as_bytes()));
        // The hash covers only the kept prefix: changing the tail does not
        // change the digest.
        let other = format!("SELECT {} FROM u WHERE z = 2", cols.join(", "));
        assert_eq!(d, id(other.as_bytes()));
        // A cut never splits a character.
        let wide = format!("SELECT `{}`", "é".repeat(1000));
        normalize(wide.as_bytes(), &mut out);
        assert!(out.len() <= MAX_TEXT_LEN);
        assert!(out.ends_with(TRUNCATION_MARK));
        // Exactly at the cap is not truncated; a trailing `;` does not count.
        let ident = "x".repeat(MAX_TEXT_LEN - "SELECT ".len());
        normalize(format!("SELECT {ident};").as_bytes(), &mut out);
        assert_eq!(out.len(), MAX_TEXT_LEN);
        assert!(!out.ends_with(TRUNCATION_MARK));
    }

    #[test]
    fn buffer_is_reused_without_allocating() {
        let mut out = String::with_capacity(MAX_TEXT_LEN);
        let ptr = out.as_ptr();
        let long = "SELECT ".to_string() + &"a, ".repeat(2000) + "b";
        for sql in [
            "SELECT 1",
            long.as_str(),
            "SELECT c FROM sbtest1 WHERE id=1",
        ] {
            normalize(sql.as_bytes(), &mut out);
            assert_eq!(out.as_ptr(), ptr);
            assert_eq!(out.capacity(), MAX_TEXT_LEN);
        }
    }

    #[test]
    fn normalizing_is_idempotent() {
        for sql in [
            "SELECT c FROM sbtest1 WHERE id=50114",
            "INSERT INTO t (a,b) VALUES (1,'x'),(2,'y') ON DUPLICATE KEY UPDATE b=VALUES(b)",
            "SELECT a FROM t WHERE x IN (1,2) AND y IN (SELECT z FROM u) AND w = -1",
            "select count(*), t.`x` from t join u using (id) where a->>'$.b' <=> null",
            "SELECT 1; SELECT @a := 2",
        ] {
            let once = norm(sql);
            assert_eq!(norm(&once), once, "{sql}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic garbage biased towards SQL punctuation.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"'\"`\\/*!-#+.;,()@?0123456789xXbB_ \n\tabINVALUES\xff\xc3";
        let mut out = String::with_capacity(MAX_TEXT_LEN);
        for len in 0..3000 {
            let mut sql = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = x as usize;
                sql.push(if r.is_multiple_of(7) {
                    (r >> 8) as u8
                } else {
                    alphabet[(r >> 8) % alphabet.len()]
                });
            }
            let d = normalize(&sql, &mut out);
            assert!(out.len() <= MAX_TEXT_LEN);
            assert_eq!(d, digest_id(out.as_bytes()));
        }
    }

    #[test]
    fn keyword_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for &(name, flags) in KEYWORDS {
            assert!(seen.insert(name), "duplicate {name}");
            assert!(name.len() <= KW_MAX, "{name}");
            assert_eq!(name, name.to_ascii_uppercase());
            assert!(flags & (K | F) != 0, "{name}");
            for spelled in [name.to_string(), name.to_ascii_lowercase()] {
                // Alone (short read path) and followed by more text.
                let src = format!("{spelled} FROM t");
                let n = spelled.len();
                assert_eq!(kw_lookup(spelled.as_bytes(), 0, n).map(|e| e.0), Some(name));
                assert_eq!(kw_lookup(src.as_bytes(), 0, n).map(|e| e.0), Some(name));
            }
        }
        assert!(KEYWORDS.len() < KW_SLOTS / 2);
    }

    // ---- store ----

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn store_accumulates() {
        let s = DigestStore::new(100);
        let mut text = String::new();
        let d = normalize(b"SELECT c FROM sbtest1 WHERE id=1", &mut text);
        s.record(d, &text, 2 * MS, 1, false, false);
        s.record(d, &text, 5 * MS, 1, false, false);
        s.record(d, &text, 3 * MS, 0, true, true);
        assert_eq!(s.len(), 1);
        let top = s.top(10);
        assert_eq!(top.len(), 1);
        let t = &top[0];
        assert_eq!(t.digest, d);
        assert_eq!(t.text, "SELECT c FROM sbtest1 WHERE id = ?");
        assert_eq!((t.count, t.errors, t.rows), (3, 1, 2));
        assert_eq!((t.total, t.max), (10 * MS, 5 * MS));
        assert_eq!((t.primary, t.replica), (1, 2));
    }

    #[test]
    fn top_orders_by_total_then_count() {
        let s = DigestStore::new(100);
        s.record(1, "a", 10 * MS, 0, false, true);
        s.record(2, "b", 5 * MS, 0, false, true);
        s.record(2, "b", 5 * MS, 0, false, true);
        s.record(3, "c", 30 * MS, 0, false, true);
        s.record(4, "d", MS, 0, false, true);
        let ids: Vec<u64> = s.top(3).iter().map(|t| t.digest).collect();
        assert_eq!(ids, [3, 2, 1]);
        assert_eq!(s.top(0), Vec::new());
        assert_eq!(s.top(100).len(), 4);
    }

    #[test]
    fn store_is_bounded_and_keeps_hot_digests() {
        for cap in [1, 7, 100, 1000, 5000] {
            let s = DigestStore::new(cap);
            let hot: Vec<u64> = (0..(cap as u64 / 10).max(1))
                .map(|i| digest_id(&i.to_le_bytes()))
                .collect();
            for _ in 0..5 {
                for &h in &hot {
                    s.record(h, "hot", MS, 1, false, false);
                }
            }
            // A flood of one-off digests, with the hot ones still running
            // now and then.
            for i in 0..10_000u64 {
                s.record(
                    digest_id(&(1_000_000 + i).to_le_bytes()),
                    "cold",
                    MS,
                    1,
                    false,
                    false,
                );
                assert!(s.len() <= cap);
                if i % 2500 == 0 {
                    for &h in &hot {
                        s.record(h, "hot", MS, 1, false, false);
                    }
                }
            }
            assert_eq!(s.len(), cap);
            if cap > 1 {
                let kept = s.top(cap);
                for &h in &hot {
                    let e = kept.iter().find(|t| t.digest == h);
                    assert!(
                        e.is_some_and(|e| e.count == 9),
                        "hot digest lost (cap {cap})"
                    );
                }
            }
        }
    }

    #[test]
    fn one_off_flood_cannot_evict_repeated_digests() {
        let s = DigestStore::with_shards(100, 1);
        for d in 0..50u64 {
            s.record(d, "hot", MS, 0, false, true);
            s.record(d, "hot", MS, 0, false, true);
        }
        for d in 1000..11_000u64 {
            s.record(d, "cold", MS, 0, false, true);
        }
        let top = s.top(100);
        assert_eq!(top.len(), 100);
        for d in 0..50u64 {
            assert!(top.iter().any(|t| t.digest == d && t.count == 2), "{d}");
        }
        // Plain recency among one-offs: the newest cold ones are the ones kept.
        assert!(top.iter().any(|t| t.digest == 10_999));
        assert!(!top.iter().any(|t| t.digest == 1000));
    }

    #[test]
    fn eviction_reuses_and_replaces_text() {
        let s = DigestStore::with_shards(2, 1);
        s.record(1, "one", MS, 0, false, true);
        s.record(2, "two", MS, 0, false, true);
        s.record(3, "three", MS, 0, false, true);
        assert_eq!(s.len(), 2);
        let top = s.top(10);
        assert!(
            top.iter()
                .any(|t| t.digest == 3 && t.text == "three" && t.count == 1)
        );
        assert!(!top.iter().any(|t| t.digest == 1));
    }

    #[test]
    fn zero_capacity_records_nothing() {
        let s = DigestStore::new(0);
        s.record(1, "x", MS, 0, false, true);
        assert_eq!(s.len(), 0);
        assert!(s.is_empty());
        assert!(s.top(5).is_empty());
    }

    #[test]
    fn shard_counts_and_capacity_split() {
        assert_eq!(DigestStore::new(100).shards.len(), 1);
        assert_eq!(DigestStore::new(1000).shards.len(), 2);
        assert_eq!(DigestStore::new(10_000).shards.len(), 16);
        assert_eq!(DigestStore::with_shards(10, 3).shards.len(), 2);
        // No shard is left without room (its digests would be dropped).
        let s = DigestStore::with_shards(10, 16);
        assert_eq!(s.shards.len(), 8);
        let caps: Vec<usize> = s.shards.iter().map(|m| lock(m).cap).collect();
        assert_eq!(caps.iter().sum::<usize>(), 10);
        assert!(caps.iter().all(|&c| c >= 1));
        for i in 0..1000u64 {
            s.record(i, "x", MS, 0, false, true);
        }
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let s = std::sync::Arc::new(DigestStore::new(4096));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        s.record(i % 64, "q", MS, 1, i % 10 == 0, t % 2 == 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let top = s.top(100);
        assert_eq!(top.len(), 64);
        let count: u64 = top.iter().map(|t| t.count).sum();
        let rows: u64 = top.iter().map(|t| t.rows).sum();
        let errors: u64 = top.iter().map(|t| t.errors).sum();
        let primary: u64 = top.iter().map(|t| t.primary).sum();
        assert_eq!(
            (count, rows, errors, primary),
            (80_000, 80_000, 8_000, 40_000)
        );
    }

    #[test]
    fn redacted_hides_string_literals() {
        let shown = Redacted(b"CREATE USER u IDENTIFIED BY 'Secr3t-x'").to_string();
        assert!(!shown.contains("Secr3t"), "{shown}");
        let shown = Redacted(b"SET PASSWORD FOR u = PASSWORD(\"Secr3t-y\")").to_string();
        assert!(!shown.contains("Secr3t"), "{shown}");
        let shown = Redacted(
            b"CHANGE MASTER TO MASTER_HOST='h', MASTER_PASSWORD='Secr3t-z', MASTER_USE_GTID=slave_pos",
        )
        .to_string();
        assert!(!shown.contains("Secr3t"), "{shown}");
    }
}
