//! Fetching what a lock names by where it lives: each `.deb` by its pool path (`filename`) from a list of
//! base URLs, checked against the lock's SHA-256. Not through apt's index: a stable suite's index drops a
//! superseded version within days of a security update or point release, while the pool (and snapshot
//! archives, local mirrors) keep the file. The first source whose file has the locked SHA-256 wins.
//!
//! Downloads go to a temporary file that is verified and then renamed, so a killed build never leaves a
//! bad `.deb` in the cache. curl does the transfers (http, https, file; the host's proxy settings apply).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Context, Error, Result};
use crate::lock::{sha256_file, LockedPackage};
use crate::progress::Step;

/// How many downloads run at once: enough to hide a mirror's latency, few enough to be polite.
const PARALLEL: usize = 4;

/// How many packages' source answers an error quotes (all of them are in the log).
const DETAILED: usize = 8;

/// Where locked packages come from, tried in order after the cache.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub bases: Vec<String>,
}

impl Sources {
    /// The mirror first, then the user's further sources (`--source`, then HEARTH_EXTRA_SOURCES).
    pub fn new(mirror: Option<&str>, extra: &[String]) -> Sources {
        let mut bases: Vec<String> = mirror.into_iter().map(str::to_string).collect();
        bases.extend(extra.iter().cloned());
        if let Ok(env) = std::env::var("HEARTH_EXTRA_SOURCES") {
            bases.extend(env.split_whitespace().map(str::to_string));
        }
        let mut seen = std::collections::HashSet::new();
        bases.retain(|b| seen.insert(b.trim_end_matches('/').to_string()));
        Sources { bases }
    }
}

/// Why one package could not be had.
#[derive(Debug)]
enum Miss {
    /// No source had the file (each source's answer, e.g. "HTTP 404").
    Gone(Vec<String>),
    /// A source served a file whose SHA-256 differs from the lock's (and no other had the right one).
    Corrupt(Vec<String>),
}

/// Puts every package of `pkgs` into `dir` (named as `deb_name()`), verified. Files already there with the
/// locked SHA-256 are kept; others are fetched. One error names every package that could not be had.
pub fn fetch_all(pkgs: &[LockedPackage], dir: &Path, sources: &Sources, step: &Step) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut wanted = vec![];
    for p in pkgs {
        let path = dir.join(p.deb_name());
        if path.exists() && sha256_file(&path)? == p.sha256 {
            continue;
        }
        wanted.push(p.clone());
    }
    if wanted.is_empty() {
        return Ok(());
    }
    if sources.bases.is_empty() {
        return Err(missing_error(
            &wanted
                .iter()
                .map(|p| (p.clone(), Miss::Gone(vec!["no source configured".into()])))
                .collect::<Vec<_>>(),
            sources,
        ));
    }
    let total = wanted.len();
    step.status(&format!(
        "fetching {total} of {} packages from {}",
        pkgs.len(),
        sources.bases.join(", ")
    ));
    let queue = Mutex::new(wanted);
    let done = AtomicUsize::new(0);
    let misses: Mutex<Vec<(LockedPackage, Miss)>> = Mutex::new(vec![]);
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(total) {
            s.spawn(|| loop {
                let Some(p) = queue.lock().map(|mut q| q.pop()).ok().flatten() else {
                    return;
                };
                match fetch_one(&p, dir, sources, &step.log) {
                    Ok(None) => {}
                    Ok(Some(miss)) => {
                        if let Ok(mut m) = misses.lock() {
                            m.push((p.clone(), miss));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = fatal.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                step.status(&format!("fetched {n}/{total}: {}", p.name));
            });
        }
    });
    if let Some(e) = fatal.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut misses = misses.into_inner().unwrap_or_default();
    if misses.is_empty() {
        step.note(&format!("fetched {total} packages by pool path"));
        return Ok(());
    }
    misses.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Err(missing_error(&misses, sources))
}

