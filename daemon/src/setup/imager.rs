//! Raspberry Pi Imager's OS customisation, read as data: its `firstrun.sh` flavour (a shell script
//! plus `systemd.run=` arguments appended to `cmdline.txt`) and its cloud-init flavour (`user-data`,
//! `network-config`). Hearth never runs the script: it reads the lines Imager writes, maps hostname,
//! Wi-Fi, SSH keys, time zone and keyboard onto a preseed ([`Preseed`]) and reports every line or key
//! it left alone, so the first-boot log says what was ignored and where.

use super::preseed::{Preseed, PreseedWifi};
use super::ssh_keys::{AuthorizedKey, MAX_KEYS};

/// Imager's files are a few KiB; anything much larger is not Imager's and is not read.
pub const MAX_FILE_BYTES: usize = 64 * 1024;

/// What Imager asked for, plus notes on what was ignored (each naming the file).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImagerSettings {
    pub hostname: Option<String>,
    pub wifi: Option<ImagerWifi>,
    pub ssh_keys: Vec<String>,
    pub timezone: Option<String>,
    pub keyboard: Option<String>,
    /// Imager's Linux user: Hearth makes no password login from it (SSH keys log in as root).
    pub user: Option<String>,
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImagerWifi {
    pub ssid: String,
    /// A passphrase, or the 64 hex digits Imager derives from it.
    pub psk: Option<String>,
    pub country: Option<String>,
    pub hidden: bool,
}

const IMAGER_CUSTOM: &str = "/usr/lib/raspberrypi-sys-mods/imager_custom";
const USERCONF: &str = "/usr/lib/userconf-pi/userconf";

/// Splits a shell line into words: bare words, '...' and "..." (without expansions; `\` escapes
/// in double quotes and bare words), enough for the quoting Imager writes. `None` if a quote is open.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// Lines Imager writes around its settings, which carry no setting themselves.
fn is_scaffolding(t: &str) -> bool {
    const EXACT: &[&str] = &["set +e", "exit 0", "else", "fi"];
    const PREFIXES: &[&str] = &[
        "CURRENT_HOSTNAME=",
        "FIRSTUSER=",
        "FIRSTUSERHOME=",
        "rm -f /boot/firstrun.sh",
        "rm -f /boot/firmware/firstrun.sh",
        "sed -i 's| systemd.run.*||g' /boot/",
        // Imager unblocks the radio when only a country is given; Hearth's Wi-Fi setup does that.
        "rfkill unblock wifi",
        "for filename in /var/lib/systemd/rfkill/",
        "echo 0 > $filename",
        "done",
    ];
    t.is_empty()
        || t.starts_with('#')
        || EXACT.contains(&t)
        || PREFIXES.iter().any(|p| t.starts_with(p))
        || (t.starts_with("if [ -f /usr/lib/") && t.ends_with("]; then"))
}

/// The start of a line for a log, never the whole line (it may hold a secret).
fn preview(t: &str) -> String {
    let short: String = t.chars().take(32).collect();
    if short.len() < t.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// Reads Imager's `firstrun.sh`. Only `imager_custom` and `userconf` calls carry settings; the
/// `else` branches Imager adds for older systems repeat them and are skipped; anything else is noted.
pub fn parse_firstrun(text: &str, origin: &str) -> ImagerSettings {
    let mut s = ImagerSettings::default();
    // Depth of `if` blocks, and the depth whose `else` branch is being skipped (it may nest `if`s).
    let mut depth = 0usize;
    let mut skipping: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.starts_with("if ") && t.ends_with("then") {
            depth += 1;
            if skipping.is_some() || is_scaffolding(t) {
                continue;
            }
        } else if t == "else" {
            skipping.get_or_insert(depth);
            continue;
        } else if t == "fi" {
            if skipping == Some(depth) {
                skipping = None;
            }
            depth = depth.saturating_sub(1);
            continue;
        }
        if skipping.is_some() || is_scaffolding(t) {
            continue;
        }
        let Some(words) = shell_words(t) else {
            s.ignored
                .push(format!("{origin}:{n}: unclosed quote in {:?}", preview(t)));
            continue;
        };
        let rest: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
        let applied = match words.first().map(String::as_str) {
            Some(IMAGER_CUSTOM) => s.imager_custom(&rest),
            Some(USERCONF) if !rest.is_empty() => {
                s.user = Some(rest[0].to_string());
                true
            }
            _ => false,
        };
        if !applied {
            s.ignored.push(format!(
                "{origin}:{n}: ignored unexpected line {:?}",
                preview(t)
            ));
        }
    }
    s
}

