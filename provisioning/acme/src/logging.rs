//! Logs go to the journal with structured fields when systemd runs us (`JOURNAL_STREAM` set),
//! else to stderr, where a person running the command sees them.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= Level::Info
    }
    fn log(&self, r: &Record) {
        // Only our own messages: hyper and rustls talk a lot at info and below.
        if self.enabled(r.metadata())
            && (r.target().starts_with("hearth_acme") || r.level() <= Level::Warn)
        {
            eprintln!("hearth-acme: {}", r.args());
        }
    }
    fn flush(&self) {}
}

pub fn init() {
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(j) = systemd_journal_logger::JournalLog::new() {
            if j.install().is_ok() {
                log::set_max_level(LevelFilter::Info);
                return;
            }
        }
    }
    if log::set_logger(&Stderr).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}
