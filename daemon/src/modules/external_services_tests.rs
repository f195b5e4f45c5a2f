use super::*;
use crate::harness::{Harness, DOMAIN};
use crate::xml::ns;

const SECRET: &str = "north-wind";

#[test]
fn credentials_follow_the_turn_rest_scheme() {
    // Worked out independently with Python's hmac module:
    // base64(HMAC-SHA1(b"north-wind", b"1700000000:alice")).
    let (user, pass) = turn_credential(b"north-wind", 1_700_000_000, "alice");
    assert_eq!(user, "1700000000:alice");
    assert_eq!(pass, "Oko4dt8u/EbTRjRUJWQDFm/zTCc=");
    let (_, other) = turn_credential(b"south-wind", 1_700_000_000, "alice");
    assert_ne!(pass, other, "the password depends on the secret");
}

#[test]
fn the_user_tag_hides_the_jid_but_is_stable() {
    let a = user_tag(b"s", "alice@example.test");
    assert_eq!(a, user_tag(b"s", "alice@example.test"));
    assert_ne!(a, user_tag(b"s", "bob@example.test"));
    assert_eq!(a.len(), 16);
    assert!(!a.contains("alice") && !a.contains(':'), "{a}");
}

#[test]
fn offered_services_with_and_without_turns() {
    let all = offered(3478, 5349);
    let kinds: Vec<_> = all
        .iter()
        .map(|s| format!("{}/{}:{}", s.kind, s.transport, s.port))
        .collect();
    assert_eq!(
        kinds,
        [
            "stun/udp:3478",
            "stun/tcp:3478",
            "turn/udp:3478",
            "turn/tcp:3478",
            "turns/tcp:5349"
        ]
    );
    assert_eq!(offered(3478, 0).len(), 4);
    assert!(!all[0].restricted() && all[2].restricted() && all[4].restricted());
}

#[test]
fn secret_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    std::fs::write(&p, "  s3cret\n").unwrap();
    assert_eq!(read_secret(&p).unwrap(), b"s3cret");
    std::fs::write(&p, "\n").unwrap();
    assert!(read_secret(&p).unwrap_err().contains("empty"));
    std::fs::write(&p, vec![b'x'; 5000]).unwrap();
    assert!(read_secret(&p).unwrap_err().contains("too large"));
    let missing = read_secret(&dir.path().join("nope")).unwrap_err();
    assert!(missing.contains("nope"), "{missing}");
}

fn parse(extra: &str) -> Result<crate::config::Config, String> {
    crate::config::Config::parse(
        &format!("domain = \"example.test\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n{extra}"),
        "hearth.toml",
    )
    .map_err(|e| e.to_string())
}

#[test]
fn config_is_strict_and_explains_itself() {
    let c = parse("[modules.external_services]\nsecret_file = \"/etc/hearth/turn-secret\"\npublic_address = \"203.0.113.7\"\n").unwrap();
    let es = &c.modules.external_services;
    assert_eq!(es.port, 3478);
    assert_eq!(es.tls_port, 5349);
    assert_eq!(es.public_address, Some("203.0.113.7".parse().unwrap()));
    let e = parse("[modules.external_services]\nsecret_file = \"/s\"\nprot = 1\n").unwrap_err();
    assert!(e.contains("hearth.toml:7:") && e.contains("prot"), "{e}");
    let e =
        parse("[modules.external_services]\nsecret_file = \"/s\"\ncredential_lifetime_secs = 0\n")
            .unwrap_err();
    assert!(e.contains("credential_lifetime_secs"), "{e}");
    let e = parse("[modules.external_services]\nsecret_file = \"/s\"\nhost = \"not a host\"\n")
        .unwrap_err();
    assert!(e.contains("modules.external_services.host"), "{e}");
    let e = parse("[modules.external_services]\nhost = \"turn.example.test\"\n").unwrap_err();
    assert!(e.contains("secret_file"), "{e}");
    let e = parse("[modules.external_services]\nsecret_file = \"/s\"\npublic_address = \"home\"\n")
        .unwrap_err();
    assert!(
        e.contains("hearth.toml:7:") && e.contains("IP address"),
        "{e}"
    );
    // An address is a fine host too (an external TURN server without a name).
    parse("[modules.external_services]\nsecret_file = \"/s\"\nhost = \"2001:db8::1\"\n").unwrap();
}

