//! `hearth-image boot-test IMAGE`: boots a copy of the image under QEMU with a preseed on its FAT, waits
//! until the forwarded port speaks XMPP, and reads the guest's self-test report from the serial console.
//! With `--no-preseed` it boots the image as downloaded and waits for the setup wizard instead.
//! The default preseed carries a throwaway SSH key made for the run: the test logs in with it as root
//! through a forwarded port, and checks that another key is refused; without a key (`--no-preseed`), the
//! guest must have no SSH server listening.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::disk;
use crate::error::{Context, Error, Result};
use crate::progress::{fmt_secs, Steps};
use crate::qemu::{self, Launch};
use crate::selftest::{console_lines, judge, preseed_has_ssh_key, Expect};
use crate::verify::unpacked;
use crate::{fat, imager_card, run};

/// What the test writes to hearth-setup.toml unless --preseed names another file.
const TEST_PRESEED: &str = r#"# Written by hearth-image boot-test.
hostname = "hearth"

# QEMU has no Wi-Fi: the test checks that first boot wrote wpa_supplicant's file with the derived key
# only, and that the passphrase is gone from this file.
[wifi]
ssid = "hearth-boot-test"
psk = "boot-test-wifi-passphrase"
country = "DE"

[server]
domain = "hearth.test"
# open: the client test registers a second account in-band.
registration = "open"
certificate = "self-signed"

[admin]
username = "admin"
password = "boot-test-password"
"#;

#[derive(Args)]
pub struct BootTestArgs {
    /// The image (.img or .img.xz); it is not modified, the test boots a copy.
    pub image: PathBuf,
    /// QEMU machine: `virt` (board-configs/qemu-virt.toml) or `raspi3b` (board-configs/rpi-arm64.toml).
    #[arg(long, default_value = "virt")]
    pub machine: String,
    /// hearth-setup.toml to put on the FAT (default: domain hearth.test, admin/boot-test-password, self-signed).
    #[arg(long, conflicts_with = "no_preseed")]
    pub preseed: Option<PathBuf>,
    /// Boot the image as downloaded, without hearth-setup.toml: wait for the setup wizard on port 80 and
    /// check that first boot made the setup code (SETUP-CODE.txt), instead of logging in over XMPP.
    #[arg(long, conflicts_with = "hook")]
    pub no_preseed: bool,
    /// Host port forwarded to the guest's 5222 on 127.0.0.1 (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Host port forwarded to the guest's HTTP port 80, the wizard and admin pages (default: a free one).
    #[arg(long)]
    pub web_port: Option<u16>,
    /// Host port forwarded to the guest's SSH port 22 (default: a free one).
    #[arg(long)]
    pub ssh_port: Option<u16>,
    /// Command run once XMPP is ready (via sh -c), with HEARTH_XMPP_PORT, HEARTH_DOMAIN, HEARTH_ADMIN and
    /// HEARTH_ADMIN_PASSWORD set; a non-zero exit fails the test. E.g. the slixmpp client test.
    #[arg(long)]
    pub hook: Option<String>,
    /// Keep the machine running after the checks, until QEMU exits or you press Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Customise the card as Raspberry Pi Imager does, in this flavour (fixtures mirroring its output,
    /// with the run's SSH key), and pass the card's whole cmdline.txt to the kernel as the Pi firmware
    /// does. Without --imager-with-preseed no hearth-setup.toml is written: the box must come up with
    /// Imager's hostname, Wi-Fi, key, time zone and keyboard, and wait for the wizard.
    #[arg(long, value_enum, conflicts_with_all = ["preseed", "no_preseed"])]
    pub imager: Option<imager_card::Flavour>,
    /// With --imager: write the test's hearth-setup.toml too; it must win, and first boot must say so.
    #[arg(long, requires = "imager")]
    pub imager_with_preseed: bool,
    /// With --imager: add a line Imager never writes to firstrun.sh, or cut user-data short; first boot
    /// must name the file and what it ignored, and boot on.
    #[arg(long, requires = "imager")]
    pub imager_malformed: bool,
    /// Work directory for the disk copy, kernel, console log (default: out/boot-test-<machine>).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Kills QEMU when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn preseed_value(text: &str, key: &str) -> String {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| {
            v.split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_string()
        })
        .unwrap_or_default()
}

