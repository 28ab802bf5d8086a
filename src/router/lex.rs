//! The one SQL lexer: raw statement bytes in, [`Token`]s out.
//!
//! Everything in rwproxy that looks inside SQL text goes through this
//! module — the classifier ([`super::classify`]), the digest normalizer
//! ([`super::digest`]), the `SET` parser ([`super::set`]), and through the
//! classifier the session's `USE`, transaction and `@@socket` checks — so
//! there is one definition of:
//!
//! - **whitespace**: space, tab, CR, LF, VT, FF;
//! - **comments**: `# …` and `-- …` to the end of the line (`--` only when
//!   followed by whitespace, a control byte or the end: `1--1` is
//!   arithmetic), `/* … */` (not nested). A comment's text is checked for
//!   `rwproxy:` hints ([`Hint`], `max_lag=`);
//! - **executable comments**: `/*! … */`, `/*!50110 … */`, `/*M! … */`,
//!   `/*M!100100 … */` are *code*: the server runs their content, so the
//!   opener (with up to six version digits) and the matching `*/` are
//!   skipped and the content is lexed like the rest;
//! - **quoting**: `'…'` and `"…"` strings (a doubled quote or a backslash
//!   escapes; `NO_BACKSLASH_ESCAPES` is not followed: no scanner ever did,
//!   and it only matters for a string ending in a backslash), `` `…` ``
//!   identifiers (only a doubled backtick escapes);
//! - **identifiers**: ASCII letters, digits, `_`, `$` and every byte ≥ 0x80
//!   (so invalid UTF-8 is just part of a name); a run of digits that goes
//!   on into identifier bytes (`1abc`) is an identifier, as MySQL lexes it;
//! - **numbers**: `12`, `1.5`, `1.`, `1e-3`, `0x1F`, `0b101` (`.5` and signs
//!   are left to the reader: whether `.`/`-` starts a number depends on the
//!   token before, see [`Lexer::number_at`]);
//! - **variables**: `@name`, `@'name'`, `` @`name` ``, `@"name"`, `@@name`,
//!   `@@scope.name`; placeholders `?` and statement separators `;` are
//!   [`TokenKind::Punct`].
//!
//! The lexer never fails and never allocates: an unterminated string,
//! quoted identifier or comment ends the stream (a string or identifier as
//! a token reaching the end of the text) and sets [`Lexer::error`]; readers
//! that must not guess (the classifier, the `SET` parser) treat that text
//! as not understood, the digest normalizer keeps what it got. It does not
//! recurse and looks at each byte a bounded number of times.

use std::time::Duration;

/// A routing hint written in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// `/* rwproxy:primary */`
    Primary,
    /// `/* rwproxy:replica */`
    Replica,
}

/// The kinds of token the [`Lexer`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Keyword or unquoted identifier (see the module doc).
    Word,
    /// Numeric literal: `12`, `1.5`, `1.`, `1e-3`, `0x1F`, `0b101`.
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
    /// A multi-byte operator: `<=>`, `->>`, `<=`, `>=`, `<>`, `!=`, `||`,
    /// `&&`, `<<`, `>>`, `->`.
    Op,
    /// Any other single byte: `(`, `)`, `,`, `;`, `=`, `.`, `-`, `?`, `@`…
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

    /// Where the token sits in its statement.
    pub(crate) fn span(&self) -> Span {
        Span {
            start: u32::try_from(self.start).unwrap_or(u32::MAX),
            end: u32::try_from(self.end()).unwrap_or(u32::MAX),
        }
    }
}

/// A byte range of a statement's text, kept instead of a copy so that a
/// [`super::classify::Classified`] stays small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The spanned bytes of `sql` (the text the span was taken from);
    /// `None` if `sql` is too short.
    pub fn get<'a>(&self, sql: &'a [u8]) -> Option<&'a [u8]> {
        sql.get(self.start as usize..self.end as usize)
    }
}

/// The name an identifier token spells: backticks removed and doubled
/// backticks undone; invalid UTF-8 replaced by U+FFFD.
pub fn ident_name(text: &[u8]) -> String {
    match text.strip_prefix(b"`").and_then(|t| t.strip_suffix(b"`")) {
        Some(inner) => String::from_utf8_lossy(inner).replace("``", "`"),
        None => String::from_utf8_lossy(text).into_owned(),
    }
}

