//! The control socket: line-delimited JSON requests from `hearthctl` and `hearth-web`.
//!
//! The same `execute` runs requests against a live server (through the socket) or straight
//! against the database when `hearthd` is stopped, so both paths behave alike.
//!
//! While `hearthd` runs it is the only process that writes `hearth.sqlite`: `hearth-web` signs admins
//! in, checks and uses invites, makes backups and restores them through these requests, so whatever
//! the server keeps in memory never goes stale behind its back.

use crate::config::Config;
use crate::jid::normalize_local;
use crate::server::Server;
use crate::sessions::Kick;
use crate::storage::{restore, Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line accepted; requests are small, a longer line is an error, not a buffer.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    UserAdd {
        user: String,
        password: String,
        #[serde(default)]
        admin: bool,
    },
    UserDel {
        user: String,
    },
    UserPasswd {
        user: String,
        password: String,
    },
    UserList,
    /// Sets whether an account may only talk with this server's own domains.
    UserLocalOnly {
        user: String,
        local_only: bool,
    },
    InviteCreate {
        #[serde(default = "one")]
        uses: u32,
        #[serde(default = "week")]
        expires_secs: i64,
        #[serde(default)]
        note: String,
    },
    InviteList,
    InviteRevoke {
        id: i64,
    },
    ReloadCerts,
    /// Whether `password` is right for `user` and the account is an admin (`{"admin": bool}`).
    AdminCheck {
        user: String,
        password: String,
    },
    /// Whether an invite token can still be used; the error says why not.
    InviteCheck {
        token: String,
    },
    /// Creates the account and uses up one use of the invite, atomically.
    InviteRegister {
        token: String,
        user: String,
        password: String,
    },
    /// A consistent snapshot of the database into `dest`, a new file directly in the data
    /// directory whose name starts with `.backup-` (the only place the socket writes to).
    Backup {
        dest: std::path::PathBuf,
    },
    /// Replaces the database's content with `database` (a file in the data directory's
    /// `.restore-staging/`), keeping the old content as `hearth.sqlite.before-restore-<time>`, and
    /// closes every session: the accounts may be different now (`{"users": n}`).
    Restore {
        database: std::path::PathBuf,
    },
    /// Every group chat room: name, title, members, last activity.
    RoomList,
    /// Destroys a group chat room; its occupants are told `reason`.
    RoomDestroy {
        room: String,
        #[serde(default)]
        reason: String,
    },
    /// XEP-0363 slots and files, for `hearth-web` (`{"cmd": "upload", "op": "begin", …}`).
    Upload(crate::modules::upload::control::UploadRequest),
}

/// Where `hearth-web` unpacks a backup before asking for a [`Request::Restore`].
pub const RESTORE_STAGING: &str = ".restore-staging";

fn one() -> u32 {
    1
}
fn week() -> i64 {
    7 * 86_400
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            error: None,
            data,
        }
    }
    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            data: serde_json::Value::Null,
        }
    }
}

fn storage_err(e: StorageError) -> Response {
    Response::err(e.to_string())
}

/// `xmpp:` URI and web landing address of an invite token.
pub fn invite_links(domain: &str, token: &str) -> (String, String) {
    (
        format!("xmpp:{domain}?register;preauth={token}"),
        format!("https://{domain}/invite/{token}"),
    )
}

