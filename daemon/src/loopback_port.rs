//! A free loopback port for a server that a tool is about to start (the end-to-end tests,
//! hearth-bench). hearthd itself never calls this.
//!
//! Port 0 would make the kernel pick one from its ephemeral range, and the tool would release it
//! for the server to bind. In between, any outgoing connection on the machine can take that port
//! as its local end (in CI the tests and the benchmark's smoke run share the machine), and the
//! server fails with "address in use". Ports below the ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`) are never handed to outgoing connections, so the
//! pick comes from there, checked by binding, in turn (never neighbours) from a start that differs
//! per process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

const LOWEST: u32 = 10_000;
/// Distance between two picks: servers often take the next port too (coturn listens on its port
/// plus one for RFC 5780), so two picks in a row must not be neighbours.
const STRIDE: u32 = 10;

/// A port on 127.0.0.1 that was free a moment ago; `None` if no port could be bound at all.
pub fn free() -> Option<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .min(65_536);
    if ephemeral_start > LOWEST + 1_000 {
        let span = ephemeral_start - LOWEST;
        let seed = std::process::id().wrapping_mul(7_919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        let _ = NEXT.compare_exchange(u32::MAX, seed % span, Ordering::SeqCst, Ordering::SeqCst);
        for _ in 0..span {
            let port = (LOWEST + NEXT.fetch_add(STRIDE, Ordering::SeqCst) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Some(port);
            }
        }
    }
    // No room below the ephemeral range (or all of it taken): the kernel's pick.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let a = super::free().expect("a port");
        let b = super::free().expect("another port");
        assert!(a.abs_diff(b) > 1, "{a} and {b} are neighbours");
        let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok());
        if let Some(start) = start.filter(|s| u32::from(*s) > super::LOWEST + 1_000) {
            assert!(a < start && b < start, "{a}, {b} not below {start}");
        }
        std::net::TcpListener::bind(("127.0.0.1", a)).expect("free");
    }
}
