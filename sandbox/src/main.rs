//! `rwproxy-sandbox up|down|status`: a local MariaDB (or MySQL) primary +
//! replicas with real GTID replication, for the demo, the tests and the
//! benchmarks. `rwproxy sandbox …` runs this program (it sits next to the
//! `rwproxy` binary once built with `cargo build --release --workspace`).

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "rwproxy sandbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: rwproxy_sandbox::SandboxCommand,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match rwproxy_sandbox::run_cli(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
