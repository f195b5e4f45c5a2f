//! A memory cgroup with a hard limit and no swap, for "does the server survive 10,000 sessions in
//! 256 MiB". Works on the unified hierarchy (cgroup v2) and on v1's memory controller.

use std::path::{Path, PathBuf};

pub struct MemCgroup {
    dir: PathBuf,
    v2: bool,
}

/// What the cgroup saw.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct MemUse {
    pub current_kib: u64,
    pub peak_kib: u64,
    /// Times the kernel's OOM killer ran inside it.
    pub oom_kills: u64,
}

impl MemCgroup {
    pub fn create(name: &str, limit_bytes: u64) -> Result<MemCgroup, String> {
        let root = Path::new("/sys/fs/cgroup");
        let (dir, v2) = if root.join("cgroup.controllers").exists() {
            (root.join(name), true)
        } else if root.join("memory/memory.limit_in_bytes").exists() {
            (root.join("memory").join(name), false)
        } else {
            return Err("no memory cgroup controller under /sys/fs/cgroup".into());
        };
        if dir.exists() {
            let _ = std::fs::remove_dir(&dir);
        }
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create cgroup {} (needs root): {e}", dir.display()))?;
        let cg = MemCgroup { dir, v2 };
        if v2 {
            cg.set("memory.max", &limit_bytes.to_string())?;
            cg.set("memory.swap.max", "0").ok();
        } else {
            cg.set("memory.limit_in_bytes", &limit_bytes.to_string())?;
            cg.set("memory.memsw.limit_in_bytes", &limit_bytes.to_string())
                .ok();
        }
        Ok(cg)
    }

    fn set(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(file), value)
            .map_err(|e| format!("{}/{file}: {e}", self.dir.display()))
    }

    fn read_u64(&self, file: &str) -> u64 {
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    pub fn usage(&self) -> MemUse {
        let events = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let oom_kills = std::fs::read_to_string(self.dir.join(events))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let (cur, peak) = if self.v2 {
            ("memory.current", "memory.peak")
        } else {
            ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
        };
        MemUse {
            current_kib: self.read_u64(cur) / 1024,
            peak_kib: self.read_u64(peak) / 1024,
            oom_kills,
        }
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // Empty once the server is stopped; a cgroup directory is removed with rmdir.
        let _ = std::fs::remove_dir(&self.dir);
    }
}
