//! The small state file (`<data_dir>/certs/state.json`) that lets a twice-daily timer remember
//! what happened last time: the last error, how many attempts in a row failed, and when the next
//! attempt may be made. Without it every timer run would hit the CA again after a failure.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// First wait after a failure. Let's Encrypt allows 5 failed validations per name per hour; one
/// try per three hours stays far below that while still recovering the same day.
pub const BACKOFF_BASE_SECS: i64 = 3 * 3600;
/// Longest wait between attempts while the certificate still has time left.
pub const BACKOFF_MAX_SECS: i64 = 2 * 86_400;
/// Longest wait when the certificate expires within `URGENT_SECS` (or there is none):
/// then being late costs more than one extra request.
pub const BACKOFF_URGENT_MAX_SECS: i64 = 6 * 3600;
pub const URGENT_SECS: i64 = 5 * 86_400;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct State {
    /// Unix seconds of the last attempt to obtain a certificate.
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
    /// The last failure, as the sentence shown to the user; cleared on success.
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// No new attempt before this time (unless `--force`).
    pub next_attempt: Option<i64>,
    /// ACME Renewal Information (RFC 9773) for the current certificate, when the CA offers it.
    pub ari: Option<AriState>,
    /// Serial of the last certificate we obtained from a CA, and that CA's directory URL: when the
    /// configured CA changes (staging to production, say), the certificate is replaced at once.
    pub issued_serial: Option<String>,
    pub issued_by: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AriState {
    /// Serial of the certificate this window is for.
    pub serial: String,
    pub window_start: i64,
    pub window_end: i64,
    /// The moment we picked inside the window (kept so runs agree with each other).
    pub chosen: i64,
    /// Do not ask the CA again before this (its Retry-After).
    pub next_check: i64,
    pub explanation_url: Option<String>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}

impl State {
    /// Reads the state; a missing file is a fresh state, a damaged one is reported and replaced
    /// (it only holds scheduling hints, never anything that cannot be rebuilt).
    pub fn load(state_dir: &Path) -> State {
        let p = path(state_dir);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!(
                    "{} is damaged ({e}); starting with a fresh state",
                    p.display()
                );
                State::default()
            }),
            Err(_) => State::default(),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let p = path(state_dir);
        hearthd::fsutil::write_atomically(&p, &text, 0o640)
            .map_err(|e| format!("cannot write {}: {e}", p.display()))
    }

    /// Records a failure and schedules the next attempt with exponential backoff. `expires_in`
    /// is the time the current certificate has left (None when there is none).
    pub fn record_failure(&mut self, now: i64, error: &str, expires_in: Option<i64>, random: u32) {
        self.failures = self.failures.saturating_add(1);
        self.last_attempt = Some(now);
        self.last_error = Some(error.to_string());
        self.next_attempt = Some(now + backoff_secs(self.failures, expires_in, random));
    }

    pub fn record_issued(&mut self, serial: &str, directory: Option<&str>) {
        self.issued_serial = Some(serial.to_string());
        self.issued_by = directory.map(str::to_string);
    }

    pub fn record_success(&mut self, now: i64) {
        self.failures = 0;
        self.last_attempt = Some(now);
        self.last_success = Some(now);
        self.last_error = None;
        self.next_attempt = None;
        self.ari = None;
    }
}

/// Held for the whole of a `renew` run, so the timer and a "Renew now" from the admin page
/// cannot run two orders and two installs at once. Released when dropped (or the process dies).
pub struct RunLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub fn lock(state_dir: &Path) -> Result<RunLock, String> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    let p = state_dir.join("renew.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(RunLock(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            Err("another hearth-acme run is renewing right now; this one stops without touching anything".into())
        }
        Err((_, e)) => Err(format!("cannot lock {}: {e}", p.display())),
    }
}

/// Wait after the `failures`-th failure in a row: base × 2^(n-1), capped, plus up to 25% jitter
/// (from `random`) so many boxes that failed together do not retry together.
pub fn backoff_secs(failures: u32, expires_in: Option<i64>, random: u32) -> i64 {
    let exp = failures.saturating_sub(1).min(20);
    let cap = match expires_in {
        Some(left) if left > URGENT_SECS => BACKOFF_MAX_SECS,
        _ => BACKOFF_URGENT_MAX_SECS,
    };
    let base = BACKOFF_BASE_SECS.saturating_mul(1 << exp).min(cap);
    base + base / 4 * i64::from(random % 1000) / 1000
}

/// A random number for jitter; falls back to the clock if the OS has no randomness to give.
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    }
    u32::from_le_bytes(b)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let far = Some(60 * 86_400);
        assert_eq!(backoff_secs(1, far, 0), BACKOFF_BASE_SECS);
        assert_eq!(backoff_secs(2, far, 0), 2 * BACKOFF_BASE_SECS);
        assert_eq!(backoff_secs(3, far, 0), 4 * BACKOFF_BASE_SECS);
        assert_eq!(backoff_secs(30, far, 0), BACKOFF_MAX_SECS);
        assert_eq!(backoff_secs(30, Some(86_400), 0), BACKOFF_URGENT_MAX_SECS);
        assert_eq!(backoff_secs(30, None, 0), BACKOFF_URGENT_MAX_SECS);
        let jittered = backoff_secs(1, far, 999);
        assert!(
            jittered > BACKOFF_BASE_SECS && jittered <= BACKOFF_BASE_SECS * 5 / 4,
            "{jittered}"
        );
    }

    #[test]
    fn failure_then_success_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path());
        assert_eq!(s, State::default());
        s.record_failure(1000, "port 80 is closed", Some(90 * 86_400), 0);
        s.record_failure(2000, "port 80 is still closed", Some(90 * 86_400), 0);
        s.save(dir.path()).unwrap();
        let again = State::load(dir.path());
        assert_eq!(again.failures, 2);
        assert_eq!(again.next_attempt, Some(2000 + 2 * BACKOFF_BASE_SECS));
        assert_eq!(again.last_error.as_deref(), Some("port 80 is still closed"));
        let mut ok = again;
        ok.record_success(3000);
        assert_eq!(
            (ok.failures, ok.next_attempt, ok.last_error),
            (0, None, None)
        );
    }

    #[test]
    fn only_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let e = lock(dir.path()).err().unwrap();
        assert!(e.contains("another hearth-acme run"), "{e}");
        drop(first);
        assert!(lock(dir.path()).is_ok());
    }

    #[test]
    fn damaged_file_gives_fresh_state() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert_eq!(State::load(dir.path()), State::default());
    }
}
