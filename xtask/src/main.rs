//! `cargo xtask`: the project's commands. Each one first installs what it needs (see
//! `setup`), so that a fresh machine goes from a clone to a result in one command.

mod setup;
mod summary;

use std::{os::unix::process::CommandExt, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use setup::{Needs, run};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test, run and benchmark eip")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (toolchain parts, Debian packages) and check the kernel.
    Setup,
    /// Build the eBPF programs, the `eip` binary and the lab (release).
    Build,
    /// Every test: formatting and lints, unit and property tests, in-kernel packet tests.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Passed to `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The main job: a lab of namespaces with the daemon, or `-- ARGS` for `eip daemon ARGS`.
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks: criterion micro-benchmarks of the rewrite, then the dataplane beside its
    /// baselines (eip-bench).
    Bench {
        /// Short durations and fewer sizes.
        #[arg(long)]
        quick: bool,
        /// Writes the dataplane figures as JSON to FILE.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// The packages built and tested for the host; eip-ebpf is built for the BPF target by
/// eip-user's build.rs.
const HOST_PACKAGES: &[&str] = &["eip-common", "eip-user", "xtask", "bench"];

fn root() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map_or_else(|| xtask.join(".."), PathBuf::from)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn packages(cmd: &mut Command) -> &mut Command {
    for p in HOST_PACKAGES {
        cmd.args(["-p", p]);
    }
    cmd
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// The `eip` binary with its programs embedded, and the lab (`eip-lab`), in release mode. The
/// first build takes minutes; cargo shows its progress.
fn build_release() -> Result<()> {
    eprintln!("[build] eip and eip-lab (release)");
    let started = Instant::now();
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "eip-user",
        "--features",
        "testing",
        "--bins",
    ]))?;
    eprintln!("[build] done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn lint() -> Result<()> {
    eprintln!("[test] cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    eprintln!("[test] clippy (host crates)");
    run(packages(cargo().args(["clippy", "--all-targets"])).args(["--", "-D", "warnings"]))?;
    eprintln!("[test] clippy (eBPF crate, nightly, bpfel-unknown-none)");
    // Through rustup, as aya-build does: the stable cargo that runs xtask sets RUSTC and
    // friends, which must not leak into the nightly build.
    let mut nightly = Command::new("rustup");
    nightly
        .current_dir(root())
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "-p",
            "eip-ebpf",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--", "-D", "warnings"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    run(&mut nightly)
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::ensure(Needs::Everything),
        Cmd::Build => {
            setup::ensure(Needs::Toolchain)?;
            build_release()
        }
        Cmd::Test { no_lint, args } => {
            setup::ensure(Needs::Everything)?;
            if !no_lint {
                lint()?;
            }
            eprintln!("[test] cargo test");
            let mut test = cargo();
            packages(test.args(["test", "--lib", "--bins", "--tests"]))
                .arg("--")
                .args(&args);
            summary::run_and_count(&mut test)
        }
        Cmd::Run { args } => {
            // The lab needs the test tools (DHCP clients, ethtool, curl); the daemon on real
            // interfaces only root and the kernel.
            setup::ensure(if args.is_empty() {
                Needs::Everything
            } else {
                Needs::Kernel
            })?;
            build_release()?;
            let bin = target_dir().join("release");
            let mut cmd = if args.is_empty() {
                eprintln!(
                    "[run] the lab: {} (Ctrl-C stops it)",
                    bin.join("eip-lab").display()
                );
                Command::new(bin.join("eip-lab"))
            } else {
                eprintln!("[run] {} daemon {}", bin.join("eip").display(), args.join(" "));
                let mut c = Command::new(bin.join("eip"));
                c.arg("daemon").args(&args);
                c
            };
            // exec, so that Ctrl-C and the exit status go straight to the lab or the daemon.
            Err(cmd.exec()).with_context(|| format!("could not start {cmd:?}"))
        }
        Cmd::Bench { quick, json } => {
            setup::ensure(Needs::Bench)?;
            let mut c = cargo();
            c.args(["bench", "-p", "bench", "--bench", "rewrite", "--bench", "control"]);
            if quick {
                c.args(["--", "--warm-up-time", "1", "--measurement-time", "2"]);
            }
            run(&mut c)?;
            // eip-bench runs the real daemon: the same release build as `cargo xtask run`.
            build_release()?;
            eprintln!("[bench] building eip-bench (release)");
            run(cargo().args(["build", "--release", "-p", "bench", "--bin", "eip-bench"]))?;
            let mut b = Command::new(target_dir().join("release").join("eip-bench"));
            if quick {
                b.arg("--quick");
            }
            b.arg("--plots").arg(target_dir().join("bench"));
            // BENCHMARKS.md's tables, from this run's figures.
            b.arg("--markdown")
                .arg(target_dir().join("bench").join("tables.md"));
            if let Some(path) = json {
                // The binary runs from the workspace root; a relative path is the caller's.
                let path = std::env::current_dir()?.join(path);
                b.arg("--json").arg(path);
            }
            run(&mut b)
        }
    }
}
