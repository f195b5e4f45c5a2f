//! `hearth-image build` and `lock`: the steps, in order, and `--verify` (build twice, compare).

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::board::{Board, ImageSpec};
use crate::error::{Context, Error, Result};
use crate::lock::{sha256_file, Lock, Request};
use crate::progress::{fmt_secs, Steps};
use crate::{apt, assemble, binaries, host, manifest, rootfs, tools};

#[derive(Args)]
pub struct BuildArgs {
    /// Board file from board-configs/ (without .toml).
    #[arg(long, default_value = "rpi-arm64")]
    pub board: String,
    /// Where the image, checksums, manifest and logs go.
    #[arg(long, default_value = "out")]
    pub output: PathBuf,
    /// Build a second time into <output>/verify and compare SHA-256; run diffoscope on a difference.
    /// The second build runs alongside the first once the packages are fetched: the root filesystem step
    /// (dpkg under qemu-user) keeps about one core busy, so two of them take little longer than one.
    #[arg(long)]
    pub verify: bool,
}

/// Everything a build step needs to know.
pub struct Ctx<'a> {
    pub repo: &'a Path,
    pub board: &'a Board,
    pub spec: &'a ImageSpec,
    pub cache: PathBuf,
    pub out: PathBuf,
    pub work: PathBuf,
    pub epoch: u64,
    pub version: String,
}

impl Ctx<'_> {
    pub fn image_name(&self) -> String {
        format!("hearth-{}-{}.img", self.version, self.board.name)
    }
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("HEARTH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/hearth-image"))
}

/// SOURCE_DATE_EPOCH from the environment, else the last commit's time.
pub fn source_date_epoch(repo: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .map_err(|_| Error::new(format!("SOURCE_DATE_EPOCH={v} is not a number of seconds")));
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["log", "-1", "--format=%ct"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .map_err(|_| Error::new("git log printed no commit time")),
        _ => Err(Error::new(
            "cannot take SOURCE_DATE_EPOCH from git (no commit, or not a git checkout)",
        )
        .hint("set SOURCE_DATE_EPOCH=<seconds since 1970> to fix every time stamp in the image")),
    }
}

fn rootfs_request(spec: &ImageSpec) -> Request<'_> {
    Request {
        suite: &spec.debian.suite,
        architecture: &spec.architecture,
        mirror: &spec.debian.mirror,
        components: &spec.debian.components,
        packages: &spec.debian.packages,
        extra_suites: &spec.debian.extra_suites,
    }
}

/// The tools chroot's request: the host's own architecture, the board's suite and mirror.
fn tools_request<'a>(spec: &'a ImageSpec, comps: &'a [String], pkgs: &'a [String]) -> Request<'a> {
    Request {
        suite: &spec.debian.suite,
        architecture: "amd64",
        mirror: &spec.debian.mirror,
        components: comps,
        packages: pkgs,
        extra_suites: &[],
    }
}

/// Reads a lock; writes it first if there is none. A lock that no longer matches the board is an error.
fn current_lock(
    repo: &Path,
    name: &str,
    req: &Request,
    cache: &Path,
    steps: &mut Steps,
) -> Result<Lock> {
    let path = Lock::path(repo, name);
    match Lock::read(&path)? {
        Some(lock) if lock.request == req.hash() => Ok(lock),
        Some(_) => Err(Error::new(format!(
            "{} no longer matches the board's package list",
            path.display()
        ))
        .hint("run `hearth-image lock` to resolve the new list, then commit the lock file")),
        None => steps.run(&format!("lock {name} (no lock file yet)"), |s| {
            apt::refresh_lock(cache, req, &path, s)
        }),
    }
}

pub fn lock(repo: &Path, board: &str) -> Result<()> {
    let (board, _) = Board::load(repo, board)?;
    let spec = board.image()?;
    let cache = cache_dir();
    let mut steps = Steps::new(&repo.join("out/logs"))?;
    let (c, p) = (tools::components(), tools::packages());
    steps.run("lock tools", |s| {
        apt::refresh_lock(
            &cache,
            &tools_request(spec, &c, &p),
            &Lock::path(repo, tools::LOCK_NAME),
            s,
        )
    })?;
    let path = Lock::path(repo, &board.name);
    steps.run("lock root filesystem", |s| {
        apt::refresh_lock(&cache, &rootfs_request(spec), &path, s)
    })?;
    Ok(())
}

