//! `hearth-acme renew`: decide, obtain, install, reload, and remember what happened. A failure
//! never touches the certificate in place; it is recorded with a backoff so the timer does not
//! hammer the CA.

use crate::acme::{self, Solver};
use crate::cert::{self, fmt_span, fmt_time, CertInfo};
use crate::config::{Challenge, Settings};
use crate::http::Http;
use crate::policy::{self, Decision, Facts};
use crate::reload::{self, Reload};
use crate::state::{self, AriState, State};
use crate::store;
use std::path::PathBuf;
use std::time::Duration;

/// Bounds on how soon we ask the CA for renewal information again, whatever its Retry-After says.
const ARI_MIN_RECHECK: i64 = 3600;
const ARI_MAX_RECHECK: i64 = 86_400;
/// Longest a whole order may take (DNS propagation waits included).
const ORDER_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Default, Clone)]
pub struct Options {
    pub force: bool,
    pub directory: Option<String>,
    pub ca_bundle: Option<PathBuf>,
}

/// What a successful run did.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing was due.
    Waiting(String),
    /// A new certificate is in place. `reload` says whether hearthd took it.
    Renewed {
        serial: String,
        not_after: i64,
        reload: Result<Reload, String>,
    },
}

pub struct Current {
    pub cert: Option<CertInfo>,
    pub key_ok: bool,
}

/// Reads the pair hearthd serves. An unreadable certificate counts as missing (it will be replaced).
pub fn current(s: &Settings) -> Current {
    let cert = match cert::read_chain(&s.cert_path) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("{e}; it will be replaced");
            None
        }
    };
    let key_ok = match (&cert, std::fs::read_to_string(&s.key_path)) {
        (Some(c), Ok(k)) => cert::key_matches(&k, c),
        _ => false,
    };
    Current { cert, key_ok }
}

pub async fn run(s: &Settings, opts: &Options) -> Result<Outcome, String> {
    let _lock = state::lock(&s.state_dir)?;
    store::finish_interrupted(&s.cert_path, &s.key_path)?;
    let now = state::now();
    let mut st = State::load(&s.state_dir);
    let mut cur = current(s);
    let acme_mode = s.challenge != Challenge::SelfSigned;

    if acme_mode && cur.cert.is_none() {
        // hearthd cannot start without a pair; a self-signed one lets it run (and the wizard finish)
        // until the CA answers. The policy replaces it as soon as it can.
        let pair = hearthd::certs::self_signed(&s.names)
            .map_err(|e| format!("cannot make a temporary certificate: {e}"))?;
        store::install(&s.cert_path, &s.key_path, &pair.cert_pem, &pair.key_pem)?;
        log::info!("installed a temporary self-signed certificate until the CA issues one");
        cur = current(s);
    }

    let directory = opts
        .directory
        .clone()
        .unwrap_or_else(|| s.directory.clone());
    let ca_bundle = opts.ca_bundle.clone().or_else(|| s.ca_bundle.clone());
    let mut http = None;
    let mut account = None;
    let trusted = cur
        .cert
        .as_ref()
        .filter(|c| !c.self_signed && cur.key_ok && c.covers_exactly(&s.names));

    // ACME Renewal Information: when the CA offers it, its window replaces the lifetime rule.
    if let (true, false, Some(c)) = (acme_mode, opts.force, trusted) {
        let stale = st
            .ari
            .as_ref()
            .is_none_or(|a| a.serial != c.serial || now >= a.next_check);
        if stale && st.next_attempt.is_none_or(|t| t <= now) {
            let h = Http::new(ca_bundle.as_deref())?;
            match acme::account(s, &directory, &h).await {
                Ok(a) => {
                    st.ari = match acme::renewal_window(&a, &c.leaf_der).await {
                        Some((start, end, url, retry)) => Some(AriState {
                            serial: c.serial.clone(),
                            window_start: start,
                            window_end: end,
                            chosen: policy::pick_in_window(start, end, state::random_u32()),
                            next_check: now
                                + (retry.as_secs() as i64).clamp(ARI_MIN_RECHECK, ARI_MAX_RECHECK),
                            explanation_url: url,
                        }),
                        None => None,
                    };
                    account = Some(a);
                }
                Err(e) => log::warn!("could not ask the CA for renewal information: {e}"),
            }
            http = Some(h);
        }
    }

    let facts = Facts {
        now,
        cert: cur.cert.as_ref(),
        key_ok: cur.key_ok,
        names: &s.names,
        challenge: s.challenge,
        state: &st,
        force: opts.force,
        directory: &directory,
    };
    let why = match policy::decide(&facts) {
        Decision::Wait { why, .. } => {
            st.save(&s.state_dir)?;
            return Ok(Outcome::Waiting(why));
        }
        Decision::Renew(why) => why,
    };
    log::info!("renewing the certificate for {}: {why}", s.names.join(", "));
    st.last_attempt = Some(now);

    let issued = if acme_mode {
        let h = match http {
            Some(h) => h,
            None => Http::new(ca_bundle.as_deref())?,
        };
        let replaces = trusted
            .filter(|_| st.ari.is_some())
            .and_then(|c| acme::cert_id(&c.leaf_der));
        obtain(s, &directory, &h, account, replaces).await
    } else {
        hearthd::certs::self_signed(&s.names)
            .map(|p| acme::Issued {
                chain_pem: p.cert_pem,
                key_pem: p.key_pem,
            })
            .map_err(|e| format!("cannot make a self-signed certificate: {e}"))
    };
    let installed = issued.and_then(|i| {
        let info = cert::parse_chain_pem(i.chain_pem.as_bytes()).map_err(|e| format!("the CA sent an unreadable certificate: {e}"))?;
        if !info.covers_exactly(&s.names) || !cert::key_matches(&i.key_pem, &info) {
            return Err(format!("the CA sent a certificate for {} that does not match the request; not installing it", info.names.join(", ")));
        }
        store::install(&s.cert_path, &s.key_path, &i.chain_pem, &i.key_pem)?;
        Ok(info)
    });

    match installed {
        Ok(info) => {
            st.record_success(now);
            st.record_issued(&info.serial, acme_mode.then_some(directory.as_str()));
            st.save(&s.state_dir)?;
            let reload = reload::reload_hearthd(&s.control_socket).await;
            Ok(Outcome::Renewed {
                serial: info.serial,
                not_after: info.not_after,
                reload,
            })
        }
        Err(e) => {
            let expires_in = trusted.map(|c| c.not_after - now);
            st.record_failure(now, &e, expires_in, state::random_u32());
            st.save(&s.state_dir)?;
            let kept = match trusted {
                Some(c) => format!(
                    "The current certificate is kept (valid until {}).",
                    fmt_time(c.not_after)
                ),
                None => "The box keeps its temporary self-signed certificate.".to_string(),
            };
            let next = st.next_attempt.unwrap_or(now);
            Err(format!(
                "{e}\n{kept} Next attempt after {} (in {}), or run `hearth-acme renew --force`.",
                fmt_time(next),
                fmt_span(next - now)
            ))
        }
    }
}

