//! The `sms-relay` binary: parse, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use sms_relay::{
    cli::{Cli, Command},
    commands, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the benchmark print their own report; their logs would only get in its way.
    let default_filter = match cli.command {
        Command::Demo(_) | Command::Bench(_) => "error",
        _ => "info,sqlx=warn",
    };
    telemetry::init(cli.log_format, default_filter);
    match commands::execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sms-relay: {error}");
            ExitCode::FAILURE
        }
    }
}
