//! TEMPORARY STUB (lead) — helper replaces this file with the real sandbox.
#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    Status,
}
#[derive(Debug, thiserror::Error)]
#[error("sandbox not built yet")]
pub struct SandboxError;
pub fn run_cli(_c: SandboxCommand) -> Result<(), SandboxError> {
    Err(SandboxError)
}