pub fn build(repo: &Path, args: BuildArgs) -> Result<()> {
    let (board, _) = Board::load(repo, &args.board)?;
    let spec = board.image()?;
    let out = if args.output.is_absolute() {
        args.output.clone()
    } else {
        repo.join(&args.output)
    };
    if !args.verify {
        build_once(repo, &board, spec, &out, &mut || Ok(()))?;
        return Ok(());
    }
    let second_out = out.join("verify");
    let second_log = out.join("logs/second-build.log");
    let mut second: Option<SecondBuild> = None;
    // Started once the first build has fetched the packages: from then on the cache is only read, and the
    // binaries are built (the second cargo run finds them up to date).
    let first = build_once(repo, &board, spec, &out, &mut || {
        eprintln!(
            "--verify: the second build starts now, alongside, into {} (log: {})",
            second_out.display(),
            second_log.display()
        );
        second = Some(SecondBuild::start(
            repo,
            &board.name,
            &second_out,
            &second_log,
        )?);
        Ok(())
    })?;
    let second = second.ok_or_else(|| Error::new("the second build was never started"))?;
    eprintln!(
        "\n--verify: waiting for the second build (log: {})",
        second_log.display()
    );
    second.wait()?;
    let name = |p: &Path| second_out.join(p.file_name().unwrap_or_default());
    let second = Built {
        image: name(&first.image),
        xz: name(&first.xz),
        rootfs: second_out.join("work/rootfs"),
    };
    compare(&first, &second, &out)
}