/// Byte classes for the lexer's dispatch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Byte {
    Other,
    Space,
    /// Always a one-byte [`TokenKind::Punct`] on its own: no comment,
    /// operator, string or number starts with it.
    Punct,
    /// `` ` ``: opens a quoted identifier.
    Backtick,
    /// `'` or `"`: opens a string.
    Quote,
    // `Word` and `Digit` last: `>= Word` is "continues an identifier".
    Word,
    Digit,
}

static CLASS: [Byte; 256] = {
    let mut t = [Byte::Other; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            Byte::Space
        } else if b.is_ascii_digit() {
            Byte::Digit
        } else if b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b >= 0x80 {
            Byte::Word
        } else if matches!(
            b,
            b'(' | b')' | b',' | b';' | b'?' | b'=' | b'+' | b'.' | b'%'
        ) {
            Byte::Punct
        } else if b == b'`' {
            Byte::Backtick
        } else if b == b'\'' || b == b'"' {
            Byte::Quote
        } else {
            Byte::Other
        };
        i += 1;
    }
    t
};

/// A byte that may continue an unquoted identifier.
#[inline]
pub(crate) fn is_ident(b: u8) -> bool {
    CLASS[b as usize] >= Byte::Word
}

/// Index of the first byte at or after `i` that does not continue an identifier.
#[inline]
fn ident_end(src: &[u8], mut i: usize) -> usize {
    while i < src.len() && is_ident(src[i]) {
        i += 1;
    }
    i
}

