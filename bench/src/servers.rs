//! The three servers under test, each configured for the bench domain on loopback with the same
//! certificate and comparable features (stream management, carbons, archive, CSI, PEP), started,
//! measured (RSS and CPU of its own processes) and stopped by the tool.

use crate::chroot::Chroot;
use crate::client::{DOMAIN, PASSWORD};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the chroot servers keep their configuration and data (inside the chroot).
const SRV: &str = "srv/hearth-bench";

#[derive(Clone, Debug)]
pub enum Kind {
    /// A hearthd build; the label tells builds apart (glibc, musl, …).
    Hearthd {
        label: String,
        bin: PathBuf,
    },
    Prosody,
    Ejabberd,
}

impl Kind {
    pub fn name(&self) -> String {
        match self {
            Kind::Hearthd { label, .. } => format!("hearthd ({label})"),
            Kind::Prosody => "Prosody".into(),
            Kind::Ejabberd => "ejabberd".into(),
        }
    }
}

/// One server's configuration and data directory, made once; it may be started more than once
/// (the 256 MiB cgroup run reuses the accounts).
pub struct Instance {
    pub kind: Kind,
    pub port: u16,
    /// The certificate as the client reads it (host path).
    pub cert: PathBuf,
    /// The directory as the host sees it.
    dir: PathBuf,
    /// The directory as the server sees it (inside the chroot for Prosody and ejabberd).
    inner: String,
}

/// A started server.
pub struct Running {
    child: Child,
    pgid: i32,
}

