//! Behaviour an application can observe that must be the server's own,
//! checked against a direct connection (issue "Transparency").

mod common;

use std::time::Duration;

use common::sandbox;

/// Each result set of a multi-statement query reaches the client when the
/// server finishes it, not when the whole batch is done: PyMySQL's
/// `execute` returns with the first result of `SELECT SLEEP(1); SELECT
/// SLEEP(2)` after ~1 s, as directly. (mysql_async is no judge here: it
/// waits for the whole response even directly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_results_arrive_one_by_one() {
    let sb = sandbox::shared();
    let proxy = common::start_proxy(common::sandbox_config(sb)).await;
    let script = r#"
import sys, time, pymysql
from pymysql.constants import CLIENT
for who, port in (("direct", int(sys.argv[1])), ("proxy", int(sys.argv[2]))):
    c = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app",
                        database="app", client_flag=CLIENT.MULTI_STATEMENTS)
    cur = c.cursor()
    t = time.monotonic()
    cur.execute("SELECT SLEEP(1) AS a; SELECT SLEEP(2) AS b")
    first = time.monotonic() - t
    assert cur.fetchall() == ((0,),)
    cur.nextset()
    assert cur.fetchall() == ((0,),)
    print(who, round(first, 3), round(time.monotonic() - t, 3))
"#;
    let out = tokio::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(sb.servers[0].port.to_string())
        .arg(proxy.addr.port().to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("python finished")
        .expect("run python3 (python3-pymysql from scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for who in ["direct", "proxy"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(who))
            .unwrap_or_else(|| panic!("no {who} line: {text}"));
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("seconds"))
            .collect();
        assert!(
            f[0] < 2.5,
            "{who}: first result after {} s (held back until the batch ended)",
            f[0]
        );
        assert!(f[1] >= 3.0, "{who}: {line}");
    }
}
