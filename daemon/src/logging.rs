//! Logging: to the journal with structured fields under systemd, to stderr otherwise.

use std::io::Write;

struct Stderr {
    level: log::LevelFilter,
}

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) && r.target().starts_with("hearth") {
            let _ = writeln!(std::io::stderr(), "{:5} {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

/// Sets up logging once. `HEARTH_LOG` (error|warn|info|debug|trace) sets the level.
pub fn init(program: &str) {
    let level = std::env::var("HEARTH_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(j) = systemd_journal_logger::JournalLog::new() {
            if j.with_syslog_identifier(program.to_string())
                .install()
                .is_ok()
            {
                log::set_max_level(level);
                return;
            }
        }
    }
    if log::set_boxed_logger(Box::new(Stderr { level })).is_ok() {
        log::set_max_level(level);
    }
}
