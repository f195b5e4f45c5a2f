//! Whether an account's archive keeps a message, decided without touching the card for the
//! common case: each account's preferences (XEP-0313 §6.1) are read once and kept in memory,
//! so archiving a message on its way to the recipient reads nothing. Only an account whose
//! default is "roster" needs a roster read per message. The table is bounded; a saved
//! preference replaces its entry.

use super::store::{self, Mode, Prefs};
use crate::server::Server;
use crate::storage::StorageError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Accounts whose preferences are kept; past this the table starts over (a home server has far
/// fewer accounts, so in practice it fills once).
const CACHED_ACCOUNTS: usize = 1024;

#[derive(Default)]
pub struct PrefsCache(Mutex<HashMap<String, Arc<Prefs>>>);

impl PrefsCache {
    fn get(&self, username: &str) -> Option<Arc<Prefs>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(username)
            .cloned()
    }

    /// Remembers `prefs` as `username`'s (after they were saved, or read).
    pub fn put(&self, username: &str, prefs: Prefs) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHED_ACCOUNTS && !map.contains_key(username) {
            map.clear();
        }
        map.insert(username.to_string(), Arc::new(prefs));
    }

    /// Whether `username`'s archive keeps a message with `with_bare`. `Ok(false)` also when the
    /// account does not exist (then nothing is remembered for it).
    pub async fn keeps(
        &self,
        server: &Server,
        username: &str,
        with_bare: &str,
    ) -> Result<bool, StorageError> {
        let prefs = match self.get(username) {
            Some(p) => p,
            None => {
                let user = username.to_string();
                let read = server
                    .storage
                    .lookup(move |c| {
                        if !crate::storage::user_exists(c, &user)? {
                            return Ok(None);
                        }
                        store::load_prefs(c, &user).map(Some)
                    })
                    .await?;
                let Some(prefs) = read else {
                    return Ok(false);
                };
                self.put(username, prefs.clone());
                Arc::new(prefs)
            }
        };
        // Decided by the lists or the default alone: nothing to read.
        let listed = prefs
            .never
            .iter()
            .chain(&prefs.always)
            .any(|j| j == with_bare);
        if listed || prefs.default != Mode::Roster {
            return Ok(store::prefs_allow(&prefs, with_bare, || false));
        }
        let (user, with) = (username.to_string(), with_bare.to_string());
        let in_roster = server
            .storage
            .lookup(move |c| store::in_roster(c, &user, &with))
            .await?;
        Ok(store::prefs_allow(&prefs, with_bare, || in_roster))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_stays_bounded() {
        let cache = PrefsCache::default();
        for i in 0..CACHED_ACCOUNTS + 10 {
            cache.put(&format!("u{i}"), Prefs::default());
        }
        let len = cache.0.lock().unwrap().len();
        assert!(len <= CACHED_ACCOUNTS, "{len} entries");
        assert!(cache.get(&format!("u{}", CACHED_ACCOUNTS + 9)).is_some());
    }
}
