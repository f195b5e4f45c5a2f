//! The scenario "closest thing to a Pi": hearthd's memory inside the booted image under QEMU
//! (aarch64, musl, the real units), idle and with a few hundred sessions through the forwarded port,
//! read inside the guest.
//!
//! QEMU is not set up here: `hearth-image boot-test IMAGE --machine virt` boots a copy of the image
//! with its test preseed (domain hearth.test, a throwaway SSH key for root) and, once XMPP answers and
//! the guest's self-test passed, runs its `--hook`. The hook is this program again (`--guest-hook
//! FILE`), which measures over SSH and the forwarded c2s port and writes a [`GuestResult`] to FILE;
//! the boot test stops QEMU when the hook returns, however it returns.

use crate::client::{Client, Conn, Enable};
use crate::guest_report::{machine_options, parse_reading, GuestResult, Reading, READING_SCRIPT};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the hook learns from the outer run, by environment (the boot test passes its own on).
const ENV_SSH_PORT: &str = "HEARTH_BENCH_GUEST_SSH_PORT";
const ENV_SSH_KEY: &str = "HEARTH_BENCH_GUEST_SSH_KEY";
const ENV_SESSIONS: &str = "HEARTH_BENCH_GUEST_SESSIONS";
const ENV_CONCURRENCY: &str = "HEARTH_BENCH_GUEST_CONCURRENCY";

pub struct GuestOpts {
    pub image: PathBuf,
    pub sessions: usize,
    pub concurrency: usize,
}

fn free_port() -> Result<u16, String> {
    match crate::servers::free_port() {
        0 => Err("no free port on 127.0.0.1".into()),
        p => Ok(p),
    }
}

/// The source tree: board-configs/ tells it (the boot test needs it, and the report names the machine).
fn find_repo() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    let starts = [std::env::current_dir().ok(), exe];
    starts
        .into_iter()
        .flatten()
        .flat_map(|p| p.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .find(|d| d.join("board-configs/qemu-virt.toml").is_file())
}

/// Boots the image and measures; never fails outright: what went wrong is in the result's errors.
pub fn run(o: &GuestOpts, enable: Enable) -> GuestResult {
    let started = Instant::now();
    let mut g = GuestResult {
        image: o.image.display().to_string(),
        requested: o.sessions,
        concurrency: o.concurrency,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Default::default()
    };
    if let Err(e) = boot_and_measure(o, enable, &mut g) {
        g.errors.push(e);
    }
    g.total_secs = started.elapsed().as_secs_f64();
    g
}

