//! `hearth-acme`: gets and renews the certificate of a Hearth box (ACME HTTP-01 or DNS-01, or a
//! self-signed one for LAN-only boxes), then asks `hearthd` to load it. Run by
//! `hearth-acme.timer` twice a day; safe to run by hand at any time.

mod acme;
mod cert;
mod check;
mod config;
mod dns;
mod explain;
mod http;
mod logging;
mod policy;
mod reload;
mod renew;
mod state;
mod status;
mod store;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hearth-acme",
    version,
    about = "Gets and renews the TLS certificate of a Hearth box",
    long_about = "Gets and renews the TLS certificate of a Hearth box: from an ACME CA such as Let's Encrypt \
(HTTP-01 through hearth-web's webroot, or DNS-01 through a DNS provider), or self-signed for a box that \
only serves the home network. Settings live in the [acme] section of hearth.toml.",
    after_help = "Examples:\n  hearth-acme status                  what the box serves and when it renews\n  \
hearth-acme check                   test DNS, port 80 and the provider, and say what to fix\n  \
hearth-acme renew                   renew if due (what the timer runs)\n  \
hearth-acme renew --force           renew now, ignoring the schedule and any backoff\n  \
hearth-acme renew --force --directory letsencrypt-staging   try against the staging CA"
)]
struct Cli {
    /// The Hearth configuration file.
    #[arg(long, short, global = true, value_name = "PATH", default_value = hearthd::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Obtain or renew the certificate when due, then tell hearthd
    ///
    /// Obtains a certificate if none is installed, or renews it when due (a third of its lifetime
    /// left, or the CA's renewal window), then asks hearthd to reload. Failures keep the old
    /// certificate and wait longer before each new attempt.
    Renew {
        /// Renew now, even if not due and even if a recent failure asked to wait.
        #[arg(long)]
        force: bool,
        /// Use this ACME directory instead of acme.directory (an https:// URL, `letsencrypt` or
        /// `letsencrypt-staging`).
        #[arg(long, value_name = "URL")]
        directory: Option<String>,
        /// Trust only the CA certificates in this PEM file when talking to the ACME server
        /// (a private or test CA); overrides acme.ca_bundle.
        #[arg(long, value_name = "FILE")]
        ca_bundle: Option<PathBuf>,
    },
    /// Test what renewal needs and say what to fix
    ///
    /// Tests everything renewal depends on: DNS records for every name, whether port 80 serves
    /// our test token (HTTP-01) or the DNS provider accepts our key (DNS-01), the current
    /// certificate's names and expiry, and the last error.
    Check {
        /// Probe this port instead of 80 (e.g. when testing behind a port forward).
        #[arg(long, value_name = "PORT", default_value_t = 80)]
        http_port: u16,
        /// Use this address for NAME instead of asking DNS, like curl's --resolve. Repeatable.
        #[arg(long, value_name = "NAME=IP")]
        resolve: Vec<String>,
    },
    /// Show the certificate, the next renewal and the last error (no network)
    Status,
}

fn main() -> ExitCode {
    logging::init();
    let cli = Cli::parse();
    let settings = match config::Settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hearth-acme: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hearth-acme: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Renew {
            force,
            directory,
            ca_bundle,
        } => {
            let directory = match directory
                .as_deref()
                .map(|d| (d, config::resolve_directory(d)))
            {
                Some((d, None)) => {
                    eprintln!("hearth-acme: --directory {d:?} must be an https:// URL, \"letsencrypt\" or \"letsencrypt-staging\"");
                    return ExitCode::from(2);
                }
                Some((_, url)) => url,
                None => None,
            };
            let opts = renew::Options {
                force,
                directory,
                ca_bundle,
            };
            match runtime.block_on(renew::run(&settings, &opts)) {
                Ok(renew::Outcome::Waiting(why)) => {
                    println!("Nothing to do: {why}.");
                    ExitCode::SUCCESS
                }
                Ok(renew::Outcome::Renewed {
                    serial,
                    not_after,
                    reload,
                }) => {
                    println!(
                        "Installed a new certificate for {} (serial {serial}, valid until {}).",
                        settings.names.join(", "),
                        cert::fmt_time(not_after)
                    );
                    match reload {
                        Ok(reload::Reload::Done) => {
                            println!("hearthd now serves it to new connections.");
                            ExitCode::SUCCESS
                        }
                        Ok(reload::Reload::NotRunning) => {
                            println!("hearthd is not running; it will use the new certificate when it starts.");
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("hearth-acme: {e}. Restart hearthd (systemctl restart hearthd) to load it.");
                            ExitCode::FAILURE
                        }
                    }
                }
                Err(e) => {
                    eprintln!("hearth-acme: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { http_port, resolve } => {
            let report = runtime.block_on(check::run(&settings, http_port, &resolve));
            print!("{}", report.text);
            if report.problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Status => {
            print!("{}", status::render(&settings));
            ExitCode::SUCCESS
        }
    }
}
