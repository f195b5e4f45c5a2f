//! The package bundle, `hearth-<version>-debs.tar`: every `.deb` of both locks, both lock files, and a
//! `SHA256SUMS` list. With it a release rebuilds bit for bit after Debian has dropped its packages, with no
//! network (`build --from-bundle FILE`). The tar itself is reproducible (sorted, fixed times and owners).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::fetch;
use crate::lock::{sha256_file, Lock};
use crate::run::run;

/// One lock as the bundle carries it: its name (`rpi-arm64`, `tools-amd64`), its file and contents.
pub struct BundledLock<'a> {
    pub name: &'a str,
    pub path: PathBuf,
    pub lock: &'a Lock,
}

pub fn file_name(version: &str) -> String {
    format!("hearth-{version}-debs.tar")
}

/// Writes the bundle to `dest` from the cache (every package must be there, verified). Returns its SHA-256.
pub fn write(
    dest: &Path,
    locks: &[BundledLock],
    cache: &Path,
    epoch: u64,
    log: &Path,
) -> Result<String> {
    let staging = dest.with_extension("staging");
    let _ = std::fs::remove_dir_all(&staging);
    let mut sums = String::new();
    for l in locks {
        let dir = staging.join("debs").join(&l.lock.architecture);
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let from_dir = fetch::debs_dir(cache, &l.lock.architecture);
        for p in &l.lock.packages {
            let (from, to) = (from_dir.join(p.deb_name()), dir.join(p.deb_name()));
            if to.exists() {
                continue;
            }
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).ctx(|| format!("copying {}", from.display()))?;
            }
        }
        let locks_dir = staging.join("locks");
        std::fs::create_dir_all(&locks_dir).ctx(|| format!("creating {}", locks_dir.display()))?;
        std::fs::copy(&l.path, locks_dir.join(format!("{}.lock", l.name)))
            .ctx(|| format!("copying {}", l.path.display()))?;
    }
    // The checksum list covers every file, sorted by path.
    let mut files = vec![];
    walk(&staging, &staging, &mut files)?;
    files.sort();
    for rel in &files {
        sums.push_str(&format!("{}  {rel}\n", sha256_file(&staging.join(rel))?));
    }
    std::fs::write(staging.join("SHA256SUMS"), sums).ctx(|| "writing SHA256SUMS".into())?;
    let tmp = dest.with_extension("tar.part");
    run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--format=gnu",
            ])
            .arg(format!("--mtime=@{epoch}"))
            .arg("-cf")
            .arg(&tmp)
            .arg("-C")
            .arg(&staging)
            .arg("."),
        log,
    )?;
    std::fs::rename(&tmp, dest).ctx(|| format!("moving {}", dest.display()))?;
    let _ = std::fs::remove_dir_all(&staging);
    sha256_file(dest)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let path = e.ctx(|| format!("reading {}", dir.display()))?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Unpacks `bundle` and puts every package of `locks` into the cache, each checked against its lock. The
