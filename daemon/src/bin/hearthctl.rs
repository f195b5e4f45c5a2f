//! `hearthctl`: administer a Hearth server from the command line.

use clap::{Parser, Subcommand};
use hearthd::config::{Config, DEFAULT_CONFIG_PATH};
use hearthd::control::{self, Request, Response};
use hearthd::storage::Storage;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

/// Administer a Hearth server: accounts, invites, status.
///
/// Talks to the running hearthd over its control socket; when hearthd is stopped it works on
/// the database directly (safely: SQLite's locking and WAL).
///
/// Examples:
///   echo 'a-long-password' | hearthctl user add alice@example.org
///   hearthctl user add bob --generate
///   hearthctl invite create --uses 1 --expires 7d
///   hearthctl user list
///   hearthctl room list
///   hearthctl room destroy meetup --reason "moved to the flat"
///   echo 'a-long-password' | hearthctl hash-password   # for hearth-setup.toml's password_hash
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Configuration file of the server.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Invites that let a friend register.
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Group chat rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Whether hearthd runs, and how many users and sessions it has.
    Status,
    /// Print a SCRAM-SHA-256 verifier of the password on standard input, for `password_hash` in
    /// hearth-setup.toml: the box gets the admin account without the password being on the card.
    /// Needs no server or configuration.
    HashPassword {
        /// PBKDF2 iterations (at least 4096; clients pay them at every login).
        #[arg(long, default_value_t = hearthd::sasl::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The password is the first line of standard input, unless --generate.
    Add {
        /// `alice` or `alice@your.domain`.
        jid: String,
        /// Make up a strong password and print it.
        #[arg(long)]
        generate: bool,
        /// The account may use the admin pages.
        #[arg(long)]
        admin: bool,
    },
    /// Set a new password (first line of standard input, unless --generate).
    Passwd {
        jid: String,
        #[arg(long)]
        generate: bool,
    },
    /// Delete an account with its roster and offline messages.
    Del { jid: String },
    /// List accounts.
    List,
    /// Allow or forbid an account to talk with other servers (it still receives from them).
    LocalOnly {
        jid: String,
        /// `on`: only this server's own domains; `off`: everyone.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Subcommand)]
enum InviteCommand {
    /// Create an invite and print its xmpp: URI and web link.
    Create {
        /// How many accounts it may create.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime: e.g. 30m, 12h, 7d.
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        expires: i64,
        /// A note for yourself, e.g. who it is for.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List invites.
    List,
    /// Make an invite unusable.
    Revoke { id: i64 },
}

#[derive(Subcommand)]
enum RoomCommand {
    /// List every room: address, name, members, last activity.
    List,
    /// Destroy a room with its history; whoever is in it is told why.
    Destroy {
        /// `meetup` or `meetup@groups.your.domain`.
        room: String,
        /// Told to the occupants.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn parse_duration(s: &str) -> Result<i64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m, 12h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" | "" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}: use s, m, h, d or w"
            ))
        }
    };
    if n <= 0 {
        return Err("the duration must be positive".into());
    }
    Ok(n * mult)
}

