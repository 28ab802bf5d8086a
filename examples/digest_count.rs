//! Fixed-work run of the digest normalizer over the benchmark corpus, for
//! counting instructions (`perf stat -e instructions:u`), which other load
//! on the machine does not change. `ROUNDS` (default 20000) passes.
use rwproxy::router::digest::normalize;
use std::hint::black_box;

include!("../benches/common/digest_corpus.rs");

fn main() {
    let rounds: u64 = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let only = std::env::var("ONLY").ok();
    let mut out = String::with_capacity(4096);
    for (name, sql) in corpus() {
        if name == "in_list_500" || only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        for _ in 0..rounds {
            black_box(normalize(black_box(sql.as_bytes()), &mut out));
        }
    }
}
