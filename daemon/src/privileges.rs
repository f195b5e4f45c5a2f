//! Dropping root: after the listening sockets are bound, before anything reads client input.

use nix::unistd::{setgid, setgroups, setuid, Uid, User};

/// Switches to `name` if running as root. Refuses to go on as root without a `user` configured
/// only when a user was asked for and cannot be found.
pub fn drop_to(name: Option<&str>) -> Result<(), String> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let Some(name) = name else {
        log::warn!("running as root; set `user = \"hearth\"` in the config to drop privileges");
        return Ok(());
    };
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up user {name}: {e}"))?
        .ok_or_else(|| {
            format!("user {name} does not exist (create it, or remove `user` from the config)")
        })?;
    setgroups(&[user.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(user.gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(user.uid).map_err(|e| format!("setuid: {e}"))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err("could still regain root after dropping privileges".into());
    }
    log::info!("now running as {name}");
    Ok(())
}
