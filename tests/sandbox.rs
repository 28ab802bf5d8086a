//! The sandbox itself: replication, read-only replicas, GTID, restart,
//! kill/start, the generated configuration and the owner watchdog.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::sandbox::{
    app_opts, free_ports, fresh, root_opts, shared, temp_dir, wait_replicas_caught_up,
};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use rwproxy_sandbox::{self as sandbox, Sandbox, UpOptions, process_alive};

async fn app(port: u16) -> Conn {
    Conn::new(app_opts(port))
        .await
        .unwrap_or_else(|e| panic!("connect as app to {port}: {e}"))
}

async fn read_value(port: u16, sql: &str) -> Option<String> {
    let mut conn = app(port).await;
    let v = conn.query_first(sql).await.expect("query");
    let _ = conn.disconnect().await;
    v
}

fn running_pids(sb: &Sandbox) -> Vec<Option<u32>> {
    sb.servers.iter().map(|s| s.running_pid()).collect()
}

#[tokio::test]
async fn writes_reach_read_only_replicas_over_gtid() {
    let sb = shared();
    assert_eq!(sb.servers.len(), 3);
    let mut primary = app(sb.primary().port).await;
    primary
        .query_drop("CREATE TABLE t_repl (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .expect("create table on primary");
    primary
        .exec_drop("INSERT INTO t_repl VALUES (?, ?)", (1, "hello"))
        .await
        .expect("insert on primary");
    wait_replicas_caught_up(sb).await;

    for replica in sb.replicas() {
        let mut conn = app(replica.port).await;
        let v: Option<String> = conn
            .query_first("SELECT v FROM t_repl WHERE id = 1")
            .await
            .expect("read on replica");
        assert_eq!(v.as_deref(), Some("hello"), "{}", replica.name);

        let err = conn
            .query_drop("INSERT INTO t_repl VALUES (2, 'nope')")
            .await
            .expect_err("replicas are read-only");
        match err {
            mysql_async::Error::Server(e) => assert_eq!(e.code, 1290, "{e:?}"),
            other => panic!("expected ERR 1290, got {other:?}"),
        }
        let _ = conn.disconnect().await;

        let mut root = Conn::new(root_opts(replica.port)).await.expect("root");
        let status: Row = root
            .query_first("SHOW SLAVE STATUS")
            .await
            .expect("SHOW SLAVE STATUS")
            .expect("replica has a slave status row");
        let using_gtid: String = status.get("Using_Gtid").expect("Using_Gtid column");
        assert_eq!(using_gtid, "Slave_Pos", "{}", replica.name);
        let port: u16 = status.get("Master_Port").expect("Master_Port column");
        assert_eq!(port, sb.primary().port);
        let _ = root.disconnect().await;
    }
    let _ = primary.disconnect().await;
}

#[tokio::test]
async fn generated_config_loads() {
    let sb = shared();
    let config = rwproxy::config::Config::load(&sb.config_path).expect("rwproxy.toml loads");
    assert_eq!(config.servers.len(), sb.servers.len());
    for (c, s) in config.servers.iter().zip(&sb.servers) {
        assert_eq!(c.name, s.name);
        assert_eq!(c.port, s.port);
    }
    assert_eq!(config.servers[0].role, rwproxy::config::Role::Primary);
    assert_eq!(config.monitor.user, "rwproxy_monitor");
    // The monitor account can log in and see replication.
    let opts = mysql_async::OptsBuilder::from_opts(root_opts(sb.servers[1].port))
        .user(Some(config.monitor.user.clone()))
        .pass(Some(config.monitor.password.clone()));
    let mut mon = Conn::new(opts).await.expect("monitor logs in");
    let row: Option<Row> = mon
        .query_first("SHOW SLAVE STATUS")
        .await
        .expect("monitor reads status");
    assert!(row.is_some());
    let _ = mon.disconnect().await;
}

#[tokio::test]
async fn down_then_up_keeps_data_and_replication() {
    let sb = fresh(1);
    let mut primary = app(sb.primary().port).await;
    primary
        .query_drop("CREATE TABLE t_keep (id INT PRIMARY KEY); INSERT INTO t_keep VALUES (7)")
        .await
        .expect("write on primary");
    let _ = primary.disconnect().await;
    wait_replicas_caught_up(&sb).await;

    let opts = UpOptions {
        dir: sb.dir.clone(),
        ports: sb.servers.iter().map(|s| s.port).collect(),
        proxy_port: free_ports(1)[0],
        semi_sync: false,
        owner_pid: Some(std::process::id()),
    };
    // `up` on a running sandbox reuses it.
    let pids = running_pids(&sb);
    assert!(pids.iter().all(Option::is_some), "{pids:?}");
    let again = sandbox::up(&opts).expect("up on a running sandbox");
    assert_eq!(again, sb.sandbox);
    assert_eq!(
        running_pids(&sb),
        pids,
        "servers were reused, not restarted"
    );

    sandbox::down(&sb.dir).expect("down");
    for (server, pid) in sb.servers.iter().zip(&pids) {
        let pid = pid.expect("was running");
        assert!(
            !process_alive(pid),
            "{} (pid {pid}) still alive",
            server.name
        );
        assert!(server.running_pid().is_none());
        assert!(!server.pid_file.exists(), "{}", server.pid_file.display());
    }

    let started = Instant::now();
    sandbox::up(&opts).expect("up again on the stopped sandbox");
    eprintln!("restart took {:.1} s", started.elapsed().as_secs_f64());
    let new_pids = running_pids(&sb);
    assert!(new_pids.iter().all(Option::is_some), "{new_pids:?}");
    assert_ne!(new_pids, pids);
    for server in &sb.servers {
        let v = read_value(server.port, "SELECT id FROM t_keep").await;
        assert_eq!(v.as_deref(), Some("7"), "{}", server.name);
    }
    let mut primary = app(sb.primary().port).await;
    primary
        .query_drop("INSERT INTO t_keep VALUES (8)")
        .await
        .expect("write after restart");
    let _ = primary.disconnect().await;
    wait_replicas_caught_up(&sb).await;
    let v = read_value(sb.servers[1].port, "SELECT COUNT(*) FROM t_keep").await;
    assert_eq!(v.as_deref(), Some("2"));
}

#[tokio::test]
async fn killed_replica_restarts_and_catches_up() {
    let sb = fresh(1);
    let pid = sb.servers[1].running_pid().expect("replica running");
    sandbox::kill_server(&sb, 1).expect("kill replica");
    assert!(!process_alive(pid));
    assert!(sb.servers[1].running_pid().is_none());

    let mut primary = app(sb.primary().port).await;
    primary
        .query_drop(
            "CREATE TABLE t_kill (id INT PRIMARY KEY); INSERT INTO t_kill VALUES (1), (2), (3)",
        )
        .await
        .expect("write while the replica is down");
    let _ = primary.disconnect().await;

    sandbox::start_server(&sb, 1).expect("start replica again");
    assert!(sb.servers[1].running_pid().is_some());
    wait_replicas_caught_up(&sb).await;
    let v = read_value(sb.servers[1].port, "SELECT COUNT(*) FROM t_kill").await;
    assert_eq!(v.as_deref(), Some("3"));

    // The same for the primary: killed, restarted, replication resumes.
    sandbox::kill_server(&sb, 0).expect("kill primary");
    sandbox::start_server(&sb, 0).expect("start primary again");
    let mut primary = app(sb.primary().port).await;
    primary
        .query_drop("INSERT INTO t_kill VALUES (4)")
        .await
        .expect("write after primary restart");
    let _ = primary.disconnect().await;
    wait_replicas_caught_up(&sb).await;
    let v = read_value(sb.servers[1].port, "SELECT COUNT(*) FROM t_kill").await;
    assert_eq!(v.as_deref(), Some("4"));
}

#[test]
fn watchdog_kills_servers_when_owner_dies() {
    let mut owner = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn owner");
    let dir = temp_dir();
    let mut ports = free_ports(3);
    let proxy_port = ports.pop().expect("3 ports");
    let sb = sandbox::up(&UpOptions {
        dir: dir.clone(),
        ports,
        proxy_port,
        semi_sync: false,
        owner_pid: Some(owner.id()),
    });
    let sb = match sb {
        Ok(sb) => sb,
        Err(e) => {
            let _ = owner.kill();
            let _ = owner.wait();
            panic!("sandbox up: {e}");
        }
    };
    let pids: Vec<u32> = sb
        .servers
        .iter()
        .map(|s| s.running_pid().expect("running"))
        .collect();

    owner.kill().expect("kill owner");
    owner.wait().expect("reap owner");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| process_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<u32> = pids.into_iter().filter(|p| process_alive(*p)).collect();
    if !survivors.is_empty() {
        let _ = sandbox::down(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        survivors.is_empty(),
        "servers {survivors:?} still alive 5 s after their owner died"
    );
}

/// A proxy port whose derived admin and HTTP ports are free too.
fn proxy_port_with_room() -> u16 {
    loop {
        let p = free_ports(1)[0];
        let (admin, http) = sandbox::proxy_side_ports(p);
        if p > 1024
            && [admin, http]
                .iter()
                .all(|q| std::net::TcpListener::bind(("127.0.0.1", *q)).is_ok())
        {
            return p;
        }
    }
}

/// `rwproxy run --config <path>`, its output to a file (killed by the caller).
fn spawn_proxy(config: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(config.with_extension("log")).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .args(["--log-color", "never", "run", "--config"])
        .arg(config)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start rwproxy")
}

/// Waits (bounded) until the app account logs in through `port`; returns
/// the server port that answered a write (`SELECT @@port` in a transaction
/// runs on the primary).
async fn primary_port_through(port: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Conn::new(app_opts(port)).await {
            let mut tx = c
                .start_transaction(Default::default())
                .await
                .expect("begin");
            let p: Option<u16> = tx.query_first("SELECT @@port").await.expect("query");
            tx.rollback().await.expect("rollback");
            let _ = c.disconnect().await;
            return p.expect("a row");
        }
        assert!(Instant::now() < deadline, "no proxy on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `up` on an existing sandbox rewrites rwproxy.toml only while it is the
/// sandbox's own text; an operator's edit is kept and the new text goes to
/// rwproxy.toml.new. The generated admin and HTTP ports follow the proxy
/// port, so two sandboxes' proxies run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_keeps_an_edited_proxy_config_and_proxies_run_side_by_side() {
    let sb = fresh(1);
    let up_again = |proxy_port: u16| {
        sandbox::up(&UpOptions {
            dir: sb.dir.clone(),
            ports: sb.servers.iter().map(|s| s.port).collect(),
            proxy_port,
            semi_sync: false,
            owner_pid: Some(std::process::id()),
        })
        .expect("up on a running sandbox")
    };
    let new_path = sb.dir.join("rwproxy.toml.new");
    // Unedited: regenerated with the new proxy port.
    let p1 = proxy_port_with_room();
    up_again(p1);
    let text = std::fs::read_to_string(&sb.config_path).expect("read");
    assert!(
        text.contains(&format!("listen = \"127.0.0.1:{p1}\"")),
        "{text}"
    );
    assert!(!new_path.exists());

    // Edited by the operator: kept byte for byte, the new text beside it.
    let edited = format!("{text}\n# operator: keep this\nslow_query_threshold_ms = 5\n").replacen(
        "listen = ",
        "max_client_connections = 77\nlisten = ",
        1,
    );
    std::fs::write(&sb.config_path, &edited).expect("edit");
    let p1b = proxy_port_with_room();
    up_again(p1b);
    assert_eq!(
        std::fs::read_to_string(&sb.config_path).expect("read"),
        edited,
        "the operator's edit was overwritten"
    );
    let generated = std::fs::read_to_string(&new_path).expect("rwproxy.toml.new written");
    assert!(generated.contains(&format!("listen = \"127.0.0.1:{p1b}\"")));
    assert!(!generated.contains("operator"));
    rwproxy::config::Config::load(&new_path).expect("the .new config loads");
    // Taken back: the generated file is used again.
    std::fs::write(&sb.config_path, &text).expect("restore");
    std::fs::remove_file(&new_path).expect("rm .new");
    up_again(p1);
    assert!(!new_path.exists());

    // A second sandbox with another proxy port: both proxies run at once,
    // each in front of its own primary, with their own admin and HTTP ports.
    let other = shared();
    let p2 = loop {
        let p = proxy_port_with_room();
        let (a1, h1) = sandbox::proxy_side_ports(p1);
        let (a2, h2) = sandbox::proxy_side_ports(p);
        let mut all = vec![p1, a1, h1, p, a2, h2];
        all.sort_unstable();
        all.dedup();
        if all.len() == 6 {
            break p;
        }
    };
    sandbox::up(&UpOptions {
        dir: other.dir.clone(),
        ports: other.servers.iter().map(|s| s.port).collect(),
        proxy_port: p2,
        semi_sync: false,
        owner_pid: Some(std::process::id()),
    })
    .expect("up on the shared sandbox");
    let mut a = spawn_proxy(&sb.config_path);
    let mut b = spawn_proxy(&other.config_path);
    let first = primary_port_through(p1).await;
    let second = primary_port_through(p2).await;
    let mut live = Vec::new();
    for p in [p1, p2] {
        let (_, http) = sandbox::proxy_side_ports(p);
        let body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).expect("http");
            s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
        .await
        .expect("join");
        live.push(body);
    }
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
    assert_eq!(first, sb.primary().port);
    assert_eq!(second, other.primary().port);
    for body in live {
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    }
}