/// Tries each source in turn. `Ok(None)`: the verified file is in `dir`.
fn fetch_one(p: &LockedPackage, dir: &Path, sources: &Sources, log: &Path) -> Result<Option<Miss>> {
    let dest = dir.join(p.deb_name());
    let tmp = dir.join(format!(".{}.part", p.deb_name()));
    let (mut gone, mut corrupt) = (vec![], vec![]);
    for base in &sources.bases {
        let url = format!(
            "{}/{}",
            base.trim_end_matches('/'),
            p.filename.trim_start_matches('/')
        );
        let _ = std::fs::remove_file(&tmp);
        match curl(&url, &tmp, log)? {
            Ok(()) => {}
            Err(why) => {
                gone.push(format!("{url}: {why}"));
                continue;
            }
        }
        let got = sha256_file(&tmp)?;
        if got == p.sha256 {
            std::fs::rename(&tmp, &dest).ctx(|| format!("moving {}", dest.display()))?;
            return Ok(None);
        }
        corrupt.push(format!("{url}: SHA-256 {got}"));
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(Some(if corrupt.is_empty() {
        Miss::Gone(gone)
    } else {
        Miss::Corrupt(corrupt)
    }))
}

/// One transfer. Outer error: curl could not run at all; inner: this source does not have the file.
fn curl(url: &str, to: &Path, log: &Path) -> Result<std::result::Result<(), String>> {
    let out = Command::new("curl")
        .args([
            "--fail",
            "--silent",
            "--show-error",
            "--location",
            "--retry",
            "2",
            "--connect-timeout",
            "15",
            "--output",
        ])
        .arg(to)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("cannot start curl: {e}")).hint("apt-get install curl"))?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let why = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("curl: ")
        .to_string();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        use std::io::Write;
        let _ = writeln!(f, "{url}: {why}");
    }
    Ok(Err(why))
}

fn missing_error(misses: &[(LockedPackage, Miss)], sources: &Sources) -> Error {
    let mut gone = vec![];
    let mut corrupt = vec![];
    let mut detail = String::new();
    for (i, (p, miss)) in misses.iter().enumerate() {
        let (list, answers) = match miss {
            Miss::Gone(a) => (&mut gone, a),
            Miss::Corrupt(a) => (&mut corrupt, a),
        };
        list.push(format!("{} {}", p.name, p.version));
        // Each source's answer for the first few; the step's log has them all.
        if i == DETAILED {
            detail.push_str(&format!(
                "\n  … {} more; every answer is in the step's log",
                misses.len() - DETAILED
            ));
        }
        if i >= DETAILED {
            continue;
        }
        detail.push_str(&format!("\n  {} {} ({}):", p.name, p.version, p.filename));
        for a in answers {
            detail.push_str(&format!("\n    {a}"));
        }
    }
    let mut msg = String::new();
    if !corrupt.is_empty() {
        msg.push_str(&format!(
            "refused {} package(s) whose SHA-256 differs from the lock's: {}",
            corrupt.len(),
            corrupt.join(", ")
        ));
    }
    if !gone.is_empty() {
        if !msg.is_empty() {
            msg.push_str("; ");
        }
        msg.push_str(&format!(
            "{} locked package(s) are gone from every source ({}): {}",
            gone.len(),
            if sources.bases.is_empty() {
                "none configured".to_string()
            } else {
                sources.bases.join(", ")
            },
            gone.join(", ")
        ));
    }
    msg.push_str(&detail);
    Error::new(msg).hint(
        "two ways on: `hearth-image lock` moves to Debian's current packages (the image then differs from \
         the released one), or `hearth-image build --from-bundle FILE` rebuilds from a release's package \
         bundle (hearth-<version>-debs.tar); a further source (a local mirror, a snapshot of Debian's \
         archive) can be added with --source URL or HEARTH_EXTRA_SOURCES",
    )
}

/// The cache directory a lock's `.deb`s live in.
pub fn debs_dir(cache: &Path, architecture: &str) -> PathBuf {
    cache.join("debs").join(architecture)
}
