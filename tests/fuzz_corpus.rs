//! Replays the fuzzing corpus (`fuzz/corpus/<target>/`) through the same
//! entry points the cargo-fuzz targets use, on the stable toolchain.
//!
//! The fuzz targets need nightly and libFuzzer; this test needs neither, so
//! every `cargo test` re-checks every input the fuzzer ever found
//! interesting (the corpus is the fuzzer's map of the parsers' branches),
//! and a change that makes one of them panic, or break a property the
//! entry points assert, fails here with the file's name. Inputs that once
//! crashed a target are kept in `fuzz/regressions/<target>/` and replayed
//! too.

#[path = "../fuzz/src/lib.rs"]
mod entry;

use std::path::{Path, PathBuf};
use std::time::Instant;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("packet", entry::packet),
    ("handshake", entry::handshake),
    ("command", entry::command),
    ("classify", entry::classify),
    ("set", entry::set),
    ("compress", entry::compress),
];

fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target)
}

/// The files of a directory, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_without_failure() {
    let mut failures = Vec::new();
    for &(name, run) in TARGETS {
        let dir = fuzz_dir("corpus", name);
        let mut files = files_in(&dir);
        assert!(
            !files.is_empty(),
            "corpus {} is missing or empty",
            dir.display()
        );
        // Inputs that once crashed a target (kept apart so `cargo fuzz
        // cmin` never drops them).
        files.extend(files_in(&fuzz_dir("regressions", name)));
        let started = Instant::now();
        let mut bytes = 0usize;
        for path in &files {
            let data = std::fs::read(path).expect("read corpus file");
            bytes += data.len();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
        println!(
            "{name}: {} inputs, {bytes} bytes, {:?}",
            files.len(),
            started.elapsed()
        );
    }
    assert!(
        failures.is_empty(),
        "corpus inputs that fail: {failures:#?}"
    );
}

/// Inputs at the edges of each entry point's control bytes (empty, all
/// ones, all zeros), which the corpus need not contain.
#[test]
fn entry_points_accept_edge_inputs() {
    for &(_, run) in TARGETS {
        run(&[]);
        run(&[0xff; 64]);
        run(&[0; 64]);
    }
    // A classic COM_QUERY split over two frames with a bad sequence id,
    // through the framing target in each of its modes.
    for mode in 0..10u8 {
        let mut input = vec![mode, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0];
        input.extend_from_slice(&[9, 0, 0, 0, 3]);
        input.extend_from_slice(b"SELECT 1");
        input.extend_from_slice(&[1, 0, 0, 7, 0]);
        entry::packet(&input);
    }
}
