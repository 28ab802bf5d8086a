//! Query rules: a small firewall for the worst cases, configured as an
//! ordered `[[rules]]` list (see [`crate::config::RuleConfig`]).
//!
//! A rule matches on any combination of statement kind, digest, a regular
//! expression over the statement text, user and schema (every field given
//! must match), and then either denies the statement (ERR 1142, the server
//! never sees it) or forces its route. The first matching rule wins.
//!
//! Everything that can be prepared is prepared at config load: regexes are
//! compiled, digest texts are normalized to their id. On the statement path
//! an empty rule set costs one branch: no digest, no regex. With rules, the
//! cheap fields are compared first, the digest is computed at most once and
//! only if some rule reached its digest test, and regexes run last.
//!
//! A COM_QUERY text holding several statements is matched as a whole (its
//! kind is the combined kind the router uses). `COM_INIT_DB` and
//! `COM_FIELD_LIST` are protocol commands, not statements, and are not
//! matched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::SessionView;
use super::classify::{Classified, Hint, StatementKind};
use crate::config::{ConfigError, RuleAction, RuleConfig, RuleRoute};

/// The longest rule name; names go into error messages and metric labels.
const MAX_NAME_LEN: usize = 64;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Refuse the statement.
    Deny,
    /// Override the router's choice (see [`apply_route`]).
    Route(RuleRoute),
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: Arc<str>,
    kind: Option<StatementKind>,
    /// Digest id ([`super::digest::digest_id`]) the statement must have.
    digest: Option<u64>,
    /// Searched in the raw bytes: statements need not be UTF-8.
    regex: Option<regex::bytes::Regex>,
    user: Option<String>,
    schema: Option<String>,
    pub verdict: Verdict,
    /// Statements this rule decided. Shared with the rule of the same name
    /// in a reloaded set, so counters survive RELOAD (and sessions still on
    /// the old set count into the same counter).
    hits: Arc<AtomicU64>,
}

impl Rule {
    /// The ERR a denied client gets: 1142 / 42000 like a privilege error,
    /// naming the rule so the application's developers know whom to ask.
    pub fn denial(&self) -> crate::protocol::ClientError {
        crate::protocol::ClientError::new(
            1142,
            b"42000",
            format!("statement denied by rwproxy rule '{}'", self.name),
        )
    }
}

/// The rules in force, in order.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

/// What a statement is matched on.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The statement text as the client sent it.
    pub sql: &'a [u8],
    pub kind: StatementKind,
    pub user: &'a str,
    pub schema: Option<&'a str>,
}

fn rule_err(i: usize, name: &str, field: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        field: format!("rules[{i}].{field}"),
        reason: format!("rule {name:?}: {reason}"),
    }
}

/// A digest given as 16 hex digits (as `SHOW DIGESTS` prints ids).
fn digest_id_literal(s: &str) -> Option<u64> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        u64::from_str_radix(h, 16).ok()
    } else {
        None
    }
}