#[inline]
fn digits_end(src: &[u8], mut i: usize) -> usize {
    while i < src.len() && src[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// A position of the lexer to come back to (see [`Lexer::rewind`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    pos: usize,
    exec_depth: u32,
}

/// Splits SQL bytes into tokens, skipping whitespace and comments (see the
/// module doc for the rules).
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Executable comments currently open; their `*/` closes one.
    exec_depth: u32,
    /// The text cannot be lexed (unterminated string, identifier, comment
    /// or executable comment).
    pub(crate) error: bool,
    /// Routing hint seen in a comment so far.
    pub(crate) hint: Option<Hint>,
    /// Smallest `max_lag` hint seen so far.
    pub(crate) max_lag: Option<Duration>,
    /// `@@socket` was seen (as code: not in a string or comment).
    pub(crate) socket: bool,
    /// A session-tracking variable (`@@session_track_system_variables`,
    /// `@@session_track_gtids`, with or without a scope) was seen.
    pub(crate) tracking: bool,
    /// Comments are read for hints (off for readers that skip them).
    hints: bool,
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
            socket: false,
            tracking: false,
            hints: true,
        }
    }

    /// A lexer that does not read comments for [`Hint`]s (the digest
    /// normalizer drops comments whatever they say).
    pub(crate) fn without_hints(src: &'a [u8]) -> Self {
        Lexer {
            hints: false,
            ..Lexer::new(src)
        }
    }

    /// The current position, to [`Lexer::rewind`] to.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            pos: self.pos,
            exec_depth: self.exec_depth,
        }
    }

    /// The position `pos` with the current executable-comment depth: a
    /// token just lexed can be lexed again from its start.
    pub(crate) fn mark_at(&self, pos: usize) -> Mark {
        Mark {
            pos,
            exec_depth: self.exec_depth,
        }
    }

    /// Goes back (or forward) to a position marked earlier; tokens are
    /// lexed again from there.
    pub(crate) fn rewind(&mut self, m: Mark) {
        self.pos = m.pos;
        self.exec_depth = m.exec_depth;
    }

    /// The next token, or `None` at the end of the text (or of what could
    /// be lexed: then [`Lexer::error`] is set).
    ///
    /// Split in two for speed: this part, inlined into every reader,
    /// handles what makes up most statements (blanks, plain words, plain
    /// integers, one-byte punctuation); everything else (comments,
    /// strings, variables, operators, other numbers, the end) goes to
    /// [`Lexer::next_general`]. Unsplit, the whole lexer was too big to
    /// inline: it showed up as its own function in the digest's profile
    /// (`perf`, `benches/digest.rs`), a call per token that the old private
    /// scanners did not pay.
    #[inline(always)]
    pub(crate) fn next_token(&mut self) -> Option<Token<'a>> {
        let src = self.src;
        let mut start = self.pos;
        while let Some(&b) = src.get(start) {
            match CLASS[b as usize] {
                Byte::Space => start += 1,
                Byte::Word => {
                    let end = ident_end(src, start + 1);
                    return Some(self.token(TokenKind::Word, start, end));
                }
                Byte::Punct => return Some(self.token(TokenKind::Punct(b), start, start + 1)),
                Byte::Backtick => {
                    // A quoted identifier without doubled backticks (ORMs
                    // quote every name): up to the next backtick.
                    let mut end = start + 1;
                    while src.get(end).is_some_and(|&c| c != b'`') {
                        end += 1;
                    }
                    if end < src.len() && src.get(end + 1) != Some(&b'`') {
                        return Some(self.token(TokenKind::QuotedIdent, start, end + 1));
                    }
                    break;
                }
                Byte::Quote => return Some(self.quoted(start, b, TokenKind::Str)),
                Byte::Digit => {
                    // A plain integer: digits not followed by `.` or an
                    // identifier byte (which covers `e`, `x`, `b`).
                    let end = digits_end(src, start + 1);
                    if src
                        .get(end)
                        .is_none_or(|&c| CLASS[c as usize] < Byte::Word && c != b'.')
                    {
                        return Some(self.token(TokenKind::Number, start, end));
                    }
                    break;
                }
                _ => break,
            }
        }
        self.pos = start;
        if start >= src.len() && self.exec_depth == 0 {
            return None;
        }
        self.next_general()
    }

    /// [`Lexer::next_token`] for any text.
    #[inline(never)]
    fn next_general(&mut self) -> Option<Token<'a>> {
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
                Byte::Space => {
                    self.pos += 1;
                    continue;
                }
                Byte::Word => {
                    let end = ident_end(src, start + 1);
                    return Some(self.token(TokenKind::Word, start, end));
                }
                Byte::Digit => return Some(self.number_at(start)),
                _ => {}
            }
            let next = src.get(start + 1).copied();
            match b {
                b'\'' | b'"' => return Some(self.quoted(start, b, TokenKind::Str)),
                b'`' => return Some(self.quoted(start, b, TokenKind::QuotedIdent)),
                b'#' => self.line_comment(start + 1),
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
                _ => return Some(self.operator(start, b, next)),
            }
        }
    }

    #[inline(always)]
    fn token(&mut self, kind: TokenKind, start: usize, end: usize) -> Token<'a> {
        self.pos = end;
        Token {
            kind,
            text: &self.src[start..end],
            start,
        }
    }

    /// An operator or other punctuation byte at `start`; `next` is the byte after it.
    #[inline]
    fn operator(&mut self, start: usize, b: u8, next: Option<u8>) -> Token<'a> {
        let len = match (b, next) {
            (b':', Some(b'=')) => return self.token(TokenKind::Assign, start, start + 2),
            (b'<', Some(b'=')) if self.src.get(start + 2) == Some(&b'>') => 3,
            (b'-', Some(b'>')) if self.src.get(start + 2) == Some(&b'>') => 3,
            (b'<', Some(b'=' | b'>' | b'<'))
            | (b'>', Some(b'=' | b'>'))
            | (b'!', Some(b'='))
            | (b'|', Some(b'|'))
            | (b'&', Some(b'&'))
            | (b'-', Some(b'>')) => 2,
            _ => return self.token(TokenKind::Punct(b), start, start + 1),
        };
        self.token(TokenKind::Op, start, start + len)
    }

    /// Marks the text as not lexable and ends the stream.
    fn fail(&mut self) {
        self.error = true;
        self.pos = self.src.len();
        self.exec_depth = 0;
    }

    /// A string or quoted identifier opened by `quote` at `start`. Doubled
    /// quotes escape a quote; in strings so does a backslash. Unterminated:
    /// the token runs to the end and the lexer fails.
    fn quoted(&mut self, start: usize, quote: u8, kind: TokenKind) -> Token<'a> {
        let src = self.src;
        let escape = if quote == b'`' { quote } else { b'\\' };
        let mut i = start + 1;
        loop {
            i = find2(src, i, quote, escape);
            let Some(&c) = src.get(i) else {
                self.fail();
                return Token {
                    kind,
                    text: &src[start..],
                    start,
                };
            };
            if c == quote {
                if src.get(i + 1) == Some(&quote) {
                    i += 2;
                    continue;
                }
                return self.token(kind, start, i + 1);
            }
            // A backslash: skip it and the byte it escapes.
            i += 2;
        }
    }

    /// A number starting at `start` (a digit, or a `.` before a digit: the
    /// caller decides whether `.5` is a number or `t` `.` `5…`). Something
    /// like `1abc` or `3e1x` is a [`TokenKind::Word`] (MySQL allows
    /// identifiers that start with digits) unless it already holds a `.`
    /// or a signed exponent (`1e+5x` is `1e+5` then `x`).
    pub(crate) fn number_at(&mut self, start: usize) -> Token<'a> {
        let src = self.src;
        let at = |i: usize| src.get(i).copied();
        if at(start) == Some(b'0') {
            let radix: Option<fn(&u8) -> bool> = match at(start + 1) {
                Some(b'x' | b'X') => Some(u8::is_ascii_hexdigit),
                Some(b'b' | b'B') => Some(|c| matches!(c, b'0' | b'1')),
                _ => None,
            };
            if let Some(is_digit) = radix {
                let mut j = start + 2;
                while src.get(j).is_some_and(is_digit) {
                    j += 1;
                }
                if j > start + 2 && !at(j).is_some_and(is_ident) {
                    return self.token(TokenKind::Number, start, j);
                }
            }
        }
        let mut i = digits_end(src, start);
        let mut punctuated = false;
        if at(i) == Some(b'.') {
            // `1.5`, `.5`, and `1.` (but `1.e5`'s `e` is left alone).
            match at(i + 1) {
                Some(c) if c.is_ascii_digit() => {
                    i = digits_end(src, i + 1);
                    punctuated = true;
                }
                Some(c) if is_ident(c) => {}
                _ if i > start => {
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
                punctuated |= j > i + 1;
                i = digits_end(src, j);
            }
        }
        if !punctuated && at(i).is_some_and(is_ident) {
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
                if i == start + 2 {
                    // `@@` without a name: a lone `@` (`@@@identity` is
                    // `@` then `@@identity`).
                    return self.token(TokenKind::Punct(b'@'), start, start + 1);
                }
                if i == start + 8 && src[start + 2..i].eq_ignore_ascii_case(b"socket") {
                    self.socket = true;
                }
                // Length first: names of 19 or more bytes are rare.
                if i >= start + 21 && tracking_var(&src[start + 2..i]).is_some() {
                    self.tracking = true;
                }
                self.token(TokenKind::SysVar, start, i)
            }
            Some(&q @ (b'\'' | b'"' | b'`')) => {
                let t = self.quoted(start + 1, q, TokenKind::UserVar);
                Token {
                    kind: TokenKind::UserVar,
                    text: &src[start..t.end()],
                    start,
                }
            }
            Some(&c) if is_ident(c) => {
                let end = ident_end(src, start + 1);
                self.token(TokenKind::UserVar, start, end)
            }
            _ => self.token(TokenKind::Punct(b'@'), start, start + 1),
        }
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
        if !self.hints {
            return;
        }
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
/// if none). Strings are the longest tokens in typical statements
/// (sysbench's 120-byte `c`), so this looks at 8 bytes per step (SWAR,
/// safe code): for `x = chunk ^ splat(a)`, `(x - 0x01…) & !x & 0x80…` has
/// the high bit set in the lowest byte where `x` is zero, and no false
/// positive below it.
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

