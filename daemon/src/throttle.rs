//! Failure throttling for logins and open registration: a small fixed-window counter per key
//! (IP address or account). Bounded: the table is cleared of old entries as it grows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before stale ones are swept; a flood of addresses cannot grow it without bound.
const MAX_ENTRIES: usize = 10_000;

pub struct Throttle {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    pub fn new(max: u32, window: Duration) -> Throttle {
        Throttle {
            max,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` has used up its allowance in the current window.
    pub fn is_blocked(&self, key: &str) -> bool {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .is_some_and(|(n, since)| *n >= self.max && since.elapsed() < self.window)
    }

    /// Counts one event (a failure, a registration) for `key`.
    pub fn record(&self, key: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let entry = map.entry(key.to_string()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn clear(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_and_clears() {
        let t = Throttle::new(2, Duration::from_secs(60));
        assert!(!t.is_blocked("1.2.3.4"));
        t.record("1.2.3.4");
        t.record("1.2.3.4");
        assert!(t.is_blocked("1.2.3.4"));
        assert!(!t.is_blocked("5.6.7.8"));
        t.clear("1.2.3.4");
        assert!(!t.is_blocked("1.2.3.4"));
    }
}
