//! Query digests: statement text in, a normalized *digest text* and a 64-bit
//! *digest id* out, and a bounded store of per-digest statistics.
//!
//! [`normalize`] turns `SELECT c FROM sbtest1 WHERE id=50114` and
//! `select c  from sbtest1 where id = 7 -- x` into the same text,
//! `SELECT c FROM sbtest1 WHERE id = ?`, and the same id (FNV-1a of that
//! text). It is one pass of a small hand-written lexer over the raw bytes,
//! like [`super::classify`], and shares its rules for what is a comment, a
//! string and an executable comment, but it is a separate lexer because it
//! must keep going where the classifier can stop (unterminated strings,
//! anything after the first statement) and because it produces text.
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
        pos: 0,
        exec_depth: 0,
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
    pos: usize,
    exec_depth: u32,
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
    pos: usize,
    /// Executable comments currently open; their `*/` closes one.
    exec_depth: u32,
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
            exec_depth: self.exec_depth,
            prev: self.prev,
            list_kw: self.list_kw,
            semi: self.semi,
            out_len: self.out.len(),
        }
    }

    /// Gives up collapsing: back to `snap`, to lex the list token by token.
    fn abandon(&mut self, snap: Snapshot) {
        self.pos = snap.pos;
        self.exec_depth = snap.exec_depth;
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
    fn next_tok(&mut self) -> Option<Tok> {
        let src = self.src;
        loop {
            let start = self.pos;
            let b = *src.get(start)?;
            // The two most common bytes first, before the full dispatch.
            if b == b' ' {
                self.pos += 1;
                continue;
            }
            if is_ident(b) && !b.is_ascii_digit() {
                return Some(self.word(start));
            }
            let next = src.get(start + 1).copied();
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'#' => self.pos = line_end(src, start + 1),
                // `--` starts a comment only when followed by whitespace, a
                // control character or the end; `1--1` is arithmetic.
                b'-' if next == Some(b'-') && src.get(start + 2).is_none_or(|&c| c <= b' ') => {
                    self.pos = line_end(src, start + 2);
                }
                b'/' if next == Some(b'*') => self.block_comment(start),
                b'*' if next == Some(b'/') && self.exec_depth > 0 => {
                    self.exec_depth -= 1;
                    self.pos = start + 2;
                }
                b'\'' | b'"' => {
                    self.pos = string_end(src, start + 1, b);
                    return Some(Tok::lit(start));
                }
                b'`' => {
                    self.pos = backtick_end(src, start + 1);
                    return Some(Tok::new(Class::QIdent, Text::Src(start, self.pos), start));
                }
                b'0'..=b'9' => return Some(self.number(start, start)),
                b'.' if next.is_some_and(|c| c.is_ascii_digit()) && !self.prev.ends_operand() => {
                    return Some(self.number(start, start));
                }
                b'-' | b'+' if !self.prev.ends_operand() => {
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
                        let t = self.number(j, start);
                        if t.class == Class::Lit {
                            return Some(t);
                        }
                    }
                    self.pos = start + 1;
                    return Some(self.punct(start));
                }
                b'@' => return Some(self.variable(start)),
                b'?' => {
                    self.pos = start + 1;
                    return Some(Tok::lit(start));
                }
                _ if is_ident(b) => return Some(self.word(start)),
                _ => return Some(self.punct(start)),
            }
        }
    }

    /// `/*` at `start`: an executable comment's opener (its content is
    /// code) or an ordinary comment (skipped; unterminated runs to the end).
    fn block_comment(&mut self, start: usize) {
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
            return;
        }
        self.pos = find_comment_end(src, body).map_or(src.len(), |e| e + 2);
    }

    /// A number whose digits start at `digits`; the literal (with any sign)
    /// starts at `start`. Something like `1abc` is a word: MySQL allows
    /// identifiers that start with digits.
    fn number(&mut self, digits: usize, start: usize) -> Tok {
        let src = self.src;
        let at = |i: usize| src.get(i).copied();
        let mut i = digits;
        if at(i) == Some(b'0') {
            let radix: Option<fn(&u8) -> bool> = match at(i + 1) {
                Some(b'x' | b'X') => Some(u8::is_ascii_hexdigit),
                Some(b'b' | b'B') => Some(|c| matches!(c, b'0' | b'1')),
                _ => None,
            };
            if let Some(is_digit) = radix {
                let mut j = i + 2;
                while src.get(j).is_some_and(is_digit) {
                    j += 1;
                }
                if j > i + 2 && !at(j).is_some_and(is_ident) {
                    self.pos = j;
                    return Tok::lit(start);
                }
            }
        }
        i = digits_end(src, i);
        // A run of digits that goes on into identifier bytes (`1abc`,
        // `3e1x`) is an identifier, as MySQL lexes it, unless it already
        // holds a `.` or a signed exponent.
        let mut punctuated = false;
        if at(i) == Some(b'.') {
            // `1.5`, `.5`, and `1.` (but `1.e5`'s `e` is left alone).
            match at(i + 1) {
                Some(c) if c.is_ascii_digit() => {
                    i = digits_end(src, i + 1);
                    punctuated = true;
                }
                Some(c) if is_ident(c) => {}
                _ if i > digits => {
                    i += 1;
                    punctuated = true;
                }
                _ => {}
            }
        }
        if matches!(at(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(at(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if at(j).is_some_and(|c| c.is_ascii_digit()) {
                // `1e+5x` is `1e+5` then `x`: a sign cannot be in a word.
                punctuated |= j > i + 1;
                i = digits_end(src, j);
            }
        }
        if !punctuated && at(i).is_some_and(is_ident) {
            let end = ident_end(src, i);
            self.pos = end;
            return Tok::new(Class::Ident, Text::Src(digits, end), digits);
        }
        self.pos = i;
        Tok::lit(start)
    }

    /// `@…` at `start`: a user variable, a system variable, or a lone `@`.
    fn variable(&mut self, start: usize) -> Tok {
        let src = self.src;
        let end = match src.get(start + 1) {
            Some(b'@') => {
                let mut i = start + 2;
                while src.get(i).is_some_and(|&c| is_ident(c) || c == b'.') {
                    i += 1;
                }
                i
            }
            Some(&q @ (b'\'' | b'"')) => string_end(src, start + 2, q),
            Some(b'`') => backtick_end(src, start + 2),
            Some(&c) if is_ident(c) => ident_end(src, start + 1),
            _ => start + 1,
        };
        self.pos = end;
        Tok::new(Class::Var, Text::Src(start, end), start)
    }

    /// Operators (the multi-byte ones as one token) and punctuation.
    fn punct(&mut self, start: usize) -> Tok {
        let src = self.src;
        let b = src[start];
        let class = match b {
            b'(' => Class::Open,
            b')' => Class::Close,
            b',' => Class::Comma,
            b'.' => Class::Dot,
            b';' => Class::Semi,
            _ => Class::Op,
        };
        let mut end = start + 1;
        if class == Class::Op {
            let rest = &src[start..];
            const OPS: [&[u8]; 12] = [
                b"<=>", b"->>", b"<=", b">=", b"<>", b"!=", b":=", b"||", b"&&", b"<<", b">>",
                b"->",
            ];
            if let Some(op) = OPS.iter().find(|op| rest.starts_with(op)) {
                end = start + op.len();
            }
        }
        self.pos = end;
        Tok::new(class, Text::Src(start, end), start)
    }

    /// A word at `start`: keyword, function name, identifier, or the
    /// introducer of a literal (`X'1F'`, `b'01'`, `N'a'`, `_utf8mb4'a'`).
    fn word(&mut self, start: usize) -> Tok {
        let src = self.src;
        let end = ident_end(src, start + 1);
        let len = end - start;
        match src.get(end) {
            Some(b'\'')
                if len == 1 && matches!(src[start], b'x' | b'X' | b'b' | b'B' | b'n' | b'N') =>
            {
                self.pos = string_end(src, end + 1, b'\'');
                return Tok::lit(start);
            }
            Some(&q @ (b'\'' | b'"')) if src[start] == b'_' => {
                self.pos = string_end(src, end + 1, q);
                return Tok::lit(start);
            }
            _ => {}
        }
        self.pos = end;
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

/// Identifier bytes: ASCII letters, digits, `_`, `$`, and any non-ASCII
/// byte (MySQL identifiers may hold any Unicode letter).
#[inline]
fn is_ident(c: u8) -> bool {
    IDENT[usize::from(c)]
}

static IDENT: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        c += 1;
    }
    t
};

fn ident_end(src: &[u8], mut i: usize) -> usize {
    while src.get(i).is_some_and(|&c| is_ident(c)) {
        i += 1;
    }
    i
}

fn digits_end(src: &[u8], mut i: usize) -> usize {
    while src.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Offset just past the newline that ends a line comment (or the end).
fn line_end(src: &[u8], from: usize) -> usize {
    let from = from.min(src.len());
    src[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(src.len(), |p| from + p + 1)
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

/// Offset just past the quote that closes a string whose body starts at
/// `i` (or the end, if it never closes). Doubled quotes and backslashes
/// escape.
fn string_end(src: &[u8], mut i: usize, quote: u8) -> usize {
    loop {
        i = find2(src, i, quote, b'\\');
        match src.get(i) {
            None => return src.len(),
            Some(&c) if c == quote => {
                if src.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            // A backslash: skip it and the byte it escapes.
            Some(_) => i += 2,
        }
    }
}

/// Like [`string_end`] for a back-quoted identifier (only `` `` `` escapes).
fn backtick_end(src: &[u8], mut i: usize) -> usize {
    loop {
        i = find2(src, i, b'`', b'`');
        if i >= src.len() {
            return src.len();
        }
        if src.get(i + 1) == Some(&b'`') {
            i += 2;
        } else {
            return i + 1;
        }
    }
}

/// Index of the first byte at or after `i` that is `a` or `b` (`src.len()`
/// if none), 8 bytes per step: for `x = chunk ^ splat(a)`,
/// `(x - 0x01…) & !x & 0x80…` has the high bit set in the lowest byte
/// where `x` is zero, with no false positive below it. Strings are the
/// longest tokens in typical statements (sysbench's 120-byte `c`).
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
    loop {
        let p = src.get(i..)?.iter().position(|&c| c == b'*')?;
        i += p;
        if src.get(i + 1) == Some(&b'/') {
            return Some(i);
        }
        i += 1;
    }
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
