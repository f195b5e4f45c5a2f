//! What the guest scenario reads inside the booted image, how that text is parsed, and its section of
//! REPORT.md. Parsing lives here, apart from QEMU and SSH, so it is tested in-process.

use std::fmt::Write as _;

/// One reading inside the guest: hearthd's memory, the unit's, the guest's, and how many sessions
/// hearthd itself counts.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    /// VmRSS of hearthd's main process (/proc/PID/status).
    pub rss_kib: u64,
    /// RssAnon: the heap and stacks, without the mapped binary.
    pub rss_anon_kib: u64,
    /// RssFile + RssShmem: the binary's pages and mapped files (SQLite's WAL index).
    #[serde(default)]
    pub rss_file_kib: u64,
    /// Pss from /proc/PID/smaps_rollup (shared pages divided among their users), when the kernel has it.
    pub pss_kib: Option<u64>,
    /// `systemctl show hearthd -p MemoryCurrent`: the unit's cgroup (heap, its files' page cache,
    /// kernel socket buffers), when memory accounting is on.
    pub unit_kib: Option<u64>,
    pub mem_available_kib: u64,
    pub mem_total_kib: u64,
    /// Sessions hearthd reports (`hearthctl --json status`), when it answered.
    pub sessions: Option<u64>,
}

/// The scenario's outcome, saved in results.json so `--merge` keeps it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GuestResult {
    /// The image file measured.
    pub image: String,
    /// QEMU's machine options, from board-configs/qemu-virt.toml.
    pub machine: String,
    /// `hearthd --version` and `uname -srm` inside the guest.
    pub hearthd_version: String,
    pub guest_kernel: String,
    pub requested: usize,
    /// Sessions this tool's client had open at the last reading.
    pub up: usize,
    pub concurrency: usize,
    pub idle: Option<Reading>,
    pub one: Option<Reading>,
    pub loaded: Option<Reading>,
    /// Seconds: creating the accounts with hearthctl, opening the sessions, the whole scenario.
    pub accounts_secs: f64,
    pub open_secs: f64,
    pub total_secs: f64,
    pub command: String,
    pub errors: Vec<String>,
}

/// The shell script run inside the guest (as root, over SSH) for one reading: every source in its own
/// `== name` section, so [`parse_reading`] can tell which text came from where.
pub const READING_SCRIPT: &str = "pid=$(systemctl show -p MainPID --value hearthd)
if [ -z \"$pid\" ] || [ \"$pid\" = 0 ]; then echo 'hearthd is not running in the guest' >&2; exit 1; fi
echo '== status'; cat /proc/$pid/status
echo '== smaps_rollup'; cat /proc/$pid/smaps_rollup 2>/dev/null
echo '== meminfo'; cat /proc/meminfo
echo '== unit'; systemctl show hearthd -p MemoryCurrent
echo '== control'; hearthctl --json status 2>&1
exit 0";

/// The text of section `name` in the reading script's output.
fn section<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("== {name}\n");
    let start = if text.starts_with(&marker) {
        marker.len()
    } else {
        text.find(&format!("\n{marker}"))? + marker.len() + 1
    };
    let rest = &text[start..];
    let end = rest.find("\n== ").map(|i| i + 1).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `Key:   1234 kB` in /proc status, smaps_rollup or meminfo text, in KiB.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let mut words = v.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") | None => Some(n),
            Some(_) => None,
        }
    })
}

/// `MemoryCurrent=123456` (bytes) from `systemctl show`, in KiB; None for `[not set]` or `infinity`
/// (no memory accounting for the unit).
pub fn unit_memory_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("MemoryCurrent="))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|bytes| bytes / 1024)
}

/// `"sessions": N` from `hearthctl --json status`.
fn control_sessions(text: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    v.get("sessions")?.as_u64()
}

/// Parses the reading script's output. Fails, quoting what is missing, when hearthd's RSS or the
/// guest's memory cannot be found: a reading without them is no reading.
pub fn parse_reading(text: &str) -> Result<Reading, String> {
    let status = section(text, "status").ok_or("no /proc/PID/status in the guest's answer")?;
    let meminfo = section(text, "meminfo").ok_or("no /proc/meminfo in the guest's answer")?;
    let missing = |what: &str| {
        format!(
            "{what} not found in the guest's answer: {}",
            text.chars().take(300).collect::<String>()
        )
    };
    Ok(Reading {
        rss_kib: kib_field(status, "VmRSS").ok_or_else(|| missing("VmRSS"))?,
        rss_anon_kib: kib_field(status, "RssAnon").unwrap_or(0),
        rss_file_kib: kib_field(status, "RssFile").unwrap_or(0)
            + kib_field(status, "RssShmem").unwrap_or(0),
        pss_kib: section(text, "smaps_rollup").and_then(|s| kib_field(s, "Pss")),
        unit_kib: section(text, "unit").and_then(unit_memory_kib),
        mem_available_kib: kib_field(meminfo, "MemAvailable")
            .ok_or_else(|| missing("MemAvailable"))?,
        mem_total_kib: kib_field(meminfo, "MemTotal").ok_or_else(|| missing("MemTotal"))?,
        sessions: section(text, "control").and_then(control_sessions),
    })
}

