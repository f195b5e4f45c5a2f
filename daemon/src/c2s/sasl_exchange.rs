//! One SASL exchange on the wire (RFC 6120 §6): `<auth/>`, challenges and responses, then
//! `<success/>` or `<failure/>`. The mechanisms themselves live in `crate::sasl`; this file
//! adds the account lookup, authzid check and failure throttling.

use super::negotiate::next_stanza;
use super::stream;
use crate::jid::normalize_local;
use crate::sasl::{self, Mechanism, SaslCondition, SaslError, ScramHash, ScramServer};
use crate::server::Server;
use crate::xml::{ns, Element, XmlReader};
use tokio::io::{AsyncRead, AsyncWrite};

pub enum AuthOutcome {
    Success(String),
    Failure,
}

fn failure(condition: &str, text: &str) -> String {
    Element::new("failure", ns::SASL)
        .with_child(Element::new(condition, ns::SASL))
        .with_child(
            Element::new("text", ns::SASL)
                .with_attr("xml:lang", "en")
                .with_text(text),
        )
        .to_xml(ns::CLIENT)
}

/// Runs the exchange started by `auth`. None when the connection must end.
pub async fn authenticate<R, W>(
    server: &Server,
    reader: &mut XmlReader<R>,
    wr: &mut W,
    auth: &Element,
    offered: &[&'static str],
    cb_data: Option<Vec<u8>>,
    ip: &str,
) -> Option<AuthOutcome>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let name = auth.attr("mechanism").unwrap_or("");
    let mechanism = match Mechanism::from_name(name) {
        Some(m) if offered.contains(&name) => m,
        _ => {
            stream::send(
                wr,
                &failure("invalid-mechanism", "choose one of the offered mechanisms"),
            )
            .await
            .ok()?;
            return Some(AuthOutcome::Failure);
        }
    };
    if server.ip_failures.is_blocked(ip) {
        stream::send(
            wr,
            &failure(
                "temporary-auth-failure",
                "too many failed logins; wait a minute",
            ),
        )
        .await
        .ok()?;
        return Some(AuthOutcome::Failure);
    }
    let result = match mechanism {
        Mechanism::Scram { hash, plus } => {
            scram(server, reader, wr, auth, hash, plus, cb_data).await?
        }
        Mechanism::Plain => plain(server, auth).await,
    };
    match result {
        Ok((user, server_final)) => {
            let body = server_final
                .map(|f| sasl::encode_payload(&f))
                .unwrap_or_default();
            stream::send(
                wr,
                &format!("<success xmlns='{}'>{body}</success>", ns::SASL),
            )
            .await
            .ok()?;
            server.account_failures.clear(&user);
            Some(AuthOutcome::Success(user))
        }
        Err((user, e)) => {
            if e.kind() != SaslCondition::Aborted {
                server.ip_failures.record(ip);
                if let Some(u) = &user {
                    server.account_failures.record(u);
                }
                log::info!(
                    "login failed from {ip} for {:?}: {}",
                    user.as_deref().unwrap_or("?"),
                    e.text()
                );
            }
            stream::send(wr, &failure(e.condition(), e.text()))
                .await
                .ok()?;
            Some(AuthOutcome::Failure)
        }
    }
}

type Attempt = Result<(String, Option<Vec<u8>>), (Option<String>, SaslError)>;

fn check_authzid(authzid: Option<&str>, user: &str, domain: &str) -> Result<(), SaslError> {
    match authzid {
        None => Ok(()),
        Some(z) if z.eq_ignore_ascii_case(&format!("{user}@{domain}")) => Ok(()),
        Some(_) => Err(SaslError::new(
            SaslCondition::InvalidAuthzid,
            "you can only log in as yourself",
        )),
    }
}

