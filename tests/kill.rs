//! One connection id (issue 16, item 2): the handshake's id is the one the
//! client sees everywhere — `CONNECTION_ID()` returns it, and `KILL
//! [QUERY | CONNECTION] id` / `COM_PROCESS_KILL` mean that id, with the
//! server's answers and permission rules. Each behaviour is checked against
//! a direct connection to the primary and through rwproxy; what stopped is
//! read from the servers' own processlists.

mod common;

use std::time::{Duration, Instant};

use common::sandbox;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

/// The server's error code of a failed statement (`None`: it succeeded or
/// failed otherwise, e.g. the connection closed).
fn server_code<T>(r: &Result<T, mysql_async::Error>) -> Option<u16> {
    match r {
        Err(mysql_async::Error::Server(e)) => Some(e.code),
        _ => None,
    }
}

fn server_message<T>(r: &Result<T, mysql_async::Error>) -> String {
    match r {
        Err(mysql_async::Error::Server(e)) => format!("{} ({}) {}", e.code, e.state, e.message),
        Err(e) => format!("{e}"),
        Ok(_) => "ok".into(),
    }
}

/// Statements whose text starts with `prefix` running on any server of the
/// sandbox (the servers' own `information_schema.PROCESSLIST`).
async fn running(sb: &rwproxy_sandbox::Sandbox, prefix: &str) -> usize {
    let mut n = 0;
    for s in &sb.servers {
        let mut c = Conn::new(sandbox::root_opts(s.port))
            .await
            .expect("root connect");
        let count: Option<u64> = c
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE CONCAT(?, '%')",
                (prefix,),
            )
            .await
            .expect("processlist");
        n += count.unwrap_or(0) as usize;
        let _ = c.disconnect().await;
    }
    n
}

