//! Accept loops: one task per listening address, a connection cap shared by all.

use crate::server::Server;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Accepts connections until shutdown. `bool` marks direct-TLS listeners (XEP-0368).
pub fn spawn_accept_loops(server: &Arc<Server>, listeners: Vec<(TcpListener, bool)>) {
    let slots = Arc::new(Semaphore::new(server.config.limits.max_connections));
    for (listener, direct) in listeners {
        let server = server.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let mut shutdown = server.shutdown_signal();
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = shutdown.changed() => break,
                };
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    log::warn!("{peer}: connection limit reached, refusing");
                    drop(tcp);
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    crate::c2s::serve(server, tcp, peer, direct).await;
                    drop(permit);
                });
            }
        });
    }
}
