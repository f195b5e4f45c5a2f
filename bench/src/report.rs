//! bench/REPORT.md and its charts: a table per scenario with the ratio of each server to the first
//! hearthd build, the machine, the versions and the command; SVG drawn here (memory versus
//! sessions, latency distribution), no plotting crate.

use crate::cgroup::MemUse;
use crate::client::Enable;
use crate::scenarios::{Latency, Rate, Step};
use crate::servers::Kind;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CgroupResult {
    pub requested: usize,
    pub up: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub survived: bool,
    pub rss_kib: u64,
    pub usage: MemUse,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerResult {
    pub name: String,
    pub version: String,
    pub binary: String,
    pub idle_kib: u64,
    pub enabled: Enable,
    pub steps: Vec<Step>,
    pub logins: Option<Rate>,
    pub saturation: Option<Rate>,
    pub latency: Option<Latency>,
    pub rss_after_kib: u64,
    pub cgroup: Option<CgroupResult>,
    pub errors: Vec<String>,
    pub load_before: String,
    pub load_after: String,
}

impl ServerResult {
    pub fn new(kind: &Kind, chroot: Option<&crate::chroot::Chroot>) -> ServerResult {
        let (version, binary) = match kind {
            Kind::Hearthd { bin, .. } => {
                let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
                (
                    git_version(),
                    format!("{} ({:.1} MiB)", bin.display(), size as f64 / 1048576.0),
                )
            }
            Kind::Prosody => (
                chroot.map(|c| c.version("prosody")).unwrap_or_default(),
                "Debian trixie package".into(),
            ),
            Kind::Ejabberd => (
                chroot
                    .map(|c| {
                        format!(
                            "{} (Erlang {})",
                            c.version("ejabberd"),
                            c.version("erlang-base")
                        )
                    })
                    .unwrap_or_default(),
                "Debian trixie package".into(),
            ),
        };
        ServerResult {
            name: kind.name(),
            version,
            binary,
            ..Default::default()
        }
    }
}

fn git_version() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| format!("git {}", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| "?".into())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub struct Machine {
    cpu: String,
    cores: usize,
    mem_mib: u64,
    kernel: String,
    pinned: bool,
}

impl Machine {
    pub fn read(pinned: bool) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "?".into());
        let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Machine {
            cpu,
            // Counted from cpuinfo: this process is pinned to one CPU, so its own view says 1.
            cores: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count()
                .max(1),
            mem_mib: mem_kib / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            pinned,
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `value / base` as "1.00×", or "—" when either is missing.
fn ratio(value: f64, base: f64) -> String {
    if value.is_finite() && base.is_finite() && base > 0.0 && value > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        "—".into()
    }
}

fn describe(e: &Enable) -> String {
    let on: Vec<&str> = [
        (e.sm, "SM"),
        (e.carbons, "carbons"),
        (e.csi, "CSI inactive"),
    ]
    .iter()
    .filter(|(f, _)| *f)
    .map(|(_, n)| *n)
    .collect();
    if on.is_empty() {
        "nothing".into()
    } else {
        on.join(", ")
    }
}

pub fn write(
    out: &Path,
    m: &Machine,
    saved: &crate::Saved,
    commands: &[String],
) -> Result<(), String> {
    let (plan, rs) = (&saved.plan, &saved.results[..]);
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# hearthd, Prosody and ejabberd under the same load\n");
    let _ = writeln!(
        w,
        "Written by `hearth-bench` (bench/src). Ratios are each server's figure divided by the first \
         hearthd row's. Every server ran alone on loopback, {}, with the same certificate, accounts \
         (u0, u1, …) and client: STARTTLS, SCRAM-SHA-1, bind; idle sessions then turn on {}. Load \
         average (1/5/15 min) beside each server says how busy the shared machine was; figures taken \
         under load are noisy and should be repeated on a quiet machine.\n",
        if m.pinned {
            "pinned to CPU 0 with `taskset` while the load generator ran on CPU 1"
        } else {
            "not pinned"
        },
        describe(&plan.enable)
    );
    let _ = writeln!(w, "## Machine and versions\n");
    let _ = writeln!(
        w,
        "- {} × {}, {} MiB RAM, Linux {}\n- made by: {}",
        m.cores,
        m.cpu,
        m.mem_mib,
        m.kernel,
        commands
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", then ")
    );
    let _ = writeln!(
        w,
        "\n| server | version | binary | load before → after |\n|---|---|---|---|"
    );
    for r in rs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} → {} |",
            r.name, r.version, r.binary, r.load_before, r.load_after
        );
    }
    let base = rs.first();

    let _ = writeln!(
        w,
        "\n## Idle RSS (no sessions)\n\n| server | RSS | ratio |\n|---|---|---|"
    );
    for r in rs {
        let b = base.map(|b| b.idle_kib as f64).unwrap_or(0.0);
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            r.name,
            mib(r.idle_kib),
            ratio(r.idle_kib as f64, b)
        );
    }

    let _ = writeln!(
        w,
        "\n## RSS per idle authenticated TLS session\n\n(RSS with N sessions minus RSS with one, over N − 1.) \
         Chart: [memory-vs-sessions.svg](memory-vs-sessions.svg)\n"
    );
    let _ = writeln!(w, "| server | sessions up / asked | RSS | per session | ratio | what sessions turned on | time to open |\n|---|---|---|---|---|---|---|");
    for r in rs {
        for (i, st) in r.steps.iter().enumerate() {
            let b = base
                .and_then(|b| b.steps.get(i))
                .map(|s| s.per_session_bytes)
                .unwrap_or(0.0);
            let _ = writeln!(
                w,
                "| {} | {} / {} | {} | {:.1} KiB | {} | {} | {:.1} s |",
                r.name,
                st.up,
                st.requested,
                mib(st.rss_kib),
                st.per_session_bytes / 1024.0,
                ratio(st.per_session_bytes, b),
                describe(&r.enabled),
                st.secs
            );
        }
    }

    let _ = writeln!(w, "\n## Logins per second\n\n{} logins (STARTTLS, SCRAM-SHA-1, bind, close), {} in flight; the client caches SaltedPassword per account as real clients do.\n", plan.logins, plan.concurrency);
    rate_table(w, rs, |r| r.logins.as_ref(), "logins/s");

    let _ = writeln!(w, "\n## Messages per second at saturation\n\n{} pairs, {} messages in flight per pair, {:.0} s; chat messages (archived by every server). \"Per server core\" divides by the CPU the server used.\n", plan.pairs, plan.window, plan.saturate_secs);
    rate_table(w, rs, |r| r.saturation.as_ref(), "msgs/s");

    let _ = writeln!(
        w,
        "\n## Latency at {} msg/s offered\n\n{} pairs, one message per {:.0} ms each, {:.0} s. Chart: [latency.svg](latency.svg)\n",
        plan.rate,
        plan.pairs,
        plan.pairs as f64 * 1000.0 / plan.rate as f64,
        plan.latency_secs
    );
    let _ = writeln!(w, "| server | delivered / sent | p50 | p99 | max | p99 ratio | server CPU | load generator CPU |\n|---|---|---|---|---|---|---|---|");
    for r in rs {
        match &r.latency {
            Some(l) => {
                let b = base
                    .and_then(|b| b.latency.as_ref())
                    .map(|l| l.pct(0.99))
                    .unwrap_or(f64::NAN);
                let _ = writeln!(
                    w,
                    "| {} | {} / {} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.0} % | {:.0} % |",
                    r.name,
                    l.delivered,
                    l.sent,
                    l.pct(0.5),
                    l.pct(0.99),
                    l.pct(1.0),
                    ratio(l.pct(0.99), b),
                    l.server_cores * 100.0,
                    l.client_cores * 100.0
                );
            }
            None => {
                let _ = writeln!(w, "| {} | failed | | | | | | |", r.name);
            }
        }
    }

    let _ = writeln!(
        w,
        "\n## {} idle sessions inside a {} MiB memory cgroup\n",
        plan.cgroup_sessions, plan.cgroup_mib
    );
    let _ = writeln!(w, "| server | survived | sessions up / asked | cgroup peak | cgroup at end | server RSS | OOM kills |\n|---|---|---|---|---|---|---|");
    for r in rs {
        match &r.cgroup {
            Some(c) => {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} / {}{} | {} | {} | {} | {} |",
                    r.name,
                    if c.survived { "yes" } else { "**no**" },
                    c.up,
                    c.requested,
                    match (&c.first_error, c.failed) {
                        (Some(e), n) if n > 0 => format!(
                            " ({n} failed, first: {})",
                            e.replace('|', "/").chars().take(120).collect::<String>()
                        ),
                        _ => String::new(),
                    },
                    mib(c.usage.peak_kib),
                    mib(c.usage.current_kib),
                    mib(c.rss_kib),
                    c.usage.oom_kills
                );
            }
            None => {
                let _ = writeln!(w, "| {} | not run | | | | | |", r.name);
            }
        }
    }
    crate::guest_report::write_section(w, saved.guest.as_ref());
    let errors: Vec<String> = rs
        .iter()
        .flat_map(|r| r.errors.iter().map(move |e| format!("- {}: {e}", r.name)))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(w, "\n## Errors\n\n{}", errors.join("\n"));
    }
    std::fs::write(out.join("REPORT.md"), s).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(
        out.join("memory-vs-sessions.svg"),
        crate::report_svg::memory(rs),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(out.join("latency.svg"), crate::report_svg::latency(rs))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn rate_table(
    w: &mut String,
    rs: &[ServerResult],
    get: impl Fn(&ServerResult) -> Option<&Rate>,
    unit: &str,
) {
    let _ = writeln!(w, "| server | {unit} | ratio | server CPU | per server core | ratio per core | load generator CPU |\n|---|---|---|---|---|---|---|");
    let base = rs.first().and_then(&get).cloned();
    for r in rs {
        match get(r) {
            Some(x) => {
                let per_core = x.per_sec / x.server_cores.max(1e-3);
                let (b, bc) = base
                    .as_ref()
                    .map(|b| (b.per_sec, b.per_sec / b.server_cores.max(1e-3)))
                    .unwrap_or((0.0, 0.0));
                let _ = writeln!(
                    w,
                    "| {} | {:.0} | {} | {:.0} % | {:.0} | {} | {:.0} %{} |",
                    r.name,
                    x.per_sec,
                    ratio(x.per_sec, b),
                    x.server_cores * 100.0,
                    per_core,
                    ratio(per_core, bc),
                    x.client_cores * 100.0,
                    if x.client_cores > 0.85 {
                        " (client-bound)"
                    } else {
                        ""
                    }
                );
            }
            None => {
                let _ = writeln!(w, "| {} | failed | | | | | |", r.name);
            }
        }
    }
}
