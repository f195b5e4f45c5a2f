//! `hearth-bench`: the same scenarios against hearthd, Prosody and ejabberd, one server after the
//! other, on loopback with the same certificate, accounts and client; writes a Markdown report with
//! SVG charts. Prosody and ejabberd run from Debian trixie packages in a chroot the tool makes with
//! mmdebstrap (as root) and keeps under /var/cache/hearth-bench. See bench/README.md.

mod cgroup;
mod chroot;
mod client;
mod guest;
mod guest_report;
mod report;
mod report_svg;
mod scenarios;
mod servers;

use client::{Client, Enable};
use report::{Machine, ServerResult};
use scenarios::{Pace, Plan};
use servers::{Instance, Kind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const HELP: &str =
    "hearth-bench: hearthd, Prosody and ejabberd under the same load, one after the other

Usage: hearth-bench [OPTIONS]          (as root for Prosody and ejabberd: chroot, cgroup, mounts)

  --servers LIST       hearthd,prosody,ejabberd (default: all three), or none (e.g. with --guest-image)
  --hearthd LABEL=PATH a hearthd build to measure; repeat to compare builds (glibc, musl, …)
                       (default: glibc=<directory of this binary>/hearthd)
  --sessions LIST      idle-session counts RSS is read at (default 100,1000,10000)
  --logins N           logins timed for logins/s (default 2000)
  --concurrency N      logins in flight while opening sessions (default 32)
  --pairs N            sender/receiver pairs for messages (default 50)
  --window N           messages in flight per pair at saturation (default 16)
  --saturate-secs S    length of the saturation run (default 10)
  --rate N             offered load of the latency run, messages/s (default 1000)
  --latency-secs S     length of the latency run (default 10)
  --cgroup-sessions N  idle sessions inside the memory cgroup, 0 to skip (default 10000)
  --cgroup-mib N       the cgroup's memory limit (default 256)
  --enable LIST        what each idle session turns on: sm,carbons,csi, all or none (default all)
  --no-pin             at saturation, do not pin the server to CPU 0 and the load generator to CPU 1
  --smoke              small counts for CI (a few minutes for all three servers)
  --out DIR            where REPORT.md and the charts go (default bench, or target/bench-smoke)
  --cache DIR          where the trixie chroot is kept (default /var/cache/hearth-bench)
  --mirror URL         Debian archive for the chroot (default: the host's apt sources)
  --guest-image IMG    also boot this image (out/hearth-<version>-rpi-arm64.img.xz) under QEMU -M virt
                       and read hearthd's memory inside it, idle and with sessions (about 15 minutes;
                       needs qemu-system-aarch64 and hearth-image beside this binary)
  --guest-sessions N   idle sessions opened in the guest (default 300)
  --guest-concurrency N  logins in flight into the guest (default 4: TCG emulation is slow)
  --merge FILES        run nothing: write one report from earlier runs' results.json files
                       (comma-separated, rows in that order), e.g. hearthd builds and the others

Example (the full run: 37 minutes on a busy 2-core machine, most of it Prosody opening 10,000 sessions):
  cargo build --release -p hearthd -p hearth-bench
  sudo target/release/hearth-bench
";

struct Opts {
    servers: Vec<String>,
    hearthds: Vec<(String, PathBuf)>,
    plan: Plan,
    pin: bool,
    out: Option<PathBuf>,
    smoke: bool,
    cache: PathBuf,
    mirror: Option<String>,
    merge: Vec<PathBuf>,
    guest: Option<guest::GuestOpts>,
    guest_sessions: usize,
    guest_concurrency: usize,
    /// Internal: run as `hearth-image boot-test`'s hook, write the guest's figures to this file.
    guest_hook: Option<PathBuf>,
}

fn parse_args() -> Result<Opts, String> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_default();
    let mut o = Opts {
        servers: vec!["hearthd".into(), "prosody".into(), "ejabberd".into()],
        hearthds: vec![],
        plan: Plan {
            steps: vec![100, 1000, 10000],
            logins: 2000,
            concurrency: 32,
            pairs: 50,
            window: 16,
            saturate_secs: 10.0,
            rate: 1000,
            latency_secs: 10.0,
            cgroup_sessions: 10000,
            cgroup_mib: 256,
            enable: Enable {
                sm: true,
                carbons: true,
                csi: true,
            },
        },
        pin: true,
        out: None,
        smoke: false,
        cache: "/var/cache/hearth-bench".into(),
        mirror: None,
        merge: vec![],
        guest: None,
        guest_sessions: 300,
        guest_concurrency: 4,
        guest_hook: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --smoke first, so explicit options after it still win.
    if args.iter().any(|a| a == "--smoke") {
        o.smoke = true;
        let p = &mut o.plan;
        p.steps = vec![20, 100];
        p.logins = 100;
        p.pairs = 5;
        p.saturate_secs = 2.0;
        p.rate = 100;
        p.latency_secs = 2.0;
        p.cgroup_sessions = 100;
    }
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |name: &str, v: String| -> Result<f64, String> {
            v.parse::<f64>().map_err(|e| format!("{name} {v:?}: {e}"))
        };
        match a.as_str() {
            "--servers" => {
                o.servers = val(&a)?
                    .split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| s != "none")
                    .collect();
                for s in &o.servers {
                    if !["hearthd", "prosody", "ejabberd"].contains(&s.as_str()) {
                        return Err(format!(
                            "--servers: unknown server {s:?} (hearthd, prosody, ejabberd)"
                        ));
                    }
                }
            }
            "--hearthd" => {
                let v = val(&a)?;
                let (label, path) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--hearthd {v:?}: expected LABEL=PATH"))?;
                o.hearthds.push((label.to_string(), PathBuf::from(path)));
            }
            "--sessions" => {
                let v = val(&a)?;
                o.plan.steps = v
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--sessions {v:?}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                o.plan.steps.sort_unstable();
                if o.plan.steps.first().is_some_and(|&s| s < 2) {
                    return Err("--sessions: each count must be at least 2".into());
                }
            }
            "--logins" => o.plan.logins = num(&a, val(&a)?)? as usize,
            "--concurrency" => o.plan.concurrency = (num(&a, val(&a)?)? as usize).max(1),
            "--pairs" => o.plan.pairs = (num(&a, val(&a)?)? as usize).max(1),
            "--window" => o.plan.window = (num(&a, val(&a)?)? as u64).max(1),
            "--saturate-secs" => o.plan.saturate_secs = num(&a, val(&a)?)?,
            "--rate" => o.plan.rate = (num(&a, val(&a)?)? as u32).max(1),
            "--latency-secs" => o.plan.latency_secs = num(&a, val(&a)?)?,
            "--cgroup-sessions" => o.plan.cgroup_sessions = num(&a, val(&a)?)? as usize,
            "--cgroup-mib" => o.plan.cgroup_mib = num(&a, val(&a)?)? as u64,
            "--enable" => o.plan.enable = parse_enable(&val(&a)?)?,
            "--no-pin" => o.pin = false,
            "--smoke" => {}
            "--out" => o.out = Some(val(&a)?.into()),
            "--cache" => o.cache = val(&a)?.into(),
            "--mirror" => o.mirror = Some(val(&a)?),
            "--merge" => o.merge = val(&a)?.split(',').map(PathBuf::from).collect(),
            "--guest-image" => {
                o.guest = Some(guest::GuestOpts {
                    image: val(&a)?.into(),
                    sessions: 0,
                    concurrency: 0,
                })
            }
            "--guest-sessions" => o.guest_sessions = (num(&a, val(&a)?)? as usize).max(2),
            "--guest-concurrency" => o.guest_concurrency = (num(&a, val(&a)?)? as usize).max(1),
            "--guest-hook" => o.guest_hook = Some(val(&a)?.into()),
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}; see --help")),
        }
    }
    if let Some(g) = &mut o.guest {
        g.sessions = o.guest_sessions;
        g.concurrency = o.guest_concurrency;
    }
    if o.hearthds.is_empty() {
        o.hearthds.push(("glibc".into(), exe_dir.join("hearthd")));
    }
    Ok(o)
}

