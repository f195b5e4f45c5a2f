//! XEP-0363 end to end: a real slixmpp client asks hearthd for slots, and uploads and downloads
//! over HTTPS from a real hearth-web, as a phone sharing a photo in the group chat would.
//! Issue 13, acceptance 1–4.

mod web_common;

use hearth_e2e::agent::Agent;
use hearth_e2e::browser::Browser;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use web_common::WebServer;

const PASSWORD: &str = "alice-upload-password";

/// hearthd and hearth-web sharing one config, the upload URLs pointing at hearth-web's TLS port.
struct Rig {
    server: TestServer,
    web: WebServer,
    alice: Agent,
}

fn rig(upload_settings: &str) -> Rig {
    let mut web = WebServer::new(&[]);
    let server = TestServer::start(&format!(
        "[modules.upload]\nurl = \"https://{DOMAIN}:{}/upload/\"\n{upload_settings}\n",
        web.https_port
    ));
    web.config = server.config_path.clone();
    web.data_dir = server.dir.path().join("data");
    web.spawn();
    server.add_user("alice", PASSWORD);
    let mut alice = server.agent("alice", PASSWORD);
    alice.connect();
    Rig { server, web, alice }
}

impl Rig {
    fn slot(&mut self, name: &str, size: u64, ctype: &str) -> Value {
        self.alice.cmd(
            json!({"cmd": "upload_slot", "filename": name, "size": size, "content_type": ctype}),
        )
    }
    fn ok_slot(&mut self, name: &str, size: u64, ctype: &str) -> (String, String) {
        let s = self.slot(name, size, ctype);
        assert_eq!(s["ok"], true, "slot refused: {s}\n{}", self.server.log());
        (
            s["put"].as_str().unwrap().into(),
            s["get"].as_str().unwrap().into(),
        )
    }
    fn http(&mut self, mut req: Value) -> Value {
        req["cmd"] = json!("http");
        let r = self.alice.cmd(req);
        assert!(
            r["status"].as_u64().unwrap_or(0) > 0,
            "no HTTP answer: {r}\n{}",
            self.web.log()
        );
        r
    }
    /// A PUT of `body`, from a file (the agent reads commands as lines of at most 64 KiB).
    fn put_text(&mut self, url: &str, ctype: &str, body: &str) -> Value {
        self.put_file(url, ctype, body, None)
    }
    fn put_file(&mut self, url: &str, ctype: &str, body: &str, send_only: Option<usize>) -> Value {
        let f = self.server.dir.path().join("body.tmp");
        std::fs::write(&f, body).unwrap();
        let mut req = json!({"method": "PUT", "url": url, "headers": {"Content-Type": ctype}, "body_file": f});
        if let Some(n) = send_only {
            req["send_only"] = json!(n);
            req["cmd"] = json!("http");
            return self.alice.cmd(req);
        }
        self.http(req)
    }
    fn get(&mut self, url: &str) -> Value {
        self.http(json!({"method": "GET", "url": url}))
    }
    fn upload_dir(&self) -> PathBuf {
        self.server.dir.path().join("data/uploads")
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Samples the largest RSS of `pids` every few milliseconds until `stop`.
fn sample_peaks(pids: Vec<i32>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut peaks = vec![0; pids.len()];
        while !stop.load(Ordering::Relaxed) {
            for (p, pid) in peaks.iter_mut().zip(&pids) {
                *p = (*p).max(rss_kib(*pid));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        peaks
    })
}

/// `n` bytes that do not compress and do not repeat (xorshift), so nothing can cheat.
fn write_noise(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut left = n;
    while left > 0 {
        buf.clear();
        while buf.len() < (1 << 16).min(left) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.extend_from_slice(&x.to_le_bytes());
        }
        buf.truncate((1 << 16).min(left));
        f.write_all(&buf).unwrap();
        left -= buf.len();
    }
    f.flush().unwrap();
}

fn sha256_of(path: &Path, range: Option<(usize, usize)>) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut data = Vec::new();
    f.read_to_end(&mut data).unwrap();
    let slice = match range {
        Some((a, b)) => &data[a..=b],
        None => &data[..],
    };
    Sha256::digest(slice)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn partial_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(".partial"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn fifty_mib_round_trip_in_bounded_memory() {
    let mut r = rig("");
    let scratch = tempfile::tempdir().unwrap();

    // Warm up both servers with a 1 MiB file (TLS, blocking threads, buffers at their working
    // size), then measure: whatever grows with the file's size shows in the 50 MiB transfer.
    let small = scratch.path().join("small.bin");
    write_noise(&small, 1 << 20);
    let (put, get) = r.ok_slot("warm.bin", 1 << 20, "application/octet-stream");
    let w = r.http(json!({"method": "PUT", "url": put, "headers": {"Content-Type": "application/octet-stream"}, "body_file": small}));
    assert_eq!(w["status"], 201, "{w}\n{}", r.web.log());
    assert_eq!(r.get(&get)["sha256"], sha256_of(&small, None));

    let big = scratch.path().join("holiday.mp4");
    let size = 50 * 1024 * 1024;
    write_noise(&big, size);
    let pids = vec![r.server.pid(), r.web.pid()];
    let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peaks(pids.clone(), stop.clone());
    let started = Instant::now();
    let (put, get) = r.ok_slot("holiday.mp4", size as u64, "video/mp4");
    let up = r.http(json!({"method": "PUT", "url": put, "headers": {"Content-Type": "video/mp4"}, "body_file": big}));
    let put_time = started.elapsed();
    assert_eq!(up["status"], 201, "{up}\n{}", r.web.log());
    let back = scratch.path().join("back.mp4");
    let down = r.http(json!({"method": "GET", "url": get, "save_to": back}));
    let total_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peaks = sampler.join().unwrap();
    assert_eq!(down["status"], 200);
    assert_eq!(down["length"], size);
    assert_eq!(
        down["sha256"],
        sha256_of(&big, None),
        "the file comes back byte-identical"
    );
    let growth: Vec<i64> = peaks
        .iter()
        .zip(&before)
        .map(|(p, b)| *p as i64 - *b as i64)
        .collect();
    println!(
        "50 MiB upload {:.1}s, upload+download {:.1}s; RSS before/peak/growth KiB: hearthd {}/{}/{}, hearth-web {}/{}/{}",
        put_time.as_secs_f64(),
        total_time.as_secs_f64(),
        before[0], peaks[0], growth[0], before[1], peaks[1], growth[1]
    );
    assert!(growth[0] < 2048, "hearthd grew by {} KiB", growth[0]);
    assert!(growth[1] < 2048, "hearth-web grew by {} KiB", growth[1]);

    // What a browser or a client gets with the file.
    let h = &down["headers"];
    assert_eq!(h["content-type"], "video/mp4");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        h["content-security-policy"]
            .as_str()
            .unwrap()
            .contains("sandbox"),
        "{h}"
    );
    assert!(
        h["content-disposition"]
            .as_str()
            .unwrap()
            .starts_with("inline; filename=\"holiday.mp4\""),
        "{h}"
    );
    let etag = h["etag"].as_str().unwrap().to_string();
    let part =
        r.http(json!({"method": "GET", "url": get, "headers": {"Range": "bytes=1000000-1999999"}}));
    assert_eq!(part["status"], 206, "{part}");
    assert_eq!(
        part["headers"]["content-range"],
        format!("bytes 1000000-1999999/{size}")
    );
    assert_eq!(
        part["sha256"],
        sha256_of(&big, Some((1_000_000, 1_999_999)))
    );
    let tail = r.http(json!({"method": "GET", "url": get, "headers": {"Range": "bytes=-10"}}));
    assert_eq!(tail["sha256"], sha256_of(&big, Some((size - 10, size - 1))));
    let bad = r
        .http(json!({"method": "GET", "url": get, "headers": {"Range": format!("bytes={size}-")}}));
    assert_eq!(bad["status"], 416);
    let cached = r.http(json!({"method": "GET", "url": get, "headers": {"If-None-Match": etag}}));
    assert_eq!(cached["status"], 304);
    let head = r.http(json!({"method": "HEAD", "url": get}));
    assert_eq!(
        (
            head["status"].clone(),
            head["headers"]["content-length"].clone()
        ),
        (json!(200), json!(size.to_string()))
    );
    let preflight = r.http(json!({"method": "OPTIONS", "url": put, "headers": {"Origin": "https://web.example", "Access-Control-Request-Method": "PUT"}}));
    assert!(
        preflight["headers"]["access-control-allow-methods"]
            .as_str()
            .unwrap()
            .contains("PUT"),
        "{preflight}"
    );
    assert_eq!(partial_files(&r.upload_dir()), 0);
}

/// A tmpfs of `size` mounted for the test; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "hearth-upload-test",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the disk-full case needs a small tmpfs (run as root, as scripts/test.sh does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn refusals_are_clear_and_nothing_partial_is_served() {
    let disk = SmallDisk::mount("1500k");
    let mut r = rig(&format!(
        "dir = {:?}\nmax_file_size = 1000000\nquota_per_account = 2500000\n",
        disk.dir.path()
    ));
    let dir = disk.dir.path().to_path_buf();

