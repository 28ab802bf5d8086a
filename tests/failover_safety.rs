//! Failover safety under injected faults (issue 17): a primary is dead only
//! when rwproxy cannot reach it *and* no replica receives from it; no
//! acknowledgement comes from a demoted server; instances never route
//! writes to two primaries. Every test owns its sandbox and writers that
//! record each acknowledged id; the checker looks for every one of them on
//! the final primary and on each replica that follows it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::faults::{self, Outcome, Writers};
use common::flavor::{self, Topology};
use common::relay::{Fault, FaultRelay};
use common::sandbox;
use common::{Proxy, admin, http_get, root_exec, start_proxy, wait_until};
use rwproxy::config::Config;

/// Short timings so the file runs in a few minutes: a 200 ms monitor, a
/// primary down after 2 failed checks, failover after 3, and replicas'
/// evidence valid for 2 s (the sandbox sets a 0.5 s heartbeat).
const FAILURE_TIMEOUT_MS: u64 = 2000;

fn config(sb: &dyn Topology, primary_via: Option<SocketAddr>, read_timeout_ms: u64) -> Config {
    let mut c = common::with_admin(sb.proxy_config());
    c.monitor_interval_ms = 200;
    c.down_after = 2;
    c.connect_timeout_ms = 500;
    c.backend_read_timeout_ms = read_timeout_ms;
    if let Some(f) = c.failover.as_mut() {
        f.auto_failover = true;
        f.failover_after = 3;
        f.primary_failure_timeout_ms = FAILURE_TIMEOUT_MS;
        f.auto_rejoin = true;
    }
    if let Some(addr) = primary_via {
        c.servers[0].host = addr.ip().to_string();
        c.servers[0].port = addr.port();
    }
    c
}

async fn prepare(sb: &dyn Topology) {
    root_exec(sb.port(0), "CREATE TABLE app.ack (id BIGINT PRIMARY KEY)").await;
    flavor::wait_caught_up(sb).await;
}