fn parse_enable(list: &str) -> Result<Enable, String> {
    let mut e = Enable::default();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item {
            "sm" => e.sm = true,
            "carbons" => e.carbons = true,
            "csi" => e.csi = true,
            "all" => {
                e = Enable {
                    sm: true,
                    carbons: true,
                    csi: true,
                }
            }
            "none" => e = Enable::default(),
            other => {
                return Err(format!(
                    "--enable: unknown feature {other:?} (sm, carbons, csi, all, none)"
                ))
            }
        }
    }
    Ok(e)
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hearth-bench: {e}");
            std::process::exit(2);
        }
    };
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1);
    let pin = o.pin && cpus >= 2;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(o, pin)) {
        eprintln!("hearth-bench: {e}");
        std::process::exit(1);
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = if nix::unistd::Uid::effective().is_root() {
            hard.max(200_000)
        } else {
            hard
        };
        if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

async fn run(o: Opts, pin: bool) -> Result<(), String> {
    raise_fd_limit();
    if let Some(file) = &o.guest_hook {
        return guest::hook(file).await;
    }
    let out = o.out.clone().unwrap_or_else(|| {
        if o.smoke {
            "target/bench-smoke".into()
        } else {
            "bench".into()
        }
    });
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    if !o.merge.is_empty() {
        return merge(&o.merge, &out, pin);
    }
    let needs_chroot = o.servers.iter().any(|s| s != "hearthd");
    let chroot = if needs_chroot {
        Some(chroot::Chroot::ensure(&o.cache, o.mirror.as_deref())?)
    } else {
        None
    };
    let work = std::env::temp_dir().join(format!("hearth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let pair =
        hearthd::certs::self_signed(&[client::DOMAIN.to_string()]).map_err(|e| e.to_string())?;
    let pem = (pair.cert_pem, pair.key_pem);

    let mut kinds = vec![];
    for s in &o.servers {
        match s.as_str() {
            "hearthd" => kinds.extend(o.hearthds.iter().map(|(l, p)| Kind::Hearthd {
                label: l.clone(),
                bin: p.clone(),
            })),
            "prosody" => kinds.push(Kind::Prosody),
            _ => kinds.push(Kind::Ejabberd),
        }
    }
    let started = Instant::now();
    let mut results = vec![];
    for kind in kinds {
        eprintln!("== {} ==", kind.name());
        let mut r = ServerResult::new(&kind, chroot.as_ref());
        r.load_before = report::loadavg();
        if let Err(e) = bench_one(&kind, &o.plan, pin, chroot.as_ref(), &work, &pem, &mut r).await {
            eprintln!("{}: {e}", kind.name());
            r.errors.push(e);
        }
        r.load_after = report::loadavg();
        results.push(r);
    }
    let _ = std::fs::remove_dir_all(&work);
    let guest = match o.guest {
        Some(g) => {
            eprintln!("== hearthd inside the booted image (QEMU) ==");
            let enable = o.plan.enable;
            let r = tokio::task::spawn_blocking(move || guest::run(&g, enable))
                .await
                .map_err(|e| e.to_string())?;
            Some(r)
        }
        None => None,
    };
    let machine = Machine::read(pin);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let took = started.elapsed().as_secs_f64();
    let saved = Saved {
        plan: o.plan.clone(),
        commands: vec![format!("{command}  ({took:.0} s)")],
        results,
        guest,
    };
    let json = serde_json::to_string(&saved).map_err(|e| e.to_string())?;
    std::fs::write(out.join("results.json"), json).map_err(|e| e.to_string())?;
    report::write(&out, &machine, &saved, &saved.commands)?;
    let guest_errors = saved.guest.as_ref().map(|g| g.errors.clone());
    let results = saved.results;
    eprintln!("wrote {}", out.join("REPORT.md").display());
    let mut broken: Vec<String> = results
        .iter()
        .filter(|r| !r.errors.is_empty())
        .map(|r| format!("{}: {}", r.name, r.errors.join("; ")))
        .collect();
    if let Some(e) = guest_errors.filter(|e| !e.is_empty()) {
        broken.push(format!("inside the booted image: {}", e.join("; ")));
    }
    if !broken.is_empty() {
        return Err(format!("some scenarios failed: {}", broken.join(" | ")));
    }
    Ok(())
}

/// What a run leaves in results.json, so runs can be merged into one report.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Saved {
    plan: Plan,
    commands: Vec<String>,
    results: Vec<ServerResult>,
    /// The scenario inside the booted image; absent in runs without --guest-image (and in older files).
    #[serde(default)]
    guest: Option<guest_report::GuestResult>,
}

fn merge(files: &[PathBuf], out: &std::path::Path, pin: bool) -> Result<(), String> {
    let mut all: Option<Saved> = None;
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let s: Saved = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        match &mut all {
            None => all = Some(s),
            Some(a) => {
                a.commands.extend(s.commands);
                a.results.extend(s.results);
                // One image run per report: the last file that has one wins.
                if s.guest.is_some() {
                    a.guest = s.guest;
                }
            }
        }
    }
    let a = all.ok_or("--merge: no files")?;
    report::write(out, &Machine::read(pin), &a, &a.commands)?;
    let json = serde_json::to_string(&a).map_err(|e| e.to_string())?;
    std::fs::write(out.join("results.json"), json).map_err(|e| e.to_string())?;
    eprintln!("wrote {}", out.join("REPORT.md").display());
    Ok(())
}

/// All scenarios against one server. A failed scenario is recorded and the next one runs.
async fn bench_one(
    kind: &Kind,
    plan: &Plan,
    pin: bool,
    chroot: Option<&chroot::Chroot>,
    work: &std::path::Path,
    pem: &(String, String),
    r: &mut ServerResult,
) -> Result<(), String> {
    // Servers start unpinned; only the saturation run pins (see below).
    let cpu = None;
    let accounts = plan.accounts();
    let inst = Instance::prepare(kind.clone(), work, chroot, pem, accounts).await?;
    let client = Client::new(&inst.cert, inst.port)?;
    if inst.needs_registration() {
        let mut server = inst.start(chroot, cpu, None).await?;
        eprintln!("registering {accounts} accounts in-band …");
        let t = Instant::now();
        scenarios::register_all(&client, accounts, plan.concurrency).await?;
        eprintln!("  {:.1} s", t.elapsed().as_secs_f64());
        // Restarted, so the idle figure is a fresh server's, as for hearthd whose accounts are
        // written before it starts.
        server.stop();
    }
    let mut server = inst.start(chroot, cpu, None).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.idle_kib = server.rss_kib();

    // Idle sessions, in steps.
    // One session first, so the per-session figure excludes one-time costs of the first login.
    let (warm, enabled) = client
        .login("u0", plan.enable)
        .await
        .map_err(|e| format!("the first login failed: {e}"))?;
    r.enabled = enabled;
    let mut open = vec![warm];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let one = server.rss_kib();
    for &n in &plan.steps {
        eprintln!("opening idle sessions up to {n} …");
        let t = Instant::now();
        let from = open.len();
        let (failed, err) =
            scenarios::open_sessions(&client, from, n, plan.concurrency, plan.enable, &mut open)
                .await;
        let secs = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = server.rss_kib();
        let up = open.len();
        r.steps.push(scenarios::Step {
            requested: n,
            up,
            rss_kib: rss,
            // Signed: a garbage-collected heap (ejabberd's) can shrink between two readings.
            per_session_bytes: (rss as f64 - one as f64) * 1024.0 / (up.max(2) - 1) as f64,
            secs,
        });
        if let Some(e) = err {
            r.errors.push(format!(
                "{failed} of {} logins up to {n} failed, first: {e}",
                n - from
            ));
        }
        if !server.alive() {
            return Err(format!("{} died with {up} sessions", kind.name()));
        }
    }
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("logins per second ({} logins) …", plan.logins);
    let most = plan.steps.iter().copied().max().unwrap_or(1);
    match scenarios::login_rate(&client, &server, plan.logins, most, plan.concurrency).await {
        Ok(rate) => r.logins = Some(rate),
        Err(e) => r.errors.push(format!("logins: {e}")),
    }
    eprintln!("messages per second at saturation ({} pairs) …", plan.pairs);
    if pin {
        // The server on CPU 0, the load generator on CPU 1: "messages per server core".
        server.pin(Some(0));
        servers::pin_threads("/proc/self/task", Some(1));
    }
    let sat = scenarios::run_pairs(
        &client,
        &server,
        plan.pairs,
        Pace::Window(plan.window),
        plan.saturate_secs,
    )
    .await;
    if pin {
        server.pin(None);
        servers::pin_threads("/proc/self/task", None);
    }
    match sat {
        Ok((rate, _)) => r.saturation = Some(rate),
        Err(e) => r.errors.push(format!("saturation: {e}")),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("latency at {} msg/s …", plan.rate);
    let every = Duration::from_secs_f64(plan.pairs as f64 / plan.rate as f64);
    match scenarios::run_pairs(
        &client,
        &server,
        plan.pairs,
        Pace::Every(every),
        plan.latency_secs,
    )
    .await
    {
        Ok((_, lat)) => r.latency = Some(lat),
        Err(e) => r.errors.push(format!("latency: {e}")),
    }
    r.rss_after_kib = server.rss_kib();
    server.stop();

    if plan.cgroup_sessions > 0 {
        eprintln!(
            "{} idle sessions inside a {} MiB memory cgroup …",
            plan.cgroup_sessions, plan.cgroup_mib
        );
        match cgroup_run(&inst, &client, plan, chroot, cpu).await {
            Ok(c) => r.cgroup = Some(c),
            Err(e) => r.errors.push(format!("cgroup: {e}")),
        }
    }
    Ok(())
}

async fn cgroup_run(
    inst: &Instance,
    client: &Client,
    plan: &Plan,
    chroot: Option<&chroot::Chroot>,
    cpu: Option<usize>,
) -> Result<report::CgroupResult, String> {
    let cg = cgroup::MemCgroup::create(
        &format!("hearth-bench-{}", std::process::id()),
        plan.cgroup_mib * 1024 * 1024,
    )?;
    let mut server = inst.start(chroot, cpu, Some(&cg.procs_file())).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut open = vec![];
    let (failed, err) = scenarios::open_sessions(
        client,
        0,
        plan.cgroup_sessions,
        plan.concurrency,
        plan.enable,
        &mut open,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Survival means the server still answers: one more login after all the others.
    let answers = client.login("u0", Enable::default()).await.is_ok();
    let result = report::CgroupResult {
        requested: plan.cgroup_sessions,
        up: open.len(),
        failed,
        first_error: err,
        survived: server.alive() && answers,
        rss_kib: server.rss_kib(),
        usage: cg.usage(),
    };
    drop(open);
    server.stop();
    Ok(result)
}
