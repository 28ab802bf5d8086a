//! Logs (issue: "Observability and operations", item 4): the binary's
//! `--log-format json` writes one JSON object per line, with a session
//! close line and slow statements logged with their digest, both naming
//! the session (conn_id, peer, user); no
//! password ever appears in the log.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::sandbox;
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_sessions_and_slow_statements() {
    let sb = sandbox::shared();
    let mut cfg = common::sandbox_config(sb);
    let ports = sandbox::free_ports(2);
    cfg.listen = format!("127.0.0.1:{}", ports[0]);
    cfg.http_listen = format!("127.0.0.1:{}", ports[1]);
    cfg.admin = None;
    cfg.slow_query_threshold_ms = 50;
    let path = sandbox::temp_dir().join("logs.toml");
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rwproxy");
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(ports[0])
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("app"))
        .into();
    let mut conn = None;
    for _ in 0..100 {
        if let Ok(c) = mysql_async::Conn::new(opts.clone()).await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = conn.expect("connect to the spawned rwproxy");
    let _: Option<i64> = c
        .query_first("SELECT SLEEP(0.2) /* slow one */")
        .await
        .expect("slow");
    let _: Option<i64> = c.query_first("SELECT 1").await.expect("fast");
    c.disconnect().await.expect("disconnect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    let text = format!("{out}{err}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log output");
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let msg = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_string();
    // One line per session at info ("session opened" is debug): it names
    // the session (conn_id, peer, user) through its span.
    let closed: Vec<&serde_json::Value> = parsed
        .iter()
        .filter(|v| msg(v) == "session closed")
        .collect();
    assert_eq!(closed.len(), 1, "{text}");
    assert_eq!(closed[0]["span"]["user"].as_str(), Some("app"), "{text}");
    assert!(closed[0]["span"]["conn_id"].is_u64(), "{text}");
    assert!(
        !parsed.iter().any(|v| msg(v) == "session opened"),
        "session opened is a debug line: {text}"
    );
    let slow: Vec<&serde_json::Value> = parsed
        .iter()
        .filter(|v| msg(v) == "slow statement")
        .collect();
    assert_eq!(
        slow.len(),
        1,
        "exactly the slow statement is logged: {text}"
    );
    // Logged from the command loop, where the span is a parent, not entered.
    assert_eq!(slow[0]["span"]["user"].as_str(), Some("app"), "{text}");
    let digest_text = slow[0]["fields"]["text"].as_str().unwrap_or("");
    assert!(
        digest_text.contains("SLEEP(?)"),
        "logged with its digest: {digest_text}"
    );
    assert!(
        slow[0]["fields"]["digest"]
            .as_str()
            .is_some_and(|d| d.len() == 16)
    );
    // Secrets never reach the log.
    for secret in ["\"app\"@", "password", "monitor\"", "*5BCB"] {
        assert!(
            !text.contains(&format!("{secret}=app"))
                && !text.to_lowercase().contains("password=\"app\""),
            "{secret}"
        );
    }
    assert!(
        !text.contains("monitor\",") && !text.contains("\"repl\""),
        "secrets in log:\n{text}"
    );
}

/// Runs the proxy binary with `args` for a moment, its output to pipes,
/// in front of a server that does not answer (so it logs warnings too);
/// returns stdout + stderr.
fn logs_of(args: &[&str]) -> String {
    let ports = sandbox::free_ports(3);
    let path = sandbox::temp_dir().join(format!("color-{}.toml", ports[0]));
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let text = format!(
        "listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\nmonitor_interval_ms = 100\n\
         [monitor]\nuser = \"m\"\npassword = \"m\"\n\
         [[servers]]\nname = \"p\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n",
        ports[0], ports[1], ports[2]
    );
    std::fs::write(&path, text).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .args(args)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rwproxy");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// ANSI colours only on a terminal: output to a pipe has none by default
/// (`--log-color auto`) or with `never`; `always` forces them; JSON logs
/// never have them.
#[test]
fn no_colour_codes_unless_a_terminal_or_asked() {
    let auto = logs_of(&[]);
    assert!(auto.contains("rwproxy listening"), "no log lines: {auto}");
    assert!(
        !auto.contains("\x1b["),
        "colour codes in piped logs:\n{auto}"
    );
    let never = logs_of(&["--log-color", "never"]);
    assert!(!never.contains("\x1b["), "{never}");
    let always = logs_of(&["--log-color", "always"]);
    assert!(always.contains("\x1b["), "--log-color always: {always}");
    let json = logs_of(&["--log-format", "json", "--log-color", "always"]);
    assert!(json.contains("{\""), "{json}");
    assert!(
        !json.contains("\x1b["),
        "colour codes in JSON logs:\n{json}"
    );
}
