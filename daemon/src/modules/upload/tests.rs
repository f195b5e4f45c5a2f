//! Slots through the in-process harness: real sessions, real SQLite, the real control requests.

use super::control::{execute, UploadRequest};
use super::{signed, NS};
use crate::harness::{Harness, DOMAIN};
use crate::xml::Element;

fn request(name: &str, size: u64, ctype: &str) -> Element {
    Element::new("request", NS)
        .with_attr("filename", name)
        .with_attr("size", size.to_string())
        .with_attr("content-type", ctype)
}

fn error_text(reply: &Element) -> String {
    reply
        .elements()
        .find(|e| e.name == "error")
        .and_then(|e| e.elements().find(|c| c.name == "text"))
        .map(|t| t.text())
        .unwrap_or_default()
}

fn condition(reply: &Element) -> String {
    reply
        .elements()
        .find(|e| e.name == "error")
        .and_then(|e| e.first_element())
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// The PUT URL's path after the host, and its query.
fn put_url(reply: &Element) -> (String, String) {
    let slot = reply.child("slot", NS).expect("a slot");
    let put = slot
        .child("put", NS)
        .unwrap()
        .attr("url")
        .unwrap()
        .to_string();
    let get = slot
        .child("get", NS)
        .unwrap()
        .attr("url")
        .unwrap()
        .to_string();
    let (p, q) = put.split_once('?').unwrap();
    assert_eq!(p, get, "GET is the PUT URL without the signature");
    (p.to_string(), q.to_string())
}

#[tokio::test]
async fn a_slot_is_signed_for_exactly_its_path_size_and_type() {
    let h = Harness::with_config(
        "[modules.upload]\nurl = \"https://files.example/upload/\"\nmax_file_size = 1000\n",
    )
    .await;
    h.user("alice").await;
    let mut a = h.login("alice", "phone").await;
    let r = a
        .iq(
            "get",
            Some(DOMAIN),
            request("../holiday photo.jpg", 500, "image/jpeg"),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    let (url, query) = put_url(&r);
    let path = url.strip_prefix("https://files.example").unwrap();
    let fp = signed::parse_path(path, "/upload/").expect("our own URL parses");
    assert_eq!(fp.name, "holiday photo.jpg", "path components are cut off");
    let mac = signed::v2_from_query(&query).unwrap();
    let secret = super::read_secret(&h.server.config.data_dir.join("upload.secret")).unwrap();
    assert!(signed::verify_v2(&secret, &fp, 500, "image/jpeg", mac));
    assert!(!signed::verify_v2(&secret, &fp, 501, "image/jpeg", mac));

    // hearth-web's side: the slot is used once, at its size, and served once complete.
    let (config, storage) = (&h.server.config, &h.server.storage);
    let begin = |size: u64| UploadRequest::Begin {
        token: fp.token.clone(),
        name: fp.name.clone(),
        size,
        content_type: "image/jpeg".into(),
    };
    let file = || UploadRequest::File {
        token: fp.token.clone(),
        name: fp.name.clone(),
    };
    let wrong = execute(config, storage, begin(499)).await;
    assert_eq!(wrong.data["status"], 400, "{wrong:?}");
    assert!(execute(config, storage, begin(500)).await.ok);
    assert!(
        !execute(config, storage, file()).await.ok,
        "not served while receiving"
    );
    let finish = UploadRequest::Finish {
        token: fp.token.clone(),
    };
    assert!(execute(config, storage, finish).await.ok);
    let info = execute(config, storage, file()).await;
    assert_eq!(info.data["size"], 500, "{info:?}");
    let again = execute(config, storage, begin(500)).await;
    assert_eq!(again.data["status"], 409, "a slot is used once: {again:?}");
    let stats = execute(config, storage, UploadRequest::Stats).await;
    assert_eq!(
        (stats.data["files"].clone(), stats.data["bytes"].clone()),
        (1.into(), 500.into())
    );
}

#[tokio::test]
async fn limits_are_refused_with_reasons_and_admin_changes_apply() {
    let h = Harness::with_config(
        "[modules.upload]\nmax_file_size = 1000\nquota_per_account = 1500\ndaily_per_account = 100000\n",
    )
    .await;
    h.user("alice").await;
    let mut a = h.login("alice", "phone").await;
    let r = a
        .iq(
            "get",
            Some(DOMAIN),
            request("big.bin", 1001, "application/octet-stream"),
        )
        .await;
    assert_eq!(condition(&r), "not-acceptable", "{}", r.to_xml(""));
    assert!(r.to_xml("").contains("file-too-large"));
    assert!(
        error_text(&r).contains("up to 1000 bytes"),
        "{}",
        error_text(&r)
    );
    for _ in 0..1 {
        let ok = a
            .iq(
                "get",
                Some(DOMAIN),
                request("a.bin", 1000, "application/octet-stream"),
            )
            .await;
        assert_eq!(ok.attr("type"), Some("result"));
    }
    let r = a
        .iq(
            "get",
            Some(DOMAIN),
            request("b.bin", 600, "application/octet-stream"),
        )
        .await;
    assert_eq!(condition(&r), "resource-constraint");
    assert!(
        error_text(&r).contains("upload space is full"),
        "{}",
        error_text(&r)
    );
    let r = a
        .iq("get", Some(DOMAIN), request("c", 10, "text/html; x=\"y\""))
        .await;
    assert_eq!(condition(&r), "bad-request");

    // The admin pages raise the quota: the same request passes, and disco shows the new maximum.
    let limits = super::store::Limits {
        max_file_size: 2000,
        quota_per_account: 5000,
        daily_per_account: 100000,
        file_lifetime_secs: 86_400,
    };
    let set = execute(
        &h.server.config,
        &h.server.storage,
        UploadRequest::SetLimits { limits },
    )
    .await;
    assert!(set.ok, "{set:?}");
    let ok = a
        .iq(
            "get",
            Some(DOMAIN),
            request("b.bin", 1600, "application/octet-stream"),
        )
        .await;
    assert_eq!(ok.attr("type"), Some("result"), "{}", ok.to_xml(""));
    let info = a
        .iq(
            "get",
            Some(DOMAIN),
            Element::new("query", "http://jabber.org/protocol/disco#info"),
        )
        .await
        .to_xml("");
    assert!(
        info.contains(NS) && info.contains("<value>2000</value>"),
        "{info}"
    );
    assert!(
        info.contains("category=\"store\"") || info.contains("category='store'"),
        "{info}"
    );
}

#[tokio::test]
async fn disabled_upload_is_not_advertised_or_answered() {
    let h = Harness::with_config("[modules.upload]\nenabled = false\n").await;
    h.user("alice").await;
    let mut a = h.login("alice", "phone").await;
    let info = a
        .iq(
            "get",
            Some(DOMAIN),
            Element::new("query", "http://jabber.org/protocol/disco#info"),
        )
        .await
        .to_xml("");
    assert!(!info.contains(NS), "{info}");
    let r = a
        .iq("get", Some(DOMAIN), request("a", 1, "text/plain"))
        .await;
    assert_eq!(condition(&r), "service-unavailable", "{}", r.to_xml(""));
}

#[tokio::test]
async fn cleanup_removes_expired_files_from_disk_and_table() {
    let h = Harness::with_config("[modules.upload]\nfile_lifetime_secs = 1\n").await;
    h.user("alice").await;
    let mut a = h.login("alice", "phone").await;
    let r = a
        .iq("get", Some(DOMAIN), request("x.txt", 3, "text/plain"))
        .await;
    let (url, _) = put_url(&r);
    let path = url
        .split_once("/upload/")
        .map(|(_, p)| format!("/upload/{p}"))
        .unwrap();
    let fp = signed::parse_path(&path, "/upload/").unwrap();
    let (config, storage) = (&h.server.config, &h.server.storage);
    let begin = UploadRequest::Begin {
        token: fp.token.clone(),
        name: fp.name.clone(),
        size: 3,
        content_type: "text/plain".into(),
    };
    assert!(execute(config, storage, begin).await.ok);
    let file = config.modules.upload.dir(config).join(&fp.token);
    std::fs::write(&file, b"abc").unwrap();
    assert!(
        execute(
            config,
            storage,
            UploadRequest::Finish {
                token: fp.token.clone()
            }
        )
        .await
        .ok
    );
    let now = crate::storage::now_secs();
    assert_eq!(super::cleanup(config, storage, now - 10).await.unwrap(), 0);
    assert!(file.exists());
    assert_eq!(super::cleanup(config, storage, now + 2).await.unwrap(), 1);
    assert!(!file.exists(), "the expired file is gone from disk");
    let gone = execute(
        config,
        storage,
        UploadRequest::File {
            token: fp.token,
            name: fp.name,
        },
    )
    .await;
    assert!(!gone.ok);
}

#[test]
fn control_requests_parse_from_the_socket_json() {
    let r: crate::control::Request = serde_json::from_value(serde_json::json!({
        "cmd": "upload", "op": "begin", "token": "t", "name": "n", "size": 3, "content_type": "a/b"
    }))
    .unwrap();
    assert!(matches!(
        r,
        crate::control::Request::Upload(UploadRequest::Begin { size: 3, .. })
    ));
    let text =
        serde_json::to_string(&crate::control::Request::Upload(UploadRequest::Stats)).unwrap();
    assert_eq!(text, r#"{"cmd":"upload","op":"stats"}"#);
}

#[test]
fn sizes_read_as_people_write_them() {
    assert_eq!(super::human(12), "12 bytes");
    assert_eq!(super::human(100 * 1024 * 1024), "100 MiB");
    assert_eq!(super::human(1536), "1.5 KiB");
}