/// `payload` (a COM_QUERY: command byte, then SQL) with every `@@socket`
/// system variable (as code, not inside a string or comment) replaced by
/// `NULL`; `None` if there is none or the text does not lex. A `@@socket`
/// that stands alone as an item of a select list gets its text as an
/// alias, so the column keeps the name the server gives it (`@@socket`),
/// as [`replace_connection_id`] does.
pub fn replace_socket_var(payload: &[u8]) -> Option<Vec<u8>> {
    let sql = payload.get(1..)?;
    rewrite_items(payload, b"NULL", |_, t, _| {
        // `@@@socket` (a syntax error) is left alone as it was.
        let hit = t.kind == TokenKind::SysVar
            && t.text.eq_ignore_ascii_case(b"@@socket")
            && (t.start == 0 || sql[t.start - 1] != b'@');
        hit.then(|| t.end())
    })
}

/// The session-tracking variables rwproxy sets on backend connections for
/// its own use (read-your-writes), and the global variable whose value a
/// client that never set them sees.
const TRACKING_VARS: [(&[u8], &[u8]); 2] = [
    (
        b"session_track_system_variables",
        b"@@GLOBAL.session_track_system_variables",
    ),
    (b"session_track_gtids", b"@@GLOBAL.session_track_gtids"),
];

