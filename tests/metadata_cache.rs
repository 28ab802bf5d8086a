//! MariaDB's metadata cache (`MARIADB_CLIENT_CACHE_METADATA`) through
//! rwproxy, against a real primary + 2 replicas.
//!
//! With the cache, a server does not send a prepared statement's result
//! columns again with each execution while they stay the same *as far as
//! that server's statement knows*. rwproxy spreads one client statement
//! over several servers, so it must make sure the client is never left
//! decoding one server's rows with another server's columns. The test
//! makes two replicas disagree — a DDL that reached one of them only, as
//! while a schema change replicates — and checks every row the client
//! decodes against what the server that produced it holds.
//!
//! Evidence from the servers themselves: `Resultset_metadata_skipped`
//! (executions whose columns were skipped) and `Com_stmt_execute`.

mod common;

use common::raw::{Raw, lenenc};
use common::sandbox::{self, root_opts};
use mysql_async::prelude::*;

const CACHE_METADATA: u32 = 0x10;
const LONG: u8 = 3;
const LONGLONG: u8 = 8;

async fn status(port: u16, name: &str) -> u64 {
    let mut c = mysql_async::Conn::new(root_opts(port)).await.expect("root");
    let v: Option<(String, u64)> = c
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await
        .expect("status");
    c.disconnect().await.ok();
    v.map_or(0, |(_, n)| n)
}

/// A schema change applied to one server only (not binlogged), as when a
/// DDL has reached that replica and not yet the other.
async fn diverge(port: u16, table: &str) {
    let mut c = mysql_async::Conn::new(root_opts(port)).await.expect("root");
    c.query_drop(format!(
        "SET SESSION sql_log_bin = 0;
         ALTER TABLE app.{table} MODIFY b BIGINT;
         UPDATE app.{table} SET b = 5000000000 WHERE id = 1"
    ))
    .await
    .expect("diverge");
    c.disconnect().await.ok();
}

/// The MySQL type byte of a column definition payload.
fn column_type(def: &[u8]) -> u8 {
    let mut at = 0;
    for _ in 0..6 {
        let (len, n) = lenenc(&def[at..]).expect("lenenc string");
        at += n + len as usize;
    }
    // length of fixed fields (0x0c), charset (2), column length (4), type.
    def[at + 1 + 2 + 4]
}