impl RuleSet {
    /// Checks and compiles the configured rules; errors name the rule.
    pub fn compile(config: &[RuleConfig]) -> Result<RuleSet, ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut rules = Vec::with_capacity(config.len());
        for (i, r) in config.iter().enumerate() {
            let name = r.name.as_str();
            if name.is_empty()
                || name.len() > MAX_NAME_LEN
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
            {
                return Err(rule_err(
                    i,
                    name,
                    "name",
                    format!(
                        "must be 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 _ - . : (it appears in errors and metric labels)"
                    ),
                ));
            }
            if !names.insert(name) {
                return Err(rule_err(i, name, "name", "duplicate rule name"));
            }
            let verdict = match (r.action, r.route) {
                (Some(RuleAction::Deny), None) => Verdict::Deny,
                (None, Some(route)) => Verdict::Route(route),
                (Some(_), Some(_)) => {
                    return Err(rule_err(
                        i,
                        name,
                        "action",
                        "set either `action` or `route`, not both",
                    ));
                }
                (None, None) => {
                    return Err(rule_err(
                        i,
                        name,
                        "action",
                        "needs `action = \"deny\"` or `route = \"primary\" | \"replica\"`",
                    ));
                }
            };
            if r.kind.is_none()
                && r.digest.is_none()
                && r.regex.is_none()
                && r.user.is_none()
                && r.schema.is_none()
            {
                return Err(rule_err(
                    i,
                    name,
                    "kind",
                    "needs at least one of `kind`, `digest`, `regex`, `user`, `schema`",
                ));
            }
            let digest = match r.digest.as_deref() {
                None => None,
                Some(d) if d.trim().is_empty() => {
                    return Err(rule_err(i, name, "digest", "must not be empty"));
                }
                Some(d) => Some(digest_id_literal(d).unwrap_or_else(|| {
                    let mut text = String::new();
                    super::digest::normalize(d.as_bytes(), &mut text)
                })),
            };
            let regex = match r.regex.as_deref() {
                None => None,
                Some(re) => {
                    Some(regex::bytes::Regex::new(re).map_err(|e| rule_err(i, name, "regex", e))?)
                }
            };
            rules.push(Rule {
                name: name.into(),
                kind: r.kind,
                digest,
                regex,
                user: r.user.clone(),
                schema: r.schema.clone(),
                verdict,
                hits: Arc::default(),
            });
        }
        Ok(RuleSet { rules })
    }

    /// No rules: the statement path skips matching entirely.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Takes over the hit counters of same-named rules of `old`.
    pub fn inherit_hits(&mut self, old: &RuleSet) {
        for r in self.rules.iter_mut() {
            if let Some(o) = old.rules.iter().find(|o| o.name == r.name) {
                r.hits = o.hits.clone();
            }
        }
    }

    /// Each rule's name and hit count, in order.
    pub fn hits(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rules
            .iter()
            .map(|r| (&*r.name, r.hits.load(Ordering::Relaxed)))
    }

    /// The first rule matching `s`, counted as a hit. `digest` computes the
    /// statement's digest id; it is called at most once, and only when a
    /// rule that got that far has a digest to compare.
    pub fn check(&self, s: &Subject<'_>, digest: impl FnOnce() -> u64) -> Option<&Rule> {
        let mut digest = Some(digest);
        let mut id: Option<u64> = None;
        for r in &self.rules {
            if r.kind.is_some_and(|k| k != s.kind)
                || r.user.as_deref().is_some_and(|u| u != s.user)
                || r.schema
                    .as_deref()
                    .is_some_and(|want| s.schema != Some(want))
            {
                continue;
            }
            if let Some(want) = r.digest {
                let have = match id {
                    Some(d) => d,
                    None => {
                        let d = digest.take().map(|f| f()).unwrap_or_default();
                        id = Some(d);
                        d
                    }
                };
                if have != want {
                    continue;
                }
            }
            if r.regex.as_ref().is_some_and(|re| !re.is_match(s.sql)) {
                continue;
            }
            r.hits.fetch_add(1, Ordering::Relaxed);
            return Some(r);
        }
        None
    }
}

