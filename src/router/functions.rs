//! Names of the server's built-in functions and SQL keywords, for telling a
//! stored-function call (`f(…)`, `db.f(…)`) from a built-in one in a read.
//!
//! A read that calls a stored function may write (the function runs on the
//! server that answers the read, and a replica would then diverge from its
//! primary): the classifier flags it ([`super::classify::Classified::calls_functions`])
//! and the session sends it to the primary unless every called function is
//! known not to write (see `crate::catalog`).
//!
//! The table holds every name MariaDB knows as a function or a keyword: a
//! word that can stand before `(` without being a call (`IN (`, `EXISTS (`,
//! `OVER (`, `DECIMAL(10,2)`, `COLUMNS (`…) is a keyword. It is generated
//! from a real server by `scripts/gen-builtin-functions.sh`; a name missing
//! from it (a newer built-in, a MySQL-only one) is taken for a stored
//! function, which only costs a trip to the primary. The one case it gets
//! wrong the other way: an *unqualified* call of a stored function named
//! like a keyword (`comment()`); write `db.comment()` or add a
//! `rwproxy:primary` hint.
//!
//! Lookup is a hash table built at compile time ([`is_builtin`]: one
//! probe, usually), done only for a `word(` whose word is not one of the
//! classifier's own keywords, and only in reads.

/// Whether `word`, an unquoted identifier (the lexer's `Word` token: ASCII
/// letters, digits, `_`, `$`, bytes ≥ 0x80), is a built-in function or
/// keyword (ASCII case ignored).
///
/// One probe, usually, into a hash table built at compile time, keyed by
/// two integers: the first 8 bytes, and the length with the bytes after
/// those (up to 7; for a longer name its last 7, and its middle is
/// compared on a match), case-folded as the keyword tables of
/// `classify` are (see [`fold`]). Asked for every `word(` in a
/// read (`COUNT(`, `CONCAT(`, `WHERE (`…), so it is on the path of most
/// reads: measured with valgrind (benches/results/classify-server-state.md),
/// a lookup costs ~40 instructions; the binary search over the sorted
/// names it replaces cost ~180.
pub(crate) fn is_builtin(word: &[u8]) -> bool {
    debug_assert!(word.iter().all(|&b| super::lex::is_ident(b)));
    // 1 to 15 bytes: the key is the name.
    if word.len().wrapping_sub(1) >= 15 {
        return is_long_builtin(word);
    }
    let key = key(word);
    let mut h = hash(key);
    loop {
        let slot = TABLE[h];
        if slot == key {
            return true;
        }
        if slot.1 == 0 {
            return false;
        }
        h = (h + 1) & (SLOTS - 1);
    }
}

/// The slot that holds `key`, if any (the loop of [`is_builtin`]).
fn probe(key: (u64, u64)) -> Option<usize> {
    let mut h = hash(key);
    loop {
        let slot = TABLE[h];
        if slot == key {
            return Some(h);
        }
        if slot.1 == 0 {
            return None;
        }
        h = (h + 1) & (SLOTS - 1);
    }
}

/// [`is_builtin`] for a word of 16 bytes or more (or none), whose key
/// leaves out its middle: compared against the name in the slot, out of
/// line so that the common lookup keeps its few registers. A long name's
/// key is unique too (a test checks), so no other slot needs a look.
#[cold]
#[inline(never)]
fn is_long_builtin(word: &[u8]) -> bool {
    if word.is_empty() || word.len() > MAX_LEN {
        return false;
    }
    let Some(h) = probe(key(word)) else {
        return false;
    };
    let name = BUILTIN[usize::from(NAME_AT[h])];
    middle(word).eq_ignore_ascii_case(middle(name))
}

/// The bytes of a name of 16 or more that its key does not hold.
fn middle(name: &[u8]) -> &[u8] {
    name.get(8..name.len().saturating_sub(7))
        .unwrap_or_default()
}

/// `n` ≤ 8 bytes of `b` from `at` (`at + n` ≤ `b.len()`), little-endian,
/// zero-padded: one or two loads, no loop.
#[inline(always)]
const fn load(b: &[u8], at: usize, n: usize) -> u64 {
    if n >= 8 {
        u64::from_le_bytes([
            b[at],
            b[at + 1],
            b[at + 2],
            b[at + 3],
            b[at + 4],
            b[at + 5],
            b[at + 6],
            b[at + 7],
        ])
    } else if n >= 4 {
        let lo = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64;
        let e = at + n - 4;
        let hi = u32::from_le_bytes([b[e], b[e + 1], b[e + 2], b[e + 3]]) as u64;
        // The two halves overlap when n < 8: same bytes, same places.
        lo | hi << (8 * (n - 4))
    } else if n > 0 {
        b[at] as u64
            | (b[at + n / 2] as u64) << (8 * (n / 2))
            | (b[at + n - 1] as u64) << (8 * (n - 1))
    } else {
        0
    }
}

/// `v` (bytes of an identifier) with bit 5 of each byte set: a letter's
/// two cases become one. For identifier bytes against our names (`A`–`Z`,
/// `0`–`9`, `_`) that is exactly `eq_ignore_ascii_case`: besides a
/// letter's other case, only non-identifier bytes fold onto a name's byte
/// (0x10–0x19 onto digits, 0x7f onto `_`), and bytes ≥ 0x80 stay ≥ 0x80.
/// One `or`, where an exact upper-casing of any byte cost ~12
/// instructions a lookup.
#[inline(always)]
const fn fold(v: u64) -> u64 {
    v | 0x2020_2020_2020_2020
}

/// A name's key: its first 8 bytes [`fold`]ed (zero-padded, the padding
/// folded too); its length in the top byte of the second, under the
/// folded bytes 9 to 15 (ditto), or for a name of 16 or more its last 7.
/// Up to 15 bytes the key is the name (the length tells padding from
/// bytes); the second half is never 0 (that marks an empty slot).
#[inline(always)]
const fn key(word: &[u8]) -> (u64, u64) {
    let len = word.len();
    let with_len = (len as u64) << 56;
    // The top byte of the second half holds the length, unfolded.
    const LOW7: u64 = (1 << 56) - 1;
    if len <= 8 {
        (fold(load(word, 0, len)), with_len)
    } else if len < 16 {
        (
            fold(load(word, 0, 8)),
            fold(load(word, 8, len - 8)) & LOW7 | with_len,
        )
    } else {
        (
            fold(load(word, 0, 8)),
            fold(load(word, len - 7, 7)) & LOW7 | with_len,
        )
    }
}

