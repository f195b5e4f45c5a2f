//! When to renew: small pure functions with a reason, so `renew`, `status` and the tests agree.

use crate::cert::{fmt_span, fmt_time, CertInfo};
use crate::config::Challenge;
use crate::state::State;

/// What a run should do, and why (the why is shown to the user and logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Renew(String),
    Wait { until: i64, why: String },
}

/// Inputs that vary between runs, gathered by the caller.
pub struct Facts<'a> {
    pub now: i64,
    pub cert: Option<&'a CertInfo>,
    /// False when the key file is missing or does not belong to the certificate.
    pub key_ok: bool,
    pub names: &'a [String],
    pub challenge: Challenge,
    pub state: &'a State,
    pub force: bool,
    /// The ACME directory this run would use.
    pub directory: &'a str,
}

pub fn decide(f: &Facts) -> Decision {
    if f.force {
        return Decision::Renew("asked to with --force".into());
    }
    if let Some(next) = f.state.next_attempt.filter(|&t| t > f.now) {
        let why = format!(
            "the last attempt failed, so the next one waits until {} (in {}) to spare the CA; use --force to try now",
            fmt_time(next),
            fmt_span(next - f.now)
        );
        return Decision::Wait { until: next, why };
    }
    let Some(cert) = f.cert else {
        return Decision::Renew("there is no certificate yet".into());
    };
    if !f.key_ok {
        return Decision::Renew(
            "the key file is missing or does not belong to the certificate".into(),
        );
    }
    if !cert.covers_exactly(f.names) {
        return Decision::Renew(format!(
            "the certificate is for {} but the configuration asks for {}",
            cert.names.join(", "),
            f.names.join(", ")
        ));
    }
    let acme = f.challenge != Challenge::SelfSigned;
    if acme && cert.self_signed {
        return Decision::Renew("the certificate is self-signed and ACME is configured".into());
    }
    if !acme && !cert.self_signed {
        return Decision::Renew("the configuration asks for a self-signed certificate".into());
    }
    let ours = acme && f.state.issued_serial.as_deref() == Some(cert.serial.as_str());
    if let (true, Some(by)) = (ours, &f.state.issued_by) {
        if by != f.directory {
            return Decision::Renew(format!(
                "it came from {by}, but the configured CA is now {}",
                f.directory
            ));
        }
    }
    if let Some(ari) = f
        .state
        .ari
        .as_ref()
        .filter(|a| acme && a.serial == cert.serial)
    {
        return if f.now >= ari.chosen {
            Decision::Renew(format!(
                "the CA's renewal window ({} to {}) has begun",
                fmt_time(ari.window_start),
                fmt_time(ari.window_end)
            ))
        } else {
            Decision::Wait {
                until: ari.chosen,
                why: format!("the CA suggests renewing at {}", fmt_time(ari.chosen)),
            }
        };
    }
    let at = renew_at(cert);
    if f.now >= at {
        Decision::Renew(format!(
            "it expires at {}, less than a third of its lifetime away",
            fmt_time(cert.not_after)
        ))
    } else {
        Decision::Wait {
            until: at,
            why: format!(
                "it is valid until {}; renewal is due around {}",
                fmt_time(cert.not_after),
                fmt_time(at)
            ),
        }
    }
}

/// When a third of the lifetime is left, minus a jitter of up to 1/30 of the lifetime (3 days for
/// Let's Encrypt's 90) so that boxes set up the same day do not all renew the same hour. The
/// jitter comes from the serial, so every run for the same certificate computes the same time.
pub fn renew_at(cert: &CertInfo) -> i64 {
    let life = cert.lifetime_secs();
    let spread = (life / 30).max(1);
    let hash = cert.serial.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
    });
    cert.not_after - life / 3 - (hash % spread as u64) as i64
}

