//! Verbatim copies of the session's scanners before the shared lexer.

use super::classify::{Classified, StatementKind};

pub fn hide_socket(payload: &[u8]) -> Option<Vec<u8>> {
    const NEEDLE: &[u8] = b"@@socket";
    let sql = payload.get(1..)?;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut hits = Vec::new();
    let mut i = 0;
    while let Some(off) = sql
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'@'))
    {
        let at = i + off;
        let end = at + NEEDLE.len();
        if sql
            .get(at..end)
            .is_some_and(|w| w.eq_ignore_ascii_case(NEEDLE))
            && !sql.get(end).copied().is_some_and(is_ident)
            && (at == 0 || sql[at - 1] != b'@')
        {
            hits.push(at);
            i = end;
        } else {
            i = at + 1;
        }
    }
    // Never touch text that has quotes: `@@socket` might sit inside a
    // string literal (user data). Drivers' probes have none.
    if hits.is_empty() || sql.iter().any(|b| matches!(b, b'\'' | b'"' | b'`')) {
        return None;
    }
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.push(payload[0]);
    let mut last = 0;
    for at in hits {
        out.extend_from_slice(&sql[last..at]);
        out.extend_from_slice(b"NULL");
        last = at + NEEDLE.len();
    }
    out.extend_from_slice(&sql[last..]);
    Some(out)
}

pub fn opens_transaction(c: &Classified, sql: &[u8]) -> bool {
    match c.kind {
        StatementKind::Transaction => {
            let word: Vec<u8> = skip_comments(sql)
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .map(u8::to_ascii_uppercase)
                .collect();
            matches!(&word[..], b"BEGIN" | b"START" | b"XA")
        }
        StatementKind::Set => match super::set::parse_set(sql) {
            super::set::SetEffect::Session(items) => items.iter().any(|i| {
                i.key == "autocommit" && {
                    let v = i.text.rsplit('=').next().unwrap_or("").trim();
                    v == "0" || v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false")
                }
            }),
            _ => false,
        },
        _ => false,
    }
}
pub fn is_commit(sql: &[u8]) -> bool {
    let rest = skip_comments(sql);
    let word = |s: &[u8], w: &[u8]| {
        s.len() >= w.len()
            && s[..w.len()].eq_ignore_ascii_case(w)
            && !s
                .get(w.len())
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };
    if !word(rest, b"COMMIT") {
        return false;
    }
    let after = rest[6..].trim_ascii();
    let after = if word(after, b"WORK") {
        after[4..].trim_ascii()
    } else {
        after
    };
    after.is_empty() || after == b";"
}
pub fn skip_comments(mut sql: &[u8]) -> &[u8] {
    loop {
        sql = sql.trim_ascii_start();
        if let Some(rest) = sql.strip_prefix(b"/*") {
            match rest.windows(2).position(|w| w == b"*/") {
                Some(end) => sql = &rest[end + 2..],
                None => return &[],
            }
        } else if sql.starts_with(b"#") || sql.starts_with(b"-- ") {
            match sql.iter().position(|&b| b == b'\n') {
                Some(end) => sql = &sql[end + 1..],
                None => return &[],
            }
        } else {
            return sql;
        }
    }
}

pub fn parse_use(sql: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(sql);
    let t = text.trim();
    let rest = t
        .get(..3)
        .filter(|k| k.eq_ignore_ascii_case("use"))
        .map(|_| &t[3..])?;
    let name = rest.trim().trim_end_matches(';').trim();
    let name = name
        .strip_prefix('`')
        .and_then(|n| n.strip_suffix('`'))
        .map(|n| n.replace("``", "`"))
        .unwrap_or_else(|| name.to_string());
    (!name.is_empty()).then_some(name)
}
