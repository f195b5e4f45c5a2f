//! "Can Let's Encrypt reach this box?" — checked before choosing HTTP-01, so the owner learns
//! about a missing DNS record or port forward now, with a page saying what to change on the router,
//! instead of from a certificate that silently never arrives.
//!
//! The check does what Let's Encrypt will do: resolve the name, connect to port 80 at the
//! address it finds, and ask for a file under `/.well-known/acme-challenge/` that only this box
//! knows. Routers without hairpin NAT fail this from inside the house although it would work from
//! outside; the ports page therefore also offers to continue anyway.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Each network step waits at most this long: the owner is looking at a spinner.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// The probe reads at most this much of the answer.
const MAX_ANSWER: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The name does not resolve (no A/AAAA record yet, or a typo).
    NoDns,
    /// The name resolves, but nothing answered on port 80 there, or something else answered.
    Unreachable {
        addresses: Vec<IpAddr>,
        detail: String,
    },
}

/// How the check resolves and connects; tests point it at loopback instead of public DNS.
#[derive(Debug, Clone, Default)]
pub struct ProbeSettings {
    /// Fixed answers for names, like curl's `--resolve`.
    pub resolve: Vec<(String, IpAddr)>,
    /// Port to probe instead of 80.
    pub port: Option<u16>,
}

/// Runs the check; `Ok` means port 80 of `domain` reached this very box, at the address given.
pub async fn check(
    domain: &str,
    challenge_dir: &Path,
    settings: &ProbeSettings,
) -> Result<IpAddr, Problem> {
    let port = settings.port.unwrap_or(80);
    let addresses = resolve(domain, port, settings).await;
    if addresses.is_empty() {
        return Err(Problem::NoDns);
    }
    let token = crate::session::random_token(18);
    let name = format!("hearth-probe-{token}");
    let file = challenge_dir.join(&name);
    let unreachable = |detail: String| Problem::Unreachable {
        addresses: addresses.iter().map(|a| a.ip()).collect(),
        detail,
    };
    if let Err(e) =
        std::fs::create_dir_all(challenge_dir).and_then(|_| std::fs::write(&file, &token))
    {
        return Err(unreachable(format!(
            "this box could not write its test file: {e}"
        )));
    }
    let mut last = String::new();
    let mut ok = None;
    for addr in &addresses {
        match fetch(
            *addr,
            domain,
            &format!("/.well-known/acme-challenge/{name}"),
        )
        .await
        {
            Ok(body) if body.trim() == token => {
                ok = Some(addr.ip());
                break;
            }
            Ok(_) => last = "something answered on port 80, but it is not this box".to_string(),
            Err(e) => last = e,
        }
    }
    let _ = std::fs::remove_file(&file);
    ok.ok_or_else(|| unreachable(last))
}

/// The router's public address, when the check reached this box through NAT: an IPv4 address
/// that is public and none of the box's own (`own`). The box's coturn announces its relays
/// there (`[modules.external_services] public_address`), or callers outside could not reach them.
pub fn nat_public_address(reached: IpAddr, own: &[IpAddr]) -> Option<IpAddr> {
    let IpAddr::V4(v4) = reached else {
        return None;
    };
    let [a, b, ..] = v4.octets();
    let shared = a == 100 && (64..128).contains(&b); // carrier-grade NAT, RFC 6598
    let public = !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_multicast()
        || shared);
    (public && !own.contains(&reached)).then_some(reached)
}

#[cfg(test)]
mod nat_tests {
    use super::nat_public_address;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_public_ipv4_address_that_is_not_the_box_s_own_is_behind_nat() {
        let own = [ip("192.168.1.20"), ip("2001:db8::20")];
        assert_eq!(
            nat_public_address(ip("198.51.99.7"), &own),
            Some(ip("198.51.99.7"))
        );
        for not in [
            "192.168.1.20",
            "10.0.0.1",
            "100.64.1.1",
            "127.0.0.1",
            "203.0.113.5",
            "2a00::1",
        ] {
            assert_eq!(nat_public_address(ip(not), &own), None, "{not}");
        }
        // A box with the public address on its own interface is not behind NAT.
        assert_eq!(
            nat_public_address(ip("198.51.99.7"), &[ip("198.51.99.7")]),
            None
        );
    }
}

async fn resolve(domain: &str, port: u16, settings: &ProbeSettings) -> Vec<SocketAddr> {
    let fixed: Vec<SocketAddr> = settings
        .resolve
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(domain))
        .map(|(_, ip)| SocketAddr::new(*ip, port))
        .collect();
    if !fixed.is_empty() {
        return fixed;
    }
    match tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((domain, port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => Vec::new(),
    }
}

/// A minimal HTTP/1.0 GET: one request, read to the end, body of a 200 answer.
async fn fetch(addr: SocketAddr, host: &str, path: &str) -> Result<String, String> {
    let mut stream = tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "no answer on port 80 (timed out)".to_string())?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "port 80 is closed there".to_string(),
            _ => format!("cannot connect: {e}"),
        })?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: hearth-web reachability check\r\n\r\n"
    );
    let mut answer = Vec::new();
    let io = async {
        stream.write_all(request.as_bytes()).await?;
        (&mut stream)
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut answer)
            .await
    };
    tokio::time::timeout(STEP_TIMEOUT, io)
        .await
        .map_err(|_| "port 80 answered too slowly".to_string())?
        .map_err(|e| format!("the connection broke: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the answer was not HTTP")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("answered {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}