/// Reboots a boot test accepts: one, as the first boot of a card with Imager's firstrun.sh does once it
/// has restored cmdline.txt (see kernel-command-line.service.d/hearth.conf in the overlay).
const MAX_REBOOTS: usize = 1;

/// The card's cmdline.txt now (its first line), as the Pi firmware reads it on every boot.
fn card_cmdline_now(disk_img: &Path, log: &Path) -> Result<String> {
    let (_, parts) = disk::read_mbr(disk_img)?;
    let boot = parts
        .first()
        .ok_or_else(|| Error::new("the image has no partitions"))?;
    Ok(fat::read(disk_img, boot, "cmdline.txt", log)?
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

fn console_tail(console: &Path, n: usize) -> String {
    run::tail(console, n)
}

/// Makes a throwaway ed25519 key pair `work/name` (no passphrase); returns the private key's path and
/// the public key line.
fn ssh_key_pair(work: &Path, name: &str, log_dir: &Path) -> Result<(PathBuf, String)> {
    let private = work.join(name);
    let public = work.join(format!("{name}.pub"));
    let _ = std::fs::remove_file(&private);
    let _ = std::fs::remove_file(&public);
    run::run(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "hearth-boot-test",
                "-f",
            ])
            .arg(&private),
        &log_dir.join("ssh-keygen.log"),
    )?;
    let line = std::fs::read_to_string(&public).ctx(|| format!("reading {}", public.display()))?;
    Ok((private, line.trim().to_string()))
}

/// `ssh -i identity root@127.0.0.1 -p port COMMAND` without touching the user's known_hosts; the guest's
/// host key is new on every boot.
fn ssh_command(port: u16, identity: &Path, command: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-i")
        .arg(identity)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
            "root@127.0.0.1",
            command,
        ]);
    cmd
}

/// Logs in with the preseeded key (sshd may still be starting: retried for a minute) and checks that it
/// is root; then that a key the box was never given is refused.
fn ssh_login(port: u16, identity: &Path, work: &Path, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let user = loop {
        match run::output(&mut ssh_command(port, identity, "id -un"), log) {
            Ok(out) => break out.trim().to_string(),
            Err(e) if Instant::now() > deadline => {
                return Err(e.hint("the guest's sshd did not accept the preseeded key"))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(3)),
        }
    };
    if user != "root" {
        return Err(Error::new(format!(
            "SSH with the preseeded key logged in as {user:?}, not root"
        )));
    }
    eprintln!("ssh root@127.0.0.1 -p {port} with the preseeded key: logged in as {user}");
    let (stranger, _) = ssh_key_pair(work, "ssh-key-not-given", &work.join("logs"))?;
    if run::output(&mut ssh_command(port, &stranger, "true"), log).is_ok() {
        return Err(Error::new(
            "SSH accepted a key that was never given to the box",
        ));
    }
    eprintln!("ssh with a key the box was not given: refused");
    Ok(())
}

