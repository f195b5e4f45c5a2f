//! A real headless Chromium, driven over WebDriver (W3C, JSON over HTTP) through chromedriver.
//!
//! The WebDriver client is the few endpoints the tests need, spoken over a plain loopback HTTP/1.1
//! connection: no client crate, no TLS stack, nothing that could hide what the browser does.
//! Debian's `chromium` and `chromium-driver` are installed on first use when missing (as root).

use base64::Engine;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The phone-sized window every page is checked and photographed at.
pub const WIDTH: u32 = 390;
pub const HEIGHT: u32 = 844;
/// How long `find` waits for an element to appear (WebDriver implicit wait).
const IMPLICIT_WAIT_MS: u64 = 10_000;
/// How long a form submission may take to show the next page (setup derives keys, makes certs).
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// W3C's key for element references in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Installs Chromium and chromedriver from Debian if they are missing. Once per test process:
/// parallel tests must not run apt-get side by side (dpkg's lock would fail all but one).
pub fn ensure_installed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install);
    assert!(
        Path::new(CHROMEDRIVER).exists(),
        "chromium-driver is not installed (see the first failure)"
    );
}

fn install() {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    assert!(
        root,
        "Chromium is missing: run `apt-get install chromium chromium-driver` as root"
    );
    let ok = |c: &mut Command| {
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(
        ok(Command::new("apt-get").args(["update", "-qq"])),
        "apt-get update failed"
    );
    assert!(
        ok(Command::new("apt-get").args([
            "install",
            "-y",
            "-qq",
            "chromium",
            "chromium-driver",
            "fonts-dejavu-core"
        ])),
        "apt-get install chromium chromium-driver failed"
    );
}

/// `target/screenshots/` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let dir = root.join("target").join("screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    /// Where downloads land.
    pub downloads: tempfile::TempDir,
}

/// One page element, by its WebDriver reference.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    pub fn start() -> Browser {
        ensure_installed();
        let port = crate::server::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let downloads = tempfile::tempdir().expect("download dir");
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
            downloads,
        };
        b.wait_driver();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
            format!("--window-size={WIDTH},{HEIGHT}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The box's certificate is self-signed in these tests, as on a LAN-only box.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": b.downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let v = b.call("POST", "/session", Some(&caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        b.cmd(
            "POST",
            "timeouts",
            Some(&json!({"implicit": IMPLICIT_WAIT_MS, "pageLoad": 60_000})),
        );
        // A desktop window has a minimum width; emulate the phone's screen instead, as DevTools'
        // device mode does (mobile: the page's viewport meta tag applies).
        b.set_viewport(WIDTH, HEIGHT);
        b
    }

    fn wait_driver(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((_, v)) = http(self.port, "GET", "/status", None) {
                if v["value"]["ready"] == json!(true) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver did not start on port {}", self.port);
    }

    /// A WebDriver call; panics with the driver's message on error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = http(self.port, method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        if status >= 400 {
            panic!(
                "WebDriver {method} {path} failed ({status}): {}",
                v["value"]
            );
        }
        v["value"].clone()
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}/{path}", self.session), body)
    }

    /// Sets the emulated screen size (Chrome DevTools Protocol through chromedriver).
    pub fn set_viewport(&self, width: u32, height: u32) {
        let params =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true});
        self.cmd(
            "POST",
            "goog/cdp/execute",
            Some(&json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params})),
        );
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "url", Some(&json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css`, waiting for it to appear.
    pub fn find(&self, css: &str) -> Element {
        let v = self.cmd(
            "POST",
            "element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        Element(
            v[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css}: {v}"))
                .to_string(),
        )
    }

    /// Every element matching `css` right now (no waiting beyond the implicit wait for the first).
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.cmd(
            "POST",
            "elements",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces the text of the input matching `css`.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("element/{}/clear", e.0), Some(&json!({})));
        self.cmd(
            "POST",
            &format!("element/{}/value", e.0),
            Some(&json!({ "text": text })),
        );
    }

    /// Chooses a file in an `<input type=file>`.
    pub fn upload(&self, css: &str, file: &Path) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("element/{}/value", e.0),
            Some(&json!({ "text": file.display().to_string() })),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.click_element(&e);
    }

    pub fn click_element(&self, e: &Element) {
        self.cmd("POST", &format!("element/{}/click", e.0), Some(&json!({})));
    }

    /// Clicks `css` (a submit button or link) and waits until the next page has loaded.
    pub fn submit(&self, css: &str) {
        let e = self.find(css);
        self.submit_element(&e);
    }

    pub fn submit_element(&self, e: &Element) {
        // Mark the current document; the next page is there when the mark is gone.
        self.execute("document.documentElement.dataset.hearthStale = '1';", &[]);
        self.click_element(e);
        self.wait_new_page();
    }

    fn wait_new_page(&self) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        while Instant::now() < deadline {
            let v = self.execute(
                "return document.readyState === 'complete' && !document.documentElement.dataset.hearthStale;",
                &[],
            );
            if v == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the next page did not load within {PAGE_TIMEOUT:?}; still at {}",
            self.url()
        );
    }

    pub fn text_of(&self, e: &Element) -> String {
        self.cmd("GET", &format!("element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.text_of(&e)
    }

    /// An attribute of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css);
        self.cmd("GET", &format!("element/{}/attribute/{name}", e.0), None)
            .as_str()
            .map(str::to_string)
    }

    /// The whole page's visible text.
    pub fn body_text(&self) -> String {
        self.text("body")
    }

    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Saves a PNG of the viewport into `target/screenshots/NAME.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd("GET", "screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot base64");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Saves both: `NAME.png`, the 390×844 screen as a phone shows it, and `NAME-full.png`, the
    /// whole page at the phone's width (what the README shows).
    pub fn screenshots(&self, name: &str) {
        self.screenshot(name);
        self.screenshot_full(&format!("{name}-full"));
    }

    /// Saves a PNG of the whole page (all of its height, at the phone's width) for the README.
    pub fn screenshot_full(&self, name: &str) -> PathBuf {
        let h = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                &[],
            )
            .as_u64()
            .unwrap_or(HEIGHT as u64);
        self.set_viewport(WIDTH, (h as u32).clamp(HEIGHT, 6000));
        let path = self.screenshot(name);
        self.set_viewport(WIDTH, HEIGHT);
        path
    }

    /// Waits for a file to finish downloading into `downloads` and returns its path.
    pub fn wait_download(&self, suffix: &str) -> PathBuf {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(rd) = std::fs::read_dir(self.downloads.path()) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.to_string_lossy().ends_with(suffix) {
                        return p;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no *{suffix} was downloaded into {}",
            self.downloads.path().display()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One HTTP/1.1 request to chromedriver on loopback; returns the status and the JSON body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver keeps connections open whatever we ask, so read exactly one response.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response header".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    let mut payload = raw[split + 4..].to_vec();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(n) => payload.len() >= n,
            None if chunked => payload.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if chunked {
        payload = dechunk(&payload)?;
    } else if let Some(n) = length {
        payload.truncate(n);
    }
    let v = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload).map_err(|e| e.to_string())?
    };
    Ok((status, v))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .map_err(|e| e.to_string())?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}