/// Slots of [`TABLE`]: a power of two, under a third filled, so that a
/// lookup (hit or miss) rarely probes more than one or two. The table
/// takes 64 KiB (and [`NAME_AT`] 8 KiB) of read-only data.
const SLOTS: usize = 4096;

/// Multiply-shift over both halves of a [`key`]. The rotation was chosen
/// (of 64) so that no two [`FIRST_PLACED`] names share a slot, and for
/// the fewest probes over all names (1.16 on average, 5 at most).
#[inline(always)]
const fn hash(key: (u64, u64)) -> usize {
    let k = key.0 ^ key.1.rotate_left(50);
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// The [`key`]s of the [`BUILTIN`] names, by open addressing (linear
/// probing); `(0, 0)` is an empty slot.
static TABLE: [(u64, u64); SLOTS] = build().0;

/// For each slot of [`TABLE`], the index of its name in [`BUILTIN`].
static NAME_AT: [u16; SLOTS] = build().1;

/// Names that reads call most, inserted first so that each sits in the
/// slot its hash names (a test checks): found at the first probe.
const FIRST_PLACED: &[&[u8]] = &[
    b"COUNT",
    b"SUM",
    b"MIN",
    b"MAX",
    b"AVG",
    b"WHERE",
    b"AND",
    b"ON",
    b"USING",
    b"EXISTS",
    b"CONCAT",
    b"CONCAT_WS",
    b"COALESCE",
    b"IFNULL",
    b"IF",
    b"NULLIF",
    b"NOW",
    b"CURDATE",
    b"DATE",
    b"DATE_FORMAT",
    b"DATE_ADD",
    b"DATE_SUB",
    b"UNIX_TIMESTAMP",
    b"FROM_UNIXTIME",
    b"LOWER",
    b"UPPER",
    b"LENGTH",
    b"SUBSTRING",
    b"TRIM",
    b"ROUND",
    b"CAST",
    b"CONVERT",
    b"GROUP_CONCAT",
    b"JSON_EXTRACT",
    b"JSON_UNQUOTE",
    b"OVER",
    b"ROW_NUMBER",
    b"FIND_IN_SET",
];

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn build() -> ([(u64, u64); SLOTS], [u16; SLOTS]) {
    let mut table = [(0u64, 0u64); SLOTS];
    let mut name_at = [0u16; SLOTS];
    let mut placed = [false; BUILTIN.len()];
    // Pass 0: FIRST_PLACED (in its order); pass 1: every other name.
    let mut pass = 0;
    while pass < 2 {
        let mut i = 0;
        while i < BUILTIN.len() {
            let wanted = if pass == 0 {
                let mut j = 0;
                while j < FIRST_PLACED.len() && !same(FIRST_PLACED[j], BUILTIN[i]) {
                    j += 1;
                }
                j < FIRST_PLACED.len()
            } else {
                !placed[i]
            };
            if wanted {
                let k = key(BUILTIN[i]);
                let mut h = hash(k);
                while table[h].1 != 0 {
                    h = (h + 1) & (SLOTS - 1);
                }
                table[h] = k;
                name_at[h] = i as u16;
                placed[i] = true;
            }
            i += 1;
        }
        pass += 1;
    }
    (table, name_at)
}

/// The longest name in [`BUILTIN`] (checked by a test).
const MAX_LEN: usize = 40;

// BEGIN GENERATED by scripts/gen-builtin-functions.sh from MariaDB 10.11.19-MariaDB-0+deb12u1: 1139 names
pub(crate) const BUILTIN: &[&[u8]] = &[
    b"ABS",
    b"ACCESSIBLE",
    b"ACCOUNT",
    b"ACOS",
    b"ACTION",
    b"ADD",
    b"ADDDATE",
    b"ADDTIME",
    b"ADD_MONTHS",
    b"ADMIN",
    b"AES_DECRYPT",
    b"AES_ENCRYPT",
    b"AFTER",
    b"AGAINST",
    b"AGGREGATE",
    b"ALGORITHM",
    b"ALL",
    b"ALTER",
    b"ALWAYS",
    b"ANALYZE",
    b"AND",
    b"ANY",
    b"ANY_VALUE",
    b"AREA",
    b"AS",
    b"ASBINARY",
    b"ASC",
    b"ASCII",
    b"ASENSITIVE",
    b"ASIN",
    b"ASTEXT",
    b"ASWKB",
    b"ASWKT",
    b"ASYMMETRIC_DECRYPT",
    b"AT",
    b"ATAN",
    b"ATAN2",
    b"ATOMIC",
    b"AUTHORS",
    b"AUTO",
    b"AUTOEXTEND_SIZE",
    b"AUTO_INCREMENT",
    b"AVG",
    b"AVG_ROW_LENGTH",
    b"BACKUP",
    b"BEFORE",
    b"BEGIN",
    b"BENCHMARK",
    b"BETWEEN",
    b"BIGINT",
    b"BIN",
    b"BINARY",
    b"BINLOG",
    b"BINLOG_GTID_POS",
    b"BIN_TO_UUID",
    b"BIT",
    b"BIT_AND",
    b"BIT_COUNT",
    b"BIT_LENGTH",
    b"BIT_OR",
    b"BIT_XOR",
    b"BLOB",
    b"BLOCK",
    b"BODY",
    b"BOOL",
    b"BOOLEAN",
    b"BOTH",
    b"BOUNDARY",
    b"BTREE",
    b"BUFFER",
    b"BY",
    b"BYTE",
    b"CACHE",
    b"CALL",
    b"CASCADE",
    b"CASCADED",
    b"CASE",
    b"CAST",
    b"CATALOG_NAME",
    b"CEIL",
    b"CEILING",
    b"CENTROID",
    b"CHAIN",
    b"CHANGE",
    b"CHANGED",
    b"CHANNEL",
    b"CHAR",
    b"CHARACTER",
    b"CHARACTER_LENGTH",
    b"CHARSET",
    b"CHAR_LENGTH",
    b"CHECK",
    b"CHECKPOINT",
    b"CHECKSUM",
    b"CHR",
    b"CIPHER",
    b"CLASS_ORIGIN",
    b"CLIENT",
    b"CLOB",
    b"CLOSE",
    b"COALESCE",
    b"CODE",
    b"COERCIBILITY",
    b"COLLATE",
    b"COLLATION",
    b"COLUMN",
    b"COLUMNS",
    b"COLUMN_ADD",
    b"COLUMN_CHECK",
    b"COLUMN_CREATE",
    b"COLUMN_DELETE",
    b"COLUMN_EXISTS",
    b"COLUMN_GET",
    b"COLUMN_JSON",
    b"COLUMN_LIST",
    b"COLUMN_NAME",
    b"COMMENT",
    b"COMMIT",
    b"COMMITTED",
    b"COMPACT",
    b"COMPLETION",
    b"COMPRESS",
    b"COMPRESSED",
    b"CONCAT",
    b"CONCAT_OPERATOR_ORACLE",
    b"CONCAT_WS",
    b"CONCURRENT",
    b"CONDITION",
    b"CONNECTION",
    b"CONNECTION_ID",
    b"CONSISTENT",
    b"CONSTRAINT",
    b"CONSTRAINT_CATALOG",
    b"CONSTRAINT_NAME",
    b"CONSTRAINT_SCHEMA",
    b"CONTAINS",
    b"CONTEXT",
    b"CONTINUE",
    b"CONTRIBUTORS",
    b"CONV",
    b"CONVERT",
    b"CONVERT_TZ",
    b"CONVEXHULL",
    b"COS",
    b"COT",
    b"COUNT",
    b"CPU",
    b"CRC32",
    b"CRC32C",
    b"CREATE",
    b"CROSS",
    b"CROSSES",
    b"CUBE",
    b"CUME_DIST",
    b"CURDATE",
    b"CURRENT",
    b"CURRENT_DATE",
    b"CURRENT_POS",
    b"CURRENT_ROLE",
    b"CURRENT_TIME",
    b"CURRENT_TIMESTAMP",
    b"CURRENT_USER",
    b"CURSOR",
    b"CURSOR_NAME",
    b"CURTIME",
    b"CYCLE",
    b"DATA",
    b"DATABASE",
    b"DATABASES",
    b"DATAFILE",
    b"DATE",
    b"DATEDIFF",
    b"DATETIME",
    b"DATE_ADD",
    b"DATE_FORMAT",
    b"DATE_SUB",
    b"DAY",
    b"DAYNAME",
    b"DAYOFMONTH",
    b"DAYOFWEEK",
    b"DAYOFYEAR",
    b"DAY_HOUR",
    b"DAY_MICROSECOND",
    b"DAY_MINUTE",
    b"DAY_SECOND",
    b"DEALLOCATE",
    b"DEC",
    b"DECIMAL",
    b"DECLARE",
    b"DECODE",
    b"DECODE_HISTOGRAM",
    b"DECODE_ORACLE",
    b"DEFAULT",
    b"DEFINER",
    b"DEGREES",
    b"DELAYED",
    b"DELAY_KEY_WRITE",
    b"DELETE",
    b"DELETE_DOMAIN_ID",
    b"DENSE_RANK",
    b"DESC",
    b"DESCRIBE",
    b"DES_DECRYPT",
    b"DES_ENCRYPT",
    b"DES_KEY_FILE",
    b"DETERMINISTIC",
    b"DIAGNOSTICS",
    b"DIMENSION",
    b"DIRECTORY",
    b"DISABLE",
    b"DISCARD",
    b"DISJOINT",
    b"DISK",
    b"DISTINCT",
    b"DISTINCTROW",
    b"DIV",
    b"DO",
    b"DOUBLE",
    b"DO_DOMAIN_IDS",
    b"DROP",
    b"DUAL",
    b"DUMPFILE",
    b"DUPLICATE",
    b"DYNAMIC",
    b"EACH",
    b"ELSE",
    b"ELSEIF",
    b"ELSIF",
    b"ELT",
    b"EMPTY",
    b"ENABLE",
    b"ENCLOSED",
    b"ENCODE",
    b"ENCRYPT",
    b"END",
    b"ENDPOINT",
    b"ENDS",
    b"ENGINE",
    b"ENGINES",
    b"ENUM",
    b"ENVELOPE",
    b"EQUALS",
    b"ERROR",
    b"ERRORS",
    b"ESCAPE",
    b"ESCAPED",
    b"EVENT",
    b"EVENTS",
    b"EVERY",
    b"EXAMINED",
    b"EXCEPT",
    b"EXCEPTION",
    b"EXCHANGE",
    b"EXCLUDE",
    b"EXECUTE",
    b"EXISTS",
    b"EXIT",
    b"EXP",
    b"EXPANSION",
    b"EXPIRE",
    b"EXPLAIN",
    b"EXPORT",
    b"EXPORT_SET",
    b"EXTENDED",
    b"EXTENT_SIZE",
    b"EXTERIORRING",
    b"EXTRACT",
    b"EXTRACTVALUE",
    b"FALSE",
    b"FAST",
    b"FAULTS",
    b"FEDERATED",
    b"FETCH",
    b"FIELD",
    b"FIELDS",
    b"FILE",
    b"FIND_IN_SET",
    b"FIRST",
    b"FIRST_VALUE",
    b"FIXED",
    b"FLOAT",
    b"FLOAT4",
    b"FLOAT8",
    b"FLOOR",
    b"FLUSH",
    b"FOLLOWING",
    b"FOLLOWS",
    b"FOR",
    b"FORCE",
    b"FOREIGN",
    b"FORMAT",
    b"FORMAT_BYTES",
    b"FORMAT_PICO_TIME",
    b"FOUND",
    b"FOUND_ROWS",
    b"FROM",
    b"FROM_BASE64",
    b"FROM_DAYS",
    b"FROM_UNIXTIME",
    b"FULL",
    b"FULLTEXT",
    b"FUNCTION",
    b"GENERAL",
    b"GENERATED",
    b"GEOMCOLLFROMTEXT",
    b"GEOMCOLLFROMWKB",
    b"GEOMETRYCOLLECTION",
    b"GEOMETRYCOLLECTIONFROMTEXT",
    b"GEOMETRYCOLLECTIONFROMWKB",
    b"GEOMETRYFROMTEXT",
    b"GEOMETRYFROMWKB",
    b"GEOMETRYN",
    b"GEOMETRYTYPE",
    b"GEOMFROMTEXT",
    b"GEOMFROMWKB",
    b"GET",
    b"GET_FORMAT",
    b"GET_LOCK",
    b"GLENGTH",
    b"GLOBAL",
    b"GOTO",
    b"GRANT",
    b"GRANTS",
    b"GREATEST",
    b"GROUP",
    b"GROUPING",
    b"GROUP_CONCAT",
    b"GTID_SUBSET",
    b"GTID_SUBTRACT",
    b"HANDLER",
    b"HARD",
    b"HASH",
    b"HAVING",
    b"HELP",
    b"HEX",
    b"HIGH_PRIORITY",
    b"HISTORY",
    b"HOST",
    b"HOSTS",
    b"HOUR",
    b"HOUR_MICROSECOND",
    b"HOUR_MINUTE",
    b"HOUR_SECOND",
    b"ICU_VERSION",
    b"ID",
    b"IDENTIFIED",
    b"IF",
    b"IFNULL",
    b"IGNORE",
    b"IGNORED",
    b"IGNORE_DOMAIN_IDS",
    b"IGNORE_SERVER_IDS",
    b"IMMEDIATE",
    b"IMPORT",
    b"IN",
    b"INCREMENT",
    b"INDEX",
    b"INDEXES",
    b"INET4",
    b"INET6",
    b"INET6_ATON",
    b"INET6_NTOA",
    b"INET_ATON",
    b"INET_NTOA",
    b"INFILE",
    b"INITIAL_SIZE",
    b"INNER",
    b"INOUT",
    b"INSENSITIVE",
    b"INSERT",
    b"INSERT_METHOD",
    b"INSTALL",
    b"INSTR",
    b"INT",
    b"INT1",
    b"INT2",
    b"INT3",
    b"INT4",
    b"INT8",
    b"INTEGER",
    b"INTERIORRINGN",
    b"INTERSECT",
    b"INTERSECTS",
    b"INTERVAL",
    b"INTO",
    b"INVISIBLE",
    b"INVOKER",
    b"IO",
    b"IO_THREAD",
    b"IPC",
    b"IS",
    b"ISCLOSED",
    b"ISEMPTY",
    b"ISNULL",
    b"ISOLATION",
    b"ISOPEN",
    b"ISRING",
    b"ISSIMPLE",
    b"ISSUER",
    b"IS_FREE_LOCK",
    b"IS_IPV4",
    b"IS_IPV4_COMPAT",
    b"IS_IPV4_MAPPED",
    b"IS_IPV6",
    b"IS_USED_LOCK",
    b"IS_UUID",
    b"ITERATE",
    b"JOIN",
    b"JOINS",
    b"JSON",
    b"JSON_ARRAY",
    b"JSON_ARRAYAGG",
    b"JSON_ARRAY_APPEND",
    b"JSON_ARRAY_INSERT",
    b"JSON_ARRAY_INTERSECT",
    b"JSON_COMPACT",
    b"JSON_CONTAINS",
    b"JSON_CONTAINS_PATH",
    b"JSON_DEPTH",
    b"JSON_DETAILED",
    b"JSON_EQUALS",
    b"JSON_EXISTS",
    b"JSON_EXTRACT",
    b"JSON_INSERT",
    b"JSON_KEYS",
    b"JSON_KEY_VALUE",
    b"JSON_LENGTH",
    b"JSON_LOOSE",
    b"JSON_MERGE",
    b"JSON_MERGE_PATCH",
    b"JSON_MERGE_PRESERVE",
    b"JSON_NORMALIZE",
    b"JSON_OBJECT",
    b"JSON_OBJECTAGG",
    b"JSON_OBJECT_FILTER_KEYS",
    b"JSON_OBJECT_TO_ARRAY",
    b"JSON_OVERLAPS",
    b"JSON_PRETTY",
    b"JSON_QUERY",
    b"JSON_QUOTE",
    b"JSON_REMOVE",
    b"JSON_REPLACE",
    b"JSON_SCHEMA_VALID",
    b"JSON_SEARCH",
    b"JSON_SET",
    b"JSON_STORAGE_FREE",
    b"JSON_STORAGE_SIZE",
    b"JSON_TABLE",
    b"JSON_TYPE",
    b"JSON_UNQUOTE",
    b"JSON_VALID",
    b"JSON_VALUE",
    b"KDF",
    b"KEY",
    b"KEYS",
    b"KEY_BLOCK_SIZE",
    b"KILL",
    b"LABELS",
    b"LAG",
    b"LANGUAGE",
    b"LAST",
    b"LASTVAL",
    b"LAST_DAY",
    b"LAST_INSERT_ID",
    b"LAST_VALUE",
    b"LCASE",
    b"LEAD",
    b"LEADING",
    b"LEAST",
    b"LEAVE",
    b"LEAVES",
    b"LEFT",
    b"LENGTH",
    b"LENGTHB",
    b"LESS",
    b"LEVEL",
    b"LIKE",
    b"LIMIT",
    b"LINEAR",
    b"LINEFROMTEXT",
    b"LINEFROMWKB",
    b"LINES",
    b"LINESTRING",
    b"LINESTRINGFROMTEXT",
    b"LINESTRINGFROMWKB",
    b"LIST",
    b"LN",
    b"LOAD",
    b"LOAD_FILE",
    b"LOCAL",
    b"LOCALTIME",
    b"LOCALTIMESTAMP",
    b"LOCATE",
    b"LOCK",
    b"LOCKED",
    b"LOCKS",
    b"LOG",
    b"LOG10",
    b"LOG2",
    b"LOGFILE",
    b"LOGS",
    b"LONG",
    b"LONGBLOB",
    b"LONGTEXT",
    b"LOOP",
    b"LOWER",
    b"LOW_PRIORITY",
    b"LPAD",
    b"LPAD_ORACLE",
    b"LTRIM",
    b"LTRIM_ORACLE",
    b"MAKEDATE",
    b"MAKETIME",
    b"MAKE_SET",
    b"MASTER",
    b"MASTER_CONNECT_RETRY",
    b"MASTER_DELAY",
    b"MASTER_DEMOTE_TO_REPLICA",
    b"MASTER_DEMOTE_TO_SLAVE",
    b"MASTER_GTID_POS",
    b"MASTER_GTID_WAIT",
    b"MASTER_HEARTBEAT_PERIOD",
    b"MASTER_HOST",
    b"MASTER_LOG_FILE",
    b"MASTER_LOG_POS",
    b"MASTER_PASSWORD",
    b"MASTER_PORT",
    b"MASTER_POS_WAIT",
    b"MASTER_SERVER_ID",
    b"MASTER_SSL",
    b"MASTER_SSL_CA",
    b"MASTER_SSL_CAPATH",
    b"MASTER_SSL_CERT",
    b"MASTER_SSL_CIPHER",
    b"MASTER_SSL_CRL",
    b"MASTER_SSL_CRLPATH",
    b"MASTER_SSL_KEY",
    b"MASTER_SSL_VERIFY_SERVER_CERT",
    b"MASTER_USER",
    b"MASTER_USE_GTID",
    b"MATCH",
    b"MAX",
    b"MAXVALUE",
    b"MAX_CONNECTIONS_PER_HOUR",
    b"MAX_QUERIES_PER_HOUR",
    b"MAX_ROWS",
    b"MAX_SIZE",
    b"MAX_STATEMENT_TIME",
    b"MAX_UPDATES_PER_HOUR",
    b"MAX_USER_CONNECTIONS",
    b"MBRCONTAINS",
    b"MBRCOVEREDBY",
    b"MBRCOVERS",
    b"MBRDISJOINT",
    b"MBREQUAL",
    b"MBRINTERSECTS",
    b"MBROVERLAPS",
    b"MBRTOUCHES",
    b"MBRWITHIN",
    b"MD5",
    b"MEDIAN",
    b"MEDIUM",
    b"MEDIUMBLOB",
    b"MEDIUMINT",
    b"MEDIUMTEXT",
    b"MEMORY",
    b"MERGE",
    b"MESSAGE_TEXT",
    b"MHNSW",
    b"MICROSECOND",
    b"MID",
    b"MIDDLEINT",
    b"MIGRATE",
    b"MIN",
    b"MINUS",
    b"MINUTE",
    b"MINUTE_MICROSECOND",
    b"MINUTE_SECOND",
    b"MINVALUE",
    b"MIN_ROWS",
    b"MLINEFROMTEXT",
    b"MLINEFROMWKB",
    b"MOD",
    b"MODE",
    b"MODIFIES",
    b"MODIFY",
    b"MONITOR",
    b"MONTH",
    b"MONTHNAME",
    b"MPOINTFROMTEXT",
    b"MPOINTFROMWKB",
    b"MPOLYFROMTEXT",
    b"MPOLYFROMWKB",
    b"MULTILINESTRING",
    b"MULTILINESTRINGFROMTEXT",
    b"MULTILINESTRINGFROMWKB",
    b"MULTIPOINT",
    b"MULTIPOINTFROMTEXT",
    b"MULTIPOINTFROMWKB",
    b"MULTIPOLYGON",
    b"MULTIPOLYGONFROMTEXT",
    b"MULTIPOLYGONFROMWKB",
    b"MUTEX",
    b"MYSQL",
    b"MYSQL_ERRNO",
    b"NAME",
    b"NAMES",
    b"NAME_CONST",
    b"NATIONAL",
    b"NATURAL",
    b"NATURAL_SORT_KEY",
    b"NCHAR",
    b"NESTED",
    b"NEVER",
    b"NEXT",
    b"NEXTVAL",
    b"NO",
    b"NOCACHE",
    b"NOCYCLE",
    b"NODEGROUP",
    b"NOMAXVALUE",
    b"NOMINVALUE",
    b"NONE",
    b"NOSQL",
    b"NOT",
    b"NOTFOUND",
    b"NOW",
    b"NOWAIT",
    b"NO_WAIT",
    b"NO_WRITE_TO_BINLOG",
    b"NTH_VALUE",
    b"NTILE",
    b"NULL",
    b"NULLIF",
    b"NUMBER",
    b"NUMERIC",
    b"NUMGEOMETRIES",
    b"NUMINTERIORRINGS",
    b"NUMPOINTS",
    b"NVARCHAR",
    b"NVL",
    b"NVL2",
    b"OCT",
    b"OCTET_LENGTH",
    b"OF",
    b"OFFSET",
    b"OLD_PASSWORD",
    b"ON",
    b"ONE",
    b"ONLINE",
    b"ONLY",
    b"OPEN",
    b"OPTIMIZE",
    b"OPTION",
    b"OPTIONALLY",
    b"OPTIONS",
    b"OR",
    b"ORD",
    b"ORDER",
    b"ORDINALITY",
    b"OTHERS",
    b"OUT",
    b"OUTER",
    b"OUTFILE",
    b"OVER",
    b"OVERLAPS",
    b"OWNER",
    b"PACKAGE",
    b"PACK_KEYS",
    b"PAGE",
    b"PAGE_CHECKSUM",
    b"PARENTHESES",
    b"PARSER",
    b"PARSE_VCOL_EXPR",
    b"PARTIAL",
    b"PARTITION",
    b"PARTITIONING",
    b"PARTITIONS",
    b"PASSWORD",
    b"PATH",
    b"PERCENTILE_CONT",
    b"PERCENTILE_DISC",
    b"PERCENT_RANK",
    b"PERIOD",
    b"PERIOD_ADD",
    b"PERIOD_DIFF",
    b"PERSISTENT",
    b"PHASE",
    b"PI",
    b"PLUGIN",
    b"PLUGINS",
    b"POINT",
    b"POINTFROMTEXT",
    b"POINTFROMWKB",
    b"POINTN",
    b"POINTONSURFACE",
    b"POLYFROMTEXT",
    b"POLYFROMWKB",
    b"POLYGON",
    b"POLYGONFROMTEXT",
    b"POLYGONFROMWKB",
    b"PORT",
    b"PORTION",
    b"POSITION",
    b"POW",
    b"POWER",
    b"PRECEDES",
    b"PRECEDING",
    b"PRECISION",
    b"PREPARE",
    b"PRESERVE",
    b"PREV",
    b"PREVIOUS",
    b"PRIMARY",
    b"PRIVILEGES",
    b"PROCEDURE",
    b"PROCESS",
    b"PROCESSLIST",
    b"PROFILE",
    b"PROFILES",
    b"PROXY",
    b"PS_CURRENT_THREAD_ID",
    b"PS_THREAD_ID",
    b"PURGE",
    b"QUARTER",
    b"QUERY",
    b"QUICK",
    b"QUOTE",
    b"RADIANS",
    b"RAISE",
    b"RAND",
    b"RANDOM_BYTES",
    b"RANGE",
    b"RANK",
    b"RAW",
    b"READ",
    b"READS",
    b"READ_ONLY",
    b"READ_WRITE",
    b"REAL",
    b"REBUILD",
    b"RECOVER",
    b"RECURSIVE",
    b"REDOFILE",
    b"REDO_BUFFER_SIZE",
    b"REDUNDANT",
    b"REFERENCES",
    b"REF_SYSTEM_ID",
    b"REGEXP",
    b"REGEXP_INSTR",
    b"REGEXP_LIKE",
    b"REGEXP_REPLACE",
    b"REGEXP_SUBSTR",
    b"RELAY",
    b"RELAYLOG",
    b"RELAY_LOG_FILE",
    b"RELAY_LOG_POS",
    b"RELAY_THREAD",
    b"RELEASE",
    b"RELEASE_ALL_LOCKS",
    b"RELEASE_LOCK",
    b"RELOAD",
    b"REMOVE",
    b"RENAME",
    b"REORGANIZE",
    b"REPAIR",
    b"REPEAT",
    b"REPEATABLE",
    b"REPLACE",
    b"REPLACE_ORACLE",
    b"REPLAY",
    b"REPLICA",
    b"REPLICAS",
    b"REPLICATION",
    b"REPLICA_POS",
    b"REQUIRE",
    b"RESET",
    b"RESIGNAL",
    b"RESTART",
    b"RESTORE",
    b"RESTRICT",
    b"RESUME",
    b"RETURN",
    b"RETURNED_SQLSTATE",
    b"RETURNING",
    b"RETURNS",
    b"REUSE",
    b"REVERSE",
    b"REVOKE",
    b"RIGHT",
    b"RLIKE",
    b"ROLE",
    b"ROLES_GRAPHML",
    b"ROLLBACK",
    b"ROLLUP",
    b"ROUND",
    b"ROUTINE",
    b"ROW",
    b"ROWCOUNT",
    b"ROWNUM",
    b"ROWS",
    b"ROWTYPE",
    b"ROW_COUNT",
    b"ROW_FORMAT",
    b"ROW_NUMBER",
    b"RPAD",
    b"RPAD_ORACLE",
    b"RTREE",
    b"RTRIM",
    b"RTRIM_ORACLE",
    b"SAVEPOINT",
    b"SCHEDULE",
    b"SCHEMA",
    b"SCHEMAS",
    b"SCHEMA_NAME",
    b"SECOND",
    b"SECOND_MICROSECOND",
    b"SECURITY",
    b"SEC_TO_TIME",
    b"SELECT",
    b"SENSITIVE",
    b"SEPARATOR",
    b"SEQUENCE",
    b"SEQUENCES",
    b"SERIAL",
    b"SERIALIZABLE",
    b"SERVER",
    b"SESSION",
    b"SESSION_USER",
    b"SET",
    b"SETVAL",
    b"SFORMAT",
    b"SHA",
    b"SHA1",
    b"SHA2",
    b"SHARE",
    b"SHOW",
    b"SHUTDOWN",
    b"SIGN",
    b"SIGNAL",
    b"SIGNED",
    b"SIMPLE",
    b"SIN",
    b"SKIP",
    b"SLAVE",
    b"SLAVES",
    b"SLAVE_POS",
    b"SLEEP",
    b"SLOW",
    b"SMALLINT",
    b"SNAPSHOT",
    b"SOCKET",
    b"SOFT",
    b"SOME",
    b"SONAME",
    b"SOUNDEX",
    b"SOUNDS",
    b"SOURCE",
    b"SOURCE_POS_WAIT",
    b"SPACE",
    b"SPATIAL",
    b"SPECIFIC",
    b"SQL",
    b"SQLEXCEPTION",
    b"SQLSTATE",
    b"SQLWARNING",
    b"SQL_BIG_RESULT",
    b"SQL_BUFFER_RESULT",
    b"SQL_CACHE",
    b"SQL_CALC_FOUND_ROWS",
    b"SQL_NO_CACHE",
    b"SQL_SMALL_RESULT",
    b"SQL_THREAD",
    b"SQL_TSI_DAY",
    b"SQL_TSI_HOUR",
    b"SQL_TSI_MINUTE",
    b"SQL_TSI_MONTH",
    b"SQL_TSI_QUARTER",
    b"SQL_TSI_SECOND",
    b"SQL_TSI_WEEK",
    b"SQL_TSI_YEAR",
    b"SQRT",
    b"SRID",
    b"SSL",
    b"STAGE",
    b"START",
    b"STARTING",
    b"STARTPOINT",
    b"STARTS",
    b"STATEMENT",
    b"STATEMENT_DIGEST",
    b"STATEMENT_DIGEST_TEXT",
    b"STATS_AUTO_RECALC",
    b"STATS_PERSISTENT",
    b"STATS_SAMPLE_PAGES",
    b"STATUS",
    b"STD",
    b"STDDEV",
    b"STDDEV_POP",
    b"STDDEV_SAMP",
    b"STOP",
    b"STORAGE",
    b"STORED",
    b"STRAIGHT_JOIN",
    b"STRCMP",
    b"STRING",
    b"STR_TO_DATE",
    b"ST_AREA",
    b"ST_ASBINARY",
    b"ST_ASGEOJSON",
    b"ST_ASTEXT",
    b"ST_ASWKB",
    b"ST_ASWKT",
    b"ST_BOUNDARY",
    b"ST_BUFFER",
    b"ST_CENTROID",
    b"ST_CONTAINS",
    b"ST_CONVEXHULL",
    b"ST_CROSSES",
    b"ST_DIFFERENCE",
    b"ST_DIMENSION",
    b"ST_DISJOINT",
    b"ST_DISTANCE",
    b"ST_DISTANCE_SPHERE",
    b"ST_ENDPOINT",
    b"ST_ENVELOPE",
    b"ST_EQUALS",
    b"ST_EXTERIORRING",
    b"ST_GEOHASH",
    b"ST_GEOMCOLLFROMTEXT",
    b"ST_GEOMCOLLFROMWKB",
    b"ST_GEOMETRYCOLLECTIONFROMTEXT",
    b"ST_GEOMETRYCOLLECTIONFROMWKB",
    b"ST_GEOMETRYFROMTEXT",
    b"ST_GEOMETRYFROMWKB",
    b"ST_GEOMETRYN",
    b"ST_GEOMETRYTYPE",
    b"ST_GEOMFROMGEOJSON",
    b"ST_GEOMFROMTEXT",
    b"ST_GEOMFROMWKB",
    b"ST_INTERIORRINGN",
    b"ST_INTERSECTION",
    b"ST_INTERSECTS",
    b"ST_ISCLOSED",
    b"ST_ISEMPTY",
    b"ST_ISRING",
    b"ST_ISSIMPLE",
    b"ST_ISVALID",
    b"ST_LATFROMGEOHASH",
    b"ST_LENGTH",
    b"ST_LINEFROMTEXT",
    b"ST_LINEFROMWKB",
    b"ST_LINESTRINGFROMTEXT",
    b"ST_LINESTRINGFROMWKB",
    b"ST_LONGFROMGEOHASH",
    b"ST_MLINEFROMTEXT",
    b"ST_MLINEFROMWKB",
    b"ST_MPOINTFROMTEXT",
    b"ST_MPOINTFROMWKB",
    b"ST_MPOLYFROMTEXT",
    b"ST_MPOLYFROMWKB",
    b"ST_MULTILINESTRINGFROMTEXT",
    b"ST_MULTILINESTRINGFROMWKB",
    b"ST_MULTIPOINTFROMTEXT",
    b"ST_MULTIPOINTFROMWKB",
    b"ST_MULTIPOLYGONFROMTEXT",
    b"ST_MULTIPOLYGONFROMWKB",
    b"ST_NUMGEOMETRIES",
    b"ST_NUMINTERIORRINGS",
    b"ST_NUMPOINTS",
    b"ST_OVERLAPS",
    b"ST_POINTFROMGEOHASH",
    b"ST_POINTFROMTEXT",
    b"ST_POINTFROMWKB",
    b"ST_POINTN",
    b"ST_POINTONSURFACE",
    b"ST_POLYFROMTEXT",
    b"ST_POLYFROMWKB",
    b"ST_POLYGONFROMTEXT",
    b"ST_POLYGONFROMWKB",
    b"ST_RELATE",
    b"ST_SIMPLIFY",
    b"ST_SRID",
    b"ST_STARTPOINT",
    b"ST_SYMDIFFERENCE",
    b"ST_TOUCHES",
    b"ST_UNION",
    b"ST_VALIDATE",
    b"ST_WITHIN",
    b"ST_X",
    b"ST_Y",
    b"SUBCLASS_ORIGIN",
    b"SUBDATE",
    b"SUBJECT",
    b"SUBPARTITION",
    b"SUBPARTITIONS",
    b"SUBQUERIES",
    b"SUBSTR",
    b"SUBSTRING",
    b"SUBSTRING_INDEX",
    b"SUBSTR_ORACLE",
    b"SUBTIME",
    b"SUM",
    b"SUPER",
    b"SUSPEND",
    b"SWAPS",
    b"SWITCHES",
    b"SYSDATE",
    b"SYSTEM",
    b"SYSTEM_TIME",
    b"SYSTEM_USER",
    b"SYS_GUID",
    b"TABLE",
    b"TABLES",
    b"TABLESPACE",
    b"TABLE_CHECKSUM",
    b"TABLE_NAME",
    b"TAN",
    b"TEMPORARY",
    b"TEMPTABLE",
    b"TERMINATED",
    b"TEXT",
    b"THAN",
    b"THEN",
    b"THREADS",
    b"TIES",
    b"TIME",
    b"TIMEDIFF",
    b"TIMESTAMP",
    b"TIMESTAMPADD",
    b"TIMESTAMPDIFF",
    b"TIME_FORMAT",
    b"TIME_TO_SEC",
    b"TINYBLOB",
    b"TINYINT",
    b"TINYTEXT",
    b"TO",
    b"TOUCHES",
    b"TO_BASE64",
    b"TO_CHAR",
    b"TO_DAYS",
    b"TO_SECONDS",
    b"TRAILING",
    b"TRANSACTION",
    b"TRANSACTIONAL",
    b"TRIGGER",
    b"TRIGGERS",
    b"TRIM",
    b"TRIM_ORACLE",
    b"TRUE",
    b"TRUNC",
    b"TRUNCATE",
    b"TYPE",
    b"UCASE",
    b"UNBOUNDED",
    b"UNCOMMITTED",
    b"UNCOMPRESS",
    b"UNCOMPRESSED_LENGTH",
    b"UNDEFINED",
    b"UNDO",
    b"UNDOFILE",
    b"UNDO_BUFFER_SIZE",
    b"UNHEX",
    b"UNICODE",
    b"UNINSTALL",
    b"UNION",
    b"UNIQUE",
    b"UNIX_TIMESTAMP",
    b"UNKNOWN",
    b"UNLOCK",
    b"UNSIGNED",
    b"UNTIL",
    b"UPDATE",
    b"UPDATEXML",
    b"UPGRADE",
    b"UPPER",
    b"USAGE",
    b"USE",
    b"USER",
    b"USER_RESOURCES",
    b"USE_FRM",
    b"USING",
    b"UTC_DATE",
    b"UTC_TIME",
    b"UTC_TIMESTAMP",
    b"UUID",
    b"UUID_SHORT",
    b"UUID_TO_BIN",
    b"VALIDATE_PASSWORD_STRENGTH",
    b"VALUE",
    b"VALUES",
    b"VARBINARY",
    b"VARCHAR",
    b"VARCHAR2",
    b"VARCHARACTER",
    b"VARIABLES",
    b"VARIANCE",
    b"VARYING",
    b"VAR_POP",
    b"VAR_SAMP",
    b"VECTOR",
    b"VECTORS",
    b"VERSION",
    b"VERSIONING",
    b"VIA",
    b"VIEW",
    b"VIRTUAL",
    b"VISIBLE",
    b"WAIT",
    b"WAIT_FOR_EXECUTED_GTID_SET",
    b"WARNINGS",
    b"WEEK",
    b"WEEKDAY",
    b"WEEKOFYEAR",
    b"WEIGHT_STRING",
    b"WHEN",
    b"WHERE",
    b"WHILE",
    b"WINDOW",
    b"WITH",
    b"WITHIN",
    b"WITHOUT",
    b"WORK",
    b"WRAPPER",
    b"WRITE",
    b"WSREP_LAST_SEEN_GTID",
    b"WSREP_LAST_WRITTEN_GTID",
    b"WSREP_SYNC_WAIT_UPTO_GTID",
    b"X",
    b"X509",
    b"XA",
    b"XML",
    b"XMLTYPE",
    b"XOR",
    b"Y",
    b"YEAR",
    b"YEARWEEK",
    b"YEAR_MONTH",
    b"ZEROFILL",
];
// END GENERATED

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_upper_case_and_fits() {
        assert!(
            BUILTIN.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        for n in BUILTIN {
            assert!(n.len() <= MAX_LEN);
            assert!(
                n.iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
            );
        }
    }

    /// The slow, obvious answer the table must give.
    fn reference(word: &[u8]) -> bool {
        BUILTIN.iter().any(|n| n.eq_ignore_ascii_case(word))
    }

    /// An identifier byte folds like a byte of a name only if it is that
    /// byte in either case.
    #[test]
    fn folding_identifier_bytes_ignores_ascii_case_only() {
        let ident = (0..=255u8).filter(|&b| super::super::lex::is_ident(b));
        let name_bytes: Vec<u8> = (b'A'..=b'Z').chain(b'0'..=b'9').chain([b'_']).collect();
        for a in ident {
            for &b in &name_bytes {
                assert_eq!(
                    fold(u64::from(a)) == fold(u64::from(b)),
                    a.eq_ignore_ascii_case(&b),
                    "{a:#x} {b:#x}"
                );
            }
        }
    }

    #[test]
    fn load_reads_exactly_the_bytes_asked_for() {
        let src = b"0123456789abcdefXYZ";
        for at in 0..src.len() {
            for n in 0..=8.min(src.len() - at) {
                let mut want = [0u8; 8];
                want[..n].copy_from_slice(&src[at..at + n]);
                assert_eq!(load(src, at, n), u64::from_le_bytes(want), "{at} {n}");
            }
        }
    }

    /// Every name, in any case, is found; every name changed by one byte,
    /// cut short or extended is found only if that is a name too.
    #[test]
    fn lookup_agrees_with_a_linear_search() {
        for name in BUILTIN {
            assert!(is_builtin(name));
            assert!(is_builtin(&name.to_ascii_lowercase()));
            let mut mixed = name.to_vec();
            mixed
                .iter_mut()
                .step_by(2)
                .for_each(|b| *b = b.to_ascii_lowercase());
            assert!(is_builtin(&mixed));
            let mut variants: Vec<Vec<u8>> = vec![
                name[..name.len() - 1].to_vec(),
                [name, &b"S"[..]].concat(),
                [&b"X"[..], name].concat(),
            ];
            for i in 0..name.len() {
                for b in [b'A', b'_', b'1', b'$', b'z', 0xC1, 0xFF] {
                    let mut v = name.to_vec();
                    v[i] = b;
                    variants.push(v);
                }
            }
            for v in variants {
                assert_eq!(
                    is_builtin(&v),
                    reference(&v),
                    "{}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }

    #[test]
    fn names_placed_first_are_in_their_own_slot() {
        for name in FIRST_PLACED {
            assert!(BUILTIN.contains(name), "{}", String::from_utf8_lossy(name));
            let h = hash(key(name));
            assert_eq!(BUILTIN[usize::from(NAME_AT[h])], *name);
        }
    }

    #[test]
    fn probes_stay_short_and_keys_are_unique() {
        let mut keys: Vec<(u64, u64)> = BUILTIN.iter().map(|n| key(n)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), BUILTIN.len(), "a key names one name");
        let longest = BUILTIN
            .iter()
            .map(|name| {
                let mut h = hash(key(name));
                let mut probes = 1;
                while BUILTIN[usize::from(NAME_AT[h])] != *name {
                    h = (h + 1) & (SLOTS - 1);
                    probes += 1;
                }
                probes
            })
            .max();
        assert!(longest.is_some_and(|p| p <= 8), "{longest:?}");
    }

    #[test]
    fn built_ins_and_keywords_are_known_stored_names_are_not() {
        for w in [
            "concat",
            "COUNT",
            "Sum",
            "json_table",
            "st_astext",
            "in",
            "exists",
            "over",
            "decimal",
            "columns",
            "values",
            "using",
            "date",
            "if",
            "row",
            "partition",
            "index",
            "char",
            "cast",
            "now",
            "nextval",
            "get_lock",
        ] {
            assert!(is_builtin(w.as_bytes()), "{w}");
        }
        for w in ["f_log", "my_func", "rt_reads", "xq", ""] {
            assert!(!is_builtin(w.as_bytes()), "{w}");
        }
    }
}