/// For a system variable's name as written after `@@` (`x`,
/// `session.x`, `local.x`; not `global.x`): the global variable to read in
/// its place when it is one of [`TRACKING_VARS`].
fn tracking_var(name: &[u8]) -> Option<&'static [u8]> {
    let bare = match name.iter().position(|&b| b == b'.') {
        Some(dot)
            if name[..dot].eq_ignore_ascii_case(b"session")
                || name[..dot].eq_ignore_ascii_case(b"local") =>
        {
            &name[dot + 1..]
        }
        Some(_) => return None,
        None => name,
    };
    TRACKING_VARS
        .iter()
        .find(|(n, _)| bare.eq_ignore_ascii_case(n))
        .map(|(_, global)| *global)
}

/// `payload` (a COM_QUERY: command byte, then SQL) with every read of a
/// session-tracking variable (`@@session_track_system_variables`,
/// `@@session_track_gtids`, as code) replaced by the global variable's,
/// with the original text as alias where it stands alone in a select list;
/// `None` if there is none or the text does not lex.
///
/// Why: rwproxy adds `last_gtid` (MariaDB) or `OWN_GTID` (MySQL) to the
/// session tracking of its primary connections, for read-your-writes. A
/// client that never set these variables itself has the global value as
/// its own (sessions start with it, `COM_RESET_CONNECTION` restores it),
/// and that is what it must see. Only asked for statements that are not
/// `SET` (an assignment target is never rewritten; a client that sets
/// them manages its own tracking and rwproxy adds none).
pub fn replace_tracking_vars(payload: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for (_, global) in TRACKING_VARS {
        let input = out.as_deref().unwrap_or(payload);
        let r = rewrite_items(input, global, |_, t, _| {
            (t.kind == TokenKind::SysVar && tracking_var(&t.text[2..]) == Some(global))
                .then(|| t.end())
        });
        if r.is_some() {
            out = r;
        }
    }
    out
}

/// `payload` (a COM_QUERY: command byte, then SQL) with every call of
/// `CONNECTION_ID()` (as code, not inside a string or comment, not a
/// function of another schema `db.connection_id()`) replaced by `id`, the
/// session's own id; `None` if there is none or the text does not lex.
///
/// Why a rewrite: the server that runs the statement would answer with its
/// own thread id, which is never the id the client got in rwproxy's
/// handshake (and the statement may run on any server). Substituting the
/// literal keeps the statement where routing sends it and is right inside
/// any expression (`WHERE owner = CONNECTION_ID()`, `INSERT … VALUES
/// (CONNECTION_ID())`). A call that stands alone as an item of a select
/// list gets its text as an alias, so the column keeps the name the server
/// gives it (`CONNECTION_ID()`); inside a larger expression the column is
/// named after the rewritten text. The classifier only asks for this in
/// statements the server evaluates now, never in the body of a stored
/// routine, view or trigger (there the server's own id is what runs).
pub fn replace_connection_id(payload: &[u8], id: u32) -> Option<Vec<u8>> {
    let literal = id.to_string();
    rewrite_items(payload, literal.as_bytes(), |lx, t, prev| {
        let call = t.kind == TokenKind::Word
            && t.text.eq_ignore_ascii_case(b"CONNECTION_ID")
            && !prev.is_some_and(|p| p.is_punct(b'.'));
        if !call {
            return None;
        }
        let after = lx.mark();
        match (lx.next_token(), lx.next_token()) {
            (Some(open), Some(close)) if open.is_punct(b'(') && close.is_punct(b')') => {
                Some(close.end())
            }
            _ => {
                lx.rewind(after);
                None
            }
        }
    })
}

