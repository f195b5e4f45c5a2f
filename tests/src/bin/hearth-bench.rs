//! `hearth-bench`: measures what a 512 MB board cares about — hearthd's idle RSS, the RSS each
//! idle authenticated TLS session adds, and message throughput and latency between client
//! pairs — against a real hearthd process on loopback. Prints a Markdown report.
//!
//!   cargo build --release -p hearthd -p hearth-e2e
//!   target/release/hearth-bench --sessions 1000 --pairs 50 --messages 200
//!   target/release/hearth-bench --sessions 1000 --enable carbons,csi,sm

use base64::Engine;
use hearthd::storage::Storage;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const DOMAIN: &str = "bench.test";
const PASSWORD: &str = "bench-password";

struct Opts {
    sessions: usize,
    pairs: usize,
    messages: usize,
    interval_ms: u64,
    hearthd: PathBuf,
    /// What every idle session turns on after binding, as a phone would.
    enable: Enable,
}

/// Per-session features a mobile client turns on; the memory figure is meant with them.
#[derive(Clone, Copy, Default)]
struct Enable {
    /// XEP-0280 `<enable xmlns='urn:xmpp:carbons:2'/>`.
    carbons: bool,
    /// XEP-0352 `<inactive/>` (only if the server offers `<csi/>`).
    csi: bool,
    /// XEP-0198 `<enable resume='true'/>` (only if the server offers `<sm/>`).
    sm: bool,
}

impl Enable {
    fn parse(list: &str) -> Result<Enable, String> {
        let mut e = Enable::default();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "carbons" => e.carbons = true,
                "csi" => e.csi = true,
                "sm" => e.sm = true,
                "all" => {
                    e = Enable {
                        carbons: true,
                        csi: true,
                        sm: true,
                    }
                }
                other => {
                    return Err(format!(
                        "--enable: unknown feature {other:?} (carbons, csi, sm, all)"
                    ))
                }
            }
        }
        Ok(e)
    }
}

/// What a session actually got: a feature asked for but not offered by the server is skipped.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Enabled {
    carbons: bool,
    csi: bool,
    sm: bool,
}

impl Enabled {
    fn describe(&self) -> String {
        let mut on: Vec<&str> = Vec::new();
        for (flag, name) in [
            (self.sm, "stream management"),
            (self.carbons, "carbons"),
            (self.csi, "CSI inactive"),
        ] {
            if flag {
                on.push(name);
            }
        }
        if on.is_empty() {
            "none".into()
        } else {
            on.join(", ")
        }
    }
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        sessions: 1000,
        pairs: 50,
        messages: 200,
        interval_ms: 10,
        hearthd: default_hearthd(),
        enable: Enable::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--sessions" => {
                o.sessions = val("--sessions")?
                    .parse()
                    .map_err(|e| format!("--sessions: {e}"))?
            }
            "--pairs" => {
                o.pairs = val("--pairs")?
                    .parse()
                    .map_err(|e| format!("--pairs: {e}"))?
            }
            "--messages" => {
                o.messages = val("--messages")?
                    .parse()
                    .map_err(|e| format!("--messages: {e}"))?
            }
            "--interval-ms" => {
                o.interval_ms = val("--interval-ms")?
                    .parse()
                    .map_err(|e| format!("--interval-ms: {e}"))?
            }
            "--hearthd" => o.hearthd = PathBuf::from(val("--hearthd")?),
            "--enable" => o.enable = Enable::parse(&val("--enable")?)?,
            "-h" | "--help" => {
                println!(
                    "hearth-bench: memory and message benchmarks against a real hearthd on loopback\n\n\
                     Options:\n  --sessions N   idle authenticated TLS sessions to open (default 1000)\n  \
                     --pairs N      sender/receiver pairs for throughput (default 50)\n  \
                     --messages N   messages per pair (default 200)\n  \
                     --interval-ms N pause between one sender's messages (default 10)\n  \
                     --hearthd PATH the server binary (default: next to this one)\n  \
                     --enable LIST  per idle session, after binding: carbons, csi (<inactive/>),\n                 \
                     sm (<enable resume='true'/>, only if offered), or all; comma-separated\n"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}; see --help")),
        }
    }
    Ok(o)
}

fn default_hearthd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("hearthd")))
        .unwrap_or_else(|| "hearthd".into())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65536), hard);
    }
}