/// The second build of `--verify`: this program again, as a child process writing to a log. Killed if the
/// first build fails.
struct SecondBuild {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl SecondBuild {
    fn start(repo: &Path, board: &str, out: &Path, log: &Path) -> Result<SecondBuild> {
        let exe = std::env::current_exe().ctx(|| "finding this program's path".into())?;
        let file = std::fs::File::create(log).ctx(|| format!("creating {}", log.display()))?;
        let err = file
            .try_clone()
            .ctx(|| format!("duplicating {}", log.display()))?;
        let child = Command::new(exe)
            .arg("--repo")
            .arg(repo)
            .args(["build", "--board", board, "--output"])
            .arg(out)
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .ctx(|| "starting the second build".into())?;
        Ok(SecondBuild {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    fn wait(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait().ctx(|| "waiting for the second build".into())?;
        let tail = crate::run::tail(&self.log, 15);
        if !status.success() {
            return Err(
                Error::new(format!("the second build failed ({status}):\n{tail}"))
                    .hint(format!("its full output: {}", self.log.display())),
            );
        }
        eprintln!("second build:\n{tail}");
        Ok(())
    }
}

impl Drop for SecondBuild {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // Its children first (mmdebstrap unmounts and cleans up on SIGTERM), then the child itself. It
            // shares our process group, so Ctrl-C in the terminal reaches all of them anyway.
            let _ = Command::new("pkill")
                .args(["-TERM", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Paths of one build's results.
struct Built {
    image: PathBuf,
    xz: PathBuf,
    rootfs: PathBuf,
}

/// One build. `fetched` runs once the packages are in the local repository and the binaries are built.
fn build_once(
    repo: &Path,
    board: &Board,
    spec: &ImageSpec,
    out: &Path,
    fetched: &mut dyn FnMut() -> Result<()>,
) -> Result<Built> {
    std::fs::create_dir_all(out).ctx(|| format!("creating {}", out.display()))?;
    let out = out
        .canonicalize()
        .ctx(|| format!("resolving {}", out.display()))?;
    let mut steps = Steps::new(&out.join("logs"))?;
    let epoch = source_date_epoch(repo)?;
    let ctx = Ctx {
        repo,
        board,
        spec,
        cache: cache_dir(),
        work: out.join("work"),
        out: out.clone(),
        epoch,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    eprintln!(
        "building {} for {} (SOURCE_DATE_EPOCH={epoch}, cache {})",
        ctx.image_name(),
        board.description,
        ctx.cache.display()
    );
    steps.run("host setup", host::setup)?;
    std::fs::create_dir_all(&ctx.cache)
        .ctx(|| format!("creating cache {}", ctx.cache.display()))?;
    let (c, p) = (tools::components(), tools::packages());
    let treq = tools_request(spec, &c, &p);
    let tools_lock = current_lock(repo, tools::LOCK_NAME, &treq, &ctx.cache, &mut steps)?;
    let rreq = rootfs_request(spec);
    let root_lock = current_lock(repo, &board.name, &rreq, &ctx.cache, &mut steps)?;
    let tools = steps.run("tools chroot", |s| {
        tools::ensure(&ctx.cache, &tools_lock, &treq, epoch, s)
    })?;
    let bins = steps.run("cross-compile binaries", |s| {
        binaries::build(&ctx, &rreq, s)
    })?;
    let repo_dir = steps.run("fetch Debian packages", |s| {
        apt::local_repo(&ctx.cache, &root_lock, &board.name, &rreq, s)
    })?;
    fetched()?;
    steps.run("root filesystem (mmdebstrap)", |s| {
        rootfs::build(&ctx, &root_lock, &repo_dir, &bins, s)
    })?;
    let layout = steps.run("assemble disk image", |s| {
        assemble::assemble(&ctx, &tools, s)
    })?;
    let xz = steps.run("compress (xz)", |s| {
        assemble::compress(&ctx, &tools, &layout.image, s)
    })?;
    steps.run("checksums and manifest", |s| {
        manifest::write(&ctx, &layout, &xz, &bins, &root_lock, &tools.versions(), s)
    })?;
    let size = std::fs::metadata(&layout.image)
        .map(|m| m.len())
        .unwrap_or(0);
    let xz_size = std::fs::metadata(&xz).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "\nimage: {} ({} MiB, {} MiB as .xz)\nbuilt in {}\nsha256: {}",
        xz.display(),
        size / (1 << 20),
        xz_size / (1 << 20),
        fmt_secs(steps.total_secs()),
        sha256_file(&layout.image)?
    );
    for (name, secs) in &steps.timings {
        eprintln!("  {:<32} {}", name, fmt_secs(*secs));
    }
    Ok(Built {
        image: layout.image,
        xz,
        rootfs: ctx.work.join("rootfs"),
    })
}

fn compare(a: &Built, b: &Built, out: &Path) -> Result<()> {
    let (ha, hb) = (sha256_file(&a.image)?, sha256_file(&b.image)?);
    let (xa, xb) = (sha256_file(&a.xz)?, sha256_file(&b.xz)?);
    eprintln!(
        "\nfirst  build: {ha}  {}\nsecond build: {hb}  {}",
        a.image.display(),
        b.image.display()
    );
    if ha == hb && xa == xb {
        eprintln!("reproducible: both builds are bit-identical (.img and .img.xz)");
        let _ = std::fs::remove_dir_all(out.join("verify/work"));
        return Ok(());
    }
    let report = out.join("diffoscope.txt");
    eprintln!(
        "builds differ; running diffoscope on the root filesystems and images (report: {})",
        report.display()
    );
    let log = out.join("logs/diffoscope.log");
    let _ = Command::new("diffoscope")
        .arg(format!("--text={}", report.display()))
        .args([
            "--max-report-size=20000000",
            "--exclude-directory-metadata=no",
        ])
        .arg(&a.rootfs)
        .arg(&b.rootfs)
        .stdout(std::fs::File::create(&log).ctx(|| format!("creating {}", log.display()))?)
        .status();
    let head: String = std::fs::read_to_string(&report)
        .unwrap_or_default()
        .lines()
        .take(60)
        .collect::<Vec<_>>()
        .join("\n");
    Err(
        Error::new(format!("the two builds differ (.img {ha} vs {hb})\n{head}"))
            .hint(format!("full diffoscope report: {}", report.display())),
    )
}
