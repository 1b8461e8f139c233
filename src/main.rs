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

/// mimalloc's option to commit its arenas eagerly (its default on Linux).
const EAGER_COMMIT: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// A hub serves with mimalloc's arenas committed lazily, so that memory it
/// frees and purges leaves the resident set (eagerly committed, purged memory
/// is only reset and stays resident: the 500 x 2,000/s fan-out peaked about
/// 50 MiB higher; README, Benchmark). mimalloc reads the option once, when it
/// reserves its first arena, before `main`; so `serve` starts itself again with
/// it set, unless the environment already says. Returns only if that failed.
fn serve_with_lazy_commit(cli: &Cli) {
    use std::os::unix::process::CommandExt;
    if !matches!(cli.command, cmd::Command::Serve(_)) || std::env::var_os(EAGER_COMMIT).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "dip-hub".into());
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env(EAGER_COMMIT, "0")
        .exec();
    eprintln!(
        "dip-hub: serving with mimalloc's eager commit: restarting with {EAGER_COMMIT}=0 failed: {error}"
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    serve_with_lazy_commit(&cli);
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