/// The options QEMU gets for a machine, from its board file's `args` (e.g. "-M virt -cpu cortex-a72
/// -smp 2 -m 1024"): only the machine, CPU, core count and RAM, not the disk and console plumbing.
pub fn machine_options(board_toml: &str) -> String {
    let Some(start) = board_toml.find("args = [") else {
        return String::new();
    };
    let body = &board_toml[start..];
    let body = &body[..body.find(']').unwrap_or(body.len())];
    let words: Vec<&str> = body
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .collect();
    let mut out = vec![];
    for pair in words.windows(2) {
        if ["-M", "-cpu", "-smp", "-m"].contains(&pair[0]) {
            out.push(format!("{} {}", pair[0], pair[1]));
        }
    }
    out.join(" ")
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn opt_mib(kib: Option<u64>) -> String {
    kib.map(mib).unwrap_or_else(|| "—".into())
}

/// (with N − with one) / (N − 1), in KiB; None when either reading is missing.
fn per_session(one: Option<u64>, loaded: Option<u64>, up: usize) -> Option<f64> {
    Some((loaded? as f64 - one? as f64) / (up.max(2) - 1) as f64)
}

/// The report's section for this scenario; says how to run it when it was not.
pub fn write_section(w: &mut String, g: Option<&GuestResult>) {
    let _ = writeln!(w, "\n## Inside the booted image (QEMU, aarch64)\n");
    let Some(g) = g else {
        let _ = writeln!(
            w,
            "Not run in this report. The image as it ships (aarch64, musl, its systemd units) booted \
             under QEMU, readings taken inside the guest: build the image (`sudo scripts/build-image.sh`) \
             and `hearth-image` beside this tool (`cargo build --release -p hearth-image`), then \
             `sudo target/release/hearth-bench --guest-image out/hearth-<version>-rpi-arm64.img.xz` \
             (add `--servers none` to run only this scenario). See bench/README.md."
        );
        return;
    };
    let _ = writeln!(
        w,
        "hearthd as the image ships it (aarch64, musl, started by its systemd unit with the image's \
         sandboxing), in `qemu-system-aarch64 {}` with TCG emulation (no KVM: everything runs many times \
         slower than on a Pi, but memory figures are the guest kernel's own). Booted by `hearth-image \
         boot-test` with its test preseed; accounts u0…u{} made with `hearthctl` over SSH, then hearthd \
         restarted so the idle reading is a fresh process's. Sessions opened by this tool's client \
         through QEMU's forwarded port, {} at a time, each turning on what the loopback sessions turn \
         on. Read inside the guest over SSH: VmRSS, RssAnon (heap, stacks) and RssFile + RssShmem \
         (the binary's pages, SQLite's WAL index) from /proc/PID/status, Pss from smaps_rollup, the unit's MemoryCurrent (cgroup: also page cache and socket buffers), \
         MemAvailable/MemTotal from /proc/meminfo.\n",
        g.machine,
        g.requested.saturating_sub(1),
        g.concurrency
    );
    let _ = writeln!(
        w,
        "- image: {}; hearthd: {}; guest kernel: {}\n- accounts made in {:.0} s, {} sessions opened in {:.0} s, whole scenario (boot included) {:.0} s\n- command: `{}`\n",
        g.image, g.hearthd_version, g.guest_kernel, g.accounts_secs, g.up, g.open_secs, g.total_secs, g.command
    );
    let _ = writeln!(w, "| state | sessions (hearthd's count) | hearthd RSS | RSS anon | RSS files | PSS | unit memory | guest MemAvailable / MemTotal |\n|---|---|---|---|---|---|---|---|");
    let rows = [
        ("idle".to_string(), &g.idle),
        ("one session".to_string(), &g.one),
        (format!("{} / {} sessions", g.up, g.requested), &g.loaded),
    ];
    for (state, r) in rows {
        match r {
            Some(r) => {
                let _ = writeln!(
                    w,
                    "| {state} | {} | {} | {} | {} | {} | {} | {} / {} |",
                    r.sessions
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "?".into()),
                    mib(r.rss_kib),
                    mib(r.rss_anon_kib),
                    mib(r.rss_file_kib),
                    opt_mib(r.pss_kib),
                    opt_mib(r.unit_kib),
                    mib(r.mem_available_kib),
                    mib(r.mem_total_kib)
                );
            }
            None => {
                let _ = writeln!(w, "| {state} | not read | | | | | | |");
            }
        }
    }
    let (one, loaded) = (g.one.as_ref(), g.loaded.as_ref());
    let per = |f: fn(&Reading) -> Option<u64>| {
        per_session(one.and_then(f), loaded.and_then(f), g.up)
            .map(|k| format!("{k:.1} KiB"))
            .unwrap_or_else(|| "—".into())
    };
    if one.is_some() && loaded.is_some() {
        let _ = writeln!(
            w,
            "\nPer idle session (with {} − with one, over {}): RSS {}, RSS anon {}, PSS {}, unit memory {}.",
            g.up,
            g.up.max(2) - 1,
            per(|r| Some(r.rss_kib)),
            per(|r| Some(r.rss_anon_kib)),
            per(|r| r.pss_kib),
            per(|r| r.unit_kib)
        );
    }
    if !g.errors.is_empty() {
        let _ = writeln!(w, "\nErrors:\n");
        for e in &g.errors {
            let _ = writeln!(w, "- {}", e.replace('\n', " "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from a real aarch64 guest: the fields around the ones read, to catch prefix confusion
    // (VmRSS vs VmHWM, Pss vs Pss_Anon, MemFree vs MemAvailable).
    const ANSWER: &str = "== status
Name:\thearthd
VmPeak:\t   12000 kB
VmHWM:\t    7000 kB
VmRSS:\t    6512 kB
RssAnon:\t    2304 kB
RssFile:\t    4176 kB
RssShmem:\t      32 kB
Threads:\t3
== smaps_rollup
00400000-ffffe000 ---p 00000000 00:00 0                          [rollup]
Rss:                6512 kB
Pss:                6100 kB
Pss_Anon:           2304 kB
== meminfo
MemTotal:        1000448 kB
MemFree:          700000 kB
MemAvailable:     850112 kB
== unit
MemoryCurrent=9437184
== control
{\"running\": true, \"sessions\": 300, \"online_users\": 300}
";

    #[test]
    fn a_full_answer_is_read_field_by_field() {
        let r = parse_reading(ANSWER).unwrap();
        assert_eq!(
            r,
            Reading {
                rss_kib: 6512,
                rss_anon_kib: 2304,
                rss_file_kib: 4208,
                pss_kib: Some(6100),
                unit_kib: Some(9216),
                mem_available_kib: 850112,
                mem_total_kib: 1000448,
                sessions: Some(300),
            }
        );
    }

    #[test]
    fn missing_optional_sources_leave_gaps_not_errors() {
        let text = ANSWER
            .replace("MemoryCurrent=9437184", "MemoryCurrent=[not set]")
            .replace(
                "{\"running\": true, \"sessions\": 300, \"online_users\": 300}",
                "hearthctl: cannot reach hearthd",
            );
        let text = text.replace("Pss:                6100 kB\n", "");
        let r = parse_reading(&text).unwrap();
        assert_eq!(
            (r.pss_kib, r.unit_kib, r.sessions, r.rss_kib),
            (None, None, None, 6512)
        );
    }

    #[test]
    fn an_answer_without_rss_or_meminfo_is_an_error_that_quotes_it() {
        let e =
            parse_reading("== status\nName:\thearthd\n== meminfo\nMemTotal: 1 kB\n").unwrap_err();
        assert!(e.contains("VmRSS") && e.contains("hearthd"), "{e}");
        let e = parse_reading("hearthd is not running").unwrap_err();
        assert!(e.contains("status"), "{e}");
    }

    #[test]
    fn kib_fields_match_whole_keys_only() {
        let t = "Pss_Anon:  5 kB\nPss:  7 kB\nVmRSSx: 1 kB\n";
        assert_eq!(kib_field(t, "Pss"), Some(7));
        assert_eq!(kib_field(t, "VmRSS"), None);
        assert_eq!(kib_field("Threads:\t3\n", "Threads"), Some(3));
        assert_eq!(kib_field("VmRSS: 5 MB\n", "VmRSS"), None);
    }

    #[test]
    fn machine_options_come_from_the_board_file() {
        let toml = "[qemu]\nargs = [\n    \"-M\", \"virt\", \"-cpu\", \"cortex-a72\", \"-smp\", \"2\", \"-m\", \"1024\",\n    # a comment with \"-m\", \"9\"\n    \"-drive\", \"file={image}\",\n]\nappend = \"x\"\n";
        assert_eq!(
            machine_options(toml),
            "-M virt -cpu cortex-a72 -smp 2 -m 1024"
        );
        assert_eq!(machine_options("nothing"), "");
    }

    #[test]
    fn the_section_says_how_to_run_it_when_not_run_and_computes_per_session() {
        let mut w = String::new();
        write_section(&mut w, None);
        assert!(w.contains("Not run") && w.contains("--guest-image"), "{w}");
        let reading = |rss, sessions| Reading {
            rss_kib: rss,
            sessions: Some(sessions),
            mem_total_kib: 1000,
            ..Default::default()
        };
        let g = GuestResult {
            requested: 301,
            up: 301,
            one: Some(reading(6000, 1)),
            loaded: Some(reading(6000 + 300 * 30, 301)),
            ..Default::default()
        };
        let mut w = String::new();
        write_section(&mut w, Some(&g));
        assert!(w.contains("RSS 30.0 KiB"), "{w}");
        assert!(w.contains("| idle | not read | | | | | | |"), "{w}");
        assert!(w.contains("PSS —"), "{w}");
    }
}
