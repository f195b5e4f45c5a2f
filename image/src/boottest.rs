//! `hearth-image boot-test IMAGE`: boots a copy of the image under QEMU with a preseed on its FAT, waits
//! until the forwarded port speaks XMPP, and reads the guest's self-test report from the serial console.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::disk;
use crate::error::{Context, Error, Result};
use crate::progress::{fmt_secs, Steps};
use crate::qemu::{self, Launch};
use crate::verify::unpacked;
use crate::{fat, run};

/// What the test writes to hearth-setup.toml unless --preseed names another file.
const TEST_PRESEED: &str = r#"# Written by hearth-image boot-test.
hostname = "hearth"

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
    #[arg(long)]
    pub preseed: Option<PathBuf>,
    /// Host port forwarded to the guest's 5222 on 127.0.0.1 (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Command run once XMPP is ready (via sh -c), with HEARTH_XMPP_PORT, HEARTH_DOMAIN, HEARTH_ADMIN and
    /// HEARTH_ADMIN_PASSWORD set; a non-zero exit fails the test. E.g. the slixmpp client test.
    #[arg(long)]
    pub hook: Option<String>,
    /// Keep the machine running after the checks, until QEMU exits or you press Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
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

fn console_lines(console: &Path, prefix: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).into_owned();
    text.lines()
        .filter_map(|l| {
            l.find(prefix)
                .map(|i| l[i + prefix.len()..].trim_end().to_string())
        })
        .collect()
}

fn console_tail(console: &Path, n: usize) -> String {
    run::tail(console, n)
}

