//! The control-socket requests `hearth-web` makes for uploads (`{"cmd": "upload", "op": …}`):
//! hearthd owns the table, so the web server asks it whether a slot may be used, tells it when a
//! file is complete, and reads the limits and disk use for the admin pages.

use super::store::{self, Limits};
use crate::config::Config;
use crate::control::Response;
use crate::storage::{now_secs, Storage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum UploadRequest {
    /// A PUT starts: the slot must be open and unexpired, of this size and type.
    Begin {
        token: String,
        name: String,
        size: u64,
        content_type: String,
    },
    /// The body is on disk, complete and synced: serve it from now on.
    Finish { token: String },
    /// The PUT failed; the slot may be tried again while it is valid.
    Abort { token: String },
    /// A GET: the file's size, type and expiry, if it is stored and has not expired.
    File { token: String, name: String },
    /// Disk use and limits, for the admin pages.
    Stats,
    /// New limits from the admin pages (they replace the config's until changed again).
    SetLimits { limits: Limits },
}

pub async fn execute(config: &Config, storage: &Storage, req: UploadRequest) -> Response {
    let failed = |e: crate::storage::StorageError| Response::err(e.to_string());
    let now = now_secs();
    match req {
        UploadRequest::Begin {
            token,
            name,
            size,
            content_type,
        } => match storage
            .call(move |c| store::begin(c, &token, &name, size, &content_type, now))
            .await
        {
            Ok(Ok(())) => Response::ok(serde_json::Value::Null),
            Ok(Err(e)) => {
                let (status, text) = e.explain();
                Response {
                    ok: false,
                    error: Some(text),
                    data: serde_json::json!({ "status": status }),
                }
            }
            Err(e) => failed(e),
        },
        UploadRequest::Finish { token } => {
            match storage.call(move |c| store::finish(c, &token)).await {
                Ok(true) => Response::ok(serde_json::Value::Null),
                Ok(false) => Response::err("the slot was not receiving a file"),
                Err(e) => failed(e),
            }
        }
        UploadRequest::Abort { token } => {
            match storage.call(move |c| store::abort(c, &token)).await {
                Ok(()) => Response::ok(serde_json::Value::Null),
                Err(e) => failed(e),
            }
        }
        UploadRequest::File { token, name } => {
            match storage
                .read(move |c| store::lookup(c, &token, &name, now))
                .await
            {
                Ok(Some(info)) => Response::ok(serde_json::to_value(info).unwrap_or_default()),
                Ok(None) => Response::err("no such file"),
                Err(e) => failed(e),
            }
        }
        UploadRequest::Stats => {
            let up = &config.modules.upload;
            let defaults = up.limits();
            let read = storage
                .read(move |c| Ok((store::stats(c, now)?, store::limits(c, defaults)?)))
                .await;
            match read {
                Ok((stats, limits)) => Response::ok(serde_json::json!({
                    "enabled": up.enabled,
                    "files": stats.files,
                    "bytes": stats.bytes,
                    "accounts": stats.accounts,
                    "limits": limits,
                    "dir": up.dir(config),
                })),
                Err(e) => failed(e),
            }
        }
        UploadRequest::SetLimits { limits } => {
            if limits.file_lifetime_secs < 3600 {
                return Response::err("files must be kept for at least an hour");
            }
            if limits.max_file_size == 0 || limits.max_file_size > limits.quota_per_account {
                return Response::err(
                    "the largest file must be more than 0 and no larger than the quota per account",
                );
            }
            match storage.call(move |c| store::set_limits(c, &limits)).await {
                Ok(()) => Response::ok(serde_json::Value::Null),
                Err(e) => failed(e),
            }
        }
    }
}
