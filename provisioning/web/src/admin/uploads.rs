//! Uploads (XEP-0363): how much the files take, and the limits people upload under. `hearthd` owns
//! the upload table, so both go through the control socket (`upload` / `stats`, `set-limits`);
//! saved limits win over `[modules.upload]` in hearth.toml until changed again.

use super::{flash, require, set_flash};
use crate::app::{render, render_status, see_other, AppState};
use crate::forms::Errors;
use crate::session::{PostForm, Session};
use crate::templates::UploadsPage;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use hearthd::config::Config;
use hearthd::control::Request;
use hearthd::modules::upload::control::UploadRequest;
use hearthd::modules::upload::{human, store::Limits};
use std::sync::Arc;

const MIB: u64 = 1024 * 1024;
const DAY: i64 = 86_400;

/// What the form shows: the four limits in the units people think in.
#[derive(Debug, Clone, Default)]
pub struct LimitFields {
    pub max_file_mib: String,
    pub quota_mib: String,
    pub daily_mib: String,
    pub lifetime_days: String,
}

impl LimitFields {
    fn from(l: &Limits) -> LimitFields {
        LimitFields {
            max_file_mib: (l.max_file_size / MIB).to_string(),
            quota_mib: (l.quota_per_account / MIB).to_string(),
            daily_mib: (l.daily_per_account / MIB).to_string(),
            lifetime_days: (l.file_lifetime_secs / DAY).to_string(),
        }
    }
}

/// Reads the form into limits; each bad field gets its own message.
pub fn parse_limits(f: &LimitFields, errors: &mut Errors) -> Option<Limits> {
    let mut num = |name: &'static str, v: &str, max: u64| match v.trim().parse::<u64>() {
        Ok(n) if n >= 1 && n <= max => Some(n),
        _ => {
            errors.insert(name, format!("Enter a whole number from 1 to {max}."));
            None
        }
    };
    let max_file = num("max_file_mib", &f.max_file_mib, 100_000);
    let quota = num("quota_mib", &f.quota_mib, 10_000_000);
    let daily = num("daily_mib", &f.daily_mib, 10_000_000);
    let days = num("lifetime_days", &f.lifetime_days, 3650);
    let l = Limits {
        max_file_size: max_file? * MIB,
        quota_per_account: quota? * MIB,
        daily_per_account: daily? * MIB,
        file_lifetime_secs: days? as i64 * DAY,
    };
    if l.max_file_size > l.quota_per_account {
        errors.insert(
            "max_file_mib",
            "The largest file cannot be larger than the space per account.",
        );
        return None;
    }
    Some(l)
}

async fn ask(config: &Config, req: UploadRequest) -> Result<serde_json::Value, String> {
    match hearthd::control::request(&config.control_socket, &Request::Upload(req)).await {
        Ok(r) if r.ok => Ok(r.data),
        Ok(r) => Err(r.error.unwrap_or_else(|| "the chat server refused".into())),
        Err(_) => Err(
            "The chat server is not running: upload figures and limits are shown while it runs."
                .into(),
        ),
    }
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    show(&app, &session, Errors::new(), None).await
}

async fn show(
    app: &AppState,
    session: &Session,
    errors: Errors,
    typed: Option<LimitFields>,
) -> Response {
    let (_, config) = match require(app, session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let stats = ask(&config, UploadRequest::Stats).await;
    let (summary, fields, problem) = match &stats {
        Ok(v) => {
            let limits: Option<Limits> = serde_json::from_value(v["limits"].clone()).ok();
            let summary = format!(
                "{} files, {} in all, from {} accounts.",
                v["files"].as_u64().unwrap_or(0),
                human(v["bytes"].as_u64().unwrap_or(0)),
                v["accounts"].as_u64().unwrap_or(0)
            );
            (summary, limits.as_ref().map(LimitFields::from), None)
        }
        Err(e) => (String::new(), None, Some(e.clone())),
    };
    let page = UploadsPage {
        title: "Uploads",
        nav: "uploads",
        csrf: session.data.csrf.clone(),
        flash: problem.or_else(|| flash(app, session)),
        enabled: config.modules.upload.enabled,
        summary,
        dir: config.modules.upload.dir(&config).display().to_string(),
        fields: typed.or(fields).unwrap_or_default(),
        errors,
    };
    if page.errors.is_empty() {
        render(&page)
    } else {
        render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    }
}

pub async fn save(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let (admin, config) = match require(&app, &form.session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let typed = LimitFields {
        max_file_mib: form.fields.trimmed("max_file_mib"),
        quota_mib: form.fields.trimmed("quota_mib"),
        daily_mib: form.fields.trimmed("daily_mib"),
        lifetime_days: form.fields.trimmed("lifetime_days"),
    };
    let mut errors = Errors::new();
    let Some(limits) = parse_limits(&typed, &mut errors) else {
        return show(&app, &form.session, errors, Some(typed)).await;
    };
    match ask(&config, UploadRequest::SetLimits { limits }).await {
        Ok(_) => {
            log::info!("upload limits changed by {admin}: {limits:?}");
            set_flash(
                &app,
                &form.session,
                "Saved. New uploads use these limits from now on.".to_string(),
            );
            see_other("/admin/uploads")
        }
        Err(e) => {
            errors.insert("max_file_mib", format!("Not saved: {e}"));
            show(&app, &form.session, errors, Some(typed)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(a: &str, b: &str, c: &str, d: &str) -> LimitFields {
        LimitFields {
            max_file_mib: a.into(),
            quota_mib: b.into(),
            daily_mib: c.into(),
            lifetime_days: d.into(),
        }
    }

    #[test]
    fn the_form_reads_in_mib_and_days_and_says_what_is_wrong() {
        let mut e = Errors::new();
        let l = parse_limits(&fields("100", "1024", "512", "30"), &mut e).unwrap();
        assert_eq!(l.max_file_size, 100 * MIB);
        assert_eq!(l.file_lifetime_secs, 30 * DAY);
        assert_eq!(LimitFields::from(&l).quota_mib, "1024");
        let mut e = Errors::new();
        assert!(parse_limits(&fields("0", "x", "5", "30"), &mut e).is_none());
        assert!(e.has("max_file_mib") && e.has("quota_mib") && !e.has("daily_mib"));
        let mut e = Errors::new();
        assert!(parse_limits(&fields("200", "100", "5", "30"), &mut e).is_none());
        assert!(e
            .get("max_file_mib")
            .unwrap()
            .contains("larger than the space"));
    }
}
