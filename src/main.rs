//! The `sms-relay` binary: parse, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use sms_relay::{cli::Cli, commands, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match commands::execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sms-relay: {error}");
            ExitCode::FAILURE
        }
    }
}
