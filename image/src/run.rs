//! Running sub-tools: output goes to the step's log file; a failure quotes the log's last lines.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};

/// Runs `cmd`, appending its stdout and stderr to `log`. Fails with the command, exit status and log tail.
pub fn run(cmd: &mut Command, log: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ctx(|| format!("opening {}", log.display()))?;
    writeln!(file, "\n$ {}", describe(cmd)).ctx(|| format!("writing {}", log.display()))?;
    let out = file.try_clone().ctx(|| "duplicating log handle".into())?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(file)
        .status()
        .map_err(|e| {
            Error::new(format!("cannot start {}: {e}", program(cmd)))
                .hint(install_hint(&program(cmd)))
        })?;
    if status.success() {
        return Ok(());
    }
    Err(Error::new(format!(
        "{} failed ({status})\n{}",
        describe(cmd),
        tail(log, 25)
    ))
    .hint(format!("full log: {}", log.display())))
}

/// Runs `cmd` and returns its stdout; stderr goes to `log`.
pub fn output(cmd: &mut Command, log: &Path) -> Result<String> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ctx(|| format!("opening {}", log.display()))?;
    writeln!(file, "\n$ {}", describe(cmd)).ctx(|| format!("writing {}", log.display()))?;
    let out = cmd
        .stdin(Stdio::null())
        .stderr(file)
        .output()
        .map_err(|e| {
            Error::new(format!("cannot start {}: {e}", program(cmd)))
                .hint(install_hint(&program(cmd)))
        })?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "{} failed ({})\n{}",
            describe(cmd),
            out.status,
            tail(log, 25)
        ))
        .hint(format!("full log: {}", log.display())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn describe(cmd: &Command) -> String {
    let mut s = program(cmd);
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn install_hint(program: &str) -> String {
    format!("is {program} installed? `hearth-image host-setup` installs the build tools (as root)")
}

/// The last `n` lines of a log file, indented, for error messages.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// True if `program` is found on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Unmounts whatever a failed earlier run left mounted below `dir` (mmdebstrap's file-mirror-automount
/// hook, /proc, /sys), deepest first, then removes `dir`.
pub fn remove_tree(dir: &Path, log: &Path) -> Result<()> {
    let prefix = format!("{}/", dir.display());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut below: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in below {
        run(Command::new("umount").arg("--lazy").arg(m), log)?;
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::new(format!("removing {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}