/// A harness with the module on, its secret in a file of the harness's own temp dir.
async fn harness(extra: &str) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("turn-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let h = Harness::with_config(&format!(
        "[modules.external_services]\nsecret_file = {secret:?}\n{extra}"
    ))
    .await;
    h.user("alice").await;
    (h, dir)
}

fn services_of(reply: &Element, wrapper: &str) -> Vec<Element> {
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    reply
        .child(wrapper, NS)
        .unwrap_or_else(|| panic!("no <{wrapper}/> in {reply:?}"))
        .elements()
        .cloned()
        .collect()
}

fn error_condition(reply: &Element) -> String {
    assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
    let err = reply.child("error", ns::CLIENT).expect("error element");
    err.elements()
        .find(|e| e.ns == ns::STANZA_ERRORS && e.name != "text")
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

/// The password must be what the TURN server computes from the username with the secret.
fn assert_valid_credential(s: &Element, now: i64, lifetime: i64) {
    let user = s.attr("username").expect("username");
    let (expiry, tag) = user.split_once(':').expect("expiry:tag");
    let expiry: i64 = expiry.parse().unwrap();
    assert!(
        (now + lifetime - 5..=now + lifetime + 5).contains(&expiry),
        "{user}"
    );
    assert_eq!(tag, user_tag(SECRET.as_bytes(), &format!("alice@{DOMAIN}")));
    let (_, expected) = turn_credential(SECRET.as_bytes(), expiry, tag);
    assert_eq!(s.attr("password"), Some(expected.as_str()));
    assert_eq!(
        s.attr("expires").map(crate::timefmt::parse_xep0082),
        Some(Some(expiry))
    );
    assert_eq!(s.attr("restricted"), Some("1"));
}

#[tokio::test]
async fn disco_shows_the_feature_exactly_when_configured() {
    let on = harness("").await.0;
    let off = Harness::new().await;
    for (h, expected) in [(&on, true), (&off, false)] {
        h.user("bob").await;
        let mut c = h.login("bob", "phone").await;
        let info = c
            .iq(
                "get",
                Some(DOMAIN),
                Element::new("query", crate::modules::disco::INFO),
            )
            .await;
        let q = info.child("query", crate::modules::disco::INFO).unwrap();
        let has = q
            .elements()
            .any(|f| f.name == "feature" && f.attr("var") == Some(NS));
        assert_eq!(has, expected, "{info:?}");
        if !expected {
            let r = c
                .iq("get", Some(DOMAIN), Element::new("services", NS))
                .await;
            assert_eq!(error_condition(&r), "service-unavailable");
        }
    }
}

#[tokio::test]
async fn services_carry_fresh_credentials_on_turn_only() {
    let (h, _dir) = harness("credential_lifetime_secs = 600\n").await;
    let mut c = h.login("alice", "phone").await;
    let reply = c
        .iq("get", Some(DOMAIN), Element::new("services", NS))
        .await;
    let now = unix_now();
    let list = services_of(&reply, "services");
    assert_eq!(list.len(), 5);
    for s in &list {
        assert_eq!(s.attr("host"), Some(DOMAIN));
        match s.attr("type") {
            Some("stun") => {
                assert_eq!(s.attr("port"), Some("3478"));
                assert!(s.attr("username").is_none() && s.attr("password").is_none());
            }
            Some("turn") => {
                assert_eq!(s.attr("port"), Some("3478"));
                assert_valid_credential(s, now, 600);
            }
            Some("turns") => {
                assert_eq!(
                    (s.attr("port"), s.attr("transport")),
                    (Some("5349"), Some("tcp"))
                );
                assert_valid_credential(s, now, 600);
            }
            other => panic!("unexpected service type {other:?}"),
        }
    }
    // §3.2: only one type.
    let reply = c
        .iq(
            "get",
            Some(DOMAIN),
            Element::new("services", NS).with_attr("type", "turn"),
        )
        .await;
    let list = services_of(&reply, "services");
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|s| s.attr("type") == Some("turn")));
}