async fn scram<R, W>(
    server: &Server,
    reader: &mut XmlReader<R>,
    wr: &mut W,
    auth: &Element,
    hash: ScramHash,
    plus: bool,
    cb_data: Option<Vec<u8>>,
) -> Option<Attempt>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut exchange = ScramServer::new(hash, plus, cb_data);
    let mut initial = match sasl::decode_payload(&auth.text()) {
        Ok(b) => b,
        Err(e) => return Some(Err((None, e))),
    };
    if initial.is_empty() {
        // No initial response: ask for it with an empty challenge (RFC 6120 §6.4.2).
        stream::send(wr, &format!("<challenge xmlns='{}'/>", ns::SASL))
            .await
            .ok()?;
        initial = match response(reader, wr).await? {
            Ok(b) => b,
            Err(e) => return Some(Err((None, e))),
        };
    }
    let first = match exchange.client_first(&initial) {
        Ok(f) => f,
        Err(e) => return Some(Err((None, e))),
    };
    let user = match normalize_local(&first.username) {
        Ok(u) => u,
        Err(_) => {
            // Still answer with a (fake) challenge so the name's validity leaks nothing.
            String::new()
        }
    };
    if let Err(e) = check_authzid(first.authzid.as_deref(), &user, server.domain()) {
        return Some(Err((Some(user), e)));
    }
    if !user.is_empty() && server.account_failures.is_blocked(&user) {
        let e = SaslError::new(
            SaslCondition::TemporaryAuthFailure,
            "too many failed logins for this account; wait a minute",
        );
        return Some(Err((Some(user), e)));
    }
    let cred = if user.is_empty() {
        None
    } else {
        server.storage.credential(&user, hash).await.ok().flatten()
    };
    let challenge = exchange.server_first(cred.as_ref());
    stream::send(
        wr,
        &format!(
            "<challenge xmlns='{}'>{}</challenge>",
            ns::SASL,
            sasl::encode_payload(&challenge)
        ),
    )
    .await
    .ok()?;
    let fin = match response(reader, wr).await? {
        Ok(b) => b,
        Err(e) => return Some(Err((Some(user), e))),
    };
    Some(match exchange.client_final(&fin) {
        Ok(server_final) if cred.is_some() => Ok((user, Some(server_final))),
        Ok(_) => Err((
            Some(user),
            SaslError::new(SaslCondition::NotAuthorized, "wrong user name or password"),
        )),
        Err(e) => Err((Some(user), e)),
    })
}

/// Reads a `<response/>` (or `<abort/>`), decoded.
async fn response<R, W>(reader: &mut XmlReader<R>, wr: &mut W) -> Option<Result<Vec<u8>, SaslError>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let el = next_stanza(reader, wr).await?;
    if el.is("abort", ns::SASL) {
        return Some(Err(SaslError::new(
            SaslCondition::Aborted,
            "the client aborted the login",
        )));
    }
    if !el.is("response", ns::SASL) {
        return Some(Err(SaslError::new(
            SaslCondition::MalformedRequest,
            "expected a SASL response",
        )));
    }
    Some(sasl::decode_payload(&el.text()))
}

async fn plain(server: &Server, auth: &Element) -> Attempt {
    let bytes = sasl::decode_payload(&auth.text()).map_err(|e| (None, e))?;
    let creds = sasl::parse_plain(&bytes).map_err(|e| (None, e))?;
    let user = normalize_local(&creds.username).unwrap_or_default();
    check_authzid(creds.authzid.as_deref(), &user, server.domain())
        .map_err(|e| (Some(user.clone()), e))?;
    if !user.is_empty() && server.account_failures.is_blocked(&user) {
        let e = SaslError::new(
            SaslCondition::TemporaryAuthFailure,
            "too many failed logins for this account; wait a minute",
        );
        return Err((Some(user), e));
    }
    let cred = if user.is_empty() {
        None
    } else {
        server
            .storage
            .credential(&user, ScramHash::Sha256)
            .await
            .ok()
            .flatten()
    };
    if sasl::check_plain_password(cred.as_ref(), &user, &creds.password) && cred.is_some() {
        Ok((user, None))
    } else {
        Err((
            Some(user),
            SaslError::new(SaslCondition::NotAuthorized, "wrong user name or password"),
        ))
    }
}
