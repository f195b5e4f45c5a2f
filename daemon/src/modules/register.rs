//! XEP-0077: In-Band Registration, gated by `[registration] policy`, with XEP-0401 style invite
//! tokens (`urn:xmpp:pars:0` preauth) for the `invite` policy. After login the same namespace
//! changes the password or removes the account.

use super::{IqFuture, IqRequest, Module, PreAuthIq};
use crate::config::RegistrationPolicy;
use crate::hooks::{BoxFut, DiscoInfo, DiscoTarget, FeaturePhase, IqKind, IqRoute, IqTarget};
use crate::jid::normalize_local;
use crate::server::Server;
use crate::sessions::Kick;
use crate::stanza::{iq_result, StanzaError};
use crate::storage::{accounts_derive, StorageError};
use crate::xml::Element;
use std::sync::Arc;

pub const NS: &str = "jabber:iq:register";
pub const FEATURE_NS: &str = "http://jabber.org/features/iq-register";
pub const PARS_NS: &str = "urn:xmpp:pars:0";

/// Shortest password accepted; phones generate long ones, people should not pick "1234".
pub const MIN_PASSWORD: usize = 8;

pub struct Register;

/// An invite token checked earlier on this stream, for the registration that follows it.
#[derive(Default)]
struct InviteToken(Option<String>);

impl Module for Register {
    fn name(&self) -> &'static str {
        "register"
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Server {
            info.feature(NS);
        }
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[
            IqRoute::new(IqKind::Both, crate::hooks::SELF_OR_SERVER, NS),
            IqRoute::new(IqKind::Both, &[IqTarget::BeforeLogin], NS),
            IqRoute::new(IqKind::Set, &[IqTarget::BeforeLogin], PARS_NS),
        ];
        ROUTES
    }
    fn stream_features(&self, server: &Server, phase: FeaturePhase, out: &mut Vec<Element>) {
        if phase == FeaturePhase::BeforeAuth && offered(server) {
            out.push(Element::new("register", FEATURE_NS));
        }
    }
    fn handle_preauth_iq<'a>(&'a self, req: PreAuthIq<'a>) -> BoxFut<'a, Element> {
        Box::pin(async move {
            let token = &mut req.stream.get_or_default::<InviteToken>().0;
            handle_unauthenticated(req.server, req.iq, req.ip, token).await
        })
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            if req.to.local.is_some() && !req.to_self() {
                return Err(StanzaError::forbidden());
            }
            let user = req
                .from
                .local
                .clone()
                .ok_or_else(StanzaError::bad_request)?;
            let q = req.payload;
            if !req.is_set() {
                return Ok(Some(
                    Element::new("query", NS)
                        .with_child(Element::new("registered", NS))
                        .with_child(Element::new("username", NS).with_text(user)),
                ));
            }
            if q.child("remove", NS).is_some() {
                req.server
                    .storage
                    .delete_user(&user)
                    .await
                    .map_err(|_| StanzaError::internal())?;
                log::info!("account {user} removed by its owner");
                for s in req.server.sessions.sessions_of(&req.from.bare_string()) {
                    if s.jid != *req.from {
                        s.shared.kick(Kick::AccountGone);
                    }
                }
                return Ok(None);
            }
            let password = q
                .child("password", NS)
                .map(|p| p.text())
                .ok_or_else(StanzaError::bad_request)?;
            if let Some(name) = q.child("username", NS) {
                if normalize_local(&name.text()).ok().as_deref() != Some(user.as_str()) {
                    return Err(StanzaError::bad_request()
                        .with_text("you can only change your own password"));
                }
            }
            check_password(&password)?;
            let iterations = req.server.config.auth.scram_iterations;
            req.server
                .storage
                .set_password(&user, &password, iterations)
                .await
                .map_err(|_| StanzaError::internal())?;
            log::info!("password of {user} changed by its owner");
            Ok(None)
        })
    }
}

fn check_password(password: &str) -> Result<(), StanzaError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(
            StanzaError::new("modify", "not-acceptable").with_text(format!(
                "the password needs at least {MIN_PASSWORD} characters"
            )),
        );
    }
    Ok(())
}