/// Runs one request. `live` is the running server when there is one.
pub async fn execute(
    config: &Config,
    storage: &Storage,
    live: Option<&Arc<Server>>,
    req: Request,
) -> Response {
    let iterations = config.auth.scram_iterations;
    let user_of = |u: &str| {
        normalize_local(u.split('@').next().unwrap_or(u))
            .map_err(|e| Response::err(format!("bad user name {u:?}: {e}")))
    };
    // The checks an account name and a new password pass, whichever request sets them.
    let checked_account = |u: &str, password: &str| {
        let user = user_of(u)?;
        if password.chars().count() < crate::modules::register::MIN_PASSWORD {
            return Err(Response::err(format!(
                "the password needs at least {} characters",
                crate::modules::register::MIN_PASSWORD
            )));
        }
        Ok(user)
    };
    match req {
        Request::Status => {
            let users = match storage.list_users().await {
                Ok(u) => u.len(),
                Err(e) => return storage_err(e),
            };
            let mut data = serde_json::json!({ "domain": config.domain, "users": users, "running": live.is_some() });
            if let Some(s) = live {
                let (sessions, online) = s.sessions.counts();
                data["sessions"] = sessions.into();
                data["online_users"] = online.into();
                data["uptime_secs"] = s.started.elapsed().as_secs().into();
            }
            Response::ok(data)
        }
        Request::UserAdd {
            user,
            password,
            admin,
        } => {
            let user = match checked_account(&user, &password) {
                Ok(u) => u,
                Err(r) => return r,
            };
            match storage
                .create_user(&user, &password, iterations, admin)
                .await
            {
                Ok(()) => {
                    Response::ok(serde_json::json!({ "jid": format!("{user}@{}", config.domain) }))
                }
                Err(e) => storage_err(e),
            }
        }
        Request::UserDel { user } => {
            let user = match user_of(&user) {
                Ok(u) => u,
                Err(r) => return r,
            };
            match storage.delete_user(&user).await {
                Ok(()) => {
                    kick_all(live, config, &user);
                    Response::ok(serde_json::Value::Null)
                }
                Err(e) => storage_err(e),
            }
        }
        Request::UserLocalOnly { user, local_only } => {
            let user = match user_of(&user) {
                Ok(u) => u,
                Err(r) => return r,
            };
            match crate::modules::local_only::set(storage, &user, local_only).await {
                Ok(true) => Response::ok(serde_json::json!({ "local_only": local_only })),
                Ok(false) => Response::err(format!("no account {user}")),
                Err(e) => storage_err(e),
            }
        }
        Request::UserPasswd { user, password } => {
            let user = match checked_account(&user, &password) {
                Ok(u) => u,
                Err(r) => return r,
            };
            match storage.set_password(&user, &password, iterations).await {
                Ok(()) => Response::ok(serde_json::Value::Null),
                Err(e) => storage_err(e),
            }
        }
        Request::UserList => match storage.list_users().await {
            Ok(u) => Response::ok(serde_json::to_value(u).unwrap_or_default()),
            Err(e) => storage_err(e),
        },
        Request::InviteCreate {
            uses,
            expires_secs,
            note,
        } => {
            if expires_secs <= 0 {
                return Response::err("an invite must expire in the future");
            }
            match storage.create_invite(uses, expires_secs, &note).await {
                Ok(inv) => {
                    let (uri, url) = invite_links(&config.domain, &inv.token);
                    Response::ok(serde_json::json!({
                        "id": inv.id, "token": inv.token, "uri": uri, "url": url,
                        "expires_at": inv.expires_at, "uses": inv.uses,
                    }))
                }
                Err(e) => storage_err(e),
            }
        }
        Request::InviteList => match storage.list_invites().await {
            Ok(l) => Response::ok(serde_json::to_value(l).unwrap_or_default()),
            Err(e) => storage_err(e),
        },
        Request::InviteRevoke { id } => match storage.revoke_invite(id).await {
            Ok(()) => Response::ok(serde_json::Value::Null),
            Err(e) => storage_err(e),
        },
        Request::AdminCheck { user, password } => {
            let user = match user_of(&user) {
                Ok(u) => u,
                Err(r) => return r,
            };
            match admin_check(storage, &user, password).await {
                Ok(admin) => Response::ok(serde_json::json!({ "admin": admin })),
                Err(e) => storage_err(e),
            }
        }
        Request::InviteCheck { token } => match storage.check_invite(&token).await {
            Ok(()) => Response::ok(serde_json::Value::Null),
            Err(e) => storage_err(e),
        },
        Request::InviteRegister {
            token,
            user,
            password,
        } => {
            let user = match checked_account(&user, &password) {
                Ok(u) => u,
                Err(r) => return r,
            };
            let creds =
                match crate::storage::accounts_derive(password, config.auth.scram_iterations).await
                {
                    Ok(c) => c,
                    Err(e) => return storage_err(e),
                };
            match storage.register_with_invite(&token, &user, creds).await {
                Ok(()) => {
                    Response::ok(serde_json::json!({ "jid": format!("{user}@{}", config.domain) }))
                }
                Err(e) => storage_err(e),
            }
        }
        Request::Backup { dest } => {
            if !restore::is_file_in(&dest, &config.data_dir, ".backup-") {
                return Response::err(format!(
                    "a backup is written only to {}/.backup-*",
                    config.data_dir.display()
                ));
            }
            match storage.backup_to(dest).await {
                Ok(()) => Response::ok(serde_json::Value::Null),
                Err(e) => storage_err(e),
            }
        }
        Request::Restore { database } => {
            let staging = config.data_dir.join(RESTORE_STAGING);
            if !restore::is_file_in(&database, &staging, "") {
                return Response::err(format!(
                    "a restore reads only files in {}",
                    staging.display()
                ));
            }
            let live_path = storage.path().to_path_buf();
            // A backup older than a module (or its newest migration) gets its tables first.
            let migrations = live.map(|s| s.modules.migrations()).unwrap_or_default();
            let done = tokio::task::spawn_blocking(move || {
                let users = restore::check_database(&database)?;
                restore::upgrade_database(&database, &migrations)?;
                restore::install_database(&database, &live_path).map(|()| users)
            })
            .await
            .unwrap_or_else(|e| Err(format!("the restore stopped: {e}")));
            match done {
                Ok(users) => {
                    if let Some(s) = live {
                        // Everyone signs in again against the restored accounts.
                        for session in s.sessions.all() {
                            session.shared.kick(Kick::AccountGone);
                        }
                    }
                    log::info!("database restored from a backup ({users} accounts)");
                    Response::ok(serde_json::json!({ "users": users }))
                }
                Err(e) => Response::err(e),
            }
        }
        Request::RoomList => match crate::modules::muc::list_rooms(storage).await {
            Ok(rooms) => Response::ok(serde_json::to_value(rooms).unwrap_or_default()),
            Err(e) => Response::err(e),
        },
        Request::RoomDestroy { room, reason } => {
            match crate::modules::muc::destroy_room(live, storage, config, &room, &reason).await {
                Ok(()) => {
                    log::info!("group chat room {room} destroyed by an admin");
                    Response::ok(serde_json::Value::Null)
                }
                Err(e) => Response::err(e),
            }
        }
        Request::Upload(u) => crate::modules::upload::control::execute(config, storage, u).await,
        Request::ReloadCerts => match live {
            Some(s) => match s.tls.reload() {
                Ok(()) => {
                    log::info!("certificate reloaded");
                    Response::ok(serde_json::Value::Null)
                }
                Err(e) => Response::err(e),
            },
            None => {
                Response::err("hearthd is not running; it reads the certificate when it starts")
            }
        },
    }
}

