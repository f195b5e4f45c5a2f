//! `hearth-image verify IMAGE`: the partition table, the boot partition against the board file, the
//! filesystem ids against SOURCE_DATE_EPOCH, and our binaries against the manifest.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::board::Board;
use crate::disk::{self, Ids, FIRST_PARTITION_MIB, MIB};
use crate::error::{Context, Error, Result};
use crate::lock::{hex, sha256_file, Lock};
use crate::manifest;
use crate::{fat, run};

#[derive(Args)]
pub struct VerifyArgs {
    /// The image (.img, or .img.xz which is unpacked next to it first).
    pub image: PathBuf,
    /// Board file to check against (default: the manifest's board, else rpi-arm64).
    #[arg(long)]
    pub board: Option<String>,
}

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl AsRef<str>) {
        println!("{} {}", if ok { "✔" } else { "✘" }, what.as_ref());
        if !ok {
            self.failed += 1;
        }
    }
}

/// An .img.xz is unpacked next to it (`<name>.img`, kept if it exists already).
pub fn unpacked(image: &Path, log: &Path) -> Result<PathBuf> {
    if image.extension().is_none_or(|e| e != "xz") {
        return Ok(image.to_path_buf());
    }
    let plain = image.with_extension("");
    if !plain.exists() {
        run::run(Command::new("xz").args(["-d", "-k", "-T2"]).arg(image), log)?;
    }
    Ok(plain)
}

