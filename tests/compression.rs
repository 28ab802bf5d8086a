//! Protocol compression, each leg on its own: clients ↔ rwproxy (zlib with
//! the `mariadb` CLI, mysql-connector-python and the MySQL 9.7 `mysql`
//! client; zstd with the MySQL 9.7 client and a raw client that checks the
//! compressed sequence ids) and rwproxy ↔ servers (`[[servers]] compression`;
//! zlib only, since MariaDB has no zstd),
//! judged by what a user can check: identical results to a direct
//! connection, the bytes a relay counts on the wire, and the servers' own
//! `Compression` status.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::relay::Relay;
use common::sandbox;
use mysql_async::prelude::*;
use rwproxy::config::{ClientCompression, Config, ServerCompression};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// A 100,000-row result of mixed, compressible text (~16 MB uncompressed).
const BIG: &str = "SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) FROM seq_1_to_100000";

/// Tests that start proxies against the shared sandbox one at a time (2 cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the `mariadb` CLI against `port` with `args`, feeding `sql`;
/// returns (exit code, stdout bytes, stderr).
async fn cli(port: u16, args: &[&str], sql: &str) -> (i32, Vec<u8>, String) {
    let mut c = Command::new("mariadb");
    c.arg("--no-defaults")
        .arg("--protocol=tcp")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg("-uapp")
        .arg("-papp")
        .arg("--max-allowed-packet=256M")
        // Keep `/* rwproxy:primary */` hints (the CLI strips comments).
        .arg("--comments")
        .arg("app")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("spawn mariadb");
    let mut si = child.stdin.take().expect("stdin");
    let sql = sql.to_string();
    tokio::spawn(async move {
        let _ = si.write_all(sql.as_bytes()).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("mariadb CLI finished in time")
        .expect("wait");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with_server_compression(mut cfg: Config, c: ServerCompression) -> Config {
    for s in &mut cfg.servers {
        s.compression = c;
    }
    cfg
}

/// The Python of the project's tools venv (scripts/install-deps.sh), which
/// has mysql-connector-python.
fn tools_python() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps.sh",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_compressed_results_equal_direct_and_shrink_on_the_wire() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let relay = Relay::start(proxy.addr).await;
    let (code, direct, err) = cli(sb.servers[0].port, &["-N"], BIG).await;
    assert_eq!(code, 0, "{err}");
    assert!(direct.len() > 10_000_000, "{} bytes", direct.len());

    let before = relay.bytes().1;
    let (code, plain, err) = cli(relay.addr.port(), &["-N"], BIG).await;
    assert_eq!(code, 0, "{err}");
    let plain_wire = relay.bytes().1 - before;

    let before = relay.bytes().1;
    let (code, compressed, err) = cli(relay.addr.port(), &["-N", "--compress"], BIG).await;
    assert_eq!(code, 0, "{err}");
    let compressed_wire = relay.bytes().1 - before;

    assert!(plain == direct, "uncompressed result differs from direct");
    assert!(
        compressed == direct,
        "compressed result differs from direct"
    );
    println!("100k rows: {plain_wire} bytes plain, {compressed_wire} bytes compressed");
    assert!(
        compressed_wire * 5 < plain_wire,
        "not compressed on the wire: {compressed_wire} vs {plain_wire} bytes"
    );

    // Multi-statement, prepared (SQL) and session state over a compressed
    // client leg, next to the same through a plain one.
    let script = "SET @a := 5; SELECT @a + 1; PREPARE s FROM 'SELECT ? * 2'; \
                  EXECUTE s USING @a; SELECT 1; SELECT 2; SELECT REPEAT('x', 70000) = REPEAT('x', 70000);";
    let (c1, a, e1) = cli(proxy.addr.port(), &["-N", "--compress"], script).await;
    let (c2, b, e2) = cli(sb.servers[0].port, &["-N"], script).await;
    assert_eq!((c1, c2), (0, 0), "{e1} {e2}");
    assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
}

/// The MySQL 9.7 chroot of `scripts/mysql-chroot.sh` (run by scripts/test.sh).
fn mysql_chroot() -> std::path::PathBuf {
    let root = std::env::var_os("RWPROXY_MYSQL_CHROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/lib/rwproxy/sid-mysql".into());
    assert!(
        root.join("usr/bin/mysql").exists(),
        "no MySQL client in {}: run scripts/mysql-chroot.sh",
        root.display()
    );
    root
}

/// The MySQL 9.7 `mysql` client (zstd is a MySQL 8.0.18+ client feature;
/// MariaDB's client has only zlib), through a byte-counting relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_97_client_with_zstd_at_its_level() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let root = mysql_chroot();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let relay = Relay::start(proxy.addr).await;
    let (code, direct, err) = cli(sb.servers[0].port, &["-N"], BIG).await;
    assert_eq!(code, 0, "{err}");
    let mut results = Vec::new();
    for algo in ["uncompressed", "zstd", "zlib"] {
        let before = relay.bytes().1;
        let out = Command::new("chroot")
            .arg(&root)
            .args([
                "mysql",
                "--no-defaults",
                "-h127.0.0.1",
                "-uapp",
                "-papp",
                "app",
                "-N",
            ])
            .arg(format!("-P{}", relay.addr.port()))
            .arg(format!("--compression-algorithms={algo}"))
            .arg("--zstd-compression-level=7")
            .arg("-e")
            .arg(BIG)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .expect("mysql client finished")
            .expect("run mysql client in the chroot");
        assert!(
            out.status.success(),
            "{algo}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == direct, "{algo}: result differs from direct");
        results.push((algo, relay.bytes().1 - before));
    }
    println!("100k rows through the MySQL 9.7 client: {results:?}");
    let plain = results[0].1;
    for (algo, bytes) in &results[1..] {
        assert!(
            bytes * 5 < plain,
            "{algo} not compressed: {bytes} vs {plain} bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_leg_compression_is_negotiated_with_every_server_and_carries_large_values() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let cfg = with_server_compression(common::sandbox_config(sb), ServerCompression::Zlib);
    let proxy = common::start_proxy(cfg).await;
    let mut c = proxy.app_conn().await;
    // The servers' own word: each connection rwproxy opened is compressed.
    let mut seen = std::collections::BTreeMap::new();
    // `information_schema` reads go to the primary unless hinted (issue 16
    // item 5): the hint sends the first one to the replicas.
    for sql in [
        "/* rwproxy:replica */ SELECT @@port, VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COMPRESSION'",
        "/* rwproxy:primary */ SELECT @@port, VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COMPRESSION'",
    ] {
        for _ in 0..4 {
            let (port, v): (u16, String) = c.query_first(sql).await.unwrap().unwrap();
            seen.insert(port, v);
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "reads and writes reached every server: {seen:?}"
    );
    assert!(seen.values().all(|v| v == "ON"), "{seen:?}");

    // > 16 MiB both ways, through both legs compressed (CLI) and through a
    // compressed server leg only (mysql_async): the bytes are the same.
    c.query_drop("CREATE TABLE IF NOT EXISTS comp_big (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    let mut data: Vec<u8> = (0..9_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    data.extend(std::iter::repeat_n(b'q', 12_000_000));
    c.exec_drop("REPLACE INTO comp_big VALUES (1, ?)", (data.clone(),))
        .await
        .unwrap();
    let back: Vec<u8> = c
        .query_first("/* rwproxy:primary */ SELECT b FROM comp_big WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert!(back == data, "21 MB value changed on the way");
    let (code, out, err) = cli(
        proxy.addr.port(),
        &["-N", "--compress"],
        "/* rwproxy:primary */ SELECT MD5(b), LENGTH(CONCAT(b, b)), MD5(CONCAT(b, b)) FROM comp_big WHERE id = 1",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code2, direct, err2) = cli(
        sb.servers[0].port,
        &["-N"],
        "SELECT MD5(b), LENGTH(CONCAT(b, b)), MD5(CONCAT(b, b)) FROM comp_big WHERE id = 1",
    )
    .await;
    assert_eq!(code2, 0, "{err2}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&direct)
    );
    // A 22 MB statement from a compressed client over a compressed leg.
    let hex: String = data[..11_000_000]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (code, _, err) = cli(
        proxy.addr.port(),
        &["--compress"],
        &format!("REPLACE INTO comp_big VALUES (2, x'{hex}');"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let len: u64 = c
        .query_first("/* rwproxy:primary */ SELECT LENGTH(b) FROM comp_big WHERE id = 2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(len, 11_000_000);
    c.query_drop("DROP TABLE comp_big").await.unwrap();
    drop(c);

    // The control: without the setting, the servers say OFF.
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let mut c = proxy.app_conn().await;
    let v: String = c
        .query_first("SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COMPRESSION'")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "OFF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connector_python_with_compress_true() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let mut cfg = common::sandbox_config(sb);
    cfg.client_compression = vec![];
    let refusing = common::start_proxy(cfg).await;
    // The hash of the rows as the connector decodes them; the reference is
    // an uncompressed direct connection (mysql-connector-python 26.10 with
    // compress=True fails on this result directly against MariaDB 10.11:
    // it cannot read a plain header split across compressed packets).
    let script = r#"
import sys, hashlib, mysql.connector
def run(port, compress):
    c = mysql.connector.connect(host="127.0.0.1", port=port, user="app", password="app",
                                database="app", compress=compress, use_pure=True)
    cur = c.cursor()
    cur.execute(sys.argv[4])
    rows = cur.fetchall()
    cur.execute("SELECT 1; SELECT 2", map_results=True) if False else None
    cur.execute("SELECT %s, %s", ("it's", None))
    esc = cur.fetchall()
    c.close()
    return len(rows), hashlib.md5(repr(rows).encode()).hexdigest(), esc
print("direct", *run(int(sys.argv[1]), False))
print("proxy", *run(int(sys.argv[2]), True))
try:
    run(int(sys.argv[3]), True)
    print("refused no")
except mysql.connector.Error as e:
    print("refused", e.errno, e.msg)
"#;
    let out = Command::new(tools_python())
        .arg("-c")
        .arg(script)
        .arg(sb.servers[0].port.to_string())
        .arg(proxy.addr.port().to_string())
        .arg(refusing.addr.port().to_string())
        .arg(BIG)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("python finished")
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{text}{err}");
    assert!(out.status.success(), "{text}{err}");
    let line = |p: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no {p} line in {text}"))
            .to_string()
    };
    assert!(line("direct ").starts_with("100000 "), "{text}");
    assert_eq!(line("direct "), line("proxy "));
    // Asked for zlib, which that proxy does not offer: a clear refusal at
    // login, not a misread stream.
    let refused = line("refused ");
    assert!(refused.starts_with("1043 "), "{refused}");
    assert!(refused.contains("zlib compression"), "{refused}");
}

/// A minimal client that logs in asking for zstd at `level` and then
/// speaks the compressed protocol, checking what clients do not show: the
/// compressed sequence ids and where each response ends.
struct ZstdClient {
    s: TcpStream,
    seq: u8,
    /// Compressed bytes read.
    wire_in: usize,
}

const ZSTD: u32 = 1 << 26;

async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.expect("frame header");
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.expect("frame body");
    (h[3], p)
}

impl ZstdClient {
    /// Logs in asking for zstd; `Err((offered, reply))` when refused.
    async fn connect(addr: std::net::SocketAddr, level: u8) -> Result<ZstdClient, (bool, Vec<u8>)> {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let (_, g) = read_frame(&mut s).await;
        let mut i = 1 + g[1..].iter().position(|&b| b == 0).unwrap() + 1 + 4;
        let mut scramble = g[i..i + 8].to_vec();
        let caps_lo = u32::from(u16::from_le_bytes([g[i + 9], g[i + 10]]));
        let caps_hi = u32::from(u16::from_le_bytes([g[i + 14], g[i + 15]]));
        let offered = (caps_lo | caps_hi << 16) & ZSTD != 0;
        i += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
        scramble.extend_from_slice(&g[i..i + 12]);
        // LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | TRANSACTIONS |
        // SECURE_CONNECTION | MULTI_RESULTS | PLUGIN_AUTH | ZSTD.
        let caps: u32 = 1 | 8 | 0x200 | 0x2000 | 0x8000 | 0x20000 | 0x80000 | ZSTD;
        let mut hr = Vec::new();
        hr.extend_from_slice(&caps.to_le_bytes());
        hr.extend_from_slice(&(1u32 << 30).to_le_bytes());
        hr.push(45);
        hr.extend_from_slice(&[0; 23]);
        hr.extend_from_slice(b"app\0");
        let auth = mysql_common::scramble::scramble_native(&scramble, b"app").unwrap();
        hr.push(auth.len() as u8);
        hr.extend_from_slice(&auth);
        hr.extend_from_slice(b"app\0mysql_native_password\0");
        hr.push(level);
        let mut f = vec![hr.len() as u8, (hr.len() >> 8) as u8, 0, 1];
        f.extend(hr);
        s.write_all(&f).await.unwrap();
        let (_, reply) = read_frame(&mut s).await;
        if reply[0] != 0 {
            return Err((offered, reply));
        }
        assert!(offered, "logged in with zstd that was not offered");
        Ok(ZstdClient {
            s,
            seq: 0,
            wire_in: 0,
        })
    }

    /// Sends a query in one compressed packet (compressed id 0); returns
    /// the payloads of the plain frames of its response: up to an ERR, an
    /// OK, or the EOF after the rows (no CLIENT_DEPRECATE_EOF here).
    async fn query(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let n = sql.len() + 1;
        let mut plain = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, 0, 3];
        plain.extend_from_slice(sql.as_bytes());
        let body = zstd::bulk::compress(&plain, 3).unwrap();
        let (c, u) = (body.len(), plain.len());
        let mut pkt = vec![c as u8, (c >> 8) as u8, (c >> 16) as u8, 0];
        pkt.extend_from_slice(&[u as u8, (u >> 8) as u8, (u >> 16) as u8]);
        pkt.extend(body);
        self.s.write_all(&pkt).await.unwrap();
        self.seq = 1;
        let (mut buf, mut frames, mut eofs) = (Vec::new(), Vec::new(), 0);
        loop {
            let mut h = [0u8; 7];
            self.s.read_exact(&mut h).await.expect("compressed header");
            let clen = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            let ulen = usize::from(h[4]) | usize::from(h[5]) << 8 | usize::from(h[6]) << 16;
            assert_eq!(h[3], self.seq, "compressed sequence id");
            self.seq = self.seq.wrapping_add(1);
            let mut body = vec![0u8; clen];
            self.s.read_exact(&mut body).await.unwrap();
            self.wire_in += 7 + clen;
            if ulen == 0 {
                buf.extend(body);
            } else {
                buf.extend(zstd::bulk::decompress(&body, ulen).expect("valid zstd"));
            }
            while buf.len() >= 4 {
                let len =
                    usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
                if buf.len() < 4 + len {
                    break;
                }
                let p: Vec<u8> = buf[4..4 + len].to_vec();
                buf.drain(..4 + len);
                let first = frames.is_empty();
                let head = <[u8]>::first(&p).copied();
                if head == Some(0xfe) && p.len() < 9 {
                    eofs += 1;
                }
                frames.push(p);
                if head == Some(0xff) || (first && head == Some(0)) || eofs == 2 {
                    assert!(buf.is_empty(), "nothing after the end of the response");
                    return frames;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_client_gets_compressed_results() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let mut z = ZstdClient::connect(proxy.addr, 7)
        .await
        .expect("zstd login");
    let frames = z.query("SELECT REPEAT('abc', 20000), 42").await;
    // column count, 2 definitions, EOF, row, EOF.
    assert_eq!(frames.len(), 6, "{frames:?}");
    let row = &frames[4];
    assert_eq!(row[0], 0xfc, "a 60,000-byte first column");
    assert_eq!(&row[3..6], b"abc");
    assert_eq!(&row[row.len() - 2..], b"42");
    assert!(
        z.wire_in < 2_000,
        "{} compressed bytes for a 60 KB row",
        z.wire_in
    );
    // A second command on the same connection: ids restart at 0 / 1.
    let frames = z.query("SELECT @@port").await;
    assert_eq!(frames.len(), 5, "{frames:?}");

    // Not offered: not in the greeting, and a client that asks anyway is
    // refused at login with a clear error (never a misread stream).
    let mut cfg = common::sandbox_config(sb);
    cfg.client_compression = vec![ClientCompression::Zlib];
    let zlib_only = common::start_proxy(cfg).await;
    let Err((offered, reply)) = ZstdClient::connect(zlib_only.addr, 3).await else {
        panic!("zstd accepted although not offered");
    };
    assert!(!offered);
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("zstd compression"), "{text}");
    assert_eq!(u16::from_le_bytes([reply[1], reply[2]]), 1043, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_towards_a_server_that_lacks_it_is_a_clear_error() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let cfg = with_server_compression(common::sandbox_config(sb), ServerCompression::Zstd);
    let proxy = common::start_proxy(cfg).await;
    // MariaDB offers only zlib: the login through rwproxy fails naming it.
    let err = match mysql_async::Conn::new(proxy.app_opts()).await {
        Ok(mut c) => c
            .query_drop("SELECT 1")
            .await
            .expect_err("zstd cannot be negotiated with MariaDB"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains("does not offer zstd compression"),
        "{err}"
    );
}

/// Results stream through compressed legs: a 300 MB result read by a
/// compressed client from a proxy whose server leg is compressed too
/// moves through the real binary while its memory stays flat (each flush
/// of at most 64 KiB is compressed on its own; nothing waits for the end
/// of the result).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_results_stream_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox::shared();
    let cfg = with_server_compression(common::sandbox_config(sb), ServerCompression::Zlib);
    let mut proxy = common::child::ChildProxy::start(cfg, "warn").await;
    let before = proxy.rss_kib();
    // 300,000 rows of 1,000 bytes; the CLI discards them as they come.
    let port = proxy.addr.port();
    let reader = tokio::spawn(async move {
        cli(
            port,
            &["-N", "--compress", "--quick"],
            "SELECT seq, REPEAT(CHAR(65 + seq % 26), 1000) FROM seq_1_to_300000",
        )
        .await
    });
    let mut peak = before;
    while !reader.is_finished() {
        peak = peak.max(proxy.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, out, err) = reader.await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.len() > 300_000_000, "{} bytes", out.len());
    println!("proxy RSS {before} KiB before, peak {peak} KiB");
    assert!(
        peak < before + 32 * 1024,
        "proxy RSS grew from {before} to {peak} KiB for a 300 MB result"
    );
    proxy.assert_healthy();
}