/// Replaces each expression `find` recognises in a COM_QUERY `payload` by
/// `literal`; `None` if there is none or the text does not lex. `find`
/// gets the lexer (positioned after the token), the token and the token
/// before it, and returns where the expression ends (the lexer then
/// stands there). An expression that stands alone as an item of a select
/// list gets its own text as an alias, so the column keeps the name the
/// server would give it; inside a larger expression the column is named
/// after the rewritten text.
fn rewrite_items<'a>(
    payload: &'a [u8],
    literal: &[u8],
    mut find: impl FnMut(&mut Lexer<'a>, Token<'a>, Option<Token<'a>>) -> Option<usize>,
) -> Option<Vec<u8>> {
    /// Parenthesis depths followed for select lists; deeper calls get no alias.
    const DEPTHS: usize = 32;
    let (&cmd, sql) = payload.split_first()?;
    let mut lx = Lexer::new(sql);
    let mut out = Vec::new();
    let mut last = 0;
    // Per parenthesis depth: inside a select list there.
    let mut select_list = [false; DEPTHS];
    let mut depth = 0usize;
    // The token before the current one: (kind, text).
    let mut prev: Option<Token<'_>> = None;
    while let Some(t) = lx.next_token() {
        match t.kind {
            TokenKind::Punct(b'(') => {
                depth += 1;
                if let Some(s) = select_list.get_mut(depth) {
                    *s = false;
                }
            }
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            TokenKind::Punct(b';') => select_list = [false; DEPTHS],
            TokenKind::Word => {
                if let Some(s) = select_list.get_mut(depth) {
                    if t.is_word("SELECT") {
                        *s = true;
                    } else if ENDS_SELECT_LIST.iter().any(|w| t.is_word(w)) {
                        *s = false;
                    }
                }
            }
            _ => {}
        }
        let Some(end) = find(&mut lx, t, prev) else {
            prev = Some(t);
            continue;
        };
        let text = &sql[t.start..end];
        let after_item = lx.mark();
        let next = lx.next_token();
        lx.rewind(after_item);
        let item_starts = prev.is_some_and(|p| {
            p.is_punct(b',') || p.is_word("SELECT") || p.is_word("DISTINCT") || p.is_word("ALL")
        });
        let item_ends = next.is_none_or(|n| {
            n.is_punct(b',')
                || n.is_punct(b')')
                || n.is_punct(b';')
                || ENDS_SELECT_LIST.iter().any(|w| n.is_word(w))
        });
        let alias = select_list.get(depth).copied().unwrap_or(false)
            && item_starts
            && item_ends
            && !text.contains(&b'`');
        if out.is_empty() {
            out.reserve(payload.len() + 32);
            out.push(cmd);
        }
        out.extend_from_slice(&sql[last..t.start]);
        out.extend_from_slice(literal);
        if alias {
            out.extend_from_slice(b" AS `");
            out.extend_from_slice(text);
            out.push(b'`');
        }
        last = end;
        prev = Some(t);
    }
    if out.is_empty() || lx.error {
        return None;
    }
    out.extend_from_slice(&sql[last..]);
    Some(out)
}