async fn metric(proxy: &Proxy, name: &str) -> f64 {
    let (_, body) = http_get(proxy, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not in /metrics"))
}

async fn published_primary(proxy: &Proxy) -> Option<String> {
    common::status(proxy).await["primary"]
        .as_str()
        .map(str::to_string)
}

/// What a partition between rwproxy and the primary alone did.
struct PartitionRun {
    /// Servers writable and not replicating at the end of the cut.
    writable_during: Vec<String>,
    failovers: f64,
    outcomes: Vec<Outcome>,
    survival: faults::Survival,
    /// Longest write through rwproxy that was sent during the cut.
    longest_during: Duration,
    show_state: String,
    health: (u16, String),
    unreachable_metric: f64,
}

/// Writers through rwproxy, then `fault` on the relay between rwproxy and
/// the primary for `FAILURE_TIMEOUT_MS` + 3 s (well past when the old rule
/// promoted), then heal. The replicas keep replicating directly.
async fn partition(sb: &dyn Topology, fault: Fault, verify: bool) -> PartitionRun {
    prepare(sb).await;
    let relay = FaultRelay::start(format!("127.0.0.1:{}", sb.port(0)).parse().expect("addr")).await;
    let mut cfg = config(sb, Some(relay.addr), 1500);
    if let Some(f) = cfg.failover.as_mut() {
        f.verify_primary_failure = verify;
    }
    let proxy = start_proxy(cfg).await;
    let writers = Writers::start(proxy.app_opts(), 4, 0);
    wait_until(Duration::from_secs(10), "writes acknowledged", || async {
        writers.acked_count() > 50
    })
    .await;
    let cut = Instant::now();
    relay.set(fault);
    tokio::time::sleep(Duration::from_millis(FAILURE_TIMEOUT_MS + 3000)).await;
    let writable_during = faults::writable_primaries(sb).await;
    let failovers = metric(&proxy, "rwproxy_failovers_total").await;
    let unreachable_metric = metric(&proxy, "rwproxy_primary_unreachable").await;
    let health = http_get(&proxy, "/health").await;
    let rows = admin(&proxy, "SHOW SERVERS").await.expect("SHOW SERVERS");
    let show_state = rows
        .iter()
        .find(|r| r[0] == "primary")
        .map(|r| format!("{} | receiving {}", r[3], r[13]))
        .unwrap_or_default();
    let healed = Instant::now();
    relay.set(Fault::Pass);
    // Writes resume once the link is back.
    if verify {
        let before = writers.acked_count();
        wait_until(
            Duration::from_secs(10),
            "writes resume after heal",
            || async { writers.acked_count() > before + 20 },
        )
        .await;
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let outcomes = writers.finish().await;
    let longest_during = outcomes
        .iter()
        .filter(|o| o.sent >= cut && o.sent < healed)
        .map(|o| o.took)
        .max()
        .unwrap_or_default();
    let acked = faults::acked(&outcomes);
    let primary = published_primary(&proxy)
        .await
        .unwrap_or_else(|| "primary".into());
    let survival = faults::survival(sb, &primary, &acked).await;
    PartitionRun {
        writable_during,
        failovers,
        outcomes,
        survival,
        longest_during,
        show_state,
        health,
        unreachable_metric,
    }
}

fn assert_partition_safe(run: &PartitionRun, what: &str) {
    let errors = run.outcomes.iter().filter(|o| o.error.is_some()).count();
    println!(
        "{what}: {} acked, {errors} errors, longest write during the cut {:?}, SHOW SERVERS: {}, /health: {:?}",
        faults::acked(&run.outcomes).len(),
        run.longest_during,
        run.show_state,
        run.health
    );
    assert_eq!(
        run.writable_during,
        vec!["primary".to_string()],
        "{what}: a replica was promoted while the replicas still received from the primary"
    );
    assert_eq!(run.failovers, 0.0, "{what}: rwproxy counted a failover");
    assert!(
        run.survival.all_there(),
        "{what}: acknowledged writes lost: {:?}",
        run.survival
    );
    assert!(
        run.show_state.contains("unreachable from rwproxy"),
        "{what}: SHOW SERVERS state: {}",
        run.show_state
    );
    assert_eq!(run.health.0, 503, "{what}: /health {:?}", run.health);
    assert!(
        run.health.1.contains("unreachable from rwproxy"),
        "{what}: /health {:?}",
        run.health
    );
    assert_eq!(run.unreachable_metric, 1.0, "{what}");
    // A statement sent into the cut is answered within
    // backend_read_timeout (1.5 s) plus scheduling, not when TCP gives up.
    assert!(
        run.longest_during < Duration::from_millis(3500),
        "{what}: a write hung {:?} during the cut",
        run.longest_during
    );
    // And the error says why.
    let said = run
        .outcomes
        .iter()
        .filter_map(|o| o.error.as_deref())
        .any(|e| e.contains("unreachable from rwproxy") || e.contains("backend_read_timeout"));
    assert!(said, "{what}: no write error named the cause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_only_partition_blackhole_promotes_nothing_and_loses_nothing() {
    let run = partition(&sandbox::fresh(2), Fault::Blackhole, true).await;
    assert_partition_safe(&run, "blackhole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_only_partition_refused_promotes_nothing_and_loses_nothing() {
    let run = partition(&sandbox::fresh(2), Fault::Refuse, true).await;
    assert_partition_safe(&run, "refuse");
}

/// Mutation check: without the replicas' evidence
/// (`verify_primary_failure = false`, the old rule), the same partition
/// promotes a replica while the old primary is alive — the assertions of
/// the partition tests above would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_without_replica_check_splits_the_brain() {
    let run = partition(&sandbox::fresh(2), Fault::Blackhole, false).await;
    println!(
        "replica check off: writable during the cut {:?}, failovers {}",
        run.writable_during, run.failovers
    );
    assert!(
        run.failovers >= 1.0 && run.writable_during.len() >= 2,
        "without the replica check a partition should have promoted a replica: {:?}",
        run.writable_during
    );
}

/// SIGSTOP the primary for longer than the failure timeout under writers,
/// with `backend_read_timeout` off so that only the promotion's closing of
/// the old primary's connections can stop a late acknowledgement.
/// Returns (outcomes, survival, when the new primary was seen published,
/// when the old primary resumed).
async fn frozen_primary(sb: &dyn Topology) -> (Vec<Outcome>, faults::Survival, Instant, Instant) {
    prepare(sb).await;
    let proxy = start_proxy(config(sb, None, 0)).await;
    let writers = Writers::start(proxy.app_opts(), 4, 0);
    wait_until(Duration::from_secs(10), "writes acknowledged", || async {
        writers.acked_count() > 50
    })
    .await;
    let stopped = Instant::now();
    faults::signal(sb, 0, "STOP");
    let took = wait_until(
        Duration::from_millis(FAILURE_TIMEOUT_MS + 10_000),
        "failover away from the frozen primary",
        || async {
            published_primary(&proxy)
                .await
                .is_some_and(|p| p != "primary")
        },
    )
    .await;
    let published = Instant::now();
    println!("frozen primary: failover published {took:?} after SIGSTOP");
    assert!(
        stopped.elapsed() >= Duration::from_millis(FAILURE_TIMEOUT_MS),
        "failed over before the failure timeout"
    );
    // Keep it frozen well past the failover, then let it run again: the
    // statements it had in flight must not come back as OKs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = Instant::now();
    faults::signal(sb, 0, "CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcomes = writers.finish().await;
    let primary = published_primary(&proxy).await.expect("a primary");
    let survival = faults::survival(sb, &primary, &faults::acked(&outcomes)).await;
    (outcomes, survival, published, resumed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_primary_with_semi_sync_fails_over_and_loses_no_acknowledged_write() {
    let sb = sandbox::fresh_semi_sync(2);
    let (outcomes, survival, _, resumed) = frozen_primary(&sb).await;
    let late: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.error.is_none() && o.sent + o.took >= resumed && o.sent < resumed)
        .collect();
    println!(
        "semi-sync: {} acked, lost {}, acked across the resume {}",
        faults::acked(&outcomes).len(),
        survival.lost(),
        late.len()
    );
    assert!(
        survival.all_there(),
        "acknowledged writes lost: {survival:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_primary_async_counts_loss_and_no_late_acknowledgement() {
    let sb = sandbox::fresh(2);
    let (outcomes, survival, published, _) = frozen_primary(&sb).await;
    // Asynchronous replication may lose what the primary acknowledged
    // before it froze and had not sent yet: counted, reported.
    println!(
        "async: {} acked, lost on the new primary: {}",
        faults::acked(&outcomes).len(),
        survival.lost()
    );
    // But nothing acknowledged after the promotion may be missing: that
    // would be an OK from the demoted server.
    let late_lost: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.error.is_none() && o.sent + o.took >= published)
        .map(|o| o.id)
        .filter(|id| survival.missing_on_primary.contains(id))
        .collect();
    assert!(
        late_lost.is_empty(),
        "acknowledged after the promotion, but missing on the new primary: {late_lost:?}"
    );
}

/// Kills the primary under writers; returns the time from SIGKILL to the
/// first write acknowledged on the new primary.
async fn killed_primary(sb: &dyn Topology, verify: bool) -> Duration {
    prepare(sb).await;
    let mut cfg = config(sb, None, 0);
    if let Some(f) = cfg.failover.as_mut() {
        f.verify_primary_failure = verify;
    }
    let proxy = start_proxy(cfg).await;
    let writers = Writers::start(proxy.app_opts(), 4, 0);
    wait_until(Duration::from_secs(10), "writes acknowledged", || async {
        writers.acked_count() > 50
    })
    .await;
    let killed = Instant::now();
    sb.kill(0);
    // Writes sent from now on cannot have reached the killed server.
    let dead = Instant::now();
    wait_until(
        Duration::from_millis(FAILURE_TIMEOUT_MS + 10_000),
        "failover",
        || async {
            published_primary(&proxy)
                .await
                .is_some_and(|p| p != "primary")
        },
    )
    .await;
    let first_ack = loop {
        let outcomes = writers.outcomes.lock().expect("lock").clone();
        if let Some(o) = outcomes
            .iter()
            .filter(|o| o.error.is_none() && o.sent > dead)
            .min_by_key(|o| o.sent + o.took)
        {
            break (o.sent + o.took) - killed;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no write after failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let outcomes = writers.finish().await;
    let primary = published_primary(&proxy).await.expect("a primary");
    let survival = faults::survival(sb, &primary, &faults::acked(&outcomes)).await;
    println!(
        "SIGKILL (replica check {}): first write on the new primary {first_ack:?} after the kill; lost (async) {}",
        if verify { "on" } else { "off" },
        survival.lost()
    );
    first_ack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_primary_fails_over_within_the_failure_timeout_plus_two_seconds() {
    let with_check = killed_primary(&sandbox::fresh(2), true).await;
    // For the record: the old rule (rwproxy's link alone), same set-up.
    let without = killed_primary(&sandbox::fresh(2), false).await;
    println!(
        "SIGKILL → first write on the new primary: {with_check:?} with the replica check, {without:?} without"
    );
    let bound = Duration::from_millis(FAILURE_TIMEOUT_MS + 2000);
    assert!(
        with_check < bound,
        "failover took {with_check:?}, more than {bound:?}"
    );
}

/// Two rwproxy instances; only A is cut off from the primary. A promotes
/// nothing (the replicas still receive from the primary), B keeps writing
/// to it, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_partitioned_never_two_primaries() {
    let sb = sandbox::fresh(2);
    prepare(&sb).await;
    let relay = FaultRelay::start(format!("127.0.0.1:{}", sb.port(0)).parse().expect("addr")).await;
    let a = start_proxy(config(&sb, Some(relay.addr), 1500)).await;
    let b = start_proxy(config(&sb, None, 1500)).await;
    let wa = Writers::start(a.app_opts(), 2, 0);
    let wb = Writers::start(b.app_opts(), 2, 100_000_000);
    wait_until(Duration::from_secs(10), "writes through both", || async {
        wa.acked_count() > 20 && wb.acked_count() > 20
    })
    .await;
    relay.set(Fault::Blackhole);
    let b_before = wb.acked_count();
    let mut seen_two = Vec::new();
    let until = Instant::now() + Duration::from_millis(FAILURE_TIMEOUT_MS + 3000);
    while Instant::now() < until {
        let w = faults::writable_primaries(&sb).await;
        if w.len() != 1 {
            seen_two.push(w);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let b_during = wb.acked_count() - b_before;
    let a_failovers = metric(&a, "rwproxy_failovers_total").await;
    let b_failovers = metric(&b, "rwproxy_failovers_total").await;
    relay.set(Fault::Pass);
    let a_before = wa.acked_count();
    wait_until(
        Duration::from_secs(10),
        "A writes again after heal",
        || async { wa.acked_count() > a_before + 10 },
    )
    .await;
    let mut outcomes = wa.finish().await;
    outcomes.extend(wb.finish().await);
    let survival = faults::survival(&sb, "primary", &faults::acked(&outcomes)).await;
    println!(
        "two instances: B acked {b_during} during A's cut; failovers A {a_failovers} B {b_failovers}; lost {}",
        survival.lost()
    );
    assert!(seen_two.is_empty(), "writable servers seen: {seen_two:?}");
    assert_eq!((a_failovers, b_failovers), (0.0, 0.0));
    assert!(b_during > 0, "B stopped writing while only A was cut off");
    assert!(
        survival.all_there(),
        "acknowledged writes lost: {survival:?}"
    );
}

/// Two writable, non-replicating servers (an operator detached a replica
/// and made it writable): rwproxy refuses writes with a clear error and
/// says so in its metrics until the servers agree again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writable_servers_refuse_writes_until_they_agree() {
    let sb = sandbox::fresh(1);
    prepare(&sb).await;
    let proxy = start_proxy(config(&sb, None, 0)).await;
    use mysql_async::prelude::Queryable;
    let mut c = proxy.app_conn().await;
    let r1 = sb.servers[1].port;
    root_exec(r1, "STOP SLAVE").await;
    root_exec(r1, "RESET SLAVE ALL").await;
    root_exec(r1, "SET GLOBAL read_only = 0").await;
    wait_until(Duration::from_secs(5), "conflict seen", || async {
        metric(&proxy, "rwproxy_primary_conflict").await == 1.0
    })
    .await;
    let started = Instant::now();
    let err = c
        .query_drop("INSERT INTO app.ack (id) VALUES (1)")
        .await
        .expect_err("a write must be refused while two servers are writable");
    println!("refused in {:?}: {err}", started.elapsed());
    assert!(err.to_string().contains("two primaries"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "not prompt");
    let (code, body) = http_get(&proxy, "/health").await;
    assert_eq!(code, 503, "{body}");
    // Neither server got the write.
    for s in &sb.servers {
        let n: Option<u64> = mysql_async::Conn::new(sandbox::root_opts(s.port))
            .await
            .expect("connect")
            .query_first("SELECT COUNT(*) FROM app.ack WHERE id = 1")
            .await
            .expect("count");
        assert_eq!(n, Some(0), "{} has the refused write", s.name);
    }
    root_exec(r1, "SET GLOBAL read_only = 1").await;
    wait_until(Duration::from_secs(5), "servers agree", || async {
        metric(&proxy, "rwproxy_primary_conflict").await == 0.0
    })
    .await;
    c.query_drop("INSERT INTO app.ack (id) VALUES (2)")
        .await
        .expect("writes resume");
}

/// Instances agree through state held on the servers: the leader lock
/// (`GET_LOCK('rwproxy_leader')` on a majority of servers, held by one
/// connection per server). Exactly one of two instances leads; when it
/// stops, its locks die with its connections and the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_leader_and_the_other_takes_over() {
    let sb = sandbox::fresh(2);
    let a = start_proxy(config(&sb, None, 0)).await;
    let b = start_proxy(config(&sb, None, 0)).await;
    let leads = |p: &Proxy| {
        let http = p.http;
        async move {
            let (_, body) = common::http_get_addr(http, "/status").await;
            serde_json::from_str::<serde_json::Value>(&body).expect("json")["leader"] == true
        }
    };
    wait_until(Duration::from_secs(5), "one leader", || async {
        leads(&a).await != leads(&b).await
    })
    .await;
    // Stable: still exactly one a few rounds later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (la, lb) = (leads(&a).await, leads(&b).await);
    assert!(la ^ lb, "leaders: a {la}, b {lb}");
    let (leader, other) = if la { (a, b) } else { (b, a) };
    drop(leader);
    let took = wait_until(
        Duration::from_secs(5),
        "the other instance leads",
        || async { leads(&other).await },
    )
    .await;
    println!("leadership moved {took:?} after the leader stopped");
}

// The same fault injection on MySQL 9.7 (issue 15, item 4): the bodies
// above, run against the MySQL sandbox (`sandbox up --flavor mysql`), each
// test on its own topology. Judged as on MariaDB by the servers: rows on
// the final primary and on each replica following it, which servers are
// writable and not replicating (`SHOW REPLICA STATUS`).

async fn mysql_sandbox() -> flavor::OwnedMysql {
    tokio::task::spawn_blocking(|| flavor::fresh_mysql(2))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_killed_primary_fails_over_within_the_failure_timeout_plus_two_seconds() {
    let sb = mysql_sandbox().await;
    let took = killed_primary(&sb, true).await;
    let bound = Duration::from_millis(FAILURE_TIMEOUT_MS + 2000);
    println!("MySQL: SIGKILL → first write on the new primary: {took:?}");
    assert!(took < bound, "failover took {took:?}, more than {bound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_proxy_only_partition_blackhole_promotes_nothing_and_loses_nothing() {
    let sb = mysql_sandbox().await;
    let run = partition(&sb, Fault::Blackhole, true).await;
    assert_partition_safe(&run, "MySQL blackhole");
}

/// MySQL's own semi-sync plugins (`rpl_semi_sync_source`, `AFTER_SYNC`,
/// no timeout in practice): the frozen primary acknowledged nothing that
/// no replica had, so nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_frozen_primary_with_semi_sync_fails_over_and_loses_no_acknowledged_write() {
    let sb = flavor::fresh_mysql_semi_sync(2).await;
    let (outcomes, survival, _, _) = frozen_primary(&sb).await;
    println!(
        "MySQL semi-sync: {} acked, lost {}, replicas following the new primary {:?}",
        faults::acked(&outcomes).len(),
        survival.lost(),
        survival
            .replicas
            .iter()
            .map(|(n, m)| (n.as_str(), m.len()))
            .collect::<Vec<_>>()
    );
    assert!(
        survival.all_there(),
        "acknowledged writes lost: {survival:?}"
    );
    assert!(
        !survival.replicas.is_empty(),
        "no replica follows the new primary {}",
        survival.primary
    );
    // Semi-sync follows the primary role: on the new primary the source
    // side is on, on every server following it off (else its applier
    // waits for acknowledgements nobody sends — which `all_there` above
    // also catches on a rejoined old primary). (The old primary itself may
    // stay out: its commits frozen mid-wait for an acknowledgement hold
    // `SET GLOBAL super_read_only = 1` back, so rwproxy keeps it out of
    // routing and retries the fence.)
    let following = survival.replicas.iter().map(|(n, _)| n.as_str());
    for name in std::iter::once(survival.primary.as_str()).chain(following) {
        let i = (0..sb.len())
            .find(|&i| sb.name(i) == name)
            .expect("a server");
        let on = flavor::scalar(sb.port(i), "SELECT @@GLOBAL.rpl_semi_sync_source_enabled").await;
        let want = if name == survival.primary { "1" } else { "0" };
        assert_eq!(
            on.as_deref(),
            Some(want),
            "rpl_semi_sync_source_enabled on {name}"
        );
    }
}
