//! Command line: flags for people (grouped, with examples) and the `preseed` subcommand.

use clap::{Args as ClapArgs, Parser, Subcommand};
use hearthd::setup::{self, Preseed};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  hearth-web                                   serve on ports 80 and 443 (as the systemd unit does)
  hearth-web --listen 127.0.0.1:8080 --listen-tls 127.0.0.1:8443 \\
      --state-dir /tmp/hw --config /tmp/hw/hearth.toml --data-dir /tmp/hw/data --boot-dir /tmp/hw/boot
                                               try it unprivileged on your own machine
  hearth-web preseed --file /boot/firmware/hearth-setup.toml
                                               set the box up from the boot partition, no browser
  hearth-web imager                            take Raspberry Pi Imager's settings off the boot partition

Until the box is set up, the wizard asks for the setup code printed on the console and written to
SETUP-CODE.txt in --boot-dir. Afterwards the same address serves the admin pages.";

#[derive(Parser, Debug)]
#[command(name = "hearth-web", version, about = "Hearth's setup wizard, admin pages and invite pages", after_help = EXAMPLES)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the wizard / admin pages (the default when no command is given).
    Serve(ServeArgs),
    /// Apply hearth-setup.toml from the boot partition, then remove its secrets from the file.
    Preseed(PreseedArgs),
    /// Make the setup code if there is none, write SETUP-CODE.txt and print it (first boot, as root).
    SetupCode(SetupCodeArgs),
    /// Take Raspberry Pi Imager's OS customisation off the boot partition (first boot, as root):
    /// restore cmdline.txt, write the settings as a preseed, delete Imager's files.
    Imager(ImagerArgs),
}

#[derive(ClapArgs, Debug, Clone)]
pub struct ImagerArgs {
    #[arg(long, value_name = "DIR", default_value = "/boot/firmware")]
    pub boot_dir: PathBuf,
    /// Where the settings go, in hearth-setup.toml's format, for the first-boot script.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/hearth-firstboot/imager-setup.toml"
    )]
    pub out: PathBuf,
}

/// `hearth-web imager`: never fails the boot for bad Imager files (they are named in the output);
/// fails only when cmdline.txt or the output cannot be written.
pub fn imager(a: ImagerArgs) -> Result<(), String> {
    let preseed = a.boot_dir.join("hearth-setup.toml");
    let report = setup::imager_boot::take_imager_settings(&a.boot_dir, &a.out, &preseed)?;
    for line in &report.lines {
        println!("{line}");
    }
    Ok(())
}

#[derive(ClapArgs, Debug, Clone)]
pub struct SetupCodeArgs {
    /// A set-up box needs no code: nothing is done when this file exists.
    #[arg(long, value_name = "FILE", default_value = hearthd::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    #[arg(long, value_name = "DIR", default_value = "/var/lib/hearth/web")]
    pub state_dir: PathBuf,
    #[arg(long, value_name = "DIR", default_value = "/boot/firmware")]
    pub boot_dir: PathBuf,
    /// The wizard's HTTP port, for the addresses printed with the code.
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    pub port: u16,
}

/// `hearth-web setup-code`: the same code the service will ask for (it reads the same file).
pub fn setup_code(a: SetupCodeArgs) -> Result<(), String> {
    if a.config.exists() {
        println!(
            "{} exists: this box is set up, no setup code needed",
            a.config.display()
        );
        return Ok(());
    }
    let code = crate::setup_code::SetupCode::load_or_create(&a.state_dir).map_err(|e| {
        format!(
            "cannot store the setup code in {}: {e}",
            a.state_dir.display()
        )
    })?;
    let urls = crate::netinfo::urls(a.port);
    code.write_boot_file(&a.boot_dir, &urls).map_err(|e| {
        format!(
            "cannot write SETUP-CODE.txt in {}: {e}",
            a.boot_dir.display()
        )
    })?;
    println!("Hearth setup code: {}", code.display());
    for u in urls {
        println!("    {u}");
    }
    Ok(())
}

