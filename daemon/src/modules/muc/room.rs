//! One room's state and the pure rules of XEP-0045 about it: affiliations, roles, who may do
//! what, and the presence an occupant is shown with. Nothing here waits or writes; the service
//! task (`service.rs`) applies the decisions and persists what changed (`store.rs`).

use crate::jid::Jid;
use crate::xml::Element;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";

/// A long-lived relation of a bare JID to the room (XEP-0045 §5.2), strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affiliation {
    Owner,
    Admin,
    Member,
    None,
    Outcast,
}

impl Affiliation {
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "owner" => Affiliation::Owner,
            "admin" => Affiliation::Admin,
            "member" => Affiliation::Member,
            "none" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Admin => "admin",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }
    /// Owners and admins: they moderate and manage the member list.
    pub fn is_admin(self) -> bool {
        matches!(self, Affiliation::Owner | Affiliation::Admin)
    }
}

/// A role lasts for one visit (XEP-0045 §5.1), strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Moderator,
    Participant,
    Visitor,
    None,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "moderator" => Role::Moderator,
            "participant" => Role::Participant,
            "visitor" => Role::Visitor,
            "none" => Role::None,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Moderator => "moderator",
            Role::Participant => "participant",
            Role::Visitor => "visitor",
            Role::None => "none",
        }
    }
}

/// Who may see occupants' real JIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Whois {
    /// Semi-anonymous: only moderators.
    Moderators,
    /// Non-anonymous: everybody in the room.
    Anyone,
}

/// Who may send private messages through the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PmPolicy {
    Anyone,
    Participants,
    Moderators,
    None,
}

impl PmPolicy {
    pub fn parse(s: &str) -> Option<PmPolicy> {
        Some(match s {
            "anyone" => PmPolicy::Anyone,
            "participants" => PmPolicy::Participants,
            "moderators" => PmPolicy::Moderators,
            "none" => PmPolicy::None,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PmPolicy::Anyone => "anyone",
            PmPolicy::Participants => "participants",
            PmPolicy::Moderators => "moderators",
            PmPolicy::None => "none",
        }
    }
    pub fn allows(self, role: Role) -> bool {
        match self {
            PmPolicy::Anyone => role != Role::None,
            PmPolicy::Participants => matches!(role, Role::Participant | Role::Moderator),
            PmPolicy::Moderators => role == Role::Moderator,
            PmPolicy::None => false,
        }
    }
}

/// The owner's settings (the `muc#roomconfig` form, `form.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    pub password: Option<String>,
    pub whois: Whois,
    /// Occupants (not only admins) may invite others.
    pub allow_invites: bool,
    /// Participants (not only moderators) may change the subject.
    pub change_subject: bool,
    /// Messages sent to a joining occupant when it asks for no other amount.
    pub history_length: u32,
    pub max_users: u32,
    pub allow_pm: PmPolicy,
}

impl Default for RoomConfig {
    fn default() -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            whois: Whois::Moderators,
            allow_invites: false,
            change_subject: false,
            history_length: 20,
            max_users: 50,
            allow_pm: PmPolicy::Anyone,
        }
    }
}

/// One session of an occupant (several devices of one account share a nick).
#[derive(Debug, Clone)]
pub struct Session {
    pub jid: Jid,
    /// The children of its last presence worth showing (show, status, caps, avatar hash).
    pub presence: Vec<Element>,
}

#[derive(Debug, Clone)]
pub struct Occupant {
    pub nick: String,
    pub bare: Jid,
    pub role: Role,
    pub sessions: Vec<Session>,
}

impl Occupant {
    pub fn has_session(&self, full: &Jid) -> bool {
        self.sessions.iter().any(|s| &s.jid == full)
    }
}

