//! The scenarios of issue 15, run against one server: idle RSS, RSS per idle authenticated session at
//! each step, logins per second, messages per second at saturation, latency at a fixed offered load,
//! and many idle sessions inside a memory cgroup. Every figure carries the load generator's own CPU
//! use, so the report can say when the client side was the limit.

use crate::client::{find, Client, Conn, Enable, DOMAIN};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// Idle-session counts at which RSS is read, rising (e.g. 100, 1000, 10000).
    pub steps: Vec<usize>,
    /// Logins (SCRAM, bind, close) timed for logins per second.
    pub logins: usize,
    /// Logins in flight at once while opening sessions.
    pub concurrency: usize,
    pub pairs: usize,
    /// Messages in flight per pair at saturation.
    pub window: u64,
    pub saturate_secs: f64,
    /// Offered load for the latency run, messages per second over all pairs.
    pub rate: u32,
    pub latency_secs: f64,
    /// Idle sessions opened inside the memory cgroup (0: skip it).
    pub cgroup_sessions: usize,
    pub cgroup_mib: u64,
    pub enable: Enable,
}

impl Plan {
    pub fn accounts(&self) -> usize {
        let most = self.steps.iter().copied().max().unwrap_or(0);
        most.max(self.cgroup_sessions)
            .max(self.pairs * 2)
            .max(self.logins.min(most.max(1)))
            .max(1)
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub requested: usize,
    pub up: usize,
    pub rss_kib: u64,
    pub per_session_bytes: f64,
    pub secs: f64,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    pub per_sec: f64,
    /// Server CPU used, in cores (1.0 = one core busy the whole time).
    pub server_cores: f64,
    /// The load generator's CPU use in cores.
    pub client_cores: f64,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub sent: u64,
    pub delivered: u64,
    /// Sorted, microseconds.
    pub samples: Vec<u64>,
    pub client_cores: f64,
    pub server_cores: f64,
}

impl Latency {
    pub fn pct(&self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i] as f64 / 1000.0
    }
}

/// CPU time this process has used, seconds.
pub fn own_cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// Measures a stretch of work: wall time, and the CPU the server and the client used in it.
pub struct Meter<'a> {
    server: &'a crate::servers::Running,
    t: Instant,
    server_cpu: f64,
    client_cpu: f64,
}

