//! A private apt root in the cache: resolves a package request into a lock and downloads locked `.deb`s,
//! without touching the host's own apt state. Then turns the locked `.deb`s into a flat local repository,
//! which is the only mirror mmdebstrap sees, so the image contains exactly the locked versions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::fetch::{self, Sources};
use crate::lock::{format_day, today, Lock, LockedPackage, Request};
use crate::progress::Step;
use crate::run::{output, run};

pub struct Apt {
    root: PathBuf,
}

impl Apt {
    pub fn new(cache: &Path, req: &Request) -> Result<Apt> {
        let root = cache
            .join("apt")
            .join(format!("{}-{}", req.suite, req.architecture));
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/lib/dpkg",
            "var/cache/apt/archives/partial",
            "var/log/apt",
        ] {
            std::fs::create_dir_all(root.join(d))
                .ctx(|| format!("creating {}", root.join(d).display()))?;
        }
        let status = root.join("var/lib/dpkg/status");
        if !status.exists() {
            std::fs::write(&status, "").ctx(|| format!("creating {}", status.display()))?;
        }
        let keyring = format!(
            "/usr/share/keyrings/debian-archive-{}-stable.gpg",
            req.suite
        );
        let keyring = if Path::new(&keyring).exists() {
            keyring
        } else {
            "/usr/share/keyrings/debian-archive-keyring.gpg".into()
        };
        // Backports and -updates are signed by the archive's automatic keys, not the release's own.
        let archive_keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let sources: String = std::iter::once((req.suite, keyring.as_str()))
            .chain(
                req.extra_suites
                    .iter()
                    .map(|s| (s.as_str(), archive_keyring)),
            )
            .map(|(suite, keyring)| {
                format!(
                    "deb [signed-by={keyring}] {} {suite} {}\n",
                    req.mirror,
                    req.components.join(" ")
                )
            })
            .collect();
        std::fs::write(root.join("etc/apt/sources.list"), sources)
            .ctx(|| "writing private sources.list".into())?;
        let conf = format!(
            "Dir \"{r}/\";\nDir::State::status \"{r}/var/lib/dpkg/status\";\n\
             APT::Architecture \"{a}\";\nAPT::Architectures {{ \"{a}\"; }};\n\
             Acquire::Languages \"none\";\nAPT::Install-Recommends \"false\";\nDebug::NoLocking \"true\";\n\
             Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled \"false\";\n",
            r = root.display(),
            a = req.architecture
        );
        std::fs::write(root.join("apt.conf"), conf).ctx(|| "writing private apt.conf".into())?;
        Ok(Apt { root })
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", self.root.join("apt.conf"))
            .env("LC_ALL", "C.UTF-8");
        c
    }

    pub fn update(&self, log: &Path) -> Result<()> {
        run(self.cmd("apt-get").arg("update"), log).map_err(|e| {
            let hint = e.hint_text().unwrap_or_default().to_string();
            Error::new(format!("cannot fetch the Debian package index: {e}"))
                .hint(format!("{hint}; a build without network needs the lock file and a filled cache (HEARTH_CACHE)"))
        })
    }

    /// Resolves the request (Essential + Priority:required + apt + the board's packages) to exact versions.
    pub fn resolve(&self, req: &Request, log: &Path) -> Result<Vec<LockedPackage>> {
        let sim = output(
            self.cmd("apt-get")
                .args([
                    "-s",
                    "install",
                    "--no-install-recommends",
                    "apt",
                    "?essential",
                    "?priority(required)",
                ])
                .args(req.packages),
            log,
        )?;
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for line in sim.lines() {
            // Inst libc6 (2.41-12 Debian:13.1/stable [arm64])
            if let Some(rest) = line.strip_prefix("Inst ") {
                let mut it = rest.split_whitespace();
                let (Some(name), Some(ver)) = (it.next(), it.next()) else {
                    continue;
                };
                wanted.insert(name.to_string(), ver.trim_start_matches('(').to_string());
            }
        }
        if wanted.is_empty() {
            return Err(
                Error::new("apt resolved no packages").hint(format!("see {}", log.display()))
            );
        }
        let specs: Vec<String> = wanted.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let show = output(self.cmd("apt-cache").arg("show").args(&specs), log)?;
        let mut found: BTreeMap<String, LockedPackage> = BTreeMap::new();
        for record in show.split("\n\n") {
            let field = |k: &str| {
                record.lines().find_map(|l| {
                    l.strip_prefix(k)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                })
            };
            let (Some(name), Some(version), Some(arch), Some(filename), Some(sha256)) = (
                field("Package"),
                field("Version"),
                field("Architecture"),
                field("Filename"),
                field("SHA256"),
            ) else {
                continue;
            };
            if wanted.get(&name) == Some(&version) {
                found.entry(name.clone()).or_insert(LockedPackage {
                    name,
                    version,
                    architecture: arch,
                    sha256,
                    filename,
                });
            }
        }
        let missing: Vec<&String> = wanted.keys().filter(|n| !found.contains_key(*n)).collect();
        if !missing.is_empty() {
            return Err(Error::new(format!(
                "apt-cache show lacks records for: {missing:?}"
            )));
        }
        Ok(found.into_values().collect())
    }
}

