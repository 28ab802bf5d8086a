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

include!("common/digest_corpus.rs");

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
