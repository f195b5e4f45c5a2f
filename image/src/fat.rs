//! Reading and writing files on an image's FAT partition with mtools (`image@@offset`), no mounting.

use std::path::Path;
use std::process::Command;

use crate::disk::Partition;
use crate::error::Result;
use crate::run::{output, run};

fn mtools(program: &str) -> Command {
    let mut c = Command::new(program);
    // Our FAT is not cylinder-aligned (it needs not be); do not let mtools refuse it for that.
    c.env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC");
    c
}

fn target(image: &Path, part: &Partition) -> String {
    format!("{}@@{}", image.display(), part.offset())
}

/// All file paths on the FAT, like "broadcom/bcm2837-rpi-3-b.dtb" (mdir -/ -b prints "::/path").
pub fn list(image: &Path, part: &Partition, log: &Path) -> Result<Vec<String>> {
    let out = output(
        mtools("mdir").args(["-/", "-b", "-i", &target(image, part), "::/"]),
        log,
    )?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("::/"))
        .map(|s| s.trim_end_matches('/').to_string())
        .collect())
}

pub fn read(image: &Path, part: &Partition, name: &str, log: &Path) -> Result<String> {
    output(
        mtools("mtype").args(["-i", &target(image, part), &format!("::/{name}")]),
        log,
    )
}

pub fn extract(image: &Path, part: &Partition, name: &str, to: &Path, log: &Path) -> Result<()> {
    run(
        mtools("mcopy")
            .args([
                "-o",
                "-n",
                "-i",
                &target(image, part),
                &format!("::/{name}"),
            ])
            .arg(to),
        log,
    )
}

pub fn put(image: &Path, part: &Partition, from: &Path, name: &str, log: &Path) -> Result<()> {
    run(
        mtools("mcopy")
            .args(["-o", "-i", &target(image, part)])
            .arg(from)
            .arg(format!("::/{name}")),
        log,
    )
}

/// The file names config.txt boots: (kernel, initrd).
pub fn boot_files(config_txt: &str) -> (Option<String>, Option<String>) {
    let mut kernel = None;
    let mut initrd = None;
    for l in config_txt.lines().map(str::trim) {
        if let Some(k) = l.strip_prefix("kernel=") {
            kernel = Some(k.trim().to_string());
        } else if let Some(rest) = l.strip_prefix("initramfs ") {
            initrd = rest.split_whitespace().next().map(str::to_string);
        }
    }
    (kernel, initrd)
}

/// The `root=` value of a kernel command line.
pub fn root_arg(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("root="))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config_and_cmdline() {
        let (k, i) = boot_files(
            "arm_64bit=1\nkernel=vmlinuz-6.12\ninitramfs initrd.img-6.12 followkernel\n",
        );
        assert_eq!(k.as_deref(), Some("vmlinuz-6.12"));
        assert_eq!(i.as_deref(), Some("initrd.img-6.12"));
        assert_eq!(
            root_arg("console=tty0 root=LABEL=RASPIROOT rw").as_deref(),
            Some("LABEL=RASPIROOT")
        );
        assert_eq!(root_arg("console=tty0"), None);
    }
}
