//! Turning what the CA says (RFC 8555 problem documents) into a sentence the box's owner can act
//! on: what failed, for which name, and what to change.

use crate::config::Challenge;
use instant_acme::Problem;

const PREFIX: &str = "urn:ietf:params:acme:error:";

/// Why a challenge for `name` failed, given the CA's problem document.
pub fn challenge_failure(
    name: &str,
    challenge: Challenge,
    webroot: &str,
    problem: &Problem,
) -> String {
    let kind = problem
        .r#type
        .as_deref()
        .and_then(|t| t.strip_prefix(PREFIX))
        .unwrap_or("");
    let detail = problem.detail.as_deref().unwrap_or("no details given");
    match (challenge, kind) {
        (Challenge::Http01, "connection") => format!(
            "The CA could not connect to http://{name}/ ({detail}). Forward TCP port 80 on your router to this box, \
             or switch to dns-01 if your provider blocks port 80."
        ),
        (Challenge::Http01, "unauthorized") => format!(
            "The CA reached http://{name}/.well-known/acme-challenge/ but did not get our token back ({detail}). \
             Port 80 must reach this box and hearth-web must serve {webroot}; another device may be answering on port 80."
        ),
        (Challenge::Http01, "dns") => format!(
            "The CA could not look up {name} ({detail}). Give {name} an A (or AAAA) record pointing at your public IP address."
        ),
        (Challenge::Dns01, "unauthorized") | (Challenge::Dns01, "incorrectResponse") => format!(
            "The CA found a different TXT record at _acme-challenge.{name} ({detail}). The DNS provider did not publish our \
             value, or an old one is still cached: check acme.dns.zone and the provider's settings."
        ),
        (Challenge::Dns01, "dns") => format!(
            "The CA could not find the TXT record _acme-challenge.{name} ({detail}). Check that the DNS provider serves \
             this name, or raise acme.dns.propagation_secs if it is slow to publish."
        ),
        (_, "rateLimited") => format!("The CA's rate limit was reached for {name} ({detail}). hearth-acme waits before trying again."),
        (_, "rejectedIdentifier") | (_, "caa") => {
            format!("The CA will not issue a certificate for {name} ({detail}). Check the name and any CAA records for it.")
        }
        (_, "tls") => format!("The CA's TLS connection to {name} failed ({detail})."),
        _ => format!("The CA could not validate {name}: {detail}."),
    }
}

/// An error from talking to the CA outside of a challenge (account, order, finalize).
pub fn acme_error(directory: &str, e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            let kind = p.r#type.as_deref().and_then(|t| t.strip_prefix(PREFIX)).unwrap_or("");
            let detail = p.detail.as_deref().unwrap_or("no details given");
            match kind {
                "rateLimited" => format!("The CA's rate limit was reached ({detail}). hearth-acme waits before trying again."),
                "rejectedIdentifier" => format!("The CA will not issue for these names ({detail})."),
                "invalidContact" => format!("The CA does not accept the contact address ({detail}); fix acme.email."),
                "externalAccountRequired" => {
                    format!("The CA at {directory} needs an external account binding, which Hearth does not support; use Let's Encrypt.")
                }
                "userActionRequired" => format!("The CA needs you to do something ({detail}); see its website."),
                _ => format!("The CA at {directory} refused the request: {detail}."),
            }
        }
        instant_acme::Error::Timeout(_) => format!("The CA at {directory} took too long to process the order; it will be tried again later."),
        other => {
            let text = other.to_string();
            if text.contains("certificate") || text.contains("UnknownIssuer") {
                format!(
                    "Cannot reach the ACME server at {directory}: its TLS certificate is not trusted ({text}). \
                     For a private or test CA, pass --ca-bundle or set acme.ca_bundle."
                )
            } else {
                format!("Cannot reach the ACME server at {directory} ({text}). Check that this box is online and the time is right; the old certificate is kept.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, detail: &str) -> Problem {
        serde_json::from_value(
            serde_json::json!({"type": format!("{PREFIX}{kind}"), "detail": detail}),
        )
        .unwrap()
    }

    #[test]
    fn http01_connection_mentions_port_80() {
        let s = challenge_failure(
            "example.org",
            Challenge::Http01,
            "/w",
            &problem("connection", "refused"),
        );
        assert!(
            s.contains("port 80") && s.contains("example.org") && s.contains("refused"),
            "{s}"
        );
    }

    #[test]
    fn dns01_wrong_token_mentions_txt() {
        let s = challenge_failure(
            "example.org",
            Challenge::Dns01,
            "/w",
            &problem("unauthorized", "got xyz"),
        );
        assert!(
            s.contains("_acme-challenge.example.org") && s.contains("got xyz"),
            "{s}"
        );
    }

    #[test]
    fn unknown_kinds_still_read() {
        let s = challenge_failure(
            "a.test",
            Challenge::Http01,
            "/w",
            &problem("somethingNew", "odd"),
        );
        assert_eq!(s, "The CA could not validate a.test: odd.");
        let e = acme_error(
            "https://ca.test/dir",
            &instant_acme::Error::Api(problem("rateLimited", "too many")),
        );
        assert!(e.contains("rate limit"), "{e}");
    }
}