/// Makes sure every `.deb` in `lock` is in `<cache>/debs/<arch>` with the locked SHA-256, fetching what is
/// missing by pool path from `sources`, and returns a flat repository directory holding exactly those.
pub fn local_repo(
    cache: &Path,
    lock: &Lock,
    lock_name: &str,
    sources: &Sources,
    step: &Step,
) -> Result<PathBuf> {
    let repo = cache
        .join("repos")
        .join(format!("{lock_name}-{}", lock.digest()));
    if repo.join(".complete").exists() {
        return Ok(repo);
    }
    let debs = fetch::debs_dir(cache, &lock.architecture);
    fetch::fetch_all(&lock.packages, &debs, sources, step)?;
    step.status("indexing the local package repository");
    let tmp = repo.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    for p in &lock.packages {
        let (from, to) = (debs.join(p.deb_name()), tmp.join(p.deb_name()));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).ctx(|| format!("copying {}", from.display()))?;
        }
    }
    let packages = output(
        Command::new("apt-ftparchive")
            .current_dir(&tmp)
            .args(["packages", "."]),
        &step.log,
    )?;
    std::fs::write(tmp.join("Packages"), packages).ctx(|| "writing Packages".into())?;
    // mmdebstrap selects Essential packages with ?archive(^suite$) or ?codename(^suite$): say which suite this is.
    let release = output(
        Command::new("apt-ftparchive")
            .current_dir(&tmp)
            .arg(format!("-oAPT::FTPArchive::Release::Suite={}", lock.suite))
            .arg(format!(
                "-oAPT::FTPArchive::Release::Codename={}",
                lock.suite
            ))
            .arg(format!(
                "-oAPT::FTPArchive::Release::Architectures={}",
                lock.architecture
            ))
            .args(["release", "."]),
        &step.log,
    )?;
    std::fs::write(tmp.join("Release"), release).ctx(|| "writing Release".into())?;
    std::fs::write(tmp.join(".complete"), "").ctx(|| "marking repository complete".into())?;
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::rename(&tmp, &repo).ctx(|| format!("moving repository to {}", repo.display()))?;
    Ok(repo)
}

/// Resolves `req` against the real mirror's index and writes a new lock, printing what moved.
pub fn refresh_lock(cache: &Path, req: &Request, path: &Path, step: &Step) -> Result<Lock> {
    let apt = Apt::new(cache, req)?;
    step.status(&format!(
        "apt-get update ({} {})",
        req.suite, req.architecture
    ));
    apt.update(&step.log)?;
    step.status("resolving packages");
    let packages = apt.resolve(req, &step.log)?;
    let lock = Lock {
        suite: req.suite.into(),
        architecture: req.architecture.into(),
        request: req.hash(),
        resolved: Some(format_day(today())),
        packages,
    };
    let old = Lock::read(path).ok().flatten();
    lock.write(path)?;
    match old {
        Some(old) => {
            let changes = lock.changes_from(&old);
            step.note(&format!(
                "{}: {} change(s) since {}",
                path.display(),
                changes.len(),
                old.resolved.as_deref().unwrap_or("the previous lock")
            ));
            for c in changes {
                step.note(&format!("  {c}"));
            }
        }
        None => step.note("no previous lock: every package is new"),
    }
    step.note(&format!(
        "wrote {} ({} packages)",
        path.display(),
        lock.packages.len()
    ));
    Ok(lock)
}
