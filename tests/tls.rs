//! TLS to clients (issue: "Security and robustness", item 1, client side):
//! a client that asks for TLS gets it (certificate generated at test time
//! with rcgen), `require_tls` refuses plaintext logins with ERR 3159.

mod common;

use std::process::Command;

use common::{sandbox, start_proxy};

fn write_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("cert");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

/// Runs the `mariadb` client against `port` (off the async runtime).
async fn cli(port: u16, extra: &'static [&'static str], sql: &'static str) -> (bool, String) {
    tokio::task::spawn_blocking(move || cli_blocking(port, extra, sql))
        .await
        .expect("join")
}

fn cli_blocking(port: u16, extra: &[&str], sql: &str) -> (bool, String) {
    let out = Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{port}"), "-uapp", "-papp", "app"])
        .args(extra)
        .args(["-e", sql])
        .output()
        .expect("run mariadb client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_upgrade_and_plaintext_can_be_refused() {
    let sb = sandbox::shared();
    let (cert, key) = write_cert(&sandbox::temp_dir());
    let mut cfg = common::sandbox_config(sb);
    cfg.tls_cert = Some(cert.clone());
    cfg.tls_key = Some(key.clone());
    let proxy = start_proxy(cfg.clone()).await;

    let (ok, out) = cli(
        proxy.addr.port(),
        &["--ssl", "--ssl-verify-server-cert=0"],
        "\\s",
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("Cipher in use"),
        "TLS should be in use:\n{out}"
    );
    println!(
        "{}",
        out.lines().find(|l| l.contains("SSL")).unwrap_or_default()
    );

    // Plaintext still works unless TLS is required.
    let (ok, out) = cli(proxy.addr.port(), &["--skip-ssl"], "SELECT 'plain ok'").await;
    assert!(ok && out.contains("plain ok"), "{out}");

    cfg.require_tls = true;
    let strict = start_proxy(cfg).await;
    let (ok, out) = cli(strict.addr.port(), &["--skip-ssl"], "SELECT 1").await;
    assert!(!ok, "plaintext login must be refused: {out}");
    assert!(out.contains("3159"), "{out}");
    let (ok, out) = cli(
        strict.addr.port(),
        &["--ssl", "--ssl-verify-server-cert=0"],
        "SELECT 'tls ok'",
    )
    .await;
    assert!(ok && out.contains("tls ok"), "{out}");
}
