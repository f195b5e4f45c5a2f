//! The running server: configuration, storage, TLS, the session table and the modules, shared
//! by every connection task.

use crate::config::Config;
use crate::domains::Domains;
use crate::iq_tracker::IqTracker;
use crate::modules::Modules;
use crate::sessions::SessionTable;
use crate::storage::Storage;
use crate::throttle::Throttle;
use crate::tls::TlsStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct Server {
    pub config: Config,
    pub storage: Storage,
    pub tls: TlsStore,
    pub sessions: SessionTable,
    pub modules: Modules,
    /// Routes to the domains that are not the server's own (hosted services, federation).
    pub domains: Domains,
    /// Replies to IQs the server asked.
    pub iq_tracker: IqTracker,
    pub ip_failures: Throttle,
    pub account_failures: Throttle,
    pub registrations: Throttle,
    pub started: Instant,
    /// Server-wide state of modules, one value per type (see `module_state`).
    module_state: std::sync::Mutex<crate::hooks::Extensions>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    pub fn new(config: Config) -> Result<Arc<Server>, String> {
        let tls = TlsStore::load(&config.tls.cert, &config.tls.key)?;
        let storage = Storage::open(&config.database_path()).map_err(|e| {
            format!(
                "cannot open database {}: {e}",
                config.database_path().display()
            )
        })?;
        let modules = Modules::new(&config)?;
        Server::assemble(config, storage, tls, modules)
    }

    /// A server from parts already made (the in-process test harness brings its own modules).
    /// Applies the modules' migrations before anything can use their tables.
    pub fn assemble(
        config: Config,
        storage: Storage,
        tls: TlsStore,
        modules: Modules,
    ) -> Result<Arc<Server>, String> {
        storage
            .migrate_modules(&modules.migrations())
            .map_err(|e| format!("cannot prepare the modules' tables: {e}"))?;
        let lockout = Duration::from_secs(config.auth.lockout_secs);
        let server = Arc::new(Server {
            ip_failures: Throttle::new(config.auth.max_failures_per_ip, lockout),
            account_failures: Throttle::new(config.auth.max_failures_per_account, lockout),
            registrations: Throttle::new(
                config.registration.open_per_ip_per_hour,
                Duration::from_secs(3600),
            ),
            modules,
            domains: Domains::default(),
            iq_tracker: IqTracker::default(),
            config,
            storage,
            tls,
            sessions: SessionTable::default(),
            started: Instant::now(),
            module_state: Default::default(),
            shutdown: watch::channel(false).0,
        });
        for m in server.modules.all() {
            m.start(&server);
        }
        Ok(server)
    }

    /// A module's server-wide state of type `T` (made with `Default` on first use), for the
    /// module's free functions that only hold the server.
    pub fn module_state<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut ext = self.module_state.lock().unwrap_or_else(|e| e.into_inner());
        ext.get_or_default::<Arc<T>>().clone()
    }

    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// Tells every task to finish; connections close their streams politely.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// A receiver that changes to `true` at shutdown.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
