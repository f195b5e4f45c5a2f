//! Rosters (RFC 6121 §2) and subscription state (§3). The state machine lives in the presence
//! module; this file only keeps what it decides, with one version counter per account for
//! roster versioning (XEP-0237).

use super::{Result, Storage};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Subscription {
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
    pub fn parse(s: &str) -> Subscription {
        match s {
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => Subscription::None,
        }
    }
    /// The user sees the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }
    /// The contact sees the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
    pub fn with_to(self, on: bool) -> Subscription {
        Subscription::from_flags(on, self.has_from())
    }
    pub fn with_from(self, on: bool) -> Subscription {
        Subscription::from_flags(self.has_to(), on)
    }
    fn from_flags(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (true, true) => Subscription::Both,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (false, false) => Subscription::None,
        }
    }
}

/// One contact of one account. `in_roster == false` rows only remember an inbound subscription
/// request from someone the user has not added (RFC 6121 §3.1.3: such requests are kept and
/// re-delivered, but do not create roster items).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    pub contact: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// We asked the contact for their presence and they have not answered (`ask='subscribe'`).
    pub ask: bool,
    /// The contact asked for our presence and the user has not answered.
    pub pending_in: bool,
    pub groups: Vec<String>,
    pub in_roster: bool,
}

impl RosterItem {
    pub fn new(contact: &str) -> RosterItem {
        RosterItem {
            contact: contact.to_string(),
            name: None,
            subscription: Subscription::None,
            ask: false,
            pending_in: false,
            groups: Vec::new(),
            in_roster: false,
        }
    }
}

fn row_to_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<RosterItem> {
    let groups: String = r.get(5)?;
    Ok(RosterItem {
        contact: r.get(0)?,
        name: r.get(1)?,
        subscription: Subscription::parse(&r.get::<_, String>(2)?),
        ask: r.get(3)?,
        pending_in: r.get(4)?,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        in_roster: r.get(6)?,
    })
}

const COLUMNS: &str = "contact, name, subscription, ask, pending_in, groups, in_roster";

fn bump_version(conn: &Connection, username: &str) -> Result<i64> {
    conn.execute(
        "UPDATE users SET roster_ver = roster_ver + 1 WHERE username = ?1",
        [username],
    )?;
    Ok(conn.query_row(
        "SELECT roster_ver FROM users WHERE username = ?1",
        [username],
        |r| r.get(0),
    )?)
}

impl Storage {
    /// The visible roster and its version.
    pub async fn roster(&self, username: &str) -> Result<(i64, Vec<RosterItem>)> {
        let username = username.to_string();
        self.call(move |conn| {
            let ver: i64 = conn
                .query_row("SELECT roster_ver FROM users WHERE username = ?1", [&username], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let mut st = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM roster WHERE username = ?1 AND in_roster = 1 ORDER BY contact"
            ))?;
            let items = st.query_map([&username], row_to_item)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((ver, items))
        })
        .await
    }

    /// One contact's state, including a pending request from a non-contact.
    pub async fn roster_item(&self, username: &str, contact: &str) -> Result<Option<RosterItem>> {
        let (username, contact) = (username.to_string(), contact.to_string());
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM roster WHERE username = ?1 AND contact = ?2"),
                    [&username, &contact],
                    row_to_item,
                )
                .optional()?)
        })
        .await
    }

    /// Inbound subscription requests the user has not answered yet.
    pub async fn pending_subscriptions(&self, username: &str) -> Result<Vec<String>> {
        let username = username.to_string();
        self.call(move |conn| {
            let mut st = conn.prepare("SELECT contact FROM roster WHERE username = ?1 AND pending_in = 1 ORDER BY contact")?;
            let rows = st.query_map([&username], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    /// Stores an item's new state (deleting rows that no longer carry anything) and returns the
    /// new roster version.
    pub async fn save_roster_item(&self, username: &str, item: RosterItem) -> Result<i64> {
        let username = username.to_string();
        self.call(move |conn| {
            let empty = !item.in_roster && !item.pending_in;
            if empty {
                conn.execute("DELETE FROM roster WHERE username = ?1 AND contact = ?2", [&username, &item.contact])?;
            } else {
                conn.execute(
                    "INSERT OR REPLACE INTO roster (username, contact, name, subscription, ask, pending_in, groups, in_roster)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        username,
                        item.contact,
                        item.name,
                        item.subscription.as_str(),
                        item.ask,
                        item.pending_in,
                        serde_json::to_string(&item.groups).unwrap_or_else(|_| "[]".into()),
                        item.in_roster
                    ],
                )?;
            }
            bump_version(conn, &username)
        })
        .await
    }
}
