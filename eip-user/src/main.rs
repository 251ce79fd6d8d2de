use std::process::ExitCode;

use clap::Parser;
use eip_user::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            // One sentence, not clap's usage block: "error: invalid value ... for '<EIP>' ...".
            let text = e.render().to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad usage"));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Daemon(args) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("EIP_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            match runtime.block_on(eip_user::daemon::run(*args, cli.socket)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{}", eip_user::error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        command => {
            // A reader that goes away (`eip history | head -1`) ends the command quietly, as
            // it ends `ip` or `git`, instead of a panic in println!.
            // SAFETY: signal(2) before any thread of ours writes to stdout.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            cli_command(&runtime, cli.socket, command)
        }
    }
}

fn cli_command(runtime: &tokio::runtime::Runtime, socket: std::path::PathBuf, command: Command) -> ExitCode {
    match runtime.block_on(eip_user::cli::run(socket, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", eip_user::error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
