//! DNS-01 through RFC 2136: hearth-acme sends TSIG-signed dynamic updates to a real authoritative
//! server (Debian's Knot DNS), which Pebble then asks for the `_acme-challenge` records. A wrong
//! key is refused by the server and reported as such, with the old certificate kept.

use hearth_e2e::pebble::{free_port, verify_chain, AcmeBox, Pebble, PebbleOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A test TSIG secret (32 bytes, base64); the wrong one differs in its first bytes.
const SECRET: &str = "yCp1y0mAa8q1sD3cQ9Vt0b7m5Kf2Lw4Hn6Jr8Tx0Zc4=";
const WRONG: &str = "AAAAAAAAa8q1sD3cQ9Vt0b7m5Kf2Lw4Hn6Jr8Tx0Zc4=";

/// knotd serving `zone` on 127.0.0.1:`port`, accepting updates signed with key "hearth".
struct Knot {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Knot {
    fn start(zone: &str) -> Knot {
        if Command::new("sh")
            .args(["-c", "command -v knotd"])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            let out = Command::new("sh")
                .args(["-c", "apt-get install -y -qq knot 2>&1"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "knot is not installed and apt-get failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_port();
        std::fs::write(
            dir.path().join("zone"),
            format!("$ORIGIN {zone}.\n$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1\n@ A 127.0.0.1\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("knot.conf"),
            format!(
                "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\ndatabase:\n    storage: {d}\n\
                 key:\n  - id: hearth\n    algorithm: hmac-sha256\n    secret: {SECRET}\n\
                 acl:\n  - id: update\n    key: hearth\n    action: update\n\
                 zone:\n  - domain: {zone}\n    file: {d}/zone\n    storage: {d}\n    acl: update\n    zonefile-sync: -1\n    journal-content: none\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("knotd.log")).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start knotd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "knotd did not start: {}",
                std::fs::read_to_string(dir.path().join("knotd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Knot { child, dir, port }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("knot.conf")
    }

    /// The TXT records now at `name` in the zone, as knotc prints them.
    fn txt(&self, zone: &str, name: &str) -> String {
        let out = Command::new("knotc")
            .arg("-c")
            .arg(self.conf())
            .args(["zone-read", zone, name, "TXT"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn configure(bx: &AcmeBox, pebble: &Pebble, knot: &Knot, secret: &str) {
    bx.configure(&format!(
        "{}\n[acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:{}\"\nkey_name = \"hearth\"\nkey_secret = \"{secret}\"\npropagation_secs = 0\n",
        pebble.acme_toml("dns-01"),
        knot.port
    ));
}

#[test]
fn rfc2136_updates_a_real_dns_server_and_a_wrong_key_is_explained() {
    let knot = Knot::start("knot.test");
    let pebble = Pebble::start(PebbleOptions {
        dns_server: Some(format!("127.0.0.1:{}", knot.port)),
        ..Default::default()
    })
    .unwrap();
    let bx = AcmeBox::new("knot.test");
    configure(&bx, &pebble, &knot, SECRET);

    let out = bx.run(&["renew"]);
    assert!(
        out.success,
        "renew failed: {out:?}\n{}\n{}",
        pebble.logs(),
        std::fs::read_to_string(knot.dir.path().join("knotd.log")).unwrap_or_default()
    );
    let chain = bx.read(&bx.cert);
    let root = pebble.root_pem().unwrap();
    for name in bx.names() {
        verify_chain(&chain, &root, &name)
            .unwrap_or_else(|e| panic!("chain not valid for {name}: {e}"));
    }
    assert!(
        !knot.txt("knot.test", "_acme-challenge").contains("TXT \""),
        "challenge records are removed afterwards"
    );

    configure(&bx, &pebble, &knot, WRONG);
    let key = bx.read(&bx.key);
    let out = bx.run(&["renew", "--force"]);
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr.contains("signature is wrong") || out.stderr.contains("NOTAUTH"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("key_secret"),
        "says which setting to check: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("The current certificate is kept"),
        "{}",
        out.stderr
    );
    assert_eq!((bx.read(&bx.cert), bx.read(&bx.key)), (chain, key));
}
