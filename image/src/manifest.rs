//! `manifest.json` (what is in the image, reproducibly: no build host, no build time) and `SHA256SUMS`.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::assemble::Layout;
use crate::binaries::{Binaries, Binary};
use crate::build::Ctx;
use crate::disk::{Ids, Partition};
use crate::error::{Context, Error, Result};
use crate::lock::{sha256_file, Lock};
use crate::progress::Step;

#[derive(Serialize, Deserialize)]
pub struct Manifest {
    pub builder: String,
    pub board: String,
    pub version: String,
    pub source_date_epoch: u64,
    pub git_commit: Option<String>,
    pub image: FileEntry,
    pub image_xz: FileEntry,
    pub ids: Ids,
    pub partitions: Vec<Partition>,
    pub kernel: String,
    pub initrd: String,
    pub binaries: Vec<BinaryEntry>,
    pub left_out: Vec<String>,
    pub debian_suite: String,
    pub debian_packages: Vec<String>,
    pub tools: Vec<String>,
    /// The package bundle this build wrote (`--bundle`) or was rebuilt from (`--from-bundle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<FileEntry>,
}

#[derive(Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
pub struct BinaryEntry {
    pub name: String,
    pub package: String,
    pub sha256: String,
    pub size: u64,
    pub version: Option<String>,
}

impl From<&Binary> for BinaryEntry {
    fn from(b: &Binary) -> Self {
        BinaryEntry {
            name: b.name.clone(),
            package: b.package.clone(),
            sha256: b.sha256.clone(),
            size: b.size,
            version: b.version.clone(),
        }
    }
}

pub fn entry(path: &Path) -> Result<FileEntry> {
    Ok(FileEntry {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: std::fs::metadata(path)
            .ctx(|| format!("stat {}", path.display()))?
            .len(),
        sha256: sha256_file(path)?,
    })
}

fn git_commit(repo: &Path) -> Option<String> {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// What the image was made from, besides the source tree.
pub struct Inputs<'a> {
    pub lock: &'a Lock,
    /// (package, version) of the tools chroot's byte-producing tools.
    pub tools: &'a [(String, String)],
    /// The package bundle written (`--bundle`) or rebuilt from (`--from-bundle`).
    pub bundle: Option<FileEntry>,
}

pub fn write(
    ctx: &Ctx,
    layout: &Layout,
    xz: &Path,
    bins: &Binaries,
    inputs: Inputs,
    step: &Step,
) -> Result<()> {
    let Inputs {
        lock,
        tools,
        bundle,
    } = inputs;
    step.status("hashing the image");
    let image = entry(&layout.image)?;
    let image_xz = entry(xz)?;
    let sums = format!(
        "{}  {}\n{}  {}\n",
        image_xz.sha256, image_xz.name, image.sha256, image.name
    );
    std::fs::write(ctx.out.join("SHA256SUMS"), sums).ctx(|| "writing SHA256SUMS".into())?;
    crate::imager_repo::write(
        &ctx.out,
        &ctx.version,
        &ctx.board.name,
        &image,
        &image_xz,
        ctx.epoch,
    )?;
    let m = Manifest {
        builder: format!("hearth-image {}", env!("CARGO_PKG_VERSION")),
        board: ctx.board.name.clone(),
        version: ctx.version.clone(),
        source_date_epoch: ctx.epoch,
        git_commit: git_commit(ctx.repo),
        image,
        image_xz,
        ids: layout.ids.clone(),
        partitions: vec![layout.boot, layout.root],
        kernel: layout.kernel.clone(),
        initrd: layout.initrd.clone(),
        binaries: bins.built.iter().map(BinaryEntry::from).collect(),
        left_out: bins.skipped.clone(),
        debian_suite: lock.suite.clone(),
        debian_packages: lock
            .packages
            .iter()
            .map(|p| format!("{} {} {}", p.name, p.version, p.architecture))
            .collect(),
        tools: tools.iter().map(|(n, v)| format!("{n} {v}")).collect(),
        bundle,
    };
    let json = serde_json::to_string_pretty(&m).ctx(|| "serialising manifest".into())?;
    std::fs::write(ctx.out.join("manifest.json"), json + "\n")
        .ctx(|| "writing manifest.json".into())
}

/// The manifest next to an image (`manifest.json` in the same directory), if there is one.
pub fn read_beside(image: &Path) -> Result<Option<Manifest>> {
    let path = image.with_file_name("manifest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::new(format!("{}: {e}", path.display())))
}
