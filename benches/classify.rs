//! Cost of the statement classifier and the SET parser, which run on every
//! COM_QUERY (classify) or every SET (parse_set) a client sends.
//!
//! `classify/corpus` runs the whole corpus per iteration and reports it as
//! throughput in statements; the per-statement benches show which shapes
//! cost what. Target: ≤ 300 ns per typical sysbench/ORM statement.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rwproxy::router::classify::classify;
use rwproxy::router::set::parse_set;

/// Real statement shapes: sysbench oltp_read_write with literals filled in,
/// ORM-style traffic with comments, and the rarer shapes the classifier must
/// still get right (CTEs, hints, long IN lists).
fn corpus() -> Vec<(&'static str, String)> {
    let in_list = {
        let ids: Vec<String> = (1..=500)
            .map(|i| (i * 7919 % 100_000).to_string())
            .collect();
        format!(
            "SELECT id, k, c FROM sbtest1 WHERE id IN ({})",
            ids.join(", ")
        )
    };
    let fixed: &[(&str, &str)] = &[
        // sysbench oltp_read_write / oltp_read_only / oltp_write_only
        ("sb_point_select", "SELECT c FROM sbtest1 WHERE id=50114"),
        (
            "sb_simple_range",
            "SELECT c FROM sbtest3 WHERE id BETWEEN 49893 AND 49992",
        ),
        (
            "sb_sum_range",
            "SELECT SUM(k) FROM sbtest5 WHERE id BETWEEN 50028 AND 50127",
        ),
        (
            "sb_order_range",
            "SELECT c FROM sbtest2 WHERE id BETWEEN 50256 AND 50355 ORDER BY c",
        ),
        (
            "sb_distinct_range",
            "SELECT DISTINCT c FROM sbtest3 WHERE id BETWEEN 1 AND 100 ORDER BY c",
        ),
        ("sb_index_update", "UPDATE sbtest1 SET k=k+1 WHERE id=49873"),
        (
            "sb_non_index_update",
            "UPDATE sbtest6 SET c='83868641912-28773972837-60736120486-75162659906-27563526494-20381887404-41576422241-93426793964-56405065102-33518432330' WHERE id=50224",
        ),
        ("sb_delete", "DELETE FROM sbtest8 WHERE id=50044"),
        (
            "sb_insert",
            "INSERT INTO sbtest8 (id, k, c, pad) VALUES (50044, 49887, '68487932199-96439406143-93774651418-41631865787-96406072701-20604855487-25459966574-28203206787-41238978918-19503783441', '22195207048-70116052123-74140395089-76317954521-98694025897')",
        ),
        ("sb_begin", "BEGIN"),
        ("sb_commit", "COMMIT"),
        // ORM-style
        (
            "orm_select",
            "/* controller=users,action=show */ SELECT `users`.`id`, `users`.`email`, `users`.`created_at` FROM `users` WHERE `users`.`id` = 42 LIMIT 1",
        ),
        (
            "orm_select_join",
            "SELECT `orders`.* FROM `orders` INNER JOIN `customers` ON `customers`.`id` = `orders`.`customer_id` WHERE `customers`.`email` = 'a@example.com' AND `orders`.`state` IN ('paid', 'shipped') ORDER BY `orders`.`created_at` DESC LIMIT 25 OFFSET 50 /* trace_id=4bf92f3577b34da6 */",
        ),
        (
            "orm_insert",
            "/* app:checkout */ INSERT INTO `orders` (`customer_id`, `total`, `state`, `created_at`) VALUES (42, 99.95, 'new', '2024-05-01 12:00:00')",
        ),
        (
            "hibernate_select",
            "select user0_.id as id1_0_, user0_.name as name2_0_ from users user0_ where user0_.name=? and user0_.active=1",
        ),
        ("orm_last_insert_id", "SELECT LAST_INSERT_ID()"),
        (
            "orm_for_update",
            "SELECT * FROM accounts WHERE id = 7 FOR UPDATE",
        ),
        (
            "orm_count",
            "SELECT COUNT(*) AS `count` FROM `posts` WHERE `posts`.`author_id` = 3",
        ),
        ("set_names", "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"),
        ("set_autocommit", "SET autocommit=0"),
        ("use", "USE sbtest"),
        ("show", "SHOW WARNINGS"),
        ("mysqldump_exec_comment", "/*!40101 SET NAMES utf8 */"),
        // CTEs
        (
            "cte_read",
            "WITH recent AS (SELECT id, customer_id FROM orders WHERE created_at > '2024-01-01') SELECT c.name, COUNT(*) FROM recent r JOIN customers c ON c.id = r.customer_id GROUP BY c.name",
        ),
        (
            "cte_write",
            "WITH stale AS (SELECT id FROM sessions WHERE updated_at < '2024-01-01') DELETE FROM sessions WHERE id IN (SELECT id FROM stale)",
        ),
        // hints
        (
            "hint_primary",
            "/* rwproxy:primary */ SELECT balance FROM accounts WHERE id = 7",
        ),
        (
            "hint_replica_lag",
            "/* rwproxy:replica */ /* rwproxy:max_lag=500ms */ SELECT * FROM reports WHERE day = '2024-05-01'",
        ),
        ("multi_read", "SELECT 1; SELECT c FROM sbtest1 WHERE id=1"),
        (
            "locking_read_share",
            "SELECT k FROM sbtest1 WHERE id = 9 LOCK IN SHARE MODE",
        ),
    ];
    let mut out: Vec<(&'static str, String)> = fixed
        .iter()
        .map(|&(name, sql)| (name, sql.to_string()))
        .collect();
    out.push(("in_list_500", in_list));
    out
}

fn bench_classify(c: &mut Criterion) {
    let corpus = corpus();
    let mut group = c.benchmark_group("classify");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));

    // The whole corpus without the 500-element IN list: the "typical
    // statement" figure (time per iteration / statements = ns per statement).
    let typical: Vec<&[u8]> = corpus
        .iter()
        .filter(|(name, _)| *name != "in_list_500")
        .map(|(_, sql)| sql.as_bytes())
        .collect();
    group.throughput(Throughput::Elements(typical.len() as u64));
    group.bench_function("typical_corpus", |b| {
        b.iter(|| {
            for sql in &typical {
                black_box(classify(black_box(sql)));
            }
        })
    });

    group.throughput(Throughput::Elements(1));
    for (name, sql) in &corpus {
        group.bench_function(*name, |b| b.iter(|| classify(black_box(sql.as_bytes()))));
    }
    group.finish();
}

fn bench_parse_set(c: &mut Criterion) {
    let statements: &[(&str, &str)] = &[
        ("names", "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"),
        ("autocommit", "SET autocommit=0"),
        (
            "sql_mode",
            "SET SESSION sql_mode='STRICT_TRANS_TABLES,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO'",
        ),
        (
            "jdbc_init",
            "SET character_set_results = NULL, autocommit = 1, sql_mode = 'STRICT_TRANS_TABLES', time_zone = '+00:00'",
        ),
        (
            "isolation",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        ),
        ("unreplayable", "SET @x = (SELECT MAX(id) FROM t)"),
    ];
    let mut group = c.benchmark_group("parse_set");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for &(name, sql) in statements {
        group.bench_function(name, |b| b.iter(|| parse_set(black_box(sql.as_bytes()))));
    }
    group.finish();
}

criterion_group!(benches, bench_classify, bench_parse_set);
criterion_main!(benches);