/// A free loopback port for a server, below the kernel's ephemeral range so that no outgoing
/// connection (in CI the tests run beside the smoke run; Prosody and ejabberd take seconds to
/// start) can take it first (`hearthd::loopback_port`); 0 if there is none.
pub fn free_port() -> u16 {
    hearthd::loopback_port::free().unwrap_or(0)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

impl Instance {
    /// Writes the configuration and certificate; hearthd's accounts (`users`) go straight into its
    /// database, the others register theirs in-band once started (see `needs_registration`).
    pub async fn prepare(
        kind: Kind,
        work: &Path,
        chroot: Option<&Chroot>,
        pem: &(String, String),
        users: usize,
    ) -> Result<Instance, String> {
        let port = free_port();
        let slug: String = kind
            .name()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        let (dir, inner) = match (&kind, chroot) {
            (Kind::Hearthd { .. }, _) => {
                let d = work.join(&slug);
                (d.clone(), d.display().to_string())
            }
            // Per run (pid), so two runs sharing the cached chroot never meet.
            (_, Some(c)) => {
                let run = format!("{SRV}/{}/{slug}", std::process::id());
                (c.root.join(&run), format!("/{run}"))
            }
            (_, None) => return Err(format!("{} needs the chroot", kind.name())),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).map_err(|e| format!("{}: {e}", dir.display()))?;
        write(&dir.join("cert.pem"), &pem.0)?;
        write(&dir.join("key.pem"), &pem.1)?;
        match &kind {
            Kind::Hearthd { .. } => {
                write(&dir.join("hearth.toml"), &hearthd_config(&inner, port))?;
                let storage = hearthd::storage::Storage::open(&dir.join("data/hearth.sqlite"))
                    .map_err(|e| e.to_string())?;
                let creds = hearthd::storage::accounts_derive(PASSWORD.to_string(), 4096)
                    .await
                    .map_err(|e| e.to_string())?;
                for i in 0..users {
                    storage
                        .register(&format!("u{i}"), creds.clone(), false)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Kind::Prosody => write(&dir.join("prosody.cfg.lua"), &prosody_config(&inner, port))?,
            Kind::Ejabberd => {
                write(&dir.join("ejabberd.yml"), &ejabberd_config(&inner, port))?;
                // Debian's ejabberdctl.cfg puts the pid file under /run, which the chroot lacks.
                write(
                    &dir.join("ejabberdctl.cfg"),
                    &format!(
                        "ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\nEJABBERD_PID_PATH={inner}/ejabberd.pid\n\
                         EJABBERD_CONFIG_PATH={inner}/ejabberd.yml\n"
                    ),
                )?
            }
        }
        if let (Some(c), Some(user)) = (chroot, run_user(&kind)) {
            let (uid, gid) = c.user(user)?;
            chown_tree(&dir, uid, gid)?;
        }
        Ok(Instance {
            cert: dir.join("cert.pem"),
            kind,
            port,
            dir,
            inner,
        })
    }

    pub fn needs_registration(&self) -> bool {
        !matches!(self.kind, Kind::Hearthd { .. })
    }

    /// Starts the server, on CPU `pin` if given, inside the cgroup whose `cgroup.procs` is given.
    pub async fn start(
        &self,
        chroot: Option<&Chroot>,
        pin: Option<usize>,
        cgroup_procs: Option<&Path>,
    ) -> Result<Running, String> {
        let inner = &self.inner;
        let mut cmd = match (&self.kind, chroot) {
            (Kind::Hearthd { bin, .. }, _) => {
                let mut c = Command::new(bin);
                c.arg("--config").arg(self.dir.join("hearth.toml"));
                c.env("HEARTH_LOG", "warn");
                c
            }
            (Kind::Prosody, Some(ch)) => ch.command(
                "prosody",
                &[],
                &[
                    "prosody",
                    "--config",
                    &format!("{inner}/prosody.cfg.lua"),
                    "-F",
                ],
            ),
            (Kind::Ejabberd, Some(ch)) => {
                // A fixed distribution port instead of epmd: no daemon outlives the run.
                let dist = free_port().to_string();
                ch.command(
                    "ejabberd",
                    &[("HOME", "/var/lib/ejabberd"), ("ERL_DIST_PORT", &dist)],
                    &[
                        "ejabberdctl",
                        "--ctl-config",
                        &format!("{inner}/ejabberdctl.cfg"),
                        "--config",
                        &format!("{inner}/ejabberd.yml"),
                        "--spool",
                        &format!("{inner}/data"),
                        "--logs",
                        inner,
                        "foreground-quiet",
                    ],
                )
            }
            _ => return Err("Prosody and ejabberd need the chroot".into()),
        };
        // Wrappers (taskset, the cgroup entry) exec the real command, so the pid stays the server's.
        let mut argv: Vec<String> = vec![];
        if let Some(procs) = cgroup_procs {
            argv.extend([
                "sh".into(),
                "-c".into(),
                format!("echo $$ > '{}' && exec \"$@\"", procs.display()),
                "sh".into(),
            ]);
        }
        if let Some(cpu) = pin {
            argv.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
        }
        if !argv.is_empty() {
            let mut wrapped = Command::new(&argv[0]);
            wrapped
                .args(&argv[1..])
                .arg(cmd.get_program())
                .args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                if let Some(v) = v {
                    wrapped.env(k, v);
                }
            }
            cmd = wrapped;
        }
        let log = std::fs::File::create(self.dir.join("stdout.log")).map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.kind.name()))?;
        let pgid = child.id() as i32;
        let mut running = Running { child, pgid };
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = running.child.try_wait() {
                return Err(format!(
                    "{} exited at start ({status}); its output ends: {}",
                    self.kind.name(),
                    self.log_tail()
                ));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(running);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.stop();
        Err(format!(
            "{} did not listen on 127.0.0.1:{} within 90 s; its output ends: {}",
            self.kind.name(),
            self.port,
            self.log_tail()
        ))
    }

    /// The last lines the server wrote (its directory is removed when the run ends).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" / ")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // The run's directory in the chroot, once its last server is gone (fails while not empty).
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Shells and wrappers that start a server but are not it (ejabberdctl's script stays as a parent).
const WRAPPERS: &[&str] = &[
    "sh",
    "dash",
    "bash",
    "ejabberdctl",
    "su",
    "unshare",
    "taskset",
    "chroot",
    "env",
];

impl Running {
    /// The server's own processes: everything in its process group but the wrappers.
    fn pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return vec![];
        };
        let mut out = vec![];
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(f) = stat_fields(pid) else { continue };
            // After the command name: state, ppid, pgrp.
            if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(self.pgid)
                && !WRAPPERS.contains(&comm(pid).as_str())
            {
                out.push(pid);
            }
        }
        out
    }

    /// Resident memory of the server's processes, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids().iter().map(|p| status_kib(*p, "VmRSS:")).sum()
    }

    /// CPU time the server's processes used so far, seconds.
    pub fn cpu_secs(&self) -> f64 {
        let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let ticks: u64 = self
            .pids()
            .iter()
            .filter_map(|p| stat_fields(*p))
            .map(|f| {
                // utime and stime are fields 14 and 15 of the stat line, 11 and 12 after the name.
                f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                    + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            })
            .sum();
        ticks as f64 / tick
    }

    /// Pins every thread of the server to `cpu`, or lets them run anywhere again (None).
    pub fn pin(&self, cpu: Option<usize>) {
        for pid in self.pids() {
            pin_threads(&format!("/proc/{pid}/task"), cpu);
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !self.alive() && self.pids().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sets the CPU affinity of every thread listed under `task_dir` (a /proc/PID/task directory).
pub fn pin_threads(task_dir: &str, cpu: Option<usize>) {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(cpu.map_or(0, |c| c + 1));
    let all = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(cpus)
        .max(cpus);
    match cpu {
        Some(c) => {
            let _ = set.set(c);
        }
        None => {
            for c in 0..all {
                let _ = set.set(c);
            }
        }
    }
    let Ok(dir) = std::fs::read_dir(task_dir) else {
        return;
    };
    for e in dir.flatten() {
        if let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            let _ = sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set);
        }
    }
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn run_user(kind: &Kind) -> Option<&'static str> {
    match kind {
        Kind::Hearthd { .. } => None,
        Kind::Prosody => Some("prosody"),
        Kind::Ejabberd => Some("ejabberd"),
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let p = e.path();
        if p.is_dir() {
            chown_tree(&p, uid, gid)?;
        } else {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// hearthd as shipped (its modules are on by default), with limits raised for 10,000 sessions.
/// Like Prosody and ejabberd here it does not listen for other servers (port 5269 may be taken,
/// and no peer comes); its federation code is still loaded.
pub fn hearthd_config(dir: &str, port: u16) -> String {
    format!(
        "domain = \"{DOMAIN}\"\ndata_dir = \"{dir}/data\"\ncontrol_socket = \"{dir}/control.sock\"\n\
         [tls]\ncert = \"{dir}/cert.pem\"\nkey = \"{dir}/key.pem\"\n\
         [listen]\nc2s = [\"127.0.0.1:{port}\"]\nc2s_direct_tls = []\n\
         [s2s]\nlisten = []\nlisten_direct_tls = []\n\
         [limits]\nnegotiation_timeout_secs = 120\nidle_timeout_secs = 3600\nmax_connections = 30000\n"
    )
}

/// Prosody 13 with the modules a phone uses: stream management, carbons, archive (kept a week),
/// CSI, PEP, blocking, and in-band registration for the bench's accounts. No s2s, no HTTP.
pub fn prosody_config(dir: &str, port: u16) -> String {
    format!(
        r#"-- written by hearth-bench
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ warn = "{dir}/prosody.log" }}
network_backend = "epoll"
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "register";
  "carbons"; "pep"; "blocklist"; "vcard_legacy"; "private";
  "mam"; "smacks"; "csi_simple";
}}
modules_disabled = {{ "s2s" }}
allow_registration = true
c2s_require_encryption = true
authentication = "internal_hashed"
storage = "internal"
archive_expires_after = "1w"
default_archive_policy = true
ssl = {{ certificate = "{dir}/cert.pem"; key = "{dir}/key.pem" }}
VirtualHost "{DOMAIN}"
"#
    )
}