    let s = r.slot("big.bin", 1_000_001, "application/octet-stream");
    assert_eq!(
        (s["ok"].clone(), s["condition"].clone()),
        (json!(false), json!("not-acceptable")),
        "{s}"
    );
    assert!(
        s["text"].as_str().unwrap().contains("up to 976.6 KiB"),
        "{s}"
    );

    let (put, get) = r.ok_slot("notes.txt", 900_000, "text/plain");
    let body = "n".repeat(900_000);
    let short = r.put_text(&put, "text/plain", &body[..899_999]);
    assert_eq!(
        short["status"], 403,
        "a length other than the slot's: {short}"
    );
    assert!(
        short["text"]
            .as_str()
            .unwrap()
            .contains("length (899999 bytes)"),
        "{short}"
    );
    let other_type = r.put_text(&put, "text/html", &body);
    assert_eq!(other_type["status"], 403, "{other_type}");
    let broken = r.put_file(&put, "text/plain", &body, Some(1000));
    assert_eq!(broken["closed"], true, "{broken}");
    // hearth-web notices the broken body, removes what it had and frees the slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.web.log().contains("900000 were announced") {
        assert!(
            Instant::now() < deadline,
            "no broken upload in the log:\n{}",
            r.web.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        r.get(&get)["status"],
        404,
        "nothing of a broken upload is served"
    );
    assert_eq!(partial_files(&dir), 0);
    let ok = r.put_text(&put, "text/plain", &body);
    assert_eq!(
        ok["status"],
        201,
        "the slot may be retried after a failure: {ok}\n{}",
        r.web.log()
    );
    let again = r.put_text(&put, "text/plain", &body);
    assert_eq!(again["status"], 409, "a slot is used once: {again}");
    assert!(
        again["text"].as_str().unwrap().contains("already"),
        "{again}"
    );
    let got = r.get(&get);
    assert_eq!(
        (got["status"].clone(), got["length"].clone()),
        (json!(200), json!(900_000))
    );

