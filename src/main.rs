//! `dip-hub`: parse the command line, set up tracing, run the command, map errors
//! to exit codes.

use clap::Parser;
mod cmd;

use cmd::{Cli, execute};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: the writer spends much of its time
/// allocating for sled (see README, Benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    match execute(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let code = exit_code(&error);
            eprintln!("dip-hub: {error:#}");
            std::process::ExitCode::from(code)
        }
    }
}

/// 2: the configuration or the request was wrong; 3: the hub is unreachable; 1: anything else.
fn exit_code(error: &anyhow::Error) -> u8 {
    use dip_hub::Error;
    if error.downcast_ref::<cmd::Usage>().is_some() {
        return 2;
    }
    match error.downcast_ref::<Error>() {
        Some(Error::Config(_) | Error::InvalidArgument { .. }) => 2,
        Some(Error::Unavailable(_)) => 3,
        _ => 1,
    }
}
