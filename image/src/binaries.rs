//! Cross-compiles our binaries for the board's Rust target (static musl), checks them, and stages them
//! under `<work>/bin` for the root filesystem step.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::Apt;
use crate::build::Ctx;
use crate::error::{Context, Error, Result};
use crate::lock::{sha256_file, Request};
use crate::progress::Step;
use crate::run::{output, run};

#[derive(Debug, Serialize, Clone)]
pub struct Binary {
    pub name: String,
    pub package: String,
    pub sha256: String,
    pub size: u64,
    /// First line of `<name> --version` run under qemu-user, if it printed one.
    pub version: Option<String>,
}

#[derive(Debug, Default)]
pub struct Binaries {
    pub dir: PathBuf,
    pub built: Vec<Binary>,
    /// Unit files to install and enable (paths from the repository root).
    pub units: Vec<String>,
    /// Optional packages left out because they did not build.
    pub skipped: Vec<String>,
}

fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"))
}

/// The musl headers C code (SQLite, ring) compiles against: musl-dev for the target, unpacked.
fn ensure_sysroot(ctx: &Ctx, req: &Request, step: &Step) -> Result<PathBuf> {
    let sysroot = target_dir(ctx.repo).join("aarch64-musl-sysroot");
    if sysroot
        .join("usr/include/aarch64-linux-musl/stdio.h")
        .exists()
    {
        return Ok(sysroot);
    }
    step.status("fetching musl-dev (arm64) for the C sysroot");
    let debs = ctx.cache.join("debs/musl-dev");
    std::fs::create_dir_all(&debs).ctx(|| format!("creating {}", debs.display()))?;
    let have_deb = |d: &Path| -> Option<PathBuf> {
        std::fs::read_dir(d)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
    };
    if have_deb(&debs).is_none() {
        let apt = Apt::new(&ctx.cache, req)?;
        apt.update(&step.log)?;
        run(
            apt.cmd("apt-get")
                .current_dir(&debs)
                .args(["download", "musl-dev"]),
            &step.log,
        )?;
    }
    let deb = have_deb(&debs).ok_or_else(|| Error::new("musl-dev download produced no .deb"))?;
    std::fs::create_dir_all(&sysroot).ctx(|| format!("creating {}", sysroot.display()))?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&sysroot),
        &step.log,
    )?;
    Ok(sysroot)
}

fn is_static_aarch64(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let elf = bytes.len() > 64
        && &bytes[..4] == b"\x7fELF"
        && bytes[4] == 2
        && u16::from_le_bytes([bytes[18], bytes[19]]) == 0xb7;
    // A dynamic executable names its interpreter in a PT_INTERP header; look for the usual path.
    let dynamic = bytes
        .windows(14)
        .any(|w| w == b"/lib/ld-linux-" || w == b"/lib/ld-musl-a");
    Ok(elf && !dynamic)
}