#[tokio::test]
async fn credentials_are_issued_for_a_named_service_only() {
    let (h, _dir) = harness("host = \"turn.example.net\"\ntls_port = 0\n").await;
    let mut c = h.login("alice", "phone").await;
    let ask = |kind: &str, host: &str, port: Option<&str>| {
        let mut s = Element::new("service", NS)
            .with_attr("type", kind)
            .with_attr("host", host);
        if let Some(p) = port {
            s.set_attr("port", p);
        }
        Element::new("credentials", NS).with_child(s)
    };
    let reply = c
        .iq(
            "get",
            Some(DOMAIN),
            ask("turn", "turn.example.net", Some("3478")),
        )
        .await;
    let now = unix_now();
    let list = services_of(&reply, "credentials");
    assert_eq!(list.len(), 2, "udp and tcp: {reply:?}");
    for s in &list {
        assert_eq!(s.attr("host"), Some("turn.example.net"));
        assert_valid_credential(s, now, 86_400);
    }
    for (what, payload, condition) in [
        (
            "another host",
            ask("turn", "elsewhere.example", None),
            "item-not-found",
        ),
        (
            "another port",
            ask("turn", "turn.example.net", Some("9")),
            "item-not-found",
        ),
        (
            "TURNS, not offered",
            ask("turns", "turn.example.net", None),
            "item-not-found",
        ),
        (
            "STUN needs none",
            ask("stun", "turn.example.net", None),
            "item-not-found",
        ),
        ("no service", Element::new("credentials", NS), "bad-request"),
        (
            "no host",
            Element::new("credentials", NS)
                .with_child(Element::new("service", NS).with_attr("type", "turn")),
            "bad-request",
        ),
        (
            "bad port",
            ask("turn", "turn.example.net", Some("x")),
            "bad-request",
        ),
    ] {
        let r = c.iq("get", Some(DOMAIN), payload).await;
        assert_eq!(error_condition(&r), condition, "{what}: {r:?}");
    }
    // Addressed to an account rather than the server: not ours to answer.
    let r = c
        .iq(
            "get",
            Some(&format!("alice@{DOMAIN}")),
            Element::new("services", NS),
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r:?}");
}

#[tokio::test]
async fn a_missing_secret_is_an_error_not_a_bad_credential() {
    let (h, dir) = harness("").await;
    std::fs::remove_file(dir.path().join("turn-secret")).unwrap();
    let mut c = h.login("alice", "phone").await;
    let r = c
        .iq("get", Some(DOMAIN), Element::new("services", NS))
        .await;
    assert_eq!(error_condition(&r), "internal-server-error");
    // STUN alone needs no secret.
    let r = c
        .iq(
            "get",
            Some(DOMAIN),
            Element::new("services", NS).with_attr("type", "stun"),
        )
        .await;
    assert_eq!(services_of(&r, "services").len(), 2);
}

#[test]
fn setup_turns_calls_on_where_the_image_made_a_turn_secret() {
    use crate::setup::{build_config, AdminSecret, Answers, CertificateMode, TURN_SECRET_FILE};
    let dir = tempfile::tempdir().unwrap();
    let a = Answers {
        domain: "chat.example.org".into(),
        registration: crate::config::RegistrationPolicy::Invite,
        certificate: CertificateMode::SelfSigned,
        admin_username: "admin".into(),
        admin_secret: AdminSecret::Password("a long password".into()),
        data_dir: dir.path().join("data"),
        config_path: dir.path().join("hearth.toml"),
        acme: None,
        web: None,
        turn_public_address: Some("198.51.99.7".parse().unwrap()),
    };
    let es = |a: &Answers| build_config(a).unwrap().modules.external_services;
    assert_eq!(es(&a), ExternalServicesConfig::default(), "no secret: off");
    std::fs::write(dir.path().join(TURN_SECRET_FILE), "s3cret\n").unwrap();
    let on = es(&a);
    assert_eq!(on.secret_file, Some(dir.path().join("turn-secret")));
    assert_eq!(on.public_address, a.turn_public_address);
    assert!(ExternalServices::new(&on).is_some());
    // What the box's coturn setup reads back (image/overlay/usr/lib/hearth/turn-config's awk):
    // `key = "value"` lines under [modules.external_services].
    let text = toml::to_string_pretty(&build_config(&a).unwrap()).unwrap();
    let section = text
        .split("[modules.external_services]")
        .nth(1)
        .expect("section written");
    let section = section.split("\n[").next().unwrap();
    assert!(
        section.contains("\npublic_address = \"198.51.99.7\"\n"),
        "{section}"
    );
    assert!(
        section.contains(&format!(
            "\nsecret_file = {:?}\n",
            dir.path().join("turn-secret")
        )),
        "{section}"
    );
}
