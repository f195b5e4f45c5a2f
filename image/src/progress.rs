//! Named build steps with a spinner, elapsed time, and a log file per step under `<out>/logs/`.

use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Context, Result};

pub struct Steps {
    log_dir: PathBuf,
    number: usize,
    started: Instant,
    /// (step name, seconds) for the summary at the end.
    pub timings: Vec<(String, f64)>,
}

/// Handed to a step: where its sub-tools log, and a way to say what it is doing right now.
pub struct Step {
    pub log: PathBuf,
    bar: ProgressBar,
    name: String,
}

impl Step {
    pub fn status(&self, what: &str) {
        self.bar.set_message(format!("{} — {what}", self.name));
    }

    pub fn note(&self, line: &str) {
        self.bar.println(format!("      {line}"));
        if self.bar.is_hidden() {
            eprintln!("      {line}");
        }
    }
}

impl Steps {
    pub fn new(log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir).ctx(|| format!("creating {}", log_dir.display()))?;
        Ok(Steps {
            log_dir: log_dir.to_path_buf(),
            number: 0,
            started: Instant::now(),
            timings: vec![],
        })
    }

    pub fn run<T>(&mut self, name: &str, f: impl FnOnce(&Step) -> Result<T>) -> Result<T> {
        self.number += 1;
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let log = self.log_dir.join(format!("{:02}-{slug}.log", self.number));
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner:.green} [{elapsed_precise}] {msg}")
                .expect("static template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar.set_message(name.to_string());
        if bar.is_hidden() {
            eprintln!("==> {name} (log: {})", log.display());
        }
        let t = Instant::now();
        let step = Step {
            log,
            bar: bar.clone(),
            name: name.to_string(),
        };
        let result = f(&step);
        let secs = t.elapsed().as_secs_f64();
        let total = self.started.elapsed().as_secs_f64();
        let line = match &result {
            Ok(_) => format!("✔ {name} ({}; total {})", fmt_secs(secs), fmt_secs(total)),
            Err(_) => format!(
                "✘ {name} failed after {} (log: {})",
                fmt_secs(secs),
                step.log.display()
            ),
        };
        bar.finish_and_clear();
        eprintln!("{line}");
        self.timings.push((name.to_string(), secs));
        result
    }

    pub fn total_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

pub fn fmt_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}
