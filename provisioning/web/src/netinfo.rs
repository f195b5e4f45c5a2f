//! The box's own addresses, for the console banner and the "forward these ports" page: people
//! need the LAN address when `hearth.local` does not resolve on their phone (Umbrel's top complaint).

use std::net::IpAddr;

/// Non-loopback IPv4 addresses first, then global IPv6; link-local ones are useless in a router form.
pub fn lan_addresses() -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            if let Some(sin) = addr.as_sockaddr_in() {
                let ip = sin.ip();
                if !ip.is_loopback() && !ip.is_link_local() && !v4.contains(&IpAddr::V4(ip)) {
                    v4.push(IpAddr::V4(ip));
                }
            } else if let Some(sin6) = addr.as_sockaddr_in6() {
                let ip = sin6.ip();
                let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
                if !ip.is_loopback() && !link_local && !v6.contains(&IpAddr::V6(ip)) {
                    v6.push(IpAddr::V6(ip));
                }
            }
        }
    }
    v4.extend(v6);
    v4
}

/// The host name, for `http://NAME.local/`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hearth".into())
}

/// Addresses to open the wizard at, for people: the .local name first, then each address.
pub fn urls(port: u16) -> Vec<String> {
    let suffix = if port == 80 {
        String::new()
    } else {
        format!(":{port}")
    };
    let mut urls = vec![format!("http://{}.local{suffix}/", hostname())];
    for ip in lan_addresses() {
        match ip {
            IpAddr::V4(ip) => urls.push(format!("http://{ip}{suffix}/")),
            IpAddr::V6(ip) => urls.push(format!("http://[{ip}]{suffix}/")),
        }
    }
    urls
}
