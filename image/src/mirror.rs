//! Which Debian mirror the build fetches from. The repository names none: `--mirror URL` (or a board's
//! optional `mirror` key a user adds) wins, else the build host's own apt configuration (so a machine
//! behind an apt proxy or with a local mirror builds without editing files), else mmdebstrap's default.
//! The mirror only decides where bytes come from: every file is checked against the lock, so neither the
//! lock's `request` hash nor the image depends on it.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

/// Debian's release names and aliases: a source serving one of them (without a suffix) is the archive.
const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// One `deb` source: its URI and suites.
#[derive(Debug, PartialEq)]
pub struct Source {
    pub uri: String,
    pub suites: Vec<String>,
}

/// The host's Debian archive and security URIs, as its apt sources name them.
#[derive(Debug, Default, PartialEq)]
pub struct HostMirrors {
    pub archive: Option<String>,
    pub security: Option<String>,
}

/// Parses one-line-style `sources.list` text (`deb [opts] URI suite comps...`).
pub fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = vec![];
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = match line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        {
            Some(r) => r.trim_start(),
            None => continue,
        };
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(i) => rest = rest[i + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Source {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
            });
        }
    }
    out
}

/// Parses deb822 `.sources` text (stanzas of `Types:`, `URIs:`, `Suites:`, `Enabled:`).
pub fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = vec![];
    let mut stanza: Vec<(String, String)> = vec![];
    let flush = |stanza: &mut Vec<(String, String)>, out: &mut Vec<Source>| {
        let get = |k: &str| {
            stanza
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let is_deb = get("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = get("Enabled").is_none_or(|e| !e.trim().eq_ignore_ascii_case("no"));
        if let (true, true, Some(uris), Some(suites)) =
            (is_deb, enabled, get("URIs"), get("Suites"))
        {
            let suites: Vec<String> = suites.split_whitespace().map(str::to_string).collect();
            // An empty "Suites:" serves nothing (apt rejects the stanza too); found by fuzzing.
            if !suites.is_empty() {
                for uri in uris.split_whitespace() {
                    out.push(Source {
                        uri: uri.to_string(),
                        suites: suites.clone(),
                    });
                }
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut stanza, &mut out);
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = stanza.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            stanza.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut stanza, &mut out);
    out
}

/// Picks the archive (a source serving a Debian suite by its plain name) and the security archive (one
/// serving `<suite>-security`) from a list of sources, first found first.
pub fn pick(sources: &[Source]) -> HostMirrors {
    let mut m = HostMirrors::default();
    for s in sources {
        let uri = s.uri.trim_end_matches('/');
        // "http://" or "file:/" name no place (found by fuzzing: trimmed, they were "http:").
        if uri.is_empty() || uri.ends_with(':') {
            continue;
        }
        for suite in &s.suites {
            if m.archive.is_none() && DEBIAN_SUITES.contains(&suite.as_str()) {
                m.archive = Some(uri.to_string());
            }
            let security = suite
                .strip_suffix("-security")
                .or_else(|| suite.strip_suffix("/updates"));
            if m.security.is_none() && security.is_some_and(|b| DEBIAN_SUITES.contains(&b)) {
                m.security = Some(uri.to_string());
            }
        }
    }
    m
}

/// Reads `<etc_apt>/sources.list` and `<etc_apt>/sources.list.d/*.list` and `*.sources`.
pub fn host_mirrors(etc_apt: &Path) -> HostMirrors {
    let mut sources = vec![];
    if let Ok(t) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        sources.extend(parse_one_line(&t));
    }
    let mut files: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => sources.extend(parse_one_line(&t)),
            Some("sources") => sources.extend(parse_deb822(&t)),
            _ => {}
        }
    }
    pick(&sources)
}

/// mmdebstrap's own default mirror for `suite`, read from the sources.list it writes (a setup hook
/// prints it and stops mmdebstrap before anything is downloaded).
fn mmdebstrap_default(suite: &str) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("hearth-mirror-probe-{}", std::process::id()));
    let list = dir.with_extension("list");
    let _ = Command::new("mmdebstrap")
        .args(["--mode=root", "--variant=custom", "--quiet"])
        .arg(format!(
            "--setup-hook=cp \"$1/etc/apt/sources.list\" {}; exit 1",
            list.display()
        ))
        .arg(suite)
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    let text = std::fs::read_to_string(&list).unwrap_or_default();
    let _ = std::fs::remove_file(&list);
    pick(&parse_one_line(&text)).archive.ok_or_else(|| {
        Error::new("no mirror configured and none found in the host's apt sources")
            .hint("pass --mirror URL (a Debian archive, e.g. a local mirror)")
    })
}

