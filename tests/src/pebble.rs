//! The ACME test rig: Debian's `pebble` (a small ACME CA for testing) and `pebble-challtestsrv`
//! (its DNS server, which answers every A query with 127.0.0.1 and serves the TXT records set
//! through its management API), started on loopback on free ports and stopped on drop.
//!
//! Pebble has no TLS certificate for its own listener; we make a little CA and a `127.0.0.1`
//! certificate with rcgen and hand the CA to the client under test (`--ca-bundle`). The webroot
//! server below answers HTTP-01 challenges the way `hearth-web` does on a box.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the daemons may take to open their ports on a busy two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// Port where Pebble validates HTTP-01 (its `httpPort`). Bind your webroot server first and
    /// pass its port; 0 picks a free port nobody serves.
    pub http_port: u16,
    /// Percentage of good nonces Pebble rejects with `badNonce` (Pebble's default is 5).
    pub nonce_reject_percent: u8,
    /// Lifetime of issued certificates in seconds (Pebble's default is five years).
    pub cert_validity_secs: Option<u64>,
    /// DNS server Pebble asks (`host:port`) instead of challtestsrv, e.g. a Knot that takes RFC 2136 updates.
    pub dns_server: Option<String>,
}

impl Default for PebbleOptions {
    fn default() -> Self {
        PebbleOptions {
            http_port: 0,
            nonce_reject_percent: 0,
            cert_validity_secs: None,
            dns_server: None,
        }
    }
}

/// A running Pebble and challtestsrv. Dropping it stops both.
pub struct Pebble {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    /// The ACME directory, `https://127.0.0.1:<port>/dir`.
    pub directory_url: String,
    /// PEM of the CA that signed Pebble's own listener certificate: pass it as `--ca-bundle`.
    pub ca_bundle: PathBuf,
    /// Pebble's management API (roots, intermediates), `https://127.0.0.1:<port>`.
    pub management_url: String,
    /// challtestsrv's management API (`/set-txt`, `/clear-txt`), `http://127.0.0.1:<port>`.
    pub challtestsrv_url: String,
    pub http_port: u16,
}

