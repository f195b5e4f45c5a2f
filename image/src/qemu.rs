//! Starting QEMU for a board's `[qemu]` table, and talking to the XMPP port it forwards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::board::{Board, QemuSpec};
use crate::error::{Context, Error, Result};
use crate::run::describe;

/// Finds the board whose `[qemu]` runs `-M <machine>` (e.g. virt -> qemu-virt.toml, raspi3b -> rpi-arm64.toml).
pub fn machine(repo: &Path, machine: &str) -> Result<(Board, QemuSpec)> {
    let dir = repo.join("board-configs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".toml")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    let mut known = vec![];
    for name in names {
        let (board, _) = Board::load(repo, &name)?;
        if let Some(q) = board.qemu.clone() {
            let m = q
                .args
                .windows(2)
                .find(|w| w[0] == "-M")
                .map(|w| w[1].clone())
                .unwrap_or_default();
            if m == machine {
                return Ok((board, q));
            }
            known.push(m);
        }
    }
    Err(
        Error::new(format!("no board file describes QEMU machine {machine:?}"))
            .hint(format!("known machines: {}", known.join(", "))),
    )
}

/// A free TCP port on 127.0.0.1 for hostfwd.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").ctx(|| "finding a free port on 127.0.0.1".into())?;
    Ok(l.local_addr().ctx(|| "reading the port".into())?.port())
}

pub struct Launch<'a> {
    pub spec: &'a QemuSpec,
    pub image: &'a Path,
    pub console: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub dtb: Option<PathBuf>,
    pub append: String,
    pub port: u16,
    /// Host port forwarded to the guest's HTTP port 80 (the wizard and admin pages).
    pub web_port: u16,
    /// Host port forwarded to the guest's SSH port 22.
    pub ssh_port: u16,
    pub log: &'a Path,
}

pub fn start(l: &Launch) -> Result<Child> {
    let mut cmd = Command::new(&l.spec.binary);
    for a in &l.spec.args {
        cmd.arg(
            a.replace("{image}", &l.image.to_string_lossy())
                .replace("{console}", &l.console.to_string_lossy()),
        );
    }
    // A guest reboot ends QEMU: the boot test boots again with the card's cmdline.txt read afresh, as
    // the Pi firmware does (QEMU itself would reuse -append).
    cmd.arg("-no-reboot")
        .arg("-kernel")
        .arg(l.kernel)
        .arg("-initrd")
        .arg(l.initrd)
        .arg("-append")
        .arg(&l.append);
    if let Some(dtb) = &l.dtb {
        cmd.arg("-dtb").arg(dtb);
    }
    // Guest ports 5222 (c2s), 80 (hearth-web) and 22 (sshd) are reachable on the host's loopback only.
    cmd.arg("-netdev").arg(format!(
        "user,id=n0,hostfwd=tcp:127.0.0.1:{}-:5222,hostfwd=tcp:127.0.0.1:{}-:80,hostfwd=tcp:127.0.0.1:{}-:22",
        l.port, l.web_port, l.ssh_port
    ));
    let log = std::fs::File::create(l.log).ctx(|| format!("creating {}", l.log.display()))?;
    std::fs::write(l.log.with_extension("cmd"), describe(&cmd) + "\n")
        .ctx(|| "saving the QEMU command line".into())?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().ctx(|| "duplicating log handle".into())?)
        .stderr(log)
        .spawn()
        .map_err(|e| {
            Error::new(format!("cannot start {}: {e}", l.spec.binary))
                .hint("apt-get install qemu-system-arm")
        })
}

/// Opens an XMPP client stream to `domain` and returns what the server sent, if it offered
/// `<stream:features>`. Before the guest listens, QEMU's user network accepts and then closes.
pub fn stream_features(port: u16, domain: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let open = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    s.write_all(open.as_bytes()).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 65536 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains("<stream:features")
            && (text.contains("</stream:features>") || text.contains("<stream:features/>"))
        {
            let _ = s.write_all(b"</stream:stream>");
            return Some(text.into_owned());
        }
    }
    None
}

/// `GET path` over plain HTTP/1.0 on 127.0.0.1:port: the status code and the body, if the guest answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: hearth.local\r\n\r\n").as_bytes())
        .ok()?;
    let mut got = Vec::new();
    // A page is a few KiB; stop reading at 1 MiB whatever the guest sends.
    let _ = (&mut s).take(1 << 20).read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_get_reads_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).unwrap();
            assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /setup HTTP/1.0\r\n"));
            s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<h1>Set up your Hearth</h1>",
            )
            .unwrap();
        });
        let (status, body) = http_get(port, "/setup").unwrap();
        server.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "<h1>Set up your Hearth</h1>");
        // Nobody listening (QEMU before the guest is up closes at once): no answer, no panic.
        let closed = free_port().unwrap();
        assert_eq!(http_get(closed, "/"), None);
    }
}