fn app_direct(sb: &rwproxy_sandbox::Sandbox) -> Opts {
    sandbox::app_opts(sb.servers[0].port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_id_is_the_handshake_id() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    for (who, opts) in [("direct", app_direct(sb)), ("proxy", proxy.app_opts())] {
        let mut c = Conn::new(opts).await.expect("connect");
        let hs = u64::from(c.id());
        // Reads run on replicas (several, round-robin); every one answers
        // with the handshake's id.
        for _ in 0..4 {
            let id: Option<u64> = c
                .query_first("SELECT CONNECTION_ID()")
                .await
                .expect("select");
            assert_eq!(id, Some(hs), "{who}: CONNECTION_ID() vs handshake id");
        }
        // The column keeps its name; inside expressions and writes too.
        let rows: Vec<mysql_async::Row> = c.query("SELECT CONNECTION_ID()").await.expect("select");
        assert_eq!(
            rows[0].columns_ref()[0].name_str(),
            "CONNECTION_ID()",
            "{who}"
        );
        let same: Option<i64> = c
            .query_first("SELECT CONNECTION_ID() + 0 = CONNECTION_ID()")
            .await
            .expect("expr");
        assert_eq!(same, Some(1), "{who}");
        c.query_drop(
            "CREATE TABLE IF NOT EXISTS app.kill_owner (who BIGINT UNSIGNED, tag VARCHAR(20))",
        )
        .await
        .expect("create");
        c.exec_drop("DELETE FROM app.kill_owner WHERE tag = ?", (who,))
            .await
            .expect("delete");
        c.exec_drop(
            "INSERT INTO app.kill_owner VALUES (CONNECTION_ID(), ?)",
            (who,),
        )
        .await
        .expect("insert");
        let stored: Option<u64> = c
            .exec_first("SELECT who FROM app.kill_owner WHERE tag = ?", (who,))
            .await
            .expect("read back");
        assert_eq!(stored, Some(hs), "{who}: the row holds the session's id");
        // A string is not a call.
        let s: Option<String> = c.query_first("SELECT 'CONNECTION_ID()'").await.expect("s");
        assert_eq!(s.as_deref(), Some("CONNECTION_ID()"), "{who}");
        let _ = c.disconnect().await;
    }
    // Two sessions, two ids.
    let (a, b) = (proxy.app_conn().await, proxy.app_conn().await);
    assert_ne!(a.id(), b.id());
}

/// The driver cancel pattern (Connector/J `Statement.cancel()`,
/// mysql-connector `cmd_process_kill`): a second connection sends `KILL
/// QUERY <handshake id>` while the first runs a long statement.
async fn cancel_pattern(sb: &rwproxy_sandbox::Sandbox, opts: Opts, sql: &'static str) -> String {
    let mut a = Conn::new(opts.clone()).await.expect("connect a");
    let mut b = Conn::new(opts).await.expect("connect b");
    let id = a.id();
    let task = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = a.query_first(sql).await;
        (r, a)
    });
    common::wait_until(Duration::from_secs(10), "the statement runs", || async {
        running(sb, sql).await > 0
    })
    .await;
    let killed = Instant::now();
    b.query_drop(format!("KILL QUERY {id}"))
        .await
        .expect("KILL QUERY");
    let (r, mut a) = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the statement ended")
        .expect("task");
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "returned {took:?} after KILL QUERY"
    );
    assert_eq!(running(sb, sql).await, 0, "still running on a server");
    // The same connection goes on.
    let one: Option<i64> = a
        .query_first("SELECT 1")
        .await
        .expect("usable after KILL QUERY");
    assert_eq!(one, Some(1));
    let _ = b.disconnect().await;
    server_message(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_stops_the_statement_wherever_it_runs() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let direct = cancel_pattern(sb, app_direct(sb), "SELECT SLEEP(10.01)").await;
    assert!(direct.starts_with("1317 (70100)"), "direct: {direct}");
    // A plain read: on a replica.
    let through = cancel_pattern(sb, proxy.app_opts(), "SELECT SLEEP(10.02)").await;
    assert_eq!(through, direct, "through rwproxy");
    // A locking read: on the primary.
    let through = cancel_pattern(sb, proxy.app_opts(), "SELECT SLEEP(10.03) FOR UPDATE").await;
    assert_eq!(through, direct, "through rwproxy, on the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_connection_ends_the_other_session() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    for (who, opts) in [("direct", app_direct(sb)), ("proxy", proxy.app_opts())] {
        let sql: &'static str = if who == "direct" {
            "SELECT SLEEP(10.04)"
        } else {
            "SELECT SLEEP(10.05)"
        };
        // Idle: its next statement finds the connection closed.
        let mut idle = Conn::new(opts.clone()).await.expect("connect");
        let mut b = Conn::new(opts.clone()).await.expect("connect b");
        b.query_drop(format!("KILL {}", idle.id()))
            .await
            .unwrap_or_else(|e| panic!("{who}: KILL: {e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = idle.query_drop("SELECT 1").await;
        assert!(
            r.is_err() && server_code(&r).is_none(),
            "{who}: killed idle session still answers: {}",
            server_message(&r)
        );
        // Running: the statement stops on its server, the client's
        // connection closes.
        let mut a = Conn::new(opts.clone()).await.expect("connect");
        let id = a.id();
        let task = tokio::spawn(async move { a.query_drop(sql).await });
        common::wait_until(Duration::from_secs(10), "the statement runs", || async {
            running(sb, sql).await > 0
        })
        .await;
        let killed = Instant::now();
        // COM_PROCESS_KILL is the same request (mysql-connector's
        // cmd_process_kill); here as SQL.
        b.query_drop(format!("KILL CONNECTION {id}"))
            .await
            .expect("KILL CONNECTION");
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ended")
            .expect("task");
        assert!(killed.elapsed() < Duration::from_secs(1), "{who}");
        assert!(
            r.is_err() && server_code(&r).is_none(),
            "{who}: {}",
            server_message(&r)
        );
        common::wait_until(Duration::from_secs(2), "backend statement gone", || async {
            running(sb, sql).await == 0
        })
        .await;
        // The killer is untouched.
        let one: Option<i64> = b
            .query_first("SELECT 1")
            .await
            .expect("killer still usable");
        assert_eq!(one, Some(1));
    }
}

/// `COM_PROCESS_KILL` (command 0x0c) ends the session it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn com_process_kill_ends_the_session() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let mut victim = proxy.app_conn().await;
    let mut raw = common::raw::Raw::connect(proxy.addr, "app", "app", Some("app"))
        .await
        .expect("raw login");
    let reply = raw.command(0x0c, &victim.id().to_le_bytes()).await;
    assert!(
        format!("{reply:?}").contains("Ok"),
        "COM_PROCESS_KILL: {reply:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(victim.query_drop("SELECT 1").await.is_err(), "victim alive");
    let unknown = raw.command(0x0c, &4_000_000_000u32.to_le_bytes()).await;
    assert!(format!("{unknown:?}").contains("1094"), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_answers_as_the_server_does() {
    let sb = sandbox::shared();
    common::root_exec(
        sb.servers[0].port,
        "CREATE USER IF NOT EXISTS 'kill_other'@'%' IDENTIFIED BY 'ko'; \
         GRANT ALL ON app.* TO 'kill_other'@'%'",
    )
    .await;
    sandbox::wait_replicas_caught_up(sb).await;
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let direct = sandbox::app_opts(sb.servers[0].port);
    let other = |port: u16| -> Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("kill_other"))
            .pass(Some("ko"))
            .db_name(Some("app"))
            .prefer_socket(false)
            .into()
    };
    let ways = [
        (
            "direct",
            direct,
            other(sb.servers[0].port),
            sandbox::root_opts(sb.servers[0].port),
        ),
        (
            "proxy",
            proxy.app_opts(),
            other(proxy.addr.port()),
            proxy.opts("root", "root", None),
        ),
    ];
    let mut answers = Vec::new();
    for (who, app, other, root) in ways {
        let mut victim = Conn::new(app.clone()).await.expect("victim");
        let vid = victim.id();
        let mut stranger = Conn::new(other).await.expect("other user");
        // Another user without CONNECTION ADMIN: 1095, victim untouched.
        let r = stranger.query_drop(format!("KILL QUERY {vid}")).await;
        let denied = server_message(&r).replace(&format!("thread {vid}"), "thread <id>");
        let r = stranger.query_drop(format!("KILL {vid}")).await;
        assert_eq!(server_code(&r), Some(1095), "{who}");
        let one: Option<i64> = victim.query_first("SELECT 1").await.expect("victim alive");
        assert_eq!(one, Some(1), "{who}");
        // An id nobody has.
        let r = stranger.query_drop("KILL 4000000000").await;
        let unknown = server_message(&r);
        let r = stranger.query_drop("KILL QUERY 4000000001").await;
        let unknown_query = server_message(&r);
        // Own id: this statement is interrupted.
        let sid = stranger.id();
        let r = stranger.query_drop(format!("KILL QUERY {sid}")).await;
        let own_query = server_message(&r);
        let r = stranger.query_drop("KILL QUERY CONNECTION_ID()").await;
        assert_eq!(server_message(&r), own_query, "{who}");
        // A server query id that does not exist.
        let r = stranger.query_drop("KILL QUERY ID 4000000002").await;
        let query_id = server_message(&r);
        // The same user may kill its own sessions; root (CONNECTION ADMIN)
        // anyone's.
        let mut same = Conn::new(app).await.expect("same user");
        same.query_drop(format!("KILL QUERY {vid}"))
            .await
            .unwrap_or_else(|e| panic!("{who}: same user: {e}"));
        let mut root = Conn::new(root).await.expect("root");
        root.query_drop(format!("KILL {vid}"))
            .await
            .unwrap_or_else(|e| panic!("{who}: root: {e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            victim.query_drop("SELECT 1").await.is_err(),
            "{who}: victim alive"
        );
        // Own connection: ERR 1927, then closed.
        let r = stranger.query_drop("KILL CONNECTION_ID()").await;
        let own_conn = server_message(&r);
        assert!(stranger.query_drop("SELECT 1").await.is_err(), "{who}");
        answers.push((
            denied,
            unknown,
            unknown_query,
            own_query,
            query_id,
            own_conn,
        ));
    }
    println!("{answers:#?}");
    assert!(
        answers[0]
            .0
            .starts_with("1095 (HY000) You are not owner of thread")
    );
    assert_eq!(answers[0], answers[1], "direct vs through rwproxy");
}

/// The id a client names is rwproxy's, even when a server has a thread of
/// that same number: a `KILL` through rwproxy never hits that thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_thread_with_the_same_number_is_never_hit() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    // A client connected directly to the primary, busy.
    let sql = "SELECT SLEEP(2.06)";
    let mut direct = Conn::new(app_direct(sb)).await.expect("direct");
    let thread = direct.id();
    // An rwproxy session whose id is that same number: ids are drawn at
    // accept, so connections that only read the greeting advance them.
    loop {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("tcp");
        let mut head = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut head)
            .await
            .expect("greeting header");
        let len = usize::from(head[0]) | usize::from(head[1]) << 8;
        let mut greeting = vec![0u8; len];
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut greeting)
            .await
            .expect("greeting");
        let nul = greeting[1..].iter().position(|&b| b == 0).expect("version") + 2;
        let id = u32::from_le_bytes(greeting[nul..nul + 4].try_into().expect("id"));
        assert!(id < thread, "no rwproxy id {thread} came up");
        if id + 1 == thread {
            break;
        }
    }
    let mut twin = proxy.app_conn().await;
    assert_eq!(
        twin.id(),
        thread,
        "an rwproxy session with the thread's number"
    );
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let r: Result<Option<i64>, _> = direct.query_first(sql).await;
        (r, started.elapsed())
    });
    common::wait_until(Duration::from_secs(10), "the statement runs", || async {
        running(sb, sql).await > 0
    })
    .await;
    let mut killer = proxy.app_conn().await;
    killer
        .query_drop(format!("KILL QUERY {thread}"))
        .await
        .expect("KILL QUERY of the rwproxy session");
    // An id that is no rwproxy session but is a live thread on the primary.
    let mut other = Conn::new(app_direct(sb)).await.expect("direct 2");
    let r = killer
        .query_drop(format!("KILL QUERY {}", other.id()))
        .await;
    assert_eq!(server_code(&r), Some(1094), "{}", server_message(&r));
    let (r, took) = task.await.expect("task");
    assert_eq!(
        r.as_ref().ok().cloned().flatten(),
        Some(0),
        "the direct client's statement was hit: {}",
        server_message(&r)
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
    // KILL of the twin ends the rwproxy session, not the direct client.
    killer
        .query_drop(format!("KILL {thread}"))
        .await
        .expect("KILL");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(twin.query_drop("SELECT 1").await.is_err(), "twin alive");
    let one: Option<i64> = other.query_first("SELECT 1").await.expect("direct alive");
    assert_eq!(one, Some(1));
}

