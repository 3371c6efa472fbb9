use std::process::ExitCode;

use clap::Parser;

use auth_service::{commands, config::Cli, telemetry};

fn main() -> ExitCode {
    // clap prints a bad flag's error and exits with status 2 itself.
    let cli = Cli::parse();
    telemetry::init();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(commands::run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}
