//! Issue 13, acceptance 5: two friends call each other through the box's TURN server. Debian's
//! coturn runs on loopback with a secret made here (as the image's `hearth-turn-secret.service`
//! makes it) and `use-auth-secret`; alice's slixmpp asks hearthd for the external services
//! (XEP-0215) and coturn's own `turnutils_uclient` allocates a relay with exactly what hearthd
//! said: host, port, username, password, over UDP, TCP and TLS. Once the `expires` time has passed,
//! the same credentials are refused, while fresh ones from hearthd work again.

use base64::Engine;
use hearth_e2e::server::{free_port, TestServer, DOMAIN};
use serde_json::{json, Value};
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NS: &str = "urn:xmpp:extdisco:2";
/// Short, so the test can watch a credential expire; the default is a day.
const LIFETIME_SECS: u64 = 30;

/// coturn on loopback, killed when dropped.
struct Coturn {
    child: Child,
    log: std::path::PathBuf,
}

impl Coturn {
    fn start(
        dir: &Path,
        secret: &str,
        port: u16,
        tls_port: u16,
        cert: &Path,
        key: &Path,
    ) -> Coturn {
        // A small relay range somewhere in the ephemeral ports, away from other tests' listeners.
        let base = 50_000 + (std::process::id() % 500) as u16 * 20;
        let conf = dir.join("turnserver.conf");
        std::fs::write(
            &conf,
            format!(
                "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
                 tls-listening-port={tls_port}\ncert={cert}\npkey={key}\nno-dtls\n\
                 min-port={base}\nmax-port={max}\nrealm={DOMAIN}\nuse-auth-secret\n\
                 static-auth-secret={secret}\nfingerprint\nno-cli\nno-software-attribute\n\
                 userdb={db}\n# the peer in this test is on loopback too\nallow-loopback-peers\n\
                 log-file=stdout\nsimple-log\n",
                cert = cert.display(),
                key = key.display(),
                max = base + 19,
                db = dir.join("turndb").display(),
            ),
        )
        .expect("write turnserver.conf");
        let log = dir.join("turnserver.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("turnserver (Debian package coturn; scripts/install-test-deps.sh installs it)");
        let c = Coturn { child, log };
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "coturn did not listen:\n{}", c.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// coturn's test client: one allocation on `service` with its credentials, one message to a peer
/// through the relay. `Ok(relay address)` or `Err(output)`.
fn allocate(service: &Value, username: &str, password: &str) -> Result<String, String> {
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-v", "-n", "1", "-m", "1", "-l", "100", "-y"])
        .args(["-u", username, "-w", password])
        .args(["-p", service["port"].as_str().expect("port")]);
    match (service["type"].as_str(), service["transport"].as_str()) {
        (Some("turn"), Some("udp")) => {}
        (Some("turn"), Some("tcp")) => {
            cmd.arg("-t");
        }
        (Some("turns"), _) => {
            cmd.args(["-t", "-S"]);
        }
        other => panic!("not a TURN service: {other:?}"),
    }
    cmd.arg(service["host"].as_str().expect("host"));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("turnutils_uclient (Debian package coturn)");
    // It finishes in seconds; a refused allocation makes it give up, not hang.
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    child.stdout.take().unwrap().read_to_string(&mut text).ok();
    child.stderr.take().unwrap().read_to_string(&mut text).ok();
    let relay = text
        .lines()
        .find_map(|l| l.split("Received relay addr: ").nth(1))
        .map(|a| a.trim().to_string());
    match (status, relay) {
        (Some(s), Some(relay)) if s.success() => Ok(relay),
        (s, _) => Err(format!("exit {s:?}:\n{text}")),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("random bytes");
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

fn find<'a>(services: &'a [Value], kind: &str, transport: &str) -> &'a Value {
    services
        .iter()
        .find(|s| s["type"] == kind && s["transport"] == transport)
        .unwrap_or_else(|| panic!("no {kind}/{transport} in {services:?}"))
}

fn credentials_of(s: &Value) -> (String, String) {
    (
        s["username"].as_str().expect("username").to_string(),
        s["password"].as_str().expect("password").to_string(),
    )
}

#[test]
fn a_call_relays_through_coturn_with_credentials_from_hearthd_until_they_expire() {
    let scratch = tempfile::tempdir().unwrap();
    let secret_file = scratch.path().join("turn-secret");
    let secret = random_secret();
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let server = TestServer::start(&format!(
        "[modules.external_services]\nsecret_file = {secret_file:?}\nhost = \"127.0.0.1\"\n\
         port = {port}\ntls_port = {tls_port}\ncredential_lifetime_secs = {LIFETIME_SECS}\n"
    ));
    // TURNS uses the same certificate as the XMPP server, as on the box.
    let coturn = Coturn::start(
        scratch.path(),
        &secret,
        port,
        tls_port,
        &server.cert_path,
        &server.key_path,
    );
    server.add_user("alice", "alice-password");
    let mut alice = server.agent("alice", "alice-password");
    alice.connect();

    let disco = alice.cmd(json!({"cmd": "disco"}));
    assert!(
        disco["features"].as_array().unwrap().contains(&json!(NS)),
        "{disco}"
    );

    // What Conversations does before a call: all services, credentials included.
    let asked_at = unix_now();
    let r = alice.cmd(json!({"cmd": "external_services"}));
    assert_eq!(r["ok"], json!(true), "{r}\n{}", server.log());
    let services = r["services"].as_array().unwrap().clone();
    assert_eq!(services.len(), 5, "{services:?}");
    let stun = find(&services, "stun", "udp");
    assert!(stun.get("password").is_none(), "STUN is open: {stun}");
    let first = find(&services, "turn", "udp").clone();
    let (user, pass) = credentials_of(&first);
    let expires = hearthd::timefmt::parse_xep0082(first["expires"].as_str().unwrap()).unwrap();
    let expiry_in_name: i64 = user.split(':').next().unwrap().parse().unwrap();
    assert_eq!(expires, expiry_in_name, "{first}");
    assert!(
        (asked_at + LIFETIME_SECS - 2..=asked_at + LIFETIME_SECS + 5).contains(&(expires as u64)),
        "{first}"
    );
    assert!(
        !user.contains("alice"),
        "the JID must not travel in clear: {user}"
    );

    // A relay over UDP with exactly these credentials.
    let relay = allocate(&first, &user, &pass)
        .unwrap_or_else(|e| panic!("UDP allocation refused: {e}\ncoturn:\n{}", coturn.log()));
    assert!(relay.starts_with("127.0.0.1:"), "{relay}");

    // §3.3: credentials for one named service, then TCP and TLS with fresh ones.
    for (kind, transport) in [("turn", "tcp"), ("turns", "tcp")] {
        let service_port = if kind == "turns" { tls_port } else { port };
        let r = alice.cmd(json!({
            "cmd": "external_services", "what": "credentials",
            "services": [{"type": kind, "host": "127.0.0.1", "port": service_port}],
        }));
        assert_eq!(r["ok"], json!(true), "{r}");
        let list = r["services"].as_array().unwrap().clone();
        let s = find(&list, kind, transport);
        let (u, p) = credentials_of(s);
        allocate(s, &u, &p).unwrap_or_else(|e| {
            panic!(
                "{kind}/{transport} allocation refused: {e}\ncoturn:\n{}",
                coturn.log()
            )
        });
    }

    // A password that is not the HMAC of the username is refused.
    let forged = format!("{}A=", &pass[..pass.len() - 2]);
    assert!(
        allocate(&first, &user, &forged).is_err(),
        "a forged password was accepted"
    );

    // The first credentials expire: coturn refuses them, fresh ones from hearthd still work.
    let wait = (expires + 2).saturating_sub(unix_now() as i64);
    std::thread::sleep(Duration::from_secs(wait.max(0) as u64));
    let refused = allocate(&first, &user, &pass);
    assert!(
        refused.is_err(),
        "expired credentials allocated a relay: {refused:?}"
    );
    let r = alice.cmd(json!({"cmd": "external_services", "type": "turn"}));
    let list = r["services"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{r}");
    let fresh = find(&list, "turn", "udp");
    let (u, p) = credentials_of(fresh);
    assert_ne!(u, user);
    allocate(fresh, &u, &p)
        .unwrap_or_else(|e| panic!("fresh credentials refused: {e}\ncoturn:\n{}", coturn.log()));

    // Credentials only for services this server runs.
    let r = alice.cmd(json!({
        "cmd": "external_services", "what": "credentials",
        "services": [{"type": "turn", "host": "turn.elsewhere.example"}],
    }));
    assert_eq!(r["condition"], json!("item-not-found"), "{r}");
    alice.disconnect();
}
