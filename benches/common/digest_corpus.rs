// The digest benchmark's statement corpus, shared by `benches/digest.rs`
// and `examples/digest_count.rs` (`include!`d by both).

/// Real statement shapes, as in `benches/classify.rs`.
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
    let multi_insert = {
        let rows: Vec<String> = (0..10)
            .map(|i| {
                format!(
                    "({i}, {}, '68487932199-96439406143-{i}', '22195207048-{i}')",
                    i * 31
                )
            })
            .collect();
        format!(
            "INSERT INTO sbtest3 (id, k, c, pad) VALUES {}",
            rows.join(",")
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
            "orm_select_10_cols",
            "/* controller=users,action=index */ SELECT `users`.`id`, `users`.`email`, `users`.`name`, `users`.`state`, `users`.`role`, `users`.`locale`, `users`.`time_zone`, `users`.`sign_in_count`, `users`.`created_at`, `users`.`updated_at` FROM `users` WHERE `users`.`account_id` = 42 AND `users`.`state` = 'active' ORDER BY `users`.`created_at` DESC LIMIT 25 /* trace_id=4bf92f3577b34da6 */",
        ),
        (
            "orm_select_join",
            "SELECT `orders`.* FROM `orders` INNER JOIN `customers` ON `customers`.`id` = `orders`.`customer_id` WHERE `customers`.`email` = 'a@example.com' AND `orders`.`state` IN ('paid', 'shipped') ORDER BY `orders`.`created_at` DESC LIMIT 25 OFFSET 50",
        ),
        (
            "orm_insert",
            "/* app:checkout */ INSERT INTO `orders` (`customer_id`, `total`, `state`, `created_at`) VALUES (42, 99.95, 'new', '2024-05-01 12:00:00')",
        ),
        (
            "hibernate_select",
            "select user0_.id as id1_0_, user0_.name as name2_0_ from users user0_ where user0_.name=? and user0_.active=1",
        ),
        (
            "orm_count",
            "SELECT COUNT(*) AS `count` FROM `posts` WHERE `posts`.`author_id` = 3",
        ),
        ("set_names", "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"),
        ("mysqldump_exec_comment", "/*!40101 SET NAMES utf8 */;"),
        (
            "cte_read",
            "WITH recent AS (SELECT id, customer_id FROM orders WHERE created_at > '2024-01-01') SELECT c.name, COUNT(*) FROM recent r JOIN customers c ON c.id = r.customer_id GROUP BY c.name",
        ),
        (
            "hint_replica_lag",
            "/* rwproxy:replica */ /* rwproxy:max_lag=500ms */ SELECT * FROM reports WHERE day = '2024-05-01'",
        ),
    ];
    let mut out: Vec<(&'static str, String)> = fixed
        .iter()
        .map(|&(name, sql)| (name, sql.to_string()))
        .collect();
    out.push(("multi_row_insert_10", multi_insert));
    out.push(("in_list_500", in_list));
    out
}
