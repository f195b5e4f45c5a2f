//! The overview page: is the chat server running, the certificate, the disk; and "renew now".

use super::{flash, now, require, set_flash};
use crate::app::{render, see_other, AppState};
use crate::session::{PostForm, Session};
use crate::templates::{CertView, DiskView, HomePage};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// "Renew now" waits this long for hearth-acme before reporting it still runs.
const RENEW_TIMEOUT: Duration = Duration::from_secs(180);
/// The page shows this much of hearth-acme's output (its last lines say what happened).
const MAX_OUTPUT: usize = 2000;
/// Files counted under uploads/ at most; a count, not a crawl of a huge tree.
const MAX_WALK: usize = 100_000;

pub async fn home(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let (admin, config) = match require(&app, &session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let hearthd = app.backend.hearthd_running(&config).await;
    let users = app
        .backend
        .users(&config)
        .await
        .map(|u| u.len())
        .unwrap_or(0);
    let (cert, cert_error) = match crate::certinfo::read(&config.tls.cert) {
        Ok(i) => (
            Some(CertView {
                names: i.names.join(", "),
                issuer: i.issuer,
                self_signed: i.self_signed,
                not_after: crate::certinfo::date(i.not_after),
                days_left: (i.not_after - now()) / 86_400,
            }),
            None,
        ),
        Err(e) => (None, Some(e)),
    };
    let challenge = config
        .acme
        .as_ref()
        .and_then(|a| a.get("challenge")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "self-signed".into());
    let data_dir = config.data_dir.clone();
    let disk = tokio::task::spawn_blocking(move || disk(&data_dir))
        .await
        .ok()
        .flatten();
    let flash = flash(&app, &session);
    render(&HomePage {
        title: "Overview",
        nav: "home",
        csrf: session.data.csrf,
        flash,
        admin,
        federation: config.s2s.enabled,
        domain: config.domain,
        hearthd,
        users,
        cert,
        cert_error,
        challenge,
        disk,
    })
}

fn disk(data_dir: &Path) -> Option<DiskView> {
    let st = nix::sys::statvfs::statvfs(data_dir).ok()?;
    let frag = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frag;
    let free = st.blocks_available() as u64 * frag;
    let db: u64 = ["hearth.sqlite", "hearth.sqlite-wal"]
        .iter()
        .filter_map(|n| std::fs::metadata(data_dir.join(n)).ok())
        .map(|m| m.len())
        .sum();
    let used_percent = (total.saturating_sub(free) * 100)
        .checked_div(total)
        .unwrap_or(0);
    Some(DiskView {
        free: size(free),
        total: size(total),
        used_percent,
        database: size(db),
        uploads: size(tree_size(&data_dir.join("uploads"))),
    })
}

fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                return total;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `1.5 GB`: what people read off a phone screen.
pub fn size(bytes: u64) -> String {
    const UNITS: &[&str] = &["bytes", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Looks the program up like a shell would, so "Renew now" can say it is missing.
fn find_program(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

/// Starts `hearth-acme renew` in the background (after setup); its outcome goes to the log.
pub fn start_acme(program: &Path, config: &Path, force: bool) {
    let Some(program) = find_program(program) else {
        log::warn!(
            "{} is not installed; the certificate will come from its timer once it is",
            program.display()
        );
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("--config").arg(config).arg("renew");
    if force {
        cmd.arg("--force");
    }
    tokio::spawn(async move {
        match cmd.output().await {
            Ok(out) if out.status.success() => log::info!("hearth-acme renew finished"),
            Ok(out) => log::warn!(
                "hearth-acme renew failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => log::warn!("cannot run hearth-acme: {e}"),
        }
    });
}

pub async fn renew(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    if let Err(r) = require(&app, &form.session) {
        return r;
    }
    let text = match find_program(&app.args.hearth_acme) {
        None => format!(
            "{} is not installed on this box, so the certificate cannot be renewed from here.",
            app.args.hearth_acme.display()
        ),
        Some(program) => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.arg("--config")
                .arg(&app.args.config)
                .arg("renew")
                .arg("--force")
                .kill_on_drop(true);
            match tokio::time::timeout(RENEW_TIMEOUT, cmd.output()).await {
                Err(_) => "Renewal is taking long; it goes on in the background. Reload this page in a few minutes.".into(),
                Ok(Err(e)) => format!("hearth-acme could not be started: {e}"),
                Ok(Ok(out)) => {
                    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                    let text = text.trim();
                    // Cut on a character boundary: slicing inside a UTF-8 sequence would panic.
                    let start = (text.len().saturating_sub(MAX_OUTPUT)..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(0);
                    let tail = &text[start..];
                    if out.status.success() {
                        format!("Certificate renewed. {tail}")
                    } else {
                        format!("Renewal failed: {tail}")
                    }
                }
            }
        }
    };
    set_flash(&app, &form.session, text);
    see_other("/admin")
}
