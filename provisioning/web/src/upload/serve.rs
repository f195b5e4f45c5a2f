//! Serving uploaded files: `GET`/`HEAD` with one `Range`, `ETag`, and the headers that keep an
//! uploaded page from running script in our origin.

use super::{answer, ask, cors, upload_config, PREFIX, READ_CHUNK};
use crate::app::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hearthd::modules::upload::control::UploadRequest;
use hearthd::modules::upload::signed;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const CSP: &str = "default-src 'none'; sandbox";

pub async fn get_file(
    State(app): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let config = match upload_config(&app) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(path) = signed::parse_path(uri.path(), PREFIX) else {
        return answer(StatusCode::NOT_FOUND, "No such file.");
    };
    let lookup = UploadRequest::File {
        token: path.token.clone(),
        name: path.name.clone(),
    };
    let info = match ask(&config, lookup).await {
        Ok(v) => v,
        Err(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => return r,
        Err(_) => return answer(StatusCode::NOT_FOUND, "No such file, or it has expired."),
    };
    let (Some(size), Some(content_type), Some(expires)) = (
        info["size"].as_u64(),
        info["content_type"].as_str(),
        info["expires"].as_i64(),
    ) else {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "hearthd sent a strange answer.",
        );
    };
    let file_path: PathBuf = config.modules.upload.dir(&config).join(&path.token);
    let mut file = match tokio::fs::File::open(&file_path).await {
        Ok(f) => f,
        Err(_) => return answer(StatusCode::NOT_FOUND, "No such file, or it has expired."),
    };
    file.set_max_buf_size(READ_CHUNK);
    let etag = format!("\"{}\"", path.token);
    let mut resp_headers = HeaderMap::new();
    file_headers(&mut resp_headers, &path.name, content_type, &etag, expires);
    let matches_etag = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    };
    if matches_etag(header::IF_NONE_MATCH) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().extend(resp_headers);
        return r;
    }
    let range_allowed = headers.get(header::IF_RANGE).is_none() || matches_etag(header::IF_RANGE);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if range_allowed => parse_range(r, size),
        _ => Range::Full,
    };
    let (status, start, len) = match range {
        Range::Full => (StatusCode::OK, 0, size),
        Range::Part(a, b) => {
            resp_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {a}-{b}/{size}")).expect("ascii"),
            );
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        Range::Unsatisfiable => {
            let mut r = answer(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "That range is not in the file.",
            );
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return r;
        }
    };
    resp_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The file cannot be read.",
            );
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_CHUNK);
        Body::from_stream(stream)
    };
    let mut r = (status, body).into_response();
    r.headers_mut().extend(resp_headers);
    r
}

/// The headers every served file gets.
fn file_headers(h: &mut HeaderMap, name: &str, content_type: &str, etag: &str, expires: i64) {
    cors(h);
    let ct = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("hex token"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let left = (expires - hearthd_now()).max(0);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("private, max-age={left}, immutable")).expect("ascii"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition(content_type, name)).expect("escaped"),
    );
}

fn hearthd_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `inline` for what browsers show harmlessly, `attachment` for the rest; the name both as
/// plain ASCII and RFC 8187 UTF-8.
pub fn disposition(content_type: &str, name: &str) -> String {
    let shown = ["image/", "audio/", "video/"]
        .iter()
        .any(|p| content_type.starts_with(p))
        || content_type == "text/plain";
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        if shown { "inline" } else { "attachment" },
        signed::escape(name)
    )
}

#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    Full,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (RFC 9110 §14.1.2). Several ranges, or anything unreadable, get the whole
/// file, which the RFC allows.
pub fn parse_range(h: &str, size: u64) -> Range {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    match (a.is_empty(), num(a), num(b)) {
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part(size.saturating_sub(n), size - 1)
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if start >= size {
                return Range::Unsatisfiable;
            }
            let last = end.map_or(size - 1, |e| e.min(size - 1));
            if last < start {
                Range::Full
            } else {
                Range::Part(start, last)
            }
        }
        _ => Range::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Range::Part(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), Range::Part(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Range::Part(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Range::Part(0, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000), Range::Part(990, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Range::Full);
        assert_eq!(parse_range("bytes=5-1", 1000), Range::Full);
        assert_eq!(parse_range("items=0-1", 1000), Range::Full);
        assert_eq!(parse_range("bytes=+1-2", 1000), Range::Full);
        assert_eq!(
            parse_range("bytes=99999999999999999999-", 1000),
            Range::Full
        );
    }

    #[test]
    fn only_harmless_types_are_shown_inline() {
        assert!(disposition("image/jpeg", "a.jpg").starts_with("inline;"));
        assert!(disposition("text/html", "a.html").starts_with("attachment;"));
        let d = disposition("application/pdf", "Über \"x\".pdf");
        assert_eq!(
            d,
            "attachment; filename=\"_ber _x_.pdf\"; filename*=UTF-8''%C3%9Cber%20%22x%22.pdf"
        );
        assert!(HeaderValue::from_str(&d).is_ok());
    }
}