fn boot_and_measure(o: &GuestOpts, enable: Enable, g: &mut GuestResult) -> Result<(), String> {
    if !o.image.is_file() {
        return Err(format!(
            "--guest-image {}: no such file (build one with `sudo scripts/build-image.sh`; it writes out/hearth-<version>-rpi-arm64.img.xz)",
            o.image.display()
        ));
    }
    let repo = find_repo().ok_or(
        "cannot find the Hearth source tree (board-configs/qemu-virt.toml) from the current directory or this binary: run from the repository",
    )?;
    let board = std::fs::read_to_string(repo.join("board-configs/qemu-virt.toml"))
        .map_err(|e| format!("board-configs/qemu-virt.toml: {e}"))?;
    g.machine = machine_options(&board);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let image_tool = exe.with_file_name("hearth-image");
    if !image_tool.is_file() {
        return Err(format!(
            "{} not found: the guest scenario drives `hearth-image boot-test`; build it beside this tool (`cargo build --release -p hearth-image`)",
            image_tool.display()
        ));
    }
    let work = std::env::temp_dir().join(format!("hearth-bench-guest-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let (port, ssh_port) = (free_port()?, free_port()?);
    let result_file = work.join("guest.json");
    // The hook runs through `sh -c`: quote both paths for it.
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let hook = format!("{} --guest-hook {}", quote(&exe), quote(&result_file));
    eprintln!(
        "booting {} under QEMU (TCG: minutes) with `hearth-image boot-test`; its work directory: {}",
        o.image.display(),
        work.display()
    );
    let status = Command::new(&image_tool)
        .arg("--repo")
        .arg(&repo)
        .arg("boot-test")
        .arg(&o.image)
        .args(["--machine", "virt", "--port", &port.to_string()])
        .args(["--ssh-port", &ssh_port.to_string(), "--output"])
        .arg(&work)
        .args(["--hook", &hook])
        .env(ENV_SSH_PORT, ssh_port.to_string())
        // The boot test makes this key for the run and preseeds its public half for root.
        .env(ENV_SSH_KEY, work.join("ssh-key"))
        .env(ENV_SESSIONS, o.sessions.to_string())
        .env(ENV_CONCURRENCY, o.concurrency.to_string())
        .env("HEARTH_BENCH_GUEST_ENABLE", enable_list(enable))
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot start {}: {e}", image_tool.display()))?;
    if let Ok(text) = std::fs::read_to_string(&result_file) {
        let measured: GuestResult =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", result_file.display()))?;
        let keep = (g.image.clone(), g.machine.clone(), g.command.clone());
        *g = GuestResult {
            image: keep.0,
            machine: keep.1,
            command: keep.2,
            ..measured
        };
    }
    if !status.success() {
        return Err(format!(
            "hearth-image boot-test failed ({status}); console and logs kept in {}",
            work.display()
        ));
    }
    // The disk copy is gigabytes: gone once the figures are in.
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn enable_list(e: Enable) -> String {
    let on: Vec<&str> = [(e.sm, "sm"), (e.carbons, "carbons"), (e.csi, "csi")]
        .iter()
        .filter(|(f, _)| *f)
        .map(|(_, n)| *n)
        .collect();
    if on.is_empty() {
        "none".into()
    } else {
        on.join(",")
    }
}

/// SSH into the guest as root with the boot test's key.
struct Ssh {
    port: u16,
    key: PathBuf,
}

impl Ssh {
    /// Runs `script` in the guest; its stdout, or an error with its stderr. Killed after `limit`.
    fn run(&self, script: &str, limit: Duration) -> Result<String, String> {
        let mut child = Command::new("ssh")
            .arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR"])
            .args(["root@127.0.0.1", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start ssh: {e} (Debian: openssh-client)"))?;
        let deadline = Instant::now() + limit;
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the guest did not finish within {} s: {}",
                    limit.as_secs(),
                    first_line(script)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "in the guest, `{}` failed ({}): {}",
                first_line(script),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One reading, taken off the async runtime (ssh blocks).
    async fn reading(&self) -> Result<Reading, String> {
        let ssh = Ssh {
            port: self.port,
            key: self.key.clone(),
        };
        tokio::task::spawn_blocking(move || ssh.run(READING_SCRIPT, Duration::from_secs(120)))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|text| parse_reading(&text))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn env_var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!(
            "{name} is not set: --guest-hook is run by `hearth-bench --guest-image`, not by hand"
        )
    })
}

fn env_num(name: &str) -> Result<usize, String> {
    let v = env_var(name)?;
    v.parse().map_err(|e| format!("{name}={v:?}: {e}"))
}

/// The hook: runs inside `hearth-image boot-test` once the guest speaks XMPP. Writes what it measured
/// to `file`, errors included; fails when any step failed, so the boot test fails too.
pub async fn hook(file: &Path) -> Result<(), String> {
    let mut g = GuestResult::default();
    let result = measure(&mut g).await;
    if let Err(e) = &result {
        g.errors.push(e.clone());
    }
    let json = serde_json::to_string(&g).map_err(|e| e.to_string())?;
    std::fs::write(file, json).map_err(|e| format!("{}: {e}", file.display()))?;
    result
}

async fn measure(g: &mut GuestResult) -> Result<(), String> {
    let port: u16 = env_num("HEARTH_XMPP_PORT")? as u16;
    let domain = env_var("HEARTH_DOMAIN")?;
    let ssh = Ssh {
        port: env_num(ENV_SSH_PORT)? as u16,
        key: env_var(ENV_SSH_KEY)?.into(),
    };
    let sessions = env_num(ENV_SESSIONS)?.max(2);
    let concurrency = env_num(ENV_CONCURRENCY)?.max(1);
    let enable = crate::parse_enable(&env_var("HEARTH_BENCH_GUEST_ENABLE")?)?;
    g.requested = sessions;
    g.concurrency = concurrency;
    let minute = Duration::from_secs(60);
    g.hearthd_version = ssh.run("hearthd --version", minute)?.trim().to_string();
    g.guest_kernel = ssh.run("uname -srm", minute)?.trim().to_string();

    // The certificate the guest made for itself: the client trusts it and nothing else.
    let config_text = ssh.run("cat /etc/hearth/hearth.toml", minute)?;
    let config =
        hearthd::config::Config::parse(&config_text, "the guest's /etc/hearth/hearth.toml")
            .map_err(|e| e.to_string())?;
    let cert_pem = ssh.run(&format!("cat '{}'", config.tls.cert.display()), minute)?;
    let dir = std::env::temp_dir().join(format!("hearth-bench-hook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cert = dir.join("guest-cert.pem");
    std::fs::write(&cert, cert_pem).map_err(|e| format!("{}: {e}", cert.display()))?;
    let client = Client::new(&cert, port)?.with_domain(&domain);
    let _ = std::fs::remove_dir_all(&dir);

    eprintln!("creating {sessions} accounts with hearthctl in the guest …");
    let t = Instant::now();
    ssh.run(
        &format!(
            "set -e; for i in $(seq 0 {}); do echo '{}' | hearthctl user add u$i >/dev/null; done",
            sessions - 1,
            crate::client::PASSWORD
        ),
        Duration::from_secs(60 + 10 * sessions as u64),
    )?;
    g.accounts_secs = t.elapsed().as_secs_f64();
    // A fresh process for the idle figure, as on the loopback runs (accounts exist before start).
    // Type=notify: restart returns once hearthd is ready.
    ssh.run("systemctl restart hearthd", Duration::from_secs(300))?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    g.idle = Some(ssh.reading().await?);

    let (warm, _) = client
        .login("u0", enable)
        .await
        .map_err(|e| format!("the first login through the forwarded port failed: {e}"))?;
    let mut open: Vec<Conn> = vec![warm];
    tokio::time::sleep(Duration::from_secs(5)).await;
    g.one = Some(ssh.reading().await?);

    eprintln!("opening {sessions} idle sessions, {concurrency} at a time …");
    let t = Instant::now();
    let (failed, err) =
        crate::scenarios::open_sessions(&client, 1, sessions, concurrency, enable, &mut open).await;
    g.open_secs = t.elapsed().as_secs_f64();
    g.up = open.len();
    if let Some(e) = err {
        g.errors.push(format!(
            "{failed} of {} logins failed, first: {e}",
            sessions - 1
        ));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    g.loaded = Some(ssh.reading().await?);
    drop(open);
    eprintln!(
        "guest: idle RSS {} KiB, with {} sessions {} KiB",
        g.idle.as_ref().map(|r| r.rss_kib).unwrap_or(0),
        g.up,
        g.loaded.as_ref().map(|r| r.rss_kib).unwrap_or(0)
    );
    Ok(())
}
