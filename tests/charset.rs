//! The login's character set holds on every server connection a session
//! uses: a client that logs in with latin1, cp1257, utf8mb3 or binary
//! (libmariadb's `--default-character-set`, PHP's `charset=`, Go's
//! `collation=`) stores and reads back exactly the bytes a direct
//! connection does, on the primary and on the replicas.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::sandbox;
use mysql_async::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs the `mariadb` CLI with `charset`, feeding `sql` as raw bytes.
async fn cli(port: u16, charset: &str, sql: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new("mariadb")
        .arg("--no-defaults")
        .arg("--protocol=tcp")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg("-uapp")
        .arg("-papp")
        .arg("--comments")
        .arg(format!("--default-character-set={charset}"))
        .arg("-N")
        .arg("app")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mariadb");
    let mut si = child.stdin.take().expect("stdin");
    let sql = sql.to_vec();
    tokio::spawn(async move {
        let _ = si.write_all(&sql).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("mariadb finished")
        .expect("wait");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_charset_holds_on_primary_and_replicas() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let primary = sb.servers[0].port;
    common::root_exec(
        primary,
        "CREATE TABLE IF NOT EXISTS app.cs (who VARCHAR(20), cs VARCHAR(10), v VARCHAR(20) CHARACTER SET utf8mb4, b VARBINARY(20)) ",
    )
    .await;
    common::root_exec(primary, "DELETE FROM app.cs").await;
    // (charset, bytes of one non-ASCII word in that charset)
    let cases: [(&str, &[u8]); 4] = [
        ("latin1", b"caf\xe9"),      // café
        ("cp1257", b"\xe0\xe8\xfe"), // ąčž
        ("utf8mb3", "čaj".as_bytes()),
        ("binary", "\u{e9}t\u{e9}".as_bytes()), // été, stored as sent
    ];
    for (cs, word) in cases {
        for (who, port) in [("direct", primary), ("proxy", proxy.addr.port())] {
            let mut sql = format!("INSERT INTO cs VALUES ('{who}', '{cs}', '").into_bytes();
            sql.extend_from_slice(word);
            sql.extend_from_slice(b"', '");
            sql.extend_from_slice(word);
            sql.extend_from_slice(b"');\n");
            // What the session itself reports, on a replica and on the primary.
            sql.extend_from_slice(
                b"SELECT @@character_set_client, @@collation_connection, @@character_set_results;\n\
                  /* rwproxy:primary */ SELECT @@character_set_client, @@collation_connection, @@character_set_results;\n",
            );
            let (code, out, err) = cli(port, cs, &sql).await;
            assert_eq!(code, 0, "{cs} {who}: {err}");
            let out = String::from_utf8_lossy(&out);
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 2, "{cs} {who}: {out}");
            for l in &lines {
                assert!(l.starts_with(&format!("{cs}\t")), "{cs} {who}: {out}");
            }
        }
    }
    sandbox::wait_replicas_caught_up(sb).await;
    // Stored the same way both ways (the primary decides).
    let mut c = mysql_async::Conn::new(sandbox::root_opts(primary))
        .await
        .unwrap();
    let rows: Vec<(String, String, String, String)> = c
        .query("SELECT who, cs, HEX(v), HEX(b) FROM app.cs ORDER BY cs, who")
        .await
        .unwrap();
    assert_eq!(rows.len(), 8, "{rows:?}");
    for pair in rows.chunks(2) {
        assert_eq!(pair[0].0, "direct");
        assert_eq!(pair[1].0, "proxy");
        assert_eq!(
            (&pair[0].2, &pair[0].3),
            (&pair[1].2, &pair[1].3),
            "{}: stored differently through rwproxy",
            pair[0].1
        );
    }
    // Read back through rwproxy (a replica answers) in the login charset:
    // the client gets its own bytes again, as directly.
    for (cs, word) in cases {
        let mut expected = word.to_vec();
        expected.push(b'\t');
        let sql = format!("SELECT v, b FROM cs WHERE who = 'proxy' AND cs = '{cs}';\n");
        let (c1, via_proxy, e1) = cli(proxy.addr.port(), cs, sql.as_bytes()).await;
        let (c2, direct, e2) = cli(sb.servers[1].port, cs, sql.as_bytes()).await;
        assert_eq!((c1, c2), (0, 0), "{e1} {e2}");
        assert_eq!(via_proxy, direct, "{cs}");
        if cs != "binary" {
            // The CLI prints what it received: the client's own bytes
            // (binary ones it escapes).
            assert!(via_proxy.starts_with(&expected), "{cs}: {via_proxy:?}");
        }
    }
}
