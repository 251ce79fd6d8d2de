//! `eip-bench`, what `cargo xtask bench` runs after the criterion benches: the dataplane
//! measured beside its baselines in one run. Prints a table; `--json FILE` writes one object
//! per figure.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use bench::{figures, kernel};
use clap::Parser;

#[derive(Parser)]
#[command(name = "eip-bench", about = "eip's dataplane beside its baselines")]
struct Args {
    /// Fewer sizes and rounds: a quick look.
    #[arg(long)]
    quick: bool,
    /// Writes every figure as JSON (an array of objects) to FILE.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("error: the benchmarks need root (eBPF, network namespaces)");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let say = |s: &str| eprintln!("[bench] {s} ({:.0} s)", started.elapsed().as_secs_f64());
    let (sizes, rounds): (&[u64], usize) = if args.quick {
        (&[1, 65_536], 11)
    } else {
        (&[1, 1_000, 65_536, 1_000_000], 31)
    };
    let figures = match kernel::run(sizes, rounds, &say) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: kernel: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", figures::table(&figures));
    if let Some(path) = args.json {
        let text = match serde_json::to_string_pretty(&figures) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: JSON: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