/// A point inside an ARI window, picked uniformly as RFC 9773 §4.2 asks.
pub fn pick_in_window(start: i64, end: i64, random: u32) -> i64 {
    if end <= start {
        return start;
    }
    start + ((end - start) as u128 * u128::from(random) / u128::from(u32::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AriState;

    fn cert(not_before: i64, not_after: i64, self_signed: bool) -> CertInfo {
        CertInfo {
            names: vec!["a.test".into(), "groups.a.test".into()],
            not_before,
            not_after,
            serial: "0a1b2c".into(),
            issuer: "CN=x".into(),
            self_signed,
            leaf_der: vec![],
            spki_der: vec![],
        }
    }

    fn names() -> Vec<String> {
        vec!["groups.a.test".into(), "a.test".into()]
    }

    fn decide_at(now: i64, c: Option<&CertInfo>, state: &State, challenge: Challenge) -> Decision {
        decide(&Facts {
            now,
            cert: c,
            key_ok: true,
            names: &names(),
            challenge,
            state,
            force: false,
            directory: "https://ca.test/dir",
        })
    }

    const DAY: i64 = 86_400;

    #[test]
    fn renews_once_a_third_is_left() {
        let c = cert(0, 90 * DAY, false);
        let s = State::default();
        assert!(matches!(
            decide_at(50 * DAY, Some(&c), &s, Challenge::Http01),
            Decision::Wait { .. }
        ));
        assert!(matches!(
            decide_at(60 * DAY, Some(&c), &s, Challenge::Http01),
            Decision::Renew(_)
        ));
        let at = renew_at(&c);
        assert!(
            at <= 60 * DAY && at > 57 * DAY,
            "jitter stays within 3 days: {at}"
        );
        assert_eq!(at, renew_at(&c), "same certificate, same time");
    }

    #[test]
    fn backoff_wins_over_due_renewal_but_not_over_force() {
        let c = cert(0, 90 * DAY, false);
        let s = State {
            next_attempt: Some(70 * DAY),
            ..State::default()
        };
        match decide_at(65 * DAY, Some(&c), &s, Challenge::Http01) {
            Decision::Wait { until, why } => {
                assert_eq!(until, 70 * DAY);
                assert!(why.contains("--force"), "{why}");
            }
            d => panic!("{d:?}"),
        }
        let forced = decide(&Facts {
            now: 65 * DAY,
            cert: Some(&c),
            key_ok: true,
            names: &names(),
            challenge: Challenge::Http01,
            state: &s,
            force: true,
            directory: "https://ca.test/dir",
        });
        assert!(matches!(forced, Decision::Renew(_)));
    }

    #[test]
    fn missing_cert_changed_names_and_wrong_kind_renew_now() {
        let s = State::default();
        assert!(matches!(
            decide_at(0, None, &s, Challenge::Http01),
            Decision::Renew(_)
        ));
        let mut c = cert(0, 90 * DAY, false);
        c.names.pop();
        match decide_at(DAY, Some(&c), &s, Challenge::Http01) {
            Decision::Renew(why) => assert!(why.contains("groups.a.test"), "{why}"),
            d => panic!("{d:?}"),
        }
        let selfsigned = cert(0, 3650 * DAY, true);
        assert!(matches!(
            decide_at(DAY, Some(&selfsigned), &s, Challenge::Dns01),
            Decision::Renew(_)
        ));
        assert!(matches!(
            decide_at(DAY, Some(&selfsigned), &s, Challenge::SelfSigned),
            Decision::Wait { .. }
        ));
        let trusted = cert(0, 90 * DAY, false);
        assert!(matches!(
            decide_at(DAY, Some(&trusted), &s, Challenge::SelfSigned),
            Decision::Renew(_)
        ));
    }

    #[test]
    fn ari_window_overrides_the_third() {
        let c = cert(0, 90 * DAY, false);
        let ari = AriState {
            serial: c.serial.clone(),
            window_start: 10 * DAY,
            window_end: 12 * DAY,
            chosen: 11 * DAY,
            ..Default::default()
        };
        let s = State {
            ari: Some(ari.clone()),
            ..State::default()
        };
        assert!(
            matches!(decide_at(10 * DAY, Some(&c), &s, Challenge::Http01), Decision::Wait { until, .. } if until == 11 * DAY)
        );
        assert!(matches!(
            decide_at(11 * DAY, Some(&c), &s, Challenge::Http01),
            Decision::Renew(_)
        ));
        // A window for another certificate is ignored.
        let stale = State {
            ari: Some(AriState {
                serial: "ff".into(),
                ..ari
            }),
            ..State::default()
        };
        assert!(matches!(
            decide_at(11 * DAY, Some(&c), &stale, Challenge::Http01),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn a_changed_ca_replaces_the_certificate() {
        let c = cert(0, 90 * DAY, false);
        let mut s = State::default();
        s.record_issued(&c.serial, Some("https://staging.test/dir"));
        match decide_at(DAY, Some(&c), &s, Challenge::Http01) {
            Decision::Renew(why) => assert!(why.contains("staging.test"), "{why}"),
            d => panic!("{d:?}"),
        }
        s.record_issued(&c.serial, Some("https://ca.test/dir"));
        assert!(matches!(
            decide_at(DAY, Some(&c), &s, Challenge::Http01),
            Decision::Wait { .. }
        ));
        // A certificate we did not record (restored from a backup, say) is judged by its dates.
        s.record_issued("ffff", Some("https://staging.test/dir"));
        assert!(matches!(
            decide_at(DAY, Some(&c), &s, Challenge::Http01),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn picks_inside_the_window() {
        assert_eq!(pick_in_window(100, 200, 0), 100);
        assert_eq!(pick_in_window(100, 200, u32::MAX), 200);
        let mid = pick_in_window(100, 200, u32::MAX / 2);
        assert!((149..=151).contains(&mid));
        assert_eq!(pick_in_window(100, 50, 7), 100);
    }
}
