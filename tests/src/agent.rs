//! Drives `tests/peers/xmpp_agent.py` — a real slixmpp client — over JSON lines.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The venv python made by scripts/install-test-deps.sh.
pub fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let py = root.join("target/venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/install-test-deps.sh (scripts/test.sh does)",
        py.display()
    );
    py
}

pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

pub struct Agent {
    pub jid: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Value>,
    events: VecDeque<Value>,
    next_id: u64,
}

impl Agent {
    pub fn spawn(jid: &str, password: &str, port: u16, ca: &Path, extra: &[&str]) -> Agent {
        let mut child = Command::new(venv_python())
            .arg(peer_script("xmpp_agent.py"))
            // `--key=value`: values may begin with '-' (generated passwords), which argparse would
            // otherwise read as an option.
            .args([
                format!("--jid={jid}"),
                format!("--password={password}"),
                format!("--port={port}"),
            ])
            .arg("--ca-file")
            .arg(ca)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn xmpp_agent.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut a = Agent {
            jid: jid.to_string(),
            child,
            stdin,
            lines,
            events: VecDeque::new(),
            next_id: 0,
        };
        a.expect_event("ready", Duration::from_secs(30), |_| true);
        a
    }

    /// Sends a command without waiting; returns its id for `reply`.
    pub fn start(&mut self, mut cmd: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        cmd["id"] = json!(id);
        writeln!(self.stdin, "{cmd}").expect("agent stdin");
        self.stdin.flush().expect("flush");
        id
    }

    /// Waits for the reply to command `id`; events seen meanwhile are kept.
    pub fn reply(&mut self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self
                .recv_until(deadline)
                .unwrap_or_else(|| panic!("{}: no reply to command {id}", self.jid));
            if v.get("reply") == Some(&json!(id)) {
                return v;
            }
            self.events.push_back(v);
        }
    }

    fn recv_until(&mut self, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(v) => Some(v),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Sends a command and waits for its reply; events seen meanwhile are kept.
    pub fn cmd(&mut self, cmd: Value) -> Value {
        let id = self.start(cmd);
        self.reply(id)
    }

    /// Events of `kind` received so far (kept for later waits too).
    pub fn seen(&mut self, kind: &str) -> Vec<Value> {
        while let Ok(v) = self.lines.try_recv() {
            self.events.push_back(v);
        }
        self.events
            .iter()
            .filter(|v| v["event"] == json!(kind))
            .cloned()
            .collect()
    }

    /// Connects and asserts success.
    pub fn connect(&mut self) -> Value {
        let r = self.cmd(json!({"cmd": "connect"}));
        assert_eq!(r["ok"], json!(true), "{} could not log in: {r}", self.jid);
        r
    }

    /// Connects and returns the reply, success or not.
    pub fn try_connect(&mut self) -> Value {
        self.cmd(json!({"cmd": "connect"}))
    }

    pub fn presence(&mut self) {
        self.cmd(json!({"cmd": "presence"}));
    }

    pub fn message(&mut self, to: &str, body: &str) {
        self.cmd(json!({"cmd": "message", "to": to, "body": body}));
    }

    pub fn disconnect(&mut self) {
        self.cmd(json!({"cmd": "disconnect"}));
    }

    /// Waits for an event of `kind` that satisfies `pred`; panics after `timeout`.
    pub fn expect_event(
        &mut self,
        kind: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        match self.wait_event(kind, timeout, pred) {
            Some(v) => v,
            None => panic!(
                "{}: no matching {kind} event within {timeout:?}; seen: {:?}",
                self.jid, self.events
            ),
        }
    }

    /// Like `expect_event`, but None on timeout.
    pub fn wait_event(
        &mut self,
        kind: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let matches = |v: &Value| v.get("event") == Some(&json!(kind)) && pred(v);
        if let Some(i) = self.events.iter().position(matches) {
            return self.events.remove(i);
        }
        let deadline = Instant::now() + timeout;
        while let Some(v) = self.recv_until(deadline) {
            if matches(&v) {
                return Some(v);
            }
            self.events.push_back(v);
        }
        None
    }

    /// Every message body received so far (and within `settle`), in order.
    pub fn bodies(&mut self, settle: Duration) -> Vec<String> {
        let deadline = Instant::now() + settle;
        while let Some(v) = self.recv_until(deadline) {
            self.events.push_back(v);
        }
        self.events
            .iter()
            .filter(|v| v["event"] == json!("message"))
            .filter_map(|v| v["body"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
