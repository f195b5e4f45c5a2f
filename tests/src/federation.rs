//! The federation rig: a network namespace of the test's own (its own loopback, so servers
//! can listen on the standard ports 5269/5270 at 127.0.0.1, .2 and .3), names for
//! `hearth.test`, `prosody.test` and `ejabberd.test` from a hosts file and a Knot DNS server
//! (with SRV records) inside it, a test CA, and Debian's Prosody as the remote server.
//!
//! `ip netns exec` bind-mounts `/etc/netns/NAME/{hosts,resolv.conf}` over the real ones, so
//! nothing outside the namespace is touched. The test re-runs itself inside the namespace
//! ([`run_in_netns`]); every process it starts there lives and dies with it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the test process that runs inside the namespace.
const INSIDE: &str = "HEARTH_S2S_NETNS";

pub const HEARTH_IP: &str = "127.0.0.1";
pub const PROSODY_IP: &str = "127.0.0.2";
pub const EJABBERD_IP: &str = "127.0.0.3";

/// Runs the test `name` (this test binary, `--exact name`) inside a new network namespace and
/// returns false; returns true when called inside it, where the test's body should run.
pub fn run_in_netns(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "federation tests make a network namespace and need root (CI runs as root)"
    );
    // Tests of one binary run in parallel, each in a namespace of its own.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ns = format!("hearth-s2s-{}-{n}", std::process::id());
    let etc = PathBuf::from("/etc/netns").join(&ns);
    std::fs::create_dir_all(&etc).expect("mkdir /etc/netns/NAME");
    std::fs::write(
        etc.join("hosts"),
        format!(
            "127.0.0.1 localhost\n::1 localhost\n{HEARTH_IP} hearth.test groups.hearth.test\n\
             {PROSODY_IP} prosody.test\n{EJABBERD_IP} ejabberd.test\n"
        ),
    )
    .expect("write hosts");
    std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.53\n").expect("resolv.conf");
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["netns", "add", &ns]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(std::env::current_exe().expect("current_exe"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, &ns)
        .status()
        .expect("run the test inside the namespace");
    // Whatever is still running in there (nothing, if the test cleaned up) goes with it.
    if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let _ = std::fs::remove_dir_all(&etc);
    assert!(status.success(), "the test failed inside the namespace");
    false
}