/// bundle's lock files must be the repository's: a bundle rebuilds the release it was made with.
pub fn unpack(bundle: &Path, locks: &[BundledLock], cache: &Path, log: &Path) -> Result<()> {
    let dir = cache.join("bundle-unpack");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(bundle)
            .arg("-C")
            .arg(&dir)
            .arg("--no-same-owner"),
        log,
    )
    .map_err(|e| {
        Error::new(format!(
            "cannot unpack the bundle {}: {e}",
            bundle.display()
        ))
        .hint("a bundle is the hearth-<version>-debs.tar that `hearth-image build --bundle` writes")
    })?;
    let sums_path = dir.join("SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path)
        .ctx(|| format!("{} has no SHA256SUMS", bundle.display()))?;
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for (n, line) in sums.lines().enumerate() {
        let Some((sum, rel)) = line.split_once("  ") else {
            return Err(Error::new(format!(
                "{}: SHA256SUMS line {}: expected `<sha256>  <path>`",
                bundle.display(),
                n + 1
            )));
        };
        listed.insert(rel.to_string(), sum.to_string());
    }
    for (rel, sum) in &listed {
        let got = sha256_file(&dir.join(rel))?;
        if &got != sum {
            return Err(Error::new(format!(
                "{}: {rel} has SHA-256 {got}, its SHA256SUMS says {sum}",
                bundle.display()
            ))
            .hint("the bundle is damaged: copy it again from the release"));
        }
    }
    let mut missing = vec![];
    for l in locks {
        let rel = format!("locks/{}.lock", l.name);
        let theirs = Lock::read(&dir.join(&rel))?;
        if theirs.as_ref().map(|t| &t.packages) != Some(&l.lock.packages) {
            return Err(Error::new(format!(
                "{}: its {rel} differs from {} (or is missing)",
                bundle.display(),
                l.path.display()
            ))
            .hint(
                "a bundle rebuilds the release it was made with: check out that release's commit",
            ));
        }
        let to_dir = fetch::debs_dir(cache, &l.lock.architecture);
        std::fs::create_dir_all(&to_dir).ctx(|| format!("creating {}", to_dir.display()))?;
        for p in &l.lock.packages {
            let rel = format!("debs/{}/{}", l.lock.architecture, p.deb_name());
            let from = dir.join(&rel);
            if !listed.contains_key(&rel) || !from.exists() || sha256_file(&from)? != p.sha256 {
                missing.push(format!("{} {}", p.name, p.version));
                continue;
            }
            std::fs::rename(&from, to_dir.join(p.deb_name()))
                .ctx(|| format!("moving {} into the cache", from.display()))?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !missing.is_empty() {
        return Err(Error::new(format!(
            "{} lacks {} locked package(s) (or holds other files under their names): {}",
            bundle.display(),
            missing.len(),
            missing.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{hex, LockedPackage};
    use sha2::{Digest, Sha256};

    fn lock_with(dir: &Path, arch: &str, names: &[&str]) -> (Lock, PathBuf) {
        let debs = fetch::debs_dir(&dir.join("cache"), arch);
        std::fs::create_dir_all(&debs).unwrap();
        let mut packages = vec![];
        for n in names {
            let body = format!("package {n} for {arch}\n");
            let p = LockedPackage {
                name: n.to_string(),
                version: "1:1.0-1".into(),
                architecture: arch.into(),
                sha256: hex(&Sha256::digest(body.as_bytes())),
                filename: format!("pool/main/{n}_1.0-1_{arch}.deb"),
            };
            std::fs::write(debs.join(p.deb_name()), body).unwrap();
            packages.push(p);
        }
        let lock = Lock {
            suite: "trixie".into(),
            architecture: arch.into(),
            request: "r".into(),
            resolved: None,
            packages,
        };
        let path = dir.join(format!("{arch}.lock"));
        lock.write(&path).unwrap();
        (lock, path)
    }

    #[test]
    fn roundtrip_into_an_empty_cache_and_damage_is_refused() {
        let dir = std::env::temp_dir().join(format!("hearth-bundle-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (tools, tools_path) = lock_with(&dir, "amd64", &["e2fsprogs", "mtools"]);
        let (root, root_path) = lock_with(&dir, "arm64", &["libc6", "systemd"]);
        let locks = [
            BundledLock {
                name: "tools-amd64",
                path: tools_path,
                lock: &tools,
            },
            BundledLock {
                name: "rpi-arm64",
                path: root_path,
                lock: &root,
            },
        ];
        let log = dir.join("log");
        let tar = dir.join("hearth-0.1.0-debs.tar");
        let sum = write(&tar, &locks, &dir.join("cache"), 1_700_000_000, &log).unwrap();
        // The tar is reproducible: the same inputs give the same bytes.
        let again = dir.join("again.tar");
        assert_eq!(
            write(&again, &locks, &dir.join("cache"), 1_700_000_000, &log).unwrap(),
            sum
        );

        let fresh = dir.join("fresh-cache");
        unpack(&tar, &locks, &fresh, &log).unwrap();
        for l in &locks {
            for p in &l.lock.packages {
                let f = fetch::debs_dir(&fresh, &l.lock.architecture).join(p.deb_name());
                assert_eq!(sha256_file(&f).unwrap(), p.sha256, "{}", f.display());
            }
        }
        assert!(!fresh.join("bundle-unpack").exists());

        // A bundle whose lock differs from the checkout's is refused.
        let mut other = root.packages.clone();
        other.pop();
        let other = Lock {
            packages: other,
            ..Lock::read(&locks[1].path).unwrap().unwrap()
        };
        let wrong = [BundledLock {
            name: "rpi-arm64",
            path: locks[1].path.clone(),
            lock: &other,
        }];
        let err = unpack(&tar, &wrong, &dir.join("c2"), &log).unwrap_err();
        assert!(err.to_string().contains("differs"), "{err}");

        // A damaged file inside the bundle is refused by SHA256SUMS.
        let x = dir.join("x");
        std::fs::create_dir_all(&x).unwrap();
        assert!(Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap()
            .success());
        let victim = x.join("debs/arm64").join(root.packages[0].deb_name());
        std::fs::write(&victim, "damaged").unwrap();
        let damaged = dir.join("damaged.tar");
        assert!(Command::new("tar")
            .arg("-cf")
            .arg(&damaged)
            .arg("-C")
            .arg(&x)
            .arg(".")
            .status()
            .unwrap()
            .success());
        let err = unpack(&damaged, &locks, &dir.join("c3"), &log).unwrap_err();
        assert!(err.to_string().contains("libc6"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
