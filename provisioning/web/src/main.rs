//! `hearth-web`: the first-boot wizard, the admin pages and the invite landing pages of a Hearth box.
//!
//! One process serves everything on ports 80 and 443. Until the box is set up (no config file yet)
//! it serves the wizard, guarded by the setup code; afterwards it serves the admin pages behind a
//! login, the invite pages and the ACME webroot, and sends plain-HTTP visitors to HTTPS.

// Handlers return `Result<_, Response>` so a refusal is a finished page; the size of the error
// variant does not matter at the rate a home box serves pages.
#![allow(clippy::result_large_err)]

mod admin;
mod app;
mod backend;
mod backup;
mod certinfo;
mod cli;
mod forms;
mod invite;
mod netinfo;
mod qr;
mod server;
mod session;
mod setup_code;
mod templates;
mod tls;
mod upload;
mod wizard;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Two workers suit a Zero 2 W; PBKDF2 and SQLite run on the blocking pool.
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hearth-web: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        Some(cli::Command::Preseed(p)) => runtime.block_on(cli::preseed(p)),
        Some(cli::Command::Serve(s)) => runtime.block_on(server::run(s)),
        Some(cli::Command::SetupCode(a)) => cli::setup_code(a),
        Some(cli::Command::Imager(a)) => cli::imager(a),
        None => runtime.block_on(server::run(args.serve)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-web: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The journal when systemd started us (structured fields), else stderr.
fn init_logging() {
    let level = std::env::var("HEARTH_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            if logger
                .with_syslog_identifier("hearth-web".into())
                .install()
                .is_ok()
            {
                log::set_max_level(level);
                return;
            }
        }
    }
    let _ = log::set_boxed_logger(Box::new(StderrLog));
    log::set_max_level(level);
}

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        // Dependencies (hyper, rustls) are chatty at debug level; keep ours.
        if record.level() <= log::Level::Info || record.target().starts_with("hearth_web") {
            eprintln!("hearth-web {}: {}", record.level(), record.args());
        }
    }
    fn flush(&self) {}
}