pub fn verify(repo: &Path, args: VerifyArgs) -> Result<()> {
    let log_dir = repo.join("out/logs");
    std::fs::create_dir_all(&log_dir).ctx(|| format!("creating {}", log_dir.display()))?;
    let log = log_dir.join("verify.log");
    let image = unpacked(&args.image, &log)?;
    let manifest = manifest::read_beside(&args.image)?;
    let board_name = args
        .board
        .clone()
        .or_else(|| manifest.as_ref().map(|m| m.board.clone()))
        .unwrap_or_else(|| "rpi-arm64".into());
    let (board, _) = Board::load(repo, &board_name)?;
    let spec = board.image()?;
    let lock_path = Lock::path(repo, &board.name);
    if let Some(w) = Lock::read(&lock_path)?.and_then(|l| l.age_warning(&lock_path)) {
        eprintln!("{w}");
    }
    let mut r = Report { failed: 0 };
    println!(
        "verifying {} against board-configs/{board_name}.toml",
        image.display()
    );

    let (disk_id, parts) = disk::read_mbr(&image)?;
    let size = std::fs::metadata(&image)
        .ctx(|| format!("stat {}", image.display()))?
        .len();
    r.check(
        parts.len() == 2,
        format!(
            "MBR has 2 partitions ({} found), disk id {disk_id:08x}",
            parts.len()
        ),
    );
    let [boot, root] = parts.as_slice() else {
        return Err(Error::new(
            "cannot check further without a boot and a root partition",
        ));
    };
    r.check(
        boot.kind == 0x0c && root.kind == 0x83,
        format!(
            "partition types {:#04x} (FAT32 LBA) and {:#04x} (Linux)",
            boot.kind, root.kind
        ),
    );
    r.check(
        boot.offset() == FIRST_PARTITION_MIB * MIB,
        format!("boot partition starts at {} MiB", boot.offset() / MIB),
    );
    r.check(
        boot.offset() + boot.size() <= root.offset(),
        "partitions do not overlap",
    );
    r.check(
        root.offset() + root.size() <= size,
        "root partition ends inside the image",
    );
    r.check(
        boot.size() == spec.partitions.boot_mib * MIB,
        format!("boot partition is {} MiB", boot.size() / MIB),
    );

    let (fat_label, vol_id) = disk::fat_identity(&image, boot)?;
    r.check(
        fat_label == spec.partitions.boot_label,
        format!("FAT label {fat_label:?}"),
    );
    let files = fat::list(&image, boot, &log)?;
    for f in spec.boot.firmware.iter().chain(&spec.boot.dtbs) {
        r.check(
            files.iter().any(|x| x == f),
            format!("boot partition has {f}"),
        );
    }
    r.check(
        files.iter().any(|x| x == "hearth-setup.example.toml"),
        "boot partition has hearth-setup.example.toml",
    );
    let config = fat::read(&image, boot, "config.txt", &log)?;
    let (kernel, initrd) = fat::boot_files(&config);
    let (kernel, initrd) = (kernel.unwrap_or_default(), initrd.unwrap_or_default());
    r.check(
        files.contains(&kernel),
        format!("config.txt's kernel={kernel} is on the boot partition"),
    );
    r.check(
        files.contains(&initrd),
        format!("config.txt's initramfs {initrd} is on the boot partition"),
    );
    let expected = spec
        .boot
        .config_txt
        .trim_start()
        .replace("{kernel}", &kernel)
        .replace("{initrd}", &initrd);
    r.check(
        config == expected,
        "config.txt is the board file's config_txt",
    );
    let cmdline = fat::read(&image, boot, "cmdline.txt", &log)?;
    let root_arg = fat::root_arg(&cmdline).unwrap_or_default();

    let (ext_label, uuid, seed) = disk::ext4_identity(&image, root)?;
    r.check(
        ext_label == spec.partitions.root_label,
        format!("ext4 label {ext_label:?}"),
    );
    let root_ok = match root_arg.split_once('=') {
        Some(("LABEL", l)) => l == ext_label,
        Some(("UUID", u)) => u == uuid,
        Some(("PARTUUID", p)) => p == format!("{disk_id:08x}-02"),
        _ => false,
    };
    r.check(
        root_ok,
        format!("cmdline.txt root={root_arg} names the root partition"),
    );
    let template_root = format!("LABEL={}", spec.partitions.root_label);
    r.check(
        cmdline.trim() == spec.boot.cmdline_txt.replace("{root}", &template_root),
        "cmdline.txt is the board file's cmdline_txt",
    );

    match &manifest {
        Some(m) => {
            let ids = Ids::derive(&board.name, m.source_date_epoch);
            r.check(
                ids == m.ids,
                format!(
                    "manifest ids derive from SOURCE_DATE_EPOCH={}",
                    m.source_date_epoch
                ),
            );
            r.check(
                format!("{disk_id:08x}") == ids.disk_id,
                format!("disk id {disk_id:08x}"),
            );
            r.check(
                vol_id == ids.boot_volume_id,
                format!("FAT volume id {vol_id}"),
            );
            r.check(uuid == ids.root_uuid, format!("ext4 UUID {uuid}"));
            r.check(seed == ids.root_hash_seed, format!("ext4 hash seed {seed}"));
            r.check(
                sha256_file(&image)? == m.image.sha256,
                "image SHA-256 matches manifest.json",
            );
            binaries(&image, root, m, &log, &mut r)?;
        }
        None => println!("- no manifest.json beside the image: ids and binaries not checked"),
    }
    if r.failed > 0 {
        return Err(Error::new(format!("{} check(s) failed", r.failed))
            .hint(format!("sub-tool output: {}", log.display())));
    }
    println!("all checks passed");
    Ok(())
}

/// Reads each of our binaries out of the ext4 (debugfs, no mount) and compares it with the manifest.
fn binaries(
    image: &Path,
    root: &disk::Partition,
    m: &manifest::Manifest,
    log: &Path,
    r: &mut Report,
) -> Result<()> {
    let dev = format!("{}?offset={}", image.display(), root.offset());
    for b in &m.binaries {
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat /usr/bin/{}", b.name), &dev])
            .stderr(std::process::Stdio::null())
            .output()
            .ctx(|| "running debugfs".into())?;
        let sum = hex(&<sha2::Sha256 as sha2::Digest>::digest(&out.stdout));
        let version = b.version.as_deref().unwrap_or("no --version output");
        r.check(
            sum == b.sha256,
            format!(
                "/usr/bin/{} matches the manifest ({} bytes; {version})",
                b.name,
                out.stdout.len()
            ),
        );
    }
    let _ = log;
    Ok(())
}