/// A client that hangs up while its statement waits (a killed process, a
/// driver's read timeout): the server ends the statement of a client that
/// is gone, and so does rwproxy (it ends its backend connection), so a
/// `GET_LOCK` wait does not outlive its client (MariaDB's `dirty_close`).
/// The client is the `mariadb` CLI killed with SIGKILL; what runs is read
/// from the primary's processlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_ends_its_statement() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let mut holder = Conn::new(app_direct(sb)).await.expect("holder");
    for (who, port) in [("direct", sb.servers[0].port), ("proxy", proxy.addr.port())] {
        let lock = format!("hangup_{who}");
        let got: Option<i64> = holder
            .query_first(format!("SELECT GET_LOCK('{lock}', 0)"))
            .await
            .expect("lock");
        assert_eq!(got, Some(1));
        let sql: &'static str = Box::leak(format!("SELECT GET_LOCK('{lock}', 3600)").into());
        let mut child = tokio::process::Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-uapp",
                "-papp",
                "-e",
                sql,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mariadb client");
        common::wait_until(Duration::from_secs(10), "the statement waits", || async {
            running(sb, sql).await > 0
        })
        .await;
        child.kill().await.expect("kill the client");
        let took = common::wait_until(
            Duration::from_secs(8),
            &format!("{who}: the statement of a client that hung up ended"),
            || async { running(sb, sql).await == 0 },
        )
        .await;
        println!("{who}: statement gone {took:?} after the client hung up");
        holder
            .query_drop(format!("DO RELEASE_LOCK('{lock}')"))
            .await
            .expect("release");
    }
}
