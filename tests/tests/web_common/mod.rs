//! Shared by the `web_*` tests: a real `hearth-web` on loopback ports with its own directories,
//! the walk through the wizard, a real `hearthd` started on the config the wizard wrote, and a
//! slixmpp client that registers with an invite token.
#![allow(dead_code)]

use hearth_e2e::browser::Browser;
use hearth_e2e::server::{binary, free_port};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const DOMAIN: &str = "hearth.test";
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery";

pub struct WebServer {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub boot_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The owner's SSH keys (never the box's real /var/lib/hearth-ssh).
    pub ssh_keys: PathBuf,
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl WebServer {
    /// Starts `hearth-web` on a fresh state directory; `extra` flags are appended.
    pub fn start(extra: &[&str]) -> WebServer {
        let mut s = WebServer::new(extra);
        s.spawn();
        s
    }

    /// The directories and ports, without starting anything yet.
    pub fn new(extra: &[&str]) -> WebServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().to_path_buf();
        let s = WebServer {
            http_port: free_port(),
            https_port: free_port(),
            config: p.join("etc/hearth.toml"),
            data_dir: p.join("data"),
            boot_dir: p.join("boot"),
            state_dir: p.join("web"),
            ssh_keys: p.join("ssh/authorized_keys"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            child: None,
        };
        std::fs::create_dir_all(&s.boot_dir).expect("boot dir");
        s
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let child = Command::new(binary("hearth-web"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--listen-tls")
            .arg(format!("127.0.0.1:{}", self.https_port))
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--boot-dir")
            .arg(&self.boot_dir)
            .arg("--hearth-acme")
            .arg(self.dir.path().join("no-hearth-acme-here"))
            .arg("--ssh-keys")
            .arg(&self.ssh_keys)
            .args(&self.extra)
            .env("HEARTH_LOG", "debug")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn hearth-web");
        let log = self.log_path();
        self.child = Some(child);
        wait_port(self.http_port, self.child.as_mut().expect("child"), &log);
    }

    /// Stops and starts again on the same directories, as a reboot would.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("hearth-web.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    /// The code as the owner reads it from SETUP-CODE.txt on the boot partition.
    pub fn setup_code(&self) -> String {
        let text = std::fs::read_to_string(self.boot_dir.join("SETUP-CODE.txt"))
            .expect("SETUP-CODE.txt written at start");
        let line = text.lines().next().expect("first line");
        line.rsplit(' ').next().expect("code").trim().to_string()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "process exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "nothing listens on port {port}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Walks the wizard from the setup code to the done page with the standard answers (own domain
/// `hearth.test`, admin, invite-only, self-signed). `shots` prefixes screenshot names, or None.
/// Signs in on the admin pages as `user` (a name or `name@domain`) with the admin password, starting
/// from plain HTTP, which must move to HTTPS.
pub fn sign_in(b: &Browser, web: &WebServer, user: &str) {
    b.goto(&web.url("/admin"));
    assert!(
        b.url().starts_with(&web.https_url("/admin/login")),
        "plain HTTP moves to HTTPS: {}",
        b.url()
    );
    b.fill("#username", user);
    b.fill("#password", ADMIN_PASSWORD);
    b.submit("button[type=submit]");
    assert!(b.url().ends_with("/admin"), "{}", b.body_text());
}

pub fn run_wizard(b: &Browser, web: &WebServer, shots: Option<&str>) {
    let shot = |name: &str| {
        if let Some(prefix) = shots {
            b.screenshots(&format!("{prefix}{name}"));
        }
    };
    b.goto(&web.url("/"));
    b.fill("#code", &web.setup_code());
    shot("1-setup-code");
    b.submit("button[type=submit]");
    b.click("input[name=kind][value=own]");
    b.fill("#domain", DOMAIN);
    shot("2-name");
    b.submit("button[type=submit]");
    b.fill("#username", ADMIN);
    b.fill("#password", ADMIN_PASSWORD);
    b.fill("#password_again", ADMIN_PASSWORD);
    shot("3-admin");
    b.submit("button[type=submit]");
    shot("4-join");
    b.submit("button[type=submit]");
    b.click("input[name=mode][value=self-signed]");
    shot("5-certificate");
    b.submit("button[type=submit]");
    assert!(
        b.body_text().contains("Your Hearth is ready"),
        "done page: {}",
        b.body_text()
    );
}

/// A running `hearthd` on the config the wizard wrote, moved to free loopback ports.
pub struct Hearthd {
    child: Child,
    pub c2s_port: u16,
    pub cert: PathBuf,
    log: PathBuf,
}

impl Hearthd {
    /// The wizard writes the box's real ports (5222…) and socket path; a test on a shared
    /// machine moves them to free loopback ports and a private socket, changing nothing else.
    pub fn start(web: &WebServer) -> Hearthd {
        let mut config =
            hearthd::config::Config::load(&web.config).expect("the wizard wrote a valid config");
        let c2s_port = free_port();
        config.listen.c2s = vec![format!("127.0.0.1:{c2s_port}").parse().expect("addr")];
        config.listen.c2s_direct_tls =
            vec![format!("127.0.0.1:{}", free_port()).parse().expect("addr")];
        config.control_socket = web.dir.path().join("control.sock");
        config
            .write_atomically(&web.config)
            .expect("rewrite config");
        let log = web.dir.path().join("hearthd.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let mut child = Command::new(binary("hearthd"))
            .arg("--config")
            .arg(&web.config)
            .env("HEARTH_LOG", "debug")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn hearthd");
        wait_port(c2s_port, &mut child, &log);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !config.control_socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Hearthd {
            child,
            c2s_port,
            cert: config.tls.cert,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn agent(&self, user: &str, password: &str) -> hearth_e2e::agent::Agent {
        hearth_e2e::agent::Agent::spawn(
            &format!("{user}@{DOMAIN}"),
            password,
            self.c2s_port,
            &self.cert,
            &[],
        )
    }

    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Hearthd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers `user` with the invite `token` the way Conversations does with an invite link:
/// a real slixmpp client presents the token (XEP-0401 preauth) and registers in-band (XEP-0077).
/// Returns the connect reply (`ok` true once registered and logged in).
pub fn register_with_token(
    hd: &Hearthd,
    token: &str,
    user: &str,
    password: &str,
) -> serde_json::Value {
    // `--token=VALUE`: a token may start with '-' (base64url), which argparse would take for an option.
    let token_arg = format!("--token={token}");
    let args = ["--register", token_arg.as_str()];
    let mut agent = hearth_e2e::agent::Agent::spawn(
        &format!("{user}@{DOMAIN}"),
        password,
        hd.c2s_port,
        &hd.cert,
        &args,
    );
    let r = agent.try_connect();
    if r["ok"] == serde_json::json!(true) {
        agent.disconnect();
    }
    r
}

/// The token from an `xmpp:DOMAIN?register;preauth=TOKEN` URI.
pub fn token_of(uri: &str) -> String {
    uri.split("preauth=")
        .nth(1)
        .expect("preauth in the invite URI")
        .split(';')
        .next()
        .unwrap_or("")
        .to_string()
}