/// One execution of a parameterless statement over the raw client (no
/// CLIENT_DEPRECATE_EOF): checks the frames' shape and sequence ids, keeps
/// `held` (the client's column types) up to date, and decodes column `b`
/// of the one row by them.
async fn raw_execute(raw: &mut Raw, id: u32, held: &mut Vec<u8>) -> (bool, i64) {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0]);
    raw.write(0, &p).await;
    let mut expect_seq = 1u8;
    let mut next = async |raw: &mut Raw| {
        let (seq, p) = raw.read().await.expect("frame");
        assert_eq!(seq, expect_seq, "sequence id");
        expect_seq = expect_seq.wrapping_add(1);
        p
    };
    let count = next(raw).await;
    assert_eq!(count.len(), 2, "column count + metadata flag: {count:?}");
    assert_eq!(count[0], 2);
    let sent = match count[1] {
        0 => false,
        1 => true,
        other => panic!("metadata flag {other}"),
    };
    if sent {
        held.clear();
        for _ in 0..2 {
            let def = next(raw).await;
            held.push(column_type(&def));
        }
    }
    let eof = next(raw).await;
    assert!(eof[0] == 0xfe && eof.len() < 9, "EOF after columns");
    let row = next(raw).await;
    assert_eq!(row[0], 0x00, "binary row");
    let width = |t: u8| match t {
        LONG => 4,
        LONGLONG => 8,
        other => panic!("column type {other}"),
    };
    // header, null bitmap (1 byte for 2 columns), then the values.
    assert_eq!(
        row.len(),
        2 + width(held[0]) + width(held[1]),
        "row decoded with the columns the client holds ({held:?})"
    );
    let b = &row[2 + width(held[0])..];
    let b = match held[1] {
        LONG => i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))),
        _ => i64::from_le_bytes(b.try_into().expect("8 bytes")),
    };
    let end = next(raw).await;
    assert!(end[0] == 0xfe && end.len() < 9, "EOF after rows");
    (sent, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_never_decode_rows_with_another_servers_columns() {
    let sb = sandbox::fresh(2);
    let replicas = [sb.servers[1].port, sb.servers[2].port];
    common::root_exec(
        sb.servers[0].port,
        "CREATE TABLE app.mc_raw (id INT PRIMARY KEY, b INT);
         INSERT INTO app.mc_raw VALUES (1, 7);
         CREATE TABLE app.mc_async (id INT PRIMARY KEY, b INT);
         INSERT INTO app.mc_async VALUES (1, 7)",
    )
    .await;
    sandbox::wait_replicas_caught_up(&sb).await;
    let proxy = common::start_proxy(common::sandbox_config(&sb)).await;

    // --- A client without CLIENT_DEPRECATE_EOF (libmariadb's shape). ---
    let mut raw = Raw::connect_with(proxy.addr, "app", "app", Some("app"), CACHE_METADATA)
        .await
        .expect("login");
    // Text results carry the flag too (always 1).
    let mut q = vec![0x03];
    q.extend_from_slice(b"SELECT 1");
    raw.write(0, &q).await;
    let (_, count) = raw.read().await.expect("column count");
    assert_eq!(count, vec![1, 1], "text result: count 1, metadata follows");
    let (_, _def) = raw.read().await.expect("column");
    let (_, eof) = raw.read().await.expect("eof");
    assert_eq!(eof[0], 0xfe, "EOF after the column");
    let (_, row) = raw.read().await.expect("row");
    assert_eq!(row, b"\x011".to_vec());
    let (_, end) = raw.read().await.expect("end");
    assert_eq!(end[0], 0xfe, "EOF after the row");
    let mut prep = vec![0x16];
    prep.extend_from_slice(b"SELECT id, b FROM app.mc_raw WHERE id = 1");
    raw.write(0, &prep).await;
    let (_, ok) = raw.read().await.expect("prepare ok");
    assert_eq!(ok[0], 0x00, "prepare: {ok:?}");
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    assert_eq!(u16::from_le_bytes([ok[5], ok[6]]), 2, "2 columns");
    let mut held = Vec::new();
    for _ in 0..2 {
        let (_, def) = raw.read().await.expect("column");
        held.push(column_type(&def));
    }
    let (_, eof) = raw.read().await.expect("eof");
    assert_eq!(eof[0], 0xfe);
    assert_eq!(held, vec![LONG, LONG]);

    let skipped = [
        status(replicas[0], "Resultset_metadata_skipped").await,
        status(replicas[1], "Resultset_metadata_skipped").await,
    ];
    let mut sent_count = 0;
    for i in 0..6 {
        let (sent, b) = raw_execute(&mut raw, id, &mut held).await;
        assert_eq!(b, 7, "execution {i}");
        sent_count += usize::from(sent);
    }
    assert_eq!(sent_count, 0, "same columns everywhere: never sent again");
    let skipped_after = [
        status(replicas[0], "Resultset_metadata_skipped").await,
        status(replicas[1], "Resultset_metadata_skipped").await,
    ];
    // Six executions, alternating over the replicas, all skipped on the
    // servers themselves (a statement prepared lazily on the second replica
    // counts its first execution as skipped too: its prepare sent them).
    let skips: u64 = (0..2).map(|i| skipped_after[i] - skipped[i]).sum();
    assert_eq!(skips, 6, "servers skipped the columns");
    assert!(
        (0..2).all(|i| skipped_after[i] > skipped[i]),
        "both replicas ran executions: {skipped:?} -> {skipped_after:?}"
    );

    // Replica 2 sees a schema change the other has not seen yet.
    diverge(replicas[1], "mc_raw").await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (_, b) = raw_execute(&mut raw, id, &mut held).await;
        seen.insert(b);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![7, 5_000_000_000],
        "both replicas answered, each decoded with its own columns"
    );

    // --- mysql_async (CLIENT_DEPRECATE_EOF, metadata cache). ---
    let mut c = proxy.app_conn().await;
    let stmt = c
        .prep("SELECT id, b FROM mc_async WHERE id = ?")
        .await
        .expect("prepare");
    let executed = [
        status(replicas[0], "Com_stmt_execute").await,
        status(replicas[1], "Com_stmt_execute").await,
    ];
    for i in 0..4 {
        let row: Option<(i64, i64)> = c.exec_first(&stmt, (1,)).await.expect("execute");
        assert_eq!(row, Some((1, 7)), "execution {i}");
    }
    diverge(replicas[1], "mc_async").await;
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8 {
        let row: Option<(i64, i64)> = c
            .exec_first(&stmt, (1,))
            .await
            .unwrap_or_else(|e| panic!("execution {i} after the schema change: {e}"));
        let (id, b) = row.expect("a row");
        assert_eq!(id, 1);
        seen.insert(b);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![7, 5_000_000_000],
        "each replica's rows decoded with its own columns"
    );
    let executed_after = [
        status(replicas[0], "Com_stmt_execute").await,
        status(replicas[1], "Com_stmt_execute").await,
    ];
    // Twelve executions alternating (a server re-preparing after the
    // schema change may count one more).
    let ran: Vec<u64> = (0..2).map(|i| executed_after[i] - executed[i]).collect();
    assert!(
        ran.iter().all(|&n| (6..=7).contains(&n)),
        "executions alternated over the replicas: {ran:?}"
    );
    // The connection is still in a clean state.
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("query after");
    assert_eq!(one, Some(1));
}