pub fn boot_test(repo: &Path, args: BootTestArgs) -> Result<()> {
    let (board, spec) = qemu::machine(repo, &args.machine)?;
    let work = args
        .output
        .clone()
        .unwrap_or_else(|| repo.join(format!("out/boot-test-{}", args.machine)));
    std::fs::create_dir_all(&work).ctx(|| format!("creating {}", work.display()))?;
    let mut steps = Steps::new(&work.join("logs"))?;
    let preseed_text = match &args.preseed {
        Some(p) => std::fs::read_to_string(p).ctx(|| format!("reading {}", p.display()))?,
        None => TEST_PRESEED.to_string(),
    };
    let domain = preseed_value(&preseed_text, "domain");
    let disk_img = work.join("disk.img");
    let (kernel, initrd, dtb, root) = steps.run("prepare a copy of the image", |s| {
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
        let preseed = work.join("hearth-setup.toml");
        std::fs::write(&preseed, &preseed_text).ctx(|| "writing the preseed".into())?;
        fat::put(&disk_img, boot, &preseed, "hearth-setup.toml", &s.log)?;
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
        let cmdline = fat::read(&disk_img, boot, "cmdline.txt", &s.log)?;
        let root = fat::root_arg(&cmdline).ok_or_else(|| Error::new("cmdline.txt has no root="))?;
        Ok((kernel, initrd, dtb, root))
    })?;

    let port = match args.port {
        Some(p) => p,
        None => qemu::free_port()?,
    };
    let console = work.join("console.log");
    let _ = std::fs::remove_file(&console);
    let append = format!(
        "{} systemd.wants=hearth-selftest.service",
        spec.append.replace("{root}", &root)
    );
    let started = Instant::now();
    let child = qemu::start(&Launch {
        spec: &spec,
        image: &disk_img,
        console: &console,
        kernel: &kernel,
        initrd: &initrd,
        dtb,
        append,
        port,
        log: &work.join("qemu.log"),
    })?;
    let mut guard = Guard(child);
    eprintln!(
        "booting {} under qemu -M {} ({}); XMPP on 127.0.0.1:{port}; console: {}",
        args.image.display(),
        args.machine,
        board.name,
        console.display()
    );

    let timeout = Duration::from_secs(spec.timeout_secs);
    let mut report_seen: Option<Instant> = None;
    let features = steps.run("boot until XMPP answers", |s| loop {
        if let Some(status) = guard.0.try_wait().ctx(|| "polling QEMU".into())? {
            return Err(Error::new(format!("QEMU exited ({status}) before XMPP was ready\n{}", console_tail(&console, 30)))
                .hint(format!("QEMU's own output: {}", work.join("qemu.log").display())));
        }
        if started.elapsed() > timeout {
            let report = console_lines(&console, "hearth-firstboot:").join("\n    ");
            return Err(Error::new(format!(
                "no <stream:features> on 127.0.0.1:{port} after {}\n  first boot said:\n    {report}\n  console tail:\n{}",
                fmt_secs(timeout.as_secs_f64()),
                console_tail(&console, 30)
            ))
            .hint(format!("full console log: {}", console.display())));
        }
        let seen = console_lines(&console, "").len();
        s.status(&format!("{} console lines, waiting for XMPP", seen));
        if let Some(f) = qemu::stream_features(port, &domain) {
            return Ok(f);
        }
        // The self-test runs once boot is complete: if it has reported and XMPP still does not answer,
        // waiting longer will not help.
        let report = console_lines(&console, "HEARTH-SELFTEST: ");
        if report.iter().any(|l| l == "end") {
            let since = *report_seen.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                let _ = judge(&report, &console);
                let log = console_lines(&console, "HEARTH-LOG: ").join("\n    ");
                return Err(Error::new(format!(
                    "the guest finished booting ({} after start) but 127.0.0.1:{port} sends no <stream:features>\n  \
                     first boot and hearthd said:\n    {log}",
                    fmt_secs(started.elapsed().as_secs_f64())
                ))
                .hint(format!("full console log: {}", console.display())));
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    })?;
    let ready = started.elapsed().as_secs_f64();
    eprintln!("boot-to-XMPP-ready: {} ({})", fmt_secs(ready), args.machine);
    eprintln!(
        "stream features: {}",
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
    let failures = judge(&report, &console);
    std::fs::write(
        work.join("security.txt"),
        console_lines(&console, "HEARTH-SECURITY: ").join("\n") + "\n",
    )
    .ctx(|| "saving security report".into())?;

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
        "boot-test {}: XMPP ready after {}; self-test passed",
        args.machine,
        fmt_secs(ready)
    );
    if args.keep_running {
        eprintln!("--keep-running: XMPP on 127.0.0.1:{port} (domain {domain}); Ctrl-C or power off the guest to stop");
        let _ = guard.0.wait();
    }
    Ok(())
}

/// Prints the guest's report and returns what is wrong with it.
fn judge(report: &[String], console: &Path) -> Vec<String> {
    let mut bad = vec![];
    let get = |key: &str| {
        report
            .iter()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    for l in report {
        eprintln!("  guest: {l}");
    }
    let disk: u64 = get("disk-bytes").parse().unwrap_or(0);
    let rootfs: u64 = get("rootfs-bytes").parse().unwrap_or(0);
    // Grown: the root filesystem covers the disk minus the 4 MiB gap and the boot partition (and ext4 overhead).
    if disk == 0 || rootfs < disk / 100 * 85 - 300 * disk::MIB {
        bad.push(format!(
            "root filesystem not grown ({} MiB of a {} MiB disk)",
            rootfs / disk::MIB,
            disk / disk::MIB
        ));
    }
    if get("journal-max-use").is_empty() {
        bad.push("journald has no SystemMaxUse limit".into());
    }
    if !get("hearthd").starts_with("active user=hearth") {
        bad.push(format!(
            "hearthd is not running as user hearth ({})",
            get("hearthd")
        ));
    }
    // Older images do not report hearth-web; an image that does must have it running.
    let web = get("hearth-web");
    if !web.is_empty() && !web.starts_with("active") {
        bad.push(format!("hearth-web is not running ({web})"));
    }
    if !get("failed-units").is_empty() {
        bad.push(format!("failed units: {}", get("failed-units")));
    }
    if get("preseed-password-left") != "0" && !get("preseed-password-left").is_empty() {
        bad.push("the admin password is still in hearth-setup.toml".into());
    }
    let security = console_lines(console, "HEARTH-SECURITY: ");
    match security
        .iter()
        .find(|l| l.contains("Overall exposure level"))
    {
        Some(l) => eprintln!("  systemd-analyze security: {}", l.trim()),
        None => bad.push("no systemd-analyze security report for hearthd.service".into()),
    }
    bad
}
