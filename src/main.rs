//! The `edgefilter` binary: parses the command line (with the `--config` file applied),
//! installs logging and signal handling, and runs `run` (the module), `demo` (the tour) or
//! `config check|print`. User mistakes end here as one line on
//! stderr and a non-zero exit; `anyhow` lives only at this edge.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::error::ErrorKind;

use edgefilter::cli::file::{self as config_file, ConfigCommand, ParseError, Parsed};
use edgefilter::cli::Command;
use edgefilter::run::Shared;
use edgefilter::shutdown::Shutdown;

fn main() -> ExitCode {
    let parsed = match config_file::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ParseError::File(e)) => {
            eprintln!("edgefilter: {e}");
            return ExitCode::from(2);
        }
        Err(ParseError::Clap(e))
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(ParseError::Clap(e))
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(ParseError::Clap(e)) => {
            // clap's first line names the problem; the usage that follows is noise here.
            eprintln!("edgefilter: {}", config_file::first_line(&e));
            return ExitCode::from(2);
        }
    };
    match real_main(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefilter: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line (`what: why: root cause`). Every error of the
/// library either names its cause in its message or returns it as its source, never both, so
/// the chain says each thing once.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn real_main(parsed: Parsed) -> anyhow::Result<()> {
    if let Command::Config { command } = &parsed.cli.command {
        match command {
            ConfigCommand::Check { file } => println!("{}", config_file::check(file)?),
            ConfigCommand::Print(_) => print!("{}", parsed.to_toml()),
        }
        return Ok(());
    }
    let Parsed { cli, password, .. } = parsed;
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
        Command::Config { .. } => unreachable!("handled above"),
    };
    match cli.command {
        Command::Run(args) => {
            let mut settings = args.validate()?;
            if settings.password.is_none() {
                settings.password = password; // `password` of the --config file
            }
            edgefilter::logging::init(settings.log_format);
            runtime.block_on(async {
                let shutdown = on_signal();
                let shared = Shared::new(settings.threshold);
                edgefilter::run::run(settings, shared, shutdown).await
            })?;
        }
        Command::Demo(args) => {
            // The tour prints its own lines; only warnings (rejections explained) get logged.
            if std::env::var_os("RUST_LOG").is_none() {
                std::env::set_var("RUST_LOG", "warn");
            }
            edgefilter::logging::init(edgefilter::settings::LogFormat::Text);
            runtime
                .block_on(async { edgefilter::demo::run(args.settings(), on_signal()).await })?;
        }
        Command::Config { .. } => {}
    }
    Ok(())
}

/// A shutdown that fires on SIGTERM or SIGINT (call inside the runtime).
fn on_signal() -> Shutdown {
    let (trigger, shutdown) = edgefilter::shutdown::channel();
    tokio::spawn(async move {
        wait_for_signal().await;
        trigger.fire();
    });
    shutdown
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