/// Applies a rule's forced route to a statement's classification, without
/// ever breaking correctness:
///
/// - `primary` is always honoured: any statement may run on the primary.
/// - `replica` moves only reads (`read`, and `read_primary` such as `SHOW`
///   or a locking read outside a transaction: the operator asked for it),
///   and only when the session could run them anywhere: not inside a
///   transaction, with autocommit on, not pinned to its primary connection
///   by unreplayable state, and the statement itself creates none. A write
///   sent to a replica would fail, or worse, succeed and diverge it; a read
///   inside a transaction must see the transaction's own writes; pinned
///   state (temporary tables, user variables, locks) exists only on the
///   primary connection. The application's own `/* rwproxy:primary */` hint
///   also wins over a forced replica (it usually marks read-your-writes).
///   In all these cases the router decides as if there were no rule.
///
/// A forced replica still honours lag limits and read-your-writes (the
/// router picks among replicas that qualify, or falls back as configured).
///
/// Caveat, on purpose: `read_primary` also covers reads whose *answer*
/// depends on the primary connection (`LAST_INSERT_ID()`, `FOUND_ROWS()`,
/// `ROW_COUNT()`) and sequence reads (`NEXTVAL`). The classifier does not
/// tell these apart from `SHOW` or a lock-free use of a locking read, so a
/// rule forcing them to a replica gets what it asked for; match such rules
/// narrowly (`digest` or `regex`), not on `kind = "read_primary"` alone.
pub fn apply_route(c: Classified, route: RuleRoute, session: SessionView) -> Classified {
    match route {
        RuleRoute::Primary => Classified {
            hint: Some(Hint::Primary),
            ..c
        },
        RuleRoute::Replica => {
            let movable = matches!(c.kind, StatementKind::Read | StatementKind::ReadPrimary)
                && !c.pins_session
                && c.hint != Some(Hint::Primary)
                && !session.in_transaction
                && session.autocommit
                && !session.pinned;
            if movable {
                Classified {
                    hint: Some(Hint::Replica),
                    ..c
                }
            } else {
                c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::classify::classify;

    fn rules(toml_text: &str) -> Result<RuleSet, ConfigError> {
        #[derive(serde::Deserialize)]
        struct R {
            rules: Vec<RuleConfig>,
        }
        let r: R = toml::from_str(toml_text).expect("toml");
        RuleSet::compile(&r.rules)
    }

    const SET: &str = r#"
[[rules]]
name = "no-truncate"
regex = '(?i)^\s*truncate\b'
action = "deny"

[[rules]]
name = "no-delete-t"
digest = "delete from t"
action = "deny"

[[rules]]
name = "reports-to-replica"
user = "report"
kind = "read_primary"
route = "replica"

[[rules]]
name = "app-writes-in-audit"
kind = "write"
schema = "audit"
action = "deny"

[[rules]]
name = "by-id"
digest = "0x0000000000000001"
route = "primary"

[[rules]]
name = "sleepers"
regex = '(?i)\bsleep\s*\('
route = "primary"
"#;

    fn subject<'a>(sql: &'a str, user: &'a str, schema: Option<&'a str>) -> Subject<'a> {
        Subject {
            sql: sql.as_bytes(),
            kind: classify(sql.as_bytes()).kind,
            user,
            schema,
        }
    }

    fn digest_of(sql: &str) -> u64 {
        let mut t = String::new();
        crate::router::digest::normalize(sql.as_bytes(), &mut t)
    }

    #[test]
    fn first_matching_rule_decides() {
        let set = rules(SET).expect("valid");
        // (sql, user, schema, expected rule)
        let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            ("TRUNCATE TABLE t", "app", None, Some("no-truncate")),
            ("  truncate t", "app", Some("app"), Some("no-truncate")),
            ("SELECT 'truncate'", "app", None, None),
            ("DELETE FROM t", "app", None, Some("no-delete-t")),
            (
                "delete   from t -- comment",
                "app",
                None,
                Some("no-delete-t"),
            ),
            ("DELETE FROM t WHERE id = 1", "app", None, None),
            ("DELETE FROM u", "app", None, None),
            ("SHOW TABLES", "report", None, Some("reports-to-replica")),
            ("SHOW TABLES", "app", None, None),
            ("SELECT 1", "report", None, None),
            (
                "INSERT INTO x VALUES (1)",
                "app",
                Some("audit"),
                Some("app-writes-in-audit"),
            ),
            ("INSERT INTO x VALUES (1)", "app", Some("app"), None),
            ("SELECT * FROM x", "app", Some("audit"), None),
            ("SELECT SLEEP(1)", "app", None, Some("sleepers")),
            // First match wins: both no-truncate and sleepers match.
            (
                "TRUNCATE t /* sleep(1) */",
                "app",
                None,
                Some("no-truncate"),
            ),
        ];
        for (sql, user, schema, want) in cases {
            let s = subject(sql, user, *schema);
            let got = set.check(&s, || digest_of(sql)).map(|r| &*r.name);
            assert_eq!(got, *want, "{sql:?} as {user} in {schema:?}");
        }
    }

    #[test]
    fn digest_given_as_id_matches() {
        let id = digest_of("SELECT c FROM t WHERE id = 5");
        let text = format!("[[rules]]\nname = \"x\"\ndigest = \"{id:016x}\"\naction = \"deny\"\n");
        let set = rules(&text).expect("valid");
        let sql = "select c from t where id=99";
        assert!(
            set.check(&subject(sql, "a", None), || digest_of(sql))
                .is_some()
        );
        let sql = "select d from t where id=99";
        assert!(
            set.check(&subject(sql, "a", None), || digest_of(sql))
                .is_none()
        );
    }

    #[test]
    fn hits_are_counted_and_survive_reload() {
        let set = rules(SET).expect("valid");
        for _ in 0..3 {
            set.check(&subject("TRUNCATE t", "a", None), || 0);
        }
        set.check(&subject("SELECT 1", "a", None), || 0);
        let hits: Vec<(&str, u64)> = set.hits().collect();
        assert_eq!(hits[0], ("no-truncate", 3));
        assert!(hits[1..].iter().all(|(_, n)| *n == 0));
        let mut next = rules(SET).expect("valid");
        next.inherit_hits(&set);
        next.check(&subject("TRUNCATE t", "a", None), || 0);
        assert_eq!(next.hits().next(), Some(("no-truncate", 4)));
        assert_eq!(set.hits().next(), Some(("no-truncate", 4)));
    }

    /// The zero-cost promise: no rules, or rules that never reach a digest
    /// test, never compute the digest.
    #[test]
    fn digest_is_computed_only_when_a_rule_needs_it() {
        let empty = RuleSet::default();
        assert!(empty.is_empty());
        assert!(
            empty
                .check(&subject("SELECT 1", "a", None), || panic!(
                    "digest computed"
                ))
                .is_none()
        );
        let set = rules(
            "[[rules]]\nname = \"a\"\nkind = \"write\"\ndigest = \"DELETE FROM t\"\naction = \"deny\"\n\
             [[rules]]\nname = \"b\"\nkind = \"write\"\ndigest = \"DELETE FROM u\"\naction = \"deny\"\n",
        )
        .expect("valid");
        assert!(
            set.check(&subject("SELECT 1", "a", None), || panic!(
                "digest computed"
            ))
            .is_none()
        );
        let calls = std::cell::Cell::new(0);
        let r = set.check(&subject("DELETE FROM u", "a", None), || {
            calls.set(calls.get() + 1);
            digest_of("DELETE FROM u")
        });
        assert_eq!(r.map(|r| &*r.name), Some("b"));
        assert_eq!(calls.get(), 1, "computed once for two digest rules");
    }

    #[test]
    fn bad_rules_are_config_errors_naming_the_rule() {
        let cases: &[(&str, &str)] = &[
            (
                "[[rules]]\nname = \"bad-re\"\nregex = \"(unclosed\"\naction = \"deny\"\n",
                "rules[0].regex",
            ),
            (
                "[[rules]]\nname = \"n\"\nkind = \"write\"\n",
                "rules[0].action",
            ),
            (
                "[[rules]]\nname = \"n\"\nkind = \"write\"\naction = \"deny\"\nroute = \"primary\"\n",
                "rules[0].action",
            ),
            (
                "[[rules]]\nname = \"n\"\naction = \"deny\"\n",
                "rules[0].kind",
            ),
            (
                "[[rules]]\nname = \"a b\"\nkind = \"write\"\naction = \"deny\"\n",
                "rules[0].name",
            ),
            (
                "[[rules]]\nname = \"d\"\nkind = \"write\"\naction = \"deny\"\n[[rules]]\nname = \"d\"\nkind = \"read\"\naction = \"deny\"\n",
                "rules[1].name",
            ),
            (
                "[[rules]]\nname = \"e\"\ndigest = \" \"\naction = \"deny\"\n",
                "rules[0].digest",
            ),
        ];
        for (text, field) in cases {
            let e = rules(text).expect_err(text).to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
        let e = rules("[[rules]]\nname = \"bad-re\"\nregex = \"(x\"\naction = \"deny\"\n")
            .expect_err("bad regex")
            .to_string();
        assert!(e.contains("bad-re"), "{e}");
    }

    #[test]
    fn forced_replica_never_breaks_correctness() {
        let free = SessionView {
            in_transaction: false,
            autocommit: true,
            pinned: false,
            read_only: false,
            replica_tx: None,
        };
        let in_tx = SessionView {
            in_transaction: true,
            ..free
        };
        let no_ac = SessionView {
            autocommit: false,
            ..free
        };
        let pinned = SessionView {
            pinned: true,
            ..free
        };
        // (sql, session, forced replica takes effect)
        let cases: &[(&str, SessionView, bool)] = &[
            ("SELECT * FROM t", free, true),
            ("SHOW TABLES", free, true),
            ("SELECT * FROM t FOR UPDATE", free, true),
            ("SELECT * FROM t", in_tx, false),
            ("SELECT * FROM t", no_ac, false),
            ("SELECT * FROM t", pinned, false),
            ("INSERT INTO t VALUES (1)", free, false),
            ("UPDATE t SET a = 1", free, false),
            ("BEGIN", free, false),
            ("SET @a = 1", free, false),
            ("SELECT GET_LOCK('x', 1)", free, false),
            ("/* rwproxy:primary */ SELECT * FROM t", free, false),
        ];
        for (sql, view, moved) in cases {
            let c = classify(sql.as_bytes());
            let out = apply_route(c, RuleRoute::Replica, *view);
            assert_eq!(
                out.hint == Some(Hint::Replica),
                *moved,
                "{sql:?} with {view:?}: {out:?}"
            );
            if !moved {
                assert_eq!(out, c, "{sql:?} left to the router");
            }
            let p = apply_route(c, RuleRoute::Primary, *view);
            assert_eq!(p.hint, Some(Hint::Primary), "{sql:?}");
        }
    }
}
