//! One ACME (RFC 8555) issuance through instant-acme: account, order, challenges through the
//! webroot or a DNS provider, a CSR with a fresh ECDSA P-256 key, and the chain. Also ARI
//! (RFC 9773) look-ups for the renewal policy.

use crate::config::{Challenge, Settings};
use crate::dns::{challenge_name, DnsProvider, TxtRecord};
use crate::explain::{acme_error, challenge_failure};
use crate::http::Http;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeStatus,
    ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the CA may take to validate and to sign. Let's Encrypt needs seconds; a slow CA past
/// this is reported and retried on the next run.
const VALIDATION: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(500))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// A freshly issued pair.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// How challenges are answered.
pub enum Solver<'a> {
    Http01 {
        webroot: &'a Path,
    },
    Dns01 {
        provider: &'a dyn DnsProvider,
        propagation: Duration,
    },
}

impl Solver<'_> {
    fn kind(&self) -> (ChallengeType, Challenge) {
        match self {
            Solver::Http01 { .. } => (ChallengeType::Http01, Challenge::Http01),
            Solver::Dns01 { .. } => (ChallengeType::Dns01, Challenge::Dns01),
        }
    }
}

/// The account file for a directory: one per CA, so switching to staging and back keeps both.
fn account_path(state_dir: &Path, directory: &str) -> PathBuf {
    let hash = directory.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
    });
    state_dir.join(format!("account-{hash:016x}.json"))
}

/// Loads the account for `directory`, or registers one and saves its key (mode 0600).
pub async fn account(s: &Settings, directory: &str, http: &Http) -> Result<Account, String> {
    let path = account_path(&s.state_dir, directory);
    let builder = Account::builder_with_http(Box::new(http.clone()));
    if let Ok(bytes) = std::fs::read(&path) {
        let creds: AccountCredentials = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is damaged ({e}); delete it to register again",
                path.display()
            )
        })?;
        return builder
            .from_credentials(creds)
            .await
            .map_err(|e| acme_error(directory, &e));
    }
    let contact = s.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, creds) = builder
        .create(&new, directory.to_string(), None)
        .await
        .map_err(|e| acme_error(directory, &e))?;
    std::fs::create_dir_all(&s.state_dir)
        .map_err(|e| format!("cannot create {}: {e}", s.state_dir.display()))?;
    let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    hearthd::fsutil::write_atomically(&path, &json, 0o600)
        .map_err(|e| format!("cannot save the ACME account in {}: {e}", path.display()))?;
    log::info!("registered a new ACME account at {directory}");
    Ok(account)
}

/// The ARI identifier of a certificate (authority key id + serial).
pub fn cert_id(leaf_der: &[u8]) -> Option<CertificateIdentifier<'static>> {
    let der = rustls_pki_types::CertificateDer::from(leaf_der.to_vec());
    CertificateIdentifier::try_from(&der)
        .ok()
        .map(CertificateIdentifier::into_owned)
}

/// The CA's suggested renewal window and when to ask again, or None when the CA has no ARI.
pub async fn renewal_window(
    account: &Account,
    leaf_der: &[u8],
) -> Option<(i64, i64, Option<String>, Duration)> {
    let id = cert_id(leaf_der)?;
    match account.renewal_info(&id).await {
        Ok((info, retry)) => Some((
            info.suggested_window.start.unix_timestamp(),
            info.suggested_window.end.unix_timestamp(),
            info.explanation_url,
            retry,
        )),
        Err(instant_acme::Error::Unsupported(_)) => None,
        Err(e) => {
            log::warn!("could not fetch renewal information (ARI): {e}; using the lifetime rule");
            None
        }
    }
}

/// One pending challenge, remembered between publishing and telling the CA to look.
struct Pending {
    name: String,
    token: String,
    key_auth: String,
    dns_value: String,
}

/// Runs one order to the end. Whatever was published (token files, TXT records) is removed
/// afterwards, whether the order succeeded or not.
pub async fn obtain(
    account: &Account,
    names: &[String],
    solver: &Solver<'_>,
    replaces: Option<CertificateIdentifier<'static>>,
    directory: &str,
) -> Result<Issued, String> {
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let plain = NewOrder::new(&ids);
    let mut order = match replaces {
        // `replaces` (RFC 9773) only earns friendlier rate limits; if the CA refuses it (say the
        // old certificate was already replaced), an ordinary order is still what we need.
        Some(r) => match account.new_order(&NewOrder::new(&ids).replaces(r)).await {
            Ok(o) => o,
            Err(e) => {
                log::warn!("the CA refused an order replacing the current certificate ({e}); ordering afresh");
                account
                    .new_order(&plain)
                    .await
                    .map_err(|e| acme_error(directory, &e))?
            }
        },
        None => account
            .new_order(&plain)
            .await
            .map_err(|e| acme_error(directory, &e))?,
    };
    let (ctype, challenge) = solver.kind();

    // Pass 1: learn what to publish.
    let mut pending = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| acme_error(directory, &e))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(format!(
                        "the CA reports authorization for {} as {other:?}",
                        authz.identifier()
                    ))
                }
            }
            let name = authz.identifier().to_string();
            let ch = authz.challenge(ctype.clone()).ok_or_else(|| {
                format!(
                    "the CA offers no {} challenge for {name}",
                    challenge.as_str()
                )
            })?;
            let key_auth = ch.key_authorization();
            pending.push(Pending {
                name,
                token: ch.token.clone(),
                key_auth: key_auth.as_str().to_string(),
                dns_value: key_auth.dns_value(),
            });
        }
    }

    let result = match solver {
        Solver::Http01 { webroot } => {
            publish_tokens(webroot, &pending)?;
            let r = validate(&mut order, &pending, solver, None).await;
            remove_tokens(webroot, &pending);
            r
        }
        Solver::Dns01 {
            provider,
            propagation,
        } => {
            let records: Vec<TxtRecord> = pending
                .iter()
                .map(|p| TxtRecord {
                    fqdn: challenge_name(&p.name),
                    value: p.dns_value.clone(),
                })
                .collect();
            let r = if provider.one_at_a_time() {
                let mut r = Ok(());
                for (i, rec) in records.iter().enumerate() {
                    r = publish_and_validate(
                        &mut order,
                        &pending[i..=i],
                        std::slice::from_ref(rec),
                        solver,
                        *provider,
                        *propagation,
                    )
                    .await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            } else {
                publish_and_validate(
                    &mut order,
                    &pending,
                    &records,
                    solver,
                    *provider,
                    *propagation,
                )
                .await
            };
            r
        }
    };
    result?;
    finish(&mut order, names, directory).await
}

