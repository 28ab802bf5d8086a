//! The `rwproxy` command: CLI parsing and logging set-up only; the work is
//! in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "rwproxy",
    version,
    about = "Read/write-splitting MySQL/MariaDB proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Log format: human or json.
    #[arg(long, global = true, default_value = "human")]
    log_format: String,
    /// ANSI colours in human logs: auto (only when stdout, where logs go,
    /// is a terminal),
    /// always or never. JSON logs never have colours.
    #[arg(long, global = true, value_enum, default_value_t = LogColor::Auto)]
    log_color: LogColor,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogColor {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Override `listen` from the file.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Validate a configuration file and print what it sets.
    CheckConfig { config: PathBuf },
    /// Manage a local MariaDB (or MySQL) primary + replicas: runs
    /// `rwproxy-sandbox` (a development tool next to this binary, built
    /// with `cargo build --release --workspace`) with the same arguments.
    #[command(disable_help_flag = true)]
    Sandbox {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn init_logging(format: &str, color: LogColor) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stdout; colour codes in a file or a pipe are noise.
    let ansi = match color {
        LogColor::Auto => std::io::stdout().is_terminal(),
        LogColor::Always => true,
        LogColor::Never => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if format == "json" {
        builder.json().with_ansi(false).init();
    } else {
        builder.with_ansi(ansi).init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format, cli.log_color);
    match cli.command {
        Cmd::Run { config, listen } => {
            let config_path = config.clone();
            let mut cfg = rwproxy::config::Config::load(&config)?;
            if let Some(l) = listen {
                cfg.listen = l;
                cfg.validate()?;
            }
            // Accept loop, monitor, admin and HTTP on this thread; client
            // sessions on the session threads `server::run` starts.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listeners = rwproxy::server::Listeners::bind(&cfg)
                    .await
                    .with_context(|| format!("cannot start listening (listen = {})", cfg.listen))?;
                let shutdown = CancellationToken::new();
                let signal_token = shutdown.clone();
                tokio::spawn(async move {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    signal_token.cancel();
                });
                rwproxy::server::run(listeners, cfg, Some(config_path), shutdown).await?;
                Ok::<_, anyhow::Error>(())
            })?;
        }
        Cmd::CheckConfig { config } => {
            let cfg = rwproxy::config::Config::load(&config)?;
            // Reads server_tls_ca and compiles the query rules the way
            // `run` would.
            rwproxy::backend::tls::ServerTls::from_config(&cfg)?;
            rwproxy::router::rules::RuleSet::compile(&cfg.rules)?;
            println!(
                "{}: OK ({} servers, {} users, listen {})",
                config.display(),
                cfg.servers.len(),
                cfg.users.len(),
                cfg.listen
            );
            for w in rwproxy::config::warnings(&cfg) {
                println!("warning: {w}");
            }
            if cfg.auth == rwproxy::config::AuthMode::Servers {
                // Read the accounts the way `run` would and list those that
                // cannot be proxied.
                let rt = tokio::runtime::Runtime::new()?;
                rt.block_on(async {
                    let shared = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(cfg.clone()));
                    let topo = std::sync::Arc::new(rwproxy::topology::Topology::new(
                        rwproxy::topology::Snapshot::from_config(&cfg),
                    ));
                    let accounts = rwproxy::accounts::Accounts::new(shared, topo);
                    match accounts.refresh().await {
                        Ok(n) => {
                            println!("server accounts: {n} read from the primary");
                            for (u, h, p) in accounts.unsupported() {
                                println!("warning: account '{u}'@'{h}' uses '{p}', which rwproxy cannot proxy (logins get ERR 1251)");
                            }
                        }
                        Err(e) => println!("warning: could not read server accounts: {e}"),
                    }
                });
            }
        }
        Cmd::Sandbox { args } => {
            // The sandbox is not part of the proxy (its code and its
            // dependencies stay out of the production binary): hand over
            // to its own program, as `git <tool>` does.
            use std::os::unix::process::CommandExt;
            let exe = std::env::current_exe().context("locating the rwproxy binary")?;
            let tool = exe.with_file_name("rwproxy-sandbox");
            if !tool.exists() {
                anyhow::bail!(
                    "{} not found: the sandbox is a development tool; build it with `cargo build --release --workspace`",
                    tool.display()
                );
            }
            let e = std::process::Command::new(&tool).args(args).exec();
            return Err(e).with_context(|| format!("running {}", tool.display()));
        }
    }
    Ok(())
}
