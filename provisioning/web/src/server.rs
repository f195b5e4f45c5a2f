//! Listening: plain HTTP and HTTPS sockets, one task per connection, bounded, with timeouts so a
//! slow or stuck client cannot tie the box up.

use crate::app::{AppState, ConnInfo};
use crate::cli::ServeArgs;
use crate::setup_code::SetupCode;
use crate::tls::CertResolver;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; more wait in the kernel's backlog. A home box has few visitors.
const MAX_CONNECTIONS: usize = 256;
/// Time for a client to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// hyper's read and write buffer per connection (its default, ~400 KiB, is sized for servers
/// with memory to spare): uploads and downloads stream through it, headers must fit.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;
/// Time for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(args: ServeArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.state_dir).map_err(|e| {
        format!(
            "cannot create --state-dir {}: {e}",
            args.state_dir.display()
        )
    })?;
    let resolver = Arc::new(CertResolver::default());
    let provisioned = args.config.exists();
    let code = if provisioned {
        let config = hearthd::config::Config::load(&args.config).map_err(|e| e.to_string())?;
        resolver.set_paths(config.tls.cert.clone(), config.tls.key.clone());
        None
    } else {
        let code = SetupCode::load_or_create(&args.state_dir).map_err(|e| {
            format!(
                "cannot store the setup code in {}: {e}",
                args.state_dir.display()
            )
        })?;
        announce(&code, &args);
        Some(Arc::new(code))
    };
    let probe = crate::wizard::reach::ProbeSettings {
        resolve: args.resolve.clone(),
        port: args.probe_port,
    };
    let state = Arc::new(AppState {
        sessions: Default::default(),
        code: std::sync::Mutex::new(code),
        wizard: tokio::sync::Mutex::new(crate::wizard::state::Store::new(&args.state_dir)),
        backend: Default::default(),
        tls: resolver.clone(),
        probe,
        login_limiter: Default::default(),
        args: args.clone(),
    });
    let router = crate::app::router(state);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tls_config = crate::tls::server_config(resolver)?;
    let mut tasks = Vec::new();
    for addr in &args.listen {
        let l = bind(*addr).await?;
        log::info!(
            "serving HTTP on {}",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        tasks.push(tokio::spawn(accept_loop(
            l,
            router.clone(),
            limit.clone(),
            None,
        )));
    }
    for addr in &args.listen_tls {
        let l = bind(*addr).await?;
        log::info!(
            "serving HTTPS on {}",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config.clone());
        tasks.push(tokio::spawn(accept_loop(
            l,
            router.clone(),
            limit.clone(),
            Some(acceptor),
        )));
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    shutdown_signal().await;
    log::info!("stopping");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Tells the owner where to go and what code to type: on the console (the unit sends stdout
/// there), in the log, and in SETUP-CODE.txt on the boot partition.
fn announce(code: &SetupCode, args: &ServeArgs) {
    let port = args.listen.first().map(|a| a.port()).unwrap_or(80);
    let urls = crate::netinfo::urls(port);
    match code.write_boot_file(&args.boot_dir, &urls) {
        Ok(p) => log::info!("setup code written to {}", p.display()),
        Err(e) => log::warn!(
            "cannot write {}: {e}",
            args.boot_dir.join(crate::setup_code::FILE_NAME).display()
        ),
    }
    println!("\n  Hearth is waiting to be set up.");
    println!("  Open one of these on a phone or computer in the same network:");
    for u in &urls {
        println!("      {u}");
    }
    println!("  and enter the setup code:  {}\n", code.display());
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        // `[::]` fails on a kernel without IPv6; the IPv4 wildcard still serves the LAN.
        Err(_) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))
        }
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limit: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: wait a moment instead of spinning.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let info = ConnInfo {
                tls: tls.is_some(),
                peer,
            };
            match tls {
                None => serve(TokioIo::new(stream), router, info).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve(TokioIo::new(s), router, info).await,
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                    }
                }
            }
        });
    }
}

async fn serve<I>(io: I, router: Router, info: ConnInfo)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(info);
            let router = router.clone();
            async move { tower::ServiceExt::oneshot(router, req.map(axum::body::Body::new)).await }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_CONNECTION_BUFFER)
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        log::debug!("connection from {} ended: {e}", info.peer);
    }
}

async fn shutdown_signal() {
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
