//! Board files (`board-configs/*.toml`): an image, or a QEMU machine, described as data.
//!
//! An *image board* (`rpi-arm64.toml`) says what goes on the card: Debian suite and packages, the binaries
//! we cross-compile, firmware files and DTBs that must be on the FAT, `config.txt`, the `cmdline.txt`
//! template and partition sizes. A *QEMU board* (`qemu-virt.toml`) only says how to boot an image built for
//! another board. Both may carry a `[qemu]` table; `boot-test --machine X` looks for it.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Short name, used in file names: `hearth-<version>-<name>.img`.
    pub name: String,
    pub description: String,
    /// Present on image boards.
    pub image: Option<ImageSpec>,
    /// Present on QEMU boards: which image board's image this machine boots.
    pub boots_image_of: Option<String>,
    pub qemu: Option<QemuSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Debian architecture of the root filesystem, e.g. `arm64`.
    pub architecture: String,
    /// Rust target our binaries are compiled for, e.g. `aarch64-unknown-linux-musl`.
    pub rust_target: String,
    pub hostname: String,
    pub debian: DebianSpec,
    #[serde(rename = "binary")]
    pub binaries: Vec<BinarySpec>,
    pub boot: BootSpec,
    pub partitions: PartitionSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSpec {
    pub suite: String,
    /// Where the build fetches packages from. The shipped boards leave it out (the repository names no
    /// mirror): `--mirror URL` wins, else the build host's apt sources, else mmdebstrap's default.
    #[serde(default)]
    pub mirror: Option<String>,
    /// The archive and security URIs written into the image's apt sources. Left out, the image keeps
    /// Debian's defaults as mmdebstrap writes them, so a box in the field gets updates whatever mirror
    /// built it; a user who runs their own mirror for their boxes sets these.
    #[serde(default)]
    pub image_mirror: Option<String>,
    #[serde(default)]
    pub image_security_mirror: Option<String>,
    pub components: Vec<String>,
    /// Packages to install; `name/suite` takes one from an extra suite (e.g. the kernel from backports).
    pub packages: Vec<String>,
    /// Further suites of the same mirror, e.g. `trixie-backports`: offered to the resolver while locking
    /// and written into the image's apt sources so that what came from them keeps getting updates.
    #[serde(default)]
    pub extra_suites: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinarySpec {
    /// Cargo package to build (`cargo build -p <package>`).
    pub package: String,
    /// Executables of that package installed to `/usr/bin`.
    pub executables: Vec<String>,
    /// A required binary that fails to build fails the image; an optional one is left out with a warning.
    pub required: bool,
    /// Unit files (paths from the repository root, e.g. `provisioning/web/systemd/hearth-web.service`)
    /// installed to /usr/lib/systemd/system and enabled with this binary.
    #[serde(default)]
    pub units: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    /// Files from `raspi-firmware` that must be on the FAT.
    pub firmware: Vec<String>,
    /// Device trees that must be on the FAT, one per supported board.
    pub dtbs: Vec<String>,
    /// `config.txt`; `{kernel}` and `{initrd}` are replaced by the file names on the FAT.
    pub config_txt: String,
    /// `cmdline.txt`; `{root}` is replaced by the root device (`LABEL=...`).
    pub cmdline_txt: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    pub boot_label: String,
    pub root_label: String,
    pub boot_mib: u64,
    /// Free space left in the root filesystem of the image (it grows to the card on first boot).
    pub root_free_mib: u64,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    pub binary: String,
    /// Machine arguments. Placeholders: `{image}`, `{console}`. The tool adds `-kernel`, `-initrd`,
    /// `-append`, `-dtb` and the user-mode network `-netdev user,id=n0,...` itself.
    pub args: Vec<String>,
    /// Kernel command line; `{root}` is replaced as in `cmdline.txt`.
    pub append: String,
    /// DTB file from the FAT passed with `-dtb`, if the machine needs one.
    #[serde(default)]
    pub dtb: Option<String>,
    /// Size the test copy of the image is grown to, so first boot has something to grow into.
    pub disk_mib: u64,
    /// The SD controller of `raspi3b` wants a power-of-two card size.
    #[serde(default)]
    pub disk_power_of_two: bool,
    /// Give up waiting for XMPP after this long.
    pub timeout_secs: u64,
}

impl Board {
    /// Reads `board-configs/<name>.toml` below `repo`.
    pub fn load(repo: &Path, name: &str) -> Result<(Board, PathBuf)> {
        let path = repo.join("board-configs").join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::new(format!("cannot read board file {}: {e}", path.display()))
                .hint("boards are the *.toml files in board-configs/ (e.g. --board rpi-arm64)")
        })?;
        let board: Board = toml::from_str(&text).map_err(|e| toml_error(&path, &text, &e))?;
        if board.name != name {
            return Err(Error::new(format!(
                "{}: name = \"{}\" but the file is named {name}.toml",
                path.display(),
                board.name
            )));
        }
        if board.image.is_none() && board.boots_image_of.is_none() {
            return Err(Error::new(format!(
                "{}: a board needs an [image] table or `boots_image_of`",
                path.display()
            )));
        }
        Ok((board, path))
    }

    pub fn image(&self) -> Result<&ImageSpec> {
        self.image.as_ref().ok_or_else(|| {
            Error::new(format!(
                "board {} describes a QEMU machine, not an image",
                self.name
            ))
            .hint(format!(
                "build the image of board {} instead",
                self.boots_image_of.as_deref().unwrap_or("rpi-arm64")
            ))
        })
    }
}

/// Turns a toml error into "file:line:column: message".
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let (line, col) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            (line, col)
        }
        None => (0, 0),
    };
    Error::new(format!("{}:{line}:{col}: {}", path.display(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn shipped_boards_parse() {
        let (rpi, _) = Board::load(&repo(), "rpi-arm64").unwrap();
        assert!(rpi
            .image()
            .unwrap()
            .boot
            .dtbs
            .iter()
            .any(|d| d.contains("bcm2837-rpi-3-b")));
        let (virt, _) = Board::load(&repo(), "qemu-virt").unwrap();
        assert_eq!(virt.boots_image_of.as_deref(), Some("rpi-arm64"));
        assert!(virt.image().is_err());
    }

    #[test]
    fn unknown_key_names_line() {
        let text = "name = \"x\"\ndescription = \"y\"\nbogus = 1\n";
        let err = toml::from_str::<Board>(text).unwrap_err();
        let msg = toml_error(Path::new("b.toml"), text, &err).to_string();
        assert!(msg.starts_with("b.toml:3:1:"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }
}
