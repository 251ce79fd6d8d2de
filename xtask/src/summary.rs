//! Runs `cargo test`, passing its output through, and ends with one line that adds up every
//! test binary's result: `test: N passed, M failed`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

#[derive(Default, Debug, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line to the totals.
fn add_line(t: &mut Totals, line: &str) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split([';', '.']) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) {
            match what {
                "passed" => t.passed += n,
                "failed" => t.failed += n,
                "ignored" => t.ignored += n,
                _ => {}
            }
        }
    }
}

pub fn run_and_count(cmd: &mut Command) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        add_line(&mut totals, &line);
    }
    let status = child.wait()?;
    println!(
        "test: {} passed, {} failed, {} skipped",
        totals.passed,
        totals.failed + u64::from(!status.success() && totals.failed == 0),
        totals.ignored
    );
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    if totals.passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_result_lines() {
        let mut t = Totals::default();
        add_line(
            &mut t,
            "test result: ok. 15 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.41s",
        );
        add_line(
            &mut t,
            "test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        add_line(&mut t, "running 3 tests");
        assert_eq!(
            t,
            Totals {
                passed: 16,
                failed: 3,
                ignored: 2
            }
        );
    }
}
