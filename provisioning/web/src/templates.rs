//! The pages, as askama templates compiled into the binary (no template files at run time).

use crate::forms::Errors;
use askama::Template;

#[derive(Template)]
#[template(path = "message.html")]
pub struct Message {
    pub title: String,
    pub heading: String,
    pub text: String,
    pub href: String,
    pub link: String,
}

/// A chat app to recommend, with where to get it.
pub struct App {
    pub name: &'static str,
    pub platforms: &'static str,
    pub url: &'static str,
}

/// The clients the issue names; they all understand `xmpp:` invite links and OMEMO.
pub const APPS: &[App] = &[
    App {
        name: "Conversations",
        platforms: "Android",
        url: "https://conversations.im/",
    },
    App {
        name: "Monal",
        platforms: "iPhone, iPad, Mac",
        url: "https://monal-im.org/",
    },
    App {
        name: "Gajim",
        platforms: "Windows, Linux",
        url: "https://gajim.org/",
    },
    App {
        name: "Dino",
        platforms: "Linux",
        url: "https://dino.im/",
    },
];

// ---- wizard ----

#[derive(Template)]
#[template(path = "wizard/code.html")]
pub struct CodePage {
    pub title: &'static str,
    pub csrf: String,
    pub errors: Errors,
    pub locked: Option<String>,
}

#[derive(Template)]
#[template(path = "wizard/name.html")]
pub struct NamePage {
    pub title: &'static str,
    pub csrf: String,
    pub errors: Errors,
    pub kind: String,
    pub domain: String,
    pub lan_text: String,
}

#[derive(Template)]
#[template(path = "wizard/admin.html")]
pub struct AdminPage {
    pub title: &'static str,
    pub csrf: String,
    pub errors: Errors,
    pub username: String,
    pub domain: String,
}

#[derive(Template)]
#[template(path = "wizard/join.html")]
pub struct JoinPage {
    pub title: &'static str,
    pub csrf: String,
    pub errors: Errors,
    pub policy: String,
}

#[derive(Template)]
#[template(path = "wizard/cert.html")]
pub struct CertPage {
    pub title: &'static str,
    pub csrf: String,
    pub errors: Errors,
    pub lan: bool,
    pub domain: String,
    pub mode: String,
    pub email: String,
    pub dns_provider: String,
    pub providers: &'static [(&'static str, &'static str)],
    pub failure: Option<String>,
}

#[derive(Template)]
#[template(path = "wizard/ports.html")]
pub struct PortsPage {
    pub title: &'static str,
    pub csrf: String,
    pub domain: String,
    pub no_dns: bool,
    pub addresses: String,
    pub detail: String,
    pub lan_ip: String,
    pub forwards: &'static [(&'static str, &'static str, &'static str)],
}

#[derive(Template)]
#[template(path = "wizard/done.html")]
pub struct DonePage {
    pub title: &'static str,
    pub admin_jid: String,
    pub invite_uri: String,
    pub invite_url: String,
    pub qr: String,
    pub acme: bool,
    pub apps: &'static [App],
}

#[derive(Template)]
#[template(path = "wizard/restore.html")]
pub struct RestorePage {
    pub title: &'static str,
    pub csrf: String,
    pub errors: Errors,
}

// ---- admin ----

#[derive(Template)]
#[template(path = "admin/login.html")]
pub struct LoginPage {
    pub title: &'static str,
    pub csrf: String,
    pub errors: Errors,
    pub username: String,
    pub flash: Option<String>,
}

pub struct CertView {
    pub names: String,
    pub issuer: String,
    pub self_signed: bool,
    pub not_after: String,
    pub days_left: i64,
}

pub struct DiskView {
    pub free: String,
    pub total: String,
    pub used_percent: u64,
    pub database: String,
    pub uploads: String,
}

