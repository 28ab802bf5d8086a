//! Admin port and promotion (issue: "Admin port and promotion"): switchover
//! and failover under load without losing acknowledged writes, fencing of a
//! returning old primary, two rwproxy instances, and refusals. Each test
//! owns its sandbox (they kill and promote servers).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sandbox::{self, root_opts};
use common::{Proxy, admin, root_exec, start_proxy, wait_until};
use mysql_async::prelude::*;
use rwproxy::config::Config;
use rwproxy_sandbox::Sandbox;

fn config(sb: &Sandbox) -> Config {
    let mut c = common::with_admin(common::sandbox_config(sb));
    c.monitor_interval_ms = 250;
    c
}

/// Writers insert unique ids in autocommit and record each acknowledged
/// one; readers read. Returns handles and shared counters.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
    write_errors: Arc<AtomicU64>,
    read_errors: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    /// Longest gap between two acknowledged writes (any writer), in ms.
    max_gap_ms: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_load(proxy: &Proxy, writers: u64, readers: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let write_errors = Arc::new(AtomicU64::new(0));
    let read_errors = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let max_gap_ms = Arc::new(AtomicU64::new(0));
    let last_ack = Arc::new(Mutex::new(Instant::now()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (opts, stop, acked, errs, gap, last) = (
            proxy.app_opts(),
            stop.clone(),
            acked.clone(),
            write_errors.clone(),
            max_gap_ms.clone(),
            last_ack.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<mysql_async::Conn> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = mysql_async::Conn::new(opts.clone()).await.ok();
                    if conn.is_none() {
                        errs.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                let id = w * 10_000_000 + n;
                n += 1;
                let Some(c) = conn.as_mut() else { continue };
                match c
                    .exec_drop("INSERT INTO app.ack (id) VALUES (?)", (id,))
                    .await
                {
                    Ok(()) => {
                        acked.lock().expect("lock").insert(id);
                        let mut l = last.lock().expect("lock");
                        let g = l.elapsed().as_millis() as u64;
                        gap.fetch_max(g, Ordering::Relaxed);
                        *l = Instant::now();
                    }
                    Err(e) => {
                        eprintln!("write {id} failed: {e}");
                        errs.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }
    for _ in 0..readers {
        let (opts, stop, errs, reads) = (
            proxy.app_opts(),
            stop.clone(),
            read_errors.clone(),
            reads.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<mysql_async::Conn> = None;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = mysql_async::Conn::new(opts.clone()).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errs.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                match c.query_drop("SELECT COUNT(*) FROM app.ack").await {
                    Ok(()) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("read failed: {e}");
                        errs.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }
    Load {
        stop,
        acked,
        write_errors,
        read_errors,
        reads,
        max_gap_ms,
        tasks,
    }
}

impl Load {
    async fn finish(self) -> Self {
        self.stop.store(true, Ordering::Relaxed);
        let mut me = self;
        for t in me.tasks.drain(..) {
            let _ = t.await;
        }
        me
    }
}

async fn ids_on(port: u16) -> BTreeSet<u64> {
    let mut c = mysql_async::Conn::new(root_opts(port))
        .await
        .expect("connect");
    let v: Vec<u64> = c.query("SELECT id FROM app.ack").await.expect("ids");
    v.into_iter().collect()
}

async fn wait_has_all(port: u16, acked: &BTreeSet<u64>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = ids_on(port).await;
        let missing = acked.difference(&have).count();
        if missing == 0 || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn slave_master_port(port: u16) -> Option<(u16, String, String)> {
    let mut c = mysql_async::Conn::new(root_opts(port))
        .await
        .expect("connect");
    let rows: Vec<mysql_async::Row> = c.query("SHOW SLAVE STATUS").await.expect("status");
    let r = rows.first()?;
    let mp: u16 = r.get::<u16, _>("Master_Port")?;
    let io: String = r.get("Slave_IO_Running")?;
    let sql: String = r.get("Slave_SQL_Running")?;
    Some((mp, io, sql))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_under_load_loses_nothing() {
    let sb = sandbox::fresh(2);
    let (p, r1, r2) = (sb.servers[0].port, sb.servers[1].port, sb.servers[2].port);
    root_exec(p, "CREATE TABLE app.ack (id BIGINT PRIMARY KEY)").await;
    sandbox::wait_replicas_caught_up(&sb).await;
    let proxy = start_proxy(config(&sb)).await;

    let load = start_load(&proxy, 16, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reads_before = load.reads.load(Ordering::Relaxed);
    let t = Instant::now();
    let report = admin(&proxy, "PROMOTE replica1")
        .await
        .expect("PROMOTE replica1");
    let took = t.elapsed();
    for row in &report {
        println!("  {:<60} {} ms", row[0], row[1]);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load = load.finish().await;
    let acked = load.acked.lock().expect("lock").clone();
    let pause = report
        .iter()
        .find(|r| r[0] == "write pause")
        .map(|r| r[1].clone())
        .unwrap_or_default();
    println!(
        "switchover: {} acknowledged writes, {} write errors, {} reads ({} after PROMOTE), {} read errors, PROMOTE took {:?}, write pause {pause} ms, longest gap between acks {} ms",
        acked.len(),
        load.write_errors.load(Ordering::Relaxed),
        load.reads.load(Ordering::Relaxed),
        load.reads.load(Ordering::Relaxed) - reads_before,
        load.read_errors.load(Ordering::Relaxed),
        took,
        load.max_gap_ms.load(Ordering::Relaxed),
    );
    assert!(
        acked.len() > 500,
        "load too small to prove anything: {}",
        acked.len()
    );
    assert_eq!(
        load.write_errors.load(Ordering::Relaxed),
        0,
        "autocommit writes must see a pause, not an error"
    );
    assert_eq!(
        load.read_errors.load(Ordering::Relaxed),
        0,
        "reads must not stop"
    );
    // Every acknowledged id is on the new primary and on every other server.
    for (name, port) in [
        ("replica1 (new primary)", r1),
        ("replica2", r2),
        ("old primary", p),
    ] {
        let missing = wait_has_all(port, &acked).await;
        assert_eq!(missing, 0, "{missing} acknowledged ids missing on {name}");
    }
    // The old primary and replica2 replicate from replica1.
    for port in [p, r2] {
        let (mp, io, sql) = slave_master_port(port).await.expect("replicating");
        assert_eq!((mp, io.as_str(), sql.as_str()), (r1, "Yes", "Yes"));
    }
    let s = common::status(&proxy).await;
    assert_eq!(s["primary"], "replica1", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_change_nothing() {
    let sb = sandbox::fresh(2);
    let p = sb.servers[0].port;
    let r2 = sb.servers[2].port;
    let proxy = start_proxy(config(&sb)).await;
    let cases = [
        ("PROMOTE nosuch", "unknown server"),
        ("PROMOTE primary", "already the primary"),
        ("FAILOVER", "primary is up"),
        ("PROMOTE", "unknown admin command"),
        ("SET SERVER replica1 SIDEWAYS", "ONLINE, OFFLINE or DRAIN"),
    ];
    for (cmd, want) in cases {
        let e = admin(&proxy, cmd).await.expect_err(cmd);
        assert!(e.contains(want), "{cmd}: {e}");
    }
    // A lagging replica is refused without FORCE.
    root_exec(r2, "STOP SLAVE SQL_THREAD").await;
    root_exec(p, "CREATE TABLE app.lagging (id INT)").await;
    wait_until(Duration::from_secs(5), "replica2 not running", || async {
        let s = common::status(&proxy).await;
        common::server(&s, "replica2")["replication"] == "stopped"
    })
    .await;
    let e = admin(&proxy, "PROMOTE replica2")
        .await
        .expect_err("lagging");
    assert!(
        e.contains("max_promotion_lag") && e.contains("FORCE"),
        "{e}"
    );
    // FORCE skips the lag check, but the candidate cannot catch up (its SQL
    // thread is stopped): the switchover rolls back and says so; the old
    // primary takes writes again.
    let e = admin(&proxy, "PROMOTE replica2 FORCE")
        .await
        .expect_err("cannot catch up");
    assert!(
        e.contains("candidate catch-up") && e.contains("writable again"),
        "{e}"
    );
    let mut c = proxy.app_conn().await;
    c.query_drop("INSERT INTO app.lagging VALUES (0)")
        .await
        .expect("old primary writable after rollback");
    drop(c);
    root_exec(r2, "START SLAVE SQL_THREAD").await;
    // A down server is refused.
    rwproxy_sandbox::kill_server(&sb, 2).expect("kill");
    wait_until(Duration::from_secs(5), "replica2 down", || async {
        let s = common::status(&proxy).await;
        common::server(&s, "replica2")["up"] == false
    })
    .await;
    let e = admin(&proxy, "PROMOTE replica2").await.expect_err("down");
    assert!(e.contains("is down"), "{e}");
    // Nothing changed: the primary is still the primary and writable.
    let s = common::status(&proxy).await;
    assert_eq!(s["primary"], "primary", "{s}");
    let mut c = proxy.app_conn().await;
    c.query_drop("INSERT INTO app.lagging VALUES (1)")
        .await
        .expect("write still works");
    // Two promotions at once: the second is refused while the first runs.
    let (a, b) = tokio::join!(
        admin(&proxy, "PROMOTE replica1"),
        admin(&proxy, "PROMOTE replica1")
    );
    let refused = [&a, &b]
        .iter()
        .filter(|r| {
            r.as_ref().is_err_and(|e| {
                e.contains("another promotion is running") || e.contains("already the primary")
            })
        })
        .count();
    assert!(
        a.is_ok() || b.is_ok(),
        "one promotion should succeed: {a:?} {b:?}"
    );
    assert_eq!(refused, 1, "{a:?} {b:?}");
}

async fn failover_run(semi_sync: bool) -> (usize, Duration, Duration, u64) {
    let dir = sandbox::temp_dir();
    let ports = sandbox::free_ports(3);
    let sb = rwproxy_sandbox::up(&rwproxy_sandbox::UpOptions {
        dir: dir.clone(),
        ports: ports.clone(),
        proxy_port: sandbox::free_ports(1)[0],
        semi_sync,
        owner_pid: Some(std::process::id()),
    })
    .expect("sandbox");
    struct Down(std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = rwproxy_sandbox::down(&self.0);
        }
    }
    let _down = Down(dir);
    root_exec(ports[0], "CREATE TABLE app.ack (id BIGINT PRIMARY KEY)").await;
    sandbox::wait_replicas_caught_up(&sb).await;
    let mut cfg = config(&sb);
    if let Some(f) = cfg.failover.as_mut() {
        f.auto_failover = true;
        f.failover_after = 2;
        f.auto_rejoin = true;
    }
    let proxy = start_proxy(cfg).await;
    let load = start_load(&proxy, 16, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    rwproxy_sandbox::kill_server(&sb, 0).expect("kill primary");
    let detected = wait_until(Duration::from_secs(10), "primary marked down", || async {
        common::status(&proxy).await["servers"][0]["up"] == false
    })
    .await;
    let acked_at_kill = load.acked.lock().expect("lock").len();
    wait_until(Duration::from_secs(20), "a new primary", || async {
        let s = common::status(&proxy).await;
        s["primary"].is_string() && s["primary"] != "primary"
    })
    .await;
    // Writes resumed: acks grow again.
    wait_until(Duration::from_secs(20), "writes resumed", || async {
        load.acked.lock().expect("lock").len() > acked_at_kill + 50
    })
    .await;
    let resumed = killed.elapsed();
    let load = load.finish().await;
    let acked = load.acked.lock().expect("lock").clone();
    let s = common::status(&proxy).await;
    let new_primary = s["primary"].as_str().expect("primary").to_string();
    let idx = sb
        .servers
        .iter()
        .position(|x| x.name == new_primary)
        .expect("known");
    let missing = wait_has_all(sb.servers[idx].port, &acked).await;

    // Fencing: the old primary comes back and is never written to: it is
    // made read_only at once, then rejoins as a replica of the new primary
    // (or, if it has transactions the new primary lacks — possible with
    // asynchronous replication — is kept out with a clear state).
    rwproxy_sandbox::start_server(&sb, 0).expect("restart old primary");
    let new_port = sb.servers[idx].port;
    wait_until(Duration::from_secs(30), "old primary fenced", || async {
        let Ok(mut c) = mysql_async::Conn::new(root_opts(ports[0])).await else {
            return false;
        };
        let ro: Option<i64> = c.query_first("SELECT @@read_only").await.ok().flatten();
        drop(c);
        if ro != Some(1) {
            return false;
        }
        let rejoined = slave_master_port(ports[0])
            .await
            .is_some_and(|(mp, io, sql)| mp == new_port && io == "Yes" && sql == "Yes");
        let s = common::status(&proxy).await;
        let kept_out = common::server(&s, "primary")["fenced"].is_string();
        if semi_sync {
            rejoined
        } else {
            rejoined || kept_out
        }
    })
    .await;
    let s = common::status(&proxy).await;
    println!(
        "old primary after return: {}",
        common::server(&s, "primary")
    );
    // Writes through the proxy still go to the new primary.
    let mut c = proxy.app_conn().await;
    c.exec_drop("INSERT INTO app.ack (id) VALUES (?)", (999_999_999u64,))
        .await
        .expect("write after fencing");
    (
        missing,
        detected,
        resumed,
        load.write_errors.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_with_semi_sync_loses_nothing_and_fences_old_primary() {
    let (missing, detected, resumed, errors) = failover_run(true).await;
    println!(
        "failover (semi-sync): detected {:.0} ms after kill -9, writes resumed after {:.0} ms, {errors} write errors during the outage, {missing} acknowledged writes missing",
        detected.as_secs_f64() * 1000.0,
        resumed.as_secs_f64() * 1000.0
    );
    assert_eq!(
        missing, 0,
        "semi-synchronous replication must not lose acknowledged writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_async_measures_loss() {
    let (missing, detected, resumed, errors) = failover_run(false).await;
    println!(
        "failover (async): detected {:.0} ms after kill -9, writes resumed after {:.0} ms, {errors} write errors during the outage, {missing} acknowledged writes missing",
        detected.as_secs_f64() * 1000.0,
        resumed.as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_follow_each_other() {
    let sb = sandbox::fresh(2);
    let (p, r1) = (sb.servers[0].port, sb.servers[1].port);
    root_exec(p, "CREATE TABLE app.ack (id BIGINT PRIMARY KEY)").await;
    sandbox::wait_replicas_caught_up(&sb).await;
    let a = start_proxy(config(&sb)).await;
    let b = start_proxy(config(&sb)).await;
    admin(&a, "PROMOTE replica1").await.expect("promote on A");
    // B follows within 2 monitor intervals (250 ms each) plus slack.
    let followed = wait_until(
        Duration::from_secs(3),
        "B sees replica1 as primary",
        || async { common::status(&b).await["primary"] == "replica1" },
    )
    .await;
    println!(
        "instance B followed the promotion after {:.0} ms",
        followed.as_secs_f64() * 1000.0
    );
    let before = common::sandbox::global_status(r1, "Com_insert").await;
    let mut c = b.app_conn().await;
    c.exec_drop("INSERT INTO app.ack (id) VALUES (?)", (1u64,))
        .await
        .expect("write via B");
    let after = common::sandbox::global_status(r1, "Com_insert").await;
    assert_eq!(after - before, 1, "B's write must reach the new primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_failover_on_command() {
    let sb = sandbox::fresh(2);
    let p = sb.servers[0].port;
    root_exec(p, "CREATE TABLE app.ack (id BIGINT PRIMARY KEY)").await;
    sandbox::wait_replicas_caught_up(&sb).await;
    let proxy = start_proxy(config(&sb)).await; // auto_failover = false
    rwproxy_sandbox::kill_server(&sb, 0).expect("kill primary");
    wait_until(Duration::from_secs(5), "primary down", || async {
        common::status(&proxy).await["servers"][0]["up"] == false
    })
    .await;
    let report = admin(&proxy, "FAILOVER").await.expect("FAILOVER");
    for row in &report {
        println!("  {:<60} {} ms", row[0], row[1]);
    }
    let s = common::status(&proxy).await;
    assert!(
        s["primary"] == "replica1" || s["primary"] == "replica2",
        "{s}"
    );
    let mut c = proxy.app_conn().await;
    c.exec_drop("INSERT INTO app.ack (id) VALUES (?)", (7u64,))
        .await
        .expect("write after FAILOVER");
    // A second FAILOVER now refuses: the (new) primary is up.
    let e = admin(&proxy, "FAILOVER").await.expect_err("primary is up");
    assert!(e.contains("primary is up"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_exactly_one_fails_over() {
    let sb = sandbox::fresh(2);
    let p = sb.servers[0].port;
    root_exec(p, "CREATE TABLE app.ack (id BIGINT PRIMARY KEY)").await;
    sandbox::wait_replicas_caught_up(&sb).await;
    let mut cfg = config(&sb);
    if let Some(f) = cfg.failover.as_mut() {
        f.auto_failover = true;
        f.failover_after = 2;
    }
    // Instance A in this process; instance B a separate rwproxy process.
    let a = start_proxy(cfg.clone()).await;
    let ports = sandbox::free_ports(3);
    let mut b_cfg = cfg.clone();
    b_cfg.listen = format!("127.0.0.1:{}", ports[0]);
    b_cfg.http_listen = format!("127.0.0.1:{}", ports[1]);
    if let Some(adm) = b_cfg.admin.as_mut() {
        adm.listen = format!("127.0.0.1:{}", ports[2]);
    }
    let path = sb.dir.join("instance-b.toml");
    std::fs::write(&path, toml::to_string(&b_cfg).expect("toml")).expect("write");
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _b = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_rwproxy"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start instance B"),
    );
    let b_metrics = format!("127.0.0.1:{}", ports[1]);
    let scrape_b = || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(&b_metrics).await else {
            return None;
        };
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok()?;
        let failovers = buf
            .lines()
            .find(|l| l.starts_with("rwproxy_failovers_total "))?
            .rsplit(' ')
            .next()?
            .parse::<u64>()
            .ok()?;
        let primary_up = buf.contains("rwproxy_server_is_primary{server=\"primary\"} 1");
        Some((failovers, primary_up))
    };
    wait_until(
        Duration::from_secs(20),
        "instance B up and seeing the primary",
        || async { scrape_b().await.is_some_and(|(_, up)| up) },
    )
    .await;

    rwproxy_sandbox::kill_server(&sb, 0).expect("kill primary");
    wait_until(Duration::from_secs(20), "A has a new primary", || async {
        let s = common::status(&a).await;
        s["primary"].is_string() && s["primary"] != "primary"
    })
    .await;
    // B follows the same new primary.
    let new = common::status(&a).await["primary"]
        .as_str()
        .expect("name")
        .to_string();
    wait_until(Duration::from_secs(5), "B follows", || async {
        let Some((_, _)) = scrape_b().await else {
            return false;
        };
        let (_, body) = {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(mut s) = tokio::net::TcpStream::connect(&b_metrics).await else {
                return false;
            };
            if s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.is_err() {
                return false;
            }
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf).await;
            ((), buf)
        };
        body.contains(&format!("rwproxy_server_is_primary{{server=\"{new}\"}} 1"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, a_metrics) = common::http_get(&a, "/metrics").await;
    let a_failovers: u64 = a_metrics
        .lines()
        .find(|l| l.starts_with("rwproxy_failovers_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("A failovers");
    let (b_failovers, _) = scrape_b().await.expect("B metrics");
    println!(
        "automatic failovers: instance A {a_failovers}, instance B {b_failovers}; new primary {new}"
    );
    assert_eq!(
        a_failovers + b_failovers,
        1,
        "exactly one instance must fail over"
    );
}

/// The race behind `two_processes_exactly_one_fails_over`, made
/// deterministic with two failover engines in this process: instance B
/// decided to fail over on a view taken before instance A's failover, and
/// gets the lock only after A released it. B must follow A's primary, not
/// fail over again. The new primary has taken a write since, so the other
/// replica, which applied it, is now *ahead* of the new primary's
/// promotion point: a B that re-ran the candidate choice would promote
/// that replica (split brain) and repoint A's primary under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_decided_on_a_stale_view_follows_the_one_already_done() {
    use arc_swap::ArcSwap;
    use rwproxy::failover::{Failover, FailoverError};
    use rwproxy::topology::{Snapshot, Topology};

    let sb = sandbox::fresh(2);
    root_exec(
        sb.servers[0].port,
        "CREATE TABLE app.ack (id BIGINT PRIMARY KEY)",
    )
    .await;
    sandbox::wait_replicas_caught_up(&sb).await;
    let cfg = config(&sb);
    // What each instance's monitor saw: the primary failed its checks, no
    // primary. No monitor runs, so B's view stays stale.
    let dead_primary_view = || {
        let mut snap = Snapshot::from_config(&cfg);
        snap.servers[0].up = false;
        snap.servers[0].failures = 3;
        snap.primary = None;
        Arc::new(Topology::new(snap))
    };
    let (ta, tb) = (dead_primary_view(), dead_primary_view());
    let a = Failover::new(Arc::new(ArcSwap::from_pointee(cfg.clone())), ta);
    let b = Failover::new(Arc::new(ArcSwap::from_pointee(cfg.clone())), tb.clone());
    rwproxy_sandbox::kill_server(&sb, 0).expect("kill primary");

    let report = a.failover().await.expect("A fails over");
    let new = report.new_primary.clone();
    let port_of = |name: &str| {
        sb.servers
            .iter()
            .find(|s| s.name == name)
            .expect("known")
            .port
    };
    let new_port = port_of(&new);
    let other_port = sb.servers[1..]
        .iter()
        .find(|s| s.name != new)
        .expect("other replica")
        .port;
    root_exec(new_port, "INSERT INTO app.ack (id) VALUES (1)").await;
    wait_until(Duration::from_secs(10), "other replica applied", || async {
        ids_on(other_port).await.contains(&1)
    })
    .await;

    let e = b.failover().await.expect_err("B must not fail over again");
    assert!(
        matches!(&e, FailoverError::AlreadyPromoted(n) if *n == new),
        "{e}"
    );
    assert_eq!(a.failovers.load(Ordering::Relaxed), 1);
    assert_eq!(
        b.failovers.load(Ordering::Relaxed),
        0,
        "B counted a failover"
    );
    // B follows A's primary ...
    assert_eq!(
        tb.load().primary_view().map(|p| p.name.to_string()),
        Some(new.clone())
    );
    // ... and the servers are as A left them.
    let mut c = mysql_async::Conn::new(root_opts(new_port))
        .await
        .expect("connect");
    let ro: Option<i64> = c.query_first("SELECT @@read_only").await.expect("ro");
    assert_eq!(ro, Some(0), "{new} must stay writable");
    assert!(
        slave_master_port(new_port).await.is_none(),
        "{new} must not replicate"
    );
    let (mp, io, sql) = slave_master_port(other_port)
        .await
        .expect("other replica replicating");
    assert_eq!((mp, io.as_str(), sql.as_str()), (new_port, "Yes", "Yes"));
    c.exec_drop("INSERT INTO app.ack (id) VALUES (?)", (2u64,))
        .await
        .expect("write on the new primary");
    wait_until(Duration::from_secs(10), "other replica follows", || async {
        ids_on(other_port).await.contains(&2)
    })
    .await;
}
