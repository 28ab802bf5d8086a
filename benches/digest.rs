//! Cost of query digests, which run on every statement: `normalize` (SQL →
//! digest text + id) and `DigestStore::record` (accounting one run).
//!
//! * `digest/normalize/typical_corpus`: the corpus below (sysbench
//!   oltp_read_write statements with literals filled in, ORM-style traffic
//!   with comments) without the 500-element IN list, into one reused
//!   buffer; throughput is in statements. Target: ≤ 500 ns per typical
//!   sysbench statement.
//! * `digest/normalize/<name>`: selected shapes on their own.
//! * `digest/record/existing`: `record` on a digest already in the store
//!   (the steady state), one thread.
//! * `digest/record/contended_<shards>x<threads>`: the same from 8 threads
//!   on 64 hot digests, total wall time per record, with 1 shard (a single
//!   `Mutex`) and with 16: the figure behind `DigestStore::new`'s sharding.
//!
//! After criterion's report, a plain table of ns per statement for each
//! corpus entry is printed, best of 20 short runs (skipped with
//! `--test`/`--list`).
//!
//! Run with `cargo bench --bench digest` (add `-- --quick` for a fast pass).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use rwproxy::router::digest::{DigestStore, MAX_TEXT_LEN, normalize};

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

fn bench_normalize(c: &mut Criterion) {
    let corpus = corpus();
    let mut group = c.benchmark_group("digest/normalize");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));

    let typical: Vec<&[u8]> = corpus
        .iter()
        .filter(|(name, _)| *name != "in_list_500")
        .map(|(_, sql)| sql.as_bytes())
        .collect();
    let mut out = String::with_capacity(MAX_TEXT_LEN);
    group.throughput(Throughput::Elements(typical.len() as u64));
    group.bench_function("typical_corpus", |b| {
        b.iter(|| {
            for sql in &typical {
                black_box(normalize(black_box(sql), &mut out));
            }
        })
    });

    group.throughput(Throughput::Elements(1));
    for (name, sql) in &corpus {
        if !matches!(
            *name,
            "sb_point_select"
                | "sb_non_index_update"
                | "sb_insert"
                | "orm_select_10_cols"
                | "in_list_500"
        ) {
            continue;
        }
        group.bench_function(*name, |b| {
            b.iter(|| black_box(normalize(black_box(sql.as_bytes()), &mut out)))
        });
    }
    group.finish();
}

fn bench_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest/record");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));

    let mut text = String::new();
    let digest = normalize(b"SELECT c FROM sbtest1 WHERE id=50114", &mut text);
    let store = DigestStore::new(10_000);
    store.record(digest, &text, Duration::from_micros(150), 1, false, false);
    group.bench_function("existing", |b| {
        b.iter(|| {
            store.record(
                black_box(digest),
                black_box(&text),
                Duration::from_micros(150),
                1,
                false,
                false,
            )
        })
    });

    // 64 hot digests recorded from 8 threads; one iteration = one record
    // (split over the threads), so the figure is wall time per record.
    const THREADS: u64 = 8;
    let hot: Vec<(u64, String)> = (0..64)
        .map(|i| {
            let mut t = String::new();
            let d = normalize(
                format!("SELECT c FROM sbtest{i} WHERE id=1").as_bytes(),
                &mut t,
            );
            (d, t)
        })
        .collect();
    for shards in [1, 16] {
        let store = DigestStore::with_shards(10_000, shards);
        group.bench_function(format!("contended_{shards}x{THREADS}"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(THREADS);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..THREADS {
                        let (store, hot) = (&store, &hot);
                        s.spawn(move || {
                            for i in 0..per_thread {
                                let (d, text) = &hot[((i * 7 + t * 13) % 64) as usize];
                                store.record(
                                    *d,
                                    text,
                                    Duration::from_micros(150),
                                    1,
                                    false,
                                    t % 2 == 0,
                                );
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// Plain ns-per-statement table: the best of 20 runs of ~5 ms each (the
/// minimum is the figure least disturbed by other load on the machine).
fn print_table() {
    let mut out = String::with_capacity(MAX_TEXT_LEN);
    println!("\nnormalize, ns per statement (reused buffer, best of 20 runs):");
    let mut typical = (0.0, 0usize);
    for (name, sql) in corpus() {
        let mut best = f64::MAX;
        for _ in 0..20 {
            let mut n = 0u64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(5) {
                for _ in 0..100 {
                    black_box(normalize(black_box(sql.as_bytes()), &mut out));
                }
                n += 100;
            }
            best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
        }
        if name != "in_list_500" {
            typical.0 += best;
            typical.1 += 1;
        }
        let shown: String = out.chars().take(60).collect();
        let more = if shown.len() < out.len() { "…" } else { "" };
        println!(
            "  {name:<24} {:>5} B {best:>8.0} ns   {shown}{more}",
            sql.len()
        );
    }
    println!(
        "  {:<24} {:>15.0} ns   (mean over {} statements, in_list_500 excluded)",
        "typical",
        typical.0 / typical.1 as f64,
        typical.1
    );
}

criterion_group!(benches, bench_normalize, bench_record);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        print_table();
    }
}