pub fn boot_test(repo: &Path, args: BootTestArgs) -> Result<()> {
    let (board, spec) = qemu::machine(repo, &args.machine)?;
    let work = args
        .output
        .clone()
        .unwrap_or_else(|| repo.join(format!("out/boot-test-{}", args.machine)));
    std::fs::create_dir_all(&work).ctx(|| format!("creating {}", work.display()))?;
    let mut steps = Steps::new(&work.join("logs"))?;
    // The default preseed's SSH key: made for this run, so no private key is ever checked in.
    let ssh_identity = (args.preseed.is_none() && !args.no_preseed)
        .then(|| ssh_key_pair(&work, "ssh-key", &work.join("logs")))
        .transpose()?;
    // With --imager, Imager's files carry the run's key; hearth-setup.toml only when asked for.
    let put_preseed = !args.no_preseed && (args.imager.is_none() || args.imager_with_preseed);
    let preseed_text = match (&args.preseed, &ssh_identity) {
        _ if !put_preseed => String::new(),
        (Some(p), _) => std::fs::read_to_string(p).ctx(|| format!("reading {}", p.display()))?,
        (None, None) => String::new(),
        (None, Some((_, public))) => {
            format!("{TEST_PRESEED}\n# A key made for this run; the test logs in with it.\n[ssh]\nauthorized_keys = [\"{public}\"]\n")
        }
    };
    let imager_only = args.imager.is_some() && !put_preseed;
    let expect = Expect {
        wizard: !put_preseed,
        wifi_ssid: if imager_only {
            Some(imager_card::SSID.to_string())
        } else {
            Some(preseed_value(&preseed_text, "ssid")).filter(|s| !s.is_empty())
        },
        ssh_key: args.imager.is_some() || preseed_has_ssh_key(&preseed_text),
    };
    let domain = preseed_value(&preseed_text, "domain");
    let disk_img = work.join("disk.img");
    let (kernel, initrd, dtb, root, card_cmdline) =
        steps.run("prepare a copy of the image", |s| {
            let image = unpacked(&args.image, &s.log)?;
            s.status("copying the image");
            std::fs::copy(&image, &disk_img)
                .ctx(|| format!("copying {} to {}", image.display(), disk_img.display()))?;
            let len = std::fs::metadata(&disk_img)
                .ctx(|| "stat disk copy".into())?
                .len();
            let mut want = (spec.disk_mib * disk::MIB).max(len);
            if spec.disk_power_of_two {
                want = want.next_power_of_two();
            }
            std::fs::OpenOptions::new()
                .write(true)
                .open(&disk_img)
                .and_then(|f| f.set_len(want))
                .ctx(|| "growing the disk copy".into())?;
            s.note(&format!(
                "disk {} MiB (image {} MiB): first boot grows the root filesystem into the rest",
                want / disk::MIB,
                len / disk::MIB
            ));
            let (_, parts) = disk::read_mbr(&disk_img)?;
            let boot = parts
                .first()
                .ok_or_else(|| Error::new("the image has no partitions"))?;
            if put_preseed {
                let preseed = work.join("hearth-setup.toml");
                std::fs::write(&preseed, &preseed_text).ctx(|| "writing the preseed".into())?;
                fat::put(&disk_img, boot, &preseed, "hearth-setup.toml", &s.log)?;
            }
            let config = fat::read(&disk_img, boot, "config.txt", &s.log)?;
            let (k, i) = fat::boot_files(&config);
            let (k, i) = (
                k.ok_or_else(|| Error::new("config.txt names no kernel="))?,
                i.ok_or_else(|| Error::new("config.txt names no initramfs"))?,
            );
            let (kernel, initrd) = (work.join("kernel"), work.join("initrd"));
            fat::extract(&disk_img, boot, &k, &kernel, &s.log)?;
            fat::extract(&disk_img, boot, &i, &initrd, &s.log)?;
            let dtb = match &spec.dtb {
                Some(d) => {
                    let path = work.join(d);
                    fat::extract(&disk_img, boot, d, &path, &s.log)?;
                    Some(path)
                }
                None => None,
            };
            if let (Some(flavour), Some((_, key))) = (args.imager, &ssh_identity) {
                imager_card::prepare(
                    &disk_img,
                    boot,
                    &work,
                    flavour,
                    key,
                    args.imager_malformed,
                    &s.log,
                )?;
            }
            let cmdline = fat::read(&disk_img, boot, "cmdline.txt", &s.log)?;
            let root =
                fat::root_arg(&cmdline).ok_or_else(|| Error::new("cmdline.txt has no root="))?;
            Ok((kernel, initrd, dtb, root, cmdline))
        })?;

    let port = match args.port {
        Some(p) => p,
        None => qemu::free_port()?,
    };
    let web_port = match args.web_port {
        Some(p) => p,
        None => loop {
            let p = qemu::free_port()?;
            if p != port {
                break p;
            }
        },
    };
    let ssh_port = match args.ssh_port {
        Some(p) => p,
        None => loop {
            let p = qemu::free_port()?;
            if p != port && p != web_port {
                break p;
            }
        },
    };
    let console = work.join("console.log");
    let _ = std::fs::remove_file(&console);
    let machine_append = spec.append.replace("{root}", &root);
    let append_for = |card_cmdline: &str| {
        let append = match args.imager {
            Some(_) => imager_card::kernel_append(card_cmdline, &machine_append),
            None => machine_append.clone(),
        };
        format!("{append} systemd.wants=hearth-selftest.service")
    };
    let qemu_log = work.join("qemu.log");
    let launch = |append: String| {
        qemu::start(&Launch {
            spec: &spec,
            image: &disk_img,
            console: &console,
            kernel: &kernel,
            initrd: &initrd,
            dtb: dtb.clone(),
            append,
            port,
            web_port,
            ssh_port,
            log: &qemu_log,
        })
    };
    let started = Instant::now();
    let mut guard = Guard(launch(append_for(&card_cmdline))?);
    let mut reboots = 0;
    eprintln!(
        "booting {} under qemu -M {} ({}); XMPP on 127.0.0.1:{port}, web on http://127.0.0.1:{web_port}/; console: {}",
        args.image.display(),
        args.machine,
        board.name,
        console.display()
    );
    // What "ready" means: XMPP answering with stream features, or, on a box without a preseed, the
    // wizard's first page (the setup code form) on port 80.
    let (waiting_for, ready_check): (&str, Box<dyn Fn() -> Option<String>>) = if expect.wizard {
        (
            "the setup wizard",
            Box::new(move || {
                qemu::http_get(web_port, "/setup")
                    .filter(|(status, body)| *status == 200 && body.contains("Set up your Hearth"))
                    .map(|(_, body)| body)
            }),
        )
    } else {
        let domain = domain.clone();
        (
            "XMPP",
            Box::new(move || qemu::stream_features(port, &domain)),
        )
    };

    let timeout = Duration::from_secs(spec.timeout_secs);
    let mut report_seen: Option<Instant> = None;
    let features = steps.run(&format!("boot until {waiting_for} answers"), |s| loop {
        if let Some(status) = guard.0.try_wait().ctx(|| "polling QEMU".into())? {
            // QEMU runs with -no-reboot: a guest reboot ends it. Boot again as the Pi firmware does,
            // reading the card's cmdline.txt afresh (first boot may have changed it); a second reboot
            // is a loop.
            let restarts = console_lines(&console, "reboot: Restarting system").len();
            if status.success() && restarts > reboots {
                reboots = restarts;
                if reboots > MAX_REBOOTS {
                    return Err(Error::new(format!(
                        "the guest rebooted {reboots} times before {waiting_for} was ready: a reboot loop\n{}",
                        console_tail(&console, 30)
                    ))
                    .hint(format!("full console log: {}", console.display())));
                }
                let cmdline = card_cmdline_now(&disk_img, &s.log)?;
                s.note(&format!(
                    "the guest rebooted after {}; booting again with the card's cmdline.txt: {cmdline}",
                    fmt_secs(started.elapsed().as_secs_f64())
                ));
                guard.0 = launch(append_for(&cmdline))?;
                continue;
            }
            return Err(Error::new(format!("QEMU exited ({status}) before {waiting_for} was ready\n{}", console_tail(&console, 30)))
                .hint(format!("QEMU's own output: {}", work.join("qemu.log").display())));
        }
        if started.elapsed() > timeout {
            let report = console_lines(&console, "hearth-firstboot:").join("\n    ");
            return Err(Error::new(format!(
                "no answer from {waiting_for} (127.0.0.1:{port} XMPP, :{web_port} web) after {}\n  first boot said:\n    {report}\n  console tail:\n{}",
                fmt_secs(timeout.as_secs_f64()),
                console_tail(&console, 30)
            ))
            .hint(format!("full console log: {}", console.display())));
        }
        let seen = console_lines(&console, "").len();
        s.status(&format!("{seen} console lines, waiting for {waiting_for}"));
        if let Some(f) = ready_check() {
            return Ok(f);
        }
        // The self-test runs once boot is complete: if it has reported and XMPP still does not answer,
        // waiting longer will not help.
        let report = console_lines(&console, "HEARTH-SELFTEST: ");
        if report.iter().any(|l| l == "end") {
            let since = *report_seen.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                let _ = judge(&report, &console, &expect);
                let log = console_lines(&console, "HEARTH-LOG: ").join("\n    ");
                return Err(Error::new(format!(
                    "the guest finished booting ({} after start) but {waiting_for} does not answer\n  \
                     first boot and hearthd said:\n    {log}",
                    fmt_secs(started.elapsed().as_secs_f64())
                ))
                .hint(format!("full console log: {}", console.display())));
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    })?;
    let ready = started.elapsed().as_secs_f64();
    if expect.wizard {
        eprintln!(
            "boot-to-wizard-ready: {} ({})",
            fmt_secs(ready),
            args.machine
        );
    } else {
        eprintln!("boot-to-XMPP-ready: {} ({})", fmt_secs(ready), args.machine);
    }
    eprintln!(
        "{}: {}",
        if expect.wizard {
            "setup page"
        } else {
            "stream features"
        },
        features
            .chars()
            .filter(|c| *c != '\n')
            .take(400)
            .collect::<String>()
    );

    let report = steps.run("guest self-test report", |s| {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let lines = console_lines(&console, "HEARTH-SELFTEST: ");
            if lines.iter().any(|l| l == "end") {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "the guest self-test did not finish\n{}",
                    console_tail(&console, 20)
                )));
            }
            s.status("waiting for hearth-selftest.service on the console");
            std::thread::sleep(Duration::from_secs(2));
        }
    })?;
    let mut failures = judge(&report, &console, &expect);
    if let Some(flavour) = args.imager {
        let firstboot = console_lines(&console, "hearth-firstboot: ");
        failures.extend(imager_card::judge(
            &report,
            &firstboot,
            flavour,
            put_preseed,
            args.imager_malformed,
            reboots,
        ));
    }
    std::fs::write(
        work.join("security.txt"),
        console_lines(&console, "HEARTH-SECURITY: ").join("\n") + "\n",
    )
    .ctx(|| "saving security report".into())?;

    if let Some((identity, _)) = &ssh_identity {
        steps.run("SSH login with the preseeded key", |s| {
            ssh_login(ssh_port, identity, &work, &s.log)
        })?;
    }
    if let Some(hook) = &args.hook {
        steps.run("client test hook", |s| {
            run::run(
                Command::new("sh")
                    .args(["-c", hook])
                    .env("HEARTH_XMPP_PORT", port.to_string())
                    .env("HEARTH_DOMAIN", &domain)
                    .env("HEARTH_ADMIN", preseed_value(&preseed_text, "username"))
                    .env(
                        "HEARTH_ADMIN_PASSWORD",
                        preseed_value(&preseed_text, "password"),
                    ),
                &s.log,
            )
        })?;
    }
    if !failures.is_empty() {
        return Err(Error::new(format!("booted, but: {}", failures.join("; ")))
            .hint(format!("console log: {}", console.display())));
    }
    println!(
        "boot-test {}: {waiting_for} ready after {} ({reboots} reboots); self-test passed",
        args.machine,
        fmt_secs(ready)
    );
    if args.keep_running {
        eprintln!("--keep-running: XMPP on 127.0.0.1:{port} (domain {domain}), web on http://127.0.0.1:{web_port}/; Ctrl-C or power off the guest to stop");
        let _ = guard.0.wait();
    }
    Ok(())
}
