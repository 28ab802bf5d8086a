//! Old scanners (`old_scan`, verbatim copies) and the new ones on
//! [`super::lex`], side by side over the fuzz corpus (`fuzz/corpus/classify`,
//! `fuzz/corpus/set`) and every string literal of the unit, integration and
//! bench sources (the unit-test corpus), each also wrapped in comments.
//! Every disagreement must be one of the intended differences listed in
//! `intended`, each of which has its own unit test next to the new code.

use std::collections::BTreeMap;
use std::path::Path;

use super::old_scan;
use super::{classify, digest, lex, set};

/// String literals (`"…"`, `b"…"`) of a Rust source, roughly unescaped.
fn literals(src: &str) -> Vec<Vec<u8>> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            let mut j = i + 1;
            let mut lit = Vec::new();
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' && j + 1 < b.len() {
                    j += 1;
                    match b[j] {
                        b'n' => lit.push(b'\n'),
                        b't' => lit.push(b'\t'),
                        b'r' => lit.push(b'\r'),
                        b'0' => lit.push(0),
                        b'x' if j + 2 < b.len() => {
                            let hex = std::str::from_utf8(&b[j + 1..j + 3]).unwrap_or("3f");
                            lit.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                            j += 2;
                        }
                        b'\n' => {
                            while j + 1 < b.len() && b[j + 1].is_ascii_whitespace() {
                                j += 1;
                            }
                        }
                        c => lit.push(c),
                    }
                } else {
                    lit.push(b[j]);
                }
                j += 1;
            }
            out.push(lit);
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = Vec::new();
    for dir in ["fuzz/corpus/classify", "fuzz/corpus/set"] {
        let entries = std::fs::read_dir(root.join(dir)).expect("fuzz corpus");
        for e in entries {
            let path = e.expect("entry").path();
            texts.push(std::fs::read(path).expect("read corpus file"));
        }
    }
    for dir in ["src/router", "src/session", "tests", "benches"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("entry").path();
            if path.extension().is_some_and(|x| x == "rs") {
                let src = std::fs::read_to_string(&path).expect("read source");
                texts.extend(literals(&src));
            }
        }
    }
    texts.sort();
    texts.dedup();
    let mut all = Vec::with_capacity(texts.len() * 3);
    for t in texts {
        let mut commented = b"/* c */ ".to_vec();
        commented.extend_from_slice(&t);
        commented.extend_from_slice(b" -- x");
        let mut exec = b"/*!50110 ".to_vec();
        exec.extend_from_slice(&t);
        exec.extend_from_slice(b" */");
        all.push(t);
        all.push(commented);
        all.push(exec);
    }
    all
}

/// Disagreements by check, with up to a few examples each.
#[derive(Default)]
struct Tally {
    agree: BTreeMap<&'static str, usize>,
    differ: BTreeMap<&'static str, Vec<String>>,
    intended: BTreeMap<&'static str, Vec<String>>,
}

impl Tally {
    fn check(&mut self, name: &'static str, sql: &[u8], old: String, new: String, intended: bool) {
        if old == new {
            *self.agree.entry(name).or_default() += 1;
        } else if intended {
            self.intended.entry(name).or_default().push(format!(
                "{:?}\n      old {old}\n      new {new}",
                String::from_utf8_lossy(sql)
            ));
        } else {
            self.differ.entry(name).or_default().push(format!(
                "{:?}\n      old {old}\n      new {new}",
                String::from_utf8_lossy(sql)
            ));
        }
    }
}

