//! GTID positions and the one question rwproxy asks of them: has server A
//! applied everything that B has?
//!
//! Two syntaxes, told apart by the text itself:
//! - MariaDB: `domain-server-sequence`, comma-separated, one entry per
//!   replication domain (`@@gtid_slave_pos`, `@@gtid_binlog_pos`);
//! - MySQL: GTID sets, `uuid:1-15:20,uuid2:1-3` (several source UUIDs,
//!   gaps allowed; MySQL 8.3+ tags as `uuid:tag:1-5`) as `@@gtid_executed`
//!   prints them, with `GTID_SUBSET` semantics for [`GtidPos::covers`].

use std::fmt;

/// A GTID position: per MariaDB replication domain the last applied
/// `(server_id, sequence)`, or a MySQL GTID set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos {
    /// MariaDB, sorted by domain.
    entries: Vec<(u32, u32, u64)>,
    /// MySQL: per `uuid` (or `uuid:tag`, lowercase), sorted and merged
    /// closed intervals of transaction numbers; sorted by source.
    sets: Vec<(String, Vec<(u64, u64)>)>,
}

/// Parses `1-5` or `7` (a closed interval, start ≥ 1, end ≥ start).
fn interval(text: &str) -> Option<(u64, u64)> {
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let n = text.trim().parse().ok()?;
            (n, n)
        }
    };
    (a >= 1 && b >= a).then_some((a, b))
}