/// The build's mirror: the user's, else the host's apt archive, else mmdebstrap's default.
pub fn build_mirror(user: Option<&str>, suite: &str) -> Result<String> {
    if let Some(m) = user {
        return Ok(m.trim_end_matches('/').to_string());
    }
    if let Some(m) = host_mirrors(Path::new("/etc/apt")).archive {
        return Ok(m);
    }
    mmdebstrap_default(suite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_format() {
        let text = "# comment\n\
            deb http://mirror.example/debian/ bookworm main contrib\n\
            deb-src http://src.example/debian bookworm main\n\
            deb [signed-by=/k.gpg arch=amd64] http://sec.example/debian-security bookworm-security main\n\
            deb https://other.example/apt cloud-sdk main\n";
        let s = parse_one_line(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].uri, "http://sec.example/debian-security");
        assert_eq!(
            pick(&s),
            HostMirrors {
                archive: Some("http://mirror.example/debian".into()),
                security: Some("http://sec.example/debian-security".into()),
            }
        );
    }

    #[test]
    fn deb822_format() {
        let text = "Types: deb deb-src\n\
            # http://snapshot.example/archive/debian/20250520T000000Z\n\
            URIs: http://mirror.example/debian\n\
            Suites: bookworm bookworm-updates\n\
            Components: main\n\
            Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
            \n\
            Types: deb\n\
            URIs: http://off.example/debian\n\
            Suites: trixie\n\
            Enabled: no\n\
            \n\
            Types: deb\n\
            URIs: http://sec.example/debian-security\n\
            Suites: bookworm-security\n\
            Components: main\n";
        let s = parse_deb822(text);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].suites, vec!["bookworm", "bookworm-updates"]);
        let m = pick(&s);
        assert_eq!(m.archive.as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(
            m.security.as_deref(),
            Some("http://sec.example/debian-security")
        );
    }

    #[test]
    fn a_stanza_without_suites_is_no_source() {
        // The fuzzer's find: "Suites:" empty, the suite on a misspelt field.
        let text = "Types: deb\nURIs: http://mirror.example/debian\nSuites:\nCompone sidxes: trixie-security\n";
        assert_eq!(parse_deb822(text), vec![]);
    }

    #[test]
    fn a_uri_naming_no_place_is_not_picked() {
        let s = parse_one_line(
            "deb [arch=arm64] http:// trixie main\ndeb http://m.example/debian/ trixie main\n",
        );
        assert_eq!(pick(&s).archive.as_deref(), Some("http://m.example/debian"));
    }

    #[test]
    fn the_users_mirror_wins() {
        assert_eq!(
            build_mirror(Some("http://local.example/debian/"), "trixie").unwrap(),
            "http://local.example/debian"
        );
    }

    #[test]
    fn other_vendors_are_not_the_archive() {
        let s = parse_deb822("Types: deb\nURIs: https://n.example/node\nSuites: nodistro\n");
        assert_eq!(pick(&s), HostMirrors::default());
    }

    #[test]
    fn reads_a_directory_of_both_formats() {
        let dir = std::env::temp_dir().join(format!("hearth-mirror-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sources.list.d")).unwrap();
        std::fs::write(dir.join("sources.list"), "").unwrap();
        std::fs::write(
            dir.join("sources.list.d/a.list"),
            "deb http://sec.example/debian-security trixie-security main\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sources.list.d/b.sources"),
            "Types: deb\nURIs: http://m.example/debian/\nSuites: trixie\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sources.list.d/c.list.disabled"),
            "deb http://x/ sid main\n",
        )
        .unwrap();
        let m = host_mirrors(&dir);
        assert_eq!(m.archive.as_deref(), Some("http://m.example/debian"));
        assert_eq!(
            m.security.as_deref(),
            Some("http://sec.example/debian-security")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