impl<'a> Meter<'a> {
    pub fn start(server: &'a crate::servers::Running) -> Meter<'a> {
        Meter {
            server,
            t: Instant::now(),
            server_cpu: server.cpu_secs(),
            client_cpu: own_cpu_secs(),
        }
    }
    /// (wall seconds, server cores, client cores)
    pub fn read(&self) -> (f64, f64, f64) {
        let wall = self.t.elapsed().as_secs_f64().max(1e-6);
        (
            wall,
            (self.server.cpu_secs() - self.server_cpu) / wall,
            (own_cpu_secs() - self.client_cpu) / wall,
        )
    }
}

/// Creates accounts u{from}..u{to} by in-band registration, `concurrency` at a time.
pub async fn register_all(client: &Client, to: usize, concurrency: usize) -> Result<(), String> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(to);
    for i in 0..to {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.register(&format!("u{i}")).await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Opens sessions for accounts u{from}..u{to}, `concurrency` at a time, and adds them to `open`.
/// Returns how many failed and the first error.
pub async fn open_sessions(
    client: &Client,
    from: usize,
    to: usize,
    concurrency: usize,
    enable: Enable,
    open: &mut Vec<Conn>,
) -> (usize, Option<String>) {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(to.saturating_sub(from));
    for i in from..to {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.login(&format!("u{i}"), enable).await;
            drop(permit);
            r
        }));
    }
    let (mut failed, mut first) = (0, None);
    for t in tasks {
        match t.await {
            Ok(Ok((conn, _))) => open.push(conn),
            Ok(Err(e)) => {
                failed += 1;
                first.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    (failed, first)
}

/// Logs in and out `n` times over accounts u0.. (one at a time per slot), for logins per second.
pub async fn login_rate(
    client: &Client,
    server: &crate::servers::Running,
    n: usize,
    accounts: usize,
    concurrency: usize,
) -> Result<Rate, String> {
    let meter = Meter::start(server);
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let c = client.clone();
        let user = format!("u{}", i % accounts.max(1));
        tasks.push(tokio::spawn(async move {
            let r = c.login(&user, Enable::default()).await;
            if let Ok((mut conn, _)) = r {
                let _ = conn.write_all(b"</stream:stream>").await;
                let _ = conn.shutdown().await;
                drop(permit);
                return Ok(());
            }
            drop(permit);
            r.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let (wall, server_cores, client_cores) = meter.read();
    Ok(Rate {
        per_sec: n as f64 / wall,
        server_cores,
        client_cores,
    })
}

/// How senders pace themselves.
#[derive(Clone, Copy)]
pub enum Pace {
    /// Keep this many messages in flight per pair: the server's saturation rate.
    Window(u64),
    /// One message per this interval per pair: a fixed offered load.
    Every(Duration),
}

struct PairState {
    received: AtomicU64,
    arrived: Notify,
}

/// Sends chat messages from u{2i} to u{2i+1} for `secs` seconds; returns messages delivered within
/// the window, the latencies of all delivered, and what was sent.
pub async fn run_pairs(
    client: &Client,
    server: &crate::servers::Running,
    pairs: usize,
    pace: Pace,
    secs: f64,
) -> Result<(Rate, Latency), String> {
    let mut conns = Vec::new();
    let (failed, err) =
        open_sessions(client, 0, pairs * 2, 16, Enable::default(), &mut conns).await;
    if failed > 0 {
        return Err(format!(
            "{failed} pair logins failed: {}",
            err.unwrap_or_default()
        ));
    }
    // open_sessions keeps order per spawn, so conns[2i] is u{2i}.
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut states = Vec::new();
    let mut it = conns.into_iter();
    for p in 0..pairs {
        let (Some(mut tx), Some(mut rx)) = (it.next(), it.next()) else {
            break;
        };
        let st = Arc::new(PairState {
            received: AtomicU64::new(0),
            arrived: Notify::new(),
        });
        states.push(st.clone());
        let (stop_r, samples_r, st_r) = (stop.clone(), samples.clone(), st.clone());
        receivers.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            let mut mine = Vec::new();
            loop {
                let n =
                    match tokio::time::timeout(Duration::from_secs(5), rx.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => n,
                        Ok(_) => break,
                        Err(_) if stop_r.load(Ordering::Relaxed) => break,
                        Err(_) => continue,
                    };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(stamp) = take_body(&mut buf) {
                    mine.push((t0.elapsed().as_micros() as u64).saturating_sub(stamp));
                    st_r.received.fetch_add(1, Ordering::Relaxed);
                    st_r.arrived.notify_one();
                }
            }
            samples_r.lock().expect("samples").extend(mine);
            rx
        }));
        let to = format!("u{}@{DOMAIN}/bench", 2 * p + 1);
        let stop_s = stop.clone();
        // Paced senders start spread over one interval, not all at the same instant.
        let offset = match pace {
            Pace::Every(d) => d.mul_f64(p as f64 / pairs as f64),
            Pace::Window(_) => Duration::ZERO,
        };
        senders.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut sent = 0u64;
            let mut tick = match pace {
                Pace::Every(d) => Some(tokio::time::interval(d)),
                Pace::Window(_) => None,
            };
            while !stop_s.load(Ordering::Relaxed) {
                match (&mut tick, pace) {
                    (Some(t), _) => {
                        t.tick().await;
                    }
                    (None, Pace::Window(w)) => {
                        while sent - st.received.load(Ordering::Relaxed) >= w {
                            if tokio::time::timeout(Duration::from_secs(1), st.arrived.notified())
                                .await
                                .is_err()
                                && stop_s.load(Ordering::Relaxed)
                            {
                                return (tx, sent);
                            }
                        }
                    }
                    _ => {}
                }
                let stamp = t0.elapsed().as_micros();
                let msg = format!("<message type='chat' to='{to}'><body>{stamp}</body></message>");
                if tx.write_all(msg.as_bytes()).await.is_err() {
                    break;
                }
                sent += 1;
            }
            (tx, sent)
        }));
    }
    let meter = Meter::start(server);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let in_window: u64 = states
        .iter()
        .map(|s| s.received.load(Ordering::Relaxed))
        .sum();
    let (wall, server_cores, client_cores) = meter.read();
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    let mut keep = Vec::new();
    for s in senders {
        let (tx, n) = s.await.map_err(|e| e.to_string())?;
        sent += n;
        keep.push(tx);
    }
    // Stragglers: give late messages a moment to arrive, then stop reading.
    let grace = Instant::now() + Duration::from_secs(5);
    while Instant::now() < grace
        && states
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .sum::<u64>()
            < sent
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in receivers {
        keep_rx(r.await.map_err(|e| e.to_string())?);
    }
    let mut all = std::mem::take(&mut *samples.lock().expect("samples"));
    all.sort_unstable();
    let delivered = all.len() as u64;
    Ok((
        Rate {
            per_sec: in_window as f64 / wall,
            server_cores,
            client_cores,
        },
        Latency {
            sent,
            delivered,
            samples: all,
            client_cores,
            server_cores,
        },
    ))
}

fn keep_rx(_c: Conn) {}

/// Takes the first `<body …>STAMP</body>` out of `buf`, with everything before it.
fn take_body(buf: &mut Vec<u8>) -> Option<u64> {
    let i = find(buf, b"<body")?;
    let open_end = i + find(&buf[i..], b">")? + 1;
    let close = open_end + find(&buf[open_end..], b"</body>")?;
    let stamp = std::str::from_utf8(&buf[open_end..close])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    buf.drain(..close + 7);
    Some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_taken_in_order_and_partial_ones_wait() {
        let mut buf =
            b"<message><body xml:lang='en'>12</body></message><message><body>34</bo".to_vec();
        assert_eq!(take_body(&mut buf), Some(12));
        assert_eq!(take_body(&mut buf), None);
        buf.extend_from_slice(b"dy></message>");
        assert_eq!(take_body(&mut buf), Some(34));
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let l = Latency {
            samples: (1..=100).map(|v| v * 1000).collect(),
            ..Default::default()
        };
        assert_eq!(l.pct(0.5), 51.0);
        assert_eq!(l.pct(0.99), 99.0);
        assert_eq!(l.pct(1.0), 100.0);
    }
}