/// Installs Debian's `pebble` package when the binaries are missing (the tests run as root on CI).
pub fn ensure_installed() -> Result<(), String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let have = |b: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {b}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have("pebble") && have("pebble-challtestsrv") {
        return Ok(());
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("(apt-get install -y -qq pebble || (apt-get update -qq && apt-get install -y -qq pebble)) 2>&1")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run apt-get to install pebble: {e}"))?;
    if have("pebble") && have("pebble-challtestsrv") {
        Ok(())
    } else {
        Err(format!(
            "pebble is not installed and apt-get failed (run as root: apt-get install pebble):\n{}",
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

pub use crate::server::free_port;

impl Pebble {
    pub fn start(opts: PebbleOptions) -> Result<Pebble, String> {
        ensure_installed()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ca_bundle = dir.path().join("listener-ca.pem");
        let (cert, key) = (
            dir.path().join("listener.pem"),
            dir.path().join("listener.key"),
        );
        make_listener_cert(&ca_bundle, &cert, &key)?;
        let (acme, mgmt, dns, cts_mgmt, tls) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let http_port = if opts.http_port == 0 {
            free_port()
        } else {
            opts.http_port
        };
        let mut pebble = serde_like_json(&[
            ("listenAddress", format!("\"127.0.0.1:{acme}\"")),
            ("managementListenAddress", format!("\"127.0.0.1:{mgmt}\"")),
            ("certificate", format!("{:?}", cert.display().to_string())),
            ("privateKey", format!("{:?}", key.display().to_string())),
            ("httpPort", http_port.to_string()),
            ("tlsPort", tls.to_string()),
            ("ocspResponderURL", "\"\"".into()),
            ("externalAccountBindingRequired", "false".into()),
        ]);
        if let Some(v) = opts.cert_validity_secs {
            pebble = pebble.replacen('{', &format!("{{\"certificateValidityPeriod\":{v},"), 1);
        }
        let config = dir.path().join("pebble.json");
        std::fs::write(&config, format!("{{\"pebble\":{pebble}}}")).map_err(|e| e.to_string())?;

        let mut rig = Pebble {
            children: Vec::new(),
            directory_url: format!("https://127.0.0.1:{acme}/dir"),
            ca_bundle,
            management_url: format!("https://127.0.0.1:{mgmt}"),
            challtestsrv_url: format!("http://127.0.0.1:{cts_mgmt}"),
            http_port,
            dir,
        };
        rig.spawn(
            "pebble-challtestsrv",
            Command::new("pebble-challtestsrv").args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                // No AAAA answers, so Pebble dials 127.0.0.1 where the test's webroot listens.
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{cts_mgmt}"),
            ]),
            &[cts_mgmt],
        )?;
        rig.spawn(
            "pebble",
            Command::new("pebble")
                .arg("-config")
                .arg(&config)
                .arg("-dnsserver")
                .arg(
                    opts.dns_server
                        .clone()
                        .unwrap_or_else(|| format!("127.0.0.1:{dns}")),
                )
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env(
                    "PEBBLE_WFE_NONCEREJECT",
                    opts.nonce_reject_percent.to_string(),
                )
                // Every order validates afresh, so a failure test cannot pass on an old authorization.
                .env("PEBBLE_AUTHZREUSE", "0"),
            &[acme, mgmt],
        )?;
        Ok(rig)
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command, ports: &[u16]) -> Result<(), String> {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        self.children.push(child);
        let deadline = Instant::now() + START_TIMEOUT;
        for &port in ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                let exited = self
                    .children
                    .last_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() || Instant::now() > deadline {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!(
                        "{name} did not open port {port} ({exited:?}); its log:\n{text}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Both daemons' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        ["pebble-challtestsrv", "pebble"]
            .iter()
            .map(|n| {
                format!(
                    "--- {n}\n{}",
                    std::fs::read_to_string(self.dir.path().join(format!("{n}.log")))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    /// The PEM of Pebble's current issuing root, which issued certificates chain to.
    pub fn root_pem(&self) -> Result<String, String> {
        let port: u16 = self
            .management_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("bad management url")?;
        https_get(&self.ca_bundle, port, "/roots/0")
    }

    /// An `[acme]` section pointing at this Pebble (directory and the listener CA).
    pub fn acme_toml(&self, challenge: &str) -> String {
        format!(
            "[acme]\nemail = \"owner@hearth.test\"\nchallenge = \"{challenge}\"\ndirectory = \"{}\"\nca_bundle = {:?}\n",
            self.directory_url,
            self.ca_bundle.display().to_string()
        )
    }

    /// Publishes a TXT value through challtestsrv's API, as a DNS provider would (tests use it to
    /// plant a wrong value).
    pub fn set_txt(&self, host: &str, value: &str) -> Result<(), String> {
        let port: u16 = self
            .challtestsrv_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("bad url")?;
        let body = format!("{{\"host\":\"{host}.\",\"value\":\"{value}\"}}");
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        write!(
            s,
            "POST /set-txt HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("challtestsrv answered: {reply}"))
        }
    }

    /// Stops Pebble and challtestsrv now (as when the CA is down).
    pub fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serde_like_json(pairs: &[(&str, String)]) -> String {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// A CA and a certificate for `127.0.0.1`/`localhost` signed by it, for Pebble's listeners.
fn make_listener_cert(ca_path: &Path, cert_path: &Path, key_path: &Path) -> Result<(), String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Hearth test listener CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let key = KeyPair::generate().map_err(e)?;
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(e)?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).map_err(e)?;
    std::fs::write(ca_path, ca_cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(cert_path, cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(key_path, key.serialize_pem()).map_err(|e| e.to_string())
}

fn roots_from(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(path).map_err(|e| format!("{e:?}"))? {
        roots
            .add(c.map_err(|e| format!("{e:?}"))?)
            .map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// A one-shot HTTPS GET on loopback, trusting only `ca`.
fn https_get(ca: &Path, port: u16, path: &str) -> Result<String, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots_from(ca)?)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    match tls.read_to_end(&mut reply) {
        Ok(_) => {}
        // Go closes without close_notify after HTTP/1.0; the body is complete by then.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&reply);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .ok_or_else(|| format!("odd reply: {text}"))
}

/// Checks, as a TLS client would, that `chain_pem` is valid for `name` under the root `root_pem`.
pub fn verify_chain(chain_pem: &str, root_pem: &str, name: &str) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{e:?}"))?;
    let (leaf, intermediates) = chain.split_first().ok_or("empty chain")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| format!("{e:?}"))?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(leaf, intermediates, &server, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Serves files under a directory over plain HTTP/1.0 on 127.0.0.1, as `hearth-web` serves the
/// ACME webroot. Stops on drop.
pub struct WebrootServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebrootServer {
    pub fn start(root: &Path) -> Result<WebrootServer, String> {
        Self::start_on(root, 0)
    }

    /// Serves `root` on `port` (0: a free one).
    pub fn start_on(root: &Path, port: u16) -> Result<WebrootServer, String> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (root, flag) = (root.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let root = root.clone();
                        std::thread::spawn(move || serve_one(sock, &root));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(WebrootServer {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for WebrootServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(sock: TcpStream, root: &Path) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&sock);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let safe = path.starts_with('/') && !path.split('/').any(|seg| seg == "..");
    let file = root.join(path.trim_start_matches('/'));
    let (status, body) = match std::fs::read(&file) {
        Ok(b) if safe && file.is_file() => ("200 OK", b),
        _ => ("404 Not Found", b"not found".to_vec()),
    };
    let mut out = &sock;
    let _ = write!(out, "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = out.write_all(&body);
}

/// The `hearth-acme` binary that `cargo build --workspace --bins` made (scripts/test.sh does that
/// first), so the tests run the program exactly as the timer does.
pub fn hearth_acme_bin() -> PathBuf {
    crate::server::binary("hearth-acme")
}

/// A box's files for `hearth-acme`: a temp dir with `hearth.toml`, `tls/`, the state dir and the
/// webroot, and a way to run the real binary against it.
pub struct AcmeBox {
    pub dir: tempfile::TempDir,
    pub domain: String,
    pub config: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub webroot: PathBuf,
    pub state_file: PathBuf,
}

/// What one run of `hearth-acme` printed.
#[derive(Debug)]
pub struct RunOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl AcmeBox {
    /// A box for `domain` with `groups.` and `share.` services; call `configure` before running.
    pub fn new(domain: &str) -> AcmeBox {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path();
        let webroot = p.join("data/acme-webroot");
        std::fs::create_dir_all(&webroot).expect("webroot");
        AcmeBox {
            domain: domain.to_string(),
            cert: p.join("tls/cert.pem"),
            key: p.join("tls/key.pem"),
            state_file: p.join("data/certs/state.json"),
            config: p.join("hearth.toml"),
            webroot,
            dir,
        }
    }

    /// Writes `hearth.toml` with `acme` as its `[acme]` section(s).
    pub fn configure(&self, acme: &str) {
        let p = self.dir.path();
        let text = format!(
            "domain = \"{domain}\"\ndata_dir = {data:?}\ncontrol_socket = {sock:?}\n\n[tls]\ncert = {cert:?}\nkey = {key:?}\n\n\
             [services]\nmuc = \"groups.{domain}\"\nupload = \"share.{domain}\"\n\n{acme}\n",
            domain = self.domain,
            data = p.join("data").display().to_string(),
            sock = p.join("control.sock").display().to_string(),
            cert = self.cert.display().to_string(),
            key = self.key.display().to_string(),
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn names(&self) -> Vec<String> {
        let d = &self.domain;
        vec![d.clone(), format!("groups.{d}"), format!("share.{d}")]
    }

    /// Runs `hearth-acme --config <this box> <args>`.
    pub fn run(&self, args: &[&str]) -> RunOutput {
        let out = Command::new(hearth_acme_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .output()
            .expect("run hearth-acme");
        RunOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn read(&self, p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }
}