#[derive(ClapArgs, Debug, Clone)]
pub struct ServeArgs {
    /// Plain-HTTP address (repeatable): the wizard, ACME challenges, redirects to HTTPS.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "[::]:80",
        help_heading = "Network"
    )]
    pub listen: Vec<SocketAddr>,
    /// HTTPS address (repeatable); answers once a certificate exists.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "[::]:443",
        help_heading = "Network"
    )]
    pub listen_tls: Vec<SocketAddr>,
    /// Port put in redirects to HTTPS, if the outside sees another one than --listen-tls.
    #[arg(long, value_name = "PORT", help_heading = "Network")]
    pub https_port: Option<u16>,

    /// The shared config file; its existence means "this box is set up".
    #[arg(long, value_name = "FILE", default_value = hearthd::config::DEFAULT_CONFIG_PATH, help_heading = "Files")]
    pub config: PathBuf,
    /// hearth-web's own state: the resumable wizard, the setup code.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/hearth/web",
        help_heading = "Files"
    )]
    pub state_dir: PathBuf,
    /// Where the wizard puts the database and certificates (written into the config).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/hearth",
        help_heading = "Files"
    )]
    pub data_dir: PathBuf,
    /// The boot partition, where SETUP-CODE.txt is written for the owner.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/boot/firmware",
        help_heading = "Files"
    )]
    pub boot_dir: PathBuf,
    /// The owner's SSH public keys, edited on the admin pages; sshd runs only while it holds one.
    #[arg(long, value_name = "FILE", default_value = hearthd::setup::ssh_keys::DEFAULT_SSH_KEYS_PATH, help_heading = "Files")]
    pub ssh_keys: PathBuf,
    /// The certificate agent run by "Renew now".
    #[arg(
        long,
        value_name = "PROGRAM",
        default_value = "hearth-acme",
        help_heading = "Files"
    )]
    pub hearth_acme: PathBuf,

    /// For tests: answer DNS for NAME with IP in the reachability check (like curl's --resolve).
    #[arg(long, value_name = "NAME=IP", value_parser = parse_resolve, hide = true)]
    pub resolve: Vec<(String, IpAddr)>,
    /// For tests: probe this port instead of 80 in the reachability check.
    #[arg(long, value_name = "PORT", hide = true)]
    pub probe_port: Option<u16>,
}

fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (name, ip) = s.split_once('=').ok_or("expected NAME=IP")?;
    Ok((
        name.to_string(),
        ip.parse()
            .map_err(|e| format!("{ip:?} is not an IP address: {e}"))?,
    ))
}

#[derive(ClapArgs, Debug, Clone)]
pub struct PreseedArgs {
    /// The preseed file, e.g. /boot/firmware/hearth-setup.toml.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Where to write the config.
    #[arg(long, value_name = "FILE", default_value = hearthd::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Where to put the database and certificates.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/hearth")]
    pub data_dir: PathBuf,
    /// Where `[ssh] authorized_keys` go (read by sshd through /usr/lib/hearth/ssh-authorized-keys).
    #[arg(long, value_name = "FILE", default_value = hearthd::setup::ssh_keys::DEFAULT_SSH_KEYS_PATH)]
    pub ssh_keys: PathBuf,
}

/// `hearth-web preseed`: set the box up from the file, then scrub the secrets from it. Running it
/// on every boot is harmless: a set-up box or a file without a password is left alone.
pub async fn preseed(p: PreseedArgs) -> Result<(), String> {
    if !p.file.exists() {
        println!(
            "no {} found: the setup wizard will ask the questions",
            p.file.display()
        );
        return Ok(());
    }
    let outcome = match Preseed::load(&p.file) {
        Ok(preseed) => {
            // Keys first and whatever the box's state: they are how the owner gets in to fix the rest.
            let keys = add_ssh_keys(&p, &preseed);
            let server = apply_preseed(&p, &preseed).await;
            keys.and(server)
        }
        Err(e) => Err(e),
    };
    // Scrub even when applying failed: a password must not stay on a partition any PC can read.
    match setup::scrub_file(&p.file) {
        Ok(true) => println!("removed the secrets from {}", p.file.display()),
        Ok(false) => {}
        Err(e) => eprintln!("hearth-web: {e}"),
    }
    outcome.map_err(|e| e.to_string())
}

/// Adds `[ssh] authorized_keys` to the keys file (keys already there stay; running again adds nothing).
fn add_ssh_keys(p: &PreseedArgs, preseed: &Preseed) -> Result<(), setup::SetupError> {
    let keys = preseed.ssh_keys();
    if keys.is_empty() {
        println!("no [ssh] authorized_keys: the SSH server stays off until a key is added on the admin pages");
        return Ok(());
    }
    match setup::ssh_keys::add_keys(&p.ssh_keys, &keys) {
        Ok(added) => {
            println!(
                "SSH: {added} new of {} key(s) may log in as root ({})",
                keys.len(),
                p.ssh_keys.display()
            );
            Ok(())
        }
        Err(e) => Err(setup::SetupError {
            field: Some("ssh.authorized_keys"),
            message: e,
        }),
    }
}

async fn apply_preseed(p: &PreseedArgs, preseed: &Preseed) -> Result<(), setup::SetupError> {
    if p.config.exists() {
        println!(
            "{} exists: this box is set up already; not applying {}",
            p.config.display(),
            p.file.display()
        );
        Ok(())
    } else {
        match preseed.answers(&p.data_dir, &p.config) {
            Some(answers) => setup::apply(&answers).await.map(|o| {
                println!(
                    "set up {} with admin {} ({} certificate)",
                    o.config.domain,
                    o.admin_jid,
                    answers.certificate.as_str()
                );
            }),
            None if preseed.server.is_some() => {
                println!(
                    "{} has no admin password (already used?): the setup wizard will ask",
                    p.file.display()
                );
                Ok(())
            }
            None => {
                println!(
                    "{} has no [server] section: the setup wizard will ask the questions",
                    p.file.display()
                );
                Ok(())
            }
        }
    }
}