    // 900 kB of 1500 KiB used: another 900 kB fits the quota but not the disk.
    let (put, get) = r.ok_slot("more.txt", 900_000, "text/plain");
    let full = r.put_text(&put, "text/plain", &body);
    assert_eq!(full["status"], 507, "{full}");
    assert!(full["text"].as_str().unwrap().contains("disk"), "{full}");
    assert_eq!(r.get(&get)["status"], 404);
    assert_eq!(partial_files(&dir), 0, "nothing half-written is left");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "the stored file and .partial only: {files:?}"
    );

    // Held: 900 kB stored + 900 kB slot still open; 800 kB more is over the 2.5 MB quota.
    let q = r.slot("third.txt", 800_000, "text/plain");
    assert_eq!(q["condition"], "resource-constraint", "{q}");
    assert!(
        q["text"].as_str().unwrap().contains("upload space is full"),
        "{q}"
    );
    let forged = put
        .replace("v2=", "v2=0")
        .chars()
        .take(put.len())
        .collect::<String>();
    assert_eq!(r.put_text(&forged, "text/plain", &body)["status"], 403);

    // The disk fills up while a body is on its way (free space was enough when it started).
    let (put, get) = r.ok_slot("race.txt", 500_000, "text/plain");
    let src = r.server.dir.path().join("race.tmp");
    std::fs::write(&src, "r".repeat(500_000)).unwrap();
    let resume = r.server.dir.path().join("resume");
    let id = r
        .alice
        .start(json!({"cmd": "http", "method": "PUT", "url": put,
        "headers": {"Content-Type": "text/plain"}, "body_file": src,
        "pause_after": 1000, "resume_file": resume}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while partial_files(&dir) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload did not start:\n{}",
            r.web.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    drop(f);
    std::fs::write(&resume, "").unwrap();
    let mid = r.alice.reply(id);
    assert_eq!(mid["status"], 507, "{mid}\n{}", r.web.log());
    assert!(
        mid["text"]
            .as_str()
            .unwrap()
            .contains("filled up during the upload"),
        "{mid}"
    );
    assert_eq!(partial_files(&dir), 0, "the partial file is removed");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(r.get(&get)["status"], 404, "nothing of it is served");
    drop(r);
}

#[test]
fn expired_slots_are_refused_and_expired_files_removed() {
    let mut r = rig("slot_lifetime_secs = 2\nfile_lifetime_secs = 5\ncleanup_every_secs = 1\n");
    let (late_put, _) = r.ok_slot("late.txt", 5, "text/plain");
    let (put, get) = r.ok_slot("soon.txt", 5, "text/plain");
    assert_eq!(r.put_text(&put, "text/plain", "hello")["status"], 201);
    assert_eq!(r.get(&get)["text"], "hello");
    std::thread::sleep(Duration::from_millis(2500));
    let late = r.put_text(&late_put, "text/plain", "hello");
    assert_eq!(late["status"], 410, "{late}");
    assert!(late["text"].as_str().unwrap().contains("expired"), "{late}");

    let stored = std::fs::read_dir(r.upload_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".partial")
        .count();
    assert_eq!(stored, 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let gone_from_disk = std::fs::read_dir(r.upload_dir())
            .unwrap()
            .flatten()
            .all(|e| e.file_name() == ".partial");
        if gone_from_disk {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired file stays on disk:\n{}",
            r.server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(r.get(&get)["status"], 404, "an expired file is not served");
}

#[test]
fn uploaded_html_and_svg_run_no_script_in_a_browser() {
    let mut r = rig("");
    let script = "document.documentElement.setAttribute('data-ran', 'yes')";
    let html =
        format!("<!doctype html><html><body><h1>hi</h1><script>{script}</script></body></html>");
    let svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' onload=\"{script}\"><script>{script}</script><circle r='10'/></svg>"
    );
    let mut urls = Vec::new();
    for (name, ctype, body) in [
        ("page.html", "text/html", &html),
        ("drawing.svg", "image/svg+xml", &svg),
    ] {
        let (put, get) = r.ok_slot(name, body.len() as u64, ctype);
        assert_eq!(r.put_text(&put, ctype, body)["status"], 201);
        let port = r.web.https_port;
        urls.push(get.replace(
            &format!("https://{DOMAIN}:{port}"),
            &format!("https://127.0.0.1:{port}"),
        ));
    }
    let b = Browser::start();
    let ran = || {
        b.execute(
            "return document.documentElement.getAttribute('data-ran')",
            &[],
        )
    };
    // The check can see script run: the same SVG from a data: URL does run it.
    b.goto(&format!("data:image/svg+xml,{}", svg.replace('#', "%23")));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ran(),
        json!("yes"),
        "the control page should run its script"
    );
    for url in &urls {
        b.goto("about:blank");
        b.goto(url);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            ran(),
            Value::Null,
            "script ran at {url} (now at {})",
            b.url()
        );
    }
    assert!(
        b.url().ends_with("drawing.svg"),
        "the SVG is shown, as a picture: {}",
        b.url()
    );
}