/// A stored affiliation: the relation and, for members, the nick they registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affiliated {
    pub affiliation: Affiliation,
    pub nick: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Room {
    /// The room's localpart (its address is `name@service`).
    pub name: String,
    pub config: RoomConfig,
    /// By bare JID (as a string); absent means `none`.
    pub affiliations: HashMap<String, Affiliated>,
    /// In joining order.
    pub occupants: Vec<Occupant>,
    pub subject: String,
    pub subject_by: String,
    /// Created and not yet configured: only its owner may enter (XEP-0045 §10.1.1).
    pub locked: bool,
    /// Per-room secret for XEP-0421 occupant ids.
    pub salt: String,
    /// XEP-0153 SHA-1 of the room's vCard photo.
    pub avatar_hash: Option<String>,
}

impl Room {
    pub fn new(name: &str, owner: &Jid, config: RoomConfig, salt: String) -> Room {
        let mut affiliations = HashMap::new();
        affiliations.insert(
            owner.bare_string(),
            Affiliated {
                affiliation: Affiliation::Owner,
                nick: None,
                reason: None,
            },
        );
        Room {
            name: name.to_string(),
            config,
            affiliations,
            occupants: Vec::new(),
            subject: String::new(),
            subject_by: String::new(),
            locked: false,
            salt,
            avatar_hash: None,
        }
    }

    pub fn affiliation(&self, bare: &str) -> Affiliation {
        self.affiliations
            .get(bare)
            .map(|a| a.affiliation)
            .unwrap_or(Affiliation::None)
    }

    pub fn owners(&self) -> usize {
        self.affiliations
            .values()
            .filter(|a| a.affiliation == Affiliation::Owner)
            .count()
    }

    pub fn by_nick(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.nick == nick)
    }
    pub fn by_nick_mut(&mut self, nick: &str) -> Option<&mut Occupant> {
        self.occupants.iter_mut().find(|o| o.nick == nick)
    }
    pub fn by_session(&self, full: &Jid) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.has_session(full))
    }
    pub fn by_bare(&self, bare: &Jid) -> Option<&Occupant> {
        self.occupants.iter().find(|o| &o.bare == bare)
    }

    /// The role an entering occupant with this affiliation gets (XEP-0045 §5.1.2 defaults).
    pub fn default_role(&self, aff: Affiliation) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// Whether `viewer` sees occupants' real JIDs.
    pub fn shows_jids_to(&self, viewer_role: Role) -> bool {
        self.config.whois == Whois::Anyone || viewer_role == Role::Moderator
    }

    /// XEP-0421: a stable id for an account in this room that reveals nothing about it.
    pub fn occupant_id(&self, bare: &Jid) -> String {
        use base64::Engine;
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.salt.as_bytes());
        h.update([0]);
        h.update(bare.bare_string().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(&h.finalize()[..18])
    }

    /// The `<x xmlns='…muc#user'/>` item describing `o` to a viewer with `viewer_role`.
    pub fn item(&self, o: &Occupant, viewer_role: Role) -> Element {
        let mut item = Element::new("item", NS_USER)
            .with_attr(
                "affiliation",
                self.affiliation(&o.bare.bare_string()).as_str(),
            )
            .with_attr("role", o.role.as_str());
        if self.shows_jids_to(viewer_role) {
            item.set_attr("jid", o.bare.bare_string());
        }
        item
    }

    /// The presence of occupant `o` as a viewer sees it, with the given status codes.
    pub fn presence_of(
        &self,
        service: &str,
        o: &Occupant,
        viewer_role: Role,
        unavailable: bool,
        codes: &[u16],
    ) -> Element {
        let mut p = Element::new("presence", crate::xml::ns::CLIENT)
            .with_attr("from", format!("{}@{service}/{}", self.name, o.nick));
        if unavailable {
            p.set_attr("type", "unavailable");
        } else if let Some(s) = o.sessions.last() {
            for c in &s.presence {
                p.push_child(c.clone());
            }
        }
        let mut x = Element::new("x", NS_USER).with_child(self.item(o, viewer_role));
        for c in codes {
            x.push_child(Element::new("status", NS_USER).with_attr("code", c.to_string()));
        }
        p.push_child(x);
        p.push_child(
            Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", self.occupant_id(&o.bare)),
        );
        p
    }

    /// Status codes every self-presence on entering carries (XEP-0045 §7.2.2–§7.2.12).
    pub fn entry_codes(&self) -> Vec<u16> {
        let mut codes = vec![110];
        if self.config.whois == Whois::Anyone {
            codes.push(100);
        }
        // Every room keeps an archive (XEP-0313 on the room), which §7.2.12 asks to say.
        codes.push(170);
        codes
    }
}

