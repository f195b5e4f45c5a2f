//! Raspberry Pi Imager's cloud-init flavour: `user-data` (hostname, users with SSH keys, time zone,
//! keyboard) and `network-config` (netplan v2 with one Wi-Fi network). Parsed with serde_norway
//! (the maintained fork of serde_yaml) into generic values, then only the keys Imager writes are
//! read; every other key is noted as ignored, naming the file. cloud-init's `runcmd`, `packages`
//! and the like are never acted on: Hearth is not cloud-init.

use super::imager::{ImagerSettings, ImagerWifi, MAX_FILE_BYTES};
use serde_norway::{Mapping, Value};

/// Keys of `user-data` that Imager writes and Hearth deliberately leaves alone (no note needed).
/// (Hearth already runs avahi and sets the clock; it offers no SSH password login.)
const USER_DATA_QUIET: &[&str] = &[
    "manage_etc_hosts",
    "ssh_pwauth",
    "enable_ssh",
    "packages",
    "apt",
];

fn load(text: &str, origin: &str, ignored: &mut Vec<String>) -> Option<Mapping> {
    if text.len() > MAX_FILE_BYTES {
        ignored.push(format!(
            "{origin}: ignored: larger than {MAX_FILE_BYTES} bytes"
        ));
        return None;
    }
    match serde_norway::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => Some(m),
        Ok(Value::Null) => None,
        Ok(_) => {
            ignored.push(format!("{origin}: ignored: not a YAML mapping"));
            None
        }
        Err(e) => {
            let at = e
                .location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default();
            ignored.push(format!("{origin}{at}: ignored: not valid YAML ({e})"));
            None
        }
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn key_name(k: &Value) -> String {
    text_of(k).unwrap_or_else(|| "(not a name)".into())
}

/// SSH keys from a `ssh_authorized_keys` value (a list, or one string).
fn keys_from(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Sequence(items) => {
            for k in items.iter().filter_map(text_of) {
                out.push(k.trim().to_string());
            }
        }
        Value::String(s) => out.push(s.trim().to_string()),
        _ => {}
    }
}

fn user_data(m: &Mapping, origin: &str, s: &mut ImagerSettings) {
    for (k, v) in m {
        let key = key_name(k);
        match key.as_str() {
            "hostname" => s.hostname = text_of(v),
            "timezone" => s.timezone = text_of(v),
            "keyboard" => s.keyboard = v.get("layout").and_then(text_of),
            "ssh_authorized_keys" => keys_from(v, &mut s.ssh_keys),
            "users" => {
                for u in v.as_sequence().into_iter().flatten() {
                    if let Some(name) = u.get("name").and_then(text_of) {
                        s.user.get_or_insert(name);
                    }
                    if let Some(keys) = u.get("ssh_authorized_keys") {
                        keys_from(keys, &mut s.ssh_keys);
                    }
                }
            }
            k if USER_DATA_QUIET.contains(&k) => {}
            other => s.ignored.push(format!("{origin}: ignored key {other:?}")),
        }
    }
}

fn network_config(m: &Mapping, origin: &str, s: &mut ImagerSettings) {
    // netplan v2, with or without the `network:` wrapper.
    let net = m.get("network").and_then(Value::as_mapping).unwrap_or(m);
    let Some(wifis) = net.get("wifis").and_then(Value::as_mapping) else {
        return;
    };
    for (iface, conf) in wifis {
        let Some(conf) = conf.as_mapping() else {
            continue; // e.g. `renderer: networkd`
        };
        let aps = conf.get("access-points").and_then(Value::as_mapping);
        let Some((ssid, ap)) = aps.and_then(|a| a.iter().next()) else {
            continue;
        };
        if aps.map(Mapping::len).unwrap_or(0) > 1 || s.wifi.is_some() {
            s.ignored.push(format!(
                "{origin}: ignored Wi-Fi networks after the first ({})",
                key_name(iface)
            ));
        }
        if s.wifi.is_some() {
            continue;
        }
        let psk = ap
            .get("password")
            .or_else(|| ap.get("auth").and_then(|a| a.get("password")))
            .and_then(text_of)
            .filter(|p| !p.is_empty());
        let country = conf
            .get("regulatory-domain")
            .or_else(|| net.get("regulatory-domain"))
            .and_then(text_of)
            .map(|c| c.trim().to_ascii_uppercase())
            .filter(|c| !c.is_empty());
        s.wifi = Some(ImagerWifi {
            ssid: key_name(ssid),
            psk,
            country,
            hidden: ap.get("hidden").and_then(Value::as_bool).unwrap_or(false),
        });
    }
}

/// Reads Imager's cloud-init files (either may be absent). Never fails: what cannot be read is
/// noted in [`ImagerSettings::ignored`] with the file's name.
pub fn parse_cloud_init(
    user: Option<(&str, &str)>,
    network: Option<(&str, &str)>,
) -> ImagerSettings {
    let mut s = ImagerSettings::default();
    if let Some((text, origin)) = user {
        if let Some(m) = load(text, origin, &mut s.ignored) {
            user_data(&m, origin, &mut s);
        }
    }
    if let Some((text, origin)) = network {
        if let Some(m) = load(text, origin, &mut s.ignored) {
            network_config(&m, origin, &mut s);
        }
    }
    s
}