fn read_password(generate: bool) -> Result<(String, bool), String> {
    if generate {
        return Ok((hearthd::stanza::random_id(15), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        return Err("no password on standard input (pipe one in, or use --generate)".into());
    }
    Ok((pw, false))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearthctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_password(iterations: u32) -> Result<(), String> {
    let (password, _) = read_password(false)?;
    hearthd::setup::check_password(&password).map_err(|e| e.message)?;
    let cred = hearthd::sasl::StoredCredential::derive(
        hearthd::sasl::ScramHash::Sha256,
        &password,
        iterations,
    )
    .map_err(|e| e.text().to_string())?;
    println!("{}", cred.to_verifier());
    Ok(())
}

fn run(args: Args) -> Result<(), String> {
    if let Command::HashPassword { iterations } = &args.command {
        return hash_password(*iterations);
    }
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let mut generated = None;
    let request = match &args.command {
        Command::Status => Request::Status,
        Command::User(UserCommand::Add {
            jid,
            generate,
            admin,
        }) => {
            check_domain(jid, &config)?;
            let (password, gen) = read_password(*generate)?;
            generated = gen.then(|| password.clone());
            Request::UserAdd {
                user: jid.clone(),
                password,
                admin: *admin,
            }
        }
        Command::User(UserCommand::Passwd { jid, generate }) => {
            check_domain(jid, &config)?;
            let (password, gen) = read_password(*generate)?;
            generated = gen.then(|| password.clone());
            Request::UserPasswd {
                user: jid.clone(),
                password,
            }
        }
        Command::User(UserCommand::Del { jid }) => {
            check_domain(jid, &config)?;
            Request::UserDel { user: jid.clone() }
        }
        Command::User(UserCommand::List) => Request::UserList,
        Command::User(UserCommand::LocalOnly { jid, state }) => {
            check_domain(jid, &config)?;
            Request::UserLocalOnly {
                user: jid.clone(),
                local_only: state == "on",
            }
        }
        Command::Invite(InviteCommand::Create {
            uses,
            expires,
            note,
        }) => Request::InviteCreate {
            uses: *uses,
            expires_secs: *expires,
            note: note.clone(),
        },
        Command::Invite(InviteCommand::List) => Request::InviteList,
        Command::Invite(InviteCommand::Revoke { id }) => Request::InviteRevoke { id: *id },
        Command::Room(RoomCommand::List) => Request::RoomList,
        Command::Room(RoomCommand::Destroy { room, reason }) => {
            let muc = hearthd::modules::muc::service_domain(&config);
            let name = match room.split_once('@') {
                Some((name, d)) if d.eq_ignore_ascii_case(&muc) => name,
                Some(_) => {
                    return Err(format!(
                        "{room} is not on this server's group chat service {muc}"
                    ))
                }
                None => room.as_str(),
            };
            Request::RoomDestroy {
                room: name.to_string(),
                reason: reason.clone(),
            }
        }
        // Answered above, before any configuration is read; kept here so the match stays total.
        Command::HashPassword { iterations } => return hash_password(*iterations),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let resp = runtime.block_on(async {
        match control::request(&config.control_socket, &request).await {
            Ok(resp) => Ok(resp),
            Err(_) => {
                // Not running (or not reachable): work on the database directly.
                let storage = Storage::open(&config.database_path()).map_err(|e| {
                    format!(
                        "hearthd is not running and the database {} cannot be opened: {e}",
                        config.database_path().display()
                    )
                })?;
                Ok::<_, String>(control::execute(&config, &storage, None, request.clone()).await)
            }
        }
    })?;
    if !resp.ok {
        return Err(resp.error.unwrap_or_else(|| "failed".into()));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&resp.data).unwrap_or_default()
        );
        return Ok(());
    }
    print_human(&args.command, &resp, generated.as_deref());
    Ok(())
}

fn check_domain(jid: &str, config: &Config) -> Result<(), String> {
    match jid.split_once('@') {
        Some((_, d)) if !d.eq_ignore_ascii_case(&config.domain) => Err(format!(
            "{jid} is not on this server's domain {}",
            config.domain
        )),
        _ => Ok(()),
    }
}

fn print_human(cmd: &Command, resp: &Response, generated: Option<&str>) {
    let d = &resp.data;
    match cmd {
        Command::HashPassword { .. } => {}
        Command::Status => {
            println!("domain:   {}", d["domain"].as_str().unwrap_or(""));
            println!(
                "running:  {}",
                if d["running"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
            );
            println!("users:    {}", d["users"]);
            if d["running"].as_bool() == Some(true) {
                println!(
                    "sessions: {} ({} users online)",
                    d["sessions"], d["online_users"]
                );
                println!("uptime:   {}s", d["uptime_secs"]);
            }
        }
        Command::User(UserCommand::Add { .. }) => {
            println!("created {}", d["jid"].as_str().unwrap_or(""));
            if let Some(p) = generated {
                println!("password: {p}");
            }
        }
        Command::User(UserCommand::Passwd { .. }) => {
            println!("password changed");
            if let Some(p) = generated {
                println!("password: {p}");
            }
        }
        Command::User(UserCommand::Del { jid }) => println!("deleted {jid}"),
        Command::User(UserCommand::LocalOnly { jid, state }) => {
            if state == "on" {
                println!("{jid} may now only talk with people on this server");
            } else {
                println!("{jid} may talk with other servers again");
            }
        }
        Command::User(UserCommand::List) => {
            for u in d.as_array().into_iter().flatten() {
                let admin = if u["is_admin"].as_bool() == Some(true) {
                    " (admin)"
                } else {
                    ""
                };
                println!("{}{admin}", u["username"].as_str().unwrap_or(""));
            }
        }
        Command::Invite(InviteCommand::Create { .. }) => {
            println!("{}", d["uri"].as_str().unwrap_or(""));
            println!("{}", d["url"].as_str().unwrap_or(""));
        }
        Command::Invite(InviteCommand::List) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| t.as_secs() as i64)
                .unwrap_or(0);
            for i in d.as_array().into_iter().flatten() {
                let state = if i["revoked"].as_bool() == Some(true) {
                    "revoked".to_string()
                } else if i["expires_at"].as_i64().unwrap_or(0) <= now {
                    "expired".to_string()
                } else {
                    format!("{} of {} uses left", i["uses_left"], i["uses_total"])
                };
                println!(
                    "{:>4}  {state}  expires {}  {}",
                    i["id"],
                    hearthd::timefmt::xep0082(i["expires_at"].as_i64().unwrap_or(0)),
                    i["note"].as_str().unwrap_or("")
                );
            }
        }
        Command::Invite(InviteCommand::Revoke { id }) => println!("revoked invite {id}"),
        Command::Room(RoomCommand::List) => {
            for r in d.as_array().into_iter().flatten() {
                println!(
                    "{}  \"{}\"  {} members  last active {}",
                    r["name"].as_str().unwrap_or(""),
                    r["title"].as_str().unwrap_or(""),
                    r["members"],
                    hearthd::timefmt::xep0082(r["last_activity"].as_i64().unwrap_or(0)),
                );
            }
        }
        Command::Room(RoomCommand::Destroy { room, .. }) => println!("destroyed {room}"),
    }
}