/// The password check for the admin pages' sign-in; PBKDF2 runs off the async workers.
async fn admin_check(
    storage: &Storage,
    user: &str,
    password: String,
) -> Result<bool, StorageError> {
    let Some(info) = storage.user_info(user).await? else {
        return Ok(false);
    };
    let Some(cred) = storage
        .credential(user, crate::sasl::ScramHash::Sha256)
        .await?
    else {
        return Ok(false);
    };
    let right = tokio::task::spawn_blocking(move || cred.verify_password(&password))
        .await
        .map_err(|e| StorageError::Unavailable(format!("password check failed: {e}")))?;
    Ok(right && info.is_admin)
}

fn kick_all(live: Option<&Arc<Server>>, config: &Config, user: &str) {
    if let Some(s) = live {
        for session in s.sessions.sessions_of(&format!("{user}@{}", config.domain)) {
            session.shared.kick(Kick::AccountGone);
        }
    }
}

/// Listens on the control socket until shutdown.
pub fn serve(server: Arc<Server>, path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Owner and group (hearth-admin) only: this socket can create accounts.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    }
    tokio::spawn(async move {
        let mut shutdown = server.shutdown_signal();
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = shutdown.changed() => break,
            };
            if let Ok((stream, _)) = conn {
                tokio::spawn(handle_client(server.clone(), stream));
            }
        }
    });
    Ok(())
}

async fn handle_client(server: Arc<Server>, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd.take(MAX_LINE as u64 * 16));
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let resp = if line.len() > MAX_LINE {
            Response::err("request too long")
        } else {
            match serde_json::from_str::<Request>(line.trim()) {
                Ok(req) => execute(&server.config, &server.storage, Some(&server), req).await,
                Err(e) => Response::err(format!("bad request: {e}")),
            }
        };
        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        out.push('\n');
        if wr.write_all(out.as_bytes()).await.is_err() {
            break;
        }
    }
}