/// Whether the stream features before login offer registration.
pub fn offered(server: &Server) -> bool {
    server.config.registration.policy != RegistrationPolicy::Closed
}

/// Handles `jabber:iq:register` and `urn:xmpp:pars:0` IQs on a TLS stream before login.
/// `token` carries a preauth token between the two IQs of the invite flow.
async fn handle_unauthenticated(
    server: &Arc<Server>,
    iq: &Element,
    peer: &str,
    token: &mut Option<String>,
) -> Element {
    let reply = match answer(server, iq, peer, token).await {
        Ok(payload) => iq_result(iq, payload),
        Err(e) => crate::stanza::error_reply(iq, &e).unwrap_or_else(|| iq_result(iq, None)),
    };
    let mut reply = reply;
    reply.remove_attr("from");
    reply.remove_attr("to");
    reply
}

async fn answer(
    server: &Arc<Server>,
    iq: &Element,
    peer: &str,
    token: &mut Option<String>,
) -> Result<Option<Element>, StanzaError> {
    let policy = server.config.registration.policy;
    let payload = iq.first_element().ok_or_else(StanzaError::bad_request)?;
    let is_set = iq.attr("type") == Some("set");
    if payload.is("preauth", PARS_NS) && is_set {
        let t = payload.attr("token").ok_or_else(StanzaError::bad_request)?;
        return match server.storage.check_invite(t).await {
            Ok(()) => {
                *token = Some(t.to_string());
                Ok(None)
            }
            Err(StorageError::Refused(why)) => Err(StanzaError::item_not_found().with_text(why)),
            Err(_) => Err(StanzaError::internal()),
        };
    }
    if !payload.is("query", NS) {
        return Err(StanzaError::service_unavailable());
    }
    if policy == RegistrationPolicy::Closed {
        return Err(StanzaError::not_allowed()
            .with_text("this server does not allow registration; ask its admin for an account"));
    }
    if !is_set {
        let text = match policy {
            RegistrationPolicy::Invite => {
                "Choose a user name and password. You need an invite from someone on this server."
            }
            _ => "Choose a user name and password.",
        };
        return Ok(Some(
            Element::new("query", NS)
                .with_child(Element::new("instructions", NS).with_text(text))
                .with_child(Element::new("username", NS))
                .with_child(Element::new("password", NS)),
        ));
    }
    let username = payload
        .child("username", NS)
        .map(|u| u.text())
        .ok_or_else(StanzaError::bad_request)?;
    let password = payload
        .child("password", NS)
        .map(|p| p.text())
        .ok_or_else(StanzaError::bad_request)?;
    let username = normalize_local(&username).map_err(|e| {
        StanzaError::new("modify", "not-acceptable")
            .with_text(format!("that user name cannot be used: {e}"))
    })?;
    check_password(&password)?;
    if policy == RegistrationPolicy::Open && server.registrations.is_blocked(peer) {
        return Err(StanzaError::new("wait", "resource-constraint")
            .with_text("too many new accounts from your address; try again later"));
    }
    let creds = accounts_derive(password, server.config.auth.scram_iterations)
        .await
        .map_err(|_| StanzaError::internal())?;
    let result = match policy {
        RegistrationPolicy::Invite => {
            let Some(t) = token.as_deref() else {
                return Err(StanzaError::forbidden()
                    .with_text("this server is invite-only: open your invite link to register"));
            };
            server
                .storage
                .register_with_invite(t, &username, creds)
                .await
        }
        _ => server.storage.register(&username, creds, false).await,
    };
    match result {
        Ok(()) => {
            server.registrations.record(peer);
            *token = None;
            log::info!("account {username} registered in-band");
            Ok(None)
        }
        Err(StorageError::Conflict(why)) => {
            Err(StanzaError::new("cancel", "conflict").with_text(why))
        }
        Err(StorageError::Refused(why)) => Err(StanzaError::forbidden().with_text(why)),
        Err(e) => {
            log::error!("registration of {username} failed: {e}");
            Err(StanzaError::internal())
        }
    }
}
