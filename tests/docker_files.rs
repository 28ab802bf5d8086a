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
