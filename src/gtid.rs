//! MariaDB GTID positions (`domain-server-sequence`, comma-separated, one
//! entry per replication domain) and the one question rwproxy asks of
//! them: has server A applied everything that B has?

use std::fmt;

/// A GTID position: per replication domain, the last applied
/// `(server_id, sequence)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos {
    /// Sorted by domain.
    entries: Vec<(u32, u32, u64)>,
}

impl GtidPos {
    /// Parses `0-1-100,1-2-5`. Unparseable entries are skipped (an empty
    /// position covers nothing but the empty position).
    pub fn parse(text: &str) -> GtidPos {
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
        GtidPos { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A position no server reaches: stands for a write whose GTID could
    /// not be learned, so that only the primary serves the reads after it.
    pub fn unknown() -> GtidPos {
        GtidPos {
            entries: vec![(u32::MAX, 0, u64::MAX)],
        }
    }

    /// Whether this is [`GtidPos::unknown`] (no replica can be waited on).
    pub fn is_unknown(&self) -> bool {
        self.entries.iter().any(|e| e.0 == u32::MAX)
    }

    /// Whether this position includes every transaction of `other`: for
    /// each domain of `other`, this position's sequence is at least as far.
    /// (MariaDB sequence numbers grow monotonically within a domain, also
    /// across a change of primary when gtid_strict_mode is on.)
    pub fn covers(&self, other: &GtidPos) -> bool {
        other.entries.iter().all(|&(d, _, n)| {
            self.entries
                .iter()
                .find(|e| e.0 == d)
                .is_some_and(|e| e.2 >= n)
        })
    }

    /// Sequence sum, a rough "how far" used to pick the most advanced server.
    pub fn progress(&self) -> u64 {
        self.entries.iter().map(|e| e.2).sum()
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
}