/// Installs Debian packages the rig needs when they are missing.
pub fn need_packages(packages: &[(&str, &str)]) {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(bin, _)| !Path::new(bin).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    let out = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("apt-get");
    assert!(
        out.status.success(),
        "{missing:?} not installed and apt-get failed (run scripts/install-test-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority for the test; its leaves are what the servers present.
pub struct TestCa {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Hearth federation test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("CA cert");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write CA");
        TestCa { key, cert, dir }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `name` into `<name>.crt`/`<name>.key`; `client_auth` adds the
    /// clientAuth usage next to serverAuth (public CAs are dropping it).
    pub fn issue(&self, name: &str, client_auth: bool) -> (PathBuf, PathBuf) {
        self.issue_for(&[name], client_auth)
    }

    /// As `issue`, for several names (the first also names the files).
    pub fn issue_for(&self, names: &[&str], client_auth: bool) -> (PathBuf, PathBuf) {
        let name = names[0];
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        // A month: ejabberd arms an Erlang timer for the expiry, which cannot wait longer than
        // about 49 days (rcgen's default, the year 4096, makes it crash).
        let (y, m, d) = civil_date_in_days(-1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil_date_in_days(30);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        if client_auth {
            params
                .extended_key_usages
                .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        let (c, k) = (
            self.dir.path().join(format!("{name}.crt")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// The calendar date `days` from today (UTC), as (year, month, day).
fn civil_date_in_days(days: i64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = now / 86_400 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

/// A child process killed on drop, with its log file.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(ip: &str, port: u16, what: &Proc, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect((ip, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {ip}:{port}:\n{}",
            what.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Knot DNS on 127.0.0.53:53 (the namespace's resolv.conf), authoritative for `test.`: the
/// servers' addresses and their SRV records.
pub fn start_dns(dir: &Path) -> Proc {
    need_packages(&[("/usr/sbin/knotd", "knot")]);
    let d = dir.display();
    std::fs::write(
        dir.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\n\
             ns A 127.0.0.53\nhearth A {HEARTH_IP}\ngroups.hearth A {HEARTH_IP}\nprosody A {PROSODY_IP}\nejabberd A {EJABBERD_IP}\n\
             _xmpp-server._tcp.hearth SRV 0 5 5269 hearth.test.\n\
             _xmpp-server._tcp.prosody SRV 0 5 5269 prosody.test.\n\
             _xmpp-server._tcp.ejabberd SRV 0 5 5269 ejabberd.test.\n"
        ),
    )
    .expect("zone");
    std::fs::write(
        dir.join("knot.conf"),
        format!(
            "server:\n    listen: 127.0.0.53@53\n    rundir: {d}\ndatabase:\n    storage: {d}\n\
             zone:\n  - domain: test\n    file: {d}/test.zone\n    storage: {d}\n    zonefile-sync: -1\n    journal-content: none\n"
        ),
    )
    .expect("knot.conf");
    let log = dir.join("knotd.log");
    let f = std::fs::File::create(&log).expect("log");
    let child = Command::new("knotd")
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(f.try_clone().expect("log"))
        .stderr(f)
        .spawn()
        .expect("start knotd");
    let p = Proc { child, log };
    wait_port("127.0.0.53", 53, &p, "knotd");
    p
}

/// How a Prosody instance treats certificates.
pub struct ProsodyTrust<'a> {
    /// The CA file Prosody trusts for peers' certificates (None: the system's only, so it
    /// cannot verify Hearth's test certificate and falls back to dialback).
    pub ca: Option<&'a Path>,
    /// `s2s_secure_auth`: refuse peers whose certificate does not verify.
    pub secure_auth: bool,
}

/// Debian's Prosody for `prosody.test` on 127.0.0.2 (c2s 5222, s2s 5269), with `users`
/// (name, password) and the certificate the CA issued for it.
pub fn start_prosody(
    dir: &Path,
    ca: &TestCa,
    trust: ProsodyTrust<'_>,
    users: &[(&str, &str)],
) -> Proc {
    need_packages(&[("/usr/bin/prosody", "prosody")]);
    // A server certificate without the clientAuth usage, as Let's Encrypt now issues: Hearth
    // must accept it when Prosody presents it as its client certificate.
    let (cert, key) = ca.issue("prosody.test", false);
    let data = dir.join("data");
    let accounts = data.join("prosody%2etest").join("accounts");
    std::fs::create_dir_all(&accounts).expect("mkdir");
    for (user, password) in users {
        std::fs::write(
            accounts.join(format!("{user}.dat")),
            format!("return {{ [\"password\"] = {password:?}; }};\n"),
        )
        .expect("account");
    }
    let cafile = trust
        .ca
        .map(|c| format!("cafile = {:?};", c.display().to_string()))
        .unwrap_or_default();
    let log = dir.join("prosody.log");
    let config = format!(
        r#"run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{data}"
interfaces = {{ "{PROSODY_IP}" }}
c2s_ports = {{ 5222 }}
s2s_ports = {{ 5269 }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ 5270 }}
http_ports = {{ }}
https_ports = {{ }}
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{log}" }} }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "pep"; "posix" }}
modules_disabled = {{ "s2s_bidi" }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure}
s2s_timeout = 20
ssl = {{ certificate = "{cert}"; key = "{key}"; {cafile} }}
unbound = {{ resolvconf = "/etc/resolv.conf"; hoststxt = "/etc/hosts" }}
VirtualHost "prosody.test"
"#,
        dir = dir.display(),
        data = data.display(),
        log = log.display(),
        secure = trust.secure_auth,
        cert = cert.display(),
        key = key.display(),
    );
    let cfg = dir.join("prosody.cfg.lua");
    std::fs::write(&cfg, config).expect("prosody config");
    let out = std::fs::File::create(dir.join("prosody.out")).expect("out");
    let child = Command::new("prosody")
        .arg("-F")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("out"))
        .stderr(out)
        .spawn()
        .expect("start prosody");
    let p = Proc { child, log };
    wait_port(PROSODY_IP, 5222, &p, "prosody");
    wait_port(PROSODY_IP, 5269, &p, "prosody");
    p
}

/// Debian's ejabberd for `ejabberd.test` on 127.0.0.3 (c2s 5222, s2s 5269), with `users`.
/// `trust_ca`: whether it trusts the test CA for peers' certificates (else it can only
/// accept Hearth by dialback). ejabberdctl runs it as the `ejabberd` user, so its directory is
/// handed to that user.
pub fn start_ejabberd(dir: &Path, ca: &TestCa, trust_ca: bool, users: &[(&str, &str)]) -> Proc {
    need_packages(&[("/usr/sbin/ejabberdctl", "ejabberd")]);
    let (cert, key) = ca.issue("ejabberd.test", true);
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(&cert).expect("cert"),
        std::fs::read_to_string(&key).expect("key")
    );
    std::fs::write(dir.join("ejabberd.pem"), pem).expect("pem");
    // Without our CA, a CA of its own that signed nothing here.
    let ca_file = if trust_ca {
        std::fs::copy(ca.ca_path(), dir.join("ca.pem")).expect("ca");
        dir.join("ca.pem")
    } else {
        let other = TestCa::new();
        std::fs::copy(other.ca_path(), dir.join("other-ca.pem")).expect("ca");
        dir.join("other-ca.pem")
    };
    let d = dir.display();
    let config = format!(
        r#"hosts:
  - ejabberd.test
loglevel: debug
certfiles:
  - "{d}/ejabberd.pem"
ca_file: "{ca}"
listen:
  -
    port: 5222
    ip: "{EJABBERD_IP}"
    module: ejabberd_c2s
    starttls_required: true
  -
    port: 5269
    ip: "{EJABBERD_IP}"
    module: ejabberd_s2s_in
s2s_use_starttls: required
s2s_dns_timeout: 5
s2s_dns_retries: 1
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  s2s:
    allow: all
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_s2s_dialback: {{}}
  mod_offline: {{}}
"#,
        ca = ca_file.display(),
    );
    std::fs::write(dir.join("ejabberd.yml"), config).expect("config");
    std::fs::write(
        dir.join("ejabberdctl.cfg"),
        "ERLANG_NODE=ejabberd@localhost\n",
    )
    .expect("cfg");
    for sub in ["spool", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    // ejabberdctl switches to the ejabberd user: it must reach and own its directory.
    let mut p = dir.to_path_buf();
    while let Some(parent) = p.parent() {
        if parent == Path::new("/") || parent == Path::new("/tmp") {
            break;
        }
        let _ = Command::new("chmod").arg("o+x").arg(parent).status();
        p = parent.to_path_buf();
    }
    let ok = Command::new("chown")
        .args(["-R", "ejabberd:ejabberd"])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(ok.success(), "chown ejabberd");
    let ctl = |args: &[&str]| {
        let mut c = Command::new("ejabberdctl");
        // Our own ctl config and config dir: Debian's ejabberdctl.cfg would point at /etc.
        c.arg("--config-dir")
            .arg(dir)
            .arg("--ctl-config")
            .arg(dir.join("ejabberdctl.cfg"))
            .arg("--config")
            .arg(dir.join("ejabberd.yml"))
            .arg("--spool")
            .arg(dir.join("spool"))
            .arg("--logs")
            .arg(dir.join("logs"))
            .args(["--node", "ejabberd@localhost"])
            .args(args)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        c
    };
    let out = std::fs::File::create(dir.join("ejabberd.out")).expect("out");
    let child = ctl(&["foreground"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("out"))
        .stderr(out)
        .spawn()
        .expect("start ejabberd");
    let p = Proc {
        child,
        log: dir.join("logs").join("ejabberd.log"),
    };
    wait_port(EJABBERD_IP, 5269, &p, "ejabberd");
    wait_port(EJABBERD_IP, 5222, &p, "ejabberd");
    for (user, password) in users {
        // The listeners open before the virtual host has finished starting: ask again a while.
        let mut out = ctl(&["register", user, "ejabberd.test", password])
            .output()
            .expect("ejabberdctl register");
        for _ in 0..4 {
            if out.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            out = ctl(&["register", user, "ejabberd.test", password])
                .output()
                .expect("ejabberdctl register");
        }
        assert!(
            out.status.success(),
            "ejabberdctl register {user}: {}{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            p.log(),
            std::fs::read_to_string(dir.join("ejabberd.out")).unwrap_or_default()
        );
    }
    p
}

/// What a Hearth user and a remote user do together: messages and IQs both ways, and a
/// subscription request from the remote side. `logs` explains a failure.
pub fn exchange(
    hearth_user: &mut crate::agent::Agent,
    remote_user: &mut crate::agent::Agent,
    logs: &dyn Fn() -> String,
) {
    use serde_json::json;
    const T: Duration = Duration::from_secs(30);
    let remote_bare = remote_user.jid.clone();
    let remote_domain = remote_bare.split('@').nth(1).expect("domain").to_string();
    let hearth_bare = hearth_user.jid.clone();

    hearth_user.message(&remote_bare, "hello from hearth");
    let m = remote_user.wait_event("message", T, |m| m["body"] == "hello from hearth");
    let m = m.unwrap_or_else(|| panic!("hearth → {remote_domain} lost\n{}", logs()));
    assert!(
        m["from"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{hearth_bare}/")),
        "{m}"
    );
    remote_user.message(&hearth_bare, "hello from afar");
    let m = hearth_user.wait_event("message", T, |m| m["body"] == "hello from afar");
    let m = m.unwrap_or_else(|| panic!("{remote_domain} → hearth lost\n{}", logs()));
    assert!(
        m["from"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{remote_bare}/")),
        "{m}"
    );
    // IQs: each pings the other's server, and the answer finds its way back.
    let r = hearth_user.cmd(json!({"cmd": "ping", "to": remote_domain}));
    assert_eq!(r["ok"], json!(true), "{r}\n{}", logs());
    let r = remote_user.cmd(json!({"cmd": "ping", "to": "hearth.test"}));
    assert_eq!(r["ok"], json!(true), "{r}\n{}", logs());
    // Presence subscriptions both ways: each asks, the other approves, and then each sees the
    // other online and has the other as "both" in the roster.
    remote_user.cmd(json!({"cmd": "subscribe", "to": hearth_bare}));
    let p = hearth_user.wait_event("presence", T, |p| {
        p["type"] == "subscribe" && p["from"] == json!(remote_bare)
    });
    assert!(p.is_some(), "no subscription request at hearth\n{}", logs());
    hearth_user.cmd(json!({"cmd": "authorize", "to": remote_bare}));
    hearth_user.cmd(json!({"cmd": "subscribe", "to": remote_bare}));
    let p = remote_user.wait_event("presence", T, |p| {
        p["type"] == "subscribe" && p["from"] == json!(hearth_bare)
    });
    assert!(
        p.is_some(),
        "no subscription request at {remote_domain}\n{}",
        logs()
    );
    remote_user.cmd(json!({"cmd": "authorize", "to": hearth_bare}));
    let seen = hearth_user.wait_event("presence", T, |p| {
        p["type"] == "available" && p["from"].as_str().unwrap_or("").starts_with(&remote_bare)
    });
    assert!(
        seen.is_some(),
        "hearth user never saw the remote one online\n{}",
        logs()
    );
    let seen = remote_user.wait_event("presence", T, |p| {
        p["type"] == "available" && p["from"].as_str().unwrap_or("").starts_with(&hearth_bare)
    });
    assert!(
        seen.is_some(),
        "the remote user never saw the hearth one online\n{}",
        logs()
    );
    let roster = hearth_user.cmd(json!({"cmd": "roster"}));
    assert_eq!(
        roster["items"][&remote_bare]["subscription"],
        json!("both"),
        "{roster}"
    );
    let roster = remote_user.cmd(json!({"cmd": "roster"}));
    assert_eq!(
        roster["items"][&hearth_bare]["subscription"],
        json!("both"),
        "{roster}"
    );
}

pub use crate::prosody_rig::ProsodyRig;
