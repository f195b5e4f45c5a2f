//! `hearthd`: the Hearth XMPP server.

use clap::Parser;
use hearthd::config::{Config, DEFAULT_CONFIG_PATH};
use hearthd::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// With `--features mimalloc`: mimalloc instead of the C library's malloc (see bench/REPORT.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hearth's XMPP server: accounts, rosters, presence and messages for a home server.
///
/// Examples:
///   hearthd --config /etc/hearth/hearth.toml     serve with the box's configuration
///   hearthd --dev                                try it: localhost, self-signed, open registration
///   hearthd --config hearth.toml --check         validate a config file and exit
///
/// Signals: SIGHUP reloads the TLS certificate and key without dropping connections;
/// SIGTERM or SIGINT closes every stream politely and exits.
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Development mode: domain `localhost`, self-signed certificate, open registration, data in --dev-dir.
    #[arg(long)]
    dev: bool,
    /// With --dev: the STARTTLS port on 127.0.0.1 (direct TLS is the next one).
    #[arg(long, default_value_t = 5222)]
    dev_port: u16,
    /// Where --dev keeps its data.
    #[arg(long, default_value = "hearth-dev")]
    dev_dir: PathBuf,
    /// Check the configuration (and certificate) and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    hearthd::logging::init("hearthd");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("hearthd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let config = if args.dev {
        let c = hearthd::dev::prepare(&args.dev_dir, args.dev_port)?;
        let path = c.data_dir.join("hearth.toml");
        c.write_atomically(&path).map_err(|e| e.to_string())?;
        eprint!("{}", hearthd::dev::banner(&c));
        c
    } else {
        Config::load(&args.config).map_err(|e| e.to_string())?
    };
    if args.check {
        hearthd::tls::load_server_config(&config.tls.cert, &config.tls.key)?;
        println!("configuration OK: domain {}", config.domain);
        return Ok(());
    }
    // Bind first (ports may need root), then drop privileges, then start threads and open files.
    let listeners = bind_std(&config)?;
    let s2s_listeners = bind_s2s(&config)?;
    hearthd::privileges::drop_to(config.user.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .max_blocking_threads(8)
        .thread_stack_size(256 * 1024)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    runtime.block_on(serve(config, listeners, s2s_listeners))
}

/// Federation's listeners (none when `[s2s] enabled = false`).
fn bind_s2s(config: &Config) -> Result<Vec<(std::net::TcpListener, bool)>, String> {
    let mut out = Vec::new();
    if !config.s2s.enabled {
        return Ok(out);
    }
    for (addrs, direct) in [
        (&config.s2s.listen, false),
        (&config.s2s.listen_direct_tls, true),
    ] {
        for addr in addrs {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen for servers on {addr} ([s2s]): {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            out.push((l, direct));
        }
    }
    Ok(out)
}

fn bind_std(config: &Config) -> Result<Vec<(std::net::TcpListener, bool)>, String> {
    let mut out = Vec::new();
    for (addrs, direct) in [
        (&config.listen.c2s, false),
        (&config.listen.c2s_direct_tls, true),
    ] {
        for addr in addrs {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            out.push((l, direct));
        }
    }
    Ok(out)
}

async fn serve(
    config: Config,
    listeners: Vec<(std::net::TcpListener, bool)>,
    s2s_listeners: Vec<(std::net::TcpListener, bool)>,
) -> Result<(), String> {
    let server = Server::new(config)?;
    if server.config.s2s.enabled {
        let s2s = hearthd::s2s::start(&server)?;
        let mut bound = Vec::new();
        for (l, direct) in s2s_listeners {
            bound.push((
                tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?,
                direct,
            ));
        }
        hearthd::s2s::spawn_listeners(&server, &s2s, bound);
        log::info!(
            "federation on (STARTTLS {:?}, direct TLS {:?})",
            server.config.s2s.listen,
            server.config.s2s.listen_direct_tls
        );
    } else {
        log::info!("federation off ([s2s] enabled = false): only local accounts can be reached");
    }
    let mut tokio_listeners = Vec::new();
    for (l, direct) in listeners {
        tokio_listeners.push((
            tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?,
            direct,
        ));
    }
    hearthd::listener::spawn_accept_loops(&server, tokio_listeners);
    hearthd::control::serve(server.clone(), &server.config.control_socket)?;
    log::info!(
        "serving {} (c2s {:?}, direct TLS {:?})",
        server.domain(),
        server.config.listen.c2s,
        server.config.listen.c2s_direct_tls
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    wait_for_signals(&server).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    server.begin_shutdown();
    // Give sessions a moment to send their closing stream errors and to hand on what they held.
    for _ in 0..50 {
        if server.sessions.counts().0 == 0 && server.sessions.running() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&server.config.control_socket);
    log::info!("stopped");
    Ok(())
}

async fn wait_for_signals(server: &Arc<Server>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => match server.tls.reload() {
                Ok(()) => log::info!("SIGHUP: certificate reloaded"),
                Err(e) => log::error!("SIGHUP: keeping the old certificate: {e}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
}
