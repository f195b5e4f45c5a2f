//! The Prosody side of the federation tests: Knot DNS, Debian's Prosody and Hearth with one
//! test CA, in the network namespace `federation::run_in_netns` made.

use crate::agent::Agent;
use crate::federation::{start_dns, start_prosody, Proc, ProsodyTrust, TestCa, PROSODY_IP};
use crate::server::TestServer;

/// Knot DNS, Prosody and Hearth with a test CA, for the federation tests with Prosody.
pub struct ProsodyRig {
    pub ca: TestCa,
    pub hearth: TestServer,
    pub prosody: Proc,
    _dns: Proc,
    _dir: tempfile::TempDir,
}

impl ProsodyRig {
    /// Knot, Prosody (trusting the test CA or not) and Hearth (trusting it, with `extra` in
    /// its `[s2s]`).
    pub fn start(prosody_trusts_ca: bool, extra: &str) -> ProsodyRig {
        let dir = tempfile::tempdir().unwrap();
        let dns = start_dns(dir.path());
        let ca = TestCa::new();
        let ca_path = ca.ca_path();
        let prosody_dir = dir.path().join("prosody");
        std::fs::create_dir_all(&prosody_dir).unwrap();
        let trust = ProsodyTrust {
            ca: prosody_trusts_ca.then_some(ca_path.as_path()),
            secure_auth: prosody_trusts_ca,
        };
        let prosody = start_prosody(&prosody_dir, &ca, trust, &[("paul", "paul-password")]);
        // The group chat service's name too, so other servers reach the rooms (as hearth-acme
        // adds it once DNS has it).
        let (cert, key) = ca.issue_for(&["hearth.test", "groups.hearth.test"], true);
        let config = format!(
            "[s2s]\nlisten = [\"127.0.0.1:5269\"]\nlisten_direct_tls = [\"127.0.0.1:5270\"]\n\
             ca_file = {ca_path:?}\nconnect_timeout_secs = 10\n{extra}\n"
        );
        let hearth = TestServer::start_with_cert(&config, Some((&cert, &key)));
        hearth.add_user("hana", "hana-password");
        ProsodyRig {
            ca,
            hearth,
            prosody,
            _dns: dns,
            _dir: dir,
        }
    }

    pub fn hana(&self) -> Agent {
        let mut a = Agent::spawn(
            "hana@hearth.test",
            "hana-password",
            self.hearth.c2s_port,
            &self.ca.ca_path(),
            &[],
        );
        a.connect();
        a.presence();
        a
    }

    pub fn paul(&self) -> Agent {
        let host = format!("--host={PROSODY_IP}");
        let mut a = Agent::spawn(
            "paul@prosody.test",
            "paul-password",
            5222,
            &self.ca.ca_path(),
            &[&host],
        );
        a.connect();
        a.presence();
        a
    }

    pub fn logs(&self) -> String {
        format!(
            "--- hearthd ---\n{}\n--- prosody ---\n{}",
            self.hearth.log(),
            self.prosody.log()
        )
    }
}
