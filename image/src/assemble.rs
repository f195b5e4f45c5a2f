//! Disk assembly without loop mounts: the FAT with mkfs.vfat + mtools, ext4 with `mke2fs -d`, both run in
//! the tools chroot with SOURCE_DATE_EPOCH and ids derived from it; then the MBR and the image file here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::build::Ctx;
use crate::disk::{self, Ids, Partition, FIRST_PARTITION_MIB, MIB};
use crate::error::{Context, Error, Result};
use crate::progress::Step;
use crate::tools::Tools;

pub struct Layout {
    pub image: PathBuf,
    pub ids: Ids,
    pub boot: Partition,
    pub root: Partition,
    pub kernel: String,
    pub initrd: String,
}

/// Single-quotes a string for sh.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn rel(base: &Path, p: &Path) -> String {
    p.strip_prefix(base)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// Directories and files below `dir`, each list sorted, so the FAT's directory order never depends on readdir.
fn walk(dir: &Path, dirs: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            dirs.push(p.clone());
            walk(&p, dirs, files)?;
        } else {
            files.push(p);
        }
    }
    Ok(())
}

/// Bytes the tree occupies in 4 KiB blocks, and its inode count.
fn usage(dir: &Path) -> Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .ctx(|| format!("listing {}", d.display()))?
            .flatten()
        {
            let md = e
                .path()
                .symlink_metadata()
                .ctx(|| format!("stat {}", e.path().display()))?;
            inodes += 1;
            bytes += md.len().div_ceil(4096) * 4096;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}

fn single(boot: &Path, prefix: &str) -> Result<String> {
    let names: Vec<String> = std::fs::read_dir(boot)
        .ctx(|| format!("listing {}", boot.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::new(format!(
            "no {prefix}* in the boot partition: did raspi-firmware's kernel hook run?"
        ))),
        many => Err(Error::new(format!(
            "several {prefix}* in the boot partition: {many:?}"
        ))),
    }
}

/// Moves /boot/firmware out of the root tree and writes config.txt, cmdline.txt and the setup example.
fn prepare_boot(ctx: &Ctx, step: &Step) -> Result<(PathBuf, String, String)> {
    let rootfs = ctx.work.join("rootfs");
    let boot = ctx.work.join("boot");
    let _ = std::fs::remove_dir_all(&boot);
    let fw = rootfs.join("boot/firmware");
    std::fs::rename(&fw, &boot).ctx(|| format!("moving {} out of the root tree", fw.display()))?;
    std::fs::create_dir(&fw).ctx(|| format!("recreating the mount point {}", fw.display()))?;
    let kernel = single(&boot, "vmlinuz-")?;
    let initrd = single(&boot, "initrd.img-")?;
    let b = &ctx.spec.boot;
    let root = format!("LABEL={}", ctx.spec.partitions.root_label);
    let config = b
        .config_txt
        .trim_start()
        .replace("{kernel}", &kernel)
        .replace("{initrd}", &initrd);
    std::fs::write(boot.join("config.txt"), config).ctx(|| "writing config.txt".into())?;
    std::fs::write(
        boot.join("cmdline.txt"),
        format!("{}\n", b.cmdline_txt.replace("{root}", &root)),
    )
    .ctx(|| "writing cmdline.txt".into())?;
    let example = ctx.repo.join("image/hearth-setup.example.toml");
    std::fs::copy(&example, boot.join("hearth-setup.example.toml"))
        .ctx(|| format!("copying {}", example.display()))?;
    let missing: Vec<&String> = b
        .firmware
        .iter()
        .chain(&b.dtbs)
        .filter(|f| !boot.join(f).exists())
        .collect();
    if !missing.is_empty() {
        return Err(Error::new(format!("the boot partition lacks {missing:?}"))
            .hint("check the board file's firmware/dtbs lists against what raspi-firmware and the kernel ship"));
    }
    step.note(&format!("kernel {kernel}, initrd {initrd}"));
    Ok((boot, kernel, initrd))
}

