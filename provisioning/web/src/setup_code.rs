//! The setup code: proof that the person in the wizard is the one holding the box.
//!
//! Without it, whoever on the network reaches the wizard first becomes admin (FreedomBox's
//! lesson). The code is shown only where the owner looks: the HDMI console and `SETUP-CODE.txt`
//! on the boot partition, never on the network. Wrong guesses are rate limited for everybody at
//! once, not per address, because an attacker on the LAN can change address at will.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// No 0/O, 1/I/L: the code is read off a TV screen and typed on a phone.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// 8 characters of 31: about 40 bits, plenty against 5 guesses per 5 minutes.
const CODE_LEN: usize = 8;
/// Wrong codes allowed before everybody must wait.
pub const MAX_FAILURES: u32 = 5;
/// How long the wait lasts.
pub const LOCKOUT: Duration = Duration::from_secs(300);
pub const FILE_NAME: &str = "SETUP-CODE.txt";
const STATE_FILE: &str = "setup-code";

/// What a guess got.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Right,
    Wrong {
        tries_left: u32,
    },
    /// Too many wrong guesses; the right code is refused too until the wait is over.
    Locked {
        wait: Duration,
    },
}

pub struct SetupCode {
    code: String,
    limiter: Mutex<Limiter>,
}

struct Limiter {
    failures: u32,
    locked_until: Option<Instant>,
}

impl SetupCode {
    /// Loads the box's code from the state directory, making one on the first call.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<SetupCode> {
        let path = state_dir.join(STATE_FILE);
        let code = match std::fs::read_to_string(&path) {
            Ok(c) if normalize(&c).len() == CODE_LEN => normalize(&c),
            Ok(_) | Err(_) => {
                let code = generate();
                std::fs::create_dir_all(state_dir)?;
                hearthd::fsutil::write_atomically(&path, code.as_bytes(), 0o600)?;
                // When root makes it at first boot (`hearth-web setup-code`), hand the file to
                // whoever owns the state directory: the hearth-web service user.
                if let Ok(meta) = std::fs::metadata(state_dir) {
                    use std::os::unix::fs::MetadataExt;
                    let _ =
                        nix::unistd::chown(&path, Some(meta.uid().into()), Some(meta.gid().into()));
                }
                code
            }
        };
        Ok(SetupCode {
            code,
            limiter: Mutex::new(Limiter {
                failures: 0,
                locked_until: None,
            }),
        })
    }

    /// The code as people see it: `ABCD-EFGH`.
    pub fn display(&self) -> String {
        format!("{}-{}", &self.code[..4], &self.code[4..])
    }

    pub fn check(&self, attempt: &str) -> Verdict {
        let mut l = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(until) = l.locked_until {
            if now < until {
                return Verdict::Locked { wait: until - now };
            }
            l.locked_until = None;
            l.failures = 0;
        }
        use subtle::ConstantTimeEq;
        let attempt = normalize(attempt);
        if bool::from(attempt.as_bytes().ct_eq(self.code.as_bytes())) {
            l.failures = 0;
            return Verdict::Right;
        }
        l.failures += 1;
        if l.failures >= MAX_FAILURES {
            l.locked_until = Some(now + LOCKOUT);
            return Verdict::Locked { wait: LOCKOUT };
        }
        Verdict::Wrong {
            tries_left: MAX_FAILURES - l.failures,
        }
    }

    /// Writes `SETUP-CODE.txt` for the owner, with the addresses to open.
    pub fn write_boot_file(&self, boot_dir: &Path, urls: &[String]) -> std::io::Result<PathBuf> {
        let path = boot_dir.join(FILE_NAME);
        let text = format!(
            "Hearth setup code: {}\r\n\r\nOn a phone or computer in the same network, open\r\n{}\r\n\
             and type this code when the page asks for it. It stops working once setup is finished.\r\n",
            self.display(),
            urls.iter().map(|u| format!("    {u}")).collect::<Vec<_>>().join("\r\n"),
        );
        // CRLF: the owner may well open this file in Notepad.
        hearthd::fsutil::write_atomically(&path, text.as_bytes(), 0o600)?;
        Ok(path)
    }
}

/// Setup is over: the code is worth nothing now, so remove both copies.
pub fn retire(state_dir: &Path, boot_dir: &Path) {
    for p in [state_dir.join(STATE_FILE), boot_dir.join(FILE_NAME)] {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove {}: {e}", p.display());
            }
        }
    }
}

/// Upper case, without the dash, spaces and anything else people add while typing.
fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn generate() -> String {
    let mut out = String::with_capacity(CODE_LEN);
    while out.len() < CODE_LEN {
        let mut b = [0u8; 1];
        getrandom::getrandom(&mut b).expect("the kernel's random number generator is unavailable");
        // Rejection sampling keeps every character equally likely (256 is not a multiple of 31).
        let limit = 256 - 256 % ALPHABET.len();
        if (b[0] as usize) < limit {
            out.push(ALPHABET[b[0] as usize % ALPHABET.len()] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_survives_a_restart_and_accepts_sloppy_typing() {
        let dir = tempfile::tempdir().unwrap();
        let a = SetupCode::load_or_create(dir.path()).unwrap();
        let b = SetupCode::load_or_create(dir.path()).unwrap();
        assert_eq!(a.display(), b.display());
        let sloppy = format!(" {} ", a.display().to_lowercase().replace('-', " "));
        assert_eq!(a.check(&sloppy), Verdict::Right);
    }

    #[test]
    fn locks_after_too_many_wrong_codes_even_for_the_right_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = SetupCode::load_or_create(dir.path()).unwrap();
        for left in (1..MAX_FAILURES).rev() {
            assert_eq!(c.check("WRONG"), Verdict::Wrong { tries_left: left });
        }
        assert!(matches!(c.check("WRONG"), Verdict::Locked { .. }));
        assert!(matches!(c.check(&c.display()), Verdict::Locked { .. }));
    }
}