use tokio::io::AsyncReadExt;

/// Sends one request to a running `hearthd`. Err when nothing listens on the socket.
pub async fn request(path: &Path, req: &Request) -> std::io::Result<Response> {
    let stream = UnixStream::connect(path).await?;
    let (rd, mut wr) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
    line.push('\n');
    wr.write_all(line.as_bytes()).await?;
    let mut reader = BufReader::new(rd);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::other(format!("bad answer from hearthd: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config whose data directory is `dir`, and the database in it, as hearthd would open them.
    fn setup(dir: &Path) -> (Config, Storage) {
        let text = format!(
            "domain = \"example.test\"\ndata_dir = \"{}\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n[auth]\nscram_iterations = 4096\n",
            dir.display()
        );
        let config = Config::parse(&text, "test").unwrap();
        let storage = Storage::open(&config.database_path()).unwrap();
        (config, storage)
    }

    fn req(json: serde_json::Value) -> Request {
        serde_json::from_value(json).unwrap()
    }

    #[tokio::test]
    async fn sign_in_and_invite_registration_go_through_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (c, db) = setup(dir.path());
        let run = |j| execute(&c, &db, None, req(j));
        let add = serde_json::json!({"cmd": "user-add", "user": "admin", "password": "admin-password", "admin": true});
        assert!(run(add).await.ok);
        let check =
            |pw: &str| serde_json::json!({"cmd": "admin-check", "user": "admin", "password": pw});
        assert_eq!(run(check("admin-password")).await.data["admin"], true);
        assert_eq!(run(check("wrong-password")).await.data["admin"], false);

        let invite = run(serde_json::json!({"cmd": "invite-create"})).await;
        let token = invite.data["token"].as_str().unwrap().to_string();
        let use_it = |user: &str| serde_json::json!({"cmd": "invite-register", "token": token, "user": user, "password": "bobs password"});
        assert!(
            run(serde_json::json!({"cmd": "invite-check", "token": token}))
                .await
                .ok
        );
        assert!(run(use_it("bob")).await.ok);
        let again = run(use_it("carol")).await;
        assert!(!again.ok, "one use only: {again:?}");
        assert!(
            !run(serde_json::json!({"cmd": "invite-check", "token": token}))
                .await
                .ok
        );
        let bob = db
            .credential("bob", crate::sasl::ScramHash::Sha256)
            .await
            .unwrap();
        assert!(bob.unwrap().verify_password("bobs password"));
    }

    #[tokio::test]
    async fn backup_and_restore_touch_only_their_own_places() {
        let dir = tempfile::tempdir().unwrap();
        let (c, db) = setup(dir.path());
        let run = |j| execute(&c, &db, None, req(j));
        assert!(run(serde_json::json!({"cmd": "user-add", "user": "alice", "password": "alice-password"})).await.ok);
        let outside = dir.path().join("elsewhere/.backup-1");
        let r = run(serde_json::json!({"cmd": "backup", "dest": outside})).await;
        assert!(!r.ok && !outside.exists(), "{r:?}");
        let staging = dir.path().join(RESTORE_STAGING);
        std::fs::create_dir_all(&staging).unwrap();
        let snap = dir.path().join(".backup-1.sqlite");
        assert!(
            run(serde_json::json!({"cmd": "backup", "dest": snap}))
                .await
                .ok
        );
        std::fs::rename(&snap, staging.join("hearth.sqlite")).unwrap();

        assert!(
            run(serde_json::json!({"cmd": "user-add", "user": "bob", "password": "bobs password"}))
                .await
                .ok
        );
        let r = run(serde_json::json!({"cmd": "restore", "database": c.database_path()})).await;
        assert!(!r.ok, "only files in the staging directory: {r:?}");
        let r =
            run(serde_json::json!({"cmd": "restore", "database": staging.join("hearth.sqlite")}))
                .await;
        assert_eq!(r.data["users"], 1, "{r:?}");
        assert!(
            db.user_info("bob").await.unwrap().is_none(),
            "bob came after the backup"
        );
    }
}