#[test]
fn the_admin_pages_show_use_and_change_the_limits() {
    let mut r = rig("max_file_size = 1048576\n");
    let out = r.server.hearthctl(
        &["user", "add", web_common::ADMIN, "--admin"],
        Some(&format!("{}\n", web_common::ADMIN_PASSWORD)),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (put, _) = r.ok_slot("a.txt", 5, "text/plain");
    assert_eq!(r.put_text(&put, "text/plain", "hello")["status"], 201);
    let refused = r.slot("two.bin", 2 * 1048576, "application/octet-stream");
    assert_eq!(refused["condition"], "not-acceptable", "{refused}");

    let b = Browser::start();
    web_common::sign_in(&b, &r.web, web_common::ADMIN);
    b.goto(&r.web.https_url("/admin/uploads"));
    assert_eq!(
        b.text("#upload-summary"),
        "1 files, 5 bytes in all, from 1 accounts."
    );
    assert_eq!(b.attr("#max_file_mib", "value").as_deref(), Some("1"));
    b.fill("#max_file_mib", "0");
    b.submit("button[type=submit]");
    assert!(
        b.text("#max_file_mib-error").contains("whole number"),
        "{}",
        b.body_text()
    );
    b.fill("#max_file_mib", "3");
    b.submit("button[type=submit]");
    assert!(b.body_text().contains("Saved."), "{}", b.body_text());
    assert_eq!(b.attr("#max_file_mib", "value").as_deref(), Some("3"));
    let now_fits = r.slot("two.bin", 2 * 1048576, "application/octet-stream");
    assert_eq!(
        now_fits["ok"], true,
        "the new limit applies at once: {now_fits}"
    );
}
