//! Micro-benchmark of the packet framing layer (`protocol::packet`).
//!
//! A `PacketStream` writer and a `PacketStream` reader are joined by an
//! in-memory `tokio::io::duplex` pipe and driven concurrently on a
//! current-thread runtime, so what is measured is framing + buffering + the
//! copy through the pipe, not the kernel's TCP stack.
//!
//! * `rows_100B`: 1,000 payloads of 100 bytes (a typical result row) per
//!   iteration, queued one by one the way a result set is streamed
//!   (`queue_payload` + `flush_if_full`, final `flush`) and read back with
//!   `read_frame`.
//! * `forward_100B`: the proxy's hot path for result sets: frames read from
//!   one stream with `read_frame` and queued unchanged on another with
//!   `queue_raw` (server → rwproxy → client), 1,000 rows per iteration;
//!   and the same with the row-run fast path (`buffered_rows` + one copy
//!   per run), which response forwarding uses for result rows.
//! * `payload_1MiB`: one 1 MiB payload per iteration (a big BLOB or a big
//!   `INSERT`), `queue_payload` + `flush`, read back with `read_frame` and
//!   with `read_packet(limit, Some(0))` (the path client commands take).
//!
//! Throughput is reported in payload bytes (the 4-byte headers are not
//! counted).
//!
//! Run with `cargo bench --bench framing`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rwproxy::protocol::packet::PacketStream;
use tokio::io::DuplexStream;
use tokio::runtime::Runtime;

/// Capacity of the in-memory pipe, about a socket buffer.
const PIPE: usize = 256 * 1024;
/// Rows per iteration in the small-payload benchmarks.
const ROWS: usize = 1000;
const ROW_LEN: usize = 100;
const BIG_LEN: usize = 1 << 20;
/// `max_allowed_packet` used for `read_packet`.
const LIMIT: usize = 64 << 20;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn pair() -> (PacketStream<DuplexStream>, PacketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(PIPE);
    (PacketStream::new(a), PacketStream::new(b))
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Writes `ROWS` rows of `row` on `w` the way a result set is streamed.
async fn write_rows(w: &mut PacketStream<DuplexStream>, row: &[u8]) {
    let mut seq = 1u8;
    for _ in 0..ROWS {
        seq = w.queue_payload(seq, row).wrapping_add(1);
        w.flush_if_full().await.expect("flush_if_full");
    }
    w.flush().await.expect("flush");
}

/// Reads `ROWS` frames from `r`, returning the payload bytes seen.
async fn read_rows(r: &mut PacketStream<DuplexStream>) -> usize {
    let mut total = 0;
    for _ in 0..ROWS {
        let frame = r.read_frame().await.expect("read_frame");
        total += black_box(frame.payload()).len();
    }
    total
}

fn bench_rows(c: &mut Criterion) {
    let rt = runtime();
    let row = payload(ROW_LEN);
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes((ROWS * ROW_LEN) as u64));

    // queue_payload + flush → read_frame
    let (mut w, mut r) = pair();
    group.bench_function(
        BenchmarkId::new("rows_100B", "queue_payload+read_frame"),
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let ((), n) = tokio::join!(write_rows(&mut w, &row), read_rows(&mut r));
                    assert_eq!(n, ROWS * ROW_LEN);
                })
            })
        },
    );

    // server → proxy (read_frame + queue_raw) → client
    let (mut server, mut proxy_in) = pair();
    let (mut proxy_out, mut client) = pair();
    group.bench_function(
        BenchmarkId::new("forward_100B", "read_frame+queue_raw"),
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let forward = async {
                        for _ in 0..ROWS {
                            let frame = proxy_in.read_frame().await.expect("read_frame");
                            proxy_out.queue_raw(frame.raw());
                            if !proxy_in.has_buffered_frame() {
                                // Nothing more to hand on without waiting: send
                                // what is queued, as the session loop does.
                                proxy_out.flush().await.expect("flush");
                            } else {
                                proxy_out.flush_if_full().await.expect("flush_if_full");
                            }
                        }
                        proxy_out.flush().await.expect("flush");
                    };
                    let ((), (), n) = tokio::join!(
                        write_rows(&mut server, &row),
                        forward,
                        read_rows(&mut client)
                    );
                    assert_eq!(n, ROWS * ROW_LEN);
                })
            })
        },
    );

    // The same forwarding with the row-run fast path response forwarding
    // uses: every complete plain row already buffered goes in one copy.
    let (mut server, mut proxy_in) = pair();
    let (mut proxy_out, mut client) = pair();
    group.bench_function(
        BenchmarkId::new("forward_100B", "buffered_rows+consume"),
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let forward = async {
                        let mut left = ROWS as u64;
                        while left > 0 {
                            let (n, rows) = proxy_in.buffered_rows(64 * 1024);
                            if rows > 0 {
                                proxy_out.queue_raw(proxy_in.buffered(n));
                                proxy_in.consume(n);
                                left -= rows;
                                proxy_out.flush_if_full().await.expect("flush_if_full");
                                continue;
                            }
                            // Nothing buffered: send what is queued, wait for more.
                            proxy_out.flush().await.expect("flush");
                            let frame = proxy_in.read_frame().await.expect("read_frame");
                            proxy_out.queue_raw(frame.raw());
                            left -= 1;
                        }
                        proxy_out.flush().await.expect("flush");
                    };
                    let ((), (), n) = tokio::join!(
                        write_rows(&mut server, &row),
                        forward,
                        read_rows(&mut client)
                    );
                    assert_eq!(n, ROWS * ROW_LEN);
                })
            })
        },
    );
    group.finish();
}

fn bench_big(c: &mut Criterion) {
    let rt = runtime();
    let big = payload(BIG_LEN);
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(BIG_LEN as u64));

    let (mut w, mut r) = pair();
    group.bench_function(
        BenchmarkId::new("payload_1MiB", "queue_payload+read_frame"),
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let write = async {
                        w.queue_payload(0, &big);
                        w.flush().await.expect("flush");
                    };
                    let read = async {
                        let frame = r.read_frame().await.expect("read_frame");
                        black_box(frame.payload()).len()
                    };
                    let ((), n) = tokio::join!(write, read);
                    assert_eq!(n, BIG_LEN);
                })
            })
        },
    );

    let (mut w, mut r) = pair();
    group.bench_function(
        BenchmarkId::new("payload_1MiB", "queue_payload+read_packet"),
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let write = async {
                        w.queue_payload(0, &big);
                        w.flush().await.expect("flush");
                    };
                    let read = async {
                        let packet = r.read_packet(LIMIT, Some(0)).await.expect("read_packet");
                        black_box(&packet.payload).len()
                    };
                    let ((), n) = tokio::join!(write, read);
                    assert_eq!(n, BIG_LEN);
                })
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_rows, bench_big);
criterion_main!(benches);
