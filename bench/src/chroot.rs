//! The Debian trixie root filesystem Prosody and ejabberd run from: made once with mmdebstrap (as
//! root) from the Debian archive the host's apt configuration names, and kept under the cache
//! directory, so every later run starts at once and measures the same package versions.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's release whose Prosody and ejabberd are compared (Prosody 13, ejabberd 24.12).
pub const SUITE: &str = "trixie";
/// Packages in the chroot: the two servers, and `procps` for a person poking around in it.
const PACKAGES: &str = "prosody,ejabberd,procps";
/// Written last: a chroot without it is a half-made one from an interrupted run, and is made again.
const READY: &str = ".hearth-bench-ready";

pub struct Chroot {
    pub root: PathBuf,
}

/// The host's Debian archive: the first apt source serving a Debian suite by its plain name, from
/// `/etc/apt/sources.list` and `sources.list.d/*.list|*.sources`. The repository names no mirror.
pub fn host_archive(etc_apt: &Path) -> Option<String> {
    let mut texts = vec![];
    if let Ok(t) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        texts.push(t);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "list" || ext == "sources" {
            texts.extend(std::fs::read_to_string(&f).ok());
        }
    }
    texts.iter().find_map(|t| archive_in(t))
}

/// Debian's suite names and aliases: a source serving one of them is the archive (not security,
/// not another vendor's repository).
const DEBIAN_SUITES: &[&str] = &[
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// The archive URI in one file's text, one-line (`deb [opts] URI suite …`) or deb822 format.
fn archive_in(text: &str) -> Option<String> {
    let mut uri: Option<String> = None;
    for line in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
    {
        if let Some(rest) = line.strip_prefix("deb ") {
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(r) => r.split_once(']').map(|x| x.1).unwrap_or(""),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            if let (Some(u), Some(s)) = (words.next(), words.next()) {
                if DEBIAN_SUITES.contains(&s) {
                    return Some(u.trim_end_matches('/').to_string());
                }
            }
        } else if let Some(u) = line.strip_prefix("URIs:") {
            uri = u.split_whitespace().next().map(str::to_string);
        } else if let Some(s) = line.strip_prefix("Suites:") {
            if s.split_whitespace().any(|s| DEBIAN_SUITES.contains(&s)) {
                if let Some(u) = uri.take() {
                    return Some(u.trim_end_matches('/').to_string());
                }
            }
        } else if line.is_empty() {
            uri = None;
        }
    }
    None
}

impl Chroot {
    /// The chroot under `cache`, made now if it is not there yet.
    pub fn ensure(cache: &Path, mirror: Option<&str>) -> Result<Chroot, String> {
        let root = cache.join(format!("{SUITE}-amd64"));
        if root.join(READY).exists() {
            return Ok(Chroot { root });
        }
        if !nix::unistd::Uid::effective().is_root() {
            return Err(format!(
                "{} is not made yet and making it needs root (mmdebstrap --mode=root): run as root, \
                 or pass --servers hearthd",
                root.display()
            ));
        }
        let mirror = match mirror {
            Some(m) => m.to_string(),
            None => host_archive(Path::new("/etc/apt")).ok_or(
                "no Debian archive in the host's apt sources (/etc/apt/sources.list*): pass --mirror URL",
            )?,
        };
        std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
        let _ = std::fs::remove_dir_all(&root);
        eprintln!(
            "making the {SUITE} chroot with Prosody and ejabberd in {} …",
            root.display()
        );
        let status = Command::new("mmdebstrap")
            .args(["--mode=root", "--variant=apt", "--quiet"])
            .arg(format!("--include={PACKAGES}"))
            // Erlang's node name and Prosody's resolver want a localhost; nothing of the host leaks in.
            .arg("--customize-hook=printf '127.0.0.1 localhost\\n::1 localhost\\n' > \"$1/etc/hosts\"")
            .arg("--customize-hook=rm -f \"$1/etc/resolv.conf\"")
            .arg(SUITE)
            .arg(&root)
            .arg(format!("deb {mirror} {SUITE} main"))
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run mmdebstrap (apt-get install mmdebstrap): {e}"))?;
        if !status.success() {
            return Err(format!(
                "mmdebstrap failed ({status}); see its output above"
            ));
        }
        std::fs::write(root.join(READY), b"").map_err(|e| e.to_string())?;
        Ok(Chroot { root })
    }

    /// `name`'s installed version inside the chroot.
    pub fn version(&self, name: &str) -> String {
        Command::new("chroot")
            .arg(&self.root)
            .args(["dpkg-query", "-W", "-f=${Version}", name])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|| "?".into())
    }

    /// A system user's uid and gid from the chroot's passwd file.
    pub fn user(&self, name: &str) -> Result<(u32, u32), String> {
        let passwd = std::fs::read_to_string(self.root.join("etc/passwd"))
            .map_err(|e| format!("{}/etc/passwd: {e}", self.root.display()))?;
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name) && f.len() > 3)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| format!("no user {name} in the chroot"))
    }

    /// A command that runs `argv` as `user` inside the chroot, in a private mount namespace with
    /// `/proc` and `/dev` (gone when the server exits, so nothing stays mounted).
    pub fn command(&self, user: &str, env: &[(&str, &str)], argv: &[&str]) -> Command {
        let root = self.root.display().to_string();
        let mut script = format!(
            "mount -t proc proc '{root}/proc' && mount --rbind /dev '{root}/dev' && exec chroot --userspec={user}:{user} '{root}' env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin"
        );
        for (k, v) in env {
            script.push_str(&format!(" {k}='{v}'"));
        }
        for a in argv {
            script.push_str(&format!(" '{a}'"));
        }
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_archive_in_both_formats() {
        let one = "deb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            archive_in(one).as_deref(),
            Some("http://mirror.example/debian")
        );
        let deb822 = "Types: deb\nURIs: http://local.example/debian-security\nSuites: bookworm-security\n\n\
                      Types: deb\nURIs: http://local.example/debian\nSuites: bookworm bookworm-updates\n";
        assert_eq!(
            archive_in(deb822).as_deref(),
            Some("http://local.example/debian")
        );
        assert_eq!(
            archive_in("deb https://vendor.example/apt nodistro main\n"),
            None
        );
    }
}
