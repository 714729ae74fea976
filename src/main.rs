//! The `edgefilter` binary: parses the command line, installs logging and signal handling,
//! and runs `run` (the module) or `demo` (the tour). User mistakes end here as one line on
//! stderr and a non-zero exit; `anyhow` lives only at this edge.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use tokio::sync::watch;

use edgefilter::config::{Cli, Command};
use edgefilter::io::connection::Shared;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap's first line names the problem; the usage that follows is noise here.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("edgefilter: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefilter: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes the message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    // `run`: one thread drives all I/O. The connection loop is a single task, and with a
    // multi-thread runtime every socket event would first wake a runtime worker which then
    // wakes the thread running `block_on` (perf: a quarter of the CPU in context switches).
    // The verdict workers are std threads of their own. `demo` also runs the simulated
    // sensors and the monitor, which get threads of their own so they do not queue behind
    // the filter.
    let runtime = match &cli.command {
        Command::Run(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Command::Demo(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
    };
    match cli.command {
        Command::Run(args) => {
            let settings = args.validate()?;
            edgefilter::logging::init(settings.log_format);
            runtime.block_on(async {
                let (tx, rx) = watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = tx.send(true);
                });
                let shared = Shared::new(settings.threshold);
                edgefilter::run::run(settings, shared, rx).await
            })?;
        }
        Command::Demo(args) => {
            // The tour prints its own lines; only warnings (rejections explained) get logged.
            if std::env::var_os("RUST_LOG").is_none() {
                std::env::set_var("RUST_LOG", "warn,rumqttd=off");
            }
            edgefilter::logging::init(edgefilter::config::LogFormat::Text);
            runtime.block_on(async {
                let (tx, rx) = watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = tx.send(true);
                });
                edgefilter::demo::run(args, rx).await
            })?;
        }
    }
    Ok(())
}

/// SIGTERM (containers, systemd) or SIGINT (Ctrl-C).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
