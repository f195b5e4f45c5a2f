//! Telling `hearthd` to load the new pair: the control-socket request `{"cmd":"reload-certs"}`
//! (line-delimited JSON, reply `{"ok":true}` or `{"ok":false,"error":"..."}`). `hearth-web`
//! watches the certificate file itself, so it needs no message. The protocol is hearthd's
//! (`hearthd::control`), so the two cannot drift apart.

use std::path::Path;
use std::time::Duration;

/// How long `hearthd` may take to answer; loading a PEM pair takes milliseconds.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// What happened when we asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Done,
    /// Nobody listens on the socket: `hearthd` reads the new files when it starts.
    NotRunning,
}

pub async fn reload_hearthd(socket: &Path) -> Result<Reload, String> {
    let req = hearthd::control::Request::ReloadCerts;
    let reply =
        match tokio::time::timeout(REPLY_TIMEOUT, hearthd::control::request(socket, &req)).await {
            Err(_) => {
                return Err(format!(
                    "hearthd did not answer on {} within {}s",
                    socket.display(),
                    REPLY_TIMEOUT.as_secs()
                ))
            }
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(Reload::NotRunning)
            }
            Ok(Err(e)) => return Err(format!("talking to hearthd on {}: {e}", socket.display())),
            Ok(Ok(r)) => r,
        };
    if reply.ok {
        Ok(Reload::Done)
    } else {
        Err(format!(
            "hearthd refused the new certificate: {}",
            reply.error.as_deref().unwrap_or("no reason given")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn missing_socket_means_not_running() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            reload_hearthd(&d.path().join("none.sock")).await,
            Ok(Reload::NotRunning)
        );
    }

    async fn answer(reply: &'static str) -> Result<Reload, String> {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("control.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut line = String::new();
            BufReader::new(&mut s).read_line(&mut line).await.unwrap();
            s.write_all(reply.as_bytes()).await.unwrap();
            line
        });
        let r = reload_hearthd(&sock).await;
        assert_eq!(server.await.unwrap(), "{\"cmd\":\"reload-certs\"}\n");
        r
    }

    #[tokio::test]
    async fn reads_the_reply() {
        assert_eq!(answer("{\"ok\":true}\n").await, Ok(Reload::Done));
        let e = answer("{\"ok\":false,\"error\":\"key does not match\"}\n")
            .await
            .unwrap_err();
        assert!(e.contains("key does not match"), "{e}");
    }
}