impl ImagerSettings {
    /// One `imager_custom` call; false if it is not one Hearth understands.
    fn imager_custom(&mut self, args: &[&str]) -> bool {
        match args {
            ["set_hostname", name] => self.hostname = Some(name.to_string()),
            ["enable_ssh", rest @ ..] => {
                // `-k KEY...` gives keys; `-p` (password login) Hearth does not offer.
                let mut keys = rest.iter().skip_while(|a| **a != "-k").skip(1);
                for k in keys.by_ref() {
                    for line in k.lines().map(str::trim).filter(|l| !l.is_empty()) {
                        self.ssh_keys.push(line.to_string());
                    }
                }
            }
            ["set_wlan", rest @ ..] => {
                let hidden = rest.contains(&"-h");
                let plain: Vec<&str> = rest
                    .iter()
                    .copied()
                    .filter(|a| !a.starts_with('-'))
                    .collect();
                let (ssid, psk, country) = match plain.as_slice() {
                    [ssid] => (ssid, None, None),
                    [ssid, psk] => (ssid, Some(psk), None),
                    [ssid, psk, country] => (ssid, Some(psk), Some(country)),
                    _ => return false,
                };
                self.wifi = Some(ImagerWifi {
                    ssid: ssid.to_string(),
                    psk: psk.filter(|p| !p.is_empty()).map(|p| p.to_string()),
                    country: country
                        .map(|c| c.trim().to_ascii_uppercase())
                        .filter(|c| !c.is_empty()),
                    hidden,
                });
            }
            ["set_keymap", k] => self.keyboard = Some(k.to_string()),
            ["set_timezone", tz] => self.timezone = Some(tz.to_string()),
            _ => return false,
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.hostname.is_none()
            && self.wifi.is_none()
            && self.ssh_keys.is_empty()
            && self.timezone.is_none()
            && self.keyboard.is_none()
    }

    /// The settings as `hearth-setup.toml` text, each one checked as that file checks it; one that
    /// fails is left out and noted (the rest still apply: the box must come up for the wizard).
    pub fn to_preseed_toml(&mut self, origin: &str) -> String {
        use toml::{Table, Value};
        let ignored = &mut self.ignored;
        let mut check = |candidate: Preseed| match candidate.validate() {
            Ok(()) => true,
            Err(e) => {
                ignored.push(format!("{origin}: ignored a setting: {e}"));
                false
            }
        };
        let mut out = Table::new();
        if let Some(h) = self.hostname.as_ref().map(|h| h.to_ascii_lowercase()) {
            if check(Preseed {
                hostname: Some(h.clone()),
                ..Default::default()
            }) {
                out.insert("hostname".into(), Value::String(h));
            }
        }
        if let Some(w) = &self.wifi {
            let wifi = PreseedWifi {
                ssid: w.ssid.clone(),
                psk: w.psk.clone(),
                country: w.country.clone(),
                hidden: w.hidden,
            };
            if check(Preseed {
                wifi: Some(wifi),
                ..Default::default()
            }) {
                let mut t = Table::new();
                t.insert("ssid".into(), Value::String(w.ssid.clone()));
                if let Some(psk) = &w.psk {
                    t.insert("psk".into(), Value::String(psk.clone()));
                }
                if let Some(c) = &w.country {
                    t.insert("country".into(), Value::String(c.clone()));
                }
                if w.hidden {
                    t.insert("hidden".into(), Value::Boolean(true));
                }
                out.insert("wifi".into(), Value::Table(t));
            }
        }
        if let Some(tz) = &self.timezone {
            if check(Preseed {
                timezone: Some(tz.clone()),
                ..Default::default()
            }) {
                out.insert("timezone".into(), Value::String(tz.clone()));
            }
        }
        if let Some(k) = &self.keyboard {
            if check(Preseed {
                keyboard: Some(k.clone()),
                ..Default::default()
            }) {
                out.insert("keyboard".into(), Value::String(k.clone()));
            }
        }
        let mut keys = Vec::new();
        for (i, k) in self.ssh_keys.iter().enumerate() {
            if keys.len() == MAX_KEYS {
                self.ignored.push(format!(
                    "{origin}: ignored SSH keys after the first {MAX_KEYS}"
                ));
                break;
            }
            match AuthorizedKey::parse(k) {
                Ok(_) => keys.push(Value::String(k.clone())),
                Err(e) => self
                    .ignored
                    .push(format!("{origin}: ignored SSH key {}: {e}", i + 1)),
            }
        }
        if !keys.is_empty() {
            let mut t = Table::new();
            t.insert("authorized_keys".into(), Value::Array(keys));
            out.insert("ssh".into(), Value::Table(t));
        }
        let body = toml::to_string(&out).unwrap_or_default();
        format!("# Written by hearth-web imager from {origin}.\n{body}")
    }
}

/// What Imager appends to `cmdline.txt` for `firstrun.sh`: the word names (before `=`) it uses.
const IMAGER_CMDLINE_ARGS: &[&str] = &[
    "systemd.run",
    "systemd.run_success_action",
    "systemd.run_failure_action",
];

/// `cmdline.txt` without Imager's additions (`systemd.run=…`, its actions and
/// `systemd.unit=kernel-command-line.target`), or `None` when there are none. One line, as the
/// firmware reads only the first.
pub fn strip_cmdline(text: &str) -> Option<String> {
    let first = text.lines().next().unwrap_or("");
    let kept: Vec<&str> = first
        .split_whitespace()
        .filter(|w| {
            let name = w.split('=').next().unwrap_or("");
            !(IMAGER_CMDLINE_ARGS.contains(&name)
                || *w == "systemd.unit=kernel-command-line.target")
        })
        .collect();
    let removed = kept.len() != first.split_whitespace().count();
    removed.then(|| format!("{}\n", kept.join(" ")))
}

pub use super::imager_cloud::parse_cloud_init;