#[derive(Template)]
#[template(path = "admin/home.html")]
pub struct HomePage {
    pub title: &'static str,
    pub nav: &'static str,
    pub csrf: String,
    pub flash: Option<String>,
    pub admin: String,
    pub domain: String,
    pub hearthd: bool,
    pub users: usize,
    /// Whether other XMPP servers can reach accounts here (`[s2s] enabled`).
    pub federation: bool,
    pub cert: Option<CertView>,
    pub cert_error: Option<String>,
    pub challenge: String,
    pub disk: Option<DiskView>,
}

pub struct UserRow {
    pub name: String,
    pub jid: String,
    pub admin: bool,
    pub created: String,
    pub is_me: bool,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
pub struct UsersPage {
    pub title: &'static str,
    pub nav: &'static str,
    pub csrf: String,
    pub flash: Option<String>,
    pub errors: Errors,
    pub users: Vec<UserRow>,
    pub new_name: String,
    pub name_hint: String,
    /// Which form the errors belong to: "add" or the user whose password was being reset.
    pub form: String,
}

/// One group chat room on the admin page.
pub struct RoomRow {
    pub name: String,
    pub jid: String,
    pub title: String,
    pub members: u32,
    pub last_activity: String,
}

#[derive(Template)]
#[template(path = "admin/rooms.html")]
pub struct RoomsPage {
    pub title: &'static str,
    pub nav: &'static str,
    pub csrf: String,
    pub flash: Option<String>,
    pub rooms: Vec<RoomRow>,
}

pub struct InviteRow {
    pub id: i64,
    pub note: String,
    pub created: String,
    pub expires: String,
    pub state: &'static str,
    pub usable: bool,
}

pub struct NewInviteView {
    pub uri: String,
    pub url: String,
    pub qr: String,
}

#[derive(Template)]
#[template(path = "admin/invites.html")]
pub struct InvitesPage {
    pub title: &'static str,
    pub nav: &'static str,
    pub csrf: String,
    pub flash: Option<String>,
    pub errors: Errors,
    pub invites: Vec<InviteRow>,
    pub created: Option<NewInviteView>,
}

pub struct SshKeyRow {
    pub kind: String,
    pub comment: String,
    pub fingerprint: String,
}

#[derive(Template)]
#[template(path = "admin/ssh.html")]
pub struct SshPage {
    pub title: &'static str,
    pub nav: &'static str,
    pub csrf: String,
    pub flash: Option<String>,
    pub errors: Errors,
    /// `ssh root@hearth.local`: the command to type.
    pub login: String,
    pub keys: Vec<SshKeyRow>,
    /// What was typed into the form, kept when it was refused.
    pub key_input: String,
}

#[derive(Template)]
#[template(path = "admin/backup.html")]
pub struct BackupPage {
    pub title: &'static str,
    pub nav: &'static str,
    pub csrf: String,
    pub flash: Option<String>,
    pub errors: Errors,
}

// ---- invite landing ----

#[derive(Template)]
#[template(path = "invite.html")]
pub struct InvitePage {
    pub title: &'static str,
    pub csrf: String,
    pub errors: Errors,
    pub domain: String,
    pub token: String,
    pub uri: String,
    pub qr: String,
    pub problem: Option<String>,
    pub username: String,
    pub name_hint: String,
    pub apps: &'static [App],
}

#[derive(Template)]
#[template(path = "invite_done.html")]
pub struct InviteDone {
    pub title: &'static str,
    pub jid: String,
    pub apps: &'static [App],
}

#[derive(Template)]
#[template(path = "admin/uploads.html")]
pub struct UploadsPage {
    pub title: &'static str,
    pub nav: &'static str,
    pub csrf: String,
    pub flash: Option<String>,
    pub enabled: bool,
    /// "3 files, 12 MiB in all, from 2 accounts.", empty when hearthd does not answer.
    pub summary: String,
    pub dir: String,
    pub fields: crate::admin::uploads::LimitFields,
    pub errors: Errors,
}
