//! `imager-repo.json`: the image described for Raspberry Pi Imager's "custom repository" option (its
//! `os_list` format), so Imager offers Hearth by name, checks the download and knows which kind of OS
//! customisation Hearth reads. The download address is a placeholder: the publisher sets it.

use serde::Serialize;
use std::path::Path;

use crate::error::{Context, Result};
use crate::manifest::FileEntry;

/// Where the publisher puts the image; replaced before publishing (see image/README.md).
pub const URL_PLACEHOLDER: &str = "https://example.invalid/hearth/";

/// The customisation Hearth prefers Imager to write: cloud-init's files leave cmdline.txt alone.
pub const INIT_FORMAT: &str = "cloudinit";

#[derive(Serialize)]
struct Repo {
    os_list: Vec<OsEntry>,
}

#[derive(Serialize)]
struct OsEntry {
    name: String,
    description: String,
    url: String,
    extract_size: u64,
    extract_sha256: String,
    image_download_size: u64,
    image_download_sha256: String,
    release_date: String,
    init_format: &'static str,
}

/// A day since 1970-01-01 as YYYY-MM-DD (proleptic Gregorian; Howard Hinnant's civil-from-days).
fn date_of(epoch_secs: u64) -> String {
    let z = (epoch_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The JSON text; the release date is the build's SOURCE_DATE_EPOCH, so rebuilds write the same file.
pub fn json(version: &str, board: &str, image: &FileEntry, xz: &FileEntry, epoch: u64) -> String {
    let repo = Repo {
        os_list: vec![OsEntry {
            name: format!("Hearth {version} ({board})"),
            description:
                "A home chat server (XMPP) for Raspberry Pi: set it up in the browser after \
                          first boot."
                    .into(),
            url: format!("{URL_PLACEHOLDER}{}", xz.name),
            extract_size: image.size,
            extract_sha256: image.sha256.clone(),
            image_download_size: xz.size,
            image_download_sha256: xz.sha256.clone(),
            release_date: date_of(epoch),
            init_format: INIT_FORMAT,
        }],
    };
    serde_json::to_string_pretty(&repo).unwrap_or_default() + "\n"
}

pub fn write(
    out: &Path,
    version: &str,
    board: &str,
    image: &FileEntry,
    xz: &FileEntry,
    epoch: u64,
) -> Result<()> {
    let path = out.join("imager-repo.json");
    std::fs::write(&path, json(version, board, image, xz, epoch))
        .ctx(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64, sha: &str) -> FileEntry {
        FileEntry {
            name: name.into(),
            size,
            sha256: sha.into(),
        }
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(951_782_400), "2000-02-29");
        assert_eq!(date_of(1_795_651_199), "2026-11-25");
    }

    #[test]
    fn the_entry_has_what_imager_reads() {
        let text = json(
            "0.1.0",
            "rpi-arm64",
            &entry("hearth-0.1.0-rpi-arm64.img", 2_000_000_000, "aa"),
            &entry("hearth-0.1.0-rpi-arm64.img.xz", 300_000_000, "bb"),
            1_795_651_199,
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let os = &v["os_list"][0];
        assert_eq!(os["extract_size"], 2_000_000_000u64);
        assert_eq!(os["extract_sha256"], "aa");
        assert_eq!(os["image_download_size"], 300_000_000u64);
        assert_eq!(os["image_download_sha256"], "bb");
        assert_eq!(os["release_date"], "2026-11-25");
        assert_eq!(os["init_format"], "cloudinit");
        assert_eq!(
            os["url"],
            "https://example.invalid/hearth/hearth-0.1.0-rpi-arm64.img.xz"
        );
    }
}
