//! hearth-image: builds Hearth's SD-card image, checks it, and boots it under QEMU.

mod apt;
mod assemble;
mod binaries;
mod board;
mod boottest;
mod build;
mod bundle;
mod disk;
mod error;
mod fat;
mod fetch;
mod host;
mod imager_card;
mod imager_repo;
mod lock;
mod manifest;
mod mirror;
mod progress;
mod qemu;
mod rootfs;
mod run;
mod selftest;
mod tools;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

use error::{Error, Result};

#[derive(Parser)]
#[command(
    name = "hearth-image",
    version,
    about = "Build, verify and boot-test Hearth's reproducible Raspberry Pi image",
    after_help = "Examples (build, lock and host-setup run as root):\n  \
        hearth-image build                           # out/hearth-<version>-rpi-arm64.img.xz\n  \
        hearth-image build --bundle                  # also out/hearth-<version>-debs.tar, every package\n  \
        hearth-image build --from-bundle FILE        # rebuild a release bit for bit, no network\n  \
        hearth-image build --verify                  # rebuild offline from the bundle, compare SHA-256\n  \
        hearth-image build --mirror URL --source URL # fetch from a local mirror, then a further archive\n  \
        hearth-image verify out/hearth-0.1.0-rpi-arm64.img\n  \
        hearth-image boot-test out/hearth-0.1.0-rpi-arm64.img --machine raspi3b\n  \
        hearth-image lock                            # move to Debian's current package versions\n\n\
        Environment: HEARTH_CACHE (default /var/cache/hearth-image) keeps .debs and the tools chroot;\n\
        HEARTH_EXTRA_SOURCES: further base URLs (space-separated) tried after the mirror and --source;\n\
        SOURCE_DATE_EPOCH (default: the last commit's time) fixes every time stamp and id in the image."
)]
struct Cli {
    /// The Hearth source tree (default: found from the current directory upwards).
    #[arg(long, global = true)]
    repo: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the SD-card image (.img, .img.xz, SHA256SUMS, manifest.json) into the output directory.
    Build(build::BuildArgs),
    /// Check an image: partition table, boot files against the board file, filesystem ids, our binaries.
    Verify(verify::VerifyArgs),
    /// Boot an image under QEMU with a preseed and wait until it speaks XMPP.
    BootTest(boottest::BootTestArgs),
    /// Resolve the board's Debian packages to current versions and rewrite the lock files.
    /// Prints what moved (package, old → new, added, removed).
    Lock {
        #[arg(long, default_value = "rpi-arm64")]
        board: String,
        #[command(flatten)]
        sources: build::SourceArgs,
    },
    /// Fetch the packages a lock file names into the cache (<cache>/debs/<arch>), by pool path, each
    /// checked against its SHA-256: e.g. to fill a cache for building without network later.
    Fetch {
        /// The lock file (e.g. board-configs/rpi-arm64.lock).
        lock: PathBuf,
        /// The cache (default: HEARTH_CACHE, else /var/cache/hearth-image).
        #[arg(long)]
        cache: Option<PathBuf>,
        #[command(flatten)]
        sources: build::SourceArgs,
    },
    /// Install the host tools the build needs (apt-get, binfmt, rustup target). Needs root.
    HostSetup,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e}");
        if let Some(h) = e.hint_text() {
            eprintln!("hint: {h}");
        }
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    if let Cmd::Fetch {
        lock,
        cache,
        sources,
    } = &cli.command
    {
        // Needs no source tree: only the lock file.
        return fetch_lock(lock, cache.clone(), sources);
    }
    let repo = match cli.repo {
        Some(r) => r,
        None => find_repo()?,
    };
    match cli.command {
        Cmd::Build(args) => build::build(&repo, args),
        Cmd::Verify(args) => verify::verify(&repo, args),
        Cmd::BootTest(args) => boottest::boot_test(&repo, args),
        Cmd::Lock { board, sources } => build::lock(&repo, &board, &sources),
        Cmd::Fetch {
            lock,
            cache,
            sources,
        } => fetch_lock(&lock, cache, &sources),
        Cmd::HostSetup => {
            let mut steps = progress::Steps::new(&repo.join("out/logs"))?;
            steps.run("host setup", host::setup)
        }
    }
}

fn fetch_lock(
    path: &std::path::Path,
    cache: Option<PathBuf>,
    sources: &build::SourceArgs,
) -> Result<()> {
    let lock = lock::Lock::read(path)?
        .ok_or_else(|| Error::new(format!("no lock file {}", path.display())))?;
    if let Some(w) = lock.age_warning(path) {
        eprintln!("{w}");
    }
    let cache = cache.unwrap_or_else(build::cache_dir);
    let (_, sources) = sources.resolve(None, &lock.suite)?;
    let dir = fetch::debs_dir(&cache, &lock.architecture);
    let mut steps = progress::Steps::new(&cache.join("logs"))?;
    steps.run(
        &format!(
            "fetch {} packages of {}",
            lock.packages.len(),
            path.display()
        ),
        |s| fetch::fetch_all(&lock.packages, &dir, &sources, s),
    )?;
    eprintln!("{} packages in {}", lock.packages.len(), dir.display());
    Ok(())
}

/// The directory holding `board-configs/`, from the current directory upwards.
fn find_repo() -> Result<PathBuf> {
    let cwd =
        std::env::current_dir().map_err(|e| Error::new(format!("no current directory: {e}")))?;
    cwd.ancestors()
        .find(|d| d.join("board-configs").is_dir() && d.join("Cargo.toml").is_file())
        .map(|d| d.to_path_buf())
        .ok_or_else(|| {
            Error::new(format!(
                "{} is not inside a Hearth source tree (no board-configs/ found)",
                cwd.display()
            ))
            .hint("run from the repository, or pass --repo DIR")
        })
}
