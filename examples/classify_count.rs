//! Fixed-work run of the statement classifier over a few typical
//! statements, for counting instructions (`valgrind --tool=lackey` or
//! `perf stat -e instructions:u`), which other load on the machine does not
//! change. `ROUNDS` (default 20000) passes; `ONLY=name` picks one statement.
use rwproxy::router::classify::classify;
use std::hint::black_box;

const STATEMENTS: &[(&str, &str)] = &[
    ("sb_point_select", "SELECT c FROM sbtest1 WHERE id=4242"),
    (
        "sb_sum_range",
        "SELECT SUM(k) FROM sbtest3 WHERE id BETWEEN 5001 AND 5100",
    ),
    (
        "sb_distinct",
        "SELECT DISTINCT c FROM sbtest2 WHERE id BETWEEN 1 AND 100 ORDER BY c",
    ),
    (
        "orm_count",
        "SELECT COUNT(*) AS `count` FROM `users` WHERE (`users`.`deleted_at` IS NULL) AND `users`.`org_id` = 7",
    ),
    (
        "orm_select",
        "SELECT `orders`.`id`, `orders`.`total`, `orders`.`created_at` FROM `orders` WHERE `orders`.`customer_id` IN (1, 2, 3) ORDER BY `orders`.`created_at` DESC LIMIT 20",
    ),
    (
        "fn_mix",
        "SELECT CONCAT(first, ' ', last), IFNULL(email, ''), DATE_FORMAT(created, '%Y') FROM people WHERE LOWER(city) = 'oslo'",
    ),
    ("sb_update", "UPDATE sbtest1 SET k=k+1 WHERE id=4242"),
];

fn main() {
    let rounds: u64 = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let only = std::env::var("ONLY").ok();
    for (name, sql) in STATEMENTS {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        for _ in 0..rounds {
            black_box(classify(black_box(sql.as_bytes())));
        }
    }
}