/// Why someone may not enter, as the error the joining client gets (XEP-0045 §7.2.6–§7.2.9).
pub fn entry_refusal(
    room: &Room,
    bare: &Jid,
    nick: &str,
    password: Option<&str>,
) -> Option<crate::stanza::StanzaError> {
    use crate::stanza::StanzaError;
    let aff = room.affiliation(&bare.bare_string());
    if aff == Affiliation::Outcast {
        return Some(StanzaError::forbidden().with_text("you are banned from this room"));
    }
    if room.locked && aff != Affiliation::Owner {
        return Some(
            StanzaError::item_not_found().with_text("the room is being set up by its owner"),
        );
    }
    if room.config.members_only && aff == Affiliation::None {
        return Some(
            StanzaError::new("auth", "registration-required")
                .with_text("this room is for members only"),
        );
    }
    if let Some(other) = room.by_nick(nick) {
        if &other.bare != bare {
            return Some(
                StanzaError::new("cancel", "conflict").with_text("that nickname is in use"),
            );
        }
    }
    let reserved_by_other = room
        .affiliations
        .iter()
        .any(|(j, a)| a.nick.as_deref() == Some(nick) && *j != bare.bare_string());
    if reserved_by_other {
        return Some(StanzaError::new("cancel", "conflict").with_text("that nickname is reserved"));
    }
    if let Some(pw) = &room.config.password {
        if !aff.is_admin() && password != Some(pw.as_str()) {
            return Some(
                StanzaError::new("auth", "not-authorized").with_text("the room needs a password"),
            );
        }
    }
    let full = room.occupants.len() as u32 >= room.config.max_users;
    if full && !aff.is_admin() && room.by_bare(bare).is_none() {
        return Some(StanzaError::new("wait", "service-unavailable").with_text("the room is full"));
    }
    None
}

/// Whether an actor may give `target` (now `old`) the role `new` (XEP-0045 §8.4–§8.6,
/// §9.6–§9.7): moderators kick and grant or revoke voice, admins grant or revoke moderation,
/// and nobody changes the role of an admin or owner (they are always moderators).
pub fn may_set_role(
    actor_aff: Affiliation,
    actor_role: Role,
    target_aff: Affiliation,
    old: Role,
    new: Role,
) -> bool {
    if actor_role != Role::Moderator || target_aff.is_admin() {
        return false;
    }
    if new == Role::Moderator || old == Role::Moderator {
        return actor_aff.is_admin();
    }
    true
}

