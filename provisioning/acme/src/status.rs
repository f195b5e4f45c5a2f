//! `hearth-acme status`: what is installed and what happens next, from local files only.

use crate::cert::{fmt_span, fmt_time};
use crate::config::{Challenge, Settings};
use crate::policy::{self, Decision, Facts};
use crate::renew;
use crate::state::{self, State};
use std::fmt::Write;

pub fn render(s: &Settings) -> String {
    let now = state::now();
    let st = State::load(&s.state_dir);
    let cur = renew::current(s);
    let mut out = String::new();
    let mode = match s.challenge {
        Challenge::SelfSigned if s.section_missing => {
            "self-signed (hearth.toml has no [acme] section)".to_string()
        }
        Challenge::SelfSigned => "self-signed".to_string(),
        c => format!("ACME {} with {}", c.as_str(), s.directory),
    };
    let _ = writeln!(out, "Mode: {mode}");
    let _ = writeln!(out, "Names: {}", s.names.join(", "));
    match &cur.cert {
        None => {
            let _ = writeln!(
                out,
                "Certificate: none at {} yet; run `hearth-acme renew`.",
                s.cert_path.display()
            );
        }
        Some(c) => {
            let left = c.not_after - now;
            let validity = if left > 0 {
                format!(
                    "valid until {} ({} left)",
                    fmt_time(c.not_after),
                    fmt_span(left)
                )
            } else {
                format!(
                    "EXPIRED at {} ({} ago)",
                    fmt_time(c.not_after),
                    fmt_span(left)
                )
            };
            let _ = writeln!(
                out,
                "Certificate: {} ({}), serial {}",
                c.names.join(", "),
                if c.self_signed {
                    "self-signed"
                } else {
                    &c.issuer
                },
                c.serial
            );
            let _ = writeln!(out, "  {validity}");
            if !cur.key_ok {
                let _ = writeln!(
                    out,
                    "  The key in {} does not belong to this certificate; renewing fixes it.",
                    s.key_path.display()
                );
            }
        }
    }
    let facts = Facts {
        now,
        cert: cur.cert.as_ref(),
        key_ok: cur.key_ok,
        names: &s.names,
        challenge: s.challenge,
        state: &st,
        force: false,
        directory: &s.directory,
    };
    let _ = match policy::decide(&facts) {
        Decision::Renew(why) => writeln!(out, "Next renewal: at the next run, because {why}."),
        Decision::Wait { until, why } => writeln!(
            out,
            "Next renewal: not before {} (in {}): {why}.",
            fmt_time(until),
            fmt_span(until - now)
        ),
    };
    if let Some(a) = &st.ari {
        let _ = writeln!(
            out,
            "CA renewal window (ARI): {} to {}",
            fmt_time(a.window_start),
            fmt_time(a.window_end)
        );
        if let Some(u) = &a.explanation_url {
            let _ = writeln!(out, "  The CA explains why: {u}");
        }
    }
    if let Some(t) = st.last_success {
        let _ = writeln!(out, "Last renewal: {}", fmt_time(t));
    }
    if let Some(e) = &st.last_error {
        let when = st.last_attempt.map(fmt_time).unwrap_or_default();
        let _ = writeln!(
            out,
            "Last error ({when}, {} failed attempt(s) in a row): {e}",
            st.failures
        );
    }
    out
}
