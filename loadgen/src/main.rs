//! Tooling: the `loadgen` binary — parse, run, print the table, write the summary files, and
//! exit 0 (clean), 1 (lost or unexpected alerts) or 2 (usage, connection or setup error).

use anyhow::Context;
use clap::Parser;
use loadgen::cli::Args;
use loadgen::report::hgrm;
use loadgen::run::{run, INTERRUPTED};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// First Ctrl-C: stop sending, drain and report. The handler resets itself, so a second
/// Ctrl-C ends the process at once.
fn install_sigint() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

fn main() -> ExitCode {
    let cfg = match Args::parse().validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    install_sigint();
    let outcome = match run(&cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", outcome.summary.table());
    let files = (|| -> anyhow::Result<()> {
        if let Some(p) = &cfg.summary {
            std::fs::write(p, outcome.summary.to_json())
                .with_context(|| format!("cannot write --summary {}", p.display()))?;
        }
        if let Some(p) = &cfg.hgrm {
            std::fs::write(p, hgrm(&outcome.latency))
                .with_context(|| format!("cannot write --hgrm {}", p.display()))?;
        }
        if let Some(p) = &cfg.report {
            loadgen::plot::write(p, &outcome.summary, &outcome.timeline, &outcome.latency)
                .with_context(|| format!("--report {}", p.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = files {
        eprintln!("loadgen: {e:#}");
        return ExitCode::from(2);
    }
    if outcome.summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