/// A UUID as MySQL prints it (8-4-4-4-12 hex digits).
fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Sorts and merges intervals (adjacent ones too: 1-5 and 6-9 are 1-9).
fn normalize(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Parses a MySQL GTID set; unparseable members are skipped.
fn parse_mysql(text: &str) -> Vec<(String, Vec<(u64, u64)>)> {
    let mut sets: Vec<(String, Vec<(u64, u64)>)> = Vec::new();
    for member in text.split(',') {
        let mut parts = member.trim().split(':');
        let Some(uuid) = parts.next().map(|u| u.trim().to_ascii_lowercase()) else {
            continue;
        };
        if !is_uuid(&uuid) {
            continue;
        }
        let mut source = uuid.clone();
        for part in parts {
            match interval(part) {
                Some(iv) => match sets.iter_mut().find(|s| s.0 == source) {
                    Some(s) => s.1.push(iv),
                    None => sets.push((source.clone(), vec![iv])),
                },
                // A tag: the intervals after it belong to `uuid:tag`.
                None if !part.trim().is_empty() => {
                    source = format!("{uuid}:{}", part.trim().to_ascii_lowercase());
                }
                None => {}
            }
        }
    }
    for s in &mut sets {
        s.1 = normalize(std::mem::take(&mut s.1));
    }
    sets.sort();
    sets
}

impl GtidPos {
    /// Parses a MariaDB position (`0-1-100,1-2-5`) or a MySQL GTID set
    /// (`3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,…`). Unparseable
    /// entries are skipped (an empty position covers nothing but the empty
    /// position).
    pub fn parse(text: &str) -> GtidPos {
        if text.contains(':') {
            return GtidPos {
                entries: Vec::new(),
                sets: parse_mysql(text),
            };
        }
        let mut entries: Vec<(u32, u32, u64)> = text
            .split(',')
            .filter_map(|e| {
                let mut it = e.trim().splitn(3, '-');
                let d = it.next()?.parse().ok()?;
                let s = it.next()?.parse().ok()?;
                let n = it.next()?.parse().ok()?;
                Some((d, s, n))
            })
            .collect();
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.0);
        GtidPos {
            entries,
            sets: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.sets.is_empty()
    }

    /// A position no server reaches: stands for a write whose GTID could
    /// not be learned, so that only the primary serves the reads after it.
    pub fn unknown() -> GtidPos {
        GtidPos {
            entries: vec![(u32::MAX, 0, u64::MAX)],
            sets: Vec::new(),
        }
    }

    /// Whether this is [`GtidPos::unknown`] (no replica can be waited on).
    pub fn is_unknown(&self) -> bool {
        self.entries.iter().any(|e| e.0 == u32::MAX)
    }

    /// Whether this position includes every transaction of `other`.
    /// MariaDB: for each domain of `other`, this position's sequence is at
    /// least as far (sequence numbers grow monotonically within a domain,
    /// also across a change of primary when gtid_strict_mode is on).
    /// MySQL: `GTID_SUBSET(other, self)`, every interval of every source
    /// of `other` lies inside this set. A MariaDB position never covers a
    /// non-empty MySQL set, nor the other way round.
    pub fn covers(&self, other: &GtidPos) -> bool {
        let mariadb = other.entries.iter().all(|&(d, _, n)| {
            self.entries
                .iter()
                .find(|e| e.0 == d)
                .is_some_and(|e| e.2 >= n)
        });
        let mysql = other.sets.iter().all(|(source, ivs)| {
            let Some((_, mine)) = self.sets.iter().find(|s| &s.0 == source) else {
                return false;
            };
            // Both lists are merged: each interval must sit in one of ours.
            ivs.iter()
                .all(|&(a, b)| mine.iter().any(|&(x, y)| x <= a && b <= y))
        });
        mariadb && mysql
    }

    /// A rough "how far" used to pick the most advanced server: the
    /// sequence sum (MariaDB), the number of transactions (MySQL).
    pub fn progress(&self) -> u64 {
        let mariadb: u64 = self.entries.iter().map(|e| e.2).sum();
        let mysql: u64 = self
            .sets
            .iter()
            .flat_map(|s| s.1.iter())
            .map(|&(a, b)| b - a + 1)
            .sum();
        mariadb.saturating_add(mysql)
    }
}

impl fmt::Display for GtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (d, s, n)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}-{s}-{n}")?;
        }
        for (i, (source, ivs)) in self.sets.iter().enumerate() {
            if i > 0 || !self.entries.is_empty() {
                f.write_str(",")?;
            }
            f.write_str(source)?;
            for &(a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_cover() {
        let a = GtidPos::parse("0-1-100,1-2-5");
        assert_eq!(a.to_string(), "0-1-100,1-2-5");
        assert!(a.covers(&GtidPos::parse("0-1-99")));
        assert!(a.covers(&GtidPos::parse("0-1-100,1-2-5")));
        assert!(!a.covers(&GtidPos::parse("0-1-101")));
        assert!(!a.covers(&GtidPos::parse("2-1-1")));
        assert!(a.covers(&GtidPos::parse("")));
        assert!(!GtidPos::parse("").covers(&a));
        assert!(GtidPos::parse("garbage,0-1-x").is_empty());
        // A new primary (server 3) continues the same domain's sequence.
        assert!(GtidPos::parse("0-3-120").covers(&GtidPos::parse("0-1-100")));
    }

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "62a8a386-f1cd-11f1-96ff-02fc00000001";

    #[test]
    fn mysql_sets_parse_and_print_as_mysql_does() {
        // @@gtid_executed of the sandbox's primary (MySQL 9.7.4).
        let p = GtidPos::parse("62a8a386-f1cd-11f1-96ff-02fc00000001:1-15");
        assert_eq!(p.to_string(), format!("{B}:1-15"));
        assert_eq!(p.progress(), 15);
        // Several sources (MySQL separates them with ",\n"), gaps,
        // upper-case, adjacent intervals merged, single transactions.
        let s = GtidPos::parse(&format!(
            "{},\n{A}:1-3:4-5:9:7\n",
            B.to_uppercase() + ":1-2"
        ));
        assert_eq!(s.to_string(), format!("{A}:1-5:7:9,{B}:1-2"));
        assert_eq!(s.progress(), 9);
        assert!(!s.is_empty() && !s.is_unknown());
        // Tags (MySQL 8.3+).
        let t = GtidPos::parse(&format!("{A}:1-5:blue:1-2"));
        assert_eq!(t.to_string(), format!("{A}:1-5,{A}:blue:1-2"));
        assert!(GtidPos::parse("not-a-uuid:1-5,x:y").is_empty());
    }

    #[test]
    fn mysql_covers_is_gtid_subset() {
        let all = GtidPos::parse(&format!("{A}:1-10,{B}:1-3"));
        // GTID_SUBSET(x, all) = 1
        for x in [
            format!("{A}:1-10"),
            format!("{A}:2-4:8,{B}:3"),
            format!("{B}:1-3,{A}:10"),
        ] {
            assert!(all.covers(&GtidPos::parse(&x)), "{x}");
        }
        // GTID_SUBSET(x, all) = 0
        for x in [
            format!("{A}:1-11"),
            format!("{A}:1-10,{B}:4"),
            "aaaaaaaa-71ca-11e1-9e33-c80aa9429562:1".to_string(),
        ] {
            assert!(!all.covers(&GtidPos::parse(&x)), "{x}");
        }
        // A gap is not covered by the intervals around it.
        let gap = GtidPos::parse(&format!("{A}:1-5:7-10"));
        assert!(!gap.covers(&GtidPos::parse(&format!("{A}:6"))));
        assert!(!gap.covers(&GtidPos::parse(&format!("{A}:5-7"))));
        assert!(gap.covers(&GtidPos::parse("")));
        // Flavors never cover each other; unknown is covered by nothing.
        assert!(!all.covers(&GtidPos::parse("0-1-1")));
        assert!(!GtidPos::parse("0-1-100").covers(&all));
        assert!(!all.covers(&GtidPos::unknown()));
    }
}
