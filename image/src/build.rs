//! `hearth-image build` and `lock`: the steps, in order, and `--verify` (build twice, compare).

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::board::{Board, ImageSpec};
use crate::bundle::{self, BundledLock};
use crate::error::{Context, Error, Result};
use crate::fetch::Sources;
use crate::lock::{sha256_file, Lock, Request};
use crate::progress::{fmt_secs, Steps};
use crate::{apt, assemble, binaries, host, manifest, mirror, rootfs, tools};

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
    /// Its second build is exactly a rebuild from the first one's bundle, in an empty cache, with every
    /// network source pointing at a closed port: it proves the bundle too.
    #[arg(long)]
    pub verify: bool,
    /// Also write <output>/hearth-<version>-debs.tar: every .deb of both locks, the locks, SHA256SUMS.
    #[arg(long)]
    pub bundle: bool,
    /// Rebuild from a bundle with no network: its packages go into the cache, each checked against the lock.
    #[arg(long, value_name = "FILE")]
    pub from_bundle: Option<PathBuf>,
    #[command(flatten)]
    pub sources: SourceArgs,
}

/// Where packages come from.
#[derive(Args, Clone, Default)]
pub struct SourceArgs {
    /// Debian mirror to fetch from (default: the board's `mirror` key, else the build host's apt sources,
    /// else mmdebstrap's default). The image and the lock do not depend on it.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// A further base URL tried after the mirror (a local mirror, a snapshot of Debian's archive);
    /// repeatable. HEARTH_EXTRA_SOURCES (space-separated) adds more.
    #[arg(long = "source", value_name = "URL")]
    pub extra: Vec<String>,
}