pub fn assemble(ctx: &Ctx, tools: &Tools, step: &Step) -> Result<Layout> {
    step.status("preparing the boot partition");
    let (boot, kernel, initrd) = prepare_boot(ctx, step)?;
    let ids = Ids::derive(&ctx.board.name, ctx.epoch);
    let parts = &ctx.spec.partitions;
    let (bytes, inodes) = usage(&ctx.work.join("rootfs"))?;
    // Data plus 10% for ext4 metadata, 64 MiB of journal, the board's free space; 16 MiB steps.
    let root_mib =
        ((bytes + bytes / 10 + inodes * 256) / MIB + 64 + parts.root_free_mib).div_ceil(16) * 16;
    step.note(&format!(
        "root filesystem: {} MiB of files, {inodes} inodes -> {root_mib} MiB ext4",
        bytes / MIB
    ));

    let (mut dirs, mut files) = (vec![], vec![]);
    walk(&boot, &mut dirs, &mut files)?;
    let e = ctx.epoch;
    let mut s = String::new();
    let _ = writeln!(s, "cd /work/work\nrm -f boot.vfat root.ext4");
    let _ = writeln!(
        s,
        "find boot rootfs/boot/firmware -exec touch --no-dereference --date=@{e} {{}} +"
    );
    let _ = writeln!(
        s,
        "mkfs.vfat --invariant -i {} -n {} -F 32 -C boot.vfat {}",
        ids.boot_volume_id,
        q(&parts.boot_label),
        parts.boot_mib * 1024
    );
    for d in &dirs {
        let _ = writeln!(
            s,
            "mmd -i boot.vfat {}",
            q(&format!("::/{}", rel(&boot, d)))
        );
    }
    for f in &files {
        let _ = writeln!(
            s,
            "mcopy -m -i boot.vfat {} {}",
            q(&format!("boot/{}", rel(&boot, f))),
            q(&format!("::/{}", rel(&boot, f)))
        );
    }
    // Clamp every time in the root tree once more: mmdebstrap's cleanup (after our hook) and the move of
    // /boot/firmware above touched /etc, /run, /usr/sbin, /boot and /dev with the build's clock.
    let _ = writeln!(
        s,
        "find rootfs -newermt @{e} -print0 | xargs -0r touch --no-dereference --date=@{e}"
    );
    let _ = writeln!(
        s,
        "mke2fs -q -F -t ext4 -L {} -U {} -E hash_seed={},root_owner=0:0 -m 1 -d rootfs root.ext4 {root_mib}M",
        q(&parts.root_label),
        ids.root_uuid,
        ids.root_hash_seed
    );
    let _ = writeln!(s, "e2fsck -fn root.ext4");
    step.status("mkfs.vfat + mcopy, mke2fs -d (tools chroot)");
    std::fs::write(ctx.out.join("logs/assemble.sh"), &s).ctx(|| "saving assemble.sh".into())?;
    tools.run_script(
        &ctx.out,
        &s,
        &[("SOURCE_DATE_EPOCH", e.to_string())],
        &step.log,
    )?;

    step.status("writing the MBR and partitions");
    let first = FIRST_PARTITION_MIB * MIB / 512;
    let boot_p = Partition {
        kind: 0x0c,
        start_lba: first,
        sectors: parts.boot_mib * MIB / 512,
    };
    let root_p = Partition {
        kind: 0x83,
        start_lba: boot_p.start_lba + boot_p.sectors,
        sectors: root_mib * MIB / 512,
    };
    let image = ctx.out.join(ctx.image_name());
    let total = root_p.offset() + root_p.size();
    let disk_id =
        u32::from_str_radix(&ids.disk_id, 16).map_err(|_| Error::new("bad derived disk id"))?;
    disk::write_image(
        &image,
        disk_id,
        &[
            (boot_p, &ctx.work.join("boot.vfat")),
            (root_p, &ctx.work.join("root.ext4")),
        ],
        total,
    )?;
    Ok(Layout {
        image,
        ids,
        boot: boot_p,
        root: root_p,
        kernel,
        initrd,
    })
}

/// `.img.xz` with a fixed thread count and block size: xz's multi-threaded output depends on both.
pub fn compress(ctx: &Ctx, tools: &Tools, image: &Path, step: &Step) -> Result<PathBuf> {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let xz = ctx.out.join(format!("{name}.xz"));
    let script = format!(
        "cd /work\nrm -f {n}.xz\nxz -6 --threads=2 --block-size=64MiB --keep --force {n}",
        n = q(&name)
    );
    tools.run_script(&ctx.out, &script, &[], &step.log)?;
    Ok(xz)
}