fn has(sql: &[u8], needle: &[u8]) -> bool {
    sql.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The old scanners skipped executable comments (`skip_comments`) or any
/// comment text (`parse_use`, `is_commit`) as if they were nothing.
fn has_comment(sql: &[u8]) -> bool {
    has(sql, b"/*") || has(sql, b"--") || has(sql, b"#")
}

#[test]
fn old_and_new_scanners_agree() {
    let corpus = corpus();
    let mut t = Tally::default();
    let (mut old_text, mut new_text) = (String::new(), String::new());
    for sql in &corpus {
        let sql = &sql[..];
        let o = old_scan::classify::classify(sql);
        let n = classify::classify(sql);
        // Intended: the new lexer reads `1.` as one number and `3e1x` as a
        // word (as the digest and MySQL do); the classifier only differs
        // on such text when it names what EXPLAIN explains.
        t.check(
            "classify",
            sql,
            format!(
                "{:?} {:?} {:?} {} {:?}",
                o.kind, o.hint, o.max_lag, o.pins_session, o.tx
            ),
            format!(
                "{:?} {:?} {:?} {} {:?}",
                n.kind, n.hint, n.max_lag, n.pins_session, n.tx
            ),
            false,
        );

        let od = old_scan::digest::normalize(sql, &mut old_text);
        let nd = digest::normalize(sql, &mut new_text);
        t.check(
            "digest",
            sql,
            format!("{od:x} {old_text}"),
            format!("{nd:x} {new_text}"),
            false,
        );

        t.check(
            "parse_set",
            sql,
            format!("{:?}", old_scan::set::parse_set(sql)),
            format!("{:?}", set::parse_set(sql)),
            false,
        );
        t.check(
            "next_transaction_read_only",
            sql,
            old_scan::set::next_transaction_read_only(sql).to_string(),
            set::next_transaction_read_only(sql).to_string(),
            false,
        );

        if o.kind == old_scan::classify::StatementKind::Use {
            // Intended: comments around the name (the old code kept them
            // in the name or, before `USE`, found no name at all).
            t.check(
                "USE target",
                sql,
                format!("{:?}", old_scan::session::parse_use(sql)),
                format!("{:?}", n.schema(sql)),
                // … and took `USE a b` (a syntax error) as schema `a b`.
                has_comment(sql)
                    || old_scan::session::parse_use(sql).is_some_and(|s| s.contains(' ')),
            );
        }
        if o.kind == old_scan::classify::StatementKind::Transaction {
            let old = old_scan::session::opens_transaction(&o, sql);
            // Intended: a comment that is not `-- ` or `/* */` at the
            // very front (`--\t`, `/*!…*/` as code) no longer hides the
            // statement word.
            t.check(
                "opens transaction",
                sql,
                old.to_string(),
                n.begins.to_string(),
                // Nor does a leading empty statement (`;BEGIN`).
                has_comment(sql) || sql.trim_ascii_start().starts_with(b";"),
            );
        }
        // Intended: comments after `COMMIT` are comments.
        t.check(
            "is_commit",
            sql,
            old_scan::session::is_commit(sql).to_string(),
            classify::is_plain_commit(sql).to_string(),
            has_comment(sql),
        );

        let mut payload = vec![3u8];
        payload.extend_from_slice(sql);
        let old = old_scan::session::hide_socket(&payload);
        let new = n
            .reads_socket
            .then(|| lex::replace_socket_var(&payload))
            .flatten();
        // Intended: `@@socket` is replaced where it is code even when the
        // text also has quotes (the old scan gave up on any quote), and
        // never inside a string or comment.
        let quotes = sql.iter().any(|b| matches!(b, b'\'' | b'"' | b'`'));
        t.check(
            "hide_socket",
            sql,
            format!("{old:?}"),
            format!("{new:?}"),
            quotes || has_comment(sql),
        );
    }
    println!("{} texts", corpus.len());
    for (name, n) in &t.agree {
        println!("{name}: {n} agree");
    }
    for (name, examples) in &t.intended {
        println!("{name}: {} differ as intended", examples.len());
        for e in examples.iter().take(4) {
            println!("    {e}");
        }
    }
    for (name, examples) in &t.differ {
        println!("{name}: {} DIFFER", examples.len());
        for e in examples.iter().take(8) {
            println!("    {e}");
        }
    }
    assert!(t.differ.is_empty(), "old and new scanners disagree");
}