pub fn build(ctx: &Ctx, req: &Request, step: &Step) -> Result<Binaries> {
    let sysroot = ensure_sysroot(ctx, req, step)?;
    let target = &ctx.spec.rust_target;
    let stage = ctx.work.join("bin");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).ctx(|| format!("creating {}", stage.display()))?;
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    // Paths of this checkout and of the registry must not end up in the binaries.
    let rustflags = format!(
        "--remap-path-prefix={}=/hearth --remap-path-prefix={cargo_home}=/cargo",
        ctx.repo
            .canonicalize()
            .unwrap_or_else(|_| ctx.repo.to_path_buf())
            .display()
    );
    let mut result = Binaries {
        dir: stage.clone(),
        ..Default::default()
    };
    // HEARTH_PREBUILT_BIN=DIR takes the executables from DIR instead of cargo: for comparing two image
    // builds while the Rust sources change underneath (a shared working tree).
    let prebuilt = std::env::var_os("HEARTH_PREBUILT_BIN").map(PathBuf::from);
    // Whether one `cargo build` of every package succeeded; decided when the first package needs it.
    let mut built_all: Option<bool> = None;
    for b in &ctx.spec.binaries {
        if let Some(dir) = &prebuilt {
            if !b.executables.iter().all(|e| dir.join(e).is_file()) {
                result.skipped.push(b.package.clone());
                continue;
            }
            for exe in &b.executables {
                let to = stage.join(exe);
                std::fs::copy(dir.join(exe), &to).ctx(|| format!("copying prebuilt {exe}"))?;
                let size = std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
                result.built.push(Binary {
                    name: exe.clone(),
                    package: b.package.clone(),
                    sha256: sha256_file(&to)?,
                    size,
                    version: None,
                });
            }
            result.units.extend(b.units.iter().cloned());
            continue;
        }
        if !*built_all.get_or_insert_with(|| cargo_build_all(ctx, &sysroot, &rustflags, step)) {
            // The combined build failed: build this package alone to learn whether it is the one.
            if let Err(e) = cargo_build(ctx, &sysroot, &rustflags, &[b.package.as_str()], step) {
                if b.required {
                    return Err(e);
                }
                step.note(&format!(
                    "warning: optional package {} did not build; left out of the image",
                    b.package
                ));
                result.skipped.push(b.package.clone());
                continue;
            }
        }
        for exe in &b.executables {
            let from = target_dir(ctx.repo).join(target).join("release").join(exe);
            let to = stage.join(exe);
            std::fs::copy(&from, &to).ctx(|| format!("copying {}", from.display()))?;
            run(
                Command::new("aarch64-linux-gnu-strip")
                    .arg("--strip-all")
                    .arg(&to),
                &step.log,
            )?;
            if !is_static_aarch64(&to)? {
                return Err(Error::new(format!("{} is not a static aarch64 executable", from.display()))
                    .hint("check .cargo/config.toml: the musl target must link statically with aarch64-linux-gnu-gcc"));
            }
            let version = output(
                Command::new("qemu-aarch64-static")
                    .arg(&to)
                    .arg("--version"),
                &step.log,
            )
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
            .filter(|s| !s.is_empty());
            let size = std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
            step.note(&format!(
                "{exe}: {} KiB, {}",
                size / 1024,
                version.as_deref().unwrap_or("prints no --version")
            ));
            result.built.push(Binary {
                name: exe.clone(),
                package: b.package.clone(),
                sha256: sha256_file(&to)?,
                size,
                version,
            });
        }
        result.units.extend(b.units.iter().cloned());
    }
    Ok(result)
}

/// Builds every package the board lists in one cargo run: features are unified, so the dependencies
/// are compiled once rather than once per package (minutes on two cores with LTO).
fn cargo_build_all(ctx: &Ctx, sysroot: &Path, rustflags: &str, step: &Step) -> bool {
    let packages: Vec<&str> = ctx
        .spec
        .binaries
        .iter()
        .map(|b| b.package.as_str())
        .collect();
    cargo_build(ctx, sysroot, rustflags, &packages, step).is_ok()
}

fn cargo_build(
    ctx: &Ctx,
    sysroot: &Path,
    rustflags: &str,
    packages: &[&str],
    step: &Step,
) -> Result<()> {
    let target = &ctx.spec.rust_target;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(ctx.repo)
        .args(["build", "--release", "--target", target]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    step.status(&format!(
        "cargo build --release --target {target} -p {}",
        packages.join(" -p ")
    ));
    // The cc crate (ring, SQLite) reruns its build script when SOURCE_DATE_EPOCH changes, and the epoch
    // moves with every commit: without it here, a second build (which gets the epoch in its environment)
    // and the next commit's build reuse the compiled C code. The binaries do not depend on it.
    cmd.env_remove("SOURCE_DATE_EPOCH");
    run(
        cmd.env("HEARTH_MUSL_SYSROOT", sysroot).env(
            format!(
                "CARGO_TARGET_{}_RUSTFLAGS",
                target.to_uppercase().replace('-', "_")
            ),
            rustflags,
        ),
        &step.log,
    )
}
