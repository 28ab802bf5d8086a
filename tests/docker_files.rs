//! The container files are kept correct by inspection (no Docker engine
//! here); this test checks what can be checked without one: the compose
//! file parses (with Debian's `docker-compose`, when installed), every file
//! it mounts exists, and the proxy config inside parses.

use std::path::Path;
use std::process::Command;

#[test]
fn compose_references_existing_files_and_config_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("docker/compose.yml")).expect("compose.yml");
    for mounted in [
        "./initdb",
        "./replica-init",
        "./rwproxy.toml",
        "./prometheus.yml",
    ] {
        assert!(
            compose.contains(mounted),
            "compose.yml should mount {mounted}"
        );
        assert!(
            root.join("docker").join(mounted).exists(),
            "docker/{mounted} is mounted by compose.yml but missing"
        );
    }
    assert!(root.join("docker/Dockerfile").exists());
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("USER 10001"),
        "runtime image must not run as root"
    );
    rwproxy::config::Config::load(&root.join("docker/rwproxy.toml")).expect("docker/rwproxy.toml");

    // The monitor account of the compose primary has exactly the README's
    // minimal MariaDB grants (the statements of its "-- MariaDB" block plus
    // the heartbeat one), no more: compared statement by statement.
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let initdb = std::fs::read_to_string(root.join("docker/initdb/10-accounts.sql"))
        .expect("10-accounts.sql");
    let statements = |text: &str| -> Vec<String> {
        text.split(';')
            .map(|s| {
                s.lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|s| s.starts_with("GRANT") && s.contains("rwproxy_monitor"))
            .collect()
    };
    let block = |start: &str, end: &str| -> String {
        let from = readme.find(start).expect("README grants block") + start.len();
        let to = from + readme[from..].find(end).expect("README grants block end");
        readme[from..to].to_string()
    };
    let mut want = statements(&block("-- MariaDB\n", "-- MySQL"));
    want.extend(statements(&block(
        "-- both, with heartbeat = true\n",
        "```",
    )));
    let mut got = statements(&initdb);
    want.sort();
    got.sort();
    assert!(want.len() >= 3, "README grants not found: {want:?}");
    assert_eq!(
        got, want,
        "docker/initdb monitor grants vs README (MariaDB)"
    );

    match Command::new("docker-compose")
        .arg("-f")
        .arg(root.join("docker/compose.yml"))
        .arg("config")
        .arg("--quiet")
        .status()
    {
        Ok(status) => assert!(
            status.success(),
            "docker-compose config rejected compose.yml"
        ),
        Err(_) => eprintln!("docker-compose not installed: skipped the schema check"),
    }
}
