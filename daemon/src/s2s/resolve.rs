//! Where a remote domain's server listens (RFC 6120 §3.2, XEP-0368): a static route from
//! `[s2s.routes]` first, else DNS SRV records `_xmpps-server._tcp` (direct TLS) and
//! `_xmpp-server._tcp` (STARTTLS) in priority order, else the domain's own addresses on 5269.

use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::Duration;

/// One place to try: a host name (or address) and port, and how TLS starts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub direct_tls: bool,
}

/// Parses a static route value: `host:port` (STARTTLS) or `tls:host:port` (direct TLS).
pub fn parse_route(value: &str) -> Result<Target, String> {
    let (direct_tls, rest) = match value.strip_prefix("tls:") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?} is not host:port (or tls:host:port)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{value:?}: the port is not a number from 1 to 65535"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("{value:?} is not host:port (or tls:host:port)"));
    }
    Ok(Target {
        host: host.to_string(),
        port,
        direct_tls,
    })
}

/// The system's resolver, with short timeouts: all of federation's connect attempt is bounded
/// (`[s2s] connect_timeout_secs`), and DNS must leave time for the connection itself.
pub fn resolver() -> Result<TokioResolver, String> {
    let mut builder = TokioResolver::builder_tokio()
        .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?;
    let opts = builder.options_mut();
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 2;
    opts.cache_size = 64;
    Ok(builder.build())
}

/// The targets for `domain` from DNS, best first.
pub async fn targets(resolver: &TokioResolver, domain: &str) -> Vec<Target> {
    let mut out: Vec<(u16, u16, Target)> = Vec::new();
    for (service, direct_tls) in [("_xmpps-server._tcp", true), ("_xmpp-server._tcp", false)] {
        let name = format!("{service}.{domain}.");
        match resolver.srv_lookup(name.as_str()).await {
            Ok(lookup) => {
                for srv in lookup.iter() {
                    let host = srv.target().to_utf8();
                    let host = host.trim_end_matches('.');
                    // "." means: the service is decidedly not available here (RFC 2782).
                    if host.is_empty() {
                        continue;
                    }
                    out.push((
                        srv.priority(),
                        u16::MAX - srv.weight(),
                        Target {
                            host: host.to_string(),
                            port: srv.port(),
                            direct_tls,
                        },
                    ));
                }
            }
            Err(e) => log::debug!("s2s: no {name} records: {e}"),
        }
    }
    // Lower priority first; among equals, heavier weight first, direct TLS before STARTTLS.
    out.sort_by_key(|(p, w, t)| (*p, *w, !t.direct_tls));
    if out.is_empty() {
        return vec![Target {
            host: domain.to_string(),
            port: 5269,
            direct_tls: false,
        }];
    }
    out.into_iter().map(|(_, _, t)| t).collect()
}

/// The addresses of a target's host (an address literal stands for itself).
pub async fn addresses(resolver: &TokioResolver, target: &Target) -> Vec<SocketAddr> {
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        return vec![SocketAddr::new(ip, target.port)];
    }
    match resolver.lookup_ip(format!("{}.", target.host)).await {
        Ok(ips) => ips
            .iter()
            .map(|ip| SocketAddr::new(ip, target.port))
            .collect(),
        Err(e) => {
            log::debug!("s2s: no address for {}: {e}", target.host);
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_routes_parse_with_their_tls_mode() {
        assert_eq!(
            parse_route("127.0.0.2:5269").unwrap(),
            Target {
                host: "127.0.0.2".into(),
                port: 5269,
                direct_tls: false
            }
        );
        assert_eq!(
            parse_route("tls:[::1]:5270").unwrap(),
            Target {
                host: "::1".into(),
                port: 5270,
                direct_tls: true
            }
        );
        assert!(parse_route("prosody.test")
            .unwrap_err()
            .contains("host:port"));
        assert!(parse_route("h:99999").unwrap_err().contains("port"));
        assert!(parse_route(":5269").is_err());
    }
}