async fn obtain(
    s: &Settings,
    directory: &str,
    http: &Http,
    account: Option<instant_acme::Account>,
    replaces: Option<instant_acme::CertificateIdentifier<'static>>,
) -> Result<acme::Issued, String> {
    // A last guard for a CA that keeps an order pending forever: the run ends, is recorded as a
    // failure, and the timer tries again later.
    tokio::time::timeout(
        ORDER_TIMEOUT,
        obtain_inner(s, directory, http, account, replaces),
    )
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "The CA at {directory} did not complete the order within {} minutes.",
            ORDER_TIMEOUT.as_secs() / 60
        ))
    })
}

async fn obtain_inner(
    s: &Settings,
    directory: &str,
    http: &Http,
    account: Option<instant_acme::Account>,
    replaces: Option<instant_acme::CertificateIdentifier<'static>>,
) -> Result<acme::Issued, String> {
    let account = match account {
        Some(a) => a,
        None => acme::account(s, directory, http).await?,
    };
    match s.challenge {
        Challenge::Http01 => {
            acme::obtain(
                &account,
                &s.names,
                &Solver::Http01 {
                    webroot: &s.webroot,
                },
                replaces,
                directory,
            )
            .await
        }
        Challenge::Dns01 => {
            let cfg = s
                .dns
                .as_ref()
                .ok_or("acme.challenge is dns-01 but [acme.dns] is missing")?;
            let provider = crate::dns::provider(cfg, &s.domain, http)?;
            let propagation = cfg
                .propagation_secs
                .map(Duration::from_secs)
                .unwrap_or_else(|| provider.default_propagation());
            acme::obtain(
                &account,
                &s.names,
                &Solver::Dns01 {
                    provider: provider.as_ref(),
                    propagation,
                },
                replaces,
                directory,
            )
            .await
        }
        Challenge::SelfSigned => Err("self-signed mode does not use a CA".into()),
    }
}