/// Whether an actor may change `target` from `old` to `new` affiliation (§9, §10).
pub fn may_set_affiliation(actor: Affiliation, old: Affiliation, new: Affiliation) -> bool {
    match actor {
        Affiliation::Owner => true,
        // Admins manage members and outcasts, never owners or other admins.
        Affiliation::Admin => !old.is_admin() && !new.is_admin(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn room() -> Room {
        let mut r = Room::new("r", &jid("owner@x"), RoomConfig::default(), "salt".into());
        r.occupants.push(Occupant {
            nick: "Bob".into(),
            bare: jid("bob@x"),
            role: Role::Participant,
            sessions: vec![Session {
                jid: jid("bob@x/pc"),
                presence: Vec::new(),
            }],
        });
        r
    }

    #[test]
    fn roles_follow_the_moderation_rules() {
        use Affiliation as A;
        use Role as R;
        // A moderator kicks and silences participants, but only admins make moderators.
        assert!(may_set_role(
            A::None,
            R::Moderator,
            A::None,
            R::Participant,
            R::None
        ));
        assert!(may_set_role(
            A::Member,
            R::Moderator,
            A::None,
            R::Participant,
            R::Visitor
        ));
        assert!(!may_set_role(
            A::Member,
            R::Moderator,
            A::None,
            R::Participant,
            R::Moderator
        ));
        assert!(may_set_role(
            A::Admin,
            R::Moderator,
            A::None,
            R::Participant,
            R::Moderator
        ));
        assert!(!may_set_role(
            A::Member,
            R::Moderator,
            A::None,
            R::Moderator,
            R::Participant
        ));
        // Nobody touches admins' or owners' roles; participants touch nobody's.
        assert!(!may_set_role(
            A::Owner,
            R::Moderator,
            A::Admin,
            R::Moderator,
            R::None
        ));
        assert!(!may_set_role(
            A::Member,
            R::Participant,
            A::None,
            R::Visitor,
            R::Participant
        ));
    }

    #[test]
    fn affiliations_follow_the_ownership_rules() {
        use Affiliation as A;
        assert!(may_set_affiliation(A::Owner, A::None, A::Owner));
        assert!(may_set_affiliation(A::Admin, A::Member, A::Outcast));
        assert!(!may_set_affiliation(A::Admin, A::Admin, A::None));
        assert!(!may_set_affiliation(A::Admin, A::None, A::Admin));
        assert!(!may_set_affiliation(A::Member, A::None, A::Member));
    }

    #[test]
    fn entering_is_refused_for_the_right_reason() {
        let mut r = room();
        let carol = jid("carol@x");
        assert!(entry_refusal(&r, &carol, "Carol", None).is_none());
        assert_eq!(
            entry_refusal(&r, &carol, "Bob", None).unwrap().condition,
            "conflict"
        );
        assert!(
            entry_refusal(&r, &jid("bob@x"), "Bob", None).is_none(),
            "another device"
        );
        r.config.password = Some("pw".into());
        assert_eq!(
            entry_refusal(&r, &carol, "Carol", None).unwrap().condition,
            "not-authorized"
        );
        assert!(entry_refusal(&r, &carol, "Carol", Some("pw")).is_none());
        assert!(
            entry_refusal(&r, &jid("owner@x"), "O", None).is_none(),
            "owners need none"
        );
        r.config.password = None;
        r.config.max_users = 1;
        assert_eq!(
            entry_refusal(&r, &carol, "Carol", None).unwrap().condition,
            "service-unavailable"
        );
        r.config.members_only = true;
        assert_eq!(
            entry_refusal(&r, &carol, "Carol", None).unwrap().condition,
            "registration-required"
        );
        r.affiliations.insert(
            "carol@x".into(),
            Affiliated {
                affiliation: Affiliation::Outcast,
                nick: None,
                reason: None,
            },
        );
        assert_eq!(
            entry_refusal(&r, &carol, "Carol", None).unwrap().condition,
            "forbidden"
        );
        r.locked = true;
        assert_eq!(
            entry_refusal(&r, &jid("dave@x"), "D", None)
                .unwrap()
                .condition,
            "item-not-found"
        );
    }

    #[test]
    fn occupant_ids_are_stable_per_room_and_differ_between_rooms() {
        let r = room();
        let mut other = room();
        other.salt = "other".into();
        let bob = jid("bob@x/phone");
        assert_eq!(r.occupant_id(&bob), r.occupant_id(&jid("bob@x/laptop")));
        assert_ne!(r.occupant_id(&bob), other.occupant_id(&bob));
        assert_ne!(r.occupant_id(&bob), r.occupant_id(&jid("carol@x")));
    }

    #[test]
    fn private_message_policies() {
        assert!(PmPolicy::Anyone.allows(Role::Visitor));
        assert!(!PmPolicy::Participants.allows(Role::Visitor));
        assert!(PmPolicy::Moderators.allows(Role::Moderator));
        assert!(!PmPolicy::None.allows(Role::Moderator));
    }
}