async fn publish_and_validate(
    order: &mut instant_acme::Order,
    pending: &[Pending],
    records: &[TxtRecord],
    solver: &Solver<'_>,
    provider: &dyn DnsProvider,
    propagation: Duration,
) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    provider
        .set_txt(records)
        .await
        .map_err(|e| format!("{} could not publish the TXT records: {e}", provider.name()))?;
    if !propagation.is_zero() {
        log::info!(
            "waiting {}s for {} to publish the TXT records",
            propagation.as_secs(),
            provider.name()
        );
        tokio::time::sleep(propagation).await;
    }
    let only: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
    let r = validate(order, pending, solver, Some(&only)).await;
    if let Err(e) = provider.clear_txt(records).await {
        log::warn!("could not remove the TXT records again: {e}");
    }
    r
}

/// Pass 2: tell the CA to look, then wait until every challenge in `pending` is decided.
/// `only` limits this to some names (DuckDNS validates one name at a time).
async fn validate(
    order: &mut instant_acme::Order,
    pending: &[Pending],
    solver: &Solver<'_>,
    only: Option<&[&str]>,
) -> Result<(), String> {
    let (ctype, challenge) = solver.kind();
    let wanted =
        |n: &str| pending.iter().any(|p| p.name == n) && only.is_none_or(|o| o.contains(&n));
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| format!("the CA: {e}"))?;
            let name = authz.identifier().to_string();
            if authz.status != AuthorizationStatus::Pending || !wanted(&name) {
                continue;
            }
            if let Some(mut ch) = authz.challenge(ctype.clone()) {
                ch.set_ready()
                    .await
                    .map_err(|e| format!("the CA did not accept the challenge for {name}: {e}"))?;
            }
        }
    }
    // Poll each authorization until it is decided; this names the failing name and the reason,
    // which the order's own status would not.
    let webroot = match solver {
        Solver::Http01 { webroot } => webroot.display().to_string(),
        Solver::Dns01 { .. } => String::new(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut delay = Duration::from_millis(250);
    loop {
        let mut undecided = false;
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| format!("the CA: {e}"))?;
            let name = authz.identifier().to_string();
            if !wanted(&name) {
                continue;
            }
            // The order caches each authorization; only a refresh shows the CA's verdict.
            let authz = authz.refresh().await.map_err(|e| format!("the CA: {e}"))?;
            match authz.status {
                AuthorizationStatus::Valid => {}
                AuthorizationStatus::Pending => undecided = true,
                _ => {
                    let ch = authz.challenges.iter().find(|c| c.r#type == ctype);
                    return Err(match ch.and_then(|c| c.error.as_ref()) {
                        Some(p) => challenge_failure(&name, challenge, &webroot, p),
                        None => format!(
                            "The CA did not validate {name} ({:?}).",
                            ch.map(|c| &c.status).unwrap_or(&ChallengeStatus::Invalid)
                        ),
                    });
                }
            }
        }
        if !undecided {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(
                "The CA did not finish validating within two minutes; the next run tries again."
                    .into(),
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Finalize with our own CSR (ECDSA P-256, all names) and download the chain.
async fn finish(
    order: &mut instant_acme::Order,
    names: &[String],
    directory: &str,
) -> Result<Issued, String> {
    let status = order
        .poll_ready(&VALIDATION)
        .await
        .map_err(|e| acme_error(directory, &e))?;
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_else(|| format!("{status:?}"));
        return Err(format!("The CA did not make the order ready: {why}."));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("cannot make a CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("cannot make a CSR: {e}"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| acme_error(directory, &e))?;
    let chain_pem = order
        .poll_certificate(&VALIDATION)
        .await
        .map_err(|e| acme_error(directory, &e))?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

fn token_dir(webroot: &Path) -> PathBuf {
    webroot.join(".well-known").join("acme-challenge")
}

fn publish_tokens(webroot: &Path, pending: &[Pending]) -> Result<(), String> {
    let dir = token_dir(webroot);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the webroot directory {}: {e}", dir.display()))?;
    for p in pending {
        // Tokens are base64url by RFC 8555; refuse anything that could escape the directory.
        if p.token.is_empty()
            || !p
                .token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("the CA sent an unusable token {:?}", p.token));
        }
        let path = dir.join(&p.token);
        hearthd::fsutil::write_atomically(&path, p.key_auth.as_bytes(), 0o644)
            .map_err(|e| format!("cannot write the challenge file {}: {e}", path.display()))?;
    }
    Ok(())
}

fn remove_tokens(webroot: &Path, pending: &[Pending]) {
    for p in pending {
        let _ = std::fs::remove_file(token_dir(webroot).join(&p.token));
    }
}
