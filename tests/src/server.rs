//! A real `hearthd` process for tests: its own temp directory, certificate, config and loopback
//! ports. Started from the binary that `cargo build --workspace --bins` made (scripts/test.sh
//! does that first), so tests exercise exactly what ships.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DOMAIN: &str = "hearth.test";

/// Directory of the workspace's built binaries (`target/debug`), found from the test binary.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A free loopback port for a server under test (below the kernel's ephemeral range, so no
/// outgoing connection can take it before the server binds it: `hearthd::loopback_port`).
pub fn free_port() -> u16 {
    hearthd::loopback_port::free().expect("no free port on 127.0.0.1")
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub c2s_port: u16,
    pub direct_port: u16,
    child: Option<Child>,
}

impl TestServer {
    /// Starts a server with `extra` appended to the base config (e.g. a `[registration]` table).
    pub fn start(extra: &str) -> TestServer {
        TestServer::start_with_cert(extra, None)
    }

    /// Like `start`, with a certificate and key (PEM files) instead of a self-signed one.
    pub fn start_with_cert(extra: &str, cert: Option<(&Path, &Path)>) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        match cert {
            Some((c, k)) => {
                std::fs::copy(c, &cert_path).expect("copy cert");
                std::fs::copy(k, &key_path).expect("copy key");
            }
            None => write_cert(&cert_path, &key_path),
        }
        let (c2s_port, direct_port) = (free_port(), free_port());
        let config_path = dir.path().join("hearth.toml");
        // Federation listens on fixed ports; tests that want it say so in their own [s2s].
        let extra = if extra.contains("[s2s]") {
            extra.to_string()
        } else {
            format!("{extra}\n[s2s]\nenabled = false\n")
        };
        let config = format!(
            "domain = \"{DOMAIN}\"\ndata_dir = {data:?}\ncontrol_socket = {sock:?}\n{extra}\n\
             [tls]\ncert = {cert_path:?}\nkey = {key_path:?}\n\
             [listen]\nc2s = [\"127.0.0.1:{c2s_port}\"]\nc2s_direct_tls = [\"127.0.0.1:{direct_port}\"]\n",
            data = dir.path().join("data"),
            sock = dir.path().join("control.sock"),
        );
        std::fs::write(&config_path, config).expect("write config");
        let mut s = TestServer {
            dir,
            config_path,
            cert_path,
            key_path,
            c2s_port,
            direct_port,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let child = Command::new(binary("hearthd"))
            .arg("--config")
            .arg(&self.config_path)
            .env("HEARTH_LOG", "debug")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn hearthd");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("hearthd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("data").join("hearth.sqlite")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "hearthd exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.c2s_port)).is_ok()
                && self.dir.path().join("control.sock").exists()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hearthd did not become ready:\n{}", self.log());
    }

    /// Power-cut style stop: SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Polite stop: SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts again after `kill9` or `stop`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    pub fn sighup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP");
    }

    /// Runs `hearthctl --config … ARGS`, feeding `stdin`.
    pub fn hearthctl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(binary("hearthctl"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hearthctl");
        if let Some(input) = stdin {
            // hearthctl may refuse the arguments and exit before reading its input (e.g. a JID
            // on another domain): a broken pipe then is its answer, not a test failure.
            if let Err(e) = child
                .stdin
                .as_mut()
                .expect("stdin")
                .write_all(input.as_bytes())
            {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
            }
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("hearthctl output")
    }

    pub fn add_user(&self, name: &str, password: &str) {
        let out = self.hearthctl(&["user", "add", name], Some(&format!("{password}\n")));
        assert!(
            out.status.success(),
            "user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A slixmpp agent for `user` (not yet connected).
    pub fn agent(&self, user: &str, password: &str) -> crate::agent::Agent {
        crate::agent::Agent::spawn(
            &format!("{user}@{DOMAIN}"),
            password,
            self.c2s_port,
            &self.cert_path,
            &[],
        )
    }

    /// A slixmpp agent trusting `ca` (for a server started with a CA-issued certificate).
    pub fn agent_with_ca(&self, user: &str, password: &str, ca: &Path) -> crate::agent::Agent {
        crate::agent::Agent::spawn(
            &format!("{user}@{DOMAIN}"),
            password,
            self.c2s_port,
            ca,
            &[],
        )
    }

    /// The same over direct TLS (XEP-0368).
    pub fn agent_direct_tls(&self, user: &str, password: &str) -> crate::agent::Agent {
        crate::agent::Agent::spawn(
            &format!("{user}@{DOMAIN}"),
            password,
            self.direct_port,
            &self.cert_path,
            &["--direct-tls"],
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A fresh self-signed certificate for the test domain.
pub fn write_cert(cert: &Path, key: &Path) {
    let pair = hearthd::certs::self_signed(&[DOMAIN.to_string()]).expect("cert");
    std::fs::write(cert, pair.cert_pem).expect("write cert");
    std::fs::write(key, pair.key_pem).expect("write key");
}
