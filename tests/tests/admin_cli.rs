//! hearthctl against a running and a stopped hearthd, account self-service over XEP-0077, and
//! config errors a person can act on.

use hearth_e2e::raw::{login_plain, read_until, tls_connect};
use hearth_e2e::server::{binary, TestServer, DOMAIN};
use serde_json::json;
use std::io::Write;
use std::time::Duration;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn hearthctl_works_with_hearthd_running_and_stopped() {
    let mut server = TestServer::start("");
    server.add_user("alice", "alice-password");
    let status = server.hearthctl(&["status"], None);
    assert!(text(&status).contains("running:  yes"), "{}", text(&status));

    // A bad name or a short password is explained, nothing is created.
    let out = server.hearthctl(&["user", "add", "bad name"], Some("long-enough-password\n"));
    assert!(!out.status.success());
    assert!(text(&out).contains("user name"), "{}", text(&out));
    let out = server.hearthctl(&["user", "add", "bob"], Some("short\n"));
    assert!(
        text(&out).contains("at least 8 characters"),
        "{}",
        text(&out)
    );
    let out = server.hearthctl(
        &["user", "add", "bob@elsewhere.test"],
        Some("long-enough-password\n"),
    );
    assert!(
        text(&out).contains("not on this server's domain"),
        "{}",
        text(&out)
    );
    let out = server.hearthctl(&["user", "add", "alice"], Some("long-enough-password\n"));
    assert!(text(&out).contains("taken"), "{}", text(&out));

    // --generate prints a password that works.
    let out = server.hearthctl(&["user", "add", "bob", "--generate"], None);
    assert!(out.status.success(), "{}", text(&out));
    let password = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_string();
    let mut bob = server.agent("bob", &password);
    bob.connect();
    drop(bob);

    // While stopped, hearthctl works on the database directly.
    server.stop();
    let status = server.hearthctl(&["status"], None);
    assert!(text(&status).contains("running:  no"), "{}", text(&status));
    let out = server.hearthctl(&["user", "passwd", "alice"], Some("a-new-alice-password\n"));
    assert!(out.status.success(), "{}", text(&out));
    let out = server.hearthctl(&["user", "del", "bob"], None);
    assert!(out.status.success(), "{}", text(&out));
    let out = server.hearthctl(&["invite", "create", "--expires", "2d"], None);
    assert!(
        text(&out).contains(&format!("xmpp:{DOMAIN}?register;preauth=")),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("https://{DOMAIN}/invite/")),
        "{}",
        text(&out)
    );
    let out = server.hearthctl(&["invite", "create", "--expires", "soon"], None);
    assert!(
        !out.status.success() && text(&out).contains("duration"),
        "{}",
        text(&out)
    );

    server.start_again();
    let list = server.hearthctl(&["user", "list"], None);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "alice");
    let mut alice = server.agent("alice", "a-new-alice-password");
    alice.connect();
    let mut old = server.agent("alice", "alice-password");
    assert_eq!(old.try_connect()["ok"], json!(false));
}

#[test]
fn users_change_their_password_and_remove_their_account_in_band() {
    let server = TestServer::start("[auth]\nallow_plain = true\n");
    server.add_user("carol", "carol-password");
    let mut c = tls_connect(server.direct_port, DOMAIN, &server.cert_path);
    login_plain(&mut c, DOMAIN, "carol", "carol-password");
    c.write_all(b"<iq type='set' id='pw'><query xmlns='jabber:iq:register'><username>carol</username><password>short</password></query></iq>").unwrap();
    let (r, _) = read_until(&mut c, "</iq>", Duration::from_secs(10));
    assert!(r.contains("not-acceptable"), "{r}");
    c.write_all(b"<iq type='set' id='pw2'><query xmlns='jabber:iq:register'><username>carol</username><password>carol-new-password</password></query></iq>").unwrap();
    let (r, _) = read_until(&mut c, "</iq>", Duration::from_secs(10));
    assert!(r.contains("type='result'"), "{r}");
    drop(c);
    let mut carol = server.agent("carol", "carol-new-password");
    carol.connect();
    drop(carol);

    let mut c = tls_connect(server.direct_port, DOMAIN, &server.cert_path);
    login_plain(&mut c, DOMAIN, "carol", "carol-new-password");
    c.write_all(b"<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .unwrap();
    let (r, _) = read_until(&mut c, "</iq>", Duration::from_secs(10));
    assert!(r.contains("type='result'"), "{r}");
    let list = server.hearthctl(&["user", "list"], None);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("carol"));
}

#[test]
fn repeated_failed_logins_are_throttled() {
    let server = TestServer::start("[auth]\nmax_failures_per_ip = 3\nlockout_secs = 60\n");
    server.add_user("dave", "dave-password");
    for _ in 0..3 {
        let mut wrong = server.agent("dave", "not-the-password");
        assert_eq!(wrong.try_connect()["ok"], json!(false));
    }
    // Now even the right password waits out the lockout.
    let mut right = server.agent("dave", "dave-password");
    assert_eq!(right.try_connect()["ok"], json!(false));
    assert!(server.log().contains("login failed"), "failures are logged");
}

#[test]
fn config_errors_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.toml");
    std::fs::write(&path, "domain = \"example.test\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n[registration]\npolcy = \"open\"\n").unwrap();
    let out = std::process::Command::new(binary("hearthd"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:6:", path.display())) && err.contains("polcy"),
        "{err}"
    );
    let out = std::process::Command::new(binary("hearthd"))
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read config file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(binary("hearthd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--dev"));
}