struct Server {
    child: Child,
    port: u16,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(o: &Opts, users: usize) -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let pair = hearthd::certs::self_signed(&[DOMAIN.to_string()]).map_err(|e| e.to_string())?;
    std::fs::write(&cert, pair.cert_pem).map_err(|e| e.to_string())?;
    std::fs::write(&key, pair.key_pem).map_err(|e| e.to_string())?;
    let data = dir.path().join("data");
    // Accounts are made directly in the database before the server starts.
    let storage = Storage::open(&data.join("hearth.sqlite")).map_err(|e| e.to_string())?;
    let creds = hearthd::storage::accounts_derive(PASSWORD.to_string(), 4096)
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..users {
        storage
            .register(&format!("u{i}"), creds.clone(), false)
            .await
            .map_err(|e| e.to_string())?;
    }
    drop(storage);
    let port = free_port();
    let config = dir.path().join("hearth.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"{DOMAIN}\"\ndata_dir = {data:?}\ncontrol_socket = {:?}\n[tls]\ncert = {cert:?}\nkey = {key:?}\n\
             [listen]\nc2s = []\nc2s_direct_tls = [\"127.0.0.1:{port}\"]\n[auth]\nallow_plain = true\n\
             [limits]\nnegotiation_timeout_secs = 120\n",
            dir.path().join("control.sock")
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new(&o.hearthd)
        .arg("--config")
        .arg(&config)
        .env("HEARTH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", o.hearthd.display()))?;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(Server {
                child,
                port,
                cert,
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("hearthd did not start".into())
}

fn connector(cert: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("cert").flatten() {
        let _ = roots.add(c);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

type Conn = TlsStream<TcpStream>;

/// Reads until `needle`; returns the text up to and including it.
async fn read_until(c: &mut Conn, buf: &mut Vec<u8>, needle: &str) -> Result<String, String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(buf, needle.as_bytes()) {
            let seen: Vec<u8> = buf.drain(..i + needle.len()).collect();
            return Ok(String::from_utf8_lossy(&seen).into_owned());
        }
        let n = tokio::time::timeout(Duration::from_secs(60), c.read(&mut chunk))
            .await
            .map_err(|_| format!("timeout waiting for {needle}"))?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed while waiting for {needle}"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Logs in as `user` (PLAIN inside TLS), binds, turns on what `enable` asks for (and the
/// server offers), sends initial presence.
async fn login(
    tls: &TlsConnector,
    port: u16,
    user: &str,
    enable: Enable,
) -> Result<(Conn, Enabled), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    // Like real clients: no Nagle delay on small stanzas.
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut c = tls
        .connect(ServerName::try_from(DOMAIN).expect("name"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let header = format!("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>");
    let mut buf = Vec::new();
    c.write_all(header.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    read_until(&mut c, &mut buf, "</stream:features>").await?;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
    c.write_all(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
            .as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    read_until(&mut c, &mut buf, "<success").await?;
    c.write_all(header.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let features = read_until(&mut c, &mut buf, "</stream:features>").await?;
    c.write_all(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>").await.map_err(|e| e.to_string())?;
    read_until(&mut c, &mut buf, "</iq>").await?;
    let offered = |ns: &str| {
        features.contains(&format!("xmlns='{ns}'")) || features.contains(&format!("xmlns=\"{ns}\""))
    };
    let mut got = Enabled::default();
    // Everything read after stream management was enabled, to acknowledge it like a client.
    let mut since_enabled = String::new();
    if enable.sm && offered("urn:xmpp:sm:3") {
        c.write_all(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await
            .map_err(|e| e.to_string())?;
        let answer = read_until(&mut c, &mut buf, "/>").await?;
        if !answer.contains("<enabled") {
            return Err(format!("stream management not enabled: {answer}"));
        }
        got.sm = true;
    }
    if enable.carbons {
        c.write_all(b"<iq type='set' id='bench-carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            .await
            .map_err(|e| e.to_string())?;
        let answer = read_until(&mut c, &mut buf, "bench-carbons").await?;
        since_enabled.push_str(&answer);
        since_enabled.push_str(&read_until(&mut c, &mut buf, ">").await?);
        if answer.contains("type='error'") {
            return Err(format!("carbons refused: {answer}"));
        }
        got.carbons = true;
    }
    if enable.csi && offered("urn:xmpp:csi:0") {
        c.write_all(b"<inactive xmlns='urn:xmpp:csi:0'/>")
            .await
            .map_err(|e| e.to_string())?;
        got.csi = true;
    }
    c.write_all(b"<presence/>")
        .await
        .map_err(|e| e.to_string())?;
    if got.sm {
        // A phone acknowledges what it got (XEP-0198 `<a h=…/>`), so an idle session's
        // unacknowledged queue is empty, as it would be in real life: after a ping's answer
        // (and our own presence, unless CSI holds it back), count the stanzas since
        // <enabled/> and acknowledge them.
        c.write_all(b"<iq type='get' id='bench-ping'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await
            .map_err(|e| e.to_string())?;
        since_enabled.push_str(&read_until(&mut c, &mut buf, "bench-ping").await?);
        since_enabled.push_str(&read_until(&mut c, &mut buf, ">").await?);
        if !got.csi && !since_enabled.contains("<presence") {
            since_enabled.push_str(&read_until(&mut c, &mut buf, "<presence").await?);
        }
        let h = ["<iq ", "<presence", "<message"]
            .iter()
            .map(|tag| since_enabled.matches(tag).count())
            .sum::<usize>();
        c.write_all(format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((c, got))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hearth-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(o).await {
        eprintln!("hearth-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(o: Opts) -> Result<(), String> {
    raise_fd_limit();
    let users = o.sessions.max(o.pairs * 2);
    eprintln!(
        "creating {users} accounts and starting {} …",
        o.hearthd.display()
    );
    let server = start_server(&o, users).await?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);

    let tls = connector(&server.cert);
    // One session first, so the per-session figure excludes one-time start-up costs.
    let (warm, enabled) = login(&tls, server.port, "u0", o.enable).await?;
    eprintln!("each idle session enables: {}", enabled.describe());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let one = rss_kib(pid);
    eprintln!("opening {} idle sessions …", o.sessions);
    let started = Instant::now();
    let mut idle_conns = vec![warm];
    for i in 1..o.sessions {
        let (conn, got) = login(&tls, server.port, &format!("u{i}"), o.enable).await?;
        if got != enabled {
            return Err(format!("u{i} enabled {} unlike u0", got.describe()));
        }
        idle_conns.push(conn);
    }
    let login_rate = (o.sessions - 1) as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(pid);
    let per_session = (loaded.saturating_sub(one)) as f64 * 1024.0 / (o.sessions - 1) as f64;
    drop(idle_conns);
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("throughput: {} pairs × {} messages …", o.pairs, o.messages);
    let t0 = Instant::now();
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for p in 0..o.pairs {
        let (a, b) = (format!("u{}", 2 * p), format!("u{}", 2 * p + 1));
        let (sender, _) = login(&tls, server.port, &a, Enable::default()).await?;
        let (receiver, _) = login(&tls, server.port, &b, Enable::default()).await?;
        senders.push((sender, b));
        receivers.push(receiver);
    }
    let expected = o.messages;
    let mut handles = Vec::new();
    for mut r in receivers {
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(expected);
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            while lat.len() < expected {
                let n =
                    match tokio::time::timeout(Duration::from_secs(30), r.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => break,
                    };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(i) = find(&buf, b"<body>") {
                    let Some(j) = find(&buf[i..], b"</body>") else {
                        break;
                    };
                    let sent: u64 = std::str::from_utf8(&buf[i + 6..i + j])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    lat.push((t0.elapsed().as_micros() as u64).saturating_sub(sent));
                    buf.drain(..i + j + 7);
                }
            }
            lat
        }));
    }
    let send_start = Instant::now();
    let mut send_handles = Vec::new();
    for (mut s, to) in senders {
        let n = o.messages;
        let pause = Duration::from_millis(o.interval_ms);
        send_handles.push(tokio::spawn(async move {
            for _ in 0..n {
                let stamp = t0.elapsed().as_micros();
                let msg = format!(
                    "<message type='chat' to='{to}@{DOMAIN}/bench'><body>{stamp}</body></message>"
                );
                if s.write_all(msg.as_bytes()).await.is_err() {
                    break;
                }
                // Pace each sender a little, like people typing fast, not a flood.
                tokio::time::sleep(pause).await;
            }
            s
        }));
    }
    let mut keep = Vec::new();
    for h in send_handles {
        keep.push(h.await.map_err(|e| e.to_string())?);
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.map_err(|e| e.to_string())?);
    }
    let elapsed = send_start.elapsed().as_secs_f64();
    all.sort_unstable();
    let delivered = all.len();
    let rate = delivered as f64 / elapsed;
    let peak = rss_kib(pid);

    println!("## hearth-bench results\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| idle RSS (no sessions) | {:.1} MiB |",
        idle as f64 / 1024.0
    );
    println!(
        "| RSS with {} idle TLS sessions | {:.1} MiB |",
        o.sessions,
        loaded as f64 / 1024.0
    );
    println!(
        "| RSS added per idle authenticated TLS session ({}) | {:.1} KiB |",
        enabled.describe(),
        per_session / 1024.0
    );
    println!("| logins per second (PLAIN in TLS, PBKDF2 4096) | {login_rate:.0} |");
    println!(
        "| messages delivered | {delivered} of {} |",
        o.pairs * o.messages
    );
    println!(
        "| messages per second ({} pairs, one message per {} ms each) | {rate:.0} |",
        o.pairs, o.interval_ms
    );
    println!(
        "| latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        percentile(&all, 0.5) as f64 / 1000.0,
        percentile(&all, 0.99) as f64 / 1000.0,
        all.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "| RSS after the message run | {:.1} MiB |",
        peak as f64 / 1024.0
    );
    drop(keep);
    drop(server);
    Ok(())
}
