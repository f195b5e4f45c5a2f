//! `hearthd --dev`: one command gives a working server on localhost with a self-signed
//! certificate and open registration, and says how to connect.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{binary, free_port};
use serde_json::json;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_mode_serves_localhost_with_open_registration() {
    let dir = tempfile::tempdir().unwrap();
    let dev_dir = dir.path().join("dev");
    let port = free_port();
    let mut child = Command::new(binary("hearthd"))
        .arg("--dev")
        .arg("--dev-port")
        .arg(port.to_string())
        .arg("--dev-dir")
        .arg(&dev_dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "hearthd --dev did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cert = dev_dir.join("cert.pem");
    let mut reg = Agent::spawn(
        "newbie@localhost",
        "newbie-password",
        port,
        &cert,
        &["--register"],
    );
    let r = reg.try_connect();
    let _ = child.kill();
    let mut banner = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut banner)
        .unwrap();
    let _ = child.wait();
    assert_eq!(r["ok"], json!(true), "{r}\n{banner}");
    assert!(
        banner.contains(&format!("127.0.0.1 port {port}")),
        "{banner}"
    );
    assert!(
        dev_dir.join("hearth.toml").exists(),
        "hearthctl needs the config: {banner}"
    );
}
