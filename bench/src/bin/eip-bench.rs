//! `eip-bench`, what `cargo xtask bench` runs after the criterion benches: the dataplane and
//! the control plane measured beside their baselines in one run. Prints a table; `--json FILE`
//! writes one object per figure.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bench::{control, dhcp, figures, figures::Figure, kernel, limits, memory, throughput};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Family {
    Kernel,
    Throughput,
    /// The contested throughput figures at one binding (TCP with wire-size segments, one
    /// UDP flow out), every variant in turn, in rounds, paired within each round.
    Rounds,
    Control,
    Dhcp,
    Memory,
    Limits,
}

#[derive(Parser)]
#[command(name = "eip-bench", about = "eip beside its baselines")]
struct Args {
    /// Fewer sizes, samples and rounds: a quick look.
    #[arg(long)]
    quick: bool,
    /// Writes every figure as JSON (an array of objects) to FILE.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runs only these families (repeat or comma-separate); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Family>,
    /// Writes BENCHMARKS.md's tables for the figures (Markdown) to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Draws the plots (SVG) into DIR.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Measures nothing: reads the figures of an earlier `--json` run from FILE (to print
    /// the table and draw the plots again).
    #[arg(long, value_name = "FILE")]
    from_json: Option<PathBuf>,
    /// The throughput family's numbers of bindings instead of the plan's (repeat or
    /// comma-separate), to look at one size closely.
    #[arg(long, value_delimiter = ',', value_name = "N")]
    sizes: Vec<u32>,
    /// The `eip` binary (default: next to this one).
    #[arg(long)]
    eip: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if args.from_json.is_none() && unsafe { libc::geteuid() } != 0 {
        eprintln!("error: the benchmarks need root (eBPF, network namespaces)");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let say = |s: &str| eprintln!("[bench] {s} ({:.0} s)", started.elapsed().as_secs_f64());
    let bin = match &args.eip {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the binary's directory")?
            .join("eip"),
    };
    let mut all: Vec<Figure> = Vec::new();
    if let Some(path) = &args.from_json {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        all = serde_json::from_str(&text)
            .with_context(|| format!("{}: not eip-bench figures", path.display()))?;
    } else {
        measure(args, &bin, &mut all, &say)?;
    }
    print!("{}", figures::table(&all));
    if let Some(path) = &args.json
        && args.from_json.is_none()
    {
        let text = serde_json::to_string_pretty(&all).context("JSON")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, bench::report::markdown(&all))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.plots {
        for p in bench::plot::write(&all, dir)? {
            say(&format!("plot: {}", p.display()));
        }
    }
    say("done");
    Ok(())
}

/// Runs the families `args` asks for, adding their figures to `all` as each finishes.
fn measure(args: &Args, bin: &std::path::Path, all: &mut Vec<Figure>, say: &dyn Fn(&str)) -> Result<()> {
    let wanted = |f: Family| args.only.is_empty() || args.only.contains(&f);
    if wanted(Family::Kernel) {
        let (sizes, rounds): (&[u64], usize) = if args.quick {
            (&[1, 65_536], 11)
        } else {
            (&[1, 1_000, 65_536, 1_000_000], 31)
        };
        all.extend(kernel::run(sizes, rounds, say).context("kernel")?);
    }
    if wanted(Family::Throughput) {
        let plan = if args.quick {
            throughput::Plan {
                sizes: vec![1, 1_000],
                udp: Duration::from_millis(500),
                tcp_secs: 1,
                reps: 1,
            }
        } else {
            throughput::Plan {
                sizes: vec![1, 1_000, 10_000],
                udp: Duration::from_secs(1),
                tcp_secs: 3,
                reps: 3,
            }
        };
        let plan = if args.sizes.is_empty() {
            plan
        } else {
            throughput::Plan {
                sizes: args.sizes.clone(),
                ..plan
            }
        };
        all.extend(throughput::run(bin, &plan, say).context("throughput")?);
    }
    if wanted(Family::Rounds) {
        let rounds = if args.quick {
            throughput::alternated::Rounds {
                rounds: 2,
                secs: 1,
                udp: Duration::from_millis(500),
            }
        } else {
            throughput::alternated::Rounds {
                rounds: 7,
                secs: 3,
                udp: Duration::from_secs(1),
            }
        };
        all.extend(throughput::alternated::run(bin, &rounds, say).context("rounds")?);
    }
    if wanted(Family::Control) {
        let plan = if args.quick {
            control::Plan {
                sizes: vec![0, 10_000],
                samples: 200,
                process_samples: 20,
                bulk: 10_000,
                rss: vec![1_000, 10_000],
            }
        } else {
            control::Plan {
                sizes: vec![0, 10_000, 100_000],
                samples: 1_000,
                process_samples: 100,
                bulk: 10_000,
                rss: vec![1_000, 10_000, 65_536, 100_000],
            }
        };
        all.extend(control::run(bin, &plan, say).context("control plane")?);
    }
    if wanted(Family::Dhcp) {
        let plan = dhcp::Plan {
            rate: 2_000,
            secs: if args.quick { 3 } else { 10 },
        };
        all.extend(dhcp::run(bin, &plan, say).context("DHCP")?);
    }
    if wanted(Family::Limits) {
        let plan = if args.quick {
            limits::Plan {
                secs: 5,
                bursts: vec![],
            }
        } else {
            limits::Plan {
                secs: 10,
                bursts: vec!["128kb", "256kb", "512kb", "1mb", "2mb"],
            }
        };
        all.extend(limits::run(bin, &plan, say).context("limits")?);
    }
    if wanted(Family::Memory) {
        let sizes: &[u32] = if args.quick {
            &[1_000, 65_536]
        } else {
            &[1_000, 65_536, 1_000_000]
        };
        all.extend(memory::run(sizes, say).context("memory")?);
    }
    Ok(())
}