/// Words that end a select list (at the depth they appear).
const ENDS_SELECT_LIST: [&str; 12] = [
    "FROM",
    "INTO",
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WINDOW",
    "FOR",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &[u8]) -> (Vec<(TokenKind, String)>, bool) {
        let mut lx = Lexer::new(src);
        let mut out = Vec::new();
        while let Some(t) = lx.next_token() {
            out.push((t.kind, String::from_utf8_lossy(t.text).into_owned()));
        }
        (out, lx.error)
    }

    #[test]
    fn find2_matches_naive_search() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|k| {
                    [b'a', b'\'', b'\\', 0x80, 0x27 ^ 0x80, 0x5b][((x >> (k % 60)) % 6) as usize]
                })
                .collect();
            let from = ((x >> 50) as usize) % (len + 2);
            let naive = (from..len)
                .find(|&k| buf[k] == b'\'' || buf[k] == b'\\')
                .unwrap_or(len);
            assert_eq!(
                find2(&buf, from, b'\'', b'\\'),
                naive,
                "{buf:?} from {from}"
            );
        }
    }

    #[test]
    fn lexer_tokens() {
        let src = b"SELECT @a:=1, @@session.x, @'q r', 0x1F, 1.5e-3, 1abc, `b``c`, 'd''e' /*!50110 k */ - a<=>b->>'$' 1. 3e1x 1e+5x ?";
        let (got, error) = tokens(src);
        assert!(!error);
        use TokenKind::*;
        let want: Vec<(TokenKind, String)> = [
            (Word, "SELECT"),
            (UserVar, "@a"),
            (Assign, ":="),
            (Number, "1"),
            (Punct(b','), ","),
            (SysVar, "@@session.x"),
            (Punct(b','), ","),
            (UserVar, "@'q r'"),
            (Punct(b','), ","),
            (Number, "0x1F"),
            (Punct(b','), ","),
            (Number, "1.5e-3"),
            (Punct(b','), ","),
            (Word, "1abc"),
            (Punct(b','), ","),
            (QuotedIdent, "`b``c`"),
            (Punct(b','), ","),
            (Str, "'d''e'"),
            (Word, "k"),
            (Punct(b'-'), "-"),
            (Word, "a"),
            (Op, "<=>"),
            (Word, "b"),
            (Op, "->>"),
            (Str, "'$'"),
            (Number, "1."),
            (Word, "3e1x"),
            (Number, "1e+5"),
            (Word, "x"),
            (Punct(b'?'), "?"),
        ]
        .into_iter()
        .map(|(k, s)| (k, s.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn comments_and_executable_comments() {
        use TokenKind::*;
        let words = |src: &[u8]| -> Vec<String> {
            tokens(src)
                .0
                .into_iter()
                .filter(|(k, _)| *k == Word)
                .map(|(_, s)| s)
                .collect()
        };
        assert_eq!(words(b"/* a */ b -- c\nd # e\nf"), ["b", "d", "f"]);
        assert_eq!(words(b"--\tc\nd"), ["d"]);
        assert_eq!(
            words(b"/*! a */ /*!50110 b */ /*M! c */ /*M!100100 d */"),
            ["a", "b", "c", "d"]
        );
        // `1--1` is arithmetic, not a comment.
        assert_eq!(tokens(b"1--1").0.len(), 4);
    }

    #[test]
    fn quotes_on_the_inlined_path() {
        use TokenKind::*;
        let (got, error) = tokens(b"`a`.`b``c` `` a'x' \"y\" `d`");
        assert!(!error);
        let got: Vec<(TokenKind, &str)> = got.iter().map(|(k, s)| (*k, s.as_str())).collect();
        assert_eq!(
            got,
            [
                (QuotedIdent, "`a`"),
                (Punct(b'.'), "."),
                (QuotedIdent, "`b``c`"),
                (QuotedIdent, "``"),
                (Word, "a"),
                (Str, "'x'"),
                (Str, "\"y\""),
                (QuotedIdent, "`d`"),
            ]
        );
        // Quotes never continue an identifier.
        assert!(!is_ident(b'\'') && !is_ident(b'"') && !is_ident(b'`'));
    }

    #[test]
    fn unterminated_text_ends_the_stream_with_an_error() {
        use TokenKind::*;
        for (src, last) in [
            (&b"SELECT 'abc"[..], Some((Str, "'abc"))),
            (b"SELECT `abc", Some((QuotedIdent, "`abc"))),
            (b"SELECT @'abc", Some((UserVar, "@'abc"))),
            (b"SELECT 1 /* abc", Some((Number, "1"))),
            (b"SELECT /*! 1", Some((Number, "1"))),
        ] {
            let (got, error) = tokens(src);
            assert!(error, "{src:?}");
            let got_last = got.last().map(|(k, s)| (*k, s.as_str()));
            assert_eq!(got_last, last, "{src:?}");
        }
    }

    #[test]
    fn socket_variable_is_found_only_as_code() {
        let seen = |src: &[u8]| {
            let mut lx = Lexer::new(src);
            while lx.next_token().is_some() {}
            lx.socket
        };
        assert!(seen(b"SELECT @@socket"));
        assert!(seen(b"SELECT /*! @@SOCKET */"));
        assert!(!seen(b"SELECT '@@socket'"));
        assert!(!seen(b"SELECT 1 /* @@socket */"));
        assert!(!seen(b"SELECT @@socket_x, @@session.socket"));
    }

    #[test]
    fn socket_variable_is_replaced_only_where_it_is_code() {
        let r =
            |sql: &[u8]| replace_socket_var(sql).map(|v| String::from_utf8_lossy(&v).into_owned());
        assert_eq!(
            r(b"\x03SELECT @@max_allowed_packet,@@socket").as_deref(),
            Some("\x03SELECT @@max_allowed_packet,NULL AS `@@socket`")
        );
        // The old scan gave up on any quote in the text; strings are
        // tokens now, so only a `@@socket` inside one is left alone.
        assert_eq!(
            r(b"\x03SELECT @@socket, 'x'").as_deref(),
            Some("\x03SELECT NULL AS `@@socket`, 'x'")
        );
        assert_eq!(r(b"\x03SELECT '@@socket'"), None);
        assert_eq!(r(b"\x03SELECT 1 /* @@socket */"), None);
        assert_eq!(
            r(b"\x03SELECT @@session.socket, @@socket_x, @@@socket"),
            None
        );
        assert_eq!(r(b"\x03SELECT @@socket, 'unterminated"), None);
        assert_eq!(r(b""), None);
    }

    #[test]
    fn tracking_variables_read_the_global_value() {
        let r = |sql: &[u8]| {
            replace_tracking_vars(sql).map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        assert_eq!(
            r(b"\x03SELECT @@session_track_system_variables").as_deref(),
            Some(
                "\x03SELECT @@GLOBAL.session_track_system_variables AS `@@session_track_system_variables`"
            )
        );
        assert_eq!(
            r(b"\x03SELECT @@SESSION.session_track_gtids x, @@session_track_system_variables = ''").as_deref(),
            Some("\x03SELECT @@GLOBAL.session_track_gtids x, @@GLOBAL.session_track_system_variables = ''")
        );
        assert_eq!(r(b"\x03SELECT @@global.session_track_gtids"), None);
        assert_eq!(
            r(b"\x03SELECT 'session_track_gtids', @@session_track_schema"),
            None
        );
        let mut lx = Lexer::new(b"SELECT @@local.session_track_gtids");
        while lx.next_token().is_some() {}
        assert!(lx.tracking);
    }

    #[test]
    fn identifier_names() {
        assert_eq!(ident_name(b"app"), "app");
        assert_eq!(ident_name(b"`my db`"), "my db");
        assert_eq!(ident_name(b"`a``b`"), "a`b");
    }

    #[test]
    fn connection_id_is_replaced_where_it_is_code() {
        let r = |sql: &[u8]| {
            replace_connection_id(sql, 42).map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        assert_eq!(
            r(b"\x03SELECT CONNECTION_ID()").as_deref(),
            Some("\x03SELECT 42 AS `CONNECTION_ID()`")
        );
        assert_eq!(
            r(b"\x03select 1, connection_id() from t").as_deref(),
            Some("\x03select 1, 42 AS `connection_id()` from t")
        );
        assert_eq!(
            r(b"\x03SELECT CONNECTION_ID() AS id").as_deref(),
            Some("\x03SELECT 42 AS id")
        );
        assert_eq!(
            r(b"\x03SELECT f(1, CONNECTION_ID(), 2)").as_deref(),
            Some("\x03SELECT f(1, 42, 2)")
        );
        assert_eq!(
            r(b"\x03UPDATE t SET a = 1 WHERE o IN (2, CONNECTION_ID())").as_deref(),
            Some("\x03UPDATE t SET a = 1 WHERE o IN (2, 42)")
        );
        assert_eq!(
            r(b"\x03SELECT (SELECT CONNECTION_ID()), CONNECTION_ID()+1").as_deref(),
            Some("\x03SELECT (SELECT 42 AS `CONNECTION_ID()`), 42+1")
        );
        assert_eq!(r(b"\x03SELECT 'CONNECTION_ID()'"), None);
        assert_eq!(r(b"\x03SELECT 1 /* CONNECTION_ID() */"), None);
        assert_eq!(r(b"\x03SELECT db.CONNECTION_ID()"), None);
        assert_eq!(r(b"\x03SELECT connection_id FROM t"), None);
        assert_eq!(r(b"\x03SELECT CONNECTION_ID(), 'unterminated"), None);
    }
}