impl SourceArgs {
    /// The build's mirror and, after it, the user's further sources.
    pub fn resolve(&self, board_mirror: Option<&str>, suite: &str) -> Result<(String, Sources)> {
        let mirror = mirror::build_mirror(self.mirror.as_deref().or(board_mirror), suite)?;
        let sources = Sources::new(Some(&mirror), &self.extra);
        Ok((mirror, sources))
    }
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

fn rootfs_request<'a>(spec: &'a ImageSpec, mirror: &'a str) -> Request<'a> {
    Request {
        suite: &spec.debian.suite,
        architecture: &spec.architecture,
        mirror,
        components: &spec.debian.components,
        packages: &spec.debian.packages,
        extra_suites: &spec.debian.extra_suites,
    }
}

/// The tools chroot's request: the host's own architecture, the board's suite and mirror.
fn tools_request<'a>(
    spec: &'a ImageSpec,
    mirror: &'a str,
    comps: &'a [String],
    pkgs: &'a [String],
) -> Request<'a> {
    Request {
        suite: &spec.debian.suite,
        architecture: "amd64",
        mirror,
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
        Some(lock) if lock.request == req.hash() => {
            if let Some(w) = lock.age_warning(&path) {
                eprintln!("{w}");
            }
            Ok(lock)
        }
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

pub fn lock(repo: &Path, board: &str, sources: &SourceArgs) -> Result<()> {
    let (board, _) = Board::load(repo, board)?;
    let spec = board.image()?;
    let cache = cache_dir();
    let (mirror, _) = sources.resolve(spec.debian.mirror.as_deref(), &spec.debian.suite)?;
    let mut steps = Steps::new(&repo.join("out/logs"))?;
    let (c, p) = (tools::components(), tools::packages());
    steps.run("lock tools", |s| {
        apt::refresh_lock(
            &cache,
            &tools_request(spec, &mirror, &c, &p),
            &Lock::path(repo, tools::LOCK_NAME),
            s,
        )
    })?;
    let path = Lock::path(repo, &board.name);
    steps.run("lock root filesystem", |s| {
        apt::refresh_lock(&cache, &rootfs_request(spec, &mirror), &path, s)
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
    let opts = Opts {
        epoch: source_date_epoch(repo)?,
        bundle: args.bundle || args.verify,
        from_bundle: args.from_bundle.as_deref(),
        sources: &args.sources,
    };
    if !args.verify {
        build_once(repo, &board, spec, &out, &opts, &mut |_| Ok(()))?;
        return Ok(());
    }
    let second_out = out.join("verify");
    let second_log = out.join("logs/second-build.log");
    let mut second: Option<SecondBuild> = None;
    // Started once the first build has fetched the packages and written the bundle: the second build
    // rebuilds from that bundle alone, in an empty cache, every network source a closed port.
    let first = build_once(repo, &board, spec, &out, &opts, &mut |bundle| {
        eprintln!(
            "--verify: the second build starts now, alongside, from {} in an empty cache with no network, \
             into {} (log: {})",
            bundle.display(),
            second_out.display(),
            second_log.display()
        );
        second = Some(SecondBuild::start(
            repo,
            &board.name,
            opts.epoch,
            bundle,
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

/// How one build gets its packages.
struct Opts<'a> {
    /// Read once: the second build of `--verify` gets it too, even if a commit lands meanwhile.
    epoch: u64,
    bundle: bool,
    from_bundle: Option<&'a Path>,
    sources: &'a SourceArgs,
}

/// The second build of `--verify`: this program again, as a child process writing to a log. Killed if the
/// first build fails.
struct SecondBuild {
    child: Option<std::process::Child>,
    log: PathBuf,
    cache: PathBuf,
}

/// A port on 127.0.0.1 nothing listens on (bound, then released): a network source there fails at once.
fn closed_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ctx(|| "binding 127.0.0.1:0".into())?;
    let port = l.local_addr().ctx(|| "reading the port".into())?.port();
    drop(l);
    Ok(port)
}

impl SecondBuild {
    fn start(
        repo: &Path,
        board: &str,
        epoch: u64,
        bundle: &Path,
        out: &Path,
        log: &Path,
    ) -> Result<SecondBuild> {
        let exe = std::env::current_exe().ctx(|| "finding this program's path".into())?;
        let cache = out.join("empty-cache");
        let _ = crate::run::remove_tree(&cache, log);
        std::fs::create_dir_all(&cache).ctx(|| format!("creating {}", cache.display()))?;
        let closed = format!("http://127.0.0.1:{}/debian", closed_port()?);
        let file = std::fs::File::create(log).ctx(|| format!("creating {}", log.display()))?;
        let err = file
            .try_clone()
            .ctx(|| format!("duplicating {}", log.display()))?;
        let child = Command::new(exe)
            .arg("--repo")
            .arg(repo)
            .args(["build", "--board", board, "--output"])
            .arg(out)
            .arg("--from-bundle")
            .arg(bundle)
            .args(["--mirror", &closed])
            .env("HEARTH_CACHE", &cache)
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("HEARTH_EXTRA_SOURCES", &closed)
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .ctx(|| "starting the second build".into())?;
        Ok(SecondBuild {
            child: Some(child),
            log: log.to_path_buf(),
            cache,
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
        let _ = crate::run::remove_tree(&self.cache, &self.log);
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

/// One build. `fetched` runs once the packages are in the local repository, the binaries are built and
/// the bundle (if asked for) is written; it gets the bundle's path.
fn build_once(
    repo: &Path,
    board: &Board,
    spec: &ImageSpec,
    out: &Path,
    opts: &Opts,
    fetched: &mut dyn FnMut(&Path) -> Result<()>,
) -> Result<Built> {
    std::fs::create_dir_all(out).ctx(|| format!("creating {}", out.display()))?;
    let out = out
        .canonicalize()
        .ctx(|| format!("resolving {}", out.display()))?;
    let mut steps = Steps::new(&out.join("logs"))?;
    let epoch = opts.epoch;
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
    let (mirror, sources) = opts
        .sources
        .resolve(spec.debian.mirror.as_deref(), &spec.debian.suite)?;
    eprintln!("packages from: {}", sources.bases.join(", "));
    let (c, p) = (tools::components(), tools::packages());
    let treq = tools_request(spec, &mirror, &c, &p);
    let tools_lock = current_lock(repo, tools::LOCK_NAME, &treq, &ctx.cache, &mut steps)?;
    let rreq = rootfs_request(spec, &mirror);
    let root_lock = current_lock(repo, &board.name, &rreq, &ctx.cache, &mut steps)?;
    let bundled = [
        BundledLock {
            name: tools::LOCK_NAME,
            path: Lock::path(repo, tools::LOCK_NAME),
            lock: &tools_lock,
        },
        BundledLock {
            name: &board.name,
            path: Lock::path(repo, &board.name),
            lock: &root_lock,
        },
    ];
    let mut bundle_entry = None;
    if let Some(b) = opts.from_bundle {
        steps.run("unpack package bundle", |s| {
            bundle::unpack(b, &bundled, &ctx.cache, &s.log)
        })?;
        bundle_entry = Some(manifest::entry(b)?);
    }
    let tools = steps.run("tools chroot", |s| {
        tools::ensure(&ctx.cache, &tools_lock, &sources, epoch, s)
    })?;
    let bins = steps.run("cross-compile binaries", |s| {
        binaries::build(&ctx, &rreq, s)
    })?;
    let repo_dir = steps.run("fetch Debian packages", |s| {
        apt::local_repo(&ctx.cache, &root_lock, &board.name, &sources, s)
    })?;
    let bundle_path = out.join(bundle::file_name(&ctx.version));
    if opts.bundle {
        steps.run("package bundle", |s| {
            // Both locks' packages are in the cache now (the tools chroot may be cached: fetch its too).
            crate::fetch::fetch_all(
                &tools_lock.packages,
                &crate::fetch::debs_dir(&ctx.cache, &tools_lock.architecture),
                &sources,
                s,
            )?;
            let sum = bundle::write(&bundle_path, &bundled, &ctx.cache, epoch, &s.log)?;
            s.note(&format!("{} (sha256 {sum})", bundle_path.display()));
            Ok(())
        })?;
        bundle_entry = Some(manifest::entry(&bundle_path)?);
    }
    fetched(&bundle_path)?;
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
        manifest::write(
            &ctx,
            &layout,
            &xz,
            &bins,
            manifest::Inputs {
                lock: &root_lock,
                tools: &tools.versions(),
                bundle: bundle_entry,
            },
            s,
        )
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