/// ejabberd 24.12 with the same features: mod_stream_mgmt, mod_carboncopy, mod_mam (always archive),
/// mod_client_state, PEP through mod_pubsub, mod_blocking, and open in-band registration without
/// its per-address pause. No shapers (they would cap throughput), no s2s, no HTTP.
pub fn ejabberd_config(dir: &str, port: u16) -> String {
    format!(
        r#"# written by hearth-bench
hosts: ["{DOMAIN}"]
loglevel: warning
certfiles: ["{dir}/cert.pem", "{dir}/key.pem"]
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    max_stanza_size: 262144
auth_method: internal
auth_password_format: scram
registration_timeout: infinity
max_fsm_queue: 10000
access_rules:
  register:
    allow: all
  local:
    allow: all
  pubsub_createnode:
    allow: all
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_client_state: {{}}
  mod_stream_mgmt:
    resend_on_timeout: if_offline
  mod_mam:
    default: always
  mod_pubsub:
    plugins: ["flat", "pep"]
  mod_privacy: {{}}
  mod_blocking: {{}}
  mod_vcard: {{}}
  mod_offline: {{}}
  mod_register:
    access: register
    ip_access: all
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_config_names_the_port_the_directory_and_the_comparable_features() {
        let h = hearthd_config("/d", 4242);
        assert!(h.contains("c2s = [\"127.0.0.1:4242\"]") && h.contains("\"/d/cert.pem\""));
        assert!(
            h.contains("max_connections = 30000"),
            "10,000 sessions must fit"
        );
        let p = prosody_config("/d", 4242);
        for m in [
            "\"smacks\"",
            "\"carbons\"",
            "\"mam\"",
            "\"csi_simple\"",
            "\"pep\"",
        ] {
            assert!(p.contains(m), "Prosody lacks {m}");
        }
        assert!(p.contains("c2s_ports = { 4242 }") && p.contains("VirtualHost \"bench.test\""));
        let e = ejabberd_config("/d", 4242);
        for m in [
            "mod_stream_mgmt",
            "mod_carboncopy",
            "mod_mam",
            "mod_client_state",
            "\"pep\"",
        ] {
            assert!(e.contains(m), "ejabberd lacks {m}");
        }
        assert!(e.contains("port: 4242") && e.contains("registration_timeout: infinity"));
    }
}
